/* Data-parallel training: the trainer (models/train.h) run as N processes of
 * one group (core/dist.h), computing what one process computes on the global
 * batch.
 *
 * Each rank takes rows [r * B/N, (r + 1) * B/N) of every global batch of B
 * (nn_shard_source, over the one deterministic order every rank draws), and its
 * context draws dropout by global row. After backward, the parameters'
 * gradient block (nn_params_flatten_grads: every gradient in ONE allocation on
 * the model's device, plus a tail for the step's loss, images and top-1 hits,
 * so the printed accuracy is the global batch's) is summed across ranks in
 * one all-reduce, in place, and scaled by 1/N in place: the mean over the
 * global batch (with bucket_mb, in buckets started during backward instead,
 * overlapped with the rest of it). A non-finite loss or gradient on
 * any rank reaches every rank through that sum, so the non-finite decision is
 * the same everywhere; stop requests (signals) are agreed the same step
 * through nn_dist_agree. Weights and optimizer state go out from rank 0 at the
 * start; nn_dp_check compares a hash of them across ranks.
 *
 * With one process and ranks_emulated = N > 1 (a test option), the after
 * backward hook computes the N slices in turn and sums them in rank order:
 * bitwise what N ranks compute. */
#ifndef NN_DIST_TRAIN_H
#define NN_DIST_TRAIN_H

#include <signal.h>

#include "core/dist.h"
#include "models/train.h"

/* Rows [rank * n / ranks, (rank + 1) * n / ranks) of each batch of `inner`
 * (a batch of n images of image_floats floats per view). The struct is the
 * source's state: keep it alive while the source is used. */
typedef struct nn_shard {
    nn_batch_source inner;
    int rank, ranks;
    size_t image_floats;
    /* the last global batch */
    const float *x;
    const int32_t *y;
    int n;
} nn_shard;

nn_batch_source nn_shard_source(nn_shard *sh, const nn_batch_source *inner, int rank, int ranks,
                                 size_t image_floats);
/* Slice r of the last global batch (for the one-process emulation). */
void nn_shard_slice(const nn_shard *sh, int r, const float **x, const int32_t **y, int *n);

typedef struct nn_dp_config {
    nn_device dev;
    /* the caller's stop request (a signal handler sets it), and the flag the
     * trainer watches (nn_trainer_config.stop): set on every rank the same step */
    volatile sig_atomic_t *request, *agreed;
    nn_shard *train_shard;  /* the trainer's training source (its rows) */
    int ranks_emulated;     /* test-only: > 1 computes that many slices in one process */
    /* > 0: the block is summed in buckets of about this many MiB, each
     * started during backward as soon as its parameters' gradients are done
     * (where nn_dist_overlaps: host gradients under MPI, GPU ones with NCCL);
     * 0: one sum after backward. The same bits either way: each float is the
     * same sum over ranks. */
    double bucket_mb;
    /* test-only, at step fault_step (-1: none): that rank dies, hangs, or
     * sends itself SIGUSR1 before the step's agreement, or hangs after it
     * (hang_sum_rank: in the gradient sum, where only the sum's own deadline
     * can end the job: NCCL's, or the bucketed MPI sums') */
    int hang_rank, die_rank, signal_rank, hang_sum_rank;
    int64_t fault_step;
    /* test-only (-1: none): that rank's weights and optimizer state are
     * changed before rank 0's are broadcast, so the broadcast must undo it */
    int perturb_rank;
} nn_dp_config;

typedef struct nn_dp nn_dp;

/* Sets up data parallelism for trainer t (made with this rank's sources): the
 * gradient block with its tail, the context's shard, and the broadcast of rank 0's
 * weights and optimizer state. With one process and no emulation, the hooks
 * only copy the stop request. */
nn_status nn_dp_new(nn_dp **out, nn_trainer *t, const nn_dp_config *cfg);
void nn_dp_free(nn_dp *dp); /* before the trainer: it unhooks itself from the trainer's context */

/* The hooks (nn_trainer_config.after_backward / after_eval take the dp as
 * user through a wrapper of the caller's). */
nn_status nn_dp_after_backward(nn_dp *dp);
nn_status nn_dp_after_eval(nn_dp *dp, nn_eval_result *res); /* also nn_dp_check: before the epoch's checkpoints */

/* A hash of the weights and optimizer state; NN_E_FORMAT when ranks differ. */
uint64_t nn_dp_hash(nn_dp *dp);
nn_status nn_dp_check(nn_dp *dp, const char *when);

/* Buckets the gradient block is summed in during backward (0: one sum after it). */
int nn_dp_buckets(const nn_dp *dp);

/* Seconds spent in the gradient all-reduce (sum and scale) so far, and steps. */
double nn_dp_reduce_seconds(const nn_dp *dp, int64_t *steps);

#endif
