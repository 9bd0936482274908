/* Local response normalization across channels on the GPU (the paper's
 * formula, alpha NOT divided by size), x, y, scale (N, C, H, W):
 *   scale[c] = k + alpha * sum_{j = max(0, c - size/2)}^{min(C-1, c + size/2)} x[j]^2
 *   y[c] = x[c] * scale[c]^-beta
 *   dx[c] += dy[c] scale[c]^-beta
 *            - 2 alpha beta x[c] sum_{j: c in window(j)} dy[j] y[j] / scale[j]
 * (the window is symmetric, so c in window(j) iff j in window(c)). One thread
 * per position of many planes (lrn_each), its window's neighbours HW apart.
 * Sums and the final combination are in double and the power uses two
 * square roots for the paper's beta = 0.75, as ops/lrn.c, so both devices
 * round alike. */
#include "cuda/common.cuh"

/* s^-beta; beta = 0.75 with correctly rounded square roots (no FMA can form) */
static __device__ __forceinline__ float pow_neg_beta(float s, float beta)
{
    if (beta == 0.75f) {
        const float r = sqrtf(s);
        return 1.0f / __fmul_rn(r, sqrtf(r));
    }
    return expf(-beta * logf(s));
}

/* the half-width clamped to C, so c + half cannot overflow */
static __device__ __forceinline__ int lrn_half(const nn_lrn_geom &g)
{
    return g.size / 2 < g.c ? g.size / 2 : g.c;
}

/* f(t, c) for every element t = plane * hw + pos, of channel c = plane % C,
 * on nn_cuda_plane_grid: a thread keeps one position and walks the planes
 * gridDim.y apart, c with them by a carry (not two 64-bit divisions per
 * element). */
template <class F>
static __device__ __forceinline__ void lrn_each(const nn_lrn_geom &g, long long hw, F f)
{
    const long long planes = (long long)g.n * g.c;
    for (long long pos = blockIdx.x * (long long)blockDim.x + threadIdx.x; pos < hw;
         pos += (long long)gridDim.x * blockDim.x) {
        nn_plane_walk w(g.c);
        for (long long plane = blockIdx.y; plane < planes; plane += gridDim.y, w.next()) f(plane * hw + pos, w.c);
    }
}

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
lrn_forward_kernel(nn_lrn_geom g, const float *__restrict__ x, float *__restrict__ y,
                   float *__restrict__ scale)
{
    const long long hw = (long long)g.h * g.w;
    const int half = lrn_half(g);
    lrn_each(g, hw, [&](long long t, int c) {
        const float *xc = x + (t - (long long)c * hw); /* channel 0 at this position */
        const int lo = c - half < 0 ? 0 : c - half, hi = c + half > g.c - 1 ? g.c - 1 : c + half;
        double sum = 0.0;
        for (int j = lo; j <= hi; j++) {
            const double v = xc[(long long)j * hw];
            sum = __dadd_rn(sum, __dmul_rn(v, v));
        }
        /* in double: the sum of squares may exceed float range while alpha * sum does not */
        const float sc = (float)__dadd_rn((double)g.k, __dmul_rn((double)g.alpha, sum));
        scale[t] = sc;
        y[t] = __fmul_rn(x[t], pow_neg_beta(sc, g.beta));
    });
}

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
lrn_backward_kernel(nn_lrn_geom g, const float *__restrict__ x, const float *__restrict__ y,
                    const float *__restrict__ scale, const float *__restrict__ dy,
                    float *__restrict__ dx)
{
    const long long hw = (long long)g.h * g.w;
    const int half = lrn_half(g);
    const double c2 = 2.0 * (double)g.alpha * (double)g.beta;
    lrn_each(g, hw, [&](long long t, int c) {
        const long long base = t - (long long)c * hw;
        const int lo = c - half < 0 ? 0 : c - half, hi = c + half > g.c - 1 ? g.c - 1 : c + half;
        /* in double: for large x, y / scale falls below float's normal range */
        double sum = 0.0;
        for (int j = lo; j <= hi; j++) {
            const long long u = base + (long long)j * hw;
            sum = __dadd_rn(sum, __ddiv_rn(__dmul_rn((double)dy[u], (double)y[u]), (double)scale[u]));
        }
        const double d = __dsub_rn(__dmul_rn((double)dy[t], (double)pow_neg_beta(scale[t], g.beta)),
                                   __dmul_rn(__dmul_rn(c2, (double)x[t]), sum));
        dx[t] += (float)d;
    });
}

static size_t lrn_numel(const nn_lrn_geom *g)
{
    return (size_t)g->n * g->c * g->h * g->w;
}

static dim3 lrn_grid(const nn_lrn_geom *g)
{
    return nn_cuda_plane_grid((long long)g->n * g->c, (long long)g->h * g->w);
}

static void lrn_forward_cuda(const nn_lrn_geom *g, const float *x, float *y, float *scale, cudaStream_t s)
{
    lrn_forward_kernel<<<lrn_grid(g), NN_CUDA_THREADS, 0, s>>>(*g, x, y, scale);
}

static void lrn_backward_cuda(const nn_lrn_geom *g, const float *x, const float *y, const float *scale,
                              const float *dy, float *dx, cudaStream_t s)
{
    lrn_backward_kernel<<<lrn_grid(g), NN_CUDA_THREADS, 0, s>>>(*g, x, y, scale, dy, dx);
}

extern "C" nn_status nn_cuda_lrn_forward(const nn_lrn_geom *g, const float *x, float *y, float *scale)
{
    const size_t n = lrn_numel(g);
    if (!n) return NN_OK;
    if (g->size < 1) return nn_error(NN_E_ARG, "cuda lrn_forward: size %d must be >= 1", g->size);
    NN_CUDA_STREAM(s);
    lrn_forward_cuda(g, x, y, scale, s);
    NN_CUDA_LAUNCHED("lrn_forward");
    return NN_OK;
}

extern "C" nn_status nn_cuda_lrn_backward(const nn_lrn_geom *g, const float *x, const float *y,
                                          const float *scale, const float *dy, float *dx)
{
    const size_t n = lrn_numel(g);
    if (!n || !dx) return NN_OK;
    if (g->size < 1) return nn_error(NN_E_ARG, "cuda lrn_backward: size %d must be >= 1", g->size);
    NN_CUDA_STREAM(s);
    lrn_backward_cuda(g, x, y, scale, dy, dx, s);
    NN_CUDA_LAUNCHED("lrn_backward");
    return NN_OK;
}
