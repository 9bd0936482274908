/* `convnet bench`'s case of each op, one row per registered op (keyed by its
 * name in ops/registry.h): the kernels' geometry and counted work at a
 * layer's shape (x (N, C, H, W) as the layer sees it), the op's own buffers,
 * its forward and backward kernel calls, and a float64 reference for one
 * output element. bench.c allocates the common buffers, validates and times. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchmarks/bench.h"

/* ---- conv2d ---- */

static void conv_shape(op_case *c, const nn_layer *l, int n, op_result *res)
{
    const int *in = l->in_shape, *out = l->out_shape;
    int g = l->groups ? l->groups : 1;
    c->cg = (nn_conv2d_geom){n, in[0], in[1], in[2], out[0], l->k, l->k, l->stride, l->stride,
                             l->pad, l->pad, g, out[1], out[2], 0};
    c->nw = (size_t)out[0] * (in[0] / g) * l->k * l->k;
    c->nb = (size_t)out[0];
    c->fan = (float)(in[0] / g * l->k * l->k);
    double macs = (double)c->ny * (in[0] / g) * l->k * l->k;
    res->fwd_flop = 2 * macs;
    res->bwd_flop = (c->need_dx ? 4 : 2) * macs;
}

static nn_status conv_setup(op_case *c, uint64_t seed)
{
    (void)seed;
    c->ws_bytes = c->be->conv2d_workspace(&c->cg);
    return bench_case_alloc(c, &c->ws, c->ws_bytes);
}

static nn_status conv_run(op_case *c, bool backward)
{
    float *dx = c->need_dx ? c->dx : NULL;
    return backward ? c->be->conv2d_backward(&c->cg, c->x, c->w, c->dy, dx, c->dw, c->db, c->ws)
                    : c->be->conv2d_forward(&c->cg, c->x, c->w, c->b, c->y, c->ws);
}

static double conv_ref(const op_case *c, const bench_host *hs, size_t o, double got, double *mag)
{
    (void)got;
    const nn_conv2d_geom *g = &c->cg;
    size_t ohw = (size_t)g->oh * g->ow;
    int n = (int)(o / ((size_t)g->oc * ohw)), oc = (int)(o / ohw % (size_t)g->oc);
    int i = (int)(o % ohw / (size_t)g->ow), j = (int)(o % (size_t)g->ow);
    int cg = g->c / g->groups, grp = oc / (g->oc / g->groups);
    double ref = hs->b[oc];
    *mag += fabs(ref);
    for (int ci = 0; ci < cg; ci++)
        for (int p = 0; p < g->kh; p++)
            for (int q = 0; q < g->kw; q++) {
                int h = i * g->sh + p - g->ph, ww = j * g->sw + q - g->pw;
                if (h < 0 || h >= g->h || ww < 0 || ww >= g->w) continue;
                double t = (double)hs->w[(((size_t)oc * cg + ci) * g->kh + p) * g->kw + q] *
                           hs->x[(((size_t)n * g->c + grp * cg + ci) * g->h + h) * g->w + ww];
                ref += t;
                *mag += fabs(t);
            }
    return ref;
}

/* ---- linear ---- */

static void linear_shape(op_case *c, const nn_layer *l, int n, op_result *res)
{
    const int *in = l->in_shape, *out = l->out_shape;
    int fin = in[0] * in[1] * in[2];
    c->fg = (nn_linear_geom){n, fin, out[0], 0};
    c->nw = (size_t)out[0] * fin;
    c->nb = (size_t)out[0];
    c->fan = (float)fin;
    double macs = (double)n * fin * out[0];
    res->fwd_flop = 2 * macs;
    res->bwd_flop = (c->need_dx ? 4 : 2) * macs;
}

static nn_status linear_run(op_case *c, bool backward)
{
    float *dx = c->need_dx ? c->dx : NULL;
    return backward ? c->be->linear_backward(&c->fg, c->x, c->w, c->dy, dx, c->dw, c->db)
                    : c->be->linear_forward(&c->fg, c->x, c->w, c->b, c->y);
}

static double linear_ref(const op_case *c, const bench_host *hs, size_t o, double got, double *mag)
{
    (void)got;
    size_t n = o / (size_t)c->fg.out, k = o % (size_t)c->fg.out;
    double ref = hs->b[k];
    *mag += fabs(ref);
    for (int i = 0; i < c->fg.in; i++) {
        double t = (double)hs->x[n * (size_t)c->fg.in + i] * hs->w[k * (size_t)c->fg.in + i];
        ref += t;
        *mag += fabs(t);
    }
    return ref;
}

/* ---- relu ---- */

static void relu_shape(op_case *c, const nn_layer *l, int n, op_result *res)
{
    (void)l;
    (void)n;
    res->fwd_bytes = 8.0 * (double)c->nx;
    res->bwd_bytes = 16.0 * (double)c->nx;
}

static nn_status relu_run(op_case *c, bool backward)
{
    return backward ? c->be->relu_backward(c->nx, c->y, c->dy, c->need_dx ? c->dx : NULL)
                    : c->be->relu_forward(c->nx, c->x, c->y);
}

static double relu_ref(const op_case *c, const bench_host *hs, size_t o, double got, double *mag)
{
    (void)c;
    (void)got;
    *mag += fabs(hs->x[o]);
    return hs->x[o] > 0 ? hs->x[o] : 0;
}

/* ---- lrn ---- */

static void lrn_shape(op_case *c, const nn_layer *l, int n, op_result *res)
{
    const int *in = l->in_shape;
    c->lg = (nn_lrn_geom){n, in[0], in[1], in[2], l->lrn.size, l->lrn.alpha, l->lrn.beta, l->lrn.k};
    res->fwd_bytes = 12.0 * (double)c->nx;
    res->bwd_bytes = 24.0 * (double)c->nx;
}

static nn_status lrn_setup(op_case *c, uint64_t seed)
{
    (void)seed;
    return bench_case_alloc(c, (void **)&c->scale, c->nx * sizeof(float));
}

static nn_status lrn_run(op_case *c, bool backward)
{
    return backward ? c->be->lrn_backward(&c->lg, c->x, c->y, c->scale, c->dy, c->need_dx ? c->dx : NULL)
                    : c->be->lrn_forward(&c->lg, c->x, c->y, c->scale);
}

static double lrn_ref(const op_case *c, const bench_host *hs, size_t o, double got, double *mag)
{
    (void)got;
    const nn_lrn_geom *g = &c->lg;
    size_t hw = (size_t)g->h * g->w;
    int ch = (int)(o / hw % (size_t)g->c);
    size_t base = o - (size_t)ch * hw;
    double sum = 0;
    for (int j = ch - g->size / 2; j <= ch + g->size / 2; j++)
        if (j >= 0 && j < g->c) sum += (double)hs->x[base + (size_t)j * hw] * hs->x[base + (size_t)j * hw];
    double ref = hs->x[o] * pow(g->k + g->alpha * sum, -g->beta);
    *mag += fabs(ref);
    return ref;
}

/* ---- maxpool2d ---- */

static void pool_shape(op_case *c, const nn_layer *l, int n, op_result *res)
{
    const int *in = l->in_shape, *out = l->out_shape;
    c->pg = (nn_pool_geom){n, in[0], in[1], in[2], l->k, l->k, l->stride, l->stride, 0, 0, out[1], out[2]};
    res->fwd_bytes = 4.0 * (double)c->nx + 8.0 * (double)c->ny;
    res->bwd_bytes = 8.0 * (double)c->nx + 8.0 * (double)c->ny;
}

static nn_status pool_setup(op_case *c, uint64_t seed)
{
    (void)seed;
    return bench_case_alloc(c, (void **)&c->argmax, c->ny * sizeof(int32_t));
}

static nn_status pool_run(op_case *c, bool backward)
{
    return backward ? c->be->maxpool_backward(&c->pg, c->argmax, c->dy, c->need_dx ? c->dx : NULL)
                    : c->be->maxpool_forward(&c->pg, c->x, c->y, c->argmax);
}

static double pool_ref(const op_case *c, const bench_host *hs, size_t o, double got, double *mag)
{
    (void)got;
    const nn_pool_geom *g = &c->pg;
    size_t ohw = (size_t)g->oh * g->ow;
    size_t plane = o / ohw;
    int i = (int)(o % ohw / (size_t)g->ow), j = (int)(o % (size_t)g->ow);
    double ref = -INFINITY;
    for (int p = 0; p < g->kh; p++)
        for (int q = 0; q < g->kw; q++) {
            int h = i * g->sh + p - g->ph, ww = j * g->sw + q - g->pw;
            if (h >= 0 && h < g->h && ww >= 0 && ww < g->w) {
                double v = hs->x[(plane * g->h + h) * g->w + ww];
                if (v > ref) ref = v;
            }
        }
    *mag += fabs(ref);
    return ref;
}

/* ---- dropout ---- */

static void dropout_shape(op_case *c, const nn_layer *l, int n, op_result *res)
{
    (void)n;
    c->p = l->p;
    res->fwd_bytes = 9.0 * (double)c->nx;
    res->bwd_bytes = 13.0 * (double)c->nx;
}

static nn_status dropout_setup(op_case *c, uint64_t seed)
{
    (void)seed;
    return bench_case_alloc(c, (void **)&c->mask, c->nx);
}

static nn_status dropout_run(op_case *c, bool backward)
{
    return backward ? c->be->dropout_backward(c->nx, c->mask, c->p, c->dy, c->need_dx ? c->dx : NULL)
                    : c->be->dropout_forward(c->nx, c->x, c->y, c->mask, c->p, 7, 0);
}

/* kept or dropped: either 0 or x / (1 - p) */
static double dropout_ref(const op_case *c, const bench_host *hs, size_t o, double got, double *mag)
{
    double ref = got == 0.0 ? 0.0 : hs->x[o] / (1.0 - c->p);
    *mag += fabs(ref);
    return ref;
}

/* ---- softmax_xent: the loss over the last layer's output (l) ---- */

static void xent_shape(op_case *c, const nn_layer *l, int n, op_result *res)
{
    c->classes = l->out_shape[0];
    c->nx = (size_t)n * c->classes;
    c->ny = 1;
    snprintf(res->shape, sizeof res->shape, "%dx%d", n, c->classes);
    res->fwd_bytes = 8.0 * (double)c->nx;
    res->bwd_bytes = 12.0 * (double)c->nx;
}

static nn_status xent_setup(op_case *c, uint64_t seed)
{
    const nn_backend *be = c->be;
    size_t f = sizeof(float);
    int n = (int)(c->nx / (size_t)c->classes);
    int32_t *hl = malloc((size_t)n * sizeof *hl);
    if (!hl) return nn_error(NN_E_NOMEM, "bench: out of memory");
    nn_rng r = nn_rng_make(seed);
    for (int i = 0; i < n; i++) hl[i] = (int32_t)nn_rng_below(&r, (uint32_t)c->classes);
    const float one = 1.0f;
    nn_status s = bench_case_alloc(c, (void **)&c->labels, (size_t)n * sizeof(int32_t));
    if (!s) s = bench_case_alloc(c, (void **)&c->probs, c->nx * f);
    if (!s) s = bench_case_alloc(c, (void **)&c->loss, f);
    if (!s) s = bench_case_alloc(c, (void **)&c->one, f);
    if (!s) s = be->copy(c->labels, be->device, hl, NN_CPU, (size_t)n * sizeof(int32_t));
    if (!s) s = be->copy(c->one, be->device, &one, NN_CPU, f);
    free(hl);
    c->out = c->loss; /* the check samples the loss */
    c->nout = 1;
    c->nlabels = (size_t)n;
    return s;
}

static nn_status xent_run(op_case *c, bool backward)
{
    int n = (int)(c->nx / (size_t)c->classes);
    return backward ? c->be->xent_backward(n, c->classes, c->probs, c->labels, c->one, c->dx)
                    : c->be->xent_forward(n, c->classes, c->x, c->labels, c->probs, c->loss);
}

static double xent_ref(const op_case *c, const bench_host *hs, size_t o, double got, double *mag)
{
    (void)o;
    (void)got;
    int n = (int)(c->nx / (size_t)c->classes);
    double total = 0;
    for (int i = 0; i < n; i++) {
        const float *row = hs->x + (size_t)i * c->classes;
        double m = row[0], s = 0;
        for (int k = 1; k < c->classes; k++) m = row[k] > m ? row[k] : m;
        for (int k = 0; k < c->classes; k++) s += exp(row[k] - m);
        total += m + log(s) - row[hs->labels[i]];
    }
    *mag += fabs(total / n);
    return total / n;
}

/* Every registered op that has a benchmark case. relu's x spans [-1, 1) so
 * half its inputs take each branch; the others draw x in [0, 1). */
/* dw[o] = sum over samples and positions of dy x; db[row] = sum of dy */
static void conv_wgrad_ref(const op_case *c, const float *x, const float *dy, size_t o, bench_wgrad *g)
{
    const nn_conv2d_geom *gm = &c->cg;
    const int cg = gm->c / gm->groups, q = (int)(o % (size_t)gm->kw), p = (int)(o / (size_t)gm->kw % (size_t)gm->kh);
    const int ci = (int)(o / ((size_t)gm->kw * gm->kh) % (size_t)cg), oc = (int)(o / ((size_t)gm->kw * gm->kh * cg));
    const int grp = oc / (gm->oc / gm->groups);
    g->row = oc;
    for (int n = 0; n < gm->n; n++)
        for (int i = 0; i < gm->oh; i++)
            for (int j = 0; j < gm->ow; j++) {
                const double d = dy[(((size_t)n * gm->oc + oc) * gm->oh + i) * gm->ow + j];
                g->db += d;
                g->db_mag += fabs(d);
                const int h = i * gm->sh + p - gm->ph, ww = j * gm->sw + q - gm->pw;
                if (h < 0 || h >= gm->h || ww < 0 || ww >= gm->w) continue;
                const double t = d * x[(((size_t)n * gm->c + grp * cg + ci) * gm->h + h) * gm->w + ww];
                g->dw += t;
                g->dw_mag += fabs(t);
            }
}

/* dw[k][i] = sum over samples of dy[n][k] x[n][i]; db[k] = sum of dy[n][k] */
static void linear_wgrad_ref(const op_case *c, const float *x, const float *dy, size_t o, bench_wgrad *g)
{
    const size_t k = o / (size_t)c->fg.in, i = o % (size_t)c->fg.in;
    g->row = (int)k;
    for (int n = 0; n < c->fg.n; n++) {
        const double d = dy[(size_t)n * c->fg.out + k], t = d * x[(size_t)n * c->fg.in + i];
        g->db += d;
        g->db_mag += fabs(d);
        g->dw += t;
        g->dw_mag += fabs(t);
    }
}

static const bench_op OPS[] = {
    {"conv2d", 0.0f, conv_shape, conv_setup, conv_run, conv_ref, conv_wgrad_ref},
    {"relu", -1.0f, relu_shape, NULL, relu_run, relu_ref, NULL},
    {"lrn", 0.0f, lrn_shape, lrn_setup, lrn_run, lrn_ref, NULL},
    {"maxpool2d", 0.0f, pool_shape, pool_setup, pool_run, pool_ref, NULL},
    {"dropout", 0.0f, dropout_shape, dropout_setup, dropout_run, dropout_ref, NULL},
    {"linear", 0.0f, linear_shape, NULL, linear_run, linear_ref, linear_wgrad_ref},
    {"softmax_xent", 0.0f, xent_shape, xent_setup, xent_run, xent_ref, NULL},
};

const bench_op *bench_op_find(const char *op)
{
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (strcmp(OPS[i].op, op) == 0) return &OPS[i];
    return NULL;
}
