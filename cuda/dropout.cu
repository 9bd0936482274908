/* Inverted dropout on the GPU over n flat floats: mask[i] = nn_dropout_keep(seed,
 * offset, i, p) from core/philox.h, so the mask is the CPU's bit for bit;
 * y = mask ? x / (1 - p) : 0; dx += mask ? dy / (1 - p) : 0. Divided, not
 * multiplied by 1/(1 - p), as ops/dropout.c (IEEE division on both sides), so
 * y is bit-identical too. At p = 1 nothing is kept and q = 0 is never used.
 * dropout_forward_at adds the step's generator position, read on the device
 * (core/step_vars.h), to the offset, so a captured step draws new masks. */
#include "cuda/common.cuh"
#include "core/philox.h"

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
dropout_forward_kernel(size_t n, const float *__restrict__ x, float *__restrict__ y,
                       uint8_t *__restrict__ mask, float p, float q, uint64_t seed,
                       uint64_t offset, const nn_step_vars *__restrict__ sv)
{
    if (sv) offset += sv->rng_offset;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int keep = nn_dropout_keep(seed, offset, i, p);
        mask[i] = (uint8_t)keep;
        y[i] = keep ? x[i] / q : 0.0f;
    }
}

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
dropout_backward_kernel(size_t n, const uint8_t *__restrict__ mask, float q,
                        const float *__restrict__ dy, float *__restrict__ dx)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] += mask[i] ? dy[i] / q : 0.0f;
}

static void dropout_forward_cuda(size_t n, const float *x, float *y, uint8_t *mask, float p, uint64_t seed,
                                 uint64_t offset, const nn_step_vars *sv, cudaStream_t s)
{
    dropout_forward_kernel<<<nn_cuda_blocks(n), NN_CUDA_THREADS, 0, s>>>(n, x, y, mask, p, 1.0f - p, seed, offset,
                                                                         sv);
}

static void dropout_backward_cuda(size_t n, const uint8_t *mask, float p, const float *dy, float *dx,
                                  cudaStream_t s)
{
    dropout_backward_kernel<<<nn_cuda_blocks(n), NN_CUDA_THREADS, 0, s>>>(n, mask, 1.0f - p, dy, dx);
}

extern "C" nn_status nn_cuda_dropout_forward(size_t n, const float *x, float *y, uint8_t *mask, float p,
                                             uint64_t seed, uint64_t offset)
{
    if (!n) return NN_OK;
    if (!(p >= 0.0f && p <= 1.0f)) return nn_error(NN_E_ARG, "cuda dropout_forward: p = %g is outside [0, 1]", p);
    NN_CUDA_STREAM(s);
    dropout_forward_cuda(n, x, y, mask, p, seed, offset, NULL, s);
    NN_CUDA_LAUNCHED("dropout_forward");
    return NN_OK;
}

extern "C" nn_status nn_cuda_dropout_forward_at(size_t n, const float *x, float *y, uint8_t *mask, float p,
                                                uint64_t seed, uint64_t offset, const nn_step_vars *sv)
{
    if (!n) return NN_OK;
    if (!(p >= 0.0f && p <= 1.0f)) return nn_error(NN_E_ARG, "cuda dropout_forward_at: p = %g is outside [0, 1]", p);
    NN_CUDA_STREAM(s);
    dropout_forward_cuda(n, x, y, mask, p, seed, offset, sv, s);
    NN_CUDA_LAUNCHED("dropout_forward_at");
    return NN_OK;
}

extern "C" nn_status nn_cuda_dropout_backward(size_t n, const uint8_t *mask, float p, const float *dy, float *dx)
{
    if (!n || !dx) return NN_OK;
    NN_CUDA_STREAM(s);
    dropout_backward_cuda(n, mask, p, dy, dx, s);
    NN_CUDA_LAUNCHED("dropout_backward");
    return NN_OK;
}
