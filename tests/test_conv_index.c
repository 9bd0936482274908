/* The implicit-GEMM convolution's index math (core/conv_index.h) on the CPU:
 * (1) every B[k, q] it names, for every conv shape of AlexNet (paper, groups 1
 * and 2, and the default model) and ragged ones, is exactly the element the
 * CPU's im2col reads: x copied into a zero-padded plane, read at
 * (oy*SH + i, ox*SW + j) (ops/conv2d_gemm.c); (2) a float64 convolution built
 * from it matches the CPU conv2d op on the shapes small enough to run whole;
 * (3) the data gradient's transposed gather names, for every dx position and
 * tap, the dy element whose forward tap reads that position; (4) walking K
 * by a step (the GPU kernels' way, without divisions) lands where the
 * division formulas do. */
#include <limits.h>

#include "core/conv_index.h"
#include "tests/conv_shapes.h"
#include "tests/testutil.h"

/* x's flat indices in padded planes (-1 in the padding): (N, C, H+2PH, W+2PW) */
static long long *padded_index(const nn_conv2d_geom *g)
{
    const int hp = g->h + 2 * g->ph, wp = g->w + 2 * g->pw;
    long long *xp = malloc((size_t)g->n * g->c * hp * wp * sizeof *xp);
    assert_non_null(xp);
    for (long long plane = 0; plane < (long long)g->n * g->c; plane++)
        for (int y = 0; y < hp; y++)
            for (int x = 0; x < wp; x++) {
                const int iy = y - g->ph, ix = x - g->pw;
                const bool in = iy >= 0 && iy < g->h && ix >= 0 && ix < g->w;
                xp[(plane * hp + y) * wp + x] = in ? (plane * g->h + iy) * g->w + ix : -1;
            }
    return xp;
}

static void test_gather_matches_im2col(void **state)
{
    (void)state;
    for (int t = 0; t < CONV_SHAPES; t++) {
        const nn_conv2d_geom g = conv_shape_geom(&conv_shapes[t]);
        const int hp = g.h + 2 * g.ph, wp = g.w + 2 * g.pw, cg = g.c / g.groups, kg = cg * g.kh * g.kw;
        const int cols = g.n * g.oh * g.ow;
        long long *xp = padded_index(&g), pads = 0;
        for (int gi = 0; gi < g.groups; gi++)
            for (int k = 0; k < kg; k++) {
                const nn_conv_row r = nn_conv_row_of(g, gi, k);
                const int c = gi * cg + k / (g.kh * g.kw), i = k / g.kw % g.kh, j = k % g.kw;
                for (int q = 0; q < cols; q++) {
                    const int s = q / (g.oh * g.ow), oy = q / g.ow % g.oh, ox = q % g.ow;
                    const long long want =
                        xp[(((long long)s * g.c + c) * hp + oy * g.sh + i) * wp + ox * g.sw + j];
                    const long long got = nn_conv_src(g, nn_conv_col_of(g, q), r);
                    if (got != want)
                        fail_msg("%s: B[%d, %d] of group %d reads x[%lld], im2col reads x[%lld]",
                                 conv_shapes[t].what, k, q, gi, got, want);
                    pads += got < 0;
                }
            }
        /* the padding is reached where the shape has any (a rule that never pads would pass above only if wrong) */
        if ((g.ph || g.pw) && !pads) fail_msg("%s: no column read the padding", conv_shapes[t].what);
        free(xp);
    }
}

/* inv[i * len + v] = the output t whose tap i reads position v (t*stride -
 * pad + i = v: the forward's definition, walked from the outputs), or -1 */
static int *tap_inverse(int out, int taps, int len, int stride, int pad)
{
    int *inv = malloc((size_t)taps * len * sizeof *inv);
    assert_non_null(inv);
    for (int k = 0; k < taps * len; k++) inv[k] = -1;
    for (int t = 0; t < out; t++)
        for (int i = 0; i < taps; i++) {
            const int v = t * stride - pad + i;
            if (v >= 0 && v < len) inv[i * len + v] = t;
        }
    return inv;
}

static void test_transposed_gather(void **state)
{
    (void)state;
    for (int t = 0; t < CONV_SHAPES; t++) {
        const nn_conv2d_geom g = conv_shape_geom(&conv_shapes[t]);
        const int og = g.oc / g.groups, kg = og * g.kh * g.kw, cols = g.n * g.h * g.w;
        int *oy_of = tap_inverse(g.oh, g.kh, g.h, g.sh, g.ph), *ox_of = tap_inverse(g.ow, g.kw, g.w, g.sw, g.pw);
        long long taps = 0;
        for (int gi = 0; gi < g.groups; gi++)
            for (int k = 0; k < kg; k++) {
                const int ol = k / (g.kh * g.kw), o = gi * og + ol, i = k / g.kw % g.kh, j = k % g.kw;
                /* the paper's shapes: each group's first and last output channel (all taps; the
                 * channel is only an offset), one sample: conv1 in full would be 1.2e9 checks */
                if (conv_shapes[t].big && ol != 0 && ol != og - 1) continue;
                const nn_conv_row r = nn_convt_row_of(g, gi, k);
                for (int q = 0; q < (conv_shapes[t].big ? g.h * g.w : cols); q++) {
                    const int s = q / (g.h * g.w), oy = oy_of[i * g.h + q / g.w % g.h], ox = ox_of[j * g.w + q % g.w];
                    const long long want = oy < 0 || ox < 0 ? -1 : (((long long)s * g.oc + o) * g.oh + oy) * g.ow + ox;
                    const long long got = nn_convt_src(g, nn_convt_col_of(g, q), r);
                    if (got != want)
                        fail_msg("%s: B'[%d, %d] of group %d reads dy[%lld], the forward's taps give dy[%lld]",
                                 conv_shapes[t].what, k, q, gi, got, want);
                    taps += got >= 0;
                }
            }
        if (!taps) fail_msg("%s: no tap found", conv_shapes[t].what);
        free(oy_of);
        free(ox_of);
    }
}

/* y = w B + b in float64, B gathered by the index math; mag: the sum of the
 * |terms| of each output (the scale of its float32 rounding) */
static double *conv_ref(const nn_conv2d_geom *g, const float *x, const float *w, const float *b, double **mag)
{
    const int cg = g->c / g->groups, og = g->oc / g->groups, kg = cg * g->kh * g->kw, p = g->oh * g->ow;
    double *y = calloc((size_t)g->n * g->oc * p, sizeof *y);
    *mag = calloc((size_t)g->n * g->oc * p, sizeof **mag);
    assert_non_null(y);
    assert_non_null(*mag);
    for (int q = 0; q < g->n * p; q++) {
        const nn_conv_col col = nn_conv_col_of(*g, q);
        const int s = q / p, r = q % p;
        for (int o = 0; o < g->oc; o++) {
            const int gi = o / og;
            double sum = b ? b[o] : 0.0, abs_sum = b ? fabs(b[o]) : 0.0;
            for (int k = 0; k < kg; k++) {
                const long long src = nn_conv_src(*g, col, nn_conv_row_of(*g, gi, k));
                if (src < 0) continue;
                sum += (double)w[(size_t)o * kg + k] * x[src];
                abs_sum += fabs((double)w[(size_t)o * kg + k] * x[src]);
            }
            y[((size_t)s * g->oc + o) * p + r] = sum;
            (*mag)[((size_t)s * g->oc + o) * p + r] = abs_sum;
        }
    }
    return y;
}

static void test_conv_matches_op(void **state)
{
    (void)state;
    nn_ctx *ctx = nn_ctx_new();
    assert_non_null(ctx);
    for (int t = 0; t < CONV_SHAPES; t++) {
        const conv_shape *cs = &conv_shapes[t];
        if (cs->big) continue; /* the gather test covers them; whole convs in float64 would take seconds */
        const nn_conv2d_geom g = conv_shape_geom(cs);
        nn_tensor *x = tu_rand4(700 + t, g.n, g.c, g.h, g.w), *w = tu_rand4(800 + t, g.oc, g.c / g.groups, g.kh, g.kw);
        const int bs[1] = {g.oc};
        nn_tensor *b = tu_rand(900 + t, -1.0f, 1.0f, 1, bs);
        nn_tensor *y = nn_conv2d(ctx, x, w, b, cs->p);
        if (!y) fail_msg("%s: conv2d: %s", cs->what, nn_ctx_errmsg(ctx));
        double *mag;
        double *ref = conv_ref(&g, x->data, w->data, b->data, &mag);
        /* against the scale of each sum, not its value: the CPU op may take
         * Winograd, whose rounding is a fraction of the sum of |terms| */
        const float *got = y->data;
        for (size_t i = 0; i < y->numel; i++)
            if (!(fabs((double)got[i] - ref[i]) <= TU_CONV_MAG_RTOL * mag[i] + 1e-7))
                fail_msg("%s: element %zu is %.9g, reference %.9g (sum of |terms| %.3g)", cs->what, i,
                         (double)got[i], ref[i], mag[i]);
        free(ref);
        free(mag);
        nn_ctx_reset(ctx);
        nn_tensor_free(x);
        nn_tensor_free(w);
        nn_tensor_free(b);
    }
    nn_ctx_free(ctx);
}

/* Steps the kernels use (2: the TF32 kernel's rows per thread; 32: a slice)
 * and ones that carry on every axis at once or span whole planes. */
static int walk_steps(int per_plane, int *d)
{
    const int cand[] = {1, 2, 3, 7, 32, per_plane - 1, per_plane, per_plane + 1, 2 * per_plane + 3};
    int n = 0;
    for (size_t i = 0; i < sizeof cand / sizeof *cand; i++)
        if (cand[i] > 0) d[n++] = cand[i];
    return n;
}

static void expect_row(const char *what, const char *rule, int k, nn_conv_row got, nn_conv_row want)
{
    if (got.off != want.off || got.i != want.i || got.j != want.j)
        fail_msg("%s: %s row %d walked to (plane %lld, tap %d, %d), the formula gives (%lld, %d, %d)", what, rule, k,
                 got.off, got.i, got.j, want.off, want.i, want.j);
}

static void test_walks_match_formulas(void **state)
{
    (void)state;
    for (int t = 0; t < CONV_SHAPES; t++) {
        const conv_shape *cs = &conv_shapes[t];
        const nn_conv2d_geom g = conv_shape_geom(cs);
        const int khw = g.kh * g.kw, rows = g.c / g.groups * khw, trows = g.oc / g.groups * khw;
        const int cols = g.n * g.oh * g.ow;
        int d[16];
        const int nd_rows = walk_steps(khw, d);
        for (int di = 0; di < nd_rows; di++) {
            const int gi = g.groups - 1, k0 = d[di] % 5; /* not only from row 0 */
            nn_conv_row r = nn_conv_row_of(g, gi, k0), rt = nn_convt_row_of(g, gi, k0);
            const nn_conv_row_step s = nn_conv_row_step_of(g, d[di], (long long)g.h * g.w);
            const nn_conv_row_step st = nn_conv_row_step_of(g, d[di], (long long)g.oh * g.ow);
            for (int k = k0; k < rows + 2 * d[di]; k += d[di]) { /* past K too: the kernels walk on */
                expect_row(cs->what, "forward", k, r, nn_conv_row_of(g, gi, k));
                nn_conv_row_next(g, &r, s);
            }
            for (int k = k0; k < trows + 2 * d[di]; k += d[di]) {
                expect_row(cs->what, "transposed", k, rt, nn_convt_row_of(g, gi, k));
                nn_conv_row_next(g, &rt, st);
            }
        }
        const int nd_cols = walk_steps(g.oh * g.ow, d);
        for (int di = 0; di < nd_cols; di++) {
            const int q0 = d[di] % 3;
            nn_conv_col c = nn_conv_col_of(g, q0);
            const nn_conv_col_step s = nn_conv_col_step_of(g, d[di]);
            /* the paper's shapes: the first 20,000 columns (conv1 has 387,200) */
            const int end = cs->big && cols > 20000 ? 20000 : cols + 2 * d[di];
            for (int q = q0; q < end; q += d[di]) {
                const nn_conv_col want = nn_conv_col_of(g, q);
                if (c.base != want.base || c.y0 != want.y0 || c.x0 != want.x0)
                    fail_msg("%s: column %d walked to (sample %lld, corner %d, %d), the formula gives (%lld, %d, %d)",
                             cs->what, q, c.base, c.y0, c.x0, want.base, want.y0, want.x0);
                nn_conv_col_next(g, &c, s);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gather_matches_im2col),
        cmocka_unit_test(test_conv_matches_op),
        cmocka_unit_test(test_transposed_gather),
        cmocka_unit_test(test_walks_match_formulas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
