/* TEMPORARY stubs so the tree links while this file is written. */
#include "cpu_kernels.h"

nn_status nn_cpu_dropout_forward(size_t n, const float *x, float *y, uint8_t *mask, float p,                                  uint64_t seed, uint64_t offset)
{
    (void)n;
    (void)x;
    (void)y;
    (void)mask;
    (void)p;
    (void)seed;
    (void)offset;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_dropout_forward: not implemented yet");
}

nn_status nn_cpu_dropout_backward(size_t n, const uint8_t *mask, float p, const float *dy, float *dx)
{
    (void)n;
    (void)mask;
    (void)p;
    (void)dy;
    (void)dx;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_dropout_backward: not implemented yet");
}
