/* tool_quant — quantize f32 rows with qtune's reference quantizers.
 *
 * usage: tool_quant TYPE IN.f32 NROWS NCOLS OUT.bin [IMATRIX.f32]
 * TYPE is a ggml type name (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K;
 * case-insensitive). IN.f32 holds NROWS × NCOLS little-endian f32 values,
 * IMATRIX.f32 NCOLS importance weights. OUT.bin receives the blocks exactly as
 * q_quantize_<type> writes them. Driven by tests/py/check_quants.py. Exit 0 on
 * success, 1 on any error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "q_dtype.h"
#include "q_quants.h"
#include "tool_io.h"

typedef size_t (*tq_fn)(const float *, void *, int64_t, int64_t, const float *);

static const struct {
    const char *name;
    q_dtype id;
    tq_fn fn;
} tq_types[] = {
    {"Q8_0", Q_DT_Q8_0, q_quantize_q8_0},     {"Q4_0", Q_DT_Q4_0, q_quantize_q4_0},
    {"Q4_1", Q_DT_Q4_1, q_quantize_q4_1},     {"Q5_0", Q_DT_Q5_0, q_quantize_q5_0},
    {"Q5_1", Q_DT_Q5_1, q_quantize_q5_1},     {"IQ4_NL", Q_DT_IQ4_NL, q_quantize_iq4_nl},
    {"Q2_K", Q_DT_Q2_K, q_quantize_q2_k},     {"Q3_K", Q_DT_Q3_K, q_quantize_q3_k},
    {"Q4_K", Q_DT_Q4_K, q_quantize_q4_k},     {"Q5_K", Q_DT_Q5_K, q_quantize_q5_k},
    {"Q6_K", Q_DT_Q6_K, q_quantize_q6_k},
};

/* Reads exactly n little-endian f32 values from path; -1 (said on stderr) on
 * any mismatch. */
static int tq_read_f32(const char *path, float *dst, int64_t n)
{
    int rc = tool_read_f32(path, dst, n);
    if (rc == TOOL_IO_EOPEN)
        fprintf(stderr, "tool_quant: %s: cannot open\n", path);
    else if (rc == TOOL_IO_ESHORT)
        fprintf(stderr, "tool_quant: %s: shorter than %lld floats\n", path, (long long)n);
    else if (rc == TOOL_IO_ELONG)
        fprintf(stderr, "tool_quant: %s: longer than %lld floats\n", path, (long long)n);
    return rc ? -1 : 0;
}

static int tq_parse_count(const char *s, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v <= 0 || v > (1LL << 31))
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: %s TYPE IN.f32 NROWS NCOLS OUT.bin [IMATRIX.f32]\n", argv[0]);
        return 1;
    }
    int t = -1;
    for (size_t i = 0; i < sizeof tq_types / sizeof tq_types[0]; i++)
        if (strcasecmp(argv[1], tq_types[i].name) == 0)
            t = (int)i;
    if (t < 0) {
        fprintf(stderr, "tool_quant: unknown or unsupported type %s\n", argv[1]);
        return 1;
    }
    int64_t nrows, ncols;
    if (tq_parse_count(argv[3], &nrows) || tq_parse_count(argv[4], &ncols)) {
        fprintf(stderr, "tool_quant: NROWS and NCOLS must be positive integers\n");
        return 1;
    }
    const q_dtype_traits *tr = q_dtype_get(tq_types[t].id);
    if (ncols % tr->blck != 0 || nrows * ncols > (1LL << 31)) {
        fprintf(stderr, "tool_quant: NCOLS %lld is not a multiple of %lld (or too large)\n",
                (long long)ncols, (long long)tr->blck);
        return 1;
    }
    int rc = 1;
    float *src = malloc((size_t)(nrows * ncols) * sizeof(float));
    float *imat = NULL;
    size_t out_bytes = (size_t)(nrows * (ncols / tr->blck)) * tr->size;
    uint8_t *dst = malloc(out_bytes);
    if (!src || !dst) {
        fprintf(stderr, "tool_quant: out of memory\n");
        goto done;
    }
    if (tq_read_f32(argv[2], src, nrows * ncols) != 0)
        goto done;
    if (argc == 7) {
        imat = malloc((size_t)ncols * sizeof(float));
        if (!imat) {
            fprintf(stderr, "tool_quant: out of memory\n");
            goto done;
        }
        if (tq_read_f32(argv[6], imat, ncols) != 0)
            goto done;
    }
    size_t got = tq_types[t].fn(src, dst, nrows, ncols, imat);
    if (got != out_bytes) {
        fprintf(stderr, "tool_quant: quantizer returned %zu bytes, expected %zu\n", got,
                out_bytes);
        goto done;
    }
    int wr = tool_write_file(argv[5], dst, out_bytes);
    if (wr) {
        fprintf(stderr, "tool_quant: %s: %s\n", argv[5],
                wr == TOOL_IO_EOPEN ? "cannot create" : "write failed");
        goto done;
    }
    rc = 0;
done:
    free(imat);
    free(dst);
    free(src);
    return rc;
}
