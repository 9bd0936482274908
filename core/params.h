/* A named list of parameter tensors: what optimizers update and checkpoints
 * save. The list does not own the tensors (the model does). */
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
} nn_params;

nn_status nn_params_add(nn_params *ps, const char *name, nn_tensor *t, bool is_bias);
nn_tensor *nn_params_find(const nn_params *ps, const char *name);
size_t nn_params_count(const nn_params *ps); /* total elements */
nn_status nn_params_zero_grad(const nn_params *ps);
void nn_params_clear(nn_params *ps); /* frees the list, not the tensors */

#endif
