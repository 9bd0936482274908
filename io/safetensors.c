/* safetensors writer (atomic: temp file + fsync + rename) and validating
 * reader. The JSON header is built and parsed with cJSON; tensor bytes are
 * copied as they are (little-endian hosts only). */
#include "io/safetensors.h"

#include "io/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

/* Integers above 2^53 do not survive a trip through a JSON double. */
#define ST_MAX_JSON_INT ((uint64_t)1 << 53)

static const struct {
    const char *name;
    size_t size;
} st_dtypes[NN_ST_NDTYPES] = {
    [NN_ST_BOOL] = {"BOOL", 1},       [NN_ST_U8] = {"U8", 1},   [NN_ST_I8] = {"I8", 1},
    [NN_ST_F8_E4M3] = {"F8_E4M3", 1}, [NN_ST_F8_E5M2] = {"F8_E5M2", 1},
    [NN_ST_I16] = {"I16", 2},         [NN_ST_U16] = {"U16", 2}, [NN_ST_F16] = {"F16", 2},
    [NN_ST_BF16] = {"BF16", 2},       [NN_ST_I32] = {"I32", 4}, [NN_ST_U32] = {"U32", 4},
    [NN_ST_F32] = {"F32", 4},         [NN_ST_I64] = {"I64", 8}, [NN_ST_U64] = {"U64", 8},
    [NN_ST_F64] = {"F64", 8},
};

const char *nn_st_dtype_name(nn_st_dtype d)
{
    return (unsigned)d < NN_ST_NDTYPES ? st_dtypes[d].name : "?";
}

size_t nn_st_dtype_size(nn_st_dtype d)
{
    return (unsigned)d < NN_ST_NDTYPES ? st_dtypes[d].size : 0;
}

bool nn_st_dtype_parse(const char *s, nn_st_dtype *out)
{
    for (int i = 0; s && i < NN_ST_NDTYPES; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = (nn_st_dtype)i;
            return true;
        }
    }
    return false;
}

static bool host_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* "2x3x4", "[]" for a scalar. */
static const char *shape_str64(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = '\0';
    if (ndim == 0) snprintf(buf, n, "[] (scalar)");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? "x%lld" : "%lld", (long long)shape[i]);
    return buf;
}

/* numel and bytes of a shape, overflow-checked; false on overflow. */
static bool shape_bytes(int ndim, const int64_t *shape, size_t esize, size_t *numel, size_t *bytes)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && n > SIZE_MAX / d) return false;
        n *= d;
    }
    if (n != 0 && n > SIZE_MAX / esize) return false;
    *numel = (size_t)n;
    *bytes = (size_t)n * esize;
    return true;
}

/* ======================================================================= */
/* Writing                                                                 */
/* ======================================================================= */

typedef struct st_wentry {
    char *name;
    nn_st_dtype dtype;
    int ndim;
    int64_t shape[NN_ST_MAX_DIMS];
    size_t nbytes;
    const void *data;
    void *owned; /* host copy of a device tensor, or NULL */
} st_wentry;

struct nn_st_writer {
    st_wentry *e;
    int n, cap;
    char **mkey, **mval;
    int nmeta, capmeta;
};

nn_status nn_st_writer_new(nn_st_writer **out)
{
    if (!out) return nn_error(NN_E_ARG, "safetensors: NULL writer pointer");
    *out = calloc(1, sizeof **out);
    if (!*out) return nn_error(NN_E_NOMEM, "safetensors: out of memory for a writer");
    return NN_OK;
}

void nn_st_writer_free(nn_st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->e[i].name);
        free(w->e[i].owned);
    }
    for (int i = 0; i < w->nmeta; i++) {
        free(w->mkey[i]);
        free(w->mval[i]);
    }
    free(w->e);
    free(w->mkey);
    free(w->mval);
    free(w);
}

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* Checks and appends; takes ownership of `owned` (freed on failure too). */
static nn_status writer_add(nn_st_writer *w, const char *name, nn_st_dtype dt, int ndim,
                            const int64_t *shape, const void *data, void *owned)
{
    nn_status s = NN_OK;
    char sh[160];
    size_t numel = 0, nbytes = 0;
    if (!w || !name) {
        s = nn_error(NN_E_ARG, "safetensors: writer_add: NULL writer or name");
    } else if (!*name || strcmp(name, "__metadata__") == 0) {
        s = nn_error(NN_E_ARG, "safetensors: tensor name '%s' is reserved or empty", name);
    } else if ((unsigned)dt >= NN_ST_NDTYPES) {
        s = nn_error(NN_E_ARG, "safetensors: tensor '%s': unknown dtype %d", name, (int)dt);
    } else if (ndim < 0 || ndim > NN_ST_MAX_DIMS || (ndim > 0 && !shape)) {
        s = nn_error(NN_E_ARG, "safetensors: tensor '%s': %d dimensions (0 to %d supported)", name,
                     ndim, NN_ST_MAX_DIMS);
    }
    for (int i = 0; s == NN_OK && i < ndim; i++)
        if (shape[i] < 0 || (uint64_t)shape[i] > ST_MAX_JSON_INT)
            s = nn_error(NN_E_ARG, "safetensors: tensor '%s': dimension %d is %lld", name, i,
                         (long long)shape[i]);
    if (s == NN_OK && (!shape_bytes(ndim, shape, st_dtypes[dt].size, &numel, &nbytes) ||
                       nbytes > ST_MAX_JSON_INT))
        s = nn_error(NN_E_ARG, "safetensors: tensor '%s': shape %s is too large", name,
                     shape_str64(ndim, shape, sh, sizeof sh));
    if (s == NN_OK && nbytes > 0 && !data)
        s = nn_error(NN_E_ARG, "safetensors: tensor '%s': NULL data", name);
    for (int i = 0; s == NN_OK && i < w->n; i++)
        if (strcmp(w->e[i].name, name) == 0)
            s = nn_error(NN_E_ARG, "safetensors: tensor '%s' added twice", name);
    if (s == NN_OK && w->n == w->cap) {
        int ncap = w->cap ? 2 * w->cap : 16;
        st_wentry *p = realloc(w->e, (size_t)ncap * sizeof *p);
        if (!p) s = nn_error(NN_E_NOMEM, "safetensors: out of memory adding '%s'", name);
        else {
            w->e = p;
            w->cap = ncap;
        }
    }
    char *nm = s == NN_OK ? dupstr(name) : NULL;
    if (s == NN_OK && !nm) s = nn_error(NN_E_NOMEM, "safetensors: out of memory adding '%s'", name);
    if (s != NN_OK) {
        free(owned);
        return s;
    }
    st_wentry *e = &w->e[w->n++];
    memset(e, 0, sizeof *e);
    e->name = nm;
    e->dtype = dt;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->nbytes = nbytes;
    e->data = data;
    e->owned = owned;
    return NN_OK;
}

nn_status nn_st_writer_add(nn_st_writer *w, const char *name, nn_st_dtype dt, int ndim,
                           const int64_t *shape, const void *data)
{
    return writer_add(w, name, dt, ndim, shape, data, NULL);
}

nn_status nn_st_writer_add_tensor(nn_st_writer *w, const char *name, const nn_tensor *t)
{
    if (!t) return nn_error(NN_E_ARG, "safetensors: tensor '%s' is NULL", name ? name : "?");
    nn_st_dtype dt;
    if (t->dtype == NN_F32) dt = NN_ST_F32;
    else if (t->dtype == NN_I32) dt = NN_ST_I32;
    else return nn_error(NN_E_ARG, "safetensors: tensor '%s': unsupported dtype", name ? name : "?");
    int64_t shape[NN_MAX_DIMS];
    for (int i = 0; i < t->ndim && i < NN_MAX_DIMS; i++) shape[i] = t->shape[i];
    if (t->device == NN_CPU) return writer_add(w, name, dt, t->ndim, shape, t->data, NULL);
    size_t bytes = nn_tensor_bytes(t);
    void *host = malloc(bytes ? bytes : 1);
    if (!host)
        return nn_error(NN_E_NOMEM, "safetensors: out of memory copying '%s' (%zu bytes) to the host",
                        name ? name : "?", bytes);
    nn_status s = nn_tensor_read(t, host);
    if (s != NN_OK) {
        free(host);
        return s;
    }
    return writer_add(w, name, dt, t->ndim, shape, host, host);
}

nn_status nn_st_writer_meta(nn_st_writer *w, const char *key, const char *value)
{
    if (!w || !key || !value) return nn_error(NN_E_ARG, "safetensors: writer_meta: NULL argument");
    char *v = dupstr(value);
    if (!v) return nn_error(NN_E_NOMEM, "safetensors: out of memory for metadata '%s'", key);
    for (int i = 0; i < w->nmeta; i++) {
        if (strcmp(w->mkey[i], key) == 0) {
            free(w->mval[i]);
            w->mval[i] = v;
            return NN_OK;
        }
    }
    if (w->nmeta == w->capmeta) {
        int ncap = w->capmeta ? 2 * w->capmeta : 8;
        char **k = realloc(w->mkey, (size_t)ncap * sizeof *k);
        if (k) w->mkey = k;
        char **vv = k ? realloc(w->mval, (size_t)ncap * sizeof *vv) : NULL;
        if (vv) w->mval = vv;
        if (!k || !vv) {
            free(v);
            return nn_error(NN_E_NOMEM, "safetensors: out of memory for metadata '%s'", key);
        }
        w->capmeta = ncap;
    }
    char *k = dupstr(key);
    if (!k) {
        free(v);
        return nn_error(NN_E_NOMEM, "safetensors: out of memory for metadata '%s'", key);
    }
    w->mkey[w->nmeta] = k;
    w->mval[w->nmeta] = v;
    w->nmeta++;
    return NN_OK;
}

/* Stable order: larger dtypes first, so every tensor sits at a multiple of its size. */
static void layout_order(const nn_st_writer *w, int *order)
{
    int k = 0;
    for (size_t sz = 8; sz >= 1; sz /= 2)
        for (int i = 0; i < w->n; i++)
            if (st_dtypes[w->e[i].dtype].size == sz) order[k++] = i;
    NN_ASSERT(k == w->n);
}

/* The header text, padded with spaces to a multiple of 8 bytes. */
static nn_status build_header(const nn_st_writer *w, const int *order, const char *path,
                              char **out, size_t *out_len)
{
    cJSON *root = cJSON_CreateObject();
    bool ok = root != NULL;
    if (ok && w->nmeta > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        ok = meta != NULL;
        for (int i = 0; ok && i < w->nmeta; i++)
            ok = cJSON_AddStringToObject(meta, w->mkey[i], w->mval[i]) != NULL;
    }
    uint64_t off = 0;
    for (int j = 0; ok && j < w->n; j++) {
        const st_wentry *e = &w->e[order[j]];
        cJSON *t = cJSON_AddObjectToObject(root, e->name);
        cJSON *shape = t ? cJSON_AddArrayToObject(t, "shape") : NULL;
        ok = t && cJSON_AddStringToObject(t, "dtype", st_dtypes[e->dtype].name) && shape;
        for (int i = 0; ok && i < e->ndim; i++) {
            cJSON *d = cJSON_CreateNumber((double)e->shape[i]);
            ok = d && cJSON_AddItemToArray(shape, d);
            if (d && !ok) cJSON_Delete(d);
        }
        cJSON *offs = ok ? cJSON_AddArrayToObject(t, "data_offsets") : NULL;
        ok = offs != NULL;
        uint64_t ends[2] = {off, off + e->nbytes};
        for (int i = 0; ok && i < 2; i++) {
            cJSON *d = cJSON_CreateNumber((double)ends[i]);
            ok = d && cJSON_AddItemToArray(offs, d);
            if (d && !ok) cJSON_Delete(d);
        }
        off += e->nbytes;
        if (off > ST_MAX_JSON_INT) {
            cJSON_Delete(root);
            return nn_error(NN_E_ARG, "%s: tensors total more than 2^53 bytes", path);
        }
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) return nn_error(NN_E_NOMEM, "%s: out of memory building the safetensors header", path);
    size_t n = strlen(text);
    size_t padded = (n + 7) / 8 * 8;
    char *buf = malloc(padded);
    if (!buf) {
        cJSON_free(text);
        return nn_error(NN_E_NOMEM, "%s: out of memory building the safetensors header", path);
    }
    memcpy(buf, text, n);
    memset(buf + n, ' ', padded - n);
    cJSON_free(text);
    *out = buf;
    *out_len = padded;
    return NN_OK;
}

typedef struct st_body {
    const nn_st_writer *w;
    const int *order;
    const char *header;
    size_t header_len;
} st_body;

static nn_status write_all(FILE *fp, const void *p, size_t n, const char *path, const char *what)
{
    if (n == 0) return NN_OK;
    errno = 0;
    if (fwrite(p, 1, n, fp) != n)
        return nn_error(NN_E_IO, "%s: write failed (%s): %s", path, what,
                        errno ? strerror(errno) : "short write");
    return NN_OK;
}

static nn_status write_body(FILE *fp, const char *path, void *user)
{
    const st_body *b = user;
    uint8_t len[8];
    uint64_t n = b->header_len;
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(n >> (8 * i));
    NN_TRY(write_all(fp, len, 8, path, "header length"));
    NN_TRY(write_all(fp, b->header, b->header_len, path, "header"));
    for (int j = 0; j < b->w->n; j++) {
        const st_wentry *e = &b->w->e[b->order[j]];
        NN_TRY(write_all(fp, e->data, e->nbytes, path, e->name));
    }
    return NN_OK;
}

nn_status nn_st_write(const nn_st_writer *w, const char *path)
{
    if (!w || !path || !*path) return nn_error(NN_E_ARG, "safetensors: write: NULL writer or path");
    if (!host_little_endian())
        return nn_error(NN_E_UNSUPPORTED, "%s: safetensors writing needs a little-endian host", path);
    int *order = malloc(((size_t)w->n + 1) * sizeof *order);
    if (!order) return nn_error(NN_E_NOMEM, "%s: out of memory", path);
    layout_order(w, order);
    st_body b = {w, order, NULL, 0};
    char *header = NULL;
    nn_status s = build_header(w, order, path, &header, &b.header_len);
    b.header = header;

    if (s == NN_OK) s = nn_write_atomic(path, write_body, &b);
    free(header);
    free(order);
    return s;
}

/* ======================================================================= */
/* Reading                                                                 */
/* ======================================================================= */

struct nn_st_file {
    char *path;
    cJSON *root;         /* names and metadata strings point into it */
    uint8_t *data;       /* the data section */
    size_t data_size;
    nn_st_entry *e;
    int n;
    const char **mkey, **mval;
    int nmeta;
};

void nn_st_close(nn_st_file *f)
{
    if (!f) return;
    free(f->path);
    cJSON_Delete(f->root);
    free(f->data);
    free(f->e);
    free(f->mkey);
    free(f->mval);
    free(f);
}

/* A JSON number that is a non-negative integer <= 2^53. */
static bool json_uint(const cJSON *it, uint64_t *out)
{
    if (!cJSON_IsNumber(it)) return false;
    double d = it->valuedouble;
    if (!(d >= 0.0 && d <= (double)ST_MAX_JSON_INT) || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

static nn_status parse_meta(nn_st_file *f, const cJSON *meta)
{
    if (!cJSON_IsObject(meta))
        return nn_error(NN_E_FORMAT, "%s: __metadata__ is not a JSON object", f->path);
    int n = cJSON_GetArraySize(meta);
    f->mkey = calloc((size_t)n + 1, sizeof *f->mkey);
    f->mval = calloc((size_t)n + 1, sizeof *f->mval);
    if (!f->mkey || !f->mval) return nn_error(NN_E_NOMEM, "%s: out of memory for metadata", f->path);
    const cJSON *it;
    cJSON_ArrayForEach(it, meta)
    {
        if (!cJSON_IsString(it))
            return nn_error(NN_E_FORMAT, "%s: __metadata__ value for '%s' is not a string", f->path,
                            it->string);
        f->mkey[f->nmeta] = it->string;
        f->mval[f->nmeta] = it->valuestring;
        f->nmeta++;
    }
    return NN_OK;
}

static nn_status parse_entry(nn_st_file *f, const cJSON *it, nn_st_entry *e)
{
    const char *p = f->path, *nm = it->string;
    char sh[160];
    if (!cJSON_IsObject(it)) return nn_error(NN_E_FORMAT, "%s: tensor '%s' is not a JSON object", p, nm);
    e->name = nm;
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(dt)) return nn_error(NN_E_FORMAT, "%s: tensor '%s' has no dtype string", p, nm);
    if (!nn_st_dtype_parse(dt->valuestring, &e->dtype))
        return nn_error(NN_E_FORMAT, "%s: tensor '%s' has unknown dtype \"%s\"", p, nm, dt->valuestring);
    if (!cJSON_IsArray(shape)) return nn_error(NN_E_FORMAT, "%s: tensor '%s' has no shape array", p, nm);
    int nd = cJSON_GetArraySize(shape);
    if (nd > NN_ST_MAX_DIMS)
        return nn_error(NN_E_FORMAT, "%s: tensor '%s' has %d dimensions (at most %d supported)", p, nm,
                        nd, NN_ST_MAX_DIMS);
    e->ndim = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape)
    {
        uint64_t v;
        if (!json_uint(d, &v))
            return nn_error(NN_E_FORMAT, "%s: tensor '%s': shape entry %d is not a non-negative integer",
                            p, nm, e->ndim);
        e->shape[e->ndim++] = (int64_t)v;
    }
    uint64_t be[2];
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !json_uint(cJSON_GetArrayItem(offs, 0), &be[0]) ||
        !json_uint(cJSON_GetArrayItem(offs, 1), &be[1]))
        return nn_error(NN_E_FORMAT,
                        "%s: tensor '%s': data_offsets must be [begin, end] non-negative integers", p, nm);
    if (be[0] > be[1] || be[1] > f->data_size)
        return nn_error(NN_E_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] outside the %zu-byte data section%s",
                        p, nm, (unsigned long long)be[0], (unsigned long long)be[1], f->data_size,
                        be[0] <= be[1] ? " (file truncated?)" : "");
    if (!shape_bytes(e->ndim, e->shape, st_dtypes[e->dtype].size, &e->numel, &e->nbytes))
        return nn_error(NN_E_FORMAT, "%s: tensor '%s': shape %s overflows", p, nm,
                        shape_str64(e->ndim, e->shape, sh, sizeof sh));
    if (e->nbytes != be[1] - be[0])
        return nn_error(NN_E_FORMAT,
                        "%s: tensor '%s': shape %s of %s needs %zu bytes but data_offsets [%llu, %llu] "
                        "span %llu",
                        p, nm, shape_str64(e->ndim, e->shape, sh, sizeof sh), dt->valuestring,
                        e->nbytes, (unsigned long long)be[0], (unsigned long long)be[1],
                        (unsigned long long)(be[1] - be[0]));
    e->offset = (size_t)be[0];
    return NN_OK;
}

static int cmp_offset(const void *a, const void *b)
{
    const nn_st_entry *x = *(const nn_st_entry *const *)a, *y = *(const nn_st_entry *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const nn_st_entry *const *)a)->name, (*(const nn_st_entry *const *)b)->name);
}

/* Unique names; tensors tile the data section exactly (no overlap, hole or tail). */
static nn_status check_layout(nn_st_file *f)
{
    if (f->n == 0) {
        if (f->data_size != 0)
            return nn_error(NN_E_FORMAT, "%s: %zu data bytes but no tensors", f->path, f->data_size);
        return NN_OK;
    }
    const nn_st_entry **ix = malloc((size_t)f->n * sizeof *ix);
    if (!ix) return nn_error(NN_E_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->n; i++) ix[i] = &f->e[i];
    nn_status s = NN_OK;
    qsort(ix, (size_t)f->n, sizeof *ix, cmp_name);
    for (int i = 1; i < f->n && s == NN_OK; i++)
        if (strcmp(ix[i - 1]->name, ix[i]->name) == 0)
            s = nn_error(NN_E_FORMAT, "%s: tensor '%s' appears twice in the header", f->path, ix[i]->name);
    qsort(ix, (size_t)f->n, sizeof *ix, cmp_offset);
    size_t at = 0;
    const char *prev = NULL;
    for (int i = 0; i < f->n && s == NN_OK; i++) {
        if (ix[i]->offset < at)
            s = nn_error(NN_E_FORMAT, "%s: tensors '%s' and '%s' overlap (bytes %zu..%zu)", f->path,
                         prev, ix[i]->name, ix[i]->offset, at);
        else if (ix[i]->offset > at)
            s = nn_error(NN_E_FORMAT, "%s: hole in the data section: bytes %zu..%zu belong to no tensor",
                         f->path, at, ix[i]->offset);
        at = ix[i]->offset + ix[i]->nbytes;
        prev = ix[i]->name;
    }
    if (s == NN_OK && at != f->data_size)
        s = nn_error(NN_E_FORMAT, "%s: %zu bytes after the last tensor's data", f->path, f->data_size - at);
    free(ix);
    return s;
}

static nn_status parse_header(nn_st_file *f, char *text, size_t n)
{
    const char *end = NULL;
    text[n] = '\0';
    if (memchr(text, '\0', n))
        return nn_error(NN_E_FORMAT, "%s: safetensors header contains a NUL byte", f->path);
    f->root = cJSON_ParseWithOpts(text, &end, 0);
    if (!f->root) {
        const char *at = cJSON_GetErrorPtr();
        size_t pos = at && at >= text && at <= text + n ? (size_t)(at - text) : 0;
        return nn_error(NN_E_FORMAT, "%s: safetensors header is not valid JSON (near byte %zu: \"%.24s\")",
                        f->path, pos, text + pos);
    }
    for (const char *c = end; c && *c; c++)
        if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r')
            return nn_error(NN_E_FORMAT, "%s: unexpected text after the JSON header at byte %zu", f->path,
                            (size_t)(c - text));
    if (!cJSON_IsObject(f->root))
        return nn_error(NN_E_FORMAT, "%s: safetensors header is not a JSON object", f->path);
    int count = cJSON_GetArraySize(f->root);
    f->e = calloc((size_t)count + 1, sizeof *f->e);
    if (!f->e) return nn_error(NN_E_NOMEM, "%s: out of memory for %d header entries", f->path, count);
    const cJSON *it;
    cJSON_ArrayForEach(it, f->root)
    {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (f->mkey) return nn_error(NN_E_FORMAT, "%s: __metadata__ appears twice", f->path);
            NN_TRY(parse_meta(f, it));
            continue;
        }
        NN_TRY(parse_entry(f, it, &f->e[f->n]));
        f->n++;
    }
    return check_layout(f);
}

static nn_status read_exact(FILE *fp, void *buf, size_t n, const nn_st_file *f, const char *what)
{
    errno = 0;
    if (fread(buf, 1, n, fp) == n) return NN_OK;
    if (ferror(fp))
        return nn_error(NN_E_IO, "%s: read error in the %s: %s", f->path, what,
                        errno ? strerror(errno) : "unknown");
    return nn_error(NN_E_FORMAT, "%s: truncated while reading the %s (file changed?)", f->path, what);
}

static nn_status open_file(nn_st_file *f, FILE *fp)
{
    struct stat st;
    if (fstat(fileno(fp), &st) != 0)
        return nn_error(NN_E_IO, "%s: cannot stat: %s", f->path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return nn_error(NN_E_IO, "%s: not a regular file", f->path);
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8)
        return nn_error(NN_E_FORMAT, "%s: %llu bytes, too short for a safetensors file", f->path,
                        (unsigned long long)size);
    uint8_t len[8];
    NN_TRY(read_exact(fp, len, 8, f, "header length"));
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | len[i];
    if (n < 2)
        return nn_error(NN_E_FORMAT, "%s: safetensors header length %llu is too small", f->path,
                        (unsigned long long)n);
    if (n > NN_ST_MAX_HEADER)
        return nn_error(NN_E_FORMAT, "%s: safetensors header length %llu is over the %llu-byte limit",
                        f->path, (unsigned long long)n, (unsigned long long)NN_ST_MAX_HEADER);
    if (n > size - 8)
        return nn_error(NN_E_FORMAT,
                        "%s: safetensors header length %llu is larger than the file (%llu bytes): "
                        "truncated or not a safetensors file",
                        f->path, (unsigned long long)n, (unsigned long long)size);
    f->data_size = (size_t)(size - 8 - n);
    char *text = malloc((size_t)n + 1);
    if (!text) return nn_error(NN_E_NOMEM, "%s: out of memory for a %llu-byte header", f->path,
                               (unsigned long long)n);
    nn_status s = read_exact(fp, text, (size_t)n, f, "header");
    if (s == NN_OK) s = parse_header(f, text, (size_t)n);
    free(text);
    if (s != NN_OK) return s;
    /* the header is valid, so the data size is the file's own size: safe to allocate */
    f->data = malloc(f->data_size ? f->data_size : 1);
    if (!f->data)
        return nn_error(NN_E_NOMEM, "%s: out of memory for %zu bytes of tensor data", f->path,
                        f->data_size);
    NN_TRY(read_exact(fp, f->data, f->data_size, f, "tensor data"));
    for (int i = 0; i < f->n; i++) f->e[i].data = f->data + f->e[i].offset;
    return NN_OK;
}

nn_status nn_st_open(const char *path, nn_st_file **out)
{
    if (!out) return nn_error(NN_E_ARG, "safetensors: open: NULL output");
    *out = NULL;
    if (!path) return nn_error(NN_E_ARG, "safetensors: open: NULL path");
    if (!host_little_endian())
        return nn_error(NN_E_UNSUPPORTED, "%s: safetensors reading needs a little-endian host", path);
    nn_st_file *f = calloc(1, sizeof *f);
    char *p = dupstr(path);
    if (!f || !p) {
        free(f);
        free(p);
        return nn_error(NN_E_NOMEM, "%s: out of memory", path);
    }
    f->path = p;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        nn_status s = nn_error(NN_E_IO, "%s: cannot open: %s", path, strerror(errno));
        nn_st_close(f);
        return s;
    }
    nn_status s = open_file(f, fp);
    fclose(fp);
    if (s != NN_OK) {
        nn_st_close(f);
        return s;
    }
    *out = f;
    return NN_OK;
}

const char *nn_st_path(const nn_st_file *f) { return f ? f->path : NULL; }

int nn_st_count(const nn_st_file *f) { return f ? f->n : 0; }

const nn_st_entry *nn_st_entry_at(const nn_st_file *f, int i)
{
    return f && i >= 0 && i < f->n ? &f->e[i] : NULL;
}

const nn_st_entry *nn_st_find(const nn_st_file *f, const char *name)
{
    for (int i = 0; f && name && i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0) return &f->e[i];
    return NULL;
}

const char *nn_st_meta(const nn_st_file *f, const char *key)
{
    for (int i = 0; f && key && i < f->nmeta; i++)
        if (strcmp(f->mkey[i], key) == 0) return f->mval[i];
    return NULL;
}

int nn_st_meta_count(const nn_st_file *f) { return f ? f->nmeta : 0; }

bool nn_st_meta_at(const nn_st_file *f, int i, const char **key, const char **value)
{
    if (!f || i < 0 || i >= f->nmeta) return false;
    if (key) *key = f->mkey[i];
    if (value) *value = f->mval[i];
    return true;
}

nn_status nn_st_read_tensor(const nn_st_file *f, const char *name, nn_tensor *dst)
{
    if (!f || !name || !dst) return nn_error(NN_E_ARG, "safetensors: read_tensor: NULL argument");
    const nn_st_entry *e = nn_st_find(f, name);
    if (!e) return nn_error(NN_E_ARG, "%s: no tensor named '%s'", f->path, name);
    nn_st_dtype want = dst->dtype == NN_F32 ? NN_ST_F32 : dst->dtype == NN_I32 ? NN_ST_I32 : NN_ST_NDTYPES;
    if (e->dtype != want)
        return nn_error(NN_E_FORMAT, "%s: tensor '%s' is %s, expected %s", f->path, name,
                        nn_st_dtype_name(e->dtype), nn_st_dtype_name(want));
    bool same = e->ndim == dst->ndim;
    for (int i = 0; same && i < e->ndim; i++) same = e->shape[i] == (int64_t)dst->shape[i];
    if (!same) {
        char a[160], b[160];
        return nn_error(NN_E_SHAPE, "%s: tensor '%s': expected shape %s, found %s", f->path, name,
                        nn_shape_str(dst, a, sizeof a), shape_str64(e->ndim, e->shape, b, sizeof b));
    }
    NN_ASSERT(e->nbytes == nn_tensor_bytes(dst));
    return nn_tensor_write(dst, e->data);
}

nn_status nn_st_read_f32(const nn_st_file *f, const char *name, nn_tensor *dst)
{
    if (dst && dst->dtype != NN_F32)
        return nn_error(NN_E_ARG, "%s: read_f32 of '%s' into a non-float32 tensor",
                        f ? f->path : "safetensors", name ? name : "?");
    return nn_st_read_tensor(f, name, dst);
}
