/* Image folders, transforms (see imagefolder.h): decoding to RGB bytes, the
 * short-side resize and center crop on S x S x 3 byte images, and the
 * augmentation (random crop, flip, PCA lighting) drawn from the counter-based
 * generator, applied while converting to normalized float CHW. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "core/rng.h"
#include "io/jpeg.h"
#include "io/imagefolder_impl.h"

#define AUG_KEY 0x1A6EF01Dull
#define LIGHT_KEY 0x9CA11647ull

/* ---- single images -------------------------------------------------------- */

nn_status nn_imgf_decode(const char *path, int min_side, nn_image *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return nn_error(NN_E_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t head[8] = {0};
    size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    if (got == 0) return nn_error(NN_E_FORMAT, "%s: empty file", path);
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (got >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) return nn_jpeg_read(path, min_side, out);
    if (got == 8 && memcmp(head, png_sig, 8) == 0) {
        /* gray, palette and 16-bit become 8-bit RGB; alpha is dropped */
        NN_TRY(nn_png_read(path, 3, out));
        return NN_OK;
    }
    return nn_error(NN_E_FORMAT, "%s: not a JPEG or PNG image", path);
}

/* One axis of the resampling: output pixel j (0 <= j < S) of the center crop
 * is sum_k w[j * maxn + k] * src[first[j] + k], k < cnt[j]. */
typedef struct axis {
    int *first, *cnt, maxn;
    float *w;
} axis;

static void axis_free(axis *a)
{
    free(a->first);
    free(a->cnt);
    free(a->w);
}

/* n source pixels -> L resized pixels, of which [off, off + S) are kept. */
static bool axis_make(axis *a, int n, int L, int off, int S)
{
    double f = (double)n / (double)L; /* source pixels per resized pixel */
    a->maxn = f >= 1 ? (int)ceil(f) + 2 : 2;
    a->first = malloc((size_t)S * sizeof(int));
    a->cnt = malloc((size_t)S * sizeof(int));
    a->w = calloc((size_t)S * a->maxn, sizeof(float));
    if (!a->first || !a->cnt || !a->w) return false;
    for (int j = 0; j < S; j++) {
        float *w = a->w + (size_t)j * a->maxn;
        if (f >= 1) { /* area: coverage of [lo, hi) */
            double lo = (double)(off + j) * f, hi = (double)(off + j + 1) * f;
            int k0 = (int)floor(lo), k1 = (int)ceil(hi);
            if (k1 > n) k1 = n;
            if (k0 > k1 - 1) k0 = k1 - 1;
            a->first[j] = k0;
            a->cnt[j] = k1 - k0;
            double tot = 0;
            for (int k = k0; k < k1; k++) {
                double c = fmin(hi, k + 1.0) - fmax(lo, (double)k);
                w[k - k0] = (float)(c > 0 ? c : 0);
                tot += c > 0 ? c : 0;
            }
            for (int k = 0; k < k1 - k0; k++) w[k] = tot > 0 ? (float)(w[k] / tot) : 1.0f / (float)(k1 - k0);
        } else { /* bilinear, half-pixel centers */
            double c = ((double)(off + j) + 0.5) * f - 0.5;
            if (c < 0) c = 0;
            if (c > n - 1) c = n - 1;
            int k0 = (int)c;
            double t = c - k0;
            a->first[j] = k0;
            if (k0 + 1 < n && t > 0) {
                a->cnt[j] = 2;
                w[0] = (float)(1 - t);
                w[1] = (float)t;
            } else {
                a->cnt[j] = 1;
                w[0] = 1;
            }
        }
    }
    return true;
}

/* The resized size of the long side and the crop offsets. */
static void geometry(int w, int h, int S, int *Lw, int *Lh)
{
    if (w <= h) {
        *Lw = S;
        *Lh = (int)floor((double)h * S / w + 0.5);
    } else {
        *Lh = S;
        *Lw = (int)floor((double)w * S / h + 0.5);
    }
    if (*Lw < S) *Lw = S;
    if (*Lh < S) *Lh = S;
}

static bool resize_center(const uint8_t *rgb, int w, int h, int S, uint8_t *out)
{
    int Lw, Lh;
    geometry(w, h, S, &Lw, &Lh);
    axis ax = {0}, ay = {0};
    float *tmp = NULL;
    bool ok = axis_make(&ax, w, Lw, (Lw - S) / 2, S) && axis_make(&ay, h, Lh, (Lh - S) / 2, S);
    int y0 = ok ? ay.first[0] : 0, y1 = ok ? ay.first[S - 1] + ay.cnt[S - 1] : 0; /* source rows used */
    if (ok) ok = (tmp = malloc((size_t)(y1 - y0 + 1) * S * 3 * sizeof(float))) != NULL;
    if (ok) {
        for (int y = y0; y < y1; y++) { /* horizontal pass over the rows used */
            const uint8_t *src = rgb + (size_t)y * w * 3;
            float *t = tmp + (size_t)(y - y0) * S * 3;
            for (int j = 0; j < S; j++) {
                const float *wt = ax.w + (size_t)j * ax.maxn;
                const uint8_t *s = src + (size_t)ax.first[j] * 3;
                float r = 0, g = 0, b = 0;
                for (int k = 0; k < ax.cnt[j]; k++) {
                    r += wt[k] * s[3 * k];
                    g += wt[k] * s[3 * k + 1];
                    b += wt[k] * s[3 * k + 2];
                }
                t[3 * j] = r, t[3 * j + 1] = g, t[3 * j + 2] = b;
            }
        }
        float *acc = tmp + (size_t)(y1 - y0) * S * 3; /* one output row */
        for (int i = 0; i < S; i++) { /* vertical pass, row by row so it vectorizes */
            const float *wt = ay.w + (size_t)i * ay.maxn;
            for (int j = 0; j < 3 * S; j++) acc[j] = 0.5f; /* rounds on truncation */
            for (int k = 0; k < ay.cnt[i]; k++) {
                const float *t = tmp + (size_t)(ay.first[i] - y0 + k) * S * 3;
                float wk = wt[k];
                for (int j = 0; j < 3 * S; j++) acc[j] += wk * t[j];
            }
            uint8_t *o = out + (size_t)i * S * 3;
            for (int j = 0; j < 3 * S; j++) o[j] = (uint8_t)(acc[j] < 0 ? 0 : acc[j] > 255 ? 255 : acc[j]);
        }
    }
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return ok;
}

void nn_imgf_resize_center(const uint8_t *rgb, int w, int h, int S, uint8_t *out)
{
    if (!resize_center(rgb, w, h, S, out)) memset(out, 0, (size_t)S * S * 3);
}

nn_status nn_imgf_load_center(const char *path, int S, uint8_t *out)
{
    nn_image im;
    NN_TRY(nn_imgf_decode(path, S, &im));
    bool ok = resize_center(im.data, im.w, im.h, S, out);
    nn_image_free(&im);
    return ok ? NN_OK : nn_error(NN_E_NOMEM, "%s: out of memory resizing", path);
}

nn_imgf_aug nn_imgf_draw(uint64_t seed, int epoch, int pos, int S, int C, bool flip, float lighting_std)
{
    nn_imgf_aug a = {0};
    uint64_t ctr = ((uint64_t)(uint32_t)epoch << 32) | (uint32_t)pos;
    nn_philox_out r = nn_philox(ctr, seed ^ AUG_KEY);
    uint32_t span = S > C ? (uint32_t)(S - C + 1) : 1;
    a.x = (int)(r.v[0] % span);
    a.y = (int)(r.v[1] % span);
    a.flip = flip && (r.v[2] & 1);
    if (lighting_std > 0)
        for (int i = 0; i < 3; i++) a.alpha[i] = lighting_std * nn_rand_normal(seed ^ LIGHT_KEY, ctr * 4, (uint64_t)i);
    return a;
}

nn_imgf_aug nn_imgf_view(int v, int S, int C)
{
    nn_imgf_aug a = {0};
    int m = S - C, k = v % 5;
    a.y = k == 0 || k == 1 ? 0 : k == 4 ? m / 2 : m;
    a.x = k == 0 || k == 2 ? 0 : k == 4 ? m / 2 : m;
    a.flip = v >= 5;
    return a;
}

void nn_imgf_apply(const uint8_t *img, int S, int C, const nn_imgf_aug *a, const nn_imgf_stats *st,
                   const nn_imgf_norm *norm, float *out)
{
    float shift[3] = {0, 0, 0}, scale[3] = {1, 1, 1};
    nn_imgf_mean mode = norm ? norm->mean : NN_IMGF_MEAN_NONE;
    if (norm)
        for (int c = 0; c < 3; c++) scale[c] = norm->scale[c];
    if (st)
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 3; i++) shift[c] += 255.0f * st->eigvec[3 * c + i] * a->alpha[i] * st->eigval[i];
    if (!st || (mode == NN_IMGF_MEAN_PIXEL && !st->mean_image)) mode = NN_IMGF_MEAN_NONE;
    /* per channel: out = (p + add[c] - mean_pixel) * scale[c] */
    float add[3];
    for (int c = 0; c < 3; c++) add[c] = shift[c] - (mode == NN_IMGF_MEAN_CHANNEL ? st->mean[c] : 0.0f);
    size_t CC = (size_t)C * C;
    for (int i = 0; i < C; i++) {
        size_t off = ((size_t)(a->y + i) * S + (size_t)a->x) * 3;
        const uint8_t *src = img + off;
        const float *mp = mode == NN_IMGF_MEAN_PIXEL ? st->mean_image + off : NULL;
        float *o0 = out + (size_t)i * C, *o1 = o0 + CC, *o2 = o1 + CC;
        for (int j = 0; j < C; j++) {
            int q = 3 * (a->flip ? C - 1 - j : j);
            float m0 = mp ? mp[q] : 0.0f, m1 = mp ? mp[q + 1] : 0.0f, m2 = mp ? mp[q + 2] : 0.0f;
            o0[j] = ((float)src[q] + add[0] - m0) * scale[0];
            o1[j] = ((float)src[q + 1] + add[1] - m1) * scale[1];
            o2[j] = ((float)src[q + 2] + add[2] - m2) * scale[2];
        }
    }
}

