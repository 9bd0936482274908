/* The backend tables against the one slot list (core/backend_slots.h): every
 * built backend fills every slot (the CUDA table is checked without a GPU,
 * since it is a static table in the build), and a table with a slot left NULL
 * is refused by name: nn_backend_check at registration, nn_backend_supports
 * per op (NN_E_UNSUPPORTED naming op, device and kernel, never a NULL call);
 * a table compiled from an older slot list is refused too. Also the
 * description of the environment switches (nn_switches_describe). */
#include "tests/testutil.h"

#include "config.h"
#include "core/defaults.h"

/* Every backend of this build, GPU or no GPU. */
/* what the benchmark's JSON and `convnet train` record: the switches set, in
 * core/defaults.h's order, whatever their value; a short buffer truncates */
static void test_switches_are_described(void **state)
{
    (void)state;
#define NN_CLEAR(name) unsetenv(name);
    NN_SWITCHES(NN_CLEAR)
#undef NN_CLEAR
    char buf[64];
    assert_string_equal(nn_switches_describe(buf, sizeof buf), "");
    setenv(NN_CONV_WS_MB_ENV, "0", 1);
    setenv(NN_TF32_ENV, "1", 1);
    assert_string_equal(nn_switches_describe(buf, sizeof buf), "NN_TF32=1 NN_CONV_WS_MB=0");
    char tiny[8];
    assert_string_equal(nn_switches_describe(tiny, sizeof tiny), "NN_TF32");
    unsetenv(NN_CONV_WS_MB_ENV);
    unsetenv(NN_TF32_ENV);
}

static void test_every_built_table_is_complete(void **state)
{
    (void)state;
    int built = 0;
    for (int d = 0; d < NN_NDEVICES; d++) {
        const nn_backend *be = nn_backend_get((nn_device)d);
        if (!be) continue;
        built++;
        assert_int_equal(be->device, d);
        /* the layout first: a stale table must not be read past its end */
        if (nn_backend_check(be) != NN_OK) fail_msg("%s", nn_errmsg());
        for (int k = 0; k < NN_K_COUNT; k++)
            if (!nn_backend_has(be, (nn_kernel)k))
                fail_msg("the %s backend has no %s kernel (slot NULL)", be->name, nn_kernel_name((nn_kernel)k));
    }
    assert_int_equal(built, 1 + NN_HAVE_CUDA);
}

static void test_kernel_names_follow_the_list(void **state)
{
    (void)state;
    assert_string_equal(nn_kernel_name(NN_K_conv2d_forward), "conv2d_forward");
    assert_string_equal(nn_kernel_op(NN_K_conv2d_forward), "conv2d");
    assert_string_equal(nn_kernel_name(NN_K_xent_backward), "xent_backward");
    assert_string_equal(nn_kernel_op(NN_K_xent_backward), "softmax_xent");
    assert_string_equal(nn_kernel_op(NN_K_maxpool_forward), "maxpool2d");
    assert_string_equal(nn_kernel_name(NN_K_alloc), "alloc");
    assert_string_equal(nn_kernel_name(NN_K_COUNT), "?");
}

/* A copy of the CPU table with one op kernel missing. */
static void test_a_null_slot_is_unsupported(void **state)
{
    (void)state;
    nn_backend b = nn_cpu_backend;
    b.lrn_backward = NULL;
    assert_false(nn_backend_has(&b, NN_K_lrn_backward));
    assert_true(nn_backend_has(&b, NN_K_lrn_forward));

    assert_int_equal(nn_backend_check(&b), NN_E_UNSUPPORTED);
    if (!strstr(nn_errmsg(), "cpu") || !strstr(nn_errmsg(), "lrn_backward"))
        fail_msg("unexpected message: %s", nn_errmsg());

    assert_int_equal(nn_backend_supports(&b, "lrn"), NN_E_UNSUPPORTED);
    if (!strstr(nn_errmsg(), "lrn: the cpu backend has no lrn_backward kernel"))
        fail_msg("unexpected message: %s", nn_errmsg());
    /* the other ops, and an op with no kernel of its own, are unaffected */
    assert_int_equal(nn_backend_supports(&b, "conv2d"), NN_OK);
    assert_int_equal(nn_backend_supports(&b, "add"), NN_OK);
    assert_int_equal(nn_backend_supports(&nn_cpu_backend, "lrn"), NN_OK);

    /* a missing helper is caught by the whole-table check */
    b = nn_cpu_backend;
    b.rng_normal = NULL;
    assert_int_equal(nn_backend_check(&b), NN_E_UNSUPPORTED);
    if (!strstr(nn_errmsg(), "rng_normal")) fail_msg("unexpected message: %s", nn_errmsg());
}

/* A table compiled from another slot list (a stale object) is refused whole. */
static void test_a_stale_table_is_refused(void **state)
{
    (void)state;
    nn_backend b = nn_cpu_backend;
    b.layout = "memory nn_status alloc(void **p, size_t bytes);";
    assert_int_equal(nn_backend_check(&b), NN_E_UNSUPPORTED);
    if (!strstr(nn_errmsg(), "cpu backend table was compiled from another slot list"))
        fail_msg("unexpected message: %s", nn_errmsg());
    b.layout = NULL;
    assert_int_equal(nn_backend_check(&b), NN_E_UNSUPPORTED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_built_table_is_complete),
        cmocka_unit_test(test_kernel_names_follow_the_list),
        cmocka_unit_test(test_a_null_slot_is_unsupported),
        cmocka_unit_test(test_a_stale_table_is_refused),
        cmocka_unit_test(test_switches_are_described),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
