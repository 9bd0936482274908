/* Evaluation of a classifier over a batch source: top-1/top-5 accuracy, mean
 * loss and the confusion matrix, in inference mode (no graph, dropout off).
 * With several views per image (10-crop) the softmax is averaged over them. */
#ifndef NN_EVALUATE_H
#define NN_EVALUATE_H

#include "io/dataset.h"
#include "models/sequential.h"

typedef struct nn_eval_result {
    int n;            /* images seen */
    int top1, top5;   /* correct counts */
    double loss;      /* mean -log of the (view-averaged) probability of the label */
} nn_eval_result;

/* Runs every batch of the source's epoch 0 through seq on dev. confusion, if
 * not NULL, is a classes x classes matrix (row: true class) that is added to.
 * progress, if not NULL, is called after each batch. */
nn_status nn_evaluate(nn_seq *seq, nn_device dev, const nn_batch_source *src, int classes, int *confusion,
                      nn_eval_result *res, void (*progress)(int done, int total, void *user), void *user);

/* Any model: forward(ctx, model, x) gives (N, classes) logits for x
 * (N, in_c, in_h, in_w), built of ops on ctx. */
typedef struct nn_eval_model {
    nn_tensor *(*forward)(nn_ctx *ctx, void *model, nn_tensor *x);
    void *model;
    int in_c, in_h, in_w;
} nn_eval_model;

/* nn_evaluate for a model of your own. */
nn_status nn_evaluate_model(const nn_eval_model *m, nn_device dev, const nn_batch_source *src, int classes,
                            int *confusion, nn_eval_result *res, void (*progress)(int done, int total, void *user),
                            void *user);

/* Scores n images from their logits (n * views rows of classes): adds to the
 * top-1/top-5 counts, the summed -log p[label] and the confusion matrix (any
 * may be NULL), p being the softmax averaged over the views, in double. */
void nn_score(const float *logits, int n, int views, int classes, const int32_t *labels, long long *top1,
              long long *top5, double *nll, int *confusion);

/* The rank of label among a row of logits (0: the top; ties to the lower index). */
int nn_rank_of(const float *logits, int classes, int label);

#endif
