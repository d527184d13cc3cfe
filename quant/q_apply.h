/* q_apply.h — the headless engine: preview a resolved plan (error metrics per
 * tensor, nothing written) and apply it (quantize and write a GGUF v3 file).
 *
 * Both stream the model tensor by tensor and chunk by chunk of rows, with
 * OpenMP across rows, so memory stays bounded by the chunk size whatever the
 * model's size. Both honour a cancel flag between chunks and report progress
 * through a callback (called from the calling thread only).
 */
#ifndef Q_APPLY_H
#define Q_APPLY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "q_imatrix.h"
#include "q_metrics.h"
#include "q_model.h"
#include "q_plan.h"
#include "q_status.h"

typedef void (*q_progress_fn)(void *user, int64_t tensor, int64_t n_tensors,
                              uint64_t bytes_done, uint64_t bytes_total);

typedef struct q_job_opts {
    const q_imatrix *imatrix;   /* may be NULL */
    atomic_int *cancel;         /* may be NULL; non-zero stops the job (Q_ECANCELLED) */
    q_progress_fn progress;     /* may be NULL */
    void *progress_user;
    bool use_reference;         /* use the scalar reference quantizers (benchmarks) */
} q_job_opts;

typedef struct q_tensor_report {
    q_resolved res;
    double bpw;              /* bits per weight of the result */
    uint64_t bytes_in;       /* as stored in the source */
    uint64_t bytes_out;      /* in the result */
    bool have_metrics;       /* preview only, and not for kept tensors */
    q_metrics metrics;
    q_metrics_acc acc;       /* raw sums and the error histogram */
    bool imatrix_used;       /* the method used the tensor's importance weights */
    bool imatrix_missing;    /* wsearch asked, but the imatrix has no entry */
    int64_t n_nonfinite;     /* NaN/Inf values in the source */
} q_tensor_report;

typedef struct q_job_totals {
    uint64_t bytes_in, bytes_out;
    int64_t params, params_quantized;
    double avg_bpw;          /* 8 × bytes_out / params */
    double weighted_rel_rmse; /* Σ params·rel_rmse / Σ params over previewed tensors */
    double weighted_sqnr_db;  /* 10 log10(Σ Σw² / Σ Σe²) over previewed tensors */
    int n_fallbacks;
} q_job_totals;

/* Previews every tensor of m under res (from q_plan_resolve): fake-quantizes
 * and measures. out has m->n_tensors entries. Source NaN/Inf values are counted
 * (n_nonfinite) and excluded from the metrics; they never reach a quantizer. */
q_status q_preview(const q_model *m, const q_resolved *res, const q_job_opts *o,
                   q_tensor_report *out, q_job_totals *tot, q_err *err);

/* Fast path for the preview of one tensor, installed by kernels/ (k_init) so
 * that quant/ never includes kernels/ (DESIGN.md §2 layering). */
typedef struct q_tensor_preview_args {
    const q_model *model;      /* may be NULL */
    const q_tensor *tensor;
    const q_resolved *res;     /* not kept */
    const float *imatrix;      /* imatrix_n_mat × tensor->cols weights, or NULL */
    int64_t imatrix_n_mat;     /* matrices in imatrix (experts); 1 for dense tensors */
    int64_t imatrix_rows;      /* rows sharing one matrix (ne[1] of a 3-D tensor), 0 when
                                  every row uses the first; rows past imatrix_n_mat ×
                                  imatrix_rows have no weights */
    int64_t hist_probe_rows;   /* the error histogram's range is 1.25 × the largest
                                  error over the first hist_probe_rows rows */
    atomic_int *cancel;        /* may be NULL */
} q_tensor_preview_args;

/* Fills rep->acc, rep->metrics, rep->n_nonfinite and sets rep->have_metrics
 * (other fields are the caller's); same contract as q_preview for one tensor:
 * NaN/Inf counted and replaced by 0, weighted error from the imatrix whenever
 * given, the imatrix passed to the quantizer only under wsearch. Returns
 * Q_ECANCELLED, Q_ENOMEM, Q_EUSAGE, or a read error. */
typedef q_status (*q_tensor_preview_fn)(const q_tensor_preview_args *a, q_tensor_report *rep,
                                        q_err *err);

/* Installs fn as q_preview's per-tensor engine (NULL restores the built-in
 * one). q_preview with o->use_reference always uses the built-in one. Call at
 * start-up, before any preview runs. */
void q_preview_set_tensor_fn(q_tensor_preview_fn fn);

/* Metadata written by q_apply beside the model's own. */
typedef struct q_apply_meta {
    const char *plan_fingerprint; /* FNV-1a of the plan text, or NULL */
    const char *plan_text;        /* the plan as CSV, stored in qtune.plan, or NULL */
    const char *imatrix_path;     /* or NULL */
} q_apply_meta;

/* Quantizes m under res and writes a GGUF v3 to out_path atomically (temp file
 * in the same directory, fsync, rename; nothing is left behind on error or
 * cancel). GGUF input keeps all its metadata; HF input gets llama metadata from
 * config.json, GGUF tensor names and q/k rows in GGUF order. Refuses
 * (Q_EUSAGE) to overwrite one of the model's own files, grid formats that have
 * no GGUF type, and (Q_EDATA) a tensor with NaN/Inf values. */
q_status q_apply(const q_model *m, const q_resolved *res, const char *out_path,
                 const q_apply_meta *meta, const q_job_opts *o, q_tensor_report *out,
                 q_job_totals *tot, q_err *err);

/* llama.cpp's general.file_type for the dominant quantized format of res. */
uint32_t q_apply_file_type(const q_model *m, const q_resolved *res);

#endif
