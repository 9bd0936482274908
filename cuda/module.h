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

typedef struct nn_cuda_module {
    const nn_backend *backend;
    bool (*present)(void); /* a usable device (compute capability >= the build's) */
} nn_cuda_module;

/* The module's one entry point, looked up by this name. */
#define NN_CUDA_MODULE_ENTRY "nn_cuda_module_open"
typedef const nn_cuda_module *(*nn_cuda_module_open_fn)(nn_cuda_host_error_fn host_error);

#ifdef __cplusplus
}
#endif

#endif
