/* an_stats.c — streaming tensor statistics.
 *
 * Pass 1 accumulates shifted power sums (k_stats) over chunks of rows, in
 * parallel, merged in chunk order so the result does not depend on the thread
 * count. The outlier count needs the final mean and std, which pass 1 only knows
 * at its end; so pass 1 also collects every value farther than thr = 4.5 σ̂ from a
 * pivot (σ̂ from a small row sample). If the final band |w − mean| > 6 σ is
 * covered by what was collected, the count comes from the candidates; otherwise
 * (buffer overflow, or a sample that misjudged σ) a second pass counts exactly.
 */
#include "an_stats.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "k_stats.h"
#include "q_dtype.h"

#define CHUNK_ELEMS (64 * 1024)     /* elements per work item */
#define SAMPLE_ROWS 64              /* rows read to choose pivot and threshold */
#define CAND_CAP (1 << 20)          /* candidate floats per thread (4 MiB) */
/* Candidates lie beyond CAND_SIGMAS sampled standard deviations of the pivot: a
 * margin of 6/4.5 for the sample's error in mean and std; a worse sample only
 * costs a second pass, never a wrong count. */
#define CAND_SIGMAS 4.5

typedef struct chunk_plan {
    int64_t rows_per_chunk;
    int64_t n_chunks;
} chunk_plan;

static chunk_plan plan_chunks(const q_tensor *t)
{
    chunk_plan p;
    p.rows_per_chunk = t->cols >= CHUNK_ELEMS ? 1 : CHUNK_ELEMS / t->cols;
    p.n_chunks = (t->rows + p.rows_per_chunk - 1) / p.rows_per_chunk;
    return p;
}

static bool direct_src(const q_tensor *t, k_src *src)
{
    switch (t->dtype) {
    case Q_DT_F32:
        *src = K_SRC_F32;
        return true;
    case Q_DT_F16:
        *src = K_SRC_F16;
        return true;
    case Q_DT_BF16:
        *src = K_SRC_BF16;
        return true;
    default:
        return false;
    }
}

/* First finite value of row r, or NAN. */
static float first_finite(const float *row, int64_t cols)
{
    for (int64_t c = 0; c < cols; c++)
        if (isfinite(row[c]))
            return row[c];
    return NAN;
}

/* Mean and std of up to SAMPLE_ROWS evenly spaced rows (finite values only),
 * through the same moment kernel as the full pass (straight from the mapping
 * when the type allows), shifted by the first finite value of the first row
 * that has one. Rows are summed in parallel and merged in order. The threshold
 * FLT_MAX collects no candidates but still sends ±Inf (and NaN) to the scalar
 * path, which leaves them out. */
static q_status sample_pivot(const q_tensor *t, float *pivot, float *thr, q_err *err)
{
    int64_t nr = t->rows < SAMPLE_ROWS ? t->rows : SAMPLE_ROWS;
    float *row = malloc((size_t)t->cols * sizeof *row);
    if (!row)
        return q_fail(err, Q_ENOMEM, "%s: out of memory", t->name);
    float shift = NAN;
    int64_t k0 = 0;
    for (; k0 < nr && isnan(shift); k0++) {
        q_status st = q_tensor_read_rows(t, k0 * t->rows / nr, 1, row, err);
        if (st != Q_OK) {
            free(row);
            return st;
        }
        shift = first_finite(row, t->cols);
    }
    free(row);
    *pivot = 0;
    *thr = 0;
    if (isnan(shift))
        return Q_OK;
    k0--; /* the first row with a finite value; rows before it add nothing */

    k_src src_type = K_SRC_F32;
    bool direct = direct_src(t, &src_type);
    uint64_t row_bytes = q_dtype_bytes(t->dtype, t->cols);
    k_moments part[SAMPLE_ROWS];
    bool oom = false;
#pragma omp parallel reduction(|| : oom)
    {
        float *buf = direct ? NULL : malloc((size_t)t->cols * sizeof *buf);
        q_err lerr;
        oom = !direct && !buf;
#pragma omp for schedule(static)
        for (int64_t k = k0; k < nr; k++) {
            int64_t r = k * t->rows / nr;
            k_moments_init(&part[k], NULL, 0);
            if (direct) {
                k_moments_add(&part[k], t->data + (uint64_t)r * row_bytes, src_type, t->cols,
                              shift, FLT_MAX);
            } else if (buf) {
                q_tensor_read_rows(t, r, 1, buf, &lerr); /* range is valid */
                k_moments_add(&part[k], buf, K_SRC_F32, t->cols, shift, FLT_MAX);
            }
        }
        free(buf);
    }
    if (oom)
        return q_fail(err, Q_ENOMEM, "%s: out of memory", t->name);
    k_moments m;
    k_moments_init(&m, NULL, 0);
    for (int64_t k = k0; k < nr; k++)
        k_moments_merge(&m, &part[k]);
    if (m.n == 0)
        return Q_OK;
    double mean = m.s1 / (double)m.n, var = m.s2 / (double)m.n - mean * mean;
    *pivot = (float)((double)shift + mean);
    *thr = (float)(CAND_SIGMAS * sqrt(var > 0 ? var : 0));
    return Q_OK;
}

static inline bool is_outlier(double x, double mean, double band)
{
    return fabs(x - mean) > band;
}

/* an_tensor_stats_side; *ran: side has run (in the pass's region). */
static q_status tensor_stats(const q_tensor *t, void (*side)(void *), void *user, bool *ran,
                             an_stats *out, q_err *err)
{
    memset(out, 0, sizeof *out);
    if (!t->readable)
        return q_fail(err, Q_EUSAGE, "%s: unsupported type %s", t->name, q_dtype_name(t->dtype));
    float pivot, thr;
    q_status st = sample_pivot(t, &pivot, &thr, err);
    if (st != Q_OK)
        return st;

    chunk_plan cp = plan_chunks(t);
    k_src src_type = K_SRC_F32;
    bool direct = direct_src(t, &src_type);
    uint64_t row_bytes = q_dtype_bytes(t->dtype, t->cols);
    int nthreads = omp_get_max_threads();
    if (cp.n_chunks < nthreads)
        nthreads = (int)cp.n_chunks;

    k_moments *chunks = calloc((size_t)cp.n_chunks, sizeof *chunks);
    float **cand = calloc((size_t)nthreads, sizeof *cand);
    int64_t *cand_used = calloc((size_t)nthreads, sizeof *cand_used);
    bool overflow = false, oom = false;
    if (!chunks || !cand || !cand_used) {
        oom = true;
        goto done;
    }

#pragma omp parallel num_threads(nthreads) reduction(|| : overflow, oom)
    {
        int tid = omp_get_thread_num();
        float *buf = direct ? NULL : malloc((size_t)cp.rows_per_chunk * t->cols * sizeof *buf);
        cand[tid] = malloc(CAND_CAP * sizeof(float));
        if ((!direct && !buf) || !cand[tid])
            oom = true;
        q_err lerr;
#pragma omp single nowait
        {
            if (side)
                side(user);
            *ran = true;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < cp.n_chunks; c++) {
            if (oom)
                continue;
            int64_t r0 = c * cp.rows_per_chunk;
            int64_t nr = t->rows - r0 < cp.rows_per_chunk ? t->rows - r0 : cp.rows_per_chunk;
            k_moments *m = &chunks[c];
            k_moments_init(m, cand[tid] + cand_used[tid], CAND_CAP - cand_used[tid]);
            if (direct) {
                k_moments_add(m, t->data + (uint64_t)r0 * row_bytes, src_type, nr * t->cols,
                              pivot, thr);
            } else {
                q_tensor_read_rows(t, r0, nr, buf, &lerr); /* range is valid */
                k_moments_add(m, buf, K_SRC_F32, nr * t->cols, pivot, thr);
            }
            cand_used[tid] += m->n_cand;
            overflow = overflow || m->cand_overflow;
        }
        free(buf);
    }
    if (oom)
        goto done;

    k_moments tot;
    k_moments_init(&tot, NULL, 0);
    for (int64_t c = 0; c < cp.n_chunks; c++)
        k_moments_merge(&tot, &chunks[c]);

    out->n = tot.n;
    out->n_nan = tot.n_nan;
    out->n_inf = tot.n_inf;
    out->passes = 1;
    if (tot.n > 0) {
        double n = (double)tot.n, e = tot.s1 / n;
        double m2 = tot.s2 / n - e * e;
        double m4 = tot.s4 / n - 4 * e * tot.s3 / n + 6 * e * e * tot.s2 / n - 3 * e * e * e * e;
        if (m2 < 0)
            m2 = 0;
        out->mean = (double)pivot + e;
        out->std = sqrt(m2);
        out->kurtosis = m2 > 0 ? m4 / (m2 * m2) : 0;
        out->min = tot.min;
        out->max = tot.max;
        out->absmax = fmax(fabs(out->min), fabs(out->max));
    }

    double band = 6 * out->std;
    int64_t n_out = 0;
    bool covered = !overflow && band - fabs(out->mean - (double)pivot) >= (double)thr;
    if (tot.n == 0 || (out->max - out->mean <= band && out->mean - out->min <= band)) {
        n_out = 0; /* nothing lies outside the band */
    } else if (covered) {
        /* each thread counts its own candidates (2.3M over the 147 tensors of the bench model) */
        int64_t total = 0;
        for (int tid = 0; tid < nthreads; tid++)
            total += cand_used[tid];
        const double mean = out->mean;
#pragma omp parallel for num_threads(nthreads) reduction(+ : n_out) if (total >= 8192)
        for (int tid = 0; tid < nthreads; tid++)
            for (int64_t i = 0; i < cand_used[tid]; i++)
                n_out += is_outlier(cand[tid][i], mean, band);
    } else {
        out->passes = 2;
#pragma omp parallel num_threads(nthreads) reduction(+ : n_out) reduction(|| : oom)
        {
            float *buf = malloc((size_t)cp.rows_per_chunk * t->cols * sizeof *buf);
            q_err lerr;
            if (!buf)
                oom = true;
#pragma omp for schedule(dynamic, 1)
            for (int64_t c = 0; c < cp.n_chunks; c++) {
                if (!buf)
                    continue;
                int64_t r0 = c * cp.rows_per_chunk;
                int64_t nr = t->rows - r0 < cp.rows_per_chunk ? t->rows - r0 : cp.rows_per_chunk;
                q_tensor_read_rows(t, r0, nr, buf, &lerr);
                for (int64_t i = 0; i < nr * t->cols; i++)
                    n_out += isfinite(buf[i]) && is_outlier(buf[i], out->mean, band);
            }
            free(buf);
        }
    }
    out->n_outliers = n_out;
    out->outlier_ratio = tot.n ? (double)n_out / (double)tot.n : 0;

done:
    if (cand)
        for (int tid = 0; tid < nthreads; tid++)
            free(cand[tid]);
    free(cand);
    free(cand_used);
    free(chunks);
    if (oom)
        return q_fail(err, Q_ENOMEM, "%s: out of memory computing statistics", t->name);
    return Q_OK;
}

q_status an_tensor_stats_side(const q_tensor *t, void (*side)(void *), void *user, an_stats *out,
                              q_err *err)
{
    bool ran = false;
    q_status st = tensor_stats(t, side, user, &ran, out, err);
    if (side && !ran) /* the pass stopped before its region */
        side(user);
    return st;
}

q_status an_tensor_stats(const q_tensor *t, an_stats *out, q_err *err)
{
    return an_tensor_stats_side(t, NULL, NULL, out, err);
}
