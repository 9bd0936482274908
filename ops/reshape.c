/* reshape / flatten: the same contiguous data under a new shape. The output
 * shares the input's data (a view); its gradient is added back unchanged. */
#include <string.h>

#include "core/op.h"
#include "ops/ops.h"

static nn_status reshape_backward(nn_ctx *ctx, nn_node *nd)
{
    (void)ctx;
    float *dx = nn_op_grad_in(nd, 0);
    if (!dx) return NN_OK;
    const nn_backend *be = nn_backend_get(nd->out->device);
    return be->axpy(nd->out->numel, 1.0f, nn_f32(nd->out->grad), dx);
}

static const nn_op_def reshape_def = {"reshape", reshape_backward};

nn_tensor *nn_reshape(nn_ctx *ctx, nn_tensor *x, int ndim, const int *shape)
{
    if (nn_op_skip(ctx, "reshape", 1, &x)) return NULL;
    char xs[64];
    if (ndim < 1 || ndim > NN_MAX_DIMS)
        return nn_op_fail(ctx, NN_E_SHAPE, "reshape: %d dimensions (1 to %d supported)", ndim, NN_MAX_DIMS);
    int s[NN_MAX_DIMS];
    int infer = -1;
    size_t known = 1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0) {
            infer = i;
        } else if (s[i] <= 0) {
            return nn_op_fail(ctx, NN_E_SHAPE, "reshape: bad size %d in dimension %d", s[i], i);
        } else {
            known *= (size_t)s[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || x->numel % known)
            return nn_op_fail(ctx, NN_E_SHAPE, "reshape: cannot infer dimension %d for %s", infer,
                              nn_shape_str(x, xs, sizeof xs));
        s[infer] = (int)(x->numel / known);
        known *= (size_t)s[infer];
    }
    if (known != x->numel)
        return nn_op_fail(ctx, NN_E_SHAPE, "reshape: %s has %zu elements, the new shape %zu",
                          nn_shape_str(x, xs, sizeof xs), x->numel, known);
    nn_tensor *y = nn_op_host(ctx, sizeof *y);
    if (!y) return NULL;
    memset(y, 0, sizeof *y);
    y->ndim = ndim;
    for (int i = 0; i < NN_MAX_DIMS; i++) y->shape[i] = i < ndim ? s[i] : 1;
    y->numel = x->numel;
    y->dtype = x->dtype;
    y->device = x->device;
    y->data = x->data;
    if (x->dtype == NN_F32 && nn_op_wants_grad(ctx, 1, &x) && !nn_op_record(ctx, &reshape_def, y, 1, &x))
        return NULL;
    return y;
}

nn_tensor *nn_flatten(nn_ctx *ctx, nn_tensor *x)
{
    if (nn_op_skip(ctx, "flatten", 1, &x)) return NULL;
    int shape[2] = {x->shape[0], -1};
    return nn_reshape(ctx, x, 2, shape);
}
