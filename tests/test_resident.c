/* A data set kept on a device (io/resident.h) against the CPU loader, here on
 * the CPU (test_cuda runs the same comparison, tests/resident_compare.h, on the
 * GPU): the same batches bit for bit, through resizes up and down,
 * augmentation, shuffling and a final partial batch; and the loader itself
 * against its formula as it was written before it went through io/sample.h
 * (so the shared per-pixel code changed no number). */
#include <string.h>

#include "core/philox.h"
#include "io/resident.h"
#include "models/model.h"
#include "models/train.h"
#include "tests/resident_compare.h"
#include "tests/testutil.h"

/* n random c x h x w images, labels in [0, 10) */
static nn_dataset random_set(uint64_t seed, int n, int c, int h, int w)
{
    nn_dataset d = {.n = n, .c = c, .h = h, .w = w, .classes = 10};
    const size_t bytes = (size_t)n * c * h * w;
    d.images = malloc(bytes);
    d.labels = malloc((size_t)n * sizeof *d.labels);
    assert_true(d.images && d.labels);
    for (size_t i = 0; i < bytes; i++) d.images[i] = (uint8_t)(nn_philox(i, seed).v[0] & 0xFF);
    for (int i = 0; i < n; i++) d.labels[i] = (int32_t)(nn_philox(i, seed + 1).v[0] % 10);
    return d;
}

/* The loader's sample as io/dataset.c computed it before io/sample.h: resize
 * the plane, then shift, flip and normalize; float arithmetic in the same order. */
static void old_resize(const uint8_t *src, int sh, int sw, float *dst, int dh, int dw)
{
    float ry = (float)sh / (float)dh, rx = (float)sw / (float)dw;
    for (int i = 0; i < dh; i++) {
        float fy = ((float)i + 0.5f) * ry - 0.5f;
        if (fy < 0) fy = 0;
        int y0 = (int)fy, y1 = y0 + 1 < sh ? y0 + 1 : sh - 1;
        float wy = fy - (float)y0;
        for (int j = 0; j < dw; j++) {
            float fx = ((float)j + 0.5f) * rx - 0.5f;
            if (fx < 0) fx = 0;
            int x0 = (int)fx, x1 = x0 + 1 < sw ? x0 + 1 : sw - 1;
            float wx = fx - (float)x0;
            float top = src[y0 * sw + x0] * (1 - wx) + src[y0 * sw + x1] * wx;
            float bot = src[y1 * sw + x0] * (1 - wx) + src[y1 * sw + x1] * wx;
            dst[i * dw + j] = top * (1 - wy) + bot * wy;
        }
    }
}

static void old_sample(const nn_dataset *ds, const nn_loader_config *cfg, int idx, int epoch, int pos, float *out)
{
    int S = cfg->size, dx = 0, dy = 0, flip = 0;
    if (cfg->augment) {
        nn_philox_out r = nn_philox(((uint64_t)epoch << 32) | (uint32_t)pos, cfg->seed ^ 0xA06D0A7Aull);
        int P = S / 16;
        dx = (int)(r.v[0] % (uint32_t)(2 * P + 1)) - P;
        dy = (int)(r.v[1] % (uint32_t)(2 * P + 1)) - P;
        flip = r.v[2] & 1;
    }
    float *tmp = malloc((size_t)S * S * sizeof *tmp);
    assert_non_null(tmp);
    float inv = 1.0f / (255.0f * cfg->std), off = cfg->mean / cfg->std;
    for (int c = 0; c < ds->c; c++) {
        const uint8_t *src = ds->images + ((size_t)idx * ds->c + c) * ds->h * ds->w;
        if (S == ds->h && S == ds->w)
            for (int i = 0; i < S * S; i++) tmp[i] = src[i];
        else
            old_resize(src, ds->h, ds->w, tmp, S, S);
        float *o = out + (size_t)c * S * S;
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) {
                int si = i + dy, sj = (flip ? S - 1 - j : j) + dx;
                float v = (si >= 0 && si < S && sj >= 0 && sj < S) ? tmp[si * S + sj] : 0.0f;
                o[i * S + j] = v * inv - off;
            }
    }
    free(tmp);
}

/* The loader's sample against the old formula: each epoch's order is drawn
 * again here, from the loader's own function, when the epoch changes. */
typedef struct {
    const nn_dataset *d;
    const nn_loader_config *c;
    int32_t *order;
    float *ref;
    int epoch; /* whose order `order` holds; -1: none yet */
} old_check;

static void matches_old(const float *sample, int e, int b, int k, void *user)
{
    old_check *o = user;
    if (o->epoch != e) {
        int nb;
        nn_loader_order(o->c, nn_loader_count(o->d, o->c, &nb), e, o->order);
        o->epoch = e;
    }
    const size_t img = (size_t)o->d->c * o->c->size * o->c->size;
    const int pos = b * o->c->batch + k;
    old_sample(o->d, o->c, o->order[pos], e, pos, o->ref);
    if (memcmp(o->ref, sample, img * sizeof *o->ref) != 0)
        fail_msg("epoch %d batch %d sample %d: the loader changed its numbers", e, b, k);
}

/* Every batch of two epochs: the loader against the old formula, and the
 * resident set on the CPU against the loader, bit for bit. */
static void compare(const nn_dataset *d, const nn_loader_config *c)
{
    old_check o = {.d = d, .c = c, .epoch = -1};
    o.order = malloc((size_t)d->n * sizeof *o.order);
    o.ref = malloc((size_t)d->c * c->size * c->size * sizeof *o.ref);
    assert_true(o.order && o.ref);
    tu_resident_matches_loader(d, c, NN_CPU, matches_old, &o);
    free(o.order);
    free(o.ref);
}

static void test_resident_cpu_matches_the_loader(void **state)
{
    (void)state;
    nn_dataset d = random_set(5, 37, 1, 28, 28);
    /* up (Fashion-MNIST to AlexNet-ish), down, odd, same size; augmented or
     * not; a partial final batch (37 = 4 x 8 + 5) */
    const int sizes[] = {64, 19, 28, 227};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        nn_loader_config c = {.batch = 8, .size = sizes[s], .shuffle = true, .augment = s % 2 == 0,
                              .mean = 0.286f, .std = 0.353f, .seed = 7 + s};
        compare(&d, &c);
    }
    nn_dataset_free(&d);
    nn_dataset rgb = random_set(6, 9, 3, 13, 17); /* channels, and h != w */
    nn_loader_config c = {.batch = 4, .size = 24, .shuffle = true, .augment = true, .mean = 0.5f, .std = 0.25f,
                          .seed = 2, .limit = 7};
    compare(&rgb, &c);
    nn_dataset_free(&rgb);
}

static void test_resident_errors(void **state)
{
    (void)state;
    nn_dataset d = random_set(8, 10, 1, 28, 28);
    nn_loader_config c = {.batch = 4, .size = 32, .mean = 0, .std = 1};
    nn_resident *r = NULL;
    nn_loader_config bad = c;
    bad.std = 0;
    assert_int_equal(nn_resident_new(&r, &d, NN_CPU, &bad), NN_E_ARG);
    assert_null(r);
    assert_int_equal(nn_resident_new(&r, &d, NN_CPU, &c), NN_OK);
    int xs[2] = {4, 32 * 32}, small[2] = {3, 32 * 32}, ys = 4, n = -1;
    nn_tensor *x = NULL, *x3 = NULL, *y = NULL;
    assert_int_equal(nn_tensor_new(&x, NN_F32, NN_CPU, 2, xs), NN_OK);
    assert_int_equal(nn_tensor_new(&x3, NN_F32, NN_CPU, 2, small), NN_OK);
    assert_int_equal(nn_tensor_new(&y, NN_I32, NN_CPU, 1, &ys), NN_OK);
    assert_int_equal(nn_resident_batch(r, 0, x, y, &n), NN_E_ARG); /* no epoch started */
    assert_non_null(strstr(nn_errmsg(), "no epoch started"));
    assert_int_equal(nn_resident_start(r, 0), NN_OK);
    assert_int_equal(nn_resident_batch(r, 0, x3, y, &n), NN_E_ARG); /* 3 images of room for 4 */
    assert_non_null(strstr(nn_errmsg(), "batch 0 needs float32 x of 4096"));
    assert_int_equal(nn_resident_batch(r, 0, y, x, &n), NN_E_ARG); /* swapped dtypes */
    assert_int_equal(nn_resident_batch(r, 2, x3, y, &n), NN_OK);   /* the last: 2 images fit in 3 */
    assert_int_equal(n, 2);
    assert_int_equal(nn_resident_batch(r, 3, x, y, &n), NN_OK); /* past the end */
    assert_int_equal(n, 0);
    nn_tensor_free(x);
    nn_tensor_free(x3);
    nn_tensor_free(y);
    nn_resident_free(r);
    nn_dataset_free(&d);
}

/* The running training loss and top-1 after each step (10 steps). */
static void record(const nn_train_event *ev, void *user)
{
    double *seen = user;
    if (ev->kind != NN_TRAIN_STEP) return;
    seen[2 * (ev->step - 1)] = ev->loss;
    seen[2 * (ev->step - 1) + 1] = ev->acc;
}

/* LeNet trained for 2 epochs of 5 batches (the last of 4 images) on d, by the
 * loader's or the resident set's batches, into dir: fresh, stopping after
 * stop_after steps (0: never), or resumed from dir/last.safetensors. */
static void run_lenet(const nn_dataset *d, const nn_dataset *test, bool resident, const char *dir, bool resume,
                      int64_t stop_after, double seen[20])
{
    const nn_loader_config lc = {.batch = 8, .size = 28, .shuffle = true, .augment = true, .mean = 0.3f,
                                 .std = 0.35f, .seed = 4},
                           ec = {.batch = 16, .size = 28, .mean = 0.3f, .std = 0.35f};
    nn_loader *l = NULL, *el = NULL;
    nn_resident *r = NULL;
    if (resident)
        assert_int_equal(nn_resident_new(&r, d, NN_CPU, &lc), NN_OK);
    else
        assert_int_equal(nn_loader_new(&l, d, &lc), NN_OK);
    assert_int_equal(nn_loader_new(&el, test, &ec), NN_OK);
    nn_batch_source tr = resident ? nn_resident_source(r) : nn_loader_source(l), te = nn_loader_source(el);
    assert_int_equal(tr.batches, 5);
    char last[512];
    snprintf(last, sizeof last, "%s/last.safetensors", dir);
    nn_model_config cfg = nn_lenet_config();
    nn_train_state st;
    if (resume) {
        assert_int_equal(nn_checkpoint_read_config(last, &cfg, &st), NN_OK);
        assert_int_equal(st.batch, 2); /* inside the second epoch */
    } else {
        cfg.init = NN_INIT_HE;
        nn_train_recipe rc = {.optim = {.kind = NN_OPT_ADAM, .lr = 1e-3f}, .batch_size = 8, .epochs = 2, .seed = 4};
        rc.sched = nn_schedule_make(NN_SCHED_COSINE, rc.optim.lr);
        st = nn_train_state_make(&rc);
    }
    nn_seq model;
    nn_rng rng = nn_rng_make(st.seed);
    assert_int_equal(nn_model_build(&model, &cfg, NN_CPU, &rng), NN_OK);
    nn_train_model m = {.seq = &model, .classes = cfg.classes, .cfg = &cfg};
    nn_trainer_config tc = {.dev = NN_CPU, .checkpoint_dir = dir, .stop_after = stop_after, .on_event = record,
                            .user = seen};
    nn_trainer *t = NULL;
    assert_int_equal(nn_trainer_new(&t, &m, &tr, &te, &st, &tc), NN_OK);
    if (resume) assert_int_equal(nn_trainer_resume(t, last), NN_OK);
    nn_train_result res;
    if (nn_trainer_run(t, &res) != NN_OK) fail_msg("%s run: %s", resident ? "resident" : "loader", nn_errmsg());
    assert_int_equal(res.end, stop_after ? NN_TRAIN_STOPPED_AFTER : NN_TRAIN_DONE);
    nn_trainer_free(t);
    nn_seq_free(&model);
    nn_resident_free(r);
    nn_loader_free(l);
    nn_loader_free(el);
}

/* The trainer on the resident set's batch source (next_into, the batch built
 * in the trainer's tensors, a partial last batch moved to its own pair),
 * stopped inside an epoch and resumed, ends with the checkpoint, byte for byte,
 * of an uninterrupted run on the CPU loader's host batches. */
static void test_resident_trains_as_the_loader(void **state)
{
    (void)state;
    nn_dataset d = random_set(11, 36, 1, 28, 28), test = random_set(12, 20, 1, 28, 28);
    double la[20] = {0}, ra[20] = {0}, ignored[20];
    run_lenet(&d, &test, false, tu_path("loader"), false, 0, la);
    /* the same losses and hits step by step (the hits from the host labels) */
    run_lenet(&d, &test, true, tu_path("straight"), false, 0, ra);
    assert_memory_equal(la, ra, sizeof la);
    run_lenet(&d, &test, true, tu_path("resident"), false, 7, ignored);
    run_lenet(&d, &test, true, tu_path("resident"), true, 0, ignored);
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/last.safetensors", tu_path("loader"));
    snprintf(pb, sizeof pb, "%s/last.safetensors", tu_path("resident"));
    size_t na, nb;
    uint8_t *a = tu_read_all(pa, &na), *b = tu_read_all(pb, &nb);
    assert_int_equal(na, nb);
    if (memcmp(a, b, na) != 0) fail_msg("%s and %s differ", pa, pb);
    free(a);
    free(b);
    nn_dataset_free(&d);
    nn_dataset_free(&test);
}

/* Host batches (evaluation, a sharded source) are refused by name. */
static void test_resident_source_has_no_host_batches(void **state)
{
    (void)state;
    nn_dataset d = random_set(13, 8, 1, 28, 28);
    nn_loader_config c = {.batch = 4, .size = 28, .mean = 0, .std = 1};
    nn_resident *r = NULL;
    assert_int_equal(nn_resident_new(&r, &d, NN_CPU, &c), NN_OK);
    nn_batch_source s = nn_resident_source(r);
    assert_int_equal(s.batches, 2);
    assert_non_null(s.next_into);
    const float *x;
    const int32_t *y;
    int n;
    assert_int_equal(s.start(s.impl, 0, 0), NN_OK);
    assert_int_equal(s.next(s.impl, &x, &y, &n), NN_E_UNSUPPORTED);
    assert_non_null(strstr(nn_errmsg(), "built on the device"));
    nn_resident_free(r);
    nn_dataset_free(&d);
}

static int setup(void **state)
{
    (void)state;
    return tu_tmpdir_make("resident");
}

static int teardown(void **state)
{
    (void)state;
    return tu_tmpdir_remove();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resident_cpu_matches_the_loader),
        cmocka_unit_test(test_resident_errors),
        cmocka_unit_test(test_resident_trains_as_the_loader),
        cmocka_unit_test(test_resident_source_has_no_host_batches),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
