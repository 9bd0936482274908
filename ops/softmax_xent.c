/* softmax_xent: mean softmax cross-entropy of (N, K) float32 logits against
 * (N) int32 labels -> a (1) float32 loss. Per row, with m = max(logits):
 *   lse = m + log(sum_c exp(x_c - m)),  loss_i = lse - x[label_i]
 * (stable for any finite logits: every exponent is <= 0). The probabilities
 * are kept for backward: dx += dloss * (probs - onehot) / N. */
#include <math.h>

#include "core/op.h"
#include "core/par.h"
#include "ops/cpu_kernels.h"
#include "ops/ops.h"
#include "ops/registry.h"

#define XENT_PAR_MIN 65536 /* logits below which threads do not pay */
#define XENT_BLOCKS 64

/* The loss terms of rows [i0, i1) (their softmax into probs on the way), summed in row order. */
static double xent_rows(int i0, int i1, size_t K, const float *logits, const int32_t *labels, float *probs)
{
    double acc = 0.0;
    for (int i = i0; i < i1; i++) {
        const float *x = logits + (size_t)i * K;
        float *pr = probs + (size_t)i * K;
        float m = x[0];
        for (size_t c = 1; c < K; c++) m = x[c] > m ? x[c] : m;
        double sum = 0.0;
        for (size_t c = 0; c < K; c++) {
            pr[c] = expf(x[c] - m);
            sum += pr[c];
        }
        const float inv = (float)(1.0 / sum);
        for (size_t c = 0; c < K; c++) pr[c] *= inv;
        /* from the logits, not -log(probs[label]), which underflows to
         * log(0) once the label's logit is ~100 below the max */
        acc += log(sum) - ((double)x[labels[i]] - (double)m);
    }
    return acc;
}

nn_status nn_cpu_xent_forward(int n, int classes, const float *logits, const int32_t *labels,
                              float *probs, float *loss)
{
    /* labels first, so a bad batch leaves no half-written output behind */
    for (int i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= classes)
            return nn_error(NN_E_RANGE, "softmax_xent: label %d of sample %d is outside [0, %d)",
                            (int)labels[i], i, classes);
    }
    /* Rows go in XENT_BLOCKS fixed blocks whose partial sums are added in
     * block order, so the loss is the same for any thread count. */
    const size_t K = (size_t)classes;
    const int nb = n < XENT_BLOCKS ? n : XENT_BLOCKS;
    double part[XENT_BLOCKS];
    NN_PAR_IF((size_t)n * K > XENT_PAR_MIN, "omp parallel for schedule(static)", for (int b = 0; b < nb; b++) {
        const int i0 = (int)((long long)n * b / nb), i1 = (int)((long long)n * (b + 1) / nb);
        part[b] = xent_rows(i0, i1, K, logits, labels, probs);
    });
    double total = 0.0;
    for (int b = 0; b < nb; b++) total += part[b];
    *loss = n > 0 ? (float)(total / n) : 0.0f;
    return NN_OK;
}

nn_status nn_cpu_xent_backward(int n, int classes, const float *probs, const int32_t *labels,
                               const float *dloss, float *dx)
{
    if (!dx) return NN_OK;
    const size_t K = (size_t)classes;
    const float s = dloss[0] / (float)n;
    /* (one rounding for p - 1 at the label: exact there for p >= 0.5) */
    NN_PAR_IF((size_t)n * K > XENT_PAR_MIN, "omp parallel for schedule(static)", for (int i = 0; i < n; i++) {
        const float *pr = probs + (size_t)i * K;
        float *d = dx + (size_t)i * K;
        const size_t lb = (size_t)labels[i];
        for (size_t c = 0; c < K; c++) d[c] += s * (pr[c] - (c == lb ? 1.0f : 0.0f));
    });
    return NN_OK;
}

typedef struct xent_saved {
    int n, classes;
    float *probs;          /* (N, K) on the tensor's device */
    const int32_t *labels; /* the labels tensor's data: it must outlive backward */
} xent_saved;

static nn_status xent_backward(nn_ctx *ctx, nn_node *nd)
{
    (void)ctx;
    float *dx = nn_op_grad_in(nd, 0);
    if (!dx) return NN_OK;
    const xent_saved *sv = nd->saved;
    const nn_backend *be = nn_backend_get(nd->out->device);
    return be->xent_backward(sv->n, sv->classes, sv->probs, sv->labels, nn_f32(nd->out->grad), dx);
}

static const nn_op_def xent_def = {"softmax_xent", xent_backward};

nn_tensor *nn_softmax_xent(nn_ctx *ctx, nn_tensor *logits, nn_tensor *labels)
{
    nn_tensor *in[2] = {logits, labels};
    if (nn_op_skip(ctx, "softmax_xent", 2, in)) return NULL;
    char ls[64], bs[64];
    if (logits->dtype != NN_F32) return nn_op_fail(ctx, NN_E_ARG, "softmax_xent: logits must be float32");
    if (labels->dtype != NN_I32) return nn_op_fail(ctx, NN_E_ARG, "softmax_xent: labels must be int32");
    if (logits->ndim != 2)
        return nn_op_fail(ctx, NN_E_SHAPE, "softmax_xent: logits must be 2-D (N, K), got %s",
                          nn_shape_str(logits, ls, sizeof ls));
    if (labels->ndim != 1 || labels->shape[0] != logits->shape[0])
        return nn_op_fail(ctx, NN_E_SHAPE, "softmax_xent: labels %s do not match logits %s (need (N))",
                          nn_shape_str(labels, bs, sizeof bs), nn_shape_str(logits, ls, sizeof ls));
    if (!nn_op_same_device(ctx, "softmax_xent", 2, in)) return NULL;
    const nn_backend *be = nn_op_backend(ctx, "softmax_xent", logits->device);
    if (!be) return NULL;

    const int n = logits->shape[0], k = logits->shape[1];
    const int one = 1;
    nn_tensor *loss = nn_op_tensor(ctx, NN_F32, logits->device, 1, &one);
    if (!loss) return NULL;
    float *probs = nn_op_dev(ctx, logits->device, logits->numel * sizeof(float));
    if (!probs) return NULL;
    nn_status s = be->xent_forward(n, k, nn_f32(logits), nn_i32(labels), probs, nn_f32(loss));
    if (s != NN_OK) return nn_op_fail_status(ctx, s);

    /* only the logits are differentiable; labels ride along in `saved` */
    if (nn_op_wants_grad(ctx, 1, &logits)) {
        xent_saved *sv = nn_op_host(ctx, sizeof *sv);
        if (!sv) return NULL;
        *sv = (xent_saved){n, k, probs, nn_i32(labels)};
        nn_node *nd = nn_op_record(ctx, &xent_def, loss, 1, &logits);
        if (!nd) return NULL;
        nd->saved = sv;
    }
    return loss;
}

/* ---- registry entry (ops/registry.h) ---- */

static nn_tensor *xent_call(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    return nn_softmax_xent(ctx, in[0], in[1]);
}

static nn_status xent_gc_case(nn_op_case *c, nn_rng *r, nn_device dev)
{
    int n = nn_op_pick(r, 1, 5), k = nn_op_pick(r, 2, 10);
    int xs[2] = {n, k}, ls[1] = {n};
    int32_t labels[5];
    for (int i = 0; i < n; i++) labels[i] = (int32_t)nn_rng_below(r, (uint32_t)k);
    snprintf(c->about, sizeof c->about, "%d classes", k);
    NN_TRY(nn_op_case_rand(c, "logits", r, dev, -3, 3, 2, xs));
    return nn_op_case_host(c, "labels", dev, NN_I32, 1, ls, labels);
}

const nn_op_info nn_op_softmax_xent = {"softmax_xent", xent_gc_case, xent_call};
