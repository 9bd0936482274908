/* conv2d: y = conv(x, w) + b over NCHW images with stride, zero padding and
 * groups. x (N,C,H,W), w (O,C/G,KH,KW), b (O) or NULL -> y (N,O,OH,OW).
 * This file: shape rules and autograd wiring; the CPU kernels are in
 * ops/conv2d_gemm.c (im2col + GEMM, the drivers) and ops/conv2d_winograd.c. */
#include <limits.h>
#include <stdio.h>

#include "core/op.h"
#include "ops/cpu_kernels.h"
#include "ops/ops.h"
#include "ops/registry.h"

/* ---- graph wiring ---- */

static nn_status conv2d_backward(nn_ctx *ctx, nn_node *nd)
{
    float *dx = nn_op_grad_in(nd, 0), *dw = nn_op_grad_in(nd, 1);
    float *db = nd->nin > 2 ? nn_op_grad_in(nd, 2) : NULL;
    if (!dx && !dw && !db) return NN_OK;
    const nn_conv2d_geom *g = nd->saved;
    const nn_device dev = nd->out->device;
    const nn_backend *be = nn_backend_get(dev);
    size_t bytes = be->conv2d_workspace(g);
    void *ws = NULL;
    if (bytes && !(ws = nn_op_scratch(ctx, dev, bytes))) return nn_ctx_status(ctx);
    return be->conv2d_backward(g, nn_f32(nd->in[0]), nn_f32(nd->in[1]), nn_f32(nd->out->grad), dx,
                               dw, db, ws);
}

static const nn_op_def conv2d_def = {"conv2d", conv2d_backward};

/* "2x3x8x8" for messages */
static const char *dims_str(const int d[4], char *buf, size_t n)
{
    snprintf(buf, n, "%dx%dx%dx%d", d[0], d[1], d[2], d[3]);
    return buf;
}

nn_status nn_conv2d_shape(const int x[4], const int w[4], nn_conv2d_params p, nn_conv2d_geom *g)
{
    char sx[64], sw[64];
    dims_str(x, sx, sizeof sx);
    dims_str(w, sw, sizeof sw);
    const int sh = p.stride_h ? p.stride_h : 1, sws = p.stride_w ? p.stride_w : 1;
    const int groups = p.groups ? p.groups : 1;
    if (sh < 1 || sws < 1)
        return nn_error(NN_E_ARG, "conv2d: stride %dx%d must be >= 1 (0 means 1)", p.stride_h, p.stride_w);
    if (p.pad_h < 0 || p.pad_w < 0) return nn_error(NN_E_ARG, "conv2d: padding %dx%d must be >= 0", p.pad_h, p.pad_w);
    if (groups < 1) return nn_error(NN_E_ARG, "conv2d: groups %d must be >= 1 (0 means 1)", p.groups);
    const int C = x[1], H = x[2], W = x[3], O = w[0], KH = w[2], KW = w[3];
    if (O % groups)
        return nn_error(NN_E_SHAPE, "conv2d: weight %s has %d output channels, not divisible by groups %d", sw, O,
                        groups);
    if (C % groups)
        return nn_error(NN_E_SHAPE, "conv2d: input %s has %d channels, not divisible by groups %d", sx, C, groups);
    if ((long long)w[1] * groups != C)
        return nn_error(NN_E_SHAPE, "conv2d: input %s has %d channels but weight %s expects %d x groups %d", sx, C,
                        sw, w[1], groups);
    const long long eh = (long long)H + 2LL * p.pad_h - KH, ew = (long long)W + 2LL * p.pad_w - KW;
    if (eh < 0 || ew < 0)
        return nn_error(NN_E_SHAPE, "conv2d: kernel %dx%d (weight %s) does not fit input %s padded by %dx%d", KH,
                        KW, sw, sx, p.pad_h, p.pad_w);
    const long long OH = eh / sh + 1, OW = ew / sws + 1;
    if (OH * OW * (long long)x[0] > INT_MAX || (long long)w[1] * KH * KW > INT_MAX)
        return nn_error(NN_E_SHAPE, "conv2d: input %s with weight %s is too large for one GEMM (int dimensions)", sx,
                        sw);
    *g = (nn_conv2d_geom){
        .n = x[0], .c = C, .h = H, .w = W, .oc = O, .kh = KH, .kw = KW,
        .sh = sh, .sw = sws, .ph = p.pad_h, .pw = p.pad_w, .groups = groups,
        .oh = (int)OH, .ow = (int)OW,
    };
    return NN_OK;
}

/* nn_conv2d, with the ReLU applied by the forward kernel when `relu` */
static nn_tensor *conv2d(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b, nn_conv2d_params p, bool relu)
{
    nn_tensor *in[3] = {x, w, b};
    if (nn_op_skip(ctx, "conv2d", 2, in)) return NULL;
    char sx[64], sw[64], sb[64];
    nn_shape_str(x, sx, sizeof sx);
    nn_shape_str(w, sw, sizeof sw);
    if (x->dtype != NN_F32 || w->dtype != NN_F32 || (b && b->dtype != NN_F32))
        return nn_op_fail(ctx, NN_E_ARG, "conv2d: input, weight and bias must be float32");
    if (x->ndim != 4)
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: input %s must be 4-D (N, C, H, W)", sx);
    if (w->ndim != 4)
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: weight %s must be 4-D (O, C/groups, KH, KW)", sw);
    nn_conv2d_geom g;
    nn_status s = nn_conv2d_shape(x->shape, w->shape, p, &g);
    if (s != NN_OK) return nn_op_fail_status(ctx, s);
    if (b && (b->ndim != 1 || b->shape[0] != g.oc))
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: bias %s must be 1-D of length %d (the weight "
                          "%s's output channels)", nn_shape_str(b, sb, sizeof sb), g.oc, sw);
    if (!nn_op_same_device(ctx, "conv2d", 3, in)) return NULL;
    const nn_backend *be = nn_op_backend(ctx, "conv2d", x->device);
    if (!be) return NULL;
    g.relu = relu;

    const int yshape[4] = {g.n, g.oc, g.oh, g.ow};
    nn_tensor *y = nn_op_tensor(ctx, NN_F32, x->device, 4, yshape);
    if (!y) return NULL;
    size_t bytes = be->conv2d_workspace(&g);
    void *ws = NULL;
    if (bytes && !(ws = nn_op_scratch(ctx, x->device, bytes))) return NULL;
    s = be->conv2d_forward(&g, nn_f32(x), nn_f32(w), b ? nn_f32(b) : NULL, nn_f32(y), ws);
    if (s != NN_OK) return nn_op_fail_status(ctx, s);

    const int nin = b ? 3 : 2;
    if (nn_op_wants_grad(ctx, nin, in)) {
        nn_node *nd = nn_op_record(ctx, &conv2d_def, y, nin, in);
        if (!nd) return NULL;
        nn_conv2d_geom *saved = nn_op_host(ctx, sizeof *saved);
        if (!saved) return NULL;
        *saved = g;
        nd->saved = saved;
    }
    return relu ? nn_relu_applied(ctx, y) : y;
}

nn_tensor *nn_conv2d(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b, nn_conv2d_params p)
{
    return conv2d(ctx, x, w, b, p, false);
}

nn_tensor *nn_conv2d_relu(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b, nn_conv2d_params p)
{
    return conv2d(ctx, x, w, b, p, true);
}

/* ---- registry entry (ops/registry.h) ---- */

static nn_tensor *conv2d_call(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    const nn_op_case *c = user;
    nn_conv2d_params p;
    memcpy(&p, c->args, sizeof p);
    return nn_conv2d(ctx, in[0], in[1], c->n > 2 ? in[2] : NULL, p);
}

static nn_status conv2d_gc_case(nn_op_case *c, nn_rng *r, nn_device dev)
{
    int g = nn_op_pick(r, 1, 3), n = nn_op_pick(r, 1, 2), ci = g * nn_op_pick(r, 1, 3), co = g * nn_op_pick(r, 1, 3);
    int k = nn_op_pick(r, 1, 5), s = nn_op_pick(r, 1, 3), p = nn_op_pick(r, 0, k / 2);
    int h = nn_op_pick(r, k + 1, k + 8), w = nn_op_pick(r, k + 1, k + 8);
    nn_conv2d_params cp = {s, s, p, p, g};
    nn_op_case_set_args(c, &cp, sizeof cp);
    snprintf(c->about, sizeof c->about, "stride %d, pad %d, groups %d", s, p, g);
    int xs[4] = {n, ci, h, w}, ws[4] = {co, ci / g, k, k}, bs[1] = {co};
    NN_TRY(nn_op_case_rand(c, "x", r, dev, -1, 1, 4, xs));
    NN_TRY(nn_op_case_rand(c, "w", r, dev, -1, 1, 4, ws));
    return nn_op_case_rand(c, "b", r, dev, -1, 1, 1, bs);
}

const nn_op_info nn_op_conv2d = {"conv2d", conv2d_gc_case, conv2d_call};
