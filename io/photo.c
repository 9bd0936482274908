/* Photos to model inputs (see photo.h), on the image-folder pieces so that
 * predict sees what eval and training saw. */
#include "io/photo.h"

#include <stdlib.h>
#include <string.h>

int nn_photo_views(const nn_photo_prep *p) { return p->ten_crop ? 10 : 1; }

static nn_status check(const char *path, const nn_photo_prep *p)
{
    if (p->channels != 1 && p->channels != 3)
        return nn_error(NN_E_ARG, "%s: models take 1 or 3 channels, not %d", path, p->channels);
    if (p->crop < 1 || p->resize < p->crop || p->resize > NN_PNG_MAX_SIDE)
        return nn_error(NN_E_ARG, "%s: need 1 <= crop (%d) <= resize (%d) <= %d", path, p->crop, p->resize,
                        NN_PNG_MAX_SIDE);
    if (p->stats && p->stats->size != p->resize)
        return nn_error(NN_E_ARG, "%s: the statistics are for %dx%d images, not %dx%d", path, p->stats->size,
                        p->stats->size, p->resize, p->resize);
    for (int c = 0; c < p->channels && !p->stats; c++)
        if (!(p->std[c] > 0)) return nn_error(NN_E_ARG, "%s: normalization std[%d] must be > 0", path, c);
    return NN_OK;
}

/* Gray (709 luma) into all three bytes, and/or inverted, in place. */
static void recolour(uint8_t *img, size_t pixels, bool gray, bool invert)
{
    for (size_t i = 0; i < pixels; i++) {
        uint8_t *q = img + 3 * i;
        if (gray) {
            float y = 0.2126f * q[0] + 0.7152f * q[1] + 0.0722f * q[2];
            q[0] = q[1] = q[2] = (uint8_t)(y + 0.5f);
        }
        if (invert)
            for (int c = 0; c < 3; c++) q[c] = (uint8_t)(255 - q[c]);
    }
}

/* The normalization as nn_imgf_apply's: a mean image, or per-channel means
 * 255 * mean[c] with scale 1 / (255 std[c]). */
static void norm_of(const nn_photo_prep *p, nn_imgf_stats *fake, const nn_imgf_stats **st, nn_imgf_norm *n)
{
    if (p->stats) {
        *st = p->stats;
        n->mean = NN_IMGF_MEAN_PIXEL;
        for (int c = 0; c < 3; c++) n->scale[c] = 1.0f / p->stats->std[c];
        return;
    }
    memset(fake, 0, sizeof *fake); /* eigenvalues 0: no lighting shift */
    for (int c = 0; c < 3; c++) {
        int k = p->channels == 1 ? 0 : c;
        fake->mean[c] = 255.0f * p->mean[k];
        n->scale[c] = 1.0f / (255.0f * p->std[k]);
    }
    *st = fake;
    n->mean = NN_IMGF_MEAN_CHANNEL;
}

nn_status nn_photo_load(const char *path, const nn_photo_prep *p, float *out)
{
    NN_TRY(check(path, p));
    nn_image im = {0};
    NN_TRY(nn_imgf_decode(path, p->resize, &im));
    int S = p->resize, C = p->crop;
    uint8_t *sq = malloc((size_t)S * S * 3);
    float *rgb = malloc((size_t)3 * C * C * sizeof *rgb);
    if (!sq || !rgb) {
        nn_image_free(&im);
        free(sq);
        free(rgb);
        return nn_error(NN_E_NOMEM, "%s: out of memory for a %dx%d image", path, S, S);
    }
    nn_imgf_resize_center(im.data, im.w, im.h, S, sq);
    nn_image_free(&im);
    recolour(sq, (size_t)S * S, p->channels == 1, p->invert);
    nn_imgf_stats fake;
    const nn_imgf_stats *st;
    nn_imgf_norm n;
    norm_of(p, &fake, &st, &n);
    size_t plane = (size_t)C * C, view = plane * (size_t)p->channels;
    for (int v = 0; v < nn_photo_views(p); v++) {
        nn_imgf_aug a = p->ten_crop ? nn_imgf_view(v, S, C) : nn_imgf_view(4, S, C); /* view 4: the center */
        nn_imgf_apply(sq, S, C, &a, st, &n, rgb);
        memcpy(out + (size_t)v * view, rgb, view * sizeof *rgb); /* gray: channel 0 of three equal ones */
    }
    free(sq);
    free(rgb);
    return NN_OK;
}
