/* The one place that knows which backends were built. */
#include "backend.h"

#include <string.h>

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

static const struct {
    const char *name, *op;
} kernels[NN_K_COUNT] = {
#define NN_KERNEL(op, ret, name, args) {#name, #op},
#include "backend_slots.h"
#undef NN_KERNEL
};

const char *nn_kernel_name(nn_kernel k) { return k < NN_K_COUNT ? kernels[k].name : "?"; }
const char *nn_kernel_op(nn_kernel k) { return k < NN_K_COUNT ? kernels[k].op : "?"; }

bool nn_backend_has(const nn_backend *be, nn_kernel k)
{
    /* a switch over the typed slots: no cast between function pointer types */
    switch (k) {
#define NN_KERNEL(op, ret, name, args) \
    case NN_K_##name: return be->name != NULL;
#include "backend_slots.h"
#undef NN_KERNEL
    case NN_K_COUNT: break;
    }
    return false;
}

nn_status nn_backend_supports(const nn_backend *be, const char *op)
{
    for (int k = 0; k < NN_K_COUNT; k++)
        if (strcmp(kernels[k].op, op) == 0 && !nn_backend_has(be, (nn_kernel)k))
            return nn_error(NN_E_UNSUPPORTED, "%s: the %s backend has no %s kernel", op, be->name,
                            kernels[k].name);
    return NN_OK;
}

/* This build's slot list, to compare a table's with. */
static const char layout[] =
#define NN_KERNEL NN_KERNEL_LAYOUT
#include "backend_slots.h"
#undef NN_KERNEL
    ;

nn_status nn_backend_check(const nn_backend *be)
{
    if (!be->layout || strcmp(be->layout, layout) != 0)
        return nn_error(NN_E_UNSUPPORTED,
                        "the %s backend table was compiled from another slot list than this build's "
                        "(core/backend_slots.h): a stale object file; rebuild it (touch cuda/*.cu)",
                        be->name);
    for (int k = 0; k < NN_K_COUNT; k++)
        if (!nn_backend_has(be, (nn_kernel)k))
            return nn_error(NN_E_UNSUPPORTED, "the %s backend is incomplete: its %s slot (%s) is NULL",
                            be->name, kernels[k].name, kernels[k].op);
    return NN_OK;
}

nn_status nn_backend_open(nn_device d, const char *who, const nn_backend **out)
{
    *out = NULL;
    if (!nn_backend_get(d))
        return nn_error(NN_E_DEVICE, "%s: the %s backend was not built (configure with -Dcuda=enabled)", who,
                        nn_device_name(d));
    if (!nn_device_available(d))
        return nn_error(NN_E_DEVICE, "%s: no %s device is present on this machine", who, nn_device_name(d));
    /* registration: a table with a NULL slot is refused whole, by name,
     * rather than crashing at the first call through that slot */
    if (nn_backend_check(nn_backend_get(d)) != NN_OK) {
        char why[200];
        snprintf(why, sizeof why, "%s", nn_errmsg());
        return nn_error(NN_E_UNSUPPORTED, "%s: %s", who, why);
    }
    *out = nn_backend_get(d);
    return NN_OK;
}

const nn_backend *nn_backend_need(nn_device d, const char *who)
{
    const nn_backend *be = NULL;
    nn_backend_open(d, who, &be);
    return be;
}
