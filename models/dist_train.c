/* Data parallelism on the trainer (see dist_train.h): the sharded source, the
 * all-reduce on the parameters' gradient block (core/params.h: one call after
 * backward, or buckets started during it; no copies), the agreed stop flags,
 * the start broadcast and the hash check. */
#include "models/dist_train.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/backend.h"

/* ---- the sharded source ---- */

static nn_status shard_start(void *impl, int epoch, int first)
{
    nn_shard *sh = impl;
    return sh->inner.start(sh->inner.impl, epoch, first);
}

static nn_status shard_next(void *impl, const float **x, const int32_t **y, int *n)
{
    nn_shard *sh = impl;
    NN_TRY(sh->inner.next(sh->inner.impl, &sh->x, &sh->y, &sh->n));
    nn_shard_slice(sh, sh->rank, x, y, n);
    return NN_OK;
}

void nn_shard_slice(const nn_shard *sh, int r, const float **x, const int32_t **y, int *n)
{
    int a = (int)((int64_t)sh->n * r / sh->ranks), b = (int)((int64_t)sh->n * (r + 1) / sh->ranks);
    *x = sh->x ? sh->x + (size_t)a * (size_t)sh->inner.views * sh->image_floats : NULL;
    *y = sh->y ? sh->y + a : NULL;
    *n = b - a;
}

nn_batch_source nn_shard_source(nn_shard *sh, const nn_batch_source *inner, int rank, int ranks,
                                 size_t image_floats)
{
    memset(sh, 0, sizeof *sh);
    sh->inner = *inner;
    sh->rank = rank, sh->ranks = ranks > 0 ? ranks : 1;
    sh->image_floats = image_floats;
    nn_batch_source s = {.impl = sh, .views = inner->views, .batches = inner->batches, .start = shard_start,
                         .next = shard_next};
    return s;
}

/* ---- the data-parallel state ---- */

/* A bucket: floats [lo, hi) of the gradient block, the slots of whole
 * parameters, summed as soon as backward has finished all of them. */
typedef struct dp_bucket {
    size_t lo, hi;
    int params;   /* parameters in it */
    int waiting;  /* of those, not ready yet this step */
    bool started; /* its sum is on its way this step */
} dp_bucket;

struct nn_dp {
    nn_dp_config cfg;
    nn_trainer *t;
    const nn_backend *be;
    int ranks;         /* processes, or slices emulated in this one */
    int local_n;       /* rows per rank */
    bool reduces;      /* the after_backward hook sums the gradient block across ranks */
    float *acc;        /* test-only emulation: the sum of the slices' gradients, nacc floats */
    size_t nacc;
    double reduce_s;
    int64_t steps;
    /* bucketed: nbk > 0 buckets from the end of the block (where backward
     * finishes first) to its start, over the block as flattened at setup */
    dp_bucket *bk;
    int nbk;
    float *block;
    size_t nblock;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Rank 0's weights and optimizer state everywhere: ranks built from the same
 * seed agree already, but a rank that read another file or drew differently must not drift. */
static nn_status broadcast_state(nn_dp *dp)
{
    const nn_params *ps = nn_trainer_params(dp->t);
    for (int i = 0; i < ps->n; i++) NN_TRY(nn_dist_broadcast(ps->p[i].t->data, nn_tensor_bytes(ps->p[i].t), dp->cfg.dev));
    const nn_params *os = nn_optim_state(nn_trainer_optim(dp->t));
    for (int i = 0; os && i < os->n; i++)
        NN_TRY(nn_dist_broadcast(os->p[i].t->data, nn_tensor_bytes(os->p[i].t), os->p[i].t->device));
    return NN_OK;
}

/* Test-only: every weight and optimizer state tensor set to 0.25, a state
 * no initialization makes (rank 0 has drawn weights and zero moments), so a
 * tensor the broadcast misses leaves this rank's gradients and hash off. */
static nn_status perturb_state(nn_dp *dp)
{
    const nn_params *lists[2] = {nn_trainer_params(dp->t), nn_optim_state(nn_trainer_optim(dp->t))};
    for (int l = 0; l < 2; l++)
        for (int i = 0; lists[l] && i < lists[l]->n; i++) NN_TRY(nn_tensor_fill(lists[l]->p[i].t, 0.25f));
    return NN_OK;
}

static nn_status start_bucket(nn_dp *dp, dp_bucket *b)
{
    b->started = true;
    return nn_dist_start_sum(dp->block + b->lo, b->hi - b->lo, dp->cfg.dev);
}

/* The bucket holding float `off` of the block (bk[] runs down the block). */
static dp_bucket *bucket_at(nn_dp *dp, size_t off)
{
    int a = 0, b = dp->nbk - 1;
    while (a < b) {
        int m = (a + b) / 2;
        if (off >= dp->bk[m].lo) b = m;
        else a = m + 1;
    }
    return &dp->bk[a];
}

/* The context's gradient-ready callback: a bucket starts once its last parameter is done. */
static nn_status on_grad_ready(nn_tensor *leaf, void *user)
{
    nn_dp *dp = user;
    uintptr_t g = (uintptr_t)leaf->grad->data, b = (uintptr_t)dp->block;
    if (g < b || g >= b + dp->nblock * sizeof(float)) return NN_OK; /* not in the trainer's block */
    dp_bucket *bk = bucket_at(dp, (g - b) / sizeof(float));
    if (bk->waiting > 0 && --bk->waiting == 0) NN_TRY(start_bucket(dp, bk));
    nn_dist_progress();
    return NN_OK;
}

/* Buckets of about cfg.bucket_mb MiB, whole parameters each, from the last
 * parameter down; no more than the sums dist can hold between two waits. */
static nn_status make_buckets(nn_dp *dp)
{
    nn_params *ps = nn_trainer_params(dp->t);
    NN_TRY(nn_params_flatten_grads(ps, NN_TRAIN_BLOCK_TAIL, &dp->block, &dp->nblock));
    /* the sum's path was chosen for cfg.dev; no parameters: nothing to bucket */
    if (ps->grad_dev != dp->cfg.dev || ps->n == 0) return NN_OK;
    size_t want = (size_t)(dp->cfg.bucket_mb * (1 << 20) / sizeof(float));
    size_t least = dp->nblock / (NN_DIST_MAX_PENDING - 2) + 1; /* the buckets and the tail fit dist's requests */
    want = want < least ? least : want > (size_t)1 << 30 ? (size_t)1 << 30 : want;
    dp->bk = calloc((size_t)ps->n, sizeof *dp->bk);
    if (!dp->bk) return nn_error(NN_E_NOMEM, "data parallel: out of memory");
    size_t hi = dp->nblock;
    for (int i = ps->n - 1; i >= 0; i--) {
        dp_bucket *b = &dp->bk[dp->nbk];
        b->hi = b->params ? b->hi : hi;
        b->lo = (size_t)((float *)ps->p[i].t->grad->data - dp->block);
        b->waiting = ++b->params;
        if (b->hi - b->lo >= want || i == 0) dp->nbk++, hi = b->lo;
    }
    nn_ctx_on_grad_ready(nn_trainer_ctx(dp->t), on_grad_ready, dp);
    return NN_OK;
}

static nn_status setup(nn_dp *dp)
{
    int world = nn_dist_size(), emu = dp->cfg.ranks_emulated;
    if (world > 1 && emu > 1)
        return nn_error(NN_E_ARG, "data parallel: emulating %d ranks needs one process, not %d", emu, world);
    dp->ranks = world > 1 ? world : emu > 1 ? emu : 1;
    int batch = nn_trainer_state(dp->t)->batch_size;
    if (batch % dp->ranks)
        return nn_error(NN_E_ARG, "data parallel: the batch of %d does not divide by %d processes; choose a "
                                  "multiple of %d (--batch is the global batch)", batch, dp->ranks, dp->ranks);
    dp->local_n = batch / dp->ranks;
    /* one rank under a launcher still takes the reduction path (MPI or NCCL
     * with one member: the same bits as no launcher), so it can be checked alone */
    dp->reduces = dp->ranks > 1 || nn_dist_active();
    if (!dp->reduces) return NN_OK;
    if (dp->ranks > 1 && !dp->cfg.train_shard) return nn_error(NN_E_ARG, "data parallel: no sharded training source");
    dp->be = nn_backend_need(dp->cfg.dev, "data parallel");
    if (!dp->be) return NN_E_DEVICE;
    /* the trainer's block, with its tail for the step's scalars */
    NN_TRY(nn_params_flatten_grads(nn_trainer_params(dp->t), NN_TRAIN_BLOCK_TAIL, NULL, &dp->nacc));
    if (dp->cfg.ranks_emulated > 1) NN_TRY(dp->be->alloc((void **)&dp->acc, dp->nacc * sizeof(float)));
    /* buckets where the sums can run beside backward (not in the emulation,
     * whose several backward passes a step would notify several times) */
    if (dp->cfg.bucket_mb > 0 && dp->cfg.ranks_emulated <= 1 && nn_dist_overlaps(dp->cfg.dev)) NN_TRY(make_buckets(dp));
    int rank = world > 1 ? nn_dist_rank() : 0;
    nn_ctx_set_shard(nn_trainer_ctx(dp->t), rank * dp->local_n, batch);
    if (world > 1 && rank == dp->cfg.perturb_rank) NN_TRY(perturb_state(dp));
    return broadcast_state(dp);
}

nn_status nn_dp_new(nn_dp **out, nn_trainer *t, const nn_dp_config *cfg)
{
    if (!out || !t || !cfg || !cfg->agreed) return nn_error(NN_E_ARG, "data parallel: NULL argument");
    *out = NULL;
    nn_dp *dp = calloc(1, sizeof *dp);
    if (!dp) return nn_error(NN_E_NOMEM, "data parallel: out of memory");
    dp->cfg = *cfg, dp->t = t;
    nn_status s = setup(dp);
    if (s != NN_OK) return nn_dp_free(dp), s;
    *out = dp;
    return NN_OK;
}

void nn_dp_free(nn_dp *dp)
{
    if (!dp) return;
    if (dp->acc) dp->be->free(dp->acc);
    if (dp->bk) nn_ctx_on_grad_ready(nn_trainer_ctx(dp->t), NULL, NULL);
    free(dp->bk);
    free(dp);
}

/* ---- the step ---- */

/* The step's scalars that travel in the block's tail: the sum of the ranks'
 * mean losses, and their images and top-1 hits (whole numbers, exact as
 * floats up to 2^24), so the running accuracy is the whole batch's. */
typedef struct dp_tail {
    float loss, images, correct;
} dp_tail;
_Static_assert(sizeof(dp_tail) == NN_TRAIN_BLOCK_TAIL * sizeof(float), "the tail the trainer reserves");

static dp_tail step_tail(nn_dp *dp)
{
    const nn_train_count *c = nn_trainer_step_count(dp->t);
    return (dp_tail){*nn_trainer_step_loss(dp->t), (float)c->images, (float)c->correct};
}

/* gradients = their sum / ranks, in place over the block, as
 * sum + (1/ranks - 1) sum: one pass, no second buffer. For 2 ranks (any power
 * of two with a fused multiply-add) that is exactly sum / ranks, the bits of
 * the former 0 + sum / ranks; otherwise within one rounding of it, and the
 * same on every rank and in the emulation. One rank skips it: the bits of no
 * launcher. The tail is read back and the loss divided on the host. */
static nn_status mean_of_sum(nn_dp *dp, float *block, size_t n)
{
    const float inv = 1.0f / (float)dp->ranks;
    if (dp->ranks > 1) NN_TRY(dp->be->axpy(n, inv - 1.0f, block, block));
    dp_tail sum;
    NN_TRY(dp->be->copy(&sum, NN_CPU, block + n, dp->cfg.dev, sizeof sum));
    *nn_trainer_step_loss(dp->t) = inv * sum.loss;
    *nn_trainer_step_count(dp->t) = (nn_train_count){(int)sum.images, (int)sum.correct};
    return NN_OK;
}

/* Test-only: slices 1 .. ranks-1 of this global batch in turn, each from the
 * step's generator position with its global rows, summed in rank order in
 * dp->acc (slice 0's gradients first), then copied back to the block: where
 * N ranks' all-reduce leaves the same sum. */
static nn_status emulate_ranks(nn_dp *dp, float *block, size_t n, float *loss_sum)
{
    if (n > dp->nacc) return nn_error(NN_E_ARG, "data parallel: the gradient block grew after setup");
    nn_ctx *ctx = nn_trainer_ctx(dp->t);
    const nn_rng start = nn_trainer_state(dp->t)->dropout_rng; /* saved by the trainer after the last step */
    nn_rng after = *nn_ctx_rng(ctx);
    int total = nn_trainer_state(dp->t)->batch_size;
    NN_TRY(dp->be->copy(dp->acc, dp->cfg.dev, block, dp->cfg.dev, n * sizeof(float)));
    for (int r = 1; r < dp->ranks; r++) {
        const float *x;
        const int32_t *y;
        int rows;
        float l;
        nn_shard_slice(dp->cfg.train_shard, r, &x, &y, &rows);
        *nn_ctx_rng(ctx) = start;
        nn_ctx_set_shard(ctx, r * dp->local_n, total);
        NN_TRY(nn_params_zero_grad(nn_trainer_params(dp->t)));
        NN_TRY(nn_trainer_grad(dp->t, x, y, rows, &l));
        NN_TRY(dp->be->axpy(n, 1.0f, block, dp->acc));
        *loss_sum += l;
    }
    nn_ctx_set_shard(ctx, 0, total);
    *nn_ctx_rng(ctx) = after;
    return dp->be->copy(block, dp->cfg.dev, dp->acc, dp->cfg.dev, n * sizeof(float));
}

/* Bucketed: the buckets backward did not start (parameters it never
 * reached), then the tail alone (known only now), then the wait for all of
 * them; the buckets are armed again for the next step. */
static nn_status finish_buckets(nn_dp *dp, float *block, size_t n, const dp_tail *tail)
{
    if (block != dp->block || n != dp->nblock)
        return nn_error(NN_E_ARG, "data parallel: the gradient block moved after setup");
    for (int i = 0; i < dp->nbk; i++)
        if (!dp->bk[i].started) NN_TRY(start_bucket(dp, &dp->bk[i]));
    NN_TRY(dp->be->copy(block + n, dp->cfg.dev, tail, NN_CPU, sizeof *tail));
    NN_TRY(nn_dist_start_sum(block + n, NN_TRAIN_BLOCK_TAIL, dp->cfg.dev));
    NN_TRY(nn_dist_wait_sums(dp->cfg.dev));
    for (int i = 0; i < dp->nbk; i++) dp->bk[i].waiting = dp->bk[i].params, dp->bk[i].started = false;
    return NN_OK;
}

/* The all-reduce runs on the parameters' gradient block itself (its tail
 * holds the step's scalars): no copies around it. With buckets, most of it ran
 * during backward; the time counted here is what is left to wait for. */
static nn_status reduce(nn_dp *dp)
{
    double t0 = now();
    float *block;
    size_t n;
    /* the same block every step (a no-op check) unless the parameters moved */
    NN_TRY(nn_params_flatten_grads(nn_trainer_params(dp->t), NN_TRAIN_BLOCK_TAIL, &block, &n));
    float lsum = *nn_trainer_step_loss(dp->t);
    if (dp->cfg.ranks_emulated > 1) NN_TRY(emulate_ranks(dp, block, n, &lsum)); /* adds the slices' counts too */
    dp_tail tail = step_tail(dp);
    tail.loss = lsum;
    if (dp->nbk) {
        NN_TRY(finish_buckets(dp, block, n, &tail));
    } else {
        NN_TRY(dp->be->copy(block + n, dp->cfg.dev, &tail, NN_CPU, sizeof tail));
        NN_TRY(nn_dist_allreduce_sum(block, n + NN_TRAIN_BLOCK_TAIL, dp->cfg.dev));
    }
    NN_TRY(mean_of_sum(dp, block, n));
    dp->reduce_s += now() - t0;
    dp->steps++;
    return NN_OK;
}

static void hang(int64_t step)
{
    fprintf(stderr, "rank %d: hanging at step %lld (test)\n", nn_dist_rank(), (long long)step);
    fflush(stderr);
    for (;;) pause();
}

/* Test-only: this rank dies, hangs or is signalled before the step's
 * agreement (after it: hang_sum_rank, in nn_dp_after_backward). */
static void inject_fault(const nn_dp *dp, int64_t step)
{
    if (step != dp->cfg.fault_step) return;
    if (nn_dist_rank() == dp->cfg.die_rank) {
        fprintf(stderr, "rank %d: dying at step %lld (test)\n", nn_dist_rank(), (long long)step);
        fflush(stderr);
        raise(SIGKILL);
    }
    if (nn_dist_rank() == dp->cfg.signal_rank) raise(SIGUSR1); /* the caller's handler sets the request */
    if (nn_dist_rank() == dp->cfg.hang_rank) hang(step);
}

nn_status nn_dp_after_backward(nn_dp *dp)
{
    int64_t step = nn_trainer_state(dp->t)->step + 1;
    inject_fault(dp, step);
    int flags[1] = {dp->cfg.request ? (int)*dp->cfg.request : 0};
    char what[64];
    snprintf(what, sizeof what, "step %lld", (long long)step);
    NN_TRY(nn_dist_agree(flags, 1, what));
    *dp->cfg.agreed = (sig_atomic_t)flags[0];
    if (step == dp->cfg.fault_step && nn_dist_rank() == dp->cfg.hang_sum_rank) hang(step);
    return dp->reduces ? reduce(dp) : NN_OK;
}

nn_status nn_dp_after_eval(nn_dp *dp, nn_eval_result *res)
{
    if (nn_dist_size() == 1) return NN_OK;
    NN_TRY(nn_dp_check(dp, "at the end of the epoch"));
    double v[4] = {res->n, res->top1, res->top5, res->loss * res->n};
    NN_TRY(nn_dist_allreduce_sum_f64(v, 4));
    res->n = (int)v[0], res->top1 = (int)v[1], res->top5 = (int)v[2];
    res->loss = v[0] > 0 ? v[3] / v[0] : 0.0;
    return NN_OK;
}

/* ---- checks ---- */

static uint64_t hash_list(uint64_t h, const nn_params *ps)
{
    for (int i = 0; ps && i < ps->n; i++) {
        const nn_tensor *p = ps->p[i].t;
        size_t bytes = nn_tensor_bytes(p);
        void *host = malloc(bytes);
        if (!host) return 0;
        if (nn_tensor_read(p, host) == NN_OK) h = nn_hash_bytes(h, host, bytes);
        free(host);
    }
    return h;
}

uint64_t nn_dp_hash(nn_dp *dp)
{
    uint64_t h = hash_list(NN_HASH_INIT, nn_trainer_params(dp->t));
    return hash_list(h, nn_optim_state(nn_trainer_optim(dp->t)));
}

nn_status nn_dp_check(nn_dp *dp, const char *when)
{
    if (nn_dist_size() == 1) return NN_OK;
    char what[128];
    snprintf(what, sizeof what, "the hash of the weights and optimizer state %s", when);
    return nn_dist_check_equal(nn_dp_hash(dp), what);
}

int nn_dp_buckets(const nn_dp *dp) { return dp->nbk; }

double nn_dp_reduce_seconds(const nn_dp *dp, int64_t *steps)
{
    if (steps) *steps = dp->steps;
    return dp->reduce_s;
}
