/* PNG writer and reader over libpng. libpng reports errors by longjmp, so
 * every function that calls it keeps its changing state in a heap context
 * (never in locals modified after setjmp) and turns the jump into a status. */
#include "io/png.h"

#include "io/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <png.h>

typedef struct png_ctx {
    const char *path;
    FILE *fp;
    char msg[200];
    uint8_t *data;    /* reader: the pixel buffer being filled */
    size_t rows_cap;  /* reader: rows the buffer can hold */
    bool nomem;       /* reader: the jump was our own allocation failing */
} png_ctx;

static void on_error(png_structp png, png_const_charp msg)
{
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* ---- writing ------------------------------------------------------------ */

static nn_status write_fp(png_ctx *c, int w, int h, int color, int channels, const uint8_t *px)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return nn_error(NN_E_NOMEM, "%s: out of memory starting libpng", c->path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        if (ferror(c->fp))
            return nn_error(NN_E_IO, "%s: write failed: %s (%s)", c->path, c->msg, strerror(errno));
        return nn_error(NN_E_IO, "%s: PNG write failed: %s", c->path, c->msg);
    }
    png_init_io(png, c->fp);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, color, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)w * (size_t)channels;
    for (size_t y = 0; y < (size_t)h; y++) png_write_row(png, px + y * stride);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return NN_OK;
}

typedef struct png_job {
    png_ctx *c;
    int w, h, color, channels;
    const uint8_t *px;
} png_job;

static nn_status write_png_file(FILE *fp, const char *path, void *user)
{
    (void)path;
    png_job *j = user;
    j->c->fp = fp;
    return write_fp(j->c, j->w, j->h, j->color, j->channels, j->px);
}

static nn_status write_atomic(const char *path, int w, int h, int color, int channels,
                              const uint8_t *px)
{
    if (!path || !*path || !px)
        return nn_error(NN_E_ARG, "png: write: NULL path or pixels");
    if (w < 1 || h < 1 || w > NN_PNG_MAX_SIDE || h > NN_PNG_MAX_SIDE)
        return nn_error(NN_E_ARG, "%s: PNG size %dx%d (1 to %d per side)", path, w, h, NN_PNG_MAX_SIDE);
    png_ctx *c = calloc(1, sizeof *c);
    if (!c) return nn_error(NN_E_NOMEM, "%s: out of memory", path);
    c->path = path;
    png_job j = {c, w, h, color, channels, px};
    nn_status s = nn_write_atomic(path, write_png_file, &j);
    free(c);
    return s;
}

nn_status nn_png_write_rgb(const char *path, int w, int h, const uint8_t *rgb)
{
    return write_atomic(path, w, h, PNG_COLOR_TYPE_RGB, 3, rgb);
}

nn_status nn_png_write_gray(const char *path, int w, int h, const uint8_t *gray)
{
    return write_atomic(path, w, h, PNG_COLOR_TYPE_GRAY, 1, gray);
}

/* ---- reading ------------------------------------------------------------ */

/* Grows c->data to hold at least `rows` rows of `stride` bytes, doubling, so
 * memory follows the rows actually decoded rather than the header's claim. */
static bool grow_rows(png_ctx *c, size_t rows, size_t stride, size_t max_rows)
{
    if (rows <= c->rows_cap) return true;
    size_t cap = c->rows_cap ? c->rows_cap : 16;
    while (cap < rows) cap *= 2;
    if (cap > max_rows) cap = max_rows;
    uint8_t *p = realloc(c->data, cap * stride);
    if (!p) return false;
    c->data = p;
    c->rows_cap = cap;
    return true;
}

/* Everything after the signature; out is filled only on success. */
static nn_status read_fp(png_ctx *c, int want, nn_image *out)
{
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return nn_error(NN_E_NOMEM, "%s: out of memory starting libpng", c->path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        if (c->nomem)
            return nn_error(NN_E_NOMEM, "%s: out of memory for the decoded PNG", c->path);
        if (ferror(c->fp)) return nn_error(NN_E_IO, "%s: read error: %s", c->path, c->msg);
        if (feof(c->fp))
            return nn_error(NN_E_FORMAT, "%s: truncated PNG (%s)", c->path, c->msg);
        return nn_error(NN_E_FORMAT, "%s: corrupt PNG: %s", c->path, c->msg);
    }
    png_init_io(png, c->fp);
    png_set_sig_bytes(png, 8);
    png_set_user_limits(png, NN_PNG_MAX_SIDE, NN_PNG_MAX_SIDE);
    png_read_info(png, info);

    png_uint_32 w = 0, h = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    bool gray = (color & PNG_COLOR_MASK_COLOR) == 0;
    int ch = want ? want : gray ? 1 : 3;
    if (depth == 16) png_set_strip_16(png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (gray && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_strip_alpha(png);
    if (ch == 3 && gray) png_set_gray_to_rgb(png);
    if (ch == 1 && !gray) png_set_rgb_to_gray_fixed(png, 1, -1, -1);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);

    size_t stride = (size_t)w * (size_t)ch;
    if (png_get_bit_depth(png, info) != 8 || png_get_channels(png, info) != ch ||
        png_get_rowbytes(png, info) != stride)
        png_error(png, "unsupported pixel layout after conversion");
    /* Interlaced passes revisit every row, so they need the whole image at
     * once: bound it by what the file can hold (deflate expands at most
     * ~1032x, and 1-bit gray to 8-bit RGB another 24x), so a forged header
     * cannot make us allocate. */
    struct stat sb;
    if (passes > 1 && fstat(fileno(c->fp), &sb) == 0 &&
        (double)h * (double)stride > (double)sb.st_size * 1032.0 * 24.0 + 65536.0) {
        char why[160];
        snprintf(why, sizeof why, "header claims %ux%u pixels but the file holds only %lld bytes", (unsigned)w,
                 (unsigned)h, (long long)sb.st_size);
        png_error(png, why);
    }
    if (!grow_rows(c, passes > 1 ? h : 1, stride, h)) {
        c->nomem = true;
        png_error(png, "out of memory");
    }
    for (int pass = 0; pass < passes; pass++) {
        for (size_t y = 0; y < h; y++) {
            if (!grow_rows(c, y + 1, stride, h)) {
                c->nomem = true;
                png_error(png, "out of memory");
            }
            png_read_row(png, c->data + y * stride, NULL);
        }
    }
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    out->w = (int)w;
    out->h = (int)h;
    out->channels = ch;
    out->data = c->data;
    c->data = NULL;
    return NN_OK;
}

nn_status nn_png_read(const char *path, int channels, nn_image *out)
{
    if (!out) return nn_error(NN_E_ARG, "png: read: NULL output");
    memset(out, 0, sizeof *out);
    if (!path) return nn_error(NN_E_ARG, "png: read: NULL path");
    if (channels != 0 && channels != 1 && channels != 3)
        return nn_error(NN_E_ARG, "%s: PNG read: channels must be 0, 1 or 3, not %d", path, channels);
    FILE *fp = fopen(path, "rb");
    if (!fp) return nn_error(NN_E_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t sig[8];
    size_t n = fread(sig, 1, 8, fp);
    if (n < 8 || png_sig_cmp(sig, 0, 8) != 0) {
        bool err = ferror(fp);
        fclose(fp);
        if (err) return nn_error(NN_E_IO, "%s: read error: %s", path, strerror(errno));
        return nn_error(NN_E_FORMAT, "%s: not a PNG file (bad signature)", path);
    }
    png_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        fclose(fp);
        return nn_error(NN_E_NOMEM, "%s: out of memory", path);
    }
    c->path = path;
    c->fp = fp;
    nn_status s = read_fp(c, channels, out);
    fclose(fp);
    free(c->data);
    free(c);
    return s;
}

void nn_image_free(nn_image *img)
{
    if (!img) return;
    free(img->data);
    memset(img, 0, sizeof *img);
}
