/* maxpool2d: max over KHxKW windows of (N, C, H, W) float32 -> (N, C, OH, OW),
 * OH = (H + 2ph - KH)/sh + 1. Padding counts as -inf (it never wins), and
 * pad <= kernel/2 so every window holds at least one real element. The
 * argmax (index h*W + w within the (n, c) plane) is kept for backward.
 * Ties: the first maximum in row-major window order wins (strict > scan).
 * A window of all -inf picks its first in-bounds element. NaN propagates: the
 * first NaN in the window is the output and takes the gradient. */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "core/op.h"
#include "core/par.h"
#include "ops/cpu_kernels.h"
#include "ops/ops.h"
#include "ops/registry.h"

#define POOL_PAR_MIN 16384 /* output elements below which threads do not pay */
#define POOL_ROW 64         /* outputs of a row handled together on the stack */
#define POOL_PLANE_MAX 4096 /* window maxima of a plane (H x W) kept on the stack */

/* The shape rules the kernels rely on (the op enforces them with messages; the
 * kernel re-checks because the backend table is callable directly). */
static bool pool_geom_ok(const nn_pool_geom *g)
{
    return g->kh >= 1 && g->kw >= 1 && g->sh >= 1 && g->sw >= 1 && g->ph >= 0 && g->pw >= 0 &&
           g->ph <= g->kh / 2 && g->pw <= g->kw / 2 && (long long)g->h + 2LL * g->ph >= g->kh &&
           (long long)g->w + 2LL * g->pw >= g->kw &&
           g->oh == ((long long)g->h + 2LL * g->ph - g->kh) / g->sh + 1 &&
           g->ow == ((long long)g->w + 2LL * g->pw - g->kw) / g->sw + 1 &&
           (long long)g->h * g->w <= INT32_MAX;
}

/* One output row of a plane whose windows lie wholly inside (no padding
 * reaches them): the window positions are visited in the same row-major
 * order as the general loop, each as a branchless pass over the row's
 * outputs, so the compiler can keep best/index in registers and vectorize. */
static void pool_row_inside(const nn_pool_geom *g, const float *xp, int i, float *yr, int32_t *ar)
{
    const int W = g->w, OW = g->ow, sw = g->sw, h0 = i * g->sh - g->ph;
    float best[POOL_ROW];
    int32_t bi[POOL_ROW];
    for (int j0 = 0; j0 < OW; j0 += POOL_ROW) {
        const int len = OW - j0 < POOL_ROW ? OW - j0 : POOL_ROW;
        const int w0 = j0 * sw - g->pw;
        for (int j = 0; j < len; j++) {
            best[j] = xp[h0 * W + w0 + j * sw];
            bi[j] = h0 * W + w0 + j * sw;
        }
        for (int p = 0; p < g->kh; p++) {
            for (int q = p == 0; q < g->kw; q++) {
                const int base = (h0 + p) * W + w0 + q;
                const float *r = xp + base;
                for (int j = 0; j < len; j++) {
                    const float v = r[j * sw], bj = best[j];
                    /* strict >: the first maximum keeps it; a NaN replaces
                     * any number once and then stays */
                    const bool take = v > bj || (v != v && bj == bj);
                    best[j] = take ? v : bj;
                    bi[j] = take ? base + j * sw : bi[j];
                }
            }
        }
        for (int j = 0; j < len; j++) {
            yr[j0 + j] = best[j];
            ar[j0 + j] = bi[j];
        }
    }
}

/* Whether v replaces the running maximum m: strictly greater (the first
 * maximum keeps it), or a NaN replacing a number (then it stays). Written
 * with & and | on the comparisons, not && and ||, so the loops below compile
 * to branch-free compare-and-blend vectors: with branches, the random
 * outcomes mispredicted on every other element. */
static inline bool pool_take(float v, float m)
{
    return (v > m) | ((v != v) & (m == m));
}

/* t ? a : b through masks (the scalar loop tails compiled "?:" to a jump) */
static inline float pool_self(bool t, float a, float b)
{
    uint32_t ua, ub, m = 0u - (uint32_t)t;
    memcpy(&ua, &a, sizeof ua);
    memcpy(&ub, &b, sizeof ub);
    ua = (ua & m) | (ub & ~m);
    memcpy(&a, &ua, sizeof a);
    return a;
}

static inline int32_t pool_seli(bool t, int32_t a, int32_t b)
{
    const int32_t m = -(int32_t)t;
    return (a & m) | (b & ~m);
}

/* A whole plane without padding, in two passes over contiguous memory:
 * hb[k] = max of xp[k .. k+kw-1] for every position k of the flattened
 * plane (positions whose window crosses a row end are computed but never
 * read), then each output row's maxima of hb over the kh rows at the
 * row's positions, subsampled by the stride. The winner is the row-major
 * scan's: the earliest row holding the maximum, in it the earliest column
 * (first maximum in column order, then in row order; NaN likewise). */
static void pool_plane_inside(const nn_pool_geom *g, const float *xp, float *yp, int32_t *ap)
{
    const int W = g->w, OW = g->ow, sw = g->sw, kw = g->kw;
    float hb[POOL_PLANE_MAX], vb[POOL_PLANE_MAX];
    int32_t hi[POOL_PLANE_MAX], vi[POOL_PLANE_MAX];
    const int hrows = (g->oh - 1) * g->sh + g->kh, span = (OW - 1) * sw + 1;
    /* the last position read: row hrows-1, column (OW-1)*sw, whose window ends inside */
    const int len = (hrows - 1) * W + span;
    for (int k = 0; k < len; k++) {
        hb[k] = xp[k];
        hi[k] = k;
    }
    for (int q = 1; q < kw; q++) {
        const float *r = xp + q;
        for (int k = 0; k < len; k++) {
            const float v = r[k], m = hb[k];
            const bool t = pool_take(v, m);
            hb[k] = pool_self(t, v, m);
            hi[k] = pool_seli(t, k + q, hi[k]);
        }
    }
    for (int i = 0; i < g->oh; i++) {
        const float *b0 = hb + (size_t)i * g->sh * W;
        const int32_t *i0 = hi + (size_t)i * g->sh * W;
        for (int k = 0; k < span; k++) {
            vb[k] = b0[k];
            vi[k] = i0[k];
        }
        for (int p = 1; p < g->kh; p++) {
            const float *b = b0 + (size_t)p * W;
            const int32_t *bi = i0 + (size_t)p * W;
            for (int k = 0; k < span; k++) {
                const float v = b[k], m = vb[k];
                const bool t = pool_take(v, m);
                vb[k] = pool_self(t, v, m);
                vi[k] = pool_seli(t, bi[k], vi[k]);
            }
        }
        float *y = yp + (size_t)i * OW;
        int32_t *a = ap + (size_t)i * OW;
        for (int j = 0; j < OW; j++) {
            y[j] = vb[j * sw];
            a[j] = vi[j * sw];
        }
    }
}

nn_status nn_cpu_maxpool_forward(const nn_pool_geom *g, const float *x, float *y, int32_t *argmax)
{
    if (!pool_geom_ok(g)) return nn_error(NN_E_ARG, "maxpool2d: inconsistent pooling geometry");
    const int H = g->h, W = g->w, OH = g->oh, OW = g->ow;
    const long long planes = (long long)g->n * g->c;
    const size_t in_plane = (size_t)H * W, out_plane = (size_t)OH * OW;
    /* outputs j in [jin0, jin1) and rows in [iin0, iin1) have windows wholly inside */
    const int jin0 = (g->pw + g->sw - 1) / g->sw, iin0 = (g->ph + g->sh - 1) / g->sh;
    const int jin1 = W - g->kw + g->pw < 0 ? 0 : (W - g->kw + g->pw) / g->sw + 1;
    const int iin1 = H - g->kh + g->ph < 0 ? 0 : (H - g->kh + g->ph) / g->sh + 1;
    const bool all_cols_inside = jin0 == 0 && jin1 >= OW;
    const bool plane_inside = g->ph == 0 && g->pw == 0 && (size_t)H * W <= POOL_PLANE_MAX;

    NN_PAR_IF((size_t)planes * out_plane > POOL_PAR_MIN, "omp parallel for schedule(static)",
    for (long long pl = 0; pl < planes; pl++) {
        const float *xp = x + (size_t)pl * in_plane;
        float *yp = y + (size_t)pl * out_plane;
        int32_t *ap = argmax + (size_t)pl * out_plane;
        if (plane_inside) {
            pool_plane_inside(g, xp, yp, ap);
            continue;
        }
        for (int i = 0; i < OH; i++) {
            if (all_cols_inside && i >= iin0 && i < iin1) {
                pool_row_inside(g, xp, i, yp + (size_t)i * OW, ap + (size_t)i * OW);
                continue;
            }
            const int h0 = i * g->sh - g->ph;
            const int hs = h0 > 0 ? h0 : 0, he = h0 + g->kh < H ? h0 + g->kh : H;
            for (int j = 0; j < OW; j++) {
                const int w0 = j * g->sw - g->pw;
                const int ws = w0 > 0 ? w0 : 0, we = w0 + g->kw < W ? w0 + g->kw : W;
                int32_t bi = hs * W + ws;
                float best = xp[bi];
                for (int h = hs; h < he; h++) {
                    for (int w = ws; w < we; w++) {
                        const float v = xp[h * W + w];
                        if (v > best || (isnan(v) && !isnan(best))) {
                            best = v;
                            bi = h * W + w;
                        }
                    }
                }
                yp[(size_t)i * OW + j] = best;
                ap[(size_t)i * OW + j] = bi;
            }
        }
    });
    return NN_OK;
}

/* dx[argmax] += dy; overlapping windows that share a maximum add up. One
 * thread per (n, c) plane, so the scatter has no races and a fixed order. */
nn_status nn_cpu_maxpool_backward(const nn_pool_geom *g, const int32_t *argmax, const float *dy,
                                  float *dx)
{
    if (!dx) return NN_OK;
    const long long planes = (long long)g->n * g->c;
    const size_t in_plane = (size_t)g->h * g->w, out_plane = (size_t)g->oh * g->ow;

    NN_PAR_IF((size_t)planes * out_plane > POOL_PAR_MIN, "omp parallel for schedule(static)",
              for (long long pl = 0; pl < planes; pl++) {
                  const int32_t *ap = argmax + (size_t)pl * out_plane;
                  const float *dyp = dy + (size_t)pl * out_plane;
                  float *dxp = dx + (size_t)pl * in_plane;
                  for (size_t o = 0; o < out_plane; o++) dxp[ap[o]] += dyp[o];
              });
    return NN_OK;
}

/* When the op is recorded, the argmax of the whole batch is kept for
 * backward (int32, as large as y: 17 MB for AlexNet's pool1 at batch 64), so
 * backward needs neither x nor y: the input (an LRN's output in AlexNet, 71
 * MB there) can then be released as soon as the forward has read it (see
 * nn_seq_forward). Unrecorded (inference), the argmax goes to the context's
 * scratch a few images at a time. */
#define POOL_SCRATCH_INTS ((size_t)1 << 20)

/* Images per kernel call so that their argmax fits POOL_SCRATCH_INTS (at least one). */
static int pool_chunk(const nn_pool_geom *g)
{
    return nn_op_images_per_call((size_t)g->c * (size_t)g->oh * (size_t)g->ow, g->n, POOL_SCRATCH_INTS);
}

typedef struct pool_saved {
    nn_pool_geom g;
    int32_t *argmax; /* (N, C, OH, OW), on the op's device */
} pool_saved;

static nn_status maxpool_backward(nn_ctx *ctx, nn_node *nd)
{
    (void)ctx;
    float *dx = nn_op_grad_in(nd, 0);
    if (!dx) return NN_OK;
    const pool_saved *sv = nd->saved;
    if ((size_t)sv->g.c * sv->g.oh * sv->g.ow == 0) return NN_OK;
    const nn_backend *be = nn_backend_get(nd->out->device);
    return be->maxpool_backward(&sv->g, sv->argmax, nn_f32(nd->out->grad), dx);
}

static const nn_op_def maxpool_def = {"maxpool2d", maxpool_backward};

nn_status nn_maxpool2d_shape(const int x[4], nn_pool_params p, nn_pool_geom *g)
{
    if (p.kernel_h < 1 || p.kernel_w < 1)
        return nn_error(NN_E_ARG, "maxpool2d: kernel %dx%d must be at least 1x1", p.kernel_h, p.kernel_w);
    int sh = p.stride_h ? p.stride_h : p.kernel_h, sw = p.stride_w ? p.stride_w : p.kernel_w;
    if (sh < 0 || sw < 0)
        return nn_error(NN_E_ARG, "maxpool2d: stride %dx%d must be positive (0 = kernel)", p.stride_h, p.stride_w);
    if (p.pad_h < 0 || p.pad_w < 0 || p.pad_h > p.kernel_h / 2 || p.pad_w > p.kernel_w / 2)
        return nn_error(NN_E_ARG, "maxpool2d: padding %dx%d must be between 0 and half the kernel %dx%d", p.pad_h,
                        p.pad_w, p.kernel_h, p.kernel_w);
    const int H = x[2], W = x[3];
    if ((long long)H * W > INT32_MAX)
        return nn_error(NN_E_SHAPE, "maxpool2d: a %dx%d plane is too large for int32 indices", H, W);
    /* in long long: kernel and padding are user values and may be huge */
    const long long eh = (long long)H + 2LL * p.pad_h, ew = (long long)W + 2LL * p.pad_w;
    if (eh < p.kernel_h || ew < p.kernel_w)
        return nn_error(NN_E_SHAPE, "maxpool2d: kernel %dx%d is larger than the padded input %dx%dx%dx%d (pad %dx%d)",
                        p.kernel_h, p.kernel_w, x[0], x[1], x[2], x[3], p.pad_h, p.pad_w);
    *g = (nn_pool_geom){
        .n = x[0], .c = x[1], .h = H, .w = W,
        .kh = p.kernel_h, .kw = p.kernel_w, .sh = sh, .sw = sw, .ph = p.pad_h, .pw = p.pad_w,
        .oh = (int)((eh - p.kernel_h) / sh + 1), .ow = (int)((ew - p.kernel_w) / sw + 1),
    };
    return NN_OK;
}

nn_tensor *nn_maxpool2d(nn_ctx *ctx, nn_tensor *x, nn_pool_params p)
{
    if (nn_op_skip(ctx, "maxpool2d", 1, &x)) return NULL;
    char xs[64];
    if (x->dtype != NN_F32) return nn_op_fail(ctx, NN_E_ARG, "maxpool2d: input must be float32");
    if (x->ndim != 4)
        return nn_op_fail(ctx, NN_E_SHAPE, "maxpool2d: input must be 4-D (N, C, H, W), got %s",
                          nn_shape_str(x, xs, sizeof xs));
    nn_pool_geom g;
    nn_status gs = nn_maxpool2d_shape(x->shape, p, &g);
    if (gs != NN_OK) return nn_op_fail_status(ctx, gs);
    const nn_backend *be = nn_op_backend(ctx, "maxpool2d", x->device);
    if (!be) return NULL;

    int oshape[4] = {g.n, g.c, g.oh, g.ow};
    nn_tensor *y = nn_op_tensor(ctx, NN_F32, x->device, 4, oshape);
    if (!y) return NULL;
    const size_t in_per = (size_t)g.c * g.h * g.w, out_per = (size_t)g.c * g.oh * g.ow;
    const bool record = nn_op_wants_grad(ctx, 1, &x);
    pool_saved *sv = NULL;
    if (record) {
        if (!(sv = nn_op_host(ctx, sizeof *sv))) return NULL;
        sv->g = g;
        sv->argmax = nn_op_dev(ctx, x->device, (size_t)g.n * out_per * sizeof(int32_t));
        if (!sv->argmax) return NULL;
    }
    const int chunk = record ? g.n : pool_chunk(&g);
    int32_t *argmax = record ? sv->argmax
                             : out_per ? nn_op_scratch(ctx, x->device, (size_t)chunk * out_per * sizeof(int32_t)) : NULL;
    if (out_per && !argmax) return NULL;
    for (int n0 = 0; out_per && n0 < g.n; n0 += chunk) {
        nn_pool_geom gc = g;
        gc.n = g.n - n0 < chunk ? g.n - n0 : chunk;
        nn_status s = be->maxpool_forward(&gc, nn_f32(x) + (size_t)n0 * in_per, nn_f32(y) + (size_t)n0 * out_per,
                                          argmax);
        if (s != NN_OK) return nn_op_fail_status(ctx, s);
    }

    if (record) {
        nn_node *nd = nn_op_record(ctx, &maxpool_def, y, 1, &x);
        if (!nd) return NULL;
        nd->saved = sv;
        nd->buf = sv->argmax;
        nd->buf_bytes = (size_t)g.n * out_per * sizeof(int32_t);
    }
    return y;
}

/* ---- registry entry (ops/registry.h) ---- */

static nn_tensor *maxpool2d_call(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    nn_pool_params p;
    memcpy(&p, ((const nn_op_case *)user)->args, sizeof p);
    return nn_maxpool2d(ctx, in[0], p);
}

static nn_status maxpool2d_gc_case(nn_op_case *c, nn_rng *r, nn_device dev)
{
    int k = nn_op_pick(r, 2, 3), s = nn_op_pick(r, 1, k), p = nn_op_pick(r, 0, k / 2);
    nn_pool_params pp = {k, k, s, s, p, p};
    nn_op_case_set_args(c, &pp, sizeof pp);
    snprintf(c->about, sizeof c->about, "kernel %d, stride %d, pad %d", k, s, p);
    int xs[4] = {nn_op_pick(r, 1, 2), nn_op_pick(r, 1, 3), nn_op_pick(r, k + 1, k + 7), nn_op_pick(r, k + 1, k + 7)};
    /* Distinct values 0.05 apart (a shuffled ramp): a step of eps = 0.01 can
     * never reorder two of them, so no point sits on a tie. */
    size_t n = (size_t)xs[0] * xs[1] * xs[2] * xs[3];
    int32_t *perm = malloc(n * sizeof *perm);
    float *v = malloc(n * sizeof *v);
    nn_status st = NN_OK;
    if (!perm || !v) {
        st = nn_error(NN_E_NOMEM, "maxpool2d: out of memory for a gradcheck case");
    } else {
        for (size_t i = 0; i < n; i++) perm[i] = (int32_t)i;
        nn_rng_shuffle(r, perm, n);
        for (size_t i = 0; i < n; i++) v[i] = 0.05f * ((float)perm[i] - 0.5f * (float)n);
        st = nn_op_case_host(c, "x", dev, NN_F32, 4, xs, v);
    }
    free(perm);
    free(v);
    return st;
}

const nn_op_info nn_op_maxpool2d = {"maxpool2d", maxpool2d_gc_case, maxpool2d_call};
