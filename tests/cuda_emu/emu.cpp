/* The CPU's CUDA runtime for tests (what it models: tests/cuda_emu/cuda_runtime.h).
 *
 * Kernels: a grid runs block after block on the calling host thread; a
 * block's threads are fibers (own stacks, switched by nn_emu_switch below)
 * run in turn, each until it finishes or waits at a barrier. A kernel whose
 * first launch never waited runs later launches without fibers (a plain
 * loop per thread); if such a kernel does wait after all, the run stops with
 * a message (NN_EMU_FIBERS=1 forces fibers everywhere).
 *
 * The API's calls run one at a time under one lock; work queued on a stream
 * runs when something waits for it (see drain below), and capture records
 * it instead. */
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <sys/mman.h>

/* Built with AddressSanitizer (the module test_cuda_emu_asan loads): ASan's
 * own red zones replace ours, so a kernel's out-of-bounds read of device or
 * shared memory is reported where it happens, and the fibers' stack
 * switches are announced to it. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

#include "cuda_runtime.h"
#include "racecheck.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace nn_emu {

void vsay(const char *who, const char *fmt, va_list ap)
{
    std::fprintf(stderr, "%s: ", who);
    std::vfprintf(stderr, fmt, ap);
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
}

[[noreturn]] void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay("nn_emu", fmt, ap);
    va_end(ap);
    std::abort();
}

/* ================= device memory ================= */

/* Red zones around every allocation: writes past either end are found after
 * the kernel (or copy) that made them. */
constexpr size_t RED = EMU_ASAN ? 0 : 256;
constexpr unsigned char RED_BYTE = 0xA5;

struct region {
    size_t bytes;
    unsigned char *base; /* the block including both red zones */
    bool host;           /* cudaHostAlloc: host memory the device may read */
};
static std::map<uintptr_t, region> regions; /* by user address */
static size_t device_bytes;
static std::recursive_mutex big_lock;

static size_t capacity(void)
{
    static size_t cap = [] {
        const char *e = getenv("NN_EMU_MEM_MB");
        return (size_t)(e && *e ? atol(e) : 4096) << 20;
    }();
    return cap;
}

/* the region holding [p, p + n), or null */
static const region *find(const void *p, size_t n)
{
    const uintptr_t a = (uintptr_t)p;
    auto it = regions.upper_bound(a);
    if (it == regions.begin()) return nullptr;
    --it;
    if (a + n > it->first + it->second.bytes || a < it->first) return nullptr;
    return &it->second;
}

static void check_red_zones(const char *after)
{
    if (EMU_ASAN) return;
    for (auto &[addr, r] : regions) {
        const unsigned char *lo = r.base, *hi = (const unsigned char *)addr + r.bytes;
        for (size_t i = 0; i < RED; i++)
            if (lo[i] != RED_BYTE || hi[i] != RED_BYTE)
                fail("%s wrote %s the %zu-byte %s allocation at %p (byte %zd)", after,
                     lo[i] != RED_BYTE ? "before" : "past the end of", r.bytes, r.host ? "host" : "device",
                     (void *)addr, lo[i] != RED_BYTE ? (ssize_t)i - (ssize_t)RED : (ssize_t)(r.bytes + i));
    }
}

/* What memory holds before anything writes it: words 0xFFF1FFFF, a NaN read
 * as float or as double, a large negative int, and not the all-ones word a
 * "nothing flagged" sentinel may use, so a read of memory no one set shows. */
static void fill_unset(unsigned char *p, size_t bytes)
{
    static const unsigned char word[4] = {0xFF, 0xFF, 0xF1, 0xFF}; /* little-endian 0xFFF1FFFF */
    for (size_t i = 0; i < bytes; i++) p[i] = word[((uintptr_t)(p + i)) % 4];
}

static void *allocate(size_t bytes, bool host)
{
    void *block = nullptr;
    if (posix_memalign(&block, 256, RED + bytes + RED)) return nullptr;
    unsigned char *base = (unsigned char *)block;
    unsigned char *user = base + RED;
    std::memset(base, RED_BYTE, RED);
    if (host)
        std::memset(user, 0, bytes);
    else
        fill_unset(user, bytes);
    std::memset(user + bytes, RED_BYTE, RED);
    regions[(uintptr_t)user] = {bytes, base, host};
    return user;
}

static bool release(void *p, bool host)
{
    auto it = regions.find((uintptr_t)p);
    if (it == regions.end() || it->second.host != host) return false;
    check_red_zones(host ? "before cudaFreeHost, something" : "before cudaFree, something");
    if (!host) device_bytes -= it->second.bytes;
    std::free(it->second.base);
    regions.erase(it);
    return true;
}

bool memory_region(const void *p, uintptr_t *lo, size_t *bytes)
{
    const region *r = find(p, 1);
    if (!r) return false;
    *lo = (uintptr_t)r->base + RED;
    *bytes = r->bytes;
    return true;
}

void check_pointer_arg(const char *kernel, int index, const void *p)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    if (p && !find(p, 1))
        fail("kernel %s: argument %d (%p) is not device memory (a host pointer, freed or never allocated)",
             kernel, index, p);
}

/* ================= errors ================= */

static thread_local cudaError_t last_error = cudaSuccess;

static cudaError_t err(cudaError_t e)
{
    if (e != cudaSuccess) last_error = e;
    return e;
}

/* ================= streams, events, capture ================= */

/* A work item runs and returns null, or a test of work it started that
 * finishes later (enqueue_pending). */
struct graph_node {
    std::string what;
    std::function<pending()> run;
};
} // namespace nn_emu

struct nn_emu_stream {
    bool capturing = false, invalidated = false;
    cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
    std::thread::id owner;
    std::vector<nn_emu::graph_node> nodes; /* while capturing */
    std::deque<nn_emu::graph_node> queue;  /* enqueued, not yet run */
    uint64_t enqueued = 0, done = 0;       /* work items so far: queue = (done, enqueued] */
    /* item number `inflight_seq` (<= done) started and has not finished:
     * the stream is busy, and nothing after it runs until it has */
    nn_emu::pending inflight;
    uint64_t inflight_seq = 0;
};
struct nn_emu_event {
    bool captured = false;             /* recorded on a capturing stream: only meaningful inside the graph */
    nn_emu_stream *stream = nullptr;   /* the last record: that stream's work up to `seq` */
    uint64_t seq = 0;
};
struct nn_emu_graph {
    std::vector<nn_emu::graph_node> nodes;
};
struct nn_emu_graph_exec {
    std::vector<nn_emu::graph_node> nodes;
};

namespace nn_emu {
static nn_emu_stream legacy_stream;
static std::set<nn_emu_stream *> streams;
static thread_local nn_emu_stream *capturing_here; /* a non-relaxed capture begun by this thread */

static nn_emu_stream *stream_of(cudaStream_t s) { return s ? s : &legacy_stream; }

/* An API call that may not run while this thread captures: it fails and
 * invalidates the capture, as the runtime does. */
static bool unsafe_during_capture(const char *what)
{
    if (!capturing_here) return false;
    std::fprintf(stderr, "nn_emu: %s during a stream capture: the capture is invalidated\n", what);
    capturing_here->invalidated = true;
    return true;
}

/* Work runs as late as the program lets it: a stream's queue runs only when
 * something waits for it (a stream or event synchronization, a copy to
 * pageable memory, cudaFree, a stream waiting for an event of another), up
 * to what is waited for. So the host reading a result it did not wait for,
 * or rewriting a buffer a queued copy still reads, sees the difference; and
 * a stream's work runs before another's queued earlier unless an event
 * orders them. An item that starts work finishing later (an emulated NCCL
 * collective in MPI) leaves the stream busy: `block` waits for it, otherwise
 * drain only tests it and returns false while it (or what follows it, up
 * to `upto`) is not done, as a polled stream or event is not ready yet. */
static int draining; /* nesting: a cycle of stream waits would never end on a GPU either */

static bool drain(nn_emu_stream *st, uint64_t upto, bool block = true)
{
    if (++draining > 64)
        fail("streams wait for each other in a cycle (at %s)", st->queue.empty() ? "?" : st->queue.front().what.c_str());
    bool done = true;
    for (;;) {
        if (st->inflight && st->inflight_seq <= upto) {
            if (!st->inflight(block)) {
                done = false;
                break;
            }
            st->inflight = nullptr;
        }
        if (st->done >= upto || st->queue.empty()) break;
        graph_node n = std::move(st->queue.front());
        st->queue.pop_front();
        st->done++;
        if (pending p = n.run()) st->inflight = std::move(p), st->inflight_seq = st->done;
    }
    draining--;
    return done;
}

static void drain_stream(nn_emu_stream *st) { drain(st, st->enqueued); }

static void drain_all(void)
{
    drain_stream(&legacy_stream);
    for (nn_emu_stream *st : streams) drain_stream(st);
}

/* NN_EMU_EAGER=1: every stream but the first one created (the backend's
 * compute stream) runs its work as soon as it is queued, pulling in only what
 * its event waits name; so a side stream (NCCL's, the upload copy stream)
 * that skips a wait overtakes the compute stream's queued work. The default,
 * all lazy, is the other extreme: it hides such overtaking behind the host's
 * next sync, and catches host reads that skip one. */
static nn_emu_stream *first_stream;

static bool eager(const nn_emu_stream *st)
{
    static const bool on = getenv("NN_EMU_EAGER") && *getenv("NN_EMU_EAGER") == '1';
    return on && st != first_stream && st != &legacy_stream;
}

/* Queues `work` on `s`, or records it when `s` captures. */
static cudaError_t enqueue_item(cudaStream_t s, const std::string &what, std::function<pending()> work)
{
    nn_emu_stream *st = stream_of(s);
    if (st->capturing) {
        if (st->invalidated) return err(cudaErrorStreamCaptureInvalidated);
        st->nodes.push_back({what, std::move(work)});
        return cudaSuccess;
    }
    st->queue.push_back({what, std::move(work)});
    st->enqueued++;
    if (eager(st)) drain(st, st->enqueued, false); /* started, not waited for */
    return cudaSuccess;
}

static cudaError_t enqueue(cudaStream_t s, const std::string &what, std::function<void()> work)
{
    return enqueue_item(s, what, [w = std::move(work)]() -> pending {
        w();
        return nullptr;
    });
}

/* ================= fibers ================= */

} // namespace nn_emu

/* Switches stacks: saves the callee-saved registers on the current stack,
 * stores its pointer in *from, loads `to` and restores the registers saved
 * there; a new stack is laid out so that its first switch "returns" into
 * fiber_main (System V x86-64). */
extern "C" void nn_emu_switch(void **from, void *to);
asm(R"(
    .text
    .globl nn_emu_switch
    .hidden nn_emu_switch
    .type nn_emu_switch, @function
nn_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size nn_emu_switch, .-nn_emu_switch
)");

namespace nn_emu {

constexpr size_t STACK = 256 << 10; /* per GPU thread: locals of the kernels are small */
constexpr int MAX_THREADS = 1024;

enum state { RUNNABLE, WAITING, DONE };

struct pending_copy {
    void *dst;
    unsigned char data[16];
    int size;
};

struct fiber {
    void *sp = nullptr;
    unsigned char *stack = nullptr;
    state st = DONE;
    const void *waits_on = nullptr;
    std::vector<pending_copy> open;              /* cp.async not yet committed */
    std::deque<std::vector<pending_copy>> groups; /* committed, oldest first */
};

struct barrier {
    int arrived = 0;
};

static fiber fibers[MAX_THREADS];
static void *sched_sp;
static int nthreads, live, current;
static bool fiber_mode, waited;
static barrier block_barrier, warp_barriers[MAX_THREADS / 32];
constexpr size_t EXCHANGE = 32; /* bytes per lane in a warp collective */
static unsigned char exchange[MAX_THREADS][EXCHANGE];
static const std::function<void()> *body;
static const char *running_kernel;
static std::vector<unsigned char> smem_buf;
static size_t smem_bytes;

/* ASan's view of the stack switches (no-ops without it) */
#if EMU_ASAN
static const void *sched_stack_bottom;
static size_t sched_stack_size;
static void *sched_fake;
#endif

/* scheduler -> fiber t, back when it waits or finishes */
static void run_fiber(int t)
{
#if EMU_ASAN
    __sanitizer_start_switch_fiber(&sched_fake, fibers[t].stack, STACK);
#endif
    nn_emu_switch(&sched_sp, fibers[t].sp);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(sched_fake, nullptr, nullptr);
#endif
}

/* the running fiber -> the scheduler, back when it is run again */
static void yield_fiber(void)
{
    fiber &f = fibers[current];
#if EMU_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, sched_stack_bottom, sched_stack_size);
    nn_emu_switch(&f.sp, sched_sp);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    nn_emu_switch(&f.sp, sched_sp);
#endif
}

int current_thread(void) { return current; }

static void set_index(int t)
{
    current = t;
    threadIdx = {t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
}

static void finish_thread(void);

static void fiber_main(void)
{
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &sched_stack_bottom, &sched_stack_size);
#endif
    for (;;) {
        (*body)();
        finish_thread();
        fibers[current].st = DONE;
        yield_fiber();
    }
}

static void start_fiber(int t)
{
    fiber &f = fibers[t];
    if (!f.stack) {
        f.stack = (unsigned char *)mmap(nullptr, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                                        -1, 0);
        if (f.stack == MAP_FAILED) fail("no memory for a fiber stack");
        void **sp = (void **)(f.stack + STACK);
        *--sp = nullptr;              /* fiber_main's return address: it never returns */
        *--sp = (void *)&fiber_main;  /* where the first switch "returns" */
        for (int i = 0; i < 6; i++) *--sp = nullptr; /* rbp rbx r12-r15 */
        f.sp = sp;
    }
    f.st = RUNNABLE;
}

static void wake(const void *b)
{
    for (int t = 0; t < nthreads; t++)
        if (fibers[t].st == WAITING && fibers[t].waits_on == b) fibers[t].st = RUNNABLE;
}

static void wait_at(barrier &b, int expected, const char *what)
{
    if (!fiber_mode)
        fail("kernel %s waits at %s, but its first launch never waited, so it runs without fibers: "
             "run with NN_EMU_FIBERS=1", running_kernel, what);
    waited = true;
    if (++b.arrived >= expected) {
        b.arrived = 0;
        if (&b == &block_barrier) race_barrier();
        wake(&b);
        return;
    }
    fiber &f = fibers[current];
    const int me = current;
    f.st = WAITING;
    f.waits_on = &b;
    yield_fiber();
    set_index(me);
}

void syncthreads(void) { wait_at(block_barrier, live, "__syncthreads"); }

static int lane_of(int t) { return t % 32; }

/* Every lane of `mask` in the caller's warp puts `bytes` (<= EXCHANGE) in,
 * waits for all, and `read` looks at the others' before anyone writes again. */
template <class F> static void warp_collective(unsigned mask, const void *mine, size_t bytes, const char *what, F read)
{
    const int t = current, lane = lane_of(t), w = t / 32;
    if (!(mask >> lane & 1)) fail("kernel %s: %s from lane %d, outside its mask %#x", running_kernel, what, lane, mask);
    int expected = 0;
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        if (w * 32 + l >= nthreads) fail("kernel %s: %s: mask %#x names lane %d past the block", running_kernel, what, mask, l);
        if (fibers[w * 32 + l].st == DONE)
            fail("kernel %s: %s: lane %d of warp %d is in mask %#x but has exited", running_kernel, what, l, w, mask);
        expected++;
    }
    std::memcpy(exchange[t], mine, bytes);
    wait_at(warp_barriers[w], expected, what); /* every lane's value is in */
    read(exchange + w * 32);
    wait_at(warp_barriers[w], expected, what); /* every lane has read */
}

uint64_t warp_exchange(unsigned mask, uint64_t mine, int from, const char *what)
{
    if (from >= 0 && !(mask >> from & 1))
        fail("kernel %s: %s reads lane %d, outside mask %#x", running_kernel, what, from, mask);
    uint64_t got = mine;
    warp_collective(mask, &mine, sizeof mine, what, [&](const unsigned char(*lanes)[EXCHANGE]) {
        if (from >= 0) std::memcpy(&got, lanes[from], sizeof got);
    });
    return got;
}

static void finish_thread(void)
{
    fiber &f = fibers[current];
    if (!f.open.empty() || !f.groups.empty())
        fail("kernel %s: thread %d ends with cp.async copies never waited for", running_kernel, current);
    live--;
    /* the threads still at __syncthreads no longer wait for this one */
    if (block_barrier.arrived && block_barrier.arrived >= live) {
        block_barrier.arrived = 0;
        race_barrier();
        wake(&block_barrier);
    }
}

static void deadlock(void)
{
    int at_block = 0, at_warp = 0, done = 0;
    for (int t = 0; t < nthreads; t++) {
        if (fibers[t].st == DONE) done++;
        else if (fibers[t].waits_on == &block_barrier) at_block++;
        else at_warp++;
    }
    fail("kernel %s, block (%u, %u, %u): deadlock: %d threads wait at __syncthreads, %d at a warp collective, "
         "%d have exited", running_kernel, blockIdx.x, blockIdx.y, blockIdx.z, at_block, at_warp, done);
}

/* Blocks run so far, and the block each static __shared__ array was last unset in */
static uint64_t block_serial;
static std::unordered_map<void *, uint64_t> static_smem_block;

void shared_unset(void *p, size_t bytes)
{
    race_static_smem(p, bytes);
    uint64_t &last = static_smem_block[p];
    if (last == block_serial) return;
    last = block_serial;
    fill_unset((unsigned char *)p, bytes);
}

static void run_block(void)
{
    block_serial++;
    live = nthreads;
    block_barrier.arrived = 0;
    for (auto &b : warp_barriers) b.arrived = 0;
    fill_unset(smem_buf.data(), smem_bytes);
    race_block();
    if (!fiber_mode) {
        for (int t = 0; t < nthreads; t++) {
            set_index(t);
            (*body)();
            finish_thread();
        }
        return;
    }
    for (int t = 0; t < nthreads; t++) start_fiber(t);
    /* Warps run as far ahead as they can, one at a time, as a GPU may let
     * them: a warp that reads shared memory before a barrier that should
     * protect it sees another warp's later writes. Warp order alternates from
     * block to block (first to last, then last to first), so a race shows
     * whichever warp it favours; the order is fixed, so runs repeat exactly. */
    const int warps = (nthreads + 31) / 32;
    const bool reverse = (blockIdx.x + blockIdx.y + blockIdx.z) % 2;
    while (live > 0) {
        bool ran = false;
        for (int k = 0; k < warps; k++) {
            const int w = reverse ? warps - 1 - k : k;
            for (bool again = true; again;) {
                again = false;
                for (int t = w * 32; t < std::min(nthreads, w * 32 + 32); t++) {
                    if (fibers[t].st != RUNNABLE) continue;
                    set_index(t);
                    run_fiber(t);
                    ran = again = true;
                }
            }
        }
        if (!ran && live > 0) deadlock();
    }
    for (size_t i = smem_bytes; i < smem_buf.size(); i++)
        if (smem_buf[i] != RED_BYTE) fail("kernel %s wrote past its %zu bytes of dynamic shared memory", running_kernel, smem_bytes);
}

void launch_bounds(long long max_threads)
{
    if (nthreads > max_threads)
        fail("kernel %s launched with %d threads a block, over its __launch_bounds__(%lld): a GPU refuses the launch",
             running_kernel, nthreads, max_threads);
}

void *dynamic_smem(void) { return smem_buf.data(); }

[[noreturn]] void trap(void) { fail("kernel %s: __trap()", running_kernel); }

[[noreturn]] void misaligned(const void *p, size_t bytes)
{
    fail("kernel %s: a %zu-byte vector access at %p, not %zu-byte aligned (the GPU stops with 'misaligned address')",
         running_kernel ? running_kernel : "(host code)", bytes, p, bytes);
}

/* ---- cp.async: a copy lands when its group is waited for ---- */
void cp_async(void *dst, const void *src, int size, int src_bytes)
{
    if (size != 4 && size != 8 && size != 16) fail("kernel %s: cp.async of %d bytes", running_kernel, size);
    if (src_bytes < 0 || src_bytes > size) fail("kernel %s: cp.async reads %d of %d bytes", running_kernel, src_bytes, size);
    if ((uintptr_t)dst % size || (uintptr_t)src % size)
        fail("kernel %s: cp.async of %d bytes from %p to %p: both must be aligned to the size", running_kernel, size, src, dst);
    if (src_bytes && !find(src, src_bytes))
        fail("kernel %s: cp.async reads %d bytes at %p, outside device memory", running_kernel, src_bytes, src);
    pending_copy c{dst, {}, size};
    std::memcpy(c.data, src, src_bytes); /* the rest is zero filled */
    fibers[current].open.push_back(c);
}

void cp_async_commit(void)
{
    fiber &f = fibers[current];
    f.groups.push_back(std::move(f.open));
    f.open.clear();
}

void cp_async_wait(int groups_left)
{
    fiber &f = fibers[current];
    while ((int)f.groups.size() > groups_left) {
        for (auto &c : f.groups.front()) {
            race_write(c.dst, c.size);
            std::memcpy(c.dst, c.data, c.size);
        }
        f.groups.pop_front();
    }
}

/* ---- TF32 mma ---- */
unsigned tf32_round(float x) /* cvt.rna.tf32.f32: to nearest, ties away from zero, 10 mantissa bits */
{
    unsigned u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7F800000u) == 0x7F800000u) return u; /* inf, NaN */
    return (u + 0x1000u) & 0xFFFFE000u;
}

void mma_tf32_m16n8k8(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
    /* the warp's fragments, gathered through the exchange (PTX ISA, mma.m16n8k8 .tf32):
     * A row g = lane / 4: a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4); B b0 (k t, n g) b1 (k t+4, n g) */
    float A[16][8], B[8][8];
    const int lane = lane_of(current), g = lane / 4, t = lane % 4;
    unsigned mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
    for (unsigned v : mine)
        if (v & 0x1FFFu) fail("kernel %s: mma operand %#x is not TF32 (low 13 bits set)", running_kernel, v);
    warp_collective(0xFFFFFFFFu, mine, sizeof mine, "mma.sync", [&](const unsigned char(*lanes)[EXCHANGE]) {
        for (int src = 0; src < 32; src++) {
            const int sg = src / 4, st = src % 4;
            float w[6];
            std::memcpy(w, lanes[src], sizeof w);
            A[sg][st] = w[0];
            A[sg + 8][st] = w[1];
            A[sg][st + 4] = w[2];
            A[sg + 8][st + 4] = w[3];
            B[st][sg] = w[4];
            B[st + 4][sg] = w[5];
        }
    });
    /* c0 (g, 2t) c1 (g, 2t+1) c2 (g+8, 2t) c3 (g+8, 2t+1): products exact, summed in double */
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int i = 0; i < 4; i++) {
        double s = c[i];
        for (int k = 0; k < 8; k++) s += (double)A[rows[i]][k] * B[k][cols[i]];
        c[i] = (float)s;
    }
}

/* ---- launches ---- */
std::string instance_name(const char *pretty)
{
    const std::string s = pretty;
    const size_t a = s.find("F = "), b = s.rfind(']');
    return a == std::string::npos || b < a ? s : s.substr(a + 4, b - a - 4);
}

static std::unordered_map<const void *, int> max_dynamic_smem;
static std::unordered_map<const void *, bool> needs_fibers; /* known after a kernel's first launch */

static bool force_fibers(void)
{
    static bool f = getenv("NN_EMU_FIBERS") && *getenv("NN_EMU_FIBERS") == '1';
    return f;
}

/* Blocks run in the order n-1, n-1+s, n-1+2s, ... (mod their count n) for
 * a stride s near 0.618 n and coprime to it (1 for n < 3: last to first): a
 * GPU gives no order at all, so a block that reads what a neighbour block
 * writes in the same launch must not find it written already, as it would
 * in index order. */
static uint64_t block_step(uint64_t blocks)
{
    if (blocks < 3) return 1;
    uint64_t s = blocks * 618 / 1000;
    while (std::gcd(s, blocks) != 1) s++;
    return s;
}

static void run_grid(const config &c, const char *name, const void *fn, const std::function<void()> &b)
{
    gridDim = c.grid;
    blockDim = c.block;
    nthreads = (int)(c.block.x * c.block.y * c.block.z);
    body = &b;
    running_kernel = name;
    smem_bytes = c.smem;
    smem_buf = std::vector<unsigned char>(c.smem + RED, RED_BYTE); /* a new block: exact size for ASan */
    auto known = needs_fibers.find(fn);
    fiber_mode = force_fibers() || known == needs_fibers.end() || known->second;
    waited = false;
    race_launch(name, smem_buf.data(), smem_bytes);
    const uint64_t nx = c.grid.x, nxy = nx * c.grid.y, blocks = nxy * c.grid.z, step = block_step(blocks);
    for (uint64_t k = 0, b = blocks - 1; k < blocks; k++, b = (b + step) % blocks) {
        blockIdx = {(unsigned)(b % nx), (unsigned)(b / nx % c.grid.y), (unsigned)(b / nxy)};
        run_block();
    }
    race_launch_end();
    if (known == needs_fibers.end()) needs_fibers[fn] = waited;
    check_red_zones((std::string("kernel ") + name).c_str());
}

void submit(const config &c, const char *name, const void *fn, std::function<void()> b)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    const unsigned long long threads = (unsigned long long)c.block.x * c.block.y * c.block.z;
    if (!threads || threads > 1024 || c.block.z > 64 || !c.grid.x || !c.grid.y || !c.grid.z ||
        c.grid.x > 2147483647u || c.grid.y > 65535 || c.grid.z > 65535) {
        std::fprintf(stderr, "nn_emu: kernel %s: grid (%u, %u, %u), block (%u, %u, %u): invalid configuration\n", name,
                     c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z);
        err(cudaErrorInvalidConfiguration);
        return;
    }
    auto opt = max_dynamic_smem.find(fn);
    const size_t smem_max = opt != max_dynamic_smem.end() ? (size_t)opt->second : 48 << 10;
    if (c.smem > smem_max) {
        std::fprintf(stderr, "nn_emu: kernel %s: %zu bytes of dynamic shared memory, %zu allowed "
                     "(cudaFuncAttributeMaxDynamicSharedMemorySize)\n", name, c.smem, smem_max);
        err(cudaErrorInvalidValue);
        return;
    }
    if (stream_of(c.stream) != &legacy_stream && !streams.count(stream_of(c.stream))) {
        err(cudaErrorInvalidResourceHandle);
        return;
    }
    std::string what = std::string("kernel ") + name;
    enqueue(c.stream, what, [c, name, fn, b] { run_grid(c, name, fn, b); });
}

bool in_device_memory(const void *p, size_t bytes)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    const region *r = find(p, bytes ? bytes : 1);
    return r && !r->host;
}

cudaError_t enqueue_pending(cudaStream_t s, const char *what, std::function<pending()> start)
{
    std::lock_guard<std::recursive_mutex> g(big_lock);
    if (stream_of(s) != &legacy_stream && !streams.count(stream_of(s))) return err(cudaErrorInvalidResourceHandle);
    return enqueue_item(s, what, std::move(start));
}

} // namespace nn_emu

using namespace nn_emu;
#define LOCK std::lock_guard<std::recursive_mutex> lock_(big_lock)

/* ================= the API ================= */

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    }
    return "unknown error";
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d)
{
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : err(cudaErrorInvalidDevice); }

/* an H100/H200-like device: sm_90, 132 multiprocessors */
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d)
{
    if (d != 0) return err(cudaErrorInvalidDevice);
    switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = 132; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 232448; return cudaSuccess;
    }
    return err(cudaErrorInvalidValue);
}

cudaError_t cudaDeviceSynchronize(void)
{
    LOCK;
    if (unsafe_during_capture("cudaDeviceSynchronize")) return err(cudaErrorStreamCaptureUnsupported);
    drain_all();
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    LOCK;
    *p = nullptr;
    if (unsafe_during_capture("cudaMalloc")) return err(cudaErrorStreamCaptureUnsupported);
    if (device_bytes + bytes > capacity()) return err(cudaErrorMemoryAllocation);
    void *q = allocate(bytes ? bytes : 1, false);
    if (!q) return err(cudaErrorMemoryAllocation);
    device_bytes += bytes ? bytes : 1;
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    LOCK;
    if (!p) return cudaSuccess;
    if (unsafe_during_capture("cudaFree")) return err(cudaErrorStreamCaptureUnsupported);
    drain_all(); /* cudaFree waits for the device */
    return release(p, false) ? cudaSuccess : err(cudaErrorInvalidValue);
}

cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned flags)
{
    LOCK;
    (void)flags; /* under unified addressing, pinned memory is device-visible either way */
    *p = nullptr;
    if (unsafe_during_capture("cudaHostAlloc")) return err(cudaErrorStreamCaptureUnsupported);
    void *q = allocate(bytes ? bytes : 1, true);
    if (!q) return err(cudaErrorMemoryAllocation);
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p)
{
    LOCK;
    if (!p) return cudaSuccess;
    if (unsafe_during_capture("cudaFreeHost")) return err(cudaErrorStreamCaptureUnsupported);
    drain_all();
    return release(p, true) ? cudaSuccess : err(cudaErrorInvalidValue);
}

cudaError_t cudaHostGetDevicePointer(void **d, void *h, unsigned flags)
{
    LOCK;
    const region *r = find(h, 1);
    if (flags || !r || !r->host) return err(cudaErrorInvalidValue);
    *d = h;
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    LOCK;
    *total_bytes = capacity();
    *free_bytes = capacity() - device_bytes;
    return cudaSuccess;
}

/* A copy's two sides: device sides must lie inside one allocation; host
 * sides must not be device memory; the direction must say which is which. */
static cudaError_t check_copy(void *dst, const void *src, size_t n, cudaMemcpyKind k, bool *pageable)
{
    const region *rd = find(dst, n ? n : 1), *rs = find(src, n ? n : 1);
    const bool dst_dev = k == cudaMemcpyHostToDevice || k == cudaMemcpyDeviceToDevice;
    const bool src_dev = k == cudaMemcpyDeviceToHost || k == cudaMemcpyDeviceToDevice;
    *pageable = false;
    if (k == cudaMemcpyDefault) {
        if ((!rd && find(dst, 1)) || (!rs && find(src, 1))) goto overrun;
        *pageable = !rd || !rs;
        return cudaSuccess;
    }
    if (k == cudaMemcpyHostToHost) return cudaSuccess;
    if ((dst_dev && (!rd || rd->host)) || (src_dev && (!rs || rs->host))) {
        if ((dst_dev && find(dst, 1)) || (src_dev && find(src, 1))) goto overrun;
        std::fprintf(stderr, "nn_emu: cudaMemcpy kind %d: the %s side (%p) is not device memory\n", (int)k,
                     dst_dev && (!rd || rd->host) ? "destination" : "source", dst_dev && (!rd || rd->host) ? dst : src);
        return err(cudaErrorInvalidValue);
    }
    if ((!dst_dev && rd && !rd->host) || (!src_dev && rs && !rs->host)) {
        std::fprintf(stderr, "nn_emu: cudaMemcpy kind %d: a host side is device memory\n", (int)k);
        return err(cudaErrorInvalidValue);
    }
    *pageable = (!dst_dev && !rd) || (!src_dev && !rs);
    return cudaSuccess;
overrun:
    std::fprintf(stderr, "nn_emu: cudaMemcpy of %zu bytes from %p to %p runs past the end of an allocation\n", n, src, dst);
    return err(cudaErrorInvalidValue);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    LOCK;
    if (unsafe_during_capture("cudaMemcpy")) return err(cudaErrorStreamCaptureUnsupported);
    bool pageable;
    if (cudaError_t e = check_copy(dst, src, n, k, &pageable)) return e;
    /* the legacy stream's: after its earlier work, not after other (non-blocking) streams' */
    drain_stream(&legacy_stream);
    std::memmove(dst, src, n);
    check_red_zones("cudaMemcpy");
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s)
{
    LOCK;
    bool pageable;
    if (cudaError_t e = check_copy(dst, src, n, k, &pageable)) return e;
    nn_emu_stream *st = stream_of(s);
    if (st->capturing && pageable) {
        if (st->mode != cudaStreamCaptureModeRelaxed && unsafe_during_capture("a copy from pageable host memory"))
            return err(cudaErrorStreamCaptureUnsupported);
    }
    const bool from_pageable = pageable && !find(src, 1), to_pageable = pageable && !find(dst, 1);
    if (from_pageable && !st->capturing) {
        /* from pageable memory the call returns once the source is staged:
         * the caller may reuse it at once, so it is read now */
        auto staged = std::make_shared<std::vector<unsigned char>>((const unsigned char *)src, (const unsigned char *)src + n);
        return enqueue(s, "cudaMemcpyAsync", [dst, staged] {
            std::memcpy(dst, staged->data(), staged->size());
            check_red_zones("cudaMemcpyAsync");
        });
    }
    cudaError_t e = enqueue(s, "cudaMemcpyAsync", [dst, src, n] {
        std::memmove(dst, src, n);
        check_red_zones("cudaMemcpyAsync");
    });
    if (e == cudaSuccess && to_pageable && !st->capturing) drain_stream(st); /* returns with the data */
    return e;
}

static cudaError_t check_set(void *p, size_t n)
{
    const region *r = find(p, n ? n : 1);
    if (!r) {
        std::fprintf(stderr, "nn_emu: cudaMemset of %zu bytes at %p: not inside device memory\n", n, p);
        return err(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
    LOCK;
    if (unsafe_during_capture("cudaMemset")) return err(cudaErrorStreamCaptureUnsupported);
    if (cudaError_t e = check_set(p, n)) return e;
    /* asynchronous on device memory, on the legacy stream: not ordered
     * before work on non-blocking streams */
    return enqueue(nullptr, "cudaMemset", [p, v, n] { std::memset(p, v, n); });
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    LOCK;
    if (cudaError_t e = check_set(p, n)) return e;
    return enqueue(s, "cudaMemsetAsync", [p, v, n] { std::memset(p, v, n); });
}

cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    LOCK;
    (void)flags;
    *s = new nn_emu_stream;
    streams.insert(*s);
    if (!first_stream) first_stream = *s;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    LOCK;
    if (!streams.count(s)) return err(cudaErrorInvalidResourceHandle);
    drain_stream(s); /* its queued work still runs */
    streams.erase(s);
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    LOCK;
    if (stream_of(s)->capturing) {
        stream_of(s)->invalidated = true;
        std::fprintf(stderr, "nn_emu: cudaStreamSynchronize on a capturing stream: the capture is invalidated\n");
        return err(cudaErrorStreamCaptureUnsupported);
    }
    if (unsafe_during_capture("cudaStreamSynchronize")) return err(cudaErrorStreamCaptureUnsupported);
    drain_stream(stream_of(s));
    return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s)
{
    LOCK;
    if (stream_of(s)->capturing) {
        stream_of(s)->invalidated = true;
        return err(cudaErrorStreamCaptureUnsupported);
    }
    /* asked, the work is done (a poll loop ends), but for work still pending */
    return drain(stream_of(s), stream_of(s)->enqueued, false) ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags)
{
    LOCK;
    (void)flags;
    if (!e) return err(cudaErrorInvalidResourceHandle);
    /* joining a capture from another stream would need the graph's fork and join: not modelled */
    if (e->captured && !stream_of(s)->capturing) {
        std::fprintf(stderr, "nn_emu: a stream outside the capture waits for an event recorded inside it\n");
        return err(cudaErrorNotSupported);
    }
    nn_emu_stream *other = e->stream;
    const uint64_t seq = e->seq; /* the record as of now: a later record does not move this wait */
    if (!other || other == stream_of(s) || e->captured) return cudaSuccess;
    return enqueue(s, "cudaStreamWaitEvent", [other, seq] {
        if (other == &legacy_stream || streams.count(other)) drain(other, seq); /* a destroyed one ran all */
    });
}

cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
    (void)flags;
    *e = new nn_emu_event;
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    LOCK;
    if (!e) return err(cudaErrorInvalidResourceHandle);
    nn_emu_stream *st = stream_of(s);
    e->captured = st->capturing;
    e->stream = st->capturing ? nullptr : st;
    e->seq = st->enqueued;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    LOCK;
    if (!e) return err(cudaErrorInvalidResourceHandle);
    if (e->captured || unsafe_during_capture("cudaEventSynchronize")) return err(cudaErrorStreamCaptureUnsupported);
    if (e->stream) drain(e->stream, e->seq);
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e)
{
    LOCK;
    if (!e) return err(cudaErrorInvalidResourceHandle);
    if (e->captured) return err(cudaErrorStreamCaptureUnsupported);
    return !e->stream || drain(e->stream, e->seq, false) ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode)
{
    LOCK;
    nn_emu_stream *st = stream_of(s);
    if (st == &legacy_stream || st->capturing) return err(cudaErrorInvalidValue);
    if (capturing_here && mode != cudaStreamCaptureModeRelaxed) return err(cudaErrorInvalidValue);
    st->capturing = true;
    st->invalidated = false;
    st->mode = mode;
    st->owner = std::this_thread::get_id();
    st->nodes.clear();
    if (mode != cudaStreamCaptureModeRelaxed) capturing_here = st;
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    LOCK;
    *g = nullptr;
    nn_emu_stream *st = stream_of(s);
    if (!st->capturing) return err(cudaErrorStreamCaptureUnmatched);
    if (st->mode != cudaStreamCaptureModeRelaxed && st->owner != std::this_thread::get_id())
        return err(cudaErrorStreamCaptureWrongThread);
    st->capturing = false;
    if (capturing_here == st) capturing_here = nullptr;
    if (st->invalidated) {
        st->nodes.clear();
        return err(cudaErrorStreamCaptureInvalidated);
    }
    *g = new nn_emu_graph{std::move(st->nodes)};
    st->nodes.clear();
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *x, cudaGraph_t g, unsigned long long flags)
{
    LOCK;
    (void)flags;
    if (!g) return err(cudaErrorInvalidValue);
    *x = new nn_emu_graph_exec{g->nodes};
    return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s)
{
    LOCK;
    if (!x) return err(cudaErrorInvalidValue);
    if (stream_of(s)->capturing) return err(cudaErrorNotSupported); /* a graph inside a capture: not modelled */
    auto nodes = std::make_shared<std::vector<graph_node>>(x->nodes); /* the exec may be destroyed before it runs */
    return enqueue(s, "cudaGraphLaunch", [nodes] {
        for (auto &n : *nodes)
            if (pending p = n.run()) p(true); /* each node done before the next */
    });
}

cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    delete g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x)
{
    delete x;
    return cudaSuccess;
}

cudaError_t nn_emu_func_set_attribute(const void *fn, cudaFuncAttribute a, int v)
{
    LOCK;
    if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (v < 0 || v > 232448 - 1024) return err(cudaErrorInvalidValue); /* the opt-in limit less the static reserve */
        max_dynamic_smem[fn] = v;
        return cudaSuccess;
    }
    if (a == cudaFuncAttributePreferredSharedMemoryCarveout) return (v >= -1 && v <= 100) ? cudaSuccess : err(cudaErrorInvalidValue);
    return err(cudaErrorInvalidValue);
}
