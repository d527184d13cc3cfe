/* tool_bench_kernels.c — benchmark of the live preview (k_preview_tensor)
 * against the scalar reference on a generated tensor, one line per format.
 *
 * usage: tool_bench_kernels [--rows R] [--cols C] [--bw GBps] [--formats a,b,...]
 *                           [--dtype f32|f16|bf16|q8_0|...] [--offset B]
 *
 * The tensor (f32, fixed seed) looks like a real weight matrix: per-row scales
 * varying ±30%, Student-t (5 degrees of freedom) values and a few outlier
 * input channels (×12). Columns: the scalar reference (quantize_ref or
 * q_grid_fakequant, then the scalar dequantizer and q_metrics_add, one
 * thread), the exact preview at 1 and 2 threads (best of 9), its read rate
 * (source bytes / time at 2 threads) and share of the measured bandwidth
 * (--bw, from tool_stream), the speedup of 2 threads over the reference, the
 * time to the first estimate (2 threads, best of 9), and the targets:
 * exact ≤ 5 ms and ≥ 40% of the bandwidth at 2 threads for the round-to-nearest
 * formats (f16 and bf16 held to the same), exact ≤ 60 ms at 2 threads for the
 * k-quants and iq4_nl, first
 * estimate ≤ 10 ms for all. With --dtype the tensor is stored in that type as
 * a model file holds it (f16, bf16, or a block type such as q8_0 by its
 * reference quantizer): the preview reads and converts the stored values; the
 * reference runs on the same values already in f32, so its time leaves the
 * conversion out; GB/s and %bw count the bytes read, and the round-to-nearest
 * target is the 5 ms alone (40% of the bandwidth is what 5 ms means for the
 * f32 tensor). The tensor's bytes start on a 64-byte boundary, as a
 * cache-line-aligned array does, or --offset B bytes (0..63) past one, as a
 * model file may place them (GGUF aligns tensor data to 32 bytes by default;
 * safetensors to 8 at most). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "k_cpu.h"
#include "k_preview.h"
#include "q_dtype.h"
#include "q_format.h"
#include "q_grid.h"
#include "mem_tensor.h"
#include "tool_gen.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The bytes of x stored as type dt (F16, BF16, or a block type qtune
 * quantizes, by its reference quantizer) in a new buffer, and x replaced by
 * the values they hold; NULL when dt is none of those or memory is short. */
static uint8_t *store_as(float *x, int64_t rows, int64_t cols, uint32_t dt)
{
    const int64_t n = rows * cols;
    uint8_t *h = malloc((size_t)q_dtype_bytes(dt, n));
    if (!h)
        return NULL;
    if (dt == Q_DT_F16 || dt == Q_DT_BF16) {
        uint16_t *v = (uint16_t *)(void *)h;
        for (int64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &x[i], sizeof u);
            u += 0x7fffu + ((u >> 16) & 1u); /* bf16 nearest (finite values only) */
            v[i] = dt == Q_DT_F16 ? q_f32_to_f16(x[i]) : (uint16_t)(u >> 16);
        }
    } else {
        q_fmt_spec s;
        const q_format *f = q_fmt_parse(q_dtype_name(dt), &s) ? q_format_get(s.id) : NULL;
        if (!f || f->ggml_type != (int)dt || !f->quantize_ref) {
            free(h);
            return NULL;
        }
        f->quantize_ref(x, h, rows, cols, NULL);
    }
    q_dtype_get(dt)->dequant_ref(h, x, n);
    return h;
}

/* The scalar reference over the whole tensor, one thread; returns seconds. */
static double reference(const q_fmt_spec *s, const float *x, int64_t rows, int64_t cols,
                        q_metrics *m)
{
    const q_format *f = q_format_get(s->id);
    float *y = malloc((size_t)cols * sizeof *y);
    void *qb = malloc(f->ggml_type >= 0 ? (size_t)q_dtype_bytes((uint32_t)f->ggml_type, cols)
                                        : 1);
    double t0 = now_s();
    q_fq_ctx ctx;
    q_fmt_prepare(s, x, rows * cols, &ctx);
    q_metrics_acc probe, acc;
    q_metrics_init(&probe, 0);
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: histogram range from the first 16 rows, as the preview probes */
        int64_t n = pass == 0 ? (rows < 16 ? rows : 16) : rows;
        q_metrics_init(&acc, pass == 0 ? 0 : 1.25 * probe.max_abs);
        for (int64_t r = 0; r < n; r++) {
            const float *xr = x + r * cols;
            if (f->ggml_type >= 0) {
                f->quantize_ref(xr, qb, 1, cols, NULL);
                q_dtype_get((uint32_t)f->ggml_type)->dequant_ref(qb, y, cols);
            } else {
                q_grid_fakequant(s, xr, y, 1, cols, NULL, &ctx);
            }
            q_metrics_add(pass == 0 ? &probe : &acc, xr, y, 1, cols, NULL);
        }
    }
    double dt = now_s() - t0;
    q_metrics_finish(&acc, m);
    free(y);
    free(qb);
    return dt;
}

typedef struct est {
    double first;
    int seen;
} est;

static void on_est(void *user, const k_preview_result *r)
{
    est *e = user;
    if (!r->exact && !e->seen) {
        e->first = r->seconds;
        e->seen = 1;
    }
}

static double preview(const q_tensor *t, const q_fmt_spec *s, int threads, bool estimate,
                      double *first, q_metrics *m)
{
    double best = 1e30, best_first = 1e30;
    /* best of 9: other tenants of the host skew single runs, 2-thread ones most
     * (best of 5 left one or two formats of a table 10-20% high in most runs) */
    for (int rep = 0; rep < 9; rep++) {
        est e = {0, 0};
        k_preview_req req = {.tensor = t, .fmt = *s, .method = Q_METHOD_RTN,
                             .threads = threads, .skip_estimate = !estimate};
        k_preview_result r;
        q_err err = {{0}};
        double t0 = now_s();
        q_status st = k_preview_tensor(&req, estimate ? on_est : NULL, &e, &r, &err);
        double dt = now_s() - t0;
        if (st != Q_OK) {
            fprintf(stderr, "preview failed: %s\n", err.msg);
            exit(1);
        }
        if (m)
            *m = r.metrics;
        best = dt < best ? dt : best;
        if (e.seen && e.first < best_first)
            best_first = e.first;
    }
    if (first)
        *first = best_first;
    return best;
}

int main(int argc, char **argv)
{
    int64_t rows = 4096, cols = 4096;
    double bw = 0;
    int dt = Q_DT_F32, offset = 0;
    const char *dtype = "f32";
    const char *list = "f16,bf16,q8_0,q4_0,q4_1,q5_0,q5_1,int8,int4,uint4,uint3,nf4,fp8_e4m3,"
                       "fp8_e5m2,iq4_nl,q6_k,q5_k,q4_k,q3_k,q2_k";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--cols") && i + 1 < argc)
            cols = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--bw") && i + 1 < argc)
            bw = atof(argv[++i]);
        else if (!strcmp(argv[i], "--formats") && i + 1 < argc)
            list = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc &&
                 (dt = q_dtype_from_name(argv[i + 1])) >= 0)
            dtype = argv[++i];
        else if (!strcmp(argv[i], "--offset") && i + 1 < argc)
            offset = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: %s [--rows R] [--cols C] [--bw GBps] [--formats a,b] "
                    "[--dtype f32|f16|bf16|q8_0|...] [--offset B]\n",
                    argv[0]);
            return 64;
        }
    }
    if (offset < 0 || offset > 63) {
        fprintf(stderr, "tool_bench_kernels: --offset takes 0 to 63 bytes\n");
        return 64;
    }
    k_init();
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    if (!x)
        return 70;
    tool_gen_weights(x, rows, cols);
    uint8_t *h = NULL;
    if (dt != Q_DT_F32 && !(h = store_as(x, rows, cols, (uint32_t)dt))) {
        fprintf(stderr, "tool_bench_kernels: cannot store the tensor as %s\n", dtype);
        return 64;
    }
    /* the preview's copy of the bytes, offset bytes past a 64-byte boundary */
    const size_t nbytes = (size_t)q_dtype_bytes((uint32_t)dt, rows * cols);
    uint8_t *base = aligned_alloc(64, (nbytes + 64 + 63) / 64 * 64);
    if (!base)
        return 70;
    memcpy(base + offset, h ? (const void *)h : (const void *)x, nbytes);
    q_tensor t;
    mem_tensor(&t, "bench.weight", base + offset, (uint32_t)dt, rows, cols);
    double gb = (double)t.bytes / 1e9;
    const k_cpu *cpu = k_cpu_get();
    printf("tensor %lldx%lld %s (%.1f MB, %d bytes past a line), read bandwidth %.2f GB/s "
           "(2 threads), %s kernels\n",
           (long long)rows, (long long)cols, q_dtype_name((uint32_t)dt), gb * 1e3, offset, bw,
           cpu->avx512 ? "AVX-512" : cpu->avx2 && cpu->fma && cpu->f16c ? "AVX2" : "scalar");
    printf("%-9s %9s %8s %8s %7s %6s %7s %8s  %-22s %s\n", "format", "ref_ms", "1T_ms", "2T_ms",
           "GB/s", "%bw", "speedup", "est_ms", "exact target", "est<=10ms");
    char *dup = strdup(list), *save = NULL;
    for (char *name = strtok_r(dup, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
        q_fmt_spec s;
        if (!q_fmt_parse(name, &s) || !q_fmt_fits(&s, cols)) {
            printf("%-9s (does not apply)\n", name);
            continue;
        }
        q_metrics mr, mf;
        double ref = reference(&s, x, rows, cols, &mr);
        double t1 = preview(&t, &s, 1, false, NULL, NULL);
        double t2 = preview(&t, &s, 2, false, NULL, &mf);
        double first;
        preview(&t, &s, 2, true, &first, NULL);
        double rate = gb / t2, pct = bw > 0 ? 100.0 * rate / bw : 0;
        /* f16 and bf16 (rounded, no scale search) in the round-to-nearest class */
        bool rtn = s.id == Q_FMT_F16 || s.id == Q_FMT_BF16 || s.id == Q_FMT_Q8_0 ||
                   s.id == Q_FMT_Q4_0 || s.id == Q_FMT_Q4_1 || s.id == Q_FMT_Q5_0 ||
                   s.id == Q_FMT_Q5_1 || s.id == Q_FMT_INT || s.id == Q_FMT_UINT ||
                   s.id == Q_FMT_NF4 || s.id == Q_FMT_FP8_E4M3 || s.id == Q_FMT_FP8_E5M2;
        /* targets: RTN formats <= 5 ms and >= 40% of the bandwidth; k-quants and
         * iq4_nl <= 60 ms (both with 2 threads) */
        const char *exact;
        if (!rtn)
            exact = t2 <= 0.060 ? "<=60ms: met" : "<=60ms: NOT met";
        else if (dt != Q_DT_F32)
            exact = t2 <= 0.005 ? "<=5ms: met" : "<=5ms: NOT met";
        else
            exact = t2 <= 0.005 && pct >= 40 ? "<=5ms,>=40%: met" : "<=5ms,>=40%: NOT met";
        /* a tensor of fewer rows than twice the sample gets no estimate */
        const bool has_est = first < 1e29;
        const char *efirst = !has_est ? "no estimate" : first <= 0.010 ? "met" : "NOT met";
        bool same = fabs(mf.rel_rmse - mr.rel_rmse) <= 1e-9 * fabs(mr.rel_rmse);
        printf("%-9s %9.1f %8.2f %8.2f %7.2f %6.1f %6.1fx %8.2f  %-22s %s%s\n", name, 1e3 * ref,
               1e3 * t1, 1e3 * t2, rate, pct, ref / t2, has_est ? 1e3 * first : NAN, exact, efirst,
               same ? "" : "  (rel_rmse differs from the reference!)");
        fflush(stdout);
    }
    free(dup);
    free(base);
    free(h);
    free(x);
    return 0;
}
