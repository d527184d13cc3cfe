/* q_blocks.h — ggml's quantized block layouts, byte for byte.
 *
 * Each struct is one block as ggml stores it in a GGUF tensor (ggml-common.h):
 * halves (ggml_half) are IEEE binary16 bit patterns kept as uint16_t, stored
 * little-endian in the file; no struct has padding, and a _Static_assert pins
 * each size to ggml's. Tensor data may sit at any byte offset in a file, so
 * code that reads untrusted or possibly unaligned blocks should copy fields out
 * by offsetof() rather than dereference a cast pointer.
 *
 * Conventions shared by the 32-element formats: the low nibbles of qs[j] hold
 * elements j (0..15) and the high nibbles elements j + 16; qh bit j (read as a
 * little-endian uint32) is the fifth bit of element j.
 */
#ifndef Q_BLOCKS_H
#define Q_BLOCKS_H

#include <stdint.h>

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK4_NL 32
#define QK_MXFP4 32
#define QK_K 256         /* super-block size of the k-quants */
#define K_SCALE_SIZE 12  /* bytes of packed 6-bit scales/mins in Q4_K and Q5_K */

/* Q4_0: x = d * (q - 8), q in 0..15. */
typedef struct block_q4_0 {
    uint16_t d;              /* f16 scale */
    uint8_t qs[QK4_0 / 2];   /* nibbles */
} block_q4_0;
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must be 18 bytes");

/* Q4_1: x = d * q + m, q in 0..15. */
typedef struct block_q4_1 {
    uint16_t d;              /* f16 scale */
    uint16_t m;              /* f16 minimum */
    uint8_t qs[QK4_1 / 2];
} block_q4_1;
_Static_assert(sizeof(block_q4_1) == 20, "block_q4_1 must be 20 bytes");

/* Q5_0: x = d * (q - 16), q in 0..31. */
typedef struct block_q5_0 {
    uint16_t d;
    uint8_t qh[4];           /* fifth bits, little-endian uint32 */
    uint8_t qs[QK5_0 / 2];   /* low four bits */
} block_q5_0;
_Static_assert(sizeof(block_q5_0) == 22, "block_q5_0 must be 22 bytes");

/* Q5_1: x = d * q + m, q in 0..31. */
typedef struct block_q5_1 {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;
_Static_assert(sizeof(block_q5_1) == 24, "block_q5_1 must be 24 bytes");

/* Q8_0: x = d * q, q in -128..127. */
typedef struct block_q8_0 {
    uint16_t d;
    int8_t qs[QK8_0];
} block_q8_0;
_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must be 34 bytes");

/* Q8_1 (dot-product operand): as Q8_0 plus s = d * sum(qs), both f16. */
typedef struct block_q8_1 {
    uint16_t d;
    uint16_t s;
    int8_t qs[QK8_1];
} block_q8_1;
_Static_assert(sizeof(block_q8_1) == 36, "block_q8_1 must be 36 bytes");

/* MXFP4: 32 e2m1 nibbles sharing one e8m0 exponent. */
typedef struct block_mxfp4 {
    uint8_t e;
    uint8_t qs[QK_MXFP4 / 2];
} block_mxfp4;
_Static_assert(sizeof(block_mxfp4) == 17, "block_mxfp4 must be 17 bytes");

/* Q2_K: 16 sub-blocks of 16; x = d * (sc & 15) * q - dmin * (sc >> 4), q in 0..3.
 * qs: four 2-bit planes of 32 bytes per 128 elements. */
typedef struct block_q2_K {
    uint8_t scales[QK_K / 16];  /* 4-bit scale (low) and 4-bit min (high) */
    uint8_t qs[QK_K / 4];
    uint16_t d;                 /* f16 super-block scale of the scales */
    uint16_t dmin;              /* f16 super-block scale of the mins */
} block_q2_K;
_Static_assert(sizeof(block_q2_K) == 84, "block_q2_K must be 84 bytes");

/* Q3_K: 16 sub-blocks of 16; x = d * (sc - 32) * (q - (hbit ? 0 : 4)), q in 0..3.
 * scales: 16 packed 6-bit values (low nibbles in bytes 0..7, high pairs in 8..11). */
typedef struct block_q3_K {
    uint8_t hmask[QK_K / 8];    /* high bit of each element */
    uint8_t qs[QK_K / 4];       /* low two bits */
    uint8_t scales[12];
    uint16_t d;
} block_q3_K;
_Static_assert(sizeof(block_q3_K) == 110, "block_q3_K must be 110 bytes");

/* Q4_K: 8 sub-blocks of 32; x = d * sc * q - dmin * m, 6-bit sc and m. */
typedef struct block_q4_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;
_Static_assert(sizeof(block_q4_K) == 144, "block_q4_K must be 144 bytes");

/* Q5_K: as Q4_K with a fifth bit per element in qh. */
typedef struct block_q5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;
_Static_assert(sizeof(block_q5_K) == 176, "block_q5_K must be 176 bytes");

/* Q6_K: 16 sub-blocks of 16; x = d * sc * (q - 32), q in 0..63, int8 sc. */
typedef struct block_q6_K {
    uint8_t ql[QK_K / 2];       /* low four bits */
    uint8_t qh[QK_K / 4];       /* high two bits */
    int8_t scales[QK_K / 16];
    uint16_t d;
} block_q6_K;
_Static_assert(sizeof(block_q6_K) == 210, "block_q6_K must be 210 bytes");

/* Q8_K (dot-product operand): f32 scale, bsums = sums of each 16 qs. */
typedef struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;
_Static_assert(sizeof(block_q8_K) == 292, "block_q8_K must be 292 bytes");

/* IQ4_NL: x = d * q_iq4nl_values[q], q in 0..15 (same nibble order as Q4_0). */
typedef struct block_iq4_nl {
    uint16_t d;
    uint8_t qs[QK4_NL / 2];
} block_iq4_nl;
_Static_assert(sizeof(block_iq4_nl) == 18, "block_iq4_nl must be 18 bytes");

/* IQ4_XS: 8 sub-blocks of 32 with 6-bit scales, same value table as IQ4_NL. */
typedef struct block_iq4_xs {
    uint16_t d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;
_Static_assert(sizeof(block_iq4_xs) == 136, "block_iq4_xs must be 136 bytes");

/* The 16 non-linear IQ4_NL / IQ4_XS levels, ascending (defined in q_dtype.c). */
extern const int8_t q_iq4nl_values[16];

#endif
