/* k_float.c — f32, f16 and bf16 as quantization targets (k_float.h).
 *
 * f16 uses F16C's conversion with round-to-nearest-even, which equals
 * q_f32_to_f16 on every float: ties, subnormal results, overflow to infinity
 * at 65520 and NaNs (quiet, the payload's top ten bits kept; checked in
 * tests/test_preview.c on every f16 rounding boundary and on NaNs with
 * payloads of all kinds). bf16 rounds on the bits as
 * q_f32_to_bf16 does: add 0x7fff plus the lowest kept bit and keep the top
 * half; a NaN keeps its top half with the quiet bit set. (AVX512_BF16's
 * vcvtneps2bf16 would flush subnormal inputs to zero.) The preview's old path
 * quantized a row by the scalar references and widened it back: 4096 × 4096
 * f32 to f16 took 41 ms on one thread, 21 ms on two (Zen 4). */
#include "k_float.h"

#include <math.h>

#include "k_cpu.h"
#include "k_fused.h"
#include "q_dtype.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KFL_X86 1
#define KFL_AVX2 __attribute__((target("avx2,f16c")))
#define KFL_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,f16c")))
#define KFL_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) /* an immediate */
#define KFL_NAN 0x81        /* vfpclass categories QNaN, SNaN */
#define KFL_NOT_FINITE 0x99 /* QNaN, +Inf, -Inf, SNaN */
#else
#define KFL_X86 0
#endif

bool k_float_is(q_format_id id)
{
    return id == Q_FMT_F32 || id == Q_FMT_F16 || id == Q_FMT_BF16;
}

/* One value by the references. */
static float kfl_one(q_format_id id, float v)
{
    if (id == Q_FMT_F16)
        return q_f16_to_f32(q_f32_to_f16(v));
    if (id == Q_FMT_BF16)
        return q_bf16_to_f32(q_f32_to_bf16(v));
    return v;
}

#if KFL_X86

/* Returns body(ID, x, y, n) with ID the constant equal to id: one inlined
 * copy of an always_inline loop per format. */
#define KFL_DISPATCH(body, id, x, y, n)                                                           \
    switch (id) {                                                                                 \
    case Q_FMT_F16:                                                                               \
        return body(Q_FMT_F16, x, y, n);                                                          \
    case Q_FMT_BF16:                                                                              \
        return body(Q_FMT_BF16, x, y, n);                                                         \
    default:                                                                                      \
        return body(Q_FMT_F32, x, y, n);                                                          \
    }

/* ---- AVX2 ---- */

/* The bf16 values of the floats with bits b, in the top halves of the lanes
 * (low halves zero). */
KFL_AVX2 __attribute__((always_inline)) static inline __m256i kfl_bf16_8(__m256i b)
{
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), lsb);
    const __m256i q = _mm256_or_si256(b, _mm256_set1_epi32(0x00400000)); /* NaN: quiet */
    const __m256 nan = _mm256_cmp_ps(_mm256_castsi256_ps(b), _mm256_castsi256_ps(b), _CMP_UNORD_Q);
    const __m256 v = _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(q), nan);
    return _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32((int)0xffff0000u));
}

/* 8 values rounded to format id and widened back. */
KFL_AVX2 __attribute__((always_inline)) static inline __m256 kfl_round8(const q_format_id id,
                                                                        __m256 v)
{
    if (id == Q_FMT_F16)
        return _mm256_cvtph_ps(_mm256_cvtps_ph(v, KFL_RNE));
    if (id == Q_FMT_BF16)
        return _mm256_castsi256_ps(kfl_bf16_8(_mm256_castps_si256(v)));
    return v;
}

/* k_float_fq_row's loop; returns true when some y is not finite. */
KFL_AVX2 __attribute__((always_inline)) static inline bool
kfl_fq_avx2_body(const q_format_id id, const float *x, float *y, int64_t n)
{
    const __m256i em = _mm256_set1_epi32(0x7f800000);
    __m256i bad = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 r = kfl_round8(id, _mm256_loadu_ps(x + i));
        bad = _mm256_or_si256(
            bad, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(r), em), em));
        _mm256_storeu_ps(y + i, r);
    }
    bool nf = !_mm256_testz_si256(bad, bad);
    for (; i < n; i++) {
        y[i] = kfl_one(id, x[i]);
        nf |= !isfinite(y[i]);
    }
    return nf;
}

KFL_AVX2 static bool kfl_fq_avx2(q_format_id id, const float *x, float *y, int64_t n)
{
    KFL_DISPATCH(kfl_fq_avx2_body, id, x, y, n);
}

/* n values to f16 bits. */
KFL_AVX2 static void kfl_f16_avx2(const float *x, uint16_t *d, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), KFL_RNE));
    for (; i < n; i++)
        d[i] = q_f32_to_f16(x[i]);
}

/* n values to bf16 bits. */
KFL_AVX2 static void kfl_bf16_avx2(const float *x, uint16_t *d, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i a = _mm256_srli_epi32(
            kfl_bf16_8(_mm256_loadu_si256((const __m256i *)(const void *)(x + i))), 16);
        const __m256i b = _mm256_srli_epi32(
            kfl_bf16_8(_mm256_loadu_si256((const __m256i *)(const void *)(x + i + 8))), 16);
        /* packus works per 128-bit half; the permute puts the quarters in order */
        _mm256_storeu_si256((__m256i *)(void *)(d + i),
                            _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8));
    }
    for (; i < n; i++)
        d[i] = q_f32_to_bf16(x[i]);
}

/* ---- AVX-512 ---- */

/* kfl_bf16_8 on 16 lanes. */
KFL_AVX512 __attribute__((always_inline)) static inline __m512i kfl_bf16_16(__m512i b)
{
    const __mmask16 nan = _mm512_fpclass_ps_mask(_mm512_castsi512_ps(b), KFL_NAN);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb);
    r = _mm512_mask_or_epi32(r, nan, b, _mm512_set1_epi32(0x00400000));
    return _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u));
}

KFL_AVX512 __attribute__((always_inline)) static inline __m512 kfl_round16(const q_format_id id,
                                                                           __m512 v)
{
    if (id == Q_FMT_F16)
        return _mm512_cvtph_ps(_mm512_cvtps_ph(v, KFL_RNE));
    if (id == Q_FMT_BF16)
        return _mm512_castsi512_ps(kfl_bf16_16(_mm512_castps_si512(v)));
    return v;
}

KFL_AVX512 __attribute__((always_inline)) static inline bool
kfl_fq_512_body(const q_format_id id, const float *x, float *y, int64_t n)
{
    __mmask16 bad = 0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 r = kfl_round16(id, _mm512_loadu_ps(x + i));
        bad |= _mm512_fpclass_ps_mask(r, KFL_NOT_FINITE);
        _mm512_storeu_ps(y + i, r);
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512 r = kfl_round16(id, _mm512_maskz_loadu_ps(m, x + i));
        bad |= _mm512_mask_fpclass_ps_mask(m, r, KFL_NOT_FINITE);
        _mm512_mask_storeu_ps(y + i, m, r);
    }
    return bad != 0;
}

KFL_AVX512 static bool kfl_fq_512(q_format_id id, const float *x, float *y, int64_t n)
{
    KFL_DISPATCH(kfl_fq_512_body, id, x, y, n);
}

KFL_AVX512 static void kfl_f16_512(const float *x, uint16_t *d, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(void *)(d + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(x + i), KFL_RNE));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(d + i, m,
                                 _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), KFL_RNE));
    }
}

KFL_AVX512 static void kfl_bf16_512(const float *x, uint16_t *d, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i r =
            _mm512_srli_epi32(kfl_bf16_16(_mm512_loadu_si512((const void *)(x + i))), 16);
        _mm256_storeu_si256((__m256i *)(void *)(d + i), _mm512_cvtepi32_epi16(r));
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        const __m512i r = _mm512_srli_epi32(kfl_bf16_16(_mm512_maskz_loadu_epi32(m, x + i)), 16);
        _mm512_mask_cvtepi32_storeu_epi16(d + i, m, r);
    }
}

#endif /* KFL_X86 */

int k_float_fq_row(q_format_id id, const float *x, float *y, int64_t n, bool wide, bool check)
{
    bool nf = false;
#if KFL_X86
    nf = wide ? kfl_fq_512(id, x, y, n) : kfl_fq_avx2(id, x, y, n);
#else
    (void)wide;
    for (int64_t i = 0; i < n; i++) {
        y[i] = kfl_one(id, x[i]);
        nf |= !isfinite(y[i]);
    }
#endif
    if (!nf)
        return K_FQ_FINITE;
    for (int64_t i = 0; check && i < n; i++) /* a NaN or Inf in x, or an overflow? */
        if (!isfinite(x[i]))
            return K_FQ_NONFINITE;
    return 0;
}

/* The fast writers' condition: AVX2 and F16C on this CPU. */
static bool kfl_simd(void)
{
    const k_cpu *c = k_cpu_get();
    return KFL_X86 && c->avx2 && c->f16c;
}

size_t k_quantize_f16(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                      const float *imatrix)
{
    if (!kfl_simd())
        return q_format_get(Q_FMT_F16)->quantize_ref(src, dst, nrows, n_per_row, imatrix);
    const int64_t n = nrows * n_per_row;
#if KFL_X86
    if (k_cpu_get()->avx512)
        kfl_f16_512(src, dst, n);
    else
        kfl_f16_avx2(src, dst, n);
#endif
    return (size_t)n * sizeof(uint16_t);
}

size_t k_quantize_bf16(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    if (!kfl_simd())
        return q_format_get(Q_FMT_BF16)->quantize_ref(src, dst, nrows, n_per_row, imatrix);
    const int64_t n = nrows * n_per_row;
#if KFL_X86
    if (k_cpu_get()->avx512)
        kfl_bf16_512(src, dst, n);
    else
        kfl_bf16_avx2(src, dst, n);
#endif
    return (size_t)n * sizeof(uint16_t);
}
