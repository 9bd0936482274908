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

/* The environment switch for TF32 tensor cores in the GPU's GEMM ("1": on,
 * on sm_80 and later; anything else: strict fp32, the default and what the
 * tests compare against). Read by cuda/gemm.cu; the benchmark widens its
 * validation tolerance when it is set. */
#define NN_TF32_ENV "NN_TF32"

/* Fusion switches ("1": on; off by default until measured on a GPU; the
 * README lists them). The bias in the GEMM's epilogue (cuda/gemm.cu); the
 * bias gradient inside the weight-gradient GEMM (cuda/gemm.cu); a ReLU after
 * conv2d or linear applied by their forward kernel (on the GPU, in the
 * GEMM's epilogue), asked for by the sequential builder (models/sequential.c). */
#define NN_FUSE_BIAS_ENV "NN_FUSE_BIAS"
#define NN_FUSE_BIAS_GRAD_ENV "NN_FUSE_BIAS_GRAD"
#define NN_FUSE_RELU_ENV "NN_FUSE_RELU"
/* The environment switch for the implicit-GEMM convolution forward and
 * gradients ("1": tiles gathered straight from x or dy, no column buffer,
 * cuda/conv2d_implicit.cu; anything else: im2col + GEMM, the default and the
 * reference its test compares against). Read by cuda/conv2d_implicit.cu. */
#define NN_CONV_IMPLICIT_ENV "NN_CONV_IMPLICIT"
/* The conv workspace budget on the GPU in MiB (cuda/conv2d.cu; 0: none). */
#define NN_CONV_WS_MB_ENV "NN_CONV_WS_MB"
/* Device-side label checks read at the next sync (cuda/checks.h). */
#define NN_CUDA_LAZY_CHECKS_ENV "NN_CUDA_LAZY_CHECKS"
/* Pinned, multi-buffered uploads (cuda/upload.h). */
#define NN_CUDA_PINNED_ENV "NN_CUDA_PINNED"
/* The training step captured as a CUDA graph (models/train.h). */
#define NN_CUDA_GRAPH_ENV "NN_CUDA_GRAPH"
/* Fashion-MNIST resident on the model's device (`convnet train`, io/resident.h). */
#define NN_RESIDENT_ENV "NN_RESIDENT"

/* Every environment switch above, for X(name): what the benchmark's JSON
 * ("switches") and `convnet train`'s first lines record when set, so a
 * number says how it was made (nn_switches_describe, core/backend.h). */
#define NN_SWITCHES(X)                                                                          \
    X(NN_TF32_ENV) X(NN_FUSE_BIAS_ENV) X(NN_FUSE_BIAS_GRAD_ENV) X(NN_FUSE_RELU_ENV)             \
    X(NN_CONV_IMPLICIT_ENV) X(NN_CONV_WS_MB_ENV) X(NN_CUDA_LAZY_CHECKS_ENV) X(NN_CUDA_PINNED_ENV) \
    X(NN_CUDA_GRAPH_ENV) X(NN_RESIDENT_ENV)

#endif
