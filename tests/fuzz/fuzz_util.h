/* Shared by the libFuzzer targets: the readers under test take a path, so
 * each input is written to one temporary file per process ($TMPDIR or /tmp),
 * rewritten for every run and removed at exit. Header-only. */
#ifndef NN_FUZZ_UTIL_H
#define NN_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/status.h"

static char fz_path[512];

static void fz_unlink(void) { unlink(fz_path); }

/* Writes data to this process's temp file and returns its path. A failure
 * here is the harness's, not the reader's: stop loudly. */
__attribute__((unused)) static const char *fz_write_temp(const uint8_t *data, size_t size)
{
    if (!fz_path[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(fz_path, sizeof fz_path, "%s/convnet-fuzz-%ld", dir && *dir ? dir : "/tmp", (long)getpid());
        atexit(fz_unlink);
    }
    FILE *f = fopen(fz_path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(fz_path);
        abort();
    }
    return fz_path;
}

/* Every failure must come back as a status with a message naming the file
 * (STYLE.md rule 3): anything else is a finding, reported as a crash.
 * CONVNET_FUZZ_NO_MSG_CHECK=1 turns the message check off, to fuzz past a
 * known message bug until it is fixed. */
static void fz_check_error(nn_status s, const char *path, const char *what)
{
    static int skip = -1;
    if (skip < 0) skip = getenv("CONVNET_FUZZ_NO_MSG_CHECK") != NULL;
    if (s == NN_OK || skip) return;
    const char *msg = nn_errmsg();
    if (!msg || !*msg) {
        fprintf(stderr, "fuzz: %s failed with status %d (%s) but left no message\n", what, (int)s,
                nn_status_str(s));
        abort();
    }
    if (!strstr(msg, path)) {
        fprintf(stderr, "fuzz: %s failed with a message that does not name the file: %s\n", what, msg);
        abort();
    }
}

#define FZ_REQUIRE(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz: invariant broken: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#endif
