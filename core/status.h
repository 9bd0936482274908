/* Errors as values: every fallible call returns an nn_status and leaves a
 * message (op name, shapes, file, reason) readable through nn_errmsg().
 * The message buffer is thread-local; the library never calls exit(). */
#ifndef NN_STATUS_H
#define NN_STATUS_H

#include <stdio.h>
#include <stdlib.h>

typedef enum nn_status {
    NN_OK = 0,
    NN_E_ARG,         /* bad parameter value or NULL argument */
    NN_E_SHAPE,       /* shapes do not fit together */
    NN_E_RANGE,       /* a value out of its valid range (labels, indices) */
    NN_E_NOMEM,       /* host or device allocation failed */
    NN_E_IO,          /* open/read/write/rename failed */
    NN_E_FORMAT,      /* a file is corrupt, truncated or of the wrong kind */
    NN_E_DEVICE,      /* device missing, mismatched, or a CUDA call failed */
    NN_E_NONFINITE,   /* NaN or Inf where a finite value is required */
    NN_E_UNSUPPORTED, /* valid request this build cannot serve */
    NN_E_INTERRUPTED, /* stopped on request (signal) */
} nn_status;

/* Sets the thread's message (printf-style) and returns s, so callers write
 * `return nn_error(NN_E_SHAPE, "conv2d: ...")`. */
nn_status nn_error(nn_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *nn_errmsg(void);           /* the last message; "" if none */
const char *nn_status_str(nn_status s); /* "shape mismatch", ... */
void nn_clear_error(void);

#define NN_TRY(expr)                        \
    do {                                    \
        nn_status nn_try_s_ = (expr);       \
        if (nn_try_s_ != NN_OK)             \
            return nn_try_s_;               \
    } while (0)

/* Broken internal invariants (never user input) stop here, loudly. */
#define NN_ASSERT(cond)                                                        \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "convnet: internal error: %s (%s:%d)\n", #cond,    \
                    __FILE__, __LINE__);                                       \
            abort();                                                           \
        }                                                                      \
    } while (0)

#endif
