/* The CUDA backend module's entry point (see cuda/module.h) and its nn_error():
 * the module carries no copy of the library's error buffer, it formats the
 * message and hands it to the loading library's nn_error(). */
#include <stdarg.h>
#include <stdio.h>

#include "cuda/module.h"

extern const nn_backend nn_cuda_backend;
bool nn_cuda_present(void);
nn_status nn_cuda_select_device(int index); /* memory.cu */
#if NN_CUDA_HAVE_NCCL
extern const nn_cuda_nccl nn_cuda_nccl_table; /* nccl.cu */
#define NCCL_TABLE (&nn_cuda_nccl_table)
#else
#define NCCL_TABLE NULL
#endif

static nn_cuda_host_error_fn host_error;

nn_status nn_error(nn_status s, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* the module links with -Bsymbolic: &nn_error here is this function, and
     * forwarding to itself would never end */
    if (host_error && host_error != nn_error)
        return host_error(s, "%s", msg);
    return s;
}

const nn_cuda_module *nn_cuda_module_open(nn_cuda_host_error_fn err);

const nn_cuda_module *nn_cuda_module_open(nn_cuda_host_error_fn err)
{
    static const nn_cuda_module m = {&nn_cuda_backend, nn_cuda_present, nn_cuda_select_device, NCCL_TABLE};
    host_error = err;
    return &m;
}
