/* A counter-based generator owned by the caller: (seed, offset). Each draw of
 * n numbers uses counters offset .. offset+n-1 and then advances offset by n,
 * so saving the two words and restoring them repeats a run exactly. */
#ifndef NN_RNG_H
#define NN_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct nn_rng {
    uint64_t seed;
    uint64_t offset;
} nn_rng;

static inline nn_rng nn_rng_make(uint64_t seed)
{
    nn_rng r = {seed, 0};
    return r;
}

/* Reserves n counters and returns the first one. */
static inline uint64_t nn_rng_take(nn_rng *r, uint64_t n)
{
    uint64_t o = r->offset;
    r->offset += n;
    return o;
}

/* Host draws (same numbers as the device kernels). */
float nn_rng_uniform1(nn_rng *r);            /* [0, 1) */
uint32_t nn_rng_u32(nn_rng *r);              /* 32 random bits */
uint32_t nn_rng_below(nn_rng *r, uint32_t n); /* uniform in [0, n), n > 0 */
void nn_rng_shuffle(nn_rng *r, int32_t *a, size_t n); /* Fisher-Yates */

#endif
