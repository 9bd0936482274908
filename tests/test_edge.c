/* Numerical edge cases the per-op tests leave out: softmax-cross-entropy
 * with logits of +-1e4 in a batch (shift invariance, K = 1), LRN on large
 * activations with fewer channels than the window and mixed magnitudes,
 * maxpool windows of -inf and equal values covering the whole plane, dropout
 * with p close to 1, size-0 and size-1 dimensions (1x1 images, 1x1 convs,
 * batch 1), and bad inputs to every op: a status and a message naming the op.
 * Shapes are tiny; every reference is float64. */
#include <float.h>
#include <string.h>

#include "models/sequential.h"
#include "tests/testutil.h"

/* References computed here in float64 from the same float inputs. The ops
 * reduce in float32 over at most a few dozen terms: TU_FWD_* applies. */

static nn_tensor *tensor_of(int ndim, const int *shape, const float *v)
{
    nn_tensor *t = NULL;
    assert_int_equal(nn_tensor_from(&t, NN_F32, NN_CPU, ndim, shape, v), NN_OK);
    return t;
}

static nn_tensor *labels_of(int n, const int32_t *l)
{
    nn_tensor *t = NULL;
    int s[1] = {n};
    assert_int_equal(nn_tensor_from(&t, NN_I32, NN_CPU, 1, s, l), NN_OK);
    return t;
}

static void assert_all_finite(const nn_tensor *t, const char *what)
{
    for (size_t i = 0; i < t->numel; i++)
        if (!isfinite(nn_f32(t)[i])) fail_msg("%s: element %zu is %g", what, i, (double)nn_f32(t)[i]);
}

/* ---- softmax cross-entropy ------------------------------------------------ */

/* loss = mean_n (lse(x_n) - x_n[l_n]); grad (softmax - onehot) / N, float64. */
static double xent_ref(int n, int k, const float *x, const int32_t *l, double *g)
{
    double loss = 0;
    for (int i = 0; i < n; i++) {
        const float *r = x + (size_t)i * k;
        double m = r[0], s = 0;
        for (int j = 1; j < k; j++) m = fmax(m, r[j]);
        for (int j = 0; j < k; j++) s += exp((double)r[j] - m);
        double lse = m + log(s);
        loss += lse - r[l[i]];
        for (int j = 0; j < k; j++) g[(size_t)i * k + j] = (exp((double)r[j] - lse) - (j == l[i])) / n;
    }
    return loss / n;
}

static void check_xent(int n, int k, const float *x, const int32_t *l, const char *what)
{
    int s[2] = {n, k};
    nn_tensor *t = tensor_of(2, s, x), *lab = labels_of(n, l);
    assert_int_equal(nn_tensor_require_grad(t), NN_OK);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *loss = nn_softmax_xent(ctx, t, lab);
    assert_non_null(loss);
    double *g = malloc((size_t)n * k * sizeof *g);
    double want = xent_ref(n, k, x, l, g);
    assert_all_finite(loss, what);
    tu_assert_close(nn_f32(loss), &want, 1, TU_FWD_ATOL, TU_FWD_RTOL, what);
    assert_int_equal(nn_backward(ctx, loss), NN_OK);
    assert_all_finite(t->grad, what);
    tu_assert_close(nn_f32(t->grad), g, (size_t)n * k, TU_FWD_ATOL, TU_FWD_RTOL, what);
    free(g);
    nn_ctx_free(ctx);
    nn_tensor_free(t);
    nn_tensor_free(lab);
}

/* A batch mixing every sign pattern of +-1e4 (the label on the largest, on
 * the smallest, all equal), and the same logits shifted by 1e4: softmax is
 * shift invariant, and k/8 + 1e4 is exact in float32, so the loss must not
 * move. An implementation that exponentiates without subtracting the row's
 * maximum gets inf or NaN here. */
static void test_xent_extreme_logits(void **state)
{
    (void)state;
    const float x[4 * 4] = {
        1e4f, -1e4f, -1e4f, 1e4f,   /* label 0: one of two maxima, loss log 2 */
        -1e4f, -1e4f, -1e4f, -1e4f, /* all equal: loss log 4 */
        1e4f, -1e4f, 0.0f, 1e4f,    /* label 1 at -1e4: loss 2e4 + log 2 */
        -1e4f, 1e4f, -1e4f, -1e4f,  /* label 1 at the only max: loss ~ 0 */
    };
    const int32_t l[4] = {0, 2, 1, 1};
    check_xent(4, 4, x, l, "xent +-1e4 batch");

    float y[3 * 5], ys[3 * 5];
    const int32_t ly[3] = {4, 0, 2};
    for (int i = 0; i < 15; i++) {
        y[i] = (float)((i * 7) % 17 - 8) / 8.0f; /* multiples of 1/8 in [-1, 1] */
        ys[i] = y[i] + 1e4f;
        assert_true((double)ys[i] - 1e4 == (double)y[i]); /* the shift is exact */
    }
    check_xent(3, 5, ys, ly, "xent shifted by 1e4");
    int s[2] = {3, 5};
    nn_tensor *a = tensor_of(2, s, y), *b = tensor_of(2, s, ys), *lab = labels_of(3, ly);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *la = nn_softmax_xent(ctx, a, lab), *lb = nn_softmax_xent(ctx, b, lab);
    assert_non_null(la);
    assert_non_null(lb);
    double want = nn_f32(la)[0];
    tu_assert_close(nn_f32(lb), &want, 1, TU_FWD_ATOL, TU_FWD_RTOL, "xent shift invariance");
    nn_ctx_free(ctx);
    nn_tensor_free(a);
    nn_tensor_free(b);
    nn_tensor_free(lab);
}

/* One class: softmax is 1, the loss and the gradient exactly 0, whatever the logit. */
static void test_xent_one_class(void **state)
{
    (void)state;
    const float x[3] = {1e4f, -1e4f, 0.5f};
    const int32_t l[3] = {0, 0, 0};
    check_xent(3, 1, x, l, "xent K = 1");
    check_xent(1, 1, x, l, "xent N = 1, K = 1");
    const float one[4] = {3.0f, -2.0f, 1e4f, -1e4f};
    const int32_t l1[1] = {2};
    check_xent(1, 4, one, l1, "xent N = 1");
}

/* ---- LRN ------------------------------------------------------------------- */

static void lrn_ref(const int *sh, nn_lrn_params p, const float *x, double *y)
{
    int n = sh[0], c = sh[1], hw = sh[2] * sh[3];
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++)
            for (int q = 0; q < hw; q++) {
                double s = 0;
                int lo = ch - p.size / 2 < 0 ? 0 : ch - p.size / 2;
                int hi = ch + p.size / 2 > c - 1 ? c - 1 : ch + p.size / 2;
                for (int j = lo; j <= hi; j++) {
                    double v = x[((size_t)b * c + j) * hw + q];
                    s += v * v;
                }
                size_t at = ((size_t)b * c + ch) * hw + q;
                y[at] = x[at] / pow((double)p.k + (double)p.alpha * s, (double)p.beta);
            }
}

static void check_lrn(const int *sh, nn_lrn_params p, const float *x, const char *what)
{
    nn_tensor *t = tensor_of(4, sh, x);
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *y = nn_lrn(ctx, t, p);
    assert_non_null(y);
    assert_all_finite(y, what);
    double *ref = malloc(t->numel * sizeof *ref);
    lrn_ref(sh, p, x, ref);
    /* relative only: outputs of large inputs are small and would pass any
     * absolute tolerance */
    tu_assert_close(nn_f32(y), ref, t->numel, 0.0, TU_FWD_RTOL, what);
    free(ref);
    nn_ctx_free(ctx);
    nn_tensor_free(t);
}

/* The window (5) wider than the channels (1 and 2), at 1e3..1e6; and one
 * channel of 1e6 beside channels of 1e-3, whose outputs it crushes to ~1e-3 /
 * (1e-4 * 1e12)^0.75: still normal floats, and must match. */
static void test_lrn_large_few_channels(void **state)
{
    (void)state;
    const float mags[4] = {1e3f, 1e4f, 1e5f, 1e6f};
    for (int m = 0; m < 4; m++) {
        for (int c = 1; c <= 2; c++) {
            int sh[4] = {2, c, 2, 3};
            float x[24];
            for (int i = 0; i < 2 * c * 6; i++) x[i] = mags[m] * (float)((i % 5) - 2) / 2.0f;
            char what[64];
            snprintf(what, sizeof what, "lrn C = %d at %g", c, (double)mags[m]);
            check_lrn(sh, NN_LRN_PAPER, x, what);
        }
    }
    int sh[4] = {1, 7, 1, 1};
    const float mixed[7] = {1e-3f, -1e-3f, 1e6f, 1e-3f, -1e-3f, 2e-3f, -1e6f};
    check_lrn(sh, NN_LRN_PAPER, mixed, "lrn mixed magnitudes");
    /* 1x1x1x1, and size 1 (each channel normalized by itself) */
    int one[4] = {1, 1, 1, 1};
    const float big = 1e6f;
    check_lrn(one, NN_LRN_PAPER, &big, "lrn 1x1x1x1");
    check_lrn(sh, (nn_lrn_params){1, 1e-4f, 0.75f, 2.0f}, mixed, "lrn size 1");
}

/* ---- maxpool ---------------------------------------------------------------- */

/* A window covering the whole plane: all -inf gives -inf and routes the
 * gradient to the first element; all equal values (in every channel of a
 * batch) route it to the first element of each plane. */
static void test_maxpool_global_window(void **state)
{
    (void)state;
    int sh[4] = {2, 3, 3, 3};
    float x[54];
    const float vals[2] = {-INFINITY, 4.25f};
    for (int v = 0; v < 2; v++) {
        for (int i = 0; i < 54; i++) x[i] = vals[v];
        nn_tensor *t = tensor_of(4, sh, x);
        assert_int_equal(nn_tensor_require_grad(t), NN_OK);
        nn_ctx *ctx = nn_ctx_new();
        nn_tensor *y = nn_maxpool2d(ctx, t, (nn_pool_params){3, 3, 0, 0, 0, 0});
        assert_non_null(y);
        assert_int_equal(y->numel, 6);
        for (int i = 0; i < 6; i++) assert_true(nn_f32(y)[i] == vals[v]);
        const float dy[6] = {1, 2, 3, 4, 5, 6};
        assert_int_equal(nn_backward_with(ctx, y, dy), NN_OK);
        for (int i = 0; i < 54; i++) {
            float want = i % 9 == 0 ? dy[i / 9] : 0.0f;
            if (nn_f32(t->grad)[i] != want)
                fail_msg("maxpool value %g: grad[%d] = %g, want %g", (double)vals[v], i,
                         (double)nn_f32(t->grad)[i], (double)want);
        }
        nn_ctx_free(ctx);
        nn_tensor_free(t);
    }
}

/* 1x1 images: a 1x1 window is the identity; a 3x3 window with padding 1 sees
 * only the one pixel (padding is -inf, never the maximum, even over -inf). */
static void test_maxpool_one_pixel(void **state)
{
    (void)state;
    int sh[4] = {1, 2, 1, 1};
    const float x[2] = {-INFINITY, -3.0f};
    const nn_pool_params ps[2] = {{1, 1, 0, 0, 0, 0}, {3, 3, 1, 1, 1, 1}};
    for (int k = 0; k < 2; k++) {
        nn_tensor *t = tensor_of(4, sh, x);
        assert_int_equal(nn_tensor_require_grad(t), NN_OK);
        nn_ctx *ctx = nn_ctx_new();
        nn_tensor *y = nn_maxpool2d(ctx, t, ps[k]);
        assert_non_null(y);
        assert_int_equal(y->numel, 2);
        assert_true(nn_f32(y)[0] == -INFINITY && nn_f32(y)[1] == -3.0f);
        const float dy[2] = {0.5f, 2.0f};
        assert_int_equal(nn_backward_with(ctx, y, dy), NN_OK);
        assert_memory_equal(nn_f32(t->grad), dy, sizeof dy);
        nn_ctx_free(ctx);
        nn_tensor_free(t);
    }
}

/* ---- dropout ---------------------------------------------------------------- */

/* p close to 1: the scale 1/(1-p) is large but finite, kept elements are
 * exactly x / (1 - p) (float32), the kept count is Binomial(n, 1-p) within six
 * standard deviations, and backward uses the same mask and scale. */
static void test_dropout_near_one(void **state)
{
    (void)state;
    const float ps[2] = {0.999f, nextafterf(1.0f, 0.0f)};
    const int n = 200000;
    int s[1] = {n};
    nn_tensor *x = NULL, *dy = NULL;
    x = tu_rand(21, 0.5f, 1.0f, 1, s);
    dy = tu_rand(22, -1.0f, 1.0f, 1, s);
    assert_int_equal(nn_tensor_require_grad(x), NN_OK);
    for (int k = 0; k < 2; k++) {
        nn_ctx *ctx = nn_ctx_new();
        *nn_ctx_rng(ctx) = nn_rng_make(23 + k);
        assert_int_equal(nn_tensor_zero_grad(x), NN_OK);
        nn_tensor *y = nn_dropout(ctx, x, ps[k]);
        assert_non_null(y);
        assert_int_equal(nn_backward_with(ctx, y, nn_f32(dy)), NN_OK);
        const double scale = 1.0 / (1.0 - (double)ps[k]);
        size_t kept = 0;
        for (int i = 0; i < n; i++) {
            double yi = nn_f32(y)[i], gi = nn_f32(x->grad)[i];
            assert_true(isfinite(yi) && isfinite(gi));
            if (yi == 0.0) {
                assert_true(gi == 0.0);
                continue;
            }
            kept++;
            double want = nn_f32(x)[i] * scale, gwant = nn_f32(dy)[i] * scale;
            if (fabs(yi - want) > 1e-6 * fabs(want) || fabs(gi - gwant) > 1e-6 * fabs(gwant))
                fail_msg("dropout p = %.9g: element %d is %g (grad %g), want %g (%g)", (double)ps[k], i, yi,
                         gi, want, gwant);
        }
        double q = 1.0 - (double)ps[k], mean = n * q, sd = sqrt(n * q * (1 - q));
        if (fabs((double)kept - mean) > 6 * sd + 1)
            fail_msg("dropout p = %.9g: kept %zu of %d, expected %.2f +- %.2f", (double)ps[k], kept, n, mean, sd);
        nn_ctx_free(ctx);
    }
    nn_tensor_free(x);
    nn_tensor_free(dy);
}

/* ---- dimensions of size 0 and 1 -------------------------------------------- */

static void test_zero_and_bad_dims(void **state)
{
    (void)state;
    for (int pos = 0; pos < 4; pos++) {
        int sh[4] = {2, 3, 4, 5};
        sh[pos] = 0;
        nn_tensor *t = (nn_tensor *)&t;
        assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CPU, 4, sh), NN_E_SHAPE);
        assert_null(t);
        assert_non_null(strstr(nn_errmsg(), "tensor"));
        sh[pos] = -1;
        assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CPU, 4, sh), NN_E_SHAPE);
        assert_null(t);
        const float v[1] = {0};
        sh[pos] = 0;
        assert_int_equal(nn_tensor_from(&t, NN_I32, NN_CPU, 4, sh, v), NN_E_SHAPE);
        assert_null(t);
    }
    nn_tensor *t = NULL;
    int one[1] = {1};
    assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CPU, 0, one), NN_E_SHAPE);
    assert_int_equal(nn_tensor_new(&t, NN_F32, NN_CPU, -1, one), NN_E_SHAPE);
    assert_null(t);

    /* reshape to a shape with a 0, two -1s, or the wrong count */
    int s6[2] = {2, 3};
    nn_tensor *x = tu_rand(31, -1, 1, 2, s6);
    const int bad[4][3] = {{6, 0, 1}, {-1, -1, 1}, {7, 1, 1}, {0, -1, 1}};
    for (int k = 0; k < 4; k++) {
        nn_ctx *ctx = nn_ctx_new();
        assert_null(nn_reshape(ctx, x, 3, bad[k]));
        assert_int_equal(nn_ctx_status(ctx), NN_E_SHAPE);
        if (!strstr(nn_ctx_errmsg(ctx), "reshape")) fail_msg("reshape message: %s", nn_ctx_errmsg(ctx));
        nn_ctx_free(ctx);
    }
    nn_tensor_free(x);
}

/* conv2d against a float64 reference on 1x1 images, batch 1: a 1x1 kernel and
 * a 3x3 kernel with padding 1 (only the centre tap lands on the pixel). */
static void conv_ref(const nn_tensor *x, const nn_tensor *w, const nn_tensor *b, int pad, double *y)
{
    int n = x->shape[0], c = x->shape[1], h = x->shape[2], wd = x->shape[3];
    int o = w->shape[0], kh = w->shape[2], kw = w->shape[3];
    int oh = h + 2 * pad - kh + 1, ow = wd + 2 * pad - kw + 1;
    for (int bi = 0; bi < n; bi++)
        for (int oc = 0; oc < o; oc++)
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++) {
                    double s = b ? nn_f32(b)[oc] : 0;
                    for (int ic = 0; ic < c; ic++)
                        for (int p = 0; p < kh; p++)
                            for (int q = 0; q < kw; q++) {
                                int yy = i + p - pad, xx = j + q - pad;
                                if (yy < 0 || yy >= h || xx < 0 || xx >= wd) continue;
                                s += (double)nn_f32(w)[((oc * c + ic) * kh + p) * kw + q] *
                                     nn_f32(x)[((bi * c + ic) * h + yy) * wd + xx];
                            }
                    y[((bi * o + oc) * oh + i) * ow + j] = s;
                }
}

static void test_one_by_one(void **state)
{
    (void)state;
    const int ks[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        for (int c = 1; c <= 3; c += 2) {
            nn_tensor *x = tu_rand4(41 + k, 1, c, 1, 1), *w = tu_rand4(43 + k, 2, c, ks[k], ks[k]);
            int bs[1] = {2};
            nn_tensor *b = tu_rand(45, -1, 1, 1, bs);
            nn_ctx *ctx = nn_ctx_new();
            int pad = ks[k] / 2;
            nn_tensor *y = nn_conv2d(ctx, x, w, b, (nn_conv2d_params){.pad_h = pad, .pad_w = pad});
            assert_non_null(y);
            assert_int_equal(y->ndim, 4);
            assert_true(y->shape[0] == 1 && y->shape[1] == 2 && y->shape[2] == 1 && y->shape[3] == 1);
            double ref[2];
            conv_ref(x, w, b, pad, ref);
            tu_assert_close(nn_f32(y), ref, 2, TU_FWD_ATOL, TU_FWD_RTOL, "conv2d on a 1x1 image");
            nn_ctx_free(ctx);
            nn_tensor_free(x);
            nn_tensor_free(w);
            nn_tensor_free(b);
        }
    }
}

/* A whole network on one 1x1 image, batch 1, gradient-checked end to end:
 * conv 3x3 p1 -> relu -> lrn -> maxpool 1x1 -> flatten -> linear(1 -> 1
 * feature per channel) -> xent over 2 classes. Every op sees its smallest
 * legal shape. */
typedef struct tiny_net {
    nn_tensor *conv_bias; /* fixed: the checker takes at most 4 inputs */
    nn_tensor *labels;
} tiny_net;

static nn_tensor *tiny_forward(nn_ctx *ctx, nn_tensor *const *in, void *user)
{
    const tiny_net *t = user;
    nn_tensor *h = nn_conv2d(ctx, in[0], in[1], t->conv_bias, (nn_conv2d_params){.pad_h = 1, .pad_w = 1});
    h = nn_relu(ctx, h);
    h = nn_lrn(ctx, h, NN_LRN_PAPER);
    h = nn_maxpool2d(ctx, h, (nn_pool_params){1, 1, 1, 1, 0, 0});
    h = nn_dropout(ctx, h, 0.0f);
    h = nn_flatten(ctx, h);
    h = nn_linear(ctx, h, in[2], in[3]);
    return nn_softmax_xent(ctx, h, t->labels);
}

static void test_batch_one_network(void **state)
{
    (void)state;
    int b3[1] = {3}, b2[1] = {2}, w2[2] = {2, 3};
    nn_tensor *in[4] = {tu_rand4(51, 1, 1, 1, 1), tu_rand4(52, 3, 1, 3, 3), tu_rand(54, -1, 1, 2, w2),
                        tu_rand(55, -1, 1, 1, b2)};
    for (int i = 0; i < 4; i++) assert_int_equal(nn_tensor_require_grad(in[i]), NN_OK);
    const int32_t l[1] = {1};
    tiny_net net = {tu_rand(53, -1, 1, 1, b3), labels_of(1, l)};
    /* keep the relu inputs away from its kink: conv biases well positive */
    for (int i = 0; i < 3; i++) nn_f32(net.conv_bias)[i] = 1.0f + 0.5f * (float)i;
    tu_gradcheck(tiny_forward, &net, 4, in, 56, "batch-1 network on a 1x1 image");
    for (int i = 0; i < 4; i++) nn_tensor_free(in[i]);
    nn_tensor_free(net.conv_bias);
    nn_tensor_free(net.labels);
}

/* ---- bad inputs: a status and a message naming the op, never a crash ------- */

enum { OP_CONV, OP_RELU, OP_LRN, OP_POOL, OP_DROP, OP_LINEAR, OP_XENT, OP_ADD, OP_RESHAPE, OP_FLATTEN };

typedef struct bad_call {
    int op;
    const char *name; /* the op name the message must hold */
    int a, b, c;      /* indices into the tensor zoo; -1 = NULL */
    nn_status want;   /* expected status; NN_OK = any error */
    const char *what;
} bad_call;

static nn_tensor *call_op(nn_ctx *ctx, const bad_call *bc, nn_tensor *const *zoo)
{
    nn_tensor *a = bc->a >= 0 ? zoo[bc->a] : NULL, *b = bc->b >= 0 ? zoo[bc->b] : NULL;
    nn_tensor *c = bc->c >= 0 ? zoo[bc->c] : NULL;
    const int rs[2] = {-1, 5};
    switch (bc->op) {
    case OP_CONV: return nn_conv2d(ctx, a, b, c, (nn_conv2d_params){0});
    case OP_RELU: return nn_relu(ctx, a);
    case OP_LRN: return nn_lrn(ctx, a, NN_LRN_PAPER);
    case OP_POOL: return nn_maxpool2d(ctx, a, (nn_pool_params){2, 2, 0, 0, 0, 0});
    case OP_DROP: return nn_dropout(ctx, a, 0.5f);
    case OP_LINEAR: return nn_linear(ctx, a, b, c);
    case OP_XENT: return nn_softmax_xent(ctx, a, b);
    case OP_ADD: return nn_add(ctx, a, b);
    case OP_RESHAPE: return nn_reshape(ctx, a, 2, rs);
    case OP_FLATTEN: return nn_flatten(ctx, a);
    }
    return NULL;
}

static void test_bad_inputs_name_the_op(void **state)
{
    (void)state;
    /* the zoo: 0 x4 (2,3,4,4) F32, 1 w (5,3,3,3), 2 b (5), 3 m (2,6) F32,
     * 4 lw (5,6), 5 i4 (2,3,4,4) I32, 6 v (7) F32, 7 lab (2) I32, 8 lab3 (3) I32,
     * 9 x1 (1,3,1,1) (too small for a 3x3 kernel or a 2x2 window), 10 wbad (5,2,3,3) */
    int s4[4] = {2, 3, 4, 4}, sw[4] = {5, 3, 3, 3}, sb[1] = {5}, sm[2] = {2, 6}, slw[2] = {5, 6};
    int sv[1] = {7}, sl[1] = {2}, sl3[1] = {3}, s1[4] = {1, 3, 1, 1}, swb[4] = {5, 2, 3, 3};
    nn_tensor *zoo[11] = {tu_rand(61, -1, 1, 4, s4), tu_rand(62, -1, 1, 4, sw), tu_rand(63, -1, 1, 1, sb),
                          tu_rand(64, -1, 1, 2, sm), tu_rand(65, -1, 1, 2, slw), NULL,
                          tu_rand(66, -1, 1, 1, sv), NULL, NULL, tu_rand(67, -1, 1, 4, s1),
                          tu_rand(68, -1, 1, 4, swb)};
    assert_int_equal(nn_tensor_new(&zoo[5], NN_I32, NN_CPU, 4, s4), NN_OK);
    assert_int_equal(nn_tensor_new(&zoo[7], NN_I32, NN_CPU, 1, sl), NN_OK);
    assert_int_equal(nn_tensor_new(&zoo[8], NN_I32, NN_CPU, 1, sl3), NN_OK);
    const bad_call calls[] = {
        {OP_CONV, "conv2d", -1, 1, 2, NN_E_ARG, "NULL input"},
        {OP_CONV, "conv2d", 0, -1, 2, NN_E_ARG, "NULL weight"},
        {OP_CONV, "conv2d", 5, 1, 2, NN_E_ARG, "int32 input"},
        {OP_CONV, "conv2d", 3, 1, 2, NN_E_SHAPE, "2-D input"},
        {OP_CONV, "conv2d", 0, 3, 2, NN_E_SHAPE, "2-D weight"},
        {OP_CONV, "conv2d", 0, 10, 2, NN_E_SHAPE, "channel mismatch"},
        {OP_CONV, "conv2d", 0, 1, 6, NN_E_SHAPE, "bias length"},
        {OP_CONV, "conv2d", 9, 1, 2, NN_E_SHAPE, "kernel larger than the image"},
        {OP_RELU, "relu", -1, -1, -1, NN_E_ARG, "NULL input"},
        {OP_RELU, "relu", 5, -1, -1, NN_E_ARG, "int32 input"},
        {OP_LRN, "lrn", -1, -1, -1, NN_E_ARG, "NULL input"},
        {OP_LRN, "lrn", 5, -1, -1, NN_E_ARG, "int32 input"},
        {OP_LRN, "lrn", 3, -1, -1, NN_E_SHAPE, "2-D input"},
        {OP_POOL, "maxpool2d", -1, -1, -1, NN_E_ARG, "NULL input"},
        {OP_POOL, "maxpool2d", 5, -1, -1, NN_E_ARG, "int32 input"},
        {OP_POOL, "maxpool2d", 6, -1, -1, NN_E_SHAPE, "1-D input"},
        {OP_POOL, "maxpool2d", 9, -1, -1, NN_OK, "window larger than the image"},
        {OP_DROP, "dropout", -1, -1, -1, NN_E_ARG, "NULL input"},
        {OP_DROP, "dropout", 5, -1, -1, NN_E_ARG, "int32 input"},
        {OP_LINEAR, "linear", -1, 4, 2, NN_E_ARG, "NULL input"},
        {OP_LINEAR, "linear", 3, -1, 2, NN_E_ARG, "NULL weight"},
        {OP_LINEAR, "linear", 0, 4, 2, NN_E_SHAPE, "4-D input"},
        {OP_LINEAR, "linear", 3, 1, 2, NN_E_SHAPE, "4-D weight"},
        {OP_LINEAR, "linear", 3, 4, 6, NN_E_SHAPE, "bias length"},
        {OP_LINEAR, "linear", 6, 4, 2, NN_E_SHAPE, "1-D input"},
        {OP_XENT, "softmax_xent", -1, 7, -1, NN_E_ARG, "NULL logits"},
        {OP_XENT, "softmax_xent", 3, -1, -1, NN_E_ARG, "NULL labels"},
        {OP_XENT, "softmax_xent", 3, 6, -1, NN_E_ARG, "float labels"},
        {OP_XENT, "softmax_xent", 5, 7, -1, NN_E_ARG, "int32 logits"},
        {OP_XENT, "softmax_xent", 3, 8, -1, NN_E_SHAPE, "label count"},
        {OP_XENT, "softmax_xent", 0, 7, -1, NN_E_SHAPE, "4-D logits"},
        {OP_ADD, "add", -1, 0, -1, NN_E_ARG, "NULL input"},
        {OP_ADD, "add", 0, 3, -1, NN_E_SHAPE, "different shapes"},
        {OP_ADD, "add", 0, 5, -1, NN_E_ARG, "int32 input"},
        {OP_RESHAPE, "reshape", -1, -1, -1, NN_E_ARG, "NULL input"},
        {OP_RESHAPE, "reshape", 6, -1, -1, NN_E_SHAPE, "7 elements into (-1, 5)"},
        {OP_FLATTEN, "flatten", -1, -1, -1, NN_E_ARG, "NULL input"},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        const bad_call *bc = &calls[i];
        nn_ctx *ctx = nn_ctx_new();
        assert_non_null(ctx);
        nn_tensor *y = call_op(ctx, bc, zoo);
        nn_status s = nn_ctx_status(ctx);
        if (y || s == NN_OK) fail_msg("%s (%s): no error", bc->name, bc->what);
        if (bc->want != NN_OK && s != bc->want)
            fail_msg("%s (%s): status %s, expected %s (%s)", bc->name, bc->what, nn_status_str(s),
                     nn_status_str(bc->want), nn_ctx_errmsg(ctx));
        if (!strstr(nn_ctx_errmsg(ctx), bc->name))
            fail_msg("%s (%s): the message does not name the op: \"%s\"", bc->name, bc->what, nn_ctx_errmsg(ctx));
        /* the status is sticky: a valid op after it returns NULL and keeps the first message */
        char first[256];
        snprintf(first, sizeof first, "%s", nn_ctx_errmsg(ctx));
        assert_null(nn_relu(ctx, zoo[0]));
        assert_string_equal(nn_ctx_errmsg(ctx), first);
        /* and a reset clears it */
        nn_ctx_reset(ctx);
        assert_int_equal(nn_ctx_status(ctx), NN_OK);
        assert_non_null(nn_relu(ctx, zoo[0]));
        nn_ctx_free(ctx);
    }
    /* backward from something that is not a scalar, or NULL */
    nn_ctx *ctx = nn_ctx_new();
    assert_int_equal(nn_tensor_require_grad(zoo[0]), NN_OK);
    nn_tensor *y = nn_relu(ctx, zoo[0]);
    assert_non_null(y);
    nn_status s = nn_backward(ctx, y);
    assert_int_not_equal(s, NN_OK);
    if (!strstr(nn_errmsg(), "backward")) fail_msg("backward message: %s", nn_errmsg());
    assert_int_not_equal(nn_backward(ctx, NULL), NN_OK);
    nn_ctx_free(ctx);
    for (int i = 0; i < 11; i++) nn_tensor_free(zoo[i]);
}

/* The sequential builder on bad arguments: each is NN_E_ARG (or NN_E_SHAPE)
 * from nn_seq_build naming the layer and the argument, never a crash (a
 * stride of 0 divided by zero, a NULL name was dereferenced). */
static void test_sequential_bad_arguments(void **state)
{
    (void)state;
    struct {
        const char *what;  /* expected in the message */
        int case_id;
    } cases[] = {
        {"stride = 0", 0}, {"kernel = 0", 1}, {"padding = -1", 2}, {"groups = 0", 3}, {"output channels = -4", 4},
        {"window = 0", 5}, {"stride = -2", 6}, {"output features = 0", 7}, {"dropout p = 1.5", 8},
        {"no name", 9}, {"kernel = 2000000", 10}, {"not a valid image size", 11},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nn_seq *s = calloc(1, sizeof *s);
        assert_non_null(s);
        nn_seq_init(s, 1, cases[i].case_id == 11 ? 0 : 8, 8);
        switch (cases[i].case_id) {
        case 0: nn_seq_conv(s, "c", 4, 3, 0, 1, 1, 0.0f); break;
        case 1: nn_seq_conv(s, "c", 4, 0, 1, 1, 1, 0.0f); break;
        case 2: nn_seq_conv(s, "c", 4, 3, 1, -1, 1, 0.0f); break;
        case 3: nn_seq_conv(s, "c", 4, 3, 1, 1, 0, 0.0f); break;
        case 4: nn_seq_conv(s, "c", -4, 3, 1, 1, 1, 0.0f); break;
        case 5: nn_seq_maxpool(s, "p", 0, 1); break;
        case 6: nn_seq_maxpool(s, "p", 2, -2); break;
        case 7: nn_seq_flatten(s, "f"); nn_seq_linear(s, "l", 0, 0.0f); break;
        case 8: nn_seq_dropout(s, "d", 1.5f); break;
        case 9: nn_seq_relu(s, NULL); break;
        case 10: nn_seq_conv(s, "c", 4, 2000000, 1, 1, 1, 0.0f); break;
        case 11: nn_seq_relu(s, "r"); break;
        }
        nn_seq_relu(s, "after"); /* layers added after a failure are ignored */
        nn_rng rng = nn_rng_make(1);
        nn_status st = nn_seq_build(s, NN_CPU, NN_INIT_HE, &rng);
        assert_true(st == NN_E_ARG || st == NN_E_SHAPE);
        if (!strstr(nn_errmsg(), cases[i].what)) fail_msg("case %zu: '%s' lacks '%s'", i, nn_errmsg(), cases[i].what);
        nn_seq_free(s);
        free(s);
    }
    assert_int_equal(nn_seq_infer(NULL), NN_E_ARG);
}

/* The shape rules alone (what the sequential builder plans with) give the
 * shapes the ops produce: AlexNet's conv1 and pool1 (docs/alexnet.md), and
 * the op's error for a kernel that does not fit. */
static void test_shape_rules(void **state)
{
    (void)state;
    nn_conv2d_geom g;
    const int x[4] = {2, 3, 224, 224}, w[4] = {96, 3, 11, 11};
    assert_int_equal(nn_conv2d_shape(x, w, (nn_conv2d_params){4, 4, 2, 2, 1}, &g), NN_OK);
    assert_int_equal(g.oh, 55);
    assert_int_equal(g.ow, 55);
    nn_pool_geom pg;
    const int y[4] = {2, 96, 55, 55};
    assert_int_equal(nn_maxpool2d_shape(y, (nn_pool_params){3, 3, 2, 2, 0, 0}, &pg), NN_OK);
    assert_int_equal(pg.oh, 27);
    const int tiny[4] = {1, 3, 6, 6};
    assert_int_equal(nn_conv2d_shape(tiny, w, (nn_conv2d_params){4, 4, 2, 2, 1}, &g), NN_E_SHAPE);
    assert_non_null(strstr(nn_errmsg(), "does not fit"));
    const int w2[4] = {96, 2, 11, 11}; /* 3 channels do not split into groups of 2 */
    assert_int_equal(nn_conv2d_shape(x, w2, (nn_conv2d_params){4, 4, 2, 2, 2}, &g), NN_E_SHAPE);
    /* the op itself says the same */
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *xt, *wt;
    assert_int_equal(nn_tensor_new(&xt, NN_F32, NN_CPU, 4, tiny), NN_OK);
    assert_int_equal(nn_tensor_new(&wt, NN_F32, NN_CPU, 4, w), NN_OK);
    assert_null(nn_conv2d(ctx, xt, wt, NULL, (nn_conv2d_params){4, 4, 2, 2, 1}));
    assert_int_equal(nn_ctx_status(ctx), NN_E_SHAPE);
    assert_non_null(strstr(nn_errmsg(), "does not fit"));
    nn_tensor_free(xt);
    nn_tensor_free(wt);
    nn_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xent_extreme_logits),
        cmocka_unit_test(test_xent_one_class),
        cmocka_unit_test(test_lrn_large_few_channels),
        cmocka_unit_test(test_maxpool_global_window),
        cmocka_unit_test(test_maxpool_one_pixel),
        cmocka_unit_test(test_dropout_near_one),
        cmocka_unit_test(test_zero_and_bad_dims),
        cmocka_unit_test(test_one_by_one),
        cmocka_unit_test(test_batch_one_network),
        cmocka_unit_test(test_bad_inputs_name_the_op),
        cmocka_unit_test(test_sequential_bad_arguments),
        cmocka_unit_test(test_shape_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
