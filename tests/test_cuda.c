/* The CUDA backend against the CPU one: every op through the public API on
 * random inputs (outputs and every gradient), the SGEMM against a float64
 * reference on awkward sizes, dropout masks and random fills bit for bit,
 * gradient checks on the GPU, the implicit-GEMM conv (forward, dx, dw, db)
 * against im2col's, the allocator and the error paths.
 * Without a GPU (or a build without the CUDA backend) every GPU test prints
 * why and skips; the no-device error test runs everywhere. */
#include <stdint.h>
#include <string.h>

#include "config.h"
#include "core/backend.h"
#include "core/philox.h"
#include "models/model.h"
#include "ops/cpu_kernels.h"
#include "ops/registry.h"
#include "optim/optim.h"
#include "tests/conv_shapes.h"
#include "tests/resident_compare.h"
#include "tests/gpu_test.h"
#include "tests/testutil.h"
#if NN_HAVE_CUDA
#include "cuda/checks.h"
#include "cuda/gemm.h"
#include "cuda/upload.h"
#endif

/* The two devices do the same math with float additions in another order
 * (a tiled GEMM with FMAs against OpenBLAS, tree against serial reductions):
 * an element may differ by a few roundings of its reduction, ~sqrt(K) 2^-24
 * of the sum of |terms|. Errors are judged against rtol * |ref| plus a floor
 * of GPU_ATOL_SCALE times the tensor's largest |value|, so an element that
 * cancels to near 0 is judged on the tensor's scale. */
#define GPU_RTOL 1e-4
#define GPU_ATOL_SCALE 2e-5
/* expf/logf/powf on the GPU are within 2 ulp of glibc's (CUDA programming
 * guide, appendix on math functions): a few 1e-7 relative per call. */
#define GPU_TRANS_RTOL 2e-6
#define GPU_TRANS_ATOL_SCALE 2e-6
/* The SGEMM against a float64 reference: its float sums round ~sqrt(K)
 * times; relative to the sum of |terms| 1e-5 leaves a wide margin to K = 5000. */
#define GEMM_TOL 1e-5
/* The TF32 kernel rounds A and B to 10 mantissa bits (round to nearest):
 * |e| <= 2^-10 |a b| per term, plus the fp32 sums: 1.5e-3 of the sum of
 * |terms|. A wrong fragment index or a lost K slice errs by O(1). */
#define GEMM_TF32_TOL 1.5e-3

/* ---- helpers ---- */

static const nn_backend *gpu(void) { return nn_backend_get(NN_CUDA); }

/* A heap copy of a CPU tensor on the GPU, requiring grad when the source does. */
static nn_tensor *to_gpu(const nn_tensor *c)
{
    nn_tensor *g = NULL;
    if (nn_tensor_to(&g, c, NN_CUDA) != NN_OK) fail_msg("copy to the GPU: %s", nn_errmsg());
    if (c->requires_grad) assert_int_equal(nn_tensor_require_grad(g), NN_OK);
    return g;
}

/* All of a tensor's elements in a new host buffer (float or int32 bits). */
static float *host_copy(const nn_tensor *t)
{
    float *h = malloc(t->numel * sizeof *h);
    assert_non_null(h);
    if (nn_tensor_read(t, h) != NN_OK) fail_msg("read back: %s", nn_errmsg());
    return h;
}

static float *rand_host(uint64_t seed, size_t n, float lo, float hi)
{
    float *h = malloc((n ? n : 1) * sizeof *h);
    assert_non_null(h);
    for (size_t i = 0; i < n; i++) h[i] = lo + (hi - lo) * nn_rand_uniform(seed, 0, i);
    return h;
}

/* |got - ref| <= rtol |ref| + atol_scale * max|ref| for every element. */
static void assert_match(const float *got, const float *ref, size_t n, double rtol, double atol_scale,
                         const char *what)
{
    double scale = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs((double)ref[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= rtol * fabs((double)ref[i]) + atol_scale * scale))
            fail_msg("%s: element %zu is %.9g on the GPU, %.9g on the CPU (|diff| %.3g, scale %.3g)", what,
                     i, (double)got[i], (double)ref[i], d, scale);
    }
}

static void assert_identical(const void *got, const void *ref, size_t bytes, const char *what)
{
    const unsigned char *a = got, *b = ref;
    for (size_t i = 0; i < bytes; i++)
        if (a[i] != b[i]) fail_msg("%s: byte %zu differs (GPU 0x%02x, CPU 0x%02x)", what, i, a[i], b[i]);
}

/* Runs fn on CPU inputs and on GPU copies, compares the outputs, then
 * backpropagates the same random dy on both and compares every gradient. */
static void compare_op(nn_gc_fn fn, void *user, int nin, nn_tensor **cin, uint64_t seed, double rtol,
                       double atol_scale, const char *what)
{
    char msg[160];
    nn_tensor *gin[NN_GC_MAX_INPUTS] = {0};
    for (int i = 0; i < nin; i++) gin[i] = to_gpu(cin[i]);
    nn_ctx *cc = nn_ctx_new(), *gc = nn_ctx_new();
    assert_non_null(cc);
    assert_non_null(gc);
    *nn_ctx_rng(cc) = nn_rng_make(seed);
    *nn_ctx_rng(gc) = nn_rng_make(seed);
    for (int i = 0; i < nin; i++) {
        assert_int_equal(nn_tensor_zero_grad(cin[i]), NN_OK);
        assert_int_equal(nn_tensor_zero_grad(gin[i]), NN_OK);
    }
    nn_tensor *yc = fn(cc, cin, user);
    if (!yc) fail_msg("%s on the CPU: %s", what, nn_ctx_errmsg(cc));
    nn_tensor *yg = fn(gc, gin, user);
    if (!yg) fail_msg("%s on the GPU: %s", what, nn_ctx_errmsg(gc));
    assert_int_equal(yg->device, NN_CUDA);
    assert_true(nn_same_shape(yc, yg));

    float *a = host_copy(yc), *b = host_copy(yg);
    snprintf(msg, sizeof msg, "%s: forward", what);
    assert_match(b, a, yc->numel, rtol, atol_scale, msg);
    free(a);
    free(b);

    float *dy = rand_host(seed ^ 0xD1ull, yc->numel, -1.0f, 1.0f);
    if (nn_backward_with(cc, yc, dy) != NN_OK) fail_msg("%s: CPU backward: %s", what, nn_errmsg());
    if (nn_backward_with(gc, yg, dy) != NN_OK) fail_msg("%s: GPU backward: %s", what, nn_errmsg());
    free(dy);
    for (int i = 0; i < nin; i++) {
        if (!cin[i]->requires_grad) continue;
        a = host_copy(cin[i]->grad);
        b = host_copy(gin[i]->grad);
        snprintf(msg, sizeof msg, "%s: gradient of input %d", what, i);
        assert_match(b, a, cin[i]->numel, rtol, atol_scale, msg);
        free(a);
        free(b);
    }
    nn_ctx_free(cc);
    nn_ctx_free(gc);
    for (int i = 0; i < nin; i++) nn_tensor_free(gin[i]);
}

/* nn_gradcheck with every input moved to the GPU. */
static void gradcheck_gpu(nn_gc_fn fn, void *user, int nin, nn_tensor **cin, uint64_t seed, const char *what)
{
    nn_tensor *gin[NN_GC_MAX_INPUTS] = {0};
    for (int i = 0; i < nin; i++) gin[i] = to_gpu(cin[i]);
    tu_gradcheck(fn, user, nin, gin, seed, what);
    for (int i = 0; i < nin; i++) nn_tensor_free(gin[i]);
}

static nn_tensor *rand_grad(uint64_t seed, int ndim, const int *shape)
{
    nn_tensor *t = tu_rand(seed, -1.0f, 1.0f, ndim, shape);
    assert_int_equal(nn_tensor_require_grad(t), NN_OK);
    return t;
}

static nn_tensor *rand_labels(uint64_t seed, int n, int classes)
{
    int32_t *l = malloc((size_t)n * sizeof *l);
    nn_rng r = nn_rng_make(seed);
    for (int i = 0; i < n; i++) l[i] = (int32_t)nn_rng_below(&r, (uint32_t)classes);
    nn_tensor *t = NULL;
    assert_int_equal(nn_tensor_from(&t, NN_I32, NN_CPU, 1, &n, l), NN_OK);
    free(l);
    return t;
}

/* ---- without a device ---- */

static void test_no_device_is_an_error(void **state)
{
    (void)state;
    if (nn_device_available(NN_CUDA)) {
        print_message("a CUDA device is present: the no-device path cannot be reached: skipped\n");
        skip();
        return;
    }
    int s[2] = {2, 3};
    nn_tensor *t = (nn_tensor *)1;
    nn_clear_error();
    assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CUDA, 2, s), NN_E_DEVICE);
    assert_null(t);
    const char *m = nn_errmsg();
    if (!strstr(m, "cuda") ||
        !(strstr(m, "not built") || strstr(m, "no cuda device") || strstr(m, "could not be loaded")))
        fail_msg("unclear message for a missing CUDA device: '%s'", m);

    nn_tensor *c = tu_rand(1, -1.0f, 1.0f, 2, s), *g = (nn_tensor *)1;
    assert_int_equal(nn_tensor_to(&g, c, NN_CUDA), NN_E_DEVICE);
    assert_null(g);
    /* the CPU still works after the failed request */
    nn_ctx *ctx = nn_ctx_new();
    assert_non_null(nn_relu(ctx, c));
    assert_int_equal(nn_ctx_status(ctx), NN_OK);
    nn_ctx_free(ctx);
    nn_tensor_free(c);
}

/* ---- the backend's own slots ---- */

static void test_devices_must_match(void **state)
{
    (void)state;
    NEED_GPU();
    int xs[4] = {1, 2, 5, 5}, ws[4] = {3, 2, 3, 3}, ls[2] = {4, 6};
    nn_tensor *x = tu_rand(1, -1, 1, 4, xs), *wc = tu_rand(2, -1, 1, 4, ws), *w = to_gpu(wc);
    nn_ctx *ctx = nn_ctx_new();
    assert_null(nn_conv2d(ctx, x, w, NULL, (nn_conv2d_params){0}));
    assert_int_equal(nn_ctx_status(ctx), NN_E_DEVICE);
    if (!strstr(nn_ctx_errmsg(ctx), "conv2d")) fail_msg("message without the op: %s", nn_ctx_errmsg(ctx));

    nn_ctx_reset(ctx);
    nn_tensor *lc = tu_rand(3, -1, 1, 2, ls), *l = to_gpu(lc);
    nn_tensor *lw = tu_rand(4, -1, 1, 2, (int[]){5, 6});
    assert_null(nn_linear(ctx, l, lw, NULL));
    assert_int_equal(nn_ctx_status(ctx), NN_E_DEVICE);

    nn_ctx_reset(ctx);
    nn_tensor *lab = rand_labels(5, 4, 6);
    assert_null(nn_softmax_xent(ctx, l, lab));
    assert_int_equal(nn_ctx_status(ctx), NN_E_DEVICE);
    nn_ctx_free(ctx);
    nn_tensor_free(x);
    nn_tensor_free(wc);
    nn_tensor_free(w);
    nn_tensor_free(lc);
    nn_tensor_free(l);
    nn_tensor_free(lw);
    nn_tensor_free(lab);
}

static void test_memory(void **state)
{
    (void)state;
    NEED_GPU();
    const nn_backend *be = gpu();
    /* a freed block is handed out again: no cudaMalloc in a steady state */
    void *p = NULL, *q = NULL;
    assert_int_equal(be->alloc(&p, 1000), NN_OK);
    be->free(p);
    assert_int_equal(be->alloc(&q, 1000), NN_OK);
    assert_ptr_equal(p, q);
    assert_true(be->peak_bytes() >= 1000);

    /* round trip host -> device -> device -> host, and memset0 */
    const size_t n = 4099;
    float *h = rand_host(7, n, -1, 1), *back = malloc(n * sizeof *back);
    void *r = NULL;
    assert_int_equal(be->alloc(&r, n * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(q, NN_CUDA, h, NN_CPU, 1000), NN_OK);
    assert_int_equal(be->copy(r, NN_CUDA, h, NN_CPU, n * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(back, NN_CPU, r, NN_CUDA, n * sizeof(float)), NN_OK);
    assert_identical(back, h, n * sizeof(float), "copy round trip");
    assert_int_equal(be->memset0(r, 8 * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(back, NN_CPU, r, NN_CUDA, n * sizeof(float)), NN_OK);
    for (int i = 0; i < 8; i++) assert_true(back[i] == 0.0f);
    assert_true(back[8] == h[8]);
    be->free(q);
    be->free(r);
    free(h);
    free(back);

    /* more than any GPU has: a status with a clear message, not an abort */
    void *huge = (void *)1;
    assert_int_equal(be->alloc(&huge, (size_t)1 << 52), NN_E_NOMEM);
    assert_null(huge);
    if (!strstr(nn_errmsg(), "out of device memory")) fail_msg("unclear message: %s", nn_errmsg());
    /* and the device still works */
    assert_int_equal(be->alloc(&p, 64), NN_OK);
    assert_int_equal(be->sync(), NN_OK);
    be->free(p);
}

/* NN_CUDA_PINNED: uploads staged through pinned buffers on a copy stream.
 * Each round writes a new pattern into the one buffer x that the round
 * before reads (y += x): an upload that overtook that read (the
 * write-after-read hazard the copy stream must wait for) or one the compute
 * stream did not wait for would change the sum. Sizes grow so the slots are
 * reallocated, and wrap the ring several times; then stay at the largest, so
 * slots are reused as they are (a staging buffer rewritten before its last
 * copy ran would change the sum too: freeing a slot waits for the device,
 * reusing one must). */
static void test_pinned_uploads(void **state)
{
    (void)state;
    NEED_GPU();
#if NN_HAVE_CUDA
    const nn_backend *be = gpu();
    enum { GROW = 11, ROUNDS = GROW + 6, N = 1 << 20 };
    float *h = malloc(N * sizeof *h), *back = malloc(N * sizeof *back);
    double *want = calloc(N, sizeof *want), *cur = calloc(N, sizeof *cur); /* cur: what x holds */
    assert_true(h && back && want && cur);
    void *x = NULL, *y = NULL;
    assert_int_equal(be->alloc(&x, N * sizeof(float)), NN_OK);
    assert_int_equal(be->alloc(&y, N * sizeof(float)), NN_OK);
    assert_int_equal(be->fill(y, N, 0.0f), NN_OK);
    assert_int_equal(be->fill(x, N, 0.0f), NN_OK);
    nn_cuda_set_pinned_uploads(true);
    for (int r = 0; r < ROUNDS; r++) {
        const size_t n = r < GROW ? (size_t)N >> (GROW - 1 - r) / 2 : (size_t)N; /* 32 Ki .. 1 Mi floats */
        for (size_t i = 0; i < n; i++) h[i] = (float)((i * 7 + (size_t)r * 13) % 101); /* exact sums */
        assert_int_equal(be->copy(x, NN_CUDA, h, NN_CPU, n * sizeof(float)), NN_OK);
        for (size_t i = 0; i < n; i++) h[i] = -1.0f; /* the caller may reuse its buffer at once */
        for (size_t i = 0; i < n; i++) cur[i] = (double)((i * 7 + (size_t)r * 13) % 101);
        for (size_t i = 0; i < N; i++) want[i] += cur[i]; /* past n: x keeps what it had */
        assert_int_equal(be->axpy(N, 1.0f, x, y), NN_OK); /* no read back: the host runs ahead */
    }
    nn_cuda_set_pinned_uploads(false);
    assert_int_equal(be->copy(back, NN_CPU, y, NN_CUDA, N * sizeof(float)), NN_OK);
    for (size_t i = 0; i < N; i++)
        if ((double)back[i] != want[i]) fail_msg("y[%zu] = %g, want %g", i, (double)back[i], want[i]);
    be->free(x);
    be->free(y);
    free(h);
    free(back);
    free(want);
    free(cur);
#endif
}

static void test_elementwise(void **state)
{
    (void)state;
    NEED_GPU();
    const nn_backend *be = gpu(), *cpu = nn_backend_get(NN_CPU);
    const size_t n = 70001;
    float *x = rand_host(11, n, -2, 2), *y = rand_host(12, n, -2, 2), *out = malloc(n * sizeof *out);
    float *dx = NULL, *dy = NULL;
    assert_int_equal(be->alloc((void **)&dx, n * sizeof(float)), NN_OK);
    assert_int_equal(be->alloc((void **)&dy, n * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(dx, NN_CUDA, x, NN_CPU, n * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(dy, NN_CUDA, y, NN_CPU, n * sizeof(float)), NN_OK);

    /* y += a x: one rounding apart at most (the GPU fuses the multiply-add) */
    assert_int_equal(be->axpy(n, -0.37f, dx, dy), NN_OK);
    assert_int_equal(cpu->axpy(n, -0.37f, x, y), NN_OK);
    assert_int_equal(be->copy(out, NN_CPU, dy, NN_CUDA, n * sizeof(float)), NN_OK);
    assert_match(out, y, n, 1e-6, 1e-7, "axpy");

    assert_int_equal(be->fill(dy, n, 2.5f), NN_OK);
    assert_int_equal(be->copy(out, NN_CPU, dy, NN_CUDA, n * sizeof(float)), NN_OK);
    for (size_t i = 0; i < n; i++) assert_true(out[i] == 2.5f);

    /* the non-finite count is exact */
    size_t cnt = 99;
    assert_int_equal(be->count_nonfinite(n, dx, &cnt), NN_OK);
    assert_int_equal(cnt, 0);
    x[0] = NAN;
    x[12345] = INFINITY;
    x[n - 1] = -INFINITY;
    assert_int_equal(be->copy(dx, NN_CUDA, x, NN_CPU, n * sizeof(float)), NN_OK);
    assert_int_equal(be->count_nonfinite(n, dx, &cnt), NN_OK);
    assert_int_equal(cnt, 3);
    be->free(dx);
    be->free(dy);
    free(x);
    free(y);
    free(out);
}

static void test_random_fills_match_the_cpu(void **state)
{
    (void)state;
    NEED_GPU();
    int s[1] = {100003};
    for (int k = 0; k < 2; k++) {
        nn_tensor *c = NULL, *g = NULL;
        assert_int_equal(nn_tensor_new(&c, NN_F32, NN_CPU, 1, s), NN_OK);
        assert_int_equal(nn_tensor_new(&g, NN_F32, NN_CUDA, 1, s), NN_OK);
        nn_rng rc = nn_rng_make(42 + k), rg = nn_rng_make(42 + k);
        nn_rng_take(&rc, 777); /* a nonzero offset */
        nn_rng_take(&rg, 777);
        if (k == 0) {
            assert_int_equal(nn_tensor_uniform(c, &rc, -0.3f, 1.7f), NN_OK);
            assert_int_equal(nn_tensor_uniform(g, &rg, -0.3f, 1.7f), NN_OK);
        } else {
            assert_int_equal(nn_tensor_normal(c, &rc, 0.5f, 0.01f), NN_OK);
            assert_int_equal(nn_tensor_normal(g, &rg, 0.5f, 0.01f), NN_OK);
        }
        assert_true(rc.offset == rg.offset);
        float *a = host_copy(c), *b = host_copy(g);
        /* Philox and the affine step are exact integer and IEEE operations:
         * uniform draws agree bit for bit. Box-Muller goes through double
         * log/cos, which CUDA and glibc round within an ulp of double, so a
         * float result could flip only within 2^-29 of a rounding boundary:
         * identical in practice, and never more than one float ulp apart. */
        size_t differ = 0;
        for (size_t i = 0; i < c->numel; i++) {
            if (a[i] == b[i]) continue;
            differ++;
            if (k == 0 || fabsf(a[i] - b[i]) > fabsf(nextafterf(a[i], INFINITY) - a[i]))
                fail_msg("%s draw %zu: GPU %.9g, CPU %.9g", k ? "normal" : "uniform", i, (double)b[i],
                         (double)a[i]);
        }
        if (differ > c->numel / 10000)
            fail_msg("normal draws: %zu of %zu differ in the last bit", differ, c->numel);
        free(a);
        free(b);
        nn_tensor_free(c);
        nn_tensor_free(g);
    }
}

/* ---- SGEMM ---- */

#if NN_HAVE_CUDA
/* One product on the GPU by kernel `v` against float64 (|error| <= tol of the
 * sum of |terms|), with leading dimensions padded by `pad` and every operand
 * offset by `shift` floats (breaks float4 alignment). False when the kernel
 * is not available here (TF32 below sm_80). */
static bool gemm_case_as(nn_gemm_variant v, double tol, bool ta, bool tb, int m, int n, int k, float alpha,
                         float beta, int pad, int shift, uint64_t seed)
{
    const nn_backend *be = gpu();
    const int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
    const size_t na = (size_t)(ta ? k : m) * lda + shift, nb = (size_t)(tb ? n : k) * ldb + shift,
                 nc = (size_t)m * ldc + shift;
    float *a = rand_host(seed, na, -1, 1), *b = rand_host(seed + 1, nb, -1, 1);
    float *c = rand_host(seed + 2, nc, -1, 1), *out = malloc(nc * sizeof *out);
    if (beta == 0.0f)
        for (size_t i = 0; i < nc; i++) c[i] = NAN; /* beta = 0 must not read C */
    float *da, *db, *dc;
    assert_int_equal(be->alloc((void **)&da, na * sizeof(float)), NN_OK);
    assert_int_equal(be->alloc((void **)&db, nb * sizeof(float)), NN_OK);
    assert_int_equal(be->alloc((void **)&dc, nc * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(da, NN_CUDA, a, NN_CPU, na * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(db, NN_CUDA, b, NN_CPU, nb * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(dc, NN_CUDA, c, NN_CPU, nc * sizeof(float)), NN_OK);
    nn_status s = nn_cuda_gemm_as(v, ta, tb, m, n, k, alpha, da + shift, lda, db + shift, ldb, beta, dc + shift,
                                  ldc);
    if (s == NN_E_UNSUPPORTED && v == NN_GEMM_TF32) {
        be->free(da);
        be->free(db);
        be->free(dc);
        free(a);
        free(b);
        free(c);
        free(out);
        return false;
    }
    if (s != NN_OK) fail_msg("sgemm (kernel %d): %s", (int)v, nn_errmsg());
    assert_int_equal(be->copy(out, NN_CPU, dc, NN_CUDA, nc * sizeof(float)), NN_OK);
    const float *A = a + shift, *B = b + shift, *C = c + shift, *O = out + shift;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double ref = 0, mag = 0;
            for (int p = 0; p < k; p++) {
                double x = A[ta ? (size_t)p * lda + i : (size_t)i * lda + p];
                double y = B[tb ? (size_t)j * ldb + p : (size_t)p * ldb + j];
                ref += x * y;
                mag += fabs(x * y);
            }
            ref *= alpha;
            mag *= fabs(alpha);
            if (beta != 0.0f) {
                ref += beta * (double)C[(size_t)i * ldc + j];
                mag += fabs(beta * (double)C[(size_t)i * ldc + j]);
            }
            double got = O[(size_t)i * ldc + j];
            if (!(fabs(got - ref) <= tol * (mag + 1e-30)))
                fail_msg("sgemm kernel %d %c%c %dx%dx%d (alpha %g beta %g pad %d shift %d): C[%d,%d] = %.9g, "
                         "reference %.9g", (int)v, ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, (double)alpha,
                         (double)beta, pad, shift, i, j, got, ref);
        }
        /* the padding between rows is untouched */
        for (int j = n; j < ldc && i < m; j++)
            if (memcmp(&O[(size_t)i * ldc + j], &C[(size_t)i * ldc + j], sizeof(float)))
                fail_msg("sgemm wrote outside C at row %d column %d", i, j);
    }
    be->free(da);
    be->free(db);
    be->free(dc);
    free(a);
    free(b);
    free(c);
    free(out);
    return true;
}

/* The kernel the ops get (NN_GEMM_AUTO), strict fp32 */
static void gemm_case(bool ta, bool tb, int m, int n, int k, float alpha, float beta, int pad, int shift,
                      uint64_t seed)
{
    gemm_case_as(NN_GEMM_AUTO, GEMM_TOL, ta, tb, m, n, k, alpha, beta, pad, shift, seed);
}

/* Every transpose of one size by kernel v, plain, then with beta and padded,
 * misaligned operands. False when the kernel is not available here. */
static bool gemm_all_forms(nn_gemm_variant v, double tol, int m, int n, int k, uint64_t seed)
{
    for (int tr = 0; tr < 4; tr++) {
        const bool ta = tr & 1, tb = tr & 2;
        if (!gemm_case_as(v, tol, ta, tb, m, n, k, 1.0f, 0.0f, 0, 0, seed + 10 * tr)) return false;
        gemm_case_as(v, tol, ta, tb, m, n, k, -0.5f, 0.75f, 3, 1, seed + 10 * tr + 5);
    }
    return true;
}
#endif

static void test_sgemm(void **state)
{
    (void)state;
    NEED_GPU();
#if NN_HAVE_CUDA
    /* awkward sizes: 1, 17, 129 and past 1000; small M*N with long K takes the split-K path */
    const int sizes[][3] = {
        {1, 1, 1}, {1, 17, 129}, {17, 1, 129}, {129, 17, 1}, {17, 129, 17}, {129, 129, 129},
        {1031, 17, 129}, {17, 1029, 67}, {1031, 1029, 33}, {33, 65, 5000}, {64, 100, 3000},
        {256, 256, 64},
    };
    uint64_t seed = 100;
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        for (int tr = 0; tr < 4; tr++) {
            const bool ta = tr & 1, tb = tr & 2;
            const int m = sizes[t][0], n = sizes[t][1], k = sizes[t][2];
            gemm_case(ta, tb, m, n, k, 1.0f, 0.0f, 0, 0, seed += 3);
            if (t % 3 == 0) gemm_case(ta, tb, m, n, k, -0.5f, 0.75f, 3, 1, seed += 3);
            if (t % 3 == 1) gemm_case(ta, tb, m, n, k, 2.0f, 1.0f, 4, 0, seed += 3);
        }
    }
#endif
}

/* Sizes that make NN_GEMM_AUTO pick each fp32 kernel, and every kernel forced
 * on ragged sizes in all four transposes (the 128x128 tiles run in NT and TT
 * forms too, which no op shape reaches on a small test). */
static void test_sgemm_variants(void **state)
{
    (void)state;
    NEED_GPU();
#if NN_HAVE_CUDA
    /* 33 x 5 tiles of 128 (165, more than any GPU's multiprocessors), ragged on every side */
    const int big[3] = {4100, 630, 37}, small[3] = {129, 129, 129}, longk[3] = {33, 65, 5000};
    assert_false(nn_cuda_tf32_enabled()); /* main() switched it off: the suite checks strict fp32 */
    assert_int_equal(nn_cuda_gemm_pick(big[0], big[1], big[2], 1), NN_GEMM_FP32_128);
    assert_int_equal(nn_cuda_gemm_pick(small[0], small[1], small[2], 1), NN_GEMM_FP32_64);
    assert_int_equal(nn_cuda_gemm_pick(longk[0], longk[1], longk[2], 1), NN_GEMM_FP32_SPLITK);
    gemm_all_forms(NN_GEMM_AUTO, GEMM_TOL, big[0], big[1], big[2], 700);
    gemm_all_forms(NN_GEMM_AUTO, GEMM_TOL, longk[0], longk[1], longk[2], 800);

    static const int forced[][3] = {{1, 1, 1}, {17, 129, 33}, {129, 17, 1}, {257, 130, 67}, {64, 100, 3000}};
    static const struct {
        nn_gemm_variant v;
        double tol;
        const char *name;
    } kernels[] = {
        {NN_GEMM_FP32_64, GEMM_TOL, "fp32 64x64"},
        {NN_GEMM_FP32_128, GEMM_TOL, "fp32 128x128"},
        {NN_GEMM_FP32_SPLITK, GEMM_TOL, "fp32 split-K"},
        {NN_GEMM_TF32, GEMM_TF32_TOL, "tf32 tensor cores"},
    };
    uint64_t seed = 900;
    for (size_t v = 0; v < sizeof kernels / sizeof kernels[0]; v++) {
        bool ran = true;
        for (size_t t = 0; ran && t < sizeof forced / sizeof forced[0]; t++)
            ran = gemm_all_forms(kernels[v].v, kernels[v].tol, forced[t][0], forced[t][1], forced[t][2],
                                 seed += 100);
        if (!ran) print_message("%s: not available on this device or build: skipped\n", kernels[v].name);
    }
    /* TF32 on a product with enough tiles not to split K, and one long-K split */
    if (gemm_all_forms(NN_GEMM_TF32, GEMM_TF32_TOL, big[0], big[1], 40, 990))
        gemm_all_forms(NN_GEMM_TF32, GEMM_TF32_TOL, longk[0], longk[1], longk[2], 995);
#endif
}

/* ---- the ops ---- */

typedef struct conv_case {
    int n, c, h, w, o, kh, kw;
    nn_conv2d_params p;
    bool bias;
    const char *what;
} conv_case;

static nn_tensor *conv_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    const conv_case *k = user;
    return nn_conv2d(ctx, in[0], in[1], k->bias ? in[2] : NULL, k->p);
}

static int conv_inputs(const conv_case *k, uint64_t seed, nn_tensor **in)
{
    int xs[4] = {k->n, k->c, k->h, k->w};
    int g = k->p.groups ? k->p.groups : 1;
    int ws[4] = {k->o, k->c / g, k->kh, k->kw};
    in[0] = rand_grad(seed, 4, xs);
    in[1] = rand_grad(seed + 1, 4, ws);
    if (!k->bias) return 2;
    in[2] = rand_grad(seed + 2, 1, &k->o);
    return 3;
}

static const conv_case conv_cases[] = {
    {2, 3, 19, 19, 8, 5, 5, {2, 2, 2, 2, 1}, true, "conv 5x5 stride 2 pad 2"},
    {2, 3, 35, 35, 6, 11, 11, {4, 4, 2, 2, 1}, true, "conv 11x11 stride 4 (conv1)"},
    {3, 4, 9, 7, 6, 3, 3, {1, 1, 1, 1, 2}, true, "conv 3x3 pad 1 groups 2"},
    {2, 5, 6, 6, 3, 1, 1, {0}, false, "conv 1x1 no bias"},
    {2, 3, 8, 9, 4, 3, 2, {1, 2, 1, 0, 1}, true, "conv 3x2 stride 1x2 pad 1x0"},
    {1, 6, 5, 5, 6, 3, 3, {1, 1, 1, 1, 6}, true, "conv depthwise"},
    /* ~11 MB of columns a sample against a 64 MB workspace: several chunks, the last short */
    {7, 32, 96, 96, 8, 3, 3, {1, 1, 1, 1, 1}, true, "conv in chunks"},
    /* 4 x 1,200 (sample, channel) planes of dx, more than the plane grid's
     * rows (4,224 at 132 SMs): col2im's threads walk several, carrying into s */
    {4, 1200, 2, 2, 2, 1, 1, {0}, true, "conv with many planes"},
};

static void test_conv2d(void **state)
{
    (void)state;
    NEED_GPU();
    for (size_t t = 0; t < sizeof conv_cases / sizeof conv_cases[0]; t++) {
        nn_tensor *in[3] = {0};
        int nin = conv_inputs(&conv_cases[t], 200 + 10 * t, in);
        compare_op(conv_fn, (void *)&conv_cases[t], nin, in, 300 + t, GPU_RTOL, GPU_ATOL_SCALE,
                   conv_cases[t].what);
        for (int i = 0; i < nin; i++) nn_tensor_free(in[i]);
    }
}

static void test_conv2d_gradcheck(void **state)
{
    (void)state;
    NEED_GPU();
    const conv_case gc[] = {
        {2, 4, 7, 5, 4, 3, 3, {2, 2, 1, 1, 2}, true, "gpu gradcheck: conv stride 2, groups 2"},
        {2, 3, 5, 6, 4, 3, 2, {1, 1, 1, 0, 1}, true, "gpu gradcheck: conv 3x2 pad 1x0"},
        {2, 3, 5, 5, 2, 1, 1, {2, 2, 0, 0, 1}, false, "gpu gradcheck: conv 1x1 stride 2"},
    };
    for (size_t t = 0; t < sizeof gc / sizeof gc[0]; t++) {
        nn_tensor *in[3] = {0};
        int nin = conv_inputs(&gc[t], 400 + 10 * t, in);
        gradcheck_gpu(conv_fn, (void *)&gc[t], nin, in, 500 + t, gc[t].what);
        for (int i = 0; i < nin; i++) nn_tensor_free(in[i]);
    }
}

#if NN_HAVE_CUDA
/* The implicit GEMM's forward (and data gradient, below) against im2col +
 * GEMM's: both sum the same K
 * terms in fp32, in the same order unless the im2col GEMM splits K (then
 * they agree bit for bit: the count of identical elements is printed), so
 * they differ by the roundings of two fp32 sums: judged against the sum of
 * |terms| (|w| conv |x| + |b|, itself a conv by the im2col path), 1e-5 as
 * GEMM_TOL. One tap read from the wrong place errs by ~1/K of that sum or
 * more: 3e-4 at the largest K here (3456). */
#define CONV_IMPLICIT_TOL 1e-5
/* The tensor-core way (NN_CONV_IMPLICIT_TF32) rounds its operands to TF32;
 * given operands already so rounded (tf32_host) both ways multiply the same
 * values exactly and differ only in how fp32 sums round: the mma's own
 * additions may truncate, so a wider margin than CONV_IMPLICIT_TOL, still
 * under the ~1/K that a wrong tap costs (3e-4 at K = 3456). */
#define CONV_IMPLICIT_TF32_TOL 1e-4

static double implicit_tol(nn_conv_variant way)
{
    return way == NN_CONV_IMPLICIT_TF32 ? CONV_IMPLICIT_TF32_TOL : CONV_IMPLICIT_TOL;
}

/* x rounded as cvt.rna.tf32 does: 10 mantissa bits, to nearest, ties away from zero */
static float tf32_host(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = (u + 0x1000u) & ~0x1FFFu;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* random operands in [-1, 1), rounded to TF32 for the tensor-core way */
static float *rand_operand(nn_conv_variant way, uint64_t seed, size_t n)
{
    float *h = rand_host(seed, n, -1, 1);
    if (way == NN_CONV_IMPLICIT_TF32)
        for (size_t i = 0; i < n; i++) h[i] = tf32_host(h[i]);
    return h;
}

/* a device copy of n host floats */
static float *dev_copy(const float *h, size_t n)
{
    float *d = NULL;
    assert_int_equal(gpu()->alloc((void **)&d, (n ? n : 1) * sizeof *d), NN_OK);
    assert_int_equal(gpu()->copy(d, NN_CUDA, h, NN_CPU, n * sizeof *d), NN_OK);
    return d;
}

static float *host_abs(const float *h, size_t n)
{
    float *a = malloc((n ? n : 1) * sizeof *a);
    assert_non_null(a);
    for (size_t i = 0; i < n; i++) a[i] = fabsf(h[i]);
    return a;
}

/* y by `v` into a NaN-filled buffer (every element must be written), read back */
static float *conv_as(nn_conv_variant v, const nn_conv2d_geom *g, const float *x, const float *w, const float *b,
                      void *ws, size_t ny, const char *what)
{
    float *h = malloc(ny * sizeof *h);
    assert_non_null(h);
    for (size_t i = 0; i < ny; i++) h[i] = NAN;
    float *y = dev_copy(h, ny);
    if (nn_cuda_conv2d_forward_as(v, g, x, w, b, y, ws) != NN_OK)
        fail_msg("%s: conv2d forward (way %d): %s", what, (int)v, nn_errmsg());
    assert_int_equal(gpu()->copy(h, NN_CPU, y, NN_CUDA, ny * sizeof *h), NN_OK);
    gpu()->free(y);
    return h;
}

/* dx0 + the data gradient for dy by `v` (dx starts at dx0: the kernels accumulate), read back */
static float *conv_dx_as(nn_conv_variant v, const nn_conv2d_geom *g, const float *w, const float *dy,
                         const float *dx0, void *ws, size_t nx, const char *what)
{
    float *h = malloc(nx * sizeof *h);
    assert_non_null(h);
    float *dx = dev_copy(dx0, nx);
    if (nn_cuda_conv2d_backward_as(v, g, NULL, w, dy, dx, NULL, NULL, ws) != NN_OK)
        fail_msg("%s: conv2d data gradient (way %d): %s", what, (int)v, nn_errmsg());
    assert_int_equal(gpu()->copy(h, NN_CPU, dx, NN_CUDA, nx * sizeof *h), NN_OK);
    gpu()->free(dx);
    return h;
}

/* The data gradients likewise (col2im sums in another order: never bitwise
 * in general); the scale is |dx0| + |w|^T |dy| by the im2col path. */
static void conv_implicit_dx_case(nn_conv_variant way, const nn_conv2d_geom *g, const char *what, const float *dw,
                                  const float *daw, void *ws, uint64_t seed)
{
    const size_t nx = (size_t)g->n * g->c * g->h * g->w, ny = (size_t)g->n * g->oc * g->oh * g->ow;
    const double tol = implicit_tol(way);
    float *dy = rand_operand(way, seed, ny), *dx0 = rand_host(seed + 1, nx, -1, 1);
    float *ady = host_abs(dy, ny), *adx0 = host_abs(dx0, nx);
    float *ddy = dev_copy(dy, ny), *dady = dev_copy(ady, ny);
    float *mag = conv_dx_as(NN_CONV_IM2COL, g, daw, dady, adx0, ws, nx, what);
    float *ref = conv_dx_as(NN_CONV_IM2COL, g, dw, ddy, dx0, ws, nx, what);
    float *got = conv_dx_as(way, g, dw, ddy, dx0, ws, nx, what);
    double worst = 0;
    for (size_t i = 0; i < nx; i++) {
        const double scale = (double)mag[i] + 1e-30, d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= tol * scale))
            fail_msg("%s, dx: element %zu is %.9g by the implicit GEMM, %.9g by im2col (|diff| %.3g, sum of "
                     "|terms| %.3g)", what, i, (double)got[i], (double)ref[i], d, scale);
        worst = fmax(worst, d / scale);
    }
    print_message("%-44s dx: worst |diff| %.2g of the sum of |terms|\n", what, worst);
    gpu()->free(ddy);
    gpu()->free(dady);
    free(mag);
    free(ref);
    free(got);
    free(dy);
    free(dx0);
    free(ady);
    free(adx0);
}

/* dw0 + the weight gradient (and db0 + the bias gradient when db0) by `v`,
 * read back into *dw_out and *db_out */
static void conv_dw_as(nn_conv_variant v, const nn_conv2d_geom *g, const float *x, const float *dy, const float *dw0,
                       const float *db0, void *ws, float **dw_out, float **db_out, const char *what)
{
    const size_t nw = (size_t)g->oc * (g->c / g->groups) * g->kh * g->kw;
    float *dw = dev_copy(dw0, nw), *db = db0 ? dev_copy(db0, g->oc) : NULL;
    if (nn_cuda_conv2d_backward_as(v, g, x, NULL, dy, NULL, dw, db, ws) != NN_OK)
        fail_msg("%s: conv2d weight gradient (way %d): %s", what, (int)v, nn_errmsg());
    *dw_out = malloc(nw * sizeof **dw_out);
    assert_non_null(*dw_out);
    assert_int_equal(gpu()->copy(*dw_out, NN_CPU, dw, NN_CUDA, nw * sizeof **dw_out), NN_OK);
    gpu()->free(dw);
    if (db) {
        *db_out = malloc(g->oc * sizeof **db_out);
        assert_non_null(*db_out);
        assert_int_equal(gpu()->copy(*db_out, NN_CPU, db, NN_CUDA, g->oc * sizeof **db_out), NN_OK);
        gpu()->free(db);
    }
}

/* |got - ref| <= tol * scale elementwise; the worst ratio */
static double within_scale(const float *got, const float *ref, const float *scale, size_t n, double tol,
                           const char *what, const char *part)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        const double sc = (double)scale[i] + 1e-30, d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= tol * sc))
            fail_msg("%s, %s: element %zu is %.9g by the implicit GEMM, %.9g by im2col (|diff| %.3g, sum of "
                     "|terms| %.3g)", what, part, i, (double)got[i], (double)ref[i], d, sc);
        worst = fmax(worst, d / sc);
    }
    return worst;
}

/* The weight and bias gradients likewise, db both by the separate kernel and
 * fused into the dw product (NN_FUSE_BIAS_GRAD): the implicit GEMM sums over
 * the whole batch (split in slices), im2col + GEMM chunk by chunk, so only
 * the roundings agree to the tolerance; the scales are |dw0| + |dy| |x|^T by
 * the im2col path and |db0| + the sums of |dy| in float64. */
static void conv_implicit_dw_case(nn_conv_variant way, const nn_conv2d_geom *g, const char *what, const float *dx,
                                  const float *dax, void *ws, uint64_t seed)
{
    const size_t ny = (size_t)g->n * g->oc * g->oh * g->ow, p = (size_t)g->oh * g->ow,
                 nw = (size_t)g->oc * (g->c / g->groups) * g->kh * g->kw;
    const double tol = implicit_tol(way);
    float *dy = rand_operand(way, seed, ny), *dw0 = rand_host(seed + 1, nw, -1, 1), *db0 = rand_host(seed + 2, g->oc, -1, 1);
    float *ady = host_abs(dy, ny), *adw0 = host_abs(dw0, nw), *bmag = host_abs(db0, g->oc);
    for (size_t i = 0; i < ny; i++) bmag[i / p % g->oc] = (float)((double)bmag[i / p % g->oc] + ady[i]);
    float *ddy = dev_copy(dy, ny), *dady = dev_copy(ady, ny);
    float *wmag, *unused = NULL;
    conv_dw_as(NN_CONV_IM2COL, g, dax, dady, adw0, NULL, ws, &wmag, &unused, what);
    for (int fuse = 0; fuse <= 1; fuse++) {
        nn_cuda_fuse_bias_grad_set(fuse);
        float *ref_w, *ref_b, *got_w, *got_b;
        conv_dw_as(NN_CONV_IM2COL, g, dx, ddy, dw0, db0, ws, &ref_w, &ref_b, what);
        conv_dw_as(way, g, dx, ddy, dw0, db0, ws, &got_w, &got_b, what);
        const double ww = within_scale(got_w, ref_w, wmag, nw, tol, what, fuse ? "dw (db fused)" : "dw");
        const double wb = within_scale(got_b, ref_b, bmag, g->oc, tol, what, fuse ? "db fused" : "db");
        print_message("%-44s dw%s: worst |diff| %.2g, db %.2g of the sum of |terms|\n", what,
                      fuse ? " (db fused)" : "", ww, wb);
        free(ref_w), free(ref_b), free(got_w), free(got_b);
    }
    nn_cuda_fuse_bias_grad_set(-1);
    gpu()->free(ddy);
    gpu()->free(dady);
    free(wmag);
    free(dy), free(dw0), free(db0), free(ady), free(adw0), free(bmag);
}

static void conv_implicit_case(nn_conv_variant way, const conv_shape *cs, uint64_t seed)
{
    const nn_backend *be = gpu();
    const nn_conv2d_geom g = conv_shape_geom(cs);
    const size_t nx = (size_t)g.n * g.c * g.h * g.w, nw = (size_t)g.oc * (g.c / g.groups) * g.kh * g.kw,
                 ny = (size_t)g.n * g.oc * g.oh * g.ow, p = (size_t)g.oh * g.ow;
    const double tol = implicit_tol(way);
    float *x = rand_operand(way, seed, nx), *w = rand_operand(way, seed + 1, nw), *b = rand_host(seed + 2, g.oc, -1, 1);
    float *ax = host_abs(x, nx), *aw = host_abs(w, nw);
    float *dx = dev_copy(x, nx), *dw = dev_copy(w, nw), *db = dev_copy(b, g.oc), *dax = dev_copy(ax, nx),
          *daw = dev_copy(aw, nw);
    void *ws = NULL; /* the im2col path's (the implicit one needs none) */
    assert_int_equal(be->alloc(&ws, nn_cuda_conv2d_workspace_as(NN_CONV_IM2COL, &g)), NN_OK);
    assert_true(nn_cuda_conv2d_workspace_as(way, &g) == 0);
    float *mag = conv_as(NN_CONV_IM2COL, &g, dax, daw, NULL, ws, ny, cs->what);
    /* with the bias, without, and with the bias and the fused ReLU (NN_FUSE_RELU's nn_conv2d_relu) */
    static const char *const form_name[3] = {"", " (no bias)", " (relu)"};
    for (int form = 0; form < 3; form++) {
        const int with_bias = form != 1;
        nn_conv2d_geom gf = g;
        gf.relu = form == 2;
        float *ref = conv_as(NN_CONV_IM2COL, &gf, dx, dw, with_bias ? db : NULL, ws, ny, cs->what);
        float *got = conv_as(way, &gf, dx, dw, with_bias ? db : NULL, ws, ny, cs->what);
        size_t same = 0;
        double worst = 0;
        for (size_t i = 0; i < ny; i++) {
            const double scale = (double)mag[i] + (with_bias ? fabs((double)b[i / p % g.oc]) : 0.0) + 1e-30;
            const double d = fabs((double)got[i] - (double)ref[i]);
            if (!(d <= tol * scale))
                fail_msg("%s%s: element %zu is %.9g by the implicit GEMM, %.9g by im2col (|diff| %.3g, sum of "
                         "|terms| %.3g)", cs->what, form_name[form], i, (double)got[i], (double)ref[i], d, scale);
            same += got[i] == ref[i];
            worst = fmax(worst, d / scale);
        }
        print_message("%-44s%s: %zu of %zu identical, worst |diff| %.2g of the sum of |terms|\n", cs->what,
                      form_name[form], same, ny, worst);
        free(ref);
        free(got);
    }
    free(mag);
    conv_implicit_dx_case(way, &g, cs->what, dw, daw, ws, seed + 3);
    conv_implicit_dw_case(way, &g, cs->what, dx, dax, ws, seed + 5);
    be->free(ws);
    be->free(dx);
    be->free(dw);
    be->free(db);
    be->free(dax);
    be->free(daw);
    free(x);
    free(w);
    free(b);
    free(ax);
    free(aw);
}
#endif

/* Every AlexNet conv shape (paper, groups 1 and 2; default model) and ragged
 * ones (tests/conv_shapes.h, whose index math test_conv_index checks on the
 * CPU), including a shape that takes the 128x128 tiles. */
static void test_conv2d_implicit(void **state)
{
    (void)state;
    NEED_GPU();
#if NN_HAVE_CUDA
    const bool emulated = gpu_emulated();
    for (int t = 0; t < CONV_SHAPES; t++) {
        if (conv_shapes[t].big && emulated && !gpu_emulated_paper()) {
            print_message("%-44s: left to a real GPU (emulated)\n", conv_shapes[t].what);
            continue;
        }
        conv_implicit_case(NN_CONV_IMPLICIT, &conv_shapes[t], 1300 + 10 * (uint64_t)t);
        if (!nn_cuda_tf32_supported()) continue; /* said once below */
        if (emulated && !conv_shapes[t].tf32_emulated) continue; /* its mma is slow there: the marked shapes */
        char what[64];
        snprintf(what, sizeof what, "%s, tf32", conv_shapes[t].what);
        conv_shape tf = conv_shapes[t];
        tf.what = what;
        conv_implicit_case(NN_CONV_IMPLICIT_TF32, &tf, 1300 + 10 * (uint64_t)t);
    }
    if (!nn_cuda_tf32_supported()) print_message("the tensor-core way: not on this device (below sm_80)\n");
#endif
}

static nn_tensor *relu_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    return nn_relu(ctx, in[0]);
}

static void test_relu(void **state)
{
    (void)state;
    NEED_GPU();
    int s[4] = {3, 5, 7, 11};
    nn_tensor *x = rand_grad(600, 4, s);
    /* max and a masked copy: exact on both devices */
    compare_op(relu_fn, NULL, 1, &x, 601, 0.0, 0.0, "relu");
    nn_tensor_free(x);
    int g[2] = {4, 6};
    x = rand_grad(602, 2, g);
    gradcheck_gpu(relu_fn, NULL, 1, &x, 603, "gpu gradcheck: relu");
    nn_tensor_free(x);
}

static nn_tensor *lrn_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_lrn(ctx, in[0], *(const nn_lrn_params *)user);
}

static void test_lrn(void **state)
{
    (void)state;
    NEED_GPU();
    const nn_lrn_params ps[] = {NN_LRN_PAPER, {3, 0.5f, 0.6f, 1.0f}, {4, 0.8f, 1.2f, 1.5f}};
    for (size_t t = 0; t < 3; t++) {
        int s[4] = {2, 11, 5, 6};
        nn_tensor *x = tu_rand(700 + t, -3.0f, 3.0f, 4, s);
        assert_int_equal(nn_tensor_require_grad(x), NN_OK);
        nn_lrn_params p = ps[t];
        compare_op(lrn_fn, &p, 1, &x, 710 + t, GPU_TRANS_RTOL, GPU_TRANS_ATOL_SCALE, "lrn");
        nn_tensor_free(x);
        int g[4] = {1, 5, 2, 3};
        x = tu_rand(720 + t, -1.5f, 1.5f, 4, g);
        assert_int_equal(nn_tensor_require_grad(x), NN_OK);
        /* alpha large so the cross-channel term matters in the check */
        nn_lrn_params pg = {p.size, 0.5f, p.beta, p.k};
        gradcheck_gpu(lrn_fn, &pg, 1, &x, 730 + t, "gpu gradcheck: lrn");
        nn_tensor_free(x);
    }
    /* more planes (6,000) than the kernels' grid has rows (nn_cuda_plane_grid:
     * 32 blocks per SM, 4,224 on 132 SMs), so a thread walks several planes
     * and its channel carries past C */
    int many[4] = {4, 1500, 1, 2};
    nn_tensor *x = tu_rand(740, -3.0f, 3.0f, 4, many);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_lrn_params p = NN_LRN_PAPER;
    compare_op(lrn_fn, &p, 1, &x, 741, GPU_TRANS_RTOL, GPU_TRANS_ATOL_SCALE, "lrn, many planes");
    nn_tensor_free(x);
}

static nn_tensor *pool_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_maxpool2d(ctx, in[0], *(const nn_pool_params *)user);
}

static void test_maxpool(void **state)
{
    (void)state;
    NEED_GPU();
    const nn_pool_params ps[] = {
        {3, 3, 2, 2, 0, 0}, /* AlexNet: overlapping windows */
        {3, 3, 2, 2, 1, 1},
        {2, 2, 0, 0, 0, 0},
        {3, 2, 1, 2, 1, 1},
    };
    for (size_t t = 0; t < sizeof ps / sizeof ps[0]; t++) {
        int s[4] = {2, 3, 13, 11};
        nn_pool_params p = ps[t];
        /* continuous values, then small integers full of ties: the tie rule
         * (first maximum in row-major window order) and the order the
         * gradient adds up in are the same, so both must match exactly */
        for (int ties = 0; ties < 2; ties++) {
            nn_tensor *x = tu_rand(800 + t, -2.0f, 2.0f, 4, s);
            if (ties)
                for (size_t i = 0; i < x->numel; i++) nn_f32(x)[i] = floorf(nn_f32(x)[i]);
            assert_int_equal(nn_tensor_require_grad(x), NN_OK);
            compare_op(pool_fn, &p, 1, &x, 810 + t, 0.0, 0.0, ties ? "maxpool with ties" : "maxpool");
            nn_tensor_free(x);
        }
        /* distinct values 0.1 apart: no point of the check straddles an argmax change */
        int g[4] = {1, 2, 6, 5};
        nn_tensor *x = NULL;
        assert_int_equal(nn_tensor_new(&x, NN_F32, NN_CPU, 4, g), NN_OK);
        int32_t perm[60];
        for (int i = 0; i < 60; i++) perm[i] = i;
        nn_rng r = nn_rng_make(820 + t);
        nn_rng_shuffle(&r, perm, 60);
        for (int i = 0; i < 60; i++) nn_f32(x)[i] = 0.1f * (float)perm[i] - 3.0f;
        assert_int_equal(nn_tensor_require_grad(x), NN_OK);
        gradcheck_gpu(pool_fn, &p, 1, &x, 830 + t, "gpu gradcheck: maxpool");
        nn_tensor_free(x);
    }
    /* more planes (6,000) than the kernels' grid has rows (as in test_lrn) */
    int many[4] = {4, 1500, 3, 3};
    nn_tensor *x = tu_rand(840, -2.0f, 2.0f, 4, many);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    nn_pool_params alexnet = ps[0];
    compare_op(pool_fn, &alexnet, 1, &x, 841, 0.0, 0.0, "maxpool, many planes");
    nn_tensor_free(x);
}

static nn_tensor *dropout_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_dropout(ctx, in[0], *(const float *)user);
}

static void test_dropout(void **state)
{
    (void)state;
    NEED_GPU();
    /* the op: same generator state, so the same masks; x / (1 - p) is one
     * IEEE division on both devices, so y and dx agree bit for bit */
    const float ps[] = {0.5f, 0.1f, 0.9f, 1.0f};
    for (size_t t = 0; t < 4; t++) {
        int s[2] = {37, 129};
        nn_tensor *x = rand_grad(900 + t, 2, s);
        float p = ps[t];
        compare_op(dropout_fn, &p, 1, &x, 910 + t, 0.0, 0.0, "dropout");
        nn_tensor_free(x);
    }
    /* the kernels: masks identical byte for byte at an offset, odd length */
    const nn_backend *be = gpu(), *cpu = nn_backend_get(NN_CPU);
    const size_t n = 100003;
    float *x = rand_host(920, n, -1, 1), *yc = malloc(n * sizeof *yc), *yg = malloc(n * sizeof *yg);
    uint8_t *mc = malloc(n), *mg = malloc(n);
    float *dx, *dy;
    uint8_t *dm;
    assert_int_equal(be->alloc((void **)&dx, n * sizeof(float)), NN_OK);
    assert_int_equal(be->alloc((void **)&dy, n * sizeof(float)), NN_OK);
    assert_int_equal(be->alloc((void **)&dm, n), NN_OK);
    assert_int_equal(be->copy(dx, NN_CUDA, x, NN_CPU, n * sizeof(float)), NN_OK);
    for (int k = 0; k < 2; k++) {
        const float p = k ? 0.3f : 0.5f;
        assert_int_equal(cpu->dropout_forward(n, x, yc, mc, p, 1234 + k, 98765), NN_OK);
        assert_int_equal(be->dropout_forward(n, dx, dy, dm, p, 1234 + k, 98765), NN_OK);
        assert_int_equal(be->copy(mg, NN_CPU, dm, NN_CUDA, n), NN_OK);
        assert_int_equal(be->copy(yg, NN_CPU, dy, NN_CUDA, n * sizeof(float)), NN_OK);
        assert_identical(mg, mc, n, "dropout mask");
        assert_identical(yg, yc, n * sizeof(float), "dropout output");
    }
    be->free(dx);
    be->free(dy);
    be->free(dm);
    free(x);
    free(yc);
    free(yg);
    free(mc);
    free(mg);

    int g[2] = {3, 7};
    nn_tensor *xg = rand_grad(930, 2, g);
    float p = 0.5f;
    gradcheck_gpu(dropout_fn, &p, 1, &xg, 931, "gpu gradcheck: dropout");
    nn_tensor_free(xg);
}

static nn_tensor *linear_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    return nn_linear(ctx, in[0], in[1], user ? in[2] : NULL);
}

static void test_linear(void **state)
{
    (void)state;
    NEED_GPU();
    const int shapes[][3] = {{1, 17, 129}, {33, 1031, 10}, {128, 256, 200}, {5, 1, 1}};
    for (size_t t = 0; t < 4; t++) {
        int xs[2] = {shapes[t][0], shapes[t][1]}, ws[2] = {shapes[t][2], shapes[t][1]};
        nn_tensor *in[3] = {rand_grad(1000 + t, 2, xs), rand_grad(1010 + t, 2, ws),
                            rand_grad(1020 + t, 1, &shapes[t][2])};
        bool bias = t != 3;
        compare_op(linear_fn, bias ? (void *)1 : NULL, bias ? 3 : 2, in, 1030 + t, GPU_RTOL, GPU_ATOL_SCALE,
                   "linear");
        for (int i = 0; i < 3; i++) nn_tensor_free(in[i]);
    }
    int xs[2] = {3, 5}, ws[2] = {4, 5}, bs = 4;
    nn_tensor *in[3] = {rand_grad(1040, 2, xs), rand_grad(1041, 2, ws), rand_grad(1042, 1, &bs)};
    gradcheck_gpu(linear_fn, (void *)1, 3, in, 1043, "gpu gradcheck: linear");
    for (int i = 0; i < 3; i++) nn_tensor_free(in[i]);
}

static nn_tensor *xent_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    return nn_softmax_xent(ctx, in[0], in[1]);
}

static void test_softmax_xent(void **state)
{
    (void)state;
    NEED_GPU();
    const int shapes[][2] = {{37, 10}, {5, 1000}, {1, 3}, {300, 7}};
    for (size_t t = 0; t < 4; t++) {
        int s[2] = {shapes[t][0], shapes[t][1]};
        nn_tensor *in[2] = {tu_rand(1100 + t, -4.0f, 4.0f, 2, s), rand_labels(1110 + t, s[0], s[1])};
        assert_int_equal(nn_tensor_require_grad(in[0]), NN_OK);
        compare_op(xent_fn, NULL, 2, in, 1120 + t, GPU_TRANS_RTOL, GPU_TRANS_ATOL_SCALE, "softmax_xent");
        nn_tensor_free(in[0]);
        nn_tensor_free(in[1]);
    }
    int s[2] = {3, 5};
    nn_tensor *in[2] = {tu_rand(1130, -3, 3, 2, s), rand_labels(1131, 3, 5)};
    assert_int_equal(nn_tensor_require_grad(in[0]), NN_OK);
    gradcheck_gpu(xent_fn, NULL, 2, in, 1132, "gpu gradcheck: softmax_xent");
    nn_tensor_free(in[0]);
    nn_tensor_free(in[1]);

    /* a bad label, found on the device: the CPU's status and message */
    int ls[2] = {6, 10}, n = 6;
    int32_t lab[6] = {0, 9, 1, 12, -1, 3};
    nn_tensor *lc = tu_rand(1140, -1, 1, 2, ls), *l = to_gpu(lc), *y = NULL;
    assert_int_equal(nn_tensor_from(&y, NN_I32, NN_CUDA, 1, &n, lab), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    assert_null(nn_softmax_xent(ctx, l, y));
    assert_int_equal(nn_ctx_status(ctx), NN_E_RANGE);
    if (!strstr(nn_ctx_errmsg(ctx), "softmax_xent: label 12 of sample 3 is outside [0, 10)"))
        fail_msg("unexpected message: %s", nn_ctx_errmsg(ctx));
    nn_ctx_free(ctx);
    nn_tensor_free(lc);
    nn_tensor_free(l);
    nn_tensor_free(y);
}

/* NN_CUDA_LAZY_CHECKS: a bad label is flagged on the device and reported, with
 * the eager check's status and message, by the next synchronizing call (the
 * loss read, or nn_cuda_sync) and only once; the first of two bad batches
 * wins; good labels give the eager path's loss bit for bit. */
static void test_xent_lazy_label_check(void **state)
{
    (void)state;
    NEED_GPU();
#if NN_HAVE_CUDA
    int ls[2] = {6, 10}, n = 6;
    int32_t bad1[6] = {0, 9, 1, 12, -1, 3}, bad2[6] = {10, 0, 0, 0, 0, 0}, good[6] = {0, 9, 1, 2, 5, 3};
    nn_tensor *lc = tu_rand(1150, -1, 1, 2, ls), *l = to_gpu(lc), *y1 = NULL, *y2 = NULL, *yg = NULL;
    assert_int_equal(nn_tensor_from(&y1, NN_I32, NN_CUDA, 1, &n, bad1), NN_OK);
    assert_int_equal(nn_tensor_from(&y2, NN_I32, NN_CUDA, 1, &n, bad2), NN_OK);
    assert_int_equal(nn_tensor_from(&yg, NN_I32, NN_CUDA, 1, &n, good), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    float eager = 0, lazy = 0, v = 0;
    nn_tensor *loss = nn_softmax_xent(ctx, l, yg);
    assert_non_null(loss);
    assert_int_equal(nn_tensor_read(loss, &eager), NN_OK);

    nn_cuda_set_lazy_checks(true);
    /* good labels first: the flag word starts clear (a first check that read
     * it before it was set would report a label no batch had) */
    loss = nn_softmax_xent(ctx, l, yg);
    assert_non_null(loss);
    assert_int_equal(nn_tensor_read(loss, &lazy), NN_OK);
    assert_memory_equal(&eager, &lazy, sizeof eager);
    /* the op itself does not wait: it succeeds, the read fails */
    assert_non_null(nn_softmax_xent(ctx, l, y1));
    loss = nn_softmax_xent(ctx, l, y2);
    assert_non_null(loss);
    assert_int_equal(nn_ctx_status(ctx), NN_OK);
    assert_int_equal(nn_tensor_read(loss, &v), NN_E_RANGE);
    if (!strstr(nn_errmsg(), "softmax_xent: label 12 of sample 3 is outside [0, 10)"))
        fail_msg("unexpected message: %s", nn_errmsg());
    assert_int_equal(nn_tensor_read(loss, &v), NN_OK); /* reported once */
    /* at a plain sync too */
    assert_non_null(nn_softmax_xent(ctx, l, y2));
    assert_int_equal(gpu()->sync(), NN_E_RANGE);
    if (!strstr(nn_errmsg(), "softmax_xent: label 10 of sample 0 is outside [0, 10)"))
        fail_msg("unexpected message: %s", nn_errmsg());
    loss = nn_softmax_xent(ctx, l, yg);
    assert_non_null(loss);
    assert_int_equal(nn_tensor_read(loss, &lazy), NN_OK);
    nn_cuda_set_lazy_checks(false);
    assert_memory_equal(&eager, &lazy, sizeof eager);

    nn_ctx_free(ctx);
    nn_tensor_free(lc);
    nn_tensor_free(l);
    nn_tensor_free(y1);
    nn_tensor_free(y2);
    nn_tensor_free(yg);
#endif
}

/* Fashion-MNIST kept on the GPU (io/resident.h): every batch of two epochs
 * is the CPU loader's bit for bit (the kernel rounds each product and sum as
 * the C code does: io/sample.h), at AlexNet's size and the input's, with and
 * without augmentation, a partial final batch included. */
static void test_resident_data_matches_the_loader(void **state)
{
    (void)state;
    NEED_GPU();
    nn_dataset d = {.n = 45, .c = 1, .h = 28, .w = 28, .classes = 10};
    d.images = malloc((size_t)45 * 784);
    d.labels = malloc(45 * sizeof *d.labels);
    assert_true(d.images && d.labels);
    for (size_t i = 0; i < (size_t)45 * 784; i++) d.images[i] = (uint8_t)(nn_philox(i, 1200).v[0] & 0xFF);
    for (int i = 0; i < 45; i++) d.labels[i] = (int32_t)(nn_philox(i, 1201).v[0] % 10);
    const int sizes[] = {224, 28, 67};
    for (size_t t = 0; t < 3; t++) {
        nn_loader_config c = {.batch = 16, .size = sizes[t], .shuffle = true, .augment = t != 1,
                              .mean = 0.286f, .std = 0.353f, .seed = 1202 + t};
        tu_resident_matches_loader(&d, &c, NN_CUDA, NULL, NULL);
    }
    nn_dataset_free(&d);
}

/* Every registered op (ops/registry.h) through the registry alone, so a new
 * op is covered here with no edit: its gradcheck case drawn on the CPU for a
 * few seeds, the GPU against the CPU (output and every gradient), then a
 * gradient check on the GPU. The GEMM tolerance holds for every op; the
 * exact and transcendental ones have tighter tests above. */
static void test_every_registered_op(void **state)
{
    (void)state;
    NEED_GPU();
    for (int i = 0; i < nn_op_count(); i++)
        for (uint64_t seed = 1; seed <= 4; seed++) {
            const nn_op_info *op = nn_ops[i];
            nn_op_case c;
            memset(&c, 0, sizeof c);
            nn_rng r = nn_rng_make(1500 + 100 * (uint64_t)i + seed);
            if (op->gc_case(&c, &r, NN_CPU) != NN_OK) fail_msg("%s: case: %s", op->name, nn_errmsg());
            char what[192];
            snprintf(what, sizeof what, "registry: %s (%s)", op->name, c.about);
            compare_op(op->call, &c, c.n, c.in, 1600 + seed, GPU_RTOL, GPU_ATOL_SCALE, what);
            gradcheck_gpu(op->call, &c, c.n, c.in, 1700 + seed, what);
            nn_op_case_free(&c);
        }
}

static void test_optimizers(void **state)
{
    (void)state;
    NEED_GPU();
    const nn_backend *be = gpu(), *cpu = nn_backend_get(NN_CPU);
    const size_t n = 10007;
    float *w = rand_host(1200, n, -1, 1), *g = rand_host(1201, n, -1, 1);
    float *m = rand_host(1202, n, -0.1f, 0.1f), *v = rand_host(1203, n, 0.0f, 0.01f);
    float *out = malloc(n * sizeof *out);
    float *dw, *dg, *dm, *dv;
    assert_int_equal(be->alloc((void **)&dw, n * sizeof(float)), NN_OK);
    assert_int_equal(be->alloc((void **)&dg, n * sizeof(float)), NN_OK);
    assert_int_equal(be->alloc((void **)&dm, n * sizeof(float)), NN_OK);
    assert_int_equal(be->alloc((void **)&dv, n * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(dw, NN_CUDA, w, NN_CPU, n * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(dg, NN_CUDA, g, NN_CPU, n * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(dm, NN_CUDA, m, NN_CPU, n * sizeof(float)), NN_OK);
    assert_int_equal(be->copy(dv, NN_CUDA, v, NN_CPU, n * sizeof(float)), NN_OK);
    /* a few steps: the paper's SGD, then Adam and AdamW on other state */
    for (int step = 1; step <= 3; step++) {
        assert_int_equal(cpu->sgd_update(n, w, g, m, 0.01f, 0.9f, 5e-4f), NN_OK);
        assert_int_equal(be->sgd_update(n, dw, dg, dm, 0.01f, 0.9f, 5e-4f), NN_OK);
    }
    for (int step = 1; step <= 4; step++) {
        float b1 = 1.0f - powf(0.9f, (float)step), b2 = 1.0f - powf(0.999f, (float)step);
        int dec = step % 2;
        assert_int_equal(cpu->adam_update(n, w, g, m, v, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, dec, b1, b2),
                         NN_OK);
        assert_int_equal(be->adam_update(n, dw, dg, dm, dv, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, dec, b1, b2),
                         NN_OK);
    }
    /* elementwise formulas: a few roundings apart (the GPU fuses multiply-adds) */
    assert_int_equal(be->copy(out, NN_CPU, dw, NN_CUDA, n * sizeof(float)), NN_OK);
    assert_match(out, w, n, 1e-5, 1e-6, "optimizer weights");
    assert_int_equal(be->copy(out, NN_CPU, dm, NN_CUDA, n * sizeof(float)), NN_OK);
    assert_match(out, m, n, 1e-5, 1e-6, "optimizer first moment");
    assert_int_equal(be->copy(out, NN_CPU, dv, NN_CUDA, n * sizeof(float)), NN_OK);
    assert_match(out, v, n, 1e-5, 1e-6, "optimizer second moment");
    be->free(dw);
    be->free(dg);
    be->free(dm);
    be->free(dv);
    free(w);
    free(g);
    free(m);
    free(v);
    free(out);
}

/* A small network end to end: the same loss and gradients on both devices,
 * and from the second step on no new device memory (arena and allocator). */
static nn_tensor *net_fn(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    (void)user;
    nn_tensor *h = nn_conv2d(ctx, in[0], in[1], NULL, (nn_conv2d_params){1, 1, 1, 1, 1});
    h = nn_relu(ctx, h);
    h = nn_lrn(ctx, h, NN_LRN_PAPER);
    h = nn_maxpool2d(ctx, h, (nn_pool_params){3, 3, 2, 2, 0, 0});
    h = nn_flatten(ctx, h);
    h = nn_dropout(ctx, h, 0.5f);
    h = nn_linear(ctx, h, in[2], NULL);
    return nn_softmax_xent(ctx, h, in[3]);
}

static void test_small_network(void **state)
{
    (void)state;
    NEED_GPU();
    int xs[4] = {8, 3, 11, 11}, ws[4] = {6, 3, 3, 3}, ls[2] = {10, 6 * 5 * 5};
    nn_tensor *in[4] = {tu_rand(1300, -1, 1, 4, xs), rand_grad(1301, 4, ws), rand_grad(1302, 2, ls),
                        rand_labels(1303, 8, 10)};
    compare_op(net_fn, NULL, 4, in, 1304, GPU_RTOL, GPU_ATOL_SCALE, "small network");

    nn_tensor *gin[4];
    for (int i = 0; i < 4; i++) gin[i] = to_gpu(in[i]);
    nn_ctx *ctx = nn_ctx_new();
    size_t allocs = 0, peak = 0;
    for (int step = 0; step < 4; step++) {
        nn_ctx_reset(ctx);
        nn_tensor *loss = net_fn(ctx, gin, NULL);
        if (!loss) fail_msg("step %d: %s", step, nn_ctx_errmsg(ctx));
        assert_int_equal(nn_backward(ctx, loss), NN_OK);
        assert_int_equal(gpu()->sync(), NN_OK);
        if (step == 1) {
            allocs = nn_ctx_system_allocs(ctx);
            peak = gpu()->peak_bytes();
        } else if (step > 1) {
            assert_int_equal(nn_ctx_system_allocs(ctx), allocs);
            assert_true(gpu()->peak_bytes() == peak);
        }
    }
    nn_ctx_free(ctx);
    for (int i = 0; i < 4; i++) {
        nn_tensor_free(in[i]);
        nn_tensor_free(gin[i]);
    }
}

/* Max |a - b| over max |a|, on the host copies of two tensors. */
static double rel_diff(const nn_tensor *cpu, const nn_tensor *gpu_t)
{
    float *a = malloc(cpu->numel * sizeof *a), *b = malloc(cpu->numel * sizeof *b);
    assert_int_equal(nn_tensor_read(cpu, a), NN_OK);
    assert_int_equal(nn_tensor_read(gpu_t, b), NN_OK);
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < cpu->numel; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)a[i]));
    }
    free(a);
    free(b);
    return d / m;
}

/* A whole AlexNet training step (LRN, overlapping pools, dropout with the same
 * masks, the paper's SGD) on the GPU against the CPU, from identical weights. */
static void test_alexnet_step(void **state)
{
    (void)state;
    NEED_GPU();
    nn_model_config c = nn_alexnet_config();
    c.in_size = 67;
    c.width = 0.25f;
    c.fc = 64;
    c.classes = 10;
    nn_seq sc, sg;
    nn_rng r1 = nn_rng_make(77), r2 = nn_rng_make(77);
    assert_int_equal(nn_model_build(&sc, &c, NN_CPU, &r1), NN_OK);
    assert_int_equal(nn_model_build(&sg, &c, NN_CPU, &r2), NN_OK);
    assert_int_equal(nn_seq_to(&sg, NN_CUDA), NN_OK);
    nn_tensor *x = tu_rand4(78, 4, 3, 67, 67), *y = rand_labels(79, 4, 10);
    nn_tensor *gx = to_gpu(x), *gy = to_gpu(y);
    nn_optim_config oc = nn_optim_paper_sgd();
    nn_optim *oc_cpu, *oc_gpu;
    assert_int_equal(nn_optim_new(&oc_cpu, &oc, &sc.params), NN_OK);
    assert_int_equal(nn_optim_new(&oc_gpu, &oc, &sg.params), NN_OK);
    nn_ctx *cc = nn_ctx_new(), *cg = nn_ctx_new();
    *nn_ctx_rng(cc) = nn_rng_make(80);
    *nn_ctx_rng(cg) = nn_rng_make(80);
    for (int step = 0; step < 2; step++) {
        nn_ctx_reset(cc);
        nn_ctx_reset(cg);
        nn_tensor *lc = nn_softmax_xent(cc, nn_seq_forward(cc, &sc, x), y);
        nn_tensor *lg = nn_softmax_xent(cg, nn_seq_forward(cg, &sg, gx), gy);
        if (!lc || !lg) fail_msg("%s %s", nn_ctx_errmsg(cc), nn_ctx_errmsg(cg));
        assert_int_equal(nn_backward(cc, lc), NN_OK);
        assert_int_equal(nn_backward(cg, lg), NN_OK);
        double dl = rel_diff(lc, lg);
        if (dl > GPU_RTOL) fail_msg("step %d: loss differs by %.3g (relative)", step, dl);
        for (int i = 0; i < sc.params.n; i++) {
            double d = rel_diff(sc.params.p[i].t->grad, sg.params.p[i].t->grad);
            /* float32 sums in another order through several layers */
            if (d > 1e-3) fail_msg("step %d: gradient of %s differs by %.3g", step, sc.params.p[i].name, d);
        }
        assert_int_equal(nn_optim_step(oc_cpu), NN_OK);
        assert_int_equal(nn_optim_step(oc_gpu), NN_OK);
        assert_int_equal(nn_params_zero_grad(&sc.params), NN_OK);
        assert_int_equal(nn_params_zero_grad(&sg.params), NN_OK);
    }
    assert_int_equal(nn_ctx_rng(cc)->offset, nn_ctx_rng(cg)->offset); /* same dropout draws */
    nn_ctx_free(cc);
    nn_ctx_free(cg);
    nn_optim_free(oc_cpu);
    nn_optim_free(oc_gpu);
    nn_seq_free(&sc);
    nn_seq_free(&sg);
    nn_tensor_free(x);
    nn_tensor_free(y);
    nn_tensor_free(gx);
    nn_tensor_free(gy);
}

int main(void)
{
    /* the suite checks strict fp32 whatever the caller's environment; the
     * TF32 kernel is tested by forcing it (test_sgemm_variants) */
    unsetenv("NN_TF32");
    unsetenv("NN_CUDA_LAZY_CHECKS");
    unsetenv("NN_CUDA_PINNED"); /* plain copies; the staged ones are forced in test_pinned_uploads */ /* the label check is eager, its test says; the lazy one is forced */
    /* the CPU reference convolution is im2col + GEMM, a plain float32 sum
     * like the GPU's: the CPU's Winograd rounds differently (to ~1e-5 of the
     * sum of |terms|, tests/test_conv2d.c checks it against float64), which
     * would eat this file's tolerances */
    nn_cpu_conv2d_force_winograd(-1);
    /* NN_TEST_FILTER=test_sgemm* runs only the matching tests (gpu_check.sh
     * reruns a failed one alone with CUDA_LAUNCH_BLOCKING=1) */
    const char *only = getenv("NN_TEST_FILTER");
    if (only && *only) cmocka_set_test_filter(only);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_device_is_an_error),
        cmocka_unit_test(test_devices_must_match),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_pinned_uploads),
        cmocka_unit_test(test_random_fills_match_the_cpu),
        cmocka_unit_test(test_sgemm),
        cmocka_unit_test(test_sgemm_variants),
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_conv2d_gradcheck),
        cmocka_unit_test(test_conv2d_implicit),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_lrn),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_softmax_xent),
        cmocka_unit_test(test_xent_lazy_label_check),
        cmocka_unit_test(test_resident_data_matches_the_loader),
        cmocka_unit_test(test_every_registered_op),
        cmocka_unit_test(test_optimizers),
        cmocka_unit_test(test_small_network),
        cmocka_unit_test(test_alexnet_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
