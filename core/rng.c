/* Host-side draws on the Philox generator of philox.h. */
#include "core/rng.h"

#include <math.h>

#include "core/philox.h"

float nn_rng_uniform1(nn_rng *r) { return nn_rand_uniform(r->seed, nn_rng_take(r, 1), 0); }

uint32_t nn_rng_u32(nn_rng *r) { return nn_philox(nn_rng_take(r, 1), r->seed).v[0]; }

uint32_t nn_rng_below(nn_rng *r, uint32_t n)
{
    /* Multiply-shift (Lemire): bias below 2^-32 * n, deterministic. */
    uint64_t x = nn_rng_u32(r);
    return (uint32_t)((x * n) >> 32);
}

void nn_rng_shuffle(nn_rng *r, int32_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = nn_rng_below(r, (uint32_t)i);
        int32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}
