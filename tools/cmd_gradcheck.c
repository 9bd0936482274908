/* `convnet gradcheck`: every registered op's analytic gradients against
 * central differences (core/gradcheck.h) on small random shapes drawn from a
 * seed, on the CPU or the GPU. Each op's case (shapes and parameters drawn
 * from the seed, heap inputs that require grad, the call) is its registry
 * entry's (ops/registry.h). Exit status 1 if any op fails or cannot run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"
#include "core/backend.h"
#include "core/gradcheck.h"
#include "ops/registry.h"

/* Big tensors are sampled: 200 random elements per input keep the whole
 * command well under a second on the CPU while still hitting every kind of
 * position (borders, group boundaries) across seeds. */
#define GC_MAX_POINTS 200

/* Runs one op; prints its rows; returns true when it passed. */
static bool run_op(int k, uint64_t seed, nn_device dev, double threshold)
{
    const nn_op_info *op = nn_ops[k];
    nn_op_case c;
    memset(&c, 0, sizeof c);
    /* each op draws its shapes from its own stream, so the shapes of one op
     * do not depend on which other ops were asked for */
    nn_rng r = nn_rng_make(seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(k + 1)));
    nn_status s = op->gc_case(&c, &r, dev);
    nn_gradcheck_result res;
    memset(&res, 0, sizeof res);
    if (s == NN_OK) {
        nn_gradcheck_opts o = {.threshold = threshold, .seed = seed, .max_points = GC_MAX_POINTS};
        s = nn_gradcheck(op->call, &c, c.n, c.in, &o, &res);
    }
    bool ok = s == NN_OK && res.ok;
    for (int i = 0; i < c.n; i++) {
        char shape[48];
        nn_shape_str(c.in[i], shape, sizeof shape);
        const nn_gradcheck_input *g = &res.in[i];
        const char *opname = i == 0 ? op->name : "";
        if (s != NN_OK || !g->checked) {
            printf("%-13s %-7s %-12s %7s %8s %11s %11s  %s\n", opname, c.names[i], shape, "-", "-", "-", "-",
                   c.in[i]->dtype == NN_F32 ? "-" : "(int32, not checked)");
            continue;
        }
        bool pass = g->failed == 0 && g->points > 0;
        printf("%-13s %-7s %-12s %7zu %8zu %11.3e %11.3e  %s", opname, c.names[i], shape, g->points, g->skipped,
               g->max_abs, g->max_rel, pass ? "PASS" : "FAIL");
        if (g->failed) printf(" (%zu points over the threshold)", g->failed);
        else if (!g->points) printf(" (no point checked)");
        printf("\n");
    }
    if (c.n == 0) printf("%-13s\n", op->name);
    printf("%-13s %s\n", "", c.about);
    if (s != NN_OK) printf("%-13s FAIL: %s\n", "", nn_errmsg());
    nn_op_case_free(&c);
    return ok;
}

static const char USAGE[] = "[OP...] [--device cpu|cuda] [--seed S] [--threshold T]";
static const char ABOUT[] =
    "Checks the gradients of ops against central differences, (L(x+e) - L(x-e)) / 2e with\n"
    "e = 0.01 and L = sum(y * r) for a fixed random r, on small random shapes drawn from\n"
    "the seed. A point passes when |analytic - numeric| <= T * max(|analytic|, |numeric|, 1);\n"
    "points on a kink (relu at 0) are skipped and counted. Inputs with more than 200\n"
    "elements are checked at 200 random elements.\n"
    "OPs: the registered ops (ops/registry.c; listed when an unknown one is asked for),\n"
    "default: all.\n"
    "Exit status 1 when an op fails.";

int cmd_gradcheck(int argc, char **argv)
{
    const char *device = "cpu";
    uint64_t seed = 1;
    float threshold = 1e-2f;
    const cli_opt opts[] = {
        {"device", CLI_STR, &device, "D", "cpu (default) or cuda"},
        {"seed", CLI_U64, &seed, "S", "seed of the shapes, inputs and dropout masks (default 1)"},
        {"threshold", CLI_FLOAT, &threshold, "T", "relative tolerance (default 0.01)"},
    };
    const char *pos[16];
    int npos = 0;
    int r = cli_parse("gradcheck", USAGE, ABOUT, opts, (int)(sizeof opts / sizeof opts[0]), argc, argv, pos,
                      (int)(sizeof pos / sizeof pos[0]), &npos);
    if (r == CLI_HELP) return 0;
    if (r != CLI_OK) return r;

    nn_device dev;
    if (nn_device_parse(device, &dev) != NN_OK) return cli_fail("gradcheck", "%s", nn_errmsg());
    if (!(threshold > 0 && threshold < 1))
        return cli_fail("gradcheck", "--threshold must be in (0, 1), got %g", (double)threshold);
    const int nops = nn_op_count();
    bool want[64] = {false};
    NN_ASSERT(nops <= 64);
    for (int i = 0; i < npos; i++) {
        const nn_op_info *op = nn_op_find(pos[i]);
        if (!op) {
            char names[512] = "";
            for (int k = 0; k < nops; k++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", k ? ", " : "",
                         nn_ops[k]->name);
            return cli_fail("gradcheck", "unknown op '%s' (expected one of %s)", pos[i], names);
        }
        for (int k = 0; k < nops; k++) want[k] |= nn_ops[k] == op;
    }
    if (npos == 0)
        for (int k = 0; k < nops; k++) want[k] = true;
    if (!nn_backend_need(dev, "--device")) {
        fprintf(stderr, "convnet gradcheck: %s\n", nn_errmsg());
        return 1;
    }

    printf("gradcheck on %s, seed %llu, threshold %g, eps 0.01, at most %d points per input\n",
           nn_device_name(dev), (unsigned long long)seed, (double)threshold, GC_MAX_POINTS);
    printf("%-13s %-7s %-12s %7s %8s %11s %11s  %s\n", "op", "input", "shape", "points", "skipped", "max abs",
           "max rel", "result");
    int ran = 0, passed = 0;
    for (int k = 0; k < nops; k++) {
        if (!want[k]) continue;
        ran++;
        passed += run_op(k, seed, dev, (double)threshold);
    }
    printf("%d of %d ops passed\n", passed, ran);
    return passed == ran ? 0 : 1;
}
