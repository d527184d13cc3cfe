/* q_plan.c — plan files (DESIGN.md §4): parsed and written with libcsv,
 * resolved against a model with llama.cpp's fallbacks, presets that reproduce
 * llama-quantize's per-tensor choices, and export as a llama-quantize
 * --tensor-type-file.
 *
 * Parsing feeds libcsv one byte at a time, so every cell is known by the line
 * and column where it starts and every libcsv error by the byte that caused it.
 * Lines that start with '#' while no record is open are comments; they never
 * reach libcsv (libcsv has no comments).
 */
#include "q_plan.h"

#include <csv.h>
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "q_dtype.h"
#include "q_io.h"

#define PLAN_NCOLS 5
#define PLAN_HEADER "pattern,format,method,group,options"
#define PLAN_MAX_BYTES ((size_t)16 << 20)
#define PLAN_KNOWN_FORMATS                                                                  \
    "f32 f16 bf16 q8_0 q6_k q5_k q5_1 q5_0 q4_k q4_1 q4_0 iq4_nl q3_k q2_k fp8_e4m3 "       \
    "fp8_e5m2 int2..int8 uint2..uint8 nf4"

/* ---- methods and their options ---- */

static const struct {
    const char *name;
    bool impl;
} g_methods[Q_METHOD_COUNT] = {
#define Q_METHOD_ROW(e, name, impl) {name, impl},
    Q_METHOD_LIST(Q_METHOD_ROW)
#undef Q_METHOD_ROW
};

const char *q_method_name(q_method m)
{
    return (unsigned)m < Q_METHOD_COUNT ? g_methods[m].name : "?";
}

int q_method_from_name(const char *name)
{
    for (int i = 0; i < Q_METHOD_COUNT; i++)
        if (strcasecmp(name, g_methods[i].name) == 0)
            return i;
    return -1;
}

/* Options each method accepts. None takes any yet: the methods with options
 * (gptq damp/act_order, awq, ...) are not available. The table ends with a
 * sentinel so adding a row is all a new option needs. */
static const struct {
    q_method method;
    const char *key;
} g_options[] = {
    {Q_METHOD_COUNT, NULL},
};

/* Copies at most 40 characters of s[0..n) into buf for a message, control
 * characters shown as '?', "..." when cut. */
static const char *show(const char *s, size_t n, char *buf, size_t cap)
{
    size_t lim = cap > 4 ? cap - 4 : 0, o = 0;
    if (lim > 40)
        lim = 40;
    for (size_t i = 0; i < n && o < lim; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (o < n && o == lim) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

static bool is_blank(int c)
{
    return c == ' ' || c == '\t';
}

/* Checks "key=value;key=value" for method m. On failure writes why. */
static bool check_options(q_method m, const char *opts, char *why, size_t cap)
{
    const char *p = opts;
    char b1[64], b2[160];
    while (*p) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *s = p, *e = p + n;
        while (s < e && is_blank(*s))
            s++;
        while (e > s && is_blank(e[-1]))
            e--;
        if (s < e) {
            const char *eq = memchr(s, '=', (size_t)(e - s));
            const char *k = s, *ke = eq ? eq : e;
            while (ke > k && is_blank(ke[-1]))
                ke--;
            if (!eq || ke == k) {
                snprintf(why, cap, "bad option '%s': expected key=value",
                         show(s, (size_t)(e - s), b1, sizeof b1));
                return false;
            }
            bool known = false;
            size_t o = 0;
            b2[0] = '\0';
            for (size_t i = 0; g_options[i].key; i++) {
                if (g_options[i].method != m)
                    continue;
                if (strlen(g_options[i].key) == (size_t)(ke - k) &&
                    strncmp(g_options[i].key, k, (size_t)(ke - k)) == 0)
                    known = true;
                if (o < sizeof b2)
                    o += (size_t)snprintf(b2 + o, sizeof b2 - o, "%s%s", o ? ", " : "",
                                          g_options[i].key);
            }
            if (!known) {
                if (b2[0])
                    snprintf(why, cap, "unknown option '%s' for method %s (known: %s)",
                             show(k, (size_t)(ke - k), b1, sizeof b1), q_method_name(m), b2);
                else
                    snprintf(why, cap, "unknown option '%s' for method %s (%s takes no options)",
                             show(k, (size_t)(ke - k), b1, sizeof b1), q_method_name(m),
                             q_method_name(m));
                return false;
            }
            const char *v = eq + 1;
            while (v < e && is_blank(*v))
                v++;
            if (v == e) {
                snprintf(why, cap, "option '%s' needs a value",
                         show(k, (size_t)(ke - k), b1, sizeof b1));
                return false;
            }
        }
        p = end ? end + 1 : p + n;
    }
    return true;
}

/* ---- fingerprint ---- */

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t fnv1a_le(uint64_t h, uint64_t v, int bytes)
{
    unsigned char b[8];
    for (int i = 0; i < bytes; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    return fnv1a(h, b, (size_t)bytes);
}

void q_model_fingerprint(const q_model *m, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        h = fnv1a(h, t->name, strlen(t->name) + 1);
        uint32_t nd = t->n_dims > 4 ? 4 : t->n_dims;
        h = fnv1a_le(h, t->n_dims, 4);
        for (uint32_t d = 0; d < nd; d++)
            h = fnv1a_le(h, (uint64_t)t->ne[d], 8);
        h = fnv1a_le(h, t->dtype, 4);
    }
    snprintf(out, 17, "%016" PRIx64, h);
}

/* ---- plan objects ---- */

static void rule_free(q_plan_rule *r)
{
    free(r->pattern);
    free(r->options);
    if (r->is_regex)
        regfree(&r->re);
}

void q_plan_free(q_plan *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_rules; i++)
        rule_free(&p->rules[i]);
    free(p->rules);
    free(p->model_name);
    free(p);
}

/* Copy of s[0..n) with control characters as '?' and blanks trimmed at both
 * ends; NULL when nothing is left (or out of memory). */
static char *clean_name(const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    if (!n)
        return NULL;
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        d[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    d[n] = '\0';
    return d;
}

q_plan *q_plan_new(const q_model *m)
{
    q_plan *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n_tensors = -1;
    if (!m)
        return p;
    const char *path = m->path ? m->path : "";
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/')
        b--;
    if (n > b) {
        p->model_name = clean_name(path + b, n - b);
        if (!p->model_name) {
            free(p);
            return NULL;
        }
    }
    p->n_tensors = (int64_t)m->n_tensors;
    q_model_fingerprint(m, p->fingerprint);
    return p;
}

/* Appends a rule whose fields were validated; takes ownership of *re. */
static q_status plan_push(q_plan *p, const char *pattern, size_t plen, bool is_regex,
                          regex_t *re, const q_fmt_spec *fmt, q_method method,
                          const char *options, int line)
{
    if (p->n_rules >= Q_PLAN_MAX_RULES)
        return Q_EDATA;
    if (p->n_rules % 16 == 0) {
        q_plan_rule *r = realloc(p->rules, (size_t)(p->n_rules + 16) * sizeof *r);
        if (!r)
            return Q_ENOMEM;
        p->rules = r;
    }
    q_plan_rule *r = &p->rules[p->n_rules];
    memset(r, 0, sizeof *r);
    r->pattern = malloc(plen + 1);
    r->options = strdup(options ? options : "");
    if (!r->pattern || !r->options) {
        free(r->pattern);
        free(r->options);
        return Q_ENOMEM;
    }
    memcpy(r->pattern, pattern, plen);
    r->pattern[plen] = '\0';
    r->is_regex = is_regex;
    if (is_regex)
        r->re = *re; /* glibc's regex_t holds no pointer to itself: it may move */
    if (method == Q_METHOD_KEEP)
        memset(&r->fmt, 0, sizeof r->fmt);
    else
        r->fmt = *fmt;
    r->method = method;
    r->line = line;
    p->n_rules++;
    return Q_OK;
}

/* Rough size of the automaton glibc builds for an ERE: an atom counts 1, a
 * group the sum of its contents, a bounded repetition multiplies by its
 * largest count and '+' by two (regcomp copies the operand for each).
 * Nested counts ("((a{100}){100}){100}") would otherwise make regcomp run for
 * minutes and take gigabytes. Saturates at 10 * RX_MAX. */
#define RX_MAX 20000

static int64_t rx_sat(int64_t v)
{
    return v > 10 * RX_MAX ? 10 * RX_MAX : v;
}

static int64_t rx_seq(const char **pp, int depth)
{
    const char *p = *pp;
    int64_t total = 0;
    while (*p && *p != ')') {
        int64_t atom = 1;
        if (*p == '|') {
            p++;
            continue;
        }
        if (*p == '(') {
            p++;
            atom = depth > 100 ? 10 * RX_MAX : rx_seq(&p, depth + 1);
            if (*p == ')')
                p++;
        } else if (*p == '[') {
            p++;
            if (*p == '^')
                p++;
            if (*p == ']')
                p++;
            while (*p && *p != ']') {
                if (p[0] == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
                    const char *e = strchr(p + 2, ']');
                    p = e ? e + 1 : p + 2;
                } else {
                    p++;
                }
            }
            if (*p)
                p++;
        } else if (*p == '\\') {
            p++;
            if (*p)
                p++;
        } else {
            p++;
        }
        while (*p == '*' || *p == '+' || *p == '?' || *p == '{') {
            if (*p != '{') {
                if (*p == '+') /* glibc expands a+ into a a* */
                    atom = rx_sat(atom * 2);
                p++;
                continue;
            }
            if (!isdigit((unsigned char)p[1]))
                break;
            int64_t m = 0, n = -1;
            p++;
            while (isdigit((unsigned char)*p))
                m = rx_sat(m * 10 + (*p++ - '0'));
            if (*p == ',') {
                p++;
                if (isdigit((unsigned char)*p)) {
                    n = 0;
                    while (isdigit((unsigned char)*p))
                        n = rx_sat(n * 10 + (*p++ - '0'));
                }
            }
            if (*p == '}')
                p++;
            int64_t k = n >= 0 ? (n > m ? n : m) : m + 1;
            atom = rx_sat(atom * (k > 1 ? k : 1));
        }
        total = rx_sat(total + atom);
    }
    *pp = p;
    return total;
}

static int64_t rx_size(const char *expr)
{
    int64_t total = 0;
    while (*expr) {
        total = rx_sat(total + rx_seq(&expr, 0));
        if (*expr == ')')
            expr++;
    }
    return total;
}

/* True when a quantifier directly follows another ("a++", "b*+", "c{2}*"),
 * undefined in POSIX EREs, and glibc builds automata for such stacks whose
 * memory explodes at match time (found by fuzz_plan); also true for a
 * back-reference (\1..\9, a glibc extension matched by backtracking). */
static bool rx_stacked(const char *p)
{
    bool after_quant = false;
    while (*p) {
        if (*p == '\\') {
            if (p[1] >= '1' && p[1] <= '9')
                return true; /* a back-reference: glibc matches them by backtracking */
            p += p[1] ? 2 : 1;
            after_quant = false;
        } else if (*p == '[') {
            p++;
            if (*p == '^')
                p++;
            if (*p == ']')
                p++;
            while (*p && *p != ']')
                p += (p[0] == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=') &&
                      strchr(p + 2, ']'))
                         ? (size_t)(strchr(p + 2, ']') - p) + 1
                         : 1;
            if (*p)
                p++;
            after_quant = false;
        } else if (*p == '*' || *p == '+' || *p == '?' ||
                   (*p == '{' && isdigit((unsigned char)p[1]))) {
            if (after_quant)
                return true;
            if (*p == '{') {
                while (*p && *p != '}')
                    p++;
            }
            if (*p)
                p++;
            after_quant = true;
        } else {
            p++;
            after_quant = false;
        }
    }
    return false;
}

static int compile_regex(regex_t *re, const char *expr, char *why, size_t cap)
{
    char b[64];
    if (rx_stacked(expr)) {
        snprintf(why, cap, "regular expression '%s' stacks repetition operators (like a++ "
                 "or b*?) or uses a back-reference; neither is allowed",
                 show(expr, strlen(expr), b, sizeof b));
        return REG_BADRPT;
    }
    if (rx_size(expr) > RX_MAX) {
        snprintf(why, cap, "regular expression '%s' is too large (its repetition counts "
                 "multiply to more than %d)", show(expr, strlen(expr), b, sizeof b), RX_MAX);
        return REG_ESIZE;
    }
    int rc = regcomp(re, expr, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[128];
        regerror(rc, re, msg, sizeof msg);
        snprintf(why, cap, "invalid regular expression '%s': %s", show(expr, strlen(expr), b,
                                                                          sizeof b), msg);
    }
    return rc;
}

q_status q_plan_add(q_plan *p, const char *pattern, const q_fmt_spec *fmt, q_method method,
                    const char *options, q_err *err)
{
    char why[400], b[64];
    if (!pattern || !*pattern)
        return q_fail(err, Q_EUSAGE, "empty pattern");
    size_t plen = strlen(pattern);
    if (plen > Q_PLAN_MAX_CELL)
        return q_fail(err, Q_EUSAGE, "pattern longer than %d bytes", Q_PLAN_MAX_CELL);
    if ((unsigned)method >= Q_METHOD_COUNT)
        return q_fail(err, Q_EUSAGE, "unknown method %d", (int)method);
    if (!g_methods[method].impl)
        return q_fail(err, Q_EUSAGE, "method '%s' is not available yet", g_methods[method].name);
    if (method != Q_METHOD_KEEP) {
        if (!fmt)
            return q_fail(err, Q_EUSAGE, "missing format");
        q_status st = q_fmt_check(fmt, 0, err);
        if (st != Q_OK)
            return st;
    }
    if (options && strlen(options) > Q_PLAN_MAX_CELL)
        return q_fail(err, Q_EUSAGE, "options longer than %d bytes", Q_PLAN_MAX_CELL);
    if (options && !check_options(method, options, why, sizeof why))
        return q_fail(err, Q_EUSAGE, "%s", why);
    bool is_re = strncmp(pattern, "re:", 3) == 0;
    regex_t re;
    if (is_re) {
        if (!pattern[3])
            return q_fail(err, Q_EUSAGE, "empty regular expression after 're:'");
        if (compile_regex(&re, pattern + 3, why, sizeof why) != 0)
            return q_fail(err, Q_EUSAGE, "%s", why);
    }
    q_status st = plan_push(p, pattern, plen, is_re, &re, fmt, method, options, 0);
    if (st != Q_OK) {
        if (is_re)
            regfree(&re);
        return q_fail(err, st, "cannot add rule '%s': %s", show(pattern, plen, b, sizeof b),
                      st == Q_ENOMEM ? "out of memory" : "too many rules");
    }
    return Q_OK;
}

bool q_plan_equal(const q_plan *a, const q_plan *b)
{
    if (a->n_rules != b->n_rules || a->n_tensors != b->n_tensors ||
        strcmp(a->fingerprint, b->fingerprint) != 0)
        return false;
    if ((a->model_name == NULL) != (b->model_name == NULL) ||
        (a->model_name && strcmp(a->model_name, b->model_name) != 0))
        return false;
    for (int i = 0; i < a->n_rules; i++) {
        const q_plan_rule *x = &a->rules[i], *y = &b->rules[i];
        if (strcmp(x->pattern, y->pattern) != 0 || x->is_regex != y->is_regex ||
            x->method != y->method || strcmp(x->options, y->options) != 0)
            return false;
        if (x->method != Q_METHOD_KEEP &&
            (x->fmt.id != y->fmt.id || x->fmt.bits != y->fmt.bits ||
             x->fmt.group != y->fmt.group))
            return false;
    }
    return true;
}

/* ---- parsing ---- */

typedef struct plan_cell {
    char *text; /* NUL-terminated copy (owned) */
    size_t len;
    int line, col;
} plan_cell;

typedef struct plan_parser {
    const char *fname;
    q_plan *plan;
    q_err *err;
    q_status st;
    int line, col;       /* position of the byte being fed, 1-based */
    bool cell_begun;     /* a non-blank byte of the current cell was fed */
    bool cell_quoted;    /* ... and it was a quote */
    int cell_line, cell_col;
    plan_cell cells[PLAN_NCOLS + 1];
    int n_cells;         /* cells of the current record (only the first 6 kept) */
    bool at_start;       /* no record open: only blanks fed since the last one ended */
    bool have_header;
    int model_line;      /* line of the "# model:" comment, 0 if none yet */
} plan_parser;

__attribute__((format(printf, 5, 6))) static void pp_fail(plan_parser *pp, int line, int col,
                                                          q_status st, const char *fmt, ...)
{
    char msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pp->st = q_fail(pp->err, st, "%s:%d:%d: %s", pp->fname, line, col, msg);
}

static void pp_clear_cells(plan_parser *pp)
{
    int n = pp->n_cells < PLAN_NCOLS + 1 ? pp->n_cells : PLAN_NCOLS + 1;
    for (int i = 0; i < n; i++) {
        free(pp->cells[i].text);
        pp->cells[i].text = NULL;
    }
    pp->n_cells = 0;
}

/* Column (1-based, in characters) of byte off of a line. */
static int char_col(const char *line, size_t off)
{
    int col = 1;
    for (size_t i = 0; i < off; i++)
        if (((unsigned char)line[i] & 0xc0) != 0x80)
            col++;
    return col;
}

static void pp_count_error(plan_parser *pp)
{
    int n = pp->n_cells;
    int line = pp->line, col = pp->col;
    if (n > PLAN_NCOLS) {
        line = pp->cells[PLAN_NCOLS].line;
        col = pp->cells[PLAN_NCOLS].col;
    }
    pp_fail(pp, line, col, Q_EDATA, "row has %d column%s, expected %d (" PLAN_HEADER ")", n,
            n == 1 ? "" : "s", PLAN_NCOLS);
}

static void pp_header(plan_parser *pp)
{
    static const char *const names[PLAN_NCOLS] = {"pattern", "format", "method", "group",
                                                  "options"};
    int n = pp->n_cells < PLAN_NCOLS ? pp->n_cells : PLAN_NCOLS;
    char b[64];
    if (n >= 1 && strcasecmp(pp->cells[0].text, "pattern") == 0 && pp->n_cells != PLAN_NCOLS) {
        pp_count_error(pp);
        return;
    }
    for (int i = 0; i < n; i++) {
        const plan_cell *c = &pp->cells[i];
        if (strcasecmp(c->text, names[i]) != 0) {
            if (i == 0)
                pp_fail(pp, c->line, c->col, Q_EDATA,
                        "expected the header row '" PLAN_HEADER "' before the first rule");
            else
                pp_fail(pp, c->line, c->col, Q_EDATA,
                        "header row: expected '%s', found '%s'", names[i],
                        show(c->text, c->len, b, sizeof b));
            return;
        }
    }
    if (pp->n_cells != PLAN_NCOLS) {
        pp_count_error(pp);
        return;
    }
    pp->have_header = true;
}

/* Parses the group cell of a rule whose format is fmt. */
static void pp_group(plan_parser *pp, const plan_cell *c, q_fmt_spec *fmt)
{
    char b[64], name[32];
    int64_t g;
    if (strcasecmp(c->text, "channel") == 0 || strcasecmp(c->text, "row") == 0) {
        g = Q_GROUP_CHANNEL;
    } else if (strcasecmp(c->text, "tensor") == 0) {
        g = Q_GROUP_TENSOR;
    } else {
        const char *s = c->text;
        char *end;
        bool num = isdigit((unsigned char)s[0]) ||
                   ((s[0] == '-' || s[0] == '+') && isdigit((unsigned char)s[1]));
        errno = 0;
        long long v = num ? strtoll(s, &end, 10) : 0;
        if (!num || *end != '\0') {
            pp_fail(pp, c->line, c->col, Q_EDATA,
                    "group '%s' is not a number (give a size 1..%lld, 'channel' or 'tensor')",
                    show(c->text, c->len, b, sizeof b), (long long)Q_PLAN_MAX_GROUP);
            return;
        }
        if (errno == ERANGE || v < 1 || v > Q_PLAN_MAX_GROUP) {
            pp_fail(pp, c->line, c->col, Q_EDATA, "group %s is out of range (1..%lld)",
                    show(c->text, c->len, b, sizeof b), (long long)Q_PLAN_MAX_GROUP);
            return;
        }
        g = v;
    }
    if (q_fmt_is_ggml(fmt)) {
        pp_fail(pp, c->line, c->col, Q_EDATA,
                "%s fixes its blocks: leave the group empty", q_fmt_name(fmt, name, sizeof name));
        return;
    }
    q_fmt_spec f = *fmt;
    f.group = g;
    q_err e;
    if (q_fmt_check(&f, 0, &e) != Q_OK) {
        pp_fail(pp, c->line, c->col, Q_EDATA, "%s", e.msg);
        return;
    }
    *fmt = f;
}

static void pp_rule(plan_parser *pp)
{
    const plan_cell *cp = &pp->cells[0], *cf = &pp->cells[1], *cm = &pp->cells[2];
    const plan_cell *cg = &pp->cells[3], *co = &pp->cells[4];
    char b[64], why[400];
    q_fmt_spec fmt;
    memset(&fmt, 0, sizeof fmt);

    if (cp->len == 0) {
        pp_fail(pp, cp->line, cp->col, Q_EDATA, "empty pattern");
        return;
    }
    bool is_re = strncmp(cp->text, "re:", 3) == 0;
    regex_t re;
    if (is_re) {
        if (cp->len == 3) {
            pp_fail(pp, cp->line, cp->col, Q_EDATA, "empty regular expression after 're:'");
            return;
        }
        if (compile_regex(&re, cp->text + 3, why, sizeof why) != 0) {
            pp_fail(pp, cp->line, cp->col, Q_EDATA, "%s", why);
            return;
        }
    }
    int mi = q_method_from_name(cm->text);
    if (cf->len == 0) {
        if (mi != Q_METHOD_KEEP) {
            pp_fail(pp, cf->line, cf->col, Q_EDATA, "missing format");
            goto fail;
        }
    } else if (!q_fmt_parse(cf->text, &fmt)) {
        pp_fail(pp, cf->line, cf->col, Q_EDATA, "unknown format '%s' (known: " PLAN_KNOWN_FORMATS
                ")", show(cf->text, cf->len, b, sizeof b));
        goto fail;
    }
    if (cm->len == 0) {
        pp_fail(pp, cm->line, cm->col, Q_EDATA, "missing method (keep, rtn or wsearch)");
        goto fail;
    }
    if (mi < 0) {
        pp_fail(pp, cm->line, cm->col, Q_EDATA,
                "unknown method '%s' (known: keep rtn wsearch awq gptq smoothquant outlier)",
                show(cm->text, cm->len, b, sizeof b));
        goto fail;
    }
    if (!g_methods[mi].impl) {
        pp_fail(pp, cm->line, cm->col, Q_EDATA, "method '%s' is not available yet",
                g_methods[mi].name);
        goto fail;
    }
    if (cg->len) {
        if (mi == Q_METHOD_KEEP) {
            pp_fail(pp, cg->line, cg->col, Q_EDATA, "method keep takes no group");
            goto fail;
        }
        pp_group(pp, cg, &fmt);
        if (pp->st != Q_OK)
            goto fail;
    }
    if (co->len && !check_options((q_method)mi, co->text, why, sizeof why)) {
        pp_fail(pp, co->line, co->col, Q_EDATA, "%s", why);
        goto fail;
    }
    q_status st = plan_push(pp->plan, cp->text, cp->len, is_re, &re, &fmt, (q_method)mi,
                            co->text, cp->line);
    if (st != Q_OK) {
        if (st == Q_ENOMEM)
            pp_fail(pp, cp->line, cp->col, Q_ENOMEM, "out of memory");
        else
            pp_fail(pp, cp->line, cp->col, Q_EDATA, "more than %d rules", Q_PLAN_MAX_RULES);
        goto fail;
    }
    return;
fail:
    if (is_re)
        regfree(&re);
}

static void pp_on_cell(void *s, size_t len, void *data)
{
    plan_parser *pp = data;
    int line = pp->cell_begun ? pp->cell_line : pp->line;
    int col = pp->cell_begun ? pp->cell_col : pp->col;
    pp->cell_begun = false;
    if (pp->st != Q_OK)
        return;
    if (len > Q_PLAN_MAX_CELL) {
        pp_fail(pp, line, col, Q_EDATA, "cell longer than %d bytes", Q_PLAN_MAX_CELL);
        return;
    }
    if (pp->n_cells < PLAN_NCOLS + 1) {
        plan_cell *c = &pp->cells[pp->n_cells];
        c->text = malloc(len + 1);
        if (!c->text) {
            pp_fail(pp, line, col, Q_ENOMEM, "out of memory");
            return;
        }
        if (len)
            memcpy(c->text, s, len);
        c->text[len] = '\0';
        c->len = len;
        c->line = line;
        c->col = col;
    }
    if (pp->n_cells < INT_MAX)
        pp->n_cells++;
}

static void pp_on_row(int c, void *data)
{
    plan_parser *pp = data;
    (void)c;
    if (pp->st == Q_OK) {
        if (!pp->have_header)
            pp_header(pp);
        else if (pp->n_cells != PLAN_NCOLS)
            pp_count_error(pp);
        else
            pp_rule(pp);
    }
    pp_clear_cells(pp);
    pp->at_start = true;
}

/* "# qtune plan v1" */
static void pp_version(plan_parser *pp, const char *line, size_t off, size_t n)
{
    size_t i = off;
    while (i < n && is_blank(line[i]))
        i++;
    size_t v = i;
    bool ok = i < n && line[i] == 'v' && i + 1 < n;
    for (size_t k = i + 1; ok && k < n; k++)
        ok = isdigit((unsigned char)line[k]) != 0;
    if (!ok || n - v > 10) {
        pp_fail(pp, pp->line, char_col(line, v), Q_EDATA,
                "bad version comment: expected '# qtune plan v1'");
        return;
    }
    if (n - v != 2 || line[v + 1] != '1') {
        char b[16];
        pp_fail(pp, pp->line, char_col(line, v), Q_EDATA,
                "plan version %s is not supported (this qtune reads v1)",
                show(line + v, n - v, b, sizeof b));
    }
}

/* "# model: NAME  tensors=N  fingerprint=HEX" (either field may be "?" or missing). */
static void pp_model(plan_parser *pp, const char *line, size_t off, size_t n)
{
    char b[64];
    if (pp->model_line) {
        pp_fail(pp, pp->line, 1, Q_EDATA, "second '# model:' comment (the first is on line %d)",
                pp->model_line);
        return;
    }
    pp->model_line = pp->line;
    q_plan *p = pp->plan;
    bool seen_t = false, seen_f = false;
    size_t end = n;
    for (int k = 0; k < 2; k++) {
        while (end > off && is_blank(line[end - 1]))
            end--;
        size_t s = end;
        while (s > off && !is_blank(line[s - 1]))
            s--;
        size_t tl = end - s;
        const char *tok = line + s;
        if (!seen_f && tl >= 12 && strncmp(tok, "fingerprint=", 12) == 0) {
            seen_f = true;
            const char *v = tok + 12;
            size_t vl = tl - 12;
            bool ok = vl == 16;
            for (size_t i = 0; ok && i < 16; i++)
                ok = isxdigit((unsigned char)v[i]) != 0;
            if (vl == 1 && v[0] == '?') {
                p->fingerprint[0] = '\0';
            } else if (!ok) {
                pp_fail(pp, pp->line, char_col(line, s + 12), Q_EDATA,
                        "bad fingerprint '%s' (expected 16 hex digits)", show(v, vl, b, sizeof b));
                return;
            } else {
                for (size_t i = 0; i < 16; i++)
                    p->fingerprint[i] = (char)tolower((unsigned char)v[i]);
                p->fingerprint[16] = '\0';
            }
        } else if (!seen_t && tl >= 8 && strncmp(tok, "tensors=", 8) == 0) {
            seen_t = true;
            const char *v = tok + 8;
            size_t vl = tl - 8;
            bool ok = vl >= 1 && vl <= 15;
            for (size_t i = 0; ok && i < vl; i++)
                ok = isdigit((unsigned char)v[i]) != 0;
            if (vl == 1 && v[0] == '?') {
                p->n_tensors = -1;
            } else if (!ok) {
                pp_fail(pp, pp->line, char_col(line, s + 8), Q_EDATA,
                        "bad tensor count '%s' in the model comment", show(v, vl, b, sizeof b));
                return;
            } else {
                int64_t cnt = 0; /* the line is not NUL-terminated: no strtoll */
                for (size_t i = 0; i < vl; i++)
                    cnt = cnt * 10 + (v[i] - '0');
                p->n_tensors = cnt;
            }
        } else {
            break;
        }
        end = s;
    }
    free(p->model_name);
    p->model_name = NULL;
    size_t s = off;
    while (s < end && isspace((unsigned char)line[s]))
        s++;
    if (s < end) {
        p->model_name = clean_name(line + s, end - s);
        if (!p->model_name)
            pp_fail(pp, pp->line, 1, Q_ENOMEM, "out of memory");
    }
}

/* A comment line (no '\n'); recognises the version and model comments. */
static void pp_comment(plan_parser *pp, const char *line, size_t n)
{
    while (n && (line[n - 1] == '\r' || is_blank(line[n - 1])))
        n--;
    size_t i = 0;
    while (i < n && is_blank(line[i]))
        i++;
    i++; /* '#' */
    while (i < n && is_blank(line[i]))
        i++;
    if (n - i >= 10 && strncmp(line + i, "qtune plan", 10) == 0 &&
        (n - i == 10 || is_blank(line[i + 10])))
        pp_version(pp, line, i + 10, n);
    else if (n - i >= 6 && strncmp(line + i, "model:", 6) == 0)
        pp_model(pp, line, i + 6, n);
}

static void pp_csv_error(plan_parser *pp, struct csv_parser *cp)
{
    int e = csv_error(cp);
    if (e == CSV_EPARSE) {
        if (pp->cell_quoted)
            pp_fail(pp, pp->line, pp->col, Q_EDATA,
                    "bad quoting: text after the closing quote of the cell that starts at "
                    "column %d", pp->cell_col);
        else
            pp_fail(pp, pp->line, pp->col, Q_EDATA,
                    "bad quoting: a quote inside an unquoted cell (quote the whole cell and "
                    "double the quotes inside it)");
    } else if (e == CSV_ENOMEM || e == CSV_ETOOBIG) {
        pp_fail(pp, pp->line, pp->col, Q_ENOMEM, "out of memory");
    } else {
        pp_fail(pp, pp->line, pp->col, Q_EDATA, "%s", csv_strerror(e));
    }
}

static void pp_feed(plan_parser *pp, struct csv_parser *cp, const char *text, size_t len)
{
    size_t i = 0;
    while (i < len && pp->st == Q_OK) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t eol = nl ? (size_t)(nl - text) : len;
        size_t next = nl ? eol + 1 : len;
        if (pp->at_start) {
            size_t j = i;
            while (j < eol && (is_blank(text[j]) || text[j] == '\r'))
                j++;
            if (j == eol || text[j] == '#') {
                if (j < eol)
                    pp_comment(pp, text + i, eol - i);
                if (nl) {
                    pp->line++;
                    pp->col = 1;
                } else {
                    pp->col = char_col(text + i, eol - i);
                }
                i = next;
                continue;
            }
        }
        for (; i < next && pp->st == Q_OK; i++) {
            unsigned char c = (unsigned char)text[i];
            bool content = !is_blank(c) && c != '\r' && c != '\n';
            if (content && !pp->cell_begun) {
                pp->cell_begun = true;
                pp->cell_quoted = c == '"';
                pp->cell_line = pp->line;
                pp->cell_col = pp->col;
            }
            if (content)
                pp->at_start = false;
            if (csv_parse(cp, &c, 1, pp_on_cell, pp_on_row, pp) != 1) {
                if (pp->st == Q_OK)
                    pp_csv_error(pp, cp);
                return;
            }
            if (c == '\n') {
                pp->line++;
                pp->col = 1;
            } else if ((c & 0xc0) != 0x80) {
                pp->col++;
            }
        }
    }
}

q_status q_plan_parse(const char *text, size_t len, const char *fname, q_plan **out, q_err *err)
{
    *out = NULL;
    if (!fname)
        fname = "(plan)";
    if (len > PLAN_MAX_BYTES)
        return q_fail(err, Q_EDATA, "%s: plan is %zu bytes, more than the %zu allowed", fname,
                      len, PLAN_MAX_BYTES);
    const char *nul = len ? memchr(text, '\0', len) : NULL;
    if (nul) {
        int line = 1;
        size_t ls = 0;
        for (size_t i = 0; i < (size_t)(nul - text); i++)
            if (text[i] == '\n') {
                line++;
                ls = i + 1;
            }
        return q_fail(err, Q_EDATA, "%s:%d:%d: NUL byte in the plan", fname, line,
                      char_col(text + ls, (size_t)(nul - text) - ls));
    }
    plan_parser pp;
    memset(&pp, 0, sizeof pp);
    pp.fname = fname;
    pp.err = err;
    pp.st = Q_OK;
    pp.line = 1;
    pp.col = 1;
    pp.at_start = true;
    pp.plan = q_plan_new(NULL);
    if (!pp.plan)
        return q_fail(err, Q_ENOMEM, "%s: out of memory", fname);

    struct csv_parser cp;
    if (csv_init(&cp, CSV_STRICT | CSV_STRICT_FINI) != 0) {
        q_plan_free(pp.plan);
        return q_fail(err, Q_ENOMEM, "%s: out of memory", fname);
    }
    pp_feed(&pp, &cp, text, len);
    if (pp.st == Q_OK && csv_fini(&cp, pp_on_cell, pp_on_row, &pp) != 0 && pp.st == Q_OK) {
        if (csv_error(&cp) == CSV_EPARSE)
            pp_fail(&pp, pp.cell_line, pp.cell_col, Q_EDATA,
                    "unterminated quoted cell (no closing quote before the end of the file)");
        else
            pp_csv_error(&pp, &cp);
    }
    csv_free(&cp);
    pp_clear_cells(&pp);
    if (pp.st == Q_OK && !pp.have_header)
        pp_fail(&pp, pp.line, pp.col, Q_EDATA, "%smissing the header row '" PLAN_HEADER "'",
                len ? "" : "empty plan: ");
    if (pp.st != Q_OK) {
        q_plan_free(pp.plan);
        return pp.st;
    }
    *out = pp.plan;
    return Q_OK;
}

q_status q_plan_load(const char *path, q_plan **out, q_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    *out = NULL;
    q_status st = q_read_small_file(path, PLAN_MAX_BYTES, &buf, &len, err);
    if (st != Q_OK)
        return st;
    st = q_plan_parse(buf, len, path, out, err);
    free(buf);
    return st;
}

/* ---- writing ---- */

/* A cell is quoted when it holds a separator, quote or line break, or starts
 * like a formula (= + - @), a comment (#) or with a blank, or ends with a blank
 * (libcsv trims unquoted blanks). */
static bool cell_needs_quotes(const char *s)
{
    if (!*s)
        return false;
    if (strchr("=+-@# \t", s[0]))
        return true;
    size_t n = strlen(s);
    if (is_blank(s[n - 1]))
        return true;
    return strpbrk(s, ",\"\r\n") != NULL;
}

static void write_cell(FILE *fp, const char *s)
{
    if (cell_needs_quotes(s))
        csv_fwrite(fp, s, strlen(s));
    else
        fputs(s, fp);
}

/* Group cell: empty for the format's default, else channel / tensor / size. */
static void group_cell(const q_fmt_spec *f, char *buf, size_t cap)
{
    q_fmt_spec d;
    char name[32];
    buf[0] = '\0';
    q_fmt_name(f, name, sizeof name);
    if (!q_fmt_parse(name, &d) || d.group == f->group)
        return;
    if (f->group == Q_GROUP_CHANNEL)
        snprintf(buf, cap, "channel");
    else if (f->group == Q_GROUP_TENSOR)
        snprintf(buf, cap, "tensor");
    else
        snprintf(buf, cap, "%lld", (long long)f->group);
}

q_status q_plan_write(const q_plan *p, FILE *fp, q_err *err)
{
    fputs("# qtune plan v1\n", fp);
    if (p->model_name || p->n_tensors >= 0 || p->fingerprint[0]) {
        fprintf(fp, "# model: %s", p->model_name ? p->model_name : "");
        if (p->n_tensors >= 0)
            fprintf(fp, "  tensors=%lld", (long long)p->n_tensors);
        else
            fputs("  tensors=?", fp);
        fprintf(fp, "  fingerprint=%s\n", p->fingerprint[0] ? p->fingerprint : "?");
    }
    fputs(PLAN_HEADER "\n", fp);
    for (int i = 0; i < p->n_rules; i++) {
        const q_plan_rule *r = &p->rules[i];
        char name[32], group[32];
        write_cell(fp, r->pattern);
        fputc(',', fp);
        if (r->method != Q_METHOD_KEEP) {
            fputs(q_fmt_name(&r->fmt, name, sizeof name), fp);
            group_cell(&r->fmt, group, sizeof group);
        } else {
            group[0] = '\0';
        }
        fprintf(fp, ",%s,%s,", q_method_name(r->method), group);
        write_cell(fp, r->options ? r->options : "");
        fputc('\n', fp);
    }
    if (fflush(fp) != 0 || ferror(fp))
        return q_fail(err, Q_EIO, "cannot write the plan: %s", strerror(errno));
    return Q_OK;
}

char *q_plan_text(const q_plan *p)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    if (!fp)
        return NULL;
    q_err err;
    const q_status st = q_plan_write(p, fp, &err);
    if (fclose(fp) != 0 || st != Q_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

q_status q_plan_save(const q_plan *p, const char *path, q_err *err)
{
    q_atomic a;
    q_status st = q_atomic_open(&a, path, err);
    if (st != Q_OK)
        return st;
    st = q_plan_write(p, a.fp, err);
    if (st != Q_OK) {
        q_atomic_abort(&a);
        return q_fail_prefix(err, st, path);
    }
    return q_atomic_commit(&a, err);
}

/* ---- what llama.cpp quantizes (src/llama-quant.cpp) ---- */

/* ggml_n_dims: dimensions up to the last one larger than 1. */
static int eff_dims(const q_tensor *t)
{
    int nd = (int)(t->n_dims > 4 ? 4 : t->n_dims);
    for (int d = nd - 1; d >= 1; d--)
        if (t->ne[d] > 1)
            return d + 1;
    return 1;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

/* tensor_allows_quantization(): matrices (2-D and 3-D expert stacks) whose
 * GGUF name ends in "weight", minus norms, gating and the small or positional
 * tensors llama.cpp leaves alone. */
static bool llama_quantizable(const q_tensor *t)
{
    static const char *const skip[] = {
        "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
        "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
        "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight",
        "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight",
        "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight",
        "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight",
        ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd",
        ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
    };
    const char *name = t->gguf_name ? t->gguf_name : t->name;
    if (eff_dims(t) < 2 || !ends_with(name, "weight"))
        return false;
    if (strcmp(name, "position_embd.weight") == 0 || strcmp(name, "token_types.weight") == 0)
        return false;
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (strstr(name, skip[i]))
            return false;
    return true;
}

/* ---- resolution ---- */

static bool rule_matches(const q_plan_rule *r, const q_tensor *t)
{
    const char *g = t->gguf_name;
    bool two = g && strcmp(g, t->name) != 0;
    if (r->is_regex)
        return regexec(&r->re, t->name, 0, NULL, 0) == 0 ||
               (two && regexec(&r->re, g, 0, NULL, 0) == 0);
    return fnmatch(r->pattern, t->name, 0) == 0 || (two && fnmatch(r->pattern, g, 0) == 0);
}

/* The format a stored dtype corresponds to (f32 when none does). */
static q_fmt_spec stored_spec(uint32_t dtype)
{
    q_fmt_spec s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < Q_FMT_COUNT; i++) {
        const q_format *f = q_format_get((q_format_id)i);
        if (f && f->ggml_type >= 0 && (uint32_t)f->ggml_type == dtype) {
            s.id = (q_format_id)i;
            return s;
        }
    }
    s.id = Q_FMT_F32;
    return s;
}

/* tensor_type_fallback(): the type llama.cpp uses when a row does not fit the
 * blocks of a k-quant; Q_FMT_COUNT where it defines none (and throws). */
static q_format_id llama_fallback(q_format_id id)
{
    switch (id) {
    case Q_FMT_Q2_K:
    case Q_FMT_Q3_K:
        return Q_FMT_Q4_0;
    case Q_FMT_Q4_K:
        return Q_FMT_Q5_0;
    case Q_FMT_Q5_K:
        return Q_FMT_Q5_1;
    case Q_FMT_Q6_K:
        return Q_FMT_Q8_0;
    default:
        return Q_FMT_COUNT;
    }
}

static void resolve_one(const q_plan *p, const q_tensor *t, int rule, q_resolved *r)
{
    char w[32], f[32];
    memset(r, 0, sizeof *r);
    r->rule = rule;
    q_fmt_spec stored = stored_spec(t->dtype);
    r->fmt = stored;
    r->wanted = stored;
    r->kept = true;
    r->method = Q_METHOD_KEEP;
    if (rule < 0 || p->rules[rule].method == Q_METHOD_KEEP)
        return;
    const q_plan_rule *rl = &p->rules[rule];
    r->wanted = rl->fmt;
    q_fmt_name(&rl->fmt, w, sizeof w);
    /* the rule asks for what is stored already: nothing to say when kept */
    bool same = q_fmt_is_ggml(&rl->fmt) &&
                q_format_get(rl->fmt.id)->ggml_type == (int32_t)t->dtype;
    if (!llama_quantizable(t)) {
        if (!same) {
            if (eff_dims(t) < 2)
                snprintf(r->note, sizeof r->note, "1-D tensor: kept as %s, not %s",
                         q_dtype_name(t->dtype), w);
            else
                snprintf(r->note, sizeof r->note,
                         "kept as %s, not %s: llama.cpp does not quantize this tensor",
                         q_dtype_name(t->dtype), w);
        }
        return;
    }
    if (!q_dtype_readable(t->dtype)) {
        if (!same)
            snprintf(r->note, sizeof r->note, "stored type %s cannot be read: kept, not %s",
                     q_dtype_name(t->dtype), w);
        return;
    }
    r->kept = false;
    r->method = rl->method;
    r->fmt = rl->fmt;
    int64_t cols = t->cols;
    if (q_fmt_fits(&rl->fmt, cols))
        return;
    r->fallback = true;
    q_fmt_spec f16;
    memset(&f16, 0, sizeof f16);
    f16.id = Q_FMT_F16;
    r->fmt = f16;
    if (!q_fmt_is_ggml(&rl->fmt)) {
        snprintf(r->note, sizeof r->note, "%s: group %lld does not divide row length %lld: f16",
                 w, (long long)rl->fmt.group, (long long)cols);
        return;
    }
    long long blk = (long long)q_format_get(rl->fmt.id)->blck;
    q_format_id fb = llama_fallback(rl->fmt.id);
    if (fb == Q_FMT_COUNT) {
        snprintf(r->note, sizeof r->note,
                 "row length %lld is not a multiple of %lld (%s): f16 (llama.cpp has no "
                 "fallback for %s and stops)", (long long)cols, blk, w, w);
        return;
    }
    q_fmt_spec fs;
    memset(&fs, 0, sizeof fs);
    fs.id = fb;
    q_fmt_name(&fs, f, sizeof f);
    if (q_fmt_fits(&fs, cols)) {
        r->fmt = fs;
        snprintf(r->note, sizeof r->note,
                 "row length %lld is not a multiple of %lld (%s): %s, as llama.cpp falls back",
                 (long long)cols, blk, w, f);
        return;
    }
    snprintf(r->note, sizeof r->note,
             "row length %lld fits neither %s (%lld) nor its fallback %s (%lld): f16, as "
             "llama.cpp does", (long long)cols, w, blk, f,
             (long long)q_format_get(fb)->blck);
}

q_status q_plan_resolve(const q_plan *p, const q_model *m, bool force, q_resolved *out,
                        int **unmatched, int *n_unmatched, q_err *err)
{
    if (unmatched)
        *unmatched = NULL;
    if (n_unmatched)
        *n_unmatched = 0;
    if (p->fingerprint[0]) {
        char fp[17];
        q_model_fingerprint(m, fp);
        if (strcmp(fp, p->fingerprint) != 0 && !force)
            return q_fail(err, Q_EDATA,
                          "the plan was made for another model (%s, %lld tensors, fingerprint "
                          "%s); %s has %llu tensors and fingerprint %s (--force applies it "
                          "anyway)", p->model_name ? p->model_name : "unnamed",
                          (long long)p->n_tensors, p->fingerprint, m->path ? m->path : "model",
                          (unsigned long long)m->n_tensors, fp);
    }
    bool *used = calloc((size_t)p->n_rules + 1, sizeof *used);
    if (!used)
        return q_fail(err, Q_ENOMEM, "out of memory resolving the plan");
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        int rule = -1;
        for (int k = p->n_rules - 1; k >= 0; k--) {
            if (rule_matches(&p->rules[k], t)) {
                rule = k;
                break;
            }
        }
        if (rule >= 0)
            used[rule] = true;
        resolve_one(p, t, rule, &out[i]);
    }
    int nu = 0;
    for (int k = 0; k < p->n_rules; k++) {
        for (uint64_t i = 0; !used[k] && i < m->n_tensors; i++)
            used[k] = rule_matches(&p->rules[k], &m->tensors[i]);
        nu += !used[k];
    }
    if (n_unmatched)
        *n_unmatched = nu;
    if (unmatched && nu > 0) {
        int *u = malloc((size_t)nu * sizeof *u);
        if (!u) {
            free(used);
            return q_fail(err, Q_ENOMEM, "out of memory resolving the plan");
        }
        for (int k = 0, j = 0; k < p->n_rules; k++)
            if (!used[k])
                u[j++] = k;
        *unmatched = u;
    }
    free(used);
    return Q_OK;
}

/* ---- presets: llama-quantize's mixtures (src/llama-quant.cpp) ---- */

typedef enum preset_kind {
    PS_Q8_0,
    PS_Q6_K,
    PS_Q5_K_M,
    PS_Q4_K_M,
    PS_Q4_0,
    PS_KEEP_ATTN_F16,
} preset_kind;

static const struct {
    const char *name;
    preset_kind kind;
    q_format_id def;
    const char *desc;
} g_presets[] = {
    {"q8_0", PS_Q8_0, Q_FMT_Q8_0, "llama-quantize Q8_0: every matrix q8_0"},
    {"q6_k", PS_Q6_K, Q_FMT_Q6_K, "llama-quantize Q6_K: every matrix q6_k"},
    {"q5_k_m", PS_Q5_K_M, Q_FMT_Q5_K,
     "llama-quantize Q5_K_M: q5_k, output and half the attn_v/ffn_down layers q6_k"},
    {"q4_k_m", PS_Q4_K_M, Q_FMT_Q4_K,
     "llama-quantize Q4_K_M: q4_k, output and half the attn_v/ffn_down layers q6_k"},
    {"q4_0", PS_Q4_0, Q_FMT_Q4_0, "llama-quantize Q4_0 (no imatrix): q4_0, output q6_k"},
    {"keep-attn-f16", PS_KEEP_ATTN_F16, Q_FMT_Q4_K,
     "attention matrices f16, the rest q4_k, output and embeddings as Q4_K_M"},
};
#define N_PRESETS (sizeof g_presets / sizeof g_presets[0])

const char *const *q_plan_preset_names(void)
{
    static const char *names[N_PRESETS + 1];
    for (size_t i = 0; i < N_PRESETS; i++)
        names[i] = g_presets[i].name;
    names[N_PRESETS] = NULL;
    return names;
}

const char *q_plan_preset_desc(const char *name)
{
    for (size_t i = 0; i < N_PRESETS; i++)
        if (strcmp(name, g_presets[i].name) == 0)
            return g_presets[i].desc;
    return NULL;
}

/* tensor_get_category() */
typedef enum llama_cat {
    CAT_TOKEN_EMBD,
    CAT_ATTN_Q,
    CAT_ATTN_V,
    CAT_ATTN_K,
    CAT_ATTN_QKV,
    CAT_ATTN_KV_B,
    CAT_ATTN_OUTPUT,
    CAT_FFN_UP,
    CAT_FFN_GATE,
    CAT_FFN_DOWN,
    CAT_OUTPUT,
    CAT_OTHER,
} llama_cat;

static llama_cat llama_category(const char *n)
{
    if (strcmp(n, "output.weight") == 0)
        return CAT_OUTPUT;
    if (strcmp(n, "token_embd.weight") == 0 || strcmp(n, "per_layer_token_embd.weight") == 0)
        return CAT_TOKEN_EMBD;
    if (strstr(n, "attn_qkv.weight"))
        return CAT_ATTN_QKV;
    if (strstr(n, "attn_kv_b.weight"))
        return CAT_ATTN_KV_B;
    if (strstr(n, "attn_v.weight"))
        return CAT_ATTN_V;
    if (strstr(n, "attn_k.weight"))
        return CAT_ATTN_K;
    if (strstr(n, "attn_q.weight"))
        return CAT_ATTN_Q;
    if (strstr(n, "attn_output.weight"))
        return CAT_ATTN_OUTPUT;
    if (strstr(n, "ffn_up"))
        return CAT_FFN_UP;
    if (strstr(n, "ffn_gate"))
        return CAT_FFN_GATE;
    if (strstr(n, "ffn_down"))
        return CAT_FFN_DOWN;
    return CAT_OTHER;
}

static bool cat_is_attn_v(llama_cat c)
{
    return c == CAT_ATTN_V || c == CAT_ATTN_QKV || c == CAT_ATTN_KV_B;
}

/* Layer index llama.cpp reads with sscanf("blk.%d."), -1 when none. */
static int llama_layer(const char *name)
{
    if (strncmp(name, "blk.", 4) != 0)
        return -1;
    const char *s = name + 4;
    bool neg = *s == '-';
    if (neg || *s == '+')
        s++;
    if (!isdigit((unsigned char)*s))
        return -1;
    long v = 0;
    while (isdigit((unsigned char)*s) && v < 100000000)
        v = v * 10 + (*s++ - '0');
    if (*s != '.')
        return -1;
    return (int)(neg ? -v : v);
}

/* use_more_bits() in llama_tensor_get_type_impl(). */
static bool use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* weight_name_comparer in llama-model-loader.h: by layer, then by name. */
static int cmp_llama_order(const void *a, const void *b, void *ctx)
{
    const q_tensor *ts = ctx;
    const q_tensor *ta = &ts[*(const int64_t *)a];
    const q_tensor *tb = &ts[*(const int64_t *)b];
    int la = llama_layer(ta->gguf_name), lb = llama_layer(tb->gguf_name);
    if (la != lb)
        return la < lb ? -1 : 1;
    return strcmp(ta->gguf_name, tb->gguf_name);
}

typedef struct preset_ctx {
    preset_kind kind;
    q_format_id def;
    bool tied;       /* no output.weight: token_embd is the output */
    bool falcon;
    bool is_70b;     /* LLM_TYPE_70B of the llama architecture */
    int64_t n_expert;
    int n_layer;     /* hparams.n_layer_all */
    int n_attn_v;    /* tensors of the attn_v category */
    int i_attn_v, i_ffn_down;
} preset_ctx;

/* llama_tensor_get_type_impl() restricted to the ftypes of the presets
 * (imatrix-free: the presets' method is rtn). */
static q_format_id preset_type(preset_ctx *c, const q_tensor *t)
{
    llama_cat cat = llama_category(t->gguf_name);
    q_format_id nt = c->def;
    preset_kind k = c->kind == PS_KEEP_ATTN_F16 ? PS_Q4_K_M : c->kind;
    if (cat == CAT_OUTPUT || (c->tied && cat == CAT_TOKEN_EMBD)) {
        int64_t qk = q_format_get(c->def)->blck;
        if (c->falcon || t->ne[0] % qk != 0)
            nt = Q_FMT_Q8_0;
        else if (nt != Q_FMT_Q8_0)
            nt = Q_FMT_Q6_K;
        return nt;
    }
    if (cat == CAT_TOKEN_EMBD)
        return nt;
    if (c->kind == PS_KEEP_ATTN_F16) {
        /* attention matrices go to f16 through the preset's glob rules; the
         * Q4_K_M counters still advance so output and ffn_down do not depend
         * on it, and nothing else changes. */
        if (cat_is_attn_v(cat))
            c->i_attn_v++;
        if (cat == CAT_FFN_DOWN)
            c->i_ffn_down++;
        return nt;
    }
    if (cat_is_attn_v(cat)) {
        if ((k == PS_Q4_K_M || k == PS_Q5_K_M) && use_more_bits(c->i_attn_v, c->n_attn_v))
            nt = Q_FMT_Q6_K;
        if (c->is_70b && (nt == Q_FMT_Q3_K || nt == Q_FMT_Q4_K))
            nt = Q_FMT_Q5_K;
        if (c->n_expert == 8)
            nt = Q_FMT_Q8_0;
        c->i_attn_v++;
    } else if (cat == CAT_ATTN_K) {
        if (c->n_expert == 8)
            nt = Q_FMT_Q8_0;
    } else if (cat == CAT_FFN_DOWN) {
        int i = c->i_ffn_down, n = c->n_layer;
        if (c->n_expert > 1)
            i = llama_layer(t->gguf_name);
        if (k == PS_Q4_K_M) {
            if (c->falcon)
                nt = i < n / 16 ? Q_FMT_Q6_K : use_more_bits(i, n) ? Q_FMT_Q5_K : Q_FMT_Q4_K;
            else if (use_more_bits(i, n))
                nt = Q_FMT_Q6_K;
        } else if (k == PS_Q5_K_M && use_more_bits(i, n)) {
            nt = Q_FMT_Q6_K;
        }
        c->i_ffn_down++;
    } else if (cat == CAT_ATTN_OUTPUT) {
        if (!c->falcon && c->n_expert == 8 && k == PS_Q4_K_M)
            nt = Q_FMT_Q5_K;
    }
    return nt;
}

/* Experts per MoE layer: GGUF "<arch>.expert_count", else the third dimension
 * of a *_exps tensor, else 0. */
static int64_t model_n_expert(const q_model *m)
{
    int64_t v = 0;
    if (m->gguf && m->arch.name[0]) {
        char key[64];
        snprintf(key, sizeof key, "%s.expert_count", m->arch.name);
        if (q_gguf_get_int(m->gguf, key, &v) && v > 0)
            return v;
    }
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        if (t->gguf_name && strstr(t->gguf_name, "_exps.weight") && t->n_dims >= 3)
            return t->ne[2];
    }
    return 0;
}

/* A glob matching exactly name (fnmatch metacharacters escaped). */
static void glob_escape(const char *name, char *buf, size_t cap)
{
    size_t o = 0;
    for (const char *s = name; *s && o + 2 < cap; s++) { /* cap >= 2 * strlen + 1 */
        if (strchr("*?[]\\", *s))
            buf[o++] = '\\';
        buf[o++] = *s;
    }
    buf[o] = '\0';
}

q_status q_plan_preset(const q_model *m, const char *name, q_plan **out, q_err *err)
{
    *out = NULL;
    size_t pi = 0;
    while (pi < N_PRESETS && strcmp(name, g_presets[pi].name) != 0)
        pi++;
    if (pi == N_PRESETS)
        return q_fail(err, Q_EUSAGE,
                      "unknown preset '%s' (known: q8_0 q6_k q5_k_m q4_k_m q4_0 keep-attn-f16)",
                      name);
    preset_ctx c;
    memset(&c, 0, sizeof c);
    c.kind = g_presets[pi].kind;
    c.def = g_presets[pi].def;
    c.tied = q_model_find(m, "output.weight") < 0;
    c.falcon = strcmp(m->arch.name, "falcon") == 0;
    c.n_expert = model_n_expert(m);
    int max_layer = -1;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        if (cat_is_attn_v(llama_category(t->gguf_name)))
            c.n_attn_v++;
        int l = llama_layer(t->gguf_name);
        if (l > max_layer)
            max_layer = l;
    }
    c.n_layer = m->arch.n_layer > 0 && m->arch.n_layer < INT_MAX ? (int)m->arch.n_layer
                                                                  : max_layer + 1;
    /* llama-model.cpp, LLM_ARCH_LLAMA: 80 layers and GQA (not 8 experts) is 70B. */
    c.is_70b = strcmp(m->arch.name, "llama") == 0 && c.n_expert != 8 && c.n_layer == 80 &&
               m->arch.n_head > 0 && m->arch.n_head != m->arch.n_head_kv;

    q_status st = Q_OK;
    q_plan *p = q_plan_new(m);
    int64_t *order = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof *order);
    q_format_id *want = malloc((m->n_tensors ? m->n_tensors : 1) * sizeof *want);
    if (!p || !order || !want) {
        st = q_fail(err, Q_ENOMEM, "out of memory building preset %s", name);
        goto fail;
    }
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        order[i] = (int64_t)i;
        want[i] = Q_FMT_COUNT;
    }
    qsort_r(order, m->n_tensors, sizeof *order, cmp_llama_order, m->tensors);
    for (uint64_t k = 0; k < m->n_tensors; k++) {
        const q_tensor *t = &m->tensors[order[k]];
        if (llama_quantizable(t))
            want[order[k]] = preset_type(&c, t);
    }

    q_fmt_spec def;
    memset(&def, 0, sizeof def);
    def.id = c.def;
    st = q_plan_add(p, "*", &def, Q_METHOD_RTN, "", err);
    if (st != Q_OK)
        goto fail;
    q_fmt_spec f16;
    memset(&f16, 0, sizeof f16);
    f16.id = Q_FMT_F16;
    if (c.kind == PS_KEEP_ATTN_F16) {
        static const char *const globs[] = {"blk.*.attn_q.weight", "blk.*.attn_k.weight",
                                            "blk.*.attn_v.weight", "blk.*.attn_qkv.weight",
                                            "blk.*.attn_output.weight"};
        for (size_t g = 0; g < sizeof globs / sizeof globs[0]; g++) {
            bool any = false;
            for (uint64_t i = 0; i < m->n_tensors && !any; i++)
                any = fnmatch(globs[g], m->tensors[i].gguf_name, 0) == 0 ||
                      fnmatch(globs[g], m->tensors[i].name, 0) == 0;
            if (any && (st = q_plan_add(p, globs[g], &f16, Q_METHOD_RTN, "", err)) != Q_OK)
                goto fail;
        }
        for (uint64_t i = 0; i < m->n_tensors; i++) {
            llama_cat cat = llama_category(m->tensors[i].gguf_name);
            if (want[i] != Q_FMT_COUNT &&
                (cat == CAT_ATTN_Q || cat == CAT_ATTN_K || cat == CAT_ATTN_V ||
                 cat == CAT_ATTN_QKV || cat == CAT_ATTN_OUTPUT))
                want[i] = Q_FMT_F16;
        }
    }
    /* Explicit rows for every matrix whose choice differs from what the rules
     * so far give it, in model order. */
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        if (want[i] == Q_FMT_COUNT)
            continue;
        int rule = -1;
        for (int k = p->n_rules - 1; k >= 0 && rule < 0; k--)
            if (rule_matches(&p->rules[k], t))
                rule = k;
        if (rule >= 0 && p->rules[rule].fmt.id == want[i])
            continue;
        size_t cap = 2 * strlen(t->name) + 1;
        char *pat = malloc(cap);
        if (!pat) {
            st = q_fail(err, Q_ENOMEM, "out of memory building preset %s", name);
            goto fail;
        }
        glob_escape(t->name, pat, cap);
        q_fmt_spec f;
        memset(&f, 0, sizeof f);
        f.id = want[i];
        st = q_plan_add(p, pat, &f, Q_METHOD_RTN, "", err);
        free(pat);
        if (st != Q_OK)
            goto fail;
    }
    free(order);
    free(want);
    *out = p;
    return Q_OK;
fail:
    free(order);
    free(want);
    q_plan_free(p);
    return st;
}

/* ---- export as a llama-quantize --tensor-type-file ---- */

/* The llama-quantize type argument whose default type is id (with --pure it
 * only sets that default). NULL where none exists. */
static const char *llama_ftype_name(q_format_id id)
{
    switch (id) {
    case Q_FMT_Q4_0: return "Q4_0";
    case Q_FMT_Q4_1: return "Q4_1";
    case Q_FMT_Q5_0: return "Q5_0";
    case Q_FMT_Q5_1: return "Q5_1";
    case Q_FMT_Q8_0: return "Q8_0";
    case Q_FMT_Q2_K: return "Q2_K";
    case Q_FMT_Q3_K: return "Q3_K_M";
    case Q_FMT_Q4_K: return "Q4_K_M";
    case Q_FMT_Q5_K: return "Q5_K_M";
    case Q_FMT_Q6_K: return "Q6_K";
    case Q_FMT_IQ4_NL: return "IQ4_NL";
    default: return NULL;
    }
}

/* The quantized format most matrices llama.cpp quantizes get (q8_0 if none). */
static q_format_id llama_base(const q_model *m, const q_resolved *res)
{
    uint64_t count[Q_FMT_COUNT] = {0};
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (llama_quantizable(&m->tensors[i]) && !res[i].kept &&
            llama_ftype_name(res[i].fmt.id))
            count[res[i].fmt.id]++;
    int best = Q_FMT_Q8_0;
    for (int f = 0; f < Q_FMT_COUNT; f++)
        if (count[f] > count[best])
            best = f;
    return (q_format_id)best;
}

const char *q_plan_llama_ftype(const q_model *m, const q_resolved *res)
{
    return llama_ftype_name(llama_base(m, res));
}

/* "^name$" as an ECMAScript regex that survives llama-quantize's lowercasing
 * of the pattern and its whitespace/'=' splitting: [a-z0-9_] as is, '.' as
 * "\.", every other byte as "\xHH". */
static void llama_regex(const char *name, char *buf, size_t cap)
{
    size_t o = 0;
    if (cap < 3) {
        if (cap)
            buf[0] = '\0';
        return;
    }
    buf[o++] = '^';
    for (const unsigned char *s = (const unsigned char *)name; *s && o + 5 < cap; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')
            buf[o++] = (char)*s;
        else if (*s == '.')
            o += (size_t)snprintf(buf + o, cap - o, "\\.");
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", *s);
    }
    buf[o++] = '$';
    buf[o] = '\0';
}

static void lower_copy(const char *s, char *buf, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        buf[i] = (char)tolower((unsigned char)s[i]);
    buf[i] = '\0';
}

q_status q_plan_export_llama(const q_plan *p, const q_model *m, const q_resolved *res,
                             FILE *fp, q_err *err)
{
    (void)p;
    q_format_id base = llama_base(m, res);
    int32_t base_type = q_format_get(base)->ggml_type;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        const q_resolved *r = &res[i];
        const char *name = t->gguf_name ? t->gguf_name : t->name;
        char fname[32];
        if (!llama_quantizable(t))
            continue;
        uint32_t type;
        if (r->kept) {
            if (t->dtype >= 1000 || !q_dtype_get(t->dtype))
                return q_fail(err, Q_EUSAGE,
                              "%s is kept as %s, which llama-quantize cannot write", name,
                              q_dtype_name(t->dtype));
            type = t->dtype;
        } else {
            if (r->method != Q_METHOD_RTN && r->method != Q_METHOD_WSEARCH)
                return q_fail(err, Q_EUSAGE, "%s: method %s has no llama-quantize equivalent",
                              name, q_method_name(r->method));
            if (!q_fmt_is_ggml(&r->fmt))
                return q_fail(err, Q_EUSAGE, "%s: format %s has no llama-quantize type", name,
                              q_fmt_name(&r->fmt, fname, sizeof fname));
            type = (uint32_t)q_format_get(r->fmt.id)->ggml_type;
        }
        if ((int32_t)type == base_type)
            continue;
        size_t cap = 4 * strlen(name) + 3;
        char *re = malloc(cap), tn[32];
        if (!re)
            return q_fail(err, Q_ENOMEM, "out of memory");
        llama_regex(name, re, cap);
        lower_copy(q_dtype_name(type), tn, sizeof tn);
        fprintf(fp, "%s=%s\n", re, tn);
        free(re);
    }
    if (fflush(fp) != 0 || ferror(fp))
        return q_fail(err, Q_EIO, "cannot write the tensor type file: %s", strerror(errno));
    return Q_OK;
}
