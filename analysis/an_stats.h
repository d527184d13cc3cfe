/* an_stats.h — per-tensor weight statistics for `qtune inspect` and the TUI. */
#ifndef AN_STATS_H
#define AN_STATS_H

#include <stdint.h>

#include "q_model.h"
#include "q_status.h"

typedef struct an_stats {
    int64_t n;        /* finite values (NaN and Inf are counted apart and excluded) */
    double min, max, mean;
    double std;       /* population standard deviation (divides by n) */
    double absmax;
    double kurtosis;  /* m4 / m2², not excess: 3 for a normal distribution; 0 if std = 0 */
    int64_t n_outliers;   /* finite values with |w - mean| > 6 std */
    double outlier_ratio; /* n_outliers / n */
    int64_t n_nan, n_inf;
    int passes;           /* 1, or 2 when the outlier count needed a second pass */
} an_stats;

/* Computes the statistics of t in one streaming pass over its data (two when the
 * outlier candidates of the first pass do not settle the count), in parallel with
 * OpenMP across row ranges. Memory: a few MB per thread, whatever the tensor's
 * size (callers streaming a model call q_tensor_release afterwards). Q_EUSAGE for a tensor
 * whose type cannot be read. */
q_status an_tensor_stats(const q_tensor *t, an_stats *out, q_err *err);

/* an_tensor_stats with side work: side(user) runs once, on one of the pass's
 * threads, while the others start on the data (the pass hands out its chunks
 * dynamically, so that thread simply takes fewer). For work that would
 * otherwise leave all but one thread idle, such as releasing the pages of the
 * tensor read before. side NULL: as an_tensor_stats. */
q_status an_tensor_stats_side(const q_tensor *t, void (*side)(void *), void *user, an_stats *out,
                              q_err *err);

#endif
