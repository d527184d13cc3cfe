/* test_tokenizer.c — SentencePiece-style and byte-level BPE tokenizers.
 *
 * Expected ids for the real vocabularies were produced by llama.cpp's own tokenizer
 * (llama-cpp-python 0.3.36, Llama(vocab_only=True).tokenize(text, add_bos=True)).
 * Byte-level BPE and tokenizer.json vocabularies are built on the fly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "an_tokenizer.h"
#include "q_gguf.h"
#include "q_model.h"

#include "test_util.h"

static an_tok *tok_of(const char *rel, q_model **mp)
{
    char p[1200];
    model_path(p, sizeof p, rel);
    *mp = open_model(rel);
    q_err err = {{0}};
    an_tok *tk = NULL;
    if (an_tok_from_gguf((*mp)->gguf, p, &tk, &err) != Q_OK)
        fail_msg("%s", err.msg);
    return tk;
}

static void check_ids(const an_tok *tk, const char *text, const int32_t *want, int64_t nwant)
{
    int32_t *ids = NULL;
    int64_t n = 0;
    q_err err = {{0}};
    assert_int_equal(an_tok_encode(tk, text, strlen(text), true, &ids, &n, &err), Q_OK);
    if (n != nwant)
        fail_msg("\"%s\": %lld ids, want %lld", text, (long long)n, (long long)nwant);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] != want[i])
            fail_msg("\"%s\": id %lld is %d, want %d", text, (long long)i, ids[i], want[i]);
    /* Decoding gives the text back (after the space the tokenizer prepends). */
    char buf[1024] = "";
    size_t len = 0;
    for (int64_t i = 0; i < n; i++)
        len += an_tok_decode(tk, ids[i], buf + len, sizeof buf - len);
    const char *b = an_tok_get_kind(tk) == AN_TOK_SPM && buf[0] == ' ' ? buf + 1 : buf;
    assert_string_equal(b, text);
    free(ids);
}

#define N(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

static void test_spm_stories(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m;
    an_tok *tk = tok_of("stories260K.gguf", &m);
    assert_int_equal(an_tok_get_kind(tk), AN_TOK_SPM);
    assert_int_equal(an_tok_n_vocab(tk), 512);
    assert_int_equal(an_tok_bos(tk), 1);
    assert_int_equal(an_tok_eos(tk), 2);
    static const int32_t a[] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421,
                                395, 317, 426};
    check_ids(tk, "Once upon a time, there was a little girl named Lily.", a, N(a));
    /* Byte fallback (é, the llama emoji) and double spaces, as llama.cpp gives them. */
    static const int32_t b[] = {1, 346, 306, 414, 263, 304, 341, 432, 270, 485, 306, 414, 410,
                                243, 162, 169, 156, 443, 410, 410, 444};
    check_ids(tk, "Hello world, h\xc3\xa9llo \xf0\x9f\xa6\x99!  x", b, N(b));
    an_tok_free(tk);
    q_model_close(m);
}

static void test_spm_llama2_vocab(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m;
    an_tok *tk = tok_of("ollama_llama-2-tiny-random.gguf", &m);
    assert_int_equal(an_tok_n_vocab(tk), 32000);
    static const int32_t a[] = {1, 15043, 3186, 29892, 298, 3610, 417, 29871, 243, 162, 169, 156,
                                29991, 29871, 921};
    check_ids(tk, "Hello world, h\xc3\xa9llo \xf0\x9f\xa6\x99!  x", a, N(a));
    assert_int_equal(an_tok_find(tk, "<0x0A>", 6), 13);
    an_tok_free(tk);
    q_model_close(m);
}

/* ---- byte-level BPE from a GGUF built here ---- */

/* GPT-2's byte map for printable ASCII is the identity; space is "Ġ" (U+0120). */
static const char *const bpe_tokens[] = {
    "<|endoftext|>", "\xc4\xa0", "t", "h", "e", "a", "n", "d", "!", "1", "2",
    "\xc4\x8a", /* newline: U+010A */
    "th", "the", "\xc4\xa0the", "an", "and", "\xc4\xa0\x61nd", "12", "\xc4\xa0t", "he",
};
static const char *const bpe_merges[] = {"t h", "th e", "\xc4\xa0 the", "a n", "an d",
                                         "\xc4\xa0 and", "1 2", "\xc4\xa0 t", "h e"};

static q_status make_gguf(const char *model, bool with_merges, bool bad_scores, q_map *map,
                          q_gguf **g, q_err *err)
{
    q_gguf_w *w = q_gguf_w_new(0);
    assert_non_null(w);
    size_t nt = sizeof bpe_tokens / sizeof bpe_tokens[0];
    assert_int_equal(q_gguf_w_set_str(w, "tokenizer.ggml.model", model), Q_OK);
    assert_int_equal(q_gguf_w_set_arr_str(w, "tokenizer.ggml.tokens", bpe_tokens, nt), Q_OK);
    if (with_merges)
        assert_int_equal(q_gguf_w_set_arr_str(w, "tokenizer.ggml.merges", bpe_merges,
                                              sizeof bpe_merges / sizeof bpe_merges[0]),
                         Q_OK);
    float scores[32] = {0};
    assert_int_equal(q_gguf_w_set_arr_f32(w, "tokenizer.ggml.scores", scores,
                                          bad_scores ? 3 : nt), Q_OK);
    assert_int_equal(q_gguf_w_set_u32(w, "tokenizer.ggml.bos_token_id", 0), Q_OK);
    int32_t types[32];
    for (size_t i = 0; i < nt; i++)
        types[i] = i == 0 ? 3 : 1;
    assert_int_equal(q_gguf_w_set_arr_i32(w, "tokenizer.ggml.token_type", types, nt), Q_OK);
    char path[] = "/tmp/qtune_tok_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "wb");
    assert_non_null(fp);
    assert_int_equal(q_gguf_w_write_header(w, fp, err), Q_OK);
    assert_int_equal(q_gguf_w_finish(w, err), Q_OK);
    fclose(fp);
    q_gguf_w_free(w);
    assert_int_equal(q_map_file(path, map, err), Q_OK);
    unlink(path);
    assert_int_equal(q_gguf_parse(map->data, map->size, "bpe.gguf", g, err), Q_OK);
    an_tok *tk = NULL;
    q_status st = an_tok_from_gguf(*g, "bpe.gguf", &tk, err);
    an_tok_free(tk);
    return st;
}

static void test_bpe_gguf(void **state)
{
    (void)state;
    q_map map;
    q_gguf *g = NULL;
    q_err err = {{0}};
    assert_int_equal(make_gguf("gpt2", true, false, &map, &g, &err), Q_OK);
    an_tok *tk = NULL;
    assert_int_equal(an_tok_from_gguf(g, "bpe.gguf", &tk, &err), Q_OK);
    assert_int_equal(an_tok_get_kind(tk), AN_TOK_BPE);
    /* "the" "Ġand" "Ġthe" "!" "Ċ" "12" — pre-tokens: "the", " and", " the", "!", "\n", "12" */
    static const int32_t a[] = {0, 13, 17, 14, 8, 11, 18};
    check_ids(tk, "the and the!\n12", a, N(a));
    /* "Ġt" then "he" merge ranks: " tea" has no "a"... "e"+"a" are single tokens. */
    static const int32_t b[] = {0, 19, 4, 5};
    check_ids(tk, " tea", b, N(b));
    an_tok_free(tk);
    q_gguf_free(g);
    q_unmap(&map);
}

static void test_bad_metadata(void **state)
{
    (void)state;
    q_map map;
    q_gguf *g = NULL;
    q_err err = {{0}};
    assert_int_equal(make_gguf("bert", true, false, &map, &g, &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, "bert"));
    q_gguf_free(g);
    q_unmap(&map);
    g = NULL;
    assert_int_equal(make_gguf("gpt2", false, false, &map, &g, &err), Q_EDATA);
    assert_non_null(strstr(err.msg, "tokenizer.ggml.merges"));
    q_gguf_free(g);
    q_unmap(&map);
    g = NULL;
    assert_int_equal(make_gguf("llama", false, true, &map, &g, &err), Q_EDATA);
    assert_non_null(strstr(err.msg, "tokenizer.ggml.scores"));
    q_gguf_free(g);
    q_unmap(&map);
}

/* ---- tokenizer.json ---- */

static char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/qtune_tokjson_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_json(void **state)
{
    (void)state;
    /* Byte-level (GPT-2 / Llama-3 style) with merges as [a, b] pairs. */
    const char *bl =
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"t\": 0, \"h\": 1, \"e\": 2, "
        "\"\xc4\xa0\": 3, \"th\": 4, \"the\": 5, \"\xc4\xa0the\": 6},"
        " \"merges\": [[\"t\", \"h\"], [\"th\", \"e\"], [\"\xc4\xa0\", \"the\"]]},"
        " \"pre_tokenizer\": {\"type\": \"ByteLevel\"},"
        " \"added_tokens\": [{\"id\": 7, \"content\": \"<|begin_of_text|>\", \"special\": true}]}";
    char *p = write_tmp(bl);
    an_tok *tk = NULL;
    q_err err = {{0}};
    assert_int_equal(an_tok_from_json(p, &tk, &err), Q_OK);
    unlink(p);
    assert_int_equal(an_tok_get_kind(tk), AN_TOK_BPE);
    assert_int_equal(an_tok_n_vocab(tk), 8);
    assert_int_equal(an_tok_bos(tk), 7);
    static const int32_t a[] = {7, 5, 6, 6};
    check_ids(tk, "the the the", a, N(a));
    an_tok_free(tk);
    /* SentencePiece-style (llama HF): "▁" pieces, byte fallback, merges "a b". */
    const char *sp =
        "{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"<unk>\": 0, "
        "\"<s>\": 1, \"</s>\": 2, \"<0x21>\": 3, \"\xe2\x96\x81\": 4, \"h\": 5, \"i\": 6, "
        "\"hi\": 7, \"\xe2\x96\x81hi\": 8}, \"merges\": [\"h i\", \"\xe2\x96\x81 hi\"]},"
        " \"normalizer\": {\"type\": \"Replace\"}}";
    p = write_tmp(sp);
    assert_int_equal(an_tok_from_json(p, &tk, &err), Q_OK);
    unlink(p);
    assert_int_equal(an_tok_get_kind(tk), AN_TOK_SPM);
    static const int32_t b[] = {1, 8, 8, 3};
    check_ids(tk, "hi hi!", b, N(b));
    an_tok_free(tk);
    /* Malformed: a JSON error names line and column; a WordPiece model is refused. */
    p = write_tmp("{\"model\": {\n  \"vocab\": [1,,]}}");
    assert_int_equal(an_tok_from_json(p, &tk, &err), Q_EDATA);
    unlink(p);
    assert_non_null(strstr(err.msg, ":2:"));
    p = write_tmp("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}, \"merges\": []}}");
    assert_int_equal(an_tok_from_json(p, &tk, &err), Q_EUSAGE);
    unlink(p);
    assert_int_equal(an_tok_from_json("/nonexistent/tokenizer.json", &tk, &err), Q_ENOINPUT);
}

/* Random bytes survive encode → decode with byte fallback (SPM) and the byte map (BPE). */
static void test_roundtrip_random(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m;
    an_tok *tk = tok_of("stories260K.gguf", &m);
    uint32_t s = 12345;
    for (int it = 0; it < 50; it++) {
        char text[200];
        int n = 1 + it * 3 % 190;
        for (int i = 0; i < n; i++) {
            s = s * 1103515245u + 12345u;
            uint8_t c = (uint8_t)(s >> 16);
            text[i] = (char)(c == 0 ? 'a' : c);
        }
        text[n] = 0;
        int32_t *ids = NULL;
        int64_t k = 0;
        q_err err = {{0}};
        assert_int_equal(an_tok_encode(tk, text, (size_t)n, false, &ids, &k, &err), Q_OK);
        char buf[1024] = "";
        size_t len = 0;
        for (int64_t i = 0; i < k; i++)
            len += an_tok_decode(tk, ids[i], buf + len, sizeof buf - len);
        assert_true(len == (size_t)n + 1);
        assert_memory_equal(buf + 1, text, (size_t)n);
        free(ids);
    }
    an_tok_free(tk);
    q_model_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_stories),
        cmocka_unit_test(test_spm_llama2_vocab),
        cmocka_unit_test(test_bpe_gguf),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_roundtrip_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
