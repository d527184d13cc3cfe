/* k_float.h — the float formats (f32, f16, bf16) as quantization targets, on
 * AVX2/F16C and AVX-512: their fake quantization for the fused preview (a row
 * rounded to the format and widened back) and their apply writers, bit for
 * bit equal to q_dtype's conversions (q_f32_to_f16, q_f32_to_bf16 and back),
 * NaN payloads and overflow to infinity included. */
#ifndef K_FLOAT_H
#define K_FLOAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "q_format.h"

/* True for the formats k_float_fq_row serves: f32, f16 and bf16. */
bool k_float_is(q_format_id id);

/* y[0..n) = x[0..n) rounded to format id (k_float_is) and widened back to
 * f32, as the format's reference quantizer and its type's dequantizer give
 * it (f32: a copy). Returns K_FQ_FINITE (k_fused.h) when every y is finite;
 * 0 when one is not (x not finite, or an f16 or bf16 overflow to infinity);
 * K_FQ_NONFINITE instead when check is set and x holds NaN or Inf. Needs
 * AVX2 and F16C (k_cpu_get); wide: the AVX-512 loop (AVX-512 needed). */
int k_float_fq_row(q_format_id id, const float *x, float *y, int64_t n, bool wide, bool check);

/* Apply writers of f16 and bf16: the q_quant_fn contract (q_format.h), bytes
 * equal to the reference quantizers' for every input; the imatrix is
 * ignored, as there. On a CPU without AVX2 and F16C they call the
 * references. */
size_t k_quantize_f16(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                      const float *imatrix);
size_t k_quantize_bf16(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                       const float *imatrix);

#endif
