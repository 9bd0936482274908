/* Many processes, one training: the process group a launcher (mpirun, srun)
 * started, and the few collectives data parallelism needs (sum of a float
 * buffer, broadcast from rank 0, agreement on small flags, an equality check).
 *
 * A process has one group, as it has one MPI world, so this module keeps
 * process-wide state. Without a launcher (no OMPI_COMM_WORLD_*, PMI_* or srun
 * variables) the group is this process alone: rank 0 of 1, and no MPI call is
 * ever made. MPI stays inside core/dist.c; GPU buffers go through NCCL when the
 * build has it (on the context's stream), through host copies otherwise.
 *
 * Every collective waits at most the timeout (nn_dist_set_timeout): a peer
 * that died or hangs gives NN_E_IO with a message naming it where the
 * collective can tell (nn_dist_agree), never an endless wait; a program that
 * gets such a status calls nn_dist_abort. The exception is the host sum,
 * made of blocking MPI calls for speed (2.5x the nonblocking ones): a thread
 * watches it, and past the timeout prints the message and ends this process
 * (status 1; the launcher then ends the others), since its caller is stuck
 * inside MPI. MPI_Finalize is watched the same way. */
#ifndef NN_DIST_H
#define NN_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

#define NN_DIST_DEFAULT_TIMEOUT 300.0 /* seconds: longer than any step of the paper-size model on a CPU */

/* What the launcher's environment says (no MPI call): *size 1, *rank 0 and
 * *launcher NULL without one. launcher: "mpirun", "pmi" or "srun". */
void nn_dist_env(int *rank, int *size, int *local_rank, const char **launcher);

/* Joins the group when a launcher started this process (MPI_Init), else does
 * nothing. Selects GPU local_rank % devices before any other CUDA call. Call
 * it first thing, once; NN_E_UNSUPPORTED when launched for N > 1 processes by
 * a build without MPI. */
nn_status nn_dist_init(void);
void nn_dist_finalize(void);
/* Ends every process of the group with `code` (MPI_Abort); exit(code) alone. For programs. */
void nn_dist_abort(int code);

bool nn_dist_active(void); /* MPI joined (a launcher started this process) */
int nn_dist_rank(void);
int nn_dist_size(void);
int nn_dist_local_rank(void);
const char *nn_dist_backend(nn_device dev); /* "none", "mpi" or "nccl": what reduces buffers on dev */

void nn_dist_set_timeout(double seconds);
double nn_dist_timeout(void);

/* buf[i] = sum over ranks of buf[i], n floats on dev; the sum's order is rank
 * order for two ranks (addition commutes); beyond that MPI's or NCCL's. Under
 * a launcher it calls MPI or NCCL even for one rank. Host buffers: blocking
 * MPI_Allreduce calls on 1 MiB pieces, watched (see above); device buffers:
 * NCCL polled against the timeout. */
nn_status nn_dist_allreduce_sum(float *buf, size_t n, nn_device dev);
/* Bucketed sums, overlapped with backward (models/dist_train.c). Whether
 * dev's buffers can be summed that way: host buffers under MPI, device
 * buffers with NCCL (a device without NCCL goes through host copies: no). */
bool nn_dist_overlaps(nn_device dev);
#define NN_DIST_MAX_PENDING 1024 /* started sums between two waits */
/* Starts the sum of nn_dist_allreduce_sum and returns at once: host buffers
 * by MPI_Iallreduce, device buffers by NCCL on a stream of its own, after the
 * work queued so far on the compute stream. buf stays untouched until
 * nn_dist_wait_sums; every rank starts the same sums in the same order.
 * NN_E_UNSUPPORTED where nn_dist_overlaps(dev) is false. */
nn_status nn_dist_start_sum(float *buf, size_t n, nn_device dev);
/* Lets MPI move started sums along (it progresses inside MPI calls only). */
void nn_dist_progress(void);
/* Waits for every started sum against the timeout (a dead or hung peer:
 * NN_E_IO); device sums: the compute stream then waits for NCCL's. */
nn_status nn_dist_wait_sums(nn_device dev);
/* The same for host doubles (counts, sums of losses). */
nn_status nn_dist_allreduce_sum_f64(double *buf, int n);
/* rank 0's bytes to every rank (buf on dev). */
nn_status nn_dist_broadcast(void *buf, size_t bytes, nn_device dev);
/* flags[i] = max over ranks (host ints). Rank 0 hears from every rank within
 * the timeout or fails naming the ranks that did not answer ("rank 1 did not
 * reach step 12 within 300 s"); `what` says where the ranks are. */
nn_status nn_dist_agree(int *flags, int n, const char *what);
/* NN_E_FORMAT unless every rank passed the same value (naming those that differ). */
nn_status nn_dist_check_equal(uint64_t value, const char *what);

/* FNV-1a, 64 bits: start with h = NN_HASH_INIT. */
#define NN_HASH_INIT 14695981039346656037ull
uint64_t nn_hash_bytes(uint64_t h, const void *p, size_t n);

#endif
