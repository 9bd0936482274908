/* Data sets of small grayscale/RGB images held in memory as bytes, and a
 * loader that turns them into normalized float batches on a background thread.
 *
 * Determinism: the order of epoch e is a Fisher-Yates shuffle drawn from
 * Philox(seed, stream = e), and the augmentation of the sample at position i
 * of epoch e from counter (e, i). So the data a run sees is a function of
 * (seed, epoch, batch) alone: a resumed run seeks to its batch and continues
 * exactly, whatever the thread timing. */
#ifndef NN_DATASET_H
#define NN_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

typedef struct nn_dataset {
    int n, c, h, w;         /* n images of c x h x w bytes (CHW) */
    uint8_t *images;        /* owned */
    int32_t *labels;        /* owned, n entries in [0, classes) */
    int classes;
    const char *const *class_names; /* static strings */
} nn_dataset;

/* Debian's dataset-fashion-mnist installs the gzipped IDX files here. */
#define NN_FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

/* The 10 class names, label order ("T-shirt/top" ... "Ankle boot"). */
extern const char *const nn_fmnist_class_names[10];

/* Loads DIR/train-*.gz (train) or DIR/t10k-*.gz, validating that the images
 * are N x 28 x 28, the labels N entries in [0, 10). dir NULL: the default. */
nn_status nn_fmnist_load(const char *dir, bool train, nn_dataset *out);
void nn_dataset_free(nn_dataset *ds);
/* Mean and standard deviation of all pixels / 255 (for normalization). */
void nn_dataset_stats(const nn_dataset *ds, float *mean, float *std);

typedef struct nn_loader_config {
    int batch;
    int size;        /* output images size x size (bilinear resize) */
    bool shuffle;
    bool augment;    /* random shift by up to size/16 pixels and horizontal flip */
    bool drop_last;  /* drop a final partial batch */
    float mean, std; /* x = (pixel/255 - mean) / std */
    uint64_t seed;
    int limit;       /* use only the first limit images of the data set (0: all) */
} nn_loader_config;

typedef struct nn_loader nn_loader;

nn_status nn_loader_new(nn_loader **out, const nn_dataset *ds, const nn_loader_config *cfg);
void nn_loader_free(nn_loader *l);
int nn_loader_batches(const nn_loader *l);
/* Starts epoch `epoch` (0-based) at batch `first` (for resuming). */
nn_status nn_loader_start(nn_loader *l, int epoch, int first);
/* The next batch: x (n, c, size, size) floats and y (n) labels, valid until the
 * next call; *n == 0 at the end of the epoch. */
nn_status nn_loader_next(nn_loader *l, const float **x, const int32_t **y, int *n);

/* Any loader seen through one interface (Fashion-MNIST's, the image
 * folders'), so training and evaluation need not know which: x holds
 * n * views images (views > 1 for multi-crop evaluation), y n labels. */
struct nn_tensor;

typedef struct nn_batch_source {
    void *impl;
    int views;
    int batches;
    nn_status (*start)(void *impl, int epoch, int first);
    nn_status (*next)(void *impl, const float **x, const int32_t **y, int *n);
    /* Optional (NULL for host sources; the trainer uses it when set): the next
     * batch built straight into the first *n rows of x (batch, ...) float32
     * and y (batch) int32 on their device, no host batch and no upload;
     * *host_y its n labels on the host (the trainer's accuracy count). */
    nn_status (*next_into)(void *impl, struct nn_tensor *x, struct nn_tensor *y, const int32_t **host_y, int *n);
} nn_batch_source;

nn_batch_source nn_loader_source(nn_loader *l);

/* Bilinear resize of one channel (half-pixel centers, as PyTorch's
 * align_corners=False), bytes in, floats in [0, 255] out. */
void nn_resize_bilinear(const uint8_t *src, int sh, int sw, float *dst, int dh, int dw);

#endif
