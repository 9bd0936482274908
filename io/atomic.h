/* Atomic file replacement: write to "PATH.tmp.PID", flush, fsync, rename over
 * PATH, fsync the directory. A crash or error at any point leaves either the
 * old file or the new one, never a mix; on error the temporary is removed. */
#ifndef NN_ATOMIC_H
#define NN_ATOMIC_H

#include <stdio.h>

#include "core/status.h"

/* Writes the content to fp; returns a status naming path on failure. */
typedef nn_status (*nn_write_fn)(FILE *fp, const char *path, void *user);

nn_status nn_write_atomic(const char *path, nn_write_fn write, void *user);

#endif
