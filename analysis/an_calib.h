/* an_calib.h — calibration: activation capture over a forward pass, llama.cpp imatrix
 * GGUF writer (plus qtune's own statistics), reader of those statistics, layer output
 * error on the captured activations, and model-level KL divergence of a plan.
 *
 * Statistics are kept per input of linear layers (a "site": q/k/v share one, gate/up
 * share one), per input channel: token count, Σx, Σx² (what a llama.cpp imatrix holds),
 * max |x|; a reservoir of raw activation rows (Vitter's algorithm R, fixed seed); and
 * per-token outliers: the fraction of a token's channels with |x| > 6·rms(token).
 *
 * The imatrix file (llama.cpp's GGUF imatrix format): general.type "imatrix",
 * imatrix.datasets [string], imatrix.chunk_count u32, imatrix.chunk_size u32, and per
 * weight tensor NAME (GGUF name, blk.* only unless output is asked for):
 *   NAME.in_sum2 F32 [n, 1]   Σx² per channel
 *   NAME.counts  F32 [1, 1]   tokens seen
 *   NAME.in_sum  F32 [n, 1]   Σx per channel
 * and qtune's extras, which llama.cpp ignores:
 *   NAME.qtune_absmax   F32 [n, 1]  max |x| per channel
 *   NAME.qtune_outliers F32 [3]     mean and max per-token outlier fraction, fraction of
 *                                   tokens with at least one outlier channel
 *   NAME.qtune_sample   F16 (F32 when a value exceeds F16's range) [n, rows_kept]:
 *                       the reservoir of raw input rows, stored once per input under the
 *                       first weight reading it (attn_q for q/k/v, ffn_gate for gate/up)
 *   qtune.calib.outlier_sigma f32 (6), qtune.calib.version u32 (1).
 */
#ifndef AN_CALIB_H
#define AN_CALIB_H

#include <stdbool.h>
#include <stdint.h>

#include "an_forward.h"
#include "q_format.h"
#include "q_imatrix.h"
#include "q_model.h"
#include "q_plan.h"
#include "q_status.h"

#define AN_OUTLIER_SIGMA 6.0

typedef struct an_site_stats {
    int layer;          /* block, -1 for the output layer */
    an_site site;
    int n_names;
    char names[3][96];  /* GGUF names of the weights that read this input */
    int64_t n;          /* channels */
    int64_t count;      /* tokens seen */
    double *sum;        /* (n) Σx */
    double *sum2;       /* (n) Σx² */
    float *absmax;      /* (n) max |x| */
    int64_t res_cap;    /* reservoir rows wanted */
    int64_t res_rows;   /* rows held (≤ res_cap) */
    float *res;         /* (res_cap, n) raw activation rows */
    uint64_t rng;
    double out_frac_sum; /* Σ over tokens of the outlier fraction */
    double out_frac_max;
    int64_t out_tokens;  /* tokens with at least one outlier channel */
} an_site_stats;

typedef struct an_calib {
    int64_t n_sites;
    an_site_stats *sites; /* owned: per block ATTN_IN, ATTN_OUT, FFN_IN, FFN_DOWN; then OUTPUT */
    int64_t n_layer;
    bool process_output;  /* write output.weight to the imatrix (llama.cpp: --process-output) */
    int64_t chunk_count, chunk_size;
    char dataset[512];
} an_calib;

/* New statistics for the model f evaluates (its config; weights are named by their GGUF
 * names, also for HF models). reservoir_rows per site (0 = none), seed for the
 * reservoir. Q_EUSAGE for a negative or huge reservoir, Q_ENOMEM. */
q_status an_calib_new(const an_fwd *f, int64_t reservoir_rows, uint64_t seed, an_calib **out,
                      q_err *err);
void an_calib_free(an_calib *c);

/* The capture hook: pass it with user = the an_calib to an_fwd_set_hooks. */
void an_calib_capture(void *user, int layer, an_site site, const float *x, int64_t T,
                      int64_t n);

/* Progress callback: done and total chunks; return false to cancel. */
typedef bool (*an_progress_fn)(void *user, int64_t done, int64_t total);

/* Runs calibration: tokens split into chunks of ctx tokens (the first token of each chunk
 * replaced by bos when bos >= 0, as llama-imatrix does), at most max_chunks (≤ 0: all);
 * f's hooks are set to capture into c. Q_EUSAGE when fewer than ctx tokens are given,
 * Q_ECANCELLED when progress returns false. */
q_status an_calib_run(an_calib *c, an_fwd *f, const int32_t *tokens, int64_t n_tokens,
                      int64_t ctx, int64_t max_chunks, int32_t bos, an_progress_fn progress,
                      void *puser, q_err *err);

/* Statistics of the input of a weight tensor (GGUF name), or NULL. */
const an_site_stats *an_calib_find(const an_calib *c, const char *tensor_name);

/* Writes the imatrix GGUF described above to path atomically (temp file + rename).
 * Q_ECANTCREAT, Q_EIO, Q_ENOMEM. */
q_status an_calib_write_imatrix(const an_calib *c, const char *path, q_err *err);

/* qtune's extra statistics read back from an imatrix file written by qtune. */
typedef struct an_extra_entry {
    char *name;          /* GGUF tensor name (owned) */
    int64_t n;
    float *absmax;       /* (n) owned, NULL when absent */
    float outliers[3];   /* mean frac, max frac, fraction of tokens with an outlier */
    bool has_outliers;
} an_extra_entry;

typedef struct an_extra {
    int64_t n_entries;
    an_extra_entry *entries; /* owned */
} an_extra;

/* Reads NAME.qtune_absmax / NAME.qtune_outliers tensors (F32, validated sizes) from an
 * imatrix GGUF. A file without them gives zero entries. Q_ENOINPUT, Q_EDATA (names the
 * file, offset and tensor), Q_ENOMEM. */
q_status an_extra_load(const char *path, an_extra **out, q_err *err);
void an_extra_free(an_extra *x);
const an_extra_entry *an_extra_find(const an_extra *x, const char *name);

/* Relative output error of a layer on its captured reservoir X (R × cols):
 * ‖X Wᵀ − X Ŵᵀ‖_F / ‖X Wᵀ‖_F, W and Ŵ rows × cols. Q_EUSAGE when the tensor has no
 * reservoir or the shapes differ; *rel is 0 when ‖X Wᵀ‖ is 0 and W equals Ŵ. */
q_status an_output_error(const an_calib *c, const char *tensor_name, const float *W,
                         const float *W_hat, int64_t rows, int64_t cols, double *rel,
                         q_err *err);

/* A weight hook (an_weight_hook) that replaces each tensor by its plan's fake-quantized
 * values: user points to this struct. Kept tensors are left as they are; imatrix (may
 * be NULL) is passed to the quantizer for method wsearch. */
typedef struct an_plan_hook {
    const q_model *m;
    const q_resolved *res; /* m->n_tensors entries (q_plan_resolve) */
    const q_imatrix *im;
} an_plan_hook;
q_status an_plan_hook_fn(void *user, const q_tensor *t, float *w, q_err *err);

/* Rewrites the imatrix GGUF at path (written by an_calib_write_imatrix) atomically with
 * each written input's reservoir added as NAME.qtune_sample (see above). Sites without
 * reservoir rows are skipped. Q_ENOINPUT, Q_EDATA, Q_ECANTCREAT, Q_EIO, Q_ENOMEM. */
q_status an_calib_add_samples(const an_calib *c, const char *path, q_err *err);

/* Reads the activation sample of weight tensor_name (GGUF name; q/k/v and gate/up find
 * their shared input) from an imatrix file: *x gets a new (*rows × *cols) f32 array
 * (free it), or NULL with Q_OK when the file holds none. Q_ENOINPUT, Q_EDATA (names
 * the file, offset and tensor), Q_ENOMEM. */
q_status an_sample_load(const char *path, const char *tensor_name, float **x, int64_t *rows,
                        int64_t *cols, q_err *err);

/* an_output_error on a given sample x (x_rows × cols) instead of a capture. */
q_status an_output_error_x(const float *x, int64_t x_rows, const char *tensor_name,
                           const float *W, const float *W_hat, int64_t rows, int64_t cols,
                           double *rel, q_err *err);

/* Output error of tensor t (rows × cols, read through q_tensor_read_rows; NaN/Inf read
 * as 0) fake-quantized to fmt (q_fmt_fakequant; imatrix: cols weights or NULL, as the
 * quantizer takes them), on the sample x (x_rows × cols). *rel is NaN on failure.
 * Q_EUSAGE (shape, size), Q_ENOMEM, or a read error. Thread safe. */
q_status an_tensor_output_error(const q_tensor *t, const q_fmt_spec *fmt, const float *imatrix,
                                const float *x, int64_t x_rows, double *rel, q_err *err);

/* Model-level error, like llama-perplexity --kl-divergence: base and quant are two passes
 * over the same model (quant with an_plan_hook_fn installed). Over chunks of ctx tokens
 * (first token of each chunk = bos when bos >= 0) every position but the last is scored:
 * KL(P_base ‖ P_quant) of the next-token distributions, top-1 agreement, and the
 * perplexity of each model on the next token. */
typedef struct an_kld_result {
    int64_t n_tokens;      /* positions scored */
    double kld_mean, kld_p99, kld_max;
    double top1;           /* fraction of positions where both argmax agree */
    double ppl_base, ppl_quant;
} an_kld_result;
q_status an_kld(an_fwd *base, an_fwd *quant, const int32_t *tokens, int64_t n_tokens,
                int64_t ctx, int64_t max_chunks, int32_t bos, an_progress_fn progress,
                void *puser, an_kld_result *out, q_err *err);

#endif
