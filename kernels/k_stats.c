/* k_stats.c — one-pass moment accumulation: scalar reference, AVX2/F16C and
 * AVX-512 forms. */
#include "k_stats.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "k_cpu.h"
#include "q_dtype.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define K_X86 1
#else
#define K_X86 0
#endif

static bool g_force_scalar;

void k_stats_force_scalar(bool on)
{
    g_force_scalar = on;
}

void k_moments_init(k_moments *m, float *cand, int64_t cand_cap)
{
    memset(m, 0, sizeof *m);
    m->min = INFINITY;
    m->max = -INFINITY;
    m->cand = cand;
    m->cand_cap = cand_cap;
}

static inline void add_cand(k_moments *m, float x)
{
    if (m->n_cand < m->cand_cap)
        m->cand[m->n_cand++] = x;
    else
        m->cand_overflow = true;
}

static inline float src_at(const void *src, k_src type, int64_t i)
{
    switch (type) {
    case K_SRC_F16:
        return q_f16_to_f32(((const uint16_t *)src)[i]);
    case K_SRC_BF16:
        return q_bf16_to_f32(((const uint16_t *)src)[i]);
    case K_SRC_F32:
        break;
    }
    return ((const float *)src)[i];
}

/* Scalar reference; also handles the tails of the SIMD path. */
static void add_scalar(k_moments *m, const void *src, k_src type, int64_t i0, int64_t n,
                       float pivot, float thr)
{
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    for (int64_t i = i0; i < i0 + n; i++) {
        float x = src_at(src, type, i);
        if (!isfinite(x)) {
            if (isnan(x))
                m->n_nan++;
            else
                m->n_inf++;
            continue;
        }
        m->n++;
        m->min = x < m->min ? x : m->min;
        m->max = x > m->max ? x : m->max;
        double d = (double)x - (double)pivot, d2 = d * d;
        s1 += d;
        s2 += d2;
        s3 += d2 * d;
        s4 += d2 * d2;
        if (fabsf(x - pivot) > thr)
            add_cand(m, x);
    }
    m->s1 += s1;
    m->s2 += s2;
    m->s3 += s3;
    m->s4 += s4;
}

#if K_X86
/* Loads 8 elements of src at i as floats. */
__attribute__((target("avx2,f16c"))) static inline __m256 load8(const void *src, k_src type,
                                                                 int64_t i)
{
    if (type == K_SRC_F32)
        return _mm256_loadu_ps((const float *)src + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)src + i));
    if (type == K_SRC_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* One vector of 8 values into one set of double accumulators. */
typedef struct acc4 {
    __m256d s1, s2, s3, s4;
} acc4;

__attribute__((target("avx2,fma"))) static inline void acc_add(acc4 *a, __m256d d)
{
    __m256d d2 = _mm256_mul_pd(d, d);
    a->s1 = _mm256_add_pd(a->s1, d);
    a->s2 = _mm256_add_pd(a->s2, d2);
    a->s3 = _mm256_fmadd_pd(d2, d, a->s3);
    a->s4 = _mm256_fmadd_pd(d2, d2, a->s4);
}

/* The 8 values of x, less the pivot, in double: the low half into a, the high
 * half into b. */
__attribute__((target("avx2,fma"))) static inline void acc_x8(acc4 *a, acc4 *b, __m256 x,
                                                               __m256d dpivot)
{
    acc_add(a, _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)), dpivot));
    acc_add(b, _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)), dpivot));
}

__attribute__((target("avx2"))) static inline double hsum(__m256d v)
{
    double t[4];
    _mm256_storeu_pd(t, v);
    return (t[0] + t[1]) + (t[2] + t[3]);
}

/* The SIMD bodies sum in float, flushed to double after every group of
 * K_LANE_SUM vectors, and form d = x - pivot scaled by 2^-e, where thr = f 2^e
 * with f in [0.5, 1), so the float powers of d lie near 1 whatever the tensor's
 * scale: d' = fma(x, 2^-e, -pivot 2^-e) rounds x - pivot once and scales it
 * exactly. So |d'| > thr 2^-e picks exactly the candidates the scalar
 * |x - pivot| > thr picks, and they are stored straight from the vector, in
 * order. Every float lane sums at most K_LANE_SUM values: with the roundings
 * of d' and its powers, each sum is within about 38 units of 2^-24 of the
 * scalar one, relative to the sum of |d|^k (tests/test_stats.c states the
 * bound, 64 units); measured 1.65× faster than double sums over every value
 * (and 16 values per lane 4–7% slower than 32: twice the flushes). A group is
 * summed again in double, unscaled, from the source when its float sums may
 * be wrong (group_ok): an overflow, or a NaN or Inf read, leaves the sum of
 * d'^4 non-finite, and a sum of d'^4 below 2^-96 in every lane means values
 * small enough to underflow. Blocks after the last whole group are summed in
 * double. A non-finite value leaves the double sums non-finite, and the call
 * returns false: the caller redoes the range on the scalar path, which
 * classifies it. Each body is inlined once per source type (type is a constant
 * in each caller), so the loop has no type test. */
#define K_LANE_SUM 32
#define K_F4_LO 0x1p-96f

/* The exponent e of thr = f 2^e (f in [0.5, 1)) when it gives a usable scale
 * for pivot too, else 0 (no scaling). */
static int scale_exp(float pivot, float thr)
{
    if (!(thr >= 0x1p-100f && thr <= 0x1p100f))
        return 0; /* 0, NaN, Inf, FLT_MAX: unscaled */
    int e;
    frexpf(thr, &e);
    if (fabsf(ldexpf(pivot, -e)) > 0x1p100f)
        return 0;
    return e;
}

/* Adds the group sums S (of d' = d 2^-e) and the double sums U (of d) to m,
 * with min/max; false when a sum is not finite (a NaN or Inf was read). */
static bool finish_sums(k_moments *m, const double S[4], int e, const double U[4], float lo,
                        float hi)
{
    double s[4];
    for (int k = 0; k < 4; k++) {
        s[k] = ldexp(S[k], (k + 1) * e) + U[k];
        if (!isfinite(s[k]))
            return false;
    }
    m->s1 += s[0];
    m->s2 += s[1];
    m->s3 += s[2];
    m->s4 += s[3];
    m->min = lo < m->min ? lo : m->min;
    m->max = hi > m->max ? hi : m->max;
    return true;
}

/* Float sums of d', d'^2, d'^3, d'^4 of one group. */
typedef struct accf8 {
    __m256 f1, f2, f3, f4;
} accf8;

__attribute__((target("avx2,fma"))) static inline void accf8_add(accf8 *a, __m256 d)
{
    __m256 d2 = _mm256_mul_ps(d, d);
    a->f1 = _mm256_add_ps(a->f1, d);
    a->f2 = _mm256_add_ps(a->f2, d2);
    a->f3 = _mm256_fmadd_ps(d2, d, a->f3);
    a->f4 = _mm256_fmadd_ps(d2, d2, a->f4);
}

/* acc += both halves of f, in double. */
__attribute__((target("avx2"))) static inline __m256d flush8(__m256d acc, __m256 f)
{
    __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
    return _mm256_add_pd(acc, _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1))));
}

/* True when a group's float sums stand: no lane of the sum of d'^4 (f4) is
 * Inf or NaN (an overflow, or a NaN or Inf read), and one lane is at least
 * K_F4_LO, so what underflowed (less than 2^-126 per value) is below 2^-21 of
 * the group's sums. A group of zeros fails too and is summed in double. */
__attribute__((target("avx2"))) static inline bool group_ok8(__m256 f4)
{
    if (_mm256_movemask_ps(_mm256_cmp_ps(f4, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ)))
        return false;
    return _mm256_movemask_ps(_mm256_cmp_ps(f4, _mm256_set1_ps(K_F4_LO), _CMP_GE_OQ)) != 0;
}

/* Min/max. The loops track them through the candidates only: when one value
 * lies beyond pivot + thr, so does the largest, which is then the largest
 * candidate (likewise below), so the extremes of the candidates on each side
 * of the pivot are the extremes of the range; only a range with no candidate
 * on a side (a constant tensor, a FLT_MAX or NaN threshold) is scanned again
 * for them. Measured: 150 -> 135-147 ms over the 852M values of the bench
 * model at 1 thread (best of 5, four alternating runs). */
typedef struct ext {
    float lo, hi; /* extremes of the candidates so far */
} ext;

/* The lanes of x whose bits are set in far become candidates, in order. */
__attribute__((target("avx2"))) static inline void push8(k_moments *m, __m256 x, unsigned far,
                                                        ext *x_ext)
{
    float t[8];
    _mm256_storeu_ps(t, x);
    for (; far; far &= far - 1) {
        float v = t[__builtin_ctz(far)];
        add_cand(m, v);
        x_ext->lo = v < x_ext->lo ? v : x_ext->lo;
        x_ext->hi = v > x_ext->hi ? v : x_ext->hi;
    }
}

/* One vector: d' (returned) and the bits of the candidates. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline __m256
step8(__m256 x, __m256 vsc, __m256 vnps, __m256 vthr, unsigned *far)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 d = _mm256_fmadd_ps(x, vsc, vnps);
    __m256 adx = _mm256_and_ps(d, absmask);
    *far = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(adx, vthr, _CMP_GT_OQ));
    return d;
}

/* Four vectors at i: sums into f, then the candidates. */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
quad8(k_moments *m, const void *src, const k_src type, int64_t i, __m256 vsc, __m256 vnps,
      __m256 vthr, ext *x_ext, accf8 *f)
{
    unsigned far[4];
    for (int j = 0; j < 4; j++)
        accf8_add(f, step8(load8(src, type, i + 8 * j), vsc, vnps, vthr, &far[j]));
    if (__builtin_expect((far[0] | far[1] | far[2] | far[3]) != 0, 0))
        for (int j = 0; j < 4; j++)
            if (far[j])
                push8(m, load8(src, type, i + 8 * j), far[j], x_ext);
}

/* Min and max of the n (a multiple of 8) values at src; a NaN is skipped. */
__attribute__((target("avx2,f16c"), always_inline)) static inline void
scan_minmax8(const void *src, const k_src type, int64_t n, float *lo, float *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    __m256 vmin = _mm256_set1_ps(INFINITY), vmax = _mm256_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 8) {
        __m256 x = load8(src, type, i);
        vmin = _mm256_min_ps(x, vmin); /* a NaN x keeps vmin */
        vmax = _mm256_max_ps(x, vmax);
    }
    float fm[8];
    _mm256_storeu_ps(fm, vmin);
    for (int k = 0; k < 8; k++)
        *lo = fm[k] < *lo ? fm[k] : *lo;
    _mm256_storeu_ps(fm, vmax);
    for (int k = 0; k < 8; k++)
        *hi = fm[k] > *hi ? fm[k] : *hi;
}

/* True when the candidates' extremes are the range's: there are candidates on
 * both sides of the pivot. */
static inline bool ext_known(const ext *x_ext, float pivot)
{
    return x_ext->lo < pivot && x_ext->hi > pivot;
}

#define K_GROUP8 (8 * K_LANE_SUM)
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline bool
add_avx2_body(k_moments *m, const void *src, const k_src type, int64_t n, float pivot, float thr)
{
    const int e = scale_exp(pivot, thr);
    const float sc = ldexpf(1.0f, -e);
    const __m256 vsc = _mm256_set1_ps(sc), vnps = _mm256_set1_ps(-pivot * sc);
    const __m256 vthr = _mm256_set1_ps(thr * sc);
    const __m256d dpivot = _mm256_set1_pd((double)pivot);
    const __m256d zero = _mm256_setzero_pd();
    acc4 a = {zero, zero, zero, zero}, b = a, S = a;
    ext x_ext = {INFINITY, -INFINITY};
    int64_t i = 0;
    for (; i + K_GROUP8 <= n; i += K_GROUP8) {
        const __m256 fz = _mm256_setzero_ps();
        accf8 f = {fz, fz, fz, fz};
        for (int k = 0; k < K_GROUP8; k += 32)
            quad8(m, src, type, i + k, vsc, vnps, vthr, &x_ext, &f);
        if (__builtin_expect(group_ok8(f.f4), 1)) {
            S.s1 = flush8(S.s1, f.f1);
            S.s2 = flush8(S.s2, f.f2);
            S.s3 = flush8(S.s3, f.f3);
            S.s4 = flush8(S.s4, f.f4);
            continue;
        }
        for (int k = 0; k < K_GROUP8; k += 8)
            acc_x8(&a, &b, load8(src, type, i + k), dpivot);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 x = load8(src, type, i);
        unsigned far;
        step8(x, vsc, vnps, vthr, &far);
        if (far)
            push8(m, x, far, &x_ext);
        acc_x8(&a, &b, x, dpivot);
    }
    const double Sd[4] = {hsum(S.s1), hsum(S.s2), hsum(S.s3), hsum(S.s4)};
    const double U[4] = {hsum(_mm256_add_pd(a.s1, b.s1)), hsum(_mm256_add_pd(a.s2, b.s2)),
                         hsum(_mm256_add_pd(a.s3, b.s3)), hsum(_mm256_add_pd(a.s4, b.s4))};
    float lo = x_ext.lo, hi = x_ext.hi;
    if (!ext_known(&x_ext, pivot))
        scan_minmax8(src, type, i, &lo, &hi);
    if (!finish_sums(m, Sd, e, U, lo, hi))
        return false;
    m->n += i;
    add_scalar(m, src, type, i, n - i, pivot, thr);
    return true;
}

/* One inlined copy of the body per source type. */
__attribute__((target("avx2,fma,f16c"))) static bool add_avx2(k_moments *m, const void *src,
                                                               k_src type, int64_t n,
                                                               float pivot, float thr)
{
    if (type == K_SRC_F16)
        return add_avx2_body(m, src, K_SRC_F16, n, pivot, thr);
    if (type == K_SRC_BF16)
        return add_avx2_body(m, src, K_SRC_BF16, n, pivot, thr);
    return add_avx2_body(m, src, K_SRC_F32, n, pivot, thr);
}

/* ---- AVX-512: the AVX2 form at twice the width ---- */
#define K_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))

/* Loads 16 elements of src at i as floats. */
K_AVX512 static inline __m512 load16(const void *src, k_src type, int64_t i)
{
    if (type == K_SRC_F32)
        return _mm512_loadu_ps((const float *)src + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)((const uint16_t *)src + i));
    if (type == K_SRC_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

typedef struct acc8 {
    __m512d s1, s2, s3, s4;
} acc8;

K_AVX512 static inline void acc8_add(acc8 *a, __m512d d)
{
    __m512d d2 = _mm512_mul_pd(d, d);
    a->s1 = _mm512_add_pd(a->s1, d);
    a->s2 = _mm512_add_pd(a->s2, d2);
    a->s3 = _mm512_fmadd_pd(d2, d, a->s3);
    a->s4 = _mm512_fmadd_pd(d2, d2, a->s4);
}

K_AVX512 static inline void acc_x16(acc8 *a, acc8 *b, __m512 x, __m512d dpivot)
{
    acc8_add(a, _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)), dpivot));
    acc8_add(b, _mm512_sub_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)), dpivot));
}

K_AVX512 static inline double hsum8(__m512d v)
{
    double t[8];
    _mm512_storeu_pd(t, v);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

typedef struct accf16 {
    __m512 f1, f2, f3, f4;
} accf16;

K_AVX512 static inline void accf16_add(accf16 *a, __m512 d)
{
    __m512 d2 = _mm512_mul_ps(d, d);
    a->f1 = _mm512_add_ps(a->f1, d);
    a->f2 = _mm512_add_ps(a->f2, d2);
    a->f3 = _mm512_fmadd_ps(d2, d, a->f3);
    a->f4 = _mm512_fmadd_ps(d2, d2, a->f4);
}

K_AVX512 static inline __m512d flush16(__m512d acc, __m512 f)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
    return _mm512_add_pd(acc, _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_extractf32x8_ps(f, 1))));
}

K_AVX512 static inline bool group_ok16(__m512 f4)
{
    if (_mm512_cmp_ps_mask(f4, _mm512_set1_ps(FLT_MAX), _CMP_NLE_UQ))
        return false;
    return _mm512_cmp_ps_mask(f4, _mm512_set1_ps(K_F4_LO), _CMP_GE_OQ) != 0;
}

/* Candidates straight from the register: compressed to the front and stored
 * whole (16 floats) when the buffer has room for that, else one by one. */
K_AVX512 static inline void push16(k_moments *m, __m512 x, __mmask16 far, __m512 *cmin,
                                   __m512 *cmax)
{
    *cmin = _mm512_mask_min_ps(*cmin, far, *cmin, x);
    *cmax = _mm512_mask_max_ps(*cmax, far, *cmax, x);
    if (m->n_cand + 16 <= m->cand_cap) {
        _mm512_storeu_ps(m->cand + m->n_cand, _mm512_maskz_compress_ps(far, x));
        m->n_cand += __builtin_popcount(far);
        return;
    }
    float t[16];
    _mm512_storeu_ps(t, x);
    for (unsigned f = far; f; f &= f - 1)
        add_cand(m, t[__builtin_ctz(f)]);
}

K_AVX512 __attribute__((always_inline)) static inline __m512
step16(__m512 x, __m512 vsc, __m512 vnps, __m512 vthr, __mmask16 *far)
{
    __m512 d = _mm512_fmadd_ps(x, vsc, vnps);
    *far = _mm512_cmp_ps_mask(_mm512_abs_ps(d), vthr, _CMP_GT_OQ);
    return d;
}

K_AVX512 __attribute__((always_inline)) static inline void
quad16(k_moments *m, const void *src, const k_src type, int64_t i, __m512 vsc, __m512 vnps,
       __m512 vthr, __m512 *cmin, __m512 *cmax, accf16 *f)
{
    __mmask16 far[4];
    for (int j = 0; j < 4; j++)
        accf16_add(f, step16(load16(src, type, i + 16 * j), vsc, vnps, vthr, &far[j]));
    if (__builtin_expect((far[0] | far[1] | far[2] | far[3]) != 0, 0))
        for (int j = 0; j < 4; j++)
            if (far[j])
                push16(m, load16(src, type, i + 16 * j), far[j], cmin, cmax);
}

K_AVX512 __attribute__((always_inline)) static inline void
scan_minmax16(const void *src, const k_src type, int64_t n, float *lo, float *hi)
{
    __m512 vmin = _mm512_set1_ps(INFINITY), vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        __m512 x = load16(src, type, i);
        vmin = _mm512_min_ps(x, vmin);
        vmax = _mm512_max_ps(x, vmax);
    }
    *lo = _mm512_reduce_min_ps(vmin);
    *hi = _mm512_reduce_max_ps(vmax);
}

/* add_avx2_body with 16 values per step and groups of K_GROUP16 values (again
 * K_LANE_SUM per lane): the same candidates in the same order, the same
 * fallbacks. */
#define K_GROUP16 (16 * K_LANE_SUM)
K_AVX512 __attribute__((always_inline)) static inline bool
add_avx512_body(k_moments *m, const void *src, const k_src type, int64_t n, float pivot, float thr)
{
    const int e = scale_exp(pivot, thr);
    const float sc = ldexpf(1.0f, -e);
    const __m512 vsc = _mm512_set1_ps(sc), vnps = _mm512_set1_ps(-pivot * sc);
    const __m512 vthr = _mm512_set1_ps(thr * sc);
    const __m512d dpivot = _mm512_set1_pd((double)pivot);
    const __m512d zero = _mm512_setzero_pd();
    acc8 a = {zero, zero, zero, zero}, b = a, S = a;
    __m512 cmin = _mm512_set1_ps(INFINITY), cmax = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + K_GROUP16 <= n; i += K_GROUP16) {
        const __m512 fz = _mm512_setzero_ps();
        accf16 f = {fz, fz, fz, fz};
        for (int k = 0; k < K_GROUP16; k += 64)
            quad16(m, src, type, i + k, vsc, vnps, vthr, &cmin, &cmax, &f);
        if (__builtin_expect(group_ok16(f.f4), 1)) {
            S.s1 = flush16(S.s1, f.f1);
            S.s2 = flush16(S.s2, f.f2);
            S.s3 = flush16(S.s3, f.f3);
            S.s4 = flush16(S.s4, f.f4);
            continue;
        }
        for (int k = 0; k < K_GROUP16; k += 16)
            acc_x16(&a, &b, load16(src, type, i + k), dpivot);
    }
    for (; i + 16 <= n; i += 16) {
        __m512 x = load16(src, type, i);
        __mmask16 far;
        step16(x, vsc, vnps, vthr, &far);
        if (far)
            push16(m, x, far, &cmin, &cmax);
        acc_x16(&a, &b, x, dpivot);
    }
    const double Sd[4] = {hsum8(S.s1), hsum8(S.s2), hsum8(S.s3), hsum8(S.s4)};
    const double U[4] = {hsum8(_mm512_add_pd(a.s1, b.s1)), hsum8(_mm512_add_pd(a.s2, b.s2)),
                         hsum8(_mm512_add_pd(a.s3, b.s3)), hsum8(_mm512_add_pd(a.s4, b.s4))};
    const ext x_ext = {_mm512_reduce_min_ps(cmin), _mm512_reduce_max_ps(cmax)};
    float lo = x_ext.lo, hi = x_ext.hi;
    if (!ext_known(&x_ext, pivot))
        scan_minmax16(src, type, i, &lo, &hi);
    if (!finish_sums(m, Sd, e, U, lo, hi))
        return false;
    m->n += i;
    add_scalar(m, src, type, i, n - i, pivot, thr);
    return true;
}

K_AVX512 static bool add_avx512(k_moments *m, const void *src, k_src type, int64_t n,
                                float pivot, float thr)
{
    if (type == K_SRC_F16)
        return add_avx512_body(m, src, K_SRC_F16, n, pivot, thr);
    if (type == K_SRC_BF16)
        return add_avx512_body(m, src, K_SRC_BF16, n, pivot, thr);
    return add_avx512_body(m, src, K_SRC_F32, n, pivot, thr);
}

static bool have_avx2(void)
{
    const k_cpu *cpu = k_cpu_get();
    return cpu->avx2 && cpu->fma && cpu->f16c;
}
#endif

const char *k_stats_path(void)
{
#if K_X86
    if (!g_force_scalar && k_cpu_get()->avx512)
        return "avx512";
    if (!g_force_scalar && have_avx2())
        return "avx2";
#endif
    return "scalar";
}

void k_moments_add(k_moments *m, const void *src, k_src type, int64_t n, float pivot, float thr)
{
#if K_X86
    const bool wide = k_cpu_get()->avx512;
    if (!g_force_scalar && (wide || have_avx2())) {
        k_moments save = *m;
        if (wide ? add_avx512(m, src, type, n, pivot, thr) : add_avx2(m, src, type, n, pivot, thr))
            return;
        *m = save; /* a NaN or Inf: the scalar path classifies it */
    }
#endif
    add_scalar(m, src, type, 0, n, pivot, thr);
}

void k_moments_merge(k_moments *a, const k_moments *b)
{
    a->n += b->n;
    a->s1 += b->s1;
    a->s2 += b->s2;
    a->s3 += b->s3;
    a->s4 += b->s4;
    a->min = b->min < a->min ? b->min : a->min;
    a->max = b->max > a->max ? b->max : a->max;
    a->n_nan += b->n_nan;
    a->n_inf += b->n_inf;
    a->cand_overflow |= b->cand_overflow;
}
