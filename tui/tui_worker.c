/* tui_worker.c — the preview thread. It pops the newest request, runs
 * k_preview_tensor with a cancel flag and queues results for the UI thread;
 * it never calls curses and never prints. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "k_preview.h"
#include "tui.h"

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
        r.m = fin.metrics;
        r.rel_lo = fin.rel_rmse_lo;
        r.rel_hi = fin.rel_rmse_hi;
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
        while (!W.stop && W.nq == 0)
            pthread_cond_wait(&W.cv, &W.mu);
        if (W.stop)
            break;
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
    pthread_cond_signal(&W.cv);
    pthread_mutex_unlock(&W.mu);
    pthread_join(W.thr, NULL);
    W.started = false;
    free(W.q);
    free(W.res);
    W.q = NULL;
    W.res = NULL;
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
