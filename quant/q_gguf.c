/* q_gguf.c — GGUF v2/v3 reader (validating, zero-copy) and streaming writer.
 *
 * File layout (all little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv × { u64 key_len, key bytes, u32 value type, value }
 *   n_tensors × { u64 name_len, name, u32 n_dims, n_dims × u64 ne, u32 ggml type,
 *                 u64 offset relative to the data section }
 *   zero padding to general.alignment (default 32), then the data section.
 *
 * Decisions the format leaves open, as this reader applies them:
 *   - version 2 and 3 only (v1 used u32 counts; v4+ is unknown);
 *   - keys and tensor names must be non-empty and unique; no UTF-8 check;
 *   - arrays of arrays are rejected (llama.cpp never writes them);
 *   - every dimension must be >= 1 (llama.cpp never writes empty tensors);
 *   - ggml type ids the traits table does not know are accepted with nbytes 0
 *     and data NULL; such a tensor must start inside the file, on the alignment,
 *     and not inside another tensor, and is assumed to take at least one byte;
 *   - general.alignment must be a u32 power of two.
 */
#include "q_gguf.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "q_dtype.h"

#define GG_HEADER_BYTES 24
/* Smallest possible metadata entry: key length 8 + key >= 1 + type 4 + u8 value 1. */
#define GG_MIN_KV_BYTES 14
/* Smallest tensor info: name length 8 + name >= 1 + n_dims 4 + one ne 8 + type 4 +
 * offset 8. */
#define GG_MIN_TENSOR_BYTES 33
/* Type ids from here on are qtune's safetensors-only types, never ggml ids. */
#define GG_GGML_TYPE_LIMIT 1000
#define GG_ALIGN_KEY "general.alignment"

/* ---- small helpers shared by reader and writer ---- */

static uint64_t gg_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static bool gg_is_pow2(uint64_t v)
{
    return v != 0 && (v & (v - 1)) == 0;
}

/* Rounds v up to a multiple of align (a power of two); false on overflow. */
static bool gg_align_up(uint64_t v, uint64_t align, uint64_t *out)
{
    if (v > UINT64_MAX - (align - 1)) {
        return false;
    }
    *out = (v + align - 1) & ~(align - 1);
    return true;
}

/* Quotes untrusted bytes for a one-line message: printable ASCII kept, the rest
 * as \xNN, cut to about 60 characters. */
static const char *gg_quote(char *dst, size_t cap, const char *p, uint64_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    uint64_t i = 0;
    for (; i < len && o + 5 < cap && o < 60; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
            dst[o++] = (char)c;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    if (i < len && o + 4 <= cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
    return dst;
}

/* FNV-1a, 64-bit. */
static uint64_t gg_hash(const char *p, uint64_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < len; i++) {
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    }
    return h;
}

/* Open-addressing set of borrowed (ptr, len) strings, for duplicate checks. */
typedef struct gg_slot {
    const char *p; /* NULL = empty */
    uint64_t len;
    uint64_t h;
} gg_slot;

typedef struct gg_set {
    gg_slot *slot;
    uint64_t cap; /* power of two or 0 */
    uint64_t n;
} gg_set;

static void gg_set_free(gg_set *s)
{
    free(s->slot);
    s->slot = NULL;
    s->cap = s->n = 0;
}

static void gg_set_put(gg_slot *tab, uint64_t cap, gg_slot e)
{
    uint64_t i = e.h & (cap - 1);
    while (tab[i].p) {
        i = (i + 1) & (cap - 1);
    }
    tab[i] = e;
}

/* 1 when added, 0 when already present, -1 when out of memory. */
static int gg_set_add(gg_set *s, const char *p, uint64_t len)
{
    uint64_t h = gg_hash(p, len);
    if (s->cap) {
        for (uint64_t i = h & (s->cap - 1); s->slot[i].p; i = (i + 1) & (s->cap - 1)) {
            const gg_slot *e = &s->slot[i];
            if (e->h == h && e->len == len && memcmp(e->p, p, len) == 0) {
                return 0;
            }
        }
    }
    if ((s->n + 1) * 2 > s->cap) {
        uint64_t cap = s->cap ? s->cap * 2 : 64;
        if (cap > SIZE_MAX / sizeof(gg_slot)) {
            return -1;
        }
        gg_slot *tab = calloc(cap, sizeof *tab);
        if (!tab) {
            return -1;
        }
        for (uint64_t i = 0; i < s->cap; i++) {
            if (s->slot[i].p) {
                gg_set_put(tab, cap, s->slot[i]);
            }
        }
        free(s->slot);
        s->slot = tab;
        s->cap = cap;
    }
    gg_set_put(s->slot, s->cap, (gg_slot){p, len, h});
    s->n++;
    return 1;
}

/* Grows *arr (elements of size esz) to hold at least need elements. */
static bool gg_grow(void **arr, uint64_t *cap, uint64_t need, size_t esz)
{
    if (need <= *cap) {
        return true;
    }
    uint64_t c = *cap ? *cap : 16;
    while (c < need) {
        c *= 2;
    }
    if (c > SIZE_MAX / esz) {
        return false;
    }
    void *p = realloc(*arr, (size_t)(c * esz));
    if (!p) {
        return false;
    }
    *arr = p;
    *cap = c;
    return true;
}

size_t q_gguf_vtype_size(uint32_t t)
{
    switch (t) {
    case Q_GGUF_U8:
    case Q_GGUF_I8:
    case Q_GGUF_BOOL:
        return 1;
    case Q_GGUF_U16:
    case Q_GGUF_I16:
        return 2;
    case Q_GGUF_U32:
    case Q_GGUF_I32:
    case Q_GGUF_F32:
        return 4;
    case Q_GGUF_U64:
    case Q_GGUF_I64:
    case Q_GGUF_F64:
        return 8;
    default:
        return 0;
    }
}

const char *q_gguf_vtype_name(uint32_t t)
{
    static const char *const names[Q_GGUF_VTYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32",
        "bool", "string", "array", "u64", "i64", "f64",
    };
    return t < Q_GGUF_VTYPE_COUNT ? names[t] : "?";
}

/* ggml traits of a type id as stored in GGUF, or NULL when unknown. */
static const q_dtype_traits *gg_traits(uint32_t type)
{
    if (type >= GG_GGML_TYPE_LIMIT) {
        return NULL;
    }
    const q_dtype_traits *tr = q_dtype_get(type);
    if (!tr || tr->blck <= 0 || tr->size == 0) {
        return NULL;
    }
    return tr;
}

/* Element count of ne[0..n_dims); false on int64 overflow. ne[i] must be >= 1. */
static bool gg_nelem(const int64_t *ne, uint32_t n_dims, int64_t *out)
{
    int64_t n = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        if (n > INT64_MAX / ne[i]) {
            return false;
        }
        n *= ne[i];
    }
    *out = n;
    return true;
}

/* Byte size of n elements of tr (n a multiple of its block); false on overflow. */
static bool gg_nbytes(const q_dtype_traits *tr, int64_t n, uint64_t *out)
{
    uint64_t blocks = (uint64_t)(n / tr->blck);
    if (blocks > UINT64_MAX / tr->size) {
        return false;
    }
    *out = blocks * tr->size;
    return true;
}

/* ---- reader ---- */

/* Bumped by every parse and free, so q_gguf_arr_str's per-thread cursor never
 * outlives the buffer it points into. */
static atomic_uint_fast64_t gg_generation;

typedef struct gg_rd {
    const uint8_t *buf;
    uint64_t size;
    uint64_t pos;
    const char *fname;
    q_err *err;
} gg_rd;

static uint64_t rd_left(const gg_rd *r)
{
    return r->size - r->pos;
}

/* Writes "FNAME: offset OFF: MESSAGE" and returns Q_EDATA. */
static q_status gg_fail(const gg_rd *r, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static q_status gg_fail(const gg_rd *r, uint64_t off, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return q_fail(r->err, Q_EDATA, "%s: offset %" PRIu64 ": %s", r->fname, off, msg);
}

/* Truncation at r->pos while reading `need` bytes of `what`. */
static q_status gg_trunc(const gg_rd *r, uint64_t need, const char *what)
{
    return gg_fail(r, r->pos, "file truncated in %s (needs %" PRIu64 " bytes, %" PRIu64
                              " left of %" PRIu64 ")",
                   what, need, rd_left(r), r->size);
}

/* Reads an n-byte little-endian integer; false (nothing consumed) if truncated. */
static bool rd_int(gg_rd *r, int n, uint64_t *v)
{
    if (rd_left(r) < (uint64_t)n) {
        return false;
    }
    *v = gg_le(r->buf + r->pos, n);
    r->pos += (uint64_t)n;
    return true;
}

/* Reads a u64-length-prefixed string. what names it in messages. Empty strings
 * are allowed here; callers that forbid them check len. */
static q_status rd_str(gg_rd *r, q_gguf_str *s, const char *what)
{
    uint64_t at = r->pos, len;
    if (!rd_int(r, 8, &len)) {
        return gg_trunc(r, 8, what);
    }
    if (len > rd_left(r)) {
        return gg_fail(r, at, "%s length %" PRIu64 " runs past the end of the file (%" PRIu64
                              " bytes left)",
                       what, len, rd_left(r));
    }
    s->ptr = (const char *)(r->buf + r->pos);
    s->len = len;
    r->pos += len;
    return Q_OK;
}

static q_status rd_array(gg_rd *r, q_gguf_kv *kv, const char *qkey)
{
    char what[160];
    uint64_t at = r->pos, t, n;
    snprintf(what, sizeof what, "the array header of key '%s'", qkey);
    if (!rd_int(r, 4, &t)) {
        return gg_trunc(r, 4 + 8, what);
    }
    if (t == Q_GGUF_ARRAY) {
        return gg_fail(r, at, "key '%s': nested arrays (array of arrays) are not supported",
                       qkey);
    }
    if (t >= Q_GGUF_VTYPE_COUNT) {
        return gg_fail(r, at, "key '%s': unknown array element type %" PRIu64, qkey, t);
    }
    if (!rd_int(r, 8, &n)) {
        return gg_trunc(r, 8, what);
    }
    kv->arr_type = (q_gguf_vtype)t;
    kv->arr_n = n;
    kv->arr_data = r->buf + r->pos;
    size_t esz = q_gguf_vtype_size((uint32_t)t);
    if (esz) {
        if (n > rd_left(r) / esz) {
            return gg_fail(r, at + 4, "key '%s': array of %" PRIu64 " %s elements runs past "
                                      "the end of the file (%" PRIu64 " bytes left)",
                           qkey, n, q_gguf_vtype_name((uint32_t)t), rd_left(r));
        }
        r->pos += n * esz;
        return Q_OK;
    }
    /* Strings: each takes at least its 8-byte length. */
    if (n > rd_left(r) / 8) {
        return gg_fail(r, at + 4, "key '%s': array of %" PRIu64 " strings runs past the end "
                                  "of the file (%" PRIu64 " bytes left)",
                       qkey, n, rd_left(r));
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t sat = r->pos, len;
        if (!rd_int(r, 8, &len)) {
            snprintf(what, sizeof what, "string %" PRIu64 " of array '%s'", i, qkey);
            return gg_trunc(r, 8, what);
        }
        if (len > rd_left(r)) {
            return gg_fail(r, sat, "key '%s': string %" PRIu64 " of the array has length %"
                                   PRIu64 ", past the end of the file (%" PRIu64 " bytes left)",
                           qkey, i, len, rd_left(r));
        }
        r->pos += len;
    }
    return Q_OK;
}

static q_status rd_value(gg_rd *r, q_gguf_kv *kv, const char *qkey)
{
    char what[160];
    uint32_t t = kv->type;
    size_t esz = q_gguf_vtype_size(t);
    memset(&kv->v, 0, sizeof kv->v);
    if (esz) {
        uint64_t raw;
        if (!rd_int(r, (int)esz, &raw)) {
            snprintf(what, sizeof what, "the %s value of key '%s'", q_gguf_vtype_name(t), qkey);
            return gg_trunc(r, esz, what);
        }
        switch (t) {
        case Q_GGUF_I8:
            kv->v.i64 = (int8_t)(uint8_t)raw;
            break;
        case Q_GGUF_I16:
            kv->v.i64 = (int16_t)(uint16_t)raw;
            break;
        case Q_GGUF_I32:
            kv->v.i64 = (int32_t)(uint32_t)raw;
            break;
        case Q_GGUF_I64:
            kv->v.i64 = (int64_t)raw;
            break;
        case Q_GGUF_BOOL:
            kv->v.b = raw != 0;
            break;
        case Q_GGUF_F32: {
            uint32_t bits = (uint32_t)raw;
            float f;
            memcpy(&f, &bits, sizeof f);
            kv->v.f64 = f;
            break;
        }
        case Q_GGUF_F64:
            memcpy(&kv->v.f64, &raw, sizeof raw);
            break;
        default: /* unsigned */
            kv->v.u64 = raw;
            break;
        }
        return Q_OK;
    }
    if (t == Q_GGUF_STRING) {
        snprintf(what, sizeof what, "the string value of key '%s'", qkey);
        return rd_str(r, &kv->v.str, what);
    }
    return rd_array(r, kv, qkey);
}

static q_status rd_kvs(gg_rd *r, q_gguf *g, gg_set *seen)
{
    uint64_t cap = 0;
    char what[160], qkey[80];
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (!gg_grow((void **)&g->kv, &cap, i + 1, sizeof *g->kv)) {
            return q_fail(r->err, Q_ENOMEM, "%s: out of memory reading metadata", r->fname);
        }
        q_gguf_kv *kv = &g->kv[i];
        memset(kv, 0, sizeof *kv);
        kv->offset = r->pos;
        snprintf(what, sizeof what, "the key of metadata entry %" PRIu64, i);
        q_status st = rd_str(r, &kv->key, what);
        if (st != Q_OK) {
            return st;
        }
        gg_quote(qkey, sizeof qkey, kv->key.ptr, kv->key.len);
        if (kv->key.len == 0) {
            return gg_fail(r, kv->offset, "metadata entry %" PRIu64 " has an empty key", i);
        }
        int added = gg_set_add(seen, kv->key.ptr, kv->key.len);
        if (added < 0) {
            return q_fail(r->err, Q_ENOMEM, "%s: out of memory reading metadata", r->fname);
        }
        if (added == 0) {
            return gg_fail(r, kv->offset, "duplicate key '%s'", qkey);
        }
        uint64_t tat = r->pos, t;
        if (!rd_int(r, 4, &t)) {
            snprintf(what, sizeof what, "the value type of key '%s'", qkey);
            return gg_trunc(r, 4, what);
        }
        if (t >= Q_GGUF_VTYPE_COUNT) {
            return gg_fail(r, tat, "key '%s' has unknown value type %" PRIu64, qkey, t);
        }
        kv->type = (q_gguf_vtype)t;
        uint64_t vat = r->pos;
        st = rd_value(r, kv, qkey);
        if (st != Q_OK) {
            return st;
        }
        kv->end = r->pos;
        if (kv->key.len == sizeof GG_ALIGN_KEY - 1 &&
            memcmp(kv->key.ptr, GG_ALIGN_KEY, kv->key.len) == 0) {
            if (kv->type != Q_GGUF_U32) {
                return gg_fail(r, tat, "%s has type %s; it must be u32", GG_ALIGN_KEY,
                               q_gguf_vtype_name(kv->type));
            }
            if (!gg_is_pow2(kv->v.u64)) {
                return gg_fail(r, vat, "%s is %" PRIu64 "; it must be a power of two",
                               GG_ALIGN_KEY, kv->v.u64);
            }
            g->alignment = (uint32_t)kv->v.u64;
        }
    }
    return Q_OK;
}

/* Per-tensor parse facts that only the reader needs. */
typedef struct gg_tinfo {
    uint64_t info_at; /* file offset of the tensor info */
    uint64_t off_at;  /* file offset of its data-offset field */
    uint64_t index;
    uint64_t abs;     /* absolute data offset, once placed */
} gg_tinfo;

static q_status rd_tensor_infos(gg_rd *r, q_gguf *g, gg_tinfo **infos_out)
{
    uint64_t cap = 0, icap = 0;
    gg_tinfo *infos = NULL;
    gg_set seen = {0};
    char what[160], qname[80];
    q_status st = Q_OK;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (!gg_grow((void **)&g->tensors, &cap, i + 1, sizeof *g->tensors) ||
            !gg_grow((void **)&infos, &icap, i + 1, sizeof *infos)) {
            st = q_fail(r->err, Q_ENOMEM, "%s: out of memory reading tensor infos", r->fname);
            goto fail;
        }
        q_gguf_tensor *t = &g->tensors[i];
        memset(t, 0, sizeof *t);
        infos[i].info_at = r->pos;
        infos[i].index = i;
        snprintf(what, sizeof what, "the name of tensor %" PRIu64, i);
        st = rd_str(r, &t->name, what);
        if (st != Q_OK) {
            goto fail;
        }
        if (t->name.len == 0) {
            st = gg_fail(r, infos[i].info_at, "tensor %" PRIu64 " has an empty name", i);
            goto fail;
        }
        gg_quote(qname, sizeof qname, t->name.ptr, t->name.len);
        int added = gg_set_add(&seen, t->name.ptr, t->name.len);
        if (added < 0) {
            st = q_fail(r->err, Q_ENOMEM, "%s: out of memory reading tensor infos", r->fname);
            goto fail;
        }
        if (added == 0) {
            st = gg_fail(r, infos[i].info_at, "duplicate tensor name '%s'", qname);
            goto fail;
        }
        uint64_t at = r->pos, v;
        snprintf(what, sizeof what, "the info of tensor '%s'", qname);
        if (!rd_int(r, 4, &v)) {
            st = gg_trunc(r, 4, what);
            goto fail;
        }
        if (v == 0 || v > Q_GGUF_MAX_DIMS) {
            st = gg_fail(r, at, "tensor '%s' has %" PRIu64 " dimensions (n_dims must be 1..%d)",
                         qname, v, Q_GGUF_MAX_DIMS);
            goto fail;
        }
        t->n_dims = (uint32_t)v;
        for (int d = 0; d < Q_GGUF_MAX_DIMS; d++) {
            t->ne[d] = 1;
        }
        for (uint32_t d = 0; d < t->n_dims; d++) {
            at = r->pos;
            if (!rd_int(r, 8, &v)) {
                st = gg_trunc(r, 8, what);
                goto fail;
            }
            if ((int64_t)v <= 0) {
                st = gg_fail(r, at, "tensor '%s': dimension %u is %" PRId64
                                    "; every dimension must be at least 1",
                             qname, d, (int64_t)v);
                goto fail;
            }
            t->ne[d] = (int64_t)v;
        }
        int64_t nelem;
        if (!gg_nelem(t->ne, t->n_dims, &nelem)) {
            st = gg_fail(r, at, "tensor '%s': element count overflows int64", qname);
            goto fail;
        }
        uint64_t type_at = r->pos;
        if (!rd_int(r, 4, &v)) {
            st = gg_trunc(r, 4, what);
            goto fail;
        }
        t->type = (uint32_t)v;
        infos[i].off_at = r->pos;
        if (!rd_int(r, 8, &t->rel_offset)) {
            st = gg_trunc(r, 8, what);
            goto fail;
        }
        const q_dtype_traits *tr = gg_traits(t->type);
        if (tr) {
            if (t->ne[0] % tr->blck != 0) {
                st = gg_fail(r, type_at, "tensor '%s': row length %" PRId64 " is not a multiple "
                                         "of the %s block size %" PRId64,
                             qname, t->ne[0], tr->name, tr->blck);
                goto fail;
            }
            if (!gg_nbytes(tr, nelem, &t->nbytes)) {
                st = gg_fail(r, type_at, "tensor '%s': byte size overflows", qname);
                goto fail;
            }
        }
    }
    *infos_out = infos;
    gg_set_free(&seen);
    return Q_OK;
fail:
    free(infos);
    gg_set_free(&seen);
    return st;
}

static int gg_cmp_off(const void *a, const void *b)
{
    const gg_tinfo *x = a, *y = b;
    if (x->abs != y->abs) {
        return x->abs < y->abs ? -1 : 1;
    }
    return x->index < y->index ? -1 : (x->index > y->index);
}

/* Places every tensor in the data section: alignment, extent, overlaps. */
static q_status rd_place(gg_rd *r, q_gguf *g, gg_tinfo *infos)
{
    char qname[80], qother[80];
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        q_gguf_tensor *t = &g->tensors[i];
        gg_quote(qname, sizeof qname, t->name.ptr, t->name.len);
        uint64_t at = infos[i].off_at;
        if (t->rel_offset % g->alignment != 0) {
            return gg_fail(r, at, "tensor '%s': data offset %" PRIu64 " is not a multiple of "
                                  "the alignment %u",
                           qname, t->rel_offset, g->alignment);
        }
        uint64_t room = r->size - g->data_offset; /* data_offset <= size checked */
        bool known = gg_traits(t->type) != NULL;
        uint64_t need = known ? t->nbytes : 1;
        if (t->rel_offset > room || need > room - t->rel_offset) {
            if (known) {
                return gg_fail(r, at, "tensor '%s': data at %" PRIu64 "+%" PRIu64 " (%" PRIu64
                                      " bytes) runs past the end of the file (%" PRIu64
                                      " bytes)",
                               qname, g->data_offset, t->rel_offset, t->nbytes, r->size);
            }
            return gg_fail(r, at, "tensor '%s' (unknown type %u): data at %" PRIu64 "+%" PRIu64
                                  " starts past the end of the file (%" PRIu64 " bytes)",
                           qname, t->type, g->data_offset, t->rel_offset, r->size);
        }
        t->abs_offset = g->data_offset + t->rel_offset;
        infos[i].abs = t->abs_offset;
        t->data = known ? g->base + t->abs_offset : NULL;
        if (!known) {
            t->nbytes = 0;
        }
    }
    /* Overlaps: sort by offset; each tensor must end before the next begins.
     * A tensor of unknown type is taken to occupy at least one byte. */
    qsort(infos, (size_t)g->n_tensors, sizeof *infos, gg_cmp_off);
    for (uint64_t k = 1; k < g->n_tensors; k++) {
        const q_gguf_tensor *a = &g->tensors[infos[k - 1].index];
        const q_gguf_tensor *b = &g->tensors[infos[k].index];
        uint64_t a_end = a->abs_offset + (a->data ? a->nbytes : 1);
        if (b->abs_offset < a_end) {
            gg_quote(qname, sizeof qname, b->name.ptr, b->name.len);
            gg_quote(qother, sizeof qother, a->name.ptr, a->name.len);
            return gg_fail(r, infos[k].off_at, "tensor '%s': data at %" PRIu64 " overlaps "
                                               "tensor '%s' at [%" PRIu64 ", %" PRIu64 ")",
                           qname, b->abs_offset, qother, a->abs_offset, a_end);
        }
    }
    return Q_OK;
}

q_status q_gguf_parse(const uint8_t *buf, uint64_t size, const char *fname, q_gguf **out,
                      q_err *err)
{
    if (!out || (!buf && size)) {
        return q_fail(err, Q_EUSAGE, "q_gguf_parse: no buffer or no output");
    }
    *out = NULL;
    atomic_fetch_add(&gg_generation, 1);
    gg_rd r = {buf, size, 0, fname ? fname : "(memory)", err};
    gg_tinfo *infos = NULL;
    gg_set seen = {0};
    q_status st;
    q_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        return q_fail(err, Q_ENOMEM, "%s: out of memory", r.fname);
    }
    g->base = buf;
    g->size = size;
    g->alignment = Q_GGUF_DEFAULT_ALIGNMENT;

    uint64_t v;
    if (!rd_int(&r, 4, &v)) {
        st = gg_trunc(&r, 4, "the magic");
        goto fail;
    }
    if (v != Q_GGUF_MAGIC) {
        st = gg_fail(&r, 0, "not a GGUF file (magic %02x %02x %02x %02x, expected \"GGUF\")",
                     buf[0], buf[1], buf[2], buf[3]);
        goto fail;
    }
    if (!rd_int(&r, 4, &v)) {
        st = gg_trunc(&r, 4, "the header");
        goto fail;
    }
    g->version = (uint32_t)v;
    if (v != 2 && v != 3) {
        if ((v & 0xffff) == 0 && (v >> 16) != 0) {
            st = gg_fail(&r, 4, "version field 0x%08" PRIx64 " looks like a big-endian GGUF; "
                                "only little-endian files are supported",
                         v);
        } else if (v == 1) {
            st = gg_fail(&r, 4, "GGUF version 1 (32-bit counts) is not supported; "
                                "convert the file to version 3");
        } else {
            st = gg_fail(&r, 4, "unsupported GGUF version %" PRIu64 " (supported: 2, 3)", v);
        }
        goto fail;
    }
    if (!rd_int(&r, 8, &g->n_tensors) || !rd_int(&r, 8, &g->n_kv)) {
        st = gg_trunc(&r, GG_HEADER_BYTES - r.pos, "the header");
        goto fail;
    }
    uint64_t rest = rd_left(&r);
    if (g->n_tensors > rest / GG_MIN_TENSOR_BYTES) {
        st = gg_fail(&r, 8, "tensor count %" PRIu64 " exceeds what the file can hold",
                     g->n_tensors);
        goto fail;
    }
    if (g->n_kv > rest / GG_MIN_KV_BYTES) {
        st = gg_fail(&r, 16, "metadata count %" PRIu64 " exceeds what the file can hold", g->n_kv);
        goto fail;
    }
    if (g->n_tensors * GG_MIN_TENSOR_BYTES + g->n_kv * GG_MIN_KV_BYTES > rest) {
        st = gg_fail(&r, 8, "tensor count %" PRIu64 " and metadata count %" PRIu64
                            " exceed what the file can hold",
                     g->n_tensors, g->n_kv);
        goto fail;
    }

    st = rd_kvs(&r, g, &seen);
    if (st != Q_OK) {
        goto fail;
    }
    gg_set_free(&seen);
    st = rd_tensor_infos(&r, g, &infos);
    if (st != Q_OK) {
        goto fail;
    }
    uint64_t infos_end = r.pos;
    if (!gg_align_up(infos_end, g->alignment, &g->data_offset)) {
        g->data_offset = UINT64_MAX;
    }
    if (g->n_tensors > 0) {
        if (g->data_offset > size) {
            st = gg_fail(&r, infos_end, "data section starts at %" PRIu64 " (alignment %u), "
                                        "past the end of the file (%" PRIu64 " bytes)",
                         g->data_offset, g->alignment, size);
            goto fail;
        }
        st = rd_place(&r, g, infos);
        if (st != Q_OK) {
            goto fail;
        }
    } else if (g->data_offset > size) {
        g->data_offset = size; /* no tensors: an unpadded end is harmless */
    }
    free(infos);
    *out = g;
    return Q_OK;
fail:
    free(infos);
    gg_set_free(&seen);
    q_gguf_free(g);
    return st;
}

void q_gguf_free(q_gguf *g)
{
    if (!g) {
        return;
    }
    atomic_fetch_add(&gg_generation, 1);
    free(g->kv);
    free(g->tensors);
    free(g);
}

static bool gg_str_eq(q_gguf_str s, const char *z, size_t zlen)
{
    return s.len == zlen && memcmp(s.ptr, z, zlen) == 0;
}

int64_t q_gguf_find(const q_gguf *g, const char *key)
{
    if (!g || !key) {
        return -1;
    }
    size_t len = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        if (gg_str_eq(g->kv[i].key, key, len)) {
            return (int64_t)i;
        }
    }
    return -1;
}

int64_t q_gguf_find_tensor(const q_gguf *g, const char *name)
{
    if (!g || !name) {
        return -1;
    }
    size_t len = strlen(name);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (gg_str_eq(g->tensors[i].name, name, len)) {
            return (int64_t)i;
        }
    }
    return -1;
}

static const q_gguf_kv *gg_kv(const q_gguf *g, const char *key)
{
    int64_t i = q_gguf_find(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

bool q_gguf_get_int(const q_gguf *g, const char *key, int64_t *out)
{
    const q_gguf_kv *kv = gg_kv(g, key);
    if (!kv || !out) {
        return false;
    }
    switch (kv->type) {
    case Q_GGUF_U8:
    case Q_GGUF_U16:
    case Q_GGUF_U32:
    case Q_GGUF_U64:
        if (kv->v.u64 > (uint64_t)INT64_MAX) {
            return false;
        }
        *out = (int64_t)kv->v.u64;
        return true;
    case Q_GGUF_I8:
    case Q_GGUF_I16:
    case Q_GGUF_I32:
    case Q_GGUF_I64:
        *out = kv->v.i64;
        return true;
    case Q_GGUF_BOOL:
        *out = kv->v.b ? 1 : 0;
        return true;
    default:
        return false;
    }
}

bool q_gguf_get_f64(const q_gguf *g, const char *key, double *out)
{
    const q_gguf_kv *kv = gg_kv(g, key);
    if (!kv || !out) {
        return false;
    }
    switch (kv->type) {
    case Q_GGUF_F32:
    case Q_GGUF_F64:
        *out = kv->v.f64;
        return true;
    case Q_GGUF_U8:
    case Q_GGUF_U16:
    case Q_GGUF_U32:
    case Q_GGUF_U64:
        *out = (double)kv->v.u64;
        return true;
    case Q_GGUF_I8:
    case Q_GGUF_I16:
    case Q_GGUF_I32:
    case Q_GGUF_I64:
        *out = (double)kv->v.i64;
        return true;
    default:
        return false;
    }
}

bool q_gguf_get_str(const q_gguf *g, const char *key, char *dst, size_t dstlen)
{
    const q_gguf_kv *kv = gg_kv(g, key);
    if (!kv || kv->type != Q_GGUF_STRING || !dst || dstlen == 0) {
        return false;
    }
    size_t n = kv->v.str.len < dstlen - 1 ? (size_t)kv->v.str.len : dstlen - 1;
    memcpy(dst, kv->v.str.ptr, n);
    dst[n] = '\0';
    return true;
}

/* Per-thread cursor so that walking a 32000-string array in order is O(n). */
static _Thread_local struct {
    uint_fast64_t gen;
    const q_gguf_kv *kv;
    const uint8_t *arr_data;
    uint64_t i;      /* index of the string at p */
    const uint8_t *p; /* its length prefix */
} gg_cursor;

bool q_gguf_arr_str(const q_gguf_kv *kv, uint64_t i, q_gguf_str *out)
{
    if (!kv || !out || kv->type != Q_GGUF_ARRAY || kv->arr_type != Q_GGUF_STRING ||
        i >= kv->arr_n || !kv->arr_data) {
        return false;
    }
    uint_fast64_t gen = atomic_load(&gg_generation);
    const uint8_t *p = kv->arr_data;
    uint64_t k = 0;
    if (gg_cursor.gen == gen && gg_cursor.kv == kv && gg_cursor.arr_data == kv->arr_data &&
        gg_cursor.i <= i) {
        p = gg_cursor.p;
        k = gg_cursor.i;
    }
    /* The parser checked every length of this array against the buffer. */
    for (; k < i; k++) {
        p += 8 + gg_le(p, 8);
    }
    gg_cursor.gen = gen;
    gg_cursor.kv = kv;
    gg_cursor.arr_data = kv->arr_data;
    gg_cursor.i = i;
    gg_cursor.p = p;
    out->len = gg_le(p, 8);
    out->ptr = (const char *)(p + 8);
    return true;
}

/* ---- writer ---- */

typedef struct gg_buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} gg_buf;

static void buf_put(gg_buf *b, const void *src, size_t n)
{
    if (b->oom || n == 0) {
        return;
    }
    if (n > SIZE_MAX - b->len) {
        b->oom = true;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void buf_le(gg_buf *b, uint64_t v, int n)
{
    uint8_t tmp[8];
    for (int i = 0; i < n; i++) {
        tmp[i] = (uint8_t)(v >> (8 * i));
    }
    buf_put(b, tmp, (size_t)n);
}

static void buf_str(gg_buf *b, const char *s, uint64_t len)
{
    buf_le(b, len, 8);
    buf_put(b, s, (size_t)len);
}

static void buf_zeros(gg_buf *b, size_t n)
{
    static const uint8_t zero[64];
    while (n > 0 && !b->oom) {
        size_t k = n < sizeof zero ? n : sizeof zero;
        buf_put(b, zero, k);
        n -= k;
    }
}

typedef struct gg_wkv {
    char *key; /* owned, NUL-terminated copy */
    size_t klen;
    uint8_t *val; /* owned: u32 value type followed by the value */
    size_t vlen;
} gg_wkv;

typedef struct gg_wt {
    char *name; /* owned */
    size_t nlen;
    uint32_t n_dims;
    int64_t ne[Q_GGUF_MAX_DIMS];
    uint32_t type;
    uint64_t nbytes;
    uint64_t rel; /* set by write_header */
} gg_wt;

enum { GG_W_DECLARE, GG_W_DATA, GG_W_FAILED };

struct q_gguf_w {
    uint32_t alignment;
    gg_wkv *kv;
    uint64_t n_kv, cap_kv;
    gg_wt *t;
    uint64_t n_t, cap_t;
    gg_set names; /* tensor names, borrowed from t[].name */
    int state;
    uint64_t cur;      /* index of the tensor being written */
    uint64_t cur_done; /* bytes of it written */
    uint64_t pos;      /* bytes written to the file so far */
};

q_gguf_w *q_gguf_w_new(uint32_t alignment)
{
    q_gguf_w *w = calloc(1, sizeof *w);
    if (w) {
        w->alignment = alignment ? alignment : Q_GGUF_DEFAULT_ALIGNMENT;
    }
    return w;
}

void q_gguf_w_free(q_gguf_w *w)
{
    if (!w) {
        return;
    }
    for (uint64_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (uint64_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
    }
    free(w->kv);
    free(w->t);
    gg_set_free(&w->names);
    free(w);
}

static int64_t w_find(const q_gguf_w *w, const char *key, size_t klen)
{
    for (uint64_t i = 0; i < w->n_kv; i++) {
        if (w->kv[i].klen == klen && memcmp(w->kv[i].key, key, klen) == 0) {
            return (int64_t)i;
        }
    }
    return -1;
}

/* Sets key[0..klen) to the serialized value in b (type + value); takes b's bytes. */
static q_status w_set(q_gguf_w *w, const char *key, size_t klen, gg_buf *b)
{
    q_status st = Q_ENOMEM;
    char *kcopy = NULL;
    if (b->oom) {
        goto fail;
    }
    int64_t i = w_find(w, key, klen);
    if (i >= 0) {
        free(w->kv[i].val);
        w->kv[i].val = b->p;
        w->kv[i].vlen = b->len;
        return Q_OK;
    }
    kcopy = malloc(klen + 1);
    if (!kcopy || !gg_grow((void **)&w->kv, &w->cap_kv, w->n_kv + 1, sizeof *w->kv)) {
        goto fail;
    }
    memcpy(kcopy, key, klen);
    kcopy[klen] = '\0';
    w->kv[w->n_kv++] = (gg_wkv){kcopy, klen, b->p, b->len};
    return Q_OK;
fail:
    free(kcopy);
    free(b->p);
    return st;
}

static bool w_key_ok(const q_gguf_w *w, const char *key)
{
    return w && key && key[0] && w->state == GG_W_DECLARE;
}

static q_status w_set_scalar(q_gguf_w *w, const char *key, q_gguf_vtype t, uint64_t raw)
{
    if (!w_key_ok(w, key)) {
        return Q_EUSAGE;
    }
    gg_buf b = {0};
    buf_le(&b, t, 4);
    buf_le(&b, raw, (int)q_gguf_vtype_size(t));
    return w_set(w, key, strlen(key), &b);
}

q_status q_gguf_w_set_u32(q_gguf_w *w, const char *key, uint32_t v)
{
    return w_set_scalar(w, key, Q_GGUF_U32, v);
}

q_status q_gguf_w_set_i32(q_gguf_w *w, const char *key, int32_t v)
{
    return w_set_scalar(w, key, Q_GGUF_I32, (uint32_t)v);
}

q_status q_gguf_w_set_u64(q_gguf_w *w, const char *key, uint64_t v)
{
    return w_set_scalar(w, key, Q_GGUF_U64, v);
}

q_status q_gguf_w_set_f32(q_gguf_w *w, const char *key, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return w_set_scalar(w, key, Q_GGUF_F32, bits);
}

q_status q_gguf_w_set_bool(q_gguf_w *w, const char *key, bool v)
{
    return w_set_scalar(w, key, Q_GGUF_BOOL, v ? 1 : 0);
}

q_status q_gguf_w_set_str(q_gguf_w *w, const char *key, const char *v)
{
    if (!w_key_ok(w, key) || !v) {
        return Q_EUSAGE;
    }
    gg_buf b = {0};
    buf_le(&b, Q_GGUF_STRING, 4);
    buf_str(&b, v, strlen(v));
    return w_set(w, key, strlen(key), &b);
}

q_status q_gguf_w_set_arr_str(q_gguf_w *w, const char *key, const char *const *v, size_t n)
{
    if (!w_key_ok(w, key) || (n && !v)) {
        return Q_EUSAGE;
    }
    for (size_t i = 0; i < n; i++) {
        if (!v[i]) {
            return Q_EUSAGE;
        }
    }
    gg_buf b = {0};
    buf_le(&b, Q_GGUF_ARRAY, 4);
    buf_le(&b, Q_GGUF_STRING, 4);
    buf_le(&b, n, 8);
    for (size_t i = 0; i < n; i++) {
        buf_str(&b, v[i], strlen(v[i]));
    }
    return w_set(w, key, strlen(key), &b);
}

/* Scalar array of n elements of type t, read from host memory as little-endian
 * integers of the element size. */
static q_status w_set_arr(q_gguf_w *w, const char *key, q_gguf_vtype t, const void *v,
                          size_t n)
{
    if (!w_key_ok(w, key) || (n && !v)) {
        return Q_EUSAGE;
    }
    size_t esz = q_gguf_vtype_size(t);
    gg_buf b = {0};
    buf_le(&b, Q_GGUF_ARRAY, 4);
    buf_le(&b, t, 4);
    buf_le(&b, n, 8);
    const uint8_t *src = v;
    for (size_t i = 0; i < n && !b.oom; i++) {
        uint32_t x; /* 4-byte elements only (f32, i32) */
        memcpy(&x, src + i * esz, sizeof x);
        buf_le(&b, x, 4);
    }
    return w_set(w, key, strlen(key), &b);
}

q_status q_gguf_w_set_arr_f32(q_gguf_w *w, const char *key, const float *v, size_t n)
{
    return w_set_arr(w, key, Q_GGUF_F32, v, n);
}

q_status q_gguf_w_set_arr_i32(q_gguf_w *w, const char *key, const int32_t *v, size_t n)
{
    return w_set_arr(w, key, Q_GGUF_I32, v, n);
}

/* Appends a scalar value of type t from a parsed kv's widened union. */
static void buf_scalar(gg_buf *b, const q_gguf_kv *kv, q_gguf_vtype t)
{
    int n = (int)q_gguf_vtype_size(t);
    switch (t) {
    case Q_GGUF_I8:
    case Q_GGUF_I16:
    case Q_GGUF_I32:
    case Q_GGUF_I64:
        buf_le(b, (uint64_t)kv->v.i64, n);
        break;
    case Q_GGUF_BOOL:
        buf_le(b, kv->v.b ? 1 : 0, 1);
        break;
    case Q_GGUF_F32: {
        float f = (float)kv->v.f64;
        uint32_t bits;
        memcpy(&bits, &f, sizeof bits);
        buf_le(b, bits, 4);
        break;
    }
    case Q_GGUF_F64: {
        uint64_t bits;
        memcpy(&bits, &kv->v.f64, sizeof bits);
        buf_le(b, bits, 8);
        break;
    }
    default:
        buf_le(b, kv->v.u64, n);
        break;
    }
}

q_status q_gguf_w_copy_kv(q_gguf_w *w, const q_gguf_kv *kv)
{
    if (!w || !kv || !kv->key.ptr || kv->key.len == 0 || kv->key.len > SIZE_MAX - 1 ||
        w->state != GG_W_DECLARE || (uint32_t)kv->type >= Q_GGUF_VTYPE_COUNT) {
        return Q_EUSAGE;
    }
    gg_buf b = {0};
    buf_le(&b, kv->type, 4);
    if (q_gguf_vtype_size(kv->type)) {
        buf_scalar(&b, kv, kv->type);
    } else if (kv->type == Q_GGUF_STRING) {
        if (!kv->v.str.ptr && kv->v.str.len) {
            free(b.p);
            return Q_EUSAGE;
        }
        buf_str(&b, kv->v.str.ptr, kv->v.str.len);
    } else {
        size_t esz = q_gguf_vtype_size(kv->arr_type);
        if ((!esz && kv->arr_type != Q_GGUF_STRING) || (kv->arr_n && !kv->arr_data)) {
            free(b.p);
            return Q_EUSAGE;
        }
        buf_le(&b, kv->arr_type, 4);
        buf_le(&b, kv->arr_n, 8);
        uint64_t bytes;
        if (esz) {
            if (kv->arr_n > SIZE_MAX / esz) {
                free(b.p);
                return Q_ENOMEM;
            }
            bytes = kv->arr_n * esz;
        } else {
            /* Strings were bounds-checked by the parser; find the array's end. */
            const uint8_t *p = kv->arr_data;
            for (uint64_t i = 0; i < kv->arr_n; i++) {
                p += 8 + gg_le(p, 8);
            }
            bytes = (uint64_t)(p - kv->arr_data);
        }
        buf_put(&b, kv->arr_data, (size_t)bytes);
    }
    return w_set(w, kv->key.ptr, (size_t)kv->key.len, &b);
}

void q_gguf_w_del(q_gguf_w *w, const char *key)
{
    if (!w || !key || w->state != GG_W_DECLARE) {
        return;
    }
    int64_t i = w_find(w, key, strlen(key));
    if (i < 0) {
        return;
    }
    free(w->kv[i].key);
    free(w->kv[i].val);
    memmove(&w->kv[i], &w->kv[i + 1], (size_t)(w->n_kv - (uint64_t)i - 1) * sizeof *w->kv);
    w->n_kv--;
}

q_status q_gguf_w_add_tensor(q_gguf_w *w, const char *name, uint32_t n_dims,
                             const int64_t *ne, uint32_t type)
{
    if (!w || !name || !name[0] || !ne || w->state != GG_W_DECLARE || n_dims < 1 ||
        n_dims > Q_GGUF_MAX_DIMS) {
        return Q_EUSAGE;
    }
    const q_dtype_traits *tr = gg_traits(type);
    if (!tr) {
        return Q_EUSAGE;
    }
    gg_wt t = {0};
    for (int d = 0; d < Q_GGUF_MAX_DIMS; d++) {
        t.ne[d] = 1;
    }
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1) {
            return Q_EUSAGE;
        }
        t.ne[d] = ne[d];
    }
    int64_t nelem;
    if (ne[0] % tr->blck != 0 || !gg_nelem(t.ne, n_dims, &nelem) ||
        !gg_nbytes(tr, nelem, &t.nbytes)) {
        return Q_EUSAGE;
    }
    t.nlen = strlen(name);
    t.n_dims = n_dims;
    t.type = type;
    t.name = malloc(t.nlen + 1);
    if (!t.name || !gg_grow((void **)&w->t, &w->cap_t, w->n_t + 1, sizeof *w->t)) {
        free(t.name);
        return Q_ENOMEM;
    }
    memcpy(t.name, name, t.nlen + 1);
    int added = gg_set_add(&w->names, t.name, t.nlen);
    if (added <= 0) {
        free(t.name);
        return added < 0 ? Q_ENOMEM : Q_EUSAGE;
    }
    w->t[w->n_t++] = t;
    return Q_OK;
}

static q_status w_write(q_gguf_w *w, FILE *fp, const void *p, size_t n, const char *what,
                        q_err *err)
{
    if (n && fwrite(p, 1, n, fp) != n) {
        int e = errno;
        w->state = GG_W_FAILED;
        return q_fail(err, Q_EIO, "GGUF writer: writing %s (%zu bytes at offset %" PRIu64
                                  ") failed: %s",
                      what, n, w->pos, e ? strerror(e) : "short write");
    }
    w->pos += n;
    return Q_OK;
}

q_status q_gguf_w_write_header(q_gguf_w *w, FILE *fp, q_err *err)
{
    if (!w || !fp) {
        return q_fail(err, Q_EUSAGE, "GGUF writer: no writer or no file");
    }
    if (w->state != GG_W_DECLARE) {
        return q_fail(err, Q_EUSAGE, "GGUF writer: header already written");
    }
    if (!gg_is_pow2(w->alignment)) {
        return q_fail(err, Q_EUSAGE, "GGUF writer: alignment %u is not a power of two",
                      w->alignment);
    }
    /* general.alignment is the writer's: any value set by the caller is replaced
     * (kept at its position), and it is written only when not the default. */
    const size_t alen = sizeof GG_ALIGN_KEY - 1;
    bool want_align = w->alignment != Q_GGUF_DEFAULT_ALIGNMENT;
    int64_t user_align = w_find(w, GG_ALIGN_KEY, alen);
    uint64_t n_kv = w->n_kv - (user_align >= 0) + want_align;

    uint64_t rel = 0;
    for (uint64_t i = 0; i < w->n_t; i++) {
        w->t[i].rel = rel;
        if (!gg_align_up(rel + w->t[i].nbytes, w->alignment, &rel) ||
            rel < w->t[i].nbytes) {
            return q_fail(err, Q_EUSAGE, "GGUF writer: data section size overflows");
        }
    }

    gg_buf b = {0};
    buf_le(&b, Q_GGUF_MAGIC, 4);
    buf_le(&b, 3, 4);
    buf_le(&b, w->n_t, 8);
    buf_le(&b, n_kv, 8);
    for (uint64_t i = 0; i < w->n_kv; i++) {
        if ((int64_t)i == user_align) {
            if (want_align) {
                buf_str(&b, GG_ALIGN_KEY, alen);
                buf_le(&b, Q_GGUF_U32, 4);
                buf_le(&b, w->alignment, 4);
            }
            continue;
        }
        buf_str(&b, w->kv[i].key, w->kv[i].klen);
        buf_put(&b, w->kv[i].val, w->kv[i].vlen);
    }
    if (want_align && user_align < 0) {
        buf_str(&b, GG_ALIGN_KEY, alen);
        buf_le(&b, Q_GGUF_U32, 4);
        buf_le(&b, w->alignment, 4);
    }
    for (uint64_t i = 0; i < w->n_t; i++) {
        const gg_wt *t = &w->t[i];
        buf_str(&b, t->name, t->nlen);
        buf_le(&b, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++) {
            buf_le(&b, (uint64_t)t->ne[d], 8);
        }
        buf_le(&b, t->type, 4);
        buf_le(&b, t->rel, 8);
    }
    uint64_t end;
    if (gg_align_up(b.len, w->alignment, &end)) {
        buf_zeros(&b, (size_t)(end - b.len));
    }
    if (b.oom) {
        free(b.p);
        return q_fail(err, Q_ENOMEM, "GGUF writer: out of memory building the header");
    }
    w->pos = 0;
    q_status st = w_write(w, fp, b.p, b.len, "the header", err);
    free(b.p);
    if (st != Q_OK) {
        return st;
    }
    w->state = GG_W_DATA;
    w->cur = 0;
    w->cur_done = 0;
    return Q_OK;
}

q_status q_gguf_w_write_data(q_gguf_w *w, FILE *fp, const void *data, size_t n, q_err *err)
{
    static const uint8_t zero[256];
    if (!w || !fp) {
        return q_fail(err, Q_EUSAGE, "GGUF writer: no writer or no file");
    }
    if (w->state == GG_W_FAILED) {
        return q_fail(err, Q_EIO, "GGUF writer: an earlier write failed");
    }
    if (w->state != GG_W_DATA) {
        return q_fail(err, Q_EUSAGE, "GGUF writer: tensor data before the header");
    }
    if (n == 0) {
        return Q_OK;
    }
    if (!data) {
        return q_fail(err, Q_EUSAGE, "GGUF writer: no data");
    }
    if (w->cur >= w->n_t) {
        return q_fail(err, Q_EUSAGE, "GGUF writer: all %" PRIu64 " tensors are already written",
                      w->n_t);
    }
    const gg_wt *t = &w->t[w->cur];
    if (n > t->nbytes - w->cur_done) {
        return q_fail(err, Q_EUSAGE, "GGUF writer: %zu bytes for tensor '%s' exceed the %"
                                     PRIu64 " bytes it has left",
                      n, t->name, t->nbytes - w->cur_done);
    }
    q_status st = w_write(w, fp, data, n, t->name, err);
    if (st != Q_OK) {
        return st;
    }
    w->cur_done += n;
    if (w->cur_done == t->nbytes) {
        uint64_t pad = (w->alignment - t->nbytes % w->alignment) % w->alignment;
        while (pad > 0) {
            size_t k = pad < sizeof zero ? (size_t)pad : sizeof zero;
            st = w_write(w, fp, zero, k, "padding", err);
            if (st != Q_OK) {
                return st;
            }
            pad -= k;
        }
        w->cur++;
        w->cur_done = 0;
    }
    return Q_OK;
}

q_status q_gguf_w_finish(q_gguf_w *w, q_err *err)
{
    if (!w) {
        return q_fail(err, Q_EUSAGE, "GGUF writer: no writer");
    }
    if (w->state == GG_W_FAILED) {
        return q_fail(err, Q_EIO, "GGUF writer: an earlier write failed");
    }
    if (w->state != GG_W_DATA) {
        return q_fail(err, Q_EUSAGE, "GGUF writer: header not written");
    }
    if (w->cur < w->n_t) {
        const gg_wt *t = &w->t[w->cur];
        return q_fail(err, Q_EUSAGE, "GGUF writer: tensor '%s' (%" PRIu64 " of %" PRIu64
                                     ") has %" PRIu64 " of %" PRIu64 " bytes written",
                      t->name, w->cur + 1, w->n_t, w->cur_done, t->nbytes);
    }
    return Q_OK;
}
