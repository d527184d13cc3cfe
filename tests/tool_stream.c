/* tool_stream.c — STREAM-like read bandwidth of this machine, for benchmarks.
 *
 * usage: tool_stream [MiB] [threads]   (default 1024 MiB, all threads)
 * Prints "read_GBps=<best of 5>" for a sum over a buffer much larger than the
 * caches, with 8 independent accumulators per thread so the loop is bound by
 * memory, not by add latency. */
#include <immintrin.h>
#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sums a[0..n) (n a multiple of 32) with four 8-wide accumulators. */
__attribute__((target("avx2"))) static double sum_avx2(const float *a, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(a + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(a + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    double total = 0;
    for (int k = 0; k < 8; k++)
        total += t[k];
    return total;
}

static double sum_scalar(const float *a, size_t n)
{
    float s[8] = {0};
    for (size_t i = 0; i < n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += a[i + k];
    double total = 0;
    for (int k = 0; k < 8; k++)
        total += s[k];
    return total;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    if (argc > 2)
        omp_set_num_threads(atoi(argv[2]));
    size_t n = mib * 1024 * 1024 / sizeof(float);
    n -= n % 4096;
    bool avx2 = __builtin_cpu_supports("avx2");
    float *a = malloc(n * sizeof *a);
    if (!a)
        return 1;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        a[i] = (float)(i & 7);
    double best = 1e30, sink = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = omp_get_wtime();
        double total = 0;
#pragma omp parallel reduction(+ : total)
        {
            /* Each thread sums one contiguous slice (slices of 4096 floats). */
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            size_t pages = n / 4096, p0 = pages * (size_t)id / (size_t)nt,
                   p1 = pages * (size_t)(id + 1) / (size_t)nt;
            const float *s = a + p0 * 4096;
            size_t len = (p1 - p0) * 4096;
            total += avx2 ? sum_avx2(s, len) : sum_scalar(s, len);
        }
        double dt = omp_get_wtime() - t0;
        sink += total;
        if (dt < best)
            best = dt;
    }
    printf("read_GBps=%.2f threads=%d sink=%g\n", (double)(n * sizeof(float)) / best / 1e9,
           omp_get_max_threads(), sink > 0 ? 1.0 : 0.0);
    free(a);
    return 0;
}
