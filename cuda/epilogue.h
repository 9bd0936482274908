/* The fused parts of the GPU GEMM, written once for its kernels (cuda/gemm.cu,
 * cuda/gemm_tf32.cuh) and for the C tests that check the rules on the CPU
 * (tests/test_cuda_fuse.c): the ReLU of the forward epilogue and the bias
 * gradient summed inside the weight-gradient pass (rowsum below). Plain C
 * that nvcc also compiles for the device. */
#ifndef NN_CUDA_EPILOGUE_H
#define NN_CUDA_EPILOGUE_H

#ifdef __CUDACC__
#define NN_EPI static __host__ __device__ __forceinline__
#else
#define NN_EPI static inline
#endif

/* The ReLU the epilogue applies to alpha acc + beta C + bias: the expression
 * of the ReLU kernels (ops/relu.c, cuda/relu.cu), so the fused output is
 * bitwise the unfused one (-0 and NaN give +0 both ways). */
NN_EPI float nn_epi_relu(float v) { return v > 0.0f ? v : 0.0f; }

/* The bias gradient in the weight-gradient GEMM: C (M, N) = op(A) op(B) with
 * op(A) = dY (M = output channels, K = samples x positions), so
 * rowsum[m] += sum_k op(A)[m, k] is db. The blocks of the first column of
 * the tile grid own it: they load every A tile of their rows, and a block
 * is alone on its rows, so no atomics are needed. Within a block one thread
 * per row adds the row's elements in k order as the K tiles arrive: the sum
 * of a K slice [kbeg, kend) is sequential from 0.0f. */
NN_EPI int nn_rowsum_owner(int tile_col) { return tile_col == 0; }

/* With K split in `ksplit` slices, the slice sums go to a partials buffer
 * (M floats per grid slice z = product * ksplit + slice), and one kernel adds
 * them, slices in order from 0.0f, to rowsum: the order is fixed, so the
 * result is bitwise the same run to run. The partial's slot: */
NN_EPI long long nn_rowsum_slot(int z, int m, int M) { return (long long)z * M + m; }

/* What the kernels compute for one row, on the host: the sum of the row's
 * K elements get(ctx, k) in the order above (slices of kchunk, each
 * sequential from 0.0f, then the slices in order; kchunk >= k: one slice,
 * whose total is added alone). The C tests hold it against float64 sums,
 * and the GPU tests hold the kernels against it bit for bit. Host only. */
static inline float nn_rowsum_emulate(float (*get)(const void *ctx, int k), const void *ctx, int k, int kchunk)
{
    if (kchunk < 1 || kchunk >= k) {
        float s = 0.0f;
        for (int i = 0; i < k; i++) s += get(ctx, i);
        return s;
    }
    float total = 0.0f;
    for (int kb = 0; kb < k; kb += kchunk) {
        float s = 0.0f;
        for (int i = kb; i < k && i < kb + kchunk; i++) s += get(ctx, i);
        total += s;
    }
    return total;
}

#endif
