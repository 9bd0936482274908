/* conv2d: the forward against a float64 reference on many geometries (batch 1,
 * odd and non-square sizes, padding, strides, groups, depthwise, 1x1, several
 * images per GEMM and one), gradients by central differences and against a
 * float64 reference backward, accumulation, and the error messages. */
#include <omp.h>
#include <stdbool.h>
#include <string.h>

#include "ops/cpu_kernels.h"
#include "tests/testutil.h"

/* A float32 sum of K products is off from the exact sum by about 2^-24 times
 * the sum of |products| in practice (the rounding errors of the partial sums
 * mostly cancel; the worst case is K times that). 1e-5 of that magnitude is a
 * ~170x margin, yet a single wrong, missing or extra product moves a sum by
 * about 1/K of it, >= 1.2e-4 for every reduction here (K <= 8192). */
#define MAG_RTOL 1e-5
/* Winograd with 7 or 8 points (measured worst here: 1.1e-5 at 7 points,
 * 1.4e-5 at 8; 5e-6 at 5 or 6): see TU_CONV_MAG_RTOL. */
#define MAG_RTOL_WINO_WIDE TU_CONV_MAG_RTOL
/* For sums with no terms at all (an output window wholly in the padding). */
#define MAG_ATOL 1e-7
/* Running backward a second time without zeroing must double the gradients;
 * the second pass adds its partial products onto the first in a different
 * order, so the result is 2 g only up to a few float32 roundings. */
#define ACCUM_RTOL 1e-5
#define ACCUM_ATOL 1e-6

typedef struct conv_case {
    int n, c, h, w;   /* input */
    int o, kh, kw;    /* weight (o, c/groups, kh, kw) */
    nn_conv2d_params p;
    bool bias;
    const char *what;
} conv_case;

/* The geometry with the defaults applied, computed independently of the op. */
typedef struct ref_geom {
    int n, c, h, w, o, kh, kw, sh, sw, ph, pw, g, oh, ow;
} ref_geom;

static ref_geom geom_of(const conv_case *k)
{
    ref_geom r = {k->n, k->c, k->h, k->w, k->o, k->kh, k->kw, 0, 0, 0, 0, 0, 0, 0};
    r.sh = k->p.stride_h ? k->p.stride_h : 1;
    r.sw = k->p.stride_w ? k->p.stride_w : 1;
    r.ph = k->p.pad_h;
    r.pw = k->p.pad_w;
    r.g = k->p.groups ? k->p.groups : 1;
    r.oh = (r.h + 2 * r.ph - r.kh) / r.sh + 1;
    r.ow = (r.w + 2 * r.pw - r.kw) / r.sw + 1;
    return r;
}

static size_t x_numel(const ref_geom *g) { return (size_t)g->n * g->c * g->h * g->w; }
static size_t w_numel(const ref_geom *g) { return (size_t)g->o * (g->c / g->g) * g->kh * g->kw; }
static size_t y_numel(const ref_geom *g) { return (size_t)g->n * g->o * g->oh * g->ow; }

/* Runs BODY for every product x[xi] * w[wi] that enters y[yi]: the definition
 * in ops.h, written as plainly as possible. */
#define FOR_EACH_TERM(g, BODY)                                                                     \
    do {                                                                                           \
        const int cg_ = (g)->c / (g)->g, og_ = (g)->o / (g)->g;                                    \
        for (int n_ = 0; n_ < (g)->n; n_++)                                                        \
            for (int o_ = 0; o_ < (g)->o; o_++)                                                    \
                for (int i_ = 0; i_ < (g)->oh; i_++)                                               \
                    for (int j_ = 0; j_ < (g)->ow; j_++) {                                         \
                        size_t yi = (((size_t)n_ * (g)->o + o_) * (g)->oh + i_) * (g)->ow + j_;    \
                        for (int ci_ = 0; ci_ < cg_; ci_++)                                        \
                            for (int p_ = 0; p_ < (g)->kh; p_++)                                   \
                                for (int q_ = 0; q_ < (g)->kw; q_++) {                             \
                                    int hi_ = i_ * (g)->sh + p_ - (g)->ph;                         \
                                    int wi_ = j_ * (g)->sw + q_ - (g)->pw;                         \
                                    if (hi_ < 0 || hi_ >= (g)->h || wi_ < 0 || wi_ >= (g)->w)      \
                                        continue;                                                  \
                                    int c_ = (o_ / og_) * cg_ + ci_;                               \
                                    size_t xi =                                                    \
                                        (((size_t)n_ * (g)->c + c_) * (g)->h + hi_) * (g)->w + wi_; \
                                    size_t wi = (((size_t)o_ * cg_ + ci_) * (g)->kh + p_) * (g)->kw + q_; \
                                    BODY;                                                          \
                                }                                                                  \
                    }                                                                              \
    } while (0)

/* y and mag = the sum of |terms| of each output (bias included). */
static void ref_forward(const ref_geom *g, const float *x, const float *w, const float *b, double *y,
                        double *mag)
{
    const size_t plane = (size_t)g->oh * g->ow;
    for (size_t i = 0; i < y_numel(g); i++) {
        double bo = b ? (double)b[(i / plane) % (size_t)g->o] : 0.0;
        y[i] = bo;
        mag[i] = fabs(bo);
    }
    FOR_EACH_TERM(g, {
        double t = (double)x[xi] * (double)w[wi];
        y[yi] += t;
        mag[yi] += fabs(t);
    });
}

/* dx, dw, db (each with its magnitude) for an output gradient dy; db may be NULL. */
static void ref_backward(const ref_geom *g, const float *x, const float *w, const double *dy,
                         double *dx, double *mx, double *dw, double *mw, double *db, double *mb)
{
    memset(dx, 0, x_numel(g) * sizeof *dx);
    memset(mx, 0, x_numel(g) * sizeof *mx);
    memset(dw, 0, w_numel(g) * sizeof *dw);
    memset(mw, 0, w_numel(g) * sizeof *mw);
    FOR_EACH_TERM(g, {
        dx[xi] += (double)w[wi] * dy[yi];
        mx[xi] += fabs((double)w[wi] * dy[yi]);
        dw[wi] += (double)x[xi] * dy[yi];
        mw[wi] += fabs((double)x[xi] * dy[yi]);
    });
    if (db) {
        const size_t plane = (size_t)g->oh * g->ow;
        for (int o = 0; o < g->o; o++) db[o] = mb[o] = 0.0;
        for (size_t i = 0; i < y_numel(g); i++) {
            db[(i / plane) % (size_t)g->o] += dy[i];
            mb[(i / plane) % (size_t)g->o] += fabs(dy[i]);
        }
    }
}

static void assert_close_mag(const float *got, const double *ref, const double *mag, size_t n, double rtol,
                             const char *what, const char *which)
{
    tu_assert_close_mag(got, ref, mag, n, rtol, MAG_ATOL, what, which);
}

static tu_xwb make_tensors(const conv_case *k, uint64_t seed, bool grads)
{
    ref_geom g = geom_of(k);
    tu_xwb t = {tu_rand4(seed, g.n, g.c, g.h, g.w), tu_rand4(seed + 1, g.o, g.c / g.g, g.kh, g.kw), NULL};
    if (k->bias) t.b = tu_rand(seed + 2, -1.0f, 1.0f, 1, &g.o);
    if (grads) tu_xwb_require_grad(&t);
    return t;
}

static nn_tensor *run_conv(nn_ctx *ctx, const void *kase, const tu_xwb *t)
{
    const conv_case *k = kase;
    nn_tensor *y = nn_conv2d(ctx, t->x, t->w, t->b, k->p);
    if (!y) fail_msg("%s: conv2d failed: %s", k->what, nn_ctx_errmsg(ctx));
    ref_geom g = geom_of(k);
    assert_int_equal(y->ndim, 4);
    assert_int_equal(y->shape[0], g.n);
    assert_int_equal(y->shape[1], g.o);
    assert_int_equal(y->shape[2], g.oh);
    assert_int_equal(y->shape[3], g.ow);
    return y;
}

/* {n, c, h, w, o, kh, kw, {stride_h, stride_w, pad_h, pad_w, groups}, bias, what} */
static const conv_case fwd_cases[] = {
    {1, 1, 5, 5, 1, 3, 3, {0}, true, "batch 1, one channel, 3x3"},
    {2, 3, 7, 9, 4, 3, 3, {1, 1, 1, 1, 1}, true, "odd non-square input, pad 1"},
    {3, 4, 11, 8, 6, 5, 3, {2, 2, 2, 1, 2}, true, "stride 2, groups 2, 5x3 kernel, pad 2x1"},
    {2, 6, 9, 7, 6, 3, 3, {1, 2, 1, 0, 6}, true, "depthwise (groups = C), stride 1x2"},
    {3, 4, 10, 7, 4, 3, 2, {3, 2, 0, 1, 4}, false, "depthwise, no bias, stride 3x2, 3x2 kernel"},
    {2, 4, 6, 5, 8, 3, 3, {1, 1, 1, 1, 2}, true, "groups 2 with 4 outputs per group"},
    {2, 5, 6, 6, 7, 1, 1, {0}, true, "1x1, both images in one GEMM"},
    {2, 3, 7, 6, 5, 1, 1, {2, 2, 1, 1, 1}, true, "1x1, stride 2, padded"},
    {2, 3, 64, 64, 4, 1, 1, {0}, false, "1x1 with 4096 outputs per image: x is the column matrix"},
    {2, 2, 66, 66, 3, 3, 3, {0}, true, "3x3 with 4096 outputs per image: one image per GEMM"},
    {7, 4, 40, 25, 4, 3, 3, {1, 1, 1, 1, 2}, true, "1000 outputs per image: chunks of 5 + 2 images"},
    {2, 3, 13, 13, 8, 11, 11, {4, 4, 2, 2, 1}, true, "AlexNet conv1 style: 11x11, stride 4, pad 2"},
    {1, 2, 4, 5, 3, 4, 5, {0}, true, "kernel as large as the input: 1x1 output"},
    {2, 2, 3, 3, 2, 2, 2, {0, 0, 3, 3, 1}, true, "padding wider than the kernel: whole rows of zeros"},
    {2, 3, 5, 8, 2, 2, 4, {3, 1, 0, 2, 1}, true, "non-square 2x4 kernel, stride 3x1, pad 0x2"},
    {2, 4, 9, 9, 6, 5, 5, {1, 1, 2, 2, 1}, true, "5x5, pad 2, stride 1 (AlexNet conv2 style)"},
    {4, 6, 13, 13, 8, 3, 3, {1, 1, 1, 1, 2}, true, "3x3 pad 1 on 13x13, groups 2, batch 4 (conv4 style: Winograd)"},
    /* rows wider than 32 outputs take im2col's general path (bounds per row),
     * narrower ones the zero-padded plane copy: cases 11, 13, 15 there */
    {2, 3, 70, 68, 4, 5, 5, {2, 2, 2, 2, 1}, true, "34 outputs a row, stride 2, pad 2: im2col's general path"},
    {2, 2, 12, 70, 3, 3, 3, {1, 1, 1, 1, 1}, true, "70 outputs a row, stride 1, pad 1: the general path's copies"},
};

/* The points of the Winograd algorithm the kernels pick for case k now (0: none). */
static int points_of(const conv_case *k)
{
    const ref_geom r = geom_of(k);
    const nn_conv2d_geom g = {.n = r.n, .c = r.c, .h = r.h, .w = r.w, .oc = r.o, .kh = r.kh, .kw = r.kw,
                              .sh = r.sh, .sw = r.sw, .ph = r.ph, .pw = r.pw, .groups = r.g, .oh = r.oh, .ow = r.ow};
    return nn_cpu_conv2d_wino_points(&g);
}

/* The tolerance for case k under the algorithm the kernels pick for it now. */
static double rtol_of(const conv_case *k) { return points_of(k) >= 7 ? MAG_RTOL_WINO_WIDE : MAG_RTOL; }

/* Every algorithm: as the cost model chooses (0), im2col + GEMM (-1), and
 * Winograd F(m) for every m wherever the shape allows it (the largest the
 * points allow where m is too large for the kernel). */
static const int algo_modes[] = {0, -1, 2, 3, 4, 5, 6};
#define NMODES (sizeof algo_modes / sizeof algo_modes[0])

static void test_forward_matches_reference(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    assert_non_null(ctx);
    const size_t nc = sizeof fwd_cases / sizeof fwd_cases[0];
    size_t wino_runs[NMODES] = {0};
    for (size_t ci = 0; ci < NMODES * nc; ci++) {
        nn_cpu_conv2d_force_winograd(algo_modes[ci / nc]);
        const conv_case *k = &fwd_cases[ci % nc];
        wino_runs[ci / nc] += points_of(k) > 0;
        ref_geom g = geom_of(k);
        tu_xwb t = make_tensors(k, 100 + 10 * (ci % nc), false);
        nn_ctx_reset(ctx);
        nn_tensor *y = run_conv(ctx, k, &t);
        double *ref = malloc(y_numel(&g) * sizeof *ref), *mag = malloc(y_numel(&g) * sizeof *mag);
        assert_non_null(ref);
        assert_non_null(mag);
        ref_forward(&g, nn_f32(t.x), nn_f32(t.w), t.b ? nn_f32(t.b) : NULL, ref, mag);
        assert_close_mag(nn_f32(y), ref, mag, y_numel(&g), rtol_of(k), k->what, "y");
        free(ref);
        free(mag);
        tu_xwb_free(&t);
    }
    nn_cpu_conv2d_force_winograd(0);
    /* the forced modes did run Winograd: on the 3x3 and 5x5 same-size cases */
    assert_int_equal(wino_runs[1], 0);
    for (size_t mode = 2; mode < NMODES; mode++) assert_true(wino_runs[mode] >= 6);
    nn_ctx_free(ctx);
}

/* The forward overwrites y: two calls on one context, the second into memory
 * the first used, give the same result. */
static void test_forward_overwrites(void **state)
{
    (void)state;
    const conv_case *k = &fwd_cases[1];
    tu_xwb t = make_tensors(k, 7, false);
    tu_assert_forward_overwrites(run_conv, k, &t);
    tu_xwb_free(&t);
}

static nn_tensor *conv_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    const conv_case *k = user;
    return nn_conv2d(ctx, in[0], in[1], k->bias ? in[2] : NULL, k->p);
}

/* Small enough that central differences over every element stay fast. */
static const conv_case grad_cases[] = {
    {2, 3, 5, 6, 4, 3, 2, {1, 1, 1, 0, 1}, true, "gradcheck: 3x2 kernel, pad 1x0"},
    {2, 4, 7, 5, 4, 3, 3, {2, 2, 1, 1, 2}, true, "gradcheck: stride 2, groups 2"},
    {1, 3, 6, 5, 3, 3, 3, {1, 2, 1, 1, 3}, true, "gradcheck: depthwise, stride 1x2"},
    {2, 3, 5, 5, 2, 1, 1, {2, 2, 0, 0, 1}, false, "gradcheck: 1x1, stride 2, no bias"},
    {1, 2, 4, 4, 2, 3, 3, {1, 1, 2, 2, 1}, true, "gradcheck: padding 2 with a 3x3 kernel"},
};

static void test_gradcheck(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < sizeof grad_cases / sizeof grad_cases[0]; ci++) {
        const conv_case *k = &grad_cases[ci];
        tu_xwb t = make_tensors(k, 500 + 10 * ci, true);
        nn_tensor *in[3] = {t.x, t.w, t.b};
        tu_gradcheck(conv_fn, (void *)k, k->bias ? 3 : 2, in, 900 + ci, k->what);
        tu_xwb_free(&t);
    }
}

/* Only the weight and bias want gradients: the kernel must skip dx. */
static void test_gradcheck_weight_only(void **state)
{
    (void)state;
    const conv_case *k = &grad_cases[1];
    tu_xwb t = make_tensors(k, 77, false);
    assert_int_equal(nn_tensor_require_grad(t.w), NN_OK);
    assert_int_equal(nn_tensor_require_grad(t.b), NN_OK);
    nn_tensor *in[3] = {t.x, t.w, t.b};
    tu_gradcheck(conv_fn, (void *)k, 3, in, 78, "gradcheck: weight and bias only");
    assert_null(t.x->grad);
    tu_xwb_free(&t);
}

/* Forward + backward with a random dy; dx, dw, db against the float64 reference. */
static void check_backward_case(const conv_case *k, uint64_t seed)
{
    ref_geom g = geom_of(k);
    tu_xwb t = make_tensors(k, seed, true);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = run_conv(ctx, k, &t);
    size_t ny = y_numel(&g), nx = x_numel(&g), nw = w_numel(&g);
    int sy = (int)ny;
    nn_tensor *dyt = tu_rand(seed + 3, -1.0f, 1.0f, 1, &sy);
    double *dy = malloc(ny * sizeof *dy), *dx = malloc(nx * sizeof *dx), *mx = malloc(nx * sizeof *mx);
    double *dw = malloc(nw * sizeof *dw), *mw = malloc(nw * sizeof *mw);
    double db[64], mb[64];
    assert_true(g.o <= 64);
    assert_true(dy && dx && mx && dw && mw);
    for (size_t i = 0; i < ny; i++) dy[i] = nn_f32(dyt)[i];
    assert_int_equal(nn_backward_with(ctx, y, nn_f32(dyt)), NN_OK);
    ref_backward(&g, nn_f32(t.x), nn_f32(t.w), dy, dx, mx, dw, mw, t.b ? db : NULL, mb);
    const double rtol = rtol_of(k);
    assert_close_mag(nn_f32(t.x->grad), dx, mx, nx, rtol, k->what, "dx");
    assert_close_mag(nn_f32(t.w->grad), dw, mw, nw, rtol, k->what, "dw");
    if (t.b) assert_close_mag(nn_f32(t.b->grad), db, mb, (size_t)g.o, MAG_RTOL, k->what, "db");
    free(dy);
    free(dx);
    free(mx);
    free(dw);
    free(mw);
    nn_tensor_free(dyt);
    tu_xwb_free(&t);
    nn_ctx_free(ctx);
}

static void test_backward_matches_reference(void **state)
{
    (void)state;
    /* every code path of the kernel: several images per GEMM with and without
     * groups, depthwise, x as its own column matrix, one image per GEMM, and a
     * partial last chunk */
    /* every kernel path, the Winograd ones (3x3 and 5x5 stride 1: cases 1, 5,
     * 9, 10, 16, 17) included, under every algorithm (algo_modes) */
    const size_t which[] = {1, 2, 3, 4, 5, 8, 9, 10, 11, 13, 15, 16, 17, 18};
    for (size_t mode = 0; mode < NMODES; mode++) {
        nn_cpu_conv2d_force_winograd(algo_modes[mode]);
        for (size_t i = 0; i < sizeof which / sizeof which[0]; i++)
            check_backward_case(&fwd_cases[which[i]], 300 + 10 * i);
    }
    nn_cpu_conv2d_force_winograd(0);
}

/* Backward kernels accumulate: a second backward without zeroing doubles
 * every gradient. */
static void check_accumulates(const conv_case *k, uint64_t seed)
{
    tu_xwb t = make_tensors(k, seed, true);
    tu_assert_backward_accumulates(run_conv, k, &t, seed + 5, ACCUM_ATOL, ACCUM_RTOL);
    tu_xwb_free(&t);
}

static void test_backward_accumulates_across_calls(void **state)
{
    (void)state;
    /* several images per GEMM, x as its own column matrix, one image per GEMM */
    const size_t which[] = {2, 8, 9};
    for (size_t i = 0; i < sizeof which / sizeof which[0]; i++)
        check_accumulates(&fwd_cases[which[i]], 41 + 10 * i);
}

/* One tensor in two places. (a) x as both input and weight: y = conv(x, x) =
 * sum x^2, so dL/dx = 2x, summed from the dx and dw slots of one node.
 * (b) an op output used twice: y = conv(x, w, b), z = conv(y, y) = sum y^2, so
 * y's gradient 2y arrives from two slots before it flows on to x, w, b. */
static void test_same_tensor_twice(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = tu_rand4(61, 1, 1, 4, 5);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_tensor *y = nn_conv2d(ctx, x, x, NULL, (nn_conv2d_params){0});
    assert_non_null(y);
    assert_int_equal(y->numel, 1);
    assert_int_equal(nn_backward(ctx, y), NN_OK);
    double two_x[20], mag[20];
    for (int i = 0; i < 20; i++) {
        two_x[i] = 2.0 * nn_f32(x)[i];
        mag[i] = fabs(two_x[i]);
    }
    assert_close_mag(nn_f32(x->grad), two_x, mag, 20, MAG_RTOL, "conv(x, x)", "dx");
    nn_tensor_free(x);

    /* (b) */
    const conv_case k = {1, 2, 5, 5, 1, 3, 3, {0}, true, "conv(y, y) after y = conv(x, w, b)"};
    ref_geom g = geom_of(&k);
    tu_xwb t = make_tensors(&k, 62, true);
    nn_ctx_reset(ctx);
    y = run_conv(ctx, &k, &t); /* (1, 1, 3, 3): usable as a 1x1x3x3 weight */
    nn_tensor *z = nn_conv2d(ctx, y, y, NULL, (nn_conv2d_params){0});
    assert_non_null(z);
    assert_int_equal(z->numel, 1);
    assert_int_equal(nn_backward(ctx, z), NN_OK);
    double dy[9], dx[50], mx[50], dw[18], mw[18], db[1], mb[1];
    for (int i = 0; i < 9; i++) dy[i] = 2.0 * nn_f32(y)[i];
    ref_backward(&g, nn_f32(t.x), nn_f32(t.w), dy, dx, mx, dw, mw, db, mb);
    for (int i = 0; i < 9; i++) {
        double d = fabs(nn_f32(y->grad)[i] - dy[i]);
        if (d > MAG_RTOL * fabs(dy[i]) + MAG_ATOL)
            fail_msg("%s: dy[%d] is %g, expected 2y = %g", k.what, i, (double)nn_f32(y->grad)[i], dy[i]);
    }
    assert_close_mag(nn_f32(t.x->grad), dx, mx, 50, MAG_RTOL, k.what, "dx");
    assert_close_mag(nn_f32(t.w->grad), dw, mw, 18, MAG_RTOL, k.what, "dw");
    assert_close_mag(nn_f32(t.b->grad), db, mb, 1, MAG_RTOL, k.what, "db");
    tu_xwb_free(&t);
    nn_ctx_free(ctx);
}

/* With gradients off, or no input requiring grad, nothing is recorded. */
static void test_records_only_when_needed(void **state)
{
    (void)state;
    const conv_case *k = &fwd_cases[1];
    tu_xwb t = make_tensors(k, 81, false);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = run_conv(ctx, k, &t);
    assert_null(y->node);
    assert_int_equal(nn_ctx_nodes(ctx), 0);
    assert_int_equal(nn_tensor_require_grad(t.b), NN_OK);
    nn_ctx_set_grad(ctx, false);
    y = run_conv(ctx, k, &t);
    assert_null(y->node);
    assert_int_equal(nn_ctx_nodes(ctx), 0);
    nn_ctx_set_grad(ctx, true);
    y = run_conv(ctx, k, &t);
    assert_non_null(y->node);
    assert_int_equal(nn_ctx_nodes(ctx), 1);
    tu_xwb_free(&t);
    nn_ctx_free(ctx);
}

/* ---- errors ---- */

static nn_tensor *t4(int n, int c, int h, int w) { return tu_rand4(5, n, c, h, w); }
static nn_tensor *t1(int n) { return tu_rand(6, -1.0f, 1.0f, 1, &n); }

/* The call failed with status s and a message naming conv2d and containing needle. */
static void expect_fail(nn_ctx *ctx, nn_tensor *y, nn_status s, const char *needle)
{
    const char *msg = nn_ctx_errmsg(ctx);
    if (y) fail_msg("expected a failure containing \"%s\", got a tensor", needle);
    if (nn_ctx_status(ctx) != s)
        fail_msg("expected status %s, got %s (%s)", nn_status_str(s), nn_status_str(nn_ctx_status(ctx)), msg);
    if (!strstr(msg, "conv2d")) fail_msg("message does not name conv2d: \"%s\"", msg);
    if (!strstr(msg, needle)) fail_msg("message \"%s\" lacks \"%s\"", msg, needle);
    nn_ctx_reset(ctx);
}

static void test_errors(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = t4(2, 3, 8, 8), *w = t4(4, 3, 3, 3), *b = t1(4);
    const nn_conv2d_params p0 = {0};

    int s3[3] = {3, 8, 8};
    nn_tensor *x3 = tu_rand(1, -1, 1, 3, s3);
    expect_fail(ctx, nn_conv2d(ctx, x3, w, b, p0), NN_E_SHAPE, "input 3x8x8 must be 4-D");
    int s2[2] = {4, 27};
    nn_tensor *w2 = tu_rand(2, -1, 1, 2, s2);
    expect_fail(ctx, nn_conv2d(ctx, x, w2, b, p0), NN_E_SHAPE, "weight 4x27 must be 4-D");

    nn_tensor *w423 = t4(4, 2, 3, 3);
    expect_fail(ctx, nn_conv2d(ctx, x, w423, b, p0), NN_E_SHAPE,
                "conv2d: input 2x3x8x8 has 3 channels but weight 4x2x3x3 expects 2 x groups 1");
    nn_tensor *x4 = t4(2, 4, 8, 8), *w3 = t4(3, 2, 3, 3);
    expect_fail(ctx, nn_conv2d(ctx, x4, w3, NULL, (nn_conv2d_params){.groups = 2}), NN_E_SHAPE,
                "3 output channels, not divisible by groups 2");
    nn_tensor *w413 = t4(4, 1, 3, 3);
    expect_fail(ctx, nn_conv2d(ctx, x, w413, NULL, (nn_conv2d_params){.groups = 2}), NN_E_SHAPE,
                "3 channels, not divisible by groups 2");
    /* groups that divide both but do not match the weight's second dimension */
    expect_fail(ctx, nn_conv2d(ctx, x4, w423, NULL, (nn_conv2d_params){.groups = 4}), NN_E_SHAPE,
                "expects 2 x groups 4");

    nn_tensor *b3 = t1(3);
    expect_fail(ctx, nn_conv2d(ctx, x, w, b3, p0), NN_E_SHAPE, "bias 3 must be 1-D of length 4");
    int sb2[2] = {1, 4};
    nn_tensor *b2 = tu_rand(3, -1, 1, 2, sb2);
    expect_fail(ctx, nn_conv2d(ctx, x, w, b2, p0), NN_E_SHAPE, "bias 1x4");

    nn_tensor *w9 = t4(4, 3, 9, 3);
    expect_fail(ctx, nn_conv2d(ctx, x, w9, b, p0), NN_E_SHAPE, "kernel 9x3");
    /* ...which fits once padded */
    nn_tensor *ok = nn_conv2d(ctx, x, w9, b, (nn_conv2d_params){.pad_h = 1});
    assert_non_null(ok);
    assert_int_equal(ok->shape[2], 2);
    nn_ctx_reset(ctx);

    expect_fail(ctx, nn_conv2d(ctx, x, w, b, (nn_conv2d_params){.stride_h = -1}), NN_E_ARG, "stride");
    expect_fail(ctx, nn_conv2d(ctx, x, w, b, (nn_conv2d_params){.stride_w = -2}), NN_E_ARG, "stride");
    expect_fail(ctx, nn_conv2d(ctx, x, w, b, (nn_conv2d_params){.pad_w = -1}), NN_E_ARG, "padding");
    expect_fail(ctx, nn_conv2d(ctx, x, w, b, (nn_conv2d_params){.groups = -1}), NN_E_ARG, "groups");

    nn_tensor *xi = NULL;
    int sx[4] = {2, 3, 8, 8};
    assert_int_equal(nn_tensor_new(&xi, NN_I32, NN_CPU, 4, sx), NN_OK);
    expect_fail(ctx, nn_conv2d(ctx, xi, w, b, p0), NN_E_ARG, "float32");

    /* NULL inputs fail (the message comes from the shared op helper) */
    assert_null(nn_conv2d(ctx, NULL, w, b, p0));
    assert_int_equal(nn_ctx_status(ctx), NN_E_ARG);
    nn_ctx_reset(ctx);

    /* the first error sticks: a later valid call returns NULL and keeps it */
    assert_null(nn_conv2d(ctx, x, w423, b, p0));
    assert_null(nn_conv2d(ctx, x, w, b, p0));
    assert_int_equal(nn_ctx_status(ctx), NN_E_SHAPE);
    assert_non_null(strstr(nn_ctx_errmsg(ctx), "2 x groups 1"));
    nn_ctx_reset(ctx);
    assert_non_null(nn_conv2d(ctx, x, w, b, p0));

    nn_tensor *all[] = {x, w, b, x3, w2, w423, x4, w3, w413, b3, b2, w9, xi};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nn_tensor_free(all[i]);
    nn_ctx_free(ctx);
}

/* y, dx, dw, db of case k (seed fixed) computed with `threads` OpenMP threads. */
static void run_with_threads(const conv_case *k, int threads, float **out, size_t *len)
{
    omp_set_num_threads(threads);
    tu_xwb t = make_tensors(k, 4242, true);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = run_conv(ctx, k, &t);
    int sy = (int)y->numel;
    nn_tensor *dyt = tu_rand(4243, -1.0f, 1.0f, 1, &sy);
    assert_int_equal(nn_backward_with(ctx, y, nn_f32(dyt)), NN_OK);
    const nn_tensor *parts[4] = {y, t.x->grad, t.w->grad, t.b->grad};
    *len = 0;
    for (int i = 0; i < 4; i++) *len += parts[i]->numel;
    *out = malloc(*len * sizeof **out);
    assert_non_null(*out);
    size_t at = 0;
    for (int i = 0; i < 4; i++) {
        memcpy(*out + at, parts[i]->data, parts[i]->numel * sizeof(float));
        at += parts[i]->numel;
    }
    nn_tensor_free(dyt);
    nn_ctx_free(ctx);
    tu_xwb_free(&t);
}

/* Winograd's phases share the work among the threads differently for each
 * thread count, but every element is computed the same way: the results are
 * bit for bit the same on 1, 2, 3 and 5 threads (which also catches a phase
 * that reads what another thread has not finished writing). */
static void test_winograd_same_bits_any_thread_count(void **state)
{
    (void)state;
    const int saved = omp_get_max_threads();
    static const conv_case k = {7, 12, 9, 11, 10, 3, 3, {1, 1, 1, 1, 1}, true, "3x3 on 9x11, 7 images"};
    static const conv_case k5 = {5, 9, 7, 7, 12, 5, 5, {1, 1, 2, 2, 1}, true, "5x5 on 7x7, 5 images"};
    const conv_case *cases[2] = {&k, &k5};
    for (int m = 2; m <= 4; m++) {
        nn_cpu_conv2d_force_winograd(m);
        for (int c = 0; c < 2; c++) {
            float *ref, *got;
            size_t n_ref, n_got;
            run_with_threads(cases[c], 1, &ref, &n_ref);
            assert_true(points_of(cases[c]) > 0);
            for (int th = 2; th <= 5; th += th == 2 ? 1 : 2) {
                run_with_threads(cases[c], th, &got, &n_got);
                assert_int_equal(n_got, n_ref);
                if (memcmp(got, ref, n_ref * sizeof(float)) != 0)
                    fail_msg("%s, F(%d): %d threads differ from 1", cases[c]->what, m, th);
                free(got);
            }
            free(ref);
        }
    }
    nn_cpu_conv2d_force_winograd(0);
    omp_set_num_threads(saved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_forward_overwrites),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_gradcheck_weight_only),
        cmocka_unit_test(test_backward_matches_reference),
        cmocka_unit_test(test_backward_accumulates_across_calls),
        cmocka_unit_test(test_same_tensor_twice),
        cmocka_unit_test(test_records_only_when_needed),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_winograd_same_bits_any_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
