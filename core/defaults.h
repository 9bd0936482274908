/* Constants shared by the CPU code and the CUDA kernels: defined once here so
 * the two backends cannot drift apart. */
#ifndef NN_DEFAULTS_H
#define NN_DEFAULTS_H

/* LRN, the paper's values (docs/alexnet.md): k = 2, n = 5, alpha = 1e-4, beta = 0.75. */
#define NN_LRN_SIZE 5
#define NN_LRN_ALPHA 1e-4f
#define NN_LRN_BETA 0.75f
#define NN_LRN_K 2.0f

/* Adam's defaults (Kingma & Ba). */
#define NN_ADAM_BETA1 0.9f
#define NN_ADAM_BETA2 0.999f
#define NN_ADAM_EPS 1e-8f

/* Paper's SGD: momentum 0.9, weight decay 5e-4. */
#define NN_SGD_MOMENTUM 0.9f
#define NN_SGD_WEIGHT_DECAY 5e-4f

#endif
