/* The one place that knows which backends were built. The CUDA backend is a
 * separate module (libconvnet_cuda.so, cuda/module.h) loaded on first use, so
 * libconvnet itself never needs the CUDA runtime. */
#define _GNU_SOURCE /* dladdr */
#include "core/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "core/defaults.h"
#include "cuda/module.h"

const char *nn_switches_describe(char *buf, size_t n)
{
    size_t used = 0;
    if (n) buf[0] = 0;
#define NN_DESCRIBE(name)                                                                               \
    if (getenv(name) && used < n) {                                                                     \
        int w = snprintf(buf + used, n - used, "%s%s=%s", used ? " " : "", name, getenv(name));        \
        used += w > 0 ? (size_t)w : 0;                                                                  \
    }
    NN_SWITCHES(NN_DESCRIBE)
#undef NN_DESCRIBE
    return buf;
}

#if NN_HAVE_CUDA
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t cuda_once = PTHREAD_ONCE_INIT;
static const nn_cuda_module *cuda_mod;
static char cuda_why[768]; /* why loading failed, for nn_backend_need */

/* DIR/REL into out, where DIR is the folder of `file` ("" when it has none) */
static void path_near(char *out, size_t len, const char *file, const char *rel)
{
    const char *slash = strrchr(file, '/');
    if (slash) snprintf(out, len, "%.*s/%s", (int)(slash - file), file, rel);
}

/* The module file: the first that exists of the module beside this library
 * (an installed libconvnet.so), the build tree's seen from the program
 * (build/X/prog -> build/cuda/, so a build tree copied elsewhere still finds
 * it), the installed one and the build tree's where it was built; into out
 * ("" when none exists: the loader's own search then). */
static void module_file(char *out, size_t len)
{
    char near_lib[4096] = "", near_exe[4096] = "", exe[4096];
    Dl_info info;
    if (dladdr((void *)module_file, &info) && info.dli_fname)
        path_near(near_lib, sizeof near_lib, info.dli_fname, NN_CUDA_MODULE_NAME);
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        path_near(near_exe, sizeof near_exe, exe, "../cuda/" NN_CUDA_MODULE_NAME);
    }
    const char *places[] = {near_lib, near_exe, NN_CUDA_MODULE_INSTALLED, NN_CUDA_MODULE_BUILT};
    out[0] = '\0';
    for (size_t i = 0; i < sizeof places / sizeof *places; i++)
        if (*places[i] && access(places[i], F_OK) == 0) {
            snprintf(out, len, "%s", places[i]);
            return;
        }
}

/* CONVNET_CUDA_MODULE if set, else module_file(), else the loader's search
 * (LD_LIBRARY_PATH, ld.so.cache). A file that exists but does not load (a
 * library it needs is missing, say) is reported as such, never passed over
 * for another build's module, which would both hide the reason and run
 * other code. */
static void *cuda_dlopen(char *why, size_t len)
{
    char found[4096];
    const char *env = getenv("CONVNET_CUDA_MODULE"), *path = env && *env ? env : NULL;
    if (!path) module_file(found, sizeof found), path = *found ? found : NULL;
    void *h = dlopen(path ? path : NN_CUDA_MODULE_NAME, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        if (!e) e = "not found";
        /* the loader names the module only when the module itself is bad, not a library it needs */
        if (path && !strstr(e, path)) snprintf(why, len, "%.300s: %s", path, e);
        else snprintf(why, len, "%s", e);
    }
    return h;
}

static void cuda_load(void)
{
    char why[512];
    void *h = cuda_dlopen(why, sizeof why);
    if (!h) {
        snprintf(cuda_why, sizeof cuda_why, "the CUDA backend module %s could not be loaded (%s; "
                 "CONVNET_CUDA_MODULE may name it)", NN_CUDA_MODULE_NAME, why);
        return;
    }
    nn_cuda_module_open_fn open = (nn_cuda_module_open_fn)dlsym(h, NN_CUDA_MODULE_ENTRY);
    if (!open) {
        snprintf(cuda_why, sizeof cuda_why, "%s has no %s: not a convnet CUDA module",
                 NN_CUDA_MODULE_NAME, NN_CUDA_MODULE_ENTRY);
        return;
    }
    cuda_mod = open(nn_error);
}

static const nn_cuda_module *cuda_module(void)
{
    pthread_once(&cuda_once, cuda_load);
    return cuda_mod;
}
#endif

const nn_cuda_module *nn_cuda_module_get(void)
{
#if NN_HAVE_CUDA
    return cuda_module();
#else
    return NULL;
#endif
}

const nn_backend *nn_backend_get(nn_device d)
{
    switch (d) {
    case NN_CPU: return &nn_cpu_backend;
#if NN_HAVE_CUDA
    case NN_CUDA: return cuda_module() ? cuda_module()->backend : NULL;
#endif
    default: return NULL;
    }
}

bool nn_device_available(nn_device d)
{
#if NN_HAVE_CUDA
    if (d == NN_CUDA) return cuda_module() && cuda_module()->present();
#endif
    return d == NN_CPU;
}

static const struct {
    const char *name, *op;
} kernels[NN_K_COUNT] = {
#define NN_KERNEL(op, ret, name, args) {#name, #op},
#include "core/backend_slots.h"
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
#include "core/backend_slots.h"
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
#include "core/backend_slots.h"
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
#if NN_HAVE_CUDA
    if (d == NN_CUDA && !nn_backend_get(d)) return nn_error(NN_E_DEVICE, "%s: %s", who, cuda_why);
#endif
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
