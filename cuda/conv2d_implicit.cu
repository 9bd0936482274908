/* conv2d forward as an implicit GEMM: no column buffer. Per group gi,
 *   y[:, gi] (OCg, N*OH*OW) = w[gi] (OCg, Kg) B (Kg, N*OH*OW) + b,
 * with B's tiles gathered straight from x (N, C, H, W) into shared memory by
 * the index rule of core/conv_index.h (zero padding, strides); the columns run
 * over the whole batch, so no sample boundary wastes a tile.
 * The tiling is gemm.cu's (BM x BN tile per block, BK-deep slices, TM x TN
 * register tiles in 4-wide groups), with the slices double-buffered in shared
 * memory (one barrier per slice). Each output sums its K terms in order from
 * 0 with fmaf, the bias added last: the same sums as the im2col path's GEMM
 * when that one does not split K (then the two agree bit for bit). Strict
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

template <int BM, int BN, int BK, int TM, int TN>
static void launch(const nn_conv2d_geom *g, const float *x, const float *w, const float *b, float *y, cudaStream_t s)
{
    const int cols = g->n * g->oh * g->ow, ocg = g->oc / g->groups;
    dim3 grid((cols + BN - 1) / BN, (ocg + BM - 1) / BM, g->groups);
    conv_implicit_kernel<BM, BN, BK, TM, TN><<<grid, (BM / TM) * (BN / TN), 0, s>>>(*g, x, w, b, y);
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

/* Whether the implicit kernel takes this shape: its column and K indices are ints. */
bool nn_cuda_conv_implicit_fits(const nn_conv2d_geom *g)
{
    return (long long)g->n * g->oh * g->ow < (1LL << 30) && (long long)g->c * g->kh * g->kw < (1LL << 30) &&
           g->groups <= 65535;
}

/* y = conv(x, w) + b by the implicit GEMM: 128x128 tiles (8x8 per thread)
 * when they fill the chip, else 64x64 (4x4 per thread). */
nn_status nn_cuda_conv2d_implicit(const nn_conv2d_geom *g, const float *x, const float *w, const float *b, float *y,
                                  cudaStream_t s)
{
    if (!nn_cuda_conv_implicit_fits(g))
        return nn_error(NN_E_UNSUPPORTED, "cuda conv2d (implicit GEMM): %d samples of %dx%d outputs, %d channels of %dx%d "
                        "taps, %d groups: past its int indices", g->n, g->oh, g->ow, g->c, g->kh, g->kw, g->groups);
    const long long cols = (long long)g->n * g->oh * g->ow, ocg = g->oc / g->groups;
    if (!cols || !ocg) return NN_OK; /* nothing to write (an empty grid is a launch error) */
    const long long t128 = (cols + 127) / 128 * ((ocg + 127) / 128) * g->groups;
    if (t128 >= sm_count())
        launch<128, 128, 8, 8, 8>(g, x, w, b, y, s);
    else
        launch<64, 64, 16, 4, 4>(g, x, w, b, y, s);
    NN_CUDA_LAUNCHED("conv2d implicit GEMM");
    return NN_OK;
}
