/* TEMPORARY stubs so the tree links while this file is written. */
#include "cpu_kernels.h"

nn_status nn_cpu_maxpool_forward(const nn_pool_geom *g, const float *x, float *y, int32_t *argmax)
{
    (void)g;
    (void)x;
    (void)y;
    (void)argmax;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_maxpool_forward: not implemented yet");
}

nn_status nn_cpu_maxpool_backward(const nn_pool_geom *g, const int32_t *argmax, const float *dy,                                   float *dx)
{
    (void)g;
    (void)argmax;
    (void)dy;
    (void)dx;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_maxpool_backward: not implemented yet");
}
