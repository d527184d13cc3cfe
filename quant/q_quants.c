/* q_quants.c — ggml's 32-element quantizers (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1)
 * and IQ4_NL, scalar references that reproduce ggml's bytes exactly.
 *
 * Written from the algorithms of ggml-quants.c (quantize_row_<type>_ref,
 * quantize_row_<type>_impl, quantize_row_iq4_nl_impl); every float operation
 * is done in the same order and precision so the blocks match bit for bit.
 * The Makefile compiles with -std=c11, under which gcc and clang contract no
 * a*b+c into an FMA on x86-64; nothing here may use fmaf or -ffast-math.
 *
 * Blocks are written byte by byte (little-endian f16 fields at the offsets
 * of q_blocks.h), so dst needs no alignment.
 */
#include "q_quants.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "q_blocks.h"
#include "q_dtype.h"
#include "q_qhelpers.h"

static inline void qq_st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void qq_st32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Float to int32 by truncation as x86-64's cvttss2si does it: C leaves NaN and
 * out-of-range values undefined, the instruction gives INT32_MIN. ggml's casts
 * (int8_t)(float) and (uint8_t)(float) compile to this plus "keep the low
 * byte", which is what the two helpers below model; it only matters for the
 * non-finite x * id that a subnormal block maximum produces (id = 1/d = inf). */
static inline int32_t qq_cvtt(float v)
{
    if (v >= -2147483648.0f && v < 2147483648.0f)
        return (int32_t)v;
    return INT32_MIN;
}

/* (int8_t)v: low byte of the truncated value, read as signed. */
static inline int qq_cvt_i8(float v)
{
    int lo = (int)((uint32_t)qq_cvtt(v) & 0xffu);
    return lo > 127 ? lo - 256 : lo;
}

/* (uint8_t)v: low byte of the truncated value. */
static inline int qq_cvt_u8(float v)
{
    return (int)((uint32_t)qq_cvtt(v) & 0xffu);
}

/* ---- weighted search helpers (make_qx_quants and make_qkx3_quants are in
 * q_qhelpers.c) ---- */

/* Σx² / n over one row: the per-row variance term of ggml's importance weights. */
static float qq_row_sigma2(const float *x, int64_t n)
{
    float sum_x2 = 0;
    for (int64_t j = 0; j < n; j++)
        sum_x2 += x[j] * x[j];
    return sum_x2 / (float)n;
}

/* Importance weights of one 32-block: qw[j] * sqrt(sigma2 + x[j]²). */
static void qq_block_weights(const float *xb, const float *qw, float sigma2, float *weight)
{
    for (int j = 0; j < 32; j++)
        weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
}

/* Nibble packing shared by the 4/5-bit formats: element j in the low nibble of
 * byte j, element j + 16 in the high nibble; bit 4 of each level goes to qh. */
static void qq_pack_nibbles(const uint8_t *L, uint8_t *qs)
{
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((L[j] & 0x0f) | ((L[j + 16] & 0x0f) << 4));
}

static uint32_t qq_high_bits(const uint8_t *L)
{
    uint32_t qh = 0;
    for (int j = 0; j < 32; j++)
        qh |= (uint32_t)((L[j] >> 4) & 1u) << j;
    return qh;
}

static int qq_valid(int64_t nrows, int64_t n_per_row, int64_t blck)
{
    return nrows >= 0 && n_per_row > 0 && n_per_row % blck == 0;
}

/* ---- Q8_0 ---- */

static void qq_q8_0_block(const float *x, uint8_t *blk)
{
    float amax = 0.0f;
    for (int j = 0; j < QK8_0; j++) {
        float a = fabsf(x[j]);
        amax = amax > a ? amax : a; /* ggml's MAX(amax, a) */
    }
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    qq_st16(blk + offsetof(block_q8_0, d), q_f32_to_f16(d));
    uint8_t *qs = blk + offsetof(block_q8_0, qs);
    for (int j = 0; j < QK8_0; j++)
        qs[j] = (uint8_t)qq_cvt_i8(roundf(x[j] * id));
}

size_t q_quantize_q8_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    (void)imatrix; /* ggml's quantize_q8_0 ignores the importance weights too */
    if (!qq_valid(nrows, n_per_row, QK8_0))
        return 0;
    int64_t nb = nrows * (n_per_row / QK8_0);
    uint8_t *out = dst;
    for (int64_t i = 0; i < nb; i++)
        qq_q8_0_block(src + i * QK8_0, out + i * (int64_t)sizeof(block_q8_0));
    return (size_t)nb * sizeof(block_q8_0);
}

/* ---- the four 32-element types with a reference and an imatrix path ---- */

typedef void (*qq_block_ref_fn)(const float *x, uint8_t *blk);
typedef void (*qq_row_impl_fn)(const float *x, uint8_t *out, int64_t n_per_row,
                               const float *qw, int bits);

/* Rows of n_per_row values (a multiple of 32) into blocks of bsize bytes:
 * with an imatrix, impl quantizes each row (bits 4 or 5); without, ref
 * quantizes each block. Returns the bytes written, 0 for a bad shape. */
static size_t qq_quantize_rows(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                               const float *imatrix, size_t bsize, qq_block_ref_fn ref,
                               qq_row_impl_fn impl, int bits)
{
    if (!qq_valid(nrows, n_per_row, 32))
        return 0;
    const int64_t nb = n_per_row / 32;
    const int64_t row_size = nb * (int64_t)bsize;
    uint8_t *out = dst;
    for (int64_t r = 0; r < nrows; r++) {
        const float *x = src + r * n_per_row;
        uint8_t *orow = out + r * row_size;
        if (imatrix) {
            impl(x, orow, n_per_row, imatrix, bits);
            continue;
        }
        for (int64_t ib = 0; ib < nb; ib++)
            ref(x + ib * 32, orow + ib * (int64_t)bsize);
    }
    return (size_t)(nrows * row_size);
}

/* ---- Q4_0 / Q5_0: symmetric, d = max / -2^(bits-1) ---- */

/* ggml's quantize_row_q4_0_ref / q5_0_ref for one block: max is the element of
 * largest magnitude (first one on ties), sign kept. */
static void qq_x_0_ref_levels(const float *x, int bits, uint8_t *L, float *d_out)
{
    const int half = 1 << (bits - 1);
    float amax = 0.0f;
    float max = 0.0f;
    for (int j = 0; j < 32; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float d = max / (float)(-half);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    const float off = (float)half + 0.5f; /* 8.5f or 16.5f */
    for (int j = 0; j < 32; j++)
        L[j] = (uint8_t)q_qh_imin(2 * half - 1, qq_cvt_i8(x[j] * id + off));
    *d_out = d;
}

static void qq_q4_0_block_ref(const float *x, uint8_t *blk)
{
    uint8_t L[32];
    float d;
    qq_x_0_ref_levels(x, 4, L, &d);
    qq_st16(blk + offsetof(block_q4_0, d), q_f32_to_f16(d));
    qq_pack_nibbles(L, blk + offsetof(block_q4_0, qs));
}

static void qq_q5_0_block_ref(const float *x, uint8_t *blk)
{
    uint8_t L[32];
    float d;
    qq_x_0_ref_levels(x, 5, L, &d);
    qq_st16(blk + offsetof(block_q5_0, d), q_f32_to_f16(d));
    qq_st32(blk + offsetof(block_q5_0, qh), qq_high_bits(L));
    qq_pack_nibbles(L, blk + offsetof(block_q5_0, qs));
}

/* ggml's quantize_row_q4_0_impl / q5_0_impl: one row with importance weights. */
static void qq_x_0_row_impl(const float *x, uint8_t *out, int64_t n_per_row, const float *qw,
                            int bits)
{
    const float sigma2 = qq_row_sigma2(x, n_per_row);
    const int64_t nb = n_per_row / 32;
    const size_t bsize = bits == 4 ? sizeof(block_q4_0) : sizeof(block_q5_0);
    float weight[32];
    int8_t L8[32];
    uint8_t L[32];
    for (int64_t ib = 0; ib < nb; ib++) {
        const float *xb = x + 32 * ib;
        uint8_t *blk = out + ib * (int64_t)bsize;
        qq_block_weights(xb, qw + 32 * ib, sigma2, weight);
        float d = q_qh_make_qx(32, 1 << (bits - 1), xb, L8, weight);
        for (int j = 0; j < 32; j++)
            L[j] = (uint8_t)L8[j];
        if (bits == 4) {
            qq_st16(blk + offsetof(block_q4_0, d), q_f32_to_f16(d));
            qq_pack_nibbles(L, blk + offsetof(block_q4_0, qs));
        } else {
            qq_st16(blk + offsetof(block_q5_0, d), q_f32_to_f16(d));
            qq_st32(blk + offsetof(block_q5_0, qh), qq_high_bits(L));
            qq_pack_nibbles(L, blk + offsetof(block_q5_0, qs));
        }
    }
}

size_t q_quantize_q4_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    return qq_quantize_rows(src, dst, nrows, n_per_row, imatrix, sizeof(block_q4_0),
                            qq_q4_0_block_ref, qq_x_0_row_impl, 4);
}

size_t q_quantize_q5_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    return qq_quantize_rows(src, dst, nrows, n_per_row, imatrix, sizeof(block_q5_0),
                            qq_q5_0_block_ref, qq_x_0_row_impl, 5);
}

/* ---- Q4_1 / Q5_1: asymmetric, x = d * q + m ---- */

/* ggml's quantize_row_q4_1_ref / q5_1_ref for one block. Q4_1 clamps the
 * level to 15 through an int8 cast; Q5_1 casts to uint8 and does not clamp. */
static void qq_x_1_ref_levels(const float *x, int bits, uint8_t *L, float *d_out, float *m_out)
{
    float min = FLT_MAX;
    float max = -FLT_MAX;
    for (int j = 0; j < 32; j++) {
        if (x[j] < min)
            min = x[j];
        if (x[j] > max)
            max = x[j];
    }
    const float d = (max - min) / (float)((1 << bits) - 1);
    const float id = d != 0 ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) {
        const float v = (x[j] - min) * id + 0.5f;
        L[j] = bits == 4 ? (uint8_t)q_qh_imin(15, qq_cvt_i8(v)) : (uint8_t)qq_cvt_u8(v);
    }
    *d_out = d;
    *m_out = min;
}

static void qq_q4_1_block_ref(const float *x, uint8_t *blk)
{
    uint8_t L[32];
    float d, m;
    qq_x_1_ref_levels(x, 4, L, &d, &m);
    qq_st16(blk + offsetof(block_q4_1, d), q_f32_to_f16(d));
    qq_st16(blk + offsetof(block_q4_1, m), q_f32_to_f16(m));
    qq_pack_nibbles(L, blk + offsetof(block_q4_1, qs));
}

static void qq_q5_1_block_ref(const float *x, uint8_t *blk)
{
    uint8_t L[32];
    float d, m;
    qq_x_1_ref_levels(x, 5, L, &d, &m);
    qq_st16(blk + offsetof(block_q5_1, d), q_f32_to_f16(d));
    qq_st16(blk + offsetof(block_q5_1, m), q_f32_to_f16(m));
    qq_st32(blk + offsetof(block_q5_1, qh), qq_high_bits(L));
    qq_pack_nibbles(L, blk + offsetof(block_q5_1, qs));
}

/* ggml's quantize_row_q4_1_impl / q5_1_impl: one row with importance weights. */
static void qq_x_1_row_impl(const float *x, uint8_t *out, int64_t n_per_row, const float *qw,
                            int bits)
{
    const float sigma2 = qq_row_sigma2(x, n_per_row);
    const int64_t nb = n_per_row / 32;
    const size_t bsize = bits == 4 ? sizeof(block_q4_1) : sizeof(block_q5_1);
    float weight[32];
    uint8_t L[32];
    for (int64_t ib = 0; ib < nb; ib++) {
        const float *xb = x + 32 * ib;
        uint8_t *blk = out + ib * (int64_t)bsize;
        qq_block_weights(xb, qw + 32 * ib, sigma2, weight);
        float min;
        /* current ggml's make_qkx3_quants: clamp before rounding */
        float d = q_qh_make_qkx(32, (1 << bits) - 1, xb, weight, L, &min, -0.9f, 0.05f, 36,
                                false, true);
        if (bits == 4) {
            qq_st16(blk + offsetof(block_q4_1, d), q_f32_to_f16(d));
            qq_st16(blk + offsetof(block_q4_1, m), q_f32_to_f16(-min));
            qq_pack_nibbles(L, blk + offsetof(block_q4_1, qs));
        } else {
            qq_st16(blk + offsetof(block_q5_1, d), q_f32_to_f16(d));
            qq_st16(blk + offsetof(block_q5_1, m), q_f32_to_f16(-min));
            qq_st32(blk + offsetof(block_q5_1, qh), qq_high_bits(L));
            qq_pack_nibbles(L, blk + offsetof(block_q5_1, qs));
        }
    }
}

size_t q_quantize_q4_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    return qq_quantize_rows(src, dst, nrows, n_per_row, imatrix, sizeof(block_q4_1),
                            qq_q4_1_block_ref, qq_x_1_row_impl, 4);
}

size_t q_quantize_q5_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix)
{
    return qq_quantize_rows(src, dst, nrows, n_per_row, imatrix, sizeof(block_q5_1),
                            qq_q5_1_block_ref, qq_x_1_row_impl, 5);
}

/* ---- IQ4_NL ---- */

/* Index of the q_iq4nl_values level nearest to x; a tie goes to the upper
 * level. Compares 2x with the sums of neighbouring levels, which is exact (the
 * sums are small integers and x + x only doubles), so it agrees with ggml's
 * best_index_int8, old (subtracting) and new (midpoint) forms alike, for every
 * finite x. NaN gives 0 (the current ggml form). */
static int qq_iq4nl_index(float x)
{
    const float x2 = x + x;
    int idx = 0;
    for (int step = 8; step > 0; step >>= 1) {
        int j = idx + step;
        if (x2 >= (float)(q_iq4nl_values[j - 1] + q_iq4nl_values[j]))
            idx = j;
    }
    return idx;
}

/* Weighted sums Σ w·q·x and Σ w·q² for the levels chosen at inverse scale id. */
static void qq_iq4nl_sums(const float *xb, const float *weight, float id, float *sqx,
                          float *sq2)
{
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < QK4_NL; j++) {
        float q = (float)q_iq4nl_values[qq_iq4nl_index(id * xb[j])];
        float w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
    }
    *sqx = sumqx;
    *sq2 = sumq2;
}

/* ggml's quantize_row_iq4_nl_impl for one 32-element block (super-block =
 * block, 16 levels, ntry = 7). qw: 32 importance weights or NULL (then x²). */
static void qq_iq4_nl_block(const float *xb, const float *qw, uint8_t *blk)
{
    const int ntry = 7;
    float sigma2 = 0;
    for (int j = 0; j < QK4_NL; j++)
        sigma2 += xb[j] * xb[j];
    sigma2 *= 2.f / QK4_NL;

    float weight[QK4_NL];
    if (qw) {
        for (int j = 0; j < QK4_NL; j++)
            weight[j] = qw[j] * sqrtf(sigma2 + xb[j] * xb[j]);
    } else {
        for (int j = 0; j < QK4_NL; j++)
            weight[j] = xb[j] * xb[j];
    }
    float amax = 0, max = 0;
    for (int j = 0; j < QK4_NL; j++) {
        float ax = fabsf(xb[j]);
        if (ax > amax) {
            amax = ax;
            max = xb[j];
        }
    }
    float scale = 0;
    if (amax >= Q_QH_GROUP_MAX_EPS) {
        const float v0 = (float)q_iq4nl_values[0]; /* -127 */
        float d = -max / v0;
        float sumqx, sumq2;
        qq_iq4nl_sums(xb, weight, 1 / d, &sumqx, &sumq2);
        d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        for (int itry = -ntry; itry <= ntry; itry++) {
            float id = (float)(itry + q_iq4nl_values[0]) / max;
            qq_iq4nl_sums(xb, weight, id, &sumqx, &sumq2);
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scale = d;
    }
    qq_st16(blk + offsetof(block_iq4_nl, d), q_f32_to_f16(scale));
    /* Levels are re-picked with the final scale (even for an all-zero block,
     * where id = 0 picks level 8, the value 1). */
    const float id = scale != 0 ? 1 / scale : 0;
    uint8_t L[QK4_NL];
    for (int j = 0; j < QK4_NL; j++)
        L[j] = (uint8_t)qq_iq4nl_index(id * xb[j]);
    qq_pack_nibbles(L, blk + offsetof(block_iq4_nl, qs));
}

size_t q_quantize_iq4_nl(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                         const float *imatrix)
{
    if (!qq_valid(nrows, n_per_row, QK4_NL))
        return 0;
    const int64_t nb = n_per_row / QK4_NL;
    const int64_t row_size = nb * (int64_t)sizeof(block_iq4_nl);
    uint8_t *out = dst;
    for (int64_t r = 0; r < nrows; r++) {
        const float *x = src + r * n_per_row;
        uint8_t *orow = out + r * row_size;
        for (int64_t ib = 0; ib < nb; ib++)
            qq_iq4_nl_block(x + ib * QK4_NL, imatrix ? imatrix + ib * QK4_NL : NULL,
                            orow + ib * (int64_t)sizeof(block_iq4_nl));
    }
    return (size_t)(nrows * row_size);
}
