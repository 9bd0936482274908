/* Where a convolution's GEMM reads its input: the im2col rule written once
 * (and its transpose, for the data gradient, below),
 * for C (tests/test_conv_index.c) and CUDA (cuda/conv2d_implicit.cu, which
 * gathers its B tiles straight from x with it).
 * x (N, C, H, W); per group gi, the GEMM's B is (K, N*OH*OW) with
 *   row k = (c*KH + i)*KW + j   (c within the group, the weight layout),
 *   column q = (s*OH + oy)*OW + ox   (s the sample, over the whole batch),
 *   B[k, q] = x[s, gi*C/G + c, oy*SH - PH + i, ox*SW - PW + j], 0 outside x. */
#ifndef NN_CONV_INDEX_H
#define NN_CONV_INDEX_H

#include "core/backend.h"

#ifdef __CUDACC__
#define NN_CONV_HD __host__ __device__
#else
#define NN_CONV_HD
#endif

/* A column's window: the sample's offset in x and the top-left corner of its
 * window in the unpadded plane (negative inside the padding). */
typedef struct nn_conv_col {
    long long base;
    int y0, x0;
} nn_conv_col;

/* A row of K: the channel plane's offset in the sample and the kernel tap. */
typedef struct nn_conv_row {
    long long off;
    int i, j;
} nn_conv_row;

/* column q (0 <= q < N*OH*OW) */
static inline NN_CONV_HD nn_conv_col nn_conv_col_of(nn_conv2d_geom g, int q)
{
    const int p = g.oh * g.ow, s = q / p, r = q - s * p, oy = r / g.ow, ox = r - oy * g.ow;
    nn_conv_col c = {(long long)s * g.c * g.h * g.w, oy * g.sh - g.ph, ox * g.sw - g.pw};
    return c;
}

/* row k (0 <= k < C/G*KH*KW) of group gi */
static inline NN_CONV_HD nn_conv_row nn_conv_row_of(nn_conv2d_geom g, int gi, int k)
{
    const int khw = g.kh * g.kw, c = k / khw, ij = k - c * khw, i = ij / g.kw;
    nn_conv_row r = {((long long)gi * (g.c / g.groups) + c) * g.h * g.w, i, ij - i * g.kw};
    return r;
}

/* The offset of B[row, col] in x, or -1 where it falls in the zero padding. */
static inline NN_CONV_HD long long nn_conv_src(nn_conv2d_geom g, nn_conv_col c, nn_conv_row r)
{
    const int y = c.y0 + r.i, x = c.x0 + r.j;
    /* one unsigned compare per axis: a negative coordinate wraps above the bound */
    if ((unsigned)y >= (unsigned)g.h || (unsigned)x >= (unsigned)g.w) return -1;
    return c.base + r.off + (long long)y * g.w + x;
}

/* Walking K without a division per step. The implicit GEMM's threads each
 * take every d-th position of K (rows k, k + d, k + 2d, ...); adding d's own
 * parts with one carry per axis (each part is below its axis' size) replaces
 * the two or three integer divisions of *_of, which cost a GPU ~20
 * instructions each. Rows: d's (planes, i, j); plane: x's plane (the forward)
 * or dy's (the transposed rule). */
typedef struct nn_conv_row_step {
    long long doff, plane;
    int di, dj;
} nn_conv_row_step;

static inline NN_CONV_HD nn_conv_row_step nn_conv_row_step_of(nn_conv2d_geom g, int d, long long plane)
{
    const int khw = g.kh * g.kw, dc = d / khw, r = d - dc * khw, di = r / g.kw;
    nn_conv_row_step s = {dc * plane, plane, di, r - di * g.kw};
    return s;
}

/* *r = the row d past it (s = nn_conv_row_step_of(g, d, plane)) */
static inline NN_CONV_HD void nn_conv_row_next(nn_conv2d_geom g, nn_conv_row *r, nn_conv_row_step s)
{
    r->off += s.doff, r->i += s.di, r->j += s.dj;
    if (r->j >= g.kw) r->j -= g.kw, r->i++;
    if (r->i >= g.kh) r->i -= g.kh, r->off += s.plane;
}

/* Columns (output pixels over the batch): d's (samples, oy, ox), kept as the
 * window corner's steps; a corner past the last output row or column carries. */
typedef struct nn_conv_col_step {
    long long dbase, sample;
    int dy0, dx0;
} nn_conv_col_step;

static inline NN_CONV_HD nn_conv_col_step nn_conv_col_step_of(nn_conv2d_geom g, int d)
{
    const int p = g.oh * g.ow, ds = d / p, r = d - ds * p, doy = r / g.ow;
    const long long sample = (long long)g.c * g.h * g.w;
    nn_conv_col_step s = {ds * sample, sample, doy * g.sh, (r - doy * g.ow) * g.sw};
    return s;
}

/* *c = the column d past it (s = nn_conv_col_step_of(g, d)) */
static inline NN_CONV_HD void nn_conv_col_next(nn_conv2d_geom g, nn_conv_col *c, nn_conv_col_step s)
{
    c->base += s.dbase, c->y0 += s.dy0, c->x0 += s.dx0;
    if (c->x0 >= g.ow * g.sw - g.pw) c->x0 -= g.ow * g.sw, c->y0 += g.sh;
    if (c->y0 >= g.oh * g.sh - g.ph) c->y0 -= g.oh * g.sh, c->base += s.sample;
}

/* The data gradient, the transposed pattern: per group gi,
 *   dx[:, gi] (C/G, N*H*W) += w[gi]^T (C/G, OC/G*KH*KW) B',
 *   row k = (o*KH + i)*KW + j   (o within the group),
 *   column q = (s*H + yy)*W + xx,
 *   B'[k, q] = dy[s, gi*OC/G + o, oy, ox] for the output (oy, ox) whose tap
 *   (i, j) reads x[s, c, yy, xx] (oy*SH - PH + i = yy, ox*SW - PW + j = xx),
 *   0 where there is none (between strides, or outside the output).
 * The same structs: a column's base is the sample's offset in dy and (y0, x0)
 * = (yy + PH, xx + PW); a row's offset is its output channel's plane in dy. */
static inline NN_CONV_HD nn_conv_col nn_convt_col_of(nn_conv2d_geom g, int q)
{
    const int hw = g.h * g.w, s = q / hw, r = q - s * hw, yy = r / g.w;
    nn_conv_col c = {(long long)s * g.oc * g.oh * g.ow, yy + g.ph, r - yy * g.w + g.pw};
    return c;
}

static inline NN_CONV_HD nn_conv_row nn_convt_row_of(nn_conv2d_geom g, int gi, int k)
{
    const int khw = g.kh * g.kw, o = k / khw, ij = k - o * khw, i = ij / g.kw;
    nn_conv_row r = {((long long)gi * (g.oc / g.groups) + o) * g.oh * g.ow, i, ij - i * g.kw};
    return r;
}

/* The offset of B'[row, col] in dy, or -1 where no output takes that tap. */
static inline NN_CONV_HD long long nn_convt_src(nn_conv2d_geom g, nn_conv_col c, nn_conv_row r)
{
    const int ny = c.y0 - r.i, nx = c.x0 - r.j;
    if (ny < 0 || nx < 0) return -1;
    int oy = ny, ox = nx;
    if (g.sh != 1 || g.sw != 1) { /* divisions only where there is a stride */
        oy = ny / g.sh, ox = nx / g.sw;
        if (oy * g.sh != ny || ox * g.sw != nx) return -1;
    }
    if (oy >= g.oh || ox >= g.ow) return -1;
    return c.base + r.off + (long long)oy * g.ow + ox;
}

#endif
