/* Staged uploads (cuda/upload.h). A ring of UPLOAD_SLOTS page-locked buffers,
 * each grown to the largest copy it has carried (so from the second step on
 * nothing is allocated); one upload:
 *   1. waits until the slot's previous DMA is done (an event; with two
 *      tensors per batch and four slots, the host may run a whole step ahead
 *      of the GPU before this waits at all);
 *   2. copies the caller's bytes into the slot (the caller may reuse them at
 *      once, as with cudaMemcpyAsync from pageable memory);
 *   3. on the copy stream, after an event recorded on the compute stream (the
 *      destination may still be read by kernels queued before: a
 *      write-after-read hazard), DMAs the slot to the destination;
 *   4. makes the compute stream wait for that DMA (an event), so every later
 *      kernel and copy sees the data, and the caching allocator's "one stream,
 *      in order" rule (memory.cu) still holds from the compute stream's view.
 * The copy stream only pays when the caller uploads into a buffer the GPU is
 * not reading (a second batch tensor); with one batch tensor the gain is the
 * host not blocking in cudaMemcpyAsync on pageable memory. */
#include <pthread.h>
#include <string.h>

#include "cuda/common.cuh"
#include "cuda/upload.h"

#define UPLOAD_SLOTS 4                      /* x and y of two batches */
#define UPLOAD_MAX ((size_t)256 << 20)      /* larger copies (whole checkpoints) go the plain way */

static int pinned = -1; /* -1: not read from the environment yet */

extern "C" bool nn_cuda_pinned_uploads(void)
{
    if (pinned < 0) {
        const char *e = getenv(NN_CUDA_PINNED_ENV);
        pinned = e && e[0] == '1';
    }
    return pinned;
}

extern "C" void nn_cuda_set_pinned_uploads(bool on) { pinned = on; }

typedef struct upload_slot {
    void *buf; /* page-locked, cap bytes */
    size_t cap;
    cudaEvent_t done; /* the slot's last DMA */
} upload_slot;

static pthread_mutex_t up_lock = PTHREAD_MUTEX_INITIALIZER;
static upload_slot slots[UPLOAD_SLOTS];
static int next_slot;
static cudaStream_t copy_stream;
static cudaEvent_t compute_mark; /* the compute stream's position at an upload */

static cudaError_t upload_init(void)
{
    if (copy_stream) return cudaSuccess;
    cudaError_t e = cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&compute_mark, cudaEventDisableTiming);
    for (int i = 0; e == cudaSuccess && i < UPLOAD_SLOTS; i++)
        e = cudaEventCreateWithFlags(&slots[i].done, cudaEventDisableTiming);
    return e;
}

/* The slot large enough for `bytes`, its previous DMA finished. */
static cudaError_t slot_ready(upload_slot *u, size_t bytes)
{
    cudaError_t e = cudaEventSynchronize(u->done); /* a never-recorded event is complete */
    if (e != cudaSuccess || u->cap >= bytes) return e;
    if (u->buf) cudaFreeHost(u->buf);
    u->buf = NULL;
    u->cap = 0;
    e = cudaHostAlloc(&u->buf, bytes, cudaHostAllocDefault);
    if (e == cudaSuccess) u->cap = bytes;
    return e;
}

static cudaError_t upload_locked(void *dst, const void *src, size_t bytes, cudaStream_t s)
{
    cudaError_t e = upload_init();
    upload_slot *u = &slots[next_slot];
    if (e == cudaSuccess) e = slot_ready(u, bytes);
    if (e != cudaSuccess) return e;
    next_slot = (next_slot + 1) % UPLOAD_SLOTS;
    memcpy(u->buf, src, bytes);
    e = cudaEventRecord(compute_mark, s);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(copy_stream, compute_mark, 0);
    if (e == cudaSuccess) e = cudaMemcpyAsync(dst, u->buf, bytes, cudaMemcpyHostToDevice, copy_stream);
    if (e == cudaSuccess) e = cudaEventRecord(u->done, copy_stream);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(s, u->done, 0);
    return e;
}

bool nn_cuda_upload_staged(size_t bytes) { return bytes <= UPLOAD_MAX && nn_cuda_pinned_uploads(); }

nn_status nn_cuda_upload(void *dst, const void *src, size_t bytes, cudaStream_t s)
{
    pthread_mutex_lock(&up_lock);
    const cudaError_t e = upload_locked(dst, src, bytes, s);
    pthread_mutex_unlock(&up_lock);
    if (e != cudaSuccess) return nn_cuda_fail(e, "pinned upload", __FILE__, __LINE__);
    return NN_OK;
}
