/* test_kquants_fast.c — kernels/k_kquants.c against the scalar references.
 *
 * For Q2_K..Q6_K and IQ4_NL, with and without an importance matrix, the fast
 * blocks must equal q_quantize_<type>'s blocks byte for byte (memcmp, tolerance
 * zero) on fixed-seed rows of several kinds: normal, Student-t (3 degrees of
 * freedom), outlier-heavy, sparse (whole sub-blocks zero), all-zero, constant,
 * tiny (2e-20, below the searches' 1e-15 cut-off), huge (1e6, past f16's range
 * for the scales), subnormal, mixed (every 32 elements of another kind;
 * the neighbouring regimes drive the kernels' integer-rounding fallback), and
 * non-finite (a few ±inf and NaNs among normal values; a NaN's payload may
 * reach the levels through nearest_int's bits, and which operand's payload
 * an addition keeps is the compiler's choice, so only the default NaN).
 * Each kind is 32 rows × 4096 (512 super-blocks), plus odd shapes (9, 7 and
 * 6 super-blocks) for the grouping of Q2_K/Q4_K/Q5_K super-blocks and the
 * groups of sixteen IQ4_NL blocks. The test fails on the first differing
 * block. A child process with QTUNE_NO_SIMD=1 checks the scalar fallback the
 * same way, and that k_kquants_register then leaves the references installed.
 */
#include <math.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "k_cpu.h"
#include "k_kquants.h"
#include "q_blocks.h"
#include "q_format.h"
#include "q_qhelpers.h"
#include "q_quants.h"

typedef size_t (*tf_fn)(const float *, void *, int64_t, int64_t, const float *);

typedef struct tf_type {
    const char *name;
    q_format_id id;
    tf_fn ref, fast;
    size_t block; /* bytes per block */
    int64_t blck; /* elements per block */
} tf_type;

static const tf_type TF_TYPES[] = {
    {"q4_k", Q_FMT_Q4_K, q_quantize_q4_k, k_quantize_q4_k, sizeof(block_q4_K), QK_K},
    {"q6_k", Q_FMT_Q6_K, q_quantize_q6_k, k_quantize_q6_k, sizeof(block_q6_K), QK_K},
    {"q5_k", Q_FMT_Q5_K, q_quantize_q5_k, k_quantize_q5_k, sizeof(block_q5_K), QK_K},
    {"q3_k", Q_FMT_Q3_K, q_quantize_q3_k, k_quantize_q3_k, sizeof(block_q3_K), QK_K},
    {"q2_k", Q_FMT_Q2_K, q_quantize_q2_k, k_quantize_q2_k, sizeof(block_q2_K), QK_K},
    {"iq4_nl", Q_FMT_IQ4_NL, q_quantize_iq4_nl, k_quantize_iq4_nl, sizeof(block_iq4_nl), QK4_NL},
};
#define TF_NTYPES (sizeof TF_TYPES / sizeof TF_TYPES[0])

enum {
    TF_NORMAL,
    TF_STUDENT,
    TF_OUTLIER,
    TF_SPARSE,
    TF_ZERO,
    TF_CONST,
    TF_TINY,
    TF_HUGE,
    TF_SUBNORMAL,
    TF_MIXED,
    TF_NONFINITE,
    TF_NKINDS
};
static const char *const TF_KIND_NAMES[TF_NKINDS] = {
    "normal",   "student-t", "outliers", "sparse",    "zero",
    "constant", "tiny",      "huge",     "subnormal", "mixed", "nonfinite"};

static uint64_t tf_state;

static uint64_t tf_next(void)
{
    uint64_t z = (tf_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double tf_unif(void)
{
    return ((double)(tf_next() >> 11) + 0.5) * 0x1p-53;
}

static double tf_normal(void)
{
    return sqrt(-2 * log(tf_unif())) * cos(6.283185307179586 * tf_unif());
}

static void tf_fill(int kind, float *x, int64_t n, uint64_t seed)
{
    tf_state = seed;
    for (int64_t i = 0; i < n; i++) {
        double v = tf_normal() * 0.02;
        switch (kind) {
        case TF_STUDENT: {
            double c = 0;
            for (int k = 0; k < 3; k++) {
                double g = tf_normal();
                c += g * g;
            }
            v = tf_normal() / sqrt(c / 3) * 0.02;
            break;
        }
        case TF_OUTLIER:
            if (tf_next() % 100 == 0)
                v *= 50;
            break;
        case TF_ZERO:
            v = 0;
            break;
        case TF_CONST:
            v = 0.375;
            break;
        case TF_TINY:
            v *= 1e-18;
            break;
        case TF_HUGE:
            v *= 5e7;
            break;
        case TF_SUBNORMAL:
            v *= 1e-37; /* mostly below FLT_MIN: ranges whose inverse overflows */
            break;
        default:
            break;
        }
        x[i] = (float)v;
    }
    if (kind == TF_MIXED) { /* each 32-element group of one kind, neighbours differ */
        float *tmp = malloc(32 * sizeof *tmp);
        for (int64_t i = 0; tmp && i + 32 <= n; i += 32) {
            uint64_t st = tf_state;
            int k = (int)(tf_next() % TF_MIXED);
            tf_fill(k, tmp, 32, st);
            tf_state = st + 1;
            memcpy(x + i, tmp, 32 * sizeof *tmp);
        }
        free(tmp);
        return;
    }
    if (kind == TF_NONFINITE) { /* one value in about 300 +inf, -inf or NaN */
        for (int64_t i = 0; i < n; i++) {
            const uint64_t r = tf_next() % 900;
            if (r < 3)
                x[i] = r == 0 ? INFINITY : r == 1 ? -INFINITY : NAN;
        }
    }
    if (kind == TF_SPARSE) { /* zero about a quarter of the 16-element sub-blocks */
        for (int64_t i = 0; i < n; i += 16)
            if (tf_next() % 4 == 0)
                memset(x + i, 0, 16 * sizeof *x);
    }
}

/* An imatrix like llama.cpp's: Σx² per column, positive, a few exact zeros. */
static void tf_imatrix(float *w, int64_t n, uint64_t seed)
{
    tf_state = seed;
    for (int64_t i = 0; i < n; i++) {
        double g = tf_normal();
        w[i] = tf_next() % 64 == 0 ? 0.f : (float)(g * g * 3 + 0.01);
    }
}

/* Quantizes x with both functions; returns the index of the first differing
 * block or -1. */
static int64_t tf_compare(const tf_type *t, const float *x, int64_t rows, int64_t cols,
                          const float *imat)
{
    const int64_t nblk = rows * (cols / t->blck);
    uint8_t *a = malloc((size_t)nblk * t->block);
    uint8_t *b = malloc((size_t)nblk * t->block);
    int64_t bad = -2;
    if (!a || !b)
        goto done;
    memset(a, 0xA5, (size_t)nblk * t->block);
    memset(b, 0x5A, (size_t)nblk * t->block);
    size_t ra = t->ref(x, a, rows, cols, imat);
    size_t rb = t->fast(x, b, rows, cols, imat);
    bad = -1;
    if (ra != rb || ra != (size_t)nblk * t->block) {
        bad = 0;
        goto done;
    }
    for (int64_t i = 0; i < nblk; i++) {
        if (memcmp(a + i * (int64_t)t->block, b + i * (int64_t)t->block, t->block) != 0) {
            bad = i;
            break;
        }
    }
done:
    free(a);
    free(b);
    return bad;
}

#define TF_ROWS 32
#define TF_COLS 4096

/* Runs every kind with and without imatrix for type t; returns mismatches and
 * prints the first few. */
static int tf_type_all(const tf_type *t)
{
    int fails = 0;
    float *x = malloc(sizeof(float) * TF_ROWS * TF_COLS);
    float *w = malloc(sizeof(float) * TF_COLS);
    if (!x || !w) {
        free(x);
        free(w);
        return 1;
    }
    tf_imatrix(w, TF_COLS, 99);
    for (int kind = 0; kind < TF_NKINDS; kind++) {
        tf_fill(kind, x, TF_ROWS * TF_COLS, 1000 + (uint64_t)kind);
        for (int im = 0; im < 2; im++) {
            int64_t bad = tf_compare(t, x, TF_ROWS, TF_COLS, im ? w : NULL);
            if (bad != -1) {
                fails++;
                fprintf(stderr, "%s %s%s: first differing block %lld\n", t->name,
                        TF_KIND_NAMES[kind], im ? " +imatrix" : "", (long long)bad);
            }
        }
    }
    /* odd shapes (9, 7 and 6 super-blocks in all): the Q4_K/Q5_K kernels take
     * four at a time, then a pair, a pair with one block or one block */
    static const int64_t shapes[][2] = {{3, 768}, {1, 1792}, {1, 1536}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const int64_t r = shapes[k][0], c = shapes[k][1];
        for (int im = 0; im < 2; im++) {
            tf_fill(TF_NORMAL, x, r * c, 7 + k);
            if (tf_compare(t, x, r, c, im ? w : NULL) != -1) {
                fails++;
                fprintf(stderr, "%s %lldx%lld%s differs\n", t->name, (long long)r,
                        (long long)c, im ? " +imatrix" : "");
            }
        }
    }
    free(x);
    free(w);
    return fails;
}

static void test_fast_equals_ref(void **state)
{
    const tf_type *t = *state;
    if (!k_cpu_get()->avx2)
        skip();
    assert_int_equal(tf_type_all(t), 0);
}

/* The fallback in a child: QTUNE_NO_SIMD must be set before the first
 * k_cpu_get, which this process has already made. */
static void test_scalar_fallback(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("QTUNE_NO_SIMD", "1", 1);
        int fails = 0;
        if (k_cpu_get()->avx2)
            fails++; /* detection already ran: cannot test the fallback */
        k_kquants_register();
        for (size_t i = 0; i < TF_NTYPES && !fails; i++) {
            const q_format *f = q_format_get(TF_TYPES[i].id);
            if (f->quantize != f->quantize_ref)
                fails++;
            float x[2 * 512], w[512];
            tf_fill(TF_NORMAL, x, 2 * 512, 5);
            tf_imatrix(w, 512, 6);
            if (tf_compare(&TF_TYPES[i], x, 2, 512, NULL) != -1 ||
                tf_compare(&TF_TYPES[i], x, 2, 512, w) != -1)
                fails++;
        }
        _exit(fails ? 1 : 0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* One problem of the scale quantizers: n values of kind k (scales or mins as
 * the searches give them, and inputs the vector paths must refuse or meet
 * exactly: ties, zeros, a negative value, a NaN, tiny maxima) and weights of
 * kind wk (zeros among them, all zero, a wide range). */
static void tf_scales(int k, int wk, int n, bool sign, float *x, float *w)
{
    const float level = (float)(0.001 * exp(4 * tf_unif()));
    for (int i = 0; i < n; i++) {
        double v = level * tf_unif();
        switch (k) {
        case 0: break;
        case 1: v = level * exp(tf_normal()); break;            /* log-normal */
        case 2: v = i % 3 ? level : level * 0.5; break;         /* few values: ties */
        case 3: v = tf_unif() < 0.4 ? 0 : v; break;             /* zeros */
        case 4: v = 1.3e-15 * tf_unif(); break;                 /* near the cut-off */
        case 5: v = i == n / 2 ? -v : v; break;                 /* one negative */
        case 6: v = i == n - 1 ? NAN : v; break;                /* one NaN */
        case 7: v = i == 0 ? INFINITY : v; break;               /* one Inf */
        default: v = level * (double)(tf_next() % 64) / 63; break; /* on a lattice */
        }
        x[i] = (float)(sign && tf_unif() < 0.5 ? -v : v);
        double u = tf_unif();
        w[i] = (float)(wk == 0 ? u : wk == 1 ? (u < 0.3 ? 0 : u) : wk == 2 ? 0 : exp(20 * u - 10));
    }
}

/* k_make_qp4 and k_make_qx_w against q_qh_make_qp and q_qh_make_qx: the same
 * levels and the same result bits on 2·10^5 problems, and k_make_qp4 refuses
 * exactly the problems with a negative or non-finite value or a tiny maximum.
 * (Ties between trial scales, as all-zero weights give, decide which scale
 * the reference keeps: a "<" read as "<=" fails here.) */
static void test_scale_quantizers(void **state)
{
    (void)state;
    if (!k_cpu_get()->avx2)
        skip();
    tf_state = 77;
    int refused = 0, solved = 0;
    for (int t = 0; t < 25000; t++) {
        const int n = t % 5 == 0 ? 1 + (int)(tf_next() % 16) : t % 2 ? 16 : 8;
        const int nmax = t % 2 ? 15 : 63;
        float x[4][16], w[4][16], out[4];
        uint8_t L[4][16], R[16];
        bool want = true;
        for (int k = 0; k < 4; k++) {
            /* one lane in seven or so with an input to refuse */
            static const int good[] = {0, 1, 2, 3, 8}, bad[] = {4, 5, 6, 7};
            const uint64_t r = tf_next();
            const int kind = r % 24 < 21 ? good[(r >> 8) % 5] : bad[(r >> 8) % 4];
            const int wk = (int)(tf_next() % 4);
            tf_scales(kind, wk, n, false, x[k], w[k]);
            float mx = 0;
            for (int i = 0; i < n; i++) {
                want = want && x[k][i] >= 0 && x[k][i] <= 3.402823466e38f;
                mx = mx > x[k][i] ? mx : x[k][i];
            }
            want = want && mx >= 1e-15f;
        }
        const float *xs[4] = {x[0], x[1], x[2], x[3]}, *ws[4] = {w[0], w[1], w[2], w[3]};
        uint8_t *Ls[4] = {L[0], L[1], L[2], L[3]};
        const bool got = k_make_qp4(n, nmax, xs, ws, Ls, out);
        assert_int_equal(got, want);
        refused += !got;
        solved += got;
        for (int k = 0; got && k < 4; k++) {
            const float r = q_qh_make_qp(n, nmax, x[k], R, w[k]);
            assert_memory_equal(L[k], R, (size_t)n);
            assert_memory_equal(&out[k], &r, sizeof r);
        }
    }
    for (int t = 0; t < 100000; t++) {
        const int n = t % 5 == 0 ? 1 + (int)(tf_next() % 16) : 16;
        const int nmax = t % 3 ? 32 : 4;
        float x[16], w[16];
        int8_t L[16], R[16];
        tf_scales((int)(tf_next() % 12) % 9, (int)(tf_next() % 4), n, true, x, w);
        const float got = k_make_qx_w(n, nmax, x, L, w);
        const float want = q_qh_make_qx(n, nmax, x, R, w);
        assert_memory_equal(L, R, (size_t)n);
        assert_memory_equal(&got, &want, sizeof got);
    }
    print_message("  make_qp: %d groups of four solved, %d refused\n", solved, refused);
    assert_true(solved > 10000 && refused > 1000);
}

static void test_register(void **state)
{
    (void)state;
    if (!k_cpu_get()->avx2)
        skip();
    k_kquants_register();
    for (size_t i = 0; i < TF_NTYPES; i++) {
        const q_format *f = q_format_get(TF_TYPES[i].id);
        assert_ptr_equal(f->quantize, TF_TYPES[i].fast);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalar_fallback),
        {"test_q4_k_equals_ref", test_fast_equals_ref, NULL, NULL, (void *)&TF_TYPES[0]},
        {"test_q6_k_equals_ref", test_fast_equals_ref, NULL, NULL, (void *)&TF_TYPES[1]},
        {"test_q5_k_equals_ref", test_fast_equals_ref, NULL, NULL, (void *)&TF_TYPES[2]},
        {"test_q3_k_equals_ref", test_fast_equals_ref, NULL, NULL, (void *)&TF_TYPES[3]},
        {"test_q2_k_equals_ref", test_fast_equals_ref, NULL, NULL, (void *)&TF_TYPES[4]},
        {"test_iq4_nl_equals_ref", test_fast_equals_ref, NULL, NULL, (void *)&TF_TYPES[5]},
        cmocka_unit_test(test_scale_quantizers),
        cmocka_unit_test(test_register),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
