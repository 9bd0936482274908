/* dropout: inverted dropout over any float32 shape. Training, 0 < p < 1:
 * keep[i] = nn_dropout_keep(seed, offset, i, p) from the context's generator
 * (core/philox.h, the same bits on every device), y = keep ? x / (1 - p) : 0,
 * and the uint8 mask is kept for backward. Eval mode or p = 0: the identity
 * (a view sharing x's data, gradient passed through). p = 1: zeros, zero
 * gradient. The generator advances by numel only in training with 0 < p < 1,
 * so evaluating (or p in {0, 1}) never shifts the masks later steps draw.
 * A sharded context (data parallelism) draws by global row: see take_counters. */
#include "core/op.h"
#include "core/par.h"
#include "core/philox.h"
#include "ops/cpu_kernels.h"
#include "ops/ops.h"
#include "ops/registry.h"

/* Philox is ~40 integer multiplies per element: threads pay off early. */
#define DROPOUT_PAR_MIN 8192

nn_status nn_cpu_dropout_forward(size_t n, const float *x, float *y, uint8_t *mask, float p,
                                 uint64_t seed, uint64_t offset)
{
    /* x / q, not x * (1/q): the documented formula, bit for bit. At p = 1
     * nothing is kept (uniform draws are < 1), so q = 0 is never divided by. */
    const float q = 1.0f - p;
    NN_PAR_IF(n > DROPOUT_PAR_MIN, "omp parallel for schedule(static)", for (size_t i = 0; i < n; i++) {
        const uint8_t keep = (uint8_t)nn_dropout_keep(seed, offset, i, p);
        mask[i] = keep;
        y[i] = keep ? x[i] / q : 0.0f;
    });
    return NN_OK;
}

nn_status nn_cpu_dropout_forward_at(size_t n, const float *x, float *y, uint8_t *mask, float p, uint64_t seed,
                                    uint64_t offset, const nn_step_vars *sv)
{
    return nn_cpu_dropout_forward(n, x, y, mask, p, seed, sv->rng_offset + offset);
}

nn_status nn_cpu_dropout_backward(size_t n, const uint8_t *mask, float p, const float *dy, float *dx)
{
    if (!dx) return NN_OK;
    const float q = 1.0f - p;
    NN_PAR_IF(n > 65536, "omp parallel for simd", for (size_t i = 0; i < n; i++) dx[i] += mask[i] ? dy[i] / q : 0.0f;);
    return NN_OK;
}

/* The counters of this call's masks. Sharded (nn_ctx_set_shard), row r of
 * this batch is row first + r of the global batch: its counters sit where one
 * process on the global batch draws them, and the generator moves past the
 * whole global batch's. */
static uint64_t take_counters(nn_ctx *ctx, const nn_tensor *x)
{
    nn_rng *r = nn_ctx_rng(ctx);
    int first, total;
    nn_ctx_shard(ctx, &first, &total);
    if (total <= 0 || x->ndim < 1 || x->shape[0] < 1) return nn_rng_take(r, x->numel);
    uint64_t per_row = x->numel / (uint64_t)x->shape[0];
    return nn_rng_take(r, per_row * (uint64_t)total) + per_row * (uint64_t)first;
}

typedef struct dropout_saved {
    float p;
    uint8_t *mask; /* numel bytes on the tensor's device; NULL when p = 1 */
} dropout_saved;

static nn_status dropout_backward(nn_ctx *ctx, nn_node *nd)
{
    (void)ctx;
    float *dx = nn_op_grad_in(nd, 0);
    if (!dx) return NN_OK;
    const dropout_saved *sv = nd->saved;
    if (!sv->mask) return NN_OK; /* p = 1: y is constant, its gradient adds 0 */
    const nn_backend *be = nn_backend_get(nd->out->device);
    return be->dropout_backward(nd->out->numel, sv->mask, sv->p, nn_f32(nd->out->grad), dx);
}

static const nn_op_def dropout_def = {"dropout", dropout_backward};

nn_tensor *nn_dropout(nn_ctx *ctx, nn_tensor *x, float p)
{
    if (nn_op_skip(ctx, "dropout", 1, &x)) return NULL;
    if (x->dtype != NN_F32) return nn_op_fail(ctx, NN_E_ARG, "dropout: input must be float32");
    if (!(p >= 0.0f && p <= 1.0f))
        return nn_op_fail(ctx, NN_E_ARG, "dropout: p = %g must be in [0, 1]", (double)p);
    /* identity: a same-shape view keeps the output wired to x for autograd */
    if (!nn_ctx_training(ctx) || p == 0.0f) return nn_reshape(ctx, x, x->ndim, x->shape);

    const nn_backend *be = nn_op_backend(ctx, "dropout", x->device);
    if (!be) return NULL;
    nn_tensor *y = nn_op_tensor(ctx, NN_F32, x->device, x->ndim, x->shape);
    if (!y) return NULL;
    uint8_t *mask = NULL;
    nn_status s;
    if (p == 1.0f) {
        s = be->memset0(y->data, nn_tensor_bytes(y));
    } else {
        mask = nn_op_dev(ctx, x->device, x->numel);
        if (!mask) return NULL;
        uint64_t off = take_counters(ctx, x), base;
        const nn_step_vars *sv = nn_ctx_step_vars(ctx, x->device, &base);
        const uint64_t seed = nn_ctx_rng(ctx)->seed;
        s = sv ? be->dropout_forward_at(x->numel, nn_f32(x), nn_f32(y), mask, p, seed, off - base, sv)
               : be->dropout_forward(x->numel, nn_f32(x), nn_f32(y), mask, p, seed, off);
    }
    if (s != NN_OK) return nn_op_fail_status(ctx, s);

    if (nn_op_wants_grad(ctx, 1, &x)) {
        dropout_saved *sv = nn_op_host(ctx, sizeof *sv);
        if (!sv) return NULL;
        sv->p = p;
        sv->mask = mask;
        nn_node *nd = nn_op_record(ctx, &dropout_def, y, 1, &x);
        if (!nd) return NULL;
        nd->saved = sv;
        nd->buf = mask;
        nd->buf_bytes = mask ? x->numel : 0;
    }
    return y;
}

/* ---- registry entry (ops/registry.h) ---- */

static nn_tensor *dropout_call(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    float p;
    memcpy(&p, ((const nn_op_case *)user)->args, sizeof p);
    return nn_dropout(ctx, in[0], p);
}

static nn_status dropout_gc_case(nn_op_case *c, nn_rng *r, nn_device dev)
{
    /* training mode; the checker restarts the generator before every
     * evaluation, so all of them see the same mask */
    float p = 0.1f + 0.7f * nn_rng_uniform1(r);
    nn_op_case_set_args(c, &p, sizeof p);
    snprintf(c->about, sizeof c->about, "p %.3g, training", (double)p);
    int xs[4] = {nn_op_pick(r, 1, 2), nn_op_pick(r, 1, 4), nn_op_pick(r, 2, 7), nn_op_pick(r, 2, 7)};
    return nn_op_case_rand(c, "x", r, dev, -1, 1, 4, xs);
}

const nn_op_info nn_op_dropout = {"dropout", dropout_gc_case, dropout_call};
