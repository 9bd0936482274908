/* The emulated GPU's shared-memory race checker (tests/cuda_emu/racecheck.cpp)
 * on planted races (tests/cuda_emu/race_probe.cu): each is reported, by kind
 * and with the threads involved, and stops the run; with the missing
 * __syncthreads back nothing is reported; and two of them give the right
 * answer on the emulator with the checker off, so only the checker sees
 * them. Without this, cuda_emu_racecheck (test_cuda on the checker's module)
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
    const char *report; /* what the checker must say */
    int blind;          /* right results with the checker off */
} planted;

static const planted races[] = {
    {"warp_broadcast", 2, "race (read after write) at byte 0 of a static __shared__ array: thread 0 (0, 0, 0) wrote it, "
                          "then thread 1 (1, 0, 0) reads it", 1},
    {"cross_warp", 1, "race (read after write) at byte 0 of a static __shared__ array: thread 0 (0, 0, 0) wrote it, "
                      "then thread 32 (32, 0, 0) reads it", 1},
    /* the block's last thread through the barrier runs on first: warp 1 */
    {"shift", 2, "race (write after read) at byte 132 of the dynamic shared memory: thread 32 (32, 0, 0) read it, "
                 "then thread 33 (33, 0, 0) writes it", 0},
    {"same_word", 2, "race (write after write) at byte 0 of a static __shared__ array: thread 0 (0, 0, 0) wrote it, "
                     "then thread 1 (1, 0, 0) writes it", 0},
    {"cp_async", 1, "race (read after write) at byte 4 of a static __shared__ array: thread 0 (0, 0, 0) wrote it, "
                    "then thread 1 (1, 0, 0) reads it", 1},
};

static void test_each_planted_race_is_reported(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof races / sizeof races[0]; i++) {
        const planted *p = &races[i];
        const probe_run r = run_probe(p->probe, 0, p->blocks, 1);
        if (r.status != -SIGABRT || !strstr(r.err, p->report) || !strstr(r.err, "no __syncthreads between"))
            fail_msg("%s: status %d, stderr:\n%s\nwanted a report with: %s", p->probe, r.status, r.err, p->report);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
