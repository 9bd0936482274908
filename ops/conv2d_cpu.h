/* Internal to the conv2d CPU kernels: Winograd F(2x2, 3x3) transforms and
 * products (ops/conv2d_winograd.c), used by the drivers in ops/conv2d_gemm.c.
 * Raw float arrays, NCHW, one group at a time; see the .c for each layout. */
#ifndef NN_CONV2D_CPU_H
#define NN_CONV2D_CPU_H

#include <stdbool.h>
#include <stddef.h>

void nn_wino_weights(const float *w, int og, int cg, int K, bool flip, float *U);
void nn_wino_in(const float *in, size_t in_img, int ci, int H, int W, int nb, int K, float *V);
void nn_wino_conv(const float *in, size_t in_img, int ci, int H, int W, int nb, int K, const float *U, int co, float *out, size_t out_img, const float *bias, bool acc, float *V, float *M);
void nn_wino_dw_acc(const float *x, size_t x_img, int ci, const float *dy, size_t dy_img, int co, int H, int W, int nb, int K, float *Acc, float *V, float *Y);
void nn_wino_dw_out(const float *Acc, int co, int ci, int K, float *dw);

#endif
