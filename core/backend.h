/* The backend interface: one table of typed kernels per device. Ops (ops/<name>.c)
 * validate shapes and wire autograd, then call the kernels of the device their
 * tensors live on through this table; only core/backend.c knows which
 * backends were built. Kernels take raw device pointers.
 *
 * Conventions for every kernel:
 *  - forward kernels overwrite their outputs;
 *  - backward kernels ACCUMULATE (+=) into dx/dw/db, any of which may be NULL
 *    when that gradient is not wanted; this is how autograd sums fan-out;
 *  - they return NN_OK or a status with a message (nn_error). */
#ifndef NN_BACKEND_H
#define NN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

typedef struct nn_conv2d_geom {
    int n, c, h, w;           /* input (N, C, H, W) */
    int oc, kh, kw;           /* weight (oc, c/groups, kh, kw) */
    int sh, sw, ph, pw;       /* stride, zero padding */
    int groups;
    int oh, ow;               /* output (N, oc, oh, ow) */
} nn_conv2d_geom;

typedef struct nn_lrn_geom {
    int n, c, h, w;
    int size;                 /* window across channels: i - size/2 .. i + size/2 */
    float alpha, beta, k;     /* paper's convention: alpha NOT divided by size */
} nn_lrn_geom;

typedef struct nn_pool_geom {
    int n, c, h, w;
    int kh, kw, sh, sw, ph, pw;
    int oh, ow;
} nn_pool_geom;

typedef struct nn_linear_geom {
    int n, in, out;           /* x (n, in), w (out, in), y (n, out) */
} nn_linear_geom;

typedef struct nn_backend {
    const char *name;
    nn_device device;

    /* memory */
    nn_status (*alloc)(void **p, size_t bytes);   /* *p NULL on failure */
    void (*free)(void *p);
    nn_status (*memset0)(void *p, size_t bytes);
    /* copy where either side may be on the host (NN_CPU) or this device */
    nn_status (*copy)(void *dst, nn_device dst_dev, const void *src, nn_device src_dev, size_t bytes);
    nn_status (*sync)(void);
    size_t (*peak_bytes)(void);                   /* allocator high-water mark */

    /* elementwise helpers */
    nn_status (*fill)(float *x, size_t n, float v);
    nn_status (*axpy)(size_t n, float a, const float *x, float *y);      /* y += a x */
    nn_status (*count_nonfinite)(size_t n, const float *x, size_t *host_count);
    nn_status (*rng_uniform)(float *x, size_t n, uint64_t seed, uint64_t offset, float lo, float hi);
    nn_status (*rng_normal)(float *x, size_t n, uint64_t seed, uint64_t offset, float mean, float std);

    /* conv2d: y = conv(x, w) + b; ws has conv2d_workspace(g) bytes */
    size_t (*conv2d_workspace)(const nn_conv2d_geom *g);
    nn_status (*conv2d_forward)(const nn_conv2d_geom *g, const float *x, const float *w,
                                const float *b, float *y, void *ws);
    nn_status (*conv2d_backward)(const nn_conv2d_geom *g, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw, float *db, void *ws);

    /* relu: y = max(x, 0); dx += dy * (y > 0) */
    nn_status (*relu_forward)(size_t n, const float *x, float *y);
    nn_status (*relu_backward)(size_t n, const float *y, const float *dy, float *dx);

    /* lrn: scale = k + alpha * sum_window x^2 ; y = x * scale^-beta */
    nn_status (*lrn_forward)(const nn_lrn_geom *g, const float *x, float *y, float *scale);
    nn_status (*lrn_backward)(const nn_lrn_geom *g, const float *x, const float *y,
                              const float *scale, const float *dy, float *dx);

    /* maxpool: argmax holds the flat index (within its (n, c) plane) of each max */
    nn_status (*maxpool_forward)(const nn_pool_geom *g, const float *x, float *y, int32_t *argmax);
    nn_status (*maxpool_backward)(const nn_pool_geom *g, const int32_t *argmax, const float *dy,
                                  float *dx);

    /* dropout: mask[i] = keep(seed, offset, i, p); y = x * mask / (1 - p) */
    nn_status (*dropout_forward)(size_t n, const float *x, float *y, uint8_t *mask, float p,
                                 uint64_t seed, uint64_t offset);
    nn_status (*dropout_backward)(size_t n, const uint8_t *mask, float p, const float *dy, float *dx);

    /* linear: y = x w^T + b */
    nn_status (*linear_forward)(const nn_linear_geom *g, const float *x, const float *w,
                                const float *b, float *y);
    nn_status (*linear_backward)(const nn_linear_geom *g, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw, float *db);

    /* softmax cross-entropy over (n, classes) logits and int32 labels:
     * probs = softmax(logits); *loss (one float on the device) = mean -log p[label].
     * A label outside [0, classes) is NN_E_RANGE. Backward:
     * dx += dloss[0] * (probs - onehot) / n, dloss a device pointer. */
    nn_status (*xent_forward)(int n, int classes, const float *logits, const int32_t *labels,
                              float *probs, float *loss);
    nn_status (*xent_backward)(int n, int classes, const float *probs, const int32_t *labels,
                               const float *dloss, float *dx);

    /* optimizers (see optim/optim.h for the formulas) */
    nn_status (*sgd_update)(size_t n, float *w, const float *g, float *v, float lr, float momentum,
                            float wd);
    nn_status (*adam_update)(size_t n, float *w, const float *g, float *m, float *v, float lr,
                             float beta1, float beta2, float eps, float wd, int decoupled,
                             float bias1, float bias2);
} nn_backend;

/* The table for a device, or NULL when that backend was not built. */
const nn_backend *nn_backend_get(nn_device d);
/* The table for a device, or NULL with a message when unavailable. */
const nn_backend *nn_backend_need(nn_device d, const char *who);

extern const nn_backend nn_cpu_backend;

#endif
