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

int cmd_eval(int argc, char **argv)
{
    const char *ckpt = NULL, *data = NULL, *device = "cpu";
    int batch = 128, size = 0;
    float mean = 0, std = 0;
    bool ten_crop = false;
    const cli_opt opts[] = {
        {"checkpoint", CLI_STR, &ckpt, "FILE", "the checkpoint to evaluate (required)"},
        {"data", CLI_STR, &data, "DIR", "Fashion-MNIST folder (default " NN_FMNIST_DEFAULT_DIR "), or an image folder with train/ and val/"},
        {"ten-crop", CLI_BOOL, &ten_crop, NULL, "image folders: average the softmax over the paper's 10 views"},
        {"device", CLI_STR, &device, "D", "cpu (default) or cuda"},
        {"batch", CLI_INT, &batch, "B", "images per forward pass (default 128)"},
        {"size", CLI_INT, &size, "S", "weights-only files: the input size, when several fit fc6"},
        {"mean", CLI_FLOAT, &mean, "M", "Fashion-MNIST: normalize (p/255 - M) / SD instead of the checkpoint's"},
        {"std", CLI_FLOAT, &std, "SD", "(with --mean; a weights-only file: default the training set's)"},
    };
    int r = cli_parse("eval", "--checkpoint FILE [--data DIR] [--ten-crop] [--device D] [--batch B]",
                      "Evaluates a checkpoint on the Fashion-MNIST test set (10,000 images, resized to\n"
                      "the model's input size and normalized with the checkpoint's training mean and\n"
                      "std), or on DIR/val of an image folder (short side resized, center crop, the\n"
                      "training set's mean image; --ten-crop: four corners, center and their reflections,\n"
                      "softmax averaged): top-1 and top-5 accuracy and error, per-class accuracy and the\n"
                      "confusion matrix.",
                      opts, (int)(sizeof opts / sizeof opts[0]), argc, argv, NULL, 0, NULL);
    if (r == CLI_HELP) return 0;
    if (r != CLI_OK) return r;
    if (!ckpt) return cli_fail("eval", "--checkpoint is required");
    if (batch < 1 || batch > 65536) return cli_fail("eval", "--batch must be in [1, 65536], got %d", batch);
    if (ten_crop && !cli_data_is_folder(data))
        return cli_fail("eval", "--ten-crop needs an image folder (--data DIR with DIR/train and DIR/val)");
    nn_device dev;
    if ((r = cli_parse_device("eval", device, &dev)) != CLI_OK) return r;

    if (std < 0 || (mean != 0 && !(std > 0))) return cli_fail("eval", "--mean needs --std > 0");
    nn_model_config cfg;
    static nn_train_state st;
    nn_weights_hints hints = {.in_size = size};
    bool only, have_stats;
    if (cli_model_config("eval", ckpt, &hints, &cfg, &only) != NN_OK) return cli_lib_fail("eval");
    if (!only && size && size != cfg.in_size)
        return cli_fail("eval", "--size %d: %s is a checkpoint for input size %d", size, ckpt, cfg.in_size);
    have_stats = !only && nn_checkpoint_read_config(ckpt, &cfg, &st) == NN_OK;
    if (std > 0) {
        st.mean = mean;
        st.std = std;
        have_stats = true;
    }

    cli_data d;
    cli_data_opts dopt = {.dir = data, .batch = batch, .eval_batch = batch, .size = cfg.in_size,
                          .ten_crop = ten_crop, .mean = have_stats ? st.mean : 0, .std = have_stats ? st.std : 0,
                          .classes = have_stats && st.classes[0] ? st.classes : NULL};
    if (cli_data_open(&d, &dopt) != NN_OK) return cli_lib_fail("eval");
    int status = 1;
    nn_seq seq = {0};
    int *conf = NULL;
    if (cfg.in_channels != d.channels) {
        fprintf(stderr, "convnet eval: %s: the model takes %d input channels, the data set has %d\n", ckpt,
                cfg.in_channels, d.channels);
        goto done;
    }
    if (cfg.classes != d.classes) {
        fprintf(stderr, "convnet eval: %s: the model has %d classes, the data set %d\n", ckpt, cfg.classes,
                d.classes);
        goto done;
    }
    if (!have_stats && !d.folder)
        fprintf(stderr, "convnet eval: %s holds no normalization: normalizing with the training set's mean %.4f "
                        "and std %.4f\n", ckpt, (double)d.mean, (double)d.std);
    if (nn_model_build_load(ckpt, &cfg, dev, &seq) != NN_OK) {
        cli_lib_fail("eval");
        goto done;
    }
    conf = calloc((size_t)d.classes * d.classes, sizeof *conf);
    if (!conf) {
        nn_error(NN_E_NOMEM, "out of memory");
        cli_lib_fail("eval");
        goto done;
    }
    printf("checkpoint: %s (%s, input %dx%dx%d, %d classes)\n", ckpt, cfg.arch, cfg.in_channels, cfg.in_size,
           cfg.in_size, cfg.classes);
    if (d.folder)
        printf("validation set: %d images from %s/val, %s, on %s\n", d.ntest, data,
               ten_crop ? "10 views each (corners, center, reflections)" : "center crops", nn_device_name(dev));
    else
        printf("test set: %d images from %s, normalized with mean %.4f std %.4f, on %s\n", d.ntest,
               data ? data : NN_FMNIST_DEFAULT_DIR, (double)d.mean, (double)d.std, nn_device_name(dev));
    fflush(stdout);
    nn_eval_result res;
    /* progress only where someone watches: not in logs and test output */
    if (nn_evaluate(&seq, dev, &d.test_src, d.classes, conf, &res, isatty(2) ? progress : NULL, NULL) != NN_OK) {
        if (isatty(2)) fprintf(stderr, "\n");
        cli_lib_fail("eval");
        goto done;
    }
    print_report(&d, &res, conf);
    status = 0;
done:
    free(conf);
    nn_seq_free(&seq);
    cli_data_close(&d);
    return status;
}

/* ---- filters ------------------------------------------------------------- */

#define FILTER_COLS 12

int cmd_filters(int argc, char **argv)
{
    const char *ckpt = NULL, *outp = NULL;
    int scale = 4;
    const cli_opt opts[] = {
        {"checkpoint", CLI_STR, &ckpt, "FILE", "the model (required)"},
        {"out", CLI_STR, &outp, "FILE.png", "the picture to write (required)"},
        {"scale", CLI_INT, &scale, "K", "kernel pixels are K x K screen pixels (default 4, 1..64)"},
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
    if (!ckpt || !outp) return cli_fail("filters", "--checkpoint and --out are required");
    if (scale < 1 || scale > 64) return cli_fail("filters", "--scale must be in [1, 64], got %d", scale);
    if (cli_same_file(ckpt, outp))
        return cli_fail("filters", "--out '%s' is the checkpoint: refusing to overwrite it", outp);

    nn_model_config cfg;
    nn_seq seq;
    if (cli_model_load("filters", ckpt, NULL, NN_CPU, &cfg, &seq) != NN_OK) return cli_lib_fail("filters");
    const nn_layer *conv = NULL;
    for (int i = 0; i < seq.n && !conv; i++)
        if (seq.l[i].kind == NN_L_CONV) conv = &seq.l[i];
    if (!conv) {
        nn_seq_free(&seq);
        nn_error(NN_E_ARG, "%s: the model has no convolution layer", ckpt);
        return cli_lib_fail("filters");
    }
    const nn_tensor *wt = conv->w;
    const float *w = nn_f32(wt);
    int O = wt->shape[0], C = wt->shape[1], KH = wt->shape[2], KW = wt->shape[3];
    bool rgb = C == 3;
    int tiles = rgb ? O : O * C, per = rgb ? 1 : C; /* tiles per kernel */
    int cols = tiles < FILTER_COLS ? tiles : FILTER_COLS, rows = (tiles + cols - 1) / cols;
    long long W = (long long)cols * KW * scale + cols + 1, H = (long long)rows * KH * scale + rows + 1;
    if (W > NN_PNG_MAX_SIDE || H > NN_PNG_MAX_SIDE) {
        nn_seq_free(&seq);
        nn_error(NN_E_ARG, "%s: a %lldx%lld picture is too large (at most %d a side): use a smaller --scale", outp,
                 W, H, NN_PNG_MAX_SIDE);
        return cli_lib_fail("filters");
    }
    uint8_t *img = malloc((size_t)W * H * 3);
    if (!img) {
        nn_seq_free(&seq);
        nn_error(NN_E_NOMEM, "filters: out of memory for a %lldx%lld picture", W, H);
        return cli_lib_fail("filters");
    }
    memset(img, 255, (size_t)W * H * 3);
    size_t ksz = (size_t)C * KH * KW, plane = (size_t)KH * KW;
    for (int t = 0; t < tiles; t++) {
        int o = t / per, c0 = rgb ? 0 : t % per;
        const float *k = w + (size_t)o * ksz;
        float lo = FLT_MAX, hi = -FLT_MAX;
        for (size_t i = 0; i < ksz; i++) {
            lo = k[i] < lo ? k[i] : lo;
            hi = k[i] > hi ? k[i] : hi;
        }
        float sc = hi > lo ? 255.0f / (hi - lo) : 0.0f;
        long long x0 = 1 + (long long)(t % cols) * (KW * scale + 1), y0 = 1 + (long long)(t / cols) * (KH * scale + 1);
        for (int y = 0; y < KH * scale; y++)
            for (int x = 0; x < KW * scale; x++) {
                uint8_t *px = img + ((size_t)(y0 + y) * W + (size_t)(x0 + x)) * 3;
                size_t at = (size_t)(y / scale) * KW + (size_t)(x / scale);
                for (int ch = 0; ch < 3; ch++) {
                    float v = k[(size_t)(rgb ? ch : c0) * plane + at];
                    px[ch] = hi > lo ? (uint8_t)((v - lo) * sc + 0.5f) : 128;
                }
            }
    }
    nn_status s = nn_png_write_rgb(outp, (int)W, (int)H, img);
    free(img);
    if (s == NN_OK)
        printf("wrote %s: %d kernels of %s (%dx%dx%d), %lldx%lld pixels\n", outp, O, conv->name, C, KH, KW, W, H);
    nn_seq_free(&seq);
    return s == NN_OK ? 0 : cli_lib_fail("filters");
}
