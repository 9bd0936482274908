/* Weights-only safetensors files: what PyTorch's
 * safetensors.torch.save_file(model.state_dict(), path) writes for the
 * project's models, tensors named as PyTorch names them (stage1.0.weight ...
 * classifier.7.bias for AlexNet, features.0.weight ... classifier.5.bias for
 * LeNet) and no convnet metadata. The architecture is read off the tensor
 * shapes; the loaders also take our own checkpoints (same names), so they
 * serve fine-tuning from either kind of file. */
#ifndef NN_WEIGHTS_H
#define NN_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>

#include "models/model.h"

/* What the caller knows better than the shapes; 0 (or "") means "infer".
 * A hint the shapes contradict is an error naming the tensor. */
typedef struct nn_weights_hints {
    char arch[16];   /* "alexnet" or "lenet" */
    int in_size;     /* several sizes flatten to the same fc6 input: this picks one */
    int in_channels;
    int classes;
} nn_weights_hints;

/* The config of the model whose parameters a weights-only file holds:
 * arch from the names; input channels, width, groups, fc and classes from
 * the shapes; the input size from fc6's (LeNet: fc1's) input: hints->in_size
 * if given, else 224 when it fits, else the smallest size that fits (the
 * sizes that fit are named in note when there are several; note may be
 * NULL). Every tensor is then checked against the model: a missing,
 * unexpected or misshapen tensor is an error naming it and both shapes.
 * cfg gets dropout 0.5 (AlexNet) and the paper's init; they only matter for
 * training. */
nn_status nn_weights_infer(const char *path, const nn_weights_hints *hints, nn_model_config *cfg, char *note,
                           size_t note_n);

/* Loads a file's tensors into the built model seq (any device), by name.
 * F32, F64, F16 and BF16 tensors are converted to float32.
 * allow_mismatch false: every parameter must be there with its exact shape
 * (an error names the tensor and both shapes).
 * allow_mismatch true (fine-tuning, `train --init-from`): a parameter that
 * is missing or shaped differently (the last layer for another number of
 * classes) keeps its fresh initialization and is reported through report
 * (may be NULL) as (name, reason). Either way tensors named "optim.*" (a
 * checkpoint's optimizer state) are skipped and any other tensor the model
 * lacks is reported, not loaded. *loaded (may be NULL) counts the
 * parameters taken from the file. */
typedef void (*nn_weights_report_fn)(const char *name, const char *why, void *user);
nn_status nn_weights_load_into(nn_seq *seq, const char *path, bool allow_mismatch, nn_weights_report_fn report,
                               void *user, int *loaded);

/* True when path is a safetensors file without convnet checkpoint metadata
 * (no "format" key): the file to hand to nn_weights_infer. False on I/O or
 * format errors too (the checkpoint reader then gives the message). */
bool nn_weights_only(const char *path);

/* Builds cfg's model on dev and loads path's weights into it (strictly, as
 * nn_weights_load_into without allow_mismatch). On error seq holds nothing
 * to free. */
nn_status nn_model_build_load(const char *path, const nn_model_config *cfg, nn_device dev, nn_seq *seq);

/* The model of a convnet checkpoint or of a weights-only file (hints apply
 * to the latter), built on dev with the file's weights. *weights_only (may
 * be NULL) tells which kind it was; note as in nn_weights_infer. On error
 * seq holds nothing to free. */
nn_status nn_model_load(const char *path, nn_device dev, const nn_weights_hints *hints, nn_model_config *cfg,
                        nn_seq *seq, bool *weights_only, char *note, size_t note_n);

#endif
