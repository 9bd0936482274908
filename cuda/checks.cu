/* The lazily read error flags of cuda/checks.h. A bad label found on the
 * device goes in two steps: the rows kernel keeps the first bad sample with
 * its label in one device word (atomicMin on sample << 32 | label), and the
 * one-block mean kernel after it moves that word, when set, into a report in
 * mapped pinned host memory and clears the word. The host reads the report
 * after each stream synchronization it does anyway: no launch, copy or sync
 * is added to a step with good labels, and the capture of a step as a CUDA
 * graph is not blocked by a check. */
#include <pthread.h>
#include <string.h>

#include "cuda/checks.h"
#include "cuda/common.cuh"

static int lazy = -1; /* -1: not read from the environment yet */

extern "C" bool nn_cuda_lazy_checks(void)
{
    if (lazy < 0) {
        const char *e = getenv(NN_CUDA_LAZY_CHECKS_ENV);
        lazy = e && e[0] == '1';
    }
    return lazy;
}

extern "C" void nn_cuda_set_lazy_checks(bool on) { lazy = on; }

/* One format for the message, eager or lazy: the CPU's (ops/softmax_xent.c). */
nn_status nn_cuda_bad_label(int label, int sample, int classes)
{
    return nn_error(NN_E_RANGE, "softmax_xent: label %d of sample %d is outside [0, %d)", label, sample, classes);
}

static pthread_once_t flags_once = PTHREAD_ONCE_INIT;
static unsigned long long *first_bad; /* device word, NN_CUDA_NO_BAD when clear */
static nn_cuda_report *report_host, *report_dev; /* the same mapped pinned memory */
static cudaError_t flags_err;
static const char *flags_what = "";

static void make_flags(void)
{
    flags_what = "allocating the label flag";
    flags_err = cudaMalloc(&first_bad, sizeof *first_bad);
    /* NN_CUDA_NO_BAD, on the backend's stream: a plain cudaMemset would run on
     * the legacy stream, which the backend's non-blocking stream does not
     * wait for, so the first check could read the word before it is set */
    cudaStream_t s = NULL;
    if (flags_err == cudaSuccess && nn_cuda_stream(&s) != NN_OK) flags_err = cudaErrorInvalidResourceHandle;
    if (flags_err == cudaSuccess) flags_err = cudaMemsetAsync(first_bad, 0xFF, sizeof *first_bad, s);
    if (flags_err != cudaSuccess) return;
    flags_what = "allocating the pinned error report";
    flags_err = cudaHostAlloc((void **)&report_host, sizeof *report_host, cudaHostAllocMapped);
    if (flags_err != cudaSuccess) return;
    memset(report_host, 0, sizeof *report_host);
    flags_what = "mapping the pinned error report";
    flags_err = cudaHostGetDevicePointer((void **)&report_dev, report_host, 0);
}

nn_status nn_cuda_label_flags(unsigned long long **word, nn_cuda_report **report)
{
    pthread_once(&flags_once, make_flags); /* once: no allocation in the steady state */
    if (flags_err != cudaSuccess) return nn_cuda_fail(flags_err, flags_what, __FILE__, __LINE__);
    *word = first_bad;
    *report = report_dev;
    return NN_OK;
}

nn_status nn_cuda_synced(void)
{
    /* volatile: the device wrote it; the stream synchronization before this
     * call orders that write before our read */
    volatile nn_cuda_report *r = report_host;
    if (!r || !r->set) return NN_OK;
    const int label = r->label, sample = r->sample, classes = r->classes;
    r->set = 0; /* reported once; the next bad batch is reported again */
    return nn_cuda_bad_label(label, sample, classes);
}
