/* The README's example network, compiled from its one copy,
 * examples/readme_network.c (the program .ci/install_check.sh also builds
 * against the installed library), and run: it must train. The test also
 * checks that README.md still shows exactly that code. */
#include <string.h>

#include "tests/testutil.h"

#define main readme_network_main
#include "examples/readme_network.c"
#undef main

static void test_example_trains(void **state)
{
    (void)state;
    assert_int_equal(readme_network_main(), 0); /* 0: the loss fell by half in 30 steps */
}

/* An error surfaces as a status: labels of the wrong length. */
static void test_example_reports_errors(void **state)
{
    (void)state;
    nn_rng rng = nn_rng_make(3);
    nn_tensor *x, *y, *y3;
    nn_params ps = {0};
    assert_int_equal(make_data(&x, &y, &rng), NN_OK);
    assert_int_equal(make_params(&ps, &rng), NN_OK);
    assert_int_equal(nn_tensor_from(&y3, NN_I32, NN_CPU, 1, (int[]){3}, (int32_t[]){0, 1, 0}), NN_OK);
    assert_int_equal(train_steps(x, y3, &ps, 1), NN_E_SHAPE);
    assert_non_null(strstr(nn_errmsg(), "labels 3 do not match logits 8x2"));
    for (int i = 0; i < ps.n; i++) nn_tensor_free(ps.p[i].t);
    nn_params_clear(&ps);
    nn_tensor_free(x);
    nn_tensor_free(y);
    nn_tensor_free(y3);
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
    char *text = readme(root), *code = readme_block(root, "examples/readme_network.c");
    if (!strstr(text, code)) fail_msg("README.md no longer shows the code of examples/readme_network.c");
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
        cmocka_unit_test(test_example_reports_errors),
        cmocka_unit_test(test_readme_shows_this_code),
        cmocka_unit_test(test_readme_shows_train_lenet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
