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

#include "core/status.h"

nn_status nn_cuda_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                       const float *b, int ldb, float beta, float *c, int ldc);

#ifdef __cplusplus
}
#endif

#endif
