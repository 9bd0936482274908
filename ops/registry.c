/* The op registry (see registry.h): the array of the listed ops, and the helpers
 * their gradcheck cases are written with. */
#include "ops/registry.h"

#include <string.h>

#define NN_OP_ENTRY(name) &nn_op_##name,
const nn_op_info *const nn_ops[] = {NN_REGISTERED_OPS(NN_OP_ENTRY) NULL};
#undef NN_OP_ENTRY

int nn_op_count(void) { return (int)(sizeof nn_ops / sizeof nn_ops[0]) - 1; }

const nn_op_info *nn_op_find(const char *name)
{
    for (int i = 0; nn_ops[i]; i++)
        if (strcmp(nn_ops[i]->name, name) == 0) return nn_ops[i];
    return NULL;
}

int nn_op_pick(nn_rng *r, int lo, int hi) { return lo + (int)nn_rng_below(r, (uint32_t)(hi - lo + 1)); }

static nn_status append(nn_op_case *c, const char *name, nn_tensor *t)
{
    if (c->n == NN_GC_MAX_INPUTS) {
        nn_tensor_free(t);
        return nn_error(NN_E_ARG, "op case: more than %d inputs", NN_GC_MAX_INPUTS);
    }
    c->in[c->n] = t;
    c->names[c->n++] = name;
    return NN_OK;
}

nn_status nn_op_case_rand(nn_op_case *c, const char *name, nn_rng *r, nn_device dev, float lo, float hi,
                          int ndim, const int *shape)
{
    nn_tensor *t = NULL;
    NN_TRY(nn_tensor_new(&t, NN_F32, dev, ndim, shape));
    NN_TRY(append(c, name, t));
    NN_TRY(nn_tensor_uniform(t, r, lo, hi));
    return nn_tensor_require_grad(t);
}

nn_status nn_op_case_host(nn_op_case *c, const char *name, nn_device dev, nn_dtype dt, int ndim,
                          const int *shape, const void *data)
{
    nn_tensor *t = NULL;
    NN_TRY(nn_tensor_from(&t, dt, dev, ndim, shape, data));
    NN_TRY(append(c, name, t));
    return dt == NN_F32 ? nn_tensor_require_grad(t) : NN_OK;
}

void nn_op_case_set_args(nn_op_case *c, const void *args, size_t bytes)
{
    NN_ASSERT(bytes <= sizeof c->args);
    memcpy(c->args, args, bytes);
}

void nn_op_case_free(nn_op_case *c)
{
    for (int i = 0; i < c->n; i++) nn_tensor_free(c->in[i]);
    c->n = 0;
}
