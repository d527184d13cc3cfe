/* test_cuda_fused.c — k_cuda_preview against the CPU reference: q_fmt_fakequant
 * (imatrix NULL: the plain quantization) of the scrubbed f32 rows, then
 * q_metrics_add with or without an importance matrix, for q8_0, q4_0, q4_k,
 * q6_k, intN, uintN, nf4 and fp8 with groups G, channel and tensor, on heavy-tailed data
 * (0.02 t4) with NaN/Inf values (replaced by 0 on both sides), an all-zero
 * block and a block of subnormals, from f32, f16 and bf16 sources; blocks of
 * ±1e10, whose f16 scales overflow (NaN and infinite errors), from f32 and bf16.
 *
 * Tolerances: n, every histogram count and max |e| exactly; Σw², Σŵ², Σe²,
 * Σ i e² and Σ i w² (non-negative terms) within 1e-9 relative; Σwŵ within
 * 1e-9 × sqrt(Σw² Σŵ²) (its terms have both signs; Cauchy-Schwarz bounds it).
 * Both sides sum the same double terms in different orders: about 1e-14.
 * Also: bit-identical results on repeated calls and with k_cuda_keep, usage
 * errors, and the timings of a 4096 x 4096 f32 preview per format (printed).
 *
 * Every test runs twice: on the device, and in the emulation of one
 * (k_cuda_fused_emulate: the kernels' own code on the host, one simulated
 * thread at a time, the device's reduction orders). Without a usable device
 * the first group's tests are skipped after the reason is printed, and
 * test_unavailable checks what callers get; a build without CUDA skips the
 * second group too. Timings are checked and printed on the device only.
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

#include "k_cuda.h"
#include "k_cuda_fused.h"
#include "k_preview.h"
#include "mem_tensor.h"
#include "q_dtype.h"
#include "q_format.h"
#include "q_metrics.h"

static bool g_avail;    /* this group's backend: the device, or its emulation */
static bool g_emulated; /* the group is the emulation's */
static char g_why[512];

#include "test_splitmix.h"

static const char *src_name(k_src t)
{
    return t == K_SRC_F32 ? "f32" : t == K_SRC_F16 ? "f16" : "bf16";
}

static size_t src_size(k_src t)
{
    return t == K_SRC_F32 ? 4 : 2;
}

static void put(void *data, k_src t, int64_t i, float v)
{
    if (t == K_SRC_F32)
        ((float *)data)[i] = v;
    else if (t == K_SRC_F16)
        ((uint16_t *)data)[i] = q_f32_to_f16(v);
    else
        ((uint16_t *)data)[i] = q_f32_to_bf16(v);
}

static float get(const void *data, k_src t, int64_t i)
{
    if (t == K_SRC_F32)
        return ((const float *)data)[i];
    if (t == K_SRC_F16)
        return q_f16_to_f32(((const uint16_t *)data)[i]);
    return q_bf16_to_f32(((const uint16_t *)data)[i]);
}

/* The midpoints between nf4's levels (q_grid.c's table): as data values with
 * a group maximum of 1, ties of the level search. */
static const float nf4_mids[15] = {
    -0.8480964004993439f,  -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,  0.2920137718319893f,   0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,  0.8614784181118011f,
};

/* rows × cols values: 0.02 t4 + 0.001, one NaN/Inf in about 2000, block 0 of
 * row 1 all zero, block 1 of row 1 subnormal (f32/bf16); the first 64 values
 * of row 2 are 1 and the nf4 midpoints, twice (ties of nf4 by groups of 32
 * or 64, f32 only); the last value is 4, the largest (a range that misses the
 * last value is wrong). Caller frees. */
static void *make_data(k_src t, int64_t rows, int64_t cols)
{
    int64_t n = rows * cols;
    void *data = malloc((size_t)n * src_size(t));
    assert_non_null(data);
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = rng();
        float v = 0.02f * student_t() + 0.001f;
        if (r % 2000 == 0)
            v = (r >> 32) % 3 == 0 ? NAN : (r >> 32) % 3 == 1 ? INFINITY : -INFINITY;
        put(data, t, i, v);
    }
    if (rows > 1 && cols >= 64) {
        for (int64_t c = 0; c < 32; c++) {
            put(data, t, cols + c, 0.0f);
            put(data, t, cols + 32 + c, (float)(c - 16) * 1e-41f);
        }
    }
    if (rows > 2 && cols >= 64)
        for (int64_t c = 0; c < 64; c++)
            put(data, t, 2 * cols + c, c % 16 == 0 ? 1.0f : nf4_mids[c % 16 - 1]);
    if (n > 0)
        put(data, t, n - 1, 4.0f);
    return data;
}

/* NaN and Inf values among the first n of data. */
static int64_t count_bad(const void *data, k_src t, int64_t n)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += !isfinite(get(data, t, i));
    return bad;
}

/* The {min, max} of the finite values (q_fmt_prepare's range). */
static void tensor_range(const void *data, k_src t, int64_t n, float tr[2])
{
    tr[0] = INFINITY;
    tr[1] = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        float v = get(data, t, i);
        if (isfinite(v)) {
            tr[0] = fminf(tr[0], v);
            tr[1] = fmaxf(tr[1], v);
        }
    }
}

/* The CPU reference of k_cuda_preview. */
static void cpu_ref(const void *data, k_src t, int64_t rows, int64_t cols,
                    const q_fmt_spec *spec, const float *iw, double range, q_metrics_acc *out)
{
    int64_t n = rows * cols;
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (int64_t i = 0; i < n; i++) {
        float v = get(data, t, i);
        x[i] = isfinite(v) ? v : 0.0f;
    }
    q_fq_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    if (q_fmt_needs_prepare(spec))
        q_fmt_prepare(spec, x, n, &ctx);
    q_err err = {{0}};
    if (q_fmt_fakequant(spec, x, y, rows, cols, NULL, &ctx, &err) != Q_OK)
        fail_msg("q_fmt_fakequant: %s", err.msg);
    q_metrics_init(out, range);
    q_metrics_add(out, x, y, rows, cols, iw);
    free(x);
    free(y);
}

static void close_rel(double g, double c, double scale, const char *field, const char *what)
{
    if (g == c || (isnan(g) && isnan(c))) /* also the same infinity, or both NaN */
        return;
    if (!(fabs(g - c) <= 1e-9 * scale))
        fail_msg("%s: %s gpu %.17g cpu %.17g (scale %.3g)", what, field, g, c, scale);
}

static void check_acc(const q_metrics_acc *g, const q_metrics_acc *c, const char *what)
{
    if (g->n != c->n)
        fail_msg("%s: n gpu %lld cpu %lld", what, (long long)g->n, (long long)c->n);
    if (!(g->max_abs == c->max_abs || (isnan(g->max_abs) && isnan(c->max_abs))))
        fail_msg("%s: max|e| gpu %.17g cpu %.17g", what, g->max_abs, c->max_abs);
    if (g->weighted != c->weighted || g->hist_range != c->hist_range)
        fail_msg("%s: weighted/hist_range differ", what);
    close_rel(g->sum_w2, c->sum_w2, fabs(c->sum_w2), "sum_w2", what);
    close_rel(g->sum_q2, c->sum_q2, fabs(c->sum_q2), "sum_q2", what);
    close_rel(g->sum_e2, c->sum_e2, fabs(c->sum_e2), "sum_e2", what);
    close_rel(g->sum_wq, c->sum_wq, sqrt(c->sum_w2 * c->sum_q2), "sum_wq", what);
    close_rel(g->sum_iw_e2, c->sum_iw_e2, fabs(c->sum_iw_e2), "sum_iw_e2", what);
    close_rel(g->sum_iw_w2, c->sum_iw_w2, fabs(c->sum_iw_w2), "sum_iw_w2", what);
    for (int b = 0; b < Q_ERR_HIST_BINS; b++)
        if (g->hist[b] != c->hist[b])
            fail_msg("%s: hist[%d] gpu %lld cpu %lld", what, b, (long long)g->hist[b],
                     (long long)c->hist[b]);
}

typedef struct fcase {
    const char *name;
    int64_t group; /* applied to grid formats; -2: the parsed default */
} fcase;

static const fcase g_cases[] = {
    {"q8_0", -2},     {"q4_0", -2},     {"q4_k", -2},     {"q6_k", -2},
    {"int4", 128},    {"int8", Q_GROUP_CHANNEL},
    {"int3", Q_GROUP_TENSOR},           {"int2", 32},     {"uint4", 64},
    {"uint2", Q_GROUP_CHANNEL},         {"uint5", Q_GROUP_TENSOR},
    {"uint8", 256},   {"nf4", -2},      {"nf4", 32},
    {"fp8_e4m3", Q_GROUP_CHANNEL},      {"fp8_e5m2", 32}, {"fp8_e4m3", Q_GROUP_TENSOR},
    {"fp8_e5m2", Q_GROUP_TENSOR},
    /* groups longer than a GPU unit (256 values): ranges by kf_grange */
    {"int4", 512},    {"uint3", 512},   {"nf4", 512},     {"fp8_e5m2", 512},
};
#define N_CASES (sizeof g_cases / sizeof g_cases[0])

static q_fmt_spec case_spec(const fcase *fc)
{
    q_fmt_spec s;
    assert_true(q_fmt_parse(fc->name, &s));
    if (fc->group != -2)
        s.group = fc->group;
    return s;
}

/* GPU vs CPU for every case on one source type; histogram range from the CPU's
 * max |e| so that both end bins are used. */
static void run_type(k_src t, int64_t rows, int64_t cols, uint64_t seed)
{
    rng_state = seed;
    void *data = make_data(t, rows, cols);
    float *iw = malloc((size_t)cols * sizeof *iw);
    assert_non_null(iw);
    for (int64_t c = 0; c < cols; c++)
        iw[c] = (float)(0.1 + 10.0 * unif());
    for (size_t k = 0; k < N_CASES; k++) {
        q_fmt_spec s = case_spec(&g_cases[k]);
        if (!q_fmt_fits(&s, cols) || (s.group > 0 && cols % s.group != 0))
            continue; /* rows of 640: no k-quant, no group of 256 or 512 */
        char what[160], name[64];
        q_fmt_name(&s, name, sizeof name);
        for (int weighted = 0; weighted < 2; weighted++) {
            const float *w = weighted ? iw : NULL;
            snprintf(what, sizeof what, "%s %s group %lld %lldx%lld%s", src_name(t), name,
                     (long long)s.group, (long long)rows, (long long)cols,
                     weighted ? " imatrix" : "");
            q_metrics_acc probe, c, g;
            cpu_ref(data, t, rows, cols, &s, w, 0.0, &probe);
            double range = 0.75 * probe.max_abs;
            cpu_ref(data, t, rows, cols, &s, w, range, &c);
            q_metrics_init(&g, range);
            q_err err = {{0}};
            int64_t nbad = 0;
            if (k_cuda_preview(data, t, rows, cols, &s, w, range, NULL, &g, &nbad, &err) != Q_OK)
                fail_msg("%s: k_cuda_preview: %s", what, err.msg);
            check_acc(&g, &c, what);
            if (nbad != count_bad(data, t, rows * cols))
                fail_msg("%s: %lld NaN/Inf counted, %lld in the data", what, (long long)nbad,
                         (long long)count_bad(data, t, rows * cols));
            /* the same in two slices of rows kept on the device, a per-tensor
             * scale from the tensor's range */
            if (weighted || rows < 2)
                continue;
            float tr[2];
            tensor_range(data, t, rows * cols, tr);
            const int64_t r1 = rows / 2;
            const size_t rb = (size_t)cols * src_size(t);
            assert_int_equal(k_cuda_keep(data, (size_t)rows * rb, &err), Q_OK);
            q_metrics_init(&g, range);
            nbad = 0;
            assert_int_equal(k_cuda_preview(data, t, r1, cols, &s, NULL, range, tr, &g, &nbad,
                                            &err), Q_OK);
            assert_int_equal(k_cuda_preview((const char *)data + (size_t)r1 * rb, t, rows - r1,
                                            cols, &s, NULL, range, tr, &g, &nbad, &err), Q_OK);
            double cms = -1;
            assert_true(k_cuda_preview_timing(&cms, NULL) == !g_emulated);
            assert_true(cms == 0.0); /* a slice of the kept tensor: no copy */
            k_cuda_forget(data);
            snprintf(what + strlen(what), sizeof what - strlen(what), " in two slices");
            check_acc(&g, &c, what);
            assert_int_equal(nbad, count_bad(data, t, rows * cols));
        }
    }
    free(iw);
    free(data);
}

static void test_formats_f32(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    run_type(K_SRC_F32, 37, 512, 1);
    run_type(K_SRC_F32, 3, 4096, 2);
    run_type(K_SRC_F32, 9, 640, 6); /* channel groups of 2.5 units */
    run_type(K_SRC_F32, 7, 701, 8); /* rows of 701: unaligned rows, a unit of 189 */
}

static void test_formats_f16(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    run_type(K_SRC_F16, 37, 512, 3);
}

static void test_formats_bf16(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    run_type(K_SRC_BF16, 37, 512, 4);
    run_type(K_SRC_BF16, 7, 701, 9);
}

/* Values of ±1e10 in some blocks: the f16 scale of q8_0, q4_0, q4_k and
 * q6_k overflows there and dequantizes to NaN (0 · inf), so max |e| is NaN
 * and those values are binned nowhere, as q_metrics_add has it; the grids
 * cap their scales (finite). f32 and bf16 (f16 cannot hold 1e10). */
static void test_overflow(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    static const char *const names[] = {"q8_0", "q4_0", "q4_k", "q6_k", "int4", "fp8_e4m3"};
    for (int ti = 0; ti < 2; ti++) {
        const k_src t = ti ? K_SRC_BF16 : K_SRC_F32;
        const int64_t rows = 6, cols = 1024;
        rng_state = 7 + (uint64_t)ti;
        void *data = make_data(t, rows, cols);
        for (int64_t r = 2; r < rows; r += 2)
            for (int64_t c = 256; c < 320; c++)
                put(data, t, r * cols + c, (c % 2 ? -1.0f : 1.0f) * 1e10f * (float)(c - 255));
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            q_fmt_spec s;
            assert_true(q_fmt_parse(names[k], &s));
            char what[96];
            snprintf(what, sizeof what, "%s %s with 1e10 blocks", src_name(t), names[k]);
            q_metrics_acc c, g;
            cpu_ref(data, t, rows, cols, &s, NULL, 0.05, &c);
            q_metrics_init(&g, 0.05);
            q_err err = {{0}};
            if (k_cuda_preview(data, t, rows, cols, &s, NULL, 0.05, NULL, &g, NULL, &err) != Q_OK)
                fail_msg("%s: k_cuda_preview: %s", what, err.msg);
            check_acc(&g, &c, what);
        }
        free(data);
    }
}

/* k_preview_tensor's exact pass on the GPU against the same call on the CPU
 * (QTUNE_NO_GPU=1): metrics and the NaN/Inf count, for a tensor larger than
 * one GPU slice (2^24 values) and one small enough to be kept, per-tensor and
 * k-quant formats included; and a cancel before the exact pass. */
static void test_preview_gpu(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    static const char *const names[] = {"q8_0", "q4_k", "int4", "fp8_e4m3", "nf4"};
    static const struct {
        k_src t;
        int64_t rows, cols;
    } shapes[] = {{K_SRC_F32, 4352, 4096}, {K_SRC_BF16, 96, 2048}};
    for (size_t sh = 0; sh < 2; sh++) {
        const k_src t = shapes[sh].t;
        const int64_t rows = shapes[sh].rows, cols = shapes[sh].cols;
        rng_state = 11 + sh;
        void *data = make_data(t, rows, cols);
        q_tensor ten;
        mem_tensor(&ten, "blk.0.ffn_up.weight", data, t == K_SRC_F32 ? Q_DT_F32 : Q_DT_BF16, rows,
                   cols);
        for (size_t k = 0; k < sizeof names / sizeof names[0] + 1; k++) {
            k_preview_req req;
            memset(&req, 0, sizeof req);
            req.tensor = &ten;
            req.method = Q_METHOD_RTN;
            req.skip_estimate = true;
            if (k < sizeof names / sizeof names[0]) {
                assert_true(q_fmt_parse(names[k], &req.fmt));
            } else {
                assert_true(q_fmt_parse("int4", &req.fmt));
                req.fmt.group = Q_GROUP_TENSOR;
            }
            k_preview_result g, c;
            q_err err = {{0}};
            unsetenv("QTUNE_NO_GPU");
            assert_int_equal(k_preview_tensor(&req, NULL, NULL, &g, &err), Q_OK);
            setenv("QTUNE_NO_GPU", "1", 1);
            assert_int_equal(k_preview_tensor(&req, NULL, NULL, &c, &err), Q_OK);
            unsetenv("QTUNE_NO_GPU");
            char what[96], name[32];
            snprintf(what, sizeof what, "k_preview_tensor %s %lldx%lld %s", src_name(t),
                     (long long)rows, (long long)cols, q_fmt_name(&req.fmt, name, sizeof name));
            check_acc(&g.acc, &c.acc, what);
            assert_true(g.on_gpu && !c.on_gpu);
            assert_int_equal(g.n_nonfinite, c.n_nonfinite);
            assert_int_equal(g.rows_done, rows);
        }
        atomic_int cancel = 1;
        k_preview_req req;
        memset(&req, 0, sizeof req);
        req.tensor = &ten;
        req.method = Q_METHOD_RTN;
        req.cancel = &cancel;
        assert_true(q_fmt_parse("q8_0", &req.fmt));
        q_err err = {{0}};
        assert_int_equal(k_preview_tensor(&req, NULL, NULL, NULL, &err), Q_ECANCELLED);
        k_cuda_forget(data);
        free(data);
    }
}

/* Accumulation into a used out, repeated calls and kept tensors: same bits. */
static void test_deterministic_keep(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    rng_state = 5;
    const int64_t rows = 64, cols = 1024;
    void *data = make_data(K_SRC_BF16, rows, cols);
    q_fmt_spec s;
    assert_true(q_fmt_parse("q4_0", &s));
    q_metrics_acc a, b, twice, once;
    q_err err = {{0}};
    q_metrics_init(&a, 0.01);
    q_metrics_init(&b, 0.01);
    assert_int_equal(
        k_cuda_preview(data, K_SRC_BF16, rows, cols, &s, NULL, 0.01, NULL, &a, NULL, &err), Q_OK);
    assert_int_equal(k_cuda_keep(data, (size_t)(rows * cols) * 2, &err), Q_OK);
    assert_int_equal(
        k_cuda_preview(data, K_SRC_BF16, rows, cols, &s, NULL, 0.01, NULL, &b, NULL, &err), Q_OK);
    double cms = -1, kms = -1;
    assert_true(k_cuda_preview_timing(&cms, &kms) == !g_emulated);
    assert_true(cms == 0.0 && (kms > 0.0) == !g_emulated); /* kept: no copy */
    assert_memory_equal(&a, &b, sizeof a);
    twice = a;
    assert_int_equal(
        k_cuda_preview(data, K_SRC_BF16, rows, cols, &s, NULL, 0.01, NULL, &twice, NULL, &err),
        Q_OK);
    once = a;
    q_metrics_merge(&once, &b);
    assert_memory_equal(&twice, &once, sizeof once);
    k_cuda_forget(data);
    k_cuda_fused_release();
    q_metrics_init(&b, 0.01);
    assert_int_equal(
        k_cuda_preview(data, K_SRC_BF16, rows, cols, &s, NULL, 0.01, NULL, &b, NULL, &err), Q_OK);
    assert_memory_equal(&a, &b, sizeof a);
    free(data);
}

/* k_cuda_keep holds 4 tensors: a fifth drops the least recently used (a
 * preview counts as a use); slices within a kept tensor are found, bytes
 * past its end are not; forget and release drop them. */
static void test_keep_lru(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    const int64_t rows = 8, cols = 256;
    const size_t bytes = (size_t)(rows * cols) * sizeof(float);
    float *t[5];
    for (int i = 0; i < 5; i++) {
        rng_state = 40 + (uint64_t)i;
        t[i] = make_data(K_SRC_F32, rows, cols);
    }
    q_err err = {{0}};
    for (int i = 0; i < 4; i++)
        assert_int_equal(k_cuda_keep(t[i], bytes, &err), Q_OK);
    q_fmt_spec s;
    assert_true(q_fmt_parse("q8_0", &s));
    q_metrics_acc m;
    q_metrics_init(&m, 0.0);
    /* use tensor 0 (a slice of its rows): tensor 1 becomes the oldest */
    assert_int_equal(k_cuda_preview(t[0] + 2 * cols, K_SRC_F32, 3, cols, &s, NULL, 0.0, NULL, &m,
                                    NULL, &err),
                     Q_OK);
    assert_int_equal(k_cuda_keep(t[4], bytes, &err), Q_OK);
    assert_false(k_cuda_kept(t[1], bytes));
    for (int i = 0; i < 5; i++)
        if (i != 1)
            assert_true(k_cuda_kept(t[i], bytes));
    assert_true(k_cuda_kept(t[0] + 2 * cols, 3 * (size_t)cols * sizeof(float)));
    assert_true(k_cuda_kept(t[0] + 2 * cols, bytes - 2 * (size_t)cols * sizeof(float)));
    assert_false(k_cuda_kept(t[0] + 2 * cols, bytes));
    k_cuda_forget(t[2]);
    assert_false(k_cuda_kept(t[2], bytes));
    assert_true(k_cuda_kept(t[3], bytes));
    k_cuda_fused_release();
    for (int i = 0; i < 5; i++) {
        assert_false(k_cuda_kept(t[i], bytes));
        free(t[i]);
    }
}

static void test_usage(void **state)
{
    (void)state;
    if (!g_avail)
        skip();
    float x[64] = {0};
    q_fmt_spec s;
    q_metrics_acc m, before;
    q_metrics_init(&m, 0.0);
    m.n = 3;
    before = m;
    q_err err = {{0}};
    assert_true(q_fmt_parse("q8_0", &s));
    assert_int_equal(k_cuda_preview(x, (k_src)9, 1, 64, &s, NULL, 0, NULL, &m, NULL, &err),
                     Q_EUSAGE);
    assert_int_equal(k_cuda_preview(x, K_SRC_F32, 1, 64, &s, NULL, 0, NULL, NULL, NULL, &err),
                     Q_EUSAGE);
    assert_int_equal(k_cuda_preview(x, K_SRC_F32, -1, 64, &s, NULL, 0, NULL, &m, NULL, &err),
                     Q_EUSAGE);
    assert_int_equal(k_cuda_preview(NULL, K_SRC_F32, 1, 64, &s, NULL, 0, NULL, &m, NULL, &err),
                     Q_EUSAGE);
    assert_int_equal(k_cuda_preview(x, K_SRC_F32, 1, 48, &s, NULL, 0, NULL, &m, NULL, &err),
                     Q_EUSAGE);
    assert_true(q_fmt_parse("q5_k", &s));
    assert_false(k_cuda_fused_has(&s));
    assert_int_equal(k_cuda_preview(x, K_SRC_F32, 1, 256, &s, NULL, 0, NULL, &m, NULL, &err),
                     Q_EUSAGE);
    assert_non_null(strstr(err.msg, "no CUDA kernel"));
    assert_memory_equal(&m, &before, sizeof m);
    assert_true(q_fmt_parse("q8_0", &s));
    assert_true(k_cuda_fused_has(&s));
    assert_int_equal(k_cuda_preview(NULL, K_SRC_F32, 0, 64, &s, NULL, 0, NULL, &m, NULL, &err),
                     Q_OK);
    assert_memory_equal(&m, &before, sizeof m);
    assert_int_equal(k_cuda_keep(NULL, 4, &err), Q_EUSAGE);
    k_cuda_forget(x); /* not kept: no-op */
}

/* Timings of a 4096 x 4096 f32 preview per format (printed, not checked). */
static void test_timings(void **state)
{
    (void)state;
    if (!g_avail || g_emulated)
        skip();
    rng_state = 6;
    const int64_t rows = 4096, cols = 4096;
    float *data = make_data(K_SRC_F32, rows, cols);
    for (size_t k = 0; k < N_CASES; k++) {
        q_fmt_spec s = case_spec(&g_cases[k]);
        char name[64];
        q_fmt_name(&s, name, sizeof name);
        q_metrics_acc g;
        q_err err = {{0}};
        double cms = 0, kms = 0, kept = 0;
        q_metrics_init(&g, 0.01);
        if (k_cuda_preview(data, K_SRC_F32, rows, cols, &s, NULL, 0.01, NULL, &g, NULL, &err) !=
            Q_OK)
            fail_msg("%s: %s", name, err.msg);
        assert_true(k_cuda_preview_timing(&cms, &kms));
        assert_int_equal(k_cuda_keep(data, (size_t)(rows * cols) * 4, &err), Q_OK);
        assert_int_equal(
            k_cuda_preview(data, K_SRC_F32, rows, cols, &s, NULL, 0.01, NULL, &g, NULL, &err),
            Q_OK);
        assert_true(k_cuda_preview_timing(NULL, &kept));
        k_cuda_forget(data);
        printf("test_cuda_fused: 4096x4096 f32 %-10s group %6lld: copy %7.3f ms, "
               "kernels %7.3f ms (kept: %7.3f ms)\n",
               name, (long long)s.group, cms, kms, kept);
    }
    free(data);
}

/* The device against its emulation, bit for bit: the same code with the same
 * orders of summation, so any difference is nvcc's device code rounding
 * otherwise than the host (a contracted FMA, a flushed subnormal). Every
 * case on f32 and bf16 data, with an importance vector. Device group only. */
static void test_device_vs_emulation(void **state)
{
    (void)state;
    if (!g_avail || g_emulated)
        skip();
    const int64_t rows = 37, cols = 512;
    for (int ti = 0; ti < 2; ti++) {
        const k_src t = ti ? K_SRC_BF16 : K_SRC_F32;
        rng_state = 21 + (uint64_t)ti;
        void *data = make_data(t, rows, cols);
        float iw[512];
        for (int64_t c = 0; c < cols; c++)
            iw[c] = (float)(0.1 + 10.0 * unif());
        for (size_t k = 0; k < N_CASES; k++) {
            q_fmt_spec s = case_spec(&g_cases[k]);
            if (s.group > 0 && cols % s.group != 0)
                continue;
            q_metrics_acc d, e;
            int64_t dbad = 0, ebad = 0;
            q_err err = {{0}};
            q_metrics_init(&d, 0.02);
            q_metrics_init(&e, 0.02);
            assert_int_equal(
                k_cuda_preview(data, t, rows, cols, &s, iw, 0.02, NULL, &d, &dbad, &err), Q_OK);
            assert_true(k_cuda_fused_emulate(true));
            assert_int_equal(
                k_cuda_preview(data, t, rows, cols, &s, iw, 0.02, NULL, &e, &ebad, &err), Q_OK);
            k_cuda_fused_emulate(false);
            char name[64];
            q_fmt_name(&s, name, sizeof name);
            if (memcmp(&d, &e, sizeof d) != 0 || dbad != ebad)
                fail_msg("%s %s group %lld: the device's sums differ from the emulation's "
                         "(e2 %.17g vs %.17g, max|e| %.17g vs %.17g)",
                         src_name(t), name, (long long)s.group, d.sum_e2, e.sum_e2, d.max_abs,
                         e.max_abs);
        }
        free(data);
    }
}

/* What callers see without a device. */
static void test_unavailable(void **state)
{
    (void)state;
    if (g_avail || g_emulated)
        skip();
    char why[512] = "";
    assert_false(k_cuda_available(why, sizeof why));
#ifdef QTUNE_CUDA
    assert_int_equal(strncmp(why, "no CUDA device", 14), 0);
#else
    assert_string_equal(why, "built without CUDA");
    q_fmt_spec s0;
    assert_true(q_fmt_parse("q8_0", &s0));
    assert_false(k_cuda_fused_has(&s0));
#endif
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)i / 64.0f;
    q_fmt_spec s;
    assert_true(q_fmt_parse("q8_0", &s));
    q_metrics_acc m, before;
    q_metrics_init(&m, 0.5);
    before = m;
    q_err err = {{0}};
    assert_int_equal(k_cuda_preview(x, K_SRC_F32, 2, 32, &s, NULL, 0.5, NULL, &m, NULL, &err),
                     Q_EUSAGE);
    assert_non_null(strstr(err.msg, why));
    assert_null(strchr(err.msg, '\n'));
    assert_memory_equal(&m, &before, sizeof m);
    assert_int_equal(k_cuda_keep(x, sizeof x, &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, why));
    double a = 1, b = 1;
    assert_false(k_cuda_preview_timing(&a, &b));
    assert_true(a == 0.0 && b == 0.0);
    k_cuda_forget(x); /* harmless */
    k_cuda_fused_release();
}

static int setup_device(void **state)
{
    (void)state;
    g_emulated = false;
    g_avail = k_cuda_available(g_why, sizeof g_why);
    if (g_avail)
        printf("test_cuda_fused: device %s\n", g_why);
    else
        printf("test_cuda_fused: CUDA not available (%s): GPU tests skipped\n", g_why);
    fflush(stdout);
    return 0;
}

static int setup_emulated(void **state)
{
    (void)state;
    g_emulated = true;
    g_avail = k_cuda_fused_emulate(true);
    printf("test_cuda_fused: %s\n", g_avail ? "the same tests on the emulated device"
                                             : "built without CUDA: no emulation to test");
    fflush(stdout);
    return 0;
}

static int teardown_emulated(void **state)
{
    (void)state;
    k_cuda_fused_emulate(false);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats_f32),        cmocka_unit_test(test_formats_f16),
        cmocka_unit_test(test_formats_bf16),       cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_preview_gpu),
        cmocka_unit_test(test_deterministic_keep), cmocka_unit_test(test_keep_lru),
        cmocka_unit_test(test_usage),              cmocka_unit_test(test_timings),
        cmocka_unit_test(test_device_vs_emulation), cmocka_unit_test(test_unavailable),
    };
    int fails = cmocka_run_group_tests_name("device", tests, setup_device, NULL);
    fails += cmocka_run_group_tests_name("emulated", tests, setup_emulated, teardown_emulated);
    return fails;
}
