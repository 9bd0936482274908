/* Command-line parsing shared by the convnet subcommands: each command lists
 * its options in a table; `--name value`, `--name=value` and `--help` work
 * everywhere; a bad flag or value is a message and exit status 2. */
#ifndef CONVNET_CLI_H
#define CONVNET_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef enum cli_type { CLI_INT, CLI_FLOAT, CLI_STR, CLI_BOOL, CLI_U64 } cli_type;

typedef struct cli_opt {
    const char *name;    /* without the dashes */
    cli_type type;
    void *dst;           /* int*, float*, const char**, bool*, uint64_t* */
    const char *metavar; /* "N", "FILE"; NULL for CLI_BOOL */
    const char *help;
} cli_opt;

#define CLI_OK 0
#define CLI_HELP 1  /* help was printed: exit 0 */
#define CLI_ERROR 2 /* a message was printed: exit 2 */
/* returned by the steps of a command split into functions to mean "carry on"
 * (any other value is the exit status) */
#define CLI_GO_ON (-1)

/* Parses argv[0..argc-1] (the words after the command name). Positional words
 * go to pos (at most maxpos, else an error) and their count to *npos (pos may
 * be NULL when the command takes none). */
int cli_parse(const char *cmd, const char *usage, const char *about, const cli_opt *opts, int nopts,
              int argc, char **argv, const char **pos, int maxpos, int *npos);
/* Whether argv, which cli_parse accepted with the same table, gives option
 * --name (for options that do not apply in every mode of a command). */
bool cli_given(const cli_opt *opts, int nopts, int argc, char **argv, const char *name);
/* Of names (NULL-terminated), those argv gives, as "--a, --b" into out; their count. */
int cli_given_list(const cli_opt *opts, int nopts, int argc, char **argv, const char *const *names, char *out,
                   size_t size);
void cli_print_help(FILE *f, const char *cmd, const char *usage, const char *about, const cli_opt *opts,
                    int nopts);
/* Prints "convnet CMD: message" to stderr and returns CLI_ERROR. */
int cli_fail(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The subcommands (tools/cmd_*.c): each returns the process exit status. */
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_filters(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_gradcheck(int argc, char **argv);
int cmd_summary(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
