/* The CUDA backend table: the GPU twin of core/cpu_backend.c. Every slot is an
 * extern "C" entry of the cuda/ file named after the op (memory.cu for memory,
 * elementwise.cu for the helpers); core/backend.c registers the table when the
 * build has NN_HAVE_CUDA, and asks nn_cuda_present() (memory.cu) whether a
 * usable device is there. Designated initializers (C++20) in the order of
 * core/backend.h, so a slot that moves there fails to compile here. */
#include "cuda/common.cuh"

extern "C" const nn_backend nn_cuda_backend = {
    .name = "cuda",
    .device = NN_CUDA,
    .alloc = nn_cuda_alloc,
    .free = nn_cuda_free,
    .memset0 = nn_cuda_memset0,
    .copy = nn_cuda_copy,
    .sync = nn_cuda_sync,
    .peak_bytes = nn_cuda_peak_bytes,
    .fill = nn_cuda_fill,
    .axpy = nn_cuda_axpy,
    .count_nonfinite = nn_cuda_count_nonfinite,
    .rng_uniform = nn_cuda_rng_uniform,
    .rng_normal = nn_cuda_rng_normal,
    .conv2d_workspace = nn_cuda_conv2d_workspace,
    .conv2d_forward = nn_cuda_conv2d_forward,
    .conv2d_backward = nn_cuda_conv2d_backward,
    .relu_forward = nn_cuda_relu_forward,
    .relu_backward = nn_cuda_relu_backward,
    .lrn_forward = nn_cuda_lrn_forward,
    .lrn_backward = nn_cuda_lrn_backward,
    .maxpool_forward = nn_cuda_maxpool_forward,
    .maxpool_backward = nn_cuda_maxpool_backward,
    .dropout_forward = nn_cuda_dropout_forward,
    .dropout_backward = nn_cuda_dropout_backward,
    .linear_forward = nn_cuda_linear_forward,
    .linear_backward = nn_cuda_linear_backward,
    .xent_forward = nn_cuda_xent_forward,
    .xent_backward = nn_cuda_xent_backward,
    .sgd_update = nn_cuda_sgd_update,
    .adam_update = nn_cuda_adam_update,
};
