/* k_preview.h — live error preview of one tensor in one format: the call the
 * TUI's worker thread makes for every change, and the engine of `qtune preview`.
 *
 * Progressive: the callback first receives an estimate from a fixed sample of
 * rows (evenly spaced, deterministic) with a 95% confidence band, then the exact
 * figures over all rows. Cancellable: the cancel flag is polled between row
 * blocks small enough that a cancel is honoured within 5 ms.
 *
 * The work runs on fused kernels (kernels/k_fused.c): read the source rows
 * once (f32 in place from the mapping; other stored types through the model's
 * dequantizer into a per-thread row block), quantize, dequantize and accumulate
 * every metric of q_metrics.h without writing the quantized tensor. Values are
 * exactly those of the scalar reference quantizers; metrics match q_metrics to
 * 1e-9 relative. Rows are measured in stored order (HF q/k permutation does not
 * change any metric). In a CUDA build with a usable GPU the exact figures of
 * a plainly quantized format with a CUDA kernel, on an f32/f16/bf16 tensor,
 * come from the device (k_cuda_fused.h: the same values, sums to double
 * rounding) in slices of 2^24 values, the cancel flag polled between them;
 * tensors up to 64 MiB stay on the device for the next preview. A failure
 * there falls back to the CPU; QTUNE_NO_GPU=1 keeps every pass on the CPU.
 * Kept tensors are known by their address: call k_cuda_fused_release()
 * before closing the model they belong to.
 * Row blocks of a fixed size have their own accumulators, merged in block
 * order: results do not depend on the thread count.
 *
 * Estimate statistics: n of the N rows, evenly spaced (row ⌊(i + ½) N / n⌋),
 * n chosen so that n × cols ≈ 2^18 values, 16 ≤ n ≤ 256 (formats without a
 * fused kernel, whose references are slow: 2^14 values, 8 ≤ n ≤ 256). With per-row error
 * energy e_r = Σ(ŵ−w)² and weight energy w_r = Σw², the ratio R = Σe_r / Σw_r
 * (= rel_rmse², = 10^(−SQNR/10)) is a ratio estimator whose standard error is
 * sqrt((1 − n/N) s_d² / (n w̄²)), s_d² the sample variance of d_r = e_r − R w_r
 * and w̄ the mean w_r (first-order linearization, finite population corrected).
 * The band is R ± 1.96 standard errors (lower end at least 0), mapped to
 * rel_rmse and SQNR.
 */
#ifndef K_PREVIEW_H
#define K_PREVIEW_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "q_format.h"
#include "q_metrics.h"
#include "q_model.h"
#include "q_plan.h"
#include "q_status.h"

typedef struct k_preview_req {
    const q_model *model;     /* for HF q/k row order; may be NULL */
    const q_tensor *tensor;
    q_fmt_spec fmt;
    q_method method;          /* rtn or wsearch (keep: exact zero error) */
    const float *imatrix;     /* importance weights (tensor->cols) or NULL; used for the
                                 weighted error always and for the search under wsearch */
    atomic_int *cancel;       /* may be NULL */
    int threads;              /* 0: OpenMP default */
    bool skip_estimate;       /* go straight to the exact figures */
    /* Added for stacked experts and q_preview's hook (all may be left 0): */
    int64_t imatrix_n_mat;    /* matrices in imatrix (0 or 1: one, for every row) */
    int64_t imatrix_rows;     /* rows per matrix when imatrix_n_mat > 1; rows past
                                 imatrix_n_mat × imatrix_rows get no weights */
    double hist_range;        /* > 0: the error histogram's range; else automatic */
    int64_t hist_probe_rows;  /* automatic range = 1.25 × the largest error of the
                                 first hist_probe_rows rows (0: one row block) */
    bool force_scalar;        /* scalar kernels even where SIMD exists (tests, bench) */
} k_preview_req;

typedef struct k_preview_result {
    bool exact;               /* false for the sampled estimate */
    int64_t rows_done;        /* rows measured */
    q_metrics metrics;
    q_metrics_acc acc;        /* sums and error histogram */
    /* 95% band of the estimate (equal to the value when exact). */
    double rel_rmse_lo, rel_rmse_hi;
    double sqnr_lo_db, sqnr_hi_db;
    int64_t n_nonfinite;      /* NaN/Inf source values (replaced by 0) */
    double seconds;           /* wall time since the call began */
    bool on_gpu;              /* the exact figures came from the CUDA device (or its
                                 emulation, k_cuda_fused_emulate); false on the CPU */
} k_preview_result;

/* Called from the calling thread: once with the estimate (unless the tensor is
 * small enough to be exact at once or skip_estimate), then once with the exact
 * result. May be NULL. */
typedef void (*k_preview_cb)(void *user, const k_preview_result *r);

/* Runs the preview; *final (may be NULL) receives the exact result. Returns
 * Q_ECANCELLED when cancelled (the callback may have seen the estimate),
 * Q_EUSAGE for a spec that cannot apply to the tensor (row length), Q_ENOMEM. */
q_status k_preview_tensor(const k_preview_req *req, k_preview_cb cb, void *user,
                          k_preview_result *final, q_err *err);

/* The exact pass runs on the GPU where it can (k_preview_result.on_gpu); the
 * first time the device fails (device memory, a CUDA error: Q_ENOMEM,
 * Q_EINTERNAL) that preview is measured on the CPU, and so is every later one:
 * k_preview_gpu_failed then returns true and writes that failure's message
 * into why (cap > 0), for the caller to tell the user once. Thread-safe.
 * k_preview_gpu_retry lets the next preview try the GPU again. */
bool k_preview_gpu_failed(char *why, size_t cap);
void k_preview_gpu_retry(void);

/* Installs the fastest kernels this CPU has into the format traits table
 * (q_format_set_fast) and the preview paths. Call once at start-up; safe to
 * call again. QTUNE_NO_SIMD=1 keeps the scalar references. */
void k_init(void);

#endif
