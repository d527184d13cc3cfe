/* k_preview.c — progressive, cancellable preview of one tensor in one format
 * on the fused kernels (see k_preview.h for the contract and the statistics). */
#include "k_preview.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "k_cuda_fused.h"
#include "k_fused.h"
#include "q_dtype.h"

/* Values per row block: small enough that one block (and so a cancel) takes
 * well under 5 ms for the slowest reference quantizer, large enough that the
 * per-block accumulators cost nothing. Fixed, so results never depend on the
 * thread count. */
#define KP_BLOCK_VALUES 65536
#define KP_SAMPLE_VALUES 262144
/* Formats on the generic path (k-quants, iq4_nl, weighted searches) cost up
 * to ~100 ns a value on the scalar references: a smaller sample and probe keep
 * the first estimate near 10 ms. */
#define KP_SAMPLE_VALUES_SLOW 16384
#define KP_SAMPLE_MIN_SLOW 8
#define KP_PROBE_VALUES_SLOW 8192
#define KP_SAMPLE_MIN 16
#define KP_SAMPLE_MAX 256
/* The exact pass on a GPU: at most this many values a call, the cancel flag
 * polled between calls; tensors up to KP_GPU_KEEP_BYTES stay on the device
 * for the next preview (the TUI's layer in another format), larger ones are
 * copied slice by slice at every preview, so that no copy outlasts a cancel's
 * 5 ms (64 MiB: 2.7 ms at 25 GB/s, PCIe 4). */
#define KP_GPU_CHUNK_VALUES (INT64_C(1) << 24)
#define KP_GPU_KEEP_BYTES ((size_t)64 << 20)

typedef struct kp_job {
    const k_preview_req *req;
    const q_tensor *t;
    k_fq fq;
    int64_t rows, cols, block_rows;
    size_t row_bytes; /* of the source */
    bool direct; /* f32 rows read in place from the mapping */
    bool simd;
} kp_job;

/* Per-thread scratch. */
typedef struct kp_tls {
    float *xbuf; /* block_rows × cols (converted rows) */
    float *sbuf; /* cols (scrubbed row) */
    float *ybuf; /* cols (fake-quantized row) */
    void *qbuf;  /* row_bytes (quantized row for ggml formats) */
    k_acc_scratch *scratch; /* k_acc_row's counts and maxima (kernels/k_fused.h) */
} kp_tls;

static double kp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool kp_cancelled(const kp_job *j)
{
    return j->req->cancel && atomic_load_explicit(j->req->cancel, memory_order_relaxed);
}

static const float *kp_weights(const kp_job *j, int64_t row)
{
    const k_preview_req *q = j->req;
    if (!q->imatrix)
        return NULL;
    if (q->imatrix_n_mat <= 1 || q->imatrix_rows <= 0)
        return q->imatrix;
    int64_t mat = row / q->imatrix_rows;
    return mat < q->imatrix_n_mat ? q->imatrix + mat * j->cols : NULL;
}

static void kp_tls_free(kp_tls *s)
{
    free(s->xbuf);
    free(s->sbuf);
    free(s->ybuf);
    free(s->qbuf);
    free(s->scratch);
    memset(s, 0, sizeof *s);
}

/* n floats on a 64-byte boundary: the kernels' 512-bit loads and stores of
 * rows in these buffers then never straddle two cache lines (malloc gave 16
 * bytes past a line for the converted rows: a bf16 preview with 2 threads
 * lost 6%). */
static float *kp_floats(size_t n)
{
    return aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
}

static bool kp_tls_alloc(const kp_job *j, kp_tls *s)
{
    memset(s, 0, sizeof *s);
    size_t c = (size_t)j->cols;
    s->xbuf = j->direct ? NULL : kp_floats((size_t)j->block_rows * c);
    s->sbuf = kp_floats(c);
    s->ybuf = kp_floats(c);
    s->qbuf = malloc(j->fq.row_bytes > 0 ? j->fq.row_bytes : 1);
    s->scratch = calloc(1, sizeof *s->scratch);
    if ((!j->direct && !s->xbuf) || !s->sbuf || !s->ybuf || !s->qbuf || !s->scratch) {
        kp_tls_free(s);
        return false;
    }
    return true;
}

/* Source values of rows [r0, r0+n) (n ≤ block_rows): in place or converted. */
static q_status kp_rows(const kp_job *j, kp_tls *s, int64_t r0, int64_t n, const float **x,
                        q_err *err)
{
    if (j->direct) {
        *x = (const float *)(const void *)(j->t->data + (size_t)(r0 * j->cols) * sizeof(float));
        return Q_OK;
    }
    *x = s->xbuf;
    return q_tensor_read_rows(j->t, r0, n, s->xbuf, err);
}

/* Measures rows [r0, r0+n) into acc (initialised by the caller). With per_row
 * (n == 1 only), the caller reads the row's own sums from acc. */
static q_status kp_measure(const kp_job *j, kp_tls *s, int64_t r0, int64_t n, q_metrics_acc *acc,
                           int64_t *bad, q_err *err)
{
    const float *x0 = NULL;
    q_status st;
    if (j->direct && (st = kp_rows(j, s, r0, n, &x0, err)) != Q_OK)
        return st;
    const bool search = j->req->method == Q_METHOD_WSEARCH;
    for (int64_t i = 0; i < n; i++) {
        if (kp_cancelled(j))
            return Q_ECANCELLED;
        /* f32 rows in place; any other type one row at a time into the
         * thread's buffer, which stays in L1 for the quantizer and the sums */
        const float *x;
        if (j->direct)
            x = x0 + i * j->cols;
        else if ((st = kp_rows(j, s, r0 + i, 1, &x, err)) != Q_OK)
            return st;
        const float *w = kp_weights(j, r0 + i);
        /* NaN and Inf are found by the quantizer's first pass; such a row is
         * scrubbed (they count as zeros) and quantized again */
        int fq = k_fq_row_check(&j->fq, x, s->ybuf, search ? w : NULL, s->qbuf);
        if (fq == K_FQ_NONFINITE) {
            *bad += k_scrub_row(x, s->sbuf, j->cols, j->simd);
            x = s->sbuf;
            fq = k_fq_row(&j->fq, x, s->ybuf, search ? w : NULL, s->qbuf) ? K_FQ_FINITE : 0;
        }
        bool finite = fq == K_FQ_FINITE;
        /* the next row of the source is fetched while this one is summed
         * (7-12% faster previews of f32 tensors on Zen 4, AVX-512 and AVX2),
         * across blocks too, since the guided schedule mostly hands the next
         * block to the same thread (3-4% more); for f16 and bf16 tensors,
         * whose rows are converted one by one, it is what overlaps their
         * reads with work (bf16 4096×4096 to q8_0, 1 thread: 12.9 -> 10.3 ms) */
        const void *next = NULL;
        const size_t at = (size_t)(r0 + i + 1) * j->row_bytes; /* k_acc_row reads 4 cols */
        if (j->t->data && at + 4 * (size_t)j->cols <= j->t->bytes)
            next = j->t->data + at;
        k_acc_row(acc, s->scratch, x, s->ybuf, j->cols, w, j->simd, finite, next);
    }
    return Q_OK;
}

/* Min/max of the finite values of rows [r0, r0+n) (per-tensor grids). */
static q_status kp_range(const kp_job *j, kp_tls *s, int64_t r0, int64_t n, q_fq_ctx *ctx,
                         q_err *err)
{
    const float *x;
    q_status st = kp_rows(j, s, r0, n, &x, err);
    if (st == Q_OK)
        q_fmt_prepare(&j->fq.spec, x, n * j->cols, ctx);
    return st;
}

typedef enum kp_pass { KP_PREPARE, KP_MEASURE } kp_pass;

/* Runs one pass over row blocks [b0, b1) in parallel. MEASURE: accs[b - b0]
 * (initialised here with hist_range) and bad[b - b0]; PREPARE: ctxs[b - b0].
 * rows_of: NULL for consecutive blocks of block_rows, else the row of each
 * "block" (one row each, the sample). */
static q_status kp_pass_run(const kp_job *j, kp_pass pass, int64_t nb, const int64_t *rows_of,
                            double hist_range, q_metrics_acc *accs, int64_t *bad,
                            q_fq_ctx *ctxs, q_err *err)
{
    atomic_int failed = 0;
    int nt = j->req->threads > 0 ? j->req->threads : omp_get_max_threads();
    if (nt > nb)
        nt = nb > 0 ? (int)nb : 1;
#pragma omp parallel num_threads(nt)
    {
        kp_tls s;
        q_err lerr = {{0}};
        bool ok = kp_tls_alloc(j, &s);
        /* the exact pass's blocks are only merged: their histogram counts
         * stay in the thread's counters until its last block (a harvest per
         * block of 16 rows took 1.7% of a q4_0 preview) */
        const bool merged = pass == KP_MEASURE && !rows_of;
        q_metrics_acc *last = NULL;
        /* guided: long runs of consecutive blocks per thread (the rows keep
         * streaming), short ones at the end for the balance */
#pragma omp for schedule(guided)
        for (int64_t b = 0; b < nb; b++) {
            if (atomic_load_explicit(&failed, memory_order_relaxed))
                continue;
            int64_t r0 = rows_of ? rows_of[b] : b * j->block_rows;
            int64_t left = j->rows - r0;
            int64_t n = rows_of ? 1 : (left < j->block_rows ? left : j->block_rows);
            q_status st;
            if (!ok) {
                st = q_fail(&lerr, Q_ENOMEM, "%s: out of memory", j->t->name);
            } else if (kp_cancelled(j)) {
                st = Q_ECANCELLED;
            } else if (pass == KP_PREPARE) {
                st = kp_range(j, &s, r0, n, &ctxs[b], &lerr);
            } else {
                q_metrics_init(&accs[b], hist_range);
                bad[b] = 0;
                st = kp_measure(j, &s, r0, n, &accs[b], &bad[b], &lerr);
                last = &accs[b];
                if (!merged)
                    k_acc_flush(&accs[b], s.scratch);
            }
            if (st != Q_OK) {
#pragma omp critical(kp_err)
                if (!atomic_load(&failed)) {
                    if (err && st != Q_ECANCELLED)
                        *err = lerr;
                    atomic_store(&failed, (int)st);
                }
            }
        }
        if (last)
            k_acc_flush(last, s.scratch);
        kp_tls_free(&s);
    }
    q_status st = (q_status)atomic_load(&failed);
    if (st == Q_ECANCELLED || (st == Q_OK && kp_cancelled(j)))
        return q_fail(err, Q_ECANCELLED, "cancelled");
    return st;
}

static void kp_result(k_preview_result *r, const q_metrics_acc *acc, int64_t rows_done,
                      int64_t bad, bool exact, double t0)
{
    memset(r, 0, sizeof *r);
    r->exact = exact;
    r->rows_done = rows_done;
    r->acc = *acc;
    q_metrics_finish(acc, &r->metrics);
    r->rel_rmse_lo = r->rel_rmse_hi = r->metrics.rel_rmse;
    r->sqnr_lo_db = r->sqnr_hi_db = r->metrics.sqnr_db;
    r->n_nonfinite = bad;
    r->seconds = kp_now() - t0;
}

/* The band of a sampled estimate (k_preview.h: ratio estimator). */
static void kp_band(k_preview_result *r, const q_metrics_acc *row_accs, int64_t n, int64_t N)
{
    double se = 0, sw = 0;
    for (int64_t i = 0; i < n; i++) {
        se += row_accs[i].sum_e2;
        sw += row_accs[i].sum_w2;
    }
    if (n < 2 || sw <= 0)
        return;
    double R = se / sw, ss = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = row_accs[i].sum_e2 - R * row_accs[i].sum_w2;
        ss += d * d;
    }
    double wbar = sw / (double)n, f = (double)n / (double)N;
    double var = (1.0 - f) * (ss / (double)(n - 1)) / ((double)n * wbar * wbar);
    double h = 1.96 * sqrt(var > 0 ? var : 0);
    double lo = R - h > 0 ? R - h : 0, hi = R + h;
    r->rel_rmse_lo = sqrt(lo);
    r->rel_rmse_hi = sqrt(hi);
    r->sqnr_lo_db = hi > 0 ? -10.0 * log10(hi) : INFINITY;
    r->sqnr_hi_db = lo > 0 ? -10.0 * log10(lo) : INFINITY;
}

static void kp_merge(q_metrics_acc *out, double range, const q_metrics_acc *accs,
                     const int64_t *bad, int64_t nb, int64_t *bad_total)
{
    q_metrics_init(out, range);
    *bad_total = 0;
    for (int64_t b = 0; b < nb; b++) {
        q_metrics_merge(out, &accs[b]);
        *bad_total += bad[b];
    }
}

/* The first failure of the device (Q_EINTERNAL, Q_ENOMEM) turns the GPU
 * path off for the rest of the process, so that a broken device or one out
 * of memory costs one attempt, not one a preview; its message is kept for
 * the user (k_preview_gpu_failed). */
static pthread_mutex_t kp_gpu_lock = PTHREAD_MUTEX_INITIALIZER;
static bool kp_gpu_off;
static q_err kp_gpu_err;

bool k_preview_gpu_failed(char *why, size_t cap)
{
    pthread_mutex_lock(&kp_gpu_lock);
    const bool off = kp_gpu_off;
    if (why && cap)
        snprintf(why, cap, "%s", off ? kp_gpu_err.msg : "");
    pthread_mutex_unlock(&kp_gpu_lock);
    return off;
}

void k_preview_gpu_retry(void)
{
    pthread_mutex_lock(&kp_gpu_lock);
    kp_gpu_off = false;
    kp_gpu_err.msg[0] = 0;
    pthread_mutex_unlock(&kp_gpu_lock);
}

static void kp_gpu_fail(const q_err *e)
{
    pthread_mutex_lock(&kp_gpu_lock);
    if (!kp_gpu_off) {
        kp_gpu_off = true;
        kp_gpu_err = *e;
    }
    pthread_mutex_unlock(&kp_gpu_lock);
}

/* Whether the exact pass runs on the CUDA device: a CUDA build with a usable
 * GPU, or its emulation (k_cuda_fused_available), a format with a CUDA kernel
 * quantized plainly (round-to-nearest, or a weighted search without weights),
 * a tensor stored in memory as f32, f16 or bf16, one importance vector at
 * most, and neither force_scalar nor QTUNE_NO_GPU set (to anything but 0). */
static bool kp_gpu_wanted(const kp_job *j, bool wsearch)
{
    const k_preview_req *q = j->req;
    const q_tensor *t = j->t;
    if (q->force_scalar || wsearch || !t->data || !k_cuda_fused_has(&q->fmt) ||
        (q->method != Q_METHOD_RTN && q->method != Q_METHOD_WSEARCH) ||
        (t->dtype != Q_DT_F32 && t->dtype != Q_DT_F16 && t->dtype != Q_DT_BF16) ||
        (q->imatrix && q->imatrix_n_mat > 1) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
        return false;
    const char *off = getenv("QTUNE_NO_GPU");
    if ((off && *off && strcmp(off, "0") != 0) || k_preview_gpu_failed(NULL, 0))
        return false;
    return k_cuda_fused_available(NULL, 0);
}

/* The exact figures on the GPU, slices of KP_GPU_CHUNK_VALUES values
 * (per-tensor grids with the range of the prepare pass): into *acc and
 * *bad. Q_ECANCELLED between slices; other failures leave the caller to
 * measure on the CPU. */
static q_status kp_gpu_exact(const kp_job *j, double range, q_metrics_acc *acc, int64_t *bad,
                             q_err *err)
{
    const q_tensor *t = j->t;
    const k_src type = t->dtype == Q_DT_F32   ? K_SRC_F32
                       : t->dtype == Q_DT_F16 ? K_SRC_F16
                                              : K_SRC_BF16;
    /* a tensor that cannot be kept (device memory) is copied slice by slice */
    if (t->bytes <= KP_GPU_KEEP_BYTES && !k_cuda_kept(t->data, t->bytes))
        (void)k_cuda_keep(t->data, t->bytes, NULL);
    const float tr[2] = {j->fq.ctx.lo, j->fq.ctx.hi};
    const float *trange = q_fmt_needs_prepare(&j->req->fmt) ? tr : NULL;
    int64_t step = KP_GPU_CHUNK_VALUES / j->cols;
    step = step > 0 ? step : 1;
    q_metrics_init(acc, range);
    *bad = 0;
    for (int64_t r0 = 0; r0 < j->rows; r0 += step) {
        if (kp_cancelled(j))
            return q_fail(err, Q_ECANCELLED, "cancelled");
        const int64_t n = j->rows - r0 < step ? j->rows - r0 : step;
        q_status st = k_cuda_preview(t->data + (size_t)r0 * j->row_bytes, type, n, j->cols,
                                     &j->req->fmt, kp_weights(j, r0), range, trange, acc, bad,
                                     err);
        if (st != Q_OK)
            return st;
    }
    return Q_OK;
}

q_status k_preview_tensor(const k_preview_req *req, k_preview_cb cb, void *user,
                          k_preview_result *final, q_err *err)
{
    const double t0 = kp_now();
    const q_tensor *t = req->tensor;
    kp_job j = {.req = req, .t = t, .rows = t->rows, .cols = t->cols};
    q_metrics_acc *accs = NULL;
    int64_t *bad = NULL, *srows = NULL;
    q_fq_ctx *ctxs = NULL;
    if (t->rows <= 0 || t->cols <= 0)
        return q_fail(err, Q_EUSAGE, "%s: empty tensor", t->name);
    if (!t->readable)
        return q_fail(err, Q_EDATA, "%s: cannot read type %s", t->name, q_dtype_name(t->dtype));
    q_status st = k_fq_init(&j.fq, &req->fmt, t->cols, req->force_scalar, err);
    if (st != Q_OK)
        return st;
    j.simd = j.fq.simd;
    j.block_rows = KP_BLOCK_VALUES / t->cols > 0 ? KP_BLOCK_VALUES / t->cols : 1;
    j.row_bytes = (size_t)q_dtype_bytes(t->dtype, t->cols);
    j.direct = t->dtype == Q_DT_F32 && t->data && ((uintptr_t)t->data % sizeof(float)) == 0 &&
               __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
    const int64_t nb = (t->rows + j.block_rows - 1) / j.block_rows;
    /* Fused kernels only serve round-to-nearest (q8_0 ignores importance). */
    const bool wsearch =
        req->method == Q_METHOD_WSEARCH && req->imatrix && req->fmt.id != Q_FMT_Q8_0;
    const bool slow = !j.fq.fused || wsearch;
    accs = calloc((size_t)nb, sizeof *accs);
    bad = calloc((size_t)nb, sizeof *bad);
    if (!accs || !bad) {
        st = q_fail(err, Q_ENOMEM, "%s: out of memory", t->name);
        goto done;
    }
    /* Per-tensor grids: the tensor's range first. */
    if (q_fmt_needs_prepare(&req->fmt)) {
        ctxs = calloc((size_t)nb, sizeof *ctxs);
        if (!ctxs) {
            st = q_fail(err, Q_ENOMEM, "%s: out of memory", t->name);
            goto done;
        }
        st = kp_pass_run(&j, KP_PREPARE, nb, NULL, 0, NULL, NULL, ctxs, err);
        if (st != Q_OK)
            goto done;
        for (int64_t b = 0; b < nb; b++)
            q_fq_ctx_merge(&j.fq.ctx, &ctxs[b]);
        if (!j.fq.ctx.ready)
            j.fq.ctx.ready = true;
    }
    /* Histogram range: given, or from a probe of the first rows. */
    double range = req->hist_range > 0 ? req->hist_range : 0;
    if (range <= 0) {
        int64_t slow_rows = KP_PROBE_VALUES_SLOW / t->cols;
        slow_rows = slow_rows > 0 ? slow_rows : 1;
        int64_t pr = req->hist_probe_rows > 0 ? req->hist_probe_rows
                     : slow                   ? slow_rows
                                              : j.block_rows;
        if (pr > t->rows)
            pr = t->rows;
        /* one row per work item, so that even a probe of two rows is parallel */
        q_metrics_acc *pacc = calloc((size_t)pr, sizeof *pacc);
        int64_t *pbad = calloc((size_t)pr, sizeof *pbad);
        int64_t *prow = malloc((size_t)pr * sizeof *prow);
        if (pacc && pbad && prow) {
            for (int64_t i = 0; i < pr; i++)
                prow[i] = i;
            st = kp_pass_run(&j, KP_MEASURE, pr, prow, 0, pacc, pbad, NULL, err);
        } else {
            st = q_fail(err, Q_ENOMEM, "%s: out of memory", t->name);
        }
        double mx = 0;
        for (int64_t b = 0; st == Q_OK && b < pr; b++) /* NaN wins, as in q_metrics */
            mx = isnan(pacc[b].max_abs) || pacc[b].max_abs > mx ? pacc[b].max_abs : mx;
        free(pacc);
        free(pbad);
        free(prow);
        if (st != Q_OK)
            goto done;
        range = mx > 0 ? 1.25 * mx : 0;
    }
    /* Estimate from evenly spaced rows. */
    int64_t ns = (slow ? KP_SAMPLE_VALUES_SLOW : KP_SAMPLE_VALUES) / t->cols;
    const int64_t ns_min = slow ? KP_SAMPLE_MIN_SLOW : KP_SAMPLE_MIN;
    ns = ns < ns_min ? ns_min : ns > KP_SAMPLE_MAX ? KP_SAMPLE_MAX : ns;
    if (!req->skip_estimate && cb && ns * 2 <= t->rows) {
        q_metrics_acc *racc = calloc((size_t)ns, sizeof *racc);
        int64_t *rbad = calloc((size_t)ns, sizeof *rbad);
        srows = malloc((size_t)ns * sizeof *srows);
        if (!racc || !rbad || !srows) {
            free(racc);
            free(rbad);
            st = q_fail(err, Q_ENOMEM, "%s: out of memory", t->name);
            goto done;
        }
        for (int64_t i = 0; i < ns; i++)
            srows[i] = (int64_t)(((double)i + 0.5) * (double)t->rows / (double)ns);
        st = kp_pass_run(&j, KP_MEASURE, ns, srows, range, racc, rbad, NULL, err);
        if (st == Q_OK) {
            q_metrics_acc sacc;
            int64_t sbad;
            k_preview_result est;
            kp_merge(&sacc, range, racc, rbad, ns, &sbad);
            kp_result(&est, &sacc, ns, sbad, false, t0);
            kp_band(&est, racc, ns, t->rows);
            cb(user, &est);
        }
        free(racc);
        free(rbad);
        if (st != Q_OK)
            goto done;
    }
    /* Exact figures over every row: on the GPU where there is one (on a
     * failure there, other than a cancel, on the CPU after all) */
    {
        q_metrics_acc acc;
        int64_t total_bad = 0;
        bool gpu = kp_gpu_wanted(&j, wsearch);
        if (gpu) {
            q_err gerr = {{0}};
            st = kp_gpu_exact(&j, range, &acc, &total_bad, &gerr);
            if (st == Q_ECANCELLED) {
                st = q_fail(err, Q_ECANCELLED, "cancelled");
                goto done;
            }
            gpu = st == Q_OK;
            /* the device failed (a usage error, which the checks above
             * should rule out, falls back for this preview only) */
            if (st == Q_EINTERNAL || st == Q_ENOMEM)
                kp_gpu_fail(&gerr);
        }
        if (!gpu) {
            st = kp_pass_run(&j, KP_MEASURE, nb, NULL, range, accs, bad, NULL, err);
            if (st != Q_OK)
                goto done;
            kp_merge(&acc, range, accs, bad, nb, &total_bad);
        }
        k_preview_result res;
        kp_result(&res, &acc, t->rows, total_bad, true, t0);
        res.on_gpu = gpu;
        if (cb)
            cb(user, &res);
        if (final)
            *final = res;
    }
done:
    free(accs);
    free(bad);
    free(ctxs);
    free(srows);
    return st;
}

q_status k_preview_hook(const q_tensor_preview_args *a, q_tensor_report *rep, q_err *err)
{
    k_preview_req req = {
        .model = a->model,
        .tensor = a->tensor,
        .fmt = a->res->fmt,
        .method = a->res->method,
        .imatrix = a->imatrix,
        .cancel = a->cancel,
        .skip_estimate = true,
        .imatrix_n_mat = a->imatrix_n_mat,
        .imatrix_rows = a->imatrix_rows,
        .hist_probe_rows = a->hist_probe_rows,
    };
    k_preview_result r;
    q_status st = k_preview_tensor(&req, NULL, NULL, &r, err);
    if (st != Q_OK)
        return st;
    rep->acc = r.acc;
    rep->metrics = r.metrics;
    rep->n_nonfinite = r.n_nonfinite;
    rep->have_metrics = true;
    return Q_OK;
}
