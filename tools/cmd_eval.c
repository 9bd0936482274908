/* Two of the commands that use a trained model (predict: cmd_predict.c), from
 * a convnet checkpoint or a weights-only file (models/weights.h):
 *   eval     accuracy (top-1, top-5, per class) and the confusion matrix on the
 *            Fashion-MNIST test set or an image folder's val/;
 *   filters  the first conv layer's kernels (O, C, K, K) as a PNG grid, like
 *            the paper's figure of the 96 conv1 kernels.
 * Library errors print "convnet CMD: <message>" and exit 1; outputs are
 * written atomically, so nothing is left behind on error. */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/cli.h"
#include "tools/data.h"
#include "core/backend.h"
#include "io/dataset.h"
#include "io/png.h"
#include "tools/model_cli.h"
#include "models/checkpoint.h"
#include "models/evaluate.h"

/* ---- eval ---------------------------------------------------------------- */

static void progress(int done, int total, void *user)
{
    (void)user;
    fprintf(stderr, "\reval: batch %d/%d", done, total);
    if (done == total) fprintf(stderr, "\n");
}

static void print_report(const cli_data *d, const nn_eval_result *res, const int *conf)
{
    int K = d->classes;
    printf("top-1 accuracy: %.4f (%d/%d), error %.4f\n", (double)res->top1 / res->n, res->top1, res->n,
           1.0 - (double)res->top1 / res->n);
    printf("top-5 accuracy: %.4f (%d/%d), error %.4f\n", (double)res->top5 / res->n, res->top5, res->n,
           1.0 - (double)res->top5 / res->n);
    printf("mean cross-entropy: %.4f\n\nper-class accuracy:\n", res->loss);
    for (int t = 0; t < K; t++) {
        int n = 0;
        for (int p = 0; p < K; p++) n += conf[t * K + p];
        printf("  %d %-12s %.4f (%d/%d)\n", t, d->class_names[t], n ? (double)conf[t * K + t] / n : 0.0,
               conf[t * K + t], n);
    }
    if (K > 40) return; /* a matrix that wide helps nobody on a terminal */
    printf("\nconfusion matrix (rows: true class, columns: predicted class, numbered as the rows):\n");
    printf("  %-14s", "");
    for (int p = 0; p < K; p++) printf(" %5d", p);
    printf("\n");
    for (int t = 0; t < K; t++) {
        printf("  %d %-12s", t, d->class_names[t]);
        for (int p = 0; p < K; p++) printf(" %5d", conf[t * K + p]);
        printf("\n");
    }
}

typedef struct eval_opts {
    const char *ckpt, *data, *device;
    int batch, size;
    float mean, std;
    bool ten_crop;
} eval_opts;

/* One evaluation: what the steps of cmd_eval hand each other. */
typedef struct eval_run {
    eval_opts o;
    nn_device dev;
    nn_model_config cfg;
    nn_train_state st; /* the normalization and class names, when have_stats */
    bool have_stats;
    cli_data d;
    nn_seq seq;
    int *conf; /* (classes, classes): true class, predicted class */
} eval_run;

/* Flags into r->o; CLI_GO_ON, or the exit status (0 for --help, 2 for a usage error). */
static int eval_parse_opts(eval_run *r, int argc, char **argv)
{
    eval_opts o = {.device = "cpu", .batch = 128};
    const cli_opt opts[] = {
        {"checkpoint", CLI_STR, &o.ckpt, "FILE", "the checkpoint to evaluate (required)"},
        {"data", CLI_STR, &o.data, "DIR", "Fashion-MNIST folder (default " NN_FMNIST_DEFAULT_DIR "), or an image folder with train/ and val/"},
        {"ten-crop", CLI_BOOL, &o.ten_crop, NULL, "image folders: average the softmax over the paper's 10 views"},
        {"device", CLI_STR, &o.device, "D", "cpu (default) or cuda"},
        {"batch", CLI_INT, &o.batch, "B", "images per forward pass (default 128)"},
        {"size", CLI_INT, &o.size, "S", "weights-only files: the input size, when several fit fc6"},
        {"mean", CLI_FLOAT, &o.mean, "M", "Fashion-MNIST: normalize (p/255 - M) / SD instead of the checkpoint's"},
        {"std", CLI_FLOAT, &o.std, "SD", "(with --mean; a weights-only file: default the training set's)"},
    };
    int rc = cli_parse("eval", "--checkpoint FILE [--data DIR] [--ten-crop] [--device D] [--batch B]",
                       "Evaluates a checkpoint on the Fashion-MNIST test set (10,000 images, resized to\n"
                       "the model's input size and normalized with the checkpoint's training mean and\n"
                       "std), or on DIR/val of an image folder (short side resized, center crop, the\n"
                       "training set's mean image; --ten-crop: four corners, center and their reflections,\n"
                       "softmax averaged): top-1 and top-5 accuracy and error, per-class accuracy and the\n"
                       "confusion matrix.",
                       opts, (int)(sizeof opts / sizeof opts[0]), argc, argv, NULL, 0, NULL);
    r->o = o;
    if (rc != CLI_OK) return rc == CLI_HELP ? 0 : rc;
    return CLI_GO_ON;
}

static int eval_validate(eval_run *r)
{
    const eval_opts *o = &r->o;
    if (!o->ckpt) return cli_fail("eval", "--checkpoint is required");
    if (o->batch < 1 || o->batch > 65536) return cli_fail("eval", "--batch must be in [1, 65536], got %d", o->batch);
    if (o->ten_crop && !cli_data_is_folder(o->data))
        return cli_fail("eval", "--ten-crop needs an image folder (--data DIR with DIR/train and DIR/val)");
    int rc = cli_parse_device("eval", o->device, &r->dev);
    if (rc != CLI_OK) return rc;
    if (o->std < 0 || (o->mean != 0 && !(o->std > 0))) return cli_fail("eval", "--mean needs --std > 0");
    return CLI_GO_ON;
}

/* The model's configuration, and the normalization: the checkpoint's, or
 * --mean and --std over it. */
static int eval_read_model(eval_run *r)
{
    const eval_opts *o = &r->o;
    nn_weights_hints hints = {.in_size = o->size};
    bool only;
    if (cli_model_config("eval", o->ckpt, &hints, &r->cfg, &only) != NN_OK) return cli_lib_fail("eval");
    if (!only && o->size && o->size != r->cfg.in_size)
        return cli_fail("eval", "--size %d: %s is a checkpoint for input size %d", o->size, o->ckpt, r->cfg.in_size);
    r->have_stats = !only && nn_checkpoint_read_config(o->ckpt, &r->cfg, &r->st) == NN_OK;
    if (o->std > 0) {
        r->st.mean = o->mean;
        r->st.std = o->std;
        r->have_stats = true;
    }
    return CLI_GO_ON;
}

static int eval_open_data(eval_run *r)
{
    const eval_opts *o = &r->o;
    const nn_train_state *st = &r->st;
    bool stats = r->have_stats;
    cli_data_opts dopt = {.dir = o->data, .batch = o->batch, .eval_batch = o->batch, .size = r->cfg.in_size,
                          .ten_crop = o->ten_crop, .mean = stats ? st->mean : 0, .std = stats ? st->std : 0,
                          .classes = stats && st->classes[0] ? st->classes : NULL};
    return cli_data_open(&r->d, &dopt) == NN_OK ? CLI_GO_ON : cli_lib_fail("eval");
}

/* The model takes the data set's images and has its classes. */
static int eval_check_data(const eval_run *r)
{
    const nn_model_config *cfg = &r->cfg;
    if (cfg->in_channels != r->d.channels) {
        fprintf(stderr, "convnet eval: %s: the model takes %d input channels, the data set has %d\n", r->o.ckpt,
                cfg->in_channels, r->d.channels);
        return 1;
    }
    if (cfg->classes != r->d.classes) {
        fprintf(stderr, "convnet eval: %s: the model has %d classes, the data set %d\n", r->o.ckpt, cfg->classes,
                r->d.classes);
        return 1;
    }
    if (!r->have_stats && !r->d.folder)
        fprintf(stderr, "convnet eval: %s holds no normalization: normalizing with the training set's mean %.4f "
                        "and std %.4f\n", r->o.ckpt, (double)r->d.mean, (double)r->d.std);
    return CLI_GO_ON;
}

static int eval_build_model(eval_run *r)
{
    if (nn_model_build_load(r->o.ckpt, &r->cfg, r->dev, &r->seq) != NN_OK) return cli_lib_fail("eval");
    r->conf = calloc((size_t)r->d.classes * r->d.classes, sizeof *r->conf);
    if (!r->conf) {
        nn_error(NN_E_NOMEM, "out of memory");
        return cli_lib_fail("eval");
    }
    return CLI_GO_ON;
}

static void eval_print_header(const eval_run *r)
{
    const eval_opts *o = &r->o;
    const nn_model_config *cfg = &r->cfg;
    printf("checkpoint: %s (%s, input %dx%dx%d, %d classes)\n", o->ckpt, cfg->arch, cfg->in_channels,
           cfg->in_size, cfg->in_size, cfg->classes);
    if (r->d.folder)
        printf("validation set: %d images from %s/val, %s, on %s\n", r->d.ntest, o->data,
               o->ten_crop ? "10 views each (corners, center, reflections)" : "center crops", nn_device_name(r->dev));
    else
        printf("test set: %d images from %s, normalized with mean %.4f std %.4f, on %s\n", r->d.ntest,
               o->data ? o->data : NN_FMNIST_DEFAULT_DIR, (double)r->d.mean, (double)r->d.std,
               nn_device_name(r->dev));
    fflush(stdout);
}

static int eval_run_report(eval_run *r)
{
    nn_eval_result res;
    /* progress only where someone watches: not in logs and test output */
    if (nn_evaluate(&r->seq, r->dev, &r->d.test_src, r->d.classes, r->conf, &res, isatty(2) ? progress : NULL,
                    NULL) != NN_OK) {
        if (isatty(2)) fprintf(stderr, "\n");
        return cli_lib_fail("eval");
    }
    print_report(&r->d, &res, r->conf);
    return CLI_GO_ON;
}

int cmd_eval(int argc, char **argv)
{
    static eval_run run; /* a train state of 16 KB of class names: not on the stack */
    eval_run *r = &run;
    memset(r, 0, sizeof *r);
    int rc = eval_parse_opts(r, argc, argv);
    if (rc == CLI_GO_ON) rc = eval_validate(r);
    if (rc == CLI_GO_ON) rc = eval_read_model(r);
    if (rc != CLI_GO_ON) return rc;
    rc = eval_open_data(r);
    if (rc != CLI_GO_ON) return rc;
    rc = eval_check_data(r);
    if (rc == CLI_GO_ON) rc = eval_build_model(r);
    if (rc == CLI_GO_ON) {
        eval_print_header(r);
        rc = eval_run_report(r);
    }
    free(r->conf);
    nn_seq_free(&r->seq);
    cli_data_close(&r->d);
    return rc == CLI_GO_ON ? 0 : rc;
}

/* ---- filters ------------------------------------------------------------- */

#define FILTER_COLS 12

/* Flags into *ckpt, *outp, *scale; CLI_GO_ON, or the exit status. */
static int filters_parse_opts(int argc, char **argv, const char **ckpt, const char **outp, int *scale)
{
    const cli_opt opts[] = {
        {"checkpoint", CLI_STR, ckpt, "FILE", "the model (required)"},
        {"out", CLI_STR, outp, "FILE.png", "the picture to write (required)"},
        {"scale", CLI_INT, scale, "K", "kernel pixels are K x K screen pixels (default 4, 1..64)"},
    };
    int r = cli_parse("filters", "--checkpoint FILE --out FILE.png [--scale K]",
                      "Draws the first convolution layer's kernels as a grid like the paper's figure of\n"
                      "the 96 conv1 kernels: up to 12 per row, separated by 1-pixel white lines; each\n"
                      "kernel pixel enlarged to K x K (nearest neighbour). Each kernel is stretched to\n"
                      "[0, 255] over its own minimum and maximum (taken over all its input channels,\n"
                      "so an RGB kernel keeps its colour balance); a constant kernel is mid-gray.\n"
                      "3 input channels: colour; otherwise one gray tile per kernel and input channel.",
                      opts, (int)(sizeof opts / sizeof opts[0]), argc, argv, NULL, 0, NULL);
    if (r == CLI_HELP) return 0;
    if (r != CLI_OK) return r;
    if (!*ckpt || !*outp) return cli_fail("filters", "--checkpoint and --out are required");
    if (*scale < 1 || *scale > 64) return cli_fail("filters", "--scale must be in [1, 64], got %d", *scale);
    if (cli_same_file(*ckpt, *outp))
        return cli_fail("filters", "--out '%s' is the checkpoint: refusing to overwrite it", *outp);
    return CLI_GO_ON;
}

/* The picture of kernels (O, C, KH, KW): a tile per kernel (3 input channels:
 * colour) or per kernel and input channel (gray), in rows of FILTER_COLS, a
 * 1-pixel white line around each. */
typedef struct filter_grid {
    int O, C, KH, KW, scale;
    bool rgb;
    int tiles, per, cols; /* per: tiles per kernel */
    long long W, H;
} filter_grid;

static filter_grid filter_layout(const nn_tensor *wt, int scale)
{
    filter_grid g = {.O = wt->shape[0], .C = wt->shape[1], .KH = wt->shape[2], .KW = wt->shape[3], .scale = scale};
    g.rgb = g.C == 3;
    g.tiles = g.rgb ? g.O : g.O * g.C;
    g.per = g.rgb ? 1 : g.C;
    g.cols = g.tiles < FILTER_COLS ? g.tiles : FILTER_COLS;
    int rows = (g.tiles + g.cols - 1) / g.cols;
    g.W = (long long)g.cols * g.KW * scale + g.cols + 1;
    g.H = (long long)rows * g.KH * scale + rows + 1;
    return g;
}

/* Tile t of the picture img (W x H x 3): its kernel stretched over its own
 * minimum and maximum, each kernel pixel scale x scale. */
static void draw_tile(uint8_t *img, const filter_grid *g, const float *w, int t)
{
    const int KW = g->KW, scale = g->scale;
    size_t ksz = (size_t)g->C * g->KH * KW, plane = (size_t)g->KH * KW;
    int o = t / g->per, c0 = g->rgb ? 0 : t % g->per;
    const float *k = w + (size_t)o * ksz;
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (size_t i = 0; i < ksz; i++) {
        lo = k[i] < lo ? k[i] : lo;
        hi = k[i] > hi ? k[i] : hi;
    }
    float sc = hi > lo ? 255.0f / (hi - lo) : 0.0f;
    long long x0 = 1 + (long long)(t % g->cols) * (KW * scale + 1);
    long long y0 = 1 + (long long)(t / g->cols) * (g->KH * scale + 1);
    for (int y = 0; y < g->KH * scale; y++)
        for (int x = 0; x < KW * scale; x++) {
            uint8_t *px = img + ((size_t)(y0 + y) * g->W + (size_t)(x0 + x)) * 3;
            size_t at = (size_t)(y / scale) * KW + (size_t)(x / scale);
            for (int ch = 0; ch < 3; ch++) {
                float v = k[(size_t)(g->rgb ? ch : c0) * plane + at];
                px[ch] = hi > lo ? (uint8_t)((v - lo) * sc + 0.5f) : 128;
            }
        }
}

/* The kernels of conv as a PNG at outp (written atomically). */
static nn_status draw_filters(const nn_layer *conv, int scale, const char *outp)
{
    filter_grid g = filter_layout(conv->w, scale);
    if (g.W > NN_PNG_MAX_SIDE || g.H > NN_PNG_MAX_SIDE)
        return nn_error(NN_E_ARG, "%s: a %lldx%lld picture is too large (at most %d a side): use a smaller --scale",
                        outp, g.W, g.H, NN_PNG_MAX_SIDE);
    uint8_t *img = malloc((size_t)g.W * g.H * 3);
    if (!img) return nn_error(NN_E_NOMEM, "filters: out of memory for a %lldx%lld picture", g.W, g.H);
    memset(img, 255, (size_t)g.W * g.H * 3);
    for (int t = 0; t < g.tiles; t++) draw_tile(img, &g, nn_f32(conv->w), t);
    nn_status s = nn_png_write_rgb(outp, (int)g.W, (int)g.H, img);
    free(img);
    if (s == NN_OK)
        printf("wrote %s: %d kernels of %s (%dx%dx%d), %lldx%lld pixels\n", outp, g.O, conv->name, g.C, g.KH, g.KW,
               g.W, g.H);
    return s;
}

int cmd_filters(int argc, char **argv)
{
    const char *ckpt = NULL, *outp = NULL;
    int scale = 4;
    int rc = filters_parse_opts(argc, argv, &ckpt, &outp, &scale);
    if (rc != CLI_GO_ON) return rc;
    nn_model_config cfg;
    nn_seq seq;
    if (cli_model_load("filters", ckpt, NULL, NN_CPU, &cfg, &seq) != NN_OK) return cli_lib_fail("filters");
    const nn_layer *conv = NULL;
    for (int i = 0; i < seq.n && !conv; i++)
        if (seq.l[i].kind == NN_L_CONV) conv = &seq.l[i];
    nn_status s = conv ? draw_filters(conv, scale, outp)
                       : nn_error(NN_E_ARG, "%s: the model has no convolution layer", ckpt);
    nn_seq_free(&seq);
    return s == NN_OK ? 0 : cli_lib_fail("filters");
}
