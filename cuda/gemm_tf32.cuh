/* The TF32 tensor-core SGEMM (sm_80 and later), included by gemm.cu only
 * (its instructions and slice products are in tf32.cuh, which the implicit
 * convolution's tensor-core kernel shares):
 * same contract as the fp32 kernel there (row-major C (M, N) = alpha op(A)
 * op(B) + beta C, either operand stored transposed, batched, optional split-K
 * slices), but A and B are rounded to TF32 (10-bit mantissa, round to nearest)
 * and multiplied by mma.sync.m16n8k8 with fp32 accumulation: each product
 * is exact, so the error is the two roundings, |e| <= 2^-10 |a b| per term.
 *
 * A block of 256 threads (8 warps, 2 along M x 4 along N) owns a 128 x 128
 * tile of C and steps through K in slices of 32. Slices are copied global ->
 * shared by cp.async into a ring of TF32_STAGES buffers, so the copies of the
 * next slices overlap the products of the current one. Shared tiles keep the
 * operand's stored layout (the copies stay 16-byte contiguous); fragments
 * are read from them with scalar loads, rows padded so the 32 lanes of a
 * fragment load hit 32 different banks (see TF32_PAD_*).
 *
 * Fragments of mma.m16n8k8.tf32 (PTX ISA, "Matrix fragments for mma.m16n8k8";
 * g = lane / 4, t = lane % 4):
 *   A (16 x 8, row):  a0 (g, t)   a1 (g+8, t)   a2 (g, t+4)   a3 (g+8, t+4)
 *   B (8 x 8, col):   b0 (k t, n g)             b1 (k t+4, n g)
 *   C (16 x 8):       c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
 * A warp's 64 x 32 share of the tile is 4 x 4 such products per k-step of 8. */

#include "cuda/tf32.cuh"

template <bool TA, bool TB>
static __global__ void __launch_bounds__(TF32_THREADS, TF32_MIN_BLOCKS)
sgemm_tf32_kernel(int M, int N, int K, float alpha, const float *__restrict__ A, int lda,
                  const float *__restrict__ B, int ldb, float beta, float *__restrict__ C, int ldc,
                  nn_gemm_batch bt, int z0, int vec, int ksplit, int kchunk)
{
#if __CUDA_ARCH__ >= 800 || defined(NN_CUDA_EMU) /* NN_CUDA_EMU: tests/cuda_emu, the CPU runtime */
    extern __shared__ __align__(16) float tf32_smem[];
    /* z = product * ksplit + slice of K (nn_gemm_locate, cuda/common.cuh) */
    const int z = blockIdx.z + z0, ks = z % ksplit;
    const nn_gemm_at at = nn_gemm_locate(bt, z, ksplit, M, ldc);
    A += at.a;
    B += at.b;
    C += at.c;
    const int kbeg = ks * kchunk, kend = min(K, kbeg + kchunk);
    const int ktiles = kend > kbeg ? (kend - kbeg + TF32_BK - 1) / TF32_BK : 0;
    const int m0 = blockIdx.y * TF32_BM, n0 = blockIdx.x * TF32_BN;
    const float *bias = at.bias; /* the epilogue's (NULL with K split) */
    const bool relu = bt.relu && ksplit == 1; /* with K split, the reduction applies it */
    /* the row sums of op(A), unrounded (cuda/epilogue.h): thread tid < BM sums row m0 + tid */
    float *rsum = nn_rowsum_owner(blockIdx.x) ? at.rowsum : nullptr;
    float rs = 0.0f;

    /* shared tiles in the stored layout: A (m, k) at TA ? [k][m] : [m][k], B (k, n) at TB ? [n][k] : [k][n] */
    constexpr int A_PITCH = tf32_a_pitch(TA);
    auto a_tile = [&](int st) { return tf32_a_tile(tf32_smem, st); };
    auto b_tile = [&](int st) { return tf32_b_tile(tf32_smem, st); };
    const bool va = vec & VEC_A, vb = vec & VEC_B;

    /* issues the copies of slice t (K from kbeg + t * BK) into ring slot t % STAGES */
    auto load_slice = [&](int t) {
        const int k0 = kbeg + t * TF32_BK, st = t % TF32_STAGES;
        if (TA)
            tf32_load_tile<TF32_BK, TF32_BM, TF32_PAD_MN>(a_tile(st), A, lda, k0, m0, kend, M, va);
        else
            tf32_load_tile<TF32_BM, TF32_BK, TF32_PAD_K>(a_tile(st), A, lda, m0, k0, M, kend, va);
        if (TB)
            tf32_load_tile<TF32_BN, TF32_BK, TF32_PAD_K>(b_tile(st), B, ldb, n0, k0, N, kend, vb);
        else
            tf32_load_tile<TF32_BK, TF32_BN, TF32_PAD_MN>(b_tile(st), B, ldb, k0, n0, kend, N, vb);
    };

    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int wm = tf32_warp_m(warp), wn = tf32_warp_n(warp); /* the warp's corner inside the tile */
    float acc[4][4][4];
    tf32_zero(acc);

    tf32_ring(ktiles, load_slice, [&](int st) {
        const float *As = a_tile(st), *Bs = b_tile(st);
        if (rsum && threadIdx.x < TF32_BM) { /* this slice: A (m0 + tid, k) in k order, 0 outside */
#pragma unroll 8
            for (int kk = 0; kk < TF32_BK; kk++)
                rs += TA ? As[kk * A_PITCH + threadIdx.x] : As[threadIdx.x * A_PITCH + kk];
        }
        tf32_slice_mma<TA, TB>(As, Bs, acc, wm, wn, lane);
    });

    /* epilogue: C = alpha acc + beta C, never reading C when beta == 0 */
    tf32_each_acc(acc, m0, n0, M, N, wm, wn, lane, [&](int m, int n, float v) {
        float *c = C + (long long)m * ldc + n;
        float r = alpha * v;
        if (beta != 0.0f) r += beta * *c;
        if (bias) r += bias[bt.bias_per_row ? m : n];
        *c = relu ? nn_epi_relu(r) : r;
    });
    /* the row sums: alone on these rows in this product (or slice), so a plain store */
    if (rsum && threadIdx.x < TF32_BM && m0 + (int)threadIdx.x < M) {
        if (ksplit > 1)
            rsum[m0 + threadIdx.x] = rs;
        else
            rsum[m0 + threadIdx.x] += rs;
    }
#else
    __trap(); /* the host never launches this below sm_80 (nn_cuda_tf32_supported) */
#endif
}

template <bool TA, bool TB>
static nn_status launch_tf32(cudaStream_t s, int m, int n, int k, float alpha, const float *a, int lda,
                             const float *b, int ldb, float beta, float *c, int ldc, const nn_gemm_batch &bt,
                             int vec, int ksplit, int kchunk)
{
    /* more than 48 KiB of dynamic shared memory must be asked for, once per kernel */
    static bool opted;
    if (!opted) {
        NN_CUDA_TRY(cudaFuncSetAttribute(sgemm_tf32_kernel<TA, TB>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         TF32_SMEM_BYTES),
                    "sgemm tf32 shared memory");
        /* all of the on-chip memory as shared memory, so two blocks fit */
        NN_CUDA_TRY(cudaFuncSetAttribute(sgemm_tf32_kernel<TA, TB>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         (int)cudaSharedmemCarveoutMaxShared),
                    "sgemm tf32 shared memory carveout");
        opted = true;
    }
    const unsigned gx = (unsigned)((n + TF32_BN - 1) / TF32_BN), gy = (unsigned)((m + TF32_BM - 1) / TF32_BM);
    if (gy > 65535u) return nn_error(NN_E_UNSUPPORTED, "cuda sgemm tf32: M = %d is too large", m);
    const int nz = bt.count * ksplit;
    for (int z0 = 0; z0 < nz; z0 += 65535) {
        const unsigned gz = (unsigned)(nz - z0 < 65535 ? nz - z0 : 65535);
        sgemm_tf32_kernel<TA, TB><<<dim3(gx, gy, gz), TF32_THREADS, TF32_SMEM_BYTES, s>>>(
            m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bt, z0, vec, ksplit, kchunk);
        NN_CUDA_LAUNCHED("sgemm tf32");
    }
    return NN_OK;
}

static nn_status dispatch_tf32(cudaStream_t s, bool ta, bool tb, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc,
                               const nn_gemm_batch &bt, int vec, int ksplit, int kchunk)
{
    if (!ta && !tb)
        return launch_tf32<false, false>(s, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bt, vec, ksplit, kchunk);
    if (!ta && tb)
        return launch_tf32<false, true>(s, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bt, vec, ksplit, kchunk);
    if (ta && !tb)
        return launch_tf32<true, false>(s, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bt, vec, ksplit, kchunk);
    return launch_tf32<true, true>(s, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bt, vec, ksplit, kchunk);
}
