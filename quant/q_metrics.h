/* q_metrics.h — error metrics of a quantized tensor against its source.
 *
 * Accumulate row by row (any order, any thread, then merge), finish once:
 * MSE, RMSE, relative RMSE (RMSE / RMS of the weights), SQNR in dB, max abs
 * error, cosine similarity, importance-weighted relative error (when an imatrix
 * is given), and a histogram of the signed error. Sums are in double. */
#ifndef Q_METRICS_H
#define Q_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#define Q_ERR_HIST_BINS 64

typedef struct q_metrics_acc {
    int64_t n;
    double sum_w2;    /* Σ w² */
    double sum_q2;    /* Σ ŵ² */
    double sum_wq;    /* Σ w ŵ */
    double sum_e2;    /* Σ (ŵ − w)² */
    double max_abs;   /* max |ŵ − w| */
    double sum_iw_e2; /* Σ imatrix[c] (ŵ − w)²  (when weighted) */
    double sum_iw_w2; /* Σ imatrix[c] w² */
    bool weighted;
    /* Histogram of e = ŵ − w over [-hist_range, +hist_range] in Q_ERR_HIST_BINS
     * bins; values outside go to the end bins. hist_range is set by the caller
     * before accumulating (for example the tensor's absmax / 2^(bits-1)); 0 means
     * no histogram. */
    double hist_range;
    int64_t hist[Q_ERR_HIST_BINS];
} q_metrics_acc;

typedef struct q_metrics {
    int64_t n;
    double mse, rmse, rel_rmse, sqnr_db, max_abs, cosine;
    double weighted_rel_err; /* sqrt(Σ i e² / Σ i w²); NaN when no imatrix */
} q_metrics;

void q_metrics_init(q_metrics_acc *a, double hist_range);
/* Adds nrows rows of n_per_row values; imatrix NULL or n_per_row weights. */
void q_metrics_add(q_metrics_acc *a, const float *w, const float *wq, int64_t nrows,
                   int64_t n_per_row, const float *imatrix);
void q_metrics_merge(q_metrics_acc *a, const q_metrics_acc *b);
/* Derived figures. SQNR = 10 log10(Σw² / Σe²) (+inf when exact); cosine = 1 for
 * two zero tensors; relative RMSE 0 for an exact all-zero tensor. */
void q_metrics_finish(const q_metrics_acc *a, q_metrics *out);

#endif
