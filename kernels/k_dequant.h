/* k_dequant.h — AVX2 dequantizers for the preview's quantize→dequantize round
 * trip, value for value equal to q_dtype's (the same float multiply, then
 * subtract; no FMA). */
#ifndef K_DEQUANT_H
#define K_DEQUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "q_dtype.h"

/* The fast dequantizer of ggml type `type` on this machine, or NULL (use
 * q_dtype_get(type)->dequant). simd false: always NULL. */
q_dequant_fn k_dequant_fast(uint32_t type, bool simd);

#endif
