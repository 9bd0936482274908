/* What the commands that run a trained model share: the library's message
 * as an exit status, the device flag, and opening a convnet checkpoint or a
 * weights-only file (models/weights.h), saying on stderr what was inferred. */
#ifndef CONVNET_MODEL_CLI_H
#define CONVNET_MODEL_CLI_H

#include <stdbool.h>

#include "core/tensor.h"
#include "models/weights.h"

/* Prints "convnet CMD: <library message>", returns 1. */
int cli_lib_fail(const char *cmd);
/* Parses --device and checks that the backend is built; CLI_OK or an exit status. */
int cli_parse_device(const char *cmd, const char *s, nn_device *dev);
/* The same path, or two names of one existing file. */
bool cli_same_file(const char *a, const char *b);

/* The config of path: a checkpoint's metadata, or inferred from a
 * weights-only file with hints (then "CMD: PATH holds weights only: ..."
 * goes to stderr). */
nn_status cli_model_config(const char *cmd, const char *path, const nn_weights_hints *hints, nn_model_config *cfg,
                           bool *weights_only);
/* The model with its weights on dev (the config as cli_model_config). */
nn_status cli_model_load(const char *cmd, const char *path, const nn_weights_hints *hints, nn_device dev,
                         nn_model_config *cfg, nn_seq *seq);

#endif
