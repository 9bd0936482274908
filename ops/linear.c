/* linear (fully connected): y = x w^T + b with x (N, I), w (O, I) as in
 * PyTorch, b (O) or NULL -> y (N, O). Images are flattened first (nn_flatten).
 * The CPU kernels are one cblas_sgemm per product. */
#include <cblas.h>

#include "core/op.h"
#include "core/par.h"
#include "ops/cpu_kernels.h"
#include "ops/ops.h"
#include "ops/registry.h"

/* Below this many floats, an OpenMP team costs more than it saves. */
#define LINEAR_OMP_MIN 32768

nn_status nn_cpu_linear_forward(const nn_linear_geom *g, const float *x, const float *w,
                                const float *b, float *y)
{
    const int n = g->n, out = g->out;
    if (b) { /* y starts as the bias, and the GEMM adds x w^T onto it */
        NN_PAR_IF((size_t)n * out > LINEAR_OMP_MIN, "omp parallel for", for (int i = 0; i < n; i++) {
            for (int o = 0; o < out; o++) y[(size_t)i * out + o] = b[o];
        });
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, g->in, 1.0f, x, g->in, w, g->in,
                b ? 1.0f : 0.0f, y, out);
    /* the fused ReLU asked for (g->relu): the unfused kernel over y (the GPU fuses it into its GEMM) */
    if (g->relu) return nn_cpu_relu_forward((size_t)n * out, y, y);
    return NN_OK;
}

nn_status nn_cpu_linear_backward(const nn_linear_geom *g, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw, float *db)
{
    const int n = g->n, in = g->in, out = g->out;
    if (dx) /* dx (N, I) += dy (N, O) w (O, I) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in, 1.0f,
                    dx, in);
    if (dw) /* dw (O, I) += dy^T (O, N) x (N, I) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 1.0f,
                    dw, in);
    if (db) {
        /* (a batch of thousands of terms: a float total would drift) */
        NN_PAR_IF((size_t)n * out > LINEAR_OMP_MIN, "omp parallel for", for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int i = 0; i < n; i++) s += dy[(size_t)i * out + o];
            db[o] += (float)s;
        });
    }
    return NN_OK;
}

/* ---- graph wiring ---- */

static nn_status linear_backward(nn_ctx *ctx, nn_node *nd)
{
    (void)ctx;
    float *dx = nn_op_grad_in(nd, 0), *dw = nn_op_grad_in(nd, 1);
    float *db = nd->nin > 2 ? nn_op_grad_in(nd, 2) : NULL;
    if (!dx && !dw && !db) return NN_OK;
    const nn_linear_geom *g = nd->saved;
    const nn_backend *be = nn_backend_get(nd->out->device);
    return be->linear_backward(g, nn_f32(nd->in[0]), nn_f32(nd->in[1]), nn_f32(nd->out->grad), dx,
                               dw, db);
}

static const nn_op_def linear_def = {"linear", linear_backward};

/* nn_linear, with the ReLU applied by the forward kernel when `relu` */
static nn_tensor *linear(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b, bool relu)
{
    nn_tensor *in[3] = {x, w, b};
    if (nn_op_skip(ctx, "linear", 2, in)) return NULL;
    char sx[64], sw[64], sb[64];
    nn_shape_str(x, sx, sizeof sx);
    nn_shape_str(w, sw, sizeof sw);
    if (x->dtype != NN_F32 || w->dtype != NN_F32 || (b && b->dtype != NN_F32))
        return nn_op_fail(ctx, NN_E_ARG, "linear: input, weight and bias must be float32");
    if (x->ndim != 2)
        return nn_op_fail(ctx, NN_E_SHAPE, "linear: input %s must be 2-D (N, I); flatten images "
                          "first with nn_flatten", sx);
    if (w->ndim != 2)
        return nn_op_fail(ctx, NN_E_SHAPE, "linear: weight %s must be 2-D (O, I)", sw);
    const int nb = x->shape[0], ni = x->shape[1], no = w->shape[0]; /* not I: <complex.h> via cblas.h */
    if (w->shape[1] != ni)
        return nn_op_fail(ctx, NN_E_SHAPE, "linear: input %s has %d features but weight %s expects %d",
                          sx, ni, sw, w->shape[1]);
    if (b && (b->ndim != 1 || b->shape[0] != no))
        return nn_op_fail(ctx, NN_E_SHAPE, "linear: bias %s must be 1-D of length %d (the weight "
                          "%s's outputs)", nn_shape_str(b, sb, sizeof sb), no, sw);
    if (!nn_op_same_device(ctx, "linear", 3, in)) return NULL;
    const nn_backend *be = nn_op_backend(ctx, "linear", x->device);
    if (!be) return NULL;

    nn_linear_geom g = {.n = nb, .in = ni, .out = no, .relu = relu};
    const int yshape[2] = {nb, no};
    nn_tensor *y = nn_op_tensor(ctx, NN_F32, x->device, 2, yshape);
    if (!y) return NULL;
    nn_status s = be->linear_forward(&g, nn_f32(x), nn_f32(w), b ? nn_f32(b) : NULL, nn_f32(y));
    if (s != NN_OK) return nn_op_fail_status(ctx, s);

    const int nin = b ? 3 : 2;
    if (nn_op_wants_grad(ctx, nin, in)) {
        nn_node *nd = nn_op_record(ctx, &linear_def, y, nin, in);
        if (!nd) return NULL;
        nn_linear_geom *saved = nn_op_host(ctx, sizeof *saved);
        if (!saved) return NULL;
        *saved = g;
        nd->saved = saved;
    }
    return relu ? nn_relu_applied(ctx, y) : y;
}

nn_tensor *nn_linear(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b) { return linear(ctx, x, w, b, false); }

nn_tensor *nn_linear_relu(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b)
{
    return linear(ctx, x, w, b, true);
}

/* ---- registry entry (ops/registry.h) ---- */

static nn_tensor *linear_call(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_linear(ctx, in[0], in[1], ((const nn_op_case *)user)->n > 2 ? in[2] : NULL);
}

static nn_status linear_gc_case(nn_op_case *c, nn_rng *r, nn_device dev)
{
    int n = nn_op_pick(r, 1, 4), i = nn_op_pick(r, 1, 12), o = nn_op_pick(r, 1, 10);
    int xs[2] = {n, i}, ws[2] = {o, i}, bs[1] = {o};
    snprintf(c->about, sizeof c->about, "-");
    NN_TRY(nn_op_case_rand(c, "x", r, dev, -1, 1, 2, xs));
    NN_TRY(nn_op_case_rand(c, "w", r, dev, -1, 1, 2, ws));
    return nn_op_case_rand(c, "b", r, dev, -1, 1, 1, bs);
}

const nn_op_info nn_op_linear = {"linear", linear_gc_case, linear_call};
