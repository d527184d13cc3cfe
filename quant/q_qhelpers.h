/* q_qhelpers.h — internal helpers shared by ggml's quantizers: the scalar
 * references (q_quants.c, q_kquants.c) and the kernels' scalar tails
 * (kernels/k_kquants.c). Not part of the public API.
 *
 * Every function reproduces ggml-quants.c's float operations in ggml's order
 * (no reassociation, no FMA contraction) so that the blocks match ggml's bytes.
 */
#ifndef Q_QHELPERS_H
#define Q_QHELPERS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "q_blocks.h"
#include "q_dtype.h"

/* Blocks whose largest magnitude is below this are "all zero" in ggml's
 * searches (GROUP_MAX_EPS). */
#define Q_QH_GROUP_MAX_EPS 1e-15f

static inline int q_qh_imin(int a, int b)
{
    return a < b ? a : b;
}

static inline int q_qh_imax(int a, int b)
{
    return a > b ? a : b;
}

/* Round to nearest, ties to even, for |f| <= 2^22 - 1: adding 1.5 * 2^23 puts
 * the integer part in the low mantissa bits (ggml's nearest_int). Out of range
 * (and for inf/NaN) it returns the same bit-pattern garbage as ggml's, but
 * with defined behaviour. */
static inline int q_qh_nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* The value of largest magnitude among x[0..n) (the first one on a tie, 0 when
 * all are 0); *amax receives its magnitude. */
static inline float q_qh_absmax(int n, const float *x, float *amax)
{
    float max = 0;
    *amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > *amax) {
            *amax = ax;
            max = x[i];
        }
    }
    return max;
}

/* f32 -> f16 as ggml's GGML_FP32_TO_FP16: round to nearest even; every NaN
 * becomes the quiet NaN 0x7e00 with the sign kept. */
static inline uint16_t q_qh_f16(float f)
{
    if (isnan(f)) {
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        return (uint16_t)(((u >> 16) & 0x8000u) | 0x7e00u);
    }
    return q_f32_to_f16(f);
}

/* Symmetric levels l in [-nmax, nmax-1] for n values (stored as l + nmax in
 * L), weighted least squares, with 18 extra trial scales around nmax/max
 * (ggml's make_qx_quants, rmse_type 1). Weights are qw, or x² when qw is NULL.
 * Returns the scale (negative when the largest magnitude is negative); 0 for
 * an all-zero group (L all 0). */
float q_qh_make_qx(int n, int nmax, const float *x, int8_t *L, const float *qw);

/* Asymmetric levels l in [0, nmax] with x ≈ scale * l - the_min, the_min >= 0,
 * for n <= 32 values: a weighted least-squares fit of scale and min for
 * nstep + 1 trial inverse scales (rmin + rdelta * is + nmax) / (max - min),
 * keeping the fit with the smallest weighted squared (or absolute, use_mad)
 * error; a better fit replaces min for the later trials (ggml's
 * make_qkx2_quants / make_qkx3_quants). clamp_first: the trials clamp the
 * level candidate to [0, nmax] before rounding (newer ggml) instead of after
 * (llama-cpp-python 0.3.36); the two differ only where it is inf, NaN or
 * beyond 2^22. Returns the scale; *the_min receives minus the minimum. */
float q_qh_make_qkx(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                    float *the_min, float rmin, float rdelta, int nstep, bool use_mad,
                    bool clamp_first);

/* Quantizes n non-negative values (sub-block scales or mins) to levels
 * 0..nmax with importance weights qw: 8 trial scales around nmax/max, then up
 * to five passes of coordinate descent (ggml's make_qp_quants). Returns the
 * scale of the levels. */
float q_qh_make_qp(int n, int nmax, const float *x, uint8_t *L, const float *qw);

/* Sum of squares of one super-block (QK_K values), in element order. */
float q_qh_sumsq(const float *x);

/* Q4_K / Q5_K packed 6-bit scale ls and min lm of sub-block j (12 bytes of q;
 * j >= 4 ORs into bytes that must start zeroed). */
void q_qh_k4_put(uint8_t *q, int j, uint8_t ls, uint8_t lm);

/* Reads back sub-block j's scale *d and min *m from the 12 packed bytes q. */
void q_qh_k4_get(int j, const uint8_t *q, uint8_t *d, uint8_t *m);

/* Q3_K scale j (6 bits, biased by 32): low nibble in byte j (j < 8) or high
 * nibble of byte j - 8, top two bits in byte 8 + j % 4 at bit 2 * (j / 4);
 * scales must start zeroed. */
void q_qh_q3_put(uint8_t *scales, int j, int l);

/* Q3_K's signed scale of sub-block j (-32..31) read back from b->scales. */
int q_qh_q3_get(const uint8_t *scales, int j);

/* Q2_K after the sixteen sub-block searches (scales[16], mins[16]): fills
 * b->scales (4-bit scale | 4-bit min << 4), b->d and b->dmin. sw: the
 * sub-blocks' weight sums on the imatrix path (weighted make_qp_quants),
 * NULL for the reference path (relative to their maxima). */
void q_qh_q2_tail(const float *scales, const float *mins, const float *sw, block_q2_K *b);
/* The imatrix path's end of q_qh_q2_tail: the levels Ls, Lm and scales dm, mm
 * that q_qh_make_qp gave for the scales and the mins, into b. */
void q_qh_q2_put(const uint8_t *Ls, const uint8_t *Lm, float dm, float mm, block_q2_K *b);

/* Q3_K after the sixteen sub-block searches (scales[16]): fills the packed
 * 6-bit b->scales (zeroed by the caller) and b->d. sw: the sub-blocks' weight
 * sums on the imatrix path (weighted make_qx_quants), NULL for the reference
 * path (relative to the largest magnitude, sign kept). */
void q_qh_q3_tail(const float *scales, const float *sw, block_q3_K *b);
/* The imatrix path's end of q_qh_q3_tail: the levels Ls (0..63) and scale
 * d_block that q_qh_make_qx gave for the scales, into b (scales zeroed). */
void q_qh_q3_put_all(const int8_t *Ls, float d_block, block_q3_K *b);

/* Q6_K after the sixteen sub-block searches (scales[16]): b->d and the int8
 * b->scales relative to d = max_scale / -128. For an all-zero block (largest
 * magnitude below Q_QH_GROUP_MAX_EPS) zeroes all of b and returns false. */
bool q_qh_q6_scales(const float *scales, block_q6_K *b);

/* Q4_K (nmax 15) / Q5_K (nmax 31) after the eight sub-block searches
 * (scales[8], mins[8]): zeroes and fills the packed 6-bit scales and mins
 * (K_SCALE_SIZE bytes), d and dmin. sw: the sub-blocks' weight sums on the
 * imatrix path (weighted make_qp_quants), NULL for the reference path
 * (scales relative to their maximum). */
void q_qh_k45_tail(int nmax, const float *scales, const float *mins, const float *sw,
                   uint16_t *d, uint16_t *dmin, uint8_t *packed);
/* The imatrix path's end of q_qh_k45_tail from q_qh_make_qp's levels Ls, Lm
 * and scales d_block, m_block of the scales and the mins. */
void q_qh_k45_put(int nmax, const uint8_t *Ls, const uint8_t *Lm, float d_block, float m_block,
                  uint16_t *d, uint16_t *dmin, uint8_t *packed);

#endif
