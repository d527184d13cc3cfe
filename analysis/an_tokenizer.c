/* an_tokenizer.c — SentencePiece-style and byte-level BPE tokenizers (see an_tokenizer.h). */
#include "an_tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Token types as GGUF stores them (tokenizer.ggml.token_type). */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* Open-addressing map from byte strings to int32 values. */
typedef struct tk_map {
    uint64_t cap;        /* power of two */
    const char **key;    /* borrowed or owned per user */
    uint32_t *klen;
    int32_t *val;
} tk_map;

struct an_tok {
    an_tok_kind kind;
    bool by_rank;        /* merge by merge rank (BPE, tokenizer.json) instead of score */
    bool space_prefix;   /* SPM: prepend "▁" */
    int32_t n_vocab;
    char **piece;        /* (n_vocab) owned NUL-terminated strings */
    uint32_t *plen;      /* (n_vocab) */
    float *score;        /* (n_vocab) */
    int32_t *type;       /* (n_vocab) */
    int32_t bos, eos, unk;
    int32_t byte_tok[256]; /* SPM <0xNN> ids, -1 when absent */
    tk_map vocab;        /* piece → id */
    tk_map merges;       /* "left right" → rank (keys owned) */
    char **merge_keys;   /* owned keys of merges */
    int64_t n_merges;
    uint32_t b2u[256];   /* byte → code point (BPE) */
    int16_t u2b[512];    /* code point → byte, -1 */
};

static uint64_t tk_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool tk_map_init(tk_map *m, uint64_t n)
{
    m->cap = 16;
    while (m->cap < 2 * n + 16)
        m->cap <<= 1;
    m->key = calloc(m->cap, sizeof *m->key);
    m->klen = calloc(m->cap, sizeof *m->klen);
    m->val = calloc(m->cap, sizeof *m->val);
    return m->key && m->klen && m->val;
}

static void tk_map_free(tk_map *m)
{
    free(m->key);
    free(m->klen);
    free(m->val);
}

/* Inserts key (borrowed); keeps the first value for a duplicate key. */
static void tk_map_put(tk_map *m, const char *k, size_t n, int32_t v)
{
    uint64_t i = tk_hash(k, n) & (m->cap - 1);
    while (m->key[i]) {
        if (m->klen[i] == n && !memcmp(m->key[i], k, n))
            return;
        i = (i + 1) & (m->cap - 1);
    }
    m->key[i] = k;
    m->klen[i] = (uint32_t)n;
    m->val[i] = v;
}

static int32_t tk_map_get(const tk_map *m, const char *k, size_t n)
{
    if (!m->cap)
        return -1;
    uint64_t i = tk_hash(k, n) & (m->cap - 1);
    while (m->key[i]) {
        if (m->klen[i] == n && !memcmp(m->key[i], k, n))
            return m->val[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

void an_tok_free(an_tok *tk)
{
    if (!tk)
        return;
    if (tk->piece)
        for (int32_t i = 0; i < tk->n_vocab; i++)
            free(tk->piece[i]);
    free(tk->piece);
    free(tk->plen);
    free(tk->score);
    free(tk->type);
    tk_map_free(&tk->vocab);
    tk_map_free(&tk->merges);
    if (tk->merge_keys)
        for (int64_t i = 0; i < tk->n_merges; i++)
            free(tk->merge_keys[i]);
    free(tk->merge_keys);
    free(tk);
}

/* GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to 256+. */
static void tk_init_bytes(an_tok *tk)
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
        tk->b2u[b] = keep ? (uint32_t)b : (uint32_t)(256 + n++);
    }
    for (int i = 0; i < 512; i++)
        tk->u2b[i] = -1;
    for (int b = 0; b < 256; b++)
        tk->u2b[tk->b2u[b]] = (int16_t)b;
}

static size_t tk_utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2; /* code points of the byte map are < 0x800 */
}

/* Length of the UTF-8 sequence starting at s (1 for invalid bytes), clamped to n. */
static size_t tk_utf8_len(const char *s, size_t n)
{
    uint8_t c = (uint8_t)s[0];
    size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (l > n)
        l = n;
    for (size_t i = 1; i < l; i++)
        if (((uint8_t)s[i] & 0xc0) != 0x80)
            return 1;
    return l;
}

/* Indexes pieces, byte tokens and merges after the vocabulary is filled. */
static q_status tk_finish(an_tok *tk, q_err *err)
{
    if (!tk_map_init(&tk->vocab, (uint64_t)tk->n_vocab))
        return q_fail(err, Q_ENOMEM, "out of memory");
    for (int32_t i = 0; i < tk->n_vocab; i++)
        tk_map_put(&tk->vocab, tk->piece[i], tk->plen[i], i);
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        tk->byte_tok[b] = tk_map_get(&tk->vocab, s, 6);
    }
    if (tk->n_merges) {
        if (!tk_map_init(&tk->merges, (uint64_t)tk->n_merges))
            return q_fail(err, Q_ENOMEM, "out of memory");
        for (int64_t i = 0; i < tk->n_merges; i++)
            tk_map_put(&tk->merges, tk->merge_keys[i], strlen(tk->merge_keys[i]), (int32_t)i);
    }
    tk_init_bytes(tk);
    return Q_OK;
}

static q_status tk_alloc_vocab(an_tok *tk, int64_t n, q_err *err)
{
    if (n < 1 || n > (1 << 24))
        return q_fail(err, Q_EDATA, "vocabulary of %lld tokens", (long long)n);
    tk->n_vocab = (int32_t)n;
    tk->piece = calloc((size_t)n, sizeof *tk->piece);
    tk->plen = calloc((size_t)n, sizeof *tk->plen);
    tk->score = calloc((size_t)n, sizeof *tk->score);
    tk->type = calloc((size_t)n, sizeof *tk->type);
    if (!tk->piece || !tk->plen || !tk->score || !tk->type)
        return q_fail(err, Q_ENOMEM, "out of memory");
    return Q_OK;
}

static char *tk_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

q_status an_tok_from_gguf(const q_gguf *g, const char *fname, an_tok **out, q_err *err)
{
    *out = NULL;
    q_status st = Q_OK;
    char model[32] = "";
    if (!q_gguf_get_str(g, "tokenizer.ggml.model", model, sizeof model))
        return q_fail(err, Q_EDATA, "%s: no tokenizer.ggml.model key (no tokenizer in the "
                      "file; use --tokens)", fname);
    an_tok *tk = calloc(1, sizeof *tk);
    if (!tk)
        return q_fail(err, Q_ENOMEM, "out of memory");
    if (!strcmp(model, "llama")) {
        tk->kind = AN_TOK_SPM;
    } else if (!strcmp(model, "gpt2")) {
        tk->kind = AN_TOK_BPE;
        tk->by_rank = true;
    } else {
        st = q_fail(err, Q_EUSAGE, "%s: tokenizer model '%s' is not supported (llama, gpt2)",
                    fname, model);
        goto fail;
    }
    int64_t ki = q_gguf_find(g, "tokenizer.ggml.tokens");
    if (ki < 0 || g->kv[ki].type != Q_GGUF_ARRAY || g->kv[ki].arr_type != Q_GGUF_STRING) {
        st = q_fail(err, Q_EDATA, "%s: tokenizer.ggml.tokens is missing or not a string array",
                    fname);
        goto fail;
    }
    const q_gguf_kv *kv = &g->kv[ki];
    if ((st = tk_alloc_vocab(tk, (int64_t)kv->arr_n, err)) != Q_OK)
        goto fail;
    for (int32_t i = 0; i < tk->n_vocab; i++) {
        q_gguf_str s;
        if (!q_gguf_arr_str(kv, (uint64_t)i, &s) || s.len > 4096) {
            st = q_fail(err, Q_EDATA, "%s: offset %llu: tokenizer.ggml.tokens[%d] is unreadable",
                        fname, (unsigned long long)kv->offset, i);
            goto fail;
        }
        tk->piece[i] = tk_strndup(s.ptr, (size_t)s.len);
        if (!tk->piece[i]) {
            st = q_fail(err, Q_ENOMEM, "out of memory");
            goto fail;
        }
        tk->plen[i] = (uint32_t)s.len;
        tk->type[i] = TT_NORMAL;
    }
    ki = q_gguf_find(g, "tokenizer.ggml.scores");
    if (ki >= 0) {
        kv = &g->kv[ki];
        if (kv->type != Q_GGUF_ARRAY || kv->arr_type != Q_GGUF_F32 ||
            kv->arr_n != (uint64_t)tk->n_vocab) {
            st = q_fail(err, Q_EDATA, "%s: offset %llu: tokenizer.ggml.scores must be %d f32",
                        fname, (unsigned long long)kv->offset, tk->n_vocab);
            goto fail;
        }
        memcpy(tk->score, kv->arr_data, (size_t)tk->n_vocab * sizeof(float));
    } else if (tk->kind == AN_TOK_SPM) {
        st = q_fail(err, Q_EDATA, "%s: tokenizer.ggml.scores is missing", fname);
        goto fail;
    }
    ki = q_gguf_find(g, "tokenizer.ggml.token_type");
    if (ki >= 0) {
        kv = &g->kv[ki];
        if (kv->type != Q_GGUF_ARRAY || kv->arr_type != Q_GGUF_I32 ||
            kv->arr_n != (uint64_t)tk->n_vocab) {
            st = q_fail(err, Q_EDATA, "%s: offset %llu: tokenizer.ggml.token_type must be %d "
                        "i32", fname, (unsigned long long)kv->offset, tk->n_vocab);
            goto fail;
        }
        memcpy(tk->type, kv->arr_data, (size_t)tk->n_vocab * sizeof(int32_t));
    }
    ki = q_gguf_find(g, "tokenizer.ggml.merges");
    if (ki >= 0) {
        kv = &g->kv[ki];
        if (kv->type != Q_GGUF_ARRAY || kv->arr_type != Q_GGUF_STRING ||
            kv->arr_n > (1u << 24)) {
            st = q_fail(err, Q_EDATA, "%s: offset %llu: tokenizer.ggml.merges must be a string "
                        "array", fname, (unsigned long long)kv->offset);
            goto fail;
        }
        tk->merge_keys = calloc(kv->arr_n ? kv->arr_n : 1, sizeof *tk->merge_keys);
        if (!tk->merge_keys) {
            st = q_fail(err, Q_ENOMEM, "out of memory");
            goto fail;
        }
        for (uint64_t i = 0; i < kv->arr_n; i++) {
            q_gguf_str s;
            if (!q_gguf_arr_str(kv, i, &s) || s.len > 4096) {
                st = q_fail(err, Q_EDATA, "%s: tokenizer.ggml.merges[%llu] is unreadable",
                            fname, (unsigned long long)i);
                goto fail;
            }
            tk->merge_keys[i] = tk_strndup(s.ptr, (size_t)s.len);
            if (!tk->merge_keys[i]) {
                st = q_fail(err, Q_ENOMEM, "out of memory");
                goto fail;
            }
            tk->n_merges = (int64_t)i + 1;
        }
    } else if (tk->kind == AN_TOK_BPE) {
        st = q_fail(err, Q_EDATA, "%s: tokenizer.ggml.merges is missing (gpt2 tokenizer)",
                    fname);
        goto fail;
    }
    int64_t v;
    tk->bos = q_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v) && v >= 0 &&
              v < tk->n_vocab ? (int32_t)v : -1;
    tk->eos = q_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v) && v >= 0 &&
              v < tk->n_vocab ? (int32_t)v : -1;
    tk->unk = q_gguf_get_int(g, "tokenizer.ggml.unknown_token_id", &v) && v >= 0 &&
              v < tk->n_vocab ? (int32_t)v : -1;
    tk->space_prefix = tk->kind == AN_TOK_SPM;
    if (q_gguf_get_int(g, "tokenizer.ggml.add_space_prefix", &v))
        tk->space_prefix = v != 0;
    if ((st = tk_finish(tk, err)) != Q_OK)
        goto fail;
    *out = tk;
    return Q_OK;
fail:
    an_tok_free(tk);
    return st;
}

q_status an_tok_from_json(const char *path, an_tok **out, q_err *err)
{
    *out = NULL;
    q_status st = Q_OK;
    json_error_t je;
    an_tok *tk = NULL;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) {
        FILE *fp = fopen(path, "rb");
        if (!fp)
            return q_fail(err, Q_ENOINPUT, "%s: cannot open", path);
        fclose(fp);
        return q_fail(err, Q_EDATA, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    }
    json_t *model = json_object_get(root, "model");
    json_t *type = json_object_get(model, "type");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    if (!json_is_object(model) || !json_is_object(vocab) || !json_is_array(merges)) {
        st = q_fail(err, Q_EDATA, "%s: model.vocab (object) and model.merges (array) are "
                    "required", path);
        goto fail;
    }
    if (type && (!json_is_string(type) || strcmp(json_string_value(type), "BPE"))) {
        st = q_fail(err, Q_EUSAGE, "%s: tokenizer model type '%s' is not supported (BPE)", path,
                    json_is_string(type) ? json_string_value(type) : "?");
        goto fail;
    }
    tk = calloc(1, sizeof *tk);
    if (!tk) {
        st = q_fail(err, Q_ENOMEM, "out of memory");
        goto fail;
    }
    /* Byte-level when the pre-tokenizer or decoder says ByteLevel. */
    char *pre = json_dumps(json_object_get(root, "pre_tokenizer"), JSON_ENCODE_ANY);
    char *dec = json_dumps(json_object_get(root, "decoder"), JSON_ENCODE_ANY);
    bool bytelevel = (pre && strstr(pre, "ByteLevel")) || (dec && strstr(dec, "ByteLevel"));
    free(pre);
    free(dec);
    tk->kind = bytelevel ? AN_TOK_BPE : AN_TOK_SPM;
    tk->by_rank = true;
    tk->space_prefix = !bytelevel;
    /* Vocabulary size: the largest id of vocab and added_tokens, plus one. */
    int64_t maxid = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= (1 << 24)) {
            st = q_fail(err, Q_EDATA, "%s: model.vocab[\"%.40s\"] is not a valid id", path, key);
            goto fail;
        }
        if (json_integer_value(val) > maxid)
            maxid = json_integer_value(val);
    }
    json_t *added = json_object_get(root, "added_tokens");
    size_t ai;
    json_t *at;
    json_array_foreach(added, ai, at) {
        json_t *id = json_object_get(at, "id");
        if (json_is_integer(id) && json_integer_value(id) >= 0 &&
            json_integer_value(id) < (1 << 24) && json_integer_value(id) > maxid)
            maxid = json_integer_value(id);
    }
    if ((st = tk_alloc_vocab(tk, maxid + 1, err)) != Q_OK)
        goto fail;
    json_object_foreach(vocab, key, val) {
        int64_t id = json_integer_value(val);
        free(tk->piece[id]);
        tk->piece[id] = strdup(key);
        tk->plen[id] = (uint32_t)strlen(key);
        tk->type[id] = TT_NORMAL;
    }
    json_array_foreach(added, ai, at) {
        json_t *id = json_object_get(at, "id"), *c = json_object_get(at, "content");
        if (!json_is_integer(id) || !json_is_string(c) || json_integer_value(id) < 0)
            continue;
        int64_t i = json_integer_value(id);
        free(tk->piece[i]);
        tk->piece[i] = strdup(json_string_value(c));
        tk->plen[i] = tk->piece[i] ? (uint32_t)strlen(tk->piece[i]) : 0;
        tk->type[i] = json_is_true(json_object_get(at, "special")) ? TT_CONTROL : TT_USER;
    }
    for (int32_t i = 0; i < tk->n_vocab; i++) {
        if (!tk->piece[i]) {
            tk->piece[i] = strdup("");
            tk->type[i] = TT_UNUSED;
        }
        if (!tk->piece[i]) {
            st = q_fail(err, Q_ENOMEM, "out of memory");
            goto fail;
        }
    }
    size_t nm = json_array_size(merges);
    tk->merge_keys = calloc(nm ? nm : 1, sizeof *tk->merge_keys);
    if (!tk->merge_keys) {
        st = q_fail(err, Q_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nm; i++) {
        json_t *mj = json_array_get(merges, i);
        char *k = NULL;
        if (json_is_string(mj)) {
            k = strdup(json_string_value(mj));
        } else if (json_is_array(mj) && json_array_size(mj) == 2 &&
                   json_is_string(json_array_get(mj, 0)) &&
                   json_is_string(json_array_get(mj, 1))) {
            const char *a = json_string_value(json_array_get(mj, 0));
            const char *b = json_string_value(json_array_get(mj, 1));
            size_t la = strlen(a), lb = strlen(b);
            k = malloc(la + lb + 2);
            if (k) {
                memcpy(k, a, la);
                k[la] = ' ';
                memcpy(k + la + 1, b, lb + 1);
            }
        } else {
            st = q_fail(err, Q_EDATA, "%s: model.merges[%zu] is neither \"a b\" nor [a, b]", path,
                        i);
            goto fail;
        }
        if (!k) {
            st = q_fail(err, Q_ENOMEM, "out of memory");
            goto fail;
        }
        tk->merge_keys[i] = k;
        tk->n_merges = (int64_t)i + 1;
    }
    if ((st = tk_finish(tk, err)) != Q_OK)
        goto fail;
    const char *bos_names[] = {"<s>", "<|begin_of_text|>", "<|endoftext|>"};
    const char *eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>"};
    tk->bos = tk->eos = tk->unk = -1;
    for (int i = 0; i < 3 && tk->bos < 0; i++)
        tk->bos = tk_map_get(&tk->vocab, bos_names[i], strlen(bos_names[i]));
    for (int i = 0; i < 3 && tk->eos < 0; i++)
        tk->eos = tk_map_get(&tk->vocab, eos_names[i], strlen(eos_names[i]));
    tk->unk = tk_map_get(&tk->vocab, "<unk>", 5);
    if (tk->bos >= 0)
        tk->type[tk->bos] = TT_CONTROL;
    if (tk->eos >= 0)
        tk->type[tk->eos] = TT_CONTROL;
    if (tk->unk >= 0)
        tk->type[tk->unk] = TT_UNKNOWN;
    json_decref(root);
    *out = tk;
    return Q_OK;
fail:
    an_tok_free(tk);
    json_decref(root);
    return st;
}

an_tok_kind an_tok_get_kind(const an_tok *tk)
{
    return tk->kind;
}

int32_t an_tok_n_vocab(const an_tok *tk)
{
    return tk->n_vocab;
}

int32_t an_tok_bos(const an_tok *tk)
{
    return tk->bos;
}

int32_t an_tok_eos(const an_tok *tk)
{
    return tk->eos;
}

int32_t an_tok_find(const an_tok *tk, const char *piece, size_t len)
{
    return tk_map_get(&tk->vocab, piece, len);
}

/* ---- encoding ---- */

typedef struct tk_sym {
    int64_t start, len, prev, next;
} tk_sym;

typedef struct tk_cand {
    int64_t left, right, size;
    double prio; /* larger is merged first */
} tk_cand;

typedef struct tk_heap {
    tk_cand *a;
    int64_t n, cap;
} tk_heap;

static bool tk_before(const tk_cand *x, const tk_cand *y)
{
    return x->prio > y->prio || (x->prio == y->prio && x->left < y->left);
}

static bool tk_heap_push(tk_heap *h, tk_cand c)
{
    if (h->n == h->cap) {
        int64_t nc = h->cap ? h->cap * 2 : 64;
        tk_cand *na = realloc(h->a, (size_t)nc * sizeof *na);
        if (!na)
            return false;
        h->a = na;
        h->cap = nc;
    }
    int64_t i = h->n++;
    while (i > 0) {
        int64_t p = (i - 1) / 2;
        if (!tk_before(&c, &h->a[p]))
            break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = c;
    return true;
}

static tk_cand tk_heap_pop(tk_heap *h)
{
    tk_cand top = h->a[0], last = h->a[--h->n];
    int64_t i = 0;
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, b = i;
        const tk_cand *bc = &last;
        if (l < h->n && tk_before(&h->a[l], bc)) {
            b = l;
            bc = &h->a[l];
        }
        if (r < h->n && tk_before(&h->a[r], bc))
            b = r;
        if (b == i)
            break;
        h->a[i] = h->a[b];
        i = b;
    }
    if (h->n)
        h->a[i] = last;
    return top;
}

typedef struct tk_out {
    int32_t *ids;
    int64_t n, cap;
} tk_out;

static bool tk_emit(tk_out *o, int32_t id)
{
    if (o->n == o->cap) {
        int64_t nc = o->cap ? o->cap * 2 : 256;
        int32_t *ni = realloc(o->ids, (size_t)nc * sizeof *ni);
        if (!ni)
            return false;
        o->ids = ni;
        o->cap = nc;
    }
    o->ids[o->n++] = id;
    return true;
}

/* Priority of merging symbols a and b of s, or false when they cannot merge. */
static bool tk_pair(const an_tok *tk, const char *s, const tk_sym *a, const tk_sym *b,
                    double *prio)
{
    if (tk->by_rank) {
        char buf[512];
        if (a->len + b->len + 1 > (int64_t)sizeof buf)
            return false;
        memcpy(buf, s + a->start, (size_t)a->len);
        buf[a->len] = ' ';
        memcpy(buf + a->len + 1, s + b->start, (size_t)b->len);
        int32_t r = tk_map_get(&tk->merges, buf, (size_t)(a->len + b->len + 1));
        if (r < 0 || tk_map_get(&tk->vocab, s + a->start, (size_t)(a->len + b->len)) < 0)
            return false;
        *prio = -(double)r;
        return true;
    }
    int32_t id = tk_map_get(&tk->vocab, s + a->start, (size_t)(a->len + b->len));
    if (id < 0)
        return false;
    *prio = tk->score[id];
    return true;
}

/* Merges the UTF-8 characters of s[0..n) (contiguous) and emits the ids. */
static bool tk_merge_emit(const an_tok *tk, const char *s, int64_t n, tk_out *o)
{
    if (n <= 0)
        return true;
    bool ok = false;
    tk_heap h = {0};
    tk_sym *sym = malloc((size_t)n * sizeof *sym);
    if (!sym)
        return false;
    int64_t ns = 0;
    for (int64_t i = 0; i < n;) {
        int64_t l = (int64_t)tk_utf8_len(s + i, (size_t)(n - i));
        sym[ns] = (tk_sym){i, l, ns - 1, ns + 1};
        ns++;
        i += l;
    }
    sym[ns - 1].next = -1;
    for (int64_t i = 0; i + 1 < ns; i++) {
        double p;
        if (tk_pair(tk, s, &sym[i], &sym[i + 1], &p) &&
            !tk_heap_push(&h, (tk_cand){i, i + 1, sym[i].len + sym[i + 1].len, p}))
            goto done;
    }
    while (h.n) {
        tk_cand c = tk_heap_pop(&h);
        tk_sym *a = &sym[c.left], *b = &sym[c.right];
        if (!a->len || !b->len || a->len + b->len != c.size || a->next != c.right)
            continue; /* stale */
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (b->next >= 0)
            sym[b->next].prev = c.left;
        double p;
        if (a->prev >= 0 && tk_pair(tk, s, &sym[a->prev], a, &p) &&
            !tk_heap_push(&h, (tk_cand){a->prev, c.left, sym[a->prev].len + a->len, p}))
            goto done;
        if (a->next >= 0 && tk_pair(tk, s, a, &sym[a->next], &p) &&
            !tk_heap_push(&h, (tk_cand){c.left, a->next, a->len + sym[a->next].len, p}))
            goto done;
    }
    for (int64_t i = 0; i >= 0 && i < ns; i = sym[i].next) {
        int32_t id = tk_map_get(&tk->vocab, s + sym[i].start, (size_t)sym[i].len);
        if (id >= 0) {
            if (!tk_emit(o, id))
                goto done;
            continue;
        }
        /* Fallback: byte tokens (SPM) or the byte's own mapped piece (BPE), else unk. */
        for (int64_t j = 0; j < sym[i].len; j++) {
            uint8_t byte = (uint8_t)s[sym[i].start + j];
            int32_t bid = tk->byte_tok[byte];
            if (bid < 0 && tk->kind == AN_TOK_BPE)
                bid = tk_map_get(&tk->vocab, s + sym[i].start + j, 1);
            if (bid < 0)
                bid = tk->unk;
            if (bid >= 0 && !tk_emit(o, bid))
                goto done;
            if (tk->byte_tok[byte] < 0 && tk->kind == AN_TOK_SPM)
                break; /* one unk per symbol */
        }
    }
    ok = true;
done:
    free(h.a);
    free(sym);
    return ok;
}

static bool tk_is_alpha(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

static bool tk_is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static bool tk_is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Length of the next pre-token of GPT-2's shape at s[0..n). */
static size_t tk_pretoken(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    if (u[0] == '\'' && n >= 2) {
        static const char *const cs[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
        for (int i = 0; i < 7; i++) {
            size_t l = strlen(cs[i]);
            if (l <= n && !memcmp(s, cs[i], l))
                return l;
        }
    }
    size_t i = 0;
    if (u[0] == ' ' && n >= 2 && !tk_is_space(u[1]))
        i = 1;
    if (i < n && tk_is_alpha(u[i])) {
        while (i < n && tk_is_alpha(u[i]))
            i++;
        return i;
    }
    if (i < n && tk_is_digit(u[i])) {
        while (i < n && tk_is_digit(u[i]))
            i++;
        return i;
    }
    if (i < n && !tk_is_space(u[i])) {
        while (i < n && !tk_is_space(u[i]) && !tk_is_alpha(u[i]) && !tk_is_digit(u[i]))
            i++;
        return i;
    }
    /* whitespace run: leave its last space to a following word */
    while (i < n && tk_is_space(u[i]))
        i++;
    if (i < n && i > 1 && u[i - 1] == ' ')
        i--;
    return i;
}

q_status an_tok_encode(const an_tok *tk, const char *text, size_t len, bool add_bos,
                       int32_t **ids, int64_t *n, q_err *err)
{
    *ids = NULL;
    *n = 0;
    tk_out o = {0};
    char *buf = NULL;
    if (len > ((size_t)1 << 30) / 3)
        return q_fail(err, Q_EUSAGE, "text of %zu bytes is too long to tokenize at once", len);
    if (add_bos && tk->bos >= 0 && !tk_emit(&o, tk->bos))
        goto oom;
    if (tk->kind == AN_TOK_SPM) {
        /* "▁" (3 bytes) for every space, one more in front. */
        buf = malloc(3 * len + 4);
        if (!buf)
            goto oom;
        size_t m = 0;
        if (tk->space_prefix && len) {
            memcpy(buf, "\xe2\x96\x81", 3);
            m = 3;
        }
        for (size_t i = 0; i < len; i++) {
            if (text[i] == ' ') {
                memcpy(buf + m, "\xe2\x96\x81", 3);
                m += 3;
            } else {
                buf[m++] = text[i];
            }
        }
        if (!tk_merge_emit(tk, buf, (int64_t)m, &o))
            goto oom;
    } else {
        buf = malloc(2 * len + 2);
        if (!buf)
            goto oom;
        for (size_t i = 0; i < len;) {
            size_t l = tk_pretoken(text + i, len - i);
            size_t m = 0;
            for (size_t j = 0; j < l; j++)
                m += tk_utf8_put(tk->b2u[(uint8_t)text[i + j]], buf + m);
            if (!tk_merge_emit(tk, buf, (int64_t)m, &o))
                goto oom;
            i += l;
        }
    }
    free(buf);
    *ids = o.ids ? o.ids : malloc(sizeof(int32_t));
    if (!*ids)
        return q_fail(err, Q_ENOMEM, "out of memory");
    *n = o.n;
    return Q_OK;
oom:
    free(buf);
    free(o.ids);
    return q_fail(err, Q_ENOMEM, "out of memory while tokenizing");
}

size_t an_tok_decode(const an_tok *tk, int32_t id, char *buf, size_t cap)
{
    if (!cap)
        return 0;
    buf[0] = 0;
    if (id < 0 || id >= tk->n_vocab || tk->type[id] == TT_CONTROL)
        return 0;
    const char *p = tk->piece[id];
    size_t n = tk->plen[id], m = 0;
    if (tk->kind == AN_TOK_SPM) {
        unsigned b;
        if (n == 6 && sscanf(p, "<0x%2X>", &b) == 1) {
            if (cap > 1) {
                buf[0] = (char)b;
                buf[1] = 0;
                return 1;
            }
            return 0;
        }
        for (size_t i = 0; i < n && m + 1 < cap;) {
            if (i + 3 <= n && !memcmp(p + i, "\xe2\x96\x81", 3)) {
                buf[m++] = ' ';
                i += 3;
            } else {
                buf[m++] = p[i++];
            }
        }
    } else {
        for (size_t i = 0; i < n && m + 1 < cap;) {
            size_t l = tk_utf8_len(p + i, n - i);
            uint32_t cp = (uint8_t)p[i];
            if (l == 2)
                cp = ((uint32_t)(p[i] & 0x1f) << 6) | (uint32_t)(p[i + 1] & 0x3f);
            if (l <= 2 && cp < 512 && tk->u2b[cp] >= 0) {
                buf[m++] = (char)tk->u2b[cp];
            } else {
                for (size_t j = 0; j < l && m + 1 < cap; j++)
                    buf[m++] = p[i + j];
            }
            i += l;
        }
    }
    buf[m] = 0;
    return m;
}
