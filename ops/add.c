/* add: y = a + b elementwise, same shape (the glue for residual branches and
 * for summing losses). Built on the backend's copy and axpy. */
#include "core/op.h"
#include "ops/ops.h"

static nn_status add_backward(nn_ctx *ctx, nn_node *nd)
{
    (void)ctx;
    const nn_backend *be = nn_backend_get(nd->out->device);
    const float *dy = nn_f32(nd->out->grad);
    for (int i = 0; i < 2; i++) {
        float *dx = nn_op_grad_in(nd, i);
        if (dx) NN_TRY(be->axpy(nd->out->numel, 1.0f, dy, dx));
    }
    return NN_OK;
}

static const nn_op_def add_def = {"add", add_backward};

nn_tensor *nn_add(nn_ctx *ctx, nn_tensor *a, nn_tensor *b)
{
    nn_tensor *in[2] = {a, b};
    if (nn_op_skip(ctx, "add", 2, in) || !nn_op_same_device(ctx, "add", 2, in)) return NULL;
    char as[64], bs[64];
    if (a->dtype != NN_F32 || b->dtype != NN_F32)
        return nn_op_fail(ctx, NN_E_ARG, "add: inputs must be float32");
    if (!nn_same_shape(a, b))
        return nn_op_fail(ctx, NN_E_SHAPE, "add: shapes %s and %s differ", nn_shape_str(a, as, sizeof as),
                          nn_shape_str(b, bs, sizeof bs));
    const nn_backend *be = nn_op_backend(ctx, "add", a->device);
    if (!be) return NULL;
    nn_tensor *y = nn_op_tensor(ctx, NN_F32, a->device, a->ndim, a->shape);
    if (!y) return NULL;
    nn_status s = be->copy(y->data, y->device, a->data, a->device, nn_tensor_bytes(a));
    if (s == NN_OK) s = be->axpy(a->numel, 1.0f, nn_f32(b), nn_f32(y));
    if (s != NN_OK) return nn_op_fail_status(ctx, s);
    if (nn_op_wants_grad(ctx, 2, in) && !nn_op_record(ctx, &add_def, y, 2, in)) return NULL;
    return y;
}
