/* Internal: the CPU kernels each op file defines, gathered into the CPU
 * backend table (core/cpu_backend.c). Signatures follow core/backend.h. */
#ifndef NN_CPU_KERNELS_H
#define NN_CPU_KERNELS_H

#include "../core/backend.h"

size_t nn_cpu_conv2d_workspace(const nn_conv2d_geom *g);
/* Tests only: Winograd wherever a shape allows it (true), or where the cost
 * model picks it (false, the default), so both paths stay tested on small
 * shapes. Process-wide; set it before building a graph, not during one. */
void nn_cpu_conv2d_force_winograd(bool on);
nn_status nn_cpu_conv2d_forward(const nn_conv2d_geom *g, const float *x, const float *w,
                                const float *b, float *y, void *ws);
nn_status nn_cpu_conv2d_backward(const nn_conv2d_geom *g, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw, float *db, void *ws);

nn_status nn_cpu_relu_forward(size_t n, const float *x, float *y);
nn_status nn_cpu_relu_backward(size_t n, const float *y, const float *dy, float *dx);

nn_status nn_cpu_lrn_forward(const nn_lrn_geom *g, const float *x, float *y, float *scale);
nn_status nn_cpu_lrn_backward(const nn_lrn_geom *g, const float *x, const float *y,
                              const float *scale, const float *dy, float *dx);

nn_status nn_cpu_maxpool_forward(const nn_pool_geom *g, const float *x, float *y, int32_t *argmax);
nn_status nn_cpu_maxpool_backward(const nn_pool_geom *g, const int32_t *argmax, const float *dy,
                                  float *dx);

nn_status nn_cpu_dropout_forward(size_t n, const float *x, float *y, uint8_t *mask, float p,
                                 uint64_t seed, uint64_t offset);
nn_status nn_cpu_dropout_backward(size_t n, const uint8_t *mask, float p, const float *dy, float *dx);

nn_status nn_cpu_linear_forward(const nn_linear_geom *g, const float *x, const float *w,
                                const float *b, float *y);
nn_status nn_cpu_linear_backward(const nn_linear_geom *g, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw, float *db);

nn_status nn_cpu_xent_forward(int n, int classes, const float *logits, const int32_t *labels,
                              float *probs, float *loss);
nn_status nn_cpu_xent_backward(int n, int classes, const float *probs, const int32_t *labels,
                               const float *dloss, float *dx);

nn_status nn_cpu_sgd_update(size_t n, float *w, const float *g, float *v, float lr, float momentum,
                            float wd);
nn_status nn_cpu_adam_update(size_t n, float *w, const float *g, float *m, float *v, float lr,
                             float beta1, float beta2, float eps, float wd, int decoupled,
                             float bias1, float bias2);

#endif
