/* The implicit-GEMM conv2d kernel (see conv2d_implicit.cu, which launches
 * it) and its two gathers. Needs core/conv_index.h and cuda/common.cuh
 * first. (Its CPU run is test_cuda's test_conv2d_implicit on tests/cuda_emu.)
 *
 * Per group gi (blockIdx.z) the kernel computes out[:, gi] (M, columns) =
 * A (M, K) B (K, columns), B gathered from `in`, and writes column q =
 * (sample, pixel) of row m to out[sample, gi*M + m, pixel]. */
#ifndef NN_CUDA_CONV2D_IMPLICIT_CUH
#define NN_CUDA_CONV2D_IMPLICIT_CUH

/* forward: y (N, OC, OH, OW) = w x (+ b); A = w[gi] (OC/G, C/G*KH*KW) as stored */
struct conv_fwd_gather {
    static constexpr bool accumulate = false;
    static NN_CONV_HD int m(const nn_conv2d_geom &g) { return g.oc / g.groups; }
    static NN_CONV_HD int k(const nn_conv2d_geom &g) { return g.c / g.groups * g.kh * g.kw; }
    static NN_CONV_HD int plane(const nn_conv2d_geom &g) { return g.oh * g.ow; }
    static NN_CONV_HD int channels(const nn_conv2d_geom &g) { return g.oc; }
    static NN_CONV_HD long long a(const nn_conv2d_geom &g, int gi, int m_, int k_)
    {
        return ((long long)gi * m(g) + m_) * k(g) + k_;
    }
    static NN_CONV_HD nn_conv_col col(const nn_conv2d_geom &g, int q) { return nn_conv_col_of(g, q); }
    static NN_CONV_HD nn_conv_row row(const nn_conv2d_geom &g, int gi, int k_) { return nn_conv_row_of(g, gi, k_); }
    static NN_CONV_HD long long src(const nn_conv2d_geom &g, nn_conv_col c, nn_conv_row r) { return nn_conv_src(g, c, r); }
};

/* data gradient: dx (N, C, H, W) += w^T dy; A = w[gi]^T (C/G, OC/G*KH*KW):
 * element (c, (o, i, j)) at w[gi*OC/G + o, c, i, j] */
struct conv_dx_gather {
    static constexpr bool accumulate = true;
    static NN_CONV_HD int m(const nn_conv2d_geom &g) { return g.c / g.groups; }
    static NN_CONV_HD int k(const nn_conv2d_geom &g) { return g.oc / g.groups * g.kh * g.kw; }
    static NN_CONV_HD int plane(const nn_conv2d_geom &g) { return g.h * g.w; }
    static NN_CONV_HD int channels(const nn_conv2d_geom &g) { return g.c; }
    static NN_CONV_HD long long a(const nn_conv2d_geom &g, int gi, int m_, int k_)
    {
        const int khw = g.kh * g.kw, o = k_ / khw;
        return (((long long)gi * (g.oc / g.groups) + o) * m(g) + m_) * khw + (k_ - o * khw);
    }
    static NN_CONV_HD nn_conv_col col(const nn_conv2d_geom &g, int q) { return nn_convt_col_of(g, q); }
    static NN_CONV_HD nn_conv_row row(const nn_conv2d_geom &g, int gi, int k_) { return nn_convt_row_of(g, gi, k_); }
    static NN_CONV_HD long long src(const nn_conv2d_geom &g, nn_conv_col c, nn_conv_row r) { return nn_convt_src(g, c, r); }
};

template <class G, int BM, int BN, int BK, int TM, int TN>
static __global__ void __launch_bounds__((BM / TM) * (BN / TN))
conv_implicit_kernel(nn_conv2d_geom g, const float *__restrict__ in, const float *__restrict__ w,
                     const float *__restrict__ b, float *__restrict__ out)
{
    constexpr int NT = (BM / TM) * (BN / TN);
    static_assert(BM * BK == 4 * NT && BN * BK == 4 * NT, "each thread stages 4 of A and 4 of B");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are made of 4-wide groups");
    constexpr int GM = TM / 4, GN = TN / 4, SM_ = BM / GM, SN = BN / GN;
    __shared__ __align__(16) float As[2][BK][BM + 4];
    __shared__ __align__(16) float Bs[2][BK][BN + 4];

    const int gi = blockIdx.z, M = G::m(g), K = G::k(g), p = G::plane(g), cols = g.n * p;
    const int tid = threadIdx.x, tx = tid % (BN / TN), ty = tid / (BN / TN);
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

    /* staging: A as gemm.cu's NN case (4 consecutive k of one row m), B as
     * 4 consecutive columns of one row k, whose windows are fixed for the
     * whole K loop (found once here) */
    const int a_r = tid / (BK / 4), a_c = (tid % (BK / 4)) * 4;
    const int b_r = tid / (BN / 4), b_c = (tid % (BN / 4)) * 4;
    nn_conv_col win[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int q = n0 + b_c + i;
        win[i] = G::col(g, q < cols ? q : 0);
        if (q >= cols) win[i].y0 = -(1 << 29); /* a column past the end: every tap misses (zeros) */
    }
    float ra[4], rb[4];
    auto load = [&](int k0) {
        const int m = m0 + a_r;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int k = k0 + a_c + i;
            ra[i] = m < M && k < K ? __ldg(w + G::a(g, gi, m, k)) : 0.0f;
        }
        const int k = k0 + b_r;
        const nn_conv_row r = G::row(g, gi, k < K ? k : 0);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const long long src = k < K ? G::src(g, win[i], r) : -1;
            rb[i] = src >= 0 ? __ldg(in + src) : 0.0f;
        }
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

    const int ktiles = (K + BK - 1) / BK;
    load(0);
    stage(0);
    __syncthreads();
    for (int t = 0; t < ktiles; t++) {
        const int buf = t & 1;
        const bool more = t + 1 < ktiles;
        if (more) load((t + 1) * BK); /* global reads in flight during the products */
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

    /* epilogue: out[s, gi*M + m, pixel] = acc (+ b), as the im2col path's
     * 1 * acc + bias; or += acc (the data gradient accumulates) */
#pragma unroll
    for (int gq = 0; gq < GN; gq++) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int q = n0 + gq * SN + tx * 4 + j;
            if (q >= cols) continue;
            const int s = q / p;
            float *oc = out + ((long long)s * G::channels(g) + (long long)gi * M) * p + (q - s * p);
#pragma unroll
            for (int i = 0; i < TM; i++) {
                const int m = m0 + (i / 4) * SM_ + ty * 4 + (i % 4);
                if (m >= M) continue;
                float r = 1.0f * acc[i][gq * 4 + j];
                if (b) r += __ldg(b + gi * M + m);
                float *o = oc + (long long)m * p;
                *o = G::accumulate ? *o + r : r;
            }
        }
    }
}

#endif
