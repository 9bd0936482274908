/* Numerical gradient checking for users (Caffe's method).
 *
 * fn builds a graph from the inputs and returns one F32 output tensor y. The
 * checker reduces it to L = sum(y * r) with a fixed random r, takes the
 * analytic gradient of every input that requires grad through nn_backward, and
 * compares each element with the central difference
 *     n = (L(x + eps) - L(x - eps)) / (2 eps)      (L summed in double)
 * passing when |a - n| <= threshold * max(|a|, |n|, 1). Where the two
 * one-sided differences disagree by more than the threshold, the step is
 * halved: smooth curvature halves the disagreement, a kink (relu at 0, a
 * maxpool near-tie) does not, and such a point is skipped and counted. */
#ifndef NN_GRADCHECK_H
#define NN_GRADCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/graph.h"
#include "core/tensor.h"

#define NN_GC_MAX_INPUTS 4

typedef nn_tensor *(*nn_gc_fn)(nn_ctx *ctx, nn_tensor *const *inputs, void *user);

typedef struct nn_gradcheck_opts {
    double eps;        /* step; 0 -> 1e-2 (float32 forward: smaller steps drown in rounding) */
    double threshold;  /* 0 -> 1e-2 */
    uint64_t seed;     /* for r, and for dropout inside fn */
    size_t max_points; /* per input; 0 -> every element */
} nn_gradcheck_opts;

typedef struct nn_gradcheck_input {
    bool checked;           /* false for inputs that do not require grad */
    double max_abs, max_rel; /* worst |a - n| and |a - n| / max(|a|, |n|, 1) */
    size_t points, skipped, failed;
} nn_gradcheck_input;

typedef struct nn_gradcheck_result {
    int ninputs;
    nn_gradcheck_input in[NN_GC_MAX_INPUTS];
    bool ok;                /* no failed point and at least one point checked */
} nn_gradcheck_result;

/* inputs: heap tensors (F32 ones with requires_grad are checked; others, such
 * as int32 labels, are passed through). Returns an error status only when the
 * check could not run; a failed comparison is res->ok == false. */
nn_status nn_gradcheck(nn_gc_fn fn, void *user, int ninputs, nn_tensor *const *inputs,
                       const nn_gradcheck_opts *opts, nn_gradcheck_result *res);

#endif
