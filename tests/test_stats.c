/* test_stats.c — an_tensor_stats and k_moments against a two-pass long double
 * reference, on generated heavy-tailed data, all dtypes read directly, both
 * SIMD paths, 1 and 2 threads, NaN/Inf, constant and all-zero tensors, data at
 * extreme scales, and the second-pass fallback of the outlier count.
 *
 * Bounds. The scalar path sums in double: mean and std within 1e-9 σ of the
 * reference, kurtosis within 1e-7 relative. The SIMD paths sum in float over at
 * most 32 values per lane before each flush to double (kernels/k_stats.c):
 * about 38 float roundings per value in the worst case, so each power sum
 * s_k = Σ d^k lies within SUM_TOL = 2^-18 (64 roundings) of Σ |d|^k of the
 * scalar one; with the pivot near the mean that gives mean and std within
 * 4e-6 σ and the kurtosis within 2e-5 relative (three sums' worth). The
 * errors seen are near 1e-8. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "an_stats.h"
#include "k_cpu.h"
#include "k_stats.h"
#include "q_dtype.h"

#include "test_splitmix.h"

typedef struct ref_stats {
    long double mean, std, kurt;
    float min, max;
    int64_t n, nan, inf, outliers;
} ref_stats;

static void reference(const float *x, int64_t n, ref_stats *r)
{
    memset(r, 0, sizeof *r);
    r->min = INFINITY;
    r->max = -INFINITY;
    long double s = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(x[i])) {
            r->nan++;
        } else if (isinf(x[i])) {
            r->inf++;
        } else {
            r->n++;
            s += x[i];
            r->min = fminf(r->min, x[i]);
            r->max = fmaxf(r->max, x[i]);
        }
    }
    r->mean = s / r->n;
    long double m2 = 0, m4 = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            continue;
        long double d = x[i] - r->mean;
        m2 += d * d;
        m4 += d * d * d * d;
    }
    m2 /= r->n;
    m4 /= r->n;
    r->std = sqrtl(m2);
    r->kurt = m2 > 0 ? m4 / (m2 * m2) : 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i]) && fabsl(x[i] - r->mean) > 6 * r->std)
            r->outliers++;
}

static q_tensor make_tensor(void *data, uint32_t dtype, int64_t rows, int64_t cols)
{
    q_tensor t;
    memset(&t, 0, sizeof t);
    t.name = (char *)"test";
    t.gguf_name = t.name;
    t.n_dims = 2;
    t.ne[0] = cols;
    t.ne[1] = rows;
    t.ne[2] = t.ne[3] = 1;
    t.rows = rows;
    t.cols = cols;
    t.params = rows * cols;
    t.dtype = dtype;
    t.bytes = q_dtype_bytes(dtype, t.params);
    t.data = data;
    t.readable = true;
    return t;
}

#define SUM_TOL 0x1p-18

typedef struct tol {
    double mean, std, kurt; /* mean and std in units of σ, kurtosis relative */
} tol;

static const tol TOL_SCALAR = {1e-9, 1e-9, 1e-7};
static const tol TOL_SIMD = {4e-6, 4e-6, 2e-5};

static void check_against(const an_stats *s, const ref_stats *r, const tol *tl)
{
    assert_int_equal(s->n, r->n);
    assert_int_equal(s->n_nan, r->nan);
    assert_int_equal(s->n_inf, r->inf);
    if (s->min != r->min || s->max != r->max)
        fail_msg("min %.9g/%.9g max %.9g/%.9g", s->min, (double)r->min, s->max, (double)r->max);
    double scale = fmax((double)r->std, 1e-30);
    if (fabs(s->mean - (double)r->mean) > tl->mean * scale + 1e-12 * fabs((double)r->mean))
        fail_msg("mean %.17g vs %.17Lg", s->mean, r->mean);
    if (fabs(s->std - (double)r->std) > tl->std * scale)
        fail_msg("std %.17g vs %.17Lg", s->std, r->std);
    if (fabs(s->kurtosis - (double)r->kurt) > tl->kurt * fmax(1, (double)r->kurt))
        fail_msg("kurtosis %.17g vs %.17Lg", s->kurtosis, r->kurt);
    assert_int_equal(s->n_outliers, r->outliers);
    assert_true(s->absmax == fmax(fabs(r->min), fabs(r->max)));
}

static void run_f32(float *x, int64_t rows, int64_t cols, int expect_passes)
{
    ref_stats r;
    reference(x, rows * cols, &r);
    q_tensor t = make_tensor(x, Q_DT_F32, rows, cols);
    q_err err;
    an_stats s1, s2, s3;
    for (int scalar = 0; scalar < 2; scalar++) {
        k_stats_force_scalar(scalar);
        omp_set_num_threads(1);
        assert_int_equal(an_tensor_stats(&t, &s1, &err), Q_OK);
        omp_set_num_threads(2);
        assert_int_equal(an_tensor_stats(&t, &s2, &err), Q_OK);
        const tol *tl = scalar ? &TOL_SCALAR : &TOL_SIMD;
        check_against(&s1, &r, tl);
        check_against(&s2, &r, tl);
        /* Chunk sums are merged in chunk order: thread count changes nothing. */
        assert_memory_equal(&s1, &s2, sizeof s1);
        if (expect_passes)
            assert_int_equal(s1.passes, expect_passes);
    }
    k_stats_force_scalar(false);
    assert_int_equal(an_tensor_stats(&t, &s3, &err), Q_OK);
    assert_true(s3.n == s1.n && s3.n_outliers == s1.n_outliers);
}

static void test_heavy_tailed(void **state)
{
    (void)state;
    rng_state = 1;
    int64_t rows = 300, cols = 1000;
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    for (int64_t i = 0; i < rows * cols; i++)
        x[i] = 0.02f * student_t() + 0.001f;
    x[12345] = 3.0f; /* a planted outlier */
    run_f32(x, rows, cols, 1);
    ref_stats r;
    reference(x, rows * cols, &r);
    assert_true(r.kurt > 4);
    assert_true(r.outliers > 1);
    free(x);
}

static void test_odd_shapes(void **state)
{
    (void)state;
    rng_state = 2;
    /* Row lengths that leave SIMD tails, a single row, a single column. */
    int64_t shapes[][2] = {{7, 13}, {1, 1}, {1, 100003}, {70000, 1}, {3, 65537}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        int64_t rows = shapes[k][0], cols = shapes[k][1];
        float *x = malloc((size_t)(rows * cols) * sizeof *x);
        for (int64_t i = 0; i < rows * cols; i++)
            x[i] = student_t();
        run_f32(x, rows, cols, 0);
        free(x);
    }
}

static void test_nonfinite(void **state)
{
    (void)state;
    rng_state = 3;
    int64_t rows = 64, cols = 257;
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    for (int64_t i = 0; i < rows * cols; i++)
        x[i] = student_t();
    x[0] = NAN;
    x[9] = INFINITY;
    x[10] = -INFINITY;
    x[rows * cols - 1] = NAN; /* in the scalar tail */
    x[5000] = 1e-42f;         /* a denormal is an ordinary value */
    run_f32(x, rows, cols, 0);
    /* All non-finite: no finite values, zero statistics, counts only. */
    for (int64_t i = 0; i < rows * cols; i++)
        x[i] = (i & 1) ? NAN : -INFINITY;
    q_tensor t = make_tensor(x, Q_DT_F32, rows, cols);
    an_stats s;
    q_err err;
    assert_int_equal(an_tensor_stats(&t, &s, &err), Q_OK);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.n_nan + s.n_inf, rows * cols);
    assert_true(s.std == 0 && s.kurtosis == 0 && s.n_outliers == 0);
    free(x);
}

static void test_constant_and_zero(void **state)
{
    (void)state;
    int64_t rows = 100, cols = 512;
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    for (int v = 0; v < 2; v++) {
        for (int64_t i = 0; i < rows * cols; i++)
            x[i] = v ? 0.75f : 0.0f;
        q_tensor t = make_tensor(x, Q_DT_F32, rows, cols);
        an_stats s;
        q_err err;
        assert_int_equal(an_tensor_stats(&t, &s, &err), Q_OK);
        assert_true(s.mean == (v ? 0.75 : 0.0));
        assert_true(s.std == 0);
        assert_true(s.kurtosis == 0);
        assert_int_equal(s.n_outliers, 0);
        assert_int_equal(s.n, rows * cols);
    }
    free(x);
}

/* The row sample sees only the wide rows, so the candidate band is too wide for
 * the true 6σ band and the count must come from a second pass. */
static void test_second_pass(void **state)
{
    (void)state;
    rng_state = 4;
    int64_t rows = 640, cols = 300;
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            x[r * cols + c] = (r % 10 == 0 ? 100.0f : 0.01f) * student_t();
    run_f32(x, rows, cols, 2);
    free(x);
}

static void test_f16_bf16(void **state)
{
    (void)state;
    rng_state = 5;
    int64_t rows = 200, cols = 333;
    size_t n = (size_t)(rows * cols);
    uint16_t *h = malloc(n * sizeof *h), *b = malloc(n * sizeof *b);
    float *xh = malloc(n * sizeof *xh), *xb = malloc(n * sizeof *xb);
    for (size_t i = 0; i < n; i++) {
        float v = 0.05f * student_t();
        h[i] = q_f32_to_f16(v);
        b[i] = q_f32_to_bf16(v);
    }
    h[17] = 0x7e00; /* NaN */
    h[18] = 0x7c00; /* +Inf */
    b[19] = 0xff80; /* -Inf */
    h[20] = 0x0001; /* smallest subnormal */
    for (size_t i = 0; i < n; i++) {
        xh[i] = q_f16_to_f32(h[i]);
        xb[i] = q_bf16_to_f32(b[i]);
    }
    struct {
        void *data;
        float *ref;
        uint32_t dt;
    } cases[] = {{h, xh, Q_DT_F16}, {b, xb, Q_DT_BF16}};
    for (size_t k = 0; k < 2; k++) {
        ref_stats r;
        reference(cases[k].ref, (int64_t)n, &r);
        q_tensor t = make_tensor(cases[k].data, cases[k].dt, rows, cols);
        for (int scalar = 0; scalar < 2; scalar++) {
            k_stats_force_scalar(scalar);
            an_stats s;
            q_err err;
            assert_int_equal(an_tensor_stats(&t, &s, &err), Q_OK);
            check_against(&s, &r, scalar ? &TOL_SCALAR : &TOL_SIMD);
        }
        k_stats_force_scalar(false);
    }
    free(h);
    free(b);
    free(xh);
    free(xb);
}

/* One k_moments_add on the SIMD path against the scalar path: the same counts,
 * min/max and candidates in the same order; each sum within SUM_TOL Σ |d|^k
 * (plus 1e-13 n sd^k for the double parts' order). Returns the candidates. */
static int64_t compare_paths(const void *src, k_src type, const float *x, int64_t n, float pivot,
                             float thr)
{
    enum { CAP = 5000 };
    static float cs[CAP], cv[CAP];
    k_moments ms, mv;
    k_moments_init(&ms, cs, CAP);
    k_moments_init(&mv, cv, CAP);
    k_stats_force_scalar(true);
    k_moments_add(&ms, src, type, n, pivot, thr);
    k_stats_force_scalar(false);
    k_moments_add(&mv, src, type, n, pivot, thr);
    assert_int_equal(mv.n, ms.n);
    assert_int_equal(mv.n_nan, ms.n_nan);
    assert_int_equal(mv.n_inf, ms.n_inf);
    assert_true(mv.min == ms.min && mv.max == ms.max);
    assert_int_equal(mv.n_cand, ms.n_cand);
    assert_memory_equal(cv, cs, (size_t)ms.n_cand * sizeof *cs);
    double abs_sum[4] = {0};
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            continue;
        double d = fabs((double)x[i] - (double)pivot);
        for (int k = 0; k < 4; k++)
            abs_sum[k] += pow(d, k + 1);
    }
    const double *sv[] = {&mv.s1, &mv.s2, &mv.s3, &mv.s4};
    const double *ss[] = {&ms.s1, &ms.s2, &ms.s3, &ms.s4};
    double sd = sqrt(ms.s2 / (double)(ms.n > 0 ? ms.n : 1));
    for (int k = 0; k < 4; k++) {
        double bound = SUM_TOL * abs_sum[k] + 1e-13 * (double)ms.n * pow(sd, k + 1) + 1e-300;
        if (!(fabs(*sv[k] - *ss[k]) <= bound))
            fail_msg("s%d: simd %.17g scalar %.17g (n %lld, bound %.3g)", k + 1, *sv[k], *ss[k],
                     (long long)n, bound);
    }
    return ms.n_cand;
}

/* Values x and their f16 and bf16 encodings (h, b) with the floats those hold
 * (xh, xb): the three sources of one comparison. */
typedef struct enc3 {
    float *x, *xh, *xb;
    uint16_t *h, *b;
} enc3;

static enc3 enc3_alloc(int64_t n)
{
    enc3 e = {malloc((size_t)n * sizeof(float)), malloc((size_t)n * sizeof(float)),
              malloc((size_t)n * sizeof(float)), malloc((size_t)n * sizeof(uint16_t)),
              malloc((size_t)n * sizeof(uint16_t))};
    assert_true(e.x && e.xh && e.xb && e.h && e.b);
    return e;
}

/* Encodes the first n values of e->x. */
static void enc3_fill(enc3 *e, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        e->h[i] = q_f32_to_f16(e->x[i]);
        e->b[i] = q_f32_to_bf16(e->x[i]);
        e->xh[i] = q_f16_to_f32(e->h[i]);
        e->xb[i] = q_bf16_to_f32(e->b[i]);
    }
}

static void enc3_free(enc3 *e)
{
    free(e->x);
    free(e->xh);
    free(e->xb);
    free(e->h);
    free(e->b);
}

/* k_moments_add itself at lengths around the SIMD vector, block and group
 * sizes; NaN/Inf anywhere send the call to the scalar path; a NaN threshold
 * collects nothing on either path. */
static void test_moments_paths(void **state)
{
    (void)state;
    static const int64_t lens[] = {0,   1,   7,   8,   63,  64,   65,   127,
                                   128, 200, 255, 256, 257, 1000, 4097, 5000};
    enc3 e = enc3_alloc(5000);
    float *x = e.x;
    rng_state = 11;
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        for (int poison = 0; poison < 3; poison++) {
            int64_t n = lens[li];
            for (int64_t i = 0; i < n; i++)
                x[i] = 0.02f * (float)student_t();
            if (poison && n > 0) { /* 1: a NaN, 2: an Inf, anywhere */
                int64_t at = (int64_t)(rng() % (uint64_t)n);
                x[at] = poison == 1 ? NAN : -INFINITY;
            }
            enc3_fill(&e, n);
            const void *srcs[] = {x, e.h, e.b};
            const float *vals[] = {x, e.xh, e.xb};
            const k_src types[] = {K_SRC_F32, K_SRC_F16, K_SRC_BF16};
            for (int ti = 0; ti < 3; ti++) {
                int64_t nc = compare_paths(srcs[ti], types[ti], vals[ti], n, 0.001f, 0.04f);
                if (n >= 1000)
                    assert_true(nc > 0); /* the test reaches the candidate path */
                assert_int_equal(compare_paths(srcs[ti], types[ti], vals[ti], n, 0.001f, NAN), 0);
            }
        }
    }
    enc3_free(&e);
}

/* Candidates on one side of the pivot only: the SIMD paths take min/max from
 * the candidates where a side has some and scan the range for the other. */
static void test_moments_one_sided(void **state)
{
    (void)state;
    enum { N = 4097 };
    enc3 e = enc3_alloc(N);
    rng_state = 13;
    for (int side = 0; side < 2; side++) {
        for (int64_t i = 0; i < N; i++) {
            float v = 0.02f * fabsf((float)student_t());
            e.x[i] = side ? -v : v;
        }
        enc3_fill(&e, N);
        static const int64_t lens[] = {256, 1000, N};
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            assert_true(compare_paths(e.x, K_SRC_F32, e.x, lens[li], 0.0f, 0.04f) > 0);
            compare_paths(e.h, K_SRC_F16, e.xh, lens[li], 0.0f, 0.04f);
            compare_paths(e.b, K_SRC_BF16, e.xb, lens[li], 0.0f, 0.04f);
        }
    }
    enc3_free(&e);
}

/* Data far from 1 in scale, f32 and bf16. With the threshold of the data's
 * scale the SIMD path scales d into float's comfortable range (up to 2^100);
 * with a threshold that gives no scale (NaN, FLT_MAX) or one past 2^±100, d^4
 * overflows (scale 1e20) or underflows (1e-20, 1e-30) in float, and the group
 * must be summed again in double. A pivot far off the data (1e6 σ) too. */
static void test_moments_scales(void **state)
{
    (void)state;
    enum { N = 4097 };
    enc3 e = enc3_alloc(N);
    static const double scales[] = {1e-30, 1e-20, 1e-10, 1e10, 1e20, 1e30};
    rng_state = 12;
    for (size_t si = 0; si < sizeof scales / sizeof *scales; si++) {
        float sc = (float)scales[si];
        for (int64_t i = 0; i < N; i++)
            e.x[i] = sc * 0.02f * (float)student_t();
        enc3_fill(&e, N); /* f16 cannot hold these scales: f32 and bf16 only */
        const float thrs[] = {sc * 0.09f, NAN, FLT_MAX};
        const float pivots[] = {0.001f * sc, 2e4f * sc};
        for (int pi = 0; pi < 2; pi++) {
            for (int ti = 0; ti < 3; ti++) {
                compare_paths(e.x, K_SRC_F32, e.x, N, pivots[pi], thrs[ti]);
                compare_paths(e.b, K_SRC_BF16, e.xb, N, pivots[pi], thrs[ti]);
            }
        }
    }
    enc3_free(&e);
}

static void test_unreadable(void **state)
{
    (void)state;
    uint8_t raw[66 * 2] = {0};
    q_tensor t = make_tensor(raw, Q_DT_IQ2_XXS, 1, 256);
    t.readable = false;
    an_stats s;
    q_err err;
    assert_int_equal(an_tensor_stats(&t, &s, &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, "IQ2_XXS"));
}

static void count_side(void *user)
{
    (*(int *)user)++;
}

/* an_tensor_stats_side runs its side work exactly once, with 1 and 2 threads,
 * also when the pass stops early, and changes no figure. */
static void test_side(void **state)
{
    (void)state;
    rng_state = 5;
    int64_t rows = 200, cols = 700;
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    assert_non_null(x);
    for (int64_t i = 0; i < rows * cols; i++)
        x[i] = 0.02f * student_t();
    q_tensor t = make_tensor(x, Q_DT_F32, rows, cols);
    q_err err;
    an_stats a, b;
    for (int nt = 1; nt <= 2; nt++) {
        omp_set_num_threads(nt);
        int calls = 0;
        assert_int_equal(an_tensor_stats(&t, &a, &err), Q_OK);
        assert_int_equal(an_tensor_stats_side(&t, count_side, &calls, &b, &err), Q_OK);
        assert_int_equal(calls, 1);
        assert_memory_equal(&a, &b, sizeof a);
    }
    uint8_t raw[66 * 2] = {0};
    q_tensor u = make_tensor(raw, Q_DT_IQ2_XXS, 1, 256);
    u.readable = false;
    int calls = 0;
    assert_int_equal(an_tensor_stats_side(&u, count_side, &calls, &b, &err), Q_EUSAGE);
    assert_int_equal(calls, 1);
    free(x);
}

/* The widest path this CPU (as capped by QTUNE_NO_AVX512/QTUNE_NO_SIMD) has
 * is the one taken, so the suite checks it. */
static void test_path(void **state)
{
    (void)state;
    const k_cpu *cpu = k_cpu_get();
    const char *want = cpu->avx512                         ? "avx512"
                       : cpu->avx2 && cpu->fma && cpu->f16c ? "avx2"
                                                            : "scalar";
    assert_string_equal(k_stats_path(), want);
    k_stats_force_scalar(true);
    assert_string_equal(k_stats_path(), "scalar");
    k_stats_force_scalar(false);
    const char *no512 = getenv("QTUNE_NO_AVX512");
    if (no512 && strcmp(no512, "0") != 0)
        assert_false(cpu->avx512);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heavy_tailed),      cmocka_unit_test(test_odd_shapes),
        cmocka_unit_test(test_nonfinite),         cmocka_unit_test(test_constant_and_zero),
        cmocka_unit_test(test_second_pass),       cmocka_unit_test(test_f16_bf16),
        cmocka_unit_test(test_unreadable),        cmocka_unit_test(test_moments_paths),
        cmocka_unit_test(test_moments_scales),    cmocka_unit_test(test_moments_one_sided),
        cmocka_unit_test(test_path),              cmocka_unit_test(test_side),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
