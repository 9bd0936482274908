/* The process group (see dist.h): the launcher's environment, MPI_Init, and
 * collectives held to a deadline: nonblocking MPI calls tested in a loop,
 * because a blocking MPI_Allreduce with a hung peer spins forever, and, for
 * the one blocking call kept for its speed (the host sum), a watchdog thread;
 * rank 0 gathers the per-step flags point to point so it can name a missing
 * rank. */
#include "core/dist.h"

#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "core/backend.h"

#if NN_HAVE_MPI
#include <mpi.h>
#endif
#include "cuda/module.h" /* GPU: device selection and NCCL live in the CUDA module */

static struct {
    bool active;
    int rank, size, local_rank;
    double timeout;
    bool nccl_ready; /* the module's communicator is made */
} g = {.size = 1, .timeout = NN_DIST_DEFAULT_TIMEOUT};

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

void nn_dist_env(int *rank, int *size, int *local_rank, const char **launcher)
{
    *rank = 0, *size = 1, *local_rank = 0, *launcher = NULL;
    if (getenv("OMPI_COMM_WORLD_SIZE")) {
        *rank = env_int("OMPI_COMM_WORLD_RANK", 0), *size = env_int("OMPI_COMM_WORLD_SIZE", 1);
        *local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0), *launcher = "mpirun";
    } else if (getenv("PMI_SIZE")) { /* MPICH's hydra and friends */
        *rank = env_int("PMI_RANK", 0), *size = env_int("PMI_SIZE", 1);
        *local_rank = env_int("MPI_LOCALRANKID", 0), *launcher = "pmi";
    } else if (getenv("SLURM_STEP_NUM_TASKS")) {
        /* srun sets the STEP variables; a batch script alone has SLURM_NTASKS
         * too, and must not wait for peers that were never started */
        *rank = env_int("SLURM_PROCID", 0), *size = env_int("SLURM_STEP_NUM_TASKS", 1);
        *local_rank = env_int("SLURM_LOCALID", 0), *launcher = "srun";
    }
}

#if NN_HAVE_MPI
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
#endif

uint64_t nn_hash_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

bool nn_dist_active(void) { return g.active; }
int nn_dist_rank(void) { return g.rank; }
int nn_dist_size(void) { return g.size; }
int nn_dist_local_rank(void) { return g.local_rank; }
void nn_dist_set_timeout(double seconds) { g.timeout = seconds > 0 ? seconds : NN_DIST_DEFAULT_TIMEOUT; }
double nn_dist_timeout(void) { return g.timeout; }

/* The module's NCCL, or NULL (no CUDA module, or one built without NCCL). */
static const nn_cuda_nccl *nccl(void)
{
    const nn_cuda_module *m = NN_HAVE_NCCL ? nn_cuda_module_get() : NULL;
    return m ? m->nccl : NULL;
}

const char *nn_dist_backend(nn_device dev)
{
    if (!g.active) return "none";
    return dev == NN_CUDA && nccl() ? "nccl" : "mpi";
}

static nn_status select_device(void)
{
    /* one process per GPU: before any other CUDA call picks device 0 (no
     * module loaded, no GPU: nothing to select) */
    const nn_cuda_module *m = NN_HAVE_CUDA && g.local_rank > 0 ? nn_cuda_module_get() : NULL;
    return m ? m->select_device(g.local_rank) : NN_OK;
}

#if NN_HAVE_MPI

nn_status nn_dist_init(void)
{
    const char *launcher;
    nn_dist_env(&g.rank, &g.size, &g.local_rank, &launcher);
    if (!launcher || g.active) return NN_OK;
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) return nn_error(NN_E_IO, "dist: MPI_Init failed (launched by %s)", launcher);
    g.active = true;
    /* errors as values: a failed call returns its code instead of aborting */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g.size);
    return select_device();
}

static nn_status watch(const char *fmt, ...);
static void unwatch(void);
static void watchdog_stop(void);

void nn_dist_finalize(void)
{
    if (!g.active) return;
    if (g.nccl_ready) nccl()->destroy();
    g.nccl_ready = false;
    /* Open MPI's finalize waits for every rank (a fence): bounded too */
    const bool watched = watch("MPI_Finalize") == NN_OK;
    MPI_Finalize();
    if (watched) unwatch();
    watchdog_stop();
    g.active = false;
}

void nn_dist_abort(int code)
{
    fflush(stdout), fflush(stderr);
    if (g.active) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

/* Tests req until done or the deadline: spinning first (a step's collectives
 * are short), then sleeping 50 us between tests so a waiting rank leaves the
 * cores to its busy peers. */
static bool wait_until(MPI_Request *req, int n, double deadline)
{
    for (long spins = 0;; spins++) {
        int done = 0;
        MPI_Testall(n, req, &done, MPI_STATUSES_IGNORE);
        if (done) return true;
        if (now() > deadline) return false;
        if (spins > 2000) nanosleep(&(struct timespec){0, 50000}, NULL);
    }
}

/* The request stays pending: MPI forbids freeing or cancelling a collective's,
 * and the program ends the job (nn_dist_abort) after such a status anyway. */
static nn_status timed_out(MPI_Request *req, int n, const char *what)
{
    (void)req, (void)n;
    return nn_error(NN_E_IO, "dist: rank %d: %s did not complete within %g s (a peer died or hangs)", g.rank, what,
                    g.timeout);
}

/* Host buffers for a device's data (NCCL absent): sized once, kept. */
static void *staging(size_t bytes)
{
    static void *buf;
    static size_t cap;
    if (bytes <= cap) return buf;
    void *p = realloc(buf, bytes);
    if (!p) return NULL;
    buf = p, cap = bytes;
    return buf;
}

/* The module's communicator, made on first use: rank 0's id through MPI. */
static nn_status nccl_comm(const nn_cuda_nccl *nc)
{
    if (g.nccl_ready) return NN_OK;
    unsigned char id[512];
    if (nc->id_bytes > sizeof id) return nn_error(NN_E_UNSUPPORTED, "dist: NCCL's id is %zu bytes", nc->id_bytes);
    if (g.rank == 0) NN_TRY(nc->unique_id(id));
    NN_TRY(nn_dist_broadcast(id, nc->id_bytes, NN_CPU));
    /* NCCL's rendezvous blocks until every rank joins: a peer that hangs
     * before joining would leave this one waiting for ever */
    NN_TRY(watch("NCCL's communicator setup (ncclCommInitRank)"));
    const nn_status st = nc->init(g.size, g.rank, id);
    unwatch();
    NN_TRY(st);
    g.nccl_ready = true;
    return NN_OK;
}

/* ---- the watchdog of the blocking sum ----
 * A blocking call cannot give up: a peer that dies or hangs inside it leaves
 * this rank waiting for ever. So a thread holds such calls to the timeout:
 * armed before the call, disarmed after; if the deadline passes while armed,
 * it prints what timed_out would and ends this process with status 1, which
 * makes the launcher end the rest of the job. The one place the library ends
 * a process itself: its caller is stuck inside MPI and cannot be handed a
 * status. Started on first use, so a process that never sums starts none. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    pthread_t thread;
    bool running, armed, quit;
    struct timespec deadline;
    char what[96];
} dog = {.mu = PTHREAD_MUTEX_INITIALIZER};

static bool passed(const struct timespec *t)
{
    struct timespec n;
    clock_gettime(CLOCK_MONOTONIC, &n);
    return n.tv_sec > t->tv_sec || (n.tv_sec == t->tv_sec && n.tv_nsec >= t->tv_nsec);
}

static void *watchdog(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&dog.mu);
    while (!dog.quit) {
        if (dog.armed && passed(&dog.deadline)) {
            fprintf(stderr,
                    "dist: rank %d: %s did not complete within %g s (a peer died or hangs); ending this process\n",
                    g.rank, dog.what, g.timeout);
            fflush(stderr);
            _exit(1); /* not exit(): the main thread is inside MPI; no atexit handler may run beside it */
        }
        /* woken by arm, disarm and stop; a stale deadline just loops */
        if (dog.armed) pthread_cond_timedwait(&dog.cv, &dog.mu, &dog.deadline);
        else pthread_cond_wait(&dog.cv, &dog.mu);
    }
    pthread_mutex_unlock(&dog.mu);
    return NULL;
}

static nn_status watchdog_start(void)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) ||
        pthread_cond_init(&dog.cv, &ca))
        return nn_error(NN_E_IO, "dist: rank %d: cannot make the watchdog's condition variable", g.rank);
    pthread_condattr_destroy(&ca);
    dog.quit = false, dog.armed = false; /* before the thread reads them */
    int e = pthread_create(&dog.thread, NULL, watchdog, NULL);
    if (e) {
        pthread_cond_destroy(&dog.cv);
        return nn_error(NN_E_IO, "dist: rank %d: cannot start the watchdog thread: %s", g.rank, strerror(e));
    }
    dog.running = true;
    return NN_OK;
}

/* Arms the watchdog for a blocking call (what: printf-style, for the message). */
static nn_status watch(const char *fmt, ...)
{
    if (!dog.running) NN_TRY(watchdog_start());
    pthread_mutex_lock(&dog.mu);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dog.what, sizeof dog.what, fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_MONOTONIC, &dog.deadline);
    const double span = g.timeout < 1e9 ? g.timeout : 1e9; /* no time_t overflow */
    const double end = (double)dog.deadline.tv_nsec * 1e-9 + span;
    dog.deadline.tv_sec += (time_t)end;
    dog.deadline.tv_nsec = (long)((end - (double)(time_t)end) * 1e9);
    dog.armed = true;
    pthread_cond_signal(&dog.cv);
    pthread_mutex_unlock(&dog.mu);
    return NN_OK;
}

static void unwatch(void)
{
    pthread_mutex_lock(&dog.mu);
    dog.armed = false;
    pthread_mutex_unlock(&dog.mu); /* no signal: the thread wakes at the old deadline and waits again */
}

static void watchdog_stop(void)
{
    if (!dog.running) return;
    pthread_mutex_lock(&dog.mu);
    dog.quit = true, dog.armed = false;
    pthread_cond_signal(&dog.cv);
    pthread_mutex_unlock(&dog.mu);
    pthread_join(dog.thread, NULL);
    pthread_cond_destroy(&dog.cv);
    dog.running = false;
}

/* Pieces of the host sum. Open MPI 4.1 over shared memory, 2 ranks, the
 * paper-size gradients (62.4 M floats, 250 MB; build/benchmarks/allreduce_bench):
 * one MPI_Allreduce 107-115 ms, pieces of 1 MiB one after another 42-46 ms
 * (a piece and its peer's stay in cache), of 64 KiB 54 ms, of 16 MiB 45 ms;
 * its nonblocking all-reduce (libnbc), waited for piece by piece, 74-164 ms.
 * So blocking calls, 1 MiB each, under the watchdog's deadline. */
#define HOST_SUM_PIECE ((size_t)1 << 18) /* floats */

static nn_status host_sum(float *buf, size_t n)
{
    NN_TRY(watch("the all-reduce of %zu floats", n));
    nn_status st = NN_OK;
    for (size_t done = 0; done < n && st == NN_OK;) {
        const int c = (int)(n - done < HOST_SUM_PIECE ? n - done : HOST_SUM_PIECE);
        if (MPI_Allreduce(MPI_IN_PLACE, buf + done, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            st = nn_error(NN_E_IO, "dist: rank %d: MPI_Allreduce failed", g.rank);
        done += (size_t)c;
    }
    unwatch();
    return st;
}

static nn_status host_bcast(void *buf, size_t bytes)
{
    MPI_Request req;
    for (size_t done = 0; done < bytes;) {
        int c = bytes - done > (size_t)1 << 30 ? 1 << 30 : (int)(bytes - done);
        if (MPI_Ibcast((char *)buf + done, c, MPI_BYTE, 0, MPI_COMM_WORLD, &req) != MPI_SUCCESS)
            return nn_error(NN_E_IO, "dist: rank %d: MPI_Ibcast failed", g.rank);
        if (!wait_until(&req, 1, now() + g.timeout)) return timed_out(&req, 1, "the broadcast from rank 0");
        done += (size_t)c;
    }
    return NN_OK;
}

/* Device data through a host copy: out, reduce, back. */
static nn_status staged(void *buf, size_t bytes, nn_device dev, bool sum)
{
    void *h = staging(bytes);
    if (!h) return nn_error(NN_E_NOMEM, "dist: no host memory to stage %zu bytes", bytes);
    const nn_backend *be = nn_backend_get(dev);
    NN_TRY(be->copy(h, NN_CPU, buf, dev, bytes));
    NN_TRY(sum ? host_sum(h, bytes / sizeof(float)) : host_bcast(h, bytes));
    return be->copy(buf, dev, h, NN_CPU, bytes);
}

nn_status nn_dist_allreduce_sum(float *buf, size_t n, nn_device dev)
{
    if (!g.active || n == 0) return NN_OK; /* one rank too: the path a GPU check runs alone */
    const nn_cuda_nccl *nc = dev == NN_CUDA ? nccl() : NULL;
    if (nc) {
        NN_TRY(nccl_comm(nc));
        return nc->sum(buf, n, g.timeout);
    }
    if (dev != NN_CPU) return staged(buf, n * sizeof *buf, dev, true);
    return host_sum(buf, n);
}

bool nn_dist_overlaps(nn_device dev)
{
    if (!g.active) return false;
    return dev == NN_CPU || (dev == NN_CUDA && nccl() && nccl()->start_sum);
}

/* The started host sums (MPI requests must outlive the call that starts them). */
static MPI_Request pending[NN_DIST_MAX_PENDING];
static int npending;

nn_status nn_dist_start_sum(float *buf, size_t n, nn_device dev)
{
    if (!nn_dist_overlaps(dev))
        return nn_error(NN_E_UNSUPPORTED, "dist: no overlapped sum of %s buffers here (%s)", nn_device_name(dev),
                        nn_dist_backend(dev));
    if (n == 0) return NN_OK;
    if (dev != NN_CPU) {
        NN_TRY(nccl_comm(nccl()));
        return nccl()->start_sum(buf, n);
    }
    if (npending == NN_DIST_MAX_PENDING || n > (size_t)1 << 30)
        return nn_error(NN_E_ARG, "dist: %d sums started (at most %d) or %zu floats in one (at most 2^30)", npending,
                        NN_DIST_MAX_PENDING, n);
    if (MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &pending[npending]) !=
        MPI_SUCCESS)
        return nn_error(NN_E_IO, "dist: rank %d: MPI_Iallreduce failed", g.rank);
    npending++;
    return NN_OK;
}

void nn_dist_progress(void)
{
    int done;
    if (npending) MPI_Testall(npending, pending, &done, MPI_STATUSES_IGNORE);
}

nn_status nn_dist_wait_sums(nn_device dev)
{
    if (dev != NN_CPU) return nn_dist_overlaps(dev) && g.nccl_ready ? nccl()->wait_sums(g.timeout) : NN_OK;
    if (npending && !wait_until(pending, npending, now() + g.timeout))
        return timed_out(pending, npending, "the bucketed gradient all-reduce");
    npending = 0;
    return NN_OK;
}

nn_status nn_dist_allreduce_sum_f64(double *buf, int n)
{
    if (!g.active || g.size == 1 || n <= 0) return NN_OK;
    MPI_Request req;
    if (MPI_Iallreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &req) != MPI_SUCCESS)
        return nn_error(NN_E_IO, "dist: rank %d: MPI_Iallreduce failed", g.rank);
    return wait_until(&req, 1, now() + g.timeout) ? NN_OK : timed_out(&req, 1, "the sum of evaluation counts");
}

nn_status nn_dist_broadcast(void *buf, size_t bytes, nn_device dev)
{
    if (!g.active || g.size == 1 || bytes == 0) return NN_OK;
    const nn_cuda_nccl *nc = dev == NN_CUDA ? nccl() : NULL;
    if (nc) {
        NN_TRY(nccl_comm(nc));
        return nc->bcast(buf, bytes, g.timeout);
    }
    if (dev != NN_CPU) return staged(buf, bytes, dev, false);
    return host_bcast(buf, bytes);
}

#define AGREE_TAG 4711
#define AGREE_MAX 16

/* Rank 0: every other rank's flags, naming the ones that never came. */
static nn_status agree_root(int *flags, int n, const char *what)
{
    int *all = calloc((size_t)g.size * n, sizeof *all);
    MPI_Request *req = calloc((size_t)g.size, sizeof *req);
    if (!all || !req) return free(all), free(req), nn_error(NN_E_NOMEM, "dist: out of memory");
    for (int r = 1; r < g.size; r++) MPI_Irecv(all + (size_t)r * n, n, MPI_INT, r, AGREE_TAG, MPI_COMM_WORLD, &req[r]);
    bool ok = wait_until(req + 1, g.size - 1, now() + g.timeout);
    if (!ok) {
        char late[256] = "";
        for (int r = 1; r < g.size; r++) {
            int done = 0;
            MPI_Test(&req[r], &done, MPI_STATUS_IGNORE);
            if (done) continue;
            size_t l = strlen(late);
            snprintf(late + l, sizeof late - l, "%s%d", l ? ", " : "", r);
            MPI_Cancel(&req[r]);
        }
        free(all), free(req);
        return nn_error(NN_E_IO, "dist: rank %s did not reach %s within %g s (dead or hung); ending the job", late,
                        what, g.timeout);
    }
    for (int r = 1; r < g.size; r++)
        for (int i = 0; i < n; i++) flags[i] = all[(size_t)r * n + i] > flags[i] ? all[(size_t)r * n + i] : flags[i];
    for (int r = 1; r < g.size; r++) MPI_Isend(flags, n, MPI_INT, r, AGREE_TAG, MPI_COMM_WORLD, &req[r]);
    ok = wait_until(req + 1, g.size - 1, now() + g.timeout);
    free(all), free(req);
    return ok ? NN_OK : nn_error(NN_E_IO, "dist: rank 0: the answer to %s was not taken within %g s", what, g.timeout);
}

/* Other ranks: send, then wait for rank 0's answer a little longer than rank
 * 0 waits, so that rank 0 is the one to name a missing rank. */
static nn_status agree_leaf(int *flags, int n, const char *what)
{
    MPI_Request req[2];
    int mine[AGREE_MAX];
    memcpy(mine, flags, (size_t)n * sizeof *flags);
    MPI_Isend(mine, n, MPI_INT, 0, AGREE_TAG, MPI_COMM_WORLD, &req[0]);
    MPI_Irecv(flags, n, MPI_INT, 0, AGREE_TAG, MPI_COMM_WORLD, &req[1]);
    if (wait_until(req, 2, now() + g.timeout * 1.5 + 5.0)) return NN_OK;
    return nn_error(NN_E_IO, "dist: rank %d: rank 0 did not answer at %s within %g s (dead or hung)", g.rank, what,
                    g.timeout * 1.5 + 5.0);
}

nn_status nn_dist_agree(int *flags, int n, const char *what)
{
    if (!g.active || g.size == 1) return NN_OK;
    if (n < 1 || n > AGREE_MAX) return nn_error(NN_E_ARG, "dist: %d flags to agree on (1 to %d)", n, AGREE_MAX);
    return g.rank == 0 ? agree_root(flags, n, what) : agree_leaf(flags, n, what);
}

nn_status nn_dist_check_equal(uint64_t value, const char *what)
{
    if (!g.active || g.size == 1) return NN_OK;
    unsigned long long *all = calloc((size_t)g.size, sizeof *all), v = value;
    if (!all) return nn_error(NN_E_NOMEM, "dist: out of memory");
    MPI_Request req;
    MPI_Iallgather(&v, 1, MPI_UNSIGNED_LONG_LONG, all, 1, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD, &req);
    if (!wait_until(&req, 1, now() + g.timeout)) return free(all), timed_out(&req, 1, "the equality check");
    char differ[256] = "";
    for (int r = 1; r < g.size; r++) {
        size_t l = strlen(differ);
        if (all[r] != all[0]) snprintf(differ + l, sizeof differ - l, "%s%d", l ? ", " : "", r);
    }
    free(all);
    if (!*differ) return NN_OK;
    return nn_error(NN_E_FORMAT, "dist: %s differs between rank 0 and rank %s", what, differ);
}

#else /* no MPI: one process */

nn_status nn_dist_init(void)
{
    const char *launcher;
    nn_dist_env(&g.rank, &g.size, &g.local_rank, &launcher);
    if (g.size > 1)
        return nn_error(NN_E_UNSUPPORTED, "dist: started by %s as rank %d of %d, but this build has no MPI "
                                          "(install libopenmpi-dev and rebuild with -Dmpi=enabled)",
                        launcher, g.rank, g.size);
    g.rank = 0;
    return select_device();
}

void nn_dist_finalize(void) {}

void nn_dist_abort(int code)
{
    fflush(stdout), fflush(stderr);
    exit(code);
}

nn_status nn_dist_allreduce_sum(float *buf, size_t n, nn_device dev)
{
    (void)buf, (void)n, (void)dev;
    return NN_OK;
}

bool nn_dist_overlaps(nn_device dev)
{
    (void)dev;
    return false;
}

nn_status nn_dist_start_sum(float *buf, size_t n, nn_device dev)
{
    (void)buf, (void)n;
    return nn_error(NN_E_UNSUPPORTED, "dist: no overlapped sum of %s buffers in a build without MPI",
                    nn_device_name(dev));
}

void nn_dist_progress(void) {}

nn_status nn_dist_wait_sums(nn_device dev)
{
    (void)dev;
    return NN_OK;
}

nn_status nn_dist_allreduce_sum_f64(double *buf, int n)
{
    (void)buf, (void)n;
    return NN_OK;
}

nn_status nn_dist_broadcast(void *buf, size_t bytes, nn_device dev)
{
    (void)buf, (void)bytes, (void)dev;
    return NN_OK;
}

nn_status nn_dist_agree(int *flags, int n, const char *what)
{
    (void)flags, (void)n, (void)what;
    return NN_OK;
}

nn_status nn_dist_check_equal(uint64_t value, const char *what)
{
    (void)value, (void)what;
    return NN_OK;
}

#endif
