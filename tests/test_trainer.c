/* The library's training API: the trainer on a model of one's own (forward
 * function + parameter list) fed from in-memory arrays, its events, hook, stop
 * request, non-finite policy and exact resume; checkpoints for any model
 * (free-form metadata, NULL arguments); the array source's batches and
 * tensors; the loader's limit; a second backward on one graph refused. */
#include <string.h>

#include "convnet.h"
#include "tests/testutil.h"

/* ---- a model of our own: logits = W flatten(x) + b, 1x4x4 -> 2 classes ---- */

enum { N = 40, C = 1, H = 4, W = 4, K = 2, BATCH = 8 };

typedef struct tiny {
    nn_tensor *w, *b;
    nn_params ps;
} tiny;

static nn_tensor *tiny_forward(nn_ctx *ctx, void *model, nn_tensor *x)
{
    tiny *m = model;
    return nn_linear(ctx, nn_flatten(ctx, x), m->w, m->b);
}

static void tiny_make(tiny *m, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->w = tu_rand(seed, -0.1f, 0.1f, 2, (int[]){K, C * H * W});
    assert_int_equal(nn_tensor_new(&m->b, NN_F32, NN_CPU, 1, (int[]){K}), NN_OK);
    assert_int_equal(nn_tensor_require_grad(m->w), NN_OK);
    assert_int_equal(nn_tensor_require_grad(m->b), NN_OK);
    assert_int_equal(nn_params_add(&m->ps, "fc.weight", m->w, false), NN_OK);
    assert_int_equal(nn_params_add(&m->ps, "fc.bias", m->b, true), NN_OK);
}

static void tiny_free(tiny *m)
{
    nn_params_clear(&m->ps);
    nn_tensor_free(m->w);
    nn_tensor_free(m->b);
}

/* Two classes apart by their mean pixel, with noise. */
static float g_x[N * C * H * W];
static int32_t g_y[N];

static void make_data(void)
{
    nn_rng r = nn_rng_make(11);
    for (int i = 0; i < N; i++) {
        g_y[i] = i % 2;
        for (int j = 0; j < C * H * W; j++) g_x[i * C * H * W + j] = (float)g_y[i] - 0.5f + (nn_rng_uniform1(&r) - 0.5f);
    }
}

static nn_array_source *source(bool shuffle)
{
    nn_array_source *a = NULL;
    nn_array_config ac = {.images_f32 = g_x, .labels = g_y, .n = N, .c = C, .h = H, .w = W, .batch = BATCH,
                          .shuffle = shuffle, .seed = 3};
    assert_int_equal(nn_array_source_new(&a, &ac), NN_OK);
    return a;
}

static nn_train_state recipe_state(int epochs)
{
    nn_train_recipe rc = {.optim = {.kind = NN_OPT_ADAM, .lr = 0.05f}, .batch_size = BATCH, .epochs = epochs, .seed = 9};
    rc.sched = nn_schedule_make(NN_SCHED_COSINE, rc.optim.lr);
    return nn_train_state_make(&rc);
}

/* ---- what the callback and hook see ---- */

typedef struct watch {
    int steps, epochs, skips, hooks;
    int64_t stop_at;          /* set *stop after this step (0: never) */
    int poison_at;            /* hook: make a gradient NaN at this hook call (0: never) */
    int poison_param;         /* ... of this parameter: 0 fc.weight, 1 fc.bias */
    volatile sig_atomic_t stop;
    float last_test_acc;
    nn_train_event last_step;
} watch;

static void on_event(const nn_train_event *ev, void *user)
{
    watch *w = user;
    if (ev->kind == NN_TRAIN_STEP) {
        w->steps++;
        w->last_step = *ev;
        if (w->stop_at && ev->step == w->stop_at) w->stop = 1;
    } else if (ev->kind == NN_TRAIN_EPOCH) {
        w->epochs++;
        w->last_test_acc = ev->test_acc;
        assert_int_equal(ev->eval.n, N);
    } else {
        w->skips++;
        assert_string_equal(ev->nonfinite, w->poison_param ? "fc.bias" : "fc.weight");
    }
}

static nn_status after_backward(nn_trainer *t, void *user)
{
    watch *w = user;
    if (++w->hooks == w->poison_at)
        nn_f32(nn_trainer_params(t)->p[w->poison_param].t->grad)[w->poison_param ? 1 : 3] = NAN;
    return NN_OK;
}

/* Trains the tiny model for `epochs` into dir; returns the run's status. */
static nn_status run_tiny(tiny *m, nn_train_state *st, watch *w, const char *dir, const char *resume,
                          bool skip, nn_train_result *res)
{
    nn_array_source *tr = source(true), *ev = source(false);
    nn_batch_source tsrc = nn_array_source_batches(tr), esrc = nn_array_source_batches(ev);
    nn_ckpt_meta meta = {0};
    assert_int_equal(nn_ckpt_meta_set(&meta, "depth", "1"), NN_OK);
    nn_train_model tm = {.forward = tiny_forward, .model = m, .params = &m->ps, .in_c = C, .in_h = H, .in_w = W,
                         .classes = K, .arch = "tiny-linear", .init = "uniform(-0.1, 0.1)", .meta = &meta};
    nn_trainer_config tc = {.checkpoint_dir = dir, .skip_nonfinite = skip, .stop = &w->stop, .on_event = on_event,
                            .after_backward = after_backward, .user = w};
    nn_trainer *t = NULL;
    assert_int_equal(nn_trainer_new(&t, &tm, &tsrc, &esrc, st, &tc), NN_OK);
    if (resume) assert_int_equal(nn_trainer_resume(t, resume), NN_OK);
    nn_status s = nn_trainer_run(t, res);
    nn_trainer_free(t);
    nn_ckpt_meta_free(&meta);
    nn_array_source_free(tr);
    nn_array_source_free(ev);
    return s;
}

static void test_trainer_custom_model_learns(void **state)
{
    (void)state;
    tiny m;
    tiny_make(&m, 1);
    nn_train_state st = recipe_state(3);
    watch w = {0};
    nn_train_result res;
    assert_int_equal(run_tiny(&m, &st, &w, tu_path("learn"), NULL, false, &res), NN_OK);
    assert_int_equal(res.end, NN_TRAIN_DONE);
    assert_int_equal(w.steps, 3 * N / BATCH);
    assert_int_equal(w.hooks, 3 * N / BATCH);
    assert_int_equal(w.epochs, 3);
    assert_int_equal(st.step, 3 * N / BATCH);
    assert_int_equal(st.epoch, 3);
    assert_true(w.last_test_acc > 0.9f);    /* separable classes: chance is 0.5 */
    assert_true(w.last_step.lr < 0.05f);    /* the cosine schedule moved */
    assert_int_equal(w.last_step.batch, w.last_step.batches);
    /* the checkpoint: own arch, init, user metadata; not a built-in model */
    nn_ckpt_meta meta = {0};
    nn_train_state back;
    tiny m2;
    tiny_make(&m2, 2);
    assert_int_equal(nn_checkpoint_read(res.last_path, &m2.ps, NULL, &back, &meta), NN_OK);
    assert_memory_equal(nn_f32(m.w), nn_f32(m2.w), m.w->numel * sizeof(float));
    assert_string_equal(nn_ckpt_meta_get(&meta, "model.arch"), "tiny-linear");
    assert_string_equal(nn_ckpt_meta_get(&meta, "model.init"), "uniform(-0.1, 0.1)");
    assert_string_equal(nn_ckpt_meta_get(&meta, "user.depth"), "1");
    assert_int_equal(back.step, st.step);
    assert_int_equal(back.sched.kind, NN_SCHED_COSINE);
    nn_model_config cfg;
    assert_int_equal(nn_checkpoint_read_config(res.last_path, &cfg, NULL), NN_E_UNSUPPORTED);
    assert_non_null(strstr(nn_errmsg(), "tiny-linear"));
    nn_ckpt_meta_free(&meta);
    tiny_free(&m2);
    tiny_free(&m);
}

/* ---- data parallelism, emulated in one process (models/dist_train.h) ---- */

typedef struct dp_watch {
    nn_dp *dp;
    nn_train_event epoch;
} dp_watch;

static void dp_on_event(const nn_train_event *ev, void *user)
{
    if (ev->kind == NN_TRAIN_EPOCH) ((dp_watch *)user)->epoch = *ev;
}

static nn_status dp_hook(nn_trainer *t, void *user)
{
    (void)t;
    return nn_dp_after_backward(((dp_watch *)user)->dp);
}

/* One epoch of the tiny model, unshuffled, as `ranks` processes emulated in
 * this one (1: plain, no hook); the epoch's event. */
static nn_train_event epoch_as_ranks(int ranks)
{
    tiny m;
    tiny_make(&m, 1);
    nn_train_state st = recipe_state(1);
    nn_array_source *tr = source(false);
    nn_batch_source all = nn_array_source_batches(tr);
    nn_shard sh;
    nn_batch_source mine = nn_shard_source(&sh, &all, 0, ranks, C * H * W);
    nn_train_model tm = {.forward = tiny_forward, .model = &m, .params = &m.ps, .in_c = C, .in_h = H, .in_w = W,
                         .classes = K};
    volatile sig_atomic_t request = 0, agreed = 0;
    dp_watch w = {0};
    nn_trainer_config tc = {.stop = &agreed, .on_event = dp_on_event, .after_backward = ranks > 1 ? dp_hook : NULL,
                            .user = &w};
    nn_trainer *t = NULL;
    assert_int_equal(nn_trainer_new(&t, &tm, ranks > 1 ? &mine : &all, NULL, &st, &tc), NN_OK);
    nn_dp_config dc = {.request = &request, .agreed = &agreed, .train_shard = &sh, .ranks_emulated = ranks,
                       .hang_rank = -1, .die_rank = -1, .signal_rank = -1, .hang_sum_rank = -1, .fault_step = -1,
                       .perturb_rank = -1};
    assert_int_equal(nn_dp_new(&w.dp, t, &dc), NN_OK);
    nn_train_result res;
    assert_int_equal(nn_trainer_run(t, &res), NN_OK);
    nn_dp_free(w.dp);
    nn_trainer_free(t);
    nn_array_source_free(tr);
    tiny_free(&m);
    return w.epoch;
}

/* The epoch's training loss and accuracy cover every process's images, not
 * the first process's share: the same as one process's, image for image. */
static void test_trainer_ranks_count_every_image(void **state)
{
    (void)state;
    nn_train_event one = epoch_as_ranks(1), two = epoch_as_ranks(2), four = epoch_as_ranks(4);
    assert_int_equal(one.seen, N);
    assert_int_equal(two.seen, N);
    assert_int_equal(four.seen, N);
    /* separable data and a margin far above float rounding: the same hits */
    if (two.acc != one.acc || four.acc != one.acc)
        fail_msg("training accuracy: one process %.4f, 2 ranks %.4f, 4 ranks %.4f", one.acc, two.acc, four.acc);
    assert_true(fabs(two.loss - one.loss) < 1e-5 * one.loss && fabs(four.loss - one.loss) < 1e-5 * one.loss);
}

/* Stopped by request mid-epoch, resumed from its checkpoint: bit for bit the straight run. */
static void test_trainer_stop_and_exact_resume(void **state)
{
    (void)state;
    tiny a, b;
    tiny_make(&a, 1);
    tiny_make(&b, 1);
    nn_train_state sa = recipe_state(3), sb = recipe_state(3);
    watch wa = {0}, wb = {.stop_at = 7};
    nn_train_result res;
    assert_int_equal(run_tiny(&a, &sa, &wa, tu_path("straight"), NULL, false, &res), NN_OK);
    assert_int_equal(run_tiny(&b, &sb, &wb, tu_path("stopped"), NULL, false, &res), NN_E_INTERRUPTED);
    assert_int_equal(res.end, NN_TRAIN_STOP_REQUESTED);
    assert_true(res.mid_epoch);
    assert_int_equal(sb.step, 7);
    /* a fresh process would start from the file alone: other weights, the file's state */
    tiny c;
    tiny_make(&c, 99);
    nn_train_state sc;
    char last[4096];
    snprintf(last, sizeof last, "%s", res.last_path);
    assert_int_equal(nn_checkpoint_read(last, &c.ps, NULL, &sc, NULL), NN_OK);
    assert_int_equal(sc.step, 7);
    assert_int_equal(sc.epoch, 1);
    assert_int_equal(sc.batch, 2);
    watch wc = {0};
    assert_int_equal(run_tiny(&c, &sc, &wc, tu_path("stopped"), last, false, &res), NN_OK);
    assert_int_equal(sc.step, sa.step);
    assert_memory_equal(nn_f32(a.w), nn_f32(c.w), a.w->numel * sizeof(float));
    assert_memory_equal(nn_f32(a.b), nn_f32(c.b), a.b->numel * sizeof(float));
    assert_true(sa.lr == sc.lr);
    tiny_free(&a);
    tiny_free(&b);
    tiny_free(&c);
}

static void test_trainer_nonfinite(void **state)
{
    (void)state;
    tiny m;
    tiny_make(&m, 1);
    nn_train_state st = recipe_state(1);
    watch w = {.poison_at = 3};
    nn_train_result res;
    assert_int_equal(run_tiny(&m, &st, &w, NULL, NULL, false, &res), NN_E_NONFINITE);
    const char *msg = nn_errmsg();
    if (!strstr(msg, "step 3") || !strstr(msg, "fc.weight")) fail_msg("message: %s", msg);
    assert_int_equal(st.step, 2);
    /* skipped instead: one batch fewer steps, reported */
    tiny_free(&m);
    tiny_make(&m, 1);
    st = recipe_state(1);
    w = (watch){.poison_at = 3};
    assert_int_equal(run_tiny(&m, &st, &w, NULL, NULL, true, &res), NN_OK);
    assert_int_equal(res.skipped, 1);
    assert_int_equal(w.skips, 1);
    assert_int_equal(st.step, N / BATCH - 1);
    tiny_free(&m);
}

/* The trainer counts non-finite gradients once over its gradient block; it
 * must still name the parameter, here the second one (the bias). */
static void test_trainer_nonfinite_names_parameter(void **state)
{
    (void)state;
    tiny m;
    tiny_make(&m, 1);
    nn_train_state st = recipe_state(1);
    watch w = {.poison_at = 2, .poison_param = 1};
    nn_train_result res;
    assert_int_equal(run_tiny(&m, &st, &w, NULL, NULL, false, &res), NN_E_NONFINITE);
    const char *msg = nn_errmsg();
    if (!strstr(msg, "step 2 (epoch 1, batch 2): the gradient of fc.bias is not finite; stopping"))
        fail_msg("message: %s", msg);
    assert_int_equal(st.step, 1);
    /* the list stayed flat through the run: one block, every gradient in it */
    assert_non_null(nn_params_flat(&m.ps, NULL));
    tiny_free(&m);
    tiny_make(&m, 1);
    st = recipe_state(1);
    w = (watch){.poison_at = 2, .poison_param = 1};
    assert_int_equal(run_tiny(&m, &st, &w, NULL, NULL, true, &res), NN_OK);
    assert_int_equal(w.skips, 1);
    tiny_free(&m);
}

static void test_trainer_bad_arguments(void **state)
{
    (void)state;
    nn_trainer *t = NULL;
    nn_train_state st = recipe_state(1);
    nn_trainer_config tc = {0};
    nn_array_source *a = source(false);
    nn_batch_source src = nn_array_source_batches(a);
    nn_train_model none = {.classes = 2, .in_c = 1, .in_h = 1, .in_w = 1};
    assert_int_equal(nn_trainer_new(&t, NULL, &src, NULL, &st, &tc), NN_E_ARG);
    assert_int_equal(nn_trainer_new(&t, &none, &src, NULL, &st, &tc), NN_E_ARG);
    assert_null(t);
    assert_int_equal(nn_trainer_new(NULL, &none, &src, NULL, &st, &tc), NN_E_ARG);
    assert_int_equal(nn_trainer_run(NULL, NULL), NN_E_ARG);
    assert_int_equal(nn_trainer_resume(NULL, "x"), NN_E_ARG);
    nn_array_source_free(a);
}

/* ---- checkpoints for any model ---- */

static void test_checkpoint_null_and_foreign(void **state)
{
    (void)state;
    nn_model_config cfg = nn_lenet_config();
    nn_seq seq;
    nn_rng rng = nn_rng_make(4);
    assert_int_equal(nn_model_build(&seq, &cfg, NN_CPU, &rng), NN_OK);
    assert_int_equal(nn_checkpoint_save(NULL, &cfg, &seq, NULL, NULL), NN_E_ARG);
    assert_int_equal(nn_checkpoint_save(tu_path("x.safetensors"), &cfg, NULL, NULL, NULL), NN_E_ARG);
    assert_int_equal(nn_checkpoint_write(tu_path("x.safetensors"), NULL), NN_E_ARG);
    assert_int_equal(nn_checkpoint_read(NULL, &seq.params, NULL, NULL, NULL), NN_E_ARG);
    assert_int_equal(nn_checkpoint_read_config(NULL, &cfg, NULL), NN_E_ARG);
    assert_int_equal(nn_checkpoint_load(tu_path("x.safetensors"), NULL, NULL), NN_E_ARG);
    assert_int_equal(nn_ckpt_meta_set(NULL, "a", "b"), NN_E_ARG);
    /* cfg NULL: the weights alone, which load back */
    assert_int_equal(nn_checkpoint_save(tu_path("w.safetensors"), NULL, &seq, NULL, NULL), NN_OK);
    assert_int_equal(nn_checkpoint_load(tu_path("w.safetensors"), &seq, NULL), NN_OK);
    /* an arch nn_model_build does not know is refused, not written with made-up fields */
    nn_model_config vgg = cfg;
    snprintf(vgg.arch, sizeof vgg.arch, "vgg");
    assert_int_equal(nn_checkpoint_save(tu_path("v.safetensors"), &vgg, &seq, NULL, NULL), NN_E_ARG);
    assert_non_null(strstr(nn_errmsg(), "vgg"));
    /* weights + normalization + user metadata, read back */
    nn_ckpt_meta meta = {0}, back = {0};
    assert_int_equal(nn_ckpt_meta_set(&meta, "note", "first"), NN_OK);
    assert_int_equal(nn_ckpt_meta_set(&meta, "note", "second"), NN_OK);
    nn_checkpoint_desc d = {.params = &seq.params, .arch = "mine", .init = "he", .has_norm = true, .mean = 0.25f,
                            .std = 0.5f, .meta = &meta};
    assert_int_equal(nn_checkpoint_write(tu_path("m.safetensors"), &d), NN_OK);
    assert_int_equal(nn_checkpoint_read(tu_path("m.safetensors"), &seq.params, NULL, NULL, &back), NN_OK);
    assert_string_equal(nn_ckpt_meta_get(&back, "user.note"), "second");
    assert_string_equal(nn_ckpt_meta_get(&back, "train.mean"), "0.25");
    assert_string_equal(nn_ckpt_meta_get(&back, "model.init"), "he");
    /* no training state in it: asking for one is a clear error */
    nn_train_state st;
    assert_int_equal(nn_checkpoint_read(tu_path("m.safetensors"), &seq.params, NULL, &st, NULL), NN_E_FORMAT);
    nn_ckpt_meta_free(&meta);
    nn_ckpt_meta_free(&back);
    nn_seq_free(&seq);
}

/* ---- data ---- */

static void test_array_source_batches_and_tensors(void **state)
{
    (void)state;
    uint8_t img[10 * 2];
    int32_t lab[10];
    for (int i = 0; i < 10; i++) img[2 * i] = (uint8_t)(10 * i), img[2 * i + 1] = 255, lab[i] = i;
    nn_array_source *a = NULL;
    nn_array_config ac = {.images_u8 = img, .labels = lab, .n = 10, .c = 1, .h = 1, .w = 2, .batch = 4,
                          .mean = 0.5f, .std = 0.25f};
    assert_int_equal(nn_array_source_new(&a, &ac), NN_OK);
    assert_int_equal(nn_array_source_nbatches(a), 3);
    assert_int_equal(nn_array_source_start(a, 0, 0), NN_OK);
    int sizes[3] = {4, 4, 2};
    for (int b = 0; b < 3; b++) {
        nn_tensor *x, *y;
        assert_int_equal(nn_array_source_next(a, NN_CPU, &x, &y), NN_OK);
        assert_non_null(x);
        assert_int_equal(x->shape[0], sizes[b]);
        assert_int_equal(y->shape[0], sizes[b]);
        assert_int_equal(x->ndim, 4);
        int i0 = 4 * b;
        assert_int_equal(nn_i32(y)[0], i0);
        /* (byte/255 - 0.5) / 0.25 */
        assert_float_equal(nn_f32(x)[0], ((double)(10 * i0) / 255.0 - 0.5) / 0.25, 1e-5);
        assert_float_equal(nn_f32(x)[1], 2.0, 1e-5);
    }
    nn_tensor *x, *y;
    assert_int_equal(nn_array_source_next(a, NN_CPU, &x, &y), NN_OK);
    assert_null(x);
    nn_array_source_free(a);
    /* limit and drop_last; a shuffled epoch is a permutation */
    ac.limit = 9, ac.drop_last = true, ac.shuffle = true;
    assert_int_equal(nn_array_source_new(&a, &ac), NN_OK);
    assert_int_equal(nn_array_source_count(a), 9);
    assert_int_equal(nn_array_source_nbatches(a), 2);
    nn_batch_source s = nn_array_source_batches(a);
    assert_int_equal(s.start(s.impl, 1, 0), NN_OK);
    int seen[10] = {0}, n;
    const float *hx;
    const int32_t *hy;
    for (int b = 0; b < 2; b++) {
        assert_int_equal(s.next(s.impl, &hx, &hy, &n), NN_OK);
        assert_int_equal(n, 4);
        for (int i = 0; i < n; i++) seen[hy[i]]++;
    }
    assert_int_equal(s.next(s.impl, &hx, &hy, &n), NN_OK);
    assert_int_equal(n, 0);
    assert_int_equal(seen[9], 0); /* beyond the limit */
    for (int i = 0; i < 9; i++) assert_true(seen[i] <= 1);
    nn_array_source_free(a);
    /* bad configs */
    ac.images_f32 = (const float *)img;
    assert_int_equal(nn_array_source_new(&a, &ac), NN_E_ARG);
    assert_null(a);
    assert_int_equal(nn_array_source_new(&a, NULL), NN_E_ARG);
}

static void test_loader_limit(void **state)
{
    (void)state;
    uint8_t img[20 * 4];
    int32_t lab[20];
    for (int i = 0; i < 20; i++) lab[i] = i, memset(img + 4 * i, i, 4);
    nn_dataset ds = {.n = 20, .c = 1, .h = 2, .w = 2, .images = img, .labels = lab, .classes = 20};
    nn_loader_config lc = {.batch = 4, .size = 2, .shuffle = true, .std = 1, .seed = 1, .limit = 10};
    nn_loader *l = NULL;
    assert_int_equal(nn_loader_new(&l, &ds, &lc), NN_OK);
    assert_int_equal(nn_loader_batches(l), 3); /* 4, 4, 2 */
    assert_int_equal(nn_loader_start(l, 0, 0), NN_OK);
    const float *x;
    const int32_t *y;
    int n, total = 0;
    while (nn_loader_next(l, &x, &y, &n) == NN_OK && n)
        for (int i = 0; i < n; i++, total++) assert_true(y[i] < 10);
    assert_int_equal(total, 10);
    nn_loader_free(l);
}

static void test_backward_twice_is_an_error(void **state)
{
    (void)state;
    nn_tensor *w = tu_rand(5, -1, 1, 1, (int[]){3});
    assert_int_equal(nn_tensor_require_grad(w), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    int32_t lab = 1;
    nn_tensor *y;
    assert_int_equal(nn_tensor_from(&y, NN_I32, NN_CPU, 1, (int[]){1}, &lab), NN_OK);
    nn_tensor *loss = nn_softmax_xent(ctx, nn_reshape(ctx, w, 2, (int[]){1, 3}), y);
    assert_non_null(loss);
    assert_int_equal(nn_backward(ctx, loss), NN_OK);
    float g[3];
    memcpy(g, nn_f32(w->grad), sizeof g);
    assert_int_equal(nn_backward(ctx, loss), NN_E_ARG);
    assert_non_null(strstr(nn_errmsg(), "already"));
    assert_memory_equal(g, nn_f32(w->grad), sizeof g); /* not doubled */
    /* a new graph after a reset is fine (and accumulates, as documented) */
    nn_ctx_reset(ctx);
    loss = nn_softmax_xent(ctx, nn_reshape(ctx, w, 2, (int[]){1, 3}), y);
    assert_int_equal(nn_backward(ctx, loss), NN_OK);
    assert_float_equal(nn_f32(w->grad)[0], 2 * g[0], 1e-6);
    nn_ctx_free(ctx);
    nn_tensor_free(y);
    nn_tensor_free(w);
}

static int setup(void **state)
{
    (void)state;
    make_data();
    return tu_tmpdir_make("trainer");
}

static int teardown(void **state)
{
    (void)state;
    return tu_tmpdir_remove();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trainer_custom_model_learns),
        cmocka_unit_test(test_trainer_stop_and_exact_resume),
        cmocka_unit_test(test_trainer_ranks_count_every_image),
        cmocka_unit_test(test_trainer_nonfinite),
        cmocka_unit_test(test_trainer_nonfinite_names_parameter),
        cmocka_unit_test(test_trainer_bad_arguments),
        cmocka_unit_test(test_checkpoint_null_and_foreign),
        cmocka_unit_test(test_array_source_batches_and_tensors),
        cmocka_unit_test(test_loader_limit),
        cmocka_unit_test(test_backward_twice_is_an_error),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
