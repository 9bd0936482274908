/* Fully connected layer on the GPU with our SGEMM: x (N, I), w (O, I), b (O),
 * y (N, O).  y = x w^T + b (then max(0, .) in the GEMM's epilogue when
 * g->relu);  dx += dy w;  dw += dy^T x;  db += sum_n dy (inside the dw GEMM
 * with NN_FUSE_BIAS_GRAD=1, cuda/epilogue.h). */
#include "cuda/common.cuh"

/* y[r, o] = b[o] */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
bias_rows_kernel(int n, int out, const float *__restrict__ b, float *__restrict__ y)
{
    const long long total = (long long)n * out;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x)
        y[t] = __ldg(b + t % out);
}

/* db[o] += sum_r dy[r, o]: a thread per column, rows in order */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
bias_grad_kernel(int n, int out, const float *__restrict__ dy, float *__restrict__ db)
{
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < out; o += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int r = 0; r < n; r++) s += dy[(long long)r * out + o];
        db[o] += s;
    }
}

static void bias_rows_cuda(int n, int out, const float *b, float *y, cudaStream_t s)
{
    bias_rows_kernel<<<nn_cuda_blocks((size_t)n * out), NN_CUDA_THREADS, 0, s>>>(n, out, b, y);
}

static void bias_grad_cuda(int n, int out, const float *dy, float *db, cudaStream_t s)
{
    bias_grad_kernel<<<(out + NN_CUDA_THREADS - 1) / NN_CUDA_THREADS, NN_CUDA_THREADS, 0, s>>>(n, out, dy, db);
}

extern "C" nn_status nn_cuda_linear_forward(const nn_linear_geom *g, const float *x, const float *w,
                                            const float *b, float *y)
{
    if (!g->n || !g->out) return NN_OK;
    NN_CUDA_STREAM(s);
    /* the bias in the GEMM's epilogue (NN_FUSE_BIAS=1: same sums, one pass over y fewer) */
    const bool fuse = b && nn_cuda_fuse_bias();
    if (b && !fuse) {
        bias_rows_cuda(g->n, g->out, b, y, s);
        NN_CUDA_LAUNCHED("linear bias");
    }
    nn_gemm_batch bt = {};
    bt.count = bt.inner = 1;
    bt.bias = fuse ? b : nullptr; /* bias[o], o the column */
    bt.relu = g->relu;            /* the fused ReLU: max(0, .) on the sum with the bias */
    /* y (n, out) = x (n, in) w^T (in, out) */
    return nn_cuda_sgemm(s, false, true, g->n, g->out, g->in, 1.0f, x, g->in, w, g->in, b && !fuse ? 1.0f : 0.0f,
                         y, g->out, &bt);
}

extern "C" nn_status nn_cuda_linear_backward(const nn_linear_geom *g, const float *x, const float *w,
                                             const float *dy, float *dx, float *dw, float *db)
{
    if (!g->n || !g->out) return NN_OK;
    NN_CUDA_STREAM(s);
    if (dx) /* dx (n, in) += dy (n, out) w (out, in) */
        NN_TRY(nn_cuda_sgemm(s, false, false, g->n, g->in, g->out, 1.0f, dy, g->out, w, g->in, 1.0f, dx, g->in,
                             NULL));
    /* db inside the dw GEMM (NN_FUSE_BIAS_GRAD=1): the row sums of its operand dy^T */
    const bool fuse_db = db && dw && g->in > 0 && nn_cuda_fuse_bias_grad();
    if (dw) { /* dw (out, in) += dy^T (out, n) x (n, in) */
        nn_gemm_batch bt = {};
        bt.count = bt.inner = 1;
        bt.rowsum = fuse_db ? db : nullptr; /* db[o] += sum_r dy[r, o] */
        NN_TRY(nn_cuda_sgemm(s, true, false, g->out, g->in, g->n, 1.0f, dy, g->out, x, g->in, 1.0f, dw, g->in,
                             &bt));
    }
    if (db && !fuse_db) {
        bias_grad_cuda(g->n, g->out, dy, db, s);
        NN_CUDA_LAUNCHED("linear bias gradient");
    }
    return NN_OK;
}
