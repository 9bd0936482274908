/* The image-folder pipeline on a data set made here: a few hundred JPEG and
 * PNG pictures of four separable classes (dominant colours; gray, CMYK and
 * odd sizes among them) plus broken files. Checks the counts and the skipped
 * files, the label mapping, resize + center crop against a float64 area-filter
 * reference, crops/flips/10-crop geometry on coded pixels, the statistics and
 * PCA lighting draws, determinism and resuming, and a short training run. */
#include "tests/testutil.h"

#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/philox.h"
#include "core/rng.h"
#include "io/imagefolder.h"
#include "io/jpeg.h"
#include "io/png.h"
#include "models/evaluate.h"
#include "models/sequential.h"
#include "optim/optim.h"

#define NCLS 4
#define NTRAIN 50 /* per class */
#define NVAL 15
#define S_TEST 36
#define C_TEST 32

static const char *const cls[NCLS] = {"blue", "gray", "green", "red"}; /* sorted */
static const int base_rgb[NCLS][3] = {{40, 60, 200}, {128, 128, 128}, {40, 180, 60}, {200, 40, 40}};
static char g_dir[256];

static const char *tpath(const char *fmt, ...)
{
    static char p[8][512];
    static int k;
    k = (k + 1) % 8;
    char rel[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof rel, fmt, ap);
    va_end(ap);
    snprintf(p[k], sizeof p[k], "%s/%s", g_dir, rel);
    return p[k];
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* One picture of class c: its colour plus noise and faint stripes. */
static void make_picture(nn_rng *r, int c, const char *path, int idx)
{
    int w = 28 + (int)nn_rng_below(r, 90), h = 28 + (int)nn_rng_below(r, 90);
    uint8_t *px = malloc((size_t)w * h * 4);
    assert_non_null(px);
    int gray = c == 1;
    int level = 60 + (int)nn_rng_below(r, 140);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < 3; k++) {
                int v = (gray ? level : base_rgb[c][k]) + (int)nn_rng_below(r, 41) - 20 + ((x / 3) % 2) * 10;
                px[((size_t)y * w + x) * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    if (gray) {
        for (size_t i = 0; i < (size_t)w * h; i++) px[i] = px[3 * i];
        if (idx % 2)
            assert_int_equal(nn_jpeg_write(path, w, h, 1, px, 85, 0), NN_OK);
        else
            assert_int_equal(nn_png_write_gray(path, w, h, px), NN_OK);
    } else if (c == 3 && idx < 2) { /* CMYK: Adobe-inverted and plain */
        uint8_t *cm = malloc((size_t)w * h * 4);
        assert_non_null(cm);
        for (size_t i = 0; i < (size_t)w * h; i++) {
            /* ink from RGB with k = 0: C = 255 - R ...; Adobe stores 255 - ink */
            for (int k = 0; k < 3; k++) cm[4 * i + k] = idx == 0 ? px[3 * i + k] : (uint8_t)(255 - px[3 * i + k]);
            cm[4 * i + 3] = idx == 0 ? 255 : 0;
        }
        assert_int_equal(nn_jpeg_write(path, w, h, 4, cm, 90, idx == 0), NN_OK);
        free(cm);
    } else if (idx % 2) {
        assert_int_equal(nn_jpeg_write(path, w, h, 3, px, 85, 0), NN_OK);
    } else {
        assert_int_equal(nn_png_write_rgb(path, w, h, px), NN_OK);
    }
    free(px);
}

static int setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/convnet_imgf_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_dir)) return -1;
    nn_rng r = nn_rng_make(7);
    const char *splits[2] = {"train", "val"};
    for (int s = 0; s < 2; s++) {
        mkdir(tpath("%s", splits[s]), 0777);
        for (int c = 0; c < NCLS; c++) {
            mkdir(tpath("%s/%s", splits[s], cls[c]), 0777);
            int n = s == 0 ? NTRAIN : NVAL;
            for (int i = 0; i < n; i++) {
                /* red keeps some pictures one folder deeper */
                const char *sub = c == 3 && i >= n - 5 ? "more/" : "";
                if (*sub) mkdir(tpath("%s/%s/more", splits[s], cls[c]), 0777);
                int jpeg = (c == 1 ? i % 2 : i % 2) || (c == 3 && i < 2);
                make_picture(&r, c, tpath("%s/%s/%s%03d.%s", splits[s], cls[c], sub, i, jpeg ? "jpg" : "png"), i);
            }
        }
    }
    /* broken files in train: truncated JPEG, random bytes, empty, text */
    FILE *f = fopen(tpath("train/green/001.jpg"), "rb");
    if (!f) return -1;
    uint8_t buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    write_bytes(tpath("train/red/trunc.jpg"), buf, n / 2);
    uint8_t rnd[3000];
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (uint8_t)nn_rng_u32(&r);
    write_bytes(tpath("train/green/random.jpg"), rnd, sizeof rnd);
    write_bytes(tpath("train/blue/empty.png"), "", 0);
    write_bytes(tpath("train/gray/notes.jpg"), "hello, not a picture\n", 21);
    write_bytes(tpath("train/blue/README.txt"), "ignored\n", 8);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static nn_imgf *open_split(const char *split, const nn_imgf *classes_from, FILE *report)
{
    nn_imgf_config cfg = {.resize = S_TEST, .threads = 2, .report = report};
    nn_imgf *ds = NULL;
    nn_status s = nn_imgf_open(&ds, g_dir, split, classes_from ? nn_imgf_class_names(classes_from) : NULL,
                               classes_from ? nn_imgf_classes(classes_from) : 0, &cfg);
    if (s != NN_OK) fail_msg("open %s: %s", split, nn_errmsg());
    return ds;
}

/* ---- counts, labels, broken files, the cache ---- */

static void test_counts_and_labels(void **state)
{
    (void)state;
    FILE *rep = tmpfile();
    assert_non_null(rep);
    nn_imgf *tr = open_split("train", NULL, rep);
    assert_int_equal(nn_imgf_count(tr), NCLS * NTRAIN);
    assert_int_equal(nn_imgf_skipped(tr), 4);
    assert_int_equal(nn_imgf_ignored(tr), 1);
    assert_int_equal(nn_imgf_classes(tr), NCLS);
    for (int c = 0; c < NCLS; c++) assert_string_equal(nn_imgf_class_names(tr)[c], cls[c]);
    int per[NCLS] = {0};
    for (int i = 0; i < nn_imgf_count(tr); i++) {
        int32_t l = nn_imgf_label(tr, i);
        assert_true(l >= 0 && l < NCLS);
        per[l]++;
        char want[64];
        snprintf(want, sizeof want, "/train/%s/", cls[l]);
        if (!strstr(nn_imgf_path(tr, i), want)) fail_msg("%s labelled %s", nn_imgf_path(tr, i), cls[l]);
        if (i) assert_true(strcmp(nn_imgf_path(tr, i - 1), nn_imgf_path(tr, i)) < 0); /* sorted */
    }
    for (int c = 0; c < NCLS; c++) assert_int_equal(per[c], NTRAIN);
    const char *names[4] = {"blue/empty.png", "gray/notes.jpg", "green/random.jpg", "red/trunc.jpg"};
    for (int k = 0; k < 4; k++) {
        const char *why = NULL;
        assert_string_equal(nn_imgf_skipped_path(tr, k, &why), names[k]);
        assert_non_null(why);
    }
    /* the report names every broken file and the counts */
    rewind(rep);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, rep);
    text[n] = '\0';
    fclose(rep);
    for (int k = 0; k < 4; k++)
        if (!strstr(text, names[k])) fail_msg("the report does not name %s:\n%s", names[k], text);
    assert_non_null(strstr(text, "200 images in 4 classes; 4 broken files skipped; 1 other files ignored"));

    /* the second open reads the cache: same statistics, bit for bit */
    assert_int_equal(access(tpath(".convnet-train-%d.cache", S_TEST), F_OK), 0);
    nn_imgf *tr2 = open_split("train", NULL, NULL);
    const nn_imgf_stats *a = nn_imgf_get_stats(tr), *b = nn_imgf_get_stats(tr2);
    assert_memory_equal(a->mean, b->mean, sizeof a->mean);
    assert_memory_equal(a->eigvec, b->eigvec, sizeof a->eigvec);
    assert_memory_equal(a->mean_image, b->mean_image, (size_t)S_TEST * S_TEST * 3 * sizeof(float));
    assert_int_equal(nn_imgf_skipped(tr2), 4);
    nn_imgf_free(tr2);

    /* a changed data set is noticed: a new picture, then one fixed */
    make_picture(&(nn_rng){99, 0}, 3, tpath("train/red/zz_new.png"), 4);
    tr2 = open_split("train", NULL, NULL);
    assert_int_equal(nn_imgf_count(tr2), NCLS * NTRAIN + 1);
    assert_true(memcmp(nn_imgf_get_stats(tr2)->mean, a->mean, sizeof a->mean) != 0);
    nn_imgf_free(tr2);
    assert_int_equal(unlink(tpath("train/red/zz_new.png")), 0);

    /* val under train's classes */
    nn_imgf *va = open_split("val", tr, NULL);
    assert_int_equal(nn_imgf_count(va), NCLS * NVAL);
    assert_int_equal(nn_imgf_skipped(va), 0);
    nn_imgf_free(va);

    /* a folder that is not one of the classes */
    const char *two[2] = {"blue", "red"};
    nn_imgf_config cfg = {.resize = S_TEST, .threads = 1};
    nn_imgf *bad = NULL;
    assert_int_equal(nn_imgf_open(&bad, g_dir, "val", two, 2, &cfg), NN_E_FORMAT);
    assert_non_null(strstr(nn_errmsg(), "gray"));
    assert_int_equal(nn_imgf_open(&bad, g_dir, "nonexistent", NULL, 0, &cfg), NN_E_IO);
    assert_null(bad);
    nn_imgf_free(tr);
}

/* ---- decoding ---- */

static void test_decode_colour_spaces(void **state)
{
    (void)state;
    /* both CMYK conventions decode to the red the pictures were made from */
    for (int i = 0; i < 2; i++) {
        nn_image im;
        assert_int_equal(nn_imgf_decode(tpath("train/red/%03d.jpg", i), 0, &im), NN_OK);
        assert_int_equal(im.channels, 3);
        double m[3] = {0};
        for (int p = 0; p < im.w * im.h; p++)
            for (int k = 0; k < 3; k++) m[k] += im.data[3 * p + k] / (double)(im.w * im.h);
        if (!(fabs(m[0] - 205) < 12 && fabs(m[1] - 45) < 12 && fabs(m[2] - 45) < 12))
            fail_msg("CMYK picture %d decodes to mean (%.0f, %.0f, %.0f), expected about (205, 45, 45)", i, m[0], m[1], m[2]);
        nn_image_free(&im);
    }
    /* grayscale JPEG and PNG: R = G = B */
    const char *g[2] = {"train/gray/001.jpg", "train/gray/000.png"};
    for (int i = 0; i < 2; i++) {
        nn_image im;
        assert_int_equal(nn_imgf_decode(tpath("%s", g[i]), 0, &im), NN_OK);
        for (int p = 0; p < im.w * im.h; p++)
            assert_true(im.data[3 * p] == im.data[3 * p + 1] && im.data[3 * p] == im.data[3 * p + 2]);
        nn_image_free(&im);
    }
    /* DCT downscaling never goes below min_side */
    uint8_t *big = calloc(400 * 300 * 3, 1);
    assert_non_null(big);
    assert_int_equal(nn_jpeg_write(tpath("big.jpg"), 400, 300, 3, big, 80, 0), NN_OK);
    nn_image im;
    assert_int_equal(nn_imgf_decode(tpath("big.jpg"), 100, &im), NN_OK);
    assert_int_equal(im.w, 150); /* 3/8: 300 * 3/8 = 112.5 -> 113 >= 100; 2/8 -> 75 < 100 */
    assert_int_equal(im.h, 113);
    nn_image_free(&im);
    free(big);
    /* errors name the file */
    assert_int_equal(nn_imgf_decode(tpath("train/red/trunc.jpg"), 0, &im), NN_E_FORMAT);
    assert_non_null(strstr(nn_errmsg(), "trunc.jpg"));
    assert_int_equal(nn_imgf_decode(tpath("train/blue/empty.png"), 0, &im), NN_E_FORMAT);
    assert_int_equal(nn_imgf_decode(tpath("no/such.jpg"), 0, &im), NN_E_IO);
}

/* ---- resize + center crop ---- */

/* float64 reference: output (i, j) averages the source over the rectangle it
 * covers (area filter), for downscaling in both axes. */
static double ref_area(const uint8_t *src, int w, int h, int S, int i, int j, int k)
{
    int Lw = w <= h ? S : (int)floor((double)w * S / h + 0.5), Lh = w <= h ? (int)floor((double)h * S / w + 0.5) : S;
    double fx = (double)w / Lw, fy = (double)h / Lh;
    double x0 = ((Lw - S) / 2 + j) * fx, x1 = x0 + fx, y0 = ((Lh - S) / 2 + i) * fy, y1 = y0 + fy;
    double sum = 0, area = 0;
    for (int y = (int)floor(y0); y < (int)ceil(y1) && y < h; y++)
        for (int x = (int)floor(x0); x < (int)ceil(x1) && x < w; x++) {
            double a = (fmin(y1, y + 1.0) - fmax(y0, (double)y)) * (fmin(x1, x + 1.0) - fmax(x0, (double)x));
            if (a <= 0) continue;
            sum += a * src[((size_t)y * w + x) * 3 + k];
            area += a;
        }
    return sum / area;
}

static void test_resize_center(void **state)
{
    (void)state;
    /* 2x2 blocks, portrait 80 x 120: resized 40 x 60, center rows 10..49 */
    int w = 80, h = 120, S = 40;
    uint8_t *src = malloc((size_t)w * h * 3), out[40 * 40 * 3];
    assert_non_null(src);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < 3; k++) src[((size_t)y * w + x) * 3 + k] = (uint8_t)((x / 2) * 5 + k + ((y / 2) % 7) * 11);
    nn_imgf_resize_center(src, w, h, S, out);
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++)
            for (int k = 0; k < 3; k++)
                assert_int_equal(out[(i * S + j) * 3 + k], (uint8_t)(j * 5 + k + ((i + 10) % 7) * 11));
    /* the same through a PNG file (lossless) */
    assert_int_equal(nn_png_write_rgb(tpath("blocks.png"), w, h, src), NN_OK);
    uint8_t out2[40 * 40 * 3];
    assert_int_equal(nn_imgf_load_center(tpath("blocks.png"), S, out2), NN_OK);
    assert_memory_equal(out, out2, sizeof out);
    free(src);

    /* landscape, non-integer factors: against the float64 area reference */
    nn_rng r = nn_rng_make(3);
    int sizes[3][2] = {{97, 61}, {61, 97}, {300, 41}};
    for (int t = 0; t < 3; t++) {
        w = sizes[t][0], h = sizes[t][1];
        src = malloc((size_t)w * h * 3);
        assert_non_null(src);
        for (int p = 0; p < w * h * 3; p++) src[p] = (uint8_t)nn_rng_u32(&r);
        nn_imgf_resize_center(src, w, h, S, out);
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++)
                for (int k = 0; k < 3; k++) {
                    double ref = ref_area(src, w, h, S, i, j, k);
                    /* rounding to bytes: 0.5, plus float accumulation */
                    if (fabs(out[(i * S + j) * 3 + k] - ref) > 0.5 + 1e-3)
                        fail_msg("%dx%d: pixel (%d, %d, %d) is %d, reference %.3f", w, h, i, j, k,
                                 out[(i * S + j) * 3 + k], ref);
                }
        free(src);
    }
    /* upscaling a constant picture stays constant (bilinear weights sum to 1) */
    uint8_t small[10 * 7 * 3];
    memset(small, 77, sizeof small);
    nn_imgf_resize_center(small, 10, 7, S, out);
    for (int p = 0; p < S * S * 3; p++) assert_int_equal(out[p], 77);
}

/* ---- crops, flips, 10 crops on coded pixels ---- */

/* channel 0 codes x, channel 1 codes y */
static void coded_image(uint8_t *img, int S)
{
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            img[(y * S + x) * 3] = (uint8_t)(x * 6);
            img[(y * S + x) * 3 + 1] = (uint8_t)(y * 6);
            img[(y * S + x) * 3 + 2] = 9;
        }
}

static void check_view(const float *o, int C, int x, int y, bool flip, float scale, const char *what)
{
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            float ex = (float)((x + (flip ? C - 1 - j : j)) * 6) * scale, ey = (float)((y + i) * 6) * scale;
            if (o[i * C + j] != ex || o[C * C + i * C + j] != ey || o[2 * C * C + i * C + j] != 9 * scale)
                fail_msg("%s: pixel (%d, %d) is (%g, %g), expected (%g, %g) for crop (%d, %d) flip %d", what, i, j,
                         (double)o[i * C + j], (double)o[C * C + i * C + j], (double)ex, (double)ey, y, x, flip);
        }
}

static void test_crops_flips_tencrop(void **state)
{
    (void)state;
    int S = 40, C = 32;
    uint8_t img[40 * 40 * 3];
    coded_image(img, S);
    float out[3 * 32 * 32];
    nn_imgf_norm raw = {NN_IMGF_MEAN_NONE, {1, 1, 1}};
    nn_imgf_aug a = {.x = 5, .y = 3, .flip = true};
    nn_imgf_apply(img, S, C, &a, NULL, &raw, out);
    check_view(out, C, 5, 3, true, 1, "crop (3, 5) flipped");
    a.flip = false;
    nn_imgf_apply(img, S, C, &a, NULL, &raw, out);
    check_view(out, C, 5, 3, false, 1, "crop (3, 5)");

    /* the draws cover [0, S - C] uniformly and flip half the time */
    int hx[9] = {0}, hy[9] = {0}, flips = 0, N = 9000;
    for (int p = 0; p < N; p++) {
        nn_imgf_aug d = nn_imgf_draw(5, 2, p, S, C, true, 0);
        assert_true(d.x >= 0 && d.x <= S - C && d.y >= 0 && d.y <= S - C);
        hx[d.x]++, hy[d.y]++, flips += d.flip;
        assert_true(d.alpha[0] == 0 && d.alpha[1] == 0 && d.alpha[2] == 0);
    }
    for (int k = 0; k < 9; k++) assert_true(abs(hx[k] - N / 9) < 150 && abs(hy[k] - N / 9) < 150); /* ~5 sigma */
    assert_true(abs(flips - N / 2) < 250);
    assert_false(nn_imgf_draw(5, 2, 1, S, C, false, 0).flip);

    /* the paper's 10 views: corners, center, reflected */
    const int want[5][2] = {{0, 0}, {0, 8}, {8, 0}, {8, 8}, {4, 4}}; /* (y, x) */
    for (int v = 0; v < 10; v++) {
        nn_imgf_aug d = nn_imgf_view(v, S, C);
        assert_int_equal(d.y, want[v % 5][0]);
        assert_int_equal(d.x, want[v % 5][1]);
        assert_int_equal(d.flip, v >= 5);
    }

    /* through files and the loader: a folder of one coded S x S picture */
    char root[512];
    snprintf(root, sizeof root, "%s/geo", g_dir);
    mkdir(root, 0777);
    mkdir(tpath("geo/val"), 0777);
    mkdir(tpath("geo/val/only"), 0777);
    assert_int_equal(nn_png_write_rgb(tpath("geo/val/only/a.png"), S, S, img), NN_OK);
    nn_imgf_config cfg = {.resize = S, .threads = 1};
    nn_imgf *ds = NULL;
    assert_int_equal(nn_imgf_open(&ds, root, "val", NULL, 0, &cfg), NN_OK);
    nn_imgf_loader_config lc = {.mode = NN_IMGF_TENCROP, .batch = 1, .crop = C, .mean = NN_IMGF_MEAN_NONE,
                                .raw_scale = true, .threads = 2};
    nn_imgf_loader *l = NULL;
    assert_int_equal(nn_imgf_loader_new(&l, ds, NULL, &lc), NN_OK);
    assert_int_equal(nn_imgf_loader_views(l), 10);
    assert_int_equal(nn_imgf_loader_start(l, 0, 0), NN_OK);
    const float *x;
    const int32_t *y;
    int n;
    assert_int_equal(nn_imgf_loader_next(l, &x, &y, &n), NN_OK);
    assert_int_equal(n, 1);
    assert_int_equal(y[0], 0);
    for (int v = 0; v < 10; v++) {
        char what[32];
        snprintf(what, sizeof what, "10-crop view %d", v);
        check_view(x + (size_t)v * 3 * C * C, C, want[v % 5][1], want[v % 5][0], v >= 5, 1, what);
    }
    assert_int_equal(nn_imgf_loader_next(l, &x, &y, &n), NN_OK);
    assert_int_equal(n, 0);
    nn_imgf_loader_free(l);
    /* center mode: view 4 */
    lc.mode = NN_IMGF_CENTER;
    assert_int_equal(nn_imgf_loader_new(&l, ds, NULL, &lc), NN_OK);
    assert_int_equal(nn_imgf_loader_start(l, 0, 0), NN_OK);
    assert_int_equal(nn_imgf_loader_next(l, &x, &y, &n), NN_OK);
    check_view(x, C, 4, 4, false, 1, "center crop");
    nn_imgf_loader_free(l);
    nn_imgf_free(ds);
}

/* ---- statistics and PCA lighting ---- */

static void test_stats_and_lighting(void **state)
{
    (void)state;
    nn_imgf *tr = open_split("train", NULL, NULL);
    const nn_imgf_stats *st = nn_imgf_get_stats(tr);
    int N = nn_imgf_count(tr), S = S_TEST;
    assert_int_equal(st->images, N);
    /* float64 reference over the center images */
    double sum[3] = {0}, prod[9] = {0};
    double *pix = calloc((size_t)S * S * 3, sizeof *pix);
    uint8_t *img = malloc((size_t)S * S * 3);
    assert_true(pix && img);
    for (int i = 0; i < N; i++) {
        assert_int_equal(nn_imgf_load_center(nn_imgf_path(tr, i), S, img), NN_OK);
        for (int p = 0; p < S * S; p++)
            for (int a = 0; a < 3; a++) {
                sum[a] += img[3 * p + a];
                pix[3 * p + a] += img[3 * p + a];
                for (int b = 0; b < 3; b++) prod[3 * a + b] += (double)img[3 * p + a] * img[3 * p + b];
            }
    }
    double M = (double)N * S * S;
    for (int a = 0; a < 3; a++) {
        assert_true(fabs(st->mean[a] - sum[a] / M) < 1e-3);
        for (int b = 0; b < 3; b++) {
            double cov = (prod[3 * a + b] / M - sum[a] / M * sum[b] / M) / (255.0 * 255.0);
            assert_true(fabs(st->cov[3 * a + b] - cov) < 1e-5);
        }
        assert_true(fabs(st->std[a] - sqrt(st->cov[4 * a]) * 255) < 1e-2);
    }
    for (int p = 0; p < S * S * 3; p++) assert_true(fabs(st->mean_image[p] - pix[p] / N) < 1e-3);
    /* eigenvectors: orthonormal, V diag(l) V^T = cov, sorted */
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double d = 0, c = 0;
            for (int k = 0; k < 3; k++) {
                d += (double)st->eigvec[3 * k + i] * st->eigvec[3 * k + j];
                c += (double)st->eigvec[3 * i + k] * st->eigval[k] * st->eigvec[3 * j + k];
            }
            assert_true(fabs(d - (i == j)) < 1e-5);
            assert_true(fabs(c - st->cov[3 * i + j]) < 1e-5);
        }
    assert_true(st->eigval[0] >= st->eigval[1] && st->eigval[1] >= st->eigval[2] && st->eigval[2] >= 0);

    /* lighting: shift = 255 V (alpha .* lambda), alpha ~ N(0, 0.1^2): over
     * many draws the shift has mean 0 and covariance 0.01 * 255^2 V L^2 V^T */
    int D = 40000, C = 8;
    uint8_t flat[8 * 8 * 3];
    memset(flat, 100, sizeof flat);
    nn_imgf_norm raw = {NN_IMGF_MEAN_NONE, {1, 1, 1}};
    float out[3 * 8 * 8];
    double m[3] = {0}, cv[9] = {0}, am[3] = {0}, av[3] = {0};
    for (int p = 0; p < D; p++) {
        nn_imgf_aug a = nn_imgf_draw(11, 3, p, C, C, false, NN_IMGF_LIGHTING_STD);
        nn_imgf_apply(flat, C, C, &a, st, &raw, out);
        double s[3];
        for (int c = 0; c < 3; c++) {
            s[c] = out[c * C * C + 5] - 100.0;
            assert_true(fabs(out[c * C * C] - out[c * C * C + 63]) < 1e-4); /* the same for every pixel */
            am[c] += a.alpha[c];
            av[c] += (double)a.alpha[c] * a.alpha[c];
        }
        for (int i = 0; i < 3; i++) {
            m[i] += s[i];
            for (int j = 0; j < 3; j++) cv[3 * i + j] += s[i] * s[j];
        }
    }
    double ref[9], scale = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double c = 0;
            for (int k = 0; k < 3; k++)
                c += (double)st->eigvec[3 * i + k] * st->eigval[k] * st->eigval[k] * st->eigvec[3 * j + k];
            ref[3 * i + j] = 0.01 * 255.0 * 255.0 * c;
            if (i == j && ref[3 * i + j] > scale) scale = ref[3 * i + j];
        }
    for (int i = 0; i < 3; i++) {
        /* alpha itself: mean 0 (5 sigma = 5 * 0.1 / sqrt(D)), variance 0.01 (+-5%) */
        assert_true(fabs(am[i] / D) < 5 * 0.1 / sqrt(D));
        assert_true(fabs(av[i] / D - 0.01) < 0.0005);
        assert_true(fabs(m[i] / D) < 5 * sqrt(scale / D));
        for (int j = 0; j < 3; j++)
            if (!(fabs(cv[3 * i + j] / D - ref[3 * i + j]) < 0.05 * scale))
                fail_msg("lighting covariance (%d, %d) is %g, drawn from %g", i, j, cv[3 * i + j] / D, ref[3 * i + j]);
    }
    free(pix);
    free(img);
    nn_imgf_free(tr);
}

/* ---- determinism ---- */

static float *run_epoch(nn_imgf_loader *l, int epoch, int first, int *nb)
{
    assert_int_equal(nn_imgf_loader_start(l, epoch, first), NN_OK);
    size_t per = 0;
    float *all = NULL;
    *nb = 0;
    for (;;) {
        const float *x;
        const int32_t *y;
        int n;
        assert_int_equal(nn_imgf_loader_next(l, &x, &y, &n), NN_OK);
        if (!n) break;
        per = (size_t)n * 3 * C_TEST * C_TEST + (size_t)n;
        all = realloc(all, (*nb + 1) * per * sizeof(float));
        assert_non_null(all);
        memcpy(all + *nb * per, x, (size_t)n * 3 * C_TEST * C_TEST * sizeof(float));
        for (int i = 0; i < n; i++) all[*nb * per + (size_t)n * 3 * C_TEST * C_TEST + i] = (float)y[i];
        (*nb)++;
    }
    return all;
}

static void test_determinism(void **state)
{
    (void)state;
    nn_imgf *tr = open_split("train", NULL, NULL);
    const nn_imgf_stats *st = nn_imgf_get_stats(tr);
    nn_imgf_loader_config lc = {.mode = NN_IMGF_TRAIN, .batch = 16, .crop = C_TEST, .shuffle = true,
                                .drop_last = true, .lighting_std = 0.1f, .threads = 3, .prefetch = 2, .seed = 42};
    nn_imgf_loader *a = NULL, *b = NULL;
    assert_int_equal(nn_imgf_loader_new(&a, tr, st, &lc), NN_OK);
    lc.threads = 1;
    lc.prefetch = 1;
    assert_int_equal(nn_imgf_loader_new(&b, tr, st, &lc), NN_OK);
    assert_int_equal(nn_imgf_loader_batches(a), NCLS * NTRAIN / 16);
    int na, nb2, nr;
    float *ea = run_epoch(a, 1, 0, &na);
    float *eb = run_epoch(b, 1, 0, &nb2);
    assert_int_equal(na, 12);
    assert_int_equal(nb2, 12);
    size_t per = (size_t)16 * 3 * C_TEST * C_TEST + 16;
    assert_memory_equal(ea, eb, na * per * sizeof(float)); /* thread count and prefetch do not matter */
    float *er = run_epoch(a, 1, 5, &nr);                   /* resumed at batch 5 */
    assert_int_equal(nr, 7);
    assert_memory_equal(er, ea + 5 * per, nr * per * sizeof(float));
    free(er);
    /* a restart in the middle of an epoch (batches in flight) */
    const float *x;
    const int32_t *y;
    int n;
    assert_int_equal(nn_imgf_loader_start(a, 0, 0), NN_OK);
    assert_int_equal(nn_imgf_loader_next(a, &x, &y, &n), NN_OK);
    float *e2 = run_epoch(a, 1, 0, &nr);
    assert_memory_equal(e2, ea, na * per * sizeof(float));
    free(e2);
    /* another epoch is another order */
    e2 = run_epoch(a, 2, 0, &nr);
    assert_true(memcmp(e2, ea, per * sizeof(float)) != 0);
    free(e2);
    free(ea);
    free(eb);
    nn_imgf_loader_free(a);
    nn_imgf_loader_free(b);

    /* unshuffled: sample k is exactly apply(load_center(file k), draw(seed, epoch, k)) */
    lc.shuffle = false;
    lc.batch = 5;
    assert_int_equal(nn_imgf_loader_new(&a, tr, st, &lc), NN_OK);
    assert_int_equal(nn_imgf_loader_start(a, 3, 2), NN_OK);
    assert_int_equal(nn_imgf_loader_next(a, &x, &y, &n), NN_OK);
    assert_int_equal(n, 5);
    uint8_t img[S_TEST * S_TEST * 3];
    float ref[3 * C_TEST * C_TEST];
    nn_imgf_norm norm = {NN_IMGF_MEAN_PIXEL, {1 / st->std[0], 1 / st->std[1], 1 / st->std[2]}};
    for (int k = 0; k < 5; k++) {
        int pos = 10 + k;
        assert_int_equal(y[k], nn_imgf_label(tr, pos));
        assert_int_equal(nn_imgf_load_center(nn_imgf_path(tr, pos), S_TEST, img), NN_OK);
        nn_imgf_aug d = nn_imgf_draw(42, 3, pos, S_TEST, C_TEST, true, 0.1f);
        nn_imgf_apply(img, S_TEST, C_TEST, &d, st, &norm, ref);
        assert_memory_equal(x + (size_t)k * 3 * C_TEST * C_TEST, ref, sizeof ref);
    }
    nn_imgf_loader_free(a);
    nn_imgf_free(tr);
}

/* ---- a short training run ---- */

static void test_training_learns(void **state)
{
    (void)state;
    nn_imgf *tr = open_split("train", NULL, NULL), *va = open_split("val", tr, NULL);
    const nn_imgf_stats *st = nn_imgf_get_stats(tr);
    nn_seq seq;
    nn_seq_init(&seq, 3, C_TEST, C_TEST);
    nn_seq_conv(&seq, "c1", 8, 3, 1, 1, 1, 0);
    nn_seq_relu(&seq, "r1");
    nn_seq_maxpool(&seq, "p1", 2, 2);
    nn_seq_conv(&seq, "c2", 16, 3, 1, 1, 1, 0);
    nn_seq_relu(&seq, "r2");
    nn_seq_maxpool(&seq, "p2", 4, 4);
    nn_seq_flatten(&seq, "f");
    nn_seq_linear(&seq, "fc", NCLS, 0);
    nn_rng init = nn_rng_make(1);
    assert_int_equal(nn_seq_build(&seq, NN_CPU, NN_INIT_HE, &init), NN_OK);
    nn_optim_config oc = {.kind = NN_OPT_ADAM, .lr = 3e-3f};
    nn_optim *opt = NULL;
    assert_int_equal(nn_optim_new(&opt, &oc, &seq.params), NN_OK);
    int B = 20;
    nn_imgf_loader_config lc = {.mode = NN_IMGF_TRAIN, .batch = B, .crop = C_TEST, .shuffle = true,
                                .drop_last = true, .lighting_std = 0.1f, .threads = 2, .seed = 5};
    nn_imgf_loader *tl = NULL, *vl = NULL, *tc = NULL;
    assert_int_equal(nn_imgf_loader_new(&tl, tr, st, &lc), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    assert_non_null(ctx);
    nn_tensor *xb = NULL, *yb = NULL;
    int xs[4] = {B, 3, C_TEST, C_TEST}, ys[1] = {B};
    assert_int_equal(nn_tensor_new(&xb, NN_F32, NN_CPU, 4, xs), NN_OK);
    assert_int_equal(nn_tensor_new(&yb, NN_I32, NN_CPU, 1, ys), NN_OK);
    for (int epoch = 0; epoch < 4; epoch++) {
        assert_int_equal(nn_imgf_loader_start(tl, epoch, 0), NN_OK);
        for (;;) {
            const float *x;
            const int32_t *y;
            int n;
            assert_int_equal(nn_imgf_loader_next(tl, &x, &y, &n), NN_OK);
            if (!n) break;
            assert_int_equal(n, B);
            assert_int_equal(nn_tensor_write(xb, x), NN_OK);
            assert_int_equal(nn_tensor_write(yb, y), NN_OK);
            nn_ctx_reset(ctx);
            nn_ctx_set_training(ctx, true);
            nn_tensor *loss = nn_softmax_xent(ctx, nn_seq_forward(ctx, &seq, xb), yb);
            assert_non_null(loss);
            assert_int_equal(nn_backward(ctx, loss), NN_OK);
            assert_int_equal(nn_optim_step(opt), NN_OK);
            assert_int_equal(nn_params_zero_grad(&seq.params), NN_OK);
        }
    }
    /* center crop and 10 crops on val */
    lc = (nn_imgf_loader_config){.mode = NN_IMGF_CENTER, .batch = 16, .crop = C_TEST, .threads = 2};
    assert_int_equal(nn_imgf_loader_new(&vl, va, st, &lc), NN_OK);
    lc.mode = NN_IMGF_TENCROP;
    assert_int_equal(nn_imgf_loader_new(&tc, va, st, &lc), NN_OK);
    nn_ctx_set_grad(ctx, false);
    nn_ctx_set_training(ctx, false);
    nn_imgf_loader *ls[2] = {vl, tc};
    for (int t = 0; t < 2; t++) {
        nn_eval_result res;
        int conf[NCLS * NCLS] = {0};
        nn_batch_source src = nn_imgf_loader_source(ls[t]);
        assert_int_equal(nn_evaluate(&seq, NN_CPU, &src, NCLS, conf, &res, NULL, NULL), NN_OK);
        assert_int_equal(res.n, NCLS * NVAL);
        assert_int_equal(res.top5, res.n); /* 4 classes */
        int diag = 0, all = 0;
        for (int k = 0; k < NCLS * NCLS; k++) all += conf[k], diag += k % (NCLS + 1) == 0 ? conf[k] : 0;
        assert_int_equal(all, res.n);
        assert_int_equal(diag, res.top1);
        double acc = (double)res.top1 / res.n;
        printf("val %s: top-1 %.3f, mean nll %.3f\n", t ? "10-crop" : "center", acc, res.loss);
        assert_true(acc >= 0.85); /* chance: 0.25 */
    }
    nn_tensor_free(xb);
    nn_tensor_free(yb);
    nn_ctx_free(ctx);
    nn_optim_free(opt);
    nn_seq_free(&seq);
    nn_imgf_loader_free(tl);
    nn_imgf_loader_free(vl);
    nn_imgf_loader_free(tc);
    nn_imgf_free(va);
    nn_imgf_free(tr);
}

/* nn_score on hand-made logits: the softmax is averaged over views. */
static void test_score(void **state)
{
    (void)state;
    /* image 0, label 1: view 0 says class 0 strongly, view 1 says class 1 mildly
     * -> averaged probability favours class 0; image 1, label 2: both say 2 */
    float lg[4][3] = {{5, 0, 0}, {0, 1, 0}, {0, 0, 3}, {0, 1, 2}};
    int32_t lab[2] = {1, 2};
    long long t1 = 0, t5 = 0;
    double nll = 0;
    int conf[9] = {0};
    nn_score(&lg[0][0], 2, 2, 3, lab, &t1, &t5, &nll, conf);
    assert_int_equal(t1, 1);
    assert_int_equal(t5, 2);
    assert_int_equal(conf[1 * 3 + 0], 1);
    assert_int_equal(conf[2 * 3 + 2], 1);
    double p0 = 0.5 * (1 / (exp(5) + 2) + exp(1) / (exp(1) + 2));
    double p1 = 0.5 * (exp(3) / (exp(3) + 2) + exp(2) / (1 + exp(1) + exp(2)));
    assert_true(fabs(nll - (-log(p0) - log(p1))) < 1e-9);
}

/* A forged header on a flat, arithmetic-coded picture: the data never runs
 * out (flat blocks cost almost nothing), so only the size-per-byte rule stops
 * a 106-byte file from claiming 27928x13904 (the fuzzer's find: a 686 MB
 * allocation). A real picture of that many pixels per byte still decodes
 * below NN_JPEG_FREE_PIXELS. */
static void test_jpeg_size_must_fit_the_file(void **state)
{
    (void)state;
    const char *root = getenv("CONVNET_SOURCE_ROOT");
    if (!root) skip();
    char p[4096];
    snprintf(p, sizeof p, "%s/tests/fuzz/crashes/jpeg-arithmetic-forged-size-686MB.jpg", root);
    nn_image im;
    assert_int_equal(nn_jpeg_read(p, 0, &im), NN_E_FORMAT);
    assert_non_null(strstr(nn_errmsg(), "implausible for a 106-byte file"));
    /* a flat 1024x1024 grey picture: about 1 MP in a few KB, under the free size */
    enum { S = 1024 };
    uint8_t *px = malloc((size_t)S * S * 3);
    assert_non_null(px);
    memset(px, 128, (size_t)S * S * 3);
    char q[4200];
    snprintf(q, sizeof q, "%s/flat.jpg", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    assert_int_equal(nn_jpeg_write(q, S, S, 3, px, 90, 0), NN_OK);
    free(px);
    assert_int_equal(nn_jpeg_read(q, 0, &im), NN_OK);
    assert_int_equal(im.w, S);
    nn_image_free(&im);
    unlink(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_labels),
        cmocka_unit_test(test_decode_colour_spaces),
        cmocka_unit_test(test_jpeg_size_must_fit_the_file),
        cmocka_unit_test(test_resize_center),
        cmocka_unit_test(test_crops_flips_tencrop),
        cmocka_unit_test(test_stats_and_lighting),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_score),
        cmocka_unit_test(test_training_learns),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
