/* The metrics logger (see metrics.h): trainer events (models/train.h) into
 * metrics.jsonl lines, and the curves redrawn after every epoch. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/atomic.h"
#include "models/metrics.h"
#include "models/train.h"

struct nn_metrics_logger {
    char dir[4096], path[4200];
    int every;
    double base;          /* elapsed_s where this process's run begins (a resume continues the count) */
    int64_t last_logged;  /* step of the last step line: a skipped batch does not log it twice */
    /* the window of the next step line, as cumulative sums of the epoch in progress */
    int win_epoch, win_seen;
    double win_loss, win_hit;
    nn_status status;
    char msg[1024];
};

typedef struct kept {
    const nn_metrics_row *rows;
    int n;
} kept;

static nn_status write_rows(FILE *fp, const char *path, void *user)
{
    const kept *k = user;
    char line[NN_METRICS_LINE_MAX];
    for (int i = 0; i < k->n; i++) {
        int len = nn_metrics_format(&k->rows[i], line, sizeof line);
        if (fwrite(line, 1, (size_t)len, fp) != (size_t)len)
            return nn_error(NN_E_IO, "metrics: cannot write %s: %s", path, strerror(errno));
    }
    return NN_OK;
}

/* Drops the rows of steps after start_step (all rows for a fresh run) by
 * rewriting the file, and sets the elapsed base from the rows kept. */
static nn_status continue_file(nn_metrics_logger *l, int64_t start_step, int *dropped)
{
    FILE *probe = fopen(l->path, "r");
    if (!probe) return errno == ENOENT ? NN_OK : nn_error(NN_E_IO, "metrics: cannot open %s: %s", l->path, strerror(errno));
    fclose(probe);
    nn_metrics_row *rows = NULL;
    int n = 0, bad = 0, keep = 0;
    NN_TRY(nn_metrics_read(l->path, &rows, &n, &bad));
    for (int i = 0; i < n; i++)
        if (start_step > 0 && rows[i].step <= start_step) {
            if (isfinite(rows[i].elapsed_s) && rows[i].elapsed_s > l->base) l->base = rows[i].elapsed_s;
            rows[keep++] = rows[i];
        }
    nn_status s = NN_OK;
    if (keep < n || bad) {
        kept k = {rows, keep};
        s = nn_write_atomic(l->path, write_rows, &k);
    }
    if (dropped) *dropped = n - keep + bad;
    free(rows);
    return s;
}

nn_status nn_metrics_logger_open(nn_metrics_logger **out, const char *dir, int log_every, int64_t start_step,
                                 int *dropped)
{
    if (dropped) *dropped = 0;
    if (!out || !dir || log_every < 0)
        return nn_error(NN_E_ARG, "metrics logger: %s", !out || !dir ? "NULL output or folder" : "log_every < 0");
    *out = NULL;
    nn_metrics_logger *l = calloc(1, sizeof *l);
    if (!l) return nn_error(NN_E_NOMEM, "metrics logger: out of memory");
    snprintf(l->dir, sizeof l->dir, "%s", dir);
    snprintf(l->path, sizeof l->path, "%s/metrics.jsonl", dir);
    l->every = log_every;
    l->last_logged = start_step;
    l->win_epoch = -1;
    nn_status s = continue_file(l, start_step, dropped);
    if (s != NN_OK) {
        free(l);
        return s;
    }
    *out = l;
    return NN_OK;
}

void nn_metrics_logger_free(nn_metrics_logger *l) { free(l); }

nn_status nn_metrics_logger_status(const nn_metrics_logger *l, const char **msg)
{
    if (msg) *msg = l && l->status != NN_OK ? l->msg : "";
    return l ? l->status : NN_E_ARG;
}

/* Keeps the first failure; training goes on. */
static void keep_status(nn_metrics_logger *l, nn_status s)
{
    if (s == NN_OK || l->status != NN_OK) return;
    l->status = s;
    snprintf(l->msg, sizeof l->msg, "%s", nn_errmsg());
}

static void append(nn_metrics_logger *l, const nn_metrics_row *r) { keep_status(l, nn_metrics_append(l->path, r)); }

static void on_step(nn_metrics_logger *l, const nn_train_event *ev)
{
    if (ev->epoch != l->win_epoch) { /* the trainer's means restart with each epoch */
        l->win_epoch = ev->epoch;
        l->win_seen = 0, l->win_loss = l->win_hit = 0;
    }
    if (!l->every || ev->step % l->every != 0 || ev->step == l->last_logged || ev->seen <= l->win_seen) return;
    double loss = ev->loss * ev->seen, hit = ev->acc * ev->seen;
    int n = ev->seen - l->win_seen;
    nn_metrics_row r = nn_metrics_empty(NN_METRICS_STEP, NN_METRICS_TRAIN, ev->epoch + 1, ev->step);
    r.loss = (loss - l->win_loss) / n;
    r.top1 = (hit - l->win_hit) / n;
    r.lr = ev->lr;
    r.images_per_s = ev->images_per_s;
    r.elapsed_s = l->base + ev->elapsed;
    append(l, &r);
    l->last_logged = ev->step;
    l->win_seen = ev->seen, l->win_loss = loss, l->win_hit = hit;
}

static void on_epoch(nn_metrics_logger *l, const nn_train_event *ev)
{
    nn_metrics_row r = nn_metrics_empty(NN_METRICS_EPOCH, NN_METRICS_TRAIN, ev->epoch + 1, ev->step);
    r.lr = ev->prev_lr; /* the rate this epoch ran with; ev->lr is the next epoch's */
    r.elapsed_s = l->base + ev->elapsed;
    if (ev->seen) {
        r.loss = ev->loss;
        r.top1 = ev->acc;
        r.images_per_s = ev->images_per_s;
    }
    append(l, &r);
    if (ev->eval.n) {
        r.split = NN_METRICS_TEST;
        r.loss = ev->eval.loss;
        r.top1 = (double)ev->eval.top1 / ev->eval.n;
        r.top5 = (double)ev->eval.top5 / ev->eval.n;
        r.images_per_s = NAN;
        append(l, &r);
    }
    keep_status(l, nn_metrics_plot(l->dir, NULL));
}

void nn_metrics_on_event(const struct nn_train_event *ev, void *user)
{
    nn_metrics_logger *l = user;
    if (!l || !ev) return;
    if (ev->kind == NN_TRAIN_STEP) on_step(l, ev);
    else if (ev->kind == NN_TRAIN_EPOCH) on_epoch(l, ev);
}
