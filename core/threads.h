/* Threads: one call sets the CPU parallelism of the whole library (OpenBLAS
 * and our OpenMP loops share one libgomp pool), and one helper gives OpenMP
 * the passive wait policy, which libgomp only reads when it is loaded. */
#ifndef NN_THREADS_H
#define NN_THREADS_H

#include "core/status.h"

/* Sets the number of threads OpenBLAS and OpenMP use from now on, for the
 * calling thread and the threads it starts. n = 0: the CPUs this process may
 * run on (its sched_getaffinity mask, so `taskset -c 0,1 prog` gives 2), not
 * every CPU of the machine. n < 0: NN_E_ARG. *used (may be NULL) receives the
 * count set. */
nn_status nn_set_threads(int n, int *used);

/* The CPUs in this process's affinity mask (>= 1). */
int nn_cpu_count(void);

/* Idle OpenMP threads spin for a while after each parallel region by default;
 * with as many threads as cores that takes the cores from OpenBLAS and the
 * data loader (measured: 4x slower training on 2 cores). libgomp reads
 * OMP_WAIT_POLICY only when it is loaded, before main(), so a library call
 * cannot change it afterwards: this helper sets OMP_WAIT_POLICY=passive and
 * re-executes the program (/proc/self/exe with the same argv and the changed
 * environment). Call it first thing in main(), before any other thread or
 * open resource exists:
 *     int main(int argc, char **argv) { nn_threads_reexec(argv); ... }
 * Returns NN_OK without re-executing when OMP_WAIT_POLICY is already set (the
 * user's choice wins; this is also how the re-executed program stops); on
 * success it does not return. If exec fails it returns NN_E_UNSUPPORTED with a
 * message, and the program may carry on with the default policy. */
nn_status nn_threads_reexec(char **argv);

#endif
