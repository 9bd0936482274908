/* NCCL on MPI for the emulated CUDA module (what it models and what it does
 * not: tests/cuda_emu/nccl.h): the communicator is a duplicate of
 * MPI_COMM_WORLD checked against the arguments; a collective checks its
 * buffer is device memory and starts MPI_Iallreduce / MPI_Ibcast on it as
 * work on the stream, which stays busy until MPI says the request is done. */
#define OMPI_SKIP_MPICXX 1 /* the C API only */
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "nccl.h"

struct ncclComm {
    int size, rank;
    ncclUniqueId id;
    MPI_Comm mpi; /* its own, as NCCL's: no collective of the host's can cross one of these */
    /* set by ncclCommAbort; read by the collectives still pending on a stream */
    std::shared_ptr<bool> aborted = std::make_shared<bool>(false);
};

namespace {

const char *const ID_TAG = "nn_emu nccl id";

/* the MPI type of an NCCL one and its size; false for types not emulated */
bool mpi_type(ncclDataType_t t, MPI_Datatype *m, size_t *bytes)
{
    switch (t) {
    case ncclChar: *m = MPI_SIGNED_CHAR, *bytes = 1; return true;
    case ncclInt32: *m = MPI_INT, *bytes = 4; return true;
    case ncclFloat32: *m = MPI_FLOAT, *bytes = 4; return true;
    case ncclFloat64: *m = MPI_DOUBLE, *bytes = 8; return true;
    }
    return false;
}

__attribute__((format(printf, 1, 2))) ncclResult_t usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    nn_emu::vsay("nn_emu nccl", fmt, ap);
    va_end(ap);
    return ncclInvalidUsage;
}

/* MPI counts are int: chunks of at most 2^30 elements, each a request
 * started by `call`; returns the stream's test of them all (the emulator's
 * pending work). After ncclCommAbort it answers done: as on the GPU, the
 * aborted collective no longer holds the stream (the requests are left
 * behind: MPI cannot cancel a collective's, and the job ends anyway). */
template <class F> nn_emu::pending chunked(void *buf, size_t count, size_t elem, ncclComm_t comm, F call)
{
    auto reqs = std::make_shared<std::vector<MPI_Request>>();
    for (size_t done = 0; done < count;) {
        const int c = count - done > ((size_t)1 << 30) ? 1 << 30 : (int)(count - done);
        reqs->push_back(MPI_REQUEST_NULL);
        if (call((char *)buf + done * elem, c, &reqs->back()) != MPI_SUCCESS)
            nn_emu::fail("nccl emulation: an MPI collective failed");
        done += (size_t)c;
    }
    return [reqs, aborted = comm->aborted](bool wait) {
        if (*aborted) return true;
        int done = 0;
        const int n = (int)reqs->size();
        const int rc = wait ? MPI_Waitall(n, reqs->data(), MPI_STATUSES_IGNORE)
                            : MPI_Testall(n, reqs->data(), &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) nn_emu::fail("nccl emulation: waiting for an MPI collective failed");
        return wait || done != 0;
    };
}

/* the common checks of a collective: communicator, type, device buffers */
ncclResult_t check(const char *op, const void *send, void *recv, size_t count, ncclDataType_t type, ncclComm_t comm,
                   MPI_Datatype *m, size_t *elem)
{
    if (!comm) return usage("%s: no communicator", op);
    if (!mpi_type(type, m, elem)) return ncclInvalidArgument;
    const size_t bytes = count * *elem;
    if (count && (!nn_emu::in_device_memory(recv, bytes) || (send && !nn_emu::in_device_memory(send, bytes))))
        return usage("%s: a buffer of %zu bytes is not (wholly) in device memory", op, bytes);
    return ncclSuccess;
}

ncclResult_t launched(cudaError_t e) { return e == cudaSuccess ? ncclSuccess : ncclUnhandledCudaError; }

} // namespace

ncclResult_t ncclGetUniqueId(ncclUniqueId *id)
{
    if (!id) return ncclInvalidArgument;
    std::random_device rd;
    for (auto &c : id->internal) c = (char)rd();
    std::snprintf(id->internal, sizeof id->internal, "%s %ld", ID_TAG, (long)getpid());
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank)
{
    if (!comm) return ncclInvalidArgument;
    *comm = nullptr;
    int ready = 0, size, me;
    MPI_Initialized(&ready);
    if (!ready) return usage("ncclCommInitRank: MPI is not initialized (the emulation reduces with MPI)");
    MPI_Comm_size(MPI_COMM_WORLD, &size), MPI_Comm_rank(MPI_COMM_WORLD, &me);
    if (nranks != size || rank != me)
        return usage("ncclCommInitRank: rank %d of %d, but MPI_COMM_WORLD has this process as rank %d of %d", rank,
                     nranks, me, size);
    if (std::strncmp(id.internal, ID_TAG, std::strlen(ID_TAG)))
        return usage("ncclCommInitRank: rank %d: the unique id did not come from ncclGetUniqueId", me);
    /* a peer that hangs in NCCL's rendezvous (tests/test_dist.sh): it never joins */
    const char *hang = std::getenv("NN_EMU_NCCL_INIT_HANG_RANK");
    if (hang && std::atoi(hang) == me)
        for (;;) pause();
    ncclUniqueId root = id; /* every rank must hold rank 0's id, as NCCL's rendezvous needs */
    if (MPI_Bcast(root.internal, sizeof root.internal, MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS)
        return ncclSystemError;
    int differs = std::memcmp(root.internal, id.internal, sizeof id.internal) != 0, any = 0;
    if (MPI_Allreduce(&differs, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS) return ncclSystemError;
    if (any)
        return usage("ncclCommInitRank: rank %d: %s", me,
                     differs ? "this rank's unique id is not rank 0's" : "another rank's unique id is not rank 0's");
    MPI_Comm own;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &own) != MPI_SUCCESS) return ncclSystemError;
    *comm = new ncclComm{size, me, id, own};
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream)
{
    MPI_Datatype m = MPI_DATATYPE_NULL;
    size_t elem = 0;
    if (ncclResult_t r = check("ncclAllReduce", sendbuff, recvbuff, count, type, comm, &m, &elem)) return r;
    if (op != ncclSum) return ncclInvalidArgument;
    return launched(nn_emu::enqueue_pending(stream, "ncclAllReduce", [=] {
        if (sendbuff != recvbuff) std::memcpy(recvbuff, sendbuff, count * elem);
        return chunked(recvbuff, count, elem, comm, [&](void *p, int c, MPI_Request *r) {
            return MPI_Iallreduce(MPI_IN_PLACE, p, c, m, MPI_SUM, comm->mpi, r);
        });
    }));
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t stream)
{
    MPI_Datatype m = MPI_DATATYPE_NULL;
    size_t elem = 0;
    const bool mine = comm && comm->rank == root; /* only the root's sendbuff is read */
    if (ncclResult_t r = check("ncclBroadcast", mine ? sendbuff : nullptr, recvbuff, count, type, comm, &m, &elem))
        return r;
    if (root < 0 || root >= comm->size) return ncclInvalidArgument;
    return launched(nn_emu::enqueue_pending(stream, "ncclBroadcast", [=] {
        if (mine && sendbuff != recvbuff) std::memcpy(recvbuff, sendbuff, count * elem);
        return chunked(recvbuff, count, elem, comm,
                       [&](void *p, int c, MPI_Request *r) { return MPI_Ibcast(p, c, m, root, comm->mpi, r); });
    }));
}

/* The collectives still pending end (their buffers undefined); the MPI
 * communicator stays, as requests may still use it. */
ncclResult_t ncclCommAbort(ncclComm_t comm)
{
    if (!comm) return ncclInvalidArgument;
    *comm->aborted = true;
    delete comm;
    return ncclSuccess;
}

/* MPI_Comm_free lets requests still pending on the communicator finish */
ncclResult_t ncclCommDestroy(ncclComm_t comm)
{
    if (!comm) return ncclInvalidArgument;
    MPI_Comm_free(&comm->mpi);
    delete comm;
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t r)
{
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    }
    return "unknown result code";
}
