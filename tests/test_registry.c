/* The op registry (ops/registry.h): names are unique and found; every op
 * that owns kernels in core/backend_slots.h is registered (so a new op cannot
 * skip gradcheck and the GPU test); every registered op's gradcheck case
 * passes on the CPU over several seeds. */
#include "tests/testutil.h"

#include "ops/registry.h"

/* groups of slots that belong to no op */
static bool is_op_group(const char *op)
{
    return strcmp(op, "memory") != 0 && strcmp(op, "helpers") != 0 && strcmp(op, "optim") != 0 &&
           strcmp(op, "data") != 0;
}

static void test_names_are_unique_and_found(void **state)
{
    (void)state;
    assert_true(nn_op_count() >= 7);
    assert_null(nn_ops[nn_op_count()]);
    for (int i = 0; i < nn_op_count(); i++) {
        assert_non_null(nn_ops[i]->gc_case);
        assert_non_null(nn_ops[i]->call);
        assert_ptr_equal(nn_op_find(nn_ops[i]->name), nn_ops[i]);
        for (int j = 0; j < i; j++)
            if (strcmp(nn_ops[i]->name, nn_ops[j]->name) == 0) fail_msg("op %s registered twice", nn_ops[i]->name);
    }
    assert_null(nn_op_find("bogus"));
}

static void test_every_kernel_op_is_registered(void **state)
{
    (void)state;
    for (int k = 0; k < NN_K_COUNT; k++) {
        const char *op = nn_kernel_op((nn_kernel)k);
        if (is_op_group(op) && !nn_op_find(op))
            fail_msg("kernel %s serves op '%s', which is not in ops/registry.c", nn_kernel_name((nn_kernel)k), op);
    }
}

/* Every registered op through the registry alone, as the tools use it. */
static void test_every_case_passes_gradcheck(void **state)
{
    (void)state;
    for (int i = 0; i < nn_op_count(); i++)
        for (uint64_t seed = 11; seed < 14; seed++) {
            nn_op_case c;
            memset(&c, 0, sizeof c);
            nn_rng r = nn_rng_make(seed * 7919 + (uint64_t)i);
            if (nn_ops[i]->gc_case(&c, &r, NN_CPU) != NN_OK) fail_msg("%s: %s", nn_ops[i]->name, nn_errmsg());
            assert_true(c.n >= 1);
            char what[192];
            snprintf(what, sizeof what, "registry: %s (%s)", nn_ops[i]->name, c.about);
            tu_gradcheck(nn_ops[i]->call, &c, c.n, c.in, seed, what);
            nn_op_case_free(&c);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_are_unique_and_found),
        cmocka_unit_test(test_every_kernel_op_is_registered),
        cmocka_unit_test(test_every_case_passes_gradcheck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
