/* The per-step scalars read through a pointer (core/step_vars.h) on the CPU:
 * the *_at kernels and nn_optim_step_at give bit for bit what the by-value
 * ones give, a non-zero non-finite count makes the update a no-op, dropout
 * through the context's step struct draws the same masks, and the trainer
 * without a hook skips or stops at a NaN batch through the device-side gate. */
#include <string.h>

#include "convnet.h"
#include "core/backend.h"
#include "tests/testutil.h"

#define NW 37 /* not a multiple of 8: the vector loops' tails run too */

typedef struct fixture {
    nn_tensor *w, *b;
    nn_params ps;
} fixture;

static void make(fixture *f)
{
    memset(f, 0, sizeof *f);
    f->w = tu_rand(1, -1, 1, 1, (int[]){NW});
    f->b = tu_rand(2, -1, 1, 1, (int[]){5});
    assert_int_equal(nn_tensor_require_grad(f->w), NN_OK);
    assert_int_equal(nn_tensor_require_grad(f->b), NN_OK);
    assert_int_equal(nn_params_add(&f->ps, "w", f->w, false), NN_OK);
    assert_int_equal(nn_params_add(&f->ps, "b", f->b, true), NN_OK);
}

static void set_grads(fixture *f, int step)
{
    for (int i = 0; i < NW; i++) nn_f32(f->w->grad)[i] = 0.1f * (float)(i % 7 - 3) + 0.05f * (float)step;
    for (int i = 0; i < 5; i++) nn_f32(f->b->grad)[i] = -0.2f * (float)i + 0.01f * (float)step;
}

static void drop(fixture *f)
{
    nn_params_clear(&f->ps);
    nn_tensor_free(f->w);
    nn_tensor_free(f->b);
}

static void assert_same_bits(const nn_params *a, const nn_params *b)
{
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++)
        assert_memory_equal(nn_f32(a->p[i].t), nn_f32(b->p[i].t), nn_tensor_bytes(a->p[i].t));
}

/* Steps by value on one copy, through the struct on the other, with a rate
 * that changes every step (as the cosine schedule's) and a skipped step in
 * the middle that must change nothing, count included. */
static void same_as_by_value(nn_optim_kind kind)
{
    fixture a, b;
    make(&a), make(&b);
    nn_optim_config c = nn_optim_paper_sgd();
    c.kind = kind;
    c.weight_decay = 0.01f;
    nn_optim *oa, *ob;
    assert_int_equal(nn_optim_new(&oa, &c, &a.ps), NN_OK);
    assert_int_equal(nn_optim_new(&ob, &c, &b.ps), NN_OK);
    for (int step = 0; step < 5; step++) {
        set_grads(&a, step), set_grads(&b, step);
        float lr = 0.01f / (float)(step + 1);
        nn_optim_set_lr(oa, lr), nn_optim_set_lr(ob, lr);
        nn_step_vars sv = {0};
        if (step == 2) { /* a non-finite step: skipped on b's side, never run on a's */
            nn_optim_step_vars(ob, &sv);
            sv.nonfinite = 3;
            assert_int_equal(nn_optim_step_at(ob, &sv), NN_OK);
            assert_same_bits(&a.ps, &b.ps);
            assert_same_bits(nn_optim_state(oa), nn_optim_state(ob));
            continue;
        }
        assert_int_equal(nn_optim_step(oa), NN_OK);
        nn_optim_step_vars(ob, &sv);
        assert_float_equal(sv.lr, lr, 0);
        assert_int_equal(nn_optim_step_at(ob, &sv), NN_OK);
        nn_optim_set_steps(ob, nn_optim_steps(ob) + 1);
        assert_int_equal(nn_optim_steps(oa), nn_optim_steps(ob));
        assert_same_bits(&a.ps, &b.ps);
        assert_same_bits(nn_optim_state(oa), nn_optim_state(ob));
    }
    nn_optim_free(oa), nn_optim_free(ob);
    drop(&a), drop(&b);
}

static void test_sgd_at(void **state)
{
    (void)state;
    same_as_by_value(NN_OPT_SGD);
}

static void test_adam_at(void **state)
{
    (void)state;
    same_as_by_value(NN_OPT_ADAM);
    same_as_by_value(NN_OPT_ADAMW);
}

/* Adam's corrections in the struct are those of the next step, t + 1. */
static void test_step_vars_bias(void **state)
{
    (void)state;
    fixture f;
    make(&f);
    nn_optim_config c = nn_optim_paper_sgd();
    c.kind = NN_OPT_ADAM;
    nn_optim *o;
    assert_int_equal(nn_optim_new(&o, &c, &f.ps), NN_OK);
    nn_optim_set_steps(o, 9);
    nn_step_vars sv = {0};
    nn_optim_step_vars(o, &sv);
    assert_float_equal(sv.bias1, 1.0f - powf(0.9f, 10.0f), 0);
    assert_float_equal(sv.bias2, 1.0f - powf(0.999f, 10.0f), 0);
    nn_optim_free(o);
    drop(&f);
}

/* The kernel slot: counters at sv->rng_offset + offset; the count slot adds. */
static void test_kernels_at(void **state)
{
    (void)state;
    const nn_backend *be = nn_backend_get(NN_CPU);
    enum { N = 1000 };
    static float x[N], y1[N], y2[N];
    static uint8_t m1[N], m2[N];
    for (int i = 0; i < N; i++) x[i] = (float)i - 400.0f;
    nn_step_vars sv = {.rng_offset = 123456};
    assert_int_equal(be->dropout_forward(N, x, y1, m1, 0.4f, 77, 123456 + 1000), NN_OK);
    assert_int_equal(be->dropout_forward_at(N, x, y2, m2, 0.4f, 77, 1000, &sv), NN_OK);
    assert_memory_equal(m1, m2, sizeof m1);
    assert_memory_equal(y1, y2, sizeof y1);
    x[5] = NAN, x[900] = INFINITY;
    sv.nonfinite = 1;
    assert_int_equal(be->count_nonfinite_into(N, x, &sv), NN_OK);
    assert_int_equal(sv.nonfinite, 3);
}

/* nn_dropout with the context's step struct draws what it draws without one. */
static void test_ctx_dropout(void **state)
{
    (void)state;
    nn_tensor *x = tu_rand4(3, 2, 3, 5, 5);
    nn_ctx *a = nn_ctx_new(), *b = nn_ctx_new();
    *nn_ctx_rng(a) = *nn_ctx_rng(b) = (nn_rng){42, 1000};
    nn_step_vars sv = {.rng_offset = 1000};
    nn_ctx_set_step_vars(b, NN_CPU, &sv, 1000);
    for (int k = 0; k < 3; k++) { /* the later draws sit past the first */
        nn_tensor *ya = nn_dropout(a, x, 0.5f), *yb = nn_dropout(b, x, 0.5f);
        assert_non_null(ya);
        assert_non_null(yb);
        assert_memory_equal(nn_f32(ya), nn_f32(yb), nn_tensor_bytes(ya));
    }
    assert_int_equal(nn_ctx_rng(a)->offset, nn_ctx_rng(b)->offset);
    uint64_t base;
    assert_ptr_equal(nn_ctx_step_vars(b, NN_CPU, &base), &sv);
    assert_int_equal(base, 1000);
    nn_ctx_free(a), nn_ctx_free(b);
    nn_tensor_free(x);
}

/* ---- the trainer's gate, no after_backward hook ---- */

enum { TN = 40, TD = 16, TK = 2, TB = 8, NAN_BATCH = 2 };

typedef struct tiny {
    nn_tensor *w, *b;
    nn_params ps;
} tiny;

static nn_tensor *tiny_forward(nn_ctx *ctx, void *model, nn_tensor *x)
{
    tiny *m = model;
    return nn_linear(ctx, nn_dropout(ctx, nn_flatten(ctx, x), 0.25f), m->w, m->b);
}

static float g_x[TN * TD];
static int32_t g_y[TN];

typedef struct skips {
    int n;
    char what[64];
} skips;

static void on_event(const nn_train_event *ev, void *user)
{
    skips *k = user;
    if (ev->kind != NN_TRAIN_SKIP) return;
    k->n++;
    snprintf(k->what, sizeof k->what, "%s", ev->nonfinite);
}

/* One epoch of Adam on TN images, sample NAN_BATCH * TB + 1 holding a NaN. */
static nn_status run_nan(bool skip, nn_train_state *st, skips *k, tiny *m)
{
    memset(m, 0, sizeof *m);
    m->w = tu_rand(4, -0.2f, 0.2f, 2, (int[]){TK, TD});
    m->b = tu_rand(5, -0.1f, 0.1f, 1, (int[]){TK});
    assert_int_equal(nn_tensor_require_grad(m->w), NN_OK);
    assert_int_equal(nn_tensor_require_grad(m->b), NN_OK);
    assert_int_equal(nn_params_add(&m->ps, "fc.weight", m->w, false), NN_OK);
    assert_int_equal(nn_params_add(&m->ps, "fc.bias", m->b, true), NN_OK);
    nn_rng r = nn_rng_make(8);
    for (int i = 0; i < TN; i++) {
        g_y[i] = i % TK;
        for (int j = 0; j < TD; j++) g_x[i * TD + j] = (float)g_y[i] - 0.5f + nn_rng_uniform1(&r) - 0.5f;
    }
    g_x[(NAN_BATCH * TB + 1) * TD + 2] = NAN;
    nn_array_source *a = NULL;
    nn_array_config ac = {.images_f32 = g_x, .labels = g_y, .n = TN, .c = 1, .h = 4, .w = 4, .batch = TB};
    assert_int_equal(nn_array_source_new(&a, &ac), NN_OK);
    nn_batch_source src = nn_array_source_batches(a);
    nn_train_model tm = {.forward = tiny_forward, .model = m, .params = &m->ps, .in_c = 1, .in_h = 4, .in_w = 4,
                         .classes = TK};
    nn_train_recipe rc = {.optim = {.kind = NN_OPT_ADAM, .lr = 0.05f}, .batch_size = TB, .epochs = 1, .seed = 9};
    rc.sched = nn_schedule_make(NN_SCHED_COSINE, rc.optim.lr);
    *st = nn_train_state_make(&rc);
    nn_trainer_config tc = {.skip_nonfinite = skip, .on_event = on_event, .user = k};
    nn_trainer *t = NULL;
    assert_int_equal(nn_trainer_new(&t, &tm, &src, NULL, st, &tc), NN_OK);
    nn_status s = nn_trainer_run(t, NULL);
    assert_int_equal(nn_trainer_graph_steps(t), 0); /* the CPU never captures */
    nn_trainer_free(t);
    nn_array_source_free(a);
    return s;
}

static void tiny_free(tiny *m)
{
    nn_params_clear(&m->ps);
    nn_tensor_free(m->w);
    nn_tensor_free(m->b);
}

static void test_trainer_gate(void **state)
{
    (void)state;
    nn_train_state st;
    skips k = {0};
    tiny m;
    assert_int_equal(run_nan(false, &st, &k, &m), NN_E_NONFINITE);
    const char *msg = nn_errmsg();
    if (!strstr(msg, "step 3 (epoch 1, batch 3): the loss is not finite (nan; first non-finite gradient: fc.weight)"))
        fail_msg("message: %s", msg);
    assert_int_equal(st.step, NAN_BATCH);
    tiny_free(&m);
    /* skipped: the update never ran on the device side, so no NaN reached a weight */
    assert_int_equal(run_nan(true, &st, &k, &m), NN_OK);
    assert_int_equal(k.n, 1);
    assert_string_equal(k.what, "loss");
    assert_int_equal(st.step, TN / TB - 1);
    size_t bad = 1;
    assert_int_equal(nn_backend_get(NN_CPU)->count_nonfinite(m.w->numel, nn_f32(m.w), &bad), NN_OK);
    assert_int_equal(bad, 0);
    tiny_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_at),
        cmocka_unit_test(test_adam_at),
        cmocka_unit_test(test_step_vars_bias),
        cmocka_unit_test(test_kernels_at),
        cmocka_unit_test(test_ctx_dropout),
        cmocka_unit_test(test_trainer_gate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
