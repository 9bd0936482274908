/* safetensors: bitwise round trips (F32/I32/I64/U8, scalars, empty tensors,
 * metadata), the file read back by an independent Python reader, every kind
 * of corrupt header, and atomic writes that leave nothing behind on failure. */
#include "tests/testutil.h"

#include <dirent.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "io/safetensors.h"

static int setup(void **state)
{
    (void)state;
    return tu_tmpdir_make("st");
}

static int teardown(void **state)
{
    (void)state;
    return tu_tmpdir_remove();
}

/* A file with header length hlen (the JSON's own length if hlen is ~0), the
 * JSON text, then `ndata` data bytes. */
#define JSON_LEN (~(uint64_t)0) /* for write_raw: the header length is the JSON's own */

static const char *write_raw(const char *name, uint64_t hlen, const char *json, size_t ndata)
{
    const char *p = tu_path(name);
    size_t jn = strlen(json);
    if (hlen == JSON_LEN) hlen = jn;
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(hlen >> (8 * i));
    assert_int_equal(fwrite(len, 1, 8, f), 8);
    assert_int_equal(fwrite(json, 1, jn, f), jn);
    for (size_t i = 0; i < ndata; i++) fputc((int)(i & 0xff), f);
    assert_int_equal(fclose(f), 0);
    return p;
}

static void expect_open_fail(const char *path, nn_status s, const char *n1, const char *n2)
{
    nn_st_file *f = (nn_st_file *)(uintptr_t)1;
    nn_status got = nn_st_open(path, &f);
    const char *m = nn_errmsg();
    if (got != s) fail_msg("%s: expected %s, got %s: %s", path, nn_status_str(s), nn_status_str(got), m);
    assert_null(f);
    if (!strstr(m, path)) fail_msg("message does not name the file: %s", m);
    if (n1 && !strstr(m, n1)) fail_msg("message lacks \"%s\": %s", n1, m);
    if (n2 && !strstr(m, n2)) fail_msg("message lacks \"%s\": %s", n2, m);
}

/* ---- the reference tensors -------------------------------------------- */

typedef struct fixture {
    float w[2 * 3 * 4 * 5];
    float b[3];
    int32_t labels[7];
    int64_t steps;
    uint8_t bytes[5];
    float special[6];
} fixture;

static void fill_fixture(fixture *fx)
{
    nn_rng r = nn_rng_make(1234);
    nn_tensor *t = NULL;
    int s1[1] = {120};
    assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CPU, 1, s1), NN_OK);
    assert_int_equal(nn_tensor_uniform(t, &r, -3.0f, 3.0f), NN_OK);
    memcpy(fx->w, t->data, sizeof fx->w);
    nn_tensor_free(t);
    fx->b[0] = 0.1f;
    fx->b[1] = -1e-30f;
    fx->b[2] = 3.4e38f;
    for (int i = 0; i < 7; i++) fx->labels[i] = (int32_t)(i * 1000003) - 2000000000;
    fx->steps = (int64_t)1 << 40;
    for (int i = 0; i < 5; i++) fx->bytes[i] = (uint8_t)(250 + i);
    fx->special[0] = -0.0f;
    fx->special[1] = INFINITY;
    fx->special[2] = -INFINITY;
    fx->special[3] = NAN;
    fx->special[4] = 1e-45f; /* denormal */
    fx->special[5] = -2.5f;
}

/* Adds the fixture, in an order that puts a 1-byte dtype first. */
static nn_st_writer *fixture_writer(const fixture *fx, bool special)
{
    nn_st_writer *w = NULL;
    assert_int_equal(nn_st_writer_new(&w), NN_OK);
    const int64_t sb[1] = {5}, sw[4] = {2, 3, 4, 5}, sbias[1] = {3}, sl[1] = {7}, se[2] = {0, 3},
                  ss[2] = {2, 3};
    assert_int_equal(nn_st_writer_add(w, "bytes", NN_ST_U8, 1, sb, fx->bytes), NN_OK);
    assert_int_equal(nn_st_writer_add(w, "conv.weight", NN_ST_F32, 4, sw, fx->w), NN_OK);
    assert_int_equal(nn_st_writer_add(w, "conv.bias", NN_ST_F32, 1, sbias, fx->b), NN_OK);
    assert_int_equal(nn_st_writer_add(w, "labels", NN_ST_I32, 1, sl, fx->labels), NN_OK);
    assert_int_equal(nn_st_writer_add(w, "steps", NN_ST_I64, 0, NULL, &fx->steps), NN_OK);
    assert_int_equal(nn_st_writer_add(w, "empty", NN_ST_F32, 2, se, NULL), NN_OK);
    if (special) assert_int_equal(nn_st_writer_add(w, "special", NN_ST_F32, 2, ss, fx->special), NN_OK);
    assert_int_equal(nn_st_writer_meta(w, "format", "pt"), NN_OK);
    assert_int_equal(nn_st_writer_meta(w, "epoch", "2"), NN_OK);
    assert_int_equal(nn_st_writer_meta(w, "epoch", "3"), NN_OK); /* replaces */
    assert_int_equal(nn_st_writer_meta(w, "note", "quotes \" and \\ and\nnewline, ünicode"), NN_OK);
    return w;
}

static void check_entry(const nn_st_file *f, const char *name, nn_st_dtype dt, int ndim,
                        const int64_t *shape, const void *data, size_t nbytes)
{
    const nn_st_entry *e = nn_st_find(f, name);
    if (!e) fail_msg("tensor %s missing", name);
    assert_string_equal(e->name, name);
    assert_int_equal(e->dtype, dt);
    assert_int_equal(e->ndim, ndim);
    for (int i = 0; i < ndim; i++) assert_int_equal(e->shape[i], shape[i]);
    assert_int_equal(e->nbytes, nbytes);
    if (nbytes) assert_memory_equal(e->data, data, nbytes);
    /* laid out by decreasing dtype size: every tensor aligned to its dtype */
    assert_int_equal((uintptr_t)e->data % nn_st_dtype_size(dt), 0);
}

static void test_roundtrip(void **state)
{
    (void)state;
    fixture fx;
    fill_fixture(&fx);
    nn_st_writer *w = fixture_writer(&fx, true);
    const char *path = tu_path("model.safetensors");
    assert_int_equal(nn_st_write(w, path), NN_OK);
    nn_st_writer_free(w);

    /* header length: data section 8-byte aligned, JSON padded with spaces */
    size_t n;
    uint8_t *raw = tu_read_all(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
    assert_int_equal(hl % 8, 0);
    assert_true(hl + 8 <= n);
    assert_int_equal(raw[8], '{');
    free(raw);

    nn_st_file *f = NULL;
    assert_int_equal(nn_st_open(path, &f), NN_OK);
    assert_string_equal(nn_st_path(f), path);
    assert_int_equal(nn_st_count(f), 7);
    const int64_t sb[1] = {5}, sw[4] = {2, 3, 4, 5}, sbias[1] = {3}, sl[1] = {7}, se[2] = {0, 3},
                  ss[2] = {2, 3};
    check_entry(f, "bytes", NN_ST_U8, 1, sb, fx.bytes, 5);
    check_entry(f, "conv.weight", NN_ST_F32, 4, sw, fx.w, sizeof fx.w);
    check_entry(f, "conv.bias", NN_ST_F32, 1, sbias, fx.b, sizeof fx.b);
    check_entry(f, "labels", NN_ST_I32, 1, sl, fx.labels, sizeof fx.labels);
    check_entry(f, "steps", NN_ST_I64, 0, NULL, &fx.steps, 8);
    check_entry(f, "empty", NN_ST_F32, 2, se, NULL, 0);
    check_entry(f, "special", NN_ST_F32, 2, ss, fx.special, sizeof fx.special);
    assert_null(nn_st_find(f, "nope"));
    assert_null(nn_st_find(f, "__metadata__"));
    for (int i = 0; i < nn_st_count(f); i++) assert_non_null(nn_st_entry_at(f, i));
    assert_null(nn_st_entry_at(f, 7));
    assert_null(nn_st_entry_at(f, -1));

    assert_string_equal(nn_st_meta(f, "format"), "pt");
    assert_string_equal(nn_st_meta(f, "epoch"), "3");
    assert_string_equal(nn_st_meta(f, "note"), "quotes \" and \\ and\nnewline, ünicode");
    assert_null(nn_st_meta(f, "missing"));
    assert_int_equal(nn_st_meta_count(f), 3);
    const char *k, *v;
    assert_true(nn_st_meta_at(f, 0, &k, &v));
    assert_false(nn_st_meta_at(f, 3, &k, &v));

    /* into nn_tensors: bitwise, then the errors */
    nn_tensor *t = NULL;
    int shp[4] = {2, 3, 4, 5};
    assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CPU, 4, shp), NN_OK);
    assert_int_equal(nn_st_read_f32(f, "conv.weight", t), NN_OK);
    assert_memory_equal(t->data, fx.w, sizeof fx.w);
    nn_tensor_free(t);

    int sl32[1] = {7};
    assert_int_equal(nn_tensor_new(&t, NN_I32, NN_CPU, 1, sl32), NN_OK);
    assert_int_equal(nn_st_read_tensor(f, "labels", t), NN_OK);
    assert_memory_equal(t->data, fx.labels, sizeof fx.labels);
    assert_int_equal(nn_st_read_f32(f, "labels", t), NN_E_ARG);
    nn_tensor_free(t);

    int wrong[4] = {2, 3, 5, 4};
    assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CPU, 4, wrong), NN_OK);
    assert_int_equal(nn_st_read_f32(f, "conv.weight", t), NN_E_SHAPE);
    const char *m = nn_errmsg();
    assert_non_null(strstr(m, path));
    assert_non_null(strstr(m, "'conv.weight'"));
    assert_non_null(strstr(m, "expected shape 2x3x5x4"));
    assert_non_null(strstr(m, "found 2x3x4x5"));
    assert_int_equal(nn_st_read_f32(f, "labels", t), NN_E_FORMAT); /* I32 in the file */
    assert_non_null(strstr(nn_errmsg(), "'labels' is I32, expected F32"));
    assert_int_equal(nn_st_read_f32(f, "missing.weight", t), NN_E_ARG);
    assert_non_null(strstr(nn_errmsg(), "missing.weight"));
    nn_tensor_free(t);
    nn_st_close(f);
    nn_st_close(NULL);

    /* an nn_tensor through add_tensor, and a file with neither tensors nor metadata */
    nn_tensor *src = tu_rand4(99, 2, 2, 3, 3);
    assert_int_equal(nn_st_writer_new(&w), NN_OK);
    assert_int_equal(nn_st_writer_add_tensor(w, "x", src), NN_OK);
    assert_int_equal(nn_st_write(w, tu_path("t.safetensors")), NN_OK);
    nn_st_writer_free(w);
    assert_int_equal(nn_st_open(tu_path("t.safetensors"), &f), NN_OK);
    nn_tensor *back = NULL;
    assert_int_equal(nn_tensor_new4(&back, NN_F32, NN_CPU, 2, 2, 3, 3), NN_OK);
    assert_int_equal(nn_st_read_f32(f, "x", back), NN_OK);
    assert_memory_equal(back->data, src->data, nn_tensor_bytes(src));
    assert_int_equal(nn_st_meta_count(f), 0);
    nn_st_close(f);
    nn_tensor_free(back);
    nn_tensor_free(src);

    assert_int_equal(nn_st_writer_new(&w), NN_OK);
    assert_int_equal(nn_st_write(w, tu_path("empty.safetensors")), NN_OK);
    nn_st_writer_free(w);
    assert_int_equal(nn_st_open(tu_path("empty.safetensors"), &f), NN_OK);
    assert_int_equal(nn_st_count(f), 0);
    nn_st_close(f);
}

static void test_writer_args(void **state)
{
    (void)state;
    nn_st_writer *w = NULL;
    assert_int_equal(nn_st_writer_new(&w), NN_OK);
    float x[4] = {0};
    const int64_t s[1] = {4}, neg[1] = {-1}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1},
                  huge[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
    assert_int_equal(nn_st_writer_add(w, "a", NN_ST_F32, 1, s, x), NN_OK);
    assert_int_equal(nn_st_writer_add(w, "a", NN_ST_F32, 1, s, x), NN_E_ARG);
    assert_non_null(strstr(nn_errmsg(), "'a' added twice"));
    assert_int_equal(nn_st_writer_add(w, "__metadata__", NN_ST_F32, 1, s, x), NN_E_ARG);
    assert_int_equal(nn_st_writer_add(w, "", NN_ST_F32, 1, s, x), NN_E_ARG);
    assert_int_equal(nn_st_writer_add(w, "b", NN_ST_F32, 1, neg, x), NN_E_ARG);
    assert_int_equal(nn_st_writer_add(w, "b", NN_ST_F32, 9, nine, x), NN_E_ARG);
    assert_int_equal(nn_st_writer_add(w, "b", NN_ST_F32, 2, huge, x), NN_E_ARG);
    assert_int_equal(nn_st_writer_add(w, "b", NN_ST_F32, 1, s, NULL), NN_E_ARG);
    assert_int_equal(nn_st_writer_add(w, "b", NN_ST_NDTYPES, 1, s, x), NN_E_ARG);
    assert_int_equal(nn_st_writer_meta(w, "k", NULL), NN_E_ARG);
    assert_int_equal(nn_st_write(w, NULL), NN_E_ARG);
    nn_st_writer_free(w);
    nn_st_writer_free(NULL);

    nn_st_dtype d;
    for (int i = 0; i < NN_ST_NDTYPES; i++) {
        assert_true(nn_st_dtype_parse(nn_st_dtype_name((nn_st_dtype)i), &d));
        assert_int_equal(d, i);
    }
    assert_false(nn_st_dtype_parse("F33", &d));
    assert_int_equal(nn_st_dtype_size(NN_ST_BF16), 2);
}

/* ---- the independent reader ------------------------------------------ */

static void test_python_reader(void **state)
{
    (void)state;
    const char *root = getenv("CONVNET_SOURCE_ROOT");
    if (!root || !*root) {
        print_message("CONVNET_SOURCE_ROOT not set (run through meson test): skipped\n");
        skip();
    }
    if (system("command -v python3 >/dev/null 2>&1") != 0) {
        print_message("python3 not found: skipped\n");
        skip();
    }
    fixture fx;
    fill_fixture(&fx);
    nn_st_writer *w = fixture_writer(&fx, false); /* no NaN: "%.17g" spells it differently */
    const char *path = tu_path("py.safetensors");
    assert_int_equal(nn_st_write(w, path), NN_OK);
    nn_st_writer_free(w);

    /* what the Python reader must print, sorted by name, then metadata by key */
    struct {
        const char *name, *dtype, *shape;
        const void *p;
        size_t n;
        bool f32;
    } ex[] = {
        {"bytes", "U8", "5", fx.bytes, 5, false},
        {"conv.bias", "F32", "3", fx.b, sizeof fx.b, true},
        {"conv.weight", "F32", "2x3x4x5", fx.w, sizeof fx.w, true},
        {"empty", "F32", "0x3", NULL, 0, true},
        {"labels", "I32", "7", fx.labels, sizeof fx.labels, false},
        {"steps", "I64", "[]", &fx.steps, 8, false},
    };
    char want[4096] = "";
    size_t k = 0;
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
        uLong crc = crc32(0L, Z_NULL, 0);
        if (ex[i].n) crc = crc32(crc, ex[i].p, (uInt)ex[i].n);
        k += (size_t)snprintf(want + k, sizeof want - k, "tensor %s %s %s %08lx", ex[i].name,
                              ex[i].dtype, ex[i].shape, (unsigned long)crc);
        if (ex[i].f32) {
            double s = 0.0;
            const float *v = ex[i].p;
            for (size_t j = 0; j < ex[i].n / 4; j++) s += (double)v[j];
            k += (size_t)snprintf(want + k, sizeof want - k, " %.17g", s);
        }
        k += (size_t)snprintf(want + k, sizeof want - k, "\n");
    }
    snprintf(want + k, sizeof want - k,
             "meta epoch=3\nmeta format=pt\nmeta note=quotes \" and \\ and\nnewline, ünicode\n");

    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 '%s/tests/st_read.py' '%s'", root, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char got[4096];
    size_t gn = fread(got, 1, sizeof got - 1, p);
    got[gn] = '\0';
    int rc = pclose(p);
    if (rc != 0) fail_msg("%s exited with %d; output:\n%s", cmd, rc, got);
    if (strcmp(got, want) != 0) fail_msg("python reader disagrees.\nwant:\n%s\ngot:\n%s", want, got);
}

/* ---- corrupt files ---------------------------------------------------- */

/* Forged files: a header length, a JSON header and that many data bytes,
 * and what nn_st_open must say (one or two parts of its message). */
static const struct {
    const char *name;
    uint64_t header_len;
    const char *json;
    size_t data_bytes;
    const char *says, *says_too;
} forged[] = {
    /* the header length */
    {"biglen", 1000, "{}", 0, "header length 1000 is larger than the file", NULL},
    {"hugelen", (uint64_t)1 << 63, "{}", 0, "over the", "limit"},
    {"tinylen", 1, "{}", 0, "too small", NULL},
    /* the JSON */
    {"badjson", JSON_LEN, "{\"a\": {\"dtype\": \"F32\", ", 0, "not valid JSON", NULL},
    {"array", JSON_LEN, "[1, 2]", 0, "not a JSON object", NULL},
    {"afterjson", JSON_LEN, "{} x", 0, "after the JSON", NULL},
    /* the entries */
    {"dtype", JSON_LEN,
     "{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     8, "'a' has unknown dtype \"F33\"", NULL},
    {"nodtype", JSON_LEN, "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "no dtype", NULL},
    {"range", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}",
     16, "data_offsets [0, 400] outside the 16-byte data section", NULL},
    {"backwards", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}",
     8, "data_offsets [8, 0]", NULL},
    {"overlap", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, "'a' and 'b' overlap", NULL},
    {"same", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     8, "overlap", NULL},
    {"hole", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
     20, "hole", NULL},
    {"tail", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     12, "4 bytes after the last tensor", NULL},
    {"mismatch", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
     8, "shape 3 of F32 needs 12 bytes", "span 8"},
    {"negshape", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
     8, "not a non-negative integer", NULL},
    {"fracshape", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}",
     8, "not a non-negative integer", NULL},
    {"overflow", JSON_LEN,
     "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,4294967296],"
     "\"data_offsets\":[0,0]}}",
     0, "overflows", NULL},
    {"ninedims", JSON_LEN,
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
     1, "9 dimensions", NULL},
    {"offsets", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}",
     8, "data_offsets must be", NULL},
    {"notobj", JSON_LEN, "{\"a\":[1,2]}", 0, "'a' is not a JSON object", NULL},
    {"dup", JSON_LEN,
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "'a' appears twice", NULL},
    {"metaval", JSON_LEN, "{\"__metadata__\":{\"epoch\":3}}", 0, "'epoch' is not a string", NULL},
    {"metaobj", JSON_LEN, "{\"__metadata__\":\"x\"}", 0, "__metadata__ is not a JSON object", NULL},
};

static void test_corrupt(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++) {
        const char *p = write_raw(forged[i].name, forged[i].header_len, forged[i].json, forged[i].data_bytes);
        expect_open_fail(p, NN_E_FORMAT, forged[i].says, forged[i].says_too);
    }
    tu_write_plain(tu_path("short"), "abc", 3);
    expect_open_fail(tu_path("short"), NN_E_FORMAT, "too short", NULL);
    const uint8_t nul[12] = {4, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, ' '};
    tu_write_plain(tu_path("nul"), nul, sizeof nul);
    expect_open_fail(tu_path("nul"), NN_E_FORMAT, "NUL byte", NULL);
    /* a valid file with a JSON trailer of spaces, as written by other tools */
    const char *p = write_raw("ok", JSON_LEN, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}   ", 8);
    nn_st_file *f = NULL;
    assert_int_equal(nn_st_open(p, &f), NN_OK);
    nn_st_close(f);

    /* a real file cut short */
    fixture fx;
    fill_fixture(&fx);
    nn_st_writer *w = fixture_writer(&fx, true);
    const char *full = tu_path("full.safetensors");
    assert_int_equal(nn_st_write(w, full), NN_OK);
    nn_st_writer_free(w);
    size_t n;
    uint8_t *raw = tu_read_all(full, &n);
    tu_write_plain(tu_path("cut.safetensors"), raw, n - 10);
    expect_open_fail(tu_path("cut.safetensors"), NN_E_FORMAT, "truncated", NULL);
    tu_write_plain(tu_path("cuthdr.safetensors"), raw, 40);
    expect_open_fail(tu_path("cuthdr.safetensors"), NN_E_FORMAT, "larger than the file", NULL);
    free(raw);

    expect_open_fail(tu_path("missing.safetensors"), NN_E_IO, "No such file", NULL);
    expect_open_fail(tu_dir, NN_E_IO, "not a regular file", NULL);
}

/* ---- atomic writes ----------------------------------------------------- */

static nn_status write_st(const char *path, const void *writer)
{
    return nn_st_write(writer, path);
}

static void test_atomic(void **state)
{
    (void)state;
    fixture fx;
    fill_fixture(&fx);
    nn_st_writer *w = fixture_writer(&fx, true);

    /* a directory that does not exist: an error, and nothing created */
    const char *bad = tu_path("no/such/dir/m.safetensors");
    assert_int_equal(nn_st_write(w, bad), NN_E_IO);
    assert_non_null(strstr(nn_errmsg(), bad));
    struct stat st;
    assert_int_not_equal(stat(tu_path("no"), &st), 0);
    assert_int_equal(tu_count_temps(), 0);

    /* an existing file survives a write that fails half way (file size limit) */
    const char *path = tu_path("keep.safetensors");
    assert_int_equal(nn_st_write(w, path), NN_OK);
    size_t big = (size_t)1 << 20;
    float *data = calloc(big, sizeof *data);
    assert_non_null(data);
    for (size_t i = 0; i < big; i++) data[i] = (float)i;
    const int64_t sh[1] = {(int64_t)big};
    assert_int_equal(nn_st_writer_add(w, "big", NN_ST_F32, 1, sh, data), NN_OK);
    tu_assert_failed_write_keeps(path, 65536, write_st, w); /* 4 MiB into 64 KiB */
    nn_st_file *f = NULL;
    assert_int_equal(nn_st_open(path, &f), NN_OK);
    assert_null(nn_st_find(f, "big"));
    nn_st_close(f);

    /* and the same write without the limit replaces it */
    assert_int_equal(nn_st_write(w, path), NN_OK);
    assert_int_equal(nn_st_open(path, &f), NN_OK);
    assert_non_null(nn_st_find(f, "big"));
    assert_memory_equal(nn_st_find(f, "big")->data, data, big * sizeof *data);
    nn_st_close(f);
    assert_int_equal(tu_count_temps(), 0);
    free(data);
    nn_st_writer_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_writer_args),
        cmocka_unit_test(test_python_reader),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_atomic),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
