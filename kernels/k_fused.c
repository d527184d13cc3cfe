/* k_fused.c — fused fake-quant + metrics kernels (see k_fused.h).
 *
 * Exactness. The AVX2 and AVX-512 forms do, lane by lane, the float
 * operations of the scalar references in the same order and precision:
 * separate multiplies and adds (the AVX2 quantizers are compiled without FMA;
 * the AVX-512 target includes FMA for the metric sums, and -std=c11 disables
 * contraction, so only the explicit _fmadd_ calls of the sums fuse),
 * divisions where the reference divides, 1/d computed once in scalar as the
 * reference does. roundf (half away from zero) is built from truncation: with
 * t = trunc(p), p - t is exact, and r = t + sign(p) when |p - t| >= 0.5.
 * Casts to int8 are exact for the level ranges checked before use; blocks
 * outside those ranges (non-finite 1/d, levels past the cast's range) run the
 * scalar reference, so every block's values equal the reference's.
 *
 * Metrics: per row in double like q_metrics_add, the SIMD path summing with
 * FMA in two sets of four lanes (eight with AVX-512; differences in the last
 * bits only); the
 * histogram bin of every error equals q_metrics' (computed in float, values
 * near a bin edge rebinned with its double formula), so the counts are equal.
 */
#include "k_fused.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "k_cpu.h"
#include "k_float.h"
#include "q_blocks.h"
#include "q_dtype.h"
#include "q_grid.h"
#include "q_quants.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KF_X86 1
#define KF_AVX2 __attribute__((target("avx2")))
#define KF_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))
#define KF_TRUNC (_MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC) /* an immediate: a macro */
#define KF_NOT_FINITE 0x99 /* fpclass categories QNaN, +Inf, -Inf, SNaN */
#define KF_NONFINITE 0x100 /* kf_q8row_512: x holds NaN or Inf */
#else
#define KF_X86 0
#endif

typedef enum kf_kind { KF_NONE, KF_Q8_0, KF_Q4_0, KF_Q5_0, KF_Q4_1, KF_Q5_1 } kf_kind;

static kf_kind kf_kind_of(q_format_id id)
{
    switch (id) {
    case Q_FMT_Q8_0:
        return KF_Q8_0;
    case Q_FMT_Q4_0:
        return KF_Q4_0;
    case Q_FMT_Q5_0:
        return KF_Q5_0;
    case Q_FMT_Q4_1:
        return KF_Q4_1;
    case Q_FMT_Q5_1:
        return KF_Q5_1;
    default:
        return KF_NONE;
    }
}

static q_quant_fn kf_ref_of(kf_kind k)
{
    switch (k) {
    case KF_Q8_0:
        return q_quantize_q8_0;
    case KF_Q4_0:
        return q_quantize_q4_0;
    case KF_Q5_0:
        return q_quantize_q5_0;
    case KF_Q4_1:
        return q_quantize_q4_1;
    case KF_Q5_1:
        return q_quantize_q5_1;
    default:
        return NULL;
    }
}

static size_t kf_block_bytes(kf_kind k)
{
    switch (k) {
    case KF_Q8_0:
        return sizeof(block_q8_0);
    case KF_Q4_0:
        return sizeof(block_q4_0);
    case KF_Q5_0:
        return sizeof(block_q5_0);
    case KF_Q4_1:
        return sizeof(block_q4_1);
    case KF_Q5_1:
        return sizeof(block_q5_1);
    default:
        return 0;
    }
}

/* A body that returns call(K) for the 32-value kind k, K a constant (one
 * inlined copy of an always_inline kernel per kind), dflt for any other. */
#define KF_DISPATCH(k, call, dflt)                                                             \
    switch (k) {                                                                               \
    case KF_Q8_0:                                                                              \
        return call(KF_Q8_0);                                                                  \
    case KF_Q4_0:                                                                              \
        return call(KF_Q4_0);                                                                  \
    case KF_Q5_0:                                                                              \
        return call(KF_Q5_0);                                                                  \
    case KF_Q4_1:                                                                              \
        return call(KF_Q4_1);                                                                  \
    case KF_Q5_1:                                                                              \
        return call(KF_Q5_1);                                                                  \
    default:                                                                                   \
        return dflt;                                                                           \
    }

static q_dequant_fn kf_dq_of(kf_kind k)
{
    static const uint32_t dt[] = {0, Q_DT_Q8_0, Q_DT_Q4_0, Q_DT_Q5_0, Q_DT_Q4_1, Q_DT_Q5_1};
    return k == KF_NONE ? NULL : q_dtype_get(dt[k])->dequant;
}

/* Grid formats with a SIMD row kernel. */
static bool kf_grid_fast(const q_fmt_spec *s)
{
    return s->id == Q_FMT_INT || s->id == Q_FMT_UINT || s->id == Q_FMT_NF4 ||
           s->id == Q_FMT_FP8_E4M3 || s->id == Q_FMT_FP8_E5M2;
}

bool k_fq_has_fused(const q_fmt_spec *spec)
{
    return kf_kind_of(spec->id) != KF_NONE || kf_grid_fast(spec) || k_float_is(spec->id);
}

static void kf_nf4_cells(float cell[3][32]);

q_status k_fq_init(k_fq *k, const q_fmt_spec *spec, int64_t cols, bool force_scalar,
                   q_err *err)
{
    memset(k, 0, sizeof *k);
    q_status st = q_fmt_check(spec, cols, err);
    if (st != Q_OK)
        return st;
    k->spec = *spec;
    k->fmt = q_format_get(spec->id);
    k->cols = cols;
    if (!q_fmt_fits(spec, cols))
        return q_fail(err, Q_EUSAGE, "%s needs rows that are a multiple of %lld, not %lld",
                      k->fmt->name, (long long)k->fmt->blck, (long long)cols);
    const k_cpu *cpu = k_cpu_get();
    k->simd = !force_scalar && KF_X86 && cpu->avx2 && cpu->fma && cpu->f16c;
    k->wide = k->simd && cpu->avx512;
    k->fused = k_fq_has_fused(spec);
    if (spec->id == Q_FMT_NF4)
        kf_nf4_cells(k->nf4_cell);
    if (k->fmt->ggml_type >= 0)
        k->row_bytes = (size_t)q_dtype_bytes((uint32_t)k->fmt->ggml_type, cols);
    return Q_OK;
}

/* ---- packing of levels into ggml blocks (shared by the apply variants) ---- */

static void kf_st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void kf_pack(kf_kind k, const int32_t *L, uint16_t dbits, uint16_t mbits, uint8_t *blk)
{
    uint32_t qh = 0;
    uint8_t *qs;
    switch (k) {
    case KF_Q8_0:
        kf_st16(blk + offsetof(block_q8_0, d), dbits);
        for (int j = 0; j < 32; j++)
            blk[offsetof(block_q8_0, qs) + (size_t)j] = (uint8_t)(int8_t)L[j];
        return;
    case KF_Q4_0:
        kf_st16(blk + offsetof(block_q4_0, d), dbits);
        qs = blk + offsetof(block_q4_0, qs);
        break;
    case KF_Q4_1:
        kf_st16(blk + offsetof(block_q4_1, d), dbits);
        kf_st16(blk + offsetof(block_q4_1, m), mbits);
        qs = blk + offsetof(block_q4_1, qs);
        break;
    case KF_Q5_0:
        kf_st16(blk + offsetof(block_q5_0, d), dbits);
        qs = blk + offsetof(block_q5_0, qs);
        break;
    case KF_Q5_1:
        kf_st16(blk + offsetof(block_q5_1, d), dbits);
        kf_st16(blk + offsetof(block_q5_1, m), mbits);
        qs = blk + offsetof(block_q5_1, qs);
        break;
    default:
        return;
    }
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((L[j] & 0x0f) | ((L[j + 16] & 0x0f) << 4));
    if (k == KF_Q5_0 || k == KF_Q5_1) {
        for (int j = 0; j < 32; j++)
            qh |= (uint32_t)((L[j] >> 4) & 1) << j;
        uint8_t *p = blk + (k == KF_Q5_0 ? offsetof(block_q5_0, qh) : offsetof(block_q5_1, qh));
        p[0] = (uint8_t)qh;
        p[1] = (uint8_t)(qh >> 8);
        p[2] = (uint8_t)(qh >> 16);
        p[3] = (uint8_t)(qh >> 24);
    }
}

#if KF_X86
/* ---- AVX2 kernels ---- */

KF_AVX2 static float kf_hmax(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

KF_AVX2 static float kf_hmin(__m256 v)
{
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* ½ - 2^-25, the float below ½. For every float p, trunc(p + copysign(
 * KF_HALF_DOWN, p)) is roundf(p), half away from zero: under ½ the sum stays
 * below 1; at p = k + ½ the exact sum k + 1 - 2^-25 lies within half the
 * float spacing of k + 1 and rounds to it (at k = 0 a tie, which goes to the
 * even 1); above k + ½ the sum exceeds k + 1; below k + ½ (spacing s) it is
 * at most k + 1 - s - 2^-25, nearer the float k + 1 - s. test_fq_rows has a
 * row of such ties. */
#define KF_HALF_DOWN 0x1.fffffep-2f

/* Levels of eight values v of one 32-block of kind k, as exact integers held
 * in float lanes, with the reference's float operations in its order: q8_0
 * roundf(v·id) (half away from zero: KF_HALF_DOWN); q4_0/q5_0
 * min(trunc(v·id + hlf + ½), 2·hlf − 1); q4_1/q5_1 min(trunc((v − mn)·id + ½),
 * top). Lanes outside the range where these equal the reference's integer
 * casts (or NaN) are set in *bad; bad NULL: no test (kf_lev16's). vmn is
 * used by q4_1/q5_1 only. */
KF_AVX2 __attribute__((always_inline)) static inline __m256
kf_lev8(kf_kind k, __m256 v, __m256 vid, __m256 vmn, __m256 *bad)
{
    const __m256 sgn = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
    const __m256 half = _mm256_set1_ps(0.5f);
    if (k == KF_Q8_0) {
        __m256 p = _mm256_mul_ps(v, vid);
        __m256 h = _mm256_or_ps(_mm256_and_ps(p, sgn), _mm256_set1_ps(KF_HALF_DOWN));
        __m256 r = _mm256_round_ps(_mm256_add_ps(p, h), KF_TRUNC);
        if (bad)
            *bad = _mm256_or_ps(*bad, _mm256_cmp_ps(_mm256_andnot_ps(sgn, r),
                                                    _mm256_set1_ps(127.0f), _CMP_NLE_UQ));
        return r;
    }
    __m256 t, lim, top;
    if (k == KF_Q4_0 || k == KF_Q5_0) {
        const float hlf = k == KF_Q4_0 ? 8.0f : 16.0f;
        t = _mm256_add_ps(_mm256_mul_ps(v, vid), _mm256_set1_ps(hlf + 0.5f));
        lim = _mm256_set1_ps(128.0f);
        top = _mm256_set1_ps(2 * hlf - 1);
    } else {
        t = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, vmn), vid), half);
        lim = _mm256_set1_ps(k == KF_Q4_1 ? 128.0f : 32.0f);
        top = _mm256_set1_ps(k == KF_Q4_1 ? 15.0f : 255.0f);
    }
    if (bad)
        *bad = _mm256_or_ps(*bad, _mm256_or_ps(_mm256_cmp_ps(t, zero, _CMP_NGE_UQ),
                                               _mm256_cmp_ps(t, lim, _CMP_NLT_UQ)));
    return _mm256_min_ps(_mm256_round_ps(t, KF_TRUNC), top);
}

/* Dequantized values of kf_lev8 levels l with the f16-rounded scale dh (and
 * minimum mh, q4_1/q5_1): (l + 0)·dh, the + 0 turning a −0 level into the +0
 * an int8 holds (q8_0); (l − hlf)·dh (q4_0/q5_0); l·dh + mh (q4_1/q5_1). */
KF_AVX2 __attribute__((always_inline)) static inline __m256 kf_deq8(kf_kind k, __m256 l,
                                                                    __m256 dh, __m256 mh)
{
    if (k == KF_Q8_0)
        return _mm256_mul_ps(_mm256_add_ps(l, _mm256_setzero_ps()), dh);
    if (k == KF_Q4_0 || k == KF_Q5_0)
        return _mm256_mul_ps(_mm256_sub_ps(l, _mm256_set1_ps(k == KF_Q4_0 ? 8.0f : 16.0f)), dh);
    return _mm256_add_ps(_mm256_mul_ps(l, dh), mh);
}

/* Stores eight kf_lev8 levels l as int32 (L given) or their dequantized
 * values (y). */
KF_AVX2 __attribute__((always_inline)) static inline void
kf_store8(kf_kind k, __m256 l, __m256 dh, __m256 mh, int32_t *L, float *y)
{
    if (L)
        _mm256_storeu_si256((__m256i *)(void *)L, _mm256_cvttps_epi32(l));
    else
        _mm256_storeu_ps(y, kf_deq8(k, l, dh, mh));
}

/* Levels of one 32-block of kind k (the reference's integer levels, before
 * packing) into L, or (L NULL) the dequantized values into y, computed from
 * the levels held as exact integers in float lanes with q_dtype's operations;
 * scale d and minimum m as f16 bits. False: use the reference (y, L partly
 * written). */
KF_AVX2 static bool kf_levels_avx2(kf_kind k, const float *x, int32_t *L, float *y,
                                   uint16_t *dbits, uint16_t *mbits)
{
    const __m256 sgn = _mm256_set1_ps(-0.0f);
    const bool asym = k == KF_Q4_1 || k == KF_Q5_1;
    __m256 v[4];
    for (int i = 0; i < 4; i++)
        v[i] = _mm256_loadu_ps(x + 8 * i);
    float d, mn = 0.0f;
    if (!asym) {
        __m256 a[4];
        for (int i = 0; i < 4; i++)
            a[i] = _mm256_andnot_ps(sgn, v[i]);
        float amax = kf_hmax(_mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3])));
        if (k == KF_Q8_0) {
            d = amax / 127.0f;
        } else {
            float max = 0.0f;
            if (amax > 0.0f) {
                const __m256 am = _mm256_set1_ps(amax);
                for (int i = 0; i < 4; i++) {
                    int m = _mm256_movemask_ps(_mm256_cmp_ps(a[i], am, _CMP_EQ_OQ));
                    if (m) {
                        max = x[8 * i + __builtin_ctz((unsigned)m)];
                        break;
                    }
                }
            }
            d = max / (float)(k == KF_Q4_0 ? -8 : -16);
        }
    } else {
        mn = kf_hmin(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
        float mx = kf_hmax(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
        if (mn == 0.0f || mx == 0.0f) { /* the sign of a zero extreme: the reference's scan */
            mn = FLT_MAX;
            mx = -FLT_MAX;
            for (int j = 0; j < 32; j++) {
                if (x[j] < mn)
                    mn = x[j];
                if (x[j] > mx)
                    mx = x[j];
            }
        }
        d = (mx - mn) / (float)(k == KF_Q4_1 ? 15 : 31);
    }
    const float id = d != 0 ? 1.0f / d : 0.0f;
    if (!(id <= FLT_MAX && id >= -FLT_MAX))
        return false;
    *dbits = q_f32_to_f16(d);
    const __m256 vid = _mm256_set1_ps(id), vmn = _mm256_set1_ps(mn);
    const __m256 dh = _mm256_set1_ps(q_f16_to_f32(*dbits));
    __m256 mh = _mm256_setzero_ps();
    if (asym) {
        *mbits = q_f32_to_f16(mn);
        mh = _mm256_set1_ps(q_f16_to_f32(*mbits));
    }
    for (int i = 0; i < 4; i++) {
        __m256 bad = _mm256_setzero_ps();
        __m256 l = kf_lev8(k, v[i], vid, vmn, &bad);
        if (_mm256_movemask_ps(bad))
            return false;
        kf_store8(k, l, dh, mh, L ? L + 8 * i : NULL, y ? y + 8 * i : NULL);
    }
    return true;
}

/* One 32-block the slow way: the single-block SIMD form, else the reference. */
KF_AVX2 static void kf_block_q(kf_kind k, const float *x, float *y)
{
    uint8_t blk[64];
    uint16_t db = 0, mb = 0;
    if (!kf_levels_avx2(k, x, NULL, y, &db, &mb)) {
        kf_ref_of(k)(x, blk, 1, 32, NULL);
        kf_dq_of(k)(blk, y, 32);
    }
}

/* Pairwise maxima (or minima) inside each 128-bit half: [a0∘a1, a2∘a3, b0∘b1,
 * b2∘b3] per half. */
KF_AVX2 static inline __m256 kf_pair(__m256 a, __m256 b, bool is_max)
{
    __m256 e = _mm256_shuffle_ps(a, b, 0x88), o = _mm256_shuffle_ps(a, b, 0xdd);
    return is_max ? _mm256_max_ps(e, o) : _mm256_min_ps(e, o);
}

/* Lane b = the maximum (or minimum) of the 8 lanes of v[b]. */
KF_AVX2 static inline __m256 kf_reduce8(const __m256 *v, bool is_max)
{
    __m256 q0 = kf_pair(kf_pair(v[0], v[1], is_max), kf_pair(v[2], v[3], is_max), is_max);
    __m256 q1 = kf_pair(kf_pair(v[4], v[5], is_max), kf_pair(v[6], v[7], is_max), is_max);
    __m256 lo = _mm256_permute2f128_ps(q0, q1, 0x20), hi = _mm256_permute2f128_ps(q0, q1, 0x31);
    return is_max ? _mm256_max_ps(lo, hi) : _mm256_min_ps(lo, hi);
}

/* Per-block scalars of eight 32-blocks of kind k, lane b for block b, from
 * the blocks' maxima and minima (q8_0: maximum magnitudes in vmax): d, 1/d
 * (0 where d is 0), the minimum m (q4_1/q5_1, else 0) and the f16 bits and
 * values of d and m. */
typedef struct kf_par8 {
    __m256 id, m, dh, mh;
    __m128i dbits, mbits;
} kf_par8;

/* Fills p; returns the mask of blocks the one-block path must redo (see
 * kf_q8blocks). */
__attribute__((target("avx2,f16c"), always_inline)) static inline int
kf_params8(const kf_kind k, __m256 vmax, __m256 vmin, kf_par8 *p)
{
    const __m256 sgn = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
    int slow = 0; /* blocks to redo, one bit each */
    __m256 d, m = zero;
    if (k == KF_Q8_0) {
        d = _mm256_div_ps(vmax, _mm256_set1_ps(127.0f));
    } else if (k == KF_Q4_0 || k == KF_Q5_0) {
        __m256 nmin = _mm256_sub_ps(zero, vmin);
        __m256 pos = _mm256_cmp_ps(vmax, nmin, _CMP_GT_OQ);
        __m256 tie = _mm256_and_ps(_mm256_cmp_ps(vmax, nmin, _CMP_EQ_OQ),
                                   _mm256_cmp_ps(vmax, zero, _CMP_NEQ_OQ));
        slow |= _mm256_movemask_ps(tie);
        /* max|x| held by the positive maximum, else by the minimum; 0 when all
         * are zero (the reference's max stays 0.0f) */
        __m256 ext = _mm256_blendv_ps(vmin, vmax, pos);
        ext = _mm256_and_ps(ext, _mm256_cmp_ps(_mm256_max_ps(vmax, nmin), zero, _CMP_GT_OQ));
        d = _mm256_div_ps(ext, _mm256_set1_ps(k == KF_Q4_0 ? -8.0f : -16.0f));
    } else {
        slow |= _mm256_movemask_ps(_mm256_or_ps(_mm256_cmp_ps(vmin, zero, _CMP_EQ_OQ),
                                                _mm256_cmp_ps(vmax, zero, _CMP_EQ_OQ)));
        d = _mm256_div_ps(_mm256_sub_ps(vmax, vmin), _mm256_set1_ps(k == KF_Q4_1 ? 15.0f : 31.0f));
        m = vmin;
    }
    __m256 id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), d),
                              _mm256_cmp_ps(d, zero, _CMP_NEQ_OQ));
    __m256 aid = _mm256_andnot_ps(sgn, id);
    slow |= _mm256_movemask_ps(_mm256_cmp_ps(aid, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ));
    /* a subnormal d (a block of values under about 2^-119) goes the slow way
     * too: with d 0 or normal and 1/d finite, finite values give levels in
     * the proven range (|v / d| within 2^-22 of its bound), which lets the
     * row kernel skip the level tests (kf_q8row_512) */
    __m256 ad = _mm256_andnot_ps(sgn, d);
    __m256 sub = _mm256_and_ps(_mm256_cmp_ps(ad, _mm256_set1_ps(FLT_MIN), _CMP_LT_OQ),
                               _mm256_cmp_ps(ad, zero, _CMP_GT_OQ));
    slow |= _mm256_movemask_ps(sub);
    p->id = id;
    p->m = m;
    p->dbits = _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT);
    p->mbits = _mm256_cvtps_ph(m, _MM_FROUND_TO_NEAREST_INT);
    p->dh = _mm256_cvtph_ps(p->dbits);
    p->mh = _mm256_cvtph_ps(p->mbits);
    return slow;
}

/* Nonzero when an f16 scale or minimum of p overflowed (the dequantized
 * values of its block may then be NaN or Inf). */
__attribute__((target("avx2"), always_inline)) static inline int kf_f16_overflow8(const kf_par8 *p)
{
    const __m256 sgn = _mm256_set1_ps(-0.0f), big = _mm256_set1_ps(FLT_MAX);
    __m256 dbad = _mm256_cmp_ps(_mm256_andnot_ps(sgn, p->dh), big, _CMP_NLE_UQ);
    __m256 mbad = _mm256_cmp_ps(_mm256_andnot_ps(sgn, p->mh), big, _CMP_NLE_UQ);
    return _mm256_movemask_ps(_mm256_or_ps(dbad, mbad)) != 0;
}

/* The extremes of eight 32-blocks at x, lane b for block b (q8_0: maximum
 * magnitudes, in *vmax and *vmin); true, with nothing set, when check is set
 * and x holds NaN or Inf (an exponent of all ones). */
__attribute__((target("avx2"), always_inline)) static inline bool
kf_q8ext(const kf_kind k, const float *x, __m256 *vmax, __m256 *vmin, const bool check)
{
    const __m256 sgn = _mm256_set1_ps(-0.0f);
    const __m256i em = _mm256_set1_epi32(0x7f800000);
    __m256 mx[8], mn[8];
    __m256i nf = _mm256_setzero_si256();
    for (int b = 0; b < 8; b++) {
        const float *xb = x + 32 * b;
        __m256 v[4];
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(xb + 8 * i);
            if (check)
                nf = _mm256_or_si256(
                    nf, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(v[i]), em), em));
        }
        if (k == KF_Q8_0) {
            __m256 a01 = _mm256_max_ps(_mm256_andnot_ps(sgn, v[0]), _mm256_andnot_ps(sgn, v[1]));
            __m256 a23 = _mm256_max_ps(_mm256_andnot_ps(sgn, v[2]), _mm256_andnot_ps(sgn, v[3]));
            mx[b] = _mm256_max_ps(a01, a23);
        } else {
            mx[b] = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
            mn[b] = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
        }
    }
    if (check && !_mm256_testz_si256(nf, nf))
        return true;
    *vmax = kf_reduce8(mx, true);
    *vmin = k == KF_Q8_0 ? *vmax : kf_reduce8(mn, false);
    return false;
}

/* Eight 32-blocks of kind k at once: the per-block scalars (extremes, d, 1/d,
 * the f16 round trips) are computed for the eight blocks in the lanes of one
 * vector, so no block waits on its own chain of reductions, divisions and
 * conversions; then each block's 32 values as in kf_levels_avx2, the same
 * float operations in the same order. _mm256_cvtps_ph rounds to nearest even
 * with overflow to infinity, as q_f32_to_f16 does (test_preview checks the two
 * agree at every rounding boundary). A block whose checks fail (non-finite
 * 1/d, levels outside the proven range, a zero extreme of q4_1/q5_1, or for
 * q4_0/q5_0 a maximum magnitude held by both signs, where the reference's scan
 * order decides) is left to the caller: the integer levels go into L and the
 * f16 bits of d and m into db and mb, and the mask of slow blocks is returned
 * for the caller to quantize one by one (apply; the previews' dequantized
 * values come from kf_q8row_avx2). */
__attribute__((target("avx2,f16c"), always_inline)) static inline int
kf_q8blocks(const kf_kind k, const float *x, int32_t *L, uint16_t *db, uint16_t *mb)
{
    __m256 vmax, vmin;
    kf_q8ext(k, x, &vmax, &vmin, false);
    const __m256 zero = _mm256_setzero_ps();
    kf_par8 par;
    int slow = kf_params8(k, vmax, vmin, &par);
    const __m256 id = par.id, m = par.m;
    _mm_storeu_si128((__m128i *)(void *)db, par.dbits);
    _mm_storeu_si128((__m128i *)(void *)mb, par.mbits);
    for (int b = 0; b < 8; b++) {
        const __m256i lane = _mm256_set1_epi32(b);
        const __m256 vid = _mm256_permutevar8x32_ps(id, lane);
        const __m256 vmn = k == KF_Q4_1 || k == KF_Q5_1 ? _mm256_permutevar8x32_ps(m, lane) : zero;
        __m256 bad = zero;
        for (int i = 0; i < 4; i++)
            kf_store8(k, kf_lev8(k, _mm256_loadu_ps(x + 32 * b + 8 * i), vid, vmn, &bad), zero,
                      zero, L + 32 * b + 8 * i, NULL);
        if (_mm256_movemask_ps(bad))
            slow |= 1 << b;
    }
    return slow;
}

/* kf_q8blocks for a kind known only at run time: one inlined copy per kind. */
__attribute__((target("avx2,f16c"))) static int kf_q8blocks_any(kf_kind k, const float *x,
                                                                 int32_t *L, uint16_t *db,
                                                                 uint16_t *mb)
{
#define KF_BLOCKS(kind) kf_q8blocks(kind, x, L, db, mb)
    KF_DISPATCH(k, KF_BLOCKS, 0xff)
#undef KF_BLOCKS
}

/* Per-block scalars of up to KF_ROWPAR_BLOCKS 32-blocks (the row kernels). */
#define KF_ROWPAR_BLOCKS 64
typedef struct kf_rowpar {
    float id[KF_ROWPAR_BLOCKS], m[KF_ROWPAR_BLOCKS], dh[KF_ROWPAR_BLOCKS], mh[KF_ROWPAR_BLOCKS];
} kf_rowpar;

/* The row kernels' loop (kf_q8row_512, kf_q8row_avx2) over a row of n values
 * (a multiple of 256), in pieces of up to KF_ROWPAR_BLOCKS blocks: the
 * scalars of every block of the piece first, eight blocks at a time by
 * par(k, x, &rp, b, &ovf, check) (KF_NONFINITE when check is set and x holds
 * NaN or Inf, else the mask of blocks for the one-block path), then each
 * block's values by val(k, x, &rp, b, y), then the one-block path. A group
 * of eight's chain of reductions, divisions and conversions no longer holds
 * up its own values: the groups' first passes are independent, so the
 * processor overlaps them, and the values only read the scalars back.
 * Returns nonzero when an f16 scale or minimum overflowed (y may then hold
 * NaN or Inf), KF_NONFINITE when check is set and x holds NaN or Inf (found
 * before the values of the piece are written). */
#define KF_Q8ROW_BODY(par, val)                                                                \
    kf_rowpar rp;                                                                              \
    int ovf = 0;                                                                               \
    for (int64_t c0 = 0; c0 < n; c0 += 32 * KF_ROWPAR_BLOCKS) {                                \
        const int nb = n - c0 < 32 * KF_ROWPAR_BLOCKS ? (int)((n - c0) / 32) : KF_ROWPAR_BLOCKS; \
        const float *xp = x + c0;                                                              \
        float *yp = y + c0;                                                                    \
        uint64_t slow = 0;                                                                     \
        for (int b = 0; b < nb; b += 8) {                                                      \
            int r = par(k, xp + 32 * b, &rp, b, &ovf, check);                                  \
            if (check && r == KF_NONFINITE)                                                    \
                return KF_NONFINITE;                                                           \
            slow |= (uint64_t)r << b;                                                          \
        }                                                                                      \
        for (int b = 0; b < nb; b++)                                                           \
            val(k, xp + 32 * b, &rp, b, yp + 32 * b);                                          \
        for (; slow; slow &= slow - 1) {                                                       \
            int b = __builtin_ctzll(slow);                                                     \
            kf_block_q(k, xp + 32 * b, yp + 32 * b);                                           \
        }                                                                                      \
    }                                                                                          \
    return ovf;

/* The scalars of eight blocks with extremes vmax and vmin into rp at block
 * b0, the f16 overflow flag into *ovf; returns the mask of blocks for the
 * one-block path. */
__attribute__((target("avx2,f16c"), always_inline)) static inline int
kf_rowpar_put(const kf_kind k, __m256 vmax, __m256 vmin, kf_rowpar *rp, int b0, int *ovf)
{
    kf_par8 par;
    int slow = kf_params8(k, vmax, vmin, &par);
    _mm256_storeu_ps(rp->id + b0, par.id);
    _mm256_storeu_ps(rp->m + b0, par.m);
    _mm256_storeu_ps(rp->dh + b0, par.dh);
    _mm256_storeu_ps(rp->mh + b0, par.mh);
    *ovf |= kf_f16_overflow8(&par);
    return slow;
}

/* KF_Q8ROW_BODY's par, AVX2. */
__attribute__((target("avx2,f16c"), always_inline)) static inline int
kf_q8par_avx2(const kf_kind k, const float *x, kf_rowpar *rp, int b0, int *ovf, const bool check)
{
    __m256 vmax, vmin;
    if (kf_q8ext(k, x, &vmax, &vmin, check))
        return KF_NONFINITE;
    return kf_rowpar_put(k, vmax, vmin, rp, b0, ovf);
}

/* The values of block b (KF_Q8ROW_BODY's val, AVX2): no level test, since
 * the scalars' checks send every block whose finite values could leave the
 * proven range to the one-block path. */
__attribute__((target("avx2"), always_inline)) static inline void
kf_q8val_avx2(const kf_kind k, const float *x, const kf_rowpar *rp, int b, float *y)
{
    const __m256 vid = _mm256_broadcast_ss(&rp->id[b]), vmn = _mm256_broadcast_ss(&rp->m[b]);
    const __m256 vdh = _mm256_broadcast_ss(&rp->dh[b]), vmh = _mm256_broadcast_ss(&rp->mh[b]);
    for (int i = 0; i < 4; i++)
        kf_store8(k, kf_lev8(k, _mm256_loadu_ps(x + 8 * i), vid, vmn, NULL), vdh, vmh, NULL,
                  y + 8 * i);
}

/* The row kernel in AVX2 registers (fake quantization of a row, rows in L2,
 * Zen 4 capped at AVX2: q8_0 0.31 -> 0.22, q4_1 0.35 -> 0.25 ns a value). */
__attribute__((target("avx2,f16c"), always_inline)) static inline int
kf_q8row_avx2(const kf_kind k, const float *x, float *y, int64_t n, const bool check)
{
    KF_Q8ROW_BODY(kf_q8par_avx2, kf_q8val_avx2)
}

#define KF_Q8ROW2(kind)                                                                        \
    (check ? kf_q8row_avx2(kind, x, y, n, true) : kf_q8row_avx2(kind, x, y, n, false))

/* kf_q8row_avx2 for a kind known only at run time. */
__attribute__((target("avx2,f16c"))) static int kf_q8row_any_avx2(kf_kind k, const float *x,
                                                                   float *y, int64_t n,
                                                                   bool check)
{
    KF_DISPATCH(k, KF_Q8ROW2, 1)
}
#undef KF_Q8ROW2

KF_AVX512 static int kf_q8blocks_any_512(kf_kind k, const float *x, int32_t *L, uint16_t *db,
                                         uint16_t *mb);
KF_AVX512 static int kf_q8row_any_512(kf_kind k, const float *x, float *y, int64_t n, bool check);
KF_AVX2 static int64_t kf_count_nonfinite_avx2(const float *x, int64_t n);
KF_AVX512 static int64_t kf_count_nonfinite_512(const float *x, int64_t n);

/* NaN and Inf values of x, on the AVX2 or (wide) AVX-512 kernel. */
static int64_t kf_count_nonfinite(const float *x, int64_t n, bool wide)
{
    return wide ? kf_count_nonfinite_512(x, n) : kf_count_nonfinite_avx2(x, n);
}

/* Returns K_FQ_FINITE when every value of y is known to be finite (x
 * finite, no f16 scale overflowed, no block left to the one-block path at the
 * row's end), else 0; K_FQ_NONFINITE when check is set and x holds NaN or Inf
 * (found by the row kernels' first pass over each eight blocks, or for a row
 * with a tail by a pass of its own). wide: the AVX-512 row kernel. */
__attribute__((target("avx2,f16c"))) static int kf_row_q_avx2(kf_kind k, const float *x,
                                                               float *y, int64_t n, bool wide,
                                                               bool check)
{
    int64_t b = 0;
    int maybe = 0;
    if (check && n % 256 && kf_count_nonfinite(x, n, wide))
        return K_FQ_NONFINITE;
    if (n >= 256) {
        b = n / 256 * 256;
        /* a row with a tail was counted above: no second test */
        const bool chk = check && n % 256 == 0;
        int r = wide ? kf_q8row_any_512(k, x, y, b, chk) : kf_q8row_any_avx2(k, x, y, b, chk);
        if (r & KF_NONFINITE)
            return K_FQ_NONFINITE;
        maybe |= r;
    }
    for (; b < n; b += 32) {
        kf_block_q(k, x + b, y + b);
        maybe = 1;
    }
    return maybe ? 0 : K_FQ_FINITE;
}

/* One block for apply: the single-block SIMD form, else the reference. */
KF_AVX2 static void kf_quantize_block(kf_kind k, const float *x, uint8_t *blk)
{
    int32_t L[32];
    uint16_t db = 0, mb = 0;
    if (kf_levels_avx2(k, x, L, NULL, &db, &mb))
        kf_pack(k, L, db, mb, blk);
    else
        kf_ref_of(k)(x, blk, 1, 32, NULL);
}

/* kf_pack with the 32 levels narrowed and packed in vector registers. */
__attribute__((target("avx2"))) static void kf_pack_avx2(kf_kind k, const int32_t *L,
                                                         uint16_t dbits, uint16_t mbits,
                                                         uint8_t *blk)
{
    const __m256i *v = (const __m256i *)(const void *)L;
    __m256i ab = _mm256_packs_epi32(_mm256_loadu_si256(v), _mm256_loadu_si256(v + 1));
    __m256i cd = _mm256_packs_epi32(_mm256_loadu_si256(v + 2), _mm256_loadu_si256(v + 3));
    /* bytes in order: packs works per 128-bit half, the permute undoes that */
    __m256i q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd),
                                            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    if (k == KF_Q8_0) {
        kf_st16(blk + offsetof(block_q8_0, d), dbits);
        _mm256_storeu_si256((__m256i *)(void *)(blk + offsetof(block_q8_0, qs)), q);
        return;
    }
    size_t d_off, m_off = 0, qs_off, qh_off = 0; /* m_off, qh_off: 0 when absent */
    switch (k) {
    case KF_Q4_0:
        d_off = offsetof(block_q4_0, d);
        qs_off = offsetof(block_q4_0, qs);
        break;
    case KF_Q4_1:
        d_off = offsetof(block_q4_1, d);
        m_off = offsetof(block_q4_1, m);
        qs_off = offsetof(block_q4_1, qs);
        break;
    case KF_Q5_0:
        d_off = offsetof(block_q5_0, d);
        qs_off = offsetof(block_q5_0, qs);
        qh_off = offsetof(block_q5_0, qh);
        break;
    default:
        d_off = offsetof(block_q5_1, d);
        m_off = offsetof(block_q5_1, m);
        qs_off = offsetof(block_q5_1, qs);
        qh_off = offsetof(block_q5_1, qh);
        break;
    }
    kf_st16(blk + d_off, dbits);
    if (m_off)
        kf_st16(blk + m_off, mbits);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256i n = _mm256_and_si256(q, low4);
    __m128i lo = _mm256_castsi256_si128(n), hi = _mm256_extracti128_si256(n, 1);
    _mm_storeu_si128((__m128i *)(void *)(blk + qs_off), _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
    if (qh_off) { /* bit j of qh: bit 4 of level j, moved to each byte's top bit */
        uint32_t qh = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(q, 3));
        blk[qh_off] = (uint8_t)qh;
        blk[qh_off + 1] = (uint8_t)(qh >> 8);
        blk[qh_off + 2] = (uint8_t)(qh >> 16);
        blk[qh_off + 3] = (uint8_t)(qh >> 24);
    }
}

/* Levels of eight consecutive blocks at once (kf_q8blocks); slow blocks one
 * by one. */
__attribute__((target("avx2,f16c"))) static void kf_quantize8(kf_kind k, const float *x,
                                                               uint8_t *out, size_t bb, bool wide)
{
    int32_t L[256];
    uint16_t db[8], mb[8];
    int slow = wide ? kf_q8blocks_any_512(k, x, L, db, mb)
                    : kf_q8blocks_any(k, x, L, db, mb);
    for (int b = 0; b < 8; b++) {
        if (slow & (1 << b))
            kf_quantize_block(k, x + 32 * b, out + (size_t)b * bb);
        else
            kf_pack_avx2(k, L + 32 * b, db[b], mb[b], out + (size_t)b * bb);
    }
}

__attribute__((target("avx2,f16c"))) static size_t kf_quantize_avx2(kf_kind k, const float *src,
                                                                     void *dst, int64_t nrows,
                                                                     int64_t n_per_row, bool wide)
{
    const size_t bb = kf_block_bytes(k);
    const int64_t nb = nrows * (n_per_row / 32);
    uint8_t *out = dst;
    int64_t b = 0;
    for (; b + 8 <= nb; b += 8)
        kf_quantize8(k, src + 32 * b, out + (size_t)b * bb, bb, wide);
    for (; b < nb; b++)
        kf_quantize_block(k, src + 32 * b, out + (size_t)b * bb);
    return (size_t)nb * bb;
}

/* ---- grids: int, uint, nf4, fp8 ---- */

#define KF_RN (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

static const float kf_nf4_levels[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};
static const float kf_nf4_mids[15] = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,
    -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
    -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
    0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

/* The cells of nf4's level search: cell j holds the t with t · KF_NF4_S + 16
 * in [j, j + 1). KF_NF4_S, a little under 16, keeps every |t| <= 1 + 2^-23
 * (t = x · (1/s) with |x| <= s) inside cells 0..31 with no clamp. */
#define KF_NF4_S 15.984375f /* 16 - 2^-6 */

/* k_fq.nf4_cell. Each cell holds at most one midpoint (they lie 0.080 or more
 * apart) and none lies within 0.0011 of a cell edge, so t placed one cell
 * off by the rounding of t · KF_NF4_S + 16 still gets its level: the number
 * of midpoints below t is the count below the cell plus t > the cell's
 * midpoint, as in kf_grid_one. */
static void kf_nf4_cells(float cell[3][32])
{
    for (int j = 0; j < 32; j++) {
        const double lo = (j - 16) / (double)KF_NF4_S, hi = (j - 15) / (double)KF_NF4_S;
        int below = 0;
        float mid = INFINITY;
        for (int k = 0; k < 15; k++) {
            below += kf_nf4_mids[k] < lo;
            if (kf_nf4_mids[k] >= lo && kf_nf4_mids[k] < hi)
                mid = kf_nf4_mids[k];
        }
        cell[0][j] = mid;
        cell[1][j] = kf_nf4_levels[below];
        cell[2][j] = kf_nf4_levels[isinf(mid) ? below : below + 1];
    }
}

typedef struct kf_grid {
    q_format_id id;
    float qlo, qhi, half;
    int mbits, emin; /* fp8: mantissa bits, smallest normal exponent */
    float fmax;      /* fp8: largest finite value */
    /* fp8, the AVX2 rounding on the float's bits (kf_grid_apply_avx2): the
     * shift from bit 0 to the lowest mantissa bit kept, half that bit's weight
     * less one, the mask of the bits kept, and the bits of 2^emin and of cq
     * (whose float spacing is fp8's quantum below 2^emin; AVX-512's kf_grid16
     * uses cq only) */
    int32_t rshift, rhalf, rmask, tiny, cq;
    const float (*cell)[32]; /* nf4: k_fq.nf4_cell (AVX-512) */
} kf_grid;

static bool kf_is_fp8(q_format_id id)
{
    return id == Q_FMT_FP8_E4M3 || id == Q_FMT_FP8_E5M2;
}

typedef struct kf_gpar {
    float s, z, inv;
} kf_gpar;

/* The scale a grid stores in f16 (q_grid.c's definition). */
static float kf_f16_scale(float s)
{
    if (!(s <= 65504.0f))
        s = 65504.0f;
    return q_f16_to_f32(q_f32_to_f16(s));
}

/* Group parameters from the group's range, as q_grid.c defines them. */
static kf_gpar kf_grid_params(const kf_grid *g, float lo, float hi)
{
    kf_gpar p = {0.0f, 0.0f, 0.0f};
    lo = fminf(lo, 0.0f);
    hi = fmaxf(hi, 0.0f);
    float amax = fmaxf(-lo, hi);
    if (g->id == Q_FMT_INT) {
        p.s = kf_f16_scale(amax / g->half);
    } else if (g->id == Q_FMT_UINT) {
        p.s = kf_f16_scale((hi - lo) / g->qhi);
        if (p.s > 0.0f)
            p.z = fminf(fmaxf(rintf(-lo / p.s), 0.0f), g->qhi);
    } else if (kf_is_fp8(g->id)) {
        p.s = amax / g->fmax;
        if (!(p.s <= 3.0e38f))
            p.s = 0.0f;
    } else {
        p.s = amax <= 3.0e38f ? amax : 0.0f;
        if (p.s > 0.0f)
            p.inv = 1.0f / p.s;
    }
    return p;
}

static float kf_grid_one(const kf_grid *g, const kf_gpar *p, float x)
{
    if (!(p->s > 0.0f))
        return 0.0f;
    if (g->id == Q_FMT_INT)
        return fminf(fmaxf(rintf(x / p->s), g->qlo), g->qhi) * p->s;
    if (g->id == Q_FMT_UINT)
        return (fminf(fmaxf(rintf(x / p->s) + p->z, 0.0f), g->qhi) - p->z) * p->s;
    if (kf_is_fp8(g->id)) {
        /* Nearest fp8 value, ties to even, saturating: the quantum is 2^(ex -
         * mbits) with ex = max(floor(log2 |v|), emin); power-of-two scalings
         * are exact, so this equals encoding and decoding the code. */
        float v = x / p->s, a = fabsf(v), r;
        if (a >= g->fmax) {
            r = g->fmax;
        } else {
            uint32_t bits;
            memcpy(&bits, &a, sizeof bits);
            int ex = (int)(bits >> 23) - 127;
            ex = ex < g->emin ? g->emin : ex;
            r = ldexpf(rintf(ldexpf(a, g->mbits - ex)), ex - g->mbits);
        }
        return copysignf(r, v) * p->s;
    }
    float t = x * p->inv;
    int i = 0;
    for (int k = 0; k < 15; k++)
        i += t > kf_nf4_mids[k];
    return kf_nf4_levels[i] * p->s;
}

/* The range of a group from the lane extremes l, h of its first i values. */
static void kf_range_finish(const float *x, int64_t i, int64_t n, float l, float h, float *lo,
                            float *hi)
{
    for (; i < n; i++) {
        l = fminf(l, x[i]);
        h = fmaxf(h, x[i]);
    }
    if (l > h)
        l = h = 0.0f;
    *lo = l;
    *hi = h;
}

KF_AVX2 static void kf_range_avx2(const float *x, int64_t n, float *lo, float *hi)
{
    __m256 a = _mm256_set1_ps(INFINITY), b = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        a = _mm256_min_ps(a, v);
        b = _mm256_max_ps(b, v);
    }
    kf_range_finish(x, i, n, kf_hmin(a), kf_hmax(b), lo, hi);
}

/* y = the grid's values of x for p->s > 0 (kf_grid_apply handles s = 0). */
KF_AVX2 static void kf_grid_apply_avx2(const kf_grid *g, const kf_gpar *p, const float *x,
                                       float *y, int64_t n)
{
    int64_t i = 0;
    const __m256 s = _mm256_set1_ps(p->s), z = _mm256_set1_ps(p->z);
    const __m256 qlo = _mm256_set1_ps(g->qlo), qhi = _mm256_set1_ps(g->qhi);
    const __m256 zero = _mm256_setzero_ps(), inv = _mm256_set1_ps(p->inv);
    if (g->id == Q_FMT_INT) {
        for (; i + 8 <= n; i += 8) {
            __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), s), KF_RN);
            q = _mm256_min_ps(_mm256_max_ps(q, qlo), qhi);
            _mm256_storeu_ps(y + i, _mm256_mul_ps(q, s));
        }
    } else if (g->id == Q_FMT_UINT) {
        for (; i + 8 <= n; i += 8) {
            __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), s), KF_RN);
            q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, z), zero), qhi);
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_sub_ps(q, z), s));
        }
    } else if (kf_is_fp8(g->id)) {
        /* kf_grid16's rounding on the float's bits (the mantissa rounded at
         * the last bit fp8 keeps, ties to even; below 2^emin by adding and
         * taking away cq, those lanes only), then the saturation to fmax */
        const __m256 sgn = _mm256_set1_ps(-0.0f), fmx = _mm256_set1_ps(g->fmax);
        const __m128i mb = _mm_cvtsi32_si128(g->rshift);
        const __m256i rhalf = _mm256_set1_epi32(g->rhalf), rmask = _mm256_set1_epi32(g->rmask);
        const __m256 tiny = _mm256_castsi256_ps(_mm256_set1_epi32(g->tiny));
        const __m256 cq = _mm256_castsi256_ps(_mm256_set1_epi32(g->cq));
        for (; i + 8 <= n; i += 8) {
            const __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i), s);
            const __m256i b = _mm256_castps_si256(v);
            const __m256i lsb = _mm256_and_si256(_mm256_srl_epi32(b, mb), _mm256_set1_epi32(1));
            __m256 f = _mm256_castsi256_ps(
                _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(b, rhalf), lsb), rmask));
            const __m256 a = _mm256_andnot_ps(sgn, v);
            const __m256 sub = _mm256_cmp_ps(a, tiny, _CMP_LT_OQ);
            if (__builtin_expect(_mm256_movemask_ps(sub) != 0, 0)) {
                const __m256 q = _mm256_sub_ps(_mm256_add_ps(a, cq), cq);
                f = _mm256_blendv_ps(f, _mm256_or_ps(q, _mm256_and_ps(v, sgn)), sub);
            }
            const __m256 r = _mm256_or_ps(_mm256_min_ps(_mm256_andnot_ps(sgn, f), fmx),
                                          _mm256_and_ps(v, sgn));
            _mm256_storeu_ps(y + i, _mm256_mul_ps(r, s));
        }
    } else {
        /* the index is the count of midpoints below t (kf_grid_one), found by
         * a binary search over the sorted midpoints with the same compares:
         * bit 3 against mid 7, bit 2 against mid 3 or 11, bit 1 against one
         * of mids 1, 5, 9, 13 and bit 0 one of the even ones, each from a
         * table of eight looked up by the bits found so far (NaN compares
         * false everywhere: index 0, as there) */
        const __m256 tlo = _mm256_loadu_ps(kf_nf4_levels);
        const __m256 thi = _mm256_loadu_ps(kf_nf4_levels + 8);
        const float *m = kf_nf4_mids;
        const __m256 odd = _mm256_setr_ps(m[1], m[5], m[9], m[13], 0, 0, 0, 0);
        const __m256 even = _mm256_setr_ps(m[0], m[2], m[4], m[6], m[8], m[10], m[12], m[14]);
        const __m256 m3 = _mm256_set1_ps(m[3]), m7 = _mm256_set1_ps(m[7]);
        const __m256 m11 = _mm256_set1_ps(m[11]);
        const __m256i one = _mm256_set1_epi32(1);
        for (; i + 8 <= n; i += 8) {
            const __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv);
            const __m256 hi = _mm256_cmp_ps(t, m7, _CMP_GT_OQ);
            __m256i j = _mm256_and_si256(_mm256_castps_si256(hi), one); /* bits so far */
            __m256 c = _mm256_cmp_ps(t, _mm256_blendv_ps(m3, m11, hi), _CMP_GT_OQ);
            j = _mm256_sub_epi32(_mm256_add_epi32(j, j), _mm256_castps_si256(c));
            c = _mm256_cmp_ps(t, _mm256_permutevar8x32_ps(odd, j), _CMP_GT_OQ);
            j = _mm256_sub_epi32(_mm256_add_epi32(j, j), _mm256_castps_si256(c));
            c = _mm256_cmp_ps(t, _mm256_permutevar8x32_ps(even, j), _CMP_GT_OQ);
            j = _mm256_sub_epi32(_mm256_add_epi32(j, j), _mm256_castps_si256(c));
            const __m256 v = _mm256_blendv_ps(_mm256_permutevar8x32_ps(tlo, j),
                                              _mm256_permutevar8x32_ps(thi, j), hi);
            _mm256_storeu_ps(y + i, _mm256_mul_ps(v, s));
        }
    }
    for (; i < n; i++)
        y[i] = kf_grid_one(g, p, x[i]);
}

static void kf_grid_setup(const q_fmt_spec *spec, kf_grid *g)
{
    memset(g, 0, sizeof *g);
    g->id = spec->id;
    int bits = spec->bits < 2 ? 2 : spec->bits > 8 ? 8 : spec->bits;
    if (spec->id == Q_FMT_INT) {
        g->qlo = -(float)(1 << (bits - 1));
        g->qhi = (float)((1 << (bits - 1)) - 1);
        g->half = (float)((1 << bits) - 1) / 2.0f;
    } else if (spec->id == Q_FMT_UINT) {
        g->qhi = (float)((1 << bits) - 1);
    } else if (spec->id == Q_FMT_FP8_E4M3) {
        g->mbits = 3;
        g->emin = -6;
        g->fmax = 448.0f;
    } else if (spec->id == Q_FMT_FP8_E5M2) {
        g->mbits = 2;
        g->emin = -14;
        g->fmax = 57344.0f;
    }
    if (kf_is_fp8(spec->id)) { /* tiny and cq are powers of two, from their exponents */
        g->rshift = 23 - g->mbits;
        g->rhalf = (1 << (22 - g->mbits)) - 1;
        g->rmask = ~((1 << (23 - g->mbits)) - 1);
        g->tiny = (127 + g->emin) << 23;
        g->cq = (127 + g->emin - g->mbits + 23) << 23;
    }
}

/* ---- metrics ---- */

KF_AVX2 static double kf_hsum_pd(__m256d v)
{
    double t[4];
    _mm256_storeu_pd(t, v);
    return (t[0] + t[1]) + (t[2] + t[3]);
}

KF_AVX2 static bool kf_has_nan_avx2(const float *y, int64_t n)
{
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(y + i);
        acc = _mm256_or_ps(acc, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(acc))
        return true;
    for (; i < n; i++)
        if (isnan(y[i]))
            return true;
    return false;
}

/* The last values of a row (fewer than a step of the bit-sliced counters):
 * bins are counted two at a time, as one of 64 × 64 pairs, in the caller's
 * k_acc_scratch table (16 KiB, L1-resident): half the read-modify-writes of
 * counting single bins, and pairs crowd far less onto one counter (errors
 * crowd into the middle bins, and increments of one counter chain through
 * store-to-load forwarding). The pair indices go from the vector to general
 * registers two per 64-bit move (3-10% faster previews than through a stored
 * array, Zen 4). The table is folded into the 64 bins by k_acc_flush. */
#define KF_PAIRS (Q_ERR_HIST_BINS * Q_ERR_HIST_BINS)

/* Counts the four pair indices in the int32 lanes of pi. */
__attribute__((target("sse4.1"), always_inline)) static inline void kf_count4(k_acc_scratch *p,
                                                                              __m128i pi)
{
    const uint64_t q0 = (uint64_t)_mm_cvtsi128_si64(pi), q1 = (uint64_t)_mm_extract_epi64(pi, 1);
    p->n[(uint32_t)q0]++;
    p->n[q0 >> 32]++;
    p->n[(uint32_t)q1]++;
    p->n[q1 >> 32]++;
}

#if KF_X86
KF_AVX512 static void kf_bits_harvest(k_acc_scratch *p, int64_t *hist);
static void kf_bits4_harvest(k_acc_scratch *p, int64_t *hist);
#endif

void k_acc_flush(q_metrics_acc *a, k_acc_scratch *p)
{
    if (!p->pending)
        return;
#if KF_X86
    if (p->bits_used)
        kf_bits_harvest(p, a->hist);
    if (p->bits4_used)
        kf_bits4_harvest(p, a->hist);
#endif
    for (int hi = 0; p->pairs_used && hi < Q_ERR_HIST_BINS; hi++) {
        const uint32_t *row = p->n + hi * Q_ERR_HIST_BINS;
        int64_t s = 0;
        for (int lo = 0; lo < Q_ERR_HIST_BINS; lo++) {
            s += row[lo];
            a->hist[lo] += row[lo];
        }
        a->hist[hi] += s;
    }
    if (p->pairs_used)
        memset(p->n, 0, sizeof p->n);
    p->pairs_used = false;
    p->pending = 0;
}

/* The exact bin of e = y - x (q_metrics' formula, in double). */
static inline int32_t kf_bin_exact(float x, float y, double range)
{
    double e = (double)y - (double)x;
    double t = (e + range) / (2.0 * range) * Q_ERR_HIST_BINS;
    return !(t >= 0.0) ? 0 : t >= Q_ERR_HIST_BINS ? Q_ERR_HIST_BINS - 1 : (int32_t)t;
}

/* The lanes of nm that the bit-sliced counters counted in bin b[l] (none
 * for 64 or more) move to their exact bins, by corrections in p->fix. */
static void kf_fix_lanes(k_acc_scratch *p, const int32_t *b, unsigned nm, const float *x,
                         const float *y, double range)
{
    for (; nm; nm &= nm - 1) {
        const int l = __builtin_ctz(nm);
        if ((uint32_t)b[l] < Q_ERR_HIST_BINS) /* else the adders counted it nowhere */
            p->fix[b[l]]--;
        p->fix[kf_bin_exact(x[l], y[l], range)]++;
    }
}

/* Adds p->fix to hist and clears it (the bit-sliced counters' harvests). */
static void kf_fix_harvest(k_acc_scratch *p, int64_t *hist)
{
    for (int b = 0; b < Q_ERR_HIST_BINS; b++)
        hist[b] += p->fix[b];
    memset(p->fix, 0, sizeof p->fix);
}

/* Bins again by the exact formula the lanes of b set in nm (errors y - x). */
static void kf_rebin(int32_t *b, unsigned nm, const float *x, const float *y, double range)
{
    for (; nm; nm &= nm - 1) {
        int l = __builtin_ctz(nm);
        b[l] = kf_bin_exact(x[l], y[l], range);
    }
}

/* Histogram bins in fixed point (the AVX-512 and the AVX2 bit-sliced
 * counters): u = (y - x) K with K = 2^21 / range is (t - 32) 2^16 for
 * q_metrics' t = (e + range) / (2 range) · 64, so the bin is (u rounded +
 * 2^21) shifted right by 16. u rounded is within 0.75 of the exact figure
 * where it matters (|u| <= 2^21): e rounded to float (2^-24 relative), K
 * (2^-24) and the one rounding to an integer (a half). So only a u rounded to
 * an edge (a multiple of 2^16) can have its exact figure on the other side;
 * a lane whose rounded u lies within KF_NEAR of an edge (a margin of one more
 * than needed: (u + KF_NEAR) mod 2^16 < 2 KF_NEAR), or outside the bins'
 * span, is binned again by the exact formula, so every count equals the
 * reference's (a margin of 8 sent about a fifth of the 1024-value steps to the
 * fix-up; 2 about a sixteenth: previews 2-6% faster, Zen 4); e = 0
 * gives bin 32 exactly, as the reference does, and is not binned again. Used
 * for ranges in [2^-100, 2^100] (K a normal float); k_acc_row takes the
 * others to the scalar path. lim: |e| below it keeps u rounded within
 * 2^21 - 31 of 0, inside the span. */
static void kf_hc_scalars(double range, float *k, float *lim)
{
    *k = (float)(0x1p21 / range);
    const double l = (0x1p21 - 32) / (double)*k;
    *lim = (float)l;
    if ((double)*lim > l)
        *lim = nextafterf(*lim, 0.0f);
}

/* 1.5 · 2^23: for |t| < 2^22 the float t + KF_MAGIC is KF_MAGIC plus t
 * rounded to an integer (ties to even), held in its low bits. */
#define KF_MAGIC 0x1.8p23f
#define KF_MAGIC_BITS 0x4b400000
#define KF_NEAR 2 /* a power of two */

/* Histogram bins of e = y - x, 8 values per step: t = (e + range) * 64 /
 * (2 range) in float, within 2e-5 of q_metrics' double t (float rounding of
 * e, of the sum and of the reciprocal: a few ulps of at most 64); a lane whose
 * float t lies within 1e-4 of an integer (a bin edge, or 0 and 64, the ends)
 * is binned again by the exact formula, so every count equals the
 * reference's. n is a multiple of 8. */
__attribute__((target("avx2"))) static void kf_hist_avx2(q_metrics_acc *a, k_acc_scratch *p,
                                                         const float *x, const float *y,
                                                         int64_t n)
{
    const double range = a->hist_range;
    const __m256 fr = _mm256_set1_ps((float)range);
    const __m256 finv = _mm256_set1_ps((float)(Q_ERR_HIST_BINS / (2.0 * range)));
    const __m256 lo_edge = _mm256_set1_ps(1e-4f), hi_edge = _mm256_set1_ps(1.0f - 1e-4f);
    const __m256 fcap = _mm256_set1_ps((float)Q_ERR_HIST_BINS - 0.5f);
    /* pair index of bins (j, j + 1): bin j + 1 in bits 6..11, bin j in 0..5 */
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    const __m128i low12 = _mm_set1_epi32(KF_PAIRS - 1);
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        __m256 xf = _mm256_loadu_ps(x + c), yf = _mm256_loadu_ps(y + c);
        __m256 t = _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(yf, xf), fr), finv);
        __m256 f = _mm256_sub_ps(t, _mm256_floor_ps(t));
        __m256 near = _mm256_or_ps(_mm256_cmp_ps(f, lo_edge, _CMP_LT_OQ),
                                   _mm256_cmp_ps(f, hi_edge, _CMP_GT_OQ));
        t = _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), fcap);
        __m256i bv = _mm256_cvttps_epi32(t);
        /* e = 0 (x on a grid point: nf4's and fp8's group maxima) is the
         * middle bin exactly, (0 + r) / 2r · 64 = 32, not worth a rebin */
        __m256 same = _mm256_cmp_ps(yf, xf, _CMP_EQ_OQ);
        bv = _mm256_blendv_epi8(bv, _mm256_set1_epi32(Q_ERR_HIST_BINS / 2),
                                _mm256_castps_si256(same));
        int nm = _mm256_movemask_ps(_mm256_andnot_ps(same, near));
        if (__builtin_expect(nm != 0, 0)) {
            int32_t b[8];
            _mm256_storeu_si256((__m256i *)(void *)b, bv);
            kf_rebin(b, (unsigned)nm, x + c, y + c, range);
            bv = _mm256_loadu_si256((const __m256i *)(const void *)b);
        }
        __m256i pv = _mm256_or_si256(bv, _mm256_srli_epi64(bv, 26));
        pv = _mm256_permutevar8x32_epi32(pv, even);
        const __m128i pi = _mm_and_si128(_mm256_castsi256_si128(pv), low12);
        kf_count4(p, pi);
    }
    p->pending += n / 2;
    p->pairs_used = true;
}

/* The AVX2 form of the AVX-512 bit-sliced counting (kf_hist_bits): each
 * value's bin becomes one set bit of a 64-bit lane (the bins of lanes 2i and
 * 2i + 1 of the fixed-point vector go to two vectors of four such lanes), and
 * full adders (five logic instructions: AVX2 has no ternary logic) add 64 of
 * those vectors, 256 values, into planes of weight 1 .. 32 held in
 * registers; each carry of weight 64 goes into planes 6 .. 12 in memory by
 * half adders without a branch, rarely further by a loop. The lanes near an
 * edge are noted per 8 values and moved to their exact bins after each step,
 * as kf_cs_fix does (kf_cs4_fix). About 25 instructions per 8 values against
 * about 32 with the pair table's scalar increments, which also chain through
 * memory: the histogram of a row, rows in L2, Zen 4 capped at AVX2, 0.52 ->
 * 0.25-0.31 ns a value. */
typedef struct kf_hc4 {
    __m256 k, lim;
    double range;
} kf_hc4;

typedef struct kf_cs4 {
    __m256i p[6];       /* planes 0 .. 5 */
    __m256 mx;          /* largest |e| of the step (float) */
    int64_t c0;         /* the step's first value */
    uint8_t near[32];   /* per 8 values of the step: lanes to bin again */
} kf_cs4;

/* The fixed-point bins of the 8 errors yf - xf (kf_bins16_fast's v: the bin
 * is v >> 16, and any v past the span has a bit of 22..31 set); in *near the
 * lanes near an edge and, with span, those outside the span; the largest
 * magnitude into *mx. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256i
kf_bins8_fast(const kf_hc4 *h, __m256 xf, __m256 yf, __m256 *mx, int *near, const bool span)
{
    const __m256 d = _mm256_sub_ps(yf, xf);
    *mx = _mm256_max_ps(*mx, _mm256_andnot_ps(_mm256_set1_ps(-0.0f), d));
    const __m256i v = _mm256_add_epi32(
        _mm256_castps_si256(_mm256_fmadd_ps(d, h->k, _mm256_set1_ps(KF_MAGIC))),
        _mm256_set1_epi32((1 << 21) + KF_NEAR - KF_MAGIC_BITS));
    const __m256i zero = _mm256_setzero_si256();
    __m256i nm = _mm256_and_si256(
        _mm256_cmpeq_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0xffff & -2 * KF_NEAR)), zero),
        _mm256_castps_si256(_mm256_cmp_ps(yf, xf, _CMP_NEQ_UQ)));
    if (span) {
        const __m256i in = _mm256_cmpeq_epi32(
            _mm256_and_si256(v, _mm256_set1_epi32((int)0xffc00000u)), zero);
        nm = _mm256_or_si256(nm, _mm256_andnot_si256(in, _mm256_set1_epi32(-1)));
    }
    *near = _mm256_movemask_ps(_mm256_castsi256_ps(nm));
    return v;
}

/* Full adder over the bits of plane *p and of a and b: the sum into *p, the
 * carry returned. */
__attribute__((target("avx2"), always_inline)) static inline __m256i kf_csa4(__m256i *p,
                                                                            __m256i a, __m256i b)
{
    const __m256i u = _mm256_xor_si256(a, b);
    const __m256i c = _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(*p, u));
    *p = _mm256_xor_si256(*p, u);
    return c;
}

/* The one-hot words of the 8 errors at c (bins of the even lanes in a[0],
 * of the odd ones in a[1]; 64 or more: no bit), added at plane 0 with the
 * carry out into *out. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
kf_cs4_add0(kf_cs4 *s, const kf_hc4 *h, const float *x, const float *y, int64_t c, __m256i *out)
{
    int nm;
    const __m256i v = kf_bins8_fast(h, _mm256_loadu_ps(x + c), _mm256_loadu_ps(y + c), &s->mx,
                                    &nm, false);
    s->near[(c - s->c0) >> 3] = (uint8_t)nm;
    const __m256i one = _mm256_set1_epi64x(1);
    const __m256i ev = _mm256_and_si256(_mm256_srli_epi64(v, 16), _mm256_set1_epi64x(0xffff));
    *out = kf_csa4(&s->p[0], _mm256_sllv_epi64(one, ev),
                   _mm256_sllv_epi64(one, _mm256_srli_epi64(v, 48)));
}

#define KF_CS4_ADD(level, below)                                                               \
    __attribute__((target("avx2,fma"), always_inline)) static inline void kf_cs4_add##level(   \
        kf_cs4 *s, const kf_hc4 *h, const float *x, const float *y, int64_t c, __m256i *out)    \
    {                                                                                          \
        __m256i a, b;                                                                          \
        kf_cs4_add##below(s, h, x, y, c, &a);                                                  \
        kf_cs4_add##below(s, h, x, y, c + (4 << (level)), &b);                                 \
        *out = kf_csa4(&s->p[level], a, b);                                                    \
    }
KF_CS4_ADD(1, 0)
KF_CS4_ADD(2, 1)
KF_CS4_ADD(3, 2)
KF_CS4_ADD(4, 3)
KF_CS4_ADD(5, 4)
#undef KF_CS4_ADD

/* After the step at s->c0 (256 values): the lanes counted in a bin their
 * exact bin differs from move to it in p->fix; those outside the span are
 * looked for only when the step's largest |e| reaches h->lim. */
__attribute__((target("avx2,fma"))) static void kf_cs4_fix(kf_cs4 *s, const kf_hc4 *h,
                                                          k_acc_scratch *p, const float *x,
                                                          const float *y)
{
    const bool wide = _mm256_movemask_ps(_mm256_cmp_ps(s->mx, h->lim, _CMP_NLT_UQ)) != 0;
    s->mx = _mm256_setzero_ps();
    uint64_t any = 0;
    for (int i = 0; i < 32; i += 8) {
        uint64_t w;
        memcpy(&w, &s->near[i], sizeof w);
        any |= w;
    }
    for (int i = 0; (any || wide) && i < 32; i++) {
        if (!s->near[i] && !wide)
            continue;
        const int64_t c = s->c0 + 8 * i;
        __m256 unused = _mm256_setzero_ps();
        int nm;
        int32_t b[8];
        _mm256_storeu_si256((__m256i *)(void *)b,
                            _mm256_srli_epi32(kf_bins8_fast(h, _mm256_loadu_ps(x + c),
                                                            _mm256_loadu_ps(y + c), &unused,
                                                            &nm, true),
                                              16));
        kf_fix_lanes(p, b, (unsigned)nm, x + c, y + c, h->range);
    }
}

/* Counts the bins of values [0, n) of the row, n a multiple of 256. */
__attribute__((target("avx2,fma"))) static void kf_hist_bits4(const kf_hc4 *h, k_acc_scratch *p,
                                                            const float *x, const float *y,
                                                            int64_t n)
{
    kf_cs4 s;
    for (int j = 0; j < 6; j++)
        s.p[j] = _mm256_loadu_si256((const __m256i *)(const void *)p->bits4[j]);
    s.mx = _mm256_setzero_ps();
    for (int64_t c = 0; c < n; c += 256) {
        __m256i v;
        s.c0 = c;
        kf_cs4_add5(&s, h, x, y, c, &v);
        /* half adders into planes 6 .. 12 always, further while a carry is left */
        for (int j = 6; j < K_ACC_PLANES && (j < 13 || !_mm256_testz_si256(v, v)); j++) {
            const __m256i pl = _mm256_loadu_si256((const __m256i *)(const void *)p->bits4[j]);
            _mm256_storeu_si256((__m256i *)(void *)p->bits4[j], _mm256_xor_si256(pl, v));
            v = _mm256_and_si256(pl, v);
        }
        kf_cs4_fix(&s, h, p, x, y);
    }
    for (int j = 0; j < 6; j++)
        _mm256_storeu_si256((__m256i *)(void *)p->bits4[j], s.p[j]);
    p->bits4_used = true;
    p->pending += n / 2;
}

/* Adds the counts of p->bits4 (and p->fix) to hist and clears them. */
static void kf_bits4_harvest(k_acc_scratch *p, int64_t *hist)
{
    for (int j = 0; j < K_ACC_PLANES; j++)
        for (int l = 0; l < 4; l++)
            for (uint64_t w = p->bits4[j][l]; w; w &= w - 1)
                hist[__builtin_ctzll(w)] += INT64_C(1) << j;
    kf_fix_harvest(p, hist);
    memset(p->bits4, 0, sizeof p->bits4);
    p->bits4_used = false;
}

/* Lane sums of a SIMD metrics loop over a row's first values. */
typedef struct kf_tot {
    double w2, q2, wq, e2, iwe2, iww2, mx;
} kf_tot;

/* Sets t->q2 and t->wq for values [0, c) of the row from the SIMD loop's
 * W = Σ w², P = Σ w e and E = Σ e² (in t->w2, we, t->e2): Σ ŵ² = W + 2P + E
 * and Σ w ŵ = W + P. Where both come out at least W / 4 in magnitude the
 * error of each stays within 35 times the sums' own relative error (Cauchy-
 * Schwarz bounds |P| and E by the results), else (a quantizer that zeroes or
 * flips most of the row, or sums that overflowed) they are summed again
 * directly. */
static void kf_derive(kf_tot *t, double we, const float *x, const float *y, int64_t c)
{
    double q2 = t->w2 + 2.0 * we + t->e2, wq = t->w2 + we;
    if (!(q2 >= 0.25 * t->w2 && fabs(wq) >= 0.25 * t->w2)) {
        q2 = wq = 0.0;
        for (int64_t i = 0; i < c; i++) {
            q2 += (double)y[i] * y[i];
            wq += (double)x[i] * y[i];
        }
    }
    t->q2 = q2;
    t->wq = wq;
}

/* Completes t over values [c, n) of the row with q_metrics_add's formulas
 * (histogram included) and adds the row to a. */
static void kf_acc_finish(q_metrics_acc *a, kf_tot *t, const float *x, const float *y, int64_t c,
                          int64_t n, const float *iw)
{
    const double range = a->hist_range;
    for (; c < n; c++) {
        double xv = x[c], yv = y[c], e = yv - xv;
        t->w2 += xv * xv;
        t->q2 += yv * yv;
        t->wq += xv * yv;
        t->e2 += e * e;
        t->mx = fabs(e) > t->mx ? fabs(e) : t->mx;
        if (iw) {
            double v = iw[c];
            t->iwe2 += v * e * e;
            t->iww2 += v * xv * xv;
        }
        if (range > 0.0) {
            double tb = (e + range) / (2.0 * range) * Q_ERR_HIST_BINS;
            int bin = !(tb >= 0.0) ? 0 : tb >= Q_ERR_HIST_BINS ? Q_ERR_HIST_BINS - 1 : (int)tb;
            a->hist[bin]++;
        }
    }
    if (t->mx > a->max_abs)
        a->max_abs = t->mx;
    a->sum_w2 += t->w2;
    a->sum_q2 += t->q2;
    a->sum_wq += t->wq;
    a->sum_e2 += t->e2;
    a->sum_iw_e2 += t->iwe2;
    a->sum_iw_w2 += t->iww2;
    if (iw)
        a->weighted = true;
    a->n += n;
}

/* Four lanes of double sums. */
typedef struct kf_sums4 {
    __m256d w2, we, e2, iwe2, iww2;
} kf_sums4;

/* Adds four values (x, y as double; iw when has_iw) to s; max |e| into mx. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
kf_sums4_add(kf_sums4 *s, __m256d *mx, __m256d xd, __m256d yd, const float *iw,
             const bool has_iw)
{
    __m256d e = _mm256_sub_pd(yd, xd);
    s->w2 = _mm256_fmadd_pd(xd, xd, s->w2);
    s->we = _mm256_fmadd_pd(xd, e, s->we);
    s->e2 = _mm256_fmadd_pd(e, e, s->e2);
    *mx = _mm256_max_pd(*mx, _mm256_andnot_pd(_mm256_set1_pd(-0.0), e));
    if (has_iw) {
        __m256d iv = _mm256_cvtps_pd(_mm_loadu_ps(iw));
        s->iwe2 = _mm256_fmadd_pd(_mm256_mul_pd(iv, e), e, s->iwe2);
        s->iww2 = _mm256_fmadd_pd(_mm256_mul_pd(iv, xd), xd, s->iww2);
    }
}

/* Sums, 8 values per step: each half of x and y widened to double, products
 * accumulated with FMA in two sets of four lanes (rounding differs from the
 * scalar loop in the last bits only); the halves are done one after the other
 * so the accumulators stay in registers. The histogram is a second loop over
 * the same (cache-resident) row. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
kf_acc_avx2_body(q_metrics_acc *a, k_acc_scratch *p, const float *x, const float *y, int64_t n,
                 const float *iw, const bool has_iw, const char *pf)
{
    const __m256d z = _mm256_setzero_pd();
    kf_sums4 sa = {z, z, z, z, z}, sb = sa;
    __m256d mxa = z;
    const double range = a->hist_range;
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        if ((c & 15) == 0)
            _mm_prefetch(pf + 4 * c, _MM_HINT_T1); /* one line per 16 values */
        __m256 xf = _mm256_loadu_ps(x + c), yf = _mm256_loadu_ps(y + c);
        kf_sums4_add(&sa, &mxa, _mm256_cvtps_pd(_mm256_castps256_ps128(xf)),
                     _mm256_cvtps_pd(_mm256_castps256_ps128(yf)), has_iw ? iw + c : NULL,
                     has_iw);
        kf_sums4_add(&sb, &mxa, _mm256_cvtps_pd(_mm256_extractf128_ps(xf, 1)),
                     _mm256_cvtps_pd(_mm256_extractf128_ps(yf, 1)),
                     has_iw ? iw + c + 4 : NULL, has_iw);
    }
    if (range > 0.0) { /* the same c values; kf_acc_finish bins the rest */
        const int64_t nb = c / 256 * 256;
        if (nb > 0) {
            float k, lim;
            kf_hc_scalars(range, &k, &lim);
            const kf_hc4 h = {_mm256_set1_ps(k), _mm256_set1_ps(lim), range};
            kf_hist_bits4(&h, p, x, y, nb);
        }
        if (c > nb)
            kf_hist_avx2(a, p, x + nb, y + nb, c - nb);
    }
    double t4[4];
    _mm256_storeu_pd(t4, mxa);
    kf_tot t = {kf_hsum_pd(_mm256_add_pd(sa.w2, sb.w2)),
                0.0,
                0.0,
                kf_hsum_pd(_mm256_add_pd(sa.e2, sb.e2)),
                kf_hsum_pd(_mm256_add_pd(sa.iwe2, sb.iwe2)),
                kf_hsum_pd(_mm256_add_pd(sa.iww2, sb.iww2)),
                fmax(fmax(t4[0], t4[1]), fmax(t4[2], t4[3]))};
    kf_derive(&t, kf_hsum_pd(_mm256_add_pd(sa.we, sb.we)), x, y, c);
    kf_acc_finish(a, &t, x, y, c, n, iw);
}

/* Inlined twice, so the loop without importance weights keeps its
 * accumulators in registers. */
__attribute__((target("avx2,fma"))) static void kf_acc_avx2(q_metrics_acc *a, k_acc_scratch *p,
                                                             const float *x, const float *y,
                                                             int64_t n, const float *iw,
                                                             const char *pf)
{
    if (iw)
        kf_acc_avx2_body(a, p, x, y, n, iw, true, pf);
    else
        kf_acc_avx2_body(a, p, x, y, n, NULL, false, pf);
}

KF_AVX2 static int64_t kf_count_nonfinite_avx2(const float *x, int64_t n)
{
    const __m256i em = _mm256_set1_epi32(0x7f800000);
    int64_t bad = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i *src = (const __m256i *)(const void *)(x + i);
        __m256i v = _mm256_and_si256(_mm256_loadu_si256(src), em);
        bad += __builtin_popcount((unsigned)_mm256_movemask_ps(
            _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, em))));
    }
    for (; i < n; i++)
        bad += !isfinite(x[i]);
    return bad;
}

/* ---- AVX-512 kernels: the AVX2 forms at twice the width ----
 *
 * The same float operations in the same order on 16 lanes, compare results in
 * mask registers; per-block scalars of the 32-value formats are still
 * computed eight blocks at a time in AVX2 registers (kf_params8), the values
 * of each block in two 16-lane vectors. Metric sums run in two sets of eight
 * double lanes, so they differ from the AVX2 sums in the last bits only. */
/* kf_lev8 on 16 values; bad NULL: no test (the caller knows v finite and
 * the block's d normal, where no level leaves the proven range). */
KF_AVX512 __attribute__((always_inline)) static inline __m512
kf_lev16(kf_kind k, __m512 v, __m512 vid, __m512 vmn, __mmask16 *bad)
{
    const __m512 sgn = _mm512_set1_ps(-0.0f), zero = _mm512_setzero_ps();
    const __m512 half = _mm512_set1_ps(0.5f);
    if (k == KF_Q8_0) {
        __m512 p = _mm512_mul_ps(v, vid);
        /* the sign of p on ½ - 2^-25 (a bitwise select) */
        __m512 h = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
            _mm512_castps_si512(sgn), _mm512_castps_si512(p),
            _mm512_castps_si512(_mm512_set1_ps(KF_HALF_DOWN)), 0xca));
        __m512 r = _mm512_roundscale_ps(_mm512_add_ps(p, h), KF_TRUNC);
        /* |v| ≤ max|x| and id = 1/(max|x|/127) keep |p| under 127.5 when id
         * is finite (kf_params8 sends other blocks to the reference): only a
         * NaN or infinite v gives a level outside [-127, 127], always NaN */
        if (bad)
            *bad |= _mm512_cmp_ps_mask(r, r, _CMP_UNORD_Q);
        return r;
    }
    __m512 t, lim, top;
    if (k == KF_Q4_0 || k == KF_Q5_0) {
        const float hlf = k == KF_Q4_0 ? 8.0f : 16.0f;
        t = _mm512_add_ps(_mm512_mul_ps(v, vid), _mm512_set1_ps(hlf + 0.5f));
        lim = _mm512_set1_ps(128.0f);
        top = _mm512_set1_ps(2 * hlf - 1);
    } else {
        t = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, vmn), vid), half);
        lim = _mm512_set1_ps(k == KF_Q4_1 ? 128.0f : 32.0f);
        top = _mm512_set1_ps(k == KF_Q4_1 ? 15.0f : 255.0f);
    }
    if (bad)
        *bad |= _mm512_cmp_ps_mask(t, zero, _CMP_NGE_UQ) | _mm512_cmp_ps_mask(t, lim, _CMP_NLT_UQ);
    return _mm512_min_ps(_mm512_roundscale_ps(t, KF_TRUNC), top);
}

/* kf_store8 (with kf_deq8) on 16 levels. */
KF_AVX512 __attribute__((always_inline)) static inline void
kf_store16(kf_kind k, __m512 l, __m512 dh, __m512 mh, int32_t *L, float *y)
{
    if (L) {
        _mm512_storeu_si512((void *)L, _mm512_cvttps_epi32(l));
        return;
    }
    /* l · dh is exact (an integer of at most 8 bits times an f16 value), so
     * one fused multiply-add rounds as the reference's product and sum do;
     * q8_0's + 0 turns the level -0 into the reference's +0 */
    __m512 v;
    if (k == KF_Q8_0)
        v = _mm512_fmadd_ps(l, dh, _mm512_setzero_ps());
    else if (k == KF_Q4_0 || k == KF_Q5_0)
        v = _mm512_mul_ps(_mm512_sub_ps(l, _mm512_set1_ps(k == KF_Q4_0 ? 8.0f : 16.0f)), dh);
    else
        v = _mm512_fmadd_ps(l, dh, mh);
    _mm512_storeu_ps(y, v);
}

/* The upper and lower halves of v combined by max (or min) into 8 lanes. */
KF_AVX512 static inline __m256 kf_fold16(__m512 v, bool is_max)
{
    __m256 lo = _mm512_castps512_ps256(v), hi = _mm512_extractf32x8_ps(v, 1);
    return is_max ? _mm256_max_ps(lo, hi) : _mm256_min_ps(lo, hi);
}

/* The extremes of eight 32-blocks at x, lane b for block b (q8_0: maximum
 * magnitudes, in *vmax and *vmin); true, with nothing set, when check is set
 * and x holds NaN or Inf. */
KF_AVX512 __attribute__((always_inline)) static inline bool
kf_q8ext_512(const kf_kind k, const float *x, __m256 *vmax, __m256 *vmin, const bool check)
{
    __m256 mx[8], mn[8];
    __mmask16 nf = 0;
    for (int b = 0; b < 8; b++) {
        __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        if (check)
            nf |= _mm512_fpclass_ps_mask(v0, KF_NOT_FINITE) |
                  _mm512_fpclass_ps_mask(v1, KF_NOT_FINITE);
        if (k == KF_Q8_0) {
            mx[b] = kf_fold16(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)), true);
        } else {
            mx[b] = kf_fold16(_mm512_max_ps(v0, v1), true);
            mn[b] = kf_fold16(_mm512_min_ps(v0, v1), false);
        }
    }
    if (check && nf)
        return true;
    *vmax = kf_reduce8(mx, true);
    *vmin = k == KF_Q8_0 ? *vmax : kf_reduce8(mn, false);
    return false;
}

/* The levels of one 32-block at x into L (when given) or its dequantized
 * values into y, with the block's scalars; true when a level fell outside
 * the proven range (the block is for the one-block path). */
KF_AVX512 __attribute__((always_inline)) static inline bool
kf_q8block_512(const kf_kind k, const float *x, float id, float m, float dh, float mh, int32_t *L,
               float *y, const bool test)
{
    const __m512 vid = _mm512_set1_ps(id), vmn = _mm512_set1_ps(m);
    const __m512 vdh = _mm512_set1_ps(dh), vmh = _mm512_set1_ps(mh);
    __mmask16 bad = 0;
    for (int i = 0; i < 2; i++)
        kf_store16(k, kf_lev16(k, _mm512_loadu_ps(x + 16 * i), vid, vmn, test ? &bad : NULL),
                   vdh, vmh, L ? L + 16 * i : NULL, y ? y + 16 * i : NULL);
    return bad != 0;
}

/* kf_q8blocks' integer mode with each block's values in two 16-lane
 * vectors: the levels of eight blocks into L, the f16 bits of d and m into
 * db and mb; returns the mask of blocks for the caller to quantize one by
 * one (apply). */
KF_AVX512 __attribute__((always_inline)) static inline int
kf_q8blocks_512(const kf_kind k, const float *x, int32_t *L, uint16_t *db, uint16_t *mb)
{
    __m256 vmax, vmin;
    kf_q8ext_512(k, x, &vmax, &vmin, false);
    kf_par8 par;
    int slow = kf_params8(k, vmax, vmin, &par);
    _mm_storeu_si128((__m128i *)(void *)db, par.dbits);
    _mm_storeu_si128((__m128i *)(void *)mb, par.mbits);
    float fid[8], fm[8], fdh[8], fmh[8];
    _mm256_storeu_ps(fid, par.id);
    _mm256_storeu_ps(fm, par.m);
    _mm256_storeu_ps(fdh, par.dh);
    _mm256_storeu_ps(fmh, par.mh);
    for (int b = 0; b < 8; b++)
        if (kf_q8block_512(k, x + 32 * b, fid[b], fm[b], fdh[b], fmh[b], L + 32 * b, NULL, true))
            slow |= 1 << b;
    return slow;
}

/* KF_Q8ROW_BODY's par, AVX-512. */
KF_AVX512 __attribute__((always_inline)) static inline int
kf_q8par_512(const kf_kind k, const float *x, kf_rowpar *rp, int b0, int *ovf, const bool check)
{
    __m256 vmax, vmin;
    if (kf_q8ext_512(k, x, &vmax, &vmin, check))
        return KF_NONFINITE;
    return kf_rowpar_put(k, vmax, vmin, rp, b0, ovf);
}

/* The values of block b (KF_Q8ROW_BODY's val, AVX-512). */
KF_AVX512 __attribute__((always_inline)) static inline void
kf_q8val_512(const kf_kind k, const float *x, const kf_rowpar *rp, int b, float *y)
{
    (void)kf_q8block_512(k, x, rp->id[b], rp->m[b], rp->dh[b], rp->mh[b], NULL, y, false);
}

/* The row kernel on 16 lanes (fake quantization of a q8_0 row: 0.21 -> 0.13
 * ns a value against eight blocks at a time, Zen 4). */
KF_AVX512 __attribute__((always_inline)) static inline int
kf_q8row_512(const kf_kind k, const float *x, float *y, int64_t n, const bool check)
{
    KF_Q8ROW_BODY(kf_q8par_512, kf_q8val_512)
}

#define KF_Q8ROW(kind)                                                                         \
    (check ? kf_q8row_512(kind, x, y, n, true) : kf_q8row_512(kind, x, y, n, false))

/* kf_q8row_512 for a kind known only at run time. */
KF_AVX512 static int kf_q8row_any_512(kf_kind k, const float *x, float *y, int64_t n, bool check)
{
    KF_DISPATCH(k, KF_Q8ROW, 1)
}
#undef KF_Q8ROW

KF_AVX512 static int kf_q8blocks_any_512(kf_kind k, const float *x, int32_t *L, uint16_t *db,
                                         uint16_t *mb)
{
#define KF_BLOCKS(kind) kf_q8blocks_512(kind, x, L, db, mb)
    KF_DISPATCH(k, KF_BLOCKS, 0xff)
#undef KF_BLOCKS
}

/* ---- grids ---- */

/* The range of x; returns true, with lo and hi unset, when check is set and
 * x holds NaN or Inf. */
KF_AVX512 static bool kf_range_512(const float *x, int64_t n, float *lo, float *hi, bool check)
{
    __m512 a = _mm512_set1_ps(INFINITY), b = _mm512_set1_ps(-INFINITY);
    __m512 sum = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        if (check)
            sum = _mm512_add_ps(sum, v);
        a = _mm512_min_ps(a, v);
        b = _mm512_max_ps(b, v);
    }
    /* a NaN or Inf makes the sum NaN or infinite; so may finite values
     * whose sum overflows, which the exact scan then clears (test_fq_check).
     * One addition per 16 values instead of a classification and a mask
     * OR: uint3 and uint4 by channel, 1 thread, 8.85 -> 8.75 ms */
    if (check && _mm512_cmp_ps_mask(_mm512_sub_ps(sum, sum), _mm512_setzero_ps(), _CMP_NEQ_UQ) &&
        kf_count_nonfinite_512(x, n))
        return true;
    bool nf = false;
    for (int64_t t = i; check && t < n; t++)
        nf |= !isfinite(x[t]);
    if (nf)
        return true;
    kf_range_finish(x, i, n, _mm512_reduce_min_ps(a), _mm512_reduce_max_ps(b), lo, hi);
    return false;
}

/* The magnitudes of finite floats order as their bits with the sign
 * cleared do, as unsigned integers, and NaN and ±Inf lie above every finite
 * one (0x7f800000 and up): one integer maximum of those bits finds the
 * largest |x| and tells whether x holds NaN or Inf, where the float maximum
 * needed a classification of each vector too (the symmetric grids' first
 * pass: three operations per 16 values -> two, and a chain of one-cycle
 * integer maxima; fake quantization of int4 by channel 0.181 -> 0.144 ns a
 * value, nf4 0.223 -> 0.19, fp8_e4m3 0.209 -> 0.17). The same for q8_0's
 * blocks (kf_q8ext_512) measured no faster. kf_absmax16: acc and the 16
 * values at x. */
KF_AVX512 __attribute__((always_inline)) static inline __m512i kf_absmax16(__m512i acc,
                                                                           const float *x)
{
    return _mm512_max_epu32(acc, _mm512_and_si512(_mm512_loadu_si512((const void *)x),
                                                  _mm512_set1_epi32(0x7fffffff)));
}

/* True when a lane of a kf_absmax16 maximum is NaN or ±Inf. */
KF_AVX512 static inline bool kf_any_nonfinite(__m512i m)
{
    return _mm512_cmp_epu32_mask(m, _mm512_set1_epi32(0x7f800000), _MM_CMPINT_NLT) != 0;
}

/* The largest |x| (sign cleared) of x[0, n) into *amax; returns true, with
 * *amax unset, when check is set and x holds NaN or Inf. */
KF_AVX512 static bool kf_amax_512(const float *x, int64_t n, float *amax, bool check)
{
    __m512i a = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        a = kf_absmax16(a, x + i);
    if (i < n) {
        const __m512i t = _mm512_maskz_loadu_epi32((__mmask16)((1u << (n - i)) - 1), x + i);
        a = _mm512_max_epu32(a, _mm512_and_si512(t, _mm512_set1_epi32(0x7fffffff)));
    }
    if (check && kf_any_nonfinite(a))
        return true;
    const uint32_t m = _mm512_reduce_max_epu32(a);
    memcpy(amax, &m, sizeof m);
    return false;
}

/* Constants of kf_grid16 for one grid (nf4: the cell tables of k_fq,
 * kf_nf4_cells). */
typedef struct kf_gc {
    __m512 qlo, qhi, fmx, m0, m1, l0, l1, h0, h1;
    __m512 cq, eminf; /* fp8: 2^(emin - mbits + 23) and emin (kf_grid16) */
} kf_gc;

/* x / s rounded to nearest, as vdivps gives it, without a division: with
 * inv = 1/s rounded to nearest, q = x·inv is within an ulp of x/s, the
 * remainder x - q·s is exact (one FMA) and q + remainder·inv, rounded once,
 * is x/s rounded (Markstein's theorem; checked here on 1.28·10^9 pairs).
 * It needs no underflow in the remainder: for s in [2^-60, 2^100] (the
 * callers' test) a remainder can only underflow where |x/s| < 2^-40, which
 * every grid rounds to 0 either way. The sign is x's (s > 0): a zero x
 * keeps its sign, which the remainder's +0 would lose. */
KF_AVX512 __attribute__((always_inline)) static inline __m512 kf_quot16(__m512 x, __m512 s,
                                                                        __m512 inv)
{
    const __m512 q = _mm512_mul_ps(x, inv);
    const __m512 r = _mm512_fnmadd_ps(q, s, x);
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
        _mm512_set1_epi32((int)0x80000000u), _mm512_castps_si512(x),
        _mm512_castps_si512(_mm512_fmadd_ps(r, inv, q)), 0xca));
}

/* 16 values of one group of grid g (parameters s, z, 1/s in vectors): x to y,
 * lanes lm only where masked. fast: int, uint: x / s by kf_quot16; nf4: 1/s
 * is finite; fp8: s is a normal float (no saturation: see below). */
KF_AVX512 __attribute__((always_inline)) static inline void
kf_grid16(const q_format_id id, const kf_gc *k, __m512 s, __m512 z, __m512 inv, const float *x,
          float *y, __mmask16 lm, const bool masked, const bool fast)
{
    const __m512 zero = _mm512_setzero_ps(), sgn = _mm512_set1_ps(-0.0f);
    const __m512 xv = masked ? _mm512_maskz_loadu_ps(lm, x) : _mm512_loadu_ps(x);
    const __m512 xs = id == Q_FMT_NF4                   ? zero
                      : fast && (id == Q_FMT_INT || id == Q_FMT_UINT) ? kf_quot16(xv, s, inv)
                                                        : _mm512_div_ps(xv, s);
    __m512 r;
    if (id == Q_FMT_INT) {
        __m512 q = _mm512_roundscale_ps(xs, KF_RN);
        r = _mm512_mul_ps(_mm512_min_ps(_mm512_max_ps(q, k->qlo), k->qhi), s);
    } else if (id == Q_FMT_UINT) {
        __m512 q = _mm512_roundscale_ps(xs, KF_RN);
        q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, z), zero), k->qhi);
        r = _mm512_mul_ps(_mm512_sub_ps(q, z), s);
    } else if (kf_is_fp8(id)) {
        /* the nearest fp8 value, ties to even: for |v| >= 2^emin, v's
         * mantissa in [1, 2) (vgetmantps) rounded to mbits fraction bits
         * (vrndscaleps, ties to even; 2 carries into the exponent) and put
         * back at v's exponent (vgetexpps, vscalefps): two instructions
         * fewer than rounding the float's bits as the AVX2 form does (fp8's
         * fake quantization 0.222 -> 0.206 ns a value; equal to the
         * reference on every float up to fmax, both forms); below, the
         * fixed quantum 2^(emin - mbits) by adding and taking away cq, whose
         * float spacing it is (rare: those lanes only; zero too); then the
         * saturation to fmax, which no rounding of a value below fmax passes
         * (fmax is on the grid), nor one of x / s when s is normal (fast):
         * s is the group's largest |x| (the tensor's, from q_fq_ctx, for a
         * per-tensor scale) over fmax, rounded, so |x / s| <= fmax · (1 +
         * 2^-22), less than half a quantum past fmax (fp8's fake
         * quantization 0.167 -> 0.160 ns a value). With a subnormal s it can
         * pass (test_fq_rows: s = 2^-148 for a max |x| of 1009 · 2^-149). */
        const __m512 v = xs;
        const __m512 m = _mm512_getmant_ps(v, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
        const __m512 e = _mm512_getexp_ps(v);
        const __m512 mr = id == Q_FMT_FP8_E4M3 ? _mm512_roundscale_ps(m, (3 << 4) | KF_RN)
                                               : _mm512_roundscale_ps(m, (2 << 4) | KF_RN);
        __m512 f = _mm512_scalef_ps(mr, e);
        const __mmask16 sub = _mm512_cmp_ps_mask(e, k->eminf, _CMP_LT_OQ);
        if (__builtin_expect(sub != 0, 0)) {
            const __m512 a = _mm512_abs_ps(v);
            __m512 q = _mm512_sub_ps(_mm512_add_ps(a, k->cq), k->cq);
            f = _mm512_mask_mov_ps(f, sub, _mm512_or_ps(q, _mm512_and_ps(v, sgn)));
        }
        r = _mm512_mul_ps(fast ? f : _mm512_range_ps(f, k->fmx, 0x2), s); /* 0x2: smaller |.| */
    } else {
        /* nf4: the level below or above the midpoint of t's cell, cell
         * floor(t · KF_NF4_S + 16) (kf_nf4_cells). With 1/s finite (fast), |t|
         * <= 1 + 2^-23 puts it in 0..31 as is, and the cell is the low five
         * bits of t · KF_NF4_S + 16 + 1.5 · 2^23 rounded down (to an integer,
         * the float spacing there): the permutes read only those, so no
         * conversion (nf4's fake quantization 0.202 -> 0.193 ns a value,
         * medians of five).
         * Else t is ±inf or NaN, clamped (a NaN to cell 0, below every
         * midpoint, as kf_grid_one has it) */
        const __m512 t = _mm512_mul_ps(xv, inv);
        const __m512i j =
            fast ? _mm512_castps_si512(_mm512_fmadd_round_ps(
                       t, _mm512_set1_ps(KF_NF4_S), _mm512_set1_ps(KF_MAGIC + 16.0f),
                       _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC))
                 : _mm512_cvttps_epi32(_mm512_min_ps(
                       _mm512_max_ps(_mm512_fmadd_ps(t, _mm512_set1_ps(KF_NF4_S),
                                                     _mm512_set1_ps(16.0f)),
                                     zero),
                       _mm512_set1_ps(31.0f)));
        __mmask16 hi = _mm512_cmp_ps_mask(t, _mm512_permutex2var_ps(k->m0, j, k->m1), _CMP_GT_OQ);
        __m512 v = _mm512_mask_mov_ps(_mm512_permutex2var_ps(k->l0, j, k->l1), hi,
                                      _mm512_permutex2var_ps(k->h0, j, k->h1));
        r = _mm512_mul_ps(v, s);
    }
    if (masked)
        _mm512_mask_storeu_ps(y, lm, r);
    else
        _mm512_storeu_ps(y, r);
}

/* One group of gs = full + the lanes of tail values (kf_grid16). */
KF_AVX512 __attribute__((always_inline)) static inline void
kf_grid_group(const q_format_id id, const kf_gc *k, __m512 s, __m512 z, __m512 inv, const float *x,
              float *y, int64_t full, __mmask16 tail, const bool fast)
{
    for (int64_t i = 0; i < full; i += 16)
        kf_grid16(id, k, s, z, inv, x + i, y + i, 0xffff, false, fast);
    if (tail)
        kf_grid16(id, k, s, z, inv, x + full, y + full, tail, true, fast);
}

/* kf_grid_apply_avx2 on 16 lanes for ng consecutive groups of gs values,
 * group b with the parameters p[b] (zeros where its scale is 0), the
 * constants set up once for all of them; no calls in the loop, so they stay
 * in registers (grouped int4: 0.29 -> 0.23 ns a value). */
KF_AVX512 __attribute__((always_inline)) static inline void
kf_grid_apply_body(const q_format_id id, const kf_grid *g, const kf_gpar *p, int ng, int64_t gs,
                   const float *x, float *y)
{
    kf_gc k;
    k.qlo = _mm512_set1_ps(g->qlo);
    k.qhi = _mm512_set1_ps(g->qhi);
    k.fmx = _mm512_set1_ps(g->fmax);
    k.m0 = k.m1 = k.l0 = k.l1 = k.h0 = k.h1 = k.cq = k.eminf = _mm512_setzero_ps();
    if (kf_is_fp8(id)) {
        k.cq = _mm512_castsi512_ps(_mm512_set1_epi32(g->cq));
        k.eminf = _mm512_set1_ps((float)g->emin);
    }
    if (id == Q_FMT_NF4) {
        k.m0 = _mm512_loadu_ps(g->cell[0]);
        k.m1 = _mm512_loadu_ps(g->cell[0] + 16);
        k.l0 = _mm512_loadu_ps(g->cell[1]);
        k.l1 = _mm512_loadu_ps(g->cell[1] + 16);
        k.h0 = _mm512_loadu_ps(g->cell[2]);
        k.h1 = _mm512_loadu_ps(g->cell[2] + 16);
    }
    const int64_t full = gs / 16 * 16;
    const __mmask16 tail = (__mmask16)((1u << (gs - full)) - 1);
    for (int gb = 0; gb < ng; gb++, x += gs, y += gs) {
        const kf_gpar *pb = &p[gb];
        if (!(pb->s > 0.0f)) {
            for (int64_t i = 0; i < full; i += 16)
                _mm512_storeu_ps(y + i, _mm512_setzero_ps());
            _mm512_mask_storeu_ps(y + full, tail, _mm512_setzero_ps());
            continue;
        }
        const __m512 s = _mm512_set1_ps(pb->s), z = _mm512_set1_ps(pb->z);
        /* fp8 keeps vdivps: its other operations already fill the multiply
         * unit, and kf_quot16 made it slower (0.23 -> 0.25 ns a value) */
        if ((id == Q_FMT_INT || id == Q_FMT_UINT) && pb->s >= 0x1p-60f && pb->s <= 0x1p100f)
            kf_grid_group(id, &k, s, z, _mm512_set1_ps(1.0f / pb->s), x, y, full, tail, true);
        else if (id == Q_FMT_NF4 && pb->inv <= 3.0e38f) /* the cells without clamps */
            kf_grid_group(id, &k, s, z, _mm512_set1_ps(pb->inv), x, y, full, tail, true);
        else if (kf_is_fp8(id) && pb->s >= 0x1p-126f) /* no saturation */
            kf_grid_group(id, &k, s, z, _mm512_set1_ps(pb->inv), x, y, full, tail, true);
        else
            kf_grid_group(id, &k, s, z, _mm512_set1_ps(pb->inv), x, y, full, tail, false);
    }
}

KF_AVX512 static void kf_grid_apply_512(const kf_grid *g, const kf_gpar *p, int ng, int64_t gs,
                                        const float *x, float *y)
{
    switch (g->id) {
    case Q_FMT_INT:
        kf_grid_apply_body(Q_FMT_INT, g, p, ng, gs, x, y);
        break;
    case Q_FMT_UINT:
        kf_grid_apply_body(Q_FMT_UINT, g, p, ng, gs, x, y);
        break;
    case Q_FMT_FP8_E4M3:
        kf_grid_apply_body(Q_FMT_FP8_E4M3, g, p, ng, gs, x, y);
        break;
    case Q_FMT_FP8_E5M2:
        kf_grid_apply_body(Q_FMT_FP8_E5M2, g, p, ng, gs, x, y);
        break;
    default:
        kf_grid_apply_body(Q_FMT_NF4, g, p, ng, gs, x, y);
        break;
    }
}

/* Lane b = the maximum of the 16 lanes of v[b]: pairs inside 128-bit lanes,
 * then quads, then across the four 128-bit lanes (45 instructions for 16
 * reductions). */
KF_AVX512 static __m512 kf_reduce16_max(const __m512 v[16])
{
    __m512 u[8], w[4];
    for (int i = 0; i < 8; i++)
        u[i] = _mm512_max_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++) /* per 128-bit lane: the maxima of v[4i .. 4i + 3] */
        w[i] = _mm512_max_ps(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0xee));
    __m512 r01 = _mm512_max_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88),
                               _mm512_shuffle_f32x4(w[0], w[1], 0xdd));
    __m512 r23 = _mm512_max_ps(_mm512_shuffle_f32x4(w[2], w[3], 0x88),
                               _mm512_shuffle_f32x4(w[2], w[3], 0xdd));
    return _mm512_max_ps(_mm512_shuffle_f32x4(r01, r23, 0x88),
                         _mm512_shuffle_f32x4(r01, r23, 0xdd));
}

/* kf_grid_params of 16 groups of a symmetric grid (int, fp8, nf4) from their
 * maxima |x| (what kf_grid_params derives from a finite range), in lanes. */
KF_AVX512 static void kf_params16_sym(const kf_grid *g, __m512 amax, float s[16], float inv[16])
{
    __m512 vs, vi = _mm512_setzero_ps();
    if (g->id == Q_FMT_INT) {
        const __m512 big = _mm512_set1_ps(65504.0f);
        vs = _mm512_div_ps(amax, _mm512_set1_ps(g->half));
        vs = _mm512_mask_mov_ps(vs, _mm512_cmp_ps_mask(vs, big, _CMP_NLE_UQ), big);
        vs = _mm512_cvtph_ps(_mm512_cvtps_ph(vs, _MM_FROUND_TO_NEAREST_INT));
    } else if (kf_is_fp8(g->id)) {
        vs = _mm512_div_ps(amax, _mm512_set1_ps(g->fmax));
        vs = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(vs, _mm512_set1_ps(3.0e38f), _CMP_LE_OQ),
                                 vs);
    } else {
        vs = _mm512_maskz_mov_ps(
            _mm512_cmp_ps_mask(amax, _mm512_set1_ps(3.0e38f), _CMP_LE_OQ), amax);
        __mmask16 pos = _mm512_cmp_ps_mask(vs, _mm512_setzero_ps(), _CMP_GT_OQ);
        vi = _mm512_maskz_div_ps(pos, _mm512_set1_ps(1.0f), vs);
    }
    _mm512_storeu_ps(s, vs);
    _mm512_storeu_ps(inv, vi);
}

/* ---- metrics ---- */

KF_AVX512 static bool kf_has_nan_512(const float *y, int64_t n)
{
    __mmask16 acc = 0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(y + i);
        acc |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
    if (acc)
        return true;
    for (; i < n; i++)
        if (isnan(y[i]))
            return true;
    return false;
}

/* kf_hc (the constants of the fixed-point bins, kf_hc_scalars) on 16 lanes. */
typedef struct kf_hc {
    __m512 k;
    __m512 lim; /* |e| below lim: u rounded within 2^21 - 31 of 0, inside the span */
    double range;
} kf_hc;

KF_AVX512 static inline kf_hc kf_hc_make(double range)
{
    float k, lim;
    kf_hc_scalars(range, &k, &lim);
    kf_hc h = {_mm512_set1_ps(k), _mm512_set1_ps(lim), range};
    return h;
}

/* The bins of the 16 errors yf - xf as computed in fixed point and, in
 * *near, the lanes to bin again by the exact formula: those near a bin edge
 * (their bin may be one off) and, with span, those outside [-range, range)
 * in fixed point (their "bin", 64 or more, counts nowhere); their largest
 * magnitude (in float) into *mx. Without span the caller finds the latter
 * from *mx (kf_cs_fix). u is rounded to an integer by one fused multiply-add
 * with KF_MAGIC (no conversion, no clamp): v = (the float's bits) - KF_MAGIC_BITS
 * + 2^21 + KF_NEAR is u rounded + 2^21 + KF_NEAR while |u| < 2^22, and any u outside the
 * bins' span (|u| >= 2^21, also those past 2^22 and the negative floats
 * beyond -1.5 · 2^23) sets one of v's bits 22..31. */
KF_AVX512 __attribute__((always_inline)) static inline __m512i
kf_bins16_fast(const kf_hc *h, __m512 xf, __m512 yf, __m512 *mx, __mmask16 *near, const bool span)
{
    __m512 d = _mm512_sub_ps(yf, xf);
    *mx = _mm512_range_ps(*mx, d, 0xb); /* the larger magnitude, sign cleared */
    __m512i v = _mm512_add_epi32(
        _mm512_castps_si512(_mm512_fmadd_ps(d, h->k, _mm512_set1_ps(KF_MAGIC))),
        _mm512_set1_epi32((1 << 21) + KF_NEAR - KF_MAGIC_BITS));
    /* u near an edge (kf_hc_scalars); e = 0 is bin 32 exactly */
    *near = _mm512_mask_testn_epi32_mask(_mm512_cmp_ps_mask(yf, xf, _CMP_NEQ_UQ), v,
                                         _mm512_set1_epi32(0xffff & -2 * KF_NEAR));
    if (span)
        *near |= _mm512_test_epi32_mask(v, _mm512_set1_epi32((int)0xffc00000u));
    return _mm512_srli_epi32(v, 16);
}

/* kf_bins16_fast with the lanes near an edge binned again: every bin exact. */
KF_AVX512 __attribute__((always_inline)) static inline __m512i
kf_bins16(const kf_hc *h, const float *x, const float *y, int64_t c, __m512 xf, __m512 yf,
          __m512 *mx)
{
    __mmask16 near;
    __m512i bv = kf_bins16_fast(h, xf, yf, mx, &near, true);
    if (__builtin_expect(near != 0, 0)) {
        int32_t b[16];
        _mm512_storeu_si512((void *)b, bv);
        kf_rebin(b, near, x + c, y + c, h->range);
        bv = _mm512_loadu_si512((const void *)b);
    }
    return bv;
}

/* Counts the bins of the 16 errors yf - xf as kf_hist_avx2 does, eight pairs
 * at once: the pair index of lanes 2i and 2i + 1 is the low half of their
 * 64-bit lane after a shift, narrowed by one instruction. */
KF_AVX512 __attribute__((always_inline)) static inline void
kf_hist16(const kf_hc *h, k_acc_scratch *p, const float *x, const float *y, int64_t c, __m512 xf,
          __m512 yf, __m512 *mx)
{
    __m512i bv = kf_bins16(h, x, y, c, xf, yf, mx);
    __m512i pv = _mm512_or_si512(bv, _mm512_srli_epi64(bv, 26));
    const __m256i pi =
        _mm256_and_si256(_mm512_cvtepi64_epi32(pv), _mm256_set1_epi32(KF_PAIRS - 1));
    kf_count4(p, _mm256_castsi256_si128(pi));
    kf_count4(p, _mm256_extracti128_si256(pi, 1));
}

/* Bit-sliced counting (k_acc_scratch.bits): 16 values become two one-hot
 * words a lane, bit b of the low word for bin b < 32 and of the high word for
 * bin 32 + b; the words of 64 vectors (1024 values) are added into carry-save
 * planes of weight 1, 2, .., 32 held in registers by full adders (two
 * ternary-logic instructions each, Harley and Seal's popcount tree), and each
 * carry of weight 64 is rippled into the planes above, in memory. About 7
 * vector instructions per 16 values, against 8 scalar increments of the pair
 * table. */
#define KF_CS_LEVELS 6 /* planes 0..5 summed by full adders, 1024 values a step */
#define KF_CS_HELD 9   /* planes 6..8 also held in registers, by half adders after each step */
typedef struct kf_cs {
    __m512i p[2][KF_CS_HELD]; /* [half][plane] */
    __m512 mx;                /* largest |e| of the step (float) */
    __m512 run;               /* largest |e| of the steps before (float) */
    int64_t c0;               /* the step's first value */
    __mmask16 near[64];       /* per vector of the step: lanes to bin again */
} kf_cs;

/* Full adder over the bits of the plane *p and of a and b: the sum into *p,
 * the carry returned. The carry is taken from a, b and the new sum (0xd4:
 * the majority of a, b and a ^ b ^ sum, the old plane), so that neither
 * instruction needs an operand kept alive past it: each overwrites a dead
 * register instead of a copy. */
KF_AVX512 __attribute__((always_inline)) static inline __m512i kf_csa(__m512i *p, __m512i a,
                                                                      __m512i b)
{
    *p = _mm512_ternarylogic_epi32(*p, a, b, 0x96); /* parity */
    return _mm512_ternarylogic_epi32(a, b, *p, 0xd4);
}

/* One-hot words of the 16 errors at c, both halves, from the fixed-point
 * bins; the lanes near an edge are noted in s->near for kf_cs_fix. */
KF_AVX512 __attribute__((always_inline)) static inline void
kf_onehot16(kf_cs *s, const kf_hc *h, const float *x, const float *y, int64_t c, __m512i w[2])
{
    __m512i bv = kf_bins16_fast(h, _mm512_loadu_ps(x + c), _mm512_loadu_ps(y + c), &s->mx,
                                &s->near[(c - s->c0) >> 4], false);
    const __m512i one = _mm512_set1_epi32(1);
    w[0] = _mm512_sllv_epi32(one, bv); /* counts of 32 and more give 0 */
    w[1] = _mm512_sllv_epi32(one, _mm512_sub_epi32(bv, _mm512_set1_epi32(32)));
}

/* Adds the two carries a and b of weight 2^level into planes level of s,
 * their carry out in out (weight 2^(level + 1)). */
KF_AVX512 __attribute__((always_inline)) static inline void
kf_cs_fold(kf_cs *s, int level, const __m512i a[2], const __m512i b[2], __m512i out[2])
{
    for (int k = 0; k < 2; k++)
        out[k] = kf_csa(&s->p[k][level], a[k], b[k]);
}

/* kf_cs_add0 .. 5: 2^(level + 1) vectors from c on added at planes 0..level. */
KF_AVX512 __attribute__((always_inline)) static inline void
kf_cs_add0(kf_cs *s, const kf_hc *h, const float *x, const float *y, int64_t c, __m512i out[2])
{
    __m512i a[2], b[2];
    kf_onehot16(s, h, x, y, c, a);
    kf_onehot16(s, h, x, y, c + 16, b);
    kf_cs_fold(s, 0, a, b, out);
}

#define KF_CS_ADD(level, below)                                                                \
    KF_AVX512 __attribute__((always_inline)) static inline void kf_cs_add##level(               \
        kf_cs *s, const kf_hc *h, const float *x, const float *y, int64_t c, __m512i out[2])    \
    {                                                                                          \
        __m512i a[2], b[2];                                                                    \
        kf_cs_add##below(s, h, x, y, c, a);                                                    \
        kf_cs_add##below(s, h, x, y, c + (16 << (level)), b);                                  \
        kf_cs_fold(s, level, a, b, out);                                                       \
    }
KF_CS_ADD(1, 0)
KF_CS_ADD(2, 1)
KF_CS_ADD(3, 2)
KF_CS_ADD(4, 3)
KF_CS_ADD(5, 4)
#undef KF_CS_ADD

/* After a step of nv vectors from s->c0: each lane the step counted in a bin
 * its exact bin differs from moves to the exact one in p->fix. The adders'
 * masks hold the lanes near an edge; those outside the bins' span are looked
 * for only in a step whose largest |e| reaches h->lim (none below it). */
KF_AVX512 static void kf_cs_fix(kf_cs *s, const kf_hc *h, k_acc_scratch *p, const float *x,
                                const float *y, int nv)
{
    if (_mm512_cmp_ps_mask(s->mx, h->lim, _CMP_NLT_UQ)) {
        for (int i = 0; i < nv; i++) {
            const int64_t c = s->c0 + 16 * i;
            __m512 unused = _mm512_setzero_ps();
            __mmask16 nm;
            (void)kf_bins16_fast(h, _mm512_loadu_ps(x + c), _mm512_loadu_ps(y + c), &unused, &nm,
                                 true);
            s->near[i] |= nm;
        }
    }
    s->run = _mm512_max_ps(s->run, s->mx);
    s->mx = _mm512_setzero_ps();
    /* the vectors with a lane to bin again, a bit each, visited by their
     * bits rather than by a scan of all the step's masks: values on a
     * coarse lattice meet bin edges in most steps (the bench tensor stored
     * as bf16, previewed as nf4: 25,600 lanes binned again, against 1,000
     * for its f32 values; 1 thread, best of three runs, 10.80 -> 10.57 ms,
     * fp8_e4m3 9.88 -> 9.72) */
    uint64_t vm = 0;
    for (int i = 0; i < nv; i += 32) {
        const __mmask32 live = nv - i >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << (nv - i)) - 1);
        const __m512i w = _mm512_maskz_loadu_epi16(live, &s->near[i]);
        vm |= (uint64_t)_mm512_test_epi16_mask(w, w) << i;
    }
    for (; vm; vm &= vm - 1) {
        const int i = __builtin_ctzll(vm);
        const int64_t c = s->c0 + 16 * i;
        __m512 unused = _mm512_setzero_ps();
        __mmask16 nm;
        int32_t b[16];
        _mm512_storeu_si512((void *)b, kf_bins16_fast(h, _mm512_loadu_ps(x + c),
                                                      _mm512_loadu_ps(y + c), &unused, &nm, true));
        kf_fix_lanes(p, b, nm, x + c, y + c, h->range);
    }
}

/* Adds v, of weight 2^j0, into planes j0.. of half k. */
KF_AVX512 static void kf_ripple(k_acc_scratch *p, int k, int j0, __m512i v)
{
    for (int j = j0; j < K_ACC_PLANES; j++) {
        __m512i pl = _mm512_loadu_si512((const void *)p->bits[k][j]);
        _mm512_storeu_si512((void *)p->bits[k][j], _mm512_xor_si512(pl, v));
        v = _mm512_and_si512(pl, v);
        if (!_mm512_test_epi32_mask(v, v))
            return;
    }
}

/* Adds the carries v[2], of weight 2^j0, into the planes j0.. of s held in
 * registers, then the carries out of those into p's planes KF_CS_HELD ..
 * KF_CS_MEM - 1 in memory, all by half adders with no branch, and the rare
 * carry out of those by kf_ripple. Some counter of a half passes plane 5 or
 * 8 in almost every step: kf_ripple's loop from plane 6, called at nearly
 * every step, took about a seventh of the histogram's time (rows in L2). */
#define KF_CS_MEM 13
KF_AVX512 __attribute__((always_inline)) static inline void kf_cs_carry(kf_cs *s,
                                                                        k_acc_scratch *p,
                                                                        int j0, __m512i v[2])
{
    __mmask16 out = 0;
    for (int k = 0; k < 2; k++) {
        __m512i c = v[k];
        for (int j = j0; j < KF_CS_HELD; j++) {
            const __m512i pl = s->p[k][j];
            s->p[k][j] = _mm512_xor_si512(pl, c);
            c = _mm512_and_si512(pl, c);
        }
        for (int j = KF_CS_HELD; j < KF_CS_MEM; j++) {
            const __m512i pl = _mm512_loadu_si512((const void *)p->bits[k][j]);
            _mm512_storeu_si512((void *)p->bits[k][j], _mm512_xor_si512(pl, c));
            c = _mm512_and_si512(pl, c);
        }
        v[k] = c;
        out |= _mm512_test_epi32_mask(c, c);
    }
    if (out)
        for (int k = 0; k < 2; k++)
            kf_ripple(p, k, KF_CS_MEM, v[k]);
}

/* Counts the bins of values [0, n) of the row, n a multiple of 256; the
 * largest |e| into *mx. The lanes near a bin edge are counted in their
 * fixed-point bins by the adders and moved to their exact bins by kf_cs_fix
 * after each step, which keeps calls and branches out of the adders' code. */
KF_AVX512 static void kf_hist_bits(const kf_hc *h, k_acc_scratch *p, const float *x,
                                   const float *y, int64_t n, __m512 *mx)
{
    kf_cs s;
    s.mx = _mm512_setzero_ps();
    s.run = *mx;
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < KF_CS_HELD; j++)
            s.p[k][j] = _mm512_loadu_si512((const void *)p->bits[k][j]);
    int64_t c = 0;
    __m512i carry[2];
    for (; c + 1024 <= n; c += 1024) {
        s.c0 = c;
        kf_cs_add5(&s, h, x, y, c, carry);
        kf_cs_carry(&s, p, KF_CS_LEVELS, carry);
        kf_cs_fix(&s, h, p, x, y, 64);
    }
    for (; c < n; c += 256) { /* planes 4 and 5 by half adders too */
        s.c0 = c;
        kf_cs_add3(&s, h, x, y, c, carry);
        kf_cs_carry(&s, p, 4, carry);
        kf_cs_fix(&s, h, p, x, y, 16);
    }
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < KF_CS_HELD; j++)
            _mm512_storeu_si512((void *)p->bits[k][j], s.p[k][j]);
    p->bits_used = true;
    p->pending += n / 2;
    *mx = s.run;
}

/* Adds the counts of p->bits to hist and clears them. */
KF_AVX512 static void kf_bits_harvest(k_acc_scratch *p, int64_t *hist)
{
    for (int k = 0; k < 2; k++) {
        for (int j = 0; j < K_ACC_PLANES; j++) {
            __m512i pl = _mm512_loadu_si512((const void *)p->bits[k][j]);
            if (!_mm512_test_epi32_mask(pl, pl))
                continue;
            for (int b = 0; b < 32; b++) {
                __mmask16 m = _mm512_test_epi32_mask(pl, _mm512_set1_epi32((int)(1u << b)));
                hist[32 * k + b] += (int64_t)__builtin_popcount(m) << j;
            }
        }
    }
    kf_fix_harvest(p, hist);
    memset(p->bits, 0, sizeof p->bits);
    p->bits_used = false;
}

typedef struct kf_sums8 {
    __m512d w2, we, e2, iwe2, iww2;
} kf_sums8;

KF_AVX512 __attribute__((always_inline)) static inline void
kf_sums8_add(kf_sums8 *s, __m512d *mx, __m512d xd, __m512d yd, const float *iw, const bool has_iw,
             const bool has_mx)
{
    __m512d e = _mm512_sub_pd(yd, xd);
    s->w2 = _mm512_fmadd_pd(xd, xd, s->w2);
    s->we = _mm512_fmadd_pd(xd, e, s->we);
    s->e2 = _mm512_fmadd_pd(e, e, s->e2);
    if (has_mx)
        *mx = _mm512_max_pd(*mx, _mm512_abs_pd(e));
    if (has_iw) {
        __m512d iv = _mm512_cvtps_pd(_mm256_loadu_ps(iw));
        s->iwe2 = _mm512_fmadd_pd(_mm512_mul_pd(iv, e), e, s->iwe2);
        s->iww2 = _mm512_fmadd_pd(_mm512_mul_pd(iv, xd), xd, s->iww2);
    }
}

KF_AVX512 static double kf_hsum8(__m512d a, __m512d b)
{
    double t[8];
    _mm512_storeu_pd(t, _mm512_add_pd(a, b));
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

/* max |y - x| in double over values [0, n), n a multiple of 16. */
KF_AVX512 static double kf_absmax_512(const float *x, const float *y, int64_t n)
{
    __m512d m = _mm512_setzero_pd();
    for (int64_t c = 0; c < n; c += 8) {
        __m512d e = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(y + c)),
                                  _mm512_cvtps_pd(_mm256_loadu_ps(x + c)));
        m = _mm512_max_pd(m, _mm512_abs_pd(e));
    }
    return _mm512_reduce_max_pd(m);
}

/* kf_acc_avx2_body with 16 values per step: the sums (each half of x and y
 * widened to double straight from memory), then the histogram over the same
 * (cache-resident) row, bit-sliced in steps of 1024 and 256 values and by
 * pairs for the rest. With a histogram, max |e| is taken in float as the errors are
 * binned: |e| in double is at most the float figure times 1 + 2^-23, so a row
 * whose float maximum is below p->max_seen / (1 + 2^-23) cannot raise the
 * maximum of any accumulator p has served and leaves a->max_abs alone; any
 * other row's maximum is found exactly, in double, and recorded. */
KF_AVX512 __attribute__((always_inline)) static inline void
kf_acc_512_body(q_metrics_acc *a, k_acc_scratch *p, const float *x, const float *y, int64_t n,
                const float *iw, const bool has_iw, const bool has_hist, const char *pf)
{
    const __m512d z = _mm512_setzero_pd();
    kf_sums8 sa = {z, z, z, z, z}, sb = sa;
    __m512d mxa = z;
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        _mm_prefetch(pf + 4 * c, _MM_HINT_T1);
        kf_sums8_add(&sa, &mxa, _mm512_cvtps_pd(_mm256_loadu_ps(x + c)),
                     _mm512_cvtps_pd(_mm256_loadu_ps(y + c)), has_iw ? iw + c : NULL, has_iw,
                     !has_hist);
        kf_sums8_add(&sb, &mxa, _mm512_cvtps_pd(_mm256_loadu_ps(x + c + 8)),
                     _mm512_cvtps_pd(_mm256_loadu_ps(y + c + 8)), has_iw ? iw + c + 8 : NULL,
                     has_iw, !has_hist);
    }
    double mx;
    if (has_hist) {
        const kf_hc h = kf_hc_make(a->hist_range);
        __m512 mf = _mm512_setzero_ps();
        const int64_t nb = c / 256 * 256;
        if (nb > 0)
            kf_hist_bits(&h, p, x, y, nb, &mf);
        for (int64_t i = nb; i < c; i += 16)
            kf_hist16(&h, p, x, y, i, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), &mf);
        p->pending += (c - nb) / 2;
        p->pairs_used |= c > nb;
        mx = 0.0;
        if (!((double)_mm512_reduce_max_ps(mf) * (1.0 + 0x1p-23) < p->max_seen)) {
            mx = kf_absmax_512(x, y, c);
            p->max_seen = mx > p->max_seen ? mx : p->max_seen;
        }
    } else {
        mx = _mm512_reduce_max_pd(mxa);
    }
    kf_tot t = {kf_hsum8(sa.w2, sb.w2),     0.0, 0.0, kf_hsum8(sa.e2, sb.e2),
                kf_hsum8(sa.iwe2, sb.iwe2), kf_hsum8(sa.iww2, sb.iww2), mx};
    const double we = kf_hsum8(sa.we, sb.we);
    /* gcc 12 puts no vzeroupper in this function by itself; without one the
     * scalar (SSE) code after it ran at half speed on Zen 4 */
    _mm256_zeroupper();
    kf_derive(&t, we, x, y, c);
    kf_acc_finish(a, &t, x, y, c, n, iw);
}

KF_AVX512 static void kf_acc_512(q_metrics_acc *a, k_acc_scratch *p, const float *x,
                                 const float *y, int64_t n, const float *iw, const char *pf)
{
    const bool hist = a->hist_range > 0.0;
    if (iw && hist)
        kf_acc_512_body(a, p, x, y, n, iw, true, true, pf);
    else if (iw)
        kf_acc_512_body(a, p, x, y, n, iw, true, false, pf);
    else if (hist)
        kf_acc_512_body(a, p, x, y, n, NULL, false, true, pf);
    else
        kf_acc_512_body(a, p, x, y, n, NULL, false, false, pf);
}

KF_AVX512 static int64_t kf_count_nonfinite_512(const float *x, int64_t n)
{
    const __m512i em = _mm512_set1_epi32(0x7f800000);
    int64_t bad = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i v = _mm512_and_si512(_mm512_loadu_si512((const void *)(x + i)), em);
        bad += __builtin_popcount((unsigned)_mm512_cmpeq_epi32_mask(v, em));
    }
    for (; i < n; i++)
        bad += !isfinite(x[i]);
    return bad;
}

/* A group's values: zeros for a zero scale (the kernels need s > 0), else the
 * AVX2 or (wide) AVX-512 kernel. */
static void kf_grid_apply(const kf_grid *g, const kf_gpar *p, const float *x, float *y,
                          int64_t n, bool wide)
{
    if (wide)
        kf_grid_apply_512(g, p, 1, n, x, y);
    else if (!(p->s > 0.0f))
        memset(y, 0, (size_t)n * sizeof *y);
    else
        kf_grid_apply_avx2(g, p, x, y, n);
}

/* The groups [c0, c0 + nb gs) of a symmetric grid, gs a multiple of 16:
 * maxima of 16 groups reduced together, their parameters in one vector.
 * Returns true, before any group is quantized, when check is set and x holds
 * NaN or Inf. */
KF_AVX512 static bool kf_groups16_sym(const kf_grid *g, const float *x, float *y, int64_t c0,
                                      int nb, int64_t gs, bool check)
{
    __m512 m[16];
    __m512i all = _mm512_setzero_si512();
    for (int b = 0; b < 16; b++) {
        __m512i a = _mm512_setzero_si512();
        for (int64_t i = 0; b < nb && i < gs; i += 16)
            a = kf_absmax16(a, x + c0 + b * gs + i);
        all = _mm512_max_epu32(all, a);
        m[b] = _mm512_castsi512_ps(a);
    }
    if (check && kf_any_nonfinite(all))
        return true;
    float s[16], inv[16];
    kf_params16_sym(g, kf_reduce16_max(m), s, inv);
    kf_gpar p[16];
    for (int b = 0; b < nb; b++)
        p[b] = (kf_gpar){s[b], 0.0f, inv[b]};
    kf_grid_apply_512(g, p, nb, gs, x + c0, y + c0);
    return false;
}

/* One row of a grid format on the AVX2 or (wide) AVX-512 kernels; returns
 * K_FQ_NONFINITE when check is set and x holds NaN or Inf (found by the
 * AVX-512 first passes), else 0. */
static int kf_row_grid(const k_fq *k, const float *x, float *y, bool wide, bool check)
{
    kf_grid g;
    kf_grid_setup(&k->spec, &g);
    g.cell = k->nf4_cell;
    const int64_t n = k->cols;
    /* With x checked finite, y is finite: int and uint keep |y| within
     * 2^7 · 65504 (f16 scales), nf4 within the group's largest |x|, fp8
     * within fmax · (amax / fmax rounded), which stays at most FLT_MAX
     * (amax = FLT_MAX, both forms: test_fq_check). Unchecked, unknown. */
    const int done = check ? K_FQ_FINITE : 0;
    if (check && (!wide || k->spec.group < 0) && kf_count_nonfinite(x, n, wide))
        return K_FQ_NONFINITE;
    if (k->spec.group < 0) { /* one scale for the tensor */
        kf_gpar p = kf_grid_params(&g, k->ctx.lo, k->ctx.hi);
        kf_grid_apply(&g, &p, x, y, n, wide);
        return done;
    }
    const int64_t gs = k->spec.group > 0 ? k->spec.group : n;
    if (wide && g.id != Q_FMT_UINT && gs % 16 == 0 && gs < n) {
        for (int64_t c0 = 0; c0 < n; c0 += 16 * gs) {
            int64_t left = (n - c0) / gs;
            if (kf_groups16_sym(&g, x, y, c0, left < 16 ? (int)left : 16, gs, check))
                return K_FQ_NONFINITE;
        }
        return done;
    }
    /* up to 16 groups at a time: their ranges, then their parameters, then
     * their values, so the reductions and divisions of one group do not
     * wait on the last */
    for (int64_t c0 = 0; c0 < n; c0 += 16 * gs) {
        float lo[16], hi[16];
        kf_gpar par[16];
        int nb = 0;
        for (int64_t c = c0; c < n && nb < 16; c += gs, nb++) {
            int64_t len = n - c < gs ? n - c : gs;
            if (!wide) {
                kf_range_avx2(x + c, len, &lo[nb], &hi[nb]);
            } else if (g.id != Q_FMT_UINT) { /* symmetric: kf_grid_params needs max |x| */
                if (kf_amax_512(x + c, len, &hi[nb], check))
                    return K_FQ_NONFINITE;
                lo[nb] = -hi[nb];
            } else if (kf_range_512(x + c, len, &lo[nb], &hi[nb], check)) {
                return K_FQ_NONFINITE;
            }
        }
        for (int b = 0; b < nb; b++)
            par[b] = kf_grid_params(&g, lo[b], hi[b]);
        for (int b = 0; b < nb; b++) {
            int64_t c = c0 + b * gs, len = n - c < gs ? n - c : gs;
            kf_grid_apply(&g, &par[b], x + c, y + c, len, wide);
        }
    }
    return done;
}
#endif /* KF_X86 */

/* ---- public entry points ---- */

/* NaN and Inf values of x: counted on the SIMD kernels where simd allows
 * them (wide: AVX-512), else one by one. */
static int64_t kf_nonfinite(const float *x, int64_t n, bool simd, bool wide)
{
#if KF_X86
    if (simd)
        return kf_count_nonfinite(x, n, wide);
#endif
    (void)simd;
    (void)wide;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += !isfinite(x[i]);
    return bad;
}

/* k_fq_row and k_fq_row_check: with check, K_FQ_NONFINITE when x holds NaN or
 * Inf (found by the SIMD kernels' first pass where they have one, else by a
 * scan before quantizing). */
static int kf_fq_row(const k_fq *k, const float *x, float *y, const float *search_w, void *qbuf,
                     bool check)
{
    const q_fmt_spec *s = &k->spec;
#if KF_X86
    if (k->simd) {
        if (k_float_is(s->id)) /* f32, f16, bf16: no search */
            return k_float_fq_row(s->id, x, y, k->cols, k->wide, check);
        kf_kind kk = kf_kind_of(s->id);
        if (kk != KF_NONE && (!search_w || kk == KF_Q8_0))
            return kf_row_q_avx2(kk, x, y, k->cols, k->wide, check);
        if (kf_grid_fast(s) && (!search_w || s->group < 0))
            return kf_row_grid(k, x, y, k->wide, check);
    }
#endif
    if (check && kf_nonfinite(x, k->cols, k->simd, k->wide))
        return K_FQ_NONFINITE;
    if (k->fmt->ggml_type >= 0) {
        k->fmt->quantize(x, qbuf, 1, k->cols, search_w);
        q_dtype_get((uint32_t)k->fmt->ggml_type)->dequant(qbuf, y, k->cols);
    } else {
        q_grid_fakequant(s, x, y, 1, k->cols, search_w, &k->ctx);
    }
    return 0;
}

bool k_fq_row(const k_fq *k, const float *x, float *y, const float *search_w, void *qbuf)
{
    return kf_fq_row(k, x, y, search_w, qbuf, false) == K_FQ_FINITE;
}

int k_fq_row_check(const k_fq *k, const float *x, float *y, const float *search_w, void *qbuf)
{
    return kf_fq_row(k, x, y, search_w, qbuf, true);
}

void k_acc_row(q_metrics_acc *a, k_acc_scratch *p, const float *x, const float *y, int64_t n,
               const float *iw, bool simd, bool y_finite, const void *next)
{
#if KF_X86
    const bool wide = simd && k_cpu_get()->avx512;
    /* the SIMD bins need a range whose reciprocal is a normal float */
    const double r = a->hist_range;
    const bool range_ok = !(r > 0.0) || (r >= 0x1p-100 && r <= 0x1p100);
    if (simd && range_ok &&
        (y_finite || !(wide ? kf_has_nan_512(y, n) : kf_has_nan_avx2(y, n)))) {
        if (p->pending > (INT64_C(1) << 31)) /* keep the pair counters far from 2^32 */
            k_acc_flush(a, p);
        /* no next row: harmless hits. The loops fetch a line per 16 values
         * from the row's start; a row that does not start on a line ends in
         * one more, fetched here (else each row's last line came from DRAM
         * when the quantizer reached it: rows 16 bytes off a line, q4_0,
         * 2 threads, 4.90 -> 4.75 ms, against 4.55 for rows on lines) */
        const char *pf = next ? (const char *)next : (const char *)x;
        _mm_prefetch(pf + 4 * n - 1, _MM_HINT_T1);
        if (wide)
            kf_acc_512(a, p, x, y, n, iw, pf);
        else
            kf_acc_avx2(a, p, x, y, n, iw, pf);
        return;
    }
#endif
    (void)simd;
    (void)next;
    q_metrics_add(a, x, y, 1, n, iw);
}

int64_t k_scrub_row(const float *x, float *dst, int64_t n, bool simd)
{
    int64_t bad = kf_nonfinite(x, n, simd, simd && k_cpu_get()->avx512);
    if (bad == 0)
        return 0;
    for (int64_t i = 0; i < n; i++)
        dst[i] = isfinite(x[i]) ? x[i] : 0.0f;
    return bad;
}

/* ---- apply variants ---- */

static size_t kf_quantize(kf_kind k, const float *src, void *dst, int64_t nrows,
                          int64_t n_per_row, const float *imatrix)
{
    q_quant_fn ref = kf_ref_of(k);
    if ((imatrix && k != KF_Q8_0) || nrows < 0 || n_per_row <= 0 || n_per_row % 32 != 0)
        return ref(src, dst, nrows, n_per_row, imatrix);
#if KF_X86
    if (k_cpu_get()->avx2 && k_cpu_get()->f16c)
        return kf_quantize_avx2(k, src, dst, nrows, n_per_row, k_cpu_get()->avx512);
#endif
    return ref(src, dst, nrows, n_per_row, imatrix);
}

size_t k_quantize_q8_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    return kf_quantize(KF_Q8_0, src, dst, nrows, n_per_row, imatrix);
}

size_t k_quantize_q4_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    return kf_quantize(KF_Q4_0, src, dst, nrows, n_per_row, imatrix);
}

size_t k_quantize_q4_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    return kf_quantize(KF_Q4_1, src, dst, nrows, n_per_row, imatrix);
}

size_t k_quantize_q5_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    return kf_quantize(KF_Q5_0, src, dst, nrows, n_per_row, imatrix);
}

size_t k_quantize_q5_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    return kf_quantize(KF_Q5_1, src, dst, nrows, n_per_row, imatrix);
}
