/* IDX reader over zlib's gz* interface (gzip or plain files): validates the
 * header, bounds the size, then reads the uint8 data, growing the buffer as
 * bytes arrive so a forged header cannot force a large allocation. */
#include "io/idx.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <zlib.h>

/* Data is read in steps of at most this many bytes (gzread takes unsigned). */
#define IDX_CHUNK ((size_t)1 << 24)
/* First buffer size; doubled until it holds the header's size. */
#define IDX_INITIAL ((size_t)1 << 20)

/* Reads up to n bytes; returns the count, or -1 on a gzip/read error. */
static long long gz_read_n(gzFile gz, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        size_t want = n - got < IDX_CHUNK ? n - got : IDX_CHUNK;
        int r = gzread(gz, buf + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (long long)got;
}

/* The error for a failed gzread: I/O errors keep errno, the rest are corrupt streams. */
static nn_status gz_fail(gzFile gz, const char *path, const char *when)
{
    int zerr = Z_OK;
    const char *zmsg = gzerror(gz, &zerr);
    if (zerr == Z_ERRNO)
        return nn_error(NN_E_IO, "%s: read error %s: %s", path, when, strerror(errno));
    if (zerr == Z_MEM_ERROR) return nn_error(NN_E_NOMEM, "%s: out of memory %s", path, when);
    /* zlib prefixes its message with the path; zlib decompresses ahead of what
     * was asked, so `when` would be misleading here and is left out */
    size_t pl = strlen(path);
    if (zmsg && strncmp(zmsg, path, pl) == 0 && strncmp(zmsg + pl, ": ", 2) == 0) zmsg += pl + 2;
    return nn_error(NN_E_FORMAT, "%s: corrupt gzip stream: %s", path,
                    zmsg && *zmsg ? zmsg : "unknown zlib error");
}

/* True when the last short read ended because the gzip stream itself stops early. */
static bool gz_cut_short(gzFile gz)
{
    int zerr = Z_OK;
    gzerror(gz, &zerr);
    return zerr == Z_BUF_ERROR;
}

static void dims_str(const nn_idx *x, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < x->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? "x%d" : "%d", x->dims[i]);
}

static nn_status load_header(gzFile gz, const char *path, nn_idx *x)
{
    uint8_t magic[4];
    long long r = gz_read_n(gz, magic, 4);
    if (r < 0) return gz_fail(gz, path, "in the IDX header");
    if (r < 4)
        return nn_error(NN_E_FORMAT, "%s: truncated: %lld bytes, too short for an IDX header", path, r);
    if (magic[0] != 0 || magic[1] != 0)
        return nn_error(NN_E_FORMAT,
                        "%s: not an IDX file (magic %02x %02x %02x %02x, expected 00 00 <type> <ndim>)",
                        path, magic[0], magic[1], magic[2], magic[3]);
    if (magic[2] != NN_IDX_UBYTE) {
        /* 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64: valid IDX, not read here */
        bool known = magic[2] == 0x09 || (magic[2] >= 0x0B && magic[2] <= 0x0E);
        return nn_error(known ? NN_E_UNSUPPORTED : NN_E_FORMAT,
                        "%s: IDX data type 0x%02x %s (only unsigned byte, 0x08, is supported)", path,
                        magic[2], known ? "not supported" : "unknown");
    }
    if (magic[3] < 1 || magic[3] > NN_IDX_MAX_DIMS)
        return nn_error(NN_E_FORMAT, "%s: IDX header has %d dimensions (1 to %d supported)", path,
                        magic[3], NN_IDX_MAX_DIMS);
    x->dtype = magic[2];
    x->ndim = magic[3];

    uint8_t raw[4 * NN_IDX_MAX_DIMS];
    size_t hb = 4 * (size_t)x->ndim;
    r = gz_read_n(gz, raw, hb);
    if (r < 0) return gz_fail(gz, path, "in the IDX header");
    if ((size_t)r < hb)
        return nn_error(NN_E_FORMAT, "%s: truncated: IDX header needs %zu dimension bytes, found %lld",
                        path, hb, r);
    uint64_t total = 1;
    bool over = false;
    for (int i = 0; i < x->ndim; i++) {
        const uint8_t *p = raw + 4 * i;
        uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (d == 0) return nn_error(NN_E_FORMAT, "%s: IDX dimension %d is 0", path, i);
        /* total <= 2^31 before multiplying by d < 2^32, so no overflow in 64 bits */
        total *= d;
        if (total > NN_IDX_MAX_BYTES || d > INT_MAX) {
            over = true;
            total = (uint64_t)NN_IDX_MAX_BYTES + 1;
        }
        x->dims[i] = d > INT_MAX ? INT_MAX : (int)d;
    }
    if (over) {
        char sz[128] = "";
        size_t k = 0;
        for (int i = 0; i < x->ndim; i++) {
            const uint8_t *p = raw + 4 * i;
            uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
            k += (size_t)snprintf(sz + k, sizeof sz - k, i ? "x%u" : "%u", d);
        }
        return nn_error(NN_E_FORMAT, "%s: IDX header says %s, more than the %zu-byte limit", path, sz,
                        NN_IDX_MAX_BYTES);
    }
    for (int i = x->ndim; i < NN_IDX_MAX_DIMS; i++) x->dims[i] = 1;
    x->size = (size_t)total;
    return NN_OK;
}

static nn_status load_data(gzFile gz, const char *path, nn_idx *x)
{
    char shape[96];
    dims_str(x, shape, sizeof shape);
    size_t cap = x->size < IDX_INITIAL ? x->size : IDX_INITIAL;
    size_t got = 0;
    x->data = malloc(cap);
    if (!x->data) return nn_error(NN_E_NOMEM, "%s: out of memory for %zu bytes", path, cap);
    for (;;) {
        long long r = gz_read_n(gz, x->data + got, cap - got);
        if (r < 0) return gz_fail(gz, path, "in the IDX data");
        got += (size_t)r;
        if (got < cap) {
            if (gz_cut_short(gz))
                return nn_error(NN_E_FORMAT,
                                "%s: truncated: header says %s (%zu bytes) but the gzip stream ends "
                                "after %zu bytes",
                                path, shape, x->size, got);
            return nn_error(NN_E_FORMAT,
                            "%s: truncated: header says %s (%zu bytes) but only %zu bytes present",
                            path, shape, x->size, got);
        }
        if (cap == x->size) break;
        size_t ncap = cap > x->size / 2 ? x->size : 2 * cap;
        uint8_t *p = realloc(x->data, ncap);
        if (!p) return nn_error(NN_E_NOMEM, "%s: out of memory for %zu bytes", path, ncap);
        x->data = p;
        cap = ncap;
    }
    /* One more byte: either the clean end of the stream, trailing garbage, or a
     * gzip error that only shows at the end (CRC/length check). */
    uint8_t extra[64];
    long long r = gz_read_n(gz, extra, sizeof extra);
    if (r < 0) return gz_fail(gz, path, "at the end of the IDX data");
    if (r > 0) {
        size_t more = (size_t)r;
        while ((r = gz_read_n(gz, extra, sizeof extra)) > 0) more += (size_t)r;
        if (r < 0) return gz_fail(gz, path, "after the IDX data");
        return nn_error(NN_E_FORMAT, "%s: %zu trailing bytes after the %zu data bytes of a %s IDX file",
                        path, more, x->size, shape);
    }
    if (gz_cut_short(gz))
        return nn_error(NN_E_FORMAT, "%s: truncated gzip stream (no end-of-stream trailer)", path);
    return NN_OK;
}

nn_status nn_idx_load(const char *path, nn_idx *out)
{
    if (!out) return nn_error(NN_E_ARG, "idx: NULL output");
    memset(out, 0, sizeof *out);
    if (!path) return nn_error(NN_E_ARG, "idx: NULL path");
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return nn_error(errno ? NN_E_IO : NN_E_NOMEM, "%s: cannot open: %s", path,
                        errno ? strerror(errno) : "out of memory");
    gzbuffer(gz, 1 << 17);
    nn_idx x = {0};
    nn_status s = load_header(gz, path, &x);
    if (s == NN_OK) s = load_data(gz, path, &x);
    int cr = gzclose_r(gz);
    if (s == NN_OK && cr != Z_OK)
        s = nn_error(NN_E_IO, "%s: error closing: zlib code %d", path, cr);
    if (s != NN_OK) {
        nn_idx_free(&x);
        return s;
    }
    *out = x;
    return NN_OK;
}

void nn_idx_free(nn_idx *x)
{
    if (!x) return;
    free(x->data);
    memset(x, 0, sizeof *x);
}
