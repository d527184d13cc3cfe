/* q_format.h — quantization formats: one traits table for every storage grid
 * qtune can preview or write (DESIGN.md §3).
 *
 * A format is a storage grid: what the bits mean. ggml formats are written byte
 * for byte in ggml's block layouts (q_blocks.h) so llama.cpp loads them; float
 * formats are plain element types; "grid" formats (fp8 with per-channel scales,
 * intN / uintN by tensor, channel or group, nf4) are previewed anywhere but have
 * no GGUF type. A q_fmt_spec is a format plus its parameters (bits, group).
 *
 * Every format has a scalar reference; the traits also hold "fast" entry points
 * that kernels/ may replace at start-up (q_format_set_fast). Callers use the
 * fast ones; tests compare them with the references.
 */
#ifndef Q_FORMAT_H
#define Q_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "q_dtype.h"
#include "q_status.h"

/* X(enum, name, ggml type id or -1) */
#define Q_FORMAT_LIST(X)                     \
    X(Q_FMT_F32, "f32", Q_DT_F32)            \
    X(Q_FMT_F16, "f16", Q_DT_F16)            \
    X(Q_FMT_BF16, "bf16", Q_DT_BF16)         \
    X(Q_FMT_Q8_0, "q8_0", Q_DT_Q8_0)         \
    X(Q_FMT_Q6_K, "q6_k", Q_DT_Q6_K)         \
    X(Q_FMT_Q5_1, "q5_1", Q_DT_Q5_1)         \
    X(Q_FMT_Q5_0, "q5_0", Q_DT_Q5_0)         \
    X(Q_FMT_Q5_K, "q5_k", Q_DT_Q5_K)         \
    X(Q_FMT_Q4_1, "q4_1", Q_DT_Q4_1)         \
    X(Q_FMT_Q4_0, "q4_0", Q_DT_Q4_0)         \
    X(Q_FMT_Q4_K, "q4_k", Q_DT_Q4_K)         \
    X(Q_FMT_IQ4_NL, "iq4_nl", Q_DT_IQ4_NL)   \
    X(Q_FMT_Q3_K, "q3_k", Q_DT_Q3_K)         \
    X(Q_FMT_Q2_K, "q2_k", Q_DT_Q2_K)         \
    X(Q_FMT_FP8_E4M3, "fp8_e4m3", -1)        \
    X(Q_FMT_FP8_E5M2, "fp8_e5m2", -1)        \
    X(Q_FMT_INT, "int", -1)                  \
    X(Q_FMT_UINT, "uint", -1)                \
    X(Q_FMT_NF4, "nf4", -1)

typedef enum q_format_id {
#define Q_FORMAT_ENUM(e, name, ggml) e,
    Q_FORMAT_LIST(Q_FORMAT_ENUM)
#undef Q_FORMAT_ENUM
        Q_FMT_COUNT
} q_format_id;

/* Group sizes for int/uint/fp8/nf4: a positive G is a group of G consecutive
 * elements of a row; these two values mean one scale per row or per tensor. */
#define Q_GROUP_CHANNEL 0
#define Q_GROUP_TENSOR (-1)

typedef struct q_fmt_spec {
    q_format_id id;
    int bits;      /* 2..8 for int/uint; 0 otherwise */
    int64_t group; /* see Q_GROUP_*; 0 where the format fixes its blocks */
} q_fmt_spec;

/* Quantizes nrows rows of n_per_row floats into ggml blocks at dst; imatrix is
 * NULL or n_per_row importance weights (llama.cpp's imatrix, Σx² per column).
 * Returns the bytes written. n_per_row must be a multiple of the block size. */
typedef size_t (*q_quant_fn)(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                             const float *imatrix);

typedef struct q_format {
    q_format_id id;
    const char *name;    /* family name: "q4_k", "int" */
    int32_t ggml_type;   /* q_dtype id, -1 for grid formats */
    int64_t blck;        /* elements per block along a row (1 for float/grid) */
    size_t block_bytes;  /* bytes per block (0 for grid formats) */
    q_quant_fn quantize_ref; /* scalar reference (NULL for grid formats) */
    q_quant_fn quantize;     /* fastest available; equals quantize_ref until replaced */
} q_format;

/* Traits of a format id (never NULL for a valid id). */
const q_format *q_format_get(q_format_id id);

/* Parses a format name as written in plans: "q4_k", "Q4_K", "int4", "uint3",
 * "nf4", "fp8_e4m3", "f16". Returns false for anything else. group is set to
 * the format's default (int/uint/fp8: per channel; nf4: 64; others 0). */
bool q_fmt_parse(const char *name, q_fmt_spec *out);

/* Canonical name of a spec ("int4", "q4_k") into buf; returns buf. */
const char *q_fmt_name(const q_fmt_spec *spec, char *buf, size_t cap);

/* Checks a spec's parameters (bits range, group sign and divisibility of
 * n_per_row when a group is given). Q_EUSAGE with a message otherwise. */
q_status q_fmt_check(const q_fmt_spec *spec, int64_t n_per_row, q_err *err);

/* True when a row of n_per_row elements fits the format's blocks or groups. */
bool q_fmt_fits(const q_fmt_spec *spec, int64_t n_per_row);

/* True for formats that can be stored in a GGUF tensor. */
bool q_fmt_is_ggml(const q_fmt_spec *spec);

/* Storage cost in bits per weight for a tensor of rows × n_per_row, scales and
 * zero points included (grid formats: f16 scales, N-bit zeros for uint; nf4: an
 * f32 absmax per block, as bitsandbytes stores it). */
double q_fmt_bpw(const q_fmt_spec *spec, int64_t rows, int64_t n_per_row);

/* Bytes of a tensor of rows × n_per_row in this format (ggml and float formats:
 * exact GGUF size; grid formats: the packed size q_fmt_bpw implies, rounded up). */
uint64_t q_fmt_bytes(const q_fmt_spec *spec, int64_t rows, int64_t n_per_row);

/* Per-tensor context some grids need before rows can be quantized (per-tensor
 * range of int/uint/fp8 with group Q_GROUP_TENSOR). q_fmt_prepare scans the
 * whole tensor once; formats that need nothing leave it empty. */
typedef struct q_fq_ctx {
    bool ready;
    float lo, hi;  /* per-tensor min and max of the finite values */
} q_fq_ctx;
void q_fmt_prepare(const q_fmt_spec *spec, const float *src, int64_t n, q_fq_ctx *ctx);
/* Combines the contexts of two parts of one tensor (for streaming prepare). */
void q_fq_ctx_merge(q_fq_ctx *a, const q_fq_ctx *b);
bool q_fmt_needs_prepare(const q_fmt_spec *spec);

/* Fake quantization: dst = dequant(quant(src)) for nrows rows. Works for every
 * format (ggml: real blocks in a scratch buffer; float: rounding; grids: their
 * grids). imatrix as for q_quant_fn. ctx from q_fmt_prepare when needed.
 * Q_ENOMEM, or Q_EUSAGE for a spec that q_fmt_check rejects. Thread safe. */
q_status q_fmt_fakequant(const q_fmt_spec *spec, const float *src, float *dst, int64_t nrows,
                         int64_t n_per_row, const float *imatrix, const q_fq_ctx *ctx,
                         q_err *err);

/* Used by kernels/ at start-up to install a faster quantizer for a format. */
void q_format_set_fast(q_format_id id, q_quant_fn fn);

#endif
