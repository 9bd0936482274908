/* `convnet bench` output: the terminal tables, the JSON file and the SVG chart
 * (hand-written SVG: a horizontal bar per layer and device, forward dark,
 * backward light). */
#include <cblas.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchmarks/bench.h"

void bench_cpu_name(char *buf, size_t n)
{
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p) {
                p += 1 + (p[1] == ' ');
                p[strcspn(p, "\n")] = '\0';
                snprintf(buf, n, "%s", p);
            }
            break;
        }
    }
    fclose(f);
}

double bench_model_flop(const nn_seq *s, int batch, bool train)
{
    double f = 0;
    bool first = true;
    for (int i = 0; i < s->n; i++) {
        const nn_layer *l = &s->l[i];
        if (l->kind != NN_L_CONV && l->kind != NN_L_LINEAR) continue;
        f += 2.0 * (double)l->macs * batch * (train ? (first ? 2 : 3) : 1);
        first = false;
    }
    return f;
}

void bench_print_ops(const dev_result *dr, int repeats)
{
    printf("\n%s: per op at AlexNet's shapes (median of %d, ms; GEMM ops: GFLOP/s and share of SGEMM;"
           " others: GB/s moved)\n",
           nn_device_name(dr->dev), repeats);
    printf("  %-14s %-12s %-16s %9s %9s %10s %10s %7s %7s\n", "layer", "op", "input", "fwd ms", "bwd ms",
           "fwd rate", "bwd rate", "fwd %", "bwd %");
    double tf = 0, tb = 0;
    for (int i = 0; i < dr->nops; i++) {
        const op_result *r = &dr->ops[i];
        tf += r->fwd_s;
        tb += r->bwd_s;
        if (r->fwd_flop > 0) {
            double gf = r->fwd_flop / r->fwd_s / 1e9, gb = r->bwd_flop / r->bwd_s / 1e9;
            printf("  %-14s %-12s %-16s %9.2f %9.2f %6.1f GF/s %6.1f GF/s %6.0f%% %6.0f%%\n", r->layer,
                   r->op, r->shape, 1e3 * r->fwd_s, 1e3 * r->bwd_s, gf, gb,
                   100 * gf / dr->gemm_gflops, 100 * gb / dr->gemm_gflops);
        } else {
            printf("  %-14s %-12s %-16s %9.2f %9.2f %6.1f GB/s %6.1f GB/s\n", r->layer, r->op,
                   r->shape, 1e3 * r->fwd_s, 1e3 * r->bwd_s, r->fwd_bytes / r->fwd_s / 1e9,
                   r->bwd_bytes / r->bwd_s / 1e9);
        }
    }
    printf("  %-14s %-12s %-16s %9.2f %9.2f   (sum of the ops: %.1f ms)\n", "total", "", "", 1e3 * tf,
           1e3 * tb, 1e3 * (tf + tb));
}

void bench_print_model(const dev_result *drs, int nd, const nn_seq *s, const bench_opts *o)
{
    double ftrain = bench_model_flop(s, o->batch, true), finfer = bench_model_flop(s, o->batch, false);
    char title[128];
    printf("\n%s, batch %d (median of %d steps)\n", bench_model_title(o, title, sizeof title), o->batch, o->repeats);
    printf("  %-34s", "");
    for (int d = 0; d < nd; d++) printf(" %16s", nn_device_name(drs[d].dev));
    printf("\n");
#define ROW(label, fmt, expr)                                                                     \
    do {                                                                                          \
        printf("  %-34s", label);                                                                 \
        for (int d = 0; d < nd; d++) {                                                            \
            const dev_result *dr = &drs[d];                                                       \
            (void)dr;                                                                             \
            printf(" %16" fmt, expr);                                                             \
        }                                                                                         \
        printf("\n");                                                                             \
    } while (0)
    ROW("training step (ms)", ".1f", 1e3 * dr->train.median_s);
    ROW("training images/s", ".2f", o->batch / dr->train.median_s);
    ROW("training GFLOP/s", ".1f", ftrain / dr->train.median_s / 1e9);
    ROW("training share of SGEMM (%)", ".1f", 100 * ftrain / dr->train.median_s / 1e9 / dr->gemm_gflops);
    ROW("inference (ms)", ".1f", 1e3 * dr->infer.median_s);
    ROW("inference images/s", ".2f", o->batch / dr->infer.median_s);
    ROW("inference GFLOP/s", ".1f", finfer / dr->infer.median_s / 1e9);
    ROW("inference share of SGEMM (%)", ".1f", 100 * finfer / dr->infer.median_s / 1e9 / dr->gemm_gflops);
    ROW("first loss (ln classes = 6.91)", ".4f", dr->train.loss);
    ROW("peak resident, training (MiB)", ".0f", dr->train.rss_mb);
    ROW("peak resident, inference (MiB)", ".0f", dr->infer.rss_mb);
    ROW("device allocator peak, train (MiB)", ".0f", dr->train.dev_peak_mb);
    ROW("device allocator peak, infer (MiB)", ".0f", dr->infer.dev_peak_mb);
#undef ROW
}

static cJSON *phase_json(const phase_result *p, int batch, double flop, double gemm)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "median_s", p->median_s);
    cJSON_AddNumberToObject(j, "min_s", p->min_s);
    cJSON_AddNumberToObject(j, "max_s", p->max_s);
    cJSON_AddNumberToObject(j, "images_per_s", batch / p->median_s);
    cJSON_AddNumberToObject(j, "gflops", flop / p->median_s / 1e9);
    cJSON_AddNumberToObject(j, "sgemm_share", flop / p->median_s / 1e9 / gemm);
    cJSON_AddNumberToObject(j, "flop", flop);
    cJSON_AddNumberToObject(j, "first_loss", p->loss);
    cJSON_AddNumberToObject(j, "peak_rss_mb", p->rss_mb);
    cJSON_AddNumberToObject(j, "device_peak_mb", p->dev_peak_mb);
    return j;
}

nn_status bench_write_json(const char *path, const dev_result *drs, int nd, const nn_seq *s,
                            const bench_opts *o)
{
    char cpu[256];
    bench_cpu_name(cpu, sizeof cpu);
    cJSON *root = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(root, "machine");
    cJSON_AddStringToObject(m, "cpu", cpu);
    cJSON_AddNumberToObject(m, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
    cJSON_AddStringToObject(m, "openblas", openblas_get_config());
    cJSON *cfg = cJSON_AddObjectToObject(root, "config");
    cJSON_AddStringToObject(cfg, "model", o->model);
    cJSON_AddNumberToObject(cfg, "width", o->width);
    cJSON_AddNumberToObject(cfg, "fc", o->fc);
    cJSON_AddStringToObject(cfg, "optim", o->optim);
    cJSON_AddNumberToObject(cfg, "size", o->size);
    cJSON_AddNumberToObject(cfg, "batch", o->batch);
    cJSON_AddNumberToObject(cfg, "threads", o->threads);
    cJSON_AddNumberToObject(cfg, "repeats", o->repeats);
    cJSON *sw = cJSON_AddObjectToObject(cfg, "switches"); /* the environment's (core/defaults.h), those set */
#define NN_RECORD(name) \
    if (getenv(name)) cJSON_AddStringToObject(sw, name, getenv(name));
    NN_SWITCHES(NN_RECORD)
#undef NN_RECORD
    cJSON *devs = cJSON_AddObjectToObject(root, "devices");
    for (int d = 0; d < nd; d++) {
        const dev_result *dr = &drs[d];
        cJSON *j = cJSON_AddObjectToObject(devs, nn_device_name(dr->dev));
        cJSON_AddNumberToObject(j, "sgemm_gflops", dr->gemm_gflops);
        cJSON_AddNumberToObject(j, "sgemm_n", dr->gemm_n);
        cJSON *ops = cJSON_AddArrayToObject(j, "ops");
        for (int i = 0; i < dr->nops; i++) {
            const op_result *r = &dr->ops[i];
            cJSON *q = cJSON_CreateObject();
            cJSON_AddStringToObject(q, "layer", r->layer);
            cJSON_AddStringToObject(q, "op", r->op);
            cJSON_AddStringToObject(q, "input", r->shape);
            cJSON_AddNumberToObject(q, "forward_s", r->fwd_s);
            cJSON_AddNumberToObject(q, "backward_s", r->bwd_s);
            cJSON_AddNumberToObject(q, "check_rel_err", r->check_err);
            if (r->fwd_flop > 0) {
                cJSON_AddNumberToObject(q, "forward_gflops", r->fwd_flop / r->fwd_s / 1e9);
                cJSON_AddNumberToObject(q, "backward_gflops", r->bwd_flop / r->bwd_s / 1e9);
                cJSON_AddNumberToObject(q, "forward_sgemm_share", r->fwd_flop / r->fwd_s / 1e9 / dr->gemm_gflops);
                cJSON_AddNumberToObject(q, "backward_sgemm_share", r->bwd_flop / r->bwd_s / 1e9 / dr->gemm_gflops);
            } else {
                cJSON_AddNumberToObject(q, "forward_gbps", r->fwd_bytes / r->fwd_s / 1e9);
                cJSON_AddNumberToObject(q, "backward_gbps", r->bwd_bytes / r->bwd_s / 1e9);
            }
            cJSON_AddItemToArray(ops, q);
        }
        if (dr->train.ran)
            cJSON_AddItemToObject(j, "train", phase_json(&dr->train, o->batch, bench_model_flop(s, o->batch, true), dr->gemm_gflops));
        if (dr->infer.ran)
            cJSON_AddItemToObject(j, "inference", phase_json(&dr->infer, o->batch, bench_model_flop(s, o->batch, false), dr->gemm_gflops));
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return nn_error(NN_E_NOMEM, "bench: out of memory writing JSON");
    FILE *f = fopen(path, "w");
    nn_status st = NN_OK;
    if (!f || fputs(text, f) < 0 || fputc('\n', f) == EOF) st = nn_error(NN_E_IO, "bench: cannot write %s", path);
    if (f && fclose(f) != 0 && !st) st = nn_error(NN_E_IO, "bench: cannot write %s", path);
    free(text);
    return st;
}

nn_status bench_write_svg(const char *path, const dev_result *drs, int nd, const bench_opts *o)
{
    static const char *const colors[] = {"#4472c4", "#ed7d31"};
    static const char *const light[] = {"#9db5e3", "#f6be98"};
    if (nd < 1 || drs[0].nops < 1) return nn_error(NN_E_ARG, "bench: no op timings to chart (--model-only?)");
    const int nops = drs[0].nops, bar = 12, gap = 8, left = 190, width = 640, top = 60;
    double tmax = 0;
    for (int d = 0; d < nd; d++)
        for (int i = 0; i < drs[d].nops; i++) {
            double t = drs[d].ops[i].fwd_s + drs[d].ops[i].bwd_s;
            tmax = t > tmax ? t : tmax;
        }
    if (!(tmax > 0)) tmax = 1;
    const int rowh = nd * bar + gap, height = top + nops * rowh + 40;
    FILE *f = fopen(path, "w");
    if (!f) return nn_error(NN_E_IO, "bench: cannot write %s", path);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"11\">\n",
            left + width + 120, height);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    char title[128];
    fprintf(f, "<text x=\"10\" y=\"20\" font-size=\"14\">%s, batch %d: time per layer, forward (dark) + backward (light), ms (median of %d)</text>\n",
            bench_model_title(o, title, sizeof title), o->batch, o->repeats);
    for (int d = 0; d < nd; d++)
        fprintf(f, "<rect x=\"%d\" y=\"32\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" y=\"42\">%s</text>\n",
                10 + d * 90, colors[d % 2], 26 + d * 90, nn_device_name(drs[d].dev));
    for (int i = 0; i < nops; i++) {
        int y0 = top + i * rowh;
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s %s</text>\n", left - 6, y0 + nd * bar / 2 + 4,
                drs[0].ops[i].layer, drs[0].ops[i].op);
        for (int d = 0; d < nd; d++) {
            if (i >= drs[d].nops) continue;
            const op_result *r = &drs[d].ops[i];
            double wf = width * r->fwd_s / tmax, wb = width * r->bwd_s / tmax;
            int y = y0 + d * bar;
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n", left, y, wf, bar - 1,
                    colors[d % 2]);
            fprintf(f, "<rect x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>\n", left + wf, y, wb,
                    bar - 1, light[d % 2]);
            fprintf(f, "<text x=\"%.1f\" y=\"%d\">%.2f</text>\n", left + wf + wb + 4, y + bar - 2,
                    1e3 * (r->fwd_s + r->bwd_s));
        }
    }
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", left, top - 4, left,
            top + nops * rowh);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) return nn_error(NN_E_IO, "bench: cannot write %s", path);
    return NN_OK;
}
