/* test_imatrix.c — q_imatrix: the real llama.cpp imatrix files in $QTUNE_MODELS
 * (legacy .dat and its GGUF conversion must agree entry by entry; spot values
 * recomputed here from the raw bytes), small valid files of both formats built
 * here, every malformed case the reader must refuse (built on the fly, written
 * to a temporary directory) and a truncation sweep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "q_dtype.h"
#include "q_gguf.h"
#include "q_imatrix.h"

/* ---- helpers ---- */

static char tmpdir[256];
static int file_no;

static const char *models_dir(void)
{
    const char *d = getenv("QTUNE_MODELS");
    return d && d[0] ? d : "../shared/models";
}

/* Byte builder. */
typedef struct bb {
    uint8_t *p;
    size_t len, cap;
} bb;

static void bb_put(bb *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void bb_i32(bb *b, int32_t v)
{
    uint8_t t[4];
    for (int i = 0; i < 4; i++)
        t[i] = (uint8_t)((uint32_t)v >> (8 * i));
    bb_put(b, t, 4);
}

static void bb_f32(bb *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    bb_i32(b, (int32_t)u);
}

static void bb_name(bb *b, const char *s)
{
    bb_i32(b, (int32_t)strlen(s));
    bb_put(b, s, strlen(s));
}

/* One legacy entry with nval values v0, v0+1, ... */
static void bb_entry(bb *b, const char *name, int32_t ncall, int32_t nval, float v0)
{
    bb_name(b, name);
    bb_i32(b, ncall);
    bb_i32(b, nval);
    for (int32_t i = 0; i < nval; i++)
        bb_f32(b, v0 + (float)i);
}

static char *write_tmp(const void *p, size_t n)
{
    char *path = malloc(512);
    assert_non_null(path);
    snprintf(path, 512, "%s/f%d.bin", tmpdir, file_no++);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (n)
        assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
    return path;
}

/* Loads bytes as a file; expects Q_EDATA with a message "PATH: offset OFF: ..."
 * containing phrase. */
static void expect_bad(const void *p, size_t n, uint64_t off, const char *phrase)
{
    char *path = write_tmp(p, n);
    q_imatrix *im = (q_imatrix *)1;
    q_err err;
    memset(&err, 0, sizeof err);
    q_status st = q_imatrix_load(path, &im, &err);
    char want[600];
    snprintf(want, sizeof want, "%s: offset %" PRIu64 ": ", path, off);
    if (st != Q_EDATA || im != NULL || strncmp(err.msg, want, strlen(want)) != 0 ||
        !strstr(err.msg, phrase)) {
        print_error("status %d, message '%s'; wanted prefix '%s' and '%s'\n", (int)st, err.msg,
                    want, phrase);
        fail();
    }
    unlink(path);
    free(path);
}

static q_imatrix *expect_ok(const void *p, size_t n)
{
    char *path = write_tmp(p, n);
    q_imatrix *im = NULL;
    q_err err;
    memset(&err, 0, sizeof err);
    q_status st = q_imatrix_load(path, &im, &err);
    if (st != Q_OK) {
        print_error("load failed: %s\n", err.msg);
        fail();
    }
    assert_non_null(im);
    assert_string_equal(im->path, path);
    unlink(path);
    free(path);
    return im;
}

static uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static float ldf(const uint8_t *p)
{
    uint32_t u = ld32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)sz + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    *n = (size_t)sz;
    return p;
}

static int setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_imatrix.XXXXXX", t && t[0] ? t : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rmdir(tmpdir);
}

/* ---- real files ---- */

static void test_real_dat_and_gguf(void **state)
{
    (void)state;
    char dat[512], gg[512];
    snprintf(dat, sizeof dat, "%s/calcuis_imatrix.dat", models_dir());
    snprintf(gg, sizeof gg, "%s/calcuis_imatrix-from-dat.imatrix.gguf", models_dir());
    if (access(dat, R_OK) != 0 || access(gg, R_OK) != 0) {
        skip();
    }
    q_imatrix *a = NULL, *b = NULL;
    q_err err;
    if (q_imatrix_load(dat, &a, &err) != Q_OK) {
        print_error("%s\n", err.msg);
        fail();
    }
    if (q_imatrix_load(gg, &b, &err) != Q_OK) {
        print_error("%s\n", err.msg);
        fail();
    }
    assert_int_equal(a->n_entries, 154);
    assert_int_equal(b->n_entries, 154);
    assert_int_equal(a->chunk_count, 365);
    assert_int_equal(b->chunk_count, 365);
    assert_non_null(a->dataset);
    assert_string_equal(a->dataset, "imatrix-training-full-3");
    assert_non_null(b->dataset);
    assert_string_equal(b->dataset, "imatrix-training-full-3");

    /* Same names, sizes and importances (in_sum2/counts vs stored/ncall: two
     * float roundings each side, relative 1e-6). */
    double worst = 0.0;
    for (int64_t i = 0; i < a->n_entries; i++) {
        const q_imatrix_entry *ea = &a->entries[i];
        const q_imatrix_entry *eb = q_imatrix_find(b, ea->name);
        assert_non_null(eb);
        assert_ptr_equal(q_imatrix_find(a, ea->name), ea);
        assert_true(ea->n == 2048 || ea->n == 5632);
        assert_int_equal(ea->n, eb->n);
        assert_int_equal(ea->n_mat, 1);
        assert_int_equal(eb->n_mat, 1);
        assert_int_equal(ea->ncall, 365);
        assert_int_equal(eb->ncall, 365);
        for (int64_t j = 0; j < ea->n; j++) {
            double x = ea->values[j], y = eb->values[j];
            assert_true(isfinite(x) && x >= 0.0);
            double rel = fabs(x - y) / fmax(fabs(x), 1e-30);
            worst = fmax(worst, rel);
        }
    }
    assert_true(worst <= 1e-6);
    assert_null(q_imatrix_find(a, "no.such.tensor"));

    /* Spot values from the raw .dat bytes: entries 0, 77 and 153, values 0,
     * 1 and the last, each stored float / (float)ncall, bit for bit. */
    size_t n;
    uint8_t *raw = slurp(dat, &n);
    assert_non_null(raw);
    size_t off = 4;
    assert_int_equal((int32_t)ld32(raw), 154);
    for (int i = 0; i < 154; i++) {
        int32_t len = (int32_t)ld32(raw + off);
        char name[128];
        assert_true(len > 0 && len < 128);
        memcpy(name, raw + off + 4, (size_t)len);
        name[len] = '\0';
        off += 4 + (size_t)len;
        int32_t ncall = (int32_t)ld32(raw + off), nval = (int32_t)ld32(raw + off + 4);
        off += 8;
        assert_string_equal(a->entries[i].name, name);
        if (i == 0 || i == 77 || i == 153) {
            const int32_t js[3] = {0, 1, nval - 1};
            for (int k = 0; k < 3; k++) {
                float want = ldf(raw + off + 4 * (size_t)js[k]) / (float)ncall;
                assert_true(a->entries[i].values[js[k]] == want);
            }
        }
        off += 4 * (size_t)nval;
    }
    assert_int_equal((int32_t)ld32(raw + off), 365); /* last_chunk */
    free(raw);

    /* Spot values from the GGUF bytes (through the GGUF reader, not q_imatrix):
     * in_sum2[j] / counts[0] for the same three entries. */
    raw = slurp(gg, &n);
    assert_non_null(raw);
    q_gguf *g = NULL;
    assert_int_equal(q_gguf_parse(raw, n, gg, &g, &err), Q_OK);
    const int picks[3] = {0, 77, 153};
    for (int k = 0; k < 3; k++) {
        const q_imatrix_entry *e = &a->entries[picks[k]];
        char nm[160];
        snprintf(nm, sizeof nm, "%s.in_sum2", e->name);
        int64_t ts = q_gguf_find_tensor(g, nm);
        snprintf(nm, sizeof nm, "%s.counts", e->name);
        int64_t tc = q_gguf_find_tensor(g, nm);
        assert_true(ts >= 0 && tc >= 0);
        float cnt = ldf(g->tensors[tc].data);
        assert_true(cnt == 365.0f * 512.0f);
        const q_imatrix_entry *f = q_imatrix_find(b, e->name);
        for (int64_t j = 0; j < e->n; j += 997) {
            float want = ldf(g->tensors[ts].data + 4 * j) / cnt;
            assert_true(f->values[j] == want);
        }
    }
    q_gguf_free(g);
    free(raw);
    q_imatrix_free(a);
    q_imatrix_free(b);
}

/* ---- small valid .dat ---- */

static void test_dat_valid(void **state)
{
    (void)state;
    bb b = {0};
    bb_i32(&b, 3);
    bb_entry(&b, "blk.0.attn_q.weight", 4, 8, 1.0f);
    bb_entry(&b, "blk.0.ffn_down.weight", 0, 3, 0.5f); /* ncall 0: kept as stored */
    bb_entry(&b, "blk.0.ffn_gate_exps.weight", 3, 12, 0.0f);
    size_t body = b.len;
    bb_i32(&b, 17);
    bb_name(&b, "calib.txt");
    q_imatrix *im = expect_ok(b.p, b.len);
    assert_int_equal(im->n_entries, 3);
    assert_int_equal(im->chunk_count, 17);
    assert_string_equal(im->dataset, "calib.txt");
    const q_imatrix_entry *e = q_imatrix_find(im, "blk.0.attn_q.weight");
    assert_non_null(e);
    assert_true(e->n == 8 && e->n_mat == 1 && e->ncall == 4);
    for (int j = 0; j < 8; j++)
        assert_true(e->values[j] == (1.0f + (float)j) / 4.0f);
    e = q_imatrix_find(im, "blk.0.ffn_down.weight");
    assert_true(e->n == 3 && e->ncall == 0 && e->values[2] == 2.5f);
    e = &im->entries[2];
    assert_string_equal(e->name, "blk.0.ffn_gate_exps.weight");
    assert_true(e->n == 12 && e->values[11] == 11.0f / 3.0f);
    q_imatrix_free(im);

    /* No tail at all; last_chunk only; empty dataset name. */
    im = expect_ok(b.p, body);
    assert_true(im->chunk_count == 0 && im->dataset == NULL);
    q_imatrix_free(im);
    im = expect_ok(b.p, body + 4);
    assert_true(im->chunk_count == 17 && im->dataset == NULL);
    q_imatrix_free(im);
    b.len = body + 4;
    bb_i32(&b, 0);
    im = expect_ok(b.p, b.len);
    assert_true(im->chunk_count == 17 && im->dataset == NULL);
    q_imatrix_free(im);
    free(b.p);
}

/* ---- malformed .dat ---- */

static void test_dat_malformed(void **state)
{
    (void)state;
    bb b = {0};
    expect_bad("", 0, 0, "entry count");
    expect_bad("\1\0\0", 3, 0, "entry count");
    bb_i32(&b, 0);
    expect_bad(b.p, b.len, 0, "not positive");
    b.len = 0;
    bb_i32(&b, -1);
    expect_bad(b.p, b.len, 0, "not positive");
    b.len = 0;
    bb_i32(&b, INT32_MAX); /* 2^31 - 1 entries in 21 bytes */
    bb_entry(&b, "a", 1, 1, 1.0f);
    expect_bad(b.p, b.len, 0, "exceeds what the file can hold");

    struct {
        int32_t len;
        const char *phrase;
    } lens[] = {{0, "not positive"}, {-1, "not positive"}, {INT32_MIN, "not positive"},
                {INT32_MAX, "runs past the end"}, {64, "runs past the end"}};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        b.len = 0;
        bb_i32(&b, 1);
        bb_i32(&b, lens[i].len);
        bb_put(&b, "abcd", 4);
        bb_i32(&b, 1);
        bb_i32(&b, 1);
        bb_f32(&b, 1.0f);
        expect_bad(b.p, b.len, 4, lens[i].phrase);
    }
    /* NUL inside a name. */
    b.len = 0;
    bb_i32(&b, 1);
    bb_i32(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_i32(&b, 1);
    bb_i32(&b, 1);
    bb_f32(&b, 1.0f);
    expect_bad(b.p, b.len, 8, "NUL");
    /* ncall negative; nval 0, negative, near 2^31, past the end. */
    b.len = 0;
    bb_i32(&b, 1);
    bb_entry(&b, "x", -1, 1, 1.0f);
    expect_bad(b.p, b.len, 9, "ncall -1");
    const int32_t nvals[4] = {0, -5, INT32_MAX, 2};
    for (int i = 0; i < 4; i++) {
        b.len = 0;
        bb_i32(&b, 1);
        bb_name(&b, "x");
        bb_i32(&b, 1);
        bb_i32(&b, nvals[i]);
        bb_f32(&b, 1.0f);
        expect_bad(b.p, b.len, 13, i < 2 ? "not a positive count" : "past the end");
    }
    /* Values: NaN, infinite, negative (offset of the bad float). */
    const float badv[3] = {NAN, INFINITY, -1.0f};
    const char *badp[3] = {"NaN", "infinite", "negative"};
    for (int i = 0; i < 3; i++) {
        b.len = 0;
        bb_i32(&b, 1);
        bb_entry(&b, "x", 1, 3, 1.0f);
        uint32_t u;
        memcpy(&u, &badv[i], 4);
        for (int k = 0; k < 4; k++)
            b.p[21 + k] = (uint8_t)(u >> (8 * k)); /* value 1 is at offset 21 */
        expect_bad(b.p, b.len, 21, badp[i]);
    }
    /* Duplicate names: reported at the second one's name. */
    b.len = 0;
    bb_i32(&b, 3);
    bb_entry(&b, "dup", 1, 1, 1.0f);
    bb_entry(&b, "other", 1, 1, 1.0f);
    bb_entry(&b, "dup", 1, 1, 1.0f);
    expect_bad(b.p, b.len, 4 + 19 + 21 + 4, "duplicate entry name 'dup'");
    /* Tail problems. */
    b.len = 0;
    bb_i32(&b, 1);
    bb_entry(&b, "x", 1, 1, 1.0f);
    size_t body = b.len;
    bb_put(&b, "\1\2", 2);
    expect_bad(b.p, b.len, body, "too few for the last-chunk count");
    b.len = body;
    bb_i32(&b, -3);
    expect_bad(b.p, b.len, body, "last chunk -3 is negative");
    b.len = body;
    bb_i32(&b, 5);
    bb_put(&b, "\7", 1);
    expect_bad(b.p, b.len, body + 4, "dataset name length");
    b.len = body;
    bb_i32(&b, 5);
    bb_i32(&b, -1);
    expect_bad(b.p, b.len, body + 4, "is negative");
    b.len = body;
    bb_i32(&b, 5);
    bb_i32(&b, 100);
    bb_put(&b, "abc", 3);
    expect_bad(b.p, b.len, body + 4, "runs past the end");
    b.len = body;
    bb_i32(&b, 5);
    bb_i32(&b, 3);
    bb_put(&b, "a\0c", 3);
    expect_bad(b.p, b.len, body + 8, "NUL");
    b.len = body;
    bb_i32(&b, 5);
    bb_name(&b, "abc");
    bb_put(&b, "zz", 2);
    expect_bad(b.p, b.len, body + 11, "2 unexpected bytes");
    free(b.p);
}

/* Every prefix of a valid file loads only at the three valid lengths (no tail,
 * last_chunk only, complete); all others give Q_EDATA. */
static void test_dat_truncation_sweep(void **state)
{
    (void)state;
    bb b = {0};
    bb_i32(&b, 2);
    bb_entry(&b, "blk.1.attn_k.weight", 2, 5, 3.0f);
    bb_entry(&b, "output.weight", 2, 4, 1.0f);
    size_t body = b.len;
    bb_i32(&b, 9);
    bb_name(&b, "wiki.train.raw");
    for (size_t n = 0; n <= b.len; n++) {
        char *path = write_tmp(b.p, n);
        q_imatrix *im = NULL;
        q_err err;
        q_status st = q_imatrix_load(path, &im, &err);
        bool ok = n == body || n == body + 4 || n == b.len;
        assert_int_equal(st, ok ? Q_OK : Q_EDATA);
        assert_true(ok ? im != NULL : im == NULL);
        if (!ok)
            assert_true(strncmp(err.msg, path, strlen(path)) == 0);
        q_imatrix_free(im);
        unlink(path);
        free(path);
    }
    free(b.p);
    /* A missing file is Q_ENOINPUT. */
    q_imatrix *im = (q_imatrix *)1;
    q_err err;
    char path[600];
    snprintf(path, sizeof path, "%s/does-not-exist.dat", tmpdir);
    assert_int_equal(q_imatrix_load(path, &im, &err), Q_ENOINPUT);
    assert_null(im);
}

/* ---- GGUF ---- */

typedef struct gt {
    const char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
    const float *data; /* nelements floats (F32) or halves below */
} gt;

/* Writes a GGUF with general.type = type (NULL: none), the imatrix keys, and
 * the given tensors; returns the bytes. */
static uint8_t *make_gguf(const char *type, const gt *ts, int nt, size_t *len, bool meta)
{
    q_gguf_w *w = q_gguf_w_new(0);
    assert_non_null(w);
    if (type)
        assert_int_equal(q_gguf_w_set_str(w, "general.type", type), Q_OK);
    if (meta) {
        const char *ds[2] = {"calib-a.txt", "calib-b.txt"};
        assert_int_equal(q_gguf_w_set_arr_str(w, "imatrix.datasets", ds, 2), Q_OK);
        assert_int_equal(q_gguf_w_set_u32(w, "imatrix.chunk_count", 7), Q_OK);
        assert_int_equal(q_gguf_w_set_u32(w, "imatrix.chunk_size", 4), Q_OK);
    }
    for (int i = 0; i < nt; i++)
        assert_int_equal(q_gguf_w_add_tensor(w, ts[i].name, ts[i].n_dims, ts[i].ne, ts[i].type),
                         Q_OK);
    char path[600];
    snprintf(path, sizeof path, "%s/build.gguf", tmpdir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    q_err err;
    assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_OK);
    for (int i = 0; i < nt; i++) {
        int64_t ne = ts[i].ne[0] * ts[i].ne[1] * ts[i].ne[2] * ts[i].ne[3];
        if (ts[i].type == Q_DT_F32) {
            assert_int_equal(q_gguf_w_write_data(w, fp, ts[i].data, (size_t)ne * 4, &err), Q_OK);
        } else { /* F16 */
            uint16_t *h = malloc((size_t)ne * 2);
            assert_non_null(h);
            for (int64_t j = 0; j < ne; j++)
                h[j] = q_f32_to_f16(ts[i].data[j]);
            assert_int_equal(q_gguf_w_write_data(w, fp, h, (size_t)ne * 2, &err), Q_OK);
            free(h);
        }
    }
    assert_int_equal(q_gguf_w_finish(w, &err), Q_OK);
    q_gguf_w_free(w);
    assert_int_equal(fclose(fp), 0);
    uint8_t *p = slurp(path, len);
    assert_non_null(p);
    unlink(path);
    return p;
}

static const float sums6[6] = {2.0f, 4.0f, 6.0f, 10.0f, 20.0f, 30.0f}; /* [3, 2] */
static const float cnt2[2] = {2.0f, 0.0f};                            /* expert 1 unused */
static const float cnt1[1] = {8.0f};
static const float sums4[4] = {8.0f, 16.0f, 0.0f, 4.0f};

static void test_gguf_valid(void **state)
{
    (void)state;
    const float bigc[1] = {2147483648.0f}; /* 2^31 tokens */
    const float bigs[2] = {1073741824.0f, 3.0f};
    gt ts[] = {
        {"blk.0.ffn_up_exps.weight.in_sum2", 2, {3, 2, 1, 1}, Q_DT_F32, sums6},
        {"blk.0.ffn_up_exps.weight.counts", 2, {1, 2, 1, 1}, Q_DT_F32, cnt2},
        {"blk.0.attn_q.weight.in_sum2", 2, {4, 1, 1, 1}, Q_DT_F32, sums4},
        {"blk.0.attn_q.weight.in_sum", 2, {4, 1, 1, 1}, Q_DT_F32, sums4},
        {"blk.0.attn_q.weight.counts", 2, {1, 1, 1, 1}, Q_DT_F32, cnt1},
        {"big.in_sum2", 1, {2, 1, 1, 1}, Q_DT_F32, bigs},
        {"big.counts", 1, {1, 1, 1, 1}, Q_DT_F32, bigc},
        {"unrelated.tensor", 1, {4, 1, 1, 1}, Q_DT_F32, sums4},
    };
    size_t n;
    uint8_t *p = make_gguf("imatrix", ts, 8, &n, true);
    q_imatrix *im = expect_ok(p, n);
    assert_int_equal(im->n_entries, 3);
    assert_int_equal(im->chunk_count, 7);
    assert_string_equal(im->dataset, "calib-a.txt");
    const q_imatrix_entry *e = &im->entries[0];
    assert_string_equal(e->name, "blk.0.ffn_up_exps.weight");
    assert_true(e->n == 3 && e->n_mat == 2);
    /* expert 0: sums / 2; expert 1 saw nothing: 1 (llama-quantize's fill) */
    const float want[6] = {1.0f, 2.0f, 3.0f, 1.0f, 1.0f, 1.0f};
    for (int j = 0; j < 6; j++)
        assert_true(e->values[j] == want[j]);
    assert_int_equal(e->ncall, 0); /* max count 2 / chunk size 4 */
    e = q_imatrix_find(im, "blk.0.attn_q.weight");
    assert_non_null(e);
    assert_true(e->n == 4 && e->n_mat == 1 && e->ncall == 2);
    assert_true(e->values[0] == 1.0f && e->values[1] == 2.0f && e->values[2] == 0.0f &&
                e->values[3] == 0.5f);
    e = q_imatrix_find(im, "big");
    assert_true(e->values[0] == 0.5f && e->values[1] == 3.0f / 2147483648.0f);
    assert_int_equal(e->ncall, 536870912);
    free(p);
    q_imatrix_free(im);

    /* Without general.type and metadata: still read; chunk_count 0, no dataset. */
    p = make_gguf(NULL, ts, 2, &n, false);
    im = expect_ok(p, n);
    assert_true(im->n_entries == 1 && im->chunk_count == 0 && im->dataset == NULL);
    assert_int_equal(im->entries[0].ncall, 2); /* no chunk size: the max count */
    free(p);
    q_imatrix_free(im);
}

/* Offset of the data of tensor idx in a GGUF image (through the reader). */
static uint64_t data_off(const uint8_t *p, size_t n, const char *name)
{
    q_gguf *g = NULL;
    q_err err;
    assert_int_equal(q_gguf_parse(p, n, "x", &g, &err), Q_OK);
    int64_t i = q_gguf_find_tensor(g, name);
    assert_true(i >= 0);
    uint64_t off = g->tensors[i].abs_offset;
    q_gguf_free(g);
    return off;
}

static void gguf_bad(const char *type, const gt *ts, int nt, const char *at_tensor,
                     uint64_t extra, const char *phrase)
{
    size_t n;
    uint8_t *p = make_gguf(type, ts, nt, &n, true);
    uint64_t off = at_tensor ? data_off(p, n, at_tensor) + extra : extra;
    expect_bad(p, n, off, phrase);
    free(p);
}

static void test_gguf_malformed(void **state)
{
    (void)state;
    const float nanc[2] = {2.0f, NAN}, negc[2] = {-1.0f, 2.0f}, frac[2] = {2.0f, 0.5f};
    const float sums_bad[6] = {1.0f, 2.0f, 3.0f, 4.0f, -5.0f, 6.0f};
    const float cnt3[3] = {1.0f, 1.0f, 1.0f};
    const char *S = "e.in_sum2", *C = "e.counts";
    /* Missing partners. */
    gt a1[] = {{S, 2, {3, 2, 1, 1}, Q_DT_F32, sums6}};
    gguf_bad("imatrix", a1, 1, S, 0, "no partner tensor NAME.counts");
    gt a2[] = {{C, 2, {1, 2, 1, 1}, Q_DT_F32, cnt2}, {"f.in_sum2", 1, {4, 1, 1, 1}, Q_DT_F32,
                                                      sums4},
               {"f.counts", 1, {1, 1, 1, 1}, Q_DT_F32, cnt1}};
    gguf_bad("imatrix", a2, 3, C, 0, "no partner tensor NAME.in_sum2");
    gt a3[] = {{"e.in_sum", 2, {3, 2, 1, 1}, Q_DT_F32, sums6}, {C, 2, {1, 2, 1, 1}, Q_DT_F32,
                                                               cnt2}};
    gguf_bad("imatrix", a3, 2, "e.in_sum", 0, "no partner tensor NAME.in_sum2");
    /* Types. */
    gt b1[] = {{S, 2, {3, 2, 1, 1}, Q_DT_F16, sums6}, {C, 2, {1, 2, 1, 1}, Q_DT_F32, cnt2}};
    gguf_bad("imatrix", b1, 2, S, 0, "has type F16, expected F32");
    gt b2[] = {{S, 2, {3, 2, 1, 1}, Q_DT_F32, sums6}, {C, 2, {1, 2, 1, 1}, Q_DT_F16, cnt2}};
    gguf_bad("imatrix", b2, 2, C, 0, "has type F16, expected F32");
    /* Shapes. */
    gt c1[] = {{S, 2, {3, 2, 1, 1}, Q_DT_F32, sums6}, {C, 2, {1, 3, 1, 1}, Q_DT_F32, cnt3}};
    gguf_bad("imatrix", c1, 2, C, 0, "has 3 elements, but its in_sum2 has 2 matrices");
    gt c2[] = {{S, 3, {3, 1, 2, 1}, Q_DT_F32, sums6}, {C, 2, {1, 2, 1, 1}, Q_DT_F32, cnt2}};
    gguf_bad("imatrix", c2, 2, S, 0, "3 dimensions");
    gt c3[] = {{S, 2, {3, 2, 1, 1}, Q_DT_F32, sums6}, {C, 2, {1, 2, 1, 1}, Q_DT_F32, cnt2},
               {"e.in_sum", 1, {4, 1, 1, 1}, Q_DT_F32, sums4}};
    gguf_bad("imatrix", c3, 3, "e.in_sum", 0, "differs in size");
    /* Values. */
    gt d1[] = {{S, 2, {3, 2, 1, 1}, Q_DT_F32, sums6}, {C, 2, {1, 2, 1, 1}, Q_DT_F32, nanc}};
    gguf_bad("imatrix", d1, 2, C, 4, "is NaN");
    gt d2[] = {{S, 2, {3, 2, 1, 1}, Q_DT_F32, sums6}, {C, 2, {1, 2, 1, 1}, Q_DT_F32, negc}};
    gguf_bad("imatrix", d2, 2, C, 0, "is negative");
    gt d3[] = {{S, 2, {3, 2, 1, 1}, Q_DT_F32, sums6}, {C, 2, {1, 2, 1, 1}, Q_DT_F32, frac}};
    gguf_bad("imatrix", d3, 2, C, 4, "not a whole number");
    gt d4[] = {{S, 2, {3, 2, 1, 1}, Q_DT_F32, sums_bad}, {C, 2, {1, 2, 1, 1}, Q_DT_F32, cnt2}};
    gguf_bad("imatrix", d4, 2, S, 16, "is negative");
    /* Not an imatrix. */
    gt e1[] = {{S, 2, {3, 2, 1, 1}, Q_DT_F32, sums6}, {C, 2, {1, 2, 1, 1}, Q_DT_F32, cnt2}};
    size_t n;
    uint8_t *p = make_gguf("model", e1, 2, &n, true);
    expect_bad(p, n, 24, "general.type is 'model', not 'imatrix'");
    free(p);
    gt e2[] = {{"token_embd.weight", 2, {4, 1, 1, 1}, Q_DT_F32, sums4}};
    p = make_gguf(NULL, e2, 1, &n, false);
    expect_bad(p, n, data_off(p, n, "token_embd.weight"), "no NAME.in_sum2 tensors");
    free(p);
    /* Metadata of the wrong type. */
    {
        q_gguf_w *w = q_gguf_w_new(0);
        assert_non_null(w);
        assert_int_equal(q_gguf_w_set_str(w, "imatrix.chunk_count", "seven"), Q_OK);
        assert_int_equal(q_gguf_w_add_tensor(w, S, 1, (const int64_t[]){4}, Q_DT_F32), Q_OK);
        char path[600];
        snprintf(path, sizeof path, "%s/meta.gguf", tmpdir);
        FILE *fp = fopen(path, "wb");
        q_err err;
        assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_OK);
        assert_int_equal(q_gguf_w_write_data(w, fp, sums4, 16, &err), Q_OK);
        q_gguf_w_free(w);
        fclose(fp);
        p = slurp(path, &n);
        unlink(path);
        expect_bad(p, n, 24, "imatrix.chunk_count must be a non-negative integer");
        free(p);
    }
    /* NUL in a tensor name (patched into valid bytes: "eX" -> "e\0"). */
    gt f1[] = {{"eX.in_sum2", 2, {3, 2, 1, 1}, Q_DT_F32, sums6},
               {"eX.counts", 2, {1, 2, 1, 1}, Q_DT_F32, cnt2}};
    p = make_gguf("imatrix", f1, 2, &n, true);
    uint64_t off = data_off(p, n, "eX.in_sum2");
    for (size_t i = 0; i + 2 <= n; i++) {
        if (p[i] == 'e' && p[i + 1] == 'X')
            p[i + 1] = 0;
    }
    expect_bad(p, n, off, "NUL byte in its name");
    free(p);
    /* A truncated GGUF: the GGUF reader's message passes through. */
    p = make_gguf("imatrix", e1, 2, &n, true);
    char *path = write_tmp(p, (size_t)data_off(p, n, C) + 4); /* inside the counts */
    q_imatrix *im = NULL;
    q_err err;
    assert_int_equal(q_imatrix_load(path, &im, &err), Q_EDATA);
    assert_null(im);
    assert_true(strncmp(err.msg, path, strlen(path)) == 0);
    unlink(path);
    free(path);
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_dat_and_gguf),
        cmocka_unit_test(test_dat_valid),
        cmocka_unit_test(test_dat_malformed),
        cmocka_unit_test(test_dat_truncation_sweep),
        cmocka_unit_test(test_gguf_valid),
        cmocka_unit_test(test_gguf_malformed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
