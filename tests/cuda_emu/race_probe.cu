/* Kernels with planted races, built only into the race checker's module
 * (libconvnet_cuda_emu_race.so) for tests/test_cuda_racecheck.c, which
 * checks that racecheck.cpp reports each one, and nothing once the missing
 * __syncthreads is back or the blocks keep to their own words (sync = 1).
 * Each kernel writes out[t] = what thread t of block 0 should see; the probe
 * returns whether it did. Four of them give the right answer on the
 * emulator without the checker (NN_EMU_RACECHECK=0), which is why the
 * checker exists. */
#include <cuda_runtime.h>

#define PROBE_THREADS 64

/* lane 0 of each warp writes, the warp reads: no __syncwarp, a race on a
 * GPU; here lane 0 always runs before the rest of its warp */
static __global__ void __launch_bounds__(PROBE_THREADS) warp_broadcast_kernel(float *out, int sync)
{
    out += blockIdx.x * blockDim.x; /* each block its own outputs (no global race) */
    __shared__ float leader[PROBE_THREADS / 32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) leader[warp] = 1.0f + warp;
    if (sync) __syncthreads();
    out[threadIdx.x] = leader[warp];
}
static float warp_broadcast_expect(int t) { return 1.0f + t / 32; }

/* warp 0 writes, warp 1 reads: in a one-block grid warp 0 runs first here */
static __global__ void __launch_bounds__(PROBE_THREADS) cross_warp_kernel(float *out, int sync)
{
    out += blockIdx.x * blockDim.x; /* each block its own outputs (no global race) */
    __shared__ float s[32];
    if (threadIdx.x < 32) s[threadIdx.x] = (float)threadIdx.x;
    if (sync) __syncthreads();
    out[threadIdx.x] = threadIdx.x < 32 ? 0.0f : s[threadIdx.x - 32];
}
static float cross_warp_expect(int t) { return t < 32 ? 0.0f : (float)(t - 32); }

/* each thread reads its neighbour's word, then overwrites its own (write
 * after read), in dynamic shared memory */
static __global__ void __launch_bounds__(PROBE_THREADS) shift_kernel(float *out, int sync)
{
    out += blockIdx.x * blockDim.x; /* each block its own outputs (no global race) */
    extern __shared__ float d[];
    d[threadIdx.x] = (float)threadIdx.x;
    __syncthreads();
    const float v = d[(threadIdx.x + 1) % blockDim.x];
    if (sync) __syncthreads();
    d[threadIdx.x] = v;
    __syncthreads();
    out[threadIdx.x] = d[threadIdx.x];
}
static float shift_expect(int t) { return (float)((t + 1) % PROBE_THREADS); }

/* every thread writes the one word (write after write); with sync only thread 0 */
static __global__ void __launch_bounds__(PROBE_THREADS) same_word_kernel(float *out, int sync)
{
    out += blockIdx.x * blockDim.x; /* each block its own outputs (no global race) */
    __shared__ float w;
    if (!sync || threadIdx.x == 0) w = 7.0f;
    __syncthreads();
    out[threadIdx.x] = w;
}
static float same_word_expect(int) { return 7.0f; }

/* thread 0 fills a tile with cp.async and waits for it; the others read it */
static __global__ void __launch_bounds__(PROBE_THREADS) cp_async_kernel(const float *src, float *out, int sync)
{
    out += blockIdx.x * blockDim.x; /* each block its own outputs (no global race) */
    __shared__ __align__(16) float tile[4];
    if (threadIdx.x == 0) {
        nn_emu::cp_async(tile, src, 16, 16);
        nn_emu::cp_async_commit();
        nn_emu::cp_async_wait(0);
    }
    if (sync) __syncthreads();
    out[threadIdx.x] = tile[threadIdx.x % 4];
}
static float cp_async_expect(int t) { return (float)(t % 4); }

/* a global-memory race: block b (one thread) writes out[b], then reads
 * block b-1's out[b-1], a dependency on block order that no GPU keeps. The
 * emulator runs blocks out of index order (emu.cpp, block_step), so some
 * block reads an unset word and the result is wrong there too. With sync,
 * the block computes b itself. */
static __global__ void __launch_bounds__(PROBE_THREADS) previous_block_kernel(float *out, int sync)
{
    const int b = blockIdx.x;
    out[b] = (float)b;
    out[32 + b] = sync ? (float)b : b ? out[b - 1] + 1.0f : 0.0f;
}

/* every block writes the same outputs (write after write in global memory,
 * with the right values: only the checker sees it); with sync only block 0 */
static __global__ void __launch_bounds__(PROBE_THREADS) same_output_kernel(float *out, int sync)
{
    if (!sync || blockIdx.x == 0) out[threadIdx.x] = (float)threadIdx.x;
}
static float same_output_expect(int t) { return (float)t; }

/* not a race: every thread of every block adds 1 to out[0] with atomicAdd */
static __global__ void __launch_bounds__(PROBE_THREADS) atomic_sum_kernel(float *out, int)
{
    atomicAdd(out, 1.0f);
    if (blockIdx.x == 0 && threadIdx.x > 0) out[threadIdx.x] = 0.0f;
}
static int atomic_sum_blocks;
static float atomic_sum_expect(int t) { return t ? 0.0f : (float)(atomic_sum_blocks * PROBE_THREADS); }
static float previous_block_expect(int t) { return (float)(t < 32 ? t : t - 32); }

/* Runs probe `name` on `blocks` blocks of PROBE_THREADS: 1 when every thread
 * saw what it should, 0 when not, -1 for an unknown name or a CUDA error.
 * The checker, when it finds the race, stops the process before that. */
extern "C" __attribute__((visibility("default"))) int nn_emu_race_probe(const char *name, int sync, int blocks)
{
    const int n = PROBE_THREADS;
    float *src = nullptr, *out = nullptr, host[PROBE_THREADS];
    for (int t = 0; t < n; t++) host[t] = (float)t;
    const size_t out_bytes = sizeof host * (blocks > 1 ? blocks : 1); /* block 0's are checked */
    if (cudaMalloc((void **)&src, sizeof host) != cudaSuccess || cudaMalloc((void **)&out, out_bytes) != cudaSuccess ||
        cudaMemcpy(src, host, sizeof host, cudaMemcpyHostToDevice) != cudaSuccess)
        return -1;
    float (*expect)(int) = nullptr;
    const std::string k = name;
    if (k == "warp_broadcast") {
        warp_broadcast_kernel<<<blocks, n>>>(out, sync);
        expect = warp_broadcast_expect;
    } else if (k == "cross_warp") {
        cross_warp_kernel<<<blocks, n>>>(out, sync);
        expect = cross_warp_expect;
    } else if (k == "shift") {
        shift_kernel<<<blocks, n, n * sizeof(float)>>>(out, sync);
        expect = shift_expect;
    } else if (k == "same_word") {
        same_word_kernel<<<blocks, n>>>(out, sync);
        expect = same_word_expect;
    } else if (k == "previous_block") { /* 32 blocks of one thread, whatever `blocks` says */
        previous_block_kernel<<<32, 1>>>(out, sync);
        expect = previous_block_expect;
    } else if (k == "same_output") {
        same_output_kernel<<<blocks, n>>>(out, sync);
        expect = same_output_expect;
    } else if (k == "atomic_sum") {
        atomic_sum_blocks = blocks;
        if (cudaMemset(out, 0, sizeof(float)) != cudaSuccess) return -1;
        atomic_sum_kernel<<<blocks, n>>>(out, sync);
        expect = atomic_sum_expect;
    } else if (k == "cp_async") {
        cp_async_kernel<<<blocks, n>>>(src, out, sync);
        expect = cp_async_expect;
    }
    int ok = expect && cudaDeviceSynchronize() == cudaSuccess &&
             cudaMemcpy(host, out, sizeof host, cudaMemcpyDeviceToHost) == cudaSuccess ? 1 : -1;
    for (int t = 0; ok == 1 && t < n; t++)
        if (host[t] != expect(t)) ok = 0;
    cudaFree(src);
    cudaFree(out);
    return ok;
}
