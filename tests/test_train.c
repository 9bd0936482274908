/* End-to-end training through the `convnet` program: a small model learns
 * Fashion-MNIST well above chance, a run resumed from a checkpoint (at an epoch
 * boundary or mid-epoch) ends bitwise identical to a straight run, checkpoints
 * read back in an independent Python reader, and a corrupt checkpoint is a
 * clear error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/dataset.h"
#include "io/jpeg.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "tests/testutil.h"

static char g_bin[4096], g_src[4096], g_tmp[256];

static bool have_data(void)
{
    char p[512];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", NN_FMNIST_DEFAULT_DIR);
    return access(p, R_OK) == 0;
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("CONVNET_BUILD_ROOT"), *s = getenv("CONVNET_SOURCE_ROOT");
    snprintf(g_bin, sizeof g_bin, "%s/tools/convnet", b ? b : "build");
    snprintf(g_src, sizeof g_src, "%s", s ? s : ".");
    snprintf(g_tmp, sizeof g_tmp, "/tmp/convnet_test_train_XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_lenet_learns(void **state)
{
    (void)state;
    if (!have_data()) skip();
    char out[16384];
    int rc = tu_run(out, sizeof out,
                 "%s train --model lenet --limit 3000 --test-limit 1000 --epochs 1 --batch 32 --optim sgd --lr 0.05 "
                 "--no-augment --quiet --threads 2 --checkpoint-dir %s/lenet",
                 g_bin, g_tmp);
    if (rc != 0) fail_msg("train failed (%d):\n%s", rc, out);
    const char *p = strstr(out, "top-1 ");
    assert_non_null(p);
    double acc = atof(p + 6);
    /* 10 classes: chance is 10%; LeNet sees 3000 images once */
    if (acc < 60.0) fail_msg("test accuracy %.2f%% after one small epoch:\n%s", acc, out);
}

#define TINY "--size 64 --width 0.125 --fc 32 --limit 320 --test-limit 64 --batch 32 --quiet --threads 2 --seed 5"

/* Every tensor of two checkpoints equal bit for bit, and the same step. */
static void assert_same_checkpoint(const char *a, const char *b)
{
    nn_st_file *fa = NULL, *fb = NULL;
    if (nn_st_open(a, &fa) != NN_OK || nn_st_open(b, &fb) != NN_OK) fail_msg("%s", nn_errmsg());
    assert_int_equal(nn_st_count(fa), nn_st_count(fb));
    for (int i = 0; i < nn_st_count(fa); i++) {
        const nn_st_entry *ea = nn_st_entry_at(fa, i), *eb = nn_st_find(fb, ea->name);
        assert_non_null(eb);
        assert_int_equal(ea->nbytes, eb->nbytes);
        if (memcmp(ea->data, eb->data, ea->nbytes) != 0) fail_msg("tensor %s differs between %s and %s", ea->name, a, b);
    }
    assert_string_equal(nn_st_meta(fa, "train.step"), nn_st_meta(fb, "train.step"));
    assert_string_equal(nn_st_meta(fa, "train.dropout_offset"), nn_st_meta(fb, "train.dropout_offset"));
    nn_st_close(fa);
    nn_st_close(fb);
}

static void test_resume_is_exact(void **state)
{
    (void)state;
    if (!have_data()) skip();
    char out[16384], a[512], b[512], c[512];
    /* straight: 2 epochs of 10 steps */
    int rc = tu_run(out, sizeof out, "%s train " TINY " --epochs 2 --checkpoint-dir %s/a", g_bin, g_tmp);
    if (rc) fail_msg("%s", out);
    /* stopped mid-epoch 2 (step 13), then resumed */
    rc = tu_run(out, sizeof out, "%s train " TINY " --epochs 2 --stop-after 13 --checkpoint-dir %s/b", g_bin, g_tmp);
    if (rc) fail_msg("%s", out);
    assert_non_null(strstr(out, "stopped after 13 steps"));
    /* the same command line with --resume added: its recipe flags say what the checkpoint says */
    rc = tu_run(out, sizeof out, "%s train " TINY " --epochs 2 --resume %s/b --checkpoint-dir %s/b", g_bin, g_tmp, g_tmp);
    if (rc) fail_msg("%s", out);
    assert_non_null(strstr(out, "resumed from"));
    /* stopped at the epoch boundary (10 steps an epoch), then resumed with no
     * --epochs: the run's 2 stay (the cosine schedule spans them), not the default 3 */
    rc = tu_run(out, sizeof out, "%s train " TINY " --epochs 2 --stop-after 10 --checkpoint-dir %s/c", g_bin, g_tmp);
    if (rc) fail_msg("%s", out);
    rc = tu_run(out, sizeof out, "%s train --resume %s/c/last.safetensors --test-limit 64 --quiet --threads 2 --checkpoint-dir %s/c",
             g_bin, g_tmp, g_tmp);
    if (rc) fail_msg("%s", out);
    snprintf(a, sizeof a, "%s/a/last.safetensors", g_tmp);
    snprintf(b, sizeof b, "%s/b/last.safetensors", g_tmp);
    snprintf(c, sizeof c, "%s/c/last.safetensors", g_tmp);
    assert_same_checkpoint(a, b);
    assert_same_checkpoint(a, c);

    /* the checkpoint in an independent reader, with the PyTorch-style names */
    if (tu_run(NULL, 0, "python3 -c 'import json, struct'") == 0) {
        static char py[1 << 16];
        rc = tu_run(py, sizeof py, "python3 %s/tests/st_read.py %s", g_src, a);
        if (rc) fail_msg("st_read.py: %s", py);
        const char *names[] = {"tensor stage1.0.weight F32 16x1x11x11", "tensor stage2.0.bias F32",
                               "tensor classifier.2.weight F32 32x", "tensor classifier.7.bias F32 10 ",
                               "tensor optim.stage1.0.weight.v F32", "meta model.arch=alexnet", "meta train.epoch=2"};
        for (size_t i = 0; i < sizeof names / sizeof *names; i++)
            if (!strstr(py, names[i])) fail_msg("'%s' missing from:\n%s", names[i], py);
    }
}

/* Flags the checkpoint fixes, given other values with --resume, are refused
 * (they would be ignored), naming them; so is an --epochs that shortens the
 * run; a finished run has nothing to do. The checkpoint is left as it was. */
static void test_resume_refuses_another_recipe(void **state)
{
    (void)state;
    if (!have_data()) skip();
    char out[16384], ck[512];
    snprintf(ck, sizeof ck, "%s/b/last.safetensors", g_tmp);
    struct stat sb;
    if (stat(ck, &sb) != 0) skip(); /* needs the resume test's run */
    size_t n0;
    uint8_t *before = tu_read_all(ck, &n0);
    int rc = tu_run(out, sizeof out, "%s train --resume %s --batch 16 --lr=0.5 --seed 5 --data /nonexistent", g_bin, ck);
    if (rc != 2 || !strstr(out, "--batch, --lr differ from the run in ") || !strstr(out, "--init-from FILE"))
        fail_msg("another batch and rate with --resume: exit %d:\n%s", rc, out);
    rc = tu_run(out, sizeof out, "%s train --resume %s --model lenet", g_bin, ck);
    if (rc != 2 || !strstr(out, "--model differs from the run in ")) fail_msg("another model: exit %d:\n%s", rc, out);
    rc = tu_run(out, sizeof out, "%s train --resume %s --epochs 1", g_bin, ck);
    if (rc != 2 || !strstr(out, "--epochs 1 is fewer than the 2 of the run")) fail_msg("--epochs 1: exit %d:\n%s", rc, out);
    /* the run is over: nothing to do, and nothing written */
    rc = tu_run(out, sizeof out, "%s train " TINY " --epochs 2 --resume %s", g_bin, ck);
    if (rc != 0 || !strstr(out, "has finished its 2 epochs: nothing to do")) fail_msg("a finished run: exit %d:\n%s", rc, out);
    size_t n1;
    uint8_t *after = tu_read_all(ck, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(before);
    free(after);
}

static void test_corrupt_checkpoint(void **state)
{
    (void)state;
    if (!have_data()) skip();
    char out[16384], src[512], bad[512];
    snprintf(src, sizeof src, "%s/a/last.safetensors", g_tmp);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", g_tmp);
    struct stat sb;
    if (stat(src, &sb) != 0) skip(); /* needs the resume test's run */
    /* truncated by a quarter */
    int rc = tu_run(NULL, 0, "head -c %lld %s > %s", (long long)(sb.st_size * 3 / 4), src, bad);
    assert_int_equal(rc, 0);
    rc = tu_run(out, sizeof out, "%s train --resume %s --quiet --checkpoint-dir %s/d", g_bin, bad, g_tmp);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, bad));
    rc = tu_run(out, sizeof out, "%s eval --checkpoint %s", g_bin, bad);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, bad));
    /* nothing was written for the failed resume */
    snprintf(bad, sizeof bad, "%s/d/last.safetensors", g_tmp);
    assert_int_not_equal(access(bad, F_OK), 0);
}

static void test_image_folder_train_and_ten_crop(void **state)
{
    (void)state;
    char out[16384], dir[512];
    snprintf(dir, sizeof dir, "%s/folder", g_tmp);
    /* two colour classes, mostly JPEG, and a broken file the loader must name and skip */
    tu_make_colour_folder(dir, (tu_colour_class[])TU_BLUE_RED, 2, 32, 8, 4, 60);
    char broken[1024];
    snprintf(broken, sizeof broken, "echo 'not a picture' > %s/train/red/broken.png", dir);
    assert_int_equal(system(broken), 0);
    int rc = tu_run(out, sizeof out,
                 "%s train --data %s --size 64 --width 0.125 --fc 32 --batch 16 --epochs 3 --quiet --threads 2 "
                 "--checkpoint-dir %s/fck",
                 g_bin, dir, g_tmp);
    if (rc) fail_msg("train on a folder failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "2 classes"));
    assert_non_null(strstr(out, "broken.png")); /* reported by name, skipped */
    rc = tu_run(out, sizeof out, "%s eval --checkpoint %s/fck/last.safetensors --data %s --ten-crop", g_bin, g_tmp, dir);
    if (rc) fail_msg("eval --ten-crop failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "10 views"));
    assert_non_null(strstr(out, "red"));
    const char *p = strstr(out, "top-1 accuracy: ");
    assert_non_null(p);
    double acc = atof(p + 16);
    if (acc < 0.9) fail_msg("two colour classes, 10-crop top-1 %.3f:\n%s", acc, out);
    /* --ten-crop on Fashion-MNIST is a usage error */
    assert_int_equal(tu_run(out, sizeof out, "%s eval --checkpoint %s/fck/last.safetensors --ten-crop", g_bin, g_tmp), 2);
}

static void test_bad_flags(void **state)
{
    (void)state;
    char out[4096];
    assert_int_equal(tu_run(out, sizeof out, "%s train --epochs 0", g_bin), 2);
    assert_non_null(strstr(out, "--epochs"));
    assert_int_equal(tu_run(out, sizeof out, "%s train --batch x", g_bin), 2);
    assert_int_equal(tu_run(out, sizeof out, "%s train --optim lbfgs", g_bin), 2);
    assert_non_null(strstr(out, "lbfgs"));
    assert_int_equal(tu_run(out, sizeof out, "%s train --size 32", g_bin), 2);
    assert_non_null(strstr(out, "stage"));
    assert_int_equal(tu_run(out, sizeof out, "%s train --device tpu", g_bin), 2);
    /* AlexNet's flags with LeNet: refused, not ignored (train and bench alike) */
    assert_int_equal(tu_run(out, sizeof out, "%s train --model lenet --fc 100 --dropout 0.1", g_bin), 2);
    assert_non_null(strstr(out, "--fc, --dropout: AlexNet's, not LeNet's"));
    assert_int_equal(tu_run(out, sizeof out, "%s bench --model lenet --width 0.5", g_bin), 2);
    assert_non_null(strstr(out, "--width: AlexNet's, not LeNet's"));
    assert_int_equal(tu_run(out, sizeof out, "%s train --help", g_bin), 0);
    assert_non_null(strstr(out, "--resume"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lenet_learns),
        cmocka_unit_test(test_resume_is_exact),
        cmocka_unit_test(test_resume_refuses_another_recipe),
        cmocka_unit_test(test_corrupt_checkpoint),
        cmocka_unit_test(test_image_folder_train_and_ten_crop),
        cmocka_unit_test(test_bad_flags),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
