/* TEMPORARY stubs so the tree links while this file is written. */
#include "cpu_kernels.h"

nn_status nn_cpu_lrn_forward(const nn_lrn_geom *g, const float *x, float *y, float *scale)
{
    (void)g;
    (void)x;
    (void)y;
    (void)scale;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_lrn_forward: not implemented yet");
}

nn_status nn_cpu_lrn_backward(const nn_lrn_geom *g, const float *x, const float *y,                               const float *scale, const float *dy, float *dx)
{
    (void)g;
    (void)x;
    (void)y;
    (void)scale;
    (void)dy;
    (void)dx;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_lrn_backward: not implemented yet");
}
