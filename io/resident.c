/* A byte data set on a device, batches built there (see resident.h). */
#include "io/resident.h"

#include <stdlib.h>
#include <string.h>

struct nn_resident {
    const nn_backend *be;
    nn_device dev;
    nn_loader_config cfg;
    nn_dataset shape; /* n (images used), c, h, w; no data pointers */
    int nbatches, epoch;
    bool started;
    uint8_t *images;   /* on dev: n x c x h x w */
    int32_t *labels;   /* on dev: n */
    int32_t *order;    /* on dev: the epoch's order */
    int32_t *host_order;
    /* the batch source's: the labels on the host (the trainer counts its hits
     * without a device read), the next batch's labels, its number */
    int32_t *host_labels, *batch_labels;
    int next;
};

void nn_resident_free(nn_resident *r)
{
    if (!r) return;
    if (r->be) {
        if (r->images) r->be->free(r->images);
        if (r->labels) r->be->free(r->labels);
        if (r->order) r->be->free(r->order);
    }
    free(r->host_order);
    free(r->host_labels);
    free(r->batch_labels);
    free(r);
}

static nn_status resident_upload(nn_resident *r, const nn_dataset *ds)
{
    const size_t n = (size_t)r->shape.n, bytes = n * ds->c * ds->h * ds->w;
    memcpy(r->host_labels, ds->labels, n * sizeof *r->host_labels);
    NN_TRY(r->be->alloc((void **)&r->images, bytes));
    NN_TRY(r->be->alloc((void **)&r->labels, n * sizeof *r->labels));
    NN_TRY(r->be->alloc((void **)&r->order, n * sizeof *r->order));
    NN_TRY(r->be->copy(r->images, r->dev, ds->images, NN_CPU, bytes));
    return r->be->copy(r->labels, r->dev, ds->labels, NN_CPU, n * sizeof *r->labels);
}

nn_status nn_resident_new(nn_resident **out, const nn_dataset *ds, nn_device dev, const nn_loader_config *cfg)
{
    if (!out) return nn_error(NN_E_ARG, "resident data: NULL output");
    *out = NULL;
    NN_TRY(nn_loader_check(ds, cfg));
    const nn_backend *be = NULL;
    NN_TRY(nn_backend_open(dev, "resident data", &be));
    nn_resident *r = calloc(1, sizeof *r);
    if (!r) return nn_error(NN_E_NOMEM, "resident data: out of memory");
    r->be = be;
    r->dev = dev;
    r->cfg = *cfg;
    r->shape = (nn_dataset){.c = ds->c, .h = ds->h, .w = ds->w, .classes = ds->classes};
    r->shape.n = nn_loader_count(ds, cfg, &r->nbatches);
    r->host_order = malloc((size_t)r->shape.n * sizeof *r->host_order);
    r->host_labels = malloc((size_t)r->shape.n * sizeof *r->host_labels);
    r->batch_labels = malloc((size_t)cfg->batch * sizeof *r->batch_labels);
    nn_status s = r->host_order && r->host_labels && r->batch_labels
                      ? resident_upload(r, ds)
                      : nn_error(NN_E_NOMEM, "resident data: out of memory for the order and labels");
    if (s != NN_OK) {
        nn_resident_free(r);
        return s;
    }
    *out = r;
    return NN_OK;
}

int nn_resident_batches(const nn_resident *r) { return r->nbatches; }

nn_status nn_resident_start(nn_resident *r, int epoch)
{
    if (epoch < 0) return nn_error(NN_E_ARG, "resident data: epoch %d", epoch);
    nn_loader_order(&r->cfg, r->shape.n, epoch, r->host_order);
    /* the previous epoch's batches may still be queued on the device: the
     * copy is ordered after them (one stream), as every copy */
    NN_TRY(r->be->copy(r->order, r->dev, r->host_order, NN_CPU, (size_t)r->shape.n * sizeof *r->order));
    r->epoch = epoch;
    r->started = true;
    return NN_OK;
}

nn_status nn_resident_batch(nn_resident *r, int b, nn_tensor *x, nn_tensor *y, int *n)
{
    *n = 0;
    if (!r->started) return nn_error(NN_E_ARG, "resident data: no epoch started");
    if (b < 0 || b >= r->nbatches) return NN_OK;
    const int B = r->cfg.batch, first = b * B, cnt = first + B <= r->shape.n ? B : r->shape.n - first;
    const size_t img = (size_t)r->shape.c * r->cfg.size * r->cfg.size;
    if (x->dtype != NN_F32 || y->dtype != NN_I32 || x->device != r->dev || y->device != r->dev ||
        x->numel < (size_t)cnt * img || y->numel < (size_t)cnt)
        return nn_error(NN_E_ARG, "resident data: batch %d needs float32 x of %zu and int32 y of %d elements on %s",
                        b, (size_t)cnt * img, cnt, nn_device_name(r->dev));
    const nn_u8_batch_geom g = nn_loader_geom(&r->shape, &r->cfg, r->epoch, first, cnt);
    NN_TRY(r->be->u8_batch(&g, r->images, r->labels, r->order + first, nn_f32(x), nn_i32(y)));
    *n = cnt;
    return NN_OK;
}

/* ---- the batch source ---- */

static nn_status src_start(void *impl, int epoch, int first)
{
    nn_resident *r = impl;
    if (first < 0) return nn_error(NN_E_ARG, "resident data: first batch %d", first);
    NN_TRY(nn_resident_start(r, epoch));
    r->next = first;
    return NN_OK;
}

static nn_status src_next(void *impl, const float **x, const int32_t **y, int *n)
{
    (void)impl, (void)x, (void)y, (void)n;
    return nn_error(NN_E_UNSUPPORTED, "resident data: its batches are built on the device (next_into); host batches "
                                      "(evaluation, a sharded or emulated data-parallel run) need the normal loader");
}

static nn_status src_next_into(void *impl, nn_tensor *x, nn_tensor *y, const int32_t **host_y, int *n)
{
    nn_resident *r = impl;
    *host_y = r->batch_labels;
    NN_TRY(nn_resident_batch(r, r->next, x, y, n));
    if (*n == 0) return NN_OK;
    /* the labels the u8_batch kernel gathers, by the same order */
    const int32_t *order = r->host_order + (size_t)r->next * r->cfg.batch;
    for (int i = 0; i < *n; i++) r->batch_labels[i] = r->host_labels[order[i]];
    r->next++;
    return NN_OK;
}

nn_batch_source nn_resident_source(nn_resident *r)
{
    return (nn_batch_source){.impl = r, .views = 1, .batches = r ? r->nbatches : 0, .start = src_start,
                             .next = src_next, .next_into = src_next_into};
}
