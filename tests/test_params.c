/* The parameter list's gradient block (core/params.h): flattening keeps the
 * weights and gradients, lays them out aligned with zero padding, backward
 * and gradcheck run through it, zero_grad clears it in one go, it follows a
 * list that changed, and it frees cleanly whichever of nn_seq_free and
 * nn_params_clear comes first (ASan checks the last part). */
#include <math.h>
#include <string.h>

#include "convnet.h"
#include "tests/testutil.h"

/* conv 2->3 (3x3, pad 1) on 2x5x5, relu, flatten, linear 75->4: gradients of
 * 54, 3, 300 and 4 floats, so slots at 0, 64, 128 and 448 (512 in all) */
enum { IC = 2, HW = 5, OC = 3, CLASSES = 4, BATCH = 3 };
static const size_t k_offsets[4] = {0, 64, 128, 448};
#define K_BLOCK 512

static void small_net(nn_seq *s)
{
    nn_seq_init(s, IC, HW, HW);
    nn_seq_conv(s, "conv", OC, 3, 1, 1, 1, 0.1f);
    nn_seq_relu(s, "relu");
    nn_seq_flatten(s, "flat");
    nn_seq_linear(s, "fc", CLASSES, 0.1f);
    nn_rng rng = nn_rng_make(5);
    assert_int_equal(nn_seq_build(s, NN_CPU, NN_INIT_HE, &rng), NN_OK);
}

/* One forward and backward of a fixed batch: gradients accumulate into each grad. */
static void backward_once(nn_seq *s)
{
    nn_tensor *x = tu_rand4(7, BATCH, IC, HW, HW), *y = NULL;
    assert_int_equal(nn_tensor_from(&y, NN_I32, NN_CPU, 1, (int[]){BATCH}, (int32_t[]){0, 3, 1}), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    nn_ctx_set_training(ctx, true);
    nn_tensor *loss = nn_softmax_xent(ctx, nn_seq_forward(ctx, s, x), y);
    assert_non_null(loss);
    assert_int_equal(nn_backward(ctx, loss), NN_OK);
    nn_ctx_free(ctx);
    nn_tensor_free(x);
    nn_tensor_free(y);
}

/* Every weight and gradient of the list, in order, into one host array. */
static size_t snapshot(const nn_params *ps, float *w, float *g)
{
    size_t k = 0;
    for (int i = 0; i < ps->n; i++) {
        memcpy(w + k, nn_f32(ps->p[i].t), nn_tensor_bytes(ps->p[i].t));
        memcpy(g + k, nn_f32(ps->p[i].t->grad), nn_tensor_bytes(ps->p[i].t));
        k += ps->p[i].t->numel;
    }
    return k;
}

static void test_flatten_keeps_values_and_layout(void **state)
{
    (void)state;
    nn_seq s;
    small_net(&s);
    backward_once(&s);
    static float w0[K_BLOCK], g0[K_BLOCK], w1[K_BLOCK], g1[K_BLOCK];
    size_t n0 = snapshot(&s.params, w0, g0);
    float *block = NULL;
    size_t n = 0;
    assert_int_equal(nn_params_flatten_grads(&s.params, 2, &block, &n), NN_OK);
    assert_int_equal(n, K_BLOCK);
    assert_ptr_equal(nn_params_flat(&s.params, NULL), block);
    for (int i = 0; i < s.params.n; i++) {
        const nn_tensor *g = s.params.p[i].t->grad;
        assert_true(g->view);
        assert_ptr_equal(g->data, block + k_offsets[i]);
        assert_int_equal(k_offsets[i] % NN_PARAMS_GRAD_ALIGN, 0);
    }
    /* the values, bit for bit; the padding and the extra floats zero */
    assert_int_equal(snapshot(&s.params, w1, g1), n0);
    assert_memory_equal(w0, w1, n0 * sizeof(float));
    assert_memory_equal(g0, g1, n0 * sizeof(float));
    for (size_t j = 54; j < 64; j++) assert_true(block[j] == 0.0f);
    for (size_t j = 128 + 300; j < 448; j++) assert_true(block[j] == 0.0f);
    assert_true(block[K_BLOCK] == 0.0f && block[K_BLOCK + 1] == 0.0f);

    /* idempotent: the same block; no more extra than it has: the same block */
    float *again = NULL;
    assert_int_equal(nn_params_flatten_grads(&s.params, 0, &again, NULL), NN_OK);
    assert_ptr_equal(again, block);

    /* backward accumulates into the block bit for bit as into separate
     * buffers (the same net, not flattened, twice too) */
    nn_seq plain;
    small_net(&plain);
    backward_once(&plain);
    backward_once(&plain);
    backward_once(&s);
    snapshot(&plain.params, w0, g0);
    snapshot(&s.params, w1, g1);
    assert_memory_equal(g0, g1, n0 * sizeof(float));
    nn_seq_free(&plain);

    /* zero_grad: the gradients, not the caller's extra floats */
    block[K_BLOCK] = 42.0f;
    assert_int_equal(nn_params_zero_grad(&s.params), NN_OK);
    for (size_t j = 0; j < K_BLOCK; j++) assert_true(block[j] == 0.0f);
    assert_true(block[K_BLOCK] == 42.0f);
    nn_seq_free(&s);
}

/* gradcheck on the flattened model: inputs x and the conv and fc weights;
 * the model reads its own tensors, which gradcheck perturbs in place */
static nn_tensor *net_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_seq_forward(ctx, user, in[0]);
}

static void test_gradcheck_through_block(void **state)
{
    (void)state;
    nn_seq s;
    small_net(&s);
    assert_int_equal(nn_params_flatten_grads(&s.params, 0, NULL, NULL), NN_OK);
    nn_tensor *x = tu_rand4(9, 2, IC, HW, HW);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_tensor *const in[4] = {x, s.l[0].w, s.l[0].b, s.l[3].w};
    tu_gradcheck(net_fn, &s, 4, in, 3, "the flattened model");
    /* the gradients it read were the block's */
    assert_non_null(nn_params_flat(&s.params, NULL));
    nn_tensor_free(x);
    nn_seq_free(&s);
}

/* A parameter added after flattening is not in the block: the list is no
 * longer flat, zero_grad still clears everything, and flattening again takes it in. */
static void test_list_that_changed(void **state)
{
    (void)state;
    nn_seq s;
    small_net(&s);
    float *block = NULL, *again = NULL;
    size_t n = 0;
    assert_int_equal(nn_params_flatten_grads(&s.params, 1, &block, &n), NN_OK);
    nn_tensor *extra = tu_rand(3, -1, 1, 1, (int[]){10});
    assert_int_equal(nn_tensor_require_grad(extra), NN_OK);
    assert_int_equal(nn_tensor_fill(extra->grad, 2.0f), NN_OK);
    assert_int_equal(nn_params_add(&s.params, "extra", extra, false), NN_OK);
    assert_null(nn_params_flat(&s.params, NULL));
    assert_int_equal(nn_params_flatten_grads(&s.params, 1, &again, &n), NN_OK);
    assert_int_equal(n, K_BLOCK + 64);
    assert_ptr_equal(extra->grad->data, again + K_BLOCK);
    for (int j = 0; j < 10; j++) assert_true(again[K_BLOCK + j] == 2.0f);
    /* more extra: a new block with the same gradients */
    float *bigger = NULL;
    assert_int_equal(nn_params_flatten_grads(&s.params, 100, &bigger, NULL), NN_OK);
    assert_non_null(nn_params_flat(&s.params, NULL));
    assert_true(nn_f32(extra->grad)[9] == 2.0f);
    assert_int_equal(nn_params_zero_grad(&s.params), NN_OK);
    assert_true(nn_f32(extra->grad)[9] == 0.0f);
    nn_seq_free(&s); /* the list no longer names extra's tensor: ours to free */
    nn_tensor_free(extra);
}

static void test_errors(void **state)
{
    (void)state;
    nn_params ps = {0};
    nn_tensor *a = tu_rand(1, -1, 1, 1, (int[]){5});
    assert_int_equal(nn_params_add(&ps, "no.grad", a, false), NN_OK);
    assert_int_equal(nn_params_flatten_grads(&ps, 0, NULL, NULL), NN_E_ARG);
    if (!strstr(nn_errmsg(), "no.grad")) fail_msg("message: %s", nn_errmsg());
    assert_null(nn_params_flat(&ps, NULL));
    assert_int_equal(nn_params_flatten_grads(NULL, 0, NULL, NULL), NN_E_ARG);
    nn_params_clear(&ps);
    /* an empty list flattens to an empty block (the extra only) */
    float *b = NULL;
    size_t n = 1;
    assert_int_equal(nn_params_flatten_grads(&ps, 1, &b, &n), NN_OK);
    assert_non_null(b);
    assert_int_equal(n, 0);
    nn_params_clear(&ps);
    nn_tensor_free(a);
}

/* Either order frees everything once (ASan and LeakSanitizer watch). */
static void test_free_orders(void **state)
{
    (void)state;
    nn_seq s;
    small_net(&s);
    backward_once(&s);
    assert_int_equal(nn_params_flatten_grads(&s.params, 1, NULL, NULL), NN_OK);
    nn_seq_free(&s); /* tensors first, then the list and its block */

    nn_params ps = {0};
    nn_tensor *w = tu_rand(2, -1, 1, 2, (int[]){3, 4}), *b = tu_rand(3, -1, 1, 1, (int[]){3});
    assert_int_equal(nn_tensor_require_grad(w), NN_OK);
    assert_int_equal(nn_tensor_require_grad(b), NN_OK);
    assert_int_equal(nn_params_add(&ps, "w", w, false), NN_OK);
    assert_int_equal(nn_params_add(&ps, "b", b, true), NN_OK);
    assert_int_equal(nn_params_flatten_grads(&ps, 0, NULL, NULL), NN_OK);
    nn_params_clear(&ps); /* the list and its block first, then the tensors */
    assert_null(ps.grad_block);
    nn_tensor_free(w);
    nn_tensor_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flatten_keeps_values_and_layout),
        cmocka_unit_test(test_gradcheck_through_block),
        cmocka_unit_test(test_list_that_changed),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_free_orders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
