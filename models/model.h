/* The models the command line knows, described by one config that is also
 * stored in checkpoints (as safetensors metadata) so `eval` and `predict` can
 * rebuild the network a checkpoint was trained with. */
#ifndef NN_MODEL_H
#define NN_MODEL_H

#include "models/sequential.h"

typedef struct nn_model_config {
    char arch[16];      /* "alexnet" or "lenet" */
    int in_channels;
    int in_size;        /* square inputs: in_size x in_size */
    int classes;
    int groups;         /* alexnet: 1 single tower; 2 the paper's two-GPU split */
    float width;        /* alexnet conv channel multiplier (1 = 96, 256, 384, 384, 256) */
    int fc;             /* alexnet hidden fully connected width (paper 4096) */
    float dropout;      /* alexnet dropout before fc6 and fc7 (paper 0.5) */
    nn_init_kind init;
} nn_model_config;

/* AlexNet exactly as docs/alexnet.md: 3x224x224 -> 1000, groups 1, width 1, fc 4096,
 * dropout 0.5, the paper's initialization. */
nn_model_config nn_alexnet_config(void);
/* LeNet-5 for 1x28x28 -> 10. */
nn_model_config nn_lenet_config(void);

/* Defines the layers of cfg's architecture on s (no parameters yet). */
nn_status nn_alexnet_layers(nn_seq *s, const nn_model_config *cfg);
nn_status nn_lenet_layers(nn_seq *s, const nn_model_config *cfg);

/* Layers + shape inference; with rng also allocates and initializes the
 * parameters on dev. On error *s holds nothing to free. */
nn_status nn_model_build(nn_seq *s, const nn_model_config *cfg, nn_device dev, nn_rng *rng);

/* Config <-> "key=value" strings for checkpoint metadata. */
#define NN_MODEL_META_KEYS 9
extern const char *const nn_model_meta_keys[NN_MODEL_META_KEYS];
void nn_model_meta_value(const nn_model_config *c, int key, char *buf, size_t n);
nn_status nn_model_meta_set(nn_model_config *c, const char *key, const char *value);

#endif
