/* PNG: write then read back RGB and gray pictures pixel for pixel; read
 * palette/RGBA/16-bit/interlaced files made here with libpng directly;
 * corrupt, truncated, forged and foreign files; atomic writes. */
#include "tests/testutil.h"

#include <dirent.h>
#include <png.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "io/png.h"

static int setup(void **state)
{
    (void)state;
    return tu_tmpdir_make("png");
}

static int teardown(void **state)
{
    (void)state;
    return tu_tmpdir_remove();
}

static void expect_read_fail(const char *path, nn_status s, const char *needle)
{
    nn_image im;
    memset(&im, 0xab, sizeof im);
    nn_status got = nn_png_read(path, 0, &im);
    const char *m = nn_errmsg();
    if (got != s) fail_msg("%s: expected %s, got %s: %s", path, nn_status_str(s), nn_status_str(got), m);
    if (!strstr(m, path)) fail_msg("message does not name the file: %s", m);
    if (needle && !strstr(m, needle)) fail_msg("message lacks \"%s\": %s", needle, m);
    assert_null(im.data);
    assert_int_equal(im.w, 0);
}

/* A w x h RGB test card: gradients plus a pseudo-random channel. */
static uint8_t *make_rgb(int w, int h)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    assert_non_null(p);
    uint32_t r = 12345;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            r = r * 1664525u + 1013904223u;
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(x * 255 / (w - 1));
            q[1] = (uint8_t)(y * 255 / (h - 1));
            q[2] = (uint8_t)(r >> 24);
        }
    return p;
}

static void test_rgb_roundtrip(void **state)
{
    (void)state;
    const int w = 37, h = 23;
    uint8_t *rgb = make_rgb(w, h);
    const char *path = tu_path("card.png");
    assert_int_equal(nn_png_write_rgb(path, w, h, rgb), NN_OK);
    nn_image im;
    assert_int_equal(nn_png_read(path, 0, &im), NN_OK);
    assert_int_equal(im.w, w);
    assert_int_equal(im.h, h);
    assert_int_equal(im.channels, 3);
    assert_memory_equal(im.data, rgb, (size_t)w * h * 3);
    nn_image_free(&im);
    assert_null(im.data);
    assert_int_equal(nn_png_read(path, 3, &im), NN_OK);
    assert_memory_equal(im.data, rgb, (size_t)w * h * 3);
    nn_image_free(&im);

    /* to gray: exact where r == g == b, and within the weights' range elsewhere */
    for (int i = 0; i < w * h; i++) {
        if (i % 2) continue;
        rgb[3 * i + 1] = rgb[3 * i + 2] = rgb[3 * i];
    }
    assert_int_equal(nn_png_write_rgb(path, w, h, rgb), NN_OK);
    assert_int_equal(nn_png_read(path, 1, &im), NN_OK);
    assert_int_equal(im.channels, 1);
    for (int i = 0; i < w * h; i++) {
        const uint8_t *q = rgb + 3 * i;
        int lo = q[0], hi = q[0];
        for (int c = 1; c < 3; c++) {
            lo = q[c] < lo ? q[c] : lo;
            hi = q[c] > hi ? q[c] : hi;
        }
        if (i % 2 == 0) assert_int_equal(im.data[i], q[0]);
        else assert_in_range(im.data[i], lo, hi);
    }
    nn_image_free(&im);
    nn_image_free(NULL);
    free(rgb);
}

static void test_gray_roundtrip(void **state)
{
    (void)state;
    const int w = 28, h = 28;
    uint8_t g[28 * 28];
    for (int i = 0; i < w * h; i++) g[i] = (uint8_t)(i * 31 + 7);
    const char *path = tu_path("gray.png");
    assert_int_equal(nn_png_write_gray(path, w, h, g), NN_OK);
    nn_image im;
    assert_int_equal(nn_png_read(path, 0, &im), NN_OK);
    assert_int_equal(im.channels, 1);
    assert_int_equal(im.w, 28);
    assert_memory_equal(im.data, g, sizeof g);
    nn_image_free(&im);
    assert_int_equal(nn_png_read(path, 3, &im), NN_OK);
    assert_int_equal(im.channels, 3);
    for (int i = 0; i < w * h; i++)
        for (int c = 0; c < 3; c++) assert_int_equal(im.data[3 * i + c], g[i]);
    nn_image_free(&im);
    /* one pixel */
    assert_int_equal(nn_png_write_gray(tu_path("one.png"), 1, 1, g), NN_OK);
    assert_int_equal(nn_png_read(tu_path("one.png"), 0, &im), NN_OK);
    assert_int_equal(im.data[0], g[0]);
    nn_image_free(&im);
}

/* Writes a PNG with libpng directly: any color type/depth/interlace, rows given packed. */
static void write_png_raw(const char *path, int w, int h, int depth, int color, int interlace,
                          const uint8_t *rows, size_t stride, const png_color *pal, int npal,
                          const png_byte *trns, int ntrns)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png))) fail_msg("libpng failed writing %s", path);
    png_init_io(png, fp);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color, interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (trns) png_set_tRNS(png, info, trns, ntrns, NULL);
    png_write_info(png, info);
    if (depth == 16) png_set_swap(png); /* rows given little-endian */
    png_bytep *rp = malloc((size_t)h * sizeof *rp);
    assert_non_null(rp);
    for (int y = 0; y < h; y++) rp[y] = (png_bytep)(rows + (size_t)y * stride);
    png_write_image(png, rp);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rp);
    fclose(fp);
}

static void test_formats(void **state)
{
    (void)state;
    nn_image im;
    /* 4-bit palette with transparency: expanded to RGB, alpha dropped */
    const png_color pal[3] = {{255, 0, 0}, {0, 255, 0}, {10, 20, 30}};
    const png_byte trns[1] = {0};
    const uint8_t prow[2][2] = {{0x01, 0x20}, {0x21, 0x00}}; /* 3x2 pixels: 0 1 2 / 2 1 0 */
    const int idx[6] = {0, 1, 2, 2, 1, 0};
    write_png_raw(tu_path("pal.png"), 3, 2, 4, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, &prow[0][0],
                  2, pal, 3, trns, 1);
    assert_int_equal(nn_png_read(tu_path("pal.png"), 0, &im), NN_OK);
    assert_int_equal(im.channels, 3);
    assert_int_equal(im.w, 3);
    assert_int_equal(im.h, 2);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(im.data[3 * i + 0], pal[idx[i]].red);
        assert_int_equal(im.data[3 * i + 1], pal[idx[i]].green);
        assert_int_equal(im.data[3 * i + 2], pal[idx[i]].blue);
    }
    nn_image_free(&im);

    /* RGBA: alpha dropped; and to gray */
    uint8_t rgba[4 * 5 * 4];
    for (int i = 0; i < 20; i++) {
        rgba[4 * i] = (uint8_t)(i * 12);
        rgba[4 * i + 1] = (uint8_t)(i * 12);
        rgba[4 * i + 2] = (uint8_t)(i * 12);
        rgba[4 * i + 3] = (uint8_t)(i * 5);
    }
    write_png_raw(tu_path("rgba.png"), 5, 4, 8, PNG_COLOR_TYPE_RGB_ALPHA, PNG_INTERLACE_NONE, rgba,
                  20, NULL, 0, NULL, 0);
    assert_int_equal(nn_png_read(tu_path("rgba.png"), 0, &im), NN_OK);
    assert_int_equal(im.channels, 3);
    for (int i = 0; i < 20; i++)
        for (int c = 0; c < 3; c++) assert_int_equal(im.data[3 * i + c], rgba[4 * i + c]);
    nn_image_free(&im);
    assert_int_equal(nn_png_read(tu_path("rgba.png"), 1, &im), NN_OK);
    assert_int_equal(im.channels, 1);
    for (int i = 0; i < 20; i++) assert_int_equal(im.data[i], rgba[4 * i]);
    nn_image_free(&im);

    /* 16-bit gray: the high byte survives */
    uint16_t g16[6 * 3];
    for (int i = 0; i < 18; i++) g16[i] = (uint16_t)(i * 3000 + 0x0100 * i);
    write_png_raw(tu_path("g16.png"), 6, 3, 16, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                  (const uint8_t *)g16, 12, NULL, 0, NULL, 0);
    assert_int_equal(nn_png_read(tu_path("g16.png"), 0, &im), NN_OK);
    assert_int_equal(im.channels, 1);
    for (int i = 0; i < 18; i++) {
        /* strip_16 rounds or truncates depending on the libpng build: within one */
        int want = g16[i] >> 8;
        assert_in_range(im.data[i], want, want + 1 > 255 ? 255 : want + 1);
    }
    nn_image_free(&im);

    /* 1-bit gray: expanded to 0/255 */
    const uint8_t bits[2] = {0xA0, 0x40}; /* 3x2: 1 0 1 / 0 1 0 */
    write_png_raw(tu_path("bits.png"), 3, 2, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, bits, 1, NULL,
                  0, NULL, 0);
    assert_int_equal(nn_png_read(tu_path("bits.png"), 0, &im), NN_OK);
    const uint8_t want_bits[6] = {255, 0, 255, 0, 255, 0};
    assert_memory_equal(im.data, want_bits, 6);
    nn_image_free(&im);

    /* Adam7 interlaced RGB */
    const int w = 19, h = 13;
    uint8_t *rgb = make_rgb(w, h);
    write_png_raw(tu_path("adam7.png"), w, h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_ADAM7, rgb,
                  (size_t)w * 3, NULL, 0, NULL, 0);
    assert_int_equal(nn_png_read(tu_path("adam7.png"), 0, &im), NN_OK);
    assert_int_equal(im.channels, 3);
    assert_memory_equal(im.data, rgb, (size_t)w * h * 3);
    nn_image_free(&im);
    free(rgb);
}

/* Appends one PNG chunk (length, type, data, CRC). */
static size_t put_chunk(uint8_t *b, const char *type, const uint8_t *d, uint32_t n)
{
    size_t k = 0;
    for (int i = 3; i >= 0; i--) b[k++] = (uint8_t)(n >> (8 * i));
    memcpy(b + k, type, 4);
    if (n) memcpy(b + k + 4, d, n);
    uLong crc = crc32(0L, b + k, n + 4);
    k += 4 + n;
    for (int i = 3; i >= 0; i--) b[k++] = (uint8_t)(crc >> (8 * i));
    return k;
}

static void test_corrupt(void **state)
{
    (void)state;
    const int w = 40, h = 30;
    uint8_t *rgb = make_rgb(w, h);
    const char *good = tu_path("good.png");
    assert_int_equal(nn_png_write_rgb(good, w, h, rgb), NN_OK);
    free(rgb);
    size_t n;
    uint8_t *raw = tu_read_all(good, &n);

    /* a flipped byte inside IDAT (zlib or CRC notices), then inside IHDR (CRC) */
    uint8_t *c = malloc(n);
    assert_non_null(c);
    memcpy(c, raw, n);
    c[n / 2] ^= 0x55;
    tu_write_plain(tu_path("flip.png"), c, n);
    expect_read_fail(tu_path("flip.png"), NN_E_FORMAT, "corrupt PNG");
    memcpy(c, raw, n);
    c[8 + 8 + 3] ^= 0x01; /* width, low byte */
    tu_write_plain(tu_path("ihdr.png"), c, n);
    expect_read_fail(tu_path("ihdr.png"), NN_E_FORMAT, "CRC");
    free(c);

    tu_write_plain(tu_path("trunc.png"), raw, n / 2);
    expect_read_fail(tu_path("trunc.png"), NN_E_FORMAT, NULL);
    tu_write_plain(tu_path("sigonly.png"), raw, 8);
    expect_read_fail(tu_path("sigonly.png"), NN_E_FORMAT, NULL);
    tu_write_plain(tu_path("text.png"), "hello, world\n", 13);
    expect_read_fail(tu_path("text.png"), NN_E_FORMAT, "not a PNG");
    tu_write_plain(tu_path("empty.png"), "", 0);
    expect_read_fail(tu_path("empty.png"), NN_E_FORMAT, "not a PNG");

    /* forged IHDRs with valid CRCs: too large, and large with no data */
    uint8_t buf[256];
    for (int pass = 0; pass < 2; pass++) {
        uint32_t side = pass ? 16384 : 100000;
        uint8_t ihdr[13] = {0};
        for (int i = 0; i < 4; i++) ihdr[i] = ihdr[4 + i] = (uint8_t)(side >> (8 * (3 - i)));
        ihdr[8] = 8;
        ihdr[9] = PNG_COLOR_TYPE_RGB;
        size_t k = 8;
        memcpy(buf, raw, 8);
        k += put_chunk(buf + k, "IHDR", ihdr, 13);
        k += put_chunk(buf + k, "IEND", NULL, 0);
        const char *p = tu_path(pass ? "nodata.png" : "huge.png");
        tu_write_plain(p, buf, k);
        expect_read_fail(p, NN_E_FORMAT, NULL);
    }

    /* 16384x16384 gray (256 MiB decoded) whose IDAT holds only 3 rows: fails as
     * short of data, in a child whose address space could not hold the claim */
    {
        const uLong row = 16384 + 1, nrows = 3;
        uint8_t *img = calloc(nrows, row);
        assert_non_null(img);
        uLongf zn = compressBound(nrows * row);
        uint8_t *z = malloc(zn);
        uint8_t *png = malloc(zn + 128);
        assert_true(z && png);
        assert_int_equal(compress(z, &zn, img, nrows * row), Z_OK);
        uint8_t ihdr[13] = {0, 0, 0x40, 0, 0, 0, 0x40, 0, 8, PNG_COLOR_TYPE_GRAY, 0, 0, 0};
        size_t k = 8;
        memcpy(png, raw, 8);
        k += put_chunk(png + k, "IHDR", ihdr, 13);
        k += put_chunk(png + k, "IDAT", z, (uint32_t)zn);
        k += put_chunk(png + k, "IEND", NULL, 0);
        const char *p = tu_path("partial.png");
        tu_write_plain(p, png, k);
        free(img);
        free(z);
        free(png);
#if HAVE_ASAN
        expect_read_fail(p, NN_E_FORMAT, NULL);
#else
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            long pages = 0;
            FILE *f = fopen("/proc/self/statm", "r");
            if (!f || fscanf(f, "%ld", &pages) != 1) _exit(3);
            fclose(f);
            struct rlimit rl;
            rl.rlim_cur = rl.rlim_max =
                (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + ((rlim_t)128 << 20);
            if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(4);
            void *probe = malloc((size_t)256 << 20);
            if (probe) _exit(5);
            nn_image im;
            nn_status s = nn_png_read(p, 0, &im);
            _exit(s == NN_E_FORMAT && strstr(nn_errmsg(), p) ? 0 : s == NN_E_NOMEM ? 6 : 1);
        }
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        if (WEXITSTATUS(st) == 5) print_message("RLIMIT_AS not effective here; allocation cap unchecked\n");
        else assert_int_equal(WEXITSTATUS(st), 0);
#endif
    }
    free(raw);

    expect_read_fail(tu_path("missing.png"), NN_E_IO, "No such file");
    nn_image im;
    assert_int_equal(nn_png_read(good, 2, &im), NN_E_ARG);
    assert_null(im.data);
}

/* 300x300 random RGB: ~270 KB that does not compress */
enum { NOISE_W = 300, NOISE_H = 300 };

static nn_status write_noise(const char *path, const void *noise)
{
    return nn_png_write_rgb(path, NOISE_W, NOISE_H, noise);
}

static void test_atomic(void **state)
{
    (void)state;
    uint8_t px[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const char *bad = tu_path("no/such/dir/x.png");
    assert_int_equal(nn_png_write_rgb(bad, 2, 2, px), NN_E_IO);
    assert_non_null(strstr(nn_errmsg(), bad));
    struct stat st;
    assert_int_not_equal(stat(tu_path("no"), &st), 0);
    assert_int_equal(nn_png_write_gray(tu_path("zero.png"), 0, 5, px), NN_E_ARG);
    assert_int_equal(nn_png_write_gray(tu_path("null.png"), 2, 2, NULL), NN_E_ARG);
    assert_int_not_equal(stat(tu_path("zero.png"), &st), 0);

    /* an existing picture survives a write that fails half way (file size limit) */
    const char *path = tu_path("keep.png");
    assert_int_equal(nn_png_write_rgb(path, 2, 2, px), NN_OK);
    uint8_t *noise = malloc(NOISE_W * NOISE_H * 3);
    assert_non_null(noise);
    uint32_t r = 1;
    for (size_t i = 0; i < NOISE_W * NOISE_H * 3; i++) {
        r = r * 1664525u + 1013904223u;
        noise[i] = (uint8_t)(r >> 24);
    }
    tu_assert_failed_write_keeps(path, 16384, write_noise, noise);

    assert_int_equal(nn_png_write_rgb(path, NOISE_W, NOISE_H, noise), NN_OK);
    nn_image im;
    assert_int_equal(nn_png_read(path, 0, &im), NN_OK);
    assert_memory_equal(im.data, noise, NOISE_W * NOISE_H * 3);
    nn_image_free(&im);
    free(noise);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rgb_roundtrip),
        cmocka_unit_test(test_gray_roundtrip),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_atomic),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
