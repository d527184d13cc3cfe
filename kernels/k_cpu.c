/* k_cpu.c — cpuid-based feature detection. */
#include "k_cpu.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static k_cpu g_cpu;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void detect(void)
{
    memset(&g_cpu, 0, sizeof g_cpu);
    const char *off = getenv("QTUNE_NO_SIMD");
    if (off && strcmp(off, "0") != 0)
        return;
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    bool fma = c & (1u << 12), f16c = c & (1u << 29);
    if (!osxsave || !avx)
        return;
    uint64_t xcr0 = xgetbv0();
    bool ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xe6) == 0xe6;
    if (!ymm || __get_cpuid_max(0, NULL) < 7)
        return;
    __cpuid_count(7, 0, a, b, c, d);
    g_cpu.avx2 = b & (1u << 5);
    g_cpu.fma = fma;
    g_cpu.f16c = f16c;
    /* leaf 7 EBX: 16 AVX512F, 17 AVX512DQ, 30 AVX512BW, 31 AVX512VL */
    const unsigned need = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);
    const char *no512 = getenv("QTUNE_NO_AVX512");
    g_cpu.avx512 = zmm && g_cpu.avx2 && fma && f16c && (b & need) == need &&
                   !(no512 && strcmp(no512, "0") != 0);
#endif
}

const k_cpu *k_cpu_get(void)
{
    pthread_once(&g_once, detect);
    return &g_cpu;
}
