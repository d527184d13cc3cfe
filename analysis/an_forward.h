/* an_forward.h — a CPU forward pass for the llama family (llama, llama2/3, tinyllama,
 * mistral-style GQA), batched over a prompt of T tokens.
 *
 * RMSNorm, RoPE (GGUF models: adjacent pairs, llama.cpp's "normal" rope; safetensors /
 * HF directories: rotate-half, q/k rows in HF order), grouped-query attention with a
 * causal mask, SwiGLU FFN, tied or separate output. Matrix products go through
 * OpenBLAS (an_blas.h, loaded by an_fwd_open); weights are dequantized to f32
 * (q_tensor_read_rows) when used: all of them once when their f32 size fits the cache
 * budget, otherwise one tensor at a time into a reusable buffer, so a large model never
 * sits in memory as f32. No KV cache: every call evaluates the whole prompt from
 * position 0.
 *
 * Hooks: a weight hook may replace each dequantized weight (e.g. by its fake-quantized
 * version); a capture hook sees the input of every linear layer.
 */
#ifndef AN_FORWARD_H
#define AN_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "q_model.h"
#include "q_status.h"

/* Inputs of linear layers. q/k/v share ATTN_IN; gate/up share FFN_IN. */
typedef enum an_site {
    AN_SITE_ATTN_IN,  /* (T, dim)   → attn_q, attn_k, attn_v */
    AN_SITE_ATTN_OUT, /* (T, n_head*head_dim) → attn_output */
    AN_SITE_FFN_IN,   /* (T, dim)   → ffn_gate, ffn_up */
    AN_SITE_FFN_DOWN, /* (T, n_ff)  → ffn_down */
    AN_SITE_OUTPUT,   /* (T, dim)   → output (layer -1) */
    AN_SITE_COUNT
} an_site;

/* Model hyper-parameters the pass uses (from the model's q_arch and shapes). */
typedef struct an_config {
    int64_t n_layer, dim, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_rot, n_ctx;
    double rope_theta, norm_eps;
    bool rope_hf;   /* rotate-half (HF order) instead of adjacent pairs */
    bool tied;      /* output uses token_embd */
} an_config;

/* Called once per weight matrix after dequantization: may overwrite w (rows × cols,
 * row-major, f32) in place. Return Q_OK, or a failure that aborts the pass. */
typedef q_status (*an_weight_hook)(void *user, const q_tensor *t, float *w, q_err *err);
/* Called with the input x (T × n, row-major) of the linear layers at site of block
 * layer (-1 for AN_SITE_OUTPUT). x is valid only during the call. */
typedef void (*an_capture_hook)(void *user, int layer, an_site site, const float *x, int64_t T,
                                int64_t n);

typedef struct an_fwd an_fwd;

/* Prepares a forward pass over m (borrowed: m must outlive the pass). cache_bytes is
 * the budget for keeping dequantized f32 weights between calls (0: never cache; a
 * negative value: default 256 MiB). Q_EDATA when m is not a llama-like model (missing
 * tensors, inconsistent shapes, unreadable types), with a message naming the tensor;
 * Q_ENOMEM. Free with an_fwd_free. */
q_status an_fwd_open(const q_model *m, int64_t cache_bytes, an_fwd **out, q_err *err);
void an_fwd_free(an_fwd *f);

/* The configuration derived at open (borrowed). */
const an_config *an_fwd_config(const an_fwd *f);

/* Installs hooks (either may be NULL). Changing the weight hook drops cached weights. */
void an_fwd_set_hooks(an_fwd *f, an_weight_hook wh, an_capture_hook ch, void *user);

/* Evaluates tokens[0..T) (positions 0..T-1). logits receives T × n_vocab floats, or only
 * the last position's n_vocab when last_only; logits may be NULL (capture only).
 * Q_EUSAGE for T < 1 or a token id outside the vocabulary; errors of the hook or of
 * reading weights are passed on. */
q_status an_fwd_eval(an_fwd *f, const int32_t *tokens, int64_t T, float *logits, bool last_only,
                     q_err *err);

/* Greedy decoding: starting from prompt[0..n_prompt), appends argmax tokens until out
 * holds max_tokens ids (prompt included) or eos is produced (eos is not stored; pass
 * -1 for none). *n_out receives the count. Recomputes the prefix each step. */
q_status an_fwd_greedy(an_fwd *f, const int32_t *prompt, int64_t n_prompt, int32_t eos,
                       int32_t *out, int64_t max_tokens, int64_t *n_out, q_err *err);

/* Sets n OpenMP threads for the calling process and OpenBLAS to one thread (even
 * where OPENBLAS_NUM_THREADS says otherwise): the pass then splits its matrix
 * products and attention heads over OpenMP itself, so only one thread pool runs
 * (an_blas.h). n < 1: no-op. */
void an_set_threads(int n);

#endif
