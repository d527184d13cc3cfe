/* tui.c — qtune's interactive view: application state, the layer tree, the
 * right-hand tabs, keys, commands and the main loop. Only this thread calls
 * curses; previews come from tui_worker.c through tui_worker_poll. */
#include <curses.h>
#include <errno.h>
#include <fnmatch.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "an_calib.h"
#include "an_stats.h"
#include "k_cuda_fused.h"
#include "k_preview.h"
#include "q_imatrix.h"
#include "q_plan.h"
#include "tui.h"

enum { TAB_HIST, TAB_OUTLIERS, TAB_ERROR, TAB_INFO, TAB_COUNT };
static const char *const tab_names[TAB_COUNT] = {"Histogram", "Outliers", "Error", "Info"};
enum { SORT_NAME, SORT_SIZE, SORT_ERROR, SORT_COUNT };
static const char *const sort_names[SORT_COUNT] = {"name", "size", "error"};
enum { ROW_TENSOR, ROW_BLOCK };
/* An input channel whose activation RMS exceeds this multiple of the median
 * channel's is marked as an outlier on the Outliers tab. */
#define ACT_OUTLIER_X 6.0
enum { MODE_NORMAL, MODE_HELP, MODE_QUIT_ASK, MODE_PRESET, MODE_RECOVER };

/* The ladder `+`/`-` walk, most bits first. */
static const q_format_id ladder[] = {Q_FMT_F16, Q_FMT_Q8_0, Q_FMT_Q6_K, Q_FMT_Q5_K,
                                     Q_FMT_Q4_K, Q_FMT_Q3_K, Q_FMT_Q2_K};
#define LADDER_N ((int)(sizeof ladder / sizeof ladder[0]))
/* The "what if" table: every ggml format. */
static const q_format_id whatif_fmts[] = {
    Q_FMT_F16, Q_FMT_BF16, Q_FMT_Q8_0, Q_FMT_Q6_K, Q_FMT_Q5_1, Q_FMT_Q5_0, Q_FMT_Q5_K,
    Q_FMT_Q4_1, Q_FMT_Q4_0, Q_FMT_Q4_K, Q_FMT_IQ4_NL, Q_FMT_Q3_K, Q_FMT_Q2_K};
#define WHATIF_N ((int)(sizeof whatif_fmts / sizeof whatif_fmts[0]))

typedef struct tui_ts {
    q_resolved res;
    const float *im;    /* imatrix row (cols floats) or NULL; borrowed */
    bool have, exact, failed, pending;
    bool on_gpu;        /* the exact figures came from the CUDA device */
    q_fmt_spec pfmt;    /* what the preview figures are for */
    q_method pmethod;
    uint64_t gen;       /* newest request */
    q_metrics m;
    double oe;          /* output error on the imatrix's activation sample, or NaN */
    char fail[160];
    bool marked;
} tui_ts;

typedef struct tui_wi {
    bool have, exact, failed, na, pending;
    q_metrics m;
    double oe;          /* output error, or NaN */
} tui_wi;

typedef struct tui_row {
    int kind;
    int64_t t;  /* tensor index (ROW_TENSOR) or first tensor of the block */
    int block;
} tui_row;

static struct app {
    q_model *m;
    q_plan *plan;
    q_imatrix *im;
    q_imatrix *old_im[8]; /* replaced imatrices stay alive for the worker */
    int n_old_im;
    char plan_path[PATH_MAX];
    char rec_path[PATH_MAX];
    char fp[17];
    char *saved_text;     /* plan text at the last save/load */
    bool dirty;
    bool save_resolved;   /* the last :save had --resolved: w keeps doing so */
    tui_ts *ts;
    int nblocks;
    bool *folded;         /* per block */
    tui_row *rows;
    int nrows, sel, top;
    int tab, sort, mode, preset_sel;
    bool err_db, hist_log, running;
    char search[256];
    char msg[512];
    bool msg_err;
    char **undo, **redo;
    int nundo, nredo;
    int64_t wi_t;
    tui_wi wi[WHATIF_N];
    /* sample of the selected tensor for Histogram/Outliers (owned), and what
     * is derived from it (see load_sample) */
    int64_t smp_t;
    float *smp;
    int64_t smp_rows, smp_step;
    double smp_lo, smp_hi;
    bool blk_ok;
    float blk_am, blk_mn, blk_mx;  /* medians over 32-value blocks */
    float *colmax, colmax_top, col_med;
    int64_t *hist_cnt;
    int hist_bins;
    float *pool;
    int pool_cx, pool_cy;
    /* activation RMS per input channel of the sampled tensor (imatrix) */
    const float *act_src;
    int64_t act_t, act_n, act_top[8];
    float *act, act_med, act_max, act_min;
    int act_n_out, act_n_top;
    an_extra *ex;          /* qtune's extra calibration statistics, or NULL */
    int64_t stats_t;
    an_stats stats;
    bool stats_ok, stats_pending;
    char stats_err[160];
    int left_w;
    bool have_oe;          /* some result carried an output error (imatrix sample) */
    bool gpu_told;         /* the GPU path's failure was shown */
    /* model-level KL divergence (:kld, K) */
    char kld_path[PATH_MAX];
    int64_t kld_ctx_arg;   /* as asked (0: default) */
    uint64_t kld_gen;      /* the job whose results count; 0: none */
    bool kld_running, kld_have;
    int64_t kld_done, kld_total, kld_ctx;
    an_kld_result kld;
} A;

/* ---------- small helpers ---------- */

static void msgf(bool err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msgf(bool err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(A.msg, sizeof A.msg, fmt, ap);
    va_end(ap);
    A.msg_err = err;
}

static const char *human_count(int64_t n, char *buf, size_t cap)
{
    if (n >= 1000000000)
        snprintf(buf, cap, "%.1fB", (double)n / 1e9);
    else if (n >= 1000000)
        snprintf(buf, cap, "%.1fM", (double)n / 1e6);
    else if (n >= 1000)
        snprintf(buf, cap, "%.1fK", (double)n / 1e3);
    else
        snprintf(buf, cap, "%lld", (long long)n);
    return buf;
}

static const char *human_bytes(uint64_t n, char *buf, size_t cap)
{
    if (n >= (1ull << 30))
        snprintf(buf, cap, "%.2f GiB", (double)n / (1ull << 30));
    else if (n >= (1ull << 20))
        snprintf(buf, cap, "%.2f MiB", (double)n / (1ull << 20));
    else
        snprintf(buf, cap, "%.1f KiB", (double)n / 1024.0);
    return buf;
}

static bool fmt_eq(const q_fmt_spec *a, const q_fmt_spec *b)
{
    return a->id == b->id && a->bits == b->bits && a->group == b->group;
}

static void glob_escape(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 3 < cap; s++) {
        if (*s == '*' || *s == '?' || *s == '[' || *s == '\\')
            out[o++] = '\\';
        out[o++] = *s;
    }
    out[o] = 0;
}

static void mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0700);
            *p = '/';
        }
    }
}

static const q_tensor *T(int64_t i)
{
    return &A.m->tensors[i];
}

static bool quantizable(int64_t i)
{
    return T(i)->n_dims >= 2 && T(i)->readable;
}

/* ---------- plan resolution and previews ---------- */

static void request_preview(int64_t i)
{
    tui_ts *s = &A.ts[i];
    if (s->res.kept || s->res.method == Q_METHOD_KEEP) {
        s->pending = false;
        return;
    }
    if (s->have && !s->failed && fmt_eq(&s->pfmt, &s->res.fmt) && s->pmethod == s->res.method)
        return;
    if (s->pending && fmt_eq(&s->pfmt, &s->res.fmt) && s->pmethod == s->res.method)
        return;
    s->pfmt = s->res.fmt;
    s->pmethod = s->res.method;
    s->have = false;
    s->failed = false;
    s->pending = true;
    s->gen = tui_worker_push(i, TUI_JOB_PLAN, &s->res.fmt, s->res.method, s->im, false);
}

static void resolve_plan(void)
{
    q_resolved *res = calloc((size_t)A.m->n_tensors, sizeof *res);
    if (!res) {
        msgf(true, "out of memory");
        return;
    }
    q_err err = {{0}};
    q_status st = q_plan_resolve(A.plan, A.m, false, res, NULL, NULL, &err);
    if (st == Q_EDATA) {
        st = q_plan_resolve(A.plan, A.m, true, res, NULL, NULL, &err);
        if (st == Q_OK)
            msgf(true, "plan fingerprint differs from the model's (resolved anyway)");
    }
    if (st != Q_OK) {
        msgf(true, "%s", err.msg);
        free(res);
        return;
    }
    for (uint64_t i = 0; i < A.m->n_tensors; i++)
        A.ts[i].res = res[i];
    free(res);
    /* Newest first: push bottom-up so the top of the model is measured first. */
    for (int64_t i = (int64_t)A.m->n_tensors - 1; i >= 0; i--)
        request_preview(i);
    char *txt = q_plan_text(A.plan);
    A.dirty = !(txt && A.saved_text && !strcmp(txt, A.saved_text));
    free(txt);
}

static void attach_imatrix(void)
{
    for (uint64_t i = 0; i < A.m->n_tensors; i++) {
        A.ts[i].im = NULL;
        if (!A.im)
            continue;
        const q_imatrix_entry *e = q_imatrix_find(A.im, T((int64_t)i)->gguf_name);
        if (e && e->n == T((int64_t)i)->cols)
            A.ts[i].im = e->values;
        A.ts[i].have = false; /* weighted figures change */
    }
}

/* A KLD progress or final result from the worker. */
static void kld_result(const tui_result *r)
{
    if (r->gen != A.kld_gen)
        return; /* a cancelled or replaced job */
    if (!r->exact && !r->failed) {
        A.kld_done = r->kld_done;
        A.kld_total = r->kld_total;
        return;
    }
    A.kld_running = false;
    A.kld_gen = 0;
    if (r->failed) {
        msgf(true, "%s", r->msg);
        return;
    }
    A.kld_have = true;
    A.kld = r->kld;
    A.kld_ctx = r->kld_ctx;
    msgf(false, "kld: mean %.5f p99 %.5f max %.5f  top1 %.2f%%  ppl %.4f -> %.4f (%lld tok)",
         A.kld.kld_mean, A.kld.kld_p99, A.kld.kld_max, 100.0 * A.kld.top1, A.kld.ppl_base,
         A.kld.ppl_quant, (long long)A.kld.n_tokens);
}

/* Starts :kld on the current plan (the worker runs it); path NULL: the last file. */
static void kld_start(const char *path, int64_t ctx)
{
    if (path && access(path, R_OK) != 0) {
        msgf(true, "%s: cannot read: %s", path, strerror(errno));
        return;
    }
    if (path) {
        snprintf(A.kld_path, sizeof A.kld_path, "%s", path);
        A.kld_ctx_arg = ctx;
    }
    if (!A.kld_path[0]) {
        msgf(true, "usage: :kld TEXTFILE [CTX]  (K repeats the last one)");
        return;
    }
    q_resolved *res = calloc(A.m->n_tensors ? (size_t)A.m->n_tensors : 1, sizeof *res);
    if (!res) {
        msgf(true, "out of memory");
        return;
    }
    for (uint64_t i = 0; i < A.m->n_tensors; i++)
        res[i] = A.ts[i].res;
    uint64_t gen = tui_worker_kld(A.kld_path, A.kld_ctx_arg, res, A.im);
    free(res);
    if (!gen) {
        msgf(true, "out of memory");
        return;
    }
    A.kld_gen = gen;
    A.kld_running = true;
    A.kld_done = A.kld_total = 0;
    msgf(false, "kld %s: running (Esc cancels)", A.kld_path);
}

static void kld_cancel(void)
{
    tui_worker_kld_cancel();
    A.kld_running = false;
    A.kld_gen = 0;
    msgf(false, "kld cancelled");
}

/* Takes the worker's results; returns how many came. */
static int poll_results(void)
{
    tui_result r[64];
    int n, total = 0;
    while ((n = tui_worker_poll(r, 64)) > 0) {
        total += n;
        for (int k = 0; k < n; k++) {
            if (r[k].kind == TUI_JOB_KLD) {
                kld_result(&r[k]);
                continue;
            }
            if (r[k].tensor < 0 || (uint64_t)r[k].tensor >= A.m->n_tensors)
                continue;
            if (r[k].kind == TUI_JOB_PLAN) {
                tui_ts *s = &A.ts[r[k].tensor];
                if (r[k].gen != s->gen)
                    continue; /* a stale request */
                s->have = !r[k].failed;
                s->failed = r[k].failed;
                s->exact = r[k].exact;
                s->on_gpu = r[k].on_gpu;
                s->m = r[k].m;
                s->oe = r[k].exact ? r[k].out_err : NAN;
                A.have_oe = A.have_oe || !isnan(s->oe);
                snprintf(s->fail, sizeof s->fail, "%s", r[k].msg);
                if (r[k].exact || r[k].failed)
                    s->pending = false;
            } else if (r[k].kind == TUI_JOB_STATS) {
                if (r[k].tensor != A.stats_t)
                    continue;
                A.stats_pending = false;
                A.stats_ok = !r[k].failed;
                A.stats = r[k].stats;
                snprintf(A.stats_err, sizeof A.stats_err, "%s", r[k].msg);
            } else if (r[k].tensor == A.wi_t) {
                for (int f = 0; f < WHATIF_N; f++) {
                    if (r[k].fmt.id != whatif_fmts[f])
                        continue;
                    A.wi[f].have = !r[k].failed;
                    A.wi[f].failed = r[k].failed;
                    A.wi[f].exact = r[k].exact;
                    A.wi[f].m = r[k].m;
                    A.wi[f].oe = r[k].exact ? r[k].out_err : NAN;
                    A.have_oe = A.have_oe || !isnan(A.wi[f].oe);
                    if (r[k].exact || r[k].failed)
                        A.wi[f].pending = false;
                }
            }
        }
    }
    /* the GPU failed once: said once, on the status line */
    char why[sizeof A.msg - 64];
    if (total > 0 && !A.gpu_told && k_preview_gpu_failed(why, sizeof why)) {
        A.gpu_told = true;
        msgf(true, "GPU failed, previews on the CPU: %s", why);
    }
    return total;
}

/* ---------- the tree ---------- */

static double ts_err_key(int64_t i)
{
    const tui_ts *s = &A.ts[i];
    if (s->res.kept || !s->have)
        return -1;
    return s->m.rel_rmse;
}

static int cmp_size(const void *a, const void *b)
{
    const tui_row *x = a, *y = b;
    uint64_t bx = T(x->t)->bytes, by = T(y->t)->bytes;
    return bx < by ? 1 : bx > by ? -1 : (x->t > y->t) - (x->t < y->t);
}

static int cmp_err(const void *a, const void *b)
{
    const tui_row *x = a, *y = b;
    double ex = ts_err_key(x->t), ey = ts_err_key(y->t);
    return ex < ey ? 1 : ex > ey ? -1 : (x->t > y->t) - (x->t < y->t);
}

static void build_rows(void)
{
    int64_t keep_t = -1;
    int keep_kind = ROW_TENSOR, keep_block = -1;
    if (A.nrows > 0 && A.sel < A.nrows) {
        keep_t = A.rows[A.sel].t;
        keep_kind = A.rows[A.sel].kind;
        keep_block = A.rows[A.sel].block;
    }
    int n = 0;
    int64_t nt = (int64_t)A.m->n_tensors;
    if (A.sort != SORT_NAME) {
        for (int64_t i = 0; i < nt; i++)
            A.rows[n++] = (tui_row){ROW_TENSOR, i, T(i)->block};
        qsort(A.rows, (size_t)n, sizeof *A.rows, A.sort == SORT_SIZE ? cmp_size : cmp_err);
    } else {
        bool *seen = calloc((size_t)A.nblocks + 1, 1);
        for (int64_t i = 0; i < nt; i++) {
            int b = T(i)->block;
            if (b < 0 || b >= A.nblocks) {
                A.rows[n++] = (tui_row){ROW_TENSOR, i, -1};
                continue;
            }
            if (seen && seen[b])
                continue;
            if (seen)
                seen[b] = true;
            A.rows[n++] = (tui_row){ROW_BLOCK, i, b};
            if (!A.folded[b])
                for (int64_t j = i; j < nt; j++)
                    if (T(j)->block == b)
                        A.rows[n++] = (tui_row){ROW_TENSOR, j, b};
        }
        free(seen);
    }
    A.nrows = n;
    A.sel = 0;
    for (int r = 0; r < n; r++) {
        bool hit = keep_kind == ROW_BLOCK ? (A.rows[r].kind == ROW_BLOCK &&
                                             A.rows[r].block == keep_block)
                                          : (A.rows[r].kind == ROW_TENSOR &&
                                             A.rows[r].t == keep_t);
        if (hit) {
            A.sel = r;
            break;
        }
        /* A tensor inside a block just folded: select the block. */
        if (keep_kind == ROW_TENSOR && A.rows[r].kind == ROW_BLOCK &&
            A.rows[r].block == keep_block && keep_block >= 0 && A.folded[keep_block])
            A.sel = r;
    }
}

static int64_t sel_tensor(void)
{
    if (A.nrows == 0)
        return -1;
    return A.rows[A.sel].t;
}

/* Tensors the next edit applies to: the marked ones, else the selected row
 * (all of a block's tensors for a block row). out holds n_tensors entries. */
static int edit_targets(int64_t *out)
{
    int n = 0;
    for (uint64_t i = 0; i < A.m->n_tensors; i++)
        if (A.ts[i].marked)
            out[n++] = (int64_t)i;
    if (n || A.nrows == 0)
        return n;
    const tui_row *r = &A.rows[A.sel];
    if (r->kind == ROW_BLOCK) {
        for (uint64_t i = 0; i < A.m->n_tensors; i++)
            if (T((int64_t)i)->block == r->block)
                out[n++] = (int64_t)i;
    } else {
        out[n++] = r->t;
    }
    return n;
}

/* ---------- editing, undo ---------- */

static void snapshot(void)
{
    char *txt = q_plan_text(A.plan);
    if (!txt)
        return;
    char **u = realloc(A.undo, (size_t)(A.nundo + 1) * sizeof *u);
    if (!u) {
        free(txt);
        return;
    }
    A.undo = u;
    A.undo[A.nundo++] = txt;
    for (int i = 0; i < A.nredo; i++)
        free(A.redo[i]);
    A.nredo = 0;
}

static bool replace_plan_text(const char *txt)
{
    q_plan *p = NULL;
    q_err err = {{0}};
    if (q_plan_parse(txt, strlen(txt), "(undo)", &p, &err) != Q_OK) {
        msgf(true, "%s", err.msg);
        return false;
    }
    q_plan_free(A.plan);
    A.plan = p;
    resolve_plan();
    return true;
}

static void undo_redo(bool redo)
{
    char ***from = redo ? &A.redo : &A.undo, ***to = redo ? &A.undo : &A.redo;
    int *nfrom = redo ? &A.nredo : &A.nundo, *nto = redo ? &A.nundo : &A.nredo;
    if (*nfrom == 0) {
        msgf(false, "nothing to %s", redo ? "redo" : "undo");
        return;
    }
    char *cur = q_plan_text(A.plan);
    char **t = realloc(*to, (size_t)(*nto + 1) * sizeof *t);
    if (!cur || !t) {
        free(cur);
        if (t)
            *to = t;
        return;
    }
    *to = t;
    (*to)[(*nto)++] = cur;
    char *txt = (*from)[--(*nfrom)];
    replace_plan_text(txt);
    free(txt);
    msgf(false, "%s (%d more)", redo ? "redone" : "undone", *nfrom);
}

/* Sets format fmt (method kept unless keep-only) on tensors idx[0..n) by
 * replacing their own exact-name rules with new ones at the end. */
static void set_tensors(const int64_t *idx, int n, const q_fmt_spec *fmts)
{
    q_plan *np = q_plan_new(A.m);
    q_err err = {{0}};
    if (!np)
        return;
    char esc[1024];
    for (int r = 0; r < A.plan->n_rules; r++) {
        const q_plan_rule *rule = &A.plan->rules[r];
        bool drop = false;
        for (int k = 0; k < n && !drop; k++) {
            glob_escape(T(idx[k])->name, esc, sizeof esc);
            drop = !strcmp(rule->pattern, esc);
        }
        if (drop)
            continue;
        if (q_plan_add(np, rule->pattern, &rule->fmt, rule->method, rule->options, &err) !=
            Q_OK)
            goto fail;
    }
    for (int k = 0; k < n; k++) {
        q_method meth = A.ts[idx[k]].res.method == Q_METHOD_WSEARCH ? Q_METHOD_WSEARCH
                                                                    : Q_METHOD_RTN;
        glob_escape(T(idx[k])->name, esc, sizeof esc);
        if (q_plan_add(np, esc, &fmts[k], meth, "", &err) != Q_OK)
            goto fail;
    }
    snapshot();
    q_plan_free(A.plan);
    A.plan = np;
    resolve_plan();
    return;
fail:
    msgf(true, "%s", err.msg);
    q_plan_free(np);
}

static void step_format(int dir)
{
    int64_t *idx = malloc(A.m->n_tensors * sizeof *idx);
    q_fmt_spec *fm = malloc(A.m->n_tensors * sizeof *fm);
    int n = 0, skipped = 0;
    int64_t *all = malloc(A.m->n_tensors * sizeof *all);
    if (!idx || !fm || !all)
        goto out;
    int na = edit_targets(all);
    for (int k = 0; k < na; k++) {
        int64_t i = all[k];
        if (!quantizable(i)) {
            skipped++;
            continue;
        }
        const tui_ts *s = &A.ts[i];
        int pos = -1;
        for (int l = 0; l < LADDER_N; l++)
            if (s->res.wanted.id == ladder[l])
                pos = l;
        if (pos < 0) {
            /* Not on the ladder (f32, q4_0, ...): start from the nearest bpw. */
            double bpw = q_fmt_bpw(&s->res.wanted, T(i)->rows, T(i)->cols);
            double best = 1e9;
            for (int l = 0; l < LADDER_N; l++) {
                q_fmt_spec f = {ladder[l], 0, 0};
                double d = fabs(q_fmt_bpw(&f, T(i)->rows, T(i)->cols) - bpw);
                if (d < best) {
                    best = d;
                    pos = l;
                }
            }
            if (s->res.wanted.id == Q_FMT_F32 && dir > 0)
                continue;
            if (s->res.wanted.id == Q_FMT_F32 || s->res.wanted.id == Q_FMT_BF16)
                pos = dir > 0 ? 0 : -1; /* f32 steps down to f16 */
        }
        int np = pos + (dir > 0 ? -1 : 1);
        if (np < 0 || np >= LADDER_N)
            continue;
        idx[n] = i;
        fm[n] = (q_fmt_spec){ladder[np], 0, 0};
        q_fmt_parse(q_format_get(ladder[np])->name, &fm[n]);
        n++;
    }
    if (n == 0) {
        msgf(false, skipped ? "1-D tensors stay as stored" : "already at the %s end of the ladder",
             dir > 0 ? "top" : "bottom");
        goto out;
    }
    set_tensors(idx, n, fm);
    if (!A.msg_err) {
        char name[32];
        q_fmt_name(&fm[0], name, sizeof name);
        if (n == 1) {
            const tui_ts *s = &A.ts[idx[0]];
            if (s->res.fallback)
                msgf(false, "%s: %s (falls back: %s)", T(idx[0])->name, name, s->res.note);
            else
                msgf(false, "%s: %s", T(idx[0])->name, name);
        } else {
            msgf(false, "%d tensors stepped %s", n, dir > 0 ? "up" : "down");
        }
    }
out:
    free(idx);
    free(fm);
    free(all);
}

static void apply_preset(const char *name)
{
    q_plan *p = NULL;
    q_err err = {{0}};
    if (q_plan_preset(A.m, name, &p, &err) != Q_OK) {
        msgf(true, "%s", err.msg);
        return;
    }
    snapshot();
    q_plan_free(A.plan);
    A.plan = p;
    resolve_plan();
    msgf(false, "preset %s applied (%d rules)", name, p->n_rules);
}

/* The plan as saved with --resolved: the rules, then one exact-name row per
 * tensor in model order with the format and method it resolves to (fallbacks
 * applied, kept tensors as keep), so the file alone says what every tensor
 * becomes. NULL with a message on failure. */
static q_plan *resolved_plan(void)
{
    q_err err = {{0}};
    q_plan *np = q_plan_new(A.m);
    q_resolved *res = calloc(A.m->n_tensors ? A.m->n_tensors : 1, sizeof *res);
    if (!np || !res) {
        msgf(true, "out of memory");
        goto fail;
    }
    if (q_plan_resolve(A.plan, A.m, true, res, NULL, NULL, &err) != Q_OK)
        goto fail_err;
    for (int r = 0; r < A.plan->n_rules; r++) {
        const q_plan_rule *rule = &A.plan->rules[r];
        if (q_plan_add(np, rule->pattern, &rule->fmt, rule->method, rule->options, &err) !=
            Q_OK)
            goto fail_err;
    }
    char esc[1024];
    for (uint64_t i = 0; i < A.m->n_tensors; i++) {
        const char *name = T((int64_t)i)->name;
        if (strlen(name) * 2 + 1 >= sizeof esc) {
            msgf(true, "tensor name too long for a plan row: %.60s...", name);
            goto fail;
        }
        glob_escape(name, esc, sizeof esc);
        q_fmt_spec none = {0};
        bool keep = res[i].kept || res[i].method == Q_METHOD_KEEP;
        if (q_plan_add(np, esc, keep ? &none : &res[i].fmt, keep ? Q_METHOD_KEEP
                                                                 : res[i].method, "",
                       &err) != Q_OK)
            goto fail_err;
    }
    /* Check: the written plan must resolve every tensor the same way (a stored
     * name that is also another tensor's GGUF name would break that). */
    q_resolved *chk = calloc(A.m->n_tensors ? A.m->n_tensors : 1, sizeof *chk);
    if (!chk || q_plan_resolve(np, A.m, true, chk, NULL, NULL, &err) != Q_OK) {
        free(chk);
        if (err.msg[0])
            goto fail_err;
        msgf(true, "out of memory");
        goto fail;
    }
    for (uint64_t i = 0; i < A.m->n_tensors; i++) {
        bool same = chk[i].kept == res[i].kept && chk[i].method == res[i].method &&
                    (res[i].kept || fmt_eq(&chk[i].fmt, &res[i].fmt));
        if (!same) {
            msgf(true, "resolved row of %s would not reproduce its format; not saved",
                 T((int64_t)i)->name);
            free(chk);
            goto fail;
        }
    }
    free(chk);
    free(res);
    return np;
fail_err:
    msgf(true, "%s", err.msg);
fail:
    free(res);
    q_plan_free(np);
    return NULL;
}

/* Saves the plan to path (NULL or "": the current plan path). resolved: -1
 * keeps the mode of the last save, 0 the rules only, 1 with --resolved rows. */
static bool save_plan(const char *path, int resolved)
{
    q_err err = {{0}};
    if (!path || !*path)
        path = A.plan_path;
    if (resolved >= 0)
        A.save_resolved = resolved == 1;
    q_plan *out = A.plan;
    if (A.save_resolved && !(out = resolved_plan()))
        return false;
    q_status st = q_plan_save(out, path, &err);
    int n_rows = out->n_rules;
    if (out != A.plan)
        q_plan_free(out);
    if (st != Q_OK) {
        msgf(true, "%s", err.msg);
        return false;
    }
    if (path != A.plan_path)
        snprintf(A.plan_path, sizeof A.plan_path, "%s", path);
    free(A.saved_text);
    A.saved_text = q_plan_text(A.plan);
    A.dirty = false;
    if (A.save_resolved)
        msgf(false, "plan saved to %s (%d rules + %d resolved rows)", path, A.plan->n_rules,
             n_rows - A.plan->n_rules);
    else
        msgf(false, "plan saved to %s (%d rules)", path, A.plan->n_rules);
    return true;
}

static bool load_plan(const char *path, bool as_edit)
{
    q_plan *p = NULL;
    q_err err = {{0}};
    if (q_plan_load(path, &p, &err) != Q_OK) {
        msgf(true, "%s", err.msg);
        return false;
    }
    if (as_edit)
        snapshot();
    q_plan_free(A.plan);
    A.plan = p;
    snprintf(A.plan_path, sizeof A.plan_path, "%s", path);
    free(A.saved_text);
    A.saved_text = q_plan_text(A.plan);
    resolve_plan();
    msgf(false, "plan %s loaded (%d rules)", path, p->n_rules);
    return true;
}

static void autosave_recovery(void)
{
    if (!A.dirty || !A.rec_path[0])
        return;
    q_err err;
    mkdirs(A.rec_path);
    q_plan_save(A.plan, A.rec_path, &err);
}

/* ---------- search ---------- */

static bool name_matches(int64_t i)
{
    if (!A.search[0])
        return false;
    const char *pat = A.search;
    if (strpbrk(pat, "*?["))
        return !fnmatch(pat, T(i)->name, 0) || !fnmatch(pat, T(i)->gguf_name, 0);
    return strstr(T(i)->name, pat) || strstr(T(i)->gguf_name, pat);
}

static void search_next(int dir)
{
    if (!A.search[0]) {
        msgf(false, "no search pattern (/ to set one)");
        return;
    }
    int64_t nt = (int64_t)A.m->n_tensors;
    /* Walk tensors in display order: unfold the block of the hit. */
    int64_t cur = sel_tensor();
    int64_t pos = -1;
    int64_t *order = malloc((size_t)nt * sizeof *order);
    if (!order)
        return;
    int64_t no = 0;
    if (A.sort == SORT_NAME) {
        /* model order, blocks grouped as in the tree */
        bool *seen = calloc((size_t)A.nblocks + 1, 1);
        for (int64_t i = 0; i < nt; i++) {
            int b = T(i)->block;
            if (b < 0 || b >= A.nblocks) {
                order[no++] = i;
            } else if (seen && !seen[b]) {
                seen[b] = true;
                for (int64_t j = i; j < nt; j++)
                    if (T(j)->block == b)
                        order[no++] = j;
            }
        }
        free(seen);
    } else {
        for (int r = 0; r < A.nrows; r++)
            order[no++] = A.rows[r].t;
    }
    for (int64_t k = 0; k < no; k++)
        if (order[k] == cur)
            pos = k;
    bool on_block = A.nrows && A.rows[A.sel].kind == ROW_BLOCK;
    int64_t hit = -1;
    for (int64_t step = 1; step <= no; step++) {
        int64_t k = ((pos < 0 ? 0 : pos) + (dir > 0 ? step : -step) + no * 2) % no;
        if (step == no && !on_block)
            k = pos < 0 ? 0 : pos;
        if (on_block && dir > 0 && step == 1 && pos >= 0)
            k = pos; /* from a block row, its first tensor counts */
        if (name_matches(order[k])) {
            hit = order[k];
            break;
        }
    }
    free(order);
    if (hit < 0) {
        msgf(true, "pattern not found: %s", A.search);
        return;
    }
    int b = T(hit)->block;
    if (b >= 0 && b < A.nblocks)
        A.folded[b] = false;
    build_rows();
    for (int r = 0; r < A.nrows; r++)
        if (A.rows[r].kind == ROW_TENSOR && A.rows[r].t == hit)
            A.sel = r;
    msgf(false, "/%s: %s", A.search, T(hit)->name);
}

/* ---------- commands ---------- */

static const char *const commands[] = {"set", "preset", "save", "w", "load", "imatrix",
                                       "export", "theme", "sort", "help", "quit", "q", "q!",
                                       "undo", "redo", "mark", "unmark", "kld", NULL};

static void cmd_set(char *args)
{
    char *save = NULL;
    char *pattern = strtok_r(args, " \t", &save);
    if (!pattern) {
        msgf(true, "usage: :set PATTERN format=FMT [method=rtn|wsearch|keep]");
        return;
    }
    q_fmt_spec fmt = {0};
    bool have_fmt = false;
    int method = Q_METHOD_RTN;
    for (char *kv = strtok_r(NULL, " \t", &save); kv; kv = strtok_r(NULL, " \t", &save)) {
        if (!strncmp(kv, "format=", 7)) {
            if (!q_fmt_parse(kv + 7, &fmt)) {
                msgf(true, "unknown format '%s'", kv + 7);
                return;
            }
            have_fmt = true;
        } else if (!strncmp(kv, "method=", 7)) {
            method = q_method_from_name(kv + 7);
            if (method < 0) {
                msgf(true, "unknown method '%s'", kv + 7);
                return;
            }
        } else if (!strncmp(kv, "group=", 6) && have_fmt) {
            fmt.group = strtoll(kv + 6, NULL, 10);
        } else {
            msgf(true, "unknown setting '%s' (format=, method=, group=)", kv);
            return;
        }
    }
    if (!have_fmt && method != Q_METHOD_KEEP) {
        msgf(true, ":set %s needs format=FMT", pattern);
        return;
    }
    q_plan *np = NULL;
    char *txt = q_plan_text(A.plan);
    q_err err = {{0}};
    if (!txt || q_plan_parse(txt, strlen(txt), "(plan)", &np, &err) != Q_OK) {
        free(txt);
        msgf(true, "%s", err.msg[0] ? err.msg : "out of memory");
        return;
    }
    free(txt);
    if (q_plan_add(np, pattern, &fmt, (q_method)method, "", &err) != Q_OK) {
        msgf(true, "%s", err.msg);
        q_plan_free(np);
        return;
    }
    snapshot();
    q_plan_free(A.plan);
    A.plan = np;
    resolve_plan();
    int hits = 0;
    for (uint64_t i = 0; i < A.m->n_tensors; i++)
        if (A.ts[i].res.rule == A.plan->n_rules - 1)
            hits++;
    msgf(hits == 0, "rule %s added: %d tensors", pattern, hits);
}

static void do_export(char *args)
{
    char *save = NULL;
    char *what = strtok_r(args, " \t", &save);
    char *file = strtok_r(NULL, " \t", &save);
    if (!what || strcmp(what, "llama-quantize") || !file) {
        msgf(true, "usage: :export llama-quantize FILE");
        return;
    }
    q_resolved *res = calloc((size_t)A.m->n_tensors, sizeof *res);
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", file);
    FILE *fp = res ? fopen(tmp, "w") : NULL;
    if (!fp) {
        msgf(true, "%s: %s", tmp, strerror(errno));
        free(res);
        return;
    }
    for (uint64_t i = 0; i < A.m->n_tensors; i++)
        res[i] = A.ts[i].res;
    q_err err = {{0}};
    q_status st = q_plan_export_llama(A.plan, A.m, res, fp, &err);
    if (fclose(fp) != 0 && st == Q_OK)
        st = q_fail(&err, Q_EIO, "%s: %s", tmp, strerror(errno));
    if (st == Q_OK && rename(tmp, file) != 0)
        st = q_fail(&err, Q_EIO, "%s: %s", file, strerror(errno));
    if (st != Q_OK) {
        unlink(tmp);
        msgf(true, "%s", err.msg);
    } else {
        msgf(false, "wrote %s: llama-quantize --pure --tensor-type-file %s IN OUT %s", file,
             file, q_plan_llama_ftype(A.m, res));
    }
    free(res);
}

/* qtune's extra calibration statistics of an imatrix file, when it has them. */
static void load_extra(const char *file)
{
    an_extra_free(A.ex);
    A.ex = NULL;
    an_extra *x = NULL;
    q_err err = {{0}};
    if (an_extra_load(file, &x, &err) != Q_OK)
        return;
    if (x->n_entries > 0)
        A.ex = x;
    else
        an_extra_free(x);
}

static void do_imatrix(const char *file)
{
    q_imatrix *im = NULL;
    q_err err = {{0}};
    if (q_imatrix_load(file, &im, &err) != Q_OK) {
        msgf(true, "%s", err.msg);
        return;
    }
    if (A.im) {
        if (A.n_old_im < 8)
            A.old_im[A.n_old_im++] = A.im; /* the worker may still hold its rows */
    }
    A.im = im;
    load_extra(file);
    tui_worker_set_samples(file);
    A.have_oe = false;
    attach_imatrix();
    int found = 0;
    for (uint64_t i = 0; i < A.m->n_tensors; i++)
        found += A.ts[i].im != NULL;
    resolve_plan();
    msgf(found == 0, "imatrix %s: %lld entries, %d tensors matched%s", file,
         (long long)im->n_entries, found, A.ex ? ", qtune statistics" : "");
}

static void quit_request(void);

static void run_command(char *line)
{
    while (*line == ' ')
        line++;
    char *args = line + strcspn(line, " \t");
    if (*args)
        *args++ = 0;
    while (*args == ' ' || *args == '\t')
        args++;
    size_t al = strlen(args);
    while (al && (args[al - 1] == ' ' || args[al - 1] == '\t'))
        args[--al] = 0;
    if (!*line)
        return;
    if (!strcmp(line, "set")) {
        cmd_set(args);
    } else if (!strcmp(line, "preset")) {
        if (!*args)
            A.mode = MODE_PRESET;
        else
            apply_preset(args);
    } else if (!strcmp(line, "save") || !strcmp(line, "w")) {
        bool resolved = !strncmp(args, "--resolved", 10) &&
                        (args[10] == 0 || args[10] == ' ' || args[10] == '\t');
        if (resolved) {
            args += 10;
            while (*args == ' ' || *args == '\t')
                args++;
        }
        save_plan(*args ? args : NULL, resolved ? 1 : 0);
    } else if (!strcmp(line, "load")) {
        if (*args)
            load_plan(args, true);
        else
            msgf(true, "usage: :load FILE");
    } else if (!strcmp(line, "imatrix")) {
        if (*args)
            do_imatrix(args);
        else
            msgf(true, "usage: :imatrix FILE");
    } else if (!strcmp(line, "kld")) {
        char *ctxs = args + strcspn(args, " \t");
        long long ctx = 0;
        if (*ctxs) {
            *ctxs++ = 0;
            char *end;
            errno = 0;
            ctx = strtoll(ctxs, &end, 10);
            if (errno || end == ctxs || *end || ctx < 2 || ctx > 1 << 20) {
                msgf(true, "usage: :kld TEXTFILE [CTX]  (CTX: 2..1048576 tokens)");
                return;
            }
        }
        kld_start(*args ? args : NULL, (int64_t)ctx);
    } else if (!strcmp(line, "export")) {
        do_export(args);
    } else if (!strcmp(line, "theme")) {
        char m[256];
        if (tui_theme_load(args, m, sizeof m))
            msgf(false, "theme %s", args);
        else
            msgf(true, "%s", m);
    } else if (!strcmp(line, "sort")) {
        for (int s = 0; s < SORT_COUNT; s++)
            if (!strcmp(args, sort_names[s])) {
                A.sort = s;
                build_rows();
                msgf(false, "sorted by %s", sort_names[s]);
                return;
            }
        msgf(true, "usage: :sort name|size|error");
    } else if (!strcmp(line, "help")) {
        A.mode = MODE_HELP;
    } else if (!strcmp(line, "quit") || !strcmp(line, "q")) {
        quit_request();
    } else if (!strcmp(line, "q!")) {
        A.running = false;
    } else if (!strcmp(line, "undo")) {
        undo_redo(false);
    } else if (!strcmp(line, "redo")) {
        undo_redo(true);
    } else if (!strcmp(line, "mark") || !strcmp(line, "unmark")) {
        int n = 0;
        for (uint64_t i = 0; i < A.m->n_tensors; i++) {
            bool hit = !*args || !fnmatch(args, T((int64_t)i)->name, 0) ||
                       !fnmatch(args, T((int64_t)i)->gguf_name, 0);
            if (hit) {
                A.ts[i].marked = line[0] == 'm';
                n++;
            }
        }
        msgf(false, "%s %d tensors", line, n);
    } else {
        msgf(true, "unknown command ':%s' (:help lists them)", line);
    }
}

static void on_cmdline(const char *line, bool is_search)
{
    if (is_search) {
        if (*line)
            snprintf(A.search, sizeof A.search, "%s", line);
        search_next(1);
        return;
    }
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", line);
    A.msg[0] = 0;
    run_command(buf);
}

/* Completion candidates for the word starting at word_start of line. */
static const char *complete(const char *line, int word_start, int i)
{
    static char out[512];
    char prefix[256];
    size_t pl = strcspn(line + word_start, " \t");
    if (pl >= sizeof prefix)
        pl = sizeof prefix - 1;
    memcpy(prefix, line + word_start, pl);
    prefix[pl] = 0;
    int word = 0;
    for (int k = 0; k < word_start; k++)
        if ((line[k] == ' ' || line[k] == '\t') && k > 0 && line[k - 1] != ' ' &&
            line[k - 1] != '\t')
            word++;
    char cmd[32] = "";
    sscanf(line, "%31s", cmd);
    int n = 0;
#define CAND(s)                                                  \
    do {                                                         \
        if (!strncmp((s), prefix, pl) && n++ == i) {             \
            snprintf(out, sizeof out, "%s", (s));                \
            return out;                                          \
        }                                                        \
    } while (0)
    if (word == 0) {
        for (int k = 0; commands[k]; k++)
            CAND(commands[k]);
        return NULL;
    }
    if (!strcmp(cmd, "set") || !strcmp(cmd, "mark") || !strcmp(cmd, "unmark")) {
        if (word == 1) {
            for (uint64_t k = 0; k < A.m->n_tensors; k++)
                CAND(T((int64_t)k)->name);
            return NULL;
        }
        char buf[64];
        for (int f = 0; f < Q_FMT_COUNT; f++) {
            const char *fn = q_format_get((q_format_id)f)->name;
            if (f == Q_FMT_INT || f == Q_FMT_UINT)
                snprintf(buf, sizeof buf, "format=%s4", fn);
            else
                snprintf(buf, sizeof buf, "format=%s", fn);
            CAND(buf);
        }
        for (int k = 0; k < Q_METHOD_COUNT; k++) {
            snprintf(buf, sizeof buf, "method=%s", q_method_name((q_method)k));
            CAND(buf);
        }
        return NULL;
    }
    if (!strcmp(cmd, "preset")) {
        const char *const *p = q_plan_preset_names();
        for (int k = 0; p[k]; k++)
            CAND(p[k]);
    } else if (!strcmp(cmd, "theme")) {
        const char *const *t = tui_theme_names();
        for (int k = 0; t[k]; k++)
            CAND(t[k]);
    } else if (!strcmp(cmd, "sort")) {
        for (int k = 0; k < SORT_COUNT; k++)
            CAND(sort_names[k]);
    } else if (!strcmp(cmd, "export") && word == 1) {
        CAND("llama-quantize");
    } else if ((!strcmp(cmd, "save") || !strcmp(cmd, "w")) && word == 1) {
        CAND("--resolved");
    }
#undef CAND
    return NULL;
}

/* ---------- drawing ---------- */

static int W, H;

/* QTUNE_TUI_TRACE=FILE: one line per processed key, the monotonic times the
 * key was read and the following redraw finished (UI thread only). */
static FILE *g_trace;
static double g_trace_key_ms, g_trace_draw_ms;
static int g_trace_ch;
static bool g_trace_pending;
static long g_trace_seq;

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void trace_done(void)
{
    if (!g_trace || !g_trace_pending)
        return;
    double now = mono_ms();
    fprintf(g_trace,
            "key %ld ch=%d read_ms=%.3f redrawn_ms=%.3f latency_ms=%.3f draw_ms=%.3f busy=%d\n",
            g_trace_seq++, g_trace_ch, g_trace_key_ms, now, now - g_trace_key_ms,
            now - g_trace_draw_ms, tui_worker_busy());
    g_trace_pending = false;
}

static void fill_line(int y, int x0, int x1, int attr)
{
    attrset(attr);
    for (int x = x0; x < x1; x++)
        mvaddch(y, x, ' ');
}

/* Prints s clipped to width w at (y, x); returns columns used. Text is ASCII
 * except for glyphs, which callers count as one column each. */
static void put(int y, int x, int w, int attr, const char *s)
{
    if (w <= 0)
        return;
    attrset(attr);
    mvaddnstr(y, x, s, w);
}

static void fmt_err(const tui_ts *s, char *buf, size_t cap)
{
    if (s->res.kept || s->res.method == Q_METHOD_KEEP) {
        snprintf(buf, cap, "-");
    } else if (s->failed) {
        snprintf(buf, cap, "fail");
    } else if (!s->have) {
        snprintf(buf, cap, "...");
    } else if (A.err_db) {
        if (isinf(s->m.sqnr_db))
            snprintf(buf, cap, "exact");
        else
            snprintf(buf, cap, "%s%.1fdB", s->exact ? "" : "~", s->m.sqnr_db);
    } else {
        snprintf(buf, cap, "%s%.2f%%", s->exact ? "" : "~", 100.0 * s->m.rel_rmse);
    }
}

static int err_attr(const tui_ts *s)
{
    if (!s->have || s->res.kept)
        return tui_attr(TE_NORMAL);
    double db = s->m.sqnr_db;
    return db >= 30 ? tui_attr(TE_ERR_GOOD) : db >= 20 ? tui_attr(TE_ERR_MID)
                                                       : tui_attr(TE_ERR_BAD);
}

typedef struct col {
    const char *title;
    int w;
    bool on;
} col;

enum { C_SHAPE, C_DTYPE, C_PARAMS, C_FMT, C_BPW, C_ERR, C_ST, C_N };

static void layout_cols(col *c, int width, int *name_w)
{
    c[C_SHAPE] = (col){"shape", 11, false};
    c[C_DTYPE] = (col){"dtype", 5, false};
    c[C_PARAMS] = (col){"params", 7, false};
    c[C_FMT] = (col){"format", 7, true};
    c[C_BPW] = (col){"bpw", 5, false};
    c[C_ERR] = (col){"error", 8, true};
    c[C_ST] = (col){"st", 4, true};
    int used = 0;
    for (int k = 0; k < C_N; k++)
        if (c[k].on)
            used += c[k].w + 1;
    int min_name = 16;
    const int order[] = {C_BPW, C_DTYPE, C_PARAMS, C_SHAPE};
    for (int k = 0; k < 4; k++)
        if (width - used - (c[order[k]].w + 1) >= min_name + (k >= 2 ? 8 : 0)) {
            c[order[k]].on = true;
            used += c[order[k]].w + 1;
        }
    *name_w = width - used;
}

static void block_summary(int b, int64_t *params, int64_t *bytes, double *err, char *fmt,
                          size_t cap, int *pending)
{
    *params = 0;
    *bytes = 0;
    double we = 0, wp = 0;
    *pending = 0;
    fmt[0] = 0;
    bool mixed = false;
    for (uint64_t i = 0; i < A.m->n_tensors; i++) {
        const q_tensor *t = T((int64_t)i);
        if (t->block != b)
            continue;
        const tui_ts *s = &A.ts[i];
        *params += t->params;
        *bytes += s->res.kept ? (int64_t)t->bytes
                              : (int64_t)q_fmt_bytes(&s->res.fmt, t->rows, t->cols);
        if (s->res.kept || t->n_dims < 2)
            continue;
        char nm[32];
        q_fmt_name(&s->res.fmt, nm, sizeof nm);
        if (!fmt[0])
            snprintf(fmt, cap, "%s", nm);
        else if (strcmp(fmt, nm))
            mixed = true;
        if (s->pending)
            (*pending)++;
        if (s->have) {
            we += (double)t->params * s->m.rel_rmse;
            wp += (double)t->params;
        }
    }
    if (mixed)
        snprintf(fmt, cap, "mixed");
    if (!fmt[0])
        snprintf(fmt, cap, "keep");
    *err = wp > 0 ? we / wp : -1;
}

static void draw_tree(int y0, int h, int width)
{
    col c[C_N];
    int name_w;
    layout_cols(c, width, &name_w);
    /* header */
    fill_line(y0, 0, width, tui_attr(TE_HEADER));
    int x = 0;
    char hdr[64];
    snprintf(hdr, sizeof hdr, "name%s", A.sort != SORT_NAME ? (A.sort == SORT_SIZE ?
                                                                " (by size)" : " (by error)")
                                                             : "");
    put(y0, x, name_w, tui_attr(TE_HEADER), hdr);
    x = name_w;
    for (int k = 0; k < C_N; k++) {
        if (!c[k].on)
            continue;
        const char *title = k == C_ERR ? (A.err_db ? "SQNR" : "relRMSE") : c[k].title;
        snprintf(hdr, sizeof hdr, "%*s", c[k].w, title);
        put(y0, x, c[k].w, tui_attr(TE_HEADER), hdr);
        x += c[k].w + 1;
    }
    int body = h - 1;
    if (A.sel < A.top)
        A.top = A.sel;
    if (A.sel >= A.top + body)
        A.top = A.sel - body + 1;
    if (A.top < 0)
        A.top = 0;
    for (int r = 0; r < body; r++) {
        int y = y0 + 1 + r;
        int ri = A.top + r;
        fill_line(y, 0, width, tui_attr(TE_NORMAL));
        if (ri >= A.nrows)
            continue;
        const tui_row *row = &A.rows[ri];
        bool selected = ri == A.sel;
        char cell[C_N][48];
        char name[512];
        int base = tui_attr(TE_NORMAL);
        int err_a = base;
        if (row->kind == ROW_BLOCK) {
            int64_t params, bytes;
            double err;
            int pend;
            char fmt[32];
            block_summary(row->block, &params, &bytes, &err, fmt, sizeof fmt, &pend);
            int cnt = 0;
            for (uint64_t i = 0; i < A.m->n_tensors; i++)
                cnt += T((int64_t)i)->block == row->block;
            snprintf(name, sizeof name, "%s blk.%d (%d)",
                     A.folded[row->block] ? tui_T.g.fold_closed : tui_T.g.fold_open,
                     row->block, cnt);
            snprintf(cell[C_SHAPE], 48, "%s", "");
            snprintf(cell[C_DTYPE], 48, "%s", "");
            human_count(params, cell[C_PARAMS], 48);
            snprintf(cell[C_FMT], 48, "%s", fmt);
            snprintf(cell[C_BPW], 48, "%.2f", params ? 8.0 * (double)bytes / (double)params : 0);
            if (err < 0)
                snprintf(cell[C_ERR], 48, "%s", pend ? "..." : "-");
            else if (A.err_db)
                snprintf(cell[C_ERR], 48, "%.1fdB", -20.0 * log10(err > 0 ? err : 1e-12));
            else
                snprintf(cell[C_ERR], 48, "%.2f%%", 100.0 * err);
            snprintf(cell[C_ST], 48, "%s", pend ? "calc" : "");
            base = tui_attr(TE_BLOCK);
            err_a = base;
        } else {
            int64_t i = row->t;
            const q_tensor *t = T(i);
            const tui_ts *s = &A.ts[i];
            bool indent = A.sort == SORT_NAME && row->block >= 0;
            const char *shown = t->name;
            if (indent) {
                /* inside a folded block the "blk.N." prefix is implied */
                char pre[32];
                int pl = snprintf(pre, sizeof pre, "blk.%d.", row->block);
                if (!strncmp(shown, pre, (size_t)pl))
                    shown += pl;
            }
            snprintf(name, sizeof name, "%s%s%s", indent ? " " : "",
                     s->marked ? "*" : "", shown);
            if (t->n_dims >= 2)
                snprintf(cell[C_SHAPE], 48, "%lldx%lld", (long long)t->rows,
                         (long long)t->cols);
            else
                snprintf(cell[C_SHAPE], 48, "%lld", (long long)t->cols);
            snprintf(cell[C_DTYPE], 48, "%s", q_dtype_name(t->dtype));
            human_count(t->params, cell[C_PARAMS], 48);
            q_fmt_name(&s->res.fmt, cell[C_FMT], 48);
            if (s->res.kept)
                snprintf(cell[C_FMT], 48, "=%s", q_dtype_name(t->dtype));
            double bpw = s->res.kept ? 8.0 * (double)t->bytes / (double)(t->params ? t->params : 1)
                                     : q_fmt_bpw(&s->res.fmt, t->rows, t->cols);
            snprintf(cell[C_BPW], 48, "%.2f", bpw);
            fmt_err(s, cell[C_ERR], 48);
            const char *st = s->failed ? "warn" : s->pending ? "calc"
                           : s->res.fallback ? "fb" : "";
            snprintf(cell[C_ST], 48, "%s", st);
            if (s->marked)
                base = tui_attr(TE_MARKED);
            else if (name_matches(i))
                base = tui_attr(TE_MATCH);
            err_a = s->res.fallback || s->failed ? tui_attr(TE_FALLBACK) : err_attr(s);
            if (s->pending)
                err_a = tui_attr(TE_COMPUTING);
        }
        if (selected) {
            base = tui_attr(TE_SELECTED);
            err_a = base;
            fill_line(y, 0, width, base);
        }
        /* The fold glyph may be multibyte: give the name its display width. */
        int extra = (int)strlen(name) - (int)strlen(tui_T.g.fold_closed) + 1;
        (void)extra;
        put(y, 0, name_w - 1, base, name);
        x = name_w;
        for (int k = 0; k < C_N; k++) {
            if (!c[k].on)
                continue;
            char buf[64];
            if (k == C_FMT || k == C_ST)
                snprintf(buf, sizeof buf, "%-*.*s", c[k].w, c[k].w, cell[k]);
            else
                snprintf(buf, sizeof buf, "%*.*s", c[k].w, c[k].w, cell[k]);
            int a = base;
            if (k == C_ERR || k == C_ST)
                a = err_a;
            if (k == C_FMT && row->kind == ROW_TENSOR && A.ts[row->t].res.fallback && !selected)
                a = tui_attr(TE_FALLBACK);
            put(y, x, c[k].w, a, buf);
            x += c[k].w + 1;
        }
    }
}

/* ---------- the selected tensor's sample and what the right pane derives from it ----------
 * Everything below is computed once per sampled tensor (or per pane size) and
 * cached, so a redraw that changes nothing else only paints. */

static void sample_free(void)
{
    free(A.smp);
    free(A.colmax);
    free(A.hist_cnt);
    free(A.pool);
    free(A.act);
    A.smp = NULL;
    A.colmax = NULL;
    A.hist_cnt = NULL;
    A.pool = NULL;
    A.act = NULL;
    A.smp_rows = 0;
    A.hist_bins = 0;
    A.pool_cx = A.pool_cy = 0;
    A.act_src = NULL;
    A.act_n = 0;
}

/* The k-th smallest of a[0..n) (n > 0, no NaN), a reordered in place. */
static float nth_float(float *a, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float piv = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < piv)
                i++;
            while (a[j] > piv)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i++] = a[j];
                a[j--] = t;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            break;
    }
    return a[k];
}

/* Range, block medians and per-channel maxima of the loaded sample. */
static void sample_derive(const q_tensor *t)
{
    int64_t n = A.smp_rows * t->cols, C = t->cols;
    double lo = INFINITY, hi = -INFINITY;
    A.colmax = calloc((size_t)C, sizeof *A.colmax);
    for (int64_t r = 0; r < A.smp_rows; r++) {
        const float *row = A.smp + r * C;
        for (int64_t c = 0; c < C; c++) {
            float v = row[c];
            if (!isfinite(v))
                continue;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            float a = v < 0 ? -v : v;
            if (A.colmax && a > A.colmax[c])
                A.colmax[c] = a;
        }
    }
    if (!isfinite(lo))
        lo = 0;
    if (!(hi > lo))
        hi = lo + 1;
    A.smp_lo = lo;
    A.smp_hi = hi;
    /* median absmax / min / max of 32-value blocks: the overlay's typical block */
    A.blk_ok = false;
    int64_t nb = C >= 32 ? n / 32 : 0;
    float *am = nb ? malloc((size_t)nb * 3 * sizeof *am) : NULL;
    if (am) {
        float *mn = am + nb, *mx = am + 2 * nb;
        for (int64_t k = 0; k < nb; k++) {
            float a = 0, l = INFINITY, u = -INFINITY;
            for (int e = 0; e < 32; e++) {
                float v = A.smp[k * 32 + e];
                if (!isfinite(v))
                    continue;
                float av = v < 0 ? -v : v;
                a = av > a ? av : a;
                l = v < l ? v : l;
                u = v > u ? v : u;
            }
            am[k] = a;
            mn[k] = l;
            mx[k] = u;
        }
        A.blk_am = nth_float(am, nb, nb / 2);
        A.blk_mn = nth_float(mn, nb, nb / 2);
        A.blk_mx = nth_float(mx, nb, nb / 2);
        A.blk_ok = true;
        free(am);
    }
    A.colmax_top = 0;
    A.col_med = 0;
    if (A.colmax) {
        float *tmp = malloc((size_t)C * sizeof *tmp);
        for (int64_t c = 0; c < C; c++)
            A.colmax_top = A.colmax[c] > A.colmax_top ? A.colmax[c] : A.colmax_top;
        if (tmp) {
            memcpy(tmp, A.colmax, (size_t)C * sizeof *tmp);
            A.col_med = nth_float(tmp, C, C / 2);
            free(tmp);
        }
    }
}

/* Loads a row sample of tensor i (at most ~256K values, evenly spaced rows). */
static void load_sample(int64_t i)
{
    if (A.smp_t == i)
        return;
    sample_free();
    A.smp_t = i;
    const q_tensor *t = T(i);
    if (!t->readable || t->cols <= 0)
        return;
    int64_t max_rows = (262144 + t->cols - 1) / t->cols;
    if (max_rows < 1)
        max_rows = 1;
    int64_t step = t->rows > max_rows ? (t->rows + max_rows - 1) / max_rows : 1;
    int64_t n = (t->rows + step - 1) / step;
    A.smp = malloc((size_t)(n * t->cols) * sizeof(float));
    if (!A.smp)
        return;
    q_err err;
    for (int64_t r = 0; r < n; r++)
        if (q_tensor_read_rows(t, r * step, 1, A.smp + r * t->cols, &err) != Q_OK) {
            free(A.smp);
            A.smp = NULL;
            return;
        }
    A.smp_rows = n;
    A.smp_step = step;
    sample_derive(t);
}

/* Top k indices of v[0..n) by value, largest first (k <= 8). */
static int top_k(const float *v, int64_t n, int k, int64_t *out)
{
    int got = 0;
    for (int64_t c = 0; c < n; c++) {
        int pos = got;
        while (pos > 0 && v[c] > v[out[pos - 1]])
            pos--;
        if (pos >= k)
            continue;
        for (int q = (got < k ? got : k - 1); q > pos; q--)
            out[q] = out[q - 1];
        out[pos] = c;
        if (got < k)
            got++;
    }
    return got;
}

/* Activation RMS per input channel of tensor i, from its imatrix row (the
 * importance is the mean of x² over the calibration tokens, so its square
 * root is the RMS of x). Cached per (sampled tensor, imatrix row). Returns
 * false when the tensor has no imatrix row. */
static bool act_load(int64_t i)
{
    const float *src = A.ts[i].im;
    if (!src)
        return false;
    if (A.act && A.act_src == src && A.act_t == i)
        return true;
    free(A.act);
    int64_t C = T(i)->cols;
    A.act = malloc((size_t)C * sizeof *A.act);
    float *tmp = malloc((size_t)C * sizeof *tmp);
    if (!A.act || !tmp) {
        free(A.act);
        free(tmp);
        A.act = NULL;
        return false;
    }
    A.act_src = src;
    A.act_t = i;
    A.act_n = C;
    A.act_max = 0;
    A.act_min = INFINITY;
    for (int64_t c = 0; c < C; c++) {
        float v = src[c];
        A.act[c] = isfinite(v) && v > 0 ? sqrtf(v) : 0;
        tmp[c] = A.act[c];
        A.act_max = A.act[c] > A.act_max ? A.act[c] : A.act_max;
        A.act_min = A.act[c] < A.act_min ? A.act[c] : A.act_min;
    }
    A.act_med = nth_float(tmp, C, C / 2);
    free(tmp);
    A.act_n_out = 0;
    for (int64_t c = 0; c < C; c++)
        if (A.act_med > 0 && A.act[c] > ACT_OUTLIER_X * A.act_med)
            A.act_n_out++;
    A.act_n_top = top_k(A.act, C, 8, A.act_top);
    return true;
}

static const char *const vbars_u[] = {" ", "\u2581", "\u2582", "\u2583", "\u2584",
                                      "\u2585", "\u2586", "\u2587", "\u2588"};
static const char *const vbars_a[] = {" ", ".", ".", ":", ":", "|", "|", "#", "#"};

/* Nominal bits and symmetry of a format's block grid, for the overlay. */
static int grid_bits(q_format_id id, bool *sym)
{
    *sym = true;
    switch (id) {
    case Q_FMT_Q8_0: return 8;
    case Q_FMT_Q6_K: return 6;
    case Q_FMT_Q5_0: return 5;
    case Q_FMT_Q5_1: *sym = false; return 5;
    case Q_FMT_Q5_K: *sym = false; return 5;
    case Q_FMT_Q4_0: case Q_FMT_IQ4_NL: return 4;
    case Q_FMT_Q4_1: case Q_FMT_Q4_K: *sym = false; return 4;
    case Q_FMT_Q3_K: return 3;
    case Q_FMT_Q2_K: *sym = false; return 2;
    default: return 0;
    }
}

/* Vertical bars of cnt[0..bins) scaled to rows bh at (y0, x0). */
static void draw_bars(int y0, int x0, int bh, const double *v, int bins)
{
    double mx = 0;
    for (int b = 0; b < bins; b++)
        mx = v[b] > mx ? v[b] : mx;
    const char *const *vb = tui_T.utf8 ? vbars_u : vbars_a;
    attrset(tui_attr(TE_HIST_BAR));
    for (int r = 0; r < bh; r++) {
        move(y0 + r, x0);
        for (int b = 0; b < bins; b++) {
            int eighths = mx > 0 ? (int)lround(v[b] / mx * bh * 8) : 0;
            int level = eighths - (bh - 1 - r) * 8;
            level = level < 0 ? 0 : level > 8 ? 8 : level;
            addstr(vb[level]);
        }
    }
}

/* Histogram of the input activations' per-channel RMS (imatrix), log-x,
 * in rows [y0, y0+h). */
static void draw_act_hist(int y0, int x0, int h, int w, int64_t ti)
{
    char line[200];
    int bins = w - 1, bh = h - 3;
    if (!act_load(ti) || bins < 8 || bh < 2)
        return;
    snprintf(line, sizeof line, "input activations: RMS of x per channel = sqrt(imatrix), "
             "%lld channels, log x", (long long)A.act_n);
    put(y0, x0, w, tui_attr(TE_HEADER), line);
    double lo = INFINITY, hi = 0;
    for (int64_t c = 0; c < A.act_n; c++)
        if (A.act[c] > 0) {
            lo = fmin(lo, A.act[c]);
            hi = fmax(hi, A.act[c]);
        }
    if (!(hi > 0)) {
        put(y0 + 1, x0, w, tui_attr(TE_NORMAL), "all channels zero in the imatrix");
        return;
    }
    double llo = log10(lo), lhi = log10(hi);
    if (!(lhi > llo))
        lhi = llo + 1;
    double *v = calloc((size_t)bins, sizeof *v);
    if (!v)
        return;
    for (int64_t c = 0; c < A.act_n; c++) {
        if (!(A.act[c] > 0))
            continue;
        int b = (int)((log10(A.act[c]) - llo) / (lhi - llo) * bins);
        v[b < 0 ? 0 : b >= bins ? bins - 1 : b] += 1;
    }
    draw_bars(y0 + 1, x0, bh, v, bins);
    free(v);
    snprintf(line, sizeof line, "%-10.3g%*.3g", lo, w - 11 > 0 ? w - 11 : 1, hi);
    put(y0 + 1 + bh, x0, w, tui_attr(TE_NORMAL), line);
    snprintf(line, sizeof line, "median %.3g  max %.3g (x%.1f)  channels > %gx median: %d",
             A.act_med, A.act_max, A.act_med > 0 ? A.act_max / A.act_med : 0,
             ACT_OUTLIER_X, A.act_n_out);
    put(y0 + 2 + bh, x0, w, tui_attr(TE_NORMAL), line);
}

static void draw_hist(int y0, int x0, int h, int w, int64_t ti)
{
    load_sample(ti);
    const q_tensor *t = T(ti);
    if (!A.smp) {
        put(y0, x0, w, tui_attr(TE_NORMAL), "tensor cannot be read");
        return;
    }
    /* with an imatrix row, the lower part shows the input activations */
    int act_h = A.ts[ti].im && h >= 26 ? (h - 1) * 2 / 5 : 0;
    h -= act_h;
    int64_t n = A.smp_rows * t->cols;
    double lo = A.smp_lo, hi = A.smp_hi;
    int bins = w - 1;
    int bh = h - 5;
    if (bins < 8 || bh < 3)
        return;
    if (A.hist_bins != bins) {
        free(A.hist_cnt);
        A.hist_cnt = calloc((size_t)bins, sizeof *A.hist_cnt);
        A.hist_bins = A.hist_cnt ? bins : 0;
        if (!A.hist_cnt)
            return;
        double scale = bins / (hi - lo);
        for (int64_t k = 0; k < n; k++) {
            float x = A.smp[k];
            if (!isfinite(x))
                continue;
            int b = (int)((x - lo) * scale);
            A.hist_cnt[b < 0 ? 0 : b >= bins ? bins - 1 : b]++;
        }
    }
    char line[160];
    char nm[32];
    const tui_ts *s = &A.ts[ti];
    q_fmt_name(&s->res.fmt, nm, sizeof nm);
    snprintf(line, sizeof line, "weights: %s  %s scale  rows %lld/%lld", nm,
             A.hist_log ? "log" : "linear", (long long)A.smp_rows, (long long)t->rows);
    put(y0, x0, w, tui_attr(TE_NORMAL), line);
    double *v = malloc((size_t)bins * sizeof *v);
    if (!v)
        return;
    for (int b = 0; b < bins; b++)
        v[b] = A.hist_log ? log1p((double)A.hist_cnt[b]) : (double)A.hist_cnt[b];
    draw_bars(y0 + 1, x0, bh, v, bins);
    free(v);
    /* Overlay: the grid of a typical block (median absmax of 32-value blocks). */
    bool sym;
    int bits = grid_bits(s->res.fmt.id, &sym);
    int ly = y0 + 1 + bh;
    fill_line(ly, x0, x0 + w, tui_attr(TE_NORMAL));
    if (bits > 0 && A.blk_ok) {
        double glo, ghi;
        int nlev = 1 << bits;
        if (sym) {
            double d = A.blk_am / (nlev / 2);
            glo = -d * (nlev / 2);
            ghi = d * (nlev / 2 - 1);
            if (s->res.fmt.id == Q_FMT_Q8_0) {
                d = A.blk_am / 127.0;
                glo = -127 * d;
                ghi = 127 * d;
                nlev = 255;
            }
        } else {
            glo = A.blk_mn;
            ghi = A.blk_mx;
        }
        attrset(tui_attr(TE_HIST_LEVEL));
        for (int l = 0; l < nlev; l++) {
            double x = glo + (ghi - glo) * l / (nlev - 1);
            int gx = (int)((x - lo) / (hi - lo) * bins);
            if (gx >= 0 && gx < bins)
                mvaddstr(ly, x0 + gx, "|");
        }
        attrset(tui_attr(TE_HIST_CLIP));
        int cl = (int)((glo - lo) / (hi - lo) * bins);
        int ch = (int)((ghi - lo) / (hi - lo) * bins);
        if (cl >= 0 && cl < bins)
            mvaddstr(ly, x0 + cl, "[");
        if (ch >= 0 && ch < bins)
            mvaddstr(ly, x0 + ch, "]");
        snprintf(line, sizeof line, "typical block grid: %d levels in [%.3g, %.3g]", nlev,
                 glo, ghi);
        put(ly + 2, x0, w, tui_attr(TE_NORMAL), line);
    } else {
        put(ly + 2, x0, w, tui_attr(TE_NORMAL),
            bits ? "row too short for a block grid" : "float format: no block grid");
    }
    snprintf(line, sizeof line, "%-10.3g%*.3g", lo, w - 11 > 0 ? w - 11 : 1, hi);
    put(ly + 1, x0, w, tui_attr(TE_NORMAL), line);
    if (act_h)
        draw_act_hist(y0 + h, x0, act_h, w, ti);
}

static void draw_outliers(int y0, int x0, int h, int w, int64_t ti)
{
    load_sample(ti);
    const q_tensor *t = T(ti);
    if (!A.smp) {
        put(y0, x0, w, tui_attr(TE_NORMAL), "tensor cannot be read");
        return;
    }
    int64_t R = A.smp_rows, Cn = t->cols;
    bool act = act_load(ti);
    char line[200];
    snprintf(line, sizeof line, "|w| max-pooled, %lld of %lld rows (x: input channel)",
             (long long)R, (long long)t->rows);
    put(y0, x0, w, tui_attr(TE_NORMAL), line);
    int mh = h - 9 - (act ? 4 : 0); /* map rows */
    if (mh < 2 || w < 10)
        return;
    int cells_y = tui_T.heat_levels ? mh * 2 : mh;
    int cells_x = w;
    if (A.pool_cx != cells_x || A.pool_cy != cells_y) {
        free(A.pool);
        A.pool = calloc((size_t)cells_x * (size_t)cells_y, sizeof *A.pool);
        A.pool_cx = A.pool ? cells_x : 0;
        A.pool_cy = A.pool ? cells_y : 0;
        if (!A.pool)
            return;
        int *px = malloc((size_t)Cn * sizeof *px);
        if (!px)
            return;
        for (int64_t c = 0; c < Cn; c++)
            px[c] = (int)(c * cells_x / Cn);
        for (int64_t r = 0; r < R; r++) {
            float *prow = A.pool + (size_t)(r * cells_y / (R > 0 ? R : 1)) * (size_t)cells_x;
            const float *row = A.smp + r * Cn;
            for (int64_t c = 0; c < Cn; c++) {
                float v = row[c] < 0 ? -row[c] : row[c];
                if (v > prow[px[c]]) /* false for NaN */
                    prow[px[c]] = v;
            }
        }
        free(px);
    }
    float gmax = A.colmax_top;
    static const char ramp[] = " .:-=+*#%@";
    for (int y = 0; y < mh; y++) {
        move(y0 + 1 + y, x0);
        for (int x = 0; x < cells_x; x++) {
            if (tui_T.heat_levels) {
                int L = tui_T.heat_levels;
                float a = A.pool[(size_t)(2 * y) * (size_t)cells_x + (size_t)x];
                float b = A.pool[(size_t)(2 * y + 1) * (size_t)cells_x + (size_t)x];
                int la = gmax > 0 ? (int)(sqrtf(a / gmax) * (L - 1) + 0.5f) : 0;
                int lb = gmax > 0 ? (int)(sqrtf(b / gmax) * (L - 1) + 0.5f) : 0;
                attrset(tui_heat_attr(la, lb));
                addstr(tui_T.g.half_upper);
            } else {
                float a = A.pool[(size_t)y * (size_t)cells_x + (size_t)x];
                int l = gmax > 0 ? (int)(sqrtf(a / gmax) * 9 + 0.5f) : 0;
                attrset(tui_attr(TE_NORMAL));
                addch((chtype)(unsigned char)ramp[l]);
            }
        }
    }
    /* per-input-channel max bars, pooled to the width */
    const char *const *vb = tui_T.utf8 ? vbars_u : vbars_a;
    int by = y0 + 1 + mh;
    put(by, x0, w, tui_attr(TE_NORMAL), "per-channel max |w|:");
    move(by + 1, x0);
    attrset(tui_attr(TE_HIST_BAR));
    for (int x = 0; x < w; x++) {
        float m = 0;
        for (int64_t c = (int64_t)x * Cn / w; c < (int64_t)(x + 1) * Cn / w; c++)
            m = A.colmax[c] > m ? A.colmax[c] : m;
        int lv = gmax > 0 ? (int)(m / gmax * 8 + 0.5f) : 0;
        addstr(vb[lv < 0 ? 0 : lv > 8 ? 8 : lv]);
    }
    by += 2;
    if (act) {
        /* the same channel axis: activation RMS (imatrix), outliers marked */
        snprintf(line, sizeof line, "activation RMS per input channel (sqrt imatrix); "
                 "%s > %gx median %.3g:", tui_T.g.mark, ACT_OUTLIER_X, A.act_med);
        put(by, x0, w + (int)strlen(tui_T.g.mark) - 1, tui_attr(TE_NORMAL), line);
        move(by + 1, x0);
        attrset(tui_attr(TE_HIST_BAR));
        for (int x = 0; x < w; x++) {
            float m = 0;
            for (int64_t c = (int64_t)x * Cn / w; c < (int64_t)(x + 1) * Cn / w; c++)
                m = A.act[c] > m ? A.act[c] : m;
            int lv = A.act_max > 0 ? (int)(m / A.act_max * 8 + 0.5f) : 0;
            addstr(vb[lv < 0 ? 0 : lv > 8 ? 8 : lv]);
        }
        fill_line(by + 2, x0, x0 + w, tui_attr(TE_HIST_CLIP));
        for (int x = 0; x < w; x++) {
            bool out = false;
            for (int64_t c = (int64_t)x * Cn / w; c < (int64_t)(x + 1) * Cn / w && !out; c++)
                out = A.act_med > 0 && A.act[c] > ACT_OUTLIER_X * A.act_med;
            if (out)
                mvaddstr(by + 2, x0 + x, tui_T.g.mark);
        }
        int o = snprintf(line, sizeof line, "%d outlier channel%s:", A.act_n_out,
                         A.act_n_out == 1 ? "" : "s");
        if (A.act_n_out == 0)
            o += snprintf(line + o, sizeof line - (size_t)o, " none; top:");
        for (int k = 0; k < A.act_n_top && k < 6 && o < (int)sizeof line - 32; k++)
            o += snprintf(line + o, sizeof line - (size_t)o, " ch %lld x%.1f",
                          (long long)A.act_top[k],
                          A.act_med > 0 ? A.act[A.act_top[k]] / A.act_med : 0);
        put(by + 3, x0, w, tui_attr(TE_NORMAL), line);
        by += 4;
    }
    int64_t top[8];
    int nt = top_k(A.colmax, Cn, 4, top);
    put(by, x0, w, tui_attr(TE_NORMAL),
        act ? "top channels (max|w|, x median, activation RMS):"
            : "top channels (max|w|, x median):");
    for (int k = 0; k < nt; k++) {
        int o = snprintf(line, sizeof line, "  ch %-6lld %9.4g  x%.1f", (long long)top[k],
                         A.colmax[top[k]], A.col_med > 0 ? A.colmax[top[k]] / A.col_med : 0);
        if (act)
            snprintf(line + o, sizeof line - (size_t)o, "  act %.3g", A.act[top[k]]);
        put(by + 1 + k, x0, w, tui_attr(TE_NORMAL), line);
    }
}

static void whatif_request(int64_t ti)
{
    if (A.wi_t == ti)
        return;
    A.wi_t = ti;
    tui_worker_drop_whatif(ti);
    memset(A.wi, 0, sizeof A.wi);
    const q_tensor *t = T(ti);
    if (!quantizable(ti))
        return;
    for (int f = WHATIF_N - 1; f >= 0; f--) {
        q_fmt_spec fs;
        q_fmt_parse(q_format_get(whatif_fmts[f])->name, &fs);
        if (!q_fmt_fits(&fs, t->cols)) {
            A.wi[f].na = true;
            continue;
        }
        A.wi[f].pending = true;
        q_method meth = A.ts[ti].res.method == Q_METHOD_WSEARCH ? Q_METHOD_WSEARCH : Q_METHOD_RTN;
        tui_worker_push(ti, TUI_JOB_WHATIF, &fs, meth, A.ts[ti].im, true);
    }
}

static void draw_error(int y0, int x0, int h, int w, int64_t ti)
{
    const q_tensor *t = T(ti);
    char line[200];
    if (!quantizable(ti)) {
        put(y0, x0, w, tui_attr(TE_NORMAL), "1-D tensor: kept as stored");
        return;
    }
    whatif_request(ti);
    bool wide = w >= 40;
    snprintf(line, sizeof line, " %-7s %5s %7s %6s%s%s", "format", "bpw", "relRMSE", "SQNR",
             wide ? "   max err" : "", A.have_oe ? "  outErr" : "");
    put(y0, x0, w, tui_attr(TE_HEADER), line);
    for (int f = 0; f < WHATIF_N && f + 1 < h - 2; f++) {
        q_fmt_spec fs;
        q_fmt_parse(q_format_get(whatif_fmts[f])->name, &fs);
        const tui_wi *wi = &A.wi[f];
        bool cur = A.ts[ti].res.fmt.id == whatif_fmts[f];
        char fig[96];
        if (wi->na)
            snprintf(fig, sizeof fig, "%s", "    n/a (row)");
        else if (wi->failed)
            snprintf(fig, sizeof fig, "%s", "    failed");
        else if (!wi->have)
            snprintf(fig, sizeof fig, "%s", "    ...");
        else if (wide)
            snprintf(fig, sizeof fig, "%6.2f%% %6.1f %9.3g%s", 100 * wi->m.rel_rmse,
                     wi->m.sqnr_db, wi->m.max_abs, wi->exact ? "" : " ~");
        else
            snprintf(fig, sizeof fig, "%6.2f%% %6.1f%s", 100 * wi->m.rel_rmse,
                     wi->m.sqnr_db, wi->exact ? "" : "~");
        if (A.have_oe && wi->have && !wi->na && !wi->failed) {
            size_t fl = strlen(fig);
            if (!isnan(wi->oe))
                snprintf(fig + fl, sizeof fig - fl, " %6.2f%%", 100 * wi->oe);
            else
                snprintf(fig + fl, sizeof fig - fl, " %7s", wi->exact ? "-" : "");
        }
        snprintf(line, sizeof line, "%s%-7s %5.2f %s", cur ? tui_T.g.mark : " ",
                 q_format_get(whatif_fmts[f])->name, q_fmt_bpw(&fs, t->rows, t->cols), fig);
        put(y0 + 1 + f, x0, w + (cur ? (int)strlen(tui_T.g.mark) - 1 : 0),
            cur ? tui_attr(TE_MARKED) : tui_attr(TE_NORMAL), line);
    }
    if (h > WHATIF_N + 3)
        put(y0 + WHATIF_N + 2, x0, w, tui_attr(TE_NORMAL),
            A.ts[ti].res.kept ? "SQNR in dB; tensor kept as stored"
                              : "SQNR in dB; marked: planned");
    const tui_ts *s = &A.ts[ti];
    if (s->failed) {
        put(y0 + h - 1, x0, w, tui_attr(TE_STATUS_ERR), s->fail);
    }
}

/* Prints s over as many rows (up to y_end) as it needs, continuation lines
 * indented; returns the next free row. */
static int put_wrapped(int y, int y_end, int x0, int w, const char *s)
{
    size_t len = strlen(s);
    size_t off = 0;
    bool first = true;
    while (y < y_end && (off < len || first)) {
        int avail = first ? w : w - 7;
        if (avail < 4)
            avail = w;
        put(y, first ? x0 : x0 + (w - avail), avail, tui_attr(TE_NORMAL), s + off);
        off += (size_t)avail;
        first = false;
        y++;
    }
    return y;
}

static void draw_info(int y0, int x0, int h, int w, int64_t ti)
{
    const q_tensor *t = T(ti);
    const tui_ts *s = &A.ts[ti];
    char line[512], nm[32], wn[32], b1[32];
    int y = y0;
#define LINE(...)                                                        \
    do {                                                                 \
        snprintf(line, sizeof line, __VA_ARGS__);                        \
        y = put_wrapped(y, y0 + h, x0, w, line);                         \
    } while (0)
    LINE("name   %s", t->name);
    if (strcmp(t->name, t->gguf_name))
        LINE("gguf   %s", t->gguf_name);
    LINE("role   %s  block %d", q_role_name(t->role), t->block);
    LINE("shape  %lld x %lld (rows x cols)", (long long)t->rows, (long long)t->cols);
    LINE("dtype  %s  %s params  %s", q_dtype_name(t->dtype), human_count(t->params, b1, 32),
         human_bytes(t->bytes, nm, sizeof nm));
    if (A.stats_t != ti) {
        /* a full pass over the tensor: the worker does it */
        A.stats_t = ti;
        A.stats_ok = false;
        A.stats_pending = true;
        tui_worker_push(ti, TUI_JOB_STATS, &s->res.fmt, Q_METHOD_KEEP, NULL, false);
    }
    if (A.stats_pending) {
        LINE("stats: computing...");
    } else if (A.stats_ok) {
        LINE("min %.4g  max %.4g  mean %.3g", A.stats.min, A.stats.max, A.stats.mean);
        LINE("std %.4g  absmax %.4g  kurtosis %.2f", A.stats.std, A.stats.absmax,
             A.stats.kurtosis);
        LINE("outliers (>6 std) %lld (%.3f%%)  nan %lld inf %lld",
             (long long)A.stats.n_outliers, 100 * A.stats.outlier_ratio,
             (long long)A.stats.n_nan, (long long)A.stats.n_inf);
    } else {
        LINE("stats: %s", A.stats_err);
    }
    y++;
    q_fmt_name(&s->res.fmt, nm, sizeof nm);
    q_fmt_name(&s->res.wanted, wn, sizeof wn);
    if (s->res.rule >= 0 && s->res.rule < A.plan->n_rules)
        LINE("rule   #%d %s", s->res.rule + 1, A.plan->rules[s->res.rule].pattern);
    else
        LINE("rule   none (kept as stored)");
    LINE("plan   %s -> %s  method %s%s", wn, nm, q_method_name(s->res.method),
         s->res.kept ? " (kept)" : "");
    if (!s->res.kept)
        LINE("size   %s  %.2f bpw",
             human_bytes(q_fmt_bytes(&s->res.fmt, t->rows, t->cols), b1, sizeof b1),
             q_fmt_bpw(&s->res.fmt, t->rows, t->cols));
    if (s->res.note[0])
        LINE("note   %s", s->res.note);
    if (s->have && !s->res.kept)
        LINE("error  rel %.3f%%  SQNR %.1f dB  max %.3g  cos %.6f%s", 100 * s->m.rel_rmse,
             s->m.sqnr_db, s->m.max_abs, s->m.cosine,
             !s->exact ? " (estimate)" : s->on_gpu ? " (GPU)" : "");
    if (s->have && !s->res.kept && !isnan(s->oe))
        LINE("output rel err %.3f%%  |XW'-XQ'|/|XW'| on the calibration sample", 100 * s->oe);
    if (s->im)
        LINE("imatrix  weighted rel err %.3f%%", 100 * s->m.weighted_rel_err);
    if (s->im && act_load(ti)) {
        LINE("act    RMS of x per input channel (sqrt imatrix): median %.3g  max %.3g "
             "(ch %lld, x%.1f)  > %gx median: %d", A.act_med, A.act_max,
             (long long)(A.act_n_top ? A.act_top[0] : 0),
             A.act_med > 0 ? A.act_max / A.act_med : 0, ACT_OUTLIER_X, A.act_n_out);
    }
    const an_extra_entry *xe = A.ex ? an_extra_find(A.ex, t->gguf_name) : NULL;
    if (xe && xe->absmax && xe->n > 0) {
        float *tmp = malloc((size_t)xe->n * sizeof *tmp);
        int64_t top = 0;
        for (int64_t c = 0; c < xe->n; c++)
            if (xe->absmax[c] > xe->absmax[top])
                top = c;
        if (tmp) {
            memcpy(tmp, xe->absmax, (size_t)xe->n * sizeof *tmp);
            for (int64_t c = 0; c < xe->n; c++)
                if (!isfinite(tmp[c]))
                    tmp[c] = 0;
            float med = nth_float(tmp, xe->n, xe->n / 2);
            LINE("absmax max |x| per input channel (calib): median %.3g  max %.3g (ch %lld, "
                 "x%.1f)", med, xe->absmax[top], (long long)top,
                 med > 0 ? xe->absmax[top] / med : 0);
            free(tmp);
        }
    }
    if (xe && xe->has_outliers)
        LINE("tokens with an outlier channel (|x| > %g rms of the token) %.2f%%; "
             "outlier channels per token: mean %.3f%%, max %.3f%%", AN_OUTLIER_SIGMA,
             100.0 * xe->outliers[2], 100.0 * xe->outliers[0], 100.0 * xe->outliers[1]);
    if (s->failed)
        LINE("preview failed: %s", s->fail);
    if (A.kld_running)
        LINE("kld    running: chunk %lld/%lld (Esc cancels)", (long long)A.kld_done,
             (long long)A.kld_total);
    else if (A.kld_have)
        LINE("kld    model: mean %.5f  p99 %.5f  max %.5f  top1 %.2f%%  ppl %.4f -> %.4f  "
             "(%lld tokens, ctx %lld)", A.kld.kld_mean, A.kld.kld_p99, A.kld.kld_max,
             100.0 * A.kld.top1, A.kld.ppl_base, A.kld.ppl_quant, (long long)A.kld.n_tokens,
             (long long)A.kld_ctx);
#undef LINE
}

/* Label of tab k in a pane w columns wide (the mouse handler measures the same). */
static void tab_label(int k, int w, char *b, size_t cap)
{
    static const char *const short_names[TAB_COUNT] = {"Hist", "Outl", "Err", "Info"};
    if (w < 44)
        snprintf(b, cap, "%d %s ", k + 1, short_names[k]);
    else
        snprintf(b, cap, " %d %s ", k + 1, tab_names[k]);
}

static void draw_right(int y0, int x0, int h, int w)
{
    int x = x0 + 1;
    fill_line(y0, x0, x0 + w, tui_attr(TE_TAB));
    for (int k = 0; k < TAB_COUNT; k++) {
        char b[32];
        tab_label(k, w, b, sizeof b);
        int a = k == A.tab ? tui_attr(TE_TAB_ACTIVE) : tui_attr(TE_TAB);
        put(y0, x, x0 + w - x, a, b);
        x += (int)strlen(b);
    }
    for (int y = y0 + 1; y < y0 + h; y++)
        fill_line(y, x0, x0 + w, tui_attr(TE_NORMAL));
    int64_t ti = sel_tensor();
    if (ti < 0)
        return;
    if (A.nrows && A.rows[A.sel].kind == ROW_BLOCK && A.tab != TAB_INFO) {
        /* a block row: show its first matrix */
        for (uint64_t i = 0; i < A.m->n_tensors; i++)
            if (T((int64_t)i)->block == A.rows[A.sel].block && quantizable((int64_t)i)) {
                ti = (int64_t)i;
                break;
            }
    }
    int cy = y0 + 1, ch = h - 1, cx = x0 + 1, cw = w - 2;
    switch (A.tab) {
    case TAB_HIST: draw_hist(cy, cx, ch, cw, ti); break;
    case TAB_OUTLIERS: draw_outliers(cy, cx, ch, cw, ti); break;
    case TAB_ERROR: draw_error(cy, cx, ch, cw, ti); break;
    default: draw_info(cy, cx, ch, cw, ti); break;
    }
}

static void totals(uint64_t *now, uint64_t *after, double *bpw, double *err, double *sqnr,
                   int *pending)
{
    *now = *after = 0;
    int64_t params = 0;
    double we = 0, wp = 0, se2 = 0, sw2 = 0;
    *pending = 0;
    for (uint64_t i = 0; i < A.m->n_tensors; i++) {
        const q_tensor *t = T((int64_t)i);
        const tui_ts *s = &A.ts[i];
        *now += t->bytes;
        params += t->params;
        if (s->res.kept) {
            *after += t->bytes;
            continue;
        }
        *after += q_fmt_bytes(&s->res.fmt, t->rows, t->cols);
        if (s->pending)
            (*pending)++;
        if (s->have) {
            we += (double)t->params * s->m.rel_rmse;
            wp += (double)t->params;
            double n = (double)s->m.n;
            se2 += n * s->m.mse;
            if (s->m.rel_rmse > 0)
                sw2 += n * (s->m.rmse / s->m.rel_rmse) * (s->m.rmse / s->m.rel_rmse);
        }
    }
    *bpw = params ? 8.0 * (double)*after / (double)params : 0;
    *err = wp > 0 ? we / wp : -1;
    *sqnr = se2 > 0 && sw2 > 0 ? 10 * log10(sw2 / se2) : NAN;
}

static bool draw_status(int y)
{
    uint64_t now, after;
    double bpw, err, sqnr;
    int pend;
    totals(&now, &after, &bpw, &err, &sqnr, &pend);
    char a[32], b[32], line[512], e[64];
    if (err < 0)
        snprintf(e, sizeof e, "err -");
    else if (isnan(sqnr))
        snprintf(e, sizeof e, "err %.2f%%", 100 * err);
    else
        snprintf(e, sizeof e, "err %.2f%% (%.1f dB)", 100 * err, sqnr);
    snprintf(line, sizeof line, " %s %s %s  %.2f bpw  %s%s%s", human_bytes(now, a, sizeof a),
             tui_T.g.arrow, human_bytes(after, b, sizeof b), bpw, e,
             pend ? "  calc " : "", "");
    if (pend) {
        char p[16];
        snprintf(p, sizeof p, "%d", pend);
        strncat(line, p, sizeof line - strlen(line) - 1);
    }
    if (A.dirty)
        strncat(line, "  [+]", sizeof line - strlen(line) - 1);
    if (A.kld_running) {
        char kb[96];
        int fill = A.kld_total > 0 ? (int)(20 * A.kld_done / A.kld_total) : 0;
        snprintf(kb, sizeof kb, "  kld [%.*s%*s] %lld/%lld", fill, "####################",
                 20 - fill, "", (long long)A.kld_done, (long long)A.kld_total);
        strncat(line, kb, sizeof line - strlen(line) - 1);
    }
    fill_line(y, 0, W, tui_attr(TE_STATUS));
    put(y, 0, W, tui_attr(TE_STATUS), line);
    int used = (int)strlen(line) + 2;
    /* A message that does not fit beside the figures goes to the footer row. */
    if (A.msg[0] && used + (int)strlen(A.msg) <= W && A.mode != MODE_QUIT_ASK &&
        A.mode != MODE_RECOVER)
        put(y, used, W - used, A.msg_err ? tui_attr(TE_STATUS_ERR) : tui_attr(TE_STATUS),
            A.msg);
    return A.msg[0] && used + (int)strlen(A.msg) <= W;
}

/* The prompt or message the footer shows instead of key hints, or NULL. */
static const char *footer_message(int *attr)
{
    *attr = tui_attr(TE_STATUS_ERR);
    if (A.mode == MODE_QUIT_ASK)
        return "unsaved plan: (w)rite and quit, (q)uit anyway, (c)ancel";
    if (A.mode == MODE_RECOVER)
        return "a recovery plan from an interrupted session exists: restore it? (y/n)";
    if (!A.msg[0])
        return NULL;
    *attr = A.msg_err ? tui_attr(TE_STATUS_ERR) : tui_attr(TE_FOOTER);
    return A.msg;
}

static void draw_footer(int y, bool status_has_msg)
{
    int fa;
    const char *fm = footer_message(&fa);
    if (fm && !(status_has_msg && A.mode == MODE_NORMAL)) {
        fill_line(y, 0, W, fa);
        put(y, 0, W, fa, fm);
        return;
    }
    static const char *const hints[][2] = {
        {"?", "help"}, {"j/k", "move"}, {"Ent", "fold"}, {"Spc", "mark"}, {"+/-", "format"},
        {"p", "preset"}, {"u", "undo"}, {"w", "save"}, {"/", "find"}, {"Tab", "pane"},
        {":", "cmd"}, {"q", "quit"}};
    fill_line(y, 0, W, tui_attr(TE_FOOTER));
    int x = 0;
    for (size_t k = 0; k < sizeof hints / sizeof hints[0]; k++) {
        int need = (int)(strlen(hints[k][0]) + strlen(hints[k][1]) + 2);
        if (x + need > W)
            break;
        put(y, x, W - x, tui_attr(TE_KEY), hints[k][0]);
        x += (int)strlen(hints[k][0]);
        put(y, x + 1, W - x - 1, tui_attr(TE_FOOTER), hints[k][1]);
        x += (int)strlen(hints[k][1]) + 2;
    }
}

static void draw_help(void)
{
    static const char *const lines[] = {
        "qtune: keys",
        "",
        "  j k / arrows   move            PgUp PgDn  page        g G  top / bottom",
        "  Enter          fold a block     Left/Right fold/unfold Space  mark",
        "  Tab 1-4        Histogram / Outliers / Error / Info tabs",
        "  + -            format up / down: f16 q8_0 q6_k q5_k q4_k q3_k q2_k",
        "  p              apply a preset   u  undo    Ctrl-R  redo",
        "  w              save the plan    q  quit (asks when unsaved)",
        "  / n N          find a tensor    s  sort name/size/error",
        "  e              error as SQNR dB / relative RMSE",
        "  l              histogram linear / log",
        "  :              command line (Tab completes, Up/Down history)",
        "",
        "commands:",
        "  :set PATTERN format=q4_k [method=rtn|wsearch|keep]   add a rule",
        "  :preset NAME   :save [--resolved] [FILE]   :load FILE   :imatrix FILE",
        "  :export llama-quantize FILE   :theme NAME   :sort name|size|error",
        "  :mark PATTERN  :unmark [PATTERN]  :undo  :redo  :help  :quit  :q!",
        "  :kld TEXTFILE [CTX]  KL divergence of the plan vs the model on a text",
        "                 (K repeats it, Esc cancels)",
        "",
        "status column: calc = computing, fb = format fell back (row length),",
        "warn = preview failed. ~ marks an estimate from sampled rows.",
        "",
        "press any key to return"};
    erase();
    for (size_t k = 0; k < sizeof lines / sizeof lines[0] && (int)k < H; k++)
        put((int)k, 1, W - 2, k == 0 ? tui_attr(TE_TITLE) : tui_attr(TE_HELP), lines[k]);
}

static void draw_presets(int y0, int x0)
{
    const char *const *names = q_plan_preset_names();
    int n = 0;
    while (names[n])
        n++;
    int w = 64 < W - 4 ? 64 : W - 4;
    for (int k = 0; k < n + 2; k++)
        fill_line(y0 + k, x0, x0 + w, (int)(tui_attr(TE_HELP) | A_REVERSE));
    put(y0, x0 + 1, w - 2, (int)(tui_attr(TE_HELP) | A_REVERSE),
        "apply a preset (j/k, Enter, 1-9; Esc cancels)");
    for (int k = 0; k < n; k++) {
        char line[160];
        const char *d = q_plan_preset_desc(names[k]);
        snprintf(line, sizeof line, "%d %-14s %s", k + 1, names[k], d ? d : "");
        int a = k == A.preset_sel ? tui_attr(TE_SELECTED) : (int)(tui_attr(TE_HELP) | A_REVERSE);
        if (k == A.preset_sel)
            a = tui_attr(TE_HELP);
        put(y0 + 1 + k, x0 + 1, w - 2, a, line);
    }
}

static void draw(void)
{
    getmaxyx(stdscr, H, W);
    curs_set(0);
    if (W < 80 || H < 24) {
        erase();
        char b[128];
        snprintf(b, sizeof b, "qtune needs at least 80x24 (now %dx%d)", W, H);
        put(H / 2, 0, W, tui_attr(TE_NORMAL), b);
        refresh();
        return;
    }
    if (A.mode == MODE_HELP) {
        draw_help();
        refresh();
        return;
    }
    /* title */
    char t[512], b1[32];
    fill_line(0, 0, W, tui_attr(TE_TITLE));
    const char *base = strrchr(A.m->path, '/');
    base = base ? base + 1 : A.m->path;
    snprintf(t, sizeof t, " qtune  %s  %s  %llu tensors  %s params  plan %.200s%s", base,
             A.m->arch.name[0] ? A.m->arch.name : "?", (unsigned long long)A.m->n_tensors,
             human_count(q_model_params(A.m), b1, sizeof b1), A.plan_path,
             A.dirty ? " [+]" : "");
    put(0, 0, W, tui_attr(TE_TITLE), t);
    int body_h = H - 3;
    A.left_w = W >= 160 ? W / 2 : W * 60 / 100;
    draw_tree(1, body_h, A.left_w);
    attrset(tui_attr(TE_BORDER));
    for (int y = 1; y < 1 + body_h; y++)
        mvaddstr(y, A.left_w, tui_T.g.vline);
    draw_right(1, A.left_w + 1, body_h, W - A.left_w - 1);
    bool st_msg = draw_status(H - 2);
    if (A.mode == MODE_PRESET)
        draw_presets(3, 2);
    if (tui_cmdline_active()) {
        tui_cmdline_draw(H - 1, W);
    } else {
        draw_footer(H - 1, st_msg);
    }
    attrset(A_NORMAL);
    refresh();
}

/* ---------- keys ---------- */

static void quit_request(void)
{
    if (A.dirty)
        A.mode = MODE_QUIT_ASK;
    else
        A.running = false;
}

static void toggle_fold(int want) /* want: -1 toggle, 0 unfold, 1 fold */
{
    if (!A.nrows || A.sort != SORT_NAME)
        return;
    const tui_row *r = &A.rows[A.sel];
    int b = r->block;
    if (b < 0)
        return;
    if (r->kind == ROW_TENSOR && want != 1)
        return;
    A.folded[b] = want < 0 ? !A.folded[b] : want == 1;
    build_rows();
}

static void mouse_event(void)
{
    MEVENT ev;
    if (getmouse(&ev) != OK)
        return;
    if (ev.bstate & BUTTON4_PRESSED) {
        A.sel = A.sel > 3 ? A.sel - 3 : 0;
        return;
    }
    if (ev.bstate & BUTTON5_PRESSED) {
        A.sel = A.sel + 3 < A.nrows ? A.sel + 3 : A.nrows - 1;
        return;
    }
    if (!(ev.bstate & (BUTTON1_CLICKED | BUTTON1_PRESSED)))
        return;
    if (ev.x < A.left_w && ev.y >= 2 && ev.y < H - 2) {
        int r = A.top + ev.y - 2;
        if (r < A.nrows) {
            if (r == A.sel && A.rows[r].kind == ROW_BLOCK)
                toggle_fold(-1);
            else
                A.sel = r;
        }
    } else if (ev.y == 1 && ev.x > A.left_w) {
        int x = A.left_w + 2;
        for (int k = 0; k < TAB_COUNT; k++) {
            char b[32];
            tab_label(k, W - A.left_w - 1, b, sizeof b);
            int len = (int)strlen(b);
            if (ev.x >= x && ev.x < x + len)
                A.tab = k;
            x += len;
        }
    }
}

static void key_normal(int ch)
{
    int page = H - 5 > 1 ? H - 5 : 1;
    A.msg[0] = 0;
    switch (ch) {
    case 'j': case KEY_DOWN: if (A.sel + 1 < A.nrows) A.sel++; break;
    case 'k': case KEY_UP: if (A.sel > 0) A.sel--; break;
    case KEY_NPAGE: case 6: A.sel = A.sel + page < A.nrows ? A.sel + page : A.nrows - 1; break;
    case KEY_PPAGE: case 2: A.sel = A.sel > page ? A.sel - page : 0; break;
    case 'g': case KEY_HOME: A.sel = 0; break;
    case 'G': case KEY_END: A.sel = A.nrows - 1; break;
    case '\n': case '\r': case KEY_ENTER:
        if (A.nrows && A.rows[A.sel].kind == ROW_BLOCK)
            toggle_fold(-1);
        else
            toggle_fold(1);
        break;
    case KEY_LEFT: case 'h': toggle_fold(1); break;
    case KEY_RIGHT: case 'l':
        if (ch == 'l' && !(A.nrows && A.rows[A.sel].kind == ROW_BLOCK)) {
            A.hist_log = !A.hist_log;
            break;
        }
        toggle_fold(0);
        break;
    case ' ': {
        if (!A.nrows)
            break;
        const tui_row *r = &A.rows[A.sel];
        if (r->kind == ROW_BLOCK) {
            bool all = true;
            for (uint64_t i = 0; i < A.m->n_tensors; i++)
                if (T((int64_t)i)->block == r->block && !A.ts[i].marked)
                    all = false;
            for (uint64_t i = 0; i < A.m->n_tensors; i++)
                if (T((int64_t)i)->block == r->block)
                    A.ts[i].marked = !all;
        } else {
            A.ts[r->t].marked = !A.ts[r->t].marked;
        }
        if (A.sel + 1 < A.nrows)
            A.sel++;
        break;
    }
    case 27: /* Esc: cancel a running KLD, else clear marks */
        if (A.kld_running) {
            kld_cancel();
            break;
        }
        for (uint64_t i = 0; i < A.m->n_tensors; i++)
            A.ts[i].marked = false;
        break;
    case 'K': kld_start(NULL, 0); break;
    case '\t': A.tab = (A.tab + 1) % TAB_COUNT; break;
    case KEY_BTAB: A.tab = (A.tab + TAB_COUNT - 1) % TAB_COUNT; break;
    case '1': case '2': case '3': case '4': A.tab = ch - '1'; break;
    case '/': tui_cmdline_open(true); break;
    case ':': tui_cmdline_open(false); break;
    case 'n': search_next(1); break;
    case 'N': search_next(-1); break;
    case 's':
        A.sort = (A.sort + 1) % SORT_COUNT;
        build_rows();
        msgf(false, "sorted by %s", sort_names[A.sort]);
        break;
    case 'e': A.err_db = !A.err_db; break;
    case '+': case '=': step_format(1); break;
    case '-': case '_': step_format(-1); break;
    case 'p': A.mode = MODE_PRESET; A.preset_sel = 0; break;
    case 'u': undo_redo(false); break;
    case 18: undo_redo(true); break;
    case 'w': save_plan(NULL, -1); break;
    case 'q': quit_request(); break;
    case '?': case KEY_F(1): A.mode = MODE_HELP; break;
    case 12: clearok(curscr, TRUE); break;
    case KEY_MOUSE: mouse_event(); break;
    default: break;
    }
    if (A.sort == SORT_ERROR && (ch == '+' || ch == '-'))
        build_rows();
}

static void key(int ch)
{
    if (ch == KEY_RESIZE) {
        clear();
        return;
    }
    if (tui_cmdline_active()) {
        tui_cmdline_key(ch);
        return;
    }
    switch (A.mode) {
    case MODE_HELP:
        A.mode = MODE_NORMAL;
        return;
    case MODE_QUIT_ASK:
        if (ch == 'w' || ch == 'y') {
            if (save_plan(NULL, -1))
                A.running = false;
            A.mode = MODE_NORMAL;
        } else if (ch == 'q' || ch == 'n') {
            A.running = false;
        } else {
            A.mode = MODE_NORMAL;
            msgf(false, "quit cancelled");
        }
        return;
    case MODE_RECOVER:
        if (ch == 'y') {
            /* The recovered rules become an unsaved edit of the current plan:
             * the save path stays, [+] shows, u goes back. */
            q_plan *p = NULL;
            q_err err = {{0}};
            if (q_plan_load(A.rec_path, &p, &err) == Q_OK) {
                snapshot();
                q_plan_free(A.plan);
                A.plan = p;
                resolve_plan();
                msgf(false, "recovered plan restored (%d rules); w saves it to %s",
                     p->n_rules, A.plan_path);
            } else {
                msgf(true, "%s", err.msg);
            }
            A.mode = MODE_NORMAL;
        } else if (ch == 'n' || ch == 27) {
            A.mode = MODE_NORMAL;
            msgf(false, "recovery plan discarded");
        } else {
            return;
        }
        unlink(A.rec_path);
        return;
    case MODE_PRESET: {
        const char *const *names = q_plan_preset_names();
        int n = 0;
        while (names[n])
            n++;
        if (ch == 'j' || ch == KEY_DOWN)
            A.preset_sel = (A.preset_sel + 1) % n;
        else if (ch == 'k' || ch == KEY_UP)
            A.preset_sel = (A.preset_sel + n - 1) % n;
        else if (ch >= '1' && ch < '1' + n) {
            A.mode = MODE_NORMAL;
            apply_preset(names[ch - '1']);
        } else if (ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
            A.mode = MODE_NORMAL;
            apply_preset(names[A.preset_sel]);
        } else if (ch == 27 || ch == 'q') {
            A.mode = MODE_NORMAL;
        }
        return;
    }
    default:
        key_normal(ch);
    }
}

/* ---------- start-up ---------- */

static void usage(FILE *fp)
{
    fputs("usage: qtune MODEL [--plan P] [--imatrix I] [--theme NAME]\n"
          "Open MODEL in the interactive view. --plan loads (or creates on save) plan P;\n"
          "without it the plan is saved as MODEL-NAME.plan.csv in the current directory.\n",
          fp);
}

static void recovery_path(void)
{
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(A.rec_path, sizeof A.rec_path, "%s/qtune/recovery/%s.csv", xdg, A.fp);
    else if (home && *home)
        snprintf(A.rec_path, sizeof A.rec_path, "%s/.local/state/qtune/recovery/%s.csv", home,
                 A.fp);
}

static void cleanup(void)
{
    tui_worker_stop();
    tui_cmdline_fini();
    free(A.rows);
    free(A.folded);
    free(A.ts);
    sample_free();
    an_extra_free(A.ex);
    free(A.saved_text);
    for (int i = 0; i < A.nundo; i++)
        free(A.undo[i]);
    for (int i = 0; i < A.nredo; i++)
        free(A.redo[i]);
    free(A.undo);
    free(A.redo);
    q_plan_free(A.plan);
    q_imatrix_free(A.im);
    for (int i = 0; i < A.n_old_im; i++)
        q_imatrix_free(A.old_im[i]);
    k_cuda_fused_release(); /* its kept tensors are the model's, keyed by address */
    q_model_close(A.m);
    memset(&A, 0, sizeof A);
}

int tui_main(int argc, char **argv)
{
    static const struct option opts[] = {{"plan", required_argument, NULL, 'p'},
                                         {"imatrix", required_argument, NULL, 'i'},
                                         {"theme", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *plan_arg = NULL, *im_arg = NULL, *theme = "default";
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:i:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': plan_arg = optarg; break;
        case 'i': im_arg = optarg; break;
        case 't': theme = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 64;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 64;
    }
    const char *model_path = argv[optind];
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        fprintf(stderr, "qtune: the interactive view needs a terminal; "
                        "try 'qtune inspect %s'\n", model_path);
        return 64;
    }
    memset(&A, 0, sizeof A);
    q_err err = {{0}};
    q_status st = q_model_open(model_path, &A.m, &err);
    if (st != Q_OK) {
        fprintf(stderr, "qtune: %s\n", err.msg);
        return (int)st;
    }
    k_init();
    if (im_arg && (st = q_imatrix_load(im_arg, &A.im, &err)) != Q_OK) {
        fprintf(stderr, "qtune: %s\n", err.msg);
        cleanup();
        return (int)st;
    }
    if (im_arg) {
        load_extra(im_arg);
        tui_worker_set_samples(im_arg);
    }
    q_model_fingerprint(A.m, A.fp);
    recovery_path();
    uint64_t nt = A.m->n_tensors;
    A.ts = calloc(nt ? nt : 1, sizeof *A.ts);
    A.rows = calloc(nt * 2 + 1, sizeof *A.rows);
    for (uint64_t i = 0; i < nt; i++)
        if (A.m->tensors[i].block + 1 > A.nblocks)
            A.nblocks = A.m->tensors[i].block + 1;
    A.folded = calloc((size_t)A.nblocks + 1, sizeof *A.folded);
    if (!A.ts || !A.rows || !A.folded) {
        fprintf(stderr, "qtune: out of memory\n");
        cleanup();
        return 71;
    }
    for (int b = 0; b < A.nblocks; b++)
        A.folded[b] = true;
    if (plan_arg && access(plan_arg, F_OK) == 0) {
        if ((st = q_plan_load(plan_arg, &A.plan, &err)) != Q_OK) {
            fprintf(stderr, "qtune: %s\n", err.msg);
            cleanup();
            return (int)st;
        }
    } else {
        A.plan = q_plan_new(A.m);
    }
    if (plan_arg) {
        snprintf(A.plan_path, sizeof A.plan_path, "%s", plan_arg);
    } else {
        const char *base = strrchr(model_path, '/');
        base = base ? base + 1 : model_path;
        char name[256];
        snprintf(name, sizeof name, "%s", base);
        char *dot = strrchr(name, '.');
        if (dot && dot != name)
            *dot = 0;
        snprintf(A.plan_path, sizeof A.plan_path, "%s.plan.csv", name);
    }
    A.saved_text = q_plan_text(A.plan);
    A.smp_t = A.stats_t = A.wi_t = -1;
    A.err_db = true;
    attach_imatrix();
    if (!tui_worker_start(A.m)) {
        fprintf(stderr, "qtune: cannot start the preview thread\n");
        cleanup();
        return 70;
    }
    tui_term_init();
    char tmsg[256];
    if (!tui_theme_load(theme, tmsg, sizeof tmsg)) {
        msgf(true, "%s", tmsg);
        if (strcmp(theme, "default"))
            tui_theme_load("default", tmsg, sizeof tmsg);
    }
    tui_cmdline_init(on_cmdline, complete);
    resolve_plan();
    build_rows();
    if (A.rec_path[0] && access(A.rec_path, R_OK) == 0)
        A.mode = MODE_RECOVER;
    A.running = true;
    const char *trace_path = getenv("QTUNE_TUI_TRACE");
    if (trace_path && *trace_path) {
        g_trace = fopen(trace_path, "a");
        if (g_trace)
            setvbuf(g_trace, NULL, _IOLBF, 0);
        else
            msgf(true, "QTUNE_TUI_TRACE: %s: %s", trace_path, strerror(errno));
    }
    /* Redraw after a key or new results; otherwise once a second. */
    bool redraw = true;
    int idle_ticks = 0;
    while (A.running) {
        if (poll_results() > 0)
            redraw = true;
        if (redraw || ++idle_ticks >= 10) {
            if (g_trace_pending)
                g_trace_draw_ms = mono_ms();
            draw();
            trace_done();
            redraw = false;
            idle_ticks = 0;
        }
        if (tui_sig_hup) {
            autosave_recovery();
            break;
        }
        if (tui_sig_int) {
            tui_sig_int = 0;
            quit_request();
            redraw = true;
            continue;
        }
        int ch = getch();
        if (ch == ERR)
            continue;
        if (g_trace) {
            g_trace_key_ms = mono_ms();
            g_trace_ch = ch;
            g_trace_pending = true;
        }
        key(ch);
        redraw = true;
    }
    g_trace_pending = false;
    if (g_trace)
        fclose(g_trace);
    g_trace = NULL;
    tui_term_end();
    int rc = 0;
    if (tui_sig_hup)
        rc = 128 + SIGHUP;
    cleanup();
    return rc;
}
