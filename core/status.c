/* Thread-local error message behind nn_error()/nn_errmsg(). */
#include "core/status.h"

#include <stdarg.h>

static _Thread_local char nn_msg[1024];

nn_status nn_error(nn_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nn_msg, sizeof nn_msg, fmt, ap);
    va_end(ap);
    return s;
}

const char *nn_errmsg(void) { return nn_msg; }

void nn_clear_error(void) { nn_msg[0] = '\0'; }

const char *nn_status_str(nn_status s)
{
    switch (s) {
    case NN_OK: return "ok";
    case NN_E_ARG: return "bad argument";
    case NN_E_SHAPE: return "shape mismatch";
    case NN_E_RANGE: return "value out of range";
    case NN_E_NOMEM: return "out of memory";
    case NN_E_IO: return "I/O error";
    case NN_E_FORMAT: return "bad file format";
    case NN_E_DEVICE: return "device error";
    case NN_E_NONFINITE: return "non-finite value";
    case NN_E_UNSUPPORTED: return "unsupported";
    case NN_E_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}
