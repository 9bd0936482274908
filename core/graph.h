/* Contexts and reverse-mode autograd.
 *
 * An nn_ctx holds one step's graph: every op called on it allocates its output
 * (and what its backward needs) from the context's arenas, one per device, and
 * appends a node to a tape. nn_backward(ctx, loss) walks the tape in reverse,
 * which is a topological order of any DAG; backward kernels accumulate (+=), so
 * a tensor used twice receives the sum of both gradients.
 *
 * Why rebuild-on-reset instead of a static graph: a training step calls the
 * model's forward function again after nn_ctx_reset(). Building ~30 nodes costs
 * microseconds against milliseconds of kernels, the forward stays plain C with
 * ordinary control flow (train/eval, any composition), and the arenas keep
 * their memory across resets: after the first step a step allocates nothing
 * (the arenas grow once to the step's high-water mark, then are reused).
 * Within a step, memory whose last reader has run goes back to the arena and
 * is reused: backward releases each op output's gradient and data once the
 * op's own backward has run (gradients are made only when first needed),
 * and inference releases each activation once its consumer has run, so a
 * step's peak is the live set, not everything it ever held.
 *
 * Ops report errors through the context: an op that fails returns NULL and
 * leaves the context's sticky status and message; an op given NULL returns
 * NULL. So a whole forward pass can be written without checks and tested once
 * with nn_ctx_status(). */
#ifndef NN_GRAPH_H
#define NN_GRAPH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/rng.h"
#include "core/status.h"
#include "core/step_vars.h"
#include "core/tensor.h"

typedef struct nn_ctx nn_ctx;

nn_ctx *nn_ctx_new(void); /* NULL on out of memory; free with nn_ctx_free */
void nn_ctx_free(nn_ctx *ctx);

/* Drops the graph and every op output; keeps the memory for the next step and
 * clears the sticky status. Heap tensors (parameters) are untouched. */
void nn_ctx_reset(nn_ctx *ctx);

/* Gradient recording (default on). Off = inference: ops record nothing and
 * their outputs never require grad. Returns the previous setting. */
bool nn_ctx_set_grad(nn_ctx *ctx, bool enabled);
/* Memory during backward (default: released). Once an op's backward has run,
 * its output's gradient is consumed and its data read for the last time, so
 * both go back to the arena for reuse: after nn_backward, only the root, the
 * inputs of the op that produced it (the logits under a loss) and leaves keep
 * their data and gradients. Retain on keeps every op output's data and
 * gradient readable until the reset (tests that inspect intermediates).
 * Returns the previous setting. */
bool nn_ctx_set_retain(nn_ctx *ctx, bool retain);

/* Gives an op output's memory (t->data) back to the context's arena for
 * reuse in this step; t->data becomes NULL. The caller vouches that nothing
 * reads it again: no later op of the forward and no backward (for inference,
 * an activation whose consumer has run; in training, an input that neither
 * its consumer's nor its producer's backward reads, as an LRN output under a
 * maxpool). Ignores NULL, heap tensors, views and in-place outputs (their
 * memory is another tensor's), memory not from the arena, and retain mode. */
void nn_ctx_release(nn_ctx *ctx, nn_tensor *t);

/* Training mode (default on): dropout active. Off: dropout is the identity. */
bool nn_ctx_set_training(nn_ctx *ctx, bool training);
bool nn_ctx_training(const nn_ctx *ctx);

/* The generator dropout draws from (owned by the context, state saveable). */
nn_rng *nn_ctx_rng(nn_ctx *ctx);

/* A training step's scalars (core/step_vars.h) for the ops that read them
 * on the device (dropout's generator position): sv lives in dev's memory and
 * its rng_offset holds `base`, the generator's offset when the step began, so
 * a dropout draws at sv->rng_offset + (its offset - base), the same counters
 * as by value, and a replayed captured step draws new ones. NULL (the
 * default): ops pass their scalars by value. Kept across nn_ctx_reset. */
void nn_ctx_set_step_vars(nn_ctx *ctx, nn_device dev, const nn_step_vars *sv, uint64_t base);
/* The step's scalars on dev (NULL if none), *base their generator position. */
const nn_step_vars *nn_ctx_step_vars(const nn_ctx *ctx, nn_device dev, uint64_t *base);

/* Data parallelism: this context's batches are rows [first, first + n) of a
 * global batch of `total` rows, so dropout draws its masks by global row (and
 * advances the generator by the global batch's count): N processes draw what
 * one process draws on the whole batch. total 0 (the default): not sharded. */
void nn_ctx_set_shard(nn_ctx *ctx, int first, int total);
void nn_ctx_shard(const nn_ctx *ctx, int *first, int *total);

/* The first error since the last reset (NN_OK if none). When there is one,
 * this call also makes its message the thread's nn_errmsg() again, so after
 *     if (!loss) return nn_ctx_status(ctx);
 * the caller's caller reads the op's message with nn_errmsg() as for any
 * other error. nn_ctx_errmsg() is that same message, kept by the context
 * ("" if none). */
nn_status nn_ctx_status(const nn_ctx *ctx);
const char *nn_ctx_errmsg(const nn_ctx *ctx);

/* Records status s with the thread's current message (nn_errmsg) as the
 * context's error unless one is already there; returns NULL. For code that
 * composes ops (models) and finds a problem of its own. */
nn_tensor *nn_ctx_fail(nn_ctx *ctx, nn_status s);

/* Bytes the arena of `dev` holds now, and the most it ever handed out in a step. */
size_t nn_ctx_arena_bytes(const nn_ctx *ctx, nn_device dev);
size_t nn_ctx_peak_bytes(const nn_ctx *ctx, nn_device dev);
/* Number of times an arena had to ask the system for memory (for tests that
 * check the steady state allocates nothing). */
size_t nn_ctx_system_allocs(const nn_ctx *ctx);

/* Backpropagates from a scalar (numel 1) F32 loss produced on this context:
 * adds d loss / d t into t->grad for every tensor t that requires grad.
 * Leaf gradients accumulate across calls until zeroed (nn_tensor_zero_grad).
 * Once per graph: nn_backward after a backward pass on the same graph (before
 * nn_ctx_reset) is NN_E_ARG, since it would silently double the gradients. */
nn_status nn_backward(nn_ctx *ctx, nn_tensor *loss);

/* Same from a non-scalar output y, seeded with dy (host memory, y->numel
 * floats): adds the vector-Jacobian product dy^T dy/dt into each t->grad.
 * May be called again on the same graph: the products add up. */
nn_status nn_backward_with(nn_ctx *ctx, nn_tensor *y, const float *dy_host);

/* Gradient-ready notification, to overlap work on gradients (a data-parallel
 * all-reduce) with the rest of backward: during each backward pass on ctx,
 * fn(leaf, user) is called once for every leaf input that requires grad and
 * has a gradient, as soon as that gradient holds its last contribution of the
 * pass (the backward of its first consumer in forward order has run, or was
 * skipped as off the path to the output); GPU work is queued, not finished.
 * A status other than NN_OK ends the pass with it. fn NULL (the default):
 * none, at no cost; set, one scan of the tape per pass from the context's
 * arena (no allocation in the steady state). */
typedef nn_status (*nn_grad_ready_fn)(nn_tensor *leaf, void *user);
void nn_ctx_on_grad_ready(nn_ctx *ctx, nn_grad_ready_fn fn, void *user);

/* Number of nodes recorded since the last reset. */
size_t nn_ctx_nodes(const nn_ctx *ctx);

#endif
