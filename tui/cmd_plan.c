/* cmd_plan.c — `qtune plan`: make a plan from a preset, explain what a plan
 * does to each tensor of a model, export it for llama-quantize.
 *
 *   qtune plan MODEL --preset NAME [-o PLAN]
 *   qtune plan --list-presets
 *   qtune plan explain PLAN MODEL [--force] [--strict]
 *   qtune plan export PLAN MODEL --llama-quantize [-o FILE] [--force]
 *
 * Data (plans, tables, type files) go to stdout unless -o names a file, which
 * is written atomically; messages go to stderr. Exit codes as q_status: 64
 * usage, 65 bad plan or model data, 66 cannot open, 73 cannot create.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "q_dtype.h"
#include "q_io.h"
#include "q_model.h"
#include "q_plan.h"

typedef enum plan_sub { SUB_MAKE, SUB_EXPLAIN, SUB_EXPORT } plan_sub;

static const char *const g_sub_names[] = {"plan", "plan explain", "plan export"};

static void plan_usage(FILE *fp)
{
    fputs("usage: qtune plan MODEL --preset NAME [-o PLAN]   make a plan from a preset\n"
          "       qtune plan --list-presets                  list the presets\n"
          "       qtune plan explain PLAN MODEL [--force] [--strict]\n"
          "           one line per tensor: shape, wanted and resolved format, method,\n"
          "           the deciding rule and any fallback note\n"
          "       qtune plan export PLAN MODEL --llama-quantize [-o FILE] [--force]\n"
          "           write the llama-quantize --tensor-type-file that does the same\n"
          "  -o, --output FILE  write to FILE (atomically) instead of stdout\n"
          "  --force            use a plan made for another model (fingerprint differs)\n"
          "  --strict           rules that match no tensor are errors (exit 65)\n"
          "  -h, --help         this help\n",
          fp);
}

typedef struct plan_args {
    plan_sub sub;
    const char *pos[4];
    int n_pos;
    const char *preset, *out, *target_bpw;
    bool list, force, strict, llama, help;
} plan_args;

/* Options: name, takes a value, subcommands allowed (bit mask). */
static const struct {
    const char *name;
    bool value;
    unsigned subs;
} g_plan_opts[] = {
    {"--preset", true, 1u << SUB_MAKE},
    {"--target-bpw", true, 1u << SUB_MAKE},
    {"--list-presets", false, 1u << SUB_MAKE},
    {"--output", true, (1u << SUB_MAKE) | (1u << SUB_EXPORT)},
    {"-o", true, (1u << SUB_MAKE) | (1u << SUB_EXPORT)},
    {"--force", false, (1u << SUB_EXPLAIN) | (1u << SUB_EXPORT)},
    {"--strict", false, 1u << SUB_EXPLAIN},
    {"--llama-quantize", false, 1u << SUB_EXPORT},
    {"--help", false, 7u},
    {"-h", false, 7u},
};

/* Returns 0 or 64 (message printed). */
static int plan_parse_args(int argc, char **argv, plan_args *a)
{
    memset(a, 0, sizeof *a);
    int i = 1;
    a->sub = SUB_MAKE;
    if (argc > 1 && strcmp(argv[1], "explain") == 0) {
        a->sub = SUB_EXPLAIN;
        i = 2;
    } else if (argc > 1 && strcmp(argv[1], "export") == 0) {
        a->sub = SUB_EXPORT;
        i = 2;
    }
    const char *sub = g_sub_names[a->sub];
    bool only_pos = false;
    for (; i < argc; i++) {
        const char *s = argv[i];
        if (only_pos || s[0] != '-' || s[1] == '\0') {
            if (a->n_pos >= 4) {
                cli_errorf("%s: too many arguments ('%s')", sub, s);
                return 64;
            }
            a->pos[a->n_pos++] = s;
            continue;
        }
        if (strcmp(s, "--") == 0) {
            only_pos = true;
            continue;
        }
        const char *eq = strncmp(s, "--", 2) == 0 ? strchr(s, '=') : NULL;
        size_t nlen = eq ? (size_t)(eq - s) : strlen(s);
        size_t k = 0, n = sizeof g_plan_opts / sizeof g_plan_opts[0];
        while (k < n && !(strlen(g_plan_opts[k].name) == nlen &&
                          strncmp(g_plan_opts[k].name, s, nlen) == 0))
            k++;
        if (k == n || !(g_plan_opts[k].subs & (1u << a->sub))) {
            cli_errorf("%s: unknown option '%.*s'", sub, (int)nlen, s);
            return 64;
        }
        const char *val = NULL;
        if (g_plan_opts[k].value) {
            if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                cli_errorf("%s: option '%s' needs a value", sub, s);
                return 64;
            }
        } else if (eq) {
            cli_errorf("%s: option '%.*s' takes no value", sub, (int)nlen, s);
            return 64;
        }
        const char *o = g_plan_opts[k].name;
        if (!strcmp(o, "--preset"))
            a->preset = val;
        else if (!strcmp(o, "--target-bpw"))
            a->target_bpw = val;
        else if (!strcmp(o, "--list-presets"))
            a->list = true;
        else if (!strcmp(o, "--output") || !strcmp(o, "-o"))
            a->out = val;
        else if (!strcmp(o, "--force"))
            a->force = true;
        else if (!strcmp(o, "--strict"))
            a->strict = true;
        else if (!strcmp(o, "--llama-quantize"))
            a->llama = true;
        else
            a->help = true;
    }
    return 0;
}

/* Writes through a callback either to stdout or atomically to path. */
typedef q_status (*plan_writer)(FILE *fp, void *ctx, q_err *err);

static int plan_emit(const char *path, plan_writer fn, void *ctx)
{
    q_err err = {{0}};
    q_status st;
    if (!path || strcmp(path, "-") == 0) {
        st = fn(stdout, ctx, &err);
        if (st != Q_OK)
            cli_errorf("%s", err.msg);
        return (int)st;
    }
    q_atomic a;
    st = q_atomic_open(&a, path, &err);
    if (st == Q_OK) {
        st = fn(a.fp, ctx, &err);
        if (st != Q_OK)
            q_atomic_abort(&a);
        else
            st = q_atomic_commit(&a, &err);
    }
    if (st != Q_OK)
        cli_errorf("%s", err.msg);
    return (int)st;
}

static q_status write_plan_cb(FILE *fp, void *ctx, q_err *err)
{
    return q_plan_write(ctx, fp, err);
}

static void list_presets(FILE *fp)
{
    for (const char *const *n = q_plan_preset_names(); *n; n++)
        fprintf(fp, "%-14s %s\n", *n, q_plan_preset_desc(*n));
}

static int plan_make(const plan_args *a)
{
    if (a->list) {
        list_presets(stdout);
        return 0;
    }
    if (a->target_bpw) {
        cli_errorf("plan: --target-bpw is not available yet; use --preset NAME");
        return 64;
    }
    if (a->n_pos != 1) {
        cli_errorf(a->n_pos ? "plan: one MODEL expected" : "plan: MODEL is missing");
        plan_usage(stderr);
        return 64;
    }
    if (!a->preset) {
        cli_errorf("plan: --preset NAME is required (see --list-presets)");
        return 64;
    }
    if (!q_plan_preset_desc(a->preset)) {
        cli_errorf("plan: unknown preset '%s'; the presets are:", a->preset);
        list_presets(stderr);
        return 64;
    }
    q_err err = {{0}};
    q_model *m = NULL;
    q_plan *p = NULL;
    q_status st = q_model_open(a->pos[0], &m, &err);
    if (st == Q_OK)
        st = q_plan_preset(m, a->preset, &p, &err);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        q_model_close(m);
        return (int)st;
    }
    int rc = plan_emit(a->out, write_plan_cb, p);
    if (rc == 0 && a->out && strcmp(a->out, "-") != 0)
        fprintf(stderr, "qtune plan: wrote %s: preset %s for %s, %d rules\n", a->out,
                a->preset, a->pos[0], p->n_rules);
    q_plan_free(p);
    q_model_close(m);
    return rc;
}

/* Plan + model + resolution shared by explain and export. */
typedef struct plan_job {
    q_plan *plan;
    q_model *model;
    q_resolved *res;
    int *unmatched;
    int n_unmatched;
} plan_job;

static void job_free(plan_job *j)
{
    q_plan_free(j->plan);
    q_model_close(j->model);
    free(j->res);
    free(j->unmatched);
}

static int job_open(const plan_args *a, plan_job *j)
{
    memset(j, 0, sizeof *j);
    const char *sub = g_sub_names[a->sub];
    if (a->n_pos != 2) {
        cli_errorf("%s: PLAN and MODEL expected", sub);
        plan_usage(stderr);
        return 64;
    }
    q_err err = {{0}};
    q_status st = q_plan_load(a->pos[0], &j->plan, &err);
    if (st == Q_OK)
        st = q_model_open(a->pos[1], &j->model, &err);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        return (int)st;
    }
    char fp[17];
    q_model_fingerprint(j->model, fp);
    if (j->plan->fingerprint[0] && strcmp(fp, j->plan->fingerprint) != 0) {
        if (!a->force) {
            cli_errorf("%s: made for another model (%s, fingerprint %s); %s has fingerprint %s: "
                       "use --force to apply it anyway", a->pos[0],
                       j->plan->model_name ? j->plan->model_name : "unnamed",
                       j->plan->fingerprint, a->pos[1], fp);
            return 65;
        }
        fprintf(stderr,
                "qtune: warning: %s was made for another model (fingerprint %s, this one %s); "
                "going on (--force)\n", a->pos[0], j->plan->fingerprint, fp);
    }
    j->res = calloc(j->model->n_tensors ? j->model->n_tensors : 1, sizeof *j->res);
    if (!j->res) {
        cli_errorf("out of memory");
        return 71;
    }
    st = q_plan_resolve(j->plan, j->model, a->force, j->res, &j->unmatched, &j->n_unmatched,
                        &err);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        return (int)st;
    }
    return 0;
}

/* Copy of s for one table cell: control characters as '?', at most max
 * characters ("..." when cut). */
static void cell_str(const char *s, char *buf, size_t cap, size_t max)
{
    size_t o = 0, n = strlen(s);
    if (max + 4 > cap)
        max = cap - 4;
    for (size_t i = 0; i < n && o < max; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (n > max) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
}

static void shape_str(const q_tensor *t, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int d = (int)t->n_dims - 1; d >= 0 && off < cap; d--)
        off += (size_t)snprintf(buf + off, cap - off, "%s%lld", off ? "x" : "",
                                (long long)t->ne[d]);
}

static void rule_str(const q_plan *p, int k, char *buf, size_t cap)
{
    char pat[64];
    if (k < 0) {
        snprintf(buf, cap, "(no rule: kept)");
        return;
    }
    cell_str(p->rules[k].pattern, pat, sizeof pat, 40);
    if (p->rules[k].line > 0)
        snprintf(buf, cap, "line %d: %s", p->rules[k].line, pat);
    else
        snprintf(buf, cap, "rule %d: %s", k + 1, pat);
}

static void lower_str(const char *s, char *buf, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        buf[i] = (char)tolower((unsigned char)s[i]);
    buf[i] = '\0';
}

static void resolved_str(const q_tensor *t, const q_resolved *r, char *buf, size_t cap)
{
    if (r->kept)
        lower_str(q_dtype_name(t->dtype), buf, cap);
    else
        q_fmt_name(&r->fmt, buf, cap);
}

static void wanted_str(const q_plan *p, const q_resolved *r, char *buf, size_t cap)
{
    if (r->rule < 0 || p->rules[r->rule].method == Q_METHOD_KEEP)
        snprintf(buf, cap, "-");
    else
        q_fmt_name(&r->wanted, buf, cap);
}

static int plan_explain(const plan_args *a)
{
    plan_job j;
    int rc = job_open(a, &j);
    if (rc != 0) {
        job_free(&j);
        return rc;
    }
    const q_model *m = j.model;
    int wn = 6, ws = 5, wr = 4;
    char name[96], shape[64], rule[96], want[32], got[32];
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        cell_str(m->tensors[i].name, name, sizeof name, 60);
        shape_str(&m->tensors[i], shape, sizeof shape);
        rule_str(j.plan, j.res[i].rule, rule, sizeof rule);
        if ((int)strlen(name) > wn)
            wn = (int)strlen(name);
        if ((int)strlen(shape) > ws)
            ws = (int)strlen(shape);
        if ((int)strlen(rule) > wr)
            wr = (int)strlen(rule);
    }
    printf("%-*s  %-*s  %-8s  %-8s  %-7s  %-*s  %s\n", wn, "tensor", ws, "shape", "wanted",
           "resolved", "method", wr, "rule", "note");
    int n_quant = 0, n_kept = 0, n_fb = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        const q_resolved *r = &j.res[i];
        cell_str(t->name, name, sizeof name, 60);
        shape_str(t, shape, sizeof shape);
        rule_str(j.plan, r->rule, rule, sizeof rule);
        wanted_str(j.plan, r, want, sizeof want);
        resolved_str(t, r, got, sizeof got);
        printf("%-*s  %-*s  %-8s  %-8s  %-7s  ", wn, name, ws, shape, want, got,
               q_method_name(r->method));
        if (r->note[0])
            printf("%-*s  %s\n", wr, rule, r->note);
        else
            printf("%s\n", rule);
        n_quant += !r->kept;
        n_kept += r->kept;
        n_fb += r->fallback;
    }
    fprintf(stderr,
            "qtune plan explain: %llu tensors: %d converted (%d by fallback), %d kept; "
            "%d rules, %d matching no tensor\n",
            (unsigned long long)m->n_tensors, n_quant, n_fb, n_kept, j.plan->n_rules,
            j.n_unmatched);
    for (int k = 0; k < j.n_unmatched; k++) {
        const q_plan_rule *r = &j.plan->rules[j.unmatched[k]];
        char pat[64];
        cell_str(r->pattern, pat, sizeof pat, 40);
        if (a->strict)
            fprintf(stderr, "qtune: %s:%d: rule '%s' matches no tensor (--strict)\n", a->pos[0],
                    r->line, pat);
        else
            fprintf(stderr, "qtune: warning: %s:%d: rule '%s' matches no tensor\n", a->pos[0],
                    r->line, pat);
    }
    rc = a->strict && j.n_unmatched > 0 ? 65 : 0;
    job_free(&j);
    return rc;
}

typedef struct export_ctx {
    plan_job *job;
} export_ctx;

static q_status write_export_cb(FILE *fp, void *ctx, q_err *err)
{
    plan_job *j = ((export_ctx *)ctx)->job;
    return q_plan_export_llama(j->plan, j->model, j->res, fp, err);
}

static int plan_export(const plan_args *a)
{
    if (!a->llama) {
        cli_errorf("plan export: say which format: --llama-quantize");
        return 64;
    }
    plan_job j;
    int rc = job_open(a, &j);
    if (rc != 0) {
        job_free(&j);
        return rc;
    }
    export_ctx ctx = {&j};
    rc = plan_emit(a->out, write_export_cb, &ctx);
    if (rc == 0) {
        const q_model *m = j.model;
        bool wsearch = false, requant = false;
        for (uint64_t i = 0; i < m->n_tensors; i++) {
            const q_dtype_traits *tr = q_dtype_get(m->tensors[i].dtype);
            wsearch |= !j.res[i].kept && j.res[i].method == Q_METHOD_WSEARCH;
            requant |= tr && tr->blck > 1;
        }
        bool file = a->out && strcmp(a->out, "-") != 0;
        char stem[256];
        snprintf(stem, sizeof stem, "%s", a->pos[1]);
        size_t n = strlen(stem);
        while (n > 1 && stem[n - 1] == '/')
            stem[--n] = '\0';
        if (n > 5 && strcmp(stem + n - 5, ".gguf") == 0)
            stem[n - 5] = '\0';
        fprintf(stderr,
                "qtune plan export: run\n"
                "  llama-quantize --pure%s%s --tensor-type-file %s %s%s %s-qtune.gguf %s\n",
                wsearch ? " --imatrix IMATRIX.gguf" : "", requant ? " --allow-requantize" : "",
                file ? a->out : "TYPES.txt", m->kind == Q_MODEL_GGUF ? a->pos[1] : stem,
                m->kind == Q_MODEL_GGUF ? "" : ".gguf", stem,
                q_plan_llama_ftype(m, j.res));
        if (m->kind != Q_MODEL_GGUF)
            fprintf(stderr, "  (convert %s to GGUF first, e.g. with llama.cpp's "
                            "convert_hf_to_gguf.py; the file uses GGUF tensor names)\n",
                    a->pos[1]);
        if (wsearch)
            fprintf(stderr, "  (wsearch tensors need llama.cpp's importance matrix; "
                            "llama-quantize uses it for every tensor it has data for)\n");
    }
    job_free(&j);
    return rc;
}

int cmd_plan(int argc, char **argv)
{
    plan_args a;
    int rc = plan_parse_args(argc, argv, &a);
    if (rc != 0) {
        plan_usage(stderr);
        return rc;
    }
    if (a.help) {
        plan_usage(stdout);
        return 0;
    }
    switch (a.sub) {
    case SUB_EXPLAIN:
        return plan_explain(&a);
    case SUB_EXPORT:
        return plan_export(&a);
    default:
        return plan_make(&a);
    }
}
