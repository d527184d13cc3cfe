/* q_quants.h — ggml quantizers, scalar references (quant/q_quants.c for the
 * 32-element formats and IQ4_NL, quant/q_kquants.c for the k-quants).
 *
 * Each function has the q_quant_fn signature (q_format.h) and behaves exactly
 * like ggml's quantize_<type>(src, dst, nrows, n_per_row, quant_weights):
 * - imatrix == NULL: the blocks are byte-identical to what ggml's reference
 *   quantizer quantize_row_<type>_ref produces (same algorithm, same rounding,
 *   same float operation order; no FMA contraction);
 * - imatrix != NULL (n_per_row weights, llama.cpp's importance matrix for this
 *   tensor): ggml's importance-weighted search (quantize_row_<type>_impl),
 *   byte-identical to ggml given the same weights.
 * src holds nrows × n_per_row floats; n_per_row is a multiple of the block size
 * (32, or QK_K = 256 for the k-quants). Returns bytes written (nrows × row size).
 * Inputs are assumed finite: callers check for NaN/Inf before quantizing.
 * Thread safe (no global state beyond read-only tables). */
#ifndef Q_QUANTS_H
#define Q_QUANTS_H

#include <stddef.h>
#include <stdint.h>

size_t q_quantize_q8_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t q_quantize_q4_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t q_quantize_q4_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t q_quantize_q5_0(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t q_quantize_q5_1(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t q_quantize_iq4_nl(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                         const float *imatrix);

size_t q_quantize_q2_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t q_quantize_q3_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t q_quantize_q4_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t q_quantize_q5_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t q_quantize_q6_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);

#endif
