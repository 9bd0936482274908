/* relu on the GPU, over any shape as n flat floats: y = max(x, 0);
 * dx += dy where y > 0 (the gradient at exactly 0 is 0), as ops/relu.c. */
#include "cuda/common.cuh"

/* x and y may be one buffer (nn_relu_ runs in place): no __restrict__ here */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
relu_forward_kernel(size_t n, const float *x, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
relu_backward_kernel(size_t n, const float *__restrict__ y, const float *__restrict__ dy,
                     float *__restrict__ dx)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
}

static void relu_forward_cuda(size_t n, const float *x, float *y, cudaStream_t s)
{
    relu_forward_kernel<<<nn_cuda_blocks(n), NN_CUDA_THREADS, 0, s>>>(n, x, y);
}

static void relu_backward_cuda(size_t n, const float *y, const float *dy, float *dx, cudaStream_t s)
{
    relu_backward_kernel<<<nn_cuda_blocks(n), NN_CUDA_THREADS, 0, s>>>(n, y, dy, dx);
}

extern "C" nn_status nn_cuda_relu_forward(size_t n, const float *x, float *y)
{
    if (!n) return NN_OK;
    NN_CUDA_STREAM(s);
    relu_forward_cuda(n, x, y, s);
    NN_CUDA_LAUNCHED("relu_forward");
    return NN_OK;
}

extern "C" nn_status nn_cuda_relu_backward(size_t n, const float *y, const float *dy, float *dx)
{
    if (!n || !dx) return NN_OK;
    NN_CUDA_STREAM(s);
    relu_backward_cuda(n, y, dy, dx, s);
    NN_CUDA_LAUNCHED("relu_backward");
    return NN_OK;
}
