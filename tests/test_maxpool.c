/* maxpool2d: forward and the gradient routing against a float64 reference
 * (strides, padding, non-square kernels, overlapping 3x3/2 windows), the tie
 * rule, -inf and NaN inputs, accumulation where windows overlap, gradient
 * checks and the parameter errors. */
#include <string.h>

#include "ops/cpu_kernels.h"
#include "tests/testutil.h"

typedef struct pool_case {
    int n, c, h, w;
    nn_pool_params p;
} pool_case;

static int out_size(int in, int k, int s, int pad) { return (in + 2 * pad - k) / s + 1; }

/* The reference: windows scanned in row-major order over in-bounds elements,
 * the first strict maximum wins; a NaN wins over numbers (the first NaN).
 * y and the gradient routing (dx[argmax] += dy) in float64. */
static void pool_ref(const pool_case *t, const float *x, const float *dy, double *y, double *dx)
{
    const int sh = t->p.stride_h ? t->p.stride_h : t->p.kernel_h;
    const int sw = t->p.stride_w ? t->p.stride_w : t->p.kernel_w;
    const int H = t->h, W = t->w;
    const int OH = out_size(H, t->p.kernel_h, sh, t->p.pad_h), OW = out_size(W, t->p.kernel_w, sw, t->p.pad_w);
    if (dx)
        for (size_t i = 0; i < (size_t)t->n * t->c * H * W; i++) dx[i] = 0;
    for (int pl = 0; pl < t->n * t->c; pl++)
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                int bi = -1;
                double best = 0;
                for (int a = 0; a < t->p.kernel_h; a++)
                    for (int b = 0; b < t->p.kernel_w; b++) {
                        int h = i * sh - t->p.pad_h + a, w = j * sw - t->p.pad_w + b;
                        if (h < 0 || h >= H || w < 0 || w >= W) continue; /* padding: -inf */
                        double v = x[(size_t)pl * H * W + h * W + w];
                        if (bi < 0 || v > best || (isnan(v) && !isnan(best))) {
                            best = v;
                            bi = h * W + w;
                        }
                    }
                assert_true(bi >= 0);
                size_t o = ((size_t)pl * OH + i) * OW + j;
                y[o] = best;
                if (dx) dx[(size_t)pl * H * W + bi] += dy[o];
            }
}

static size_t out_numel(const pool_case *t)
{
    const int sh = t->p.stride_h ? t->p.stride_h : t->p.kernel_h;
    const int sw = t->p.stride_w ? t->p.stride_w : t->p.kernel_w;
    return (size_t)t->n * t->c * out_size(t->h, t->p.kernel_h, sh, t->p.pad_h) *
           out_size(t->w, t->p.kernel_w, sw, t->p.pad_w);
}

/* Runs the op on x with gradient dy and checks y and dx against the
 * reference; the maximum is exact, so y must match exactly. */
static void check_case(const pool_case *t, nn_tensor *x, const float *dy, const char *what)
{
    nn_ctx *ctx = nn_ctx_new();
    assert_int_equal(nn_tensor_zero_grad(x), NN_OK);
    nn_tensor *y = nn_maxpool2d(ctx, x, t->p);
    if (!y) fail_msg("%s: %s", what, nn_ctx_errmsg(ctx));
    size_t no = out_numel(t);
    assert_int_equal(y->numel, no);
    double *yr = malloc(no * sizeof *yr), *dxr = malloc(x->numel * sizeof *dxr);
    pool_ref(t, nn_f32(x), dy, yr, dxr);
    for (size_t i = 0; i < no; i++) {
        float got = nn_f32(y)[i];
        bool same = isnan(yr[i]) ? isnan(got) : (double)got == yr[i];
        if (!same) fail_msg("%s: y[%zu] = %g, reference %g", what, i, (double)got, yr[i]);
    }
    assert_int_equal(nn_backward_with(ctx, y, dy), NN_OK);
    /* overlapping windows sum float gradients in a different order than the
     * float64 reference: TU_FWD tolerances cover a handful of terms */
    tu_assert_close(nn_f32(x->grad), dxr, x->numel, TU_FWD_ATOL, TU_FWD_RTOL, what);
    free(yr);
    free(dxr);
    nn_ctx_free(ctx);
}

static nn_tensor *make_x(const pool_case *t, uint64_t seed)
{
    int s[4] = {t->n, t->c, t->h, t->w};
    nn_tensor *x = tu_rand(seed, -1, 1, 4, s);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    return x;
}

static float *rand_dy(const pool_case *t, uint64_t seed)
{
    size_t n = out_numel(t);
    float *dy = malloc(n * sizeof *dy);
    nn_rng r = nn_rng_make(seed);
    for (size_t i = 0; i < n; i++) dy[i] = 2 * nn_rng_uniform1(&r) - 1;
    return dy;
}

static void test_matches_reference(void **state)
{
    (void)state;
    const pool_case cases[] = {
        {1, 1, 7, 5, {3, 3, 2, 2, 1, 1}},
        {2, 3, 8, 6, {2, 2, 0, 0, 0, 0}},   /* stride 0 -> kernel */
        {1, 2, 9, 9, {3, 3, 2, 2, 0, 0}},   /* overlapping, AlexNet's */
        {3, 2, 5, 7, {3, 2, 1, 2, 1, 1}},   /* non-square kernel and stride */
        {1, 1, 1, 1, {1, 1, 0, 0, 0, 0}},
        {2, 4, 13, 13, {3, 3, 2, 2, 0, 0}}, /* conv5 -> 6x6 */
        {1, 1, 4, 6, {4, 6, 0, 0, 2, 3}},   /* kernel = input, maximal padding */
        {2, 3, 10, 11, {3, 3, 3, 3, 1, 1}}, /* last window partly in the padding */
        {2, 16, 55, 55, {3, 3, 2, 2, 0, 0}}, /* conv1's pool: the threaded path */
        {1, 2, 70, 66, {3, 3, 2, 2, 0, 0}}, /* a plane over 4096 floats: row by row */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        nn_tensor *x = make_x(&cases[k], 10 + k);
        float *dy = rand_dy(&cases[k], 20 + k);
        check_case(&cases[k], x, dy, "maxpool vs reference");
        free(dy);
        nn_tensor_free(x);
    }
}

static nn_tensor *plane(int h, int w, const float *v)
{
    int s[4] = {1, 1, h, w};
    nn_tensor *x = NULL;
    assert_int_equal(nn_tensor_from(&x, NN_F32, NN_CPU, 4, s, v), NN_OK);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    return x;
}

/* 3x3/2 windows on 5x5 overlap on row 2 and column 2: a maximum at (2, 2)
 * lies in all four windows and receives the sum of their gradients. */
static void test_overlap_accumulates(void **state)
{
    (void)state;
    float v[25] = {0};
    v[2 * 5 + 2] = 10.0f;
    nn_tensor *x = plane(5, 5, v);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = nn_maxpool2d(ctx, x, (nn_pool_params){3, 3, 2, 2, 0, 0});
    assert_non_null(y);
    assert_int_equal(y->numel, 4);
    const float dy[4] = {1.0f, 2.0f, 4.0f, 8.0f};
    assert_int_equal(nn_backward_with(ctx, y, dy), NN_OK);
    for (int i = 0; i < 4; i++) assert_true(nn_f32(y)[i] == 10.0f);
    for (int i = 0; i < 25; i++) assert_true(nn_f32(x->grad)[i] == (i == 12 ? 15.0f : 0.0f));
    nn_ctx_free(ctx);
    nn_tensor_free(x);
}

/* Equal values: the first maximum in row-major window order takes the whole
 * gradient (ops.h). */
static void test_ties(void **state)
{
    (void)state;
    float ones[25];
    for (int i = 0; i < 25; i++) ones[i] = 1.0f;
    nn_tensor *x = plane(5, 5, ones);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = nn_maxpool2d(ctx, x, (nn_pool_params){3, 3, 2, 2, 0, 0});
    const float dy[4] = {1, 1, 1, 1};
    assert_int_equal(nn_backward_with(ctx, y, dy), NN_OK);
    /* windows start at (0,0), (0,2), (2,0), (2,2) */
    for (int i = 0; i < 25; i++) {
        bool first = i == 0 || i == 2 || i == 10 || i == 12;
        assert_true(nn_f32(x->grad)[i] == (first ? 1.0f : 0.0f));
    }
    nn_tensor_free(x);

    /* with padding, the window at (-1, -1) starts in the padding: its first
     * in-bounds element is (0, 0) */
    nn_ctx_reset(ctx);
    x = plane(5, 5, ones);
    y = nn_maxpool2d(ctx, x, (nn_pool_params){3, 3, 2, 2, 1, 1}); /* 3x3 output */
    assert_int_equal(y->numel, 9);
    float dy9[9];
    for (int i = 0; i < 9; i++) dy9[i] = 1;
    assert_int_equal(nn_backward_with(ctx, y, dy9), NN_OK);
    /* window (i, j) starts at (2i-1, 2j-1); first in-bounds: (max(2i-1,0), max(2j-1,0)) */
    float want[25] = {0};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) want[(i ? 2 * i - 1 : 0) * 5 + (j ? 2 * j - 1 : 0)] += 1;
    assert_memory_equal(nn_f32(x->grad), want, sizeof want);
    nn_tensor_free(x);

    /* a tie off the first element: (0, 1) comes before (1, 0) */
    nn_ctx_reset(ctx);
    const float v[4] = {0, 5, 5, 1};
    x = plane(2, 2, v);
    y = nn_maxpool2d(ctx, x, (nn_pool_params){2, 2, 0, 0, 0, 0});
    const float one = 1;
    assert_int_equal(nn_backward_with(ctx, y, &one), NN_OK);
    const float want4[4] = {0, 1, 0, 0};
    assert_memory_equal(nn_f32(x->grad), want4, sizeof want4);
    nn_tensor_free(x);
    nn_ctx_free(ctx);
}

/* -inf is a value like any other: all -inf gives -inf with the gradient on the
 * first in-bounds element; any finite value beats it. */
static void test_neg_inf(void **state)
{
    (void)state;
    float v[9];
    for (int i = 0; i < 9; i++) v[i] = -INFINITY;
    const pool_case t = {1, 1, 3, 3, {2, 2, 1, 1, 1, 1}}; /* 4x4 output */
    nn_tensor *x = plane(3, 3, v);
    float *dy = rand_dy(&t, 3);
    check_case(&t, x, dy, "maxpool all -inf");
    nn_tensor_free(x);
    v[4] = -1e30f;
    v[8] = 7.0f;
    x = plane(3, 3, v);
    check_case(&t, x, dy, "maxpool some -inf");
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = nn_maxpool2d(ctx, x, t.p);
    assert_true(isinf(nn_f32(y)[0]) && nn_f32(y)[0] < 0); /* window {(0,0)} */
    assert_true(nn_f32(y)[5] == -1e30f);                 /* window (0..1, 0..1) */
    assert_true(nn_f32(y)[15] == 7.0f);
    nn_ctx_free(ctx);
    free(dy);
    nn_tensor_free(x);
}

/* NaN propagates: a window holding a NaN outputs NaN, and its first NaN takes
 * the gradient. */
static void test_nan_propagates(void **state)
{
    (void)state;
    const float v[16] = {1, 2, 3, 4, 5, NAN, 7, 8, 9, 10, NAN, 12, 13, 14, 15, 16};
    const pool_case t = {1, 1, 4, 4, {3, 3, 1, 1, 0, 0}}; /* 2x2 output, all see (1,1) */
    nn_tensor *x = plane(4, 4, v);
    float *dy = rand_dy(&t, 4);
    check_case(&t, x, dy, "maxpool NaN");
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = nn_maxpool2d(ctx, x, t.p);
    for (int i = 0; i < 4; i++) assert_true(isnan(nn_f32(y)[i]));
    const float ones[4] = {1, 1, 1, 1};
    assert_int_equal(nn_tensor_zero_grad(x), NN_OK);
    assert_int_equal(nn_backward_with(ctx, y, ones), NN_OK);
    assert_true(nn_f32(x->grad)[5] == 4.0f); /* the first NaN of every window */
    assert_true(nn_f32(x->grad)[10] == 0.0f);
    nn_ctx_free(ctx);
    free(dy);
    nn_tensor_free(x);
}

/* Kernel contract: backward adds into dx; dx may be NULL. */
static void test_backward_accumulates(void **state)
{
    (void)state;
    const nn_pool_geom g = {1, 1, 2, 4, 2, 2, 2, 2, 0, 0, 1, 2};
    const float x[8] = {1, 9, 3, 4, 5, 6, 8, 7};
    float y[2], dx[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    int32_t am[2];
    const float dy[2] = {0.5f, 0.25f};
    assert_int_equal(nn_cpu_maxpool_forward(&g, x, y, am), NN_OK);
    assert_int_equal(am[0], 1);
    assert_int_equal(am[1], 6);
    assert_int_equal(nn_cpu_maxpool_backward(&g, am, dy, dx), NN_OK);
    assert_int_equal(nn_cpu_maxpool_backward(&g, am, dy, NULL), NN_OK);
    const float want[8] = {1, 1.5f, 1, 1, 1, 1, 1.25f, 1};
    assert_memory_equal(dx, want, sizeof want);
    /* a geometry that breaks the rules the kernel relies on is refused */
    nn_pool_geom bad = g;
    bad.ph = 2;
    assert_int_equal(nn_cpu_maxpool_forward(&bad, x, y, am), NN_E_ARG);
}

static nn_tensor *pool_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_maxpool2d(ctx, in[0], *(const nn_pool_params *)user);
}

static void test_gradcheck(void **state)
{
    (void)state;
    const pool_case gc[] = {
        {1, 2, 5, 5, {3, 3, 2, 2, 0, 0}},
        {2, 1, 4, 5, {2, 2, 1, 1, 1, 1}},
        {1, 2, 6, 5, {3, 2, 2, 1, 1, 0}},
    };
    for (size_t k = 0; k < sizeof gc / sizeof gc[0]; k++) {
        const pool_case *t = &gc[k];
        int s[4] = {t->n, t->c, t->h, t->w};
        nn_tensor *x = NULL;
        assert_int_equal(nn_tensor_new(&x, NN_F32, NN_CPU, 4, s), NN_OK);
        /* distinct values 0.1 apart: no two within the checker's 2 eps, so no
         * point straddles a change of argmax */
        int32_t *perm = malloc(x->numel * sizeof *perm);
        for (size_t i = 0; i < x->numel; i++) perm[i] = (int32_t)i;
        nn_rng r = nn_rng_make(90 + k);
        nn_rng_shuffle(&r, perm, x->numel);
        for (size_t i = 0; i < x->numel; i++) nn_f32(x)[i] = 0.1f * (float)perm[i] - 1.0f;
        free(perm);
        assert_int_equal(nn_tensor_require_grad(x), NN_OK);
        nn_pool_params p = t->p;
        tu_gradcheck(pool_fn, &p, 1, &x, 80 + k, "maxpool2d");
        nn_tensor_free(x);
    }
}

static void expect_error(nn_tensor *x, nn_pool_params p, nn_status want)
{
    nn_ctx *ctx = nn_ctx_new();
    assert_null(nn_maxpool2d(ctx, x, p));
    assert_int_equal(nn_ctx_status(ctx), want);
    if (!strstr(nn_ctx_errmsg(ctx), "maxpool2d"))
        fail_msg("message without the op: %s", nn_ctx_errmsg(ctx));
    nn_ctx_free(ctx);
}

static void test_errors(void **state)
{
    (void)state;
    nn_tensor *x = tu_rand4(1, 1, 2, 4, 5);
    expect_error(x, (nn_pool_params){0, 3, 1, 1, 0, 0}, NN_E_ARG);
    expect_error(x, (nn_pool_params){3, -1, 1, 1, 0, 0}, NN_E_ARG);
    expect_error(x, (nn_pool_params){3, 3, -1, 1, 0, 0}, NN_E_ARG);
    expect_error(x, (nn_pool_params){3, 3, 1, 1, 2, 0}, NN_E_ARG);  /* pad > kernel/2 */
    expect_error(x, (nn_pool_params){2, 2, 1, 1, 0, -1}, NN_E_ARG);
    expect_error(x, (nn_pool_params){5, 3, 1, 1, 0, 0}, NN_E_SHAPE); /* 5 > H = 4 */
    expect_error(x, (nn_pool_params){3, 8, 1, 1, 0, 1}, NN_E_SHAPE); /* 8 > W + 2 */
    int s3[3] = {2, 4, 5};
    nn_tensor *x3 = tu_rand(2, -1, 1, 3, s3);
    expect_error(x3, (nn_pool_params){2, 2, 0, 0, 0, 0}, NN_E_SHAPE);
    nn_tensor *xi = NULL;
    int s4[4] = {1, 1, 4, 4};
    assert_int_equal(nn_tensor_new(&xi, NN_I32, NN_CPU, 4, s4), NN_OK);
    expect_error(xi, (nn_pool_params){2, 2, 0, 0, 0, 0}, NN_E_ARG);
    /* the boundary cases are accepted: kernel = padded input, pad = kernel/2 */
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = nn_maxpool2d(ctx, x, (nn_pool_params){6, 7, 1, 1, 1, 1});
    assert_non_null(y);
    assert_int_equal(y->shape[2], 1);
    assert_int_equal(y->shape[3], 1);
    nn_ctx_free(ctx);
    nn_tensor_free(x);
    nn_tensor_free(x3);
    nn_tensor_free(xi);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_overlap_accumulates),
        cmocka_unit_test(test_ties),
        cmocka_unit_test(test_neg_inf),
        cmocka_unit_test(test_nan_propagates),
        cmocka_unit_test(test_backward_accumulates),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
