/* TEMPORARY stubs so the tree links while this file is written. */
#include "../ops/cpu_kernels.h"

nn_status nn_cpu_sgd_update(size_t n, float *w, const float *g, float *v, float lr, float momentum,                             float wd)
{
    (void)n;
    (void)w;
    (void)g;
    (void)v;
    (void)lr;
    (void)momentum;
    (void)wd;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_sgd_update: not implemented yet");
}

nn_status nn_cpu_adam_update(size_t n, float *w, const float *g, float *m, float *v, float lr,                              float beta1, float beta2, float eps, float wd, int decoupled,                              float bias1, float bias2)
{
    (void)n;
    (void)w;
    (void)g;
    (void)m;
    (void)v;
    (void)lr;
    (void)beta1;
    (void)beta2;
    (void)eps;
    (void)wd;
    (void)decoupled;
    (void)bias1;
    (void)bias2;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_adam_update: not implemented yet");
}
