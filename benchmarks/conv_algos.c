/* The CPU convolution algorithms side by side, per layer shape: im2col + GEMM
 * and Winograd F(m x m, r x r) for every m the points allow, forward and
 * backward (dX and dW), in interleaved rounds so that a noisy machine slows
 * all of them alike; medians, and which one the cost model picks. This is
 * how the constants of the cost model in ops/conv2d_gemm.c were set.
 *
 *   conv_algos [--threads T] [--rounds R] [--only M] [--cpu-time] [--layer N,C,H,W,O,K ...]
 *
 * --only M times one algorithm (0: GEMM, M >= 2: F(M)), for a profiler;
 * --cpu-time reports the CPU time of all threads instead of the wall time,
 * which other processes on the machine inflate much less (with the passive
 * wait policy nn_threads_reexec sets; a GOMP_SPINCOUNT would count the
 * threads' busy-waiting too).
 * Without --layer: the 3x3 and 5x5 layers of the default model (64x64 input,
 * width 0.5) and of the paper's AlexNet, batch 64. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "benchmarks/bench_util.h"
#include "core/threads.h"
#include "ops/conv2d_cpu.h"
#include "ops/cpu_kernels.h"

typedef struct layer {
    const char *name;
    int n, c, h, w, o, k;
} layer;

static const layer defaults[] = {
    {"default conv2", 64, 48, 7, 7, 128, 5},   {"default conv3", 64, 128, 3, 3, 192, 3},
    {"default conv4", 64, 192, 3, 3, 192, 3},  {"default conv5", 64, 192, 3, 3, 128, 3},
    {"paper conv2", 64, 96, 27, 27, 256, 5},   {"paper conv3", 64, 256, 13, 13, 384, 3},
    {"paper conv4", 64, 384, 13, 13, 384, 3},  {"paper conv5", 64, 384, 13, 13, 256, 3},
};

#define MAX_ALGOS 8 /* GEMM and m = 1 .. NN_WINO_NMAX - 2 */

static int use_cpu_time; /* --cpu-time */

static double clock_now(void) { return use_cpu_time ? bench_cpu_time() : bench_now(); }

static float *rand_buf(size_t n, unsigned seed)
{
    float *p = malloc(n * sizeof *p);
    if (!p) return NULL;
    srand(seed);
    for (size_t i = 0; i < n; i++) p[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
    return p;
}

/* Forward and backward times (s) of one call of algorithm m (-1: GEMM). */
static int time_one(const nn_conv2d_geom *g, int m, float *const buf[6], double *fwd, double *bwd)
{
    nn_cpu_conv2d_force_winograd(m);
    void *ws = malloc(nn_cpu_conv2d_workspace(g) + 64);
    if (!ws) return 1;
    double t0 = clock_now();
    nn_cpu_conv2d_forward(g, buf[0], buf[1], buf[2], buf[3], ws);
    double t1 = clock_now();
    nn_cpu_conv2d_backward(g, buf[0], buf[1], buf[3], buf[4], buf[5], NULL, ws);
    double t2 = clock_now();
    free(ws);
    *fwd = t1 - t0;
    *bwd = t2 - t1;
    return 0;
}

static int only = -1; /* --only: -1 all; 0 GEMM; m */

static int run_layer(const layer *L, int rounds)
{
    nn_conv2d_geom g = {.n = L->n, .c = L->c, .h = L->h, .w = L->w, .oc = L->o, .kh = L->k, .kw = L->k, .sh = 1,
                        .sw = 1, .ph = L->k / 2, .pw = L->k / 2, .groups = 1, .oh = L->h, .ow = L->w};
    const size_t nx = (size_t)g.n * g.c * g.h * g.w, nw = (size_t)g.oc * g.c * g.kh * g.kw;
    const size_t ny = (size_t)g.n * g.oc * g.oh * g.ow;
    float *buf[6] = {rand_buf(nx, 1), rand_buf(nw, 2), rand_buf((size_t)g.oc, 3), rand_buf(ny, 4),
                     rand_buf(nx, 5), rand_buf(nw, 6)};
    int algos[MAX_ALGOS], na = 0;
    if (only <= 0) algos[na++] = -1;
    for (int m = 2; m + L->k - 1 <= NN_WINO_NMAX && na < MAX_ALGOS; m++)
        if (only < 0 || only == m) algos[na++] = m;
    if (na == 0) {
        fprintf(stderr, "conv_algos: F(%d) does not exist for %dx%d kernels\n", only, L->k, L->k);
        return 1;
    }
    double *tf = calloc((size_t)na * rounds, sizeof *tf), *tb = calloc((size_t)na * rounds, sizeof *tb);
    int bad = !tf || !tb;
    for (int i = 0; i < 6; i++) bad |= !buf[i];
    for (int a = 0; a < na && !bad; a++) bad |= time_one(&g, algos[a], buf, &tf[0], &tb[0]); /* warm-up */
    for (int r = 0; r < rounds && !bad; r++)
        for (int a = 0; a < na && !bad; a++)
            bad |= time_one(&g, algos[a], buf, &tf[(size_t)a * rounds + r], &tb[(size_t)a * rounds + r]);
    nn_cpu_conv2d_force_winograd(0);
    if (!bad) {
        printf("%-15s %3dx%3dx%2dx%2d -> %3d, %dx%d:", L->name, g.n, g.c, g.h, g.w, g.oc, g.kh, g.kw);
        for (int a = 0; a < na; a++) {
            qsort(tf + (size_t)a * rounds, (size_t)rounds, sizeof *tf, bench_cmp_double);
            qsort(tb + (size_t)a * rounds, (size_t)rounds, sizeof *tb, bench_cmp_double);
            const double f = tf[(size_t)a * rounds + rounds / 2], b = tb[(size_t)a * rounds + rounds / 2];
            if (algos[a] < 0)
                printf("  gemm %6.2f+%6.2f", 1e3 * f, 1e3 * b);
            else
                printf("  F(%d) %6.2f+%6.2f", algos[a], 1e3 * f, 1e3 * b);
        }
        printf("  ms (fwd+bwd)\n");
    }
    free(tf);
    free(tb);
    for (int i = 0; i < 6; i++) free(buf[i]);
    return bad;
}

int main(int argc, char **argv)
{
    int threads = 0, rounds = 7;
    layer custom[16];
    int ncustom = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--cpu-time")) {
            use_cpu_time = 1;
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--layer") && i + 1 < argc && ncustom < 16) {
            layer *L = &custom[ncustom];
            L->name = "layer";
            if (sscanf(argv[++i], "%d,%d,%d,%d,%d,%d", &L->n, &L->c, &L->h, &L->w, &L->o, &L->k) != 6 ||
                L->n < 1 || L->c < 1 || L->h < 1 || L->w < 1 || L->o < 1 || L->k < 1 || L->k % 2 == 0) {
                fprintf(stderr, "conv_algos: --layer wants N,C,H,W,O,K with an odd K, got '%s'\n", argv[i]);
                return 2;
            }
            ncustom++;
        } else {
            fprintf(stderr, "usage: conv_algos [--threads T] [--rounds R] [--only M] [--cpu-time] [--layer N,C,H,W,O,K ...]\n");
            return 2;
        }
    }
    if (rounds < 1) rounds = 1;
    nn_threads_reexec(argv);
    int used = 0;
    if (nn_set_threads(threads, &used) != NN_OK) return 1;
    printf("conv_algos: %d threads, median of %d interleaved rounds, %s\n", used, rounds,
           use_cpu_time ? "CPU time of all threads" : "wall time");
    const layer *list = ncustom ? custom : defaults;
    const int nl = ncustom ? ncustom : (int)(sizeof defaults / sizeof defaults[0]);
    for (int i = 0; i < nl; i++)
        if (run_layer(&list[i], rounds)) return 1;
    return 0;
}
