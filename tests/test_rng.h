/* test_rng.h — the small deterministic generators the test suites share.
 * xorshift64 (Marsaglia): set rng_state to a non-zero seed before use. Each
 * test program has its own copy (static), so suites never disturb each other. */
#ifndef TEST_RNG_H
#define TEST_RNG_H

#include <math.h>
#include <stdint.h>

static uint64_t rng_state = 1;

static inline uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* Uniform in [0, 1). */
static inline double urand(void)
{
    return (double)(rng() >> 11) * 0x1p-53;
}

/* Standard normal (Box-Muller, one value per call). */
static inline float grand(void)
{
    double u = urand(), v = urand();
    return (float)(sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v));
}

#endif
