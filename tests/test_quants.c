/* test_quants.c — ggml's 32-element quantizers and IQ4_NL (quant/q_quants.c).
 *
 * Byte identity with ggml is checked by tests/py/check_quants.py (gguf package
 * and libggml as oracles); this suite checks properties that hold whatever the
 * oracle: round-trip error bounds through q_dtype's dequantizers, the exact
 * bytes of all-zero and constant blocks, huge, subnormal and non-finite input,
 * multi-row calls against row-by-row calls, unaligned output, determinism and
 * what an imatrix of all ones changes. Data come from a fixed-seed generator.
 *
 * Error bounds (d = the stored f16 scale, widened): rounding to the nearest
 * level costs at most d/2; rounding d itself to f16 moves level q by at most
 * |q| * |d| * 2^-11, which the bounds cover with |q|max * 2^-10 * d. Q4_0 and
 * Q5_0 give the largest magnitude the level -8 (-16), so an element of the
 * other sign beyond 7.5 (15.5) steps is clamped: those may be off by d.
 */
#include <float.h>
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

typedef size_t (*tq_fn)(const float *, void *, int64_t, int64_t, const float *);

typedef struct tq_type {
    const char *name;
    q_dtype id;
    tq_fn fn;
    size_t bsize;
} tq_type;

static const tq_type tq_types[] = {
    {"Q8_0", Q_DT_Q8_0, q_quantize_q8_0, sizeof(block_q8_0)},
    {"Q4_0", Q_DT_Q4_0, q_quantize_q4_0, sizeof(block_q4_0)},
    {"Q4_1", Q_DT_Q4_1, q_quantize_q4_1, sizeof(block_q4_1)},
    {"Q5_0", Q_DT_Q5_0, q_quantize_q5_0, sizeof(block_q5_0)},
    {"Q5_1", Q_DT_Q5_1, q_quantize_q5_1, sizeof(block_q5_1)},
    {"IQ4_NL", Q_DT_IQ4_NL, q_quantize_iq4_nl, sizeof(block_iq4_nl)},
};
#define TQ_NTYPES ((int)(sizeof tq_types / sizeof tq_types[0]))

/* ---- helpers ---- */

static uint64_t tq_rng = 1;

static void tq_seed(uint64_t s)
{
    tq_rng = s;
}

static uint64_t tq_next(void)
{
    /* splitmix64 */
    uint64_t z = (tq_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in (0, 1) */
static double tq_unif(void)
{
    return ((double)(tq_next() >> 11) + 0.5) * 0x1p-53;
}

static float tq_normal(void)
{
    return (float)(sqrt(-2.0 * log(tq_unif())) * cos(6.283185307179586 * tq_unif()));
}

static void tq_fill_normal(float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * tq_normal();
}

static uint16_t tq_ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t tq_ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Quantizes rows × cols with type t (imatrix or NULL) into a fresh buffer
 * (caller frees) after checking the returned size; dequantizes into y when y
 * is not NULL. */
static uint8_t *tq_quant(const tq_type *t, const float *x, int64_t rows, int64_t cols,
                         const float *imatrix, float *y)
{
    size_t bytes = (size_t)(rows * (cols / 32)) * t->bsize;
    uint8_t *q = malloc(bytes);
    assert_non_null(q);
    memset(q, 0xa5, bytes);
    assert_int_equal(t->fn(x, q, rows, cols, imatrix), bytes);
    if (y)
        q_dtype_get(t->id)->dequant(q, y, rows * cols);
    return q;
}

/* Stored f16 scale of block b (every type here keeps d at offset 0). */
static float tq_block_d(const tq_type *t, const uint8_t *q, int64_t b)
{
    return q_f16_to_f32(tq_ld16(q + b * (int64_t)t->bsize));
}

/* Σ w (x - y)² with ggml's importance weights w = sqrt(σ² + x²) per row. */
static double tq_weighted_err(const float *x, const float *y, int64_t rows, int64_t cols)
{
    double tot = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols, *yr = y + r * cols;
        double s2 = 0;
        for (int64_t j = 0; j < cols; j++)
            s2 += (double)xr[j] * xr[j];
        s2 /= (double)cols;
        for (int64_t j = 0; j < cols; j++) {
            double e = (double)xr[j] - yr[j];
            tot += sqrt(s2 + (double)xr[j] * xr[j]) * e * e;
        }
    }
    return tot;
}

/* ---- round trip error bounds (imatrix NULL: ggml's _ref algorithms) ---- */

/* Largest allowed |x - y| for element j of a block, per type (see the top). */
static double tq_bound(const tq_type *t, const uint8_t *blk, const float *xb, int j)
{
    double d = fabs(q_f16_to_f32(tq_ld16(blk)));
    double eps = 1e-6 * fabs((double)xb[j]);
    switch (t->id) {
    case Q_DT_Q8_0:
        return d * (0.5 + 128.0 / 1024) + eps;
    case Q_DT_Q4_0:
    case Q_DT_Q5_0: {
        double half = t->id == Q_DT_Q4_0 ? 8 : 16;
        double dd = q_f16_to_f32(tq_ld16(blk)); /* signed: x = d * (q - half) */
        double steps = xb[j] / dd;              /* level before rounding, minus half */
        double lim = steps > half - 1 + 0.5 ? 1.0 : 0.5;
        return d * (lim + 2 * half / 1024) + eps;
    }
    case Q_DT_Q4_1:
    case Q_DT_Q5_1: {
        double m = fabs(q_f16_to_f32(tq_ld16(blk + 2)));
        double nq = t->id == Q_DT_Q4_1 ? 16 : 32;
        return d * (0.5 + nq / 1024) + m / 1024 + eps;
    }
    default:
        return 0;
    }
}

static void test_round_trip_bounds(void **state)
{
    (void)state;
    const int64_t rows = 16, cols = 1024, n = rows * cols;
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (int pass = 0; pass < 3; pass++) {
        tq_seed(1000 + (uint64_t)pass);
        /* pass 0: normal; 1: normal with 1% outliers ×40; 2: shifted uniform */
        for (int64_t i = 0; i < n; i++) {
            if (pass == 2)
                x[i] = (float)(tq_unif() * 4 - 1);
            else
                x[i] = 0.05f * tq_normal() * (pass == 1 && tq_unif() < 0.01 ? 40.f : 1.f);
        }
        for (int k = 0; k < TQ_NTYPES; k++) {
            const tq_type *t = &tq_types[k];
            if (t->id == Q_DT_IQ4_NL)
                continue; /* non-uniform levels: test_iq4_nl_nearest_level */
            uint8_t *q = tq_quant(t, x, rows, cols, NULL, y);
            double worst = 0;
            for (int64_t b = 0; b < n / 32; b++) {
                const uint8_t *blk = q + b * (int64_t)t->bsize;
                for (int j = 0; j < 32; j++) {
                    double e = fabs((double)x[32 * b + j] - y[32 * b + j]);
                    double lim = tq_bound(t, blk, x + 32 * b, j);
                    if (e > lim) {
                        print_error("%s pass %d block %lld elem %d: |%.9g - %.9g| > %.9g\n",
                                    t->name, pass, (long long)b, j, (double)x[32 * b + j],
                                    (double)y[32 * b + j], lim);
                        fail();
                    }
                    if (lim > 0 && e / lim > worst)
                        worst = e / lim;
                }
            }
            /* the bound is not slack: some element uses most of it */
            assert_true(worst > 0.5);
            free(q);
        }
    }
    free(x);
    free(y);
}

/* IQ4_NL: every element gets the level nearest to it for the stored scale,
 * up to the shift that rounding d to f16 causes (127 levels × 2^-11 × 2). */
static void test_iq4_nl_nearest_level(void **state)
{
    (void)state;
    const int64_t rows = 8, cols = 512, n = rows * cols;
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    float *im = malloc((size_t)cols * sizeof *im);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(im);
    tq_seed(77);
    tq_fill_normal(x, n, 0.03f);
    for (int64_t j = 0; j < cols; j++)
        im[j] = (float)(0.1 + 5 * tq_unif());
    const tq_type *t = &tq_types[5];
    for (int use_im = 0; use_im < 2; use_im++) {
        uint8_t *q = tq_quant(t, x, rows, cols, use_im ? im : NULL, y);
        for (int64_t b = 0; b < n / 32; b++) {
            double d = tq_block_d(t, q, b);
            assert_true(d > 0 || d < 0);
            for (int j = 0; j < 32; j++) {
                double xv = x[32 * b + j], best = INFINITY;
                for (int k = 0; k < 16; k++)
                    best = fmin(best, fabs(xv - d * q_iq4nl_values[k]));
                double e = fabs(xv - y[32 * b + j]);
                assert_true(e <= best + 254.0 / 2048 * fabs(d) + 1e-6 * fabs(xv));
            }
        }
        free(q);
    }
    /* IQ4_NL's search beats Q4_0's round-to-nearest on normal data */
    float *y4 = malloc((size_t)n * sizeof *y4);
    assert_non_null(y4);
    free(tq_quant(&tq_types[1], x, rows, cols, NULL, y4));
    free(tq_quant(t, x, rows, cols, NULL, y));
    double e_iq = tq_weighted_err(x, y, rows, cols), e_q4 = tq_weighted_err(x, y4, rows, cols);
    assert_true(e_iq < 0.9 * e_q4);
    free(y4);
    free(im);
    free(x);
    free(y);
}

/* ---- special blocks ---- */

/* All-zero rows: every value dequantizes to 0 and d is a zero (Q4_0 and Q5_0
 * store d = 0 / -8 = -0, bits 0x8000, exactly as ggml). The level bytes are
 * ggml's too: the reference paths put every element at the middle level
 * (Q4_0 8, Q5_0 16, IQ4_NL 8, the value 1 × 0), the weighted searches of
 * Q4_0/Q5_0 at 0. */
static void test_zero_blocks(void **state)
{
    (void)state;
    const int64_t rows = 2, cols = 64, n = rows * cols;
    float x[128], y[128], im[64];
    memset(x, 0, sizeof x);
    for (int j = 0; j < cols; j++)
        im[j] = 1.0f + (float)j;
    for (int k = 0; k < TQ_NTYPES; k++) {
        const tq_type *t = &tq_types[k];
        for (int use_im = 0; use_im < 2; use_im++) {
            for (int neg = 0; neg < 2; neg++) {
                for (int64_t i = 0; i < n; i++)
                    x[i] = neg ? -0.0f : 0.0f;
                uint8_t *q = tq_quant(t, x, rows, cols, use_im ? im : NULL, y);
                for (int64_t i = 0; i < n; i++)
                    assert_true(y[i] == 0.0f);
                for (int64_t b = 0; b < n / 32; b++) {
                    const uint8_t *blk = q + b * (int64_t)t->bsize;
                    uint16_t d = tq_ld16(blk);
                    int ref_sym = !use_im && (t->id == Q_DT_Q4_0 || t->id == Q_DT_Q5_0);
                    if (d != (ref_sym ? 0x8000 : 0x0000)) {
                        print_error("%s imatrix=%d input %s0: d bits %04x\n", t->name, use_im,
                                    neg ? "-" : "+", d);
                        fail();
                    }
                    uint8_t want_qs = 0;
                    uint32_t want_qh = 0;
                    if (t->id == Q_DT_IQ4_NL || (t->id == Q_DT_Q4_0 && !use_im))
                        want_qs = 0x88;
                    if (t->id == Q_DT_Q5_0 && !use_im)
                        want_qh = 0xffffffffu;
                    size_t qs_off = t->bsize - 16, qs_n = 16;
                    if (t->id == Q_DT_Q8_0)
                        qs_off = 2, qs_n = 32;
                    for (size_t j = 0; j < qs_n; j++)
                        assert_int_equal(blk[qs_off + j], want_qs);
                    if (t->id == Q_DT_Q5_0)
                        assert_int_equal(tq_ld32(blk + 2), want_qh);
                    if (t->id == Q_DT_Q5_1)
                        assert_int_equal(tq_ld32(blk + 4), 0);
                    if (t->id == Q_DT_Q4_1 || t->id == Q_DT_Q5_1)
                        assert_int_equal(tq_ld16(blk + 2), neg ? 0x8000 : 0); /* m = ±0 */
                }
                free(q);
            }
        }
    }
}

/* A constant block comes back as the constant up to f16 rounding of d (or m):
 * Q4_1 / Q5_1 reference: d = 0 and m = f16(c) exactly; the others put every
 * element on one level, so |y - c| <= |c| × 2^-10 (+ the subnormal f16 step). */
static void test_constant_blocks(void **state)
{
    (void)state;
    const float consts[] = {1.0f, -1.0f, 0.3f, -0.3f, 1e-3f, -7.25f, 1000.0f};
    float x[64], y[64], im[64];
    for (int j = 0; j < 64; j++)
        im[j] = 0.5f + 0.01f * (float)j;
    for (size_t c = 0; c < sizeof consts / sizeof consts[0]; c++) {
        for (int j = 0; j < 64; j++)
            x[j] = j < 32 ? consts[c] : -consts[c];
        for (int k = 0; k < TQ_NTYPES; k++) {
            const tq_type *t = &tq_types[k];
            for (int use_im = 0; use_im < 2; use_im++) {
                uint8_t *q = tq_quant(t, x, 1, 64, use_im ? im : NULL, y);
                for (int j = 0; j < 64; j++) {
                    /* f16 keeps 11 bits, or steps of 2^-24 below 2^-14 (c = 1e-3
                     * makes Q8_0's and IQ4_NL's d subnormal): 127 levels of that */
                    double tol = fabs((double)x[j]) / 1024 + 127 * 0x1p-25;
                    if (fabs((double)y[j] - x[j]) > tol) {
                        print_error("%s imatrix=%d c=%g: element %d is %.9g\n", t->name,
                                    use_im, (double)x[j], j, (double)y[j]);
                        fail();
                    }
                }
                if (!use_im && (t->id == Q_DT_Q4_1 || t->id == Q_DT_Q5_1)) {
                    for (int b = 0; b < 2; b++) {
                        const uint8_t *blk = q + b * (int64_t)t->bsize;
                        assert_int_equal(tq_ld16(blk), 0);
                        assert_int_equal(tq_ld16(blk + 2), q_f32_to_f16(x[32 * b]));
                    }
                }
                free(q);
            }
        }
    }
}

/* Huge values. f16 scales end at 65504, so ggml stores d = ±inf once the block
 * maximum passes about 65504 × 127 (Q8_0), × 8 (Q4_0), × 15 (Q4_1), ... and
 * Q4_1/Q5_1 store m = -inf once the minimum passes -65504: such blocks no
 * longer dequantize to finite values. For |x| > ~1.8e19, x² overflows, and the
 * searches that square x (IQ4_NL always, Q4_0/Q5_0 with an imatrix) end with
 * NaN scales, while Q4_1/Q5_1 with an imatrix end with inf. All of this is
 * what ggml writes (check_quants.py compares these inputs with libggml);
 * callers must keep such tensors in f32. Checked here: no crash, determinism,
 * and which scales are inf and which NaN. */
static void test_huge_values(void **state)
{
    (void)state;
    const float bigs[] = {1e30f, FLT_MAX, -FLT_MAX, 3e38f, 5e4f};
    float x[64], y[64], im[64];
    for (int j = 0; j < 64; j++)
        im[j] = 1.0f;
    for (size_t c = 0; c < sizeof bigs / sizeof bigs[0]; c++) {
        tq_seed(500 + c);
        for (int j = 0; j < 64; j++)
            x[j] = bigs[c] * (float)(tq_unif() * 2 - 1);
        x[5] = bigs[c];
        x[40] = -bigs[c];
        for (int k = 0; k < TQ_NTYPES; k++) {
            const tq_type *t = &tq_types[k];
            for (int use_im = 0; use_im < 2; use_im++) {
                uint8_t *q1 = tq_quant(t, x, 1, 64, use_im ? im : NULL, y);
                uint8_t *q2 = tq_quant(t, x, 1, 64, use_im ? im : NULL, NULL);
                assert_memory_equal(q1, q2, 2 * t->bsize);
                if (bigs[c] > 1e29f) {
                    int want_nan = t->id == Q_DT_IQ4_NL ||
                                   (use_im && (t->id == Q_DT_Q4_0 || t->id == Q_DT_Q5_0));
                    for (int b = 0; b < 2; b++) {
                        float d = tq_block_d(t, q1, b);
                        assert_true(want_nan ? isnan(d) : isinf(d));
                    }
                }
                if (bigs[c] == 5e4f) { /* d fits in f16: finite, within a level gap */
                    for (int j = 0; j < 64; j++) {
                        if (fabsf(y[j] - x[j]) > 0.25f * 5e4f) {
                            print_error("%s imatrix=%d: element %d %.9g -> %.9g\n", t->name,
                                        use_im, j, (double)x[j], (double)y[j]);
                            fail();
                        }
                    }
                }
                free(q1);
                free(q2);
            }
        }
    }
}

/* Subnormal and tiny normal inputs. d underflows to a zero f16, so every value
 * dequantizes to 0 (error <= the input itself). Below about 2.35e-38 (Q4_0)
 * 1/d overflows to inf in ggml's reference: its level casts then see inf/NaN;
 * qtune reproduces what x86-64 ggml builds (and the gguf package) write,
 * without undefined behaviour. Non-finite input (outside the contract) must not
 * crash either. */
static void test_denormals_and_nonfinite(void **state)
{
    (void)state;
    const float tiny[] = {1e-40f, 1e-45f, 1e-38f, 2e-37f, 1e-30f};
    float x[64], y[64], im[64];
    for (int j = 0; j < 64; j++)
        im[j] = 2.0f;
    for (size_t c = 0; c < sizeof tiny / sizeof tiny[0]; c++) {
        tq_seed(900 + c);
        for (int j = 0; j < 64; j++)
            x[j] = tiny[c] * (float)(tq_unif() * 2 - 1);
        x[3] = tiny[c];
        for (int k = 0; k < TQ_NTYPES; k++) {
            const tq_type *t = &tq_types[k];
            for (int use_im = 0; use_im < 2; use_im++) {
                uint8_t *q = tq_quant(t, x, 1, 64, use_im ? im : NULL, y);
                for (int j = 0; j < 64; j++) {
                    assert_true(isfinite(y[j]));
                    assert_true(fabsf(y[j] - x[j]) <= fabsf(tiny[c]) * 1.001f);
                }
                free(q);
            }
        }
    }
    const float specials[] = {NAN, INFINITY, -INFINITY};
    for (size_t c = 0; c < 3; c++) {
        tq_seed(950 + c);
        tq_fill_normal(x, 64, 1.0f);
        x[7] = specials[c];
        for (int k = 0; k < TQ_NTYPES; k++)
            for (int use_im = 0; use_im < 2; use_im++)
                free(tq_quant(&tq_types[k], x, 1, 64, use_im ? im : NULL, y));
    }
}

/* ---- calling conventions ---- */

/* One call over many rows writes what row-by-row calls write; the row size is
 * n_per_row / 32 blocks; an unaligned dst gets the same bytes; a second call
 * gives the same bytes (no hidden state). */
static void test_multirow_and_determinism(void **state)
{
    (void)state;
    const int64_t rows = 7, cols = 256, n = rows * cols;
    float *x = malloc((size_t)n * sizeof *x), *im = malloc((size_t)cols * sizeof *im);
    assert_non_null(x);
    assert_non_null(im);
    tq_seed(4242);
    tq_fill_normal(x, n, 0.1f);
    for (int64_t j = 0; j < cols; j++)
        im[j] = (float)(10 * tq_unif());
    for (int k = 0; k < TQ_NTYPES; k++) {
        const tq_type *t = &tq_types[k];
        const size_t row_size = (size_t)(cols / 32) * t->bsize;
        for (int use_im = 0; use_im < 2; use_im++) {
            const float *w = use_im ? im : NULL;
            uint8_t *all = tq_quant(t, x, rows, cols, w, NULL);
            uint8_t *again = tq_quant(t, x, rows, cols, w, NULL);
            assert_memory_equal(all, again, rows * row_size);
            uint8_t *one = malloc(row_size + 1);
            assert_non_null(one);
            for (int64_t r = 0; r < rows; r++) {
                assert_int_equal(t->fn(x + r * cols, one + 1, 1, cols, w), row_size);
                assert_memory_equal(one + 1, all + r * (int64_t)row_size, row_size);
            }
            free(one);
            free(again);
            free(all);
        }
        /* invalid shapes write nothing and return 0 */
        uint8_t guard[64];
        memset(guard, 0x5a, sizeof guard);
        assert_int_equal(t->fn(x, guard, 1, 48, NULL), 0);
        assert_int_equal(t->fn(x, guard, 1, 0, NULL), 0);
        assert_int_equal(t->fn(x, guard, 0, 32, NULL), 0);
        for (size_t i = 0; i < sizeof guard; i++)
            assert_int_equal(guard[i], 0x5a);
    }
    free(im);
    free(x);
}

/* An imatrix of all ones is not the same as no imatrix: it selects ggml's
 * weighted search (weights sqrt(σ² + x²)) instead of the reference rounding,
 * except for Q8_0, which ignores the imatrix like ggml. The searches give a
 * smaller weighted error than the reference on zero-mean data; IQ4_NL always
 * searches, with weights x² (NULL) or sqrt(σ² + x²) (ones). */
static void test_imatrix_ones_vs_null(void **state)
{
    (void)state;
    const int64_t rows = 16, cols = 512, n = rows * cols;
    float *x = malloc((size_t)n * sizeof *x), *ones = malloc((size_t)cols * sizeof *ones);
    float *y0 = malloc((size_t)n * sizeof *y0), *y1 = malloc((size_t)n * sizeof *y1);
    assert_non_null(x);
    assert_non_null(ones);
    assert_non_null(y0);
    assert_non_null(y1);
    tq_seed(31337);
    tq_fill_normal(x, n, 0.02f);
    for (int64_t j = 0; j < cols; j++)
        ones[j] = 1.0f;
    for (int k = 0; k < TQ_NTYPES; k++) {
        const tq_type *t = &tq_types[k];
        uint8_t *q0 = tq_quant(t, x, rows, cols, NULL, y0);
        uint8_t *q1 = tq_quant(t, x, rows, cols, ones, y1);
        size_t bytes = (size_t)(n / 32) * t->bsize;
        int64_t differ = 0;
        for (int64_t b = 0; b < n / 32; b++)
            differ += memcmp(q0 + b * (int64_t)t->bsize, q1 + b * (int64_t)t->bsize,
                             t->bsize) != 0;
        double e0 = tq_weighted_err(x, y0, rows, cols), e1 = tq_weighted_err(x, y1, rows, cols);
        if (t->id == Q_DT_Q8_0) {
            assert_memory_equal(q0, q1, bytes);
        } else {
            assert_true(differ > n / 32 / 4); /* most blocks change */
            if (t->id != Q_DT_IQ4_NL)
                assert_true(e1 < e0); /* the search improves on rounding */
            else
                assert_true(e1 < 1.1 * e0 && e0 < 1.1 * e1); /* same search, close */
        }
        free(q0);
        free(q1);
    }
    free(x);
    free(ones);
    free(y0);
    free(y1);
}

/* ---- known answers (worked by hand from ggml's formulas) ---- */

/* x[j] = j - 16 (-16..15). Q4_0: max = -16, d = 2, id = 0.5, level =
 * trunc(x/2 + 8.5) capped at 15, so x = -16, -15, -14, ... give 0, 1, 1, 2, 2,
 * ... and 15 gives 16 -> 15. Q8_0: d = 16/127, level = roundf(x * 127/16). */
static void test_known_answers(void **state)
{
    (void)state;
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16);
    uint8_t b4[18], b8[34];
    assert_int_equal(q_quantize_q4_0(x, b4, 1, 32, NULL), 18);
    assert_int_equal(tq_ld16(b4), 0x4000); /* f16 2.0 */
    for (int j = 0; j < 16; j++) {
        int lo = j == 0 ? 0 : (j + 1) / 2; /* x = j - 16 */
        int hi = j == 15 ? 15 : (j + 17) / 2; /* x = j */
        assert_int_equal(b4[2 + j], lo | hi << 4);
    }
    assert_int_equal(q_quantize_q8_0(x, b8, 1, 32, NULL), 34);
    assert_int_equal(tq_ld16(b8), q_f32_to_f16(16.0f / 127));
    const float id = 1.0f / (16.0f / 127);
    for (int j = 0; j < 32; j++)
        assert_int_equal((int8_t)b8[2 + j], (int)roundf(x[j] * id));
    assert_int_equal((int8_t)b8[2], -127);
    assert_int_equal((int8_t)b8[2 + 31], 119); /* 15 × 7.9375 = 119.06 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_bounds),
        cmocka_unit_test(test_iq4_nl_nearest_level),
        cmocka_unit_test(test_zero_blocks),
        cmocka_unit_test(test_constant_blocks),
        cmocka_unit_test(test_huge_values),
        cmocka_unit_test(test_denormals_and_nonfinite),
        cmocka_unit_test(test_multirow_and_determinism),
        cmocka_unit_test(test_imatrix_ones_vs_null),
        cmocka_unit_test(test_known_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
