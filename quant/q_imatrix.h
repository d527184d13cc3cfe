/* q_imatrix.h — llama.cpp importance matrices, both formats.
 *
 * Legacy .dat: int32 n_entries, then per entry: int32 name length, name bytes,
 * int32 ncall, int32 nval, nval float32 values (Σx² averaged over calls as
 * llama.cpp stores it), and optionally at the end int32 last_chunk + int32 length +
 * dataset name. GGUF imatrix (general.type = "imatrix"): per tensor NAME.in_sum2
 * (F32, [nval, n_mat]) and NAME.counts (F32, [1, n_mat]); the importance is
 * in_sum2 / counts. Both readers validate every length against the file and
 * report "FILE: offset N: problem" (Q_EDATA). */
#ifndef Q_IMATRIX_H
#define Q_IMATRIX_H

#include <stdint.h>

#include "q_status.h"

typedef struct q_imatrix_entry {
    char *name;      /* tensor name as llama.cpp wrote it (GGUF names), owned */
    int64_t n;       /* values per matrix (= the tensor's row length) */
    int64_t n_mat;   /* matrices (experts); 1 for dense tensors */
    float *values;   /* n × n_mat importance weights, owned; mean of x² per column */
    int64_t ncall;   /* calls/chunks the statistics were gathered over */
} q_imatrix_entry;

typedef struct q_imatrix {
    int64_t n_entries;
    q_imatrix_entry *entries;
    int64_t chunk_count; /* chunks (GGUF) or last chunk (.dat), 0 if unknown */
    char *dataset;       /* owned, may be NULL */
    char *path;          /* owned */
} q_imatrix;

/* Reads either format (detected by the GGUF magic). Q_ENOINPUT when the file
 * cannot be opened, Q_EDATA for malformed content. Free with q_imatrix_free. */
q_status q_imatrix_load(const char *path, q_imatrix **out, q_err *err);
void q_imatrix_free(q_imatrix *im);

/* The entry for a tensor (GGUF name), or NULL. */
const q_imatrix_entry *q_imatrix_find(const q_imatrix *im, const char *name);

#endif
