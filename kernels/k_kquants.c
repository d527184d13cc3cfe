/* k_kquants.c — AVX2 and AVX-512 k-quant (Q2_K..Q6_K) and IQ4_NL quantizers,
 * byte-identical to quant/q_kquants.c and quant/q_quants.c.
 *
 * Each search (make_qkx2/qkx3, make_qx, make_q3, the IQ4_NL scale search)
 * runs in the eight lanes of AVX2 registers, one sub-block (IQ4_NL: one
 * block) per lane, two registers at a time (sixteen sub-blocks: one
 * Q2_K/Q3_K/Q6_K super-block, two Q4_K/Q5_K super-blocks, sixteen IQ4_NL
 * blocks) so that two dependency chains overlap. Every lane performs the
 * scalar reference's operations in the same order: each sum runs over the
 * elements in element order, products group as the reference's C expressions
 * group them, divisions stay divisions (vdivps and vsqrtps round like divss
 * and sqrtss), and nothing is contracted into FMA (the target is plain AVX2,
 * and the pragmas below forbid contraction anyway; the one explicit FMA,
 * kk_iq4_level16's, only picks a table entry). Rounding to the nearest
 * integer uses nearest_int's own bit trick, or vroundps where the argument is
 * provably inside nearest_int's exact range (see kk_qkx, kk_qx). Lanes whose
 * scalar code would take an early exit compute garbage that is replaced at
 * the end; lanes whose search would not update are masked. The small
 * per-super-block tails (scale packing, make_qp_quants on eight or sixteen
 * values) stay scalar, written in the reference's order.
 *
 * Where the CPU has AVX-512, the qkx, qx and IQ4_NL searches run with the
 * sixteen lanes in one register (kk_*_512, the same operations lane for
 * lane); make_q3 and the rest stay on AVX2. The qkx search then runs two
 * sets of sixteen sub-blocks in one call (four Q4_K/Q5_K super-blocks, two
 * Q2_K), their operations interleaved, since each trial's inverse scale
 * depends on the previous trial's result; IQ4_NL's trials find each level
 * in a table of buckets (kk_iq4_level16) instead of by a binary search.
 */
#include "k_kquants.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "k_cpu.h"
#include "q_blocks.h"
#include "q_dtype.h"
#include "q_format.h"
#include "q_qhelpers.h"
#include "q_quants.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__x86_64__) || defined(__i386__)
#define KK_X86 1
#include <immintrin.h>
#else
#define KK_X86 0
#endif

/* ---- scalar pieces (those shared with the reference are in q_qhelpers.h) ---- */

/* Source of flattened super-block b (row-major over rows of nb blocks). */
static inline const float *kk_blk(const float *src, int64_t n_per_row, int64_t nb, int64_t b)
{
    return src + (b / nb) * n_per_row + (b % nb) * QK_K;
}

/* How a search's best levels are made, per sub-block: the reference keeps
 * the level vector of the best trial; the kernels keep that trial's inverse
 * scale and offset and rebuild the levels only for the sub-blocks whose
 * stored scale rounds to zero (the only ones whose search levels reach the
 * block), with the same float operations: clamp(nearest(is * (x - mn))) + bias.
 * dead: the reference's early exit (all levels 0). */
typedef struct kk_recipe {
    float is[16], mn[16];
    uint8_t dead[16];
} kk_recipe;

static void kk_recipe_levels(const kk_recipe *r, int s, const float *x, int n, int lo, int hi,
                             int bias, uint8_t *L)
{
    if (r->dead[s]) {
        memset(L, 0, (size_t)n);
        return;
    }
    for (int i = 0; i < n; ++i) {
        int l = q_qh_nearest_int(r->is[s] * (x[i] - r->mn[s]));
        L[i] = (uint8_t)(q_qh_imax(lo, q_qh_imin(hi, l)) + bias);
    }
}

#if KK_X86

#define KK_AVX2 __attribute__((target("avx2")))
#define KK_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2")))
#define KK_NV 2 /* registers (of eight lanes) per search */

/* Transposes 16 sub-blocks of n floats (sub-block s starts at sb[s]) into
 * lane order: t[(v * n + i) * 8 + k] = sb[8 * v + k][i]. */
KK_AVX2 static void kk_transpose(const float *const *sb, int n, float *t)
{
    /* 8 × 8 tiles: rows are 8 consecutive values of 8 sub-blocks */
    for (int v = 0; v < KK_NV; ++v) {
        for (int i0 = 0; i0 < n; i0 += 8) {
            __m256 r[8], u[8], q[8];
            for (int k = 0; k < 8; ++k)
                r[k] = _mm256_loadu_ps(sb[8 * v + k] + i0);
            for (int k = 0; k < 8; k += 2) {
                u[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
                u[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
            }
            for (int k = 0; k < 8; k += 4) {
                q[k] = _mm256_shuffle_ps(u[k], u[k + 2], 0x44);
                q[k + 1] = _mm256_shuffle_ps(u[k], u[k + 2], 0xEE);
                q[k + 2] = _mm256_shuffle_ps(u[k + 1], u[k + 3], 0x44);
                q[k + 3] = _mm256_shuffle_ps(u[k + 1], u[k + 3], 0xEE);
            }
            /* q[0..3]: lanes 0-3 of elements i0+{0,1,2,3} (low half) and
             * i0+{4,5,6,7} (high half); q[4..7] the same for lanes 4-7 */
            float *o = t + (v * n + i0) * 8;
            for (int j = 0; j < 4; ++j) {
                _mm256_store_ps(o + 8 * j, _mm256_permute2f128_ps(q[j], q[j + 4], 0x20));
                _mm256_store_ps(o + 8 * (j + 4), _mm256_permute2f128_ps(q[j], q[j + 4], 0x31));
            }
        }
    }
}

KK_AVX2 static inline __m256i kk_vnint(__m256 f)
{
    __m256i i = _mm256_castps_si256(_mm256_add_ps(f, _mm256_set1_ps(12582912.f)));
    return _mm256_sub_epi32(_mm256_and_si256(i, _mm256_set1_epi32(0x007fffff)),
                            _mm256_set1_epi32(0x00400000));
}

KK_AVX2 static inline __m256i kk_vclamp(__m256i l, int lo, int hi)
{
    return _mm256_max_epi32(_mm256_set1_epi32(lo), _mm256_min_epi32(_mm256_set1_epi32(hi), l));
}

KK_AVX2 static inline __m256 kk_vabs(__m256 x)
{
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
}

/* Writes lane-ordered int32 levels (t as in kk_transpose) plus bias back to
 * sub-block order: L[s * n + i]. */
KK_AVX2 static void kk_untranspose(const __m256i *lv, int n, int bias, uint8_t *L)
{
    for (int v = 0; v < KK_NV; ++v) {
        for (int i = 0; i < n; ++i) {
            int32_t tmp[8];
            _mm256_storeu_si256((__m256i *)(void *)tmp,
                                _mm256_add_epi32(lv[v * n + i], _mm256_set1_epi32(bias)));
            for (int k = 0; k < 8; ++k)
                L[(8 * v + k) * n + i] = (uint8_t)tmp[k];
        }
    }
}

/* The sums of one search step over 16 lanes: t = iscale * (x - min) with
 * x - min precomputed in xm, rounded by vroundps (ties to even, what
 * nearest_int gives for |t| < 2^22); lo and hi say whether some live lane
 * needs the clamp at 0 or at nmax. Dead lanes (a non-finite iscale) compute
 * garbage that kk_qkx discards. */
KK_AVX2 __attribute__((always_inline)) static inline void
kk_qkx_sums(int n, const float *xt, const float *wt, const __m256 *xm, const __m256 *iscale,
            __m256 fnmax, bool lo, bool hi, __m256 *La, __m256 *sl, __m256 *sl2, __m256 *sxl)
{
    const __m256 zero = _mm256_setzero_ps();
    for (int i = 0; i < n; ++i) {
#pragma GCC unroll 2
        for (int v = 0; v < KK_NV; ++v) {
            const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
            const __m256 w = _mm256_load_ps(wt + (v * n + i) * 8);
            __m256 lf = _mm256_round_ps(_mm256_mul_ps(iscale[v], xm[v * n + i]),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            if (lo)
                lf = _mm256_max_ps(lf, zero);
            if (hi)
                lf = _mm256_min_ps(lf, fnmax);
            La[v * n + i] = lf;
            const __m256 wl = _mm256_mul_ps(w, lf);
            sl[v] = _mm256_add_ps(sl[v], wl);
            sl2[v] = _mm256_add_ps(sl2[v], _mm256_mul_ps(wl, lf));
            sxl[v] = _mm256_add_ps(sxl[v], _mm256_mul_ps(wl, x));
        }
    }
}

/* ---- make_qkx2/qkx3 on AVX-512: the sixteen sub-blocks in one register ----
 *
 * kk_qkx's operations in its order, lane for lane (sixteen lanes in one
 * register instead of eight in each of two); masks in mask registers. */

/* Element i of sub-blocks 0-7 and 8-15 of a kk_transpose layout (n values per
 * sub-block) side by side in one register. */
KK_AVX512 static inline __m512 kk_join16(const float *t, int n, int i)
{
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_load_ps(t + i * 8)),
                              _mm256_load_ps(t + (n + i) * 8), 1);
}

KK_AVX512 static inline __m512i kk_vnint16(__m512 f)
{
    __m512i i = _mm512_castps_si512(_mm512_add_ps(f, _mm512_set1_ps(12582912.f)));
    return _mm512_sub_epi32(_mm512_and_si512(i, _mm512_set1_epi32(0x007fffff)),
                            _mm512_set1_epi32(0x00400000));
}

/* clamp(nearest_int(t), 0, nmax) as a float, by nearest_int's bit trick. */
KK_AVX512 static inline __m512 kk_level16_int(__m512 t, int nmax)
{
    __m512i l = _mm512_max_epi32(_mm512_setzero_si512(),
                                 _mm512_min_epi32(_mm512_set1_epi32(nmax), kk_vnint16(t)));
    return _mm512_cvtepi32_ps(l);
}

/* kk_qkx_sums on 16 lanes; exact: the levels by the integer path. */
KK_AVX512 __attribute__((always_inline)) static inline void
kk_qkx_sums16(int n, const __m512 *X, const __m512 *W, __m512 mn, __m512 iscale, __m512 fnmax,
              int nmax, bool exact, bool lo, bool hi, __m512 *La, __m512 *sl, __m512 *sl2,
              __m512 *sxl)
{
    __m512 a = _mm512_setzero_ps(), b = a, c = a;
    for (int i = 0; i < n; ++i) {
        const __m512 xm = _mm512_sub_ps(X[i], mn); /* kk_qkx keeps these in XM */
        __m512 lf;
        if (exact) {
            lf = kk_level16_int(_mm512_mul_ps(iscale, xm), nmax);
        } else {
            lf = _mm512_roundscale_ps(_mm512_mul_ps(iscale, xm),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            /* the clamps as integer compares of the float's bits (the same
             * order for floats >= 0, every negative one below +0's bits 0):
             * Zen 4 runs them beside the float additions, which bind */
            __m512i lb = _mm512_castps_si512(lf);
            if (lo)
                lb = _mm512_max_epi32(lb, _mm512_setzero_si512());
            if (hi)
                lb = _mm512_min_epi32(lb, _mm512_castps_si512(fnmax));
            lf = _mm512_castsi512_ps(lb);
        }
        La[i] = lf;
        const __m512 wl = _mm512_mul_ps(W[i], lf);
        a = _mm512_add_ps(a, wl);
        b = _mm512_add_ps(b, _mm512_mul_ps(wl, lf));
        c = _mm512_add_ps(c, _mm512_mul_ps(wl, X[i]));
    }
    *sl = a;
    *sl2 = b;
    *sxl = c;
}

/* One search of kk_qkx_512: sixteen sub-blocks in lane order (xt, wt) and
 * where its results go. */
typedef struct kk_search {
    const float *xt, *wt;
    float *scale, *min;
    kk_recipe *rec;
} kk_search;

/* kk_qkx on G (1 or 2) independent searches of sixteen lanes each, their
 * operations interleaved so that one search's chains of additions and
 * divisions overlap the other's. A step's variant (exact levels, clamps) is
 * the one the searches together need: the exact path gives the float path's
 * levels wherever the latter is exact, and a clamp a search does not need
 * changes none of its levels; lanes of a search with no update are masked. */
KK_AVX512 __attribute__((always_inline)) static inline void
kk_qkx_512_body(const int G, int n, int nmax, const kk_search *s, float rmin, float rdelta,
                int nstep, const bool mad)
{
    __m512 X[2][32], W[2][32], La[2][32];
    __m512 mn[2], mx[2], lo[2], sw[2], sx[2], mn0[2], scale[2], bis[2], bmn[2], best[2];
    __mmask16 degen[2];
    const __m512 zero = _mm512_setzero_ps();
    const __m512 fnmax = _mm512_set1_ps((float)nmax);
    const __m512 big = _mm512_set1_ps(4194304.f), nbig = _mm512_set1_ps(-4194304.f);
    const __m512 fhalf = _mm512_set1_ps((float)nmax + 0.5f);
#pragma GCC unroll 2
    for (int g = 0; g < G; ++g) {
        for (int i = 0; i < n; ++i) {
            X[g][i] = kk_join16(s[g].xt, n, i);
            W[g][i] = kk_join16(s[g].wt, n, i);
        }
        mn[g] = X[g][0];
        mx[g] = X[g][0];
        sw[g] = W[g][0];
        sx[g] = _mm512_mul_ps(W[g][0], X[g][0]);
        for (int i = 1; i < n; ++i) {
            mn[g] = _mm512_min_ps(X[g][i], mn[g]); /* x < min ? x : min */
            mx[g] = _mm512_max_ps(X[g][i], mx[g]); /* x > max ? x : max */
            sw[g] = _mm512_add_ps(sw[g], W[g][i]);
            sx[g] = _mm512_add_ps(sx[g], _mm512_mul_ps(W[g][i], X[g][i]));
        }
        lo[g] = mn[g];
        mn[g] = _mm512_mask_mov_ps(mn[g], _mm512_cmp_ps_mask(mn[g], zero, _CMP_GT_OQ), zero);
        mn0[g] = mn[g];
        degen[g] = _mm512_cmp_ps_mask(mx[g], mn[g], _CMP_LE_OQ);
        const __m512 iscale0 = _mm512_div_ps(fnmax, _mm512_sub_ps(mx[g], mn[g]));
        scale[g] = _mm512_div_ps(_mm512_set1_ps(1.f), iscale0);
        bis[g] = iscale0;
        bmn[g] = mn[g];
        best[g] = zero;
        for (int i = 0; i < n; ++i) {
            const __m512 xm = _mm512_sub_ps(X[g][i], mn[g]);
            const __m512 lf = kk_level16_int(_mm512_mul_ps(iscale0, xm), nmax);
            __m512 d = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(scale[g], lf), mn[g]), X[g][i]);
            d = mad ? _mm512_abs_ps(d) : _mm512_mul_ps(d, d);
            best[g] = _mm512_add_ps(best[g], _mm512_mul_ps(W[g][i], d));
        }
    }

    for (int is = 0; is <= nstep; ++is) {
        const __m512 num = _mm512_set1_ps(rmin + rdelta * (float)is + (float)nmax);
        __m512 iscale[2], sl[2], sl2[2], sxl[2];
        bool outside = false, need_lo = false, need_hi = false;
#pragma GCC unroll 2
        for (int g = 0; g < G; ++g) {
            iscale[g] = _mm512_div_ps(num, _mm512_sub_ps(mx[g], mn[g]));
            const __m512 tlo = _mm512_mul_ps(iscale[g], _mm512_sub_ps(lo[g], mn[g]));
            const __m512 thi = _mm512_mul_ps(iscale[g], _mm512_sub_ps(mx[g], mn[g]));
            const __mmask16 ok = _mm512_cmp_ps_mask(tlo, nbig, _CMP_GT_OQ) &
                                 _mm512_cmp_ps_mask(thi, big, _CMP_LT_OQ);
            outside |= (__mmask16)(ok | degen[g]) != 0xffff;
            need_lo |=
                (__mmask16)(_mm512_cmp_ps_mask(tlo, zero, _CMP_GE_OQ) | degen[g]) != 0xffff;
            need_hi |=
                (__mmask16)(_mm512_cmp_ps_mask(thi, fhalf, _CMP_LT_OQ) | degen[g]) != 0xffff;
        }
#pragma GCC unroll 2
        for (int g = 0; g < G; ++g) {
            if (outside)
                kk_qkx_sums16(n, X[g], W[g], mn[g], iscale[g], fnmax, nmax, true, false, false,
                              La[g], &sl[g], &sl2[g], &sxl[g]);
            else if (need_lo && need_hi)
                kk_qkx_sums16(n, X[g], W[g], mn[g], iscale[g], fnmax, nmax, false, true, true,
                              La[g], &sl[g], &sl2[g], &sxl[g]);
            else if (need_lo)
                kk_qkx_sums16(n, X[g], W[g], mn[g], iscale[g], fnmax, nmax, false, true, false,
                              La[g], &sl[g], &sl2[g], &sxl[g]);
            else if (need_hi)
                kk_qkx_sums16(n, X[g], W[g], mn[g], iscale[g], fnmax, nmax, false, false, true,
                              La[g], &sl[g], &sl2[g], &sxl[g]);
            else
                kk_qkx_sums16(n, X[g], W[g], mn[g], iscale[g], fnmax, nmax, false, false, false,
                              La[g], &sl[g], &sl2[g], &sxl[g]);
        }
        __m512 ts[2], tm[2], err[2];
        __mmask16 dpos[2], any = 0;
#pragma GCC unroll 2
        for (int g = 0; g < G; ++g) {
            const __m512 D =
                _mm512_sub_ps(_mm512_mul_ps(sw[g], sl2[g]), _mm512_mul_ps(sl[g], sl[g]));
            dpos[g] = _mm512_cmp_ps_mask(D, zero, _CMP_GT_OQ);
            any |= dpos[g];
            ts[g] = _mm512_div_ps(
                _mm512_sub_ps(_mm512_mul_ps(sw[g], sxl[g]), _mm512_mul_ps(sx[g], sl[g])), D);
            tm[g] = _mm512_div_ps(
                _mm512_sub_ps(_mm512_mul_ps(sl2[g], sx[g]), _mm512_mul_ps(sl[g], sxl[g])), D);
            const __mmask16 mpos = _mm512_cmp_ps_mask(tm[g], zero, _CMP_GT_OQ);
            tm[g] = _mm512_mask_mov_ps(tm[g], mpos, zero);
            if (mpos) /* a fitted min above 0: rare */
                ts[g] = _mm512_mask_mov_ps(ts[g], mpos, _mm512_div_ps(sxl[g], sl2[g]));
        }
        if (!any)
            continue;
#pragma GCC unroll 2
        for (int g = 0; g < G; ++g)
            err[g] = zero;
        for (int i = 0; i < n; ++i) {
#pragma GCC unroll 2
            for (int g = 0; g < G; ++g) {
                __m512 d = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(ts[g], La[g][i]), tm[g]),
                                         X[g][i]);
                d = mad ? _mm512_abs_ps(d) : _mm512_mul_ps(d, d);
                err[g] = _mm512_add_ps(err[g], _mm512_mul_ps(W[g][i], d));
            }
        }
#pragma GCC unroll 2
        for (int g = 0; g < G; ++g) {
            const __mmask16 upd = dpos[g] & _mm512_cmp_ps_mask(err[g], best[g], _CMP_LT_OQ);
            bis[g] = _mm512_mask_mov_ps(bis[g], upd, iscale[g]);
            bmn[g] = _mm512_mask_mov_ps(bmn[g], upd, mn[g]);
            best[g] = _mm512_mask_mov_ps(best[g], upd, err[g]);
            scale[g] = _mm512_mask_mov_ps(scale[g], upd, ts[g]);
            mn[g] = _mm512_mask_mov_ps(mn[g], upd, tm[g]);
        }
    }

#pragma GCC unroll 2
    for (int g = 0; g < G; ++g) {
        _mm512_storeu_ps(s[g].scale, _mm512_mask_mov_ps(scale[g], degen[g], zero));
        _mm512_storeu_ps(s[g].min, _mm512_xor_ps(_mm512_mask_mov_ps(mn[g], degen[g], mn0[g]),
                                                 _mm512_set1_ps(-0.0f)));
        _mm512_storeu_ps(s[g].rec->is, bis[g]);
        _mm512_storeu_ps(s[g].rec->mn, bmn[g]);
        for (int k = 0; k < 16; ++k)
            s[g].rec->dead[k] = (uint8_t)((degen[g] >> k) & 1);
    }
    _mm256_zeroupper();
}

/* One copy of the search per error measure (mad: q2_k's weighted absolute
 * error) and per number of searches, so the loops have no tests. */
KK_AVX512 static void kk_qkx_512(int G, int n, int nmax, const kk_search *s, float rmin,
                                 float rdelta, int nstep, bool mad)
{
    if (G == 2 && mad)
        kk_qkx_512_body(2, n, nmax, s, rmin, rdelta, nstep, true);
    else if (G == 2)
        kk_qkx_512_body(2, n, nmax, s, rmin, rdelta, nstep, false);
    else if (mad)
        kk_qkx_512_body(1, n, nmax, s, rmin, rdelta, nstep, true);
    else
        kk_qkx_512_body(1, n, nmax, s, rmin, rdelta, nstep, false);
}

KK_AVX2 static void kk_qkx(int n, int nmax, const float *xt, const float *wt, float rmin,
                           float rdelta, int nstep, bool mad, float *scale_out, float *min_out,
                           kk_recipe *rec);

/* kk_qkx on g (1 or 2) sets of sixteen sub-blocks: with AVX-512 in one call
 * of kk_qkx_512, else one after the other. */
KK_AVX2 static void kk_qkx_g(int g, int n, int nmax, const kk_search *s, float rmin, float rdelta,
                             int nstep, bool mad)
{
    if (k_cpu_get()->avx512) {
        kk_qkx_512(g, n, nmax, s, rmin, rdelta, nstep, mad);
        return;
    }
    for (int k = 0; k < g; ++k)
        kk_qkx(n, nmax, s[k].xt, s[k].wt, rmin, rdelta, nstep, mad, s[k].scale, s[k].min,
               s[k].rec);
}

/* make_qkx2_quants / make_qkx3_quants over 16 sub-blocks of n (<= 32)
 * lane-ordered values xt with weights wt. Out: scale[16], the_min[16] and the
 * levels L[s * n + i].
 *
 * The trial levels of the search loop are rounded in the float domain:
 * vroundps (ties to even) gives exactly the integer the reference's
 * nearest_int extracts from the bits of t + 1.5·2^23 whenever |t| < 2^22, and
 * the clamp to 0..nmax is the same on floats. Since t = iscale * (x - min)
 * grows with x, every t of a lane lies between the values at the lane's
 * smallest and largest x; a step whose bounds leave (-2^22, 2^22) in any live
 * lane (a subnormal range, a fitted min far above the data) takes the integer
 * path, which reproduces nearest_int's out-of-range results bit for bit.
 * The levels of the best trial are not copied at each improvement: the lane
 * keeps the trial's iscale and min (kk_recipe). */
KK_AVX2 static void kk_qkx(int n, int nmax, const float *xt, const float *wt, float rmin,
                           float rdelta, int nstep, bool mad, float *scale_out, float *min_out,
                           kk_recipe *rec)
{
    if (k_cpu_get()->avx512) {
        const kk_search s = {xt, wt, scale_out, min_out, rec};
        kk_qkx_512(1, n, nmax, &s, rmin, rdelta, nstep, mad);
        return;
    }
    __m256 La[KK_NV * 32], XM[KK_NV * 32];
    __m256 mn[KK_NV], mx[KK_NV], lo[KK_NV], sw[KK_NV], sx[KK_NV], mn0[KK_NV], degen[KK_NV];
    __m256 scale[KK_NV], best[KK_NV], bis[KK_NV], bmn[KK_NV];
    const __m256 zero = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 fnmax = _mm256_set1_ps((float)nmax);
    const __m256 big = _mm256_set1_ps(4194304.f), nbig = _mm256_set1_ps(-4194304.f);
    const __m256 fhalf = _mm256_set1_ps((float)nmax + 0.5f);

#pragma GCC unroll 2
    for (int v = 0; v < KK_NV; ++v) {
        const float *xv = xt + v * n * 8, *wv = wt + v * n * 8;
        __m256 x = _mm256_load_ps(xv), w = _mm256_load_ps(wv);
        mn[v] = x;
        mx[v] = x;
        sw[v] = w;
        sx[v] = _mm256_mul_ps(w, x);
        for (int i = 1; i < n; ++i) {
            x = _mm256_load_ps(xv + 8 * i);
            w = _mm256_load_ps(wv + 8 * i);
            mn[v] = _mm256_min_ps(x, mn[v]); /* x < min ? x : min */
            mx[v] = _mm256_max_ps(x, mx[v]); /* x > max ? x : max */
            sw[v] = _mm256_add_ps(sw[v], w);
            sx[v] = _mm256_add_ps(sx[v], _mm256_mul_ps(w, x));
        }
        lo[v] = mn[v];
        mn[v] = _mm256_blendv_ps(mn[v], zero, _mm256_cmp_ps(mn[v], zero, _CMP_GT_OQ));
        mn0[v] = mn[v];
        degen[v] = _mm256_cmp_ps(mx[v], mn[v], _CMP_LE_OQ);
        __m256 iscale = _mm256_div_ps(fnmax, _mm256_sub_ps(mx[v], mn[v]));
        scale[v] = _mm256_div_ps(_mm256_set1_ps(1.f), iscale);
        bis[v] = iscale;
        bmn[v] = mn[v];
        best[v] = zero;
        for (int i = 0; i < n; ++i) {
            x = _mm256_load_ps(xv + 8 * i);
            w = _mm256_load_ps(wv + 8 * i);
            const __m256 xm = _mm256_sub_ps(x, mn[v]);
            XM[v * n + i] = xm;
            __m256i l = kk_vclamp(kk_vnint(_mm256_mul_ps(iscale, xm)), 0, nmax);
            const __m256 lf = _mm256_cvtepi32_ps(l);
            __m256 d = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scale[v], lf), mn[v]), x);
            d = mad ? kk_vabs(d) : _mm256_mul_ps(d, d);
            best[v] = _mm256_add_ps(best[v], _mm256_mul_ps(w, d));
        }
    }

    for (int is = 0; is <= nstep; ++is) {
        const __m256 num = _mm256_set1_ps(rmin + rdelta * (float)is + (float)nmax);
        __m256 iscale[KK_NV], sl[KK_NV], sl2[KK_NV], sxl[KK_NV];
        int outside = 0, clo = 0, chi = 0;
#pragma GCC unroll 2
        for (int v = 0; v < KK_NV; ++v) {
            iscale[v] = _mm256_div_ps(num, _mm256_sub_ps(mx[v], mn[v]));
            sl[v] = zero;
            sl2[v] = zero;
            sxl[v] = zero;
            const __m256 tlo = _mm256_mul_ps(iscale[v], _mm256_sub_ps(lo[v], mn[v]));
            const __m256 thi = _mm256_mul_ps(iscale[v], _mm256_sub_ps(mx[v], mn[v]));
            const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(tlo, nbig, _CMP_GT_OQ),
                                            _mm256_cmp_ps(thi, big, _CMP_LT_OQ));
            outside |= ~_mm256_movemask_ps(_mm256_or_ps(ok, degen[v])) & 0xff;
            clo |= _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(tlo, zero, _CMP_GE_OQ), degen[v]))
                   << (8 * v);
            chi |=
                _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(thi, fhalf, _CMP_LT_OQ), degen[v]))
                << (8 * v);
        }
        if (!outside) {
            /* clamps a lane needs: t < 0 only below a fitted min, t > nmax + 0.5
             * only for the wider trial scales */
            const int need_lo = (clo & 0xffff) != 0xffff;
            const int need_hi = (chi & 0xffff) != 0xffff;
            if (need_lo && need_hi)
                kk_qkx_sums(n, xt, wt, XM, iscale, fnmax, true, true, La, sl, sl2, sxl);
            else if (need_lo)
                kk_qkx_sums(n, xt, wt, XM, iscale, fnmax, true, false, La, sl, sl2, sxl);
            else if (need_hi)
                kk_qkx_sums(n, xt, wt, XM, iscale, fnmax, false, true, La, sl, sl2, sxl);
            else
                kk_qkx_sums(n, xt, wt, XM, iscale, fnmax, false, false, La, sl, sl2, sxl);
        } else {
            for (int i = 0; i < n; ++i) {
                for (int v = 0; v < KK_NV; ++v) {
                    const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
                    const __m256 w = _mm256_load_ps(wt + (v * n + i) * 8);
                    __m256i l =
                        kk_vclamp(kk_vnint(_mm256_mul_ps(iscale[v], XM[v * n + i])), 0, nmax);
                    const __m256 lf = _mm256_cvtepi32_ps(l);
                    La[v * n + i] = lf;
                    const __m256 wl = _mm256_mul_ps(w, lf);
                    sl[v] = _mm256_add_ps(sl[v], wl);
                    sl2[v] = _mm256_add_ps(sl2[v], _mm256_mul_ps(wl, lf));
                    sxl[v] = _mm256_add_ps(sxl[v], _mm256_mul_ps(wl, x));
                }
            }
        }
        __m256 dpos[KK_NV], ts[KK_NV], tm[KK_NV], err[KK_NV];
        int any = 0;
#pragma GCC unroll 2
        for (int v = 0; v < KK_NV; ++v) {
            const __m256 D =
                _mm256_sub_ps(_mm256_mul_ps(sw[v], sl2[v]), _mm256_mul_ps(sl[v], sl[v]));
            dpos[v] = _mm256_cmp_ps(D, zero, _CMP_GT_OQ);
            any |= _mm256_movemask_ps(dpos[v]);
            ts[v] = _mm256_div_ps(
                _mm256_sub_ps(_mm256_mul_ps(sw[v], sxl[v]), _mm256_mul_ps(sx[v], sl[v])), D);
            tm[v] = _mm256_div_ps(
                _mm256_sub_ps(_mm256_mul_ps(sl2[v], sx[v]), _mm256_mul_ps(sl[v], sxl[v])), D);
            const __m256 mpos = _mm256_cmp_ps(tm[v], zero, _CMP_GT_OQ);
            tm[v] = _mm256_blendv_ps(tm[v], zero, mpos);
            if (_mm256_movemask_ps(mpos)) /* a fitted min above 0: rare */
                ts[v] = _mm256_blendv_ps(ts[v], _mm256_div_ps(sxl[v], sl2[v]), mpos);
            err[v] = zero;
        }
        if (!any)
            continue;
        if (mad) {
            for (int i = 0; i < n; ++i) {
#pragma GCC unroll 2
                for (int v = 0; v < KK_NV; ++v) {
                    const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
                    const __m256 w = _mm256_load_ps(wt + (v * n + i) * 8);
                    __m256 d = _mm256_sub_ps(
                        _mm256_add_ps(_mm256_mul_ps(ts[v], La[v * n + i]), tm[v]), x);
                    err[v] = _mm256_add_ps(err[v], _mm256_mul_ps(w, kk_vabs(d)));
                }
            }
        } else {
            for (int i = 0; i < n; ++i) {
#pragma GCC unroll 2
                for (int v = 0; v < KK_NV; ++v) {
                    const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
                    const __m256 w = _mm256_load_ps(wt + (v * n + i) * 8);
                    __m256 d = _mm256_sub_ps(
                        _mm256_add_ps(_mm256_mul_ps(ts[v], La[v * n + i]), tm[v]), x);
                    err[v] = _mm256_add_ps(err[v], _mm256_mul_ps(w, _mm256_mul_ps(d, d)));
                }
            }
        }
#pragma GCC unroll 2
        for (int v = 0; v < KK_NV; ++v) {
            const __m256 upd = _mm256_and_ps(dpos[v], _mm256_cmp_ps(err[v], best[v], _CMP_LT_OQ));
            if (!_mm256_movemask_ps(upd))
                continue;
            bis[v] = _mm256_blendv_ps(bis[v], iscale[v], upd);
            bmn[v] = _mm256_blendv_ps(bmn[v], mn[v], upd);
            best[v] = _mm256_blendv_ps(best[v], err[v], upd);
            scale[v] = _mm256_blendv_ps(scale[v], ts[v], upd);
            mn[v] = _mm256_blendv_ps(mn[v], tm[v], upd);
            for (int i = 0; i < n; ++i)
                XM[v * n + i] = _mm256_sub_ps(_mm256_load_ps(xt + (v * n + i) * 8), mn[v]);
        }
    }

    for (int v = 0; v < KK_NV; ++v) {
        _mm256_storeu_ps(scale_out + 8 * v, _mm256_blendv_ps(scale[v], zero, degen[v]));
        _mm256_storeu_ps(min_out + 8 * v,
                         _mm256_xor_ps(_mm256_blendv_ps(mn[v], mn0[v], degen[v]), sign));
        _mm256_storeu_ps(rec->is + 8 * v, bis[v]);
        _mm256_storeu_ps(rec->mn + 8 * v, bmn[v]);
        const int m = _mm256_movemask_ps(degen[v]);
        for (int k = 0; k < 8; ++k)
            rec->dead[8 * v + k] = (uint8_t)((m >> k) & 1);
    }
}

/* max and amax of 16 sub-blocks as make_qx_quants / make_q3_quants find them:
 * the first element of largest magnitude. */
KK_AVX2 static void kk_vmaxabs(int n, const float *xt, __m256 *mx, __m256 *degen)
{
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int v = 0; v < KK_NV; ++v) {
        __m256 amax = zero, m = zero;
        for (int i = 0; i < n; ++i) {
            const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
            const __m256 ax = kk_vabs(x);
            const __m256 gt = _mm256_cmp_ps(ax, amax, _CMP_GT_OQ);
            amax = _mm256_blendv_ps(amax, ax, gt);
            m = _mm256_blendv_ps(m, x, gt);
        }
        mx[v] = m;
        degen[v] = _mm256_cmp_ps(amax, _mm256_set1_ps(Q_QH_GROUP_MAX_EPS), _CMP_LT_OQ);
    }
}

/* kk_vmaxabs on 16 lanes: X[i] holds element i of every sub-block. */
KK_AVX512 static void kk_vmaxabs16(int n, const __m512 *X, __m512 *mx, __mmask16 *degen)
{
    __m512 amax = _mm512_setzero_ps(), m = amax;
    for (int i = 0; i < n; ++i) {
        const __m512 ax = _mm512_abs_ps(X[i]);
        const __mmask16 gt = _mm512_cmp_ps_mask(ax, amax, _CMP_GT_OQ);
        amax = _mm512_mask_mov_ps(amax, gt, ax);
        m = _mm512_mask_mov_ps(m, gt, X[i]);
    }
    *mx = m;
    *degen = _mm512_cmp_ps_mask(amax, _mm512_set1_ps(Q_QH_GROUP_MAX_EPS), _CMP_LT_OQ);
}

/* kk_qx with the sixteen sub-blocks in one register. */
KK_AVX512 static void kk_qx_512(int n, int nmax, const float *xt, const float *wt,
                                float *scale_out, kk_recipe *rec)
{
    __m512 X[16], W[16], WX[16], mx;
    __mmask16 degen;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 flo = _mm512_set1_ps((float)-nmax), fhi = _mm512_set1_ps((float)(nmax - 1));
    for (int i = 0; i < n; ++i)
        X[i] = kk_join16(xt, n, i);
    kk_vmaxabs16(n, X, &mx, &degen);
    for (int i = 0; i < n; ++i) {
        W[i] = wt ? kk_join16(wt, n, i) : _mm512_mul_ps(X[i], X[i]);
        WX[i] = _mm512_mul_ps(W[i], X[i]);
    }
    __m512 scale = zero, best = zero, bis = zero;
    for (int is = -10; is <= 9; ++is) {
        if (is == 0)
            continue;
        /* is == -10 stands for the first pass, iscale = -nmax / max */
        const __m512 num = _mm512_set1_ps(is == -10 ? (float)-nmax : -(nmax + 0.1f * is));
        const __m512 iscale = _mm512_div_ps(num, mx);
        __m512 slx = zero, sl2 = zero;
        for (int i = 0; i < n; ++i) {
            __m512 lf = _mm512_roundscale_ps(_mm512_mul_ps(iscale, X[i]),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            lf = _mm512_max_ps(flo, _mm512_min_ps(fhi, lf));
            slx = _mm512_add_ps(slx, _mm512_mul_ps(WX[i], lf));
            sl2 = _mm512_add_ps(sl2, _mm512_mul_ps(_mm512_mul_ps(W[i], lf), lf));
        }
        if (is == -10) {
            scale = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(sl2, zero, _CMP_NEQ_UQ), slx, sl2);
            best = _mm512_mul_ps(scale, slx);
            bis = iscale;
            continue;
        }
        const __mmask16 upd = _mm512_cmp_ps_mask(sl2, zero, _CMP_GT_OQ) &
                              _mm512_cmp_ps_mask(_mm512_mul_ps(slx, slx), _mm512_mul_ps(best, sl2),
                                                 _CMP_GT_OQ);
        if (!upd)
            continue;
        bis = _mm512_mask_mov_ps(bis, upd, iscale);
        const __m512 ns = _mm512_div_ps(slx, sl2);
        scale = _mm512_mask_mov_ps(scale, upd, ns);
        best = _mm512_mask_mov_ps(best, upd, _mm512_mul_ps(ns, slx));
    }
    _mm512_storeu_ps(scale_out, _mm512_mask_mov_ps(scale, degen, zero));
    _mm512_storeu_ps(rec->is, bis);
    _mm512_storeu_ps(rec->mn, zero);
    for (int k = 0; k < 16; ++k)
        rec->dead[k] = (uint8_t)((degen >> k) & 1);
    _mm256_zeroupper();
}

/* make_qx_quants (rmse_type 1) over 16 sub-blocks of n (<= 16) values;
 * weights wt, or x² when wt is NULL. Out: scale[16] and the recipe of the
 * levels (mn 0; L of the reference is clamp(nearest(is * x)) + nmax). A live
 * lane has amax >= 1e-15, so iscale = c / max is finite and
 * |iscale * x| <= |c| (1 + 2^-22) < nmax + 1 < 2^22: vroundps (ties to
 * even) then yields nearest_int's integer, and the clamp is the same on
 * floats. Dead lanes compute garbage and are replaced at the end. w and w * x
 * do not depend on the trial scale and are computed once. */
KK_AVX2 static void kk_qx(int n, int nmax, const float *xt, const float *wt, float *scale_out,
                          kk_recipe *rec)
{
    if (k_cpu_get()->avx512) {
        kk_qx_512(n, nmax, xt, wt, scale_out, rec);
        return;
    }
    __m256 W[KK_NV * 16], WX[KK_NV * 16];
    __m256 mx[KK_NV], degen[KK_NV], scale[KK_NV], best[KK_NV], bis[KK_NV];
    const __m256 zero = _mm256_setzero_ps();
    const __m256 flo = _mm256_set1_ps((float)-nmax), fhi = _mm256_set1_ps((float)(nmax - 1));
    kk_vmaxabs(n, xt, mx, degen);
    for (int v = 0; v < KK_NV; ++v) {
        scale[v] = zero;
        best[v] = zero;
        bis[v] = zero;
        for (int i = 0; i < n; ++i) {
            const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
            const __m256 w = wt ? _mm256_load_ps(wt + (v * n + i) * 8) : _mm256_mul_ps(x, x);
            W[v * n + i] = w;
            WX[v * n + i] = _mm256_mul_ps(w, x);
        }
    }

    for (int is = -10; is <= 9; ++is) {
        if (is == 0)
            continue;
        /* is == -10 stands for the first pass, iscale = -nmax / max */
        const __m256 num = _mm256_set1_ps(is == -10 ? (float)-nmax : -(nmax + 0.1f * is));
        __m256 iscale[KK_NV], slx[KK_NV], sl2[KK_NV];
#pragma GCC unroll 2
        for (int v = 0; v < KK_NV; ++v) {
            iscale[v] = _mm256_div_ps(num, mx[v]);
            slx[v] = zero;
            sl2[v] = zero;
        }
        for (int i = 0; i < n; ++i) {
#pragma GCC unroll 2
            for (int v = 0; v < KK_NV; ++v) {
                const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
                __m256 lf = _mm256_round_ps(_mm256_mul_ps(iscale[v], x),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                lf = _mm256_max_ps(flo, _mm256_min_ps(fhi, lf));
                slx[v] = _mm256_add_ps(slx[v], _mm256_mul_ps(WX[v * n + i], lf));
                sl2[v] = _mm256_add_ps(sl2[v], _mm256_mul_ps(_mm256_mul_ps(W[v * n + i], lf), lf));
            }
        }
#pragma GCC unroll 2
        for (int v = 0; v < KK_NV; ++v) {
            if (is == -10) {
                const __m256 nz = _mm256_cmp_ps(sl2[v], zero, _CMP_NEQ_UQ);
                scale[v] = _mm256_and_ps(nz, _mm256_div_ps(slx[v], sl2[v]));
                best[v] = _mm256_mul_ps(scale[v], slx[v]);
                bis[v] = iscale[v];
                continue;
            }
            const __m256 upd =
                _mm256_and_ps(_mm256_cmp_ps(sl2[v], zero, _CMP_GT_OQ),
                              _mm256_cmp_ps(_mm256_mul_ps(slx[v], slx[v]),
                                            _mm256_mul_ps(best[v], sl2[v]), _CMP_GT_OQ));
            if (!_mm256_movemask_ps(upd))
                continue;
            bis[v] = _mm256_blendv_ps(bis[v], iscale[v], upd);
            const __m256 ns = _mm256_div_ps(slx[v], sl2[v]);
            scale[v] = _mm256_blendv_ps(scale[v], ns, upd);
            best[v] = _mm256_blendv_ps(best[v], _mm256_mul_ps(ns, slx[v]), upd);
        }
    }
    for (int v = 0; v < KK_NV; ++v) {
        _mm256_storeu_ps(scale_out + 8 * v, _mm256_blendv_ps(scale[v], zero, degen[v]));
        _mm256_storeu_ps(rec->is + 8 * v, bis[v]);
        _mm256_storeu_ps(rec->mn + 8 * v, zero);
        const int m = _mm256_movemask_ps(degen[v]);
        for (int k = 0; k < 8; ++k)
            rec->dead[8 * v + k] = (uint8_t)((m >> k) & 1);
    }
}

/* make_q3_quants (x²-weighted, with coordinate descent) over 16 sub-blocks of
 * n values. Out: scale[16] and levels + nmax in L[s * n + i]. A lane whose
 * pass changes nothing would change nothing in the next pass either, so the
 * passes continue while any lane changes (at most five). */
KK_AVX2 static void kk_q3(int n, int nmax, const float *xt, float *scale_out, uint8_t *L)
{
    __m256i Lb[KK_NV * 32];
    __m256 mx[KK_NV], degen[KK_NV], slx[KK_NV], sl2[KK_NV];
    const __m256 zero = _mm256_setzero_ps();
    kk_vmaxabs(n, xt, mx, degen);
#pragma GCC unroll 2
    for (int v = 0; v < KK_NV; ++v) {
        const __m256 iscale = _mm256_div_ps(_mm256_set1_ps((float)-nmax), mx[v]);
        slx[v] = zero;
        sl2[v] = zero;
        for (int i = 0; i < n; ++i) {
            const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
            const __m256 w = _mm256_mul_ps(x, x);
            __m256i l = kk_vclamp(kk_vnint(_mm256_mul_ps(iscale, x)), -nmax, nmax - 1);
            Lb[v * n + i] = l;
            const __m256 lf = _mm256_cvtepi32_ps(l);
            slx[v] = _mm256_add_ps(slx[v], _mm256_mul_ps(_mm256_mul_ps(w, x), lf));
            sl2[v] = _mm256_add_ps(sl2[v], _mm256_mul_ps(_mm256_mul_ps(w, lf), lf));
        }
    }
    for (int pass = 0; pass < 5; ++pass) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
#pragma GCC unroll 2
            for (int v = 0; v < KK_NV; ++v) {
                const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
                const __m256 w = _mm256_mul_ps(x, x);
                const __m256 wx = _mm256_mul_ps(w, x);
                const __m256 lf = _mm256_cvtepi32_ps(Lb[v * n + i]);
                __m256 s1 = _mm256_sub_ps(slx[v], _mm256_mul_ps(wx, lf));
                const __m256 c1 = _mm256_cmp_ps(s1, zero, _CMP_GT_OQ);
                __m256 s2 = _mm256_sub_ps(sl2[v], _mm256_mul_ps(_mm256_mul_ps(w, lf), lf));
                const __m256i nl =
                    kk_vclamp(kk_vnint(_mm256_div_ps(_mm256_mul_ps(x, s2), s1)), -nmax, nmax - 1);
                const __m256 ne = _mm256_castsi256_ps(_mm256_xor_si256(
                    _mm256_cmpeq_epi32(nl, Lb[v * n + i]), _mm256_set1_epi32(-1)));
                const __m256 nlf = _mm256_cvtepi32_ps(nl);
                s1 = _mm256_add_ps(s1, _mm256_mul_ps(wx, nlf));
                s2 = _mm256_add_ps(s2, _mm256_mul_ps(_mm256_mul_ps(w, nlf), nlf));
                const __m256 better =
                    _mm256_cmp_ps(_mm256_mul_ps(_mm256_mul_ps(s1, s1), sl2[v]),
                                  _mm256_mul_ps(_mm256_mul_ps(slx[v], slx[v]), s2), _CMP_GT_OQ);
                const __m256 upd =
                    _mm256_and_ps(_mm256_and_ps(c1, ne),
                                  _mm256_and_ps(_mm256_cmp_ps(s2, zero, _CMP_GT_OQ), better));
                /* branch-free: the updates are data-dependent */
                changed |= _mm256_movemask_ps(upd);
                Lb[v * n + i] = _mm256_blendv_epi8(Lb[v * n + i], nl, _mm256_castps_si256(upd));
                slx[v] = _mm256_blendv_ps(slx[v], s1, upd);
                sl2[v] = _mm256_blendv_ps(sl2[v], s2, upd);
            }
        }
        if (!changed)
            break;
    }
    const __m256i bias = _mm256_set1_epi32(nmax);
    for (int v = 0; v < KK_NV; ++v) {
        const __m256 pos = _mm256_cmp_ps(sl2[v], zero, _CMP_GT_OQ);
        const __m256 sc = _mm256_and_ps(pos, _mm256_div_ps(slx[v], sl2[v]));
        _mm256_storeu_ps(scale_out + 8 * v, _mm256_blendv_ps(sc, zero, degen[v]));
        const __m256i di = _mm256_castps_si256(degen[v]);
        for (int i = 0; i < n; ++i)
            Lb[v * n + i] = _mm256_andnot_si256(di, _mm256_add_epi32(Lb[v * n + i], bias));
    }
    kk_untranspose(Lb, n, 0, L);
}

/* Stores 16 (n = 16) or 32 int32 levels in 0..255 (l[0..n/8-1]) as bytes. */
KK_AVX2 static inline void kk_store_bytes(const __m256i *l, int n, uint8_t *L)
{
    if (n == 32) {
        /* in-lane packs interleave the four vectors by 128-bit halves; the
         * dword permute puts the 4-byte groups back in order */
        const __m256i p01 = _mm256_packs_epi32(l[0], l[1]);
        const __m256i p23 = _mm256_packs_epi32(l[2], l[3]);
        const __m256i b = _mm256_packus_epi16(p01, p23);
        const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        const __m256i o = _mm256_permutevar8x32_epi32(b, order);
        _mm256_storeu_si256((__m256i *)(void *)L, o);
    } else {
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(l[0], l[1]), 0xD8);
        const __m128i b =
            _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        _mm_storeu_si128((__m128i *)(void *)L, b);
    }
}

/* Re-rounds n (16 or 32) elements: clamp(nearest((x + dm) / d), lo, hi) + bias
 * into L (bytes). */
KK_AVX2 static void kk_requant(const float *x, int n, float d, float dm, int lo, int hi, int bias,
                               uint8_t *L)
{
    const __m256 vd = _mm256_set1_ps(d), vdm = _mm256_set1_ps(dm);
    __m256i l[4];
    for (int i = 0; i < n; i += 8) {
        __m256 q = _mm256_div_ps(_mm256_add_ps(_mm256_loadu_ps(x + i), vdm), vd);
        l[i / 8] = _mm256_add_epi32(kk_vclamp(kk_vnint(q), lo, hi), _mm256_set1_epi32(bias));
    }
    kk_store_bytes(l, n, L);
}

/* Same without the offset: clamp(nearest(x / d)) + bias (Q3_K, Q6_K). */
KK_AVX2 static void kk_requant_sym(const float *x, int n, float d, int lo, int hi, int bias,
                                   uint8_t *L)
{
    const __m256 vd = _mm256_set1_ps(d);
    __m256i l[4];
    for (int i = 0; i < n; i += 8) {
        __m256 q = _mm256_div_ps(_mm256_loadu_ps(x + i), vd);
        l[i / 8] = _mm256_add_epi32(kk_vclamp(kk_vnint(q), lo, hi), _mm256_set1_epi32(bias));
    }
    kk_store_bytes(l, n, L);
}

/* Four 2-bit planes per 128 levels (0..3): byte l of each 32-byte group holds
 * elements l, l + 32, l + 64 and l + 96 from its low bits up. Levels <= 3,
 * so the 16-bit shifts carry nothing across bytes. */
KK_AVX2 static void kk_2bit_pack(uint8_t *qs, const uint8_t *L)
{
    for (int j = 0; j < QK_K; j += 128) {
        __m256i q[4];
        for (int k = 0; k < 4; ++k)
            q[k] = _mm256_loadu_si256((const __m256i *)(const void *)(L + j + 32 * k));
        const __m256i p01 = _mm256_or_si256(q[0], _mm256_slli_epi16(q[1], 2));
        const __m256i p23 =
            _mm256_or_si256(_mm256_slli_epi16(q[2], 4), _mm256_slli_epi16(q[3], 6));
        const __m256i p = _mm256_or_si256(p01, p23);
        _mm256_storeu_si256((__m256i *)(void *)(qs + j / 4), p);
    }
}

/* Lane-ordered Σx² / 32 → av_x + |x| weights of the Q4_K/Q5_K reference. */
KK_AVX2 static void kk_w_avx(int n, const float *xt, float *wt)
{
    for (int v = 0; v < KK_NV; ++v) {
        __m256 s = _mm256_setzero_ps();
        for (int i = 0; i < n; ++i) {
            const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
            s = _mm256_add_ps(s, _mm256_mul_ps(x, x));
        }
        const __m256 av = _mm256_sqrt_ps(_mm256_div_ps(s, _mm256_set1_ps((float)n)));
        for (int i = 0; i < n; ++i) {
            const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
            _mm256_store_ps(wt + (v * n + i) * 8, _mm256_add_ps(av, kk_vabs(x)));
        }
    }
}

/* Importance weights qw * sqrt(sigma2 + x²) in lane order, sigma2 per
 * register (sig[v]), and their per-sub-block sums sw[16] in element order. */
KK_AVX2 static void kk_w_imat(int n, const float *xt, const float *qt, const float *sig, float *wt,
                              float *sw)
{
    for (int v = 0; v < KK_NV; ++v) {
        const __m256 s2 = _mm256_set1_ps(sig[v]);
        __m256 sum = _mm256_setzero_ps();
        for (int i = 0; i < n; ++i) {
            const __m256 x = _mm256_load_ps(xt + (v * n + i) * 8);
            const __m256 q = _mm256_load_ps(qt + (v * n + i) * 8);
            const __m256 w =
                _mm256_mul_ps(q, _mm256_sqrt_ps(_mm256_add_ps(s2, _mm256_mul_ps(x, x))));
            _mm256_store_ps(wt + (v * n + i) * 8, w);
            sum = _mm256_add_ps(sum, w);
        }
        _mm256_storeu_ps(sw + 8 * v, sum);
    }
}

/* Two Q4_K (nmax 15) or Q5_K (nmax 31) super-blocks in lane order, with
 * their weights, and the search's results. */
typedef struct kk_k45_work {
    _Alignas(32) float xt[KK_NV * 32 * 8];
    _Alignas(32) float wt[KK_NV * 32 * 8];
    float scales[16], mins[16], sw[16];
    kk_recipe rec;
} kk_k45_work;

/* The search's parameters for Q4_K/Q5_K (make_qkx2_quants) or, with an
 * importance matrix, make_qkx3_quants. */
static void kk_k45_params(int nmax, bool imat, float *rmin, float *rdelta, int *nstep)
{
    *rmin = imat ? -0.9f : nmax == 15 ? -1.f : -0.5f;
    *rdelta = imat ? 0.05f : 0.1f;
    *nstep = imat ? 36 : nmax == 15 ? 20 : 15;
}

/* q_qh_sumsq of g (1 or 2) super-blocks, their chains of additions side by
 * side (one chain is 256 dependent additions). */
static void kk_sumsq2(const float *const *x, int g, float *out)
{
    const float *x0 = x[0], *x1 = x[g - 1];
    float s0 = 0, s1 = 0;
    for (int j = 0; j < QK_K; ++j) {
        s0 += x0[j] * x0[j];
        s1 += x1[j] * x1[j];
    }
    out[0] = s0;
    out[1] = s1;
}

/* Super-blocks x[0], x[1] with weights qw[0], qw[1] (both NULL without
 * imatrix) into lane order, with the weights of the search. */
KK_AVX2 static void kk_k45_prep(const float *const *x, const float *const *qw, kk_k45_work *w)
{
    const float *sb[16];
    for (int s = 0; s < 16; ++s)
        sb[s] = x[s / 8] + 32 * (s % 8);
    kk_transpose(sb, 32, w->xt);
    if (!qw[0]) {
        kk_w_avx(32, w->xt, w->wt);
        return;
    }
    _Alignas(32) float qt[KK_NV * 32 * 8];
    const float *qb[16];
    for (int s = 0; s < 16; ++s)
        qb[s] = qw[s / 8] + 32 * (s % 8);
    kk_transpose(qb, 32, qt);
    float ss[2];
    kk_sumsq2(x, 2, ss);
    float sig[2] = {2 * ss[0] / QK_K, 2 * ss[1] / QK_K};
    kk_w_imat(32, w->xt, qt, sig, w->wt, w->sw);
}

/* The searches of g (1 or 2) prepared pairs (kk_qkx_g). */
KK_AVX2 static void kk_k45_search(int nmax, bool imat, kk_k45_work *w, int g)
{
    float rmin, rdelta;
    int nstep;
    kk_k45_params(nmax, imat, &rmin, &rdelta, &nstep);
    kk_search s[2] = {{NULL, NULL, NULL, NULL, NULL}, {NULL, NULL, NULL, NULL, NULL}};
    for (int k = 0; k < g; ++k)
        s[k] = (kk_search){w[k].xt, w[k].wt, w[k].scales, w[k].mins, &w[k].rec};
    kk_qkx_g(g, 32, nmax, s, rmin, rdelta, nstep, false);
}

/* q_qh_make_qp on four problems at once, problem k in lane k: x[k][0..n),
 * weights qw[k], n <= 16. Every lane does the reference's float operations
 * in its order; its branches become masks, and its "no level changed, stop"
 * ends the passes when no lane changed (a lane with no change in a pass would
 * change nothing in the next: the same state, the same decisions). The
 * levels are kept as the reference's uint8_t holds them (a level out of
 * 0..255 wraps). Returns false, writing nothing, when a lane leaves the path
 * the lanes share: a value negative or not finite, or a maximum below
 * Q_QH_GROUP_MAX_EPS (the caller runs the reference then). L[k][0..n) and
 * out[k] as q_qh_make_qp's levels and result. (q2_k with an importance
 * matrix: 20% of its time was the reference's make_qp, scalar.) */
KK_AVX2 static bool kk_make_qp4(int n, int nmax, const float *const *x, const float *const *qw,
                                uint8_t *const *L, float *out)
{
    __m128 X[16], W[16], WX[16];
    __m128i Lv[16];
    const __m128 zero = _mm_setzero_ps(), fmax = _mm_set1_ps(3.402823466e38f);
    __m128 max = zero, bad = zero;
    for (int i = 0; i < n; ++i) {
        X[i] = _mm_setr_ps(x[0][i], x[1][i], x[2][i], x[3][i]);
        W[i] = _mm_setr_ps(qw[0][i], qw[1][i], qw[2][i], qw[3][i]);
        /* not (0 <= x <= FLT_MAX): negative, infinite or NaN */
        bad = _mm_or_ps(bad, _mm_cmpnge_ps(X[i], zero));
        bad = _mm_or_ps(bad, _mm_cmpnle_ps(X[i], fmax));
        max = _mm_max_ps(X[i], max); /* max > x ? max : x, NaN-free */
    }
    bad = _mm_or_ps(bad, _mm_cmplt_ps(max, _mm_set1_ps(Q_QH_GROUP_MAX_EPS)));
    if (_mm_movemask_ps(bad))
        return false;
    const __m128i inmax = _mm_set1_epi32(nmax);
    const __m128 magic = _mm_set1_ps(12582912.f), one = _mm_set1_ps(1.f);
#define KK_NEAREST(f)                                                                          \
    _mm_sub_epi32(_mm_and_si128(_mm_castps_si128(_mm_add_ps((f), magic)),                     \
                                _mm_set1_epi32(0x007fffff)),                                   \
                  _mm_set1_epi32(0x00400000))
    __m128 iscale = _mm_div_ps(_mm_set1_ps((float)nmax), max);
    const __m128 scale0 = _mm_div_ps(one, iscale);
    __m128 best = zero;
    for (int i = 0; i < n; ++i) {
        /* (uint8_t) of a level <= nmax: no wrap */
        const __m128 l = _mm_cvtepi32_ps(KK_NEAREST(_mm_mul_ps(iscale, X[i])));
        const __m128 diff = _mm_sub_ps(X[i], _mm_mul_ps(scale0, l));
        best = _mm_add_ps(best, _mm_mul_ps(_mm_mul_ps(W[i], diff), diff));
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0)
            continue;
        const __m128 iscale_is = _mm_div_ps(_mm_set1_ps(0.1f * is + nmax), max);
        const __m128 scale_is = _mm_div_ps(one, iscale_is);
        __m128 mse = zero;
        for (int i = 0; i < n; ++i) {
            const __m128i li = _mm_min_epi32(inmax, KK_NEAREST(_mm_mul_ps(iscale_is, X[i])));
            const __m128 diff = _mm_sub_ps(X[i], _mm_mul_ps(scale_is, _mm_cvtepi32_ps(li)));
            mse = _mm_add_ps(mse, _mm_mul_ps(_mm_mul_ps(W[i], diff), diff));
        }
        const __m128 upd = _mm_cmplt_ps(mse, best);
        best = _mm_blendv_ps(best, mse, upd);
        iscale = _mm_blendv_ps(iscale, iscale_is, upd);
    }
    __m128 sumlx = zero, suml2 = zero;
    for (int i = 0; i < n; ++i) {
        Lv[i] = _mm_min_epi32(inmax, KK_NEAREST(_mm_mul_ps(iscale, X[i])));
        const __m128 l = _mm_cvtepi32_ps(Lv[i]);
        WX[i] = _mm_mul_ps(W[i], X[i]);
        sumlx = _mm_add_ps(sumlx, _mm_mul_ps(WX[i], l));
        suml2 = _mm_add_ps(suml2, _mm_mul_ps(_mm_mul_ps(W[i], l), l));
    }
    for (int pass = 0; pass < 5; ++pass) {
        __m128 changed = zero;
        for (int i = 0; i < n; ++i) {
            const __m128 l = _mm_cvtepi32_ps(Lv[i]);
            __m128 slx = _mm_sub_ps(sumlx, _mm_mul_ps(WX[i], l));
            __m128 sl2 = _mm_sub_ps(suml2, _mm_mul_ps(_mm_mul_ps(W[i], l), l));
            const __m128 pos = _mm_and_ps(_mm_cmpgt_ps(slx, zero), _mm_cmpgt_ps(sl2, zero));
            const __m128i nl =
                _mm_min_epi32(inmax, KK_NEAREST(_mm_div_ps(_mm_mul_ps(X[i], sl2), slx)));
            const __m128 moved =
                _mm_andnot_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(nl, Lv[i])), pos);
            if (!_mm_movemask_ps(moved))
                continue;
            const __m128 nlf = _mm_cvtepi32_ps(nl);
            slx = _mm_add_ps(slx, _mm_mul_ps(WX[i], nlf));
            sl2 = _mm_add_ps(sl2, _mm_mul_ps(_mm_mul_ps(W[i], nlf), nlf));
            const __m128 take = _mm_and_ps(
                moved, _mm_cmpgt_ps(_mm_mul_ps(_mm_mul_ps(slx, slx), suml2),
                                    _mm_mul_ps(_mm_mul_ps(sumlx, sumlx), sl2)));
            Lv[i] = _mm_castps_si128(_mm_blendv_ps(
                _mm_castsi128_ps(Lv[i]),
                _mm_castsi128_ps(_mm_and_si128(nl, _mm_set1_epi32(0xff))), take));
            sumlx = _mm_blendv_ps(sumlx, slx, take);
            suml2 = _mm_blendv_ps(suml2, sl2, take);
            changed = _mm_or_ps(changed, take);
        }
        if (!_mm_movemask_ps(changed))
            break;
    }
#undef KK_NEAREST
    _Alignas(16) int32_t lv[16][4];
    for (int i = 0; i < n; ++i)
        _mm_store_si128((__m128i *)(void *)lv[i], Lv[i]);
    _Alignas(16) float r[4];
    _mm_store_ps(r, _mm_blendv_ps(zero, _mm_div_ps(sumlx, suml2), _mm_cmpgt_ps(suml2, zero)));
    for (int k = 0; k < 4; ++k) {
        for (int i = 0; i < n; ++i)
            L[k][i] = (uint8_t)lv[i][k];
        out[k] = r[k];
    }
    return true;
}

/* kk_make_qp4 on the scales and mins of two super-blocks v = 0, 1 (sc[v],
 * mn[v], weight sums sw[v], n each): levels Lq and results dq in the order
 * scales of 0, mins of 0, scales of 1, mins of 1. */
KK_AVX2 static bool kk_make_qp_pair(int n, int nmax, const float *const *sc,
                                    const float *const *mn, const float *const *sw,
                                    uint8_t Lq[4][16], float dq[4])
{
    const float *const qx[4] = {sc[0], mn[0], sc[1], mn[1]};
    const float *const qwq[4] = {sw[0], sw[0], sw[1], sw[1]};
    uint8_t *const Lo[4] = {Lq[0], Lq[1], Lq[2], Lq[3]};
    return kk_make_qp4(n, nmax, qx, qwq, Lo, dq);
}

/* The blocks of the searched pair x[0], x[1] (qw as for kk_k45_prep) into
 * out[0], out[1] (q4 or q5). */
KK_AVX2 static void kk_k45_finish(int nmax, const float *const *x, const float *const *qw,
                                  const kk_k45_work *w, block_q4_K *o4, block_q5_K *o5)
{
    const float *scales = w->scales, *mins = w->mins, *sw = w->sw;
    const kk_recipe *rec = &w->rec;
    uint8_t L[2 * QK_K];
    /* with an importance matrix, the scales' and mins' make_qp of both blocks
     * in the lanes of one kk_make_qp4 */
    uint8_t Lq[4][16];
    float dq[4];
    const float *const scv[2] = {scales, scales + 8}, *const mnv[2] = {mins, mins + 8};
    const float *const swv[2] = {sw, sw + 8};
    const bool qp4 = qw[0] && kk_make_qp_pair(QK_K / 32, 63, scv, mnv, swv, Lq, dq);
    for (int v = 0; v < 2; ++v) {
        uint16_t d16, dm16;
        uint8_t packed[K_SCALE_SIZE];
        uint8_t *Lv = L + v * QK_K;
        if (qp4)
            q_qh_k45_put(nmax, Lq[2 * v], Lq[2 * v + 1], dq[2 * v], dq[2 * v + 1], &d16, &dm16,
                         packed);
        else
            q_qh_k45_tail(nmax, scales + 8 * v, mins + 8 * v, qw[0] ? sw + 8 * v : NULL, &d16,
                          &dm16, packed);
        const float dall = q_f16_to_f32(d16), mall = q_f16_to_f32(dm16);
        for (int j = 0; j < QK_K / 32; ++j) {
            uint8_t sc, m;
            q_qh_k4_get(j, packed, &sc, &m);
            const float d = dall * sc;
            if (!d) {
                kk_recipe_levels(rec, 8 * v + j, x[v] + 32 * j, 32, 0, nmax, 0, Lv + 32 * j);
                continue;
            }
            const float dm = mall * m;
            kk_requant(x[v] + 32 * j, 32, d, dm, 0, nmax, 0, Lv + 32 * j);
        }
        if (o4) {
            o4[v].d = d16;
            o4[v].dmin = dm16;
            memcpy(o4[v].scales, packed, K_SCALE_SIZE);
            for (int j = 0; j < QK_K; j += 64) { /* levels <= 15: no carry across bytes */
                const __m256i lo = _mm256_loadu_si256((const __m256i *)(const void *)(Lv + j));
                const __m256i hi =
                    _mm256_loadu_si256((const __m256i *)(const void *)(Lv + j + 32));
                _mm256_storeu_si256((__m256i *)(void *)(o4[v].qs + j / 2),
                                    _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)));
            }
        } else {
            o5[v].d = d16;
            o5[v].dmin = dm16;
            memcpy(o5[v].scales, packed, K_SCALE_SIZE);
            /* kk_q5_pack in vectors: levels <= 31, signed byte compares work */
            __m256i qh = _mm256_setzero_si256();
            const __m256i m4 = _mm256_set1_epi8(0x0F), c15 = _mm256_set1_epi8(15);
            for (int g = 0; g < QK_K / 64; ++g) {
                const __m256i a =
                    _mm256_loadu_si256((const __m256i *)(const void *)(Lv + 64 * g));
                const __m256i b =
                    _mm256_loadu_si256((const __m256i *)(const void *)(Lv + 64 * g + 32));
                qh = _mm256_or_si256(qh, _mm256_and_si256(_mm256_cmpgt_epi8(a, c15),
                                                          _mm256_set1_epi8((char)(1 << (2 * g)))));
                qh = _mm256_or_si256(qh, _mm256_and_si256(_mm256_cmpgt_epi8(b, c15),
                                                          _mm256_set1_epi8((char)(2 << (2 * g)))));
                const __m256i ql = _mm256_or_si256(
                    _mm256_and_si256(a, m4), _mm256_slli_epi16(_mm256_and_si256(b, m4), 4));
                _mm256_storeu_si256((__m256i *)(void *)(o5[v].qs + 32 * g), ql);
            }
            _mm256_storeu_si256((__m256i *)(void *)o5[v].qh, qh);
        }
    }
}

KK_AVX2 static void kk_q6_block(const float *x, const float *qw, block_q6_K *b)
{
    _Alignas(32) float xt[KK_NV * 16 * 8];
    _Alignas(32) float qt[KK_NV * 16 * 8];
    float scales[16];
    uint8_t L[QK_K];
    kk_recipe rec;
    const float *sb[16];
    for (int s = 0; s < 16; ++s)
        sb[s] = x + 16 * s;
    kk_transpose(sb, 16, xt);
    if (qw) {
        for (int s = 0; s < 16; ++s)
            sb[s] = qw + 16 * s;
        kk_transpose(sb, 16, qt);
    }
    kk_qx(16, 32, xt, qw ? qt : NULL, scales, &rec);

    memset(b, 0, sizeof *b);
    if (!q_qh_q6_scales(scales, b))
        return;
    const float dall = q_f16_to_f32(b->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        float d = dall * b->scales[j];
        if (!d) {
            kk_recipe_levels(&rec, j, x + 16 * j, 16, -32, 31, 32, L + 16 * j);
            continue;
        }
        kk_requant_sym(x + 16 * j, 16, d, -32, 31, 32, L + 16 * j);
    }
    /* kk_q6_pack with bytes in vectors: levels <= 63, so the 16-bit shifts
     * carry nothing across bytes once masked */
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int h = 0; h < 2; ++h) {
        const uint8_t *Lh = L + 128 * h;
        __m256i q[4], hb[4];
        for (int k = 0; k < 4; ++k) {
            q[k] = _mm256_loadu_si256((const __m256i *)(const void *)(Lh + 32 * k));
            hb[k] = _mm256_and_si256(_mm256_srli_epi16(q[k], 4), m4);
            q[k] = _mm256_and_si256(q[k], m4);
        }
        _mm256_storeu_si256((__m256i *)(void *)(b->ql + 64 * h),
                            _mm256_or_si256(q[0], _mm256_slli_epi16(q[2], 4)));
        _mm256_storeu_si256((__m256i *)(void *)(b->ql + 64 * h + 32),
                            _mm256_or_si256(q[1], _mm256_slli_epi16(q[3], 4)));
        const __m256i qh = _mm256_or_si256(
            _mm256_or_si256(hb[0], _mm256_slli_epi16(hb[1], 2)),
            _mm256_or_si256(_mm256_slli_epi16(hb[2], 4), _mm256_slli_epi16(hb[3], 6)));
        _mm256_storeu_si256((__m256i *)(void *)(b->qh + 32 * h), qh);
    }
}

/* One Q2_K super-block in lane order with the weights of its search. */
typedef struct kk_q2_work {
    _Alignas(32) float xt[KK_NV * 16 * 8];
    _Alignas(32) float wt[KK_NV * 16 * 8];
    float scales[16], mins[16], sw[16];
    kk_recipe rec;
} kk_q2_work;

/* sumsq: q_qh_sumsq(x) (with qw only) */
KK_AVX2 static void kk_q2_prep(const float *x, const float *qw, float sumsq, kk_q2_work *w)
{
    const float *sb[16];
    for (int s = 0; s < 16; ++s)
        sb[s] = x + 16 * s;
    kk_transpose(sb, 16, w->xt);
    if (!qw) {
        for (int k = 0; k < KK_NV * 16 * 8; ++k)
            w->wt[k] = fabsf(w->xt[k]);
        return;
    }
    _Alignas(32) float qt[KK_NV * 16 * 8];
    for (int s = 0; s < 16; ++s)
        sb[s] = qw + 16 * s;
    kk_transpose(sb, 16, qt);
    float sig[2];
    sig[0] = sig[1] = sumsq / QK_K;
    kk_w_imat(16, w->xt, qt, sig, w->wt, w->sw);
}

/* g (1 or 2) Q2_K super-blocks x[k] (weights qw[k], NULL without imatrix)
 * into b[k]; with AVX-512 the searches of both in one call. */
KK_AVX2 static void kk_q2_blocks(const float *const *x, const float *const *qw, block_q2_K *b,
                                 int g)
{
    kk_q2_work w[2];
    const bool imat = qw[0] != NULL;
    const float rmin = imat ? -0.9f : -0.5f, rdelta = imat ? 0.05f : 0.1f;
    const int nstep = imat ? 36 : 15;
    kk_search s[2] = {{NULL, NULL, NULL, NULL, NULL}, {NULL, NULL, NULL, NULL, NULL}};
    float sumsq[2] = {0, 0};
    if (imat)
        kk_sumsq2(x, g, sumsq);
    for (int k = 0; k < g; ++k) {
        kk_q2_prep(x[k], qw[k], sumsq[k], &w[k]);
        s[k] = (kk_search){w[k].xt, w[k].wt, w[k].scales, w[k].mins, &w[k].rec};
    }
    kk_qkx_g(g, 16, 3, s, rmin, rdelta, nstep, !imat);
    /* with an importance matrix, the scales' and mins' make_qp of both blocks
     * (of block 0 twice when g is 1) in the lanes of one kk_make_qp4 */
    const int k1 = g - 1;
    uint8_t Lq[4][16];
    float dq[4];
    const float *const scv[2] = {w[0].scales, w[k1].scales};
    const float *const mnv[2] = {w[0].mins, w[k1].mins}, *const swv[2] = {w[0].sw, w[k1].sw};
    const bool qp4 = imat && kk_make_qp_pair(QK_K / 16, 15, scv, mnv, swv, Lq, dq);
    for (int k = 0; k < g; ++k) {
        uint8_t L[QK_K];
        memset(&b[k], 0, sizeof b[k]);
        if (qp4)
            q_qh_q2_put(Lq[2 * k], Lq[2 * k + 1], dq[2 * k], dq[2 * k + 1], &b[k]);
        else
            q_qh_q2_tail(w[k].scales, w[k].mins, imat ? w[k].sw : NULL, &b[k]);
        const float dall = q_f16_to_f32(b[k].d);
        const float mall = q_f16_to_f32(b[k].dmin);
        for (int j = 0; j < QK_K / 16; ++j) {
            const float d = dall * (b[k].scales[j] & 0xF);
            if (!d) {
                kk_recipe_levels(&w[k].rec, j, x[k] + 16 * j, 16, 0, 3, 0, L + 16 * j);
                continue;
            }
            const float dm = mall * (b[k].scales[j] >> 4);
            kk_requant(x[k] + 16 * j, 16, d, dm, 0, 3, 0, L + 16 * j);
        }
        kk_2bit_pack(b[k].qs, L);
    }
}

/* q_qh_make_qx with weights qw (never NULL) for n <= 16 values: its 19 trial
 * scales (the first, then is = -9..9 without 0) side by side in the lanes
 * of three registers, each lane's sums in the reference's order; the choice
 * among them, in trial order, and the levels as the reference has them.
 * (Q3_K with an importance matrix: its scales' make_qx, scalar, was 31% of
 * the time.) */
KK_AVX2 static float kk_make_qx_w(int n, int nmax, const float *x, int8_t *L, const float *qw)
{
    float amax;
    const float max = q_qh_absmax(n, x, &amax);
    if (amax < Q_QH_GROUP_MAX_EPS)
        return q_qh_make_qx(n, nmax, x, L, qw);
    _Alignas(32) float isc[24];
    isc[0] = -nmax / max;
    for (int t = 1, is = -9; is <= 9; ++is)
        if (is != 0)
            isc[t++] = -(nmax + 0.1f * is) / max;
    for (int t = 19; t < 24; ++t)
        isc[t] = isc[0];
    __m256 iv[3], slx[3], sl2[3];
    for (int r = 0; r < 3; ++r) {
        iv[r] = _mm256_load_ps(isc + 8 * r);
        slx[r] = sl2[r] = _mm256_setzero_ps();
    }
    for (int i = 0; i < n; ++i) {
        const __m256 xi = _mm256_set1_ps(x[i]), wi = _mm256_set1_ps(qw[i]);
        const __m256 wx = _mm256_set1_ps(qw[i] * x[i]);
        for (int r = 0; r < 3; ++r) {
            const __m256 l = _mm256_cvtepi32_ps(
                kk_vclamp(kk_vnint(_mm256_mul_ps(iv[r], xi)), -nmax, nmax - 1));
            slx[r] = _mm256_add_ps(slx[r], _mm256_mul_ps(wx, l));
            sl2[r] = _mm256_add_ps(sl2[r], _mm256_mul_ps(_mm256_mul_ps(wi, l), l));
        }
    }
    _Alignas(32) float sx[24], s2[24];
    for (int r = 0; r < 3; ++r) {
        _mm256_store_ps(sx + 8 * r, slx[r]);
        _mm256_store_ps(s2 + 8 * r, sl2[r]);
    }
    float iscale = isc[0];
    float scale = s2[0] ? sx[0] / s2[0] : 0.0f;
    float best = scale * sx[0];
    for (int t = 1; t < 19; ++t) {
        if (s2[t] > 0 && sx[t] * sx[t] > best * s2[t]) {
            iscale = isc[t];
            scale = sx[t] / s2[t];
            best = scale * sx[t];
        }
    }
    for (int i = 0; i < n; ++i) {
        const int l = q_qh_nearest_int(iscale * x[i]);
        L[i] = (int8_t)(nmax + q_qh_imax(-nmax, q_qh_imin(nmax - 1, l)));
    }
    return scale;
}

/* sumsq: q_qh_sumsq(x) (with qw only) */
KK_AVX2 static void kk_q3_block(const float *x, const float *qw, float sumsq, block_q3_K *b)
{
    _Alignas(32) float xt[KK_NV * 16 * 8];
    float scales[16];
    uint8_t L[QK_K];
    kk_recipe rec;
    const float *sb[16];
    for (int s = 0; s < 16; ++s)
        sb[s] = x + 16 * s;
    kk_transpose(sb, 16, xt);
    memset(b, 0, sizeof *b);
    if (!qw) {
        kk_q3(16, 4, xt, scales, L);
        q_qh_q3_tail(scales, NULL, b);
    } else {
        _Alignas(32) float qt[KK_NV * 16 * 8];
        _Alignas(32) float wt[KK_NV * 16 * 8];
        float sw[16];
        for (int s = 0; s < 16; ++s)
            sb[s] = qw + 16 * s;
        kk_transpose(sb, 16, qt);
        float sig[2];
        sig[0] = sig[1] = 2 * sumsq / QK_K;
        kk_w_imat(16, xt, qt, sig, wt, sw);
        kk_qx(16, 4, xt, wt, scales, &rec);
        int8_t Ls[QK_K / 16];
        const float d_block = kk_make_qx_w(QK_K / 16, 32, scales, Ls, sw);
        q_qh_q3_put_all(Ls, d_block, b);
    }
    const float dall = q_f16_to_f32(b->d);
    for (int j = 0; j < QK_K / 16; ++j) {
        float d = dall * q_qh_q3_get(b->scales, j);
        if (!d) {
            if (qw) /* the reference path's levels are in L already */
                kk_recipe_levels(&rec, j, x + 16 * j, 16, -4, 3, 4, L + 16 * j);
            continue;
        }
        kk_requant_sym(x + 16 * j, 16, d, -4, 3, 4, L + 16 * j);
    }
    /* element 32k + m: bit k of hmask[m] when its level (0..7) exceeds 3 */
    __m256i hmask = _mm256_setzero_si256();
    for (int k = 0; k < QK_K / 32; ++k) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(L + 32 * k));
        const __m256i high = _mm256_cmpgt_epi8(v, _mm256_set1_epi8(3));
        hmask = _mm256_or_si256(hmask, _mm256_and_si256(high, _mm256_set1_epi8((char)(1 << k))));
        v = _mm256_sub_epi8(v, _mm256_and_si256(high, _mm256_set1_epi8(4)));
        _mm256_storeu_si256((__m256i *)(void *)(L + 32 * k), v);
    }
    _mm256_storeu_si256((__m256i *)(void *)b->hmask, hmask);
    kk_2bit_pack(b->qs, L);
}

/* g (1 or 2) Q3_K super-blocks x[k] (weights qw[k], NULL without imatrix)
 * into b[k], their Σx² side by side. */
KK_AVX2 static void kk_q3_blocks(const float *const *x, const float *const *qw, block_q3_K *b,
                                 int g)
{
    float sumsq[2] = {0, 0};
    if (qw[0])
        kk_sumsq2(x, g, sumsq);
    for (int k = 0; k < g; ++k)
        kk_q3_block(x[k], qw[k], sumsq[k], &b[k]);
}

/* ---- IQ4_NL: sixteen 32-element blocks per call, one block per lane ---- */

/* Index of the nearest IQ4_NL level of x (upper level on a tie) as the
 * reference's binary search finds it: compares x + x with the sums of
 * neighbouring levels (small integers, exact). thr: the 15 sums padded to 16;
 * NaN compares false everywhere and gives 0, as in the reference. Returns the
 * index (int32 lanes); *q gets the level as a float. */
KK_AVX2 __attribute__((always_inline)) static inline __m256i
kk_iq4_index(__m256 x, const __m256 *thr_lo, const __m256 *thr_hi, __m256 thr7, __m256 thr3,
             __m256 thr11, __m256 val_lo, __m256 val_hi, __m256 *q)
{
    const __m256 x2 = _mm256_add_ps(x, x);
    /* step 8: threshold 7 */
    const __m256 m8 = _mm256_cmp_ps(x2, thr7, _CMP_GE_OQ);
    __m256i idx = _mm256_and_si256(_mm256_castps_si256(m8), _mm256_set1_epi32(8));
    /* step 4: threshold idx + 3 (3 or 11) */
    const __m256 t4 = _mm256_blendv_ps(thr3, thr11, m8);
    idx = _mm256_add_epi32(idx,
                           _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x2, t4, _CMP_GE_OQ)),
                                            _mm256_set1_epi32(4)));
    /* step 2: threshold idx + 1, idx in {0, 4, 8, 12}: table thr_lo[0] holds
     * thresholds 1, 5, 9, 13 at positions 0..3 */
    const __m256 t2 = _mm256_permutevar8x32_ps(*thr_lo, _mm256_srli_epi32(idx, 2));
    idx = _mm256_add_epi32(idx,
                           _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x2, t2, _CMP_GE_OQ)),
                                            _mm256_set1_epi32(2)));
    /* step 1: threshold idx, idx even: thr_hi holds thresholds 0, 2, ..., 14 */
    const __m256 t1 = _mm256_permutevar8x32_ps(*thr_hi, _mm256_srli_epi32(idx, 1));
    idx = _mm256_add_epi32(idx,
                           _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x2, t1, _CMP_GE_OQ)),
                                            _mm256_set1_epi32(1)));
    /* idx >= 8 exactly where m8 is set */
    *q = _mm256_blendv_ps(_mm256_permutevar8x32_ps(val_lo, idx),
                          _mm256_permutevar8x32_ps(val_hi, idx), m8);
    return idx;
}

/* Weighted sums Σ (w·q)·x and Σ (w·q)·q of 16 lanes at inverse scales id. */
KK_AVX2 __attribute__((always_inline)) static inline void
kk_iq4_sums(const float *xt, const float *wt, const __m256 *id, const __m256 *tab, __m256 *sqx,
            __m256 *sq2)
{
    for (int v = 0; v < KK_NV; ++v) {
        sqx[v] = _mm256_setzero_ps();
        sq2[v] = _mm256_setzero_ps();
    }
    for (int j = 0; j < QK4_NL; ++j) {
#pragma GCC unroll 2
        for (int v = 0; v < KK_NV; ++v) {
            const __m256 x = _mm256_load_ps(xt + (v * QK4_NL + j) * 8);
            const __m256 w = _mm256_load_ps(wt + (v * QK4_NL + j) * 8);
            __m256 q;
            (void)kk_iq4_index(_mm256_mul_ps(id[v], x), &tab[0], &tab[1], tab[2], tab[3], tab[4],
                               tab[5], tab[6], &q);
            const __m256 wq = _mm256_mul_ps(w, q);
            sqx[v] = _mm256_add_ps(sqx[v], _mm256_mul_ps(wq, x));
            sq2[v] = _mm256_add_ps(sq2[v], _mm256_mul_ps(wq, q));
        }
    }
}

/* Sixteen IQ4_NL blocks: block s from xb[s] with weights qb[s] (NULL without
 * imatrix) into out[s] (18 bytes, no alignment needed). */
KK_AVX2 static void kk_iq4nl_16(const float *const *xb, const float *const *qb,
                                uint8_t *const *out)
{
    _Alignas(32) float xt[KK_NV * QK4_NL * 8];
    _Alignas(32) float wt[KK_NV * QK4_NL * 8];
    const int8_t *vals = q_iq4nl_values;
    float lo8[8] = {0}, hi8[8], vlo[8], vhi[8];
    for (int k = 0; k < 4; ++k) /* thresholds 1, 5, 9, 13 */
        lo8[k] = (float)(vals[4 * k + 1] + vals[4 * k + 2]);
    for (int k = 0; k < 8; ++k) { /* thresholds 0, 2, ..., 14 */
        hi8[k] = (float)(vals[2 * k] + vals[2 * k + 1]);
        vlo[k] = (float)vals[k];
        vhi[k] = (float)vals[k + 8];
    }
    __m256 tab[7];
    tab[0] = _mm256_loadu_ps(lo8);
    tab[1] = _mm256_loadu_ps(hi8);
    tab[2] = _mm256_set1_ps((float)(vals[7] + vals[8]));
    tab[3] = _mm256_set1_ps((float)(vals[3] + vals[4]));
    tab[4] = _mm256_set1_ps((float)(vals[11] + vals[12]));
    tab[5] = _mm256_loadu_ps(vlo);
    tab[6] = _mm256_loadu_ps(vhi);

    kk_transpose(xb, QK4_NL, xt);
    const __m256 zero = _mm256_setzero_ps();
    __m256 mx[KK_NV], degen[KK_NV], d[KK_NV], best[KK_NV];
    kk_vmaxabs(QK4_NL, xt, mx, degen);
    if (qb[0]) {
        _Alignas(32) float qt[KK_NV * QK4_NL * 8];
        kk_transpose(qb, QK4_NL, qt);
        for (int v = 0; v < KK_NV; ++v) {
            __m256 s2 = zero;
            for (int j = 0; j < QK4_NL; ++j) {
                const __m256 x = _mm256_load_ps(xt + (v * QK4_NL + j) * 8);
                s2 = _mm256_add_ps(s2, _mm256_mul_ps(x, x));
            }
            s2 = _mm256_mul_ps(s2, _mm256_set1_ps(2.f / QK4_NL));
            for (int j = 0; j < QK4_NL; ++j) {
                const int o = (v * QK4_NL + j) * 8;
                const __m256 x = _mm256_load_ps(xt + o);
                _mm256_store_ps(
                    wt + o, _mm256_mul_ps(_mm256_load_ps(qt + o),
                                          _mm256_sqrt_ps(_mm256_add_ps(s2, _mm256_mul_ps(x, x)))));
            }
        }
    } else {
        for (int k = 0; k < KK_NV * QK4_NL * 8; ++k)
            wt[k] = xt[k] * xt[k];
    }

    /* first pass at d = -max / v0, then 15 trial inverse scales (itry + v0) / max
     */
    const float v0 = (float)vals[0];
    __m256 id[KK_NV], sqx[KK_NV], sq2[KK_NV];
    for (int v = 0; v < KK_NV; ++v) {
        const __m256 d0 =
            _mm256_div_ps(_mm256_xor_ps(mx[v], _mm256_set1_ps(-0.0f)), _mm256_set1_ps(v0));
        id[v] = _mm256_div_ps(_mm256_set1_ps(1.f), d0);
    }
    kk_iq4_sums(xt, wt, id, tab, sqx, sq2);
    for (int v = 0; v < KK_NV; ++v) {
        const __m256 pos = _mm256_cmp_ps(sq2[v], zero, _CMP_GT_OQ);
        d[v] = _mm256_and_ps(pos, _mm256_div_ps(sqx[v], sq2[v]));
        best[v] = _mm256_mul_ps(d[v], sqx[v]);
    }
    for (int itry = -7; itry <= 7; ++itry) {
        const __m256 num = _mm256_set1_ps((float)(itry + vals[0]));
        for (int v = 0; v < KK_NV; ++v)
            id[v] = _mm256_div_ps(num, mx[v]);
        kk_iq4_sums(xt, wt, id, tab, sqx, sq2);
        for (int v = 0; v < KK_NV; ++v) {
            const __m256 upd =
                _mm256_and_ps(_mm256_cmp_ps(sq2[v], zero, _CMP_GT_OQ),
                              _mm256_cmp_ps(_mm256_mul_ps(sqx[v], sqx[v]),
                                            _mm256_mul_ps(best[v], sq2[v]), _CMP_GT_OQ));
            const __m256 nd = _mm256_div_ps(sqx[v], sq2[v]);
            d[v] = _mm256_blendv_ps(d[v], nd, upd);
            best[v] = _mm256_blendv_ps(best[v], _mm256_mul_ps(nd, sqx[v]), upd);
        }
    }

    /* final levels at id = 1 / d (0 for d == 0, also for all-zero blocks) */
    for (int v = 0; v < KK_NV; ++v) {
        const __m256 dd = _mm256_andnot_ps(degen[v], d[v]);
        const __m256 nz = _mm256_cmp_ps(dd, zero, _CMP_NEQ_UQ);
        const __m256 idv = _mm256_and_ps(nz, _mm256_div_ps(_mm256_set1_ps(1.f), dd));
        float dv[8];
        _mm256_storeu_ps(dv, dd);
        __m256i Li[QK4_NL];
        for (int j = 0; j < QK4_NL; ++j) {
            __m256 q;
            Li[j] = kk_iq4_index(_mm256_mul_ps(idv, _mm256_load_ps(xt + (v * QK4_NL + j) * 8)),
                                 &tab[0], &tab[1], tab[2], tab[3], tab[4], tab[5], tab[6], &q);
        }
        for (int k = 0; k < 8; ++k) {
            uint8_t *o = out[8 * v + k];
            if (!o)
                continue;
            int32_t lv[QK4_NL];
            for (int j = 0; j < QK4_NL; ++j) {
                int32_t tmp[8];
                _mm256_storeu_si256((__m256i *)(void *)tmp, Li[j]);
                lv[j] = tmp[k];
            }
            const uint16_t h = q_f32_to_f16(dv[k]);
            memcpy(o + offsetof(block_iq4_nl, d), &h, sizeof h);
            for (int j = 0; j < QK4_NL / 2; ++j)
                o[offsetof(block_iq4_nl, qs) + j] = (uint8_t)(lv[j] | (lv[j + QK4_NL / 2] << 4));
        }
    }
}

/* ---- IQ4_NL on AVX-512: the sixteen blocks in the lanes of one register ----
 *
 * kk_iq4nl_16's operations in its order, lane for lane; the level search
 * reads each step's threshold from a 16-entry table with one permute. */
/* Thresholds of kk_iq4_index's four steps as tables indexed by the index so
 * far (T[k] = vals[k] + vals[k + 1]): step 8 reads T[7], step 4 T[idx + 3],
 * step 2 T[idx + 1], step 1 T[idx]; and the levels. */
typedef struct kk_iq4tab16 {
    __m512 t8, t4, t2, t1, val;
} kk_iq4tab16;

/* kk_iq4_index on 16 lanes. */
KK_AVX512 __attribute__((always_inline)) static inline __m512i
kk_iq4_index16(__m512 x, const kk_iq4tab16 *tb, __m512 *q)
{
    const __m512 x2 = _mm512_add_ps(x, x);
    __m512i idx = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(x2, tb->t8, _CMP_GE_OQ),
                                         _mm512_set1_epi32(8));
    idx = _mm512_mask_add_epi32(
        idx, _mm512_cmp_ps_mask(x2, _mm512_permutexvar_ps(idx, tb->t4), _CMP_GE_OQ), idx,
        _mm512_set1_epi32(4));
    idx = _mm512_mask_add_epi32(
        idx, _mm512_cmp_ps_mask(x2, _mm512_permutexvar_ps(idx, tb->t2), _CMP_GE_OQ), idx,
        _mm512_set1_epi32(2));
    idx = _mm512_mask_add_epi32(
        idx, _mm512_cmp_ps_mask(x2, _mm512_permutexvar_ps(idx, tb->t1), _CMP_GE_OQ), idx,
        _mm512_set1_epi32(1));
    *q = _mm512_permutexvar_ps(idx, tb->val);
    return idx;
}

/* The level index by buckets, for |x| <= 134.01 (every trial of a block
 * with finite values: |x| <= |itry + v0| |X| / |max| and a rounding or
 * two). Bucket r = round(x s + 16), s = 7/64, one FMA with 1.5 · 2^23 (its
 * low five bits index the tables), holds the x with x s in
 * [r - 16.5, r - 15.5]: 9.14 wide, narrower than the closest two thresholds
 * (11.5 apart, as halves h_k = (v_k + v_k+1) / 2 on x itself: x >= h_k is
 * x + x >= v_k + v_k+1, the reference's compare, since x + x is exact). So a
 * bucket holds at most one threshold: the index is the count of thresholds
 * below the bucket plus one where x >= the bucket's next threshold. */
#define KK_IQ4_S 0.109375f
typedef struct kk_iq4bkt16 {
    __m512 hlo, hhi;  /* next threshold of buckets 0-15 and 16-31 (+inf: none) */
    __m512i ilo, ihi; /* count of thresholds below each bucket */
    __m512 val;
} kk_iq4bkt16;

KK_AVX512 static void kk_iq4_buckets(kk_iq4bkt16 *b)
{
    float h[16];
    for (int k = 0; k < 15; ++k)
        h[k] = 0.5f * (float)(q_iq4nl_values[k] + q_iq4nl_values[k + 1]);
    h[15] = INFINITY;
    const __m512 ht = _mm512_loadu_ps(h);
    const __m512 iota = _mm512_set_ps(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512 lo[2] = {_mm512_sub_ps(iota, _mm512_set1_ps(16.5f)),
                          _mm512_sub_ps(iota, _mm512_set1_ps(0.5f))};
    __m512i cnt[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
    for (int k = 0; k < 15; ++k) {
        const __m512 hs = _mm512_set1_ps(h[k] * KK_IQ4_S); /* exact: 7 h / 64 */
        for (int v = 0; v < 2; ++v)
            cnt[v] = _mm512_mask_add_epi32(cnt[v], _mm512_cmp_ps_mask(hs, lo[v], _CMP_LT_OQ),
                                           cnt[v], _mm512_set1_epi32(1));
    }
    b->ilo = cnt[0];
    b->ihi = cnt[1];
    b->hlo = _mm512_permutexvar_ps(cnt[0], ht);
    b->hhi = _mm512_permutexvar_ps(cnt[1], ht);
    float v16[16];
    for (int k = 0; k < 16; ++k)
        v16[k] = (float)q_iq4nl_values[k];
    b->val = _mm512_loadu_ps(v16);
}

/* The level of kk_iq4_index16 for |x| <= 134.01. */
KK_AVX512 __attribute__((always_inline)) static inline __m512 kk_iq4_level16(__m512 x,
                                                                             const kk_iq4bkt16 *b)
{
    const __m512i r = _mm512_castps_si512(
        _mm512_fmadd_ps(x, _mm512_set1_ps(KK_IQ4_S), _mm512_set1_ps(0x1.8p23f + 16.f)));
    const __m512 hn = _mm512_permutex2var_ps(b->hlo, r, b->hhi);
    __m512i idx = _mm512_permutex2var_epi32(b->ilo, r, b->ihi);
    idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(x, hn, _CMP_GE_OQ), idx,
                                _mm512_set1_epi32(1));
    return _mm512_permutexvar_ps(idx, b->val);
}

/* kk_iq4_sums on 16 lanes: X[j], W[j] hold element j of every block. With
 * bk, the levels by buckets (every X finite, every live lane's |x| <= 134.01). */
KK_AVX512 __attribute__((always_inline)) static inline void
kk_iq4_sums16(const __m512 *X, const __m512 *W, __m512 id, const kk_iq4tab16 *tb,
              const kk_iq4bkt16 *bk, __m512 *sqx, __m512 *sq2)
{
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    for (int j = 0; j < QK4_NL; ++j) {
        __m512 q;
        const __m512 x = _mm512_mul_ps(id, X[j]);
        if (bk)
            q = kk_iq4_level16(x, bk);
        else
            (void)kk_iq4_index16(x, tb, &q);
        const __m512 wq = _mm512_mul_ps(W[j], q);
        a = _mm512_add_ps(a, _mm512_mul_ps(wq, X[j]));
        b = _mm512_add_ps(b, _mm512_mul_ps(wq, q));
    }
    *sqx = a;
    *sq2 = b;
}

KK_AVX512 static void kk_iq4nl_16_512(const float *const *xb, const float *const *qb,
                                      uint8_t *const *out)
{
    _Alignas(32) float xt[KK_NV * QK4_NL * 8];
    __m512 X[QK4_NL], W[QK4_NL];
    const int8_t *vals = q_iq4nl_values;
    float T[16], t4[16], t2[16], v16[16];
    for (int k = 0; k < 15; ++k)
        T[k] = (float)(vals[k] + vals[k + 1]);
    T[15] = INFINITY; /* never read */
    for (int k = 0; k < 16; ++k) {
        t4[k] = T[k + 3 < 16 ? k + 3 : 15];
        t2[k] = T[k + 1 < 16 ? k + 1 : 15];
        v16[k] = (float)vals[k];
    }
    const kk_iq4tab16 tb = {_mm512_set1_ps(T[7]), _mm512_loadu_ps(t4), _mm512_loadu_ps(t2),
                            _mm512_loadu_ps(T), _mm512_loadu_ps(v16)};

    /* element j of blocks 0-7 and 8-15 side by side */
    kk_transpose(xb, QK4_NL, xt);
    for (int j = 0; j < QK4_NL; ++j)
        X[j] = kk_join16(xt, QK4_NL, j);
    const __m512 zero = _mm512_setzero_ps();
    __m512 mx;
    __mmask16 degen;
    kk_vmaxabs16(QK4_NL, X, &mx, &degen);
    if (qb[0]) {
        _Alignas(32) float qt[KK_NV * QK4_NL * 8];
        kk_transpose(qb, QK4_NL, qt);
        __m512 s2 = zero;
        for (int j = 0; j < QK4_NL; ++j)
            s2 = _mm512_add_ps(s2, _mm512_mul_ps(X[j], X[j]));
        s2 = _mm512_mul_ps(s2, _mm512_set1_ps(2.f / QK4_NL));
        for (int j = 0; j < QK4_NL; ++j) {
            const __m512 qw = kk_join16(qt, QK4_NL, j);
            W[j] = _mm512_mul_ps(qw, _mm512_sqrt_ps(_mm512_add_ps(s2, _mm512_mul_ps(X[j], X[j]))));
        }
    } else {
        for (int j = 0; j < QK4_NL; ++j)
            W[j] = _mm512_mul_ps(X[j], X[j]);
    }

    /* first pass at d = -max / v0, then 15 trial inverse scales (itry + v0) / max */
    const float v0 = (float)vals[0];
    const __m512 d0 = _mm512_div_ps(_mm512_xor_ps(mx, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(v0));
    __m512 sqx, sq2;
    /* buckets only for finite values (an infinite X makes x NaN) */
    __mmask16 nonfinite = 0;
    for (int j = 0; j < QK4_NL; ++j)
        nonfinite |= _mm512_fpclass_ps_mask(X[j], 0x99); /* NaN or +-inf */
    kk_iq4bkt16 bkt;
    const kk_iq4bkt16 *bk = NULL;
    if (!nonfinite) {
        kk_iq4_buckets(&bkt);
        bk = &bkt;
    }
    kk_iq4_sums16(X, W, _mm512_div_ps(_mm512_set1_ps(1.f), d0), &tb, bk, &sqx, &sq2);
    __m512 d = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(sq2, zero, _CMP_GT_OQ), sqx, sq2);
    __m512 best = _mm512_mul_ps(d, sqx);
    for (int itry = -7; itry <= 7; ++itry) {
        const __m512 id = _mm512_div_ps(_mm512_set1_ps((float)(itry + vals[0])), mx);
        kk_iq4_sums16(X, W, id, &tb, bk, &sqx, &sq2);
        const __mmask16 upd = _mm512_cmp_ps_mask(sq2, zero, _CMP_GT_OQ) &
                              _mm512_cmp_ps_mask(_mm512_mul_ps(sqx, sqx), _mm512_mul_ps(best, sq2),
                                                 _CMP_GT_OQ);
        const __m512 nd = _mm512_div_ps(sqx, sq2);
        d = _mm512_mask_mov_ps(d, upd, nd);
        best = _mm512_mask_mov_ps(best, upd, _mm512_mul_ps(nd, sqx));
    }

    /* final levels at id = 1 / d (0 for d == 0, also for all-zero blocks) */
    const __m512 dd = _mm512_maskz_mov_ps((__mmask16)~degen, d);
    const __m512 idv = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(dd, zero, _CMP_NEQ_UQ),
                                           _mm512_set1_ps(1.f), dd);
    float dv[16];
    _mm512_storeu_ps(dv, dd);
    int32_t lv[QK4_NL][16];
    for (int j = 0; j < QK4_NL; ++j) {
        __m512 q;
        _mm512_storeu_si512((void *)lv[j], kk_iq4_index16(_mm512_mul_ps(idv, X[j]), &tb, &q));
    }
    for (int k = 0; k < 16; ++k) {
        uint8_t *o = out[k];
        if (!o)
            continue;
        const uint16_t h = q_f32_to_f16(dv[k]);
        memcpy(o + offsetof(block_iq4_nl, d), &h, sizeof h);
        for (int j = 0; j < QK4_NL / 2; ++j)
            o[offsetof(block_iq4_nl, qs) + j] =
                (uint8_t)(lv[j][k] | (lv[j + QK4_NL / 2][k] << 4));
    }
    _mm256_zeroupper();
}

static bool kk_simd(void)
{
    return k_cpu_get()->avx2;
}

#else /* !KK_X86 */

static bool kk_simd(void)
{
    return false;
}

#endif

/* ---- public entry points ---- */

bool k_make_qp4(int n, int nmax, const float *const *x, const float *const *qw,
                uint8_t *const *L, float *out)
{
#if KK_X86
    if (kk_simd() && n >= 1 && n <= 16)
        return kk_make_qp4(n, nmax, x, qw, L, out);
#endif
    (void)nmax, (void)x, (void)qw, (void)L, (void)out;
    return false;
}

float k_make_qx_w(int n, int nmax, const float *x, int8_t *L, const float *qw)
{
#if KK_X86
    if (kk_simd() && n >= 1 && n <= 16)
        return kk_make_qx_w(n, nmax, x, L, qw);
#endif
    return q_qh_make_qx(n, nmax, x, L, qw);
}

static size_t kk_k45(int nmax, const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                     const float *imatrix)
{
    const int64_t nb = n_per_row / QK_K;
    const int64_t total = nrows * nb;
    const size_t bsz = nmax == 15 ? sizeof(block_q4_K) : sizeof(block_q5_K);
#if KK_X86
    uint8_t *out = dst;
    kk_k45_work w[2];
    for (int64_t b = 0; b < total; b += 4) {
        const float *x[2][2], *qw[2][2] = {{NULL, NULL}, {NULL, NULL}};
        int64_t bk[4];
        for (int k = 0; k < 4; ++k)
            bk[k] = b + k < total ? b + k : total - 1;
        const int g = b + 2 < total ? 2 : 1;
        for (int k = 0; k < 2 * g; ++k) {
            x[k / 2][k % 2] = kk_blk(src, n_per_row, nb, bk[k]);
            if (imatrix)
                qw[k / 2][k % 2] = imatrix + (bk[k] % nb) * QK_K;
        }
        for (int k = 0; k < g; ++k)
            kk_k45_prep(x[k], qw[k], &w[k]);
        kk_k45_search(nmax, imatrix != NULL, w, g);
        for (int k = 0; k < g; ++k) {
            const int64_t b0 = b + 2 * k;
            const size_t cnt = b0 + 1 < total ? 2 : 1;
            if (nmax == 15) {
                block_q4_K o[2];
                kk_k45_finish(nmax, x[k], qw[k], &w[k], o, NULL);
                memcpy(out + (size_t)b0 * bsz, o, cnt * bsz);
            } else {
                block_q5_K o[2];
                kk_k45_finish(nmax, x[k], qw[k], &w[k], NULL, o);
                memcpy(out + (size_t)b0 * bsz, o, cnt * bsz);
            }
        }
    }
#else
    (void)src;
    (void)dst;
    (void)imatrix;
#endif
    return (size_t)total * bsz;
}

/* One super-block at a time (Q2_K, Q3_K, Q6_K: sixteen sub-blocks each). */
#define KK_EACH_BLOCK(BLOCK_T, blockfn)                                                           \
    do {                                                                                          \
        const int64_t nb = n_per_row / QK_K;                                                      \
        const int64_t total = nrows * nb;                                                         \
        uint8_t *out = dst;                                                                       \
        for (int64_t b = 0; b < total; ++b) {                                                     \
            BLOCK_T blk;                                                                          \
            blockfn(kk_blk(src, n_per_row, nb, b), imatrix ? imatrix + (b % nb) * QK_K : NULL,    \
                    &blk);                                                                        \
            memcpy(out + (size_t)b * sizeof blk, &blk, sizeof blk);                               \
        }                                                                                         \
        return (size_t)total * sizeof(BLOCK_T);                                                   \
    } while (0)

/* Two super-blocks at a time (Q2_K, Q3_K): pairfn(x, qw, blocks, g) with g
 * (1 or 2) super-blocks x[k], weights qw[k] (NULL without imatrix). */
#define KK_EACH_PAIR(BLOCK_T, pairfn)                                                             \
    do {                                                                                          \
        const int64_t nb = n_per_row / QK_K;                                                      \
        const int64_t total = nrows * nb;                                                         \
        uint8_t *out = dst;                                                                       \
        for (int64_t b = 0; b < total; b += 2) {                                                  \
            const int g = b + 1 < total ? 2 : 1;                                                  \
            const float *x[2] = {NULL, NULL}, *qw[2] = {NULL, NULL};                              \
            for (int k = 0; k < g; ++k) {                                                         \
                x[k] = kk_blk(src, n_per_row, nb, b + k);                                         \
                qw[k] = imatrix ? imatrix + ((b + k) % nb) * QK_K : NULL;                         \
            }                                                                                     \
            BLOCK_T o[2];                                                                         \
            pairfn(x, qw, o, g);                                                                  \
            memcpy(out + (size_t)b * sizeof o[0], o, (size_t)g * sizeof o[0]);                    \
        }                                                                                         \
        return (size_t)total * sizeof(BLOCK_T);                                                   \
    } while (0)

size_t k_quantize_q4_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    if (!kk_simd())
        return q_quantize_q4_k(src, dst, nrows, n_per_row, imatrix);
    return kk_k45(15, src, dst, nrows, n_per_row, imatrix);
}

size_t k_quantize_q5_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    if (!kk_simd())
        return q_quantize_q5_k(src, dst, nrows, n_per_row, imatrix);
    return kk_k45(31, src, dst, nrows, n_per_row, imatrix);
}

size_t k_quantize_q6_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    if (!kk_simd())
        return q_quantize_q6_k(src, dst, nrows, n_per_row, imatrix);
#if KK_X86
    KK_EACH_BLOCK(block_q6_K, kk_q6_block);
#else
    return 0;
#endif
}

size_t k_quantize_q2_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    if (!kk_simd())
        return q_quantize_q2_k(src, dst, nrows, n_per_row, imatrix);
#if KK_X86
    KK_EACH_PAIR(block_q2_K, kk_q2_blocks);
#else
    return 0;
#endif
}

size_t k_quantize_q3_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    if (!kk_simd())
        return q_quantize_q3_k(src, dst, nrows, n_per_row, imatrix);
#if KK_X86
    KK_EACH_PAIR(block_q3_K, kk_q3_blocks);
#else
    return 0;
#endif
}

size_t k_quantize_iq4_nl(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                         const float *imatrix)
{
    if (!kk_simd())
        return q_quantize_iq4_nl(src, dst, nrows, n_per_row, imatrix);
    if (nrows < 0 || n_per_row <= 0 || n_per_row % QK4_NL != 0)
        return 0;
    const int64_t nb = n_per_row / QK4_NL;
    const int64_t total = nrows * nb;
#if KK_X86
    const bool wide = k_cpu_get()->avx512;
    uint8_t *o = dst;
    for (int64_t b = 0; b < total; b += 16) {
        const float *xb[16], *qb[16];
        uint8_t *out[16];
        for (int s = 0; s < 16; ++s) {
            const int64_t bb = b + s < total ? b + s : total - 1;
            xb[s] = src + (bb / nb) * n_per_row + (bb % nb) * QK4_NL;
            qb[s] = imatrix ? imatrix + (bb % nb) * QK4_NL : NULL;
            out[s] = b + s < total ? o + (b + s) * (int64_t)sizeof(block_iq4_nl) : NULL;
        }
        if (wide)
            kk_iq4nl_16_512(xb, qb, out);
        else
            kk_iq4nl_16(xb, qb, out);
    }
#else
    (void)src;
    (void)dst;
    (void)imatrix;
#endif
    return (size_t)total * sizeof(block_iq4_nl);
}

void k_kquants_register(void)
{
    if (!kk_simd())
        return;
    q_format_set_fast(Q_FMT_Q4_K, k_quantize_q4_k);
    q_format_set_fast(Q_FMT_Q5_K, k_quantize_q5_k);
    q_format_set_fast(Q_FMT_Q6_K, k_quantize_q6_k);
    q_format_set_fast(Q_FMT_Q3_K, k_quantize_q3_k);
    q_format_set_fast(Q_FMT_Q2_K, k_quantize_q2_k);
    q_format_set_fast(Q_FMT_IQ4_NL, k_quantize_iq4_nl);
}
