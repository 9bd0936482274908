/* How the Fashion-MNIST loader turns a (c, h, w) byte image into a
 * normalized (c, size, size) float sample, one pixel at a time, written once
 * for C and CUDA: io/dataset.c's loader and CPU batch kernel and
 * cuda/data.cu's kernel include this file, so a device-resident data set
 * builds the CPU loader's batches bit for bit. Pixel (i, j) of channel c:
 *   (si, sj) = (i + dy, (flip ? size-1-j : j) + dx)   (the augmentation)
 *   v = bilinear(image, si, sj) (half-pixel centres), 0 outside the image
 *   x = v * inv - off,  inv = 1 / (255 std), off = mean / std
 * Products and sums are rounded one by one on the GPU (no FMA contraction),
 * as plain C rounds them. Internal, not installed. */
#ifndef NN_IO_SAMPLE_H
#define NN_IO_SAMPLE_H

#include <stdint.h>

#include "core/backend.h"
#include "core/philox.h"

#if defined(__CUDA_ARCH__) || defined(NN_CUDA_EMU) /* NN_CUDA_EMU: tests/cuda_emu */
#define NN_SMUL(a, b) __fmul_rn((a), (b))
#define NN_SADD(a, b) __fadd_rn((a), (b))
#define NN_SSUB(a, b) __fsub_rn((a), (b))
#else
#define NN_SMUL(a, b) ((a) * (b))
#define NN_SADD(a, b) ((a) + (b))
#define NN_SSUB(a, b) ((a) - (b))
#endif

#define NN_AUG_KEY 0xA06D0A7Aull /* the augmentation's Philox key, xor the seed */

/* Pixel (i, j) of a (sh, sw) byte plane resized by (ry, rx) = (sh / dh, sw / dw). */
NN_HD float nn_bilinear_at(const uint8_t *src, int sh, int sw, float ry, float rx, int i, int j)
{
    float fy = NN_SSUB(NN_SMUL((float)i + 0.5f, ry), 0.5f);
    if (fy < 0) fy = 0;
    const int y0 = (int)fy, y1 = y0 + 1 < sh ? y0 + 1 : sh - 1;
    const float wy = fy - (float)y0;
    float fx = NN_SSUB(NN_SMUL((float)j + 0.5f, rx), 0.5f);
    if (fx < 0) fx = 0;
    const int x0 = (int)fx, x1 = x0 + 1 < sw ? x0 + 1 : sw - 1;
    const float wx = fx - (float)x0;
    const float top = NN_SADD(NN_SMUL((float)src[y0 * sw + x0], 1.0f - wx), NN_SMUL((float)src[y0 * sw + x1], wx));
    const float bot = NN_SADD(NN_SMUL((float)src[y1 * sw + x0], 1.0f - wx), NN_SMUL((float)src[y1 * sw + x1], wx));
    return NN_SADD(NN_SMUL(top, 1.0f - wy), NN_SMUL(bot, wy));
}

/* The augmentation of the sample at position pos of epoch `epoch`: a shift
 * by up to size/16 pixels each way and a horizontal flip. */
NN_HD void nn_sample_aug(const nn_u8_batch_geom *g, int pos, int *dx, int *dy, int *flip)
{
    *dx = *dy = *flip = 0;
    if (!g->augment) return;
    const nn_philox_out r = nn_philox(((uint64_t)g->epoch << 32) | (uint32_t)pos, g->seed ^ NN_AUG_KEY);
    const int P = g->size / 16;
    *dx = (int)(r.v[0] % (uint32_t)(2 * P + 1)) - P;
    *dy = (int)(r.v[1] % (uint32_t)(2 * P + 1)) - P;
    *flip = (int)(r.v[2] & 1);
}

/* Output pixel (i, j) of one channel plane (h, w bytes) under that augmentation. */
NN_HD float nn_sample_pixel(const nn_u8_batch_geom *g, const uint8_t *plane, int dx, int dy, int flip, int i,
                            int j)
{
    const int S = g->size, si = i + dy, sj = (flip ? S - 1 - j : j) + dx;
    float v = 0.0f;
    if (si >= 0 && si < S && sj >= 0 && sj < S)
        v = S == g->h && S == g->w ? (float)plane[si * S + sj]
                                   : nn_bilinear_at(plane, g->h, g->w, g->ry, g->rx, si, sj);
    return NN_SSUB(NN_SMUL(v, g->inv), g->off);
}

#endif
