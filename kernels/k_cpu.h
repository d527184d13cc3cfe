/* k_cpu.h — run-time CPU feature detection (cpuid + xgetbv), so SIMD paths
 * are chosen on the machine that runs qtune, not the one that built it. */
#ifndef K_CPU_H
#define K_CPU_H

#include <stdbool.h>

typedef struct k_cpu {
    bool avx2;    /* AVX2 with OS support for the YMM state */
    bool fma;
    bool f16c;
    bool avx512;  /* AVX-512 F, BW, DQ and VL with OS support for the ZMM state */
} k_cpu;

/* Features of this CPU, detected once (thread-safe). In the environment,
 * QTUNE_NO_SIMD=1 reports none, which forces every scalar path, and
 * QTUNE_NO_AVX512=1 reports no AVX-512, which forces the AVX2 paths (the
 * tests run their suites once each way on an AVX-512 machine). */
const k_cpu *k_cpu_get(void);

#endif
