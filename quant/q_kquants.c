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
#include "q_qhelpers.h"
#include "q_quants.h"

/* No a*b+c contraction into FMA, whatever the build mode: clang contracts
 * within an expression by default where the target has FMA, gcc in GNU C mode
 * (-std=gnu11) across statements; gcc ignores the STDC pragma. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* ---- scale searches ---- */

/* Q3_K's reference search: symmetric levels as q_qh_make_qx, then up to five
 * passes of coordinate descent on the x²-weighted fit (ggml's make_q3_quants
 * with do_rmse). L gets l + nmax. */
static float kq_make_q3(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    float max = q_qh_absmax(n, x, &amax);
    if (amax < Q_QH_GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = q_qh_nearest_int(iscale * x[i]);
        l = q_qh_imax(-nmax, q_qh_imin(nmax - 1, l));
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
                int nl = q_qh_nearest_int(x[i] * sl2 / slx);
                nl = q_qh_imax(-nmax, q_qh_imin(nmax - 1, nl));
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

/* ---- shared block tails ---- */

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
            int l = q_qh_nearest_int((x[16 * j + ii] + dm) / d);
            L[16 * j + ii] = (uint8_t)q_qh_imax(0, q_qh_imin(3, l));
        }
    }
    for (int j = 0; j < QK_K; j += 128) {
        for (int l = 0; l < 32; ++l) {
            b->qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) |
                                         (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
        }
    }
}

/* Q3_K: re-round against the stored scales (levels -4..3, stored +4), split
 * off the high bit into hmask (bit m of byte k for element 32 * m + k), pack
 * the low two bits as Q2_K does. */
static void kq_q3_finish(const float *x, block_q3_K *b, int8_t *L)
{
    const float dall = q_f16_to_f32(b->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        float d = dall * q_qh_q3_get(b->scales, j);
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = q_qh_nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(q_qh_imax(-4, q_qh_imin(3, l)) + 4);
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

/* Q4_K (nmax 15) / Q5_K (nmax 31): re-round each element of the eight
 * sub-blocks of 32 against the stored scales and mins. */
static void kq_k4_requant(const float *x, const uint16_t d16, const uint16_t dmin16,
                          const uint8_t *scales, int nmax, uint8_t *L)
{
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t sc, m;
        q_qh_k4_get(j, scales, &sc, &m);
        const float d = q_f16_to_f32(d16) * sc;
        if (!d)
            continue;
        const float dm = q_f16_to_f32(dmin16) * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = q_qh_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)q_qh_imax(0, q_qh_imin(nmax, l));
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
    if (!q_qh_q6_scales(scales, b))
        return;
    const float dall = q_f16_to_f32(b->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        float d = dall * b->scales[j];
        if (!d)
            continue;
        for (int ii = 0; ii < 16; ++ii) {
            int l = q_qh_nearest_int(x[16 * j + ii] / d);
            L[16 * j + ii] = (int8_t)(q_qh_imax(-32, q_qh_imin(31, l)) + 32);
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
        for (int j = 0; j < QK_K / 16; ++j) {
            for (int l = 0; l < 16; ++l)
                weight[l] = fabsf(x[16 * j + l]);
            scales[j] = q_qh_make_qkx(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.5f,
                                      0.1f, 15, true, false);
        }
        q_qh_q2_tail(scales, mins, NULL, b);
        kq_q2_finish(x, b, L);
        return;
    }

    /* quantize_row_q2_K_impl: weights qw * sqrt(sigma² + x²), squared error,
     * scales and mins quantized by a weighted search of their own */
    float sw[QK_K / 16];
    float sigma2 = q_qh_sumsq(x) / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        sw[j] = 0;
        for (int l = 0; l < 16; ++l)
            weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        for (int l = 0; l < 16; ++l)
            sw[j] += weight[l];
        scales[j] = q_qh_make_qkx(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.9f,
                                  0.05f, 36, false, false);
    }
    q_qh_q2_tail(scales, mins, sw, b);
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
        for (int j = 0; j < QK_K / 16; ++j)
            scales[j] = kq_make_q3(16, 4, x + 16 * j, L + 16 * j);
        q_qh_q3_tail(scales, NULL, b);
        kq_q3_finish(x, b, L);
        return;
    }

    /* quantize_row_q3_K_impl: weights qw * sqrt(2σ² + x²), weighted
     * make_qx_quants per sub-block and again for the 16 scales */
    float weight[16];
    float sw[QK_K / 16];
    float sigma2 = 2 * q_qh_sumsq(x) / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
        for (int l = 0; l < 16; ++l)
            weight[l] = qw[16 * j + l] * sqrtf(sigma2 + x[16 * j + l] * x[16 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 16; ++l)
            sumw += weight[l];
        sw[j] = sumw;
        scales[j] = q_qh_make_qx(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    q_qh_q3_tail(scales, sw, b);
    kq_q3_finish(x, b, L);
}

/* The sub-block searches of Q4_K and Q5_K (nmax 15 or 31): fills scales[8],
 * mins[8] and the search's levels L, then the packed 6-bit scales and mins
 * (packed), d and dmin. */
static void kq_k45_search(const float *x, const float *qw, int nmax, uint8_t *L,
                          float *scales, float *mins, uint16_t *d, uint16_t *dmin,
                          uint8_t *packed)
{
    float weights[32];
    if (!qw) {
        /* quantize_row_q{4,5}_K_ref: weights av_x + |x| per sub-block */
        const float rmin = nmax == 15 ? -1.f : -0.5f;
        const int nstep = nmax == 15 ? 20 : 15;
        for (int j = 0; j < QK_K / 32; ++j) {
            float sum_x2 = 0;
            for (int l = 0; l < 32; ++l)
                sum_x2 += x[32 * j + l] * x[32 * j + l];
            float av_x = sqrtf(sum_x2 / 32);
            for (int l = 0; l < 32; ++l)
                weights[l] = av_x + fabsf(x[32 * j + l]);
            scales[j] = q_qh_make_qkx(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j],
                                      rmin, 0.1f, nstep, false, false);
        }
        q_qh_k45_tail(nmax, scales, mins, NULL, d, dmin, packed);
        return;
    }

    /* quantize_row_q{4,5}_K_impl: weights qw * sqrt(2σ² + x²), make_qkx3,
     * then weighted make_qp_quants for the scales and the mins */
    float sw[QK_K / 32];
    float sigma2 = 2 * q_qh_sumsq(x) / QK_K;
    for (int j = 0; j < QK_K / 32; ++j) {
        for (int l = 0; l < 32; ++l)
            weights[l] = qw[32 * j + l] * sqrtf(sigma2 + x[32 * j + l] * x[32 * j + l]);
        float sumw = 0;
        for (int l = 0; l < 32; ++l)
            sumw += weights[l];
        sw[j] = sumw;
        scales[j] = q_qh_make_qkx(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], -0.9f,
                                  0.05f, 36, false, false);
    }
    q_qh_k45_tail(nmax, scales, mins, sw, d, dmin, packed);
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
        scales[ib] = q_qh_make_qx(16, 32, x + 16 * ib, L + 16 * ib, qw ? qw + 16 * ib : NULL);
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
