/* conv2d's three products as implicit GEMMs: no column buffer. Per group gi,
 *   y[:, gi] (OCg, N*OH*OW) = w[gi] (OCg, Kg) B (Kg, N*OH*OW) + b,
 *   dx[:, gi] (Cg, N*H*W) += w[gi]^T (Cg, OCg*KH*KW) B' (.., N*H*W),
 *   dw[gi] (OCg, Kg) += dy[:, gi] (OCg, N*OH*OW) B^T (N*OH*OW, Kg),
 * with B's tiles gathered straight from x (N, C, H, W), and B''s from dy in
 * the transposed pattern, into shared memory by the index rules of
 * core/conv_index.h (zero padding, strides); the columns (forward, dx) and
 * the K of dw run over the whole batch, so no sample boundary wastes a tile.
 * (With stride s the data gradient's B' is mostly zeros, ~(s-1)/s of each
 * axis: fine for conv2-5 of AlexNet, stride 1; conv1's dx is not computed,
 * its input being the data.) The tiling is gemm.cu's (BM x BN tile per
 * block, BK-deep slices, TM x TN register tiles in 4-wide groups), with the
 * slices double-buffered in shared memory (one barrier per slice). Each
 * output sums its K terms in order from 0 with fmaf, the bias added last:
 * the same sums as the im2col path's GEMM when that one does not split K
 * (then the two agree bit for bit); dx sums in another order than col2im,
 * and dw over the whole batch where the im2col path goes chunk by chunk
 * (tolerances in the test). dw's long K is split across blocks as the GEMM
 * splits it, and db (the row sums of dy) comes out of the same pass when
 * asked (NN_FUSE_BIAS_GRAD=1), in cuda/epilogue.h's order. Strict fp32,
 * or with NN_TF32=1 on tensor cores (conv2d_implicit.cuh's second kernel,
 * the TF32 GEMM's design). Behind NN_CONV_IMPLICIT=1 (off by default;
 * core/defaults.h); with it, the op needs no workspace. */
#include <string.h>

#include "cuda/common.cuh"
/* after common.cuh, which includes the C headers under it with C linkage */
#include "core/conv_index.h"
#include "cuda/tf32.cuh"
#include "cuda/conv2d_implicit.cuh"

/* ---- launcher and switch ---- */

/* The two tilings (gemm.cu's): 128x128 tiles (8x8 per thread, slices of 8)
 * or 64x64 (4x4, slices of 16), 256 threads either way. */
template <class G, bool BIG>
static void launch(const conv_implicit_args &a, cudaStream_t s)
{
    constexpr int BM = BIG ? 128 : 64, BN = BM, BK = BIG ? 8 : 16, TM = BIG ? 8 : 4, TN = TM;
    dim3 grid((G::n(a.g) + BN - 1) / BN, (G::m(a.g) + BM - 1) / BM, a.g.groups * a.splits);
    conv_implicit_kernel<G, BM, BN, BK, TM, TN><<<grid, (BM / TM) * (BN / TN), 0, s>>>(a);
}

/* The tensor-core kernel: more than 48 KiB of dynamic shared memory must be
 * asked for, once per kernel, and all of the on-chip memory as shared memory
 * so two blocks fit (gemm_tf32.cuh's launch does the same). */
template <class G>
static nn_status launch_tf32(const conv_implicit_args &a, cudaStream_t s)
{
    static bool opted; /* benign race: setting the attributes twice is harmless */
    if (!opted) {
        NN_CUDA_TRY(cudaFuncSetAttribute(conv_implicit_tf32_kernel<G>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         TF32_SMEM_BYTES),
                    "conv2d implicit GEMM tf32 shared memory");
        NN_CUDA_TRY(cudaFuncSetAttribute(conv_implicit_tf32_kernel<G>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         (int)cudaSharedmemCarveoutMaxShared),
                    "conv2d implicit GEMM tf32 shared memory carveout");
        opted = true;
    }
    dim3 grid((G::n(a.g) + TF32_BN - 1) / TF32_BN, (G::m(a.g) + TF32_BM - 1) / TF32_BM, a.g.groups * a.splits);
    conv_implicit_tf32_kernel<G><<<grid, TF32_THREADS, TF32_SMEM_BYTES, s>>>(a);
    return NN_OK;
}

static nn_status tf32_refused(void)
{
    return nn_error(NN_E_UNSUPPORTED, "cuda conv2d (implicit GEMM): TF32 needs compute capability 8.0 and a build "
                    "for it (gpu_sm %d)", NN_CUDA_SM);
}

static long long tiles(long long m, long long n, int edge, int groups)
{
    return (m + edge - 1) / edge * ((n + edge - 1) / edge) * groups;
}

/* forward and data gradient: on tensor cores when asked, else 128x128 tiles
 * when they fill the chip, else 64x64; K (at most C*KH*KW) is never split */
template <class G>
static nn_status run(const nn_conv2d_geom *g, const float *a_src, const float *b_src, const float *b, float *out,
                     bool tf32, cudaStream_t s)
{
    const int m = G::m(*g), n = G::n(*g);
    if (!n || !m) return NN_OK; /* nothing to write (an empty grid is a launch error) */
    if (tf32 && !nn_cuda_tf32_supported()) return tf32_refused();
    const conv_implicit_args a = {*g, a_src, b_src, b, out, nullptr, G::k(*g), 1};
    if (tf32)
        NN_TRY(launch_tf32<G>(a, s));
    else if (tiles(m, n, 128, g->groups) >= nn_cuda_sm_count())
        launch<G, true>(a, s);
    else
        launch<G, false>(a, s);
    NN_CUDA_LAUNCHED(G::what);
    return NN_OK;
}

/* The weight gradient's plan: its product is small (OC/G x C/G*KH*KW) and
 * its K long (N*OH*OW), so K is split until the blocks fill the chip twice
 * over (gemm.cu's rule); 128x128 tiles when both sides are at least that
 * (fewer idle lanes at the edges than on the forward's wide products). */
typedef struct dw_plan {
    bool big; /* fp32: 128x128 tiles */
    int splits, kchunk;
} dw_plan;

static dw_plan plan_dw(const nn_conv2d_geom *g, bool tf32)
{
    const int m = conv_dw_gather::m(*g), n = conv_dw_gather::n(*g), k = conv_dw_gather::k(*g);
    dw_plan p;
    p.big = m >= 128 && n >= 128;
    const int edge = tf32 || p.big ? 128 : 64, bk = tf32 ? TF32_BK : p.big ? 8 : 16;
    const long long slots = (tf32 ? TF32_MIN_BLOCKS : 2LL) * nn_cuda_sm_count();
    nn_cuda_splitk(tiles(m, n, edge, g->groups), k, slots, g->groups, bk, &p.splits, &p.kchunk);
    if ((long long)g->groups * p.splits > 65535) p.splits = 1, p.kchunk = k; /* gridDim.z */
    return p;
}

/* dw += dy B^T (+ db += the row sums of dy): in place with one slice, else
 * through the slices' partials and gemm.cu's split-K reduction */
static nn_status run_dw(const nn_conv2d_geom *g, const float *x, const float *dy, float *dw, float *db, bool tf32,
                        cudaStream_t s)
{
    const int m = conv_dw_gather::m(*g), n = conv_dw_gather::n(*g), k = conv_dw_gather::k(*g);
    if (!k) return NN_OK; /* an empty batch adds nothing */
    if (tf32 && !nn_cuda_tf32_supported()) return tf32_refused();
    const dw_plan p = plan_dw(g, tf32);
    conv_implicit_args a = {*g, dy, x, nullptr, dw, db, p.kchunk, p.splits};
    float *part = nullptr;
    const size_t prod = (size_t)g->groups * p.splits * m * n, rows = db ? (size_t)g->groups * p.splits * m : 0;
    if (p.splits > 1) {
        NN_TRY(nn_cuda_scratch((void **)&part, (prod + rows) * sizeof(float)));
        a.out = part;
        a.rowsum = db ? part + prod : nullptr;
    }
    nn_status st = NN_OK;
    if (tf32)
        st = launch_tf32<conv_dw_gather>(a, s);
    else if (p.big)
        launch<conv_dw_gather, true>(a, s);
    else
        launch<conv_dw_gather, false>(a, s);
    cudaError_t e = cudaGetLastError();
    if (st == NN_OK && e != cudaSuccess) st = nn_cuda_fail(e, conv_dw_gather::what, __FILE__, __LINE__);
    if (st == NN_OK && p.splits > 1) {
        nn_gemm_batch bt = {};
        bt.count = g->groups;
        bt.inner = 1;
        bt.c_outer = (long long)m * n;
        bt.rowsum = db;
        bt.rowsum_outer = m;
        bt.rowsum_part = a.rowsum;
        st = nn_cuda_splitk_reduce(s, m, n, p.splits, part, 1.0f, dw, n, bt);
    }
    if (part) nn_cuda_scratch_free(part); /* later work on the stream runs after the reduction */
    return st;
}

extern "C" bool nn_cuda_conv_implicit_enabled(void)
{
    static int on = -1; /* benign race: every thread reads the same value */
    if (on < 0) {
        const char *e = getenv(NN_CONV_IMPLICIT_ENV);
        on = e && strcmp(e, "1") == 0;
    }
    return on;
}

/* Whether the implicit kernels take this shape: their column and K indices
 * are ints (columns N*OH*OW forward, N*H*W for the data gradient). */
bool nn_cuda_conv_implicit_fits(const nn_conv2d_geom *g)
{
    const long long lim = 1LL << 30;
    return (long long)g->n * g->oh * g->ow < lim && (long long)g->n * g->h * g->w < lim &&
           (long long)g->c * g->kh * g->kw < lim && (long long)g->oc * g->kh * g->kw < lim && g->groups <= 65535;
}

static nn_status too_large(const nn_conv2d_geom *g)
{
    return nn_error(NN_E_UNSUPPORTED, "cuda conv2d (implicit GEMM): %d samples of %dx%d -> %dx%d, %d -> %d channels "
                    "of %dx%d taps, %d groups: past its int indices", g->n, g->h, g->w, g->oh, g->ow, g->c, g->oc,
                    g->kh, g->kw, g->groups);
}

nn_status nn_cuda_conv2d_implicit(const nn_conv2d_geom *g, const float *x, const float *w, const float *b, float *y,
                                  bool tf32, cudaStream_t s)
{
    if (!nn_cuda_conv_implicit_fits(g)) return too_large(g);
    return run<conv_fwd_gather>(g, w, x, b, y, tf32, s);
}

nn_status nn_cuda_conv2d_implicit_dx(const nn_conv2d_geom *g, const float *w, const float *dy, float *dx, bool tf32,
                                     cudaStream_t s)
{
    if (!nn_cuda_conv_implicit_fits(g)) return too_large(g);
    return run<conv_dx_gather>(g, w, dy, nullptr, dx, tf32, s);
}

nn_status nn_cuda_conv2d_implicit_dw(const nn_conv2d_geom *g, const float *x, const float *dy, float *dw, float *db,
                                     bool tf32, cudaStream_t s)
{
    if (!nn_cuda_conv_implicit_fits(g)) return too_large(g);
    return run_dw(g, x, dy, dw, db, tf32, s);
}
