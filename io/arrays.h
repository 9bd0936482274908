/* A batch source over your own arrays in memory: n images of c x h x w (CHW,
 * image after image) as floats (used as they are) or bytes (normalized:
 * x = (byte/255 - mean) / std), with one int32 label each. It serves batches
 * as host arrays (nn_array_source_batches: for nn_trainer and nn_evaluate) or
 * as ready tensors on a device (nn_array_source_next), the last batch partial
 * unless drop_last. The order of epoch e is in order, or a Fisher-Yates
 * shuffle drawn from Philox(seed, e): a function of (seed, epoch) alone, so a
 * resumed run sees the same batches. */
#ifndef NN_ARRAYS_H
#define NN_ARRAYS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "io/dataset.h"

typedef struct nn_array_config {
    const float *images_f32;   /* one of these two; borrowed: must outlive the source */
    const uint8_t *images_u8;
    const int32_t *labels;     /* n entries, borrowed */
    int n, c, h, w;
    int limit;                 /* use only the first limit images (0: all) */
    int batch;                 /* images per batch (>= 1) */
    bool shuffle;              /* a new order every epoch (default: in order) */
    bool drop_last;            /* drop a final partial batch (default: keep it) */
    uint64_t seed;             /* the shuffle's */
    float mean, std;           /* bytes only; std 0: mean 0, std 1 (x = byte / 255) */
} nn_array_config;

typedef struct nn_array_source nn_array_source;

/* NN_E_ARG for NULL arrays, both or neither image array, non-positive sizes or batch. */
nn_status nn_array_source_new(nn_array_source **out, const nn_array_config *cfg);
void nn_array_source_free(nn_array_source *a);
int nn_array_source_count(const nn_array_source *a);   /* images used (after limit) */
int nn_array_source_nbatches(const nn_array_source *a);

/* The source as a batch source (views 1), valid while a lives. */
nn_batch_source nn_array_source_batches(nn_array_source *a);

/* Starts epoch `epoch` at batch `first`. */
nn_status nn_array_source_start(nn_array_source *a, int epoch, int first);
/* The next batch as tensors on dev: *x (n, c, h, w) F32 and *y (n) I32, owned
 * by a and valid until the next call; *x = *y = NULL at the end of the epoch.
 * Tensors are made once per size (the full batch and a partial last one). */
nn_status nn_array_source_next(nn_array_source *a, nn_device dev, nn_tensor **x, nn_tensor **y);

#endif
