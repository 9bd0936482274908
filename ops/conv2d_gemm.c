/* conv2d on the CPU: the plan (im2col + GEMM or Winograd, and how to cut the
 * batch), im2col + GEMM and its forward and backward drivers; Winograd (its
 * transforms, GEMMs and drivers) is in ops/conv2d_winograd.c, the op's wiring
 * in ops/conv2d.c.
 * x (N,C,H,W), w (O,C/G,KH,KW), b (O) or NULL -> y (N,O,OH,OW).
 * The CPU kernels lower each group of a chunk of images to one cblas_sgemm
 * through im2col (forward, dW) and col2im (dX), one chunk per OpenMP worker
 * when the batch has at least as many images as the machine has cores. */
#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <string.h>

#include "core/op.h"
#include "core/par.h"
#include "ops/conv2d_cpu.h"
#include "ops/cpu_kernels.h"
#include "ops/ops.h"

/* Two ways to cut a batch, chosen from the geometry alone:
 *  - by worker (the training case, batch >= cores): each OpenMP thread takes
 *    whole images and runs its own single-threaded GEMMs (OpenBLAS runs
 *    single-threaded inside a parallel region) on its own column buffer, so
 *    threads never wait on each other inside a GEMM, the output needs no
 *    reshuffle when one image fills a GEMM, and dW is summed per thread and
 *    reduced once;
 *  - whole batch (few images): several images share one GEMM so that its
 *    N = images * OH * OW is wide enough for OpenBLAS to split among its
 *    threads even on 13x13 maps (AlexNet's late layers: one image gives N = 169). */
#define CONV_TARGET_COLS 4096    /* whole batch: GEMM width */
#define CONV_WORKER_COLS 640     /* by worker: GEMM width (13x13 maps: 4 images per GEMM) */
#define CONV_MAX_COL_BYTES ((size_t)64 << 20)
#define CONV_MAX_WORKERS 64
/* The cost model that picks im2col + GEMM or Winograd F(m x m, r x r), and
 * which m, per layer shape, in multiply-adds at GEMM speed per image:
 *   im2col + GEMM: r^2 hw C O  +  T_ELEM r^2 hw C   (the column matrix)
 *   Winograd F(m): n^2 T C O / WINO_GEMM_EFF  +  WINO_T_ELEM n^2 T (C + O)
 * with n = m + r - 1 and T = ceil(h/m) ceil(w/m) tiles. A larger m does
 * fewer products per output but its tiles overhang small maps (a 3x3 map
 * fills one F(3x3, 3x3) tile exactly, and half of a 4x4 one of F(2x2, 3x3))
 * and its transforms move more data per output: the model weighs both.
 * T_ELEM: one copied element costs about as much as 32 MACs at GEMM speed
 * (a GEMM core does 16 FMAs a cycle, im2col about one element at a time);
 * WINO_T_ELEM: one transformed element, whose transform runs eight tiles
 * at once in vector registers but reads n points per entry; WINO_GEMM_EFF:
 * the n^2 narrow GEMMs against one large one. The constants come from this
 * machine's measurements (2-core EPYC, batch 64: `convnet bench` per layer
 * with each m forced); only the choice they imply matters, and it is a pure
 * function of the shape (so reruns and resumes take the same path, bit for
 * bit). */
#define CONV_T_ELEM 64.0
#define CONV_WINO_T_ELEM 96.0
#define CONV_WINO_GEMM_EFF 0.7
#define CONV_WINO_TILES 256 /* tiles per Winograd GEMM: its width */
/* Below this many floats moved, starting an OpenMP team costs more than it saves. */
#define CONV_OMP_MIN 32768

/* How the kernels cut the work; a pure function of the geometry (and of the
 * machine's core count, fixed for the process), so the workspace size and the
 * kernels always agree. */
typedef struct conv_plan {
    int cg, og;      /* input and output channels per group */
    int k;           /* GEMM depth: cg * kh * kw */
    size_t hw, ohw;  /* input and output plane sizes */
    int workers;     /* > 1: cut by worker, each with its own buffers; 1: whole batch */
    int chunk;       /* images per GEMM */
    bool direct;     /* 1x1, stride 1, no padding, one image per GEMM: x is its own column matrix */
    size_t col, tmp; /* floats per worker: column matrix, (og, chunk*ohw) GEMM output */
    size_t dw;       /* floats per extra worker: its private dW */
    bool wino;       /* r x r pad (r-1)/2, stride 1: forward, dX and dW by Winograd */
    nn_wino_plan wp; /* Winograd: the algorithm and its buffers (ops/conv2d_winograd.c) */
} conv_plan;

static int force_winograd;

void nn_cpu_conv2d_force_winograd(int m) { force_winograd = m; }

/* Whether a layer can go through Winograd at all: square odd kernel, stride 1,
 * the padding that keeps the size, and a map at least as large as the kernel
 * (on smaller maps some weights see only padding: their exact gradient is 0,
 * and Winograd's cancellation would leave rounding noise of the other taps'
 * size there). */
static bool wino_fits(const nn_conv2d_geom *g)
{
    return g->kh == g->kw && g->kh % 2 == 1 && g->kh > 1 && g->sh == 1 && g->sw == 1 && g->ph == g->kh / 2 &&
           g->pw == g->kw / 2 && g->h >= g->kh && g->w >= g->kw;
}

/* The m of the cheapest of im2col + GEMM and F(m, r) for every m the points
 * allow (the model above), or 0 for im2col + GEMM. */
static int wino_pick(const nn_conv2d_geom *g, int cg, int og)
{
    const int r = g->kh;
    if (force_winograd < 0) return 0;
    if (force_winograd > 0) return r - 1 + force_winograd <= NN_WINO_NMAX ? force_winograd : NN_WINO_NMAX - r + 1;
    const double hw = (double)g->h * g->w, C = cg, O = og;
    double best = (double)r * r * hw * C * O + CONV_T_ELEM * r * r * hw * C;
    int pick = 0;
    for (int m = 2; m + r - 1 <= NN_WINO_NMAX; m++) {
        const double n = m + r - 1, T = (double)((g->h + m - 1) / m) * ((g->w + m - 1) / m);
        /* one image's transformed inputs and products (the least a pass
         * holds) within the budget im2col's columns have */
        if (2.0 * n * n * T * (C > O ? C : O) * sizeof(float) > (double)CONV_MAX_COL_BYTES) continue;
        const double cost = n * n * T * C * O / CONV_WINO_GEMM_EFF + CONV_WINO_T_ELEM * n * n * T * (C + O);
        if (cost < best) {
            best = cost;
            pick = m;
        }
    }
    return pick;
}

static conv_plan conv_plan_make(const nn_conv2d_geom *g)
{
    conv_plan P;
    P.cg = g->c / g->groups;
    P.og = g->oc / g->groups;
    P.k = P.cg * g->kh * g->kw;
    P.hw = (size_t)g->h * (size_t)g->w;
    P.ohw = (size_t)g->oh * (size_t)g->ow;
    /* the threads this process was given (nn_set_threads), not the machine's
     * cores: N processes on one machine, or a taskset, must not oversubscribe */
    int cores = omp_get_max_threads();
    cores = cores < 1 ? 1 : cores > CONV_MAX_WORKERS ? CONV_MAX_WORKERS : cores;
    P.workers = cores > 1 && g->n >= cores ? cores : 1;
    size_t target = P.workers > 1 ? CONV_WORKER_COLS : CONV_TARGET_COLS;
    size_t chunk = P.ohw ? (target + P.ohw - 1) / P.ohw : 1;
    size_t per = (size_t)P.k * P.ohw * sizeof(float);
    size_t fit = per ? CONV_MAX_COL_BYTES / P.workers / per : chunk;
    size_t share = ((size_t)g->n + P.workers - 1) / P.workers; /* keep every worker busy */
    if (chunk > fit) chunk = fit;
    if (chunk > share) chunk = share;
    if (chunk < 1) chunk = 1;
    P.chunk = (int)chunk;
    P.direct = P.chunk == 1 && g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 &&
               g->pw == 0;
    size_t cols = (size_t)P.chunk * P.ohw;
    P.col = P.direct ? 0 : (size_t)P.k * cols;
    P.tmp = P.chunk > 1 ? (size_t)P.og * cols : 0;
    P.dw = P.workers > 1 ? (size_t)g->oc * P.k : 0;
    const int m = wino_fits(g) ? wino_pick(g, P.cg, P.og) : 0;
    P.wino = false;
    if (m > 0) {
        nn_wino_plan_make(g, m, cores, CONV_WINO_TILES, &P.wp);
        P.wino = P.wp.wf.m > 0;
    }
    return P;
}

int nn_cpu_conv2d_wino_points(const nn_conv2d_geom *g)
{
    const conv_plan P = conv_plan_make(g);
    return P.wino ? P.wp.wf.n : 0;
}

size_t nn_cpu_conv2d_workspace(const nn_conv2d_geom *g)
{
    conv_plan P = conv_plan_make(g);
    if (P.wino) return nn_wino_workspace(&P.wp);
    return ((P.col + P.tmp) * P.workers + P.dw * (P.workers - 1)) * sizeof(float);
}

/* The outputs i in [*i0, *i1) of n_out whose input index i*s + off lies in [0, len). */
static void valid_range(int n_out, int s, int off, int len, int *i0, int *i1)
{
    int a = off < 0 ? (-off + s - 1) / s : 0;
    int b = len - 1 - off < 0 ? 0 : (len - 1 - off) / s + 1;
    if (a > n_out) a = n_out;
    if (b > n_out) b = n_out;
    if (b < a) b = a;
    *i0 = a;
    *i1 = b;
}

/* Small maps (AlexNet's late layers, the default model's conv1-2: rows of 3 to
 * 15 outputs) go through a zero-padded copy of each input plane on the stack:
 * then every row of the column matrix is a plain strided copy, with no
 * bounds, no zero fill and no libc call per row (the per-row memcpy/memset
 * of the general path cost more than the copies on 7-wide rows). Wider maps
 * keep the general path, whose rows are long enough for memcpy to pay. */
#define CONV_PAD_OW_MAX 32        /* output width up to which the padded path is taken */
#define CONV_PAD_PLANE_MAX 8192   /* floats of the padded plane (32 KiB on the stack) */

/* The row copies below are short: GCC's -O3 would turn a stride-1 copy loop
 * into a memcpy call per row (loop distribution), which is what the padded
 * path exists to avoid. col2im's additions have an AVX2 copy (NN_CPU_CLONES). */
#if defined(__GNUC__) && !defined(__clang__)
#define CONV_INLINE_COPIES __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define CONV_INLINE_COPIES
#endif

static bool pad_path(const nn_conv2d_geom *g)
{
    return g->ow <= CONV_PAD_OW_MAX &&
           (size_t)(g->h + 2 * g->ph) * (size_t)(g->w + 2 * g->pw) <= CONV_PAD_PLANE_MAX;
}

/* xp = the (h, w) plane xc at offset (ph, pw) of a zero (h+2ph, w+2pw) plane. */
static void pad_plane(const nn_conv2d_geom *g, const float *xc, float *xp)
{
    const int wp = g->w + 2 * g->pw, hp = g->h + 2 * g->ph;
    for (int k = 0; k < hp * wp; k++) xp[k] = 0.0f;
    for (int i = 0; i < g->h; i++) {
        float *d = xp + (size_t)(i + g->ph) * wp + g->pw;
        const float *r = xc + (size_t)i * g->w;
        for (int j = 0; j < g->w; j++) d[j] = r[j];
    }
}

/* The column rows of one (image, channel) plane from its padded copy xp;
 * d at the plane's first row (c*kh*kw), rows ld floats apart. */
static CONV_INLINE_COPIES void im2col_padded(const nn_conv2d_geom *g, const float *xp, float *d, size_t ld)
{
    const int wp = g->w + 2 * g->pw, ow = g->ow, sw = g->sw;
    if (g->sh == 1 && sw == 1) {
        /* Stride 1: column q of the kernel sees the plane's columns q .. q+ow-1;
         * packed as xq (hp, ow), the rows of kernel row p are xq's rows p ..
         * p+oh-1, one contiguous block: kw passes of short copies, then
         * kh*kw long ones (instead of kh*kw*oh copies of ow floats). */
        float xq[CONV_PAD_PLANE_MAX];
        const int hp = g->h + 2 * g->ph;
        const size_t blk = (size_t)g->oh * ow;
        for (int q = 0; q < g->kw; q++) {
            for (int h = 0; h < hp; h++) {
                const float *r = xp + (size_t)h * wp + q;
                float *o = xq + (size_t)h * ow;
                for (int j = 0; j < ow; j++) o[j] = r[j];
            }
            for (int p = 0; p < g->kh; p++)
                memcpy(d + (size_t)(p * g->kw + q) * ld, xq + (size_t)p * ow, blk * sizeof(float));
        }
        return;
    }
    for (int p = 0; p < g->kh; p++) {
        for (int q = 0; q < g->kw; q++, d += ld) {
            for (int i = 0; i < g->oh; i++) {
                const float *r = xp + (size_t)(i * g->sh + p) * wp + q;
                float *dr = d + (size_t)i * ow;
                for (int j = 0; j < ow; j++) dr[j] = r[j * sw];
            }
        }
    }
}

/* The adjoint: xp += the column rows at their padded positions (per pixel
 * the same terms in the same (p, q) order as col2im_add's general path, so
 * the sums are bit for bit those of adding into dx directly). */
static NN_CPU_CLONES void col2im_padded(const nn_conv2d_geom *g, const float *d, size_t ld, float *xp)
{
    const int wp = g->w + 2 * g->pw, ow = g->ow, sw = g->sw;
    for (int p = 0; p < g->kh; p++) {
        for (int q = 0; q < g->kw; q++, d += ld) {
            for (int i = 0; i < g->oh; i++) {
                float *r = xp + (size_t)(i * g->sh + p) * wp + q;
                const float *dr = d + (size_t)i * ow;
                if (sw == 1) {
                    for (int j = 0; j < ow; j++) r[j] += dr[j];
                } else {
                    for (int j = 0; j < ow; j++) r[j * sw] += dr[j];
                }
            }
        }
    }
}

/* CONV_NO_NESTED: the helpers below take `par` (false inside a worker) and
 * then run their loops without any OpenMP construct, not as an `omp parallel
 * ... if (false)`: even a one-thread nested region builds a team, and two
 * workers doing so at once contend on libgomp's locks (futex calls in every
 * chunk, measured with perf on the default model's conv1). */

/* col[(c*kh + p)*kw + q][b*ohw + i*ow + j] = x_b[c][i*sh + p - ph][j*sw + q - pw], 0 in the
 * padding, for nb images from x (already at the group's first channel). */
static inline void im2col_plane(const nn_conv2d_geom *g, const conv_plan *P, const float *x, float *col, size_t ld,
                                size_t xs, bool pad, int b, int c)
{
    const int ow = g->ow;
    const float *xc = x + (size_t)b * xs + (size_t)c * P->hw;
    if (pad) {
        float xp[CONV_PAD_PLANE_MAX];
        pad_plane(g, xc, xp);
        im2col_padded(g, xp, col + (size_t)c * g->kh * g->kw * ld + (size_t)b * P->ohw, ld);
        return;
    }
    for (int p = 0; p < g->kh; p++) {
        int i0, i1;
        valid_range(g->oh, g->sh, p - g->ph, g->h, &i0, &i1);
        for (int q = 0; q < g->kw; q++) {
            int j0, j1, off = q - g->pw;
            valid_range(ow, g->sw, off, g->w, &j0, &j1);
            float *d = col + ((size_t)(c * g->kh + p) * g->kw + q) * ld + (size_t)b * P->ohw;
            memset(d, 0, (size_t)i0 * ow * sizeof(float));
            for (int i = i0; i < i1; i++) {
                float *dr = d + (size_t)i * ow;
                const float *xr = xc + (size_t)(i * g->sh + p - g->ph) * g->w;
                for (int j = 0; j < j0; j++) dr[j] = 0.0f;
                if (g->sw == 1) {
                    memcpy(dr + j0, xr + j0 + off, (size_t)(j1 - j0) * sizeof(float));
                } else {
                    for (int j = j0; j < j1; j++) dr[j] = xr[j * g->sw + off];
                }
                for (int j = j1; j < ow; j++) dr[j] = 0.0f;
            }
            memset(d + (size_t)i1 * ow, 0, (size_t)(g->oh - i1) * ow * sizeof(float));
        }
    }
}

static void im2col(const nn_conv2d_geom *g, const conv_plan *P, const float *x, int nb, float *col, bool par)
{
    const size_t ld = (size_t)nb * P->ohw, xs = (size_t)g->c * P->hw;
    const int cg = P->cg;
    const bool pad = pad_path(g);
    /* (no nested region when !par: CONV_NO_NESTED) */
    NN_PAR_IF(par && (size_t)P->k * ld > CONV_OMP_MIN, "omp parallel for collapse(2)",
              for (int b = 0; b < nb; b++)
                  for (int c = 0; c < cg; c++) im2col_plane(g, P, x, col, ld, xs, pad, b, c););
}

/* The adjoint of im2col: dx_b[c][...] += col entries, padding dropped. Each
 * (image, channel) plane belongs to one thread, so the += never races. */
static inline void col2im_plane(const nn_conv2d_geom *g, const conv_plan *P, const float *col, float *dx, size_t ld,
                                size_t xs, bool pad, int b, int c)
{
    const int ow = g->ow;
    float *xc = dx + (size_t)b * xs + (size_t)c * P->hw;
    if (pad) { /* dx's plane into the padded copy, the terms added there, back */
        float xp[CONV_PAD_PLANE_MAX];
        const int wp = g->w + 2 * g->pw;
        pad_plane(g, xc, xp);
        col2im_padded(g, col + (size_t)c * g->kh * g->kw * ld + (size_t)b * P->ohw, ld, xp);
        for (int i = 0; i < g->h; i++) {
            const float *r = xp + (size_t)(i + g->ph) * wp + g->pw;
            float *o = xc + (size_t)i * g->w;
            for (int j = 0; j < g->w; j++) o[j] = r[j];
        }
        return;
    }
    for (int p = 0; p < g->kh; p++) {
        int i0, i1;
        valid_range(g->oh, g->sh, p - g->ph, g->h, &i0, &i1);
        for (int q = 0; q < g->kw; q++) {
            int j0, j1, off = q - g->pw;
            valid_range(ow, g->sw, off, g->w, &j0, &j1);
            const float *d =
                col + ((size_t)(c * g->kh + p) * g->kw + q) * ld + (size_t)b * P->ohw;
            for (int i = i0; i < i1; i++) {
                const float *dr = d + (size_t)i * ow;
                float *xr = xc + (size_t)(i * g->sh + p - g->ph) * g->w;
                if (g->sw == 1) {
                    float *xo = xr + j0 + off;
                    const float *dd = dr + j0;
#pragma omp simd
                    for (int j = 0; j < j1 - j0; j++) xo[j] += dd[j];
                } else {
                    for (int j = j0; j < j1; j++) xr[j * g->sw + off] += dr[j];
                }
            }
        }
    }
}

static void col2im_add(const nn_conv2d_geom *g, const conv_plan *P, const float *col, int nb, float *dx,
                       bool par)
{
    const size_t ld = (size_t)nb * P->ohw, xs = (size_t)g->c * P->hw;
    const int cg = P->cg;
    const bool pad = pad_path(g);
    /* (no nested region when !par: CONV_NO_NESTED) */
    NN_PAR_IF(par && (size_t)P->k * ld > CONV_OMP_MIN, "omp parallel for collapse(2)",
              for (int b = 0; b < nb; b++)
                  for (int c = 0; c < cg; c++) col2im_plane(g, P, col, dx, ld, xs, pad, b, c););
}

/* Copies nb images' planes of one group (images ys floats apart) to or from
 * the GEMM's (og, nb*ohw) matrix; src_is_mat says which side src is. With
 * bias (to the images only), adds bias[o] on the way. */
static inline void move_plane(const conv_plan *P, size_t ys, const float *src, float *dst, bool src_is_mat,
                              const float *bias, size_t ld, int b, int o)
{
    const size_t ohw = P->ohw;
    size_t img = (size_t)b * ys + (size_t)o * ohw, mat = (size_t)o * ld + (size_t)b * ohw;
    float *d = dst + (src_is_mat ? img : mat);
    const float *sp = src + (src_is_mat ? mat : img);
    if (bias) {
        const float bo = bias[o];
#pragma omp simd
        for (size_t k = 0; k < ohw; k++) d[k] = sp[k] + bo;
    } else {
        memcpy(d, sp, ohw * sizeof(float));
    }
}

static void move_planes(const conv_plan *P, int nb, size_t ys, const float *src, float *dst,
                        bool src_is_mat, const float *bias, bool par)
{
    const size_t ld = (size_t)nb * P->ohw;
    const int og = P->og;
    /* (no nested region when !par: CONV_NO_NESTED) */
    NN_PAR_IF(par && (size_t)og * ld > CONV_OMP_MIN, "omp parallel for collapse(2)",
              for (int b = 0; b < nb; b++)
                  for (int o = 0; o < og; o++) move_plane(P, ys, src, dst, src_is_mat, bias, ld, b, o););
}

/* y[n,o] += b[o] for nb images (y at the first image). */
static inline void add_bias_plane(const float *b, float *y, int oc, size_t ohw, int i, int o)
{
    float *p = y + ((size_t)i * oc + o) * ohw;
    const float bo = b[o];
#pragma omp simd
    for (size_t k = 0; k < ohw; k++) p[k] += bo;
}

static void add_bias(const nn_conv2d_geom *g, const conv_plan *P, int nb, const float *b, float *y, bool par)
{
    const int oc = g->oc;
    const size_t ohw = P->ohw;
    /* (no nested region when !par: CONV_NO_NESTED) */
    NN_PAR_IF(par && (size_t)nb * oc * ohw > CONV_OMP_MIN, "omp parallel for collapse(2)",
              for (int i = 0; i < nb; i++)
                  for (int o = 0; o < oc; o++) add_bias_plane(b, y, oc, ohw, i, o););
}


/* Forward of images n0 .. n0+nb-1 with one worker's buffers. */
static void conv_fwd_chunk(const nn_conv2d_geom *g, const conv_plan *P, const float *x, const float *w,
                           const float *b, float *y, int n0, int nb, float *col, float *tmp, bool par)
{
    const size_t xs = (size_t)g->c * P->hw, ys = (size_t)g->oc * P->ohw;
    const int ncol = nb * (int)P->ohw;
    for (int grp = 0; grp < g->groups; grp++) {
        const float *xg = x + (size_t)n0 * xs + (size_t)grp * P->cg * P->hw;
        const float *wg = w + (size_t)grp * P->og * P->k;
        float *yg = y + (size_t)n0 * ys + (size_t)grp * P->og * P->ohw;
        const float *B = xg;
        int ldb = (int)P->hw;
        if (!P->direct) {
            im2col(g, P, xg, nb, col, par);
            B = col;
            ldb = ncol;
        }
        if (nb == 1) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P->og, ncol, P->k, 1.0f, wg, P->k, B, ldb,
                        0.0f, yg, (int)P->ohw);
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P->og, ncol, P->k, 1.0f, wg, P->k, B, ldb,
                        0.0f, tmp, ncol);
            move_planes(P, nb, ys, tmp, yg, true, b ? b + (size_t)grp * P->og : NULL, par);
        }
    }
    if (b && nb == 1) add_bias(g, P, nb, b, y + (size_t)n0 * ys, par);
}

nn_status nn_cpu_conv2d_forward(const nn_conv2d_geom *g, const float *x, const float *w,
                                const float *b, float *y, void *ws)
{
    const conv_plan P = conv_plan_make(g);
    const int nchunks = (g->n + P.chunk - 1) / P.chunk;
    if (P.wino) {
        nn_wino_forward(g, &P.wp, x, w, b, y, ws);
    } else if (P.workers > 1) {
        const int nt = omp_get_max_threads() < P.workers ? omp_get_max_threads() : P.workers;
#pragma omp parallel num_threads(nt)
        {
            float *col = (float *)ws + (size_t)omp_get_thread_num() * (P.col + P.tmp);
#pragma omp for schedule(static)
            for (int c = 0; c < nchunks; c++) {
                const int n0 = c * P.chunk, nb = g->n - n0 < P.chunk ? g->n - n0 : P.chunk;
                conv_fwd_chunk(g, &P, x, w, b, y, n0, nb, col, col + P.col, false);
            }
        }
    } else {
        for (int c = 0; c < nchunks; c++) {
            const int n0 = c * P.chunk, nb = g->n - n0 < P.chunk ? g->n - n0 : P.chunk;
            conv_fwd_chunk(g, &P, x, w, b, y, n0, nb, (float *)ws, (float *)ws + P.col, true);
        }
    }
    /* the fused ReLU asked for (g->relu): the unfused kernel over y, so the
     * CPU's numbers are the same either way (the GPU fuses it into its GEMM) */
    if (g->relu) return nn_cpu_relu_forward((size_t)g->n * g->oc * g->oh * g->ow, y, y);
    return NN_OK;
}

/* Backward of images n0 .. n0+nb-1 with one worker's buffers: dw (this
 * worker's accumulator) += dY col^T, and dx of these images += col2im(W^T dY). */
static void conv_bwd_chunk(const nn_conv2d_geom *g, const conv_plan *P, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, int n0, int nb, float *col, float *tmp,
                           bool par)
{
    const size_t xs = (size_t)g->c * P->hw, ys = (size_t)g->oc * P->ohw;
    const int ncol = nb * (int)P->ohw;
    for (int grp = 0; grp < g->groups; grp++) {
        const size_t xoff = (size_t)n0 * xs + (size_t)grp * P->cg * P->hw;
        const float *wg = w + (size_t)grp * P->og * P->k;
        const float *dyg = dy + (size_t)n0 * ys + (size_t)grp * P->og * P->ohw;
        int lddy = (int)P->ohw;
        if (nb > 1) {
            move_planes(P, nb, ys, dyg, tmp, false, NULL, par);
            dyg = tmp;
            lddy = ncol;
        }
        if (dw) { /* dW_g += dY_g col^T */
            const float *B = x + xoff;
            int ldb = (int)P->hw;
            if (!P->direct) {
                im2col(g, P, x + xoff, nb, col, par);
                B = col;
                ldb = ncol;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P->og, P->k, ncol, 1.0f, dyg, lddy, B, ldb,
                        1.0f, dw + (size_t)grp * P->og * P->k, P->k);
        }
        if (dx) { /* dcol = W_g^T dY_g, then col2im; col is free again after dW */
            if (P->direct) {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, P->k, ncol, P->og, 1.0f, wg, P->k, dyg,
                            lddy, 1.0f, dx + xoff, (int)P->hw);
            } else {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, P->k, ncol, P->og, 1.0f, wg, P->k, dyg,
                            lddy, 0.0f, col, ncol);
                col2im_add(g, P, col, nb, dx + xoff, par);
            }
        }
    }
}

/* The bias gradient of output channel o: dy summed over images and positions. */
static float bias_grad(const float *dy, int n, int oc, size_t ohw, int o)
{
    double s = 0.0; /* N*OH*OW terms: a float total would drift */
    for (int i = 0; i < n; i++) {
        const float *p = dy + ((size_t)i * oc + o) * ohw;
        float t = 0.0f;
#pragma omp simd reduction(+ : t)
        for (size_t k = 0; k < ohw; k++) t += p[k];
        s += t;
    }
    return (float)s;
}

nn_status nn_cpu_conv2d_backward(const nn_conv2d_geom *g, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw, float *db, void *ws)
{
    const conv_plan P = conv_plan_make(g);
    const size_t ys = (size_t)g->oc * P.ohw;
    if (db) {
        const int n = g->n, oc = g->oc;
        const size_t ohw = P.ohw;
        NN_PAR_IF((size_t)n * ys > CONV_OMP_MIN, "omp parallel for",
                  for (int o = 0; o < oc; o++) db[o] += bias_grad(dy, n, oc, ohw, o););
    }
    if (!dx && !dw) return NN_OK;
    if (P.wino) {
        nn_wino_backward(g, &P.wp, x, w, dy, dx, dw, ws);
        return NN_OK;
    }

    const int nchunks = (g->n + P.chunk - 1) / P.chunk;
    if (P.workers > 1) {
        const int nt = omp_get_max_threads() < P.workers ? omp_get_max_threads() : P.workers;
        /* worker 0 accumulates straight into dw; the others into their own
         * zeroed copies, added to dw once at the end (in worker order: the
         * result depends only on the thread count) */
        float *priv = (float *)ws + (size_t)P.workers * (P.col + P.tmp);
        const size_t nw = P.dw;
#pragma omp parallel num_threads(nt)
        {
            const int t = omp_get_thread_num();
            float *col = (float *)ws + (size_t)t * (P.col + P.tmp);
            float *mydw = dw && t > 0 ? priv + (size_t)(t - 1) * nw : dw;
            if (dw && t > 0) memset(mydw, 0, nw * sizeof(float));
#pragma omp for schedule(static)
            for (int c = 0; c < nchunks; c++) {
                const int n0 = c * P.chunk, nb = g->n - n0 < P.chunk ? g->n - n0 : P.chunk;
                conv_bwd_chunk(g, &P, x, w, dy, dx, mydw, n0, nb, col, col + P.col, false);
            }
            if (dw && nt > 1) {
#pragma omp for schedule(static)
                for (size_t i = 0; i < nw; i++) {
                    float s = 0.0f;
                    for (int u = 1; u < nt; u++) s += priv[(size_t)(u - 1) * nw + i];
                    dw[i] += s;
                }
            }
        }
    } else {
        for (int c = 0; c < nchunks; c++) {
            const int n0 = c * P.chunk, nb = g->n - n0 < P.chunk ? g->n - n0 : P.chunk;
            conv_bwd_chunk(g, &P, x, w, dy, dx, dw, n0, nb, (float *)ws, (float *)ws + P.col, true);
        }
    }
    return NN_OK;
}

