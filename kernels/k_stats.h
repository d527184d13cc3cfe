/* k_stats.h — moment accumulation over raw tensor data (f32, f16, bf16), the hot
 * loop of `qtune inspect`. One pass computes shifted power sums for mean, std
 * and kurtosis, min/max, NaN/Inf counts, and collects the values that lie far
 * from a pivot (candidates for the outlier count). AVX2/F16C and AVX-512 paths
 * are chosen at run time; the scalar path, which sums in double, is the
 * reference.
 */
#ifndef K_STATS_H
#define K_STATS_H

#include <stdbool.h>
#include <stdint.h>

/* Power sums of d = x - pivot over the finite values seen so far. */
typedef struct k_moments {
    int64_t n;       /* finite values */
    double s1, s2, s3, s4;
    float min, max;  /* over finite values; +inf/-inf while n == 0 */
    int64_t n_nan, n_inf;
    /* Candidate buffer (caller-owned): finite values with |x - pivot| > thr. When
     * more than cand_cap arrive, cand_overflow is set and the rest are dropped. */
    float *cand;
    int64_t n_cand, cand_cap;
    bool cand_overflow;
} k_moments;

typedef enum k_src { K_SRC_F32, K_SRC_F16, K_SRC_BF16 } k_src;

/* Resets m (keeps the candidate buffer and its capacity, empties it). */
void k_moments_init(k_moments *m, float *cand, int64_t cand_cap);

/* Accumulates n elements of src (of element type type) into m, with d = x - pivot
 * and candidates |d| > thr (computed in float, as fabsf(x - pivot) > thr). Counts,
 * min/max and the candidates (in order) do not depend on the path. The SIMD
 * paths sum in float over at most 32 values per lane, flushed to double, so
 * each sum s_k is within 2^-18 Σ|d|^k of the scalar one; thr also sets their
 * scaling (d is summed as d 2^-e with thr = f 2^e, f in [0.5, 1)), so a thr of
 * the data's scale (a few standard deviations) keeps them on the fast path. */
void k_moments_add(k_moments *m, const void *src, k_src type, int64_t n, float pivot, float thr);

/* Adds the sums of b into a (candidates are not merged). */
void k_moments_merge(k_moments *a, const k_moments *b);

/* Name of the path k_moments_add uses on this machine ("avx512", "avx2" or
 * "scalar"). */
const char *k_stats_path(void);
/* Forces the scalar path (for tests and benchmarks); false restores automatic. */
void k_stats_force_scalar(bool on);

#endif
