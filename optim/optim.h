/* Optimizers and learning-rate schedules.
 *
 * SGD, exactly the paper's rule (docs/alexnet.md), per parameter w with gradient g:
 *     v <- momentum * v - wd * lr * w - lr * g ;   w <- w + v
 * Adam (Kingma & Ba), t = step count from 1:
 *     m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
 *     w <- w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *   with weight decay added to g first (Adam, L2) or applied as
 *   w <- w - lr * wd * w before the step (AdamW, decoupled).
 * Weight decay applies to weights; biases get it only with decay_bias = true
 * (default false: the paper is silent, and decaying biases only hurts). */
#ifndef NN_OPTIM_H
#define NN_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/params.h"
#include "core/step_vars.h"

typedef enum nn_optim_kind { NN_OPT_SGD = 0, NN_OPT_ADAM, NN_OPT_ADAMW } nn_optim_kind;

typedef struct nn_optim_config {
    nn_optim_kind kind;
    float lr;
    float momentum;     /* SGD */
    float weight_decay;
    float beta1, beta2, eps; /* Adam; 0 -> defaults of core/defaults.h */
    bool decay_bias;
} nn_optim_config;

/* The paper's SGD: lr 0.01, momentum 0.9, weight decay 5e-4. */
nn_optim_config nn_optim_paper_sgd(void);
nn_status nn_optim_parse_kind(const char *s, nn_optim_kind *out); /* sgd, adam, adamw */
const char *nn_optim_kind_name(nn_optim_kind k);

typedef struct nn_optim nn_optim;

/* State tensors live on each parameter's device; `params` must outlive it. */
nn_status nn_optim_new(nn_optim **out, const nn_optim_config *cfg, const nn_params *params);
void nn_optim_free(nn_optim *o);
/* One update of every parameter from its .grad (grads are not zeroed). */
nn_status nn_optim_step(nn_optim *o);
/* The same step in two halves, for a step whose scalars are read on the
 * device (core/step_vars.h; a captured CUDA graph): nn_optim_step_vars
 * writes the rate and Adam's bias corrections of the next step (t + 1) into
 * sv; nn_optim_step_at updates every parameter reading them from dev_sv (a
 * copy of sv in the parameters' device memory), and updates nothing when
 * dev_sv->nonfinite is not zero. It does not advance the step count: the
 * caller, once it knows the step was taken, calls nn_optim_set_steps(o,
 * nn_optim_steps(o) + 1). Same results as nn_optim_step, bit for bit. */
void nn_optim_step_vars(const nn_optim *o, nn_step_vars *sv);
nn_status nn_optim_step_at(nn_optim *o, const nn_step_vars *dev_sv);
/* The rate the next nn_optim_step uses (a schedule's, see below). */
void nn_optim_set_lr(nn_optim *o, float lr);
float nn_optim_lr(const nn_optim *o);
int64_t nn_optim_steps(const nn_optim *o);
void nn_optim_set_steps(nn_optim *o, int64_t t);
/* State for checkpoints: each parameter's buffers, named "optim.<param>.v" /
 * ".m"; the named list does not own the tensors. */
const nn_params *nn_optim_state(const nn_optim *o);

/* Learning-rate schedules. const, step and plateau (the paper's: divide by
 * 10 when validation accuracy stops improving) move once per epoch; cosine
 * moves every step, from base_lr down to min_lr at the last step:
 *     lr(t) = min_lr + (base_lr - min_lr) (1 + cos(pi t / T)) / 2
 * which suits short runs where a plateau never shows.
 *
 * A schedule only computes the rate: the caller hands it to the optimizer,
 * which otherwise keeps the rate it was created with. Per step:
 *     nn_optim_set_lr(opt, nn_schedule_step(&sched, t, total_steps));
 *     nn_optim_step(opt);
 * and after each epoch's evaluation:
 *     nn_optim_set_lr(opt, nn_schedule_epoch_end(&sched, epoch, val_acc)); */
typedef enum nn_sched_kind { NN_SCHED_CONST = 0, NN_SCHED_STEP, NN_SCHED_PLATEAU, NN_SCHED_COSINE } nn_sched_kind;

/* Fields may be changed after nn_schedule_make, before the first use; the
 * defaults it sets are given per field. */
typedef struct nn_schedule {
    nn_sched_kind kind;
    float base_lr;     /* the starting rate (lr at step 0 and epoch 1) */
    int step_epochs;   /* STEP: multiply by gamma every step_epochs epochs (default 30; <= 0: never) */
    float gamma;       /* STEP and PLATEAU factor (default 0.1: divide by 10) */
    int patience;      /* PLATEAU: epochs without a new best validation accuracy
                        * before cutting (default 2); the count restarts after a cut */
    float min_lr;      /* floor for every kind, and COSINE's final rate (default base_lr / 1000) */
    /* state (saved in checkpoints) */
    float lr;          /* the current rate */
    float best;        /* best validation accuracy seen (-1 before the first epoch) */
    int bad_epochs;
} nn_schedule;

/* A schedule of `kind` starting at base_lr, with the defaults above. */
nn_schedule nn_schedule_make(nn_sched_kind kind, float base_lr);
nn_status nn_sched_parse_kind(const char *s, nn_sched_kind *out); /* const, step, plateau, cosine */
const char *nn_sched_kind_name(nn_sched_kind k);
/* Called after epoch `epoch` (1-based) with its validation accuracy in [0, 1];
 * returns the learning rate for the next epoch (unchanged for const and
 * cosine; never below min_lr). */
float nn_schedule_epoch_end(nn_schedule *s, int epoch, float val_acc);
/* Called before optimizer step t (0-based) of total_steps in the whole run;
 * returns the rate for that step (changes only for cosine; t >= total_steps
 * gives min_lr). */
float nn_schedule_step(nn_schedule *s, int64_t t, int64_t total_steps);

#endif
