/* `convnet gradcheck`: every op's analytic gradients against central
 * differences (core/gradcheck.h) on small random shapes drawn from a seed, on
 * the CPU or the GPU. Each op gets a case: shapes and parameters drawn from
 * the seed, heap inputs (x, w, b, ...) that require grad, and a function that
 * calls the op. Exit status 1 if any op fails or cannot run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"
#include "core/backend.h"
#include "core/gradcheck.h"
#include "ops/ops.h"

/* Big tensors are sampled: 200 random elements per input keep the whole
 * command well under a second on the CPU while still hitting every kind of
 * position (borders, group boundaries) across seeds. */
#define GC_MAX_POINTS 200

typedef struct gc_case {
    const char *names[NN_GC_MAX_INPUTS]; /* "x", "w", ... */
    nn_tensor *in[NN_GC_MAX_INPUTS];
    int n;
    char params[96]; /* the op's parameters, for the table */
    /* what the gc function needs */
    nn_conv2d_params conv;
    nn_lrn_params lrn;
    nn_pool_params pool;
    float p;
} gc_case;

typedef struct gc_op {
    const char *name;
    nn_status (*make)(gc_case *c, nn_rng *r, nn_device dev);
    nn_gc_fn fn;
} gc_op;

/* uniform integer in [lo, hi] */
static int pick(nn_rng *r, int lo, int hi) { return lo + (int)nn_rng_below(r, (uint32_t)(hi - lo + 1)); }

/* A random F32 input in [lo, hi) that requires grad. */
static nn_status add_rand(gc_case *c, const char *name, nn_rng *r, nn_device dev, float lo, float hi, int ndim,
                          const int *shape)
{
    nn_tensor *t = NULL;
    NN_TRY(nn_tensor_new(&t, NN_F32, dev, ndim, shape));
    c->in[c->n] = t;
    c->names[c->n++] = name;
    NN_TRY(nn_tensor_uniform(t, r, lo, hi));
    return nn_tensor_require_grad(t);
}

/* An input from host data (F32 requiring grad, or I32 passed through). */
static nn_status add_host(gc_case *c, const char *name, nn_device dev, nn_dtype dt, int ndim, const int *shape,
                          const void *data)
{
    nn_tensor *t = NULL;
    NN_TRY(nn_tensor_from(&t, dt, dev, ndim, shape, data));
    c->in[c->n] = t;
    c->names[c->n++] = name;
    return dt == NN_F32 ? nn_tensor_require_grad(t) : NN_OK;
}

/* ---- the ops ---- */

static nn_tensor *conv_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_conv2d(ctx, in[0], in[1], in[2], ((gc_case *)user)->conv);
}

static nn_status conv_make(gc_case *c, nn_rng *r, nn_device dev)
{
    int g = pick(r, 1, 3), n = pick(r, 1, 2), ci = g * pick(r, 1, 3), co = g * pick(r, 1, 3);
    int k = pick(r, 1, 5), s = pick(r, 1, 3), p = pick(r, 0, k / 2);
    int h = pick(r, k + 1, k + 8), w = pick(r, k + 1, k + 8);
    c->conv = (nn_conv2d_params){s, s, p, p, g};
    snprintf(c->params, sizeof c->params, "stride %d, pad %d, groups %d", s, p, g);
    int xs[4] = {n, ci, h, w}, ws[4] = {co, ci / g, k, k}, bs[1] = {co};
    NN_TRY(add_rand(c, "x", r, dev, -1, 1, 4, xs));
    NN_TRY(add_rand(c, "w", r, dev, -1, 1, 4, ws));
    return add_rand(c, "b", r, dev, -1, 1, 1, bs);
}

static nn_tensor *relu_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    return nn_relu(ctx, in[0]);
}

static nn_status relu_make(gc_case *c, nn_rng *r, nn_device dev)
{
    int xs[4] = {pick(r, 1, 2), pick(r, 1, 4), pick(r, 2, 7), pick(r, 2, 7)};
    snprintf(c->params, sizeof c->params, "-");
    return add_rand(c, "x", r, dev, -1, 1, 4, xs);
}

static nn_tensor *lrn_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_lrn(ctx, in[0], ((gc_case *)user)->lrn);
}

static nn_status lrn_make(gc_case *c, nn_rng *r, nn_device dev)
{
    /* The paper's alpha (1e-4) makes LRN nearly linear, which would let a
     * wrong cross-channel term pass: a larger alpha and inputs in [-2, 2]
     * give that term weight. */
    c->lrn = (nn_lrn_params){2 * pick(r, 1, 3) + 1, 0.05f + 0.45f * nn_rng_uniform1(r), NN_LRN_BETA, NN_LRN_K};
    snprintf(c->params, sizeof c->params, "size %d, alpha %.3g, beta %g, k %g", c->lrn.size,
             (double)c->lrn.alpha, (double)c->lrn.beta, (double)c->lrn.k);
    int xs[4] = {pick(r, 1, 2), pick(r, 1, 9), pick(r, 2, 5), pick(r, 2, 5)};
    return add_rand(c, "x", r, dev, -2, 2, 4, xs);
}

static nn_tensor *pool_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_maxpool2d(ctx, in[0], ((gc_case *)user)->pool);
}

static nn_status pool_make(gc_case *c, nn_rng *r, nn_device dev)
{
    int k = pick(r, 2, 3), s = pick(r, 1, k), p = pick(r, 0, k / 2);
    c->pool = (nn_pool_params){k, k, s, s, p, p};
    snprintf(c->params, sizeof c->params, "kernel %d, stride %d, pad %d", k, s, p);
    int xs[4] = {pick(r, 1, 2), pick(r, 1, 3), pick(r, k + 1, k + 7), pick(r, k + 1, k + 7)};
    /* Distinct values 0.05 apart (a shuffled ramp): a step of eps = 0.01 can
     * never reorder two of them, so no point sits on a tie. */
    size_t n = (size_t)xs[0] * xs[1] * xs[2] * xs[3];
    int32_t *perm = malloc(n * sizeof *perm);
    float *v = malloc(n * sizeof *v);
    nn_status st = NN_OK;
    if (!perm || !v) {
        st = nn_error(NN_E_NOMEM, "gradcheck: out of memory");
    } else {
        for (size_t i = 0; i < n; i++) perm[i] = (int32_t)i;
        nn_rng_shuffle(r, perm, n);
        for (size_t i = 0; i < n; i++) v[i] = 0.05f * ((float)perm[i] - 0.5f * (float)n);
        st = add_host(c, "x", dev, NN_F32, 4, xs, v);
    }
    free(perm);
    free(v);
    return st;
}

static nn_tensor *dropout_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_dropout(ctx, in[0], ((gc_case *)user)->p);
}

static nn_status dropout_make(gc_case *c, nn_rng *r, nn_device dev)
{
    /* training mode; the checker restarts the generator before every
     * evaluation, so all of them see the same mask */
    c->p = 0.1f + 0.7f * nn_rng_uniform1(r);
    snprintf(c->params, sizeof c->params, "p %.3g, training", (double)c->p);
    int xs[4] = {pick(r, 1, 2), pick(r, 1, 4), pick(r, 2, 7), pick(r, 2, 7)};
    return add_rand(c, "x", r, dev, -1, 1, 4, xs);
}

static nn_tensor *linear_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    return nn_linear(ctx, in[0], in[1], in[2]);
}

static nn_status linear_make(gc_case *c, nn_rng *r, nn_device dev)
{
    int n = pick(r, 1, 4), i = pick(r, 1, 12), o = pick(r, 1, 10);
    int xs[2] = {n, i}, ws[2] = {o, i}, bs[1] = {o};
    snprintf(c->params, sizeof c->params, "-");
    NN_TRY(add_rand(c, "x", r, dev, -1, 1, 2, xs));
    NN_TRY(add_rand(c, "w", r, dev, -1, 1, 2, ws));
    return add_rand(c, "b", r, dev, -1, 1, 1, bs);
}

static nn_tensor *xent_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    return nn_softmax_xent(ctx, in[0], in[1]);
}

static nn_status xent_make(gc_case *c, nn_rng *r, nn_device dev)
{
    int n = pick(r, 1, 5), k = pick(r, 2, 10);
    int xs[2] = {n, k}, ls[1] = {n};
    int32_t labels[5];
    for (int i = 0; i < n; i++) labels[i] = (int32_t)nn_rng_below(r, (uint32_t)k);
    snprintf(c->params, sizeof c->params, "%d classes", k);
    NN_TRY(add_rand(c, "logits", r, dev, -3, 3, 2, xs));
    return add_host(c, "labels", dev, NN_I32, 1, ls, labels);
}

static const gc_op OPS[] = {
    {"conv2d", conv_make, conv_fn},       {"relu", relu_make, relu_fn},
    {"lrn", lrn_make, lrn_fn},            {"maxpool2d", pool_make, pool_fn},
    {"dropout", dropout_make, dropout_fn}, {"linear", linear_make, linear_fn},
    {"softmax_xent", xent_make, xent_fn},
};
#define NOPS ((int)(sizeof OPS / sizeof OPS[0]))

static void case_free(gc_case *c)
{
    for (int i = 0; i < c->n; i++) nn_tensor_free(c->in[i]);
    c->n = 0;
}

/* Runs one op; prints its rows; returns true when it passed. */
static bool run_op(const gc_op *op, uint64_t seed, nn_device dev, double threshold)
{
    gc_case c;
    memset(&c, 0, sizeof c);
    /* each op draws its shapes from its own stream, so the shapes of one op
     * do not depend on which other ops were asked for */
    nn_rng r = nn_rng_make(seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(op - OPS + 1)));
    nn_status s = op->make(&c, &r, dev);
    nn_gradcheck_result res;
    memset(&res, 0, sizeof res);
    if (s == NN_OK) {
        nn_gradcheck_opts o = {.threshold = threshold, .seed = seed, .max_points = GC_MAX_POINTS};
        s = nn_gradcheck(op->fn, &c, c.n, c.in, &o, &res);
    }
    bool ok = s == NN_OK && res.ok;
    for (int i = 0; i < c.n; i++) {
        char shape[48];
        nn_shape_str(c.in[i], shape, sizeof shape);
        const nn_gradcheck_input *g = &res.in[i];
        const char *opname = i == 0 ? op->name : "";
        if (s != NN_OK || !g->checked) {
            printf("%-13s %-7s %-12s %7s %8s %11s %11s  %s\n", opname, c.names[i], shape, "-", "-", "-", "-",
                   c.in[i]->dtype == NN_F32 ? "-" : "(int32, not checked)");
            continue;
        }
        bool pass = g->failed == 0 && g->points > 0;
        printf("%-13s %-7s %-12s %7zu %8zu %11.3e %11.3e  %s", opname, c.names[i], shape, g->points, g->skipped,
               g->max_abs, g->max_rel, pass ? "PASS" : "FAIL");
        if (g->failed) printf(" (%zu points over the threshold)", g->failed);
        else if (!g->points) printf(" (no point checked)");
        printf("\n");
    }
    if (c.n == 0) printf("%-13s\n", op->name);
    printf("%-13s %s\n", "", c.params);
    if (s != NN_OK) printf("%-13s FAIL: %s\n", "", nn_errmsg());
    case_free(&c);
    return ok;
}

static const char USAGE[] = "[OP...] [--device cpu|cuda] [--seed S] [--threshold T]";
static const char ABOUT[] =
    "Checks the gradients of ops against central differences, (L(x+e) - L(x-e)) / 2e with\n"
    "e = 0.01 and L = sum(y * r) for a fixed random r, on small random shapes drawn from\n"
    "the seed. A point passes when |analytic - numeric| <= T * max(|analytic|, |numeric|, 1);\n"
    "points on a kink (relu at 0) are skipped and counted. Inputs with more than 200\n"
    "elements are checked at 200 random elements.\n"
    "OPs: conv2d relu lrn maxpool2d dropout linear softmax_xent (default: all).\n"
    "Exit status 1 when an op fails.";

int cmd_gradcheck(int argc, char **argv)
{
    const char *device = "cpu";
    uint64_t seed = 1;
    float threshold = 1e-2f;
    const cli_opt opts[] = {
        {"device", CLI_STR, &device, "D", "cpu (default) or cuda"},
        {"seed", CLI_U64, &seed, "S", "seed of the shapes, inputs and dropout masks (default 1)"},
        {"threshold", CLI_FLOAT, &threshold, "T", "relative tolerance (default 0.01)"},
    };
    const char *pos[16];
    int npos = 0;
    int r = cli_parse("gradcheck", USAGE, ABOUT, opts, (int)(sizeof opts / sizeof opts[0]), argc, argv, pos,
                      (int)(sizeof pos / sizeof pos[0]), &npos);
    if (r == CLI_HELP) return 0;
    if (r != CLI_OK) return r;

    nn_device dev;
    if (nn_device_parse(device, &dev) != NN_OK) return cli_fail("gradcheck", "%s", nn_errmsg());
    if (!(threshold > 0 && threshold < 1))
        return cli_fail("gradcheck", "--threshold must be in (0, 1), got %g", (double)threshold);
    bool want[NOPS] = {false};
    for (int i = 0; i < npos; i++) {
        int k = 0;
        while (k < NOPS && strcmp(pos[i], OPS[k].name) != 0) k++;
        if (k == NOPS)
            return cli_fail("gradcheck", "unknown op '%s' (expected conv2d, relu, lrn, maxpool2d, dropout, "
                                         "linear or softmax_xent)", pos[i]);
        want[k] = true;
    }
    if (npos == 0)
        for (int k = 0; k < NOPS; k++) want[k] = true;
    if (!nn_backend_need(dev, "--device")) {
        fprintf(stderr, "convnet gradcheck: %s\n", nn_errmsg());
        return 1;
    }

    printf("gradcheck on %s, seed %llu, threshold %g, eps 0.01, at most %d points per input\n",
           nn_device_name(dev), (unsigned long long)seed, (double)threshold, GC_MAX_POINTS);
    printf("%-13s %-7s %-12s %7s %8s %11s %11s  %s\n", "op", "input", "shape", "points", "skipped", "max abs",
           "max rel", "result");
    int ran = 0, passed = 0;
    for (int k = 0; k < NOPS; k++) {
        if (!want[k]) continue;
        ran++;
        passed += run_op(&OPS[k], seed, dev, (double)threshold);
    }
    printf("%d of %d ops passed\n", passed, ran);
    return passed == ran ? 0 : 1;
}
