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

typedef enum op_kind { K_CONV, K_RELU, K_LRN, K_POOL, K_DROPOUT, K_LINEAR, K_XENT } op_kind;
extern const char *const bench_kind_names[];

typedef struct op_result {
    char layer[32], shape[48];
    op_kind kind;
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
