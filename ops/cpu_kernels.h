/* Internal: the CPU kernels each op file defines (nn_cpu_<slot>). Their
 * prototypes are generated in core/backend.h from the one slot list,
 * core/backend_slots.h; this header only keeps the op files' include. */
#ifndef NN_CPU_KERNELS_H
#define NN_CPU_KERNELS_H

#include "core/backend.h"

#endif
