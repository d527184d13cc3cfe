/* an_synth.h — synthetic llama-shaped GGUF models whose weights look real.
 *
 * an_synth_write streams a complete llama model to disk: llama.cpp's tensor
 * names and order, every metadata key llama.cpp's llama loader requires, and a
 * SentencePiece-style vocabulary with byte fallback. Weights are heavy-tailed
 * (Student-t, nu = 5) with log-normal per-row scales, a few planted outlier
 * input channels per matrix and RMS-norm weights near 1, so histograms, outlier
 * maps and quantization errors behave as they do on trained models.
 *
 * Generation is streamed (one bounded chunk of rows in memory at a time),
 * parallel over rows with OpenMP, and deterministic: every row has its own PRNG
 * stream derived from (seed, tensor index, row), so the bytes written depend on
 * the configuration only, never on the number of threads.
 */
#ifndef AN_SYNTH_H
#define AN_SYNTH_H

#include <stdint.h>

#include "q_status.h"

/* Limits enforced by an_synth_validate. */
#define AN_SYNTH_MAX_DIM (1 << 16)
#define AN_SYNTH_MAX_FF (1 << 18)
#define AN_SYNTH_MAX_LAYERS 1024
#define AN_SYNTH_MAX_VOCAB (1 << 21)
#define AN_SYNTH_MIN_VOCAB 259 /* <unk> <s> </s> + 256 byte tokens */
#define AN_SYNTH_MAX_CTX (1 << 24)
#define AN_SYNTH_MAX_BYTES (1ull << 40) /* 1 TiB of tensor data */

/* Progress: called on the calling thread between chunks with the tensor bytes
 * written so far and the total. Return non-zero to cancel (Q_ECANCELLED). */
typedef int (*an_synth_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct an_synth_cfg {
    int64_t dim;      /* embedding length (columns of most matrices) */
    int64_t layers;   /* transformer blocks */
    int64_t ff;       /* feed-forward hidden size */
    int64_t heads;    /* attention heads; dim % heads == 0, dim / heads even */
    int64_t kv_heads; /* key/value heads; heads % kv_heads == 0 */
    int64_t vocab;    /* tokens, >= AN_SYNTH_MIN_VOCAB */
    int64_t ctx;      /* llama.context_length */
    uint64_t seed;    /* everything generated follows from it */
    uint32_t dtype;   /* Q_DT_F16 or Q_DT_F32 for 2-D tensors; norms are F32 */
    an_synth_progress_fn progress; /* optional, NULL for none */
    void *progress_ctx;
} an_synth_cfg;

/* Fills *cfg with the defaults: dim 256, layers 4, ff 768, heads 8, kv_heads 4,
 * vocab 1024, ctx 2048, seed 42, dtype F16, no progress callback. */
void an_synth_defaults(an_synth_cfg *cfg);

/* Checks cfg for consistent, bounded shapes. Q_OK, or Q_EUSAGE with one line
 * naming the first problem (e.g. "dim 100 is not divisible by heads 8"). */
q_status an_synth_validate(const an_synth_cfg *cfg, q_err *err);

/* Number of parameters and bytes of tensor data (without padding or header) of
 * the model cfg describes. Both 0 when cfg does not validate. */
uint64_t an_synth_params(const an_synth_cfg *cfg);
uint64_t an_synth_data_bytes(const an_synth_cfg *cfg);

/* Validates cfg and writes the model to path atomically (temporary file beside
 * it, fsync, rename): on any failure nothing is left at path or beside it.
 * Returns Q_OK; Q_EUSAGE for a bad cfg; Q_ECANTCREAT, Q_EIO, Q_ENOMEM or
 * Q_ECANCELLED (progress callback) with a message naming path. Memory use is
 * bounded by a few MiB plus the vocabulary, whatever the model size. */
q_status an_synth_write(const an_synth_cfg *cfg, const char *path, q_err *err);

#endif
