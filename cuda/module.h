/* The interface between libconvnet and its CUDA backend module
 * (libconvnet_cuda.so, built from cuda/): core/backend.c dlopen()s the module
 * the first time a CUDA backend is asked for, so a program that never uses the
 * GPU links and runs without the CUDA runtime. Internal, not installed. */
#ifndef NN_CUDA_MODULE_H
#define NN_CUDA_MODULE_H

#include <stdbool.h>

#include "core/backend.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The loading library's nn_error(): the module forwards its messages there,
 * so nn_errmsg() in the program reads GPU errors as any other. */
typedef nn_status (*nn_cuda_host_error_fn)(nn_status s, const char *fmt, ...);

/* NCCL inside the module (cuda/nccl.cu), for core/dist.c: the communicator
 * and collectives on the backend's one stream, each waited for against a
 * deadline (a hung peer leaves NCCL's kernel running forever otherwise; the
 * communicator is aborted then). Messages name the rank. */
typedef struct nn_cuda_nccl {
    size_t id_bytes;                                  /* sizeof(ncclUniqueId) */
    nn_status (*unique_id)(void *id);                 /* on rank 0; sent to the others by MPI */
    nn_status (*init)(int size, int rank, const void *id);
    nn_status (*sum)(float *buf, size_t n, double timeout_s);    /* in place, every rank */
    nn_status (*bcast)(void *buf, size_t bytes, double timeout_s); /* from rank 0, in place */
    /* bucketed sums: start one on NCCL's own stream once the compute stream's
     * queued work is done (an event), without waiting; then wait for all of
     * them against the deadline, and order the compute stream after them */
    nn_status (*start_sum)(float *buf, size_t n);
    nn_status (*wait_sums)(double timeout_s);
    void (*destroy)(void);
} nn_cuda_nccl;

typedef struct nn_cuda_module {
    const nn_backend *backend;
    bool (*present)(void); /* a usable device (compute capability >= the build's) */
    /* one process per GPU: device index % count, before any other CUDA call;
     * NN_OK without a GPU (the CPU runs) */
    nn_status (*select_device)(int index);
    const nn_cuda_nccl *nccl; /* NULL: built without NCCL */
} nn_cuda_module;

/* In libconvnet (core/backend.c): the loaded module, NULL when it could not
 * be loaded (or the build has no CUDA backend). Loads it on first call. */
const nn_cuda_module *nn_cuda_module_get(void);

/* The module's one entry point, looked up by this name. */
#define NN_CUDA_MODULE_ENTRY "nn_cuda_module_open"
typedef const nn_cuda_module *(*nn_cuda_module_open_fn)(nn_cuda_host_error_fn host_error);

#ifdef __cplusplus
}
#endif

#endif
