/* One training step captured as a CUDA graph and replayed (NN_CUDA_GRAPH=1,
 * models/train.c; docs/cuda_graph.md): the capture records what the step
 * enqueues on the module's one stream, kernels and copies with their
 * pointers and by-value arguments frozen; what changes per step is read on
 * the device from the step's nn_step_vars (core/step_vars.h). */
#include "cuda/checks.h"
#include "cuda/common.cuh"

extern "C" nn_status nn_cuda_graph_begin(void)
{
    /* the eager label check copies its verdict to the host and waits: not
     * capturable; the lazy one writes it to mapped memory from a kernel */
    if (!nn_cuda_lazy_checks())
        return nn_error(NN_E_UNSUPPORTED, "cuda graph: capturing a step needs %s=1 (the eager label check "
                        "synchronizes inside the step)", NN_CUDA_LAZY_CHECKS_ENV);
    NN_CUDA_STREAM(s);
    /* thread-local: an unsafe call (a sync, a pageable copy) from this thread
     * fails the capture instead of going unnoticed */
    NN_CUDA_TRY(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "beginning the step's capture");
    return NN_OK;
}

extern "C" nn_status nn_cuda_graph_end(void **g)
{
    *g = NULL;
    NN_CUDA_STREAM(s);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(s, &graph);
    if (e != cudaSuccess) {
        if (graph) cudaGraphDestroy(graph);
        return nn_cuda_fail(e, "capturing the step", __FILE__, __LINE__);
    }
    cudaGraphExec_t exec = NULL;
    e = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph); /* the executable keeps what it needs */
    if (e != cudaSuccess) return nn_cuda_fail(e, "instantiating the step's graph", __FILE__, __LINE__);
    *g = exec;
    return NN_OK;
}

extern "C" nn_status nn_cuda_graph_launch(void *g)
{
    NN_CUDA_STREAM(s);
    NN_CUDA_TRY(cudaGraphLaunch((cudaGraphExec_t)g, s), "replaying the step's graph");
    return NN_OK;
}

extern "C" void nn_cuda_graph_free(void *g)
{
    if (g) cudaGraphExecDestroy((cudaGraphExec_t)g);
}
