/* The README's first example as a program of its own: a small conv net
 * (conv 5x5 -> ReLU -> LRN -> maxpool -> linear) learns to tell two kinds of
 * 1x28x28 images apart. Built against the installed library only:
 *     cc readme_network.c $(pkg-config --cflags --libs convnet)
 * Exit status 0 when the loss fell by half, 1 otherwise. */
#include <stdio.h>

#include "convnet.h"

/* ---- begin README example ---- */
#include "core/graph.h"
#include "ops/ops.h"
#include "optim/optim.h"

nn_status train_steps(nn_tensor *x, nn_tensor *y, nn_params *ps, int steps)
{
    nn_tensor *w1 = nn_params_find(ps, "conv.weight"), *b1 = nn_params_find(ps, "conv.bias");
    nn_tensor *w2 = nn_params_find(ps, "fc.weight"), *b2 = nn_params_find(ps, "fc.bias");
    nn_optim_config cfg = nn_optim_paper_sgd();          /* lr 0.01, momentum 0.9, wd 5e-4 */
    nn_optim *opt;
    NN_TRY(nn_optim_new(&opt, &cfg, ps));
    nn_ctx *ctx = nn_ctx_new();
    nn_status s = NN_OK;
    for (int i = 0; i < steps && s == NN_OK; i++) {
        nn_ctx_reset(ctx);                               /* reuses last step's memory */
        nn_tensor *h = nn_conv2d(ctx, x, w1, b1, (nn_conv2d_params){.pad_h = 2, .pad_w = 2});
        h = nn_lrn(ctx, nn_relu(ctx, h), NN_LRN_PAPER);
        h = nn_maxpool2d(ctx, h, (nn_pool_params){.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2});
        h = nn_linear(ctx, nn_flatten(ctx, h), w2, b2);
        nn_tensor *loss = nn_softmax_xent(ctx, h, y);
        if (!loss) s = nn_ctx_status(ctx);               /* nn_errmsg() says why */
        if (s == NN_OK) s = nn_backward(ctx, loss);
        if (s == NN_OK) s = nn_optim_step(opt);
        if (s == NN_OK) s = nn_params_zero_grad(ps);
    }
    nn_ctx_free(ctx);
    nn_optim_free(opt);
    return s;
}
/* ---- end README example ---- */

/* loss of the network on (x, y), without training */
static nn_status loss_of(nn_tensor *x, nn_tensor *y, nn_params *ps, float *loss_out)
{
    nn_ctx *ctx = nn_ctx_new();
    if (!ctx) return nn_error(NN_E_NOMEM, "readme_network: no context");
    nn_tensor *h = nn_conv2d(ctx, x, nn_params_find(ps, "conv.weight"), nn_params_find(ps, "conv.bias"),
                             (nn_conv2d_params){.pad_h = 2, .pad_w = 2});
    h = nn_maxpool2d(ctx, nn_lrn(ctx, nn_relu(ctx, h), NN_LRN_PAPER),
                     (nn_pool_params){.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2});
    h = nn_linear(ctx, nn_flatten(ctx, h), nn_params_find(ps, "fc.weight"), nn_params_find(ps, "fc.bias"));
    nn_tensor *loss = nn_softmax_xent(ctx, h, y);
    nn_status s = loss ? NN_OK : nn_ctx_status(ctx);
    if (loss) *loss_out = nn_f32(loss)[0];
    nn_ctx_free(ctx);
    return s;
}

/* 8 random images, the odd ones brighter: label = which */
static nn_status make_data(nn_tensor **x, nn_tensor **y, nn_rng *rng)
{
    enum { N = 8 };
    int32_t lab[N];
    for (int i = 0; i < N; i++) lab[i] = i % 2;
    NN_TRY(nn_tensor_new4(x, NN_F32, NN_CPU, N, 1, 28, 28));
    NN_TRY(nn_tensor_uniform(*x, rng, -1.0f, 1.0f));
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 28 * 28; j++) nn_f32(*x)[i * 28 * 28 + j] += 0.5f * (float)lab[i];
    return nn_tensor_from(y, NN_I32, NN_CPU, 1, (int[]){N}, lab);
}

/* conv 4x1x5x5 and linear 2x(4*13*13), random normal weights, zero biases */
static nn_status make_params(nn_params *ps, nn_rng *rng)
{
    const char *names[4] = {"conv.weight", "conv.bias", "fc.weight", "fc.bias"};
    int shapes[4][4] = {{4, 1, 5, 5}, {4}, {2, 4 * 13 * 13}, {2}};
    int ranks[4] = {4, 1, 2, 1};
    float stddev[4] = {0.2f, 0, 0.02f, 0};
    for (int i = 0; i < 4; i++) {
        nn_tensor *t;
        NN_TRY(nn_tensor_new(&t, NN_F32, NN_CPU, ranks[i], shapes[i]));
        nn_status s = stddev[i] > 0 ? nn_tensor_normal(t, rng, 0, stddev[i]) : NN_OK;
        if (s == NN_OK) s = nn_tensor_require_grad(t);
        if (s == NN_OK) s = nn_params_add(ps, names[i], t, i % 2);
        if (s != NN_OK) {
            nn_tensor_free(t);
            return s;
        }
    }
    return NN_OK;
}

int main(void)
{
    nn_rng rng = nn_rng_make(3);
    nn_tensor *x = NULL, *y = NULL;
    nn_params ps = {0};
    float before = 0, after = 0;
    nn_status s = make_data(&x, &y, &rng);
    if (s == NN_OK) s = make_params(&ps, &rng);
    if (s == NN_OK) s = loss_of(x, y, &ps, &before);
    if (s == NN_OK) s = train_steps(x, y, &ps, 30);
    if (s == NN_OK) s = loss_of(x, y, &ps, &after);
    if (s != NN_OK) fprintf(stderr, "readme_network: %s: %s\n", nn_status_str(s), nn_errmsg());
    else printf("loss %.4f -> %.4f after 30 steps\n", before, after);
    for (int i = 0; i < ps.n; i++) nn_tensor_free(ps.p[i].t);
    nn_params_clear(&ps);
    nn_tensor_free(x);
    nn_tensor_free(y);
    return s == NN_OK && after < 0.5f * before ? 0 : 1;
}
