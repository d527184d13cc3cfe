/* tool_kquant — quantize raw f32 rows with qtune's k-quant references.
 *
 * usage: tool_kquant TYPE IN.f32 NROWS NCOLS OUT.bin [IMATRIX.f32]
 * TYPE is q2_k, q3_k, q4_k, q5_k or q6_k (any case). IN.f32 holds NROWS × NCOLS
 * little-endian f32 values, NCOLS a multiple of 256; IMATRIX.f32, when given,
 * holds NCOLS importance weights. OUT.bin receives the ggml blocks, row after
 * row. Driven by tests/py/check_kquants.py, which compares the bytes with
 * ggml's own quantizer. Exit 0 on success, 1 on any error.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "q_blocks.h"
#include "q_dtype.h"
#include "q_quants.h"
#include "tool_io.h"

typedef size_t (*tk_fn)(const float *, void *, int64_t, int64_t, const float *);

static int tk_parse_i64(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v <= 0)
        return -1;
    *out = (int64_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: %s TYPE IN.f32 NROWS NCOLS OUT.bin [IMATRIX.f32]\n", argv[0]);
        return 1;
    }
    tk_fn fn = NULL;
    switch (q_dtype_from_name(argv[1])) {
    case Q_DT_Q2_K: fn = q_quantize_q2_k; break;
    case Q_DT_Q3_K: fn = q_quantize_q3_k; break;
    case Q_DT_Q4_K: fn = q_quantize_q4_k; break;
    case Q_DT_Q5_K: fn = q_quantize_q5_k; break;
    case Q_DT_Q6_K: fn = q_quantize_q6_k; break;
    default:
        fprintf(stderr, "tool_kquant: %s: not a k-quant type\n", argv[1]);
        return 1;
    }
    int64_t nrows = 0, ncols = 0;
    if (tk_parse_i64(argv[3], &nrows) || tk_parse_i64(argv[4], &ncols) || ncols % QK_K ||
        nrows > (int64_t)1 << 24 || ncols > (int64_t)1 << 24 ||
        nrows * ncols > (int64_t)1 << 28) {
        fprintf(stderr, "tool_kquant: bad shape %s x %s (NCOLS a multiple of 256)\n", argv[3],
                argv[4]);
        return 1;
    }
    const q_dtype_traits *t = q_dtype_get((uint32_t)q_dtype_from_name(argv[1]));
    size_t out_bytes = (size_t)(nrows * (ncols / QK_K)) * t->size;
    int rc = 1;
    float *src = malloc((size_t)(nrows * ncols) * sizeof(float));
    float *imat = NULL;
    uint8_t *out = malloc(out_bytes);
    if (!src || !out) {
        fprintf(stderr, "tool_kquant: out of memory\n");
        goto done;
    }
    if (tool_read_f32(argv[2], src, nrows * ncols)) {
        fprintf(stderr, "tool_kquant: %s: cannot read %lld f32 values (exactly)\n", argv[2],
                (long long)(nrows * ncols));
        goto done;
    }
    if (argc == 7) {
        imat = malloc((size_t)ncols * sizeof(float));
        if (!imat || tool_read_f32(argv[6], imat, ncols)) {
            fprintf(stderr, "tool_kquant: %s: cannot read %lld f32 weights (exactly)\n",
                    argv[6], (long long)ncols);
            goto done;
        }
    }
    size_t got = fn(src, out, nrows, ncols, imat);
    if (got != out_bytes) {
        fprintf(stderr, "tool_kquant: quantizer returned %zu bytes, expected %zu\n", got,
                out_bytes);
        goto done;
    }
    int wr = tool_write_file(argv[5], out, out_bytes);
    if (wr) {
        fprintf(stderr, "tool_kquant: %s: %s\n", argv[5],
                wr == TOOL_IO_ECLOSE ? "write failed" : "cannot write");
        goto done;
    }
    rc = 0;
done:
    free(out);
    free(imat);
    free(src);
    return rc;
}
