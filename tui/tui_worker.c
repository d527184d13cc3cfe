/* tui_worker.c — the preview thread. It pops the newest request, runs
 * k_preview_tensor with a cancel flag and queues results for the UI thread;
 * it never calls curses and never prints. */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "an_forward.h"
#include "an_tokenizer.h"
#include "k_preview.h"
#include "q_io.h"
#include "tui.h"

/* the KLD run's text file is read whole, up to this size */
#define WK_TEXT_MAX ((size_t)256 << 20)

typedef struct wk_job {
    int64_t t;
    int kind;
    q_fmt_spec fmt;
    q_method method;
    const float *imatrix;
    uint64_t gen;
} wk_job;

static struct {
    const q_model *m;
    pthread_t thr;
    bool started, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    wk_job *q; /* pending; the last entry is the newest */
    int nq, capq;
    wk_job run;
    bool running;
    bool requeue;     /* the running job was preempted: queue it again, last */
    atomic_int cancel;
    tui_result *res;
    int nres, capres;
    uint64_t gen;
    char *smp_path;     /* imatrix with activation samples, or NULL (owned) */
    uint64_t smp_gen;   /* bumped when smp_path changes */
    /* the KLD job: pending (kld_pending) or running (kld_running) */
    bool kld_pending, kld_running;
    char kld_path[PATH_MAX];
    int64_t kld_ctx;
    q_resolved *kld_res; /* owned while pending; the runner takes it */
    const q_imatrix *kld_im;
    uint64_t kld_gen;
    atomic_int kld_cancel;
} W = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static bool same_fmt(const q_fmt_spec *a, const q_fmt_spec *b)
{
    return a->id == b->id && a->bits == b->bits && a->group == b->group;
}

/* Called with W.mu held. */
static void push_result(const tui_result *r)
{
    if (W.nres == W.capres) {
        int cap = W.capres ? W.capres * 2 : 64;
        tui_result *n = realloc(W.res, (size_t)cap * sizeof *n);
        if (!n)
            return; /* dropped: the UI asks again on the next change */
        W.res = n;
        W.capres = cap;
    }
    W.res[W.nres++] = *r;
}

typedef struct wk_ctx {
    const wk_job *job;
} wk_ctx;

static void fill_result(tui_result *r, const wk_job *j)
{
    memset(r, 0, sizeof *r);
    r->tensor = j->t;
    r->kind = j->kind;
    r->fmt = j->fmt;
    r->method = j->method;
    r->gen = j->gen;
    r->out_err = NAN;
}

/* The worker's cached activation sample (worker thread only). */
static struct {
    uint64_t gen;
    int64_t t;
    bool none;      /* the file has no sample for t, or could not be read */
    float *x;
    int64_t rows, cols;
} S = {.t = -1};

/* Output error of job j on tensor t when the sample file holds its input's sample. */
static double job_out_err(const wk_job *j, const q_tensor *t)
{
    pthread_mutex_lock(&W.mu);
    uint64_t gen = W.smp_gen;
    char *path = W.smp_path ? strdup(W.smp_path) : NULL;
    pthread_mutex_unlock(&W.mu);
    if (!path)
        return NAN;
    q_err err = {{0}};
    if (S.gen != gen || S.t != j->t) {
        free(S.x);
        S.x = NULL;
        S.gen = gen;
        S.t = j->t;
        S.none = an_sample_load(path, t->gguf_name, &S.x, &S.rows, &S.cols, &err) != Q_OK ||
                 !S.x || S.cols != t->cols;
    }
    free(path);
    if (S.none || atomic_load(&W.cancel))
        return NAN;
    double rel = NAN;
    const float *im = j->method == Q_METHOD_WSEARCH ? j->imatrix : NULL;
    if (an_tensor_output_error(t, &j->fmt, im, S.x, S.rows, &rel, &err) != Q_OK)
        return NAN;
    return rel;
}

static void on_progress(void *user, const k_preview_result *kr)
{
    const wk_ctx *c = user;
    if (kr->exact)
        return; /* run_job queues the final figures itself */
    tui_result r;
    fill_result(&r, c->job);
    r.exact = kr->exact;
    r.m = kr->metrics;
    r.rel_lo = kr->rel_rmse_lo;
    r.rel_hi = kr->rel_rmse_hi;
    pthread_mutex_lock(&W.mu);
    push_result(&r);
    pthread_mutex_unlock(&W.mu);
}

static q_status run_job(const wk_job *j)
{
    const q_tensor *t = &W.m->tensors[j->t];
    tui_result r;
    fill_result(&r, j);
    q_err err = {{0}};
    q_status st;
    if (j->kind == TUI_JOB_STATS) {
        st = an_tensor_stats(t, &r.stats, &err);
        r.failed = st != Q_OK;
        if (r.failed)
            snprintf(r.msg, sizeof r.msg, "%.150s", err.msg);
        r.exact = true;
        pthread_mutex_lock(&W.mu);
        push_result(&r);
        pthread_mutex_unlock(&W.mu);
        return st;
    }
    k_preview_req req = {
        .model = W.m, .tensor = t, .fmt = j->fmt, .method = j->method,
        .imatrix = j->imatrix, .cancel = &W.cancel, .threads = 0,
        .skip_estimate = false,
    };
    wk_ctx c = {j};
    k_preview_result fin;
    st = k_preview_tensor(&req, on_progress, &c, &fin, &err);
    if (st == Q_ECANCELLED)
        return st;
    if (st == Q_OK) {
        r.exact = true;
        r.on_gpu = fin.on_gpu;
        r.m = fin.metrics;
        r.rel_lo = fin.rel_rmse_lo;
        r.rel_hi = fin.rel_rmse_hi;
        r.out_err = job_out_err(j, t);
    } else {
        r.failed = true;
        snprintf(r.msg, sizeof r.msg, "%.150s", err.msg[0] ? err.msg : q_status_str(st));
    }
    pthread_mutex_lock(&W.mu);
    push_result(&r);
    pthread_mutex_unlock(&W.mu);
    return st;
}

/* Called with W.mu held: puts j at the bottom of the stack (runs last). */
static void requeue_last(const wk_job *j)
{
    if (W.nq == W.capq) {
        int cap = W.capq ? W.capq * 2 : 64;
        wk_job *n = realloc(W.q, (size_t)cap * sizeof *n);
        if (!n)
            return; /* dropped: its tensor shows "calc" until the next change */
        W.q = n;
        W.capq = cap;
    }
    memmove(W.q + 1, W.q, (size_t)W.nq * sizeof *W.q);
    W.q[0] = *j;
    W.nq++;
}

typedef struct kld_run {
    uint64_t gen;
    int64_t ctx;
} kld_run;

static void kld_push(const kld_run *k, const tui_result *r0)
{
    tui_result r = *r0;
    r.kind = TUI_JOB_KLD;
    r.gen = k->gen;
    r.kld_ctx = k->ctx;
    pthread_mutex_lock(&W.mu);
    push_result(&r);
    pthread_mutex_unlock(&W.mu);
}

static bool kld_progress(void *user, int64_t done, int64_t total)
{
    const kld_run *k = user;
    if (atomic_load(&W.kld_cancel))
        return false;
    tui_result r;
    memset(&r, 0, sizeof r);
    r.kld_done = done;
    r.kld_total = total;
    kld_push(k, &r);
    return true;
}

/* Runs the KLD job (path, ctx, res, im); queues its progress and result. */
static void run_kld(const char *path, int64_t ctx, q_resolved *res, const q_imatrix *im,
                    uint64_t gen)
{
    const q_model *m = W.m;
    q_err err = {{0}};
    an_fwd *base = NULL, *quant = NULL;
    an_tok *tk = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    size_t len = 0;
    kld_run k = {gen, ctx};
    tui_result r;
    memset(&r, 0, sizeof r);
    q_status st = an_fwd_open(m, -1, &base, &err);
    if (st == Q_OK)
        st = an_fwd_open(m, -1, &quant, &err);
    if (st == Q_OK)
        st = q_read_small_file(path, WK_TEXT_MAX, &text, &len, &err);
    if (st == Q_OK) {
        char tj[PATH_MAX + 32];
        snprintf(tj, sizeof tj, "%s/tokenizer.json", m->path);
        if (m->kind == Q_MODEL_HF_DIR && access(tj, R_OK) == 0)
            st = an_tok_from_json(tj, &tk, &err);
        else if (m->gguf)
            st = an_tok_from_gguf(m->gguf, m->path, &tk, &err);
        else
            st = q_fail(&err, Q_EUSAGE, "%s: no tokenizer (no tokenizer.json)", m->path);
    }
    const an_config *cf = base ? an_fwd_config(base) : NULL;
    if (st == Q_OK && an_tok_n_vocab(tk) > cf->n_vocab)
        st = q_fail(&err, Q_EDATA, "%s: the tokenizer has %d tokens, the model %lld", m->path,
                    an_tok_n_vocab(tk), (long long)cf->n_vocab);
    if (st == Q_OK)
        st = an_tok_encode(tk, text, len, true, &ids, &n, &err);
    if (st == Q_OK) {
        if (ctx <= 0) {
            ctx = 512;
            if (cf->n_ctx > 0 && ctx > cf->n_ctx)
                ctx = cf->n_ctx;
            if (ctx > n)
                ctx = n;
        } else if (cf->n_ctx > 0 && ctx > cf->n_ctx) {
            st = q_fail(&err, Q_EUSAGE, "ctx %lld exceeds the model's context length %lld",
                        (long long)ctx, (long long)cf->n_ctx);
        }
        if (st == Q_OK && (ctx < 2 || n < ctx))
            st = q_fail(&err, Q_EUSAGE, "%s gives %lld tokens, fewer than one chunk of %lld",
                        path, (long long)n, (long long)(ctx < 2 ? 2 : ctx));
        k.ctx = ctx;
    }
    if (st == Q_OK) {
        an_plan_hook hook = {m, res, im};
        an_fwd_set_hooks(quant, an_plan_hook_fn, NULL, &hook);
        st = an_kld(base, quant, ids, n, ctx, 0, an_tok_bos(tk), kld_progress, &k, &r.kld,
                    &err);
    }
    r.exact = st == Q_OK;
    r.failed = st != Q_OK;
    if (st == Q_ECANCELLED)
        snprintf(r.msg, sizeof r.msg, "kld cancelled");
    else if (st != Q_OK)
        snprintf(r.msg, sizeof r.msg, "kld: %.140s", err.msg[0] ? err.msg : q_status_str(st));
    kld_push(&k, &r);
    free(ids);
    free(text);
    an_tok_free(tk);
    an_fwd_free(quant);
    an_fwd_free(base);
}

static void *worker_main(void *arg)
{
    (void)arg;
    /* Signals (SIGWINCH, SIGTSTP, SIGHUP...) go to the UI thread, whose
     * handlers may touch curses; this thread and its OpenMP team block them. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    /* Keys before previews: on Linux the nice value is per thread and the
     * OpenMP team this thread starts inherits it, so the UI thread wins the
     * CPU whenever a key needs a redraw (QTUNE_TUI_NICE=0 turns it off). */
    const char *nv = getenv("QTUNE_TUI_NICE");
    int nice_v = nv && *nv ? atoi(nv) : 10;
    if (nice_v > 0)
        setpriority(PRIO_PROCESS, (id_t)gettid(), nice_v > 19 ? 19 : nice_v);
    pthread_mutex_lock(&W.mu);
    for (;;) {
        while (!W.stop && W.nq == 0 && !W.kld_pending)
            pthread_cond_wait(&W.cv, &W.mu);
        if (W.stop)
            break;
        if (W.kld_pending) {
            /* model-level KLD first: the user asked for it and watches its bar */
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s", W.kld_path);
            int64_t ctx = W.kld_ctx;
            q_resolved *res = W.kld_res;
            const q_imatrix *im = W.kld_im;
            uint64_t gen = W.kld_gen;
            W.kld_res = NULL;
            W.kld_pending = false;
            W.kld_running = true;
            atomic_store(&W.kld_cancel, 0);
            pthread_mutex_unlock(&W.mu);
            run_kld(path, ctx, res, im, gen);
            free(res);
            pthread_mutex_lock(&W.mu);
            W.kld_running = false;
            continue;
        }
        W.run = W.q[--W.nq];
        W.running = true;
        W.requeue = false;
        atomic_store(&W.cancel, 0);
        pthread_mutex_unlock(&W.mu);
        q_status st = run_job(&W.run);
        pthread_mutex_lock(&W.mu);
        W.running = false;
        if (st == Q_ECANCELLED && W.requeue && !W.stop)
            requeue_last(&W.run);
    }
    pthread_mutex_unlock(&W.mu);
    return NULL;
}

bool tui_worker_start(const q_model *m)
{
    W.m = m;
    W.stop = false;
    if (pthread_create(&W.thr, NULL, worker_main, NULL) != 0)
        return false;
    W.started = true;
    return true;
}

void tui_worker_stop(void)
{
    if (!W.started)
        return;
    pthread_mutex_lock(&W.mu);
    W.stop = true;
    atomic_store(&W.cancel, 1);
    atomic_store(&W.kld_cancel, 1);
    pthread_cond_signal(&W.cv);
    pthread_mutex_unlock(&W.mu);
    pthread_join(W.thr, NULL);
    W.started = false;
    free(W.q);
    free(W.res);
    free(W.kld_res);
    free(W.smp_path);
    free(S.x);
    S.x = NULL;
    S.t = -1;
    W.q = NULL;
    W.res = NULL;
    W.kld_res = NULL;
    W.smp_path = NULL;
    W.kld_pending = false;
    W.nq = W.capq = W.nres = W.capres = 0;
}

uint64_t tui_worker_push(int64_t t, int kind, const q_fmt_spec *fmt, q_method method,
                         const float *imatrix, bool replace_same_fmt_only)
{
    pthread_mutex_lock(&W.mu);
    uint64_t gen = ++W.gen;
    int w = 0;
    for (int i = 0; i < W.nq; i++) {
        const wk_job *j = &W.q[i];
        bool same = j->t == t && j->kind == kind &&
                    (!replace_same_fmt_only || same_fmt(&j->fmt, fmt));
        if (kind == TUI_JOB_STATS && j->kind == TUI_JOB_STATS)
            same = true; /* only the newest selection's statistics matter */
        if (!same)
            W.q[w++] = W.q[i];
    }
    W.nq = w;
    if (W.running && W.run.t == t && W.run.kind == kind && !replace_same_fmt_only) {
        atomic_store(&W.cancel, 1); /* an older request of this tensor: stale now */
        W.requeue = false;
    } else if (W.running && W.run.kind == TUI_JOB_PLAN && W.run.t != t) {
        /* Newest first: a long preview of another tensor yields to this one
         * (the cancel lands within milliseconds) and runs again later. */
        atomic_store(&W.cancel, 1);
        W.requeue = true;
    }
    if (W.nq == W.capq) {
        int cap = W.capq ? W.capq * 2 : 64;
        wk_job *n = realloc(W.q, (size_t)cap * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&W.mu);
            return 0;
        }
        W.q = n;
        W.capq = cap;
    }
    W.q[W.nq++] = (wk_job){t, kind, *fmt, method, imatrix, gen};
    pthread_cond_signal(&W.cv);
    pthread_mutex_unlock(&W.mu);
    return gen;
}

void tui_worker_drop_whatif(int64_t keep_tensor)
{
    pthread_mutex_lock(&W.mu);
    int w = 0;
    for (int i = 0; i < W.nq; i++)
        if (W.q[i].kind != TUI_JOB_WHATIF || W.q[i].t == keep_tensor)
            W.q[w++] = W.q[i];
    W.nq = w;
    if (W.running && W.run.kind == TUI_JOB_WHATIF && W.run.t != keep_tensor)
        atomic_store(&W.cancel, 1);
    pthread_mutex_unlock(&W.mu);
}

int tui_worker_poll(tui_result *out, int cap)
{
    pthread_mutex_lock(&W.mu);
    int n = W.nres < cap ? W.nres : cap;
    memcpy(out, W.res, (size_t)n * sizeof *out);
    memmove(W.res, W.res + n, (size_t)(W.nres - n) * sizeof *out);
    W.nres -= n;
    pthread_mutex_unlock(&W.mu);
    return n;
}

int tui_worker_busy(void)
{
    pthread_mutex_lock(&W.mu);
    int n = W.nq + (W.running ? 1 : 0);
    pthread_mutex_unlock(&W.mu);
    return n;
}

void tui_worker_set_samples(const char *imatrix_path)
{
    char *p = imatrix_path ? strdup(imatrix_path) : NULL;
    pthread_mutex_lock(&W.mu);
    free(W.smp_path);
    W.smp_path = p;
    W.smp_gen++;
    pthread_mutex_unlock(&W.mu);
}

uint64_t tui_worker_kld(const char *path, int64_t ctx, const q_resolved *res,
                        const q_imatrix *im)
{
    size_t n = W.m->n_tensors ? (size_t)W.m->n_tensors : 1;
    q_resolved *copy = malloc(n * sizeof *copy);
    if (!copy)
        return 0;
    memcpy(copy, res, (size_t)W.m->n_tensors * sizeof *copy);
    pthread_mutex_lock(&W.mu);
    uint64_t gen = ++W.gen;
    free(W.kld_res);
    W.kld_res = copy;
    snprintf(W.kld_path, sizeof W.kld_path, "%s", path);
    W.kld_ctx = ctx;
    W.kld_im = im;
    W.kld_gen = gen;
    W.kld_pending = true;
    if (W.kld_running)
        atomic_store(&W.kld_cancel, 1);
    if (W.running && W.run.kind == TUI_JOB_PLAN) {
        atomic_store(&W.cancel, 1); /* the preview runs again after the KLD */
        W.requeue = true;
    }
    pthread_cond_signal(&W.cv);
    pthread_mutex_unlock(&W.mu);
    return gen;
}

bool tui_worker_kld_cancel(void)
{
    pthread_mutex_lock(&W.mu);
    bool had = W.kld_pending || W.kld_running;
    free(W.kld_res);
    W.kld_res = NULL;
    W.kld_pending = false;
    if (W.kld_running)
        atomic_store(&W.kld_cancel, 1);
    pthread_mutex_unlock(&W.mu);
    return had;
}
