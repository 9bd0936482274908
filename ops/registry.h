/* The op registry: every op with kernels of its own, declared once, next to
 * the op (ops/<name>.c exports `const nn_op_info nn_op_<name>`), and listed
 * once, in NN_REGISTERED_OPS below. What iterates over it: `convnet gradcheck`
 * (tools/cmd_gradcheck.c), the GPU-against-CPU loop of tests/test_cuda.c,
 * tests/test_registry.c, the sequential builder (models/sequential.c: a layer
 * kind names the op it runs) and `convnet bench` (benchmarks/bench_ops.c:
 * its cases keyed by the op's name).
 *
 * How to add an op (say nn_tanh, y = tanh(x)); done once for real this way (all tests passed, then dropped):
 *  1. core/backend_slots.h: one NN_KERNEL line per kernel, e.g.
 *     NN_KERNEL(tanh, nn_status, tanh_forward, (size_t n, const float *x, float *y))
 *     which declares nn_cpu_tanh_forward and nn_cuda_tanh_forward and fills
 *     both backend tables (a kernel left unwritten is a link error). The first
 *     column is the op's registry name: nn_backend_supports() reads it.
 *  2. ops/tanh.c: nn_tanh (checks, nn_op_backend(ctx, "tanh", ...), autograd
 *     wiring), the CPU kernels, and `const nn_op_info nn_op_tanh` (its
 *     gradcheck case: small random inputs drawn from the rng); its prototype
 *     with a one-line formula in ops/ops.h; the file in meson.build.
 *  3. cuda/tanh.cu: the CUDA kernels; the file in cuda/meson.build.
 *  4. ops/registry.h: one word, tanh, at the end of NN_REGISTERED_OPS.
 *  5. tests/test_tanh.c against a float64 reference; its name in
 *     tests/meson.build. `convnet gradcheck`, the GPU-vs-CPU loop and
 *     test_registry then cover it with no further edit.
 * Optional: a layer kind for sequential models (models/sequential.{h,c}: a
 * builder function and one row of its kinds table) and, to time it inside a
 * model, a row in benchmarks/bench_ops.c. */
#ifndef NN_OPS_REGISTRY_H
#define NN_OPS_REGISTRY_H

#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/gradcheck.h"
#include "core/rng.h"
#include "ops/ops.h"

/* Room for an op's parameter struct (nn_conv2d_params and the like). */
#define NN_OP_ARGS_BYTES 64

/* One concrete call of an op: its inputs (heap tensors; F32 ones require
 * grad), their names, and the op's parameters. */
typedef struct nn_op_case {
    const char *names[NN_GC_MAX_INPUTS]; /* "x", "w", ... */
    nn_tensor *in[NN_GC_MAX_INPUTS];
    int n;
    char about[96];                      /* the parameters in words, for tables */
    alignas(max_align_t) unsigned char args[NN_OP_ARGS_BYTES]; /* the op's parameter struct */
} nn_op_case;

typedef struct nn_op_info {
    const char *name; /* as in messages, core/backend_slots.h and `convnet gradcheck NAME` */
    /* A small random case on dev drawn from r, for gradient checks and the
     * GPU-against-CPU test: shapes small enough to check every point in well
     * under a second, parameters varied across draws (strides, groups, ...). */
    nn_status (*gc_case)(nn_op_case *c, nn_rng *r, nn_device dev);
    /* Calls the op on in[] with c's args (user is the nn_op_case *): an nn_gc_fn. */
    nn_tensor *(*call)(nn_ctx *ctx, nn_tensor *const *in, void *user);
} nn_op_info;

/* THE list: every op with an nn_op_<name> entry (defined in ops/<name>.c), in
 * the order tools list them (`convnet gradcheck` derives each op's rng stream
 * from this position, so append). */
#define NN_REGISTERED_OPS(X) X(conv2d) X(relu) X(lrn) X(maxpool2d) X(dropout) X(linear) X(softmax_xent)

#define NN_OP_EXTERN(name) extern const nn_op_info nn_op_##name;
NN_REGISTERED_OPS(NN_OP_EXTERN)
#undef NN_OP_EXTERN

/* The registered ops, in that order; NULL-terminated. */
extern const nn_op_info *const nn_ops[];
/* The number of registered ops. */
int nn_op_count(void);
/* The op named `name`, or NULL. */
const nn_op_info *nn_op_find(const char *name);

/* For gc_case functions: */
/* A uniform integer in [lo, hi]. */
int nn_op_pick(nn_rng *r, int lo, int hi);
/* Appends an F32 input, uniform in [lo, hi), that requires grad. */
nn_status nn_op_case_rand(nn_op_case *c, const char *name, nn_rng *r, nn_device dev, float lo, float hi,
                          int ndim, const int *shape);
/* Appends an input from host data (F32: requires grad; I32: passed through). */
nn_status nn_op_case_host(nn_op_case *c, const char *name, nn_device dev, nn_dtype dt, int ndim,
                          const int *shape, const void *data);
/* Stores the op's parameter struct in c->args (bytes <= NN_OP_ARGS_BYTES). */
void nn_op_case_set_args(nn_op_case *c, const void *args, size_t bytes);
/* Frees the inputs; the case can be filled again. */
void nn_op_case_free(nn_op_case *c);

#endif
