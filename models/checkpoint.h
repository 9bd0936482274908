/* Checkpoints: one safetensors file holding the weights under their
 * PyTorch-style names, the optimizer state under "optim.<param>.v|m", and as
 * string metadata the model (a built-in config, or the name and init of your
 * own model), the training recipe and progress, the data normalization and
 * any key/values of your own, so a resumed run continues exactly. Written
 * atomically (temporary file "PATH.tmp.PID", fsync, rename).
 *
 * The metadata keys (one place: checkpoint.c) are those of every earlier
 * convnet checkpoint ("format" = "convnet-checkpoint-1"), so older files load. */
#ifndef NN_CHECKPOINT_H
#define NN_CHECKPOINT_H

#include <stdint.h>

#include "optim/optim.h"
#include "models/model.h"

/* A training run is its recipe (what is trained and how: fixed for the run)
 * and its progress (where it is: changes every step). The fields are listed
 * once, in these macros, so that nn_train_state can show them both as
 * st.recipe / st.progress and flat (st.epoch, st.mean): code written against
 * the flat state keeps compiling. */
#define NN_TRAIN_RECIPE_FIELDS                                                  \
    nn_optim_config optim; /* the optimizer: kind, lr, momentum, decay */       \
    nn_schedule sched;     /* kind and parameters (its state: progress.lr...) */ \
    int batch_size;                                                             \
    int epochs;            /* the schedule spans epochs x batches per epoch */  \
    uint64_t seed;         /* data order and augmentation */                    \
    int limit;             /* training images used (0: all): the order depends on it */ \
    bool augment;                                                               \
    float mean, std;       /* input normalization: x = (pixel/255 - mean)/std */ \
    char classes[16384];   /* class names, newline-separated ("" if unknown) */

#define NN_TRAIN_PROGRESS_FIELDS                                                \
    int epoch;             /* epochs completed */                               \
    int batch;             /* batches completed in the current epoch */         \
    int64_t step;          /* optimizer steps so far */                         \
    float lr;              /* the schedule's current rate */                    \
    float sched_best;      /* PLATEAU: best validation accuracy seen */         \
    int sched_bad_epochs;  /* PLATEAU: epochs since it improved */              \
    nn_rng dropout_rng;    /* the training context's generator */               \
    float best_acc;        /* best test top-1 so far (decides best.safetensors) */

typedef struct nn_train_recipe { NN_TRAIN_RECIPE_FIELDS } nn_train_recipe;
typedef struct nn_train_progress { NN_TRAIN_PROGRESS_FIELDS } nn_train_progress;

/* Both views share storage (identical member lists: a union's common initial
 * sequence). */
typedef struct nn_train_state {
    union {
        nn_train_recipe recipe;
        struct { NN_TRAIN_RECIPE_FIELDS };
    };
    union {
        nn_train_progress progress;
        struct { NN_TRAIN_PROGRESS_FIELDS };
    };
} nn_train_state;

/* A fresh run's state: the recipe given, progress at zero, the schedule at
 * its base rate, the dropout generator seeded from recipe->seed. Make
 * recipe->sched with nn_schedule_make(kind, recipe->optim.lr) (its defaults:
 * optim.h); the trainer feeds the schedule's rate to the optimizer. */
nn_train_state nn_train_state_make(const nn_train_recipe *recipe);
/* The live schedule: recipe.sched's parameters with the progress's state. */
nn_schedule nn_train_schedule(const nn_train_state *st);
/* Stores a schedule's state (lr, best, bad epochs) into the progress. */
void nn_train_set_schedule(nn_train_state *st, const nn_schedule *s);

/* Free-form metadata: an owned list of key/value strings. Zero-initialize
 * (nn_ckpt_meta m = {0}), fill with nn_ckpt_meta_set, release with
 * nn_ckpt_meta_free. */
typedef struct nn_ckpt_meta {
    int n, cap;
    char **key, **value;
} nn_ckpt_meta;
/* Copies key and value; a repeated key replaces its value. NN_E_ARG on NULL. */
nn_status nn_ckpt_meta_set(nn_ckpt_meta *m, const char *key, const char *value);
/* The value of key, or NULL (m NULL or key absent). Owned by m. */
const char *nn_ckpt_meta_get(const nn_ckpt_meta *m, const char *key);
void nn_ckpt_meta_free(nn_ckpt_meta *m);

/* The normalization of image-folder data (io/imagefolder.h), per channel,
 * for pixel values p in [0, 255] after the short side is resized to `resize`
 * and the center crop taken: x = (p - mean[c]) / std[c]. Stored as
 * "data.mean" and "data.std" ("R,G,B") and "data.resize". The folder loader
 * subtracts the per-pixel mean image, whose average per channel is mean[c]:
 * the stored means are what a photo needs without the training folder. */
typedef struct nn_data_norm {
    int channels;          /* 1 or 3 */
    int resize;
    float mean[3], std[3];
} nn_data_norm;

/* What nn_checkpoint_write stores. Only params is required. */
typedef struct nn_checkpoint_desc {
    const nn_params *params;     /* the weights, under their names */
    const nn_model_config *cfg;  /* a built-in architecture (alexnet, lenet) that eval and predict
                                    rebuild, or NULL for a model of your own */
    const char *arch;            /* your own model's name (model.arch) when cfg is NULL; may be NULL */
    const char *init;            /* the init actually used ("he", "paper", ...) when cfg is NULL */
    const nn_optim *opt;         /* optimizer state (NULL: weights only) */
    const nn_train_state *st;    /* recipe and progress (NULL: none) */
    bool has_norm;               /* without st: store mean/std below as the normalization */
    float mean, std;
    const nn_ckpt_meta *meta;    /* your key/values, stored as "user.KEY" (NULL: none) */
    const nn_data_norm *norm;    /* an image folder's normalization (NULL: none) */
} nn_checkpoint_desc;

/* Writes d to path atomically. NN_E_ARG for a NULL path, d or d->params, an
 * empty key, or a cfg whose arch is not one nn_model_build knows (use
 * cfg = NULL and arch for your own model). */
nn_status nn_checkpoint_write(const char *path, const nn_checkpoint_desc *d);

/* Reads what nn_checkpoint_write wrote: the weights into params (every name,
 * dtype and shape checked), the optimizer state into opt and the training
 * state into st (each if not NULL; st needs a checkpoint written with one),
 * and every metadata key/value of the file into meta if not NULL (yours under
 * "user.KEY"; the normalization under "train.mean" and "train.std", an image
 * folder's under "data.mean", "data.std" and "data.resize"; the
 * model under "model.*"). meta is reset first and owned by the caller. */
nn_status nn_checkpoint_read(const char *path, const nn_params *params, nn_optim *opt, nn_train_state *st,
                             nn_ckpt_meta *meta);

/* The data normalization of a checkpoint written with desc.norm: *found
 * false (and norm zeroed) when the file holds none. Errors: the file cannot
 * be read, or its data.* values do not parse. */
nn_status nn_checkpoint_read_norm(const char *path, nn_data_norm *norm, bool *found);

/* The built-in models (nn_model_build): seq built from cfg; opt and st may
 * be NULL. cfg NULL is allowed (no model config stored; load it with
 * nn_checkpoint_read). */
nn_status nn_checkpoint_save(const char *path, const nn_model_config *cfg, const nn_seq *seq,
                             const nn_optim *opt, const nn_train_state *st);

/* Reads the model config (and the training state if st != NULL) from a file
 * written for a built-in model. A model of your own (model.arch not alexnet
 * or lenet) is NN_E_UNSUPPORTED, naming the arch. */
nn_status nn_checkpoint_read_config(const char *path, nn_model_config *cfg, nn_train_state *st);
/* Loads weights into a model built from that config (and the optimizer state
 * into opt if not NULL), checking every name, dtype and shape. */
nn_status nn_checkpoint_load(const char *path, nn_seq *seq, nn_optim *opt);

#endif
