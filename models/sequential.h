/* A sequential network: a list of layers run in order, like PyTorch's
 * nn.Sequential. Parameters get PyTorch-style names ("stage1.0.weight") so
 * checkpoints load in the Python ecosystem. The same list drives the forward
 * pass and `convnet summary` (shapes, parameters, multiply-adds), so the two
 * cannot disagree.
 *
 * Build with nn_seq_init + nn_seq_* layer calls, then nn_seq_build, which
 * infers every shape from the input size (an error names the layer that does
 * not fit) and allocates and initializes the parameters. */
#ifndef NN_SEQUENTIAL_H
#define NN_SEQUENTIAL_H

#include <stdio.h>

#include "core/graph.h"
#include "core/params.h"
#include "ops/ops.h"

#define NN_SEQ_MAX_LAYERS 40

typedef enum nn_layer_kind {
    NN_L_CONV, NN_L_RELU, NN_L_LRN, NN_L_MAXPOOL, NN_L_DROPOUT, NN_L_FLATTEN, NN_L_LINEAR
} nn_layer_kind;

/* Weight initialization: the paper's N(0, 0.01^2) with the per-layer bias
 * constants, or He (N(0, 2/fan_in), biases 0), which trains from scratch much
 * faster without the paper's schedule. */
typedef enum nn_init_kind { NN_INIT_PAPER = 0, NN_INIT_HE } nn_init_kind;
nn_status nn_init_parse(const char *s, nn_init_kind *out); /* "paper", "he" */
const char *nn_init_name(nn_init_kind k);

typedef struct nn_layer {
    nn_layer_kind kind;
    char name[32];          /* "stage1.0": its parameters are name.weight, name.bias */
    int out;                /* conv channels / linear features */
    int k, stride, pad, groups;
    nn_lrn_params lrn;
    float p;                /* dropout */
    float bias_init;        /* the paper's bias constant (0 or 1) */
    /* inferred by nn_seq_build */
    int in_shape[3], out_shape[3]; /* (C, H, W) per image; linear: (F, 1, 1) */
    long long params, macs;        /* per image */
    nn_tensor *w, *b;
} nn_layer;

typedef struct nn_seq {
    int in_c, in_h, in_w;
    nn_layer l[NN_SEQ_MAX_LAYERS];
    int n;
    nn_params params;
    nn_status status;       /* first error while adding layers */
} nn_seq;

/* Starts an empty network for inputs of in_c channels, in_h x in_w pixels
 * (checked by nn_seq_infer/build, not here). Clears *s entirely: call it
 * before the first layer, and never on a built network (nn_seq_free first).
 *
 * The layer calls below append one layer each and return nothing: the first
 * error (more than NN_SEQ_MAX_LAYERS layers, a name of 32 characters or more)
 * is kept in s->status, later calls do nothing, and nn_seq_infer/build return
 * it. Shapes and channel counts are checked by nn_seq_infer/build, whose
 * message names the layer. `name` (not NULL) prefixes the layer's parameter
 * names: name.weight, name.bias. */
void nn_seq_init(nn_seq *s, int in_c, int in_h, int in_w);
/* Convolution: `out` output channels, square k x k kernel, stride (>= 1) and
 * zero padding `pad` on every side, both in pixels; output size
 * (in + 2 pad - k) / stride + 1. groups: 1 for an ordinary convolution, g to
 * split channels into g independent groups (in and out channels must divide
 * by g; 0 means 1). bias_init: the bias value with NN_INIT_PAPER (the paper
 * uses 1 for conv2, conv4, conv5, else 0); NN_INIT_HE sets biases to 0.
 * Weight (out, in/groups, k, k), bias (out). */
void nn_seq_conv(nn_seq *s, const char *name, int out, int k, int stride, int pad, int groups, float bias_init);
/* max(x, 0), no parameters. */
void nn_seq_relu(nn_seq *s, const char *name);
/* Local response normalization across channels with p (NN_LRN_PAPER: the
 * paper's k = 2, n = 5, alpha = 1e-4, beta = 0.75; docs/alexnet.md). */
void nn_seq_lrn(nn_seq *s, const char *name, nn_lrn_params p);
/* Max pooling over k x k windows moved by stride (>= 1) pixels, no padding:
 * output size (in - k) / stride + 1 (k 3, stride 2: AlexNet's overlapping pool). */
void nn_seq_maxpool(nn_seq *s, const char *name, int k, int stride);
/* Inverted dropout: while training, zeroes each element with probability p
 * in [0, 1) and scales the rest by 1 / (1 - p); identity at inference. */
void nn_seq_dropout(nn_seq *s, const char *name, float p);
/* (N, C, H, W) -> (N, C*H*W); must come before the first linear layer, and
 * no conv may follow it. */
void nn_seq_flatten(nn_seq *s, const char *name);
/* Fully connected: `out` features from the flattened input; weight (out, in),
 * bias (out). bias_init as for nn_seq_conv (the paper: 1 for fc6 and fc7,
 * 0 for the last layer). */
void nn_seq_linear(nn_seq *s, const char *name, int out, float bias_init);

/* Infers shapes, allocates parameters on dev and initializes them from rng
 * (weights N(0, 0.01^2) and the layers' bias_init with NN_INIT_PAPER, or
 * N(0, 2 / fan_in) and 0 with NN_INIT_HE). The parameters appear in s->params
 * in layer order (weight, then bias) and belong to s: nn_seq_free releases
 * them; after an error too, nn_seq_free releases what was allocated. */
nn_status nn_seq_build(nn_seq *s, nn_device dev, nn_init_kind init, nn_rng *rng);
/* Shapes and counts only (no allocation): for summaries of any size. */
nn_status nn_seq_infer(nn_seq *s);
void nn_seq_free(nn_seq *s);

/* The registered op (ops/registry.h) a layer runs; NULL for flatten (a view). */
const struct nn_op_info *nn_seq_layer_op(const nn_layer *l);

/* One layer applied to h (what the forward pass does for each layer). */
nn_tensor *nn_seq_step(nn_ctx *ctx, const nn_layer *l, nn_tensor *h);

/* x (N, in_c, in_h, in_w) -> the last layer's output. */
nn_tensor *nn_seq_forward(nn_ctx *ctx, nn_seq *s, nn_tensor *x);
/* Whether nn_seq_forward runs layer i and the relu after it as one op
 * (nn_conv2d_relu, nn_linear_relu): NN_FUSE_RELU=1 in the environment (read
 * at each call) and layer i a conv or linear layer followed by a relu. */
bool nn_seq_fuses_relu(const nn_seq *s, int i);

/* For a run that went non-finite: the first layer whose parameters or whose
 * output on x (inference mode) hold a NaN or Inf, or NULL when none does. */
const char *nn_seq_find_nonfinite(nn_seq *s, nn_tensor *x);

long long nn_seq_params(const nn_seq *s);
long long nn_seq_macs(const nn_seq *s);
void nn_seq_print_summary(const nn_seq *s, FILE *f);

/* Moves every parameter (and its grad) to dev, in place. */
nn_status nn_seq_to(nn_seq *s, nn_device dev);

#endif
