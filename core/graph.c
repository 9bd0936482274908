/* Arenas, the tape and reverse-mode autograd (see graph.h for the design). */
#include "core/graph.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/op.h"

#define ARENA_ALIGN 256
#define ARENA_MAX_CHUNKS 48
#define ARENA_MIN_CHUNK ((size_t)1 << 20)
/* Released blocks remembered for reuse; a release beyond this many holes is
 * simply not reused until the next reset (a step has ~2 per op at most). */
#define ARENA_MAX_FREE 256

typedef struct arena_chunk {
    char *base;
    size_t cap, used;
} arena_chunk;

/* A hole left by a released block, inside chunk `chunk` (never spanning two:
 * two chunks may sit back to back in address space yet be two allocations). */
typedef struct arena_hole {
    char *p;
    size_t n;
    int chunk;
} arena_hole;

/* A bump allocator over chunks from a backend, with a free list of released
 * blocks (activations whose last reader has run, gradients already consumed)
 * that later allocations of the same step reuse, best fit first. When a step
 * outgrows it, it adds a chunk; the next reset merges all chunks into one of
 * their total size and empties the free list, so from the second step on a
 * step of the same shape allocates nothing (the sequence of allocations and
 * releases is the same every step, hence so is the layout). */
typedef struct nn_arena {
    nn_device dev;
    arena_chunk chunk[ARENA_MAX_CHUNKS];
    int nchunks;
    arena_hole hole[ARENA_MAX_FREE]; /* sorted by address, neighbours merged */
    int nholes;
    size_t in_use, peak;
} nn_arena;

struct nn_ctx {
    nn_arena arena[NN_NDEVICES];
    /* Graph bookkeeping (tensor structs, nodes, saved parameters): host
     * memory of its own, kept apart from tensor data so that these small
     * never-released blocks do not sit between released activations and
     * stop their holes from merging. */
    nn_arena meta;
    nn_node **tape;
    size_t ntape, tape_cap;
    bool grad_enabled, training;
    bool backward_done;           /* this graph was backpropagated: a second pass would add its gradients twice */
    bool retain; /* keep every op output's data and gradient through backward */
    nn_rng rng;
    int shard_first, shard_total; /* nn_ctx_set_shard; total 0: not sharded */
    const nn_step_vars *step_vars[NN_NDEVICES]; /* nn_ctx_set_step_vars */
    uint64_t step_base[NN_NDEVICES];
    nn_status status;
    char msg[1024];
    size_t system_allocs;
    nn_grad_ready_fn ready_fn;    /* nn_ctx_on_grad_ready */
    void *ready_user;
    void *scratch[NN_NDEVICES];   /* one reusable buffer per device (nn_op_scratch) */
    size_t scratch_cap[NN_NDEVICES];
};

static size_t arena_round(size_t bytes)
{
    bytes = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    return bytes ? bytes : ARENA_ALIGN;
}

/* The smallest hole that fits (the first of equal ones), cut from its front. */
static void *arena_from_holes(nn_arena *a, size_t bytes)
{
    int best = -1;
    for (int i = 0; i < a->nholes; i++)
        if (a->hole[i].n >= bytes && (best < 0 || a->hole[i].n < a->hole[best].n)) best = i;
    if (best < 0) return NULL;
    arena_hole *h = &a->hole[best];
    void *p = h->p;
    h->p += bytes;
    h->n -= bytes;
    if (h->n == 0) {
        memmove(h, h + 1, (size_t)(a->nholes - best - 1) * sizeof *h);
        a->nholes--;
    }
    return p;
}

static void *arena_alloc(nn_ctx *ctx, nn_arena *a, size_t bytes)
{
    bytes = arena_round(bytes);
    void *p = arena_from_holes(a, bytes);
    if (p) {
        a->in_use += bytes;
        if (a->in_use > a->peak) a->peak = a->in_use;
        return p;
    }
    arena_chunk *c = a->nchunks ? &a->chunk[a->nchunks - 1] : NULL;
    if (!c || c->cap - c->used < bytes) {
        const nn_backend *be = nn_backend_need(a->dev, "arena");
        if (!be || a->nchunks == ARENA_MAX_CHUNKS) return NULL;
        size_t cap = c ? c->cap * 2 : ARENA_MIN_CHUNK;
        if (cap < bytes) cap = bytes;
        void *q = NULL;
        if (be->alloc(&q, cap) != NN_OK) return NULL;
        ctx->system_allocs++;
        c = &a->chunk[a->nchunks++];
        c->base = q;
        c->cap = cap;
        c->used = 0;
    }
    p = c->base + c->used;
    c->used += bytes;
    a->in_use += bytes;
    if (a->in_use > a->peak) a->peak = a->in_use;
    return p;
}

/* Holes at the top of the last chunk go back to its bump pointer. */
static void arena_trim(nn_arena *a)
{
    while (a->nholes && a->nchunks) {
        arena_hole *h = &a->hole[a->nholes - 1];
        arena_chunk *c = &a->chunk[a->nchunks - 1];
        if (h->chunk != a->nchunks - 1 || h->p + h->n != c->base + c->used) return;
        c->used -= h->n;
        a->nholes--;
    }
}

static int arena_chunk_of(const nn_arena *a, const char *p)
{
    for (int i = 0; i < a->nchunks; i++)
        if (p >= a->chunk[i].base && p < a->chunk[i].base + a->chunk[i].cap) return i;
    return -1;
}

/* A growing step (more than one chunk) cannot merge holes across chunks, so
 * released blocks there are reused less well than in the steady state's one
 * chunk; their host pages go back to the system at once, so that this
 * one-off step does not set the process's peak resident memory. (A released
 * block's contents are garbage anyway: reused pages come back zeroed.) */
static void arena_discard(char *p, size_t bytes)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) / page * page, hi = ((uintptr_t)p + bytes) / page * page;
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Returns a block from arena_alloc (same size) for reuse in this step. */
static void arena_free(nn_arena *a, void *ptr, size_t bytes)
{
    char *p = ptr;
    bytes = arena_round(bytes);
    int ci = arena_chunk_of(a, p);
    if (ci < 0) return; /* not this arena's (a view of a heap tensor) */
    a->in_use -= bytes;
    int i = 0;
    while (i < a->nholes && a->hole[i].p < p) i++;
    arena_hole *prev = i > 0 ? &a->hole[i - 1] : NULL, *next = i < a->nholes ? &a->hole[i] : NULL;
    bool join_prev = prev && prev->chunk == ci && prev->p + prev->n == p;
    bool join_next = next && next->chunk == ci && p + bytes == next->p;
    if (join_prev && join_next) {
        prev->n += bytes + next->n;
        memmove(next, next + 1, (size_t)(a->nholes - i - 1) * sizeof *next);
        a->nholes--;
    } else if (join_prev) {
        prev->n += bytes;
    } else if (join_next) {
        next->p = p;
        next->n += bytes;
    } else if (a->nholes < ARENA_MAX_FREE) {
        memmove(&a->hole[i + 1], &a->hole[i], (size_t)(a->nholes - i) * sizeof *a->hole);
        a->hole[i] = (arena_hole){p, bytes, ci};
        a->nholes++;
    } /* else: the list is full; the block idles until the reset */
    if (a->dev == NN_CPU && a->nchunks > 1) arena_discard(p, bytes);
    arena_trim(a);
}

static void release_data(nn_ctx *ctx, nn_tensor *t);

static void arena_release(nn_arena *a)
{
    const nn_backend *be = nn_backend_get(a->dev);
    for (int i = 0; i < a->nchunks; i++) be->free(a->chunk[i].base);
    a->nchunks = 0;
    a->in_use = 0;
    a->nholes = 0;
}

static void arena_reset(nn_ctx *ctx, nn_arena *a)
{
    if (a->nchunks > 1) {
        size_t total = 0;
        for (int i = 0; i < a->nchunks; i++) total += a->chunk[i].cap;
        arena_release(a);
        const nn_backend *be = nn_backend_get(a->dev);
        void *p = NULL;
        if (be->alloc(&p, total) == NN_OK) {
            ctx->system_allocs++;
            a->chunk[0] = (arena_chunk){p, total, 0};
            a->nchunks = 1;
        }
    }
    for (int i = 0; i < a->nchunks; i++) a->chunk[i].used = 0;
    a->in_use = 0;
    a->nholes = 0;
}

nn_ctx *nn_ctx_new(void)
{
    nn_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    for (int d = 0; d < NN_NDEVICES; d++) ctx->arena[d].dev = (nn_device)d;
    ctx->meta.dev = NN_CPU;
    ctx->grad_enabled = true;
    ctx->training = true;
    ctx->rng = nn_rng_make(0);
    return ctx;
}

void nn_ctx_free(nn_ctx *ctx)
{
    if (!ctx) return;
    for (int d = 0; d < NN_NDEVICES; d++) {
        arena_release(&ctx->arena[d]);
        if (ctx->scratch[d]) nn_backend_get((nn_device)d)->free(ctx->scratch[d]);
    }
    arena_release(&ctx->meta);
    free(ctx->tape);
    free(ctx);
}

void nn_ctx_reset(nn_ctx *ctx)
{
    for (int d = 0; d < NN_NDEVICES; d++) arena_reset(ctx, &ctx->arena[d]);
    arena_reset(ctx, &ctx->meta);
    ctx->ntape = 0;
    ctx->backward_done = false;
    ctx->status = NN_OK;
    ctx->msg[0] = '\0';
}

bool nn_ctx_set_grad(nn_ctx *ctx, bool enabled)
{
    bool old = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return old;
}

bool nn_ctx_set_training(nn_ctx *ctx, bool training)
{
    bool old = ctx->training;
    ctx->training = training;
    return old;
}

bool nn_ctx_set_retain(nn_ctx *ctx, bool retain)
{
    bool old = ctx->retain;
    ctx->retain = retain;
    return old;
}

void nn_ctx_release(nn_ctx *ctx, nn_tensor *t)
{
    if (!ctx || !t || t->owned || !t->data || ctx->retain) return;
    if (t->node && t->node->alias) return; /* the memory is another tensor's */
    release_data(ctx, t);
}

void nn_ctx_on_grad_ready(nn_ctx *ctx, nn_grad_ready_fn fn, void *user)
{
    ctx->ready_fn = fn;
    ctx->ready_user = user;
}

bool nn_ctx_training(const nn_ctx *ctx) { return ctx->training; }
nn_rng *nn_ctx_rng(nn_ctx *ctx) { return &ctx->rng; }

void nn_ctx_set_step_vars(nn_ctx *ctx, nn_device dev, const nn_step_vars *sv, uint64_t base)
{
    ctx->step_vars[dev] = sv;
    ctx->step_base[dev] = base;
}

const nn_step_vars *nn_ctx_step_vars(const nn_ctx *ctx, nn_device dev, uint64_t *base)
{
    *base = ctx->step_base[dev];
    return ctx->step_vars[dev];
}

void nn_ctx_set_shard(nn_ctx *ctx, int first, int total)
{
    ctx->shard_first = total > 0 ? first : 0;
    ctx->shard_total = total > 0 ? total : 0;
}

void nn_ctx_shard(const nn_ctx *ctx, int *first, int *total)
{
    *first = ctx->shard_first;
    *total = ctx->shard_total;
}

/* One error channel: asking the context for its error also makes its message
 * the thread's again (something may have overwritten it since), so callers
 * read nn_errmsg() and never copy one message into the other. */
nn_status nn_ctx_status(const nn_ctx *ctx)
{
    if (!ctx) return nn_error(NN_E_ARG, "nn_ctx_status: the context is NULL");
    if (ctx->status != NN_OK) nn_error(ctx->status, "%s", ctx->msg);
    return ctx->status;
}

const char *nn_ctx_errmsg(const nn_ctx *ctx) { return ctx->msg; }
size_t nn_ctx_nodes(const nn_ctx *ctx) { return ctx->ntape; }
size_t nn_ctx_system_allocs(const nn_ctx *ctx) { return ctx->system_allocs; }
size_t nn_ctx_peak_bytes(const nn_ctx *ctx, nn_device dev) { return ctx->arena[dev].peak; }

size_t nn_ctx_arena_bytes(const nn_ctx *ctx, nn_device dev)
{
    size_t total = 0;
    for (int i = 0; i < ctx->arena[dev].nchunks; i++) total += ctx->arena[dev].chunk[i].cap;
    return total;
}

/* ---- helpers for op files (op.h) ---- */

static void ctx_fail(nn_ctx *ctx, nn_status s)
{
    if (ctx->status != NN_OK) return; /* keep the first error */
    ctx->status = s;
    snprintf(ctx->msg, sizeof ctx->msg, "%s", nn_errmsg());
}

nn_tensor *nn_op_fail_status(nn_ctx *ctx, nn_status s)
{
    ctx_fail(ctx, s);
    return NULL;
}

nn_tensor *nn_ctx_fail(nn_ctx *ctx, nn_status s) { return nn_op_fail_status(ctx, s); }

nn_tensor *nn_op_fail(nn_ctx *ctx, nn_status s, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    nn_error(s, "%s", buf);
    return nn_op_fail_status(ctx, s);
}

bool nn_op_skip(nn_ctx *ctx, const char *op, int n, nn_tensor *const *in)
{
    if (!ctx) {
        nn_error(NN_E_ARG, "%s: the context is NULL", op);
        return true;
    }
    if (ctx->status != NN_OK) return true;
    for (int i = 0; i < n; i++) {
        if (!in[i]) {
            nn_op_fail(ctx, NN_E_ARG, "%s: input %d is NULL", op, i);
            return true;
        }
    }
    return false;
}

bool nn_op_same_device(nn_ctx *ctx, const char *op, int n, nn_tensor *const *in)
{
    for (int i = 1; i < n; i++) {
        if (in[i] && in[i]->device != in[0]->device) {
            nn_op_fail(ctx, NN_E_DEVICE, "%s: input 0 is on %s but input %d is on %s", op,
                       nn_device_name(in[0]->device), i, nn_device_name(in[i]->device));
            return false;
        }
    }
    return true;
}

const nn_backend *nn_op_backend(nn_ctx *ctx, const char *op, nn_device dev)
{
    const nn_backend *be = NULL;
    nn_status s = nn_backend_open(dev, op, &be);
    if (s == NN_OK) s = nn_backend_supports(be, op); /* a missing kernel: a status, never a NULL call */
    if (s != NN_OK) {
        nn_op_fail_status(ctx, s);
        return NULL;
    }
    return be;
}

void *nn_op_host(nn_ctx *ctx, size_t bytes)
{
    void *p = arena_alloc(ctx, &ctx->meta, bytes);
    if (!p) nn_op_fail(ctx, NN_E_NOMEM, "out of host memory (arena, %zu bytes)", bytes);
    return p;
}

void *nn_op_dev(nn_ctx *ctx, nn_device dev, size_t bytes)
{
    void *p = arena_alloc(ctx, &ctx->arena[dev], bytes);
    if (!p) {
        if (dev == NN_CPU || nn_device_available(dev))
            nn_op_fail(ctx, NN_E_NOMEM, "out of %s memory (arena, %zu bytes)", nn_device_name(dev), bytes);
        else
            nn_op_fail_status(ctx, NN_E_DEVICE);
    }
    return p;
}

void *nn_op_scratch(nn_ctx *ctx, nn_device dev, size_t bytes)
{
    if (bytes == 0) bytes = 1;
    if (bytes > ctx->scratch_cap[dev]) {
        const nn_backend *be = nn_backend_need(dev, "scratch");
        if (!be) {
            nn_op_fail_status(ctx, NN_E_DEVICE);
            return NULL;
        }
        if (ctx->scratch[dev]) be->free(ctx->scratch[dev]);
        ctx->scratch[dev] = NULL;
        ctx->scratch_cap[dev] = 0;
        void *p = NULL;
        if (be->alloc(&p, bytes) != NN_OK) {
            nn_op_fail(ctx, NN_E_NOMEM, "out of %s memory (scratch, %zu bytes)", nn_device_name(dev), bytes);
            return NULL;
        }
        ctx->system_allocs++;
        ctx->scratch[dev] = p;
        ctx->scratch_cap[dev] = bytes;
    }
    return ctx->scratch[dev];
}

nn_tensor *nn_op_tensor(nn_ctx *ctx, nn_dtype dt, nn_device dev, int ndim, const int *shape)
{
    nn_tensor *t = nn_op_host(ctx, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    size_t numel = 1;
    t->ndim = ndim;
    for (int i = 0; i < NN_MAX_DIMS; i++) {
        t->shape[i] = i < ndim ? shape[i] : 1;
        NN_ASSERT(t->shape[i] > 0);
        numel *= (size_t)t->shape[i];
    }
    t->numel = numel;
    t->dtype = dt;
    t->device = dev;
    t->data = nn_op_dev(ctx, dev, numel * nn_dtype_size(dt));
    return t->data ? t : NULL;
}

bool nn_op_wants_grad(const nn_ctx *ctx, int n, nn_tensor *const *in)
{
    if (!ctx->grad_enabled) return false;
    for (int i = 0; i < n; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

nn_node *nn_op_record(nn_ctx *ctx, const nn_op_def *op, nn_tensor *out, int n, nn_tensor *const *in)
{
    NN_ASSERT(n <= NN_MAX_INPUTS);
    if (ctx->ntape == ctx->tape_cap) {
        size_t cap = ctx->tape_cap ? ctx->tape_cap * 2 : 64;
        nn_node **t = realloc(ctx->tape, cap * sizeof *t);
        if (!t) {
            nn_op_fail(ctx, NN_E_NOMEM, "%s: out of host memory for the graph", op->name);
            return NULL;
        }
        ctx->system_allocs++;
        ctx->tape = t;
        ctx->tape_cap = cap;
    }
    nn_node *nd = nn_op_host(ctx, sizeof *nd);
    if (!nd) return NULL;
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    nd->out = out;
    nd->nin = n;
    for (int i = 0; i < n; i++) {
        nd->in[i] = in[i];
        /* a view (reshape) or an in-place op: the memory is the input's */
        if (in[i] && in[i]->data == out->data) nd->alias = true;
    }
    out->node = nd;
    out->requires_grad = true;
    ctx->tape[ctx->ntape++] = nd;
    return nd;
}

/* ---- backward ---- */

/* Gives an op output a zeroed gradient buffer from the arena. */
static nn_status ensure_grad(nn_ctx *ctx, nn_tensor *t)
{
    const nn_backend *be = nn_backend_get(t->device);
    if (!t->grad) {
        t->grad = nn_op_tensor(ctx, NN_F32, t->device, t->ndim, t->shape);
        if (!t->grad) return ctx->status;
    }
    return be->memset0(t->grad->data, nn_tensor_bytes(t->grad));
}

/* Before a node's backward: a zeroed gradient for each input that is an op
 * output and has none yet (the first of its consumers, in reverse order, to
 * get here creates it; the others accumulate into it). Leaves keep their own
 * heap gradients; inputs that need none keep NULL and the op skips them. */
static nn_status grads_for_inputs(nn_ctx *ctx, nn_node *nd)
{
    for (int i = 0; i < nd->nin; i++) {
        nn_tensor *t = nd->in[i];
        if (t && t->node && !t->grad) NN_TRY(ensure_grad(ctx, t));
    }
    return NN_OK;
}

static void release_data(nn_ctx *ctx, nn_tensor *t)
{
    if (!t->data) return; /* released already (nn_ctx_release) */
    arena_free(&ctx->arena[t->device], t->data, nn_tensor_bytes(t));
    t->data = NULL;
}

/* After a node's backward every consumer of its output has run its own, so
 * the output's gradient is consumed and its data read for the last time:
 * both go back to the arena for the rest of the step (a view's data belongs
 * to the tensor it views, and goes with that one's producer). */
static void release_after(nn_ctx *ctx, nn_node *nd)
{
    nn_tensor *t = nd->out;
    if (ctx->retain || nd->keep) return;
    if (t->grad) {
        release_data(ctx, t->grad);
        t->grad = NULL;
    }
    if (!nd->alias) release_data(ctx, t);
    if (nd->buf) {
        arena_free(&ctx->arena[t->device], nd->buf, nd->buf_bytes);
        nd->buf = NULL;
    }
}

static bool is_leaf_with_grad(const nn_tensor *t) { return t && !t->node && t->requires_grad && t->grad; }

/* For the gradient-ready callback: marks each leaf at its first consumer in
 * forward order, the last one the reverse walk reaches. The leaves seen so
 * far are a list searched linearly: a model has tens of parameters, and the
 * list comes from the step's host arena. */
static nn_status mark_final_uses(nn_ctx *ctx)
{
    nn_tensor **seen = nn_op_host(ctx, (ctx->ntape * NN_MAX_INPUTS + 1) * sizeof *seen);
    if (!seen) return ctx->status;
    size_t nseen = 0;
    for (size_t i = 0; i < ctx->ntape; i++) {
        nn_node *nd = ctx->tape[i];
        nd->leaf_final = 0;
        for (int k = 0; k < nd->nin; k++) {
            nn_tensor *t = nd->in[k];
            if (!is_leaf_with_grad(t)) continue;
            size_t j = 0;
            while (j < nseen && seen[j] != t) j++;
            if (j < nseen) continue;
            seen[nseen++] = t;
            nd->leaf_final |= (unsigned char)(1u << k);
        }
    }
    return NN_OK;
}

/* Node nd's backward has run (or was skipped): the leaves it was the last to feed are ready. */
static nn_status notify_ready(nn_ctx *ctx, const nn_node *nd)
{
    for (int k = 0; ctx->ready_fn && nd->leaf_final && k < nd->nin; k++) {
        if (!(nd->leaf_final & (1u << k))) continue;
        nn_status s = ctx->ready_fn(nd->in[k], ctx->ready_user);
        if (s != NN_OK) return ctx_fail(ctx, s), s;
    }
    return NN_OK;
}

/* Shared by both entries: the seed, then the tape in reverse, gradients made
 * as they are first needed and released once consumed. The root and its
 * producer's inputs (the logits under a loss) stay readable afterwards. */
static nn_status run_backward(nn_ctx *ctx, nn_tensor *y, const float *dy_host)
{
    if (!y->node)
        return nn_error(NN_E_ARG, "backward: the output depends on no tensor that requires grad "
                                  "(or was computed with gradients off)");
    nn_status s = ensure_grad(ctx, y);
    if (s != NN_OK) return s; /* with the thread's message (arena or backend) */
    ctx->backward_done = true;
    y->node->keep = true;
    for (int i = 0; i < y->node->nin; i++)
        if (y->node->in[i] && y->node->in[i]->node) y->node->in[i]->node->keep = true;
    if (ctx->ready_fn) NN_TRY(mark_final_uses(ctx));
    const nn_backend *be = nn_backend_get(y->device);
    if (dy_host)
        NN_TRY(be->copy(y->grad->data, y->device, dy_host, NN_CPU, y->numel * sizeof(float)));
    else
        NN_TRY(be->fill(nn_f32(y->grad), 1, 1.0f));
    for (size_t i = ctx->ntape; i-- > 0;) {
        nn_node *nd = ctx->tape[i];
        if (!nd->out->grad) { /* nothing flows back through it (not on a path to y) */
            if (!nd->keep && !ctx->retain && !nd->alias) release_data(ctx, nd->out);
            NN_TRY(notify_ready(ctx, nd));
            continue;
        }
        s = grads_for_inputs(ctx, nd);
        if (s != NN_OK) return s; /* with the thread's message */
        s = nd->op->backward(ctx, nd);
        if (s != NN_OK) {
            ctx_fail(ctx, s);
            return s;
        }
        release_after(ctx, nd);
        NN_TRY(notify_ready(ctx, nd));
    }
    return NN_OK;
}

static nn_status check_backward(nn_ctx *ctx, nn_tensor *y)
{
    if (ctx->status != NN_OK) return nn_ctx_status(ctx);
    if (!y) return nn_error(NN_E_ARG, "backward: the output is NULL");
    if (y->dtype != NN_F32) return nn_error(NN_E_ARG, "backward: the output must be float32");
    return NN_OK;
}

nn_status nn_backward(nn_ctx *ctx, nn_tensor *loss)
{
    NN_TRY(check_backward(ctx, loss));
    if (ctx->backward_done) /* nn_backward_with stays repeatable: vector-Jacobian products that add up on purpose */
        return nn_error(NN_E_ARG, "backward: this graph was already backpropagated (a second pass would add its "
                                  "gradients twice): nn_ctx_reset and run the forward pass again");
    if (loss->numel != 1) {
        char b[64];
        return nn_error(NN_E_SHAPE, "backward: the loss must be one value, got shape %s "
                                    "(use nn_backward_with for a non-scalar output)",
                        nn_shape_str(loss, b, sizeof b));
    }
    return run_backward(ctx, loss, NULL);
}

nn_status nn_backward_with(nn_ctx *ctx, nn_tensor *y, const float *dy_host)
{
    NN_TRY(check_backward(ctx, y));
    if (!dy_host) return nn_error(NN_E_ARG, "backward: the output gradient is NULL");
    return run_backward(ctx, y, dy_host);
}
