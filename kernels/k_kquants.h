/* k_kquants.h — fast k-quant quantizers (Q2_K..Q6_K) and IQ4_NL, byte-identical
 * to the scalar references of quant/q_kquants.c and quant/q_quants.c.
 *
 * The searches run lane-parallel: each of the eight lanes of an AVX2 register
 * holds one sub-block (IQ4_NL: one block), and every lane performs exactly the
 * reference's float operations in the reference's order (no FMA, same
 * divisions, same rounding to integers), so the blocks are the same bytes, with
 * and without an importance matrix. Single-threaded and thread safe (no state):
 * callers split rows across threads. tests/test_kquants_fast.c holds them to
 * the references byte for byte.
 */
#ifndef K_KQUANTS_H
#define K_KQUANTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Installs the fast quantizers this CPU can run (AVX2 needed) through
 * q_format_set_fast; with no AVX2 (or QTUNE_NO_SIMD=1) it installs nothing and
 * the references stay. Idempotent, call once at start-up. */
void k_kquants_register(void);

/* Fast quantizers with the q_quant_fn contract (q_format.h, q_quants.h): same
 * bytes and same return value as q_quantize_<type> for the same arguments (the
 * k-quants quantize n_per_row / 256 super-blocks per row, rows n_per_row
 * floats apart); without AVX2 on this CPU they call the scalar reference. dst
 * needs no alignment. */
size_t k_quantize_q2_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t k_quantize_q3_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t k_quantize_q4_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t k_quantize_q5_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
size_t k_quantize_q6_k(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);
/* IQ4_NL: 32-element blocks; 0 unless nrows >= 0, n_per_row > 0 and a
 * multiple of 32, as q_quantize_iq4_nl. */
size_t k_quantize_iq4_nl(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                         const float *imatrix);

/* The vector forms of the references' scale quantizers, exposed for the
 * tests: the same levels and result as q_qh_make_qp and q_qh_make_qx (with
 * weights) for the same arguments, n <= 16. k_make_qp4 solves four problems
 * at once (values x[k], weights qw[k], levels into L[k], result into
 * out[k]) and returns false, writing nothing, for inputs it leaves to the
 * reference: a value negative or not finite, a maximum below 1e-15, n out of
 * 1..16, or no AVX2. k_make_qx_w without AVX2 is the reference. */
bool k_make_qp4(int n, int nmax, const float *const *x, const float *const *qw,
                uint8_t *const *L, float *out);
float k_make_qx_w(int n, int nmax, const float *x, int8_t *L, const float *qw);

#endif
