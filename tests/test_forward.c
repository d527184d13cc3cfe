/* test_forward.c — the llama forward pass on the real stories260K model in all its
 * storage forms: greedy decoding from BOS gives the known ids and text, the HF
 * (rotate-half) checkpoints give the GGUF logits, F16/BF16 stay within rounding,
 * batched logits equal prefix-by-prefix logits (causal mask), the uncached path
 * equals the cached one, the hooks see what they should, and OpenBLAS is opened
 * only when asked for, leaving no worker threads. */
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
#include <dirent.h>

#include "an_blas.h"
#include "an_forward.h"
#include "an_tokenizer.h"
#include "q_model.h"

#include "test_util.h"

/* Ids and text the README gives for greedy decoding from BOS. */
static const int32_t want_ids[] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421};
static const char want_text[] = "Once upon a time, there was a little girl named Lily. She loved "
                                "to play outside in the park.";

static an_fwd *open_fwd(q_model *m, int64_t cache)
{
    an_fwd *f = NULL;
    q_err err = {{0}};
    if (an_fwd_open(m, cache, &f, &err) != Q_OK)
        fail_msg("%s", err.msg);
    return f;
}

/* Logits of a fixed 24-token prompt (T × n_vocab, caller frees). */
static const int32_t prompt[24] = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315,
                                   421, 395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419};

static float *logits_of(const char *rel, int64_t cache)
{
    q_model *m = open_model(rel);
    an_fwd *f = open_fwd(m, cache);
    int64_t nv = an_fwd_config(f)->n_vocab;
    assert_int_equal(nv, 512);
    float *l = malloc(24 * 512 * sizeof(float));
    assert_non_null(l);
    q_err err = {{0}};
    assert_int_equal(an_fwd_eval(f, prompt, 24, l, false, &err), Q_OK);
    an_fwd_free(f);
    q_model_close(m);
    return l;
}

static double max_abs_diff(const float *a, const float *b, int64_t n, double *scale)
{
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs((double)a[i] - b[i]) > d)
            d = fabs((double)a[i] - b[i]);
        if (fabs((double)a[i]) > s)
            s = fabs((double)a[i]);
    }
    *scale = s;
    return d;
}

static void check_greedy(const char *rel)
{
    q_model *m = open_model(rel);
    q_model *g = open_model("stories260K.gguf");
    an_tok *tk = NULL;
    q_err err = {{0}};
    assert_int_equal(an_tok_from_gguf(g->gguf, "stories260K.gguf", &tk, &err), Q_OK);
    an_fwd *f = open_fwd(m, -1);
    const an_config *c = an_fwd_config(f);
    assert_int_equal(c->n_layer, 5);
    assert_int_equal(c->dim, 64);
    assert_int_equal(c->n_head, 8);
    assert_int_equal(c->n_head_kv, 4);
    assert_int_equal(c->n_ff, 172);
    assert_int_equal(c->rope_hf, m->kind != Q_MODEL_GGUF);
    int32_t bos = 1, out[40];
    int64_t n = 0;
    assert_int_equal(an_fwd_greedy(f, &bos, 1, 2, out, 40, &n, &err), Q_OK);
    assert_int_equal(n, 40);
    assert_int_equal(out[0], 1);
    for (size_t i = 0; i < sizeof want_ids / sizeof want_ids[0]; i++)
        if (out[i + 1] != want_ids[i])
            fail_msg("%s: token %zu is %d, want %d", rel, i + 1, out[i + 1], want_ids[i]);
    char text[2048] = "";
    size_t len = 0;
    for (int64_t i = 0; i < n; i++)
        len += an_tok_decode(tk, out[i], text + len, sizeof text - len);
    const char *t = text[0] == ' ' ? text + 1 : text;
    if (strncmp(t, want_text, strlen(want_text)))
        fail_msg("%s: decoded \"%s\"", rel, t);
    an_tok_free(tk);
    an_fwd_free(f);
    q_model_close(g);
    q_model_close(m);
}

static void test_greedy_f32(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    check_greedy("stories260K.gguf");
}

static void test_greedy_f16(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    check_greedy("stories260K-F16.gguf");
}

static void test_greedy_bf16(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    check_greedy("stories260K-BF16.gguf");
}

static void test_greedy_hf(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    check_greedy("stories260K-hf");
    check_greedy("stories260K-hf-sharded");
}

/* HF checkpoints hold the same f32 weights with q/k rows in rotate-half order: with the
 * rotate-half rope the logits must equal the GGUF's up to summation order. */
static void test_hf_logits_equal_gguf(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    float *a = logits_of("stories260K.gguf", -1);
    float *b = logits_of("stories260K-hf", -1);
    float *c = logits_of("stories260K-hf-sharded", -1);
    double s, d = max_abs_diff(a, b, 24 * 512, &s);
    assert_true(s > 1.0);
    if (d > 1e-4 * s)
        fail_msg("HF logits differ from GGUF by %g (scale %g)", d, s);
    d = max_abs_diff(b, c, 24 * 512, &s);
    assert_true(d == 0.0);
    free(a);
    free(b);
    free(c);
}

/* F16 / BF16 weights: logits within the storage rounding (F16 ~1e-3, BF16 ~1e-2 rel.). */
static void test_half_logits_close(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    float *a = logits_of("stories260K.gguf", -1);
    float *h = logits_of("stories260K-F16.gguf", -1);
    float *b = logits_of("stories260K-BF16.gguf", -1);
    double s, dh = max_abs_diff(a, h, 24 * 512, &s), db = max_abs_diff(a, b, 24 * 512, &s);
    if (dh > 0.01 * s || dh == 0.0)
        fail_msg("F16 logits differ by %g (scale %g)", dh, s);
    if (db > 0.08 * s || db <= dh)
        fail_msg("BF16 logits differ by %g (F16 %g, scale %g)", db, dh, s);
    free(a);
    free(h);
    free(b);
}

/* Without a cache (one tensor at a time in a scratch buffer) the logits are identical. */
static void test_uncached_equals_cached(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    float *a = logits_of("stories260K-F16.gguf", -1);
    float *b = logits_of("stories260K-F16.gguf", 0);
    assert_memory_equal(a, b, 24 * 512 * sizeof(float));
    free(a);
    free(b);
}

/* Causal mask: row t of a batched evaluation equals the last row of evaluating t+1 tokens. */
static void test_causal_prefix(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m = open_model("stories260K.gguf");
    an_fwd *f = open_fwd(m, -1);
    float *all = malloc(24 * 512 * sizeof(float)), last[512];
    assert_non_null(all);
    q_err err = {{0}};
    assert_int_equal(an_fwd_eval(f, prompt, 24, all, false, &err), Q_OK);
    for (int64_t t = 0; t < 24; t += 5) {
        assert_int_equal(an_fwd_eval(f, prompt, t + 1, last, true, &err), Q_OK);
        double s, d = max_abs_diff(all + t * 512, last, 512, &s);
        if (d > 1e-4 * (s + 1))
            fail_msg("position %lld: batched and prefix logits differ by %g", (long long)t, d);
    }
    free(all);
    an_fwd_free(f);
    q_model_close(m);
}

typedef struct hook_log {
    int weights;       /* weight hook calls */
    int sites[AN_SITE_COUNT];
    int64_t bad_shape;
    bool zero_output;
    bool fail;
} hook_log;

static q_status w_hook(void *user, const q_tensor *t, float *w, q_err *err)
{
    hook_log *h = user;
    h->weights++;
    if (h->fail)
        return q_fail(err, Q_EDATA, "hook refused %s", t->gguf_name);
    if (h->zero_output && !strcmp(t->gguf_name, "output.weight"))
        memset(w, 0, (size_t)(t->rows * t->cols) * sizeof(float));
    return Q_OK;
}

static void c_hook(void *user, int layer, an_site site, const float *x, int64_t T, int64_t n)
{
    hook_log *h = user;
    h->sites[site]++;
    int64_t want = site == AN_SITE_FFN_DOWN ? 172 : 64;
    if (n != want || T != 7 || (site == AN_SITE_OUTPUT) != (layer == -1) || !isfinite(x[0]))
        h->bad_shape++;
}

static void test_hooks(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m = open_model("stories260K.gguf");
    an_fwd *f = open_fwd(m, -1);
    hook_log h = {0};
    h.zero_output = true;
    an_fwd_set_hooks(f, w_hook, c_hook, &h);
    float l[7 * 512];
    q_err err = {{0}};
    assert_int_equal(an_fwd_eval(f, prompt, 7, l, false, &err), Q_OK);
    /* 7 matrices per block, token_embd and output: each hooked once, then cached. */
    assert_int_equal(h.weights, 5 * 7 + 2);
    for (int s = 0; s < AN_SITE_OUTPUT; s++)
        assert_int_equal(h.sites[s], 5);
    assert_int_equal(h.sites[AN_SITE_OUTPUT], 1);
    assert_int_equal(h.bad_shape, 0);
    for (int i = 0; i < 7 * 512; i++)
        assert_true(l[i] == 0.0f);
    assert_int_equal(an_fwd_eval(f, prompt, 7, l, false, &err), Q_OK);
    assert_int_equal(h.weights, 5 * 7 + 2);
    /* A failing hook stops the pass with its status and message. */
    hook_log h2 = {0};
    h2.fail = true;
    an_fwd_set_hooks(f, w_hook, NULL, &h2);
    assert_int_equal(an_fwd_eval(f, prompt, 7, l, false, &err), Q_EDATA);
    assert_non_null(strstr(err.msg, "hook refused"));
    an_fwd_free(f);
    q_model_close(m);
}

static void test_bad_input(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m = open_model("stories260K.gguf");
    an_fwd *f = open_fwd(m, -1);
    q_err err = {{0}};
    int32_t bad[2] = {1, 512};
    float l[2 * 512];
    assert_int_equal(an_fwd_eval(f, bad, 2, l, false, &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, "512"));
    assert_int_equal(an_fwd_eval(f, bad, 0, l, false, &err), Q_EUSAGE);
    an_fwd_free(f);
    q_model_close(m);
    /* An imatrix file is a GGUF but not a model. */
    m = open_model("calcuis_imatrix-from-dat.imatrix.gguf");
    f = NULL;
    assert_int_equal(an_fwd_open(m, -1, &f, &err), Q_EDATA);
    assert_null(f);
    q_model_close(m);
}

/* The 32000-token random llama (dim 8, F16) runs and gives finite logits. */
static void test_tiny_random(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m = open_model("ollama_llama-2-tiny-random.gguf");
    an_fwd *f = open_fwd(m, -1);
    assert_int_equal(an_fwd_config(f)->n_vocab, 32000);
    int32_t ids[4] = {1, 15043, 3186, 29892};
    float *l = malloc(4 * 32000 * sizeof(float));
    assert_non_null(l);
    q_err err = {{0}};
    assert_int_equal(an_fwd_eval(f, ids, 4, l, false, &err), Q_OK);
    for (int i = 0; i < 4 * 32000; i++)
        assert_true(isfinite(l[i]));
    free(l);
    an_fwd_free(f);
    q_model_close(m);
}

/* Threads of this process (entries of /proc/self/task), -1 where there is none. */
static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Whether a mapping of the process names name (/proc/self/maps); -1 unknown. */
static int mapped(const char *name)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, name) != NULL;
    fclose(f);
    return found;
}

/* OpenBLAS is not in the process until an_blas_load (this test runs first),
 * and loading it leaves no worker pool: the process is down to its main
 * thread (no OpenMP region has run yet), and OpenBLAS says one thread
 * (main() called an_set_threads, which asks for one even where
 * OPENBLAS_NUM_THREADS is set). */
static void test_blas_load(void **state)
{
    (void)state;
    int before = mapped("libopenblas");
    q_err err = {{0}};
    assert_true(an_blas_load(&err));
    int n = count_threads();
    if (before < 0 || n < 0)
        skip();
    assert_int_equal(before, 0);
    assert_int_equal(mapped("libopenblas"), 1);
    assert_int_equal(n, 1);
    assert_int_equal(an_blas_threads(), 1);
}

int main(void)
{
    an_set_threads(2); /* sets counts; starts no thread */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blas_load),
        cmocka_unit_test(test_greedy_f32),
        cmocka_unit_test(test_greedy_f16),
        cmocka_unit_test(test_greedy_bf16),
        cmocka_unit_test(test_greedy_hf),
        cmocka_unit_test(test_hf_logits_equal_gguf),
        cmocka_unit_test(test_half_logits_close),
        cmocka_unit_test(test_uncached_equals_cached),
        cmocka_unit_test(test_causal_prefix),
        cmocka_unit_test(test_hooks),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_tiny_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
