/* metrics.jsonl: formatting, appending and reading lines (see metrics.h); the
 * picture is drawn in curves.c. */
#include "models/metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kinds[2] = {"epoch", "step"};
static const char *const splits[2] = {"train", "test"};

nn_metrics_row nn_metrics_empty(nn_metrics_kind kind, nn_metrics_split split, int epoch, int64_t step)
{
    nn_metrics_row r = {.kind = kind, .split = split, .epoch = epoch, .step = step};
    r.loss = r.top1 = r.top5 = r.lr = r.images_per_s = r.elapsed_s = NAN;
    return r;
}

/* A JSON number, or null: JSON has no NaN or Infinity. */
static const char *num(double v, char *b, size_t n)
{
    if (!isfinite(v)) return "null";
    snprintf(b, n, "%.9g", v);
    return b;
}

int nn_metrics_format(const nn_metrics_row *r, char *buf, size_t n)
{
    char a[6][32];
    return snprintf(buf, n,
                    "{\"kind\":\"%s\",\"split\":\"%s\",\"epoch\":%d,\"step\":%lld,\"loss\":%s,\"top1\":%s,\"top5\":%s,"
                    "\"lr\":%s,\"images_per_s\":%s,\"elapsed_s\":%s}\n",
                    kinds[r->kind == NN_METRICS_STEP], splits[r->split == NN_METRICS_TEST], r->epoch,
                    (long long)r->step, num(r->loss, a[0], 32), num(r->top1, a[1], 32), num(r->top5, a[2], 32),
                    num(r->lr, a[3], 32), num(r->images_per_s, a[4], 32), num(r->elapsed_s, a[5], 32));
}

/* True when the file is non-empty and its last byte is not a newline. */
static bool ends_mid_line(FILE *fp)
{
    if (fseek(fp, -1, SEEK_END) != 0) return false; /* empty */
    int c = fgetc(fp);
    return c != EOF && c != '\n';
}

nn_status nn_metrics_append(const char *path, const nn_metrics_row *r)
{
    char line[NN_METRICS_LINE_MAX];
    int len = nn_metrics_format(r, line, sizeof line);
    FILE *fp = fopen(path, "a+");
    if (!fp) return nn_error(NN_E_IO, "metrics: cannot open %s: %s", path, strerror(errno));
    bool cut = ends_mid_line(fp);
    fseek(fp, 0, SEEK_END);
    bool ok = (!cut || fputc('\n', fp) != EOF) && fwrite(line, 1, (size_t)len, fp) == (size_t)len && fflush(fp) == 0;
    ok = (fclose(fp) == 0) && ok;
    return ok ? NN_OK : nn_error(NN_E_IO, "metrics: cannot write %s: %s", path, strerror(errno));
}

static double get_num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static int pick(const cJSON *o, const char *k, const char *const names[2])
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v)) return -1;
    for (int i = 0; i < 2; i++)
        if (strcmp(v->valuestring, names[i]) == 0) return i;
    return -1;
}

/* One line into r; false if it is not a metrics object. */
static bool parse_line(const char *line, nn_metrics_row *r)
{
    cJSON *o = cJSON_Parse(line);
    int kind = o ? pick(o, "kind", kinds) : -1, split = o ? pick(o, "split", splits) : -1;
    double e = o ? get_num(o, "epoch") : NAN, s = o ? get_num(o, "step") : NAN;
    bool ok = cJSON_IsObject(o) && kind >= 0 && split >= 0;
    if (ok) {
        *r = nn_metrics_empty((nn_metrics_kind)kind, (nn_metrics_split)split,
                              isfinite(e) && fabs(e) < 1e9 ? (int)e : 0, isfinite(s) && fabs(s) < 9e18 ? (int64_t)s : 0);
        r->loss = get_num(o, "loss");
        r->top1 = get_num(o, "top1");
        r->top5 = get_num(o, "top5");
        r->lr = get_num(o, "lr");
        r->images_per_s = get_num(o, "images_per_s");
        r->elapsed_s = get_num(o, "elapsed_s");
    }
    cJSON_Delete(o);
    return ok;
}

static nn_status read_lines(FILE *fp, const char *path, nn_metrics_row **rows, int *n, int *bad)
{
    char *line = NULL;
    size_t cap = 0;
    int have = 0;
    nn_status s = NN_OK;
    while (getline(&line, &cap, fp) != -1 && s == NN_OK) {
        if (line[strspn(line, " \t\r\n")] == '\0') continue; /* blank */
        if (*n == have) {
            int grow = have ? 2 * have : 64;
            nn_metrics_row *r = realloc(*rows, (size_t)grow * sizeof *r);
            if (!r) s = nn_error(NN_E_NOMEM, "metrics: out of memory reading %s", path);
            else {
                *rows = r;
                have = grow;
            }
        }
        if (s == NN_OK && parse_line(line, &(*rows)[*n])) (*n)++;
        else if (s == NN_OK && bad) (*bad)++;
    }
    free(line);
    if (s == NN_OK && ferror(fp)) s = nn_error(NN_E_IO, "metrics: cannot read %s", path);
    return s;
}

nn_status nn_metrics_read(const char *path, nn_metrics_row **rows, int *n, int *bad)
{
    *rows = NULL;
    *n = 0;
    if (bad) *bad = 0;
    FILE *fp = fopen(path, "r");
    if (!fp) return nn_error(NN_E_IO, "metrics: cannot open %s: %s", path, strerror(errno));
    nn_status s = read_lines(fp, path, rows, n, bad);
    fclose(fp);
    if (s != NN_OK) {
        free(*rows);
        *rows = NULL;
        *n = 0;
    }
    return s;
}

nn_status nn_metrics_plot(const char *dir, int *bad)
{
    char in[4096], out[4096];
    snprintf(in, sizeof in, "%s/metrics.jsonl", dir);
    snprintf(out, sizeof out, "%s/curves.svg", dir);
    nn_metrics_row *rows = NULL;
    int n = 0, skipped = 0;
    NN_TRY(nn_metrics_read(in, &rows, &n, &skipped));
    if (bad) *bad = skipped;
    /* nothing to draw: the curves a training run drew stay as they were */
    nn_status s = n ? nn_metrics_svg(rows, n, dir, out)
                    : nn_error(NN_E_FORMAT, "metrics: %s has no metrics lines (%d that are not); %s left as it was",
                               in, skipped, out);
    free(rows);
    return s;
}
