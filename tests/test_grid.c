/* test_grid.c — grid fake quantizers (q_grid.c): fp8 against q_dtype's F8
 * decoders (all 256 codes, every tie, saturation), int/uint/nf4 output on the
 * grid and nearest to the input, error bounds, group handling, the imatrix
 * search never losing to plain absmax in weighted error, zeros and non-finite
 * input. Random data from a fixed-seed xorshift; tolerances stated per test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "q_dtype.h"
#include "q_format.h"
#include "q_grid.h"

/* ---- helpers ---- */


/* rows × cols of normal values; row r scaled by 10^(r mod 5 - 2), plus a few
 * outliers, so that rows and groups have very different ranges. */
static float *make_data(int64_t rows, int64_t cols)
{
    float *x = malloc((size_t)(rows * cols) * sizeof *x);
    assert_non_null(x);
    for (int64_t r = 0; r < rows; r++) {
        float sc = powf(10.0f, (float)(r % 5) - 2.0f);
        for (int64_t c = 0; c < cols; c++) {
            float v = grand() * sc;
            if (rng() % 97 == 0)
                v *= 8.0f;
            x[r * cols + c] = v;
        }
    }
    return x;
}

static q_fmt_spec spec_of(q_format_id id, int bits, int64_t group)
{
    q_fmt_spec s = {id, bits, group};
    return s;
}

static float f16r(float s)
{
    return q_f16_to_f32(q_f32_to_f16(s));
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Range [lo, hi] of group g (group elements starting at x), widened to 0. */
static void range_of(const float *x, int64_t n, float *lo, float *hi)
{
    *lo = 0.0f;
    *hi = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        *lo = fminf(*lo, x[i]);
        *hi = fmaxf(*hi, x[i]);
    }
}

static float fp8_decode_ref(q_dtype t, uint8_t c)
{
    float v;
    q_dtype_get(t)->dequant(&c, &v, 1);
    return v;
}

/* ---- fp8 ---- */

static void fp8_exhaustive(q_format_id id, q_dtype dt, float max, int n_finite_expect)
{
    float in[256], out[256];
    int n = 0;
    for (int c = 0; c < 256; c++) {
        float v = fp8_decode_ref(dt, (uint8_t)c);
        if (isfinite(v))
            in[n++] = v;
    }
    assert_int_equal(n, n_finite_expect);
    /* Tensor range ±max: the scale is exactly 1, so fake-quant is the bare
     * round trip encode(decode(c)) and must give every value back bit for bit
     * (-0 included). */
    q_fq_ctx ctx = {true, -max, max};
    q_fmt_spec s = spec_of(id, 0, Q_GROUP_TENSOR);
    q_grid_fakequant(&s, in, out, 1, n, NULL, &ctx);
    for (int i = 0; i < n; i++)
        assert_int_equal(bits_of(out[i]), bits_of(in[i]));
    /* Saturation: beyond max (and infinity) gives ±max; NaN stays NaN. */
    float sat[6] = {max * 1.0625f, max * 4.0f, INFINITY, -max * 1.0625f, -INFINITY, NAN};
    q_grid_fakequant(&s, sat, out, 1, 6, NULL, &ctx);
    assert_true(out[0] == max && out[1] == max && out[2] == max);
    assert_true(out[3] == -max && out[4] == -max);
    assert_true(isnan(out[5]));
}

static void test_fp8_e4m3_all_codes(void **state)
{
    (void)state;
    /* E4M3 "fn": only S.1111.111 is NaN -> 254 finite codes. */
    fp8_exhaustive(Q_FMT_FP8_E4M3, Q_DT_F8_E4M3, 448.0f, 254);
    assert_true(isnan(fp8_decode_ref(Q_DT_F8_E4M3, 0x7f)));
    assert_true(fp8_decode_ref(Q_DT_F8_E4M3, 0x7e) == 448.0f);
}

static void test_fp8_e5m2_all_codes(void **state)
{
    (void)state;
    /* E5M2: 2 infinities and 6 NaNs -> 248 finite codes. */
    fp8_exhaustive(Q_FMT_FP8_E5M2, Q_DT_F8_E5M2, 57344.0f, 248);
    assert_true(isinf(fp8_decode_ref(Q_DT_F8_E5M2, 0x7c)));
    assert_true(fp8_decode_ref(Q_DT_F8_E5M2, 0x7b) == 57344.0f);
}

/* Every midpoint between neighbouring non-negative codes rounds to the code with
 * an even mantissa; one ulp either side goes to the nearer one. */
static void fp8_ties(q_format_id id, q_dtype dt, float max)
{
    float in[3 * 128], out[3 * 128], lo_v[128], hi_v[128];
    int even_is_lo[128];
    int n = 0;
    for (int c = 0; c + 1 < 128; c++) {
        float a = fp8_decode_ref(dt, (uint8_t)c), b = fp8_decode_ref(dt, (uint8_t)(c + 1));
        if (!isfinite(a) || !isfinite(b))
            break;
        float m = (float)(((double)a + (double)b) / 2.0);
        assert_true((double)m == ((double)a + (double)b) / 2.0); /* exact in f32 */
        in[3 * n] = m;
        in[3 * n + 1] = nextafterf(m, 0.0f);
        in[3 * n + 2] = nextafterf(m, INFINITY);
        lo_v[n] = a;
        hi_v[n] = b;
        even_is_lo[n] = (c % 2) == 0;
        n++;
    }
    assert_true(n >= 120);
    q_fq_ctx ctx = {true, -max, max};
    q_fmt_spec s = spec_of(id, 0, Q_GROUP_TENSOR);
    q_grid_fakequant(&s, in, out, 1, 3 * n, NULL, &ctx);
    for (int i = 0; i < n; i++) {
        assert_true(out[3 * i] == (even_is_lo[i] ? lo_v[i] : hi_v[i]));
        assert_true(out[3 * i + 1] == lo_v[i]);
        assert_true(out[3 * i + 2] == hi_v[i]);
    }
    /* The same, negated. */
    for (int i = 0; i < 3 * n; i++)
        in[i] = -in[i];
    q_grid_fakequant(&s, in, out, 1, 3 * n, NULL, &ctx);
    for (int i = 0; i < n; i++)
        assert_true(out[3 * i] == -(even_is_lo[i] ? lo_v[i] : hi_v[i]));
}

static void test_fp8_ties_to_even(void **state)
{
    (void)state;
    fp8_ties(Q_FMT_FP8_E4M3, Q_DT_F8_E4M3, 448.0f);
    fp8_ties(Q_FMT_FP8_E5M2, Q_DT_F8_E5M2, 57344.0f);
}

/* Per channel and per group of 32 on random data: each output is s × (the fp8
 * value nearest x / s), s = absmax / max in f32 (checked against a brute-force
 * search over all 256 codes of q_dtype's decoder). */
static void fp8_nearest(q_format_id id, q_dtype dt, float max)
{
    float table[256];
    for (int c = 0; c < 256; c++)
        table[c] = fp8_decode_ref(dt, (uint8_t)c);
    const int64_t rows = 10, cols = 128;
    const int64_t groups[2] = {Q_GROUP_CHANNEL, 32};
    for (int gi = 0; gi < 2; gi++) {
        rng_state = 0x9e3779b97f4a7c15ull + (uint64_t)gi;
        float *x = make_data(rows, cols);
        float *y = malloc(sizeof(float) * (size_t)(rows * cols));
        assert_non_null(y);
        q_fmt_spec s = spec_of(id, 0, groups[gi]);
        q_grid_fakequant(&s, x, y, rows, cols, NULL, NULL);
        int64_t g = groups[gi] > 0 ? groups[gi] : cols;
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c0 = 0; c0 < cols; c0 += g) {
                const float *xg = x + r * cols + c0;
                const float *yg = y + r * cols + c0;
                float lo, hi;
                range_of(xg, g, &lo, &hi);
                float sc = fmaxf(-lo, hi) / max;
                for (int64_t i = 0; i < g; i++) {
                    float t = xg[i] / sc;
                    double best = INFINITY;
                    for (int c = 0; c < 256; c++) {
                        if (isfinite(table[c]) && fabs((double)t - table[c]) < best)
                            best = fabs((double)t - table[c]);
                    }
                    int ok = 0;
                    for (int c = 0; c < 256 && !ok; c++) {
                        ok = isfinite(table[c]) && fabs((double)t - table[c]) == best &&
                             table[c] * sc == yg[i];
                    }
                    assert_true(ok);
                }
            }
        }
        free(x);
        free(y);
    }
}

static void test_fp8_nearest_random(void **state)
{
    (void)state;
    fp8_nearest(Q_FMT_FP8_E4M3, Q_DT_F8_E4M3, 448.0f);
    fp8_nearest(Q_FMT_FP8_E5M2, Q_DT_F8_E5M2, 57344.0f);
}

/* ---- int / uint ---- */

/* Checks one group of an int (sym) or uint (asym) result: every output is on
 * the group's grid, is the grid point nearest its input, and inputs inside the
 * grid's span are within scale/2 (relative slack 2^-20 for float rounding). */
static void check_int_group(bool sym, int bits, const float *x, const float *y, int64_t n,
                            float lo, float hi)
{
    float sc, z = 0.0f, qlo, qhi;
    lo = fminf(lo, 0.0f);
    hi = fmaxf(hi, 0.0f);
    if (sym) {
        sc = f16r(fmaxf(-lo, hi) / ((float)((1 << bits) - 1) / 2.0f));
        qlo = -(float)(1 << (bits - 1));
        qhi = (float)((1 << (bits - 1)) - 1);
    } else {
        sc = f16r((hi - lo) / (float)((1 << bits) - 1));
        z = sc > 0.0f ? fminf(fmaxf(rintf(-lo / sc), 0.0f), (float)((1 << bits) - 1)) : 0.0f;
        qlo = -z;
        qhi = (float)((1 << bits) - 1) - z;
    }
    for (int64_t i = 0; i < n; i++) {
        if (sc == 0.0f) {
            assert_true(y[i] == 0.0f);
            continue;
        }
        float k = rintf(y[i] / sc);
        assert_true(k * sc == y[i]);
        assert_true(k >= qlo && k <= qhi);
        double e = fabs((double)y[i] - (double)x[i]);
        for (float d = -1.0f; d <= 1.0f; d += 2.0f) { /* neighbours are not nearer */
            if (k + d >= qlo && k + d <= qhi)
                assert_true(fabs((double)((k + d) * sc) - (double)x[i]) >= e * (1.0 - 1e-6));
        }
        if (x[i] >= qlo * sc && x[i] <= qhi * sc)
            assert_true(e <= 0.5 * sc * (1.0 + 0x1p-20));
    }
}

static void int_grid_case(q_format_id id, int bits, int64_t group)
{
    const int64_t rows = 10, cols = 256;
    float *x = make_data(rows, cols);
    float *y = malloc(sizeof(float) * (size_t)(rows * cols));
    assert_non_null(y);
    q_fmt_spec s = spec_of(id, bits, group);
    q_fq_ctx ctx = {false, 0.0f, 0.0f};
    if (group == Q_GROUP_TENSOR) {
        ctx.ready = true;
        range_of(x, rows * cols, &ctx.lo, &ctx.hi);
    }
    q_grid_fakequant(&s, x, y, rows, cols, NULL, &ctx);
    bool sym = id == Q_FMT_INT;
    if (group == Q_GROUP_TENSOR) {
        check_int_group(sym, bits, x, y, rows * cols, ctx.lo, ctx.hi);
    } else {
        int64_t g = group > 0 ? group : cols;
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c0 = 0; c0 < cols; c0 += g) {
                float lo, hi;
                range_of(x + r * cols + c0, g, &lo, &hi);
                check_int_group(sym, bits, x + r * cols + c0, y + r * cols + c0, g, lo, hi);
            }
        }
    }
    free(x);
    free(y);
}

static void test_int_grid(void **state)
{
    (void)state;
    rng_state = 12345;
    const int64_t groups[4] = {Q_GROUP_TENSOR, Q_GROUP_CHANNEL, 32, 128};
    for (int bits = 2; bits <= 8; bits++) {
        for (int g = 0; g < 4; g++)
            int_grid_case(Q_FMT_INT, bits, groups[g]);
    }
}

static void test_uint_grid(void **state)
{
    (void)state;
    rng_state = 54321;
    const int64_t groups[4] = {Q_GROUP_TENSOR, Q_GROUP_CHANNEL, 32, 128};
    for (int bits = 2; bits <= 8; bits++) {
        for (int g = 0; g < 4; g++)
            int_grid_case(Q_FMT_UINT, bits, groups[g]);
    }
}

/* Hand-checked values: int4 on [-7.5 .. 7.5] has scale exactly 1 (f16-exact);
 * uint2 on [-1, 2] has scale 1, zero 1. */
static void test_int_uint_known_values(void **state)
{
    (void)state;
    float x[8] = {-7.5f, -3.5f, -2.5f, 0.49f, 0.5f, 1.5f, 6.6f, 7.5f};
    float y[8];
    q_fmt_spec s = spec_of(Q_FMT_INT, 4, Q_GROUP_CHANNEL);
    q_grid_fakequant(&s, x, y, 1, 8, NULL, NULL);
    /* round half to even, then clamp to [-8, 7] */
    const float ey[8] = {-8.0f, -4.0f, -2.0f, 0.0f, 0.0f, 2.0f, 7.0f, 7.0f};
    for (int i = 0; i < 8; i++)
        assert_true(y[i] == ey[i]);
    float u[4] = {-1.0f, 0.4f, 1.6f, 2.0f}, v[4];
    s = spec_of(Q_FMT_UINT, 2, Q_GROUP_CHANNEL);
    q_grid_fakequant(&s, u, v, 1, 4, NULL, NULL);
    const float ev[4] = {-1.0f, 0.0f, 2.0f, 2.0f};
    for (int i = 0; i < 4; i++)
        assert_true(v[i] == ev[i]);
    /* uint with an all-positive group still represents 0 exactly. */
    float p[4] = {3.0f, 4.0f, 5.0f, 6.0f}, q[4];
    s = spec_of(Q_FMT_UINT, 3, Q_GROUP_CHANNEL);
    q_grid_fakequant(&s, p, q, 1, 4, NULL, NULL);
    float sc = f16r(6.0f / 7.0f);
    for (int i = 0; i < 4; i++)
        assert_true(fabsf(q[i] - p[i]) <= 0.5f * sc);
}

/* ---- nf4 ---- */

static const float nf4_levels[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

static void test_nf4_levels_exact(void **state)
{
    (void)state;
    const float absmax[4] = {1.0f, 2.5f, 1e-3f, 300.0f};
    float x[64], y[64];
    q_fmt_spec s = spec_of(Q_FMT_NF4, 0, 64);
    for (int a = 0; a < 4; a++) {
        for (int i = 0; i < 64; i++)
            x[i] = nf4_levels[(i * 7) % 16] * absmax[a]; /* every level, ±absmax included */
        q_grid_fakequant(&s, x, y, 1, 64, NULL, NULL);
        for (int i = 0; i < 64; i++)
            assert_int_equal(bits_of(y[i]), bits_of(x[i]));
    }
}

/* Random blocks of 64: output = level × absmax with the level nearest x / absmax. */
static void test_nf4_nearest_random(void **state)
{
    (void)state;
    rng_state = 777;
    const int64_t rows = 8, cols = 256;
    float *x = make_data(rows, cols);
    float *y = malloc(sizeof(float) * (size_t)(rows * cols));
    assert_non_null(y);
    q_fmt_spec s = spec_of(Q_FMT_NF4, 0, 64);
    q_grid_fakequant(&s, x, y, rows, cols, NULL, NULL);
    for (int64_t b = 0; b < rows * cols / 64; b++) {
        float lo, hi;
        range_of(x + 64 * b, 64, &lo, &hi);
        float am = fmaxf(-lo, hi);
        for (int i = 0; i < 64; i++) {
            float t = x[64 * b + i] * (1.0f / am);
            double best = INFINITY;
            for (int l = 0; l < 16; l++)
                best = fmin(best, fabs((double)t - nf4_levels[l]));
            int ok = 0;
            for (int l = 0; l < 16 && !ok; l++) {
                ok = fabs((double)t - nf4_levels[l]) <= best * (1.0 + 1e-9) &&
                     nf4_levels[l] * am == y[64 * b + i];
            }
            assert_true(ok);
        }
    }
    free(x);
    free(y);
}

/* ---- group handling ---- */

/* A group of G gives the same bits as quantizing each G-slice as its own row;
 * per channel the same as each row alone; per tensor the same as ctx-less (range
 * scanned from the rows) and as each row with the shared ctx. */
static void test_group_partition(void **state)
{
    (void)state;
    rng_state = 4242;
    const int64_t rows = 6, cols = 192;
    float *x = make_data(rows, cols);
    float *y = malloc(sizeof(float) * (size_t)(rows * cols));
    float *z = malloc(sizeof(float) * (size_t)(rows * cols));
    assert_non_null(y);
    assert_non_null(z);
    const q_format_id ids[5] = {Q_FMT_INT, Q_FMT_UINT, Q_FMT_FP8_E4M3, Q_FMT_FP8_E5M2,
                                Q_FMT_NF4};
    for (int f = 0; f < 5; f++) {
        int bits = f < 2 ? 4 : 0;
        /* groups of 64 */
        q_fmt_spec s = spec_of(ids[f], bits, 64);
        q_grid_fakequant(&s, x, y, rows, cols, NULL, NULL);
        q_fmt_spec sc = spec_of(ids[f], bits, Q_GROUP_CHANNEL);
        q_grid_fakequant(&sc, x, z, rows * cols / 64, 64, NULL, NULL);
        assert_memory_equal(y, z, sizeof(float) * (size_t)(rows * cols));
        /* per channel */
        q_grid_fakequant(&sc, x, y, rows, cols, NULL, NULL);
        for (int64_t r = 0; r < rows; r++)
            q_grid_fakequant(&sc, x + r * cols, z + r * cols, 1, cols, NULL, NULL);
        assert_memory_equal(y, z, sizeof(float) * (size_t)(rows * cols));
        /* per tensor */
        q_fmt_spec st = spec_of(ids[f], bits, Q_GROUP_TENSOR);
        q_fq_ctx ctx = {true, 0.0f, 0.0f};
        range_of(x, rows * cols, &ctx.lo, &ctx.hi);
        q_grid_fakequant(&st, x, y, rows, cols, NULL, NULL);
        for (int64_t r = 0; r < rows; r++)
            q_grid_fakequant(&st, x + r * cols, z + r * cols, 1, cols, NULL, &ctx);
        assert_memory_equal(y, z, sizeof(float) * (size_t)(rows * cols));
    }
    free(x);
    free(y);
    free(z);
}

/* Rows of very different size: per tensor int4 flushes the small row to zero,
 * per channel keeps it within half a step of its own scale. */
static void test_tensor_vs_channel(void **state)
{
    (void)state;
    float x[2 * 16], y[2 * 16];
    for (int i = 0; i < 16; i++) {
        x[i] = 1e-3f * (float)(i - 8);
        x[16 + i] = 100.0f * (float)(i - 8) / 8.0f;
    }
    q_fmt_spec st = spec_of(Q_FMT_INT, 4, Q_GROUP_TENSOR);
    q_grid_fakequant(&st, x, y, 2, 16, NULL, NULL);
    for (int i = 0; i < 16; i++)
        assert_true(y[i] == 0.0f);
    q_fmt_spec sc = spec_of(Q_FMT_INT, 4, Q_GROUP_CHANNEL);
    q_grid_fakequant(&sc, x, y, 2, 16, NULL, NULL);
    float s0 = f16r(8e-3f / 7.5f);
    int nonzero = 0;
    for (int i = 0; i < 16; i++) {
        assert_true(fabsf(y[i] - x[i]) <= 0.5f * s0 * (1.0f + 1e-5f));
        nonzero += y[i] != 0.0f;
    }
    assert_true(nonzero >= 14);
}

/* ---- imatrix search ---- */

static double wsse(const float *x, const float *y, const float *w, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)y[i] - (double)x[i];
        s += (double)w[i] * d * d;
    }
    return s;
}

/* For every group, the imatrix-searched result has weighted error <= the plain
 * one (exactly: the plain range is the search's first candidate); over the
 * whole tensor the search must gain somewhere for the coarse grids. */
static void test_imatrix_search_never_worse(void **state)
{
    (void)state;
    rng_state = 2024;
    const int64_t rows = 16, cols = 256;
    float *x = make_data(rows, cols);
    float *y0 = malloc(sizeof(float) * (size_t)(rows * cols));
    float *y1 = malloc(sizeof(float) * (size_t)(rows * cols));
    float im[256];
    assert_non_null(y0);
    assert_non_null(y1);
    for (int c = 0; c < cols; c++) /* heavy-tailed importances, a few zeros */
        im[c] = c % 37 == 0 ? 0.0f : (float)exp(3.0 * grand());
    struct {
        q_format_id id;
        int bits;
        bool must_gain;
    } cases[] = {
        {Q_FMT_INT, 3, true},        {Q_FMT_INT, 4, true},  {Q_FMT_INT, 8, false},
        {Q_FMT_UINT, 3, true},       {Q_FMT_UINT, 4, true}, {Q_FMT_FP8_E4M3, 0, false},
        {Q_FMT_FP8_E5M2, 0, false},  {Q_FMT_NF4, 0, true},
    };
    const int64_t groups[2] = {Q_GROUP_CHANNEL, 32};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int gi = 0; gi < 2; gi++) {
            q_fmt_spec s = spec_of(cases[k].id, cases[k].bits, groups[gi]);
            q_grid_fakequant(&s, x, y0, rows, cols, NULL, NULL);
            q_grid_fakequant(&s, x, y1, rows, cols, im, NULL);
            int64_t g = groups[gi] > 0 ? groups[gi] : cols;
            double t0 = 0.0, t1 = 0.0;
            for (int64_t r = 0; r < rows; r++) {
                for (int64_t c0 = 0; c0 < cols; c0 += g) {
                    const int64_t o = r * cols + c0;
                    double e0 = wsse(x + o, y0 + o, im + c0, g);
                    double e1 = wsse(x + o, y1 + o, im + c0, g);
                    assert_true(e1 <= e0);
                    t0 += e0;
                    t1 += e1;
                }
            }
            if (cases[k].must_gain)
                assert_true(t1 < t0 * 0.999);
        }
    }
    /* Per tensor there is one scale for all calls: the imatrix changes nothing. */
    q_fmt_spec st = spec_of(Q_FMT_INT, 4, Q_GROUP_TENSOR);
    q_grid_fakequant(&st, x, y0, rows, cols, NULL, NULL);
    q_grid_fakequant(&st, x, y1, rows, cols, im, NULL);
    assert_memory_equal(y0, y1, sizeof(float) * (size_t)(rows * cols));
    free(x);
    free(y0);
    free(y1);
}

/* ---- zeros and non-finite input ---- */

static void test_zeros_and_nonfinite(void **state)
{
    (void)state;
    const q_format_id ids[5] = {Q_FMT_INT, Q_FMT_UINT, Q_FMT_FP8_E4M3, Q_FMT_FP8_E5M2,
                                Q_FMT_NF4};
    const int64_t groups[3] = {Q_GROUP_TENSOR, Q_GROUP_CHANNEL, 16};
    float im[64];
    for (int i = 0; i < 64; i++)
        im[i] = 1.0f + (float)i;
    for (int f = 0; f < 5; f++) {
        for (int g = 0; g < 3; g++) {
            for (int w = 0; w < 2; w++) {
                q_fmt_spec s = spec_of(ids[f], f < 2 ? 4 : 0, groups[g]);
                float x[2 * 64], y[2 * 64];
                memset(x, 0, sizeof x);
                for (int i = 0; i < 128; i++)
                    y[i] = 123.0f;
                q_fq_ctx ctx = {true, 0.0f, 0.0f};
                q_grid_fakequant(&s, x, y, 2, 64, w ? im : NULL, &ctx);
                for (int i = 0; i < 128; i++)
                    assert_true(y[i] == 0.0f);
                /* Row 0 finite with one +Inf, row 1 finite with one NaN: no crash;
                 * finite inputs give finite outputs (per channel / group). */
                for (int i = 0; i < 128; i++)
                    x[i] = (float)(i % 13) - 6.0f;
                x[5] = INFINITY;
                x[64 + 7] = NAN;
                q_grid_fakequant(&s, x, y, 2, 64, w ? im : NULL, NULL);
                if (groups[g] != Q_GROUP_TENSOR) {
                    for (int i = 0; i < 128; i++) {
                        if (i != 5 && i != 64 + 7)
                            assert_true(isfinite(y[i]));
                    }
                    if (ids[f] != Q_FMT_NF4) /* Inf saturates to the top of the grid */
                        assert_true(isfinite(y[5]) && y[5] > 0.0f);
                }
            }
        }
    }
    /* Tiny values whose f16 scale underflows give zeros, not NaN. */
    float t[4] = {1e-30f, -2e-30f, 0.0f, 3e-30f}, u[4];
    q_fmt_spec s = spec_of(Q_FMT_INT, 8, Q_GROUP_CHANNEL);
    q_grid_fakequant(&s, t, u, 1, 4, NULL, NULL);
    for (int i = 0; i < 4; i++)
        assert_true(u[i] == 0.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp8_e4m3_all_codes),
        cmocka_unit_test(test_fp8_e5m2_all_codes),
        cmocka_unit_test(test_fp8_ties_to_even),
        cmocka_unit_test(test_fp8_nearest_random),
        cmocka_unit_test(test_int_grid),
        cmocka_unit_test(test_uint_grid),
        cmocka_unit_test(test_int_uint_known_values),
        cmocka_unit_test(test_nf4_levels_exact),
        cmocka_unit_test(test_nf4_nearest_random),
        cmocka_unit_test(test_group_partition),
        cmocka_unit_test(test_tensor_vs_channel),
        cmocka_unit_test(test_imatrix_search_never_worse),
        cmocka_unit_test(test_zeros_and_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
