/* k_dequant.h — AVX2/F16C dequantizers (F16, BF16, q2_K, q4_K, q5_K, q6_K,
 * iq4_NL), bit for bit
 * equal to q_dtype's references (the same float multiply, then subtract; no
 * FMA), installed as the types' fast dequantizers at start-up. */
#ifndef K_DEQUANT_H
#define K_DEQUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "q_dtype.h"

/* The fast dequantizer of ggml type `type` on this machine, or NULL (use
 * q_dtype_get(type)->dequant). simd false: always NULL. */
q_dequant_fn k_dequant_fast(uint32_t type, bool simd);

/* Installs every fast dequantizer this machine can run (q_dtype_set_fast_dequant). */
void k_dequant_register(void);

#endif
