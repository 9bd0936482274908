/* curves.svg: the epoch rows of metrics.jsonl as two panels (loss, top-1
 * accuracy against epochs; train solid, test dashed), plain SVG text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/atomic.h"
#include "models/metrics.h"

#define W 960
#define H 400
#define PANEL_W (W / 2)
#define ML 64 /* margins of a panel's plot area: left, right, top, bottom */
#define MR 20
#define MT 56
#define MB 48

static const char *const colour[2] = {"#1f77b4", "#d62728"}; /* train, test */
static const char *const label[2] = {"train", "test"};

/* One panel's series: value[split][epoch], NAN where absent. */
typedef struct series {
    int epochs; /* largest epoch + 1 */
    double *v[2];
} series;

typedef struct plot {
    const nn_metrics_row *rows;
    int n;
    const char *title;
} plot;

/* A round step giving about `ticks` intervals over range. */
static double nice_step(double range, int ticks)
{
    double raw = range / ticks, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

static void xml_text(FILE *fp, const char *s)
{
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", fp);
        else if (*s == '>') fputs("&gt;", fp);
        else if (*s == '&') fputs("&amp;", fp);
        else if (*s == '"') fputs("&quot;", fp);
        else if ((unsigned char)*s >= 0x20 || *s == '\t') fputc(*s, fp); /* control bytes are not XML */
    }
}

/* Fills s from the epoch rows (later rows win); field 0 loss, 1 top-1. */
static bool collect(const plot *p, int field, series *s)
{
    s->epochs = 1;
    for (int i = 0; i < p->n; i++)
        if (p->rows[i].kind == NN_METRICS_EPOCH && p->rows[i].epoch >= 0 && p->rows[i].epoch < 1000000 &&
            p->rows[i].epoch + 1 > s->epochs)
            s->epochs = p->rows[i].epoch + 1;
    for (int k = 0; k < 2; k++) {
        s->v[k] = malloc((size_t)s->epochs * sizeof(double));
        if (!s->v[k]) return false;
        for (int e = 0; e < s->epochs; e++) s->v[k][e] = NAN;
    }
    for (int i = 0; i < p->n; i++) {
        const nn_metrics_row *r = &p->rows[i];
        if (r->kind != NN_METRICS_EPOCH || r->epoch < 0 || r->epoch >= s->epochs) continue;
        s->v[r->split == NN_METRICS_TEST][r->epoch] = field ? r->top1 : r->loss;
    }
    return true;
}

static double series_max(const series *s)
{
    double m = 0;
    for (int k = 0; k < 2; k++)
        for (int e = 0; e < s->epochs; e++)
            if (isfinite(s->v[k][e]) && s->v[k][e] > m) m = s->v[k][e];
    return m;
}

typedef struct frame {
    double x0, y0, w, h;   /* plot area in pixels */
    double xmax, ymax;     /* data range: x in [0, xmax], y in [0, ymax] */
} frame;

static double px(const frame *f, double x) { return f->x0 + f->w * x / f->xmax; }
static double py(const frame *f, double y) { return f->y0 + f->h - f->h * y / f->ymax; }

static void axes(FILE *fp, const frame *f, const char *name, const char *xlabel)
{
    fprintf(fp, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#444\"/>\n", f->x0,
            f->y0, f->w, f->h);
    fprintf(fp, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"15\">%s</text>\n", f->x0 + f->w / 2,
            f->y0 - 12, name);
    double xs = fmax(1.0, round(nice_step(f->xmax, 8))), ys = nice_step(f->ymax, 5);
    for (double x = 0; x <= f->xmax + 1e-9; x += xs)
        fprintf(fp, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%g</text>\n",
                px(f, x), f->y0 + f->h, px(f, x), f->y0 + f->h + 5, px(f, x), f->y0 + f->h + 18, x);
    for (double y = 0; y <= f->ymax * (1 + 1e-9); y += ys)
        fprintf(fp, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%g</text>\n",
                f->x0, py(f, y), f->x0 + f->w, py(f, y), f->x0 - 6, py(f, y) + 4, y);
    fprintf(fp, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">%s</text>\n", f->x0 + f->w / 2,
            f->y0 + f->h + 36, xlabel);
}

static void lines(FILE *fp, const frame *f, const series *s)
{
    for (int k = 0; k < 2; k++) {
        fprintf(fp, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", colour[k],
                k ? " stroke-dasharray=\"6 4\"" : "");
        for (int e = 0; e < s->epochs; e++)
            if (isfinite(s->v[k][e])) fprintf(fp, "%.1f,%.1f ", px(f, e), py(f, s->v[k][e]));
        fprintf(fp, "\"/>\n");
        for (int e = 0; e < s->epochs; e++)
            if (isfinite(s->v[k][e]))
                fprintf(fp, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", px(f, e), py(f, s->v[k][e]),
                        colour[k]);
    }
    for (int k = 0; k < 2; k++) { /* the legend, top right */
        double lx = f->x0 + f->w - 90, ly = f->y0 + 16 + 18 * k;
        fprintf(fp, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>"
                "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">%s</text>\n",
                lx, ly, lx + 28, ly, colour[k], k ? " stroke-dasharray=\"6 4\"" : "", lx + 34, ly + 4, label[k]);
    }
}

static nn_status panel(FILE *fp, const plot *p, int field, int left)
{
    series s = {0};
    bool ok = collect(p, field, &s);
    if (ok) {
        double top = field ? 1.0 : series_max(&s);
        if (!(top > 0)) top = 1.0;
        frame f = {left + ML, MT, PANEL_W - ML - MR, H - MT - MB, s.epochs > 1 ? s.epochs - 1 : 1, 0};
        f.ymax = field ? 1.0 : ceil(top / nice_step(top, 5)) * nice_step(top, 5);
        axes(fp, &f, field ? "top-1 accuracy" : "loss (cross-entropy)", "epoch");
        lines(fp, &f, &s);
    }
    free(s.v[0]);
    free(s.v[1]);
    return ok ? NN_OK : nn_error(NN_E_NOMEM, "curves: out of memory");
}

static nn_status write_svg(FILE *fp, const char *path, void *user)
{
    const plot *p = user;
    fprintf(fp, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                "font-family=\"sans-serif\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H, W, H);
    fprintf(fp, "<text x=\"%d\" y=\"20\" text-anchor=\"middle\" font-size=\"13\" fill=\"#555\">", W / 2);
    xml_text(fp, p->title ? p->title : "training curves");
    fprintf(fp, "</text>\n");
    NN_TRY(panel(fp, p, 0, 0));
    NN_TRY(panel(fp, p, 1, PANEL_W));
    fprintf(fp, "</svg>\n");
    return ferror(fp) ? nn_error(NN_E_IO, "curves: cannot write %s", path) : NN_OK;
}

nn_status nn_metrics_svg(const nn_metrics_row *rows, int n, const char *title, const char *path)
{
    plot p = {rows, n, title};
    return nn_write_atomic(path, write_svg, &p);
}
