/* Image folders, the loader (see imagefolder.h): the pool of worker threads
 * that turns S x S x 3 images into (N, 3, C, C) float batches ahead of the
 * consumer, and its nn_batch_source for evaluation. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/philox.h"
#include "core/rng.h"
#include "io/imagefolder_impl.h"

#define ORDER_KEY 0xDA7A0DE5ull

/* ---- the loader -------------------------------------------------------------
 * Samples are the unit of work: workers take positions in order under the
 * lock, so all of them cooperate on the oldest batch, and batch b goes to
 * slot b % nslots. A slot is reusable once the consumer has moved past it. */

struct nn_imgf_loader {
    const nn_imgf *ds;
    const nn_imgf_stats *st;
    nn_imgf_loader_config cfg;
    nn_imgf_norm norm;
    int S, C, views, nbatches, nslots, nthreads;
    size_t img;           /* floats per view: 3 * C * C */
    int32_t *order;
    float **x;
    int32_t **y;
    int *count, *batch_of, *done;
    uint8_t **scratch;    /* per worker: S x S x 3 */
    int next, end;        /* positions: the next to make, one past the last */
    int give, held, epoch, busy;
    unsigned gen;
    bool active, stop;
    long long failures;
    pthread_t *th;
    void *args;           /* the workers' worker_arg array */
    int started;
    bool inited;
    pthread_mutex_t mu;
    pthread_cond_t work, ready;
};

typedef struct worker_arg {
    nn_imgf_loader *l;
    int id;
} worker_arg;

static void make_sample(nn_imgf_loader *l, int id, int epoch, int pos, float *x, int32_t *y)
{
    int idx = l->order[pos];
    *y = nn_imgf_label(l->ds, idx);
    uint8_t *img = l->scratch[id];
    if (nn_imgf_load_center(nn_imgf_path(l->ds, idx), l->S, img) != NN_OK) {
        pthread_mutex_lock(&l->mu);
        if (l->failures++ < REPORT_MAX) fprintf(stderr, "convnet: %s (using the mean image instead)\n", nn_errmsg());
        pthread_mutex_unlock(&l->mu);
        memset(x, 0, l->img * (size_t)l->views * sizeof(float));
        return;
    }
    if (l->cfg.mode == NN_IMGF_TRAIN) {
        nn_imgf_aug a = nn_imgf_draw(l->cfg.seed, epoch, pos, l->S, l->C, !l->cfg.no_flip, l->cfg.lighting_std);
        nn_imgf_apply(img, l->S, l->C, &a, l->st, &l->norm, x);
    } else if (l->cfg.mode == NN_IMGF_CENTER) {
        nn_imgf_aug a = nn_imgf_view(4, l->S, l->C);
        nn_imgf_apply(img, l->S, l->C, &a, l->st, &l->norm, x);
    } else {
        for (int v = 0; v < 10; v++) {
            nn_imgf_aug a = nn_imgf_view(v, l->S, l->C);
            nn_imgf_apply(img, l->S, l->C, &a, l->st, &l->norm, x + (size_t)v * l->img);
        }
    }
}

static void *loader_worker(void *p)
{
    worker_arg *wa = p;
    nn_imgf_loader *l = wa->l;
    int B = l->cfg.batch;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        int low = l->held >= 0 ? l->give - 1 : l->give; /* oldest batch whose slot is taken */
        if (l->stop) break;
        if (!(l->active && l->next < l->end && l->next / B < low + l->nslots)) {
            pthread_cond_wait(&l->work, &l->mu);
            continue;
        }
        int pos = l->next++, b = pos / B, k = pos % B, slot = b % l->nslots, epoch = l->epoch;
        if (k == 0) {
            l->batch_of[slot] = b;
            l->done[slot] = 0;
            l->count[slot] = l->end - pos < B ? l->end - pos : B;
        }
        unsigned gen = l->gen;
        l->busy++;
        pthread_mutex_unlock(&l->mu);
        make_sample(l, wa->id, epoch, pos, l->x[slot] + (size_t)k * l->views * l->img, l->y[slot] + k);
        pthread_mutex_lock(&l->mu);
        l->busy--;
        if (gen == l->gen && ++l->done[slot] == l->count[slot]) pthread_cond_broadcast(&l->ready);
        if (gen != l->gen && l->busy == 0) pthread_cond_broadcast(&l->ready);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

nn_status nn_imgf_loader_new(nn_imgf_loader **out, const nn_imgf *ds, const nn_imgf_stats *stats,
                             const nn_imgf_loader_config *cfg)
{
    *out = NULL;
    int C = cfg->crop ? cfg->crop : NN_IMGF_CROP, S = ds->st.size;
    if (cfg->batch < 1 || C < 1 || C > S || cfg->mode < NN_IMGF_TRAIN || cfg->mode > NN_IMGF_TENCROP ||
        cfg->threads < 0 || cfg->prefetch < 0 || !(cfg->lighting_std >= 0))
        return nn_error(NN_E_ARG, "image loader: need batch >= 1, 1 <= crop (%d) <= resize (%d), threads >= 0, "
                                  "lighting std >= 0", C, S);
    if (!stats) stats = &ds->st;
    if (stats->size != S)
        return nn_error(NN_E_ARG, "image loader: statistics of %dx%d images for a data set resized to %d", stats->size,
                        stats->size, S);
    nn_imgf_loader *l = calloc(1, sizeof *l);
    if (!l) return nn_error(NN_E_NOMEM, "image loader: out of memory");
    l->ds = ds;
    l->st = stats;
    l->cfg = *cfg;
    l->S = S;
    l->C = C;
    l->views = cfg->mode == NN_IMGF_TENCROP ? 10 : 1;
    l->img = (size_t)3 * C * C;
    int n = ds->nok;
    l->nbatches = cfg->drop_last ? n / cfg->batch : (n + cfg->batch - 1) / cfg->batch;
    if (l->nbatches < 1) l->nbatches = 1, l->cfg.drop_last = false;
    l->nslots = (cfg->prefetch ? cfg->prefetch : 3) + 1; /* + the one the consumer holds */
    l->nthreads = imgf_threads(cfg->threads);
    l->norm.mean = cfg->mean;
    for (int c = 0; c < 3; c++) l->norm.scale[c] = cfg->raw_scale ? 1.0f : 1.0f / stats->std[c];
    l->held = -1;
    l->order = malloc((size_t)n * sizeof *l->order);
    l->x = calloc((size_t)l->nslots, sizeof *l->x);
    l->y = calloc((size_t)l->nslots, sizeof *l->y);
    l->count = calloc((size_t)l->nslots, sizeof(int));
    l->batch_of = calloc((size_t)l->nslots, sizeof(int));
    l->done = calloc((size_t)l->nslots, sizeof(int));
    l->scratch = calloc((size_t)l->nthreads, sizeof *l->scratch);
    l->th = calloc((size_t)l->nthreads, sizeof *l->th);
    bool ok = l->order && l->x && l->y && l->count && l->batch_of && l->done && l->scratch && l->th;
    for (int k = 0; ok && k < l->nslots; k++) {
        l->x[k] = malloc(l->img * (size_t)l->views * (size_t)cfg->batch * sizeof(float));
        l->y[k] = malloc((size_t)cfg->batch * sizeof(int32_t));
        ok = l->x[k] && l->y[k];
        l->batch_of[k] = -1;
    }
    for (int t = 0; ok && t < l->nthreads; t++) ok = (l->scratch[t] = malloc((size_t)S * S * 3)) != NULL;
    worker_arg *args = ok ? calloc((size_t)l->nthreads, sizeof *args) : NULL;
    if (!args) { /* the message first: it reads l */
        nn_status s = nn_error(NN_E_NOMEM, "image loader: out of memory for %d batches of %d x %d x 3 x %d x %d",
                               l->nslots, cfg->batch, l->views, C, C);
        nn_imgf_loader_free(l);
        return s;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work, NULL);
    pthread_cond_init(&l->ready, NULL);
    l->args = args;
    l->inited = true;
    for (int t = 0; t < l->nthreads; t++) {
        args[t].l = l;
        args[t].id = t;
        if (pthread_create(&l->th[t], NULL, loader_worker, &args[t]) != 0) break;
        l->started++;
    }
    if (l->started == 0) {
        nn_imgf_loader_free(l);
        return nn_error(NN_E_NOMEM, "image loader: cannot start a worker thread");
    }
    *out = l;
    return NN_OK;
}

void nn_imgf_loader_free(nn_imgf_loader *l)
{
    if (!l) return;
    if (l->inited) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->work);
        pthread_mutex_unlock(&l->mu);
        for (int t = 0; t < l->started; t++) pthread_join(l->th[t], NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->work);
        pthread_cond_destroy(&l->ready);
    }
    for (int k = 0; k < l->nslots && l->x; k++) free(l->x[k]);
    for (int k = 0; k < l->nslots && l->y; k++) free(l->y[k]);
    for (int t = 0; t < l->nthreads && l->scratch; t++) free(l->scratch[t]);
    free(l->x);
    free(l->y);
    free(l->scratch);
    free(l->count);
    free(l->batch_of);
    free(l->done);
    free(l->order);
    free(l->th);
    free(l->args);
    free(l);
}

int nn_imgf_loader_batches(const nn_imgf_loader *l) { return l->nbatches; }
int nn_imgf_loader_views(const nn_imgf_loader *l) { return l->views; }

long long nn_imgf_loader_failures(const nn_imgf_loader *l)
{
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    long long f = l->failures;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
    return f;
}

nn_status nn_imgf_loader_start(nn_imgf_loader *l, int epoch, int first)
{
    if (epoch < 0 || first < 0 || first > l->nbatches)
        return nn_error(NN_E_ARG, "image loader: cannot start epoch %d at batch %d of %d", epoch, first, l->nbatches);
    int n = l->ds->nok;
    pthread_mutex_lock(&l->mu);
    l->gen++;
    l->active = false;
    while (l->busy > 0) pthread_cond_wait(&l->ready, &l->mu); /* no worker writes into a slot any more */
    for (int i = 0; i < n; i++) l->order[i] = i;
    if (l->cfg.shuffle) {
        nn_rng r = {l->cfg.seed ^ ORDER_KEY, (uint64_t)epoch << 40};
        nn_rng_shuffle(&r, l->order, (size_t)n);
    }
    l->epoch = epoch;
    l->end = l->cfg.drop_last ? l->nbatches * l->cfg.batch : n;
    l->next = first * l->cfg.batch < l->end ? first * l->cfg.batch : l->end;
    l->give = first;
    l->held = -1;
    for (int k = 0; k < l->nslots; k++) l->batch_of[k] = -1;
    l->active = true;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    return NN_OK;
}

nn_status nn_imgf_loader_next(nn_imgf_loader *l, const float **x, const int32_t **y, int *n)
{
    pthread_mutex_lock(&l->mu);
    if (l->held >= 0) { /* the caller is done with the previous batch */
        l->batch_of[l->held] = -1;
        l->held = -1;
        pthread_cond_broadcast(&l->work);
    }
    if (!l->active || l->give >= l->nbatches || l->give * l->cfg.batch >= l->end) {
        pthread_mutex_unlock(&l->mu);
        *n = 0;
        return NN_OK;
    }
    int slot = l->give % l->nslots;
    while (!(l->batch_of[slot] == l->give && l->done[slot] == l->count[slot])) pthread_cond_wait(&l->ready, &l->mu);
    l->held = slot;
    l->give++;
    *x = l->x[slot];
    *y = l->y[slot];
    *n = l->count[slot];
    pthread_mutex_unlock(&l->mu);
    return NN_OK;
}

/* ---- scoring --------------------------------------------------------------- */

static nn_status src_start(void *l, int epoch, int first) { return nn_imgf_loader_start(l, epoch, first); }

static nn_status src_next(void *l, const float **x, const int32_t **y, int *n)
{
    return nn_imgf_loader_next(l, x, y, n);
}

nn_batch_source nn_imgf_loader_source(nn_imgf_loader *l)
{
    nn_batch_source s = {.impl = l, .views = nn_imgf_loader_views(l), .batches = nn_imgf_loader_batches(l),
                         .start = src_start, .next = src_next};
    return s;
}
