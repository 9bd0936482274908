/* The training record: one JSON object per line in DIR/metrics.jsonl, appended
 * as training goes (a resumed run appends to the same file), and its picture
 * DIR/curves.svg: loss and top-1 accuracy against epochs, train and test.
 *
 * A line (keys in this order; a value not measured is null):
 *   {"kind":"epoch","split":"test","epoch":3,"step":1407,"loss":0.4123,
 *    "top1":0.8512,"top5":0.9973,"lr":0.01,"images_per_s":512.3,"elapsed_s":123.4}
 * kind "epoch": the whole epoch `epoch` (1-based, the epoch just completed);
 * kind "step": the last few batches of training, logged every N steps during
 * epoch `epoch`. step: optimizer steps done so far; top1, top5: fractions in
 * [0, 1]; lr: the learning rate used; elapsed_s: seconds since the run
 * started (a resumed run continues the count of the run it resumes). */
#ifndef NN_METRICS_H
#define NN_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef enum nn_metrics_kind { NN_METRICS_EPOCH = 0, NN_METRICS_STEP } nn_metrics_kind;
typedef enum nn_metrics_split { NN_METRICS_TRAIN = 0, NN_METRICS_TEST } nn_metrics_split;

typedef struct nn_metrics_row {
    nn_metrics_kind kind;
    nn_metrics_split split;
    int epoch;
    int64_t step;
    /* NAN (or any non-finite value): not measured, written as null */
    double loss, top1, top5, lr, images_per_s, elapsed_s;
} nn_metrics_row;

/* A row with every measurement NAN. */
nn_metrics_row nn_metrics_empty(nn_metrics_kind kind, nn_metrics_split split, int epoch, int64_t step);

/* The row as one JSON line ending in '\n' into buf; returns the length, or
 * the length it would need (>= n: truncated), like snprintf. 512 bytes
 * always suffice. */
#define NN_METRICS_LINE_MAX 512
int nn_metrics_format(const nn_metrics_row *r, char *buf, size_t n);

/* Appends the row to path (created if missing) and flushes it to the kernel
 * (no fsync: losing the last line in a power cut is acceptable, a stall per
 * epoch is not). A previous line cut short by a crash is ended first, so it
 * cannot swallow this one. */
nn_status nn_metrics_append(const char *path, const nn_metrics_row *r);

/* Reads every line of path; *rows (malloc'd, the caller frees) gets the
 * lines that parse, *bad (may be NULL) the count of those that do not (a line
 * cut short by a crash): they are skipped. Missing keys read as NAN (numbers)
 * or 0 (epoch, step). Errors: the file cannot be read. */
nn_status nn_metrics_read(const char *path, nn_metrics_row **rows, int *n, int *bad);

/* Draws the epoch rows as an SVG (two panels: loss, top-1 accuracy; train
 * solid, test dashed; axes with ticks and a legend), written atomically.
 * When a (split, epoch) appears twice (a run resumed from an earlier
 * checkpoint re-ran that epoch), the later row wins. title may be NULL. */
nn_status nn_metrics_svg(const nn_metrics_row *rows, int n, const char *title, const char *path);

/* DIR/metrics.jsonl -> DIR/curves.svg; *bad as nn_metrics_read. A file
 * with no metrics line is NN_E_FORMAT, and curves.svg is not touched. */
nn_status nn_metrics_plot(const char *dir, int *bad);

/* ---- the logger: a ready-made trainer event handler (models/train.h) ----
 * Writes DIR/metrics.jsonl as a run goes: a "step" train line every
 * log_every optimizer steps (loss and top-1 over the batches since the last
 * such line; top5 null: the trainer does not measure it on training batches),
 * and at each epoch's end an "epoch" train line (the epoch's batches run by
 * this process) and an "epoch" test line (the evaluation; images_per_s null),
 * then redraws DIR/curves.svg.
 *
 * A resumed run continues the file: opening drops the lines of steps after
 * start_step (steps the checkpoint being resumed had not reached, about to be
 * run again: a crash after logging them, or a resume from an earlier
 * checkpoint), so every step and epoch appears once and in order; elapsed_s
 * continues from the last line kept. A fresh run (start_step 0) starts the
 * file anew.
 *
 *     nn_metrics_logger *log;
 *     nn_metrics_logger_open(&log, dir, 50, st.step);
 *     cfg.on_event = nn_metrics_on_event, cfg.user = log;   (or call it from yours)
 *     ... nn_trainer_run ...
 *     nn_metrics_logger_free(log);
 *
 * The handler cannot return a status: a failed write or plot is kept (the
 * first one; training goes on) and read with nn_metrics_logger_status. */
typedef struct nn_metrics_logger nn_metrics_logger;
struct nn_train_event;

/* dir must exist or be creatable by the trainer before the first event
 * (nn_trainer_run creates its checkpoint_dir). log_every 0: no step lines.
 * *dropped (may be NULL): lines removed as described above. Errors: the file
 * exists and cannot be read or rewritten; NN_E_ARG for a NULL dir or a
 * negative log_every. */
nn_status nn_metrics_logger_open(nn_metrics_logger **out, const char *dir, int log_every, int64_t start_step,
                                 int *dropped);
void nn_metrics_logger_free(nn_metrics_logger *l);
/* The trainer's on_event: user is the logger. */
void nn_metrics_on_event(const struct nn_train_event *ev, void *user);
/* NN_OK, or the first failure so far with its message in msg (may be NULL). */
nn_status nn_metrics_logger_status(const nn_metrics_logger *l, const char **msg);

#endif
