/* The fused GEMM epilogue (issue 13, 3c) against the unfused kernels: the
 * ReLU of the forward (nn_conv2d_relu, nn_linear_relu, NN_FUSE_RELU=1 in the
 * sequential builder) and the bias gradient summed inside the weight-gradient
 * GEMM (NN_FUSE_BIAS_GRAD=1). The rules of cuda/epilogue.h and the fused ops'
 * wiring are checked on the CPU here; the kernels, on a GPU (skipped, with
 * the reason, without one). Bitwise wherever the arithmetic is the same. */
#include <float.h>
#include <string.h>

#include "config.h"
#include "core/backend.h"
#include "core/philox.h"
#include "cuda/epilogue.h"
#include "models/sequential.h"
#include "tests/gpu_test.h"
#include "tests/testutil.h"
#if NN_HAVE_CUDA
#include "cuda/gemm.h"
#endif

/* The fused bias gradient sums dY in another order than the separate kernel:
 * each is within a few roundings per term of the exact sum; 1e-5 of the sum
 * of |terms| is a wide margin for the K (<= 2000) used here (the SGEMM's
 * GEMM_TOL in test_cuda.c), while a lost or doubled K slice errs by O(1). */
#define DB_TOL 1e-5

/* ---- helpers ---- */

static void assert_same_bits(const float *got, const float *ref, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &ref[i], sizeof *got) != 0)
            fail_msg("%s: element %zu is %.9g fused, %.9g unfused", what, i, (double)got[i], (double)ref[i]);
}

/* A heap copy of t's elements. */
static float *host_copy(const nn_tensor *t)
{
    float *h = malloc(t->numel * sizeof *h);
    assert_non_null(h);
    if (nn_tensor_read(t, h) != NN_OK) fail_msg("read back: %s", nn_errmsg());
    return h;
}

/* A random tensor on dev that requires grad. */
static nn_tensor *rand_on(nn_device dev, uint64_t seed, int ndim, const int *shape)
{
    nn_tensor *c = tu_rand(seed, -1.0f, 1.0f, ndim, shape), *t = c;
    if (dev != NN_CPU) {
        if (nn_tensor_to(&t, c, dev) != NN_OK) fail_msg("copy to the device: %s", nn_errmsg());
        nn_tensor_free(c);
    }
    assert_int_equal(nn_tensor_require_grad(t), NN_OK);
    return t;
}

/* ---- the rules of cuda/epilogue.h, on the CPU ---- */

/* The epilogue's ReLU is the ReLU kernel's, bit for bit, on every class of float. */
static void test_relu_rule_matches_the_kernel(void **state)
{
    (void)state;
    const float v[] = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MIN, -FLT_MIN,
                       FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_MAX, -FLT_MAX, 3.5e-39f, -3.5e-39f, 0.1f, -0.1f};
    enum { N = sizeof v / sizeof v[0] };
    float y[N], e[N];
    assert_int_equal(nn_cpu_relu_forward(N, v, y), NN_OK);
    for (int i = 0; i < N; i++) e[i] = nn_epi_relu(v[i]);
    assert_same_bits(e, y, N, "nn_epi_relu against nn_cpu_relu_forward");
}

typedef struct row_src {
    const float *a;
    int lda, m;
    bool ta;    /* a stored (K, M): element (m, k) at k * lda + m */
    int *seen;  /* how often each k was read */
} row_src;

static float row_get(const void *ctx, int k)
{
    const row_src *r = ctx;
    r->seen[k]++;
    return r->ta ? r->a[(size_t)k * r->lda + r->m] : r->a[(size_t)r->m * r->lda + k];
}

/* nn_rowsum_emulate reads every k once in any slicing, is within the
 * sequential-sum bound of the exact sum, and with one slice is the plain
 * sequential sum; the partials' slots do not collide; one tile column owns. */
static void test_rowsum_rule(void **state)
{
    (void)state;
    const int ks[] = {1, 7, 32, 33, 1000, 4099};
    const int chunks[] = {0, 1, 16, 512, 1024};
    enum { M = 3 };
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        const int k = ks[i];
        nn_tensor *t = tu_rand(500 + i, -1.0f, 1.0f, 1, (int[]){M * k});
        const float *a = nn_f32(t);
        int *seen = calloc((size_t)k, sizeof *seen);
        assert_non_null(seen);
        for (int m = 0; m < M; m++)
            for (int ta = 0; ta < 2; ta++) {
                row_src r = {a, ta ? M : k, m, ta, seen};
                double exact = 0.0, mag = 0.0;
                float seq = 0.0f;
                for (int q = 0; q < k; q++) {
                    const float x = ta ? a[(size_t)q * M + m] : a[(size_t)m * k + q];
                    exact += x;
                    mag += fabs(x);
                    seq += x;
                }
                for (size_t c = 0; c < sizeof chunks / sizeof chunks[0] + 1; c++) {
                    const int kc = c < sizeof chunks / sizeof chunks[0] ? chunks[c] : k;
                    memset(seen, 0, (size_t)k * sizeof *seen);
                    const float s = nn_rowsum_emulate(row_get, &r, k, kc);
                    for (int q = 0; q < k; q++)
                        if (seen[q] != 1) fail_msg("k %d, kchunk %d: element %d read %d times", k, kc, q, seen[q]);
                    /* each of the k additions rounds once: |error| <= k 2^-24 sum |terms| */
                    if (!(fabs((double)s - exact) <= (double)k * 0x1p-24 * mag))
                        fail_msg("k %d, kchunk %d: %.9g, exact %.9g", k, kc, (double)s, exact);
                    if (kc < 1 || kc >= k) assert_same_bits(&s, &seq, 1, "one slice: the sequential sum");
                }
            }
        free(seen);
        nn_tensor_free(t);
    }
    for (int z = 0; z < 5; z++)
        for (int m = 0; m < 7; m++) assert_int_equal(nn_rowsum_slot(z, m, 7), z * 7 + m);
    assert_true(nn_rowsum_owner(0));
    assert_false(nn_rowsum_owner(1));
}

/* ---- the fused ops against the unfused ones, on a device ---- */

typedef struct fuse_case {
    bool conv;
    int n, c, h, w, oc, k, stride, pad, groups; /* linear: x (n, c), w (oc, c) */
} fuse_case;

/* Ragged sizes: edge tiles in M, N and K, groups, stride and padding, a
 * single output, and (on the GPU) sizes past one 64 and one 128 tile. */
static const fuse_case fuse_cases[] = {
    {true, 2, 3, 9, 7, 5, 3, 2, 1, 1},
    {true, 3, 4, 13, 11, 6, 5, 1, 2, 2},
    {true, 1, 1, 5, 5, 1, 1, 1, 0, 1},
    {true, 2, 8, 17, 15, 130, 3, 1, 1, 1},
    {false, 3, 17, 0, 0, 5, 0, 0, 0, 0},
    {false, 7, 1, 0, 0, 33, 0, 0, 0, 0},
    {false, 130, 70, 0, 0, 129, 0, 0, 0, 0},
};

/* y = relu(op(x, w, b)) and the gradients of x, w, b for dy, into out[0..3]
 * (heap copies), fused (nn_conv2d_relu / nn_linear_relu) or not (nn_relu_
 * over the op's output, what the sequential builder ran before). */
static void run_case(const fuse_case *fc, nn_device dev, bool fused, uint64_t seed, float *out[4])
{
    int xs4[4] = {fc->n, fc->c, fc->h, fc->w}, ws4[4] = {fc->oc, fc->conv ? fc->c / fc->groups : 0, fc->k, fc->k};
    int xs2[2] = {fc->n, fc->c}, ws2[2] = {fc->oc, fc->c};
    nn_tensor *in[3] = {fc->conv ? rand_on(dev, seed, 4, xs4) : rand_on(dev, seed, 2, xs2),
                        fc->conv ? rand_on(dev, seed + 1, 4, ws4) : rand_on(dev, seed + 1, 2, ws2),
                        rand_on(dev, seed + 2, 1, &fc->oc)};
    nn_ctx *ctx = nn_ctx_new();
    assert_non_null(ctx);
    nn_conv2d_params p = {fc->stride, fc->stride, fc->pad, fc->pad, fc->groups};
    nn_tensor *y;
    if (fc->conv)
        y = fused ? nn_conv2d_relu(ctx, in[0], in[1], in[2], p) : nn_relu_(ctx, nn_conv2d(ctx, in[0], in[1], in[2], p));
    else
        y = fused ? nn_linear_relu(ctx, in[0], in[1], in[2]) : nn_relu_(ctx, nn_linear(ctx, in[0], in[1], in[2]));
    if (!y) fail_msg("%s: %s", fused ? "fused" : "unfused", nn_ctx_errmsg(ctx));
    out[0] = host_copy(y);
    float *dy = malloc(y->numel * sizeof *dy);
    assert_non_null(dy);
    for (size_t i = 0; i < y->numel; i++) dy[i] = nn_rand_uniform(seed ^ 0xD1ull, 0, i) * 2.0f - 1.0f;
    if (nn_backward_with(ctx, y, dy) != NN_OK) fail_msg("backward: %s", nn_errmsg());
    free(dy);
    for (int i = 0; i < 3; i++) {
        out[1 + i] = host_copy(in[i]->grad);
        nn_tensor_free(in[i]);
    }
    nn_ctx_free(ctx);
}

static size_t case_numel(const fuse_case *fc, int which)
{
    const size_t n = (size_t)fc->n;
    if (!fc->conv) return which == 0 ? n * fc->oc : which == 1 ? n * fc->c : which == 2 ? (size_t)fc->oc * fc->c : (size_t)fc->oc;
    const size_t oh = (size_t)(fc->h + 2 * fc->pad - fc->k) / fc->stride + 1, ow = (size_t)(fc->w + 2 * fc->pad - fc->k) / fc->stride + 1;
    switch (which) {
    case 0: return n * fc->oc * oh * ow;
    case 1: return n * fc->c * fc->h * fc->w;
    case 2: return (size_t)fc->oc * (fc->c / fc->groups) * fc->k * fc->k;
    default: return (size_t)fc->oc;
    }
}

/* The fused op's output and gradients are the unfused ones, bit for bit: the
 * same GEMM, the same ReLU expression, the same relu backward. */
static void fused_ops_match(nn_device dev)
{
    static const char *what[4] = {"y", "dx", "dw", "db"};
    for (size_t i = 0; i < sizeof fuse_cases / sizeof fuse_cases[0]; i++) {
        const fuse_case *fc = &fuse_cases[i];
        float *a[4], *b[4];
        run_case(fc, dev, false, 700 + 10 * i, a);
        run_case(fc, dev, true, 700 + 10 * i, b);
        size_t zeros = 0, n0 = case_numel(fc, 0);
        for (size_t e = 0; e < n0; e++) zeros += a[0][e] == 0.0f;
        assert_true(zeros > 0 && zeros < n0); /* the ReLU clipped some outputs, not all */
        for (int k = 0; k < 4; k++) {
            char msg[96];
            snprintf(msg, sizeof msg, "%s case %zu: %s", fc->conv ? "conv2d" : "linear", i, what[k]);
            assert_same_bits(b[k], a[k], case_numel(fc, k), msg);
            free(a[k]);
            free(b[k]);
        }
    }
}

static void test_fused_ops_cpu(void **state)
{
    (void)state;
    fused_ops_match(NN_CPU);
}

static void test_fused_ops_gpu(void **state)
{
    (void)state;
    NEED_GPU();
#if NN_HAVE_CUDA
    nn_cuda_fuse_bias_grad_set(0); /* db by the same kernel both ways: bitwise */
#endif
    fused_ops_match(NN_CUDA);
#if NN_HAVE_CUDA
    nn_cuda_fuse_bias_grad_set(-1);
#endif
}

/* ---- the sequential builder with NN_FUSE_RELU ---- */

enum { SEQ_N = 3 };

/* logits, then every parameter's gradient, of a small network with relus
 * after conv and linear layers, into a heap buffer of *count floats */
static float *seq_run(nn_device dev, bool fuse, size_t *count)
{
    if (fuse)
        setenv(NN_FUSE_RELU_ENV, "1", 1);
    else
        unsetenv(NN_FUSE_RELU_ENV);
    nn_seq s;
    nn_seq_init(&s, 3, 11, 11);
    nn_seq_conv(&s, "c1", 6, 3, 1, 1, 1, 0.0f);
    nn_seq_relu(&s, "r1");
    nn_seq_maxpool(&s, "p1", 2, 2);
    nn_seq_conv(&s, "c2", 8, 3, 2, 0, 2, 0.0f);
    nn_seq_relu(&s, "r2");
    nn_seq_flatten(&s, "f");
    nn_seq_linear(&s, "l1", 10, 0.0f);
    nn_seq_relu(&s, "r3");
    nn_seq_linear(&s, "l2", 4, 0.0f);
    /* the builder's rule: each relu here follows a conv or linear layer */
    for (int i = 0; i < s.n; i++) assert_int_equal(nn_seq_fuses_relu(&s, i), fuse && (i == 0 || i == 3 || i == 6));
    nn_rng rng = nn_rng_make(900);
    assert_int_equal(nn_seq_build(&s, dev, NN_INIT_HE, &rng), NN_OK);
    for (int i = 0; i < s.n; i++)
        if (s.l[i].b) assert_int_equal(nn_tensor_uniform(s.l[i].b, &rng, -0.2f, 0.2f), NN_OK); /* nonzero biases */
    nn_tensor *xc = tu_rand4(901, SEQ_N, 3, 11, 11), *x = xc;
    if (dev != NN_CPU) assert_int_equal(nn_tensor_to(&x, xc, dev), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    assert_non_null(ctx);
    nn_tensor *y = nn_seq_forward(ctx, &s, x);
    if (!y) fail_msg("forward: %s", nn_ctx_errmsg(ctx));
    float dy[SEQ_N * 4];
    for (int i = 0; i < SEQ_N * 4; i++) dy[i] = nn_rand_uniform(902, 0, i) - 0.5f;
    assert_int_equal(nn_backward_with(ctx, y, dy), NN_OK);
    size_t total = y->numel;
    for (int i = 0; i < s.n; i++)
        if (s.l[i].w) total += s.l[i].w->numel + s.l[i].b->numel;
    float *out = malloc(total * sizeof *out);
    assert_non_null(out);
    assert_int_equal(nn_tensor_read(y, out), NN_OK);
    size_t at = y->numel;
    for (int i = 0; i < s.n; i++) {
        if (!s.l[i].w) continue;
        assert_int_equal(nn_tensor_read(s.l[i].w->grad, out + at), NN_OK);
        at += s.l[i].w->numel;
        assert_int_equal(nn_tensor_read(s.l[i].b->grad, out + at), NN_OK);
        at += s.l[i].b->numel;
    }
    nn_ctx_free(ctx);
    if (x != xc) nn_tensor_free(x);
    nn_tensor_free(xc);
    nn_seq_free(&s);
    unsetenv(NN_FUSE_RELU_ENV);
    *count = total;
    return out;
}

static void seq_fuse_matches(nn_device dev)
{
    size_t na, nb;
    float *a = seq_run(dev, false, &na), *b = seq_run(dev, true, &nb);
    assert_int_equal(na, nb);
    assert_same_bits(b, a, na, "sequential: logits and parameter gradients");
    free(a);
    free(b);
}

static void test_sequential_fuse_relu_cpu(void **state)
{
    (void)state;
    seq_fuse_matches(NN_CPU);
}

static void test_sequential_fuse_relu_gpu(void **state)
{
    (void)state;
    NEED_GPU();
#if NN_HAVE_CUDA
    nn_cuda_fuse_bias_grad_set(0);
#endif
    seq_fuse_matches(NN_CUDA);
#if NN_HAVE_CUDA
    nn_cuda_fuse_bias_grad_set(-1);
#endif
}

/* ---- the GEMM's fused parts, on the GPU ---- */

#if NN_HAVE_CUDA
static const nn_backend *gpu(void) { return nn_backend_get(NN_CUDA); }

static float *dev_from(const float *h, size_t n)
{
    void *p = NULL;
    assert_int_equal(gpu()->alloc(&p, (n ? n : 1) * sizeof(float)), NN_OK);
    if (n) assert_int_equal(gpu()->copy(p, NN_CUDA, h, NN_CPU, n * sizeof(float)), NN_OK);
    return p;
}

static void dev_put(float *d, const float *h, size_t n)
{
    assert_int_equal(gpu()->copy(d, NN_CUDA, h, NN_CPU, n * sizeof(float)), NN_OK);
}

static void dev_get(float *h, const float *d, size_t n)
{
    assert_int_equal(gpu()->copy(h, NN_CPU, d, NN_CUDA, n * sizeof(float)), NN_OK);
}

static float *rand_host(uint64_t seed, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof *h);
    assert_non_null(h);
    for (size_t i = 0; i < n; i++) h[i] = nn_rand_uniform(seed, 0, i) * 2.0f - 1.0f;
    return h;
}

static const struct {
    nn_gemm_variant v;
    const char *name;
} gemm_variants[] = {
    {NN_GEMM_FP32_64, "fp32 64x64"},
    {NN_GEMM_FP32_128, "fp32 128x128"},
    {NN_GEMM_FP32_SPLITK, "fp32 split-K"},
    {NN_GEMM_TF32, "tf32"},
};

/* One product m x n x k on one kernel, transposes ta/tb, beta 0 or 1: with
 * the ReLU, C is relu of the plain product bit for bit; the row sums are
 * nn_rowsum_emulate's in the plan's slices bit for bit, the same on a second
 * run, and leave C as it was. Returns false when the kernel cannot run here. */
static bool gemm_fused_case(nn_gemm_variant v, const char *vname, bool ta, bool tb, int m, int n, int k,
                            float beta, uint64_t seed)
{
    const size_t na = (size_t)m * k, nb = (size_t)k * n, nc = (size_t)m * n;
    const int lda = ta ? m : k, ldb = tb ? k : n;
    const bool per_row = seed & 1;
    float *ha = rand_host(seed, na), *hb = rand_host(seed + 1, nb), *hc = rand_host(seed + 2, nc);
    float *hbias = rand_host(seed + 3, per_row ? m : n), *hr = rand_host(seed + 4, m);
    float *a = dev_from(ha, na), *b = dev_from(hb, nb), *c = dev_from(hc, nc), *bias = dev_from(hbias, per_row ? m : n);
    float *r = dev_from(hr, m);
    float *plain = malloc(nc * sizeof *plain), *fused = malloc(nc * sizeof *fused), *again = malloc(nc * sizeof *again);
    float *rs = malloc(m * sizeof *rs), *rs2 = malloc(m * sizeof *rs2), *want = malloc(m * sizeof *want);
    assert_true(plain && fused && again && rs && rs2 && want);
    char what[160];
    snprintf(what, sizeof what, "%s %c%c %dx%dx%d beta %g", vname, ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k,
             (double)beta);
    int kc = 0;
    nn_status st = nn_cuda_gemm_fused_as(v, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, n, bias, per_row,
                                         false, NULL, &kc);
    const bool ran = st != NN_E_UNSUPPORTED;
    if (ran) {
        if (st != NN_OK) fail_msg("%s: %s", what, nn_errmsg());
        dev_get(plain, c, nc);
        for (size_t i = 0; i < nc; i++) plain[i] = nn_epi_relu(plain[i]);
        for (int run = 0; run < 2; run++) {
            dev_put(c, hc, nc);
            dev_put(r, hr, m);
            st = nn_cuda_gemm_fused_as(v, ta, tb, m, n, k, 1.0f, a, lda, b, ldb, beta, c, n, bias, per_row, true, r,
                                       NULL);
            if (st != NN_OK) fail_msg("%s (fused): %s", what, nn_errmsg());
            dev_get(run ? again : fused, c, nc);
            dev_get(run ? rs2 : rs, r, m);
        }
        assert_same_bits(fused, plain, nc, what);
        assert_same_bits(again, fused, nc, what);
        assert_same_bits(rs2, rs, m, what);
        int *seen = calloc((size_t)k + 1, sizeof *seen);
        assert_non_null(seen);
        for (int i = 0; i < m; i++) {
            row_src src = {ha, lda, i, ta, seen};
            want[i] = hr[i] + nn_rowsum_emulate(row_get, &src, k, kc);
        }
        free(seen);
        assert_same_bits(rs, want, m, what);
    }
    gpu()->free(a); gpu()->free(b); gpu()->free(c); gpu()->free(bias); gpu()->free(r);
    free(ha); free(hb); free(hc); free(hbias); free(hr);
    free(plain); free(fused); free(again); free(rs); free(rs2); free(want);
    return ran;
}

/* Every kernel (both tile sizes, split-K, TF32), all four transposes, ragged
 * sizes and ones with K long enough to split. */
static void test_gemm_epilogue_gpu(void **state)
{
    (void)state;
    NEED_GPU();
    static const int sizes[][3] = {{37, 45, 29}, {130, 67, 1100}, {5, 129, 2051}, {64, 64, 64}, {1, 1, 1}};
    uint64_t seed = 1000;
    for (size_t v = 0; v < sizeof gemm_variants / sizeof gemm_variants[0]; v++) {
        bool ran = true;
        for (int t = 0; t < 4 && ran; t++)
            for (size_t z = 0; z < sizeof sizes / sizeof sizes[0] && ran; z++)
                for (int beta = 0; beta < 2 && ran; beta++)
                    ran = gemm_fused_case(gemm_variants[v].v, gemm_variants[v].name, t & 1, t & 2, sizes[z][0],
                                          sizes[z][1], sizes[z][2], (float)beta, seed += 8);
        if (!ran) print_message("%s: not available on this device or build: skipped\n", gemm_variants[v].name);
    }
}

/* ---- the bias gradient in the weight-gradient GEMM, on the GPU ---- */

typedef struct grad_bufs {
    float *dx, *dw, *db; /* host copies after the backward */
} grad_bufs;

/* One backward of conv2d (fc->conv) or linear through the GPU table with the
 * fusion forced on or off, onto gradients that start from dx0, dw0, db0
 * (kernels accumulate); want_dw false: no dw asked (the fusion then cannot run). */
static grad_bufs grad_run(const fuse_case *fc, bool fuse, bool want_dw, const float *x, const float *w,
                          const float *dy, const float *h0[3], const size_t sz[3])
{
    grad_bufs out;
    float *d[3];
    for (int i = 0; i < 3; i++) d[i] = dev_from(h0[i], sz[i]);
    nn_cuda_fuse_bias_grad_set(fuse);
    nn_status st;
    if (fc->conv) {
        nn_conv2d_geom g;
        const int xs[4] = {fc->n, fc->c, fc->h, fc->w}, ws[4] = {fc->oc, fc->c / fc->groups, fc->k, fc->k};
        assert_int_equal(nn_conv2d_shape(xs, ws, (nn_conv2d_params){fc->stride, fc->stride, fc->pad, fc->pad,
                                                                    fc->groups}, &g), NN_OK);
        void *wsp = NULL;
        assert_int_equal(gpu()->alloc(&wsp, gpu()->conv2d_workspace(&g)), NN_OK);
        st = gpu()->conv2d_backward(&g, x, w, dy, d[0], want_dw ? d[1] : NULL, d[2], wsp);
        gpu()->free(wsp);
    } else {
        nn_linear_geom g = {.n = fc->n, .in = fc->c, .out = fc->oc};
        st = gpu()->linear_backward(&g, x, w, dy, d[0], want_dw ? d[1] : NULL, d[2]);
    }
    nn_cuda_fuse_bias_grad_set(-1);
    if (st != NN_OK) fail_msg("backward: %s", nn_errmsg());
    float **h[3] = {&out.dx, &out.dw, &out.db};
    for (int i = 0; i < 3; i++) {
        *h[i] = malloc(sz[i] * sizeof(float));
        assert_non_null(*h[i]);
        dev_get(*h[i], d[i], sz[i]);
        gpu()->free(d[i]);
    }
    return out;
}

static void grad_free(grad_bufs *g)
{
    free(g->dx);
    free(g->dw);
    free(g->db);
}

/* dx and dw are the unfused ones bit for bit; db is the same on a second run
 * bit for bit, and within DB_TOL of the float64 sum (the separate kernel sums
 * in another order); without dw asked, the separate kernel runs (bitwise). */
static void bias_grad_case(const fuse_case *fc, uint64_t seed, const char *what)
{
    const size_t ny = case_numel(fc, 0), sz[3] = {case_numel(fc, 1), case_numel(fc, 2), case_numel(fc, 3)};
    float *hx = rand_host(seed, sz[0]), *hw = rand_host(seed + 1, sz[1]), *hdy = rand_host(seed + 2, ny);
    float *h0[3] = {rand_host(seed + 3, sz[0]), rand_host(seed + 4, sz[1]), rand_host(seed + 5, sz[2])};
    float *x = dev_from(hx, sz[0]), *w = dev_from(hw, sz[1]), *dy = dev_from(hdy, ny);
    const float *c0[3] = {h0[0], h0[1], h0[2]};
    grad_bufs u = grad_run(fc, false, true, x, w, dy, c0, sz), f = grad_run(fc, true, true, x, w, dy, c0, sz);
    grad_bufs f2 = grad_run(fc, true, true, x, w, dy, c0, sz), nodw = grad_run(fc, true, false, x, w, dy, c0, sz);
    char msg[128];
    snprintf(msg, sizeof msg, "%s: dx", what);
    assert_same_bits(f.dx, u.dx, sz[0], msg);
    snprintf(msg, sizeof msg, "%s: dw", what);
    assert_same_bits(f.dw, u.dw, sz[1], msg);
    snprintf(msg, sizeof msg, "%s: db run to run", what);
    assert_same_bits(f2.db, f.db, sz[2], msg);
    snprintf(msg, sizeof msg, "%s: db without dw", what);
    assert_same_bits(nodw.db, u.db, sz[2], msg);
    /* db[o] = db0[o] + sum over samples and positions of dy[., o, .] */
    const size_t oc = (size_t)fc->oc, per = fc->conv ? ny / ((size_t)fc->n * oc) : 1;
    for (size_t o = 0; o < oc; o++) {
        double exact = h0[2][o], mag = fabs(h0[2][o]);
        for (size_t s = 0; s < (size_t)fc->n; s++)
            for (size_t q = 0; q < per; q++) {
                const double v = hdy[(s * oc + o) * per + q];
                exact += v;
                mag += fabs(v);
            }
        if (!(fabs((double)f.db[o] - exact) <= DB_TOL * mag))
            fail_msg("%s: db[%zu] is %.9g fused, exact %.9g (unfused %.9g)", what, o, (double)f.db[o], exact,
                     (double)u.db[o]);
    }
    grad_free(&u); grad_free(&f); grad_free(&f2); grad_free(&nodw);
    gpu()->free(x); gpu()->free(w); gpu()->free(dy);
    free(hx); free(hw); free(hdy);
    for (int i = 0; i < 3; i++) free(h0[i]);
}

static void test_bias_grad_in_wgrad_gpu(void **state)
{
    (void)state;
    NEED_GPU();
    /* conv: K = 4 x 400 splits the dw GEMM (8 x 27 outputs: one tile); ragged
     * with groups; 130 channels over 64- and 128-row tiles. linear: K = 1500 splits. */
    static const fuse_case cases[] = {
        {true, 4, 3, 22, 22, 8, 3, 1, 0, 1},
        {true, 2, 4, 9, 7, 6, 3, 2, 1, 2},
        {true, 3, 8, 17, 15, 130, 3, 1, 1, 1},
        {false, 1500, 37, 0, 0, 21, 0, 0, 0, 0},
        {false, 5, 130, 0, 0, 129, 0, 0, 0, 0},
        {false, 3, 17, 0, 0, 5, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "%s case %zu", cases[i].conv ? "conv2d" : "linear", i);
        bias_grad_case(&cases[i], 2000 + 16 * i, what);
    }
}
#else
static void test_gemm_epilogue_gpu(void **state)
{
    (void)state;
    NEED_GPU();
}
static void test_bias_grad_in_wgrad_gpu(void **state)
{
    (void)state;
    NEED_GPU();
}
#endif

int main(void)
{
    /* strict fp32 and the environment's other switches off, whatever the caller's */
    unsetenv("NN_TF32");
    unsetenv(NN_FUSE_RELU_ENV);
    const char *only = getenv("NN_TEST_FILTER"); /* as in test_cuda.c (gpu_check.sh) */
    if (only && *only) cmocka_set_test_filter(only);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relu_rule_matches_the_kernel),
        cmocka_unit_test(test_rowsum_rule),
        cmocka_unit_test(test_fused_ops_cpu),
        cmocka_unit_test(test_sequential_fuse_relu_cpu),
        cmocka_unit_test(test_fused_ops_gpu),
        cmocka_unit_test(test_sequential_fuse_relu_gpu),
        cmocka_unit_test(test_gemm_epilogue_gpu),
        cmocka_unit_test(test_bias_grad_in_wgrad_gpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
