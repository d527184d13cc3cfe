/* q_dtype.c — the element-type traits table, scalar float conversions and the
 * reference row dequantizers.
 *
 * The dequantizers reproduce ggml's dequantize_row_* bit for bit: the same
 * products in the same order, in float, with the f16 scales widened exactly.
 * Each step that ggml writes as one expression `a * q - b` is kept as two
 * statements here so that no compiler may contract it into an FMA (whose single
 * rounding would give different bits). Blocks are read byte-wise at the offsets
 * of the structs in q_blocks.h, so a source pointer of any alignment works and
 * multi-byte fields are read little-endian on any host.
 */
#include "q_dtype.h"

#include <pthread.h>
#include <stddef.h>
#include <string.h>

#include "q_blocks.h"

const int8_t q_iq4nl_values[16] = {
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
};

/* ---- bit helpers ---- */

static inline uint32_t q_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float q_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t q_ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t q_ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t q_ld64(const uint8_t *p)
{
    return (uint64_t)q_ld32(p) | ((uint64_t)q_ld32(p + 4) << 32);
}

/* ---- scalar conversions ---- */

/* Exact widening. NaNs keep sign and payload and come out quiet, as the
 * hardware conversions (F16C, ARM fcvt) and ggml's scalar path give them. */
float q_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) {
        if (man == 0)
            return q_bits_f32(sign | 0x7f800000u);
        return q_bits_f32(sign | 0x7fc00000u | (man << 13));
    }
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float */
        float v = (float)man * 0x1p-24f;
        return q_bits_f32(sign | q_f32_bits(v));
    }
    return q_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* Round to nearest, ties to even; overflow gives inf; NaN stays NaN (quiet,
 * top payload bits kept). */
uint16_t q_f32_to_f16(float f)
{
    uint32_t x = q_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) /* >= 65520: halfway past 65504 ties to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) { /* normal half (>= 2^-14) */
        uint32_t r = ax - 0x38000000u; /* rebias exponent 127 -> 15 */
        r += 0xfffu + ((r >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    uint32_t e = ax >> 23;
    if (e < 102) /* below 2^-25: rounds to zero */
        return sign;
    /* value = m * 2^(e-150); in units of 2^-24 that is m >> (126 - e) */
    uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t q = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
        q++; /* may carry into the smallest normal, which is right */
    return (uint16_t)(sign | q);
}

/* Exact widening: bf16 is the top half of an f32 (NaNs pass through as is,
 * like ggml's GGML_BF16_TO_FP32). */
float q_bf16_to_f32(uint16_t h)
{
    return q_bits_f32((uint32_t)h << 16);
}

uint16_t q_f32_to_bf16(float f)
{
    uint32_t x = q_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* f16 -> f32 lookup, 256 KiB, built once on first use. */
static float q_f16_table[65536];
static pthread_once_t q_f16_once = PTHREAD_ONCE_INIT;

static void q_f16_table_init(void)
{
    for (uint32_t i = 0; i < 65536u; i++)
        q_f16_table[i] = q_f16_to_f32((uint16_t)i);
}

static inline const float *q_f16_lut(void)
{
    pthread_once(&q_f16_once, q_f16_table_init);
    return q_f16_table;
}

/* OCP FP8 E4M3 ("fn"): bias 7, no infinities, S.1111.111 is NaN, max 448. */
static float q_e4m3_to_f32(uint8_t b)
{
    uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    uint32_t exp = (b >> 3) & 0xfu;
    uint32_t man = b & 0x7u;
    if (exp == 0xf && man == 0x7)
        return q_bits_f32(sign | 0x7fc00000u);
    if (exp == 0) {
        float v = (float)man * 0x1p-9f; /* subnormal: man/8 * 2^-6 */
        return q_bits_f32(sign | q_f32_bits(v));
    }
    return q_bits_f32(sign | ((exp + 120u) << 23) | (man << 20));
}

/* OCP FP8 E5M2: the top byte of an IEEE half (bias 15, inf and NaN). */
static float q_e5m2_to_f32(uint8_t b)
{
    return q_f16_to_f32((uint16_t)(b << 8));
}

/* ---- plain element types ---- */

static void q_dq_f32(const void *src, float *dst, int64_t n)
{
    if (n > 0)
        memmove(dst, src, (size_t)n * sizeof(float)); /* in place is allowed */
}

static void q_dq_f16(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = lut[q_ld16(p + 2 * i)];
}

static void q_dq_bf16(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = q_bits_f32((uint32_t)q_ld16(p + 2 * i) << 16);
}

static void q_dq_f64(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++) {
        uint64_t u = q_ld64(p + 8 * i);
        double v;
        memcpy(&v, &u, sizeof v);
        dst[i] = (float)v;
    }
}

static void q_dq_i8(const void *src, float *dst, int64_t n)
{
    const int8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)p[i];
}

static void q_dq_u8(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)p[i];
}

static void q_dq_bool(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = p[i] ? 1.0f : 0.0f;
}

static void q_dq_i16(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)(int16_t)q_ld16(p + 2 * i);
}

static void q_dq_u16(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)q_ld16(p + 2 * i);
}

static void q_dq_i32(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)(int32_t)q_ld32(p + 4 * i);
}

static void q_dq_u32(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)q_ld32(p + 4 * i);
}

static void q_dq_i64(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)(int64_t)q_ld64(p + 8 * i);
}

static void q_dq_u64(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)q_ld64(p + 8 * i);
}

static void q_dq_f8_e4m3(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = q_e4m3_to_f32(p[i]);
}

static void q_dq_f8_e5m2(const void *src, float *dst, int64_t n)
{
    const uint8_t *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = q_e5m2_to_f32(p[i]);
}

/* ---- 32-element ggml blocks ---- */

#define Q_FIELD(block, field) (offsetof(block, field))

static void q_dq_q4_0(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, b += sizeof(block_q4_0), dst += QK4_0) {
        const float d = lut[q_ld16(b + Q_FIELD(block_q4_0, d))];
        const uint8_t *qs = b + Q_FIELD(block_q4_0, qs);
        for (int j = 0; j < QK4_0 / 2; j++) {
            const int x0 = (qs[j] & 0x0f) - 8;
            const int x1 = (qs[j] >> 4) - 8;
            dst[j] = (float)x0 * d;
            dst[j + QK4_0 / 2] = (float)x1 * d;
        }
    }
}

static void q_dq_q4_1(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK4_1; i++, b += sizeof(block_q4_1), dst += QK4_1) {
        const float d = lut[q_ld16(b + Q_FIELD(block_q4_1, d))];
        const float m = lut[q_ld16(b + Q_FIELD(block_q4_1, m))];
        const uint8_t *qs = b + Q_FIELD(block_q4_1, qs);
        for (int j = 0; j < QK4_1 / 2; j++) {
            const float t0 = (float)(qs[j] & 0x0f) * d;
            const float t1 = (float)(qs[j] >> 4) * d;
            dst[j] = t0 + m;
            dst[j + QK4_1 / 2] = t1 + m;
        }
    }
}

static void q_dq_q5_0(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK5_0; i++, b += sizeof(block_q5_0), dst += QK5_0) {
        const float d = lut[q_ld16(b + Q_FIELD(block_q5_0, d))];
        const uint32_t qh = q_ld32(b + Q_FIELD(block_q5_0, qh));
        const uint8_t *qs = b + Q_FIELD(block_q5_0, qs);
        for (int j = 0; j < QK5_0 / 2; j++) {
            const int h0 = (int)((qh >> j) & 1u) << 4;
            const int h1 = (int)((qh >> (j + 16)) & 1u) << 4;
            const int x0 = ((qs[j] & 0x0f) | h0) - 16;
            const int x1 = ((qs[j] >> 4) | h1) - 16;
            dst[j] = (float)x0 * d;
            dst[j + QK5_0 / 2] = (float)x1 * d;
        }
    }
}

static void q_dq_q5_1(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK5_1; i++, b += sizeof(block_q5_1), dst += QK5_1) {
        const float d = lut[q_ld16(b + Q_FIELD(block_q5_1, d))];
        const float m = lut[q_ld16(b + Q_FIELD(block_q5_1, m))];
        const uint32_t qh = q_ld32(b + Q_FIELD(block_q5_1, qh));
        const uint8_t *qs = b + Q_FIELD(block_q5_1, qs);
        for (int j = 0; j < QK5_1 / 2; j++) {
            const int h0 = (int)((qh >> j) & 1u) << 4;
            const int h1 = (int)((qh >> (j + 16)) & 1u) << 4;
            const float t0 = (float)((qs[j] & 0x0f) | h0) * d;
            const float t1 = (float)((qs[j] >> 4) | h1) * d;
            dst[j] = t0 + m;
            dst[j + QK5_1 / 2] = t1 + m;
        }
    }
}

static void q_dq_q8_0(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++, b += sizeof(block_q8_0), dst += QK8_0) {
        const float d = lut[q_ld16(b + Q_FIELD(block_q8_0, d))];
        const uint8_t *qs = b + Q_FIELD(block_q8_0, qs);
        for (int j = 0; j < QK8_0; j++)
            dst[j] = (float)(int8_t)qs[j] * d;
    }
}

static void q_dq_iq4_nl(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK4_NL; i++, b += sizeof(block_iq4_nl), dst += QK4_NL) {
        const float d = lut[q_ld16(b + Q_FIELD(block_iq4_nl, d))];
        const uint8_t *qs = b + Q_FIELD(block_iq4_nl, qs);
        for (int j = 0; j < QK4_NL / 2; j++) {
            dst[j] = d * (float)q_iq4nl_values[qs[j] & 0x0f];
            dst[j + QK4_NL / 2] = d * (float)q_iq4nl_values[qs[j] >> 4];
        }
    }
}

/* ---- k-quants (256-element super-blocks) ---- */

static void q_dq_q2_k(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q2_K)) {
        const float d = lut[q_ld16(b + Q_FIELD(block_q2_K, d))];
        const float dmin = lut[q_ld16(b + Q_FIELD(block_q2_K, dmin))];
        const uint8_t *sc = b + Q_FIELD(block_q2_K, scales);
        const uint8_t *q = b + Q_FIELD(block_q2_K, qs);
        /* per 128 elements: 32 bytes of qs, four 2-bit planes; each plane
         * is two sub-blocks of 16 (bytes 0..15 and 16..31) */
        for (int half = 0; half < 2; half++, q += 32) {
            for (int plane = 0; plane < 4; plane++) {
                const int shift = 2 * plane;
                for (int k = 0; k < 2; k++) {
                    const uint8_t s = *sc++;
                    const float dl = d * (float)(s & 0x0f);
                    const float ml = dmin * (float)(s >> 4);
                    for (int l = 0; l < 16; l++) {
                        const float t = dl * (float)((q[16 * k + l] >> shift) & 3);
                        *dst++ = t - ml;
                    }
                }
            }
        }
    }
}

/* The 16 6-bit Q3_K scales, unpacked and offset by -32. */
static void q_q3k_scales(const uint8_t *s, int *out)
{
    for (int j = 0; j < 16; j++) {
        const int lo = j < 8 ? (s[j] & 0x0f) : (s[j - 8] >> 4);
        const int hi = (s[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        out[j] = (lo | (hi << 4)) - 32;
    }
}

static void q_dq_q3_k(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q3_K)) {
        const float d_all = lut[q_ld16(b + Q_FIELD(block_q3_K, d))];
        const uint8_t *q = b + Q_FIELD(block_q3_K, qs);
        const uint8_t *hm = b + Q_FIELD(block_q3_K, hmask);
        int scales[16];
        q_q3k_scales(b + Q_FIELD(block_q3_K, scales), scales);
        int is = 0;
        uint8_t m = 1; /* hmask bit of the current plane, 1..128 over 256 elements */
        for (int half = 0; half < 2; half++, q += 32) {
            for (int plane = 0; plane < 4; plane++, m = (uint8_t)(m << 1)) {
                const int shift = 2 * plane;
                for (int k = 0; k < 2; k++) {
                    const float dl = d_all * (float)scales[is++];
                    for (int l = 0; l < 16; l++) {
                        const int j = 16 * k + l;
                        const int v = ((q[j] >> shift) & 3) - ((hm[j] & m) ? 0 : 4);
                        *dst++ = dl * (float)v;
                    }
                }
            }
        }
    }
}

/* Sub-block j (0..7) scale and min of Q4_K/Q5_K's 12 packed bytes. */
static void q_k4_scale_min(int j, const uint8_t *s, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void q_dq_q4_k(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q4_K)) {
        const float d = lut[q_ld16(b + Q_FIELD(block_q4_K, d))];
        const float dmin = lut[q_ld16(b + Q_FIELD(block_q4_K, dmin))];
        const uint8_t *s = b + Q_FIELD(block_q4_K, scales);
        const uint8_t *q = b + Q_FIELD(block_q4_K, qs);
        for (int is = 0; is < 8; is += 2, q += 32) {
            int sc, mn;
            q_k4_scale_min(is, s, &sc, &mn);
            const float d1 = d * (float)sc;
            const float m1 = dmin * (float)mn;
            q_k4_scale_min(is + 1, s, &sc, &mn);
            const float d2 = d * (float)sc;
            const float m2 = dmin * (float)mn;
            for (int l = 0; l < 32; l++) {
                const float t = d1 * (float)(q[l] & 0x0f);
                *dst++ = t - m1;
            }
            for (int l = 0; l < 32; l++) {
                const float t = d2 * (float)(q[l] >> 4);
                *dst++ = t - m2;
            }
        }
    }
}

static void q_dq_q5_k(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q5_K)) {
        const float d = lut[q_ld16(b + Q_FIELD(block_q5_K, d))];
        const float dmin = lut[q_ld16(b + Q_FIELD(block_q5_K, dmin))];
        const uint8_t *s = b + Q_FIELD(block_q5_K, scales);
        const uint8_t *qh = b + Q_FIELD(block_q5_K, qh);
        const uint8_t *ql = b + Q_FIELD(block_q5_K, qs);
        unsigned u1 = 1, u2 = 2; /* qh bits of the two sub-blocks in flight */
        for (int is = 0; is < 8; is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
            int sc, mn;
            q_k4_scale_min(is, s, &sc, &mn);
            const float d1 = d * (float)sc;
            const float m1 = dmin * (float)mn;
            q_k4_scale_min(is + 1, s, &sc, &mn);
            const float d2 = d * (float)sc;
            const float m2 = dmin * (float)mn;
            for (int l = 0; l < 32; l++) {
                const int v = (ql[l] & 0x0f) + ((qh[l] & u1) ? 16 : 0);
                const float t = d1 * (float)v;
                *dst++ = t - m1;
            }
            for (int l = 0; l < 32; l++) {
                const int v = (ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0);
                const float t = d2 * (float)v;
                *dst++ = t - m2;
            }
        }
    }
}

static void q_dq_q6_k(const void *src, float *dst, int64_t n)
{
    const float *lut = q_f16_lut();
    const uint8_t *b = src;
    for (int64_t i = 0; i < n / QK_K; i++, b += sizeof(block_q6_K)) {
        const float d = lut[q_ld16(b + Q_FIELD(block_q6_K, d))];
        const uint8_t *ql = b + Q_FIELD(block_q6_K, ql);
        const uint8_t *qh = b + Q_FIELD(block_q6_K, qh);
        const int8_t *sc = (const int8_t *)(b + Q_FIELD(block_q6_K, scales));
        /* per 128 elements: 64 bytes of ql, 32 of qh, 8 scales */
        for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, dst += 128) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l] = d * (float)sc[is] * (float)q1;
                dst[l + 32] = d * (float)sc[is + 2] * (float)q2;
                dst[l + 64] = d * (float)sc[is + 4] * (float)q3;
                dst[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* ---- the traits table ---- */

/* Row dequantizer of each type, by enum name (NULL: not readable). Every
 * entry of Q_DTYPE_LIST needs one line here, or the table does not compile. */
#define Q_DQ_Q_DT_F32 q_dq_f32
#define Q_DQ_Q_DT_F16 q_dq_f16
#define Q_DQ_Q_DT_Q4_0 q_dq_q4_0
#define Q_DQ_Q_DT_Q4_1 q_dq_q4_1
#define Q_DQ_Q_DT_Q5_0 q_dq_q5_0
#define Q_DQ_Q_DT_Q5_1 q_dq_q5_1
#define Q_DQ_Q_DT_Q8_0 q_dq_q8_0
#define Q_DQ_Q_DT_Q8_1 NULL
#define Q_DQ_Q_DT_Q2_K q_dq_q2_k
#define Q_DQ_Q_DT_Q3_K q_dq_q3_k
#define Q_DQ_Q_DT_Q4_K q_dq_q4_k
#define Q_DQ_Q_DT_Q5_K q_dq_q5_k
#define Q_DQ_Q_DT_Q6_K q_dq_q6_k
#define Q_DQ_Q_DT_Q8_K NULL
#define Q_DQ_Q_DT_IQ2_XXS NULL
#define Q_DQ_Q_DT_IQ2_XS NULL
#define Q_DQ_Q_DT_IQ3_XXS NULL
#define Q_DQ_Q_DT_IQ1_S NULL
#define Q_DQ_Q_DT_IQ4_NL q_dq_iq4_nl
#define Q_DQ_Q_DT_IQ3_S NULL
#define Q_DQ_Q_DT_IQ2_S NULL
#define Q_DQ_Q_DT_IQ4_XS NULL
#define Q_DQ_Q_DT_I8 q_dq_i8
#define Q_DQ_Q_DT_I16 q_dq_i16
#define Q_DQ_Q_DT_I32 q_dq_i32
#define Q_DQ_Q_DT_I64 q_dq_i64
#define Q_DQ_Q_DT_F64 q_dq_f64
#define Q_DQ_Q_DT_IQ1_M NULL
#define Q_DQ_Q_DT_BF16 q_dq_bf16
#define Q_DQ_Q_DT_TQ1_0 NULL
#define Q_DQ_Q_DT_TQ2_0 NULL
#define Q_DQ_Q_DT_MXFP4 NULL
#define Q_DQ_Q_DT_U8 q_dq_u8
#define Q_DQ_Q_DT_BOOL q_dq_bool
#define Q_DQ_Q_DT_F8_E4M3 q_dq_f8_e4m3
#define Q_DQ_Q_DT_F8_E5M2 q_dq_f8_e5m2
#define Q_DQ_Q_DT_U16 q_dq_u16
#define Q_DQ_Q_DT_U32 q_dq_u32
#define Q_DQ_Q_DT_U64 q_dq_u64

/* Dense index of each type in q_traits. */
enum {
#define Q_IX_ENUM(e, id, name, blck, size) Q_IX_##e,
    Q_DTYPE_LIST(Q_IX_ENUM)
#undef Q_IX_ENUM
    Q_IX_COUNT
};

static q_dtype_traits q_traits[Q_IX_COUNT] = {
#define Q_TRAITS_ROW(e, id, name, blck, size) \
    [Q_IX_##e] = {e, name, blck, size, Q_DQ_##e, Q_DQ_##e},
    Q_DTYPE_LIST(Q_TRAITS_ROW)
#undef Q_TRAITS_ROW
};

static q_dtype_traits *traits_of(uint32_t id)
{
    switch (id) {
#define Q_GET_CASE(e, i, name, blck, size) \
    case i:                                \
        return &q_traits[Q_IX_##e];
        Q_DTYPE_LIST(Q_GET_CASE)
#undef Q_GET_CASE
    default:
        return NULL;
    }
}

const q_dtype_traits *q_dtype_get(uint32_t id)
{
    return traits_of(id);
}

void q_dtype_set_fast_dequant(uint32_t id, q_dequant_fn fn)
{
    q_dtype_traits *t = traits_of(id);
    if (t && t->dequant_ref)
        t->dequant = fn ? fn : t->dequant_ref;
}

const char *q_dtype_name(uint32_t id)
{
    const q_dtype_traits *t = q_dtype_get(id);
    return t ? t->name : "?";
}

/* ASCII case-insensitive equality (strcasecmp follows the locale: in a Turkish
 * one "i" and "I" are different letters). */
static bool q_name_eq(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned ca = (unsigned char)*a, cb = (unsigned char)*b;
        if (ca - 'a' < 26u)
            ca -= 'a' - 'A';
        if (cb - 'a' < 26u)
            cb -= 'a' - 'A';
        if (ca != cb)
            return false;
        if (ca == 0)
            return true;
    }
}

int q_dtype_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < Q_IX_COUNT; i++) {
        if (q_name_eq(name, q_traits[i].name))
            return (int)q_traits[i].id;
    }
    return -1;
}

bool q_dtype_readable(uint32_t id)
{
    const q_dtype_traits *t = q_dtype_get(id);
    return t && t->dequant;
}

uint64_t q_dtype_bytes(uint32_t id, int64_t n)
{
    const q_dtype_traits *t = q_dtype_get(id);
    if (!t || n < 0 || n % t->blck != 0)
        return 0;
    uint64_t blocks = (uint64_t)(n / t->blck);
    uint64_t size = (uint64_t)t->size;
    if (blocks > UINT64_MAX / size)
        return 0;
    return blocks * size;
}
