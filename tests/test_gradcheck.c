/* The gradient checker itself: it must pass a correct op, FAIL an op with a
 * wrong backward (a checker that cannot fail is useless), skip points at a
 * kink, and report per input. */
#include <string.h>

#include "core/op.h"
#include "tests/testutil.h"

/* y = x^2 elementwise with a backward that is off by a factor (scale). */
static float g_scale;

static nn_status sq_backward(nn_ctx *ctx, nn_node *nd)
{
    (void)ctx;
    float *dx = nn_op_grad_in(nd, 0);
    const float *x = nn_f32(nd->in[0]), *dy = nn_f32(nd->out->grad);
    if (dx)
        for (size_t i = 0; i < nd->out->numel; i++) dx[i] += g_scale * 2.0f * x[i] * dy[i];
    return NN_OK;
}

static const nn_op_def sq_def = {"square", sq_backward};

static nn_tensor *square(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    nn_tensor *x = in[0];
    nn_tensor *y = nn_op_tensor(ctx, NN_F32, NN_CPU, x->ndim, x->shape);
    for (size_t i = 0; i < x->numel; i++) nn_f32(y)[i] = nn_f32(x)[i] * nn_f32(x)[i];
    if (nn_op_wants_grad(ctx, 1, in)) nn_op_record(ctx, &sq_def, y, 1, in);
    return y;
}

static nn_tensor *relu_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    return nn_relu(ctx, in[0]);
}

static void test_detects_wrong_gradient(void **state)
{
    (void)state;
    nn_tensor *x = tu_rand(1, -2, 2, 1, (int[]){20});
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_gradcheck_result r;
    nn_gradcheck_opts o = {.seed = 3};
    g_scale = 1.0f;
    assert_int_equal(nn_gradcheck(square, NULL, 1, &x, &o, &r), NN_OK);
    assert_true(r.ok);
    assert_int_equal(r.in[0].points, 20); /* curvature (d2/dx2 = 2r) is not mistaken for a kink */
    assert_true(r.in[0].max_rel < 1e-3);
    g_scale = 1.05f; /* a 5% error must be caught at the default 1e-2 threshold */
    assert_int_equal(nn_gradcheck(square, NULL, 1, &x, &o, &r), NN_OK);
    assert_false(r.ok);
    assert_true(r.in[0].failed > 0);
    assert_true(r.in[0].max_rel > 1e-2);
    nn_tensor_free(x);
}

static void test_skips_kinks(void **state)
{
    (void)state;
    float v[6] = {-1.0f, 0.0f, 0.004f, -0.003f, 0.5f, 2.0f};
    nn_tensor *x = NULL;
    assert_int_equal(nn_tensor_from(&x, NN_F32, NN_CPU, 1, (int[]){6}, v), NN_OK);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_gradcheck_result r;
    nn_gradcheck_opts o = {.seed = 1};
    assert_int_equal(nn_gradcheck(relu_fn, NULL, 1, &x, &o, &r), NN_OK);
    assert_true(r.ok);
    /* 0, 0.004 and -0.003 lie within eps = 1e-2 of the kink */
    assert_int_equal(r.in[0].skipped, 3);
    assert_int_equal(r.in[0].points, 3);
    nn_tensor_free(x);
}

static void test_errors_and_unchecked_inputs(void **state)
{
    (void)state;
    nn_gradcheck_result r;
    assert_int_equal(nn_gradcheck(square, NULL, 0, NULL, NULL, &r), NN_E_ARG);
    nn_tensor *x = tu_rand(1, -1, 1, 1, (int[]){4}); /* no requires_grad */
    assert_int_equal(nn_gradcheck(square, NULL, 1, &x, NULL, &r), NN_E_ARG);
    assert_non_null(strstr(nn_errmsg(), "no input requires grad"));
    /* an input that does not require grad is passed through, not checked */
    nn_tensor *w = tu_rand(2, -1, 1, 1, (int[]){4});
    assert_int_equal(nn_tensor_require_grad(w), NN_OK);
    nn_tensor *in[2] = {w, x};
    g_scale = 1.0f;
    assert_int_equal(nn_gradcheck(square, NULL, 2, in, NULL, &r), NN_OK);
    assert_true(r.ok);
    assert_true(r.in[0].checked);
    assert_false(r.in[1].checked);
    nn_tensor_free(w);
    nn_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detects_wrong_gradient),
        cmocka_unit_test(test_skips_kinks),
        cmocka_unit_test(test_errors_and_unchecked_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
