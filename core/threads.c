/* nn_set_threads and nn_threads_reexec (core/threads.h). */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "core/threads.h"

#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

int nn_cpu_count(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

nn_status nn_set_threads(int n, int *used)
{
    if (n < 0) return nn_error(NN_E_ARG, "nn_set_threads: n = %d, expected 0 (all CPUs of the process) or more", n);
    if (n == 0) n = nn_cpu_count();
    /* the OpenMP build of OpenBLAS sizes its regions from its own count,
     * and our loops from OpenMP's: set both */
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
    if (used) *used = n;
    return NN_OK;
}

nn_status nn_threads_reexec(char **argv)
{
    if (getenv("OMP_WAIT_POLICY")) return NN_OK;
    if (!argv || !argv[0]) return nn_error(NN_E_ARG, "nn_threads_reexec: argv is NULL or empty");
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0)
        return nn_error(NN_E_UNSUPPORTED, "nn_threads_reexec: setenv: %s", strerror(errno));
    execv("/proc/self/exe", argv);
    int e = errno;
    /* leave the environment as it was: the policy was not applied */
    unsetenv("OMP_WAIT_POLICY");
    return nn_error(NN_E_UNSUPPORTED, "nn_threads_reexec: cannot re-execute /proc/self/exe: %s", strerror(e));
}
