/* Heap tensors: creation, filling, copies between devices. Device memory goes
 * through the backend table, so this file never names CUDA. */
#include "core/tensor.h"

#include <stdio.h>
#include <string.h>

#include "core/backend.h"

const char *nn_device_name(nn_device d) { return d == NN_CUDA ? "cuda" : "cpu"; }

nn_status nn_device_parse(const char *s, nn_device *out)
{
    if (s && strcmp(s, "cpu") == 0) { *out = NN_CPU; return NN_OK; }
    if (s && strcmp(s, "cuda") == 0) { *out = NN_CUDA; return NN_OK; }
    return nn_error(NN_E_ARG, "unknown device '%s' (expected cpu or cuda)", s ? s : "(null)");
}

const char *nn_shape_str(const nn_tensor *t, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < t->ndim && k < n; i++) {
        int w = snprintf(buf + k, n - k, i ? "x%d" : "%d", t->shape[i]);
        if (w < 0 || (size_t)w >= n - k) break; /* truncated: buf is terminated */
        k += (size_t)w;
    }
    return buf;
}

bool nn_same_shape(const nn_tensor *a, const nn_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

/* Validates a shape and returns its element count (0 after an error). */
static size_t shape_numel(int ndim, const int *shape)
{
    if (ndim < 1 || ndim > NN_MAX_DIMS) {
        nn_error(NN_E_SHAPE, "tensor: %d dimensions (1 to %d supported)", ndim, NN_MAX_DIMS);
        return 0;
    }
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) {
            nn_error(NN_E_SHAPE, "tensor: dimension %d has size %d (must be positive)", i, shape[i]);
            return 0;
        }
        if (n > ((size_t)1 << 40) / (size_t)shape[i]) {
            nn_error(NN_E_SHAPE, "tensor: too many elements");
            return 0;
        }
        n *= (size_t)shape[i];
    }
    return n;
}

nn_status nn_tensor_new(nn_tensor **out, nn_dtype dt, nn_device dev, int ndim, const int *shape)
{
    *out = NULL;
    size_t numel = shape_numel(ndim, shape);
    if (!numel) return NN_E_SHAPE;
    const nn_backend *be = nn_backend_need(dev, "tensor");
    if (!be) return NN_E_DEVICE;
    nn_tensor *t = calloc(1, sizeof *t);
    if (!t) return nn_error(NN_E_NOMEM, "tensor: out of host memory");
    t->ndim = ndim;
    for (int i = 0; i < NN_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    t->numel = numel;
    t->dtype = dt;
    t->device = dev;
    t->owned = true;
    nn_status s = be->alloc(&t->data, nn_tensor_bytes(t));
    if (s == NN_OK) s = be->memset0(t->data, nn_tensor_bytes(t));
    if (s != NN_OK) {
        nn_tensor_free(t);
        return s;
    }
    *out = t;
    return NN_OK;
}

nn_status nn_tensor_new4(nn_tensor **out, nn_dtype dt, nn_device dev, int n, int c, int h, int w)
{
    int shape[4] = {n, c, h, w};
    return nn_tensor_new(out, dt, dev, 4, shape);
}

nn_status nn_tensor_from(nn_tensor **out, nn_dtype dt, nn_device dev, int ndim, const int *shape,
                         const void *data)
{
    NN_TRY(nn_tensor_new(out, dt, dev, ndim, shape));
    nn_status s = nn_tensor_write(*out, data);
    if (s != NN_OK) {
        nn_tensor_free(*out);
        *out = NULL;
    }
    return s;
}

void nn_tensor_free(nn_tensor *t)
{
    if (!t || !t->owned) return;
    const nn_backend *be = nn_backend_get(t->device);
    if (be && t->data && !t->view) be->free(t->data);
    nn_tensor_free(t->grad);
    free(t);
}

nn_status nn_tensor_require_grad(nn_tensor *t)
{
    if (!t->owned) return nn_error(NN_E_ARG, "tensor: require_grad on an op output");
    if (t->dtype != NN_F32) return nn_error(NN_E_ARG, "tensor: gradients need a float32 tensor");
    if (!t->grad) NN_TRY(nn_tensor_new(&t->grad, NN_F32, t->device, t->ndim, t->shape));
    t->requires_grad = true;
    return NN_OK;
}

nn_status nn_tensor_zero_grad(nn_tensor *t)
{
    if (!t->grad) return NN_OK;
    return nn_backend_get(t->device)->memset0(t->grad->data, nn_tensor_bytes(t->grad));
}

static const nn_backend *f32_backend(nn_tensor *t, const char *who)
{
    if (t->dtype != NN_F32) {
        nn_error(NN_E_ARG, "%s: needs a float32 tensor", who);
        return NULL;
    }
    return nn_backend_need(t->device, who);
}

nn_status nn_tensor_fill(nn_tensor *t, float v)
{
    const nn_backend *be = f32_backend(t, "fill");
    return be ? be->fill(nn_f32(t), t->numel, v) : NN_E_ARG;
}

nn_status nn_tensor_uniform(nn_tensor *t, nn_rng *rng, float lo, float hi)
{
    const nn_backend *be = f32_backend(t, "uniform");
    if (!be) return NN_E_ARG;
    uint64_t off = nn_rng_take(rng, t->numel);
    return be->rng_uniform(nn_f32(t), t->numel, rng->seed, off, lo, hi);
}

nn_status nn_tensor_normal(nn_tensor *t, nn_rng *rng, float mean, float std)
{
    const nn_backend *be = f32_backend(t, "normal");
    if (!be) return NN_E_ARG;
    uint64_t off = nn_rng_take(rng, t->numel);
    return be->rng_normal(nn_f32(t), t->numel, rng->seed, off, mean, std);
}

/* Copies go through the backend of whichever side is not the host. */
static nn_status copy_bytes(void *dst, nn_device dd, const void *src, nn_device sd, size_t bytes)
{
    const nn_backend *be = nn_backend_need(dd != NN_CPU ? dd : sd, "copy");
    if (!be) return NN_E_DEVICE;
    return be->copy(dst, dd, src, sd, bytes);
}

nn_status nn_tensor_copy(nn_tensor *dst, const nn_tensor *src)
{
    if (dst->numel != src->numel || dst->dtype != src->dtype) {
        char a[64], b[64];
        return nn_error(NN_E_SHAPE, "copy: destination %s and source %s differ",
                        nn_shape_str(dst, a, sizeof a), nn_shape_str(src, b, sizeof b));
    }
    return copy_bytes(dst->data, dst->device, src->data, src->device, nn_tensor_bytes(src));
}

nn_status nn_tensor_read(const nn_tensor *t, void *host)
{
    return copy_bytes(host, NN_CPU, t->data, t->device, nn_tensor_bytes(t));
}

nn_status nn_tensor_write(nn_tensor *t, const void *host)
{
    return copy_bytes(t->data, t->device, host, NN_CPU, nn_tensor_bytes(t));
}

nn_status nn_tensor_to(nn_tensor **out, const nn_tensor *src, nn_device dev)
{
    NN_TRY(nn_tensor_new(out, src->dtype, dev, src->ndim, src->shape));
    nn_status s = nn_tensor_copy(*out, src);
    if (s != NN_OK) {
        nn_tensor_free(*out);
        *out = NULL;
    }
    return s;
}
