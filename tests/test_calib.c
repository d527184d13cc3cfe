/* test_calib.c — activation capture (sums, absmax, outliers, reservoir), the imatrix
 * writer read back by q_imatrix and an_extra_load, layer output error, the plan hook
 * and model-level KL divergence on stories260K. */
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
#include "an_forward.h"
#include "q_imatrix.h"
#include "q_model.h"
#include "q_plan.h"

#include "test_util.h"

typedef struct fixture {
    q_model *m;
    an_fwd *f;
} fixture;

static void open_fx(fixture *fx, const char *rel)
{
    fx->m = open_model(rel);
    q_err err = {{0}};
    if (an_fwd_open(fx->m, -1, &fx->f, &err) != Q_OK)
        fail_msg("%s", err.msg);
}

static void close_fx(fixture *fx)
{
    an_fwd_free(fx->f);
    q_model_close(fx->m);
}

/* Deterministic pseudo-text: token ids in 3..511 from an LCG (seed fixed). */
static int32_t *fake_tokens(int64_t n, uint32_t seed)
{
    int32_t *t = malloc((size_t)n * sizeof *t);
    assert_non_null(t);
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = 3 + (int32_t)((seed >> 8) % 509);
    }
    return t;
}

/* Sums, absmax, counts and outliers of hand-made activations. */
static void test_capture_stats(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    fixture fx;
    open_fx(&fx, "stories260K.gguf");
    an_calib *c = NULL;
    q_err err = {{0}};
    assert_int_equal(an_calib_new(fx.f, 4, 7, &c, &err), Q_OK);
    assert_int_equal(c->n_sites, 5 * 4 + 1);
    /* 3 tokens × 64 channels; token 1 has one outlier channel (100 vs ~1). */
    float x[3 * 64];
    for (int t = 0; t < 3; t++)
        for (int j = 0; j < 64; j++)
            x[t * 64 + j] = (float)((j % 2 ? 1 : -1) * (t + 1));
    x[1 * 64 + 5] = 100.0f;
    an_calib_capture(c, 2, AN_SITE_FFN_IN, x, 3, 64);
    an_calib_capture(c, 2, AN_SITE_FFN_IN, x, 3, 64);
    const an_site_stats *s = an_calib_find(c, "blk.2.ffn_up.weight");
    assert_non_null(s);
    assert_ptr_equal(s, an_calib_find(c, "blk.2.ffn_gate.weight"));
    assert_true(an_calib_find(c, "blk.2.ffn_down.weight") != s);
    assert_int_equal(s->count, 6);
    assert_true(fabs(s->sum2[0] - 2 * (1 + 4 + 9)) < 1e-9);
    assert_true(fabs(s->sum[0] - 2 * (-1 - 2 - 3)) < 1e-9);
    assert_true(fabs(s->sum2[5] - 2 * (1 + 10000 + 9)) < 1e-6);
    assert_true(s->absmax[5] == 100.0f);
    assert_true(s->absmax[6] == 3.0f);
    /* Token 1: rms = sqrt((63·4 + 10000)/64) ≈ 12.66, 6σ ≈ 76: one channel of 64. */
    assert_int_equal(s->out_tokens, 2);
    assert_true(fabs(s->out_frac_max - 1.0 / 64) < 1e-12);
    assert_true(fabs(s->out_frac_sum - 2.0 / 64) < 1e-12);
    /* Reservoir: 4 rows kept of 6 seen, each one of the captured rows. */
    assert_int_equal(s->res_rows, 4);
    for (int r = 0; r < 4; r++) {
        bool found = false;
        for (int t = 0; t < 3; t++)
            found |= !memcmp(s->res + r * 64, x + t * 64, 64 * sizeof(float));
        assert_true(found);
    }
    /* Wrong width is ignored (no crash, no count). */
    an_calib_capture(c, 2, AN_SITE_FFN_DOWN, x, 3, 64);
    assert_int_equal(an_calib_find(c, "blk.2.ffn_down.weight")->count, 0);
    an_calib_free(c);
    close_fx(&fx);
}

static char *tmp_path(const char *sfx)
{
    static char p[128];
    snprintf(p, sizeof p, "/tmp/qtune_calib_%ld%s", (long)getpid(), sfx);
    return p;
}

static bool stop_after_one(void *user, int64_t done, int64_t total)
{
    (void)total;
    ++*(int *)user;
    return done < 1;
}

/* Calibration over stories260K, written and read back by q_imatrix and an_extra_load. */
static void test_run_write_read(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    fixture fx;
    open_fx(&fx, "stories260K.gguf");
    an_calib *c = NULL;
    q_err err = {{0}};
    assert_int_equal(an_calib_new(fx.f, 64, 1, &c, &err), Q_OK);
    int32_t *tok = fake_tokens(300, 42);
    assert_int_equal(an_calib_run(c, fx.f, tok, 300, 64, 3, 1, NULL, NULL, &err), Q_OK);
    assert_int_equal(c->chunk_count, 3);
    const an_site_stats *s = an_calib_find(c, "blk.4.ffn_down.weight");
    assert_int_equal(s->count, 3 * 64);
    assert_int_equal(s->res_rows, 64);
    assert_int_equal(an_calib_find(c, "output.weight")->count, 3 * 64);
    snprintf(c->dataset, sizeof c->dataset, "fake.txt");
    char *path = tmp_path(".imatrix.gguf");
    assert_int_equal(an_calib_write_imatrix(c, path, &err), Q_OK);

    q_imatrix *im = NULL;
    assert_int_equal(q_imatrix_load(path, &im, &err), Q_OK);
    assert_int_equal(im->n_entries, 5 * 7); /* output.weight only with process_output */
    assert_int_equal(im->chunk_count, 3);
    assert_non_null(im->dataset);
    assert_string_equal(im->dataset, "fake.txt");
    const q_imatrix_entry *e = q_imatrix_find(im, "blk.4.ffn_down.weight");
    assert_non_null(e);
    assert_int_equal(e->n, 172);
    for (int j = 0; j < 172; j++) {
        double want = (float)s->sum2[j] / (float)s->count;
        assert_true(fabs(e->values[j] - want) <= 1e-6 * want + 1e-12);
    }
    e = q_imatrix_find(im, "blk.0.attn_v.weight");
    assert_non_null(e);
    assert_int_equal(e->n, 64);
    q_imatrix_free(im);

    an_extra *x = NULL;
    assert_int_equal(an_extra_load(path, &x, &err), Q_OK);
    assert_int_equal(x->n_entries, 5 * 7);
    const an_extra_entry *xe = an_extra_find(x, "blk.4.ffn_down.weight");
    assert_non_null(xe);
    assert_int_equal(xe->n, 172);
    assert_memory_equal(xe->absmax, s->absmax, 172 * sizeof(float));
    assert_true(xe->has_outliers);
    assert_true(fabs(xe->outliers[0] - s->out_frac_sum / (double)s->count) < 1e-6);
    an_extra_free(x);

    /* With process_output the output layer is stored too. */
    c->process_output = true;
    assert_int_equal(an_calib_write_imatrix(c, path, &err), Q_OK);
    assert_int_equal(q_imatrix_load(path, &im, &err), Q_OK);
    assert_int_equal(im->n_entries, 5 * 7 + 1);
    assert_non_null(q_imatrix_find(im, "output.weight"));
    q_imatrix_free(im);
    unlink(path);

    /* Unwritable destination. */
    assert_int_equal(an_calib_write_imatrix(c, "/nonexistent/dir/x.gguf", &err), Q_ECANTCREAT);
    /* Too few tokens for one chunk. */
    assert_int_equal(an_calib_run(c, fx.f, tok, 30, 64, 0, 1, NULL, NULL, &err), Q_EUSAGE);
    /* Cancelled by the progress callback before the second chunk. */
    an_calib *c2 = NULL;
    assert_int_equal(an_calib_new(fx.f, 0, 1, &c2, &err), Q_OK);
    int calls = 0;
    assert_int_equal(an_calib_run(c2, fx.f, tok, 300, 64, 0, 1, stop_after_one, &calls, &err),
                     Q_ECANCELLED);
    assert_int_equal(c2->chunk_count, 1);
    assert_int_equal(an_calib_find(c2, "blk.0.attn_q.weight")->count, 64);
    an_calib_free(c2);
    free(tok);
    an_calib_free(c);
    close_fx(&fx);
}

/* Same seed, same reservoir; HF model with the same tokens, same statistics. */
static void test_reproducible_and_hf(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    fixture a, b;
    open_fx(&a, "stories260K.gguf");
    open_fx(&b, "stories260K-hf");
    int32_t *tok = fake_tokens(256, 9);
    an_calib *ca = NULL, *cb = NULL, *cc = NULL;
    q_err err = {{0}};
    assert_int_equal(an_calib_new(a.f, 16, 5, &ca, &err), Q_OK);
    assert_int_equal(an_calib_new(a.f, 16, 5, &cc, &err), Q_OK);
    assert_int_equal(an_calib_new(b.f, 16, 5, &cb, &err), Q_OK);
    assert_int_equal(an_calib_run(ca, a.f, tok, 256, 64, 0, 1, NULL, NULL, &err), Q_OK);
    assert_int_equal(an_calib_run(cc, a.f, tok, 256, 64, 0, 1, NULL, NULL, &err), Q_OK);
    assert_int_equal(an_calib_run(cb, b.f, tok, 256, 64, 0, 1, NULL, NULL, &err), Q_OK);
    for (int64_t i = 0; i < ca->n_sites; i++) {
        const an_site_stats *x = &ca->sites[i], *y = &cb->sites[i], *z = &cc->sites[i];
        assert_memory_equal(x->res, z->res, (size_t)(16 * x->n) * sizeof(float));
        assert_int_equal(x->count, y->count);
        for (int64_t j = 0; j < x->n; j++)
            if (fabs(x->sum2[j] - y->sum2[j]) > 1e-4 * (x->sum2[j] + 1e-3))
                fail_msg("site %lld channel %lld: %g vs %g", (long long)i, (long long)j,
                         x->sum2[j], y->sum2[j]);
    }
    free(tok);
    an_calib_free(ca);
    an_calib_free(cb);
    an_calib_free(cc);
    close_fx(&a);
    close_fx(&b);
}

static void test_output_error(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    fixture fx;
    open_fx(&fx, "stories260K.gguf");
    an_calib *c = NULL;
    q_err err = {{0}};
    assert_int_equal(an_calib_new(fx.f, 32, 3, &c, &err), Q_OK);
    int32_t *tok = fake_tokens(128, 3);
    assert_int_equal(an_calib_run(c, fx.f, tok, 128, 64, 0, 1, NULL, NULL, &err), Q_OK);
    const q_tensor *t = &fx.m->tensors[q_model_find(fx.m, "blk.1.attn_q.weight")];
    float *w = malloc(64 * 64 * sizeof(float)), *wh = malloc(64 * 64 * sizeof(float));
    assert_non_null(w);
    assert_non_null(wh);
    assert_int_equal(q_tensor_read_rows(t, 0, 64, w, &err), Q_OK);
    double rel;
    assert_int_equal(an_output_error(c, "blk.1.attn_q.weight", w, w, 64, 64, &rel, &err), Q_OK);
    assert_true(rel == 0.0);
    for (int i = 0; i < 64 * 64; i++)
        wh[i] = 1.1f * w[i];
    assert_int_equal(an_output_error(c, "blk.1.attn_q.weight", w, wh, 64, 64, &rel, &err), Q_OK);
    assert_true(fabs(rel - 0.1) < 1e-4);
    memset(wh, 0, 64 * 64 * sizeof(float));
    assert_int_equal(an_output_error(c, "blk.1.attn_q.weight", w, wh, 64, 64, &rel, &err), Q_OK);
    assert_true(fabs(rel - 1.0) < 1e-6);
    /* Errors: unknown tensor, wrong width. */
    assert_int_equal(an_output_error(c, "nope.weight", w, wh, 64, 64, &rel, &err), Q_EUSAGE);
    assert_int_equal(an_output_error(c, "blk.1.ffn_down.weight", w, wh, 64, 64, &rel, &err),
                     Q_EUSAGE);
    free(w);
    free(wh);
    free(tok);
    an_calib_free(c);
    close_fx(&fx);
}

/* KL divergence: a pass against itself gives 0; q8_0 is close, int2 far. */
static void kld_with(fixture *fx, const char *fmt, const int32_t *tok, an_kld_result *r)
{
    q_err err = {{0}};
    q_plan *p = q_plan_new(fx->m);
    assert_non_null(p);
    q_fmt_spec spec;
    assert_true(q_fmt_parse(fmt, &spec));
    assert_int_equal(q_plan_add(p, "*", &spec, Q_METHOD_RTN, "", &err), Q_OK);
    q_resolved *res = calloc(fx->m->n_tensors, sizeof *res);
    assert_non_null(res);
    assert_int_equal(q_plan_resolve(p, fx->m, false, res, NULL, NULL, &err), Q_OK);
    an_fwd *q = NULL;
    assert_int_equal(an_fwd_open(fx->m, -1, &q, &err), Q_OK);
    an_plan_hook h = {fx->m, res, NULL};
    an_fwd_set_hooks(q, an_plan_hook_fn, NULL, &h);
    assert_int_equal(an_kld(fx->f, q, tok, 200, 64, 0, 1, NULL, NULL, r, &err), Q_OK);
    an_fwd_free(q);
    free(res);
    q_plan_free(p);
}

static void test_kld(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    fixture fx;
    open_fx(&fx, "stories260K.gguf");
    int32_t *tok = fake_tokens(200, 77);
    q_err err = {{0}};
    an_kld_result r0, r8, r2;
    assert_int_equal(an_kld(fx.f, fx.f, tok, 200, 64, 0, 1, NULL, NULL, &r0, &err), Q_OK);
    assert_int_equal(r0.n_tokens, 3 * 63);
    assert_true(r0.kld_mean < 1e-9 && r0.kld_max < 1e-9);
    assert_true(r0.top1 == 1.0);
    assert_true(r0.ppl_base == r0.ppl_quant && r0.ppl_base > 1.0);
    kld_with(&fx, "q8_0", tok, &r8);
    kld_with(&fx, "int2", tok, &r2);
    assert_true(r8.kld_mean > 0 && r8.kld_mean < 0.01);
    assert_true(r8.top1 > 0.9);
    assert_true(r8.kld_p99 <= r8.kld_max && r8.kld_mean <= r8.kld_max);
    assert_true(fabs(r8.ppl_base - r0.ppl_base) < 1e-9 * r0.ppl_base);
    assert_true(r2.kld_mean > 10 * r8.kld_mean);
    assert_true(r2.top1 < r8.top1);
    /* A context longer than the tokens is refused. */
    assert_int_equal(an_kld(fx.f, fx.f, tok, 200, 256, 0, 1, NULL, NULL, &r0, &err), Q_EUSAGE);
    free(tok);
    close_fx(&fx);
}

static void test_extra_bad(void **state)
{
    (void)state;
    an_extra *x = NULL;
    q_err err = {{0}};
    assert_int_equal(an_extra_load("/nonexistent.imatrix.gguf", &x, &err), Q_ENOINPUT);
    if (!have_models())
        skip();
    /* A llama.cpp imatrix without qtune's extras: zero entries, not an error. */
    char p[1200];
    model_path(p, sizeof p, "calcuis_imatrix-from-dat.imatrix.gguf");
    assert_int_equal(an_extra_load(p, &x, &err), Q_OK);
    assert_int_equal(x->n_entries, 0);
    an_extra_free(x);
}

int main(void)
{
    an_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capture_stats),
        cmocka_unit_test(test_run_write_read),
        cmocka_unit_test(test_reproducible_and_hf),
        cmocka_unit_test(test_output_error),
        cmocka_unit_test(test_kld),
        cmocka_unit_test(test_extra_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
