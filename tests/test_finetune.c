/* Fine-tuning and the training record through the `convnet` program:
 * `train --init-from` a 10-class checkpoint onto a 4-class image folder
 * (the last layer freshly initialized and named, every other tensor taken
 * from the file), metrics.jsonl lines that all parse and continue after a
 * resume (epochs in order, none twice, lines past the checkpoint dropped),
 * curves.svg as well-formed XML, and predict on the folder-trained
 * checkpoint with no normalization flags. No data set needed. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/rng.h"
#include "io/jpeg.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "models/model.h"
#include "tests/testutil.h"

static char g_bin[4096], g_src[4096], g_tmp[256], g_data[512], g_src_ck[512];

#define CLASSES 4
static const tu_colour_class cls[CLASSES] = {
    {"blue", {20, 60, 200}}, {"gray", {128, 128, 128}}, {"green", {30, 190, 40}}, {"red", {210, 40, 30}}};

/* Four colour classes, JPEG and PNG, odd sizes, noisy. */
/* A 10-class RGB AlexNet checkpoint (random weights: what matters is which tensors carry over). */
static void make_source_checkpoint(const char *path)
{
    nn_model_config cfg = nn_alexnet_config();
    cfg.in_size = 64, cfg.width = 0.125f, cfg.fc = 32, cfg.classes = 10, cfg.dropout = 0, cfg.init = NN_INIT_HE;
    nn_seq seq;
    nn_rng r = nn_rng_make(77);
    assert_int_equal(nn_model_build(&seq, &cfg, NN_CPU, &r), NN_OK);
    assert_int_equal(nn_checkpoint_save(path, &cfg, &seq, NULL, NULL), NN_OK);
    nn_seq_free(&seq);
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("CONVNET_BUILD_ROOT"), *s = getenv("CONVNET_SOURCE_ROOT");
    snprintf(g_bin, sizeof g_bin, "%s/tools/convnet", b ? b : "build");
    snprintf(g_src, sizeof g_src, "%s", s ? s : ".");
    snprintf(g_tmp, sizeof g_tmp, "/tmp/convnet_test_finetune_XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    snprintf(g_data, sizeof g_data, "%s/colours", g_tmp);
    snprintf(g_src_ck, sizeof g_src_ck, "%s/ten.safetensors", g_tmp);
    tu_make_colour_folder(g_data, cls, CLASSES, 16, 4, 3, 50);
    make_source_checkpoint(g_src_ck);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

#define FT "--batch 16 --quiet --threads 2 --seed 3 --no-augment"

/* Same bytes for tensor name in two files. */
static bool same_tensor(const char *a, const char *b, const char *name)
{
    nn_st_file *fa = NULL, *fb = NULL;
    if (nn_st_open(a, &fa) != NN_OK || nn_st_open(b, &fb) != NN_OK) fail_msg("%s", nn_errmsg());
    const nn_st_entry *ea = nn_st_find(fa, name), *eb = nn_st_find(fb, name);
    assert_non_null(ea);
    assert_non_null(eb);
    bool same = ea->nbytes == eb->nbytes && memcmp(ea->data, eb->data, ea->nbytes) == 0;
    nn_st_close(fa);
    nn_st_close(fb);
    return same;
}

/* The last layer is replaced and named; the rest comes from the file. A
 * learning rate of 1e-30 leaves the loaded weights' bits as they were. */
static void test_init_from_replaces_last_layer(void **state)
{
    (void)state;
    char out[16384], ck[600];
    int rc = tu_run(out, sizeof out, "%s train --data %s --init-from %s --epochs 1 --lr 1e-30 " FT " --checkpoint-dir %s/still",
                 g_bin, g_data, g_src_ck, g_tmp);
    if (rc) fail_msg("train --init-from failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "classifier.7.weight: shape (10, 32) in the file, 4x32 in the model"));
    assert_non_null(strstr(out, "classifier.7.bias: shape (10) in the file, 4 in the model"));
    assert_non_null(strstr(out, "initialized 14 of 16 parameter tensors"));
    assert_non_null(strstr(out, "4 classes"));
    snprintf(ck, sizeof ck, "%s/still/last.safetensors", g_tmp);
    assert_true(same_tensor(g_src_ck, ck, "stage1.0.weight"));
    assert_true(same_tensor(g_src_ck, ck, "classifier.5.weight"));
    /* with --resume: one or the other */
    rc = tu_run(out, sizeof out, "%s train --data %s --init-from %s --resume %s", g_bin, g_data, g_src_ck, ck);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "--init-from"));
    /* the architecture is the file's: flags that say otherwise are refused, not ignored */
    rc = tu_run(out, sizeof out, "%s train --data %s --init-from %s --fc 4096 --model alexnet " FT " --checkpoint-dir %s/y",
                g_bin, g_data, g_src_ck, g_tmp);
    if (rc != 2 || !strstr(out, "--fc differs from the model in ")) fail_msg("--init-from with --fc 4096: exit %d:\n%s", rc, out);
    /* a file nothing of which fits */
    rc = tu_run(out, sizeof out, "%s train --data %s --init-from %s/colours/train/red/001.jpg " FT " --checkpoint-dir %s/x",
             g_bin, g_data, g_tmp, g_tmp);
    assert_int_not_equal(rc, 0);
}

/* Every line a JSON object with the keys of metrics.h; epoch lines of each
 * split for epochs 1..epochs in order, once each; step lines' steps strictly
 * increasing; *steps: the step lines. */
static void check_metrics(const char *path, int epochs, int *steps)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[1024];
    int next[2] = {1, 1};
    long long last_step = 0;
    *steps = 0;
    while (fgets(line, sizeof line, fp)) {
        cJSON *o = cJSON_Parse(line);
        if (!cJSON_IsObject(o)) fail_msg("%s: not a JSON object: %s", path, line);
        const char *keys[] = {"kind", "split", "epoch", "step", "loss", "top1", "top5", "lr", "images_per_s", "elapsed_s"};
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
            if (!cJSON_GetObjectItemCaseSensitive(o, keys[k])) fail_msg("%s: no '%s' in %s", path, keys[k], line);
        const char *kind = cJSON_GetObjectItemCaseSensitive(o, "kind")->valuestring;
        int test = strcmp(cJSON_GetObjectItemCaseSensitive(o, "split")->valuestring, "test") == 0;
        int epoch = cJSON_GetObjectItemCaseSensitive(o, "epoch")->valueint;
        long long step = (long long)cJSON_GetObjectItemCaseSensitive(o, "step")->valuedouble;
        if (strcmp(kind, "epoch") == 0) {
            if (epoch != next[test]) fail_msg("%s: epoch %d where %d was due: %s", path, epoch, next[test], line);
            next[test]++;
            assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "loss")));
            if (test) assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "top5")));
        } else {
            if (step <= last_step) fail_msg("%s: step %lld after step %lld: %s", path, step, last_step, line);
            last_step = step;
            (*steps)++;
        }
        cJSON_Delete(o);
    }
    fclose(fp);
    assert_int_equal(next[0], epochs + 1);
    assert_int_equal(next[1], epochs + 1);
}

static void check_svg(const char *path)
{
    char out[4096];
    int rc = tu_run(out, sizeof out, "python3 -c 'import sys, xml.etree.ElementTree as E; "
                                  "r = E.parse(sys.argv[1]).getroot(); assert r.tag.endswith(\"svg\"), r.tag' %s", path);
    if (rc) fail_msg("%s is not well-formed SVG:\n%s", path, out);
}

/* Fine-tunes for 4 epochs, stopped mid-epoch 2 and resumed after a "crash"
 * that logged a step the checkpoint never reached; then predicts photos
 * with no normalization flags. */
static void test_metrics_resume_and_predict(void **state)
{
    (void)state;
    char out[16384], dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/ft", g_tmp);
    /* 4 steps an epoch: stop after 6 (epoch 2, batch 2) */
    int rc = tu_run(out, sizeof out, "%s train --data %s --init-from %s --epochs 4 --lr 0.003 --log-every 2 --stop-after 6 " FT
                 " --checkpoint-dir %s", g_bin, g_data, g_src_ck, dir);
    if (rc) fail_msg("fine-tuning failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "stopped after 6 steps"));
    /* a crashed process had logged step 8, and half a line */
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *fp = fopen(path, "a");
    assert_non_null(fp);
    fputs("{\"kind\":\"step\",\"split\":\"train\",\"epoch\":2,\"step\":8,\"loss\":9,\"top1\":0,\"top5\":null,"
          "\"lr\":0.1,\"images_per_s\":1,\"elapsed_s\":99}\n{\"kind\":\"ep", fp);
    fclose(fp);
    rc = tu_run(out, sizeof out, "%s train --resume %s --data %s --log-every 2 --quiet --threads 2 --checkpoint-dir %s", g_bin, dir,
                 g_data, dir);
    if (rc) fail_msg("resume failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "2 line(s)"));
    int steps = 0;
    check_metrics(path, 4, &steps);
    assert_int_equal(steps, 8); /* steps 2, 4, ..., 16 */
    snprintf(path, sizeof path, "%s/curves.svg", dir);
    check_svg(path);
    assert_int_equal(tu_run(out, sizeof out, "%s plot %s", g_bin, dir), 0);
    check_svg(path);
    /* predict with the stored normalization: no --data, --mean or --std */
    for (int c = 0; c < CLASSES; c++) {
        rc = tu_run(out, sizeof out, "%s predict --checkpoint %s/last.safetensors --top 1 %s/val/%s/001.jpg %s/val/%s/003.png",
                 g_bin, dir, g_data, cls[c].name, g_data, cls[c].name);
        if (rc) fail_msg("predict failed (%d):\n%s", rc, out);
        assert_null(strstr(out, "normaliz")); /* no note, no complaint */
        const char *first = strstr(out, "%  ");
        assert_non_null(first);
        const char *second = strstr(first + 3, "%  ");
        assert_non_null(second);
        if (strncmp(first + 3, cls[c].name, strlen(cls[c].name)) != 0 || strncmp(second + 3, cls[c].name, strlen(cls[c].name)) != 0)
            fail_msg("photos of %s:\n%s", cls[c].name, out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_from_replaces_last_layer),
        cmocka_unit_test(test_metrics_resume_and_predict),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
