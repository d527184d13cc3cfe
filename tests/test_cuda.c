/* test_cuda.c — k_cuda_moments against the scalar CPU reference k_moments_add on
 * generated f32/f16/bf16 data (sizes 1, 7, 1000003 and one that spans two device
 * chunks) with NaN (quiet, signalling, negative), ±Inf, subnormals, ±0 and the
 * largest finite value; accumulation into a used k_moments; determinism across
 * calls, threads and k_cuda_release; usage errors.
 *
 * Without a usable CUDA device (CPU build, or `make cuda` on a machine without a
 * GPU) every GPU test is skipped after the reason is printed once, and only
 * test_unavailable runs: it checks what callers get in that case.
 *
 * Tolerances: n, n_nan, n_inf, min and max must equal the CPU's (min/max compared
 * with ==, so -0 equals +0). For the power sums, A_k = sum over finite x of
 * |x - pivot|^k and scale_k = max(|s_k(cpu)|, A_k) (= A_k, as |s_k| <= A_k):
 *  - GPU vs a compensated long double reference: |error| <= 1e-13 * scale_k. The
 *    GPU adds each term through at most ~128 (per thread) + 5 + 5 + 4 + 10 (trees)
 *    + 1 per 64 MiB chunk rounding steps, so its error is below ~2e-14 * A_k.
 *  - GPU vs the scalar CPU (k_moments_add): |difference| <= 1e-12 * scale_k plus
 *    the CPU's own measured error against the reference. The scalar loop adds n
 *    terms one after another; its error bound grows with n * 2^-53 * A_k and on
 *    quantized data (f16, pivot far from the values, so the terms repeat) its
 *    rounding errors do not cancel: about 2e-12 * A_k for n = 1e6 here.
 * TEST_CUDA_VERBOSE=1 prints the measured errors.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <omp.h>

#include "k_cuda.h"
#include "k_stats.h"
#include "q_dtype.h"

static bool g_avail;
static char g_why[512];

#include "test_splitmix.h"

static float f32_of_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static const char *src_name(k_src t)
{
    return t == K_SRC_F32 ? "f32" : t == K_SRC_F16 ? "f16" : "bf16";
}

static size_t src_size(k_src t)
{
    return t == K_SRC_F32 ? 4 : 2;
}

/* Special values as stored bits: qNaN, sNaN, -NaN, +Inf, -Inf, smallest
 * subnormal, largest negative subnormal, -0, +0. */
static const uint32_t spec_f32[] = {0x7fc00000u, 0x7f800001u, 0xffc00001u,
                                    0x7f800000u, 0xff800000u, 0x00000001u,
                                    0x807fffffu, 0x80000000u, 0x00000000u};
static const uint16_t spec_f16[] = {0x7e00u, 0x7c01u, 0xfe00u, 0x7c00u, 0xfc00u,
                                    0x0001u, 0x83ffu, 0x8000u, 0x0000u};
static const uint16_t spec_bf16[] = {0x7fc0u, 0x7f81u, 0xffc0u, 0x7f80u, 0xff80u,
                                     0x0001u, 0x807fu, 0x8000u, 0x0000u};
#define N_SPEC 9

/* Stores v (or the special value number s when s >= 0) at element i. */
static void put(void *data, k_src t, int64_t i, float v, int s)
{
    if (t == K_SRC_F32) {
        ((float *)data)[i] = s >= 0 ? f32_of_bits(spec_f32[s]) : v;
    } else if (t == K_SRC_F16) {
        ((uint16_t *)data)[i] = s >= 0 ? spec_f16[s] : q_f32_to_f16(v);
    } else {
        ((uint16_t *)data)[i] = s >= 0 ? spec_bf16[s] : q_f32_to_bf16(v);
    }
}

static float get(const void *data, k_src t, int64_t i)
{
    if (t == K_SRC_F32)
        return ((const float *)data)[i];
    if (t == K_SRC_F16)
        return q_f16_to_f32(((const uint16_t *)data)[i]);
    return q_bf16_to_f32(((const uint16_t *)data)[i]);
}

/* n elements: 0.02 * t4 + 0.001 (heavy = true) or uniform in [-0.1, 0.1), about
 * one special value in 500, and specials at both ends. Caller frees. */
static void *make_data(k_src t, int64_t n, bool heavy)
{
    void *data = malloc((size_t)n * src_size(t));
    assert_non_null(data);
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = rng();
        int s = r % 500 == 0 ? (int)((r >> 32) % N_SPEC) : -1;
        float v = heavy ? 0.02f * student_t() + 0.001f : (float)(0.2 * unif() - 0.1);
        put(data, t, i, v, s);
    }
    if (n > 2) {
        put(data, t, 0, 0, 0);     /* NaN first */
        put(data, t, n - 1, 0, 4); /* -Inf last, in the scalar tail when n % 4 != 0 */
        put(data, t, n / 2, 0, 5); /* a subnormal */
    }
    return data;
}

/* Reference power sums of d = x - pivot over the finite values, in long double
 * with compensated (Neumaier) summation: error about 1e-19 * A_k, negligible here.
 * ref[k] ~ s_{k+1}; a[k] = A_{k+1} = sum |d|^(k+1), the tolerance scale. */
static void reference(const void *data, k_src t, int64_t n, float pivot, long double ref[4],
                      long double a[4])
{
    long double c[4] = {0, 0, 0, 0};
    for (int k = 0; k < 4; k++)
        ref[k] = a[k] = 0;
    for (int64_t i = 0; i < n; i++) {
        float x = get(data, t, i);
        if (!isfinite(x))
            continue;
        long double d = (long double)x - (long double)pivot;
        long double term[4] = {d, d * d, d * d * d, d * d * d * d};
        for (int k = 0; k < 4; k++) {
            long double s = ref[k] + term[k];
            if (fabsl(ref[k]) >= fabsl(term[k]))
                c[k] += (ref[k] - s) + term[k];
            else
                c[k] += (term[k] - s) + ref[k];
            ref[k] = s;
            a[k] += fabsl(term[k]);
        }
    }
    for (int k = 0; k < 4; k++)
        ref[k] += c[k];
}

static void cpu_moments(k_moments *m, const void *data, k_src t, int64_t n, float pivot)
{
    k_stats_force_scalar(true);
    k_moments_add(m, data, t, n, pivot, INFINITY);
    k_stats_force_scalar(false);
}

/* Counts, min and max exactly as the CPU; sums within the tolerances stated at
 * the top of this file. */
static void check_close(const k_moments *g, const k_moments *c, const void *data, k_src t,
                        int64_t n, float pivot, const char *what)
{
    if (g->n != c->n || g->n_nan != c->n_nan || g->n_inf != c->n_inf)
        fail_msg("%s: counts gpu n=%lld nan=%lld inf=%lld, cpu n=%lld nan=%lld inf=%lld", what,
                 (long long)g->n, (long long)g->n_nan, (long long)g->n_inf, (long long)c->n,
                 (long long)c->n_nan, (long long)c->n_inf);
    if (!(g->min == c->min) || !(g->max == c->max))
        fail_msg("%s: gpu min %.9g max %.9g, cpu min %.9g max %.9g", what, (double)g->min,
                 (double)g->max, (double)c->min, (double)c->max);
    long double ref[4], a[4];
    reference(data, t, n, pivot, ref, a);
    const double gs[4] = {g->s1, g->s2, g->s3, g->s4};
    const double cs[4] = {c->s1, c->s2, c->s3, c->s4};
    for (int k = 0; k < 4; k++) {
        double scale = fmax(fabs(cs[k]), (double)a[k]);
        double gerr = fabs((double)((long double)gs[k] - ref[k]));
        double cerr = fabs((double)((long double)cs[k] - ref[k]));
        if (!(gerr <= 1e-13 * scale))
            fail_msg("%s: s%d gpu %.17g reference %.17Lg (error %.3g, tolerance %.3g)", what,
                     k + 1, gs[k], ref[k], gerr, 1e-13 * scale);
        if (!(fabs(gs[k] - cs[k]) <= 1e-12 * scale + cerr))
            fail_msg("%s: s%d gpu %.17g cpu %.17g (cpu error %.3g, scale %.3g)", what, k + 1,
                     gs[k], cs[k], cerr, scale);
        if (getenv("TEST_CUDA_VERBOSE"))
            printf("%s: s%d gpu error %.2e  cpu error %.2e  (relative to max(|s|, A))\n", what,
                   k + 1, gerr / fmax(scale, 1e-300), cerr / fmax(scale, 1e-300));
    }
}

/* GPU vs CPU on data[0..n); also checks the candidate fields stay untouched. */
static void compare(const void *data, k_src t, int64_t n, float pivot, const char *what)
{
    float cand[4];
    k_moments g, c;
    k_moments_init(&g, cand, 4);
    k_moments_init(&c, NULL, 0);
    q_err err = {{0}};
    q_status st = k_cuda_moments(data, t, n, pivot, &g, &err);
    if (st != Q_OK)
        fail_msg("%s: k_cuda_moments: %s", what, err.msg);
    cpu_moments(&c, data, t, n, pivot);
    check_close(&g, &c, data, t, n, pivot, what);
    assert_true(g.cand == cand && g.cand_cap == 4 && g.n_cand == 0 && !g.cand_overflow);
}

static void test_sizes(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    const k_src types[] = {K_SRC_F32, K_SRC_F16, K_SRC_BF16};
    for (int ti = 0; ti < 3; ti++) {
        k_src t = types[ti];
        char what[96];
        /* n = 1: one finite value, then one of each special. */
        uint32_t one[1]; /* storage for one element of any type */
        put(one, t, 0, -0.375f, -1);
        snprintf(what, sizeof what, "%s n=1 finite", src_name(t));
        compare(one, t, 1, 0.001f, what);
        for (int s = 0; s < N_SPEC; s++) {
            put(one, t, 0, 0, s);
            snprintf(what, sizeof what, "%s n=1 special %d", src_name(t), s);
            compare(one, t, 1, 0.001f, what);
        }
        /* n = 7: one vector and a tail of 3, with the largest finite value. */
        uint32_t seven[7];
        const int sp[7] = {-1, 1, 4, 5, 7, -1, 2};
        for (int i = 0; i < 7; i++)
            put(seven, t, i, i == 0 ? 1.5f : -2.25f, sp[i]);
        if (t == K_SRC_F32)
            seven[5] = 0x7f7fffffu; /* FLT_MAX */
        else
            ((uint16_t *)(void *)seven)[5] = t == K_SRC_F16 ? 0x7bffu : 0x7f7fu;
        snprintf(what, sizeof what, "%s n=7", src_name(t));
        compare(seven, t, 7, 0.001f, what);
        compare(seven, t, 7, 0.0f, what);
        /* n = 1000003: heavy-tailed, specials scattered, a tail of 3. */
        rng_state = 100 + (uint64_t)ti;
        void *big = make_data(t, 1000003, true);
        snprintf(what, sizeof what, "%s n=1000003", src_name(t));
        compare(big, t, 1000003, 0.001f, what);
        compare(big, t, 1000003, -0.5f, what);
        free(big);
    }
}

/* More than one 64 MiB device chunk: 2^24 + 1001 f32 values. */
static void test_chunks(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    rng_state = 7;
    int64_t n = ((int64_t)1 << 24) + 1001;
    void *data = make_data(K_SRC_F32, n, false);
    compare(data, K_SRC_F32, n, 0.01f, "f32 n=2^24+1001");
    free(data);
}

/* out keeps what it had: CPU sums the first part, the GPU adds the rest; that
 * must be bit for bit k_moments_merge of the CPU part and a fresh GPU result. */
static void test_accumulates(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    rng_state = 11;
    const int64_t n = 300007, half = 123457;
    void *data = make_data(K_SRC_BF16, n, true);
    const uint16_t *rest = (const uint16_t *)data + half;
    k_moments m, e, r;
    k_moments_init(&m, NULL, 0);
    k_moments_init(&e, NULL, 0);
    k_moments_init(&r, NULL, 0);
    cpu_moments(&m, data, K_SRC_BF16, half, 0.25f);
    cpu_moments(&e, data, K_SRC_BF16, half, 0.25f);
    q_err err = {{0}};
    if (k_cuda_moments(rest, K_SRC_BF16, n - half, 0.25f, &m, &err) != Q_OK)
        fail_msg("k_cuda_moments: %s", err.msg);
    if (k_cuda_moments(rest, K_SRC_BF16, n - half, 0.25f, &r, &err) != Q_OK)
        fail_msg("k_cuda_moments: %s", err.msg);
    k_moments_merge(&e, &r);
    assert_memory_equal(&m, &e, sizeof m);
    compare(rest, K_SRC_BF16, n - half, 0.25f, "bf16 second part");
    free(data);
}

/* Same input, same bits: repeated calls, after k_cuda_release, and from 4 threads
 * at once (calls are serialized on one device buffer). */
static void test_deterministic(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    rng_state = 13;
    const int64_t n = 1000003;
    void *data = make_data(K_SRC_F16, n, true);
    k_moments ref, again[5];
    q_err err = {{0}};
    k_moments_init(&ref, NULL, 0);
    if (k_cuda_moments(data, K_SRC_F16, n, 0.001f, &ref, &err) != Q_OK)
        fail_msg("k_cuda_moments: %s", err.msg);
    k_cuda_release();
    q_status st[5];
#pragma omp parallel for num_threads(4)
    for (int k = 0; k < 5; k++) {
        q_err e;
        k_moments_init(&again[k], NULL, 0);
        st[k] = k_cuda_moments(data, K_SRC_F16, n, 0.001f, &again[k], &e);
    }
    for (int k = 0; k < 5; k++) {
        assert_int_equal(st[k], Q_OK);
        assert_memory_equal(&again[k], &ref, sizeof ref);
    }
    free(data);
}

static void test_usage(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    float x[3] = {1, 2, 3};
    k_moments m, before;
    k_moments_init(&m, NULL, 0);
    m.n = 5;
    m.s1 = 1.5;
    before = m;
    q_err err = {{0}};
    assert_int_equal(k_cuda_moments(x, K_SRC_F32, -1, 0, &m, &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, "negative"));
    assert_int_equal(k_cuda_moments(NULL, K_SRC_F32, 3, 0, &m, &err), Q_EUSAGE);
    assert_int_equal(k_cuda_moments(x, (k_src)7, 3, 0, &m, &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, "type"));
    assert_int_equal(k_cuda_moments(x, K_SRC_F32, 3, 0, NULL, &err), Q_EUSAGE);
    assert_int_equal(k_cuda_moments(x, K_SRC_F32, 3, 0, &m, NULL), Q_OK); /* err optional */
    assert_int_equal(k_cuda_moments(NULL, K_SRC_F32, 0, 0, &m, &err), Q_OK);
    assert_int_equal(m.n, before.n + 3);
    m = before;
    assert_int_equal(k_cuda_moments(x, K_SRC_F32, 0, 0, &m, &err), Q_OK);
    assert_memory_equal(&m, &before, sizeof m);
}

/* What callers see without a device: false with a reason, Q_EUSAGE naming it,
 * out untouched. Runs only when CUDA is not available. */
static void test_unavailable(void **state)
{
    (void)state;
    if (g_avail)
        skip();
    char why[512] = "";
    assert_false(k_cuda_available(why, sizeof why));
    assert_string_equal(why, g_why);
    char tiny[8] = "xxxxxxx";
    assert_false(k_cuda_available(tiny, 4));
    assert_int_equal(strlen(tiny), 3);
    assert_false(k_cuda_available(NULL, 0));
#ifdef QTUNE_CUDA
    assert_int_equal(strncmp(why, "no CUDA device", 14), 0);
#else
    assert_string_equal(why, "built without CUDA");
#endif
    assert_null(strchr(why, '\n'));
    float x[2] = {1, 2};
    k_moments m, before;
    k_moments_init(&m, NULL, 0);
    before = m;
    q_err err = {{0}};
    assert_int_equal(k_cuda_moments(x, K_SRC_F32, 2, 0, &m, &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, why));
    assert_memory_equal(&m, &before, sizeof m);
    k_cuda_release(); /* harmless */
}

int main(void)
{
    g_avail = k_cuda_available(g_why, sizeof g_why);
    if (g_avail)
        printf("test_cuda: device %s\n", g_why);
    else
        printf("test_cuda: CUDA not available (%s): GPU tests skipped\n", g_why);
    fflush(stdout);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),         cmocka_unit_test(test_chunks),
        cmocka_unit_test(test_accumulates),   cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_usage),         cmocka_unit_test(test_unavailable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
