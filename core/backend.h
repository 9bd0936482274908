/* The backend interface: one table of typed kernels per device. Ops (ops/<name>.c)
 * validate shapes and wire autograd, then call the kernels of the device their
 * tensors live on through this table; only core/backend.c knows which
 * backends were built. Kernels take raw device pointers. The slots and their
 * signatures are listed once, in core/backend_slots.h.
 *
 * Conventions for every kernel:
 *  - forward kernels overwrite their outputs;
 *  - backward kernels ACCUMULATE (+=) into dx/dw/db, any of which may be NULL
 *    when that gradient is not wanted; this is how autograd sums fan-out;
 *  - they return NN_OK or a status with a message (nn_error). */
#ifndef NN_BACKEND_H
#define NN_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/step_vars.h"
#include "core/tensor.h"

typedef struct nn_conv2d_geom {
    int n, c, h, w;           /* input (N, C, H, W) */
    int oc, kh, kw;           /* weight (oc, c/groups, kh, kw) */
    int sh, sw, ph, pw;       /* stride, zero padding */
    int groups;
    int oh, ow;               /* output (N, oc, oh, ow) */
    int relu;                 /* forward: y = max(0, conv + b) (a fused ReLU; see nn_conv2d_relu) */
} nn_conv2d_geom;

typedef struct nn_lrn_geom {
    int n, c, h, w;
    int size;                 /* window across channels: i - size/2 .. i + size/2 */
    float alpha, beta, k;     /* paper's convention: alpha NOT divided by size */
} nn_lrn_geom;

typedef struct nn_pool_geom {
    int n, c, h, w;
    int kh, kw, sh, sw, ph, pw;
    int oh, ow;
} nn_pool_geom;

typedef struct nn_linear_geom {
    int n, in, out;           /* x (n, in), w (out, in), y (n, out) */
    int relu;                 /* forward: y = max(0, x w^T + b) (a fused ReLU; see nn_linear_relu) */
} nn_linear_geom;

/* A batch built from a byte data set (io/sample.h has the formula): sample k
 * is image order[k], at position first + k of epoch `epoch` (its augmentation). */
typedef struct nn_u8_batch_geom {
    int n;                    /* samples: x (n, c, size, size), y (n) */
    int c, h, w;              /* each image c x h x w bytes */
    int size;
    int augment, epoch, first;
    uint64_t seed;
    float ry, rx;             /* h / size, w / size */
    float inv, off;           /* x = v * inv - off */
} nn_u8_batch_geom;

/* One slot per line of core/backend_slots.h, in its order. */
typedef struct nn_backend {
    const char *name;
    nn_device device;
    /* The slot list the table was compiled from, as one string
     * (NN_KERNEL_LAYOUT): registration compares it with this build's, so a
     * stale object file (nvcc objects are not rebuilt when a header changes
     * under meson 1.0) is refused instead of read with the wrong layout.
     * These three fields come first so their offsets never move. */
    const char *layout;
#define NN_KERNEL(op, ret, name, args) ret(*name) args;
#include "core/backend_slots.h"
#undef NN_KERNEL
} nn_backend;

/* The slot list as one string (for nn_backend.layout): expand the list with
 * #define NN_KERNEL NN_KERNEL_LAYOUT. */
#define NN_KERNEL_LAYOUT(op, ret, name, args) #op " " #ret " " #name #args ";"

/* Kernel ids, NN_K_<name>, in slot order; NN_K_COUNT of them. */
typedef enum nn_kernel {
#define NN_KERNEL(op, ret, name, args) NN_K_##name,
#include "core/backend_slots.h"
#undef NN_KERNEL
    NN_K_COUNT
} nn_kernel;

/* The CPU kernels (core/cpu_backend.c and ops/<name>.c define them). */
#define NN_KERNEL(op, ret, name, args) ret nn_cpu_##name args;
#include "core/backend_slots.h"
#undef NN_KERNEL

/* The table for a device, or NULL when that backend was not built. */
const nn_backend *nn_backend_get(nn_device d);
/* The table for a device, or NULL with a message when unavailable, or when
 * its table fails nn_backend_check (a backend is registered only whole). */
const nn_backend *nn_backend_need(nn_device d, const char *who);
/* The same as a status: NN_E_DEVICE (not built, no device) or NN_E_UNSUPPORTED
 * (incomplete table); *out NULL then. */
nn_status nn_backend_open(nn_device d, const char *who, const nn_backend **out);

/* A kernel's name ("conv2d_forward") and the op it serves ("conv2d"). */
const char *nn_kernel_name(nn_kernel k);
const char *nn_kernel_op(nn_kernel k);
/* Whether be has kernel k (its slot is not NULL). */
bool nn_backend_has(const nn_backend *be, nn_kernel k);
/* NN_OK when be has every kernel of op (as named in core/backend_slots.h;
 * an op with no kernel of its own, such as add, is always supported), else
 * NN_E_UNSUPPORTED with a message naming the op, the device and the kernel. */
nn_status nn_backend_supports(const nn_backend *be, const char *op);
/* NN_OK when be was compiled from this build's slot list and no slot is
 * NULL, else NN_E_UNSUPPORTED naming the first NULL slot (or the stale table). */
nn_status nn_backend_check(const nn_backend *be);

extern const nn_backend nn_cpu_backend;

/* The environment switches that are set (core/defaults.h's NN_SWITCHES),
 * as "NAME=value NAME=value" in buf (truncated to n; empty when none);
 * returns buf. */
const char *nn_switches_describe(char *buf, size_t n);

#endif
