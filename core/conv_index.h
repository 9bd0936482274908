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
    const int oy = ny / g.sh, ox = nx / g.sw;
    if (oy * g.sh != ny || ox * g.sw != nx || oy >= g.oh || ox >= g.ow) return -1;
    return c.base + r.off + (long long)oy * g.ow + ox;
}

#endif
