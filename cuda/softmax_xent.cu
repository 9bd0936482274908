/* Softmax cross-entropy on the GPU: logits, probs (N, K), int32 labels (N).
 * Per row, m = max(x): probs = exp(x - m) / sum, row loss = log(sum) - (x[label] - m)
 * with the sum and the loss in double, as ops/softmax_xent.c; *loss (one float
 * on the device) is their mean. Labels are validated on the device: a label
 * outside [0, K) is NN_E_RANGE naming the first such sample, as on the CPU.
 * By default before anything is written (one small copy and a sync per call);
 * with lazy checks (cuda/checks.h) the rows kernel flags it, its row loss is
 * NaN, and the status comes from the next synchronizing call (the loss read).
 * Backward: dx += (dloss[0] / N) * (probs - onehot). */
#include "cuda/checks.h"
#include "cuda/common.cuh"

#define NO_BAD_SAMPLE 0x7F7F7F7F /* what a 0x7F memset leaves in an int */

template <typename T> struct op_max {
    static __device__ __forceinline__ T f(T a, T b) { return a > b ? a : b; }
    static __device__ __forceinline__ T id() { return (T)-INFINITY; }
};
template <typename T> struct op_sum {
    static __device__ __forceinline__ T f(T a, T b) { return a + b; }
    static __device__ __forceinline__ T id() { return (T)0; }
};

/* Block-wide reduction over NN_CUDA_THREADS threads (warp shuffles, then one
 * warp), in a fixed order; every thread gets the result. */
template <typename T, typename OP>
static __device__ T block_reduce(T v, T *sh)
{
    for (int o = 16; o > 0; o >>= 1) v = OP::f(v, __shfl_down_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < NN_CUDA_THREADS / 32 ? sh[lane] : OP::id();
        for (int o = 16; o > 0; o >>= 1) v = OP::f(v, __shfl_down_sync(0xffffffffu, v, o));
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads(); /* sh is reused by the next reduction */
    return v;
}

/* bad = the first sample whose label is outside [0, k) */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
xent_check_kernel(int n, int k, const int32_t *__restrict__ labels, int *bad)
{
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < n; r += gridDim.x * blockDim.x)
        if (labels[r] < 0 || labels[r] >= k) atomicMin(bad, r);
}

/* One block per row: probs and the row's loss. bad: NULL when the labels were
 * checked already, else the lazy flag word (checks.cu) that keeps the first
 * bad sample with its label. */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
xent_rows_kernel(int k, const float *__restrict__ logits, const int32_t *__restrict__ labels,
                 float *__restrict__ probs, double *__restrict__ row_loss, unsigned long long *bad)
{
    __shared__ float shf[32];
    __shared__ double shd[32];
    const int r = blockIdx.x;
    const float *x = logits + (long long)r * k;
    float *p = probs + (long long)r * k;

    float mx = -INFINITY;
    for (int c = threadIdx.x; c < k; c += blockDim.x) mx = fmaxf(mx, x[c]);
    mx = block_reduce<float, op_max<float>>(mx, shf);
    double sum = 0.0;
    for (int c = threadIdx.x; c < k; c += blockDim.x) {
        const float e = expf(x[c] - mx);
        p[c] = e;
        sum += e;
    }
    sum = block_reduce<double, op_sum<double>>(sum, shd);
    const float inv = (float)(1.0 / sum);
    for (int c = threadIdx.x; c < k; c += blockDim.x) p[c] *= inv;
    if (threadIdx.x != 0) return;
    const int32_t lab = labels[r];
    if (lab >= 0 && lab < k) {
        row_loss[r] = log(sum) - ((double)x[lab] - (double)mx);
    } else { /* only reached with lazy checks: the eager check stopped the call */
        row_loss[r] = NAN;
        if (bad) atomicMin(bad, (unsigned long long)r << 32 | (uint32_t)lab);
    }
}

/* The lazy flag, when set, into the host's report (the first one stays until
 * the host reads it), then cleared for the next call. One thread, after the
 * rows kernel; reads only the device word unless a label was bad. */
static __device__ void xent_publish(int k, unsigned long long *bad, nn_cuda_report *report)
{
    const unsigned long long v = *bad;
    if (v == NN_CUDA_NO_BAD) return;
    *bad = NN_CUDA_NO_BAD;
    volatile nn_cuda_report *r = report;
    if (r->set) return;
    r->sample = (int)(v >> 32);
    r->label = (int)(uint32_t)(v & 0xFFFFFFFFu);
    r->classes = k;
    __threadfence_system(); /* the fields before the flag, seen from the host */
    r->set = 1;
}

/* loss = mean of the row losses, summed in a fixed order by one block */
static __global__ void __launch_bounds__(NN_CUDA_THREADS)
xent_mean_kernel(int n, int k, const double *__restrict__ row_loss, float *__restrict__ loss,
                 unsigned long long *bad, nn_cuda_report *report)
{
    __shared__ double sh[32];
    double s = 0.0;
    for (int r = threadIdx.x; r < n; r += blockDim.x) s += row_loss[r];
    s = block_reduce<double, op_sum<double>>(s, sh);
    if (threadIdx.x == 0) {
        *loss = (float)(s / n);
        if (bad) xent_publish(k, bad, report);
    }
}

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
xent_backward_kernel(int n, int k, const float *__restrict__ probs,
                     const int32_t *__restrict__ labels, const float *__restrict__ dloss,
                     float *__restrict__ dx)
{
    const long long total = (long long)n * k;
    const float s = *dloss / (float)n;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int r = (int)(t / k), c = (int)(t % k);
        dx[t] += __fmul_rn(s, probs[t] - (labels[r] == c ? 1.0f : 0.0f));
    }
}

static void xent_check_cuda(int n, int k, const int32_t *labels, int *bad, cudaStream_t s)
{
    xent_check_kernel<<<nn_cuda_blocks((size_t)n), NN_CUDA_THREADS, 0, s>>>(n, k, labels, bad);
}

static void xent_forward_cuda(int n, int k, const float *logits, const int32_t *labels, float *probs,
                              double *row_loss, float *loss, unsigned long long *bad, nn_cuda_report *report,
                              cudaStream_t s)
{
    xent_rows_kernel<<<n, NN_CUDA_THREADS, 0, s>>>(k, logits, labels, probs, row_loss, bad);
    xent_mean_kernel<<<1, NN_CUDA_THREADS, 0, s>>>(n, k, row_loss, loss, bad, report);
}

static void xent_backward_cuda(int n, int k, const float *probs, const int32_t *labels, const float *dloss,
                               float *dx, cudaStream_t s)
{
    xent_backward_kernel<<<nn_cuda_blocks((size_t)n * k), NN_CUDA_THREADS, 0, s>>>(n, k, probs, labels, dloss, dx);
}

/* Checks the labels on the device; the first bad one becomes NN_E_RANGE. */
static nn_status check_labels(cudaStream_t s, int n, int classes, const int32_t *labels)
{
    int *bad = NULL;
    NN_TRY(nn_cuda_scratch((void **)&bad, sizeof *bad));
    int hbad = NO_BAD_SAMPLE;
    int32_t hlabel = 0;
    cudaError_t e = cudaMemsetAsync(bad, 0x7F, sizeof *bad, s);
    if (e == cudaSuccess) {
        xent_check_cuda(n, classes, labels, bad, s);
        e = cudaGetLastError();
    }
    if (e == cudaSuccess) e = cudaMemcpyAsync(&hbad, bad, sizeof hbad, cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    if (e == cudaSuccess && hbad != NO_BAD_SAMPLE) {
        e = cudaMemcpyAsync(&hlabel, labels + hbad, sizeof hlabel, cudaMemcpyDeviceToHost, s);
        if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    }
    nn_cuda_scratch_free(bad);
    if (e != cudaSuccess) return nn_cuda_fail(e, "softmax_xent label check", __FILE__, __LINE__);
    if (hbad != NO_BAD_SAMPLE) return nn_cuda_bad_label((int)hlabel, hbad, classes);
    return NN_OK;
}

extern "C" nn_status nn_cuda_xent_forward(int n, int classes, const float *logits, const int32_t *labels,
                                          float *probs, float *loss)
{
    NN_CUDA_STREAM(s);
    if (n <= 0) return nn_cuda_memset0(loss, sizeof *loss); /* as the CPU: an empty batch has loss 0 */
    if (classes <= 0) return nn_error(NN_E_SHAPE, "softmax_xent: %d classes", classes);
    unsigned long long *bad = NULL;
    nn_cuda_report *report = NULL;
    if (nn_cuda_lazy_checks())
        NN_TRY(nn_cuda_label_flags(&bad, &report));
    else
        NN_TRY(check_labels(s, n, classes, labels));
    double *row_loss = NULL;
    NN_TRY(nn_cuda_scratch((void **)&row_loss, (size_t)n * sizeof *row_loss));
    xent_forward_cuda(n, classes, logits, labels, probs, row_loss, loss, bad, report, s);
    const cudaError_t e = cudaGetLastError();
    nn_cuda_scratch_free(row_loss); /* later work on the stream runs after the mean */
    if (e != cudaSuccess) return nn_cuda_fail(e, "softmax_xent forward", __FILE__, __LINE__);
    return NN_OK;
}

extern "C" nn_status nn_cuda_xent_backward(int n, int classes, const float *probs, const int32_t *labels,
                                           const float *dloss, float *dx)
{
    if (n <= 0 || classes <= 0 || !dx) return NN_OK;
    NN_CUDA_STREAM(s);
    xent_backward_cuda(n, classes, probs, labels, dloss, dx, s);
    NN_CUDA_LAUNCHED("softmax_xent backward");
    return NN_OK;
}
