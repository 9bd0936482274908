/* AlexNet as docs/alexnet.md defines it: parameter and multiply-add counts per
 * layer, the two-tower variant, the paper's initialization, PyTorch-style
 * names, input sizes that do not fit, and a forward/backward at a small size. */
#include <string.h>

#include "models/model.h"
#include "tests/testutil.h"

static void test_counts_match_the_paper(void **state)
{
    (void)state;
    nn_model_config c = nn_alexnet_config();
    nn_seq s;
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, NULL), NN_OK);
    assert_int_equal(nn_seq_params(&s), 62378344LL);
    /* conv1 34,944; conv2 614,656; conv3 885,120; conv4 1,327,488; conv5 884,992;
       fc6 37,752,832; fc7 16,781,312; fc8 4,097,000 */
    const char *names[8] = {"stage1.0", "stage2.0", "stage3.0", "stage4.0", "stage5.0",
                            "classifier.2", "classifier.5", "classifier.7"};
    const long long params[8] = {34944, 614656, 885120, 1327488, 884992, 37752832, 16781312, 4097000};
    /* forward MACs: conv1 105.4M, conv2 447.9M, conv3 149.5M, conv4 224.3M, conv5 149.5M */
    const double macs_m[5] = {105.4, 447.9, 149.5, 224.3, 149.5};
    int found = 0;
    for (int i = 0; i < s.n; i++)
        for (int k = 0; k < 8; k++)
            if (strcmp(s.l[i].name, names[k]) == 0) {
                assert_int_equal(s.l[i].params, params[k]);
                if (k < 5) assert_true(fabs((double)s.l[i].macs / 1e6 - macs_m[k]) < 0.05);
                found++;
            }
    assert_int_equal(found, 8);
    assert_true(fabs((double)nn_seq_macs(&s) / 1e9 - 1.135) < 0.001);
    /* output shapes of the table in docs/alexnet.md */
    assert_int_equal(s.l[0].out_shape[1], 55);
    assert_int_equal(s.l[3].out_shape[1], 27);
    assert_int_equal(s.l[7].out_shape[1], 13);
    assert_int_equal(s.l[14].out_shape[0], 256);
    assert_int_equal(s.l[14].out_shape[1], 6);
    assert_int_equal(s.l[15].out_shape[0], 9216);

    c.groups = 2; /* the paper's two-GPU split: conv2, conv4, conv5 grouped */
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, NULL), NN_OK);
    assert_int_equal(nn_seq_params(&s), 62378344LL - 307200 - 663552 - 442368);
    assert_true(fabs((double)nn_seq_macs(&s) / 1e6 - 724.0) < 1.0);
}

static void test_sizes_that_do_not_fit(void **state)
{
    (void)state;
    nn_model_config c = nn_alexnet_config();
    nn_seq s;
    c.in_size = 62; /* the smallest that fits is 63 */
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, NULL), NN_E_SHAPE);
    assert_non_null(strstr(nn_errmsg(), "stage5.2"));
    c.in_size = 63;
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, NULL), NN_OK);
    c.in_size = 8; /* conv1 gives 1x1, pool1 cannot */
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, NULL), NN_E_SHAPE);
    assert_non_null(strstr(nn_errmsg(), "stage1.3"));
    c.in_size = 6; /* smaller than conv1's kernel even padded */
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, NULL), NN_E_SHAPE);
    assert_non_null(strstr(nn_errmsg(), "stage1.0"));
    c.in_size = 224;
    c.groups = 3;
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, NULL), NN_E_ARG);
    c.groups = 1;
    strcpy(c.arch, "vgg");
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, NULL), NN_E_ARG);
}

static void test_paper_init_and_names(void **state)
{
    (void)state;
    nn_model_config c = nn_alexnet_config();
    c.in_channels = 1;
    c.in_size = 67;
    c.classes = 10;
    c.width = 0.25f;
    c.fc = 64;
    nn_seq s;
    nn_rng rng = nn_rng_make(4);
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, &rng), NN_OK);
    assert_int_equal(s.params.n, 16);
    const char *biased[5] = {"stage2.0.bias", "stage4.0.bias", "stage5.0.bias", "classifier.2.bias",
                             "classifier.5.bias"};
    const char *zero[3] = {"stage1.0.bias", "stage3.0.bias", "classifier.7.bias"};
    for (int k = 0; k < 5; k++) {
        nn_tensor *b = nn_params_find(&s.params, biased[k]);
        assert_non_null(b);
        for (size_t i = 0; i < b->numel; i++) assert_float_equal(nn_f32(b)[i], 1.0f, 0);
    }
    for (int k = 0; k < 3; k++) {
        nn_tensor *b = nn_params_find(&s.params, zero[k]);
        assert_non_null(b);
        for (size_t i = 0; i < b->numel; i++) assert_float_equal(nn_f32(b)[i], 0.0f, 0);
    }
    nn_tensor *w = nn_params_find(&s.params, "classifier.2.weight");
    double sum = 0, sq = 0;
    for (size_t i = 0; i < w->numel; i++) {
        sum += nn_f32(w)[i];
        sq += (double)nn_f32(w)[i] * nn_f32(w)[i];
    }
    double mean = sum / (double)w->numel, std = sqrt(sq / (double)w->numel - mean * mean);
    assert_true(fabs(std - 0.01) < 0.0005); /* N(0, 0.01^2) over 16k weights */
    assert_true(fabs(mean) < 0.0005);
    assert_int_equal(w->shape[0], 64);
    assert_non_null(nn_params_find(&s.params, "stage1.0.weight"));
    assert_true(nn_params_find(&s.params, "stage1.0.weight")->shape[2] == 11);

    /* forward and backward at batch 2 */
    nn_ctx *ctx = nn_ctx_new();
    nn_tensor *x = tu_rand4(9, 2, 1, 67, 67);
    int32_t lab[2] = {3, 7};
    nn_tensor *y;
    assert_int_equal(nn_tensor_from(&y, NN_I32, NN_CPU, 1, (int[]){2}, lab), NN_OK);
    nn_tensor *logits = nn_seq_forward(ctx, &s, x);
    assert_non_null(logits);
    assert_int_equal(logits->shape[0], 2);
    assert_int_equal(logits->shape[1], 10);
    nn_tensor *loss = nn_softmax_xent(ctx, logits, y);
    assert_non_null(loss);
    assert_int_equal(nn_backward(ctx, loss), NN_OK);
    for (int i = 0; i < s.params.n; i++) {
        nn_tensor *g = s.params.p[i].t->grad;
        double a = 0;
        for (size_t k = 0; k < g->numel; k++) a += fabs(nn_f32(g)[k]);
        assert_true(isfinite(a));
    }
    /* a wrong input shape is an error naming the model's size */
    nn_ctx_reset(ctx);
    nn_tensor *bad = tu_rand4(9, 2, 3, 67, 67);
    assert_null(nn_seq_forward(ctx, &s, bad));
    assert_non_null(strstr(nn_ctx_errmsg(ctx), "Nx1x67x67"));
    nn_tensor_free(bad);
    nn_tensor_free(x);
    nn_tensor_free(y);
    nn_ctx_free(ctx);
    nn_seq_free(&s);
}

/* Memory released as the step goes (activations after their last reader,
 * gradients once consumed, an LRN output once its maxpool has run, relu in
 * place) changes no bit: a small AlexNet's loss, logits and every parameter
 * gradient match retain mode (which releases nothing) exactly, and its
 * arena peak is lower, in training and in inference. */
static void run_step(nn_seq *s, nn_tensor *x, nn_tensor *lab, bool train, bool retain, float *out, size_t nout,
                     size_t *peak)
{
    nn_ctx *ctx = nn_ctx_new();
    nn_ctx_set_retain(ctx, retain);
    nn_ctx_set_grad(ctx, train);
    nn_ctx_set_training(ctx, false); /* no dropout: both runs see the same masks anyway */
    assert_int_equal(nn_params_zero_grad(&s->params), NN_OK);
    nn_tensor *logits = nn_seq_forward(ctx, s, x);
    assert_non_null(logits);
    if (train) {
        nn_tensor *loss = nn_softmax_xent(ctx, logits, lab);
        assert_int_equal(nn_backward(ctx, loss), NN_OK);
    }
    assert_true(logits->numel <= nout);
    memcpy(out, nn_f32(logits), logits->numel * sizeof *out); /* the logits stay readable */
    *peak = nn_ctx_peak_bytes(ctx, NN_CPU);
    nn_ctx_free(ctx);
}

static void test_released_memory_changes_no_bit(void **state)
{
    (void)state;
    nn_model_config c = nn_alexnet_config();
    c.in_channels = 1;
    c.in_size = 67;
    c.classes = 10;
    c.width = 0.125f;
    c.fc = 32;
    nn_seq s;
    nn_rng rng = nn_rng_make(5);
    assert_int_equal(nn_model_build(&s, &c, NN_CPU, &rng), NN_OK);
    enum { B = 4 };
    nn_tensor *x = tu_rand4(6, B, 1, 67, 67), *lab = NULL;
    assert_int_equal(nn_tensor_from(&lab, NN_I32, NN_CPU, 1, (int[]){B}, (int32_t[]){1, 3, 5, 7}), NN_OK);
    float out[2][B * 10];
    size_t peak[2];
    for (int train = 1; train >= 0; train--) {
        float *grads = NULL;
        size_t ng = 0;
        for (int i = 0; i < s.params.n; i++) ng += s.params.p[i].t->numel;
        grads = malloc(ng * sizeof *grads);
        assert_non_null(grads);
        for (int retain = 1; retain >= 0; retain--) {
            run_step(&s, x, lab, train, retain, out[retain], B * 10, &peak[retain]);
            size_t off = 0;
            for (int i = 0; i < s.params.n && train; i++) {
                const nn_tensor *g = s.params.p[i].t->grad;
                if (retain)
                    memcpy(grads + off, nn_f32(g), g->numel * sizeof *grads);
                else if (memcmp(grads + off, nn_f32(g), g->numel * sizeof *grads) != 0)
                    fail_msg("%s: the gradient differs with memory released", s.params.p[i].name);
                off += g->numel;
            }
        }
        assert_memory_equal(out[0], out[1], sizeof out[0]);
        if (peak[0] >= peak[1]) fail_msg("%s: arena peak %zu bytes released vs %zu retained",
                                         train ? "training" : "inference", peak[0], peak[1]);
        free(grads);
    }
    nn_tensor_free(x);
    nn_tensor_free(lab);
    nn_seq_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_match_the_paper),
        cmocka_unit_test(test_sizes_that_do_not_fit),
        cmocka_unit_test(test_paper_init_and_names),
        cmocka_unit_test(test_released_memory_changes_no_bit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
