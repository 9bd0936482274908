/* The one place that knows which backends were built. */
#include "core/backend.h"

#include "config.h"

#if NN_HAVE_CUDA
extern const nn_backend nn_cuda_backend;
bool nn_cuda_present(void);
#endif

const nn_backend *nn_backend_get(nn_device d)
{
    switch (d) {
    case NN_CPU: return &nn_cpu_backend;
#if NN_HAVE_CUDA
    case NN_CUDA: return &nn_cuda_backend;
#endif
    default: return NULL;
    }
}

bool nn_device_available(nn_device d)
{
#if NN_HAVE_CUDA
    if (d == NN_CUDA) return nn_cuda_present();
#endif
    return d == NN_CPU;
}

const nn_backend *nn_backend_need(nn_device d, const char *who)
{
    if (!nn_backend_get(d)) {
        nn_error(NN_E_DEVICE, "%s: the %s backend was not built (configure with -Dcuda=enabled)",
                 who, nn_device_name(d));
        return NULL;
    }
    if (!nn_device_available(d)) {
        nn_error(NN_E_DEVICE, "%s: no %s device is present on this machine", who, nn_device_name(d));
        return NULL;
    }
    return nn_backend_get(d);
}
