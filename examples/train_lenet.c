/* Trains LeNet-5 on (a slice of) Fashion-MNIST through the library's trainer,
 * with checkpoints: a first run stops after STOP_AFTER steps, a second run
 * resumes from its checkpoint and finishes; the program checks that the
 * second run continued where the first stopped and that the model learned.
 * Exit 0 on success, 77 (skipped) when the data set is not installed.
 *
 *     cc train_lenet.c $(pkg-config --cflags --libs convnet) -o train_lenet */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convnet.h"

#define TRAIN_IMAGES 2048 /* small slices: the example runs in seconds */
#define TEST_IMAGES 512
#define STOP_AFTER 80     /* steps of the first run: inside epoch 2 (64 steps an epoch) */

static void print_epoch(const nn_train_event *ev, void *user)
{
    (void)user;
    if (ev->kind == NN_TRAIN_EPOCH)
        printf("epoch %d/%d: train loss %.3f, test top-1 %.1f%%, lr %.2g\n", ev->epoch + 1, ev->epochs, ev->loss,
               100.0 * ev->test_acc, (double)ev->lr);
}

/* ---- begin README example ---- */
/* Trains model (built from cfg) on the loaders' batches: DIR/last.safetensors
 * every epoch (best.safetensors when test accuracy improves), continuing the
 * checkpoint `resume` if not NULL, stopping early after stop_after steps. */
nn_status train(nn_seq *model, const nn_model_config *cfg, nn_loader *train, nn_loader *test,
                nn_train_state *st, const char *dir, const char *resume, int64_t stop_after)
{
    nn_batch_source tr = nn_loader_source(train), te = nn_loader_source(test);
    nn_train_model m = {.seq = model, .classes = cfg->classes, .cfg = cfg};
    nn_trainer_config tc = {.dev = NN_CPU, .checkpoint_dir = dir, .stop_after = stop_after,
                            .on_event = print_epoch};   /* called per step and per epoch */
    nn_trainer *t;
    NN_TRY(nn_trainer_new(&t, &m, &tr, &te, st, &tc));
    nn_status s = resume ? nn_trainer_resume(t, resume) : NN_OK;
    if (s == NN_OK) s = nn_trainer_run(t, NULL);
    nn_trainer_free(t);
    return s;
}
/* ---- end README example ---- */

typedef struct data {
    nn_dataset train, test;
    nn_loader *tl, *vl;
} data;

static nn_status open_data(data *d, uint64_t seed)
{
    NN_TRY(nn_fmnist_load(NULL, true, &d->train));
    NN_TRY(nn_fmnist_load(NULL, false, &d->test));
    nn_loader_config lc = {.batch = 32, .size = 28, .shuffle = true, .drop_last = true, .seed = seed,
                           .limit = TRAIN_IMAGES};
    nn_dataset_stats(&d->train, &lc.mean, &lc.std);
    NN_TRY(nn_loader_new(&d->tl, &d->train, &lc));
    lc.shuffle = lc.drop_last = false, lc.limit = TEST_IMAGES, lc.batch = 256;
    return nn_loader_new(&d->vl, &d->test, &lc);
}

static void close_data(data *d)
{
    nn_loader_free(d->tl);
    nn_loader_free(d->vl);
    nn_dataset_free(&d->train);
    nn_dataset_free(&d->test);
}

static int fail(const char *what)
{
    fprintf(stderr, "train_lenet: %s: %s\n", what, nn_errmsg());
    return 1;
}

/* A fresh run: LeNet-5 with He init, Adam 1e-3 on a cosine schedule, 2 epochs. */
static int first_run(data *d, const char *dir, nn_train_state *st)
{
    nn_model_config cfg = nn_lenet_config();
    cfg.init = NN_INIT_HE;
    nn_train_recipe rc = {.optim = {.kind = NN_OPT_ADAM, .lr = 1e-3f}, .batch_size = 32, .epochs = 2, .seed = 1,
                          .limit = TRAIN_IMAGES};
    rc.sched = nn_schedule_make(NN_SCHED_COSINE, rc.optim.lr);
    *st = nn_train_state_make(&rc);
    nn_seq model;
    nn_rng rng = nn_rng_make(rc.seed);
    if (nn_model_build(&model, &cfg, NN_CPU, &rng) != NN_OK) return fail("build");
    nn_status s = train(&model, &cfg, d->tl, d->vl, st, dir, NULL, STOP_AFTER);
    nn_seq_free(&model);
    return s == NN_OK ? 0 : fail("first run");
}

/* Another process would do exactly this: model, recipe and progress from the file. */
static int resumed_run(data *d, const char *dir, nn_train_state *st)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/last.safetensors", dir);
    nn_model_config cfg;
    if (nn_checkpoint_read_config(path, &cfg, st) != NN_OK) return fail("read checkpoint");
    printf("resuming at epoch %d, batch %d (step %lld)\n", st->epoch + 1, st->batch, (long long)st->step);
    if (st->step != STOP_AFTER) return fprintf(stderr, "train_lenet: the checkpoint is at step %lld\n", (long long)st->step), 1;
    nn_seq model;
    nn_rng rng = nn_rng_make(st->seed);
    if (nn_model_build(&model, &cfg, NN_CPU, &rng) != NN_OK) return fail("build");
    nn_status s = train(&model, &cfg, d->tl, d->vl, st, dir, path, 0);
    nn_seq_free(&model);
    return s == NN_OK ? 0 : fail("resumed run");
}

static void remove_dir(const char *dir)
{
    const char *names[2] = {"last.safetensors", "best.safetensors"};
    for (int i = 0; i < 2; i++) {
        char p[4200];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        remove(p);
    }
    rmdir(dir);
}

int main(void)
{
    data d = {0};
    if (open_data(&d, 1) != NN_OK) {
        fprintf(stderr, "train_lenet: skipped: %s\n", nn_errmsg());
        close_data(&d);
        return 77;
    }
    char dir[] = "/tmp/convnet_train_lenet_XXXXXX";
    if (!mkdtemp(dir)) return close_data(&d), 1;
    nn_train_state st;
    int rc = first_run(&d, dir, &st);
    if (rc == 0) rc = resumed_run(&d, dir, &st);
    int steps = 2 * (TRAIN_IMAGES / 32);
    if (rc == 0 && (st.step != steps || st.epoch != 2)) {
        fprintf(stderr, "train_lenet: the resumed run ended at step %lld, epoch %d (expected %d, 2)\n",
                (long long)st.step, st.epoch, steps);
        rc = 1;
    }
    if (rc == 0 && !(st.best_acc > 0.6f)) { /* chance is 10% */
        fprintf(stderr, "train_lenet: test top-1 %.1f%% after 2 epochs\n", 100.0 * st.best_acc);
        rc = 1;
    }
    if (rc == 0) printf("done: %lld steps, best test top-1 %.1f%%\n", (long long)st.step, 100.0 * st.best_acc);
    remove_dir(dir);
    close_data(&d);
    return rc;
}
