/* `convnet summary`: the layer table of a model (output shape per image,
 * parameters, multiply-adds) from shape inference alone: nothing is
 * allocated, so any size can be described. Every value comes from flags, so
 * a model that does not fit (an input too small for a layer, bad groups) is
 * a usage error: exit status 2 with the library's message. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tools/cli.h"
#include "models/model.h"

#define UNSET INT_MIN /* cli_parse cannot produce it (its range is +-(2^31-1)) */

static const char USAGE[] = "[--model alexnet|lenet] [--in-channels C] [--size S] [--classes K] "
                            "[--groups G] [--width W] [--fc F]";
static const char ABOUT[] =
    "Prints the layers of a model with their output shapes (per image), parameters and\n"
    "multiply-adds, and the totals. Defaults: AlexNet as in the paper, single tower\n"
    "(3x224x224 -> 1000 classes, groups 1: 62,378,344 parameters, 1.135 G MAC).\n"
    "--groups 2 is the paper's two-GPU split (conv2, conv4, conv5 grouped).\n"
    "Only shapes are computed: no memory is allocated for the weights.";

/* An int flag: range-checked when given. */
static int check_int(const char *flag, int v, int lo, int hi)
{
    if (v == UNSET || (v >= lo && v <= hi)) return CLI_OK;
    return cli_fail("summary", "--%s must be in [%d, %d], got %d", flag, lo, hi, v);
}

int cmd_summary(int argc, char **argv)
{
    const char *model = "alexnet";
    int in_c = UNSET, size = UNSET, classes = UNSET, groups = UNSET, fc = UNSET;
    float width = NAN;
    const cli_opt opts[] = {
        {"model", CLI_STR, &model, "NAME", "alexnet (default) or lenet"},
        {"in-channels", CLI_INT, &in_c, "C", "input channels (alexnet 3, lenet 1)"},
        {"size", CLI_INT, &size, "S", "input height = width (alexnet 224, lenet 28)"},
        {"classes", CLI_INT, &classes, "K", "output classes (alexnet 1000, lenet 10)"},
        {"groups", CLI_INT, &groups, "G", "alexnet: 1 single tower (default), 2 the paper's split"},
        {"width", CLI_FLOAT, &width, "W", "alexnet: conv channel multiplier (default 1)"},
        {"fc", CLI_INT, &fc, "F", "alexnet: hidden fully connected width (default 4096)"},
    };
    int r = cli_parse("summary", USAGE, ABOUT, opts, (int)(sizeof opts / sizeof opts[0]), argc, argv, NULL, 0,
                      NULL);
    if (r == CLI_HELP) return 0;
    if (r != CLI_OK) return r;

    nn_model_config cfg;
    if (strcmp(model, "alexnet") == 0) {
        cfg = nn_alexnet_config();
    } else if (strcmp(model, "lenet") == 0) {
        cfg = nn_lenet_config();
        if (groups != UNSET || !isnan(width) || fc != UNSET)
            return cli_fail("summary", "--groups, --width and --fc apply to --model alexnet only");
    } else {
        return cli_fail("summary", "--model expects alexnet or lenet, got '%s'", model);
    }
    /* the limits the checkpoint metadata accepts (models/alexnet.c) */
    if ((r = check_int("in-channels", in_c, 1, 4096)) != CLI_OK || (r = check_int("size", size, 1, 8192)) != CLI_OK ||
        (r = check_int("classes", classes, 1, 1 << 20)) != CLI_OK || (r = check_int("fc", fc, 1, 1 << 16)) != CLI_OK)
        return r;
    if (in_c != UNSET) cfg.in_channels = in_c;
    if (size != UNSET) cfg.in_size = size;
    if (classes != UNSET) cfg.classes = classes;
    if (groups != UNSET) cfg.groups = groups;
    if (fc != UNSET) cfg.fc = fc;
    if (!isnan(width)) cfg.width = width;

    nn_seq seq;
    if (nn_model_build(&seq, &cfg, NN_CPU, NULL) != NN_OK) return cli_fail("summary", "%s", nn_errmsg());

    if (strcmp(cfg.arch, "alexnet") == 0)
        printf("alexnet: input %dx%dx%d, %d classes, groups %d, width %g, fc %d, dropout %g\n", cfg.in_channels,
               cfg.in_size, cfg.in_size, cfg.classes, cfg.groups, (double)cfg.width, cfg.fc, (double)cfg.dropout);
    else
        printf("lenet: input %dx%dx%d, %d classes\n", cfg.in_channels, cfg.in_size, cfg.in_size, cfg.classes);
    nn_seq_print_summary(&seq, stdout);
    nn_seq_free(&seq);
    return 0;
}
