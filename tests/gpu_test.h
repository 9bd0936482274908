/* For the GPU tests (test_cuda, test_cuda_fuse, test_cuda_graph): whether a
 * GPU can run them, and the skip, with the reason, when not. */
#ifndef NN_TESTS_GPU_TEST_H
#define NN_TESTS_GPU_TEST_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "tests/testutil.h" /* cmocka */

/* True when the CUDA backend is built and a device answers; otherwise says why. */
static inline bool gpu_ready(void)
{
    if (!nn_backend_get(NN_CUDA)) {
        print_message("CUDA backend not built (configure with -Dcuda=enabled): skipped\n");
        return false;
    }
    if (!nn_device_available(NN_CUDA)) {
        print_message("no CUDA device: skipped\n");
        return false;
    }
    return true;
}

/* True when the "GPU" is tests/cuda_emu's CPU runtime (CONVNET_GPU_EMULATED=1,
 * set by tests/meson.build): a thousand times slower, so tests leave their
 * paper-size cases to a real GPU and say so (tests/meson.build's
 * cuda_emu_paper_shapes sets it to "paper" to run them anyway:
 * gpu_emulated_paper). */
static inline bool gpu_emulated(void)
{
    const char *e = getenv("CONVNET_GPU_EMULATED");
    return e && (strcmp(e, "1") == 0 || strcmp(e, "paper") == 0);
}

static inline bool gpu_emulated_paper(void)
{
    const char *e = getenv("CONVNET_GPU_EMULATED");
    return e && strcmp(e, "paper") == 0;
}

/* First statement of a GPU test: skips it (cmocka's skip) without a GPU. */
#define NEED_GPU()            \
    do {                      \
        if (!gpu_ready()) {   \
            skip();           \
            return;           \
        }                     \
    } while (0)

#endif
