/* an_synth.c — synthetic llama-shaped GGUF models (see an_synth.h).
 *
 * Weights: w[r][c] = t(r, c) * s_r * g_c where
 *   t(r, c)  Student-t with nu = 5 (Bailey's polar method in float with
 *            polynomial ln/expm1 so it vectorizes; clamped to +-64),
 *   s_r      = exp(0.3 * N(0, 1)) / sqrt(cols), one log-normal scale per row,
 *   g_c      = 1, except a few outlier input channels with g_c in [8, 20].
 * Matrices whose input is the residual stream (token_embd, attn_q/k/v,
 * ffn_gate/up, output) share one model-wide set of outlier channels, as the
 * LLM.int8 paper observed (the same hidden dimensions carry the outliers in
 * every layer); attn_output and ffn_down get their own set per tensor.
 * RMS-norm weights are 1 + 0.05 * N(0, 1) with two larger entries in [2.5, 6].
 *
 * Determinism: row r of tensor i is drawn from a xoshiro256** stream seeded by
 * splitmix64 from (seed, i, r), so rows can be made in any order on any number
 * of threads and the file is the same.
 */
#include "an_synth.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "q_dtype.h"
#include "q_gguf.h"
#include "q_io.h"

#define SYN_NU 5.0
#define SYN_T_CLAMP 64.0
#define SYN_ROW_SIGMA 0.3
#define SYN_N_OUTLIERS 4
#define SYN_CHUNK_BYTES (4u << 20) /* f32 staging per chunk of rows */
#define SYN_NAME_MAX 64

/* ---- random numbers ---- */

typedef struct syn_rng {
    uint64_t s[4];
} syn_rng;

static uint64_t syn_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Stream for (seed, stream, idx); distinct triples give unrelated streams. */
static void syn_rng_init(syn_rng *r, uint64_t seed, uint64_t stream, uint64_t idx)
{
    uint64_t x = syn_mix64(seed + 0x9E3779B97F4A7C15ull);
    x = syn_mix64(x ^ (stream * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull));
    x = syn_mix64(x ^ (idx * 0xABC98388FB8FAC03ull + 0x2545F4914F6CDD1Dull));
    for (int i = 0; i < 4; i++) {
        x += 0x9E3779B97F4A7C15ull; /* splitmix64 sequence */
        r->s[i] = syn_mix64(x);
    }
}

static uint64_t syn_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t syn_next(syn_rng *r)
{
    uint64_t *s = r->s;
    uint64_t res = syn_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = syn_rotl(s[3], 45);
    return res;
}

/* Uniform in [0, 1), 53 bits. */
static double syn_u01(syn_rng *r)
{
    return (double)(syn_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [-1, 1), 53 bits. */
static double syn_u11(syn_rng *r)
{
    return (double)((int64_t)syn_next(r) >> 10) * 0x1.0p-53;
}

/* Standard normal (polar Box-Muller; one value, the twin is discarded). */
static double syn_normal(syn_rng *r)
{
    double u, v, w;
    do {
        u = syn_u11(r);
        v = syn_u11(r);
        w = u * u + v * v;
    } while (w >= 1.0 || w == 0.0);
    return u * sqrt(-2.0 * log(w) / w);
}

static float syn_f32_from_bits(int32_t i)
{
    float f;
    memcpy(&f, &i, sizeof(f));
    return f;
}

static int32_t syn_bits_from_f32(float f)
{
    int32_t i;
    memcpy(&i, &f, sizeof(i));
    return i;
}

/* SYN_BLK Student-t variates (nu = 5) by Bailey's polar method (Math. Comp. 62
 * (1994) 779-781): with (U, V) uniform in the unit disc and W = U^2 + V^2,
 * T = U * sqrt(nu * (W^(-2/nu) - 1) / W) is exactly t_nu distributed.
 * Three passes so the middle one, free of calls and branches, vectorizes:
 * (1) rejection-sample (U, W) from one 64-bit draw each (two 24-bit halves);
 * (2) W^(-2/5) - 1 = expm1(-0.4 ln W) with ln and expm1 as polynomials
 *     (relative error below 1e-6 against a double-precision reference);
 * (3) the square root and the clamp to +-SYN_T_CLAMP (F16 stays finite). */
#define SYN_BLK 256
static void syn_t_block(syn_rng *r, float *out)
{
    float bu[SYN_BLK], bw[SYN_BLK], rad[SYN_BLK];
    for (int k = 0; k < SYN_BLK;) {
        uint64_t x = syn_next(r);
        float u = (float)((int32_t)(uint32_t)x >> 8) * 0x1.0p-23f;
        float v = (float)((int32_t)(uint32_t)(x >> 32) >> 8) * 0x1.0p-23f;
        float w = u * u + v * v;
        bu[k] = u;
        bw[k] = w;
        k += (w < 1.0f) & (w > 0.0f); /* w >= 2^-46 when accepted */
    }
    for (int i = 0; i < SYN_BLK; i++) {
        /* ln w: w = 2^e * m, m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s) */
        float w = bw[i];
        int32_t b = syn_bits_from_f32(w);
        int32_t e = ((b >> 23) & 0xff) - 127;
        float m = syn_f32_from_bits((b & 0x007fffff) | 0x3f800000);
        int32_t big = m > 1.41421356f;
        m = m * (1.0f - 0.5f * (float)big);
        e += big;
        float sm = (m - 1.0f) / (m + 1.0f), s2 = sm * sm;
        float lnw = sm * (2.0f + s2 * (0.666666667f + s2 * (0.4f + s2 * (0.285714286f +
                                                                     s2 * 0.222222222f)))) +
                    (float)e * 0.693147182f;
        /* expm1(y), y = -0.4 ln w in [0, 13]: y = k ln2 + f, |f| <= ln2 / 2,
         * expm1(y) = 2^k expm1(f) + (2^k - 1), exact in form when k = 0 */
        float y = -0.4f * lnw;
        int32_t k = (int32_t)(y * 1.44269504f + 0.5f);
        float f = (y - (float)k * 0.693145752f) - (float)k * 1.42860677e-6f;
        float q = f + f * f * (0.5f + f * (1.66666667e-1f + f * (4.16666667e-2f +
                  f * (8.33333333e-3f + f * (1.38888889e-3f + f * 1.98412698e-4f)))));
        float p2 = syn_f32_from_bits((k + 127) << 23);
        rad[i] = (float)SYN_NU * (p2 * q + (p2 - 1.0f)) / w;
    }
    for (int i = 0; i < SYN_BLK; i++) {
        float t = bu[i] * sqrtf(rad[i]);
        t = t > (float)SYN_T_CLAMP ? (float)SYN_T_CLAMP : t;
        out[i] = t < -(float)SYN_T_CLAMP ? -(float)SYN_T_CLAMP : t;
    }
}

/* ---- model layout ---- */

typedef enum syn_kind { SYN_MATRIX, SYN_NORM } syn_kind;

typedef struct syn_outlier {
    int64_t col;
    float gain;
} syn_outlier;

typedef struct syn_tensor {
    char name[SYN_NAME_MAX];
    syn_kind kind;
    int64_t rows, cols;
    uint32_t type;
    bool resid; /* input is the residual stream: shares the model-wide outliers */
    int n_out;
    syn_outlier out[SYN_N_OUTLIERS];
} syn_tensor;

/* Streams: tensors use 2*i (rows) and 2*i+1 (per-tensor choices); the
 * model-wide residual outlier channels use SYN_STREAM_RESID. */
#define SYN_STREAM_RESID 0xFFFFFFFFull

static int syn_n_outliers(int64_t cols)
{
    int64_t n = cols / 16;
    return n < SYN_N_OUTLIERS ? (int)n : SYN_N_OUTLIERS;
}

/* n distinct columns in [0, cols); gains are set per tensor by syn_layout. */
static void syn_pick_outliers(syn_rng *r, int64_t cols, int n, syn_outlier *out)
{
    for (int i = 0; i < n; i++) {
        int64_t c;
        bool dup;
        do {
            c = (int64_t)(syn_next(r) % (uint64_t)cols);
            dup = false;
            for (int j = 0; j < i; j++)
                dup = dup || out[j].col == c;
        } while (dup);
        out[i].col = c;
        out[i].gain = 1.0f;
    }
}

void an_synth_defaults(an_synth_cfg *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->dim = 256;
    cfg->layers = 4;
    cfg->ff = 768;
    cfg->heads = 8;
    cfg->kv_heads = 4;
    cfg->vocab = 1024;
    cfg->ctx = 2048;
    cfg->seed = 42;
    cfg->dtype = Q_DT_F16;
}

static q_status syn_range(q_err *err, const char *what, int64_t v, int64_t lo, int64_t hi)
{
    if (v < lo || v > hi)
        return q_fail(err, Q_EUSAGE, "%s must be %lld..%lld, got %lld", what, (long long)lo,
                      (long long)hi, (long long)v);
    return Q_OK;
}

/* Parameters and data bytes; false on overflow. cfg must be range-checked. */
static bool syn_sizes(const an_synth_cfg *cfg, uint64_t *params, uint64_t *bytes)
{
    uint64_t dim = (uint64_t)cfg->dim, ff = (uint64_t)cfg->ff, voc = (uint64_t)cfg->vocab;
    uint64_t kv = dim / (uint64_t)cfg->heads * (uint64_t)cfg->kv_heads;
    uint64_t esz = cfg->dtype == Q_DT_F32 ? 4 : 2;
    uint64_t blk_mat, blk_norm = 2 * dim, emb, mats, norms, t;
    /* per block: q, o (dim x dim); k, v (kv x dim); gate, up, down (ff x dim) */
    if (__builtin_mul_overflow(dim, 2 * dim, &blk_mat) ||
        __builtin_mul_overflow(kv, 2 * dim, &t) || __builtin_add_overflow(blk_mat, t, &blk_mat) ||
        __builtin_mul_overflow(ff, 3 * dim, &t) || __builtin_add_overflow(blk_mat, t, &blk_mat) ||
        __builtin_mul_overflow(voc, 2 * dim, &emb) ||
        __builtin_mul_overflow(blk_mat, (uint64_t)cfg->layers, &mats) ||
        __builtin_add_overflow(mats, emb, &mats))
        return false;
    norms = blk_norm * (uint64_t)cfg->layers + dim;
    if (__builtin_add_overflow(mats, norms, params) ||
        __builtin_mul_overflow(mats, esz, &t) || __builtin_add_overflow(t, 4 * norms, bytes))
        return false;
    return true;
}

q_status an_synth_validate(const an_synth_cfg *cfg, q_err *err)
{
    q_status st;
    if ((st = syn_range(err, "dim", cfg->dim, 2, AN_SYNTH_MAX_DIM)) != Q_OK ||
        (st = syn_range(err, "layers", cfg->layers, 1, AN_SYNTH_MAX_LAYERS)) != Q_OK ||
        (st = syn_range(err, "ff", cfg->ff, 1, AN_SYNTH_MAX_FF)) != Q_OK ||
        (st = syn_range(err, "heads", cfg->heads, 1, cfg->dim)) != Q_OK ||
        (st = syn_range(err, "kv-heads", cfg->kv_heads, 1, cfg->heads)) != Q_OK ||
        (st = syn_range(err, "vocab", cfg->vocab, AN_SYNTH_MIN_VOCAB, AN_SYNTH_MAX_VOCAB)) !=
            Q_OK ||
        (st = syn_range(err, "ctx", cfg->ctx, 1, AN_SYNTH_MAX_CTX)) != Q_OK)
        return st;
    if (cfg->dim % cfg->heads != 0)
        return q_fail(err, Q_EUSAGE, "dim %lld is not divisible by heads %lld",
                      (long long)cfg->dim, (long long)cfg->heads);
    if ((cfg->dim / cfg->heads) % 2 != 0)
        return q_fail(err, Q_EUSAGE, "head size dim / heads = %lld must be even (RoPE pairs)",
                      (long long)(cfg->dim / cfg->heads));
    if (cfg->heads % cfg->kv_heads != 0)
        return q_fail(err, Q_EUSAGE, "heads %lld is not divisible by kv-heads %lld",
                      (long long)cfg->heads, (long long)cfg->kv_heads);
    if (cfg->dtype != Q_DT_F16 && cfg->dtype != Q_DT_F32)
        return q_fail(err, Q_EUSAGE, "dtype %s is not supported (use F16 or F32)",
                      q_dtype_name(cfg->dtype));
    uint64_t params, bytes;
    if (!syn_sizes(cfg, &params, &bytes) || bytes > AN_SYNTH_MAX_BYTES)
        return q_fail(err, Q_EUSAGE, "model too large: tensor data would exceed %llu GiB",
                      (unsigned long long)(AN_SYNTH_MAX_BYTES >> 30));
    return Q_OK;
}

uint64_t an_synth_params(const an_synth_cfg *cfg)
{
    uint64_t p, b;
    if (an_synth_validate(cfg, NULL) != Q_OK || !syn_sizes(cfg, &p, &b))
        return 0;
    return p;
}

uint64_t an_synth_data_bytes(const an_synth_cfg *cfg)
{
    uint64_t p, b;
    if (an_synth_validate(cfg, NULL) != Q_OK || !syn_sizes(cfg, &p, &b))
        return 0;
    return b;
}

static void syn_tensor_set(syn_tensor *t, const char *name, syn_kind kind, int64_t rows,
                           int64_t cols, uint32_t type, bool resid)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->kind = kind;
    t->rows = rows;
    t->cols = cols;
    t->type = kind == SYN_NORM ? Q_DT_F32 : type;
    t->resid = resid;
}

/* Builds the tensor list in llama.cpp order; *n gets the count. NULL on OOM. */
static syn_tensor *syn_layout(const an_synth_cfg *cfg, size_t *n)
{
    int64_t dim = cfg->dim, ff = cfg->ff, kv = cfg->dim / cfg->heads * cfg->kv_heads;
    size_t count = 3 + 9 * (size_t)cfg->layers, k = 0;
    syn_tensor *ts = calloc(count, sizeof(*ts));
    if (!ts)
        return NULL;
    uint32_t dt = cfg->dtype;
    syn_rng r;
    syn_outlier resid[SYN_N_OUTLIERS];
    int n_resid = syn_n_outliers(dim);
    syn_rng_init(&r, cfg->seed, SYN_STREAM_RESID, 0);
    syn_pick_outliers(&r, dim, n_resid, resid);

    char nm[SYN_NAME_MAX];
    syn_tensor_set(&ts[k++], "token_embd.weight", SYN_MATRIX, cfg->vocab, dim, dt, true);
    for (int64_t l = 0; l < cfg->layers; l++) {
        static const struct {
            const char *suffix;
            syn_kind kind;
            int rows; /* 0 dim, 1 kv, 2 ff */
            int cols; /* 0 dim, 2 ff */
            bool resid;
        } blk[9] = {
            {"attn_norm", SYN_NORM, 0, 0, false}, {"attn_q", SYN_MATRIX, 0, 0, true},
            {"attn_k", SYN_MATRIX, 1, 0, true},   {"attn_v", SYN_MATRIX, 1, 0, true},
            {"attn_output", SYN_MATRIX, 0, 0, false}, {"ffn_norm", SYN_NORM, 0, 0, false},
            {"ffn_gate", SYN_MATRIX, 2, 0, true}, {"ffn_up", SYN_MATRIX, 2, 0, true},
            {"ffn_down", SYN_MATRIX, 0, 2, false},
        };
        for (int j = 0; j < 9; j++) {
            const int64_t sz[3] = {dim, kv, ff};
            snprintf(nm, sizeof(nm), "blk.%lld.%s.weight", (long long)l, blk[j].suffix);
            if (blk[j].kind == SYN_NORM)
                syn_tensor_set(&ts[k++], nm, SYN_NORM, 1, dim, dt, false);
            else
                syn_tensor_set(&ts[k++], nm, SYN_MATRIX, sz[blk[j].rows], sz[blk[j].cols], dt,
                               blk[j].resid);
        }
    }
    syn_tensor_set(&ts[k++], "output_norm.weight", SYN_NORM, 1, dim, dt, false);
    syn_tensor_set(&ts[k++], "output.weight", SYN_MATRIX, cfg->vocab, dim, dt, true);

    for (size_t i = 0; i < count; i++) {
        syn_tensor *t = &ts[i];
        if (t->kind != SYN_MATRIX)
            continue;
        if (t->resid) {
            t->n_out = n_resid;
            memcpy(t->out, resid, sizeof(resid));
        } else {
            t->n_out = syn_n_outliers(t->cols);
            syn_rng_init(&r, cfg->seed, 2 * (uint64_t)i + 1, 0);
            syn_pick_outliers(&r, t->cols, t->n_out, t->out);
        }
        /* Each matrix has its own gains even where the channels are shared. */
        syn_rng_init(&r, cfg->seed, 2 * (uint64_t)i + 1, 1);
        for (int j = 0; j < t->n_out; j++)
            t->out[j].gain = (float)(8.0 + 12.0 * syn_u01(&r));
    }
    *n = count;
    return ts;
}

/* ---- values ---- */

/* Row `row` of matrix t (index ti) into dst[0..cols). */
static void syn_matrix_row(const syn_tensor *t, uint64_t seed, size_t ti, int64_t row, float *dst)
{
    syn_rng r;
    syn_rng_init(&r, seed, 2 * (uint64_t)ti, (uint64_t)row);
    double z = syn_normal(&r);
    if (z > 4.0)
        z = 4.0;
    if (z < -4.0)
        z = -4.0;
    float scale = (float)(exp(SYN_ROW_SIGMA * z) / sqrt((double)t->cols));
    float tb[SYN_BLK];
    for (int64_t c0 = 0; c0 < t->cols; c0 += SYN_BLK) {
        /* whole blocks are drawn even for a short tail, so a row's values do
         * not depend on anything but (seed, tensor, row) */
        int64_t n = t->cols - c0 < SYN_BLK ? t->cols - c0 : SYN_BLK;
        syn_t_block(&r, tb);
        for (int64_t c = 0; c < n; c++)
            dst[c0 + c] = tb[c] * scale;
    }
    for (int j = 0; j < t->n_out; j++)
        dst[t->out[j].col] *= t->out[j].gain;
}

/* RMS-norm weights: 1 + 0.05 N(0,1), two entries in [2.5, 6). */
static void syn_norm_row(const syn_tensor *t, uint64_t seed, size_t ti, float *dst)
{
    syn_rng r;
    syn_rng_init(&r, seed, 2 * (uint64_t)ti, 0);
    for (int64_t c = 0; c < t->cols; c++)
        dst[c] = (float)(1.0 + 0.05 * syn_normal(&r));
    for (int j = 0; j < 2; j++)
        dst[syn_next(&r) % (uint64_t)t->cols] = (float)(2.5 + 3.5 * syn_u01(&r));
}

/* ---- vocabulary ---- */

typedef struct syn_vocab {
    char **tok;    /* n strings pointing into arena, set by syn_vocab_build at the end */
    size_t *off;   /* arena offset of each string while building (the arena moves) */
    float *score;
    int32_t *type;
    char *arena;
    size_t arena_len, arena_cap;
    int64_t n;
    int64_t *hash; /* open addressing over indices, -1 empty */
    uint64_t hmask;
} syn_vocab;

static uint64_t syn_fnv(const char *s)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001B3ull;
    return h;
}

/* Appends s unless already present (the caller keeps n below the capacity).
 * 1 added, 0 duplicate, -1 out of memory. */
static int syn_vocab_add(syn_vocab *v, const char *s, float score, int32_t type)
{
    uint64_t h = syn_fnv(s) & v->hmask;
    while (v->hash[h] >= 0) {
        if (strcmp(v->arena + v->off[v->hash[h]], s) == 0)
            return 0;
        h = (h + 1) & v->hmask;
    }
    size_t len = strlen(s) + 1;
    if (v->arena_len + len > v->arena_cap) {
        size_t cap = v->arena_cap * 2 + len;
        char *a = realloc(v->arena, cap);
        if (!a)
            return -1;
        v->arena = a;
        v->arena_cap = cap;
    }
    memcpy(v->arena + v->arena_len, s, len);
    v->off[v->n] = v->arena_len;
    v->arena_len += len;
    v->score[v->n] = score;
    v->type[v->n] = type;
    v->hash[h] = v->n++;
    return 1;
}

static void syn_vocab_free(syn_vocab *v)
{
    free(v->tok);
    free(v->off);
    free(v->score);
    free(v->type);
    free(v->arena);
    free(v->hash);
    memset(v, 0, sizeof(*v));
}

#define SYN_SP "\xe2\x96\x81" /* U+2581, SentencePiece's word-start mark */

static const char *const syn_words[] = {
    "the", "a", "and", "to", "of", "in", "is", "was", "it", "that", "he", "she", "for", "on",
    "with", "as", "his", "her", "they", "at", "be", "this", "had", "not", "are", "but", "from",
    "or", "have", "an", "by", "one", "you", "we", "all", "there", "were", "when", "said", "can",
    "day", "time", "little", "big", "girl", "boy", "cat", "dog", "tree", "house", "ball", "sun",
    "happy", "sad", "play", "played", "went", "saw", "looked", "very", "so", "up", "out", "Once",
    "upon", "named", "friend", "friends", "mom", "dad", "park", "water", "red", "blue", "green",
    "good", "new", "old", "fun", "toy", "bird", "fish", "car", "box", "home", "ing", "ed", "er",
    "es", "ly", "s", "t", "re", "en", "on", "al", "an", "ar", "or", "at", "it", "ch", "th", "ll",
};

static const char *const syn_cons[] = {"b", "d", "f", "g", "k", "l", "m", "n", "p", "r",
                                       "s", "t", "v", "z", "sh", "th", "ch", "br", "tr", "st"};
static const char *const syn_vow[] = {"a", "e", "i", "o", "u", "ai", "ou"};

/* Made-up piece number i: word-start mark on even i, then the bijective base-N
 * numeral of i/2 + 1 spelled with consonant-vowel syllables (unique per i). */
static void syn_madeup(uint64_t i, char *buf, size_t cap)
{
    const uint64_t nc = sizeof(syn_cons) / sizeof(*syn_cons);
    const uint64_t nsyl = nc * (sizeof(syn_vow) / sizeof(*syn_vow));
    size_t len = 0;
    buf[0] = 0;
    if (i % 2 == 0)
        len += (size_t)snprintf(buf, cap, "%s", SYN_SP);
    for (uint64_t n = i / 2 + 1; n > 0 && len + 8 < cap; n = (n - 1) / nsyl) {
        uint64_t d = (n - 1) % nsyl;
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", syn_cons[d % nc],
                                syn_vow[d / nc]);
    }
}

/* The tokenizer: <unk> <s> </s>, 256 byte tokens, word pieces with descending
 * scores. Returns Q_OK or Q_ENOMEM. */
static q_status syn_vocab_build(syn_vocab *v, int64_t n)
{
    memset(v, 0, sizeof(*v));
    uint64_t hcap = 1;
    while (hcap < (uint64_t)n * 2)
        hcap <<= 1;
    v->tok = calloc((size_t)n, sizeof(*v->tok));
    v->off = calloc((size_t)n, sizeof(*v->off));
    v->score = calloc((size_t)n, sizeof(*v->score));
    v->type = calloc((size_t)n, sizeof(*v->type));
    v->hash = malloc(hcap * sizeof(*v->hash));
    v->arena_cap = (size_t)n * 12;
    v->arena = malloc(v->arena_cap);
    if (!v->tok || !v->off || !v->score || !v->type || !v->hash || !v->arena)
        goto oom;
    memset(v->hash, 0xFF, hcap * sizeof(*v->hash));
    v->hmask = hcap - 1;

    char buf[96];
    if (syn_vocab_add(v, "<unk>", 0.0f, 2) < 0 || syn_vocab_add(v, "<s>", 0.0f, 3) < 0 ||
        syn_vocab_add(v, "</s>", 0.0f, 3) < 0)
        goto oom;
    for (int b = 0; b < 256; b++) {
        snprintf(buf, sizeof(buf), "<0x%02X>", b);
        if (syn_vocab_add(v, buf, 0.0f, 6) < 0)
            goto oom;
    }
    /* Ordinary pieces, most frequent first: "▁" alone, "▁word", single
     * characters, bare words, then made-up pieces until the vocabulary is full
     * (duplicates are skipped, so every string is unique). */
    static const char chars[] =
        "etaoinshrdlcumwfgypbvkjxqzETAOINSHRDLCUMWFGYPBVKJXQZ0123456789.,!?'\"-:;()";
    const uint64_t nw = sizeof(syn_words) / sizeof(*syn_words), nch = sizeof(chars) - 1;
    int64_t piece = 0; /* ordinary pieces added so far; the next one scores -piece */
    for (uint64_t i = 0; v->n < n; i++) {
        const char *s = buf;
        uint64_t k = i;
        if (k == 0)
            s = SYN_SP;
        else if ((k -= 1) < nw)
            snprintf(buf, sizeof(buf), "%s%s", SYN_SP, syn_words[k]);
        else if ((k -= nw) < nch)
            snprintf(buf, sizeof(buf), "%c", chars[k]);
        else if ((k -= nch) < nw)
            s = syn_words[k];
        else
            syn_madeup(k - nw, buf, sizeof(buf));
        int rc = syn_vocab_add(v, s, -(float)piece, 1);
        if (rc < 0)
            goto oom;
        piece += rc;
    }
    for (int64_t i = 0; i < v->n; i++)
        v->tok[i] = v->arena + v->off[i];
    free(v->hash);
    v->hash = NULL;
    return Q_OK;
oom:
    syn_vocab_free(v);
    return Q_ENOMEM;
}

/* ---- writing ---- */

static q_status syn_metadata(q_gguf_w *w, const an_synth_cfg *cfg, const syn_vocab *v)
{
    q_status st;
    char name[128];
    snprintf(name, sizeof(name), "qtune-sample-d%lld-l%lld", (long long)cfg->dim,
             (long long)cfg->layers);
#define SYN_TRY(call)              \
    do {                           \
        if ((st = (call)) != Q_OK) \
            return st;             \
    } while (0)
    SYN_TRY(q_gguf_w_set_str(w, "general.architecture", "llama"));
    SYN_TRY(q_gguf_w_set_str(w, "general.name", name));
    SYN_TRY(q_gguf_w_set_u32(w, "general.file_type", cfg->dtype == Q_DT_F32 ? 0 : 1));
    SYN_TRY(q_gguf_w_set_u32(w, "llama.context_length", (uint32_t)cfg->ctx));
    SYN_TRY(q_gguf_w_set_u32(w, "llama.embedding_length", (uint32_t)cfg->dim));
    SYN_TRY(q_gguf_w_set_u32(w, "llama.block_count", (uint32_t)cfg->layers));
    SYN_TRY(q_gguf_w_set_u32(w, "llama.feed_forward_length", (uint32_t)cfg->ff));
    SYN_TRY(q_gguf_w_set_u32(w, "llama.rope.dimension_count",
                             (uint32_t)(cfg->dim / cfg->heads)));
    SYN_TRY(q_gguf_w_set_u32(w, "llama.attention.head_count", (uint32_t)cfg->heads));
    SYN_TRY(q_gguf_w_set_u32(w, "llama.attention.head_count_kv", (uint32_t)cfg->kv_heads));
    SYN_TRY(q_gguf_w_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f));
    SYN_TRY(q_gguf_w_set_f32(w, "llama.rope.freq_base", 10000.0f));
    SYN_TRY(q_gguf_w_set_u32(w, "llama.vocab_size", (uint32_t)cfg->vocab));
    SYN_TRY(q_gguf_w_set_str(w, "tokenizer.ggml.model", "llama"));
    SYN_TRY(q_gguf_w_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tok,
                                 (size_t)v->n));
    SYN_TRY(q_gguf_w_set_arr_f32(w, "tokenizer.ggml.scores", v->score, (size_t)v->n));
    SYN_TRY(q_gguf_w_set_arr_i32(w, "tokenizer.ggml.token_type", v->type, (size_t)v->n));
    SYN_TRY(q_gguf_w_set_u32(w, "tokenizer.ggml.unknown_token_id", 0));
    SYN_TRY(q_gguf_w_set_u32(w, "tokenizer.ggml.bos_token_id", 1));
    SYN_TRY(q_gguf_w_set_u32(w, "tokenizer.ggml.eos_token_id", 2));
    SYN_TRY(q_gguf_w_set_bool(w, "tokenizer.ggml.add_bos_token", true));
    SYN_TRY(q_gguf_w_set_bool(w, "tokenizer.ggml.add_eos_token", false));
    SYN_TRY(q_gguf_w_set_str(w, "qtune.generator", "qtune sample"));
    SYN_TRY(q_gguf_w_set_u64(w, "qtune.seed", cfg->seed));
#undef SYN_TRY
    return Q_OK;
}

/* The write pipeline: while the rows of one chunk are generated into
 * out[cur], the chunk generated before (out[cur ^ 1]) is written by whichever
 * thread takes the `single` block; that thread then joins the row loop
 * (dynamic schedule). Each row is a pure function of (seed, tensor, row), so
 * the schedule never changes a byte. */
typedef struct syn_pipe {
    q_gguf_w *w;
    FILE *fp;
    const an_synth_cfg *cfg;
    float *stage;      /* chunk_elems f32: F16 rows before conversion */
    uint8_t *out[2];   /* chunk_elems * 4 bytes each */
    int cur;
    size_t pending;    /* bytes of out[cur ^ 1] still to write */
    int64_t chunk_elems;
    uint64_t done, total;
} syn_pipe;

/* Writes the pending chunk and, if t is not NULL, generates rows r0..r0+nr of
 * t (index ti) into out[cur] at the same time. */
static q_status syn_step(syn_pipe *p, const syn_tensor *t, size_t ti, int64_t r0, int64_t nr,
                         q_err *err)
{
    q_status wst = Q_OK;
    q_err werr = {{0}};
    const uint8_t *wbuf = p->out[p->cur ^ 1];
    size_t wlen = p->pending;
    uint8_t *dst = p->out[p->cur];
    int64_t cols = t ? t->cols : 0;
    bool f16 = t && t->type == Q_DT_F16;
    uint64_t seed = p->cfg->seed;
    if (!t)
        nr = 0;

#pragma omp parallel
    {
#pragma omp single nowait
        {
            if (wlen > 0)
                wst = q_gguf_w_write_data(p->w, p->fp, wbuf, wlen, &werr);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t r = 0; r < nr; r++) {
            if (t->kind == SYN_NORM) {
                syn_norm_row(t, seed, ti, (float *)(void *)dst);
            } else if (f16) {
                float *row = p->stage + r * cols;
                uint16_t *h = (uint16_t *)(void *)dst + r * cols;
                syn_matrix_row(t, seed, ti, r0 + r, row);
                for (int64_t c = 0; c < cols; c++)
                    h[c] = q_f32_to_f16(row[c]);
            } else {
                syn_matrix_row(t, seed, ti, r0 + r, (float *)(void *)dst + r * cols);
            }
        }
    }
    if (wst != Q_OK) {
        *err = werr;
        return wst;
    }
    p->done += wlen;
    if (wlen > 0 && p->cfg->progress && p->cfg->progress(p->cfg->progress_ctx, p->done,
                                                          p->total) != 0)
        return q_fail(err, Q_ECANCELLED, "cancelled");
    p->pending = t ? (size_t)(nr * cols) * (f16 ? 2 : 4) : 0;
    p->cur ^= 1;
    return Q_OK;
}

q_status an_synth_write(const an_synth_cfg *cfg, const char *path, q_err *err)
{
    q_status st = an_synth_validate(cfg, err);
    if (st != Q_OK)
        return st;

    q_atomic at = {0};
    bool at_open = false;
    q_gguf_w *w = NULL;
    syn_vocab voc = {0};
    syn_tensor *ts = NULL;
    size_t nt = 0;
    syn_pipe p = {0};

    int64_t maxcols = cfg->dim > cfg->ff ? cfg->dim : cfg->ff;
    p.cfg = cfg;
    p.total = an_synth_data_bytes(cfg);
    p.chunk_elems = SYN_CHUNK_BYTES / 4;
    if (p.chunk_elems < maxcols)
        p.chunk_elems = maxcols;
    ts = syn_layout(cfg, &nt);
    p.stage = malloc((size_t)p.chunk_elems * sizeof(float));
    p.out[0] = malloc((size_t)p.chunk_elems * 4);
    p.out[1] = malloc((size_t)p.chunk_elems * 4);
    w = q_gguf_w_new(0);
    if (!ts || !p.stage || !p.out[0] || !p.out[1] || !w) {
        st = q_fail(err, Q_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    if ((st = syn_vocab_build(&voc, cfg->vocab)) != Q_OK ||
        (st = syn_metadata(w, cfg, &voc)) != Q_OK) {
        q_fail(err, st, "%s: cannot build metadata: %s", path, q_status_str(st));
        goto fail;
    }
    syn_vocab_free(&voc); /* the writer copied the arrays */
    for (size_t i = 0; i < nt; i++) {
        int64_t ne[2] = {ts[i].cols, ts[i].rows};
        st = q_gguf_w_add_tensor(w, ts[i].name, ts[i].kind == SYN_NORM ? 1 : 2, ne, ts[i].type);
        if (st != Q_OK) {
            q_fail(err, st, "%s: cannot declare tensor %s", path, ts[i].name);
            goto fail;
        }
    }

    if ((st = q_atomic_open(&at, path, err)) != Q_OK)
        goto fail;
    at_open = true;
    p.w = w;
    p.fp = at.fp;
    if ((st = q_gguf_w_write_header(w, at.fp, err)) != Q_OK)
        goto fail_prefix;
    for (size_t i = 0; i < nt; i++) {
        int64_t chunk = p.chunk_elems / ts[i].cols; /* >= 1 */
        for (int64_t r0 = 0; r0 < ts[i].rows; r0 += chunk) {
            int64_t nr = ts[i].rows - r0 < chunk ? ts[i].rows - r0 : chunk;
            if ((st = syn_step(&p, &ts[i], i, r0, nr, err)) != Q_OK)
                goto fail_prefix;
        }
    }
    if ((st = syn_step(&p, NULL, 0, 0, 0, err)) != Q_OK || (st = q_gguf_w_finish(w, err)) != Q_OK)
        goto fail_prefix;
    at_open = false;
    if ((st = q_atomic_commit(&at, err)) != Q_OK)
        goto fail;
    goto out;

fail_prefix:
    q_fail_prefix(err, st, path);
fail:
    if (at_open)
        q_atomic_abort(&at);
out:
    syn_vocab_free(&voc);
    q_gguf_w_free(w);
    free(ts);
    free(p.stage);
    free(p.out[0]);
    free(p.out[1]);
    return st;
}
