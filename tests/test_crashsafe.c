/* Crash-safe training, end to end on the built binary
 * ($CONVNET_BUILD_ROOT/tools/convnet) with a small LeNet run on Fashion-MNIST:
 *  - kill -9 at random moments, many times in a chain (each run resumes the
 *    last checkpoint): the last checkpoint always loads (config, weights,
 *    optimizer state) and its position never goes back; finally eval works;
 *  - SIGINT / SIGTERM: the run finishes its step, saves, exits 128 + sig, and
 *    --resume reaches bit for bit the weights of an uninterrupted run;
 *  - a non-finite loss stops with a message naming the step and a layer;
 *    --skip-nonfinite carries on instead.
 * Skipped when the data set is not installed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/rng.h"
#include "io/dataset.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"

/* Kill -9 trials (CONVNET_KILL_TRIALS overrides). The first run is killed
 * just after its first checkpoint appears, which measures the startup
 * (reading the data set: 0.3 s idle, seconds on a busy machine). Each later
 * run resumes the last checkpoint and is killed
 *  - even trials: after a random delay in [startup * 3/4, startup * 5/4 +
 *    KILL_SPREAD_MS]: the end of startup, training, evaluation or a save;
 *  - odd trials: inside a checkpoint write, 0..KILL_SAVE_US after the 1st to
 *    3rd temporary file appears (inotify): a save takes a few ms of an
 *    epoch's ~100, so random timing alone would rarely hit one. */
#define KILL_TRIALS 30
/* Runs that are interrupted are given the most epochs train accepts, so
 * that no machine is fast enough for one to finish before its signal or
 * kill: every wait below is for a state the program reports (a line of its
 * output, a file it creates), and a delay only ever spreads kills over a
 * run that is still going. */
#define LONG_EPOCHS "100000"
#define KILL_SPREAD_MS 500
#define KILL_SAVE_US 3000

static char bin[4096];
static char root[] = "/tmp/convnet-crash-XXXXXX";

static bool exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
}

/* Starts `convnet ARGV...` (NULL-terminated) with stdout and stderr appended to log. */
static pid_t spawn(const char *log, char *const *args)
{
    char *argv[64];
    int n = 0;
    argv[n++] = bin;
    for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0) _exit(126);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
        execv(bin, argv);
        _exit(127);
    }
    return pid;
}

/* The whole log ("" if absent), valid until the next call: failures jump
 * out of the test (cmocka longjmps), so the buffer is kept here, not freed
 * by callers. */
static char *g_out;

static char *slurp(const char *path)
{
    free(g_out);
    char *buf = g_out = calloc(1, 1);
    assert_non_null(buf);
    FILE *f = fopen(path, "rb");
    if (!f) return buf;
    size_t len = 0;
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        buf = g_out = realloc(buf, len + got + 1);
        assert_non_null(buf);
        memcpy(buf + len, chunk, got);
        len += got;
        buf[len] = '\0';
    }
    fclose(f);
    return buf;
}

static int wait_exit(pid_t pid, int *sig)
{
    int st;
    while (waitpid(pid, &st, 0) < 0) assert_int_equal(errno, EINTR);
    *sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs to the end; asserts the exit status; returns the log (as slurp). */
static char *run_to_end(const char *dir, int want, char *const *args)
{
    char log[4200];
    snprintf(log, sizeof log, "%s/run.log", dir);
    unlink(log);
    int sig;
    int rc = wait_exit(spawn(log, args), &sig);
    char *out = slurp(log);
    if (rc != want) fail_msg("convnet exited %d (signal %d), expected %d; output:\n%s", rc, sig, want, out);
    return out;
}

/* Loads a checkpoint the way `train --resume` does: config and state, the
 * model, the weights and the optimizer state. Returns the state. */
static nn_train_state load_checkpoint(const char *path)
{
    nn_model_config cfg;
    nn_train_state st;
    if (nn_checkpoint_read_config(path, &cfg, &st) != NN_OK) fail_msg("read_config: %s", nn_errmsg());
    nn_seq seq;
    nn_rng rng = nn_rng_make(1);
    assert_int_equal(nn_model_build(&seq, &cfg, NN_CPU, &rng), NN_OK);
    nn_optim *opt = NULL;
    assert_int_equal(nn_optim_new(&opt, &st.optim, &seq.params), NN_OK);
    if (nn_checkpoint_load(path, &seq, opt) != NN_OK) fail_msg("checkpoint_load: %s", nn_errmsg());
    nn_optim_free(opt);
    nn_seq_free(&seq);
    return st;
}

/* Files in dir whose name contains ".tmp." (writes cut short by a kill). */
static int count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

/* Waits (up to 60 s) until the nth file named *.tmp.* is created in the
 * watched folder; false if the process ended first. */
static bool wait_for_temp_file(int ifd, pid_t pid, int nth)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (int waited = 0; waited < 60000; waited += 10) {
        struct pollfd pf = {ifd, POLLIN, 0};
        if (poll(&pf, 1, 10) > 0) {
            ssize_t n = read(ifd, buf, sizeof buf);
            for (ssize_t at = 0; at < n;) {
                const struct inotify_event *e = (const struct inotify_event *)(buf + at);
                if (e->len && strstr(e->name, ".tmp.") && --nth == 0) return true;
                at += (ssize_t)(sizeof *e + e->len);
            }
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) fail_msg("a run ended by itself before it was killed");
    }
    return false;
}

static void make_dir(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", root, name);
    assert_int_equal(mkdir(buf, 0755), 0);
}

static int setup(void **state)
{
    (void)state;
    const char *b = getenv("CONVNET_BUILD_ROOT");
    if (!b || !mkdtemp(root)) return -1;
    snprintf(bin, sizeof bin, "%s/tools/convnet", b);
    /* passive waiting: no re-exec of the binary, and no spinning threads on a busy machine */
    setenv("OMP_WAIT_POLICY", "passive", 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(g_out);
    g_out = NULL;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static void need_data(void)
{
    if (!exists(NN_FMNIST_DEFAULT_DIR "/train-images-idx3-ubyte.gz")) skip();
}

static void wait_for_output(const char *log, pid_t pid, const char *what);

/* ---- kill -9 ------------------------------------------------------------ */

static void test_kill9_leaves_a_loadable_checkpoint(void **state)
{
    (void)state;
    need_data();
    char dir[4200], last[4300], best[4300], log[4300];
    make_dir(dir, sizeof dir, "kill9");
    snprintf(last, sizeof last, "%s/last.safetensors", dir);
    snprintf(best, sizeof best, "%s/best.safetensors", dir);
    snprintf(log, sizeof log, "%s/train.log", dir);
    char *fresh[] = {"train", "--model", "lenet", "--epochs", LONG_EPOCHS, "--limit", "64", "--test-limit", "32",
                     "--batch", "32", "--threads", "1", "--quiet", "--checkpoint-dir", dir, NULL};
    char *resume[] = {"train", "--resume", dir, "--limit", "64", "--test-limit", "32", "--threads", "1",
                      "--quiet", "--checkpoint-dir", dir, NULL};
    nn_rng rng = nn_rng_make(2024);
    int trials = getenv("CONVNET_KILL_TRIALS") ? atoi(getenv("CONVNET_KILL_TRIALS")) : KILL_TRIALS;
    if (trials < 2) trials = 2;
    int prev_epoch = 0, saves_cut = 0;
    long startup_ms = 0;
    int ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    assert_true(ifd >= 0);
    assert_true(inotify_add_watch(ifd, dir, IN_CREATE) >= 0);
    for (int trial = 0; trial < trials; trial++) {
        bool had = exists(last);
        int tmp_before = count_temp_files(dir);
        char drain[4096];
        while (read(ifd, drain, sizeof drain) > 0) {}
        pid_t pid = spawn(log, had ? resume : fresh);
        if (trial == 0) {
            while (!exists(last) && startup_ms < 120000) {
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) fail_msg("the first run ended by itself:\n%s", slurp(log));
                sleep_ms(5);
                startup_ms += 5;
            }
            if (!exists(last)) fail_msg("no checkpoint after 120 s");
            sleep_ms((long)nn_rng_below(&rng, 100));
        } else if (trial % 2) {
            if (!wait_for_temp_file(ifd, pid, 1 + (int)nn_rng_below(&rng, 3)))
                fail_msg("trial %d: no checkpoint write within 60 s", trial);
            usleep(nn_rng_below(&rng, KILL_SAVE_US));
        } else {
            sleep_ms(startup_ms * 3 / 4 + (long)nn_rng_below(&rng, (uint32_t)(startup_ms / 2 + KILL_SPREAD_MS)));
        }
        kill(pid, SIGKILL);
        int sig, rc = wait_exit(pid, &sig);
        if (sig != SIGKILL) {
            char *out = slurp(log);
            fail_msg("trial %d: the run ended by itself (exit %d, signal %d) before the kill:\n%s", trial, rc,
                     sig, out);
        }
        saves_cut += count_temp_files(dir) > tmp_before;
        if (!exists(last)) fail_msg("trial %d: last.safetensors disappeared", trial);
        nn_train_state st = load_checkpoint(last);
        if (st.epoch < prev_epoch)
            fail_msg("trial %d: checkpoint went back from epoch %d to %d", trial, prev_epoch, st.epoch);
        if (st.batch != 0 || st.step != (int64_t)st.epoch * 2)
            fail_msg("trial %d: an end-of-epoch checkpoint at epoch %d holds batch %d, step %lld", trial,
                     st.epoch, st.batch, (long long)st.step);
        prev_epoch = st.epoch;
        if (exists(best)) (void)load_checkpoint(best);
    }
    close(ifd);
    print_message("kill -9: %d kills (startup %ld ms), %d cut a checkpoint write short, last at epoch %d\n",
                  trials, startup_ms, saves_cut, prev_epoch);
    /* the survivors: eval and a resumed run both work */
    char *ev[] = {"eval", "--checkpoint", last, "--batch", "256", NULL};
    run_to_end(dir, 0, ev);
    char *more[] = {"train", "--resume", dir, "--limit", "64", "--test-limit", "32",
                    "--threads", "1", "--quiet", "--checkpoint-dir", dir, NULL};
    /* it continues the checkpoint's LONG_EPOCHS: stop it with SIGTERM once it
     * reports an epoch, which must save and exit 143 */
    snprintf(log, sizeof log, "%s/more.log", dir);
    pid_t pid = spawn(log, more);
    wait_for_output(log, pid, "\nepoch ");
    kill(pid, SIGTERM);
    int sig, rc = wait_exit(pid, &sig);
    char *out = slurp(log);
    if (rc != 128 + SIGTERM) fail_msg("resumed run: exit %d (signal %d) after SIGTERM:\n%s", rc, sig, out);
    nn_train_state st = load_checkpoint(last);
    assert_true(st.epoch >= prev_epoch);
}

/* ---- SIGINT / SIGTERM and resume equivalence ------------------------------ */

/* The signalled run is LONG_EPOCHS of 32 steps, so it is still training
 * whenever the signal lands; it reports the step it stopped after (S). Then
 * it is resumed for EXTRA_STEPS more (--stop-after), and compared bit for bit
 * with a fresh run of the same flags stopped after S + EXTRA_STEPS steps.
 * EXTRA_STEPS crosses an epoch boundary (evaluation, end-of-epoch save).
 * --threads 1 so the arithmetic repeats exactly. */
#define EXTRA_STEPS 40

static void sig_args(char **a, const char *dir, bool resume, long long stop_after)
{
    static char stop[32];
    int n = 0;
    a[n++] = "train";
    if (resume) {
        a[n++] = "--resume";
        a[n++] = (char *)dir;
    } else {
        a[n++] = "--model";
        a[n++] = "lenet";
    }
    const char *rest[] = {"--epochs", LONG_EPOCHS, "--limit", "1024", "--test-limit", "64", "--batch", "32",
                          "--threads", "1", "--quiet", "--checkpoint-dir", dir, NULL};
    for (int i = 0; rest[i]; i++) a[n++] = (char *)rest[i];
    if (stop_after > 0) {
        snprintf(stop, sizeof stop, "%lld", stop_after);
        a[n++] = "--stop-after";
        a[n++] = stop;
    }
    a[n] = NULL;
}

/* Waits until the log contains `what` (the program reports its state there);
 * fails if the run ends first or nothing comes within 5 minutes (a machine
 * loaded beyond any use). */
static void wait_for_output(const char *log, pid_t pid, const char *what)
{
    for (int i = 0; i < 30000; i++) {
        if (strstr(slurp(log), what)) return;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) fail_msg("the run ended before printing '%s':\n%s", what, slurp(log));
        sleep_ms(10);
    }
    fail_msg("the run printed no '%s' within 5 minutes:\n%s", what, slurp(log));
}

/* Every tensor of a and b identical, bit for bit. */
static void assert_same_tensors(const char *a, const char *b)
{
    nn_st_file *fa = NULL, *fb = NULL;
    assert_int_equal(nn_st_open(a, &fa), NN_OK);
    assert_int_equal(nn_st_open(b, &fb), NN_OK);
    assert_int_equal(nn_st_count(fa), nn_st_count(fb));
    for (int i = 0; i < nn_st_count(fa); i++) {
        const nn_st_entry *ea = nn_st_entry_at(fa, i), *eb = nn_st_find(fb, ea->name);
        if (!eb) fail_msg("%s lacks tensor %s", b, ea->name);
        assert_int_equal(ea->nbytes, eb->nbytes);
        if (memcmp(ea->data, eb->data, ea->nbytes) != 0)
            fail_msg("tensor %s differs between the uninterrupted and the resumed run", ea->name);
    }
    nn_st_close(fa);
    nn_st_close(fb);
}

/* Sends sig once the run has printed `when`; checks the exit status, the
 * reported step and the checkpoint, resumes EXTRA_STEPS further and compares
 * with an uninterrupted run stopped at the same step. */
static void check_signal(int sig, const char *name, const char *when)
{
    char dir[4200], log[4300], last[4300], *a[40];
    make_dir(dir, sizeof dir, name);
    snprintf(log, sizeof log, "%s/train.log", dir);
    snprintf(last, sizeof last, "%s/last.safetensors", dir);
    sig_args(a, dir, false, 0);
    pid_t pid = spawn(log, a);
    wait_for_output(log, pid, when);
    kill(pid, sig);
    int got_sig, rc = wait_exit(pid, &got_sig);
    char *out = slurp(log);
    if (rc != 128 + sig) fail_msg("%s: exit %d (signal %d), expected %d:\n%s", name, rc, got_sig, 128 + sig, out);
    char want[64];
    snprintf(want, sizeof want, "stopped by signal %d after step ", sig);
    const char *at = strstr(out, want);
    if (!at) fail_msg("%s: no '%s' in the output:\n%s", name, want, out);
    long long step = atoll(at + strlen(want));
    /* the checkpoint holds exactly the steps reported */
    nn_train_state st = load_checkpoint(last);
    if (st.step != step || step < 1)
        fail_msg("%s: stopped after step %lld but the checkpoint holds step %lld", name, step, (long long)st.step);
    /* resume: the same bits as a run never interrupted, at the same step */
    sig_args(a, dir, true, EXTRA_STEPS);
    run_to_end(dir, 0, a);
    assert_int_equal(load_checkpoint(last).step, step + EXTRA_STEPS);
    char ref[4300], ref_last[4400];
    snprintf(ref, sizeof ref, "%s-uninterrupted", dir);
    assert_int_equal(mkdir(ref, 0755), 0);
    snprintf(ref_last, sizeof ref_last, "%s/last.safetensors", ref);
    sig_args(a, ref, false, step + EXTRA_STEPS);
    run_to_end(ref, 0, a);
    assert_int_equal(load_checkpoint(ref_last).step, step + EXTRA_STEPS);
    assert_same_tensors(ref_last, last);
}

static void test_signals_save_and_resume(void **state)
{
    (void)state;
    need_data();
    /* as soon as training starts (train sets its handlers before printing
     * "training:"), and once the first epoch has been evaluated and saved */
    check_signal(SIGINT, "sigint", "training:");
    check_signal(SIGTERM, "sigterm", "\nepoch 1/");
}

/* ---- non-finite loss ------------------------------------------------------ */

static void test_nonfinite_stops_or_skips(void **state)
{
    (void)state;
    need_data();
    char dir[4200];
    make_dir(dir, sizeof dir, "nonfinite");
    char *stop[] = {"train", "--model", "lenet", "--epochs", "1", "--optim", "sgd", "--lr", "1e6", "--limit", "256",
                    "--test-limit", "32", "--batch", "32", "--threads", "1", "--quiet",
                    "--checkpoint-dir", dir, NULL};
    char *out = run_to_end(dir, 1, stop);
    const char *at = strstr(out, "step ");
    if (!at || !strstr(out, "not finite") || atoi(at + 5) < 1)
        fail_msg("the message does not name the step:\n%s", out);
    /* and the layer: a parameter name of LeNet */
    if (!strstr(out, "features.") && !strstr(out, "classifier."))
        fail_msg("the message does not name the layer:\n%s", out);
    char last[4300];
    snprintf(last, sizeof last, "%s/last.safetensors", dir);
    assert_false(exists(last)); /* nothing saved from a broken run */
    char *skip_args[] = {"train", "--model", "lenet", "--epochs", "1", "--optim", "sgd", "--lr", "1e6", "--limit", "256",
                         "--test-limit", "32", "--batch", "32", "--threads", "1", "--quiet",
                         "--skip-nonfinite", "--checkpoint-dir", dir, NULL};
    out = run_to_end(dir, 0, skip_args);
    if (!strstr(out, "skipping batch")) fail_msg("--skip-nonfinite skipped nothing:\n%s", out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nonfinite_stops_or_skips),
        cmocka_unit_test(test_signals_save_and_resume),
        cmocka_unit_test(test_kill9_leaves_a_loadable_checkpoint),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
