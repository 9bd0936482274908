/* The CPU backend: host memory, elementwise helpers, random fills, and the
 * table gathering the op kernels defined in ops/<name>.c (nn_cpu_<slot>, declared
 * by core/backend.h from the slot list). */
#include <math.h>
#include <string.h>

#include "core/backend.h"
#include "core/par.h"
#include "core/philox.h"

#define CPU_ALIGN 64

nn_status nn_cpu_alloc(void **p, size_t bytes)
{
    size_t n = (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    *p = aligned_alloc(CPU_ALIGN, n ? n : CPU_ALIGN);
    if (!*p) return nn_error(NN_E_NOMEM, "out of host memory (%zu bytes)", bytes);
    return NN_OK;
}

void nn_cpu_free(void *p) { free(p); }

nn_status nn_cpu_memset0(void *p, size_t bytes)
{
    memset(p, 0, bytes);
    return NN_OK;
}

nn_status nn_cpu_copy(void *dst, nn_device dd, const void *src, nn_device sd, size_t bytes)
{
    NN_ASSERT(dd == NN_CPU && sd == NN_CPU);
    if (bytes) memmove(dst, src, bytes);
    return NN_OK;
}

nn_status nn_cpu_sync(void) { return NN_OK; }
size_t nn_cpu_peak_bytes(void) { return 0; }

nn_status nn_cpu_fill(float *x, size_t n, float v)
{
    for (size_t i = 0; i < n; i++) x[i] = v;
    return NN_OK;
}

nn_status nn_cpu_axpy(size_t n, float a, const float *x, float *y)
{
    NN_PAR_IF(n > 65536, "omp parallel for simd", for (size_t i = 0; i < n; i++) y[i] += a * x[i];);
    return NN_OK;
}

nn_status nn_cpu_count_nonfinite(size_t n, const float *x, size_t *count)
{
    size_t c = 0;
    NN_PAR_IF(n > 65536, "omp parallel for reduction(+ : c)", for (size_t i = 0; i < n; i++) c += !isfinite(x[i]););
    *count = c;
    return NN_OK;
}

nn_status nn_cpu_count_nonfinite_into(size_t n, const float *x, nn_step_vars *sv)
{
    size_t c;
    NN_TRY(nn_cpu_count_nonfinite(n, x, &c));
    sv->nonfinite += c;
    return NN_OK;
}

/* The CPU runs each step as it is enqueued: nothing to capture. */
nn_status nn_cpu_graph_begin(void)
{
    return nn_error(NN_E_UNSUPPORTED, "cpu: no step capture (CUDA graphs are for the CUDA device)");
}

nn_status nn_cpu_graph_end(void **g)
{
    *g = NULL;
    return nn_cpu_graph_begin();
}

nn_status nn_cpu_graph_launch(void *g)
{
    (void)g;
    return nn_cpu_graph_begin();
}

void nn_cpu_graph_free(void *g) { (void)g; }

nn_status nn_cpu_rng_uniform(float *x, size_t n, uint64_t seed, uint64_t offset, float lo, float hi)
{
    NN_PAR_IF(n > 65536, "omp parallel for",
              for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * nn_rand_uniform(seed, offset, i););
    return NN_OK;
}

nn_status nn_cpu_rng_normal(float *x, size_t n, uint64_t seed, uint64_t offset, float mean, float std)
{
    NN_PAR_IF(n > 65536, "omp parallel for",
              for (size_t i = 0; i < n; i++) x[i] = mean + std * nn_rand_normal(seed, offset, i););
    return NN_OK;
}

/* Every slot of core/backend_slots.h, in order. */
const nn_backend nn_cpu_backend = {
    .name = "cpu",
    .device = NN_CPU,
    .layout =
#define NN_KERNEL NN_KERNEL_LAYOUT
#include "core/backend_slots.h"
#undef NN_KERNEL
    ,
#define NN_KERNEL(op, ret, name, args) .name = nn_cpu_##name,
#include "core/backend_slots.h"
#undef NN_KERNEL
};
