/* Internal to cuda/: what every kernel file needs. The core headers are C, so
 * they are included with C linkage (the C standard headers they pull in come
 * first, so their own C++ wrappers are not wrapped). Also declares the one
 * stream, the error helpers (memory.cu), our SGEMM (gemm.cu), and the extern
 * "C" kernel entries that backend.cu gathers into nn_cuda_backend. */
#ifndef NN_CUDA_COMMON_CUH
#define NN_CUDA_COMMON_CUH

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

extern "C" {
#include "../core/backend.h"
#include "../core/defaults.h"
}
#include "gemm.h"

/* Threads per block for the elementwise kernels. */
#define NN_CUDA_THREADS 256

/* ---- memory.cu: the device, its stream, errors ---- */

/* The stream every kernel and copy runs on (created on first use). */
nn_status nn_cuda_stream(cudaStream_t *s);
/* Turns a failed CUDA call into a status with its message:
 * "cuda: <what>: <cudaGetErrorString> (file:line)". NN_E_NOMEM for
 * cudaErrorMemoryAllocation, NN_E_DEVICE otherwise. */
nn_status nn_cuda_fail(cudaError_t e, const char *what, const char *file, int line);
/* Scratch memory from the caching allocator, for a kernel's temporaries;
 * freeing it at once after the launches is safe since all work is on one stream. */
nn_status nn_cuda_scratch(void **p, size_t bytes);
void nn_cuda_scratch_free(void *p);

#define NN_CUDA_TRY(call, what)                                         \
    do {                                                                \
        cudaError_t nn_cuda_e_ = (call);                                \
        if (nn_cuda_e_ != cudaSuccess)                                  \
            return nn_cuda_fail(nn_cuda_e_, (what), __FILE__, __LINE__); \
    } while (0)

/* After a launch: reports a bad configuration or a sticky error at once. */
#define NN_CUDA_LAUNCHED(what) NN_CUDA_TRY(cudaGetLastError(), (what))

/* Gets the stream into `s` or returns the status. */
#define NN_CUDA_STREAM(s)  \
    cudaStream_t s;        \
    NN_TRY(nn_cuda_stream(&s))

/* Blocks for n elements, capped (kernels use grid-stride loops). */
static inline unsigned nn_cuda_blocks(size_t n)
{
    size_t b = (n + NN_CUDA_THREADS - 1) / NN_CUDA_THREADS;
    if (b > 65535u * 8u) b = 65535u * 8u;
    return b ? (unsigned)b : 1u;
}

/* ---- gemm.cu: our own SGEMM (row-major) ----
 * C = alpha * op(A) op(B) + beta * C with op(A) (M, K), op(B) (K, N), C (M, N);
 * ta: A is stored (K, M) with leading dimension lda, else (M, K); same for tb.
 * beta == 0 never reads C. A batch of `count` products: product z uses
 * A + (z / inner) * a_outer + (z % inner) * a_inner, and likewise for B and C
 * (inner >= 1), so (sample, group) pairs run in one launch. */
typedef struct nn_gemm_batch {
    int count, inner;
    long long a_outer, a_inner, b_outer, b_inner, c_outer, c_inner;
    /* optional epilogue: C += bias[m] (bias_per_row) or bias[n], bias offset
     * like the operands; added after alpha op(A) op(B) + beta C */
    const float *bias;
    long long bias_outer, bias_inner;
    int bias_per_row;
} nn_gemm_batch;

nn_status nn_cuda_sgemm(cudaStream_t s, bool ta, bool tb, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c,
                        int ldc, const nn_gemm_batch *batch);

/* ---- the table entries, one per slot (file: the op's name) ---- */
extern "C" {
nn_status nn_cuda_alloc(void **p, size_t bytes);
void nn_cuda_free(void *p);
nn_status nn_cuda_memset0(void *p, size_t bytes);
nn_status nn_cuda_copy(void *dst, nn_device dd, const void *src, nn_device sd, size_t bytes);
nn_status nn_cuda_sync(void);
size_t nn_cuda_peak_bytes(void);

nn_status nn_cuda_fill(float *x, size_t n, float v);
nn_status nn_cuda_axpy(size_t n, float a, const float *x, float *y);
nn_status nn_cuda_count_nonfinite(size_t n, const float *x, size_t *host_count);
nn_status nn_cuda_rng_uniform(float *x, size_t n, uint64_t seed, uint64_t offset, float lo, float hi);
nn_status nn_cuda_rng_normal(float *x, size_t n, uint64_t seed, uint64_t offset, float mean, float std);

size_t nn_cuda_conv2d_workspace(const nn_conv2d_geom *g);
nn_status nn_cuda_conv2d_forward(const nn_conv2d_geom *g, const float *x, const float *w,
                                 const float *b, float *y, void *ws);
nn_status nn_cuda_conv2d_backward(const nn_conv2d_geom *g, const float *x, const float *w,
                                  const float *dy, float *dx, float *dw, float *db, void *ws);

nn_status nn_cuda_relu_forward(size_t n, const float *x, float *y);
nn_status nn_cuda_relu_backward(size_t n, const float *y, const float *dy, float *dx);

nn_status nn_cuda_lrn_forward(const nn_lrn_geom *g, const float *x, float *y, float *scale);
nn_status nn_cuda_lrn_backward(const nn_lrn_geom *g, const float *x, const float *y,
                               const float *scale, const float *dy, float *dx);

nn_status nn_cuda_maxpool_forward(const nn_pool_geom *g, const float *x, float *y, int32_t *argmax);
nn_status nn_cuda_maxpool_backward(const nn_pool_geom *g, const int32_t *argmax, const float *dy,
                                   float *dx);

nn_status nn_cuda_dropout_forward(size_t n, const float *x, float *y, uint8_t *mask, float p,
                                  uint64_t seed, uint64_t offset);
nn_status nn_cuda_dropout_backward(size_t n, const uint8_t *mask, float p, const float *dy,
                                   float *dx);

nn_status nn_cuda_linear_forward(const nn_linear_geom *g, const float *x, const float *w,
                                 const float *b, float *y);
nn_status nn_cuda_linear_backward(const nn_linear_geom *g, const float *x, const float *w,
                                  const float *dy, float *dx, float *dw, float *db);

nn_status nn_cuda_xent_forward(int n, int classes, const float *logits, const int32_t *labels,
                               float *probs, float *loss);
nn_status nn_cuda_xent_backward(int n, int classes, const float *probs, const int32_t *labels,
                                const float *dloss, float *dx);

nn_status nn_cuda_sgd_update(size_t n, float *w, const float *g, float *v, float lr, float momentum,
                             float wd);
nn_status nn_cuda_adam_update(size_t n, float *w, const float *g, float *m, float *v, float lr,
                              float beta1, float beta2, float eps, float wd, int decoupled,
                              float bias1, float bias2);

bool nn_cuda_present(void);
}

#endif
