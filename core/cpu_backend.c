/* The CPU backend: host memory, elementwise helpers, random fills, and the
 * table gathering the op kernels defined in ops/<name>.c. */
#include <math.h>
#include <string.h>

#include "ops/cpu_kernels.h"
#include "core/backend.h"
#include "core/philox.h"

#define CPU_ALIGN 64

static nn_status cpu_alloc(void **p, size_t bytes)
{
    size_t n = (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    *p = aligned_alloc(CPU_ALIGN, n ? n : CPU_ALIGN);
    if (!*p) return nn_error(NN_E_NOMEM, "out of host memory (%zu bytes)", bytes);
    return NN_OK;
}

static void cpu_free(void *p) { free(p); }

static nn_status cpu_memset0(void *p, size_t bytes)
{
    memset(p, 0, bytes);
    return NN_OK;
}

static nn_status cpu_copy(void *dst, nn_device dd, const void *src, nn_device sd, size_t bytes)
{
    NN_ASSERT(dd == NN_CPU && sd == NN_CPU);
    if (bytes) memmove(dst, src, bytes);
    return NN_OK;
}

static nn_status cpu_sync(void) { return NN_OK; }
static size_t cpu_peak(void) { return 0; }

static nn_status cpu_fill(float *x, size_t n, float v)
{
    for (size_t i = 0; i < n; i++) x[i] = v;
    return NN_OK;
}

static nn_status cpu_axpy(size_t n, float a, const float *x, float *y)
{
#pragma omp parallel for simd if (n > 65536)
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
    return NN_OK;
}

static nn_status cpu_count_nonfinite(size_t n, const float *x, size_t *count)
{
    size_t c = 0;
#pragma omp parallel for reduction(+ : c) if (n > 65536)
    for (size_t i = 0; i < n; i++) c += !isfinite(x[i]);
    *count = c;
    return NN_OK;
}

static nn_status cpu_rng_uniform(float *x, size_t n, uint64_t seed, uint64_t offset, float lo, float hi)
{
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * nn_rand_uniform(seed, offset, i);
    return NN_OK;
}

static nn_status cpu_rng_normal(float *x, size_t n, uint64_t seed, uint64_t offset, float mean, float std)
{
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) x[i] = mean + std * nn_rand_normal(seed, offset, i);
    return NN_OK;
}

const nn_backend nn_cpu_backend = {
    .name = "cpu",
    .device = NN_CPU,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .memset0 = cpu_memset0,
    .copy = cpu_copy,
    .sync = cpu_sync,
    .peak_bytes = cpu_peak,
    .fill = cpu_fill,
    .axpy = cpu_axpy,
    .count_nonfinite = cpu_count_nonfinite,
    .rng_uniform = cpu_rng_uniform,
    .rng_normal = cpu_rng_normal,
    .conv2d_workspace = nn_cpu_conv2d_workspace,
    .conv2d_forward = nn_cpu_conv2d_forward,
    .conv2d_backward = nn_cpu_conv2d_backward,
    .relu_forward = nn_cpu_relu_forward,
    .relu_backward = nn_cpu_relu_backward,
    .lrn_forward = nn_cpu_lrn_forward,
    .lrn_backward = nn_cpu_lrn_backward,
    .maxpool_forward = nn_cpu_maxpool_forward,
    .maxpool_backward = nn_cpu_maxpool_backward,
    .dropout_forward = nn_cpu_dropout_forward,
    .dropout_backward = nn_cpu_dropout_backward,
    .linear_forward = nn_cpu_linear_forward,
    .linear_backward = nn_cpu_linear_backward,
    .xent_forward = nn_cpu_xent_forward,
    .xent_backward = nn_cpu_xent_backward,
    .sgd_update = nn_cpu_sgd_update,
    .adam_update = nn_cpu_adam_update,
};
