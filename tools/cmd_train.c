/* convnet train: the main job. Trains a model on Fashion-MNIST (or an image
 * folder) with visible progress, tests it every epoch, checkpoints every
 * epoch (and on SIGINT / SIGTERM), and resumes exactly from a checkpoint.
 * The training itself is the library's (models/train.h): this file parses
 * flags, opens the data, and prints what the trainer reports. */
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/cli.h"
#include "tools/data.h"
#include "core/backend.h"
#include "core/threads.h"
#include "io/dataset.h"
#include "core/dist.h"
#include "models/checkpoint.h"
#include "models/dist_train.h"
#include "models/evaluate.h"
#include "models/metrics.h"
#include "models/train.h"
#include "models/weights.h"
#include "tools/model_cli.h"

/* The default run: AlexNet's architecture at half width on 64x64 inputs fits
 * the 15-minute budget of a 2-core CPU; the full model is one flag away.
 * Measured on Fashion-MNIST (seed 1, 12k-image sweeps, then full runs): Adam
 * beats the paper's SGD in so few epochs, and augmentation and dropout 0.5
 * only slow convergence there (SGD lr 0.01, shifts+flips, dropout 0.5, 4
 * epochs: 87.2% test; Adam, no augmentation, dropout 0.3: 88.3% after 2). */
#define DEF_SIZE 64
#define DEF_WIDTH 0.5f
#define DEF_FC 1024
#define DEF_EPOCHS 3
#define DEF_BATCH 64
#define DEF_DROPOUT 0.3f
#define DEF_LR_SGD 0.01f
#define DEF_LR_ADAM 1e-3f
/* MiB per gradient bucket under mpirun/srun (models/dist_train.h), on a GPU
 * with NCCL: the default model's 8.5 MB in 3 buckets (fc7-fc8, conv2-fc6,
 * conv1), the paper-size model's 250 MB in about 6 (whole parameters: fc6
 * alone is 151 MB). On the CPU, one sum after backward (0): MPI progresses
 * only inside MPI calls, so the cores that run backward also do the sums
 * either way, and Open MPI's nonblocking all-reduce is slower than its
 * blocking one in pieces (core/dist.c). 2 ranks x 1 thread, images/s with 4
 * MiB buckets against one sum: paper-size 49-50 / 56, default model
 * 1851-1940 / 1990-2002, LeNet 29,236-29,762 / 33,119-34,401 (commit after
 * 8b17717, a quiet 2-core machine). */
#define DEF_DIST_BUCKET_MB_GPU 4
#define DEF_DIST_BUCKET_MB NAN /* not given (no flag value is NaN): by device, above */
#define STR_(x) #x
#define STR(x) STR_(x)
#define DEF_LOG_EVERY 50 /* steps between metrics.jsonl step lines: a few hundred lines per run, not thousands */

typedef struct train_opts {
    const char *model, *device, *data, *ckdir, *resume, *optim, *schedule, *init, *init_from, *fault;
    int size, epochs, batch, threads, groups, fc, limit, test_limit, stop_after, log_every, emulate_ranks;
    float width, lr, momentum, wd, dropout, dist_timeout, dist_bucket_mb;
    uint64_t seed;
    bool augment, no_augment, decay_bias, skip_nonfinite, quiet;
} train_opts;

/* One run: what the steps of cmd_train hand each other. */
typedef struct train_run {
    train_opts o;
    nn_model_config cfg;
    nn_train_state st;
    char resume_path[4096];
    nn_device dev;
    int threads;
    cli_data data;
    nn_seq seq;
    nn_trainer *tr;
    nn_data_norm norm;  /* an image folder's, stored in the checkpoints for predict */
    bool has_norm;
    nn_metrics_logger *log;
    bool log_warned;
    bool tty;
    double last_print;  /* elapsed time of the last progress line */
    /* data parallelism (models/dist_train.h) */
    int rank, ranks;
    nn_shard train_shard, test_shard;
    nn_dp *dp;
    bool fixed_given[32]; /* of fixed_by_checkpoint (below): given on the command line */
    bool epochs_given;
    char lenet_given[64]; /* AlexNet-only flags given ("--width, --fc"), refused for --model lenet */
} train_run;

/* The flags whose values a checkpoint fixes, and the field each sets. Given
 * with --resume they must say what the checkpoint says (the same command line
 * with --resume added is the usual way to continue a run); another value
 * would be silently ignored, so it is an error. The first NARCH are the
 * architecture, which --init-from takes from its file the same way. */
typedef struct fixed_flag {
    const char *name;
    size_t off, size; /* the field in train_run */
    bool text;        /* a NUL-terminated string */
} fixed_flag;
#define FIXED(name, field, text) {name, offsetof(train_run, field), sizeof(((train_run *)0)->field), text}
static const fixed_flag fixed_by_checkpoint[] = {
    FIXED("model", cfg.arch, true), FIXED("size", cfg.in_size, false), FIXED("width", cfg.width, false),
    FIXED("fc", cfg.fc, false), FIXED("groups", cfg.groups, false), FIXED("dropout", cfg.dropout, false),
    FIXED("init", cfg.init, false), FIXED("batch", st.batch_size, false), FIXED("lr", st.optim.lr, false),
    FIXED("optim", st.optim.kind, false), FIXED("momentum", st.optim.momentum, false),
    FIXED("wd", st.optim.weight_decay, false), FIXED("decay-bias", st.optim.decay_bias, false),
    FIXED("schedule", st.sched.kind, false), FIXED("seed", st.seed, false), FIXED("limit", st.limit, false),
    FIXED("augment", st.augment, false), FIXED("no-augment", st.augment, false),
};
#undef FIXED
enum { NFIXED = sizeof fixed_by_checkpoint / sizeof fixed_by_checkpoint[0], NARCH = 5 };
_Static_assert(NFIXED <= sizeof ((train_run *)0)->fixed_given, "train_run.fixed_given holds a flag each");

static volatile sig_atomic_t g_signal;
static volatile sig_atomic_t g_agreed; /* g_signal as every rank agreed on it (what the trainer watches) */
/* One process, no emulated ranks, no fault injection: no after_backward hook
 * (a step with one cannot be captured, NN_CUDA_GRAPH), so no rank agrees on a
 * signal and the handler sets g_agreed itself. */
static volatile sig_atomic_t g_alone; /* set before the handler is installed */

static void on_signal(int sig)
{
    g_signal = sig;
    if (g_alone) g_agreed = sig;
}

static void fmt_time(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 359999) s = 0;
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

static const char about[] =
    "Trains a model on Fashion-MNIST (Debian's dataset-fashion-mnist; --data DIR overrides), or on\n"
    "an image folder (--data DIR with DIR/train/CLASS/*.jpg and DIR/val/CLASS/...).\n"
    "With no options: AlexNet's architecture (every layer of the paper) at half width (--width 0.5,\n"
    "--fc 1024) on 64x64 inputs, 3 epochs, He init, Adam with a cosine schedule, dropout 0.3:\n"
    "about 1.5 minutes on a 2-core CPU (measured 1:28).\n"
    "The full model and recipe of the paper: --size 224 --width 1 --fc 4096 --init paper --optim sgd\n"
    "--dropout 0.5 --schedule plateau --batch 128 (on a GPU: --device cuda). On Fashion-MNIST use --init he\n"
    "there: with the paper's init (made for ImageNet) that run diverges in its first steps and stays at chance.\n"
    "A checkpoint is written to DIR/last.safetensors every epoch and on Ctrl-C; --resume continues it\n"
    "exactly, taking the model, data, optimizer and schedule settings from the checkpoint (only --epochs,\n"
    "to extend the run, --device, --threads, --checkpoint-dir, --stop-after, --log-every and --quiet apply;\n"
    "the model and recipe flags may be repeated but must match: the same command line plus --resume works).\n"
    "--init-from FILE fine-tunes: the architecture and weights of FILE (a convnet checkpoint or a weights-only\n"
    "file as PyTorch saves it), the classes and channels of the data; tensors whose shape differs (the last\n"
    "layer for another number of classes) are freshly initialized and named; the optimizer starts fresh.\n"
    "Every epoch (and every --log-every steps) a JSON line goes to DIR/metrics.jsonl and DIR/curves.svg is\n"
    "redrawn (DIR: --checkpoint-dir); a resumed run continues both.\n"
    "Under mpirun or srun: N processes train as one, --batch being the global batch (README: \"Many\n"
    "processes, many machines\"); SIGUSR1 saves and stops like SIGINT.";

/* How the gradients are summed (the buckets need nn_dist_overlaps: models/dist_train.h). */
static const char *bucketing(const train_run *r)
{
    static char b[64];
    if (!(r->o.dist_bucket_mb > 0) || !nn_dist_overlaps(r->dev)) return "after backward";
    snprintf(b, sizeof b, "in %g MiB buckets during backward", (double)r->o.dist_bucket_mb);
    return b;
}

/* Flags into r->o; CLI_GO_ON, or the exit status (0 for --help, 2 for a usage error). */
static int parse_opts(train_run *r, int argc, char **argv)
{
    train_opts o = {
        .model = "alexnet", .device = NULL, .data = NULL, .ckdir = "runs/train", .resume = NULL,
        .optim = "adam", .schedule = "cosine", .init = "he",
        .size = 0, .log_every = DEF_LOG_EVERY, .epochs = DEF_EPOCHS, .batch = DEF_BATCH, .threads = 0, .groups = 1, .fc = DEF_FC,
        .width = DEF_WIDTH, .lr = 0, .momentum = NN_SGD_MOMENTUM, .wd = NN_SGD_WEIGHT_DECAY, .dropout = DEF_DROPOUT,
        .dist_bucket_mb = DEF_DIST_BUCKET_MB,
        .seed = 1,
    };
    const cli_opt opts[] = {
        {"model", CLI_STR, &o.model, "NAME", "alexnet (default) or lenet"},
        {"size", CLI_INT, &o.size, "S", "input size S x S (default 64; the paper: 224; with --init-from: FILE's)"},
        {"width", CLI_FLOAT, &o.width, "W", "AlexNet conv channel multiplier (default 0.5; paper 1)"},
        {"fc", CLI_INT, &o.fc, "F", "AlexNet hidden fully connected width (default 1024; paper 4096)"},
        {"groups", CLI_INT, &o.groups, "G", "1 single tower (default) or 2 (the paper's two-GPU split)"},
        {"dropout", CLI_FLOAT, &o.dropout, "P", "dropout before fc6 and fc7 (default 0.3; the paper 0.5)"},
        {"init", CLI_STR, &o.init, "KIND", "he (default) or paper (N(0, 0.01^2), biases 1)"},
        {"epochs", CLI_INT, &o.epochs, "E", "epochs (default 3)"},
        {"batch", CLI_INT, &o.batch, "B", "batch size (default 64)"},
        {"lr", CLI_FLOAT, &o.lr, "LR", "learning rate (default 1e-3 for adam/adamw, 0.01 for sgd)"},
        {"schedule", CLI_STR, &o.schedule, "KIND", "const, step (/10 every 30 epochs), plateau (/10 when test accuracy stops improving) or cosine (default: to 0 over the run)"},
        {"optim", CLI_STR, &o.optim, "KIND", "adam (default), sgd (the paper's rule: momentum 0.9, weight decay 5e-4) or adamw"},
        {"momentum", CLI_FLOAT, &o.momentum, "M", "SGD momentum (default 0.9)"},
        {"wd", CLI_FLOAT, &o.wd, "WD", "weight decay (default 5e-4)"},
        {"decay-bias", CLI_BOOL, &o.decay_bias, NULL, "apply weight decay to biases too"},
        {"seed", CLI_U64, &o.seed, "S", "seed of the init, data order, augmentation, dropout (default 1)"},
        {"device", CLI_STR, &o.device, "DEV", "cpu or cuda (default: cuda when present)"},
        {"threads", CLI_INT, &o.threads, "T", "CPU threads (default: all cores)"},
        {"data", CLI_STR, &o.data, "DIR", "folder with the Fashion-MNIST .gz files"},
        {"checkpoint-dir", CLI_STR, &o.ckdir, "DIR", "where checkpoints go (default runs/train)"},
        {"resume", CLI_STR, &o.resume, "FILE", "continue from a checkpoint (or DIR/last.safetensors)"},
        {"init-from", CLI_STR, &o.init_from, "FILE", "fine-tune: start from FILE's architecture and weights (see above)"},
        {"log-every", CLI_INT, &o.log_every, "N", "a metrics.jsonl line every N steps (default 50; 0: epochs only)"},
        {"augment", CLI_BOOL, &o.augment, NULL, "augment the training images (default for image folders: crops, flips, PCA lighting; for Fashion-MNIST: shifts and flips)"},
        {"no-augment", CLI_BOOL, &o.no_augment, NULL, "no augmentation (the default for Fashion-MNIST)"},
        {"limit", CLI_INT, &o.limit, "N", "use only the first N training images"},
        {"test-limit", CLI_INT, &o.test_limit, "N", "use only the first N test images"},
        {"skip-nonfinite", CLI_BOOL, &o.skip_nonfinite, NULL, "skip a batch whose loss or gradient is not finite instead of stopping"},
        {"stop-after", CLI_INT, &o.stop_after, "N", "stop after N optimizer steps of this run, saving a checkpoint to resume from"},
        {"quiet", CLI_BOOL, &o.quiet, NULL, "no progress bar"},
        {"dist-timeout", CLI_FLOAT, &o.dist_timeout, "S", "under mpirun/srun: end the job when a rank does not answer within S seconds (default 300)"},
        {"dist-bucket-mb", CLI_FLOAT, &o.dist_bucket_mb, "M", "under mpirun/srun: sum gradients in buckets of about M MiB, each started during backward as soon as it is complete (default " STR(DEF_DIST_BUCKET_MB_GPU) " on a GPU, 0 on the CPU: one sum after backward)"},
        {"emulate-ranks", CLI_INT, &o.emulate_ranks, "N", "(tests) compute each batch as N ranks would, in turn, in this one process"},
        {"fault", CLI_STR, &o.fault, "KIND:RANK[:STEP]", "(tests) die, hang, hang-sum or signal: that rank dies (SIGKILL), hangs before or after the step's agreement, or gets SIGUSR1 at that step; perturb:RANK: that rank starts from other weights (the broadcast from rank 0 must undo it)"},
    };
    const int nopts = (int)(sizeof opts / sizeof opts[0]);
    int rc = cli_parse("train", "[OPTIONS]", about, opts, nopts, argc, argv, NULL, 0, NULL);
    r->o = o;
    if (rc != CLI_OK) return rc == CLI_HELP ? 0 : 2;
    for (int i = 0; i < NFIXED; i++) r->fixed_given[i] = cli_given(opts, nopts, argc, argv, fixed_by_checkpoint[i].name);
    r->epochs_given = cli_given(opts, nopts, argc, argv, "epochs");
    static const char *const alexnet_only[] = {"width", "fc", "groups", "dropout", NULL};
    cli_given_list(opts, nopts, argc, argv, alexnet_only, r->lenet_given, sizeof r->lenet_given);
    return CLI_GO_ON;
}

static int validate(const train_opts *o)
{
    if (o->epochs < 1 || o->epochs > 100000) return cli_fail("train", "--epochs must be at least 1");
    if (o->batch < 1 || o->batch > 65536) return cli_fail("train", "--batch must be between 1 and 65536");
    if (o->lr < 0) return cli_fail("train", "--lr must be positive");
    if (o->augment && o->no_augment) return cli_fail("train", "--augment and --no-augment contradict each other");
    if (o->threads < 0 || o->threads > 1024) return cli_fail("train", "--threads must be between 1 and 1024");
    if (o->limit < 0 || o->test_limit < 0 || o->stop_after < 0 || o->log_every < 0 || o->size < 0)
        return cli_fail("train", "--size, --limit, --test-limit, --stop-after and --log-every cannot be negative "
                                 "(0: the default)");
    if (o->init_from && o->resume)
        return cli_fail("train", "--init-from starts a new run from FILE's weights, --resume continues a run: give one");
    if (o->emulate_ranks < 0 || o->emulate_ranks > 1024 || o->dist_timeout < 0)
        return cli_fail("train", "--emulate-ranks must be between 0 and 1024, --dist-timeout not negative (0: the "
                                 "default)");
    if (!(o->dist_bucket_mb >= 0 && o->dist_bucket_mb <= 4096) && !isnan(o->dist_bucket_mb))
        return cli_fail("train", "--dist-bucket-mb must be between 0 and 4096 (MiB)");
    int ranks = nn_dist_size() > 1 ? nn_dist_size() : o->emulate_ranks > 1 ? o->emulate_ranks : 1;
    if (!o->resume && o->batch % ranks)
        return cli_fail("train", "--batch %d (the global batch) does not divide by %d processes: use a multiple of %d",
                        o->batch, ranks, ranks);
    return CLI_GO_ON;
}

static int fresh_config(train_run *r);
static void model_from_flags(const train_opts *o, nn_model_config *cfg);

/* "--a, --b" into out: the first n fixed flags that were given and whose
 * fields differ between the runs r (the file's values) and flags (what the
 * flags alone make). */
static void differing_flags(const train_run *r, const train_run *flags, int n, char *out, size_t size)
{
    *out = '\0';
    for (int i = 0; i < n; i++) {
        const fixed_flag *f = &fixed_by_checkpoint[i];
        const char *a = (const char *)r + f->off, *b = (const char *)flags + f->off;
        if (r->fixed_given[i] && (f->text ? strncmp(a, b, f->size) != 0 : memcmp(a, b, f->size) != 0))
            snprintf(out + strlen(out), size - strlen(out), "%s--%s", *out ? ", " : "", f->name);
    }
}

/* A scratch run with r's options (calloc'd: the state is large) and the
 * named architecture's defaults. */
static train_run *scratch_run(const train_run *r)
{
    train_run *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->o = r->o;
    s->cfg = strcmp(r->o.model, "lenet") == 0 ? nn_lenet_config() : nn_alexnet_config();
    return s;
}

/* "--a, --b differ from WHAT FILE, WHY. Leave them out[, ELSE]": exit 2. */
static int refuse_flags(const char *differ, const char *what, const char *file, const char *why, const char *orelse)
{
    bool one = !strchr(differ, ',');
    return cli_fail("train", "%s differ%s from %s %s, %s. Leave %s out%s%s", differ, one ? "s" : "", what, file, why,
                    one ? "it" : "them", orelse ? ", " : "", orelse ? orelse : "");
}

/* The fixed flags given with --resume against the checkpoint's values (r's):
 * the flags' values are what a fresh run with them would take. */
static int check_resume_flags(const train_run *r)
{
    bool any = false;
    for (int i = 0; i < NFIXED; i++) any |= r->fixed_given[i];
    if (!any) return CLI_GO_ON;
    train_run *fresh = scratch_run(r);
    if (!fresh) return cli_fail("train", "out of memory");
    int rc = fresh_config(fresh);
    char differ[512] = "";
    if (rc == CLI_GO_ON) differing_flags(r, fresh, NFIXED, differ, sizeof differ);
    free(fresh);
    if (rc != CLI_GO_ON || !*differ) return rc;
    return refuse_flags(differ, "the run in", r->resume_path, "and --resume continues that run as it was (only "
                        "--epochs may extend it)", "or start a new run from its weights: --init-from FILE");
}

/* The architecture flags given with --init-from against the file's model (r->cfg). */
static int check_init_from_flags(const train_run *r)
{
    train_run *flags = scratch_run(r);
    if (!flags) return cli_fail("train", "out of memory");
    model_from_flags(&r->o, &flags->cfg);
    char differ[512];
    differing_flags(r, flags, NARCH, differ, sizeof differ);
    free(flags);
    if (!*differ) return CLI_GO_ON;
    return refuse_flags(differ, "the model in", r->o.init_from, "and --init-from takes its architecture (the "
                        "classes and channels follow the data)", NULL);
}

/* --resume: the model, recipe and progress from the checkpoint; only --epochs may extend it. */
static int resume_config(train_run *r)
{
    const train_opts *o = &r->o;
    struct stat sb;
    if (stat(o->resume, &sb) == 0 && S_ISDIR(sb.st_mode))
        snprintf(r->resume_path, sizeof r->resume_path, "%s/last.safetensors", o->resume);
    else
        snprintf(r->resume_path, sizeof r->resume_path, "%s", o->resume);
    if (nn_checkpoint_read_config(r->resume_path, &r->cfg, &r->st) != NN_OK) {
        fprintf(stderr, "convnet train: %s\n", nn_errmsg());
        return 1;
    }
    int rc = check_resume_flags(r);
    if (rc != CLI_GO_ON) return rc;
    if (r->epochs_given && o->epochs < r->st.epochs) /* the schedule spans the run's epochs */
        return cli_fail("train", "--epochs %d is fewer than the %d of the run in %s: --resume may only extend it",
                        o->epochs, r->st.epochs, r->resume_path);
    /* only a given --epochs: the default (3) would silently lengthen a shorter run and its schedule */
    if (r->epochs_given && o->epochs > r->st.epochs) r->st.epochs = o->epochs;
    if (r->st.epoch >= r->st.epochs) { /* nothing to train: say so, write nothing */
        printf("the run in %s has finished its %d epochs: nothing to do (--epochs N, more than %d, extends it)\n",
               r->resume_path, r->st.epochs, r->st.epochs);
        return 0;
    }
    return CLI_GO_ON;
}

static void model_from_flags(const train_opts *o, nn_model_config *cfg)
{
    if (strcmp(o->model, "alexnet") == 0) {
        cfg->in_channels = 1;
        cfg->in_size = o->size ? o->size : DEF_SIZE;
        cfg->classes = 10;
        cfg->groups = o->groups;
        cfg->width = o->width;
        cfg->fc = o->fc;
        cfg->dropout = o->dropout;
    } else if (o->size) {
        cfg->in_size = o->size;
    }
}

/* A fresh run: the model and the recipe from the flags. */
static int fresh_config(train_run *r)
{
    const train_opts *o = &r->o;
    if (strcmp(o->model, "alexnet") != 0 && strcmp(o->model, "lenet") != 0)
        return cli_fail("train", "unknown --model '%s' (expected alexnet or lenet)", o->model);
    if (o->init_from) {
        /* the file's architecture; its input size unless --size picks one a weights-only file leaves open */
        nn_weights_hints h = {.in_size = o->size};
        bool only;
        if (cli_model_config("train", o->init_from, &h, &r->cfg, &only) != NN_OK) return cli_lib_fail("train");
        int rc = check_init_from_flags(r);
        if (rc != CLI_GO_ON) return rc;
        if (strcmp(r->cfg.arch, "alexnet") == 0) r->cfg.dropout = o->dropout;
    } else if (strcmp(o->model, "lenet") == 0 && r->lenet_given[0]) {
        return cli_fail("train", "%s: AlexNet's, not LeNet's (--model lenet)", r->lenet_given);
    } else {
        model_from_flags(o, &r->cfg);
    }
    if (nn_init_parse(o->init, &r->cfg.init) != NN_OK) return cli_fail("train", "%s", nn_errmsg());
    nn_train_recipe rc = {.optim = {.lr = o->lr, .momentum = o->momentum, .weight_decay = o->wd,
                                    .decay_bias = o->decay_bias},
                          .seed = o->seed, .batch_size = o->batch, .limit = o->limit, .epochs = o->epochs,
                          .augment = o->augment || (!o->no_augment && cli_data_is_folder(o->data))};
    if (nn_optim_parse_kind(o->optim, &rc.optim.kind) != NN_OK) return cli_fail("train", "%s", nn_errmsg());
    if (!(o->lr > 0)) rc.optim.lr = rc.optim.kind == NN_OPT_SGD ? DEF_LR_SGD : DEF_LR_ADAM;
    nn_sched_kind sk;
    if (nn_sched_parse_kind(o->schedule, &sk) != NN_OK) return cli_fail("train", "%s", nn_errmsg());
    rc.sched = nn_schedule_make(sk, rc.optim.lr);
    r->st = nn_train_state_make(&rc);
    return CLI_GO_ON;
}

static int configure(train_run *r)
{
    r->cfg = strcmp(r->o.model, "lenet") == 0 ? nn_lenet_config() : nn_alexnet_config();
    int rc = r->o.resume ? resume_config(r) : fresh_config(r);
    if (rc != CLI_GO_ON) return rc;
    nn_seq probe;
    if (nn_model_build(&probe, &r->cfg, NN_CPU, NULL) != NN_OK) return cli_fail("train", "%s", nn_errmsg());
    return CLI_GO_ON;
}

static int setup_device(train_run *r)
{
    r->dev = nn_device_available(NN_CUDA) ? NN_CUDA : NN_CPU;
    if (r->o.device && nn_device_parse(r->o.device, &r->dev) != NN_OK) return cli_fail("train", "%s", nn_errmsg());
    if (!nn_backend_need(r->dev, "train")) {
        fprintf(stderr, "convnet train: %s\n", nn_errmsg());
        return 1;
    }
    /* 0: the cores this process may run on (mpirun --bind-to, srun
     * --cpus-per-task, taskset), not the machine's: N processes share them */
    if (nn_set_threads(r->o.threads, &r->threads) != NN_OK) return cli_fail("train", "%s", nn_errmsg());
    if (isnan(r->o.dist_bucket_mb)) r->o.dist_bucket_mb = r->dev == NN_CUDA ? DEF_DIST_BUCKET_MB_GPU : 0;
    return CLI_GO_ON;
}

/* The data; a fresh run takes its normalization and classes (and, for an image folder, its channels) from it. */
static void shard_data(train_run *r);

static int open_data(train_run *r)
{
    const train_opts *o = &r->o;
    nn_train_state *st = &r->st;
    cli_data *d = &r->data;
    /* NN_RESIDENT=1: Fashion-MNIST's training set on the model's device, each
     * batch built there (io/resident.h); its batches never reach the host, so
     * the data-parallel sources, which slice host batches, cannot take them */
    const char *env = getenv(NN_RESIDENT_ENV);
    bool resident = env && strcmp(env, "1") == 0;
    if (resident && (r->ranks > 1 || o->emulate_ranks > 1))
        return cli_fail("train", "NN_RESIDENT=1 does not work with data parallelism (mpirun/srun or --emulate-ranks): "
                                 "the ranks slice host batches; unset it");
    cli_data_opts dopt = {.dir = o->data, .train = true, .resident = resident, .dev = r->dev, .batch = st->batch_size, .eval_batch = 256,
                          .size = r->cfg.in_size, .augment = st->augment, .seed = st->seed, .limit = st->limit,
                          .test_limit = o->test_limit, .mean = st->mean, .std = o->resume ? st->std : 0,
                          .classes = o->resume && st->classes[0] ? st->classes : NULL};
    if (cli_data_open(d, &dopt) != NN_OK) {
        fprintf(stderr, "convnet train: %s\n", nn_errmsg());
        if (!o->data) fprintf(stderr, "(install the data with 'apt-get install dataset-fashion-mnist' or pass --data DIR)\n");
        return 1;
    }
    if (!o->resume) {
        st->mean = d->mean;
        st->std = d->std;
        snprintf(st->classes, sizeof st->classes, "%s", d->classes_joined);
        if (d->folder || o->init_from) { /* the model follows the data: RGB, its classes */
            r->cfg.in_channels = d->channels;
            r->cfg.classes = d->classes;
        }
    }
    if (d->folder) {
        const nn_imgf_stats *s = nn_imgf_get_stats(d->itr);
        r->norm = (nn_data_norm){.channels = 3, .resize = s->size};
        memcpy(r->norm.mean, s->mean, sizeof r->norm.mean);
        memcpy(r->norm.std, s->std, sizeof r->norm.std);
        r->has_norm = true;
    }
    if (r->cfg.in_channels != d->channels || r->cfg.classes != d->classes) {
        fprintf(stderr, "convnet train: the model takes %d channels and %d classes, the data has %d and %d\n",
                r->cfg.in_channels, r->cfg.classes, d->channels, d->classes);
        return 1;
    }
    shard_data(r);
    return CLI_GO_ON;
}

/* Each rank's rows of every batch (the one-process emulation takes slice 0
 * and computes the others itself); evaluation is split the same way. */
static void shard_data(train_run *r)
{
    int emu = r->o.emulate_ranks > 1 && r->ranks == 1 ? r->o.emulate_ranks : 1;
    if (r->ranks == 1 && emu == 1) return;
    size_t img = (size_t)r->cfg.in_channels * (size_t)r->cfg.in_size * (size_t)r->cfg.in_size;
    cli_data *d = &r->data;
    d->train_src = nn_shard_source(&r->train_shard, &d->train_src, r->rank, r->ranks * emu, img);
    if (r->ranks > 1) d->test_src = nn_shard_source(&r->test_shard, &d->test_src, r->rank, r->ranks, img);
}

/* ---- printing what the trainer reports ---- */

static void print_bar(train_run *r, const nn_train_event *ev)
{
    double rate = ev->images_per_s;
    /* this epoch, and the whole run (training only; each test pass adds a little) */
    double left = (double)(ev->batches - ev->batch) * ev->batch_size / rate;
    double left_run = left + (double)(ev->epochs - ev->epoch - 1) * ev->batches * ev->batch_size / rate;
    char eta_s[16], run_s[16], el_s[16];
    fmt_time(left, eta_s, sizeof eta_s);
    fmt_time(left_run, run_s, sizeof run_s);
    fmt_time(ev->elapsed, el_s, sizeof el_s);
    int w = 24, fill = (int)((double)w * ev->batch / ev->batches);
    char bar[32];
    for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
    bar[w] = '\0';
    fprintf(stderr, "%sepoch %d/%d [%s] %d/%d  %.0f img/s  loss %.4f  acc %.2f%%  lr %.3g  elapsed %s  ETA %s (run %s)%s",
            r->tty ? "\r" : "", ev->epoch + 1, ev->epochs, bar, ev->batch, ev->batches, rate, ev->loss,
            100.0 * ev->acc, (double)ev->lr, el_s, eta_s, run_s, r->tty ? "  " : "\n");
    fflush(stderr);
}

static void print_epoch(train_run *r, const nn_train_event *ev)
{
    if (r->tty) fputc('\n', stderr);
    bool lowered = ev->lr != ev->prev_lr;
    printf("epoch %d/%d: train loss %.4f acc %.2f%% (%.0f img/s, %.0f s) | test loss %.4f top-1 %.2f%% top-5 %.2f%%%s\n",
           ev->epoch + 1, ev->epochs, ev->loss, 100.0 * ev->acc, ev->images_per_s, ev->epoch_time, ev->eval.loss,
           100.0 * ev->test_acc, ev->eval.n ? 100.0 * ev->eval.top5 / ev->eval.n : 0.0, lowered ? "  (lr lowered)" : "");
    if (lowered) printf("  learning rate now %g\n", (double)ev->lr);
    fflush(stdout);
    r->last_print = -1e9; /* the next epoch's first step is shown */
}

/* The metrics logger after the printing; its first failure is shown once (training goes on). */
static void log_event(train_run *r, const nn_train_event *ev)
{
    const char *msg;
    nn_metrics_on_event(ev, r->log);
    if (!r->log_warned && nn_metrics_logger_status(r->log, &msg) != NN_OK) {
        fprintf(stderr, "\nconvnet train: warning: %s (training goes on without metrics)\n", msg);
        r->log_warned = true;
    }
}

static void on_event(const nn_train_event *ev, void *user)
{
    train_run *r = user;
    if (r->rank != 0) return; /* rank 0 speaks (and logs) for all */
    if (r->log) log_event(r, ev);
    if (ev->kind == NN_TRAIN_EPOCH) {
        print_epoch(r, ev);
    } else if (ev->kind == NN_TRAIN_SKIP) {
        fprintf(stderr, "\nconvnet train: skipping batch %d of epoch %d: non-finite %s\n", ev->batch + 1, ev->epoch + 1,
                ev->nonfinite);
    } else if (!r->o.quiet && (ev->elapsed - r->last_print > (r->tty ? 0.25 : 30.0) || ev->batch == ev->batches)) {
        r->last_print = ev->elapsed;
        print_bar(r, ev);
    }
}

static void print_header(const train_run *r)
{
    const nn_model_config *c = &r->cfg;
    const nn_train_state *st = &r->st;
    const cli_data *d = &r->data;
    printf("model: %s %dx%dx%d -> %d, width %g, fc %d, groups %d, init %s: %lld parameters, %.1f M MAC/image\n",
           c->arch, c->in_channels, c->in_size, c->in_size, c->classes, (double)c->width, c->fc, c->groups,
           nn_init_name(c->init), nn_seq_params(&r->seq), (double)nn_seq_macs(&r->seq) / 1e6);
    if (strcmp(c->arch, "alexnet") == 0 && (c->in_size != 224 || c->width != 1.0f || c->fc != 4096))
        printf("  (the paper-size AlexNet: convnet train --size 224 --width 1 --fc 4096)\n");
    if (d->folder)
        printf("data: %s: %d training, %d validation images, %d classes; %s\n", r->o.data, d->ntrain, d->ntest,
               d->classes, st->augment ? "random crops, flips and PCA lighting" : "center crops");
    else
        printf("data: %d training, %d test images, normalized with mean %.4f std %.4f%s\n", d->ntrain, d->ntest,
               (double)st->mean, (double)st->std, st->augment ? "; random shifts and flips" : "");
    printf("training: %s, lr %g, %s schedule, batch %d, %d epochs, seed %llu, on %s with %d threads\n",
           nn_optim_kind_name(st->optim.kind), (double)st->lr, nn_sched_kind_name(st->sched.kind), st->batch_size,
           st->epochs, (unsigned long long)st->seed, nn_device_name(r->dev), r->threads);
    char sw[512];
    if (*nn_switches_describe(sw, sizeof sw)) printf("switches: %s\n", sw);
    /* one process under a launcher too: it takes the same path (mpirun -np 1 checks NCCL on one GPU) */
    if (r->ranks > 1 || nn_dist_active())
        printf("data parallel: %d process%s, %d images each per step; gradients summed by %s %s; timeout %g s\n",
               r->ranks, r->ranks > 1 ? "es" : "", st->batch_size / r->ranks, nn_dist_backend(r->dev), bucketing(r),
               nn_dist_timeout());
    else if (r->o.emulate_ranks > 1)
        printf("emulating %d ranks in one process (test)\n", r->o.emulate_ranks);
    if (r->o.resume)
        printf("resumed from %s at epoch %d, batch %d (step %lld)\n", r->resume_path, st->epoch + 1, st->batch,
               (long long)st->step);
    fflush(stdout);
}

/* ---- the run ---- */

static void report_fresh(const char *name, const char *why, void *user)
{
    fprintf(stderr, "convnet train: --init-from %s: %s: %s\n", (const char *)user, name, why);
}

/* --init-from: FILE's tensors that fit; the others keep their fresh init and are named. */
static nn_status init_from(train_run *r)
{
    int loaded = 0;
    NN_TRY(nn_weights_load_into(&r->seq, r->o.init_from, true, report_fresh, (void *)r->o.init_from, &loaded));
    if (loaded == 0)
        return nn_error(NN_E_SHAPE, "--init-from %s: no tensor of the file fits the model", r->o.init_from);
    printf("initialized %d of %d parameter tensors from %s\n", loaded, r->seq.params.n, r->o.init_from);
    return NN_OK;
}

static nn_status open_log(train_run *r)
{
    int dropped = 0;
    NN_TRY(nn_metrics_logger_open(&r->log, r->o.ckdir, r->o.log_every, r->st.step, &dropped));
    if (dropped && r->o.resume)
        printf("metrics: %d line(s) of %s/metrics.jsonl after step %lld dropped (those steps run again)\n", dropped,
               r->o.ckdir, (long long)r->st.step);
    return NN_OK;
}

static nn_status after_backward(nn_trainer *t, void *user)
{
    (void)t;
    return nn_dp_after_backward(((train_run *)user)->dp);
}

static nn_status after_eval(nn_trainer *t, nn_eval_result *res, void *user)
{
    (void)t;
    return nn_dp_after_eval(((train_run *)user)->dp, res);
}

/* --fault die:R:S / hang:R:S / hang-sum:R:S / signal:R:S / perturb:R into the dp config */
static nn_status parse_fault(const char *f, nn_dp_config *dc)
{
    dc->die_rank = dc->hang_rank = dc->signal_rank = dc->hang_sum_rank = dc->perturb_rank = -1;
    if (!f) return NN_OK;
    /* perturb (last) acts before the first step: it has no step */
    static const char *const kinds[] = {"die", "hang", "hang-sum", "signal", "perturb"};
    int *const ranks[] = {&dc->die_rank, &dc->hang_rank, &dc->hang_sum_rank, &dc->signal_rank, &dc->perturb_rank};
    enum { NKINDS = sizeof kinds / sizeof kinds[0], PERTURB = NKINDS - 1 };
    char kind[16];
    int rank, k = 0;
    long long step = 0;
    int n = sscanf(f, "%15[a-z-]:%d:%lld", kind, &rank, &step);
    while (n >= 2 && k < NKINDS && strcmp(kind, kinds[k])) k++;
    if (n < 2 || k == NKINDS || n != (k == PERTURB ? 2 : 3) || rank < 0)
        return nn_error(NN_E_ARG, "--fault '%s': expected die:RANK:STEP, hang:RANK:STEP, hang-sum:RANK:STEP, "
                                  "signal:RANK:STEP or perturb:RANK", f);
    *ranks[k] = rank;
    dc->fault_step = step;
    return NN_OK;
}

static nn_status make_trainer(train_run *r)
{
    nn_rng init_rng = nn_rng_make(r->st.seed);
    NN_TRY(nn_model_build(&r->seq, &r->cfg, r->dev, &init_rng));
    if (r->o.init_from) NN_TRY(init_from(r));
    if (r->rank == 0) NN_TRY(open_log(r));
    nn_train_model m = {.seq = &r->seq, .classes = r->cfg.classes, .cfg = &r->cfg,
                        .norm = r->has_norm ? &r->norm : NULL};
    /* rank 0 writes the checkpoints; every rank stops on the agreed flag. The
     * hook agrees on signals and sums gradients across ranks: only where there are ranks */
    g_alone = !nn_dist_active() && r->ranks == 1 && r->o.emulate_ranks <= 1 && !r->o.fault;
    nn_trainer_config tc = {.dev = r->dev, .checkpoint_dir = r->rank == 0 ? r->o.ckdir : NULL,
                            .skip_nonfinite = r->o.skip_nonfinite, .stop_after = r->o.stop_after, .stop = &g_agreed,
                            .on_event = on_event, .after_backward = g_alone ? NULL : after_backward,
                            .after_eval = after_eval, .user = r};
    NN_TRY(nn_trainer_new(&r->tr, &m, &r->data.train_src, &r->data.test_src, &r->st, &tc));
    if (r->o.resume) NN_TRY(nn_trainer_resume(r->tr, r->resume_path));
    nn_dp_config dc = {.dev = r->dev, .request = &g_signal, .agreed = &g_agreed, .train_shard = &r->train_shard,
                       .ranks_emulated = r->ranks == 1 ? r->o.emulate_ranks : 0,
                       .bucket_mb = r->o.dist_bucket_mb};
    NN_TRY(parse_fault(r->o.fault, &dc));
    return nn_dp_new(&r->dp, r->tr, &dc);
}

/* before the "training:" line: a signal sent once that line is out is
 * always handled (save, exit 128 + sig), never the default death */
static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); /* Slurm's --signal: mpirun turns SIGTERM into SIGKILL a second later */
}

/* The last lines of a run that stopped or finished, and its exit status. */
static int report_end(const train_run *r, const nn_train_result *res)
{
    const nn_train_state *st = &r->st;
    if (r->rank != 0) return res->end == NN_TRAIN_STOP_REQUESTED ? 128 + g_agreed : 0;
    int64_t steps;
    double red = nn_dp_reduce_seconds(r->dp, &steps);
    char buckets[64] = "";
    if (nn_dp_buckets(r->dp)) snprintf(buckets, sizeof buckets, " left after backward (%d buckets)", nn_dp_buckets(r->dp));
    if (steps && nn_dist_active()) printf("gradient all-reduce: %.2f ms per step%s over %lld steps (%zu floats)\n", 1e3 * red / steps,
                      buckets, (long long)steps, (size_t)nn_seq_params(&r->seq) + 1);
    if (res->mid_epoch && r->tty) fputc('\n', stderr);
    /* said, so a check of NN_CUDA_GRAPH=1 sees the graph ran (not only that no notice came) */
    if (nn_trainer_graph_steps(r->tr))
        printf("%s: %lld steps ran from a captured graph\n", NN_CUDA_GRAPH_ENV, (long long)nn_trainer_graph_steps(r->tr));
    if (res->end == NN_TRAIN_STOP_REQUESTED) {
        fprintf(stderr, "convnet train: stopped by signal %d after step %lld; checkpoint saved to %s\n"
                        "  continue with: convnet train --resume %s\n",
                (int)g_agreed, (long long)st->step, res->last_path, res->last_path);
        return 128 + g_agreed;
    }
    if (res->end == NN_TRAIN_STOPPED_AFTER && res->mid_epoch)
        printf("stopped after %d steps as asked (epoch %d, batch %d); checkpoint saved to %s\n", r->o.stop_after,
               st->epoch + 1, st->batch, res->last_path);
    else if (res->end == NN_TRAIN_STOPPED_AFTER)
        printf("stopped after %d steps as asked (end of epoch %d); checkpoint saved to %s\n", r->o.stop_after,
               st->epoch, res->last_path);
    else {
        char el_s[16];
        fmt_time(res->elapsed, el_s, sizeof el_s);
        printf("done in %s: best test top-1 %.2f%%; checkpoints in %s/ (last.safetensors, best.safetensors)%s\n", el_s,
               100.0 * st->best_acc, r->o.ckdir, res->skipped ? " (some batches skipped: non-finite)" : "");
    }
    return 0;
}

static int train(train_run *r)
{
    nn_train_result res;
    nn_status s = make_trainer(r);
    if (s == NN_OK) {
        catch_signals();
        r->tty = isatty(STDERR_FILENO) && !r->o.quiet;
        if (r->rank == 0) print_header(r);
        s = nn_trainer_run(r->tr, &res);
        /* the end of the run is a checkpoint too (a mid-epoch stop saved one) */
        if (s == NN_OK || s == NN_E_INTERRUPTED) {
            nn_status c = nn_dp_check(r->dp, "at the end of the run");
            if (c != NN_OK) s = c;
        }
    }
    int rc;
    if (s == NN_OK || (s == NN_E_INTERRUPTED && res.end == NN_TRAIN_STOP_REQUESTED)) {
        rc = report_end(r, &res);
    } else {
        if (!r->o.quiet && r->rank == 0) fputc('\n', stderr);
        char who[32] = "";
        /* which rank says it, unless the message does (core/dist.c's: "dist: rank K: ...") */
        if (r->ranks > 1 && strncmp(nn_errmsg(), "dist: rank ", 11) != 0) snprintf(who, sizeof who, "rank %d: ", r->rank);
        fprintf(stderr, "convnet train: %s%s%s\n", who, nn_errmsg(),
                s == NN_E_NONFINITE ? " (lower --lr, or --skip-nonfinite to skip such batches)" : "");
        rc = 1;
        /* a non-finite step is decided alike on every rank; anything else may
         * leave the others waiting: end them all */
        if (r->ranks > 1 && s != NN_E_NONFINITE) nn_dist_abort(rc);
    }
    nn_dp_free(r->dp);
    nn_trainer_free(r->tr);
    nn_metrics_logger_free(r->log);
    nn_seq_free(&r->seq);
    return rc;
}

int cmd_train(int argc, char **argv)
{
    static train_run run; /* 16 KB of class names: not on the stack */
    train_run *r = &run;
    memset(r, 0, sizeof *r);
    int rc = parse_opts(r, argc, argv);
    if (rc != CLI_GO_ON) return rc;
    /* first: the local rank picks the GPU before any CUDA call */
    if (nn_dist_init() != NN_OK) {
        fprintf(stderr, "convnet train: %s\n", nn_errmsg());
        nn_dist_abort(1);
    }
    r->rank = nn_dist_rank(), r->ranks = nn_dist_size();
    if (r->o.dist_timeout > 0) nn_dist_set_timeout(r->o.dist_timeout);
    if (r->rank != 0) r->o.quiet = true;
    rc = validate(&r->o);
    if (rc == CLI_GO_ON) rc = configure(r);
    if (rc == CLI_GO_ON) rc = setup_device(r);
    if (rc == CLI_GO_ON) rc = open_data(r);
    if (rc == CLI_GO_ON) rc = train(r);
    cli_data_close(&r->data);
    /* a usage error on every rank alike ends each cleanly; finalize waits for all */
    nn_dist_finalize();
    return rc == CLI_GO_ON ? 0 : rc;
}
