/* The data the commands train and evaluate on, whichever kind it is:
 * Fashion-MNIST's IDX files (the default, or --data DIR holding the .gz files)
 * or an image folder (--data DIR with DIR/train/CLASS/... and DIR/val/CLASS/...,
 * the paper's pipeline). Both come out as batch sources. */
#ifndef CONVNET_DATA_H
#define CONVNET_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "io/dataset.h"
#include "io/imagefolder.h"
#include "io/resident.h"

typedef struct cli_data_opts {
    const char *dir;        /* NULL: Fashion-MNIST in its Debian folder */
    bool train;             /* also open the training loader (shuffled, augmented) */
    int batch, eval_batch;
    int size;               /* the model's input size */
    bool augment;
    bool ten_crop;          /* evaluation with the paper's 10 views (image folders) */
    uint64_t seed;
    int limit, test_limit;  /* 0: all images */
    float mean, std;        /* Fashion-MNIST normalization; std 0: from the training set */
    const char *classes;    /* newline-separated class list of a checkpoint, or NULL */
    bool resident;          /* Fashion-MNIST's training set kept on dev, batches built there */
    nn_device dev;
} cli_data_opts;

typedef struct cli_data {
    bool folder;
    int channels, classes;
    int ntrain, ntest;
    const char *const *class_names;
    nn_batch_source train_src, test_src;
    float mean, std;        /* Fashion-MNIST normalization used */
    char classes_joined[16384]; /* newline-separated, for checkpoints */
    /* one of the two kinds */
    nn_dataset train, test;
    nn_loader *tl, *vl;
    nn_resident *rs;        /* instead of tl with resident */
    nn_imgf *itr, *iva;
    nn_imgf_loader *itl, *ivl;
} cli_data;

/* True when dir holds an image folder (a train/ or val/ subfolder). */
bool cli_data_is_folder(const char *dir);
nn_status cli_data_open(cli_data *d, const cli_data_opts *o);
void cli_data_close(cli_data *d);

#endif
