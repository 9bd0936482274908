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
    float ry = (float)sh / (float)dh, rx = (float)sw / (float)dw;
    for (int i = 0; i < dh; i++) {
        float fy = ((float)i + 0.5f) * ry - 0.5f;
        if (fy < 0) fy = 0;
        int y0 = (int)fy, y1 = y0 + 1 < sh ? y0 + 1 : sh - 1;
        float wy = fy - (float)y0;
        for (int j = 0; j < dw; j++) {
            float fx = ((float)j + 0.5f) * rx - 0.5f;
            if (fx < 0) fx = 0;
            int x0 = (int)fx, x1 = x0 + 1 < sw ? x0 + 1 : sw - 1;
            float wx = fx - (float)x0;
            float top = src[y0 * sw + x0] * (1 - wx) + src[y0 * sw + x1] * wx;
            float bot = src[y1 * sw + x0] * (1 - wx) + src[y1 * sw + x1] * wx;
            dst[i * dw + j] = top * (1 - wy) + bot * wy;
        }
    }
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
    float *tmp;           /* resize buffer, worker only */
    int epoch, make, give, held; /* held: slot handed out, freed on the next call */
    unsigned gen;         /* bumped by start: a batch made for an old epoch is dropped */
    bool stop, active;
    nn_status worker_status;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

#define AUG_KEY 0xA06D0A7Aull

static void make_sample(nn_loader *l, int idx, int epoch, int pos, float *out)
{
    const nn_dataset *ds = l->ds;
    int S = l->cfg.size, C = ds->c;
    int dx = 0, dy = 0, flip = 0;
    if (l->cfg.augment) {
        nn_philox_out r = nn_philox(((uint64_t)epoch << 32) | (uint32_t)pos, l->cfg.seed ^ AUG_KEY);
        int P = S / 16;
        dx = (int)(r.v[0] % (uint32_t)(2 * P + 1)) - P;
        dy = (int)(r.v[1] % (uint32_t)(2 * P + 1)) - P;
        flip = r.v[2] & 1;
    }
    float inv = 1.0f / (255.0f * l->cfg.std), off = l->cfg.mean / l->cfg.std;
    for (int c = 0; c < C; c++) {
        const uint8_t *src = ds->images + ((size_t)idx * C + c) * ds->h * ds->w;
        if (S == ds->h && S == ds->w)
            for (int i = 0; i < S * S; i++) l->tmp[i] = src[i];
        else
            nn_resize_bilinear(src, ds->h, ds->w, l->tmp, S, S);
        float *o = out + (size_t)c * S * S;
        for (int i = 0; i < S; i++) {
            int si = i + dy;
            for (int j = 0; j < S; j++) {
                int sj = (flip ? S - 1 - j : j) + dx;
                float v = (si >= 0 && si < S && sj >= 0 && sj < S) ? l->tmp[si * S + sj] : 0.0f;
                o[i * S + j] = v * inv - off;
            }
        }
    }
}

static void make_batch(nn_loader *l, int epoch, int b, int slot)
{
    int B = l->cfg.batch, n = l->n;
    int first = b * B, cnt = first + B <= n ? B : n - first;
    size_t img = (size_t)l->ds->c * l->cfg.size * l->cfg.size;
    for (int k = 0; k < cnt; k++) {
        int idx = l->order[first + k];
        make_sample(l, idx, epoch, first + k, l->x[slot] + (size_t)k * img);
        l->y[slot][k] = l->ds->labels[idx];
    }
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

nn_status nn_loader_new(nn_loader **out, const nn_dataset *ds, const nn_loader_config *cfg)
{
    if (!out || !ds || !cfg) return nn_error(NN_E_ARG, "loader: NULL output, data set or config");
    *out = NULL;
    if (cfg->batch < 1 || cfg->size < 1 || cfg->size > 4096 || !(cfg->std > 0) || cfg->limit < 0)
        return nn_error(NN_E_ARG, "loader: need batch >= 1, 1 <= size <= 4096, std > 0 and limit >= 0");
    if (ds->n < 1) return nn_error(NN_E_ARG, "loader: the data set is empty");
    nn_loader *l = calloc(1, sizeof *l);
    if (!l) return nn_error(NN_E_NOMEM, "loader: out of memory");
    l->ds = ds;
    l->cfg = *cfg;
    l->n = cfg->limit && cfg->limit < ds->n ? cfg->limit : ds->n;
    l->nbatches = cfg->drop_last ? l->n / cfg->batch : (l->n + cfg->batch - 1) / cfg->batch;
    if (l->nbatches < 1) l->nbatches = 1, l->cfg.drop_last = false;
    size_t img = (size_t)ds->c * cfg->size * cfg->size;
    l->order = malloc((size_t)l->n * sizeof *l->order);
    l->tmp = malloc((size_t)cfg->size * cfg->size * sizeof *l->tmp);
    for (int k = 0; k < 2; k++) {
        l->x[k] = malloc(img * (size_t)cfg->batch * sizeof(float));
        l->y[k] = malloc((size_t)cfg->batch * sizeof(int32_t));
    }
    l->held = -1;
    if (!l->order || !l->tmp || !l->x[0] || !l->x[1] || !l->y[0] || !l->y[1]) {
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
    free(l->tmp);
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
    for (int i = 0; i < l->n; i++) l->order[i] = i;
    if (l->cfg.shuffle) {
        nn_rng r = {l->cfg.seed ^ 0xDA7A0DE5ull, (uint64_t)epoch << 40};
        nn_rng_shuffle(&r, l->order, (size_t)l->n);
    }
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
    nn_batch_source s = {l, 1, l->nbatches, src_start, src_next};
    return s;
}
