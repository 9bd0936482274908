/* The gradient all-reduce of data-parallel training, alone: the sum of N
 * floats across the ranks mpirun started (default 62,378,344: the paper-size
 * AlexNet's gradients), and the one pass after it: the trainer's gradients
 * live in one block (nn_params_flatten_grads), summed in place and scaled by
 * 1/N in place (models/dist_train.c). Validates the sum first, then times
 * median-of-5 after a warm-up. With BUCKET, also the same floats in buckets
 * of BUCKET floats: each summed by a blocking call in turn, and all started
 * at once (nn_dist_start_sum: MPI_Iallreduce) then waited for, as training
 * with --dist-bucket-mb does (without the backward pass to overlap).
 *     mpirun --bind-to none -np 2 build/benchmarks/allreduce_bench [FLOATS [BUCKET]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchmarks/bench_util.h"
#include "core/backend.h"
#include "core/dist.h"

#define REPS 5

/* A failed call ends every rank: a number timed over calls that failed
 * (e.g. more buckets than NN_DIST_MAX_PENDING started at once) means nothing. */
static void check(nn_status st)
{
    if (st == NN_OK) return;
    fprintf(stderr, "allreduce_bench: %s\n", nn_errmsg());
    nn_dist_abort(1);
}

/* The median time of REPS sums of buf in buckets: blocking one by one, or
 * all started, then waited for. */
static double time_buckets(float *buf, size_t n, size_t bucket, bool started)
{
    double t[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = bench_now();
        for (size_t i = 0; i < n; i += bucket) {
            size_t c = n - i < bucket ? n - i : bucket;
            check(started ? nn_dist_start_sum(buf + i, c, NN_CPU) : nn_dist_allreduce_sum(buf + i, c, NN_CPU));
        }
        if (started) check(nn_dist_wait_sums(NN_CPU));
        t[r] = bench_now() - t0;
    }
    qsort(t, REPS, sizeof *t, bench_cmp_double);
    return t[REPS / 2];
}

static void bench_buckets(float *buf, size_t n, size_t bucket, int rank, int size)
{
    if (!nn_dist_overlaps(NN_CPU)) return;
    if ((n + bucket - 1) / bucket > NN_DIST_MAX_PENDING) {
        if (rank == 0)
            printf("  in buckets of %zu floats: more than %d buckets, the most one wait takes; not timed\n", bucket,
                   NN_DIST_MAX_PENDING);
        return;
    }
    for (size_t i = 0; i < n; i++) buf[i] = (float)(rank + 1);
    (void)time_buckets(buf, n, bucket, true); /* warm-up */
    double blocking = time_buckets(buf, n, bucket, false), started = time_buckets(buf, n, bucket, true);
    if (rank == 0)
        printf("  in %zu buckets of %zu floats (%.2f MB): blocking one by one %.1f ms, started at once %.1f ms\n",
               (n + bucket - 1) / bucket, bucket, bucket * 4e-6, 1e3 * blocking, 1e3 * started);
    (void)size;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 62378344;
    if (nn_dist_init() != NN_OK) return fprintf(stderr, "%s\n", nn_errmsg()), 1;
    float *buf = malloc(n * sizeof *buf);
    if (!buf) return fprintf(stderr, "out of memory\n"), 1;
    int rank = nn_dist_rank(), size = nn_dist_size();
    for (size_t i = 0; i < n; i++) buf[i] = (float)(rank + 1);
    /* validate: the sum of 1..size everywhere */
    check(nn_dist_allreduce_sum(buf, n, NN_CPU));
    float want = nn_dist_active() ? (float)(size * (size + 1) / 2) : 1.0f;
    if (buf[0] != want || buf[n - 1] != want) return fprintf(stderr, "wrong sum %g, want %g\n", buf[0], want), 1;
    double tr[REPS], tp[REPS];
    const nn_backend *be = nn_backend_get(NN_CPU);
    for (int r = 0; r < REPS; r++) {
        double t0 = bench_now();
        check(nn_dist_allreduce_sum(buf, n, NN_CPU));
        double t1 = bench_now();
        (void)be->axpy(n, 1.0f / (float)size - 1.0f, buf, buf); /* the in-place 1/N */
        tr[r] = t1 - t0, tp[r] = bench_now() - t1;
    }
    qsort(tr, REPS, sizeof *tr, bench_cmp_double);
    qsort(tp, REPS, sizeof *tp, bench_cmp_double);
    if (rank == 0)
        printf("%d ranks, %zu floats (%.1f MB): all-reduce %.1f ms, scale %.1f ms (median of %d)\n", size, n,
               n * 4e-6, 1e3 * tr[REPS / 2], 1e3 * tp[REPS / 2], REPS);
    size_t bucket = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
    if (bucket) bench_buckets(buf, n, bucket, rank, size);
    free(buf);
    nn_dist_finalize();
    return 0;
}
