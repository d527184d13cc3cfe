/* an_forward.c — batched llama forward pass on the CPU (see an_forward.h). */
#include "an_forward.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "an_blas.h"

/* Weight kinds of one block, in the order they are used. */
enum { W_Q, W_K, W_V, W_O, W_GATE, W_UP, W_DOWN, W_NORM_ATTN, W_NORM_FFN, W_PER_LAYER };

typedef struct fw_weight {
    const q_tensor *t;
    float *cache; /* rows × cols f32 when cached (owned), else NULL */
} fw_weight;

struct an_fwd {
    const q_model *m;
    an_config c;
    fw_weight *w;        /* (n_layer, W_PER_LAYER) */
    fw_weight embd, out, out_norm;
    bool cache_all;      /* all matrices fit the cache budget */
    float *scratch;      /* reusable dequantization buffer (max matrix) when not caching */
    int64_t scratch_n;
    an_weight_hook wh;
    an_capture_hook ch;
    void *user;
};

static const char *const fw_names[W_PER_LAYER] = {
    "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
    "attn_norm", "ffn_norm",
};

static q_status fw_find(const q_model *m, const char *name, const q_tensor **out, q_err *err)
{
    int64_t i = q_model_find(m, name);
    if (i < 0)
        return q_fail(err, Q_EDATA, "%s: tensor %s is missing (not a llama model?)", m->path,
                      name);
    const q_tensor *t = &m->tensors[i];
    if (!t->readable)
        return q_fail(err, Q_EDATA, "%s: tensor %s has a type qtune cannot read", m->path, name);
    *out = t;
    return Q_OK;
}

static q_status fw_shape(const q_model *m, const q_tensor *t, int64_t rows, int64_t cols,
                         q_err *err)
{
    if (t->rows != rows || t->cols != cols)
        return q_fail(err, Q_EDATA, "%s: tensor %s is %lld x %lld, expected %lld x %lld", m->path,
                      t->gguf_name, (long long)t->rows, (long long)t->cols, (long long)rows,
                      (long long)cols);
    return Q_OK;
}

q_status an_fwd_open(const q_model *m, int64_t cache_bytes, an_fwd **out, q_err *err)
{
    *out = NULL;
    if (!an_blas_load(err))
        return Q_EINTERNAL;
    q_status st = Q_OK;
    an_fwd *f = calloc(1, sizeof *f);
    if (!f)
        return q_fail(err, Q_ENOMEM, "out of memory");
    f->m = m;
    an_config *c = &f->c;
    const q_arch *a = &m->arch;
    c->n_layer = a->n_layer;
    c->dim = a->n_embd;
    c->n_head = a->n_head;
    c->n_head_kv = a->n_head_kv ? a->n_head_kv : a->n_head;
    c->n_ff = a->n_ff;
    c->n_ctx = a->n_ctx;
    c->rope_theta = a->rope_theta > 0 ? a->rope_theta : 10000.0;
    c->norm_eps = a->norm_eps > 0 ? a->norm_eps : 1e-5;
    c->rope_hf = m->kind != Q_MODEL_GGUF;
    if (c->n_layer < 1 || c->n_layer > 100000 || c->dim < 1 || c->n_head < 1 ||
        c->n_head_kv < 1 || c->dim % c->n_head || c->n_head % c->n_head_kv || c->n_ff < 1) {
        st = q_fail(err, Q_EDATA, "%s: not a llama-like model (layers %lld, dim %lld, heads "
                    "%lld/%lld, ff %lld)", m->path, (long long)c->n_layer, (long long)c->dim,
                    (long long)c->n_head, (long long)c->n_head_kv, (long long)c->n_ff);
        goto fail;
    }
    c->head_dim = c->dim / c->n_head;
    c->n_rot = a->n_rot > 0 && a->n_rot <= c->head_dim ? a->n_rot : c->head_dim;
    if (c->n_rot % 2) {
        st = q_fail(err, Q_EDATA, "%s: odd rope dimension %lld", m->path, (long long)c->n_rot);
        goto fail;
    }
    int64_t kv_dim = c->n_head_kv * c->head_dim;

    st = fw_find(m, "token_embd.weight", &f->embd.t, err);
    if (st != Q_OK)
        goto fail;
    c->n_vocab = f->embd.t->rows;
    if ((st = fw_shape(m, f->embd.t, c->n_vocab, c->dim, err)) != Q_OK)
        goto fail;
    if (q_model_find(m, "output.weight") >= 0) {
        if ((st = fw_find(m, "output.weight", &f->out.t, err)) != Q_OK ||
            (st = fw_shape(m, f->out.t, c->n_vocab, c->dim, err)) != Q_OK)
            goto fail;
    } else {
        c->tied = true;
        f->out.t = f->embd.t;
    }
    if ((st = fw_find(m, "output_norm.weight", &f->out_norm.t, err)) != Q_OK)
        goto fail;
    if (f->out_norm.t->rows * f->out_norm.t->cols != c->dim) {
        st = q_fail(err, Q_EDATA, "%s: output_norm.weight has the wrong size", m->path);
        goto fail;
    }

    f->w = calloc((size_t)c->n_layer * W_PER_LAYER, sizeof *f->w);
    if (!f->w) {
        st = q_fail(err, Q_ENOMEM, "out of memory");
        goto fail;
    }
    int64_t shapes[W_PER_LAYER][2] = {
        {c->dim, c->dim}, {kv_dim, c->dim}, {kv_dim, c->dim}, {c->dim, c->dim},
        {c->n_ff, c->dim}, {c->n_ff, c->dim}, {c->dim, c->n_ff}, {1, c->dim}, {1, c->dim},
    };
    int64_t total = c->n_vocab * c->dim * (c->tied ? 1 : 2), maxn = c->n_vocab * c->dim;
    for (int64_t l = 0; l < c->n_layer; l++) {
        for (int k = 0; k < W_PER_LAYER; k++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)l, fw_names[k]);
            fw_weight *w = &f->w[l * W_PER_LAYER + k];
            if ((st = fw_find(m, name, &w->t, err)) != Q_OK)
                goto fail;
            int64_t r = shapes[k][0], cc = shapes[k][1];
            if (k >= W_NORM_ATTN) {
                if (w->t->rows * w->t->cols != cc) {
                    st = q_fail(err, Q_EDATA, "%s: tensor %s has %lld elements, expected %lld",
                                m->path, name, (long long)(w->t->rows * w->t->cols),
                                (long long)cc);
                    goto fail;
                }
            } else if ((st = fw_shape(m, w->t, r, cc, err)) != Q_OK) {
                goto fail;
            }
            total += r * cc;
            if (r * cc > maxn)
                maxn = r * cc;
        }
    }
    if (cache_bytes < 0)
        cache_bytes = (int64_t)256 << 20;
    f->cache_all = total <= cache_bytes / (int64_t)sizeof(float);
    f->scratch_n = maxn;
    *out = f;
    return Q_OK;
fail:
    an_fwd_free(f);
    return st;
}

static void fw_drop_cache(an_fwd *f)
{
    if (f->w)
        for (int64_t i = 0; i < f->c.n_layer * W_PER_LAYER; i++) {
            free(f->w[i].cache);
            f->w[i].cache = NULL;
        }
    free(f->embd.cache);
    free(f->out.cache);
    free(f->out_norm.cache);
    f->embd.cache = f->out.cache = f->out_norm.cache = NULL;
}

void an_fwd_free(an_fwd *f)
{
    if (!f)
        return;
    fw_drop_cache(f);
    free(f->w);
    free(f->scratch);
    free(f);
}

const an_config *an_fwd_config(const an_fwd *f)
{
    return &f->c;
}

void an_fwd_set_hooks(an_fwd *f, an_weight_hook wh, an_capture_hook ch, void *user)
{
    /* Cached weights went through the old weight hook: drop them when it changes. */
    if (wh != f->wh || (wh && user != f->user))
        fw_drop_cache(f);
    f->wh = wh;
    f->ch = ch;
    f->user = user;
}

/* Dequantizes t into dst (rows × cols) in parallel row ranges, then runs the hook. */
static q_status fw_load(an_fwd *f, const q_tensor *t, float *dst, bool hook, q_err *err)
{
    q_status st = Q_OK;
    int64_t rows = t->rows, cols = t->cols;
    int64_t chunk = rows < 64 ? rows : 64;
    int64_t nchunks = (rows + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < nchunks; i++) {
        int64_t r0 = i * chunk, n = rows - r0 < chunk ? rows - r0 : chunk;
        q_err e2;
        q_status s2 = q_tensor_read_rows(t, r0, n, dst + r0 * cols, &e2);
        if (s2 != Q_OK) {
#pragma omp critical(fw_load_err)
            if (st == Q_OK) {
                st = s2;
                *err = e2;
            }
        }
    }
    if (st == Q_OK && hook && f->wh)
        st = f->wh(f->user, t, dst, err);
    return st;
}

/* Returns the f32 matrix of w: its cache (filled on first use when caching), or the
 * scratch buffer. The scratch result is valid until the next fw_get. */
static q_status fw_get(an_fwd *f, fw_weight *w, bool force_cache, const float **out, q_err *err)
{
    if (w->cache) {
        *out = w->cache;
        return Q_OK;
    }
    int64_t n = w->t->rows * w->t->cols;
    bool small = w->t->rows == 1 || w->t->n_dims == 1;
    if (f->cache_all || force_cache || small) {
        float *buf = malloc((size_t)n * sizeof(float));
        if (!buf)
            return q_fail(err, Q_ENOMEM, "out of memory for %s", w->t->gguf_name);
        q_status st = fw_load(f, w->t, buf, !small, err);
        if (st != Q_OK) {
            free(buf);
            return st;
        }
        w->cache = buf;
        *out = buf;
        return Q_OK;
    }
    if (!f->scratch) {
        f->scratch = malloc((size_t)f->scratch_n * sizeof(float));
        if (!f->scratch)
            return q_fail(err, Q_ENOMEM, "out of memory (%lld floats of scratch)",
                          (long long)f->scratch_n);
    }
    q_status st = fw_load(f, w->t, f->scratch, true, err);
    if (st == Q_OK)
        *out = f->scratch;
    /* Streaming a model larger than the cache: drop the file pages just read so the
     * resident set stays near one f32 tensor plus the activations. */
    q_tensor_release(w->t);
    return st;
}

/* y (T, rows) = x (T, cols) · Wᵀ, W (rows, cols). When OpenBLAS runs single-threaded
 * (an_set_threads), the rows of W are split across OpenMP threads, one sgemm each, so
 * one thread pool does all the work (two spinning pools on few cores fight). */
static void fw_gemm_nt(int64_t T, int64_t rows, int64_t cols, const float *x, const float *W,
                       float *y)
{
    bool split = an_blas_threads() == 1 && omp_get_max_threads() > 1 &&
                 T * rows * cols >= ((int64_t)1 << 22) && rows >= 64;
    if (!split) {
        an_sgemm(false, true, (int)T, (int)rows, (int)cols, 1.0f, x, (int)cols, W, (int)cols, 0.0f,
                 y, (int)rows);
        return;
    }
#pragma omp parallel
    {
        int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
        /* row ranges in multiples of 16 */
        int64_t per = ((rows + nt - 1) / nt + 15) / 16 * 16;
        int64_t r0 = id * per, r1 = r0 + per < rows ? r0 + per : rows;
        if (r0 < r1)
            an_sgemm(false, true, (int)T, (int)(r1 - r0), (int)cols, 1.0f, x, (int)cols,
                     W + r0 * cols, (int)cols, 0.0f, y + r0, (int)rows);
    }
}

static q_status fw_linear(an_fwd *f, fw_weight *w, const float *x, float *y, int64_t T,
                          q_err *err)
{
    const float *W;
    q_status st = fw_get(f, w, false, &W, err);
    if (st != Q_OK)
        return st;
    fw_gemm_nt(T, w->t->rows, w->t->cols, x, W, y);
    return Q_OK;
}

/* out (T, n) = x / rms(x) * g, per row */
static void fw_rmsnorm(float *out, const float *x, const float *g, int64_t T, int64_t n,
                       double eps)
{
#pragma omp parallel for if (T * n > 32768)
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * n;
        double ss = 0;
        for (int64_t i = 0; i < n; i++)
            ss += (double)xr[i] * xr[i];
        float s = (float)(1.0 / sqrt(ss / (double)n + eps));
        float *o = out + t * n;
        for (int64_t i = 0; i < n; i++)
            o[i] = xr[i] * s * g[i];
    }
}

/* Rotates the first n_rot dims of every head of v (T, n_heads*head_dim) in place. */
static void fw_rope(const an_config *c, float *v, int64_t T, int64_t n_heads)
{
    int64_t hd = c->head_dim, half = c->n_rot / 2;
#pragma omp parallel for if (T * n_heads * hd > 32768)
    for (int64_t t = 0; t < T; t++) {
        for (int64_t i = 0; i < half; i++) {
            double freq = pow(c->rope_theta, -2.0 * (double)i / (double)c->n_rot);
            double ang = (double)t * freq;
            float cs = (float)cos(ang), sn = (float)sin(ang);
            for (int64_t h = 0; h < n_heads; h++) {
                float *p = v + t * n_heads * hd + h * hd;
                int64_t a = c->rope_hf ? i : 2 * i, b = c->rope_hf ? i + half : 2 * i + 1;
                float x0 = p[a], x1 = p[b];
                p[a] = x0 * cs - x1 * sn;
                p[b] = x0 * sn + x1 * cs;
            }
        }
    }
}

/* Causal GQA. q (T, n_head*hd), k/v (T, kv_dim), att scratch (T, T), o (T, n_head*hd). */
static void fw_attention(const an_config *c, const float *q, const float *k, const float *v,
                         float *att_all, float *o, int64_t T)
{
    int64_t hd = c->head_dim, qd = c->n_head * hd, kvd = c->n_head_kv * hd;
    int64_t group = c->n_head / c->n_head_kv;
    float scale = (float)(1.0 / sqrt((double)hd));
    bool par = an_blas_threads() == 1 && T * T * hd >= (1 << 20);
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int64_t h = 0; h < c->n_head; h++) {
        int64_t kh = h / group;
        float *att = att_all + (int64_t)omp_get_thread_num() * T * T;
        /* att (T, T) = q_h (T, hd) · k_hᵀ */
        an_sgemm(false, true, (int)T, (int)T, (int)hd, scale, q + h * hd, (int)qd, k + kh * hd,
                 (int)kvd, 0.0f, att, (int)T);
        for (int64_t t = 0; t < T; t++) {
            float *r = att + t * T;
            float mx = r[0];
            for (int64_t j = 1; j <= t; j++)
                if (r[j] > mx)
                    mx = r[j];
            double sum = 0;
            for (int64_t j = 0; j <= t; j++) {
                r[j] = expf(r[j] - mx);
                sum += r[j];
            }
            float inv = (float)(1.0 / sum);
            for (int64_t j = 0; j <= t; j++)
                r[j] *= inv;
            for (int64_t j = t + 1; j < T; j++)
                r[j] = 0.0f;
        }
        /* o_h (T, hd) = att (T, T) · v_h (T, hd) */
        an_sgemm(false, false, (int)T, (int)hd, (int)T, 1.0f, att, (int)T, v + kh * hd, (int)kvd,
                 0.0f, o + h * hd, (int)qd);
    }
}

static void fw_capture(an_fwd *f, int layer, an_site s, const float *x, int64_t T, int64_t n)
{
    if (f->ch)
        f->ch(f->user, layer, s, x, T, n);
}

q_status an_fwd_eval(an_fwd *f, const int32_t *tokens, int64_t T, float *logits, bool last_only,
                     q_err *err)
{
    const an_config *c = &f->c;
    if (T < 1 || T > (int64_t)1 << 20)
        return q_fail(err, Q_EUSAGE, "an_fwd_eval: %lld tokens", (long long)T);
    for (int64_t t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= c->n_vocab)
            return q_fail(err, Q_EUSAGE, "token %d at position %lld is outside the vocabulary "
                          "(%lld)", tokens[t], (long long)t, (long long)c->n_vocab);
    int64_t dim = c->dim, hd = c->head_dim, qd = c->n_head * hd, kvd = c->n_head_kv * hd;
    int64_t ff = c->n_ff, wide = ff > qd ? ff : qd;
    if (wide < dim)
        wide = dim;
    q_status st = Q_OK;
    float *x = malloc((size_t)(T * dim) * sizeof(float));      /* (T, dim) residual */
    float *xb = malloc((size_t)(T * wide) * sizeof(float));    /* (T, max(dim, qd, ff)) */
    float *xb2 = malloc((size_t)(T * dim) * sizeof(float));    /* (T, dim) */
    float *q = malloc((size_t)(T * qd) * sizeof(float));       /* (T, qd) */
    float *k = malloc((size_t)(T * kvd) * sizeof(float));      /* (T, kv_dim) */
    float *v = malloc((size_t)(T * kvd) * sizeof(float));      /* (T, kv_dim) */
    float *hb = malloc((size_t)(T * ff) * sizeof(float));      /* (T, ff) */
    float *hb2 = malloc((size_t)(T * ff) * sizeof(float));     /* (T, ff) */
    int64_t nthr = omp_get_max_threads();
    float *att = malloc((size_t)(nthr * T * T) * sizeof(float)); /* (threads, T, T) */
    if (!x || !xb || !xb2 || !q || !k || !v || !hb || !hb2 || !att) {
        st = q_fail(err, Q_ENOMEM, "out of memory for %lld tokens", (long long)T);
        goto done;
    }

    /* Embedding rows: straight from the file unless a hook must see the whole matrix. */
    if (f->wh || f->embd.cache || f->cache_all) {
        const float *E;
        if ((st = fw_get(f, &f->embd, true, &E, err)) != Q_OK)
            goto done;
        for (int64_t t = 0; t < T; t++)
            memcpy(x + t * dim, E + (int64_t)tokens[t] * dim, (size_t)dim * sizeof(float));
    } else {
        for (int64_t t = 0; t < T; t++)
            if ((st = q_tensor_read_rows(f->embd.t, tokens[t], 1, x + t * dim, err)) != Q_OK)
                goto done;
    }

    for (int64_t l = 0; l < c->n_layer; l++) {
        fw_weight *w = f->w + l * W_PER_LAYER;
        const float *g;
        if ((st = fw_get(f, &w[W_NORM_ATTN], true, &g, err)) != Q_OK)
            goto done;
        fw_rmsnorm(xb, x, g, T, dim, c->norm_eps);
        fw_capture(f, (int)l, AN_SITE_ATTN_IN, xb, T, dim);
        if ((st = fw_linear(f, &w[W_Q], xb, q, T, err)) != Q_OK ||
            (st = fw_linear(f, &w[W_K], xb, k, T, err)) != Q_OK ||
            (st = fw_linear(f, &w[W_V], xb, v, T, err)) != Q_OK)
            goto done;
        fw_rope(c, q, T, c->n_head);
        fw_rope(c, k, T, c->n_head_kv);
        fw_attention(c, q, k, v, att, xb, T); /* xb (T, qd) */
        fw_capture(f, (int)l, AN_SITE_ATTN_OUT, xb, T, qd);
        if ((st = fw_linear(f, &w[W_O], xb, xb2, T, err)) != Q_OK)
            goto done;
        for (int64_t i = 0; i < T * dim; i++)
            x[i] += xb2[i];

        if ((st = fw_get(f, &w[W_NORM_FFN], true, &g, err)) != Q_OK)
            goto done;
        fw_rmsnorm(xb, x, g, T, dim, c->norm_eps);
        fw_capture(f, (int)l, AN_SITE_FFN_IN, xb, T, dim);
        if ((st = fw_linear(f, &w[W_GATE], xb, hb, T, err)) != Q_OK ||
            (st = fw_linear(f, &w[W_UP], xb, hb2, T, err)) != Q_OK)
            goto done;
        /* SwiGLU: hb = silu(gate) * up */
#pragma omp parallel for if (T * ff > 32768)
        for (int64_t i = 0; i < T * ff; i++) {
            float a = hb[i];
            hb[i] = a / (1.0f + expf(-a)) * hb2[i];
        }
        fw_capture(f, (int)l, AN_SITE_FFN_DOWN, hb, T, ff);
        if ((st = fw_linear(f, &w[W_DOWN], hb, xb2, T, err)) != Q_OK)
            goto done;
        for (int64_t i = 0; i < T * dim; i++)
            x[i] += xb2[i];
    }

    const float *g;
    if ((st = fw_get(f, &f->out_norm, true, &g, err)) != Q_OK)
        goto done;
    int64_t first = last_only ? T - 1 : 0, n = T - first;
    fw_rmsnorm(xb, x + first * dim, g, n, dim, c->norm_eps);
    fw_capture(f, -1, AN_SITE_OUTPUT, xb, n, dim);
    if (logits) {
        fw_weight *ow = c->tied ? &f->embd : &f->out;
        /* Tied output: keep the matrix (the embedding needs it again next call). */
        if (c->tied && (f->wh || f->cache_all)) {
            const float *W;
            if ((st = fw_get(f, ow, true, &W, err)) != Q_OK)
                goto done;
            fw_gemm_nt(n, c->n_vocab, dim, xb, W, logits);
        } else if ((st = fw_linear(f, ow, xb, logits, n, err)) != Q_OK) {
            goto done;
        }
    }
done:
    free(x);
    free(xb);
    free(xb2);
    free(q);
    free(k);
    free(v);
    free(hb);
    free(hb2);
    free(att);
    return st;
}

q_status an_fwd_greedy(an_fwd *f, const int32_t *prompt, int64_t n_prompt, int32_t eos,
                       int32_t *out, int64_t max_tokens, int64_t *n_out, q_err *err)
{
    *n_out = 0;
    if (n_prompt < 1 || n_prompt > max_tokens)
        return q_fail(err, Q_EUSAGE, "an_fwd_greedy: prompt of %lld tokens, room for %lld",
                      (long long)n_prompt, (long long)max_tokens);
    int64_t nv = f->c.n_vocab;
    float *logits = malloc((size_t)nv * sizeof(float));
    if (!logits)
        return q_fail(err, Q_ENOMEM, "out of memory");
    memcpy(out, prompt, (size_t)n_prompt * sizeof *out);
    int64_t n = n_prompt;
    q_status st = Q_OK;
    while (n < max_tokens) {
        if ((st = an_fwd_eval(f, out, n, logits, true, err)) != Q_OK)
            break;
        int32_t best = 0;
        for (int64_t i = 1; i < nv; i++)
            if (logits[i] > logits[best])
                best = (int32_t)i;
        if (best == eos)
            break;
        out[n++] = best;
    }
    free(logits);
    *n_out = n;
    return st;
}

void an_set_threads(int n)
{
    if (n < 1)
        return;
    omp_set_num_threads(n);
    an_blas_single();
}
