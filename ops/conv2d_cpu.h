/* Internal to the conv2d CPU kernels: Winograd F(m x m, r x r) transforms and
 * products (ops/conv2d_winograd.c), used by the drivers in ops/conv2d_gemm.c.
 * Raw float arrays, NCHW, one group at a time; see the .c for each layout. */
#ifndef NN_CONV2D_CPU_H
#define NN_CONV2D_CPU_H

#include <stdbool.h>
#include <stddef.h>

#include "core/backend.h"

/* Largest input tile n = m + r - 1: past 8 points the transforms' entries
 * (powers of 2 and 1/2 and their products) make fp32 error grow past what
 * the conv tests allow (see nn_wino_make). */
#define NN_WINO_NMAX 8

/* One Winograd algorithm F(m x m, r x r): output tiles of m x m, kernels of
 * r x r, input tiles of n x n, and its three matrices rounded to float. */
typedef struct nn_wino {
    int m, r, n;
    float at[NN_WINO_NMAX * NN_WINO_NMAX]; /* A^T, m x n: the output transform */
    float g[NN_WINO_NMAX * NN_WINO_NMAX];  /* G, n x r: the kernel transform */
    float bt[NN_WINO_NMAX * NN_WINO_NMAX]; /* B^T, n x n: the input transform */
} nn_wino;

/* Builds F(m, r) from its interpolation points; false when n > NN_WINO_NMAX. */
bool nn_wino_make(int m, int r, nn_wino *wf);

/* Floats of the n*n transformed planes for rows x cols matrices. */
static inline size_t nn_wino_planes(const nn_wino *wf, size_t rows, size_t cols)
{
    return (size_t)wf->n * (size_t)wf->n * rows * cols;
}

/* Tiles of one H x W map. */
static inline int nn_wino_tiles(const nn_wino *wf, int H, int W)
{
    return ((H + wf->m - 1) / wf->m) * ((W + wf->m - 1) / wf->m);
}

/* Floats of the copy of nb images of c channels interleaved by 8. */
static inline size_t nn_wino_xr_floats(int nb, int c, int H, int W)
{
    return (size_t)nb * (size_t)((c + 7) / 8 * 8) * (size_t)H * (size_t)W;
}

/* How a layer runs through Winograd: the algorithm, the images per pass and
 * the floats of each buffer in the workspace. */
typedef struct nn_wino_plan {
    nn_wino wf;
    int chunk;         /* images per pass: about `tiles` tiles */
    int threads;       /* of the parallel region */
    size_t u;          /* transformed kernels (U; the dW accumulator likewise) */
    size_t vm;         /* transformed inputs V, and products M, each */
    size_t xr;         /* the chunk's input, channels interleaved by 8 */
} nn_wino_plan;

/* F(m, r = g->kh) for g on `threads` threads, passes of about `tiles` tiles;
 * wp->wf.m == 0 when there is no such algorithm (n > NN_WINO_NMAX). */
void nn_wino_plan_make(const nn_conv2d_geom *g, int m, int threads, int tiles, nn_wino_plan *wp);
size_t nn_wino_workspace(const nn_wino_plan *wp); /* bytes */

/* The conv2d kernels' contract (ops/cpu_kernels.h) for a layer the plan fits:
 * y = conv(x, w) + b; backward adds into dx and dw (either may be NULL). */
void nn_wino_forward(const nn_conv2d_geom *g, const nn_wino_plan *wp, const float *x, const float *w,
                     const float *b, float *y, float *ws);
void nn_wino_backward(const nn_conv2d_geom *g, const nn_wino_plan *wp, const float *x, const float *w,
                      const float *dy, float *dx, float *dw, float *ws);

/* The phases the drivers run, each an orphaned `omp for` (see the .c). */
void nn_wino_weights(const nn_wino *wf, const float *w, int og, int cg, bool flip, float *U);
void nn_wino_in(const nn_wino *wf, const float *in, size_t in_img, int ci, int H, int W, int nb, float *V, float *xr);
void nn_wino_products(const nn_wino *wf, const float *U, const float *V, int co, int ci, int nt, float *M);
void nn_wino_out(const nn_wino *wf, const float *M, int co, int H, int W, int nb, float *out, size_t out_img,
                 const float *bias, bool acc);
void nn_wino_dy(const nn_wino *wf, const float *dy, size_t dy_img, int co, int H, int W, int nb, float *Y);
void nn_wino_dw_acc(const nn_wino *wf, const float *Y, const float *V, int co, int ci, int nt, float beta, float *Acc);
void nn_wino_dw_out(const nn_wino *wf, const float *Acc, int co, int ci, float *dw);

#endif
