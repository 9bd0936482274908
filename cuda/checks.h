/* Device-side error flags read lazily (issue 13 (e)): with the switch on, a
 * kernel that finds bad input (softmax_xent's labels) records it on the
 * device instead of making the host wait for a verdict; the error comes back,
 * with the same status and message, from the next call that synchronizes the
 * stream anyway (a copy to the host such as reading the loss, nn_cuda_sync,
 * count_nonfinite). Off by default: then the check synchronizes at once. */
#ifndef NN_CUDA_CHECKS_H
#define NN_CUDA_CHECKS_H

#include <stdbool.h>

#include "core/defaults.h" /* NN_CUDA_LAZY_CHECKS_ENV */

#ifdef __cplusplus
extern "C" {
#endif

/* NN_CUDA_LAZY_CHECKS=1 in the environment (read once), unless a test set it. */
bool nn_cuda_lazy_checks(void);
/* For tests: forces the switch (both ways) for the calls that follow. */
void nn_cuda_set_lazy_checks(bool on);

#ifdef __cplusplus
}
#endif

#endif
