/* relu: forward against a float64 reference on several shapes, the gradient
 * by central differences (points within eps of the kink are skipped by the
 * checker), the gradient at exactly 0, accumulation, and the dtype error. */
#include <string.h>

#include "ops/cpu_kernels.h"
#include "tests/testutil.h"

static void test_forward_matches_reference(void **state)
{
    (void)state;
    const int shapes[][4] = {{1, 1, 1, 1}, {1, 3, 5, 7}, {2, 4, 3, 1}, {5, 1, 9, 2}};
    nn_ctx *ctx = nn_ctx_new();
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        nn_tensor *x = tu_rand(100 + t, -2.0f, 2.0f, 4, shapes[t]);
        nn_tensor *y = nn_relu(ctx, x);
        assert_non_null(y);
        assert_true(nn_same_shape(x, y));
        double *ref = malloc(x->numel * sizeof *ref);
        for (size_t i = 0; i < x->numel; i++) {
            double v = nn_f32(x)[i];
            ref[i] = v > 0 ? v : 0;
        }
        /* max() is exact in any precision */
        tu_assert_close(nn_f32(y), ref, x->numel, 0.0, 0.0, "relu forward");
        free(ref);
        nn_tensor_free(x);
        nn_ctx_reset(ctx);
    }
    /* any rank: a 1-D and a 2-D input */
    int s1[1] = {17}, s2[2] = {3, 4};
    nn_tensor *a = tu_rand(7, -1, 1, 1, s1), *b = tu_rand(8, -1, 1, 2, s2);
    nn_tensor *ya = nn_relu(ctx, a), *yb = nn_relu(ctx, b);
    assert_non_null(ya);
    assert_non_null(yb);
    assert_int_equal(ya->ndim, 1);
    assert_int_equal(yb->ndim, 2);
    for (int i = 0; i < 12; i++) assert_true(nn_f32(yb)[i] == fmaxf(nn_f32(b)[i], 0.0f));
    nn_tensor_free(a);
    nn_tensor_free(b);
    nn_ctx_free(ctx);
}

static nn_tensor *relu_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    return nn_relu(ctx, in[0]);
}

static void test_gradcheck(void **state)
{
    (void)state;
    nn_tensor *x = tu_rand4(11, 2, 3, 4, 5);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    tu_gradcheck(relu_fn, NULL, 1, &x, 12, "relu");
    nn_tensor_free(x);

    /* points within the step (1e-2) of the kink are skipped, not failed */
    const float v[6] = {0.5f, -0.5f, 0.004f, -0.003f, 0.0f, 1.5f};
    int s[1] = {6};
    assert_int_equal(nn_tensor_from(&x, NN_F32, NN_CPU, 1, s, v), NN_OK);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_gradcheck_opts o = {.seed = 13};
    nn_gradcheck_result r;
    assert_int_equal(nn_gradcheck(relu_fn, NULL, 1, &x, &o, &r), NN_OK);
    assert_true(r.ok);
    assert_int_equal(r.in[0].skipped, 3);
    assert_int_equal(r.in[0].points, 3);
    nn_tensor_free(x);
}

static void test_gradient_at_zero_is_zero(void **state)
{
    (void)state;
    const float xs[6] = {0.0f, -0.0f, 1.0f, -1.0f, 0.0f, 2.5f};
    const float expect[6] = {0, 0, 1, 0, 0, 1};
    int s[1] = {6};
    nn_tensor *x = NULL;
    assert_int_equal(nn_tensor_from(&x, NN_F32, NN_CPU, 1, s, xs), NN_OK);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = nn_relu(ctx, x);
    assert_non_null(y);
    const float dy[6] = {1, 1, 1, 1, 1, 1};
    assert_int_equal(nn_backward_with(ctx, y, dy), NN_OK);
    for (int i = 0; i < 6; i++) {
        assert_true(nn_f32(y)[i] == fmaxf(xs[i], 0.0f));
        assert_true(nn_f32(x->grad)[i] == expect[i]);
    }
    nn_tensor_free(x);
    nn_ctx_free(ctx);
}

/* The kernel contract: backward adds into dx and tolerates dx == NULL. */
static void test_backward_accumulates(void **state)
{
    (void)state;
    const float y[4] = {0.0f, 2.0f, 0.0f, 3.0f}, dy[4] = {1, 2, 3, 4};
    float dx[4] = {10, 10, 10, 10};
    assert_int_equal(nn_cpu_relu_backward(4, y, dy, dx), NN_OK);
    const float expect[4] = {10, 12, 10, 14};
    assert_memory_equal(dx, expect, sizeof dx);
}

static void test_bad_dtype(void **state)
{
    (void)state;
    int s[1] = {4};
    nn_tensor *l = NULL;
    assert_int_equal(nn_tensor_new(&l, NN_I32, NN_CPU, 1, s), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    assert_null(nn_relu(ctx, l));
    assert_int_equal(nn_ctx_status(ctx), NN_E_ARG);
    assert_non_null(strstr(nn_ctx_errmsg(ctx), "relu"));
    nn_tensor_free(l);
    nn_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_gradient_at_zero_is_zero),
        cmocka_unit_test(test_backward_accumulates),
        cmocka_unit_test(test_bad_dtype),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
