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
#include "core/backend.h"
#include "core/defaults.h"
}
#include "cuda/epilogue.h"
#include "cuda/gemm.h"

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

/* ---- checks.cu: errors found on the device, read at the next sync (cuda/checks.h) ---- */

#define NN_CUDA_NO_BAD 0xFFFFFFFFFFFFFFFFull /* the clear label flag word */

/* What the device leaves for the host; written by a kernel only while !set. */
typedef struct nn_cuda_report {
    int set, sample, label, classes;
} nn_cuda_report;

/* The device word (first bad sample << 32 | label) and the report's device
 * address, made on first use. */
nn_status nn_cuda_label_flags(unsigned long long **word, nn_cuda_report **report);
/* NN_E_RANGE "softmax_xent: label L of sample S is outside [0, K)". */
nn_status nn_cuda_bad_label(int label, int sample, int classes);
/* After a stream synchronization: the error a kernel reported since the last
 * one (cleared by reading), else NN_OK. */
nn_status nn_cuda_synced(void);

/* ---- upload.cu: staged host-to-device copies (cuda/upload.h) ---- */

/* Whether a host-to-device copy of `bytes` goes through nn_cuda_upload. */
bool nn_cuda_upload_staged(size_t bytes);
/* dst (device) = src (pageable host), ordered on stream s as a copy on s would be. */
nn_status nn_cuda_upload(void *dst, const void *src, size_t bytes, cudaStream_t s);

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
    /* optional epilogue: C = max(0, C) last (nn_epi_relu, cuda/epilogue.h) */
    int relu;
    /* optional: rowsum[m] += sum_k op(A)[m, k] (the bias gradient of a
     * weight-gradient GEMM, cuda/epilogue.h), rowsum offset like the
     * operands; needs N > 0. rowsum_part: set by the GEMM (the slices'
     * partial sums when K is split) */
    float *rowsum;
    long long rowsum_outer, rowsum_inner;
    float *rowsum_part;
} nn_gemm_batch;

/* Where grid slice z = product * ksplit + slice of K reads and writes: the
 * offsets of A, B and C (with ksplit > 1, C is the partials buffer, one
 * M x ldc slice per z), the epilogue's bias (NULL with K split: the
 * reduction adds it then) and where the row sums go. One rule for both
 * GEMM kernels (gemm.cu, gemm_tf32.cuh). */
typedef struct nn_gemm_at {
    long long a, b, c;
    const float *bias;
    float *rowsum; /* the row sums' destination (the partials' slice with K split), or NULL */
} nn_gemm_at;

static __device__ __forceinline__ nn_gemm_at nn_gemm_locate(const nn_gemm_batch &bt, int z, int ksplit, int M, int ldc)
{
    const int zb = z / ksplit;
    const long long o = zb / bt.inner, i = zb % bt.inner;
    nn_gemm_at at = {o * bt.a_outer + i * bt.a_inner, o * bt.b_outer + i * bt.b_inner,
                     ksplit > 1 ? (long long)z * M * ldc : o * bt.c_outer + i * bt.c_inner,
                     bt.bias && ksplit == 1 ? bt.bias + o * bt.bias_outer + i * bt.bias_inner : nullptr,
                     !bt.rowsum     ? nullptr
                     : ksplit > 1   ? bt.rowsum_part + nn_rowsum_slot(z, 0, M)
                                    : bt.rowsum + o * bt.rowsum_outer + i * bt.rowsum_inner};
    return at;
}

nn_status nn_cuda_sgemm(cudaStream_t s, bool ta, bool tb, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c,
                        int ldc, const nn_gemm_batch *batch);
/* The device's multiprocessors (read once; 132, an H100's, when it cannot be
 * read): only steers the tile and split-K choices. */
int nn_cuda_sm_count(void);
/* A grid for a kernel over planes x positions (x along a plane, y over
 * planes, both grid-strided): ~NN_CUDA_PLANE_BLOCKS blocks per SM, so a
 * thread keeps one position for many planes and finds what depends on the
 * position alone (its divisions) once, not per element. */
#define NN_CUDA_PLANE_BLOCKS 32
static inline dim3 nn_cuda_plane_grid(long long planes, long long len)
{
    long long bx = (len + NN_CUDA_THREADS - 1) / NN_CUDA_THREADS;
    bx = bx < 1 ? 1 : bx > 65535 ? 65535 : bx;
    long long by = (long long)nn_cuda_sm_count() * NN_CUDA_PLANE_BLOCKS / bx;
    by = by > planes ? planes : by > 65535 ? 65535 : by;
    return dim3((unsigned)bx, (unsigned)(by < 1 ? 1 : by));
}

/* A thread's planes on nn_cuda_plane_grid (blockIdx.y, then gridDim.y apart)
 * as (sample s, channel c) of `channels`, each next one found by a carry. */
struct nn_plane_walk {
    int s, c, ds, dc, channels;
    __device__ explicit nn_plane_walk(int ch)
        : s((int)(blockIdx.y / (unsigned)ch)), c((int)(blockIdx.y % (unsigned)ch)),
          ds((int)(gridDim.y / (unsigned)ch)), dc((int)(gridDim.y % (unsigned)ch)), channels(ch)
    {
    }
    __device__ void next()
    {
        s += ds, c += dc;
        if (c >= channels) c -= channels, s++;
    }
};
/* Split K (the GEMM's rule, shared with conv2d_implicit.cu's weight gradient):
 * for `count` products of `tiles` blocks in all, with `slots` blocks wanted,
 * *ksplit slices of *kchunk (a multiple of bk) each; 1 slice of k when the
 * tiles fill the slots or K is short. */
void nn_cuda_splitk(long long tiles, int k, long long slots, int count, int bk, int *ksplit, int *kchunk);
/* c = sum over the slices in order of part (ksplit M x N slices per product,
 * product z's at part + z * ksplit * M * N) + beta c, with bt's epilogue, and
 * bt.rowsum += its partials (bt.rowsum_part, nn_rowsum_slot) likewise. */
nn_status nn_cuda_splitk_reduce(cudaStream_t s, int m, int n, int ksplit, const float *part, float beta, float *c,
                                int ldc, const nn_gemm_batch &bt);

/* ---- conv2d_implicit.cu: the forward and gradients without a column buffer ----
 * y = conv(x, w) + b (b may be NULL) on stream s, in strict fp32 or (tf32)
 * on tensor cores; NN_E_UNSUPPORTED when the shape is past its int indices
 * (nn_cuda_conv_implicit_fits says beforehand) or tf32 is asked of a device
 * without it. */
nn_status nn_cuda_conv2d_implicit(const nn_conv2d_geom *g, const float *x, const float *w, const float *b, float *y,
                                  bool tf32, cudaStream_t s);
/* dx += conv2d's data gradient for dy, likewise */
nn_status nn_cuda_conv2d_implicit_dx(const nn_conv2d_geom *g, const float *w, const float *dy, float *dx, bool tf32,
                                     cudaStream_t s);
/* dw += conv2d's weight gradient for x and dy, and db += its bias gradient
 * (the row sums of dy in cuda/epilogue.h's order; NULL: none), likewise */
nn_status nn_cuda_conv2d_implicit_dw(const nn_conv2d_geom *g, const float *x, const float *dy, float *dw, float *db,
                                     bool tf32, cudaStream_t s);
bool nn_cuda_conv_implicit_fits(const nn_conv2d_geom *g);

/* ---- the table entries, one per slot of core/backend_slots.h (file: the op's name) ---- */
extern "C" {
#define NN_KERNEL(op, ret, name, args) ret nn_cuda_##name args;
#include "core/backend_slots.h"
#undef NN_KERNEL

bool nn_cuda_present(void);
}

#endif
