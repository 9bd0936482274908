/* A network of one's own: a small VGG-style net (3x3 convolutions in pairs,
 * 2x2 pooling, a dropout classifier) built with the sequential builder,
 * trained briefly on Fashion-MNIST bytes fed from plain arrays (Adam on a
 * cosine schedule, through the trainer), saved with its own name, init and
 * normalization, reloaded into a freshly built copy, and checked to score
 * exactly the same. Exit 0 on success, 77 when the data set is missing.
 *
 *     cc custom_net.c $(pkg-config --cflags --libs convnet) -o custom_net */
#define _POSIX_C_SOURCE 200809L /* mkstemp */
#include <stdio.h>
#include <string.h>

#include "convnet.h"

#define TRAIN_IMAGES 1024
#define TEST_IMAGES 512
#define BATCH 32

/* 1x28x28 -> 10: [conv3x3 16, relu] x2, pool, conv3x3 32, relu, pool, fc 64, dropout, fc 10 */
static nn_status small_vgg(nn_seq *s, uint64_t seed)
{
    nn_seq_init(s, 1, 28, 28);
    nn_seq_conv(s, "features.0", 16, 3, 1, 1, 1, 0.0f); /* out, kernel, stride, pad, groups, bias */
    nn_seq_relu(s, "features.1");
    nn_seq_conv(s, "features.2", 16, 3, 1, 1, 1, 0.0f);
    nn_seq_relu(s, "features.3");
    nn_seq_maxpool(s, "features.4", 2, 2);             /* 14x14 */
    nn_seq_conv(s, "features.5", 32, 3, 1, 1, 1, 0.0f);
    nn_seq_relu(s, "features.6");
    nn_seq_maxpool(s, "features.7", 2, 2);             /* 7x7 */
    nn_seq_flatten(s, "classifier.0");
    nn_seq_linear(s, "classifier.1", 64, 0.0f);
    nn_seq_relu(s, "classifier.2");
    nn_seq_dropout(s, "classifier.3", 0.2f);
    nn_seq_linear(s, "classifier.4", 10, 0.0f);
    nn_rng rng = nn_rng_make(seed);
    return nn_seq_build(s, NN_CPU, NN_INIT_HE, &rng);
}

/* Batches of a data set's own byte arrays, normalized. */
static nn_status arrays(nn_array_source **out, const nn_dataset *ds, int limit, bool shuffle, float mean, float std)
{
    nn_array_config ac = {.images_u8 = ds->images, .labels = ds->labels, .n = ds->n, .c = ds->c, .h = ds->h,
                          .w = ds->w, .limit = limit, .batch = BATCH, .shuffle = shuffle, .seed = 7,
                          .mean = mean, .std = std};
    return nn_array_source_new(out, &ac);
}

static nn_status train(nn_seq *net, nn_array_source *tr, nn_array_source *te, float mean, float std)
{
    nn_train_recipe rc = {.optim = {.kind = NN_OPT_ADAM, .lr = 2e-3f}, .batch_size = BATCH, .epochs = 2, .seed = 3,
                          .mean = mean, .std = std};
    rc.sched = nn_schedule_make(NN_SCHED_COSINE, rc.optim.lr);
    nn_train_state st = nn_train_state_make(&rc);
    nn_batch_source ts = nn_array_source_batches(tr), es = nn_array_source_batches(te);
    nn_train_model m = {.seq = net, .classes = 10, .arch = "small-vgg", .init = nn_init_name(NN_INIT_HE)};
    nn_trainer_config tc = {.dev = NN_CPU}; /* no checkpoint folder: we save once, below */
    nn_trainer *t;
    NN_TRY(nn_trainer_new(&t, &m, &ts, &es, &st, &tc));
    nn_status s = nn_trainer_run(t, NULL);
    nn_trainer_free(t);
    return s;
}

static nn_status save(const char *path, const nn_seq *net, float mean, float std)
{
    nn_ckpt_meta meta = {0};
    NN_TRY(nn_ckpt_meta_set(&meta, "recipe", "adam 2e-3, cosine, 2 epochs of 1024 images"));
    nn_checkpoint_desc d = {.params = &net->params, .arch = "small-vgg", .init = nn_init_name(NN_INIT_HE),
                            .has_norm = true, .mean = mean, .std = std, .meta = &meta};
    nn_status s = nn_checkpoint_write(path, &d);
    nn_ckpt_meta_free(&meta);
    return s;
}

static int fail(const char *what)
{
    fprintf(stderr, "custom_net: %s: %s\n", what, nn_errmsg());
    return 1;
}

/* Trains, saves, reloads into a fresh net; both must score the same. */
static int run(const nn_dataset *train_ds, const nn_dataset *test_ds, const char *path)
{
    float mean, std;
    nn_dataset_stats(train_ds, &mean, &std);
    nn_array_source *tr = NULL, *te = NULL;
    nn_seq net = {0}, fresh = {0};
    nn_eval_result a = {0}, b = {0};
    nn_batch_source es;
    int rc = 1;
    if (arrays(&tr, train_ds, TRAIN_IMAGES, true, mean, std) != NN_OK ||
        arrays(&te, test_ds, TEST_IMAGES, false, mean, std) != NN_OK) {
        rc = fail("data");
        goto out;
    }
    es = nn_array_source_batches(te);
    if (small_vgg(&net, 1) != NN_OK || train(&net, tr, te, mean, std) != NN_OK || save(path, &net, mean, std) != NN_OK ||
        nn_evaluate(&net, NN_CPU, &es, 10, NULL, &a, NULL, NULL) != NN_OK) {
        rc = fail("train");
        goto out;
    }
    if (small_vgg(&fresh, 2) != NN_OK || nn_checkpoint_read(path, &fresh.params, NULL, NULL, NULL) != NN_OK ||
        nn_evaluate(&fresh, NN_CPU, &es, 10, NULL, &b, NULL, NULL) != NN_OK) {
        rc = fail("reload");
        goto out;
    }
    printf("small-vgg: %lld parameters; test top-1 %.1f%% trained, %.1f%% reloaded\n", nn_seq_params(&net),
           100.0 * a.top1 / a.n, 100.0 * b.top1 / b.n);
    if (a.top1 != b.top1 || a.loss != b.loss) fprintf(stderr, "custom_net: the reloaded net scores differently\n");
    else if (a.top1 < a.n / 2) fprintf(stderr, "custom_net: only %d of %d right (chance: 10%%)\n", a.top1, a.n);
    else rc = 0;
out:
    nn_seq_free(&net);
    nn_seq_free(&fresh);
    nn_array_source_free(tr);
    nn_array_source_free(te);
    return rc;
}

int main(void)
{
    nn_dataset train_ds = {0}, test_ds = {0};
    if (nn_fmnist_load(NULL, true, &train_ds) != NN_OK || nn_fmnist_load(NULL, false, &test_ds) != NN_OK) {
        fprintf(stderr, "custom_net: skipped: %s\n", nn_errmsg());
        nn_dataset_free(&train_ds);
        return 77;
    }
    char path[] = "/tmp/convnet_custom_net_XXXXXX";
    int fd = mkstemp(path);
    int rc = fd < 0 ? 1 : run(&train_ds, &test_ds, path);
    if (fd >= 0) remove(path);
    nn_dataset_free(&train_ds);
    nn_dataset_free(&test_ds);
    return rc;
}
