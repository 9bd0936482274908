/* Throughput of the image-folder pipeline alone (no model): decode + resize
 * to 256 + center 256 + random 224 crop + flip + PCA lighting + mean
 * subtraction, on a pool of worker threads, as images/s at the consumer.
 *
 *   pipeline_bench [--threads T] [--batch B] [--epochs E] [--dir DIR]
 *
 * Without --dir it writes ImageNet-like JPEGs (500 x 375 and 375 x 500,
 * quality 90, textured) to a temp folder first. Validates one batch (shape,
 * finite values, labels in range) before timing; reports the median epoch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "benchmarks/bench_util.h"
#include "core/rng.h"
#include "io/imagefolder.h"
#include "io/jpeg.h"

static int make_data(char *dir, size_t n, int images)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, n, "%s/convnet_pipebench_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir)) return -1;
    char p[4096];
    snprintf(p, sizeof p, "%s/train", dir);
    mkdir(p, 0777);
    nn_rng r = nn_rng_make(1);
    uint8_t *px = malloc(500 * 375 * 3);
    if (!px) return -1;
    for (int i = 0; i < images; i++) {
        int c = i % 4, w = i % 3 ? 500 : 375, h = i % 3 ? 375 : 500;
        snprintf(p, sizeof p, "%s/train/class%d", dir, c);
        mkdir(p, 0777);
        /* smooth colour fields plus noise: compresses like a photograph (~100 KB) */
        float fx = 0.01f + 0.05f * nn_rng_uniform1(&r), fy = 0.01f + 0.05f * nn_rng_uniform1(&r);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int k = 0; k < 3; k++) {
                    float v = 128 + 60 * sinf(fx * (float)x * (float)(k + 1)) * cosf(fy * (float)y) +
                              (float)(nn_rng_below(&r, 24)) - 12 + (float)(c * 20 * (k == c % 3));
                    px[((size_t)y * w + x) * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
        snprintf(p, sizeof p, "%s/train/class%d/img%04d.jpg", dir, c, i);
        if (nn_jpeg_write(p, w, h, 3, px, 90, 0) != NN_OK) {
            fprintf(stderr, "pipeline_bench: %s\n", nn_errmsg());
            free(px);
            return -1;
        }
    }
    free(px);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = 2, batch = 64, epochs = 3, images = 512;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--images") && i + 1 < argc) images = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else {
            fprintf(stderr, "usage: pipeline_bench [--threads T] [--batch B] [--epochs E] [--images N] [--dir DIR]\n");
            return 2;
        }
    }
    char tmp[512] = "";
    if (!dir) {
        double t0 = bench_now();
        if (make_data(tmp, sizeof tmp, images) != 0) return 1;
        dir = tmp;
        printf("wrote %d JPEGs (500x375 / 375x500, q90) to %s in %.1f s\n", images, dir, bench_now() - t0);
    }
    nn_imgf_config cfg = {.threads = threads, .report = stderr};
    nn_imgf *ds = NULL;
    double t0 = bench_now();
    if (nn_imgf_open(&ds, dir, "train", NULL, 0, &cfg) != NN_OK) {
        fprintf(stderr, "pipeline_bench: %s\n", nn_errmsg());
        return 1;
    }
    double t_open = bench_now() - t0;
    int n = nn_imgf_count(ds);
    printf("statistics pass over %d images on %d threads: %.2f s (%.0f images/s)\n", n, threads, t_open, n / t_open);
    nn_imgf_loader_config lc = {.mode = NN_IMGF_TRAIN, .batch = batch, .shuffle = true, .drop_last = true,
                                .lighting_std = NN_IMGF_LIGHTING_STD, .threads = threads, .seed = 1};
    nn_imgf_loader *l = NULL;
    if (nn_imgf_loader_new(&l, ds, NULL, &lc) != NN_OK) {
        fprintf(stderr, "pipeline_bench: %s\n", nn_errmsg());
        return 1;
    }
    /* validate one batch */
    const float *x;
    const int32_t *y;
    int m;
    nn_imgf_loader_start(l, 0, 0);
    nn_imgf_loader_next(l, &x, &y, &m);
    size_t per = (size_t)3 * NN_IMGF_CROP * NN_IMGF_CROP;
    double s = 0, s2 = 0;
    for (size_t i = 0; i < (size_t)m * per; i++) {
        if (!isfinite(x[i])) {
            fprintf(stderr, "pipeline_bench: non-finite value at %zu\n", i);
            return 1;
        }
        s += x[i], s2 += (double)x[i] * x[i];
    }
    for (int i = 0; i < m; i++)
        if (y[i] < 0 || y[i] >= nn_imgf_classes(ds)) return fprintf(stderr, "pipeline_bench: bad label\n"), 1;
    double mean = s / ((double)m * per);
    printf("validated: batch %d x 3 x %d x %d, mean %.3f, std %.3f (normalized)\n", m, NN_IMGF_CROP, NN_IMGF_CROP,
           mean, sqrt(s2 / ((double)m * per) - mean * mean));
    double *rate = malloc((size_t)epochs * sizeof *rate), cpu = 0;
    long long total = 0;
    for (int e = 0; e < epochs; e++) {
        double t = bench_now(), c0 = bench_cpu_time();
        int got = 0;
        nn_imgf_loader_start(l, e + 1, 0);
        for (;;) {
            nn_imgf_loader_next(l, &x, &y, &m);
            if (!m) break;
            got += m;
        }
        rate[e] = got / (bench_now() - t);
        double c = bench_cpu_time() - c0;
        cpu += c;
        total += got;
        printf("epoch %d: %d images, %.0f images/s, %.2f ms CPU per image\n", e + 1, got, rate[e], 1e3 * c / got);
    }
    qsort(rate, (size_t)epochs, sizeof *rate, bench_cmp_double);
    printf("pipeline: median %.0f images/s with %d worker threads (batch %d, 256 -> 224, flips, lighting)\n",
           rate[epochs / 2], threads, batch);
    printf("CPU cost: %.2f ms per image over all threads: %.0f images/s per fully available core\n",
           1e3 * cpu / (double)total, (double)total / cpu);
    free(rate);
    nn_imgf_loader_free(l);
    nn_imgf_free(ds);
    if (*tmp) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "pipeline_bench: could not remove %s\n", tmp);
    }
    return 0;
}
