/* linear: y = x w^T + b against a float64 reference on several shapes (batch 1,
 * odd sizes, no bias), gradients by central differences and against a float64
 * reference backward, accumulation, and the error messages. */
#include <stdbool.h>
#include <string.h>

#include "tests/testutil.h"

/* A float32 sum of K products is off from the exact sum by about 2^-24 times
 * the sum of |products| in practice (the rounding errors of the partial sums
 * mostly cancel; the worst case is K times that). 1e-5 of that magnitude is a
 * ~170x margin, yet a single wrong, missing or extra product moves a sum by
 * about 1/K of it, >= 1e-3 for every reduction here (K <= 600). */
#define MAG_RTOL 1e-5
/* For sums with no terms at all. */
#define MAG_ATOL 1e-7
/* A second backward adds its partial products onto the first in a different
 * order, so doubled gradients match 2 g only up to a few float32 roundings. */
#define ACCUM_RTOL 1e-5
#define ACCUM_ATOL 1e-6

typedef struct lin_case {
    int n, in, out;
    bool bias;
    const char *what;
} lin_case;

static const lin_case cases[] = {
    {1, 1, 1, true, "1x1 -> 1"},
    {1, 5, 3, true, "batch 1"},
    {7, 13, 4, true, "odd sizes"},
    {3, 9, 11, false, "no bias"},
    {64, 600, 17, true, "wide input, batch 64"},
    {33, 20, 100, true, "more outputs than inputs"},
};

/* y and mag = the sum of |terms| of each output (bias included). */
static void ref_forward(const lin_case *k, const float *x, const float *w, const float *b, double *y,
                        double *mag)
{
    for (int i = 0; i < k->n; i++) {
        for (int o = 0; o < k->out; o++) {
            double s = b ? (double)b[o] : 0.0, m = fabs(s);
            for (int j = 0; j < k->in; j++) {
                double t = (double)x[(size_t)i * k->in + j] * (double)w[(size_t)o * k->in + j];
                s += t;
                m += fabs(t);
            }
            y[(size_t)i * k->out + o] = s;
            mag[(size_t)i * k->out + o] = m;
        }
    }
}

/* dx = dy w, dw = dy^T x, db = sum over the batch of dy, each with its magnitude. */
static void ref_backward(const lin_case *k, const float *x, const float *w, const double *dy,
                         double *dx, double *mx, double *dw, double *mw, double *db, double *mb)
{
    const size_t nx = (size_t)k->n * k->in, nw = (size_t)k->out * k->in;
    memset(dx, 0, nx * sizeof *dx);
    memset(mx, 0, nx * sizeof *mx);
    memset(dw, 0, nw * sizeof *dw);
    memset(mw, 0, nw * sizeof *mw);
    for (int o = 0; o < k->out; o++) db[o] = mb[o] = 0.0;
    for (int i = 0; i < k->n; i++) {
        for (int o = 0; o < k->out; o++) {
            double d = dy[(size_t)i * k->out + o];
            db[o] += d;
            mb[o] += fabs(d);
            for (int j = 0; j < k->in; j++) {
                size_t xi = (size_t)i * k->in + j, wi = (size_t)o * k->in + j;
                dx[xi] += d * w[wi];
                mx[xi] += fabs(d * w[wi]);
                dw[wi] += d * x[xi];
                mw[wi] += fabs(d * x[xi]);
            }
        }
    }
}

static void assert_close_mag(const float *got, const double *ref, const double *mag, size_t n, const char *what,
                             const char *which)
{
    tu_assert_close_mag(got, ref, mag, n, MAG_RTOL, MAG_ATOL, what, which);
}

static tu_xwb make_tensors(const lin_case *k, uint64_t seed, bool grads)
{
    int sx[2] = {k->n, k->in}, sw[2] = {k->out, k->in};
    tu_xwb t = {tu_rand(seed, -1.0f, 1.0f, 2, sx), tu_rand(seed + 1, -1.0f, 1.0f, 2, sw), NULL};
    if (k->bias) t.b = tu_rand(seed + 2, -1.0f, 1.0f, 1, &k->out);
    if (grads) tu_xwb_require_grad(&t);
    return t;
}

static nn_tensor *run_linear(nn_ctx *ctx, const void *kase, const tu_xwb *t)
{
    const lin_case *k = kase;
    nn_tensor *y = nn_linear(ctx, t->x, t->w, t->b);
    if (!y) fail_msg("%s: linear failed: %s", k->what, nn_ctx_errmsg(ctx));
    assert_int_equal(y->ndim, 2);
    assert_int_equal(y->shape[0], k->n);
    assert_int_equal(y->shape[1], k->out);
    return y;
}

static void test_forward_matches_reference(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const lin_case *k = &cases[ci];
        tu_xwb t = make_tensors(k, 10 + 10 * ci, false);
        nn_ctx_reset(ctx);
        nn_tensor *y = run_linear(ctx, k, &t);
        double *ref = malloc(y->numel * sizeof *ref), *mag = malloc(y->numel * sizeof *mag);
        assert_true(ref && mag);
        ref_forward(k, nn_f32(t.x), nn_f32(t.w), t.b ? nn_f32(t.b) : NULL, ref, mag);
        assert_close_mag(nn_f32(y), ref, mag, y->numel, k->what, "y");
        free(ref);
        free(mag);
        tu_xwb_free(&t);
    }
    nn_ctx_free(ctx);
}

/* The forward overwrites y (the bias path writes y before the GEMM adds to it). */
static void test_forward_overwrites(void **state)
{
    (void)state;
    const lin_case *k = &cases[2];
    tu_xwb t = make_tensors(k, 3, false);
    tu_assert_forward_overwrites(run_linear, k, &t);
    tu_xwb_free(&t);
}

static nn_tensor *lin_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    const lin_case *k = user;
    return nn_linear(ctx, in[0], in[1], k->bias ? in[2] : NULL);
}

static void test_gradcheck(void **state)
{
    (void)state;
    /* the small cases: central differences over every element */
    for (size_t ci = 0; ci < 4; ci++) {
        const lin_case *k = &cases[ci];
        tu_xwb t = make_tensors(k, 200 + 10 * ci, true);
        nn_tensor *in[3] = {t.x, t.w, t.b};
        tu_gradcheck(lin_fn, (void *)k, k->bias ? 3 : 2, in, 300 + ci, k->what);
        tu_xwb_free(&t);
    }
    /* only the weight wants a gradient: the kernel must skip dx and db */
    const lin_case *k = &cases[2];
    tu_xwb t = make_tensors(k, 400, false);
    assert_int_equal(nn_tensor_require_grad(t.w), NN_OK);
    nn_tensor *in[3] = {t.x, t.w, t.b};
    tu_gradcheck(lin_fn, (void *)k, 3, in, 401, "weight only");
    assert_null(t.x->grad);
    assert_null(t.b->grad);
    tu_xwb_free(&t);
}

static void test_backward_matches_reference(void **state)
{
    (void)state;
    for (size_t ci = 2; ci < sizeof cases / sizeof cases[0]; ci++) {
        const lin_case *k = &cases[ci];
        tu_xwb t = make_tensors(k, 500 + 10 * ci, true);
        nn_ctx *ctx = nn_ctx_new();
        nn_tensor *y = run_linear(ctx, k, &t);
        size_t ny = y->numel, nx = t.x->numel, nw = t.w->numel;
        int sy = (int)ny;
        nn_tensor *dyt = tu_rand(600 + ci, -1.0f, 1.0f, 1, &sy);
        double *dy = malloc(ny * sizeof *dy), *dx = malloc(nx * sizeof *dx), *mx = malloc(nx * sizeof *mx);
        double *dw = malloc(nw * sizeof *dw), *mw = malloc(nw * sizeof *mw);
        double *db = malloc((size_t)k->out * sizeof *db), *mb = malloc((size_t)k->out * sizeof *mb);
        assert_true(dy && dx && mx && dw && mw && db && mb);
        for (size_t i = 0; i < ny; i++) dy[i] = nn_f32(dyt)[i];
        assert_int_equal(nn_backward_with(ctx, y, nn_f32(dyt)), NN_OK);
        ref_backward(k, nn_f32(t.x), nn_f32(t.w), dy, dx, mx, dw, mw, db, mb);
        assert_close_mag(nn_f32(t.x->grad), dx, mx, nx, k->what, "dx");
        assert_close_mag(nn_f32(t.w->grad), dw, mw, nw, k->what, "dw");
        if (t.b) assert_close_mag(nn_f32(t.b->grad), db, mb, (size_t)k->out, k->what, "db");
        free(dy);
        free(dx);
        free(mx);
        free(dw);
        free(mw);
        free(db);
        free(mb);
        nn_tensor_free(dyt);
        tu_xwb_free(&t);
        nn_ctx_free(ctx);
    }
}

/* Backward kernels accumulate: a second backward without zeroing doubles
 * every gradient. */
static void test_backward_accumulates_across_calls(void **state)
{
    (void)state;
    const lin_case *k = &cases[4];
    tu_xwb t = make_tensors(k, 700, true);
    tu_assert_backward_accumulates(run_linear, k, &t, 701, ACCUM_ATOL, ACCUM_RTOL);
    tu_xwb_free(&t);
}

/* One tensor in two places. (a) x as input and weight: y = x x^T (N, N), and
 * for dy = r, dL/dx = (r + r^T) x, summed from the dx and dw slots of one
 * node. (b) an op output used twice: h = linear(x, w, b), z = linear(h, h), so
 * h's gradient (r + r^T) h arrives from two slots before flowing to x, w, b. */
static void test_same_tensor_twice(void **state)
{
    (void)state;
    enum { NB = 5, NI = 4 };
    const lin_case kx = {NB, NI, NB, false, "linear(x, x)"};
    int sx[2] = {NB, NI}, sr = NB * NB;
    nn_tensor *x = tu_rand(800, -1.0f, 1.0f, 2, sx), *r = tu_rand(801, -1.0f, 1.0f, 1, &sr);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = nn_linear(ctx, x, x, NULL);
    assert_non_null(y);
    assert_int_equal(nn_backward_with(ctx, y, nn_f32(r)), NN_OK);
    const float *rr = nn_f32(r), *xx = nn_f32(x);
    double want[NB * NI], mag[NB * NI];
    for (int i = 0; i < NB; i++) {
        for (int j = 0; j < NI; j++) {
            double s = 0, m = 0;
            for (int k = 0; k < NB; k++) {
                double t = ((double)rr[i * NB + k] + rr[k * NB + i]) * xx[k * NI + j];
                s += t;
                m += fabs(t);
            }
            want[i * NI + j] = s;
            mag[i * NI + j] = m;
        }
    }
    assert_close_mag(nn_f32(x->grad), want, mag, NB * NI, kx.what, "dx");
    nn_tensor_free(x);

    /* (b): h (NB, NB) from x (NB, NI), w (NB, NI), b (NB) */
    const lin_case kh = {NB, NI, NB, true, "linear(h, h) after h = linear(x, w, b)"};
    tu_xwb t = make_tensors(&kh, 810, true);
    nn_ctx_reset(ctx);
    nn_tensor *h = run_linear(ctx, &kh, &t);
    nn_tensor *z = nn_linear(ctx, h, h, NULL);
    assert_non_null(z);
    assert_int_equal(nn_backward_with(ctx, z, rr), NN_OK);
    const float *hh = nn_f32(h);
    double dh[NB * NB], dx[NB * NI], mx[NB * NI], dw[NB * NI], mw[NB * NI], db[NB], mb[NB];
    for (int i = 0; i < NB; i++) {
        for (int j = 0; j < NB; j++) {
            double s = 0;
            for (int k = 0; k < NB; k++) s += ((double)rr[i * NB + k] + rr[k * NB + i]) * hh[k * NB + j];
            dh[i * NB + j] = s;
        }
    }
    ref_backward(&kh, nn_f32(t.x), nn_f32(t.w), dh, dx, mx, dw, mw, db, mb);
    assert_close_mag(nn_f32(t.x->grad), dx, mx, NB * NI, kh.what, "dx");
    assert_close_mag(nn_f32(t.w->grad), dw, mw, NB * NI, kh.what, "dw");
    assert_close_mag(nn_f32(t.b->grad), db, mb, NB, kh.what, "db");
    nn_tensor_free(r);
    tu_xwb_free(&t);
    nn_ctx_free(ctx);
}

/* ---- errors ---- */

static nn_tensor *t2(int a, int b)
{
    int s[2] = {a, b};
    return tu_rand(9, -1.0f, 1.0f, 2, s);
}

static void expect_fail(nn_ctx *ctx, nn_tensor *y, nn_status s, const char *needle)
{
    const char *msg = nn_ctx_errmsg(ctx);
    if (y) fail_msg("expected a failure containing \"%s\", got a tensor", needle);
    if (nn_ctx_status(ctx) != s)
        fail_msg("expected status %s, got %s (%s)", nn_status_str(s), nn_status_str(nn_ctx_status(ctx)), msg);
    if (!strstr(msg, "linear")) fail_msg("message does not name linear: \"%s\"", msg);
    if (!strstr(msg, needle)) fail_msg("message \"%s\" lacks \"%s\"", msg, needle);
    nn_ctx_reset(ctx);
}

static void test_errors(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = t2(3, 8), *w = t2(4, 8), *b = tu_rand(1, -1, 1, 1, (int[]){4});
    nn_tensor *x4 = tu_rand4(2, 3, 2, 2, 2);
    expect_fail(ctx, nn_linear(ctx, x4, w, b), NN_E_SHAPE, "input 3x2x2x2 must be 2-D");
    expect_fail(ctx, nn_linear(ctx, x4, w, b), NN_E_SHAPE, "nn_flatten");
    nn_tensor *w1 = tu_rand(3, -1, 1, 1, (int[]){8});
    expect_fail(ctx, nn_linear(ctx, x, w1, b), NN_E_SHAPE, "weight 8 must be 2-D");
    nn_tensor *w7 = t2(4, 7);
    expect_fail(ctx, nn_linear(ctx, x, w7, b), NN_E_SHAPE,
                "linear: input 3x8 has 8 features but weight 4x7 expects 7");
    nn_tensor *b5 = tu_rand(4, -1, 1, 1, (int[]){5});
    expect_fail(ctx, nn_linear(ctx, x, w, b5), NN_E_SHAPE, "bias 5 must be 1-D of length 4");
    nn_tensor *b2 = t2(1, 4);
    expect_fail(ctx, nn_linear(ctx, x, w, b2), NN_E_SHAPE, "bias 1x4");
    nn_tensor *xi = NULL;
    assert_int_equal(nn_tensor_new(&xi, NN_I32, NN_CPU, 2, (int[]){3, 8}), NN_OK);
    expect_fail(ctx, nn_linear(ctx, xi, w, b), NN_E_ARG, "float32");
    assert_null(nn_linear(ctx, x, NULL, b));
    assert_int_equal(nn_ctx_status(ctx), NN_E_ARG);
    nn_ctx_reset(ctx);
    /* the first error sticks until reset */
    assert_null(nn_linear(ctx, x, w7, b));
    assert_null(nn_linear(ctx, x, w, b));
    assert_int_equal(nn_ctx_status(ctx), NN_E_SHAPE);
    nn_ctx_reset(ctx);
    assert_non_null(nn_linear(ctx, x, w, b));
    assert_non_null(nn_linear(ctx, x, w, NULL));

    nn_tensor *all[] = {x, w, b, x4, w1, w7, b5, b2, xi};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nn_tensor_free(all[i]);
    nn_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_forward_overwrites),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_backward_matches_reference),
        cmocka_unit_test(test_backward_accumulates_across_calls),
        cmocka_unit_test(test_same_tensor_twice),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
