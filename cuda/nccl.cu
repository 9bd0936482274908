/* NCCL for data-parallel training (core/dist.c through cuda/module.h): one
 * communicator per process, collectives on the backend's stream, each waited
 * for against a deadline by polling the stream, since a peer that died or
 * hangs leaves NCCL's kernel spinning forever; the communicator is aborted
 * then and the caller ends the job. Built only when NCCL and MPI are found. */
#include <nccl.h>
#include <string.h>
#include <time.h>

#include "cuda/common.cuh"
#include "cuda/module.h"

static ncclComm_t comm;
static int my_rank;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static nn_status nccl_fail(ncclResult_t r, const char *what)
{
    return nn_error(NN_E_DEVICE, "dist: rank %d: %s: %s", my_rank, what, ncclGetErrorString(r));
}

static nn_status unique_id(void *id)
{
    ncclResult_t r = ncclGetUniqueId((ncclUniqueId *)id);
    return r == ncclSuccess ? NN_OK : nccl_fail(r, "ncclGetUniqueId");
}

static nn_status init(int size, int rank, const void *id)
{
    my_rank = rank;
    if (comm) return NN_OK;
    ncclUniqueId uid;
    memcpy(&uid, id, sizeof uid);
    ncclResult_t r = ncclCommInitRank(&comm, size, uid, rank);
    if (r == ncclInvalidUsage) /* NCCL's usual reason here: two ranks on one GPU ("Duplicate GPU detected") */
        return nccl_fail(r, "ncclCommInitRank (NCCL takes one GPU per process: more processes on this machine "
                            "than GPUs? NCCL_DEBUG=WARN says)");
    return r == ncclSuccess ? NN_OK : nccl_fail(r, "ncclCommInitRank");
}

/* Polls the stream until the collective is done or the deadline passes. */
static nn_status wait_for(cudaStream_t s, double timeout_s, const char *what)
{
    const double deadline = now_s() + timeout_s;
    cudaError_t e;
    while ((e = cudaStreamQuery(s)) == cudaErrorNotReady) {
        if (now_s() > deadline) {
            ncclCommAbort(comm);
            comm = NULL;
            return nn_error(NN_E_IO, "dist: rank %d: %s did not complete within %g s (a peer died or hangs)", my_rank,
                            what, timeout_s);
        }
        struct timespec pause = {0, 20000};
        nanosleep(&pause, NULL);
    }
    NN_CUDA_TRY(e, what);
    return NN_OK;
}

static nn_status sum(float *buf, size_t n, double timeout_s)
{
    if (!comm) return nn_error(NN_E_DEVICE, "dist: rank %d: NCCL all-reduce before the communicator", my_rank);
    NN_CUDA_STREAM(s);
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, s);
    if (r != ncclSuccess) return nccl_fail(r, "ncclAllReduce");
    return wait_for(s, timeout_s, "the gradient all-reduce (NCCL)");
}

static nn_status bcast(void *buf, size_t bytes, double timeout_s)
{
    if (!comm) return nn_error(NN_E_DEVICE, "dist: rank %d: NCCL broadcast before the communicator", my_rank);
    NN_CUDA_STREAM(s);
    ncclResult_t r = ncclBroadcast(buf, buf, bytes, ncclChar, 0, comm, s);
    if (r != ncclSuccess) return nccl_fail(r, "ncclBroadcast");
    return wait_for(s, timeout_s, "the broadcast (NCCL)");
}

/* ---- bucketed sums, overlapped with backward ---- */

/* NCCL's own stream (non-blocking: no implicit order with the compute
 * stream), made on first use; `ready` orders it after the compute stream's
 * queued work, `done` the compute stream after it. One event each serves
 * every bucket: cudaStreamWaitEvent takes the event's state at the call. */
static cudaStream_t side;
static cudaEvent_t ready, done;
static bool side_busy; /* sums started since the last wait */

static nn_status side_stream(void)
{
    if (side) return NN_OK;
    NN_CUDA_TRY(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate");
    NN_CUDA_TRY(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreate");
    NN_CUDA_TRY(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking), "cudaStreamCreate (NCCL)");
    return NN_OK;
}

static nn_status start_sum(float *buf, size_t n)
{
    if (!comm) return nn_error(NN_E_DEVICE, "dist: rank %d: NCCL all-reduce before the communicator", my_rank);
    NN_TRY(side_stream());
    NN_CUDA_STREAM(s);
    NN_CUDA_TRY(cudaEventRecord(ready, s), "cudaEventRecord (gradient ready)");
    NN_CUDA_TRY(cudaStreamWaitEvent(side, ready, 0), "cudaStreamWaitEvent (NCCL stream)");
    ncclResult_t r = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, side);
    if (r != ncclSuccess) return nccl_fail(r, "ncclAllReduce (bucket)");
    side_busy = true;
    return NN_OK;
}

/* Polled against the deadline (a hung peer), then the compute stream waits
 * on the device too, so nothing after it can overtake a sum. */
static nn_status wait_sums(double timeout_s)
{
    if (!side_busy) return NN_OK;
    NN_TRY(wait_for(side, timeout_s, "the bucketed gradient all-reduce (NCCL)"));
    side_busy = false;
    NN_CUDA_STREAM(s);
    NN_CUDA_TRY(cudaEventRecord(done, side), "cudaEventRecord (sums done)");
    NN_CUDA_TRY(cudaStreamWaitEvent(s, done, 0), "cudaStreamWaitEvent (compute stream)");
    return NN_OK;
}

static void destroy(void)
{
    if (comm) ncclCommDestroy(comm);
    comm = NULL;
    if (side) cudaStreamDestroy(side), cudaEventDestroy(ready), cudaEventDestroy(done);
    side = NULL, side_busy = false;
}

extern "C" const nn_cuda_nccl nn_cuda_nccl_table = {sizeof(ncclUniqueId), unique_id, init, sum, bcast, start_sum,
                                                     wait_sums, destroy};
