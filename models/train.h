/* Training in the library: the loop `convnet train` runs, for any model.
 *
 * A trainer takes a model (a built nn_seq, or your own forward function and
 * parameter list), a training and an evaluation batch source (io/dataset.h),
 * and a training state (the recipe: optimizer, schedule, batch size, epochs;
 * and the progress: epoch, batch, step, generators). nn_trainer_run then runs
 * the steps of every remaining epoch:
 *     lr from the schedule -> forward -> softmax cross-entropy -> backward
 *     -> after_backward hook -> non-finite count -> optimizer step
 *     -> one read of {count, loss} -> the step counted, or skipped / stopped
 * (the optimizer step is enqueued with the count and does nothing on the
 * device when it is not zero: no host sync inside the step, which is what
 * lets NN_CUDA_GRAPH capture it)
 * evaluates after each epoch, moves the schedule, and writes DIR/last.safetensors
 * (and best.safetensors when test top-1 improves) atomically. A run resumed
 * from last.safetensors (nn_trainer_resume) ends bit for bit where the
 * uninterrupted one would: the data order and augmentation are functions of
 * (seed, epoch, batch), and the dropout generator's position is saved.
 *
 * Progress is reported through a callback (per step, per skipped batch, per
 * epoch); the trainer itself prints nothing but NN_CUDA_GRAPH's one-line
 * notice when a step cannot be captured (below). */
#ifndef NN_TRAIN_H
#define NN_TRAIN_H

#include <signal.h>

#include "core/defaults.h"
#include "io/dataset.h"
#include "models/checkpoint.h"
#include "models/evaluate.h"

/* Your own model: out = forward(ctx, model, x) gives (N, classes) logits for
 * x (N, in_c, in_h, in_w), composed of ops on ctx (errors left on ctx). */
typedef nn_tensor *(*nn_forward_fn)(nn_ctx *ctx, void *model, nn_tensor *x);

typedef struct nn_train_model {
    nn_seq *seq;                 /* a built sequential model; or NULL and the next three */
    nn_forward_fn forward;
    void *model;                 /* passed to forward */
    nn_params *params;           /* what the optimizer updates (each requires grad); the
                                    trainer puts their gradients in one block
                                    (nn_params_flatten_grads), which nn_params_clear frees */
    int in_c, in_h, in_w;        /* input of one image (taken from seq when set) */
    int classes;
    /* stored in checkpoints: */
    const nn_model_config *cfg;  /* a built-in architecture (nn_model_build), or NULL */
    const char *arch;            /* your model's name when cfg is NULL (may be NULL) */
    const char *init;            /* the init used, e.g. nn_init_name(NN_INIT_HE) (may be NULL) */
    const nn_ckpt_meta *meta;    /* your key/values, stored as "user.KEY" (may be NULL) */
    const nn_data_norm *norm;    /* the data's normalization, for predict (may be NULL) */
} nn_train_model;

typedef enum nn_train_event_kind {
    NN_TRAIN_STEP,   /* after each batch (taken or skipped) */
    NN_TRAIN_SKIP,   /* a batch skipped as non-finite (skip_nonfinite), before its STEP event */
    NN_TRAIN_EPOCH,  /* after an epoch's evaluation, before its checkpoints are written */
} nn_train_event_kind;

/* Everything a progress bar, an epoch line or a metrics.jsonl line needs.
 * Rates and times are in seconds of wall-clock (monotonic) time. */
typedef struct nn_train_event {
    nn_train_event_kind kind;
    int epoch;              /* the epoch in progress, 0-based */
    int epochs;             /* of the whole run */
    int batch;              /* batches done in this epoch (after this one) */
    int batches;            /* per epoch */
    int first_batch;        /* where this epoch began in this process (> 0 after a resume) */
    int batch_size;
    int64_t step;           /* optimizer steps so far */
    int64_t run_steps;      /* optimizer steps taken by this process */
    long long skipped;      /* batches skipped as non-finite by this process */
    double loss, acc;       /* mean training loss and top-1 (0..1) over this epoch's taken batches */
    int seen;               /* images those means cover */
    float lr;               /* the rate of the last step (EPOCH: the rate for the next epoch) */
    double images_per_s;    /* this epoch in this process */
    double elapsed;         /* since nn_trainer_run began */
    double epoch_time;      /* since this epoch began (EPOCH: its training time, without evaluation) */
    /* EPOCH only */
    nn_eval_result eval;    /* evaluation on the eval source (n = 0 without one) */
    float test_acc;         /* eval.top1 / eval.n */
    float prev_lr;          /* the rate before the schedule's end-of-epoch move */
    bool best;              /* test_acc improved: best.safetensors will be written */
    /* SKIP only */
    const char *nonfinite;  /* "loss", or the first parameter whose gradient is not finite */
} nn_train_event;

typedef struct nn_trainer nn_trainer;

/* NN_CUDA_GRAPH=1 in the environment (NN_CUDA_GRAPH_ENV, core/defaults.h;
 * read by nn_trainer_new): on the CUDA device, each epoch's third
 * full-batch step is captured as a CUDA graph and the later full-batch steps
 * replay it (same results, bit for bit); needs NN_CUDA_LAZY_CHECKS=1 and no
 * after_backward hook, else (or when the capture fails) the run goes on
 * uncaptured after a one-line notice on stderr. docs/cuda_graph.md. */

typedef struct nn_trainer_config {
    nn_device dev;                  /* where the model lives (NN_CPU = 0 by default) */
    const char *checkpoint_dir;     /* last/best.safetensors go here (created); NULL: none written */
    bool skip_nonfinite;            /* skip a batch whose loss or gradient is not finite
                                       (default: stop with NN_E_NONFINITE naming step, layer, gradient) */
    int64_t stop_after;             /* stop after this many optimizer steps of this run, saving (0: never) */
    /* Set non-zero (by a signal handler, another thread...) to stop: the trainer
     * finishes the step, saves last.safetensors and returns NN_E_INTERRUPTED.
     * Owned by the caller; may be NULL. */
    volatile sig_atomic_t *stop;
    void (*on_event)(const nn_train_event *ev, void *user); /* may be NULL */
    /* Called after each backward pass, before the non-finite check and the
     * optimizer step (e.g. to all-reduce the gradients across processes); a
     * status other than NN_OK ends the run with it. May be NULL. */
    nn_status (*after_backward)(nn_trainer *t, void *user);
    /* Called after each evaluation, before the schedule sees it (e.g. to sum
     * the counts of every process's share of the evaluation data). May be NULL. */
    nn_status (*after_eval)(nn_trainer *t, nn_eval_result *res, void *user);
    void *user;                     /* passed to on_event and the hooks */
} nn_trainer_config;

/* Why nn_trainer_run returned. */
typedef enum nn_train_end {
    NN_TRAIN_DONE = 0,       /* every epoch ran */
    NN_TRAIN_STOPPED_AFTER,  /* stop_after reached (mid-epoch or at an epoch's end) */
    NN_TRAIN_STOP_REQUESTED, /* *stop was set (nn_trainer_run returned NN_E_INTERRUPTED) */
} nn_train_end;

typedef struct nn_train_result {
    nn_train_end end;
    bool mid_epoch;          /* STOPPED_AFTER / STOP_REQUESTED inside an epoch */
    long long skipped;       /* non-finite batches skipped */
    double elapsed;          /* seconds the run took */
    char last_path[4096];    /* the last checkpoint written ("" if none) */
} nn_train_result;

/* Makes a trainer: the optimizer from st->optim over the model's parameters,
 * the step's tensors on cfg->dev. st is used in place (its progress moves as
 * training goes; the caller keeps it alive). train's batches must hold
 * st->batch_size images (a smaller last batch is allowed). eval may be NULL.
 * Nothing is written to disk yet. NN_E_ARG for NULL or inconsistent inputs. */
nn_status nn_trainer_new(nn_trainer **out, const nn_train_model *m, const nn_batch_source *train,
                         const nn_batch_source *eval, nn_train_state *st, const nn_trainer_config *cfg);
void nn_trainer_free(nn_trainer *t);

/* Loads the weights and optimizer state of a checkpoint written by a run with
 * the same recipe (the caller read st from it, e.g. nn_checkpoint_read_config). */
nn_status nn_trainer_resume(nn_trainer *t, const char *path);

/* Runs until the last epoch ends, stop_after steps, or a stop request.
 * NN_OK for the first two (res->end says which), NN_E_INTERRUPTED for a stop
 * request (checkpoint saved), any other status on an error (its message says
 * which step; a non-finite loss names the step, epoch, batch, the first layer
 * whose output is not finite (sequential models) and the first gradient). */
nn_status nn_trainer_run(nn_trainer *t, nn_train_result *res);

/* For hooks and callers: the parameters, the optimizer and the state. */
nn_params *nn_trainer_params(nn_trainer *t);
nn_optim *nn_trainer_optim(nn_trainer *t);
nn_train_state *nn_trainer_state(nn_trainer *t);
/* For after_backward: the context the step ran on (its generator, its shard:
 * core/graph.h), and the step's loss, which the hook may replace (e.g. by the
 * mean over processes) before the non-finite check and the counts see it. */
nn_ctx *nn_trainer_ctx(nn_trainer *t);
float *nn_trainer_step_loss(nn_trainer *t);
/* For after_backward: the step's images and top-1 hits, counted from its
 * logits before the hook runs, which the hook may replace (e.g. by the sums
 * over processes) before the running accuracy sees them. */
typedef struct nn_train_count {
    int images, correct;
} nn_train_count;
nn_train_count *nn_trainer_step_count(nn_trainer *t);
/* Floats the trainer reserves after its flat gradient block
 * (nn_params_flatten_grads' extra), so a hook can sum the step's scalars with
 * the gradients in one call (models/dist_train.c: loss, images, top-1 hits). */
enum { NN_TRAIN_BLOCK_TAIL = 3 };
/* Steps this trainer ran from a captured CUDA graph (NN_CUDA_GRAPH), the
 * capturing ones included: 0 when every step ran plain. */
int64_t nn_trainer_graph_steps(const nn_trainer *t);
/* Forward and backward of one more batch of n images (host x, y) on the
 * trainer's context, adding to the parameters' gradients and its images and
 * top-1 hits to the step's count; *loss its mean loss.
 * For hooks that compute a batch in several slices (models/dist_train.c's
 * one-process check of data parallelism). */
nn_status nn_trainer_grad(nn_trainer *t, const float *hx, const int32_t *hy, int n, float *loss);

/* Removes "NAME.safetensors.tmp.PID" files in dir whose writer process is
 * gone (left by a run killed while saving; the file they replaced is intact). */
void nn_checkpoint_remove_stale(const char *dir);

#endif
