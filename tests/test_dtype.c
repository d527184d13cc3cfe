/* test_dtype.c — traits table, scalar float conversions and row dequantizers.
 *
 * Conversions are checked against independent references (ldexp arithmetic in
 * double, nearest-neighbour search over the target format), exhaustively where
 * the domain is 2^16 or smaller and on 2^20 random f32 patterns (seed fixed)
 * otherwise. Dequantizers are checked on hand-built blocks packed by test code
 * written from the element-index description of each layout; all scales are
 * chosen so the expected values are exact, so the tolerance is zero (bits).
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

/* ---- helpers ---- */

static uint64_t td_rng = 0x243f6a8885a308d3ull;

static uint64_t td_next(void)
{
    /* splitmix64 */
    uint64_t z = (td_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void td_seed(uint64_t s)
{
    td_rng = s;
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Fails with both values in hex when the float bit patterns differ. */
#define assert_bits_equal(got, want, ...)                                               \
    do {                                                                                \
        uint32_t got_ = fbits(got), want_ = fbits(want);                                \
        if (got_ != want_) {                                                            \
            print_error("bits %08x (%.9g) != expected %08x (%.9g) at ", (unsigned)got_, \
                        (double)(got), (unsigned)want_, (double)(want));                \
            print_error(__VA_ARGS__);                                                   \
            print_error("\n");                                                          \
            fail();                                                                     \
        }                                                                               \
    } while (0)

/* Reference half -> float by ldexp in double (NaN handled by the caller). */
static float ref_f16(uint16_t h)
{
    int exp = (h >> 10) & 0x1f;
    int man = h & 0x3ff;
    double v;
    if (exp == 0x1f)
        v = INFINITY;
    else if (exp == 0)
        v = ldexp(man, -24);
    else
        v = ldexp(1024 + man, exp - 25);
    return (float)((h & 0x8000) ? -v : v);
}

/* Reference float -> half: nearest positive half by binary search over the
 * ordered bit patterns 0..0x7c00 (0x7c00 stands for 65536 when rounding), ties to
 * the even pattern. */
static uint16_t ref_to_f16(float f)
{
    uint16_t sign = (fbits(f) >> 16) & 0x8000;
    if (isnan(f))
        return (uint16_t)(sign | 0x7e00);
    double a = fabs((double)f);
    if (a >= 65536.0)
        return (uint16_t)(sign | 0x7c00);
    unsigned lo = 0, hi = 0x7c00; /* value(lo) <= a < value(hi) */
    while (hi - lo > 1) {
        unsigned mid = (lo + hi) / 2;
        if ((double)ref_f16((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid;
    }
    double vlo = ref_f16((uint16_t)lo);
    double vhi = hi == 0x7c00 ? 65536.0 : (double)ref_f16((uint16_t)hi);
    double dlo = a - vlo, dhi = vhi - a;
    unsigned r = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) ? hi : lo);
    return (uint16_t)(sign | r);
}

/* Reference float -> bf16: the nearer of the two truncation neighbours. */
static uint16_t ref_to_bf16(float f)
{
    uint32_t x = fbits(f);
    if (isnan(f))
        return (uint16_t)((x >> 16) | 0x40);
    uint32_t sign = x & 0x80000000u, ax = x & 0x7fffffffu;
    uint32_t lo = ax & 0xffff0000u, hi = lo + 0x10000u;
    if (ax == 0x7f800000u)
        return (uint16_t)(x >> 16);
    double a = bitsf(ax), vlo = bitsf(lo);
    double vhi = hi == 0x7f800000u ? ldexp(1.0, 128) : (double)bitsf(hi);
    double dlo = a - vlo, dhi = vhi - a;
    uint32_t r = dlo < dhi ? lo : dhi < dlo ? hi : (((lo >> 16) & 1) ? hi : lo);
    return (uint16_t)((sign | r) >> 16);
}

static float dq1(q_dtype t, const void *src)
{
    float out;
    q_dtype_get(t)->dequant(src, &out, 1);
    return out;
}

/* ---- f16 ---- */

static void test_f16_widen_exhaustive(void **state)
{
    (void)state;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = q_f16_to_f32(h);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            /* NaN: quiet, sign and payload kept */
            uint32_t want = ((uint32_t)(h & 0x8000) << 16) | 0x7fc00000u |
                            ((uint32_t)(h & 0x3ff) << 13);
            assert_true(isnan(f));
            assert_int_equal(fbits(f), want);
        } else {
            assert_bits_equal(f, ref_f16(h), "half %04x", (unsigned)h);
        }
    }
}

static void test_f16_round_trip_exhaustive(void **state)
{
    (void)state;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        uint16_t back = q_f32_to_f16(q_f16_to_f32(h));
        bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        /* NaNs come back quiet (bit 9 set), payload otherwise kept */
        uint16_t want = nan ? (uint16_t)(h | 0x0200) : h;
        if (back != want) {
            print_error("half %04x -> %04x, expected %04x\n", (unsigned)h, (unsigned)back,
                        (unsigned)want);
            fail();
        }
    }
}

static void test_f16_row_matches_scalar(void **state)
{
    (void)state;
    /* the F16 row path (lookup table) over every pattern, from an odd address */
    uint8_t *raw = malloc(2 * 65536 + 1);
    float *out = malloc(65536 * sizeof(float));
    assert_non_null(raw);
    assert_non_null(out);
    for (uint32_t i = 0; i < 65536; i++)
        put16(raw + 1 + 2 * i, (uint16_t)i);
    const q_dtype_traits *t = q_dtype_get(Q_DT_F16);
    assert_non_null(t->dequant);
    t->dequant(raw + 1, out, 65536);
    for (uint32_t i = 0; i < 65536; i++)
        assert_int_equal(fbits(out[i]), fbits(q_f16_to_f32((uint16_t)i)));
    free(raw);
    free(out);
}

static void test_f16_narrow_cases(void **state)
{
    (void)state;
    static const struct {
        uint32_t in;
        uint16_t want;
    } cases[] = {
        {0x3f800000u, 0x3c00}, /* 1.0 */
        {0x3f801000u, 0x3c00}, /* 1 + 2^-11: tie, to even (down) */
        {0x3f803000u, 0x3c02}, /* 1 + 3*2^-11: tie, to even (up) */
        {0x3f801001u, 0x3c01}, /* just above the tie */
        {0x3f800fffu, 0x3c00}, /* just below the tie */
        {0xbf801000u, 0xbc00}, /* negative tie */
        {0x477fe000u, 0x7bff}, /* 65504, the largest half */
        {0x477fefffu, 0x7bff}, /* below 65520 */
        {0x477ff000u, 0x7c00}, /* 65520: tie, to even = inf */
        {0x501502f9u, 0x7c00}, /* 1e10 */
        {0x7f7fffffu, 0x7c00}, /* FLT_MAX */
        {0x7f800000u, 0x7c00}, /* inf */
        {0xff800000u, 0xfc00}, /* -inf */
        {0x00000000u, 0x0000},
        {0x80000000u, 0x8000}, /* -0 */
        {0x33800000u, 0x0001}, /* 2^-24, the smallest subnormal */
        {0x33000000u, 0x0000}, /* 2^-25: tie, to even (zero) */
        {0x33000001u, 0x0001}, /* just above */
        {0x33c00000u, 0x0002}, /* 3*2^-25: tie, to even (2) */
        {0x34200000u, 0x0002}, /* 5*2^-25: tie, to even (2) */
        {0x387fc000u, 0x03ff}, /* largest subnormal */
        {0x387fe000u, 0x0400}, /* tie between 0x3ff and 0x400: to even, normal */
        {0x38800000u, 0x0400}, /* 2^-14, the smallest normal */
        {0x00000001u, 0x0000}, /* f32 subnormal */
        {0x80000001u, 0x8000},
        {0x7fc00000u, 0x7e00}, /* quiet NaN */
        {0xffc00000u, 0xfe00},
        {0x7f800001u, 0x7e00}, /* signalling NaN whose payload is lost: still NaN */
        {0x7f802000u, 0x7e01}, /* payload kept in the top bits */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = q_f32_to_f16(bitsf(cases[i].in));
        if (got != cases[i].want) {
            print_error("f32 %08x -> %04x, expected %04x\n", (unsigned)cases[i].in,
                        (unsigned)got, (unsigned)cases[i].want);
            fail();
        }
    }
}

static void test_f16_narrow_random(void **state)
{
    (void)state;
    td_seed(1);
    for (int i = 0; i < (1 << 20); i++) {
        uint32_t x = (uint32_t)td_next();
        if (i & 1) /* half of them in and near the half range */
            x = (x & 0x807fffffu) | ((uint32_t)(100 + (x >> 23) % 46) << 23);
        float f = bitsf(x);
        uint16_t got = q_f32_to_f16(f), want = ref_to_f16(f);
        if (isnan(f)) {
            assert_true((got & 0x7c00) == 0x7c00 && (got & 0x3ff));
            assert_int_equal(got & 0x8000, want & 0x8000);
        } else if (got != want) {
            print_error("f32 %08x -> %04x, expected %04x\n", (unsigned)x, (unsigned)got,
                        (unsigned)want);
            fail();
        }
    }
}

/* ---- bf16 ---- */

static void test_bf16_exhaustive(void **state)
{
    (void)state;
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float f = q_bf16_to_f32(h);
        assert_int_equal(fbits(f), (uint32_t)h << 16); /* exact: the top half */
        bool nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        uint16_t want = nan ? (uint16_t)(h | 0x40) : h;
        assert_int_equal(q_f32_to_bf16(f), want);
        uint8_t raw[2];
        put16(raw, h);
        assert_int_equal(fbits(dq1(Q_DT_BF16, raw)), fbits(f));
    }
}

static void test_bf16_narrow(void **state)
{
    (void)state;
    static const struct {
        uint32_t in;
        uint16_t want;
    } cases[] = {
        {0x3f808000u, 0x3f80}, /* 1 + 2^-8: tie, to even (down) */
        {0x3f818000u, 0x3f82}, /* tie, to even (up) */
        {0x3f808001u, 0x3f81},
        {0x3f807fffu, 0x3f80},
        {0x7f7f7fffu, 0x7f7f},
        {0x7f7f8000u, 0x7f80}, /* tie past the largest finite: to even = inf */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to inf */
        {0x7f800000u, 0x7f80},
        {0xff800000u, 0xff80},
        {0x00008000u, 0x0000}, /* subnormal tie, to even (zero) */
        {0x00018000u, 0x0002}, /* subnormal tie, to even (up) */
        {0x80000000u, 0x8000},
        {0x7f800001u, 0x7fc0}, /* signalling NaN: quiet */
        {0xffc12345u, 0xffc1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t got = q_f32_to_bf16(bitsf(cases[i].in));
        if (got != cases[i].want) {
            print_error("f32 %08x -> bf16 %04x, expected %04x\n", (unsigned)cases[i].in,
                        (unsigned)got, (unsigned)cases[i].want);
            fail();
        }
    }
    td_seed(2);
    for (int i = 0; i < (1 << 20); i++) {
        uint32_t x = (uint32_t)td_next();
        float f = bitsf(x);
        uint16_t got = q_f32_to_bf16(f), want = ref_to_bf16(f);
        if (got != want) {
            print_error("f32 %08x -> bf16 %04x, expected %04x\n", (unsigned)x, (unsigned)got,
                        (unsigned)want);
            fail();
        }
    }
}

/* ---- fp8 and plain types ---- */

static void test_fp8(void **state)
{
    (void)state;
    for (int i = 0; i < 256; i++) {
        uint8_t b = (uint8_t)i;
        int s = b >> 7;
        /* E4M3 fn: bias 7, S.1111.111 NaN, no inf */
        int e = (b >> 3) & 15, m = b & 7;
        float got = dq1(Q_DT_F8_E4M3, &b);
        if (e == 15 && m == 7) {
            assert_true(isnan(got));
        } else {
            double v = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
            assert_bits_equal(got, (float)(s ? -v : v), "e4m3 %02x", (unsigned)b);
        }
        /* E5M2: bias 15, IEEE inf and NaN */
        e = (b >> 2) & 31;
        m = b & 3;
        got = dq1(Q_DT_F8_E5M2, &b);
        if (e == 31) {
            if (m)
                assert_true(isnan(got));
            else
                assert_bits_equal(got, s ? -INFINITY : INFINITY, "e5m2 %02x", (unsigned)b);
        } else {
            double v = e == 0 ? ldexp(m, -16) : ldexp(4 + m, e - 17);
            assert_bits_equal(got, (float)(s ? -v : v), "e5m2 %02x", (unsigned)b);
        }
    }
    uint8_t b = 0x7e;
    assert_true(dq1(Q_DT_F8_E4M3, &b) == 448.0f);
    b = 0x38;
    assert_true(dq1(Q_DT_F8_E4M3, &b) == 1.0f);
    b = 0xff;
    assert_true(isnan(dq1(Q_DT_F8_E4M3, &b)));
    b = 0x7b;
    assert_true(dq1(Q_DT_F8_E5M2, &b) == 57344.0f);
    b = 0x7c;
    assert_true(isinf(dq1(Q_DT_F8_E5M2, &b)));
}

static void test_plain_types(void **state)
{
    (void)state;
    float out[4];
    const uint8_t i8[4] = {0x80, 0xff, 0x00, 0x7f};
    q_dtype_get(Q_DT_I8)->dequant(i8, out, 4);
    assert_true(out[0] == -128.0f && out[1] == -1.0f && out[2] == 0.0f && out[3] == 127.0f);
    q_dtype_get(Q_DT_U8)->dequant(i8, out, 4);
    assert_true(out[0] == 128.0f && out[1] == 255.0f && out[2] == 0.0f && out[3] == 127.0f);
    q_dtype_get(Q_DT_BOOL)->dequant(i8, out, 4);
    assert_true(out[0] == 1.0f && out[1] == 1.0f && out[2] == 0.0f && out[3] == 1.0f);

    const uint8_t i16[5] = {0x00, 0x80, 0xff, 0x7f, 0x55}; /* from offset 0 */
    q_dtype_get(Q_DT_I16)->dequant(i16, out, 2);
    assert_true(out[0] == -32768.0f && out[1] == 32767.0f);
    q_dtype_get(Q_DT_U16)->dequant(i16, out, 2);
    assert_true(out[0] == 32768.0f && out[1] == 32767.0f);

    /* int32 16777217 is not a float: rounds to nearest even 16777216 */
    uint8_t i32[9] = {0x01, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0};
    q_dtype_get(Q_DT_I32)->dequant(i32, out, 2);
    assert_true(out[0] == 16777216.0f && out[1] == -1.0f);
    q_dtype_get(Q_DT_U32)->dequant(i32, out, 2);
    assert_true(out[0] == 16777216.0f && out[1] == 4294967296.0f);

    uint8_t f64[17];
    double dv[2] = {0.1, -1e300};
    memcpy(f64 + 1, dv, sizeof dv); /* odd address */
    q_dtype_get(Q_DT_F64)->dequant(f64 + 1, out, 2);
    assert_bits_equal(out[0], 0.1f, "f64 0.1");
    assert_true(isinf(out[1]) && out[1] < 0);

    int64_t iv[2] = {-5, INT64_MAX};
    q_dtype_get(Q_DT_I64)->dequant(iv, out, 2);
    assert_true(out[0] == -5.0f && out[1] == 9223372036854775808.0f);

    float fv[3] = {1.5f, -0.0f, bitsf(0x7fa00001u)};
    q_dtype_get(Q_DT_F32)->dequant(fv, out, 3);
    assert_memory_equal(out, fv, sizeof fv); /* F32 passes bits through */
    q_dtype_get(Q_DT_F32)->dequant(out, out, 3); /* in place */
    assert_memory_equal(out, fv, sizeof fv);
}

/* ---- traits ---- */

/* One table entry: get(id) is itself and its name round trips in any case. */
static void td_check_entry(q_dtype e, uint32_t id, const char *name, int64_t blck, size_t size)
{
    const q_dtype_traits *t = q_dtype_get(id);
    assert_non_null(t);
    assert_int_equal(t->id, e);
    assert_string_equal(t->name, name);
    assert_string_equal(q_dtype_name(id), name);
    assert_int_equal(t->blck, blck);
    assert_int_equal(t->size, size);
    assert_int_equal(q_dtype_from_name(name), id);
    char low[32];
    size_t k = 0;
    for (; name[k] && k + 1 < sizeof low; k++)
        low[k] = (char)((name[k] >= 'A' && name[k] <= 'Z') ? name[k] + 32 : name[k]);
    low[k] = 0;
    assert_int_equal(q_dtype_from_name(low), id);
    assert_int_equal(q_dtype_readable(id), t->dequant != NULL);
}

static void test_traits_table(void **state)
{
    (void)state;
    static const struct {
        q_dtype id;
        int64_t blck;
        size_t size;
    } blocks[] = {
        {Q_DT_Q4_0, QK4_0, sizeof(block_q4_0)},   {Q_DT_Q4_1, QK4_1, sizeof(block_q4_1)},
        {Q_DT_Q5_0, QK5_0, sizeof(block_q5_0)},   {Q_DT_Q5_1, QK5_1, sizeof(block_q5_1)},
        {Q_DT_Q8_0, QK8_0, sizeof(block_q8_0)},   {Q_DT_Q8_1, QK8_1, sizeof(block_q8_1)},
        {Q_DT_Q2_K, QK_K, sizeof(block_q2_K)},    {Q_DT_Q3_K, QK_K, sizeof(block_q3_K)},
        {Q_DT_Q4_K, QK_K, sizeof(block_q4_K)},    {Q_DT_Q5_K, QK_K, sizeof(block_q5_K)},
        {Q_DT_Q6_K, QK_K, sizeof(block_q6_K)},    {Q_DT_Q8_K, QK_K, sizeof(block_q8_K)},
        {Q_DT_IQ4_NL, QK4_NL, sizeof(block_iq4_nl)}, {Q_DT_IQ4_XS, QK_K, sizeof(block_iq4_xs)},
        {Q_DT_MXFP4, QK_MXFP4, sizeof(block_mxfp4)},
    };
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        const q_dtype_traits *t = q_dtype_get(blocks[i].id);
        assert_non_null(t);
        assert_int_equal(t->id, blocks[i].id);
        assert_int_equal(t->blck, blocks[i].blck);
        assert_int_equal(t->size, blocks[i].size);
    }
    assert_int_equal(K_SCALE_SIZE, sizeof(((block_q4_K *)0)->scales));

    int n = 0;
#define TD_CHECK(e, id, name, blck, size) \
    td_check_entry(e, id, name, blck, size);  \
    n++;
    Q_DTYPE_LIST(TD_CHECK)
#undef TD_CHECK
    assert_int_equal(n, 39);

    /* unknown ids and names */
    static const uint32_t unknown[] = {4, 5, 31, 32, 33, 36, 38, 40, 999, 1007, 0xffffffffu};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_null(q_dtype_get(unknown[i]));
        assert_string_equal(q_dtype_name(unknown[i]), "?");
        assert_false(q_dtype_readable(unknown[i]));
        assert_int_equal(q_dtype_bytes(unknown[i], 32), 0);
    }
    assert_int_equal(q_dtype_from_name("Q4_K_M"), -1);
    assert_int_equal(q_dtype_from_name(""), -1);
    assert_int_equal(q_dtype_from_name(NULL), -1);
    assert_int_equal(q_dtype_from_name("bf16"), Q_DT_BF16);
    assert_int_equal(q_dtype_from_name("f8_e4m3"), Q_DT_F8_E4M3);
    assert_int_equal(q_dtype_from_name("iQ4_nL"), Q_DT_IQ4_NL);
    assert_int_equal(q_dtype_from_name("Q4_"), -1);  /* prefix */
    assert_int_equal(q_dtype_from_name("Q4_K "), -1); /* trailing byte */
    assert_int_equal(q_dtype_from_name("F3"), -1);
    assert_int_equal(q_dtype_from_name("f32\xff"), -1);

    /* exactly these are readable */
    static const q_dtype readable[] = {
        Q_DT_F32,  Q_DT_F16,  Q_DT_BF16, Q_DT_F64,  Q_DT_I8,      Q_DT_I16,     Q_DT_I32,
        Q_DT_I64,  Q_DT_U8,   Q_DT_U16,  Q_DT_U32,  Q_DT_U64,     Q_DT_BOOL,    Q_DT_F8_E4M3,
        Q_DT_F8_E5M2, Q_DT_Q8_0, Q_DT_Q4_0, Q_DT_Q4_1, Q_DT_Q5_0, Q_DT_Q5_1, Q_DT_Q2_K,
        Q_DT_Q3_K, Q_DT_Q4_K, Q_DT_Q5_K, Q_DT_Q6_K, Q_DT_IQ4_NL,
    };
    int n_readable = 0;
#define TD_COUNT(e, id, name, blck, size) n_readable += q_dtype_readable(id);
    Q_DTYPE_LIST(TD_COUNT)
#undef TD_COUNT
    assert_int_equal(n_readable, (int)(sizeof readable / sizeof readable[0]));
    for (size_t i = 0; i < sizeof readable / sizeof readable[0]; i++)
        assert_true(q_dtype_readable(readable[i]));
    assert_false(q_dtype_readable(Q_DT_Q8_1));
    assert_false(q_dtype_readable(Q_DT_Q8_K));
    assert_false(q_dtype_readable(Q_DT_IQ2_XXS));
    assert_false(q_dtype_readable(Q_DT_MXFP4));
    assert_false(q_dtype_readable(Q_DT_TQ1_0));
}

static void test_bytes(void **state)
{
    (void)state;
    assert_int_equal(q_dtype_bytes(Q_DT_F32, 10), 40);
    assert_int_equal(q_dtype_bytes(Q_DT_F32, 0), 0);
    assert_int_equal(q_dtype_bytes(Q_DT_Q4_K, 512), 288);
    assert_int_equal(q_dtype_bytes(Q_DT_Q8_0, 4096), 4352);
    assert_int_equal(q_dtype_bytes(Q_DT_MXFP4, 64), 34);
    assert_int_equal(q_dtype_bytes(Q_DT_Q4_K, 100), 0); /* not whole blocks */
    assert_int_equal(q_dtype_bytes(Q_DT_Q4_0, 33), 0);
    assert_int_equal(q_dtype_bytes(Q_DT_F32, -4), 0);
    assert_int_equal(q_dtype_bytes(Q_DT_F32, INT64_MIN), 0);
    /* overflow boundaries of uint64 */
    assert_int_equal(q_dtype_bytes(Q_DT_I8, INT64_MAX), (uint64_t)INT64_MAX);
    assert_int_equal(q_dtype_bytes(Q_DT_F16, INT64_MAX), UINT64_MAX - 1);
    assert_int_equal(q_dtype_bytes(Q_DT_F32, INT64_MAX), 0);
    assert_int_equal(q_dtype_bytes(Q_DT_F32, (int64_t)1 << 62), 0);
    assert_int_equal(q_dtype_bytes(Q_DT_F32, ((int64_t)1 << 62) - 1), UINT64_MAX - 3);
    assert_int_equal(q_dtype_bytes(Q_DT_F64, (int64_t)1 << 61), 0);
    assert_int_equal(q_dtype_bytes(Q_DT_U64, ((int64_t)1 << 61) - 1), UINT64_MAX - 7);
    assert_int_equal(q_dtype_bytes(Q_DT_Q8_0, INT64_MAX / 32 * 32),
                     (uint64_t)(INT64_MAX / 32) * 34);
}

/* ---- 32-element blocks ---- */

static void test_q8_0(void **state)
{
    (void)state;
    /* 8 blocks, d = 0.5, qs = -128..127; read from an odd address */
    uint8_t raw[8 * 34 + 1];
    uint8_t *b = raw + 1;
    for (int i = 0; i < 8; i++) {
        put16(b + 34 * i, 0x3800);
        for (int j = 0; j < 32; j++)
            b[34 * i + 2 + j] = (uint8_t)(int8_t)(-128 + 32 * i + j);
    }
    float out[256];
    q_dtype_get(Q_DT_Q8_0)->dequant(b, out, 256);
    for (int k = 0; k < 256; k++)
        assert_bits_equal(out[k], (float)(k - 128) * 0.5f, "element %d", k);
}

static void test_q4_0_q4_1_iq4_nl(void **state)
{
    (void)state;
    uint8_t b[20];
    float out[32];
    /* Q4_0: d = 2, low nibble of qs[j] is j, high nibble 15 - j */
    put16(b, 0x4000);
    for (int j = 0; j < 16; j++)
        b[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    q_dtype_get(Q_DT_Q4_0)->dequant(b, out, 32);
    for (int j = 0; j < 16; j++) {
        assert_bits_equal(out[j], (float)((j - 8) * 2), "q4_0 %d", j);
        assert_bits_equal(out[j + 16], (float)((7 - j) * 2), "q4_0 %d", j + 16);
    }
    /* IQ4_NL: same packing, d = 1, the published level table */
    static const float levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};
    put16(b, 0x3c00);
    q_dtype_get(Q_DT_IQ4_NL)->dequant(b, out, 32);
    for (int j = 0; j < 16; j++) {
        assert_bits_equal(out[j], levels[j], "iq4_nl %d", j);
        assert_bits_equal(out[j + 16], levels[15 - j], "iq4_nl %d", j + 16);
    }
    /* Q4_1: d = 0.25, m = -1.5: x = q/4 - 1.5 */
    put16(b, 0x3400);
    put16(b + 2, 0xbe00);
    for (int j = 0; j < 16; j++)
        b[4 + j] = (uint8_t)(j | ((15 - j) << 4));
    q_dtype_get(Q_DT_Q4_1)->dequant(b, out, 32);
    for (int j = 0; j < 16; j++) {
        assert_bits_equal(out[j], (float)j * 0.25f - 1.5f, "q4_1 %d", j);
        assert_bits_equal(out[j + 16], (float)(15 - j) * 0.25f - 1.5f, "q4_1 %d", j + 16);
    }
}

static void test_q5_0_q5_1(void **state)
{
    (void)state;
    int q[32];
    td_seed(5);
    for (int j = 0; j < 32; j++)
        q[j] = (int)(td_next() % 32);
    q[0] = 0;
    q[31] = 31;
    /* pack: element j has low nibble in qs[j % 16] (low for j < 16, high
     * otherwise) and its fifth bit at bit j of the little-endian qh */
    uint8_t qs[16] = {0}, qh[4] = {0};
    for (int j = 0; j < 32; j++) {
        qs[j % 16] |= (uint8_t)((q[j] & 15) << (j < 16 ? 0 : 4));
        qh[j / 8] |= (uint8_t)(((q[j] >> 4) & 1) << (j % 8));
    }
    uint8_t b[24];
    float out[32];
    put16(b, 0x3c00); /* d = 1 */
    memcpy(b + 2, qh, 4);
    memcpy(b + 6, qs, 16);
    q_dtype_get(Q_DT_Q5_0)->dequant(b, out, 32);
    for (int j = 0; j < 32; j++)
        assert_bits_equal(out[j], (float)(q[j] - 16), "q5_0 %d", j);
    put16(b, 0x3800);     /* d = 0.5 */
    put16(b + 2, 0x3c00); /* m = 1 */
    memcpy(b + 4, qh, 4);
    memcpy(b + 8, qs, 16);
    q_dtype_get(Q_DT_Q5_1)->dequant(b, out, 32);
    for (int j = 0; j < 32; j++)
        assert_bits_equal(out[j], (float)q[j] * 0.5f + 1.0f, "q5_1 %d", j);
}

/* ---- k-quants ---- */

static void test_q2_k(void **state)
{
    (void)state;
    int q[256], sc[16], mn[16];
    td_seed(21);
    for (int e = 0; e < 256; e++)
        q[e] = (int)(td_next() % 4);
    for (int s = 0; s < 16; s++) {
        sc[s] = (int)(td_next() % 16);
        mn[s] = (int)(td_next() % 16);
    }
    block_q2_K blk;
    memset(&blk, 0, sizeof blk);
    blk.d = 0x3800;    /* 0.5 */
    blk.dmin = 0x3400; /* 0.25 */
    for (int s = 0; s < 16; s++)
        blk.scales[s] = (uint8_t)(sc[s] | (mn[s] << 4));
    /* element e: 128-chunk e/128, bit plane (e%128)/32, byte chunk*32 + e%32 */
    for (int e = 0; e < 256; e++)
        blk.qs[(e / 128) * 32 + e % 32] |= (uint8_t)(q[e] << (2 * ((e % 128) / 32)));
    float out[256];
    q_dtype_get(Q_DT_Q2_K)->dequant(&blk, out, 256);
    for (int e = 0; e < 256; e++) {
        float want = 0.5f * (float)sc[e / 16] * (float)q[e] - 0.25f * (float)mn[e / 16];
        assert_bits_equal(out[e], want, "q2_K %d", e);
    }
}

static void test_q3_k(void **state)
{
    (void)state;
    int q[256], sc[16];
    td_seed(31);
    for (int e = 0; e < 256; e++)
        q[e] = (int)(td_next() % 8) - 4; /* -4..3 */
    for (int s = 0; s < 16; s++)
        sc[s] = (int)(td_next() % 64); /* stored 6-bit, used as sc - 32 */
    sc[0] = 0;
    sc[15] = 63;
    block_q3_K blk;
    memset(&blk, 0, sizeof blk);
    blk.d = 0x3400; /* 0.25 */
    for (int s = 0; s < 16; s++) {
        blk.scales[s % 8] |= (uint8_t)((sc[s] & 15) << (s < 8 ? 0 : 4));
        blk.scales[8 + s % 4] |= (uint8_t)((sc[s] >> 4) << (2 * (s / 4)));
    }
    /* element e: stored u = q + 4 (0..7); low two bits as in Q2_K, the third
     * bit in hmask[e % 32] at bit (e/128)*4 + (e%128)/32 */
    for (int e = 0; e < 256; e++) {
        int u = q[e] + 4;
        int plane = (e % 128) / 32;
        blk.qs[(e / 128) * 32 + e % 32] |= (uint8_t)((u & 3) << (2 * plane));
        blk.hmask[e % 32] |= (uint8_t)(((u >> 2) & 1) << ((e / 128) * 4 + plane));
    }
    float out[256];
    q_dtype_get(Q_DT_Q3_K)->dequant(&blk, out, 256);
    for (int e = 0; e < 256; e++) {
        float want = 0.25f * (float)(sc[e / 16] - 32) * (float)q[e];
        assert_bits_equal(out[e], want, "q3_K %d", e);
    }
}

/* Packs eight 6-bit scales and mins the Q4_K/Q5_K way. */
static void td_pack_k4_scales(const int *sc, const int *mn, uint8_t *s)
{
    memset(s, 0, K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] |= (uint8_t)sc[j];
            s[j + 4] |= (uint8_t)mn[j];
        } else {
            s[j + 4] |= (uint8_t)((sc[j] & 15) | ((mn[j] & 15) << 4));
            s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

static void test_q4_k_q5_k(void **state)
{
    (void)state;
    int q[256], sc[8], mn[8];
    td_seed(41);
    for (int e = 0; e < 256; e++)
        q[e] = (int)(td_next() % 32);
    for (int s = 0; s < 8; s++) {
        sc[s] = (int)(td_next() % 64);
        mn[s] = (int)(td_next() % 64);
    }
    sc[7] = 63;
    mn[4] = 63;
    block_q4_K b4;
    block_q5_K b5;
    memset(&b4, 0, sizeof b4);
    memset(&b5, 0, sizeof b5);
    b4.d = b5.d = 0x3800;       /* 0.5 */
    b4.dmin = b5.dmin = 0x3000; /* 0.125 */
    td_pack_k4_scales(sc, mn, b4.scales);
    td_pack_k4_scales(sc, mn, b5.scales);
    /* element e: 64-chunk e/64 uses qs[chunk*32 + e%32], low nibble for the
     * first 32 of the chunk, high for the second; Q5_K's fifth bit is
     * qh[e%32] bit 2*chunk (+1 for the second 32) */
    for (int e = 0; e < 256; e++) {
        int chunk = e / 64, hi = (e % 64) >= 32;
        b4.qs[chunk * 32 + e % 32] |= (uint8_t)((q[e] & 15) << (hi ? 4 : 0));
        b5.qs[chunk * 32 + e % 32] |= (uint8_t)((q[e] & 15) << (hi ? 4 : 0));
        b5.qh[e % 32] |= (uint8_t)(((q[e] >> 4) & 1) << (2 * chunk + hi));
    }
    float out[256];
    q_dtype_get(Q_DT_Q4_K)->dequant(&b4, out, 256);
    for (int e = 0; e < 256; e++) {
        float want = 0.5f * (float)sc[e / 32] * (float)(q[e] & 15) -
                     0.125f * (float)mn[e / 32];
        assert_bits_equal(out[e], want, "q4_K %d", e);
    }
    q_dtype_get(Q_DT_Q5_K)->dequant(&b5, out, 256);
    for (int e = 0; e < 256; e++) {
        float want = 0.5f * (float)sc[e / 32] * (float)q[e] - 0.125f * (float)mn[e / 32];
        assert_bits_equal(out[e], want, "q5_K %d", e);
    }
}

static void test_q6_k(void **state)
{
    (void)state;
    int q[256], sc[16];
    td_seed(61);
    for (int e = 0; e < 256; e++)
        q[e] = (int)(td_next() % 64) - 32;
    for (int s = 0; s < 16; s++)
        sc[s] = (int)(td_next() % 256) - 128;
    block_q6_K blk;
    memset(&blk, 0, sizeof blk);
    blk.d = 0x2c00; /* 2^-4 */
    for (int s = 0; s < 16; s++)
        blk.scales[s] = (int8_t)sc[s];
    /* element e: 128-chunk c, quarter k = (e%128)/32, l = e%32; low nibble in
     * ql[c*64 + (k&1)*32 + l] (high nibble for k >= 2), top two bits in
     * qh[c*32 + l] at bit 2k */
    for (int e = 0; e < 256; e++) {
        int c = e / 128, k = (e % 128) / 32, l = e % 32, u = q[e] + 32;
        blk.ql[c * 64 + (k & 1) * 32 + l] |= (uint8_t)((u & 15) << (k >= 2 ? 4 : 0));
        blk.qh[c * 32 + l] |= (uint8_t)((u >> 4) << (2 * k));
    }
    float out[256];
    q_dtype_get(Q_DT_Q6_K)->dequant(&blk, out, 256);
    for (int e = 0; e < 256; e++) {
        float want = 0.0625f * (float)sc[e / 16] * (float)q[e];
        assert_bits_equal(out[e], want, "q6_K %d", e);
    }
}

/* Multi-block rows, special scales and odd source addresses for every block
 * type: each block of a row equals the same block dequantized alone, and a NaN
 * or inf scale gives NaN or inf, never a crash. */
static void test_rows_and_special_scales(void **state)
{
    (void)state;
    static const q_dtype types[] = {Q_DT_Q8_0, Q_DT_Q4_0, Q_DT_Q4_1, Q_DT_Q5_0,
                                    Q_DT_Q5_1, Q_DT_Q2_K, Q_DT_Q3_K, Q_DT_Q4_K,
                                    Q_DT_Q5_K, Q_DT_Q6_K, Q_DT_IQ4_NL};
    td_seed(99);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const q_dtype_traits *t = q_dtype_get(types[ti]);
        const int nb = 5;
        uint8_t *raw = malloc(t->size * nb + 1);
        float *row = malloc(sizeof(float) * (size_t)t->blck * nb);
        float *one = malloc(sizeof(float) * (size_t)t->blck);
        assert_non_null(raw);
        assert_non_null(row);
        assert_non_null(one);
        uint8_t *b = raw + 1;
        for (size_t i = 0; i < t->size * nb; i++)
            b[i] = (uint8_t)td_next();
        t->dequant(b, row, t->blck * nb);
        for (int i = 0; i < nb; i++) {
            t->dequant(b + t->size * i, one, t->blck);
            for (int64_t j = 0; j < t->blck; j++) {
                float r = row[i * t->blck + j];
                assert_true(fbits(r) == fbits(one[j]) || (isnan(r) && isnan(one[j])));
            }
        }
        /* all-zero block: all zeros */
        memset(b, 0, t->size);
        t->dequant(b, one, t->blck);
        for (int64_t j = 0; j < t->blck; j++)
            assert_true(one[j] == 0.0f);
        free(raw);
        free(row);
        free(one);
    }
    /* Q8_0 with a NaN scale, an inf scale and a subnormal scale */
    uint8_t b[34];
    float out[32];
    for (int j = 0; j < 32; j++)
        b[2 + j] = (uint8_t)(j + 1);
    put16(b, 0x7e00);
    q_dtype_get(Q_DT_Q8_0)->dequant(b, out, 32);
    assert_true(isnan(out[0]) && isnan(out[31]));
    put16(b, 0x7c00);
    q_dtype_get(Q_DT_Q8_0)->dequant(b, out, 32);
    assert_true(isinf(out[0]) && out[0] > 0);
    put16(b, 0x0001); /* 2^-24 */
    q_dtype_get(Q_DT_Q8_0)->dequant(b, out, 32);
    assert_bits_equal(out[2], 3.0f * 0x1p-24f, "subnormal scale");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_widen_exhaustive),
        cmocka_unit_test(test_f16_round_trip_exhaustive),
        cmocka_unit_test(test_f16_row_matches_scalar),
        cmocka_unit_test(test_f16_narrow_cases),
        cmocka_unit_test(test_f16_narrow_random),
        cmocka_unit_test(test_bf16_exhaustive),
        cmocka_unit_test(test_bf16_narrow),
        cmocka_unit_test(test_fp8),
        cmocka_unit_test(test_plain_types),
        cmocka_unit_test(test_traits_table),
        cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_q8_0),
        cmocka_unit_test(test_q4_0_q4_1_iq4_nl),
        cmocka_unit_test(test_q5_0_q5_1),
        cmocka_unit_test(test_q2_k),
        cmocka_unit_test(test_q3_k),
        cmocka_unit_test(test_q4_k_q5_k),
        cmocka_unit_test(test_q6_k),
        cmocka_unit_test(test_rows_and_special_scales),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
