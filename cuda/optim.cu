/* Optimizer updates on the GPU over n flat parameters (formulas of optim/optim.h):
 *   sgd (the paper's rule): v = momentum v - wd lr w - lr g;  w += v
 *   adam: g' = g + wd w unless decoupled; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
 *         mhat = m / bias1; vhat = v / bias2 (bias1 = 1 - b1^t, bias2 = 1 - b2^t given);
 *         decoupled (AdamW): w -= lr wd w;  then w -= lr mhat / (sqrt(vhat) + eps).
 * The *_at entries read lr (and bias1, bias2) from a step's nn_step_vars in
 * device memory and write nothing when its non-finite count is not zero, so a
 * captured step (docs/cuda_graph.md) needs neither new arguments nor a host
 * branch; the by-value entries pass sv = NULL to the same kernels. */
#include "cuda/common.cuh"

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
sgd_kernel(size_t n, float *__restrict__ w, const float *__restrict__ g,
           float *__restrict__ v, float lr, float momentum, float wd,
           const nn_step_vars *__restrict__ sv)
{
    if (sv) {
        if (sv->nonfinite) return;
        lr = sv->lr;
    }
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float wi = w[i];
        const float vi = momentum * v[i] - wd * lr * wi - lr * g[i];
        v[i] = vi;
        w[i] = wi + vi;
    }
}

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
adam_kernel(size_t n, float *__restrict__ w, const float *__restrict__ g,
            float *__restrict__ m, float *__restrict__ v, float lr, float b1, float b2,
            float eps, float wd, int decoupled, float bias1, float bias2,
            const nn_step_vars *__restrict__ sv)
{
    if (sv) {
        if (sv->nonfinite) return;
        lr = sv->lr, bias1 = sv->bias1, bias2 = sv->bias2;
    }
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float wi = w[i], gi = g[i];
        if (!decoupled) gi += wd * wi;
        const float mi = b1 * m[i] + (1.0f - b1) * gi;
        const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float mhat = mi / bias1, vhat = vi / bias2;
        if (decoupled) wi -= lr * wd * wi;
        w[i] = wi - lr * mhat / (sqrtf(vhat) + eps);
    }
}

static void sgd_cuda(size_t n, float *w, const float *g, float *v, float lr, float momentum, float wd,
                     const nn_step_vars *sv, cudaStream_t s)
{
    sgd_kernel<<<nn_cuda_blocks(n), NN_CUDA_THREADS, 0, s>>>(n, w, g, v, lr, momentum, wd, sv);
}

static void adam_cuda(size_t n, float *w, const float *g, float *m, float *v, float lr, float beta1, float beta2,
                      float eps, float wd, int decoupled, float bias1, float bias2, const nn_step_vars *sv,
                      cudaStream_t s)
{
    adam_kernel<<<nn_cuda_blocks(n), NN_CUDA_THREADS, 0, s>>>(n, w, g, m, v, lr, beta1, beta2, eps, wd, decoupled,
                                                              bias1, bias2, sv);
}

extern "C" nn_status nn_cuda_sgd_update(size_t n, float *w, const float *g, float *v, float lr, float momentum,
                                        float wd)
{
    if (!n) return NN_OK;
    NN_CUDA_STREAM(s);
    sgd_cuda(n, w, g, v, lr, momentum, wd, NULL, s);
    NN_CUDA_LAUNCHED("sgd_update");
    return NN_OK;
}

extern "C" nn_status nn_cuda_adam_update(size_t n, float *w, const float *g, float *m, float *v, float lr,
                                         float beta1, float beta2, float eps, float wd, int decoupled,
                                         float bias1, float bias2)
{
    if (!n) return NN_OK;
    if (!(bias1 > 0.0f) || !(bias2 > 0.0f))
        return nn_error(NN_E_ARG, "cuda adam_update: bias corrections %g, %g must be positive (step >= 1)",
                        bias1, bias2);
    NN_CUDA_STREAM(s);
    adam_cuda(n, w, g, m, v, lr, beta1, beta2, eps, wd, decoupled, bias1, bias2, NULL, s);
    NN_CUDA_LAUNCHED("adam_update");
    return NN_OK;
}

extern "C" nn_status nn_cuda_sgd_update_at(size_t n, float *w, const float *g, float *v, float momentum, float wd,
                                           const nn_step_vars *sv)
{
    if (!n) return NN_OK;
    NN_CUDA_STREAM(s);
    sgd_cuda(n, w, g, v, 0.0f, momentum, wd, sv, s);
    NN_CUDA_LAUNCHED("sgd_update_at");
    return NN_OK;
}

/* bias1, bias2 are not checked here (they are on the device): the host that
 * wrote them did (nn_optim_step_vars computes them for t >= 1). */
extern "C" nn_status nn_cuda_adam_update_at(size_t n, float *w, const float *g, float *m, float *v, float beta1,
                                            float beta2, float eps, float wd, int decoupled, const nn_step_vars *sv)
{
    if (!n) return NN_OK;
    NN_CUDA_STREAM(s);
    adam_cuda(n, w, g, m, v, 0.0f, beta1, beta2, eps, wd, decoupled, 1.0f, 1.0f, sv, s);
    NN_CUDA_LAUNCHED("adam_update_at");
    return NN_OK;
}
