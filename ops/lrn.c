/* lrn: local response normalization across channels on (N, C, H, W) float32,
 * the paper's formula (alpha NOT divided by size, see ops.h and docs/alexnet.md):
 *   scale[c] = k + alpha * sum_{j = max(0, c - size/2)}^{min(C-1, c + size/2)} x[j]^2
 *   y[c]     = x[c] * scale[c]^-beta
 * size/2 is integer division, so an even size uses a window of size + 1
 * channels (e.g. size 4: c-2 .. c+2), exactly as the paper's formula reads;
 * PyTorch's asymmetric even window is NOT reproduced. */
#include <math.h>

#include "core/op.h"
#include "core/par.h"
#include "ops/cpu_kernels.h"
#include "ops/ops.h"
#include "ops/registry.h"

/* Spatial positions handled together: the channel loop runs over a tile so
 * the innermost loop is contiguous and vectorizes, and the running window sum
 * (one double per position) stays on the stack. */
#define LRN_TILE 64
#define LRN_RING 16       /* backward: terms of windows up to 15 channels kept, not recomputed */
#define LRN_PAR_MIN 16384 /* elements below which threads cost more than they save */

/* s^-beta for a whole row of the tile. beta = 0.75 (the paper's, by far the
 * common case) uses two correctly rounded square roots instead of exp(log).
 * (The sqrt loop vectorizes only under -fno-math-errno; with errno semantics
 * GCC keeps a scalar sqrtss per element, about 3x slower.) */
static inline void lrn_pow_row(int len, const float *s, float beta, float *out)
{
    if (beta == 0.75f) {
#pragma omp simd
        for (int q = 0; q < len; q++) {
            float r = sqrtf(s[q]);
            out[q] = 1.0f / (r * sqrtf(r));
        }
    } else {
#pragma omp simd
        for (int q = 0; q < len; q++) out[q] = expf(-beta * logf(s[q]));
    }
}

/* The window half-width, clamped to C (a wider window clips to the same set)
 * so that c + half cannot overflow. */
static inline int lrn_half(const nn_lrn_geom *g) { return g->size / 2 < g->c ? g->size / 2 : g->c; }

/* Forward of tile t (image t / ntiles, positions of its tile t % ntiles). */
static NN_CPU_CLONES void lrn_fwd_tile(const nn_lrn_geom *g, const float *x, float *y, float *scale, long long t)
{
    const int C = g->c, half = lrn_half(g);
    const size_t hw = (size_t)g->h * (size_t)g->w;
    const size_t ntiles = (hw + LRN_TILE - 1) / LRN_TILE;
    const double alpha = g->alpha, k = g->k;
    const float beta = g->beta;
    const size_t b = (size_t)t / ntiles, p0 = ((size_t)t % ntiles) * LRN_TILE;
    const int len = (int)(hw - p0 < LRN_TILE ? hw - p0 : LRN_TILE);
    const size_t base = b * (size_t)C * hw + p0;
    const float *xb = x + base;
    float *yb = y + base, *sb = scale + base;
    /* running sum of squares over the window of channel c, in double:
     * float squares are exact there, so removing a channel cancels its
     * term up to double rounding (~1e-16 of the window's sum) */
    double acc[LRN_TILE];
    float pw[LRN_TILE];
    for (int q = 0; q < len; q++) acc[q] = 0.0;
    for (int j = 0; j <= half && j < C; j++) {
        const float *xj = xb + (size_t)j * hw;
#pragma omp simd
        for (int q = 0; q < len; q++) acc[q] += (double)xj[q] * (double)xj[q];
    }
    for (int c = 0; c < C; c++) {
        const size_t off = (size_t)c * hw;
        if (c > 0) {
            const int in = c + half, out = c - half - 1;
            if (in < C) {
                const float *xi = xb + (size_t)in * hw;
#pragma omp simd
                for (int q = 0; q < len; q++) acc[q] += (double)xi[q] * (double)xi[q];
            }
            if (out >= 0) {
                const float *xo = xb + (size_t)out * hw;
#pragma omp simd
                for (int q = 0; q < len; q++) acc[q] -= (double)xo[q] * (double)xo[q];
            }
        }
#pragma omp simd
        for (int q = 0; q < len; q++) {
            const double a = acc[q] > 0.0 ? acc[q] : 0.0; /* rounding may leave -tiny */
            /* in double: the sum of squares may exceed float range while
             * alpha * sum does not */
            sb[off + q] = (float)(k + alpha * a);
        }
        lrn_pow_row(len, sb + off, beta, pw);
#pragma omp simd
        for (int q = 0; q < len; q++) yb[off + q] = xb[off + q] * pw[q];
    }
}

nn_status nn_cpu_lrn_forward(const nn_lrn_geom *g, const float *x, float *y, float *scale)
{
    const size_t hw = (size_t)g->h * (size_t)g->w;
    const size_t ntiles = (hw + LRN_TILE - 1) / LRN_TILE;
    const long long total = (long long)((size_t)g->n * ntiles);
    const size_t numel = (size_t)g->n * (size_t)g->c * hw;

    NN_PAR_IF(numel > LRN_PAR_MIN, "omp parallel for schedule(static)",
              for (long long t = 0; t < total; t++) lrn_fwd_tile(g, x, y, scale, t););
    return NN_OK;
}

/* dx[i] += dy[i] * scale[i]^-beta
 *        - 2 alpha beta x[i] * sum_{j : i in window(j)} dy[j] y[j] / scale[j]
 * The window relation is symmetric (|i - j| <= size/2), so the sum runs over
 * window(i) and slides like the forward sum. */
static NN_CPU_CLONES void lrn_bwd_tile(const nn_lrn_geom *g, const float *x, const float *y,
                                      const float *scale, const float *dy, float *dx, long long t)
{
    const int C = g->c, half = lrn_half(g);
    const size_t hw = (size_t)g->h * (size_t)g->w;
    const size_t ntiles = (hw + LRN_TILE - 1) / LRN_TILE;
    const float beta = g->beta;
    const double c2 = 2.0 * g->alpha * g->beta;
    /* a window of 2*half+1 channels fits the ring when it has a spare slot */
    const bool use_ring = 2 * half + 2 <= LRN_RING;
    const size_t b = (size_t)t / ntiles, p0 = ((size_t)t % ntiles) * LRN_TILE;
    const int len = (int)(hw - p0 < LRN_TILE ? hw - p0 : LRN_TILE);
    const size_t base = b * (size_t)C * hw + p0;
    const float *xb = x + base, *yb = y + base, *sb = scale + base, *db = dy + base;
    float *dxb = dx + base;
    double acc[LRN_TILE];
    double ring[LRN_RING][LRN_TILE]; /* the window's terms, by channel mod LRN_RING */
    float pw[LRN_TILE];
    for (int q = 0; q < len; q++) acc[q] = 0.0;
    /* What is subtracted when a channel leaves the window is exactly what
     * was added (kept in the ring, or recomputed for very wide windows).
     * In double: for large x, y / scale falls below float's normal range. */
#define LRN_TERM(j, q) ((double)db[(size_t)(j) * hw + (q)] * (double)yb[(size_t)(j) * hw + (q)] / \
                    (double)sb[(size_t)(j) * hw + (q)])
    for (int j = 0; j <= half && j < C; j++) {
        double *r = ring[j % LRN_RING];
#pragma omp simd
        for (int q = 0; q < len; q++) {
            const double t = LRN_TERM(j, q);
            r[q] = t;
            acc[q] += t;
        }
    }
    for (int c = 0; c < C; c++) {
        const size_t off = (size_t)c * hw;
        if (c > 0) {
            const int in = c + half, out = c - half - 1;
            if (out >= 0) {
                if (use_ring) {
                    const double *r = ring[out % LRN_RING];
#pragma omp simd
                    for (int q = 0; q < len; q++) acc[q] -= r[q];
                } else {
#pragma omp simd
                    for (int q = 0; q < len; q++) acc[q] -= LRN_TERM(out, q);
                }
            }
            if (in < C) {
                double *r = ring[in % LRN_RING];
#pragma omp simd
                for (int q = 0; q < len; q++) {
                    const double t = LRN_TERM(in, q);
                    r[q] = t;
                    acc[q] += t;
                }
            }
        }
        lrn_pow_row(len, sb + off, beta, pw);
#pragma omp simd
        for (int q = 0; q < len; q++)
            dxb[off + q] += (float)((double)db[off + q] * pw[q] - c2 * xb[off + q] * acc[q]);
    }
#undef LRN_TERM
}

nn_status nn_cpu_lrn_backward(const nn_lrn_geom *g, const float *x, const float *y,
                              const float *scale, const float *dy, float *dx)
{
    if (!dx) return NN_OK;
    const size_t hw = (size_t)g->h * (size_t)g->w;
    const size_t ntiles = (hw + LRN_TILE - 1) / LRN_TILE;
    const long long total = (long long)((size_t)g->n * ntiles);
    const size_t numel = (size_t)g->n * (size_t)g->c * hw;

    NN_PAR_IF(numel > LRN_PAR_MIN, "omp parallel for schedule(static)",
              for (long long t = 0; t < total; t++) lrn_bwd_tile(g, x, y, scale, dy, dx, t););
    return NN_OK;
}

/* The scale (k + alpha * window sum) is as large as x: keeping it for
 * backward would cost a whole activation per LRN (122 MB in AlexNet at batch
 * 64). It lives in the context's scratch instead, a few images at a time, and
 * backward recomputes it, and y beside it, by running the forward kernel
 * again on the same images: one extra cheap pass for every backend, and the
 * op's output is never read by its backward, so once its consumers have run
 * it can go (AlexNet's maxpool keeps its argmax and lets it go). */
#define LRN_SCRATCH_FLOATS ((size_t)2 << 20)

/* Images per kernel call so that their scale fits LRN_SCRATCH_FLOATS (at least one). */
static int lrn_chunk(const nn_lrn_geom *g)
{
    return nn_op_images_per_call((size_t)g->c * (size_t)g->h * (size_t)g->w, g->n, LRN_SCRATCH_FLOATS);
}

static nn_status lrn_backward(nn_ctx *ctx, nn_node *nd)
{
    float *dx = nn_op_grad_in(nd, 0);
    if (!dx) return NN_OK;
    const nn_lrn_geom *g = nd->saved;
    const nn_device dev = nd->out->device;
    const nn_backend *be = nn_backend_get(dev);
    const size_t per = (size_t)g->c * (size_t)g->h * (size_t)g->w;
    const int chunk = lrn_chunk(g);
    if (per == 0) return NN_OK;
    /* scale and the recomputed y, chunk images of each */
    float *scale = nn_op_scratch(ctx, dev, 2 * (size_t)chunk * per * sizeof(float));
    if (!scale) return nn_ctx_status(ctx);
    float *y = scale + (size_t)chunk * per;
    const float *x = nn_f32(nd->in[0]), *dy = nn_f32(nd->out->grad);
    for (int n0 = 0; n0 < g->n; n0 += chunk) {
        nn_lrn_geom gc = *g;
        gc.n = g->n - n0 < chunk ? g->n - n0 : chunk;
        const size_t off = (size_t)n0 * per;
        NN_TRY(be->lrn_forward(&gc, x + off, y, scale));
        NN_TRY(be->lrn_backward(&gc, x + off, y, scale, dy + off, dx + off));
    }
    return NN_OK;
}

static const nn_op_def lrn_def = {"lrn", lrn_backward};

nn_tensor *nn_lrn(nn_ctx *ctx, nn_tensor *x, nn_lrn_params p)
{
    if (nn_op_skip(ctx, "lrn", 1, &x)) return NULL;
    char xs[64];
    if (x->dtype != NN_F32) return nn_op_fail(ctx, NN_E_ARG, "lrn: input must be float32");
    if (x->ndim != 4)
        return nn_op_fail(ctx, NN_E_SHAPE, "lrn: input must be 4-D (N, C, H, W), got %s",
                          nn_shape_str(x, xs, sizeof xs));
    if (p.size < 1) return nn_op_fail(ctx, NN_E_ARG, "lrn: size %d must be >= 1", p.size);
    if (!(p.alpha >= 0.0f) || !isfinite(p.alpha))
        return nn_op_fail(ctx, NN_E_ARG, "lrn: alpha %g must be finite and >= 0", (double)p.alpha);
    if (!(p.beta >= 0.0f) || !isfinite(p.beta))
        return nn_op_fail(ctx, NN_E_ARG, "lrn: beta %g must be finite and >= 0", (double)p.beta);
    if (!(p.k > 0.0f) || !isfinite(p.k))
        return nn_op_fail(ctx, NN_E_ARG, "lrn: k %g must be finite and > 0", (double)p.k);
    const nn_backend *be = nn_op_backend(ctx, "lrn", x->device);
    if (!be) return NULL;

    nn_lrn_geom g = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], p.size, p.alpha, p.beta, p.k};
    nn_tensor *y = nn_op_tensor(ctx, NN_F32, x->device, 4, x->shape);
    if (!y) return NULL;
    const size_t per = (size_t)g.c * (size_t)g.h * (size_t)g.w;
    const int chunk = lrn_chunk(&g);
    float *scale = per ? nn_op_scratch(ctx, x->device, (size_t)chunk * per * sizeof(float)) : NULL;
    if (per && !scale) return NULL;
    for (int n0 = 0; per && n0 < g.n; n0 += chunk) {
        nn_lrn_geom gc = g;
        gc.n = g.n - n0 < chunk ? g.n - n0 : chunk;
        nn_status s = be->lrn_forward(&gc, nn_f32(x) + (size_t)n0 * per, nn_f32(y) + (size_t)n0 * per, scale);
        if (s != NN_OK) return nn_op_fail_status(ctx, s);
    }

    if (nn_op_wants_grad(ctx, 1, &x)) {
        nn_lrn_geom *sv = nn_op_host(ctx, sizeof *sv);
        if (!sv) return NULL;
        *sv = g;
        nn_node *nd = nn_op_record(ctx, &lrn_def, y, 1, &x);
        if (!nd) return NULL;
        nd->saved = sv;
    }
    return y;
}

/* ---- registry entry (ops/registry.h) ---- */

static nn_tensor *lrn_call(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    nn_lrn_params p;
    memcpy(&p, ((const nn_op_case *)user)->args, sizeof p);
    return nn_lrn(ctx, in[0], p);
}

static nn_status lrn_gc_case(nn_op_case *c, nn_rng *r, nn_device dev)
{
    /* The paper's alpha (1e-4) makes LRN nearly linear, which would let a
     * wrong cross-channel term pass: a larger alpha and inputs in [-2, 2]
     * give that term weight. */
    nn_lrn_params p = {2 * nn_op_pick(r, 1, 3) + 1, 0.05f + 0.45f * nn_rng_uniform1(r), NN_LRN_BETA, NN_LRN_K};
    nn_op_case_set_args(c, &p, sizeof p);
    snprintf(c->about, sizeof c->about, "size %d, alpha %.3g, beta %g, k %g", p.size, (double)p.alpha,
             (double)p.beta, (double)p.k);
    int xs[4] = {nn_op_pick(r, 1, 2), nn_op_pick(r, 1, 9), nn_op_pick(r, 2, 5), nn_op_pick(r, 2, 5)};
    return nn_op_case_rand(c, "x", r, dev, -2, 2, 4, xs);
}

const nn_op_info nn_op_lrn = {"lrn", lrn_gc_case, lrn_call};
