/* Internal: the CPU kernels each op file defines (nn_cpu_<slot>). Their
 * prototypes are generated in core/backend.h from the one slot list,
 * core/backend_slots.h; this header only keeps the op files' include. */
#ifndef NN_CPU_KERNELS_H
#define NN_CPU_KERNELS_H

#include "core/backend.h"

/* Tests and measurements only: Winograd F(m x m, r x r) wherever a shape
 * allows it (m >= 1; the largest m the points allow when m is too large), or
 * what the cost model picks (m = 0, the default), or im2col + GEMM
 * (m < 0), so every path stays tested
 * on small shapes. Process-wide; set it before building a graph, not during one. */
void nn_cpu_conv2d_force_winograd(int m);

/* Tests only: the input tile n = m + r - 1 of the Winograd algorithm the
 * kernels use for g now (0: im2col + GEMM), since its rounding error grows
 * with n. */
int nn_cpu_conv2d_wino_points(const nn_conv2d_geom *g);

/* On a static function holding an element-wise loop: an AVX2 copy besides
 * the baseline (SSE2) one, picked when the library loads, so the loop runs
 * twice as many lanes where the machine has AVX2 (the build has no -march).
 * Bit-exact across copies: GCC in ISO C mode (-std=c11) does not contract
 * a*b + c into an FMA (and "avx2" alone has no FMA), and every lane does the
 * scalar operations in the scalar order. Not on OpenMP regions themselves
 * (their outlined bodies are not cloned): call the function inside one. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NN_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NN_CPU_CLONES
#endif

#endif
