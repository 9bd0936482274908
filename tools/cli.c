/* Option tables for the subcommands (see cli.h). */
#include "tools/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "convnet %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'convnet %s --help')\n", cmd);
    return CLI_ERROR;
}

void cli_print_help(FILE *f, const char *cmd, const char *usage, const char *about, const cli_opt *opts,
                    int nopts)
{
    fprintf(f, "usage: convnet %s %s\n\n%s\n\noptions:\n", cmd, usage, about);
    for (int i = 0; i < nopts; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", opts[i].name, opts[i].metavar ? " " : "",
                 opts[i].metavar ? opts[i].metavar : "");
        fprintf(f, "  %-24s %s\n", left, opts[i].help);
    }
    fprintf(f, "  %-24s %s\n", "--help", "show this help");
}

static int set_value(const char *cmd, const cli_opt *o, const char *v)
{
    char *end;
    errno = 0;
    switch (o->type) {
    case CLI_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < -2147483647L || x > 2147483647L)
            return cli_fail(cmd, "--%s expects an integer, got '%s'", o->name, v);
        *(int *)o->dst = (int)x;
        break;
    }
    case CLI_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *end || errno || *v == '-')
            return cli_fail(cmd, "--%s expects a non-negative integer, got '%s'", o->name, v);
        *(uint64_t *)o->dst = x;
        break;
    }
    case CLI_FLOAT: {
        float x = strtof(v, &end);
        if (!*v || *end || errno || !isfinite(x))
            return cli_fail(cmd, "--%s expects a number, got '%s'", o->name, v);
        *(float *)o->dst = x;
        break;
    }
    case CLI_STR:
        *(const char **)o->dst = v;
        break;
    case CLI_BOOL:
        *(bool *)o->dst = true;
        break;
    }
    return CLI_OK;
}

/* The option --name (name: len bytes, up to any '='), or NULL. */
static const cli_opt *find_opt(const cli_opt *opts, int nopts, const char *name, size_t len)
{
    for (int k = 0; k < nopts; k++)
        if (strlen(opts[k].name) == len && strncmp(opts[k].name, name, len) == 0) return &opts[k];
    return NULL;
}

bool cli_given(const cli_opt *opts, int nopts, int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') continue;
        const char *eq = strchr(a + 2, '=');
        const cli_opt *o = find_opt(opts, nopts, a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
        if (o && strcmp(o->name, name) == 0) return true;
        if (o && o->type != CLI_BOOL && !eq) i++; /* its value, which may start with "--" */
    }
    return false;
}

int cli_given_list(const cli_opt *opts, int nopts, int argc, char **argv, const char *const *names, char *out,
                   size_t size)
{
    int n = 0;
    *out = '\0';
    for (; *names; names++)
        if (cli_given(opts, nopts, argc, argv, *names) && ++n)
            snprintf(out + strlen(out), size - strlen(out), "%s--%s", n > 1 ? ", " : "", *names);
    return n;
}

int cli_parse(const char *cmd, const char *usage, const char *about, const cli_opt *opts, int nopts,
              int argc, char **argv, const char **pos, int maxpos, int *npos)
{
    int np = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_print_help(stdout, cmd, usage, about, opts, nopts);
            return CLI_HELP;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (np >= maxpos || !pos)
                return cli_fail(cmd, "unexpected argument '%s'", a);
            pos[np++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_opt *o = find_opt(opts, nopts, name, len);
        if (!o) return cli_fail(cmd, "unknown option '--%.*s'", (int)len, name);
        const char *v;
        if (o->type == CLI_BOOL) {
            if (eq) return cli_fail(cmd, "--%s takes no value", o->name);
            v = "";
        } else if (eq) {
            v = eq + 1;
        } else {
            if (i + 1 >= argc) return cli_fail(cmd, "--%s needs a value (%s)", o->name, o->metavar);
            v = argv[++i];
        }
        int r = set_value(cmd, o, v);
        if (r != CLI_OK) return r;
    }
    if (npos) *npos = np;
    return CLI_OK;
}
