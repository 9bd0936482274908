/* softmax_xent: the loss and its gradient against float64 references, huge
 * logits (+-1e4), the dloss scaling, gradient checks, bad labels (status and
 * message) and shape / dtype errors. */
#include <string.h>

#include "ops/cpu_kernels.h"
#include "tests/testutil.h"

/* Loss and gradient in float64: lse by the max-subtracted sum. */
static double xent_ref(int n, int k, const float *x, const int32_t *lab, double *grad)
{
    double total = 0;
    for (int i = 0; i < n; i++) {
        const float *r = x + (size_t)i * k;
        double m = r[0], s = 0;
        for (int c = 1; c < k; c++) m = fmax(m, r[c]);
        for (int c = 0; c < k; c++) s += exp(r[c] - m);
        total += m + log(s) - r[lab[i]];
        if (grad)
            for (int c = 0; c < k; c++)
                grad[(size_t)i * k + c] = (exp(r[c] - m) / s - (c == lab[i])) / n;
    }
    return total / n;
}

static nn_tensor *labels_tensor(int n, const int32_t *v)
{
    int s[1] = {n};
    nn_tensor *t = NULL;
    assert_int_equal(nn_tensor_from(&t, NN_I32, NN_CPU, 1, s, v), NN_OK);
    return t;
}

static nn_tensor *rand_labels(int n, int k, uint64_t seed)
{
    int32_t *v = malloc((size_t)n * sizeof *v);
    nn_rng r = nn_rng_make(seed);
    for (int i = 0; i < n; i++) v[i] = (int32_t)nn_rng_below(&r, (uint32_t)k);
    nn_tensor *t = labels_tensor(n, v);
    free(v);
    return t;
}

static void test_matches_reference(void **state)
{
    (void)state;
    const int shapes[][2] = {{1, 1}, {1, 10}, {5, 3}, {7, 13}, {128, 10}, {3, 1000}, {200, 1000}};
    nn_ctx *ctx = nn_ctx_new();
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int n = shapes[t][0], k = shapes[t][1];
        int s[2] = {n, k};
        nn_tensor *x = tu_rand(100 + t, -5, 5, 2, s);
        nn_tensor *lab = rand_labels(n, k, 200 + t);
        assert_int_equal(nn_tensor_require_grad(x), NN_OK);
        nn_tensor *loss = nn_softmax_xent(ctx, x, lab);
        assert_non_null(loss);
        assert_int_equal(loss->ndim, 1);
        assert_int_equal(loss->shape[0], 1);
        double *g = malloc(x->numel * sizeof *g);
        double ref = xent_ref(n, k, nn_f32(x), nn_i32(lab), g);
        tu_assert_close(nn_f32(loss), &ref, 1, TU_FWD_ATOL, TU_FWD_RTOL, "xent loss");
        assert_int_equal(nn_backward(ctx, loss), NN_OK);
        tu_assert_close(nn_f32(x->grad), g, x->numel, TU_FWD_ATOL, TU_FWD_RTOL, "xent gradient");
        free(g);
        nn_tensor_free(x);
        nn_tensor_free(lab);
        nn_ctx_reset(ctx);
    }
    nn_ctx_free(ctx);
}

/* exp(1e4) overflows float (and double): only the max-subtracted form stays
 * finite. Row 0's label sits 2e4 below the max, row 1's is the max. */
static void test_huge_logits(void **state)
{
    (void)state;
    const float v[6] = {1e4f, -1e4f, 0.0f, -1e4f, 1e4f, 1e4f - 1.0f};
    const int32_t l[2] = {1, 1};
    int s[2] = {2, 3};
    nn_tensor *x = NULL;
    assert_int_equal(nn_tensor_from(&x, NN_F32, NN_CPU, 2, s, v), NN_OK);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_tensor *lab = labels_tensor(2, l);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *loss = nn_softmax_xent(ctx, x, lab);
    assert_non_null(loss);
    /* row 0: lse = 1e4 + log(1 + e^-2e4 + e^-1e4) = 1e4, loss 2e4;
     * row 1: lse = 1e4 + log(1 + e^-1), loss log(1 + e^-1) = 0.31326169 */
    double want = (2e4 + log1p(exp(-1.0))) / 2;
    assert_true(isfinite(nn_f32(loss)[0]));
    tu_assert_close(nn_f32(loss), &want, 1, TU_FWD_ATOL, TU_FWD_RTOL, "xent huge logits");
    double g[6];
    xent_ref(2, 3, v, l, g);
    assert_int_equal(nn_backward(ctx, loss), NN_OK);
    for (int i = 0; i < 6; i++) assert_true(isfinite(nn_f32(x->grad)[i]));
    tu_assert_close(nn_f32(x->grad), g, 6, TU_FWD_ATOL, TU_FWD_RTOL, "xent huge gradient");
    nn_ctx_free(ctx);
    nn_tensor_free(x);
    nn_tensor_free(lab);
}

/* The gradient scales with dloss (the loss used downstream), and accumulates. */
static void test_dloss_scaling(void **state)
{
    (void)state;
    int s[2] = {4, 6};
    nn_tensor *x = tu_rand(3, -2, 2, 2, s);
    nn_tensor *lab = rand_labels(4, 6, 4);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *loss = nn_softmax_xent(ctx, x, lab);
    const float dl = 2.5f;
    assert_int_equal(nn_backward_with(ctx, loss, &dl), NN_OK);
    double g[24];
    xent_ref(4, 6, nn_f32(x), nn_i32(lab), g);
    for (int i = 0; i < 24; i++) g[i] *= dl;
    tu_assert_close(nn_f32(x->grad), g, 24, TU_FWD_ATOL, TU_FWD_RTOL, "xent dloss scaling");
    /* a second backward adds to the leaf's gradient */
    assert_int_equal(nn_backward_with(ctx, loss, &dl), NN_OK);
    for (int i = 0; i < 24; i++) g[i] *= 2;
    tu_assert_close(nn_f32(x->grad), g, 24, TU_FWD_ATOL, TU_FWD_RTOL, "xent accumulates");
    nn_ctx_free(ctx);
    nn_tensor_free(x);
    nn_tensor_free(lab);
}

/* Kernel contract: backward adds into dx; dx may be NULL. */
static void test_kernel_accumulates(void **state)
{
    (void)state;
    const float logits[4] = {0, 0, 1, 1};
    const int32_t lab[2] = {0, 1};
    float probs[4], loss, dx[4] = {1, 1, 1, 1};
    const float dl = 1.0f;
    assert_int_equal(nn_cpu_xent_forward(2, 2, logits, lab, probs, &loss), NN_OK);
    assert_float_equal(loss, log(2.0), 1e-7);
    assert_int_equal(nn_cpu_xent_backward(2, 2, probs, lab, &dl, dx), NN_OK);
    assert_int_equal(nn_cpu_xent_backward(2, 2, probs, lab, &dl, NULL), NN_OK);
    /* (probs - onehot) / 2 = (-0.25, 0.25, 0.25, -0.25), plus 1 */
    const float want[4] = {0.75f, 1.25f, 1.25f, 0.75f};
    assert_memory_equal(dx, want, sizeof want);
}

static nn_tensor *xent_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    return nn_softmax_xent(ctx, in[0], in[1]);
}

static void test_gradcheck(void **state)
{
    (void)state;
    const int shapes[][2] = {{1, 4}, {3, 5}, {6, 2}};
    for (size_t t = 0; t < 3; t++) {
        int s[2] = {shapes[t][0], shapes[t][1]};
        nn_tensor *in[2] = {tu_rand(30 + t, -3, 3, 2, s), rand_labels(s[0], s[1], 40 + t)};
        assert_int_equal(nn_tensor_require_grad(in[0]), NN_OK);
        tu_gradcheck(xent_fn, NULL, 2, in, 50 + t, "softmax_xent");
        nn_tensor_free(in[0]);
        nn_tensor_free(in[1]);
    }
}

static void expect_error(nn_tensor *x, nn_tensor *lab, nn_status want, const char *needle)
{
    nn_ctx *ctx = nn_ctx_new();
    assert_null(nn_softmax_xent(ctx, x, lab));
    assert_int_equal(nn_ctx_status(ctx), want);
    const char *m = nn_ctx_errmsg(ctx);
    if (!strstr(m, "softmax_xent")) fail_msg("message without the op: %s", m);
    if (needle && !strstr(m, needle)) fail_msg("message without '%s': %s", needle, m);
    nn_ctx_free(ctx);
}

static void test_bad_labels(void **state)
{
    (void)state;
    int s[2] = {5, 10};
    nn_tensor *x = tu_rand(1, -1, 1, 2, s);
    int32_t l[5] = {0, 9, 3, 12, 4};
    nn_tensor *lab = labels_tensor(5, l);
    expect_error(x, lab, NN_E_RANGE, "label 12 of sample 3 is outside [0, 10)");
    nn_tensor_free(lab);
    l[3] = 3;
    l[1] = -1;
    lab = labels_tensor(5, l);
    expect_error(x, lab, NN_E_RANGE, "label -1 of sample 1 is outside [0, 10)");
    nn_tensor_free(lab);
    l[1] = 10; /* K itself is out */
    lab = labels_tensor(5, l);
    expect_error(x, lab, NN_E_RANGE, "sample 1");
    nn_tensor_free(lab);
    nn_tensor_free(x);
}

static void test_shape_errors(void **state)
{
    (void)state;
    int s2[2] = {4, 3}, s3[3] = {4, 3, 1}, s1[1] = {4}, s22[2] = {4, 1};
    nn_tensor *x = tu_rand(1, -1, 1, 2, s2), *x3 = tu_rand(2, -1, 1, 3, s3);
    nn_tensor *lab = rand_labels(4, 3, 3), *lab5 = rand_labels(5, 3, 4);
    nn_tensor *labf = tu_rand(5, 0, 1, 1, s1), *xi = NULL, *lab2d = NULL;
    assert_int_equal(nn_tensor_new(&xi, NN_I32, NN_CPU, 2, s2), NN_OK);
    assert_int_equal(nn_tensor_new(&lab2d, NN_I32, NN_CPU, 2, s22), NN_OK);
    expect_error(x, lab5, NN_E_SHAPE, "5");    /* 5 labels for 4 rows */
    expect_error(x, lab2d, NN_E_SHAPE, NULL);  /* labels must be (N) */
    expect_error(x3, lab, NN_E_SHAPE, "4x3x1"); /* logits must be 2-D */
    expect_error(x, labf, NN_E_ARG, "int32");
    expect_error(xi, lab, NN_E_ARG, "float32");
    nn_tensor_free(x);
    nn_tensor_free(x3);
    nn_tensor_free(lab);
    nn_tensor_free(lab5);
    nn_tensor_free(labf);
    nn_tensor_free(xi);
    nn_tensor_free(lab2d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_huge_logits),
        cmocka_unit_test(test_dloss_scaling),
        cmocka_unit_test(test_kernel_accumulates),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_bad_labels),
        cmocka_unit_test(test_shape_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
