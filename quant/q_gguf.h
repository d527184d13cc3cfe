/* q_gguf.h — GGUF v2/v3 reader (validating, zero-copy) and streaming writer.
 *
 * The reader parses a GGUF image that lives in memory (normally a q_map of the
 * file) and never trusts a byte of it: every length, count, offset and type is
 * checked against the buffer before use, so any input gives either a valid
 * q_gguf or Q_EDATA with a message "FILE: offset N: what is wrong". Strings and
 * tensor data point into the caller's buffer (borrowed, valid while it is).
 *
 * The writer streams: declare metadata and tensors, write the header, then the
 * tensor data in declaration order (each padded to the alignment).
 */
#ifndef Q_GGUF_H
#define Q_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "q_status.h"

#define Q_GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define Q_GGUF_DEFAULT_ALIGNMENT 32
#define Q_GGUF_MAX_DIMS 4

/* GGUF metadata value types (the numbers the file stores). */
typedef enum q_gguf_vtype {
    Q_GGUF_U8 = 0,
    Q_GGUF_I8 = 1,
    Q_GGUF_U16 = 2,
    Q_GGUF_I16 = 3,
    Q_GGUF_U32 = 4,
    Q_GGUF_I32 = 5,
    Q_GGUF_F32 = 6,
    Q_GGUF_BOOL = 7,
    Q_GGUF_STRING = 8,
    Q_GGUF_ARRAY = 9,
    Q_GGUF_U64 = 10,
    Q_GGUF_I64 = 11,
    Q_GGUF_F64 = 12,
    Q_GGUF_VTYPE_COUNT
} q_gguf_vtype;

/* A string inside the buffer: NOT NUL-terminated. */
typedef struct q_gguf_str {
    const char *ptr;
    uint64_t len;
} q_gguf_str;

typedef struct q_gguf_kv {
    q_gguf_str key;
    q_gguf_vtype type;
    /* For scalars: the value, widened. For strings: str. For arrays: arr_type,
     * arr_n and arr_data (raw little-endian elements for scalar arrays; for an
     * array of strings arr_data points at the first length prefix). */
    union {
        uint64_t u64;
        int64_t i64;
        double f64;
        bool b;
        q_gguf_str str;
    } v;
    q_gguf_vtype arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;
    uint64_t offset; /* file offset of the key, for messages and copying */
    uint64_t end;    /* file offset just past the value */
} q_gguf_kv;

typedef struct q_gguf_tensor {
    q_gguf_str name;
    uint32_t n_dims;
    int64_t ne[Q_GGUF_MAX_DIMS]; /* ne[0] = row length (cols); unused dims = 1 */
    uint32_t type;               /* ggml type id (see q_dtype.h); may be unknown */
    uint64_t rel_offset;         /* offset within the data section */
    uint64_t abs_offset;         /* offset within the file */
    uint64_t nbytes;             /* 0 when the type is unknown */
    const uint8_t *data;         /* borrowed; NULL when the type is unknown */
} q_gguf_tensor;

typedef struct q_gguf {
    uint32_t version;
    uint64_t n_kv;
    q_gguf_kv *kv; /* owned array of n_kv */
    uint64_t n_tensors;
    q_gguf_tensor *tensors; /* owned array of n_tensors */
    uint32_t alignment;
    uint64_t data_offset; /* file offset of the data section */
    const uint8_t *base;  /* borrowed buffer */
    uint64_t size;
} q_gguf;

/* Parses buf[0..size). fname is used only in messages. On success *out is a
 * new q_gguf (free with q_gguf_free) borrowing buf. On failure Q_EDATA and a
 * message naming fname, the byte offset and the problem. Tensors of an unknown
 * type id are accepted (nbytes 0, data NULL); their offsets are still checked
 * (aligned, inside the file, not overlapping). Never crashes on any input. */
q_status q_gguf_parse(const uint8_t *buf, uint64_t size, const char *fname, q_gguf **out,
                      q_err *err);
void q_gguf_free(q_gguf *g);

/* Index of key, or -1. */
int64_t q_gguf_find(const q_gguf *g, const char *key);
/* Integer value of a scalar integer or bool key (any width); false if missing or
 * not an integer. */
bool q_gguf_get_int(const q_gguf *g, const char *key, int64_t *out);
/* Floating or integer scalar as double. */
bool q_gguf_get_f64(const q_gguf *g, const char *key, double *out);
/* String value copied into dst (truncated, NUL-terminated). */
bool q_gguf_get_str(const q_gguf *g, const char *key, char *dst, size_t dstlen);
/* Index of a tensor by name, or -1. */
int64_t q_gguf_find_tensor(const q_gguf *g, const char *name);
/* i-th string of a string-array kv (borrowed). false if out of range / wrong type. */
bool q_gguf_arr_str(const q_gguf_kv *kv, uint64_t i, q_gguf_str *out);
/* Bytes of one element of a scalar value type, 0 for STRING/ARRAY/unknown. */
size_t q_gguf_vtype_size(uint32_t t);
const char *q_gguf_vtype_name(uint32_t t);

/* ---- writer ---- */

typedef struct q_gguf_w q_gguf_w;

/* New writer for GGUF v3 with the given alignment (0 = default 32). NULL on OOM.
 * An alignment that is not a power of two is refused by q_gguf_w_write_header.
 * The writer owns general.alignment: it writes the key only when the alignment
 * is not 32, and replaces any value set or copied in. */
q_gguf_w *q_gguf_w_new(uint32_t alignment);
void q_gguf_w_free(q_gguf_w *w);

/* Metadata. Keys must be unique; adding an existing key replaces its value.
 * Return Q_OK, Q_ENOMEM, or Q_EUSAGE (bad key). */
q_status q_gguf_w_set_u32(q_gguf_w *w, const char *key, uint32_t v);
q_status q_gguf_w_set_i32(q_gguf_w *w, const char *key, int32_t v);
q_status q_gguf_w_set_u64(q_gguf_w *w, const char *key, uint64_t v);
q_status q_gguf_w_set_f32(q_gguf_w *w, const char *key, float v);
q_status q_gguf_w_set_bool(q_gguf_w *w, const char *key, bool v);
q_status q_gguf_w_set_str(q_gguf_w *w, const char *key, const char *v);
/* Arrays: elements are copied. */
q_status q_gguf_w_set_arr_str(q_gguf_w *w, const char *key, const char *const *v, size_t n);
q_status q_gguf_w_set_arr_f32(q_gguf_w *w, const char *key, const float *v, size_t n);
q_status q_gguf_w_set_arr_i32(q_gguf_w *w, const char *key, const int32_t *v, size_t n);
/* Copies key/value kv of a parsed file verbatim (any type, arrays included). */
q_status q_gguf_w_copy_kv(q_gguf_w *w, const q_gguf_kv *kv);
/* Removes a key if present. */
void q_gguf_w_del(q_gguf_w *w, const char *key);

/* Declares a tensor; data is written later in the same order. ne[0] is the row
 * length. Q_EUSAGE on an unknown type, a duplicate name, n_dims out of 1..4 or a
 * row length that is not a multiple of the type's block size. */
q_status q_gguf_w_add_tensor(q_gguf_w *w, const char *name, uint32_t n_dims,
                             const int64_t *ne, uint32_t type);

/* Writes header, metadata and tensor infos, padded to the alignment. */
q_status q_gguf_w_write_header(q_gguf_w *w, FILE *fp, q_err *err);
/* Writes part of the data of the next tensor. Calls for one tensor must add up
 * to exactly its byte size; the writer pads when a tensor is complete. */
q_status q_gguf_w_write_data(q_gguf_w *w, FILE *fp, const void *data, size_t n, q_err *err);
/* Checks every declared tensor was written completely. */
q_status q_gguf_w_finish(q_gguf_w *w, q_err *err);

#endif
