/* The emulated GPU's race checker (tests/cuda_emu/racecheck.cpp) on planted
 * races (tests/cuda_emu/race_probe.cu), in shared and in global memory: each
 * is reported, by kind and place, and stops the run; with the missing
 * __syncthreads back (or the blocks on their own words) nothing is
 * reported, nor for atomics; and four of them give the right answer on the
 * emulator with the checker off, so only the checker sees them. Also the emulator's block
 * order (a block must not find its neighbour's output written). Without this, cuda_emu_racecheck (test_cuda on the checker's module)
 * would pass just the same if the instrumentation stopped reaching the
 * kernels. Each probe runs in a child process: a report aborts it. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef int (*probe_fn)(const char *name, int sync, int blocks);

static probe_fn probe;

/* what a probe run left: its exit (or -signal) and up to 4 KB of stderr */
typedef struct {
    int status;
    char err[4096];
} probe_run;

static probe_run run_probe(const char *name, int sync, int blocks, int checker_on)
{
    probe_run r = {0};
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        if (!checker_on) setenv("NN_EMU_RACECHECK", "0", 1);
        const int ok = probe(name, sync, blocks);
        _exit(ok == 1 ? 0 : ok == 0 ? 3 : 4); /* 3: wrong results, 4: the probe failed */
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd[0], r.err + got, sizeof r.err - 1 - got)) > 0) got += (size_t)n;
    close(fd[0]);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    return r;
}

typedef struct {
    const char *probe;
    int blocks;
    const char *kind;   /* what the checker must say: the hazard */
    const char *memory; /* and where */
    const char *why;    /* what should have ordered the two */
    int blind;          /* right results with the checker off */
} planted;

#define STATIC_SMEM "of a static __shared__ array"
#define DYNAMIC_SMEM "of the dynamic shared memory"
#define GLOBAL "-byte allocation at 0x"
#define NO_BARRIER "with no __syncthreads between"
#define ONE_LAUNCH "in the same launch (nothing orders the blocks of a launch)"

/* (which threads and byte it names follows the emulator's thread order:
 * not checked here) */
static const planted races[] = {
    {"warp_broadcast", 2, "shared-memory race (read after write)", STATIC_SMEM, NO_BARRIER, 1},
    {"cross_warp", 1, "shared-memory race (read after write)", STATIC_SMEM, NO_BARRIER, 1},
    {"shift", 2, "shared-memory race (write after read)", DYNAMIC_SMEM, NO_BARRIER, 0},
    {"same_word", 2, "shared-memory race (write after write)", STATIC_SMEM, NO_BARRIER, 0},
    {"cp_async", 1, "shared-memory race (read after write)", STATIC_SMEM, NO_BARRIER, 1},
    /* the emulator's block order (from the last block) has block 31 read block 30's word first */
    {"previous_block", 32, "global-memory race (write after read)", GLOBAL, ONE_LAUNCH, 0},
    {"same_output", 2, "global-memory race (write after write)", GLOBAL, ONE_LAUNCH, 1},
};

static void test_each_planted_race_is_reported(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof races / sizeof races[0]; i++) {
        const planted *p = &races[i];
        const probe_run r = run_probe(p->probe, 0, p->blocks, 1);
        char kernel[64];
        snprintf(kernel, sizeof kernel, "kernel %s_kernel, block (", p->probe);
        if (r.status != -SIGABRT || !strstr(r.err, kernel) || !strstr(r.err, p->kind) || !strstr(r.err, p->memory) ||
            !strstr(r.err, p->why))
            fail_msg("%s: status %d, stderr:\n%s\nwanted a report of a %s %s", p->probe, r.status, r.err, p->kind,
                     p->memory);
    }
}

static void test_nothing_is_reported_once_synchronized(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof races / sizeof races[0]; i++) {
        const probe_run r = run_probe(races[i].probe, 1, races[i].blocks, 1);
        if (r.status != 0 || r.err[0]) fail_msg("%s with its barrier: status %d, stderr:\n%s", races[i].probe, r.status, r.err);
    }
}

/* the reason for the checker: these races give the right answer on the
 * emulator's own order, so the tests comparing results cannot see them */
static void test_the_emulator_alone_misses_some(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof races / sizeof races[0]; i++) {
        const planted *p = &races[i];
        const probe_run r = run_probe(p->probe, 0, p->blocks, 0);
        if (p->blind ? r.status != 0 : r.status != 0 && r.status != 3)
            fail_msg("%s with the checker off: status %d, stderr:\n%s", p->probe, r.status, r.err);
    }
}

/* atomics are how blocks may share a word: not races */
static void test_atomics_are_not_races(void **state)
{
    (void)state;
    const probe_run r = run_probe("atomic_sum", 0, 4, 1);
    if (r.status != 0 || r.err[0]) fail_msg("atomic_sum: status %d, stderr:\n%s", r.status, r.err);
}

/* the emulator's block order (emu.cpp, block_step): a block reading its
 * neighbour's output in the same launch finds it unset, as it may on a GPU */
static void test_blocks_run_out_of_index_order(void **state)
{
    (void)state;
    const probe_run r = run_probe("previous_block", 0, 32, 0);
    if (r.status != 3) fail_msg("previous_block: status %d (3: wrong results), stderr:\n%s", r.status, r.err);
}

int main(void)
{
    const char *path = getenv("CONVNET_CUDA_MODULE");
    void *module = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    probe = module ? (probe_fn)(uintptr_t)dlsym(module, "nn_emu_race_probe") : NULL;
    if (!probe) {
        fprintf(stderr, "test_cuda_racecheck: no race checker module (CONVNET_CUDA_MODULE=%s): %s\n",
                path ? path : "(unset)", module ? "no nn_emu_race_probe in it" : dlerror());
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_planted_race_is_reported),
        cmocka_unit_test(test_nothing_is_reported_once_synchronized),
        cmocka_unit_test(test_the_emulator_alone_misses_some),
        cmocka_unit_test(test_atomics_are_not_races),
        cmocka_unit_test(test_blocks_run_out_of_index_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
