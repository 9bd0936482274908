/* The u8_batch kernel on the GPU: a batch of a byte data set kept on the
 * device (io/resident.h), x (n, c, size, size) floats and y (n) labels. One
 * thread per output pixel, through the same per-pixel functions as the CPU
 * loader (io/sample.h, which rounds every product and sum on its own, as C
 * does), so the batch is the CPU loader's bit for bit. */
#include "cuda/common.cuh"
#include "io/sample.h"

static __global__ void __launch_bounds__(NN_CUDA_THREADS)
u8_batch_kernel(nn_u8_batch_geom g, const uint8_t *__restrict__ images,
                const int32_t *__restrict__ labels, const int32_t *__restrict__ order,
                float *__restrict__ x, int32_t *__restrict__ y)
{
    const long long S2 = (long long)g.size * g.size, per = (long long)g.c * S2, total = per * g.n;
    const size_t plane = (size_t)g.h * g.w;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int k = (int)(t / per), c = (int)(t % per / S2), i = (int)(t % S2 / g.size), j = (int)(t % g.size);
        int dx, dy, flip;
        nn_sample_aug(&g, g.first + k, &dx, &dy, &flip); /* per pixel: cheaper than a pass and a buffer */
        const int idx = order[k];
        x[t] = nn_sample_pixel(&g, images + ((size_t)idx * g.c + c) * plane, dx, dy, flip, i, j);
        if (c == 0 && i == 0 && j == 0) y[k] = labels[idx];
    }
}

extern "C" nn_status nn_cuda_u8_batch(const nn_u8_batch_geom *g, const uint8_t *images, const int32_t *labels,
                                      const int32_t *order, float *x, int32_t *y)
{
    if (g->n <= 0) return NN_OK;
    NN_CUDA_STREAM(s);
    const size_t total = (size_t)g->n * g->c * g->size * g->size;
    u8_batch_kernel<<<nn_cuda_blocks(total), NN_CUDA_THREADS, 0, s>>>(*g, images, labels, order, x, y);
    NN_CUDA_LAUNCHED("u8_batch");
    return NN_OK;
}
