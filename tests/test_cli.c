/* The convnet program end to end: runs the built binary
 * ($CONVNET_BUILD_ROOT/tools/convnet) through the shell and checks exit
 * statuses and output: summary's parameter counts, gradcheck, --help, and
 * eval/predict/filters on a small LeNet checkpoint this test writes. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "io/dataset.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "ops/registry.h"

static char bin[4096];
static char dir[] = "/tmp/convnet-cli-XXXXXX";
static char ckpt[4200];

static void path_in_dir(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* Runs `convnet ARGS 2>&1`; returns the exit status (-1 if it did not exit)
 * and the output in *out (malloc'd, NUL-terminated; free it). */
static int run(char **out, const char *fmt, ...)
{
    char args[8192], cmd[16384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 2) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    buf[len] = '\0';
    int st = pclose(p);
    *out = buf;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Asserts the exit status and that the output contains each needle (NULL-terminated list). */
static void expect(int want, const char *args, ...)
{
    char *out;
    int got = run(&out, "%s", args);
    if (got != want) fail_msg("convnet %s: exit status %d, expected %d; output:\n%s", args, got, want, out);
    va_list ap;
    va_start(ap, args);
    for (const char *s; (s = va_arg(ap, const char *)) != NULL;)
        if (!strstr(out, s)) fail_msg("convnet %s: output lacks '%s':\n%s", args, s, out);
    va_end(ap);
    free(out);
}

/* A LeNet checkpoint (1x28x28 -> 10, random He weights) with a training state. */
static int setup(void **state)
{
    (void)state;
    const char *root = getenv("CONVNET_BUILD_ROOT");
    if (!root || !mkdtemp(dir)) return -1;
    /* OpenMP threads that spin at barriers crawl when the machine is busier
     * than its cores (parallel test runs): eval took 10 s instead of 1 s */
    setenv("OMP_WAIT_POLICY", "passive", 0);
    snprintf(bin, sizeof bin, "%s/tools/convnet", root);
    path_in_dir(ckpt, sizeof ckpt, "lenet.safetensors");
    nn_model_config cfg = nn_lenet_config();
    nn_seq seq;
    nn_rng rng = nn_rng_make(42);
    if (nn_model_build(&seq, &cfg, NN_CPU, &rng) != NN_OK) return -1;
    nn_train_state st;
    memset(&st, 0, sizeof st);
    st.mean = 0.2860f; /* Fashion-MNIST's training pixels */
    st.std = 0.3530f;
    st.batch_size = 128;
    st.sched.kind = NN_SCHED_CONST;
    st.optim.kind = NN_OPT_SGD;
    nn_status s = nn_checkpoint_save(ckpt, &cfg, &seq, NULL, &st);
    nn_seq_free(&seq);
    return s == NN_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"lenet.safetensors", "x_good.safetensors", "x_bad.safetensors", "y.safetensors",
                           "y_bad.safetensors", "conv1.png", "weights_only.safetensors"};
    char p[4200];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        path_in_dir(p, sizeof p, names[i]);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}

static bool exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void test_summary_alexnet(void **state)
{
    (void)state;
    expect(0, "summary", "62,378,344", "1.135 G MAC", "stage1.0", "classifier.7", NULL);
    /* the two-tower split: conv2, conv4, conv5 see half their inputs, saving
     * 307,200 + 663,552 + 442,368 weights */
    expect(0, "summary --groups 2", "60,965,224", "0.724 G MAC", NULL);
    expect(0, "summary --model lenet", "61,706", NULL);
    /* 32x32 shrinks to 1x1 before the last pooling layer, which names itself */
    expect(2, "summary --size 32", "stage5.2", NULL);
    expect(2, "summary --groups 3", "groups", NULL);
    expect(2, "summary --size nope", "--size", NULL);
    expect(2, "summary --bogus", "--bogus", NULL);
}

static void test_gradcheck_all_ops(void **state)
{
    (void)state;
    /* every registered op, so a new op needs no edit here */
    char all[64];
    snprintf(all, sizeof all, "%d of %d ops passed", nn_op_count(), nn_op_count());
    assert_true(nn_op_count() >= 7);
    expect(0, "gradcheck", "conv2d", "relu", "lrn", "maxpool2d", "dropout", "linear", "softmax_xent", all,
           NULL);
    expect(0, "gradcheck conv2d --seed 9", "1 of 1 ops passed", NULL);
    expect(2, "gradcheck bogus", "bogus", NULL);
    /* a tolerance no float32 kernel meets: the command must be able to fail */
    expect(1, "gradcheck conv2d --threshold 1e-9", "FAIL", NULL);
}

static void test_help(void **state)
{
    (void)state;
    const char *cmds[] = {"summary", "gradcheck", "eval", "predict", "filters"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char a[64];
        snprintf(a, sizeof a, "%s --help", cmds[i]);
        expect(0, a, "usage: convnet", NULL);
    }
}

static void test_eval_missing_checkpoint(void **state)
{
    (void)state;
    expect(1, "eval --checkpoint /nonexistent/ckpt.safetensors", "/nonexistent/ckpt.safetensors", NULL);
    expect(2, "eval", "--checkpoint", NULL);
}

static void test_eval_lenet(void **state)
{
    (void)state;
    if (!exists(NN_FMNIST_DEFAULT_DIR "/t10k-images-idx3-ubyte.gz")) skip();
    char a[8192];
    /* random weights: the numbers mean nothing, the report's layout does
     * (each class of the test set has 1000 images) */
    snprintf(a, sizeof a, "eval --checkpoint %s --batch 500", ckpt);
    expect(0, a, "top-1 accuracy", "top-5 accuracy", "/10000)", "Ankle boot", "/1000)", "confusion matrix", NULL);
}

/* Writes an input tensor "input" of the given shape. */
static void write_input(const char *path, int n, int c, int h, int w)
{
    size_t numel = (size_t)n * c * h * w;
    float *x = malloc(numel * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < numel; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    nn_st_writer *wr = NULL;
    int64_t shape[4] = {n, c, h, w};
    assert_int_equal(nn_st_writer_new(&wr), NN_OK);
    assert_int_equal(nn_st_writer_add(wr, "input", NN_ST_F32, 4, shape, x), NN_OK);
    assert_int_equal(nn_st_write(wr, path), NN_OK);
    nn_st_writer_free(wr);
    free(x);
}

static void test_predict(void **state)
{
    (void)state;
    char good[4200], bad[4200], y[4200], ybad[4200], a[16384];
    path_in_dir(good, sizeof good, "x_good.safetensors");
    path_in_dir(bad, sizeof bad, "x_bad.safetensors");
    path_in_dir(y, sizeof y, "y.safetensors");
    path_in_dir(ybad, sizeof ybad, "y_bad.safetensors");
    write_input(good, 3, 1, 28, 28);
    write_input(bad, 2, 3, 32, 32);

    snprintf(a, sizeof a, "predict --checkpoint %s --input %s --output %s", ckpt, bad, ybad);
    expect(1, a, "2, 3, 32, 32", "(N, 1, 28, 28)", NULL);
    assert_false(exists(ybad));

    snprintf(a, sizeof a, "predict --checkpoint %s --input %s --output %s", ckpt, good, good);
    expect(2, a, "input", NULL);

    /* the other mode's options are refused, not ignored */
    snprintf(a, sizeof a, "predict --checkpoint %s --input %s --output %s --top 3 --ten-crop", ckpt, good, y);
    expect(2, a, "--top, --ten-crop: for photos, not for tensor mode", NULL);
    snprintf(a, sizeof a, "predict --checkpoint %s --batch 4 %s", ckpt, good);
    expect(2, a, "--batch: for tensor mode", NULL);
    assert_false(exists(y));

    snprintf(a, sizeof a, "predict --checkpoint %s --input %s --output %s --batch 2", ckpt, good, y);
    expect(0, a, NULL);
    nn_st_file *f = NULL;
    assert_int_equal(nn_st_open(y, &f), NN_OK);
    const nn_st_entry *e = nn_st_find(f, "logits");
    assert_non_null(e);
    assert_int_equal(e->dtype, NN_ST_F32);
    assert_int_equal(e->ndim, 2);
    assert_int_equal(e->shape[0], 3);
    assert_int_equal(e->shape[1], 10);
    /* the same logits as the library's own forward pass, batched differently */
    nn_model_config cfg;
    nn_seq seq;
    nn_rng rng = nn_rng_make(1);
    assert_int_equal(nn_checkpoint_read_config(ckpt, &cfg, NULL), NN_OK);
    assert_int_equal(nn_model_build(&seq, &cfg, NN_CPU, &rng), NN_OK);
    assert_int_equal(nn_checkpoint_load(ckpt, &seq, NULL), NN_OK);
    nn_st_file *fx = NULL;
    assert_int_equal(nn_st_open(good, &fx), NN_OK);
    nn_tensor *x = NULL;
    assert_int_equal(nn_tensor_new4(&x, NN_F32, NN_CPU, 3, 1, 28, 28), NN_OK);
    assert_int_equal(nn_st_read_f32(fx, "input", x), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    nn_ctx_set_grad(ctx, false);
    nn_ctx_set_training(ctx, false);
    nn_tensor *out = nn_seq_forward(ctx, &seq, x);
    assert_non_null(out);
    const float *got = e->data;
    for (int i = 0; i < 30; i++) {
        double ref = nn_f32(out)[i];
        /* the same kernels on a different batch split: float32 rounding only */
        assert_true(fabs((double)got[i] - ref) <= 1e-4 * (1.0 + fabs(ref)));
    }
    nn_ctx_free(ctx);
    nn_tensor_free(x);
    nn_seq_free(&seq);
    nn_st_close(fx);
    nn_st_close(f);
}

static void test_filters(void **state)
{
    (void)state;
    char png[4200], a[16384];
    path_in_dir(png, sizeof png, "conv1.png");
    snprintf(a, sizeof a, "filters --checkpoint %s --out %s --scale 3", ckpt, png);
    expect(0, a, "features.0", NULL);
    nn_image img = {0};
    assert_int_equal(nn_png_read(png, 0, &img), NN_OK);
    /* LeNet's conv1: 6 gray 5x5 kernels in one row, each 15x15, with 1-pixel
     * separators and border: 6*15 + 7 wide, 15 + 2 high */
    assert_int_equal(img.w, 6 * 15 + 7);
    assert_int_equal(img.h, 15 + 2);
    /* each kernel is stretched to [0, 255]: both ends appear, and the
     * separator (white) frames the picture */
    bool has0 = false, has255 = false;
    int ch = img.channels;
    for (int i = 0; i < img.w * img.h * ch; i++) {
        has0 |= img.data[i] == 0;
        has255 |= img.data[i] == 255;
    }
    assert_true(has0 && has255);
    for (int k = 0; k < ch; k++) assert_int_equal(img.data[k], 255);
    nn_image_free(&img);

    snprintf(a, sizeof a, "filters --checkpoint %s --out %s --scale 0", ckpt, png);
    expect(2, a, "--scale", NULL);
    snprintf(a, sizeof a, "filters --checkpoint /nonexistent.safetensors --out %s", png);
    expect(1, a, "/nonexistent.safetensors", NULL);
}

/* A CUDA module that exists where the program looks first (../cuda/ beside
 * its bin/) but does not load is reported with the loader's reason, naming
 * it, instead of being passed over for the build tree's module (which would
 * run other code and hide why this one failed). */
static void test_broken_cuda_module(void **state)
{
    (void)state;
#if !NN_HAVE_CUDA
    print_message("built without the CUDA backend: no module to look for: skipped\n");
    skip();
#else
    char cmd[sizeof bin + 2048], moved[256], saved[sizeof bin];
    path_in_dir(moved, sizeof moved, "moved");
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/bin' '%s/cuda' && cp '%s' '%s/bin/convnet' && : > '%s/cuda/%s'", moved,
             moved, bin, moved, moved, NN_CUDA_MODULE_NAME);
    assert_int_equal(system(cmd), 0);
    memcpy(saved, bin, sizeof bin);
    snprintf(bin, sizeof bin, "%s/bin/convnet", moved);
    unsetenv("CONVNET_CUDA_MODULE");
    char args[512], where[512];
    snprintf(args, sizeof args, "train --device cuda --limit 8 --epochs 1 --quiet --checkpoint-dir '%s/ck'", moved);
    snprintf(where, sizeof where, "%s/bin/../cuda/%s: file too short", moved, NN_CUDA_MODULE_NAME);
    expect(1, args, "could not be loaded", where, NULL);
    memcpy(bin, saved, sizeof bin);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", moved);
    assert_int_equal(system(cmd), 0);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary_alexnet),
        cmocka_unit_test(test_gradcheck_all_ops),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_eval_missing_checkpoint),
        cmocka_unit_test(test_eval_lenet),
        cmocka_unit_test(test_predict),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_broken_cuda_module),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
