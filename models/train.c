/* The training loop (see train.h): one step, one epoch, the run, and the
 * checkpoint folder. Each step allocates nothing once the context's arenas
 * have grown (the batch tensors are made once; a partial last batch gets its
 * own pair, also made once). */
#include "models/train.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/backend.h"

struct nn_trainer {
    nn_train_model m;
    nn_params *params;
    nn_batch_source train, eval;
    bool has_eval;
    nn_train_state *st;
    nn_trainer_config cfg;
    nn_optim *opt;
    nn_ctx *ctx;
    nn_tensor *xb, *yb;        /* full batches */
    nn_tensor *xp, *yp;        /* the partial last batch, if any */
    float *logits;             /* batch_size x classes, host */
    float loss;                /* this step's (after_backward may replace it) */
    nn_train_count count;      /* this step's images and top-1 hits (after_backward may replace them) */
    const int32_t *labels;     /* this step's labels on the host, count.images of them */
    nn_step_vars sv;           /* this step's scalars (core/step_vars.h), written once per step */
    nn_step_vars *dsv;         /* where the kernels read them: &sv on the CPU, a copy on a device */
    /* NN_CUDA_GRAPH=1: the full-batch step captured once, then replayed */
    bool graph_on;             /* asked for, and not given up on */
    int graph_warm;            /* plain full-batch steps since the graph was dropped */
    void *graph;               /* the captured step, or NULL */
    nn_tensor *g_out, *g_loss; /* its logits and loss (the capture step's tensors) */
    uint64_t g_draws;          /* dropout counters one step takes */
    int64_t g_replays;         /* steps run from a graph (captures included) */
    char last[4096], best[4096];
    /* this run */
    double t_start;
    int64_t first_step;
    long long skipped;
    bool saved;                /* a checkpoint was written */
    /* this epoch */
    double t0, loss_sum;
    int seen, correct, first;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- the checkpoint folder ---- */

void nn_checkpoint_remove_stale(const char *dir)
{
    DIR *d = dir ? opendir(dir) : NULL;
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *t = strstr(e->d_name, ".safetensors.tmp.");
        if (!t) continue;
        char *end;
        long pid = strtol(t + strlen(".safetensors.tmp."), &end, 10);
        if (*end || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* its writer may still be at work */
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

/* mkdir -p */
static nn_status make_dir(const char *dir)
{
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) return NN_OK;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0777);
            *p = '/';
        }
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
        return nn_error(NN_E_IO, "cannot create the checkpoint folder %s: %s", dir, strerror(errno));
    return NN_OK;
}

static nn_status save(nn_trainer *t, const char *path)
{
    if (!t->cfg.checkpoint_dir) return NN_OK;
    t->saved = true;
    nn_checkpoint_desc d = {.params = t->params, .cfg = t->m.cfg, .arch = t->m.arch, .init = t->m.init,
                            .opt = t->opt, .st = t->st, .meta = t->m.meta, .norm = t->m.norm};
    return nn_checkpoint_write(path, &d);
}

/* ---- making one ---- */

static nn_status check_model(nn_train_model *m)
{
    if (m->seq) {
        m->params = &m->seq->params;
        m->in_c = m->seq->in_c, m->in_h = m->seq->in_h, m->in_w = m->seq->in_w;
    } else if (!m->forward || !m->params) {
        return nn_error(NN_E_ARG, "trainer: the model needs a built nn_seq, or a forward function and its parameters");
    }
    if (m->in_c < 1 || m->in_h < 1 || m->in_w < 1 || m->classes < 1)
        return nn_error(NN_E_ARG, "trainer: input %dx%dx%d and %d classes: each must be at least 1", m->in_c, m->in_h,
                        m->in_w, m->classes);
    return NN_OK;
}

static nn_status check_args(const nn_train_model *m, const nn_batch_source *train, const nn_train_state *st,
                            const nn_trainer_config *cfg)
{
    if (!m || !train || !st || !cfg)
        return nn_error(NN_E_ARG, "trainer: NULL %s", !m ? "model" : !train ? "training data" : !st ? "state" : "config");
    if (!train->start || (!train->next && !train->next_into) || train->batches < 1 || train->views != 1)
        return nn_error(NN_E_ARG,
                        "trainer: the training source needs start, next or next_into, at least one batch and one view");
    if (st->batch_size < 1 || st->epochs < 1 || st->epoch < 0 || st->batch < 0)
        return nn_error(NN_E_ARG, "trainer: batch size %d and epochs %d must be at least 1", st->batch_size, st->epochs);
    return NN_OK;
}

static nn_status new_batch(nn_trainer *t, int n, nn_tensor **x, nn_tensor **y)
{
    int xs[4] = {n, t->m.in_c, t->m.in_h, t->m.in_w}, ys[1] = {n};
    NN_TRY(nn_tensor_new(x, NN_F32, t->cfg.dev, 4, xs));
    return nn_tensor_new(y, NN_I32, t->cfg.dev, 1, ys);
}

/* The step's scalars where its kernels read them (a fixed address, so that
 * a captured step reads each replay's values). */
static nn_status new_step_vars(nn_trainer *t)
{
    if (t->cfg.dev == NN_CPU) {
        t->dsv = &t->sv;
        return NN_OK;
    }
    const nn_backend *be = nn_backend_need(t->cfg.dev, "trainer");
    if (!be) return NN_E_DEVICE;
    NN_TRY(be->alloc((void **)&t->dsv, sizeof *t->dsv));
    if (!t->dsv) return nn_error(NN_E_NOMEM, "trainer: out of %s memory for the step's scalars",
                                 nn_device_name(t->cfg.dev));
    return NN_OK;
}

/* Until the next capture, steps run plain (after anything that may move the
 * memory the graph's pointers name: a partial batch, an evaluation). */
static void drop_graph(nn_trainer *t)
{
    if (t->graph) nn_backend_get(t->cfg.dev)->graph_free(t->graph);
    t->graph = NULL;
    t->graph_warm = 0;
}

static nn_status init_trainer(nn_trainer *t)
{
    NN_TRY(check_model(&t->m));
    t->params = t->m.params;
    /* one block: one zeroing memset and one non-finite count per step; the
     * extra floats are where data parallelism (models/dist_train.c) sums the
     * step's scalars with the gradients, reserved here so it never re-makes the block */
    NN_TRY(nn_params_flatten_grads(t->params, NN_TRAIN_BLOCK_TAIL, NULL, NULL));
    nn_train_state *st = t->st;
    NN_TRY(nn_optim_new(&t->opt, &st->optim, t->params));
    nn_optim_set_lr(t->opt, st->lr > 0 ? st->lr : st->optim.lr);
    NN_TRY(new_batch(t, st->batch_size, &t->xb, &t->yb));
    t->logits = malloc((size_t)st->batch_size * t->m.classes * sizeof *t->logits);
    t->ctx = nn_ctx_new();
    if (!t->logits || !t->ctx) return nn_error(NN_E_NOMEM, "trainer: out of memory");
    *nn_ctx_rng(t->ctx) = st->dropout_rng;
    NN_TRY(new_step_vars(t));
    const char *g = getenv(NN_CUDA_GRAPH_ENV);
    t->graph_on = g && g[0] == '1' && t->cfg.dev != NN_CPU;
    if (t->graph_on && t->cfg.after_backward) {
        fprintf(stderr, "convnet: %s: a step with an after_backward hook (data parallelism) is not captured\n",
                NN_CUDA_GRAPH_ENV);
        t->graph_on = false;
    }
    if (t->cfg.checkpoint_dir) {
        snprintf(t->last, sizeof t->last, "%s/last.safetensors", t->cfg.checkpoint_dir);
        snprintf(t->best, sizeof t->best, "%s/best.safetensors", t->cfg.checkpoint_dir);
    }
    return NN_OK;
}

nn_status nn_trainer_new(nn_trainer **out, const nn_train_model *m, const nn_batch_source *train,
                         const nn_batch_source *eval, nn_train_state *st, const nn_trainer_config *cfg)
{
    if (!out) return nn_error(NN_E_ARG, "trainer: NULL output");
    *out = NULL;
    NN_TRY(check_args(m, train, st, cfg));
    nn_trainer *t = calloc(1, sizeof *t);
    if (!t) return nn_error(NN_E_NOMEM, "trainer: out of memory");
    t->m = *m;
    t->train = *train;
    t->has_eval = eval != NULL;
    if (eval) t->eval = *eval;
    t->st = st;
    t->cfg = *cfg;
    nn_status s = init_trainer(t);
    if (s != NN_OK) {
        nn_trainer_free(t);
        return s;
    }
    *out = t;
    return NN_OK;
}

void nn_trainer_free(nn_trainer *t)
{
    if (!t) return;
    free(t->logits);
    nn_tensor_free(t->xb);
    nn_tensor_free(t->yb);
    nn_tensor_free(t->xp);
    nn_tensor_free(t->yp);
    drop_graph(t);
    nn_ctx_free(t->ctx);
    nn_optim_free(t->opt);
    if (t->dsv && t->dsv != &t->sv) nn_backend_get(t->cfg.dev)->free(t->dsv);
    free(t);
}

nn_status nn_trainer_resume(nn_trainer *t, const char *path)
{
    if (!t || !path) return nn_error(NN_E_ARG, "trainer: NULL %s", !t ? "trainer" : "checkpoint path");
    drop_graph(t);
    NN_TRY(nn_checkpoint_read(path, t->params, t->opt, NULL, NULL));
    nn_optim_set_lr(t->opt, t->st->lr);
    *nn_ctx_rng(t->ctx) = t->st->dropout_rng;
    return NN_OK;
}

nn_params *nn_trainer_params(nn_trainer *t) { return t ? t->params : NULL; }
nn_optim *nn_trainer_optim(nn_trainer *t) { return t ? t->opt : NULL; }
nn_train_state *nn_trainer_state(nn_trainer *t) { return t ? t->st : NULL; }
nn_ctx *nn_trainer_ctx(nn_trainer *t) { return t ? t->ctx : NULL; }
float *nn_trainer_step_loss(nn_trainer *t) { return t ? &t->loss : NULL; }
nn_train_count *nn_trainer_step_count(nn_trainer *t) { return t ? &t->count : NULL; }
int64_t nn_trainer_graph_steps(const nn_trainer *t) { return t ? t->g_replays : 0; }

/* ---- one step ---- */

static void emit(nn_trainer *t, nn_train_event *ev)
{
    if (!t->cfg.on_event) return;
    const nn_train_state *st = t->st;
    double tn = now();
    ev->epoch = st->epoch, ev->epochs = st->epochs;
    ev->batch = st->batch, ev->batches = t->train.batches, ev->first_batch = t->first;
    ev->batch_size = st->batch_size;
    ev->step = st->step, ev->run_steps = st->step - t->first_step, ev->skipped = t->skipped;
    ev->seen = t->seen;
    ev->loss = t->seen ? t->loss_sum / t->seen : 0.0;
    ev->acc = t->seen ? (double)t->correct / t->seen : 0.0;
    if (ev->kind != NN_TRAIN_EPOCH) ev->epoch_time = tn - t->t0, ev->lr = st->lr;
    ev->images_per_s = ev->epoch_time > 0 ? (double)(st->batch - t->first) * st->batch_size / ev->epoch_time : 0.0;
    ev->elapsed = tn - t->t_start;
    t->cfg.on_event(ev, t->cfg.user);
}

/* The batch tensors for n images: the full pair, or the partial one. */
static nn_status batch_for(nn_trainer *t, int n, nn_tensor **x, nn_tensor **y)
{
    if (n == t->st->batch_size) {
        *x = t->xb, *y = t->yb;
        return NN_OK;
    }
    if (n > t->st->batch_size)
        return nn_error(NN_E_SHAPE, "trainer: the source gave a batch of %d images, the batch size is %d", n,
                        t->st->batch_size);
    if (!t->xp || t->xp->shape[0] != n) {
        nn_tensor_free(t->xp), nn_tensor_free(t->yp);
        t->xp = t->yp = NULL;
        NN_TRY(new_batch(t, n, &t->xp, &t->yp));
    }
    *x = t->xp, *y = t->yp;
    return NN_OK;
}

/* Images and top-1 hits of n logits rows in t->logits against labels hy. */
static nn_train_count top1_count(const nn_trainer *t, const int32_t *hy, int n)
{
    nn_train_count c = {.images = n};
    for (int i = 0; i < n; i++) c.correct += nn_rank_of(t->logits + (size_t)i * t->m.classes, t->m.classes, hy[i]) == 0;
    return c;
}

static nn_tensor *forward(nn_trainer *t, nn_tensor *x)
{
    return t->m.seq ? nn_seq_forward(t->ctx, t->m.seq, x) : t->m.forward(t->ctx, t->m.model, x);
}

/* Forward, loss and backward on (x, y), enqueued (nothing read back): *out
 * the logits, *loss the mean loss, both on the step's device. */
static nn_status forward_backward(nn_trainer *t, nn_tensor *x, nn_tensor *y, nn_tensor **out, nn_tensor **loss)
{
    nn_ctx_reset(t->ctx);
    nn_ctx_set_training(t->ctx, true);
    *out = forward(t, x);
    *loss = nn_softmax_xent(t->ctx, *out, y);
    nn_status s = *loss ? nn_backward(t->ctx, *loss) : nn_ctx_status(t->ctx);
    if (s != NN_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nn_ctx_status(t->ctx) != NN_OK ? nn_ctx_errmsg(t->ctx) : nn_errmsg());
        return nn_error(s, "step %lld: %s", (long long)t->st->step + 1, msg);
    }
    return NN_OK;
}

/* A host batch of n images uploaded to its tensors. */
static nn_status upload_batch(nn_trainer *t, const float *hx, const int32_t *hy, int n, nn_tensor **x, nn_tensor **y)
{
    NN_TRY(batch_for(t, n, x, y));
    NN_TRY(nn_tensor_write(*x, hx));
    return nn_tensor_write(*y, hy);
}

/* A batch from a source's next_into: built in the full pair; a partial one is
 * then moved to its own pair on the device (once an epoch at most). */
static nn_status device_batch(nn_trainer *t, nn_tensor **x, nn_tensor **y, const int32_t **hy, int *n)
{
    *x = t->xb, *y = t->yb;
    NN_TRY(t->train.next_into(t->train.impl, t->xb, t->yb, hy, n));
    if (*n == 0 || *n == t->st->batch_size) return NN_OK;
    NN_TRY(batch_for(t, *n, x, y));
    const nn_backend *be = nn_backend_get(t->cfg.dev);
    NN_TRY(be->copy(nn_f32(*x), t->cfg.dev, nn_f32(t->xb), t->cfg.dev, (*x)->numel * sizeof(float)));
    return be->copy(nn_i32(*y), t->cfg.dev, nn_i32(t->yb), t->cfg.dev, (*y)->numel * sizeof(int32_t));
}

nn_status nn_trainer_grad(nn_trainer *t, const float *hx, const int32_t *hy, int n, float *loss)
{
    if (!t || !hx || !hy || !loss) return nn_error(NN_E_ARG, "trainer: NULL argument to nn_trainer_grad");
    nn_tensor *x = NULL, *y = NULL;
    NN_TRY(upload_batch(t, hx, hy, n, &x, &y));
    nn_tensor *out, *lt;
    NN_TRY(forward_backward(t, x, y, &out, &lt));
    NN_TRY(nn_tensor_read(out, t->logits));
    nn_train_count c = top1_count(t, hy, n);
    t->count.images += c.images, t->count.correct += c.correct;
    return nn_tensor_read(lt, loss);
}

/* The first parameter whose gradient holds a NaN or Inf, or NULL. While the
 * list is flat, one count over the block (one host sync) decides whether to
 * look for it at all. */
static nn_status nonfinite_grad(const nn_trainer *t, const char **bad)
{
    *bad = NULL;
    size_t n, cnt = 0;
    const float *block = nn_params_flat(t->params, &n);
    if (block) {
        NN_TRY(nn_backend_get(t->params->grad_dev)->count_nonfinite(n, block, &cnt));
        if (!cnt) return NN_OK;
    }
    for (int i = 0; i < t->params->n && !*bad; i++) {
        size_t cnt = 0;
        const nn_tensor *p = t->params->p[i].t;
        if (!p->grad) continue;
        NN_TRY(nn_backend_get(p->device)->count_nonfinite(p->numel, nn_f32(p->grad), &cnt));
        if (cnt) *bad = t->params->p[i].name;
    }
    return NN_OK;
}

static nn_status nonfinite_error(nn_trainer *t, nn_tensor *x, float lv, const char *bad)
{
    const nn_train_state *st = t->st;
    char what[512];
    if (isfinite(lv)) {
        snprintf(what, sizeof what, "the gradient of %s is not finite", bad);
    } else {
        const char *layer = t->m.seq ? nn_seq_find_nonfinite(t->m.seq, x) : NULL;
        char where[160] = "";
        if (t->m.seq) snprintf(where, sizeof where, "; first non-finite layer: %s", layer ? layer : "none: the loss itself");
        snprintf(what, sizeof what, "the loss is not finite (%g%s%s%s)", (double)lv, where,
                 bad ? "; first non-finite gradient: " : "", bad ? bad : "");
    }
    return nn_error(NN_E_NONFINITE, "step %lld (epoch %d, batch %d): %s; stopping", (long long)st->step + 1,
                    st->epoch + 1, st->batch + 1, what);
}

/* After a finite step (its update done): the counts. out: the logits (NULL:
 * read and counted already, before the hook). */
static nn_status take_step(nn_trainer *t, nn_tensor *out, float lv)
{
    if (out) {
        NN_TRY(nn_tensor_read(out, t->logits));
        t->count = top1_count(t, t->labels, t->count.images);
    }
    nn_optim_set_steps(t->opt, nn_optim_steps(t->opt) + 1);
    t->st->step++;
    t->loss_sum += (double)lv * t->count.images;
    t->correct += t->count.correct;
    t->seen += t->count.images;
    return NN_OK;
}

static nn_status write_step_vars(nn_trainer *t)
{
    if (t->dsv == &t->sv) return NN_OK;
    return nn_backend_get(t->cfg.dev)->copy(t->dsv, t->cfg.dev, &t->sv, NN_CPU, sizeof t->sv);
}

/* The step's scalars written once: the rate, Adam's corrections for the
 * next step, the generator's position, a zero count; then where the kernels
 * read them (one copy on a device). */
static nn_status publish_step_vars(nn_trainer *t)
{
    nn_optim_step_vars(t->opt, &t->sv);
    t->sv.rng_offset = nn_ctx_rng(t->ctx)->offset;
    t->sv.nonfinite = 0;
    nn_ctx_set_step_vars(t->ctx, t->cfg.dev, t->dsv, t->sv.rng_offset);
    return write_step_vars(t);
}

/* The gated update, enqueued: the non-finite values of the loss (NULL: the
 * hook's, counted already) and the gradients counted into the step's struct
 * on the device, and the optimizer kernels made no-ops there when the count
 * is not zero (no host branch). */
static nn_status gated_update(nn_trainer *t, nn_tensor *loss)
{
    if (loss) NN_TRY(nn_backend_get(t->cfg.dev)->count_nonfinite_into(1, nn_f32(loss), t->dsv));
    size_t n;
    const float *block = nn_params_flat(t->params, &n);
    if (block) {
        NN_TRY(nn_backend_get(t->params->grad_dev)->count_nonfinite_into(n, block, t->dsv));
    } else {
        for (int i = 0; i < t->params->n; i++) {
            const nn_tensor *p = t->params->p[i].t;
            if (p->grad) NN_TRY(nn_backend_get(p->device)->count_nonfinite_into(p->numel, nn_f32(p->grad), t->dsv));
        }
    }
    return nn_optim_step_at(t->opt, t->dsv);
}

/* The hook sees the loss on the host and may replace it (data parallelism:
 * the mean over processes) and run more slices on the context, after which
 * the step's tensors are gone: the logits are read before it, and the gate
 * starts from the loss the skip policy sees (one more small copy; a step
 * with a hook is never captured). *out and *loss come back NULL. */
static nn_status run_hook(nn_trainer *t, nn_tensor **out, nn_tensor **loss)
{
    NN_TRY(nn_tensor_read(*loss, &t->loss));
    NN_TRY(nn_tensor_read(*out, t->logits));
    t->count = top1_count(t, t->labels, t->count.images);
    *out = *loss = NULL;
    NN_TRY(t->cfg.after_backward(t, t->cfg.user));
    t->sv.nonfinite = !isfinite(t->loss);
    return write_step_vars(t);
}

/* Forward, backward and the gated update, enqueued. */
static nn_status plain_step(nn_trainer *t, nn_tensor *x, nn_tensor *y, nn_tensor **out, nn_tensor **loss)
{
    NN_TRY(forward_backward(t, x, y, out, loss));
    if (t->cfg.after_backward) NN_TRY(run_hook(t, out, loss));
    return gated_update(t, *loss);
}

/* The plain step captured (nothing runs while capturing), then launched. A
 * step that cannot be captured runs plain, as every later one, after a
 * one-line notice; the generator is put back where the capture found it. */
static nn_status capture_step(nn_trainer *t, nn_tensor *x, nn_tensor *y, nn_tensor **out, nn_tensor **loss)
{
    const nn_backend *be = nn_backend_get(t->cfg.dev);
    const nn_rng before = *nn_ctx_rng(t->ctx);
    nn_status s = be->graph_begin();
    if (s == NN_OK) {
        nn_status r = plain_step(t, x, y, out, loss);
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", nn_errmsg());
        s = be->graph_end(&t->graph); /* ends the capture in any case */
        if (r != NN_OK) s = nn_error(r, "%s", msg);
    }
    if (s != NN_OK) {
        fprintf(stderr, "convnet: %s: step %lld not captured, training without a graph: %s\n", NN_CUDA_GRAPH_ENV,
                (long long)t->st->step + 1, nn_errmsg());
        drop_graph(t);
        t->graph_on = false;
        *nn_ctx_rng(t->ctx) = before;
        return plain_step(t, x, y, out, loss);
    }
    t->g_draws = nn_ctx_rng(t->ctx)->offset - before.offset;
    t->g_out = *out, t->g_loss = *loss;
    t->g_replays++;
    return be->graph_launch(t->graph);
}

/* The step, plain or from the graph. The arena and the caching allocator
 * hand out the same addresses from the second step on (docs/cuda_graph.md),
 * so the capture waits for two plain full-batch steps; a replay runs no host
 * code of the step, so the generator is moved as the step would move it. */
static nn_status run_step(nn_trainer *t, nn_tensor *x, nn_tensor *y, nn_tensor **out, nn_tensor **loss)
{
    if (!t->graph_on || x != t->xb) {
        if (x != t->xb) drop_graph(t); /* the partial batch: other shapes, other addresses */
        return plain_step(t, x, y, out, loss);
    }
    if (t->graph) {
        NN_TRY(nn_backend_get(t->cfg.dev)->graph_launch(t->graph));
        nn_ctx_rng(t->ctx)->offset += t->g_draws;
        t->g_replays++;
        *out = t->g_out, *loss = t->g_loss;
        return NN_OK;
    }
    if (t->graph_warm < 2) {
        t->graph_warm++;
        return plain_step(t, x, y, out, loss);
    }
    return capture_step(t, x, y, out, loss);
}

/* One step on the batch (x, y) of n images; hy its labels on the host. The
 * whole step is enqueued before anything is read back; then one sync reads
 * the count (and the loss), and the host accounts for what the device did. */
static nn_status train_batch(nn_trainer *t, nn_tensor *x, nn_tensor *y, const int32_t *hy, int n)
{
    nn_train_state *st = t->st;
    nn_schedule sc = nn_train_schedule(st);
    nn_optim_set_lr(t->opt, nn_schedule_step(&sc, st->step, (int64_t)st->epochs * t->train.batches));
    nn_train_set_schedule(st, &sc);
    const char *bad = NULL;
    nn_tensor *out, *loss;
    t->labels = hy, t->count = (nn_train_count){.images = n};
    NN_TRY(publish_step_vars(t));
    NN_TRY(run_step(t, x, y, &out, &loss));
    nn_step_vars done;
    NN_TRY(nn_backend_get(t->cfg.dev)->copy(&done, NN_CPU, t->dsv, t->cfg.dev, sizeof done));
    if (!t->cfg.after_backward) NN_TRY(nn_tensor_read(loss, &t->loss));
    float lv = t->loss;
    if (!done.nonfinite) {
        NN_TRY(take_step(t, out, lv));
    } else {
        NN_TRY(nonfinite_grad(t, &bad));
        if (!t->cfg.skip_nonfinite) return nonfinite_error(t, x, lv, bad);
        t->skipped++;
        nn_train_event ev = {.kind = NN_TRAIN_SKIP, .nonfinite = isfinite(lv) ? bad : "loss"};
        emit(t, &ev);
    }
    NN_TRY(nn_params_zero_grad(t->params));
    st->batch++;
    st->dropout_rng = *nn_ctx_rng(t->ctx);
    return NN_OK;
}

/* ---- epochs and the run ---- */

static bool stop_after_reached(const nn_trainer *t)
{
    return t->cfg.stop_after && t->st->step - t->first_step >= t->cfg.stop_after;
}

static nn_status stop_mid_epoch(nn_trainer *t, nn_train_result *res, nn_train_end end)
{
    NN_TRY(save(t, t->last));
    res->end = end;
    res->mid_epoch = true;
    snprintf(res->last_path, sizeof res->last_path, "%s", t->saved ? t->last : "");
    if (end == NN_TRAIN_STOP_REQUESTED)
        return nn_error(NN_E_INTERRUPTED, "stopped on request after step %lld", (long long)t->st->step);
    return NN_OK;
}

/* The batches of the current epoch from st->batch on; *stopped when the run ends inside it. */
static nn_status train_epoch(nn_trainer *t, nn_train_result *res, bool *stopped)
{
    nn_train_state *st = t->st;
    NN_TRY(t->train.start(t->train.impl, st->epoch, st->batch));
    t->t0 = now(), t->loss_sum = 0, t->seen = t->correct = 0, t->first = st->batch;
    for (;;) {
        const float *hx;
        const int32_t *hy;
        int n;
        nn_tensor *x = NULL, *y = NULL;
        if (t->train.next_into) {
            NN_TRY(device_batch(t, &x, &y, &hy, &n));
        } else {
            NN_TRY(t->train.next(t->train.impl, &hx, &hy, &n));
            if (n > 0) NN_TRY(upload_batch(t, hx, hy, n, &x, &y));
        }
        if (n == 0) return NN_OK;
        NN_TRY(train_batch(t, x, y, hy, n));
        nn_train_event ev = {.kind = NN_TRAIN_STEP};
        emit(t, &ev);
        bool more = st->batch < t->train.batches;
        if (stop_after_reached(t) && more) return *stopped = true, stop_mid_epoch(t, res, NN_TRAIN_STOPPED_AFTER);
        if (t->cfg.stop && *t->cfg.stop) return *stopped = true, stop_mid_epoch(t, res, NN_TRAIN_STOP_REQUESTED);
    }
}

static nn_status evaluate(nn_trainer *t, nn_eval_result *ev)
{
    memset(ev, 0, sizeof *ev);
    if (!t->has_eval) return NN_OK;
    if (t->m.seq) return nn_evaluate(t->m.seq, t->cfg.dev, &t->eval, t->m.classes, NULL, ev, NULL, NULL);
    nn_eval_model em = {.forward = t->m.forward, .model = t->m.model, .in_c = t->m.in_c, .in_h = t->m.in_h,
                        .in_w = t->m.in_w};
    return nn_evaluate_model(&em, t->cfg.dev, &t->eval, t->m.classes, NULL, ev, NULL, NULL);
}

/* Evaluation, the schedule's epoch move, the event, then last/best checkpoints;
 * leaves st at the next epoch's start. */
static nn_status end_epoch(nn_trainer *t)
{
    nn_train_state *st = t->st;
    drop_graph(t); /* the evaluation allocates; the next epoch captures again */
    nn_train_event ev = {.kind = NN_TRAIN_EPOCH, .epoch_time = now() - t->t0};
    NN_TRY(evaluate(t, &ev.eval));
    if (t->cfg.after_eval) NN_TRY(t->cfg.after_eval(t, &ev.eval, t->cfg.user));
    ev.test_acc = ev.eval.n ? (float)ev.eval.top1 / (float)ev.eval.n : 0.0f;
    nn_schedule sc = nn_train_schedule(st);
    ev.prev_lr = st->lr;
    nn_optim_set_lr(t->opt, nn_schedule_epoch_end(&sc, st->epoch + 1, ev.test_acc));
    nn_train_set_schedule(st, &sc);
    ev.lr = st->lr;
    ev.best = ev.test_acc > st->best_acc;
    emit(t, &ev);
    st->epoch++, st->batch = 0;
    if (ev.best) st->best_acc = ev.test_acc;
    NN_TRY(save(t, t->last));
    if (ev.best) NN_TRY(save(t, t->best));
    return NN_OK;
}

static nn_status start_run(nn_trainer *t, nn_train_result *res)
{
    memset(res, 0, sizeof *res);
    if (t->cfg.checkpoint_dir) {
        NN_TRY(make_dir(t->cfg.checkpoint_dir));
        nn_checkpoint_remove_stale(t->cfg.checkpoint_dir);
    }
    t->t_start = now();
    t->first_step = t->st->step;
    t->skipped = 0;
    /* a checkpoint from a run with a larger limit */
    if (t->st->batch >= t->train.batches) t->st->batch = t->train.batches;
    return NN_OK;
}

nn_status nn_trainer_run(nn_trainer *t, nn_train_result *res)
{
    nn_train_result dummy;
    if (!res) res = &dummy;
    if (!t) return nn_error(NN_E_ARG, "trainer: NULL trainer");
    NN_TRY(start_run(t, res));
    nn_train_state *st = t->st;
    nn_status s = NN_OK;
    while (s == NN_OK && st->epoch < st->epochs) {
        bool stopped = false;
        s = train_epoch(t, res, &stopped);
        if (stopped) break;
        if (s == NN_OK) s = end_epoch(t);
        if (s == NN_OK && stop_after_reached(t) && st->epoch < st->epochs) {
            res->end = NN_TRAIN_STOPPED_AFTER;
            break;
        }
    }
    res->skipped = t->skipped;
    res->elapsed = now() - t->t_start;
    if (t->saved) snprintf(res->last_path, sizeof res->last_path, "%s", t->last);
    return s;
}
