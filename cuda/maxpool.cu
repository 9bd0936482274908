/* Max pooling on the GPU: x (N, C, H, W) -> y, argmax (N, C, OH, OW).
 * Padding counts as -inf. argmax is the flat index h*W + w within the (n, c)
 * plane of the first maximum in row-major window order (strict >), starting
 * from the window's first in-bounds element; a NaN replaces any number once
 * and then stays (NaN propagates), as ops/maxpool.c. The backward gathers:
 * each input element adds, in output order, the dy of the outputs whose
 * window covers it and chose it: no atomics, and the same additions in the
 * same order as the CPU's scatter, so dx is bit-identical. */
#include "cuda/common.cuh"

/* On nn_cuda_plane_grid: a thread keeps one output position (its window's
 * bounds found once) for many planes. */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
maxpool_forward_kernel(nn_pool_geom g, const float *__restrict__ x, float *__restrict__ y,
                       int32_t *__restrict__ argmax)
{
    const int ohw = g.oh * g.ow;
    const long long planes = (long long)g.n * g.c;
    for (int pix = blockIdx.x * blockDim.x + threadIdx.x; pix < ohw; pix += gridDim.x * blockDim.x) {
        const int oy = pix / g.ow, ox = pix - oy * g.ow;
        const int h0 = oy * g.sh - g.ph, w0 = ox * g.sw - g.pw;
        const int hs = h0 > 0 ? h0 : 0, he = h0 + g.kh < g.h ? h0 + g.kh : g.h;
        const int ws = w0 > 0 ? w0 : 0, we = w0 + g.kw < g.w ? w0 + g.kw : g.w;
        for (long long plane = blockIdx.y; plane < planes; plane += gridDim.y) {
            const float *xp = x + plane * g.h * g.w;
            int arg = hs * g.w + ws;
            float best = xp[arg];
            for (int yy = hs; yy < he; yy++) {
                for (int xx = ws; xx < we; xx++) {
                    const float v = xp[yy * g.w + xx];
                    if (v > best || (isnan(v) && !isnan(best))) {
                        best = v;
                        arg = yy * g.w + xx;
                    }
                }
            }
            y[plane * ohw + pix] = best;
            argmax[plane * ohw + pix] = arg;
        }
    }
}

/* On nn_cuda_plane_grid: a thread keeps one input position, and the range
 * of outputs whose windows hold it, for many planes. */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
maxpool_backward_kernel(nn_pool_geom g, const int32_t *__restrict__ argmax,
                        const float *__restrict__ dy, float *__restrict__ dx)
{
    const int hw = g.h * g.w, ohw = g.oh * g.ow;
    const long long planes = (long long)g.n * g.c;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < hw; idx += gridDim.x * blockDim.x) {
        const int yy = idx / g.w, xx = idx - yy * g.w;
        /* outputs whose window [o*s - p, o*s - p + k) holds yy: o in [ceil((yy+p-k+1)/s), (yy+p)/s] */
        const int ty = yy + g.ph, tx = xx + g.pw;
        const int oy0 = ty - g.kh + 1 > 0 ? (ty - g.kh + 1 + g.sh - 1) / g.sh : 0;
        const int ox0 = tx - g.kw + 1 > 0 ? (tx - g.kw + 1 + g.sw - 1) / g.sw : 0;
        const int oy1 = ty / g.sh < g.oh - 1 ? ty / g.sh : g.oh - 1;
        const int ox1 = tx / g.sw < g.ow - 1 ? tx / g.sw : g.ow - 1;
        for (long long plane = blockIdx.y; plane < planes; plane += gridDim.y) {
            const int32_t *ap = argmax + plane * ohw;
            const float *dp = dy + plane * ohw;
            float *d = dx + plane * hw + idx;
            float acc = *d;
            bool any = false;
            for (int oy = oy0; oy <= oy1; oy++)
                for (int ox = ox0; ox <= ox1; ox++)
                    if (ap[oy * g.ow + ox] == idx) {
                        acc += dp[oy * g.ow + ox];
                        any = true;
                    }
            if (any) *d = acc;
        }
    }
}

static void maxpool_forward_cuda(const nn_pool_geom *g, const float *x, float *y, int32_t *argmax,
                                 cudaStream_t s)
{
    const dim3 grid = nn_cuda_plane_grid((long long)g->n * g->c, (long long)g->oh * g->ow);
    maxpool_forward_kernel<<<grid, NN_CUDA_THREADS, 0, s>>>(*g, x, y, argmax);
}

static void maxpool_backward_cuda(const nn_pool_geom *g, const int32_t *argmax, const float *dy, float *dx,
                                  cudaStream_t s)
{
    const dim3 grid = nn_cuda_plane_grid((long long)g->n * g->c, (long long)g->h * g->w);
    maxpool_backward_kernel<<<grid, NN_CUDA_THREADS, 0, s>>>(*g, argmax, dy, dx);
}

extern "C" nn_status nn_cuda_maxpool_forward(const nn_pool_geom *g, const float *x, float *y, int32_t *argmax)
{
    const size_t n = (size_t)g->n * g->c * g->oh * g->ow;
    if (!n) return NN_OK;
    if (g->sh < 1 || g->sw < 1 || g->kh < 1 || g->kw < 1)
        return nn_error(NN_E_ARG, "cuda maxpool_forward: bad window %dx%d stride %dx%d", g->kh, g->kw, g->sh, g->sw);
    NN_CUDA_STREAM(s);
    maxpool_forward_cuda(g, x, y, argmax, s);
    NN_CUDA_LAUNCHED("maxpool_forward");
    return NN_OK;
}

extern "C" nn_status nn_cuda_maxpool_backward(const nn_pool_geom *g, const int32_t *argmax, const float *dy,
                                              float *dx)
{
    const size_t n = (size_t)g->n * g->c * g->h * g->w;
    if (!n || !dx) return NN_OK;
    if (g->sh < 1 || g->sw < 1 || g->kh < 1 || g->kw < 1)
        return nn_error(NN_E_ARG, "cuda maxpool_backward: bad window %dx%d stride %dx%d", g->kh, g->kw, g->sh, g->sw);
    NN_CUDA_STREAM(s);
    maxpool_backward_cuda(g, argmax, dy, dx, s);
    NN_CUDA_LAUNCHED("maxpool_backward");
    return NN_OK;
}
