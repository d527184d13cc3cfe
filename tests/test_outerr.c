/* test_outerr.c — the activation sample in the imatrix (an_calib_add_samples,
 * an_sample_load: F16 and F32 storage, q/k/v sharing one sample, malformed tensors),
 * and the output error on a given sample (an_output_error_x). No model needed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "an_calib.h"
#include "q_gguf.h"
#include "q_imatrix.h"

#define OE_N 64
#define OE_R 8

static uint64_t oe_rng = 42;
static float oe_rand(void)
{
    oe_rng = oe_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(oe_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* A one-site calibration (blk.0 attn input: q, k, v) with a reservoir scaled by scale. */
static void oe_calib(an_calib *c, an_site_stats *s, double *sum, double *sum2, float *am,
                     float *res, float scale)
{
    memset(c, 0, sizeof *c);
    memset(s, 0, sizeof *s);
    s->layer = 0;
    s->site = AN_SITE_ATTN_IN;
    s->n_names = 3;
    snprintf(s->names[0], sizeof s->names[0], "blk.0.attn_q.weight");
    snprintf(s->names[1], sizeof s->names[1], "blk.0.attn_k.weight");
    snprintf(s->names[2], sizeof s->names[2], "blk.0.attn_v.weight");
    s->n = OE_N;
    s->count = 16;
    s->sum = sum;
    s->sum2 = sum2;
    s->absmax = am;
    s->res_cap = s->res_rows = OE_R;
    s->res = res;
    for (int i = 0; i < OE_N; i++) {
        sum[i] = 0.5;
        sum2[i] = 1.0 + i;
        am[i] = 1.0f;
    }
    for (int i = 0; i < OE_N * OE_R; i++)
        res[i] = oe_rand() * scale;
    c->n_sites = 1;
    c->sites = s;
    c->n_layer = 1;
    c->chunk_count = 2;
    c->chunk_size = 8;
    snprintf(c->dataset, sizeof c->dataset, "test");
}

static void oe_roundtrip(float scale, double tol)
{
    char path[] = "/tmp/qtune_oe_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    an_calib c;
    an_site_stats s;
    double sum[OE_N], sum2[OE_N];
    float am[OE_N], res[OE_N * OE_R];
    oe_calib(&c, &s, sum, sum2, am, res, scale);
    q_err err = {{0}};
    assert_int_equal(an_calib_write_imatrix(&c, path, &err), Q_OK);
    assert_int_equal(an_calib_add_samples(&c, path, &err), Q_OK);
    /* llama.cpp's statistics still read (unknown suffixes are skipped) */
    q_imatrix *im = NULL;
    assert_int_equal(q_imatrix_load(path, &im, &err), Q_OK);
    assert_int_equal(im->n_entries, 3);
    q_imatrix_free(im);
    an_extra *x = NULL;
    assert_int_equal(an_extra_load(path, &x, &err), Q_OK);
    assert_non_null(an_extra_find(x, "blk.0.attn_v.weight"));
    an_extra_free(x);
    /* k and v find q's sample */
    for (int k = 0; k < 3; k++) {
        float *v = NULL;
        int64_t r = 0, n = 0;
        assert_int_equal(an_sample_load(path, s.names[k], &v, &r, &n, &err), Q_OK);
        assert_non_null(v);
        assert_int_equal(r, OE_R);
        assert_int_equal(n, OE_N);
        for (int i = 0; i < OE_N * OE_R; i++)
            assert_true(fabs(v[i] - res[i]) <= tol * fabs(res[i]) + 1e-7);
        free(v);
    }
    float *v = NULL;
    int64_t r = 0, n = 0;
    assert_int_equal(an_sample_load(path, "blk.0.ffn_up.weight", &v, &r, &n, &err), Q_OK);
    assert_null(v);
    unlink(path);
}

/* F16 storage: relative rounding within 2^-11 */
static void test_sample_f16(void **state)
{
    (void)state;
    oe_roundtrip(3.0f, 1.0 / 2048);
}

/* values beyond F16's range: stored as F32, exact */
static void test_sample_f32(void **state)
{
    (void)state;
    oe_roundtrip(1e6f, 0.0);
}

/* A file whose sample has the wrong type or shape: Q_EDATA naming file, offset, tensor. */
static void test_sample_malformed(void **state)
{
    (void)state;
    char path[] = "/tmp/qtune_oe_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    for (int variant = 0; variant < 2; variant++) {
        q_gguf_w *w = q_gguf_w_new(0);
        assert_non_null(w);
        int64_t ne[3] = {4, 2, 2};
        /* variant 0: I32 [4, 2]; variant 1: F32 [4, 2, 2] (3-D) */
        assert_int_equal(q_gguf_w_add_tensor(w, "blk.0.attn_q.weight.qtune_sample",
                                             variant ? 3 : 2, ne, variant ? 0 : 26),
                         Q_OK);
        FILE *fp = fopen(path, "wb");
        assert_non_null(fp);
        q_err err = {{0}};
        assert_int_equal(q_gguf_w_write_header(w, fp, &err), Q_OK);
        float z[16] = {0};
        assert_int_equal(q_gguf_w_write_data(w, fp, z, variant ? 64 : 32, &err), Q_OK);
        assert_int_equal(q_gguf_w_finish(w, &err), Q_OK);
        fclose(fp);
        q_gguf_w_free(w);
        float *v = NULL;
        int64_t r, n;
        assert_int_equal(an_sample_load(path, "blk.0.attn_v.weight", &v, &r, &n, &err),
                         Q_EDATA);
        assert_null(v);
        assert_non_null(strstr(err.msg, path));
        assert_non_null(strstr(err.msg, "offset"));
        assert_non_null(strstr(err.msg, "blk.0.attn_q.weight.qtune_sample"));
    }
    unlink(path);
}

/* ‖X Wᵀ − X Ŵᵀ‖/‖X Wᵀ‖: 0 for Ŵ = W, exactly 0.1 for Ŵ = 1.1 W; an empty sample is
 * refused. */
static void test_output_error_x(void **state)
{
    (void)state;
    enum { R = 16, ROWS = 12, COLS = 32 };
    static float x[R * COLS], w[ROWS * COLS], wh[ROWS * COLS];
    for (int i = 0; i < R * COLS; i++)
        x[i] = oe_rand();
    for (int i = 0; i < ROWS * COLS; i++) {
        w[i] = oe_rand();
        wh[i] = 1.1f * w[i];
    }
    double rel = -1;
    q_err err = {{0}};
    assert_int_equal(an_output_error_x(x, R, "t", w, w, ROWS, COLS, &rel, &err), Q_OK);
    assert_true(rel == 0.0);
    assert_int_equal(an_output_error_x(x, R, "t", w, wh, ROWS, COLS, &rel, &err), Q_OK);
    assert_true(fabs(rel - 0.1) < 1e-5);
    assert_int_equal(an_output_error_x(x, 0, "t", w, wh, ROWS, COLS, &rel, &err), Q_EUSAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_f16),
        cmocka_unit_test(test_sample_f32),
        cmocka_unit_test(test_sample_malformed),
        cmocka_unit_test(test_output_error_x),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
