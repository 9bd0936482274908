/* conv2d on the CPU, the Winograd half: F(2x2, 3x3) weight, input and output
 * transforms and the 16 GEMMs between them, for 3x3 (and 5x5 as four 3x3
 * blocks) stride-1 layers; the drivers and the choice of path are in
 * ops/conv2d_gemm.c. */
#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "ops/conv2d_cpu.h"

/* ---- Winograd F(2x2, 3x3) for 3x3 stride-1 pad-1 layers (Lavin & Gray 2016) ----
 * Each 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A of its 4x4 input tile d:
 * 16 products per tile and channel pair instead of 36, done as 16 GEMMs
 * (cout, cin) x (cin, tiles). A 5x5 kernel (pad 2), zero-padded to 6x6, is four
 * 3x3 blocks over shifted input tiles, stacked along cin: 64 products instead
 * of 100. The transforms only add and halve, so the error
 * stays at float rounding of the sums, like the direct product. */

/* U[xi][o][blk*cg + c] = (G w_blk[o][c] G^T)[xi] for one group, w (og, cg, K, K)
 * as stored, K = 3 (one block) or 5 (zero-padded to 6x6: four 3x3 blocks, blk
 * = 2a + b for rows 3a.., columns 3b..). With flip, the dX kernel: the same
 * for w[o][c] rotated 180 degrees, as U[xi][c][blk*og + o]. */
void nn_wino_weights(const float *w, int og, int cg, int K, bool flip, float *U)
{
    const int nbk = K == 5 ? 4 : 1;
    const int rows = flip ? cg : og, cols = (flip ? og : cg) * nbk;
#pragma omp parallel for collapse(2) if ((size_t)og * cg > 4096)
    for (int o = 0; o < og; o++) {
        for (int c = 0; c < cg; c++) {
            const float *k = w + ((size_t)o * cg + c) * K * K;
            for (int blk = 0; blk < nbk; blk++) {
                float f[9], t[4][3], u[4][4];
                for (int p = 0; p < 3; p++)
                    for (int q = 0; q < 3; q++) {
                        const int kp = 3 * (blk / 2) + p, kq = 3 * (blk % 2) + q;
                        f[3 * p + q] = kp < K && kq < K ? k[flip ? (K - 1 - kp) * K + (K - 1 - kq) : kp * K + kq] : 0.0f;
                    }
                for (int j = 0; j < 3; j++) { /* G f: rows */
                    t[0][j] = f[j];
                    t[1][j] = 0.5f * (f[j] + f[3 + j] + f[6 + j]);
                    t[2][j] = 0.5f * (f[j] - f[3 + j] + f[6 + j]);
                    t[3][j] = f[6 + j];
                }
                for (int i = 0; i < 4; i++) { /* (G f) G^T: columns */
                    u[i][0] = t[i][0];
                    u[i][1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                    u[i][2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                    u[i][3] = t[i][2];
                }
                const size_t r = flip ? (size_t)c : (size_t)o;
                const size_t q = (size_t)blk * (flip ? og : cg) + (flip ? (size_t)o : (size_t)c);
                for (int xi = 0; xi < 16; xi++) U[((size_t)xi * rows + r) * cols + q] = u[xi / 4][xi % 4];
            }
        }
    }
}

/* out[n][o] (=, or += with acc) sum_c corr_KxK(in[n][c], kernel of U) (+ bias[o]),
 * same H x W, padding K/2, for nb images: in at its first channel with images
 * in_img floats apart, out likewise. U (16, co, nbk * ci) from wino_weights;
 * V, M: one worker's buffers. */
/* V[xi][blk*ci + c][tile] = (B^T d B)[xi] of every 4x4 input tile d (the
 * forward's, for block blk) of nb images (in at the first channel). */
void nn_wino_in(const float *in, size_t in_img, int ci, int H, int W, int nb, int K, float *V)
{
    const int th = (H + 1) / 2, tw = (W + 1) / 2, tpi = th * tw, nt = nb * tpi;
    const int nbk = K == 5 ? 4 : 1, pad = K / 2, cie = nbk * ci;
    const size_t hw = (size_t)H * W;
    for (int b = 0; b < nb; b++) {
        for (int cb = 0; cb < cie; cb++) {
            const int blk = cb / ci, c = cb % ci;
            const float *x = in + (size_t)b * in_img + (size_t)c * hw;
            for (int ty = 0; ty < th; ty++) {
                for (int tx = 0; tx < tw; tx++) {
                    const int h0 = 2 * ty + 3 * (blk / 2) - pad, w0 = 2 * tx + 3 * (blk % 2) - pad;
                    float d[4][4], t[4][4];
                    if (h0 >= 0 && w0 >= 0 && h0 + 3 < H && w0 + 3 < W) {
                        for (int i = 0; i < 4; i++)
                            for (int j = 0; j < 4; j++) d[i][j] = x[(size_t)(h0 + i) * W + w0 + j];
                    } else {
                        for (int i = 0; i < 4; i++)
                            for (int j = 0; j < 4; j++) {
                                const int h = h0 + i, ww = w0 + j;
                                d[i][j] = h >= 0 && h < H && ww >= 0 && ww < W ? x[(size_t)h * W + ww] : 0.0f;
                            }
                    }
                    for (int j = 0; j < 4; j++) { /* B^T d */
                        t[0][j] = d[0][j] - d[2][j];
                        t[1][j] = d[1][j] + d[2][j];
                        t[2][j] = d[2][j] - d[1][j];
                        t[3][j] = d[1][j] - d[3][j];
                    }
                    const size_t p = (size_t)b * tpi + (size_t)ty * tw + tx;
                    float *v = V + (size_t)cb * nt + p;
                    const size_t xs = (size_t)cie * nt;
                    for (int i = 0; i < 4; i++) { /* (B^T d) B */
                        v[(size_t)(4 * i + 0) * xs] = t[i][0] - t[i][2];
                        v[(size_t)(4 * i + 1) * xs] = t[i][1] + t[i][2];
                        v[(size_t)(4 * i + 2) * xs] = t[i][2] - t[i][1];
                        v[(size_t)(4 * i + 3) * xs] = t[i][1] - t[i][3];
                    }
                }
            }
        }
    }
}

void nn_wino_conv(const float *in, size_t in_img, int ci, int H, int W, int nb, int K, const float *U,
                      int co, float *out, size_t out_img, const float *bias, bool acc, float *V, float *M)
{
    const int th = (H + 1) / 2, tw = (W + 1) / 2, tpi = th * tw, nt = nb * tpi;
    const int cie = (K == 5 ? 4 : 1) * ci;
    const size_t hw = (size_t)H * W;
    nn_wino_in(in, in_img, ci, H, W, nb, K, V);
    for (int xi = 0; xi < 16; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, co, nt, cie, 1.0f, U + (size_t)xi * co * cie, cie,
                    V + (size_t)xi * cie * nt, nt, 0.0f, M + (size_t)xi * co * nt, nt);
    const size_t ms = (size_t)co * nt;
    for (int b = 0; b < nb; b++) {
        for (int o = 0; o < co; o++) {
            float *y = out + (size_t)b * out_img + (size_t)o * hw;
            const float bo = bias ? bias[o] : 0.0f;
            for (int ty = 0; ty < th; ty++) {
                for (int tx = 0; tx < tw; tx++) {
                    const float *m = M + (size_t)o * nt + (size_t)b * tpi + (size_t)ty * tw + tx;
                    float t[2][4], r[2][2];
                    for (int j = 0; j < 4; j++) { /* A^T m */
                        t[0][j] = m[(size_t)j * ms] + m[(size_t)(4 + j) * ms] + m[(size_t)(8 + j) * ms];
                        t[1][j] = m[(size_t)(4 + j) * ms] - m[(size_t)(8 + j) * ms] - m[(size_t)(12 + j) * ms];
                    }
                    for (int i = 0; i < 2; i++) { /* (A^T m) A */
                        r[i][0] = t[i][0] + t[i][1] + t[i][2];
                        r[i][1] = t[i][1] - t[i][2] - t[i][3];
                    }
                    for (int i = 0; i < 2 && 2 * ty + i < H; i++)
                        for (int j = 0; j < 2 && 2 * tx + j < W; j++) {
                            float *yp = y + (size_t)(2 * ty + i) * W + 2 * tx + j;
                            *yp = acc ? *yp + r[i][j] : r[i][j] + bo;
                        }
                }
            }
        }
    }
}

/* dW by the transposed algorithm, F(3x3, 2x2): for a 3x3 block, the gradient
 * is G^T [sum over tiles and images (A dy A^T) . (B^T d B)] G with dy the tile's
 * 2x2 output gradient and d the forward's input tile; the sum is 16 GEMMs
 * (cout, tiles) x (tiles, blocks * cin) into Acc[xi][o][blk*ci + c]. */
void nn_wino_dw_acc(const float *x, size_t x_img, int ci, const float *dy, size_t dy_img, int co, int H,
                        int W, int nb, int K, float *Acc, float *V, float *Y)
{
    const int th = (H + 1) / 2, tw = (W + 1) / 2, tpi = th * tw, nt = nb * tpi;
    const int cie = (K == 5 ? 4 : 1) * ci;
    const size_t hw = (size_t)H * W, ys = (size_t)co * nt;
    nn_wino_in(x, x_img, ci, H, W, nb, K, V);
    for (int b = 0; b < nb; b++) {
        for (int o = 0; o < co; o++) {
            const float *g = dy + (size_t)b * dy_img + (size_t)o * hw;
            for (int ty = 0; ty < th; ty++) {
                for (int tx = 0; tx < tw; tx++) {
                    float e[2][2], t[4][2];
                    for (int i = 0; i < 2; i++)
                        for (int j = 0; j < 2; j++) {
                            const int h = 2 * ty + i, ww = 2 * tx + j;
                            e[i][j] = h < H && ww < W ? g[(size_t)h * W + ww] : 0.0f;
                        }
                    for (int j = 0; j < 2; j++) { /* A e */
                        t[0][j] = e[0][j];
                        t[1][j] = e[0][j] + e[1][j];
                        t[2][j] = e[0][j] - e[1][j];
                        t[3][j] = -e[1][j];
                    }
                    float *y = Y + (size_t)o * nt + (size_t)b * tpi + (size_t)ty * tw + tx;
                    for (int i = 0; i < 4; i++) { /* (A e) A^T */
                        y[(size_t)(4 * i + 0) * ys] = t[i][0];
                        y[(size_t)(4 * i + 1) * ys] = t[i][0] + t[i][1];
                        y[(size_t)(4 * i + 2) * ys] = t[i][0] - t[i][1];
                        y[(size_t)(4 * i + 3) * ys] = -t[i][1];
                    }
                }
            }
        }
    }
    for (int xi = 0; xi < 16; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, co, cie, nt, 1.0f, Y + (size_t)xi * ys, nt,
                    V + (size_t)xi * cie * nt, nt, 1.0f, Acc + (size_t)xi * co * cie, cie);
}

/* dw[o][c] (K x K) += G^T Acc[.][o][blk*ci + c] G for each 3x3 block, the
 * padding rows and columns of a 5x5 kernel dropped. */
void nn_wino_dw_out(const float *Acc, int co, int ci, int K, float *dw)
{
    const int nbk = K == 5 ? 4 : 1, cie = nbk * ci;
    const size_t xs = (size_t)co * cie;
#pragma omp for collapse(2) schedule(static)
    for (int o = 0; o < co; o++) {
        for (int c = 0; c < ci; c++) {
            for (int blk = 0; blk < nbk; blk++) {
                const float *m = Acc + (size_t)o * cie + (size_t)blk * ci + c;
                float t[3][4], r[3][3];
                for (int j = 0; j < 4; j++) { /* G^T m */
                    const float m0 = m[(size_t)j * xs], m1 = m[(size_t)(4 + j) * xs];
                    const float m2 = m[(size_t)(8 + j) * xs], m3 = m[(size_t)(12 + j) * xs];
                    t[0][j] = m0 + 0.5f * (m1 + m2);
                    t[1][j] = 0.5f * (m1 - m2);
                    t[2][j] = 0.5f * (m1 + m2) + m3;
                }
                for (int i = 0; i < 3; i++) { /* (G^T m) G */
                    r[i][0] = t[i][0] + 0.5f * (t[i][1] + t[i][2]);
                    r[i][1] = 0.5f * (t[i][1] - t[i][2]);
                    r[i][2] = 0.5f * (t[i][1] + t[i][2]) + t[i][3];
                }
                float *k = dw + ((size_t)o * ci + c) * K * K;
                for (int p = 0; p < 3; p++)
                    for (int q = 0; q < 3; q++) {
                        const int kp = 3 * (blk / 2) + p, kq = 3 * (blk % 2) + q;
                        if (kp < K && kq < K) k[kp * K + kq] += r[p][q];
                    }
            }
        }
    }
}
