/* A data set kept on a device (io/resident.h) against the CPU loader, one
 * comparison for every device: test_resident runs it on the CPU, test_cuda on
 * the GPU. Every batch of two epochs, images (N, C*S*S) and labels bit for bit.
 * Header-only; kept out of testutil.h so that only these two tests include
 * io/resident.h. */
#ifndef NN_TESTS_RESIDENT_COMPARE_H
#define NN_TESTS_RESIDENT_COMPARE_H

#include "io/resident.h"
#include "tests/testutil.h"

/* Called for each of the loader's samples (C*S*S floats) with its epoch,
 * batch and place in the batch, to check it against something more. */
typedef void tu_sample_check(const float *sample, int epoch, int batch, int k, void *user);

/* One batch b of epoch e: the resident set's (read back from x, y) against
 * the loader's; returns the batch's size, 0 past the last. */
static inline int tu_resident_batch_matches(nn_loader *l, nn_resident *r, nn_tensor *x, nn_tensor *y,
                                            float *hx, int32_t *hy, size_t img, int e, int b,
                                            tu_sample_check *check, void *user)
{
    const float *lx;
    const int32_t *ly;
    int n, rn;
    assert_int_equal(nn_loader_next(l, &lx, &ly, &n), NN_OK);
    assert_int_equal(nn_resident_batch(r, b, x, y, &rn), NN_OK);
    assert_int_equal(rn, n);
    if (!n) return 0;
    assert_int_equal(nn_tensor_read(x, hx), NN_OK);
    assert_int_equal(nn_tensor_read(y, hy), NN_OK);
    for (size_t q = 0; q < (size_t)n * img; q++)
        if (memcmp(hx + q, lx + q, sizeof *hx) != 0)
            fail_msg("%s: epoch %d batch %d sample %zu: x[%zu] = %.9g on the device, %.9g from the loader",
                     nn_device_name(x->device), e, b, q / img, q % img, (double)hx[q], (double)lx[q]);
    assert_memory_equal(hy, ly, (size_t)n * sizeof *hy);
    for (int k = 0; check && k < n; k++) check(lx + k * img, e, b, k, user);
    return n;
}

/* Every batch of two epochs of d under c: the resident set on dev against the
 * CPU loader, and each loader sample through check (may be NULL). */
static inline void tu_resident_matches_loader(const nn_dataset *d, const nn_loader_config *c, nn_device dev,
                                              tu_sample_check *check, void *user)
{
    nn_loader *l = NULL;
    nn_resident *r = NULL;
    assert_int_equal(nn_loader_new(&l, d, c), NN_OK);
    if (nn_resident_new(&r, d, dev, c) != NN_OK) fail_msg("resident: %s", nn_errmsg());
    assert_int_equal(nn_resident_batches(r), nn_loader_batches(l));
    const size_t img = (size_t)d->c * c->size * c->size;
    int xs[2] = {c->batch, (int)img}, ys = c->batch;
    nn_tensor *x = NULL, *y = NULL;
    assert_int_equal(nn_tensor_new(&x, NN_F32, dev, 2, xs), NN_OK);
    assert_int_equal(nn_tensor_new(&y, NN_I32, dev, 1, &ys), NN_OK);
    float *hx = malloc(img * c->batch * sizeof *hx);
    int32_t *hy = malloc((size_t)c->batch * sizeof *hy);
    assert_true(hx && hy);
    for (int e = 0; e < 2; e++) {
        assert_int_equal(nn_loader_start(l, e, 0), NN_OK);
        assert_int_equal(nn_resident_start(r, e), NN_OK);
        for (int b = 0;; b++)
            if (!tu_resident_batch_matches(l, r, x, y, hx, hy, img, e, b, check, user)) break;
    }
    free(hx);
    free(hy);
    nn_tensor_free(x);
    nn_tensor_free(y);
    nn_resident_free(r);
    nn_loader_free(l);
}

#endif
