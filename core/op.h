/* Internal: what an op file needs to wire itself into the graph. Not part of
 * the public API. */
#ifndef NN_OP_H
#define NN_OP_H

#include "core/backend.h"
#include "core/graph.h"
#include "core/tensor.h"

#define NN_MAX_INPUTS 4

typedef struct nn_node nn_node;

/* An op's identity for the tape: its name (for messages) and its backward,
 * which reads node->out->grad and accumulates into node->in[i]->grad for the
 * inputs whose grad is non-NULL. */
typedef struct nn_op_def {
    const char *name;
    nn_status (*backward)(nn_ctx *ctx, nn_node *node);
} nn_op_def;

struct nn_node {
    const nn_op_def *op;
    nn_tensor *out;
    nn_tensor *in[NN_MAX_INPUTS];
    int nin;
    bool alias;    /* out's data is an input's (a view, an in-place op): never released by it */
    bool keep;     /* backward leaves out's data and gradient readable (root, logits) */
    /* bit i: in[i] is a leaf whose gradient is final once this backward has
     * run (its first consumer in forward order); set only with a gradient-ready
     * callback (nn_ctx_on_grad_ready) */
    unsigned char leaf_final;
    void *saved;   /* op-specific, allocated with nn_op_host() */
    /* A buffer from nn_op_dev() on out's device that only this backward reads
     * (an argmax, a dropout mask): released with the output after it. */
    void *buf;
    size_t buf_bytes;
};

/* Returns true if the context already failed or any of the n inputs is NULL
 * (then the op must return NULL at once). */
bool nn_op_skip(nn_ctx *ctx, const char *op, int n, nn_tensor *const *in);
/* Records a failure on the context (keeps the first) and returns NULL. */
nn_tensor *nn_op_fail(nn_ctx *ctx, nn_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Same, for a status whose message is already set (from a kernel). */
nn_tensor *nn_op_fail_status(nn_ctx *ctx, nn_status s);

/* Checks that all inputs are on one device; records an error naming the op
 * and returns false otherwise. */
bool nn_op_same_device(nn_ctx *ctx, const char *op, int n, nn_tensor *const *in);
/* The backend for a device, or NULL after recording an error: NN_E_DEVICE, or
 * NN_E_UNSUPPORTED when it lacks one of op's kernels (nn_backend_supports). */
const nn_backend *nn_op_backend(nn_ctx *ctx, const char *op, nn_device dev);

/* An arena tensor (uninitialized data) on dev; NULL after recording NN_E_NOMEM. */
nn_tensor *nn_op_tensor(nn_ctx *ctx, nn_dtype dt, nn_device dev, int ndim, const int *shape);
/* Raw arena memory: on the host (for saved structs) or on a device. */
void *nn_op_host(nn_ctx *ctx, size_t bytes);
void *nn_op_dev(nn_ctx *ctx, nn_device dev, size_t bytes);
/* Temporary memory for the duration of ONE kernel call (im2col columns and
 * the like): one buffer per device per context, reused by every op and kept
 * across resets, so workspaces do not pile up in the arena. Invalid after the
 * next nn_op_scratch call. */
void *nn_op_scratch(nn_ctx *ctx, nn_device dev, size_t bytes);

/* Whether an op over these inputs should be recorded (grad mode on and some
 * input requires grad). */
bool nn_op_wants_grad(const nn_ctx *ctx, int n, nn_tensor *const *in);
/* Appends a node producing `out` from the inputs; marks out->requires_grad.
 * Returns the node (to fill `saved`) or NULL after recording NN_E_NOMEM. */
nn_node *nn_op_record(nn_ctx *ctx, const nn_op_def *op, nn_tensor *out, int n, nn_tensor *const *in);

/* In a backward: the gradient buffer of input i (NULL when not needed). */
static inline float *nn_op_grad_in(nn_node *nd, int i)
{
    nn_tensor *t = nd->in[i];
    return (t && t->grad) ? (float *)t->grad->data : NULL;
}

/* Images per kernel call for an op that works a few images at a time in the
 * context's scratch: as many of n as fit `budget` elements at per_image each,
 * at least one (lrn's scale, maxpool's unrecorded argmax). */
static inline int nn_op_images_per_call(size_t per_image, int n, size_t budget)
{
    size_t nb = per_image ? budget / per_image : (size_t)n;
    if (nb < 1) nb = 1;
    return nb > (size_t)n ? n : (int)nb;
}

/* For ops with a fused ReLU (nn_conv2d_relu, nn_linear_relu): records
 * y = relu(x) over x's memory, which x's producer has already made relu of
 * its output (no kernel runs), so the graph still holds the relu node and
 * its backward (which reads only y). Defined in ops/relu.c. */
nn_tensor *nn_relu_applied(nn_ctx *ctx, nn_tensor *x);

#endif
