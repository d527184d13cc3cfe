/* q_kquants.c — ggml's k-quant quantizers (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K),
 * scalar references written from ggml-quants.c (llama.cpp) so that the blocks
 * come out byte for byte as ggml writes them.
 *
 * Byte identity is a property of the float arithmetic, not only of the
 * algorithm: every search below compares float errors or scale candidates, so
 * each sum is accumulated in the same order as ggml and each product is
 * grouped as ggml's C expression groups it (`w*l*l` is (w*l)*l). Keep it that
 * way: no reassociation, no fmaf, no -ffast-math, no FMA contraction (the
 * pragmas below forbid it; ggml's own reference build, ggml-base for baseline
 * x86-64, has no FMA to contract into).
 *
 * Integer conversions that truncate (a rounded value stored into int8_t or
 * uint8_t) are deliberate: ggml stores them the same way, and the wrapped value
 * is what later steps see. They only matter for degenerate inputs.
 *
 * ggml version: llama.cpp as bundled by llama-cpp-python 0.3.36. Another
 * llama.cpp revision (commit 01243c58) clamps the candidate level in
 * make_qkx3_quants (imatrix path of Q2_K/Q4_K/Q5_K) before rounding instead of
 * after, to survive a fitted minimum at the maximum; the two agree unless that
 * value is infinite, NaN or beyond 2^22, where this file follows 0.3.36.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "q_blocks.h"
#include "q_dtype.h"
#include "q_quants.h"

/* No a*b+c contraction into FMA, whatever the build mode: clang contracts
 * within an expression by default where the target has FMA, gcc in GNU C mode
 * (-std=gnu11) across statements; gcc ignores the STDC pragma. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define KQ_GROUP_MAX_EPS 1e-15f

static inline int kq_min(int a, int b)
{
    return a < b ? a : b;
}

static inline int kq_max(int a, int b)
{
    return a > b ? a : b;
}

/* Round to nearest, ties to even, for |f| <= 2^22 - 1: adding 1.5 * 2^23 puts
 * the integer part in the low mantissa bits. Out of range it returns what
 * ggml's nearest_int returns (garbage, but the same garbage). */
static inline int kq_nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

/* f32 -> f16 as ggml's GGML_FP32_TO_FP16: round to nearest even; every NaN
 * becomes the quiet NaN 0x7e00 with the sign kept. */
static inline uint16_t kq_to_f16(float f)
{
    if (isnan(f)) {
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        return (uint16_t)(((u >> 16) & 0x8000u) | 0x7e00u);
    }
    return q_f32_to_f16(f);
}

/* ---- scale searches ---- */

/* Symmetric levels l in [-nmax, nmax-1] for n values (stored as l + nmax in
 * L), weighted least squares, with 18 extra trial scales around nmax/max.
 * Weights are qw, or x² when qw is NULL (ggml's rmse_type 1). Returns the
 * scale; 0 for an all-zero group (L all 0). */
static float kq_make_qx(int n, int nmax, const float *x, int8_t *L, const float *qw)
{
    float max = 0;
    float amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < KQ_GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = kq_nearest_int(iscale * x[i]);
        l = kq_max(-nmax, kq_min(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = 0;
        suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = kq_nearest_int(iscale * x[i]);
            l = kq_max(-nmax, kq_min(nmax - 1, l));
            float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = kq_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + kq_max(-nmax, kq_min(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K's reference search: symmetric levels as kq_make_qx, then up to five
 * passes of coordinate descent on the x²-weighted fit (ggml's make_q3_quants
 * with do_rmse). L gets l + nmax. */
static float kq_make_q3(int n, int nmax, const float *x, int8_t *L)
{
    float max = 0;
    float amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < KQ_GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = kq_nearest_int(iscale * x[i]);
        l = kq_max(-nmax, kq_min(nmax - 1, l));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int pass = 0; pass < 5; ++pass) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int nl = kq_nearest_int(x[i] * sl2 / slx);
                nl = kq_max(-nmax, kq_min(nmax - 1, nl));
                if (nl != L[i]) {
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)nl;
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed)
            break;
    }
    for (int i = 0; i < n; ++i)
        L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Asymmetric levels l in [0, nmax] with x ≈ scale * l - the_min, the_min >= 0:
 * a weighted least-squares fit of scale and min for nstep + 1 trial inverse
 * scales (rmin + rdelta * is + nmax) / (max - min), keeping the fit with the
 * smallest weighted squared (or absolute, use_mad) error. As in ggml, a better
 * fit replaces min, and the later trials start from it. This is both ggml's
 * make_qkx2_quants and, for non-NULL weights, make_qkx3_quants (they differ
 * only in max == min versus max <= min, the same test for finite x). */
static float kq_make_qkx(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                         float *the_min, float rmin, float rdelta, int nstep, bool use_mad)
{
    uint8_t Laux[32];
    float min = x[0];
    float max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = kq_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)kq_max(0, kq_min(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = kq_nearest_int(iscale * (x[i] - min));
            l = kq_max(0, kq_min(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                err += weights[i] * diff;
            }
            if (err < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Quantizes n non-negative values (sub-block scales or mins) to levels
 * 0..nmax with importance weights qw: 8 trial scales around nmax/max, then up
 * to five passes of coordinate descent (ggml's make_qp_quants). Returns the
 * scale of the levels. */
static float kq_make_qp(int n, int nmax, const float *x, uint8_t *L, const float *qw)
{
    float max = 0;
    for (int i = 0; i < n; ++i)
        max = max > x[i] ? max : x[i];
    if (max < KQ_GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; ++i)
        L[i] = (uint8_t)kq_nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        float diff = x[i] - scale * L[i];
        best_mse += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0)
            continue;
        float iscale_is = (0.1f * is + nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = kq_min(nmax, kq_nearest_int(iscale_is * x[i]));
            float diff = x[i] - scale_is * l;
            mse += qw[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = kq_min(nmax, kq_nearest_int(iscale * x[i]));
        L[i] = (uint8_t)l;
        float w = qw[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int pass = 0; pass < 5; ++pass) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = qw[i];
            float slx = sumlx - w * x[i] * L[i];
            float sl2 = suml2 - w * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int nl = kq_min(nmax, kq_nearest_int(x[i] * sl2 / slx));
                if (nl != L[i]) {
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)nl;
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed)
            break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* ---- shared block tails ---- */

/* Sum of squares of one super-block, in element order. */
static float kq_sumsq(const float *x)
{
    float s = 0;
    for (int j = 0; j < QK_K; ++j)
        s += x[j] * x[j];
    return s;
}

/* Q2_K: re-round each element against the stored (f16) scales and mins, keep
 * the search's levels where a sub-block's scale is zero, pack four 2-bit
 * planes per 128 elements. */
static void kq_q2_finish(const float *x, block_q2_K *b, uint8_t *L)
{
    const float dall = q_f16_to_f32(b->d);
    const float mall = q_f16_to_f32(b->dmin);
    for (int j = 0; j < QK_K / 16; ++j) {
        const float d = dall * (b->scales[j] & 0xF);
        if (!d)
            continue;
        const float dm = mall * (b->scales[j] >> 4);
        for (int ii = 0; ii < 16; ++ii) {
            int l = kq_nearest_int((x[16 * j + ii] + dm) / d);
            L[16 * j + ii] = (uint8_t)kq_max(0, kq_min(3, l));
        }
    }
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            b->qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) |
                                         (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
        }
    }
}

/* Q3_K scale j (6 bits, biased by 32): low nibble in byte j (j < 8) or high
 * nibble of byte j - 8, top two bits in byte 8 + j % 4 at bit 2 * (j / 4). */
static void kq_q3_put_scale(uint8_t *scales, int j, int l)
{
    if (j < 8)
        scales[j] = (uint8_t)(l & 0xF);
    else
        scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
    l >>= 4;
    scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
}

/* Q3_K: re-round against the stored scales (levels -4..3, stored +4), split
 * off the high bit into hmask (bit m of byte k for element 32 * m + k), pack
 * the low two bits as Q2_K does. */
static void kq_q3_finish(const float *x, block_q3_K *b, int8_t *L)
{
    const float dall = q_f16_to_f32(b->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        int8_t sc = (int8_t)(j < 8 ? b->scales[j] & 0xF : b->scales[j - 8] >> 4);
        sc = (int8_t)((sc | (((b->scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
        float d = dall * sc;
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = kq_nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(kq_max(-4, kq_min(3, l)) + 4);
        }
    }
    memset(b->hmask, 0, sizeof b->hmask);
    int m = 0;
    uint8_t hm = 1;
    for (int j = 0; j < QK_K; ++j) {
        if (L[j] > 3) {
            b->hmask[m] |= hm;
            L[j] = (int8_t)(L[j] - 4);
        }
        if (++m == QK_K / 8) {
            m = 0;
            hm = (uint8_t)(hm << 1);
        }
    }
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            b->qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) |
                                         (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
        }
    }
}

/* Q4_K / Q5_K packed 6-bit scale ls and min lm of sub-block j (12 bytes). */
static void kq_k4_put_scale_min(uint8_t *q, int j, uint8_t ls, uint8_t lm)
{
    if (j < 4) {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
        q[j - 4] |= (uint8_t)((ls >> 4) << 6);
        q[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

static void kq_k4_get_scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K (nmax 15) / Q5_K (nmax 31): re-round each element of the eight
 * sub-blocks of 32 against the stored scales and mins. */
static void kq_k4_requant(const float *x, const uint16_t d16, const uint16_t dmin16,
                          const uint8_t *scales, int nmax, uint8_t *L)
{
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        kq_k4_get_scale_min(j, scales, &sc, &m);
        const float d = q_f16_to_f32(d16) * sc;
        if (!d)
            continue;
        const float dm = q_f16_to_f32(dmin16) * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = kq_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)kq_max(0, kq_min(nmax, l));
        }
    }
}

/* Q4_K nibbles: byte l of each 32-byte group holds elements 64g + l (low) and
 * 64g + 32 + l (high). */
static void kq_q4_pack(block_q4_K *b, const uint8_t *L)
{
    uint8_t *q = b->qs;
    for (int j = 0; j < QK_K; j += 64) {
        for (int l = 0; l < 32; ++l)
            q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
        q += 32;
    }
}

/* Q5_K: low nibbles as Q4_K; the fifth bit of element 64g + l goes to bit 2g
 * of qh[l], that of 64g + 32 + l to bit 2g + 1. */
static void kq_q5_pack(block_q5_K *b, const uint8_t *L)
{
    uint8_t *ql = b->qs;
    memset(b->qh, 0, sizeof b->qh);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < QK_K; n += 64) {
        for (int j = 0; j < 32; ++j) {
            int l1 = L[n + j];
            if (l1 > 15) {
                l1 -= 16;
                b->qh[j] |= m1;
            }
            int l2 = L[n + j + 32];
            if (l2 > 15) {
                l2 -= 16;
                b->qh[j] |= m2;
            }
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
        m1 = (uint8_t)(m1 << 2);
        m2 = (uint8_t)(m2 << 2);
        ql += 32;
    }
}

/* Q6_K from the sixteen sub-block searches (scales[], levels in L): an int8
 * scale per sub-block relative to d = max_scale / -128, re-round each
 * element to -32..31, pack low nibbles into ql and high two bits into qh. */
static void kq_q6_finish(const float *x, block_q6_K *b, const float *scales, int8_t *L)
{
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
        const float abs_scale = fabsf(scales[ib]);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < KQ_GROUP_MAX_EPS) {
        memset(b, 0, sizeof *b);
        b->d = kq_to_f16(0.f);
        return;
    }
    float iscale = -128.f / max_scale;
    b->d = kq_to_f16(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib)
        b->scales[ib] = (int8_t)kq_min(127, kq_nearest_int(iscale * scales[ib]));
    const float dall = q_f16_to_f32(b->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        float d = dall * b->scales[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = kq_nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(kq_max(-32, kq_min(31, l)) + 32);
        }
    }
    uint8_t *ql = b->ql;
    uint8_t *qh = b->qh;
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            const uint8_t q1 = L[j + l] & 0xF;
            const uint8_t q2 = L[j + l + 32] & 0xF;
            const uint8_t q3 = L[j + l + 64] & 0xF;
            const uint8_t q4 = L[j + l + 96] & 0xF;
            ql[l] = (uint8_t)(q1 | (q3 << 4));
            ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                              ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

/* ---- one super-block per type; qw is NULL or this block's 256 weights ---- */

static void kq_block_q2_k(const float *x, const float *qw, block_q2_K *b)
{
    uint8_t L[QK_K];
    float mins[QK_K / 16];
    float scales[QK_K / 16];
    float weight[16];

    if (!qw) {
        /* quantize_row_q2_K_ref: |x| weights, MAD error, 4-bit scales and
         * mins relative to their maxima */
        const float q4scale = 15.f;
        float max_scale = 0;
        float max_min = 0;
        for (int j = 0; j < QK_K / 16; ++j) {
            for (int l = 0; l < 16; ++l)
                weight[l] = fabsf(x[16 * j + l]);
            scales[j] = kq_make_qkx(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.5f,
                                    0.1f, 15, true);
            if (scales[j] > max_scale)
                max_scale = scales[j];
            if (mins[j] > max_min)
                max_min = mins[j];
        }
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < QK_K / 16; ++j)
                b->scales[j] = (uint8_t)kq_nearest_int(iscale * scales[j]);
            b->d = kq_to_f16(max_scale / q4scale);
        } else {
            for (int j = 0; j < QK_K / 16; ++j)
                b->scales[j] = 0;
            b->d = kq_to_f16(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < QK_K / 16; ++j) {
                int l = kq_nearest_int(iscale * mins[j]);
                b->scales[j] |= (uint8_t)((unsigned)l << 4);
            }
            b->dmin = kq_to_f16(max_min / q4scale);
        } else {
            b->dmin = kq_to_f16(0.f);
        }
        kq_q2_finish(x, b, L);
        return;
    }

    /* quantize_row_q2_K_impl: weights qw * sqrt(sigma² + x²), squared error,
     * scales and mins quantized by a weighted search of their own */
    float sw[QK_K / 16];
    uint8_t Ls[QK_K / 16], Lm[QK_K / 16];
    float sigma2 = kq_sumsq(x) / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        sw[j] = 0;
        for (int l = 0; l < 16; ++l)
            weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        for (int l = 0; l < 16; ++l)
            sw[j] += weight[l];
        scales[j] = kq_make_qkx(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.9f, 0.05f,
                                36, false);
    }
    float dm = kq_make_qp(QK_K / 16, 15, scales, Ls, sw);
    float mm = kq_make_qp(QK_K / 16, 15, mins, Lm, sw);
    b->d = kq_to_f16(dm);
    b->dmin = kq_to_f16(mm);
    for (int j = 0; j < QK_K / 16; ++j)
        b->scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
    kq_q2_finish(x, b, L);
}

static void kq_block_q3_k(const float *x, const float *qw, block_q3_K *b)
{
    int8_t L[QK_K];
    float scales[QK_K / 16];

    memset(b->scales, 0, sizeof b->scales);
    if (!qw) {
        /* quantize_row_q3_K_ref: make_q3_quants per sub-block, 6-bit scales
         * relative to the largest magnitude (sign kept) */
        float max_scale = 0;
        float amax = 0;
        for (int j = 0; j < QK_K / 16; ++j) {
            scales[j] = kq_make_q3(16, 4, x + 16 * j, L + 16 * j);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < QK_K / 16; ++j) {
                int8_t l = (int8_t)kq_nearest_int(iscale * scales[j]);
                l = (int8_t)(kq_max(-32, kq_min(31, l)) + 32);
                kq_q3_put_scale(b->scales, j, l);
            }
            b->d = kq_to_f16(1 / iscale);
        } else {
            b->d = kq_to_f16(0.f);
        }
        kq_q3_finish(x, b, L);
        return;
    }

    /* quantize_row_q3_K_impl: weights qw * sqrt(2σ² + x²), weighted
     * make_qx_quants per sub-block and again for the 16 scales */
    float weight[16];
    float sw[QK_K / 16];
    int8_t Ls[QK_K / 16];
    float sigma2 = 2 * kq_sumsq(x) / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l)
            weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 16; ++l)
            sumw += weight[l];
        sw[j] = sumw;
        scales[j] = kq_make_qx(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    float d_block = kq_make_qx(QK_K / 16, 32, scales, Ls, sw);
    for (int j = 0; j < QK_K / 16; ++j)
        kq_q3_put_scale(b->scales, j, Ls[j]);
    b->d = kq_to_f16(d_block);
    kq_q3_finish(x, b, L);
}

/* The sub-block searches of Q4_K and Q5_K (nmax 15 or 31): fills scales[8],
 * mins[8] and the search's levels L, then the packed 6-bit scales and mins
 * (packed, zeroed by the caller), d and dmin. */
static void kq_k45_search(const float *x, const float *qw, int nmax, uint8_t *L,
                          float *scales, float *mins, uint16_t *d, uint16_t *dmin,
                          uint8_t *packed)
{
    float weights[32];
    if (!qw) {
        /* quantize_row_q{4,5}_K_ref: weights av_x + |x| per sub-block */
        const float rmin = nmax == 15 ? -1.f : -0.5f;
        const int nstep = nmax == 15 ? 20 : 15;
        float max_scale = 0;
        float max_min = 0;
        for (int j = 0; j < QK_K / 32; ++j) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l)
                sum_x2 += x[32 * j + l] * x[32 * j + l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; ++l)
                weights[l] = av_x + fabsf(x[32 * j + l]);
            scales[j] = kq_make_qkx(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], rmin,
                                    0.1f, nstep, false);
            if (scales[j] > max_scale)
                max_scale = scales[j];
            if (mins[j] > max_min)
                max_min = mins[j];
        }
        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < QK_K / 32; ++j) {
            uint8_t ls = (uint8_t)kq_nearest_int(inv_scale * scales[j]);
            uint8_t lm = (uint8_t)kq_nearest_int(inv_min * mins[j]);
            ls = (uint8_t)kq_min(63, ls);
            lm = (uint8_t)kq_min(63, lm);
            kq_k4_put_scale_min(packed, j, ls, lm);
        }
        *d = kq_to_f16(max_scale / 63.f);
        *dmin = kq_to_f16(max_min / 63.f);
        return;
    }

    /* quantize_row_q{4,5}_K_impl: weights qw * sqrt(2σ² + x²), make_qkx3,
     * then weighted make_qp_quants for the scales and the mins */
    float sw[QK_K / 32];
    uint8_t Ls[QK_K / 32], Lm[QK_K / 32];
    float sigma2 = 2 * kq_sumsq(x) / QK_K;
    for (int j = 0; j < QK_K / 32; ++j) {
        for (int l = 0; l < 32; ++l)
            weights[l] = qw[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; ++l)
            sumw += weights[l];
        sw[j] = sumw;
        scales[j] = kq_make_qkx(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], -0.9f, 0.05f,
                                36, false);
    }
    float d_block = kq_make_qp(QK_K / 32, 63, scales, Ls, sw);
    float m_block = kq_make_qp(QK_K / 32, 63, mins, Lm, sw);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t ls = Ls[j];
        uint8_t lm = Lm[j];
        if (nmax == 31) { /* ggml clamps here for Q5_K only */
            ls = (uint8_t)kq_min(63, ls);
            lm = (uint8_t)kq_min(63, lm);
        }
        kq_k4_put_scale_min(packed, j, ls, lm);
    }
    *d = kq_to_f16(d_block);
    *dmin = kq_to_f16(m_block);
}

static void kq_block_q4_k(const float *x, const float *qw, block_q4_K *b)
{
    uint8_t L[QK_K];
    float scales[QK_K / 32], mins[QK_K / 32];
    memset(b->scales, 0, sizeof b->scales);
    kq_k45_search(x, qw, 15, L, scales, mins, &b->d, &b->dmin, b->scales);
    kq_k4_requant(x, b->d, b->dmin, b->scales, 15, L);
    kq_q4_pack(b, L);
}

static void kq_block_q5_k(const float *x, const float *qw, block_q5_K *b)
{
    uint8_t L[QK_K];
    float scales[QK_K / 32], mins[QK_K / 32];
    memset(b->scales, 0, sizeof b->scales);
    kq_k45_search(x, qw, 31, L, scales, mins, &b->d, &b->dmin, b->scales);
    kq_k4_requant(x, b->d, b->dmin, b->scales, 31, L);
    kq_q5_pack(b, L);
}

static void kq_block_q6_k(const float *x, const float *qw, block_q6_K *b)
{
    int8_t L[QK_K];
    float scales[QK_K / 16];
    /* ref: x²-weighted make_qx_quants; impl: the imatrix weights as given */
    for (int ib = 0; ib < QK_K / 16; ++ib)
        scales[ib] = kq_make_qx(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : NULL);
    kq_q6_finish(x, b, scales, L);
}

/* ---- public entry points ---- */

/* Runs blockfn over every super-block of every row. Each block is built in a
 * local struct and copied out, so dst needs no alignment. qw advances with
 * the block's column, not with the row (one imatrix per tensor). */
#define KQ_QUANTIZE(BLOCK_T, blockfn)                                                  \
    do {                                                                               \
        const int64_t nb = n_per_row / QK_K;                                           \
        uint8_t *out = dst;                                                            \
        for (int64_t r = 0; r < nrows; ++r) {                                          \
            const float *row = src + r * n_per_row;                                    \
            for (int64_t i = 0; i < nb; ++i) {                                         \
                BLOCK_T blk;                                                           \
                memset(&blk, 0, sizeof blk);                                           \
                blockfn(row + i * QK_K, imatrix ? imatrix + i * QK_K : NULL, &blk);    \
                memcpy(out, &blk, sizeof blk);                                         \
                out += sizeof blk;                                                     \
            }                                                                          \
        }                                                                              \
        return (size_t)(nrows * nb) * sizeof(BLOCK_T);                                 \
    } while (0)

size_t q_quantize_q2_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    KQ_QUANTIZE(block_q2_K, kq_block_q2_k);
}

size_t q_quantize_q3_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    KQ_QUANTIZE(block_q3_K, kq_block_q3_k);
}

size_t q_quantize_q4_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    KQ_QUANTIZE(block_q4_K, kq_block_q4_k);
}

size_t q_quantize_q5_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    KQ_QUANTIZE(block_q5_K, kq_block_q5_k);
}

size_t q_quantize_q6_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    KQ_QUANTIZE(block_q6_K, kq_block_q6_k);
}
