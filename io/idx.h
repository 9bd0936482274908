/* IDX files (the MNIST / Fashion-MNIST format), gzipped or not: a 4-byte
 * magic 0x00 0x00 <type> <ndim>, ndim big-endian u32 dimensions, then the
 * row-major data. Only unsigned bytes (type 0x08) are supported: images come
 * back as N x 28 x 28 uint8, labels as N uint8. This module checks the file
 * format only; label ranges and image/label pairing are the data set's job. */
#ifndef NN_IDX_H
#define NN_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define NN_IDX_MAX_DIMS 4
#define NN_IDX_UBYTE 0x08
/* Largest data section accepted (2^31 - 1 bytes): a forged header beyond it
 * is rejected before anything is allocated. */
#define NN_IDX_MAX_BYTES ((size_t)0x7fffffff)

typedef struct nn_idx {
    int dtype;                  /* NN_IDX_UBYTE */
    int ndim;                   /* 1..NN_IDX_MAX_DIMS */
    int dims[NN_IDX_MAX_DIMS];  /* dims[0..ndim-1], each > 0; the rest 1 */
    size_t size;                /* bytes of data = product of dims */
    uint8_t *data;              /* malloc'd, owned by the caller: nn_idx_free */
} nn_idx;

/* Reads a whole IDX file through zlib (plain files work too). On success *out
 * holds the data; on failure *out is zeroed and nothing is left allocated.
 * Errors: NN_E_IO (cannot open/read, with strerror), NN_E_FORMAT (bad magic,
 * unknown type, bad dims, size over NN_IDX_MAX_BYTES, truncated data,
 * trailing bytes, corrupt gzip stream), NN_E_UNSUPPORTED (a valid IDX
 * type other than unsigned byte), NN_E_NOMEM. Messages name the file.
 * Memory grows with the data actually present, so a forged header cannot
 * trigger a large allocation on a small file. */
nn_status nn_idx_load(const char *path, nn_idx *out);

/* Frees x->data and zeroes *x; NULL and zeroed structs are fine. */
void nn_idx_free(nn_idx *x);

#endif
