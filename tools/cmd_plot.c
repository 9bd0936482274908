/* convnet plot DIR: redraws DIR/curves.svg from DIR/metrics.jsonl (the
 * training record, models/metrics.h). */
#include <stdio.h>

#include "tools/cli.h"
#include "models/metrics.h"

int cmd_plot(int argc, char **argv)
{
    const char *dir[1] = {NULL};
    int npos = 0;
    int r = cli_parse("plot", "DIR",
                      "Reads DIR/metrics.jsonl (one JSON object per line, written by training) and draws\n"
                      "DIR/curves.svg: loss and top-1 accuracy against epochs, train and test. Lines that\n"
                      "do not parse (one cut short by a crash) are skipped and counted.",
                      NULL, 0, argc, argv, dir, 1, &npos);
    if (r == CLI_HELP) return 0;
    if (r != CLI_OK) return r;
    if (npos != 1) return cli_fail("plot", "give one DIR");
    int bad = 0;
    if (nn_metrics_plot(dir[0], &bad) != NN_OK) {
        fprintf(stderr, "convnet plot: %s\n", nn_errmsg());
        return 1;
    }
    if (bad) fprintf(stderr, "convnet plot: skipped %d line(s) of %s/metrics.jsonl that are not metrics\n", bad, dir[0]);
    printf("wrote %s/curves.svg\n", dir[0]);
    return 0;
}
