/* The CUDA backend table: the GPU twin of core/cpu_backend.c. Every slot is an
 * extern "C" entry nn_cuda_<slot> of the cuda/ file named after the op
 * (memory.cu for memory, elementwise.cu for the helpers), generated from the
 * one slot list (core/backend_slots.h), so a kernel left unwritten is a link
 * error rather than a NULL slot. core/backend.c registers the table when the
 * build has NN_HAVE_CUDA, and asks nn_cuda_present() (memory.cu) whether a
 * usable device is there. */
#include "cuda/common.cuh"

extern "C" const nn_backend nn_cuda_backend = {
    .name = "cuda",
    .device = NN_CUDA,
    .layout =
#define NN_KERNEL NN_KERNEL_LAYOUT
#include "core/backend_slots.h"
#undef NN_KERNEL
    ,
#define NN_KERNEL(op, ret, name, args) .name = nn_cuda_##name,
#include "core/backend_slots.h"
#undef NN_KERNEL
};
