/* SGD with momentum (the paper's rule), Adam/AdamW, and the schedules; the CPU
 * update kernels live here too (the CUDA ones in cuda/optim.cu). */
#include "optim/optim.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "core/backend.h"
#include "core/defaults.h"
#include "ops/cpu_kernels.h"

/* The update kernels: one pass over (w, g, state), each thread a contiguous
 * span whose loop has an AVX2 copy (NN_CPU_CLONES: Adam's divisions and
 * square roots run 8 lanes wide instead of SSE2's 4, bit for bit alike). */
/* Below this many parameters one thread does the update: waking the team
 * costs more (tens of microseconds on a loaded machine) than it saves. */
#define OPTIM_PAR_MIN 65536
/* Thread spans start at multiples of this many floats (a 64-byte line). */
#define OPTIM_SPAN_ALIGN 16

/* This thread's span [*i0, *i1) of n elements. */
static void thread_span(size_t n, size_t *i0, size_t *i1)
{
    const size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
    size_t per = (n + nt - 1) / nt;
    per = (per + OPTIM_SPAN_ALIGN - 1) / OPTIM_SPAN_ALIGN * OPTIM_SPAN_ALIGN;
    *i0 = t * per < n ? t * per : n;
    *i1 = *i0 + per < n ? *i0 + per : n;
}

static NN_CPU_CLONES void sgd_span(size_t i0, size_t i1, float *restrict w, const float *restrict g,
                                  float *restrict v, float lr, float momentum, float wd)
{
    for (size_t i = i0; i < i1; i++) {
        v[i] = momentum * v[i] - wd * lr * w[i] - lr * g[i];
        w[i] += v[i];
    }
}

nn_status nn_cpu_sgd_update(size_t n, float *w, const float *g, float *v, float lr, float momentum,
                            float wd)
{
    if (n <= OPTIM_PAR_MIN) { /* (no one-thread team: core/par.h says why) */
        sgd_span(0, n, w, g, v, lr, momentum, wd);
        return NN_OK;
    }
#pragma omp parallel
    {
        size_t i0, i1;
        thread_span(n, &i0, &i1);
        sgd_span(i0, i1, w, g, v, lr, momentum, wd);
    }
    return NN_OK;
}

/* Adam's moments and step over [i0, i1); decoupled (AdamW): the decay
 * shrinks w before the step instead of entering the gradient. */
static NN_CPU_CLONES void adam_span(size_t i0, size_t i1, float *restrict w, const float *restrict g,
                                   float *restrict m, float *restrict v, float lr, float beta1, float beta2,
                                   float eps, float wd, int decoupled, float bias1, float bias2)
{
    if (decoupled) {
        for (size_t i = i0; i < i1; i++) {
            const float gi = g[i];
            w[i] -= lr * wd * w[i];
            m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
            v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
            const float mh = m[i] / bias1, vh = v[i] / bias2;
            w[i] -= lr * mh / (sqrtf(vh) + eps);
        }
    } else {
        for (size_t i = i0; i < i1; i++) {
            const float gi = g[i] + wd * w[i];
            m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
            v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
            const float mh = m[i] / bias1, vh = v[i] / bias2;
            w[i] -= lr * mh / (sqrtf(vh) + eps);
        }
    }
}

nn_status nn_cpu_adam_update(size_t n, float *w, const float *g, float *m, float *v, float lr,
                             float beta1, float beta2, float eps, float wd, int decoupled,
                             float bias1, float bias2)
{
    if (n <= OPTIM_PAR_MIN) { /* (no one-thread team: core/par.h says why) */
        adam_span(0, n, w, g, m, v, lr, beta1, beta2, eps, wd, decoupled, bias1, bias2);
        return NN_OK;
    }
#pragma omp parallel
    {
        size_t i0, i1;
        thread_span(n, &i0, &i1);
        adam_span(i0, i1, w, g, m, v, lr, beta1, beta2, eps, wd, decoupled, bias1, bias2);
    }
    return NN_OK;
}

/* The step's copy (core/step_vars.h): the same kernels, the rate and bias
 * corrections read from sv, and no update on a step with a non-finite value. */
nn_status nn_cpu_sgd_update_at(size_t n, float *w, const float *g, float *v, float momentum, float wd,
                               const nn_step_vars *sv)
{
    if (sv->nonfinite) return NN_OK;
    return nn_cpu_sgd_update(n, w, g, v, sv->lr, momentum, wd);
}

nn_status nn_cpu_adam_update_at(size_t n, float *w, const float *g, float *m, float *v, float beta1, float beta2,
                                float eps, float wd, int decoupled, const nn_step_vars *sv)
{
    if (sv->nonfinite) return NN_OK;
    return nn_cpu_adam_update(n, w, g, m, v, sv->lr, beta1, beta2, eps, wd, decoupled, sv->bias1, sv->bias2);
}

struct nn_optim {
    nn_optim_config cfg;
    const nn_params *params;
    nn_params state;        /* v (SGD) or m, v (Adam) per parameter, in order */
    int64_t t;
};

nn_optim_config nn_optim_paper_sgd(void)
{
    nn_optim_config c = {0};
    c.kind = NN_OPT_SGD;
    c.lr = 0.01f;
    c.momentum = NN_SGD_MOMENTUM;
    c.weight_decay = NN_SGD_WEIGHT_DECAY;
    return c;
}

static const char *const kind_names[] = {"sgd", "adam", "adamw"};

const char *nn_optim_kind_name(nn_optim_kind k) { return kind_names[k]; }

nn_status nn_optim_parse_kind(const char *s, nn_optim_kind *out)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(s, kind_names[i]) == 0) {
            *out = (nn_optim_kind)i;
            return NN_OK;
        }
    return nn_error(NN_E_ARG, "unknown optimizer '%s' (expected sgd, adam or adamw)", s);
}

void nn_optim_free(nn_optim *o)
{
    if (!o) return;
    for (int i = 0; i < o->state.n; i++) nn_tensor_free(o->state.p[i].t);
    nn_params_clear(&o->state);
    free(o);
}

static nn_status add_state(nn_optim *o, const nn_param *p, const char *suffix)
{
    char name[64];
    nn_tensor *t = NULL;
    if ((size_t)snprintf(name, sizeof name, "optim.%s.%s", p->name, suffix) >= sizeof name)
        return nn_error(NN_E_ARG, "optim: parameter name '%s' too long", p->name);
    NN_TRY(nn_tensor_new(&t, NN_F32, p->t->device, p->t->ndim, p->t->shape));
    nn_status s = nn_params_add(&o->state, name, t, p->is_bias);
    if (s != NN_OK) nn_tensor_free(t);
    return s;
}

nn_status nn_optim_new(nn_optim **out, const nn_optim_config *cfg, const nn_params *params)
{
    *out = NULL;
    if (!(cfg->lr > 0) || !isfinite(cfg->lr))
        return nn_error(NN_E_ARG, "optim: learning rate %g must be positive", (double)cfg->lr);
    if (cfg->weight_decay < 0 || cfg->momentum < 0 || cfg->momentum >= 1)
        return nn_error(NN_E_ARG, "optim: need weight decay >= 0 and 0 <= momentum < 1");
    nn_optim *o = calloc(1, sizeof *o);
    if (!o) return nn_error(NN_E_NOMEM, "optim: out of memory");
    o->cfg = *cfg;
    if (o->cfg.beta1 <= 0) o->cfg.beta1 = NN_ADAM_BETA1;
    if (o->cfg.beta2 <= 0) o->cfg.beta2 = NN_ADAM_BETA2;
    if (o->cfg.eps <= 0) o->cfg.eps = NN_ADAM_EPS;
    o->params = params;
    for (int i = 0; i < params->n; i++) {
        const nn_param *p = &params->p[i];
        if (!p->t->grad) {
            nn_optim_free(o);
            return nn_error(NN_E_ARG, "optim: parameter '%s' has no gradient buffer", p->name);
        }
        nn_status s = o->cfg.kind == NN_OPT_SGD ? add_state(o, p, "v") : add_state(o, p, "m");
        if (s == NN_OK && o->cfg.kind != NN_OPT_SGD) s = add_state(o, p, "v");
        if (s != NN_OK) {
            nn_optim_free(o);
            return s;
        }
    }
    *out = o;
    return NN_OK;
}

/* Adam's bias corrections for step t (from 1). */
static void bias_corrections(const nn_optim_config *c, int64_t t, float *bias1, float *bias2)
{
    *bias1 = 1.0f - powf(c->beta1, (float)t);
    *bias2 = 1.0f - powf(c->beta2, (float)t);
}

static float decay_of(const nn_optim_config *c, const nn_param *p)
{
    return (p->is_bias && !c->decay_bias) ? 0.0f : c->weight_decay;
}

nn_status nn_optim_step(nn_optim *o)
{
    const nn_optim_config *c = &o->cfg;
    o->t++;
    float bias1, bias2;
    bias_corrections(c, o->t, &bias1, &bias2);
    for (int i = 0; i < o->params->n; i++) {
        const nn_param *p = &o->params->p[i];
        const nn_backend *be = nn_backend_need(p->t->device, "optim");
        if (!be) return NN_E_DEVICE;
        float wd = decay_of(c, p);
        float *w = nn_f32(p->t), *g = nn_f32(p->t->grad);
        if (c->kind == NN_OPT_SGD) {
            NN_TRY(be->sgd_update(p->t->numel, w, g, nn_f32(o->state.p[i].t), c->lr, c->momentum, wd));
        } else {
            NN_TRY(be->adam_update(p->t->numel, w, g, nn_f32(o->state.p[2 * i].t),
                                   nn_f32(o->state.p[2 * i + 1].t), c->lr, c->beta1, c->beta2, c->eps,
                                   wd, c->kind == NN_OPT_ADAMW, bias1, bias2));
        }
    }
    return NN_OK;
}

void nn_optim_step_vars(const nn_optim *o, nn_step_vars *sv)
{
    sv->lr = o->cfg.lr;
    bias_corrections(&o->cfg, o->t + 1, &sv->bias1, &sv->bias2);
}

nn_status nn_optim_step_at(nn_optim *o, const nn_step_vars *dev_sv)
{
    const nn_optim_config *c = &o->cfg;
    for (int i = 0; i < o->params->n; i++) {
        const nn_param *p = &o->params->p[i];
        const nn_backend *be = nn_backend_need(p->t->device, "optim");
        if (!be) return NN_E_DEVICE;
        float *w = nn_f32(p->t), *g = nn_f32(p->t->grad);
        if (c->kind == NN_OPT_SGD) {
            NN_TRY(be->sgd_update_at(p->t->numel, w, g, nn_f32(o->state.p[i].t), c->momentum, decay_of(c, p), dev_sv));
        } else {
            NN_TRY(be->adam_update_at(p->t->numel, w, g, nn_f32(o->state.p[2 * i].t), nn_f32(o->state.p[2 * i + 1].t),
                                      c->beta1, c->beta2, c->eps, decay_of(c, p), c->kind == NN_OPT_ADAMW, dev_sv));
        }
    }
    return NN_OK;
}

void nn_optim_set_lr(nn_optim *o, float lr) { o->cfg.lr = lr; }
float nn_optim_lr(const nn_optim *o) { return o->cfg.lr; }
int64_t nn_optim_steps(const nn_optim *o) { return o->t; }
void nn_optim_set_steps(nn_optim *o, int64_t t) { o->t = t; }
const nn_params *nn_optim_state(const nn_optim *o) { return &o->state; }

/* ---- schedules ---- */

#define NSCHED 4
static const char *const sched_names[NSCHED] = {"const", "step", "plateau", "cosine"};

const char *nn_sched_kind_name(nn_sched_kind k) { return sched_names[k]; }

nn_status nn_sched_parse_kind(const char *s, nn_sched_kind *out)
{
    for (int i = 0; i < NSCHED; i++)
        if (strcmp(s, sched_names[i]) == 0) {
            *out = (nn_sched_kind)i;
            return NN_OK;
        }
    return nn_error(NN_E_ARG, "unknown schedule '%s' (expected const, step, plateau or cosine)", s);
}

nn_schedule nn_schedule_make(nn_sched_kind kind, float base_lr)
{
    nn_schedule s = {0};
    s.kind = kind;
    s.base_lr = base_lr;
    s.lr = base_lr;
    s.step_epochs = 30;
    s.gamma = 0.1f;
    s.patience = 2;
    s.min_lr = base_lr * 1e-3f;
    s.best = -1.0f;
    return s;
}

float nn_schedule_epoch_end(nn_schedule *s, int epoch, float val_acc)
{
    switch (s->kind) {
    case NN_SCHED_CONST: case NN_SCHED_COSINE: return s->lr;
    case NN_SCHED_STEP:
        if (s->step_epochs > 0 && epoch % s->step_epochs == 0) s->lr *= s->gamma;
        break;
    case NN_SCHED_PLATEAU:
        if (val_acc > s->best) {
            s->best = val_acc;
            s->bad_epochs = 0;
        } else if (++s->bad_epochs >= s->patience) {
            s->lr *= s->gamma;
            s->bad_epochs = 0;
        }
        break;
    }
    if (s->lr < s->min_lr) s->lr = s->min_lr;
    return s->lr;
}

float nn_schedule_step(nn_schedule *s, int64_t t, int64_t total)
{
    if (s->kind == NN_SCHED_COSINE && total > 0) {
        double f = t >= total ? 1.0 : (double)t / (double)total;
        s->lr = (float)(s->min_lr + (s->base_lr - s->min_lr) * 0.5 * (1.0 + cos(3.14159265358979323846 * f)));
    }
    return s->lr;
}
