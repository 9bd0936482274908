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

/* A gather states each product's index rules once, for both kernels:
 *   m, n, k          the product's sizes (per group);
 *   column           what is fixed about one column n of B for the whole K
 *                    loop (found once per thread: column_of; a column past
 *                    N gets one that every element misses);
 *   a_col(gi, k)     the offset of A (0, k) in a_src (k < K), and
 *   a_ld             A's row stride there: A (m, k) is at a_col + m * a_ld
 *                    (so a thread whose column stays divides once a slice);
 *   a_plain          a_col(gi, k) = a_col(gi, 0) + k: A is a stored matrix
 *                    (the TF32 kernel then copies it 16 bytes at a time);
 *   kpos             what B's row k is (kpos_of), walked d rows on by
 *                    advance with kstep_of(d) (no division: conv_index.h);
 *   b_at(col, kpos)  the offset of B (k, n) in b_src, or -1 for a zero;
 *   out_col(gi, ks, n)  the offset of C (0, n) in out (found once per
 *                    column: it divides), out_ld C's row stride there, and
 *   put(gi, m, o, acc)  C (m, n) = acc into *o, o = out + out_col + m * out_ld,
 *                    as the product requires (bias and ReLU, or added). */

/* B of the forward (T false: x by the im2col rule) and of the data gradient
 * (T true: dy by the transposed rule): a column is a window (an output
 * pixel's in x, or an input pixel's place in dy's planes), a row k a
 * (channel plane, tap), walked without division. */
template <bool T>
struct conv_window_b {
    typedef nn_conv_col column;
    static __device__ column column_of(const nn_conv2d_geom &g, int, int q)
    {
        const int n = T ? g.n * g.h * g.w : g.n * g.oh * g.ow;
        column c = T ? nn_convt_col_of(g, q < n ? q : 0) : nn_conv_col_of(g, q < n ? q : 0);
        if (q >= n) c.y0 = -(1 << 29); /* past the end: no tap reaches it (zeros) */
        return c;
    }
    typedef nn_conv_row kpos;
    typedef nn_conv_row_step kstep;
    static __device__ kpos kpos_of(const nn_conv2d_geom &g, int gi, int k_)
    {
        return T ? nn_convt_row_of(g, gi, k_) : nn_conv_row_of(g, gi, k_);
    }
    static __device__ kstep kstep_of(const nn_conv2d_geom &g, int d)
    {
        return nn_conv_row_step_of(g, d, T ? (long long)g.oh * g.ow : (long long)g.h * g.w);
    }
    static __device__ void advance(const nn_conv2d_geom &g, kpos &p, const kstep &s) { nn_conv_row_next(g, &p, s); }
    static __device__ long long b_at(const nn_conv2d_geom &g, const column &c, const kpos &p)
    {
        return T ? nn_convt_src(g, c, p) : nn_conv_src(g, c, p);
    }
};

/* forward: A = w[gi] (OC/G, C/G*KH*KW) as stored, B[k, q] from x (the im2col rule) */
struct conv_fwd_gather : conv_window_b<false> {
    static constexpr const char *what = "conv2d implicit GEMM"; /* for launch errors */
    static NN_CONV_HD int m(const nn_conv2d_geom &g) { return g.oc / g.groups; }
    static NN_CONV_HD int n(const nn_conv2d_geom &g) { return g.n * g.oh * g.ow; }
    static NN_CONV_HD int k(const nn_conv2d_geom &g) { return g.c / g.groups * g.kh * g.kw; }
    static constexpr bool a_plain = true;
    static __device__ long long a_col(const nn_conv2d_geom &g, int gi, int k_) { return (long long)gi * m(g) * k(g) + k_; }
    static __device__ int a_ld(const nn_conv2d_geom &g) { return k(g); }
    /* y[s, gi*M + m, pixel] = acc (+ b), as the im2col path's 1 * acc + bias,
     * then the fused ReLU (g.relu: nn_conv2d_relu) as its GEMM's epilogue */
    static __device__ long long out_col(const conv_implicit_args &a, int gi, int, int q)
    {
        const int p = a.g.oh * a.g.ow, s = q / p;
        return ((long long)s * a.g.oc + (long long)gi * m(a.g)) * p + (q - s * p);
    }
    static __device__ int out_ld(const conv_implicit_args &a) { return a.g.oh * a.g.ow; }
    static __device__ void put(const conv_implicit_args &a, int gi, int m_, float *o, float acc)
    {
        float r = 1.0f * acc;
        if (a.bias) r += __ldg(a.bias + gi * m(a.g) + m_);
        *o = a.g.relu ? nn_epi_relu(r) : r;
    }
};

/* data gradient: A = w[gi]^T (C/G, OC/G*KH*KW), element (c, (o, i, j)) at
 * w[gi*OC/G + o, c, i, j]; B'[k, q] from dy (the transposed rule) */
struct conv_dx_gather : conv_window_b<true> {
    static constexpr const char *what = "conv2d implicit GEMM, data gradient";
    static constexpr bool a_plain = false; /* w transposed per tap */
    static NN_CONV_HD int m(const nn_conv2d_geom &g) { return g.c / g.groups; }
    static NN_CONV_HD int n(const nn_conv2d_geom &g) { return g.n * g.h * g.w; }
    static NN_CONV_HD int k(const nn_conv2d_geom &g) { return g.oc / g.groups * g.kh * g.kw; }
    static __device__ long long a_col(const nn_conv2d_geom &g, int gi, int k_)
    {
        const int khw = g.kh * g.kw, o = k_ / khw;
        return ((long long)gi * (g.oc / g.groups) + o) * m(g) * khw + (k_ - o * khw);
    }
    static __device__ int a_ld(const nn_conv2d_geom &g) { return g.kh * g.kw; }
    /* dx[s, gi*M + m, pixel] += acc */
    static __device__ long long out_col(const conv_implicit_args &a, int gi, int, int q)
    {
        const int p = a.g.h * a.g.w, s = q / p;
        return ((long long)s * a.g.c + (long long)gi * m(a.g)) * p + (q - s * p);
    }
    static __device__ int out_ld(const conv_implicit_args &a) { return a.g.h * a.g.w; }
    static __device__ void put(const conv_implicit_args &, int, int, float *o, float acc) { *o = *o + 1.0f * acc; }
};

/* weight gradient: A = dy[:, gi] (OC/G, N*OH*OW), element (o, (s, pixel)) at
 * dy[s, gi*OC/G + o, pixel]; B^T[q, k] = B[k, q] from x (the forward's rule
 * with the roles of rows and columns swapped: a column is a tap) */
struct conv_dw_gather {
    static constexpr const char *what = "conv2d implicit GEMM, weight gradient";
    static constexpr bool a_plain = false; /* dy: samples OC planes apart */
    static NN_CONV_HD int m(const nn_conv2d_geom &g) { return g.oc / g.groups; }
    static NN_CONV_HD int n(const nn_conv2d_geom &g) { return g.c / g.groups * g.kh * g.kw; }
    static NN_CONV_HD int k(const nn_conv2d_geom &g) { return g.n * g.oh * g.ow; }
    typedef nn_conv_row column; /* tap n: its channel plane and kernel offset */
    static __device__ column column_of(const nn_conv2d_geom &g, int gi, int t)
    {
        column c = nn_conv_row_of(g, gi, t < n(g) ? t : 0);
        if (t >= n(g)) c.i = -(1 << 29); /* past the end: misses every window (zeros) */
        return c;
    }
    static __device__ long long a_col(const nn_conv2d_geom &g, int gi, int q)
    {
        const int p = g.oh * g.ow, s = q / p;
        return ((long long)s * g.oc + (long long)gi * m(g)) * p + (q - s * p);
    }
    static __device__ int a_ld(const nn_conv2d_geom &g) { return g.oh * g.ow; }
    typedef nn_conv_col kpos; /* row q of B^T: output pixel q's window */
    typedef nn_conv_col_step kstep;
    static __device__ kpos kpos_of(const nn_conv2d_geom &g, int, int q) { return nn_conv_col_of(g, q); }
    static __device__ kstep kstep_of(const nn_conv2d_geom &g, int d) { return nn_conv_col_step_of(g, d); }
    static __device__ void advance(const nn_conv2d_geom &g, kpos &p, const kstep &s) { nn_conv_col_next(g, &p, s); }
    static __device__ long long b_at(const nn_conv2d_geom &g, const column &c, const kpos &p)
    {
        return nn_conv_src(g, p, c);
    }
    /* dw[gi*M + m, t] += acc (the im2col path's 1 * acc + 1 * dw), or the slice's partial */
    static __device__ long long out_col(const conv_implicit_args &a, int gi, int ks, int t)
    {
        const long long mat = (long long)m(a.g) * n(a.g);
        return (a.splits > 1 ? ((long long)gi * a.splits + ks) * mat : gi * mat) + t;
    }
    static __device__ int out_ld(const conv_implicit_args &a) { return n(a.g); }
    static __device__ void put(const conv_implicit_args &a, int, int, float *o, float acc)
    {
        *o = a.splits > 1 ? acc : 1.0f * acc + *o;
    }
};

/* Where a block works: group gi, slice ks of K = [kbeg, kend) */
struct conv_implicit_block {
    int gi, ks, kbeg, kend;
};

template <class G>
static __device__ conv_implicit_block conv_block(const conv_implicit_args &a)
{
    conv_implicit_block b;
    b.gi = blockIdx.z / a.splits;
    b.ks = blockIdx.z - b.gi * a.splits;
    b.kbeg = b.ks * a.kchunk;
    b.kend = min(G::k(a.g), b.kbeg + a.kchunk);
    return b;
}

/* The row sums (db of the weight gradient, cuda/epilogue.h's rule): alone on
 * these rows in this group (or slice), so a plain store */
static __device__ void conv_store_rowsum(const conv_implicit_args &a, const conv_implicit_block &b, int m, int M,
                                         float rs)
{
    if (a.splits > 1)
        a.rowsum[nn_rowsum_slot(blockIdx.z, m, M)] = rs;
    else
        a.rowsum[(long long)b.gi * M + m] += rs;
}

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
    const conv_implicit_block blk = conv_block<G>(args);
    const int gi = blk.gi, kbeg = blk.kbeg, kend = blk.kend, M = G::m(g), N = G::n(g);
    const int tid = threadIdx.x, tx = tid % (BN / TN), ty = tid / (BN / TN);
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

    /* staging: A as gemm.cu's NN case (4 consecutive k of one row m), B as 4
     * consecutive columns of one row k */
    const int a_r = tid / (BK / 4), a_c = (tid % (BK / 4)) * 4;
    const int b_r = tid / (BN / 4), b_c = (tid % (BN / 4)) * 4;
    typename G::column col[4]; /* the thread's 4 columns of B */
#pragma unroll
    for (int i = 0; i < 4; i++) col[i] = G::column_of(g, gi, n0 + b_c + i);
    /* the row sums of A (db of the weight gradient, cuda/epilogue.h's rule):
     * thread tid < BM of the first tile column adds row m0 + tid in k order */
    const bool rsum = args.rowsum && nn_rowsum_owner(blockIdx.x);
    float rs = 0.0f;
    float ra[4], rb[4];
    auto load = [&](int k0) {
        const int m = m0 + a_r, kb = k0 + b_r;
        const typename G::kpos kp = G::kpos_of(g, gi, kb); /* one row for the thread's 4 columns */
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int ka = k0 + a_c + i;
            ra[i] = m < M && ka < kend ? __ldg(args.a_src + G::a_col(g, gi, ka) + (long long)m * G::a_ld(g)) : 0.0f;
            const long long src = kb < kend ? G::b_at(g, col[i], kp) : -1;
            rb[i] = src >= 0 ? __ldg(args.b_src + src) : 0.0f;
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
            float *const c = args.out + G::out_col(args, gi, blk.ks, nn);
#pragma unroll
            for (int i = 0; i < TM; i++) {
                const int m = m0 + (i / 4) * SM_ + ty * 4 + (i % 4);
                if (m < M) G::put(args, gi, m, c + (long long)m * G::out_ld(args), acc[i][gq * 4 + j]);
            }
        }
    }
    if (rsum && tid < BM && m0 + tid < M) conv_store_rowsum(args, blk, m0 + tid, M, rs);
}

/* The same products on tensor cores (NN_TF32=1; cuda/tf32.cuh): gemm_tf32.cuh's
 * 128 x 128 x 32 tiles, 8 warps of mma.m16n8k8 and the ring of cp.async
 * slices, with each tile element copied on its own from the offset its
 * gather computes (4-byte cp.async; a zero is a copy of no bytes). Shared
 * tiles A [m][k] and B [k][n]: a thread's B column stays the same for the
 * whole K loop (column_of once), its A column k and B rows k vary. */
template <class G>
static __global__ void __launch_bounds__(TF32_THREADS, TF32_MIN_BLOCKS)
conv_implicit_tf32_kernel(conv_implicit_args args)
{
#if __CUDA_ARCH__ >= 800 || defined(NN_CUDA_EMU)
    extern __shared__ __align__(16) float tf32_smem[];
    constexpr int A_PITCH = tf32_a_pitch(false), B_PITCH = tf32_b_pitch(false);
    const nn_conv2d_geom &g = args.g;
    const conv_implicit_block blk = conv_block<G>(args);
    const int gi = blk.gi, kbeg = blk.kbeg, kend = blk.kend, M = G::m(g), N = G::n(g);
    const int ktiles = kend > kbeg ? (kend - kbeg + TF32_BK - 1) / TF32_BK : 0;
    const int m0 = blockIdx.y * TF32_BM, n0 = blockIdx.x * TF32_BN, tid = threadIdx.x;
    const bool rsum = args.rowsum && nn_rowsum_owner(blockIdx.x);
    float rs = 0.0f;
    auto a_tile = [&](int st) { return tf32_a_tile(tf32_smem, st); };
    auto b_tile = [&](int st) { return tf32_b_tile(tf32_smem, st); };

    /* element e = tid + i * THREADS of a tile: A (m, k) = (e / BK, e % BK), B (k, n) = (e / BN, e % BN) */
    constexpr int PER = TF32_BM * TF32_BK / TF32_THREADS;
    static_assert(TF32_BN * TF32_BK / TF32_THREADS == PER && TF32_THREADS % TF32_BK == 0 && TF32_THREADS % TF32_BN == 0,
                  "every thread copies PER elements of each tile, in a fixed A column and B column");
    const typename G::column col = G::column_of(g, gi, n0 + tid % TF32_BN);
    /* the thread's rows of B: kbeg + tid / BN, then every KSTRIDE-th, slice
     * after slice (the ring loads slices in order, each once), so walked from
     * one to the next instead of divided out per element */
    constexpr int KSTRIDE = TF32_THREADS / TF32_BN;
    /* a plain A (the forward's w): as the TF32 GEMM copies its A, 16 bytes at
     * a time where every row starts 16-byte aligned */
    [[maybe_unused]] const float *a_mat = args.a_src + G::a_col(g, gi, 0);
    [[maybe_unused]] const bool a_vec = G::a_plain && G::a_ld(g) % 4 == 0 && reinterpret_cast<uintptr_t>(a_mat) % 16 == 0;
    const typename G::kstep step = G::kstep_of(g, KSTRIDE);
    typename G::kpos kp = G::kpos_of(g, gi, kbeg + tid / TF32_BN);
    auto load_slice = [&](int t) {
        const int k0 = kbeg + t * TF32_BK, st = t % TF32_STAGES;
        float *at = a_tile(st), *bt = b_tile(st);
        if constexpr (G::a_plain) {
            tf32_load_tile<TF32_BM, TF32_BK, TF32_PAD_K>(at, a_mat, G::a_ld(g), m0, k0, M, kend, a_vec);
        } else {
            const int ka = k0 + tid % TF32_BK;
            const float *a_k = args.a_src + G::a_col(g, gi, ka < kend ? ka : 0); /* A (0, ka) */
            const long long a_ld = G::a_ld(g);
#pragma unroll 4
            for (int i = 0; i < PER; i++) {
                const int r = tid / TF32_BK + i * (TF32_THREADS / TF32_BK), m = m0 + r;
                const bool in = m < M && ka < kend;
                tf32_cp<4>(at + r * A_PITCH + tid % TF32_BK, in ? a_k + m * a_ld : args.a_src, in ? 4 : 0);
            }
        }
#pragma unroll 4
        for (int i = 0; i < PER; i++) {
            const int r = tid / TF32_BN + i * KSTRIDE, kb = k0 + r;
            const long long src = kb < kend ? G::b_at(g, col, kp) : -1;
            G::advance(g, kp, step);
            tf32_cp<4>(bt + r * B_PITCH + tid % TF32_BN, src >= 0 ? args.b_src + src : args.b_src, src >= 0 ? 4 : 0);
        }
    };

    const int lane = tid % 32, warp = tid / 32;
    const int wm = tf32_warp_m(warp), wn = tf32_warp_n(warp);
    float acc[4][4][4];
    tf32_zero(acc);
    tf32_ring(ktiles, load_slice, [&](int st) {
        const float *As = a_tile(st), *Bs = b_tile(st);
        if (rsum && tid < TF32_BM) { /* A (m0 + tid, k) in k order, unrounded, 0 past kend */
#pragma unroll 8
            for (int kk = 0; kk < TF32_BK; kk++) rs += As[tid * A_PITCH + kk];
        }
        tf32_slice_mma<false, false>(As, Bs, acc, wm, wn, lane);
    });

    const long long ld = G::out_ld(args);
    tf32_each_acc_cols(
        acc, m0, n0, M, N, wm, wn, lane, [&](int n) { return args.out + G::out_col(args, gi, blk.ks, n); },
        [&](int m, float *c, float v) { G::put(args, gi, m, c + m * ld, v); });
    if (rsum && tid < TF32_BM && m0 + tid < M) conv_store_rowsum(args, blk, m0 + tid, M, rs);
#else
    __trap(); /* the host never launches this below sm_80 (nn_cuda_tf32_supported) */
#endif
}

#endif
