/* The training step captured as a CUDA graph (NN_CUDA_GRAPH=1, models/train.c,
 * docs/cuda_graph.md) against the plain step, on the GPU: the per-step losses
 * and the final weights and optimizer state bit for bit equal over two epochs
 * with dropout, Adam and the cosine schedule (captures, replays, a partial
 * last batch and an evaluation between epochs), and a batch with a NaN image
 * skipped (or stopped at) identically. Skipped, with the reason, without a GPU. */
#include <stdlib.h>
#include <string.h>

#include "convnet.h"
#include "tests/gpu_test.h"
#include "tests/testutil.h"

/* 44 images in batches of 8: five full batches and a partial one per epoch */
enum { N = 44, C = 1, H = 4, W = 4, K = 3, BATCH = 8, EPOCHS = 2, MAXSTEPS = 64 };
#define NAN_SAMPLE 17

/* logits = W dropout(flatten(x), 0.3) + b */
typedef struct net {
    nn_tensor *w, *b;
    nn_params ps;
} net;

static nn_tensor *net_forward(nn_ctx *ctx, void *model, nn_tensor *x)
{
    net *m = model;
    return nn_linear(ctx, nn_dropout(ctx, nn_flatten(ctx, x), 0.3f), m->w, m->b);
}

static void net_make(net *m)
{
    memset(m, 0, sizeof *m);
    nn_tensor *hw = tu_rand(5, -0.3f, 0.3f, 2, (int[]){K, C * H * W}), *hb = tu_rand(6, -0.1f, 0.1f, 1, (int[]){K});
    assert_int_equal(nn_tensor_to(&m->w, hw, NN_CUDA), NN_OK);
    assert_int_equal(nn_tensor_to(&m->b, hb, NN_CUDA), NN_OK);
    nn_tensor_free(hw), nn_tensor_free(hb);
    assert_int_equal(nn_tensor_require_grad(m->w), NN_OK);
    assert_int_equal(nn_tensor_require_grad(m->b), NN_OK);
    assert_int_equal(nn_params_add(&m->ps, "fc.weight", m->w, false), NN_OK);
    assert_int_equal(nn_params_add(&m->ps, "fc.bias", m->b, true), NN_OK);
}

static void net_free(net *m)
{
    nn_params_clear(&m->ps);
    nn_tensor_free(m->w);
    nn_tensor_free(m->b);
}

static float g_x[N * C * H * W];
static int32_t g_y[N];

static void make_data(bool with_nan)
{
    nn_rng r = nn_rng_make(11);
    for (int i = 0; i < N; i++) {
        g_y[i] = i % K;
        for (int j = 0; j < C * H * W; j++)
            g_x[i * C * H * W + j] = 0.5f * (float)g_y[i] - 0.5f + (nn_rng_uniform1(&r) - 0.5f);
    }
    /* every pixel: dropout (p 0.3) cannot zero them all */
    if (with_nan)
        for (int j = 0; j < C * H * W; j++) g_x[NAN_SAMPLE * C * H * W + j] = NAN;
}

typedef struct run_out {
    nn_status status;
    char msg[1024];
    double losses[MAXSTEPS]; /* the epoch's mean loss after each step */
    int steps;
    long long skipped;
    int64_t graph_steps;
    float *params;           /* weights, then optimizer state, on the host */
    size_t nparams;
} run_out;

static void on_event(const nn_train_event *ev, void *user)
{
    run_out *o = user;
    if (ev->kind == NN_TRAIN_STEP && o->steps < MAXSTEPS) o->losses[o->steps++] = ev->loss;
}

static void append(run_out *o, const nn_params *ps)
{
    for (int i = 0; i < ps->n; i++) {
        const nn_tensor *t = ps->p[i].t;
        o->params = realloc(o->params, (o->nparams + t->numel) * sizeof *o->params);
        assert_non_null(o->params);
        assert_int_equal(nn_tensor_read(t, o->params + o->nparams), NN_OK);
        o->nparams += t->numel;
    }
}

/* Two epochs of Adam + cosine with dropout, the graph on or off. */
static void train(bool graph, bool skip, run_out *o)
{
    memset(o, 0, sizeof *o);
    if (graph) setenv("NN_CUDA_GRAPH", "1", 1);
    else unsetenv("NN_CUDA_GRAPH");
    net m;
    net_make(&m);
    nn_array_source *tr = NULL, *ev = NULL;
    nn_array_config ac = {.images_f32 = g_x, .labels = g_y, .n = N, .c = C, .h = H, .w = W, .batch = BATCH,
                          .shuffle = true, .seed = 3};
    assert_int_equal(nn_array_source_new(&tr, &ac), NN_OK);
    ac.shuffle = false;
    assert_int_equal(nn_array_source_new(&ev, &ac), NN_OK);
    nn_batch_source tsrc = nn_array_source_batches(tr), esrc = nn_array_source_batches(ev);
    nn_train_model tm = {.forward = net_forward, .model = &m, .params = &m.ps, .in_c = C, .in_h = H, .in_w = W,
                         .classes = K, .arch = "graph-test"};
    nn_train_recipe rc = {.optim = {.kind = NN_OPT_ADAM, .lr = 0.05f}, .batch_size = BATCH, .epochs = EPOCHS,
                          .seed = 9};
    rc.sched = nn_schedule_make(NN_SCHED_COSINE, rc.optim.lr);
    nn_train_state st = nn_train_state_make(&rc);
    nn_trainer_config tc = {.dev = NN_CUDA, .skip_nonfinite = skip, .on_event = on_event, .user = o};
    nn_trainer *t = NULL;
    assert_int_equal(nn_trainer_new(&t, &tm, &tsrc, &esrc, &st, &tc), NN_OK);
    nn_train_result res;
    o->status = nn_trainer_run(t, &res);
    if (o->status != NN_OK) snprintf(o->msg, sizeof o->msg, "%s", nn_errmsg());
    o->skipped = res.skipped;
    o->graph_steps = nn_trainer_graph_steps(t);
    append(o, &m.ps);
    append(o, nn_optim_state(nn_trainer_optim(t)));
    nn_trainer_free(t);
    nn_array_source_free(tr), nn_array_source_free(ev);
    net_free(&m);
    unsetenv("NN_CUDA_GRAPH");
}

static void assert_same_runs(const run_out *a, const run_out *b)
{
    assert_int_equal(a->status, b->status);
    assert_string_equal(a->msg, b->msg);
    assert_int_equal(a->steps, b->steps);
    assert_memory_equal(a->losses, b->losses, (size_t)a->steps * sizeof a->losses[0]);
    assert_int_equal(a->nparams, b->nparams);
    assert_memory_equal(a->params, b->params, a->nparams * sizeof *a->params);
}

static void test_graph_same_as_plain(void **state)
{
    (void)state;
    NEED_GPU();
    make_data(false);
    static run_out plain, graph;
    train(false, false, &plain);
    train(true, false, &graph);
    assert_int_equal(plain.status, NN_OK);
    assert_int_equal(plain.graph_steps, 0);
    /* per epoch: two plain steps, a capture, two replays, the partial batch plain */
    assert_int_equal(graph.graph_steps, EPOCHS * 3);
    assert_same_runs(&plain, &graph);
    free(plain.params), free(graph.params);
}

static void test_graph_nonfinite_skipped(void **state)
{
    (void)state;
    NEED_GPU();
    make_data(true);
    static run_out plain, graph;
    train(false, true, &plain);
    train(true, true, &graph);
    assert_int_equal(plain.status, NN_OK);
    assert_true(plain.skipped >= EPOCHS); /* the NaN image's batch, once an epoch */
    assert_int_equal(plain.skipped, graph.skipped);
    assert_true(graph.graph_steps > 0);
    assert_same_runs(&plain, &graph);
    free(plain.params), free(graph.params);
}

static void test_graph_nonfinite_stops(void **state)
{
    (void)state;
    NEED_GPU();
    make_data(true);
    static run_out plain, graph;
    train(false, false, &plain);
    train(true, false, &graph);
    assert_int_equal(plain.status, NN_E_NONFINITE);
    assert_same_runs(&plain, &graph); /* the same message: step, epoch, batch, gradient */
    free(plain.params), free(graph.params);
}

int main(void)
{
    /* the capture needs the label check that does not synchronize; both
     * runs use it, so they differ only by the graph */
    setenv("NN_CUDA_LAZY_CHECKS", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_graph_same_as_plain),
        cmocka_unit_test(test_graph_nonfinite_skipped),
        cmocka_unit_test(test_graph_nonfinite_stops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
