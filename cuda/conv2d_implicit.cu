/* conv2d forward and data gradient as implicit GEMMs: no column buffer. Per
 * group gi,
 *   y[:, gi] (OCg, N*OH*OW) = w[gi] (OCg, Kg) B (Kg, N*OH*OW) + b,
 *   dx[:, gi] (Cg, N*H*W) += w[gi]^T (Cg, OCg*KH*KW) B' (.., N*H*W),
 * with B's tiles gathered straight from x (N, C, H, W), and B''s from dy in
 * the transposed pattern, into shared memory by the index rules of
 * core/conv_index.h (zero padding, strides); the columns run over the whole
 * batch, so no sample boundary wastes a tile. (With stride s the data
 * gradient's B' is mostly zeros, ~(s-1)/s of each axis: fine for conv2-5 of
 * AlexNet, stride 1; conv1's dx is not computed, its input being the data.)
 * The tiling is gemm.cu's (BM x BN tile per block, BK-deep slices, TM x TN
 * register tiles in 4-wide groups), with the slices double-buffered in shared
 * memory (one barrier per slice). Each output sums its K terms in order from
 * 0 with fmaf, the bias added last: the same sums as the im2col path's GEMM
 * when that one does not split K (then the two agree bit for bit); the data
 * gradient sums in another order than col2im (tolerance in the test). Strict
 * fp32 (NN_TF32 does not apply here). Behind NN_CONV_IMPLICIT=1 (off by
 * default; core/defaults.h). */
#include <string.h>

#include "cuda/common.cuh"
/* after common.cuh, which includes the C headers under it with C linkage */
#include "core/conv_index.h"
#include "cuda/conv2d_implicit.cuh"

/* ---- launcher and switch ---- */

static int sm_count(void)
{
    static int sms; /* benign race: every thread finds the same value */
    if (!sms) {
        int d = 0, v = 0;
        if (cudaGetDevice(&d) == cudaSuccess && cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, d) == cudaSuccess && v > 0)
            sms = v;
        else
            sms = 1;
    }
    return sms;
}

template <class G, int BM, int BN, int BK, int TM, int TN>
static void launch(const nn_conv2d_geom *g, const float *in, const float *w, const float *b, float *out, cudaStream_t s)
{
    const int cols = g->n * G::plane(*g);
    dim3 grid((cols + BN - 1) / BN, (G::m(*g) + BM - 1) / BM, g->groups);
    conv_implicit_kernel<G, BM, BN, BK, TM, TN><<<grid, (BM / TM) * (BN / TN), 0, s>>>(*g, in, w, b, out);
}

/* 128x128 tiles (8x8 per thread) when they fill the chip, else 64x64 (4x4) */
template <class G>
static nn_status run(const nn_conv2d_geom *g, const float *in, const float *w, const float *b, float *out, cudaStream_t s)
{
    const long long cols = (long long)g->n * G::plane(*g), m = G::m(*g);
    if (!cols || !m) return NN_OK; /* nothing to write (an empty grid is a launch error) */
    if ((cols + 127) / 128 * ((m + 127) / 128) * g->groups >= sm_count())
        launch<G, 128, 128, 8, 8, 8>(g, in, w, b, out, s);
    else
        launch<G, 64, 64, 16, 4, 4>(g, in, w, b, out, s);
    NN_CUDA_LAUNCHED(G::accumulate ? "conv2d implicit GEMM, data gradient" : "conv2d implicit GEMM");
    return NN_OK;
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
                                  cudaStream_t s)
{
    if (!nn_cuda_conv_implicit_fits(g)) return too_large(g);
    return run<conv_fwd_gather>(g, x, w, b, y, s);
}

nn_status nn_cuda_conv2d_implicit_dx(const nn_conv2d_geom *g, const float *w, const float *dy, float *dx,
                                     cudaStream_t s)
{
    if (!nn_cuda_conv_implicit_fits(g)) return too_large(g);
    return run<conv_dx_gather>(g, dy, w, nullptr, dx, s);
}
