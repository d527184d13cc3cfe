/* q_st.h — safetensors reader (validating, zero-copy) and Hugging Face
 * checkpoint helpers (config.json, model.safetensors.index.json), on jansson.
 *
 * A safetensors file is: u64 little-endian header length N, N bytes of JSON
 * object {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {..}},
 * then the byte buffer that the offsets index. Everything is checked: header
 * length against the file and a 100 MB cap, JSON syntax (line/column in the
 * message), duplicate keys, known dtypes, shape × dtype size == byte span,
 * offsets inside the buffer without gaps or overlaps, no trailing bytes.
 */
#ifndef Q_ST_H
#define Q_ST_H

#include <stdbool.h>
#include <stdint.h>

#include "q_arch.h"
#include "q_status.h"

#define Q_ST_MAX_HEADER (100u * 1000u * 1000u)
#define Q_ST_MAX_DIMS 8

typedef struct q_st_tensor {
    char *name;                /* owned, NUL-terminated */
    uint32_t dtype;            /* q_dtype id (F32, F16, BF16, I8, ..., U8, F8_E4M3, ...) */
    uint32_t n_dims;           /* 0..Q_ST_MAX_DIMS; 0 is a scalar */
    int64_t shape[Q_ST_MAX_DIMS]; /* safetensors order: shape[n_dims-1] is the row length */
    uint64_t begin, end;       /* offsets within the data buffer */
    uint64_t abs_offset;       /* offset within the file */
    const uint8_t *data;       /* borrowed from the caller's buffer */
} q_st_tensor;

typedef struct q_st {
    uint64_t n_tensors;
    q_st_tensor *tensors; /* owned, in file order of data offsets */
    uint64_t header_len;
    uint64_t data_offset; /* 8 + header_len */
} q_st;

/* Parses one safetensors image buf[0..size). fname is used in messages. On
 * failure Q_EDATA with "FILE: ..." naming the byte offset or the JSON
 * line:column and the problem. Free with q_st_free. Never crashes. */
q_status q_st_parse(const uint8_t *buf, uint64_t size, const char *fname, q_st **out,
                    q_err *err);
void q_st_free(q_st *st);


/* Parses a config.json text (len bytes). fname for messages. Q_EDATA with
 * line:column on non-JSON, a non-object or wrongly typed known fields. Maps
 * model_type/architectures to arch->name ("LlamaForCausalLM" -> "llama"). */
q_status q_hf_parse_config(const char *text, size_t len, const char *fname, q_arch *arch,
                           q_err *err);

/* model.safetensors.index.json: the list of distinct shard file names (in
 * order of first appearance) and, for every tensor, which shard holds it. */
typedef struct q_hf_index {
    uint64_t n_files;
    char **files; /* owned; relative names as written in the index */
    uint64_t n_entries;
    char **names;     /* owned tensor names */
    uint32_t *file_of; /* index into files for each entry */
} q_hf_index;

/* Parses an index text. Q_EDATA (with line:column or the offending key) on bad
 * JSON, a missing weight_map, a non-string file name, a name with '/' or "..". */
q_status q_hf_parse_index(const char *text, size_t len, const char *fname, q_hf_index **out,
                          q_err *err);
void q_hf_index_free(q_hf_index *ix);

#endif
