/* test_metrics.c — q_metrics: every figure against a long-double reference on
 * random data (relative tolerance 1e-12), merge of split accumulators, the edge
 * cases of q_metrics_finish, histogram binning, NaN propagation and a
 * cancellation case where Σw² - Σŵ² would lose every digit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "q_metrics.h"


static void assert_rel(double got, double want, double tol)
{
    if (isinf(want)) {
        assert_true(got == want);
        return;
    }
    double d = fabs(got - want);
    double m = fmax(fabs(want), 1e-300);
    if (!(d <= tol * m)) {
        print_error("got %.17g want %.17g (rel %.3g > %.3g)\n", got, want, d / m, tol);
        fail();
    }
}

typedef struct ref {
    long double n, w2, q2, wq, e2, iwe2, iww2, maxe;
} ref;

static ref reference(const float *w, const float *q, int64_t rows, int64_t cols,
                     const float *im)
{
    ref r;
    memset(&r, 0, sizeof r);
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t c = 0; c < cols; c++) {
            long double a = w[i * cols + c], b = q[i * cols + c], e = b - a;
            r.w2 += a * a;
            r.q2 += b * b;
            r.wq += a * b;
            r.e2 += e * e;
            if (im) {
                r.iwe2 += (long double)im[c] * e * e;
                r.iww2 += (long double)im[c] * a * a;
            }
            if (fabsl(e) > r.maxe)
                r.maxe = fabsl(e);
        }
    }
    r.n = (long double)(rows * cols);
    return r;
}

static void check_against(const q_metrics *m, const ref *r, double tol)
{
    assert_int_equal(m->n, (int64_t)r->n);
    assert_rel(m->mse, (double)(r->e2 / r->n), tol);
    assert_rel(m->rmse, (double)sqrtl(r->e2 / r->n), tol);
    assert_rel(m->rel_rmse, (double)sqrtl(r->e2 / r->w2), tol);
    assert_rel(m->sqnr_db, (double)(10.0L * log10l(r->w2 / r->e2)), tol);
    assert_rel(m->cosine, (double)(r->wq / sqrtl(r->w2 * r->q2)), tol);
    assert_true(m->max_abs == (double)r->maxe); /* exact: a max of exact differences */
    if (r->iww2 > 0)
        assert_rel(m->weighted_rel_err, (double)sqrtl(r->iwe2 / r->iww2), tol);
}

/* 64 rows × 4096 of N(0,1) weights, ŵ = w + small noise (like 4-bit error). */
static void test_random_vs_long_double(void **state)
{
    (void)state;
    rng_state = 0x1234567;
    const int64_t rows = 64, cols = 4096;
    float *w = malloc(sizeof(float) * (size_t)(rows * cols));
    float *q = malloc(sizeof(float) * (size_t)(rows * cols));
    float im[4096];
    assert_non_null(w);
    assert_non_null(q);
    for (int64_t i = 0; i < rows * cols; i++) {
        w[i] = grand() * 0.02f;
        q[i] = w[i] + grand() * 0.001f;
    }
    for (int c = 0; c < cols; c++)
        im[c] = (float)exp(2.0 * grand());
    q_metrics_acc a;
    q_metrics_init(&a, 0.004);
    q_metrics_add(&a, w, q, rows, cols, im);
    q_metrics m;
    q_metrics_finish(&a, &m);
    ref r = reference(w, q, rows, cols, im);
    check_against(&m, &r, 1e-12);
    int64_t total = 0;
    for (int i = 0; i < Q_ERR_HIST_BINS; i++)
        total += a.hist[i];
    assert_int_equal(total, rows * cols);

    /* Split in three uneven parts (the way threads would), merge, same figures
     * and the same histogram. */
    q_metrics_acc p[3];
    const int64_t cut[4] = {0, 5, 41, rows};
    for (int k = 0; k < 3; k++) {
        q_metrics_init(&p[k], 0.004);
        q_metrics_add(&p[k], w + cut[k] * cols, q + cut[k] * cols, cut[k + 1] - cut[k], cols,
                      im);
    }
    q_metrics_merge(&p[2], &p[0]);
    q_metrics_merge(&p[2], &p[1]);
    q_metrics mm;
    q_metrics_finish(&p[2], &mm);
    check_against(&mm, &r, 1e-12);
    assert_memory_equal(p[2].hist, a.hist, sizeof a.hist);
    /* No imatrix: weighted figure is NaN. */
    q_metrics_acc b;
    q_metrics_init(&b, 0.0);
    q_metrics_add(&b, w, q, rows, cols, NULL);
    q_metrics_finish(&b, &m);
    assert_true(isnan(m.weighted_rel_err));
    free(w);
    free(q);
}

/* Large weights, tiny error: Σw² - Σŵ² would cancel to noise; the direct Σe²
 * must still match the reference to 1e-12. */
static void test_cancellation(void **state)
{
    (void)state;
    rng_state = 99;
    const int64_t n = 100000;
    float *w = malloc(sizeof(float) * (size_t)n);
    float *q = malloc(sizeof(float) * (size_t)n);
    assert_non_null(w);
    assert_non_null(q);
    for (int64_t i = 0; i < n; i++) {
        w[i] = 1.0e4f + (float)(i % 100);
        q[i] = nextafterf(w[i], (i & 1) ? INFINITY : 0.0f); /* one ulp off */
    }
    q_metrics_acc a;
    q_metrics_init(&a, 0.0);
    q_metrics_add(&a, w, q, 1, n, NULL);
    q_metrics m;
    q_metrics_finish(&a, &m);
    ref r = reference(w, q, 1, n, NULL);
    assert_rel(m.mse, (double)(r.e2 / r.n), 1e-12);
    assert_rel(m.sqnr_db, (double)(10.0L * log10l(r.w2 / r.e2)), 1e-12);
    assert_true(m.sqnr_db > 130.0);
    free(w);
    free(q);
}

static void test_exact_and_zero(void **state)
{
    (void)state;
    float w[6] = {1.0f, -2.0f, 3.5f, 0.0f, 1e-20f, -7.0f};
    float im[3] = {1.0f, 2.0f, 0.5f};
    q_metrics_acc a;
    q_metrics m;
    /* Exact copy: SQNR +inf, no error anywhere, cosine 1. */
    q_metrics_init(&a, 1.0);
    q_metrics_add(&a, w, w, 2, 3, im);
    q_metrics_finish(&a, &m);
    assert_true(isinf(m.sqnr_db) && m.sqnr_db > 0);
    assert_true(m.mse == 0.0 && m.rmse == 0.0 && m.rel_rmse == 0.0 && m.max_abs == 0.0);
    assert_true(fabs(m.cosine - 1.0) <= 1e-15);
    assert_true(m.weighted_rel_err == 0.0);
    assert_int_equal(a.hist[Q_ERR_HIST_BINS / 2], 6); /* e = 0: the bin right of centre */
    /* All zeros: the documented conventions. */
    float z[4] = {0}, im4[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    q_metrics_init(&a, 0.0);
    q_metrics_add(&a, z, z, 1, 4, im4);
    q_metrics_finish(&a, &m);
    assert_true(isinf(m.sqnr_db) && m.sqnr_db > 0);
    assert_true(m.rel_rmse == 0.0 && m.cosine == 1.0 && m.mse == 0.0);
    assert_true(m.weighted_rel_err == 0.0);
    /* Zero weights, non-zero result: SQNR -inf, relative RMSE +inf, cosine 0. */
    float o[4] = {0.0f, 1.0f, 0.0f, 0.0f};
    q_metrics_init(&a, 0.0);
    q_metrics_add(&a, z, o, 1, 4, NULL);
    q_metrics_finish(&a, &m);
    assert_true(isinf(m.sqnr_db) && m.sqnr_db < 0);
    assert_true(isinf(m.rel_rmse) && m.cosine == 0.0 && m.mse == 0.25 && m.max_abs == 1.0);
    /* Quantized to zero: cosine 0, rel RMSE 1, SQNR 0 dB. */
    q_metrics_init(&a, 0.0);
    q_metrics_add(&a, o, z, 1, 4, NULL);
    q_metrics_finish(&a, &m);
    assert_true(m.cosine == 0.0 && m.rel_rmse == 1.0 && m.sqnr_db == 0.0);
    /* Sign flip: cosine -1. */
    float f[3] = {1.0f, -2.0f, 3.0f}, g[3] = {-1.0f, 2.0f, -3.0f};
    q_metrics_init(&a, 0.0);
    q_metrics_add(&a, f, g, 1, 3, NULL);
    q_metrics_finish(&a, &m);
    assert_true(m.cosine == -1.0);
    assert_rel(m.rel_rmse, 2.0, 1e-15);
    /* Nothing added. */
    q_metrics_init(&a, 0.0);
    q_metrics_finish(&a, &m);
    assert_true(m.n == 0 && m.mse == 0.0 && isinf(m.sqnr_db) && m.cosine == 1.0);
    assert_true(isnan(m.weighted_rel_err));
}

static void test_histogram_bins(void **state)
{
    (void)state;
    /* Range ±1 in 64 bins of 1/32: e is ŵ - w with w = 0. */
    float e[12] = {-5.0f, -1.0f, -0.99f, -1.0f / 64, 0.0f, 1.0f / 64,
                   0.5f,  0.999f, 1.0f,  7.0f,       -INFINITY, INFINITY};
    const int bin[12] = {0, 0, 0, 31, 32, 32, 48, 63, 63, 63, 0, 63};
    float w[12] = {0};
    q_metrics_acc a;
    q_metrics_init(&a, 1.0);
    q_metrics_add(&a, w, e, 1, 12, NULL);
    int64_t want[Q_ERR_HIST_BINS] = {0};
    for (int i = 0; i < 12; i++)
        want[bin[i]]++;
    assert_memory_equal(a.hist, want, sizeof want);
    /* hist_range 0: no histogram. */
    q_metrics_init(&a, 0.0);
    q_metrics_add(&a, w, e, 1, 10, NULL);
    for (int i = 0; i < Q_ERR_HIST_BINS; i++)
        assert_true(a.hist[i] == 0);
}

static void test_nan_propagates(void **state)
{
    (void)state;
    float w[4] = {1.0f, 2.0f, 3.0f, 4.0f}, q[4] = {1.0f, NAN, 3.0f, 5.0f};
    q_metrics_acc a, b;
    q_metrics_init(&a, 1.0);
    q_metrics_add(&a, w, q, 1, 4, NULL);
    q_metrics m;
    q_metrics_finish(&a, &m);
    assert_true(isnan(m.mse) && isnan(m.max_abs) && isnan(m.sqnr_db));
    int64_t total = 0;
    for (int i = 0; i < Q_ERR_HIST_BINS; i++)
        total += a.hist[i];
    assert_int_equal(total, 3); /* the NaN is left out of the histogram */
    /* NaN max survives a merge into a clean accumulator. */
    q_metrics_init(&b, 1.0);
    q_metrics_add(&b, w, w, 1, 4, NULL);
    q_metrics_merge(&b, &a);
    assert_true(isnan(b.max_abs));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_vs_long_double),
        cmocka_unit_test(test_cancellation),
        cmocka_unit_test(test_exact_and_zero),
        cmocka_unit_test(test_histogram_bins),
        cmocka_unit_test(test_nan_propagates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
