/* The README's example network, compiled and run: it must train. The test
 * also checks that README.md and examples/readme_network.c still show exactly
 * this code, so the three cannot drift apart. */
#include <string.h>

#include "core/params.h"
#include "tests/testutil.h"

/* ---- begin README example ---- */
#include "core/graph.h"
#include "ops/ops.h"
#include "optim/optim.h"

nn_status train_steps(nn_tensor *x, nn_tensor *y, nn_params *ps, int steps)
{
    nn_tensor *w1 = nn_params_find(ps, "conv.weight"), *b1 = nn_params_find(ps, "conv.bias");
    nn_tensor *w2 = nn_params_find(ps, "fc.weight"), *b2 = nn_params_find(ps, "fc.bias");
    nn_optim_config cfg = nn_optim_paper_sgd();          /* lr 0.01, momentum 0.9, wd 5e-4 */
    nn_optim *opt;
    NN_TRY(nn_optim_new(&opt, &cfg, ps));
    nn_ctx *ctx = nn_ctx_new();
    nn_status s = NN_OK;
    for (int i = 0; i < steps && s == NN_OK; i++) {
        nn_ctx_reset(ctx);                               /* reuses last step's memory */
        nn_tensor *h = nn_conv2d(ctx, x, w1, b1, (nn_conv2d_params){.pad_h = 2, .pad_w = 2});
        h = nn_lrn(ctx, nn_relu(ctx, h), NN_LRN_PAPER);
        h = nn_maxpool2d(ctx, h, (nn_pool_params){.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2});
        h = nn_linear(ctx, nn_flatten(ctx, h), w2, b2);
        nn_tensor *loss = nn_softmax_xent(ctx, h, y);
        if (!loss) s = nn_ctx_status(ctx);               /* nn_errmsg() says why */
        if (s == NN_OK) s = nn_backward(ctx, loss);
        if (s == NN_OK) s = nn_optim_step(opt);
        if (s == NN_OK) s = nn_params_zero_grad(ps);
    }
    nn_ctx_free(ctx);
    nn_optim_free(opt);
    return s;
}
/* ---- end README example ---- */

static void test_example_trains(void **state)
{
    (void)state;
    enum { N = 8 };
    nn_tensor *x = tu_rand4(1, N, 1, 28, 28);
    int32_t lab[N];
    for (int i = 0; i < N; i++) {
        lab[i] = i % 2;
        for (int j = 0; j < 28 * 28; j++) nn_f32(x)[i * 28 * 28 + j] += 0.5f * (float)lab[i];
    }
    nn_tensor *y;
    assert_int_equal(nn_tensor_from(&y, NN_I32, NN_CPU, 1, (int[]){N}, lab), NN_OK);
    nn_tensor *w1, *b1, *w2, *b2;
    nn_rng rng = nn_rng_make(3);
    assert_int_equal(nn_tensor_new4(&w1, NN_F32, NN_CPU, 4, 1, 5, 5), NN_OK);
    assert_int_equal(nn_tensor_new(&b1, NN_F32, NN_CPU, 1, (int[]){4}), NN_OK);
    assert_int_equal(nn_tensor_new(&w2, NN_F32, NN_CPU, 2, (int[]){2, 4 * 13 * 13}), NN_OK);
    assert_int_equal(nn_tensor_new(&b2, NN_F32, NN_CPU, 1, (int[]){2}), NN_OK);
    assert_int_equal(nn_tensor_normal(w1, &rng, 0, 0.2f), NN_OK);
    assert_int_equal(nn_tensor_normal(w2, &rng, 0, 0.02f), NN_OK);
    nn_params ps = {0};
    nn_tensor *all[4] = {w1, b1, w2, b2};
    const char *names[4] = {"conv.weight", "conv.bias", "fc.weight", "fc.bias"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(nn_tensor_require_grad(all[i]), NN_OK);
        assert_int_equal(nn_params_add(&ps, names[i], all[i], i % 2), NN_OK);
    }
    /* loss before and after 30 steps */
    nn_ctx *ctx = nn_ctx_new();
    float before, after;
    for (int pass = 0; pass < 2; pass++) {
        nn_ctx_reset(ctx);
        nn_tensor *h = nn_conv2d(ctx, x, w1, b1, (nn_conv2d_params){.pad_h = 2, .pad_w = 2});
        h = nn_maxpool2d(ctx, nn_lrn(ctx, nn_relu(ctx, h), NN_LRN_PAPER),
                         (nn_pool_params){.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2});
        nn_tensor *loss = nn_softmax_xent(ctx, nn_linear(ctx, nn_flatten(ctx, h), w2, b2), y);
        assert_non_null(loss);
        (pass ? &after : &before)[0] = nn_f32(loss)[0];
        if (!pass) assert_int_equal(train_steps(x, y, &ps, 30), NN_OK);
    }
    assert_true(after < 0.5f * before);
    /* an error surfaces as a status: labels of the wrong length */
    nn_tensor *y3;
    assert_int_equal(nn_tensor_from(&y3, NN_I32, NN_CPU, 1, (int[]){3}, lab), NN_OK);
    assert_int_equal(train_steps(x, y3, &ps, 1), NN_E_SHAPE);
    nn_tensor_free(y3);
    nn_ctx_free(ctx);
    nn_params_clear(&ps);
    for (int i = 0; i < 4; i++) nn_tensor_free(all[i]);
    nn_tensor_free(x);
    nn_tensor_free(y);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[1 << 17];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return strdup(buf);
}

/* The code between a source file's README-example markers (malloc'd). */
static char *readme_block(const char *root, const char *rel)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    char *src = slurp(p);
    assert_non_null(src);
    const char *begin = "/* ---- begin README example ---- */\n";
    const char *a = strstr(src, begin), *b = strstr(src, "/* ---- end README example");
    if (!a || !b) fail_msg("%s lost its README example markers", rel);
    a += strlen(begin);
    char *code = strndup(a, (size_t)(b - a));
    free(src);
    return code;
}

static char *readme(const char *root)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/README.md", root);
    char *text = slurp(p);
    assert_non_null(text);
    return text;
}

static void test_readme_shows_this_code(void **state)
{
    (void)state;
    const char *root = getenv("CONVNET_SOURCE_ROOT");
    if (!root) skip();
    char *text = readme(root), *code = readme_block(root, "tests/test_example.c");
    if (!strstr(text, code)) fail_msg("README.md no longer shows the code of tests/test_example.c");
    /* and the standalone program .ci/install_check.sh builds against the
     * installed library is the same code */
    char *example = readme_block(root, "examples/readme_network.c");
    if (strcmp(example, code) != 0) fail_msg("examples/readme_network.c no longer holds the README's code");
    free(example);
    free(code);
    free(text);
}

/* The second example: the trainer's heart in examples/train_lenet.c (that
 * program is built and run as the test example_train_lenet). */
static void test_readme_shows_train_lenet(void **state)
{
    (void)state;
    const char *root = getenv("CONVNET_SOURCE_ROOT");
    if (!root) skip();
    char *text = readme(root), *code = readme_block(root, "examples/train_lenet.c");
    assert_non_null(strstr(code, "nn_trainer_run"));
    if (!strstr(text, code)) fail_msg("README.md no longer shows the code of examples/train_lenet.c");
    free(code);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example_trains),
        cmocka_unit_test(test_readme_shows_this_code),
        cmocka_unit_test(test_readme_shows_train_lenet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
