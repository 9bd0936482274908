/* Data parallelism on the trainer (see dist_train.h): the sharded source, the
 * flat gradient buffer (pack, one all-reduce, unpack: the model's parameters
 * keep their own gradient tensors, so the graph's allocation is untouched),
 * the agreed stop flags, the start broadcast and the hash check. */
#include "models/dist_train.h"

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

struct nn_dp {
    nn_dp_config cfg;
    nn_trainer *t;
    const nn_backend *be;
    int ranks;         /* processes, or slices emulated in this one */
    int local_n;       /* rows per rank */
    bool reduces;      /* the after_backward hook packs, sums and unpacks */
    float *flat;       /* every gradient, then the loss: nflat floats on cfg.dev */
    size_t nflat;
    double reduce_s;
    int64_t steps;
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
    dp->nflat = nn_params_count(nn_trainer_params(dp->t)) + 1;
    NN_TRY(dp->be->alloc((void **)&dp->flat, dp->nflat * sizeof(float)));
    if (!dp->flat) return nn_error(NN_E_NOMEM, "data parallel: no memory for the %zu-float gradient buffer", dp->nflat);
    int rank = world > 1 ? nn_dist_rank() : 0;
    nn_ctx_set_shard(nn_trainer_ctx(dp->t), rank * dp->local_n, batch);
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
    if (dp->flat) dp->be->free(dp->flat);
    free(dp);
}

/* ---- the step ---- */

/* flat[off..] = (or +=) each gradient, in parameter order. */
static nn_status pack(nn_dp *dp, bool add)
{
    const nn_params *ps = nn_trainer_params(dp->t);
    size_t off = 0;
    for (int i = 0; i < ps->n; i++) {
        const nn_tensor *p = ps->p[i].t;
        if (!p->grad) NN_TRY(dp->be->memset0(dp->flat + off, p->numel * sizeof(float)));
        else if (add) NN_TRY(dp->be->axpy(p->numel, 1.0f, nn_f32(p->grad), dp->flat + off));
        else NN_TRY(dp->be->copy(dp->flat + off, dp->cfg.dev, nn_f32(p->grad), dp->cfg.dev, nn_tensor_bytes(p)));
        off += p->numel;
    }
    return NN_OK;
}

/* each gradient = flat / ranks (0 + a x: the same bits as a x, fused or not) */
static nn_status unpack(nn_dp *dp)
{
    const nn_params *ps = nn_trainer_params(dp->t);
    const float inv = 1.0f / (float)dp->ranks;
    size_t off = 0;
    for (int i = 0; i < ps->n; i++) {
        const nn_tensor *p = ps->p[i].t;
        if (p->grad) {
            NN_TRY(dp->be->memset0(p->grad->data, nn_tensor_bytes(p)));
            NN_TRY(dp->be->axpy(p->numel, inv, dp->flat + off, nn_f32(p->grad)));
        }
        off += p->numel;
    }
    float sum;
    NN_TRY(dp->be->copy(&sum, NN_CPU, dp->flat + off, dp->cfg.dev, sizeof sum));
    *nn_trainer_step_loss(dp->t) = inv * sum;
    return NN_OK;
}

/* Test-only: slices 1 .. ranks-1 of this global batch in turn, each from the
 * step's generator position with its global rows, added to flat in rank order. */
static nn_status emulate_ranks(nn_dp *dp, float *loss_sum)
{
    nn_ctx *ctx = nn_trainer_ctx(dp->t);
    const nn_rng start = nn_trainer_state(dp->t)->dropout_rng; /* saved by the trainer after the last step */
    nn_rng after = *nn_ctx_rng(ctx);
    int total = nn_trainer_state(dp->t)->batch_size;
    for (int r = 1; r < dp->ranks; r++) {
        const float *x;
        const int32_t *y;
        int n;
        float l;
        nn_shard_slice(dp->cfg.train_shard, r, &x, &y, &n);
        *nn_ctx_rng(ctx) = start;
        nn_ctx_set_shard(ctx, r * dp->local_n, total);
        NN_TRY(nn_params_zero_grad(nn_trainer_params(dp->t)));
        NN_TRY(nn_trainer_grad(dp->t, x, y, n, &l));
        NN_TRY(pack(dp, true));
        *loss_sum += l;
    }
    nn_ctx_set_shard(ctx, 0, total);
    *nn_ctx_rng(ctx) = after;
    return NN_OK;
}

static nn_status reduce(nn_dp *dp)
{
    double t0 = now();
    float *loss = nn_trainer_step_loss(dp->t);
    NN_TRY(pack(dp, false));
    float lsum = *loss;
    if (dp->cfg.ranks_emulated > 1) NN_TRY(emulate_ranks(dp, &lsum));
    NN_TRY(dp->be->copy(dp->flat + dp->nflat - 1, dp->cfg.dev, &lsum, NN_CPU, sizeof lsum));
    NN_TRY(nn_dist_allreduce_sum(dp->flat, dp->nflat, dp->cfg.dev));
    NN_TRY(unpack(dp));
    dp->reduce_s += now() - t0;
    dp->steps++;
    return NN_OK;
}

/* Test-only: this rank dies, hangs or is signalled before the step's agreement. */
static void inject_fault(const nn_dp *dp, int64_t step)
{
    if (step != dp->cfg.fault_step) return;
    if (nn_dist_rank() == dp->cfg.die_rank) {
        fprintf(stderr, "rank %d: dying at step %lld (test)\n", nn_dist_rank(), (long long)step);
        fflush(stderr);
        raise(SIGKILL);
    }
    if (nn_dist_rank() == dp->cfg.signal_rank) raise(SIGUSR1); /* the caller's handler sets the request */
    if (nn_dist_rank() == dp->cfg.hang_rank) {
        fprintf(stderr, "rank %d: hanging at step %lld (test)\n", nn_dist_rank(), (long long)step);
        fflush(stderr);
        for (;;) pause();
    }
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

double nn_dp_reduce_seconds(const nn_dp *dp, int64_t *steps)
{
    if (steps) *steps = dp->steps;
    return dp->reduce_s;
}
