/* The per-step scalars read through a pointer (core/step_vars.h) on the CPU:
 * the *_at kernels and nn_optim_step_at give bit for bit what the by-value
 * ones give, a non-zero non-finite count makes the update a no-op, and
 * dropout through the context's step struct draws the same masks. */
#include <string.h>

#include "core/backend.h"
#include "optim/optim.h"
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_at),
        cmocka_unit_test(test_adam_at),
        cmocka_unit_test(test_step_vars_bias),
        cmocka_unit_test(test_kernels_at),
        cmocka_unit_test(test_ctx_dropout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
