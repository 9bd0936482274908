/* The GPU SGEMM as a C entry, for tests and benchmarks (the ops call the
 * stream-taking C++ one in common.cuh). Device pointers; row-major
 * C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C, A stored (k, m) when ta
 * and B stored (n, k) when tb; beta = 0 never reads C. Runs on the backend's
 * stream: read C back with the table's copy (which synchronizes). */
#ifndef NN_CUDA_GEMM_H
#define NN_CUDA_GEMM_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "core/backend.h"
#include "core/status.h"

nn_status nn_cuda_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float beta, float *c, int ldc);

/* The kernels behind it (gemm.cu, gemm_tf32.cuh). */
typedef enum nn_gemm_variant {
    NN_GEMM_AUTO,        /* what nn_cuda_gemm and the ops run: nn_cuda_gemm_pick */
    NN_GEMM_FP32_64,     /* fp32 FMA, 64x64 tiles */
    NN_GEMM_FP32_128,    /* fp32 FMA, 128x128 tiles (when they fill the chip) */
    NN_GEMM_FP32_SPLITK, /* 64x64 tiles, K split across blocks, then a reduction */
    NN_GEMM_TF32,        /* tensor cores (sm_80+), A and B rounded to TF32; split along K when needed */
} nn_gemm_variant;

/* nn_cuda_gemm with the kernel forced (tests compare the variants);
 * NN_GEMM_TF32 on a device or build below sm_80 is NN_E_UNSUPPORTED. */
nn_status nn_cuda_gemm_as(nn_gemm_variant v, bool ta, bool tb, int m, int n, int k, float alpha, const float *a,
                          int lda, const float *b, int ldb, float beta, float *c, int ldc);
/* The kernel NN_GEMM_AUTO runs for `count` products of this size on this device. */
nn_gemm_variant nn_cuda_gemm_pick(int m, int n, int k, int count);
/* TF32 switch: NN_TF32=1 in the environment (read once) on a device that has
 * TF32 tensor cores. Off by default: results then are strict fp32. */
bool nn_cuda_tf32_enabled(void);
/* Whether the TF32 tensor-core kernels can run at all: a build for sm_80 or
 * later, on such a device. */
bool nn_cuda_tf32_supported(void);
/* NN_FUSE_BIAS=1 in the environment (read once): conv2d and linear add their
 * bias in the GEMM's epilogue instead of writing it to y first (identical
 * sums: acc + 1 * bias either way). Off by default until measured on a GPU. */
bool nn_cuda_fuse_bias(void);
/* NN_FUSE_BIAS_GRAD=1 in the environment (read once): conv2d and linear sum
 * their bias gradient inside the weight-gradient GEMM (cuda/epilogue.h: the
 * blocks of the first tile column add the dY tiles they load; fixed order,
 * bitwise the same run to run, but another order than the separate kernel's,
 * so not bitwise that). Only when dw is wanted too. Off by default until
 * measured on a GPU. _set: tests force it (1 on, 0 off, -1 the environment's). */
bool nn_cuda_fuse_bias_grad(void);
void nn_cuda_fuse_bias_grad_set(int on);
/* nn_cuda_gemm_as with the epilogue's fused parts, for tests: C += bias
 * (bias[m] when bias_per_row, else bias[n]; NULL: none), then C = max(0, C)
 * when relu, and rowsum[m] += sum_k op(A)[m, k] (NULL: none; n > 0). *kchunk
 * (when not NULL): the K of each slice the plan splits K into (k when it does
 * not), the order nn_rowsum_emulate follows. */
nn_status nn_cuda_gemm_fused_as(nn_gemm_variant v, bool ta, bool tb, int m, int n, int k, float alpha,
                                const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc,
                                const float *bias, bool bias_per_row, bool relu, float *rowsum, int *kchunk);

/* conv2d's two ways (conv2d.cu, conv2d_implicit.cu): im2col + GEMM (+
 * col2im) through the workspace, or the implicit GEMM (no workspace). */
typedef enum nn_conv_variant {
    NN_CONV_AUTO,     /* what the op runs: implicit when nn_cuda_conv_implicit_enabled and the shape fits, */
                      /* on tensor cores when nn_cuda_tf32_enabled too */
    NN_CONV_IM2COL,   /* im2col + our GEMM, in chunks of samples (the reference) */
    NN_CONV_IMPLICIT, /* B's tiles gathered from x (core/conv_index.h), strict fp32 */
    NN_CONV_IMPLICIT_TF32, /* the same on tensor cores, operands rounded to TF32 (sm_80 and later) */
} nn_conv_variant;

/* The workspace way `v` needs (0 for the implicit GEMM; NN_CONV_AUTO: what
 * nn_cuda_conv2d_workspace, the backend's, returns). */
size_t nn_cuda_conv2d_workspace_as(nn_conv_variant v, const nn_conv2d_geom *g);
/* nn_cuda_conv2d_forward and _backward with the way forced (tests compare
 * them); device pointers, b (db, dx, dw) may be NULL, ws of
 * nn_cuda_conv2d_workspace_as(v, g) bytes. */
nn_status nn_cuda_conv2d_forward_as(nn_conv_variant v, const nn_conv2d_geom *g, const float *x, const float *w,
                                    const float *b, float *y, void *ws);
nn_status nn_cuda_conv2d_backward_as(nn_conv_variant v, const nn_conv2d_geom *g, const float *x, const float *w,
                                     const float *dy, float *dx, float *dw, float *db, void *ws);
/* NN_CONV_IMPLICIT=1 in the environment (read once): the conv2d forward and
 * gradients by the implicit GEMM. Off by default until measured on a GPU. */
bool nn_cuda_conv_implicit_enabled(void);

#ifdef __cplusplus
}
#endif

#endif
