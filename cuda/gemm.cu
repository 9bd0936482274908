/* Our own SGEMM, the GPU's one matrix-multiply entry (no cuBLAS): row-major
 * C (M, N) = alpha * op(A) (M, K) * op(B) (K, N) + beta * C, either operand
 * stored transposed, batched over (outer, inner) strides (see common.cuh).
 *
 * The classic shared-memory design: a block computes a BM x BN tile of C,
 * stepping through K in slices of BK that 256 threads stage in shared memory
 * (A k-major, so both operands are read along rows); each thread keeps a TM x TN
 * register tile, split into 4-wide groups BM/2 (BN/2) apart so the float4 reads
 * of shared memory do not conflict. The next slice is fetched into registers
 * while the current one is multiplied. Each thread loads 4 consecutive
 * elements of each operand per slice: one float4 when the 4 are in bounds and
 * 16-byte aligned, else scalar loads that read 0 outside the matrix, so every
 * edge size works. Two tile shapes: 128x128 (8x8 per thread) when there are
 * enough tiles to fill the chip, 64x64 (4x4 per thread) otherwise; when even
 * those are too few and K is long (weight gradients, K = samples x positions)
 * K is split across blocks and a second kernel adds the slices in order.
 * With NN_TF32=1 in the environment (sm_80 and later) the tensor-core kernel
 * of gemm_tf32.cuh runs instead: faster, with TF32 roundings of A and B
 * (strict fp32 stays the default and what the tests compare against).
 * Both add an optional bias (per row or per column, nn_gemm_batch) in their
 * epilogue; with K split, the reduction does. */
#include "cuda/common.cuh"

#define VEC_A 1
#define VEC_B 2
#define VEC_C 4

#include "cuda/gemm_tf32.cuh"

template <int BM, int BN, int BK, int TM, int TN, bool TA, bool TB>
static __global__ void __launch_bounds__((BM / TM) * (BN / TN))
sgemm_kernel(int M, int N, int K, float alpha, const float *__restrict__ A, int lda,
             const float *__restrict__ B, int ldb, float beta, float *__restrict__ C, int ldc,
             nn_gemm_batch bt, int z0, int vec, int ksplit, int kchunk)
{
    constexpr int NT = (BM / TM) * (BN / TN);
    static_assert(BM * BK == 4 * NT && BN * BK == 4 * NT, "each thread stages 4 of A and 4 of B");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are made of 4-wide groups");
    constexpr int GM = TM / 4, GN = TN / 4;          /* 4-wide groups per thread */
    constexpr int SM_ = BM / GM, SN = BN / GN;       /* distance between a thread's groups */
    /* rows padded by 4 floats: keeps float4 alignment, breaks bank conflicts of the transposing stores */
    __shared__ __align__(16) float As[BK][BM + 4];
    __shared__ __align__(16) float Bs[BK][BN + 4];

    /* z = product * ksplit + slice of K (nn_gemm_locate, cuda/common.cuh) */
    const int z = blockIdx.z + z0, ks = z % ksplit;
    const nn_gemm_at at = nn_gemm_locate(bt, z, ksplit, M, ldc);
    A += at.a;
    B += at.b;
    C += at.c;
    const int kbeg = ks * kchunk, kend = min(K, kbeg + kchunk);
    const float *bias = at.bias; /* the epilogue's (NULL with K split) */
    const bool relu = bt.relu && ksplit == 1; /* with K split, the reduction applies it */
    /* the row sums of op(A) (cuda/epilogue.h): thread tid < BM sums row m0 + tid */
    float *rsum = nn_rowsum_owner(blockIdx.x) ? at.rowsum : nullptr;
    float rs = 0.0f;

    const int tid = threadIdx.x;
    const int tx = tid % (BN / TN), ty = tid / (BN / TN);
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

    /* staging coordinates: 4 consecutive elements along the stored rows */
    const int a_r = TA ? tid / (BM / 4) : tid / (BK / 4);        /* k row (TA) or m row */
    const int a_c = TA ? (tid % (BM / 4)) * 4 : (tid % (BK / 4)) * 4;
    const int b_r = TB ? tid / (BK / 4) : tid / (BN / 4);        /* n row (TB) or k row */
    const int b_c = TB ? (tid % (BK / 4)) * 4 : (tid % (BN / 4)) * 4;

    float ra[4], rb[4];

    /* A element (m, k) sits at m * lda + k, or k * lda + m when transposed */
    auto load_a = [&](int k0) {
        int row = TA ? k0 + a_r : m0 + a_r;        /* stored row */
        int col = TA ? m0 + a_c : k0 + a_c;        /* first of 4 along the stored row */
        int rows = TA ? kend : M, cols = TA ? M : kend;
        const float *p = A + (long long)row * lda + col;
        if (row < rows && col + 3 < cols && (vec & VEC_A)) {
            float4 v = __ldg(reinterpret_cast<const float4 *>(p));
            ra[0] = v.x; ra[1] = v.y; ra[2] = v.z; ra[3] = v.w;
        } else {
#pragma unroll
            for (int i = 0; i < 4; i++) ra[i] = (row < rows && col + i < cols) ? __ldg(p + i) : 0.0f;
        }
    };
    auto load_b = [&](int k0) {
        int row = TB ? n0 + b_r : k0 + b_r;
        int col = TB ? k0 + b_c : n0 + b_c;
        int rows = TB ? N : kend, cols = TB ? kend : N;
        const float *p = B + (long long)row * ldb + col;
        if (row < rows && col + 3 < cols && (vec & VEC_B)) {
            float4 v = __ldg(reinterpret_cast<const float4 *>(p));
            rb[0] = v.x; rb[1] = v.y; rb[2] = v.z; rb[3] = v.w;
        } else {
#pragma unroll
            for (int i = 0; i < 4; i++) rb[i] = (row < rows && col + i < cols) ? __ldg(p + i) : 0.0f;
        }
    };
    auto stage = [&]() {
        if (TA) {
            *reinterpret_cast<float4 *>(&As[a_r][a_c]) = make_float4(ra[0], ra[1], ra[2], ra[3]);
        } else {
#pragma unroll
            for (int i = 0; i < 4; i++) As[a_c + i][a_r] = ra[i];
        }
        if (TB) {
#pragma unroll
            for (int i = 0; i < 4; i++) Bs[b_c + i][b_r] = rb[i];
        } else {
            *reinterpret_cast<float4 *>(&Bs[b_r][b_c]) = make_float4(rb[0], rb[1], rb[2], rb[3]);
        }
    };

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = 0.0f;

    const int ktiles = kend > kbeg ? (kend - kbeg + BK - 1) / BK : 0;
    if (ktiles > 0) {
        load_a(kbeg);
        load_b(kbeg);
        stage();
        __syncthreads();
    }
    for (int t = 0; t < ktiles; t++) {
        const bool more = t + 1 < ktiles;
        if (more) {
            load_a(kbeg + (t + 1) * BK);
            load_b(kbeg + (t + 1) * BK);
        }
        if (rsum && tid < BM) { /* As holds slice t: A (m0 + tid, k) in k order, 0 outside */
#pragma unroll
            for (int kk = 0; kk < BK; kk++) rs += As[kk][tid];
        }
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float a[TM], b[TN];
#pragma unroll
            for (int g = 0; g < GM; g++) {
                float4 v = *reinterpret_cast<const float4 *>(&As[kk][g * SM_ + ty * 4]);
                a[g * 4 + 0] = v.x; a[g * 4 + 1] = v.y; a[g * 4 + 2] = v.z; a[g * 4 + 3] = v.w;
            }
#pragma unroll
            for (int g = 0; g < GN; g++) {
                float4 v = *reinterpret_cast<const float4 *>(&Bs[kk][g * SN + tx * 4]);
                b[g * 4 + 0] = v.x; b[g * 4 + 1] = v.y; b[g * 4 + 2] = v.z; b[g * 4 + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
        if (more) {
            stage();
            __syncthreads();
        }
    }

    /* epilogue: C = alpha acc + beta C, never reading C when beta == 0 */
#pragma unroll
    for (int i = 0; i < TM; i++) {
        const int m = m0 + (i / 4) * SM_ + ty * 4 + (i % 4);
        if (m >= M) continue;
        float *crow = C + (long long)m * ldc;
        const float rb = bias && bt.bias_per_row ? bias[m] : 0.0f;
        const float *cb = bias && !bt.bias_per_row ? bias : nullptr;
#pragma unroll
        for (int g = 0; g < GN; g++) {
            const int n = n0 + g * SN + tx * 4;
            float *p = crow + n;
            if (n + 3 < N && (vec & VEC_C)) {
                float4 r = make_float4(alpha * acc[i][g * 4 + 0], alpha * acc[i][g * 4 + 1],
                                       alpha * acc[i][g * 4 + 2], alpha * acc[i][g * 4 + 3]);
                if (beta != 0.0f) {
                    float4 o = *reinterpret_cast<float4 *>(p);
                    r.x += beta * o.x; r.y += beta * o.y; r.z += beta * o.z; r.w += beta * o.w;
                }
                if (bias) {
                    r.x += cb ? cb[n] : rb; r.y += cb ? cb[n + 1] : rb;
                    r.z += cb ? cb[n + 2] : rb; r.w += cb ? cb[n + 3] : rb;
                }
                if (relu) {
                    r.x = nn_epi_relu(r.x); r.y = nn_epi_relu(r.y);
                    r.z = nn_epi_relu(r.z); r.w = nn_epi_relu(r.w);
                }
                *reinterpret_cast<float4 *>(p) = r;
            } else {
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    if (n + j >= N) break;
                    float r = alpha * acc[i][g * 4 + j];
                    if (beta != 0.0f) r += beta * p[j];
                    if (bias) r += cb ? cb[n + j] : rb;
                    p[j] = relu ? nn_epi_relu(r) : r;
                }
            }
        }
    }
    /* the row sums: alone on these rows in this product (or slice), so a plain store */
    if (rsum && tid < BM && m0 + tid < M) {
        if (ksplit > 1)
            rsum[m0 + tid] = rs;
        else
            rsum[m0 + tid] += rs;
    }
}

/* Sums the K slices of a split product: C = sum_s part[s] + beta C (+ bias), then the ReLU when asked. */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
splitk_reduce_kernel(int M, int N, int ksplit, int count, const float *__restrict__ part,
                     float beta, float *C, int ldc, nn_gemm_batch bt)
{
    const long long mn = (long long)M * N, total = mn * count;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int zb = (int)(t / mn);
        const long long r = t % mn;
        const float *p = part + (long long)zb * ksplit * mn + r;
        float sum = 0.0f;
        for (int k = 0; k < ksplit; k++) sum += p[k * mn];
        float *c = C + (zb / bt.inner) * bt.c_outer + (zb % bt.inner) * bt.c_inner + (r / N) * ldc + r % N;
        if (beta != 0.0f) sum += beta * *c;
        if (bt.bias)
            sum += bt.bias[(zb / bt.inner) * bt.bias_outer + (zb % bt.inner) * bt.bias_inner +
                           (bt.bias_per_row ? r / N : r % N)];
        *c = bt.relu ? nn_epi_relu(sum) : sum;
    }
}

/* rowsum[m] += the slices' row sums of a split product, slices in order (cuda/epilogue.h) */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
splitk_rowsum_kernel(int M, int ksplit, int count, nn_gemm_batch bt)
{
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < (long long)M * count;
         t += (long long)gridDim.x * blockDim.x) {
        const int zb = (int)(t / M), m = (int)(t % M);
        float sum = 0.0f;
        for (int k = 0; k < ksplit; k++) sum += bt.rowsum_part[nn_rowsum_slot(zb * ksplit + k, m, M)];
        bt.rowsum[(zb / bt.inner) * bt.rowsum_outer + (zb % bt.inner) * bt.rowsum_inner + m] += sum;
    }
}

/* A launch covers the products of the batch, each split in `ksplit` slices of
 * K (kchunk, a multiple of BK, each). */
template <int BM, int BN, int BK, int TM, int TN, bool TA, bool TB>
static nn_status launch(cudaStream_t s, int m, int n, int k, float alpha, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc, const nn_gemm_batch &bt,
                        int vec, int ksplit, int kchunk)
{
    const unsigned gx = (unsigned)((n + BN - 1) / BN), gy = (unsigned)((m + BM - 1) / BM);
    if (gy > 65535u) return nn_error(NN_E_UNSUPPORTED, "cuda sgemm: M = %d is too large", m);
    const int nz = bt.count * ksplit;
    for (int z0 = 0; z0 < nz; z0 += 65535) {
        const unsigned gz = (unsigned)(nz - z0 < 65535 ? nz - z0 : 65535);
        sgemm_kernel<BM, BN, BK, TM, TN, TA, TB><<<dim3(gx, gy, gz), (BM / TM) * (BN / TN), 0, s>>>(
            m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bt, z0, vec, ksplit, kchunk);
        NN_CUDA_LAUNCHED("sgemm");
    }
    return NN_OK;
}

template <int BM, int BN, int BK, int TM, int TN>
static nn_status dispatch(cudaStream_t s, bool ta, bool tb, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb, float beta, float *c,
                          int ldc, const nn_gemm_batch &bt, int vec, int ksplit, int kchunk)
{
    if (!ta && !tb)
        return launch<BM, BN, BK, TM, TN, false, false>(s, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                                                        bt, vec, ksplit, kchunk);
    if (!ta && tb)
        return launch<BM, BN, BK, TM, TN, false, true>(s, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                                                       bt, vec, ksplit, kchunk);
    if (ta && !tb)
        return launch<BM, BN, BK, TM, TN, true, false>(s, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                                                       bt, vec, ksplit, kchunk);
    return launch<BM, BN, BK, TM, TN, true, true>(s, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bt,
                                                  vec, ksplit, kchunk);
}

static bool aligned4(const void *p, long long ld, long long s1, long long s2)
{
    return ((uintptr_t)p % 16) == 0 && ld % 4 == 0 && s1 % 4 == 0 && s2 % 4 == 0;
}

/* The device's multiprocessor count and compute capability, read once. */
int nn_cuda_sm_count(void)
{
    static int n; /* benign race: every thread computes the same value */
    if (!n) {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v <= 0) {
            (void)cudaGetLastError();
            v = 132; /* an H100's count: only steers the tile choice */
        }
        n = v;
    }
    return n;
}

static int compute_major(void)
{
    static int major = -1;
    if (major < 0) {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            (void)cudaGetLastError();
            v = 0;
        }
        major = v;
    }
    return major;
}

/* mma.sync on TF32 and cp.async need sm_80 (and a build for it) */
extern "C" bool nn_cuda_tf32_supported(void) { return NN_CUDA_SM >= 80 && compute_major() >= 8; }

extern "C" bool nn_cuda_tf32_enabled(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv(NN_TF32_ENV);
        on = e && e[0] == '1' && nn_cuda_tf32_supported();
    }
    return on;
}

/* "1" in the environment variable `name`, read once into *cache (-1: unread) */
static bool env_switch(const char *name, int *cache)
{
    if (*cache < 0) {
        const char *e = getenv(name);
        *cache = e && e[0] == '1';
    }
    return *cache;
}

extern "C" bool nn_cuda_fuse_bias(void)
{
    static int on = -1;
    return env_switch(NN_FUSE_BIAS_ENV, &on);
}

static int fuse_bias_grad = -1; /* benign race: every thread reads the same value */

extern "C" bool nn_cuda_fuse_bias_grad(void) { return env_switch(NN_FUSE_BIAS_GRAD_ENV, &fuse_bias_grad); }

extern "C" void nn_cuda_fuse_bias_grad_set(int on) { fuse_bias_grad = on < 0 ? -1 : on != 0; }

/* Split K when the products have too few tiles to fill the chip and K is
 * long (weight gradients: K = batch x positions); the slices' partial sums go
 * to a scratch buffer and one more kernel adds them in a fixed order. */
#define SPLITK_MIN_K 1024
#define SPLITK_MIN_SLICE 512
#define SPLITK_MAX 64

/* Slices of K for `tiles` blocks to fill `slots` (1 when there are enough, K is short, or too many z). */
static int splitk_slices(long long tiles, int k, long long slots, int count)
{
    if (k < SPLITK_MIN_K || tiles >= slots) return 1;
    long long want = (slots + tiles - 1) / tiles, most = k / SPLITK_MIN_SLICE;
    if (want > most) want = most;
    if (want > SPLITK_MAX) want = SPLITK_MAX;
    if (want < 2 || (long long)count * want > 65535LL * 64) return 1;
    return (int)want;
}

typedef struct gemm_plan {
    nn_gemm_variant v;
    int ksplit, kchunk; /* kchunk: K per slice, a multiple of the kernel's BK */
} gemm_plan;

static gemm_plan with_slices(nn_gemm_variant v, int ksplit, int k, int bk)
{
    gemm_plan p = {v, 1, k};
    if (ksplit > 1) {
        p.kchunk = ((k + ksplit - 1) / ksplit + bk - 1) / bk * bk;
        p.ksplit = (k + p.kchunk - 1) / p.kchunk;
    }
    return p;
}

void nn_cuda_splitk(long long tiles, int k, long long slots, int count, int bk, int *ksplit, int *kchunk)
{
    const gemm_plan p = with_slices(NN_GEMM_FP32_SPLITK, splitk_slices(tiles, k, slots, count), k, bk);
    *ksplit = p.ksplit;
    *kchunk = p.kchunk;
}

/* What runs: the forced variant, or (NN_GEMM_AUTO) 128x128 tiles when there
 * are enough of them for the chip, else 64x64 ones, split along K when even
 * those are too few (2 blocks per multiprocessor wanted); with TF32 on, the
 * tensor-core kernel, split along K likewise. */
static gemm_plan plan_gemm(nn_gemm_variant want, int m, int n, int k, int count)
{
    const long long sms = nn_cuda_sm_count();
    const long long t64 = (long long)((m + 63) / 64) * ((n + 63) / 64) * count;
    const long long t128 = (long long)((m + 127) / 128) * ((n + 127) / 128) * count;
    if (want == NN_GEMM_AUTO) {
        if (nn_cuda_tf32_enabled())
            want = NN_GEMM_TF32;
        else if (t128 >= sms)
            want = NN_GEMM_FP32_128;
        else
            want = splitk_slices(t64, k, 2 * sms, count) > 1 ? NN_GEMM_FP32_SPLITK : NN_GEMM_FP32_64;
    }
    switch (want) {
    case NN_GEMM_TF32:
        return with_slices(NN_GEMM_TF32, splitk_slices(t128, k, TF32_MIN_BLOCKS * sms, count), k, TF32_BK);
    case NN_GEMM_FP32_SPLITK: { /* forced: at least two slices when K allows */
        int ks = splitk_slices(t64, k, 2 * sms, count);
        if (ks < 2) ks = k >= 32 ? 2 : 1;
        return with_slices(NN_GEMM_FP32_SPLITK, ks, k, 16);
    }
    case NN_GEMM_FP32_128:
        return with_slices(NN_GEMM_FP32_128, 1, k, 8);
    default:
        return with_slices(NN_GEMM_FP32_64, 1, k, 16);
    }
}

/* rowsum[m] += the row sums of the slices of a split product (cuda/epilogue.h) */
static nn_status reduce_rowsum(cudaStream_t s, int m, int ksplit, const nn_gemm_batch &bt)
{
    const long long total = (long long)m * bt.count;
    splitk_rowsum_kernel<<<nn_cuda_blocks((size_t)total), NN_CUDA_THREADS, 0, s>>>(m, ksplit, bt.count, bt);
    NN_CUDA_LAUNCHED("sgemm split-K row sums");
    return NN_OK;
}

nn_status nn_cuda_splitk_reduce(cudaStream_t s, int m, int n, int ksplit, const float *part, float beta, float *c,
                                int ldc, const nn_gemm_batch &bt)
{
    const long long total = (long long)m * n * bt.count;
    splitk_reduce_kernel<<<nn_cuda_blocks((size_t)total), NN_CUDA_THREADS, 0, s>>>(m, n, ksplit, bt.count, part,
                                                                                   beta, c, ldc, bt);
    NN_CUDA_LAUNCHED("sgemm split-K reduction");
    return bt.rowsum ? reduce_rowsum(s, m, ksplit, bt) : NN_OK;
}

static nn_status run_plan(cudaStream_t s, const gemm_plan &p, bool ta, bool tb, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc,
                          nn_gemm_batch bt)
{
    const int vab = (aligned4(a, lda, bt.a_outer, bt.a_inner) ? VEC_A : 0) |
                    (aligned4(b, ldb, bt.b_outer, bt.b_inner) ? VEC_B : 0);
    float *part = NULL;
    float *out = c;
    int ldo = ldc;
    float beta_k = beta;
    if (p.ksplit > 1) { /* the slices write partial products, the reduction applies beta */
        /* the row sums' partials after the products' (one M-float slot per slice, nn_rowsum_slot) */
        const size_t prod = (size_t)bt.count * p.ksplit * m * n, rows = bt.rowsum ? (size_t)bt.count * p.ksplit * m : 0;
        NN_TRY(nn_cuda_scratch((void **)&part, (prod + rows) * sizeof(float)));
        out = part;
        ldo = n;
        beta_k = 0.0f;
        bt.rowsum_part = bt.rowsum ? part + prod : nullptr;
    }
    const int vec = vab | (p.ksplit > 1 ? (aligned4(part, n, (long long)m * n, 0) ? VEC_C : 0)
                                        : (aligned4(c, ldc, bt.c_outer, bt.c_inner) ? VEC_C : 0));
    nn_status st;
    if (p.v == NN_GEMM_TF32)
        st = dispatch_tf32(s, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta_k, out, ldo, bt, vec, p.ksplit, p.kchunk);
    else if (p.v == NN_GEMM_FP32_128)
        st = dispatch<128, 128, 8, 8, 8>(s, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta_k, out, ldo, bt, vec,
                                         p.ksplit, p.kchunk);
    else
        st = dispatch<64, 64, 16, 4, 4>(s, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta_k, out, ldo, bt, vec,
                                        p.ksplit, p.kchunk);
    if (st == NN_OK && p.ksplit > 1) st = nn_cuda_splitk_reduce(s, m, n, p.ksplit, part, beta, c, ldc, bt);
    if (part) nn_cuda_scratch_free(part); /* later work on the stream runs after the reduction */
    return st;
}

static nn_status sgemm_as(cudaStream_t s, nn_gemm_variant v, bool ta, bool tb, int m, int n, int k, float alpha,
                          const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc,
                          const nn_gemm_batch *batch)
{
    nn_gemm_batch one = {};
    one.count = one.inner = 1;
    nn_gemm_batch bt = batch ? *batch : one;
    if (bt.inner < 1) bt.inner = 1;
    if (m < 0 || n < 0 || k < 0 || bt.count < 0)
        return nn_error(NN_E_ARG, "cuda sgemm: negative size (%d, %d, %d, batch %d)", m, n, k, bt.count);
    if (m == 0 || n == 0 || bt.count == 0) return NN_OK;
    if (lda < (ta ? m : k) || ldb < (tb ? k : n) || ldc < n)
        return nn_error(NN_E_ARG, "cuda sgemm: leading dimensions %d, %d, %d too small for %dx%dx%d",
                        lda, ldb, ldc, m, n, k);
    if (v == NN_GEMM_TF32 && !nn_cuda_tf32_supported())
        return nn_error(NN_E_UNSUPPORTED, "cuda sgemm: the TF32 kernel needs compute capability 8.0 and a "
                        "build for it (gpu_sm %d)", NN_CUDA_SM);
    return run_plan(s, plan_gemm(v, m, n, k, bt.count), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, bt);
}

nn_status nn_cuda_sgemm(cudaStream_t s, bool ta, bool tb, int m, int n, int k, float alpha,
                        const float *a, int lda, const float *b, int ldb, float beta, float *c,
                        int ldc, const nn_gemm_batch *batch)
{
    return sgemm_as(s, NN_GEMM_AUTO, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch);
}

extern "C" nn_status nn_cuda_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                                  const float *b, int ldb, float beta, float *c, int ldc)
{
    NN_CUDA_STREAM(s);
    return sgemm_as(s, NN_GEMM_AUTO, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, NULL);
}

extern "C" nn_status nn_cuda_gemm_as(nn_gemm_variant v, bool ta, bool tb, int m, int n, int k, float alpha,
                                     const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    NN_CUDA_STREAM(s);
    return sgemm_as(s, v, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, NULL);
}

extern "C" nn_gemm_variant nn_cuda_gemm_pick(int m, int n, int k, int count)
{
    return plan_gemm(NN_GEMM_AUTO, m, n, k, count).v;
}

extern "C" nn_status nn_cuda_gemm_fused_as(nn_gemm_variant v, bool ta, bool tb, int m, int n, int k, float alpha,
                                           const float *a, int lda, const float *b, int ldb, float beta, float *c,
                                           int ldc, const float *bias, bool bias_per_row, bool relu, float *rowsum,
                                           int *kchunk)
{
    NN_CUDA_STREAM(s);
    nn_gemm_batch bt = {};
    bt.count = bt.inner = 1;
    bt.bias = bias;
    bt.bias_per_row = bias_per_row;
    bt.relu = relu;
    bt.rowsum = rowsum;
    if (kchunk) {
        const gemm_plan p = plan_gemm(v, m, n, k, 1);
        *kchunk = p.ksplit > 1 ? p.kchunk : k;
    }
    return sgemm_as(s, v, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, &bt);
}
