/* Evaluation of a classifier over a loader: top-1/top-5 accuracy, mean loss
 * and the confusion matrix, in inference mode (no graph, dropout off). */
#ifndef NN_EVALUATE_H
#define NN_EVALUATE_H

#include "../io/dataset.h"
#include "sequential.h"

typedef struct nn_eval_result {
    int n;            /* images seen */
    int top1, top5;   /* correct counts */
    double loss;      /* mean cross-entropy */
} nn_eval_result;

/* Runs every batch of the loader's epoch 0 through seq on dev. confusion, if
 * not NULL, is a classes x classes matrix (row: true class) that is added to.
 * progress, if not NULL, is called after each batch. */
nn_status nn_evaluate(nn_seq *seq, nn_device dev, nn_loader *ld, int classes, int *confusion,
                      nn_eval_result *res, void (*progress)(int done, int total, void *user), void *user);

/* Top-k bookkeeping for one row of logits: is label among the k largest? */
int nn_rank_of(const float *logits, int classes, int label);

#endif
