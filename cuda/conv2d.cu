/* conv2d on the GPU: im2col + our SGEMM, a chunk of samples at a time.
 * x (N, C, H, W), w (OC, C/G, KH, KW), b (OC), y (N, OC, OH, OW).
 *
 * The column buffer of a chunk of cn samples is (C*KH*KW, cn*PP): row (c, i, j)
 * matches the weight layout, column (sample, p) with p = oy*OW + ox and
 * PP = OH*OW rounded up to 4 (the pad columns hold zeros), so every sample
 * starts 16-byte aligned and the GEMM can use float4 loads.
 *   forward: y[n, g] = w[g] col[g, n] for every (sample, group) in one launch,
 *            on top of the bias broadcast (beta = 1);
 *   dw[g]   += dyp[g] col[g]^T  (one GEMM per group over all cn*PP columns,
 *              dyp = dy of the chunk laid out (OC, cn*PP) like col);
 *   dx      += col2im(w[g]^T dyp[g]), gathered per input element (no atomics);
 *   db      += sums of dy over (n, p), one block per channel, or (NN_FUSE_BIAS_GRAD=1)
 *              the row sums of dyp inside the dw GEMM (cuda/epilogue.h);
 *   g->relu: the forward's GEMM applies the ReLU in its epilogue.
 * With NN_CONV_IMPLICIT=1 the forward, dx and dw (with db when fused) run
 * conv2d_implicit.cu instead: no column buffer, no workspace. */
#include "cuda/common.cuh"
#include "core/conv_index.h"

/* The workspace holds col and dyp for as many samples as fit in this budget
 * (at least one): large enough for long GEMMs, small enough that the arena,
 * which takes one per conv forward and backward, stays modest. On a large
 * GPU the chunks it makes are too small to fill the chip (AlexNet's conv1 at
 * batch 128: 16 passes): NN_CONV_WS_MB=<MiB> in the environment sets another
 * budget, 0 none (the whole batch in one pass; ~1 GiB for conv2 at batch 128). */
#define CONV_WS_BUDGET ((size_t)64 << 20)

static size_t ws_budget(void)
{
    static size_t budget;
    static bool read; /* benign race: every thread reads the same value */
    if (!read) {
        const char *e = getenv(NN_CONV_WS_MB_ENV);
        char *end = NULL;
        long long mb = e ? strtoll(e, &end, 10) : -1;
        budget = e && end != e && *end == 0 && mb >= 0 ? (mb ? (size_t)mb << 20 : SIZE_MAX) : CONV_WS_BUDGET;
        read = true;
    }
    return budget;
}

typedef struct conv_plan {
    int cg, ocg, kg, kc, p, pp; /* channels and outputs per group, GEMM K per group, all rows, OH*OW, padded */
    int chunk;                   /* samples per pass */
} conv_plan;

static conv_plan plan_of(const nn_conv2d_geom *g)
{
    conv_plan q;
    q.cg = g->c / g->groups;
    q.ocg = g->oc / g->groups;
    q.kg = q.cg * g->kh * g->kw;
    q.kc = g->c * g->kh * g->kw;
    q.p = g->oh * g->ow;
    q.pp = (q.p + 3) / 4 * 4;
    size_t per = (size_t)(q.kc + g->oc) * q.pp * sizeof(float);
    size_t c = per ? ws_budget() / per : 1;
    if (c < 1) c = 1;
    if (c > (size_t)g->n) c = (size_t)g->n;
    q.chunk = (int)c;
    return q;
}

static nn_conv_variant pick(nn_conv_variant v, const nn_conv2d_geom *g)
{
    if (v != NN_CONV_AUTO) return v;
    if (!nn_cuda_conv_implicit_enabled() || !nn_cuda_conv_implicit_fits(g)) return NN_CONV_IM2COL;
    return nn_cuda_tf32_enabled() ? NN_CONV_IMPLICIT_TF32 : NN_CONV_IMPLICIT;
}

extern "C" size_t nn_cuda_conv2d_workspace_as(nn_conv_variant v, const nn_conv2d_geom *g)
{
    if (pick(v, g) != NN_CONV_IM2COL) return 0;
    conv_plan q = plan_of(g);
    return (size_t)q.chunk * (q.kc + g->oc) * q.pp * sizeof(float);
}

extern "C" size_t nn_cuda_conv2d_workspace(const nn_conv2d_geom *g)
{
    return nn_cuda_conv2d_workspace_as(NN_CONV_AUTO, g);
}

/* col2im is templated on the index type: a chunk's buffers are far below
 * 2^31 elements in practice, and 32-bit division is several times cheaper
 * than 64-bit on the GPU; 64-bit stays for the rare huge sample. */

/* col[(c, i, j), s * pp + p] = x[n0 + s, c, oy*sh - ph + i, ox*sw - pw + j],
 * 0 outside x and in the pad columns (p >= OH*OW): core/conv_index.h's rule,
 * group 0 over all C channels (the same offsets). A thread keeps one column
 * (its window found once: 3 divisions) and walks the rows gridDim.y apart
 * (nn_cuda_plane_grid) with carries, so no element costs a division (the
 * former one-thread-per-element kernel divided 5 times per element, ~100
 * instructions for one load and one store). */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
im2col_kernel(nn_conv2d_geom g, int pp, int cn, const float *__restrict__ x, float *__restrict__ col)
{
    const long long ld = (long long)cn * pp;
    const int rows = g.c * g.kh * g.kw, ohw = g.oh * g.ow;
    const nn_conv_row_step step = nn_conv_row_step_of(g, (int)gridDim.y, (long long)g.h * g.w);
    for (long long cx = blockIdx.x * (long long)blockDim.x + threadIdx.x; cx < ld;
         cx += (long long)gridDim.x * blockDim.x) {
        const int s = (int)(cx / pp), p = (int)(cx - (long long)s * pp);
        nn_conv_col w = nn_conv_col_of(g, s * ohw + (p < ohw ? p : 0));
        if (p >= ohw) w.y0 = -(1 << 29); /* a pad column: every tap misses */
        nn_conv_row r = nn_conv_row_of(g, 0, (int)blockIdx.y);
        for (int k = (int)blockIdx.y; k < rows; k += (int)gridDim.y) {
            const long long src = nn_conv_src(g, w, r);
            col[k * ld + cx] = src >= 0 ? __ldg(x + src) : 0.0f;
            nn_conv_row_next(g, &r, step);
        }
    }
}

/* dx[s, c, yy, xx] += sum over the (oy, ox) whose window holds (yy, xx), in
 * output order, of col[(c, i, j), s * pp + oy*OW + ox] with i = yy + ph - oy*sh,
 * j = xx + pw - ox*sw (the outputs in reach are computed, not searched). On
 * nn_cuda_plane_grid: a thread keeps one position (yy, xx) and its outputs'
 * range for many planes (s, c), walked with a carry. */
template <typename I>
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
col2im_kernel(nn_conv2d_geom g, int pp, int cn, const float *__restrict__ col,
              float *__restrict__ dx)
{
    const I ld = (I)cn * pp, hw = (I)g.h * g.w;
    const long long planes = (long long)cn * g.c;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < (int)hw; idx += gridDim.x * blockDim.x) {
        const int yy = idx / g.w, xx = idx - yy * g.w;
        const int ty = yy + g.ph, tx = xx + g.pw;
        int oy0, ox0, oy1, ox1;
        if (g.sh == 1 && g.sw == 1) { /* no division where there is no stride */
            oy0 = max(ty - g.kh + 1, 0), ox0 = max(tx - g.kw + 1, 0);
            oy1 = min(ty, g.oh - 1), ox1 = min(tx, g.ow - 1);
        } else {
            oy0 = ty - g.kh + 1 > 0 ? (ty - g.kh + g.sh) / g.sh : 0;
            ox0 = tx - g.kw + 1 > 0 ? (tx - g.kw + g.sw) / g.sw : 0;
            oy1 = ty / g.sh < g.oh - 1 ? ty / g.sh : g.oh - 1;
            ox1 = tx / g.sw < g.ow - 1 ? tx / g.sw : g.ow - 1;
        }
        nn_plane_walk sc(g.c); /* plane = (sample, channel) */
        for (long long plane = blockIdx.y; plane < planes; plane += gridDim.y, sc.next()) {
            const int c = sc.c;
            const float *cs = col + (I)sc.s * pp;
            float sum = 0.0f;
            for (int oy = oy0; oy <= oy1; oy++) {
                const int i = ty - oy * g.sh;
                for (int ox = ox0; ox <= ox1; ox++) {
                    const int j = tx - ox * g.sw;
                    sum += cs[(((I)c * g.kh + i) * g.kw + j) * ld + oy * g.ow + ox];
                }
            }
            dx[(I)plane * hw + idx] += sum;
        }
    }
}

/* The plane kernels below run on nn_cuda_plane_grid: a thread finds its
 * plane's offsets once per plane, not with divisions per element. */
/* y[n, o, p] = b[o] */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
bias_fill_kernel(long long planes, int oc, int p, const float *__restrict__ b, float *__restrict__ y)
{
    for (long long r = blockIdx.y; r < planes; r += gridDim.y) {
        const float v = __ldg(b + r % oc);
        float *yr = y + r * p;
        for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < p; q += gridDim.x * blockDim.x) yr[q] = v;
    }
}

/* dyp[o, s * pp + p] = dy[n0 + s, o, p], 0 in the pad columns; plane r = o * cn + s */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
gather_dy_kernel(int oc, int p, int pp, int cn, const float *__restrict__ dy, float *__restrict__ dyp)
{
    for (long long r = blockIdx.y; r < (long long)oc * cn; r += gridDim.y) {
        const int o = (int)(r / cn), s = (int)(r - (long long)o * cn);
        const float *src = dy + ((long long)s * oc + o) * p;
        float *dst = dyp + r * pp; /* = o * (cn * pp) + s * pp */
        for (int q = blockIdx.x * blockDim.x + threadIdx.x; q < pp; q += gridDim.x * blockDim.x)
            dst[q] = q < p ? __ldg(src + q) : 0.0f;
    }
}

/* db[o] += sum over n, p of dy[n, o, p]: one block per channel, a fixed-order tree */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
bias_grad_kernel(int n, int oc, int p, const float *__restrict__ dy, float *db)
{
    __shared__ float part[NN_CUDA_THREADS];
    const int o = blockIdx.x;
    float s = 0.0f;
    /* thread i adds elements t = i, i + blockDim, ... of the channel, (sample
     * k, pixel q) = (t / p, t % p), walked from one to the next with a carry
     * instead of two 64-bit divisions each */
    const int dk = (int)blockDim.x / p, dq = (int)blockDim.x % p;
    long long k = threadIdx.x / p;
    int q = (int)threadIdx.x % p;
    for (long long t = threadIdx.x; t < (long long)n * p; t += blockDim.x) {
        s += __ldg(dy + (k * oc + o) * p + q);
        k += dk, q += dq;
        if (q >= p) q -= p, k++;
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) part[threadIdx.x] += part[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[o] += part[0];
}

/* ---- launchers (the stream last, as everywhere in cuda/) ---- */

/* 32-bit indices when every index of the launch (and of x, dx, dy for the
 * chunk) fits with room for the grid stride */
static bool fits32(long long n)
{
    return n < (1LL << 30);
}

/* rows of col as planes: a thread walks many rows of its column (its divisions spread over them) */
static void im2col_cuda(const nn_conv2d_geom *g, int pp, int cn, const float *x, float *col, cudaStream_t s)
{
    const dim3 grid = nn_cuda_plane_grid((long long)g->c * g->kh * g->kw, (long long)cn * pp);
    im2col_kernel<<<grid, NN_CUDA_THREADS, 0, s>>>(*g, pp, cn, x, col);
}

static void col2im_cuda(const nn_conv2d_geom *g, int pp, int cn, const float *col, float *dx, cudaStream_t s)
{
    const long long total = (long long)cn * g->c * g->h * g->w;
    const dim3 grid = nn_cuda_plane_grid((long long)cn * g->c, (long long)g->h * g->w);
    if (fits32(total) && fits32((long long)g->c * g->kh * g->kw * cn * pp))
        col2im_kernel<int><<<grid, NN_CUDA_THREADS, 0, s>>>(*g, pp, cn, col, dx);
    else
        col2im_kernel<long long><<<grid, NN_CUDA_THREADS, 0, s>>>(*g, pp, cn, col, dx);
}

static void bias_fill_cuda(const nn_conv2d_geom *g, int p, const float *b, float *y, cudaStream_t s)
{
    const long long planes = (long long)g->n * g->oc;
    bias_fill_kernel<<<nn_cuda_plane_grid(planes, p), NN_CUDA_THREADS, 0, s>>>(planes, g->oc, p, b, y);
}

static void gather_dy_cuda(int oc, int p, int pp, int cn, const float *dy, float *dyp, cudaStream_t s)
{
    gather_dy_kernel<<<nn_cuda_plane_grid((long long)oc * cn, pp), NN_CUDA_THREADS, 0, s>>>(oc, p, pp, cn, dy, dyp);
}

static void bias_grad_cuda(int n, int oc, int p, const float *dy, float *db, cudaStream_t s)
{
    bias_grad_kernel<<<oc, NN_CUDA_THREADS, 0, s>>>(n, oc, p, dy, db);
}

/* A batch of `count` products over (outer, inner) strides, no epilogue (nn_gemm_batch) */
static nn_gemm_batch batch_of(int count, int inner, long long a_outer, long long a_inner, long long b_outer,
                              long long b_inner, long long c_outer, long long c_inner)
{
    nn_gemm_batch bt = {};
    bt.count = count;
    bt.inner = inner;
    bt.a_outer = a_outer; bt.a_inner = a_inner;
    bt.b_outer = b_outer; bt.b_inner = b_inner;
    bt.c_outer = c_outer; bt.c_inner = c_inner;
    return bt;
}

static nn_status check_geom(const nn_conv2d_geom *g, const char *who)
{
    if (g->groups < 1 || g->c % g->groups || g->oc % g->groups || g->sh < 1 || g->sw < 1)
        return nn_error(NN_E_ARG, "cuda %s: bad geometry (groups %d, channels %d -> %d, stride %dx%d)",
                        who, g->groups, g->c, g->oc, g->sh, g->sw);
    return NN_OK;
}

/* the im2col path's column buffers (the implicit one needs none) */
static nn_status check_ws(const void *ws, const char *who)
{
    return ws ? NN_OK : nn_error(NN_E_ARG, "cuda %s: no workspace", who);
}

static nn_status forward_im2col(const nn_conv2d_geom *g, const float *x, const float *w, const float *b, float *y,
                                void *ws, cudaStream_t s)
{
    const conv_plan q = plan_of(g);
    float *col = (float *)ws;
    /* the bias in the GEMM's epilogue (NN_FUSE_BIAS=1: same sums, one pass over y fewer) */
    const bool fuse = b && nn_cuda_fuse_bias();
    if (b && !fuse) {
        bias_fill_cuda(g, q.p, b, y, s);
        NN_CUDA_LAUNCHED("conv2d bias");
    }
    for (int n0 = 0; n0 < g->n; n0 += q.chunk) {
        const int cn = g->n - n0 < q.chunk ? g->n - n0 : q.chunk;
        const long long ld = (long long)cn * q.pp;
        im2col_cuda(g, q.pp, cn, x + (long long)n0 * g->c * g->h * g->w, col, s);
        NN_CUDA_LAUNCHED("conv2d im2col");
        /* product (sample s, group gi): y[n0+s, gi*ocg.., :] = w[gi] (ocg, kg) x col[gi rows, s cols] */
        nn_gemm_batch bt = batch_of(cn * g->groups, g->groups, 0, (long long)q.ocg * q.kg, q.pp, (long long)q.kg * ld,
                                    (long long)g->oc * q.p, (long long)q.ocg * q.p);
        bt.bias = fuse ? b : nullptr; /* row gi*ocg + m of the bias */
        bt.bias_inner = q.ocg;
        bt.bias_per_row = 1;
        bt.relu = g->relu; /* the fused ReLU: max(0, .) on the sum with the bias */
        NN_TRY(nn_cuda_sgemm(s, false, false, q.ocg, q.p, q.kg, 1.0f, w, q.kg, col, (int)ld,
                             b && !fuse ? 1.0f : 0.0f, y + (long long)n0 * g->oc * q.p, q.p, &bt));
    }
    return NN_OK;
}

extern "C" nn_status nn_cuda_conv2d_forward_as(nn_conv_variant v, const nn_conv2d_geom *g, const float *x,
                                               const float *w, const float *b, float *y, void *ws)
{
    NN_TRY(check_geom(g, "conv2d_forward"));
    NN_CUDA_STREAM(s);
    const nn_conv_variant way = pick(v, g);
    if (way != NN_CONV_IM2COL) return nn_cuda_conv2d_implicit(g, x, w, b, y, way == NN_CONV_IMPLICIT_TF32, s);
    NN_TRY(check_ws(ws, "conv2d_forward"));
    return forward_im2col(g, x, w, b, y, ws, s);
}

extern "C" nn_status nn_cuda_conv2d_forward(const nn_conv2d_geom *g, const float *x, const float *w,
                                            const float *b, float *y, void *ws)
{
    return nn_cuda_conv2d_forward_as(NN_CONV_AUTO, g, x, w, b, y, ws);
}

extern "C" nn_status nn_cuda_conv2d_backward_as(nn_conv_variant v, const nn_conv2d_geom *g, const float *x,
                                                const float *w, const float *dy, float *dx, float *dw, float *db,
                                                void *ws)
{
    if (!dx && !dw && !db) return NN_OK;
    NN_TRY(check_geom(g, "conv2d_backward"));
    NN_CUDA_STREAM(s);
    const conv_plan q = plan_of(g);
    /* db inside the dw product (NN_FUSE_BIAS_GRAD=1): the row sums of dy as that product reads it */
    const bool fuse_db = db && dw && nn_cuda_fuse_bias_grad();
    if (db && !fuse_db) {
        bias_grad_cuda(g->n, g->oc, q.p, dy, db, s);
        NN_CUDA_LAUNCHED("conv2d bias gradient");
    }
    const nn_conv_variant way = pick(v, g);
    if (way != NN_CONV_IM2COL) { /* no column buffer at all */
        const bool tf32 = way == NN_CONV_IMPLICIT_TF32;
        if (dx) NN_TRY(nn_cuda_conv2d_implicit_dx(g, w, dy, dx, tf32, s));
        return dw ? nn_cuda_conv2d_implicit_dw(g, x, dy, dw, fuse_db ? db : nullptr, tf32, s) : NN_OK;
    }
    if (!dx && !dw) return NN_OK;
    NN_TRY(check_ws(ws, "conv2d_backward"));
    float *col = (float *)ws;
    float *dyp = col + (size_t)q.chunk * q.kc * q.pp;
    for (int n0 = 0; n0 < g->n; n0 += q.chunk) {
        const int cn = g->n - n0 < q.chunk ? g->n - n0 : q.chunk;
        const long long ld = (long long)cn * q.pp;
        const int ldi = (int)ld;
        gather_dy_cuda(g->oc, q.p, q.pp, cn, dy + (long long)n0 * g->oc * q.p, dyp, s);
        NN_CUDA_LAUNCHED("conv2d gather dy");
        if (dw) {
            im2col_cuda(g, q.pp, cn, x + (long long)n0 * g->c * g->h * g->w, col, s);
            NN_CUDA_LAUNCHED("conv2d im2col");
            /* dw[gi] (ocg, kg) += dyp[gi] (ocg, ld) x col[gi]^T (ld, kg) */
            nn_gemm_batch bt = batch_of(g->groups, 1, (long long)q.ocg * ld, 0, (long long)q.kg * ld, 0,
                                        (long long)q.ocg * q.kg, 0);
            bt.rowsum = fuse_db ? db : nullptr; /* db[gi*ocg + m] += the row sums of dyp[gi] */
            bt.rowsum_outer = q.ocg;
            NN_TRY(nn_cuda_sgemm(s, false, true, q.ocg, q.kg, ldi, 1.0f, dyp, ldi, col, ldi, 1.0f, dw,
                                 q.kg, &bt));
        }
        if (dx) {
            /* dcol[gi] (kg, ld) = w[gi]^T (kg, ocg) x dyp[gi] (ocg, ld), into col (the dw GEMM
             * above has read it: same stream) */
            nn_gemm_batch bt = batch_of(g->groups, 1, (long long)q.ocg * q.kg, 0, (long long)q.ocg * ld, 0,
                                        (long long)q.kg * ld, 0);
            NN_TRY(nn_cuda_sgemm(s, true, false, q.kg, ldi, q.ocg, 1.0f, w, q.kg, dyp, ldi, 0.0f, col,
                                 ldi, &bt));
            col2im_cuda(g, q.pp, cn, col, dx + (long long)n0 * g->c * g->h * g->w, s);
            NN_CUDA_LAUNCHED("conv2d col2im");
        }
    }
    return NN_OK;
}

extern "C" nn_status nn_cuda_conv2d_backward(const nn_conv2d_geom *g, const float *x, const float *w,
                                             const float *dy, float *dx, float *dw, float *db, void *ws)
{
    return nn_cuda_conv2d_backward_as(NN_CONV_AUTO, g, x, w, dy, dx, dw, db, ws);
}
