/* q_grid.h — "grid" formats that qtune previews but does not write to GGUF:
 * fp8_e4m3 / fp8_e5m2 with a scale per channel or group, intN symmetric and
 * uintN asymmetric (N = 2..8) per tensor, per channel or per group of G, and
 * nf4 (the NormalFloat-4 levels of QLoRA with an absmax per block, default 64).
 *
 * Each is a fake quantizer: dst = dequant(quant(src)), computed in float as a
 * deployment kernel would (scales rounded to f16 where the format stores f16;
 * state which in the implementation). Scalar reference only; kernels/ may add
 * fast versions later. See q_format.h for q_fmt_spec and q_fq_ctx. */
#ifndef Q_GRID_H
#define Q_GRID_H

#include <stdint.h>

#include "q_format.h"

/* Fake-quantizes nrows rows of n_per_row floats. spec->id is one of
 * Q_FMT_FP8_E4M3, Q_FMT_FP8_E5M2, Q_FMT_INT, Q_FMT_UINT, Q_FMT_NF4; the spec is
 * valid (q_fmt_check passed). For group Q_GROUP_TENSOR, ctx holds the tensor's
 * range (q_fmt_prepare). imatrix (n_per_row weights or NULL): when given, the
 * scale of each group is chosen by a small importance-weighted search (as
 * llama.cpp does for its formats) instead of plain absmax / min-max. */
void q_grid_fakequant(const q_fmt_spec *spec, const float *src, float *dst, int64_t nrows,
                      int64_t n_per_row, const float *imatrix, const q_fq_ctx *ctx);

#endif
