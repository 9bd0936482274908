/* PNG pictures through libpng: 8-bit gray or RGB writers (atomic: temp
 * file, fsync, rename) and a validating reader that normalizes any PNG
 * (gray/RGB/RGBA/palette, 1..16 bits) to 8-bit gray or RGB, row-major,
 * h x w x channels. */
#ifndef NN_PNG_H
#define NN_PNG_H

#include <stdint.h>

#include "core/status.h"

/* Largest width or height accepted by the reader and writer. */
#define NN_PNG_MAX_SIDE 16384

typedef struct nn_image {
    int w, h;
    int channels;   /* 1 (gray) or 3 (RGB) */
    uint8_t *data;  /* h * w * channels bytes, malloc'd, owned by the caller: nn_image_free */
} nn_image;

/* rgb: h rows of w pixels of R,G,B bytes; gray: h rows of w bytes. Written to
 * "path.tmp.<pid>", synced and renamed over path; on failure the temp file is
 * removed and an existing file at path is untouched. */
nn_status nn_png_write_rgb(const char *path, int w, int h, const uint8_t *rgb);
nn_status nn_png_write_gray(const char *path, int w, int h, const uint8_t *gray);

/* Reads a PNG. channels: 1 converts to gray (ITU-R 709 weights), 3 to RGB,
 * 0 keeps gray files gray and makes everything else RGB. Alpha is dropped
 * (not composited), 16-bit samples are reduced to 8, palettes expanded.
 * On failure *out is zeroed; errors (NN_E_IO, NN_E_FORMAT, NN_E_NOMEM)
 * name the file. */
nn_status nn_png_read(const char *path, int channels, nn_image *out);

/* Frees img->data and zeroes *img; NULL and zeroed structs are fine. */
void nn_image_free(nn_image *img);

#endif
