/* dropout: the mask's statistics and its exact agreement with the counter-
 * based generator, reproducibility from (seed, offset), backward reusing the
 * forward's mask, the identities (eval mode, p = 0), p = 1, how the generator
 * advances, drawing by global row when sharded, a gradient check, and bad p. */
#include <string.h>

#include "core/philox.h"
#include "ops/cpu_kernels.h"
#include "tests/testutil.h"

/* Drop fraction and mean of y over n = 2^20 elements: for a fair generator the
 * number dropped is Binomial(n, p), standard deviation sqrt(p (1-p) / n) in
 * the fraction (<= 4.9e-4), and mean(y) for x = 1 has standard deviation
 * sqrt(p / ((1-p) n)). Six standard deviations: a fair generator fails with
 * probability ~2e-9 (and the seed is fixed, so the test is deterministic);
 * a wrong keep rule (u < p, a 1/p scale, a shifted p) misses by far more. */
#define STAT_N (1 << 20)
#define STAT_SIGMAS 6.0

static nn_tensor *filled(int n, float v)
{
    int s[1] = {n};
    nn_tensor *t = NULL;
    assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CPU, 1, s), NN_OK);
    assert_int_equal(nn_tensor_fill(t, v), NN_OK);
    return t;
}

static void test_statistics(void **state)
{
    (void)state;
    const float ps[3] = {0.1f, 0.5f, 0.8f};
    nn_tensor *x = filled(STAT_N, 1.0f);
    nn_ctx *ctx = nn_ctx_new();
    for (int k = 0; k < 3; k++) {
        const double p = ps[k];
        *nn_ctx_rng(ctx) = nn_rng_make(1000 + k);
        nn_tensor *y = nn_dropout(ctx, x, ps[k]);
        assert_non_null(y);
        const float kept = 1.0f / (1.0f - ps[k]);
        size_t dropped = 0;
        double sum = 0;
        for (size_t i = 0; i < y->numel; i++) {
            float v = nn_f32(y)[i];
            assert_true(v == 0.0f || v == kept);
            dropped += v == 0.0f;
            sum += v;
        }
        double frac = (double)dropped / STAT_N, mean = sum / STAT_N;
        double sd_frac = sqrt(p * (1 - p) / STAT_N), sd_mean = sqrt(p / ((1 - p) * STAT_N));
        if (fabs(frac - p) > STAT_SIGMAS * sd_frac)
            fail_msg("p = %g: dropped fraction %.6f", p, frac);
        if (fabs(mean - 1.0) > STAT_SIGMAS * sd_mean)
            fail_msg("p = %g: mean %.6f, expectation not preserved", p, mean);
        nn_ctx_reset(ctx);
    }
    nn_ctx_free(ctx);
    nn_tensor_free(x);
}

/* The mask is exactly nn_dropout_keep(seed, offset, i, p) with the offset
 * taken from the context's generator, which then advances by numel: the
 * contract a GPU backend must reproduce bit for bit. */
static void test_matches_generator(void **state)
{
    (void)state;
    const float p = 0.3f;
    int s[3] = {3, 5, 7};
    nn_tensor *x = tu_rand(5, -2, 2, 3, s);
    nn_ctx *ctx = nn_ctx_new();
    *nn_ctx_rng(ctx) = nn_rng_make(77);
    nn_ctx_rng(ctx)->offset = 1234;
    nn_tensor *y = nn_dropout(ctx, x, p);
    assert_non_null(y);
    assert_int_equal(y->ndim, 3);
    assert_true(nn_same_shape(x, y));
    assert_true(nn_ctx_rng(ctx)->offset == 1234 + x->numel);
    assert_true(nn_ctx_rng(ctx)->seed == 77);
    for (size_t i = 0; i < x->numel; i++) {
        float want = nn_dropout_keep(77, 1234, i, p) ? nn_f32(x)[i] / (1.0f - p) : 0.0f;
        assert_true(nn_f32(y)[i] == want);
    }
    nn_ctx_free(ctx);
    nn_tensor_free(x);
}

static void test_reproducible(void **state)
{
    (void)state;
    const int n = 4096;
    nn_tensor *x = filled(n, 1.0f);
    nn_ctx *a = nn_ctx_new(), *b = nn_ctx_new();
    *nn_ctx_rng(a) = nn_rng_make(42);
    *nn_ctx_rng(b) = nn_rng_make(42);
    nn_tensor *ya = nn_dropout(a, x, 0.5f), *yb = nn_dropout(b, x, 0.5f);
    assert_memory_equal(nn_f32(ya), nn_f32(yb), n * sizeof(float));
    /* the next call draws from the next offsets: a different mask */
    nn_tensor *ya2 = nn_dropout(a, x, 0.5f);
    size_t differ = 0;
    for (int i = 0; i < n; i++) differ += nn_f32(ya)[i] != nn_f32(ya2)[i];
    /* independent masks differ in half the places (sd 32): far from 0 */
    assert_true(differ > n / 4);
    /* and a different seed gives a different mask too */
    *nn_ctx_rng(b) = nn_rng_make(43);
    nn_tensor *yc = nn_dropout(b, x, 0.5f);
    differ = 0;
    for (int i = 0; i < n; i++) differ += nn_f32(ya)[i] != nn_f32(yc)[i];
    assert_true(differ > n / 4);
    nn_ctx_free(a);
    nn_ctx_free(b);
    nn_tensor_free(x);
}

/* Backward reuses the forward's mask: dx = dy * mask / (1 - p), exactly. */
static void test_backward_same_mask(void **state)
{
    (void)state;
    const float p = 0.3f;
    int s[2] = {37, 29};
    nn_tensor *x = tu_rand(6, 0.5f, 1.5f, 2, s); /* nonzero: y == 0 iff dropped */
    nn_tensor *dy = tu_rand(7, -1, 1, 2, s);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    *nn_ctx_rng(ctx) = nn_rng_make(8);
    nn_tensor *y = nn_dropout(ctx, x, p);
    assert_int_equal(nn_backward_with(ctx, y, nn_f32(dy)), NN_OK);
    size_t kept = 0;
    for (size_t i = 0; i < x->numel; i++) {
        bool keep = nn_f32(y)[i] != 0.0f;
        kept += keep;
        assert_true(nn_f32(x->grad)[i] == (keep ? nn_f32(dy)[i] / (1.0f - p) : 0.0f));
    }
    assert_true(kept > 0 && kept < x->numel);
    nn_ctx_free(ctx);
    nn_tensor_free(x);
    nn_tensor_free(dy);
}

/* Identity cases keep autograd wired (dx = dy) and leave the generator alone. */
static void check_identity(bool training, float p)
{
    int s[4] = {2, 3, 4, 5};
    nn_tensor *x = tu_rand(9, -1, 1, 4, s), *dy = tu_rand(10, -1, 1, 4, s);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    nn_ctx_set_training(ctx, training);
    *nn_ctx_rng(ctx) = nn_rng_make(11);
    nn_tensor *y = nn_dropout(ctx, x, p);
    assert_non_null(y);
    assert_true(nn_same_shape(x, y));
    assert_memory_equal(nn_f32(y), nn_f32(x), x->numel * sizeof(float));
    assert_true(nn_ctx_rng(ctx)->offset == 0);
    assert_int_equal(nn_backward_with(ctx, y, nn_f32(dy)), NN_OK);
    assert_memory_equal(nn_f32(x->grad), nn_f32(dy), x->numel * sizeof(float));
    nn_ctx_free(ctx);
    nn_tensor_free(x);
    nn_tensor_free(dy);
}

static void test_eval_is_identity(void **state)
{
    (void)state;
    check_identity(false, 0.5f);
    check_identity(false, 1.0f);
}

static void test_p0_is_identity(void **state)
{
    (void)state;
    check_identity(true, 0.0f);
}

/* Evaluating between two training steps must not shift the second step's mask. */
static void test_eval_keeps_stream(void **state)
{
    (void)state;
    nn_tensor *x = filled(1000, 1.0f);
    nn_ctx *a = nn_ctx_new(), *b = nn_ctx_new();
    *nn_ctx_rng(a) = nn_rng_make(5);
    *nn_ctx_rng(b) = nn_rng_make(5);
    assert_non_null(nn_dropout(a, x, 0.5f));
    assert_non_null(nn_dropout(b, x, 0.5f));
    nn_ctx_set_training(a, false);
    assert_non_null(nn_dropout(a, x, 0.5f));
    nn_ctx_set_training(a, true);
    assert_non_null(nn_dropout(a, x, 1.0f)); /* p = 1 draws nothing either */
    nn_tensor *ya = nn_dropout(a, x, 0.5f), *yb = nn_dropout(b, x, 0.5f);
    assert_memory_equal(nn_f32(ya), nn_f32(yb), 1000 * sizeof(float));
    nn_ctx_free(a);
    nn_ctx_free(b);
    nn_tensor_free(x);
}

static void test_p1_is_zero(void **state)
{
    (void)state;
    int s[2] = {6, 7};
    nn_tensor *x = tu_rand(12, -1, 1, 2, s), *dy = tu_rand(13, -1, 1, 2, s);
    nn_f32(x)[3] = INFINITY; /* no 0 * inf: dropped elements are exactly 0 */
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = nn_dropout(ctx, x, 1.0f);
    assert_non_null(y);
    assert_true(nn_ctx_rng(ctx)->offset == 0);
    assert_int_equal(nn_backward_with(ctx, y, nn_f32(dy)), NN_OK);
    for (size_t i = 0; i < x->numel; i++) {
        assert_true(nn_f32(y)[i] == 0.0f);
        assert_true(nn_f32(x->grad)[i] == 0.0f);
    }
    nn_ctx_free(ctx);
    nn_tensor_free(x);
    nn_tensor_free(dy);
}

/* Kernel contract: backward adds into dx; dx may be NULL. */
static void test_backward_accumulates(void **state)
{
    (void)state;
    const uint8_t mask[4] = {1, 0, 1, 0};
    const float dy[4] = {1, 2, 3, 4};
    float dx[4] = {1, 1, 1, 1};
    assert_int_equal(nn_cpu_dropout_backward(4, mask, 0.5f, dy, dx), NN_OK);
    assert_int_equal(nn_cpu_dropout_backward(4, mask, 0.5f, dy, NULL), NN_OK);
    const float want[4] = {3, 1, 7, 1};
    assert_memory_equal(dx, want, sizeof want);
}

static nn_tensor *dropout_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_dropout(ctx, in[0], *(const float *)user);
}

static void test_gradcheck(void **state)
{
    (void)state;
    int s[3] = {2, 3, 4};
    nn_tensor *x = tu_rand(14, -1, 1, 3, s);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    float p = 0.5f; /* the checker reseeds the generator: every pass sees one mask */
    tu_gradcheck(dropout_fn, &p, 1, &x, 15, "dropout");
    p = 0.2f;
    tu_gradcheck(dropout_fn, &p, 1, &x, 16, "dropout");
    nn_tensor_free(x);
}

static void expect_error(nn_tensor *x, float p)
{
    nn_ctx *ctx = nn_ctx_new();
    assert_null(nn_dropout(ctx, x, p));
    assert_int_equal(nn_ctx_status(ctx), NN_E_ARG);
    if (!strstr(nn_ctx_errmsg(ctx), "dropout")) fail_msg("message without the op: %s", nn_ctx_errmsg(ctx));
    assert_true(nn_ctx_rng(ctx)->offset == 0);
    nn_ctx_free(ctx);
}

/* Sharded (nn_ctx_set_shard): rows [2, 6) of a global batch of 6 rows, drawn
 * by a context that sees only those rows, get the masks of those rows in the
 * whole batch, and the generator ends where the whole batch leaves it. A
 * local-index draw (the old rule) would repeat rows 0 and 1's masks. */
static void test_shard_draws_global_rows(void **state)
{
    (void)state;
    enum { ROWS = 6, COLS = 5, FIRST = 2, LOCAL = 4 };
    int sw[2] = {ROWS, COLS}, sl[2] = {LOCAL, COLS};
    nn_tensor *xw = NULL, *xl = NULL;
    assert_int_equal(nn_tensor_new(&xw, NN_F32, NN_CPU, 2, sw), NN_OK);
    assert_int_equal(nn_tensor_new(&xl, NN_F32, NN_CPU, 2, sl), NN_OK);
    assert_int_equal(nn_tensor_fill(xw, 1.0f), NN_OK);
    assert_int_equal(nn_tensor_fill(xl, 1.0f), NN_OK);
    nn_ctx *whole = nn_ctx_new(), *part = nn_ctx_new();
    *nn_ctx_rng(whole) = *nn_ctx_rng(part) = (nn_rng){42, 1000};
    nn_ctx_set_shard(part, FIRST, ROWS);
    nn_tensor *yw = nn_dropout(whole, xw, 0.5f), *yl = nn_dropout(part, xl, 0.5f);
    assert_non_null(yw);
    assert_non_null(yl);
    assert_memory_equal(nn_f32(yl), nn_f32(yw) + FIRST * COLS, LOCAL * COLS * sizeof(float));
    assert_int_equal(nn_ctx_rng(part)->offset, nn_ctx_rng(whole)->offset);
    assert_int_equal(nn_ctx_rng(whole)->offset, 1000 + ROWS * COLS);
    nn_ctx_free(whole);
    nn_ctx_free(part);
    nn_tensor_free(xw);
    nn_tensor_free(xl);
}

static void test_errors(void **state)
{
    (void)state;
    nn_tensor *x = filled(10, 1.0f);
    expect_error(x, -0.1f);
    expect_error(x, 1.5f);
    expect_error(x, NAN);
    expect_error(x, INFINITY);
    expect_error(x, -INFINITY);
    /* bad p is refused in eval mode too, where it would be unused */
    nn_ctx *ctx = nn_ctx_new();
    nn_ctx_set_training(ctx, false);
    assert_null(nn_dropout(ctx, x, 2.0f));
    assert_int_equal(nn_ctx_status(ctx), NN_E_ARG);
    nn_ctx_free(ctx);
    int s[1] = {10};
    nn_tensor *xi = NULL;
    assert_int_equal(nn_tensor_new(&xi, NN_I32, NN_CPU, 1, s), NN_OK);
    expect_error(xi, 0.5f);
    nn_tensor_free(x);
    nn_tensor_free(xi);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statistics),
        cmocka_unit_test(test_matches_generator),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_shard_draws_global_rows),
        cmocka_unit_test(test_backward_same_mask),
        cmocka_unit_test(test_eval_is_identity),
        cmocka_unit_test(test_p0_is_identity),
        cmocka_unit_test(test_eval_keeps_stream),
        cmocka_unit_test(test_p1_is_zero),
        cmocka_unit_test(test_backward_accumulates),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
