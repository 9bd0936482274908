/* nn_set_threads and nn_threads_reexec: the thread count reaches OpenBLAS and
 * OpenMP, n = 0 follows the affinity mask, and the re-execution really gives
 * libgomp the passive policy (it reads it at load time, so this program
 * starts without it and re-executes itself through the helper in main()). */
#define _GNU_SOURCE
#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "core/threads.h"
#include "tests/testutil.h"

static void set_threads_reaches_blas_and_omp(void **state)
{
    (void)state;
    int used = -1;
    assert_int_equal(nn_set_threads(3, &used), NN_OK);
    assert_int_equal(used, 3);
    assert_int_equal(omp_get_max_threads(), 3);
    assert_int_equal(openblas_get_num_threads(), 3);
    assert_int_equal(nn_set_threads(1, NULL), NN_OK);
    assert_int_equal(omp_get_max_threads(), 1);
    assert_int_equal(openblas_get_num_threads(), 1);
}

static void zero_means_the_affinity_mask(void **state)
{
    (void)state;
    cpu_set_t all, one;
    assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
    int first = 0;
    while (!CPU_ISSET(first, &all)) first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    int used = -1;
    assert_int_equal(nn_set_threads(0, &used), NN_OK);
    assert_int_equal(used, 1); /* one allowed CPU, whatever the machine has */
    assert_int_equal(omp_get_max_threads(), 1);
    assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
    assert_int_equal(nn_set_threads(0, &used), NN_OK);
    assert_int_equal(used, CPU_COUNT(&all));
    assert_int_equal(nn_cpu_count(), CPU_COUNT(&all));
}

static void negative_is_an_argument_error(void **state)
{
    (void)state;
    assert_int_equal(nn_set_threads(-1, NULL), NN_E_ARG);
    assert_non_null(strstr(nn_errmsg(), "nn_set_threads"));
}

/* main() ran nn_threads_reexec once: this is the re-executed program, and
 * libgomp, loaded after the exec, reports the passive policy. */
static void reexec_gave_libgomp_the_passive_policy(void **state)
{
    (void)state;
    const char *runs = getenv("TEST_THREADS_RUN");
    assert_non_null(runs);
    assert_string_equal(runs, "2");
    assert_string_equal(getenv("OMP_WAIT_POLICY"), "passive");
    /* libgomp's own view: omp_display_env prints its settings to stderr */
    fflush(stderr);
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(2);
    assert_true(saved >= 0 && dup2(fileno(tmp), 2) == 2);
    omp_display_env(0);
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    char text[8192] = {0};
    rewind(tmp);
    size_t n = fread(text, 1, sizeof text - 1, tmp);
    fclose(tmp);
    assert_true(n > 0);
    if (!strstr(text, "OMP_WAIT_POLICY = 'PASSIVE'"))
        fail_msg("libgomp does not report the passive policy:\n%s", text);
    /* a policy already set is kept, and nothing is re-executed */
    assert_int_equal(nn_threads_reexec((char *[]){"unused", NULL}), NN_OK);
}

int main(int argc, char **argv)
{
    (void)argc;
    /* first run: drop the policy the test harness sets, count the runs */
    const char *runs = getenv("TEST_THREADS_RUN");
    if (!runs) {
        unsetenv("OMP_WAIT_POLICY");
        setenv("TEST_THREADS_RUN", "1", 1);
    } else if (strcmp(runs, "1") == 0) {
        setenv("TEST_THREADS_RUN", "2", 1);
    }
    nn_status s = nn_threads_reexec(argv);
    if (s != NN_OK) {
        fprintf(stderr, "nn_threads_reexec: %s\n", nn_errmsg());
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(set_threads_reaches_blas_and_omp),
        cmocka_unit_test(zero_means_the_affinity_mask),
        cmocka_unit_test(negative_is_an_argument_error),
        cmocka_unit_test(reexec_gave_libgomp_the_passive_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
