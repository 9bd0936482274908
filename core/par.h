/* Internal: a loop that goes parallel only when it pays, without the cost
 * OpenMP's own `if` clause has (below). Included by the CPU kernels. */
#ifndef NN_PAR_H
#define NN_PAR_H

/* NN_PAR_IF(COND, "omp parallel for ...", LOOP): LOOP (one for statement)
 * on the OpenMP team under that pragma when COND, else on this thread with
 * no OpenMP construct at all. Not `#pragma omp parallel ... if (COND)`: when
 * COND is false libgomp runs a one-thread team and, the team having shrunk,
 * lets its idle worker exit, so the next parallel region starts a new thread
 * (pthread_create): ~0.25 ms per such call on this machine (the default
 * model's fc ReLU over 64x1024 floats: 0.25 ms -> under 5 us). LOOP must not
 * hold a #pragma (a macro argument cannot): put such bodies in a function. */
#define NN_PAR_IF(cond, pragma, ...) \
    do {                             \
        if (cond) {                  \
            _Pragma(pragma)          \
            __VA_ARGS__              \
        } else {                     \
            __VA_ARGS__              \
        }                            \
    } while (0)

#endif
