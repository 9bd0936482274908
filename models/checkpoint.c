/* Checkpoints on safetensors (see checkpoint.h). Scalars travel as metadata
 * strings printed with enough digits to round-trip exactly. */
#include "models/checkpoint.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

#define META_FORMAT "convnet-checkpoint-1"
#define USER_PREFIX "user."

/* ---- the training state ---- */

nn_train_state nn_train_state_make(const nn_train_recipe *recipe)
{
    nn_train_state st;
    memset(&st, 0, sizeof st);
    st.recipe = *recipe;
    st.lr = recipe->sched.base_lr;
    st.dropout_rng = nn_rng_make(recipe->seed ^ 0xD809u); /* apart from the init's and the data's streams */
    return st;
}

nn_schedule nn_train_schedule(const nn_train_state *st)
{
    nn_schedule s = st->sched;
    s.lr = st->lr;
    s.best = st->sched_best;
    s.bad_epochs = st->sched_bad_epochs;
    return s;
}

void nn_train_set_schedule(nn_train_state *st, const nn_schedule *s)
{
    st->lr = s->lr;
    st->sched_best = s->best;
    st->sched_bad_epochs = s->bad_epochs;
}

/* ---- free-form metadata ---- */

nn_status nn_ckpt_meta_set(nn_ckpt_meta *m, const char *key, const char *value)
{
    if (!m || !key || !value) return nn_error(NN_E_ARG, "checkpoint metadata: NULL list, key or value");
    if (!*key) return nn_error(NN_E_ARG, "checkpoint metadata: empty key");
    char *v = strdup(value);
    if (!v) return nn_error(NN_E_NOMEM, "checkpoint metadata: out of memory");
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->key[i], key) == 0) {
            free(m->value[i]);
            m->value[i] = v;
            return NN_OK;
        }
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        char **k2 = realloc(m->key, (size_t)cap * sizeof *k2);
        if (k2) m->key = k2;
        char **v2 = k2 ? realloc(m->value, (size_t)cap * sizeof *v2) : NULL;
        if (v2) m->value = v2, m->cap = cap;
        if (!v2) {
            free(v);
            return nn_error(NN_E_NOMEM, "checkpoint metadata: out of memory");
        }
    }
    m->key[m->n] = strdup(key);
    if (!m->key[m->n]) {
        free(v);
        return nn_error(NN_E_NOMEM, "checkpoint metadata: out of memory");
    }
    m->value[m->n++] = v;
    return NN_OK;
}

const char *nn_ckpt_meta_get(const nn_ckpt_meta *m, const char *key)
{
    if (!m || !key) return NULL;
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->key[i], key) == 0) return m->value[i];
    return NULL;
}

void nn_ckpt_meta_free(nn_ckpt_meta *m)
{
    if (!m) return;
    for (int i = 0; i < m->n; i++) free(m->key[i]), free(m->value[i]);
    free(m->key);
    free(m->value);
    memset(m, 0, sizeof *m);
}

/* ---- writing ---- */

static nn_status meta_f(nn_st_writer *w, const char *k, double v)
{
    char b[64];
    snprintf(b, sizeof b, "%.17g", v);
    return nn_st_writer_meta(w, k, b);
}

static nn_status meta_u(nn_st_writer *w, const char *k, uint64_t v)
{
    char b[32];
    snprintf(b, sizeof b, "%" PRIu64, v);
    return nn_st_writer_meta(w, k, b);
}

static nn_status add_params(nn_st_writer *w, const nn_params *ps)
{
    for (int i = 0; i < ps->n; i++) NN_TRY(nn_st_writer_add_tensor(w, ps->p[i].name, ps->p[i].t));
    return NN_OK;
}

static bool known_arch(const char *arch) { return strcmp(arch, "alexnet") == 0 || strcmp(arch, "lenet") == 0; }

static nn_status write_model(nn_st_writer *w, const nn_checkpoint_desc *d)
{
    if (!d->cfg) {
        if (d->arch) NN_TRY(nn_st_writer_meta(w, "model.arch", d->arch));
        if (d->init) NN_TRY(nn_st_writer_meta(w, "model.init", d->init));
        return NN_OK;
    }
    for (int k = 0; k < NN_MODEL_META_KEYS; k++) {
        char key[32], v[64];
        snprintf(key, sizeof key, "model.%s", nn_model_meta_keys[k]);
        nn_model_meta_value(d->cfg, k, v, sizeof v);
        NN_TRY(nn_st_writer_meta(w, key, v));
    }
    return NN_OK;
}

static nn_status write_recipe(nn_st_writer *w, const nn_train_recipe *r)
{
    NN_TRY(meta_u(w, "train.seed", r->seed));
    NN_TRY(meta_f(w, "train.mean", r->mean));
    NN_TRY(meta_f(w, "train.std", r->std));
    NN_TRY(meta_u(w, "train.batch_size", (uint64_t)r->batch_size));
    NN_TRY(meta_u(w, "train.epochs", (uint64_t)r->epochs));
    NN_TRY(meta_u(w, "train.limit", (uint64_t)r->limit));
    NN_TRY(meta_u(w, "train.augment", r->augment));
    NN_TRY(nn_st_writer_meta(w, "data.classes", r->classes));
    NN_TRY(nn_st_writer_meta(w, "optim.kind", nn_optim_kind_name(r->optim.kind)));
    NN_TRY(meta_f(w, "optim.lr", r->optim.lr));
    NN_TRY(meta_f(w, "optim.momentum", r->optim.momentum));
    NN_TRY(meta_f(w, "optim.weight_decay", r->optim.weight_decay));
    NN_TRY(meta_u(w, "optim.decay_bias", r->optim.decay_bias));
    NN_TRY(nn_st_writer_meta(w, "sched.kind", nn_sched_kind_name(r->sched.kind)));
    NN_TRY(meta_f(w, "sched.base_lr", r->sched.base_lr));
    NN_TRY(meta_u(w, "sched.step_epochs", (uint64_t)r->sched.step_epochs));
    NN_TRY(meta_f(w, "sched.gamma", r->sched.gamma));
    NN_TRY(meta_u(w, "sched.patience", (uint64_t)r->sched.patience));
    NN_TRY(meta_f(w, "sched.min_lr", r->sched.min_lr));
    return NN_OK;
}

static nn_status write_progress(nn_st_writer *w, const nn_train_progress *p)
{
    NN_TRY(meta_u(w, "train.epoch", (uint64_t)p->epoch));
    NN_TRY(meta_u(w, "train.batch", (uint64_t)p->batch));
    NN_TRY(meta_u(w, "train.step", (uint64_t)p->step));
    NN_TRY(meta_u(w, "train.dropout_seed", p->dropout_rng.seed));
    NN_TRY(meta_u(w, "train.dropout_offset", p->dropout_rng.offset));
    NN_TRY(meta_f(w, "train.best_acc", p->best_acc));
    NN_TRY(meta_f(w, "sched.lr", p->lr));
    NN_TRY(meta_f(w, "sched.best", p->sched_best));
    NN_TRY(meta_u(w, "sched.bad_epochs", (uint64_t)p->sched_bad_epochs));
    return NN_OK;
}

static nn_status write_user(nn_st_writer *w, const nn_ckpt_meta *m)
{
    for (int i = 0; m && i < m->n; i++) {
        char key[256];
        if (snprintf(key, sizeof key, USER_PREFIX "%s", m->key[i]) >= (int)sizeof key)
            return nn_error(NN_E_ARG, "checkpoint: metadata key '%.40s...' is too long", m->key[i]);
        NN_TRY(nn_st_writer_meta(w, key, m->value[i]));
    }
    return NN_OK;
}

static nn_status write_norm(nn_st_writer *w, const nn_data_norm *n)
{
    if (n->channels < 1 || n->channels > 3)
        return nn_error(NN_E_ARG, "checkpoint: data normalization of %d channels (1 to 3)", n->channels);
    char mean[128] = "", std[128] = "";
    for (int c = 0; c < n->channels; c++) {
        size_t k = strlen(mean), j = strlen(std);
        snprintf(mean + k, sizeof mean - k, "%s%.9g", c ? "," : "", (double)n->mean[c]);
        snprintf(std + j, sizeof std - j, "%s%.9g", c ? "," : "", (double)n->std[c]);
    }
    NN_TRY(nn_st_writer_meta(w, "data.mean", mean));
    NN_TRY(nn_st_writer_meta(w, "data.std", std));
    return meta_u(w, "data.resize", (uint64_t)n->resize);
}

static nn_status fill_writer(nn_st_writer *w, const nn_checkpoint_desc *d)
{
    NN_TRY(nn_st_writer_meta(w, "format", META_FORMAT));
    NN_TRY(write_model(w, d));
    NN_TRY(add_params(w, d->params));
    if (d->opt) {
        NN_TRY(add_params(w, nn_optim_state(d->opt)));
        NN_TRY(meta_u(w, "optim.steps", (uint64_t)nn_optim_steps(d->opt)));
    }
    if (d->st) {
        NN_TRY(write_recipe(w, &d->st->recipe));
        NN_TRY(write_progress(w, &d->st->progress));
    } else if (d->has_norm) {
        NN_TRY(meta_f(w, "train.mean", d->mean));
        NN_TRY(meta_f(w, "train.std", d->std));
    }
    if (d->norm) NN_TRY(write_norm(w, d->norm));
    return write_user(w, d->meta);
}

nn_status nn_checkpoint_write(const char *path, const nn_checkpoint_desc *d)
{
    if (!path || !d || !d->params)
        return nn_error(NN_E_ARG, "checkpoint: NULL %s", !path ? "path" : !d ? "description" : "parameter list");
    if (d->cfg && !known_arch(d->cfg->arch))
        return nn_error(NN_E_ARG, "checkpoint: arch '%s' is not a built-in model (alexnet, lenet): "
                                  "pass cfg = NULL and arch = \"%s\" for a model of your own",
                        d->cfg->arch, d->cfg->arch);
    nn_st_writer *w = NULL;
    NN_TRY(nn_st_writer_new(&w));
    nn_status s = fill_writer(w, d);
    if (s == NN_OK) s = nn_st_write(w, path);
    nn_st_writer_free(w);
    return s;
}

nn_status nn_checkpoint_save(const char *path, const nn_model_config *cfg, const nn_seq *seq,
                             const nn_optim *opt, const nn_train_state *st)
{
    if (!seq) return nn_error(NN_E_ARG, "checkpoint: NULL model");
    nn_checkpoint_desc d = {.params = &seq->params, .cfg = cfg, .opt = opt, .st = st};
    return nn_checkpoint_write(path, &d);
}

/* ---- reading ---- */

static nn_status get(const nn_st_file *f, const char *key, const char **v)
{
    *v = nn_st_meta(f, key);
    if (!*v) return nn_error(NN_E_FORMAT, "%s: checkpoint metadata lacks '%s'", nn_st_path(f), key);
    return NN_OK;
}

static nn_status get_u(const nn_st_file *f, const char *key, uint64_t *out)
{
    const char *v;
    NN_TRY(get(f, key, &v));
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (!*v || *end || *v == '-')
        return nn_error(NN_E_FORMAT, "%s: checkpoint metadata %s = '%s' is not a count", nn_st_path(f), key, v);
    *out = x;
    return NN_OK;
}

static nn_status get_i(const nn_st_file *f, const char *key, int *out)
{
    uint64_t x = 0;
    NN_TRY(get_u(f, key, &x));
    if (x > 0x7fffffff)
        return nn_error(NN_E_FORMAT, "%s: checkpoint metadata %s is too large", nn_st_path(f), key);
    *out = (int)x;
    return NN_OK;
}

static nn_status get_f(const nn_st_file *f, const char *key, float *out)
{
    const char *v;
    NN_TRY(get(f, key, &v));
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end)
        return nn_error(NN_E_FORMAT, "%s: checkpoint metadata %s = '%s' is not a number", nn_st_path(f), key, v);
    *out = (float)x;
    return NN_OK;
}

static nn_status get_bool(const nn_st_file *f, const char *key, bool *out)
{
    uint64_t u = 0;
    NN_TRY(get_u(f, key, &u));
    *out = u != 0;
    return NN_OK;
}

static nn_status read_kinds(const nn_st_file *f, nn_train_recipe *r)
{
    const char *v;
    NN_TRY(get(f, "optim.kind", &v));
    if (nn_optim_parse_kind(v, &r->optim.kind) != NN_OK)
        return nn_error(NN_E_FORMAT, "%s: checkpoint metadata optim.kind = '%s' is not sgd, adam or adamw",
                        nn_st_path(f), v);
    NN_TRY(get(f, "sched.kind", &v));
    if (nn_sched_parse_kind(v, &r->sched.kind) != NN_OK)
        return nn_error(NN_E_FORMAT, "%s: checkpoint metadata sched.kind = '%s' is not a known schedule",
                        nn_st_path(f), v);
    NN_TRY(get(f, "data.classes", &v));
    if (strlen(v) >= sizeof r->classes)
        return nn_error(NN_E_FORMAT, "%s: checkpoint metadata data.classes is too long", nn_st_path(f));
    strcpy(r->classes, v);
    return NN_OK;
}

static nn_status read_recipe(const nn_st_file *f, nn_train_recipe *r)
{
    NN_TRY(get_u(f, "train.seed", &r->seed));
    NN_TRY(get_f(f, "train.mean", &r->mean));
    NN_TRY(get_f(f, "train.std", &r->std));
    NN_TRY(get_i(f, "train.batch_size", &r->batch_size));
    NN_TRY(get_i(f, "train.epochs", &r->epochs));
    NN_TRY(get_i(f, "train.limit", &r->limit));
    NN_TRY(get_bool(f, "train.augment", &r->augment));
    NN_TRY(read_kinds(f, r));
    NN_TRY(get_f(f, "optim.lr", &r->optim.lr));
    NN_TRY(get_f(f, "optim.momentum", &r->optim.momentum));
    NN_TRY(get_f(f, "optim.weight_decay", &r->optim.weight_decay));
    NN_TRY(get_bool(f, "optim.decay_bias", &r->optim.decay_bias));
    NN_TRY(get_f(f, "sched.base_lr", &r->sched.base_lr));
    NN_TRY(get_i(f, "sched.step_epochs", &r->sched.step_epochs));
    NN_TRY(get_f(f, "sched.gamma", &r->sched.gamma));
    NN_TRY(get_i(f, "sched.patience", &r->sched.patience));
    NN_TRY(get_f(f, "sched.min_lr", &r->sched.min_lr));
    return NN_OK;
}

static nn_status read_progress(const nn_st_file *f, nn_train_progress *p)
{
    uint64_t u;
    NN_TRY(get_i(f, "train.epoch", &p->epoch));
    NN_TRY(get_i(f, "train.batch", &p->batch));
    NN_TRY(get_u(f, "train.step", &u));
    p->step = (int64_t)u;
    NN_TRY(get_u(f, "train.dropout_seed", &p->dropout_rng.seed));
    NN_TRY(get_u(f, "train.dropout_offset", &p->dropout_rng.offset));
    NN_TRY(get_f(f, "train.best_acc", &p->best_acc));
    NN_TRY(get_f(f, "sched.lr", &p->lr));
    NN_TRY(get_f(f, "sched.best", &p->sched_best));
    NN_TRY(get_i(f, "sched.bad_epochs", &p->sched_bad_epochs));
    return NN_OK;
}

static nn_status read_state(const nn_st_file *f, nn_train_state *st)
{
    memset(st, 0, sizeof *st);
    NN_TRY(read_progress(f, &st->progress));
    return read_recipe(f, &st->recipe);
}

static nn_status check_format(const nn_st_file *f)
{
    const char *fmt = nn_st_meta(f, "format");
    if (!fmt || strcmp(fmt, META_FORMAT) != 0)
        return nn_error(NN_E_FORMAT, "%s: not a convnet checkpoint (metadata 'format' is %s%s%s)", nn_st_path(f),
                        fmt ? "'" : "", fmt ? fmt : "missing", fmt ? "'" : "");
    return NN_OK;
}

static nn_status read_config(const nn_st_file *f, nn_model_config *cfg, nn_train_state *st)
{
    NN_TRY(check_format(f));
    const char *arch = nn_st_meta(f, "model.arch");
    if (arch && !known_arch(arch))
        return nn_error(NN_E_UNSUPPORTED, "%s: holds a model of its own ('%s'), not a built-in one (alexnet, lenet): "
                                          "build it and load it with nn_checkpoint_read", nn_st_path(f), arch);
    memset(cfg, 0, sizeof *cfg);
    for (int k = 0; k < NN_MODEL_META_KEYS; k++) {
        char key[32];
        const char *v;
        snprintf(key, sizeof key, "model.%s", nn_model_meta_keys[k]);
        NN_TRY(get(f, key, &v));
        nn_status s = nn_model_meta_set(cfg, nn_model_meta_keys[k], v);
        if (s != NN_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", nn_errmsg()); /* nn_error writes the same buffer */
            return nn_error(s, "%s: %s", nn_st_path(f), msg);
        }
    }
    if (st) NN_TRY(read_state(f, st));
    return NN_OK;
}

nn_status nn_checkpoint_read_config(const char *path, nn_model_config *cfg, nn_train_state *st)
{
    if (!path || !cfg) return nn_error(NN_E_ARG, "checkpoint: NULL %s", !path ? "path" : "config");
    nn_st_file *f = NULL;
    NN_TRY(nn_st_open(path, &f));
    nn_status s = read_config(f, cfg, st);
    nn_st_close(f);
    return s;
}

static nn_status load_params(const nn_st_file *f, const nn_params *ps)
{
    for (int i = 0; i < ps->n; i++) NN_TRY(nn_st_read_f32(f, ps->p[i].name, ps->p[i].t));
    return NN_OK;
}

static nn_status load_optim(const nn_st_file *f, nn_optim *opt)
{
    uint64_t steps;
    NN_TRY(load_params(f, nn_optim_state(opt)));
    NN_TRY(get_u(f, "optim.steps", &steps));
    nn_optim_set_steps(opt, (int64_t)steps);
    return NN_OK;
}

static nn_status read_meta(const nn_st_file *f, nn_ckpt_meta *m)
{
    nn_ckpt_meta_free(m);
    const char *k, *v;
    for (int i = 0; nn_st_meta_at(f, i, &k, &v); i++) NN_TRY(nn_ckpt_meta_set(m, k, v));
    return NN_OK;
}

static nn_status read_all(const nn_st_file *f, const nn_params *params, nn_optim *opt, nn_train_state *st,
                          nn_ckpt_meta *meta)
{
    NN_TRY(check_format(f));
    NN_TRY(load_params(f, params));
    if (opt) NN_TRY(load_optim(f, opt));
    if (st) NN_TRY(read_state(f, st));
    if (meta) NN_TRY(read_meta(f, meta));
    return NN_OK;
}

nn_status nn_checkpoint_read(const char *path, const nn_params *params, nn_optim *opt, nn_train_state *st,
                             nn_ckpt_meta *meta)
{
    if (!path || !params) return nn_error(NN_E_ARG, "checkpoint: NULL %s", !path ? "path" : "parameter list");
    nn_st_file *f = NULL;
    NN_TRY(nn_st_open(path, &f));
    nn_status s = read_all(f, params, opt, st, meta);
    nn_st_close(f);
    return s;
}

/* "a,b,c" (1 to 3 finite numbers) into v; the count, or 0 if it does not parse. */
static int parse_floats(const char *s, float v[3])
{
    int n = 0;
    for (char *end; n < 3; s = end + 1) {
        v[n] = strtof(s, &end);
        if (end == s || !isfinite(v[n])) return 0;
        n++;
        if (*end == '\0') return n;
        if (*end != ',') return 0;
    }
    return 0;
}

static nn_status read_norm(const nn_st_file *f, nn_data_norm *n, bool *found)
{
    const char *mean = nn_st_meta(f, "data.mean"), *std = nn_st_meta(f, "data.std");
    if (!mean && !std) return NN_OK;
    int a = mean ? parse_floats(mean, n->mean) : 0, b = std ? parse_floats(std, n->std) : 0;
    if (a == 0 || a != b)
        return nn_error(NN_E_FORMAT, "%s: checkpoint metadata data.mean = '%s' and data.std = '%s' are not 1 to 3 "
                                     "numbers each, as many of both", nn_st_path(f), mean ? mean : "", std ? std : "");
    for (int c = 0; c < a; c++)
        if (!(n->std[c] > 0))
            return nn_error(NN_E_FORMAT, "%s: checkpoint metadata data.std = '%s' holds a value that is not positive",
                            nn_st_path(f), std);
    n->channels = a;
    NN_TRY(get_i(f, "data.resize", &n->resize));
    *found = true;
    return NN_OK;
}

nn_status nn_checkpoint_read_norm(const char *path, nn_data_norm *norm, bool *found)
{
    if (!path || !norm || !found) return nn_error(NN_E_ARG, "checkpoint: NULL path, normalization or flag");
    memset(norm, 0, sizeof *norm);
    *found = false;
    nn_st_file *f = NULL;
    NN_TRY(nn_st_open(path, &f));
    nn_status s = read_norm(f, norm, found);
    nn_st_close(f);
    if (s != NN_OK) memset(norm, 0, sizeof *norm), *found = false;
    return s;
}

nn_status nn_checkpoint_load(const char *path, nn_seq *seq, nn_optim *opt)
{
    if (!path || !seq) return nn_error(NN_E_ARG, "checkpoint: NULL %s", !path ? "path" : "model");
    nn_st_file *f = NULL;
    NN_TRY(nn_st_open(path, &f));
    nn_status s = load_params(f, &seq->params);
    if (s == NN_OK && opt) s = load_optim(f, opt);
    nn_st_close(f);
    return s;
}
