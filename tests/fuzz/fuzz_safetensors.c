/* libFuzzer target for the safetensors reader (io/safetensors.c) and the
 * checkpoint reader on top of it (models/checkpoint.c): nn_st_open, every
 * entry and metadata string, nn_st_read_tensor of every F32/I32 entry (and a
 * mismatched read), then nn_checkpoint_read_config, shape inference of the
 * config it yields and, for small models, nn_checkpoint_load with optimizer;
 * then the weights-only reader (models/weights.c): the architecture inferred
 * from the shapes and, for small models, strict and lenient loading. */
#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"
#include "tests/fuzz/fuzz_util.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "models/weights.h"

/* Models above this many parameters are only shape-checked: building them
 * would spend the fuzzing time in weight initialization. */
#define FZ_MAX_PARAMS 200000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_entries(const nn_st_file *f, const char *path)
{
    for (int i = 0; i < nn_st_count(f); i++) {
        const nn_st_entry *e = nn_st_entry_at(f, i);
        FZ_REQUIRE(e && e->name && e->ndim >= 0 && e->ndim <= NN_ST_MAX_DIMS);
        FZ_REQUIRE(nn_st_find(f, e->name) == e);
        FZ_REQUIRE(e->nbytes == e->numel * nn_st_dtype_size(e->dtype));
        /* the bytes must be there: ASan checks the copy */
        uint8_t sink[64];
        for (size_t k = 0; k < e->nbytes; k += sizeof sink) {
            size_t n = e->nbytes - k < sizeof sink ? e->nbytes - k : sizeof sink;
            memcpy(sink, (const uint8_t *)e->data + k, n);
        }
        if (e->dtype != NN_ST_F32 && e->dtype != NN_ST_I32) continue;
        if (e->ndim < 1 || e->ndim > NN_MAX_DIMS) continue;
        int shape[NN_MAX_DIMS];
        bool ok = true;
        for (int d = 0; d < e->ndim; d++) {
            ok = ok && e->shape[d] >= 1 && e->shape[d] <= INT32_MAX;
            shape[d] = ok ? (int)e->shape[d] : 1;
        }
        if (!ok) continue;
        nn_tensor *t = NULL;
        nn_dtype dt = e->dtype == NN_ST_F32 ? NN_F32 : NN_I32;
        if (nn_tensor_new(&t, dt, NN_CPU, e->ndim, shape) != NN_OK) continue;
        nn_status s = nn_st_read_tensor(f, e->name, t);
        FZ_REQUIRE(s == NN_OK);
        nn_tensor_free(t);
        /* the wrong shape and the wrong dtype must be errors that name the file */
        shape[0] += 1;
        if (nn_tensor_new(&t, dt, NN_CPU, e->ndim, shape) == NN_OK) {
            s = nn_st_read_tensor(f, e->name, t);
            FZ_REQUIRE(s != NN_OK);
            fz_check_error(s, path, "nn_st_read_tensor (wrong shape)");
            nn_tensor_free(t);
        }
        shape[0] -= 1;
        if (nn_tensor_new(&t, dt == NN_F32 ? NN_I32 : NN_F32, NN_CPU, e->ndim, shape) == NN_OK) {
            s = nn_st_read_tensor(f, e->name, t);
            FZ_REQUIRE(s != NN_OK);
            fz_check_error(s, path, "nn_st_read_tensor (wrong dtype)");
            nn_tensor_free(t);
        }
    }
    for (int i = 0; i < nn_st_meta_count(f); i++) {
        const char *k = NULL, *v = NULL;
        FZ_REQUIRE(nn_st_meta_at(f, i, &k, &v) && k && v);
        FZ_REQUIRE(nn_st_meta(f, k) != NULL);
        (void)strlen(v);
    }
}

static void read_checkpoint(const char *path)
{
    nn_model_config cfg;
    nn_train_state st;
    nn_status s = nn_checkpoint_read_config(path, &cfg, &st);
    fz_check_error(s, path, "nn_checkpoint_read_config");
    if (s != NN_OK) return;
    nn_seq probe;
    memset(&probe, 0, sizeof probe);
    s = nn_model_build(&probe, &cfg, NN_CPU, NULL); /* layers and shapes only */
    if (s != NN_OK) return;
    long long np = nn_seq_params(&probe);
    nn_seq_free(&probe);
    if (np < 0 || np > FZ_MAX_PARAMS) return;
    nn_seq seq;
    memset(&seq, 0, sizeof seq);
    nn_rng rng = nn_rng_make(1);
    if (nn_model_build(&seq, &cfg, NN_CPU, &rng) != NN_OK) return;
    nn_optim *opt = NULL;
    if (nn_optim_new(&opt, &st.optim, &seq.params) == NN_OK) {
        s = nn_checkpoint_load(path, &seq, opt);
        fz_check_error(s, path, "nn_checkpoint_load");
        nn_optim_free(opt);
    }
    nn_seq_free(&seq);
}

static void read_weights(const char *path)
{
    nn_model_config cfg;
    char note[256];
    nn_status s = nn_weights_infer(path, NULL, &cfg, note, sizeof note);
    fz_check_error(s, path, "nn_weights_infer");
    if (s != NN_OK) return;
    nn_seq seq;
    memset(&seq, 0, sizeof seq);
    if (nn_model_build(&seq, &cfg, NN_CPU, NULL) != NN_OK) return;
    long long np = nn_seq_params(&seq);
    if (np < 0 || np > FZ_MAX_PARAMS) return;
    nn_rng rng = nn_rng_make(1);
    if (nn_model_build(&seq, &cfg, NN_CPU, &rng) != NN_OK) return;
    s = nn_weights_load_into(&seq, path, false, NULL, NULL, NULL);
    fz_check_error(s, path, "nn_weights_load_into");
    s = nn_weights_load_into(&seq, path, true, NULL, NULL, NULL);
    fz_check_error(s, path, "nn_weights_load_into (lenient)");
    nn_seq_free(&seq);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_write_temp(data, size);
    nn_st_file *f = (nn_st_file *)&f; /* must come back NULL on failure */
    nn_status s = nn_st_open(path, &f);
    fz_check_error(s, path, "nn_st_open");
    if (s != NN_OK) {
        FZ_REQUIRE(f == NULL);
        return 0;
    }
    FZ_REQUIRE(f != NULL && strcmp(nn_st_path(f), path) == 0);
    read_entries(f, path);
    FZ_REQUIRE(nn_st_find(f, "no such tensor, surely\x01") == NULL);
    nn_st_close(f);
    read_checkpoint(path);
    read_weights(path);
    return 0;
}
