/* libFuzzer target for the PNG reader (io/png.c) in all three channel modes:
 * any bytes must decode or fail with a status naming the file; a decoded
 * image must be 1..NN_PNG_MAX_SIDE per side with h*w*channels bytes. */
#include <stddef.h>
#include <stdint.h>

#include "tests/fuzz/fuzz_util.h"
#include "io/png.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_write_temp(data, size);
    static const int modes[3] = {0, 1, 3};
    for (int k = 0; k < 3; k++) {
        int want = modes[k];
        nn_image img;
        memset(&img, 0xA5, sizeof img);
        nn_status s = nn_png_read(path, want, &img);
        fz_check_error(s, path, "nn_png_read");
        if (s != NN_OK) {
            FZ_REQUIRE(img.data == NULL && img.w == 0 && img.h == 0);
            continue;
        }
        FZ_REQUIRE(img.w >= 1 && img.h >= 1 && img.w <= NN_PNG_MAX_SIDE && img.h <= NN_PNG_MAX_SIDE);
        FZ_REQUIRE(img.channels == 1 || img.channels == 3);
        FZ_REQUIRE(want == 0 || img.channels == want);
        size_t n = (size_t)img.w * (size_t)img.h * (size_t)img.channels;
        unsigned sum = 0;
        for (size_t i = 0; i < n; i++) sum += img.data[i];
        (void)sum;
        nn_image_free(&img);
    }
    return 0;
}
