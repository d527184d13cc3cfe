/* test_model.c — the model store on the real models of ../shared/models: one
 * catalog across GGUF F32/F16/BF16, HF directory and sharded HF directory, and
 * statistics that agree within the storage type's rounding. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "an_stats.h"
#include "q_dtype.h"
#include "q_model.h"

#include "test_util.h"

static void test_name_map(void **state)
{
    (void)state;
    char g[128];
    q_role r;
    int b;
    assert_true(q_name_map("model.layers.3.self_attn.q_proj.weight", g, sizeof g, &r, &b));
    assert_string_equal(g, "blk.3.attn_q.weight");
    assert_int_equal(r, Q_ROLE_ATTN_Q);
    assert_int_equal(b, 3);
    assert_true(q_name_map("blk.3.attn_q.weight", g, sizeof g, &r, &b));
    assert_string_equal(g, "blk.3.attn_q.weight");
    assert_int_equal(r, Q_ROLE_ATTN_Q);
    assert_int_equal(b, 3);
    struct {
        const char *hf, *gguf;
        q_role role;
        int block;
    } cases[] = {
        {"model.embed_tokens.weight", "token_embd.weight", Q_ROLE_EMBED, -1},
        {"lm_head.weight", "output.weight", Q_ROLE_OUTPUT, -1},
        {"model.norm.weight", "output_norm.weight", Q_ROLE_NORM, -1},
        {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight", Q_ROLE_NORM, 0},
        {"model.layers.12.post_attention_layernorm.weight", "blk.12.ffn_norm.weight",
         Q_ROLE_NORM, 12},
        {"model.layers.1.self_attn.k_proj.weight", "blk.1.attn_k.weight", Q_ROLE_ATTN_K, 1},
        {"model.layers.1.self_attn.v_proj.bias", "blk.1.attn_v.bias", Q_ROLE_ATTN_V, 1},
        {"model.layers.1.self_attn.o_proj.weight", "blk.1.attn_output.weight", Q_ROLE_ATTN_O, 1},
        {"model.layers.2.mlp.gate_proj.weight", "blk.2.ffn_gate.weight", Q_ROLE_FFN_GATE, 2},
        {"model.layers.2.mlp.up_proj.weight", "blk.2.ffn_up.weight", Q_ROLE_FFN_UP, 2},
        {"model.layers.2.mlp.down_proj.weight", "blk.2.ffn_down.weight", Q_ROLE_FFN_DOWN, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_true(q_name_map(cases[i].hf, g, sizeof g, &r, &b));
        assert_string_equal(g, cases[i].gguf);
        assert_int_equal(r, cases[i].role);
        assert_int_equal(b, cases[i].block);
        char g2[128];
        q_role r2;
        int b2;
        assert_true(q_name_map(cases[i].gguf, g2, sizeof g2, &r2, &b2));
        assert_string_equal(g2, cases[i].gguf);
        assert_int_equal(r2, cases[i].role);
        assert_int_equal(b2, cases[i].block);
    }
    /* Unknown names keep their name, role other, and a block when they have one. */
    assert_false(q_name_map("rope_freqs.weight", g, sizeof g, &r, &b));
    assert_string_equal(g, "rope_freqs.weight");
    assert_int_equal(r, Q_ROLE_OTHER);
    assert_int_equal(b, -1);
    assert_false(q_name_map("model.layers.7.self_attn.rotary_emb.inv_freq", g, sizeof g, &r, &b));
    assert_int_equal(b, 7);
    assert_false(q_name_map("model.layers.x.mlp.up_proj.weight", g, sizeof g, &r, &b));
    assert_int_equal(b, -1);
}

static void test_arch_and_catalog(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    const char *srcs[] = {"stories260K.gguf", "stories260K-F16.gguf", "stories260K-BF16.gguf",
                          "stories260K-hf", "stories260K-hf-sharded"};
    for (size_t s = 0; s < sizeof srcs / sizeof srcs[0]; s++) {
        q_model *m = open_model(srcs[s]);
        assert_non_null(m);
        assert_string_equal(m->arch.name, "llama");
        assert_int_equal(m->arch.n_layer, 5);
        assert_int_equal(m->arch.n_embd, 64);
        assert_int_equal(m->arch.n_head, 8);
        assert_int_equal(m->arch.n_head_kv, 4);
        assert_int_equal(m->arch.n_ff, 172);
        assert_int_equal(m->arch.n_vocab, 512);
        assert_int_equal(m->arch.n_rot, 8);
        assert_int_equal(m->n_tensors, 48);
        assert_int_equal(q_model_params(m), 292800);
        int64_t q = q_model_find(m, "blk.3.attn_q.weight");
        assert_true(q >= 0);
        assert_int_equal(m->tensors[q].role, Q_ROLE_ATTN_Q);
        assert_int_equal(m->tensors[q].block, 3);
        assert_int_equal(m->tensors[q].rows, 64);
        assert_int_equal(m->tensors[q].cols, 64);
        int64_t d = q_model_find(m, "blk.4.ffn_down.weight");
        assert_true(d >= 0);
        assert_int_equal(m->tensors[d].rows, 64);
        assert_int_equal(m->tensors[d].cols, 172);
        assert_int_equal(m->tensors[d].role, Q_ROLE_FFN_DOWN);
        q_model_close(m);
    }
    q_model *m = open_model("stories260K-hf-sharded");
    assert_int_equal(m->n_files, 2);
    q_model_close(m);
}

/* Relative difference scaled by a floor, so values near zero compare absolutely. */
static double rel(double a, double b, double floor)
{
    return fabs(a - b) / fmax(fmax(fabs(a), fabs(b)), floor);
}

static void compare_stats(const char *src, double tol)
{
    q_model *ref = open_model("stories260K.gguf");
    q_model *m = open_model(src);
    q_err err;
    for (uint64_t i = 0; i < ref->n_tensors; i++) {
        const q_tensor *a = &ref->tensors[i];
        int64_t j = q_model_find(m, a->gguf_name);
        if (j < 0)
            fail_msg("%s: no tensor for %s", src, a->gguf_name);
        const q_tensor *b = &m->tensors[j];
        assert_string_equal(a->gguf_name, b->gguf_name);
        assert_int_equal(a->role, b->role);
        assert_int_equal(a->block, b->block);
        assert_int_equal(a->rows, b->rows);
        assert_int_equal(a->cols, b->cols);
        an_stats sa, sb;
        assert_int_equal(an_tensor_stats(a, &sa, &err), Q_OK);
        assert_int_equal(an_tensor_stats(b, &sb, &err), Q_OK);
        /* A float rounded to f16/bf16 moves by at most tol relative (2^-11, 2^-8);
         * means and stds of such values move by at most tol × absmax. The same
         * f32 values (q/k rows in another order in the GGUF) give the same
         * min/max, and the SIMD sums' bound twice over (tests/test_stats.c):
         * mean and std within 8e-6 σ, kurtosis 4e-5 relative. */
        bool same = b->dtype == Q_DT_F32;
        double t = same ? 1e-12 : tol;
        double tm = same ? 8e-6 * sa.std : t * sa.absmax, tk = same ? 4e-5 : 20 * t;
        if (rel(sa.min, sb.min, 1e-30) > t || rel(sa.max, sb.max, 1e-30) > t ||
            rel(sa.absmax, sb.absmax, 1e-30) > t || fabs(sa.mean - sb.mean) > tm ||
            fabs(sa.std - sb.std) > tm || rel(sa.kurtosis, sb.kurtosis, 1) > tk ||
            sa.n != sb.n || sa.n_nan != sb.n_nan || sa.n_inf != sb.n_inf)
            fail_msg("%s: %s differs: min %g/%g max %g/%g mean %g/%g std %g/%g kurt %g/%g", src,
                     a->gguf_name, sa.min, sb.min, sa.max, sb.max, sa.mean, sb.mean, sa.std,
                     sb.std, sa.kurtosis, sb.kurtosis);
        /* Rounding may move a value across the 6σ band, never many. */
        if (llabs(sa.n_outliers - sb.n_outliers) > (b->dtype == Q_DT_F32 ? 0 : 2))
            fail_msg("%s: %s outliers %lld vs %lld", src, a->gguf_name,
                     (long long)sa.n_outliers, (long long)sb.n_outliers);
    }
    q_model_close(m);
    q_model_close(ref);
}

static void test_same_rows_f16(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    compare_stats("stories260K-F16.gguf", 1.0 / 2048);
}

static void test_same_rows_bf16(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    compare_stats("stories260K-BF16.gguf", 1.0 / 256);
}

static void test_same_rows_hf(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    compare_stats("stories260K-hf", 0);
    compare_stats("stories260K-hf-sharded", 0);
    compare_stats("stories260K-hf/model.safetensors", 0);
}

/* Every tensor of the HF model holds the GGUF model's values: bit-identical where
 * the row order is the same; for q and k (HF rotate-half row order) the rows are
 * permuted, so there the sorted values must be identical. */
static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_hf_values(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *ref = open_model("stories260K.gguf");
    q_model *m = open_model("stories260K-hf-sharded");
    q_err err;
    for (uint64_t i = 0; i < ref->n_tensors; i++) {
        const q_tensor *a = &ref->tensors[i];
        const q_tensor *b = &m->tensors[q_model_find(m, a->gguf_name)];
        size_t n = (size_t)a->params;
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        assert_int_equal(q_tensor_read_rows(a, 0, a->rows, x, &err), Q_OK);
        assert_int_equal(q_tensor_read_rows(b, 0, b->rows, y, &err), Q_OK);
        if (a->role != Q_ROLE_ATTN_Q && a->role != Q_ROLE_ATTN_K) {
            assert_memory_equal(x, y, n * sizeof *x);
        } else {
            qsort(x, n, sizeof *x, cmp_float);
            qsort(y, n, sizeof *y, cmp_float);
            assert_memory_equal(x, y, n * sizeof *x);
        }
        free(x);
        free(y);
    }
    q_model_close(m);
    q_model_close(ref);
}

static void test_read_rows_bounds(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m = open_model("stories260K.gguf");
    const q_tensor *t = &m->tensors[q_model_find(m, "token_embd.weight")];
    float buf[64];
    q_err err;
    assert_int_equal(q_tensor_read_rows(t, 511, 1, buf, &err), Q_OK);
    assert_int_equal(q_tensor_read_rows(t, 512, 1, buf, &err), Q_EUSAGE);
    assert_int_equal(q_tensor_read_rows(t, -1, 1, buf, &err), Q_EUSAGE);
    assert_int_equal(q_tensor_read_rows(t, 0, INT64_MAX, buf, &err), Q_EUSAGE);
    assert_int_equal(q_tensor_read_rows(t, 0, -1, buf, &err), Q_EUSAGE);
    q_model_close(m);
}

/* The read-ahead thread: requests racing with reads and releases of the same
 * tensors leave every value as it was; stop joins with requests pending and
 * with none ever made. */
static double tensor_sum(const q_tensor *t)
{
    float *row = malloc((size_t)t->cols * sizeof *row);
    assert_non_null(row);
    double s = 0;
    q_err err;
    for (int64_t r = 0; r < t->rows; r++) {
        assert_int_equal(q_tensor_read_rows(t, r, 1, row, &err), Q_OK);
        for (int64_t c = 0; c < t->cols; c++)
            s += row[c] * (double)(c + 1);
    }
    free(row);
    return s;
}

/* Resident kB of the mapping holding p (/proc/self/smaps), -1 unknown. */
static int64_t mapped_rss_kb(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[512];
    bool in = false;
    int64_t kb = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3) { /* a mapping's first line */
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
            continue;
        }
        long v;
        if (in && sscanf(line, "Rss: %ld kB", &v) == 1) {
            kb = v;
            break;
        }
    }
    fclose(f);
    return kb;
}

static void test_prefetch(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m = open_model("stories260K.gguf");
    double *before = malloc(m->n_tensors * sizeof *before);
    assert_non_null(before);
    for (uint64_t i = 0; i < m->n_tensors; i++)
        before[i] = tensor_sum(&m->tensors[i]);
    q_prefetch_stop(q_prefetch_start(1 << 20)); /* no request at all */
    for (int round = 0; round < 3; round++) {
        q_prefetch *pf = q_prefetch_start(round == 0 ? 4096 : 1 << 20);
        assert_non_null(pf);
        for (uint64_t i = 0; i < m->n_tensors; i++) {
            if (i + 1 < m->n_tensors)
                q_prefetch_tensor(pf, &m->tensors[i + 1]);
            assert_true(tensor_sum(&m->tensors[i]) == before[i]);
            q_tensor_release(&m->tensors[i]);
            if (round == 2 && i + 1 < m->n_tensors)
                q_tensor_release(&m->tensors[i + 1]); /* while it may be read ahead */
        }
        q_prefetch_tensor(pf, &m->tensors[0]); /* pending at stop */
        q_prefetch_stop(pf);
    }
    for (uint64_t i = 0; i < m->n_tensors; i++)
        assert_true(tensor_sum(&m->tensors[i]) == before[i]);
    /* In file order with q_tensor_release_seq (the last one closing the
     * span): the data reads back the same, a tensor out of order is released
     * as by q_tensor_release, and none of the mapping stays resident. */
    uintptr_t done = 0;
    uint64_t bytes = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        assert_true(tensor_sum(&m->tensors[i]) == before[i]);
        bytes += m->tensors[i].bytes;
    }
    int64_t kb_read = mapped_rss_kb(m->tensors[0].data);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        assert_true(tensor_sum(&m->tensors[i]) == before[i]);
        q_tensor_release_seq(&m->tensors[i], i + 1 == m->n_tensors, &done);
    }
    int64_t kb_left = mapped_rss_kb(m->tensors[0].data);
    if (kb_read >= 0 && kb_left >= 0) /* the header stays; of the data, the end pages */
        assert_true(kb_left <= kb_read - (int64_t)(bytes / 1024) + 8);
    assert_true(tensor_sum(&m->tensors[0]) == before[0]);
    uintptr_t keep = done;
    q_tensor_release_seq(&m->tensors[0], false, &done); /* out of order */
    assert_true(done == keep);
    assert_true(tensor_sum(&m->tensors[0]) == before[0]);
    free(before);
    q_model_close(m);
}

/* Whether the page holding p is in the page cache; -1 unknown. */
static int resident(const void *p)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    unsigned char in = 0;
    if (mincore((void *)((uintptr_t)p & ~(page - 1)), page, &in) != 0)
        return -1;
    return in & 1;
}

/* A tensor dropped from the page cache is read back by the prefetcher (which
 * skips tensors already resident). */
static void test_prefetch_cold(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    char path[1100];
    model_path(path, sizeof path, "stories260K.gguf");
    q_model *m = open_model("stories260K.gguf");
    const q_tensor *big = &m->tensors[0];
    for (uint64_t i = 1; i < m->n_tensors; i++)
        big = m->tensors[i].bytes > big->bytes ? &m->tensors[i] : big;
    const uint8_t *probe = big->data + big->bytes / 4; /* within the cap below */
    q_tensor_release(big);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    if (resident(probe) != 0) { /* mapped elsewhere, or no mincore */
        q_model_close(m);
        skip();
    }
    q_prefetch *pf = q_prefetch_start(1 << 20);
    assert_non_null(pf);
    q_prefetch_tensor(pf, big);
    for (int w = 0; w < 1000 && resident(probe) != 1; w++)
        usleep(1000);
    q_prefetch_stop(pf);
    assert_int_equal(resident(probe), 1);
    q_model_close(m);
}

static void test_open_errors(void **state)
{
    (void)state;
    q_model *m = NULL;
    q_err err = {{0}};
    assert_int_equal(q_model_open("/nonexistent/x.gguf", &m, &err), Q_ENOINPUT);
    assert_non_null(strstr(err.msg, "/nonexistent/x.gguf"));
    assert_null(m);
    assert_int_equal(q_model_open("/tmp", &m, &err), Q_ENOINPUT); /* no config.json */
    assert_non_null(strstr(err.msg, "config.json"));

    char dir[] = "/tmp/qtune_model_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p[256];
    /* A directory whose config.json is not JSON. */
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *fp = fopen(p, "w");
    fputs("{\"hidden_size\": 64,,}", fp);
    fclose(fp);
    assert_int_equal(q_model_open(dir, &m, &err), Q_EDATA);
    assert_non_null(strstr(err.msg, "config.json"));
    /* A valid config.json and an index naming a missing shard. */
    fp = fopen(p, "w");
    fputs("{\"model_type\": \"llama\", \"hidden_size\": 64}", fp);
    fclose(fp);
    char ix[256];
    snprintf(ix, sizeof ix, "%s/model.safetensors.index.json", dir);
    fp = fopen(ix, "w");
    fputs("{\"metadata\": {}, \"weight_map\": {\"a.weight\": \"model-00001-of-00001.safetensors\"}}",
          fp);
    fclose(fp);
    assert_int_equal(q_model_open(dir, &m, &err), Q_EDATA);
    assert_non_null(strstr(err.msg, "model-00001-of-00001.safetensors"));
    assert_non_null(strstr(err.msg, "model.safetensors.index.json"));
    unlink(ix);
    unlink(p);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_map),         cmocka_unit_test(test_arch_and_catalog),
        cmocka_unit_test(test_same_rows_f16),    cmocka_unit_test(test_same_rows_bf16),
        cmocka_unit_test(test_same_rows_hf),     cmocka_unit_test(test_hf_values),
        cmocka_unit_test(test_read_rows_bounds), cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_prefetch),       cmocka_unit_test(test_prefetch_cold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
