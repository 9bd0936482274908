/* convnet bench: times every op of AlexNet (forward and backward, at the
 * model's own layer shapes: x (N, C, H, W) as the layer sees it) and the whole
 * training step and inference, on every backend built. Validation first (each
 * kernel runs once and is spot-checked against a float64 reference), then
 * warm-up, then the median of repeats. The model phases run in a child process
 * (this program re-executed) so that its peak resident memory is the step's
 * alone. Output: a terminal table, optionally JSON and an SVG chart. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchmarks/bench_util.h"
#include "config.h"
#include "core/backend.h"
#include "core/threads.h"
#if NN_HAVE_CUDA
#include "cuda/gemm.h"
#endif
#include "models/model.h"
#include "ops/registry.h"
#include "optim/optim.h"
#include "tools/cli.h"
#include "tools/model_cli.h"
#include "benchmarks/bench.h"

#define MAX_REPEATS 1000
/* SGEMM sizes for the machine's reference rate: large enough to reach the
 * library's steady rate, small enough to take well under a second. */
#define GEMM_N_CPU 2048
#define GEMM_N_GPU 8192
/* Spot checks: sampled outputs against a float64 reference. The tolerance is
 * relative to the sum of |terms|: float32 accumulation over up to ~10^4 terms
 * in a blocked GEMM stays well inside 1e-4 of it. */
#define CHECK_SAMPLES 64
#define CHECK_TOL 1e-4
/* With the GPU's TF32 switch on (NN_TF32=1, cuda/gemm.h) each product carries
 * two roundings to 10 mantissa bits: |e| <= 2^-10 |a b|, so 2e-3 of the sum
 * of |terms| (still ~500 times below what a wrong index gives). */
#define CHECK_TOL_TF32 2e-3

static double check_tol(const nn_backend *be)
{
    /* the module decides whether TF32 really runs (sm_80+); asked for is
     * enough to allow its rounding */
    const char *tf32 = getenv(NN_TF32_ENV);
    if (be->device == NN_CUDA && tf32 && tf32[0] == '1') return CHECK_TOL_TF32;
    return CHECK_TOL;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Peak resident set of this process in MiB (VmHWM). */
static double vm_hwm_mb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    if (f) {
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "VmHWM:", 6) == 0) kb = atof(line + 6);
        fclose(f);
    }
    if (kb == 0) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0) kb = (double)ru.ru_maxrss;
    }
    return kb / 1024.0;
}
/* ---- the machine's SGEMM rate ---- */

/* C = A B (n x n, row-major) at CHECK_SAMPLES random elements against float64:
 * one row of A and one column of B (all of B comes over once) per sample. */
static bool gemm_valid(const nn_backend *be, int n, const float *a, const float *b, const float *c)
{
    const size_t row = (size_t)n * sizeof(float);
    float *hb = malloc(row * (size_t)n), *ha = malloc(row);
    bool ok = hb && ha && be->copy(hb, NN_CPU, b, be->device, row * (size_t)n) == NN_OK;
    double worst = 0;
    nn_rng r = nn_rng_make(98);
    for (int smp = 0; ok && smp < CHECK_SAMPLES; smp++) {
        int i = (int)nn_rng_below(&r, (uint32_t)n), j = (int)nn_rng_below(&r, (uint32_t)n);
        float got;
        if (be->copy(ha, NN_CPU, a + (size_t)i * n, be->device, row) != NN_OK ||
            be->copy(&got, NN_CPU, c + (size_t)i * n + j, be->device, sizeof got) != NN_OK) {
            ok = false;
            break;
        }
        double ref = 0, mag = 1e-30;
        for (int p = 0; p < n; p++) {
            double t = (double)ha[p] * hb[(size_t)p * n + j];
            ref += t;
            mag += fabs(t);
        }
        double e = fabs(got - ref) / mag;
        if (!(e <= worst)) worst = e; /* NaN-safe */
    }
    if (ok && !(worst <= check_tol(be))) {
        fprintf(stderr, "bench: %s SGEMM %dx%dx%d fails validation (relative error %.3g > %g)\n", be->name, n, n,
                n, worst, check_tol(be));
        ok = false;
    }
    free(ha);
    free(hb);
    return ok;
}

static double measure_gemm(const nn_backend *be, int n, int repeats)
{
    size_t bytes = (size_t)n * n * sizeof(float);
    float *a = NULL, *b = NULL, *c = NULL;
    double rate = 0;
    if (be->alloc((void **)&a, bytes) || be->alloc((void **)&b, bytes) || be->alloc((void **)&c, bytes))
        goto out;
    be->rng_uniform(a, (size_t)n * n, 1, 0, -1, 1);
    be->rng_uniform(b, (size_t)n * n, 2, 0, -1, 1);
    double t[MAX_REPEATS];
    int r = repeats < 3 ? 3 : repeats;
    if (r > MAX_REPEATS) r = MAX_REPEATS;
    nn_linear_geom g = {n, n, n, 0};
    for (int i = -1; i < r; i++) {
        be->sync();
        double t0 = bench_now();
        if (be->device == NN_CPU)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        else
            be->linear_forward(&g, a, b, NULL, c); /* the GPU backend's GEMM */
        be->sync();
        if (i >= 0) t[i] = bench_now() - t0;
    }
    rate = 2.0 * n * (double)n * n / median(t, r) / 1e9;
    if (!gemm_valid(be, n, a, b, c)) rate = 0; /* a wrong product has no rate */
out:
    if (a) be->free(a);
    if (b) be->free(b);
    if (c) be->free(c);
    return rate;
}

/* ---- one op at one layer's shape (each op's case: bench_ops.c) ---- */

nn_status bench_case_alloc(op_case *c, void **p, size_t bytes)
{
    if (!bytes) return NN_OK;
    return c->be->alloc(p, bytes);
}

static void case_free(op_case *c)
{
    void *all[] = {c->x, c->y, c->dy, c->dx, c->w, c->dw, c->b, c->db, c->scale, c->probs,
                   c->loss, c->one, c->argmax, c->labels, c->mask, c->ws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) c->be->free(all[i]);
}

static nn_status case_setup(op_case *c, uint64_t seed)
{
    const nn_backend *be = c->be;
    size_t f = sizeof(float);
    NN_TRY(bench_case_alloc(c, (void **)&c->x, c->nx * f));
    NN_TRY(bench_case_alloc(c, (void **)&c->y, c->ny * f));
    NN_TRY(bench_case_alloc(c, (void **)&c->dy, c->ny * f));
    NN_TRY(bench_case_alloc(c, (void **)&c->dx, c->nx * f));
    NN_TRY(bench_case_alloc(c, (void **)&c->w, c->nw * f));
    NN_TRY(bench_case_alloc(c, (void **)&c->dw, c->nw * f));
    NN_TRY(bench_case_alloc(c, (void **)&c->b, c->nb * f));
    NN_TRY(bench_case_alloc(c, (void **)&c->db, c->nb * f));
    NN_TRY(be->rng_uniform(c->x, c->nx, seed, 0, c->bo->x_lo, 1.0f));
    NN_TRY(be->rng_uniform(c->dy, c->ny, seed, 1u << 30, -1.0f, 1.0f));
    NN_TRY(be->memset0(c->dx, c->nx * f));
    if (c->nw) {
        float a = 1.0f / sqrtf(c->fan);
        NN_TRY(be->rng_uniform(c->w, c->nw, seed, 2u << 30, -a, a));
        NN_TRY(be->rng_uniform(c->b, c->nb, seed, 3u << 30, -a, a));
        NN_TRY(be->memset0(c->dw, c->nw * f));
        NN_TRY(be->memset0(c->db, c->nb * f));
    }
    c->out = c->y;
    c->nout = c->ny;
    return c->bo->setup ? c->bo->setup(c, seed) : NN_OK;
}

/* Copies n elements of a device buffer to a new host buffer (NULL on failure). */
static void *to_host(const nn_backend *be, const void *p, size_t bytes)
{
    void *h = malloc(bytes ? bytes : 1);
    if (h && bytes && be->copy(h, NN_CPU, p, be->device, bytes) != NN_OK) {
        free(h);
        return NULL;
    }
    return h;
}

/* Samples CHECK_SAMPLES outputs (one when there is one) and compares them
 * with the op's float64 reference; returns the worst |y - ref| / (sum |terms|
 * + tiny), or INFINITY when a value is not finite or the copies fail. */
static double case_check(op_case *c)
{
    const nn_backend *be = c->be;
    size_t f = sizeof(float);
    size_t bad = 0;
    if (be->count_nonfinite(c->nout, c->out, &bad) || bad) return INFINITY;
    if (c->need_dx && (be->count_nonfinite(c->nx, c->dx, &bad) || bad)) return INFINITY;
    if (c->nw && (be->count_nonfinite(c->nw, c->dw, &bad) || bad)) return INFINITY;
    float *x = to_host(be, c->x, c->nx * f), *y = to_host(be, c->out, c->nout * f);
    float *w = c->nw ? to_host(be, c->w, c->nw * f) : NULL;
    float *b = c->nb ? to_host(be, c->b, c->nb * f) : NULL;
    int32_t *lab = c->nlabels ? to_host(be, c->labels, c->nlabels * sizeof(int32_t)) : NULL;
    double worst = 0;
    if (!x || !y || (c->nw && (!w || !b)) || (c->nlabels && !lab)) {
        worst = INFINITY;
        goto out;
    }
    const bench_host hs = {x, w, b, lab};
    nn_rng r = nn_rng_make(99);
    int samples = c->nout == 1 ? 1 : CHECK_SAMPLES;
    for (int smp = 0; smp < samples; smp++) {
        size_t o = (size_t)nn_rng_below(&r, (uint32_t)(c->nout < UINT32_MAX ? c->nout : UINT32_MAX));
        double mag = 1e-30, got = y[o];
        double ref = c->bo->ref(c, &hs, o, got, &mag);
        double e = fabs(got - ref) / mag;
        if (!(e <= worst)) worst = e; /* NaN-safe */
    }
out:
    free(x);
    free(y);
    free(w);
    free(b);
    free(lab);
    return worst;
}

/* The weight and bias gradients (zero before the one backward of the
 * validation run) at CHECK_SAMPLES random elements of dw against the op's
 * float64 reference (bench_op.wgrad_ref; dw and the bias of the same output
 * row). Returns the worst relative error as case_check does; 0 for ops
 * without weights. */
static double grad_check(op_case *c)
{
    if (!c->bo->wgrad_ref || !c->nw) return 0;
    const nn_backend *be = c->be;
    const size_t f = sizeof(float);
    float *x = to_host(be, c->x, c->nx * f), *dy = to_host(be, c->dy, c->ny * f);
    float *dw = to_host(be, c->dw, c->nw * f), *db = to_host(be, c->db, c->nb * f);
    double worst = 0;
    if (!x || !dy || !dw || !db) {
        worst = INFINITY;
        goto out;
    }
    nn_rng r = nn_rng_make(97);
    for (int smp = 0; smp < CHECK_SAMPLES; smp++) {
        size_t o = (size_t)nn_rng_below(&r, (uint32_t)c->nw);
        bench_wgrad g = {0, 1e-30, 0, 1e-30, 0};
        c->bo->wgrad_ref(c, x, dy, o, &g);
        const double e = fmax(fabs(dw[o] - g.dw) / g.dw_mag, fabs(db[g.row] - g.db) / g.db_mag);
        if (!(e <= worst)) worst = e; /* NaN-safe */
    }
out:
    free(x);
    free(dy);
    free(dw);
    free(db);
    return worst;
}

/* Times forward and backward: the validation run, one warm-up, then the
 * median of `repeats`. */
static nn_status time_case(op_case *c, int repeats, op_result *res)
{
    const nn_backend *be = c->be;
    NN_TRY(c->bo->run(c, false));
    NN_TRY(c->bo->run(c, true));
    NN_TRY(be->sync());
    res->check_err = case_check(c);
    const double gerr = grad_check(c);
    if (!(gerr <= res->check_err)) res->check_err = gerr; /* NaN-safe */
    if (!(res->check_err <= check_tol(be)))
        return nn_error(NN_E_RANGE, "bench: %s %s on %s fails validation (relative error %.3g > %g)",
                        res->layer, res->op, be->name, res->check_err, check_tol(be));
    double tf[MAX_REPEATS], tb[MAX_REPEATS];
    for (int i = -1; i < repeats; i++) {
        double t0 = bench_now();
        NN_TRY(c->bo->run(c, false));
        NN_TRY(be->sync());
        double t1 = bench_now();
        NN_TRY(c->bo->run(c, true));
        NN_TRY(be->sync());
        double t2 = bench_now();
        if (i >= 0) {
            tf[i] = t1 - t0;
            tb[i] = t2 - t1;
        }
    }
    res->fwd_s = median(tf, repeats);
    res->bwd_s = median(tb, repeats);
    return NN_OK;
}

/* Every layer of the model at batch n (through the op it runs, as the
 * sequential model names it in the registry), then the loss. */
static nn_status bench_ops(const bench_opts *o, const nn_seq *s, dev_result *dr)
{
    const nn_backend *be = nn_backend_get(dr->dev);
    const int n = o->batch;
    dr->nops = 0;
    bool first = true; /* the first layer needs no input gradient */
    for (int i = 0; i <= s->n && dr->nops < MAX_OPS; i++) {
        const nn_layer *l = i < s->n ? &s->l[i] : NULL;
        const nn_op_info *op = l ? nn_seq_layer_op(l) : &nn_op_softmax_xent;
        const bench_op *bo = op ? bench_op_find(op->name) : NULL;
        if (!bo) continue; /* flatten (a view), or an op with no benchmark case */
        op_case c;
        memset(&c, 0, sizeof c);
        c.be = be;
        c.bo = bo;
        c.need_dx = !first || !l; /* the loss always feeds the gradient back */
        op_result *res = &dr->ops[dr->nops];
        memset(res, 0, sizeof *res);
        res->op = op->name;
        if (l) {
            const int *in = l->in_shape, *out = l->out_shape;
            c.nx = (size_t)n * in[0] * in[1] * in[2];
            c.ny = (size_t)n * out[0] * out[1] * out[2];
            snprintf(res->layer, sizeof res->layer, "%s", l->name);
            snprintf(res->shape, sizeof res->shape, "%dx%dx%dx%d", n, in[0], in[1], in[2]);
        } else {
            snprintf(res->layer, sizeof res->layer, "loss");
        }
        bo->shape(&c, l ? l : &s->l[s->n - 1], n, res);
        nn_status st = case_setup(&c, 1000 + (uint64_t)i);
        if (st == NN_OK) st = time_case(&c, o->repeats, res);
        case_free(&c);
        if (st != NN_OK) return st;
        first = false;
        dr->nops++;
    }
    return NN_OK;
}

/* ---- the whole model (run in a child process) ---- */

/* For the inference phase: the model builder gave every parameter a zeroed
 * gradient; an inference-only process keeps none (PyTorch's inference worker
 * holds none either: its .grad stay None). Their pages were resident for a
 * moment, so the peak resident set restarts from here (Linux: clear_refs 5
 * resets VmHWM; elsewhere the build's peak stays in the figure). */
static void drop_param_grads(nn_params *ps)
{
    for (int i = 0; i < ps->n; i++) {
        nn_tensor_free(ps->p[i].t->grad);
        ps->p[i].t->grad = NULL;
        ps->p[i].t->requires_grad = false;
    }
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

/* What one model phase runs: the model, its optimizer (training only), one
 * batch of random images and labels, and the context its steps record in. */
typedef struct phase_state {
    nn_seq seq;
    nn_optim *opt;
    nn_ctx *ctx;
    nn_tensor *x, *yl;
} phase_state;

/* The optimizer, the batch and the context for a model built in ps->seq;
 * rng goes on from the model's initialization. */
static nn_status phase_setup(const bench_opts *o, const nn_model_config *cfg, nn_device dev, bool train,
                             nn_rng *rng, phase_state *ps)
{
    nn_optim_config oc = nn_optim_paper_sgd();
    if (strcmp(o->optim, "sgd") != 0) { /* train's defaults for the others */
        oc = (nn_optim_config){.lr = 1e-3f};
        NN_TRY(nn_optim_parse_kind(o->optim, &oc.kind));
    }
    int xs[4] = {o->batch, cfg->in_channels, cfg->in_size, cfg->in_size};
    int32_t *labels = malloc((size_t)o->batch * sizeof *labels);
    if (!labels) return nn_error(NN_E_NOMEM, "bench: out of memory");
    for (int i = 0; i < o->batch; i++) labels[i] = (int32_t)nn_rng_below(rng, (uint32_t)cfg->classes);
    if (!train) drop_param_grads(&ps->seq.params);
    nn_status st = train ? nn_optim_new(&ps->opt, &oc, &ps->seq.params) : NN_OK;
    if (st == NN_OK) st = nn_tensor_new(&ps->x, NN_F32, dev, 4, xs);
    if (st == NN_OK) st = nn_tensor_uniform(ps->x, rng, -1.0f, 1.0f);
    if (st == NN_OK) st = nn_tensor_from(&ps->yl, NN_I32, dev, 1, &o->batch, labels);
    free(labels);
    NN_TRY(st);
    if (!(ps->ctx = nn_ctx_new())) return nn_error(NN_E_NOMEM, "bench: out of memory");
    nn_ctx_set_grad(ps->ctx, train);
    return NN_OK;
}

/* A step that returned no tensor or a failed status: the context's error
 * first, the step's next. */
static nn_status step_failed(nn_ctx *ctx, nn_status st)
{
    if (nn_ctx_status(ctx)) st = nn_ctx_status(ctx);
    if (!st) st = nn_error(NN_E_ARG, "bench: the model step failed");
    return st;
}

/* The loss of the first training step into *loss; a non-finite one is an error. */
static nn_status first_loss(const nn_tensor *l, double *loss)
{
    float lv = NAN;
    NN_TRY(nn_tensor_read(l, &lv));
    *loss = lv;
    if (!isfinite(lv)) return nn_error(NN_E_NONFINITE, "bench: the first training step's loss is %g", (double)lv);
    return NN_OK;
}

/* One step, finished on the device: training (forward, loss, backward,
 * update; its loss into *loss unless NULL) or inference (forward). */
static nn_status phase_step(phase_state *ps, const nn_backend *be, bool train, double *loss)
{
    nn_status st = NN_OK;
    nn_ctx_reset(ps->ctx);
    nn_ctx_set_training(ps->ctx, train);
    nn_tensor *out = nn_seq_forward(ps->ctx, &ps->seq, ps->x);
    if (train) {
        nn_tensor *l = nn_softmax_xent(ps->ctx, out, ps->yl);
        if (!l || (st = nn_backward(ps->ctx, l)) || (st = nn_optim_step(ps->opt)) ||
            (st = nn_params_zero_grad(&ps->seq.params)))
            return step_failed(ps->ctx, st);
        if (loss) NN_TRY(first_loss(l, loss));
    } else if (!out) {
        return step_failed(ps->ctx, st);
    }
    return be->sync();
}

/* o->repeats timed steps after two unmeasured ones (the first grows the
 * arenas, the second is warm), and the peak memory, into *pr. */
static nn_status phase_time(const bench_opts *o, nn_device dev, bool train, phase_state *ps,
                            phase_result *pr)
{
    const nn_backend *be = nn_backend_get(dev);
    double t[MAX_REPEATS];
    for (int i = -2; i < o->repeats; i++) {
        double t0 = bench_now();
        NN_TRY(phase_step(ps, be, train, train && i == -2 ? &pr->loss : NULL));
        if (i >= 0) t[i] = bench_now() - t0;
    }
    pr->ran = true;
    pr->min_s = pr->max_s = t[0];
    for (int i = 0; i < o->repeats; i++) {
        pr->min_s = t[i] < pr->min_s ? t[i] : pr->min_s;
        pr->max_s = t[i] > pr->max_s ? t[i] : pr->max_s;
    }
    pr->median_s = median(t, o->repeats);
    pr->rss_mb = vm_hwm_mb();
    pr->dev_peak_mb = dev == NN_CPU ? 0 : (double)be->peak_bytes() / (1024.0 * 1024.0);
    return NN_OK;
}

/* The whole model's training step (train) or inference on dev, timed. */
static nn_status model_phase(const bench_opts *o, nn_device dev, bool train, phase_result *pr)
{
    nn_model_config cfg;
    NN_TRY(bench_model_config(o, &cfg));
    nn_rng rng = nn_rng_make(1);
    phase_state ps = {0};
    nn_status st = nn_model_build(&ps.seq, &cfg, dev, &rng);
    if (st) return st;
    st = phase_setup(o, &cfg, dev, train, &rng, &ps);
    if (st == NN_OK) st = phase_time(o, dev, train, &ps, pr);
    nn_ctx_free(ps.ctx);
    nn_tensor_free(ps.x);
    nn_tensor_free(ps.yl);
    nn_optim_free(ps.opt);
    nn_seq_free(&ps.seq);
    return st;
}

nn_status bench_model_config(const bench_opts *o, nn_model_config *cfg)
{
    if (strcmp(o->model, "lenet") == 0) {
        *cfg = nn_lenet_config();
    } else if (strcmp(o->model, "alexnet") == 0) {
        *cfg = nn_alexnet_config();
        cfg->width = o->width;
        cfg->fc = o->fc;
        cfg->dropout = o->dropout;
    } else {
        return nn_error(NN_E_ARG, "bench: unknown --model '%s' (expected alexnet or lenet)", o->model);
    }
    if (o->size) cfg->in_size = o->size;
    if (o->channels) cfg->in_channels = o->channels;
    if (o->classes) cfg->classes = o->classes;
    return NN_OK;
}

const char *bench_model_title(const bench_opts *o, char *buf, size_t n)
{
    nn_model_config c = {0};
    if (bench_model_config(o, &c) != NN_OK) {
        snprintf(buf, n, "%s", o->model);
    } else if (strcmp(c.arch, "alexnet") == 0) {
        snprintf(buf, n, "AlexNet %dx%dx%d -> %d (width %g, fc %d)", c.in_channels, c.in_size, c.in_size, c.classes,
                 (double)c.width, c.fc);
    } else {
        snprintf(buf, n, "LeNet %dx%dx%d -> %d", c.in_channels, c.in_size, c.in_size, c.classes);
    }
    return buf;
}

/* Re-executes this program for one model phase and reads its result line. */
static nn_status spawn_phase(const bench_opts *o, nn_device dev, bool train, phase_result *pr)
{
    char b[16], th[16], r[16], sz[16], wd[32], fc[16], dr[32], ch[16], cl[16];
    snprintf(b, sizeof b, "%d", o->batch);
    snprintf(th, sizeof th, "%d", o->threads);
    snprintf(r, sizeof r, "%d", o->repeats);
    snprintf(sz, sizeof sz, "%d", o->size);
    snprintf(wd, sizeof wd, "%.9g", (double)o->width);
    snprintf(fc, sizeof fc, "%d", o->fc);
    snprintf(dr, sizeof dr, "%.9g", (double)o->dropout);
    snprintf(ch, sizeof ch, "%d", o->channels);
    snprintf(cl, sizeof cl, "%d", o->classes);
    char *argv[] = {"convnet", "bench", "--phase", train ? "train" : "infer", "--device",
                    (char *)nn_device_name(dev), "--batch", b, "--threads", th, "--repeats", r,
                    "--size", sz, "--model", (char *)o->model, "--optim", (char *)o->optim, "--width", wd,
                    "--fc", fc, "--dropout", dr, "--channels", ch, "--classes", cl, NULL};
    int fd[2];
    if (pipe(fd) != 0) return nn_error(NN_E_IO, "bench: pipe failed");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return nn_error(NN_E_IO, "bench: fork failed");
    if (pid == 0) {
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(fd[1]);
    char buf[1024] = "";
    size_t got = 0;
    ssize_t k;
    while (got + 1 < sizeof buf && (k = read(fd[0], buf + got, sizeof buf - 1 - got)) > 0) got += (size_t)k;
    buf[got] = '\0';
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    const char *line = strstr(buf, "BENCH_PHASE ");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !line)
        return nn_error(NN_E_ARG, "bench: the %s %s phase failed (its message is above)",
                        nn_device_name(dev), train ? "training" : "inference");
    if (sscanf(line, "BENCH_PHASE median=%lf min=%lf max=%lf loss=%lf rss_mb=%lf dev_peak_mb=%lf",
               &pr->median_s, &pr->min_s, &pr->max_s, &pr->loss, &pr->rss_mb, &pr->dev_peak_mb) != 6)
        return nn_error(NN_E_ARG, "bench: unreadable phase result '%s'", line);
    pr->ran = true;
    return NN_OK;
}
static const char USAGE[] = "[--device cpu|cuda|all] [--batch B] [--threads T] [--repeats R] [--size S] "
                            "[--model alexnet|lenet] [--width W] [--fc F] [--dropout P] [--channels C] "
                            "[--classes K] [--optim sgd|adam|adamw] [--json FILE] [--svg FILE] "
                            "[--ops-only|--model-only]";
static const char ABOUT[] =
    "Times every op of a model (forward and backward, at the model's layer shapes) and the whole\n"
    "training step (forward, backward, optimizer update) and inference, on each backend built.\n"
    "The model: the paper's AlexNet (3x224x224 -> 1000, SGD) unless the flags say otherwise;\n"
    "what `convnet train` runs with no options: --size 64 --width 0.5 --fc 1024 --dropout 0.3\n"
    "--channels 1 --classes 10 --optim adam; LeNet: --model lenet.\n"
    "Each kernel is validated against a float64 reference first; times are medians of R\n"
    "repeats after warm-up. Rates: GFLOP/s from counted FLOPs (conv/linear: 2 x MACs forward,\n"
    "twice that backward) and their share of the SGEMM rate measured here first. Peak memory:\n"
    "the resident set of a child process running only that phase (CPU), the allocator's\n"
    "high-water mark (GPU).";

/* Flags into *o; CLI_GO_ON, or the exit status (0 for --help, 2 for a usage error). */
static int bench_parse_opts(bench_opts *o, int argc, char **argv)
{
    *o = (bench_opts){.device = "all", .batch = 64, .threads = 0, .repeats = 5, .size = 0, .model = "alexnet",
                      .optim = "sgd", .width = 1.0f, .fc = 4096, .dropout = 0.5f, .channels = 0, .classes = 0};
    const cli_opt opts[] = {
        {"device", CLI_STR, &o->device, "DEV", "cpu, cuda or all (default: every backend built)"},
        {"batch", CLI_INT, &o->batch, "B", "batch size (default 64)"},
        {"threads", CLI_INT, &o->threads, "T", "CPU threads (default: all cores)"},
        {"repeats", CLI_INT, &o->repeats, "R", "timed repeats after warm-up; the median is reported (default 5)"},
        {"size", CLI_INT, &o->size, "S", "input size S x S (default: the model's, 224 or 28)"},
        {"model", CLI_STR, &o->model, "NAME", "alexnet (default) or lenet"},
        {"width", CLI_FLOAT, &o->width, "W", "alexnet conv channel multiplier (default 1)"},
        {"fc", CLI_INT, &o->fc, "F", "alexnet hidden fully connected width (default 4096)"},
        {"dropout", CLI_FLOAT, &o->dropout, "P", "alexnet dropout (default 0.5)"},
        {"channels", CLI_INT, &o->channels, "C", "input channels (default: the model's, 3 or 1)"},
        {"classes", CLI_INT, &o->classes, "K", "classes (default: the model's, 1000 or 10)"},
        {"optim", CLI_STR, &o->optim, "KIND", "sgd (the paper's rule, default), adam or adamw (lr 1e-3)"},
        {"json", CLI_STR, &o->json, "FILE", "write every number to FILE as JSON"},
        {"svg", CLI_STR, &o->svg, "FILE", "write a chart of the time per layer to FILE"},
        {"ops-only", CLI_BOOL, &o->ops_only, NULL, "time the ops only"},
        {"model-only", CLI_BOOL, &o->model_only, NULL, "time the whole model only"},
        {"phase", CLI_STR, &o->phase, "train|infer", "internal: run one model phase and print its result line"},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    int r = cli_parse("bench", USAGE, ABOUT, opts, nopts, argc, argv, NULL, 0, NULL);
    if (r == CLI_HELP) return 0;
    if (r != CLI_OK) return r;
    static const char *const alexnet_only[] = {"width", "fc", "dropout", NULL};
    char given[128];
    if (strcmp(o->model, "lenet") == 0 && cli_given_list(opts, nopts, argc, argv, alexnet_only, given, sizeof given))
        return cli_fail("bench", "%s: AlexNet's, not LeNet's (--model lenet)", given);
    return CLI_GO_ON;
}

/* The flags' ranges, then the thread count set (o->threads: the count in use). */
static int bench_validate(bench_opts *o)
{
    if (o->batch < 1 || o->batch > 65536) return cli_fail("bench", "--batch must be between 1 and 65536");
    if (o->threads < 0 || o->threads > 1024) return cli_fail("bench", "--threads must be between 1 and 1024");
    if (o->repeats < 1 || o->repeats > MAX_REPEATS)
        return cli_fail("bench", "--repeats must be between 1 and %d", MAX_REPEATS);
    if (o->size != 0 && (o->size < 8 || o->size > 4096)) return cli_fail("bench", "--size must be between 8 and 4096");
    if (o->channels < 0 || o->channels > 64 || o->classes < 0 || o->classes > 100000)
        return cli_fail("bench", "--channels must be 1 to 64 and --classes 1 to 100000");
    nn_optim_kind ok;
    if (nn_optim_parse_kind(o->optim, &ok) != NN_OK) return cli_fail("bench", "%s", nn_errmsg());
    if (o->ops_only && o->model_only) return cli_fail("bench", "--ops-only and --model-only exclude each other");
    if (nn_set_threads(o->threads, &o->threads) != NN_OK) return cli_fail("bench", "%s", nn_errmsg());
    return CLI_GO_ON;
}

/* The backends --device names, into devs[0..*nd-1]; CLI_GO_ON or the exit status. */
static int bench_devices(const bench_opts *o, nn_device *devs, int *nd)
{
    *nd = 0;
    if (strcmp(o->device, "all") == 0) {
        devs[(*nd)++] = NN_CPU;
        if (nn_device_available(NN_CUDA)) devs[(*nd)++] = NN_CUDA;
        return CLI_GO_ON;
    }
    if (nn_device_parse(o->device, &devs[0]) != NN_OK) return cli_fail("bench", "%s", nn_errmsg());
    *nd = 1;
    if (!nn_backend_need(devs[0], "bench") || !nn_device_available(devs[0])) {
        fprintf(stderr, "convnet bench: the %s backend is not available here (%s)\n", o->device, nn_errmsg());
        return 1;
    }
    return CLI_GO_ON;
}

/* The child (spawn_phase): one phase, one result line; the exit status. */
static int bench_child_phase(const bench_opts *o, nn_device dev)
{
    bool train = strcmp(o->phase, "train") == 0;
    if (!train && strcmp(o->phase, "infer") != 0) return cli_fail("bench", "--phase expects train or infer");
    phase_result pr = {0};
    if (model_phase(o, dev, train, &pr) != NN_OK) return cli_lib_fail("bench");
    printf("BENCH_PHASE median=%.9g min=%.9g max=%.9g loss=%.9g rss_mb=%.3f dev_peak_mb=%.3f\n", pr.median_s,
           pr.min_s, pr.max_s, pr.loss, pr.rss_mb, pr.dev_peak_mb);
    return 0;
}

static void print_machine(const bench_opts *o, const nn_seq *seq)
{
    char cpu[256];
    bench_cpu_name(cpu, sizeof cpu);
    printf("machine: %s, %ld cores; %d threads; %s\n", cpu, sysconf(_SC_NPROCESSORS_ONLN), o->threads,
           openblas_get_config());
    char title[128];
    const double macs = (double)nn_seq_macs(seq); /* LeNet's 0.4 M would read "0.000 G" */
    printf("%s, batch %d, fp32, %s; %.3f %s MAC/image forward\n", bench_model_title(o, title, sizeof title), o->batch,
           o->optim, macs >= 1e8 ? macs / 1e9 : macs / 1e6, macs >= 1e8 ? "G" : "M");
    fflush(stdout);
}

/* One backend: its SGEMM rate, then the ops, then the model phases (each as
 * the flags ask), printed as they come; the exit status. */
static int bench_device(const bench_opts *o, const nn_seq *seq, nn_device dev, dev_result *dr)
{
    dr->dev = dev;
    dr->gemm_n = dev == NN_CPU ? GEMM_N_CPU : GEMM_N_GPU;
    dr->gemm_gflops = measure_gemm(nn_backend_get(dev), dr->gemm_n, 3);
    printf("%s: SGEMM %dx%dx%d: %.1f GFLOP/s\n", nn_device_name(dev), dr->gemm_n, dr->gemm_n, dr->gemm_n,
           dr->gemm_gflops);
    fflush(stdout);
    if (!(dr->gemm_gflops > 0)) {
        fprintf(stderr, "convnet bench: could not measure SGEMM on %s: %s\n", nn_device_name(dev), nn_errmsg());
        return 1;
    }
    if (!o->model_only) {
        if (bench_ops(o, seq, dr) != NN_OK) return cli_lib_fail("bench");
        bench_print_ops(dr, o->repeats);
        fflush(stdout);
    }
    if (!o->ops_only &&
        (spawn_phase(o, dev, true, &dr->train) != NN_OK || spawn_phase(o, dev, false, &dr->infer) != NN_OK))
        return cli_lib_fail("bench");
    return 0;
}

/* The model table, the JSON file and the chart, as the flags ask; the exit status. */
static int bench_report(const bench_opts *o, const dev_result *drs, int nd, const nn_seq *seq)
{
    if (!o->ops_only) bench_print_model(drs, nd, seq, o);
    if (o->json) {
        if (bench_write_json(o->json, drs, nd, seq, o) != NN_OK) return cli_lib_fail("bench");
        printf("\nJSON written to %s\n", o->json);
    }
    if (o->svg && !o->model_only) {
        if (bench_write_svg(o->svg, drs, nd, o) != NN_OK) return cli_lib_fail("bench");
        printf("chart written to %s\n", o->svg);
    }
    return 0;
}

/* Every backend in turn, then the report; the exit status. */
static int bench_all(const bench_opts *o, const nn_seq *seq, const nn_device *devs, int nd)
{
    dev_result *drs = calloc((size_t)nd, sizeof *drs);
    if (!drs) return 1;
    int rc = 0;
    for (int d = 0; d < nd && rc == 0; d++) rc = bench_device(o, seq, devs[d], &drs[d]);
    if (rc == 0) rc = bench_report(o, drs, nd, seq);
    free(drs);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o;
    nn_device devs[NN_NDEVICES];
    int nd = 0;
    int rc = bench_parse_opts(&o, argc, argv);
    if (rc == CLI_GO_ON) rc = bench_validate(&o);
    if (rc == CLI_GO_ON) rc = bench_devices(&o, devs, &nd);
    if (rc != CLI_GO_ON) return rc;
    if (o.phase) return bench_child_phase(&o, devs[0]);

    nn_model_config cfg;
    nn_seq seq;
    if (bench_model_config(&o, &cfg) != NN_OK || nn_model_build(&seq, &cfg, NN_CPU, NULL) != NN_OK)
        return cli_fail("bench", "%s", nn_errmsg());
    o.size = cfg.in_size;
    print_machine(&o, &seq);
    rc = bench_all(&o, &seq, devs, nd);
    nn_seq_free(&seq);
    return rc;
}
