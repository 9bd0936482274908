/* Weights-only files (see weights.h): the architecture read off the shapes,
 * then every tensor checked against the model those shapes describe. */
#include "models/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "models/checkpoint.h"

/* Largest input size tried when fc6's input fixes the size. */
#define MAX_SIZE 4096

/* "(a, b, c)" of a file tensor. */
static const char *eshape(const nn_st_entry *e, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < e->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)e->shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

static const char *ishape(const int *s, int nd, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < nd && k < n; i++) k += (size_t)snprintf(buf + k, n - k, i ? ", %d" : "%d", s[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

/* Dimension k of tensor name, which must have ndim dims (what: "a conv weight (out, in, kh, kw)"). */
static nn_status dim(const nn_st_file *f, const char *name, int ndim, const char *what, int k, int *out)
{
    const nn_st_entry *e = nn_st_find(f, name);
    if (!e) return nn_error(NN_E_FORMAT, "%s: weights-only file lacks tensor '%s'", nn_st_path(f), name);
    char b[128];
    if (e->ndim != ndim || e->shape[k] < 1 || e->shape[k] > (1 << 24))
        return nn_error(NN_E_SHAPE, "%s: tensor '%s' has shape %s, expected %s", nn_st_path(f), name,
                        eshape(e, b, sizeof b), what);
    *out = (int)e->shape[k];
    return NN_OK;
}

#define CONV_W "a conv weight (out, in/groups, kh, kw)"
#define LIN_W "a linear weight (out, in)"

static const nn_layer *layer(const nn_seq *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->l[i].name, name) == 0) return &s->l[i];
    return NULL;
}

/* The conv channel counts of cfg's AlexNet (from the model definition itself,
 * so the rounding of width cannot drift from it). */
static void alexnet_channels(const nn_model_config *cfg, int ch[5])
{
    static const char *names[5] = {"stage1.0", "stage2.0", "stage3.0", "stage4.0", "stage5.0"};
    nn_seq s;
    nn_alexnet_layers(&s, cfg);
    for (int i = 0; i < 5; i++) {
        const nn_layer *l = layer(&s, names[i]);
        ch[i] = l ? l->out : -1;
    }
}

/* A width whose rounded channel counts are the file's. ch(96, w) = c1 needs
 * 96 w / 8 within 0.5 of c1 / 8: w in [(c1 - 4) / 96, (c1 + 4) / 96], or
 * anything below when c1 is the floor of 8 channels; any w there giving the
 * other four counts builds the same model. */
static nn_status find_width(const nn_st_file *f, nn_model_config *cfg, const int want[5])
{
    int got[5];
    /* the width a user would have typed first (96 channels: 1, 48: 0.5, ...) */
    cfg->width = (float)want[0] / 96.0f;
    alexnet_channels(cfg, got);
    if (memcmp(got, want, sizeof got) == 0) return NN_OK;
    float lo = want[0] <= 8 ? 0.0f : ((float)want[0] - 4.0f) / 96.0f, hi = ((float)want[0] + 4.0f) / 96.0f;
    for (int k = 1; k <= 1000; k++) {
        cfg->width = lo + (hi - lo) * (float)k / 1000.0f;
        if (!(cfg->width > 0) || cfg->width > 8) continue;
        alexnet_channels(cfg, got);
        if (memcmp(got, want, sizeof got) == 0) return NN_OK;
    }
    return nn_error(NN_E_SHAPE, "%s: no AlexNet width gives conv channels %d, %d, %d, %d, %d (tensors stage1.0.weight "
                    "... stage5.0.weight; AlexNet's are 96, 256, 384, 384, 256 times one width)", nn_st_path(f),
                    want[0], want[1], want[2], want[3], want[4]);
}

static nn_status infer_alexnet(const nn_st_file *f, nn_model_config *cfg, int *flat)
{
    static const char *w[5] = {"stage1.0.weight", "stage2.0.weight", "stage3.0.weight", "stage4.0.weight",
                               "stage5.0.weight"};
    int ch[5], in2;
    for (int i = 0; i < 5; i++) NN_TRY(dim(f, w[i], 4, CONV_W, 0, &ch[i]));
    NN_TRY(dim(f, w[0], 4, CONV_W, 1, &cfg->in_channels));
    NN_TRY(dim(f, w[1], 4, CONV_W, 1, &in2));
    /* conv2 sees conv1's channels, split in groups */
    if (ch[0] % in2 || (ch[0] / in2 != 1 && ch[0] / in2 != 2))
        return nn_error(NN_E_SHAPE, "%s: tensor 'stage2.0.weight' takes %d input channels per group, but conv1 has %d "
                        "outputs: groups would be %d/%d (AlexNet has 1 or 2)", nn_st_path(f), in2, ch[0], ch[0], in2);
    cfg->groups = ch[0] / in2;
    NN_TRY(dim(f, "classifier.2.weight", 2, LIN_W, 0, &cfg->fc));
    NN_TRY(dim(f, "classifier.2.weight", 2, LIN_W, 1, flat));
    NN_TRY(dim(f, "classifier.7.weight", 2, LIN_W, 0, &cfg->classes));
    return find_width(f, cfg, ch);
}

static nn_status infer_lenet(const nn_st_file *f, nn_model_config *cfg, int *flat)
{
    NN_TRY(dim(f, "features.0.weight", 4, CONV_W, 1, &cfg->in_channels));
    NN_TRY(dim(f, "classifier.1.weight", 2, LIN_W, 1, flat));
    return dim(f, "classifier.5.weight", 2, LIN_W, 0, &cfg->classes);
}

/* The first linear layer's input at input size S, or -1 if S does not fit. */
static int flat_at(const nn_model_config *cfg, int S)
{
    nn_model_config c = *cfg;
    c.in_size = S;
    nn_seq s;
    if (nn_model_build(&s, &c, NN_CPU, NULL) != NN_OK) return -1;
    for (int i = 0; i < s.n; i++)
        if (s.l[i].kind == NN_L_LINEAR) return s.l[i].in_shape[0];
    return -1;
}

static const char *first_linear(const nn_model_config *cfg)
{
    return strcmp(cfg->arch, "lenet") == 0 ? "classifier.1.weight" : "classifier.2.weight";
}

static nn_status infer_size(const nn_st_file *f, nn_model_config *cfg, int flat, int hint, char *note, size_t nn)
{
    const char *t = first_linear(cfg);
    if (hint) {
        int got = flat_at(cfg, hint);
        if (got != flat)
            return nn_error(NN_E_SHAPE, "%s: tensor '%s' takes %d inputs, but at input size %d (--size) the features "
                            "flatten to %d", nn_st_path(f), t, flat, hint, got);
        cfg->in_size = hint;
        return NN_OK;
    }
    int lo = 0, hi = 0;
    for (int S = 1; S <= MAX_SIZE; S++)
        if (flat_at(cfg, S) == flat) {
            if (!lo) lo = S;
            hi = S;
        } else if (lo) {
            break; /* the sizes that fit are one run */
        }
    if (!lo)
        return nn_error(NN_E_SHAPE, "%s: tensor '%s' takes %d inputs, which no input size up to %d gives", nn_st_path(f),
                        t, flat, MAX_SIZE);
    cfg->in_size = lo <= 224 && 224 <= hi ? 224 : lo;
    if (note && lo < hi) snprintf(note, nn, "input sizes %d..%d all fit %s; using %d (--size to choose)", lo, hi, t,
                                  cfg->in_size);
    return NN_OK;
}

/* Expected shape of a parameter of an inferred layer. */
static int param_shape(const nn_layer *l, bool bias, int *s)
{
    if (bias) {
        s[0] = l->out;
        return 1;
    }
    if (l->kind == NN_L_CONV) {
        s[0] = l->out;
        s[1] = l->in_shape[0] / (l->groups ? l->groups : 1);
        s[2] = s[3] = l->k;
        return 4;
    }
    s[0] = l->out;
    s[1] = l->in_shape[0] * l->in_shape[1] * l->in_shape[2];
    return 2;
}

static void describe(const nn_model_config *c, char *b, size_t n)
{
    if (strcmp(c->arch, "alexnet") == 0)
        snprintf(b, n, "alexnet, %d input channels, width %.4g, groups %d, fc %d, %d classes, input %d", c->in_channels,
                 (double)c->width, c->groups, c->fc, c->classes, c->in_size);
    else
        snprintf(b, n, "%s, %d input channels, %d classes, input %d", c->arch, c->in_channels, c->classes, c->in_size);
}

/* Every parameter of cfg's model in the file with its shape, and nothing else. */
static nn_status check_all(const nn_st_file *f, const nn_model_config *cfg)
{
    nn_seq s;
    if (nn_model_build(&s, cfg, NN_CPU, NULL) != NN_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", nn_errmsg()); /* nn_error writes the same buffer */
        return nn_error(NN_E_SHAPE, "%s: %s", nn_st_path(f), msg);
    }
    char d[256], a[128], b[128];
    describe(cfg, d, sizeof d);
    int expected = 0;
    for (int i = 0; i < s.n; i++) {
        const nn_layer *l = &s.l[i];
        if (l->kind != NN_L_CONV && l->kind != NN_L_LINEAR) continue;
        for (int bias = 0; bias < 2; bias++) {
            char name[64];
            int sh[4], nd = param_shape(l, bias, sh);
            snprintf(name, sizeof name, "%s.%s", l->name, bias ? "bias" : "weight");
            expected++;
            const nn_st_entry *e = nn_st_find(f, name);
            if (!e) return nn_error(NN_E_FORMAT, "%s: weights-only file lacks tensor '%s' of %s", nn_st_path(f), name, d);
            bool same = e->ndim == nd;
            for (int k = 0; same && k < nd; k++) same = e->shape[k] == sh[k];
            if (!same)
                return nn_error(NN_E_SHAPE, "%s: tensor '%s' has shape %s, but the model the other tensors describe "
                                "(%s) needs %s", nn_st_path(f), name, eshape(e, a, sizeof a), d, ishape(sh, nd, b, sizeof b));
        }
    }
    for (int i = 0; i < nn_st_count(f) && nn_st_count(f) != expected; i++) {
        const char *name = nn_st_entry_at(f, i)->name, *dot = strrchr(name, '.');
        char lname[64];
        snprintf(lname, sizeof lname, "%.*s", dot ? (int)(dot - name) : 0, name);
        const nn_layer *l = dot ? layer(&s, lname) : NULL;
        if (!l || (l->kind != NN_L_CONV && l->kind != NN_L_LINEAR) || (strcmp(dot, ".weight") && strcmp(dot, ".bias")))
            return nn_error(NN_E_FORMAT, "%s: tensor '%s' is not a parameter of %s", nn_st_path(f), name, d);
    }
    return NN_OK;
}

static nn_status hint_check(const nn_st_file *f, const char *t, const char *what, int hint, int got)
{
    if (hint && hint != got)
        return nn_error(NN_E_SHAPE, "%s: tensor '%s' says %d %s, the flags %d", nn_st_path(f), t, got, what, hint);
    return NN_OK;
}

static nn_status infer(const nn_st_file *f, const nn_weights_hints *h, nn_model_config *cfg, char *note, size_t nn)
{
    bool alex = nn_st_find(f, "stage1.0.weight") != NULL, lenet = nn_st_find(f, "features.0.weight") != NULL;
    if (h->arch[0]) {
        alex = strcmp(h->arch, "alexnet") == 0;
        lenet = strcmp(h->arch, "lenet") == 0;
    }
    if (!alex && !lenet)
        return nn_error(NN_E_FORMAT, "%s: neither a convnet checkpoint nor a weights-only AlexNet or LeNet (no tensor "
                        "'stage1.0.weight' or 'features.0.weight')", nn_st_path(f));
    *cfg = alex ? nn_alexnet_config() : nn_lenet_config();
    int flat = 0;
    NN_TRY(alex ? infer_alexnet(f, cfg, &flat) : infer_lenet(f, cfg, &flat));
    NN_TRY(hint_check(f, alex ? "stage1.0.weight" : "features.0.weight", "input channels", h->in_channels,
                      cfg->in_channels));
    NN_TRY(hint_check(f, alex ? "classifier.7.weight" : "classifier.5.weight", "classes", h->classes, cfg->classes));
    NN_TRY(infer_size(f, cfg, flat, h->in_size, note, nn));
    return check_all(f, cfg);
}

nn_status nn_weights_infer(const char *path, const nn_weights_hints *hints, nn_model_config *cfg, char *note,
                           size_t note_n)
{
    static const nn_weights_hints none;
    if (note && note_n) note[0] = '\0';
    nn_st_file *f = NULL;
    NN_TRY(nn_st_open(path, &f));
    nn_status s = infer(f, hints ? hints : &none, cfg, note, note_n);
    nn_st_close(f);
    return s;
}

bool nn_weights_only(const char *path)
{
    nn_st_file *f = NULL;
    if (nn_st_open(path, &f) != NN_OK) return false;
    bool only = nn_st_meta(f, "format") == NULL;
    nn_st_close(f);
    return only;
}

/* ---- loading ---- */

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023u, bits;
    if (e == 0) { /* zero or subnormal: m * 2^-24 */
        float v = (float)m / 16777216.0f;
        return sign ? -v : v;
    }
    bits = e == 31 ? sign | 0x7f800000u | (m << 13) : sign | ((e + 112) << 23) | (m << 13);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* The entry's values as float32 in out (numel floats); the data of foreign
 * files need not be aligned, hence memcpy per element. */
static nn_status to_f32(const nn_st_file *f, const nn_st_entry *e, float *out)
{
    const uint8_t *p = e->data;
    for (size_t i = 0; i < e->numel; i++) {
        if (e->dtype == NN_ST_F32) {
            memcpy(&out[i], p + 4 * i, 4);
        } else if (e->dtype == NN_ST_F64) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        } else if (e->dtype == NN_ST_BF16 || e->dtype == NN_ST_F16) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            if (e->dtype == NN_ST_BF16)
                memcpy(&out[i], &bits, 4);
            else
                out[i] = half_to_float(h);
        } else {
            return nn_error(NN_E_FORMAT, "%s: tensor '%s' is %s; weights must be F32, F64, F16 or BF16", nn_st_path(f),
                            e->name, nn_st_dtype_name(e->dtype));
        }
    }
    return NN_OK;
}

static bool same_shape(const nn_st_entry *e, const nn_tensor *t)
{
    if (e->ndim != t->ndim) return false;
    for (int k = 0; k < e->ndim; k++)
        if (e->shape[k] != t->shape[k]) return false;
    return true;
}

static nn_status load_one(const nn_st_file *f, const nn_st_entry *e, nn_tensor *t, float *buf)
{
    NN_TRY(to_f32(f, e, buf));
    return nn_tensor_write(t, buf);
}

static nn_status load_params(const nn_st_file *f, nn_seq *seq, bool allow, nn_weights_report_fn report, void *user,
                             int *loaded)
{
    const nn_params *ps = &seq->params;
    size_t most = 1;
    for (int i = 0; i < ps->n; i++) most = ps->p[i].t->numel > most ? ps->p[i].t->numel : most;
    float *buf = malloc(most * sizeof *buf);
    if (!buf) return nn_error(NN_E_NOMEM, "%s: out of memory for a %zu-element tensor", nn_st_path(f), most);
    nn_status s = NN_OK;
    for (int i = 0; i < ps->n && s == NN_OK; i++) {
        const nn_param *p = &ps->p[i];
        const nn_st_entry *e = nn_st_find(f, p->name);
        char a[128], b[128], why[320];
        if (e && same_shape(e, p->t)) {
            if ((s = load_one(f, e, p->t, buf)) == NN_OK && loaded) (*loaded)++;
            continue;
        }
        if (e)
            snprintf(why, sizeof why, "shape %s in the file, %s in the model: freshly initialized",
                     eshape(e, a, sizeof a), nn_shape_str(p->t, b, sizeof b));
        else
            snprintf(why, sizeof why, "not in the file: freshly initialized");
        if (!allow)
            s = e ? nn_error(NN_E_SHAPE, "%s: tensor '%s' has shape %s, the model needs %s", nn_st_path(f), p->name, a, b)
                  : nn_error(NN_E_FORMAT, "%s: lacks tensor '%s'", nn_st_path(f), p->name);
        else if (report)
            report(p->name, why, user);
    }
    free(buf);
    return s;
}

static void report_extra(const nn_st_file *f, const nn_seq *seq, nn_weights_report_fn report, void *user)
{
    for (int i = 0; report && i < nn_st_count(f); i++) {
        const char *name = nn_st_entry_at(f, i)->name;
        if (strncmp(name, "optim.", 6) != 0 && !nn_params_find(&seq->params, name))
            report(name, "not a parameter of the model: ignored", user);
    }
}

nn_status nn_weights_load_into(nn_seq *seq, const char *path, bool allow_mismatch, nn_weights_report_fn report,
                               void *user, int *loaded)
{
    if (loaded) *loaded = 0;
    nn_st_file *f = NULL;
    NN_TRY(nn_st_open(path, &f));
    nn_status s = load_params(f, seq, allow_mismatch, report, user, loaded);
    if (s == NN_OK) report_extra(f, seq, report, user);
    nn_st_close(f);
    return s;
}

/* ---- either kind of file ---- */

nn_status nn_model_build_load(const char *path, const nn_model_config *cfg, nn_device dev, nn_seq *seq)
{
    /* the generator only fills the weights before they are overwritten */
    nn_rng rng = nn_rng_make(0);
    NN_TRY(nn_model_build(seq, cfg, dev, &rng));
    nn_status s = nn_weights_load_into(seq, path, false, NULL, NULL, NULL);
    if (s != NN_OK) nn_seq_free(seq);
    return s;
}

nn_status nn_model_load(const char *path, nn_device dev, const nn_weights_hints *hints, nn_model_config *cfg,
                        nn_seq *seq, bool *weights_only, char *note, size_t note_n)
{
    bool only = nn_weights_only(path);
    if (weights_only) *weights_only = only;
    if (note && note_n) note[0] = '\0';
    if (only)
        NN_TRY(nn_weights_infer(path, hints, cfg, note, note_n));
    else
        NN_TRY(nn_checkpoint_read_config(path, cfg, NULL));
    return nn_model_build_load(path, cfg, dev, seq);
}
