/* One photo (JPEG or PNG) made into a model's input, the way the image-folder
 * pipeline makes its evaluation batches: short side resized to S, center
 * S x S, then the center C x C crop or the paper's 10 views, normalized.
 * Output: views x channels x C x C floats (CHW), channels 3 (RGB) or 1 (gray:
 * ITU-R 709 luma of the resized RGB, like io/png.h's conversion). */
#ifndef NN_PHOTO_H
#define NN_PHOTO_H

#include <stdbool.h>

#include "core/status.h"
#include "io/imagefolder.h"

typedef struct nn_photo_prep {
    int channels;     /* 1 or 3 */
    int resize;       /* S */
    int crop;         /* C <= S */
    bool ten_crop;    /* 10 views (io/imagefolder.h nn_imgf_view), else the center crop */
    bool invert;      /* p -> 255 - p before normalizing (dark-background data such as Fashion-MNIST) */
    /* normalization: with stats (an image folder's training split, size S),
     * as the folder loader: (p - mean image) / std[c] of p; without,
     * (p / 255 - mean[c]) / std[c] (gray: index 0) */
    const nn_imgf_stats *stats;
    float mean[3], std[3];
} nn_photo_prep;

/* Views produced: 10 or 1. */
int nn_photo_views(const nn_photo_prep *p);

/* Decodes path and writes nn_photo_views(p) x channels x crop x crop floats
 * to out. Errors name the file (unreadable, not an image, bad sizes). */
nn_status nn_photo_load(const char *path, const nn_photo_prep *p, float *out);

#endif
