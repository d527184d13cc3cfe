/* tool_dequant — dequantize raw blocks with qtune's reference dequantizers,
 * or with --fast the ones qtune runs on this machine (kernels/k_dequant.c,
 * where the type has one).
 *
 * usage: tool_dequant [--fast] TYPE_NAME IN.bin OUT.f32
 * IN.bin holds whole blocks of TYPE_NAME (ggml layout); OUT.f32 receives the
 * little-endian f32 values. Driven by tests/py/check_dequant.py, which compares
 * the output with the gguf Python package. Exit 0 on success, 1 on any error.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "k_preview.h"
#include "q_dtype.h"
#include "tool_io.h"

static int td_read_all(const char *path, uint8_t **out, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -1;
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        goto fail;
    for (;;) {
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb)
                goto fail;
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(fp))
        goto fail;
    fclose(fp);
    *out = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    fclose(fp);
    return -1;
}

int main(int argc, char **argv)
{
    const bool fast = argc == 5 && !strcmp(argv[1], "--fast");
    if (argc != 4 && !fast) {
        fprintf(stderr, "usage: %s [--fast] TYPE_NAME IN.bin OUT.f32\n", argv[0]);
        return 1;
    }
    if (fast) {
        k_init(); /* installs the fast dequantizers */
        argv++;
    }
    int id = q_dtype_from_name(argv[1]);
    const q_dtype_traits *t = id < 0 ? NULL : q_dtype_get((uint32_t)id);
    if (!t) {
        fprintf(stderr, "tool_dequant: unknown type %s\n", argv[1]);
        return 1;
    }
    if (!t->dequant) {
        fprintf(stderr, "tool_dequant: %s: unsupported type\n", t->name);
        return 1;
    }
    uint8_t *in = NULL;
    size_t len = 0;
    if (td_read_all(argv[2], &in, &len) != 0) {
        fprintf(stderr, "tool_dequant: %s: cannot read\n", argv[2]);
        return 1;
    }
    int rc = 1;
    float *out = NULL;
    if (len % t->size != 0) {
        fprintf(stderr, "tool_dequant: %s: %zu bytes is not a whole number of %s blocks\n",
                argv[2], len, t->name);
        goto done;
    }
    int64_t n = (int64_t)(len / t->size) * t->blck;
    out = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!out) {
        fprintf(stderr, "tool_dequant: out of memory\n");
        goto done;
    }
    t->dequant(in, out, n);
    /* little-endian f32, in place */
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &out[i], sizeof u);
        uint8_t b[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
        memcpy(&out[i], b, sizeof b);
    }
    int wr = tool_write_file(argv[3], out, (size_t)n * sizeof(float));
    if (wr) {
        fprintf(stderr, "tool_dequant: %s: %s\n", argv[3],
                wr == TOOL_IO_EOPEN ? "cannot create" : "write failed");
        goto done;
    }
    rc = 0;
done:
    free(out);
    free(in);
    return rc;
}
