/* convnet predict: a trained model (a convnet checkpoint or a weights-only
 * file) on photos (JPEG, PNG: the top classes with probabilities, as text
 * or --json) or on a float32 tensor in a safetensors file (the logits, as a
 * safetensors file). Photos go through the evaluation pipeline of image
 * folders (io/photo.h) with the checkpoint's normalization. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/model_cli.h"
#include "io/dataset.h"
#include "io/photo.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"

#define MAX_NAMES 4096

/* Logits of n images (host, normalized) in batches; out: n x classes floats. */
static nn_status run_model(nn_seq *seq, nn_device dev, const float *x, int n, int batch, int classes, float *out)
{
    size_t img = (size_t)seq->in_c * seq->in_h * seq->in_w;
    nn_ctx *ctx = nn_ctx_new();
    if (!ctx) return nn_error(NN_E_NOMEM, "predict: out of memory");
    nn_ctx_set_grad(ctx, false);
    nn_ctx_set_training(ctx, false);
    nn_status s = NN_OK;
    for (int i = 0; i < n && s == NN_OK; i += batch) {
        int m = n - i < batch ? n - i : batch;
        int xs[4] = {m, seq->in_c, seq->in_h, seq->in_w};
        nn_tensor *t = NULL;
        if ((s = nn_tensor_from(&t, NN_F32, dev, 4, xs, x + (size_t)i * img)) != NN_OK) break;
        nn_ctx_reset(ctx);
        nn_tensor *y = nn_seq_forward(ctx, seq, t);
        if (!y)
            s = nn_error(nn_ctx_status(ctx), "%s", nn_ctx_errmsg(ctx));
        else if (y->ndim != 2 || y->shape[1] != classes)
            s = nn_error(NN_E_SHAPE, "predict: the model's output is not (N, %d)", classes);
        else
            s = nn_tensor_read(y, out + (size_t)i * classes);
        nn_tensor_free(t);
    }
    nn_ctx_free(ctx);
    return s;
}

/* ---- tensor in, logits out ---- */

/* Checks the "input" tensor of f against the model and copies it to *x. */
static nn_status read_input(const nn_st_file *f, const nn_model_config *cfg, float **x, int *n)
{
    *x = NULL;
    const nn_st_entry *e = nn_st_find(f, "input");
    if (!e) return nn_error(NN_E_FORMAT, "%s: no tensor named 'input'", nn_st_path(f));
    char found[128] = "";
    for (int i = 0, k = 0; i < e->ndim && k < (int)sizeof found - 24; i++)
        k += snprintf(found + k, sizeof found - (size_t)k, i ? ", %lld" : "%lld", (long long)e->shape[i]);
    if (e->dtype != NN_ST_F32)
        return nn_error(NN_E_FORMAT, "%s: tensor 'input' is %s, expected F32", nn_st_path(f),
                        nn_st_dtype_name(e->dtype));
    if (e->ndim != 4 || e->shape[1] != cfg->in_channels || e->shape[2] != cfg->in_size ||
        e->shape[3] != cfg->in_size || e->shape[0] > 0x7fffffff)
        return nn_error(NN_E_SHAPE, "%s: tensor 'input' has shape (%s), the model expects (N, %d, %d, %d)",
                        nn_st_path(f), found, cfg->in_channels, cfg->in_size, cfg->in_size);
    *n = (int)e->shape[0];
    *x = malloc(e->nbytes ? e->nbytes : 1);
    if (!*x) return nn_error(NN_E_NOMEM, "%s: out of memory for the input", nn_st_path(f));
    memcpy(*x, e->data, e->nbytes); /* foreign files need not be aligned */
    return NN_OK;
}

/* The side of the square tensor 'input' (N, C, S, S), 0 if there is none:
 * a weights-only model takes its input size from it. */
static int input_side(const nn_st_file *f)
{
    const nn_st_entry *e = nn_st_find(f, "input");
    return e && e->ndim == 4 && e->shape[2] == e->shape[3] && e->shape[2] <= 8192 ? (int)e->shape[2] : 0;
}

static nn_status write_logits(const char *outp, const char *ckpt, const float *logits, int n, int classes)
{
    nn_st_writer *w = NULL;
    int64_t shape[2] = {n, classes};
    NN_TRY(nn_st_writer_new(&w));
    nn_status s = nn_st_writer_add(w, "logits", NN_ST_F32, 2, shape, logits);
    if (s == NN_OK) s = nn_st_writer_meta(w, "checkpoint", ckpt);
    if (s == NN_OK) s = nn_st_write(w, outp);
    nn_st_writer_free(w);
    return s;
}

static int predict_tensor(const char *ckpt, const char *in, const char *outp, nn_weights_hints *hints, nn_device dev,
                          int batch)
{
    if (cli_same_file(in, outp)) return cli_fail("predict", "--output '%s' is the input file: refusing to overwrite it", outp);
    if (cli_same_file(ckpt, outp))
        return cli_fail("predict", "--output '%s' is the checkpoint: refusing to overwrite it", outp);
    nn_st_file *f = NULL;
    if (nn_st_open(in, &f) != NN_OK) return cli_lib_fail("predict");
    if (!hints->in_size) hints->in_size = input_side(f);
    nn_model_config cfg;
    nn_seq seq;
    float *x = NULL, *logits = NULL;
    int n = 0;
    nn_status s = cli_model_load("predict", ckpt, hints, dev, &cfg, &seq);
    bool built = s == NN_OK;
    if (s == NN_OK) s = read_input(f, &cfg, &x, &n);
    nn_st_close(f);
    if (s == NN_OK) {
        logits = malloc((size_t)n * cfg.classes * sizeof *logits + 1);
        if (!logits) s = nn_error(NN_E_NOMEM, "predict: out of memory for %d x %d logits", n, cfg.classes);
    }
    if (s == NN_OK) s = run_model(&seq, dev, x, n, batch, cfg.classes, logits);
    if (s == NN_OK) s = write_logits(outp, ckpt, logits, n, cfg.classes);
    if (s == NN_OK) printf("wrote %s: logits %d x %d (%s, %s)\n", outp, n, cfg.classes, cfg.arch, nn_device_name(dev));
    if (built) nn_seq_free(&seq);
    free(x);
    free(logits);
    return s == NN_OK ? 0 : cli_lib_fail("predict");
}

/* ---- photos in, classes out ---- */

typedef struct photo_opts {
    const char *ckpt, *data, *mean, *std;
    bool json, ten_crop, invert;
    int top, resize;
} photo_opts;

/* The model, its class names and how its photos are prepared. */
typedef struct photo_model {
    nn_model_config cfg;
    nn_seq seq;
    bool built;
    nn_train_state st;  /* a checkpoint's (classes, mean, std) */
    bool have_state;
    nn_imgf *folder;    /* --data: the training split, for its statistics and names */
    const char *names[MAX_NAMES];
    char *names_buf;
    nn_photo_prep prep;
} photo_model;

/* "a" or "a,b,c" into v[3] (one value repeated). */
static bool parse_list(const char *s, float v[3])
{
    char *end;
    for (int i = 0; i < 3; i++) {
        v[i] = strtof(s, &end);
        if (end == s || !isfinite(v[i])) return false;
        if (*end == '\0') {
            for (int k = i + 1; k < 3; k++) v[k] = i == 0 ? v[0] : NAN;
            return i == 0 || i == 2;
        }
        if (*end != ',') return false;
        s = end + 1;
    }
    return false;
}

static void class_names(photo_model *m)
{
    int n = 0;
    const char *src = m->have_state && m->st.classes[0] ? m->st.classes : NULL;
    if (src && (m->names_buf = strdup(src)) != NULL)
        for (char *p = m->names_buf, *save = NULL, *t; (t = strtok_r(p, "\n", &save)) && n < MAX_NAMES; p = NULL)
            m->names[n++] = t;
    if (n != m->cfg.classes && m->folder && nn_imgf_classes(m->folder) == m->cfg.classes)
        for (n = 0; n < m->cfg.classes && n < MAX_NAMES; n++) m->names[n] = nn_imgf_class_names(m->folder)[n];
    /* Fashion-MNIST checkpoints: a gray 10-class model trained with a scalar normalization */
    if (n != m->cfg.classes && m->have_state && m->st.std > 0 && m->cfg.classes == 10 && m->cfg.in_channels == 1)
        for (n = 0; n < 10; n++) m->names[n] = nn_fmnist_class_names[n];
    if (n != m->cfg.classes)
        for (n = 0; n < m->cfg.classes && n < MAX_NAMES; n++) m->names[n] = NULL; /* "class N" */
}

/* The paper's 256 -> 224 ratio at any model size, as the folder loader. */
static int folder_resize(int crop) { return (crop * NN_IMGF_RESIZE + NN_IMGF_CROP / 2) / NN_IMGF_CROP; }

/* The per-channel normalization an image-folder run stored (checkpoint.h nn_data_norm). */
static bool stored_norm(photo_model *m, const photo_opts *o)
{
    nn_data_norm n;
    bool found = false;
    if (nn_checkpoint_read_norm(o->ckpt, &n, &found) != NN_OK || !found) return false;
    nn_photo_prep *p = &m->prep;
    for (int c = 0; c < 3; c++) {
        int k = c < n.channels ? c : 0;
        p->mean[c] = n.mean[k] / 255.0f;
        p->std[c] = n.std[k] / 255.0f;
    }
    if (!o->resize && n.resize >= p->crop) p->resize = n.resize;
    return true;
}

static int choose_norm(photo_model *m, const photo_opts *o, bool only)
{
    nn_photo_prep *p = &m->prep;
    bool fmnist_like = m->have_state && m->st.std > 0; /* whole 28x28 pictures, scalar normalization */
    p->resize = o->resize ? o->resize : fmnist_like ? p->crop : folder_resize(p->crop);
    if (o->mean || o->std) {
        if (!o->mean || !o->std || !parse_list(o->mean, p->mean) || !parse_list(o->std, p->std))
            return cli_fail("predict", "--mean and --std go together, each one number or three (R,G,B) separated by commas");
        fprintf(stderr, "convnet predict: normalizing (p/255 - mean) / std with the flags' values\n");
        return CLI_OK;
    }
    if (o->data) {
        nn_imgf_config ic = {.resize = p->resize, .report = stderr};
        if (nn_imgf_open(&m->folder, o->data, "train", NULL, 0, &ic) != NN_OK) return cli_lib_fail("predict");
        p->stats = nn_imgf_get_stats(m->folder);
        return CLI_OK;
    }
    if (!only && stored_norm(m, o)) return CLI_OK;
    if (fmnist_like) {
        p->mean[0] = m->st.mean;
        p->std[0] = m->st.std;
        p->mean[1] = p->mean[2] = m->st.mean;
        p->std[1] = p->std[2] = m->st.std;
        return CLI_OK;
    }
    if (!only) {
        nn_error(NN_E_ARG, "%s was trained on an image folder and holds no normalization (written before checkpoints "
                 "stored it): pass --data DIR (the training folder) or --mean and --std", o->ckpt);
        return cli_lib_fail("predict");
    }
    /* weights-only: what such a model was most likely trained with */
    static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f}, imagenet_std[3] = {0.229f, 0.224f, 0.225f};
    bool rgb = m->cfg.in_channels == 3;
    for (int c = 0; c < 3; c++) {
        p->mean[c] = rgb ? imagenet_mean[c] : 0.2860f; /* Fashion-MNIST's training set */
        p->std[c] = rgb ? imagenet_std[c] : 0.3530f;
    }
    fprintf(stderr, "convnet predict: %s holds no normalization: assuming %s, (p/255 - mean) / std with mean %s, std %s "
            "(--mean/--std to change)\n", o->ckpt, rgb ? "ImageNet's (torchvision)" : "Fashion-MNIST's",
            rgb ? "0.485,0.456,0.406" : "0.2860", rgb ? "0.229,0.224,0.225" : "0.3530");
    return CLI_OK;
}

static int open_photo_model(photo_model *m, const photo_opts *o, const nn_weights_hints *hints, nn_device dev)
{
    bool only;
    if (cli_model_config("predict", o->ckpt, hints, &m->cfg, &only) != NN_OK) return cli_lib_fail("predict");
    if (!only) m->have_state = nn_checkpoint_read_config(o->ckpt, &m->cfg, &m->st) == NN_OK;
    if (m->cfg.classes > MAX_NAMES) {
        nn_error(NN_E_UNSUPPORTED, "%s: %d classes; photos take models of at most %d", o->ckpt, m->cfg.classes, MAX_NAMES);
        return cli_lib_fail("predict");
    }
    if (m->cfg.in_channels != 1 && m->cfg.in_channels != 3) {
        nn_error(NN_E_UNSUPPORTED, "%s: a model of %d input channels does not take photos", o->ckpt, m->cfg.in_channels);
        return cli_lib_fail("predict");
    }
    m->prep = (nn_photo_prep){.channels = m->cfg.in_channels, .crop = m->cfg.in_size, .ten_crop = o->ten_crop,
                              .invert = o->invert};
    int r = choose_norm(m, o, only);
    if (r != CLI_OK) return r;
    if (m->prep.resize < m->prep.crop)
        return cli_fail("predict", "--resize %d is smaller than the model's input %d", m->prep.resize, m->prep.crop);
    class_names(m);
    if (nn_model_build_load(o->ckpt, &m->cfg, dev, &m->seq) != NN_OK) return cli_lib_fail("predict");
    m->built = true;
    return CLI_OK;
}

static void close_photo_model(photo_model *m)
{
    if (m->built) nn_seq_free(&m->seq);
    nn_imgf_free(m->folder);
    free(m->names_buf);
}

/* Softmax of each view's logits, averaged over the views, into prob. */
static void average_softmax(const float *logits, int views, int K, double *prob)
{
    for (int k = 0; k < K; k++) prob[k] = 0;
    for (int v = 0; v < views; v++) {
        const float *z = logits + (size_t)v * K;
        float mx = z[0];
        for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
        double sum = 0;
        for (int k = 0; k < K; k++) sum += exp((double)(z[k] - mx));
        for (int k = 0; k < K; k++) prob[k] += exp((double)(z[k] - mx)) / sum / views;
    }
}

/* Indices of the top t probabilities, largest first (ties: lower index). */
static void top_of(const double *prob, int K, int t, int *idx)
{
    for (int i = 0; i < t; i++) {
        int best = -1;
        for (int k = 0; k < K; k++) {
            bool used = false;
            for (int j = 0; j < i; j++) used |= idx[j] == k;
            if (!used && (best < 0 || prob[k] > prob[best])) best = k;
        }
        idx[i] = best;
    }
}

static void print_top(const photo_model *m, const char *file, const double *prob, const int *idx, int t, cJSON *json)
{
    cJSON *img = json ? cJSON_CreateObject() : NULL, *arr = json ? cJSON_CreateArray() : NULL;
    if (!json) printf("%s\n", file);
    for (int i = 0; i < t; i++) {
        char fallback[32];
        snprintf(fallback, sizeof fallback, "class %d", idx[i]);
        const char *name = m->names[idx[i]] ? m->names[idx[i]] : fallback;
        if (!json) {
            printf("  %6.2f%%  %s\n", 100.0 * prob[idx[i]], name);
            continue;
        }
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "class", name);
        cJSON_AddNumberToObject(c, "index", idx[i]);
        cJSON_AddNumberToObject(c, "probability", prob[idx[i]]);
        cJSON_AddItemToArray(arr, c);
    }
    if (!json) return;
    cJSON_AddStringToObject(img, "file", file);
    cJSON_AddItemToObject(img, "top", arr);
    cJSON_AddItemToArray(json, img);
}

/* Classifies one photo; a file that cannot be read is reported and skipped. */
static bool classify(photo_model *m, nn_device dev, const char *file, int top, float *x, float *logits, double *prob,
                     cJSON *json)
{
    int views = nn_photo_views(&m->prep), K = m->cfg.classes, idx[MAX_NAMES];
    if (nn_photo_load(file, &m->prep, x) != NN_OK || run_model(&m->seq, dev, x, views, views, K, logits) != NN_OK) {
        cli_lib_fail("predict");
        return false;
    }
    average_softmax(logits, views, K, prob);
    top_of(prob, K, top, idx);
    print_top(m, file, prob, idx, top, json);
    return true;
}

static int predict_photos(const photo_opts *o, const nn_weights_hints *hints, nn_device dev, const char **files, int n)
{
    static photo_model m;
    int r = open_photo_model(&m, o, hints, dev);
    if (r != CLI_OK) {
        close_photo_model(&m);
        return r;
    }
    int views = nn_photo_views(&m.prep), K = m.cfg.classes, top = o->top < K ? o->top : K;
    float *x = malloc((size_t)views * m.cfg.in_channels * m.cfg.in_size * m.cfg.in_size * sizeof *x);
    float *logits = malloc((size_t)views * K * sizeof *logits);
    double *prob = malloc((size_t)K * sizeof *prob);
    cJSON *json = o->json ? cJSON_CreateArray() : NULL;
    if (!x || !logits || !prob || (o->json && !json)) r = cli_fail("predict", "out of memory");
    int failed = 0;
    for (int i = 0; r == CLI_OK && i < n; i++) failed += !classify(&m, dev, files[i], top, x, logits, prob, json);
    if (r == CLI_OK && json) {
        char *text = cJSON_PrintUnformatted(json);
        if (text) printf("%s\n", text);
        free(text);
    }
    cJSON_Delete(json);
    free(x);
    free(logits);
    free(prob);
    close_photo_model(&m);
    return r != CLI_OK ? r : failed ? 1 : 0;
}

int cmd_predict(int argc, char **argv)
{
    const char *in = NULL, *outp = NULL, *device = "cpu", *arch = NULL;
    photo_opts po = {.top = 5};
    int batch = 64, size = 0;
    const cli_opt opts[] = {
        {"checkpoint", CLI_STR, &po.ckpt, "FILE", "a convnet checkpoint or a weights-only safetensors file (required)"},
        {"input", CLI_STR, &in, "X.safetensors", "tensor mode: float32 tensor 'input' of shape (N, C, S, S)"},
        {"output", CLI_STR, &outp, "Y.safetensors", "tensor mode: where to write the float32 tensor 'logits'"},
        {"json", CLI_BOOL, &po.json, NULL, "photos: print the results as JSON"},
        {"top", CLI_INT, &po.top, "K", "photos: classes shown per image (default 5)"},
        {"ten-crop", CLI_BOOL, &po.ten_crop, NULL, "photos: average the softmax over the paper's 10 views"},
        {"data", CLI_STR, &po.data, "DIR", "photos: normalize with the mean image of DIR/train (folder-trained models)"},
        {"mean", CLI_STR, &po.mean, "M[,M,M]", "photos: normalize (p/255 - mean) / std per channel"},
        {"std", CLI_STR, &po.std, "S[,S,S]", "photos: (with --mean)"},
        {"resize", CLI_INT, &po.resize, "R", "photos: short side resized to R before the center crop"},
        {"invert", CLI_BOOL, &po.invert, NULL, "photos: 255 - p first (Fashion-MNIST's pictures are light on black)"},
        {"size", CLI_INT, &size, "S", "weights-only files: the input size, when several fit fc6"},
        {"arch", CLI_STR, &arch, "A", "weights-only files: alexnet or lenet (default: from the tensor names)"},
        {"device", CLI_STR, &device, "D", "cpu (default) or cuda"},
        {"batch", CLI_INT, &batch, "B", "tensor mode: images per forward pass (default 64)"},
    };
    const char *files[4096];
    int nfiles = 0;
    int r = cli_parse("predict", "--checkpoint FILE IMAGE... | --checkpoint FILE --input X.safetensors --output Y.safetensors",
                      "Runs a model in inference mode (dropout off).\n"
                      "Photos (JPEG, PNG): each is resized (short side), center-cropped to the model's\n"
                      "input (or cut into the paper's 10 views), converted to gray for 1-channel models\n"
                      "and normalized as the model's training data was: the checkpoint's mean and std\n"
                      "(Fashion-MNIST; image-folder training stores per-channel ones), the exact mean image\n"
                      "of --data DIR/train, or --mean/--std; the top classes are printed with their probabilities.\n"
                      "Tensor mode: the float32 tensor 'input' (N, C, S, S), already normalized, gives\n"
                      "the logits (N, classes) in a safetensors file, written atomically.\n"
                      "A weights-only file (PyTorch's safetensors.torch.save_file) carries no\n"
                      "normalization: RGB models assume ImageNet's, gray ones Fashion-MNIST's.",
                      opts, (int)(sizeof opts / sizeof opts[0]), argc, argv, files, 4096, &nfiles);
    if (r == CLI_HELP) return 0;
    if (r != CLI_OK) return r;
    if (!po.ckpt) return cli_fail("predict", "--checkpoint is required");
    if ((in || outp) && nfiles) return cli_fail("predict", "give either images or --input/--output, not both");
    if (!nfiles && (!in || !outp)) return cli_fail("predict", "give images, or --input and --output");
    /* options of the other mode would be silently ignored */
    static const char *const photo_only[] = {"json", "top", "ten-crop", "data", "mean", "std", "resize", "invert", NULL};
    static const char *const tensor_only[] = {"batch", NULL};
    char other[256];
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    if (!nfiles && cli_given_list(opts, nopts, argc, argv, photo_only, other, sizeof other))
        return cli_fail("predict", "%s: for photos, not for tensor mode (--input: a tensor already normalized)", other);
    if (nfiles && cli_given_list(opts, nopts, argc, argv, tensor_only, other, sizeof other))
        return cli_fail("predict", "%s: for tensor mode (--input), not for photos (one at a time)", other);
    if (batch < 1 || batch > 65536) return cli_fail("predict", "--batch must be in [1, 65536], got %d", batch);
    if (po.top < 1 || po.top > MAX_NAMES) return cli_fail("predict", "--top must be in [1, %d]", MAX_NAMES);
    if (size < 0 || size > 8192 || po.resize < 0 || po.resize > 8192)
        return cli_fail("predict", "--size and --resize must be in [1, 8192]");
    nn_weights_hints hints = {.in_size = size};
    if (arch) snprintf(hints.arch, sizeof hints.arch, "%s", arch);
    nn_device dev;
    if ((r = cli_parse_device("predict", device, &dev)) != CLI_OK) return r;
    if (!nfiles) return predict_tensor(po.ckpt, in, outp, &hints, dev, batch);
    return predict_photos(&po, &hints, dev, files, nfiles);
}
