/* A CUDA runtime on the CPU, for tests only: the backend's own sources
 * (the .cu files of cuda/, launches rewritten by tests/cuda_emu/rewrite.py) compiled by the
 * host C++ compiler against this header instead of the toolkit's, into a
 * module that loads where libconvnet_cuda.so would (CONVNET_CUDA_MODULE).
 * The GPU test suites then run every kernel of the backend with no GPU.
 *
 * What it models (tests/cuda_emu/emu.cpp):
 *  - each GPU thread is a fiber with its own stack; a block's threads run on
 *    one host thread and switch only at __syncthreads, warp shuffles, mma and
 *    cp.async waits, so a barrier some threads never reach is reported as a
 *    deadlock (on the GPU: a hang or undefined behaviour) naming the kernel;
 *  - blocks run one after another but out of index order (emu.cpp,
 *    block_step), so no block finds a neighbour's output already written;
 *  - warp collectives (shuffles, mma.sync m16n8k8 TF32 with the PTX fragment
 *    layout) need every lane of their mask, as the hardware does;
 *  - a launch's configuration is checked as the runtime does (block and grid
 *    limits, dynamic shared memory over 48 KiB only after
 *    cudaFuncSetAttribute, a block over the kernel's __launch_bounds__,
 *    which rewrite.py requires of every kernel);
 *  - cp.async copies land only when their group is waited for, so reading a
 *    tile before the wait sees stale data, as it may on the GPU;
 *  - device memory, and shared memory at the start of each block (dynamic
 *    and static __shared__ arrays: rewrite.py), hold words 0xFFF1FFFF (NaN
 *    floats and doubles, not an all-ones sentinel); device memory has red
 *    zones checked
 *    after every kernel, and kernels and copies may only touch device or
 *    mapped memory, within one allocation; a vector access
 *    (reinterpret_cast<float4 *> and kin, rewrite.py) must be aligned to its
 *    width, or the GPU stops with "misaligned address";
 *  - work queued on a stream runs as late as the program allows: only when
 *    something waits for it (a stream or event sync, a copy to pageable
 *    memory, cudaFree, another stream waiting on an event), so the host
 *    reading a result it never waited for, or rewriting a pinned buffer a
 *    queued copy still reads, gets the wrong data, and one stream's work
 *    overtakes another's unless an event orders them (NN_EMU_EAGER=1: side
 *    streams run their work as soon as it is queued, ahead of the compute
 *    stream's, so a missing event wait shows there too); work that finishes
 *    later (an emulated NCCL collective: enqueue_pending) keeps its stream
 *    busy, so cudaStreamQuery answers cudaErrorNotReady until it is done;
 *  - stream capture records launches and copies and replays them from the
 *    graph (arguments frozen at capture); unsafe calls from the capturing
 *    thread (allocations, syncs, pageable copies) fail the capture.
 *  - FMA contraction: a * b + c is fused, as nvcc fuses it by default, and
 *    the __f*_rn intrinsics never are (their code below), so a CPU-equal
 *    result computed without them differs here as on the GPU; which pairs
 *    fuse is the C++ compiler's choice, not nvcc's.
 * Shared-memory races (two threads, one word, no __syncthreads between, one
 * writing) and global-memory races between the blocks of a launch are found
 * by the module built with racecheck.cpp, whatever order the threads ran in.
 * What it does not: streams truly running at once, races on global words
 * within one block, timing, the exact bits of nvcc's contraction. */
#ifndef NN_CUDA_EMU_RUNTIME_H
#define NN_CUDA_EMU_RUNTIME_H

#include <algorithm>
#include <cstdarg>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

/* ---- what nvcc's language adds ---- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static /* blocks run one at a time on one host thread */
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

/* ---- the runtime's types and constants (values as in the toolkit) ---- */
enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorNotReady = 600,
    cudaErrorLaunchFailure = 719,
    cudaErrorNotSupported = 801,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureUnmatched = 903,
    cudaErrorStreamCaptureWrongThread = 908,
};
typedef cudaError_t cudaError;
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
enum cudaDeviceAttr {
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
enum cudaSharedCarveout { cudaSharedmemCarveoutDefault = -1, cudaSharedmemCarveoutMaxShared = 100 };
enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
};
#define cudaStreamDefault 0x0
#define cudaStreamNonBlocking 0x1
#define cudaEventDefault 0x0
#define cudaEventDisableTiming 0x2
#define cudaHostAllocDefault 0x0
#define cudaHostAllocPortable 0x1
#define cudaHostAllocMapped 0x2

typedef struct nn_emu_stream *cudaStream_t;
typedef struct nn_emu_event *cudaEvent_t;
typedef struct nn_emu_graph *cudaGraph_t;
typedef struct nn_emu_graph_exec *cudaGraphExec_t;

/* ---- the runtime API the backend calls ---- */
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaFree(void *p);
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaHostGetDevicePointer(void **d, void *h, unsigned flags);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind k, cudaStream_t s = 0);
cudaError_t cudaMemset(void *p, int v, size_t bytes);
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t s = 0);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamQuery(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x);
cudaError_t nn_emu_func_set_attribute(const void *fn, cudaFuncAttribute a, int v);

template <class T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) { return cudaMalloc((void **)p, bytes); }
template <class T> static inline cudaError_t cudaHostAlloc(T **p, size_t bytes, unsigned flags)
{
    return cudaHostAlloc((void **)p, bytes, flags);
}
template <class T> static inline cudaError_t cudaFuncSetAttribute(T *fn, cudaFuncAttribute a, int v)
{
    return nn_emu_func_set_attribute((const void *)fn, a, v);
}

/* ---- inside a kernel ---- */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

namespace nn_emu {
void vsay(const char *who, const char *fmt, va_list ap); /* "who: message" on stderr */
[[noreturn]] void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void syncthreads(void);
/* every lane in `mask` exchanges 8 bytes: returns lane `from`'s (the caller's own when from is -1) */
uint64_t warp_exchange(unsigned mask, uint64_t mine, int from, const char *what);
void *dynamic_smem(void);
/* after each static __shared__ array's declaration (rewrite.py): the first
 * thread of each block to get there sets it to the unset words again, as the
 * dynamic buffer is, so a read before any write in this block shows */
void shared_unset(void *p, size_t bytes);
/* first in a kernel declared __launch_bounds__(max_threads, ...) (rewrite.py) */
void launch_bounds(long long max_threads);
void cp_async(void *dst, const void *src, int size, int src_bytes);
void cp_async_commit(void);
void cp_async_wait(int groups_left);
unsigned tf32_round(float x);
void mma_tf32_m16n8k8(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]);
[[noreturn]] void trap(void);
/* reports a vector access (bytes wide) at p that is not aligned to its width */
[[noreturn]] void misaligned(const void *p, size_t bytes);
/* reinterpret_cast<float4 *>(p) and the like (rewrite.py): the GPU's 8- and
 * 16-byte loads and stores need their width's alignment ("misaligned
 * address"); the host compiler here splits them into aligned-anywhere ones */
template <class P, class Q> static inline P vec_cast(Q *p)
{
    using T = std::remove_cv_t<std::remove_pointer_t<P>>;
    if ((uintptr_t)p % alignof(T)) misaligned((const void *)p, sizeof(T));
    return reinterpret_cast<P>(p);
}
} // namespace nn_emu

#define __syncthreads() nn_emu::syncthreads()
#define __trap() nn_emu::trap()
#define __threadfence() ((void)0) /* one host thread runs every kernel thread */
#define __threadfence_system() ((void)0)

template <class T> static inline T __ldg(const T *p) { return *p; }
static inline size_t __cvta_generic_to_shared(const void *p) { return (size_t)p; }

template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    static_assert(sizeof(T) <= 8, "8-byte shuffles at most");
    const int lane = (int)((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32);
    const int src = lane + (int)delta;
    const bool inside = (src / width) == (lane / width) && src < 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof v);
    bits = nn_emu::warp_exchange(mask, bits, inside ? src : -1, "__shfl_down_sync");
    T r;
    std::memcpy(&r, &bits, sizeof r);
    return r;
}

/* atomics: no two kernel threads ever run at once, so a plain update is
 * atomic; left out of the race checker's instrumentation (racecheck.cpp),
 * since atomics from many blocks are how a kernel may share a word */
#define NN_EMU_ATOMIC __attribute__((no_sanitize_thread))
template <class T> NN_EMU_ATOMIC static inline T nn_emu_atomic_add(T *p, T v)
{
    T old = *p;
    *p = old + v;
    return old;
}
static inline int atomicAdd(int *p, int v) { return nn_emu_atomic_add(p, v); }
static inline unsigned atomicAdd(unsigned *p, unsigned v) { return nn_emu_atomic_add(p, v); }
static inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) { return nn_emu_atomic_add(p, v); }
static inline float atomicAdd(float *p, float v) { return nn_emu_atomic_add(p, v); }
static inline double atomicAdd(double *p, double v) { return nn_emu_atomic_add(p, v); }
template <class T> NN_EMU_ATOMIC static inline T nn_emu_atomic_min(T *p, T v)
{
    T old = *p;
    if (v < old) *p = v;
    return old;
}
static inline int atomicMin(int *p, int v) { return nn_emu_atomic_min(p, v); }
static inline unsigned atomicMin(unsigned *p, unsigned v) { return nn_emu_atomic_min(p, v); }
static inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v) { return nn_emu_atomic_min(p, v); }

/* The IEEE-rounded intrinsics. nvcc never fuses one of them with a neighbouring
 * multiply or add into an FMA, though it fuses plain a * b + c (--fmad=true, its
 * default); the module is built with contraction on for the same reason
 * (meson.build), so the empty asm statements hide the operands and the result
 * from the C++ compiler: no contraction can reach across them. */
template <class T> static inline T nn_emu_opaque(T v)
{
    __asm__("" : "+x"(v));
    return v;
}
#define NN_EMU_RN(name, T, op)                                          \
    static inline T name(T a, T b)                                      \
    {                                                                   \
        return nn_emu_opaque<T>(nn_emu_opaque<T>(a) op nn_emu_opaque<T>(b)); \
    }
NN_EMU_RN(__fadd_rn, float, +)
NN_EMU_RN(__fsub_rn, float, -)
NN_EMU_RN(__fmul_rn, float, *)
NN_EMU_RN(__fdiv_rn, float, /)
NN_EMU_RN(__dadd_rn, double, +)
NN_EMU_RN(__dsub_rn, double, -)
NN_EMU_RN(__dmul_rn, double, *)
NN_EMU_RN(__ddiv_rn, double, /)
#undef NN_EMU_RN

/* CUDA's global min/max overloads */
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }

/* ---- kernel launches: tests/cuda_emu/rewrite.py turns k<<<g, b, smem, s>>>(args) into
 * nn_emu::launch(nn_emu::cfg(g, b, smem, s), nn_emu::kernel_name<&k>(), k, args) ---- */
namespace nn_emu {
/* "sgemm_kernel<128, 128, 8, 8, 8, false, true>": the instance, for messages */
std::string instance_name(const char *pretty); /* the "F = ..." part of __PRETTY_FUNCTION__ */
template <auto F> const char *kernel_name()
{
    static const std::string name = instance_name(__PRETTY_FUNCTION__);
    return name.c_str();
}
struct config {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
};
static inline config cfg(dim3 g, dim3 b, size_t smem = 0, cudaStream_t s = 0) { return {g, b, smem, s}; }
/* runs (or, on a capturing stream, records) a grid of `body` */
void submit(const config &c, const char *name, const void *fn, std::function<void()> body);
/* a kernel's pointer argument must be null or point into device-visible memory */
void check_pointer_arg(const char *kernel, int index, const void *p);
/* for nccl_emu.cpp's collectives: whether [p, p + bytes) lies in one device
 * allocation (cudaMalloc, not mapped host memory) */
bool in_device_memory(const void *p, size_t bytes);
/* Work that finishes later (an emulated NCCL collective): `start` runs where
 * `work` would and returns a test, test(false) true once it is done,
 * test(true) waiting until it is. Until then the stream is busy:
 * cudaStreamQuery and cudaEventQuery answer cudaErrorNotReady, and a
 * synchronization or another stream's event wait calls test(true). Null:
 * nothing pending. Inside a graph, each such node is waited for at once. */
using pending = std::function<bool(bool wait)>;
cudaError_t enqueue_pending(cudaStream_t s, const char *what, std::function<pending()> start);

template <class T> static inline void check_arg(const char *kernel, int index, const T &v)
{
    if constexpr (std::is_pointer_v<T>) check_pointer_arg(kernel, index, (const void *)v);
}

template <class... P, class... A> void launch(const config &c, const char *name, void (*k)(P...), A &&...a)
{
    /* the arguments are converted and frozen here, as a launch copies them */
    auto args = std::make_shared<std::tuple<std::decay_t<P>...>>(std::forward<A>(a)...);
    std::apply([&](const auto &...v) {
        int i = 0;
        (check_arg(name, i++, v), ...);
    }, *args);
    submit(c, name, (const void *)k, [k, args] { std::apply(k, *args); });
}
} // namespace nn_emu

#endif
