// The GPU's implicit-GEMM conv2d kernel (cuda/conv2d_implicit.cuh), forward
// and data gradient, run on the CPU, so its tiling, gathers and double
// buffering are checked where no GPU is: each block's threads are std::threads, __syncthreads a std::barrier,
// __shared__ arrays statics (blocks run one at a time). Both tile shapes, on
// the default model's conv shapes and ragged ones (tests/conv_shapes.h has
// the full list; the GPU runs it in test_cuda), against a direct float64
// convolution that does not use core/conv_index.h. Plain C++20, no cmocka.
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <thread>
#include <vector>

extern "C" {
#include "core/conv_index.h"
}

// what the kernel needs of CUDA, on the host
namespace {
struct float4 {
    float x, y, z, w;
};
float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
struct uint3_ {
    unsigned x, y, z;
};
thread_local uint3_ threadIdx, blockIdx;
std::barrier<> *block_barrier;
using std::min;
} // namespace
#define __global__
#define __launch_bounds__(n)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __syncthreads() block_barrier->arrive_and_wait()
#define __ldg(p) (*(p))
#include "cuda/conv2d_implicit.cuh"

// The sum of |terms| bounds the two fp32 sums' rounding: 1e-5 of it, as test_cuda's CONV_IMPLICIT_TOL.
#define EMU_TOL 1e-5

template <class G, int BM, int BN, int BK, int TM, int TN>
static void launch(const nn_conv2d_geom &g, const float *in, const float *w, const float *b, float *out)
{
    const int cols = g.n * G::plane(g), m = G::m(g), nt = (BM / TM) * (BN / TN);
    // one thread per GPU thread for the whole grid, blocks in turn: a barrier
    // after each block, so none starts on the statics before all have left them
    std::barrier<> bar(nt);
    block_barrier = &bar;
    std::vector<std::thread> threads;
    for (int t = 0; t < nt; t++)
        threads.emplace_back([&, t] {
            threadIdx = {(unsigned)t, 0, 0};
            for (int z = 0; z < g.groups; z++)
                for (int by = 0; by < (m + BM - 1) / BM; by++)
                    for (int bx = 0; bx < (cols + BN - 1) / BN; bx++) {
                        blockIdx = {(unsigned)bx, (unsigned)by, (unsigned)z};
                        conv_implicit_kernel<G, BM, BN, BK, TM, TN>(g, in, w, b, out);
                        bar.arrive_and_wait();
                    }
        });
    for (auto &t : threads) t.join();
}

static float uniform(unsigned long long &s) // xorshift64: a fixed stream in [-1, 1)
{
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return (float)((s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

// 0 when every output of the tile shape is within EMU_TOL of the direct convolution
static int check(const nn_conv2d_geom &g, bool big, bool bias, const char *what)
{
    const int cg = g.c / g.groups, og = g.oc / g.groups, p = g.oh * g.ow;
    std::vector<float> x((size_t)g.n * g.c * g.h * g.w), w((size_t)g.oc * cg * g.kh * g.kw), b(g.oc);
    std::vector<float> y((size_t)g.n * g.oc * p, NAN); // every element must be written
    unsigned long long s = 88172645463325252ull;
    for (auto *v : {&x, &w, &b})
        for (float &e : *v) e = uniform(s);
    if (big)
        launch<conv_fwd_gather, 128, 128, 8, 8, 8>(g, x.data(), w.data(), bias ? b.data() : nullptr, y.data());
    else
        launch<conv_fwd_gather, 64, 64, 16, 4, 4>(g, x.data(), w.data(), bias ? b.data() : nullptr, y.data());
    for (int n = 0; n < g.n; n++)
        for (int o = 0; o < g.oc; o++)
            for (int oy = 0; oy < g.oh; oy++)
                for (int ox = 0; ox < g.ow; ox++) {
                    double sum = bias ? b[o] : 0.0, mag = std::fabs(sum);
                    for (int c = 0; c < cg; c++)
                        for (int i = 0; i < g.kh; i++)
                            for (int j = 0; j < g.kw; j++) {
                                const int yy = oy * g.sh - g.ph + i, xx = ox * g.sw - g.pw + j;
                                if (yy < 0 || yy >= g.h || xx < 0 || xx >= g.w) continue;
                                const double t = (double)w[(((size_t)o * cg + c) * g.kh + i) * g.kw + j] *
                                                 x[(((size_t)n * g.c + o / og * cg + c) * g.h + yy) * g.w + xx];
                                sum += t;
                                mag += std::fabs(t);
                            }
                    const double got = y[((size_t)n * g.oc + o) * p + oy * g.ow + ox];
                    if (!(std::fabs(got - sum) <= EMU_TOL * (mag + 1e-30))) {
                        std::printf("FAIL %s, %s tiles%s: y[%d, %d, %d, %d] is %.9g, reference %.9g\n", what,
                                    big ? "128x128" : "64x64", bias ? "" : ", no bias", n, o, oy, ox, got, sum);
                        return 1;
                    }
                }
    std::printf("ok   %s, %s tiles%s\n", what, big ? "128x128" : "64x64", bias ? "" : ", no bias");
    return 0;
}

// dx += w^T dy by the data-gradient gather; dx starts random (the kernel accumulates)
static int check_dx(const nn_conv2d_geom &g, bool big, const char *what)
{
    const int cg = g.c / g.groups, og = g.oc / g.groups, hw = g.h * g.w;
    std::vector<float> dy((size_t)g.n * g.oc * g.oh * g.ow), w((size_t)g.oc * cg * g.kh * g.kw);
    std::vector<float> dx((size_t)g.n * g.c * hw);
    unsigned long long s = 1181783497276652981ull;
    for (auto *v : {&dy, &w, &dx})
        for (float &e : *v) e = uniform(s);
    const std::vector<float> dx0 = dx;
    if (big)
        launch<conv_dx_gather, 128, 128, 8, 8, 8>(g, dy.data(), w.data(), nullptr, dx.data());
    else
        launch<conv_dx_gather, 64, 64, 16, 4, 4>(g, dy.data(), w.data(), nullptr, dx.data());
    for (int n = 0; n < g.n; n++)
        for (int c = 0; c < g.c; c++)
            for (int yy = 0; yy < g.h; yy++)
                for (int xx = 0; xx < g.w; xx++) {
                    const size_t at = (((size_t)n * g.c + c) * g.h + yy) * g.w + xx;
                    double sum = dx0[at], mag = std::fabs(sum);
                    for (int o = c / cg * og; o < (c / cg + 1) * og; o++)
                        for (int oy = 0; oy < g.oh; oy++) {
                            const int i = yy - oy * g.sh + g.ph; // the tap of output row oy that reads row yy
                            if (i < 0 || i >= g.kh) continue;
                            for (int ox = 0; ox < g.ow; ox++) {
                                const int j = xx - ox * g.sw + g.pw;
                                if (j < 0 || j >= g.kw) continue;
                                const double t = (double)w[(((size_t)o * cg + c % cg) * g.kh + i) * g.kw + j] *
                                                 dy[(((size_t)n * g.oc + o) * g.oh + oy) * g.ow + ox];
                                sum += t;
                                mag += std::fabs(t);
                            }
                        }
                    if (!(std::fabs(dx[at] - sum) <= EMU_TOL * (mag + 1e-30))) {
                        std::printf("FAIL %s, dx, %s tiles: dx[%d, %d, %d, %d] is %.9g, reference %.9g\n", what,
                                    big ? "128x128" : "64x64", n, c, yy, xx, dx[at], sum);
                        return 1;
                    }
                }
    std::printf("ok   %s, dx, %s tiles\n", what, big ? "128x128" : "64x64");
    return 0;
}

int main()
{
    struct shape {
        int n, c, h, w, oc, kh, kw, sh, sw, ph, pw, groups;
        const char *what;
    };
    static const shape shapes[] = {
        // (conv1's 11x11/4 p2 smaller: its data gradient at full size takes ~30 s emulated on 2 cores)
        {1, 1, 32, 32, 16, 11, 11, 4, 4, 2, 2, 1, "conv1 11x11/4 p2, 32x32, 16 outputs"},
        {2, 48, 7, 7, 128, 5, 5, 1, 1, 2, 2, 2, "default conv2 5x5 p2 g2"},
        {2, 192, 3, 3, 192, 3, 3, 1, 1, 1, 1, 2, "default conv4 3x3 p1 g2"},
        {3, 5, 17, 13, 7, 3, 2, 2, 3, 1, 2, 1, "ragged 3x2 stride 2x3 pad 1x2"},
        {2, 6, 9, 11, 6, 3, 3, 1, 1, 1, 1, 6, "ragged depthwise"},
        {3, 4, 5, 4, 70, 7, 6, 1, 1, 3, 3, 2, "ragged kernel wider than the input, g2"},
        {3, 3, 31, 29, 129, 1, 1, 2, 2, 0, 0, 1, "ragged 1x1 stride 2, 129 outputs"},
        {1, 9, 15, 15, 65, 11, 11, 4, 4, 2, 2, 1, "ragged 11x11/4, 65 outputs"},
    };
    int bad = 0;
    for (const shape &c : shapes) {
        const nn_conv2d_geom g = {c.n, c.c, c.h, c.w, c.oc, c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.groups,
                                  (c.h + 2 * c.ph - c.kh) / c.sh + 1, (c.w + 2 * c.pw - c.kw) / c.sw + 1, false};
        for (int big = 0; big < 2; big++) bad += check(g, big, true, c.what) + check_dx(g, big, c.what);
        bad += check(g, false, false, c.what);
    }
    std::printf("%d failed\n", bad);
    return bad != 0;
}
