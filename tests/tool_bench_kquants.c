/* tool_bench_kquants.c — times the k-quant quantizers on one generated
 * 4096 × 4096 f32 tensor: the scalar reference on one thread against the fast
 * kernels (kernels/k_kquants.c) on one thread and on 2 threads splitting rows
 * with OpenMP, and checks that the fast bytes equal the reference's.
 *
 * usage: tool_bench_kquants [types] [--imatrix] [--reps N] [--rows R]
 * [--fast-only]
 *   --fast-only: one thread, fast kernels only, no reference and no check
 *   (for profiling: perf stat / perf record)
 *   types: comma-separated, default q4_k,q6_k,q5_k,q3_k,q2_k,iq4_nl
 * (block sizes below are bytes per 256 elements)
 * One line per type:
 *   type=q4_k imatrix=0 ref_ms=... fast1_ms=... fast2_ms=... speedup1=...
 * speedup2=... gbps2=... exact=1 (GB/s = f32 input bytes / time at 2 threads.)
 * Exit status 1 when the bytes differ or an allocation fails.
 *
 * The tensor imitates a linear layer of a trained model (fixed seed): rows
 * with a spread of scales (log-normal), heavy-tailed values (Student-t, 4
 * degrees of freedom), and a few outlier columns 20× larger.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "k_kquants.h"
#include "q_blocks.h"
#include "q_quants.h"

typedef size_t (*tb_fn)(const float *, void *, int64_t, int64_t, const float *);

typedef struct tb_type {
    const char *name;
    tb_fn ref, fast;
    size_t block;
} tb_type;

static const tb_type TB_TYPES[] = {
    {"q4_k", q_quantize_q4_k, k_quantize_q4_k, sizeof(block_q4_K)},
    {"q6_k", q_quantize_q6_k, k_quantize_q6_k, sizeof(block_q6_K)},
    {"q5_k", q_quantize_q5_k, k_quantize_q5_k, sizeof(block_q5_K)},
    {"q3_k", q_quantize_q3_k, k_quantize_q3_k, sizeof(block_q3_K)},
    {"q2_k", q_quantize_q2_k, k_quantize_q2_k, sizeof(block_q2_K)},
    {"iq4_nl", q_quantize_iq4_nl, k_quantize_iq4_nl, sizeof(block_iq4_nl) * (QK_K / QK4_NL)},
};

static uint64_t tb_state = 42;

static double tb_unif(void)
{
    uint64_t z = (tb_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) * 0x1p-53;
}

static double tb_normal(void)
{
    return sqrt(-2 * log(tb_unif())) * cos(6.283185307179586 * tb_unif());
}

static double tb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void tb_tensor(float *x, int64_t rows, int64_t cols, float *imat)
{
    uint8_t *outcol = calloc((size_t)cols, 1);
    if (outcol)
        for (int64_t c = 0; c < cols; c++)
            outcol[c] = tb_unif() < 0.004;
    for (int64_t r = 0; r < rows; r++) {
        const double rs = 0.02 * exp(0.3 * tb_normal());
        for (int64_t c = 0; c < cols; c++) {
            double g = 0;
            for (int k = 0; k < 4; k++) {
                double n = tb_normal();
                g += n * n;
            }
            double v = rs * tb_normal() / sqrt(g / 4);
            if (outcol && outcol[c])
                v *= 20;
            x[r * cols + c] = (float)v;
        }
    }
    for (int64_t c = 0; c < cols; c++) {
        double s = 0;
        for (int64_t r = 0; r < rows; r += 16)
            s += (double)x[r * cols + c] * x[r * cols + c];
        imat[c] = (float)(s * 16);
    }
    free(outcol);
}

/* Quantizes rows × cols with fn on nthreads threads (rows split in chunks of
 * 16); returns seconds. */
static double tb_run(tb_fn fn, const float *x, uint8_t *dst, int64_t rows, int64_t cols,
                     const float *imat, size_t row_bytes, int nthreads)
{
    const double t0 = tb_now();
    const int64_t chunk = 16;
    const int64_t nchunks = (rows + chunk - 1) / chunk;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t r0 = c * chunk;
        const int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
        fn(x + r0 * cols, dst + (size_t)r0 * row_bytes, n, cols, imat);
    }
    return tb_now() - t0;
}

int main(int argc, char **argv)
{
    const char *types = "q4_k,q6_k,q5_k,q3_k,q2_k,iq4_nl";
    int use_imat = 0, reps = 3, fast_only = 0;
    int64_t rows = 4096;
    const int64_t cols = 4096;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--imatrix"))
            use_imat = 1;
        else if (!strcmp(argv[i], "--fast-only"))
            fast_only = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = atoll(argv[++i]);
        else
            types = argv[i];
    }
    if (reps < 1 || rows < 1) {
        fprintf(stderr, "usage: tool_bench_kquants [types] [--imatrix] [--reps N] "
                        "[--rows R]\n");
        return 2;
    }
    float *x = malloc(sizeof(float) * (size_t)(rows * cols));
    float *imat = malloc(sizeof(float) * (size_t)cols);
    uint8_t *a = malloc((size_t)(rows * cols)); /* >= bytes of any k-quant */
    uint8_t *b = malloc((size_t)(rows * cols));
    if (!x || !imat || !a || !b) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    tb_tensor(x, rows, cols, imat);
    const float *im = use_imat ? imat : NULL;
    int rc = 0;
    for (size_t t = 0; t < sizeof TB_TYPES / sizeof TB_TYPES[0]; t++) {
        const tb_type *ty = &TB_TYPES[t];
        if (!strstr(types, ty->name))
            continue;
        const size_t row_bytes = (size_t)(cols / QK_K) * ty->block;
        if (fast_only) {
            double t1 = 1e30, c1 = 1e30;
            for (int r = 0; r < reps; r++) {
                struct timespec c0, c9;
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
                double s = tb_run(ty->fast, x, b, rows, cols, im, row_bytes, 1);
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c9);
                double c =
                    (double)(c9.tv_sec - c0.tv_sec) + 1e-9 * (double)(c9.tv_nsec - c0.tv_nsec);
                t1 = s < t1 ? s : t1;
                c1 = c < c1 ? c : c1;
            }
            printf("type=%s imatrix=%d fast1_ms=%.1f fast1_cpu_ms=%.1f\n", ty->name, use_imat,
                   t1 * 1e3, c1 * 1e3);
            continue;
        }
        double tr = tb_run(ty->ref, x, a, rows, cols, im, row_bytes, 1);
        double t1 = 1e30, t2 = 1e30;
        int exact = 1;
        for (int r = 0; r < reps; r++) {
            memset(b, 0, (size_t)rows * row_bytes);
            double s = tb_run(ty->fast, x, b, rows, cols, im, row_bytes, 1);
            t1 = s < t1 ? s : t1;
            exact &= !memcmp(a, b, (size_t)rows * row_bytes);
            memset(b, 0, (size_t)rows * row_bytes);
            s = tb_run(ty->fast, x, b, rows, cols, im, row_bytes, 2);
            t2 = s < t2 ? s : t2;
            exact &= !memcmp(a, b, (size_t)rows * row_bytes);
        }
        const double gb = (double)(rows * cols) * 4 / 1e9;
        printf("type=%s imatrix=%d ref_ms=%.1f fast1_ms=%.1f fast2_ms=%.1f "
               "speedup1=%.1f "
               "speedup2=%.1f gbps2=%.2f exact=%d\n",
               ty->name, use_imat, tr * 1e3, t1 * 1e3, t2 * 1e3, tr / t1, tr / t2, gb / t2, exact);
        fflush(stdout);
        if (!exact)
            rc = 1;
    }
    free(x);
    free(imat);
    free(a);
    free(b);
    return rc;
}
