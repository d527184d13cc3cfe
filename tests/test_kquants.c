/* test_kquants.c — the k-quant quantizers Q2_K..Q6_K (quant/q_kquants.c).
 *
 * Round trips go through q_dtype_get(type)->dequant, which is verified bit-exact
 * against the gguf package elsewhere (test_dtype.c, tests/cli/test_dequant.sh).
 * Error bounds are relative RMSE ‖x̂ − x‖ / ‖x‖ over 64 rows × 1024 of fixed-seed
 * data, set about 10% above what ggml's algorithm measures (normal data:
 * Q2_K 0.297, Q3_K 0.150, Q4_K 0.071, Q5_K 0.036, Q6_K 0.018), so a search that
 * loses its refinement steps fails. Byte identity with ggml itself is checked by
 * tests/cli/test_kquants.sh when a libggml is at hand; test_golden pins hashes
 * of ggml's bytes for data generated here with integer and basic IEEE
 * arithmetic only (no libm), so it holds on any platform.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "q_blocks.h"
#include "q_dtype.h"
#include "q_quants.h"

/* The golden data must be the same floats everywhere: no a*b+c contraction
 * (gcc in ISO C mode never contracts; clang would on FMA targets). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

typedef size_t (*tk_quant_fn)(const float *, void *, int64_t, int64_t, const float *);

typedef struct tk_type {
    const char *name;
    uint32_t id;
    tk_quant_fn quant;
    size_t block;
    double rmse_normal;  /* bound on relative RMSE, normal data, no imatrix */
    double rmse_heavy;   /* same, heavy-tailed data (cubes of normals) */
} tk_type;

static const tk_type tk_types[] = {
    {"Q2_K", Q_DT_Q2_K, q_quantize_q2_k, sizeof(block_q2_K), 0.32, 0.44},
    {"Q3_K", Q_DT_Q3_K, q_quantize_q3_k, sizeof(block_q3_K), 0.165, 0.17},
    {"Q4_K", Q_DT_Q4_K, q_quantize_q4_k, sizeof(block_q4_K), 0.078, 0.10},
    {"Q5_K", Q_DT_Q5_K, q_quantize_q5_k, sizeof(block_q5_K), 0.040, 0.055},
    {"Q6_K", Q_DT_Q6_K, q_quantize_q6_k, sizeof(block_q6_K), 0.020, 0.028},
};
#define TK_NTYPES (sizeof tk_types / sizeof tk_types[0])

/* ---- data ---- */

static uint64_t tk_state;

static void tk_seed(uint64_t s)
{
    tk_state = s;
}

static uint64_t tk_next(void)
{
    /* splitmix64 */
    uint64_t z = (tk_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1), exact: 24 random bits times 2^-24. */
static float tk_unif(void)
{
    return (float)(tk_next() >> 40) * 0x1p-24f;
}

/* Approximately standard normal (Irwin–Hall of 4), basic IEEE ops only, each
 * call sequenced so every compiler produces the same floats. */
static float tk_gauss(void)
{
    float s = tk_unif();
    s += tk_unif();
    s += tk_unif();
    s += tk_unif();
    return (s - 2.0f) * 1.7320508f;
}

/* Standard normal by Box–Muller (better tails; for statistical tests). */
static float tk_normal(void)
{
    double u = (double)(tk_next() >> 11) * 0x1p-53 + 0x1p-60;
    double v = (double)(tk_next() >> 11) * 0x1p-53;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static float *tk_alloc(size_t n)
{
    float *p = malloc(n * sizeof(float));
    assert_non_null(p);
    return p;
}

/* Quantizes and dequantizes nrows × n; returns the blocks' byte count. */
static size_t tk_roundtrip(const tk_type *t, const float *x, float *y, int64_t nrows, int64_t n,
                           const float *imatrix)
{
    size_t bytes = (size_t)(nrows * n / QK_K) * t->block;
    uint8_t *q = malloc(bytes);
    assert_non_null(q);
    size_t got = t->quant(x, q, nrows, n, imatrix);
    assert_int_equal(got, bytes);
    const q_dtype_traits *tr = q_dtype_get(t->id);
    assert_non_null(tr);
    assert_non_null(tr->dequant);
    tr->dequant(q, y, nrows * n);
    free(q);
    return bytes;
}

static double tk_rel_rmse(const float *x, const float *y, size_t n)
{
    double se = 0, sx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)y[i] - x[i];
        se += d * d;
        sx += (double)x[i] * x[i];
    }
    return sqrt(se / sx);
}

static bool tk_all_finite(const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(y[i]))
            return false;
    return true;
}

static uint64_t tk_fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---- tests ---- */

/* Return value is nrows × row size; nothing is written past it. */
static void test_sizes(void **state)
{
    (void)state;
    enum { NR = 3, N = 512, GUARD = 64 };
    float *x = tk_alloc(NR * N);
    float *w = tk_alloc(N);
    tk_seed(1);
    for (int i = 0; i < NR * N; i++)
        x[i] = tk_gauss();
    for (int j = 0; j < N; j++)
        w[j] = 0.5f + tk_unif();
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        size_t bytes = NR * (N / QK_K) * t->block;
        uint8_t *q = malloc(bytes + GUARD);
        assert_non_null(q);
        memset(q, 0xA5, bytes + GUARD);
        assert_int_equal(t->quant(x, q, NR, N, NULL), bytes);
        for (int i = 0; i < GUARD; i++)
            assert_int_equal(q[bytes + i], 0xA5);
        assert_int_equal(t->quant(x, q, NR, N, w), bytes);
        for (int i = 0; i < GUARD; i++)
            assert_int_equal(q[bytes + i], 0xA5);
        assert_int_equal(t->quant(x, q, 0, N, NULL), 0);
        free(q);
    }
    free(x);
    free(w);
}

/* Round-trip error on normal and heavy-tailed data, and the order of the types:
 * every extra bit must lower the error. */
static void test_roundtrip_error(void **state)
{
    (void)state;
    enum { NR = 64, N = 1024 };
    float *x = tk_alloc(NR * N);
    float *h = tk_alloc(NR * N);
    float *y = tk_alloc(NR * N);
    tk_seed(2);
    for (int i = 0; i < NR * N; i++) {
        x[i] = tk_normal();
        float g = tk_normal();
        h[i] = g * g * g;
    }
    double prev = 1.0;
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        tk_roundtrip(t, x, y, NR, N, NULL);
        double e = tk_rel_rmse(x, y, NR * N);
        if (e >= t->rmse_normal || e >= prev)
            fail_msg("%s normal: relative RMSE %.4f (bound %.3f, previous type %.4f)", t->name,
                     e, t->rmse_normal, prev);
        prev = e;
        tk_roundtrip(t, h, y, NR, N, NULL);
        e = tk_rel_rmse(h, y, NR * N);
        if (e >= t->rmse_heavy)
            fail_msg("%s heavy-tailed: relative RMSE %.4f (bound %.3f)", t->name, e,
                     t->rmse_heavy);
    }
    free(x);
    free(h);
    free(y);
}

/* An importance matrix that puts weight 1000 on every 16th column and 1 on the
 * rest must make the weighted error Σ w (x̂ − x)² smaller than the plain path,
 * by at least half (ggml measures 0.07..0.25 of it here). With the weights
 * ignored the ratio would be 1. */
static void test_imatrix_lowers_weighted_error(void **state)
{
    (void)state;
    enum { NR = 64, N = 1024 };
    float *x = tk_alloc(NR * N);
    float *y = tk_alloc(NR * N);
    float *w = tk_alloc(N);
    tk_seed(3);
    for (int i = 0; i < NR * N; i++)
        x[i] = tk_normal();
    for (int j = 0; j < N; j++)
        w[j] = j % 16 == 3 ? 1000.f : 1.f;
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        double err[2];
        for (int use = 0; use < 2; use++) {
            tk_roundtrip(t, x, y, NR, N, use ? w : NULL);
            assert_true(tk_all_finite(y, NR * N));
            double s = 0;
            for (int i = 0; i < NR * N; i++) {
                double d = (double)y[i] - x[i];
                s += w[i % N] * d * d;
            }
            err[use] = s;
        }
        if (!(err[1] <= 0.5 * err[0]))
            fail_msg("%s: weighted error with imatrix %.4g, without %.4g (ratio %.3f > 0.5)",
                     t->name, err[1], err[0], err[1] / err[0]);
    }
    free(x);
    free(y);
    free(w);
}

/* All-zero super-blocks dequantize to exact zeros, between non-zero ones and
 * alone, with and without an imatrix; an all-zero Q6_K block is all zero bytes. */
static void test_zero_blocks(void **state)
{
    (void)state;
    enum { N = 4 * QK_K };
    float *x = tk_alloc(N);
    float *y = tk_alloc(N);
    float *w = tk_alloc(N);
    tk_seed(4);
    for (int i = 0; i < N; i++) {
        int blk = i / QK_K;
        x[i] = blk == 1 || blk == 3 ? 0.f : tk_gauss();
        w[i] = 0.1f + tk_unif();
    }
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        for (int use = 0; use < 2; use++) {
            tk_roundtrip(t, x, y, 1, N, use ? w : NULL);
            for (int i = 0; i < N; i++) {
                int blk = i / QK_K;
                if (blk == 1 || blk == 3) {
                    if (y[i] != 0.f)
                        fail_msg("%s imatrix=%d: element %d of a zero block is %g", t->name,
                                 use, i, (double)y[i]);
                }
            }
            assert_true(tk_rel_rmse(x, y, N) < t->rmse_normal * 1.5);
        }
    }
    /* a zero tensor */
    memset(x, 0, N * sizeof(float));
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        for (int use = 0; use < 2; use++) {
            tk_roundtrip(t, x, y, 2, N / 2, use ? w : NULL);
            for (int i = 0; i < N; i++)
                assert_true(y[i] == 0.f);
        }
    }
    block_q6_K b6;
    memset(&b6, 0xFF, sizeof b6);
    q_quantize_q6_k(x, &b6, 1, QK_K, NULL);
    const uint8_t *p = (const uint8_t *)&b6;
    for (size_t i = 0; i < sizeof b6; i++)
        assert_int_equal(p[i], 0);
    free(x);
    free(y);
    free(w);
}

/* Constant super-blocks come back within 0.5% for constants whose
 * scales are normal halves; a constant so small that the f16 super-scale
 * underflows (Q6_K: to zero) comes back finite and no more than 10% larger. */
static void test_constant_blocks(void **state)
{
    (void)state;
    static const float cs[] = {0.37f, -2.5f, 1000.f, 3.f, -0.05f, 12345.f};
    enum { NB = sizeof cs / sizeof cs[0], N = NB * QK_K };
    float *x = tk_alloc(N);
    float *y = tk_alloc(N);
    float *w = tk_alloc(N);
    for (int i = 0; i < N; i++) {
        x[i] = cs[i / QK_K];
        w[i] = 0.5f + 0.3f * (float)(i % 7);
    }
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        for (int use = 0; use < 2; use++) {
            tk_roundtrip(t, x, y, NB, QK_K, use ? w : NULL);
            for (int i = 0; i < N; i++) {
                double rel = fabs((double)y[i] - x[i]) / fabs(x[i]);
                if (!(rel <= 5e-3))
                    fail_msg("%s imatrix=%d: constant %g comes back as %g", t->name, use,
                             (double)x[i], (double)y[i]);
            }
        }
    }
    for (int i = 0; i < QK_K; i++)
        x[i] = -7e-6f;
    for (size_t k = 0; k < TK_NTYPES; k++) {
        tk_roundtrip(&tk_types[k], x, y, 1, QK_K, NULL);
        for (int i = 0; i < QK_K; i++)
            assert_true(isfinite(y[i]) && fabsf(y[i]) <= 1.1f * 7e-6f);
    }
    free(x);
    free(y);
    free(w);
}

/* Large values (|x| up to ~1.5e5, all scales still finite halves) keep the
 * relative error of normal data; data made only of f32 denormals flushes to
 * exact zeros (the f16 scales underflow), and denormals sprinkled into normal
 * data change nothing noticeable. */
static void test_huge_and_denormal(void **state)
{
    (void)state;
    enum { NR = 16, N = 1024 };
    float *x = tk_alloc(NR * N);
    float *y = tk_alloc(NR * N);
    float *w = tk_alloc(N);
    tk_seed(5);
    for (int j = 0; j < N; j++)
        w[j] = 0.01f + tk_unif();
    for (int i = 0; i < NR * N; i++)
        x[i] = tk_normal() * 3e4f;
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        tk_roundtrip(t, x, y, NR, N, NULL);
        assert_true(tk_all_finite(y, NR * N));
        double e = tk_rel_rmse(x, y, NR * N);
        if (e >= t->rmse_normal * 1.05)
            fail_msg("%s large values: relative RMSE %.4f", t->name, e);
    }
    for (int i = 0; i < NR * N; i++)
        x[i] = (float)((int)(tk_next() % 2001) - 1000) * 1e-42f;
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        for (int use = 0; use < 2; use++) {
            tk_roundtrip(t, x, y, NR, N, use ? w : NULL);
            for (int i = 0; i < NR * N; i++)
                if (y[i] != 0.f)
                    fail_msg("%s: denormal input %d came back as %g", t->name, i, (double)y[i]);
        }
    }
    for (int i = 0; i < NR * N; i++) {
        x[i] = tk_normal();
        if (tk_next() % 10 == 0)
            x[i] = 1e-40f;
    }
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        tk_roundtrip(t, x, y, NR, N, NULL);
        assert_true(tk_all_finite(y, NR * N));
        assert_true(tk_rel_rmse(x, y, NR * N) < t->rmse_normal * 1.1);
    }
    free(x);
    free(y);
    free(w);
}

/* Several rows at once give the same bytes as one row at a time (the imatrix
 * indexes columns, so it applies to every row alike); the same call twice gives
 * the same bytes, and an odd destination address changes nothing. */
static void test_rows_and_determinism(void **state)
{
    (void)state;
    enum { NR = 5, N = 768 };
    float *x = tk_alloc(NR * N);
    float *w = tk_alloc(N);
    tk_seed(6);
    for (int i = 0; i < NR * N; i++)
        x[i] = tk_normal() * (float)(1 + i / N);
    for (int j = 0; j < N; j++)
        w[j] = tk_unif() * 10.f + 0.01f;
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        size_t row = (N / QK_K) * t->block;
        uint8_t *a = malloc(NR * row);
        uint8_t *b = malloc(NR * row);
        uint8_t *c = malloc(NR * row + 1);
        assert_true(a && b && c);
        for (int use = 0; use < 2; use++) {
            const float *im = use ? w : NULL;
            t->quant(x, a, NR, N, im);
            for (int r = 0; r < NR; r++)
                t->quant(x + r * N, b + r * row, 1, N, im);
            assert_memory_equal(a, b, NR * row);
            t->quant(x, b, NR, N, im);
            assert_memory_equal(a, b, NR * row);
            t->quant(x, c + 1, NR, N, im);
            assert_memory_equal(a, c + 1, NR * row);
        }
        /* the imatrix path differs from the plain one on this data */
        t->quant(x, b, NR, N, w);
        t->quant(x, a, NR, N, NULL);
        assert_memory_not_equal(a, b, NR * row);
        free(a);
        free(b);
        free(c);
    }
    free(x);
    free(w);
}

/* FNV-1a hashes of ggml's own bytes (ggml_quantize_chunk from the llama.cpp
 * bundled with llama-cpp-python 0.3.36) for 4 rows × 512 generated below,
 * without and with the imatrix below; qtune must reproduce them. */
static void test_golden(void **state)
{
    (void)state;
    enum { NR = 4, N = 512 };
    static const uint64_t want[TK_NTYPES][2] = {
        {0x6a5489337293acd4ull, 0x29aedf540214e457ull}, /* Q2_K */
        {0x06039b92022f423aull, 0xe8b5d09e8e51fb8bull}, /* Q3_K */
        {0x4f57ebe5f2fa6d06ull, 0xc02c5bc8645ee52full}, /* Q4_K */
        {0x819442521d5204e9ull, 0x4fce8e0b969dcba0ull}, /* Q5_K */
        {0x30d8a4ef41999488ull, 0x26d22c247793bbdcull}, /* Q6_K */
    };
    float *x = tk_alloc(NR * N);
    float *w = tk_alloc(N);
    tk_seed(20250611);
    for (int i = 0; i < N; i++)
        x[i] = tk_gauss();
    for (int i = 0; i < N; i++) {
        float g = tk_gauss();
        x[N + i] = g * g * g;
    }
    for (int i = 0; i < N; i++)
        x[2 * N + i] = (i / 16) % 5 == 2 ? 0.f : tk_gauss() * 1e-3f;
    for (int i = 0; i < N; i++)
        x[3 * N + i] = tk_unif() * 100.f;
    for (int j = 0; j < N; j++) {
        float u = tk_unif();
        w[j] = u * u * 50.f + 1e-3f;
    }
    int fails = 0;
    for (size_t k = 0; k < TK_NTYPES; k++) {
        const tk_type *t = &tk_types[k];
        size_t bytes = NR * (N / QK_K) * t->block;
        uint8_t *q = malloc(bytes);
        assert_non_null(q);
        for (int use = 0; use < 2; use++) {
            t->quant(x, q, NR, N, use ? w : NULL);
            uint64_t h = tk_fnv1a(q, bytes);
            if (h != want[k][use]) {
                print_error("%s imatrix=%d: hash 0x%016llx, ggml 0x%016llx\n", t->name, use,
                            (unsigned long long)h, (unsigned long long)want[k][use]);
                fails++;
            }
        }
        free(q);
    }
    free(x);
    free(w);
    assert_int_equal(fails, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_roundtrip_error),
        cmocka_unit_test(test_imatrix_lowers_weighted_error),
        cmocka_unit_test(test_zero_blocks),
        cmocka_unit_test(test_constant_blocks),
        cmocka_unit_test(test_huge_and_denormal),
        cmocka_unit_test(test_rows_and_determinism),
        cmocka_unit_test(test_golden),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
