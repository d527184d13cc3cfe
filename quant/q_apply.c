/* q_apply.c — preview (fake quantization + metrics) and apply (quantize and
 * write GGUF) of a resolved plan, streamed tensor by tensor, chunk by chunk. */
#include "q_apply.h"

#include <libgen.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "q_dtype.h"
#include "q_format.h"
#include "q_gguf.h"
#include "q_io.h"

#define CHUNK_F32_BYTES (16u << 20) /* source floats per chunk: bounds memory */

/* Rows per chunk for a tensor: about CHUNK_F32_BYTES of f32, at least one row. */
static int64_t chunk_rows(const q_tensor *t)
{
    int64_t r = (int64_t)(CHUNK_F32_BYTES / sizeof(float)) / (t->cols > 0 ? t->cols : 1);
    return r < 1 ? 1 : (r > t->rows ? t->rows : r);
}

static bool cancelled(const q_job_opts *o)
{
    return o && o->cancel && atomic_load(o->cancel);
}

static void progress(const q_job_opts *o, int64_t i, int64_t n, uint64_t done, uint64_t total)
{
    if (o && o->progress)
        o->progress(o->progress_user, i, n, done, total);
}

/* Importance weights for rows of t from the imatrix (expert e of a 3-D tensor
 * uses the e-th matrix), or NULL. */
static const float *imatrix_row_weights(const q_imatrix *im, const q_tensor *t, int64_t row)
{
    if (!im)
        return NULL;
    const q_imatrix_entry *e = q_imatrix_find(im, t->gguf_name);
    if (!e || e->n != t->cols)
        return NULL;
    int64_t per_mat = t->ne[1] > 0 ? t->ne[1] : 1;
    int64_t mat = e->n_mat > 1 ? row / per_mat : 0;
    if (mat >= e->n_mat)
        return NULL;
    return e->values + mat * e->n;
}

/* Source row feeding output row o: HF q/k rows are in rotate-half order, GGUF
 * interleaves the two halves of each head: out[h·hd + 2i + j] = in[h·hd + j·hd/2 + i]. */
static int64_t source_row(const q_model *m, const q_tensor *t, int64_t o)
{
    if (m->kind == Q_MODEL_GGUF || (t->role != Q_ROLE_ATTN_Q && t->role != Q_ROLE_ATTN_K) ||
        t->n_dims != 2)
        return o;
    int64_t heads = t->role == Q_ROLE_ATTN_Q ? m->arch.n_head : m->arch.n_head_kv;
    if (heads <= 0 || t->rows % heads != 0 || (t->rows / heads) % 2 != 0)
        return o;
    int64_t hd = t->rows / heads, h = o / hd, r = o % hd;
    return h * hd + (r % 2) * (hd / 2) + r / 2;
}

/* Reads output rows [o0, o0+n) of t (source order mapped) as f32. */
static q_status read_out_rows(const q_model *m, const q_tensor *t, int64_t o0, int64_t n,
                              float *dst, q_err *err)
{
    if (source_row(m, t, o0) == o0 && source_row(m, t, o0 + n - 1) == o0 + n - 1 &&
        (m->kind == Q_MODEL_GGUF || (t->role != Q_ROLE_ATTN_Q && t->role != Q_ROLE_ATTN_K)))
        return q_tensor_read_rows(t, o0, n, dst, err);
    for (int64_t i = 0; i < n; i++) {
        q_status st = q_tensor_read_rows(t, source_row(m, t, o0 + i), 1, dst + i * t->cols, err);
        if (st != Q_OK)
            return st;
    }
    return Q_OK;
}

/* Replaces NaN/Inf by 0 and returns how many there were. */
static int64_t scrub_nonfinite(float *x, int64_t n)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            x[i] = 0;
            bad++;
        }
    }
    return bad;
}

static void fill_report_sizes(const q_tensor *t, const q_resolved *r, q_tensor_report *rep)
{
    memset(rep, 0, sizeof *rep);
    rep->res = *r;
    rep->bytes_in = t->bytes;
    if (r->kept) {
        rep->bytes_out = t->bytes;
        rep->bpw = t->params ? 8.0 * (double)t->bytes / (double)t->params : 0;
    } else {
        rep->bytes_out = q_fmt_bytes(&r->fmt, t->rows, t->cols);
        rep->bpw = q_fmt_bpw(&r->fmt, t->rows, t->cols);
    }
}

static void add_totals(q_job_totals *tot, const q_tensor *t, const q_tensor_report *rep,
                       double *sum_w2, double *sum_e2, double *sum_rel)
{
    tot->bytes_in += rep->bytes_in;
    tot->bytes_out += rep->bytes_out;
    tot->params += t->params;
    if (!rep->res.kept)
        tot->params_quantized += t->params;
    if (rep->res.fallback)
        tot->n_fallbacks++;
    if (rep->have_metrics) {
        *sum_w2 += rep->acc.sum_w2;
        *sum_e2 += rep->acc.sum_e2;
        *sum_rel += (double)t->params * rep->metrics.rel_rmse;
    }
}

static void finish_totals(q_job_totals *tot, double sum_w2, double sum_e2, double sum_rel,
                          int64_t params_measured)
{
    tot->avg_bpw = tot->params ? 8.0 * (double)tot->bytes_out / (double)tot->params : 0;
    tot->weighted_rel_rmse = params_measured ? sum_rel / (double)params_measured : 0;
    tot->weighted_sqnr_db = sum_e2 > 0 ? 10 * log10(sum_w2 / sum_e2) : INFINITY;
}

/* Whole-tensor min/max for formats with one scale per tensor. */
static q_status prepare_tensor(const q_model *m, const q_tensor *t, const q_fmt_spec *spec,
                               q_fq_ctx *ctx, q_err *err)
{
    memset(ctx, 0, sizeof *ctx);
    if (!q_fmt_needs_prepare(spec))
        return Q_OK;
    int64_t cr = chunk_rows(t);
    float *buf = malloc((size_t)(cr * t->cols) * sizeof *buf);
    if (!buf)
        return q_fail(err, Q_ENOMEM, "%s: out of memory", t->name);
    q_status st = Q_OK;
    for (int64_t r0 = 0; r0 < t->rows && st == Q_OK; r0 += cr) {
        int64_t n = t->rows - r0 < cr ? t->rows - r0 : cr;
        st = read_out_rows(m, t, r0, n, buf, err);
        if (st == Q_OK) {
            q_fq_ctx part;
            q_fmt_prepare(spec, buf, n * t->cols, &part);
            q_fq_ctx_merge(ctx, &part);
        }
    }
    free(buf);
    return st;
}

/* Fake-quantizes rows [r0, r0+n) and accumulates their metrics into acc. */
static q_status preview_block(const q_model *m, const q_tensor *t, const q_resolved *r,
                              const q_fq_ctx *ctx, const q_imatrix *im, int64_t r0, int64_t n,
                              float *src, float *dst, q_metrics_acc *acc, int64_t *bad,
                              q_err *err)
{
    q_status st = read_out_rows(m, t, r0, n, src, err);
    if (st != Q_OK)
        return st;
    *bad = scrub_nonfinite(src, n * t->cols);
    const float *w = imatrix_row_weights(im, t, r0);
    st = q_fmt_fakequant(&r->fmt, src, dst, n, t->cols, r->method == Q_METHOD_WSEARCH ? w : NULL,
                         ctx, err);
    if (st == Q_OK)
        q_metrics_add(acc, src, dst, n, t->cols, w);
    return st;
}

/* Rows per parallel block; for stacked expert tensors (3-D) a divisor of ne[1]
 * so that one block never spans two experts (each has its own importance). */
static int64_t block_rows_for(const q_tensor *t)
{
    int64_t b = chunk_rows(t) / 4 > 0 ? chunk_rows(t) / 4 : 1;
    if (t->n_dims > 2) {
        if (b > t->ne[1])
            b = t->ne[1];
        while (t->ne[1] % b)
            b--;
    }
    return b;
}

/* Preview of one quantized tensor: rows split into blocks processed in parallel,
 * each with its own metrics accumulator, merged in block order (deterministic
 * for any thread count). The error histogram needs its range before anything
 * is accumulated: it is 1.25 × the largest error of the first block, measured
 * by a probe run of that block. */
static q_tensor_preview_fn g_tensor_fn; /* kernels/' fast path, or NULL */

void q_preview_set_tensor_fn(q_tensor_preview_fn fn)
{
    g_tensor_fn = fn;
}

/* The same tensor through the installed fast path (same imatrix selection and
 * histogram probe as below). */
static q_status preview_tensor_fast(const q_model *m, const q_tensor *t, const q_job_opts *o,
                                    q_tensor_report *rep, q_err *err)
{
    const q_imatrix *im = o ? o->imatrix : NULL;
    const q_imatrix_entry *e = im ? q_imatrix_find(im, t->gguf_name) : NULL;
    q_tensor_preview_args a = {
        .model = m,
        .tensor = t,
        .res = &rep->res,
        .hist_probe_rows = block_rows_for(t),
        .cancel = o ? o->cancel : NULL,
    };
    if (e && e->n == t->cols && e->n_mat > 0) {
        a.imatrix = e->values;
        a.imatrix_n_mat = e->n_mat;
        a.imatrix_rows = e->n_mat > 1 ? (t->ne[1] > 0 ? t->ne[1] : 1) : 0;
    }
    q_status st = g_tensor_fn(&a, rep, err);
    if (st == Q_OK)
        rep->imatrix_used =
            rep->res.method == Q_METHOD_WSEARCH && imatrix_row_weights(im, t, 0) != NULL;
    return st;
}

static q_status preview_tensor(const q_model *m, const q_tensor *t, const q_job_opts *o,
                               q_tensor_report *rep, q_err *err)
{
    if (g_tensor_fn && !(o && o->use_reference))
        return preview_tensor_fast(m, t, o, rep, err);
    const q_resolved *r = &rep->res;
    const q_imatrix *im = o ? o->imatrix : NULL;
    q_fq_ctx ctx;
    q_status st = prepare_tensor(m, t, &r->fmt, &ctx, err);
    if (st != Q_OK)
        return st;
    int64_t block_rows = block_rows_for(t);
    int64_t n_blocks = (t->rows + block_rows - 1) / block_rows;
    size_t block_floats = (size_t)(block_rows * t->cols);
    q_metrics_acc *accs = calloc((size_t)n_blocks, sizeof *accs);
    int64_t *bad = calloc((size_t)n_blocks, sizeof *bad);
    float *src = malloc(block_floats * sizeof *src), *dst = malloc(block_floats * sizeof *dst);
    if (!accs || !bad || !src || !dst) {
        st = q_fail(err, Q_ENOMEM, "%s: out of memory", t->name);
        goto done;
    }
    q_metrics_acc probe;
    int64_t probe_bad;
    q_metrics_init(&probe, 0);
    st = preview_block(m, t, r, &ctx, im, 0, block_rows < t->rows ? block_rows : t->rows, src,
                       dst, &probe, &probe_bad, err);
    if (st != Q_OK)
        goto done;
    double hist_range = probe.max_abs > 0 ? 1.25 * probe.max_abs : 0;

    atomic_int failed = 0;
#pragma omp parallel
    {
        float *s = malloc(block_floats * sizeof *s), *d = malloc(block_floats * sizeof *d);
        q_err lerr = {{0}};
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < n_blocks; b++) {
            if (atomic_load(&failed) || cancelled(o))
                continue;
            int64_t r0 = b * block_rows;
            int64_t n = t->rows - r0 < block_rows ? t->rows - r0 : block_rows;
            q_metrics_init(&accs[b], hist_range);
            q_status bs = (s && d) ? preview_block(m, t, r, &ctx, im, r0, n, s, d, &accs[b],
                                                   &bad[b], &lerr)
                                   : q_fail(&lerr, Q_ENOMEM, "%s: out of memory", t->name);
            if (bs != Q_OK) {
#pragma omp critical(q_apply_err)
                if (!atomic_load(&failed)) {
                    if (err)
                        *err = lerr;
                    atomic_store(&failed, (int)bs);
                }
            }
        }
        free(s);
        free(d);
    }
    if (atomic_load(&failed)) {
        st = (q_status)atomic_load(&failed);
        goto done;
    }
    if (cancelled(o)) {
        st = q_fail(err, Q_ECANCELLED, "cancelled");
        goto done;
    }
    q_metrics_init(&rep->acc, hist_range);
    for (int64_t b = 0; b < n_blocks; b++) {
        q_metrics_merge(&rep->acc, &accs[b]);
        rep->n_nonfinite += bad[b];
    }
    q_metrics_finish(&rep->acc, &rep->metrics);
    rep->have_metrics = true;
    rep->imatrix_used = r->method == Q_METHOD_WSEARCH && imatrix_row_weights(im, t, 0) != NULL;
done:
    free(accs);
    free(bad);
    free(src);
    free(dst);
    return st;
}

static void job_check_wsearch(const q_tensor *t, const q_job_opts *o, q_tensor_report *rep)
{
    if (rep->res.method == Q_METHOD_WSEARCH && !rep->res.kept)
        rep->imatrix_missing = imatrix_row_weights(o ? o->imatrix : NULL, t, 0) == NULL;
}

q_status q_preview(const q_model *m, const q_resolved *res, const q_job_opts *o,
                   q_tensor_report *out, q_job_totals *tot, q_err *err)
{
    memset(tot, 0, sizeof *tot);
    double sum_w2 = 0, sum_e2 = 0, sum_rel = 0;
    int64_t measured = 0;
    uint64_t total_bytes = 0, done = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++)
        total_bytes += m->tensors[i].bytes;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        q_tensor_report *rep = &out[i];
        fill_report_sizes(t, &res[i], rep);
        progress(o, (int64_t)i, (int64_t)m->n_tensors, done, total_bytes);
        if (cancelled(o))
            return q_fail(err, Q_ECANCELLED, "cancelled");
        job_check_wsearch(t, o, rep);
        if (!res[i].kept) {
            if (!t->readable)
                return q_fail(err, Q_EDATA, "%s: cannot read type %s to quantize it", t->name,
                              q_dtype_name(t->dtype));
            q_status st = preview_tensor(m, t, o, rep, err);
            q_tensor_release(t);
            if (st != Q_OK)
                return st;
            measured += t->params;
        }
        add_totals(tot, t, rep, &sum_w2, &sum_e2, &sum_rel);
        done += t->bytes;
    }
    progress(o, (int64_t)m->n_tensors, (int64_t)m->n_tensors, total_bytes, total_bytes);
    finish_totals(tot, sum_w2, sum_e2, sum_rel, measured);
    return Q_OK;
}

/* ---- apply ---- */

/* llama.cpp's llama_ftype values for a dominant format. */
static uint32_t ftype_of(q_format_id id)
{
    switch (id) {
    case Q_FMT_F32:
        return 0;
    case Q_FMT_F16:
        return 1;
    case Q_FMT_Q4_0:
        return 2;
    case Q_FMT_Q4_1:
        return 3;
    case Q_FMT_Q8_0:
        return 7;
    case Q_FMT_Q5_0:
        return 8;
    case Q_FMT_Q5_1:
        return 9;
    case Q_FMT_Q2_K:
        return 10;
    case Q_FMT_Q3_K:
        return 12; /* Q3_K_M */
    case Q_FMT_Q4_K:
        return 15; /* Q4_K_M */
    case Q_FMT_Q5_K:
        return 17; /* Q5_K_M */
    case Q_FMT_Q6_K:
        return 18;
    case Q_FMT_IQ4_NL:
        return 25;
    case Q_FMT_BF16:
        return 32;
    default:
        return 1024; /* LLAMA_FTYPE_GUESSED */
    }
}

uint32_t q_apply_file_type(const q_model *m, const q_resolved *res)
{
    int64_t params[Q_FMT_COUNT] = {0};
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (!res[i].kept)
            params[res[i].fmt.id] += m->tensors[i].params;
    int best = -1;
    for (int f = 0; f < Q_FMT_COUNT; f++)
        if (params[f] > 0 && (best < 0 || params[f] > params[best]))
            best = f;
    if (best < 0)
        return m->file_type != UINT32_MAX ? m->file_type : 0;
    return ftype_of((q_format_id)best);
}

/* GGUF can hold the stored type as is (ggml ids only, known sizes). */
static bool gguf_writable(uint32_t dtype)
{
    return dtype < 1000 && q_dtype_get(dtype) != NULL;
}

/* Element type a tensor gets in the output. */
static uint32_t out_type(const q_tensor *t, const q_resolved *r)
{
    if (!r->kept)
        return (uint32_t)q_format_get(r->fmt.id)->ggml_type;
    return gguf_writable(t->dtype) ? t->dtype : Q_DT_F32;
}

static bool same_file(const char *a, const struct stat *sb)
{
    struct stat sa;
    return stat(a, &sa) == 0 && sa.st_dev == sb->st_dev && sa.st_ino == sb->st_ino;
}

static q_status set_hf_metadata(q_gguf_w *w, const q_model *m)
{
    const q_arch *a = &m->arch;
    const char *arch = a->name[0] ? a->name : "llama";
    char key[96], name[256];
    snprintf(name, sizeof name, "%s", m->path);
    q_status st = q_gguf_w_set_str(w, "general.architecture", arch);
    if (st == Q_OK)
        st = q_gguf_w_set_str(w, "general.name", basename(name));
#define ARCH_U32(field, val)                                            \
    if (st == Q_OK && (val) > 0) {                                      \
        snprintf(key, sizeof key, "%s." field, arch);                   \
        st = q_gguf_w_set_u32(w, key, (uint32_t)(val));                 \
    }
    ARCH_U32("context_length", a->n_ctx)
    ARCH_U32("embedding_length", a->n_embd)
    ARCH_U32("block_count", a->n_layer)
    ARCH_U32("feed_forward_length", a->n_ff)
    ARCH_U32("rope.dimension_count", a->n_rot)
    ARCH_U32("attention.head_count", a->n_head)
    ARCH_U32("attention.head_count_kv", a->n_head_kv)
    ARCH_U32("vocab_size", a->n_vocab)
#undef ARCH_U32
    if (st == Q_OK) {
        snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", arch);
        st = q_gguf_w_set_f32(w, key, (float)(a->norm_eps > 0 ? a->norm_eps : 1e-5));
    }
    if (st == Q_OK) {
        snprintf(key, sizeof key, "%s.rope.freq_base", arch);
        st = q_gguf_w_set_f32(w, key, (float)(a->rope_theta > 0 ? a->rope_theta : 10000.0));
    }
    /* No tokenizer in the checkpoint: llama.cpp loads such a model with vocab
     * type "none" (token ids in, logits out). */
    if (st == Q_OK)
        st = q_gguf_w_set_str(w, "tokenizer.ggml.model", "none");
    return st;
}

static bool key_has_prefix(const q_gguf_kv *kv, const char *prefix)
{
    size_t n = strlen(prefix);
    return kv->key.len >= n && memcmp(kv->key.ptr, prefix, n) == 0;
}

static bool key_is(const q_gguf_kv *kv, const char *key)
{
    return kv->key.len == strlen(key) && key_has_prefix(kv, key);
}

static q_status build_header(q_gguf_w *w, const q_model *m, const q_resolved *res,
                             const q_apply_meta *meta, q_err *err)
{
    q_status st = Q_OK;
    if (m->gguf) {
        for (uint64_t i = 0; i < m->gguf->n_kv && st == Q_OK; i++) {
            const q_gguf_kv *kv = &m->gguf->kv[i];
            if (key_is(kv, "general.file_type") || key_has_prefix(kv, "qtune.plan") ||
                key_has_prefix(kv, "qtune.imatrix") || key_is(kv, "qtune.version"))
                continue; /* replaced below: stale values of an earlier apply go */
            st = q_gguf_w_copy_kv(w, kv);
        }
    } else {
        st = set_hf_metadata(w, m);
    }
    if (st == Q_OK)
        st = q_gguf_w_set_u32(w, "general.file_type", q_apply_file_type(m, res));
    if (st == Q_OK)
        st = q_gguf_w_set_str(w, "qtune.version", "0.1.0");
    if (st == Q_OK && meta && meta->plan_fingerprint)
        st = q_gguf_w_set_str(w, "qtune.plan.fingerprint", meta->plan_fingerprint);
    if (st == Q_OK && meta && meta->plan_text)
        st = q_gguf_w_set_str(w, "qtune.plan", meta->plan_text);
    if (st == Q_OK && meta && meta->imatrix_path)
        st = q_gguf_w_set_str(w, "qtune.imatrix.file", meta->imatrix_path);
    if (st != Q_OK)
        return q_fail(err, st, "cannot build the output metadata");
    for (uint64_t i = 0; i < m->n_tensors && st == Q_OK; i++) {
        const q_tensor *t = &m->tensors[i];
        const char *name = m->kind == Q_MODEL_GGUF ? t->name : t->gguf_name;
        st = q_gguf_w_add_tensor(w, name, t->n_dims, t->ne, out_type(t, &res[i]));
        if (st != Q_OK)
            return q_fail(err, st, "%s: cannot declare tensor %s in the output", m->path, name);
    }
    return Q_OK;
}

/* Writes one tensor: rows in chunks; each chunk read, checked, quantized in
 * parallel into buf, then written in order. */
/* Whether any of n values is NaN or Inf (exponent bits all set): integer
 * operations, no early exit and `omp simd`, so the loop is vectorized (it runs
 * over every value apply writes). */
static bool any_nonfinite(const float *x, int64_t n)
{
    uint32_t any = 0;
#pragma omp simd reduction(| : any)
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        any |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    return any != 0;
}

static q_status apply_tensor(const q_model *m, const q_tensor *t, const q_resolved *r,
                             q_gguf_w *w, FILE *fp, const q_job_opts *o, q_err *err)
{
    uint32_t ot = out_type(t, r);
    uint64_t out_row = q_dtype_bytes(ot, t->cols), in_row = q_dtype_bytes(t->dtype, t->cols);
    bool raw_copy = r->kept && ot == t->dtype;
    int64_t cr = chunk_rows(t);
    uint8_t *buf = malloc((size_t)(out_row * (uint64_t)cr));
    if (!buf)
        return q_fail(err, Q_ENOMEM, "%s: out of memory", t->name);
    const q_format *f = r->kept ? NULL : q_format_get(r->fmt.id);
    q_quant_fn quant = f ? (o && o->use_reference ? f->quantize_ref : f->quantize) : NULL;
    const q_imatrix *im = o ? o->imatrix : NULL;
    bool use_im = r->method == Q_METHOD_WSEARCH;
    q_status st = Q_OK;
    for (int64_t r0 = 0; r0 < t->rows && st == Q_OK; r0 += cr) {
        int64_t n = t->rows - r0 < cr ? t->rows - r0 : cr;
        if (cancelled(o)) {
            st = q_fail(err, Q_ECANCELLED, "cancelled");
            break;
        }
        if (raw_copy) {
            for (int64_t i = 0; i < n; i++)
                memcpy(buf + (uint64_t)i * out_row,
                       t->data + (uint64_t)source_row(m, t, r0 + i) * in_row, out_row);
        } else {
            atomic_int failed = 0;
            int64_t bad_row = -1;
#pragma omp parallel
            {
                int nt = omp_get_num_threads(), id = omp_get_thread_num();
                int64_t a = n * id / nt, b = n * (id + 1) / nt;
                float *src = b > a ? malloc((size_t)((b - a) * t->cols) * sizeof *src) : NULL;
                q_err lerr;
                q_status s = (b > a && !src) ? Q_ENOMEM : Q_OK;
                if (s == Q_OK && b > a)
                    s = read_out_rows(m, t, r0 + a, b - a, src, &lerr);
                if (s == Q_OK && any_nonfinite(src, (b - a) * t->cols)) {
                    int64_t i = 0;
                    while (isfinite(src[i]))
                        i++;
                    s = Q_EDATA;
#pragma omp critical(q_apply_bad)
                    if (bad_row < 0 || r0 + a + i / t->cols < bad_row)
                        bad_row = r0 + a + i / t->cols;
                }
                for (int64_t row = a; s == Q_OK && row < b; row++) {
                    const float *x = src + (row - a) * t->cols;
                    uint8_t *y = buf + (uint64_t)row * out_row;
                    if (quant) {
                        const float *iw = use_im ? imatrix_row_weights(im, t, r0 + row) : NULL;
                        quant(x, y, 1, t->cols, iw);
                    } else {
                        memcpy(y, x, (size_t)t->cols * sizeof(float)); /* kept → F32 */
                    }
                }
                if (s != Q_OK) {
#pragma omp critical(q_apply_err)
                    if (!atomic_load(&failed)) {
                        if (s != Q_EDATA && err)
                            *err = lerr;
                        atomic_store(&failed, (int)s);
                    }
                }
                free(src);
            }
            if (atomic_load(&failed) == Q_EDATA)
                st = q_fail(err, Q_EDATA,
                            "%s: row %lld holds NaN or Inf values; refusing to quantize it",
                            t->name, (long long)bad_row);
            else if (atomic_load(&failed))
                st = (q_status)atomic_load(&failed);
        }
        if (st == Q_OK)
            st = q_gguf_w_write_data(w, fp, buf, (size_t)(out_row * (uint64_t)n), err);
    }
    free(buf);
    return st;
}

q_status q_apply(const q_model *m, const q_resolved *res, const char *out_path,
                 const q_apply_meta *meta, const q_job_opts *o, q_tensor_report *out,
                 q_job_totals *tot, q_err *err)
{
    memset(tot, 0, sizeof *tot);
    struct stat so;
    if (stat(out_path, &so) == 0) {
        for (int f = 0; f < m->n_files; f++)
            if (same_file(m->file_paths[f], &so))
                return q_fail(err, Q_EUSAGE, "%s: refusing to overwrite the model's own file",
                              out_path);
    }
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        char fn[32];
        if (!res[i].kept && !q_fmt_is_ggml(&res[i].fmt))
            return q_fail(err, Q_EUSAGE, "%s: format %s has no GGUF type (preview only)",
                          t->name, q_fmt_name(&res[i].fmt, fn, sizeof fn));
        if (!t->readable && !(res[i].kept && gguf_writable(t->dtype)))
            return q_fail(err, Q_EDATA, "%s: cannot read type %s", t->name,
                          q_dtype_name(t->dtype));
    }
    uint32_t align = m->gguf ? m->gguf->alignment : Q_GGUF_DEFAULT_ALIGNMENT;
    q_gguf_w *w = q_gguf_w_new(align);
    if (!w)
        return q_fail(err, Q_ENOMEM, "out of memory");
    q_atomic at;
    memset(&at, 0, sizeof at);
    q_status st = build_header(w, m, res, meta, err);
    if (st == Q_OK)
        st = q_atomic_open(&at, out_path, err);
    if (st == Q_OK)
        st = q_gguf_w_write_header(w, at.fp, err);
    double sum_w2 = 0, sum_e2 = 0, sum_rel = 0;
    uint64_t total_bytes = 0, done = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++)
        total_bytes += m->tensors[i].bytes;
    for (uint64_t i = 0; i < m->n_tensors && st == Q_OK; i++) {
        const q_tensor *t = &m->tensors[i];
        q_tensor_report *rep = &out[i];
        progress(o, (int64_t)i, (int64_t)m->n_tensors, done, total_bytes);
        fill_report_sizes(t, &res[i], rep);
        job_check_wsearch(t, o, rep);
        rep->imatrix_used = res[i].method == Q_METHOD_WSEARCH && !res[i].kept &&
                            imatrix_row_weights(o ? o->imatrix : NULL, t, 0) != NULL;
        st = apply_tensor(m, t, &res[i], w, at.fp, o, err);
        q_tensor_release(t);
        add_totals(tot, t, rep, &sum_w2, &sum_e2, &sum_rel);
        done += t->bytes;
    }
    if (st == Q_OK)
        st = q_gguf_w_finish(w, err);
    if (st == Q_OK)
        st = q_atomic_commit(&at, err);
    else
        q_atomic_abort(&at);
    q_gguf_w_free(w);
    if (st == Q_OK) {
        progress(o, (int64_t)m->n_tensors, (int64_t)m->n_tensors, total_bytes, total_bytes);
        finish_totals(tot, sum_w2, sum_e2, sum_rel, 0);
    }
    return st;
}
