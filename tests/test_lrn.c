/* lrn: forward and backward against a float64 reference of the paper's
 * formula (clipped windows, even sizes, size 1, beta = 0 and the beta = 0.75
 * fast path), the convention pinned against PyTorch's formula and a worked
 * example, large activations, gradient checks, and parameter errors. */
#include <string.h>

#include "ops/cpu_kernels.h"
#include "tests/testutil.h"

/* The hand-worked example below is one power of a 3-term sum: float32 gets
 * it within a few ulp; 1e-6 relative is 8 ulp. */
#define WORKED_RTOL 1e-6
/* Analytic backward vs the float64 formula: two float terms that may cancel,
 * each O(|dy|), with a window sum in double: 1e-5 absolute on O(1) values. */
#define BWD_ATOL 1e-5
#define BWD_RTOL 1e-4

typedef struct lrn_case {
    int n, c, h, w;
    nn_lrn_params p;
} lrn_case;

/* scale and y in float64, the window written exactly as the paper's sum */
static void lrn_ref(const lrn_case *t, const float *x, double *y, double *scale)
{
    const int C = t->c, half = t->p.size / 2;
    const size_t hw = (size_t)t->h * t->w;
    for (int b = 0; b < t->n; b++)
        for (int c = 0; c < C; c++)
            for (size_t q = 0; q < hw; q++) {
                double S = 0;
                int lo = c - half < 0 ? 0 : c - half, hi = c + half > C - 1 ? C - 1 : c + half;
                for (int j = lo; j <= hi; j++) {
                    double v = x[((size_t)b * C + j) * hw + q];
                    S += v * v;
                }
                size_t i = ((size_t)b * C + c) * hw + q;
                double s = (double)t->p.k + (double)t->p.alpha * S;
                if (scale) scale[i] = s;
                y[i] = x[i] * pow(s, -(double)t->p.beta);
            }
}

/* dx_i = dy_i s_i^-beta - 2 alpha beta x_i sum_{j : i in window(j)} dy_j y_j / s_j,
 * with window(j) taken literally (no symmetry assumed). */
static void lrn_ref_backward(const lrn_case *t, const float *x, const float *dy, double *dx)
{
    const int C = t->c, half = t->p.size / 2;
    const size_t hw = (size_t)t->h * t->w, numel = (size_t)t->n * C * hw;
    double *y = malloc(numel * sizeof *y), *s = malloc(numel * sizeof *s);
    lrn_ref(t, x, y, s);
    const double a = t->p.alpha, be = t->p.beta;
    for (int b = 0; b < t->n; b++)
        for (int i = 0; i < C; i++)
            for (size_t q = 0; q < hw; q++) {
                size_t ii = ((size_t)b * C + i) * hw + q;
                double sum = 0;
                for (int j = 0; j < C; j++) {
                    if (i < j - half || i > j + half) continue;
                    size_t jj = ((size_t)b * C + j) * hw + q;
                    sum += dy[jj] * y[jj] / s[jj];
                }
                dx[ii] = dy[ii] * pow(s[ii], -be) - 2 * a * be * x[ii] * sum;
            }
    free(y);
    free(s);
}

static nn_tensor *rand_case(const lrn_case *t, uint64_t seed, float lo, float hi)
{
    int shape[4] = {t->n, t->c, t->h, t->w};
    return tu_rand(seed, lo, hi, 4, shape);
}

static const lrn_case cases[] = {
    {1, 3, 5, 7, {5, 0.5f, 0.75f, 2.0f}},   /* C < size: every window clips */
    {2, 7, 4, 3, {3, 0.3f, 0.6f, 1.0f}},
    {3, 6, 2, 5, {4, 0.2f, 0.75f, 1.5f}},   /* even size: window c-2 .. c+2 */
    {1, 4, 3, 3, {1, 1.0f, 0.5f, 0.5f}},    /* size 1: own channel only */
    {2, 5, 9, 9, {5, 1e-4f, 0.75f, 2.0f}},  /* paper's values; 81 > one tile */
    {1, 9, 11, 13, {7, 0.05f, 1.3f, 0.8f}}, /* generic power path, odd spatial */
    {2, 3, 3, 2, {2, 0.4f, 0.0f, 1.0f}},    /* beta 0: identity */
    {2, 16, 24, 24, {5, 1e-2f, 0.75f, 2.0f}}, /* large enough for the threaded path */
};

static void test_forward_matches_reference(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const lrn_case *t = &cases[k];
        nn_tensor *x = rand_case(t, 100 + k, -2.0f, 2.0f);
        nn_tensor *y = nn_lrn(ctx, x, t->p);
        assert_non_null(y);
        assert_true(nn_same_shape(x, y));
        double *ref = malloc(x->numel * sizeof *ref), *sref = malloc(x->numel * sizeof *sref);
        lrn_ref(t, nn_f32(x), ref, sref);
        tu_assert_close(nn_f32(y), ref, x->numel, TU_FWD_ATOL, TU_FWD_RTOL, "lrn forward");
        /* the kernel's scale output (what backward reads) */
        nn_lrn_geom g = {t->n, t->c, t->h, t->w, t->p.size, t->p.alpha, t->p.beta, t->p.k};
        float *yk = malloc(x->numel * sizeof *yk), *sk = malloc(x->numel * sizeof *sk);
        assert_int_equal(nn_cpu_lrn_forward(&g, nn_f32(x), yk, sk), NN_OK);
        tu_assert_close(sk, sref, x->numel, TU_FWD_ATOL, TU_FWD_RTOL, "lrn scale");
        free(yk);
        free(sk);
        free(ref);
        free(sref);
        nn_tensor_free(x);
        nn_ctx_reset(ctx);
    }
    nn_ctx_free(ctx);
}

static void test_backward_matches_reference(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const lrn_case *t = &cases[k];
        nn_tensor *x = rand_case(t, 200 + k, -2.0f, 2.0f);
        nn_tensor *dy = rand_case(t, 300 + k, -1.0f, 1.0f);
        assert_int_equal(nn_tensor_require_grad(x), NN_OK);
        nn_tensor *y = nn_lrn(ctx, x, t->p);
        assert_non_null(y);
        assert_int_equal(nn_backward_with(ctx, y, nn_f32(dy)), NN_OK);
        double *ref = malloc(x->numel * sizeof *ref);
        lrn_ref_backward(t, nn_f32(x), nn_f32(dy), ref);
        tu_assert_close(nn_f32(x->grad), ref, x->numel, BWD_ATOL, BWD_RTOL, "lrn backward");
        free(ref);
        nn_tensor_free(x);
        nn_tensor_free(dy);
        nn_ctx_reset(ctx);
    }
    nn_ctx_free(ctx);
}

/* Kernel contract: backward adds into dx; dx may be NULL. */
static void test_backward_accumulates(void **state)
{
    (void)state;
    const lrn_case t = {1, 4, 2, 3, {3, 0.5f, 0.75f, 2.0f}};
    nn_tensor *x = rand_case(&t, 5, -1, 1), *dy = rand_case(&t, 6, -1, 1);
    size_t n = x->numel;
    nn_lrn_geom g = {t.n, t.c, t.h, t.w, t.p.size, t.p.alpha, t.p.beta, t.p.k};
    float *y = malloc(n * sizeof *y), *s = malloc(n * sizeof *s), *dx = malloc(n * sizeof *dx);
    assert_int_equal(nn_cpu_lrn_forward(&g, nn_f32(x), y, s), NN_OK);
    for (size_t i = 0; i < n; i++) dx[i] = 1.0f;
    assert_int_equal(nn_cpu_lrn_backward(&g, nn_f32(x), y, s, nn_f32(dy), dx), NN_OK);
    assert_int_equal(nn_cpu_lrn_backward(&g, nn_f32(x), y, s, nn_f32(dy), NULL), NN_OK);
    double *ref = malloc(n * sizeof *ref);
    lrn_ref_backward(&t, nn_f32(x), nn_f32(dy), ref);
    for (size_t i = 0; i < n; i++) ref[i] += 1.0;
    tu_assert_close(dx, ref, n, BWD_ATOL, BWD_RTOL, "lrn backward accumulates");
    free(ref);
    free(y);
    free(s);
    free(dx);
    nn_tensor_free(x);
    nn_tensor_free(dy);
}

/* Worked by hand: one position, channels x = (1, 2, 3), k = 2, alpha = 0.1,
 * beta = 0.75.
 *  size 5 (half 2): every window clips to all three channels,
 *    S = 1 + 4 + 9 = 14, scale = 2 + 0.1 * 14 = 3.4,
 *    3.4^0.75 = exp(0.75 * ln 3.4) = exp(0.75 * 1.2237754) = exp(0.9178316) = 2.5038551,
 *    y = (1, 2, 3) / 2.5038551 = (0.39938414, 0.79876828, 1.19815241).
 *  size 3 (half 1): windows {0,1}, {0,1,2}, {1,2}:
 *    S = (5, 14, 13), scale = (2.5, 3.4, 3.3),
 *    scale^0.75 = (1.9881768, 2.5038551, 2.4484174),
 *    y = (0.50297337, 0.79876828, 1.22528128). */
static void test_worked_example(void **state)
{
    (void)state;
    const float xs[3] = {1, 2, 3};
    const double want5[3] = {0.39938414, 0.79876828, 1.19815241};
    const double want3[3] = {0.50297337, 0.79876828, 1.22528128};
    int shape[4] = {1, 3, 1, 1};
    nn_tensor *x = NULL;
    assert_int_equal(nn_tensor_from(&x, NN_F32, NN_CPU, 4, shape, xs), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y5 = nn_lrn(ctx, x, (nn_lrn_params){5, 0.1f, 0.75f, 2.0f});
    nn_tensor *y3 = nn_lrn(ctx, x, (nn_lrn_params){3, 0.1f, 0.75f, 2.0f});
    assert_non_null(y5);
    assert_non_null(y3);
    /* the hand values carry 8 digits: absolute 1e-8 covers their rounding */
    tu_assert_close(nn_f32(y5), want5, 3, 1e-8, WORKED_RTOL, "lrn worked example, size 5");
    tu_assert_close(nn_f32(y3), want3, 3, 1e-8, WORKED_RTOL, "lrn worked example, size 3");
    nn_tensor_free(x);
    nn_ctx_free(ctx);
}

/* PyTorch: b = a / (k + (alpha_pt / n) * sum_window a^2)^beta, the window
 * c - n/2 .. c + n/2 zero-padded (= clipped) for odd n. Ours with alpha equals
 * PyTorch with alpha_pt = n * alpha, and differs from PyTorch with the same
 * number alpha. Computed here by hand in float64 on a tiny input. */
static void test_pytorch_convention(void **state)
{
    (void)state;
    const int N = 1, C = 6, H = 2, W = 1, n = 5;
    const double k = 2.0, alpha = 1e-2, beta = 0.75;
    const float xs[12] = {3, -1, 4, 1, -5, 9, 2, -6, 5, 3, -5, 8};
    int shape[4] = {N, C, H, W};
    nn_tensor *x = NULL;
    assert_int_equal(nn_tensor_from(&x, NN_F32, NN_CPU, 4, shape, xs), NN_OK);
    double pt[12], pt_same_number[12];
    for (int c = 0; c < C; c++)
        for (int q = 0; q < H * W; q++) {
            double S = 0;
            for (int j = c - n / 2; j <= c + n / 2; j++) /* zero padding outside [0, C) */
                if (j >= 0 && j < C) S += (double)xs[j * H * W + q] * xs[j * H * W + q];
            double alpha_pt = n * alpha;
            pt[c * H * W + q] = xs[c * H * W + q] / pow(k + alpha_pt / n * S, beta);
            pt_same_number[c * H * W + q] = xs[c * H * W + q] / pow(k + alpha / n * S, beta);
        }
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = nn_lrn(ctx, x, (nn_lrn_params){n, (float)alpha, (float)beta, (float)k});
    assert_non_null(y);
    tu_assert_close(nn_f32(y), pt, 12, TU_FWD_ATOL, TU_FWD_RTOL, "lrn vs PyTorch(alpha = n alpha)");
    /* and the other convention is visibly different (here by > 5 percent) */
    double maxrel = 0;
    for (int i = 0; i < 12; i++)
        maxrel = fmax(maxrel, fabs(nn_f32(y)[i] - pt_same_number[i]) / fabs(pt_same_number[i]));
    assert_true(maxrel > 0.05);
    nn_tensor_free(x);
    nn_ctx_free(ctx);
}

/* After a ReLU, conv1 activations can be large: scale grows like x^2, so y
 * and the gradient must stay finite and accurate (no float overflow in the
 * sum of squares even at 1e20, whose square exceeds float range). */
static void test_large_activations(void **state)
{
    (void)state;
    const float mags[3] = {1e3f, 1e6f, 1e20f};
    nn_ctx *ctx = nn_ctx_new();
    for (int m = 0; m < 3; m++) {
        const lrn_case t = {2, 8, 5, 5, NN_LRN_PAPER};
        nn_tensor *x = rand_case(&t, 40 + m, -mags[m], mags[m]);
        nn_tensor *dy = rand_case(&t, 50 + m, -1, 1);
        assert_int_equal(nn_tensor_require_grad(x), NN_OK);
        nn_tensor *y = nn_lrn(ctx, x, t.p);
        assert_non_null(y);
        assert_int_equal(nn_backward_with(ctx, y, nn_f32(dy)), NN_OK);
        size_t n = x->numel;
        for (size_t i = 0; i < n; i++) {
            assert_true(isfinite(nn_f32(y)[i]));
            assert_true(isfinite(nn_f32(x->grad)[i]));
        }
        double *ref = malloc(n * sizeof *ref), *dref = malloc(n * sizeof *dref);
        lrn_ref(&t, nn_f32(x), ref, NULL);
        lrn_ref_backward(&t, nn_f32(x), nn_f32(dy), dref);
        /* relative only: y and dx shrink like 1/sqrt(x) and 1/x^1.5 and would
         * pass any absolute tolerance trivially */
        tu_assert_close(nn_f32(y), ref, n, 0.0, TU_FWD_RTOL, "lrn large forward");
        double dmax = 0;
        for (size_t i = 0; i < n; i++) dmax = fmax(dmax, fabs(dref[i]));
        /* gradient terms cancel: compare against the largest entry */
        tu_assert_close(nn_f32(x->grad), dref, n, TU_FWD_RTOL * dmax, TU_FWD_RTOL,
                        "lrn large backward");
        free(ref);
        free(dref);
        nn_tensor_free(x);
        nn_tensor_free(dy);
        nn_ctx_reset(ctx);
    }
    nn_ctx_free(ctx);
}

static nn_tensor *lrn_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_lrn(ctx, in[0], *(const nn_lrn_params *)user);
}

static void test_gradcheck(void **state)
{
    (void)state;
    /* alpha large so the cross-channel term is a large part of the gradient */
    const lrn_case gc[] = {
        {1, 3, 2, 3, {5, 0.5f, 0.75f, 2.0f}},
        {2, 6, 2, 2, {3, 0.8f, 0.6f, 1.0f}},
        {1, 5, 3, 1, {4, 0.4f, 1.2f, 1.5f}},
        {1, 4, 1, 2, {1, 1.0f, 0.75f, 0.5f}},
    };
    for (size_t k = 0; k < sizeof gc / sizeof gc[0]; k++) {
        nn_tensor *x = rand_case(&gc[k], 60 + k, -1.5f, 1.5f);
        assert_int_equal(nn_tensor_require_grad(x), NN_OK);
        nn_lrn_params p = gc[k].p;
        tu_gradcheck(lrn_fn, &p, 1, &x, 70 + k, "lrn");
        nn_tensor_free(x);
    }
}

static void expect_error(nn_tensor *x, nn_lrn_params p, nn_status want)
{
    nn_ctx *ctx = nn_ctx_new();
    assert_null(nn_lrn(ctx, x, p));
    assert_int_equal(nn_ctx_status(ctx), want);
    if (!strstr(nn_ctx_errmsg(ctx), "lrn")) fail_msg("message without the op: %s", nn_ctx_errmsg(ctx));
    nn_ctx_free(ctx);
}

static void test_errors(void **state)
{
    (void)state;
    nn_tensor *x = tu_rand4(1, 1, 3, 2, 2);
    expect_error(x, (nn_lrn_params){0, 1e-4f, 0.75f, 2.0f}, NN_E_ARG);
    expect_error(x, (nn_lrn_params){-3, 1e-4f, 0.75f, 2.0f}, NN_E_ARG);
    expect_error(x, (nn_lrn_params){5, -1e-4f, 0.75f, 2.0f}, NN_E_ARG);
    expect_error(x, (nn_lrn_params){5, NAN, 0.75f, 2.0f}, NN_E_ARG);
    expect_error(x, (nn_lrn_params){5, 1e-4f, -0.75f, 2.0f}, NN_E_ARG);
    expect_error(x, (nn_lrn_params){5, 1e-4f, INFINITY, 2.0f}, NN_E_ARG);
    expect_error(x, (nn_lrn_params){5, 1e-4f, 0.75f, 0.0f}, NN_E_ARG);
    expect_error(x, (nn_lrn_params){5, 1e-4f, 0.75f, -1.0f}, NN_E_ARG);
    expect_error(x, (nn_lrn_params){5, 1e-4f, 0.75f, NAN}, NN_E_ARG);
    int s3[3] = {3, 2, 2};
    nn_tensor *x3 = tu_rand(2, -1, 1, 3, s3);
    expect_error(x3, NN_LRN_PAPER, NN_E_SHAPE);
    nn_tensor *xi = NULL;
    int s4[4] = {1, 3, 2, 2};
    assert_int_equal(nn_tensor_new(&xi, NN_I32, NN_CPU, 4, s4), NN_OK);
    expect_error(xi, NN_LRN_PAPER, NN_E_ARG);
    /* a size far larger than C is valid: the window clips to all channels */
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *yb = nn_lrn(ctx, x, (nn_lrn_params){1 << 30, 0.1f, 0.75f, 2.0f});
    nn_tensor *yc = nn_lrn(ctx, x, (nn_lrn_params){5, 0.1f, 0.75f, 2.0f});
    assert_non_null(yb);
    assert_non_null(yc);
    assert_memory_equal(nn_f32(yb), nn_f32(yc), yc->numel * sizeof(float));
    nn_ctx_free(ctx);
    nn_tensor_free(x);
    nn_tensor_free(x3);
    nn_tensor_free(xi);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_backward_matches_reference),
        cmocka_unit_test(test_backward_accumulates),
        cmocka_unit_test(test_worked_example),
        cmocka_unit_test(test_pytorch_convention),
        cmocka_unit_test(test_large_activations),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
