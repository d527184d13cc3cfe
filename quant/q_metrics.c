/* q_metrics.c — error metrics of a quantized tensor against its source.
 *
 * Every sum is kept in double and formed from the quantities it names: the
 * error sum is Σ (ŵ - w)² of the differences themselves (never Σw² - Σŵ², which
 * cancels catastrophically when the error is small). Each row is summed on its
 * own and then added to the running totals, which keeps the rounding error of
 * long tensors near that of pairwise summation at row granularity.
 *
 * Edge cases of q_metrics_finish (n values, e = ŵ - w):
 *   n = 0                every figure 0, SQNR +inf, cosine 1, weighted NaN/0;
 *   Σe² = 0              SQNR +inf, relative RMSE 0 (also for all-zero w);
 *   Σw² = 0, Σe² > 0     SQNR -inf, relative RMSE +inf;
 *   cosine               1 when w and ŵ are both all zero, 0 when only one is,
 *                        clamped to [-1, 1];
 *   weighted error       NaN without an imatrix; 0 / +inf as relative RMSE when
 *                        Σ i w² = 0.
 * NaN inputs propagate into the sums (the figures become NaN) and into max_abs;
 * they are left out of the histogram. Infinite errors go to the end bins.
 */
#include "q_metrics.h"

#include <math.h>
#include <string.h>

void q_metrics_init(q_metrics_acc *a, double hist_range)
{
    memset(a, 0, sizeof *a);
    a->hist_range = hist_range > 0.0 && isfinite(hist_range) ? hist_range : 0.0;
}

static int qm_bin(double e, double range)
{
    double t = (e + range) / (2.0 * range) * Q_ERR_HIST_BINS;
    if (!(t >= 0.0))
        return 0; /* below the range or -inf */
    if (t >= Q_ERR_HIST_BINS)
        return Q_ERR_HIST_BINS - 1;
    return (int)t;
}

void q_metrics_add(q_metrics_acc *a, const float *w, const float *wq, int64_t nrows,
                   int64_t n_per_row, const float *imatrix)
{
    if (nrows <= 0 || n_per_row <= 0)
        return;
    if (imatrix)
        a->weighted = true;
    for (int64_t r = 0; r < nrows; r++) {
        const float *x = w + r * n_per_row;
        const float *y = wq + r * n_per_row;
        double w2 = 0.0, q2 = 0.0, wq2 = 0.0, e2 = 0.0, iwe2 = 0.0, iww2 = 0.0;
        for (int64_t c = 0; c < n_per_row; c++) {
            double xv = x[c], yv = y[c];
            double e = yv - xv;
            w2 += xv * xv;
            q2 += yv * yv;
            wq2 += xv * yv;
            e2 += e * e;
            double ae = fabs(e);
            if (isnan(e))
                a->max_abs = NAN;
            else if (ae > a->max_abs)
                a->max_abs = ae;
            if (imatrix) {
                double iw = imatrix[c];
                iwe2 += iw * e * e;
                iww2 += iw * xv * xv;
            }
            if (a->hist_range > 0.0 && !isnan(e))
                a->hist[qm_bin(e, a->hist_range)]++;
        }
        a->sum_w2 += w2;
        a->sum_q2 += q2;
        a->sum_wq += wq2;
        a->sum_e2 += e2;
        a->sum_iw_e2 += iwe2;
        a->sum_iw_w2 += iww2;
    }
    a->n += nrows * n_per_row;
}

void q_metrics_merge(q_metrics_acc *a, const q_metrics_acc *b)
{
    a->n += b->n;
    a->sum_w2 += b->sum_w2;
    a->sum_q2 += b->sum_q2;
    a->sum_wq += b->sum_wq;
    a->sum_e2 += b->sum_e2;
    a->sum_iw_e2 += b->sum_iw_e2;
    a->sum_iw_w2 += b->sum_iw_w2;
    if (isnan(b->max_abs) || b->max_abs > a->max_abs)
        a->max_abs = b->max_abs;
    a->weighted = a->weighted || b->weighted;
    if (a->hist_range == 0.0)
        a->hist_range = b->hist_range;
    for (int i = 0; i < Q_ERR_HIST_BINS; i++)
        a->hist[i] += b->hist[i];
}

/* sqrt(num / den) with the conventions 0/0 = 0 and x/0 = +inf. */
static double qm_rel(double num, double den)
{
    if (num == 0.0)
        return 0.0;
    if (den == 0.0)
        return INFINITY;
    return sqrt(num) / sqrt(den);
}

void q_metrics_finish(const q_metrics_acc *a, q_metrics *out)
{
    memset(out, 0, sizeof *out);
    out->n = a->n;
    out->weighted_rel_err = NAN;
    if (a->n <= 0) {
        out->sqnr_db = INFINITY;
        out->cosine = 1.0;
        if (a->weighted)
            out->weighted_rel_err = 0.0;
        return;
    }
    out->mse = a->sum_e2 / (double)a->n;
    out->rmse = sqrt(out->mse);
    out->rel_rmse = qm_rel(a->sum_e2, a->sum_w2);
    if (a->sum_e2 == 0.0)
        out->sqnr_db = INFINITY;
    else if (a->sum_w2 == 0.0)
        out->sqnr_db = -INFINITY;
    else /* difference of logs: the ratio itself may overflow */
        out->sqnr_db = 10.0 * (log10(a->sum_w2) - log10(a->sum_e2));
    out->max_abs = a->max_abs;
    if (a->sum_w2 == 0.0 && a->sum_q2 == 0.0) {
        out->cosine = 1.0;
    } else if (a->sum_w2 == 0.0 || a->sum_q2 == 0.0) {
        out->cosine = 0.0;
    } else {
        double c = a->sum_wq / (sqrt(a->sum_w2) * sqrt(a->sum_q2));
        out->cosine = c > 1.0 ? 1.0 : c < -1.0 ? -1.0 : c;
    }
    if (a->weighted)
        out->weighted_rel_err = qm_rel(a->sum_iw_e2, a->sum_iw_w2);
}
