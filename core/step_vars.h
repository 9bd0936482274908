/* The per-step scalars of a training step, read by the kernels through a
 * pointer instead of passed by value (issue 13 (e), docs/cuda_graph.md): a
 * step captured as a CUDA graph keeps its kernel arguments frozen, so the
 * values that change from step to step sit in this struct at a fixed address
 * that the step writes once (one host-to-device copy). On the CPU the kernels
 * read the same struct in host memory.
 *
 * Used by the *_at backend slots (core/backend_slots.h): dropout_forward_at,
 * sgd_update_at, adam_update_at, count_nonfinite_into. */
#ifndef NN_STEP_VARS_H
#define NN_STEP_VARS_H

#include <stdint.h>

typedef struct nn_step_vars {
    float lr;                     /* the optimizer's rate for this step */
    float bias1, bias2;           /* Adam: 1 - beta1^t, 1 - beta2^t, t this step's number from 1 */
    uint32_t reserved;            /* 0 (keeps the 64-bit fields aligned alike on both sides) */
    uint64_t rng_offset;          /* the dropout generator's position when the step began: a
                                     kernel draws counters rng_offset + its by-value offset + i */
    unsigned long long nonfinite; /* written by the step (count_nonfinite_into): the non-finite
                                     values in its loss and gradients; non-zero makes the
                                     *_update_at kernels leave weights and state alone */
} nn_step_vars;

#endif
