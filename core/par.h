/* Internal: a loop that goes parallel only when it pays, without the cost
 * OpenMP's own `if` clause has (below). Included by the CPU kernels. */
#ifndef NN_PAR_H
#define NN_PAR_H

/* NN_PAR_IF(COND, "omp parallel for ...", LOOP): LOOP (one for statement)
 * on the OpenMP team under that pragma when COND, else on this thread with
 * no OpenMP construct at all. Not `#pragma omp parallel ... if (COND)`:
 * measured in `convnet bench` on this machine, the default model's fc ReLU
 * (64x1024 floats, below the threshold, so a one-thread team) took 0.25 ms
 * that way and under 5 us as a plain loop, and the training step went from
 * ~29 to ~27 ms when every such site changed. Why the team costs that much
 * there is not established: a stand-alone test (libgomp 12, passive policy)
 * shows no thread re-created and only ~12 us lost per one-thread region (the
 * outlined loop, its team setup). LOOP must not hold a #pragma (a macro
 * argument cannot): put such bodies in a function. */
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
