/* Shared helpers for the cmocka tests: random tensors from the project's own
 * generator and float64 comparisons with named tolerances. Header-only. */
#ifndef NN_TESTUTIL_H
#define NN_TESTUTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/gradcheck.h"
#include "core/graph.h"
#include "core/tensor.h"
#include "io/jpeg.h"
#include "io/png.h"
#include "ops/ops.h"

/* float32 kernels against a float64 reference: the error grows with the
 * length of the reduction (~sqrt(K) * 2^-24 * |terms|); 1e-4 relative plus
 * 1e-5 absolute leaves a wide margin for K up to a few thousand. */
#define TU_FWD_RTOL 1e-4
#define TU_FWD_ATOL 1e-5
/* A convolution output against its float64 sum, as a fraction of the sum of
 * the |terms|: the CPU's Winograd F(m x m, r x r) with n = m + r - 1 = 7 or 8
 * points rounds to ~1.4e-5 of it at worst on few-channel cases (transform
 * entries up to 2^6 and 1/N_j; ops/conv2d_winograd.c), a plain float32 sum
 * to ~1e-7; a single wrong product is ~1/K of it, >= 1.2e-4 for K <= 8192. */
#define TU_CONV_MAG_RTOL 3e-5

/* A heap F32 tensor, uniform in [lo, hi), on the CPU. */
static inline nn_tensor *tu_rand(uint64_t seed, float lo, float hi, int ndim, const int *shape)
{
    nn_tensor *t = NULL;
    assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CPU, ndim, shape), NN_OK);
    nn_rng r = nn_rng_make(seed);
    assert_int_equal(nn_tensor_uniform(t, &r, lo, hi), NN_OK);
    return t;
}

static inline nn_tensor *tu_rand4(uint64_t seed, int n, int c, int h, int w)
{
    int s[4] = {n, c, h, w};
    return tu_rand(seed, -1.0f, 1.0f, 4, s);
}

/* Asserts |got - ref| <= atol + rtol * |ref| elementwise, naming the first miss. */
static inline void tu_assert_close(const float *got, const double *ref, size_t n, double atol,
                                   double rtol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= atol + rtol * fabs(ref[i]))) {
            fail_msg("%s: element %zu is %.9g, reference %.9g (|diff| %.3g)", what, i, (double)got[i],
                     ref[i], d);
        }
    }
}

/* |got - ref| <= rtol * mag + atol elementwise, mag being each reference
 * element's sum of |terms| (the scale of a long sum's rounding), naming the
 * first miss. */
static inline void tu_assert_close_mag(const float *got, const double *ref, const double *mag, size_t n, double rtol,
                                       double atol, const char *what, const char *which)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= rtol * mag[i] + atol))
            fail_msg("%s: %s element %zu is %.9g, reference %.9g (|diff| %.3g, sum of |terms| %.3g)", what, which, i,
                     (double)got[i], ref[i], d, mag[i]);
    }
}

/* ---- an op of an input x, a weight w and a bias b (conv2d, linear) ---- */

typedef struct tu_xwb {
    nn_tensor *x, *w, *b; /* b may be NULL */
} tu_xwb;

static inline void tu_xwb_require_grad(const tu_xwb *t)
{
    assert_int_equal(nn_tensor_require_grad(t->x), NN_OK);
    assert_int_equal(nn_tensor_require_grad(t->w), NN_OK);
    if (t->b) assert_int_equal(nn_tensor_require_grad(t->b), NN_OK);
}

static inline void tu_xwb_free(tu_xwb *t)
{
    nn_tensor_free(t->x);
    nn_tensor_free(t->w);
    nn_tensor_free(t->b);
}

/* Builds the op's output in ctx from the tensors t for the test's case
 * (failing the test when it cannot). */
typedef nn_tensor *(*tu_op_run)(nn_ctx *ctx, const void *kase, const tu_xwb *t);

/* The forward overwrites its output: run again after a reset, in the same
 * arena memory the first run's output (now garbage) took, it gives the same
 * bits. */
static inline void tu_assert_forward_overwrites(tu_op_run run, const void *kase, const tu_xwb *t)
{
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y1 = run(ctx, kase, t);
    const size_t n = y1->numel;
    float *first = malloc(n * sizeof *first);
    assert_non_null(first);
    memcpy(first, nn_f32(y1), n * sizeof *first);
    for (size_t i = 0; i < n; i++) nn_f32(y1)[i] = 1e6f; /* garbage for the next run */
    nn_ctx_reset(ctx);
    nn_tensor *y2 = run(ctx, kase, t);
    assert_ptr_equal(y1->data, y2->data); /* the arena reuses the memory */
    assert_memory_equal(first, nn_f32(y2), n * sizeof *first);
    free(first);
    nn_ctx_free(ctx);
}

/* Backward kernels accumulate: a second backward from the same dy, without
 * zeroing, leaves twice the first's gradient in x, w and b, within
 * atol + rtol * |2 g|. */
static inline void tu_assert_backward_accumulates(tu_op_run run, const void *kase, const tu_xwb *t, uint64_t dy_seed,
                                                  double atol, double rtol)
{
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *grads[3] = {t->x, t->w, t->b}, *dyt = NULL;
    const char *names[3] = {"dx twice", "dw twice", "db twice"};
    double *first[3] = {NULL, NULL, NULL};
    for (int pass = 0; pass < 2; pass++) {
        nn_ctx_reset(ctx);
        nn_tensor *y = run(ctx, kase, t);
        if (!dyt) {
            int n = (int)y->numel;
            dyt = tu_rand(dy_seed, -1.0f, 1.0f, 1, &n);
        }
        assert_int_equal(nn_backward_with(ctx, y, nn_f32(dyt)), NN_OK);
        for (int i = 0; i < 3; i++) {
            if (!grads[i]) continue;
            const size_t n = grads[i]->numel;
            if (pass == 0) {
                first[i] = malloc(n * sizeof(double));
                assert_non_null(first[i]);
                for (size_t j = 0; j < n; j++) first[i][j] = 2.0 * nn_f32(grads[i]->grad)[j];
            } else {
                tu_assert_close(nn_f32(grads[i]->grad), first[i], n, atol, rtol, names[i]);
                free(first[i]);
            }
        }
    }
    nn_tensor_free(dyt);
    nn_ctx_free(ctx);
}

/* Runs nn_gradcheck and asserts it passed with at least one point checked in
 * every checked input. */
static inline void tu_gradcheck(nn_gc_fn fn, void *user, int n, nn_tensor *const *in, uint64_t seed,
                                const char *what)
{
    nn_gradcheck_opts o = {0};
    o.seed = seed;
    nn_gradcheck_result r;
    nn_status s = nn_gradcheck(fn, user, n, in, &o, &r);
    if (s != NN_OK) fail_msg("%s: gradcheck could not run: %s", what, nn_errmsg());
    for (int i = 0; i < n; i++) {
        if (!r.in[i].checked) continue;
        if (r.in[i].failed || r.in[i].points == 0)
            fail_msg("%s: input %d: %zu of %zu points failed (worst abs %.3g rel %.3g, %zu skipped)",
                     what, i, r.in[i].failed, r.in[i].points, r.in[i].max_abs, r.in[i].max_rel,
                     r.in[i].skipped);
    }
    assert_true(r.ok);
}

/* ---- a scratch folder per test program (setup/teardown of the group) ---- */

static char tu_dir[256];

/* Makes $TMPDIR/convnet_TAG_XXXXXX; returns 0 or -1 (cmocka group setup). */
static inline int tu_tmpdir_make(const char *tag)
{
    const char *t = getenv("TMPDIR");
    snprintf(tu_dir, sizeof tu_dir, "%s/convnet_%s_XXXXXX", t && *t ? t : "/tmp", tag);
    return mkdtemp(tu_dir) ? 0 : -1;
}

static inline int tu_tmpdir_remove(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tu_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* tu_dir/name, in one of four rotating buffers (so two can be used at once). */
static inline const char *tu_path(const char *name)
{
    static char p[4][320];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tu_dir, name);
    return p[k];
}

static inline uint8_t *tu_read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

static inline void tu_write_plain(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Files in tu_dir whose name contains ".tmp." (left-over atomic-write temporaries). */
static inline int tu_count_temps(void)
{
    DIR *d = opendir(tu_dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

/* A write that fails half way must leave the file at path as it was: runs
 * write(path, arg) in a child process whose files may not grow past
 * limit_bytes (the disk filling up, without filling a disk), and asserts
 * that it returned NN_E_IO naming the path, that the file is byte for byte
 * what it was, and that no temporary is left. The file must exist. */
typedef nn_status (*tu_writer_fn)(const char *path, const void *arg);

static inline void tu_assert_failed_write_keeps(const char *path, long limit_bytes, tu_writer_fn write,
                                                const void *arg)
{
    size_t n0, n1;
    uint8_t *before = tu_read_all(path, &n0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead of killing */
        struct rlimit rl = {(rlim_t)limit_bytes, (rlim_t)limit_bytes};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(3);
        nn_status s = write(path, arg);
        _exit(s == NN_E_IO && strstr(nn_errmsg(), path) ? 0 : s == NN_OK ? 1 : 2);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("the write limited to %ld bytes %s", limit_bytes,
                 WEXITSTATUS(status) == 1 ? "succeeded (nothing tested: raise the data's size)"
                                          : "did not fail with NN_E_IO naming the file");
    uint8_t *after = tu_read_all(path, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    assert_int_equal(tu_count_temps(), 0);
    free(before);
    free(after);
}

/* AddressSanitizer reserves terabytes of address space: no RLIMIT_AS checks under it. */
#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif
#ifndef HAVE_ASAN
#define HAVE_ASAN 0
#endif

/* ---- programs and image folders, for the tests that run `convnet` ---- */

/* Runs a shell command (printf-style) with stdout, and stderr unless the
 * command redirects it itself ("2>" in it), into out (truncated to n - 1
 * bytes, NUL-terminated; out may be NULL), draining the rest; returns its exit
 * status (128 when it did not exit). */
static inline int tu_run(char *out, size_t n, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (!strstr(cmd, "2>")) strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (out && n) {
        size_t k = fread(out, 1, n - 1, p);
        out[k] = '\0';
    }
    char sink[4096];
    while (fread(sink, 1, sizeof sink, p) > 0) {
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* A class of a generated image folder: its name and its colour. */
typedef struct tu_colour_class {
    const char *name;
    int rgb[3];
} tu_colour_class;

/* ROOT/train/NAME and ROOT/val/NAME for each class: `train` and `val` noisy
 * pictures of odd sizes (40+3i x 30+2(i%5)), each pixel the class's colour
 * plus a uniform integer in [-noise/2, noise/2), clamped; picture i is a PNG
 * when i % png_every == 0, a JPEG (quality 90) otherwise. Deterministic. */
static inline void tu_make_colour_folder(const char *root, const tu_colour_class *cls, int nclasses, int train,
                                         int val, int png_every, int noise)
{
    const char *split[2] = {"train", "val"};
    char p[1024];
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < nclasses; c++) {
            snprintf(p, sizeof p, "mkdir -p %s/%s/%s", root, split[s], cls[c].name);
            assert_int_equal(system(p), 0);
            for (int i = 0; i < (s ? val : train); i++) {
                int w = 40 + 3 * i, h = 30 + 2 * (i % 5);
                uint8_t *px = malloc((size_t)w * h * 3);
                assert_non_null(px);
                nn_rng r = nn_rng_make((uint64_t)(s * 1000 + c * 100 + i));
                for (int k = 0; k < w * h * 3; k++) {
                    int v = cls[c].rgb[k % 3] + (int)nn_rng_below(&r, (uint32_t)noise) - noise / 2;
                    px[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
                bool png = i % png_every == 0;
                snprintf(p, sizeof p, "%s/%s/%s/%03d.%s", root, split[s], cls[c].name, i, png ? "png" : "jpg");
                if (png)
                    assert_int_equal(nn_png_write_rgb(p, w, h, px), NN_OK);
                else
                    assert_int_equal(nn_jpeg_write(p, w, h, 3, px, 90, 0), NN_OK);
                free(px);
            }
        }
}

/* The two classes of the colour tests: blue and red, with 60 levels of noise. */
#define TU_BLUE_RED {{"blue", {30, 90, 180}}, {"red", {180, 90, 30}}}

#endif
