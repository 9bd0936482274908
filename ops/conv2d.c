/* TEMPORARY stubs so the tree links while this file is written. */
#include "cpu_kernels.h"

size_t nn_cpu_conv2d_workspace(const nn_conv2d_geom *g)
{
    (void)g;
    return 0;
}

nn_status nn_cpu_conv2d_forward(const nn_conv2d_geom *g, const float *x, const float *w,                                 const float *b, float *y, void *ws)
{
    (void)g;
    (void)x;
    (void)w;
    (void)b;
    (void)y;
    (void)ws;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_conv2d_forward: not implemented yet");
}

nn_status nn_cpu_conv2d_backward(const nn_conv2d_geom *g, const float *x, const float *w,                                  const float *dy, float *dx, float *dw, float *db, void *ws)
{
    (void)g;
    (void)x;
    (void)w;
    (void)dy;
    (void)dx;
    (void)dw;
    (void)db;
    (void)ws;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_conv2d_backward: not implemented yet");
}
