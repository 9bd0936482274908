/* Checkpoints on safetensors (see checkpoint.h). Scalars travel as metadata
 * strings printed with enough digits to round-trip exactly. */
#include "models/checkpoint.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

#define META_FORMAT "convnet-checkpoint-1"

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

static nn_status fill_writer(nn_st_writer *w, const nn_model_config *cfg, const nn_seq *seq,
                             const nn_optim *opt, const nn_train_state *st)
{
    NN_TRY(nn_st_writer_meta(w, "format", META_FORMAT));
    for (int k = 0; k < NN_MODEL_META_KEYS; k++) {
        char key[32], v[64];
        snprintf(key, sizeof key, "model.%s", nn_model_meta_keys[k]);
        nn_model_meta_value(cfg, k, v, sizeof v);
        NN_TRY(nn_st_writer_meta(w, key, v));
    }
    NN_TRY(add_params(w, &seq->params));
    if (opt) {
        NN_TRY(add_params(w, nn_optim_state(opt)));
        NN_TRY(meta_u(w, "optim.steps", (uint64_t)nn_optim_steps(opt)));
    }
    if (st) {
        NN_TRY(meta_u(w, "train.epoch", (uint64_t)st->epoch));
        NN_TRY(meta_u(w, "train.batch", (uint64_t)st->batch));
        NN_TRY(meta_u(w, "train.step", (uint64_t)st->step));
        NN_TRY(meta_u(w, "train.seed", st->seed));
        NN_TRY(meta_u(w, "train.dropout_seed", st->dropout_rng.seed));
        NN_TRY(meta_u(w, "train.dropout_offset", st->dropout_rng.offset));
        NN_TRY(meta_f(w, "train.mean", st->mean));
        NN_TRY(meta_f(w, "train.std", st->std));
        NN_TRY(meta_u(w, "train.batch_size", (uint64_t)st->batch_size));
        NN_TRY(meta_u(w, "train.epochs", (uint64_t)st->epochs));
        NN_TRY(meta_u(w, "train.limit", (uint64_t)st->limit));
        NN_TRY(meta_u(w, "train.augment", st->augment));
        NN_TRY(nn_st_writer_meta(w, "data.classes", st->classes));
        NN_TRY(meta_f(w, "train.best_acc", st->best_acc));
        NN_TRY(nn_st_writer_meta(w, "optim.kind", nn_optim_kind_name(st->optim.kind)));
        NN_TRY(meta_f(w, "optim.lr", st->optim.lr));
        NN_TRY(meta_f(w, "optim.momentum", st->optim.momentum));
        NN_TRY(meta_f(w, "optim.weight_decay", st->optim.weight_decay));
        NN_TRY(meta_u(w, "optim.decay_bias", st->optim.decay_bias));
        NN_TRY(nn_st_writer_meta(w, "sched.kind", nn_sched_kind_name(st->sched.kind)));
        NN_TRY(meta_f(w, "sched.base_lr", st->sched.base_lr));
        NN_TRY(meta_f(w, "sched.lr", st->sched.lr));
        NN_TRY(meta_u(w, "sched.step_epochs", (uint64_t)st->sched.step_epochs));
        NN_TRY(meta_f(w, "sched.gamma", st->sched.gamma));
        NN_TRY(meta_u(w, "sched.patience", (uint64_t)st->sched.patience));
        NN_TRY(meta_f(w, "sched.min_lr", st->sched.min_lr));
        NN_TRY(meta_f(w, "sched.best", st->sched.best));
        NN_TRY(meta_u(w, "sched.bad_epochs", (uint64_t)st->sched.bad_epochs));
    }
    return NN_OK;
}

nn_status nn_checkpoint_save(const char *path, const nn_model_config *cfg, const nn_seq *seq,
                             const nn_optim *opt, const nn_train_state *st)
{
    nn_st_writer *w = NULL;
    NN_TRY(nn_st_writer_new(&w));
    nn_status s = fill_writer(w, cfg, seq, opt, st);
    if (s == NN_OK) s = nn_st_write(w, path);
    nn_st_writer_free(w);
    return s;
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

static nn_status read_state(const nn_st_file *f, nn_train_state *st)
{
    memset(st, 0, sizeof *st);
    const char *v;
    uint64_t u;
    NN_TRY(get_i(f, "train.epoch", &st->epoch));
    NN_TRY(get_i(f, "train.batch", &st->batch));
    NN_TRY(get_u(f, "train.step", &u));
    st->step = (int64_t)u;
    NN_TRY(get_u(f, "train.seed", &st->seed));
    NN_TRY(get_u(f, "train.dropout_seed", &st->dropout_rng.seed));
    NN_TRY(get_u(f, "train.dropout_offset", &st->dropout_rng.offset));
    NN_TRY(get_f(f, "train.mean", &st->mean));
    NN_TRY(get_f(f, "train.std", &st->std));
    NN_TRY(get_i(f, "train.batch_size", &st->batch_size));
    NN_TRY(get_i(f, "train.epochs", &st->epochs));
    NN_TRY(get_i(f, "train.limit", &st->limit));
    NN_TRY(get_u(f, "train.augment", &u));
    st->augment = u != 0;
    NN_TRY(get(f, "data.classes", &v));
    if (strlen(v) >= sizeof st->classes)
        return nn_error(NN_E_FORMAT, "%s: checkpoint metadata data.classes is too long", nn_st_path(f));
    strcpy(st->classes, v);
    NN_TRY(get_f(f, "train.best_acc", &st->best_acc));
    NN_TRY(get(f, "optim.kind", &v));
    if (nn_optim_parse_kind(v, &st->optim.kind) != NN_OK)
        return nn_error(NN_E_FORMAT, "%s: checkpoint metadata optim.kind = '%s' is not sgd, adam or adamw",
                        nn_st_path(f), v);
    NN_TRY(get_f(f, "optim.lr", &st->optim.lr));
    NN_TRY(get_f(f, "optim.momentum", &st->optim.momentum));
    NN_TRY(get_f(f, "optim.weight_decay", &st->optim.weight_decay));
    NN_TRY(get_u(f, "optim.decay_bias", &u));
    st->optim.decay_bias = u != 0;
    NN_TRY(get(f, "sched.kind", &v));
    if (nn_sched_parse_kind(v, &st->sched.kind) != NN_OK)
        return nn_error(NN_E_FORMAT, "%s: checkpoint metadata sched.kind = '%s' is not a known schedule",
                        nn_st_path(f), v);
    NN_TRY(get_f(f, "sched.base_lr", &st->sched.base_lr));
    NN_TRY(get_f(f, "sched.lr", &st->sched.lr));
    NN_TRY(get_i(f, "sched.step_epochs", &st->sched.step_epochs));
    NN_TRY(get_f(f, "sched.gamma", &st->sched.gamma));
    NN_TRY(get_i(f, "sched.patience", &st->sched.patience));
    NN_TRY(get_f(f, "sched.min_lr", &st->sched.min_lr));
    NN_TRY(get_f(f, "sched.best", &st->sched.best));
    NN_TRY(get_i(f, "sched.bad_epochs", &st->sched.bad_epochs));
    return NN_OK;
}

static nn_status read_config(const nn_st_file *f, nn_model_config *cfg, nn_train_state *st)
{
    const char *fmt = nn_st_meta(f, "format");
    if (!fmt || strcmp(fmt, META_FORMAT) != 0)
        return nn_error(NN_E_FORMAT, "%s: not a convnet checkpoint (metadata 'format' is %s%s%s)", nn_st_path(f),
                        fmt ? "'" : "", fmt ? fmt : "missing", fmt ? "'" : "");
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

nn_status nn_checkpoint_load(const char *path, nn_seq *seq, nn_optim *opt)
{
    nn_st_file *f = NULL;
    NN_TRY(nn_st_open(path, &f));
    nn_status s = load_params(f, &seq->params);
    if (s == NN_OK && opt) {
        uint64_t steps;
        s = load_params(f, nn_optim_state(opt));
        if (s == NN_OK) s = get_u(f, "optim.steps", &steps);
        if (s == NN_OK) nn_optim_set_steps(opt, (int64_t)steps);
    }
    nn_st_close(f);
    return s;
}
