/* Users' files in and out: a weights-only safetensors file (PyTorch's
 * save_file layout, written by tests/weights_only.py) gives the same logits
 * as the checkpoint it came from; contradicting shapes are errors naming the
 * tensor; fine-tuning loads what fits and names the rest; predict names the
 * right class of JPEG and PNG photos; metrics lines are JSON and curves.svg
 * is XML. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/jpeg.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "models/metrics.h"
#include "models/weights.h"
#include "tests/testutil.h"

static char g_bin[4096], g_src[4096], g_tmp[256], g_ck[512], g_dir[512];
static bool g_trained;

static bool have_python(void) { return system("python3 -c 'import json, struct, xml.etree.ElementTree' 2>/dev/null") == 0; }

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("CONVNET_BUILD_ROOT"), *s = getenv("CONVNET_SOURCE_ROOT");
    snprintf(g_bin, sizeof g_bin, "%s/tools/convnet", b ? b : "build");
    snprintf(g_src, sizeof g_src, "%s", s ? s : ".");
    snprintf(g_tmp, sizeof g_tmp, "/tmp/convnet_test_weights_XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    if (getenv("CONVNET_TEST_KEEP")) return 0; /* to look at the files by hand */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

/* A small AlexNet (width 0.125, fc 32, 64x64 input) trained on the two colours, once. */
static void need_trained(void)
{
    if (g_trained) return;
    char out[16384];
    snprintf(g_dir, sizeof g_dir, "%s/folder", g_tmp);
    tu_make_colour_folder(g_dir, (tu_colour_class[])TU_BLUE_RED, 2, 32, 4, 2, 60);
    int rc = tu_run(out, sizeof out,
                 "%s train --data %s --size 64 --width 0.125 --fc 32 --batch 16 --epochs 3 --quiet --threads 2 "
                 "--checkpoint-dir %s/ck 2>&1",
                 g_bin, g_dir, g_tmp);
    if (rc) fail_msg("train on a folder failed (%d):\n%s", rc, out);
    snprintf(g_ck, sizeof g_ck, "%s/ck/last.safetensors", g_tmp);
    g_trained = true;
}

static float *read_logits(const char *path, int *n, int *k)
{
    nn_st_file *f = NULL;
    assert_int_equal(nn_st_open(path, &f), NN_OK);
    const nn_st_entry *e = nn_st_find(f, "logits");
    assert_non_null(e);
    *n = (int)e->shape[0];
    *k = (int)e->shape[1];
    float *v = malloc(e->nbytes);
    memcpy(v, e->data, e->nbytes);
    nn_st_close(f);
    return v;
}

static void write_input(const char *path, int n, int c, int s)
{
    nn_tensor *x = tu_rand4(7, n, c, s, s);
    nn_st_writer *w = NULL;
    assert_int_equal(nn_st_writer_new(&w), NN_OK);
    assert_int_equal(nn_st_writer_add_tensor(w, "input", x), NN_OK);
    assert_int_equal(nn_st_write(w, path), NN_OK);
    nn_st_writer_free(w);
    nn_tensor_free(x);
}

/* Logits of predict --input for a model file. */
static float *logits_of(const char *model, const char *in, const char *tag, int *n, int *k)
{
    char out[8192], y[600];
    snprintf(y, sizeof y, "%s/y_%s.safetensors", g_tmp, tag);
    int rc = tu_run(out, sizeof out, "%s predict --checkpoint %s --input %s --output %s 2>&1", g_bin, model, in, y);
    if (rc) fail_msg("predict on %s failed (%d):\n%s", model, rc, out);
    return read_logits(y, n, k);
}

static void test_weights_only_same_logits(void **state)
{
    (void)state;
    if (!have_python()) skip(); /* the weights-only file is written by an independent Python writer */
    need_trained();
    char out[8192], w[600], w64[600], in[600];
    snprintf(w, sizeof w, "%s/w.safetensors", g_tmp);
    snprintf(w64, sizeof w64, "%s/w64.safetensors", g_tmp);
    snprintf(in, sizeof in, "%s/x.safetensors", g_tmp);
    assert_int_equal(tu_run(out, sizeof out, "python3 %s/tests/weights_only.py %s %s 2>&1", g_src, g_ck, w), 0);
    assert_int_equal(tu_run(out, sizeof out, "python3 %s/tests/weights_only.py %s %s --f64 2>&1", g_src, g_ck, w64), 0);
    assert_true(nn_weights_only(w));
    assert_false(nn_weights_only(g_ck));
    write_input(in, 3, 3, 64);
    int n0, k0, n1, k1, n2, k2;
    float *a = logits_of(g_ck, in, "ck", &n0, &k0), *b = logits_of(w, in, "w", &n1, &k1),
          *c = logits_of(w64, in, "w64", &n2, &k2);
    assert_int_equal(n0, 3);
    assert_int_equal(k0, 2);
    assert_int_equal(n1, n0);
    assert_int_equal(k1, k0);
    assert_int_equal(n2, n0);
    /* the same weights and the same kernels: bitwise the same logits (F32 -> F64 -> F32 is exact) */
    assert_memory_equal(a, b, sizeof(float) * 6);
    assert_memory_equal(a, c, sizeof(float) * 6);
    free(a);
    free(b);
    free(c);
    /* the architecture read off the shapes */
    nn_model_config cfg;
    nn_weights_hints h = {.in_size = 64};
    assert_int_equal(nn_weights_infer(w, &h, &cfg, NULL, 0), NN_OK);
    assert_string_equal(cfg.arch, "alexnet");
    assert_int_equal(cfg.in_channels, 3);
    assert_int_equal(cfg.classes, 2);
    assert_int_equal(cfg.fc, 32);
    assert_int_equal(cfg.groups, 1);
    assert_int_equal(cfg.in_size, 64);
    /* eval and filters take it too (eval: the same accuracy as the checkpoint's) */
    char out2[8192];
    assert_int_equal(tu_run(out, sizeof out, "%s eval --checkpoint %s --data %s 2>&1", g_bin, g_ck, g_dir), 0);
    int rc = tu_run(out2, sizeof out2, "%s eval --checkpoint %s --data %s --size 64 2>&1", g_bin, w, g_dir);
    if (rc) fail_msg("eval of a weights-only file failed (%d):\n%s", rc, out2);
    assert_non_null(strstr(out2, "holds weights only"));
    assert_string_equal(strstr(out, "top-1 accuracy"), strstr(out2, "top-1 accuracy"));
    rc = tu_run(out, sizeof out, "%s filters --checkpoint %s --out %s/f.png 2>&1", g_bin, w, g_tmp);
    if (rc) fail_msg("filters on a weights-only file failed (%d):\n%s", rc, out);
}

/* A weights-only AlexNet (width 0.125, fc 32, 3 classes) with one tensor replaced. */
static void write_model(const char *path, const char *bad_name, int nd, const int *bad_shape, bool drop)
{
    nn_model_config c = nn_alexnet_config();
    c.width = 0.125f;
    c.fc = 32;
    c.classes = 3;
    c.in_size = 64;
    nn_seq s;
    nn_rng r = nn_rng_make(1);
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, &r), NN_OK);
    nn_st_writer *w = NULL;
    nn_tensor *bad = NULL;
    assert_int_equal(nn_st_writer_new(&w), NN_OK);
    for (int i = 0; i < s.params.n; i++) {
        const nn_param *p = &s.params.p[i];
        if (bad_name && strcmp(p->name, bad_name) == 0) {
            if (drop) continue;
            assert_int_equal(nn_tensor_new(&bad, NN_F32, NN_CPU, nd, bad_shape), NN_OK);
            assert_int_equal(nn_st_writer_add_tensor(w, p->name, bad), NN_OK);
        } else {
            assert_int_equal(nn_st_writer_add_tensor(w, p->name, p->t), NN_OK);
        }
    }
    assert_int_equal(nn_st_write(w, path), NN_OK);
    nn_st_writer_free(w);
    nn_tensor_free(bad);
    nn_seq_free(&s);
}

static void expect_error(const char *path, const nn_weights_hints *h, const char *tensor)
{
    nn_model_config cfg;
    assert_int_not_equal(nn_weights_infer(path, h, &cfg, NULL, 0), NN_OK);
    if (!strstr(nn_errmsg(), tensor)) fail_msg("the error does not name %s: %s", tensor, nn_errmsg());
}

static void test_contradictions_name_the_tensor(void **state)
{
    (void)state;
    char p[600];
    snprintf(p, sizeof p, "%s/good.safetensors", g_tmp);
    write_model(p, NULL, 0, NULL, false);
    nn_model_config cfg;
    char note[256];
    assert_int_equal(nn_weights_infer(p, NULL, &cfg, note, sizeof note), NN_OK);
    assert_int_equal(cfg.classes, 3);
    assert_non_null(strstr(note, "--size")); /* several sizes fit: the note says which was taken */
    /* the flags against the shapes */
    nn_weights_hints h = {.classes = 5};
    expect_error(p, &h, "classifier.7.weight");
    h = (nn_weights_hints){.in_size = 100};
    expect_error(p, &h, "classifier.2.weight");
    h = (nn_weights_hints){.in_channels = 1};
    expect_error(p, &h, "stage1.0.weight");
    /* the shapes against each other */
    int fc7[2] = {32, 33};
    write_model(p, "classifier.5.weight", 2, fc7, false);
    expect_error(p, NULL, "classifier.5.weight");
    int conv2[4] = {32, 5, 5, 5}; /* conv1's 8 outputs in groups of 5 */
    write_model(p, "stage2.0.weight", 4, conv2, false);
    expect_error(p, NULL, "stage2.0.weight");
    int conv4[4] = {48, 47, 3, 3};
    write_model(p, "stage4.0.weight", 4, conv4, false);
    expect_error(p, NULL, "stage4.0.weight");
    int bias[1] = {4};
    write_model(p, "classifier.7.bias", 1, bias, false);
    expect_error(p, NULL, "classifier.7.bias");
    write_model(p, "stage3.0.bias", 0, NULL, true);
    expect_error(p, NULL, "stage3.0.bias");
    /* and through the command line, exit status 1 */
    char out[4096];
    write_model(p, "classifier.5.weight", 2, fc7, false);
    assert_int_equal(tu_run(out, sizeof out, "%s predict --checkpoint %s x.png 2>&1", g_bin, p), 1);
    assert_non_null(strstr(out, "classifier.5.weight"));
}

static void report(const char *name, const char *why, void *user)
{
    char *log = user;
    (void)why;
    strcat(log, name);
    strcat(log, ";");
}

/* Fine-tuning: a 3-class file into a 5-class model keeps the last layer fresh. */
static void test_load_into_mismatch(void **state)
{
    (void)state;
    char p[600], log[512] = "";
    snprintf(p, sizeof p, "%s/three.safetensors", g_tmp);
    write_model(p, NULL, 0, NULL, false);
    nn_model_config c = nn_alexnet_config();
    c.width = 0.125f;
    c.fc = 32;
    c.classes = 5;
    c.in_size = 64;
    nn_seq s;
    nn_rng r = nn_rng_make(2);
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, &r), NN_OK);
    nn_tensor *fresh = nn_params_find(&s.params, "classifier.7.weight");
    float before = nn_f32(fresh)[0], conv_before = nn_f32(nn_params_find(&s.params, "stage1.0.weight"))[0];
    assert_int_not_equal(nn_weights_load_into(&s, p, false, NULL, NULL, NULL), NN_OK);
    assert_non_null(strstr(nn_errmsg(), "classifier.7.weight"));
    int loaded = 0;
    assert_int_equal(nn_weights_load_into(&s, p, true, report, log, &loaded), NN_OK);
    assert_string_equal(log, "classifier.7.weight;classifier.7.bias;");
    assert_int_equal(loaded, 14);
    assert_true(nn_f32(fresh)[0] == before); /* kept its fresh initialization */
    assert_true(nn_f32(nn_params_find(&s.params, "stage1.0.weight"))[0] != conv_before);
    nn_seq_free(&s);
}

/* The first class name printed for a photo. */
static void top_class(const char *out, const char *file, char *cls, size_t n)
{
    const char *p = strstr(out, file);
    if (!p) fail_msg("no result for %s:\n%s", file, out);
    p = strchr(p, '%');
    assert_non_null(p);
    p += 1 + strspn(p + 1, " ");
    snprintf(cls, n, "%.*s", (int)strcspn(p, "\n"), p);
}

static void test_predict_photos(void **state)
{
    (void)state;
    need_trained();
    char out[16384], cls[64], red[600], blue[600];
    snprintf(red, sizeof red, "%s/val/red/001.jpg", g_dir);   /* JPEG */
    snprintf(blue, sizeof blue, "%s/val/blue/002.png", g_dir); /* PNG */
    int rc = tu_run(out, sizeof out, "%s predict --checkpoint %s --data %s %s %s 2>&1", g_bin, g_ck, g_dir, red, blue);
    if (rc) fail_msg("predict on photos failed (%d):\n%s", rc, out);
    top_class(out, red, cls, sizeof cls);
    assert_string_equal(cls, "red");
    top_class(out, blue, cls, sizeof cls);
    assert_string_equal(cls, "blue");
    /* --json for programs (stdout only), with the 10 views */
    rc = tu_run(out, sizeof out, "%s predict --checkpoint %s --data %s --ten-crop --json %s %s 2>/dev/null", g_bin, g_ck, g_dir, red,
             blue);
    assert_int_equal(rc, 0);
    cJSON *j = cJSON_Parse(out);
    if (!j) fail_msg("--json output is not JSON:\n%s", out);
    assert_int_equal(cJSON_GetArraySize(j), 2);
    const char *want[2] = {"red", "blue"};
    for (int i = 0; i < 2; i++) {
        cJSON *top = cJSON_GetObjectItem(cJSON_GetArrayItem(j, i), "top");
        assert_int_equal(cJSON_GetArraySize(top), 2); /* top 5 of 2 classes */
        cJSON *first = cJSON_GetArrayItem(top, 0);
        assert_string_equal(cJSON_GetObjectItem(first, "class")->valuestring, want[i]);
        double p0 = cJSON_GetObjectItem(first, "probability")->valuedouble,
               p1 = cJSON_GetObjectItem(cJSON_GetArrayItem(top, 1), "probability")->valuedouble;
        assert_true(p0 >= p1 && fabs(p0 + p1 - 1.0) < 1e-6);
    }
    cJSON_Delete(j);
    /* without the folder: the per-channel normalization the checkpoint stores */
    rc = tu_run(out, sizeof out, "%s predict --checkpoint %s %s %s 2>&1", g_bin, g_ck, red, blue);
    if (rc) fail_msg("predict with the stored normalization failed (%d):\n%s", rc, out);
    top_class(out, red, cls, sizeof cls);
    assert_string_equal(cls, "red");
    top_class(out, blue, cls, sizeof cls);
    assert_string_equal(cls, "blue");
    /* an unreadable photo: named, exit 1 */
    assert_int_equal(tu_run(out, sizeof out, "%s predict --checkpoint %s --data %s %s/nothing.jpg 2>&1", g_bin, g_ck,
                         g_dir, g_tmp), 1);
    assert_non_null(strstr(out, "nothing.jpg"));
}

/* A weights-only file says what normalization it assumes. */
static void test_predict_weights_only_says_normalization(void **state)
{
    (void)state;
    char p[600], img[600], out[8192];
    snprintf(p, sizeof p, "%s/norm.safetensors", g_tmp);
    snprintf(img, sizeof img, "%s/gray.png", g_tmp);
    write_model(p, NULL, 0, NULL, false);
    uint8_t px[50 * 40 * 3];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 7);
    assert_int_equal(nn_png_write_rgb(img, 50, 40, px), NN_OK);
    int rc = tu_run(out, sizeof out, "%s predict --checkpoint %s --size 64 %s 2>&1", g_bin, p, img);
    if (rc) fail_msg("predict failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "assuming ImageNet"));
    assert_non_null(strstr(out, "class 0")); /* no class names in the file */
    rc = tu_run(out, sizeof out, "%s predict --checkpoint %s --size 64 --mean 0.5 --std 0.25 %s 2>&1", g_bin, p, img);
    assert_int_equal(rc, 0);
    assert_null(strstr(out, "assuming"));
    assert_int_equal(tu_run(out, sizeof out, "%s predict --checkpoint %s --mean 0.5 %s 2>&1", g_bin, p, img), 2);
}

static void test_metrics_lines_and_svg(void **state)
{
    (void)state;
    char dir[600], path[700], line[NN_METRICS_LINE_MAX], out[4096];
    snprintf(dir, sizeof dir, "%s/run", g_tmp);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    for (int e = 1; e <= 4; e++)
        for (int sp = 0; sp < 2; sp++) {
            nn_metrics_row r = nn_metrics_empty(NN_METRICS_EPOCH, (nn_metrics_split)sp, e, 100 * e);
            r.loss = 2.0 / e + sp * 0.1;
            r.top1 = 0.5 + 0.1 * e;
            r.top5 = 1.0;
            if (!sp) r.images_per_s = 1234.5; /* test rows: no speed (null) */
            r.lr = 0.01;
            r.elapsed_s = 10.0 * e;
            assert_int_equal(nn_metrics_append(path, &r), NN_OK);
        }
    nn_metrics_row st = nn_metrics_empty(NN_METRICS_STEP, NN_METRICS_TRAIN, 5, 450);
    st.loss = INFINITY; /* not JSON: written as null */
    assert_int_equal(nn_metrics_append(path, &st), NN_OK);
    /* a line cut short by a crash, then a resumed run appending (it re-ran epoch 4) */
    FILE *fp = fopen(path, "a");
    fputs("{\"kind\":\"epoch\",\"spl", fp);
    fclose(fp);
    nn_metrics_row again = nn_metrics_empty(NN_METRICS_EPOCH, NN_METRICS_TEST, 4, 400);
    again.loss = 0.25;
    again.top1 = 0.95;
    assert_int_equal(nn_metrics_append(path, &again), NN_OK);
    /* every line but the cut one is JSON with all the keys */
    fp = fopen(path, "r");
    int lines = 0, parsed = 0;
    while (fgets(line, sizeof line, fp)) {
        lines++;
        cJSON *o = cJSON_Parse(line);
        if (!o) continue;
        parsed++;
        const char *keys[] = {"kind", "split", "epoch", "step", "loss", "top1", "top5", "lr", "images_per_s", "elapsed_s"};
        for (int k = 0; k < 10; k++)
            if (!cJSON_GetObjectItemCaseSensitive(o, keys[k])) fail_msg("line %d lacks '%s': %s", lines, keys[k], line);
        cJSON_Delete(o);
    }
    fclose(fp);
    assert_int_equal(lines, 11);
    assert_int_equal(parsed, 10);
    nn_metrics_row *rows = NULL;
    int n = 0, bad = 0;
    assert_int_equal(nn_metrics_read(path, &rows, &n, &bad), NN_OK);
    assert_int_equal(n, 10);
    assert_int_equal(bad, 1);
    assert_int_equal(rows[1].split, NN_METRICS_TEST);
    assert_true(fabs(rows[1].loss - 2.1) < 1e-12 && isnan(rows[1].images_per_s));
    assert_int_equal(rows[8].kind, NN_METRICS_STEP);
    assert_true(isnan(rows[8].loss));
    assert_int_equal((int)rows[9].step, 400);
    free(rows);
    /* the picture, through the command */
    int rc = tu_run(out, sizeof out, "%s plot %s 2>&1", g_bin, dir);
    if (rc) fail_msg("plot failed (%d):\n%s", rc, out);
    assert_non_null(strstr(out, "skipped 1 line"));
    char svg[700];
    snprintf(svg, sizeof svg, "%s/curves.svg", dir);
    fp = fopen(svg, "r");
    assert_non_null(fp);
    char buf[65536];
    size_t k = fread(buf, 1, sizeof buf - 1, fp);
    buf[k] = '\0';
    fclose(fp);
    assert_non_null(strstr(buf, "<svg"));
    assert_non_null(strstr(buf, "top-1 accuracy"));
    assert_non_null(strstr(buf, ">test<"));
    if (!have_python()) skip(); /* the XML check needs python3's xml.etree */
    rc = tu_run(out, sizeof out,
             "python3 -c \"import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); "
             "n = sum(1 for e in r.iter() if e.tag.endswith('polyline')); print('polylines', n)\" %s 2>&1", svg);
    if (rc) fail_msg("curves.svg is not XML:\n%s", out);
    assert_non_null(strstr(out, "polylines 4"));
}

/* A record with nothing to draw is an error, and the picture training drew stays. */
static void test_plot_without_metrics_keeps_curves(void **state)
{
    (void)state;
    char dir[600], path[700], out[2048];
    snprintf(dir, sizeof dir, "%s/plot_nothing", g_tmp);
    assert_int_equal(tu_run(NULL, 0, "mkdir -p %s", dir), 0);
    snprintf(path, sizeof path, "%s/curves.svg", dir);
    tu_write_plain(path, "<svg>drawn by training</svg>", 28);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    tu_write_plain(path, "{\"a\": 1}\nnot json\n", 18);
    int rc = tu_run(out, sizeof out, "%s plot %s 2>&1", g_bin, dir);
    if (rc != 1 || !strstr(out, "has no metrics lines (2 that are not); ") || !strstr(out, "curves.svg left as it was"))
        fail_msg("plot of a record without metrics: exit %d:\n%s", rc, out);
    snprintf(path, sizeof path, "%s/curves.svg", dir);
    size_t n;
    uint8_t *svg = tu_read_all(path, &n);
    assert_int_equal(n, 28);
    assert_memory_equal(svg, "<svg>drawn by training</svg>", 28);
    free(svg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contradictions_name_the_tensor),
        cmocka_unit_test(test_load_into_mismatch),
        cmocka_unit_test(test_predict_weights_only_says_normalization),
        cmocka_unit_test(test_metrics_lines_and_svg),
        cmocka_unit_test(test_plot_without_metrics_keeps_curves),
        cmocka_unit_test(test_weights_only_same_logits),
        cmocka_unit_test(test_predict_photos),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
