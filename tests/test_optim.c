/* Optimizers against the formulas written out in float64, and the schedules. */
#include <string.h>

#include "optim/optim.h"
#include "tests/testutil.h"

/* float32 updates against a float64 recurrence over a few steps */
#define OPT_TOL 1e-5

typedef struct fixture {
    nn_tensor *w, *b;
    nn_params ps;
} fixture;

static void make(fixture *f)
{
    memset(f, 0, sizeof *f);
    f->w = tu_rand(1, -1, 1, 1, (int[]){6});
    f->b = tu_rand(2, -1, 1, 1, (int[]){3});
    assert_int_equal(nn_tensor_require_grad(f->w), NN_OK);
    assert_int_equal(nn_tensor_require_grad(f->b), NN_OK);
    assert_int_equal(nn_params_add(&f->ps, "w", f->w, false), NN_OK);
    assert_int_equal(nn_params_add(&f->ps, "b", f->b, true), NN_OK);
}

static void set_grads(fixture *f, int step)
{
    for (int i = 0; i < 6; i++) nn_f32(f->w->grad)[i] = 0.1f * (float)(i - 2) + 0.05f * (float)step;
    for (int i = 0; i < 3; i++) nn_f32(f->b->grad)[i] = -0.2f * (float)i + 0.01f * (float)step;
}

static void drop(fixture *f)
{
    nn_params_clear(&f->ps);
    nn_tensor_free(f->w);
    nn_tensor_free(f->b);
}

static void test_sgd_paper_rule(void **state)
{
    (void)state;
    fixture f;
    make(&f);
    nn_optim_config c = nn_optim_paper_sgd();
    assert_float_equal(c.lr, 0.01f, 0);
    assert_float_equal(c.momentum, 0.9f, 0);
    assert_float_equal(c.weight_decay, 5e-4f, 0);
    nn_optim *o;
    assert_int_equal(nn_optim_new(&o, &c, &f.ps), NN_OK);
    double w[9], v[9] = {0};
    for (int i = 0; i < 6; i++) w[i] = nn_f32(f.w)[i];
    for (int i = 0; i < 3; i++) w[6 + i] = nn_f32(f.b)[i];
    for (int step = 0; step < 4; step++) {
        set_grads(&f, step);
        for (int i = 0; i < 9; i++) {
            double g = i < 6 ? nn_f32(f.w->grad)[i] : nn_f32(f.b->grad)[i - 6];
            double wd = i < 6 ? 5e-4 : 0.0; /* biases are not decayed by default */
            /* v <- 0.9 v - 0.0005 eps w - eps dL/dw ; w <- w + v */
            v[i] = 0.9 * v[i] - wd * 0.01 * w[i] - 0.01 * g;
            w[i] += v[i];
        }
        assert_int_equal(nn_optim_step(o), NN_OK);
    }
    for (int i = 0; i < 6; i++) assert_float_equal(nn_f32(f.w)[i], w[i], OPT_TOL);
    for (int i = 0; i < 3; i++) assert_float_equal(nn_f32(f.b)[i], w[6 + i], OPT_TOL);
    assert_int_equal(nn_optim_steps(o), 4);
    assert_int_equal(nn_optim_state(o)->n, 2);
    assert_string_equal(nn_optim_state(o)->p[0].name, "optim.w.v");
    nn_optim_free(o);
    drop(&f);
}

static void adam_case(nn_optim_kind kind, bool decay_bias)
{
    fixture f;
    make(&f);
    nn_optim_config c = {.kind = kind, .lr = 0.01f, .weight_decay = 0.1f, .decay_bias = decay_bias};
    nn_optim *o;
    assert_int_equal(nn_optim_new(&o, &c, &f.ps), NN_OK);
    double w[9], m[9] = {0}, v[9] = {0};
    for (int i = 0; i < 6; i++) w[i] = nn_f32(f.w)[i];
    for (int i = 0; i < 3; i++) w[6 + i] = nn_f32(f.b)[i];
    for (int t = 1; t <= 5; t++) {
        set_grads(&f, t);
        for (int i = 0; i < 9; i++) {
            double g = i < 6 ? nn_f32(f.w->grad)[i] : nn_f32(f.b->grad)[i - 6];
            double wd = (i < 6 || decay_bias) ? 0.1 : 0.0;
            if (kind == NN_OPT_ADAMW)
                w[i] -= 0.01 * wd * w[i];
            else
                g += wd * w[i];
            m[i] = 0.9 * m[i] + 0.1 * g;
            v[i] = 0.999 * v[i] + 0.001 * g * g;
            double mh = m[i] / (1 - pow(0.9, t)), vh = v[i] / (1 - pow(0.999, t));
            w[i] -= 0.01 * mh / (sqrt(vh) + 1e-8);
        }
        assert_int_equal(nn_optim_step(o), NN_OK);
    }
    for (int i = 0; i < 6; i++) assert_float_equal(nn_f32(f.w)[i], w[i], OPT_TOL);
    for (int i = 0; i < 3; i++) assert_float_equal(nn_f32(f.b)[i], w[6 + i], OPT_TOL);
    assert_int_equal(nn_optim_state(o)->n, 4);
    nn_optim_free(o);
    drop(&f);
}

static void test_adam(void **state)
{
    (void)state;
    adam_case(NN_OPT_ADAM, false);
    adam_case(NN_OPT_ADAMW, false);
    adam_case(NN_OPT_ADAMW, true);
}

static void test_bad_config(void **state)
{
    (void)state;
    fixture f;
    make(&f);
    nn_optim *o = NULL;
    nn_optim_config c = {.kind = NN_OPT_SGD, .lr = -1};
    assert_int_equal(nn_optim_new(&o, &c, &f.ps), NN_E_ARG);
    assert_null(o);
    c.lr = 0.1f;
    c.momentum = 1.0f;
    assert_int_equal(nn_optim_new(&o, &c, &f.ps), NN_E_ARG);
    nn_optim_kind k;
    assert_int_equal(nn_optim_parse_kind("rmsprop", &k), NN_E_ARG);
    assert_non_null(strstr(nn_errmsg(), "rmsprop"));
    drop(&f);
}

static void test_schedules(void **state)
{
    (void)state;
    nn_schedule s = nn_schedule_make(NN_SCHED_STEP, 0.1f);
    s.step_epochs = 2;
    assert_float_equal(nn_schedule_epoch_end(&s, 1, 0.5f), 0.1f, 1e-7);
    assert_float_equal(nn_schedule_epoch_end(&s, 2, 0.5f), 0.01f, 1e-7);
    assert_float_equal(nn_schedule_epoch_end(&s, 4, 0.5f), 0.001f, 1e-8);

    s = nn_schedule_make(NN_SCHED_PLATEAU, 0.01f); /* patience 2 */
    assert_float_equal(nn_schedule_epoch_end(&s, 1, 0.50f), 0.01f, 1e-8);
    assert_float_equal(nn_schedule_epoch_end(&s, 2, 0.60f), 0.01f, 1e-8);
    assert_float_equal(nn_schedule_epoch_end(&s, 3, 0.59f), 0.01f, 1e-8);
    assert_float_equal(nn_schedule_epoch_end(&s, 4, 0.60f), 0.001f, 1e-9); /* no improvement twice */
    assert_float_equal(nn_schedule_epoch_end(&s, 5, 0.70f), 0.001f, 1e-9);

    s = nn_schedule_make(NN_SCHED_COSINE, 0.1f);
    assert_float_equal(nn_schedule_step(&s, 0, 100), 0.1f, 1e-7);
    assert_float_equal(nn_schedule_step(&s, 50, 100), 0.5f * (0.1f + s.min_lr), 1e-6);
    assert_float_equal(nn_schedule_step(&s, 100, 100), s.min_lr, 1e-8);
    assert_float_equal(nn_schedule_epoch_end(&s, 1, 0.9f), s.min_lr, 1e-8);

    nn_sched_kind k;
    assert_int_equal(nn_sched_parse_kind("cosine", &k), NN_OK);
    assert_int_equal(k, NN_SCHED_COSINE);
    assert_int_equal(nn_sched_parse_kind("linear", &k), NN_E_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_paper_rule),
        cmocka_unit_test(test_adam),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_schedules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
