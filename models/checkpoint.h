/* Checkpoints: one safetensors file holding the weights under their
 * PyTorch-style names, the optimizer state under "optim.<param>.v|m", and as
 * string metadata the model config, the training position (epoch, batch,
 * step), the learning-rate schedule, the generator states and the data
 * normalization, so a resumed run continues exactly. Written atomically
 * (temporary file, fsync, rename). */
#ifndef NN_CHECKPOINT_H
#define NN_CHECKPOINT_H

#include <stdint.h>

#include "optim/optim.h"
#include "models/model.h"

typedef struct nn_train_state {
    int epoch;           /* epochs completed */
    int batch;           /* batches completed in the current epoch */
    int64_t step;        /* optimizer steps so far */
    uint64_t seed;       /* data order and augmentation */
    nn_rng dropout_rng;  /* the context's generator */
    float mean, std;     /* input normalization */
    nn_schedule sched;
    nn_optim_config optim;
    int batch_size, epochs;
    int limit;           /* training images used (0: all): the data order depends on it */
    bool augment;
    char classes[16384]; /* class names, newline-separated ("" if unknown) */
    float best_acc;
} nn_train_state;

/* seq: a built model; opt may be NULL (weights only); st may be NULL. */
nn_status nn_checkpoint_save(const char *path, const nn_model_config *cfg, const nn_seq *seq,
                             const nn_optim *opt, const nn_train_state *st);

/* Reads the model config (and the training state if st != NULL) from a file. */
nn_status nn_checkpoint_read_config(const char *path, nn_model_config *cfg, nn_train_state *st);
/* Loads weights into a model built from that config (and the optimizer state
 * into opt if not NULL), checking every name, dtype and shape. */
nn_status nn_checkpoint_load(const char *path, nn_seq *seq, nn_optim *opt);

#endif
