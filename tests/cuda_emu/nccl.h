/* NCCL on MPI, for tests only: a stand-in for the toolkit's nccl.h with just
 * what cuda/nccl.cu uses (values as in NCCL 2.x), implemented by
 * tests/cuda_emu/nccl_emu.cpp for the emulated CUDA module. The emulator's
 * "device" memory is host memory, so a collective is MPI_Iallreduce (in
 * place, MPI_SUM) or MPI_Ibcast straight on the buffer, started as work on
 * the given stream when the stream's work runs; the stream then stays busy
 * (cudaStreamQuery: cudaErrorNotReady) until MPI_Testall says it is done,
 * and a synchronization waits for it (MPI_Waitall). In a captured graph the
 * replay waits for each collective at once. So a peer that died or hangs
 * leaves the stream busy, and cuda/nccl.cu's deadline polling ends the job
 * as on a GPU; ncclCommAbort ends the pending collectives (buffers
 * undefined) so that nothing waits for them any more.
 *
 * What differs from NCCL: the summation order is MPI's, not NCCL's ring or
 * tree (for 2 ranks both give a + b, bitwise; for more, sums may round
 * differently); progress happens only while a rank is inside MPI (a poll,
 * a wait, or the host's own MPI calls). The communicator is a duplicate of
 * MPI_COMM_WORLD (its own, as NCCL's is: the host's MPI collectives never
 * match its ones): its size and rank are checked against MPI's, and every
 * rank's unique id against rank 0's. */
#ifndef NN_CUDA_EMU_NCCL_H
#define NN_CUDA_EMU_NCCL_H

#include <stddef.h>

#include "cuda_runtime.h"

#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef struct ncclComm *ncclComm_t;

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
} ncclResult_t;

typedef enum { ncclSum = 0 } ncclRedOp_t;

/* the emulation reduces these; other NCCL types are ncclInvalidArgument */
typedef enum {
    ncclInt8 = 0,
    ncclChar = 0,
    ncclInt32 = 2,
    ncclInt = 2,
    ncclFloat32 = 7,
    ncclFloat = 7,
    ncclFloat64 = 8,
    ncclDouble = 8,
} ncclDataType_t;

/* random bytes, then rank 0's pid: a rank handed another job's id is told */
ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
/* collective over MPI_COMM_WORLD (MPI must be initialized) */
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t type, int root,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
const char *ncclGetErrorString(ncclResult_t r);

#endif
