/* The Fashion-MNIST data set and the batch loader: validation of the files,
 * bilinear resize against PyTorch's convention, every sample once per epoch,
 * determinism in (seed, epoch, batch), resuming mid-epoch, augmentation. */
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io/dataset.h"
#include "tests/testutil.h"

static void test_resize_matches_half_pixel_convention(void **state)
{
    (void)state;
    /* 2x2 -> 4x4 with half-pixel centers (PyTorch align_corners=False):
       source coordinate of output j is (j + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25,
       clamped to [0, 1]: weights 0, 0.25, 0.75, 1 */
    uint8_t src[4] = {0, 100, 200, 40};
    float dst[16];
    nn_resize_bilinear(src, 2, 2, dst, 4, 4);
    const double wy[4] = {0, 0.25, 0.75, 1};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) {
            double top = 0 * (1 - wy[j]) + 100 * wy[j], bot = 200 * (1 - wy[j]) + 40 * wy[j];
            assert_float_equal(dst[i * 4 + j], top * (1 - wy[i]) + bot * wy[i], 1e-4);
        }
    /* identity size is a copy */
    nn_resize_bilinear(src, 2, 2, dst, 2, 2);
    for (int i = 0; i < 4; i++) assert_float_equal(dst[i], src[i], 0);
}

/* n images of 1x4x4 whose every pixel is the image index (mod 256) */
static nn_dataset synthetic(int n)
{
    nn_dataset d = {0};
    d.n = n;
    d.c = 1;
    d.h = d.w = 4;
    d.classes = 10;
    d.images = malloc((size_t)n * 16);
    d.labels = malloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        memset(d.images + (size_t)i * 16, i % 256, 16);
        d.labels[i] = i % 10;
    }
    return d;
}

/* the image index of sample k of a batch (mean 0, std 1/255: x = pixel) */
static int index_of(const float *x, int k) { return (int)lrintf(x[(size_t)k * 16]); }

static void collect(nn_loader *l, int epoch, int first, int *out, int *count)
{
    const float *x;
    const int32_t *y;
    int n;
    *count = 0;
    assert_int_equal(nn_loader_start(l, epoch, first), NN_OK);
    for (;;) {
        assert_int_equal(nn_loader_next(l, &x, &y, &n), NN_OK);
        if (!n) break;
        for (int k = 0; k < n; k++) {
            out[(*count)++] = index_of(x, k);
            assert_int_equal(y[k], index_of(x, k) % 10);
        }
    }
}

static void test_loader_order(void **state)
{
    (void)state;
    enum { N = 250 };
    nn_dataset d = synthetic(N);
    nn_loader_config c = {.batch = 16, .size = 4, .shuffle = true, .mean = 0, .std = 1.0f / 255, .seed = 7};
    nn_loader *l;
    assert_int_equal(nn_loader_new(&l, &d, &c), NN_OK);
    assert_int_equal(nn_loader_batches(l), 16); /* 250 / 16 rounded up: the last batch has 10 */
    int a[N], b[N], e1[N], seen[N] = {0}, n;
    collect(l, 0, 0, a, &n);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) seen[a[i]]++;
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1); /* a permutation */
    collect(l, 0, 0, b, &n);
    assert_memory_equal(a, b, sizeof a); /* same (seed, epoch): same order */
    collect(l, 1, 0, e1, &n);
    assert_memory_not_equal(a, e1, sizeof a); /* the next epoch reshuffles */
    collect(l, 0, 5, b, &n); /* resuming at batch 5 */
    assert_int_equal(n, N - 5 * 16);
    assert_memory_equal(a + 5 * 16, b, (size_t)n * sizeof(int));
    nn_loader_free(l);
    /* a different seed, another order; drop_last drops the partial batch */
    c.seed = 8;
    c.drop_last = true;
    assert_int_equal(nn_loader_new(&l, &d, &c), NN_OK);
    assert_int_equal(nn_loader_batches(l), 15);
    collect(l, 0, 0, b, &n);
    assert_int_equal(n, 240);
    assert_memory_not_equal(a, b, 240 * sizeof(int));
    assert_int_equal(nn_loader_start(l, 0, 99), NN_E_ARG);
    nn_loader_free(l);
    nn_dataset_free(&d);
}

static void test_augmentation(void **state)
{
    (void)state;
    /* one 1x32x32 image, a left-right ramp: flips and shifts are visible */
    nn_dataset d = {0};
    d.n = 64;
    d.c = 1;
    d.h = d.w = 32;
    d.images = malloc(64 * 32 * 32);
    d.labels = calloc(64, sizeof(int32_t));
    for (int k = 0; k < 64; k++)
        for (int i = 0; i < 32; i++)
            for (int j = 0; j < 32; j++) d.images[k * 1024 + i * 32 + j] = (uint8_t)(j * 8);
    nn_loader_config c = {.batch = 64, .size = 32, .augment = true, .mean = 0, .std = 1.0f / 255, .seed = 3};
    nn_loader *l;
    assert_int_equal(nn_loader_new(&l, &d, &c), NN_OK);
    const float *x;
    const int32_t *y;
    int n, flipped = 0, shifted = 0;
    assert_int_equal(nn_loader_start(l, 0, 0), NN_OK);
    assert_int_equal(nn_loader_next(l, &x, &y, &n), NN_OK);
    assert_int_equal(n, 64);
    for (int k = 0; k < 64; k++) {
        const float *im = x + k * 1024;
        /* the middle row, away from shifted-in zeros: increasing or decreasing */
        float a = im[16 * 32 + 10], b = im[16 * 32 + 20];
        assert_true(a != b);
        flipped += a > b;
        /* shifts move the ramp by at most 32/16 = 2 pixels (16 per step of 8) */
        float d10 = fabsf(a - (a < b ? 80.0f : 168.0f));
        assert_true(d10 <= 16.0f + 1e-3f);
        shifted += d10 > 0;
    }
    /* 64 fair coin flips: 12..52 is beyond 5 sigma */
    assert_true(flipped > 12 && flipped < 52);
    assert_true(shifted > 10);
    nn_loader_free(l);
    nn_dataset_free(&d);
}

static void write_gz(const char *path, const uint8_t *hdr, size_t hn, const uint8_t *data, size_t dn)
{
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    assert_int_equal(gzwrite(g, hdr, (unsigned)hn), (int)hn);
    if (dn) assert_int_equal(gzwrite(g, data, (unsigned)dn), (int)dn);
    gzclose(g);
}

static void test_fmnist_validation(void **state)
{
    (void)state;
    char dir[] = "/tmp/convnet_test_ds_XXXXXX", p[256];
    assert_non_null(mkdtemp(dir));
    uint8_t ih[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28};
    uint8_t lh[8] = {0, 0, 8, 1, 0, 0, 0, 3};
    uint8_t img[3 * 784] = {0}, lab[3] = {1, 2, 12};
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    write_gz(p, ih, 16, img, sizeof img);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    write_gz(p, lh, 8, lab, 3);
    nn_dataset d;
    assert_int_equal(nn_fmnist_load(dir, true, &d), NN_E_FORMAT);
    assert_non_null(strstr(nn_errmsg(), "label 12 of sample 2"));
    assert_null(d.images);
    lab[2] = 9;
    lh[7] = 2; /* 2 labels for 3 images */
    write_gz(p, lh, 8, lab, 2);
    assert_int_equal(nn_fmnist_load(dir, true, &d), NN_E_FORMAT);
    assert_non_null(strstr(nn_errmsg(), "2 labels for 3 images"));
    lh[7] = 3;
    write_gz(p, lh, 8, lab, 3);
    assert_int_equal(nn_fmnist_load(dir, true, &d), NN_OK);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.labels[1], 2);
    assert_string_equal(d.class_names[9], "Ankle boot");
    nn_dataset_free(&d);
    /* the test files are missing in that folder: the message names the file */
    assert_int_equal(nn_fmnist_load(dir, false, &d), NN_E_IO);
    assert_non_null(strstr(nn_errmsg(), "t10k-images-idx3-ubyte.gz"));
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_matches_half_pixel_convention),
        cmocka_unit_test(test_loader_order),
        cmocka_unit_test(test_augmentation),
        cmocka_unit_test(test_fmnist_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
