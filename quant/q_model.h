/* q_model.h — the model store: one catalog for GGUF files, single safetensors
 * files and Hugging Face directories (plain or sharded).
 *
 * q_model_open memory-maps every file, validates it (q_gguf / q_st) and builds a
 * catalog in which GGUF and HF names look the same to the rest of qtune: each
 * tensor has its stored name, its GGUF-style name, a role and a block index,
 * and a logical shape rows × cols where cols is the row length (the contiguous
 * dimension: GGUF ne[0], safetensors shape[-1]). Tensor data stay in the maps;
 * q_tensor_read_rows dequantizes rows to f32 on demand.
 */
#ifndef Q_MODEL_H
#define Q_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "q_arch.h"
#include "q_gguf.h"
#include "q_io.h"
#include "q_status.h"

/* X(enum, name) */
#define Q_ROLE_LIST(X)          \
    X(Q_ROLE_EMBED, "embed")    \
    X(Q_ROLE_ATTN_Q, "attn_q")  \
    X(Q_ROLE_ATTN_K, "attn_k")  \
    X(Q_ROLE_ATTN_V, "attn_v")  \
    X(Q_ROLE_ATTN_O, "attn_o")  \
    X(Q_ROLE_FFN_GATE, "ffn_gate") \
    X(Q_ROLE_FFN_UP, "ffn_up")  \
    X(Q_ROLE_FFN_DOWN, "ffn_down") \
    X(Q_ROLE_NORM, "norm")      \
    X(Q_ROLE_OUTPUT, "output")  \
    X(Q_ROLE_OTHER, "other")

typedef enum q_role {
#define Q_ROLE_ENUM(e, name) e,
    Q_ROLE_LIST(Q_ROLE_ENUM)
#undef Q_ROLE_ENUM
        Q_ROLE_COUNT
} q_role;

const char *q_role_name(q_role r);

typedef enum q_model_kind { Q_MODEL_GGUF, Q_MODEL_SAFETENSORS, Q_MODEL_HF_DIR } q_model_kind;

typedef struct q_tensor {
    char *name;      /* as stored (owned) */
    char *gguf_name; /* GGUF-style name, e.g. "blk.3.attn_q.weight" (owned) */
    q_role role;
    int block;       /* transformer block index, -1 for none */
    uint32_t n_dims;
    int64_t ne[4];   /* ggml order: ne[0] = cols; unused = 1 */
    int64_t rows, cols;
    uint32_t dtype;  /* q_dtype id */
    int64_t params;
    uint64_t bytes;
    const uint8_t *data; /* borrowed from the map; NULL for an unsupported type */
    uint64_t offset;     /* absolute file offset of the data */
    int file;            /* index into the model's files */
    bool readable;       /* q_tensor_read_rows works */
} q_tensor;

typedef struct q_model {
    q_model_kind kind;
    char *path; /* as given (owned) */
    q_arch arch;
    uint64_t n_tensors;
    q_tensor *tensors; /* owned, in storage order */
    int n_files;
    char **file_paths; /* owned */
    q_map *maps;       /* owned, one per file */
    uint64_t file_size; /* bytes of all files together */
    q_gguf *gguf;       /* parsed header when kind == Q_MODEL_GGUF, else NULL */
    uint32_t file_type; /* GGUF general.file_type, or UINT32_MAX when absent */
} q_model;

/* Opens path: a .gguf file, a .safetensors file, or a directory holding
 * config.json plus model.safetensors or model.safetensors.index.json with its
 * shards. Returns Q_ENOINPUT when a file cannot be opened, Q_EDATA with a
 * message "FILE: offset N: problem" (or line:column for JSON) when the content
 * is malformed. On success *out is owned by the caller (q_model_close). */
q_status q_model_open(const char *path, q_model **out, q_err *err);
void q_model_close(q_model *m);

/* Index of the tensor whose stored or GGUF-style name equals name, or -1. */
int64_t q_model_find(const q_model *m, const char *name);

/* Total parameters of all tensors. */
int64_t q_model_params(const q_model *m);

/* Dequantizes rows [row0, row0 + nrows) of t into dst (nrows × cols floats).
 * Q_EUSAGE when the range is out of bounds or the type is not readable. Thread
 * safe: many threads may read different rows of one tensor at once. */
q_status q_tensor_read_rows(const q_tensor *t, int64_t row0, int64_t nrows, float *dst,
                            q_err *err);

/* Drops the pages of t's data from this process's resident set (the file stays
 * in the page cache; a later read maps them again). Keeps RSS bounded while a
 * large model is streamed. Only for tensors of a q_model (file mappings): on
 * anonymous memory it would discard the data. The caller must not be reading t
 * at the same time. */
void q_tensor_release(const q_tensor *t);

/* q_tensor_release for tensors read one after another in file order: releases
 * from *done (0 at first: t's first whole page) up to the last 2 MiB boundary
 * inside t (its last page when last), and moves *done there. The span around
 * a boundary shared with the next tensor waits for that tensor, so every
 * release covers whole 2 MiB spans: no huge-page mapping of the file is split
 * (a split costs the unmap of 512 small ones). A tensor out of order is
 * released as by q_tensor_release. */
void q_tensor_release_seq(const q_tensor *t, bool last, uintptr_t *done);

/* A background reader for streaming a model tensor by tensor: while the caller
 * works on one tensor, a thread brings the first cap bytes of the next into
 * memory through the mapping (MADV_POPULATE_READ: the fault path, so the
 * MADV_HUGEPAGE mapping reads from disk in 2 MiB folios, which later runs map
 * cheaply; MADV_WILLNEED's readahead would leave 4 KiB pages). A new request
 * replaces one not yet finished. A tensor whose first, middle and last pages
 * are already in the page cache is left to the readers' own faults (mincore).
 * Falls back to a WILLNEED hint where the kernel lacks MADV_POPULATE_READ
 * (before Linux 5.14), and to nothing when no thread can be started. */
typedef struct q_prefetch q_prefetch;
q_prefetch *q_prefetch_start(uint64_t cap);
void q_prefetch_tensor(q_prefetch *p, const q_tensor *t);
/* Waits for the thread (it stops between steps of a few MiB) and frees p. */
void q_prefetch_stop(q_prefetch *p);

/* Maps a tensor name of either convention to its GGUF-style name, role and
 * block. Returns false (role OTHER, block -1, name copied) for names it does not
 * know. gguf_name receives at most cap bytes, NUL-terminated. */
bool q_name_map(const char *name, char *gguf_name, size_t cap, q_role *role, int *block);

#endif
