/* Sequential networks: layer list, shape inference, parameter init, forward
 * and summary. Shapes per image are (C, H, W). */
#include "models/sequential.h"

#include "core/backend.h"
#include "ops/registry.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const init_names[] = {"paper", "he"};

const char *nn_init_name(nn_init_kind k) { return init_names[k]; }

nn_status nn_init_parse(const char *s, nn_init_kind *out)
{
    for (int i = 0; i < 2; i++)
        if (strcmp(s, init_names[i]) == 0) {
            *out = (nn_init_kind)i;
            return NN_OK;
        }
    return nn_error(NN_E_ARG, "unknown initialization '%s' (expected paper or he)", s);
}

void nn_seq_init(nn_seq *s, int in_c, int in_h, int in_w)
{
    memset(s, 0, sizeof *s);
    s->in_c = in_c;
    s->in_h = in_h;
    s->in_w = in_w;
}

static nn_layer *add(nn_seq *s, nn_layer_kind kind, const char *name)
{
    if (!s || s->status != NN_OK) return NULL;
    if (!name) {
        s->status = nn_error(NN_E_ARG, "sequential: layer %d has no name (NULL)", s->n + 1);
        return NULL;
    }
    if (s->n == NN_SEQ_MAX_LAYERS || strlen(name) >= sizeof s->l[0].name) {
        s->status = nn_error(NN_E_ARG, "sequential: too many layers or name '%s' too long", name);
        return NULL;
    }
    nn_layer *l = &s->l[s->n++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    memcpy(l->name, name, strlen(name) + 1);
    return l;
}

/* Layer sizes beyond this are typos, not networks: keeping every argument in
 * [lo, NN_SEQ_ARG_MAX] also keeps the shape arithmetic far from overflow. */
#define NN_SEQ_ARG_MAX (1 << 20)

/* Records NN_E_ARG naming the layer and the argument when v is outside
 * [lo, NN_SEQ_ARG_MAX]; false then (the layer is dropped: the model fails to build). */
static bool arg_ok(nn_seq *s, const nn_layer *l, const char *what, int v, int lo)
{
    if (v >= lo && v <= NN_SEQ_ARG_MAX) return true;
    s->status = nn_error(NN_E_ARG, "sequential: %s: %s = %d is outside [%d, %d]", l->name, what, v, lo, NN_SEQ_ARG_MAX);
    return false;
}

void nn_seq_conv(nn_seq *s, const char *name, int out, int k, int stride, int pad, int groups, float bias_init)
{
    nn_layer *l = add(s, NN_L_CONV, name);
    if (!l || !arg_ok(s, l, "output channels", out, 1) || !arg_ok(s, l, "kernel", k, 1) ||
        !arg_ok(s, l, "stride", stride, 1) || !arg_ok(s, l, "padding", pad, 0) || !arg_ok(s, l, "groups", groups, 1))
        return;
    l->out = out;
    l->k = k;
    l->stride = stride;
    l->pad = pad;
    l->groups = groups;
    l->bias_init = bias_init;
}

void nn_seq_relu(nn_seq *s, const char *name) { add(s, NN_L_RELU, name); }

void nn_seq_lrn(nn_seq *s, const char *name, nn_lrn_params p)
{
    nn_layer *l = add(s, NN_L_LRN, name);
    if (l) l->lrn = p;
}

void nn_seq_maxpool(nn_seq *s, const char *name, int k, int stride)
{
    nn_layer *l = add(s, NN_L_MAXPOOL, name);
    if (!l || !arg_ok(s, l, "window", k, 1) || !arg_ok(s, l, "stride", stride, 1)) return;
    l->k = k;
    l->stride = stride;
}

void nn_seq_dropout(nn_seq *s, const char *name, float p)
{
    nn_layer *l = add(s, NN_L_DROPOUT, name);
    if (!l) return;
    if (!(p >= 0.0f && p <= 1.0f)) {
        s->status = nn_error(NN_E_ARG, "sequential: %s: dropout p = %g is outside [0, 1]", l->name, (double)p);
        return;
    }
    l->p = p;
}

void nn_seq_flatten(nn_seq *s, const char *name) { add(s, NN_L_FLATTEN, name); }

void nn_seq_linear(nn_seq *s, const char *name, int out, float bias_init)
{
    nn_layer *l = add(s, NN_L_LINEAR, name);
    if (!l || !arg_ok(s, l, "output features", out, 1)) return;
    l->out = out;
    l->bias_init = bias_init;
}

/* ---- each layer kind once: shape rule, parameters, op call, summary ---- */

/* A layer's shape rule per image: (c, h, w) in place; flat says a flatten
 * came before. Sets l->params and l->macs. NN_E_SHAPE naming the layer. */
typedef nn_status (*layer_infer_fn)(nn_layer *l, int *c, int *h, int *w, bool *flat);

static void conv_describe(const nn_layer *l, char *b, size_t n);
static void pool_describe(const nn_layer *l, char *b, size_t n);

/* An op's shape rule failed for layer l on a (c, h, w) input: its message,
 * prefixed with the layer (the first one that does not fit). */
static nn_status layer_misfit(const nn_layer *l, void (*describe)(const nn_layer *, char *, size_t), int c, int h,
                              int w, nn_status s)
{
    char what[48], why[512];
    describe(l, what, sizeof what);
    snprintf(why, sizeof why, "%s", nn_errmsg());
    return nn_error(s, "model: %s (%s) on input %dx%dx%d: %s", l->name, what, c, h, w, why);
}

/* The op's own rule (ops/conv2d.c) on one image */
static nn_status conv_infer(nn_layer *l, int *c, int *h, int *w, bool *flat)
{
    if (*flat) return nn_error(NN_E_SHAPE, "model: %s (conv) comes after flatten", l->name);
    int g = l->groups ? l->groups : 1;
    const int x[4] = {1, *c, *h, *w}, wt[4] = {l->out, *c / g, l->k, l->k};
    nn_conv2d_geom geo;
    nn_status s = nn_conv2d_shape(x, wt, (nn_conv2d_params){l->stride, l->stride, l->pad, l->pad, g}, &geo);
    if (s != NN_OK) return layer_misfit(l, conv_describe, *c, *h, *w, s);
    l->params = (long long)l->out * (*c / g) * l->k * l->k + l->out;
    l->macs = (long long)l->out * (*c / g) * l->k * l->k * geo.oh * geo.ow;
    *c = l->out; *h = geo.oh; *w = geo.ow;
    return NN_OK;
}

/* The op's own rule (ops/maxpool.c) on one image */
static nn_status pool_infer(nn_layer *l, int *c, int *h, int *w, bool *flat)
{
    (void)flat;
    const int x[4] = {1, *c, *h, *w};
    nn_pool_geom geo;
    nn_status s = nn_maxpool2d_shape(x, (nn_pool_params){l->k, l->k, l->stride, l->stride, 0, 0}, &geo);
    if (s != NN_OK) return layer_misfit(l, pool_describe, *c, *h, *w, s);
    *h = geo.oh;
    *w = geo.ow;
    return NN_OK;
}

static nn_status flatten_infer(nn_layer *l, int *c, int *h, int *w, bool *flat)
{
    long long n = (long long)*c * *h * *w;
    if (n > NN_SEQ_ARG_MAX * 64LL)
        return nn_error(NN_E_SHAPE, "model: %s (flatten): %dx%dx%d = %lld features is too many", l->name, *c, *h, *w, n);
    *c = (int)n;
    *h = *w = 1;
    *flat = true;
    return NN_OK;
}

static nn_status linear_infer(nn_layer *l, int *c, int *h, int *w, bool *flat)
{
    (void)h; (void)w;
    if (!*flat) return nn_error(NN_E_SHAPE, "model: %s (linear) needs a flatten before it", l->name);
    l->params = (long long)l->out * *c + l->out;
    l->macs = (long long)l->out * *c;
    *c = l->out;
    return NN_OK;
}

/* relu, lrn, dropout: the shape passes through */
static nn_status same_infer(nn_layer *l, int *c, int *h, int *w, bool *flat)
{
    (void)l; (void)c; (void)h; (void)w; (void)flat;
    return NN_OK;
}

/* conv2d's parameters from the layer's fields (the registry's case, the fused step) */
static nn_conv2d_params conv_params(const nn_layer *l)
{
    return (nn_conv2d_params){l->stride, l->stride, l->pad, l->pad, l->groups};
}

/* The op's parameters from the layer's fields, into the registry's case. */
static void conv_args(const nn_layer *l, nn_op_case *c)
{
    nn_conv2d_params p = conv_params(l);
    nn_op_case_set_args(c, &p, sizeof p);
}
static void lrn_args(const nn_layer *l, nn_op_case *c) { nn_op_case_set_args(c, &l->lrn, sizeof l->lrn); }
static void pool_args(const nn_layer *l, nn_op_case *c)
{
    nn_pool_params p = {l->k, l->k, l->stride, l->stride, 0, 0};
    nn_op_case_set_args(c, &p, sizeof p);
}
static void dropout_args(const nn_layer *l, nn_op_case *c) { nn_op_case_set_args(c, &l->p, sizeof l->p); }

/* The summary's op column: "conv 11x11/4 p2", "maxpool 3x3/2". */
static void conv_describe(const nn_layer *l, char *b, size_t n)
{
    snprintf(b, n, "conv %dx%d/%d p%d%s", l->k, l->k, l->stride, l->pad,
             l->groups > 1 ? (l->groups == 2 ? " g2" : " g") : "");
}
static void pool_describe(const nn_layer *l, char *b, size_t n)
{
    snprintf(b, n, "maxpool %dx%d/%d", l->k, l->k, l->stride);
}
static void lrn_describe(const nn_layer *l, char *b, size_t n) { snprintf(b, n, "lrn n%d", l->lrn.size); }
static void dropout_describe(const nn_layer *l, char *b, size_t n) { snprintf(b, n, "dropout %.2g", (double)l->p); }

typedef struct layer_kind {
    const char *name;         /* the summary's op column when describe is NULL */
    const nn_op_info *op;     /* the registered op the layer runs; NULL: flatten (a view) */
    layer_infer_fn infer;
    void (*args)(const nn_layer *l, nn_op_case *c); /* NULL: the op takes no parameters */
    bool weights;             /* the op's inputs are (h, weight, bias) */
    void (*describe)(const nn_layer *l, char *b, size_t n);
} layer_kind;

/* Indexed by nn_layer_kind. */
static const layer_kind kinds[] = {
    [NN_L_CONV] = {"conv", &nn_op_conv2d, conv_infer, conv_args, true, conv_describe},
    [NN_L_RELU] = {"relu", &nn_op_relu, same_infer, NULL, false, NULL},
    [NN_L_LRN] = {"lrn", &nn_op_lrn, same_infer, lrn_args, false, lrn_describe},
    [NN_L_MAXPOOL] = {"maxpool", &nn_op_maxpool2d, pool_infer, pool_args, false, pool_describe},
    [NN_L_DROPOUT] = {"dropout", &nn_op_dropout, same_infer, dropout_args, false, dropout_describe},
    [NN_L_FLATTEN] = {"flatten", NULL, flatten_infer, NULL, false, NULL},
    [NN_L_LINEAR] = {"linear", &nn_op_linear, linear_infer, NULL, true, NULL},
};

_Static_assert(sizeof kinds / sizeof kinds[0] == NN_L_LINEAR + 1, "one row per nn_layer_kind");

nn_status nn_seq_infer(nn_seq *s)
{
    if (!s) return nn_error(NN_E_ARG, "model: NULL sequential model");
    if (s->status != NN_OK) return s->status;
    int c = s->in_c, h = s->in_h, w = s->in_w;
    if (c < 1 || h < 1 || w < 1 || c > NN_SEQ_ARG_MAX || h > NN_SEQ_ARG_MAX || w > NN_SEQ_ARG_MAX)
        return nn_error(NN_E_SHAPE, "model: input %dx%dx%d is not a valid image size", c, h, w);
    bool flat = false;
    for (int i = 0; i < s->n; i++) {
        nn_layer *l = &s->l[i];
        l->in_shape[0] = c; l->in_shape[1] = h; l->in_shape[2] = w;
        l->params = l->macs = 0;
        NN_TRY(kinds[l->kind].infer(l, &c, &h, &w, &flat));
        l->out_shape[0] = c; l->out_shape[1] = h; l->out_shape[2] = w;
    }
    return NN_OK;
}

static nn_status new_param(nn_seq *s, nn_layer *l, nn_tensor **t, const char *suffix, int ndim,
                           const int *shape, nn_device dev)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%s", l->name, suffix);
    NN_TRY(nn_tensor_new(t, NN_F32, dev, ndim, shape));
    NN_TRY(nn_tensor_require_grad(*t));
    return nn_params_add(&s->params, name, *t, ndim == 1);
}

nn_status nn_seq_build(nn_seq *s, nn_device dev, nn_init_kind init, nn_rng *rng)
{
    NN_TRY(nn_seq_infer(s));
    for (int i = 0; i < s->n; i++) {
        nn_layer *l = &s->l[i];
        int fan_in, wshape[4], nw;
        if (l->kind == NN_L_CONV) {
            int g = l->groups ? l->groups : 1;
            fan_in = l->in_shape[0] / g * l->k * l->k;
            wshape[0] = l->out; wshape[1] = l->in_shape[0] / g; wshape[2] = wshape[3] = l->k;
            nw = 4;
        } else if (l->kind == NN_L_LINEAR) {
            fan_in = l->in_shape[0];
            wshape[0] = l->out; wshape[1] = l->in_shape[0];
            nw = 2;
        } else {
            continue;
        }
        nn_status st = new_param(s, l, &l->w, "weight", nw, wshape, dev);
        if (st == NN_OK) st = new_param(s, l, &l->b, "bias", 1, &l->out, dev);
        if (st != NN_OK) {
            nn_seq_free(s);
            return st;
        }
        float std = init == NN_INIT_PAPER ? 0.01f : sqrtf(2.0f / (float)fan_in);
        NN_TRY(nn_tensor_normal(l->w, rng, 0.0f, std));
        NN_TRY(nn_tensor_fill(l->b, init == NN_INIT_PAPER ? l->bias_init : 0.0f));
    }
    return NN_OK;
}

void nn_seq_free(nn_seq *s)
{
    for (int i = 0; i < s->n; i++) {
        nn_tensor_free(s->l[i].w);
        nn_tensor_free(s->l[i].b);
        s->l[i].w = s->l[i].b = NULL;
    }
    nn_params_clear(&s->params);
}

const nn_op_info *nn_seq_layer_op(const nn_layer *l) { return kinds[l->kind].op; }

nn_tensor *nn_seq_step(nn_ctx *ctx, const nn_layer *l, nn_tensor *h)
{
    const layer_kind *k = &kinds[l->kind];
    if (!k->op) return nn_flatten(ctx, h);
    /* through the registry's call, as gradcheck and the GPU test call it;
     * the case lives on the stack: nothing is allocated per step */
    nn_op_case c;
    c.n = k->weights ? 3 : 1;
    if (k->args) k->args(l, &c);
    nn_tensor *const in[3] = {h, l->w, l->b};
    return k->op->call(ctx, in, &c);
}

/* Whether the relu at layer i may overwrite its input h: h is the previous
 * layer's fresh output (not the caller's x), and that layer's backward never
 * reads its own output (conv and linear read their inputs). */
static bool relu_in_place(const nn_seq *s, int i, const nn_tensor *h, const nn_tensor *x)
{
    if (h == x || i == 0) return false;
    nn_layer_kind prev = s->l[i - 1].kind;
    return prev == NN_L_CONV || prev == NN_L_LINEAR;
}

/* Whether layer i's input h, the previous layer's output, is dead once layer
 * i has run (each layer's output has one consumer, the next layer).
 * Unrecorded (gradients off): always. Recorded: when neither backward
 * reads it: layer i's (maxpool keeps its argmax, dropout its mask) nor the
 * producer's (LRN recomputes its output; relu reads its own, conv and linear
 * never read theirs but relu in place shares that memory). */
static bool dead_after(const nn_seq *s, int i, const nn_tensor *h)
{
    if (!h->node) return true;
    nn_layer_kind self = s->l[i].kind, prev = s->l[i - 1].kind;
    bool self_reads_input = !(self == NN_L_MAXPOOL || self == NN_L_DROPOUT);
    bool prev_reads_output = prev == NN_L_RELU;
    return !self_reads_input && !prev_reads_output;
}

/* NN_FUSE_RELU=1: a conv or linear layer followed by a relu runs as one op
 * (nn_conv2d_relu, nn_linear_relu: on the GPU the ReLU is the GEMM's
 * epilogue, one pass over the activations fewer). Asked for here, by name,
 * rather than guessed by the CUDA kernels, because only the builder knows
 * the next layer; the graph still records the relu with its backward, over
 * the conv's memory, exactly as the in-place relu it replaces (relu_in_place
 * always holds after a conv or linear layer). Read at every forward (one
 * getenv a step) so a test can compare both in one process. */
bool nn_seq_fuses_relu(const nn_seq *s, int i)
{
    if (i < 0 || i + 1 >= s->n || s->l[i + 1].kind != NN_L_RELU) return false;
    if (s->l[i].kind != NN_L_CONV && s->l[i].kind != NN_L_LINEAR) return false;
    const char *e = getenv(NN_FUSE_RELU_ENV);
    return e && e[0] == '1';
}

/* Layer i (conv or linear) and the relu after it, as one op. */
static nn_tensor *fused_relu_step(nn_ctx *ctx, const nn_layer *l, nn_tensor *h)
{
    if (l->kind == NN_L_LINEAR) return nn_linear_relu(ctx, h, l->w, l->b);
    return nn_conv2d_relu(ctx, h, l->w, l->b, conv_params(l));
}

nn_tensor *nn_seq_forward(nn_ctx *ctx, nn_seq *s, nn_tensor *x)
{
    if (!x) return NULL;
    if (x->ndim != 4 || x->shape[1] != s->in_c || x->shape[2] != s->in_h || x->shape[3] != s->in_w) {
        char b[64];
        nn_error(NN_E_SHAPE, "model: input %s does not match the model's Nx%dx%dx%d",
                 nn_shape_str(x, b, sizeof b), s->in_c, s->in_h, s->in_w);
        return nn_ctx_fail(ctx, NN_E_SHAPE);
    }
    nn_tensor *h = x;
    for (int i = 0; i < s->n && h; i++) {
        const bool fuse = nn_seq_fuses_relu(s, i);
        nn_tensor *next = fuse ? fused_relu_step(ctx, &s->l[i], h)
                          : s->l[i].kind == NN_L_RELU && relu_in_place(s, i, h, x) ? nn_relu_(ctx, h)
                                                                                   : nn_seq_step(ctx, &s->l[i], h);
        if (next && h != x && next->data != h->data && dead_after(s, i, h)) nn_ctx_release(ctx, h);
        h = next;
        if (fuse) i++; /* the relu ran inside layer i */
    }
    return h;
}

static bool has_nonfinite(const nn_tensor *t)
{
    size_t cnt = 0;
    const nn_backend *be = nn_backend_get(t->device);
    return be && be->count_nonfinite(t->numel, nn_f32(t), &cnt) == NN_OK && cnt > 0;
}

const char *nn_seq_find_nonfinite(nn_seq *s, nn_tensor *x)
{
    for (int i = 0; i < s->n; i++)
        if ((s->l[i].w && has_nonfinite(s->l[i].w)) || (s->l[i].b && has_nonfinite(s->l[i].b))) return s->l[i].name;
    nn_ctx *ctx = nn_ctx_new();
    if (!ctx) return NULL;
    nn_ctx_set_grad(ctx, false);
    nn_ctx_set_training(ctx, false);
    const char *bad = NULL;
    nn_tensor *h = x;
    for (int i = 0; i < s->n && h && !bad; i++) {
        nn_seq one = *s; /* the same layers, one at a time */
        one.n = 1;
        one.l[0] = s->l[i];
        one.in_c = h->ndim == 4 ? h->shape[1] : 0;
        h = nn_seq_step(ctx, &one.l[0], h);
        if (h && has_nonfinite(h)) bad = s->l[i].name;
    }
    nn_ctx_free(ctx);
    return bad;
}

long long nn_seq_params(const nn_seq *s)
{
    long long n = 0;
    for (int i = 0; i < s->n; i++) n += s->l[i].params;
    return n;
}

long long nn_seq_macs(const nn_seq *s)
{
    long long n = 0;
    for (int i = 0; i < s->n; i++) n += s->l[i].macs;
    return n;
}

/* 62378344 -> "62,378,344" */
static const char *commas(long long v, char *buf)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v), k = 0;
    for (int i = 0; i < n; i++) {
        buf[k++] = tmp[i];
        if ((n - i - 1) % 3 == 0 && i != n - 1) buf[k++] = ',';
    }
    buf[k] = '\0';
    return buf;
}

void nn_seq_print_summary(const nn_seq *s, FILE *f)
{
    char a[32], b[32], shape[48];
    bool flat = false;
    fprintf(f, "%-14s %-22s %-16s %14s %16s\n", "layer", "op", "output", "params", "MACs");
    for (int i = 0; i < s->n; i++) {
        const nn_layer *l = &s->l[i];
        char op[48];
        if (kinds[l->kind].describe) kinds[l->kind].describe(l, op, sizeof op);
        else snprintf(op, sizeof op, "%s", kinds[l->kind].name);
        if (l->kind == NN_L_FLATTEN) flat = true;
        if (flat)
            snprintf(shape, sizeof shape, "%d", l->out_shape[0]);
        else
            snprintf(shape, sizeof shape, "%dx%dx%d", l->out_shape[0], l->out_shape[1], l->out_shape[2]);
        fprintf(f, "%-14s %-22s %-16s %14s %16s\n", l->name, op, shape, l->params ? commas(l->params, a) : "",
                l->macs ? commas(l->macs, b) : "");
    }
    double macs = (double)nn_seq_macs(s);
    if (macs >= 1e8)
        fprintf(f, "total: %s parameters, %s multiply-adds per image (%.3f G MAC, %.2f GFLOP forward)\n",
                commas(nn_seq_params(s), a), commas(nn_seq_macs(s), b), macs / 1e9, 2.0 * macs / 1e9);
    else
        fprintf(f, "total: %s parameters, %s multiply-adds per image (%.3f M MAC, %.2f MFLOP forward)\n",
                commas(nn_seq_params(s), a), commas(nn_seq_macs(s), b), macs / 1e6, 2.0 * macs / 1e6);
}

static nn_status move(nn_seq *s, nn_tensor **slot, nn_device dev)
{
    nn_tensor *t = NULL;
    NN_TRY(nn_tensor_to(&t, *slot, dev));
    nn_status st = nn_tensor_require_grad(t);
    if (st != NN_OK) {
        nn_tensor_free(t);
        return st;
    }
    for (int i = 0; i < s->params.n; i++)
        if (s->params.p[i].t == *slot) s->params.p[i].t = t;
    nn_tensor_free(*slot);
    *slot = t;
    return NN_OK;
}

nn_status nn_seq_to(nn_seq *s, nn_device dev)
{
    for (int i = 0; i < s->n; i++) {
        if (s->l[i].w && s->l[i].w->device != dev) NN_TRY(move(s, &s->l[i].w, dev));
        if (s->l[i].b && s->l[i].b->device != dev) NN_TRY(move(s, &s->l[i].b, dev));
    }
    return NN_OK;
}
