/* q_plan.h — plan files (DESIGN.md §4): ordered rules mapping tensor-name
 * patterns to a format and a method, read and written with libcsv, resolved
 * against a model with llama.cpp's fallbacks.
 *
 *   # qtune plan v1
 *   # model: stories260K.gguf  tensors=48  fingerprint=<16 hex digits>
 *   pattern,format,method,group,options
 *   *,q4_k,rtn,,
 *   blk.*.attn_*,f16,rtn,,
 *   re:^blk\.[0-9]+\.ffn_down\.weight$,q6_k,wsearch,,
 *
 * pattern: fnmatch glob (flags 0: '*' crosses '.', '\' escapes) on the tensor's
 * stored name or its GGUF-style name, or "re:" + POSIX ERE (regcomp
 * REG_EXTENDED|REG_NOSUB, unanchored unless ^$ given). The last matching rule
 * wins. Tensors no rule matches are kept as stored.
 *
 * File syntax. Lines starting with '#' (after blanks) outside a quoted cell are
 * comments; two are understood: "# qtune plan vN" (optional; only v1 is read)
 * and "# model: NAME  tensors=N  fingerprint=HEX" (either field may be "?" or
 * missing; NAME may hold blanks). Blank lines are skipped. The header row
 * "pattern,format,method,group,options" is required (case-insensitive) before
 * the first rule; every row has exactly 5 cells. format: as q_fmt_parse reads
 * it; may be empty for method keep. method: keep, rtn or wsearch (awq, gptq,
 * smoothquant, outlier parse but are "not available yet"). group: empty for the
 * format's default, a size 1..Q_PLAN_MAX_GROUP, "channel" (or "row") or
 * "tensor"; only for int/uint/fp8/nf4. options: "key=value;key=value"; no
 * method takes options yet. Errors are "FILE:LINE:COLUMN: problem", columns
 * counted in characters from 1 at the start of the offending cell (or of the
 * byte libcsv rejected).
 *
 * Methods: rtn is llama-quantize without an importance matrix (plain
 * round-to-nearest block quantizers); wsearch is llama-quantize with --imatrix
 * (importance-weighted scale search).
 */
#ifndef Q_PLAN_H
#define Q_PLAN_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "q_format.h"
#include "q_model.h"
#include "q_status.h"

#define Q_PLAN_MAX_CELL 4096      /* bytes of one cell */
#define Q_PLAN_MAX_RULES 100000
#define Q_PLAN_MAX_GROUP 1048576  /* largest explicit group size */

/* X(enum, name, implemented) — methods parse by name; only implemented ones
 * are accepted in a plan today ("gptq" gives "method not available yet"). */
#define Q_METHOD_LIST(X)                  \
    X(Q_METHOD_KEEP, "keep", true)        \
    X(Q_METHOD_RTN, "rtn", true)          \
    X(Q_METHOD_WSEARCH, "wsearch", true)  \
    X(Q_METHOD_AWQ, "awq", false)         \
    X(Q_METHOD_GPTQ, "gptq", false)       \
    X(Q_METHOD_SMOOTHQUANT, "smoothquant", false) \
    X(Q_METHOD_OUTLIER, "outlier", false)

typedef enum q_method {
#define Q_METHOD_ENUM(e, name, impl) e,
    Q_METHOD_LIST(Q_METHOD_ENUM)
#undef Q_METHOD_ENUM
        Q_METHOD_COUNT
} q_method;

/* "rtn"; "?" for an invalid value. */
const char *q_method_name(q_method m);
/* Method id by name (case-insensitive), -1 when unknown. */
int q_method_from_name(const char *name);

typedef struct q_plan_rule {
    char *pattern;     /* as written (owned), "re:" prefix included */
    bool is_regex;
    regex_t re;        /* compiled when is_regex (moved with the array: fine for glibc) */
    q_fmt_spec fmt;    /* for method keep: ignored, always all zero */
    q_method method;
    char *options;     /* "key=value;key=value" as written (owned, may be "") */
    int line;          /* 1-based line in the file, 0 for rules made in memory */
} q_plan_rule;

typedef struct q_plan {
    int n_rules;
    q_plan_rule *rules; /* owned, in file order */
    char *model_name;   /* from the header comment (owned, may be NULL; no control
                           characters, no blanks at either end) */
    int64_t n_tensors;  /* from the header, -1 if absent */
    char fingerprint[17]; /* 16 lower-case hex digits, "" if absent */
} q_plan;

/* Fingerprint of a model: FNV-1a 64 over every tensor's stored name, shape and
 * dtype, in storage order, as 16 lower-case hex digits + NUL into out[17]. The
 * bytes hashed per tensor: the name and its NUL, n_dims as u32 little-endian,
 * ne[0..n_dims) as i64 little-endian, dtype as u32 little-endian. */
void q_model_fingerprint(const q_model *m, char out[17]);

/* Parses a plan file (at most 16 MiB). Q_ENOINPUT if it cannot be read; Q_EDATA
 * with "FILE:LINE:COLUMN: problem" for: wrong column count, bad quoting, unknown
 * format or method, a method not available yet, bad bits or group, a bad
 * option, an invalid regex or one whose nested repetition counts multiply past
 * 20000 (regcomp would take minutes), an empty pattern, a NUL byte, a bad version or
 * model comment, a missing or wrong header row. The first error found stops
 * the parse. On success *out is owned by the caller (q_plan_free). */
q_status q_plan_load(const char *path, q_plan **out, q_err *err);
/* Parses plan text held in memory (len bytes, no NUL needed; fname for
 * messages, "(plan)" when NULL). Same results as q_plan_load. */
q_status q_plan_parse(const char *text, size_t len, const char *fname, q_plan **out,
                      q_err *err);
void q_plan_free(q_plan *p);

/* An empty plan for model m (header fields filled from m: the base name of its
 * path, its tensor count and fingerprint), or for no model when m is NULL
 * (n_tensors -1). NULL when out of memory. */
q_plan *q_plan_new(const q_model *m);
/* Appends a rule (pattern and options copied; line 0). Q_EUSAGE for an empty
 * pattern, an invalid regex, a method not available, a spec q_fmt_check
 * rejects or a bad option, with a message; Q_ENOMEM. */
q_status q_plan_add(q_plan *p, const char *pattern, const q_fmt_spec *fmt, q_method method,
                    const char *options, q_err *err);

/* True when a and b hold the same header fields and rules (pattern, format,
 * method, options; line numbers are not compared). */
bool q_plan_equal(const q_plan *a, const q_plan *b);

/* Writes the plan (header comments, header row, one row per rule) to fp; cells
 * that hold a separator, quote or newline, start like a formula (= + - @), a
 * comment (#) or with a blank, or end with a blank are quoted. A format's
 * default group is written as an empty cell. q_plan_parse of the output gives
 * a plan q_plan_equal to p. Q_EIO on a write error. */
q_status q_plan_write(const q_plan *p, FILE *fp, q_err *err);
/* What q_plan_write writes, as a malloc'd NUL-terminated string (the TUI
 * compares plans by it); NULL when out of memory. Caller frees. */
char *q_plan_text(const q_plan *p);
/* Writes atomically to path (temp file, fsync, rename). Q_ECANTCREAT, Q_EIO. */
q_status q_plan_save(const q_plan *p, const char *path, q_err *err);

/* Presets: q8_0, q6_k, q5_k_m, q4_k_m, q4_0, keep-attn-f16. Fills a new plan
 * with explicit rules reproducing llama.cpp's per-tensor choices for the
 * corresponding llama-quantize type on model m (its layer rules for attn_v and
 * ffn_down, output at q6_k, ...): a "*" row with the type's default format,
 * then (keep-attn-f16 only) glob rows "blk.*.attn_q.weight" ... at f16, then
 * one row per matrix whose choice differs, named by its escaped stored name.
 * All rows use method rtn (llama-quantize without an imatrix); the rows give
 * the types llama.cpp picks before its row-length fallback, which
 * q_plan_resolve applies. Q_EUSAGE for an unknown name; Q_ENOMEM. */
q_status q_plan_preset(const q_model *m, const char *name, q_plan **out, q_err *err);
/* NULL-terminated list of preset names (static). */
const char *const *q_plan_preset_names(void);
/* One-line description of a preset, NULL for an unknown name. */
const char *q_plan_preset_desc(const char *name);

/* Resolution of one tensor. */
typedef struct q_resolved {
    int rule;            /* index of the deciding rule, -1 when none matched */
    q_method method;     /* Q_METHOD_KEEP when kept */
    q_fmt_spec fmt;      /* the format that will be used (after fallback) */
    q_fmt_spec wanted;   /* the format the rule asked for */
    bool fallback;       /* fmt differs from wanted because of the row length */
    bool kept;           /* stored as is (keep, 1-D tensor, or no rule) */
    char note[160];      /* "row length 172 is not a multiple of 256 (q4_k): q5_0, ..." */
} q_resolved;

/* Resolves every tensor of m (out has m->n_tensors entries). Only tensors
 * llama.cpp would quantize (llama-quant.cpp tensor_allows_quantization: 2-D or
 * more, GGUF name ending in "weight", not a norm, gate_inp, position embedding
 * ...) take a format; the others are kept (note says so when a rule asked for
 * another type), and so are tensors of a stored type qtune cannot read.
 * kept tensors have fmt = wanted = the stored type's format (f32 when it has
 * none). Fallbacks when the row length does not fit the block
 * (tensor_type_fallback): q4_k→q5_0, q5_k→q5_1, q6_k→q8_0, q2_k/q3_k→q4_0, then
 * f16 when that does not fit either; formats without a llama.cpp fallback
 * (q8_0, q4_0, q5_0, iq4_nl, ...) and grid formats whose group does not divide
 * the row go to f16 where llama.cpp would stop. Rules that match no tensor are
 * reported through *unmatched (rule indices ascending, caller frees; NULL when
 * none) and *n_unmatched (either may be NULL). A plan whose fingerprint differs
 * from m's is Q_EDATA unless force; a plan without one is accepted. */
q_status q_plan_resolve(const q_plan *p, const q_model *m, bool force, q_resolved *out,
                        int **unmatched, int *n_unmatched, q_err *err);

/* Writes the equivalent llama-quantize --tensor-type-file for a resolved plan
 * on m: one "^escaped\.gguf\.name$=type" line per tensor llama.cpp quantizes
 * whose type differs from the base type (q_plan_llama_ftype), in model order.
 * The regex is ECMAScript (std::regex) with [a-z0-9_] literal, '.' as "\." and
 * every other byte as "\xHH", so llama-quantize's lower-casing of the pattern
 * and its whitespace splitting leave it intact. Exact with
 * `llama-quantize --pure --tensor-type-file FILE IN OUT BASE` (--pure turns off
 * llama.cpp's own mixture; overrides and fallbacks still apply). Kept matrices
 * get their stored type. Q_EUSAGE when a tensor's format has no llama-quantize
 * type (grid formats) or its method is not rtn/wsearch/keep; Q_EIO. p is
 * unused (kept for the API). */
q_status q_plan_export_llama(const q_plan *p, const q_model *m, const q_resolved *res,
                             FILE *fp, q_err *err);

/* The llama-quantize type argument for the base of q_plan_export_llama: the
 * quantized format most matrices get ("Q4_K_M" for q4_k, "Q8_0", ...; "Q8_0"
 * when no matrix gets a quantized format). Static string. */
const char *q_plan_llama_ftype(const q_model *m, const q_resolved *res);

#endif
