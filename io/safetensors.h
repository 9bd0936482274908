/* The safetensors format: an 8-byte little-endian u64 header length N, N
 * bytes of JSON ({"name": {"dtype": "F32", "shape": [..], "data_offsets":
 * [begin, end]}, ..., "__metadata__": {string: string}}), then the raw
 * little-endian tensor bytes; offsets are relative to the data section.
 * Writing is atomic (temp file, fsync, rename); reading validates the whole
 * file before handing anything out. JSON goes through cJSON both ways. */
#ifndef NN_SAFETENSORS_H
#define NN_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

#define NN_ST_MAX_DIMS 8
/* Largest JSON header read (the reference implementation's limit). */
#define NN_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

typedef enum nn_st_dtype {
    NN_ST_BOOL, NN_ST_U8, NN_ST_I8, NN_ST_F8_E4M3, NN_ST_F8_E5M2,
    NN_ST_I16, NN_ST_U16, NN_ST_F16, NN_ST_BF16,
    NN_ST_I32, NN_ST_U32, NN_ST_F32,
    NN_ST_I64, NN_ST_U64, NN_ST_F64,
    NN_ST_NDTYPES
} nn_st_dtype;

const char *nn_st_dtype_name(nn_st_dtype d);  /* "F32"; "?" if out of range */
size_t nn_st_dtype_size(nn_st_dtype d);       /* bytes per element; 0 if out of range */
/* Parses "F32" etc.; false if unknown. */
bool nn_st_dtype_parse(const char *s, nn_st_dtype *out);

/* One tensor. From the reader: name and data point into the nn_st_file and are
 * valid until nn_st_close; data is aligned to 16 bytes plus the tensor's
 * offset (aligned to its dtype in files written here; copy with memcpy when
 * reading foreign files). */
typedef struct nn_st_entry {
    const char *name;
    nn_st_dtype dtype;
    int ndim;                        /* 0 (a scalar) .. NN_ST_MAX_DIMS */
    int64_t shape[NN_ST_MAX_DIMS];   /* shape[0..ndim-1] */
    size_t numel;                    /* product of the shape */
    size_t nbytes;                   /* numel * dtype size */
    size_t offset;                   /* begin within the data section */
    const void *data;
} nn_st_entry;

/* ---- writing ---------------------------------------------------------- */

typedef struct nn_st_writer nn_st_writer;  /* opaque */

nn_status nn_st_writer_new(nn_st_writer **out);
void nn_st_writer_free(nn_st_writer *w);

/* Adds a tensor from host memory; names are copied, data is NOT: it must stay
 * valid until nn_st_write returns. Names must be unique, non-empty and not
 * "__metadata__". Shapes: 0..NN_ST_MAX_DIMS dims, each >= 0. */
nn_status nn_st_writer_add(nn_st_writer *w, const char *name, nn_st_dtype dt, int ndim,
                           const int64_t *shape, const void *data);
/* Adds an nn_tensor (F32 -> "F32", I32 -> "I32"). A CPU tensor's data is
 * referenced (keep it alive and unchanged until nn_st_write); a tensor on
 * another device is copied to a writer-owned host buffer now. */
nn_status nn_st_writer_add_tensor(nn_st_writer *w, const char *name, const nn_tensor *t);
/* Sets a "__metadata__" string (key and value copied; a repeated key replaces). */
nn_status nn_st_writer_meta(nn_st_writer *w, const char *key, const char *value);

/* Writes the file atomically: "path.tmp.<pid>", fflush, fsync, rename over
 * path, fsync of the directory. On failure the temp file is removed and an
 * existing file at path is untouched. Tensors are laid out by decreasing
 * dtype size (then in the order added), so each is aligned to its dtype;
 * the header is padded with spaces so the data starts 8-byte aligned. */
nn_status nn_st_write(const nn_st_writer *w, const char *path);

/* ---- reading ---------------------------------------------------------- */

typedef struct nn_st_file nn_st_file;  /* opaque; owns all data it hands out */

/* Reads and validates the whole file: header length (>= 2, <= NN_ST_MAX_HEADER,
 * within the file), JSON object, known dtypes, shapes, offsets inside the data
 * section, size == numel * dtype size, no overlaps, no holes, no trailing
 * bytes, unique names, string metadata. *out is NULL on failure; errors
 * (NN_E_IO, NN_E_FORMAT, NN_E_NOMEM) name the file and the problem. */
nn_status nn_st_open(const char *path, nn_st_file **out);
void nn_st_close(nn_st_file *f);

const char *nn_st_path(const nn_st_file *f);
/* Tensors in header order. */
int nn_st_count(const nn_st_file *f);
const nn_st_entry *nn_st_entry_at(const nn_st_file *f, int i);  /* NULL if out of range */
const nn_st_entry *nn_st_find(const nn_st_file *f, const char *name);  /* NULL if absent */

/* Metadata: value for key, or NULL. Iteration in header order. */
const char *nn_st_meta(const nn_st_file *f, const char *key);
int nn_st_meta_count(const nn_st_file *f);
bool nn_st_meta_at(const nn_st_file *f, int i, const char **key, const char **value);

/* Copies tensor `name` into dst (any device) after checking that it exists,
 * that its dtype matches dst's (F32 <-> NN_F32, I32 <-> NN_I32) and that the
 * shapes are identical; errors name the file, the tensor and both shapes.
 * nn_st_read_f32 additionally requires dst to be F32. */
nn_status nn_st_read_tensor(const nn_st_file *f, const char *name, nn_tensor *dst);
nn_status nn_st_read_f32(const nn_st_file *f, const char *name, nn_tensor *dst);

#endif
