/* The convolution shapes the index-math test (test_conv_index) and the GPU's
 * implicit-GEMM test (test_cuda) both run: every conv layer of AlexNet as in
 * the paper (`convnet summary`, groups 1 and the paper's --groups 2), of the
 * default model (`convnet summary --size 64 --width 0.5 --fc 1024
 * --in-channels 1`), and ragged ones. Header-only; include after cmocka. */
#ifndef NN_TESTS_CONV_SHAPES_H
#define NN_TESTS_CONV_SHAPES_H

#include "core/backend.h"
#include "ops/ops.h"
#include "tests/testutil.h"

typedef struct conv_shape {
    int n, c, h, w, oc, kh, kw;
    nn_conv2d_params p; /* stride h, w, pad h, w, groups */
    bool big;           /* paper size: the CPU test reads one sample of it */
    const char *what;
    bool tf32_emulated; /* test_cuda's tensor-core way runs it on the emulated GPU too (slow there) */
} conv_shape;

static const conv_shape conv_shapes[] = {
    /* the paper's AlexNet, 3x224x224 */
    {2, 3, 224, 224, 96, 11, 11, {4, 4, 2, 2, 1}, true, "paper conv1 11x11/4 p2", false},
    {2, 96, 27, 27, 256, 5, 5, {1, 1, 2, 2, 1}, true, "paper conv2 5x5 p2", false},
    {2, 96, 27, 27, 256, 5, 5, {1, 1, 2, 2, 2}, true, "paper conv2 5x5 p2 g2", false},
    {2, 256, 13, 13, 384, 3, 3, {1, 1, 1, 1, 1}, true, "paper conv3 3x3 p1", false},
    {2, 384, 13, 13, 384, 3, 3, {1, 1, 1, 1, 1}, true, "paper conv4 3x3 p1", false},
    {2, 384, 13, 13, 384, 3, 3, {1, 1, 1, 1, 2}, true, "paper conv4 3x3 p1 g2", false},
    {2, 384, 13, 13, 256, 3, 3, {1, 1, 1, 1, 1}, true, "paper conv5 3x3 p1", false},
    {2, 384, 13, 13, 256, 3, 3, {1, 1, 1, 1, 2}, true, "paper conv5 3x3 p1 g2", false},
    /* the default model: 1x64x64, width 0.5 */
    {5, 1, 64, 64, 48, 11, 11, {4, 4, 2, 2, 1}, false, "default conv1 11x11/4 p2", false},
    {5, 48, 7, 7, 128, 5, 5, {1, 1, 2, 2, 1}, false, "default conv2 5x5 p2", false},
    {5, 48, 7, 7, 128, 5, 5, {1, 1, 2, 2, 2}, false, "default conv2 5x5 p2 g2", false},
    {5, 128, 3, 3, 192, 3, 3, {1, 1, 1, 1, 1}, false, "default conv3 3x3 p1", false},
    {5, 192, 3, 3, 192, 3, 3, {1, 1, 1, 1, 2}, false, "default conv4 3x3 p1 g2", false},
    {5, 192, 3, 3, 128, 3, 3, {1, 1, 1, 1, 1}, false, "default conv5 3x3 p1", false},
    /* ragged: odd sizes, unequal strides and pads, windows wider than the input */
    {3, 5, 17, 13, 7, 3, 2, {2, 3, 1, 2, 1}, false, "ragged 3x2 stride 2x3 pad 1x2", true},
    {2, 6, 9, 11, 6, 3, 3, {1, 1, 1, 1, 6}, false, "ragged depthwise", true},
    {3, 4, 5, 4, 70, 7, 6, {1, 1, 3, 3, 2}, false, "ragged kernel wider than the input, g2", true},
    /* enough columns (128 x 240) for the implicit GEMM's 128x128 tiles on any GPU up to 480 SMs */
    {128, 3, 31, 29, 129, 1, 1, {2, 2, 0, 0, 1}, false, "ragged 1x1 stride 2, 129 outputs, batch 128", false},
    {1, 9, 35, 35, 65, 11, 11, {4, 4, 2, 2, 1}, false, "ragged 11x11/4, 65 outputs", true},
    /* the weight gradient's 128x128 tiles (130 x 144) with K (4 x 17 x 17) split in two */
    {4, 16, 17, 17, 130, 3, 3, {1, 1, 1, 1, 1}, false, "ragged 3x3, 130 outputs, dw split", true},
};
#define CONV_SHAPES ((int)(sizeof conv_shapes / sizeof conv_shapes[0]))

/* The geometry of shape t (asserts it is valid). */
static inline nn_conv2d_geom conv_shape_geom(const conv_shape *s)
{
    const int x[4] = {s->n, s->c, s->h, s->w}, w[4] = {s->oc, s->c / (s->p.groups ? s->p.groups : 1), s->kh, s->kw};
    nn_conv2d_geom g;
    assert_int_equal(nn_conv2d_shape(x, w, s->p, &g), NN_OK);
    return g;
}

#endif
