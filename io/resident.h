/* A byte data set kept on the device (issue 13 (f)): Fashion-MNIST's 47 MB
 * of training images are uploaded once, and each batch is built there by the
 * u8_batch kernel (gather by index, bilinear resize, augmentation,
 * normalization: io/sample.h), bit for bit the batch nn_loader makes on the
 * CPU for the same (config, epoch, batch); no image crosses the bus after the
 * upload, and only the epoch's order (4 bytes an image) once per epoch.
 * Works on any device (on the CPU it is a loader without the thread).
 * Also the loader's shared pieces. Internal, not installed. */
#ifndef NN_IO_RESIDENT_H
#define NN_IO_RESIDENT_H

#include "core/backend.h"
#include "io/dataset.h"

typedef struct nn_resident nn_resident;

/* Copies ds (its first cfg->limit images) to `dev`; ds may be freed after. */
nn_status nn_resident_new(nn_resident **out, const nn_dataset *ds, nn_device dev, const nn_loader_config *cfg);
void nn_resident_free(nn_resident *r);
int nn_resident_batches(const nn_resident *r);
/* The order of epoch `epoch` (as nn_loader_start's), to the device. */
nn_status nn_resident_start(nn_resident *r, int epoch);
/* Batch b of the started epoch into x (>= n * c * size * size floats) and
 * y (>= n int32), both on the data set's device; *n its samples (0 past the end). */
nn_status nn_resident_batch(nn_resident *r, int b, nn_tensor *x, nn_tensor *y, int *n);

/* The trainer's batch source over r (io/dataset.h): batches through next_into,
 * on r's device, with their labels on the host; its `next` (host batches)
 * answers NN_E_UNSUPPORTED, so it serves training, not evaluation or a sharded
 * source (models/dist_train.h). r must outlive it. */
nn_batch_source nn_resident_source(nn_resident *r);

/* ---- the loader's pieces (io/dataset.c), shared with the resident set ---- */

/* The loader's argument checks (a status naming the problem). */
nn_status nn_loader_check(const nn_dataset *ds, const nn_loader_config *cfg);
/* Images used (the first cfg->limit) and the batches they make. */
int nn_loader_count(const nn_dataset *ds, const nn_loader_config *cfg, int *nbatches);
/* order[0..n) of epoch `epoch`: 0..n-1, shuffled when cfg->shuffle. */
void nn_loader_order(const nn_loader_config *cfg, int n, int epoch, int32_t *order);
/* The u8_batch geometry of n samples from position `first` of epoch `epoch`. */
nn_u8_batch_geom nn_loader_geom(const nn_dataset *ds, const nn_loader_config *cfg, int epoch, int first, int n);

#endif
