/* test_preview.c — k_preview_tensor and the fused kernels against the scalar
 * references: every format of q_format.h, f32/f16/bf16 sources with
 * heavy-tailed data (Student-t, 3 degrees of freedom, plus outlier columns),
 * metrics within 1e-9 relative of q_metrics over the reference's values,
 * histogram counts and maxima equal, SIMD vs scalar path, 1 vs 2 threads bit
 * for bit, the estimate's band, cancellation latency, odd row lengths, all-zero
 * rows, NaN/Inf, and the apply variants byte for byte. Fixed seeds.
 *
 * With QTUNE_TEST_EMULATE=1 (make cudatest, on the CUDA build) the exact
 * passes of the formats with a CUDA kernel run on the emulated device
 * (k_cuda_fused_emulate), so the estimate's band, cancellation and thread
 * counts are checked on the GPU path too (test_estimate_band asserts which
 * path ran). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "k_cpu.h"
#include "k_cuda_fused.h"
#include "k_dequant.h"
#include "k_float.h"
#include "k_fused.h"
#include "k_preview.h"
#include "mem_tensor.h"
#include "q_blocks.h"
#include "q_dtype.h"
#include "q_format.h"
#include "q_grid.h"
#include "q_quants.h"

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static double urand(void)
{
    return ((double)(rng() >> 11) + 0.5) * 0x1p-53;
}

static double nrand(void)
{
    return sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand());
}

/* Student-t with nu degrees of freedom, scaled like a weight matrix. */
static int g_nu = 3;

static float trand(void)
{
    double c = 0;
    for (int k = 0; k < g_nu; k++) {
        double z = nrand();
        c += z * z;
    }
    return (float)(0.02 * nrand() / sqrt(c / g_nu + 1e-12));
}

static float *gen(int64_t rows, int64_t cols, uint64_t seed)
{
    rng_state = seed;
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < rows * cols; i++)
        x[i] = trand();
    for (int64_t r = 0; r < rows; r++) /* outlier input channels */
        for (int64_t c = 3; c < cols; c += 37)
            x[r * cols + c] *= 20.0f;
    return x;
}

typedef struct ttensor {
    q_tensor t;
    void *data;
} ttensor;

static void make_tensor(ttensor *tt, const float *x, int64_t rows, int64_t cols, uint32_t dt)
{
    memset(tt, 0, sizeof *tt);
    size_t n = (size_t)(rows * cols);
    size_t es = dt == Q_DT_F32 ? 4 : 2;
    tt->data = malloc(n * es);
    assert_non_null(tt->data);
    for (size_t i = 0; i < n; i++) {
        if (dt == Q_DT_F32)
            ((float *)tt->data)[i] = x[i];
        else if (dt == Q_DT_F16)
            ((uint16_t *)tt->data)[i] = q_f32_to_f16(x[i]);
        else
            ((uint16_t *)tt->data)[i] = q_f32_to_bf16(x[i]);
    }
    mem_tensor(&tt->t, "test.weight", tt->data, dt, rows, cols);
}

/* The scalar reference: rows read by the model's dequantizer, NaN/Inf set to
 * 0, quantize_ref + q_dtype dequantizer (grids: q_grid_fakequant), q_metrics. */
static void reference(const q_tensor *t, const q_fmt_spec *spec, const float *im, bool search,
                      double range, q_metrics_acc *acc, int64_t *bad)
{
    int64_t rows = t->rows, cols = t->cols;
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    float *y = malloc((size_t)cols * sizeof *y);
    assert_true(x && y);
    assert_int_equal(q_tensor_read_rows(t, 0, rows, x, NULL), Q_OK);
    *bad = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
        if (!isfinite(x[i])) {
            x[i] = 0;
            (*bad)++;
        }
    }
    q_fq_ctx ctx;
    q_fmt_prepare(spec, x, rows * cols, &ctx);
    const q_format *f = q_format_get(spec->id);
    void *qb = malloc(f->ggml_type >= 0 ? (size_t)q_dtype_bytes((uint32_t)f->ggml_type, cols)
                                        : 1);
    q_metrics_init(acc, range);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        if (f->ggml_type >= 0) {
            f->quantize_ref(xr, qb, 1, cols, search ? im : NULL);
            q_dtype_get((uint32_t)f->ggml_type)->dequant(qb, y, cols);
        } else {
            q_grid_fakequant(spec, xr, y, 1, cols, search ? im : NULL, &ctx);
        }
        q_metrics_add(acc, xr, y, 1, cols, im);
    }
    free(qb);
    free(x);
    free(y);
}

static void assert_rel(double got, double want, double tol, const char *what)
{
    if (got == want || (isnan(got) && isnan(want)))
        return;
    double d = fabs(got - want), m = fmax(fabs(want), 1e-300);
    if (!(d <= tol * m)) {
        print_error("%s: got %.17g want %.17g\n", what, got, want);
        fail();
    }
}

static void assert_acc_match(const q_metrics_acc *a, const q_metrics_acc *b)
{
    assert_int_equal(a->n, b->n);
    assert_rel(a->sum_w2, b->sum_w2, 1e-9, "sum_w2");
    assert_rel(a->sum_q2, b->sum_q2, 1e-9, "sum_q2");
    assert_rel(a->sum_wq, b->sum_wq, 1e-9, "sum_wq");
    assert_rel(a->sum_e2, b->sum_e2, 1e-9, "sum_e2");
    assert_rel(a->sum_iw_e2, b->sum_iw_e2, 1e-9, "sum_iw_e2");
    assert_rel(a->sum_iw_w2, b->sum_iw_w2, 1e-9, "sum_iw_w2");
    if (isnan(b->max_abs)) /* an f16 scale overflowed: NaN values on both sides */
        assert_true(isnan(a->max_abs));
    else
        assert_true(a->max_abs == b->max_abs);
    for (int i = 0; i < Q_ERR_HIST_BINS; i++)
        assert_int_equal(a->hist[i], b->hist[i]);
}

/* The specs under test: every format id, int/uint over bits and groups. */
static int all_specs(q_fmt_spec *out, int64_t cols)
{
    int n = 0;
    for (int id = 0; id < Q_FMT_COUNT; id++) {
        q_fmt_spec s = {(q_format_id)id, 0, 0};
        if (id == Q_FMT_INT || id == Q_FMT_UINT) {
            static const int bits[] = {2, 3, 4, 8};
            static const int64_t groups[] = {Q_GROUP_CHANNEL, 32, Q_GROUP_TENSOR};
            for (int b = 0; b < 4; b++) {
                for (int g = 0; g < 3; g++) {
                    s.bits = bits[b];
                    s.group = groups[g];
                    if (q_fmt_fits(&s, cols))
                        out[n++] = s;
                }
            }
            continue;
        }
        if (id == Q_FMT_NF4)
            s.group = 64;
        if (id == Q_FMT_FP8_E4M3 || id == Q_FMT_FP8_E5M2) {
            s.group = Q_GROUP_CHANNEL;
            if (q_fmt_fits(&s, cols))
                out[n++] = s;
            s.group = 32;
        }
        if (q_fmt_fits(&s, cols))
            out[n++] = s;
    }
    return n;
}

static void check_tensor(const q_tensor *t, const q_fmt_spec *s, const float *im, q_method m,
                         int threads)
{
    q_metrics_acc probe, ref;
    int64_t bad;
    bool search = m == Q_METHOD_WSEARCH;
    reference(t, s, im, search, 0, &probe, &bad);
    double range = probe.max_abs > 0 ? 1.25 * probe.max_abs : 0;
    reference(t, s, im, search, range, &ref, &bad);
    for (int scalar = 0; scalar < 2; scalar++) {
        k_preview_req req = {.tensor = t, .fmt = *s, .method = m, .imatrix = im,
                             .threads = threads, .skip_estimate = true,
                             .hist_range = range, .force_scalar = scalar};
        k_preview_result r;
        q_err err = {{0}};
        q_status st = k_preview_tensor(&req, NULL, NULL, &r, &err);
        if (st != Q_OK)
            print_error("%s\n", err.msg);
        assert_int_equal(st, Q_OK);
        assert_true(r.exact);
        assert_int_equal(r.n_nonfinite, bad);
        char nm[32];
        if (r.acc.n != ref.n || fabs(r.acc.sum_e2 - ref.sum_e2) > 1e-9 * ref.sum_e2 ||
            !(r.acc.max_abs == ref.max_abs || isnan(ref.max_abs)) ||
            memcmp(r.acc.hist, ref.hist, sizeof ref.hist) != 0)
            print_error("format %s scalar=%d\n", q_fmt_name(s, nm, sizeof nm), scalar);
        assert_acc_match(&r.acc, &ref);
    }
}

static void test_formats_sources(void **state)
{
    (void)state;
    const int64_t rows = 37, cols = 256;
    float *x = gen(rows, cols, 0x1234);
    float *im = gen(1, cols, 0x99);
    for (int64_t c = 0; c < cols; c++)
        im[c] = im[c] * im[c] * 1e4f + 0.01f;
    static const uint32_t dts[] = {Q_DT_F32, Q_DT_F16, Q_DT_BF16};
    q_fmt_spec specs[64];
    int ns = all_specs(specs, cols);
    assert_true(ns >= Q_FMT_COUNT);
    for (int d = 0; d < 3; d++) {
        ttensor tt;
        make_tensor(&tt, x, rows, cols, dts[d]);
        for (int i = 0; i < ns; i++) {
            check_tensor(&tt.t, &specs[i], NULL, Q_METHOD_RTN, 0);
            if (d == 0) {
                check_tensor(&tt.t, &specs[i], im, Q_METHOD_RTN, 0);
                check_tensor(&tt.t, &specs[i], im, Q_METHOD_WSEARCH, 2);
            }
        }
        free(tt.data);
    }
    free(x);
    free(im);
}

/* Odd row lengths (tails of SIMD loops and groups), zero rows, NaN/Inf. */
static void test_edges(void **state)
{
    (void)state;
    /* 256 and 544: the SIMD path's batches of eight 32-blocks (and a tail) */
    static const int64_t colss[] = {67, 96, 160, 256, 544};
    for (int k = 0; k < 5; k++) {
        int64_t rows = 23, cols = colss[k];
        float *x = gen(rows, cols, 0x777 + (uint64_t)k);
        for (int64_t c = 0; c < cols; c++)
            x[5 * cols + c] = 0.0f; /* an all-zero row */
        for (int64_t c = 0; c < 32 && c < cols; c++)
            x[7 * cols + c] = -0.0f; /* a block of negative zeros */
        x[9 * cols + 1] = NAN;
        x[10 * cols + 2] = INFINITY;
        x[11 * cols + 3] = -INFINITY;
        x[12 * cols + 4] = 1e-40f; /* subnormals */
        x[12 * cols + 5] = -3e-39f;
        for (int64_t c = 0; c < cols; c++) /* a row of subnormals: inf 1/d */
            x[13 * cols + c] = (c % 3 ? 1 : -1) * 1e-41f * (float)(c + 1);
        for (int64_t c = 0; c < cols; c++) /* huge values: f16 scale overflow */
            x[14 * cols + c] = (float)(c - 10) * 1e30f;
        for (int64_t c = 0; c + 32 <= cols; c += 32) { /* ±max ties, in both orders */
            x[15 * cols + c + 3] = (c / 32) % 2 ? 50.0f : -50.0f;
            x[15 * cols + c + 20] = (c / 32) % 2 ? -50.0f : 50.0f;
        }
        for (int64_t c = 0; c < cols; c++) /* one nonzero value per block */
            x[16 * cols + c] = c % 32 == 5 ? -0.25f : 0.0f;
        for (int64_t c = 0; c < cols; c++) /* minima exactly zero (q4_1, q5_1) */
            x[17 * cols + c] = c % 32 == 0 ? 0.0f : fabsf(x[17 * cols + c]);
        ttensor tt;
        make_tensor(&tt, x, rows, cols, Q_DT_F32);
        q_fmt_spec specs[64];
        int ns = all_specs(specs, cols);
        for (int i = 0; i < ns; i++)
            check_tensor(&tt.t, &specs[i], NULL, Q_METHOD_RTN, 2);
        /* A format that does not fit is refused. */
        q_fmt_spec q4k = {Q_FMT_Q4_K, 0, 0};
        k_preview_req req = {.tensor = &tt.t, .fmt = q4k, .method = Q_METHOD_RTN};
        q_err err = {{0}};
        if (cols % 256)
            assert_int_equal(k_preview_tensor(&req, NULL, NULL, NULL, &err), Q_EUSAGE);
        free(tt.data);
        free(x);
    }
}

/* The errors of test_acc_rows' row r (range 2^-6): kind 0 uniform over
 * ±1.1 range (some beyond it), 1 on bin edges exactly and one ulp either side,
 * 2 zero, 3 the same error everywhere (one bin gets every count: the high
 * bit planes), 4 a mix. */
static void acc_errors(float *y, float *x, int64_t cols, int64_t r)
{
    const double range = 0x1p-6;
    int kind = (int)(r % 5);
    for (int64_t c = 0; c < cols; c++) {
        int k = kind == 4 ? (int)(rng() % 4) : kind;
        double e;
        if (k == 0) {
            e = (2.0 * urand() - 1.0) * 1.1 * range;
        } else if (k == 1) {
            float edge = (float)(((double)(rng() % 65) / 32.0 - 1.0) * range);
            int side = (int)(rng() % 3);
            e = side == 0 ? edge : side == 1 ? nextafterf(edge, 1.0f) : nextafterf(edge, -1.0f);
        } else if (k == 2) {
            e = 0.0;
        } else {
            e = 0.3 * range;
        }
        y[c] = k == 1 ? (float)e : x[c] + (float)e; /* edges: x = 0, so e is y exactly */
    }
    if (kind == 1)
        memset(x, 0, (size_t)cols * sizeof *x);
}

/* k_acc_row (SIMD: the bit-sliced histogram in steps of 1024 and 256
 * values, pairs for the rest, the scalar tail) against q_metrics_add over
 * the same rows: counts equal, sums within 1e-9, maxima equal; widths around
 * the steps, enough rows that single bins reach 2^17 counts, accumulators of
 * three rows sharing the scratch (merged), a flush inside one, ranges outside
 * the SIMD bins' span (scalar path), and rows the quantizer all but zeroes. */
static void test_acc_rows(void **state)
{
    (void)state;
    static const int64_t colss[] = {16, 240, 256, 272, 1024, 1335, 4096, 2576};
    static const double ranges[] = {0x1p-6, 0x1p-6 * 0.7, 1e-35, 1e35};
    k_acc_scratch *p = calloc(1, sizeof *p);
    assert_non_null(p);
    for (int k = 0; k < 8; k++) {
        const int64_t cols = colss[k];
        const int64_t rows = (INT64_C(1) << 19) / cols > 5 ? (INT64_C(1) << 19) / cols : 5;
        float *x = gen(rows, cols, 0xacc0 + (uint64_t)k);
        float *y = malloc((size_t)(rows * cols) * sizeof *y);
        assert_non_null(y);
        for (int64_t r = 0; r < rows; r++)
            acc_errors(y + r * cols, x + r * cols, cols, r);
        for (int g = 0; g < 4; g++) {
            if (g >= 2 && cols != 1335)
                continue;
            q_metrics_acc got, want;
            q_metrics_init(&got, ranges[g]);
            q_metrics_init(&want, ranges[g]);
            memset(p, 0, sizeof *p); /* one result per zeroed scratch */
            /* rows in blocks of three accumulators sharing p, merged (as the
             * preview's row blocks), the first block flushed midway */
            q_metrics_acc blk;
            q_metrics_init(&blk, ranges[g]);
            for (int64_t r = 0; r < rows; r++) {
                const float *xr = x + r * cols, *yr = y + r * cols;
                k_acc_row(&blk, p, xr, yr, cols, NULL, true, true, NULL);
                if (r == 1)
                    k_acc_flush(&blk, p);
                if (r % 3 == 2 || r == rows - 1) {
                    k_acc_flush(&blk, p);
                    q_metrics_merge(&got, &blk);
                    q_metrics_init(&blk, ranges[g]);
                }
                q_metrics_add(&want, xr, yr, 1, cols, NULL);
            }
            if (memcmp(got.hist, want.hist, sizeof want.hist) != 0)
                print_error("cols %lld range %g\n", (long long)cols, ranges[g]);
            assert_acc_match(&got, &want);
        }
        /* quantizers that all but zero the rows (ŵ = 1e-5 w, then 0): Σ ŵ²
         * and Σ w ŵ far below Σ w², where the SIMD loop sums them directly */
        for (int z = 0; z < 2; z++) {
            q_metrics_acc got, want;
            q_metrics_init(&got, 0x1p-6);
            q_metrics_init(&want, 0x1p-6);
            memset(p, 0, sizeof *p);
            int64_t nr = rows < 8 ? rows : 8;
            for (int64_t c = 0; c < nr * cols; c++)
                y[c] = z ? 0.0f : 1e-5f * x[c];
            for (int64_t r = 0; r < nr; r++) {
                k_acc_row(&got, p, x + r * cols, y + r * cols, cols, NULL, true, true, NULL);
                q_metrics_add(&want, x + r * cols, y + r * cols, 1, cols, NULL);
            }
            k_acc_flush(&got, p);
            assert_acc_match(&got, &want);
        }
        free(x);
        free(y);
    }
    /* every error in one bin, 48 rows of 4096 and one flush at the end: each
     * counter of the AVX-512 bit planes passes 2^13 (the planes updated at
     * every step) and ripples into the planes above */
    {
        const int64_t rows = 48, cols = 4096;
        float *x = gen(rows, cols, 0xacc9);
        float *y = malloc((size_t)(rows * cols) * sizeof *y);
        assert_non_null(y);
        for (int64_t c = 0; c < rows * cols; c++)
            y[c] = x[c] + (c % 3 ? 0.001f : -0.004f);
        q_metrics_acc got, want;
        q_metrics_init(&got, 0x1p-6);
        q_metrics_init(&want, 0x1p-6);
        memset(p, 0, sizeof *p);
        for (int64_t r = 0; r < rows; r++) {
            k_acc_row(&got, p, x + r * cols, y + r * cols, cols, NULL, true, true, NULL);
            q_metrics_add(&want, x + r * cols, y + r * cols, 1, cols, NULL);
        }
        k_acc_flush(&got, p);
        assert_memory_equal(got.hist, want.hist, sizeof want.hist);
        assert_acc_match(&got, &want);
        free(x);
        free(y);
    }
    free(p);
}

/* k_fq_row_check: every format (and the scalar path), widths 256, 544 (the
 * AVX-512 form's steps of eight blocks and a tail) and 67: a NaN, +Inf or -Inf
 * at the first value, in the middle or last is found; a finite row gives
 * k_fq_row's values and finiteness. */
static void test_fq_check(void **state)
{
    (void)state;
    static const int64_t colss[] = {256, 544, 67};
    static const float bads[] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
        const int64_t cols = colss[k];
        float *x = gen(1, cols, 0xc4ec + (uint64_t)k);
        float *y = malloc((size_t)cols * sizeof *y), *y2 = malloc((size_t)cols * sizeof *y2);
        uint8_t *qb = malloc((size_t)cols * 4);
        assert_true(y && y2 && qb);
        q_fmt_spec specs[64];
        int ns = all_specs(specs, cols);
        for (int i = 0; i < ns; i++) {
            for (int scalar = 0; scalar < 2; scalar++) {
                k_fq fq;
                q_err err;
                assert_int_equal(k_fq_init(&fq, &specs[i], cols, scalar, &err), Q_OK);
                if (specs[i].group == Q_GROUP_TENSOR)
                    q_fmt_prepare(&specs[i], x, cols, &fq.ctx);
                bool fin = k_fq_row(&fq, x, y, NULL, qb);
                int r = k_fq_row_check(&fq, x, y2, NULL, qb);
                /* a check tells at least what the plain call does; it says
                 * finite only of a finite y, and the SIMD grids and float
                 * targets say so of every row here (moderate values) */
                bool yfin = true;
                for (int64_t c = 0; c < cols; c++)
                    yfin &= isfinite(y2[c]) != 0;
                assert_true(r == K_FQ_FINITE || (r == 0 && !fin));
                assert_true(r != K_FQ_FINITE || yfin);
                if (fq.simd && (fq.fmt->ggml_type < 0 || k_float_is(specs[i].id)))
                    assert_int_equal(r, K_FQ_FINITE);
                assert_memory_equal(y, y2, (size_t)cols * sizeof *y);
                /* the largest finite values: y stays finite (fp8: fmax times
                 * the rounded scale) or is not called so; two in one lane of
                 * 16, whose sum overflows (kf_range_512's check) */
                float keep0 = x[1], keep1 = x[2], keep17 = x[17];
                x[1] = FLT_MAX;
                x[2] = -FLT_MAX;
                x[17] = FLT_MAX;
                fin = k_fq_row(&fq, x, y, NULL, qb);
                r = k_fq_row_check(&fq, x, y2, NULL, qb);
                yfin = true;
                for (int64_t c = 0; c < cols; c++)
                    yfin &= isfinite(y2[c]) != 0;
                assert_true(r == K_FQ_FINITE || (r == 0 && !fin));
                assert_true(r != K_FQ_FINITE || yfin);
                if (fq.simd && fq.fmt->ggml_type < 0) /* the grids */
                    assert_int_equal(r, K_FQ_FINITE);
                assert_memory_equal(y, y2, (size_t)cols * sizeof *y);
                x[1] = keep0;
                x[2] = keep1;
                x[17] = keep17;
                const int64_t at[] = {0, cols / 2 + 3, cols - 1};
                for (int a = 0; a < 3; a++) {
                    float keep = x[at[a]];
                    x[at[a]] = bads[(a + i) % 3];
                    char nm[32];
                    r = k_fq_row_check(&fq, x, y2, NULL, qb);
                    if (r != K_FQ_NONFINITE)
                        print_error("format %s scalar %d at %lld\n",
                                    q_fmt_name(&specs[i], nm, sizeof nm), scalar,
                                    (long long)at[a]);
                    assert_int_equal(r, K_FQ_NONFINITE);
                    x[at[a]] = keep;
                }
            }
        }
        free(x);
        free(y);
        free(y2);
        free(qb);
    }
}

/* Value c of a row that probes nf4's level choice: groups of 64 whose
 * maximum is 1 (so t = x), the other values at two ulps either side of each
 * midpoint between levels and of each edge of the SIMD form's cells. */
static float nf4_probe(int64_t c)
{
    static const float lev[16] = {
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
        0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
        0.7229568362236023f, 1.0f};
    int64_t j = c % 64, item = (c / 64 * 63 + j - 1) % 240;
    if (j == 0)
        return 1.0f;
    /* the cell edges: (j - 16) / (16 - 2^-6), k_fused.c's KF_NF4_S */
    float v = item < 75 ? (float)(((double)lev[item / 5] + lev[item / 5 + 1]) / 2.0)
                        : (float)((double)((item - 75) / 5 - 16) / 15.984375);
    for (int64_t u = item % 5 - 2; u != 0; u += u < 0 ? 1 : -1) /* -2 .. +2 ulps */
        v = nextafterf(v, u < 0 ? -INFINITY : INFINITY);
    return fminf(fmaxf(v, -1.0f), 1.0f);
}

/* A row whose grid scale is s0 = 3/64 in every group (int: group maxima of
 * half · s0; uint: values in [0, qhi · s0]; fp8: maxima of fmax · s0), its
 * other values at the half-integers of x / s0 (fp8: the midpoints between
 * its values) and up to three ulps either side: where a quotient rounded
 * any other way than the reference's x / s lands on the other side. False
 * for the other formats. */
static bool grid_tie_row(const q_fmt_spec *s, float *x, int64_t cols)
{
    const float s0 = 3.0f / 64.0f;
    const int bits = s->bits;
    float top;
    if (s->id == Q_FMT_INT)
        top = (float)((1 << bits) - 1) / 2.0f;
    else if (s->id == Q_FMT_UINT)
        top = (float)((1 << bits) - 1);
    else if (s->id == Q_FMT_FP8_E4M3)
        top = 448.0f;
    else if (s->id == Q_FMT_FP8_E5M2)
        top = 57344.0f;
    else
        return false;
    const bool fp8 = s->id == Q_FMT_FP8_E4M3 || s->id == Q_FMT_FP8_E5M2;
    const int mbits = s->id == Q_FMT_FP8_E4M3 ? 3 : 2;
    for (int64_t c = 0; c < cols; c++) {
        int64_t j = c % 32, i = c / 32 * 31 + j;
        float v;
        if (j == 0) {
            v = top;
        } else if (fp8) { /* (2m + 1) / 2 · 2^(e - mbits), m in [2^mbits, 2^(mbits+1)) */
            int m = (1 << mbits) + (int)(i % (1 << mbits)), e = (int)(i / 8 % 12) - 6;
            v = ldexpf((float)(2 * m + 1) / 2.0f, e - mbits);
            v = (i % 2 ? -v : v);
        } else if (s->id == Q_FMT_INT) {
            int lv = (int)(i % (int64_t)(2 * (int)top)) - (int)top; /* k + ½ within ±half */
            v = (float)lv + 0.5f;
        } else {
            v = (float)(i % (int64_t)top) + 0.5f;
        }
        float xv = v * s0;
        for (int u = 0; u < (int)(i % 7) - 3; u++)
            xv = nextafterf(xv, INFINITY);
        for (int u = 0; u < 3 - (int)(i % 7); u++)
            xv = nextafterf(xv, -INFINITY);
        x[c] = j == 0 ? top * s0 : xv;
    }
    return true;
}

/* k_fq_row, SIMD against the scalar reference, value by value (sums would hide
 * a single wrong block under a large row): edge rows at widths that take the
 * batches of eight 32-blocks, their tails and the row kernel's pieces, and
 * for the grids a row of ties (grid_tie_row). */
static void test_fq_rows(void **state)
{
    (void)state;
    /* 4352: the AVX-512 row kernel's pieces of 64 blocks, twice and a part */
    static const int64_t colss[] = {256, 544, 4352};
    for (int k = 0; k < 3; k++) {
        const int64_t cols = colss[k], rows = 10;
        float *x = gen(rows + 1, cols, 0x51 + (uint64_t)k);
        for (int64_t c = 0; c + 32 <= cols; c += 32) { /* ±max ties, both orders */
            x[0 * cols + c + 3] = (c / 32) % 2 ? 50.0f : -50.0f;
            x[0 * cols + c + 20] = (c / 32) % 2 ? -50.0f : 50.0f;
        }
        for (int64_t c = 0; c < cols; c++) {
            x[1 * cols + c] = c % 32 == 5 ? -0.25f : 0.0f;   /* one nonzero per block */
            x[2 * cols + c] = c % 32 == 0 ? 0.0f : fabsf(x[2 * cols + c]); /* min 0 */
            x[3 * cols + c] = c % 32 == 0 ? -0.0f : -fabsf(x[3 * cols + c]); /* max -0 */
            x[4 * cols + c] = (float)(c - 10) * 1e30f;      /* f16 scale overflow */
            x[5 * cols + c] = (c % 3 ? 1 : -1) * 1e-41f * (float)(c + 1); /* subnormal */
            x[6 * cols + c] = c < 64 ? 0.0f : x[6 * cols + c]; /* zero blocks */
            /* q8_0 ties: block maximum 127, so 1/d = 1 and v·id = v; v = k + ½
             * for k in -127..126, exactly and one ulp either side */
            int64_t j = c % 32, i = c / 32 * 31 + j - 1, lv = i / 3 % 254 - 127;
            float tie = (float)lv + 0.5f;
            x[7 * cols + c] = j == 0         ? 127.0f
                              : i % 3 == 0 ? tie
                              : i % 3 == 1 ? nextafterf(tie, INFINITY)
                                           : nextafterf(tie, -INFINITY);
            x[8 * cols + c] = nf4_probe(c);
            /* subnormals down to a few ulps: fp8 scales of 1 or 2 · 2^-149,
             * far from max |x| / fmax, so values pass fmax and saturate */
            x[9 * cols + c] = (c % 2 ? 1 : -1) * ldexpf((float)(c % 64 * 16 + 1), -149);
        }
        float *ys = malloc((size_t)cols * sizeof *ys), *yv = malloc((size_t)cols * sizeof *yv);
        uint8_t *qb = malloc((size_t)cols * 4);
        q_fmt_spec specs[64];
        int ns = all_specs(specs, cols);
        for (int i = 0; i < ns; i++) {
            k_fq fs, fv;
            q_err err;
            assert_int_equal(k_fq_init(&fs, &specs[i], cols, true, &err), Q_OK);
            assert_int_equal(k_fq_init(&fv, &specs[i], cols, false, &err), Q_OK);
            if (specs[i].group == Q_GROUP_TENSOR) { /* the per-tensor range */
                q_fmt_prepare(&specs[i], x, rows * cols, &fs.ctx);
                fv.ctx = fs.ctx;
            }
            float *tie = x + rows * cols; /* this format's row of ties, if any */
            const bool ties = specs[i].group != Q_GROUP_TENSOR &&
                              grid_tie_row(&specs[i], tie, cols);
            for (int64_t r = 0; r < rows + ties; r++) {
                k_fq_row(&fs, x + r * cols, ys, NULL, qb);
                k_fq_row(&fv, x + r * cols, yv, NULL, qb);
                char nm[32];
                if (memcmp(ys, yv, (size_t)cols * sizeof *ys) != 0)
                    print_error("format %s row %lld\n", q_fmt_name(&specs[i], nm, sizeof nm),
                                (long long)r);
                assert_memory_equal(ys, yv, (size_t)cols * sizeof *ys);
            }
        }
        free(ys);
        free(yv);
        free(qb);
        free(x);
    }
}

/* k_dequant_fast against q_dtype's reference dequantizers: q2_K..q6_K, iq4_NL
 * and the 32-value formats (q8_0, q4_0, q4_1, q5_0, q5_1) on random blocks
 * (every field random, d and dmin or m finite f16), F16 and BF16 on every bit
 * pattern; bit by bit. */
static void test_dequant_fast(void **state)
{
    (void)state;
    static const uint32_t types[] = {Q_DT_Q2_K, Q_DT_Q3_K, Q_DT_Q4_K, Q_DT_Q5_K,
                                     Q_DT_Q6_K, Q_DT_IQ4_NL, Q_DT_Q8_0, Q_DT_Q4_0,
                                     Q_DT_Q4_1, Q_DT_Q5_0, Q_DT_Q5_1};
    /* 256 values: one k-quant block, or 8 of the 32-value types */
    const int64_t nblk = 512, n = nblk * 256;
    float *ya = malloc((size_t)n * sizeof *ya), *yb = malloc((size_t)n * sizeof *yb);
    rng_state = 0xd0;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        q_dequant_fn fast = k_dequant_fast(types[t], true);
        if (!fast) {
            assert_false(k_cpu_get()->avx2); /* only a machine without AVX2 has none */
            continue;
        }
        assert_null(k_dequant_fast(types[t], false));
        size_t bs = (size_t)q_dtype_bytes(types[t], 256); /* bytes per 256 values */
        uint8_t *blk = malloc(bs * (size_t)nblk);
        for (size_t i = 0; i < bs * (size_t)nblk; i++)
            blk[i] = (uint8_t)(rng() >> 24);
        /* d (and dmin, which follows it where there is one): exponent < 16, finite */
        const size_t doff = types[t] == Q_DT_Q2_K   ? offsetof(block_q2_K, d)
                            : types[t] == Q_DT_Q3_K ? offsetof(block_q3_K, d)
                            : types[t] == Q_DT_Q6_K ? offsetof(block_q6_K, d)
                                                    : 0;
        const bool b32 = q_dtype_get(types[t])->blck == 32; /* else 256 */
        const size_t unit = b32 ? bs / 8 : bs; /* one block */
        const bool two = types[t] == Q_DT_Q2_K || types[t] == Q_DT_Q4_K ||
                         types[t] == Q_DT_Q5_K || types[t] == Q_DT_Q4_1 ||
                         types[t] == Q_DT_Q5_1; /* a second f16 (dmin, m) follows d */
        for (int64_t b = 0; b < (b32 ? nblk * 8 : nblk); b++) {
            blk[(size_t)b * unit + doff + 1] &= 0xbf;
            if (two)
                blk[(size_t)b * unit + doff + 3] &= 0xbf;
        }
        q_dtype_get(types[t])->dequant_ref(blk, ya, n);
        fast(blk, yb, n);
        assert_memory_equal(ya, yb, (size_t)n * sizeof *ya);
        free(blk);
    }
    free(ya);
    free(yb);
    /* F16 and BF16: every bit pattern, NaNs included (bits compared) */
    static const uint32_t halves[] = {Q_DT_F16, Q_DT_BF16};
    uint16_t *all = malloc(65536 * sizeof *all);
    float *ra = malloc(65539 * sizeof *ra), *rb = malloc(65539 * sizeof *rb);
    for (uint32_t i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    for (int t = 0; t < 2; t++) {
        q_dequant_fn fast = k_dequant_fast(halves[t], true);
        if (!fast)
            continue;
        /* tails of 5, 6, 7 and 0 after the AVX2 steps of 8, of 29, 30, 31 and 0
         * after the AVX-512 steps of 32 */
        for (int64_t len = 65533; len <= 65536; len++) {
            q_dtype_get(halves[t])->dequant_ref(all, ra, len);
            fast(all, rb, len);
            assert_memory_equal(ra, rb, (size_t)len * sizeof *ra);
        }
    }
    free(all);
    free(ra);
    free(rb);
}

/* _mm_cvtps_ph (round to nearest even), used by the batched kernels for the f16
 * scales, against q_f32_to_f16 next to every rounding boundary: each f16 value,
 * each midpoint between neighbours and the floats one ulp either side, both
 * signs, up to the overflow threshold and past it. */
#if defined(__x86_64__)
__attribute__((target("f16c"))) static uint16_t f16c_round(float v)
{
    return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT), 0);
}
#endif

static void test_f16c_rounding(void **state)
{
    (void)state;
#if defined(__x86_64__)
    if (!k_cpu_get()->f16c)
        skip();
    for (uint32_t h = 0; h < 0x7c00; h++) {
        float a = q_f16_to_f32((uint16_t)h), b = q_f16_to_f32((uint16_t)(h + 1));
        float mid = a + (b - a) / 2; /* exact: a and b are f16 values */
        const float probes[] = {a, mid, nextafterf(mid, 0.0f), nextafterf(mid, INFINITY),
                                nextafterf(a, INFINITY), nextafterf(b, 0.0f)};
        for (size_t i = 0; i < sizeof probes / sizeof *probes; i++) {
            for (int sgn = 0; sgn < 2; sgn++) {
                float v = sgn ? -probes[i] : probes[i];
                if (q_f32_to_f16(v) != f16c_round(v))
                    print_error("f16 of %a: %04x vs %04x\n", (double)v, q_f32_to_f16(v),
                                f16c_round(v));
                assert_int_equal(q_f32_to_f16(v), f16c_round(v));
            }
        }
    }
    const float big[] = {65504.0f, 65519.99f, 65520.0f, 65536.0f, 1e9f, FLT_MAX, INFINITY};
    for (size_t i = 0; i < sizeof big / sizeof *big; i++)
        assert_int_equal(q_f32_to_f16(big[i]), f16c_round(big[i]));
#else
    skip();
#endif
}

/* The float bits of test_float_targets' value i: first the edges, with
 * either sign (f16's largest finite value, its overflow tie 65520 and one ulp
 * either side, f16 and bf16 rounding ties with an odd and an even kept bit,
 * bf16's overflow to infinity, zeros, infinities, NaNs, subnormals), then
 * every 4099th bit pattern (NaNs with all kinds of payloads among them). */
static uint32_t float_probe(int64_t i)
{
    static const uint32_t edges[] = {
        0x477fe000u, 0x477ff000u, 0x477fefffu, 0x477ff001u, /* 65504, 65520, ±1 ulp */
        0x3f801000u, 0x3f803000u, 0x3f801001u, 0x3f802fffu, /* f16 ties: even, odd */
        0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f817fffu, /* bf16 ties */
        0x7f7f8000u, 0x7f7f7fffu, 0x7f7fffffu,             /* bf16: to inf, not, inf */
        0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, /* ±0, ±inf */
        0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fbfffffu, /* quiet and signalling NaNs */
        0x7fff8000u, 0x7fffffffu, 0x00000001u, 0x807fffffu, /* NaN next to a carry, subnormals */
        0x33000000u, 0x33000001u, 0x387fe000u, 0x38800000u, /* f16: 2^-25, 2^-14 */
    };
    const int64_t ne = (int64_t)(sizeof edges / sizeof *edges);
    if (i < 2 * ne) /* first, so that the rows of the fused test hold them */
        return edges[i % ne] ^ (uint32_t)(i / ne) << 31;
    return (uint32_t)((i - 2 * ne) * 4099);
}

/* f32, f16 and bf16 as targets: the fused fake quantization (k_fq_row, rows
 * of 4096 and a ragged 4099) and the apply writers (k_quantize_f16/bf16)
 * against the references, bit for bit, on bit patterns across the whole float
 * line, and again with the NaNs and infinities made finite (the exponent's top
 * bit cleared: f16 overflows in finite rows); k_fq_row_check's verdict on
 * each row. */
static void test_float_targets(void **state)
{
    (void)state;
    const int64_t n = 1048576 + 62;
    float *x = malloc((size_t)n * sizeof *x), *ya = malloc((size_t)n * sizeof *ya);
    float *yb = malloc((size_t)n * sizeof *yb);
    uint16_t *ha = malloc((size_t)n * sizeof *ha), *hb = malloc((size_t)n * sizeof *hb);
    uint8_t *qb = malloc(4099 * sizeof(float)); /* the scalar path's quantized row */
    assert_true(x && ya && yb && ha && hb && qb);
    static const q_format_id ids[] = {Q_FMT_F32, Q_FMT_F16, Q_FMT_BF16};
    for (int k = 0; k < 6; k++) { /* the three formats, then again on finite values */
        const int f = k % 3;
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = float_probe(i);
            if (k >= 3 && (u & 0x7f800000u) == 0x7f800000u)
                u &= ~0x40000000u;
            memcpy(&x[i], &u, sizeof u);
        }
        for (int w = 0; w < 2; w++) { /* rows of 4096, then ragged ones of 4099 */
            const int64_t cols = w ? 4099 : 4096;
            q_fmt_spec spec = {ids[f], 0, 0};
            k_fq fs, fv;
            q_err err;
            assert_int_equal(k_fq_init(&fs, &spec, cols, true, &err), Q_OK);
            assert_int_equal(k_fq_init(&fv, &spec, cols, false, &err), Q_OK);
            memset(ya, 0x5a, (size_t)n * sizeof *ya); /* no values left from before */
            memset(yb, 0xa5, (size_t)n * sizeof *yb);
            for (int64_t r = 0; r + cols <= n; r += cols) {
                (void)k_fq_row(&fs, x + r, ya + r, NULL, qb); /* scalar: the reference */
                int chk = k_fq_row_check(&fv, x + r, yb + r, NULL, qb);
                bool xfin = true, fin = true;
                for (int64_t c = 0; c < cols; c++) {
                    xfin &= isfinite(x[r + c]) != 0;
                    fin &= isfinite(ya[r + c]) != 0;
                }
                fin &= fv.simd; /* the scalar path does not tell */
                assert_int_equal(chk, !xfin ? K_FQ_NONFINITE : fin ? K_FQ_FINITE : 0);
                if (xfin) /* else k_fq_row_check's y holds nothing of use */
                    assert_memory_equal(ya + r, yb + r, (size_t)cols * sizeof *ya);
                assert_int_equal(k_fq_row(&fv, x + r, yb + r, NULL, qb), fin);
                if (memcmp(ya + r, yb + r, (size_t)cols * sizeof *ya) != 0)
                    print_error("format %d row at %lld\n", (int)ids[f], (long long)r);
                assert_memory_equal(ya + r, yb + r, (size_t)cols * sizeof *ya);
            }
        }
    }
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = float_probe(i);
        memcpy(&x[i], &u, sizeof u);
    }
    static const q_quant_fn fast[] = {k_quantize_f16, k_quantize_bf16};
    for (int f = 0; f < 2; f++) {
        const q_format *fmt = q_format_get(f ? Q_FMT_BF16 : Q_FMT_F16);
        const int64_t rows[] = {1, 7}, cols[] = {n, n / 7};
        for (int s = 0; s < 2; s++) {
            memset(ha, 0x55, (size_t)n * sizeof *ha);
            memset(hb, 0xaa, (size_t)n * sizeof *hb);
            size_t a = fast[f](x, ha, rows[s], cols[s], NULL);
            size_t b = fmt->quantize_ref(x, hb, rows[s], cols[s], NULL);
            assert_int_equal(a, b);
            assert_int_equal(a, (size_t)(rows[s] * cols[s]) * sizeof *ha);
            assert_memory_equal(ha, hb, a);
        }
    }
    free(x);
    free(ya);
    free(yb);
    free(ha);
    free(hb);
    free(qb);
}

/* Apply variants: byte-identical blocks, with edge blocks mixed in. */
static void test_apply_variants(void **state)
{
    (void)state;
    /* 512 columns: batches of eight blocks; 5 x 96: 15 blocks, a batch and a tail */
    static const int64_t shapes[2][2] = {{64, 512}, {5, 96}};
    for (int sh = 0; sh < 2; sh++) {
        const int64_t rows = shapes[sh][0], cols = shapes[sh][1];
        float *x = gen(rows, cols, 0xabc);
        for (int64_t c = 0; c < 32 && rows == 64; c++) {
            x[c] = 0.0f;
            x[cols + c] = c % 2 ? -0.0f : 0.0f;
            x[2 * cols + c] = 1e-41f * (float)c;
            x[3 * cols + c] = (float)(c - 16) * 3e35f;
            x[4 * cols + c] = (float)c * 0.5f; /* exact ties for several scales */
            x[5 * cols + c] = (float)(c - 16) / 127.0f;
            x[6 * cols + c] = 5.0f; /* constant block */
            x[7 * cols + c] = -1.0f + (float)(c == 9);
            /* q8_0 with d = 1 exactly: x * id are exact halves, roundf's ties */
            x[8 * cols + c] = c == 31 ? 127.0f : (float)(c - 16) + 0.5f;
            x[9 * cols + c] = c == 0 ? -127.0f : (float)(16 - c) - 0.5f;
        }
        for (int64_t c = 0; c + 32 <= cols && rows == 64; c += 32) {
            x[10 * cols + c + 3] = (c / 32) % 2 ? 50.0f : -50.0f; /* ±max ties */
            x[10 * cols + c + 20] = (c / 32) % 2 ? -50.0f : 50.0f;
            for (int k = 0; k < 32; k++) {
                x[11 * cols + c + k] = k == 7 ? 0.0f : fabsf(x[11 * cols + c + k]); /* min 0 */
                x[12 * cols + c + k] = k == 5 ? -0.25f : 0.0f; /* one nonzero value */
            }
        }
        float *im = gen(1, cols, 0x5);
        for (int64_t c = 0; c < cols; c++)
            im[c] = fabsf(im[c]) + 0.001f;
        static const q_quant_fn fast[] = {k_quantize_q8_0, k_quantize_q4_0, k_quantize_q4_1,
                                          k_quantize_q5_0, k_quantize_q5_1};
        static const q_quant_fn ref[] = {q_quantize_q8_0, q_quantize_q4_0, q_quantize_q4_1,
                                         q_quantize_q5_0, q_quantize_q5_1};
        size_t cap = (size_t)(rows * cols) * 2;
        uint8_t *a = malloc(cap), *b = malloc(cap);
        assert_true(a && b);
        for (int f = 0; f < 5; f++) {
            for (int w = 0; w < 2; w++) {
                memset(a, 0x55, cap);
                memset(b, 0xaa, cap);
                size_t na = fast[f](x, a, rows, cols, w ? im : NULL);
                size_t nb = ref[f](x, b, rows, cols, w ? im : NULL);
                assert_int_equal(na, nb);
                assert_memory_equal(a, b, na);
            }
        }
        free(a);
        free(b);
        free(x);
        free(im);
    }
}

/* 1 vs 2, 3 and 7 threads (more than this machine's cores): the same bits. */
static void test_threads(void **state)
{
    (void)state;
    const int64_t rows = 300, cols = 512;
    float *x = gen(rows, cols, 0x31);
    ttensor tt;
    make_tensor(&tt, x, rows, cols, Q_DT_F16);
    static const q_format_id ids[] = {Q_FMT_Q8_0, Q_FMT_Q4_1, Q_FMT_Q4_K, Q_FMT_NF4};
    for (int i = 0; i < 4; i++) {
        q_fmt_spec s = {ids[i], 0, ids[i] == Q_FMT_NF4 ? 64 : 0};
        k_preview_result r1, r2;
        k_preview_req req = {.tensor = &tt.t, .fmt = s, .method = Q_METHOD_RTN,
                             .threads = 1, .skip_estimate = true};
        assert_int_equal(k_preview_tensor(&req, NULL, NULL, &r1, NULL), Q_OK);
        static const int nth[] = {2, 3, 7};
        for (int k = 0; k < 3; k++) {
            req.threads = nth[k];
            assert_int_equal(k_preview_tensor(&req, NULL, NULL, &r2, NULL), Q_OK);
            assert_memory_equal(&r1.acc, &r2.acc, sizeof r1.acc);
            assert_memory_equal(&r1.metrics, &r2.metrics, sizeof r1.metrics);
        }
    }
    free(tt.data);
    free(x);
}

static bool g_emulated; /* QTUNE_TEST_EMULATE=1: the GPU path, emulated */

typedef struct est_log {
    int calls;
    k_preview_result first, last;
} est_log;

static void on_result(void *user, const k_preview_result *r)
{
    est_log *l = user;
    if (l->calls++ == 0)
        l->first = *r;
    l->last = *r;
}

/* The estimate comes first, its band holds the exact value. The data here
 * has 5 degrees of freedom, as real weight matrices roughly do: with 3 the
 * fourth moment is infinite and the sum of w² over the tensor is ruled by a
 * few extreme values that a sample of rows may miss (the band, a
 * first-order one, then covers less than its nominal 95%). */
static void test_estimate_band(void **state)
{
    (void)state;
    const int64_t rows = 2048, cols = 1024;
    g_nu = 5;
    float *x = gen(rows, cols, 0x4242);
    g_nu = 3;
    ttensor tt;
    make_tensor(&tt, x, rows, cols, Q_DT_F32);
    static const char *names[] = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "int4",
                                  "uint3", "nf4",  "fp8_e4m3", "q4_k", "q2_k"};
    for (int i = 0; i < 11; i++) {
        q_fmt_spec s;
        assert_true(q_fmt_parse(names[i], &s));
        est_log l = {0};
        k_preview_req req = {.tensor = &tt.t, .fmt = s, .method = Q_METHOD_RTN};
        k_preview_result fin;
        assert_int_equal(k_preview_tensor(&req, on_result, &l, &fin, NULL), Q_OK);
        assert_int_equal(l.calls, 2);
        assert_false(l.first.exact);
        assert_true(l.last.exact);
        assert_true(l.first.rows_done < rows);
        double v = fin.metrics.rel_rmse;
        print_message("  %-9s estimate %.6f [%.6f, %.6f] exact %.6f  (%.2f ms)\n", names[i],
                      l.first.metrics.rel_rmse, l.first.rel_rmse_lo, l.first.rel_rmse_hi, v,
                      1e3 * l.first.seconds);
        assert_true(l.first.rel_rmse_lo <= v && v <= l.first.rel_rmse_hi);
        if (g_emulated)
            assert_true(fin.on_gpu == k_cuda_fused_has(&s));
        assert_true(l.first.sqnr_lo_db <= fin.metrics.sqnr_db &&
                    fin.metrics.sqnr_db <= l.first.sqnr_hi_db);
    }
    free(tt.data);
    free(x);
}

/* A failure of the GPU path: that preview is measured on the CPU (the same
 * bits as with QTUNE_NO_GPU=1), the failure is kept for the user, later
 * previews stay on the CPU until k_preview_gpu_retry. Emulated runs only. */
static void test_gpu_fault(void **state)
{
    (void)state;
    if (!g_emulated)
        skip();
    const int64_t rows = 256, cols = 512;
    float *x = gen(rows, cols, 0x6a11);
    ttensor tt;
    make_tensor(&tt, x, rows, cols, Q_DT_F32);
    q_fmt_spec s;
    assert_true(q_fmt_parse("q4_0", &s));
    k_preview_req req = {.tensor = &tt.t, .fmt = s, .method = Q_METHOD_RTN};
    k_preview_result gpu, cpu, fin;
    char why[256];
    k_preview_gpu_retry();
    assert_int_equal(k_preview_tensor(&req, NULL, NULL, &gpu, NULL), Q_OK);
    assert_true(gpu.on_gpu);
    assert_false(k_preview_gpu_failed(why, sizeof why));
    assert_string_equal(why, "");
    assert_int_equal(setenv("QTUNE_NO_GPU", "1", 1), 0);
    assert_int_equal(k_preview_tensor(&req, NULL, NULL, &cpu, NULL), Q_OK);
    assert_int_equal(unsetenv("QTUNE_NO_GPU"), 0);
    assert_false(cpu.on_gpu);

    assert_true(k_cuda_fused_emulate_fault(true));
    assert_int_equal(k_preview_tensor(&req, NULL, NULL, &fin, NULL), Q_OK);
    assert_false(fin.on_gpu);
    assert_true(fin.exact);
    assert_memory_equal(&fin.acc, &cpu.acc, sizeof fin.acc);
    assert_true(k_preview_gpu_failed(why, sizeof why));
    assert_string_equal(why, "k_cuda_preview: emulated device fault");
    /* the device works again, the preview does not try it */
    assert_true(k_cuda_fused_emulate_fault(false));
    assert_int_equal(k_preview_tensor(&req, NULL, NULL, &fin, NULL), Q_OK);
    assert_false(fin.on_gpu);
    assert_true(k_preview_gpu_failed(NULL, 0));
    k_preview_gpu_retry();
    assert_false(k_preview_gpu_failed(NULL, 0));
    assert_int_equal(k_preview_tensor(&req, NULL, NULL, &fin, NULL), Q_OK);
    assert_true(fin.on_gpu);
    assert_memory_equal(&fin.acc, &gpu.acc, sizeof fin.acc);
    free(tt.data);
    free(x);
}

typedef struct canceller {
    atomic_int *flag;
    struct timespec at;
} canceller;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *cancel_later(void *p)
{
    canceller *c = p;
    struct timespec d = {0, 30 * 1000 * 1000};
    nanosleep(&d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &c->at);
    atomic_store(c->flag, 1);
    return NULL;
}

/* A cancel set from another thread is honoured quickly (bound 5 ms; the test
 * allows 50 ms against a loaded machine, 100 ms under the sanitizers, which
 * slow the scalar q2_k rows between two polls threefold, and prints the
 * figure). */
#if defined(__SANITIZE_ADDRESS__)
#define CANCEL_BOUND_S 0.100
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CANCEL_BOUND_S 0.100
#endif
#endif
#ifndef CANCEL_BOUND_S
#define CANCEL_BOUND_S 0.050
#endif
static void test_cancel(void **state)
{
    (void)state;
    const int64_t rows = 2048, cols = 4096;
    float *x = gen(rows, cols, 0x9);
    ttensor tt;
    make_tensor(&tt, x, rows, cols, Q_DT_F32);
    static const char *names[] = {"q2_k", "q8_0"};
    for (int i = 0; i < 2; i++) {
        q_fmt_spec s;
        assert_true(q_fmt_parse(names[i], &s));
        atomic_int flag = 0;
        canceller c = {.flag = &flag};
        pthread_t th;
        k_preview_req req = {.tensor = &tt.t, .fmt = s, .method = Q_METHOD_RTN,
                             .cancel = &flag, .skip_estimate = true, .force_scalar = i == 0};
        assert_int_equal(pthread_create(&th, NULL, cancel_later, &c), 0);
        q_status st = k_preview_tensor(&req, NULL, NULL, NULL, NULL);
        double end = now_s();
        pthread_join(th, NULL);
        double lat = end - ((double)c.at.tv_sec + 1e-9 * (double)c.at.tv_nsec);
        if (st == Q_ECANCELLED) {
            print_message("  cancel latency %s: %.3f ms\n", names[i], 1e3 * lat);
            assert_true(lat < CANCEL_BOUND_S);
        } else {
            print_message("  %s finished before the cancel (%.3f ms early)\n", names[i],
                          -1e3 * lat);
            assert_int_equal(st, Q_OK);
            assert_true(i == 1); /* the slow scalar q2_k must not finish in 30 ms */
        }
    }
    free(tt.data);
    free(x);
}

/* k_init installs the apply variants and keeps QTUNE_NO_SIMD's promise. */
static void test_init(void **state)
{
    (void)state;
    k_init();
    k_init();
    const q_format *f = q_format_get(Q_FMT_Q4_0);
    if (k_cpu_get()->avx2)
        assert_ptr_equal(f->quantize, k_quantize_q4_0);
    else
        assert_ptr_equal(f->quantize, f->quantize_ref);
    /* The widest kernels the CPU (as capped by the environment) has are the
     * ones this suite checks. */
    const k_cpu *cpu = k_cpu_get();
    k_fq k;
    q_fmt_spec spec = {.id = Q_FMT_Q4_0};
    q_err err;
    assert_int_equal(k_fq_init(&k, &spec, 256, false, &err), Q_OK);
    assert_true(k.simd == (cpu->avx2 && cpu->fma && cpu->f16c));
    assert_true(k.wide == (k.simd && cpu->avx512));
    const char *no512 = getenv("QTUNE_NO_AVX512");
    if (no512 && strcmp(no512, "0") != 0)
        assert_false(k.wide);
    assert_int_equal(k_fq_init(&k, &spec, 256, true, &err), Q_OK);
    assert_false(k.simd || k.wide);
}

int main(void)
{
    const char *emu = getenv("QTUNE_TEST_EMULATE");
    if (emu && strcmp(emu, "1") == 0) {
        g_emulated = k_cuda_fused_emulate(true);
        printf("test_preview: %s\n", g_emulated ? "exact passes on the emulated CUDA device"
                                                 : "built without CUDA: no emulation");
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats_sources), cmocka_unit_test(test_edges),
        cmocka_unit_test(test_acc_rows),       cmocka_unit_test(test_fq_check),
        cmocka_unit_test(test_fq_rows),       cmocka_unit_test(test_dequant_fast),
        cmocka_unit_test(test_f16c_rounding), cmocka_unit_test(test_float_targets),
        cmocka_unit_test(test_apply_variants),  cmocka_unit_test(test_threads),
        cmocka_unit_test(test_estimate_band),   cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_gpu_fault),       cmocka_unit_test(test_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
