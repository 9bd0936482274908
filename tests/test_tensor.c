/* Tensors and the generator: creation, copies, shape errors, Philox known
 * answers, determinism of random fills. */
#include <string.h>

#include "core/philox.h"
#include "tests/testutil.h"

static void test_philox_known_answers(void **state)
{
    (void)state;
    /* Known-answer vectors of Philox4x32-10 published with Random123. */
    nn_philox_out a = nn_philox4x32(0, 0, 0, 0, 0, 0);
    uint32_t ea[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
    nn_philox_out b = nn_philox4x32(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu,
                                    0xffffffffu);
    uint32_t eb[4] = {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu};
    nn_philox_out c = nn_philox4x32(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u,
                                    0x299f31d0u);
    uint32_t ec[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(a.v[i], ea[i]);
        assert_int_equal(b.v[i], eb[i]);
        assert_int_equal(c.v[i], ec[i]);
    }
}

static void test_random_fills_deterministic(void **state)
{
    (void)state;
    int shape[2] = {37, 29};
    nn_tensor *a = tu_rand(7, -1, 1, 2, shape), *b = tu_rand(7, -1, 1, 2, shape), *c = tu_rand(8, -1, 1, 2, shape);
    assert_memory_equal(a->data, b->data, nn_tensor_bytes(a));
    assert_memory_not_equal(a->data, c->data, nn_tensor_bytes(a));
    /* the fill continues the stream: two halves equal one whole */
    nn_rng r1 = nn_rng_make(3), r2 = nn_rng_make(3);
    int h[1] = {10}, w[1] = {20};
    nn_tensor *x = NULL, *y = NULL, *z = NULL;
    assert_int_equal(nn_tensor_new(&x, NN_F32, NN_CPU, 1, h), NN_OK);
    assert_int_equal(nn_tensor_new(&y, NN_F32, NN_CPU, 1, h), NN_OK);
    assert_int_equal(nn_tensor_new(&z, NN_F32, NN_CPU, 1, w), NN_OK);
    assert_int_equal(nn_tensor_normal(x, &r1, 0, 1), NN_OK);
    assert_int_equal(nn_tensor_normal(y, &r1, 0, 1), NN_OK);
    assert_int_equal(nn_tensor_normal(z, &r2, 0, 1), NN_OK);
    assert_memory_equal(x->data, z->data, 40);
    assert_memory_equal(y->data, nn_f32(z) + 10, 40);
    assert_int_equal(r1.offset, 20);
    nn_tensor_free(a); nn_tensor_free(b); nn_tensor_free(c);
    nn_tensor_free(x); nn_tensor_free(y); nn_tensor_free(z);
}

static void test_normal_statistics(void **state)
{
    (void)state;
    int n[1] = {200000};
    nn_tensor *t = NULL;
    nn_rng r = nn_rng_make(11);
    assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CPU, 1, n), NN_OK);
    assert_int_equal(nn_tensor_normal(t, &r, 1.5f, 2.0f), NN_OK);
    double s = 0, s2 = 0;
    for (int i = 0; i < n[0]; i++) {
        s += nn_f32(t)[i];
        s2 += (double)nn_f32(t)[i] * nn_f32(t)[i];
    }
    double mean = s / n[0], var = s2 / n[0] - mean * mean;
    /* standard error of the mean 2/sqrt(2e5) = 0.0045: 5 sigma bounds */
    assert_true(fabs(mean - 1.5) < 0.025);
    assert_true(fabs(var - 4.0) < 0.07);
    nn_tensor_free(t);
}

static void test_create_copy_and_errors(void **state)
{
    (void)state;
    float d[6] = {1, 2, 3, 4, 5, 6};
    int s23[2] = {2, 3}, s32[2] = {3, 2}, bad[2] = {2, 0};
    nn_tensor *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(nn_tensor_from(&a, NN_F32, NN_CPU, 2, s23, d), NN_OK);
    assert_int_equal(a->numel, 6);
    assert_int_equal(a->shape[2], 1);
    assert_int_equal(nn_tensor_new(&b, NN_F32, NN_CPU, 2, s32), NN_OK);
    assert_int_equal(nn_tensor_copy(b, a), NN_OK); /* same numel: allowed */
    assert_memory_equal(b->data, d, sizeof d);
    assert_int_equal(nn_tensor_new(&c, NN_F32, NN_CPU, 2, bad), NN_E_SHAPE);
    assert_null(c);
    assert_non_null(strstr(nn_errmsg(), "dimension 1"));
    int five[5] = {1, 1, 1, 1, 1};
    assert_int_equal(nn_tensor_new(&c, NN_F32, NN_CPU, 5, five), NN_E_SHAPE);
    int huge[4] = {1 << 20, 1 << 20, 1 << 20, 1};
    assert_int_equal(nn_tensor_new(&c, NN_F32, NN_CPU, 4, huge), NN_E_SHAPE);
    int s7[1] = {7};
    assert_int_equal(nn_tensor_new(&c, NN_F32, NN_CPU, 1, s7), NN_OK);
    assert_int_equal(nn_tensor_copy(c, a), NN_E_SHAPE);
    assert_non_null(strstr(nn_errmsg(), "copy"));
    char buf[32];
    assert_string_equal(nn_shape_str(a, buf, sizeof buf), "2x3");
    nn_tensor_free(a); nn_tensor_free(b); nn_tensor_free(c);
}

static void test_device_errors(void **state)
{
    (void)state;
    nn_device d;
    assert_int_equal(nn_device_parse("cuda", &d), NN_OK);
    assert_int_equal(d, NN_CUDA);
    assert_int_equal(nn_device_parse("tpu", &d), NN_E_ARG);
    assert_non_null(strstr(nn_errmsg(), "tpu"));
    if (!nn_device_available(NN_CUDA)) {
        nn_tensor *t = NULL;
        int s[1] = {4};
        assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CUDA, 1, s), NN_E_DEVICE);
        assert_null(t);
        assert_non_null(strstr(nn_errmsg(), "cuda"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_random_fills_deterministic),
        cmocka_unit_test(test_normal_statistics),
        cmocka_unit_test(test_create_copy_and_errors),
        cmocka_unit_test(test_device_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
