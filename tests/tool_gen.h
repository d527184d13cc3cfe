/* tool_gen.h — the generated weight tensor the kernel benchmarks share
 * (tool_bench_kernels, tool_bench_cuda): a fixed seed, so every run and
 * every tool sees the same values. Each program has its own copy (static). */
#ifndef TOOL_GEN_H
#define TOOL_GEN_H

#include <math.h>
#include <stdint.h>

static uint64_t tool_gen_rng = 0x2545F4914F6CDD1Dull;

/* Uniform in (0, 1) (xorshift64). */
static inline double tool_urand(void)
{
    tool_gen_rng ^= tool_gen_rng << 13;
    tool_gen_rng ^= tool_gen_rng >> 7;
    tool_gen_rng ^= tool_gen_rng << 17;
    return ((double)(tool_gen_rng >> 11) + 0.5) * 0x1p-53;
}

/* Standard normal (Box-Muller, one of the pair). */
static inline double tool_nrand(void)
{
    return sqrt(-2.0 * log(tool_urand())) * cos(6.283185307179586 * tool_urand());
}

/* rows × cols values that look like a real weight matrix: per-row scales
 * varying ±30%, Student-t (5 degrees of freedom) values and a few outlier
 * input channels (×12). */
static inline void tool_gen_weights(float *x, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++) {
        double rs = 0.015 * (0.7 + 0.6 * tool_urand());
        for (int64_t c = 0; c < cols; c++) {
            double ch = 0;
            for (int k = 0; k < 5; k++) {
                double z = tool_nrand();
                ch += z * z;
            }
            double v = rs * tool_nrand() / sqrt(ch / 5.0);
            if (c % 293 == 7)
                v *= 12.0;
            x[r * cols + c] = (float)v;
        }
    }
}

#endif
