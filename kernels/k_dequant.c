/* k_dequant.c — AVX2/F16C forms of q_dtype's F16, BF16, q8_0, q4_0, q4_1,
 * q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K and iq4_NL dequantizers (F16 and
 * BF16 also in AVX-512), installed by k_dequant_register as the types' fast
 * dequantizers (every row read, q_tensor_read_rows, goes through them).
 *
 * F16: vcvtph2ps is exact and quiets a NaN keeping its payload, as
 * q_f16_to_f32 does (test_preview compares all 65536 patterns). BF16: the
 * exact widening (bits << 16), as the reference.
 *
 * Each 32-value sub-block is y = (d·sc)·q − dmin·m, evaluated as the reference
 * does: the products d·sc and dmin·m in scalar float, then per value the
 * multiply and the subtraction as two rounded operations (this file is
 * compiled without FMA contraction: -std=c11, no fma target).
 */
#include "k_dequant.h"

#include <stddef.h>
#include <string.h>

#include "k_cpu.h"
#include "q_blocks.h"
#include "q_qhelpers.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KD_X86 1
#else
#define KD_X86 0
#endif

#if KD_X86
/* dst[0..32) = d1 * q[l] - m1 for 32 levels held as bytes. */
__attribute__((target("avx2"))) static inline void kd_store32(float *dst, __m256i q, float d1,
                                                              float m1)
{
    const __m256 vd = _mm256_set1_ps(d1), vm = _mm256_set1_ps(m1);
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int k = 0; k < 4; k++) {
        __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[k]));
        _mm256_storeu_ps(dst + 8 * k, _mm256_sub_ps(_mm256_mul_ps(vd, v), vm));
    }
}

/* dst[0..16) = dl * q[l] - ml (sub = true) or dl * q[l] (sub = false) for 16
 * levels held as signed bytes. */
__attribute__((target("avx2"))) static inline void kd_store16(float *dst, __m128i q, float dl,
                                                              float ml, bool sub)
{
    const __m256 vd = _mm256_set1_ps(dl), vm = _mm256_set1_ps(ml);
    const __m128i parts[2] = {q, _mm_srli_si128(q, 8)};
    for (int k = 0; k < 2; k++) {
        __m256 v = _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[k])));
        _mm256_storeu_ps(dst + 8 * k, sub ? _mm256_sub_ps(v, vm) : v);
    }
}

#define KD_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c")))

/* kd_store32 in 512-bit registers, for the AVX-512 forms of the q4_K and q5_K
 * dequantizers (the same body, KD_K45). q6_K's 16-value stores gained nothing
 * so (0.107 -> 0.110 ns a value): it stays AVX2. */
KD_AVX512 static inline void kd_store32_512(float *dst, __m256i q, float d1, float m1)
{
    const __m512 vd = _mm512_set1_ps(d1), vm = _mm512_set1_ps(m1);
    const __m128i parts[2] = {_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)};
    for (int k = 0; k < 2; k++) {
        __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(parts[k]));
        _mm512_storeu_ps(dst + 16 * k, _mm512_sub_ps(_mm512_mul_ps(vd, v), vm));
    }
}

/* q2_K: per 128 values 32 bytes of qs holding four 2-bit planes; each plane is
 * two sub-blocks of 16 with a 4-bit scale and a 4-bit min. */
__attribute__((target("avx2"))) static void kd_q2_k(const void *src, float *dst, int64_t n)
{
    const uint8_t *b = src;
    const __m256i three = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q2_K)) {
        const float d = q_f16_to_f32((uint16_t)(b[offsetof(block_q2_K, d)] |
                                                b[offsetof(block_q2_K, d) + 1] << 8));
        const float dmin = q_f16_to_f32((uint16_t)(b[offsetof(block_q2_K, dmin)] |
                                                   b[offsetof(block_q2_K, dmin) + 1] << 8));
        const uint8_t *sc = b + offsetof(block_q2_K, scales);
        const uint8_t *q = b + offsetof(block_q2_K, qs);
        for (int half = 0; half < 2; half++, q += 32) {
            __m256i qv = _mm256_loadu_si256((const __m256i *)(const void *)q);
            for (int plane = 0; plane < 4; plane++, sc += 2, dst += 32) {
                __m256i l = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * plane), three);
                kd_store16(dst, _mm256_castsi256_si128(l), d * (float)(sc[0] & 0x0f),
                           dmin * (float)(sc[0] >> 4), true);
                kd_store16(dst + 16, _mm256_extracti128_si256(l, 1), d * (float)(sc[1] & 0x0f),
                           dmin * (float)(sc[1] >> 4), true);
            }
        }
    }
}

/* q3_K: per 128 values 32 bytes of qs holding four 2-bit planes and, for all
 * 256, 32 bytes of hmask (bit 4·half + plane of byte j: no -4 for value j of
 * that plane); sixteen signed 6-bit scales, one per 16 values;
 * y = (d * scale) * level. */
__attribute__((target("avx2"))) static void kd_q3_k(const void *src, float *dst, int64_t n)
{
    const uint8_t *b = src;
    const __m256i three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q3_K)) {
        const float d = q_f16_to_f32((uint16_t)(b[offsetof(block_q3_K, d)] |
                                                b[offsetof(block_q3_K, d) + 1] << 8));
        const __m256i hm =
            _mm256_loadu_si256((const __m256i *)(const void *)(b + offsetof(block_q3_K, hmask)));
        const uint8_t *q = b + offsetof(block_q3_K, qs);
        const uint8_t *sc = b + offsetof(block_q3_K, scales);
        int is = 0;
        for (int half = 0; half < 2; half++, q += 32) {
            const __m256i qv = _mm256_loadu_si256((const __m256i *)(const void *)q);
            for (int plane = 0; plane < 4; plane++, dst += 32) {
                const __m256i m = _mm256_set1_epi8((char)(1 << (4 * half + plane)));
                const __m256i clear = _mm256_cmpeq_epi8(_mm256_and_si256(hm, m),
                                                        _mm256_setzero_si256());
                const __m256i l =
                    _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(qv, 2 * plane), three),
                                    _mm256_and_si256(clear, four));
                kd_store16(dst, _mm256_castsi256_si128(l), d * (float)q_qh_q3_get(sc, is), 0.0f,
                           false);
                kd_store16(dst + 16, _mm256_extracti128_si256(l, 1),
                           d * (float)q_qh_q3_get(sc, is + 1), 0.0f, false);
                is += 2;
            }
        }
    }
}

/* q6_K: per 128 values 64 bytes of low nibbles, 32 of high bit pairs and 8
 * signed scales, one per 16 values; y = (d * scale) * (level - 32). */
__attribute__((target("avx2"))) static void kd_q6_k(const void *src, float *dst, int64_t n)
{
    const uint8_t *b = src;
    const __m256i low4 = _mm256_set1_epi8(0x0f), three = _mm256_set1_epi8(3);
    const __m256i off = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q6_K)) {
        const float d = q_f16_to_f32((uint16_t)(b[offsetof(block_q6_K, d)] |
                                                b[offsetof(block_q6_K, d) + 1] << 8));
        const uint8_t *ql = b + offsetof(block_q6_K, ql);
        const uint8_t *qh = b + offsetof(block_q6_K, qh);
        const int8_t *sc = (const int8_t *)(b + offsetof(block_q6_K, scales));
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, dst += 128) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(ql + 32));
            __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)qh);
            __m256i hb[4]; /* bits 2j..2j+1 of qh, moved to bits 4..5 */
            for (int j = 0; j < 4; j++)
                hb[j] = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2 * j), three),
                                          4);
            const __m256i lv[4] = {
                _mm256_or_si256(_mm256_and_si256(l0, low4), hb[0]),
                _mm256_or_si256(_mm256_and_si256(l1, low4), hb[1]),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), hb[2]),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), hb[3]),
            };
            for (int j = 0; j < 4; j++) { /* values 32j .. 32j + 31, scales 2j, 2j + 1 */
                __m256i q = _mm256_sub_epi8(lv[j], off);
                kd_store16(dst + 32 * j, _mm256_castsi256_si128(q), d * (float)sc[2 * j], 0.0f,
                           false);
                kd_store16(dst + 32 * j + 16, _mm256_extracti128_si256(q, 1),
                           d * (float)sc[2 * j + 1], 0.0f, false);
            }
        }
    }
}

/* iq4_NL: 32 values per block, y = d * values[q]; the 16 signed levels are
 * looked up with a byte shuffle. */
__attribute__((target("avx2"))) static void kd_iq4_nl(const void *src, float *dst, int64_t n)
{
    const uint8_t *b = src;
    const __m128i table = _mm_loadu_si128((const __m128i *)(const void *)q_iq4nl_values);
    const __m128i low4 = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < n / QK4_NL; i++, b += sizeof(block_iq4_nl), dst += QK4_NL) {
        const float d = q_f16_to_f32((uint16_t)(b[offsetof(block_iq4_nl, d)] |
                                                b[offsetof(block_iq4_nl, d) + 1] << 8));
        const uint8_t *qs = b + offsetof(block_iq4_nl, qs);
        __m128i q = _mm_loadu_si128((const __m128i *)(const void *)qs);
        __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(q, low4));
        __m128i hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(q, 4), low4));
        kd_store16(dst, lo, d, 0.0f, false); /* values 0..15: the low nibbles */
        kd_store16(dst + 16, hi, d, 0.0f, false);
    }
}

/* The 32-value formats: y = (float)q * d, plus m for q4_1 and q5_1, as the
 * references have it (the products are exact: a level of at most 8 bits
 * times an f16 value). */
#define KD_Q8_0 0
#define KD_Q4_0 1
#define KD_Q4_1 2
#define KD_Q5_0 3
#define KD_Q5_1 4

/* dst[0..16) = (float)q[l] * d + m for 16 unsigned levels held as bytes. */
__attribute__((target("avx2"))) static inline void kd_store16u(float *dst, __m128i q, float d,
                                                               float m)
{
    const __m256 vd = _mm256_set1_ps(d), vm = _mm256_set1_ps(m);
    const __m128i parts[2] = {q, _mm_srli_si128(q, 8)};
    for (int k = 0; k < 2; k++) {
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[k])), vd);
        _mm256_storeu_ps(dst + 8 * k, _mm256_add_ps(v, vm));
    }
}

/* One 32-value block at b of format f into dst: the levels as bytes (low
 * nibbles are values 0..15, high ones 16..31; q5's fifth bits, bit j of qh
 * for value j, spread over bytes by a shuffle and a bit test), then
 * kd_store16 or kd_store16u. */
__attribute__((target("avx2"), always_inline)) static inline void kd_block32(const uint8_t *b,
                                                                            float *dst,
                                                                            const int f)
{
    const float d = q_f16_to_f32((uint16_t)(b[0] | b[1] << 8));
    if (f == KD_Q8_0) {
        const uint8_t *qs = b + offsetof(block_q8_0, qs);
        kd_store16(dst, _mm_loadu_si128((const __m128i *)(const void *)qs), d, 0.0f, false);
        kd_store16(dst + 16, _mm_loadu_si128((const __m128i *)(const void *)(qs + 16)), d, 0.0f,
                   false);
        return;
    }
    const bool five = f == KD_Q5_0 || f == KD_Q5_1, with_m = f == KD_Q4_1 || f == KD_Q5_1;
    const size_t off_qs = f == KD_Q4_0   ? offsetof(block_q4_0, qs)
                          : f == KD_Q4_1 ? offsetof(block_q4_1, qs)
                          : f == KD_Q5_0 ? offsetof(block_q5_0, qs)
                                         : offsetof(block_q5_1, qs);
    const __m128i low4 = _mm_set1_epi8(0x0f);
    const __m128i q = _mm_loadu_si128((const __m128i *)(const void *)(b + off_qs));
    __m128i lo = _mm_and_si128(q, low4), hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
    if (five) {
        uint32_t qh;
        memcpy(&qh, b + (f == KD_Q5_0 ? offsetof(block_q5_0, qh) : offsetof(block_q5_1, qh)),
               sizeof qh);
        /* byte j of the 16 (or 16 + j) tests bit j % 8 of qh's byte j / 8 */
        const __m128i bits = _mm_set1_epi64x((long long)0x8040201008040201ull);
        const __m128i v = _mm_cvtsi32_si128((int)qh);
        const __m128i hl = _mm_shuffle_epi8(v, _mm_set_epi64x(0x0101010101010101ll, 0));
        const __m128i hh = _mm_shuffle_epi8(v, _mm_set_epi64x(0x0303030303030303ll,
                                                              0x0202020202020202ll));
        const __m128i sixteen = _mm_set1_epi8(16);
        lo = _mm_or_si128(lo, _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(hl, bits), bits),
                                            sixteen));
        hi = _mm_or_si128(hi, _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(hh, bits), bits),
                                            sixteen));
    }
    if (with_m) {
        const float m = q_f16_to_f32((uint16_t)(b[2] | b[3] << 8));
        kd_store16u(dst, lo, d, m);
        kd_store16u(dst + 16, hi, d, m);
    } else {
        const __m128i off = _mm_set1_epi8(five ? 16 : 8);
        kd_store16(dst, _mm_sub_epi8(lo, off), d, 0.0f, false);
        kd_store16(dst + 16, _mm_sub_epi8(hi, off), d, 0.0f, false);
    }
}

#define KD_BLOCKS32(name, f, type)                                                             \
    __attribute__((target("avx2"))) static void name(const void *src, float *dst, int64_t n)   \
    {                                                                                          \
        const uint8_t *b = src;                                                                \
        for (int64_t i = 0; i < n / 32; i++, b += sizeof(type), dst += 32)                     \
            kd_block32(b, dst, f);                                                             \
    }
KD_BLOCKS32(kd_q8_0, KD_Q8_0, block_q8_0)
KD_BLOCKS32(kd_q4_0, KD_Q4_0, block_q4_0)
KD_BLOCKS32(kd_q4_1, KD_Q4_1, block_q4_1)
KD_BLOCKS32(kd_q5_0, KD_Q5_0, block_q5_0)
KD_BLOCKS32(kd_q5_1, KD_Q5_1, block_q5_1)
#undef KD_BLOCKS32

/* q4_K (q5 false) and q5_K: 8 sub-blocks of 32, scales/mins of 6 bits. The
 * body of kd_k45 (AVX2) and kd_k45_512 (the stores in 512-bit registers:
 * q4_K 0.141 -> 0.095 ns a value, rows from L2, Zen 4). */
#define KD_K45(name, attr, store32)                                                            \
    attr __attribute__((always_inline)) static inline void name(const uint8_t *b, float *dst,  \
                                                                const bool q5)                 \
    {                                                                                          \
        const size_t off_d = q5 ? offsetof(block_q5_K, d) : offsetof(block_q4_K, d);           \
        const size_t off_dm = q5 ? offsetof(block_q5_K, dmin) : offsetof(block_q4_K, dmin);    \
        const size_t off_s = q5 ? offsetof(block_q5_K, scales) : offsetof(block_q4_K, scales); \
        const size_t off_q = q5 ? offsetof(block_q5_K, qs) : offsetof(block_q4_K, qs);         \
        const float d = q_f16_to_f32((uint16_t)(b[off_d] | b[off_d + 1] << 8));                \
        const float dmin = q_f16_to_f32((uint16_t)(b[off_dm] | b[off_dm + 1] << 8));           \
        const uint8_t *s = b + off_s, *ql = b + off_q;                                         \
        const __m256i low4 = _mm256_set1_epi8(0x0f), sixteen = _mm256_set1_epi8(16);           \
        const uint8_t *qhp = b + (q5 ? offsetof(block_q5_K, qh) : 0);                          \
        const __m256i qh = q5 ? _mm256_loadu_si256((const __m256i *)(const void *)qhp)         \
                              : _mm256_setzero_si256();                                        \
        for (int j = 0; j < 4; j++, ql += 32) {                                                \
            uint8_t sc1, mn1, sc2, mn2;                                                        \
            q_qh_k4_get(2 * j, s, &sc1, &mn1);                                                 \
            q_qh_k4_get(2 * j + 1, s, &sc2, &mn2);                                             \
            const __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)ql);           \
            __m256i lo = _mm256_and_si256(q, low4);                                            \
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);                      \
            if (q5) { /* bit 2j of qh[l] adds 16 to the low level, bit 2j+1 to the high */     \
                const __m256i b1 = _mm256_set1_epi8((char)(1 << (2 * j)));                     \
                const __m256i b2 = _mm256_set1_epi8((char)(2 << (2 * j)));                     \
                const __m256i h1 = _mm256_cmpeq_epi8(_mm256_and_si256(qh, b1), b1);            \
                const __m256i h2 = _mm256_cmpeq_epi8(_mm256_and_si256(qh, b2), b2);            \
                lo = _mm256_add_epi8(lo, _mm256_and_si256(h1, sixteen));                       \
                hi = _mm256_add_epi8(hi, _mm256_and_si256(h2, sixteen));                       \
            }                                                                                  \
            store32(dst, lo, d * (float)sc1, dmin * (float)mn1);                               \
            store32(dst + 32, hi, d * (float)sc2, dmin * (float)mn2);                          \
            dst += 64;                                                                         \
        }                                                                                      \
    }
KD_K45(kd_k45, __attribute__((target("avx2"))), kd_store32)
KD_K45(kd_k45_512, KD_AVX512, kd_store32_512)
#undef KD_K45

__attribute__((target("avx2,f16c"))) static void kd_f16(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(h + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(v));
    }
    for (; i < n; i++)
        dst[i] = q_f16_to_f32(h[i]);
}

__attribute__((target("avx2"))) static void kd_bf16(const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(h + i));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(w));
    }
    for (; i < n; i++)
        dst[i] = q_bf16_to_f32(h[i]);
}


/* kd_f16 and kd_bf16 with 32 values a step in 512-bit registers (rows from
 * L2 on Zen 4, whose 256-bit vcvtph2ps takes about three cycles: f16 0.118
 * -> 0.036 ns a value, bf16 0.057 -> 0.036): n values of type f16 (bf
 * false) or bf16 at src to f32. */
KD_AVX512 __attribute__((always_inline)) static inline void kd_half_512(const void *src,
                                                                       float *dst, int64_t n,
                                                                       const bool bf)
{
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int k = 0; k < 32; k += 16) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(h + i + k));
            _mm512_storeu_ps(dst + i + k,
                             bf ? _mm512_castsi512_ps(
                                      _mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16))
                                : _mm512_cvtph_ps(v));
        }
    }
    for (; i < n; i++)
        dst[i] = bf ? q_bf16_to_f32(h[i]) : q_f16_to_f32(h[i]);
}

KD_AVX512 static void kd_f16_512(const void *src, float *dst, int64_t n)
{
    kd_half_512(src, dst, n, false);
}

KD_AVX512 static void kd_bf16_512(const void *src, float *dst, int64_t n)
{
    kd_half_512(src, dst, n, true);
}

#define KD_K45_ROWS(name, attr, body, q5, type)                                               \
    attr static void name(const void *src, float *dst, int64_t n)                              \
    {                                                                                          \
        const uint8_t *b = src;                                                                \
        for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(type), dst += QK_K)                 \
            body(b, dst, q5);                                                                  \
    }
KD_K45_ROWS(kd_q4_k, __attribute__((target("avx2"))), kd_k45, false, block_q4_K)
KD_K45_ROWS(kd_q5_k, __attribute__((target("avx2"))), kd_k45, true, block_q5_K)
KD_K45_ROWS(kd_q4_k_512, KD_AVX512, kd_k45_512, false, block_q4_K)
KD_K45_ROWS(kd_q5_k_512, KD_AVX512, kd_k45_512, true, block_q5_K)
#undef KD_K45_ROWS
#endif

q_dequant_fn k_dequant_fast(uint32_t type, bool simd)
{
#if KD_X86
    const k_cpu *cpu = k_cpu_get();
    if (simd && cpu->avx2) {
        if (type == Q_DT_F16)
            return !cpu->f16c ? NULL : cpu->avx512 ? kd_f16_512 : kd_f16;
        if (type == Q_DT_BF16)
            return cpu->avx512 ? kd_bf16_512 : kd_bf16;
        if (type == Q_DT_Q4_K)
            return cpu->avx512 ? kd_q4_k_512 : kd_q4_k;
        if (type == Q_DT_Q5_K)
            return cpu->avx512 ? kd_q5_k_512 : kd_q5_k;
        static const struct {
            uint32_t type;
            q_dequant_fn fn;
        } avx2[] = {
            {Q_DT_Q2_K, kd_q2_k}, {Q_DT_Q3_K, kd_q3_k}, {Q_DT_Q6_K, kd_q6_k},
            {Q_DT_IQ4_NL, kd_iq4_nl},
            {Q_DT_Q8_0, kd_q8_0}, {Q_DT_Q4_0, kd_q4_0}, {Q_DT_Q4_1, kd_q4_1},
            {Q_DT_Q5_0, kd_q5_0}, {Q_DT_Q5_1, kd_q5_1},
        };
        for (size_t i = 0; i < sizeof avx2 / sizeof *avx2; i++)
            if (avx2[i].type == type)
                return avx2[i].fn;
    }
#endif
    (void)type;
    (void)simd;
    return NULL;
}

void k_dequant_register(void)
{
    static const uint32_t types[] = {Q_DT_F16,  Q_DT_BF16, Q_DT_Q2_K, Q_DT_Q3_K,   Q_DT_Q4_K,
                                     Q_DT_Q5_K, Q_DT_Q6_K, Q_DT_IQ4_NL, Q_DT_Q8_0, Q_DT_Q4_0,
                                     Q_DT_Q4_1, Q_DT_Q5_0, Q_DT_Q5_1};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        q_dequant_fn fn = k_dequant_fast(types[i], true);
        if (fn)
            q_dtype_set_fast_dequant(types[i], fn);
    }
}
