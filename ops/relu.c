/* relu: y = max(x, 0) over any shape; dx += dy where y > 0 (so the gradient
 * at exactly 0 is 0, as in PyTorch). */
#include <string.h>

#include "core/op.h"
#include "core/par.h"
#include "ops/cpu_kernels.h"
#include "ops/ops.h"
#include "ops/registry.h"

nn_status nn_cpu_relu_forward(size_t n, const float *x, float *y)
{
    NN_PAR_IF(n > 65536, "omp parallel for simd", for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;);
    return NN_OK;
}

nn_status nn_cpu_relu_backward(size_t n, const float *y, const float *dy, float *dx)
{
    /* both loads unconditional: with dy read in one arm only, GCC keeps a
     * branch per element (mispredicted half the time) and no SIMD */
    NN_PAR_IF(n > 65536, "omp parallel for simd", for (size_t i = 0; i < n; i++) {
        const float d = dy[i], v = y[i];
        dx[i] += v > 0.0f ? d : 0.0f;
    });
    return NN_OK;
}

static nn_status relu_backward(nn_ctx *ctx, nn_node *nd)
{
    (void)ctx;
    float *dx = nn_op_grad_in(nd, 0);
    if (!dx) return NN_OK;
    const nn_backend *be = nn_backend_get(nd->out->device);
    return be->relu_backward(nd->out->numel, nn_f32(nd->out), nn_f32(nd->out->grad), dx);
}

static const nn_op_def relu_def = {"relu", relu_backward};

/* Where y lives and who computes it: a new tensor; x's memory, overwritten
 * here; or x's memory, where x's producer already wrote relu of its output
 * (nn_relu_applied: the fused conv2d and linear). */
typedef enum relu_mode { RELU_NEW, RELU_IN_PLACE, RELU_APPLIED } relu_mode;

static nn_tensor *relu(nn_ctx *ctx, nn_tensor *x, relu_mode mode)
{
    if (nn_op_skip(ctx, "relu", 1, &x)) return NULL;
    if (x->dtype != NN_F32) return nn_op_fail(ctx, NN_E_ARG, "relu: input must be float32");
    const nn_backend *be = nn_op_backend(ctx, "relu", x->device);
    if (!be) return NULL;
    nn_tensor *y;
    if (mode != RELU_NEW) {
        /* a new tensor over x's memory, so autograd still sees x -> y */
        if (!(y = nn_op_host(ctx, sizeof *y))) return NULL;
        *y = (nn_tensor){.ndim = x->ndim, .numel = x->numel, .dtype = NN_F32, .device = x->device,
                         .data = x->data};
        memcpy(y->shape, x->shape, sizeof y->shape);
    } else if (!(y = nn_op_tensor(ctx, NN_F32, x->device, x->ndim, x->shape))) {
        return NULL;
    }
    nn_status s = mode == RELU_APPLIED ? NN_OK : be->relu_forward(x->numel, nn_f32(x), nn_f32(y));
    if (s != NN_OK) return nn_op_fail_status(ctx, s);
    if (nn_op_wants_grad(ctx, 1, &x) && !nn_op_record(ctx, &relu_def, y, 1, &x)) return NULL;
    return y;
}

nn_tensor *nn_relu(nn_ctx *ctx, nn_tensor *x) { return relu(ctx, x, RELU_NEW); }
nn_tensor *nn_relu_(nn_ctx *ctx, nn_tensor *x) { return relu(ctx, x, RELU_IN_PLACE); }
nn_tensor *nn_relu_applied(nn_ctx *ctx, nn_tensor *x) { return relu(ctx, x, RELU_APPLIED); }

/* ---- registry entry (ops/registry.h) ---- */

static nn_tensor *relu_call(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    return nn_relu(ctx, in[0]);
}

static nn_status relu_gc_case(nn_op_case *c, nn_rng *r, nn_device dev)
{
    int xs[4] = {nn_op_pick(r, 1, 2), nn_op_pick(r, 1, 4), nn_op_pick(r, 2, 7), nn_op_pick(r, 2, 7)};
    snprintf(c->about, sizeof c->about, "-");
    return nn_op_case_rand(c, "x", r, dev, -1, 1, 4, xs);
}

const nn_op_info nn_op_relu = {"relu", relu_gc_case, relu_call};
