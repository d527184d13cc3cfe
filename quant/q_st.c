/* q_st.c — safetensors reader and Hugging Face config.json / index parsers.
 *
 * JSON is parsed by jansson (duplicate keys rejected). jansson keeps no source
 * positions in the tree it returns, so for errors found after parsing (a bad
 * dtype, a wrong field type) the position is recovered by re-scanning the text,
 * which jansson has already accepted as valid JSON: member k of an object in
 * iteration order is member k in the text, because jansson 2.8+ keeps
 * insertion order and duplicates are rejected.
 */
#include "q_st.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "q_dtype.h"

#define ST_NAME_SHOW 80 /* bytes of a name shown in a message */
#define JS_NOPOS SIZE_MAX

/* ---------------------------------------------------------------- messages */

/* Copies at most max bytes of src into dst (cap bytes) for a one-line message:
 * control bytes become '?', a cut never splits a UTF-8 sequence, "..." marks a
 * cut. */
static void st_show(char *dst, size_t cap, const char *src, size_t max)
{
    size_t n = strlen(src), o = 0;
    bool cut = false;
    if (cap < 8) {
        if (cap) {
            dst[0] = '\0';
        }
        return;
    }
    if (max > cap - 4) {
        max = cap - 4;
    }
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80) {
            n--; /* src[n] is a continuation byte: do not split the sequence */
        }
        cut = true;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[o++] = (c < 0x20 || c == 0x7F) ? '?' : (char)c;
    }
    if (cut) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

/* A JSON text being checked, for locating errors. */
typedef struct js_doc {
    const char *fname;
    const char *text;
    size_t len;
    bool st_header; /* positions print as "header byte 8+P" (safetensors) */
} js_doc;

/* Writes "FILE: <where>" for byte pos of the text into buf. Line and column are
 * 1-based; the column counts UTF-8 characters, as jansson's do. */
static void js_where(const js_doc *d, size_t pos, char *buf, size_t cap)
{
    if (pos == JS_NOPOS || pos > d->len) {
        snprintf(buf, cap, "%s: %s", d->fname, d->st_header ? "header" : "JSON");
        return;
    }
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos; i++) {
        unsigned char c = (unsigned char)d->text[i];
        if (c == '\n') {
            line++;
            col = 1;
        } else if ((c & 0xC0) != 0x80) {
            col++;
        }
    }
    if (d->st_header) {
        snprintf(buf, cap, "%s: header byte 8+%zu (line %zu, column %zu)", d->fname, pos, line,
                 col);
    } else {
        snprintf(buf, cap, "%s: byte %zu (line %zu, column %zu)", d->fname, pos, line, col);
    }
}

/* Q_EDATA with "FILE: <where pos>: <message>". */
__attribute__((format(printf, 4, 5))) static q_status js_fail(const js_doc *d, size_t pos,
                                                              q_err *err, const char *fmt, ...)
{
    char where[512], what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    js_where(d, pos, where, sizeof where);
    return q_fail(err, Q_EDATA, "%s: %s", where, what);
}

/* Q_EDATA for a jansson parse error, with jansson's own position. */
static q_status js_fail_parse(const js_doc *d, const json_error_t *je, q_err *err)
{
    char text[sizeof je->text + 4];
    st_show(text, sizeof text, je->text, sizeof je->text);
    if (d->st_header) {
        return q_fail(err, Q_EDATA, "%s: header byte 8+%d (line %d, column %d): %s", d->fname,
                      je->position, je->line, je->column, text);
    }
    return q_fail(err, Q_EDATA, "%s: byte %d (line %d, column %d): %s", d->fname, je->position,
                  je->line, je->column, text);
}

static const char *js_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* ------------------------------------------- positions in validated JSON */

static bool js_is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t js_ws(const js_doc *d, size_t p)
{
    while (p < d->len && js_is_ws(d->text[p])) {
        p++;
    }
    return p;
}

/* d->text[p] is '"': returns the position after the closing quote. */
static size_t js_skip_string(const js_doc *d, size_t p)
{
    p++;
    while (p < d->len && d->text[p] != '"') {
        p += d->text[p] == '\\' ? 2 : 1;
    }
    return p < d->len ? p + 1 : d->len;
}

/* Returns the position after the value that starts at p. */
static size_t js_skip_value(const js_doc *d, size_t p)
{
    size_t depth = 0;
    while (p < d->len) {
        char c = d->text[p];
        if (c == '"') {
            p = js_skip_string(d, p);
            if (depth == 0) {
                return p;
            }
        } else if (c == '{' || c == '[') {
            depth++;
            p++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) {
                return p;
            }
            p++;
            if (--depth == 0) {
                return p;
            }
        } else if (depth == 0 && (c == ',' || c == ':' || js_is_ws(c))) {
            return p; /* end of a number or literal */
        } else {
            p++;
        }
    }
    return d->len;
}

/* Cursor over the members of an object in validated JSON, in text order. */
typedef struct js_iter {
    size_t p;
    bool ok;
} js_iter;

/* Starts before the first member of the object whose '{' is at obj. */
static js_iter js_iter_start(const js_doc *d, size_t obj)
{
    js_iter it = {obj + 1, obj < d->len && d->text[obj] == '{'};
    return it;
}

/* Moves to the next member: positions of its key and value. False at the end
 * of the object or when the text does not look as expected. */
static bool js_iter_next(const js_doc *d, js_iter *it, size_t *key, size_t *val)
{
    if (!it->ok) {
        return false;
    }
    size_t p = js_ws(d, it->p);
    if (p < d->len && d->text[p] == ',') {
        p = js_ws(d, p + 1);
    }
    if (p >= d->len || d->text[p] != '"') {
        it->ok = false;
        return false;
    }
    *key = p;
    p = js_ws(d, js_skip_string(d, p));
    if (p >= d->len || d->text[p] != ':') {
        it->ok = false;
        return false;
    }
    *val = js_ws(d, p + 1);
    it->p = js_skip_value(d, *val);
    return true;
}

/* Like js_iter_next, with both positions JS_NOPOS when the cursor fails. */
static void js_iter_pos(const js_doc *d, js_iter *it, size_t *key, size_t *val)
{
    if (!js_iter_next(d, it, key, val)) {
        *key = *val = JS_NOPOS;
    }
}

/* For the object whose '{' is at obj: position of the key of member k (in text
 * order) and of its value. O(size of the object): for error paths only. */
static bool js_member(const js_doc *d, size_t obj, size_t k, size_t *key, size_t *val)
{
    js_iter it = js_iter_start(d, obj);
    for (size_t i = 0; js_iter_next(d, &it, key, val); i++) {
        if (i == k) {
            return true;
        }
    }
    return false;
}

/* Index of key in obj's iteration order, or JS_NOPOS. */
static size_t js_index_of(json_t *obj, const char *key)
{
    const char *k;
    json_t *v;
    size_t i = 0;
    json_object_foreach(obj, k, v) {
        if (strcmp(k, key) == 0) {
            return i;
        }
        i++;
    }
    return JS_NOPOS;
}

/* Position of member key of obj (whose '{' is at obj_pos): its key when
 * present, else obj_pos itself. val (if not NULL) gets the value position or
 * JS_NOPOS. */
static size_t js_field_pos(const js_doc *d, size_t obj_pos, json_t *obj, const char *key,
                           size_t *val)
{
    size_t k = js_index_of(obj, key), kp, vp;
    if (val) {
        *val = JS_NOPOS;
    }
    if (k == JS_NOPOS || obj_pos == JS_NOPOS || !js_member(d, obj_pos, k, &kp, &vp)) {
        return obj_pos;
    }
    if (val) {
        *val = vp;
    }
    return kp;
}

/* --------------------------------------------------------- safetensors */

static uint64_t st_rd_u64le(const uint8_t *p, uint64_t size)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | ((uint64_t)i < size ? p[i] : 0);
    }
    return v;
}

/* safetensors dtype spelling → q_dtype id, or -1. The spelling must be exact
 * (the format's names are upper case); q_dtype_from_name gives the id. */
static int st_dtype(const char *s)
{
    static const char *const names[] = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16",
                                        "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "U16",
                                        "U32", "U64"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i]) == 0) {
            int id = q_dtype_from_name(s);
            const q_dtype_traits *tr = id < 0 ? NULL : q_dtype_get((uint32_t)id);
            return tr && tr->blck == 1 && tr->size > 0 ? id : -1;
        }
    }
    return -1;
}

/* Q_EDATA for tensor `show`, located at the key `field` of its entry v (whose
 * value starts at vpos), or at the entry itself when field is NULL. The key is
 * looked up only here, on the error path. */
__attribute__((format(printf, 7, 8))) static q_status
st_tfail(const js_doc *d, size_t vpos, json_t *v, const char *field, const char *show,
         q_err *err, const char *fmt, ...)
{
    char what[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    size_t pos = field ? js_field_pos(d, vpos, v, field, NULL) : vpos;
    return js_fail(d, pos, err, "tensor \"%s\": %s", show, what);
}

/* Parses one tensor entry v (key at kpos, value at vpos; JS_NOPOS if unknown)
 * into t. data_size is the size of the data buffer. */
static q_status st_entry(const js_doc *d, size_t kpos, size_t vpos, const char *name, json_t *v,
                         uint64_t data_size, q_st_tensor *t, q_err *err)
{
    char show[ST_NAME_SHOW + 8];
    st_show(show, sizeof show, name, ST_NAME_SHOW);
    if (vpos == JS_NOPOS) {
        vpos = kpos;
    }
    if (!json_is_object(v)) {
        return st_tfail(d, vpos, v, NULL, show, err, "entry is %s, not an object",
                        js_type_name(v));
    }

    json_t *dt = json_object_get(v, "dtype");
    if (!dt) {
        return st_tfail(d, vpos, v, NULL, show, err, "missing \"dtype\"");
    }
    if (!json_is_string(dt)) {
        return st_tfail(d, vpos, v, "dtype", show, err, "\"dtype\" is %s, not a string",
                        js_type_name(dt));
    }
    int id = st_dtype(json_string_value(dt));
    if (id < 0) {
        char dshow[40];
        st_show(dshow, sizeof dshow, json_string_value(dt), 24);
        return st_tfail(d, vpos, v, "dtype", show, err, "unknown dtype \"%s\"", dshow);
    }
    t->dtype = (uint32_t)id;

    json_t *sh = json_object_get(v, "shape");
    if (!sh) {
        return st_tfail(d, vpos, v, NULL, show, err, "missing \"shape\"");
    }
    if (!json_is_array(sh)) {
        return st_tfail(d, vpos, v, "shape", show, err, "\"shape\" is %s, not an array",
                        js_type_name(sh));
    }
    size_t nd = json_array_size(sh);
    if (nd > Q_ST_MAX_DIMS) {
        return st_tfail(d, vpos, v, "shape", show, err, "shape has %zu dimensions, more than %d",
                        nd, Q_ST_MAX_DIMS);
    }
    t->n_dims = (uint32_t)nd;
    int64_t count = 1; /* elements */
    for (size_t i = 0; i < nd; i++) {
        json_t *e = json_array_get(sh, i);
        if (!json_is_integer(e)) {
            return st_tfail(d, vpos, v, "shape", show, err,
                            "shape dimension %zu is %s, not an integer", i, js_type_name(e));
        }
        int64_t x = (int64_t)json_integer_value(e);
        if (x < 0) {
            return st_tfail(d, vpos, v, "shape", show, err,
                            "shape dimension %zu is negative (%" PRId64 ")", i, x);
        }
        t->shape[i] = x;
        if (__builtin_mul_overflow(count, x, &count)) {
            return st_tfail(d, vpos, v, "shape", show, err,
                            "element count of the shape overflows 64 bits (dimension %zu is %"
                            PRId64 ")", i, x);
        }
    }
    const q_dtype_traits *tr = q_dtype_get(t->dtype);
    uint64_t bytes;
    if (__builtin_mul_overflow((uint64_t)count, (uint64_t)tr->size, &bytes)) {
        return st_tfail(d, vpos, v, "shape", show, err,
                        "%" PRId64 " elements of %s overflow 64 bits of bytes", count, tr->name);
    }

    json_t *off = json_object_get(v, "data_offsets");
    if (!off) {
        return st_tfail(d, vpos, v, NULL, show, err, "missing \"data_offsets\"");
    }
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1))) {
        return st_tfail(d, vpos, v, "data_offsets", show, err,
                        "\"data_offsets\" must be [begin, end] of two integers");
    }
    int64_t b = (int64_t)json_integer_value(json_array_get(off, 0));
    int64_t e = (int64_t)json_integer_value(json_array_get(off, 1));
    if (b < 0 || e < 0) {
        return st_tfail(d, vpos, v, "data_offsets", show, err,
                        "negative data_offsets [%" PRId64 ", %" PRId64 "]", b, e);
    }
    if (b > e) {
        return st_tfail(d, vpos, v, "data_offsets", show, err,
                        "data_offsets begin %" PRId64 " > end %" PRId64, b, e);
    }
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    if (bytes != t->end - t->begin) {
        return st_tfail(d, vpos, v, "data_offsets", show, err,
                        "size mismatch: shape holds %" PRId64 " %s elements = %" PRIu64
                        " bytes but data_offsets [%" PRIu64 ", %" PRIu64 "] span %" PRIu64
                        " bytes", count, tr->name, bytes, t->begin, t->end, t->end - t->begin);
    }
    if (t->end > data_size) {
        return st_tfail(d, vpos, v, "data_offsets", show, err,
                        "data_offsets [%" PRIu64 ", %" PRIu64 "] run past the end of the data "
                        "buffer (%" PRIu64 " bytes; file truncated?)", t->begin, t->end,
                        data_size);
    }
    t->name = strdup(name);
    if (!t->name) {
        return q_fail(err, Q_ENOMEM, "%s: out of memory", d->fname);
    }
    return Q_OK;
}

/* "__metadata__" must map strings to strings. */
static q_status st_metadata(const js_doc *d, size_t kpos, size_t vpos, json_t *v, q_err *err)
{
    if (!json_is_object(v)) {
        return js_fail(d, vpos == JS_NOPOS ? kpos : vpos, err,
                       "\"__metadata__\" is %s, not an object of strings", js_type_name(v));
    }
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (!json_is_string(x)) {
            char show[ST_NAME_SHOW + 8];
            st_show(show, sizeof show, k, ST_NAME_SHOW);
            return js_fail(d, js_field_pos(d, vpos, v, k, NULL), err,
                           "\"__metadata__\" value of \"%s\" is %s, not a string", show,
                           js_type_name(x));
        }
    }
    return Q_OK;
}

static int st_cmp(const void *pa, const void *pb)
{
    const q_st_tensor *a = pa, *b = pb;
    if (a->begin != b->begin) {
        return a->begin < b->begin ? -1 : 1;
    }
    if (a->end != b->end) {
        return a->end < b->end ? -1 : 1; /* empty tensors first */
    }
    return strcmp(a->name, b->name); /* names are unique: a total order */
}

void q_st_free(q_st *st)
{
    if (!st) {
        return;
    }
    for (uint64_t i = 0; i < st->n_tensors; i++) {
        free(st->tensors[i].name);
    }
    free(st->tensors);
    free(st);
}

q_status q_st_parse(const uint8_t *buf, uint64_t size, const char *fname, q_st **out,
                    q_err *err)
{
    q_status rc = Q_OK;
    json_t *root = NULL;
    q_st *st = NULL;
    if (!fname) {
        fname = "<safetensors>";
    }
    if (!out || (!buf && size)) {
        return q_fail(err, Q_EUSAGE, "%s: q_st_parse: NULL argument", fname);
    }
    *out = NULL;
    if (size < 8) {
        return q_fail(err, Q_EDATA, "%s: offset 0: file is %" PRIu64 " bytes, too short for "
                      "the 8-byte header length", fname, size);
    }
    uint64_t hlen = st_rd_u64le(buf, size);
    if (hlen > Q_ST_MAX_HEADER) {
        return q_fail(err, Q_EDATA, "%s: offset 0: header length %" PRIu64 " exceeds the "
                      "limit of %u bytes", fname, hlen, Q_ST_MAX_HEADER);
    }
    if (hlen > size - 8) {
        return q_fail(err, Q_EDATA, "%s: offset 0: header length %" PRIu64 " runs past the end "
                      "of the file (%" PRIu64 " bytes follow the length field)", fname, hlen,
                      size - 8);
    }
    const uint64_t data_size = size - 8 - hlen;
    js_doc d = {fname, (const char *)buf + 8, (size_t)hlen, true};

    json_error_t je;
    root = json_loadb(d.text, d.len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        return js_fail_parse(&d, &je, err);
    }
    size_t root_pos = js_ws(&d, 0);
    if (!json_is_object(root)) {
        rc = js_fail(&d, root_pos, err, "header is %s, not a JSON object", js_type_name(root));
        goto fail;
    }

    st = calloc(1, sizeof *st);
    if (!st) {
        goto nomem;
    }
    st->header_len = hlen;
    st->data_offset = 8 + hlen;
    size_t cap = json_object_size(root);
    if (cap) {
        st->tensors = calloc(cap, sizeof *st->tensors);
        if (!st->tensors) {
            goto nomem;
        }
    }

    const char *key;
    json_t *v;
    js_iter it = js_iter_start(&d, root_pos);
    json_object_foreach(root, key, v) {
        size_t kp, vp;
        js_iter_pos(&d, &it, &kp, &vp);
        if (strcmp(key, "__metadata__") == 0) {
            rc = st_metadata(&d, kp, vp, v, err);
        } else {
            rc = st_entry(&d, kp, vp, key, v, data_size, &st->tensors[st->n_tensors], err);
            if (st->tensors[st->n_tensors].name) {
                st->n_tensors++;
            }
        }
        if (rc != Q_OK) {
            goto fail;
        }
    }

    /* Sorted by begin, the tensors must tile [0, data_size) exactly. */
    if (st->n_tensors > 1) {
        qsort(st->tensors, st->n_tensors, sizeof *st->tensors, st_cmp);
    }
    uint64_t at = 0;
    for (uint64_t i = 0; i < st->n_tensors; i++) {
        q_st_tensor *t = &st->tensors[i];
        char show[ST_NAME_SHOW + 8], prev[ST_NAME_SHOW + 8];
        if (t->begin != at) {
            st_show(show, sizeof show, t->name, ST_NAME_SHOW);
            if (i == 0) {
                rc = q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": gap: data bytes [0, %" PRIu64
                            ") before the first tensor \"%s\" belong to no tensor", fname,
                            st->data_offset, t->begin, show);
            } else if (t->begin > at) {
                st_show(prev, sizeof prev, st->tensors[i - 1].name, ST_NAME_SHOW);
                rc = q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": gap: data bytes [%" PRIu64
                            ", %" PRIu64 ") between tensors \"%s\" and \"%s\" belong to no "
                            "tensor", fname, st->data_offset + at, at, t->begin, prev, show);
            } else {
                st_show(prev, sizeof prev, st->tensors[i - 1].name, ST_NAME_SHOW);
                rc = q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": tensor \"%s\" data [%" PRIu64
                            ", %" PRIu64 ") overlaps tensor \"%s\" data [%" PRIu64 ", %" PRIu64
                            ")", fname, st->data_offset + t->begin, show, t->begin, t->end,
                            prev, st->tensors[i - 1].begin, st->tensors[i - 1].end);
            }
            goto fail;
        }
        at = t->end;
        t->abs_offset = st->data_offset + t->begin;
        t->data = buf + t->abs_offset;
    }
    if (at != data_size) {
        rc = q_fail(err, Q_EDATA, "%s: offset %" PRIu64 ": %" PRIu64 " trailing bytes after the "
                    "last tensor (the data buffer must end at the end of the file)", fname,
                    st->data_offset + at, data_size - at);
        goto fail;
    }
    json_decref(root);
    *out = st;
    return Q_OK;

nomem:
    rc = q_fail(err, Q_ENOMEM, "%s: out of memory reading the header", fname);
fail:
    json_decref(root);
    q_st_free(st);
    return rc;
}

/* ------------------------------------------------------------ config.json */

/* Reads an optional non-negative integer field; JSON null counts as absent. */
static q_status cfg_int(const js_doc *d, size_t root_pos, json_t *root, const char *key,
                        int64_t *dst, bool *found, q_err *err)
{
    json_t *v = json_object_get(root, key);
    if (found) {
        *found = false;
    }
    if (!v || json_is_null(v)) {
        return Q_OK;
    }
    if (!json_is_integer(v)) {
        return js_fail(d, js_field_pos(d, root_pos, root, key, NULL), err,
                       "\"%s\" must be a non-negative integer, not %s", key, js_type_name(v));
    }
    if (json_integer_value(v) < 0) {
        return js_fail(d, js_field_pos(d, root_pos, root, key, NULL), err,
                       "\"%s\" must be a non-negative integer, not %" PRId64, key,
                       (int64_t)json_integer_value(v));
    }
    *dst = (int64_t)json_integer_value(v);
    if (found) {
        *found = true;
    }
    return Q_OK;
}

/* Reads an optional non-negative number field (integer or real). */
static q_status cfg_num(const js_doc *d, size_t root_pos, json_t *root, const char *key,
                        double *dst, bool *found, q_err *err)
{
    json_t *v = json_object_get(root, key);
    if (found) {
        *found = false;
    }
    if (!v || json_is_null(v)) {
        return Q_OK;
    }
    if (!json_is_number(v)) {
        return js_fail(d, js_field_pos(d, root_pos, root, key, NULL), err,
                       "\"%s\" must be a non-negative number, not %s", key, js_type_name(v));
    }
    if (!(json_number_value(v) >= 0)) {
        return js_fail(d, js_field_pos(d, root_pos, root, key, NULL), err,
                       "\"%s\" must be a non-negative number, not %g", key,
                       json_number_value(v));
    }
    *dst = json_number_value(v);
    if (found) {
        *found = true;
    }
    return Q_OK;
}

/* Copies an architecture name into dst (32 bytes), lower case; false when it
 * is empty, too long or not printable ASCII. */
static bool cfg_name(char *dst, const char *s, size_t n)
{
    if (n == 0 || n >= sizeof ((q_arch *)0)->name) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7F) {
            return false;
        }
        dst[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    dst[n] = '\0';
    return true;
}

static bool cfg_ends_with(const char *s, size_t n, const char *suffix, size_t *stem)
{
    size_t m = strlen(suffix);
    if (n > m && memcmp(s + n - m, suffix, m) == 0) {
        *stem = n - m;
        return true;
    }
    return false;
}

q_status q_hf_parse_config(const char *text, size_t len, const char *fname, q_arch *arch,
                           q_err *err)
{
    q_status rc = Q_OK;
    json_t *root = NULL;
    if (!fname) {
        fname = "config.json";
    }
    if (!arch || (!text && len)) {
        return q_fail(err, Q_EUSAGE, "%s: q_hf_parse_config: NULL argument", fname);
    }
    memset(arch, 0, sizeof *arch);
    js_doc d = {fname, text ? text : "", len, false};
    json_error_t je;
    root = json_loadb(d.text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        return js_fail_parse(&d, &je, err);
    }
    size_t rp = js_ws(&d, 0);
    if (!json_is_object(root)) {
        rc = js_fail(&d, rp, err, "config is %s, not a JSON object", js_type_name(root));
        goto fail;
    }

    q_arch a;
    memset(&a, 0, sizeof a);
    bool has_kv, has_head_dim, has_theta, has_eps;
    int64_t head_dim = 0;
    double partial = 1.0;
    bool has_partial;
    a.rope_theta = 10000.0;
    if ((rc = cfg_int(&d, rp, root, "hidden_size", &a.n_embd, NULL, err)) ||
        (rc = cfg_int(&d, rp, root, "num_hidden_layers", &a.n_layer, NULL, err)) ||
        (rc = cfg_int(&d, rp, root, "num_attention_heads", &a.n_head, NULL, err)) ||
        (rc = cfg_int(&d, rp, root, "num_key_value_heads", &a.n_head_kv, &has_kv, err)) ||
        (rc = cfg_int(&d, rp, root, "intermediate_size", &a.n_ff, NULL, err)) ||
        (rc = cfg_int(&d, rp, root, "vocab_size", &a.n_vocab, NULL, err)) ||
        (rc = cfg_int(&d, rp, root, "max_position_embeddings", &a.n_ctx, NULL, err)) ||
        (rc = cfg_int(&d, rp, root, "head_dim", &head_dim, &has_head_dim, err)) ||
        (rc = cfg_num(&d, rp, root, "rope_theta", &a.rope_theta, &has_theta, err)) ||
        (rc = cfg_num(&d, rp, root, "partial_rotary_factor", &partial, &has_partial, err)) ||
        (rc = cfg_num(&d, rp, root, "rms_norm_eps", &a.norm_eps, &has_eps, err))) {
        goto fail;
    }
    if (!has_eps && ((rc = cfg_num(&d, rp, root, "layer_norm_eps", &a.norm_eps, &has_eps, err)) ||
                     (!has_eps && (rc = cfg_num(&d, rp, root, "layer_norm_epsilon", &a.norm_eps,
                                                &has_eps, err))))) {
        goto fail;
    }
    if (!has_kv) {
        a.n_head_kv = a.n_head;
    }
    if (has_partial && partial > 1.0) {
        rc = js_fail(&d, js_field_pos(&d, rp, root, "partial_rotary_factor", NULL), err,
                     "\"partial_rotary_factor\" must be between 0 and 1");
        goto fail;
    }
    if (has_head_dim) {
        a.n_rot = head_dim;
    } else if (a.n_head > 0) {
        a.n_rot = a.n_embd / a.n_head;
    }
    if (has_partial) {
        a.n_rot = (int64_t)((double)a.n_rot * partial);
    }

    json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_null(tie)) {
        if (!json_is_boolean(tie)) {
            rc = js_fail(&d, js_field_pos(&d, rp, root, "tie_word_embeddings", NULL), err,
                         "\"tie_word_embeddings\" must be true or false, not %s",
                         js_type_name(tie));
            goto fail;
        }
        a.tied_embeddings = json_is_true(tie);
    }

    /* Name: model_type, else architectures[0] without its class suffix. */
    json_t *mt = json_object_get(root, "model_type");
    json_t *ar = json_object_get(root, "architectures");
    if (mt && !json_is_null(mt)) {
        if (!json_is_string(mt) ||
            !cfg_name(a.name, json_string_value(mt), json_string_length(mt))) {
            rc = js_fail(&d, js_field_pos(&d, rp, root, "model_type", NULL), err,
                         "\"model_type\" must be a short printable name (under 32 bytes)");
            goto fail;
        }
    }
    if (ar && !json_is_null(ar)) {
        json_t *a0 = json_array_get(ar, 0);
        if (!json_is_array(ar) || (json_array_size(ar) > 0 && !json_is_string(a0))) {
            rc = js_fail(&d, js_field_pos(&d, rp, root, "architectures", NULL), err,
                         "\"architectures\" must be an array of class names");
            goto fail;
        }
        if (a.name[0] == '\0' && a0) {
            static const char *const suffixes[] = {"ForCausalLM", "ForConditionalGeneration",
                                                   "LMHeadModel", "Model"};
            const char *s = json_string_value(a0);
            size_t n = json_string_length(a0), stem;
            for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
                if (cfg_ends_with(s, n, suffixes[i], &stem)) {
                    n = stem;
                    break;
                }
            }
            if (!cfg_name(a.name, s, n)) {
                rc = js_fail(&d, js_field_pos(&d, rp, root, "architectures", NULL), err,
                             "\"architectures\"[0] must be a short printable class name");
                goto fail;
            }
        }
    }
    *arch = a;
    json_decref(root);
    return Q_OK;

fail:
    json_decref(root);
    return rc;
}

/* ------------------------------------------------ model.safetensors.index */

void q_hf_index_free(q_hf_index *ix)
{
    if (!ix) {
        return;
    }
    for (uint64_t i = 0; i < ix->n_files; i++) {
        free(ix->files[i]);
    }
    for (uint64_t i = 0; i < ix->n_entries; i++) {
        free(ix->names[i]);
    }
    free(ix->files);
    free(ix->names);
    free(ix->file_of);
    free(ix);
}

/* A shard name must be a plain file name in the checkpoint's directory. */
static bool ix_plain_name(const char *s)
{
    return s[0] != '\0' && s[0] != '.' && !strchr(s, '/') && !strchr(s, '\\');
}

q_status q_hf_parse_index(const char *text, size_t len, const char *fname, q_hf_index **out,
                          q_err *err)
{
    q_status rc = Q_OK;
    json_t *root = NULL, *seen = NULL;
    q_hf_index *ix = NULL;
    if (!fname) {
        fname = "model.safetensors.index.json";
    }
    if (!out || (!text && len)) {
        return q_fail(err, Q_EUSAGE, "%s: q_hf_parse_index: NULL argument", fname);
    }
    *out = NULL;
    js_doc d = {fname, text ? text : "", len, false};
    json_error_t je;
    root = json_loadb(d.text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        return js_fail_parse(&d, &je, err);
    }
    size_t rp = js_ws(&d, 0);
    if (!json_is_object(root)) {
        rc = js_fail(&d, rp, err, "index is %s, not a JSON object", js_type_name(root));
        goto fail;
    }
    json_t *md = json_object_get(root, "metadata");
    if (md && !json_is_null(md) && !json_is_object(md)) {
        rc = js_fail(&d, js_field_pos(&d, rp, root, "metadata", NULL), err,
                     "\"metadata\" is %s, not an object", js_type_name(md));
        goto fail;
    }
    size_t wp;
    size_t wkey = js_field_pos(&d, rp, root, "weight_map", &wp);
    json_t *wm = json_object_get(root, "weight_map");
    if (!wm) {
        rc = js_fail(&d, rp, err, "missing \"weight_map\"");
        goto fail;
    }
    if (!json_is_object(wm)) {
        rc = js_fail(&d, wkey, err, "\"weight_map\" is %s, not an object", js_type_name(wm));
        goto fail;
    }

    size_t n = json_object_size(wm);
    ix = calloc(1, sizeof *ix);
    seen = json_object();
    if (!ix || !seen) {
        goto nomem;
    }
    if (n) {
        ix->names = calloc(n, sizeof *ix->names);
        ix->files = calloc(n, sizeof *ix->files);
        ix->file_of = calloc(n, sizeof *ix->file_of);
        if (!ix->names || !ix->files || !ix->file_of) {
            goto nomem;
        }
    }
    const char *key;
    json_t *v;
    js_iter it = js_iter_start(&d, wp);
    json_object_foreach(wm, key, v) {
        size_t kp, vp;
        js_iter_pos(&d, &it, &kp, &vp);
        if (kp == JS_NOPOS) {
            kp = wkey;
        }
        char show[ST_NAME_SHOW + 8], fshow[ST_NAME_SHOW + 8];
        if (!json_is_string(v)) {
            st_show(show, sizeof show, key, ST_NAME_SHOW);
            rc = js_fail(&d, kp, err, "weight_map[\"%s\"] is %s, not a file name", show,
                         js_type_name(v));
            goto fail;
        }
        const char *file = json_string_value(v);
        if (!ix_plain_name(file)) {
            st_show(show, sizeof show, key, ST_NAME_SHOW);
            st_show(fshow, sizeof fshow, file, ST_NAME_SHOW);
            rc = js_fail(&d, kp, err, "weight_map[\"%s\"]: file name \"%s\" must be a plain name "
                         "in the checkpoint directory (not empty, no '/', not starting with '.')",
                         show, fshow);
            goto fail;
        }
        json_t *fi = json_object_get(seen, file);
        uint64_t f;
        if (fi) {
            f = (uint64_t)json_integer_value(fi);
        } else {
            f = ix->n_files;
            if (f >= UINT32_MAX) {
                rc = js_fail(&d, kp, err, "too many shard files");
                goto fail;
            }
            ix->files[f] = strdup(file);
            if (!ix->files[f]) {
                goto nomem;
            }
            ix->n_files++;
            if (json_object_set_new(seen, file, json_integer((json_int_t)f)) != 0) {
                goto nomem;
            }
        }
        ix->names[ix->n_entries] = strdup(key);
        if (!ix->names[ix->n_entries]) {
            goto nomem;
        }
        ix->file_of[ix->n_entries] = (uint32_t)f;
        ix->n_entries++;
    }
    json_decref(seen);
    json_decref(root);
    *out = ix;
    return Q_OK;

nomem:
    rc = q_fail(err, Q_ENOMEM, "%s: out of memory", fname);
fail:
    json_decref(seen);
    json_decref(root);
    q_hf_index_free(ix);
    return rc;
}
