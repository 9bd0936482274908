/* TEMPORARY stubs so the tree links while this file is written. */
#include "cpu_kernels.h"

nn_status nn_cpu_xent_forward(int n, int classes, const float *logits, const int32_t *labels,                               float *probs, float *loss)
{
    (void)n;
    (void)classes;
    (void)logits;
    (void)labels;
    (void)probs;
    (void)loss;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_xent_forward: not implemented yet");
}

nn_status nn_cpu_xent_backward(int n, int classes, const float *probs, const int32_t *labels,                                const float *dloss, float *dx)
{
    (void)n;
    (void)classes;
    (void)probs;
    (void)labels;
    (void)dloss;
    (void)dx;
    return nn_error(NN_E_UNSUPPORTED, "nn_cpu_xent_backward: not implemented yet");
}
