/* Internal: the CPU kernels each op file defines (nn_cpu_<slot>). Their
 * prototypes are generated in core/backend.h from the one slot list,
 * core/backend_slots.h; this header only keeps the op files' include. */
#ifndef NN_CPU_KERNELS_H
#define NN_CPU_KERNELS_H

#include "core/backend.h"

/* Tests only: Winograd wherever a shape allows it (true), or where the cost
 * model picks it (false, the default), so both paths stay tested on small
 * shapes. Process-wide; set it before building a graph, not during one. */
void nn_cpu_conv2d_force_winograd(bool on);

#endif
