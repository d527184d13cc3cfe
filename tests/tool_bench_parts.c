/* tool_bench_parts.c — the parts of one exact preview row, timed apart, for
 * work on the kernels: fake quantization (k_fq_row_check), the double sums
 * alone (k_acc_row without a histogram) and the sums with the histogram
 * (k_acc_row), in ns per value, on one thread with the rows in L2 (8 rows of
 * 4096 by default, quantized again and again; the accumulator is flushed every
 * 16 rows as the preview's row blocks are, and the histogram spans 1.25 times
 * the largest error, as the preview's probe sets it). The histogram's share is
 * the difference of the last two.
 *
 * usage: tool_bench_parts [formats] [--cols C] [--rows R] [--reps N] [--offset B]
 *   formats: comma-separated, default q8_0,q4_0,int4,nf4,fp8_e4m3
 *   --offset: every row of x starts B bytes (0, 4, .., 60) past a 64-byte
 *     boundary (default 0; cols a multiple of 16 keeps it per row), as a
 *     model file may place an f32 tensor; y is on lines, as the preview's
 *     buffers are
 * One line per format:
 *   fmt=q8_0 fq_ns=0.120 sums_ns=0.196 sums_hist_ns=0.365 total_ns=0.485
 * (best of N rounds, default 7; pin it with taskset for stable figures). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "k_cpu.h"
#include "k_fused.h"
#include "k_preview.h"
#include "q_format.h"
#include "q_metrics.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Fixed-seed values of a trained layer's scale (normal, σ 0.02). */
static void fill(float *x, int64_t n)
{
    uint64_t s = 0x5eed;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double v = ((double)(s >> 11) + 0.5) / 9007199254740992.0;
        x[i] = (float)(0.02 * sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
    }
}

/* n floats from a 64-byte boundary (aligned_alloc wants a multiple of 64). */
static float *floats64(size_t n)
{
    return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
}

enum { PART_FQ, PART_SUMS, PART_HIST, PART_ALL, NPARTS };

/* ns per value of part over rows x (quantized values in yq), best of reps;
 * the histogram over [-range, range). */
static double time_part(int part, const k_fq *k, const float *x, const float *yq, float *y,
                        void *qb, k_acc_scratch *p, int64_t rows, int64_t cols, int reps,
                        double range)
{
    const int iters = (int)(4000000 / (rows * cols)) + 1;
    double best = INFINITY;
    for (int r = 0; r < reps; r++) {
        q_metrics_acc a;
        q_metrics_init(&a, part == PART_SUMS ? 0.0 : range);
        double t0 = now();
        int64_t done = 0;
        for (int it = 0; it < iters; it++) {
            for (int64_t i = 0; i < rows; i++) {
                const float *xr = x + i * cols;
                if (part == PART_FQ) {
                    (void)k_fq_row_check(k, xr, y, NULL, qb);
                } else if (part == PART_ALL) {
                    int f = k_fq_row_check(k, xr, y, NULL, qb);
                    k_acc_row(&a, p, xr, y, cols, NULL, true, f == K_FQ_FINITE, xr);
                } else {
                    k_acc_row(&a, p, xr, yq + i * cols, cols, NULL, true, true, xr);
                }
                if (++done % 16 == 0)
                    k_acc_flush(&a, p);
            }
        }
        k_acc_flush(&a, p);
        double dt = (now() - t0) / ((double)iters * (double)(rows * cols)) * 1e9;
        best = dt < best ? dt : best;
    }
    return best;
}

int main(int argc, char **argv)
{
    const char *fmts = "q8_0,q4_0,int4,nf4,fp8_e4m3";
    int64_t cols = 4096, rows = 8;
    int reps = 7, offset = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cols") && i + 1 < argc)
            cols = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--offset") && i + 1 < argc)
            offset = atoi(argv[++i]);
        else if (argv[i][0] != '-')
            fmts = argv[i];
        else {
            fprintf(stderr, "usage: %s [formats] [--cols C] [--rows R] [--reps N] [--offset B]\n",
                    argv[0]);
            return 2;
        }
    }
    if (cols <= 0 || rows <= 0 || reps <= 0 || offset < 0 || offset >= 64 || offset % 4) {
        fprintf(stderr, "%s: --cols, --rows and --reps must be positive, --offset one of 0, 4, "
                "..., 60\n", argv[0]);
        return 2;
    }
    k_init();
    const size_t o = (size_t)offset / sizeof(float);
    float *xa = floats64((size_t)(rows * cols + 16));
    float *yqa = floats64((size_t)(rows * cols + 16));
    float *ya = floats64((size_t)(cols + 16));
    k_acc_scratch *p = calloc(1, sizeof *p);
    float *x = xa + o, *yq = yqa, *y = ya; /* y on lines, as the preview's buffers */
    if (!xa || !yqa || !ya || !p) {
        fprintf(stderr, "%s: out of memory\n", argv[0]);
        return 1;
    }
    fill(x, rows * cols);
    char list[256];
    snprintf(list, sizeof list, "%s", fmts);
    int status = 0;
    for (char *f = strtok(list, ","); f; f = strtok(NULL, ",")) {
        q_fmt_spec spec;
        q_err err = {{0}};
        k_fq k;
        if (!q_fmt_parse(f, &spec) || k_fq_init(&k, &spec, cols, false, &err) != Q_OK) {
            fprintf(stderr, "%s: %s: not a format this tool can time%s%s\n", argv[0], f,
                    err.msg[0] ? ": " : "", err.msg);
            status = 1;
            continue;
        }
        void *qb = malloc(k.row_bytes > 0 ? k.row_bytes : 1);
        if (!qb) {
            status = 1;
            break;
        }
        for (int64_t i = 0; i < rows; i++)
            (void)k_fq_row(&k, x + i * cols, yq + i * cols, NULL, qb);
        /* the preview's histogram range: 1.25 times the largest error */
        double emax = 0;
        for (int64_t i = 0; i < rows * cols; i++)
            emax = fmax(emax, fabs((double)yq[i] - (double)x[i]));
        const double range = emax > 0 ? 1.25 * emax : 1.0;
        double t[NPARTS];
        for (int part = 0; part < NPARTS; part++)
            t[part] = time_part(part, &k, x, yq, y, qb, p, rows, cols, reps, range);
        printf("fmt=%s fq_ns=%.3f sums_ns=%.3f sums_hist_ns=%.3f total_ns=%.3f\n", f, t[PART_FQ],
               t[PART_SUMS], t[PART_HIST], t[PART_ALL]);
        free(qb);
    }
    free(xa);
    free(yqa);
    free(ya);
    free(p);
    return status;
}
