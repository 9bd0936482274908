/* Classifier evaluation (see evaluate.h). */
#include "evaluate.h"

#include <math.h>
#include <stdlib.h>

int nn_rank_of(const float *logits, int classes, int label)
{
    int rank = 0;
    for (int k = 0; k < classes; k++)
        if (logits[k] > logits[label] || (logits[k] == logits[label] && k < label)) rank++;
    return rank;
}

nn_status nn_evaluate(nn_seq *seq, nn_device dev, nn_loader *ld, int classes, int *confusion,
                      nn_eval_result *res, void (*progress)(int, int, void *), void *user)
{
    res->n = res->top1 = res->top5 = 0;
    res->loss = 0;
    nn_ctx *ctx = nn_ctx_new();
    float *logits = NULL;
    nn_tensor *x = NULL, *y = NULL;
    nn_status s = ctx ? NN_OK : nn_error(NN_E_NOMEM, "evaluate: out of memory");
    if (s == NN_OK) {
        s = nn_loader_start(ld, 0, 0);
        nn_ctx_set_grad(ctx, false);
        nn_ctx_set_training(ctx, false);
    }
    int total = nn_loader_batches(ld);
    for (int b = 0; s == NN_OK; b++) {
        const float *hx;
        const int32_t *hy;
        int n;
        if ((s = nn_loader_next(ld, &hx, &hy, &n)) != NN_OK || n == 0) break;
        int xs[4] = {n, seq->in_c, seq->in_h, seq->in_w}, ys[1] = {n};
        nn_tensor_free(x);
        nn_tensor_free(y);
        x = y = NULL;
        if ((s = nn_tensor_from(&x, NN_F32, dev, 4, xs, hx)) != NN_OK) break;
        if ((s = nn_tensor_from(&y, NN_I32, dev, 1, ys, hy)) != NN_OK) break;
        nn_ctx_reset(ctx);
        nn_tensor *out = nn_seq_forward(ctx, seq, x);
        nn_tensor *loss = nn_softmax_xent(ctx, out, y);
        if (!loss) {
            s = nn_error(nn_ctx_status(ctx), "%s", nn_ctx_errmsg(ctx));
            break;
        }
        if (out->shape[1] != classes) {
            s = nn_error(NN_E_SHAPE, "evaluate: the model has %d outputs for %d classes", out->shape[1], classes);
            break;
        }
        float *l2 = realloc(logits, out->numel * sizeof *logits);
        if (!l2) {
            s = nn_error(NN_E_NOMEM, "evaluate: out of memory");
            break;
        }
        logits = l2;
        float lv;
        if ((s = nn_tensor_read(out, logits)) != NN_OK || (s = nn_tensor_read(loss, &lv)) != NN_OK) break;
        for (int i = 0; i < n; i++) {
            int r = nn_rank_of(logits + (size_t)i * classes, classes, hy[i]);
            res->top1 += r == 0;
            res->top5 += r < 5;
            if (confusion) {
                int pred = 0;
                for (int k = 1; k < classes; k++)
                    if (logits[(size_t)i * classes + k] > logits[(size_t)i * classes + pred]) pred = k;
                confusion[hy[i] * classes + pred]++;
            }
        }
        res->loss += (double)lv * n;
        res->n += n;
        if (progress) progress(b + 1, total, user);
    }
    if (res->n) res->loss /= res->n;
    free(logits);
    nn_tensor_free(x);
    nn_tensor_free(y);
    nn_ctx_free(ctx);
    return s;
}
