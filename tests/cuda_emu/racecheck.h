/* The emulated GPU's race checker (racecheck.cpp says how it works): the
 * runtime's side. emu.cpp calls these at the points that order
 * a block's threads; in the modules built without the checker they are
 * empty. */
#ifndef NN_EMU_RACECHECK_H
#define NN_EMU_RACECHECK_H

#include <cstddef>
#include <cstdint>

namespace nn_emu {

int current_thread(void); /* emu.cpp: the running GPU thread's index in its block */
/* emu.cpp: the device (or mapped host) allocation holding p: its address and
 * size; false when p is in none. Called by the kernel's host thread, which
 * holds the runtime's lock while a kernel runs. */
bool memory_region(const void *p, uintptr_t *lo, size_t *bytes);

#if NN_EMU_RACECHECK
void race_launch(const char *kernel, void *dynamic_smem, size_t bytes); /* a grid starts */
void race_launch_end(void);
void race_block(void);   /* a block starts: nothing before it conflicts with what follows */
void race_barrier(void); /* every thread of the block passed __syncthreads */
void race_static_smem(void *p, size_t bytes); /* a static __shared__ array of this kernel */
void race_write(const void *p, size_t bytes);  /* a write the runtime makes for the running thread (cp.async) */
#else
inline void race_launch(const char *, void *, size_t) {}
inline void race_launch_end(void) {}
inline void race_block(void) {}
inline void race_barrier(void) {}
inline void race_static_smem(void *, size_t) {}
inline void race_write(const void *, size_t) {}
#endif

} // namespace nn_emu

#endif
