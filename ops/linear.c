/* TEMPORARY stubs so the tree links while this file is written. */
#include "cpu_kernels.h"

nn_status nn_cpu_linear_forward(const nn_linear_geom *g, const float *x, const float *w,                                 const float *b, float *y)
{
    (void)g;
    (void)x;
    (void)w;
    (void)b;
    (void)y;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_linear_forward: not implemented yet");
}

nn_status nn_cpu_linear_backward(const nn_linear_geom *g, const float *x, const float *w,                                  const float *dy, float *dx, float *dw, float *db)
{
    (void)g;
    (void)x;
    (void)w;
    (void)dy;
    (void)dx;
    (void)dw;
    (void)db;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_linear_backward: not implemented yet");
}
