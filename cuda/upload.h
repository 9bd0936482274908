/* Pinned, multi-buffered host-to-device uploads (issue 13 (f)), behind
 * NN_CUDA_PINNED=1: a copy from pageable host memory to the device (a batch
 * written with nn_tensor_write) is staged through page-locked buffers and
 * DMA'd on a copy stream, so the host returns without waiting for the GPU to
 * finish the work queued before it. Off by default: cudaMemcpyAsync from the
 * caller's memory on the compute stream, as before. */
#ifndef NN_CUDA_UPLOAD_H
#define NN_CUDA_UPLOAD_H

#include <stdbool.h>

#include "core/defaults.h" /* NN_CUDA_PINNED_ENV */

#ifdef __cplusplus
extern "C" {
#endif

/* NN_CUDA_PINNED=1 in the environment (read once), unless a test set it. */
bool nn_cuda_pinned_uploads(void);
/* For tests: forces the switch (both ways) for the copies that follow. */
void nn_cuda_set_pinned_uploads(bool on);

#ifdef __cplusplus
}
#endif

#endif
