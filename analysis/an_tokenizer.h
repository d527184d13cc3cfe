/* an_tokenizer.h — tokenizers for calibration text.
 *
 * Two kinds, read from GGUF metadata (tokenizer.ggml.*) or a Hugging Face
 * tokenizer.json:
 *  - SentencePiece style (tokenizer.ggml.model "llama"): spaces become "▁", a "▁" is
 *    prepended, adjacent symbols are merged greedily by the score of the merged piece
 *    (highest first, leftmost on ties), pieces missing from the vocabulary fall back
 *    to byte tokens <0xNN> (or unknown). A tokenizer.json of model type BPE with a
 *    "▁" normalizer (llama HF) is handled the same way, merges ranked by their order.
 *  - byte-level BPE (tokenizer.ggml.model "gpt2", or a tokenizer.json with a ByteLevel
 *    pre-tokenizer): bytes map to printable code points (GPT-2's byte-to-unicode table),
 *    merges apply by rank. Pre-tokenization is a simple regex-free splitter, close to
 *    GPT-2's pattern: contractions ('s 't 're 've 'm 'll 'd), an optional space followed
 *    by a run of letters, of digits or of other non-space bytes, and whitespace runs
 *    (a run followed by a word leaves its last space to the word). Bytes >= 0x80 count
 *    as letters. It is not Llama-3's or Qwen's exact pattern: token ids can differ from
 *    theirs on digits and unusual punctuation; calibration statistics hardly do.
 */
#ifndef AN_TOKENIZER_H
#define AN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "q_gguf.h"
#include "q_status.h"

typedef enum an_tok_kind { AN_TOK_SPM, AN_TOK_BPE } an_tok_kind;

typedef struct an_tok an_tok;

/* Builds a tokenizer from a GGUF's metadata (tokenizer.ggml.model, tokens, scores,
 * token_type, merges, bos/eos ids). fname is for messages. Q_EDATA when the keys are
 * missing or malformed (message names the key), Q_EUSAGE for a tokenizer model other
 * than llama / gpt2, Q_ENOMEM. */
q_status an_tok_from_gguf(const q_gguf *g, const char *fname, an_tok **out, q_err *err);

/* Builds a tokenizer from a Hugging Face tokenizer.json (model type BPE). Q_ENOINPUT when
 * the file cannot be read, Q_EDATA with "FILE:LINE:COLUMN: problem" for bad JSON or a
 * missing field, Q_EUSAGE for a model type other than BPE. */
q_status an_tok_from_json(const char *path, an_tok **out, q_err *err);
void an_tok_free(an_tok *tk);

an_tok_kind an_tok_get_kind(const an_tok *tk);
int32_t an_tok_n_vocab(const an_tok *tk);
int32_t an_tok_bos(const an_tok *tk); /* -1 when none */
int32_t an_tok_eos(const an_tok *tk); /* -1 when none */

/* Token id of an exact piece (vocabulary string), or -1. */
int32_t an_tok_find(const an_tok *tk, const char *piece, size_t len);

/* Tokenizes text[0..len) (UTF-8; invalid bytes go through byte fallback). With add_bos
 * and a BOS id, the first id is BOS. *ids receives a malloc'ed array (caller frees) of
 * *n ids. Q_ENOMEM. */
q_status an_tok_encode(const an_tok *tk, const char *text, size_t len, bool add_bos,
                       int32_t **ids, int64_t *n, q_err *err);

/* Appends the text of token id to buf (NUL-terminated, truncated to cap): SPM "▁" become
 * spaces and <0xNN> the byte; BPE pieces are mapped back to bytes. Control tokens (BOS,
 * EOS) give "". Returns the number of bytes written (without the NUL). */
size_t an_tok_decode(const an_tok *tk, int32_t id, char *buf, size_t cap);

#endif
