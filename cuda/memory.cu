/* Device memory, the one stream and error reporting for the CUDA backend.
 * A caching allocator over cudaMalloc: freed blocks go to free lists by size
 * class (4 classes per power of two, so at most 25% is lost to rounding) and are
 * handed out again, so a steady-state training step calls neither cudaMalloc
 * nor cudaFree. Reuse is safe without events because every kernel and copy
 * runs on one stream, in order (the staged uploads of upload.cu run on a copy
 * stream, but between events that put them at their place in this order). */
#include <pthread.h>
#include <string.h>

#include "cuda/common.cuh"

/* ---- errors ---- */

nn_status nn_cuda_fail(cudaError_t e, const char *what, const char *file, int line)
{
    /* clears a non-sticky error so the next launch check does not see it again */
    (void)cudaGetLastError();
    nn_status s = e == cudaErrorMemoryAllocation ? NN_E_NOMEM : NN_E_DEVICE;
    const char *base = strrchr(file, '/');
    return nn_error(s, "cuda: %s: %s (%s:%d)", what, cudaGetErrorString(e), base ? base + 1 : file,
                    line);
}

/* ---- the device and its stream ---- */

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool device_ok;

/* A device is usable when the runtime finds one and it can run what we built:
 * SASS for NN_CUDA_SM plus PTX for later chips, so compute capability >= NN_CUDA_SM. */
static void probe(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
        (void)cudaGetLastError();
        return;
    }
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return;
    }
    device_ok = major * 10 + minor >= NN_CUDA_SM;
}

extern "C" bool nn_cuda_present(void)
{
    pthread_once(&probe_once, probe);
    return device_ok;
}

/* One process per GPU (core/dist.c): device index % count becomes this
 * thread's current device; called before any other CUDA call, so the probe,
 * the stream and every allocation land on it. */
extern "C" nn_status nn_cuda_select_device(int index)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n <= 0) {
        (void)cudaGetLastError();
        return NN_OK; /* no GPU: the CPU backend runs, nothing to select */
    }
    e = cudaSetDevice(index % n);
    return e == cudaSuccess ? NN_OK : nn_cuda_fail(e, "selecting the device", __FILE__, __LINE__);
}

static pthread_once_t stream_once = PTHREAD_ONCE_INIT;
static cudaStream_t the_stream;
static cudaError_t stream_err;

static void make_stream(void)
{
    stream_err = cudaStreamCreateWithFlags(&the_stream, cudaStreamNonBlocking);
}

nn_status nn_cuda_stream(cudaStream_t *s)
{
    pthread_once(&stream_once, make_stream);
    *s = the_stream;
    if (stream_err != cudaSuccess) return nn_cuda_fail(stream_err, "creating the stream", __FILE__, __LINE__);
    return NN_OK;
}

/* The stream for C callers (core/dist.c hands it to NCCL). */

/* ---- the caching allocator ---- */

#define MIN_BLOCK 512
#define NCLASSES 224

typedef struct block {
    void *ptr;
    size_t size; /* rounded to its class */
    int cls;
    struct block *next; /* in a free list */
} block;

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static block *free_list[NCLASSES];
static size_t live_bytes, peak_bytes, cached_bytes;

/* The live blocks: open addressing on the pointer, grown at 50% load. Block
 * records are recycled between this table and the free lists, never freed. */
static block **live;
static size_t live_cap, live_n;

/* The size class of a request: <= 512 bytes is class 0; above, 2^e < b <= 2^(e+1)
 * is cut into 4 steps of 2^(e-2). */
static int size_class(size_t bytes, size_t *rounded)
{
    if (bytes <= MIN_BLOCK) {
        *rounded = MIN_BLOCK;
        return 0;
    }
    size_t b = bytes - 1;
    int e = 63 - __builtin_clzll((unsigned long long)b); /* 2^e <= b < 2^(e+1), e >= 9 */
    size_t q = b >> (e - 2);                             /* 4..7 */
    *rounded = (q + 1) << (e - 2);
    return 1 + (e - 9) * 4 + (int)(q - 4);
}

static size_t hash_ptr(const void *p, size_t cap)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (cap - 1);
}

static void live_put_nogrow(block *b)
{
    size_t i = hash_ptr(b->ptr, live_cap);
    while (live[i]) i = (i + 1) & (live_cap - 1);
    live[i] = b;
    live_n++;
}

static bool live_put(block *b)
{
    if ((live_n + 1) * 2 > live_cap) {
        size_t cap = live_cap ? live_cap * 2 : 1024;
        block **old = live;
        size_t oldcap = live_cap;
        live = (block **)calloc(cap, sizeof *live);
        if (!live) {
            live = old;
            return false;
        }
        live_cap = cap;
        live_n = 0;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i]) live_put_nogrow(old[i]);
        free(old);
    }
    live_put_nogrow(b);
    return true;
}

/* Removes and returns the block of p (backward-shift deletion keeps probing valid). */
static block *live_take(void *p)
{
    if (!live_cap) return NULL;
    size_t i = hash_ptr(p, live_cap);
    while (live[i] && live[i]->ptr != p) i = (i + 1) & (live_cap - 1);
    block *b = live[i];
    if (!b) return NULL;
    live[i] = NULL;
    live_n--;
    for (size_t j = (i + 1) & (live_cap - 1); live[j]; j = (j + 1) & (live_cap - 1)) {
        block *m = live[j];
        live[j] = NULL;
        live_n--;
        live_put_nogrow(m);
    }
    return b;
}

/* Gives every cached block back to the driver (before retrying a failed cudaMalloc). */
static void release_cached(void)
{
    for (int c = 0; c < NCLASSES; c++) {
        block *b = free_list[c];
        while (b) {
            block *next = b->next;
            cudaFree(b->ptr);
            cached_bytes -= b->size;
            free(b);
            b = next;
        }
        free_list[c] = NULL;
    }
    (void)cudaGetLastError();
}

static nn_status alloc_locked(void **p, size_t bytes)
{
    size_t size;
    int cls = size_class(bytes, &size);
    block *b = free_list[cls];
    if (b) {
        free_list[cls] = b->next;
        cached_bytes -= b->size;
    } else {
        b = (block *)malloc(sizeof *b);
        if (!b) return nn_error(NN_E_NOMEM, "cuda: out of host memory for the allocator");
        void *d = NULL;
        cudaError_t e = cudaMalloc(&d, size);
        if (e == cudaErrorMemoryAllocation && cached_bytes) {
            (void)cudaGetLastError();
            release_cached();
            e = cudaMalloc(&d, size);
        }
        if (e != cudaSuccess) {
            free(b);
            (void)cudaGetLastError();
            if (e == cudaErrorMemoryAllocation) {
                size_t fr = 0, tot = 0;
                cudaMemGetInfo(&fr, &tot);
                (void)cudaGetLastError();
                return nn_error(NN_E_NOMEM,
                                "cuda: out of device memory allocating %zu bytes (%zu bytes in use "
                                "by convnet, %zu of %zu free on the device)",
                                bytes, live_bytes, fr, tot);
            }
            return nn_cuda_fail(e, "cudaMalloc", __FILE__, __LINE__);
        }
        b->ptr = d;
        b->size = size;
        b->cls = cls;
    }
    b->next = NULL;
    if (!live_put(b)) {
        b->next = free_list[cls];
        free_list[cls] = b;
        cached_bytes += b->size;
        return nn_error(NN_E_NOMEM, "cuda: out of host memory for the allocator");
    }
    live_bytes += b->size;
    if (live_bytes > peak_bytes) peak_bytes = live_bytes;
    *p = b->ptr;
    return NN_OK;
}

extern "C" nn_status nn_cuda_alloc(void **p, size_t bytes)
{
    *p = NULL;
    pthread_mutex_lock(&mem_lock);
    nn_status s = alloc_locked(p, bytes);
    pthread_mutex_unlock(&mem_lock);
    return s;
}

extern "C" void nn_cuda_free(void *p)
{
    if (!p) return;
    pthread_mutex_lock(&mem_lock);
    block *b = live_take(p);
    NN_ASSERT(b != NULL); /* freeing memory this allocator did not hand out */
    live_bytes -= b->size;
    cached_bytes += b->size;
    b->next = free_list[b->cls];
    free_list[b->cls] = b;
    pthread_mutex_unlock(&mem_lock);
}

extern "C" size_t nn_cuda_peak_bytes(void)
{
    pthread_mutex_lock(&mem_lock);
    size_t p = peak_bytes;
    pthread_mutex_unlock(&mem_lock);
    return p;
}

nn_status nn_cuda_scratch(void **p, size_t bytes) { return nn_cuda_alloc(p, bytes); }
void nn_cuda_scratch_free(void *p) { nn_cuda_free(p); }

/* ---- transfers ---- */

extern "C" nn_status nn_cuda_memset0(void *p, size_t bytes)
{
    if (!bytes) return NN_OK;
    NN_CUDA_STREAM(s);
    NN_CUDA_TRY(cudaMemsetAsync(p, 0, bytes, s), "memset");
    return NN_OK;
}

extern "C" nn_status nn_cuda_copy(void *dst, nn_device dd, const void *src, nn_device sd, size_t bytes)
{
    if (!bytes) return NN_OK;
    if (dd == NN_CPU && sd == NN_CPU) {
        memmove(dst, src, bytes);
        return NN_OK;
    }
    NN_CUDA_STREAM(s);
    cudaMemcpyKind kind = dd == NN_CPU   ? cudaMemcpyDeviceToHost
                          : sd == NN_CPU ? cudaMemcpyHostToDevice
                                         : cudaMemcpyDeviceToDevice;
    if (kind == cudaMemcpyHostToDevice && nn_cuda_upload_staged(bytes)) return nn_cuda_upload(dst, src, bytes, s);
    /* From pageable host memory the call returns once the source is staged, so
     * the caller may reuse it; to the host we wait for the data. */
    NN_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, kind, s), "copy");
    if (dd == NN_CPU) {
        NN_CUDA_TRY(cudaStreamSynchronize(s), "copy to the host");
        return nn_cuda_synced(); /* a lazily checked error is the reader's (the loss read) */
    }
    return NN_OK;
}

extern "C" nn_status nn_cuda_sync(void)
{
    NN_CUDA_STREAM(s);
    NN_CUDA_TRY(cudaStreamSynchronize(s), "synchronize");
    return nn_cuda_synced();
}
