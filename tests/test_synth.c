/* test_synth.c — the synthetic model generator (an_synth): models written to a
 * temporary directory and parsed back with q_gguf_parse; tensor layout,
 * metadata and vocabulary; F16 == F32 rounded; determinism across runs and
 * thread counts; different seeds differ; statistics of the weights (t_5 tails,
 * planted outlier columns, norms near 1); validation; nothing left behind on
 * failure or cancellation. All seeds are fixed; tolerances are stated inline. */
#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "an_synth.h"
#include "q_dtype.h"
#include "q_gguf.h"
#include "q_io.h"

static char tmpdir[] = "/tmp/qtune_test_synth_XXXXXX";

/* ---- helpers ---- */

typedef struct model {
    q_map map;
    q_gguf *g;
} model;

static void path_in_tmp(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

/* Writes cfg to tmpdir/name and parses it back. */
static void model_make(model *m, const an_synth_cfg *cfg, const char *name)
{
    char path[512];
    q_err err = {{0}};
    path_in_tmp(path, sizeof(path), name);
    q_status st = an_synth_write(cfg, path, &err);
    if (st != Q_OK)
        fail_msg("an_synth_write: %s", err.msg);
    st = q_map_file(path, &m->map, &err);
    if (st != Q_OK)
        fail_msg("q_map_file: %s", err.msg);
    st = q_gguf_parse(m->map.data, m->map.size, path, &m->g, &err);
    if (st != Q_OK)
        fail_msg("q_gguf_parse: %s", err.msg);
}

static void model_free(model *m)
{
    q_gguf_free(m->g);
    q_unmap(&m->map);
}

static const q_gguf_tensor *tensor(const model *m, const char *name)
{
    int64_t i = q_gguf_find_tensor(m->g, name);
    if (i < 0)
        fail_msg("tensor %s missing", name);
    return &m->g->tensors[i];
}

/* Tensor values as f32 (malloc'd, rows * cols). */
static float *tensor_f32(const q_gguf_tensor *t)
{
    int64_t n = t->ne[0] * t->ne[1];
    float *v = malloc((size_t)n * sizeof(float));
    assert_non_null(v);
    assert_non_null(t->data);
    for (int64_t i = 0; i < n; i++) {
        if (t->type == Q_DT_F16) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            v[i] = q_f16_to_f32(h);
        } else {
            assert_int_equal(t->type, Q_DT_F32);
            memcpy(&v[i], t->data + 4 * i, 4);
        }
    }
    return v;
}

static int64_t get_int(const model *m, const char *key)
{
    int64_t v;
    if (!q_gguf_get_int(m->g, key, &v))
        fail_msg("key %s missing or not an integer", key);
    return v;
}

static const q_gguf_kv *get_kv(const model *m, const char *key, q_gguf_vtype type)
{
    int64_t i = q_gguf_find(m->g, key);
    if (i < 0)
        fail_msg("key %s missing", key);
    const q_gguf_kv *kv = &m->g->kv[i];
    assert_int_equal(kv->type, type);
    return kv;
}

static bool str_eq(q_gguf_str s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

static bool files_equal(const char *a, const char *b)
{
    q_map ma, mb;
    q_err err;
    assert_int_equal(q_map_file(a, &ma, &err), Q_OK);
    assert_int_equal(q_map_file(b, &mb, &err), Q_OK);
    bool eq = ma.size == mb.size && memcmp(ma.data, mb.data, ma.size) == 0;
    q_unmap(&ma);
    q_unmap(&mb);
    return eq;
}

static int count_dir_entries(void)
{
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void tiny_cfg(an_synth_cfg *c)
{
    an_synth_defaults(c);
    c->dim = 64;
    c->layers = 2;
    c->ff = 128;
    c->heads = 4;
    c->kv_heads = 2;
    c->vocab = 300;
    c->ctx = 256;
    c->seed = 1;
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
                unlink(p);
            }
        }
        closedir(d);
    }
    rmdir(tmpdir);
    return 0;
}

/* ---- tests ---- */

static void test_defaults(void **state)
{
    (void)state;
    an_synth_cfg c;
    an_synth_defaults(&c);
    assert_int_equal(c.dim, 256);
    assert_int_equal(c.layers, 4);
    assert_int_equal(c.ff, 768);
    assert_int_equal(c.heads, 8);
    assert_int_equal(c.kv_heads, 4);
    assert_int_equal(c.vocab, 1024);
    assert_int_equal(c.ctx, 2048);
    assert_int_equal(c.seed, 42);
    assert_int_equal(c.dtype, Q_DT_F16);
    assert_true(c.dim % 256 == 0 && c.ff % 256 == 0); /* k-quants apply */
    assert_int_equal(an_synth_validate(&c, NULL), Q_OK);
    /* params: embd + output 2*1024*256, per block 2*256^2 + 2*128*256 + 3*768*256
     * + 2*256 norms, plus output_norm */
    uint64_t want = 2ull * 1024 * 256 + 4ull * (2 * 65536 + 2 * 128 * 256 + 3 * 768 * 256 + 512)
                    + 256;
    assert_int_equal(an_synth_params(&c), want);
    uint64_t norms = 4ull * 512 + 256;
    assert_int_equal(an_synth_data_bytes(&c), (want - norms) * 2 + norms * 4);
}

static void test_layout(void **state)
{
    (void)state;
    an_synth_cfg c;
    tiny_cfg(&c);
    model m;
    model_make(&m, &c, "layout.gguf");
    const q_gguf *g = m.g;
    assert_int_equal(g->version, 3);
    assert_int_equal(g->alignment, 32);
    assert_int_equal(g->n_tensors, 3 + 9 * 2);

    static const char *const blk[9] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                       "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"};
    /* rows x cols with kv_dim = 64 / 4 * 2 = 32 */
    static const int64_t rows[9] = {1, 64, 32, 32, 64, 1, 128, 128, 64};
    static const int64_t cols[9] = {64, 64, 64, 64, 64, 64, 64, 64, 128};
    char name[64];
    size_t k = 0;
    assert_true(str_eq(g->tensors[k].name, "token_embd.weight"));
    assert_int_equal(g->tensors[k].n_dims, 2);
    assert_int_equal(g->tensors[k].ne[0], 64);
    assert_int_equal(g->tensors[k].ne[1], 300);
    assert_int_equal(g->tensors[k].type, Q_DT_F16);
    k++;
    for (int l = 0; l < 2; l++) {
        for (int j = 0; j < 9; j++, k++) {
            const q_gguf_tensor *t = &g->tensors[k];
            snprintf(name, sizeof(name), "blk.%d.%s.weight", l, blk[j]);
            if (!str_eq(t->name, name))
                fail_msg("tensor %zu: want %s", k, name);
            bool norm = rows[j] == 1;
            assert_int_equal(t->n_dims, norm ? 1 : 2);
            assert_int_equal(t->ne[0], cols[j]);
            assert_int_equal(t->ne[1], rows[j]);
            assert_int_equal(t->type, norm ? Q_DT_F32 : Q_DT_F16);
        }
    }
    assert_true(str_eq(g->tensors[k].name, "output_norm.weight"));
    assert_int_equal(g->tensors[k].n_dims, 1);
    assert_int_equal(g->tensors[k].ne[0], 64);
    assert_int_equal(g->tensors[k].type, Q_DT_F32);
    k++;
    assert_true(str_eq(g->tensors[k].name, "output.weight"));
    assert_int_equal(g->tensors[k].ne[0], 64);
    assert_int_equal(g->tensors[k].ne[1], 300);
    uint64_t total = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        assert_int_equal(g->tensors[i].abs_offset % 32, 0);
        total += g->tensors[i].nbytes;
        /* every value finite */
        float *v = tensor_f32(&g->tensors[i]);
        for (int64_t e = 0; e < g->tensors[i].ne[0] * g->tensors[i].ne[1]; e++)
            assert_true(isfinite(v[e]));
        free(v);
    }
    assert_int_equal(total, an_synth_data_bytes(&c));
    model_free(&m);
}

static void test_metadata(void **state)
{
    (void)state;
    an_synth_cfg c;
    tiny_cfg(&c);
    c.seed = 0x123456789abcull;
    model m;
    model_make(&m, &c, "meta.gguf");
    char s[128];
    assert_true(q_gguf_get_str(m.g, "general.architecture", s, sizeof(s)));
    assert_string_equal(s, "llama");
    assert_true(q_gguf_get_str(m.g, "general.name", s, sizeof(s)));
    assert_true(strlen(s) > 0);
    assert_true(q_gguf_get_str(m.g, "qtune.generator", s, sizeof(s)));
    assert_string_equal(s, "qtune sample");
    assert_true(q_gguf_get_str(m.g, "tokenizer.ggml.model", s, sizeof(s)));
    assert_string_equal(s, "llama");
    assert_int_equal(get_kv(&m, "qtune.seed", Q_GGUF_U64)->v.u64, 0x123456789abcull);

    static const struct {
        const char *key;
        int64_t want;
    } u32s[] = {
        {"general.file_type", 1},
        {"llama.context_length", 256},
        {"llama.embedding_length", 64},
        {"llama.block_count", 2},
        {"llama.feed_forward_length", 128},
        {"llama.rope.dimension_count", 16},
        {"llama.attention.head_count", 4},
        {"llama.attention.head_count_kv", 2},
        {"llama.vocab_size", 300},
        {"tokenizer.ggml.unknown_token_id", 0},
        {"tokenizer.ggml.bos_token_id", 1},
        {"tokenizer.ggml.eos_token_id", 2},
    };
    for (size_t i = 0; i < sizeof(u32s) / sizeof(*u32s); i++) {
        get_kv(&m, u32s[i].key, Q_GGUF_U32);
        if (get_int(&m, u32s[i].key) != u32s[i].want)
            fail_msg("%s = %lld, want %lld", u32s[i].key, (long long)get_int(&m, u32s[i].key),
                     (long long)u32s[i].want);
    }
    double f;
    get_kv(&m, "llama.attention.layer_norm_rms_epsilon", Q_GGUF_F32);
    assert_true(q_gguf_get_f64(m.g, "llama.attention.layer_norm_rms_epsilon", &f));
    assert_float_equal(f, 1e-5, 1e-11);
    get_kv(&m, "llama.rope.freq_base", Q_GGUF_F32);
    assert_true(q_gguf_get_f64(m.g, "llama.rope.freq_base", &f));
    assert_float_equal(f, 10000.0, 0.0);

    /* vocabulary: <unk> <s> </s>, <0x00>..<0xFF>, unique word pieces */
    const q_gguf_kv *tok = get_kv(&m, "tokenizer.ggml.tokens", Q_GGUF_ARRAY);
    const q_gguf_kv *sc = get_kv(&m, "tokenizer.ggml.scores", Q_GGUF_ARRAY);
    const q_gguf_kv *ty = get_kv(&m, "tokenizer.ggml.token_type", Q_GGUF_ARRAY);
    assert_int_equal(tok->arr_type, Q_GGUF_STRING);
    assert_int_equal(sc->arr_type, Q_GGUF_F32);
    assert_int_equal(ty->arr_type, Q_GGUF_I32);
    assert_int_equal(tok->arr_n, 300);
    assert_int_equal(sc->arr_n, 300);
    assert_int_equal(ty->arr_n, 300);
    q_gguf_str ts[300];
    for (uint64_t i = 0; i < 300; i++)
        assert_true(q_gguf_arr_str(tok, i, &ts[i]));
    assert_true(str_eq(ts[0], "<unk>"));
    assert_true(str_eq(ts[1], "<s>"));
    assert_true(str_eq(ts[2], "</s>"));
    assert_true(str_eq(ts[3], "<0x00>"));
    assert_true(str_eq(ts[3 + 0x41], "<0x41>"));
    assert_true(str_eq(ts[258], "<0xFF>"));
    assert_true(str_eq(ts[259], "\xe2\x96\x81"));      /* "▁" */
    assert_true(str_eq(ts[260], "\xe2\x96\x81the")); /* "▁the" */
    for (int i = 0; i < 300; i++) {
        assert_true(ts[i].len > 0);
        for (int j = 0; j < i; j++)
            if (ts[i].len == ts[j].len && memcmp(ts[i].ptr, ts[j].ptr, ts[i].len) == 0)
                fail_msg("tokens %d and %d are equal", i, j);
    }
    float prev = INFINITY;
    for (int i = 0; i < 300; i++) {
        int32_t type;
        float score;
        memcpy(&type, ty->arr_data + 4 * i, 4);
        memcpy(&score, sc->arr_data + 4 * i, 4);
        int32_t want = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
        assert_int_equal(type, want);
        if (i >= 259) { /* ordinary pieces: strictly descending scores */
            assert_true(score < prev);
            prev = score;
        }
    }
    model_free(&m);
}

/* The same values whatever the storage type: F16 file == F32 file rounded. */
static void test_f32_matches_f16(void **state)
{
    (void)state;
    an_synth_cfg c;
    tiny_cfg(&c);
    model a, b;
    model_make(&a, &c, "h.gguf");
    c.dtype = Q_DT_F32;
    model_make(&b, &c, "f.gguf");
    assert_int_equal(get_int(&b, "general.file_type"), 0);
    assert_int_equal(a.g->n_tensors, b.g->n_tensors);
    for (uint64_t i = 0; i < a.g->n_tensors; i++) {
        const q_gguf_tensor *ta = &a.g->tensors[i], *tb = &b.g->tensors[i];
        int64_t n = ta->ne[0] * ta->ne[1];
        if (ta->n_dims == 1) {
            assert_int_equal(tb->type, Q_DT_F32);
            assert_memory_equal(ta->data, tb->data, (size_t)n * 4);
            continue;
        }
        assert_int_equal(tb->type, Q_DT_F32);
        for (int64_t e = 0; e < n; e++) {
            uint16_t h;
            float x;
            memcpy(&h, ta->data + 2 * e, 2);
            memcpy(&x, tb->data + 4 * e, 4);
            if (q_f32_to_f16(x) != h)
                fail_msg("tensor %llu element %lld differs", (unsigned long long)i, (long long)e);
        }
    }
    model_free(&a);
    model_free(&b);
}

/* token_embd is 8192 x 256 = 2M elements, more than one 1M-element chunk, so
 * the write pipeline runs across chunks. */
static void test_determinism(void **state)
{
    (void)state;
    an_synth_cfg c;
    an_synth_defaults(&c);
    c.layers = 1;
    c.ff = 512;
    c.vocab = 8192;
    c.seed = 7;
    char p1[512], p2[512], p3[512], p4[512];
    path_in_tmp(p1, sizeof(p1), "d1.gguf");
    path_in_tmp(p2, sizeof(p2), "d2.gguf");
    path_in_tmp(p3, sizeof(p3), "d3.gguf");
    path_in_tmp(p4, sizeof(p4), "d4.gguf");
    q_err err;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(an_synth_write(&c, p1, &err), Q_OK);
    omp_set_num_threads(2);
    assert_int_equal(an_synth_write(&c, p2, &err), Q_OK);
    omp_set_num_threads(3);
    assert_int_equal(an_synth_write(&c, p3, &err), Q_OK);
    omp_set_num_threads(saved);
    assert_true(files_equal(p1, p2));
    assert_true(files_equal(p1, p3));
    c.seed = 8;
    assert_int_equal(an_synth_write(&c, p4, &err), Q_OK);
    assert_false(files_equal(p1, p4));

    /* different seeds: every matrix differs, not just the seed key */
    model a, b;
    c.seed = 7;
    c.vocab = 300;
    model_make(&a, &c, "s7.gguf");
    c.seed = 8;
    model_make(&b, &c, "s8.gguf");
    for (uint64_t i = 0; i < a.g->n_tensors; i++) {
        const q_gguf_tensor *ta = &a.g->tensors[i], *tb = &b.g->tensors[i];
        int64_t n = ta->ne[0] * ta->ne[1], diff = 0;
        float *x = tensor_f32(ta), *y = tensor_f32(tb);
        for (int64_t e = 0; e < n; e++)
            diff += x[e] != y[e];
        if (diff < n * 9 / 10) /* t draws are continuous: ties are rare */
            fail_msg("tensor %llu: only %lld of %lld values differ between seeds",
                     (unsigned long long)i, (long long)diff, (long long)n);
        free(x);
        free(y);
    }
    model_free(&a);
    model_free(&b);
}

typedef struct colstat {
    double rms, absmax;
    int64_t col;
} colstat;

static int colstat_desc(const void *a, const void *b)
{
    double x = ((const colstat *)a)->rms, y = ((const colstat *)b)->rms;
    return x < y ? 1 : x > y ? -1 : 0;
}

static double median_of(double *v, int64_t n)
{
    for (int64_t i = 1; i < n; i++) /* insertion sort: n is small */
        for (int64_t j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

/* Column statistics of a rows x cols matrix, sorted by RMS, descending. */
static colstat *column_stats(const float *v, int64_t rows, int64_t cols)
{
    colstat *cs = calloc((size_t)cols, sizeof(*cs));
    assert_non_null(cs);
    for (int64_t c = 0; c < cols; c++) {
        double s2 = 0, mx = 0;
        for (int64_t r = 0; r < rows; r++) {
            double x = v[r * cols + c];
            s2 += x * x;
            mx = fabs(x) > mx ? fabs(x) : mx;
        }
        cs[c] = (colstat){sqrt(s2 / (double)rows), mx, c};
    }
    qsort(cs, (size_t)cols, sizeof(*cs), colstat_desc);
    return cs;
}

/* Four planted columns (cols >= 64): RMS >= 5x the median column (gains are
 * 8..20), the fifth column <= 3x; absmax of the planted ones >= 3x median. */
static void check_outliers(const float *v, int64_t rows, int64_t cols, int64_t *top4)
{
    colstat *cs = column_stats(v, rows, cols);
    double *tmp = malloc((size_t)cols * sizeof(double));
    assert_non_null(tmp);
    for (int64_t c = 0; c < cols; c++)
        tmp[c] = cs[c].rms;
    double med_rms = median_of(tmp, cols);
    for (int64_t c = 0; c < cols; c++)
        tmp[c] = cs[c].absmax;
    double med_max = median_of(tmp, cols);
    for (int i = 0; i < 4; i++) {
        if (cs[i].rms < 5 * med_rms || cs[i].absmax < 3 * med_max)
            fail_msg("outlier %d (col %lld): rms %g absmax %g, medians %g %g", i,
                     (long long)cs[i].col, cs[i].rms, cs[i].absmax, med_rms, med_max);
        top4[i] = cs[i].col;
    }
    if (cs[4].rms > 3 * med_rms)
        fail_msg("fifth column rms %g vs median %g", cs[4].rms, med_rms);
    for (int i = 0; i < 4; i++) /* sorted, to compare sets */
        for (int j = i + 1; j < 4; j++)
            if (top4[j] < top4[i]) {
                int64_t t = top4[i];
                top4[i] = top4[j];
                top4[j] = t;
            }
    free(tmp);
    free(cs);
}

static void test_statistics(void **state)
{
    (void)state;
    an_synth_cfg c;
    an_synth_defaults(&c);
    c.layers = 2;
    c.dtype = Q_DT_F32;
    model m;
    model_make(&m, &c, "stats.gguf");

    /* blk.0.attn_q: 256 x 256 */
    const q_gguf_tensor *t = tensor(&m, "blk.0.attn_q.weight");
    int64_t rows = t->ne[1], cols = t->ne[0];
    float *v = tensor_f32(t);
    int64_t q_out[4], up_out[4], down_out[4], emb_out[4];
    check_outliers(v, rows, cols, q_out);

    /* Without the outlier columns, each row divided by its RMS: mean ~ 0, and
     * t_5 tails: kurtosis 9 in theory (sample values of ~6..9 at this size;
     * a normal gives 3), P(|x| > 3.123) = 1% (a normal gives 0.18%). */
    double s1 = 0, s2 = 0, s4 = 0, n = 0, tail = 0;
    double *row_rms = malloc((size_t)rows * sizeof(double));
    assert_non_null(row_rms);
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0, k = 0;
        for (int64_t col = 0; col < cols; col++) {
            bool out = false;
            for (int i = 0; i < 4; i++)
                out = out || q_out[i] == col;
            if (!out) {
                ss += (double)v[r * cols + col] * v[r * cols + col];
                k++;
            }
        }
        double rms = sqrt(ss / k);
        row_rms[r] = rms;
        for (int64_t col = 0; col < cols; col++) {
            bool out = false;
            for (int i = 0; i < 4; i++)
                out = out || q_out[i] == col;
            if (out)
                continue;
            double x = v[r * cols + col] / rms;
            s1 += x;
            s2 += x * x;
            s4 += x * x * x * x;
            tail += fabs(x) > 3.123;
            n++;
        }
    }
    double mean = s1 / n, var = s2 / n - mean * mean;
    double kurt = (s4 / n) / (var * var);
    assert_true(fabs(mean) < 0.02); /* std error ~ 0.004 */
    if (kurt < 4.5 || kurt > 15)
        fail_msg("kurtosis %g outside 4.5..15", kurt);
    double frac = tail / n;
    if (frac < 0.007 || frac > 0.0135)
        fail_msg("P(|x| > 3.123) = %g, want 0.01 (0.007..0.0135)", frac);
    /* the raw matrix is heavier still: per-row scales and outliers */
    double rs2 = 0, rs4 = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
        rs2 += (double)v[i] * v[i];
        rs4 += (double)v[i] * v[i] * v[i] * v[i];
    }
    double nn = (double)(rows * cols);
    assert_true((rs4 / nn) / ((rs2 / nn) * (rs2 / nn)) > kurt);
    /* scale 1/sqrt(cols) times a log-normal: the median row RMS is near
     * sqrt(5/3) / 16 = 0.081 (t_5 variance 5/3), sigma 0.3 spreads them */
    double med = median_of(row_rms, rows);
    if (med < 0.065 || med > 0.1)
        fail_msg("median row rms %g, want ~0.081", med);
    if (row_rms[rows - 1] / row_rms[0] < 1.5)
        fail_msg("row scales do not vary: %g..%g", row_rms[0], row_rms[rows - 1]);
    free(row_rms);
    free(v);

    /* residual-stream inputs share their outlier channels; ffn_down (input
     * ff = 768) has its own */
    v = tensor_f32(tensor(&m, "blk.1.ffn_up.weight"));
    check_outliers(v, 768, 256, up_out);
    free(v);
    v = tensor_f32(tensor(&m, "token_embd.weight"));
    check_outliers(v, 1024, 256, emb_out);
    free(v);
    v = tensor_f32(tensor(&m, "blk.0.ffn_down.weight"));
    check_outliers(v, 256, 768, down_out);
    free(v);
    assert_memory_equal(q_out, up_out, sizeof(q_out));
    assert_memory_equal(q_out, emb_out, sizeof(q_out));

    /* norms: 1 + 0.05 N(0,1), one or two entries in [2.5, 6) */
    for (int l = 0; l < 2; l++) {
        char name[64];
        snprintf(name, sizeof(name), "blk.%d.ffn_norm.weight", l);
        v = tensor_f32(tensor(&m, name));
        int big = 0;
        double sum = 0;
        for (int i = 0; i < 256; i++) {
            if (v[i] >= 2.5f && v[i] < 6.0f) {
                big++;
            } else {
                assert_true(v[i] > 0.7f && v[i] < 1.3f); /* 6 sigma */
                sum += v[i];
            }
        }
        assert_true(big >= 1 && big <= 2);
        assert_true(fabs(sum / (256 - big) - 1.0) < 0.02);
        free(v);
    }
    model_free(&m);
}

static void expect_invalid(const an_synth_cfg *c, const char *needle)
{
    q_err err = {{0}};
    assert_int_equal(an_synth_validate(c, &err), Q_EUSAGE);
    if (!strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
    char path[512];
    path_in_tmp(path, sizeof(path), "invalid.gguf");
    memset(&err, 0, sizeof(err));
    assert_int_equal(an_synth_write(c, path, &err), Q_EUSAGE);
    assert_true(strstr(err.msg, needle) != NULL);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(an_synth_params(c), 0);
    assert_int_equal(an_synth_data_bytes(c), 0);
}

static void test_validation(void **state)
{
    (void)state;
    int before = count_dir_entries();
    an_synth_cfg c;
#define BAD(field, value, needle) \
    do {                          \
        an_synth_defaults(&c);    \
        c.field = value;          \
        expect_invalid(&c, needle); \
    } while (0)
    BAD(dim, 0, "dim must be");
    BAD(dim, -256, "dim must be");
    BAD(dim, 100, "not divisible by heads");
    BAD(dim, (int64_t)1 << 20, "dim must be");
    BAD(layers, 0, "layers must be");
    BAD(layers, 100000, "layers must be");
    BAD(ff, 0, "ff must be");
    BAD(heads, 0, "heads must be");
    BAD(heads, 512, "heads must be"); /* more heads than dim */
    BAD(kv_heads, 3, "not divisible by kv-heads");
    BAD(kv_heads, 16, "kv-heads must be");
    BAD(kv_heads, 0, "kv-heads must be");
    BAD(vocab, 258, "vocab must be");
    BAD(vocab, INT64_MAX, "vocab must be");
    BAD(ctx, 0, "ctx must be");
    BAD(dtype, Q_DT_Q4_K, "Q4_K");
    BAD(dtype, Q_DT_BF16, "BF16");
    an_synth_defaults(&c);
    c.dim = 24; /* head size 3 */
    expect_invalid(&c, "even");
    an_synth_defaults(&c);
    c.dim = AN_SYNTH_MAX_DIM;
    c.ff = AN_SYNTH_MAX_FF;
    c.layers = AN_SYNTH_MAX_LAYERS;
    c.vocab = AN_SYNTH_MAX_VOCAB;
    expect_invalid(&c, "too large");
#undef BAD
    /* the smallest legal model */
    an_synth_defaults(&c);
    c.dim = 2;
    c.heads = 1;
    c.kv_heads = 1;
    c.ff = 1;
    c.layers = 1;
    c.vocab = 259;
    c.ctx = 1;
    model m;
    model_make(&m, &c, "smallest.gguf");
    assert_int_equal(m.g->n_tensors, 12);
    model_free(&m);
    assert_int_equal(count_dir_entries(), before + 1);
}

typedef struct prog {
    int calls, cancel_at;
    uint64_t last_done, last_total;
} prog;

static int on_progress(void *ctx, uint64_t done, uint64_t total)
{
    prog *p = ctx;
    assert_true(done <= total);
    assert_true(done > p->last_done); /* strictly increasing */
    p->last_done = done;
    p->last_total = total;
    return ++p->calls == p->cancel_at;
}

/* Failures leave nothing behind: an unwritable path, and a cancelled write. */
static void test_failures_leave_nothing(void **state)
{
    (void)state;
    int before = count_dir_entries();
    an_synth_cfg c;
    an_synth_defaults(&c);
    q_err err = {{0}};
    char path[512];
    path_in_tmp(path, sizeof(path), "no/such/dir/x.gguf");
    assert_int_equal(an_synth_write(&c, path, &err), Q_ECANTCREAT);
    assert_true(strlen(err.msg) > 0);

    prog pr = {.cancel_at = 3};
    c.progress = on_progress;
    c.progress_ctx = &pr;
    path_in_tmp(path, sizeof(path), "cancelled.gguf");
    memset(&err, 0, sizeof(err));
    assert_int_equal(an_synth_write(&c, path, &err), Q_ECANCELLED);
    assert_int_equal(pr.calls, 3);
    assert_true(strstr(err.msg, "cancelled.gguf") != NULL);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(count_dir_entries(), before);

    /* uncancelled, progress ends exactly at the total */
    pr = (prog){.cancel_at = -1};
    assert_int_equal(an_synth_write(&c, path, &err), Q_OK);
    assert_true(pr.calls > 3);
    assert_int_equal(pr.last_done, an_synth_data_bytes(&c));
    assert_int_equal(pr.last_total, an_synth_data_bytes(&c));
    assert_int_equal(count_dir_entries(), before + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_f32_matches_f16),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_statistics),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_failures_leave_nothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
