/* Classifier evaluation (see evaluate.h). */
#include "models/evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int nn_rank_of(const float *logits, int classes, int label)
{
    int rank = 0;
    for (int k = 0; k < classes; k++)
        if (logits[k] > logits[label] || (logits[k] == logits[label] && k < label)) rank++;
    return rank;
}

void nn_score(const float *logits, int n, int views, int classes, const int32_t *labels, long long *top1,
              long long *top5, double *nll, int *confusion)
{
    double *p = malloc((size_t)classes * sizeof *p);
    if (!p) return;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < classes; k++) p[k] = 0;
        for (int v = 0; v < views; v++) {
            const float *z = logits + ((size_t)i * views + v) * classes;
            double mx = z[0], sum = 0;
            for (int k = 1; k < classes; k++) mx = z[k] > mx ? z[k] : mx;
            for (int k = 0; k < classes; k++) sum += exp((double)z[k] - mx);
            for (int k = 0; k < classes; k++) p[k] += exp((double)z[k] - mx) / sum / views;
        }
        int lab = labels[i], rank = 0, pred = 0;
        for (int k = 0; k < classes; k++) {
            if (p[k] > p[lab] || (p[k] == p[lab] && k < lab)) rank++;
            if (p[k] > p[pred]) pred = k;
        }
        if (top1) *top1 += rank == 0;
        if (top5) *top5 += rank < 5;
        if (nll) *nll += -log(p[lab] > 1e-300 ? p[lab] : 1e-300);
        if (confusion) confusion[lab * classes + pred]++;
    }
    free(p);
}

static nn_tensor *seq_forward(nn_ctx *ctx, void *seq, nn_tensor *x) { return nn_seq_forward(ctx, seq, x); }

nn_status nn_evaluate(nn_seq *seq, nn_device dev, const nn_batch_source *src, int classes, int *confusion,
                      nn_eval_result *res, void (*progress)(int, int, void *), void *user)
{
    if (!seq) return nn_error(NN_E_ARG, "evaluate: NULL model");
    nn_eval_model m = {.forward = seq_forward, .model = seq, .in_c = seq->in_c, .in_h = seq->in_h, .in_w = seq->in_w};
    return nn_evaluate_model(&m, dev, src, classes, confusion, res, progress, user);
}

nn_status nn_evaluate_model(const nn_eval_model *m, nn_device dev, const nn_batch_source *src, int classes,
                            int *confusion, nn_eval_result *res, void (*progress)(int, int, void *), void *user)
{
    if (!m || !m->forward || !src || !res) return nn_error(NN_E_ARG, "evaluate: NULL model, source or result");
    memset(res, 0, sizeof *res);
    nn_ctx *ctx = nn_ctx_new();
    if (!ctx) return nn_error(NN_E_NOMEM, "evaluate: out of memory");
    nn_ctx_set_grad(ctx, false);
    nn_ctx_set_training(ctx, false);
    int views = src->views;
    long long top1 = 0, top5 = 0;
    double nll = 0;
    float *logits = NULL;
    nn_tensor *x = NULL;
    nn_status s = src->start(src->impl, 0, 0);
    for (int b = 0; s == NN_OK; b++) {
        const float *hx;
        const int32_t *hy;
        int n;
        if ((s = src->next(src->impl, &hx, &hy, &n)) != NN_OK || n == 0) break;
        int xs[4] = {n * views, m->in_c, m->in_h, m->in_w};
        if (!x || x->shape[0] != xs[0]) { /* one allocation unless the last batch is partial */
            nn_tensor_free(x);
            x = NULL;
            if ((s = nn_tensor_new(&x, NN_F32, dev, 4, xs)) != NN_OK) break;
        }
        if ((s = nn_tensor_write(x, hx)) != NN_OK) break;
        nn_ctx_reset(ctx);
        nn_tensor *out = m->forward(ctx, m->model, x);
        if (!out) {
            s = nn_ctx_status(ctx);
            break;
        }
        if (out->ndim != 2 || out->shape[1] != classes) {
            s = nn_error(NN_E_SHAPE, "evaluate: the model has %d outputs for %d classes", out->shape[1], classes);
            break;
        }
        float *l2 = realloc(logits, out->numel * sizeof *logits);
        if (!l2) {
            s = nn_error(NN_E_NOMEM, "evaluate: out of memory");
            break;
        }
        logits = l2;
        if ((s = nn_tensor_read(out, logits)) != NN_OK) break;
        nn_score(logits, n, views, classes, hy, &top1, &top5, &nll, confusion);
        res->n += n;
        if (progress) progress(b + 1, src->batches, user);
    }
    res->top1 = (int)top1;
    res->top5 = (int)top5;
    res->loss = res->n ? nll / res->n : 0;
    free(logits);
    nn_tensor_free(x);
    nn_ctx_free(ctx);
    return s;
}
