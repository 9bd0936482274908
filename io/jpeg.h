/* JPEG pictures through libjpeg-turbo: a validating reader that turns any
 * baseline/progressive JPEG (gray, YCbCr, RGB, CMYK, YCCK, Adobe-inverted
 * CMYK too) into 8-bit RGB, h x w x 3 row-major, with optional DCT-domain
 * downscaling; and an RGB/gray/CMYK writer used by tests and benchmarks. */
#ifndef NN_JPEG_H
#define NN_JPEG_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "io/png.h" /* nn_image, nn_image_free */

/* Largest width or height accepted by the reader. */
#define NN_JPEG_MAX_SIDE 32768
/* A flat picture compresses to almost nothing (arithmetic coding, progressive
 * end-of-band runs), so a forged header cannot be caught by its data running
 * out: a picture over NN_JPEG_FREE_PIXELS pixels must come from a file of at
 * least 1 byte per NN_JPEG_PIXELS_PER_BYTE pixels (a real 24 MP photo is
 * megabytes; the limit asks for 23 KB), else NN_E_FORMAT. */
#define NN_JPEG_FREE_PIXELS (16.0 * 1024 * 1024)
#define NN_JPEG_PIXELS_PER_BYTE 1024.0

/* Decodes a JPEG held in memory (name: for messages) to RGB. min_side > 0
 * lets libjpeg decode at the smallest scale M/8 (M = 1..8) whose short side
 * is still >= min_side: an 8x8-block area average that cuts decode time of
 * big photos several fold; min_side <= 0 decodes at full size. Truncated
 * data (libjpeg's "premature end" warnings) is an error (NN_E_FORMAT), as
 * are files that are not JPEG. On failure *out is zeroed. */
nn_status nn_jpeg_decode(const uint8_t *buf, size_t n, const char *name, int min_side, nn_image *out);

/* Reads the file at path and decodes it as nn_jpeg_decode (NN_E_IO when the
 * file cannot be read). */
nn_status nn_jpeg_read(const char *path, int min_side, nn_image *out);

/* Writes px (h rows of w pixels of `channels` bytes: 1 gray, 3 RGB, 4 CMYK)
 * as a JPEG of the given quality (1..100). CMYK: adobe_inverted writes the
 * values as given with an Adobe marker (Photoshop's convention: stored
 * byte = 255 - ink); !adobe_inverted writes plain CMYK (stored byte = ink)
 * without the marker. Ignored for 1 and 3 channels. Not atomic: for tests
 * and benchmarks. */
nn_status nn_jpeg_write(const char *path, int w, int h, int channels, const uint8_t *px, int quality,
                        int adobe_inverted);

#endif
