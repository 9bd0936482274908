/* Opening models for eval, predict and filters (see model_cli.h). */
#include "tools/model_cli.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "tools/cli.h"
#include "core/backend.h"
#include "models/checkpoint.h"

int cli_lib_fail(const char *cmd)
{
    fprintf(stderr, "convnet %s: %s\n", cmd, nn_errmsg());
    return 1;
}

int cli_parse_device(const char *cmd, const char *s, nn_device *dev)
{
    if (nn_device_parse(s, dev) != NN_OK) return cli_fail(cmd, "%s", nn_errmsg());
    if (!nn_backend_need(*dev, "--device")) return cli_lib_fail(cmd);
    return CLI_OK;
}

bool cli_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (strcmp(a, b) == 0) return true;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void say_inferred(const char *cmd, const char *path, const nn_model_config *c, const char *note)
{
    if (strcmp(c->arch, "alexnet") == 0)
        fprintf(stderr, "convnet %s: %s holds weights only: alexnet, %d input channels, width %.4g, groups %d, fc %d, "
                "%d classes, input %dx%d\n", cmd, path, c->in_channels, (double)c->width, c->groups, c->fc, c->classes,
                c->in_size, c->in_size);
    else
        fprintf(stderr, "convnet %s: %s holds weights only: %s, %d input channels, %d classes, input %dx%d\n", cmd, path,
                c->arch, c->in_channels, c->classes, c->in_size, c->in_size);
    if (note[0]) fprintf(stderr, "convnet %s: %s\n", cmd, note);
}

nn_status cli_model_config(const char *cmd, const char *path, const nn_weights_hints *hints, nn_model_config *cfg,
                           bool *weights_only)
{
    *weights_only = nn_weights_only(path);
    if (!*weights_only) return nn_checkpoint_read_config(path, cfg, NULL);
    char note[256];
    NN_TRY(nn_weights_infer(path, hints, cfg, note, sizeof note));
    say_inferred(cmd, path, cfg, note);
    return NN_OK;
}

nn_status cli_model_load(const char *cmd, const char *path, const nn_weights_hints *hints, nn_device dev,
                         nn_model_config *cfg, nn_seq *seq)
{
    bool only;
    NN_TRY(cli_model_config(cmd, path, hints, cfg, &only));
    return nn_model_build_load(path, cfg, dev, seq);
}
