/* Philox4x32-10 (Salmon et al., SC'11) and the draws built on it, written once
 * for C and CUDA: the CPU backend and the GPU kernels include this same file,
 * so a given (seed, offset, index) yields the same bits on every device and
 * for every thread count. Element i of a draw uses counter block offset + i. */
#ifndef NN_PHILOX_H
#define NN_PHILOX_H

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define NN_HD __host__ __device__ __forceinline__
#else
#define NN_HD static inline
#endif

typedef struct { uint32_t v[4]; } nn_philox_out;

NN_HD uint32_t nn_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* The full generator: a 128-bit counter and a 64-bit key (k0, k1). */
NN_HD nn_philox_out nn_philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                  uint32_t k1)
{
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = nn_mulhilo32(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = nn_mulhilo32(0xCD9E8D57u, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    nn_philox_out o = {{c0, c1, c2, c3}};
    return o;
}

/* One block for a 64-bit counter (upper half zero) and a 64-bit key. */
NN_HD nn_philox_out nn_philox(uint64_t counter, uint64_t key)
{
    return nn_philox4x32((uint32_t)counter, (uint32_t)(counter >> 32), 0, 0, (uint32_t)key,
                         (uint32_t)(key >> 32));
}

/* Uniform in [0, 1) with 24 random bits: exact in float on every device. */
NN_HD float nn_u01(uint32_t bits) { return (float)(bits >> 8) * (1.0f / 16777216.0f); }

NN_HD float nn_rand_uniform(uint64_t seed, uint64_t offset, uint64_t i)
{
    return nn_u01(nn_philox(offset + i, seed).v[0]);
}

/* Standard normal by Box-Muller, computed in double and rounded once so that
 * the host libm and the CUDA one agree to the last float bit in practice. */
NN_HD float nn_rand_normal(uint64_t seed, uint64_t offset, uint64_t i)
{
    nn_philox_out o = nn_philox(offset + i, seed);
    double u1 = ((double)(o.v[0] >> 8) + 1.0) * (1.0 / 16777216.0); /* (0, 1] */
    double u2 = (double)(o.v[1] >> 8) * (1.0 / 16777216.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Dropout keeps element i when its uniform draw is >= p. */
NN_HD int nn_dropout_keep(uint64_t seed, uint64_t offset, uint64_t i, float p)
{
    return nn_rand_uniform(seed, offset, i) >= p;
}

#endif
