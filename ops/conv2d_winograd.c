/* conv2d on the CPU, the Winograd half: F(m x m, r x r) for stride-1 layers
 * padded to keep their size (r = 3 or 5 in AlexNet), built from interpolation
 * points for any m and r up to n = m + r - 1 = NN_WINO_NMAX; the transforms,
 * the n*n GEMMs between them, the transposed algorithm for dW, and the
 * drivers. Which layers come here, and with which m, is decided in
 * ops/conv2d_gemm.c. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops/conv2d_cpu.h"
#include "ops/cpu_kernels.h"

/* ---- The algorithm (Lavin & Gray 2016; Cook-Toom) ----
 * Linear convolution s = g * h of a kernel g (r taps) and h (m taps) is
 * s = C [(G g) . (A h)]: evaluate both polynomials at n - 1 points a_j and at
 * infinity (the leading coefficient), multiply, interpolate. With
 * N_j = prod_{l != j} (a_j - a_l):
 *   A (n x m)  row j: a_j^0 .. a_j^(m-1); the infinity row: 0 .. 0 1
 *   G (n x r)  row j: a_j^k / N_j;        the infinity row: 0 .. 0 1
 *   C (n x n)  column j: the coefficients of prod_{l != j} (x - a_l);
 *              the infinity column: those of prod_l (x - a_l).
 * The correlation a layer computes, y_i = sum_k d_(i+k) g_k for i < m, is the
 * transpose of that bilinear form in h: y = A^T [(G g) . (C^T d)], so B = C.
 * In 2D each n x n input tile d gives the m x m outputs
 * A^T [(G g G^T) . (B^T d B)] A: n^2 products per tile and channel pair
 * instead of m^2 r^2.
 * The points: 0, 1, -1, 1/2, -1/2, 2, -2 in that order, the first n - 1 of
 * them. Small magnitudes keep the entries of A^T and B^T small and those of
 * G mild; 1/2 before 2 measured a little more accurate at 6 and 7 points.
 * Past 8 points the next ones (3, 1/3 or 4) would grow the rounding error
 * by another order of magnitude, hence NN_WINO_NMAX = 8; at 7 and 8 points
 * the error is already ~1e-5 of the sum of |terms| (tests/test_conv2d.c). */
static const double wino_points[NN_WINO_NMAX - 1] = {0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0};

bool nn_wino_make(int m, int r, nn_wino *wf)
{
    const int n = m + r - 1, f = n - 1; /* f finite points and infinity */
    if (m < 1 || r < 1 || n < 2 || n > NN_WINO_NMAX) return false;
    memset(wf, 0, sizeof *wf);
    wf->m = m;
    wf->r = r;
    wf->n = n;
    const double *a = wino_points;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < f; j++) wf->at[i * n + j] = (float)pow(a[j], i); /* pow(0, 0) = 1 */
        wf->at[i * n + f] = i == m - 1 ? 1.0f : 0.0f;
    }
    for (int j = 0; j < f; j++) {
        double nj = 1.0;
        for (int l = 0; l < f; l++)
            if (l != j) nj *= a[j] - a[l];
        for (int k = 0; k < r; k++) wf->g[j * r + k] = (float)(pow(a[j], k) / nj);
    }
    wf->g[f * r + r - 1] = 1.0f;
    for (int j = 0; j <= f; j++) { /* row j of B^T: the coefficients of prod_{l != j} (x - a_l) */
        double c[NN_WINO_NMAX + 1] = {1.0};
        int deg = 0;
        for (int l = 0; l < f; l++) {
            if (l == j) continue;
            for (int d = deg + 1; d > 0; d--) c[d] = c[d - 1] - a[l] * c[d];
            c[0] = -a[l] * c[0];
            deg++;
        }
        for (int i = 0; i < n; i++) wf->bt[j * n + i] = (float)c[i];
    }
    return true;
}

/* ---- The transforms ----
 * Each works on 8 tiles or 8 channels at once, one per lane of a vector (GCC
 * vector extensions: AVX in the avx2 copy, two SSE halves in the baseline);
 * a matrix entry of 0 is skipped (A^T and B^T are about half zeros), and
 * the sums run in a fixed order, so the result does not depend on how many
 * lanes are live or which copy runs. */
#define WINO_L 8
#define WN NN_WINO_NMAX
typedef float v8 __attribute__((vector_size(WINO_L * sizeof(float))));
typedef float v8u __attribute__((vector_size(WINO_L * sizeof(float)), aligned(4))); /* any float address */

/* Each transform is compiled once per algorithm AlexNet-like layers use
 * (n points, r taps), so its loops have constant bounds: the compiler unrolls
 * them and keeps the tile in vector registers (about 2x faster than with the
 * bounds read at run time); any other (n, r) takes the generic copy. */
#define WINO_SPECIALIZE(fn, ...)                                                                           \
    switch (wf->n * 16 + wf->r) {                                                                         \
    case 4 * 16 + 3: fn(4, 3, __VA_ARGS__); break;                                                        \
    case 5 * 16 + 3: fn(5, 3, __VA_ARGS__); break;                                                        \
    case 6 * 16 + 3: fn(6, 3, __VA_ARGS__); break;                                                        \
    case 7 * 16 + 3: fn(7, 3, __VA_ARGS__); break;                                                        \
    case 6 * 16 + 5: fn(6, 5, __VA_ARGS__); break;                                                        \
    case 7 * 16 + 5: fn(7, 5, __VA_ARGS__); break;                                                        \
    case 8 * 16 + 5: fn(8, 5, __VA_ARGS__); break;                                                        \
    default: fn(wf->n, wf->r, __VA_ARGS__); break;                                                        \
    }

/* out[i][j] = sum_k mat[i][k] in[k][j] for i < rows, j < cols, k < inner. */
static inline __attribute__((always_inline)) void lanes_left(const float *mat, int rows, int inner, int cols, v8 in[WN][WN], v8 out[WN][WN])
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            v8 s = {0};
            for (int k = 0; k < inner; k++) {
                const float c = mat[i * inner + k];
                if (c != 0.0f) s += c * in[k][j];
            }
            out[i][j] = s;
        }
}

/* out[i][j] = sum_k in[i][k] mat[j][k] for i < rows, j < cols, k < inner. */
static inline __attribute__((always_inline)) void lanes_right(const float *mat, int rows, int inner, int cols, v8 in[WN][WN], v8 out[WN][WN])
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            v8 s = {0};
            for (int k = 0; k < inner; k++) {
                const float c = mat[j * inner + k];
                if (c != 0.0f) s += in[i][k] * c;
            }
            out[i][j] = s;
        }
}

/* *v = p[0 .. n-1], zero past n. */
static inline void load8(v8 *v, const float *p, int n)
{
    const v8 zero = {0};
    if (n == WINO_L) {
        *v = *(const v8u *)(const void *)p;
        return;
    }
    *v = zero;
    memcpy(v, p, (size_t)n * sizeof(float));
}

/* p[0 .. n-1] = the first n lanes of *v (a call to memcpy only when n < 8);
 * by pointer: a vector passed by value would change the ABI between the
 * AVX2 and baseline copies (-Wpsabi). */
static inline void store8(float *p, const v8 *v, int n)
{
    if (n == WINO_L)
        *(v8u *)(void *)p = *v;
    else
        memcpy(p, v, (size_t)n * sizeof(float));
}

static int blocks_of(int c) { return (c + WINO_L - 1) / WINO_L; }
static int lanes_at(int c, int blk) { return c - blk * WINO_L < WINO_L ? c - blk * WINO_L : WINO_L; }

/* Where the tiles of a chunk lie: tile p of nb images is image p / tpi, tile
 * row (p % tpi) / tw, column (p % tpi) % tw. */
typedef struct tile_grid {
    int H, W, m, tw, tpi;
} tile_grid;

static tile_grid grid_of(const nn_wino *wf, int H, int W)
{
    tile_grid t = {H, W, wf->m, (W + wf->m - 1) / wf->m, nn_wino_tiles(wf, H, W)};
    return t;
}

/* Channels c0 .. c0+nc-1 of one image, interleaved: xr[y][x][l] = channel
 * c0 + l (0 past nc), so that the input transform reads each point of 8
 * channels as one vector; tiles overlap, so each point is read (n/m)^2
 * times on average, and this pass once. */
static NN_CPU_CLONES void interleave(const float *x, size_t hw, int nc, float *xr)
{
    for (size_t k = 0; k < hw; k++)
        for (int l = 0; l < WINO_L; l++) xr[k * WINO_L + l] = l < nc ? x[(size_t)l * hw + k] : 0.0f;
}

/* V[xi][p][c] = (B^T d B)[xi] of tile p for every channel c < ci, from the
 * interleaved images xr (blocks of 8 channels); V's planes vs apart. One
 * tile at a time, all its channels: each of the n^2 planes is written along
 * one row (ci floats), so the writes stream through memory instead of
 * touching n^2 scattered cache lines per 8 channels. Rows and columns of
 * the tile that lie in the padding are zero and skipped: on small maps they
 * are much of it (a 3x3 map is the middle of one 5x5 tile of F(3x3, 3x3)). */
static inline __attribute__((always_inline)) void in_tile_n(const int n, const int r, const nn_wino *wf, const tile_grid *t, const float *xr, int p, int ci, int pad,
                                  float *V, size_t vs)
{
    (void)r; /* (the tile's size is n; r is in the signature for WINO_SPECIALIZE) */

    const int q = p % t->tpi, h0 = q / t->tw * t->m - pad, w0 = q % t->tw * t->m - pad;
    /* the rows [i0, i1) and columns [j0, j1) of the tile inside the map */
    const int i0 = h0 < 0 ? -h0 : 0, i1 = h0 + n > t->H ? t->H - h0 : n;
    const int j0 = w0 < 0 ? -w0 : 0, j1 = w0 + n > t->W ? t->W - w0 : n;
    const size_t hw = (size_t)t->H * t->W;
    v8 d[WN][WN], u[WN][WN];
    for (int bk = 0; bk < blocks_of(ci); bk++) {
        const float *xb = xr + ((size_t)(p / t->tpi) * (size_t)blocks_of(ci) + (size_t)bk) * hw * WINO_L;
        for (int i = i0; i < i1; i++)
            for (int j = j0; j < j1; j++)
                d[i][j] = *(const v8u *)(const void *)(xb + ((size_t)(h0 + i) * t->W + w0 + j) * WINO_L);
        /* u = B^T d over the live rows, for the live columns; d = u B over the live columns */
        for (int i = 0; i < n; i++)
            for (int j = j0; j < j1; j++) {
                v8 s = {0};
                for (int k = i0; k < i1; k++) {
                    const float c = wf->bt[i * n + k];
                    if (c != 0.0f) s += c * d[k][j];
                }
                u[i][j] = s;
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                v8 s = {0};
                for (int k = j0; k < j1; k++) {
                    const float c = wf->bt[j * n + k];
                    if (c != 0.0f) s += u[i][k] * c;
                }
                d[i][j] = s;
            }
        float *v = V + (size_t)p * ci + (size_t)bk * WINO_L;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) store8(v + (size_t)(i * n + j) * vs, &d[i][j], lanes_at(ci, bk));
    }
}

static NN_CPU_CLONES void in_tile(const nn_wino *wf, const tile_grid *t, const float *xr, int p, int ci, int pad,
                                  float *V, size_t vs)
{
    WINO_SPECIALIZE(in_tile_n, wf, t, xr, p, ci, pad, V, vs);
}

/* Output channel o of tiles p0 .. p0+np-1: y = A^T M A (+ bias, or added to y
 * with acc); mo at M[0][o][p0], planes ms apart; y at channel o of the first image. */
static inline __attribute__((always_inline)) void out_lanes_n(const int n, const int r, const nn_wino *wf, const tile_grid *t, const float *mo, size_t ms, int p0,
                                    int np, float *y, size_t y_img, float bias, bool acc)
{

    const int m = n - r + 1;
    v8 a[WN][WN], b[WN][WN];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) load8(&a[i][j], mo + (size_t)(i * n + j) * ms, np);
    lanes_left(wf->at, m, n, n, a, b);
    lanes_right(wf->at, m, n, m, b, a);
    for (int l = 0; l < np; l++) {
        const int p = p0 + l, q = p % t->tpi, h0 = q / t->tw * m, w0 = q % t->tw * m;
        float *yb = y + (size_t)(p / t->tpi) * y_img;
        for (int i = 0; i < m && h0 + i < t->H; i++)
            for (int j = 0; j < m && w0 + j < t->W; j++) {
                float *yp = yb + (size_t)(h0 + i) * t->W + w0 + j;
                *yp = acc ? *yp + a[i][j][l] : a[i][j][l] + bias;
            }
    }
}

static NN_CPU_CLONES void out_lanes(const nn_wino *wf, const tile_grid *t, const float *mo, size_t ms, int p0,
                                    int np, float *y, size_t y_img, float bias, bool acc)
{
    WINO_SPECIALIZE(out_lanes_n, wf, t, mo, ms, p0, np, y, y_img, bias, acc);
}

/* The transposed output transform for dW: Y[xi][o][p] = (A e A^T)[xi] of the
 * m x m output-gradient tile e (zero past the map) of tiles p0 .. p0+np-1. */
static inline __attribute__((always_inline)) void dy_lanes_n(const int n, const int r, const nn_wino *wf,
                                                             const tile_grid *t, const float *g, size_t g_img,
                                                             int p0, int np, float *y, size_t ys)
{
    const int m = n - r + 1;
    v8 e[WN][WN], u[WN][WN];
    float a[WN * WN]; /* A = (A^T)^T, n x m */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) a[i * m + j] = wf->at[j * n + i];
    /* each lane's tile: its image's plane and first row and column; a lane
     * past np gets a tile wholly outside the map (zeros) */
    const float *gl[WINO_L];
    int hl[WINO_L], wl[WINO_L];
    for (int l = 0; l < WINO_L; l++) {
        const int p = p0 + (l < np ? l : 0), q = p % t->tpi;
        gl[l] = g + (size_t)(p / t->tpi) * g_img;
        hl[l] = l < np ? q / t->tw * m : t->H;
        wl[l] = q % t->tw * m;
    }
#define DY_AT(l) (hl[l] + i < t->H && wl[l] + j < t->W ? gl[l][(size_t)(hl[l] + i) * t->W + wl[l] + j] : 0.0f)
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) /* built in registers: no store-to-load stall per lane */
            e[i][j] = (v8){DY_AT(0), DY_AT(1), DY_AT(2), DY_AT(3), DY_AT(4), DY_AT(5), DY_AT(6), DY_AT(7)};
#undef DY_AT
    lanes_left(a, n, m, m, e, u);
    lanes_right(a, n, m, n, u, e);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) store8(y + (size_t)(i * n + j) * ys, &e[i][j], np);
}

static NN_CPU_CLONES void dy_lanes(const nn_wino *wf, const tile_grid *t, const float *g, size_t g_img, int p0,
                                   int np, float *y, size_t ys)
{
    WINO_SPECIALIZE(dy_lanes_n, wf, t, g, g_img, p0, np, y, ys);
}

/* dst[xi * plane + l] = (G k_l G^T)[xi] for nl kernels k_l (r x r at
 * src + l * step), rotated 180 degrees with flip. */
static inline __attribute__((always_inline)) void weight_lanes_n(const int n, const int r, const nn_wino *wf,
                                                                 const float *src, size_t step, int nl, bool flip,
                                                                 float *dst, size_t plane)
{
    v8 k[WN][WN], u[WN][WN];
    /* lanes past nl read kernel 0 again: computed, never stored */
    size_t off[WINO_L];
    for (int l = 0; l < WINO_L; l++) off[l] = l < nl ? (size_t)l * step : 0;
    for (int p = 0; p < r; p++)
        for (int q = 0; q < r; q++) {
            const float *s = src + (flip ? (r - 1 - p) * r + (r - 1 - q) : p * r + q);
            k[p][q] = (v8){s[off[0]], s[off[1]], s[off[2]], s[off[3]], s[off[4]], s[off[5]], s[off[6]], s[off[7]]};
        }
    lanes_left(wf->g, n, r, r, k, u);
    lanes_right(wf->g, n, r, n, u, k);
    for (int xi = 0; xi < n * n; xi++) store8(dst + (size_t)xi * plane, &k[xi / n][xi % n], nl);
}

static NN_CPU_CLONES void weight_lanes(const nn_wino *wf, const float *src, size_t step, int nl, bool flip,
                                       float *dst, size_t plane)
{
    WINO_SPECIALIZE(weight_lanes_n, wf, src, step, nl, flip, dst, plane);
}

/* dw[o][c] (r x r) += G^T Acc[.][o][c] G for channels c0 .. c0+nc-1. */
static inline __attribute__((always_inline)) void dw_lanes_n(const int n, const int r, const nn_wino *wf, const float *acc, size_t as, int nc, float *dw)
{

    
    v8 a[WN][WN], b[WN][WN];
    float gt[WN * WN]; /* G^T, r x n */
    for (int i = 0; i < r; i++)
        for (int j = 0; j < n; j++) gt[i * n + j] = wf->g[j * r + i];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) load8(&a[i][j], acc + (size_t)(i * n + j) * as, nc);
    lanes_left(gt, r, n, n, a, b);
    lanes_right(gt, r, n, r, b, a);
    for (int l = 0; l < nc; l++)
        for (int p = 0; p < r; p++)
            for (int q = 0; q < r; q++) dw[(size_t)l * r * r + p * r + q] += a[p][q][l];
}

static NN_CPU_CLONES void dw_lanes(const nn_wino *wf, const float *acc, size_t as, int nc, float *dw)
{
    WINO_SPECIALIZE(dw_lanes_n, wf, acc, as, nc, dw);
}

/* ---- The phases ----
 * Each is an orphaned `omp for ... nowait`: every thread of the caller's
 * parallel region calls it and takes a share; the driver puts a barrier
 * where a phase reads what another wrote, and none between independent ones
 * (with the passive wait policy each barrier is a sleep and a wake-up). What
 * an element is computed from, and in which order, does not depend on which
 * thread computes it, so the results do not depend on the thread count. */

/* U (n*n, og, cg) from w (og, cg, r, r); with flip, the dX kernels (each
 * rotated 180 degrees) as U (n*n, cg, og). */
void nn_wino_weights(const nn_wino *wf, const float *w, int og, int cg, bool flip, float *U)
{
    const size_t plane = (size_t)og * cg, rr = (size_t)wf->r * wf->r;
    const int rows = flip ? cg : og, cols = flip ? og : cg;
#pragma omp for collapse(2) schedule(static) nowait
    for (int i = 0; i < rows; i++)
        for (int bk = 0; bk < blocks_of(cols); bk++) {
            const int j0 = bk * WINO_L;
            /* lanes along the stored row: input channels, or output channels with flip */
            const float *src = flip ? w + ((size_t)j0 * cg + i) * rr : w + ((size_t)i * cg + j0) * rr;
            weight_lanes(wf, src, flip ? (size_t)cg * rr : rr, lanes_at(cols, bk), flip, U + (size_t)i * cols + j0,
                         plane);
        }
}

/* V (n*n, nt, ci) of the nt = nb * tiles input tiles of nb images (in at its
 * first channel, images in_img apart); xr: room for the nb images with their
 * channels interleaved by 8 (nn_wino_xr_floats). With enough images for
 * every thread, each takes whole images, interleaving an image and then
 * transforming its tiles (no barrier between); with few, all threads share
 * the interleaving, then the tiles. */
void nn_wino_in(const nn_wino *wf, const float *in, size_t in_img, int ci, int H, int W, int nb, float *V, float *xr)
{
    const tile_grid t = grid_of(wf, H, W);
    const int nt = nb * t.tpi, pad = (wf->r - 1) / 2, nblk = blocks_of(ci);
    const size_t hw = (size_t)H * W, vs = (size_t)ci * nt;
    if (nb >= 2 * omp_get_num_threads()) {
#pragma omp for schedule(static) nowait
        for (int b = 0; b < nb; b++) {
            for (int bk = 0; bk < nblk; bk++)
                interleave(in + (size_t)b * in_img + (size_t)bk * WINO_L * hw, hw, lanes_at(ci, bk),
                           xr + ((size_t)b * nblk + bk) * hw * WINO_L);
            for (int p = b * t.tpi; p < (b + 1) * t.tpi; p++) in_tile(wf, &t, xr, p, ci, pad, V, vs);
        }
        return;
    }
#pragma omp for collapse(2) schedule(static)
    for (int b = 0; b < nb; b++)
        for (int bk = 0; bk < nblk; bk++)
            interleave(in + (size_t)b * in_img + (size_t)bk * WINO_L * hw, hw, lanes_at(ci, bk),
                       xr + ((size_t)b * nblk + bk) * hw * WINO_L);
#pragma omp for schedule(static) nowait
    for (int p = 0; p < nt; p++) in_tile(wf, &t, xr, p, ci, pad, V, vs);
}

/* M[xi] (co, nt) = U[xi] (co, ci) V[xi]^T: the products of every tile. */
void nn_wino_products(const nn_wino *wf, const float *U, const float *V, int co, int ci, int nt, float *M)
{
    const size_t us = (size_t)co * ci, vs = (size_t)nt * ci, ms = (size_t)co * nt;
#pragma omp for schedule(static) nowait
    for (int xi = 0; xi < wf->n * wf->n; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, co, nt, ci, 1.0f, U + (size_t)xi * us, ci,
                    V + (size_t)xi * vs, ci, 0.0f, M + (size_t)xi * ms, nt);
}

/* out[b][o] (=, or += with acc) = A^T M[.][o][tile] A (+ bias[o]) over the
 * tiles of nb images (out at its first channel, images out_img apart). */
void nn_wino_out(const nn_wino *wf, const float *M, int co, int H, int W, int nb, float *out, size_t out_img,
                 const float *bias, bool acc)
{
    const tile_grid t = grid_of(wf, H, W);
    const int nt = nb * t.tpi;
    const size_t hw = (size_t)H * W, ms = (size_t)co * nt;
#pragma omp for collapse(2) schedule(static) nowait
    for (int o = 0; o < co; o++)
        for (int bk = 0; bk < blocks_of(nt); bk++)
            out_lanes(wf, &t, M + (size_t)o * nt + (size_t)bk * WINO_L, ms, bk * WINO_L, lanes_at(nt, bk),
                      out + (size_t)o * hw, out_img, bias ? bias[o] : 0.0f, acc);
}

/* Y (n*n, co, nt): A e A^T of every m x m output-gradient tile e of nb images
 * (dy at its first channel, images dy_img apart). */
void nn_wino_dy(const nn_wino *wf, const float *dy, size_t dy_img, int co, int H, int W, int nb, float *Y)
{
    const tile_grid t = grid_of(wf, H, W);
    const int nt = nb * t.tpi;
    const size_t hw = (size_t)H * W, ys = (size_t)co * nt;
#pragma omp for collapse(2) schedule(static) nowait
    for (int o = 0; o < co; o++)
        for (int bk = 0; bk < blocks_of(nt); bk++)
            dy_lanes(wf, &t, dy + (size_t)o * hw, dy_img, bk * WINO_L, lanes_at(nt, bk),
                     Y + (size_t)o * nt + (size_t)bk * WINO_L, ys);
}

/* Acc[xi] (co, ci) = beta Acc[xi] + Y[xi] (co, nt) V[xi] (nt, ci): the
 * gradient of U summed over the tiles (the transposed algorithm). */
void nn_wino_dw_acc(const nn_wino *wf, const float *Y, const float *V, int co, int ci, int nt, float beta,
                    float *Acc)
{
    const size_t ys = (size_t)co * nt, vs = (size_t)nt * ci, as = (size_t)co * ci;
#pragma omp for schedule(static) nowait
    for (int xi = 0; xi < wf->n * wf->n; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, co, ci, nt, 1.0f, Y + (size_t)xi * ys, nt,
                    V + (size_t)xi * vs, ci, beta, Acc + (size_t)xi * as, ci);
}

/* dw[o][c] (r x r) += G^T Acc[.][o][c] G. */
void nn_wino_dw_out(const nn_wino *wf, const float *Acc, int co, int ci, float *dw)
{
    const size_t as = (size_t)co * ci, rr = (size_t)wf->r * wf->r;
#pragma omp for collapse(2) schedule(static) nowait
    for (int o = 0; o < co; o++)
        for (int bk = 0; bk < blocks_of(ci); bk++)
            dw_lanes(wf, Acc + (size_t)o * ci + (size_t)bk * WINO_L, as, lanes_at(ci, bk),
                     dw + ((size_t)o * ci + (size_t)bk * WINO_L) * rr);
}

/* ---- The drivers: the whole batch in chunks of images, every thread in
 * every phase (so a batch of 64 images of 3x3 maps makes GEMMs 64 tiles
 * wide, where one chunk per thread would make them 32), and dW summed over
 * the chunks in one accumulator per transformed point, with no per-thread
 * copies to add up. ---- */

void nn_wino_plan_make(const nn_conv2d_geom *g, int m, int threads, int tiles, nn_wino_plan *wp)
{
    memset(wp, 0, sizeof *wp);
    if (!nn_wino_make(m, g->kh, &wp->wf)) return;
    const int cg = g->c / g->groups, og = g->oc / g->groups, tpi = nn_wino_tiles(&wp->wf, g->h, g->w);
    const int chunk = (tiles + tpi - 1) / tpi;
    wp->chunk = chunk < 1 ? 1 : chunk > g->n ? g->n : chunk;
    wp->threads = threads < 1 ? 1 : threads;
    wp->u = nn_wino_planes(&wp->wf, (size_t)g->groups * og, (size_t)cg);
    wp->vm = nn_wino_planes(&wp->wf, (size_t)(cg > og ? cg : og), (size_t)wp->chunk * tpi);
    wp->xr = nn_wino_xr_floats(wp->chunk, cg > og ? cg : og, g->h, g->w);
}

size_t nn_wino_workspace(const nn_wino_plan *wp)
{
    /* backward: flipped U and the dW accumulator; V and M; the interleaved input */
    return (2 * wp->u + 2 * wp->vm + wp->xr) * sizeof(float);
}

void nn_wino_forward(const nn_conv2d_geom *g, const nn_wino_plan *wp, const float *x, const float *w,
                     const float *b, float *y, float *ws)
{
    const nn_wino *wf = &wp->wf;
    const int cg = g->c / g->groups, og = g->oc / g->groups, tpi = nn_wino_tiles(wf, g->h, g->w);
    const size_t hw = (size_t)g->h * g->w, xs = (size_t)g->c * hw, ys = (size_t)g->oc * hw;
    const size_t gu = wp->u / (size_t)g->groups, gw = (size_t)og * cg * wf->r * wf->r;
    float *U = ws, *V = U + 2 * wp->u, *M = V + wp->vm, *xr = M + wp->vm;
#pragma omp parallel num_threads(wp->threads)
    {
        /* the weights' transform and the first chunk's input transform are
         * independent: one barrier ends both */
        for (int grp = 0; grp < g->groups; grp++)
            nn_wino_weights(wf, w + (size_t)grp * gw, og, cg, false, U + (size_t)grp * gu);
        for (int n0 = 0; n0 < g->n; n0 += wp->chunk) {
            const int nb = g->n - n0 < wp->chunk ? g->n - n0 : wp->chunk;
            for (int grp = 0; grp < g->groups; grp++) {
                nn_wino_in(wf, x + (size_t)n0 * xs + (size_t)grp * cg * hw, xs, cg, g->h, g->w, nb, V, xr);
#pragma omp barrier
                nn_wino_products(wf, U + (size_t)grp * gu, V, og, cg, nb * tpi, M);
#pragma omp barrier
                /* no barrier after: the next pass's products, which overwrite M,
                 * come after the barrier that ends its input transform */
                nn_wino_out(wf, M, og, g->h, g->w, nb, y + (size_t)n0 * ys + (size_t)grp * og * hw, ys,
                            b ? b + (size_t)grp * og : NULL, false);
            }
        }
    }
}

void nn_wino_backward(const nn_conv2d_geom *g, const nn_wino_plan *wp, const float *x, const float *w,
                      const float *dy, float *dx, float *dw, float *ws)
{
    const nn_wino *wf = &wp->wf;
    const int cg = g->c / g->groups, og = g->oc / g->groups, tpi = nn_wino_tiles(wf, g->h, g->w);
    const size_t hw = (size_t)g->h * g->w, xs = (size_t)g->c * hw, ys = (size_t)g->oc * hw;
    const size_t gu = wp->u / (size_t)g->groups, gw = (size_t)og * cg * wf->r * wf->r;
    float *U = ws, *Acc = U + wp->u, *V = Acc + wp->u, *M = V + wp->vm, *xr = M + wp->vm;
#pragma omp parallel num_threads(wp->threads)
    {
        if (dx) /* needed from the first products on: no barrier of its own */
            for (int grp = 0; grp < g->groups; grp++)
                nn_wino_weights(wf, w + (size_t)grp * gw, og, cg, true, U + (size_t)grp * gu);
        for (int n0 = 0; n0 < g->n; n0 += wp->chunk) {
            const int nb = g->n - n0 < wp->chunk ? g->n - n0 : wp->chunk, nt = nb * tpi;
            for (int grp = 0; grp < g->groups; grp++) {
                const float *xg = x + (size_t)n0 * xs + (size_t)grp * cg * hw;
                const float *dyg = dy + (size_t)n0 * ys + (size_t)grp * og * hw;
                if (dw) { /* M holds the transformed output gradients Y here; both transforms in one phase */
                    nn_wino_in(wf, xg, xs, cg, g->h, g->w, nb, V, xr);
                    nn_wino_dy(wf, dyg, ys, og, g->h, g->w, nb, M);
#pragma omp barrier
                    nn_wino_dw_acc(wf, M, V, og, cg, nt, n0 == 0 ? 0.0f : 1.0f, Acc + (size_t)grp * gu);
#pragma omp barrier
                }
                if (dx) { /* dX: the forward algorithm on dY with the flipped kernels */
                    nn_wino_in(wf, dyg, ys, og, g->h, g->w, nb, V, xr);
#pragma omp barrier
                    nn_wino_products(wf, U + (size_t)grp * gu, V, cg, og, nt, M);
#pragma omp barrier
                    nn_wino_out(wf, M, cg, g->h, g->w, nb, dx + (size_t)n0 * xs + (size_t)grp * cg * hw, xs, NULL,
                                true);
#pragma omp barrier /* (the next pass's dY transform overwrites M) */
                }
            }
        }
        if (dw)
            for (int grp = 0; grp < g->groups; grp++)
                nn_wino_dw_out(wf, Acc + (size_t)grp * gu, og, cg, dw + (size_t)grp * gw);
    }
}
