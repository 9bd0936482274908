/* conv2d: y = conv(x, w) + b over NCHW images with stride, zero padding and
 * groups. x (N,C,H,W), w (O,C/G,KH,KW), b (O) or NULL -> y (N,O,OH,OW).
 * The CPU kernels lower each group of a chunk of images to one cblas_sgemm
 * through im2col (forward, dW) and col2im (dX), one chunk per OpenMP worker
 * when the batch has at least as many images as the machine has cores. */
#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <string.h>

#include "../core/op.h"
#include "cpu_kernels.h"
#include "ops.h"

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
/* Which kernels go through Winograd (compile-time switches for measuring).
 * 5x5 is off: as four 3x3 blocks it moves four times the transformed input,
 * and on this 2-core machine conv2's forward came out even and its backward
 * ~15% slower than im2col + GEMM. 3x3 (conv3-5) gains. */
#ifndef CONV_WINO3
#define CONV_WINO3 1
#endif
#ifndef CONV_WINO5
#define CONV_WINO5 0
#endif
/* The cost model that picks Winograd or im2col + GEMM per layer shape, in
 * multiply-adds at GEMM speed per image:
 *   im2col + GEMM: 9 hw C O  +  T_ELEM * 9 hw C   (the column matrix)
 *   Winograd:      16 T C O / WINO_GEMM_EFF  +  T_ELEM * 16 T (C + O)
 * with T = ceil(h/2) ceil(w/2) 4x4 tiles (F(2x2, 3x3)); a tile on a map of
 * odd size is partly padding, so on AlexNet's 3x3 maps at 64x64 input (4
 * tiles for 9 outputs) Winograd does 79% of the MACs, in 16 narrow GEMMs,
 * plus transforms of every tile: measured there (2 threads, batch 64) it
 * was 1.6x slower than im2col + GEMM in backward and no faster forward,
 * while on 13x13 maps (paper size) it gains. T_ELEM: one transformed or
 * copied element costs about as much as 32 MACs at GEMM speed (a GEMM core
 * does 16 FMAs a cycle, a transform loop about one element at a time with a
 * scattered store); WINO_GEMM_EFF: the 16 small GEMMs run at ~80% of one
 * large one. Both from this machine's measurements; only the choice they
 * imply matters, and it is a pure function of the shape (so reruns and
 * resumes take the same path, bit for bit). */
#define CONV_T_ELEM 32.0
#define CONV_WINO_GEMM_EFF 0.8
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
    bool wino;       /* 3x3 pad 1 or 5x5 pad 2, stride 1, by worker: forward and dX by Winograd */
    int nbk;         /* Winograd: 3x3 blocks of the kernel (1 for 3x3; 4 for 5x5 padded to 6x6) */
    size_t wu;       /* floats of the transformed weights (shared) */
    size_t wv;       /* floats per worker: transformed inputs and products */
} conv_plan;

static bool force_winograd;

void nn_cpu_conv2d_force_winograd(bool on) { force_winograd = on; }

/* Whether Winograd costs less than im2col + GEMM for a 3x3 layer (the model above). */
static bool wino_pays(const nn_conv2d_geom *g, int cg, int og)
{
    if (force_winograd) return true;
    const double hw = (double)g->h * g->w, T = (double)((g->h + 1) / 2) * ((g->w + 1) / 2);
    const double C = cg, O = og;
    const double gemm = 9.0 * hw * C * O + CONV_T_ELEM * 9.0 * hw * C;
    const double wino = 16.0 * T * C * O / CONV_WINO_GEMM_EFF + CONV_T_ELEM * 16.0 * T * (C + O);
    return wino < gemm;
}

static conv_plan conv_plan_make(const nn_conv2d_geom *g)
{
    conv_plan P;
    P.cg = g->c / g->groups;
    P.og = g->oc / g->groups;
    P.k = P.cg * g->kh * g->kw;
    P.hw = (size_t)g->h * (size_t)g->w;
    P.ohw = (size_t)g->oh * (size_t)g->ow;
    int cores = omp_get_num_procs();
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
    P.wino = P.workers > 1 && g->kh == g->kw && ((g->kh == 3 && CONV_WINO3) || (g->kh == 5 && CONV_WINO5)) && g->sh == 1 && g->sw == 1 &&
             g->ph == g->kh / 2 && g->pw == g->kw / 2 && g->h >= g->kh && g->w >= g->kw &&
             (g->kh != 3 || wino_pays(g, P.cg, P.og));
    /* (on maps smaller than the kernel, some weights see only padding: their
     * exact gradient is 0, and Winograd's cancellation would leave rounding
     * noise of the other taps' size there) */
    P.nbk = g->kh == 5 ? 4 : 1;
    if (P.wino) {
        size_t tiles = (size_t)P.chunk * ((g->h + 1) / 2) * ((g->w + 1) / 2);
        size_t cmax = P.cg > P.og ? P.cg : P.og;
        P.wu = 16 * (size_t)g->groups * P.og * P.cg * P.nbk;
        /* V (16, blocks * cin, tiles) and M (16, cout, tiles) */
        P.wv = 16 * (size_t)(P.nbk + 1) * cmax * tiles;
    } else {
        P.wu = P.wv = 0;
    }
    return P;
}

size_t nn_cpu_conv2d_workspace(const nn_conv2d_geom *g)
{
    conv_plan P = conv_plan_make(g);
    /* Winograd: the shared transformed weights, and a dW accumulator per worker */
    return ((P.col + P.tmp + P.wv + P.wu) * P.workers + P.dw * (P.workers - 1) + P.wu) * sizeof(float);
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

/* col[(c*kh + p)*kw + q][b*ohw + i*ow + j] = x_b[c][i*sh + p - ph][j*sw + q - pw], 0 in the
 * padding, for nb images from x (already at the group's first channel). par: may
 * start threads (false inside a worker). */
static void im2col(const nn_conv2d_geom *g, const conv_plan *P, const float *x, int nb, float *col, bool par)
{
    const size_t ld = (size_t)nb * P->ohw, xs = (size_t)g->c * P->hw;
    const int cg = P->cg, ow = g->ow;
#pragma omp parallel for collapse(2) if (par && (size_t)P->k * ld > CONV_OMP_MIN)
    for (int b = 0; b < nb; b++) {
        for (int c = 0; c < cg; c++) {
            const float *xc = x + (size_t)b * xs + (size_t)c * P->hw;
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
    }
}

/* The adjoint of im2col: dx_b[c][...] += col entries, padding dropped. Each
 * (image, channel) plane belongs to one thread, so the += never races. */
static void col2im_add(const nn_conv2d_geom *g, const conv_plan *P, const float *col, int nb, float *dx,
                       bool par)
{
    const size_t ld = (size_t)nb * P->ohw, xs = (size_t)g->c * P->hw;
    const int cg = P->cg, ow = g->ow;
#pragma omp parallel for collapse(2) if (par && (size_t)P->k * ld > CONV_OMP_MIN)
    for (int b = 0; b < nb; b++) {
        for (int c = 0; c < cg; c++) {
            float *xc = dx + (size_t)b * xs + (size_t)c * P->hw;
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
    }
}

/* Copies nb images' planes of one group (images ys floats apart) to or from
 * the GEMM's (og, nb*ohw) matrix; src_is_mat says which side src is. With
 * bias (to the images only), adds bias[o] on the way. */
static void move_planes(const conv_plan *P, int nb, size_t ys, const float *src, float *dst,
                        bool src_is_mat, const float *bias, bool par)
{
    const size_t ld = (size_t)nb * P->ohw, ohw = P->ohw;
    const int og = P->og;
#pragma omp parallel for collapse(2) if (par && (size_t)og * ld > CONV_OMP_MIN)
    for (int b = 0; b < nb; b++) {
        for (int o = 0; o < og; o++) {
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
    }
}

/* y[n,o] += b[o] for nb images (y at the first image). */
static void add_bias(const nn_conv2d_geom *g, const conv_plan *P, int nb, const float *b, float *y, bool par)
{
    const int oc = g->oc;
    const size_t ohw = P->ohw;
#pragma omp parallel for collapse(2) if (par && (size_t)nb * oc * ohw > CONV_OMP_MIN)
    for (int i = 0; i < nb; i++) {
        for (int o = 0; o < oc; o++) {
            float *p = y + ((size_t)i * oc + o) * ohw;
            const float bo = b[o];
#pragma omp simd
            for (size_t k = 0; k < ohw; k++) p[k] += bo;
        }
    }
}

/* ---- Winograd F(2x2, 3x3) for 3x3 stride-1 pad-1 layers (Lavin & Gray 2016) ----
 * Each 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A of its 4x4 input tile d:
 * 16 products per tile and channel pair instead of 36, done as 16 GEMMs
 * (cout, cin) x (cin, tiles). A 5x5 kernel (pad 2), zero-padded to 6x6, is four
 * 3x3 blocks over shifted input tiles, stacked along cin: 64 products instead
 * of 100. The transforms only add and halve, so the error
 * stays at float rounding of the sums, like the direct product. */

/* U[xi][o][blk*cg + c] = (G w_blk[o][c] G^T)[xi] for one group, w (og, cg, K, K)
 * as stored, K = 3 (one block) or 5 (zero-padded to 6x6: four 3x3 blocks, blk
 * = 2a + b for rows 3a.., columns 3b..). With flip, the dX kernel: the same
 * for w[o][c] rotated 180 degrees, as U[xi][c][blk*og + o]. */
static void wino_weights(const float *w, int og, int cg, int K, bool flip, float *U)
{
    const int nbk = K == 5 ? 4 : 1;
    const int rows = flip ? cg : og, cols = (flip ? og : cg) * nbk;
#pragma omp parallel for collapse(2) if ((size_t)og * cg > 4096)
    for (int o = 0; o < og; o++) {
        for (int c = 0; c < cg; c++) {
            const float *k = w + ((size_t)o * cg + c) * K * K;
            for (int blk = 0; blk < nbk; blk++) {
                float f[9], t[4][3], u[4][4];
                for (int p = 0; p < 3; p++)
                    for (int q = 0; q < 3; q++) {
                        const int kp = 3 * (blk / 2) + p, kq = 3 * (blk % 2) + q;
                        f[3 * p + q] = kp < K && kq < K ? k[flip ? (K - 1 - kp) * K + (K - 1 - kq) : kp * K + kq] : 0.0f;
                    }
                for (int j = 0; j < 3; j++) { /* G f: rows */
                    t[0][j] = f[j];
                    t[1][j] = 0.5f * (f[j] + f[3 + j] + f[6 + j]);
                    t[2][j] = 0.5f * (f[j] - f[3 + j] + f[6 + j]);
                    t[3][j] = f[6 + j];
                }
                for (int i = 0; i < 4; i++) { /* (G f) G^T: columns */
                    u[i][0] = t[i][0];
                    u[i][1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                    u[i][2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                    u[i][3] = t[i][2];
                }
                const size_t r = flip ? (size_t)c : (size_t)o;
                const size_t q = (size_t)blk * (flip ? og : cg) + (flip ? (size_t)o : (size_t)c);
                for (int xi = 0; xi < 16; xi++) U[((size_t)xi * rows + r) * cols + q] = u[xi / 4][xi % 4];
            }
        }
    }
}

/* out[n][o] (=, or += with acc) sum_c corr_KxK(in[n][c], kernel of U) (+ bias[o]),
 * same H x W, padding K/2, for nb images: in at its first channel with images
 * in_img floats apart, out likewise. U (16, co, nbk * ci) from wino_weights;
 * V, M: one worker's buffers. */
/* V[xi][blk*ci + c][tile] = (B^T d B)[xi] of every 4x4 input tile d (the
 * forward's, for block blk) of nb images (in at the first channel). */
static void wino_in(const float *in, size_t in_img, int ci, int H, int W, int nb, int K, float *V)
{
    const int th = (H + 1) / 2, tw = (W + 1) / 2, tpi = th * tw, nt = nb * tpi;
    const int nbk = K == 5 ? 4 : 1, pad = K / 2, cie = nbk * ci;
    const size_t hw = (size_t)H * W;
    for (int b = 0; b < nb; b++) {
        for (int cb = 0; cb < cie; cb++) {
            const int blk = cb / ci, c = cb % ci;
            const float *x = in + (size_t)b * in_img + (size_t)c * hw;
            for (int ty = 0; ty < th; ty++) {
                for (int tx = 0; tx < tw; tx++) {
                    const int h0 = 2 * ty + 3 * (blk / 2) - pad, w0 = 2 * tx + 3 * (blk % 2) - pad;
                    float d[4][4], t[4][4];
                    if (h0 >= 0 && w0 >= 0 && h0 + 3 < H && w0 + 3 < W) {
                        for (int i = 0; i < 4; i++)
                            for (int j = 0; j < 4; j++) d[i][j] = x[(size_t)(h0 + i) * W + w0 + j];
                    } else {
                        for (int i = 0; i < 4; i++)
                            for (int j = 0; j < 4; j++) {
                                const int h = h0 + i, ww = w0 + j;
                                d[i][j] = h >= 0 && h < H && ww >= 0 && ww < W ? x[(size_t)h * W + ww] : 0.0f;
                            }
                    }
                    for (int j = 0; j < 4; j++) { /* B^T d */
                        t[0][j] = d[0][j] - d[2][j];
                        t[1][j] = d[1][j] + d[2][j];
                        t[2][j] = d[2][j] - d[1][j];
                        t[3][j] = d[1][j] - d[3][j];
                    }
                    const size_t p = (size_t)b * tpi + (size_t)ty * tw + tx;
                    float *v = V + (size_t)cb * nt + p;
                    const size_t xs = (size_t)cie * nt;
                    for (int i = 0; i < 4; i++) { /* (B^T d) B */
                        v[(size_t)(4 * i + 0) * xs] = t[i][0] - t[i][2];
                        v[(size_t)(4 * i + 1) * xs] = t[i][1] + t[i][2];
                        v[(size_t)(4 * i + 2) * xs] = t[i][2] - t[i][1];
                        v[(size_t)(4 * i + 3) * xs] = t[i][1] - t[i][3];
                    }
                }
            }
        }
    }
}

static void wino_conv(const float *in, size_t in_img, int ci, int H, int W, int nb, int K, const float *U,
                      int co, float *out, size_t out_img, const float *bias, bool acc, float *V, float *M)
{
    const int th = (H + 1) / 2, tw = (W + 1) / 2, tpi = th * tw, nt = nb * tpi;
    const int cie = (K == 5 ? 4 : 1) * ci;
    const size_t hw = (size_t)H * W;
    wino_in(in, in_img, ci, H, W, nb, K, V);
    for (int xi = 0; xi < 16; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, co, nt, cie, 1.0f, U + (size_t)xi * co * cie, cie,
                    V + (size_t)xi * cie * nt, nt, 0.0f, M + (size_t)xi * co * nt, nt);
    const size_t ms = (size_t)co * nt;
    for (int b = 0; b < nb; b++) {
        for (int o = 0; o < co; o++) {
            float *y = out + (size_t)b * out_img + (size_t)o * hw;
            const float bo = bias ? bias[o] : 0.0f;
            for (int ty = 0; ty < th; ty++) {
                for (int tx = 0; tx < tw; tx++) {
                    const float *m = M + (size_t)o * nt + (size_t)b * tpi + (size_t)ty * tw + tx;
                    float t[2][4], r[2][2];
                    for (int j = 0; j < 4; j++) { /* A^T m */
                        t[0][j] = m[(size_t)j * ms] + m[(size_t)(4 + j) * ms] + m[(size_t)(8 + j) * ms];
                        t[1][j] = m[(size_t)(4 + j) * ms] - m[(size_t)(8 + j) * ms] - m[(size_t)(12 + j) * ms];
                    }
                    for (int i = 0; i < 2; i++) { /* (A^T m) A */
                        r[i][0] = t[i][0] + t[i][1] + t[i][2];
                        r[i][1] = t[i][1] - t[i][2] - t[i][3];
                    }
                    for (int i = 0; i < 2 && 2 * ty + i < H; i++)
                        for (int j = 0; j < 2 && 2 * tx + j < W; j++) {
                            float *yp = y + (size_t)(2 * ty + i) * W + 2 * tx + j;
                            *yp = acc ? *yp + r[i][j] : r[i][j] + bo;
                        }
                }
            }
        }
    }
}

/* dW by the transposed algorithm, F(3x3, 2x2): for a 3x3 block, the gradient
 * is G^T [sum over tiles and images (A dy A^T) . (B^T d B)] G with dy the tile's
 * 2x2 output gradient and d the forward's input tile; the sum is 16 GEMMs
 * (cout, tiles) x (tiles, blocks * cin) into Acc[xi][o][blk*ci + c]. */
static void wino_dw_acc(const float *x, size_t x_img, int ci, const float *dy, size_t dy_img, int co, int H,
                        int W, int nb, int K, float *Acc, float *V, float *Y)
{
    const int th = (H + 1) / 2, tw = (W + 1) / 2, tpi = th * tw, nt = nb * tpi;
    const int cie = (K == 5 ? 4 : 1) * ci;
    const size_t hw = (size_t)H * W, ys = (size_t)co * nt;
    wino_in(x, x_img, ci, H, W, nb, K, V);
    for (int b = 0; b < nb; b++) {
        for (int o = 0; o < co; o++) {
            const float *g = dy + (size_t)b * dy_img + (size_t)o * hw;
            for (int ty = 0; ty < th; ty++) {
                for (int tx = 0; tx < tw; tx++) {
                    float e[2][2], t[4][2];
                    for (int i = 0; i < 2; i++)
                        for (int j = 0; j < 2; j++) {
                            const int h = 2 * ty + i, ww = 2 * tx + j;
                            e[i][j] = h < H && ww < W ? g[(size_t)h * W + ww] : 0.0f;
                        }
                    for (int j = 0; j < 2; j++) { /* A e */
                        t[0][j] = e[0][j];
                        t[1][j] = e[0][j] + e[1][j];
                        t[2][j] = e[0][j] - e[1][j];
                        t[3][j] = -e[1][j];
                    }
                    float *y = Y + (size_t)o * nt + (size_t)b * tpi + (size_t)ty * tw + tx;
                    for (int i = 0; i < 4; i++) { /* (A e) A^T */
                        y[(size_t)(4 * i + 0) * ys] = t[i][0];
                        y[(size_t)(4 * i + 1) * ys] = t[i][0] + t[i][1];
                        y[(size_t)(4 * i + 2) * ys] = t[i][0] - t[i][1];
                        y[(size_t)(4 * i + 3) * ys] = -t[i][1];
                    }
                }
            }
        }
    }
    for (int xi = 0; xi < 16; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, co, cie, nt, 1.0f, Y + (size_t)xi * ys, nt,
                    V + (size_t)xi * cie * nt, nt, 1.0f, Acc + (size_t)xi * co * cie, cie);
}

/* dw[o][c] (K x K) += G^T Acc[.][o][blk*ci + c] G for each 3x3 block, the
 * padding rows and columns of a 5x5 kernel dropped. */
static void wino_dw_out(const float *Acc, int co, int ci, int K, float *dw)
{
    const int nbk = K == 5 ? 4 : 1, cie = nbk * ci;
    const size_t xs = (size_t)co * cie;
#pragma omp for collapse(2) schedule(static)
    for (int o = 0; o < co; o++) {
        for (int c = 0; c < ci; c++) {
            for (int blk = 0; blk < nbk; blk++) {
                const float *m = Acc + (size_t)o * cie + (size_t)blk * ci + c;
                float t[3][4], r[3][3];
                for (int j = 0; j < 4; j++) { /* G^T m */
                    const float m0 = m[(size_t)j * xs], m1 = m[(size_t)(4 + j) * xs];
                    const float m2 = m[(size_t)(8 + j) * xs], m3 = m[(size_t)(12 + j) * xs];
                    t[0][j] = m0 + 0.5f * (m1 + m2);
                    t[1][j] = 0.5f * (m1 - m2);
                    t[2][j] = 0.5f * (m1 + m2) + m3;
                }
                for (int i = 0; i < 3; i++) { /* (G^T m) G */
                    r[i][0] = t[i][0] + 0.5f * (t[i][1] + t[i][2]);
                    r[i][1] = 0.5f * (t[i][1] - t[i][2]);
                    r[i][2] = 0.5f * (t[i][1] + t[i][2]) + t[i][3];
                }
                float *k = dw + ((size_t)o * ci + c) * K * K;
                for (int p = 0; p < 3; p++)
                    for (int q = 0; q < 3; q++) {
                        const int kp = 3 * (blk / 2) + p, kq = 3 * (blk % 2) + q;
                        if (kp < K && kq < K) k[kp * K + kq] += r[p][q];
                    }
            }
        }
    }
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
    float *U = (float *)ws + (size_t)P.workers * (P.col + P.tmp + P.wv);
    if (P.wino) {
        for (int grp = 0; grp < g->groups; grp++)
            wino_weights(w + (size_t)grp * P.og * P.k, P.og, P.cg, g->kh, false, U + (size_t)grp * P.wu / g->groups);
    }
    if (P.workers > 1) {
        const int nt = omp_get_max_threads() < P.workers ? omp_get_max_threads() : P.workers;
        const size_t xs = (size_t)g->c * P.hw, ys = (size_t)g->oc * P.ohw;
#pragma omp parallel num_threads(nt)
        {
            float *col = (float *)ws + (size_t)omp_get_thread_num() * (P.col + P.tmp + P.wv);
#pragma omp for schedule(static)
            for (int c = 0; c < nchunks; c++) {
                const int n0 = c * P.chunk, nb = g->n - n0 < P.chunk ? g->n - n0 : P.chunk;
                if (!P.wino) {
                    conv_fwd_chunk(g, &P, x, w, b, y, n0, nb, col, col + P.col, false);
                    continue;
                }
                float *V = col + P.col + P.tmp, *M = V + P.wv / (P.nbk + 1) * P.nbk;
                for (int grp = 0; grp < g->groups; grp++)
                    wino_conv(x + (size_t)n0 * xs + (size_t)grp * P.cg * P.hw, xs, P.cg, g->h, g->w, nb, g->kh,
                              U + (size_t)grp * P.wu / g->groups, P.og,
                              y + (size_t)n0 * ys + (size_t)grp * P.og * P.ohw, ys,
                              b ? b + (size_t)grp * P.og : NULL, false, V, M);
            }
        }
    } else {
        for (int c = 0; c < nchunks; c++) {
            const int n0 = c * P.chunk, nb = g->n - n0 < P.chunk ? g->n - n0 : P.chunk;
            conv_fwd_chunk(g, &P, x, w, b, y, n0, nb, (float *)ws, (float *)ws + P.col, true);
        }
    }
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

nn_status nn_cpu_conv2d_backward(const nn_conv2d_geom *g, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw, float *db, void *ws)
{
    const conv_plan P = conv_plan_make(g);
    const size_t ys = (size_t)g->oc * P.ohw;
    if (db) {
        const int n = g->n, oc = g->oc;
        const size_t ohw = P.ohw;
#pragma omp parallel for if ((size_t)n * ys > CONV_OMP_MIN)
        for (int o = 0; o < oc; o++) {
            double s = 0.0; /* N*OH*OW terms: a float total would drift */
            for (int i = 0; i < n; i++) {
                const float *p = dy + ((size_t)i * oc + o) * ohw;
                float t = 0.0f;
#pragma omp simd reduction(+ : t)
                for (size_t k = 0; k < ohw; k++) t += p[k];
                s += t;
            }
            db[o] += (float)s;
        }
    }
    if (!dx && !dw) return NN_OK;

    const int nchunks = (g->n + P.chunk - 1) / P.chunk;
    if (P.workers > 1) {
        const int nt = omp_get_max_threads() < P.workers ? omp_get_max_threads() : P.workers;
        /* worker 0 accumulates straight into dw; the others into their own
         * zeroed copies, added to dw once at the end (in worker order: the
         * result depends only on the thread count) */
        float *priv = (float *)ws + (size_t)P.workers * (P.col + P.tmp + P.wv);
        float *U = priv + (size_t)(P.workers - 1) * P.dw;
        float *acc = U + P.wu; /* Winograd: one dW accumulator (P.wu floats) per worker */
        const size_t nw = P.dw, xs = (size_t)g->c * P.hw, gu = P.wu / (size_t)g->groups;
        if (P.wino && dx) {
            for (int grp = 0; grp < g->groups; grp++)
                wino_weights(w + (size_t)grp * P.og * P.k, P.og, P.cg, g->kh, true, U + (size_t)grp * gu);
        }
#pragma omp parallel num_threads(nt)
        {
            const int t = omp_get_thread_num();
            float *col = (float *)ws + (size_t)t * (P.col + P.tmp + P.wv);
            float *V = col + P.col + P.tmp, *M = V + P.wv / (P.nbk + 1) * P.nbk;
            float *mydw = dw && t > 0 && !P.wino ? priv + (size_t)(t - 1) * nw : dw;
            float *myacc = acc + (size_t)t * P.wu;
            if (dw && t > 0 && !P.wino) memset(mydw, 0, nw * sizeof(float));
            if (dw && P.wino) memset(myacc, 0, P.wu * sizeof(float));
#pragma omp for schedule(static)
            for (int c = 0; c < nchunks; c++) {
                const int n0 = c * P.chunk, nb = g->n - n0 < P.chunk ? g->n - n0 : P.chunk;
                if (!P.wino) {
                    conv_bwd_chunk(g, &P, x, w, dy, dx, mydw, n0, nb, col, col + P.col, false);
                    continue;
                }
                for (int grp = 0; grp < g->groups; grp++) {
                    const float *dyg = dy + (size_t)n0 * ys + (size_t)grp * P.og * P.ohw;
                    if (dw)
                        wino_dw_acc(x + (size_t)n0 * xs + (size_t)grp * P.cg * P.hw, xs, P.cg, dyg, ys, P.og, g->h,
                                    g->w, nb, g->kh, myacc + (size_t)grp * gu, V, M);
                    if (dx)
                        wino_conv(dyg, ys, P.og, g->h, g->w, nb, g->kh, U + (size_t)grp * gu, P.cg,
                                  dx + (size_t)n0 * xs + (size_t)grp * P.cg * P.hw, xs, NULL, true, V, M);
                }
            }
            if (dw && P.wino) { /* sum the accumulators in worker order, then back to 3x3 blocks */
                if (nt > 1) {
#pragma omp for schedule(static)
                    for (size_t i = 0; i < P.wu; i++) {
                        float s = acc[i];
                        for (int u = 1; u < nt; u++) s += acc[(size_t)u * P.wu + i];
                        acc[i] = s;
                    }
                }
                for (int grp = 0; grp < g->groups; grp++)
                    wino_dw_out(acc + (size_t)grp * gu, P.og, P.cg, g->kh, dw + (size_t)grp * P.og * P.k);
            } else if (dw && nt > 1) {
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

/* ---- graph wiring ---- */

static nn_status conv2d_backward(nn_ctx *ctx, nn_node *nd)
{
    float *dx = nn_op_grad_in(nd, 0), *dw = nn_op_grad_in(nd, 1);
    float *db = nd->nin > 2 ? nn_op_grad_in(nd, 2) : NULL;
    if (!dx && !dw && !db) return NN_OK;
    const nn_conv2d_geom *g = nd->saved;
    const nn_device dev = nd->out->device;
    const nn_backend *be = nn_backend_get(dev);
    size_t bytes = be->conv2d_workspace(g);
    void *ws = NULL;
    if (bytes && !(ws = nn_op_scratch(ctx, dev, bytes))) return nn_ctx_status(ctx);
    return be->conv2d_backward(g, nn_f32(nd->in[0]), nn_f32(nd->in[1]), nn_f32(nd->out->grad), dx,
                               dw, db, ws);
}

static const nn_op_def conv2d_def = {"conv2d", conv2d_backward};

nn_tensor *nn_conv2d(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b, nn_conv2d_params p)
{
    nn_tensor *in[3] = {x, w, b};
    if (nn_op_skip(ctx, "conv2d", 2, in)) return NULL;
    char sx[64], sw[64], sb[64];
    nn_shape_str(x, sx, sizeof sx);
    nn_shape_str(w, sw, sizeof sw);
    if (x->dtype != NN_F32 || w->dtype != NN_F32 || (b && b->dtype != NN_F32))
        return nn_op_fail(ctx, NN_E_ARG, "conv2d: input, weight and bias must be float32");
    if (x->ndim != 4)
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: input %s must be 4-D (N, C, H, W)", sx);
    if (w->ndim != 4)
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: weight %s must be 4-D (O, C/groups, KH, KW)", sw);

    const int sh = p.stride_h ? p.stride_h : 1, sws = p.stride_w ? p.stride_w : 1;
    const int groups = p.groups ? p.groups : 1;
    if (sh < 1 || sws < 1)
        return nn_op_fail(ctx, NN_E_ARG, "conv2d: stride %dx%d must be >= 1 (0 means 1)", p.stride_h,
                          p.stride_w);
    if (p.pad_h < 0 || p.pad_w < 0)
        return nn_op_fail(ctx, NN_E_ARG, "conv2d: padding %dx%d must be >= 0", p.pad_h, p.pad_w);
    if (groups < 1)
        return nn_op_fail(ctx, NN_E_ARG, "conv2d: groups %d must be >= 1 (0 means 1)", p.groups);

    const int C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int O = w->shape[0], KH = w->shape[2], KW = w->shape[3];
    if (O % groups)
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: weight %s has %d output channels, not divisible "
                          "by groups %d", sw, O, groups);
    if (C % groups)
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: input %s has %d channels, not divisible by "
                          "groups %d", sx, C, groups);
    if ((long long)w->shape[1] * groups != C)
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: input %s has %d channels but weight %s expects "
                          "%d x groups %d", sx, C, sw, w->shape[1], groups);
    if (b && (b->ndim != 1 || b->shape[0] != O))
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: bias %s must be 1-D of length %d (the weight "
                          "%s's output channels)", nn_shape_str(b, sb, sizeof sb), O, sw);
    const long long eh = (long long)H + 2LL * p.pad_h - KH, ew = (long long)W + 2LL * p.pad_w - KW;
    if (eh < 0 || ew < 0)
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: kernel %dx%d (weight %s) does not fit input %s "
                          "padded by %dx%d", KH, KW, sw, sx, p.pad_h, p.pad_w);
    const long long OH = eh / sh + 1, OW = ew / sws + 1;
    if (OH * OW * (long long)x->shape[0] > INT_MAX || (long long)w->shape[1] * KH * KW > INT_MAX)
        return nn_op_fail(ctx, NN_E_SHAPE, "conv2d: input %s with weight %s is too large for one "
                          "GEMM (int dimensions)", sx, sw);
    if (!nn_op_same_device(ctx, "conv2d", 3, in)) return NULL;
    const nn_backend *be = nn_op_backend(ctx, "conv2d", x->device);
    if (!be) return NULL;

    nn_conv2d_geom g = {
        .n = x->shape[0], .c = C, .h = H, .w = W, .oc = O, .kh = KH, .kw = KW,
        .sh = sh, .sw = sws, .ph = p.pad_h, .pw = p.pad_w, .groups = groups,
        .oh = (int)OH, .ow = (int)OW,
    };
    const int yshape[4] = {g.n, O, g.oh, g.ow};
    nn_tensor *y = nn_op_tensor(ctx, NN_F32, x->device, 4, yshape);
    if (!y) return NULL;
    size_t bytes = be->conv2d_workspace(&g);
    void *ws = NULL;
    if (bytes && !(ws = nn_op_scratch(ctx, x->device, bytes))) return NULL;
    nn_status s = be->conv2d_forward(&g, nn_f32(x), nn_f32(w), b ? nn_f32(b) : NULL, nn_f32(y), ws);
    if (s != NN_OK) return nn_op_fail_status(ctx, s);

    const int nin = b ? 3 : 2;
    if (nn_op_wants_grad(ctx, nin, in)) {
        nn_node *nd = nn_op_record(ctx, &conv2d_def, y, nin, in);
        if (!nd) return NULL;
        nn_conv2d_geom *saved = nn_op_host(ctx, sizeof *saved);
        if (!saved) return NULL;
        *saved = g;
        nd->saved = saved;
    }
    return y;
}
