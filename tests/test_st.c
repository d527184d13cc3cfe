/* test_st.c — safetensors reader, config.json and index parsers.
 *
 * Real checkpoints come from $QTUNE_MODELS (default ../shared/models) and are
 * skipped when missing; every malformed image is built in memory here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "q_dtype.h"
#include "q_st.h"

/* ------------------------------------------------------------------ helpers */

typedef struct img {
    uint8_t *buf;
    uint64_t size;
} img;

/* u64 LE length `declared` + header text + data_len bytes (i * 7 + 1). */
static img img_make_len(uint64_t declared, const char *header, size_t hlen, uint64_t data_len)
{
    img m;
    m.size = 8 + hlen + data_len;
    m.buf = malloc(m.size);
    assert_non_null(m.buf);
    for (int i = 0; i < 8; i++) {
        m.buf[i] = (uint8_t)(declared >> (8 * i));
    }
    memcpy(m.buf + 8, header, hlen);
    for (uint64_t i = 0; i < data_len; i++) {
        m.buf[8 + hlen + i] = (uint8_t)(i * 7 + 1);
    }
    return m;
}

static img img_make(const char *header, uint64_t data_len)
{
    return img_make_len(strlen(header), header, strlen(header), data_len);
}

static void msg_is_one_line(const char *msg, const char *fname)
{
    assert_true(strlen(msg) > 0);
    assert_null(strchr(msg, '\n'));
    assert_int_equal(strncmp(msg, fname, strlen(fname)), 0);
}

static void expect_word(const char *msg, const char *word)
{
    if (!strstr(msg, word)) {
        print_error("message \"%s\" lacks \"%s\"\n", msg, word);
        fail();
    }
}

/* Parses m, expects Q_EDATA with word in the message; frees m. */
static void expect_bad_img(img m, const char *word)
{
    q_st *st = (q_st *)(uintptr_t)1;
    q_err err = {{0}};
    q_status rc = q_st_parse(m.buf, m.size, "t.safetensors", &st, &err);
    if (rc != Q_EDATA) {
        print_error("status %d, message \"%s\"\n", (int)rc, err.msg);
    }
    assert_int_equal(rc, Q_EDATA);
    assert_null(st);
    msg_is_one_line(err.msg, "t.safetensors: ");
    expect_word(err.msg, word);
    free(m.buf);
}

static const char *models_dir(void)
{
    const char *d = getenv("QTUNE_MODELS");
    return d && *d ? d : "../shared/models";
}

/* Reads DIR/rel into a malloc'd buffer (NUL added); NULL when absent. */
static uint8_t *read_model_file(const char *rel, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", models_dir(), rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    uint8_t *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

static const q_st_tensor *find_tensor(const q_st *st, const char *name)
{
    for (uint64_t i = 0; i < st->n_tensors; i++) {
        if (strcmp(st->tensors[i].name, name) == 0) {
            return &st->tensors[i];
        }
    }
    return NULL;
}

/* The invariants every accepted file must meet. */
static void check_tiling(const q_st *st, const uint8_t *buf, uint64_t size)
{
    uint64_t at = 0;
    assert_int_equal(st->data_offset, 8 + st->header_len);
    for (uint64_t i = 0; i < st->n_tensors; i++) {
        const q_st_tensor *t = &st->tensors[i];
        assert_int_equal(t->begin, at);
        assert_true(t->end >= t->begin);
        assert_int_equal(t->abs_offset, st->data_offset + t->begin);
        assert_ptr_equal(t->data, buf + t->abs_offset);
        assert_true(t->n_dims <= Q_ST_MAX_DIMS);
        at = t->end;
    }
    assert_int_equal(st->data_offset + at, size);
}

/* ----------------------------------------------------------- real files */

static void test_real_single(void **state)
{
    (void)state;
    size_t len;
    uint8_t *b = read_model_file("stories260K-hf/model.safetensors", &len);
    if (!b) {
        skip();
    }
    q_st *st = NULL;
    q_err err = {{0}};
    assert_int_equal(q_st_parse(b, len, "model.safetensors", &st, &err), Q_OK);
    /* python3: len(header) - 1 (the __metadata__ entry) == 48 */
    assert_int_equal(st->n_tensors, 48);
    assert_int_equal(st->header_len, 4944);
    assert_int_equal(st->data_offset, 4952);
    check_tiling(st, b, len);

    const q_st_tensor *t = find_tensor(st, "model.layers.0.input_layernorm.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, Q_DT_F32);
    assert_int_equal(t->n_dims, 1);
    assert_int_equal(t->shape[0], 64);
    assert_int_equal(t->begin, 262144);
    assert_int_equal(t->end, 262400);
    float f;
    memcpy(&f, t->data, 4);
    assert_float_equal(f, 0.9722429513931274f, 0.0f);

    t = &st->tensors[0]; /* sorted by begin */
    assert_string_equal(t->name, "lm_head.weight");
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->shape[0], 512);
    assert_int_equal(t->shape[1], 64);
    memcpy(&f, t->data, 4);
    assert_float_equal(f, -0.29474878311157227f, 0.0f);
    assert_string_equal(st->tensors[47].name, "model.norm.weight");
    assert_int_equal(st->tensors[47].end, 1171200);
    q_st_free(st);
    free(b);
}

static void test_real_sharded(void **state)
{
    (void)state;
    static const char *const shard[2] = {"model-00001-of-00002.safetensors",
                                         "model-00002-of-00002.safetensors"};
    size_t len;
    uint8_t *ixt = read_model_file("stories260K-hf-sharded/model.safetensors.index.json", &len);
    if (!ixt) {
        skip();
    }
    q_hf_index *ix = NULL;
    q_err err = {{0}};
    assert_int_equal(q_hf_parse_index((const char *)ixt, len, "index.json", &ix, &err), Q_OK);
    assert_int_equal(ix->n_files, 2);
    assert_string_equal(ix->files[0], shard[0]);
    assert_string_equal(ix->files[1], shard[1]);
    assert_int_equal(ix->n_entries, 48);

    uint64_t total = 0;
    for (int s = 0; s < 2; s++) {
        char rel[256];
        snprintf(rel, sizeof rel, "stories260K-hf-sharded/%s", shard[s]);
        uint8_t *b = read_model_file(rel, &len);
        assert_non_null(b);
        q_st *st = NULL;
        assert_int_equal(q_st_parse(b, len, shard[s], &st, &err), Q_OK);
        assert_int_equal(st->n_tensors, 24);
        check_tiling(st, b, len);
        /* every tensor of the shard is mapped to this shard, exactly once */
        for (uint64_t i = 0; i < st->n_tensors; i++) {
            int hits = 0;
            for (uint64_t e = 0; e < ix->n_entries; e++) {
                if (strcmp(ix->names[e], st->tensors[i].name) == 0) {
                    assert_int_equal(ix->file_of[e], s);
                    hits++;
                }
            }
            assert_int_equal(hits, 1);
        }
        total += st->n_tensors;
        if (s == 1) {
            const q_st_tensor *t = find_tensor(st, "model.layers.2.self_attn.k_proj.weight");
            assert_non_null(t);
            assert_int_equal(t->shape[0], 32);
            assert_int_equal(t->shape[1], 64);
            assert_int_equal(t->begin, 256);
            assert_int_equal(t->end, 8448);
        }
        q_st_free(st);
        free(b);
    }
    assert_int_equal(total, ix->n_entries);
    q_hf_index_free(ix);
    free(ixt);
}

static void check_stories_config(const char *rel)
{
    size_t len;
    uint8_t *b = read_model_file(rel, &len);
    if (!b) {
        skip();
    }
    q_arch a;
    q_err err = {{0}};
    assert_int_equal(q_hf_parse_config((const char *)b, len, "config.json", &a, &err), Q_OK);
    assert_string_equal(a.name, "llama");
    assert_int_equal(a.n_embd, 64);
    assert_int_equal(a.n_layer, 5);
    assert_int_equal(a.n_head, 8);
    assert_int_equal(a.n_head_kv, 4);
    assert_int_equal(a.n_ff, 172);
    assert_int_equal(a.n_vocab, 512);
    assert_int_equal(a.n_ctx, 2048);
    assert_int_equal(a.n_rot, 8);
    assert_float_equal(a.rope_theta, 10000.0, 0.0);
    assert_float_equal(a.norm_eps, 9.999999747378752e-06, 1e-20);
    assert_false(a.tied_embeddings);
    free(b);
}

static void test_real_config(void **state)
{
    (void)state;
    check_stories_config("stories260K-hf/config.json");
    check_stories_config("stories260K-hf-sharded/config.json");
}

/* ------------------------------------------------------- valid in memory */

/* Header order differs from data order; output is sorted by begin. */
static const char k_valid[] =
    "{\"b\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[8,20]},"
    "\"__metadata__\":{\"format\":\"pt\"},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"c\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[20,21]}}";

static void test_valid_small(void **state)
{
    (void)state;
    img m = img_make(k_valid, 21);
    q_st *st = NULL;
    q_err err = {{0}};
    assert_int_equal(q_st_parse(m.buf, m.size, "v.safetensors", &st, &err), Q_OK);
    assert_int_equal(st->n_tensors, 3);
    assert_int_equal(st->header_len, strlen(k_valid));
    check_tiling(st, m.buf, m.size);
    assert_string_equal(st->tensors[0].name, "a");
    assert_string_equal(st->tensors[1].name, "b");
    assert_string_equal(st->tensors[2].name, "c");
    assert_int_equal(st->tensors[1].dtype, Q_DT_F16);
    assert_int_equal(st->tensors[1].n_dims, 2);
    assert_int_equal(st->tensors[1].shape[0], 2);
    assert_int_equal(st->tensors[1].shape[1], 3);
    assert_int_equal(st->tensors[2].dtype, Q_DT_I8);
    assert_int_equal(st->tensors[2].n_dims, 0);
    assert_int_equal(st->tensors[2].data[0], (uint8_t)(20 * 7 + 1));
    q_st_free(st);
    free(m.buf);
}

static void expect_ok(const char *header, uint64_t data_len, uint64_t n_tensors)
{
    img m = img_make(header, data_len);
    q_st *st = NULL;
    q_err err = {{0}};
    q_status rc = q_st_parse(m.buf, m.size, "v.safetensors", &st, &err);
    if (rc != Q_OK) {
        print_error("%s\n", err.msg);
    }
    assert_int_equal(rc, Q_OK);
    assert_int_equal(st->n_tensors, n_tensors);
    check_tiling(st, m.buf, m.size);
    q_st_free(st);
    free(m.buf);
}

static void test_valid_edge(void **state)
{
    (void)state;
    expect_ok("{}", 0, 0);
    expect_ok("{\"__metadata__\":{}}", 0, 0);
    expect_ok("  {\"__metadata__\":{\"a\":\"b\",\"c\":\"\"}}\n", 0, 0);
    /* trailing space padding, as writers align the data buffer */
    expect_ok("{\"a\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}        ", 8, 1);
    /* empty tensors, at the start, in the middle and at the end */
    expect_ok("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[0,0]},"
              "\"y\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]},"
              "\"x\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
              "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[4,5]},"
              "\"v\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[5,5]}}",
              5, 5);
    /* unknown fields in an entry are ignored; 8 dimensions are allowed */
    expect_ok("{\"a\":{\"dtype\":\"U16\",\"shape\":[1,1,1,1,1,1,1,2],\"data_offsets\":[0,4],"
              "\"extra\":[1]}}", 4, 1);
}

static void test_all_dtypes(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        q_dtype id;
        unsigned size;
    } dts[] = {{"F64", Q_DT_F64, 8},   {"F32", Q_DT_F32, 4},         {"F16", Q_DT_F16, 2},
               {"BF16", Q_DT_BF16, 2}, {"I64", Q_DT_I64, 8},         {"I32", Q_DT_I32, 4},
               {"I16", Q_DT_I16, 2},   {"I8", Q_DT_I8, 1},           {"U8", Q_DT_U8, 1},
               {"BOOL", Q_DT_BOOL, 1}, {"F8_E4M3", Q_DT_F8_E4M3, 1}, {"F8_E5M2", Q_DT_F8_E5M2, 1},
               {"U16", Q_DT_U16, 2},   {"U32", Q_DT_U32, 4},         {"U64", Q_DT_U64, 8}};
    char hdr[4096];
    size_t o = 0;
    unsigned at = 0;
    o += (size_t)snprintf(hdr + o, sizeof hdr - o, "{");
    for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
        o += (size_t)snprintf(hdr + o, sizeof hdr - o,
                              "%s\"t%02zu\":{\"dtype\":\"%s\",\"shape\":[3],"
                              "\"data_offsets\":[%u,%u]}",
                              i ? "," : "", i, dts[i].name, at, at + 3 * dts[i].size);
        at += 3 * dts[i].size;
    }
    snprintf(hdr + o, sizeof hdr - o, "}");
    img m = img_make(hdr, at);
    q_st *st = NULL;
    q_err err = {{0}};
    assert_int_equal(q_st_parse(m.buf, m.size, "d.safetensors", &st, &err), Q_OK);
    assert_int_equal(st->n_tensors, sizeof dts / sizeof dts[0]);
    for (size_t i = 0; i < st->n_tensors; i++) {
        assert_int_equal(st->tensors[i].dtype, dts[i].id);
        assert_int_equal(st->tensors[i].end - st->tensors[i].begin, 3 * dts[i].size);
    }
    q_st_free(st);
    free(m.buf);
}

/* 50000 tensors, header in reverse data order: sorted output, and linear
 * work (a quadratic position lookup would take minutes here). The last entry
 * is then broken to check that its position is still exact. */
static void test_many_tensors(void **state)
{
    (void)state;
    enum { N = 50000 };
    size_t cap = (size_t)N * 80 + 16, o = 0;
    char *h = malloc(cap);
    assert_non_null(h);
    h[o++] = '{';
    for (int i = N - 1; i >= 0; i--) {
        o += (size_t)snprintf(h + o, cap - o,
                              "%s\"t%05d\":{\"dtype\":\"%s\",\"shape\":[1],"
                              "\"data_offsets\":[%d,%d]}",
                              i == N - 1 ? "" : ",", i, i == 0 ? "U8" : "I8", i, i + 1);
    }
    h[o++] = '}';
    h[o] = '\0';
    img m = img_make(h, N);
    q_st *st = NULL;
    q_err err = {{0}};
    assert_int_equal(q_st_parse(m.buf, m.size, "n.safetensors", &st, &err), Q_OK);
    assert_int_equal(st->n_tensors, N);
    check_tiling(st, m.buf, m.size);
    assert_string_equal(st->tensors[0].name, "t00000");
    assert_int_equal(st->tensors[0].dtype, Q_DT_U8);
    assert_string_equal(st->tensors[N - 1].name, "t49999");
    q_st_free(st);
    free(m.buf);

    char *last = strstr(h, "\"t00000\"");
    assert_non_null(last);
    char *dt = strstr(last, "\"U8\"");
    memcpy(dt, "\"U9\"", 4);
    char want[96];
    snprintf(want, sizeof want, "header byte 8+%zu (line 1, column %zu): tensor \"t00000\"",
             (size_t)(strstr(last, "\"dtype\"") - h), (size_t)(strstr(last, "\"dtype\"") - h) + 1);
    expect_bad_img(img_make(h, N), want);
    free(h);
}

/* --------------------------------------------------------- malformed files */

#define ENTRY(dt, shape, offs) "{\"dtype\":" dt ",\"shape\":" shape ",\"data_offsets\":" offs "}"
#define ONE(entry) "{\"a\":" entry "}"

typedef struct bad_case {
    const char *header;
    uint64_t data_len;
    const char *word;
} bad_case;

static const bad_case k_bad[] = {
    /* 0 header not JSON */
    {"{\"a\": {\"dtype\": \"F32\",}", 0, "(line 1, column 23)"},
    /* 1 empty header */
    {"", 0, "expected near end of file"},
    /* 2 not an object */
    {"[1, 2]", 0, "header is an array, not a JSON object"},
    /* 3 duplicate key */
    {"{\"a\":" ENTRY("\"F32\"", "[1]", "[0,4]") ",\"a\":" ENTRY("\"F32\"", "[1]", "[4,8]") "}",
     8, "duplicate object key"},
    /* 4 entry not an object */
    {"{\"a\":[1,2]}", 0, "tensor \"a\": entry is an array, not an object"},
    /* 5 missing dtype */
    {ONE("{\"shape\":[1],\"data_offsets\":[0,4]}"), 4, "missing \"dtype\""},
    /* 6 dtype wrongly typed */
    {ONE(ENTRY("4", "[1]", "[0,4]")), 4, "\"dtype\" is an integer, not a string"},
    /* 7 unknown dtype */
    {ONE(ENTRY("\"F7\"", "[1]", "[0,4]")), 4, "unknown dtype \"F7\""},
    /* 8 a ggml type is not a safetensors dtype */
    {ONE(ENTRY("\"Q4_K\"", "[256]", "[0,144]")), 144, "unknown dtype \"Q4_K\""},
    /* 9 the spelling is exact */
    {ONE(ENTRY("\"f32\"", "[1]", "[0,4]")), 4, "unknown dtype \"f32\""},
    /* 10 missing shape */
    {ONE("{\"dtype\":\"F32\",\"data_offsets\":[0,4]}"), 4, "missing \"shape\""},
    /* 11 shape wrongly typed */
    {ONE(ENTRY("\"F32\"", "4", "[0,16]")), 16, "\"shape\" is an integer, not an array"},
    /* 12 negative dimension */
    {ONE(ENTRY("\"F32\"", "[2,-1]", "[0,4]")), 4, "dimension 1 is negative (-1)"},
    /* 13 non-integer dimension */
    {ONE(ENTRY("\"F32\"", "[1.5]", "[0,4]")), 4, "dimension 0 is a real number, not an integer"},
    /* 14 string dimension */
    {ONE(ENTRY("\"F32\"", "[\"4\"]", "[0,16]")), 16, "dimension 0 is a string"},
    /* 15 too many dimensions */
    {ONE(ENTRY("\"F32\"", "[1,1,1,1,1,1,1,1,1]", "[0,4]")), 4, "9 dimensions, more than 8"},
    /* 16 element count overflow */
    {ONE(ENTRY("\"U8\"", "[4294967296,4294967296]", "[0,4]")), 4, "element count"},
    /* 17 byte count overflow */
    {ONE(ENTRY("\"F64\"", "[4611686018427387904]", "[0,4]")), 4, "overflow 64 bits"},
    /* 18 missing data_offsets */
    {ONE("{\"dtype\":\"F32\",\"shape\":[1]}"), 4, "missing \"data_offsets\""},
    /* 19 data_offsets with three numbers */
    {ONE(ENTRY("\"F32\"", "[1]", "[0,4,8]")), 4, "must be [begin, end]"},
    /* 20 data_offsets not an array */
    {ONE(ENTRY("\"F32\"", "[1]", "\"0,4\"")), 4, "must be [begin, end]"},
    /* 21 data_offsets with a real */
    {ONE(ENTRY("\"F32\"", "[1]", "[0,4.0]")), 4, "must be [begin, end]"},
    /* 22 negative offsets */
    {ONE(ENTRY("\"F32\"", "[0]", "[-4,-4]")), 0, "negative data_offsets"},
    /* 23 begin > end */
    {ONE(ENTRY("\"F32\"", "[1]", "[8,4]")), 8, "begin 8 > end 4"},
    /* 24 shape × dtype size != span */
    {ONE(ENTRY("\"F32\"", "[2]", "[0,4]")), 4, "size mismatch"},
    /* 25 offsets past the data buffer */
    {ONE(ENTRY("\"F32\"", "[4]", "[0,16]")), 8, "past the end of the data buffer"},
    /* 26 gap before the first tensor */
    {ONE(ENTRY("\"F32\"", "[1]", "[4,8]")), 8, "gap: data bytes [0, 4)"},
    /* 27 gap between tensors */
    {"{\"a\":" ENTRY("\"F32\"", "[1]", "[0,4]") ",\"b\":" ENTRY("\"F32\"", "[1]", "[8,12]") "}",
     12, "gap: data bytes [4, 8) between tensors \"a\" and \"b\""},
    /* 28 overlap */
    {"{\"a\":" ENTRY("\"F32\"", "[2]", "[0,8]") ",\"b\":" ENTRY("\"F32\"", "[1]", "[4,8]") "}",
     8, "overlaps tensor \"a\""},
    /* 29 same range twice */
    {"{\"a\":" ENTRY("\"F32\"", "[1]", "[0,4]") ",\"b\":" ENTRY("\"I32\"", "[1]", "[0,4]") "}",
     4, "overlaps"},
    /* 30 trailing bytes */
    {ONE(ENTRY("\"F32\"", "[1]", "[0,4]")), 6, "2 trailing bytes"},
    /* 31 trailing bytes with no tensor */
    {"{}", 3, "3 trailing bytes"},
    /* 32 __metadata__ not an object */
    {"{\"__metadata__\":[\"pt\"]}", 0, "\"__metadata__\" is an array"},
    /* 33 __metadata__ value not a string */
    {"{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}", 0, "value of \"n\" is an integer"},
    /* 34 invalid UTF-8 */
    {"{\"\xff\":1}", 0, "unable to decode byte 0xff"},
    /* 35 garbage after the object */
    {"{} x", 0, "end of file expected"},
    /* 36 integer beyond 64 bits */
    {ONE(ENTRY("\"F32\"", "[1]", "[0,99999999999999999999]")), 4, "too big integer"},
    /* 37 duplicate key inside an entry */
    {ONE("{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}"), 4,
     "duplicate object key"},
};

static void test_bad_case(void **state)
{
    const bad_case *c = *state;
    expect_bad_img(img_make(c->header, c->data_len), c->word);
}

static void test_bad_short(void **state)
{
    (void)state;
    static const uint8_t b[7] = {2, 0, 0, 0, 0, 0, 0};
    for (uint64_t n = 0; n < 8; n++) {
        q_st *st = NULL;
        q_err err = {{0}};
        assert_int_equal(q_st_parse(n ? b : NULL, n, "s.safetensors", &st, &err), Q_EDATA);
        expect_word(err.msg, "too short");
        expect_word(err.msg, "offset 0");
    }
}

static void test_bad_hlen_past(void **state)
{
    (void)state;
    expect_bad_img(img_make_len(1000, "{}", 2, 0), "header length 1000 runs past the end");
    expect_bad_img(img_make_len(3, "{}", 2, 0), "header length 3 runs past");
    expect_bad_img(img_make_len(UINT64_MAX, "{}", 2, 0), "exceeds the limit");
}

static void test_bad_hlen_cap(void **state)
{
    (void)state;
    expect_bad_img(img_make_len(Q_ST_MAX_HEADER + 1ull, "{}", 2, 0), "exceeds the limit");
}

static void test_bad_nul_in_header(void **state)
{
    (void)state;
    static const char h[] = "{\"a\":\"x\0y\"}";
    expect_bad_img(img_make_len(sizeof h - 1, h, sizeof h - 1, 0), "header byte 8+");
}

/* Errors found after parsing point at the offending key. */
static void test_bad_positions(void **state)
{
    (void)state;
    static const char h1[] = "{\"__metadata__\":{\"format\":\"pt\"},\"w\":"
                             "{\"shape\":[1],\"data_offsets\":[0,4],\"dtype\":\"X\"}}";
    char want[64];
    snprintf(want, sizeof want, "header byte 8+%zu (line 1, column %zu)",
             (size_t)(strstr(h1, "\"dtype\"") - h1), (size_t)(strstr(h1, "\"dtype\"") - h1) + 1);
    expect_bad_img(img_make(h1, 4), want);

    static const char h2[] = "{\n  \"a\": {\n    \"dtype\": \"F32\",\n    \"shape\": [1],\n"
                             "    \"data_offsets\": [0, 5]\n  }\n}";
    snprintf(want, sizeof want, "header byte 8+%zu (line 5, column 5)",
             (size_t)(strstr(h2, "\"data_offsets\"") - h2));
    expect_bad_img(img_make(h2, 5), want);

    /* the entry itself when it is not an object; a multi-byte key before it */
    static const char h3[] = "{\"\xc3\xa9\xc3\xa9\":{\"dtype\":\"U8\",\"shape\":[0],"
                             "\"data_offsets\":[0,0]}, \"b\": 7}";
    snprintf(want, sizeof want, "header byte 8+%zu (line 1, column %zu)",
             (size_t)(strstr(h3, "7}") - h3), (size_t)(strstr(h3, "7}") - h3) - 1);
    expect_bad_img(img_make(h3, 0), want);

    /* jansson's own position for syntax errors */
    expect_bad_img(img_make("{\n\"a\":1,\n\"a\":2}", 0), "(line 3, column 3)");

    /* gaps and trailing bytes name the file offset */
    expect_bad_img(img_make("{}", 3), "t.safetensors: offset 10: 3 trailing bytes");
}

/* A name with a newline must not break the one-line message. */
static void test_bad_name_control(void **state)
{
    (void)state;
    expect_bad_img(img_make("{\"x\\ny\":{\"dtype\":\"F9\"}}", 0), "tensor \"x?y\"");
    char h[600];
    memset(h, 0, sizeof h);
    strcpy(h, "{\"");
    memset(h + 2, 'n', 300);
    strcat(h, "\":3}");
    expect_bad_img(img_make(h, 0), "nnn...\": entry is an integer");
}

/* -------------------------------------------------- truncation, mutation */

static void test_truncation_sweep(void **state)
{
    (void)state;
    img m = img_make(k_valid, 21);
    for (uint64_t n = 0; n < m.size; n++) {
        uint8_t *b = malloc(n ? n : 1);
        assert_non_null(b);
        memcpy(b, m.buf, n);
        q_st *st = NULL;
        q_err err = {{0}};
        assert_int_equal(q_st_parse(b, n, "t.safetensors", &st, &err), Q_EDATA);
        assert_null(st);
        msg_is_one_line(err.msg, "t.safetensors: ");
        free(b);
    }
    free(m.buf);

    /* the real file, cut anywhere around its header and in its data */
    size_t len;
    uint8_t *b = read_model_file("stories260K-hf/model.safetensors", &len);
    if (!b) {
        return;
    }
    for (size_t n = 0; n < len; n += n < 5200 ? 1 : 4099) {
        q_st *st = NULL;
        q_err err = {{0}};
        assert_int_equal(q_st_parse(b, n, "m.safetensors", &st, &err), Q_EDATA);
        msg_is_one_line(err.msg, "m.safetensors: ");
    }
    free(b);
}

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_mutations(void **state)
{
    (void)state;
    static const char alphabet[] = "{}[]\",:0123456789-.eE \\u_FIUB";
    uint64_t seed = 0x5eed5a7e75ull;
    img m = img_make(k_valid, 21);
    const size_t hlen = strlen(k_valid);
    int ok = 0, bad = 0;
    for (int it = 0; it < 20000; it++) {
        uint8_t *b = malloc(m.size);
        assert_non_null(b);
        memcpy(b, m.buf, m.size);
        int nmut = 1 + (int)(rng_next(&seed) % 4);
        for (int j = 0; j < nmut; j++) {
            uint64_t r = rng_next(&seed);
            size_t at = r % 16 == 0 ? (size_t)(r >> 8) % 8 : 8 + (size_t)(r >> 8) % hlen;
            uint64_t c = rng_next(&seed);
            b[at] = c % 3 == 0 ? (uint8_t)(c >> 8) : (uint8_t)alphabet[(c >> 8) %
                                                                      (sizeof alphabet - 1)];
        }
        q_st *st = NULL;
        q_err err = {{0}};
        q_status rc = q_st_parse(b, m.size, "t.safetensors", &st, &err);
        if (rc == Q_OK) {
            check_tiling(st, b, m.size);
            q_st_free(st);
            ok++;
        } else {
            assert_int_equal(rc, Q_EDATA);
            assert_null(st);
            msg_is_one_line(err.msg, "t.safetensors: ");
            bad++;
        }
        free(b);
    }
    /* both outcomes occur: the mutations reach past the JSON syntax check */
    assert_true(ok > 0);
    assert_true(bad > ok);
    free(m.buf);
}

/* ----------------------------------------------------------- config.json */

static q_status cfg(const char *text, q_arch *a, q_err *err)
{
    return q_hf_parse_config(text, strlen(text), "config.json", a, err);
}

static void expect_bad_cfg(const char *text, const char *w1, const char *w2)
{
    q_arch a;
    q_err err = {{0}};
    assert_int_equal(cfg(text, &a, &err), Q_EDATA);
    msg_is_one_line(err.msg, "config.json: ");
    expect_word(err.msg, w1);
    if (w2) {
        expect_word(err.msg, w2);
    }
}

static void test_config_bad(void **state)
{
    (void)state;
    expect_bad_cfg("{\"hidden_size\": 64,\n \"vocab_size\": }", "(line 2, column 16)",
                   "unexpected token");
    expect_bad_cfg("", "line 1", "expected");
    expect_bad_cfg("[{\"hidden_size\": 64}]", "config is an array, not a JSON object", NULL);
    expect_bad_cfg("{\"model_type\": \"llama\",\n  \"hidden_size\": \"64\"}",
                   "(line 2, column 3): \"hidden_size\"", "not a string");
    expect_bad_cfg("{\"hidden_size\": 64.5}", "\"hidden_size\"", "real number");
    expect_bad_cfg("{\"num_key_value_heads\": -4}", "\"num_key_value_heads\"", "not -4");
    expect_bad_cfg("{\"rope_theta\": \"1e4\"}", "\"rope_theta\"", "number");
    expect_bad_cfg("{\"rms_norm_eps\": [1e-5]}", "\"rms_norm_eps\"", "array");
    expect_bad_cfg("{\"tie_word_embeddings\": \"yes\"}", "\"tie_word_embeddings\"", "string");
    expect_bad_cfg("{\"architectures\": \"LlamaForCausalLM\"}", "\"architectures\"", NULL);
    expect_bad_cfg("{\"architectures\": [7]}", "\"architectures\"", NULL);
    expect_bad_cfg("{\"model_type\": 3}", "\"model_type\"", NULL);
    expect_bad_cfg("{\"model_type\": \"a name that is far too long to be a model type\"}",
                   "\"model_type\"", NULL);
    expect_bad_cfg("{\"hidden_size\": 64, \"hidden_size\": 65}", "duplicate object key", NULL);
}

static void test_config_names(void **state)
{
    (void)state;
    q_arch a;
    q_err err = {{0}};
    assert_int_equal(cfg("{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 128,"
                         " \"num_attention_heads\": 4, \"num_key_value_heads\": null}",
                         &a, &err), Q_OK);
    assert_string_equal(a.name, "mistral");
    assert_int_equal(a.n_embd, 128);
    assert_int_equal(a.n_head, 4);
    assert_int_equal(a.n_head_kv, 4); /* defaults to the head count */
    assert_int_equal(a.n_rot, 32);
    assert_float_equal(a.rope_theta, 10000.0, 0.0);
    assert_false(a.tied_embeddings);

    assert_int_equal(cfg("{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\","
                         " \"hidden_size\": 896, \"num_attention_heads\": 14,"
                         " \"num_key_value_heads\": 2, \"head_dim\": 128,"
                         " \"rope_theta\": 1000000.0, \"rms_norm_eps\": 1e-06,"
                         " \"tie_word_embeddings\": true}", &a, &err), Q_OK);
    assert_string_equal(a.name, "qwen2");
    assert_int_equal(a.n_head_kv, 2);
    assert_int_equal(a.n_rot, 128);
    assert_float_equal(a.rope_theta, 1e6, 0.0);
    assert_float_equal(a.norm_eps, 1e-6, 0.0);
    assert_true(a.tied_embeddings);

    assert_int_equal(cfg("{\"architectures\": [\"GPT2LMHeadModel\"]}", &a, &err), Q_OK);
    assert_string_equal(a.name, "gpt2");
    assert_int_equal(cfg("{\"architectures\": [\"LlamaForCausalLM\"]}", &a, &err), Q_OK);
    assert_string_equal(a.name, "llama");
    assert_int_equal(cfg("{\"model_type\": \"Phi3\", \"hidden_size\": 3072,"
                         " \"num_attention_heads\": 32, \"partial_rotary_factor\": 0.5}",
                         &a, &err), Q_OK);
    assert_string_equal(a.name, "phi3");
    assert_int_equal(a.n_rot, 48);
    assert_int_equal(cfg("{}", &a, &err), Q_OK);
    assert_string_equal(a.name, "");
    assert_int_equal(a.n_rot, 0);
}

/* ------------------------------------------------------------- index.json */

static q_status idx(const char *text, q_hf_index **ix, q_err *err)
{
    return q_hf_parse_index(text, strlen(text), "index.json", ix, err);
}

static void expect_bad_idx(const char *text, const char *word)
{
    q_hf_index *ix = (q_hf_index *)(uintptr_t)1;
    q_err err = {{0}};
    assert_int_equal(idx(text, &ix, &err), Q_EDATA);
    assert_null(ix);
    msg_is_one_line(err.msg, "index.json: ");
    expect_word(err.msg, word);
}

static void test_index(void **state)
{
    (void)state;
    q_hf_index *ix = NULL;
    q_err err = {{0}};
    assert_int_equal(idx("{\"metadata\": {\"total_size\": 12}, \"weight_map\": {"
                         "\"x\": \"b.safetensors\", \"y\": \"a.safetensors\","
                         " \"z\": \"b.safetensors\"}}", &ix, &err), Q_OK);
    assert_int_equal(ix->n_files, 2);
    assert_string_equal(ix->files[0], "b.safetensors");
    assert_string_equal(ix->files[1], "a.safetensors");
    assert_int_equal(ix->n_entries, 3);
    assert_string_equal(ix->names[2], "z");
    assert_int_equal(ix->file_of[0], 0);
    assert_int_equal(ix->file_of[1], 1);
    assert_int_equal(ix->file_of[2], 0);
    q_hf_index_free(ix);

    assert_int_equal(idx("{\"weight_map\": {}}", &ix, &err), Q_OK);
    assert_int_equal(ix->n_files, 0);
    assert_int_equal(ix->n_entries, 0);
    q_hf_index_free(ix);

    expect_bad_idx("{\"weight_map\": {\"x\": 3}}", "weight_map[\"x\"] is an integer");
    expect_bad_idx("{\"weight_map\": {\"x\": \"a/b.safetensors\"}}", "plain name");
    expect_bad_idx("{\"weight_map\": {\"x\": \"..\"}}", "\"..\"");
    expect_bad_idx("{\"weight_map\": {\"x\": \".hidden\"}}", "plain name");
    expect_bad_idx("{\"weight_map\": {\"x\": \"\"}}", "plain name");
    expect_bad_idx("{\"metadata\": {}}", "missing \"weight_map\"");
    expect_bad_idx("{\"weight_map\": [\"a\"]}", "\"weight_map\" is an array");
    expect_bad_idx("{\"metadata\": 5, \"weight_map\": {}}", "\"metadata\" is an integer");
    expect_bad_idx("{\"weight_map\": {\"x\": \"a\", \"x\": \"b\"}}", "duplicate object key");
    expect_bad_idx("[]", "not a JSON object");
    expect_bad_idx("{\"weight_map\": {\"x\": \"a\"", "(line 1, column");
    /* the position of the offending entry */
    expect_bad_idx("{\"weight_map\": {\n \"ok\": \"a\",\n \"bad\": \"../a\"}}",
                   "(line 3, column 2): weight_map[\"bad\"]");
}

#define N_BAD (sizeof k_bad / sizeof k_bad[0])

int main(void)
{
    static char bad_names[N_BAD][24];
    struct CMUnitTest tests[N_BAD + 32];
    size_t n = 0;
#define ADD(f) tests[n++] = (struct CMUnitTest)cmocka_unit_test(f)
    ADD(test_real_single);
    ADD(test_real_sharded);
    ADD(test_real_config);
    ADD(test_valid_small);
    ADD(test_valid_edge);
    ADD(test_all_dtypes);
    ADD(test_many_tensors);
    for (size_t i = 0; i < N_BAD; i++) {
        snprintf(bad_names[i], sizeof bad_names[i], "test_bad_case_%02zu", i);
        tests[n] = (struct CMUnitTest)cmocka_unit_test_prestate(test_bad_case, (void *)&k_bad[i]);
        tests[n++].name = bad_names[i];
    }
    ADD(test_bad_short);
    ADD(test_bad_hlen_past);
    ADD(test_bad_hlen_cap);
    ADD(test_bad_nul_in_header);
    ADD(test_bad_positions);
    ADD(test_bad_name_control);
    ADD(test_truncation_sweep);
    ADD(test_mutations);
    ADD(test_config_bad);
    ADD(test_config_names);
    ADD(test_index);
#undef ADD
    return _cmocka_run_group_tests("st", tests, n, NULL, NULL);
}
