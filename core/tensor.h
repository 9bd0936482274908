/* Tensors: float32 data or int32 labels, up to 4-D (N, C, H, W), contiguous
 * row-major, living on one device. The struct is transparent so kernels and
 * users can read shape and data directly.
 *
 * Ownership: a tensor made by nn_tensor_new/_from/... is owned by the caller
 * and released with nn_tensor_free (which also frees its grad; a grad that is
 * a view into a parameter list's gradient block keeps its data). A tensor
 * returned by an op (nn_conv2d, ...) lives in its nn_ctx's arena: do not free
 * it; it is invalid after nn_ctx_reset or nn_ctx_free. */
#ifndef NN_TENSOR_H
#define NN_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"
#include "core/status.h"

#define NN_MAX_DIMS 4

typedef enum nn_dtype { NN_F32 = 0, NN_I32 = 1 } nn_dtype;
typedef enum nn_device { NN_CPU = 0, NN_CUDA = 1, NN_NDEVICES = 2 } nn_device;

struct nn_node;

typedef struct nn_tensor {
    int ndim;
    int shape[NN_MAX_DIMS];   /* shape[0..ndim-1]; the rest are 1 */
    size_t numel;             /* product of the shape */
    nn_dtype dtype;
    nn_device device;
    void *data;               /* numel elements of dtype on `device` */
    struct nn_tensor *grad;   /* same shape, F32, same device; NULL until needed */
    bool requires_grad;       /* a leaf whose gradient the user wants */
    bool owned;               /* true: heap tensor freed by nn_tensor_free */
    bool view;                /* data lies in another allocation (a gradient block,
                                 core/params.h): nn_tensor_free frees the struct only */
    struct nn_node *node;     /* the op that produced it (NULL for leaves) */
    const char *name;         /* optional, not owned (e.g. "stage1.0.weight") */
} nn_tensor;

static inline float *nn_f32(const nn_tensor *t) { return (float *)t->data; }
static inline int32_t *nn_i32(const nn_tensor *t) { return (int32_t *)t->data; }
static inline size_t nn_dtype_size(nn_dtype d) { (void)d; return 4; }
static inline size_t nn_tensor_bytes(const nn_tensor *t) { return t->numel * nn_dtype_size(t->dtype); }

const char *nn_device_name(nn_device d);          /* "cpu", "cuda" */
nn_status nn_device_parse(const char *s, nn_device *out);
bool nn_device_available(nn_device d);            /* built and a device present */

/* "2x3x4x4" into buf (for messages); returns buf. */
const char *nn_shape_str(const nn_tensor *t, char *buf, size_t n);
bool nn_same_shape(const nn_tensor *a, const nn_tensor *b);

/* Heap tensors, zero-filled. *out is NULL on failure. */
nn_status nn_tensor_new(nn_tensor **out, nn_dtype dt, nn_device dev, int ndim, const int *shape);
nn_status nn_tensor_new4(nn_tensor **out, nn_dtype dt, nn_device dev, int n, int c, int h, int w);
/* Copies `data` (host memory, numel elements of dt) into a new tensor on dev. */
nn_status nn_tensor_from(nn_tensor **out, nn_dtype dt, nn_device dev, int ndim, const int *shape,
                         const void *data);
void nn_tensor_free(nn_tensor *t);

/* Gives a heap tensor a gradient buffer (zeros) and marks it requires_grad. */
nn_status nn_tensor_require_grad(nn_tensor *t);
/* Zeroes t->grad if present. */
nn_status nn_tensor_zero_grad(nn_tensor *t);

/* Fill in place on any device. Random fills draw from rng (advancing it), with
 * the same bits on every device. */
nn_status nn_tensor_fill(nn_tensor *t, float v);
nn_status nn_tensor_uniform(nn_tensor *t, nn_rng *rng, float lo, float hi);
nn_status nn_tensor_normal(nn_tensor *t, nn_rng *rng, float mean, float std);

/* Copies between any two devices; shapes (numel) and dtypes must match. */
nn_status nn_tensor_copy(nn_tensor *dst, const nn_tensor *src);
/* Host<->tensor copies of numel elements. */
nn_status nn_tensor_read(const nn_tensor *t, void *host);
nn_status nn_tensor_write(nn_tensor *t, const void *host);
/* A new heap tensor holding src's data on `dev` (no grad). */
nn_status nn_tensor_to(nn_tensor **out, const nn_tensor *src, nn_device dev);

#endif
