/* Data parallelism without a launcher: what the launchers' environments say
 * (Open MPI, PMI, srun; a Slurm batch script alone is not a launch), one
 * process making no MPI call, the sharded batch source's rows, the hash. The
 * many-process behaviour is tests/test_dist.sh's. */
#include <stdlib.h>

#include "core/dist.h"
#include "models/dist_train.h"
#include "tests/testutil.h"

static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                                   "PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "SLURM_STEP_NUM_TASKS",
                                   "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
}

static void expect_env(int rank, int size, int local, const char *launcher)
{
    int r, s, l;
    const char *la;
    nn_dist_env(&r, &s, &l, &la);
    assert_int_equal(r, rank);
    assert_int_equal(s, size);
    assert_int_equal(l, local);
    if (launcher) assert_string_equal(la, launcher);
    else assert_null(la);
}

static void test_env(void **state)
{
    (void)state;
    clear_env();
    expect_env(0, 1, 0, NULL);
    setenv("OMPI_COMM_WORLD_SIZE", "4", 1), setenv("OMPI_COMM_WORLD_RANK", "3", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
    expect_env(3, 4, 1, "mpirun");
    clear_env();
    setenv("PMI_SIZE", "2", 1), setenv("PMI_RANK", "1", 1);
    expect_env(1, 2, 0, "pmi");
    clear_env();
    /* inside sbatch, before srun: SLURM_NTASKS names the allocation, not this process's peers */
    setenv("SLURM_NTASKS", "16", 1), setenv("SLURM_PROCID", "0", 1);
    expect_env(0, 1, 0, NULL);
    setenv("SLURM_STEP_NUM_TASKS", "16", 1), setenv("SLURM_PROCID", "9", 1), setenv("SLURM_LOCALID", "1", 1);
    expect_env(9, 16, 1, "srun");
    clear_env();
}

/* No launcher: rank 0 of 1, and the collectives leave their buffers alone. */
static void test_one_process(void **state)
{
    (void)state;
    clear_env();
    assert_int_equal(nn_dist_init(), NN_OK);
    assert_false(nn_dist_active());
    assert_int_equal(nn_dist_rank(), 0);
    assert_int_equal(nn_dist_size(), 1);
    assert_string_equal(nn_dist_backend(NN_CPU), "none");
    float b[3] = {1, 2, 3};
    assert_int_equal(nn_dist_allreduce_sum(b, 3, NN_CPU), NN_OK);
    assert_true(b[0] == 1 && b[1] == 2 && b[2] == 3);
    int f[2] = {5, 0};
    assert_int_equal(nn_dist_agree(f, 2, "a test"), NN_OK);
    assert_int_equal(f[0], 5);
    assert_int_equal(nn_dist_check_equal(7, "a value"), NN_OK);
    nn_dist_finalize();
}

/* A source of one batch of 5 images of 2 floats: image i is (10 i, 10 i + 1), label i. */
static float fx[10];
static int32_t fy[5];
static int fnext;

static nn_status fake_start(void *impl, int epoch, int first)
{
    (void)impl, (void)epoch, (void)first;
    fnext = 0;
    return NN_OK;
}

static nn_status fake_next(void *impl, const float **x, const int32_t **y, int *n)
{
    (void)impl;
    for (int i = 0; i < 5; i++) fx[2 * i] = 10.0f * i, fx[2 * i + 1] = 10.0f * i + 1, fy[i] = i;
    *x = fx, *y = fy, *n = fnext++ ? 0 : 5;
    return NN_OK;
}

static void test_shard_rows(void **state)
{
    (void)state;
    nn_batch_source inner = {.views = 1, .batches = 1, .start = fake_start, .next = fake_next};
    const int first[3] = {0, 1, 3}, count[3] = {1, 2, 2}; /* rows [r*5/3, (r+1)*5/3) */
    for (int r = 0; r < 3; r++) {
        nn_shard sh;
        nn_batch_source s = nn_shard_source(&sh, &inner, r, 3, 2);
        const float *x;
        const int32_t *y;
        int n;
        assert_int_equal(s.start(s.impl, 0, 0), NN_OK);
        assert_int_equal(s.next(s.impl, &x, &y, &n), NN_OK);
        assert_int_equal(n, count[r]);
        assert_int_equal(y[0], first[r]);
        assert_true(x[0] == 10.0f * first[r] && x[1] == 10.0f * first[r] + 1);
        assert_int_equal(s.next(s.impl, &x, &y, &n), NN_OK);
        assert_int_equal(n, 0); /* the epoch's end reaches every rank */
    }
}

static void test_hash(void **state)
{
    (void)state;
    /* FNV-1a 64 of "a", the published test vector */
    assert_true(nn_hash_bytes(NN_HASH_INIT, "a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(nn_hash_bytes(NN_HASH_INIT, "", 0) == NN_HASH_INIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_one_process),
        cmocka_unit_test(test_shard_rows),
        cmocka_unit_test(test_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
