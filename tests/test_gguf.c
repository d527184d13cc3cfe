/* test_gguf.c — GGUF reader and writer: writer→reader round trips, the real
 * models in $QTUNE_MODELS, one test per malformed case (built in memory), a
 * truncation sweep and random byte flips (fixed seed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_rng.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "q_dtype.h"
#include "q_gguf.h"

/* ---- helpers ---- */


/* Byte builder for hand-assembled images. */
typedef struct bb {
    uint8_t *p;
    size_t len, cap;
} bb;

static void bb_put(bb *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) {
            cap *= 2;
        }
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (n) {
        memcpy(b->p + b->len, src, n);
    }
    b->len += n;
}

static void bb_le(bb *b, uint64_t v, int n)
{
    uint8_t t[8];
    for (int i = 0; i < n; i++) {
        t[i] = (uint8_t)(v >> (8 * i));
    }
    bb_put(b, t, (size_t)n);
}

static void bb_u32(bb *b, uint32_t v)
{
    bb_le(b, v, 4);
}

static void bb_u64(bb *b, uint64_t v)
{
    bb_le(b, v, 8);
}

static void bb_str(bb *b, const char *s)
{
    bb_u64(b, strlen(s));
    bb_put(b, s, strlen(s));
}

static void bb_zeros(bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bb_le(b, 0, 1);
    }
}

static void bb_pad(bb *b, size_t align)
{
    bb_zeros(b, (align - b->len % align) % align);
}

static void bb_hdr(bb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    bb_put(b, "GGUF", 4);
    bb_u32(b, version);
    bb_u64(b, n_tensors);
    bb_u64(b, n_kv);
}

static void bb_kv_u32(bb *b, const char *key, uint32_t v)
{
    bb_str(b, key);
    bb_u32(b, Q_GGUF_U32);
    bb_u32(b, v);
}

static void bb_kv_str(bb *b, const char *key, const char *v)
{
    bb_str(b, key);
    bb_u32(b, Q_GGUF_STRING);
    bb_str(b, v);
}

/* Appends a tensor info; returns the offset of its data-offset field. */
static uint64_t bb_tinfo(bb *b, const char *name, uint32_t n_dims, const int64_t *ne,
                         uint32_t type, uint64_t off)
{
    bb_str(b, name);
    bb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) {
        bb_u64(b, (uint64_t)ne[d]);
    }
    bb_u32(b, type);
    uint64_t at = b->len;
    bb_u64(b, off);
    return at;
}

typedef struct tspec {
    const char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
    uint64_t off;
} tspec;

/* Header (v3), one kv, the given tensor infos, padding to 32, data_bytes of data.
 * off_at[i] gets the position of tensor i's offset field. */
static bb img_tensors(const tspec *ts, size_t n, size_t data_bytes, uint64_t *off_at)
{
    bb b = {0};
    bb_hdr(&b, 3, n, 1);
    bb_kv_str(&b, "general.architecture", "llama");
    for (size_t i = 0; i < n; i++) {
        uint64_t at = bb_tinfo(&b, ts[i].name, ts[i].n_dims, ts[i].ne, ts[i].type, ts[i].off);
        if (off_at) {
            off_at[i] = at;
        }
    }
    bb_pad(&b, 32);
    bb_zeros(&b, data_bytes);
    return b;
}

static void expect_edata_(const uint8_t *p, size_t n, uint64_t off, const char *word, int line)
{
    q_gguf *g = NULL;
    q_err err = {{0}};
    q_status st = q_gguf_parse(p, n, "t.gguf", &g, &err);
    char want[64];
    snprintf(want, sizeof want, "t.gguf: offset %" PRIu64 ": ", off);
    if (st != Q_EDATA || strncmp(err.msg, want, strlen(want)) != 0 || !strstr(err.msg, word)) {
        print_error("line %d: status %d, message \"%s\"; want \"%s...%s\"\n", line, (int)st,
                    err.msg, want, word);
        q_gguf_free(g);
        fail();
    }
    assert_null(g);
    assert_null(strchr(err.msg, '\n'));
}
#define expect_edata(b, off, word) expect_edata_((b)->p, (b)->len, (off), (word), __LINE__)

static q_gguf *parse_ok(const uint8_t *p, size_t n)
{
    q_gguf *g = NULL;
    q_err err = {{0}};
    q_status st = q_gguf_parse(p, n, "t.gguf", &g, &err);
    if (st != Q_OK) {
        print_error("parse failed: %s\n", err.msg);
    }
    assert_int_equal(st, Q_OK);
    assert_non_null(g);
    return g;
}

/* Reads every kv and every tensor's first and last byte; returns a checksum. */
static uint64_t touch_all(const q_gguf *g)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const q_gguf_kv *kv = &g->kv[i];
        char *key = malloc((size_t)kv->key.len + 1);
        assert_non_null(key);
        memcpy(key, kv->key.ptr, (size_t)kv->key.len);
        key[kv->key.len] = '\0';
        int64_t iv;
        double dv;
        char s[32];
        sum += (uint64_t)q_gguf_find(g, key);
        sum += q_gguf_get_int(g, key, &iv) ? (uint64_t)iv : 0;
        sum += q_gguf_get_f64(g, key, &dv) ? 1 : 0;
        sum += q_gguf_get_str(g, key, s, sizeof s) ? (uint8_t)s[0] : 0;
        free(key);
        if (kv->type == Q_GGUF_ARRAY && kv->arr_n) {
            if (kv->arr_type == Q_GGUF_STRING) {
                q_gguf_str str;
                for (uint64_t k = 0; k < kv->arr_n; k++) {
                    assert_true(q_gguf_arr_str(kv, k, &str));
                    sum += str.len + (str.len ? (uint8_t)str.ptr[str.len - 1] : 0);
                }
                assert_false(q_gguf_arr_str(kv, kv->arr_n, &str));
            } else {
                size_t esz = q_gguf_vtype_size(kv->arr_type);
                sum += kv->arr_data[0] + kv->arr_data[kv->arr_n * esz - 1];
            }
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const q_gguf_tensor *t = &g->tensors[i];
        if (t->data) {
            assert_true(t->nbytes > 0);
            assert_true(t->abs_offset + t->nbytes <= g->size);
            assert_ptr_equal(t->data, g->base + t->abs_offset);
            assert_int_equal(t->abs_offset % g->alignment, 0);
            sum += t->data[0] + t->data[t->nbytes - 1];
        } else {
            assert_int_equal(t->nbytes, 0);
        }
    }
    return sum;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        return NULL;
    }
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return p;
}

/* ---- writer → reader round trip ---- */

typedef struct wtensor {
    const char *name;
    uint32_t n_dims;
    int64_t ne[4];
    uint32_t type;
    uint64_t nbytes;
    uint8_t *data;
} wtensor;

static wtensor wtensors[] = {
    {"tok.f32", 2, {8, 3, 1, 1}, Q_DT_F32, 96, NULL},
    {"h.f16", 1, {5, 1, 1, 1}, Q_DT_F16, 10, NULL},
    {"q.q8_0", 2, {64, 2, 1, 1}, Q_DT_Q8_0, 4 * 34, NULL},
    {"k.q4_k", 2, {256, 2, 1, 1}, Q_DT_Q4_K, 2 * 144, NULL},
    {"x3", 3, {2, 3, 4, 1}, Q_DT_F32, 96, NULL},
    {"x4", 4, {1, 2, 1, 3}, Q_DT_F16, 12, NULL},
};
#define N_WT (sizeof wtensors / sizeof wtensors[0])

static const char *const astr[] = {"alpha", "", "\xe4\xbd\xa0\xe5\xa5\xbd", "d"};
static const float af32[] = {1.5f, -2.25f, 3e-8f};
static const int32_t ai32[] = {-1, 0, 2147483647, (int32_t)0x80000000};

/* Raw little-endian element bytes of the scalar arrays added with copy_kv. */
static const uint8_t raw8[] = {0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x30};

static q_gguf_kv mk_kv(const char *key, q_gguf_vtype t)
{
    q_gguf_kv kv;
    memset(&kv, 0, sizeof kv);
    kv.key.ptr = key;
    kv.key.len = strlen(key);
    kv.type = t;
    return kv;
}

static void fill_writer(q_gguf_w *w)
{
    assert_int_equal(q_gguf_w_set_str(w, "general.architecture", "llama"), Q_OK);
    assert_int_equal(q_gguf_w_set_u32(w, "t.replace", 1), Q_OK);
    assert_int_equal(q_gguf_w_set_u32(w, "t.u32", 4000000000u), Q_OK);
    assert_int_equal(q_gguf_w_set_i32(w, "t.i32", -123456), Q_OK);
    assert_int_equal(q_gguf_w_set_u64(w, "t.u64", UINT64_MAX), Q_OK);
    assert_int_equal(q_gguf_w_set_f32(w, "t.f32", 1e-5f), Q_OK);
    assert_int_equal(q_gguf_w_set_u32(w, "t.deleted", 9), Q_OK);
    assert_int_equal(q_gguf_w_set_bool(w, "t.bool", true), Q_OK);
    assert_int_equal(q_gguf_w_set_bool(w, "t.bool0", false), Q_OK);
    assert_int_equal(q_gguf_w_set_str(w, "t.str", "h\xc3\xa9llo"), Q_OK);
    assert_int_equal(q_gguf_w_set_str(w, "t.empty", ""), Q_OK);
    assert_int_equal(q_gguf_w_set_arr_str(w, "t.astr", astr, 4), Q_OK);
    assert_int_equal(q_gguf_w_set_arr_str(w, "t.astr0", NULL, 0), Q_OK);
    assert_int_equal(q_gguf_w_set_arr_f32(w, "t.af32", af32, 3), Q_OK);
    assert_int_equal(q_gguf_w_set_arr_i32(w, "t.ai32", ai32, 4), Q_OK);
    /* Types the setters do not cover go through copy_kv. */
    q_gguf_kv kv = mk_kv("t.u8", Q_GGUF_U8);
    kv.v.u64 = 200;
    assert_int_equal(q_gguf_w_copy_kv(w, &kv), Q_OK);
    kv = mk_kv("t.i8", Q_GGUF_I8);
    kv.v.i64 = -5;
    assert_int_equal(q_gguf_w_copy_kv(w, &kv), Q_OK);
    kv = mk_kv("t.u16", Q_GGUF_U16);
    kv.v.u64 = 65535;
    assert_int_equal(q_gguf_w_copy_kv(w, &kv), Q_OK);
    kv = mk_kv("t.i16", Q_GGUF_I16);
    kv.v.i64 = -300;
    assert_int_equal(q_gguf_w_copy_kv(w, &kv), Q_OK);
    kv = mk_kv("t.i64", Q_GGUF_I64);
    kv.v.i64 = INT64_MIN;
    assert_int_equal(q_gguf_w_copy_kv(w, &kv), Q_OK);
    kv = mk_kv("t.f64", Q_GGUF_F64);
    kv.v.f64 = -0.1;
    assert_int_equal(q_gguf_w_copy_kv(w, &kv), Q_OK);
    /* One array of every scalar element type, made from raw8. */
    static const q_gguf_vtype at[] = {Q_GGUF_U8,  Q_GGUF_I8,  Q_GGUF_U16, Q_GGUF_I16,
                                      Q_GGUF_U32, Q_GGUF_I32, Q_GGUF_F32, Q_GGUF_BOOL,
                                      Q_GGUF_U64, Q_GGUF_I64, Q_GGUF_F64};
    static const char *const an[] = {"a.u8",  "a.i8",  "a.u16",  "a.i16", "a.u32", "a.i32",
                                     "a.f32", "a.bool", "a.u64", "a.i64", "a.f64"};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        kv = mk_kv(an[i], Q_GGUF_ARRAY);
        kv.arr_type = at[i];
        kv.arr_n = sizeof raw8 / q_gguf_vtype_size(at[i]);
        kv.arr_data = raw8;
        assert_int_equal(q_gguf_w_copy_kv(w, &kv), Q_OK);
    }
    kv = mk_kv("a.empty", Q_GGUF_ARRAY);
    kv.arr_type = Q_GGUF_U32;
    assert_int_equal(q_gguf_w_copy_kv(w, &kv), Q_OK);
    /* Replace keeps the position; delete removes. */
    assert_int_equal(q_gguf_w_set_str(w, "t.replace", "second"), Q_OK);
    q_gguf_w_del(w, "t.deleted");
    q_gguf_w_del(w, "t.not-there");

    for (size_t i = 0; i < N_WT; i++) {
        assert_int_equal(q_gguf_w_add_tensor(w, wtensors[i].name, wtensors[i].n_dims,
                                             wtensors[i].ne, wtensors[i].type),
                         Q_OK);
    }
}

static const char *const kv_order[] = {
    "general.architecture", "t.replace", "t.u32", "t.i32", "t.u64", "t.f32", "t.bool",
    "t.bool0", "t.str", "t.empty", "t.astr", "t.astr0", "t.af32", "t.ai32", "t.u8", "t.i8",
    "t.u16", "t.i16", "t.i64", "t.f64", "a.u8", "a.i8", "a.u16", "a.i16", "a.u32", "a.i32",
    "a.f32", "a.bool", "a.u64", "a.i64", "a.f64", "a.empty",
};
#define N_KV_ORDER (sizeof kv_order / sizeof kv_order[0])

static void make_tensor_data(void)
{
    rng_state = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < N_WT; i++) {
        free(wtensors[i].data);
        wtensors[i].data = malloc((size_t)wtensors[i].nbytes);
        assert_non_null(wtensors[i].data);
        for (uint64_t k = 0; k < wtensors[i].nbytes; k++) {
            wtensors[i].data[k] = (uint8_t)(rng() >> 24);
        }
    }
}

/* Writes header and data (each tensor in up to three pieces) into memory. */
static uint8_t *write_mem(q_gguf_w *w, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    q_err err = {{0}};
    FILE *fp = open_memstream(&buf, &n);
    assert_non_null(fp);
    assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_OK);
    for (size_t i = 0; i < N_WT; i++) {
        uint64_t a = wtensors[i].nbytes / 3, b2 = wtensors[i].nbytes / 2;
        const uint8_t *d = wtensors[i].data;
        assert_int_equal(q_gguf_w_write_data(w, fp, d, (size_t)a, &err), Q_OK);
        assert_int_equal(q_gguf_w_write_data(w, fp, d + a, (size_t)(b2 - a), &err), Q_OK);
        assert_int_equal(q_gguf_w_write_data(w, fp, d, 0, &err), Q_OK);
        if (i + 1 < N_WT) {
            assert_int_equal(q_gguf_w_finish(w, &err), Q_EUSAGE);
        }
        assert_int_equal(
            q_gguf_w_write_data(w, fp, d + b2, (size_t)(wtensors[i].nbytes - b2), &err), Q_OK);
    }
    assert_int_equal(q_gguf_w_finish(w, &err), Q_OK);
    assert_int_equal(fclose(fp), 0);
    *len = n;
    return (uint8_t *)buf;
}

static void check_roundtrip(const q_gguf *g, uint32_t alignment, size_t len)
{
    char s[64];
    int64_t iv;
    double dv;
    assert_int_equal(g->version, 3);
    assert_int_equal(g->alignment, alignment);
    bool extra = alignment != Q_GGUF_DEFAULT_ALIGNMENT;
    assert_int_equal(g->n_kv, N_KV_ORDER + extra);
    for (size_t i = 0; i < N_KV_ORDER; i++) {
        assert_int_equal(g->kv[i].key.len, strlen(kv_order[i]));
        assert_memory_equal(g->kv[i].key.ptr, kv_order[i], strlen(kv_order[i]));
    }
    if (extra) {
        assert_int_equal(q_gguf_find(g, "general.alignment"), (int64_t)N_KV_ORDER);
        assert_true(q_gguf_get_int(g, "general.alignment", &iv));
        assert_int_equal(iv, alignment);
    } else {
        assert_int_equal(q_gguf_find(g, "general.alignment"), -1);
    }
    assert_int_equal(q_gguf_find(g, "t.deleted"), -1);
    assert_true(q_gguf_get_str(g, "t.replace", s, sizeof s));
    assert_string_equal(s, "second");
    assert_true(q_gguf_get_str(g, "general.architecture", s, sizeof s));
    assert_string_equal(s, "llama");
    assert_true(q_gguf_get_str(g, "general.architecture", s, 3));
    assert_string_equal(s, "ll");
    assert_false(q_gguf_get_str(g, "t.u32", s, sizeof s));
    assert_true(q_gguf_get_str(g, "t.empty", s, sizeof s));
    assert_string_equal(s, "");
    assert_true(q_gguf_get_str(g, "t.str", s, sizeof s));
    assert_string_equal(s, "h\xc3\xa9llo");
    assert_true(q_gguf_get_int(g, "t.u32", &iv));
    assert_int_equal(iv, 4000000000);
    assert_true(q_gguf_get_int(g, "t.i32", &iv));
    assert_int_equal(iv, -123456);
    assert_false(q_gguf_get_int(g, "t.u64", &iv)); /* above INT64_MAX */
    assert_int_equal(g->kv[q_gguf_find(g, "t.u64")].v.u64, UINT64_MAX);
    assert_true(q_gguf_get_f64(g, "t.f32", &dv));
    assert_true(dv == (double)1e-5f);
    assert_false(q_gguf_get_int(g, "t.f32", &iv));
    assert_true(q_gguf_get_int(g, "t.bool", &iv));
    assert_int_equal(iv, 1);
    assert_true(q_gguf_get_int(g, "t.bool0", &iv));
    assert_int_equal(iv, 0);
    assert_true(q_gguf_get_int(g, "t.u8", &iv));
    assert_int_equal(iv, 200);
    assert_true(q_gguf_get_int(g, "t.i8", &iv));
    assert_int_equal(iv, -5);
    assert_true(q_gguf_get_int(g, "t.u16", &iv));
    assert_int_equal(iv, 65535);
    assert_true(q_gguf_get_int(g, "t.i16", &iv));
    assert_int_equal(iv, -300);
    assert_true(q_gguf_get_int(g, "t.i64", &iv));
    assert_true(iv == INT64_MIN);
    assert_true(q_gguf_get_f64(g, "t.f64", &dv));
    assert_true(dv == -0.1);
    assert_true(q_gguf_get_f64(g, "t.i16", &dv));
    assert_true(dv == -300.0);
    assert_false(q_gguf_get_int(g, "missing", &iv));
    assert_false(q_gguf_get_f64(g, "t.str", &dv));

    const q_gguf_kv *kv = &g->kv[q_gguf_find(g, "t.astr")];
    assert_int_equal(kv->type, Q_GGUF_ARRAY);
    assert_int_equal(kv->arr_type, Q_GGUF_STRING);
    assert_int_equal(kv->arr_n, 4);
    for (int pass = 0; pass < 2; pass++) {
        for (int k = pass ? 3 : 0; pass ? k >= 0 : k < 4; k += pass ? -1 : 1) {
            q_gguf_str str;
            assert_true(q_gguf_arr_str(kv, (uint64_t)k, &str));
            assert_int_equal(str.len, strlen(astr[k]));
            assert_memory_equal(str.ptr, astr[k], str.len);
        }
    }
    q_gguf_str str;
    assert_false(q_gguf_arr_str(kv, 4, &str));
    assert_false(q_gguf_arr_str(&g->kv[q_gguf_find(g, "t.af32")], 0, &str));
    kv = &g->kv[q_gguf_find(g, "t.astr0")];
    assert_int_equal(kv->arr_n, 0);
    assert_false(q_gguf_arr_str(kv, 0, &str));
    kv = &g->kv[q_gguf_find(g, "t.af32")];
    assert_int_equal(kv->arr_type, Q_GGUF_F32);
    assert_int_equal(kv->arr_n, 3);
    assert_memory_equal(kv->arr_data, af32, sizeof af32);
    kv = &g->kv[q_gguf_find(g, "t.ai32")];
    assert_int_equal(kv->arr_type, Q_GGUF_I32);
    assert_memory_equal(kv->arr_data, ai32, sizeof ai32);
    for (size_t i = 20; i < 31; i++) {
        kv = &g->kv[i];
        assert_int_equal(kv->type, Q_GGUF_ARRAY);
        assert_int_equal(kv->arr_n * q_gguf_vtype_size(kv->arr_type), sizeof raw8);
        assert_memory_equal(kv->arr_data, raw8, sizeof raw8);
        assert_int_equal(kv->end - kv->offset, 8 + kv->key.len + 4 + 4 + 8 + sizeof raw8);
    }
    kv = &g->kv[q_gguf_find(g, "a.empty")];
    assert_int_equal(kv->arr_type, Q_GGUF_U32);
    assert_int_equal(kv->arr_n, 0);

    assert_int_equal(g->n_tensors, N_WT);
    assert_int_equal(g->data_offset % alignment, 0);
    uint64_t expect_rel = 0;
    for (size_t i = 0; i < N_WT; i++) {
        const q_gguf_tensor *t = &g->tensors[i];
        assert_int_equal(q_gguf_find_tensor(g, wtensors[i].name), (int64_t)i);
        assert_int_equal(t->n_dims, wtensors[i].n_dims);
        for (int d = 0; d < 4; d++) {
            assert_int_equal(t->ne[d], wtensors[i].ne[d]);
        }
        assert_int_equal(t->type, wtensors[i].type);
        assert_int_equal(t->nbytes, wtensors[i].nbytes);
        assert_int_equal(t->rel_offset, expect_rel);
        assert_int_equal(t->abs_offset, g->data_offset + expect_rel);
        assert_memory_equal(t->data, wtensors[i].data, (size_t)t->nbytes);
        uint64_t padded = (t->nbytes + alignment - 1) / alignment * alignment;
        for (uint64_t k = t->nbytes; k < padded; k++) {
            assert_int_equal(t->data[k], 0);
        }
        expect_rel += padded;
    }
    assert_int_equal(q_gguf_find_tensor(g, "nope"), -1);
    assert_int_equal(len, g->data_offset + expect_rel);
}

static void roundtrip(uint32_t alignment)
{
    make_tensor_data();
    q_gguf_w *w = q_gguf_w_new(alignment == 32 ? 0 : alignment);
    assert_non_null(w);
    fill_writer(w);
    size_t len;
    uint8_t *img = write_mem(w, &len);
    q_gguf_w_free(w);
    q_gguf *g = parse_ok(img, len);
    check_roundtrip(g, alignment, len);
    touch_all(g);

    /* Copy every kv (and the tensors) into a second writer: identical bytes. */
    q_gguf_w *w2 = q_gguf_w_new(alignment);
    assert_non_null(w2);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        assert_int_equal(q_gguf_w_copy_kv(w2, &g->kv[i]), Q_OK);
    }
    for (size_t i = 0; i < N_WT; i++) {
        const q_gguf_tensor *t = &g->tensors[i];
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        assert_int_equal(q_gguf_w_add_tensor(w2, name, t->n_dims, t->ne, t->type), Q_OK);
    }
    size_t len2;
    uint8_t *img2 = write_mem(w2, &len2);
    q_gguf_w_free(w2);
    assert_int_equal(len2, len);
    assert_memory_equal(img2, img, len);
    free(img2);
    q_gguf_free(g);
    free(img);
}

static void test_roundtrip_align32(void **state)
{
    (void)state;
    roundtrip(32);
}

static void test_roundtrip_align64(void **state)
{
    (void)state;
    roundtrip(64);
}

/* A writer that was handed a conflicting general.alignment writes its own. */
static void test_writer_alignment_key_is_the_writers(void **state)
{
    (void)state;
    q_gguf_w *w = q_gguf_w_new(64);
    assert_non_null(w);
    assert_int_equal(q_gguf_w_set_u32(w, "a", 1), Q_OK);
    assert_int_equal(q_gguf_w_set_u32(w, "general.alignment", 32), Q_OK);
    assert_int_equal(q_gguf_w_set_u32(w, "b", 2), Q_OK);
    int64_t ne[1] = {3};
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 1, ne, Q_DT_F32), Q_OK);
    char *buf = NULL;
    size_t n = 0;
    q_err err = {{0}};
    FILE *fp = open_memstream(&buf, &n);
    assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_OK);
    float d[3] = {1, 2, 3};
    assert_int_equal(q_gguf_w_write_data(w, fp, d, sizeof d, &err), Q_OK);
    assert_int_equal(q_gguf_w_finish(w, &err), Q_OK);
    fclose(fp);
    q_gguf *g = parse_ok((uint8_t *)buf, n);
    assert_int_equal(g->n_kv, 3);
    assert_int_equal(q_gguf_find(g, "general.alignment"), 1);
    assert_int_equal(g->alignment, 64);
    assert_int_equal(n, g->data_offset + 64);
    q_gguf_free(g);
    free(buf);
    q_gguf_w_free(w);

    /* With the default alignment a caller's general.alignment is dropped. */
    w = q_gguf_w_new(0);
    assert_int_equal(q_gguf_w_set_u32(w, "general.alignment", 64), Q_OK);
    fp = open_memstream(&buf, &n);
    assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_OK);
    assert_int_equal(q_gguf_w_finish(w, &err), Q_OK);
    fclose(fp);
    g = parse_ok((uint8_t *)buf, n);
    assert_int_equal(g->n_kv, 0);
    assert_int_equal(g->alignment, 32);
    assert_int_equal(n, 32);
    q_gguf_free(g);
    free(buf);
    q_gguf_w_free(w);
}

static void test_writer_usage_errors(void **state)
{
    (void)state;
    q_err err = {{0}};
    q_gguf_w *w = q_gguf_w_new(0);
    assert_non_null(w);
    int64_t ne[4] = {32, 2, 1, 1}, bad[2] = {16, 2}, neg[2] = {32, -1};
    assert_int_equal(q_gguf_w_set_u32(w, "", 1), Q_EUSAGE);
    assert_int_equal(q_gguf_w_set_u32(w, NULL, 1), Q_EUSAGE);
    assert_int_equal(q_gguf_w_set_str(w, "k", NULL), Q_EUSAGE);
    const char *nulls[2] = {"a", NULL};
    assert_int_equal(q_gguf_w_set_arr_str(w, "k", nulls, 2), Q_EUSAGE);
    assert_int_equal(q_gguf_w_set_arr_f32(w, "k", NULL, 2), Q_EUSAGE);
    q_gguf_kv kv = mk_kv("k", Q_GGUF_ARRAY);
    kv.arr_type = Q_GGUF_ARRAY;
    assert_int_equal(q_gguf_w_copy_kv(w, &kv), Q_EUSAGE);
    kv = mk_kv("", Q_GGUF_U8);
    assert_int_equal(q_gguf_w_copy_kv(w, &kv), Q_EUSAGE);
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 2, ne, 4), Q_EUSAGE);    /* removed Q4_2 */
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 2, ne, 1000), Q_EUSAGE); /* not ggml */
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 2, bad, Q_DT_Q8_0), Q_EUSAGE);
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 2, neg, Q_DT_F32), Q_EUSAGE);
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 0, ne, Q_DT_F32), Q_EUSAGE);
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 5, ne, Q_DT_F32), Q_EUSAGE);
    assert_int_equal(q_gguf_w_add_tensor(w, "", 2, ne, Q_DT_F32), Q_EUSAGE);
    int64_t huge[2] = {INT64_MAX / 2, 4};
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 2, huge, Q_DT_F32), Q_EUSAGE);
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 2, ne, Q_DT_Q8_0), Q_OK);
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 1, ne, Q_DT_F32), Q_EUSAGE); /* duplicate */
    assert_int_equal(q_gguf_w_add_tensor(w, "u", 1, ne, Q_DT_F32), Q_OK);

    uint8_t data[128] = {0};
    char *buf = NULL;
    size_t n = 0;
    FILE *fp = open_memstream(&buf, &n);
    assert_int_equal(q_gguf_w_write_data(w, fp, data, 4, &err), Q_EUSAGE);
    assert_int_equal(q_gguf_w_finish(w, &err), Q_EUSAGE);
    assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_OK);
    assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_EUSAGE);
    assert_int_equal(q_gguf_w_set_u32(w, "late", 1), Q_EUSAGE);
    assert_int_equal(q_gguf_w_add_tensor(w, "late", 1, ne, Q_DT_F32), Q_EUSAGE);
    /* t is 2 Q8_0 blocks = 68 bytes: 69 do not fit. */
    assert_int_equal(q_gguf_w_write_data(w, fp, data, 69, &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, "'t'"));
    assert_int_equal(q_gguf_w_write_data(w, fp, data, 60, &err), Q_OK);
    assert_int_equal(q_gguf_w_finish(w, &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, "60 of 68"));
    assert_int_equal(q_gguf_w_write_data(w, fp, data, 9, &err), Q_EUSAGE);
    assert_int_equal(q_gguf_w_write_data(w, fp, data, 8, &err), Q_OK);
    assert_int_equal(q_gguf_w_write_data(w, fp, data, 128, &err), Q_OK);
    assert_int_equal(q_gguf_w_write_data(w, fp, data, 1, &err), Q_EUSAGE);
    assert_int_equal(q_gguf_w_finish(w, &err), Q_OK);
    fclose(fp);
    q_gguf *g = parse_ok((uint8_t *)buf, n);
    assert_int_equal(g->n_tensors, 2);
    assert_int_equal(g->tensors[1].rel_offset, 96);
    q_gguf_free(g);
    free(buf);
    q_gguf_w_free(w);

    w = q_gguf_w_new(48); /* not a power of two: refused when writing */
    fp = open_memstream(&buf, &n);
    assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, "48"));
    fclose(fp);
    free(buf);
    q_gguf_w_free(w);
    q_gguf_w_free(NULL);
}

static void test_writer_eio(void **state)
{
    (void)state;
    FILE *fp = fopen("/dev/full", "w");
    if (!fp) {
        skip();
    }
    setvbuf(fp, NULL, _IONBF, 0);
    q_err err = {{0}};
    q_gguf_w *w = q_gguf_w_new(0);
    int64_t ne[1] = {8};
    assert_int_equal(q_gguf_w_add_tensor(w, "t", 1, ne, Q_DT_F32), Q_OK);
    assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_EIO);
    assert_non_null(strstr(err.msg, "header"));
    float d[8] = {0};
    assert_int_equal(q_gguf_w_write_data(w, fp, d, sizeof d, &err), Q_EIO);
    assert_int_equal(q_gguf_w_finish(w, &err), Q_EIO);
    q_gguf_w_free(w);
    fclose(fp);
}

/* ---- real models ---- */

typedef struct model_fact {
    const char *file;
    uint64_t n_tensors, n_kv;
    const char *first;
    int64_t ne0, ne1;
    uint32_t type;
    uint64_t off[3]; /* absolute data offsets of the first three tensors (gguf-py) */
    uint32_t first_bits; /* first 4 bytes of the first tensor, little-endian */
    uint64_t n_tokens;
} model_fact;

static const model_fact facts[] = {
    {"stories260K.gguf", 48, 19, "token_embd.weight", 64, 512, Q_DT_F32,
     {14176, 145248, 145504}, 0xbe96e950u, 512},
    {"stories260K-F16.gguf", 48, 20, "token_embd.weight", 64, 512, Q_DT_F16,
     {14208, 79744, 80000}, 0x387fb4b7u, 512},
    {"stories260K-BF16.gguf", 48, 20, "token_embd.weight", 64, 512, Q_DT_BF16,
     {14208, 79744, 80000}, 0, 512},
    {"ollama_llama-2-tiny-random.gguf", 12, 18, "token_embd.weight", 8, 32000, Q_DT_F16,
     {724416, 1236416, 1236544}, 0, 32000},
    {"calcuis_imatrix-from-dat.imatrix.gguf", 308, 4, "blk.0.attn_k.weight.in_sum2", 2048, 1,
     Q_DT_F32, {21280, 29472, 29504}, 0x4924e8ddu, 0},
};

static const char *models_dir(void)
{
    const char *d = getenv("QTUNE_MODELS");
    return d && d[0] ? d : "../shared/models";
}

/* Rewrites g through the writer (every kv copied, every tensor streamed). */
static uint8_t *rewrite(const q_gguf *g, size_t *len)
{
    q_gguf_w *w = q_gguf_w_new(g->alignment);
    assert_non_null(w);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        assert_int_equal(q_gguf_w_copy_kv(w, &g->kv[i]), Q_OK);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const q_gguf_tensor *t = &g->tensors[i];
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        assert_int_equal(q_gguf_w_add_tensor(w, name, t->n_dims, t->ne, t->type), Q_OK);
    }
    char *buf = NULL;
    size_t n = 0;
    q_err err = {{0}};
    FILE *fp = open_memstream(&buf, &n);
    assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_OK);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const q_gguf_tensor *t = &g->tensors[i];
        assert_int_equal(q_gguf_w_write_data(w, fp, t->data, (size_t)t->nbytes, &err), Q_OK);
    }
    assert_int_equal(q_gguf_w_finish(w, &err), Q_OK);
    fclose(fp);
    q_gguf_w_free(w);
    *len = n;
    return (uint8_t *)buf;
}

static void test_models(void **state)
{
    (void)state;
    DIR *dir = opendir(models_dir());
    if (!dir) {
        skip();
    }
    int parsed = 0, checked = 0, present = 0;
    for (size_t f = 0; f < sizeof facts / sizeof facts[0]; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", models_dir(), facts[f].file);
        FILE *fp = fopen(path, "rb");
        present += fp != NULL;
        if (fp) {
            fclose(fp);
        }
    }
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        size_t nl = strlen(de->d_name);
        if (nl < 5 || strcmp(de->d_name + nl - 5, ".gguf") != 0) {
            continue;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", models_dir(), de->d_name);
        size_t len = 0;
        uint8_t *img = read_file(path, &len);
        assert_non_null(img);
        q_gguf *g = NULL;
        q_err err = {{0}};
        q_status st = q_gguf_parse(img, len, de->d_name, &g, &err);
        if (st != Q_OK) {
            print_error("%s: %s\n", path, err.msg);
        }
        assert_int_equal(st, Q_OK);
        parsed++;
        touch_all(g);
        for (size_t f = 0; f < sizeof facts / sizeof facts[0]; f++) {
            const model_fact *m = &facts[f];
            if (strcmp(m->file, de->d_name) != 0) {
                continue;
            }
            checked++;
            assert_int_equal(g->version, 3);
            assert_int_equal(g->n_tensors, m->n_tensors);
            assert_int_equal(g->n_kv, m->n_kv);
            const q_gguf_tensor *t = &g->tensors[0];
            assert_int_equal(t->name.len, strlen(m->first));
            assert_memory_equal(t->name.ptr, m->first, t->name.len);
            assert_int_equal(t->ne[0], m->ne0);
            assert_int_equal(t->ne[1], m->ne1);
            assert_int_equal(t->type, m->type);
            for (int k = 0; k < 3; k++) {
                assert_int_equal(g->tensors[k].abs_offset, m->off[k]);
            }
            if (m->first_bits) {
                uint32_t bits = (uint32_t)t->data[0] | (uint32_t)t->data[1] << 8 |
                                (uint32_t)t->data[2] << 16 | (uint32_t)t->data[3] << 24;
                assert_int_equal(bits, m->first_bits);
            }
            int64_t ti = q_gguf_find(g, "tokenizer.ggml.tokens");
            if (m->n_tokens) {
                assert_true(ti >= 0);
                const q_gguf_kv *kv = &g->kv[ti];
                assert_int_equal(kv->arr_n, m->n_tokens);
                q_gguf_str s;
                assert_true(q_gguf_arr_str(kv, 1, &s));
                assert_int_equal(s.len, 3);
                assert_memory_equal(s.ptr, "<s>", 3);
            } else {
                assert_int_equal(ti, -1);
            }
            /* The last tensor ends the file, but for its padding. */
            const q_gguf_tensor *last = &g->tensors[g->n_tensors - 1];
            assert_true(last->abs_offset + last->nbytes <= len);
            assert_true(len - (last->abs_offset + last->nbytes) < g->alignment);
        }
        if (strcmp(de->d_name, "stories260K.gguf") == 0) {
            char s[32];
            double eps;
            int64_t ctx;
            assert_true(q_gguf_get_str(g, "general.architecture", s, sizeof s));
            assert_string_equal(s, "llama");
            assert_true(q_gguf_get_f64(g, "llama.attention.layer_norm_rms_epsilon", &eps));
            assert_true(fabs(eps - 1e-5) < 1e-10);
            assert_true(q_gguf_get_int(g, "llama.context_length", &ctx));
            assert_int_equal(ctx, 2048);
        }
        /* Writer round trip: every kv and tensor survives byte for byte; the
         * models we know (written by llama.cpp / gguf-py) come out identical. */
        size_t len2;
        uint8_t *img2 = rewrite(g, &len2);
        bool known = false;
        for (size_t f = 0; f < sizeof facts / sizeof facts[0]; f++) {
            known |= strcmp(facts[f].file, de->d_name) == 0;
        }
        if (known) {
            assert_int_equal(len2, len);
            assert_memory_equal(img2, img, len);
        }
        q_gguf *g2 = parse_ok(img2, len2);
        assert_int_equal(g2->n_kv, g->n_kv);
        assert_int_equal(g2->n_tensors, g->n_tensors);
        for (uint64_t i = 0; i < g->n_kv; i++) {
            uint64_t a = g->kv[i].end - g->kv[i].offset;
            assert_int_equal(g2->kv[i].end - g2->kv[i].offset, a);
            assert_memory_equal(img2 + g2->kv[i].offset, img + g->kv[i].offset, (size_t)a);
        }
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            assert_int_equal(g2->tensors[i].nbytes, g->tensors[i].nbytes);
            assert_memory_equal(g2->tensors[i].data, g->tensors[i].data,
                                (size_t)g->tensors[i].nbytes);
        }
        q_gguf_free(g2);
        free(img2);
        q_gguf_free(g);
        free(img);
    }
    closedir(dir);
    if (parsed == 0) {
        skip();
    }
    assert_int_equal(checked, present);
}

/* Random access into a large string array agrees with a fresh walk. */
static void test_arr_str_random_access(void **state)
{
    (void)state;
    enum { N = 5000 };
    char **strs = malloc(N * sizeof *strs);
    assert_non_null(strs);
    rng_state = 77;
    for (int i = 0; i < N; i++) {
        size_t len = (size_t)(rng() % 12);
        strs[i] = malloc(len + 16);
        int k = snprintf(strs[i], len + 16, "%d:", i);
        for (size_t j = 0; j < len; j++) {
            strs[i][k + (int)j] = (char)('a' + rng() % 26);
        }
        strs[i][k + (int)len] = '\0';
    }
    q_gguf_w *w = q_gguf_w_new(0);
    assert_int_equal(q_gguf_w_set_arr_str(w, "tok", (const char *const *)strs, N), Q_OK);
    assert_int_equal(q_gguf_w_set_arr_str(w, "tok2", (const char *const *)strs, N / 2), Q_OK);
    char *buf = NULL;
    size_t n = 0;
    q_err err = {{0}};
    FILE *fp = open_memstream(&buf, &n);
    assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_OK);
    fclose(fp);
    q_gguf_w_free(w);
    q_gguf *g = parse_ok((uint8_t *)buf, n);
    for (int it = 0; it < 20000; it++) {
        const q_gguf_kv *kv = &g->kv[rng() % 2];
        uint64_t i = rng() % kv->arr_n;
        if (it % 3 == 0) {
            i = (i + 1) % kv->arr_n; /* often the next one: the cursor path */
        }
        q_gguf_str s;
        assert_true(q_gguf_arr_str(kv, i, &s));
        assert_int_equal(s.len, strlen(strs[i]));
        assert_memory_equal(s.ptr, strs[i], s.len);
    }
    q_gguf_free(g);
    free(buf);
    for (int i = 0; i < N; i++) {
        free(strs[i]);
    }
    free(strs);
}

/* Many keys exercise the duplicate set's growth; a duplicate at the end fails. */
static void test_many_keys_duplicate_last(void **state)
{
    (void)state;
    enum { N = 3000 };
    bb b = {0};
    bb_hdr(&b, 3, 0, N + 1);
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "k.%d", i);
        bb_kv_u32(&b, key, (uint32_t)i);
    }
    uint64_t at = b.len;
    bb_kv_u32(&b, "k.1234", 1);
    expect_edata(&b, at, "duplicate key 'k.1234'");
    b.p[16] = (uint8_t)N; /* n_kv = N: fine */
    b.p[17] = (uint8_t)(N >> 8);
    b.len = at;
    q_gguf *g = parse_ok(b.p, b.len);
    int64_t v;
    assert_true(q_gguf_get_int(g, "k.2999", &v));
    assert_int_equal(v, 2999);
    q_gguf_free(g);
    free(b.p);
}

/* ---- malformed files, one per case ---- */

static void test_bad_magic(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 0);
    b.p[0] = 'g';
    expect_edata(&b, 0, "not a GGUF file");
    free(b.p);
}

static void test_version_1(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 1, 0, 0);
    expect_edata(&b, 4, "version 1");
    free(b.p);
}

static void test_version_0(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 0, 0, 0);
    expect_edata(&b, 4, "unsupported GGUF version 0");
    free(b.p);
}

static void test_version_4(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 4, 0, 0);
    expect_edata(&b, 4, "unsupported GGUF version 4");
    free(b.p);
}

static void test_version_big_endian(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 0x03000000u, 0, 0);
    expect_edata(&b, 4, "big-endian");
    free(b.p);
}

static void test_version_2_accepted(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 2, 0, 1);
    bb_kv_u32(&b, "x", 5);
    q_gguf *g = parse_ok(b.p, b.len);
    assert_int_equal(g->version, 2);
    assert_int_equal(g->n_kv, 1);
    assert_int_equal(g->data_offset, b.len); /* no tensors: unpadded end allowed */
    q_gguf_free(g);
    free(b.p);
}

static void test_truncated_magic(void **state)
{
    (void)state;
    expect_edata_((const uint8_t *)"GG", 2, 0, "truncated in the magic", __LINE__);
    expect_edata_(NULL, 0, 0, "truncated in the magic", __LINE__);
}

static void test_truncated_header(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 0);
    b.len = 20;
    expect_edata(&b, 16, "truncated in the header");
    b.len = 6;
    expect_edata(&b, 4, "truncated in the header");
    free(b.p);
}

static void test_tensor_count_huge(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, UINT64_MAX, 0);
    expect_edata(&b, 8, "tensor count 18446744073709551615 exceeds");
    free(b.p);
}

static void test_kv_count_huge(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, (uint64_t)1 << 62);
    expect_edata(&b, 16, "metadata count 4611686018427387904 exceeds");
    free(b.p);
}

static void test_counts_together_too_big(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 2, 2); /* 2*33 + 2*14 = 94 bytes needed */
    bb_zeros(&b, 80);
    expect_edata(&b, 8, "exceed what the file can hold");
    free(b.p);
}

static void test_key_length_past_eof(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_u64(&b, UINT64_MAX);
    bb_zeros(&b, 20);
    expect_edata(&b, 24, "key of metadata entry 0 length 18446744073709551615 runs past");
    free(b.p);
}

static void test_key_empty(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 2);
    bb_kv_u32(&b, "a", 1);
    uint64_t at = b.len;
    bb_kv_u32(&b, "", 1);
    expect_edata(&b, at, "metadata entry 1 has an empty key");
    free(b.p);
}

static void test_key_duplicate(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 3);
    bb_kv_u32(&b, "a.b", 1);
    bb_kv_str(&b, "c", "x");
    uint64_t at = b.len;
    bb_kv_str(&b, "a.b", "y");
    expect_edata(&b, at, "duplicate key 'a.b'");
    free(b.p);
}

static void test_key_control_chars_quoted(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 2);
    bb_kv_u32(&b, "a\nb", 1);
    uint64_t at = b.len;
    bb_kv_u32(&b, "a\nb", 1);
    expect_edata(&b, at, "duplicate key 'a\\x0ab'");
    free(b.p);
}

static void test_value_type_unknown(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "k");
    uint64_t at = b.len;
    bb_u32(&b, 13);
    bb_u32(&b, 0);
    expect_edata(&b, at, "unknown value type 13");
    b.p[at + 3] = 0xff;
    expect_edata(&b, at, "unknown value type 4278190093");
    free(b.p);
}

static void test_string_value_past_eof(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "general.name");
    bb_u32(&b, Q_GGUF_STRING);
    uint64_t at = b.len;
    bb_u64(&b, 100);
    bb_put(&b, "short", 5);
    expect_edata(&b, at, "string value of key 'general.name' length 100 runs past");
    free(b.p);
}

static void test_array_length_overflow(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, Q_GGUF_ARRAY);
    uint64_t at = b.len;
    bb_u32(&b, Q_GGUF_U32);
    bb_u64(&b, (uint64_t)1 << 62); /* × 4 bytes wraps to 0 in 64 bits */
    bb_zeros(&b, 16);
    expect_edata(&b, at + 4, "array of 4611686018427387904 u32 elements runs past");
    free(b.p);
}

static void test_string_array_count_past_eof(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "tokenizer.ggml.tokens");
    bb_u32(&b, Q_GGUF_ARRAY);
    uint64_t at = b.len;
    bb_u32(&b, Q_GGUF_STRING);
    bb_u64(&b, 3);
    bb_str(&b, "a");
    bb_str(&b, "b");
    expect_edata(&b, at + 4, "array of 3 strings runs past");
    free(b.p);
}

static void test_string_array_element_past_eof(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "tokenizer.ggml.tokens");
    bb_u32(&b, Q_GGUF_ARRAY);
    bb_u32(&b, Q_GGUF_STRING);
    bb_u64(&b, 3);
    bb_str(&b, "a");
    uint64_t at = b.len;
    bb_u64(&b, (uint64_t)-2);
    bb_str(&b, "c");
    bb_zeros(&b, 10);
    expect_edata(&b, at, "string 1 of the array has length 18446744073709551614");
    free(b.p);
}

static void test_array_nested(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "nest");
    bb_u32(&b, Q_GGUF_ARRAY);
    uint64_t at = b.len;
    bb_u32(&b, Q_GGUF_ARRAY);
    bb_u64(&b, 1);
    bb_u32(&b, Q_GGUF_U8);
    bb_u64(&b, 1);
    bb_zeros(&b, 1);
    expect_edata(&b, at, "nested arrays");
    free(b.p);
}

static void test_array_unknown_element_type(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, Q_GGUF_ARRAY);
    uint64_t at = b.len;
    bb_u32(&b, 99);
    bb_u64(&b, 0);
    expect_edata(&b, at, "unknown array element type 99");
    free(b.p);
}

static void test_alignment_zero(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, Q_GGUF_U32);
    uint64_t at = b.len;
    bb_u32(&b, 0);
    expect_edata(&b, at, "general.alignment is 0; it must be a power of two");
    free(b.p);
}

static void test_alignment_not_pow2(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, Q_GGUF_U32);
    uint64_t at = b.len;
    bb_u32(&b, 48);
    expect_edata(&b, at, "general.alignment is 48");
    free(b.p);
}

static void test_alignment_wrong_type(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 0, 1);
    bb_str(&b, "general.alignment");
    uint64_t at = b.len;
    bb_u32(&b, Q_GGUF_U64);
    bb_u64(&b, 32);
    expect_edata(&b, at, "general.alignment has type u64; it must be u32");
    free(b.p);
}

static void test_alignment_64_applies(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 2, 1);
    bb_kv_u32(&b, "general.alignment", 64);
    int64_t ne[1] = {8};
    bb_tinfo(&b, "a", 1, ne, Q_DT_F32, 0);
    uint64_t at = bb_tinfo(&b, "b", 1, ne, Q_DT_F32, 32); /* aligned to 32, not 64 */
    bb_pad(&b, 64);
    uint64_t data = b.len;
    bb_zeros(&b, 128);
    expect_edata(&b, at, "data offset 32 is not a multiple of the alignment 64");
    b.p[at] = 64;
    q_gguf *g = parse_ok(b.p, b.len);
    assert_int_equal(g->alignment, 64);
    assert_int_equal(g->data_offset, data);
    assert_int_equal(g->tensors[1].abs_offset, data + 64);
    q_gguf_free(g);
    free(b.p);
}

static void test_tensor_duplicate_name(void **state)
{
    (void)state;
    tspec ts[2] = {{"w", 1, {8}, Q_DT_F32, 0}, {"w", 1, {8}, Q_DT_F32, 32}};
    uint64_t off_at[2];
    bb b = img_tensors(ts, 2, 64, off_at);
    /* The second info starts 8 + 1 + 4 + 8 + 4 + 8 bytes before its end. */
    expect_edata(&b, off_at[1] - (8 + 1 + 4 + 8 + 4), "duplicate tensor name 'w'");
    free(b.p);
}

static void test_tensor_empty_name(void **state)
{
    (void)state;
    tspec ts[1] = {{"", 1, {8}, Q_DT_F32, 0}};
    bb b = img_tensors(ts, 1, 32, NULL);
    uint64_t at = 24 + 8 + 20 + 4 + 8 + 5; /* after the one kv */
    expect_edata(&b, at, "tensor 0 has an empty name");
    free(b.p);
}

static void test_tensor_name_past_eof(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 1, 0);
    bb_u64(&b, 1000);
    bb_zeros(&b, 40);
    expect_edata(&b, 24, "name of tensor 0 length 1000 runs past");
    free(b.p);
}

static void test_tensor_ndims_zero(void **state)
{
    (void)state;
    tspec ts[1] = {{"w", 0, {8}, Q_DT_F32, 0}};
    uint64_t off_at[1];
    bb b = img_tensors(ts, 1, 32, off_at);
    expect_edata(&b, off_at[0] - 8, "tensor 'w' has 0 dimensions");
    free(b.p);
}

static void test_tensor_ndims_five(void **state)
{
    (void)state;
    bb b = {0};
    bb_hdr(&b, 3, 1, 0);
    bb_str(&b, "w");
    uint64_t at = b.len;
    bb_u32(&b, 5);
    for (int i = 0; i < 5; i++) {
        bb_u64(&b, 1);
    }
    bb_u32(&b, Q_DT_F32);
    bb_u64(&b, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    expect_edata(&b, at, "tensor 'w' has 5 dimensions");
    free(b.p);
}

static void test_tensor_ne_negative(void **state)
{
    (void)state;
    tspec ts[1] = {{"w", 2, {8, -3}, Q_DT_F32, 0}};
    uint64_t off_at[1];
    bb b = img_tensors(ts, 1, 32, off_at);
    expect_edata(&b, off_at[0] - 12, "dimension 1 is -3");
    free(b.p);
}

static void test_tensor_ne_zero(void **state)
{
    (void)state;
    tspec ts[1] = {{"w", 2, {0, 3}, Q_DT_F32, 0}};
    uint64_t off_at[1];
    bb b = img_tensors(ts, 1, 32, off_at);
    expect_edata(&b, off_at[0] - 20, "dimension 0 is 0");
    free(b.p);
}

static void test_tensor_nelem_overflow(void **state)
{
    (void)state;
    tspec ts[1] = {{"w", 3, {(int64_t)1 << 32, (int64_t)1 << 30, 2}, Q_DT_F32, 0}};
    uint64_t off_at[1];
    bb b = img_tensors(ts, 1, 32, off_at);
    expect_edata(&b, off_at[0] - 12, "element count overflows");
    free(b.p);
}

static void test_tensor_nbytes_overflow(void **state)
{
    (void)state;
    /* 2^62 elements fit int64, but × 8 bytes (F64) do not fit 64 bits. */
    tspec ts[1] = {{"w", 2, {(int64_t)1 << 31, (int64_t)1 << 31}, Q_DT_F64, 0}};
    uint64_t off_at[1];
    bb b = img_tensors(ts, 1, 32, off_at);
    expect_edata(&b, off_at[0] - 4, "tensor 'w': byte size overflows");
    free(b.p);
}

static void test_tensor_block_multiple(void **state)
{
    (void)state;
    tspec ts[1] = {{"w", 2, {16, 2}, Q_DT_Q8_0, 0}};
    uint64_t off_at[1];
    bb b = img_tensors(ts, 1, 64, off_at);
    expect_edata(&b, off_at[0] - 4, "row length 16 is not a multiple of the Q8_0 block size 32");
    free(b.p);
}

static void test_tensor_offset_misaligned(void **state)
{
    (void)state;
    tspec ts[2] = {{"a", 1, {4}, Q_DT_F32, 0}, {"b", 1, {4}, Q_DT_F32, 16}};
    uint64_t off_at[2];
    bb b = img_tensors(ts, 2, 64, off_at);
    expect_edata(&b, off_at[1], "tensor 'b': data offset 16 is not a multiple of the "
                                "alignment 32");
    free(b.p);
}

static void test_tensor_overlap(void **state)
{
    (void)state;
    /* a = 64 bytes at 0, b at 32 overlaps it; listed out of order on purpose. */
    tspec ts[3] = {{"c", 1, {8}, Q_DT_F32, 96}, {"b", 1, {8}, Q_DT_F32, 32},
                   {"a", 1, {16}, Q_DT_F32, 0}};
    uint64_t off_at[3];
    bb b = img_tensors(ts, 3, 128, off_at);
    expect_edata(&b, off_at[1], "tensor 'b': data at");
    expect_edata(&b, off_at[1], "overlaps tensor 'a'");
    free(b.p);
}

static void test_tensor_same_offset(void **state)
{
    (void)state;
    tspec ts[2] = {{"a", 1, {8}, Q_DT_F32, 0}, {"b", 1, {8}, Q_DT_F32, 0}};
    uint64_t off_at[2];
    bb b = img_tensors(ts, 2, 64, off_at);
    expect_edata(&b, off_at[1], "overlaps tensor 'a'");
    free(b.p);
}

static void test_tensor_past_eof(void **state)
{
    (void)state;
    tspec ts[2] = {{"a", 1, {8}, Q_DT_F32, 0}, {"b", 1, {16}, Q_DT_F32, 32}};
    uint64_t off_at[2];
    bb b = img_tensors(ts, 2, 95, off_at); /* b needs [32, 96) */
    expect_edata(&b, off_at[1], "tensor 'b': data at");
    expect_edata(&b, off_at[1], "(64 bytes) runs past the end of the file");
    b.len++;
    q_gguf *g = parse_ok(b.p, b.len);
    q_gguf_free(g);
    free(b.p);
}

static void test_tensor_offset_huge(void **state)
{
    (void)state;
    tspec ts[1] = {{"a", 1, {8}, Q_DT_F32, UINT64_MAX - 31}};
    uint64_t off_at[1];
    bb b = img_tensors(ts, 1, 64, off_at);
    expect_edata(&b, off_at[0], "runs past the end of the file");
    free(b.p);
}

static void test_data_section_past_eof(void **state)
{
    (void)state;
    tspec ts[1] = {{"a", 1, {8}, Q_DT_F32, 0}};
    uint64_t off_at[1];
    bb b = img_tensors(ts, 1, 0, off_at);
    b.len = off_at[0] + 8; /* ends right after the infos, before the padding */
    expect_edata(&b, off_at[0] + 8, "data section starts at");
    free(b.p);
}

static void test_unknown_type_accepted(void **state)
{
    (void)state;
    tspec ts[2] = {{"u", 2, {7, 3}, 100, 0}, {"k", 1, {8}, Q_DT_F32, 64}};
    bb b = img_tensors(ts, 2, 96, NULL);
    q_gguf *g = parse_ok(b.p, b.len);
    assert_int_equal(g->tensors[0].type, 100);
    assert_int_equal(g->tensors[0].nbytes, 0);
    assert_null(g->tensors[0].data);
    assert_int_equal(g->tensors[0].ne[1], 3);
    assert_non_null(g->tensors[1].data);
    assert_int_equal(g->tensors[1].nbytes, 32);
    q_gguf_free(g);
    free(b.p);
}

static void test_unknown_type_known_still_checked(void **state)
{
    (void)state;
    tspec ts[2] = {{"u", 1, {8}, 31, 0}, {"k", 1, {8}, Q_DT_F32, 64}};
    uint64_t off_at[2];
    bb b = img_tensors(ts, 2, 95, off_at);
    expect_edata(&b, off_at[1], "tensor 'k': data at");
    free(b.p);
}

static void test_unknown_type_inside_known(void **state)
{
    (void)state;
    tspec ts[2] = {{"k", 1, {16}, Q_DT_F32, 0}, {"u", 1, {8}, 1000, 32}};
    uint64_t off_at[2];
    bb b = img_tensors(ts, 2, 128, off_at);
    expect_edata(&b, off_at[1], "tensor 'u': data at");
    expect_edata(&b, off_at[1], "overlaps tensor 'k'");
    free(b.p);
}

static void test_unknown_type_past_eof(void **state)
{
    (void)state;
    tspec ts[1] = {{"u", 1, {8}, 77, 64}};
    uint64_t off_at[1];
    bb b = img_tensors(ts, 1, 64, off_at);
    expect_edata(&b, off_at[0], "unknown type 77");
    free(b.p);
}

/* Truncation inside each section names the section. */
static void test_truncated_sections(void **state)
{
    (void)state;
    /* A long first entry, so that the header's counts always fit what is left
     * and the cuts below reach the section they aim at. */
    bb b = {0};
    bb_hdr(&b, 3, 1, 4);
    char pad[201];
    memset(pad, 'x', 200);
    pad[200] = '\0';
    bb_kv_str(&b, "a.pad", pad);
    uint64_t k0 = b.len;
    bb_kv_u32(&b, "a.u32", 7);
    uint64_t k1 = b.len;
    bb_str(&b, "a.arr");
    bb_u32(&b, Q_GGUF_ARRAY);
    uint64_t arr = b.len;
    bb_u32(&b, Q_GGUF_STRING);
    bb_u64(&b, 2);
    bb_str(&b, "one");
    uint64_t s1 = b.len;
    bb_str(&b, "two");
    bb_kv_str(&b, "a.s", "str");
    uint64_t ti = b.len;
    int64_t ne[2] = {4, 2};
    bb_tinfo(&b, "t", 2, ne, Q_DT_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 32);
    q_gguf_free(parse_ok(b.p, b.len));
    size_t full = b.len;

    b.len = k0 + 4; /* inside the key length */
    expect_edata(&b, k0, "truncated in the key of metadata entry 1");
    b.len = k0 + 8 + 3; /* inside the key bytes */
    expect_edata(&b, k0, "key of metadata entry 1 length 5 runs past");
    b.len = k0 + 8 + 5 + 2; /* inside the value type */
    expect_edata(&b, k0 + 13, "truncated in the value type of key 'a.u32'");
    b.len = k0 + 8 + 5 + 4 + 1; /* inside the u32 value */
    expect_edata(&b, k0 + 17, "truncated in the u32 value of key 'a.u32'");
    b.len = k1 + 8 + 5 + 4 + 2; /* inside the array element type */
    expect_edata(&b, arr, "truncated in the array header of key 'a.arr'");
    b.len = arr + 4 + 6; /* inside the array count */
    expect_edata(&b, arr + 4, "truncated in the array header of key 'a.arr'");
    b.len = s1 + 3; /* inside the second string's length */
    expect_edata(&b, arr + 4, "array of 2 strings runs past");
    b.len = s1 + 8 + 1; /* inside the second string's bytes */
    expect_edata(&b, s1, "string 1 of the array has length 3");
    b.len = ti + 3; /* inside the tensor name length */
    expect_edata(&b, ti, "truncated in the name of tensor 0");
    b.len = ti + 8 + 1 + 2; /* inside n_dims */
    expect_edata(&b, ti + 9, "truncated in the info of tensor 't'");
    b.len = ti + 8 + 1 + 4 + 8 + 4; /* inside ne[1] */
    expect_edata(&b, ti + 21, "truncated in the info of tensor 't'");
    b.len = full - 1; /* inside the data */
    expect_edata(&b, ti + 8 + 1 + 4 + 16 + 4, "runs past the end of the file");
    free(b.p);
}

/* ---- sweeps ---- */

static uint8_t *small_image(size_t *len, uint64_t *data_end)
{
    make_tensor_data();
    q_gguf_w *w = q_gguf_w_new(0);
    assert_non_null(w);
    fill_writer(w);
    uint8_t *img = write_mem(w, len);
    q_gguf_w_free(w);
    q_gguf *g = parse_ok(img, *len);
    const q_gguf_tensor *last = &g->tensors[g->n_tensors - 1];
    *data_end = last->abs_offset + last->nbytes;
    q_gguf_free(g);
    return img;
}

static void test_truncation_sweep(void **state)
{
    (void)state;
    size_t len;
    uint64_t data_end;
    uint8_t *img = small_image(&len, &data_end);
    int edata = 0;
    for (size_t n = 0; n < len; n++) {
        /* A fresh copy of exactly n bytes, so ASan sees any read past it. */
        uint8_t *p = malloc(n ? n : 1);
        assert_non_null(p);
        memcpy(p, img, n);
        q_gguf *g = NULL;
        q_err err = {{0}};
        q_status st = q_gguf_parse(p, n, "cut.gguf", &g, &err);
        if (st == Q_OK) {
            assert_true(n >= data_end); /* only trailing padding may be cut */
            touch_all(g);
            q_gguf_free(g);
        } else {
            assert_int_equal(st, Q_EDATA);
            assert_null(g);
            assert_true(strncmp(err.msg, "cut.gguf: offset ", 17) == 0);
            edata++;
        }
        free(p);
    }
    assert_int_equal(edata, (int)data_end);
    free(img);
}

static void test_random_flips(void **state)
{
    (void)state;
    size_t len;
    uint64_t data_end;
    uint8_t *img = small_image(&len, &data_end);
    q_gguf *g0 = parse_ok(img, len);
    uint64_t hdr = g0->data_offset;
    q_gguf_free(g0);
    uint8_t *p = malloc(len);
    assert_non_null(p);
    rng_state = 20240607;
    int ok = 0, bad = 0;
    for (int it = 0; it < 5000; it++) {
        memcpy(p, img, len);
        int flips = 1 + (int)(rng() % 4);
        for (int k = 0; k < flips; k++) {
            /* Mostly the header, where the structure lives. */
            uint64_t pos = rng() % 8 ? rng() % hdr : rng() % len;
            uint8_t v = (uint8_t)rng();
            p[pos] = rng() % 3 == 0 ? (uint8_t)(p[pos] ^ (1u << (v & 7))) : v;
        }
        size_t n = rng() % 16 == 0 ? (size_t)(rng() % len) : len;
        q_gguf *g = NULL;
        q_err err = {{0}};
        q_status st = q_gguf_parse(p, n, "flip.gguf", &g, &err);
        if (st == Q_OK) {
            touch_all(g);
            q_gguf_free(g);
            ok++;
        } else {
            assert_int_equal(st, Q_EDATA);
            assert_null(strchr(err.msg, '\n'));
            bad++;
        }
    }
    /* Both outcomes occur, so the loop tested something. */
    assert_true(ok > 100);
    assert_true(bad > 100);
    free(p);
    free(img);
}

static int teardown_data(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_WT; i++) {
        free(wtensors[i].data);
        wtensors[i].data = NULL;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_align32),
        cmocka_unit_test(test_roundtrip_align64),
        cmocka_unit_test(test_writer_alignment_key_is_the_writers),
        cmocka_unit_test(test_writer_usage_errors),
        cmocka_unit_test(test_writer_eio),
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_arr_str_random_access),
        cmocka_unit_test(test_many_keys_duplicate_last),
        cmocka_unit_test(test_bad_magic),
        cmocka_unit_test(test_version_1),
        cmocka_unit_test(test_version_0),
        cmocka_unit_test(test_version_4),
        cmocka_unit_test(test_version_big_endian),
        cmocka_unit_test(test_version_2_accepted),
        cmocka_unit_test(test_truncated_magic),
        cmocka_unit_test(test_truncated_header),
        cmocka_unit_test(test_tensor_count_huge),
        cmocka_unit_test(test_kv_count_huge),
        cmocka_unit_test(test_counts_together_too_big),
        cmocka_unit_test(test_key_length_past_eof),
        cmocka_unit_test(test_key_empty),
        cmocka_unit_test(test_key_duplicate),
        cmocka_unit_test(test_key_control_chars_quoted),
        cmocka_unit_test(test_value_type_unknown),
        cmocka_unit_test(test_string_value_past_eof),
        cmocka_unit_test(test_array_length_overflow),
        cmocka_unit_test(test_string_array_count_past_eof),
        cmocka_unit_test(test_string_array_element_past_eof),
        cmocka_unit_test(test_array_nested),
        cmocka_unit_test(test_array_unknown_element_type),
        cmocka_unit_test(test_alignment_zero),
        cmocka_unit_test(test_alignment_not_pow2),
        cmocka_unit_test(test_alignment_wrong_type),
        cmocka_unit_test(test_alignment_64_applies),
        cmocka_unit_test(test_tensor_duplicate_name),
        cmocka_unit_test(test_tensor_empty_name),
        cmocka_unit_test(test_tensor_name_past_eof),
        cmocka_unit_test(test_tensor_ndims_zero),
        cmocka_unit_test(test_tensor_ndims_five),
        cmocka_unit_test(test_tensor_ne_negative),
        cmocka_unit_test(test_tensor_ne_zero),
        cmocka_unit_test(test_tensor_nelem_overflow),
        cmocka_unit_test(test_tensor_nbytes_overflow),
        cmocka_unit_test(test_tensor_block_multiple),
        cmocka_unit_test(test_tensor_offset_misaligned),
        cmocka_unit_test(test_tensor_overlap),
        cmocka_unit_test(test_tensor_same_offset),
        cmocka_unit_test(test_tensor_past_eof),
        cmocka_unit_test(test_tensor_offset_huge),
        cmocka_unit_test(test_data_section_past_eof),
        cmocka_unit_test(test_unknown_type_accepted),
        cmocka_unit_test(test_unknown_type_known_still_checked),
        cmocka_unit_test(test_unknown_type_inside_known),
        cmocka_unit_test(test_unknown_type_past_eof),
        cmocka_unit_test(test_truncated_sections),
        cmocka_unit_test(test_truncation_sweep),
        cmocka_unit_test(test_random_flips),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_data);
}
