/* The TF32 tensor-core pieces shared by the SGEMM (gemm_tf32.cuh) and the
 * implicit-GEMM convolution (conv2d_implicit.cuh): the tile geometry, the
 * cp.async ring's instructions, TF32 rounding, mma.sync.m16n8k8, and one
 * 32-deep slice of products from shared tiles. (The design and the
 * fragment layout: gemm_tf32.cuh's header.) sm_80 and later; NN_CUDA_EMU:
 * the emulator's runtime (tests/cuda_emu). */
#ifndef NN_CUDA_TF32_CUH
#define NN_CUDA_TF32_CUH

#define TF32_BM 128
#define TF32_BN 128
#define TF32_BK 32
#define TF32_THREADS 256
#define TF32_STAGES 3
/* Blocks per multiprocessor asked of the compiler (registers capped at 128;
 * ptxas -v for sm_90: no spills in NN/NT, 8 bytes in TN/TT) and counted on by
 * the split-K choice; two rings of 108 KiB fit in Hopper's 228 KiB. */
#define TF32_MIN_BLOCKS 2
/* Pads (floats) of the shared rows. A row along K (32 floats + 4): lane (g, t)
 * reads row g, column t -> bank 4g + t, all distinct. A row along M or N (128
 * + 8): lane reads row t, column g -> bank 8t + g, all distinct. Both keep
 * rows 16-byte aligned for cp.async. */
#define TF32_PAD_K 4
#define TF32_PAD_MN 8
/* One operand's tile, either orientation, in floats (the larger of the two) */
#define TF32_TILE_FLOATS (TF32_BM * (TF32_BK + TF32_PAD_K))
static_assert(TF32_BK * (TF32_BM + TF32_PAD_MN) <= TF32_TILE_FLOATS, "a k-major tile fits the slot");
#define TF32_SMEM_BYTES (TF32_STAGES * 2 * TF32_TILE_FLOATS * (int)sizeof(float))

/* cp.async of 16 (or 4) bytes; src_bytes < size fills the rest with zeros,
 * and src_bytes = 0 reads nothing (the address must still be valid). */
template <int BYTES>
static __device__ __forceinline__ void tf32_cp(float *dst, const float *src, int src_bytes)
{
    static_assert(BYTES == 16 || BYTES == 4, "cp.async copies 16 bytes (.cg, through L2) or 4 (.ca)");
#if defined(NN_CUDA_EMU)
    nn_emu::cp_async(dst, src, BYTES, src_bytes);
#elif __CUDA_ARCH__ >= 800
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    if constexpr (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes));
#endif
}
static __device__ __forceinline__ void tf32_commit(void)
{
#if defined(NN_CUDA_EMU)
    nn_emu::cp_async_commit();
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
/* waits until at most N groups of this thread are still in flight */
template <int N> static __device__ __forceinline__ void tf32_wait(void)
{
#if defined(NN_CUDA_EMU)
    nn_emu::cp_async_wait(N);
#elif __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

static __device__ __forceinline__ unsigned tf32_round(float x)
{
    unsigned r = 0;
#if defined(NN_CUDA_EMU)
    r = nn_emu::tf32_round(x);
#elif __CUDA_ARCH__ >= 800
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
#endif
    return r;
}

static __device__ __forceinline__ void tf32_mma(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
#if defined(NN_CUDA_EMU)
    nn_emu::mma_tf32_m16n8k8(c, a, b);
#elif __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

/* Shared tiles keep the operand's stored layout: A (m, k) at TA ? [k][m] :
 * [m][k], B (k, n) at TB ? [n][k] : [k][n]; a row's pitch in floats: */
static __host__ __device__ constexpr int tf32_a_pitch(bool ta) { return ta ? TF32_BM + TF32_PAD_MN : TF32_BK + TF32_PAD_K; }
static __host__ __device__ constexpr int tf32_b_pitch(bool tb) { return tb ? TF32_BK + TF32_PAD_K : TF32_BN + TF32_PAD_MN; }

/* Ring slot st of the dynamic shared memory: A's tile, then B's */
static __device__ __forceinline__ float *tf32_a_tile(float *smem, int st) { return smem + st * 2 * TF32_TILE_FLOATS; }
static __device__ __forceinline__ float *tf32_b_tile(float *smem, int st) { return tf32_a_tile(smem, st) + TF32_TILE_FLOATS; }

/* The 8 warps as 2 along M x 4 along N: warp w's 64 x 32 corner of the tile */
static __device__ __forceinline__ int tf32_warp_m(int warp) { return (warp / 4) * 64; }
static __device__ __forceinline__ int tf32_warp_n(int warp) { return (warp % 4) * 32; }

static __device__ __forceinline__ void tf32_zero(float (&acc)[4][4][4])
{
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int r = 0; r < 4; r++) acc[i][j][r] = 0.0f;
}

/* acc += the warp's share of As (BM x BK) Bs (BK x BN), one slice of K: 4
 * k-steps of 8, each 4 x 4 mma.m16n8k8 on fragments rounded to TF32. Lane
 * (g, t) = (lane / 4, lane % 4) holds acc[i][j][h * 2 + e] = C (wm + i*16 +
 * g + h*8, wn + j*8 + 2t + e). */
template <bool TA, bool TB>
static __device__ __forceinline__ void tf32_slice_mma(const float *As, const float *Bs, float (&acc)[4][4][4], int wm,
                                                      int wn, int lane)
{
    constexpr int A_PITCH = tf32_a_pitch(TA), B_PITCH = tf32_b_pitch(TB);
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int kk = 0; kk < TF32_BK; kk += 8) {
        unsigned af[4][4], bf[4][2];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int m = wm + i * 16 + g;
#define A_AT(mm, k) (TA ? As[(k) * A_PITCH + (mm)] : As[(mm) * A_PITCH + (k)])
            af[i][0] = tf32_round(A_AT(m, kk + t));
            af[i][1] = tf32_round(A_AT(m + 8, kk + t));
            af[i][2] = tf32_round(A_AT(m, kk + t + 4));
            af[i][3] = tf32_round(A_AT(m + 8, kk + t + 4));
#undef A_AT
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = wn + j * 8 + g;
#define B_AT(k, nn) (TB ? Bs[(nn) * B_PITCH + (k)] : Bs[(k) * B_PITCH + (nn)])
            bf[j][0] = tf32_round(B_AT(kk + t, n));
            bf[j][1] = tf32_round(B_AT(kk + t + 4, n));
#undef B_AT
        }
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) tf32_mma(acc[i][j], af[i], bf[j]);
    }
}

/* Calls f(m, col, v) for each accumulator v of the lane, at row m and column
 * n of C counted from (m0, n0), the block's corner (the layout above), only
 * where m < M and n < N; col = col_of(n), found once for each of the lane's
 * 8 columns (a conv's output offset costs divisions). */
template <class Col, class F>
static __device__ __forceinline__ void tf32_each_acc_cols(const float (&acc)[4][4][4], int m0, int n0, int M, int N,
                                                          int wm, int wn, int lane, Col col_of, F f)
{
    const int g = lane / 4, t = lane % 4;
    decltype(col_of(0)) col[4][2];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int n = n0 + wn + j * 8 + 2 * t + e;
            col[j][e] = col_of(n < N ? n : n0);
        }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int m = m0 + wm + i * 16 + g + h * 8;
            if (m >= M) continue;
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int n = n0 + wn + j * 8 + 2 * t + e;
                    if (n < N) f(m, col[j][e], acc[i][j][h * 2 + e]);
                }
        }
}

/* The same with col = n. */
template <class F>
static __device__ __forceinline__ void tf32_each_acc(const float (&acc)[4][4][4], int m0, int n0, int M, int N,
                                                     int wm, int wn, int lane, F f)
{
    tf32_each_acc_cols(acc, m0, n0, M, N, wm, wn, lane, [](int n) { return n; }, f);
}

/* Copies a ROWS x COLS block of a stored matrix (row r0.., column c0..,
 * leading dimension ld; rows >= rlim or columns >= clim read as 0) into a
 * shared tile with rows of COLS + PAD floats. 4 consecutive floats per copy;
 * `vec`: the source is 16-byte aligned for every such group (base, ld and
 * batch strides multiples of 4), else each float is copied on its own. */
template <int ROWS, int COLS, int PAD>
static __device__ __forceinline__ void tf32_load_tile(float *tile, const float *__restrict__ src, long long ld,
                                                      int r0, int c0, int rlim, int clim, bool vec)
{
    constexpr int GROUPS = ROWS * COLS / 4;
    static_assert(GROUPS % TF32_THREADS == 0, "every thread copies the same number of groups");
#pragma unroll
    for (int i = 0; i < GROUPS / TF32_THREADS; i++) {
        const int q = threadIdx.x + i * TF32_THREADS;
        const int r = q / (COLS / 4), c = (q % (COLS / 4)) * 4;
        float *dst = tile + r * (COLS + PAD) + c;
        const int gr = r0 + r, gc = c0 + c;
        const int valid = gr < rlim ? max(0, min(4, clim - gc)) : 0;   /* floats in the matrix */
        const float *p = valid > 0 ? src + (long long)gr * ld + gc : src; /* a valid address when nothing is read */
        if (vec) {
            tf32_cp<16>(dst, p, valid * 4);
        } else {
#pragma unroll
            for (int j = 0; j < 4; j++) tf32_cp<4>(dst + j, j < valid ? p + j : src, j < valid ? 4 : 0);
        }
    }
}

/* The ring over a block's K slices: STAGES - 1 slices in flight before the
 * first product, one commit per iteration (empty near the end) so the group
 * count stays exact. load_slice(t) issues the copies of slice t into slot
 * t % STAGES; use_slot(st) reads slot st once everyone's copies of it are
 * done. No copy outlives the ring. */
template <class Load, class Use>
static __device__ __forceinline__ void tf32_ring(int ktiles, Load load_slice, Use use_slot)
{
#pragma unroll
    for (int s = 0; s < TF32_STAGES - 1; s++) {
        if (s < ktiles) load_slice(s);
        tf32_commit();
    }
    for (int kt = 0; kt < ktiles; kt++) {
        tf32_wait<TF32_STAGES - 2>(); /* this thread's copies of slice kt are done */
        __syncthreads();              /* everyone's are, and slot (kt - 1) % STAGES is no longer read */
        if (kt + TF32_STAGES - 1 < ktiles) load_slice(kt + TF32_STAGES - 1);
        tf32_commit();
        use_slot(kt % TF32_STAGES);
    }
    tf32_wait<0>(); /* only empty groups remain */
}

#endif
