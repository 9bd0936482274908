/* convnet: the command-line program. Each subcommand lives in tools/cmd_*.c
 * and parses its own options (tools/cli.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/threads.h"
#include "tools/cli.h"
#include "config.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *about;
} command;

static const command commands[] = {
    {"train", cmd_train, "train a model (AlexNet on Fashion-MNIST by default)"},
    {"eval", cmd_eval, "test accuracy, per-class accuracy and confusion matrix of a checkpoint"},
    {"predict", cmd_predict, "top classes of photos (JPEG, PNG), or logits of a tensor, from a checkpoint or PyTorch weights"},
    {"plot", cmd_plot, "draw DIR/curves.svg (loss and accuracy against epochs) from DIR/metrics.jsonl"},
    {"filters", cmd_filters, "the first layer's learned kernels as a PNG picture"},
    {"gradcheck", cmd_gradcheck, "check every op's gradients against central differences"},
    {"summary", cmd_summary, "layers, output shapes, parameters and multiply-adds of a model"},
    {"bench", cmd_bench, "time every op and the whole AlexNet step, CPU vs GPU (vs PyTorch)"},
};
#define NCOMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void usage(FILE *f)
{
    fprintf(f, "usage: convnet COMMAND [OPTIONS]   (convnet COMMAND --help for its options)\n\ncommands:\n");
    for (int i = 0; i < NCOMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].about);
    fprintf(f, "\nbuilt with the CUDA backend: %s\n", NN_HAVE_CUDA ? "yes" : "no");
}

/* libgomp reads OMP_WAIT_POLICY once, when it is loaded: unless the user
 * chose a policy, re-execute once with "passive" (core/threads.h says why;
 * measured here: 45 vs 162 images/s training on 2 cores). If re-executing
 * fails, carry on with the default policy. */
int main(int argc, char **argv)
{
    (void)nn_threads_reexec(argv);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "convnet: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
