/* q_imatrix.c — llama.cpp importance matrices: legacy .dat and GGUF.
 *
 * The importance of an entry is exactly what llama-quantize hands its
 * quantizers as quant_weights (tools/quantize/quantize.cpp):
 *   - legacy .dat (load_legacy_imatrix): the stored floats divided by the
 *     entry's ncall when ncall > 0 (float division), else as stored. The writer
 *     (tools/imatrix/imatrix.cpp, save_imatrix_legacy) stores mean-x² × ncall,
 *     so this is the mean of x² per input column.
 *   - GGUF (load_imatrix): for matrix j of NAME.in_sum2 [n, n_mat], in_sum2 /
 *     counts[j] when counts[j] > 0 (float division), else 1 for the whole row
 *     of that matrix ("partial data": an expert that saw no tokens).
 * llama-quantize then passes values + i*n for expert i of a 3-D tensor
 * (src/llama-quant.cpp); q_imatrix_entry keeps that layout.
 *
 * Legacy layout (little-endian): i32 n_entries; per entry i32 name length,
 * name, i32 ncall, i32 nval, nval f32; then optionally i32 last_chunk and
 * i32 length + dataset name. The format has no matrix count: an entry is read
 * as one matrix of nval (n = nval, n_mat = 1); for a 3-D tensor n is its
 * row length times its experts, as llama-quantize checks it.
 *
 * Rules this reader applies (every violation is Q_EDATA "FILE: offset N: ..."):
 *   - n_entries >= 1 (llama.cpp: "no data"), no more than the file can hold;
 *   - names non-empty, without NUL bytes, unique; ncall >= 0; nval >= 1;
 *   - every stored value finite and >= 0 (sums of squares);
 *   - the tail is empty, or last_chunk (>= 0), or last_chunk plus a dataset
 *     name (length >= 0, no NUL) and nothing after it;
 *   - GGUF: general.type, when present, is "imatrix"; NAME.in_sum2 and
 *     NAME.counts come in pairs, F32, in_sum2 of 1 or 2 dimensions [n, n_mat],
 *     counts with n_mat elements, each a finite whole number >= 0 (a count of
 *     tokens; this also keeps in_sum2 / count finite); an optional
 *     NAME.in_sum (activation sums) needs its in_sum2 partner, F32, same size;
 *     other tensors are ignored, as llama.cpp ignores them; at least one entry.
 *   - imatrix.chunk_count / chunk_size / datasets are optional here
 *     (llama-quantize's load_imatrix refuses files without them; qtune reads the
 *     data anyway), but must have the right types when present.
 * The entry's ncall is the .dat ncall, or for GGUF the largest count divided
 * by imatrix.chunk_size (truncated, as llama.cpp derives chunks; the largest
 * count itself when chunk_size is absent or 0).
 */
#include "q_imatrix.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "q_dtype.h"
#include "q_gguf.h"
#include "q_io.h"

/* Smallest legacy entry: length 4 + name 1 + ncall 4 + nval 4 + one value 4. */
#define QI_MIN_ENTRY_BYTES 17

/* ---- shared helpers ---- */

static uint32_t qi_ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static float qi_ldf(const uint8_t *p)
{
    uint32_t u = qi_ld32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Name for messages: at most 64 bytes, non-printable bytes as '?'. */
static void qi_show(char *dst, size_t cap, const char *s, uint64_t len)
{
    size_t n = len < cap - 1 ? (size_t)len : cap - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    dst[n] = '\0';
}

static char *qi_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

typedef struct qi_key {
    const char *name;
    uint64_t offset; /* for the duplicate message */
    int64_t idx;
} qi_key;

static int qi_key_cmp(const void *a, const void *b)
{
    const qi_key *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Duplicate entry names: Q_EDATA naming the later of the first duplicate pair. */
static q_status qi_check_unique(q_imatrix *im, const uint64_t *offsets, const char *fname,
                                q_err *err)
{
    if (im->n_entries < 2)
        return Q_OK;
    qi_key *keys = malloc((size_t)im->n_entries * sizeof *keys);
    if (!keys)
        return q_fail(err, Q_ENOMEM, "%s: out of memory", fname);
    for (int64_t i = 0; i < im->n_entries; i++) {
        keys[i].name = im->entries[i].name;
        keys[i].offset = offsets[i];
        keys[i].idx = i;
    }
    qsort(keys, (size_t)im->n_entries, sizeof *keys, qi_key_cmp);
    const qi_key *dup = NULL;
    for (int64_t i = 1; i < im->n_entries; i++) {
        if (strcmp(keys[i - 1].name, keys[i].name) == 0 &&
            (!dup || keys[i].idx < dup->idx)) {
            dup = &keys[i];
        }
    }
    q_status st = Q_OK;
    if (dup) {
        char show[80];
        qi_show(show, sizeof show, dup->name, strlen(dup->name));
        st = q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": duplicate entry name '%s'", fname,
                    dup->offset, show);
    }
    free(keys);
    return st;
}

/* Checks n stored values at p (file offset off) are finite and >= 0. */
static q_status qi_check_values(const uint8_t *p, int64_t n, uint64_t off, const char *what,
                                const char *fname, q_err *err)
{
    for (int64_t i = 0; i < n; i++) {
        float v = qi_ldf(p + 4 * i);
        if (!isfinite(v) || v < 0.0f) {
            return q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": %s value %" PRId64
                          " is %s (must be finite and >= 0)",
                          fname, off + 4 * (uint64_t)i, what, i,
                          isnan(v) ? "NaN" : isinf(v) ? "infinite" : "negative");
        }
    }
    return Q_OK;
}

/* ---- legacy .dat ---- */

typedef struct qi_rd {
    const uint8_t *p;
    uint64_t size, off;
    const char *fname;
    q_err *err;
} qi_rd;

static bool qi_i32(qi_rd *r, int32_t *v)
{
    if (r->size - r->off < 4)
        return false;
    *v = (int32_t)qi_ld32(r->p + r->off);
    r->off += 4;
    return true;
}

static q_status qi_trunc(qi_rd *r, const char *what)
{
    return q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": file ends inside %s (%" PRIu64
                  " bytes left)", r->fname, r->off, what, r->size - r->off);
}

static q_status qi_load_dat(qi_rd *r, q_imatrix *im)
{
    q_status st = Q_OK;
    uint64_t *offsets = NULL;
    int32_t n_entries;
    if (!qi_i32(r, &n_entries))
        return qi_trunc(r, "the entry count");
    if (n_entries < 1)
        return q_fail(r->err, Q_EDATA, "%s: offset 0: entry count %" PRId32
                      " is not positive (no data)", r->fname, n_entries);
    if ((uint64_t)n_entries > (r->size - 4) / QI_MIN_ENTRY_BYTES)
        return q_fail(r->err, Q_EDATA, "%s: offset 0: entry count %" PRId32
                      " exceeds what the file can hold (%" PRIu64 " bytes)",
                      r->fname, n_entries, r->size);
    im->entries = calloc((size_t)n_entries, sizeof *im->entries);
    offsets = calloc((size_t)n_entries, sizeof *offsets);
    if (!im->entries || !offsets) {
        st = q_fail(r->err, Q_ENOMEM, "%s: out of memory", r->fname);
        goto fail;
    }
    for (int32_t i = 0; i < n_entries; i++) {
        q_imatrix_entry *e = &im->entries[i];
        int32_t len, ncall, nval;
        uint64_t at = r->off;
        if (!qi_i32(r, &len)) {
            st = qi_trunc(r, "an entry's name length");
            goto fail;
        }
        if (len < 1 || (uint64_t)len > r->size - r->off) {
            st = q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": entry %" PRId32
                        ": name length %" PRId32 " %s (%" PRIu64 " bytes left)",
                        r->fname, at, i, len, len < 1 ? "is not positive" :
                        "runs past the end of the file", r->size - r->off);
            goto fail;
        }
        const char *name = (const char *)r->p + r->off;
        if (memchr(name, 0, (size_t)len)) {
            st = q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": entry %" PRId32
                        ": name contains a NUL byte", r->fname, r->off, i);
            goto fail;
        }
        offsets[i] = r->off;
        e->name = qi_strndup(name, (size_t)len);
        im->n_entries = i + 1; /* so that fail frees it */
        if (!e->name) {
            st = q_fail(r->err, Q_ENOMEM, "%s: out of memory", r->fname);
            goto fail;
        }
        r->off += (uint64_t)len;
        char show[80];
        qi_show(show, sizeof show, name, (uint64_t)len);
        at = r->off;
        if (!qi_i32(r, &ncall) || !qi_i32(r, &nval)) {
            r->off = at;
            st = qi_trunc(r, "an entry's ncall and nval");
            goto fail;
        }
        if (ncall < 0) {
            st = q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": entry '%s': ncall %" PRId32
                        " is negative", r->fname, at, show, ncall);
            goto fail;
        }
        if (nval < 1 || (uint64_t)nval > (r->size - r->off) / 4) {
            st = q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": entry '%s': %" PRId32
                        " values %s (%" PRIu64 " bytes left)", r->fname, at + 4, show, nval,
                        nval < 1 ? "is not a positive count" : "run past the end of the file",
                        r->size - r->off);
            goto fail;
        }
        const uint8_t *vals = r->p + r->off;
        st = qi_check_values(vals, nval, r->off, show, r->fname, r->err);
        if (st != Q_OK)
            goto fail;
        e->n = nval;
        e->n_mat = 1;
        e->ncall = ncall;
        e->values = malloc((size_t)nval * sizeof(float));
        if (!e->values) {
            st = q_fail(r->err, Q_ENOMEM, "%s: out of memory", r->fname);
            goto fail;
        }
        const float div = (float)ncall;
        for (int32_t j = 0; j < nval; j++) {
            float v = qi_ldf(vals + 4 * (uint64_t)j);
            e->values[j] = ncall > 0 ? v / div : v;
        }
        r->off += 4 * (uint64_t)nval;
    }

    /* Optional tail: last_chunk, then dataset name length and bytes. */
    if (r->off < r->size) {
        int32_t last, dlen;
        uint64_t at = r->off;
        if (!qi_i32(r, &last)) {
            st = q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": %" PRIu64 " trailing bytes"
                        " are too few for the last-chunk count", r->fname, at, r->size - at);
            goto fail;
        }
        if (last < 0) {
            st = q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": last chunk %" PRId32
                        " is negative", r->fname, at, last);
            goto fail;
        }
        im->chunk_count = last;
        if (r->off < r->size) {
            at = r->off;
            if (!qi_i32(r, &dlen)) {
                st = qi_trunc(r, "the dataset name length");
                goto fail;
            }
            if (dlen < 0 || (uint64_t)dlen > r->size - r->off) {
                st = q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": dataset name length %"
                            PRId32 " %s (%" PRIu64 " bytes left)", r->fname, at, dlen,
                            dlen < 0 ? "is negative" : "runs past the end of the file",
                            r->size - r->off);
                goto fail;
            }
            const char *ds = (const char *)r->p + r->off;
            if (memchr(ds, 0, (size_t)dlen)) {
                st = q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": dataset name contains"
                            " a NUL byte", r->fname, r->off);
                goto fail;
            }
            if (dlen > 0) {
                im->dataset = qi_strndup(ds, (size_t)dlen);
                if (!im->dataset) {
                    st = q_fail(r->err, Q_ENOMEM, "%s: out of memory", r->fname);
                    goto fail;
                }
            }
            r->off += (uint64_t)dlen;
            if (r->off < r->size) {
                st = q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": %" PRIu64
                            " unexpected bytes after the dataset name", r->fname, r->off,
                            r->size - r->off);
                goto fail;
            }
        }
    }
    st = qi_check_unique(im, offsets, r->fname, r->err);
fail:
    free(offsets);
    return st;
}

/* ---- GGUF ---- */

static const char qi_sfx_sum2[] = ".in_sum2";
static const char qi_sfx_counts[] = ".counts";
static const char qi_sfx_sum[] = ".in_sum";

/* True when name (len bytes) ends in sfx; *base_len gets the length before it. */
static bool qi_suffix(const q_gguf_str *name, const char *sfx, uint64_t *base_len)
{
    uint64_t n = strlen(sfx);
    if (name->len <= n || memcmp(name->ptr + name->len - n, sfx, (size_t)n) != 0)
        return false;
    *base_len = name->len - n;
    return true;
}

/* Index of the tensor named base + sfx, or -1. */
static int64_t qi_partner(const q_gguf *g, const char *base, uint64_t base_len, const char *sfx)
{
    size_t n = strlen(sfx);
    char *name = malloc((size_t)base_len + n + 1);
    if (!name)
        return -2;
    memcpy(name, base, (size_t)base_len);
    memcpy(name + base_len, sfx, n + 1);
    int64_t idx = q_gguf_find_tensor(g, name);
    free(name);
    return idx;
}

static q_status qi_tensor_fail(const q_gguf_tensor *t, const char *fname, q_err *err,
                               const char *problem)
{
    char show[96];
    qi_show(show, sizeof show, t->name.ptr, t->name.len);
    return q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": tensor '%s' %s", fname, t->abs_offset,
                  show, problem);
}

static q_status qi_need_f32(const q_gguf_tensor *t, const char *fname, q_err *err)
{
    if (t->type == Q_DT_F32 && t->data)
        return Q_OK;
    char msg[96];
    snprintf(msg, sizeof msg, "has type %s, expected F32", q_dtype_name(t->type));
    return qi_tensor_fail(t, fname, err, msg);
}

/* Reads an optional unsigned integer key into *out (0 when absent). */
static q_status qi_meta_int(const q_gguf *g, const char *key, int64_t *out, const char *fname,
                            q_err *err)
{
    *out = 0;
    int64_t k = q_gguf_find(g, key);
    if (k < 0)
        return Q_OK;
    int64_t v;
    if (!q_gguf_get_int(g, key, &v) || g->kv[k].type == Q_GGUF_BOOL || v < 0)
        return q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": %s must be a non-negative integer",
                      fname, g->kv[k].offset, key);
    *out = v;
    return Q_OK;
}

static q_status qi_load_gguf(const uint8_t *buf, uint64_t size, const char *fname,
                             q_imatrix *im, q_err *err)
{
    q_gguf *g = NULL;
    uint64_t *offsets = NULL;
    q_status st = q_gguf_parse(buf, size, fname, &g, err);
    if (st != Q_OK)
        return st;

    int64_t k = q_gguf_find(g, "general.type");
    if (k >= 0) {
        const q_gguf_kv *kv = &g->kv[k];
        if (kv->type != Q_GGUF_STRING || kv->v.str.len != 7 ||
            memcmp(kv->v.str.ptr, "imatrix", 7) != 0) {
            char show[48] = "(not a string)";
            if (kv->type == Q_GGUF_STRING)
                qi_show(show, sizeof show, kv->v.str.ptr, kv->v.str.len);
            st = q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": general.type is '%s', not "
                        "'imatrix'", fname, kv->offset, show);
            goto fail;
        }
    }
    int64_t chunk_size = 0;
    st = qi_meta_int(g, "imatrix.chunk_count", &im->chunk_count, fname, err);
    if (st == Q_OK)
        st = qi_meta_int(g, "imatrix.chunk_size", &chunk_size, fname, err);
    if (st != Q_OK)
        goto fail;
    k = q_gguf_find(g, "imatrix.datasets");
    if (k >= 0) {
        const q_gguf_kv *kv = &g->kv[k];
        q_gguf_str s;
        if (kv->type != Q_GGUF_ARRAY || kv->arr_type != Q_GGUF_STRING) {
            st = q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": imatrix.datasets must be an "
                        "array of strings", fname, kv->offset);
            goto fail;
        }
        if (kv->arr_n > 0 && q_gguf_arr_str(kv, 0, &s) && s.len > 0) {
            if (memchr(s.ptr, 0, (size_t)s.len)) {
                st = q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": imatrix.datasets[0] "
                            "contains a NUL byte", fname, kv->offset);
                goto fail;
            }
            im->dataset = qi_strndup(s.ptr, (size_t)s.len);
            if (!im->dataset) {
                st = q_fail(err, Q_ENOMEM, "%s: out of memory", fname);
                goto fail;
            }
        }
    }

    /* Partners first: every counts / in_sum tensor needs its in_sum2. */
    uint64_t n_sum2 = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const q_gguf_tensor *t = &g->tensors[i];
        uint64_t blen;
        if (memchr(t->name.ptr, 0, (size_t)t->name.len)) {
            st = qi_tensor_fail(t, fname, err, "has a NUL byte in its name");
            goto fail;
        }
        if (qi_suffix(&t->name, qi_sfx_sum2, &blen)) {
            n_sum2++;
            continue;
        }
        if (!qi_suffix(&t->name, qi_sfx_counts, &blen) &&
            !qi_suffix(&t->name, qi_sfx_sum, &blen)) {
            continue; /* not ours */
        }
        int64_t p = qi_partner(g, t->name.ptr, blen, qi_sfx_sum2);
        if (p == -2) {
            st = q_fail(err, Q_ENOMEM, "%s: out of memory", fname);
            goto fail;
        }
        if (p < 0) {
            st = qi_tensor_fail(t, fname, err, "has no partner tensor NAME.in_sum2");
            goto fail;
        }
    }
    if (n_sum2 == 0) {
        st = q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": no NAME.in_sum2 tensors: not a "
                    "llama.cpp imatrix (no data)", fname, g->data_offset);
        goto fail;
    }
    im->entries = calloc((size_t)n_sum2, sizeof *im->entries);
    offsets = calloc((size_t)n_sum2, sizeof *offsets);
    if (!im->entries || !offsets) {
        st = q_fail(err, Q_ENOMEM, "%s: out of memory", fname);
        goto fail;
    }

    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const q_gguf_tensor *t = &g->tensors[i];
        uint64_t blen;
        if (!qi_suffix(&t->name, qi_sfx_sum2, &blen))
            continue;
        char msg[160];
        int64_t ci = qi_partner(g, t->name.ptr, blen, qi_sfx_counts);
        int64_t si = qi_partner(g, t->name.ptr, blen, qi_sfx_sum);
        if (ci == -2 || si == -2) {
            st = q_fail(err, Q_ENOMEM, "%s: out of memory", fname);
            goto fail;
        }
        if (ci < 0) {
            st = qi_tensor_fail(t, fname, err, "has no partner tensor NAME.counts");
            goto fail;
        }
        const q_gguf_tensor *c = &g->tensors[ci];
        if ((st = qi_need_f32(t, fname, err)) != Q_OK || (st = qi_need_f32(c, fname, err)) != Q_OK)
            goto fail;
        if (t->ne[2] != 1 || t->ne[3] != 1) {
            snprintf(msg, sizeof msg, "has %" PRIu32 " dimensions, expected [n, n_mat]",
                     t->n_dims);
            st = qi_tensor_fail(t, fname, err, msg);
            goto fail;
        }
        int64_t n = t->ne[0], n_mat = t->ne[1];
        int64_t nc = c->ne[0] * c->ne[1] * c->ne[2] * c->ne[3]; /* fits: the data is in the file */
        if (nc != n_mat) {
            snprintf(msg, sizeof msg, "has %" PRId64 " elements, but its in_sum2 has %" PRId64
                     " matrices", nc, n_mat);
            st = qi_tensor_fail(c, fname, err, msg);
            goto fail;
        }
        if (si >= 0) {
            const q_gguf_tensor *s = &g->tensors[si];
            if ((st = qi_need_f32(s, fname, err)) != Q_OK)
                goto fail;
            if (s->nbytes != t->nbytes) {
                st = qi_tensor_fail(s, fname, err, "differs in size from its in_sum2");
                goto fail;
            }
        }
        char show[96];
        qi_show(show, sizeof show, t->name.ptr, t->name.len);
        if ((st = qi_check_values(t->data, n * n_mat, t->abs_offset, show, fname, err)) != Q_OK)
            goto fail;
        qi_show(show, sizeof show, c->name.ptr, c->name.len);
        if ((st = qi_check_values(c->data, n_mat, c->abs_offset, show, fname, err)) != Q_OK)
            goto fail;

        for (int64_t j = 0; j < n_mat; j++) {
            float cnt = qi_ldf(c->data + 4 * j);
            if (cnt != floorf(cnt)) {
                st = q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": %s value %" PRId64 " is %g,"
                            " not a whole number of tokens", fname,
                            c->abs_offset + 4 * (uint64_t)j, show, j, (double)cnt);
                goto fail;
            }
        }

        q_imatrix_entry *e = &im->entries[im->n_entries];
        offsets[im->n_entries] = t->abs_offset;
        e->name = qi_strndup(t->name.ptr, (size_t)blen);
        im->n_entries++;
        e->values = malloc((size_t)(n * n_mat) * sizeof(float));
        if (!e->name || !e->values) {
            st = q_fail(err, Q_ENOMEM, "%s: out of memory", fname);
            goto fail;
        }
        e->n = n;
        e->n_mat = n_mat;
        float max_count = 0.0f;
        for (int64_t j = 0; j < n_mat; j++) {
            const float cnt = qi_ldf(c->data + 4 * j);
            const uint8_t *row = t->data + 4 * (uint64_t)(j * n);
            float *out = e->values + j * n;
            for (int64_t x = 0; x < n; x++)
                out[x] = cnt > 0.0f ? qi_ldf(row + 4 * x) / cnt : 1.0f;
            if (cnt > max_count)
                max_count = cnt;
        }
        double calls = chunk_size > 0 ? floor((double)max_count / (double)chunk_size)
                                      : (double)max_count;
        e->ncall = calls < 9.2e18 ? (int64_t)calls : INT64_MAX;
    }
    /* Names from distinct tensors are distinct; kept for symmetry with .dat. */
    st = qi_check_unique(im, offsets, fname, err);
fail:
    free(offsets);
    q_gguf_free(g);
    return st;
}

/* ---- public ---- */

q_status q_imatrix_load(const char *path, q_imatrix **out, q_err *err)
{
    *out = NULL;
    q_map m = {NULL, 0};
    q_status st = q_map_file(path, &m, err);
    if (st != Q_OK)
        return st;
    q_imatrix *im = calloc(1, sizeof *im);
    if (!im || !(im->path = qi_strndup(path, strlen(path)))) {
        st = q_fail(err, Q_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (m.size >= 4 && qi_ld32(m.data) == Q_GGUF_MAGIC) {
        st = qi_load_gguf(m.data, m.size, path, im, err);
    } else {
        qi_rd r = {m.data, m.size, 0, path, err};
        st = qi_load_dat(&r, im);
    }
    if (st != Q_OK)
        goto fail;
    q_unmap(&m);
    *out = im;
    return Q_OK;
fail:
    q_unmap(&m);
    q_imatrix_free(im);
    return st;
}

void q_imatrix_free(q_imatrix *im)
{
    if (!im)
        return;
    for (int64_t i = 0; i < im->n_entries; i++) {
        free(im->entries[i].name);
        free(im->entries[i].values);
    }
    free(im->entries);
    free(im->dataset);
    free(im->path);
    free(im);
}

const q_imatrix_entry *q_imatrix_find(const q_imatrix *im, const char *name)
{
    if (!im || !name)
        return NULL;
    for (int64_t i = 0; i < im->n_entries; i++) {
        if (strcmp(im->entries[i].name, name) == 0)
            return &im->entries[i];
    }
    return NULL;
}
