/* The implicit-GEMM conv2d kernel (see conv2d_implicit.cu, which launches
 * it) and its three gathers. Needs core/conv_index.h and cuda/common.cuh
 * first. (Its CPU run is test_cuda's test_conv2d_implicit on tests/cuda_emu.)
 *
 * Per group gi and slice ks of K (blockIdx.z = gi * splits + ks) the kernel
 * computes C = A (M, K) B (K, N) over K in [ks * kchunk, (ks + 1) * kchunk),
 * one BM x BN tile per block. A gather says where A's and B's elements are
 * (one of them is read through core/conv_index.h's im2col rule, so no column
 * buffer exists) and where C's elements go:
 *   forward          y[:, gi] (OCg, N*OH*OW) = w[gi] B + b      B from x
 *   data gradient    dx[:, gi] (Cg, N*H*W) += w[gi]^T B'        B' from dy
 *   weight gradient  dw[gi] (OCg, Kg) += dy[:, gi] B^T          B^T from x,
 * the last one with K = N*OH*OW, long: split across blocks, the slices'
 * partials added in order by gemm.cu's split-K reduction. */
#ifndef NN_CUDA_CONV2D_IMPLICIT_CUH
#define NN_CUDA_CONV2D_IMPLICIT_CUH

/* One launch's operands, the same struct for the three products. */
struct conv_implicit_args {
    nn_conv2d_geom g;
    const float *a_src; /* A's source: w (forward, data gradient) or dy (weight gradient) */
    const float *b_src; /* B's source, gathered: x (forward, weight gradient) or dy (data gradient) */
    const float *bias;  /* forward: added last; NULL: none */
    float *out;         /* y, dx or dw; with K split, the slices' partials (M x N each) */
    float *rowsum;      /* weight gradient: db (the partials' row slots with K split); NULL: none */
    int kchunk, splits; /* K per slice (a multiple of BK) and the slices */
};

/* Each thread stages 4 consecutive K elements of one A row (m, k..k+3) and 4
 * consecutive columns of one B row (k, n..n+3); a gather's state holds what
 * is fixed for the whole K loop about the thread's 4 columns n (found once). */

/* forward: A = w[gi] (OC/G, C/G*KH*KW) as stored, B[k, q] from x (the im2col rule) */
struct conv_fwd_gather {
    static constexpr const char *what = "conv2d implicit GEMM"; /* for launch errors */
    static NN_CONV_HD int m(const nn_conv2d_geom &g) { return g.oc / g.groups; }
    static NN_CONV_HD int n(const nn_conv2d_geom &g) { return g.n * g.oh * g.ow; }
    static NN_CONV_HD int k(const nn_conv2d_geom &g) { return g.c / g.groups * g.kh * g.kw; }
    nn_conv_col win[4]; /* the windows of the thread's 4 columns */

    __device__ conv_fwd_gather(const nn_conv2d_geom &g, int, int n0)
    {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int q = n0 + i;
            win[i] = nn_conv_col_of(g, q < n(g) ? q : 0);
            if (q >= n(g)) win[i].y0 = -(1 << 29); /* a column past the end: every tap misses (zeros) */
        }
    }
    __device__ void load_a(const conv_implicit_args &a, int gi, int m_, int k0, int kend, float r[4]) const
    {
        const nn_conv2d_geom &g = a.g;
#pragma unroll
        for (int i = 0; i < 4; i++)
            r[i] = m_ < m(g) && k0 + i < kend ? __ldg(a.a_src + ((long long)gi * m(g) + m_) * k(g) + k0 + i) : 0.0f;
    }
    __device__ void load_b(const conv_implicit_args &a, int gi, int k_, int kend, float r[4]) const
    {
        const nn_conv_row row = nn_conv_row_of(a.g, gi, k_ < kend ? k_ : 0);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const long long src = k_ < kend ? nn_conv_src(a.g, win[i], row) : -1;
            r[i] = src >= 0 ? __ldg(a.b_src + src) : 0.0f;
        }
    }
    /* y[s, gi*M + m, pixel] = acc (+ b), as the im2col path's 1 * acc + bias */
    static __device__ void store(const conv_implicit_args &a, int gi, int, int m_, int q, float acc)
    {
        const int p = a.g.oh * a.g.ow, s = q / p;
        float r = 1.0f * acc;
        if (a.bias) r += __ldg(a.bias + gi * m(a.g) + m_);
        a.out[((long long)s * a.g.oc + (long long)gi * m(a.g) + m_) * p + (q - s * p)] = r;
    }
};

/* data gradient: A = w[gi]^T (C/G, OC/G*KH*KW), element (c, (o, i, j)) at
 * w[gi*OC/G + o, c, i, j]; B'[k, q] from dy (the transposed rule) */
struct conv_dx_gather {
    static constexpr const char *what = "conv2d implicit GEMM, data gradient"; /* for launch errors */
    static NN_CONV_HD int m(const nn_conv2d_geom &g) { return g.c / g.groups; }
    static NN_CONV_HD int n(const nn_conv2d_geom &g) { return g.n * g.h * g.w; }
    static NN_CONV_HD int k(const nn_conv2d_geom &g) { return g.oc / g.groups * g.kh * g.kw; }
    nn_conv_col win[4];

    __device__ conv_dx_gather(const nn_conv2d_geom &g, int, int n0)
    {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int q = n0 + i;
            win[i] = nn_convt_col_of(g, q < n(g) ? q : 0);
            if (q >= n(g)) win[i].y0 = -(1 << 29); /* past the end: no output takes any tap */
        }
    }
    __device__ void load_a(const conv_implicit_args &a, int gi, int m_, int k0, int kend, float r[4]) const
    {
        const nn_conv2d_geom &g = a.g;
        const int khw = g.kh * g.kw;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int k_ = k0 + i, o = k_ / khw;
            r[i] = m_ < m(g) && k_ < kend
                       ? __ldg(a.a_src + (((long long)gi * (g.oc / g.groups) + o) * m(g) + m_) * khw + (k_ - o * khw))
                       : 0.0f;
        }
    }
    __device__ void load_b(const conv_implicit_args &a, int gi, int k_, int kend, float r[4]) const
    {
        const nn_conv_row row = nn_convt_row_of(a.g, gi, k_ < kend ? k_ : 0);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const long long src = k_ < kend ? nn_convt_src(a.g, win[i], row) : -1;
            r[i] = src >= 0 ? __ldg(a.b_src + src) : 0.0f;
        }
    }
    /* dx[s, gi*M + m, pixel] += acc */
    static __device__ void store(const conv_implicit_args &a, int gi, int, int m_, int q, float acc)
    {
        const int p = a.g.h * a.g.w, s = q / p;
        float *o = a.out + ((long long)s * a.g.c + (long long)gi * m(a.g) + m_) * p + (q - s * p);
        *o = *o + 1.0f * acc;
    }
};

/* weight gradient: A = dy[:, gi] (OC/G, N*OH*OW), element (o, (s, pixel)) at
 * dy[s, gi*OC/G + o, pixel]; B^T[q, k] = B[k, q] from x (the forward's rule,
 * its rows now the thread's 4 fixed columns) */
struct conv_dw_gather {
    static constexpr const char *what = "conv2d implicit GEMM, weight gradient"; /* for launch errors */
    static NN_CONV_HD int m(const nn_conv2d_geom &g) { return g.oc / g.groups; }
    static NN_CONV_HD int n(const nn_conv2d_geom &g) { return g.c / g.groups * g.kh * g.kw; }
    static NN_CONV_HD int k(const nn_conv2d_geom &g) { return g.n * g.oh * g.ow; }
    nn_conv_row tap[4]; /* the rows of B (taps) of the thread's 4 columns of dw */

    __device__ conv_dw_gather(const nn_conv2d_geom &g, int gi, int n0)
    {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int kk = n0 + i;
            tap[i] = nn_conv_row_of(g, gi, kk < n(g) ? kk : 0);
            if (kk >= n(g)) tap[i].i = -(1 << 29); /* a column past the end: misses every window (zeros) */
        }
    }
    /* dy[s, gi*M + m, pixel] for the 4 positions q = k0.. (s, pixel), 0 past kend */
    __device__ void load_a(const conv_implicit_args &a, int gi, int m_, int k0, int kend, float r[4]) const
    {
        const nn_conv2d_geom &g = a.g;
        const int p = g.oh * g.ow;
        int s = k0 / p, px = k0 - s * p;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            r[i] = m_ < m(g) && k0 + i < kend
                       ? __ldg(a.a_src + ((long long)s * g.oc + (long long)gi * m(g) + m_) * p + px)
                       : 0.0f;
            if (++px == p) px = 0, s++;
        }
    }
    __device__ void load_b(const conv_implicit_args &a, int, int q, int kend, float r[4]) const
    {
        const nn_conv_col win = nn_conv_col_of(a.g, q < kend ? q : 0);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const long long src = q < kend ? nn_conv_src(a.g, win, tap[i]) : -1;
            r[i] = src >= 0 ? __ldg(a.b_src + src) : 0.0f;
        }
    }
    /* dw[gi*M + m, k] += acc (the im2col path's 1 * acc + 1 * dw), or the slice's partial */
    static __device__ void store(const conv_implicit_args &a, int gi, int ks, int m_, int kk, float acc)
    {
        const int M = m(a.g), N = n(a.g);
        if (a.splits > 1)
            a.out[(((long long)gi * a.splits + ks) * M + m_) * N + kk] = acc;
        else {
            float *o = a.out + ((long long)gi * M + m_) * N + kk;
            *o = 1.0f * acc + *o;
        }
    }
};

template <class G, int BM, int BN, int BK, int TM, int TN>
static __global__ void __launch_bounds__((BM / TM) * (BN / TN))
conv_implicit_kernel(conv_implicit_args args)
{
    constexpr int NT = (BM / TM) * (BN / TN);
    static_assert(BM * BK == 4 * NT && BN * BK == 4 * NT, "each thread stages 4 of A and 4 of B");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are made of 4-wide groups");
    constexpr int GM = TM / 4, GN = TN / 4, SM_ = BM / GM, SN = BN / GN;
    __shared__ __align__(16) float As[2][BK][BM + 4];
    __shared__ __align__(16) float Bs[2][BK][BN + 4];

    const nn_conv2d_geom &g = args.g;
    const int gi = blockIdx.z / args.splits, ks = blockIdx.z - gi * args.splits;
    const int M = G::m(g), N = G::n(g), K = G::k(g);
    const int kbeg = ks * args.kchunk, kend = min(K, kbeg + args.kchunk);
    const int tid = threadIdx.x, tx = tid % (BN / TN), ty = tid / (BN / TN);
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

    /* staging: A as gemm.cu's NN case (4 consecutive k of one row m), B as 4
     * consecutive columns of one row k */
    const int a_r = tid / (BK / 4), a_c = (tid % (BK / 4)) * 4;
    const int b_r = tid / (BN / 4), b_c = (tid % (BN / 4)) * 4;
    const G gather(g, gi, n0 + b_c);
    /* the row sums of A (db of the weight gradient, cuda/epilogue.h's rule):
     * thread tid < BM of the first tile column adds row m0 + tid in k order */
    float *rsum = args.rowsum && nn_rowsum_owner(blockIdx.x) ? args.rowsum : nullptr;
    float rs = 0.0f;
    float ra[4], rb[4];
    auto load = [&](int k0) {
        gather.load_a(args, gi, m0 + a_r, k0 + a_c, kend, ra);
        gather.load_b(args, gi, k0 + b_r, kend, rb);
    };
    auto stage = [&](int buf) {
#pragma unroll
        for (int i = 0; i < 4; i++) As[buf][a_c + i][a_r] = ra[i];
        *reinterpret_cast<float4 *>(&Bs[buf][b_r][b_c]) = make_float4(rb[0], rb[1], rb[2], rb[3]);
    };

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = 0.0f;

    const int ktiles = kend > kbeg ? (kend - kbeg + BK - 1) / BK : 0;
    if (ktiles > 0) {
        load(kbeg);
        stage(0);
        __syncthreads();
    }
    for (int t = 0; t < ktiles; t++) {
        const int buf = t & 1;
        const bool more = t + 1 < ktiles;
        if (more) load(kbeg + (t + 1) * BK); /* global reads in flight during the products */
        if (rsum && tid < BM) { /* As holds slice t: A (m0 + tid, k) in k order, 0 past kend */
#pragma unroll
            for (int kk = 0; kk < BK; kk++) rs += As[buf][kk][tid];
        }
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float a[TM], bv[TN];
#pragma unroll
            for (int gq = 0; gq < GM; gq++) {
                float4 v = *reinterpret_cast<const float4 *>(&As[buf][kk][gq * SM_ + ty * 4]);
                a[gq * 4 + 0] = v.x; a[gq * 4 + 1] = v.y; a[gq * 4 + 2] = v.z; a[gq * 4 + 3] = v.w;
            }
#pragma unroll
            for (int gq = 0; gq < GN; gq++) {
                float4 v = *reinterpret_cast<const float4 *>(&Bs[buf][kk][gq * SN + tx * 4]);
                bv[gq * 4 + 0] = v.x; bv[gq * 4 + 1] = v.y; bv[gq * 4 + 2] = v.z; bv[gq * 4 + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++) acc[i][j] = fmaf(a[i], bv[j], acc[i][j]);
        }
        /* the other buffer was last read in slice t-1, before the barrier that ended it */
        if (more) stage(buf ^ 1);
        __syncthreads();
    }

#pragma unroll
    for (int gq = 0; gq < GN; gq++) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int nn = n0 + gq * SN + tx * 4 + j;
            if (nn >= N) continue;
#pragma unroll
            for (int i = 0; i < TM; i++) {
                const int m = m0 + (i / 4) * SM_ + ty * 4 + (i % 4);
                if (m < M) G::store(args, gi, ks, m, nn, acc[i][gq * 4 + j]);
            }
        }
    }
    /* the row sums: alone on these rows in this group (or slice), so a plain store */
    if (rsum && tid < BM && m0 + tid < M) {
        if (args.splits > 1)
            rsum[nn_rowsum_slot(blockIdx.z, m0 + tid, M)] = rs;
        else
            rsum[(long long)gi * M + m0 + tid] += rs;
    }
}

#endif
