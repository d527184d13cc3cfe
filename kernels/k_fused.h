/* k_fused.h — fused fake-quant + metric kernels (internal to kernels/).
 *
 * A row is fake-quantized into a small scratch row (L1-resident) by a kernel
 * whose values are exactly those of the scalar reference (q_quantize_* then the
 * q_dtype dequantizer; q_grid_fakequant for grids), then the metric sums and the
 * error histogram are accumulated from the source row and that scratch row,
 * without writing blocks. The source is read from memory once; every later
 * touch hits the cache.
 *
 * SIMD (AVX2 with F16C; FMA in the metric sums only, never in quantization) is
 * used where k_cpu_get() reports all three and the caller did not force the
 * scalar path, in its AVX-512 form where the CPU has AVX-512 (F, BW, DQ, VL).
 * A 32-block whose scale or levels fall outside the
 * range where the SIMD form provably equals the reference (subnormal or huge
 * maxima, f16 overflow) is done by the scalar reference instead.
 */
#ifndef K_FUSED_H
#define K_FUSED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "q_apply.h"
#include "q_format.h"
#include "q_metrics.h"

/* One fake-quantizer, set up once per tensor and shared read-only by threads. */
typedef struct k_fq {
    q_fmt_spec spec;
    const q_format *fmt;
    q_fq_ctx ctx;     /* per-tensor range (group = tensor), else empty */
    int64_t cols;
    bool simd;        /* SIMD kernels allowed (AVX2, FMA and F16C present) */
    bool wide;        /* ... and AVX-512 present: the 16-lane forms */
    bool fused;       /* this spec has a dedicated row kernel (else generic) */
    size_t row_bytes; /* ggml formats: bytes of one quantized row (scratch size) */
    /* nf4: t = x / absmax in [-1, 1] cut into 32 cells 1/16 wide; per cell
     * the midpoint between levels inside it (+inf when none) and the levels
     * below and above it */
    float nf4_cell[3][32];
} k_fq;

/* Sets up k for spec on rows of cols values. force_scalar: never use SIMD.
 * Q_EUSAGE when the spec cannot apply to the row length. */
q_status k_fq_init(k_fq *k, const q_fmt_spec *spec, int64_t cols, bool force_scalar,
                   q_err *err);

/* True when spec has a dedicated fused kernel (round-to-nearest formats). */
bool k_fq_has_fused(const q_fmt_spec *spec);

/* y = dequant(quant(x)) for one row of k->cols finite values. search_w: the
 * importance weights given to the quantizer (wsearch) or NULL. qbuf: scratch of
 * k->row_bytes bytes (ggml formats). Thread safe. Returns true when y is known
 * to be finite (false: unknown). */
bool k_fq_row(const k_fq *k, const float *x, float *y, const float *search_w, void *qbuf);

/* Planes of k_acc_scratch's bit-sliced counters: a count up to 2^32 - 1 a cell. */
#define K_ACC_PLANES 32

/* k_fq_row for a row that may hold NaN or Inf: K_FQ_NONFINITE when it does (y
 * then holds nothing of use: scrub the row and call k_fq_row), else
 * K_FQ_FINITE when y is known to be finite, 0 when unknown. The SIMD kernels
 * find non-finite values in their first pass over the row, so a finite row
 * costs no extra pass. */
enum { K_FQ_FINITE = 1, K_FQ_NONFINITE = 2 };
int k_fq_row_check(const k_fq *k, const float *x, float *y, const float *search_w, void *qbuf);

/* Per-thread scratch of k_acc_row: histogram counts not yet in the
 * accumulator. The AVX-512 path counts in bit-sliced counters: bit b of lane l
 * of plane j of half h stands for 2^j values of lane l in bin 32 h + b; the
 * AVX2 path in bits4: bit b of lane l of plane j stands for 2^j values of
 * lane l in bin b. Both count the rows' last values (fewer than a step) and
 * the scalar path all of them two bins at a time in a table of 64 × 64 pairs.
 * Zero-initialise it; it belongs to one accumulator at a time, so call
 * k_acc_flush before moving to another and at the end, or, where the
 * accumulators are only merged (the histogram is a sum), once at the end into
 * any one of them. */
typedef struct k_acc_scratch {
    uint32_t bits[2][K_ACC_PLANES][16];
    uint64_t bits4[K_ACC_PLANES][4];
    uint32_t n[Q_ERR_HIST_BINS * Q_ERR_HIST_BINS];
    int64_t fix[Q_ERR_HIST_BINS]; /* corrections to the bit counts (bins near an edge) */
    int64_t pending; /* values counted since the last flush, halved */
    double max_seen; /* the largest |e| recorded in an accumulator it served */
    bool bits_used;  /* bits holds counts */
    bool bits4_used; /* bits4 holds counts */
    bool pairs_used; /* n holds counts */
} k_acc_scratch;

/* Adds one row to a: the same sums as q_metrics_add(a, x, y, 1, n, iw) (equal
 * to rounding in the last bits: SIMD sums in several lanes) and the same
 * histogram counts once k_acc_flush(a, p) has run. The maximum: a row whose
 * errors cannot exceed p->max_seen may leave a->max_abs below the row's own,
 * so the maxima are exact once every accumulator p served since it was
 * zeroed is merged (one result per zeroed p). y_finite: the
 * caller knows y holds no NaN (k_fq_row said so), which spares a pass over y.
 * next: the start of what the caller reads next (the following row of the
 * source, in any type), whose first 4n bytes are prefetched while this row is
 * summed, or NULL. */
void k_acc_row(q_metrics_acc *a, k_acc_scratch *p, const float *x, const float *y, int64_t n,
               const float *iw, bool simd, bool y_finite, const void *next);
/* Folds the counts p holds (bit planes with their corrections, pairs) into
 * a's histogram and empties p. */
void k_acc_flush(q_metrics_acc *a, k_acc_scratch *p);

/* Copies x to dst with NaN/Inf replaced by 0 when x has any; returns how many
 * (0: dst untouched, use x). */
int64_t k_scrub_row(const float *x, float *dst, int64_t n, bool simd);

/* Apply variants: byte-identical to q_quantize_q8_0 / q4_0 / q4_1 / q5_0 /
 * q5_1 (q_quant_fn contract); with an imatrix they call the reference. */
size_t k_quantize_q8_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t k_quantize_q4_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t k_quantize_q4_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t k_quantize_q5_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t k_quantize_q5_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);

/* q_preview's per-tensor engine (q_apply.h hook) on k_preview_tensor, exact
 * figures only; installed by k_init. */
q_status k_preview_hook(const q_tensor_preview_args *a, q_tensor_report *rep, q_err *err);

#endif
