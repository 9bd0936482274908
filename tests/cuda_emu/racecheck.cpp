/* The race checker of the emulated GPU: what compute-sanitizer's racecheck
 * reports on a GPU (shared-memory races; where it runs at all: the GPU
 * machines lent to this project under gVisor refuse it), and races in
 * global memory between blocks, which it does not look for, found on the
 * CPU, in CI. Module libconvnet_cuda_emu_race.so, tests cuda_emu_racecheck,
 * cuda_fuse_emu_racecheck and cuda_racecheck_probes.
 *
 * How: that module's kernel sources are compiled with -fsanitize=thread,
 * which makes the compiler call __tsan_read4(p), __tsan_write8(p) and kin
 * before every memory access. ThreadSanitizer's runtime is not linked: the
 * functions below are ours. An access to the running block's shared memory
 * (the dynamic buffer, the kernel's static __shared__ arrays) is checked
 * against the last write and the reads of the same 4-byte word since the
 * block's last __syncthreads: two threads touching one word between two
 * barriers, at least one of them writing, is a hazard (read after write,
 * write after read, write after write), reported with the kernel, the
 * block, both threads and the byte offset, and the run stops. Which order
 * the threads ran in does not matter, so this finds what the emulator's
 * warp order cannot: races between lanes of one warp (they always run in
 * lane order here), and races whose outcome happened to be right.
 *
 * Only __syncthreads separates accesses: warp shuffles and mma.sync imply no
 * memory ordering (CUDA C++ Programming Guide), and the kernels use no
 * __syncwarp. A cp.async copy counts as its thread's write when its group
 * is waited for, where the emulator lands it.
 *
 * Global memory (device allocations, and mapped host memory), which
 * compute-sanitizer's racecheck does not check: nothing orders two blocks of
 * one launch (the kernels use no grid-wide sync, and a GPU may run the
 * blocks in any order or at once), so one 4-byte word touched by two blocks
 * of a launch, at least one of them writing, is a hazard, reported as above
 * with both blocks. Atomics (cuda_runtime.h leaves them uninstrumented) are
 * how blocks may share a word, and are not checked. Within one block, global
 * words are not checked (barriers order them as they do shared memory; the
 * result comparisons of the other emu tests cover that). */
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include <pthread.h>

#include "cuda_runtime.h"
#include "racecheck.h"

namespace nn_emu {

namespace {

constexpr int NONE = -1;

/* One 4-byte word of shared memory: who wrote it and who read it in which
 * epoch (epochs advance at every block start and every __syncthreads, so a
 * use from an earlier epoch is ordered before this one and never conflicts).
 * Two distinct readers are enough to know whether one is not the writer. */
struct word_use {
    uint64_t write_epoch = 0, read_epoch = 0;
    int writer = NONE, readers[2] = {NONE, NONE};
};

struct smem_range {
    uintptr_t lo, hi;
    std::vector<word_use> *words;
    bool dynamic;
};

uint64_t epoch = 1;
std::atomic<bool> armed; /* a kernel is running (other host threads read this) */
pthread_t kernel_thread; /* the host thread running it, set before armed: host code elsewhere is not checked */
const char *kernel;
std::vector<word_use> dynamic_words;
std::unordered_map<uintptr_t, std::vector<word_use>> static_words; /* by address, kept for the module's life */
std::vector<smem_range> ranges; /* the running kernel's shared memory, dynamic first */

/* One 4-byte word of global memory in the running launch: the block that
 * wrote it and the blocks that read it (the first, and MANY once a second
 * one did). Stale (another launch's) words count as untouched. */
constexpr int MANY = -2;
struct global_use {
    uint32_t launch = 0;
    int writer = NONE, reader = NONE;
};
uint32_t launch_serial;
std::unordered_map<uintptr_t, std::vector<global_use>> global_words; /* by allocation address */
struct global_range {
    uintptr_t lo = 0, hi = 0;
    std::vector<global_use> *words = nullptr;
} last_global; /* the allocation of the last global access (most hit the same few) */

std::string thread_name(int t)
{
    const unsigned x = blockDim.x, y = blockDim.y;
    char s[64];
    std::snprintf(s, sizeof s, "thread %d (%u, %u, %u)", t, t % x, t / x % y, t / (x * y));
    return s;
}

[[noreturn]] void hazard(const char *kind, const smem_range &r, uintptr_t a, int other, const char *other_did, int me,
                         const char *i_do)
{
    fail("kernel %s, block (%u, %u, %u): shared-memory race (%s) at byte %zu of %s: %s %s it, then %s %s it "
         "with no __syncthreads between",
         kernel, blockIdx.x, blockIdx.y, blockIdx.z, kind, (size_t)(a - r.lo),
         r.dynamic ? "the dynamic shared memory" : "a static __shared__ array", thread_name(other).c_str(), other_did,
         thread_name(me).c_str(), i_do);
}

int block_index(void) { return (int)(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z)); }

std::string block_name(int b)
{
    const unsigned x = gridDim.x, y = gridDim.y;
    char s[64];
    std::snprintf(s, sizeof s, "block (%u, %u, %u)", b % x, b / x % y, b / (x * y));
    return s;
}

[[noreturn]] void global_hazard(const char *kind, const global_range &r, uintptr_t a, int other, const char *other_did,
                                const char *i_do)
{
    fail("kernel %s, block (%u, %u, %u): global-memory race (%s) at byte %zu of the %zu-byte allocation at %p: %s %s "
         "it, then %s of %s %s it in the same launch (nothing orders the blocks of a launch)",
         kernel, blockIdx.x, blockIdx.y, blockIdx.z, kind, (size_t)(a - r.lo), (size_t)(r.hi - r.lo), (void *)r.lo,
         other == MANY ? "several blocks" : block_name(other).c_str(), other_did, thread_name(current_thread()).c_str(),
         block_name(block_index()).c_str(), i_do);
}

void use_global_word(const global_range &r, uintptr_t a, bool write)
{
    global_use &w = (*r.words)[(a - r.lo) / 4];
    if (w.launch != launch_serial) w = global_use{launch_serial, NONE, NONE};
    const int me = block_index();
    if (w.writer != NONE && w.writer != me)
        global_hazard(write ? "write after write" : "read after write", r, a, w.writer, "wrote",
                      write ? "writes" : "reads");
    if (write) {
        if (w.reader == MANY || (w.reader != NONE && w.reader != me))
            global_hazard("write after read", r, a, w.reader, "read", "writes");
        w.writer = me;
    } else if (w.reader == NONE) {
        w.reader = me;
    } else if (w.reader != me) {
        w.reader = MANY;
    }
}

/* [a, a + bytes) when it lies in an allocation: checked word by word */
void use_global(uintptr_t a, size_t bytes, bool write)
{
    if (a - last_global.lo >= last_global.hi - last_global.lo) {
        uintptr_t lo;
        size_t size;
        if (!memory_region((const void *)a, &lo, &size)) return; /* a fiber's stack, the runtime's own memory */
        std::vector<global_use> &words = global_words[lo];
        if (words.size() != (size + 3) / 4) words.assign((size + 3) / 4, global_use{}); /* a new allocation there */
        last_global = {lo, lo + size, &words};
    }
    const uintptr_t end = std::min(a + bytes, last_global.hi);
    for (uintptr_t w = a & ~(uintptr_t)3; w < end; w += 4) use_global_word(last_global, std::max(w, last_global.lo), write);
}

void use_word(const smem_range &r, uintptr_t a, bool write)
{
    word_use &w = (*r.words)[(a - r.lo) / 4];
    const int me = current_thread();
    if (w.write_epoch == epoch && w.writer != me)
        hazard(write ? "write after write" : "read after write", r, a, w.writer, "wrote", me, write ? "writes" : "reads");
    if (write) {
        if (w.read_epoch == epoch)
            for (int other : w.readers)
                if (other != NONE && other != me) hazard("write after read", r, a, other, "read", me, "writes");
        w.write_epoch = epoch;
        w.writer = me;
    } else if (w.read_epoch != epoch) {
        w.read_epoch = epoch;
        w.readers[0] = me;
        w.readers[1] = NONE;
    } else if (w.readers[0] != me && w.readers[1] == NONE) {
        w.readers[1] = me;
    }
}

void use(const void *p, size_t bytes, bool write)
{
    if (!armed.load(std::memory_order_acquire) || !bytes || !pthread_equal(pthread_self(), kernel_thread)) return;
    const uintptr_t a = (uintptr_t)p;
    for (const smem_range &r : ranges) {
        if (a - r.lo >= r.hi - r.lo) continue;
        const uintptr_t end = std::min(a + bytes, r.hi);
        for (uintptr_t w = a & ~(uintptr_t)3; w < end; w += 4) use_word(r, std::max(w, r.lo), write);
        return;
    }
    use_global(a, bytes, write);
}

} // namespace

void race_launch(const char *name, void *dynamic_smem, size_t bytes)
{
    kernel = name;
    launch_serial++;
    last_global = global_range{}; /* allocations may have come and gone since: forget the freed ones */
    for (auto it = global_words.begin(); it != global_words.end();) {
        uintptr_t lo;
        size_t size;
        it = memory_region((const void *)it->first, &lo, &size) && lo == it->first ? std::next(it) : global_words.erase(it);
    }
    dynamic_words.assign((bytes + 3) / 4, word_use{});
    ranges.clear();
    if (bytes) ranges.push_back({(uintptr_t)dynamic_smem, (uintptr_t)dynamic_smem + bytes, &dynamic_words, true});
    kernel_thread = pthread_self();
    /* NN_EMU_RACECHECK=0: the module runs as the plain one (test_cuda_racecheck shows what that misses) */
    static const bool off = getenv("NN_EMU_RACECHECK") && std::strcmp(getenv("NN_EMU_RACECHECK"), "0") == 0;
    armed.store(!off, std::memory_order_release);
}

void race_launch_end(void) { armed.store(false, std::memory_order_relaxed); }

void race_block(void) { epoch++; }

void race_barrier(void) { epoch++; }

void race_static_smem(void *p, size_t bytes)
{
    const uintptr_t a = (uintptr_t)p;
    for (const smem_range &r : ranges)
        if (r.lo == a) return;
    std::vector<word_use> &words = static_words[a];
    words.resize((bytes + 3) / 4);
    ranges.push_back({a, a + bytes, &words, false});
}

void race_write(const void *p, size_t bytes) { use(p, bytes, true); }

} // namespace nn_emu

/* The calls -fsanitize=thread puts before the kernels' memory accesses
 * (GCC's names and signatures; which ones a build needs: nm -u on its
 * objects, and the link fails on any missing). */
using nn_emu::use;
extern "C" {
void __tsan_init(void) {}
void __tsan_func_entry(void *) {}
void __tsan_func_exit(void) {}
#define NN_TSAN_ACCESS(n)                                                      \
    void __tsan_read##n(void *p) { use(p, n, false); }                         \
    void __tsan_write##n(void *p) { use(p, n, true); }                         \
    void __tsan_unaligned_read##n(void *p) { use(p, n, false); }               \
    void __tsan_unaligned_write##n(void *p) { use(p, n, true); }
NN_TSAN_ACCESS(1)
NN_TSAN_ACCESS(2)
NN_TSAN_ACCESS(4)
NN_TSAN_ACCESS(8)
NN_TSAN_ACCESS(16)
#undef NN_TSAN_ACCESS
void __tsan_read_range(void *p, unsigned long n) { use(p, n, false); }
void __tsan_write_range(void *p, unsigned long n) { use(p, n, true); }
/* the host code's atomics and virtual calls (libstdc++'s std::function,
 * static guards): done, not checked */
void __tsan_vptr_update(void **, void *) {}
char __tsan_atomic8_load(const volatile char *a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); }
int __tsan_atomic32_fetch_add(volatile int *a, int v, int) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }
}
