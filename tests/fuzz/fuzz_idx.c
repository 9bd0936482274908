/* libFuzzer target for the IDX reader (io/idx.c): any bytes, gzipped or not,
 * must load or fail with a status naming the file; a loaded file must hold
 * exactly product(dims) bytes, all readable. */
#include <stddef.h>
#include <stdint.h>

#include "tests/fuzz/fuzz_util.h"
#include "io/idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fz_write_temp(data, size);
    nn_idx x;
    memset(&x, 0xA5, sizeof x); /* the reader must zero *out on failure */
    nn_status s = nn_idx_load(path, &x);
    fz_check_error(s, path, "nn_idx_load");
    if (s != NN_OK) {
        FZ_REQUIRE(x.data == NULL && x.size == 0 && x.ndim == 0);
        return 0;
    }
    FZ_REQUIRE(x.dtype == NN_IDX_UBYTE && x.ndim >= 1 && x.ndim <= NN_IDX_MAX_DIMS);
    size_t n = 1;
    for (int i = 0; i < x.ndim; i++) {
        FZ_REQUIRE(x.dims[i] > 0);
        n *= (size_t)x.dims[i];
    }
    FZ_REQUIRE(n == x.size && x.size <= NN_IDX_MAX_BYTES && x.data != NULL);
    /* touch every byte so ASan checks the buffer really is that long */
    unsigned sum = 0;
    for (size_t i = 0; i < x.size; i++) sum += x.data[i];
    (void)sum;
    nn_idx_free(&x);
    FZ_REQUIRE(x.data == NULL);
    return 0;
}
