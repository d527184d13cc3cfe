/* q_dtype.h — element types of stored tensors and their traits.
 *
 * Type ids below 1000 are ggml's own type ids (the numbers GGUF files store);
 * ids from 1000 on are safetensors-only element types with no ggml id.
 * One table (q_dtype_traits) gives every known type its name, block size,
 * bytes per block and, where qtune can read it, a row dequantizer to f32.
 * Types that are known but not readable (i-quants, ternary, ...) still have a
 * correct block size and byte size, so files holding them can be validated and
 * listed with an "unsupported type" note.
 */
#ifndef Q_DTYPE_H
#define Q_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* X(enum, id, name, block size in elements, bytes per block) */
#define Q_DTYPE_LIST(X)                   \
    X(Q_DT_F32, 0, "F32", 1, 4)           \
    X(Q_DT_F16, 1, "F16", 1, 2)           \
    X(Q_DT_Q4_0, 2, "Q4_0", 32, 18)       \
    X(Q_DT_Q4_1, 3, "Q4_1", 32, 20)       \
    X(Q_DT_Q5_0, 6, "Q5_0", 32, 22)       \
    X(Q_DT_Q5_1, 7, "Q5_1", 32, 24)       \
    X(Q_DT_Q8_0, 8, "Q8_0", 32, 34)       \
    X(Q_DT_Q8_1, 9, "Q8_1", 32, 36)       \
    X(Q_DT_Q2_K, 10, "Q2_K", 256, 84)     \
    X(Q_DT_Q3_K, 11, "Q3_K", 256, 110)    \
    X(Q_DT_Q4_K, 12, "Q4_K", 256, 144)    \
    X(Q_DT_Q5_K, 13, "Q5_K", 256, 176)    \
    X(Q_DT_Q6_K, 14, "Q6_K", 256, 210)    \
    X(Q_DT_Q8_K, 15, "Q8_K", 256, 292)    \
    X(Q_DT_IQ2_XXS, 16, "IQ2_XXS", 256, 66) \
    X(Q_DT_IQ2_XS, 17, "IQ2_XS", 256, 74) \
    X(Q_DT_IQ3_XXS, 18, "IQ3_XXS", 256, 98) \
    X(Q_DT_IQ1_S, 19, "IQ1_S", 256, 50)   \
    X(Q_DT_IQ4_NL, 20, "IQ4_NL", 32, 18)  \
    X(Q_DT_IQ3_S, 21, "IQ3_S", 256, 110)  \
    X(Q_DT_IQ2_S, 22, "IQ2_S", 256, 82)   \
    X(Q_DT_IQ4_XS, 23, "IQ4_XS", 256, 136) \
    X(Q_DT_I8, 24, "I8", 1, 1)            \
    X(Q_DT_I16, 25, "I16", 1, 2)          \
    X(Q_DT_I32, 26, "I32", 1, 4)          \
    X(Q_DT_I64, 27, "I64", 1, 8)          \
    X(Q_DT_F64, 28, "F64", 1, 8)          \
    X(Q_DT_IQ1_M, 29, "IQ1_M", 256, 56)   \
    X(Q_DT_BF16, 30, "BF16", 1, 2)        \
    X(Q_DT_TQ1_0, 34, "TQ1_0", 256, 54)   \
    X(Q_DT_TQ2_0, 35, "TQ2_0", 256, 66)   \
    X(Q_DT_MXFP4, 39, "MXFP4", 32, 17)    \
    X(Q_DT_U8, 1000, "U8", 1, 1)          \
    X(Q_DT_BOOL, 1001, "BOOL", 1, 1)      \
    X(Q_DT_F8_E4M3, 1002, "F8_E4M3", 1, 1) \
    X(Q_DT_F8_E5M2, 1003, "F8_E5M2", 1, 1) \
    X(Q_DT_U16, 1004, "U16", 1, 2)        \
    X(Q_DT_U32, 1005, "U32", 1, 4)        \
    X(Q_DT_U64, 1006, "U64", 1, 8)

typedef enum q_dtype {
#define Q_DTYPE_ENUM(e, id, name, blck, size) e = id,
    Q_DTYPE_LIST(Q_DTYPE_ENUM)
#undef Q_DTYPE_ENUM
} q_dtype;

/* Dequantize n elements (n a multiple of the block size) starting at src. */
typedef void (*q_dequant_fn)(const void *src, float *dst, int64_t n);

typedef struct q_dtype_traits {
    q_dtype id;
    const char *name;       /* "Q4_K"; safetensors spelling for ids >= 1000 */
    int64_t blck;           /* elements per block */
    size_t size;            /* bytes per block */
    q_dequant_fn dequant;   /* fastest available; NULL when qtune cannot read this type */
    q_dequant_fn dequant_ref; /* the scalar reference (equal to dequant until replaced) */
} q_dtype_traits;

/* Traits of a type id, or NULL for an id that is not in the table. */
const q_dtype_traits *q_dtype_get(uint32_t id);

/* Used by kernels/ at start-up, before any reader runs, to install a faster
 * dequantizer for a readable type; it must give the reference's values bit for
 * bit. NULL restores the reference. */
void q_dtype_set_fast_dequant(uint32_t id, q_dequant_fn fn);

/* Name of a type ("Q4_K"), or "?" for unknown ids. Never NULL. */
const char *q_dtype_name(uint32_t id);

/* Type id for a name, case-insensitive ("f16", "Q4_K", "BF16"); -1 if unknown. */
int q_dtype_from_name(const char *name);

/* True when q_dtype_get(id)->dequant exists. */
bool q_dtype_readable(uint32_t id);

/* Bytes taken by n elements of type id; 0 when id is unknown, when n is not a
 * multiple of the block size, or on overflow. */
uint64_t q_dtype_bytes(uint32_t id, int64_t n);

/* Scalar conversions (round to nearest even on narrowing; NaN stays NaN). */
float q_f16_to_f32(uint16_t h);
uint16_t q_f32_to_f16(float f);
float q_bf16_to_f32(uint16_t h);
uint16_t q_f32_to_bf16(float f);

#endif
