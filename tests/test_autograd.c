/* Autograd: fan-out accumulation, long chains, no-grad mode, gradient zeroing,
 * the arena's steady state, memory released during backward, relu in place,
 * and backward's errors. */
#include <string.h>

#include "tests/testutil.h"

static nn_tensor *leaf(uint64_t seed, int n)
{
    int s[1] = {n};
    nn_tensor *t = tu_rand(seed, -1, 1, 1, s);
    assert_int_equal(nn_tensor_require_grad(t), NN_OK);
    return t;
}

static void test_fan_out_accumulates(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = leaf(1, 50);
    /* y = relu(x) + relu(x) + x : dy/dx = 2 [x > 0] + 1 */
    nn_tensor *y = nn_add(ctx, nn_add(ctx, nn_relu(ctx, x), nn_relu(ctx, x)), x);
    assert_non_null(y);
    float ones[50];
    for (int i = 0; i < 50; i++) ones[i] = 1.0f;
    assert_int_equal(nn_backward_with(ctx, y, ones), NN_OK);
    for (int i = 0; i < 50; i++)
        assert_float_equal(nn_f32(x->grad)[i], nn_f32(x)[i] > 0 ? 3.0f : 1.0f, 0);
    /* the same tensor twice as both inputs of one op */
    nn_ctx_reset(ctx);
    assert_int_equal(nn_tensor_zero_grad(x), NN_OK);
    y = nn_add(ctx, x, x);
    assert_int_equal(nn_backward_with(ctx, y, ones), NN_OK);
    for (int i = 0; i < 50; i++) assert_float_equal(nn_f32(x->grad)[i], 2.0f, 0);
    nn_tensor_free(x);
    nn_ctx_free(ctx);
}

static void test_long_chain(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = leaf(2, 24);
    nn_tensor *h = x;
    int s2[2] = {4, 6}, s1[1] = {24};
    /* 300 x (relu, reshape) with a doubling every 30: dy/dx = 2^10 [x > 0] */
    for (int i = 0; i < 300; i++) {
        h = nn_reshape(ctx, nn_relu(ctx, h), (i & 1) ? 1 : 2, (i & 1) ? s1 : s2);
        if (i % 30 == 29) h = nn_add(ctx, h, h);
    }
    assert_non_null(h);
    assert_int_equal(nn_ctx_nodes(ctx), 610);
    float dy[24];
    for (int i = 0; i < 24; i++) dy[i] = 1.0f;
    assert_int_equal(nn_backward_with(ctx, h, dy), NN_OK);
    for (int i = 0; i < 24; i++) {
        float xi = nn_f32(x)[i];
        assert_float_equal(nn_f32(h)[i], xi > 0 ? 1024.0f * xi : 0.0f, 1e-3);
        assert_float_equal(nn_f32(x->grad)[i], xi > 0 ? 1024.0f : 0.0f, 0);
    }
    nn_ctx_free(ctx);
    nn_tensor_free(x);
}

static void test_no_grad_mode(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = leaf(3, 10);
    bool old = nn_ctx_set_grad(ctx, false);
    assert_true(old);
    nn_tensor *y = nn_relu(ctx, nn_add(ctx, x, x));
    assert_non_null(y);
    assert_false(y->requires_grad);
    assert_null(y->node);
    assert_int_equal(nn_ctx_nodes(ctx), 0);
    float one[10] = {0};
    assert_int_equal(nn_backward_with(ctx, y, one), NN_E_ARG);
    assert_non_null(strstr(nn_errmsg(), "backward"));
    nn_ctx_set_grad(ctx, true);
    /* inputs that do not require grad record nothing either */
    nn_tensor *c = tu_rand(4, -1, 1, 1, (int[]){10});
    assert_non_null(nn_relu(ctx, c));
    assert_int_equal(nn_ctx_nodes(ctx), 0);
    nn_tensor_free(c);
    nn_tensor_free(x);
    nn_ctx_free(ctx);
}

static void test_zeroing_and_accumulation_across_calls(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = leaf(5, 8);
    float g[8];
    for (int i = 0; i < 8; i++) g[i] = (float)i;
    for (int rep = 1; rep <= 2; rep++) {
        nn_ctx_reset(ctx);
        nn_tensor *y = nn_add(ctx, x, x);
        assert_int_equal(nn_backward_with(ctx, y, g), NN_OK);
        for (int i = 0; i < 8; i++) assert_float_equal(nn_f32(x->grad)[i], 2.0f * i * rep, 0);
    }
    assert_int_equal(nn_tensor_zero_grad(x), NN_OK);
    for (int i = 0; i < 8; i++) assert_float_equal(nn_f32(x->grad)[i], 0.0f, 0);
    nn_tensor_free(x);
    nn_ctx_free(ctx);
}

static void test_steady_state_allocates_nothing(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = leaf(6, 300000); /* outgrows the first 1 MiB chunk */
    float *g = calloc(300000, sizeof *g);
    size_t after_first = 0;
    for (int step = 0; step < 5; step++) {
        nn_ctx_reset(ctx);
        nn_tensor *y = nn_relu(ctx, nn_add(ctx, nn_relu(ctx, x), x));
        assert_int_equal(nn_backward_with(ctx, y, g), NN_OK);
        if (step == 1) after_first = nn_ctx_system_allocs(ctx);
    }
    assert_true(after_first > 0);
    assert_int_equal(nn_ctx_system_allocs(ctx), after_first);
    /* three op outputs and their three gradients */
    assert_true(nn_ctx_peak_bytes(ctx, NN_CPU) >= 6 * 300000 * sizeof(float));
    free(g);
    nn_tensor_free(x);
    nn_ctx_free(ctx);
}

/* A chain of 20 relus over 100k floats: backward with memory released as it
 * goes needs a few buffers at a time, retain mode one gradient per op on
 * top of every output; both give the same gradient, bit for bit, and only
 * retain keeps an intermediate's gradient and data readable. */
static void test_backward_releases_memory(void **state)
{
    (void)state;
    enum { N = 100000, DEPTH = 20 };
    nn_tensor *x = leaf(7, N);
    float *dy = calloc(N, sizeof *dy), *g0 = malloc(N * sizeof *g0);
    assert_true(dy && g0);
    for (int i = 0; i < N; i++) dy[i] = (float)(i % 7) - 3.0f;
    size_t peak[2];
    for (int retain = 1; retain >= 0; retain--) {
        nn_ctx *ctx = nn_ctx_new();
        nn_ctx_set_retain(ctx, retain);
        nn_tensor *h = x, *mid = NULL;
        assert_int_equal(nn_tensor_zero_grad(x), NN_OK);
        for (int i = 0; i < DEPTH; i++) {
            h = nn_relu(ctx, nn_add(ctx, h, x));
            if (i == DEPTH / 2) mid = h;
        }
        assert_int_equal(nn_backward_with(ctx, h, dy), NN_OK);
        peak[retain] = nn_ctx_peak_bytes(ctx, NN_CPU);
        if (retain) {
            memcpy(g0, nn_f32(x->grad), N * sizeof *g0);
            assert_non_null(mid->grad);
            assert_non_null(mid->data);
        } else {
            assert_memory_equal(nn_f32(x->grad), g0, N * sizeof *g0);
            assert_null(mid->grad);
            assert_null(mid->data);
            assert_non_null(h->grad); /* the root stays readable */
        }
        nn_ctx_free(ctx);
    }
    /* retain: 2 * DEPTH outputs and as many gradients, 4 * DEPTH buffers in
     * all; released: every output (the forward keeps them all) and a few
     * gradients (the tape is a chain: at most three live at once) */
    const size_t buf = N * sizeof(float);
    assert_true(peak[1] >= 4 * DEPTH * buf);
    assert_true(peak[0] <= (2 * DEPTH + 4) * buf + 4096 * DEPTH);
    free(dy);
    free(g0);
    nn_tensor_free(x);
}

/* relu in place after an op that never reads its output (add): the same
 * values and gradients as the out-of-place relu, bit for bit, and the
 * output shares its input's memory. */
static void test_relu_in_place(void **state)
{
    (void)state;
    nn_tensor *x = leaf(8, 1000);
    float dy[1000], g0[1000], y0[1000];
    for (int i = 0; i < 1000; i++) dy[i] = (float)(i % 5) - 2.0f;
    for (int in_place = 0; in_place < 2; in_place++) {
        nn_ctx *ctx = nn_ctx_new();
        assert_int_equal(nn_tensor_zero_grad(x), NN_OK);
        nn_tensor *a = nn_add(ctx, x, x);
        nn_tensor *y = in_place ? nn_relu_(ctx, a) : nn_relu(ctx, a);
        assert_non_null(y);
        assert_true((y->data == a->data) == (bool)in_place);
        nn_tensor *z = nn_add(ctx, y, x);
        assert_int_equal(nn_backward_with(ctx, z, dy), NN_OK);
        if (!in_place) {
            memcpy(g0, nn_f32(x->grad), sizeof g0);
            memcpy(y0, nn_f32(z), sizeof y0);
        } else {
            assert_memory_equal(nn_f32(x->grad), g0, sizeof g0);
            assert_memory_equal(nn_f32(z), y0, sizeof y0);
        }
        nn_ctx_free(ctx);
    }
    nn_tensor_free(x);
}

static void test_errors(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = leaf(7, 4);
    nn_tensor *y = nn_relu(ctx, x);
    assert_int_equal(nn_backward(ctx, y), NN_E_SHAPE); /* not a scalar */
    assert_non_null(strstr(nn_errmsg(), "one value"));
    assert_int_equal(nn_backward(ctx, NULL), NN_E_ARG);
    /* a failing op poisons the context; later ops return NULL */
    nn_tensor *z = tu_rand(8, -1, 1, 1, (int[]){5});
    assert_null(nn_add(ctx, x, z));
    assert_int_equal(nn_ctx_status(ctx), NN_E_SHAPE);
    assert_non_null(strstr(nn_ctx_errmsg(ctx), "add: shapes 4 and 5 differ"));
    assert_null(nn_relu(ctx, x));
    assert_null(nn_relu(ctx, NULL));
    assert_int_equal(nn_backward(ctx, y), NN_E_SHAPE);
    nn_ctx_reset(ctx);
    assert_int_equal(nn_ctx_status(ctx), NN_OK);
    assert_null(nn_relu(ctx, NULL));
    assert_int_equal(nn_ctx_status(ctx), NN_E_ARG);
    nn_tensor_free(z);
    nn_tensor_free(x);
    nn_ctx_free(ctx);
}

/* One error channel: the context's first failure reaches nn_errmsg() through
 * nn_ctx_status() even after other calls overwrote the thread's message, and
 * nn_backward on the poisoned graph reports that same first failure. */
static void test_ctx_error_is_nn_errmsg(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = leaf(7, 4), *z = tu_rand(8, -1, 1, 1, (int[]){5});
    assert_null(nn_add(ctx, x, z));
    nn_error(NN_E_IO, "something else since");
    nn_clear_error();
    assert_int_equal(nn_ctx_status(ctx), NN_E_SHAPE);
    assert_non_null(strstr(nn_errmsg(), "add: shapes 4 and 5 differ"));
    assert_string_equal(nn_errmsg(), nn_ctx_errmsg(ctx));
    nn_error(NN_E_IO, "something else since");
    assert_int_equal(nn_backward(ctx, x), NN_E_SHAPE);
    assert_non_null(strstr(nn_errmsg(), "add: shapes 4 and 5 differ"));
    /* no error: the thread's message is left alone */
    nn_ctx_reset(ctx);
    nn_error(NN_E_IO, "unrelated");
    assert_int_equal(nn_ctx_status(ctx), NN_OK);
    assert_string_equal(nn_errmsg(), "unrelated");
    assert_int_equal(nn_ctx_status(NULL), NN_E_ARG);
    nn_tensor_free(z);
    nn_tensor_free(x);
    nn_ctx_free(ctx);
}

/* The gradient-ready callback: each leaf once, when its gradient is final. */
typedef struct ready_log {
    nn_tensor *leaf[8];
    float grad0[8]; /* each one's first gradient element when notified */
    int n;
    nn_status fail; /* returned by the callback */
} ready_log;

static nn_status on_ready(nn_tensor *leaf, void *user)
{
    ready_log *log = user;
    if (log->n < 8) log->leaf[log->n] = leaf, log->grad0[log->n] = nn_f32(leaf->grad)[0];
    log->n++;
    return log->fail;
}

/* a feeds n0 and n2, b n1, c n3; d only an op off the path to the output.
 * The reverse walk finishes d (n5, skipped), c (n3), b (n1), a (n0). */
static nn_tensor *ready_graph(nn_ctx *ctx, nn_tensor **l)
{
    nn_tensor *z = nn_add(ctx, nn_add(ctx, nn_relu(ctx, l[0]), l[1]), l[0]);
    nn_tensor *out = nn_add(ctx, z, nn_relu(ctx, l[2]));
    (void)nn_relu(ctx, l[3]);
    return out;
}

static void test_grad_ready(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *l[4] = {leaf(11, 8), leaf(12, 8), leaf(13, 8), leaf(14, 8)};
    float ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    ready_log log = {.fail = NN_OK};
    nn_ctx_on_grad_ready(ctx, on_ready, &log);
    size_t allocs = 0;
    for (int step = 0; step < 3; step++) {
        nn_ctx_reset(ctx);
        for (int i = 0; i < 4; i++) assert_int_equal(nn_tensor_zero_grad(l[i]), NN_OK);
        log.n = 0;
        assert_int_equal(nn_backward_with(ctx, ready_graph(ctx, l), ones), NN_OK);
        assert_int_equal(log.n, 4);
        const int order[4] = {3, 2, 1, 0};
        for (int i = 0; i < 4; i++) {
            assert_ptr_equal(log.leaf[i], l[order[i]]);
            assert_float_equal(log.grad0[i], nn_f32(l[order[i]]->grad)[0], 0); /* final when notified */
        }
        assert_float_equal(nn_f32(l[0]->grad)[0], nn_f32(l[0])[0] > 0 ? 2.0f : 1.0f, 0);
        if (step == 1) allocs = nn_ctx_system_allocs(ctx);
    }
    assert_int_equal(nn_ctx_system_allocs(ctx), allocs); /* the steady state allocates nothing */
    /* a failing callback ends the pass with its status */
    nn_ctx_reset(ctx);
    log.n = 0, log.fail = NN_E_IO;
    nn_error(NN_E_IO, "ready: test failure");
    assert_int_equal(nn_backward_with(ctx, ready_graph(ctx, l), ones), NN_E_IO);
    assert_int_equal(log.n, 1);
    /* unset: no calls */
    nn_ctx_on_grad_ready(ctx, NULL, NULL);
    nn_ctx_reset(ctx);
    log.n = 0;
    assert_int_equal(nn_backward_with(ctx, ready_graph(ctx, l), ones), NN_OK);
    assert_int_equal(log.n, 0);
    for (int i = 0; i < 4; i++) nn_tensor_free(l[i]);
    nn_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fan_out_accumulates),
        cmocka_unit_test(test_long_chain),
        cmocka_unit_test(test_no_grad_mode),
        cmocka_unit_test(test_zeroing_and_accumulation_across_calls),
        cmocka_unit_test(test_steady_state_allocates_nothing),
        cmocka_unit_test(test_backward_releases_memory),
        cmocka_unit_test(test_relu_in_place),
        cmocka_unit_test(test_grad_ready),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_ctx_error_is_nn_errmsg),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
