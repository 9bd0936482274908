/* A tiny network written against the public API trains: conv -> relu -> lrn ->
 * maxpool -> flatten -> linear -> softmax cross-entropy; plain SGD on fixed
 * data must lower the loss steadily over 50 steps. */
#include <string.h>

#include "optim/optim.h"
#include "tests/testutil.h"

static void test_tiny_network_loss_falls(void **state)
{
    (void)state;
    enum { N = 16, C = 2, H = 8, W = 8, O = 6, K = 3 };
    nn_tensor *x = tu_rand4(1, N, C, H, W);
    int32_t lab[N];
    for (int i = 0; i < N; i++) lab[i] = i % K;
    nn_tensor *y = NULL;
    assert_int_equal(nn_tensor_from(&y, NN_I32, NN_CPU, 1, (int[]){N}, lab), NN_OK);
    /* make the classes learnable: shift channel 0 by the label */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < H * W; j++) nn_f32(x)[(size_t)i * C * H * W + j] += (float)lab[i];

    nn_rng rng = nn_rng_make(2);
    nn_tensor *w1, *b1, *w2, *b2;
    assert_int_equal(nn_tensor_new4(&w1, NN_F32, NN_CPU, O, C, 3, 3), NN_OK);
    assert_int_equal(nn_tensor_new(&b1, NN_F32, NN_CPU, 1, (int[]){O}), NN_OK);
    assert_int_equal(nn_tensor_new(&w2, NN_F32, NN_CPU, 2, (int[]){K, O * 4 * 4}), NN_OK);
    assert_int_equal(nn_tensor_new(&b2, NN_F32, NN_CPU, 1, (int[]){K}), NN_OK);
    assert_int_equal(nn_tensor_normal(w1, &rng, 0, 0.3f), NN_OK);
    assert_int_equal(nn_tensor_normal(w2, &rng, 0, 0.1f), NN_OK);
    nn_params ps = {0};
    nn_tensor *all[4] = {w1, b1, w2, b2};
    const char *names[4] = {"w1", "b1", "w2", "b2"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(nn_tensor_require_grad(all[i]), NN_OK);
        assert_int_equal(nn_params_add(&ps, names[i], all[i], i % 2 == 1), NN_OK);
    }
    nn_optim_config oc = {.kind = NN_OPT_SGD, .lr = 0.05f};
    nn_optim *opt;
    assert_int_equal(nn_optim_new(&opt, &oc, &ps), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    float losses[50];
    for (int step = 0; step < 50; step++) {
        nn_ctx_reset(ctx);
        nn_tensor *h = nn_conv2d(ctx, x, w1, b1, (nn_conv2d_params){.pad_h = 1, .pad_w = 1});
        h = nn_relu(ctx, h);
        h = nn_lrn(ctx, h, NN_LRN_PAPER);
        h = nn_maxpool2d(ctx, h, (nn_pool_params){.kernel_h = 2, .kernel_w = 2});
        h = nn_linear(ctx, nn_flatten(ctx, h), w2, b2);
        nn_tensor *loss = nn_softmax_xent(ctx, h, y);
        assert_non_null(loss);
        assert_int_equal(nn_backward(ctx, loss), NN_OK);
        losses[step] = nn_f32(loss)[0];
        assert_int_equal(nn_optim_step(opt), NN_OK);
        assert_int_equal(nn_params_zero_grad(&ps), NN_OK);
    }
    /* starts near log(3) = 1.10; plain SGD on separable data must fall well below */
    assert_true(losses[0] > 0.5f);
    assert_true(losses[49] < 0.5f * losses[0]);
    assert_true(losses[49] < losses[25] && losses[25] < losses[0]);
    nn_optim_free(opt);
    nn_params_clear(&ps);
    for (int i = 0; i < 4; i++) nn_tensor_free(all[i]);
    nn_tensor_free(x);
    nn_tensor_free(y);
    nn_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tiny_network_loss_falls)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
