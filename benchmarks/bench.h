/* Internal to `convnet bench`: what the timing code (bench.c) hands the
 * report writers (bench_report.c): per-op and per-phase results per device. */
#ifndef CONVNET_BENCH_H
#define CONVNET_BENCH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/backend.h"
#include "models/model.h"

#define MAX_OPS 40

typedef struct bench_opts {
    const char *device, *json, *svg, *phase;
    int batch, threads, repeats, size;
    bool ops_only, model_only;
    /* the model, as `convnet train` names it (defaults: the paper's AlexNet
     * and SGD rule; size 0 = the model's own input size) */
    const char *model, *optim;
    float width, dropout;
    int fc, channels, classes;
} bench_opts;

typedef struct op_result {
    char layer[32], shape[48];
    const char *op;            /* the op's registry name (ops/registry.h) */
    double fwd_s, bwd_s;       /* medians */
    double fwd_flop, bwd_flop; /* counted (GEMM ops) */
    double fwd_bytes, bwd_bytes;
    double check_err;          /* worst relative error of the spot check */
} op_result;

typedef struct phase_result {
    bool ran;
    double median_s, min_s, max_s, loss;
    double rss_mb, dev_peak_mb;
} phase_result;

typedef struct dev_result {
    nn_device dev;
    double gemm_gflops;
    int gemm_n;
    op_result ops[MAX_OPS];
    int nops;
    phase_result train, infer;
} dev_result;

/* ---- one op at one layer's shape: bench.c runs it, bench_ops.c describes each op ---- */

typedef struct bench_op bench_op;

typedef struct op_case {
    const bench_op *bo;
    const nn_backend *be;
    nn_conv2d_geom cg;
    nn_lrn_geom lg;
    nn_pool_geom pg;
    nn_linear_geom fg;
    size_t nx, ny, nw, nb;     /* element counts */
    float fan;                 /* w's fan-in: w and b uniform in +-1/sqrt(fan) */
    float p;                   /* dropout */
    int classes;
    bool need_dx;
    float *x, *y, *dy, *dx, *w, *dw, *b, *db, *scale, *probs, *loss, *one;
    int32_t *argmax, *labels;
    uint8_t *mask;
    void *ws;
    size_t ws_bytes;
    float *out;                /* what the spot check samples: y (nout = ny) or the loss */
    size_t nout, nlabels;
} op_case;

/* Host copies of the inputs, for the float64 references. */
typedef struct bench_host {
    const float *x, *w, *b;
    const int32_t *labels;
} bench_host;

/* An op's benchmark case (bench_ops.c). bench.c sets nx, ny (from the
 * layer's shapes), need_dx and be, allocates x, y, dy, dx (and w, dw, b, db
 * when nw > 0) and fills them, then calls setup for the rest. */
/* A float64 reference for one element o of dw and for the bias of its
 * output row: sums and the sums of |terms| (the error's scale). */
typedef struct bench_wgrad {
    double dw, dw_mag, db, db_mag;
    int row;                   /* the output channel / feature of element o */
} bench_wgrad;

struct bench_op {
    const char *op;            /* the registry's name */
    float x_lo;                /* x uniform in [x_lo, 1) */
    /* geometry, nw/nb/fan and counted FLOPs or bytes at layer l's shape,
     * batch n (the loss: l is the last layer) */
    void (*shape)(op_case *c, const nn_layer *l, int n, op_result *res);
    nn_status (*setup)(op_case *c, uint64_t seed); /* its own buffers; NULL: none */
    nn_status (*run)(op_case *c, bool backward);
    /* float64 reference of output o (got: the kernel's value); adds the
     * |terms| to *mag */
    double (*ref)(const op_case *c, const bench_host *h, size_t o, double got, double *mag);
    /* ops with weights: the reference of their weight and bias gradients
     * (x, dy: host copies); NULL: none to check */
    void (*wgrad_ref)(const op_case *c, const float *x, const float *dy, size_t o, bench_wgrad *g);
};

/* The case of a registered op, or NULL when it has none (then not timed). */
const bench_op *bench_op_find(const char *op);
/* Device memory for a case (nothing for 0 bytes). */
nn_status bench_case_alloc(op_case *c, void **p, size_t bytes);

/* The model config the options describe. */
nn_status bench_model_config(const bench_opts *o, nn_model_config *cfg);
/* "alexnet 3x224x224 -> 1000 (width 1, fc 4096)" into buf (for titles). */
const char *bench_model_title(const bench_opts *o, char *buf, size_t n);

/* "AMD EPYC ..." from /proc/cpuinfo into buf. */
void bench_cpu_name(char *buf, size_t n);
/* Counted FLOPs of one AlexNet step at this batch (conv/linear: 2 x MACs forward,
 * twice that backward except the first layer's dX). */
double bench_model_flop(const nn_seq *s, int batch, bool train);
void bench_print_ops(const dev_result *dr, int repeats);
void bench_print_model(const dev_result *drs, int nd, const nn_seq *s, const bench_opts *o);
nn_status bench_write_json(const char *path, const dev_result *drs, int nd, const nn_seq *s, const bench_opts *o);
/* A horizontal bar chart of forward + backward time per layer, one bar per device. */
nn_status bench_write_svg(const char *path, const dev_result *drs, int nd, const bench_opts *o);

#endif
