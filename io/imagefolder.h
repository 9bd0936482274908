/* Image folders (DIR/train/CLASS/NAME.jpg|.jpeg|.png, DIR/val/CLASS/...) and
 * AlexNet's data pipeline over them: short side resized to S (256), center
 * S x S, mean subtraction, and either random C x C crops (224) + horizontal
 * flips + PCA lighting (training), the center C x C crop, or the paper's 10
 * crops (evaluation). Batches are (N, 3, C, C) floats, RGB, made by a pool of
 * worker threads ahead of the consumer.
 *
 * Determinism: like io/dataset.h, the order of epoch e is a Fisher-Yates
 * shuffle from Philox(seed, e) and the augmentation of position i of epoch e
 * comes from counter (e, i), so the batches are a function of (seed, epoch,
 * batch) whatever the thread count or timing, and a resumed run repeats. */
#ifndef NN_IMAGEFOLDER_H
#define NN_IMAGEFOLDER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "core/tensor.h"
#include "io/dataset.h"
#include "io/png.h"

/* The paper's sizes. */
#define NN_IMGF_RESIZE 256
#define NN_IMGF_CROP 224
#define NN_IMGF_LIGHTING_STD 0.1f

/* ---- the data set: one split of an image folder ---- */

typedef struct nn_imgf nn_imgf; /* opaque */

typedef struct nn_imgf_config {
    int resize;            /* S: short side -> S, center S x S (0: 256) */
    int threads;           /* decoders for the one-time statistics pass (0: all cores) */
    const char *cache_dir; /* where the statistics cache goes (NULL: DIR itself; if it
                            * cannot be written the pass is simply redone next time) */
    FILE *report;          /* skipped files are named here (NULL: silent) */
} nn_imgf_config;

/* Statistics of the S x S center images of a split, pixel values p in [0, 255].
 * The PCA lighting uses the covariance of p/255 (the scale of the widely used
 * ImageNet eigenvalues 0.2175, 0.0188, 0.0045): shift = 255 * V (alpha .* lambda). */
typedef struct nn_imgf_stats {
    int size;              /* S */
    long long images;      /* images the statistics cover */
    float mean[3];         /* per-channel mean of p */
    float std[3];          /* per-channel standard deviation of p */
    float cov[9];          /* 3 x 3 RGB covariance of p/255, row-major */
    float eigval[3];       /* its eigenvalues, largest first */
    float eigvec[9];       /* eigenvectors as COLUMNS: eigvec[3 * c + i] is channel c of vector i */
    const float *mean_image; /* S x S x 3 (HWC) per-pixel mean of p; owned by the data set */
} nn_imgf_stats;

/* Opens DIR/SPLIT (split "train", "val", or "" for DIR itself). Classes are
 * the subfolders sorted by strcmp, unless `classes` (n names, e.g. the
 * training split's or a checkpoint's) is given: then every subfolder must be
 * one of them (a class may have no folder). Files are taken in strcmp order of
 * their path below the class folder, subfolders included; names not ending
 * in .jpg/.jpeg/.png (any case) are ignored. Every image is decoded once to
 * check it and to compute the statistics; the result (and the list of broken
 * files) is cached in "<cache>/.convnet-<split>-<S>.cache", valid while the
 * list of files, their sizes and mtimes and S are unchanged. Unreadable,
 * truncated and non-image files are named on cfg->report and skipped.
 * Errors: the folder is missing or holds no class / no readable image. */
nn_status nn_imgf_open(nn_imgf **out, const char *dir, const char *split, const char *const *classes, int n,
                       const nn_imgf_config *cfg);
void nn_imgf_free(nn_imgf *ds);

int nn_imgf_count(const nn_imgf *ds);          /* usable images */
int nn_imgf_skipped(const nn_imgf *ds);        /* broken image files left out */
int nn_imgf_ignored(const nn_imgf *ds);        /* files without an image extension */
int nn_imgf_classes(const nn_imgf *ds);
const char *const *nn_imgf_class_names(const nn_imgf *ds); /* owned by ds */
const char *nn_imgf_path(const nn_imgf *ds, int i);        /* owned by ds */
int32_t nn_imgf_label(const nn_imgf *ds, int i);
const nn_imgf_stats *nn_imgf_get_stats(const nn_imgf *ds); /* owned by ds */
/* Skipped file k (0 <= k < skipped): its path below DIR/SPLIT and why.
 * Owned by ds. */
const char *nn_imgf_skipped_path(const nn_imgf *ds, int k, const char **why);

/* ---- single images (the pieces the loader is made of) ---- */

/* Decodes a JPEG or PNG (by content, not by name) to RGB; min_side as in
 * nn_jpeg_decode (DCT downscaling of JPEGs, never below min_side). */
nn_status nn_imgf_decode(const char *path, int min_side, nn_image *out);

/* rgb (h x w x 3) -> out (S x S x 3): short side resized to S, long side to
 * round(long * S / short), then the center S x S. Downscaling is an exact
 * area (box) filter: each output pixel is the coverage-weighted average of
 * the source pixels under it, which is alias-free and cheap (every source
 * pixel is touched once per axis); upscaling is bilinear with half-pixel
 * centers (an area filter there would be nearest-neighbour). Rounded to bytes. */
void nn_imgf_resize_center(const uint8_t *rgb, int w, int h, int S, uint8_t *out);

/* decode + resize_center into out (S x S x 3). */
nn_status nn_imgf_load_center(const char *path, int S, uint8_t *out);

/* What a training sample does to its S x S image. */
typedef struct nn_imgf_aug {
    int x, y;        /* top-left corner of the C x C crop in the S x S image */
    bool flip;       /* horizontal reflection of the crop */
    float alpha[3];  /* PCA lighting coefficients (0 when off) */
} nn_imgf_aug;

/* The draw for position pos of epoch epoch: x, y uniform in [0, S - C],
 * flip with probability 1/2 (if flip), alpha_i ~ N(0, lighting_std^2) from
 * nn_rand_normal (if lighting_std > 0). */
nn_imgf_aug nn_imgf_draw(uint64_t seed, int epoch, int pos, int S, int C, bool flip, float lighting_std);

/* The 10 views of the paper: v = 0..4 crops at top-left (0, 0), top-right
 * (0, S-C), bottom-left (S-C, 0), bottom-right (S-C, S-C) and center
 * ((S-C)/2, (S-C)/2) as (y, x); v = 5..9 the same crops reflected. */
nn_imgf_aug nn_imgf_view(int v, int S, int C);

typedef enum nn_imgf_mean {
    NN_IMGF_MEAN_PIXEL = 0, /* the paper: subtract the per-pixel mean image */
    NN_IMGF_MEAN_CHANNEL,   /* subtract the per-channel mean */
    NN_IMGF_MEAN_NONE,
} nn_imgf_mean;

/* How pixels become floats: out = (p + lighting shift - mean) * scale[c]. */
typedef struct nn_imgf_norm {
    nn_imgf_mean mean;
    float scale[3];
} nn_imgf_norm;

/* img (S x S x 3 bytes) -> out (3, C, C) floats (CHW): the crop at (a->y,
 * a->x), reflected if a->flip, lighting shift 255 * eigvec (alpha .* eigval)
 * added to every pixel, the mean subtracted (the mean image cropped and
 * reflected with the picture), times scale. */
void nn_imgf_apply(const uint8_t *img, int S, int C, const nn_imgf_aug *a, const nn_imgf_stats *st,
                   const nn_imgf_norm *norm, float *out);

/* ---- the loader ---- */

typedef enum nn_imgf_mode {
    NN_IMGF_TRAIN = 0, /* random crops, flips, lighting */
    NN_IMGF_CENTER,    /* the center crop */
    NN_IMGF_TENCROP,   /* 10 views per image, image-major: rows 10i..10i+9 are image i */
} nn_imgf_mode;

typedef struct nn_imgf_loader_config {
    nn_imgf_mode mode;
    int batch;             /* images per batch (TENCROP: 10 x batch rows) */
    int crop;              /* C (0: 224) */
    bool shuffle;
    bool drop_last;        /* drop a final partial batch */
    bool no_flip;          /* TRAIN: no reflections */
    float lighting_std;    /* TRAIN: std of alpha (the paper: 0.1; 0 off) */
    nn_imgf_mean mean;     /* default: the per-pixel mean image (the paper) */
    bool raw_scale;        /* true: scale 1, pixels stay in 0..255 as in the paper;
                            * false (default): divide by the per-channel std */
    int threads;           /* decode/augment workers (0: all cores) */
    int prefetch;          /* batches made ahead (0: 3) */
    uint64_t seed;
} nn_imgf_loader_config;

typedef struct nn_imgf_loader nn_imgf_loader;

/* ds: the images; stats: the training split's statistics (the mean and the
 * eigenvectors; the loader keeps the pointer: it must outlive the loader). */
nn_status nn_imgf_loader_new(nn_imgf_loader **out, const nn_imgf *ds, const nn_imgf_stats *stats,
                             const nn_imgf_loader_config *cfg);
void nn_imgf_loader_free(nn_imgf_loader *l);
int nn_imgf_loader_batches(const nn_imgf_loader *l);
int nn_imgf_loader_views(const nn_imgf_loader *l); /* 1, or 10 for TENCROP */
/* Starts epoch `epoch` (0-based) at batch `first` (for resuming). */
nn_status nn_imgf_loader_start(nn_imgf_loader *l, int epoch, int first);
/* The next batch: x (n * views, 3, C, C) floats, y (n) labels, valid until
 * the next call; *n == 0 at the end of the epoch. An image that fails to
 * decode now (changed since it was checked) becomes the mean (zeros) and is
 * reported; it does not stop the run. */
nn_status nn_imgf_loader_next(nn_imgf_loader *l, const float **x, const int32_t **y, int *n);
/* Images that failed to decode in the loader so far. */
long long nn_imgf_loader_failures(const nn_imgf_loader *l);

/* ---- scoring ---- */

/* The loader as a generic batch source (io/dataset.h), for training and for
 * nn_evaluate (models/evaluate.h), which averages the softmax over the views. */
nn_batch_source nn_imgf_loader_source(nn_imgf_loader *l);

#endif
