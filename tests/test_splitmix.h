/* test_splitmix.h — splitmix64 and Student-t(4) samples for the suites that
 * need heavy-tailed data (statistics, CUDA comparisons). Set rng_state to a
 * seed before use. Not to be combined with test_rng.h (same names, another
 * generator); each test program has its own static copy. */
#ifndef TEST_SPLITMIX_H
#define TEST_SPLITMIX_H

#include <math.h>
#include <stdint.h>

static uint64_t rng_state;

static inline uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): never 0, so log() is safe. */
static inline double unif(void)
{
    return ((double)(rng() >> 11) + 0.5) / 9007199254740992.0;
}

/* Student-t with 4 degrees of freedom: heavy tails, kurtosis well above 3. */
static inline float student_t(void)
{
    double z = sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif());
    double chi = 0;
    for (int k = 0; k < 4; k++) {
        double g = sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif());
        chi += g * g;
    }
    return (float)(z / sqrt(chi / 4));
}

#endif
