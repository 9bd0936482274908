/* Central-difference gradient checker (see gradcheck.h). Works on any device:
 * inputs are perturbed one element at a time through the backend's copy. */
#include "core/gradcheck.h"

#include <math.h>
#include <string.h>

#include "core/backend.h"
#include "core/philox.h"

typedef struct gc_state {
    nn_ctx *ctx;
    nn_gc_fn fn;
    void *user;
    nn_tensor *const *in;
    uint64_t seed;
    const float *r;     /* projection weights, y->numel */
    float *yhost;
    size_t ny;
} gc_state;

/* L = sum(y * r), evaluated in double with gradients off and the dropout
 * generator reset, so every evaluation sees the same masks. */
static nn_status eval_loss(gc_state *g, double *out)
{
    nn_ctx_reset(g->ctx);
    *nn_ctx_rng(g->ctx) = nn_rng_make(g->seed);
    bool old = nn_ctx_set_grad(g->ctx, false);
    nn_tensor *y = g->fn(g->ctx, g->in, g->user);
    nn_ctx_set_grad(g->ctx, old);
    if (!y) return nn_error(nn_ctx_status(g->ctx), "%s", nn_ctx_errmsg(g->ctx));
    if (y->numel != g->ny) return nn_error(NN_E_SHAPE, "gradcheck: the output changed size");
    NN_TRY(nn_tensor_read(y, g->yhost));
    double L = 0;
    for (size_t i = 0; i < g->ny; i++) L += (double)g->yhost[i] * (double)g->r[i];
    *out = L;
    return NN_OK;
}

static nn_status poke(nn_tensor *t, size_t i, float v)
{
    const nn_backend *be = nn_backend_get(t->device);
    return be->copy(nn_f32(t) + i, t->device, &v, NN_CPU, sizeof v);
}

static nn_status check_input(gc_state *g, int k, const nn_gradcheck_opts *o, double L0,
                             nn_gradcheck_input *res)
{
    nn_tensor *t = g->in[k];
    size_t n = t->numel;
    float *x = malloc(n * sizeof *x), *a = malloc(n * sizeof *a);
    nn_status s = NN_OK;
    if (!x || !a) {
        s = nn_error(NN_E_NOMEM, "gradcheck: out of memory");
        goto done;
    }
    if ((s = nn_tensor_read(t, x)) != NN_OK || (s = nn_tensor_read(t->grad, a)) != NN_OK) goto done;
    nn_rng pick = nn_rng_make(g->seed ^ 0x5eedull);
    size_t npts = (o->max_points && o->max_points < n) ? o->max_points : n;
    for (size_t p = 0; p < npts; p++) {
        size_t i = npts == n ? p : nn_rng_below(&pick, (uint32_t)n);
        double Lp, Lm;
        float x0 = x[i];
        if ((s = poke(t, i, (float)(x0 + o->eps))) != NN_OK) goto done;
        s = eval_loss(g, &Lp);
        if (s == NN_OK) s = poke(t, i, (float)(x0 - o->eps));
        if (s == NN_OK) s = eval_loss(g, &Lm);
        nn_status s2 = poke(t, i, x0);
        if (s != NN_OK || (s = s2) != NN_OK) goto done;
        /* the step actually taken in float32 */
        double hp = (double)(float)(x0 + o->eps) - x0, hm = x0 - (double)(float)(x0 - o->eps);
        double dplus = (Lp - L0) / hp, dminus = (L0 - Lm) / hm;
        double num = (Lp - Lm) / (hp + hm), an = a[i];
        double gap = fabs(dplus - dminus), scale = fmax(fmax(fabs(dplus), fabs(dminus)), 1.0);
        if (gap > o->threshold * scale) {
            /* Curvature or a kink? Halve the step: for a smooth function the
             * one-sided gap halves and the central difference barely moves;
             * a kink inside the interval breaks one of the two (any kink
             * position that fools the first test shifts the second by at
             * least 0.14 x its slope jump). */
            double Lp2, Lm2, h2 = o->eps / 2;
            if ((s = poke(t, i, (float)(x0 + h2))) != NN_OK) goto done;
            s = eval_loss(g, &Lp2);
            if (s == NN_OK) s = poke(t, i, (float)(x0 - h2));
            if (s == NN_OK) s = eval_loss(g, &Lm2);
            s2 = poke(t, i, x0);
            if (s != NN_OK || (s = s2) != NN_OK) goto done;
            double hp2 = (double)(float)(x0 + h2) - x0, hm2 = x0 - (double)(float)(x0 - h2);
            double gap2 = fabs((Lp2 - L0) / hp2 - (L0 - Lm2) / hm2), num2 = (Lp2 - Lm2) / (hp2 + hm2);
            bool smooth = fabs(gap2 - gap / 2) <= 0.1 * gap && fabs(num - num2) <= o->threshold / 4 * scale;
            if (!smooth) {
                res->skipped++;
                continue;
            }
            num = num2;
        }
        double err = fabs(an - num);
        double rel = err / fmax(fmax(fabs(an), fabs(num)), 1.0);
        res->points++;
        if (err > res->max_abs) res->max_abs = err;
        if (rel > res->max_rel) res->max_rel = rel;
        if (rel > o->threshold) res->failed++;
    }
done:
    free(x);
    free(a);
    return s;
}

nn_status nn_gradcheck(nn_gc_fn fn, void *user, int ninputs, nn_tensor *const *inputs,
                       const nn_gradcheck_opts *opts, nn_gradcheck_result *res)
{
    memset(res, 0, sizeof *res);
    if (!fn || ninputs < 1 || ninputs > NN_GC_MAX_INPUTS)
        return nn_error(NN_E_ARG, "gradcheck: 1 to %d inputs and a function are needed", NN_GC_MAX_INPUTS);
    for (int k = 0; k < ninputs; k++)
        if (!inputs[k]) return nn_error(NN_E_ARG, "gradcheck: input %d is NULL", k);
    nn_gradcheck_opts o = opts ? *opts : (nn_gradcheck_opts){0};
    if (o.eps <= 0) o.eps = 1e-2;
    if (o.threshold <= 0) o.threshold = 1e-2;
    res->ninputs = ninputs;

    int wanted = 0;
    for (int k = 0; k < ninputs; k++) wanted += inputs[k]->dtype == NN_F32 && inputs[k]->requires_grad;
    if (!wanted) return nn_error(NN_E_ARG, "gradcheck: no input requires grad (nn_tensor_require_grad)");
    gc_state g = {.fn = fn, .user = user, .in = inputs, .seed = o.seed};
    g.ctx = nn_ctx_new();
    if (!g.ctx) return nn_error(NN_E_NOMEM, "gradcheck: out of memory");
    nn_status s = NN_OK;
    float *r = NULL;

    /* the analytic pass: y, then backward seeded with r */
    *nn_ctx_rng(g.ctx) = nn_rng_make(g.seed);
    for (int k = 0; k < ninputs; k++)
        if ((s = nn_tensor_zero_grad(inputs[k])) != NN_OK) goto done;
    nn_tensor *y = fn(g.ctx, inputs, user);
    if (!y) {
        s = nn_error(nn_ctx_status(g.ctx), "%s", nn_ctx_errmsg(g.ctx));
        goto done;
    }
    g.ny = y->numel;
    r = malloc(g.ny * sizeof *r);
    g.yhost = malloc(g.ny * sizeof *g.yhost);
    if (!r || !g.yhost) {
        s = nn_error(NN_E_NOMEM, "gradcheck: out of memory");
        goto done;
    }
    for (size_t i = 0; i < g.ny; i++) r[i] = 2.0f * nn_rand_uniform(g.seed ^ 0xC0FFEEull, 0, i) - 1.0f;
    g.r = r;
    if ((s = nn_backward_with(g.ctx, y, r)) != NN_OK) goto done;

    double L0;
    if ((s = eval_loss(&g, &L0)) != NN_OK) goto done;
    res->ok = true;
    for (int k = 0; k < ninputs; k++) {
        nn_tensor *t = inputs[k];
        if (t->dtype != NN_F32 || !t->requires_grad || !t->grad) continue;
        res->in[k].checked = true;
        if ((s = check_input(&g, k, &o, L0, &res->in[k])) != NN_OK) goto done;
        if (res->in[k].failed || res->in[k].points == 0) res->ok = false;
    }
done:
    if (s != NN_OK) res->ok = false;
    free(r);
    free(g.yhost);
    nn_ctx_free(g.ctx);
    return s;
}
