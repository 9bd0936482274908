/* A named list of parameter tensors: what optimizers update and checkpoints
 * save. The list does not own the tensors (the model does); it owns its
 * gradient block, when nn_params_flatten_grads made one. */
#ifndef NN_PARAMS_H
#define NN_PARAMS_H

#include <stdbool.h>

#include "core/tensor.h"

typedef struct nn_param {
    char name[64];   /* PyTorch-style, e.g. "stage1.0.weight" */
    nn_tensor *t;    /* F32, requires_grad */
    bool is_bias;    /* weight decay on biases is the optimizer's option */
} nn_param;

typedef struct nn_params {
    nn_param *p;
    int n, cap;
    /* the gradient block (nn_params_flatten_grads), or NULL: grad_n floats of
     * gradients, then grad_extra floats for the caller, on grad_dev */
    float *grad_block;
    size_t grad_n, grad_extra;
    nn_device grad_dev;
} nn_params;

/* Gradient offsets in the block are multiples of this many floats (256 bytes),
 * so float4 loads and SIMD stay aligned; the padding between gradients is zero. */
#define NN_PARAMS_GRAD_ALIGN 64

nn_status nn_params_add(nn_params *ps, const char *name, nn_tensor *t, bool is_bias);
nn_tensor *nn_params_find(const nn_params *ps, const char *name);
size_t nn_params_count(const nn_params *ps); /* total elements */
/* One memset of the block while the list is flat, else one per gradient. */
nn_status nn_params_zero_grad(const nn_params *ps);

/* Puts every parameter's gradient into ONE allocation on their device (all
 * parameters must share it and have a heap gradient, nn_tensor_require_grad):
 * parameter i's gradient at a multiple of NN_PARAMS_GRAD_ALIGN floats, in list
 * order, its values kept; each grad->data then points into the block
 * (grad->view), its own buffer freed. *n is the floats of gradients
 * (padding included); `extra` floats follow them for the caller (zeroed here,
 * then untouched by the list), at (*block)[*n]. Both outputs may be NULL.
 * Idempotent: while the list is still flat (nn_params_flat) and had at least
 * `extra`, it returns the same block; after a parameter was added or moved
 * (nn_seq_to), or for more extra, it makes a new one and frees the old.
 * The list owns the block: nn_params_clear frees it. Free the tensors before
 * or after clearing the list (nn_seq_free does tensors, then the list), but do
 * not read their gradients once the list is cleared. */
nn_status nn_params_flatten_grads(nn_params *ps, size_t extra, float **block, size_t *n);
/* The block while every parameter's gradient still lies in it, else NULL; *n
 * (if not NULL) as nn_params_flatten_grads gives it. Cheap: pointer checks. */
float *nn_params_flat(const nn_params *ps, size_t *n);

void nn_params_clear(nn_params *ps); /* frees the list and its gradient block, not the tensors */

#endif
