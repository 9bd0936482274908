/* Elementwise helpers on flat float arrays of n elements: fill, axpy, the
 * non-finite count, and the random fills. The fills draw element i from
 * core/philox.h at counter offset + i, exactly as the CPU does; the final
 * affine step uses __fmul_rn/__fadd_rn so nvcc cannot fuse it into an FMA the
 * CPU does not do, keeping the results bit-identical. */
#include "cuda/common.cuh"

#include "core/philox.h"

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
fill_kernel(float *x, size_t n, float v)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = v;
}

/* x may be y (an in-place scale: y += (s - 1) y): no __restrict__ */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
axpy_kernel(size_t n, float a, const float *x, float *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += a * x[i];
}

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
nonfinite_kernel(size_t n, const float *__restrict__ x, unsigned long long *count)
{
    unsigned long long c = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        c += !isfinite(x[i]);
    /* warp sum, then one atomic per warp */
    for (int o = 16; o > 0; o >>= 1) c += __shfl_down_sync(0xffffffffu, c, o);
    if ((threadIdx.x & 31) == 0 && c) atomicAdd(count, c);
}

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
uniform_kernel(float *x, size_t n, uint64_t seed, uint64_t offset, float lo, float hi)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fadd_rn(lo, __fmul_rn(hi - lo, nn_rand_uniform(seed, offset, i)));
}

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
normal_kernel(float *x, size_t n, uint64_t seed, uint64_t offset, float mean, float std)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fadd_rn(mean, __fmul_rn(std, nn_rand_normal(seed, offset, i)));
}

static void fill_cuda(float *x, size_t n, float v, cudaStream_t s)
{
    fill_kernel<<<nn_cuda_blocks(n), NN_CUDA_THREADS, 0, s>>>(x, n, v);
}

static void axpy_cuda(size_t n, float a, const float *x, float *y, cudaStream_t s)
{
    axpy_kernel<<<nn_cuda_blocks(n), NN_CUDA_THREADS, 0, s>>>(n, a, x, y);
}

/* a grid that covers the array a few times over: one atomic per warp at most */
static void nonfinite_cuda(size_t n, const float *x, unsigned long long *count, cudaStream_t s)
{
    unsigned blocks = nn_cuda_blocks(n);
    if (blocks > 4096) blocks = 4096;
    nonfinite_kernel<<<blocks, NN_CUDA_THREADS, 0, s>>>(n, x, count);
}

static void uniform_cuda(float *x, size_t n, uint64_t seed, uint64_t offset, float lo, float hi, cudaStream_t s)
{
    uniform_kernel<<<nn_cuda_blocks(n), NN_CUDA_THREADS, 0, s>>>(x, n, seed, offset, lo, hi);
}

static void normal_cuda(float *x, size_t n, uint64_t seed, uint64_t offset, float mean, float std, cudaStream_t s)
{
    normal_kernel<<<nn_cuda_blocks(n), NN_CUDA_THREADS, 0, s>>>(x, n, seed, offset, mean, std);
}

extern "C" nn_status nn_cuda_fill(float *x, size_t n, float v)
{
    if (!n) return NN_OK;
    NN_CUDA_STREAM(s);
    fill_cuda(x, n, v, s);
    NN_CUDA_LAUNCHED("fill");
    return NN_OK;
}

extern "C" nn_status nn_cuda_axpy(size_t n, float a, const float *x, float *y)
{
    if (!n) return NN_OK;
    NN_CUDA_STREAM(s);
    axpy_cuda(n, a, x, y, s);
    NN_CUDA_LAUNCHED("axpy");
    return NN_OK;
}

/* No sync, no scratch: the count lands in the step's struct on the device. */
extern "C" nn_status nn_cuda_count_nonfinite_into(size_t n, const float *x, nn_step_vars *sv)
{
    if (!n) return NN_OK;
    NN_CUDA_STREAM(s);
    nonfinite_cuda(n, x, &sv->nonfinite, s);
    NN_CUDA_LAUNCHED("count_nonfinite_into");
    return NN_OK;
}

extern "C" nn_status nn_cuda_count_nonfinite(size_t n, const float *x, size_t *host_count)
{
    *host_count = 0;
    if (!n) return NN_OK;
    NN_CUDA_STREAM(s);
    unsigned long long *d = NULL, h = 0;
    NN_TRY(nn_cuda_scratch((void **)&d, sizeof *d));
    cudaError_t e = cudaMemsetAsync(d, 0, sizeof *d, s);
    if (e == cudaSuccess) {
        nonfinite_cuda(n, x, d, s);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(&h, d, sizeof h, cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    nn_cuda_scratch_free(d);
    if (e != cudaSuccess) return nn_cuda_fail(e, "count_nonfinite", __FILE__, __LINE__);
    *host_count = (size_t)h;
    return nn_cuda_synced();
}

extern "C" nn_status nn_cuda_rng_uniform(float *x, size_t n, uint64_t seed, uint64_t offset, float lo, float hi)
{
    if (!n) return NN_OK;
    NN_CUDA_STREAM(s);
    uniform_cuda(x, n, seed, offset, lo, hi, s);
    NN_CUDA_LAUNCHED("rng_uniform");
    return NN_OK;
}

extern "C" nn_status nn_cuda_rng_normal(float *x, size_t n, uint64_t seed, uint64_t offset, float mean, float std)
{
    if (!n) return NN_OK;
    NN_CUDA_STREAM(s);
    normal_cuda(x, n, seed, offset, mean, std, s);
    NN_CUDA_LAUNCHED("rng_normal");
    return NN_OK;
}
