/* Fashion-MNIST loading and the background batch loader (see dataset.h). */
#include "io/dataset.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "core/rng.h"
#include "io/idx.h"
#include "io/resident.h"
#include "io/sample.h"

const char *const nn_fmnist_class_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

nn_status nn_fmnist_load(const char *dir, bool train, nn_dataset *out)
{
    memset(out, 0, sizeof *out);
    if (!dir) dir = NN_FMNIST_DEFAULT_DIR;
    const char *pre = train ? "train" : "t10k";
    char ip[4096], lp[4096];
    snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, pre);
    snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, pre);
    nn_idx im = {0}, lb = {0};
    nn_status s = nn_idx_load(ip, &im);
    if (s == NN_OK) s = nn_idx_load(lp, &lb);
    if (s != NN_OK) goto fail;
    if (im.ndim != 3 || im.dims[1] != 28 || im.dims[2] != 28) {
        s = nn_error(NN_E_FORMAT, "%s: expected N x 28 x 28 images, found %d dimensions (%d x %d x %d)", ip,
                     im.ndim, im.dims[0], im.dims[1], im.dims[2]);
        goto fail;
    }
    if (lb.ndim != 1 || lb.dims[0] != im.dims[0]) {
        s = nn_error(NN_E_FORMAT, "%s: %d labels for %d images in %s", lp, lb.ndim == 1 ? lb.dims[0] : -1,
                     im.dims[0], ip);
        goto fail;
    }
    out->labels = malloc((size_t)lb.dims[0] * sizeof *out->labels);
    if (!out->labels) {
        s = nn_error(NN_E_NOMEM, "%s: out of memory", lp);
        goto fail;
    }
    for (int i = 0; i < lb.dims[0]; i++) {
        if (lb.data[i] >= 10) {
            s = nn_error(NN_E_FORMAT, "%s: label %d of sample %d is outside [0, 10)", lp, lb.data[i], i);
            goto fail;
        }
        out->labels[i] = lb.data[i];
    }
    out->n = im.dims[0];
    out->c = 1;
    out->h = 28;
    out->w = 28;
    out->images = im.data; /* ownership moves to the data set */
    out->classes = 10;
    out->class_names = nn_fmnist_class_names;
    nn_idx_free(&lb);
    return NN_OK;
fail:
    nn_idx_free(&im);
    nn_idx_free(&lb);
    free(out->labels);
    memset(out, 0, sizeof *out);
    return s;
}

void nn_dataset_free(nn_dataset *ds)
{
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

void nn_dataset_stats(const nn_dataset *ds, float *mean, float *std)
{
    size_t n = (size_t)ds->n * ds->c * ds->h * ds->w;
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        double v = ds->images[i] / 255.0;
        s += v;
        s2 += v * v;
    }
    double m = n ? s / (double)n : 0, var = n ? s2 / (double)n - m * m : 1;
    *mean = (float)m;
    *std = var > 1e-12 ? (float)sqrt(var) : 1.0f;
}

void nn_resize_bilinear(const uint8_t *src, int sh, int sw, float *dst, int dh, int dw)
{
    const float ry = (float)sh / (float)dh, rx = (float)sw / (float)dw;
    for (int i = 0; i < dh; i++)
        for (int j = 0; j < dw; j++) dst[i * dw + j] = nn_bilinear_at(src, sh, sw, ry, rx, i, j);
}

nn_u8_batch_geom nn_loader_geom(const nn_dataset *ds, const nn_loader_config *cfg, int epoch, int first, int n)
{
    return (nn_u8_batch_geom){
        .n = n, .c = ds->c, .h = ds->h, .w = ds->w, .size = cfg->size,
        .augment = cfg->augment, .epoch = epoch, .first = first, .seed = cfg->seed,
        .ry = (float)ds->h / (float)cfg->size, .rx = (float)ds->w / (float)cfg->size,
        .inv = 1.0f / (255.0f * cfg->std), .off = cfg->mean / cfg->std,
    };
}

void nn_loader_order(const nn_loader_config *cfg, int n, int epoch, int32_t *order)
{
    for (int i = 0; i < n; i++) order[i] = i;
    if (cfg->shuffle) {
        nn_rng r = {cfg->seed ^ 0xDA7A0DE5ull, (uint64_t)epoch << 40};
        nn_rng_shuffle(&r, order, (size_t)n);
    }
}

int nn_loader_count(const nn_dataset *ds, const nn_loader_config *cfg, int *nbatches)
{
    const int n = cfg->limit && cfg->limit < ds->n ? cfg->limit : ds->n;
    *nbatches = cfg->drop_last ? n / cfg->batch : (n + cfg->batch - 1) / cfg->batch;
    if (*nbatches < 1) *nbatches = 1; /* one partial batch then, whatever drop_last says */
    return n;
}

/* ---- the loader ---- */

struct nn_loader {
    const nn_dataset *ds;
    nn_loader_config cfg;
    int n;                /* images used: the first n of ds (cfg.limit) */
    int nbatches;
    int32_t *order;
    float *x[2];
    int32_t *y[2];
    int count[2];
    int full[2];          /* slot holds batch number full[k] - 1 (0: empty) */
    int epoch, make, give, held; /* held: slot handed out, freed on the next call */
    unsigned gen;         /* bumped by start: a batch made for an old epoch is dropped */
    bool stop, active;
    nn_status worker_status;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* The CPU's u8_batch kernel (core/backend_slots.h), pixel by pixel through
 * io/sample.h as cuda/data.cu's; the loader's worker makes its batches with
 * it, so a resident data set on any device reproduces the loader. Serial: it
 * runs on the loader's thread beside the training's own threads. */
nn_status nn_cpu_u8_batch(const nn_u8_batch_geom *g, const uint8_t *images, const int32_t *labels,
                          const int32_t *order, float *x, int32_t *y)
{
    const int S = g->size;
    const size_t plane = (size_t)g->h * g->w;
    for (int k = 0; k < g->n; k++) {
        int dx, dy, flip;
        nn_sample_aug(g, g->first + k, &dx, &dy, &flip);
        for (int c = 0; c < g->c; c++) {
            const uint8_t *src = images + ((size_t)order[k] * g->c + c) * plane;
            float *o = x + ((size_t)k * g->c + c) * S * S;
            for (int i = 0; i < S; i++)
                for (int j = 0; j < S; j++) o[i * S + j] = nn_sample_pixel(g, src, dx, dy, flip, i, j);
        }
        y[k] = labels[order[k]];
    }
    return NN_OK;
}

static void make_batch(nn_loader *l, int epoch, int b, int slot)
{
    int B = l->cfg.batch, n = l->n;
    int first = b * B, cnt = first + B <= n ? B : n - first;
    const nn_u8_batch_geom g = nn_loader_geom(l->ds, &l->cfg, epoch, first, cnt);
    nn_cpu_u8_batch(&g, l->ds->images, l->ds->labels, l->order + first, l->x[slot], l->y[slot]);
    l->count[slot] = cnt;
}

static void *worker(void *arg)
{
    nn_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && !(l->active && l->make < l->nbatches && !l->full[l->make % 2] &&
                             l->make % 2 != l->held))
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) break;
        int b = l->make, slot = b % 2, epoch = l->epoch;
        unsigned gen = l->gen;
        pthread_mutex_unlock(&l->mu);
        make_batch(l, epoch, b, slot);
        pthread_mutex_lock(&l->mu);
        if (gen == l->gen) {
            l->full[slot] = b + 1;
            l->make++;
            pthread_cond_broadcast(&l->cv);
        }
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

nn_status nn_loader_check(const nn_dataset *ds, const nn_loader_config *cfg)
{
    if (!ds || !cfg) return nn_error(NN_E_ARG, "loader: NULL data set or config");
    if (cfg->batch < 1 || cfg->size < 1 || cfg->size > 4096 || !(cfg->std > 0) || cfg->limit < 0)
        return nn_error(NN_E_ARG, "loader: need batch >= 1, 1 <= size <= 4096, std > 0 and limit >= 0");
    if (ds->n < 1) return nn_error(NN_E_ARG, "loader: the data set is empty");
    return NN_OK;
}

nn_status nn_loader_new(nn_loader **out, const nn_dataset *ds, const nn_loader_config *cfg)
{
    if (!out) return nn_error(NN_E_ARG, "loader: NULL output");
    *out = NULL;
    NN_TRY(nn_loader_check(ds, cfg));
    nn_loader *l = calloc(1, sizeof *l);
    if (!l) return nn_error(NN_E_NOMEM, "loader: out of memory");
    l->ds = ds;
    l->cfg = *cfg;
    l->n = nn_loader_count(ds, cfg, &l->nbatches);
    size_t img = (size_t)ds->c * cfg->size * cfg->size;
    l->order = malloc((size_t)l->n * sizeof *l->order);
    for (int k = 0; k < 2; k++) {
        l->x[k] = malloc(img * (size_t)cfg->batch * sizeof(float));
        l->y[k] = malloc((size_t)cfg->batch * sizeof(int32_t));
    }
    l->held = -1;
    if (!l->order || !l->x[0] || !l->x[1] || !l->y[0] || !l->y[1]) {
        nn_loader_free(l);
        return nn_error(NN_E_NOMEM, "loader: out of memory for batches of %d", cfg->batch);
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->thread, NULL, worker, l) != 0) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
        nn_loader_free(l);
        return nn_error(NN_E_NOMEM, "loader: cannot start the worker thread");
    }
    l->worker_status = 1; /* marks the thread as started, for free */
    *out = l;
    return NN_OK;
}

void nn_loader_free(nn_loader *l)
{
    if (!l) return;
    if (l->worker_status) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
    }
    free(l->order);
    for (int k = 0; k < 2; k++) {
        free(l->x[k]);
        free(l->y[k]);
    }
    free(l);
}

int nn_loader_batches(const nn_loader *l) { return l->nbatches; }

nn_status nn_loader_start(nn_loader *l, int epoch, int first)
{
    if (epoch < 0 || first < 0 || first > l->nbatches)
        return nn_error(NN_E_ARG, "loader: cannot start epoch %d at batch %d of %d", epoch, first, l->nbatches);
    pthread_mutex_lock(&l->mu);
    l->gen++;
    nn_loader_order(&l->cfg, l->n, epoch, l->order);
    l->epoch = epoch;
    l->make = l->give = first;
    l->full[0] = l->full[1] = 0;
    l->held = -1;
    l->active = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return NN_OK;
}

nn_status nn_loader_next(nn_loader *l, const float **x, const int32_t **y, int *n)
{
    pthread_mutex_lock(&l->mu);
    if (l->held >= 0) { /* the caller is done with the previous batch */
        l->full[l->held] = 0;
        l->held = -1;
        pthread_cond_broadcast(&l->cv);
    }
    if (!l->active || l->give >= l->nbatches) {
        pthread_mutex_unlock(&l->mu);
        *n = 0;
        return NN_OK;
    }
    int slot = l->give % 2;
    while (l->full[slot] != l->give + 1) pthread_cond_wait(&l->cv, &l->mu);
    l->held = slot;
    l->give++;
    *x = l->x[slot];
    *y = l->y[slot];
    *n = l->count[slot];
    pthread_mutex_unlock(&l->mu);
    return NN_OK;
}

static nn_status src_start(void *l, int epoch, int first) { return nn_loader_start(l, epoch, first); }

static nn_status src_next(void *l, const float **x, const int32_t **y, int *n) { return nn_loader_next(l, x, y, n); }

nn_batch_source nn_loader_source(nn_loader *l)
{
    nn_batch_source s = {.impl = l, .views = 1, .batches = l->nbatches, .start = src_start, .next = src_next};
    return s;
}
