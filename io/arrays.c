/* Batches from the caller's arrays (see arrays.h). */
#include "io/arrays.h"

#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

#define SHUFFLE_KEY 0xDA7A0DE5ull /* the loaders' key: same seed, same order */

struct nn_array_source {
    nn_array_config cfg;
    int n, nbatches, next_batch;
    int32_t *order;
    float *x;                 /* one batch, host */
    int32_t *y;
    nn_tensor *tx[2], *ty[2]; /* full and partial batch tensors */
};

static nn_status check(const nn_array_config *c)
{
    if (!c) return nn_error(NN_E_ARG, "array source: NULL config");
    if (!c->labels || !c->images_f32 == !c->images_u8)
        return nn_error(NN_E_ARG, "array source: needs labels and exactly one of images_f32 and images_u8");
    if (c->n < 1 || c->c < 1 || c->h < 1 || c->w < 1 || c->batch < 1 || c->limit < 0)
        return nn_error(NN_E_ARG, "array source: n %d, image %dx%dx%d, batch %d: each must be at least 1 (limit %d >= 0)",
                        c->n, c->c, c->h, c->w, c->batch, c->limit);
    if (c->images_u8 && c->std < 0) return nn_error(NN_E_ARG, "array source: std %g must be positive", (double)c->std);
    return NN_OK;
}

nn_status nn_array_source_new(nn_array_source **out, const nn_array_config *cfg)
{
    if (!out) return nn_error(NN_E_ARG, "array source: NULL output");
    *out = NULL;
    NN_TRY(check(cfg));
    nn_array_source *a = calloc(1, sizeof *a);
    if (!a) return nn_error(NN_E_NOMEM, "array source: out of memory");
    a->cfg = *cfg;
    if (!(a->cfg.std > 0)) a->cfg.mean = 0, a->cfg.std = 1;
    a->n = cfg->limit && cfg->limit < cfg->n ? cfg->limit : cfg->n;
    a->nbatches = cfg->drop_last ? a->n / cfg->batch : (a->n + cfg->batch - 1) / cfg->batch;
    if (a->nbatches < 1) a->nbatches = 1, a->cfg.drop_last = false; /* fewer images than one batch */
    size_t img = (size_t)cfg->c * cfg->h * cfg->w;
    a->order = malloc((size_t)a->n * sizeof *a->order);
    a->x = malloc(img * (size_t)cfg->batch * sizeof *a->x);
    a->y = malloc((size_t)cfg->batch * sizeof *a->y);
    if (!a->order || !a->x || !a->y) {
        nn_array_source_free(a);
        return nn_error(NN_E_NOMEM, "array source: out of memory for batches of %d", cfg->batch);
    }
    a->next_batch = a->nbatches; /* nothing until started */
    *out = a;
    return NN_OK;
}

void nn_array_source_free(nn_array_source *a)
{
    if (!a) return;
    for (int k = 0; k < 2; k++) nn_tensor_free(a->tx[k]), nn_tensor_free(a->ty[k]);
    free(a->order);
    free(a->x);
    free(a->y);
    free(a);
}

int nn_array_source_count(const nn_array_source *a) { return a ? a->n : 0; }
int nn_array_source_nbatches(const nn_array_source *a) { return a ? a->nbatches : 0; }

nn_status nn_array_source_start(nn_array_source *a, int epoch, int first)
{
    if (!a) return nn_error(NN_E_ARG, "array source: NULL source");
    if (epoch < 0 || first < 0 || first > a->nbatches)
        return nn_error(NN_E_ARG, "array source: cannot start epoch %d at batch %d of %d", epoch, first, a->nbatches);
    for (int i = 0; i < a->n; i++) a->order[i] = i;
    if (a->cfg.shuffle) {
        nn_rng r = {a->cfg.seed ^ SHUFFLE_KEY, (uint64_t)epoch << 40};
        nn_rng_shuffle(&r, a->order, (size_t)a->n);
    }
    a->next_batch = first;
    return NN_OK;
}

/* Copies batch b into the host buffers; returns its size. */
static int fill(nn_array_source *a, int b)
{
    const nn_array_config *c = &a->cfg;
    int first = b * c->batch, cnt = first + c->batch <= a->n ? c->batch : a->n - first;
    size_t img = (size_t)c->c * c->h * c->w;
    float scale = 1.0f / (255.0f * c->std), off = c->mean / c->std;
    for (int k = 0; k < cnt; k++) {
        size_t idx = (size_t)a->order[first + k];
        float *dst = a->x + (size_t)k * img;
        if (c->images_f32) {
            memcpy(dst, c->images_f32 + idx * img, img * sizeof *dst);
        } else {
            const uint8_t *src = c->images_u8 + idx * img;
            for (size_t i = 0; i < img; i++) dst[i] = (float)src[i] * scale - off;
        }
        a->y[k] = c->labels[idx];
    }
    return cnt;
}

static nn_status next_host(void *impl, const float **x, const int32_t **y, int *n)
{
    nn_array_source *a = impl;
    *n = 0;
    if (a->next_batch >= a->nbatches) return NN_OK;
    *n = fill(a, a->next_batch++);
    *x = a->x;
    *y = a->y;
    return NN_OK;
}

static nn_status start_impl(void *impl, int epoch, int first) { return nn_array_source_start(impl, epoch, first); }

nn_batch_source nn_array_source_batches(nn_array_source *a)
{
    return (nn_batch_source){.impl = a, .views = 1, .batches = a ? a->nbatches : 0, .start = start_impl,
                             .next = next_host};
}

nn_status nn_array_source_next(nn_array_source *a, nn_device dev, nn_tensor **x, nn_tensor **y)
{
    if (!a || !x || !y) return nn_error(NN_E_ARG, "array source: NULL source or output");
    *x = *y = NULL;
    const float *hx;
    const int32_t *hy;
    int n;
    NN_TRY(next_host(a, &hx, &hy, &n));
    if (n == 0) return NN_OK;
    int k = n == a->cfg.batch ? 0 : 1;
    if (!a->tx[k] || a->tx[k]->shape[0] != n || a->tx[k]->device != dev) {
        nn_tensor_free(a->tx[k]), nn_tensor_free(a->ty[k]);
        a->tx[k] = a->ty[k] = NULL;
        int xs[4] = {n, a->cfg.c, a->cfg.h, a->cfg.w};
        NN_TRY(nn_tensor_new(&a->tx[k], NN_F32, dev, 4, xs));
        NN_TRY(nn_tensor_new(&a->ty[k], NN_I32, dev, 1, &n));
    }
    NN_TRY(nn_tensor_write(a->tx[k], hx));
    NN_TRY(nn_tensor_write(a->ty[k], hy));
    *x = a->tx[k], *y = a->ty[k];
    return NN_OK;
}
