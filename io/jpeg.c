/* JPEG reader and writer over libjpeg-turbo (see jpeg.h). libjpeg reports
 * fatal errors through error_exit, which we turn into a longjmp back to the
 * caller; everything that changes after setjmp lives in a heap-free context
 * struct reached through the error manager, never in plain locals. */
#include "io/jpeg.h"

#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <jerror.h>

typedef struct jerr_ctx {
    struct jpeg_error_mgr pub;
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX + 32];
    int truncated;
} jerr_ctx;

static void on_error_exit(j_common_ptr ci)
{
    jerr_ctx *e = (jerr_ctx *)ci->err;
    char buf[JMSG_LENGTH_MAX];
    e->pub.format_message(ci, buf);
    snprintf(e->msg, sizeof e->msg, "%s", buf);
    longjmp(e->jmp, 1);
}

/* Warnings are silent, except the ones that mean the data ran out: libjpeg
 * would fill the rest of the picture with gray and call it a success. */
static void on_emit(j_common_ptr ci, int level)
{
    jerr_ctx *e = (jerr_ctx *)ci->err;
    if (level < 0 && (e->pub.msg_code == JWRN_JPEG_EOF || e->pub.msg_code == JWRN_HIT_MARKER)) {
        char buf[JMSG_LENGTH_MAX];
        e->pub.format_message(ci, buf);
        snprintf(e->msg, sizeof e->msg, "truncated or corrupt: %s", buf);
        e->truncated = 1;
        longjmp(e->jmp, 1);
    }
}

typedef struct dec_state {
    struct jpeg_decompress_struct ci;
    jerr_ctx err;
    const uint8_t *buf;
    size_t n;
    const char *name;
    int min_side;
    uint8_t *row;   /* CMYK scanline */
    nn_image img;
} dec_state;

/* Everything the decoder touches after setjmp is in *d. */
static nn_status decode(dec_state *d)
{
    d->ci.err = jpeg_std_error(&d->err.pub);
    d->err.pub.error_exit = on_error_exit;
    d->err.pub.emit_message = on_emit;
    if (setjmp(d->err.jmp)) {
        nn_status s = nn_error(NN_E_FORMAT, "%s: JPEG decode failed: %s", d->name, d->err.msg);
        jpeg_destroy_decompress(&d->ci);
        return s;
    }
    jpeg_create_decompress(&d->ci);
    jpeg_mem_src(&d->ci, d->buf, (unsigned long)d->n);
    jpeg_read_header(&d->ci, TRUE);
    if (d->ci.image_width > NN_JPEG_MAX_SIDE || d->ci.image_height > NN_JPEG_MAX_SIDE ||
        d->ci.image_width == 0 || d->ci.image_height == 0) {
        snprintf(d->err.msg, sizeof d->err.msg, "size %ux%u outside 1..%d", d->ci.image_width,
                 d->ci.image_height, NN_JPEG_MAX_SIDE);
        longjmp(d->err.jmp, 1);
    }
    const double pixels = (double)d->ci.image_width * d->ci.image_height;
    if (pixels > NN_JPEG_FREE_PIXELS && pixels > NN_JPEG_PIXELS_PER_BYTE * (double)d->n) {
        snprintf(d->err.msg, sizeof d->err.msg, "size %ux%u is implausible for a %zu-byte file (forged header?)",
                 d->ci.image_width, d->ci.image_height, d->n);
        longjmp(d->err.jmp, 1);
    }
    bool cmyk = d->ci.jpeg_color_space == JCS_CMYK || d->ci.jpeg_color_space == JCS_YCCK;
    d->ci.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    if (d->min_side > 0) {
        unsigned shortest = d->ci.image_width < d->ci.image_height ? d->ci.image_width : d->ci.image_height;
        unsigned m = 8;
        /* libjpeg's scaled size is ceil(side * m / 8) */
        while (m > 1 && (shortest * (m - 1) + 7) / 8 >= (unsigned)d->min_side) m--;
        d->ci.scale_num = m;
        d->ci.scale_denom = 8;
    }
    /* A forged header must not make us (or libjpeg) allocate what the file
     * cannot hold: libjpeg's own buffers (a progressive file's coefficients)
     * get a cap that grows with the file, and our pixel rows grow as they
     * are decoded, so a header that lies fails while the buffer is small. */
    d->ci.mem->max_memory_to_use = 64L * 1024 * 1024 + 256L * (long)d->n;
    jpeg_start_decompress(&d->ci);
    size_t w = d->ci.output_width;
    d->img.w = (int)w;
    d->img.h = (int)d->ci.output_height;
    d->img.channels = 3;
    if (cmyk && !(d->row = malloc(w * 4))) {
        jpeg_destroy_decompress(&d->ci);
        return nn_error(NN_E_NOMEM, "%s: out of memory for a %dx%d picture", d->name, d->img.w, d->img.h);
    }
    /* Photoshop (and libjpeg's own writer) mark inverted CMYK with an Adobe
     * APP14 segment: stored byte = 255 - ink, so R = c * k / 255. */
    bool inverted = d->ci.saw_Adobe_marker;
    size_t rows_cap = 0;
    while (d->ci.output_scanline < d->ci.output_height) {
        size_t y = d->ci.output_scanline;
        if (y >= rows_cap) {
            size_t cap = rows_cap ? rows_cap * 2 : 16;
            if (cap > d->ci.output_height) cap = d->ci.output_height;
            uint8_t *p = realloc(d->img.data, cap * w * 3);
            if (!p) {
                jpeg_destroy_decompress(&d->ci);
                return nn_error(NN_E_NOMEM, "%s: out of memory for a %dx%d picture", d->name, d->img.w, d->img.h);
            }
            d->img.data = p;
            rows_cap = cap;
        }
        uint8_t *dst = d->img.data + y * w * 3;
        if (!cmyk) {
            JSAMPROW r = dst;
            jpeg_read_scanlines(&d->ci, &r, 1);
            continue;
        }
        JSAMPROW r = d->row;
        jpeg_read_scanlines(&d->ci, &r, 1);
        for (size_t x = 0; x < w; x++) {
            unsigned c = d->row[4 * x], m = d->row[4 * x + 1], y = d->row[4 * x + 2], k = d->row[4 * x + 3];
            if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
            dst[3 * x] = (uint8_t)((c * k + 127) / 255);
            dst[3 * x + 1] = (uint8_t)((m * k + 127) / 255);
            dst[3 * x + 2] = (uint8_t)((y * k + 127) / 255);
        }
    }
    jpeg_finish_decompress(&d->ci);
    jpeg_destroy_decompress(&d->ci);
    return NN_OK;
}

nn_status nn_jpeg_decode(const uint8_t *buf, size_t n, const char *name, int min_side, nn_image *out)
{
    memset(out, 0, sizeof *out);
    if (!name) name = "(memory)";
    if (n < 4 || buf[0] != 0xFF || buf[1] != 0xD8)
        return nn_error(NN_E_FORMAT, "%s: not a JPEG file (no SOI marker)", name);
    dec_state *d = calloc(1, sizeof *d);
    if (!d) return nn_error(NN_E_NOMEM, "%s: out of memory", name);
    d->buf = buf;
    d->n = n;
    d->name = name;
    d->min_side = min_side;
    nn_status s = decode(d);
    if (s == NN_OK)
        *out = d->img;
    else
        free(d->img.data);
    free(d->row);
    free(d);
    return s;
}

nn_status nn_jpeg_read(const char *path, int min_side, nn_image *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return nn_error(NN_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size < 0) {
        fclose(f);
        return nn_error(NN_E_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    if (sb.st_size > (off_t)1 << 30) {
        fclose(f);
        return nn_error(NN_E_FORMAT, "%s: %lld bytes is too large for a picture", path, (long long)sb.st_size);
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return nn_error(NN_E_NOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != n) {
        free(buf);
        return nn_error(NN_E_IO, "%s: read failed", path);
    }
    nn_status s = nn_jpeg_decode(buf, n, path, min_side, out);
    free(buf);
    return s;
}

typedef struct enc_state {
    struct jpeg_compress_struct ci;
    jerr_ctx err;
    FILE *f;
} enc_state;

nn_status nn_jpeg_write(const char *path, int w, int h, int channels, const uint8_t *px, int quality,
                        int adobe_inverted)
{
    if (w < 1 || h < 1 || w > NN_JPEG_MAX_SIDE || h > NN_JPEG_MAX_SIDE || !px ||
        (channels != 1 && channels != 3 && channels != 4) || quality < 1 || quality > 100)
        return nn_error(NN_E_ARG, "%s: cannot write a %dx%dx%d JPEG at quality %d", path, w, h, channels, quality);
    enc_state *e = calloc(1, sizeof *e);
    if (!e) return nn_error(NN_E_NOMEM, "%s: out of memory", path);
    e->f = fopen(path, "wb");
    if (!e->f) {
        free(e);
        return nn_error(NN_E_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    e->ci.err = jpeg_std_error(&e->err.pub);
    e->err.pub.error_exit = on_error_exit;
    if (setjmp(e->err.jmp)) {
        nn_status s = nn_error(NN_E_IO, "%s: JPEG write failed: %s", path, e->err.msg);
        jpeg_destroy_compress(&e->ci);
        fclose(e->f);
        free(e);
        return s;
    }
    jpeg_create_compress(&e->ci);
    jpeg_stdio_dest(&e->ci, e->f);
    e->ci.image_width = (JDIMENSION)w;
    e->ci.image_height = (JDIMENSION)h;
    e->ci.input_components = channels;
    e->ci.in_color_space = channels == 1 ? JCS_GRAYSCALE : channels == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&e->ci);
    if (channels == 4) {
        jpeg_set_colorspace(&e->ci, JCS_CMYK);
        e->ci.write_Adobe_marker = adobe_inverted ? TRUE : FALSE;
    }
    jpeg_set_quality(&e->ci, quality, TRUE);
    jpeg_start_compress(&e->ci, TRUE);
    size_t stride = (size_t)w * channels;
    while (e->ci.next_scanline < e->ci.image_height) {
        JSAMPROW r = (JSAMPROW)(px + (size_t)e->ci.next_scanline * stride);
        jpeg_write_scanlines(&e->ci, &r, 1);
    }
    jpeg_finish_compress(&e->ci);
    jpeg_destroy_compress(&e->ci);
    int bad = ferror(e->f);
    if (fclose(e->f) != 0) bad = 1;
    free(e);
    if (bad) return nn_error(NN_E_IO, "%s: write failed: %s", path, strerror(errno));
    return NN_OK;
}
