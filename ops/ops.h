/* The ops a network is composed of. Each builds its output on the context's
 * arena and records itself for nn_backward (see core/graph.h); on error it
 * returns NULL and leaves the status on the context.
 *
 * Shapes: images are NCHW; conv weights (O, C/groups, KH, KW); linear weights
 * (O, I) as in PyTorch; labels are int32 of shape (N). */
#ifndef NN_OPS_H
#define NN_OPS_H

#include "core/backend.h" /* the geometry structs */
#include "core/defaults.h"
#include "core/graph.h"
#include "core/tensor.h"

/* Zero fields take the defaults: stride 1, padding 0, groups 1. */
typedef struct nn_conv2d_params {
    int stride_h, stride_w;
    int pad_h, pad_w;
    int groups;
} nn_conv2d_params;

/* y[n,o,i,j] = b[o] + sum_{c in group(o), p, q} w[o,c,p,q] x[n,c, i*sh+p-ph, j*sw+q-pw]
 * x (N,C,H,W), w (O,C/groups,KH,KW), b (O) or NULL -> y (N,O,OH,OW),
 * OH = (H + 2ph - KH)/sh + 1. C and O must both divide by groups. */
nn_tensor *nn_conv2d(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b, nn_conv2d_params p);
/* conv2d's shape rule alone, for planning (the sequential builder): the
 * shapes of x (N,C,H,W) and w (O,C/groups,KH,KW) and p give the geometry (the
 * output is N x O x g->oh x g->ow), or the NN_E_SHAPE / NN_E_ARG status and
 * message nn_conv2d would give. */
nn_status nn_conv2d_shape(const int x[4], const int w[4], nn_conv2d_params p, nn_conv2d_geom *g);
/* relu(conv2d(x, w, b, p)) with the ReLU applied by the conv's forward kernel
 * (on the GPU in its GEMM's epilogue, one pass over y fewer); the graph holds
 * both ops, the relu over the conv's memory as with nn_relu_. The same
 * numbers as nn_relu_(ctx, nn_conv2d(...)), bit for bit. */
nn_tensor *nn_conv2d_relu(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b, nn_conv2d_params p);

/* y = max(x, 0); the gradient at exactly 0 is taken as 0. */
nn_tensor *nn_relu(nn_ctx *ctx, nn_tensor *x);
/* The same, overwriting x's memory (x's values are relu(x) afterwards). Only
 * where nothing reads x's old values again: not the forward's later ops, and
 * not x's producer's backward (conv2d and linear read their inputs, never
 * their output, so a relu right after one of them may overwrite). */
nn_tensor *nn_relu_(nn_ctx *ctx, nn_tensor *x);

/* Local response normalization across channels, the paper's formula:
 *   y[c] = x[c] / (k + alpha * sum_{j=max(0,c-size/2)}^{min(C-1,c+size/2)} x[j]^2)^beta
 * NOTE: alpha is NOT divided by size. PyTorch's nn.LocalResponseNorm and Caffe
 * divide it by size, so ours with alpha equals theirs with size*alpha. */
typedef struct nn_lrn_params {
    int size;
    float alpha, beta, k;
} nn_lrn_params;
#define NN_LRN_PAPER ((nn_lrn_params){NN_LRN_SIZE, NN_LRN_ALPHA, NN_LRN_BETA, NN_LRN_K})
nn_tensor *nn_lrn(nn_ctx *ctx, nn_tensor *x, nn_lrn_params p);

/* Max pooling over KHxKW windows; stride 0 means stride = kernel; padding
 * counts as -inf. Ties: the first maximum in row-major window order (the
 * smallest h, then the smallest w) takes the whole gradient. */
typedef struct nn_pool_params {
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
} nn_pool_params;
nn_tensor *nn_maxpool2d(nn_ctx *ctx, nn_tensor *x, nn_pool_params p);
/* maxpool2d's shape rule alone: x's shape (N,C,H,W) and p give the geometry
 * (output N x C x g->oh x g->ow), or the status and message nn_maxpool2d
 * would give. */
nn_status nn_maxpool2d_shape(const int x[4], nn_pool_params p, nn_pool_geom *g);

/* Inverted dropout: in training y = x * keep / (1 - p) with keep drawn from the
 * context's generator (keep iff uniform >= p); identity in eval mode or p = 0;
 * all zeros for p = 1. 0 <= p <= 1. */
nn_tensor *nn_dropout(nn_ctx *ctx, nn_tensor *x, float p);

/* y = x w^T + b: x (N, I), w (O, I), b (O) or NULL -> y (N, O). */
nn_tensor *nn_linear(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b);
/* relu(linear(x, w, b)), the ReLU fused as in nn_conv2d_relu. */
nn_tensor *nn_linear_relu(nn_ctx *ctx, nn_tensor *x, nn_tensor *w, nn_tensor *b);

/* Mean over the batch of -log softmax(logits)[label]: logits (N, K) F32,
 * labels (N) I32 in [0, K) -> a scalar (shape (1)). Gradient (softmax - onehot)/N. */
nn_tensor *nn_softmax_xent(nn_ctx *ctx, nn_tensor *logits, nn_tensor *labels);

/* y = a + b, same shapes. */
nn_tensor *nn_add(nn_ctx *ctx, nn_tensor *a, nn_tensor *b);

/* Same data, new shape (numel must match); one -1 entry is inferred. */
nn_tensor *nn_reshape(nn_ctx *ctx, nn_tensor *x, int ndim, const int *shape);
/* (N, ...) -> (N, rest). */
nn_tensor *nn_flatten(nn_ctx *ctx, nn_tensor *x);

#endif
