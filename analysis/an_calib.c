/* an_calib.c — activation capture, imatrix I/O, output error and KL divergence
 * (see an_calib.h). */
#include "an_calib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "an_blas.h"

#include "q_gguf.h"
#include "q_io.h"

#define AN_SITES_PER_LAYER 4

static const char *const ac_site_w[AN_SITE_COUNT][3] = {
    {"attn_q", "attn_k", "attn_v"},
    {"attn_output", NULL, NULL},
    {"ffn_gate", "ffn_up", NULL},
    {"ffn_down", NULL, NULL},
    {"output", NULL, NULL},
};

static uint64_t ac_rand(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void an_calib_free(an_calib *c)
{
    if (!c)
        return;
    for (int64_t i = 0; i < c->n_sites; i++) {
        an_site_stats *s = &c->sites[i];
        free(s->sum);
        free(s->sum2);
        free(s->absmax);
        free(s->res);
    }
    free(c->sites);
    free(c);
}

q_status an_calib_new(const an_fwd *f, int64_t reservoir_rows, uint64_t seed, an_calib **out,
                      q_err *err)
{
    *out = NULL;
    const an_config *cf = an_fwd_config(f);
    if (reservoir_rows < 0 || reservoir_rows > (1 << 20))
        return q_fail(err, Q_EUSAGE, "reservoir of %lld rows", (long long)reservoir_rows);
    an_calib *c = calloc(1, sizeof *c);
    if (!c)
        return q_fail(err, Q_ENOMEM, "out of memory");
    c->n_layer = cf->n_layer;
    c->n_sites = cf->n_layer * AN_SITES_PER_LAYER + 1;
    c->sites = calloc((size_t)c->n_sites, sizeof *c->sites);
    if (!c->sites)
        goto oom;
    for (int64_t i = 0; i < c->n_sites; i++) {
        an_site_stats *s = &c->sites[i];
        bool out_site = i == c->n_sites - 1;
        s->layer = out_site ? -1 : (int)(i / AN_SITES_PER_LAYER);
        s->site = out_site ? AN_SITE_OUTPUT : (an_site)(i % AN_SITES_PER_LAYER);
        s->n = s->site == AN_SITE_FFN_DOWN ? cf->n_ff
               : s->site == AN_SITE_ATTN_OUT ? cf->n_head * cf->head_dim : cf->dim;
        for (int k = 0; k < 3 && ac_site_w[s->site][k]; k++) {
            if (out_site)
                snprintf(s->names[k], sizeof s->names[k], "output.weight");
            else
                snprintf(s->names[k], sizeof s->names[k], "blk.%d.%s.weight", s->layer,
                         ac_site_w[s->site][k]);
            s->n_names++;
        }
        s->sum = calloc((size_t)s->n, sizeof *s->sum);
        s->sum2 = calloc((size_t)s->n, sizeof *s->sum2);
        s->absmax = calloc((size_t)s->n, sizeof *s->absmax);
        if (!s->sum || !s->sum2 || !s->absmax)
            goto oom;
        s->res_cap = reservoir_rows;
        if (reservoir_rows) {
            if (s->n > INT64_MAX / reservoir_rows / (int64_t)sizeof(float))
                goto oom;
            s->res = malloc((size_t)(reservoir_rows * s->n) * sizeof(float));
            if (!s->res)
                goto oom;
        }
        s->rng = seed ^ (0x1234567ull * (uint64_t)(i + 1));
    }
    *out = c;
    return Q_OK;
oom:
    an_calib_free(c);
    return q_fail(err, Q_ENOMEM, "out of memory for calibration statistics");
}

void an_calib_capture(void *user, int layer, an_site site, const float *x, int64_t T, int64_t n)
{
    an_calib *c = user;
    int64_t idx = site == AN_SITE_OUTPUT ? c->n_sites - 1
                                         : (int64_t)layer * AN_SITES_PER_LAYER + (int64_t)site;
    if (idx < 0 || idx >= c->n_sites || c->sites[idx].n != n)
        return;
    an_site_stats *s = &c->sites[idx];
    /* Per channel sums (channels split across threads). */
#pragma omp parallel for if (T * n > 65536)
    for (int64_t j = 0; j < n; j++) {
        double a = 0, a2 = 0;
        float mx = s->absmax[j];
        for (int64_t t = 0; t < T; t++) {
            float v = x[t * n + j];
            a += v;
            a2 += (double)v * v;
            if (fabsf(v) > mx)
                mx = fabsf(v);
        }
        s->sum[j] += a;
        s->sum2[j] += a2;
        s->absmax[j] = mx;
    }
    /* Per token outliers: |x| > 6 rms of the token's row. */
    for (int64_t t = 0; t < T; t++) {
        const float *r = x + t * n;
        double ss = 0;
        for (int64_t j = 0; j < n; j++)
            ss += (double)r[j] * r[j];
        double thr = AN_OUTLIER_SIGMA * sqrt(ss / (double)n);
        int64_t k = 0;
        for (int64_t j = 0; j < n; j++)
            if (fabs((double)r[j]) > thr)
                k++;
        double frac = (double)k / (double)n;
        s->out_frac_sum += frac;
        if (frac > s->out_frac_max)
            s->out_frac_max = frac;
        if (k)
            s->out_tokens++;
        /* Reservoir (algorithm R): row number count + t. */
        if (s->res_cap) {
            int64_t seen = s->count + t;
            int64_t slot = -1;
            if (s->res_rows < s->res_cap)
                slot = s->res_rows++;
            else {
                uint64_t j = ac_rand(&s->rng) % (uint64_t)(seen + 1);
                if (j < (uint64_t)s->res_cap)
                    slot = (int64_t)j;
            }
            if (slot >= 0)
                memcpy(s->res + slot * n, r, (size_t)n * sizeof(float));
        }
    }
    s->count += T;
}

/* How many chunks of ctx tokens a pass over n_tokens runs (at most max_chunks
 * when that is positive); Q_EUSAGE for a context out of range or a text
 * shorter than one chunk. */
static q_status ac_chunks(int64_t n_tokens, int64_t ctx, int64_t max_chunks, int64_t *nchunks,
                          q_err *err)
{
    if (ctx < 2 || ctx > (1 << 20))
        return q_fail(err, Q_EUSAGE, "context of %lld tokens", (long long)ctx);
    int64_t n = n_tokens / ctx;
    if (n < 1)
        return q_fail(err, Q_EUSAGE, "the text gives %lld tokens, fewer than one chunk of %lld",
                      (long long)n_tokens, (long long)ctx);
    if (max_chunks > 0 && max_chunks < n)
        n = max_chunks;
    *nchunks = n;
    return Q_OK;
}

q_status an_calib_run(an_calib *c, an_fwd *f, const int32_t *tokens, int64_t n_tokens,
                      int64_t ctx, int64_t max_chunks, int32_t bos, an_progress_fn progress,
                      void *puser, q_err *err)
{
    int64_t nchunks;
    q_status cs = ac_chunks(n_tokens, ctx, max_chunks, &nchunks, err);
    if (cs != Q_OK)
        return cs;
    int32_t *buf = malloc((size_t)ctx * sizeof *buf);
    if (!buf)
        return q_fail(err, Q_ENOMEM, "out of memory");
    an_fwd_set_hooks(f, NULL, an_calib_capture, c);
    q_status st = Q_OK;
    c->chunk_size = ctx;
    for (int64_t i = 0; i < nchunks; i++) {
        if (progress && !progress(puser, i, nchunks)) {
            st = q_fail(err, Q_ECANCELLED, "calibration cancelled after %lld chunks",
                        (long long)i);
            break;
        }
        memcpy(buf, tokens + i * ctx, (size_t)ctx * sizeof *buf);
        if (bos >= 0)
            buf[0] = bos;
        if ((st = an_fwd_eval(f, buf, ctx, NULL, false, err)) != Q_OK)
            break;
        c->chunk_count = i + 1;
    }
    if (st == Q_OK && progress)
        progress(puser, nchunks, nchunks);
    an_fwd_set_hooks(f, NULL, NULL, NULL);
    free(buf);
    return st;
}

const an_site_stats *an_calib_find(const an_calib *c, const char *tensor_name)
{
    for (int64_t i = 0; i < c->n_sites; i++)
        for (int k = 0; k < c->sites[i].n_names; k++)
            if (!strcmp(c->sites[i].names[k], tensor_name))
                return &c->sites[i];
    return NULL;
}

/* ---- imatrix writer ---- */

static q_status ac_write_f32(q_gguf_w *w, FILE *fp, const float *v, int64_t n, q_err *err)
{
    return q_gguf_w_write_data(w, fp, v, (size_t)n * sizeof(float), err);
}

q_status an_calib_write_imatrix(const an_calib *c, const char *path, q_err *err)
{
    q_status st = Q_OK;
    FILE *fp = NULL;
    float *tmp = NULL;
    size_t plen = strlen(path);
    char *tpath = malloc(plen + 16);
    q_gguf_w *w = q_gguf_w_new(0);
    int64_t maxn = 3;
    for (int64_t i = 0; i < c->n_sites; i++)
        if (c->sites[i].n > maxn)
            maxn = c->sites[i].n;
    tmp = malloc((size_t)maxn * sizeof(float));
    if (!tpath || !w || !tmp) {
        st = q_fail(err, Q_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(tpath, plen + 16, "%s.tmp%ld", path, (long)getpid());
    const char *ds[1] = {c->dataset[0] ? c->dataset : "(tokens)"};
    if ((st = q_gguf_w_set_str(w, "general.type", "imatrix")) != Q_OK ||
        (st = q_gguf_w_set_arr_str(w, "imatrix.datasets", ds, 1)) != Q_OK ||
        (st = q_gguf_w_set_u32(w, "imatrix.chunk_count", (uint32_t)c->chunk_count)) != Q_OK ||
        (st = q_gguf_w_set_u32(w, "imatrix.chunk_size", (uint32_t)c->chunk_size)) != Q_OK ||
        (st = q_gguf_w_set_f32(w, "qtune.calib.outlier_sigma", (float)AN_OUTLIER_SIGMA)) !=
            Q_OK ||
        (st = q_gguf_w_set_u32(w, "qtune.calib.version", 1)) != Q_OK) {
        q_fail(err, st, "cannot add imatrix metadata");
        goto fail;
    }
    static const char *const sfx[5] = {"in_sum2", "counts", "in_sum", "qtune_absmax",
                                       "qtune_outliers"};
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            fp = fopen(tpath, "wb");
            if (!fp) {
                st = q_fail(err, Q_ECANTCREAT, "%s: cannot create", tpath);
                goto fail;
            }
            if ((st = q_gguf_w_write_header(w, fp, err)) != Q_OK)
                goto fail;
        }
        for (int64_t i = 0; i < c->n_sites; i++) {
            const an_site_stats *s = &c->sites[i];
            if (!s->count || (s->site == AN_SITE_OUTPUT && !c->process_output))
                continue;
            for (int k = 0; k < s->n_names; k++) {
                for (int j = 0; j < 5; j++) {
                    if (pass == 0) {
                        char tn[160];
                        snprintf(tn, sizeof tn, "%s.%s", s->names[k], sfx[j]);
                        int64_t ne[2] = {j == 1 ? 1 : j == 4 ? 3 : s->n, 1};
                        st = q_gguf_w_add_tensor(w, tn, j == 4 ? 1 : 2, ne, 0);
                        if (st != Q_OK) {
                            q_fail(err, st, "cannot declare tensor %s", tn);
                            goto fail;
                        }
                        continue;
                    }
                    int64_t n = s->n;
                    if (j == 0)
                        for (int64_t q = 0; q < n; q++)
                            tmp[q] = (float)s->sum2[q];
                    else if (j == 1) {
                        tmp[0] = (float)s->count;
                        n = 1;
                    } else if (j == 2)
                        for (int64_t q = 0; q < n; q++)
                            tmp[q] = (float)s->sum[q];
                    else if (j == 3)
                        memcpy(tmp, s->absmax, (size_t)n * sizeof(float));
                    else {
                        tmp[0] = (float)(s->out_frac_sum / (double)s->count);
                        tmp[1] = (float)s->out_frac_max;
                        tmp[2] = (float)((double)s->out_tokens / (double)s->count);
                        n = 3;
                    }
                    if ((st = ac_write_f32(w, fp, tmp, n, err)) != Q_OK)
                        goto fail;
                }
            }
        }
    }
    if ((st = q_gguf_w_finish(w, err)) != Q_OK)
        goto fail;
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        st = q_fail(err, Q_EIO, "%s: write failed", tpath);
        goto fail;
    }
    if (fclose(fp) != 0) {
        fp = NULL;
        st = q_fail(err, Q_EIO, "%s: write failed", tpath);
        goto fail;
    }
    fp = NULL;
    if (rename(tpath, path) != 0) {
        st = q_fail(err, Q_ECANTCREAT, "%s: cannot rename to %s", tpath, path);
        goto fail;
    }
    free(tpath);
    free(tmp);
    q_gguf_w_free(w);
    return Q_OK;
fail:
    if (fp) {
        fclose(fp);
        remove(tpath);
    }
    free(tpath);
    free(tmp);
    q_gguf_w_free(w);
    return st;
}

/* ---- reader of qtune's extras ---- */

void an_extra_free(an_extra *x)
{
    if (!x)
        return;
    for (int64_t i = 0; i < x->n_entries; i++) {
        free(x->entries[i].name);
        free(x->entries[i].absmax);
    }
    free(x->entries);
    free(x);
}

const an_extra_entry *an_extra_find(const an_extra *x, const char *name)
{
    for (int64_t i = 0; i < x->n_entries; i++)
        if (!strcmp(x->entries[i].name, name))
            return &x->entries[i];
    return NULL;
}

static an_extra_entry *ac_extra_get(an_extra *x, const char *name, size_t len, q_status *st)
{
    for (int64_t i = 0; i < x->n_entries; i++)
        if (strlen(x->entries[i].name) == len && !memcmp(x->entries[i].name, name, len))
            return &x->entries[i];
    an_extra_entry *ne = realloc(x->entries, (size_t)(x->n_entries + 1) * sizeof *ne);
    if (!ne) {
        *st = Q_ENOMEM;
        return NULL;
    }
    x->entries = ne;
    an_extra_entry *e = &ne[x->n_entries];
    memset(e, 0, sizeof *e);
    e->name = malloc(len + 1);
    if (!e->name) {
        *st = Q_ENOMEM;
        return NULL;
    }
    memcpy(e->name, name, len);
    e->name[len] = 0;
    x->n_entries++;
    return e;
}

q_status an_extra_load(const char *path, an_extra **out, q_err *err)
{
    *out = NULL;
    q_map map;
    q_status st = q_map_file(path, &map, err);
    if (st != Q_OK)
        return st;
    q_gguf *g = NULL;
    an_extra *x = calloc(1, sizeof *x);
    if (!x) {
        st = q_fail(err, Q_ENOMEM, "out of memory");
        goto done;
    }
    if ((st = q_gguf_parse(map.data, map.size, path, &g, err)) != Q_OK)
        goto done;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const q_gguf_tensor *t = &g->tensors[i];
        static const char s_abs[] = ".qtune_absmax", s_out[] = ".qtune_outliers";
        size_t la = sizeof s_abs - 1, lo = sizeof s_out - 1, n = (size_t)t->name.len;
        bool is_abs = n > la && !memcmp(t->name.ptr + n - la, s_abs, la);
        bool is_out = n > lo && !memcmp(t->name.ptr + n - lo, s_out, lo);
        if (!is_abs && !is_out)
            continue;
        int64_t ne = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        if (t->type != 0 || !t->data || (is_out && ne != 3) || (is_abs && ne < 1) ||
            t->nbytes != (uint64_t)ne * 4) {
            st = q_fail(err, Q_EDATA, "%s: offset %llu: tensor %.*s must be F32%s", path,
                        (unsigned long long)t->abs_offset, (int)n, t->name.ptr,
                        is_out ? " with 3 elements" : "");
            goto done;
        }
        an_extra_entry *e = ac_extra_get(x, t->name.ptr, n - (is_abs ? la : lo), &st);
        if (!e) {
            q_fail(err, st, "out of memory");
            goto done;
        }
        if (is_abs) {
            free(e->absmax);
            e->absmax = malloc((size_t)ne * sizeof(float));
            if (!e->absmax) {
                st = q_fail(err, Q_ENOMEM, "out of memory");
                goto done;
            }
            memcpy(e->absmax, t->data, (size_t)ne * sizeof(float));
            e->n = ne;
        } else {
            memcpy(e->outliers, t->data, sizeof e->outliers);
            e->has_outliers = true;
        }
    }
    *out = x;
    x = NULL;
done:
    an_extra_free(x);
    q_gguf_free(g);
    q_unmap(&map);
    return st;
}

/* ---- layer output error ---- */

q_status an_output_error(const an_calib *c, const char *tensor_name, const float *W,
                         const float *W_hat, int64_t rows, int64_t cols, double *rel,
                         q_err *err)
{
    *rel = 0;
    const an_site_stats *s = an_calib_find(c, tensor_name);
    if (!s || !s->res_rows)
        return q_fail(err, Q_EUSAGE, "%s: no captured activations", tensor_name);
    if (s->n != cols || rows < 1)
        return q_fail(err, Q_EUSAGE, "%s: %lld input channels captured, weight has %lld",
                      tensor_name, (long long)s->n, (long long)cols);
    int64_t R = s->res_rows;
    if (!an_blas_load(err))
        return Q_EINTERNAL;
    float *D = malloc((size_t)(rows * cols) * sizeof(float));
    float *Y = malloc((size_t)(R * rows) * sizeof(float));
    float *E = malloc((size_t)(R * rows) * sizeof(float));
    if (!D || !Y || !E) {
        free(D);
        free(Y);
        free(E);
        return q_fail(err, Q_ENOMEM, "out of memory");
    }
    for (int64_t i = 0; i < rows * cols; i++)
        D[i] = W[i] - W_hat[i];
    /* Y (R, rows) = X Wᵀ;  E (R, rows) = X (W − Ŵ)ᵀ */
    an_sgemm(false, true, (int)R, (int)rows, (int)cols, 1.0f, s->res, (int)cols, W, (int)cols,
             0.0f, Y, (int)rows);
    an_sgemm(false, true, (int)R, (int)rows, (int)cols, 1.0f, s->res, (int)cols, D, (int)cols,
             0.0f, E, (int)rows);
    double ny = 0, ne = 0;
    for (int64_t i = 0; i < R * rows; i++) {
        ny += (double)Y[i] * Y[i];
        ne += (double)E[i] * E[i];
    }
    *rel = ny > 0 ? sqrt(ne / ny) : (ne > 0 ? INFINITY : 0.0);
    free(D);
    free(Y);
    free(E);
    return Q_OK;
}

/* ---- plan hook ---- */

q_status an_plan_hook_fn(void *user, const q_tensor *t, float *w, q_err *err)
{
    const an_plan_hook *h = user;
    int64_t idx = t - h->m->tensors;
    if (idx < 0 || (uint64_t)idx >= h->m->n_tensors)
        return q_fail(err, Q_EINTERNAL, "%s: tensor not in the plan's model", t->gguf_name);
    const q_resolved *r = &h->res[idx];
    if (r->kept || r->method == Q_METHOD_KEEP)
        return Q_OK;
    const float *imx = NULL;
    if (h->im && r->method == Q_METHOD_WSEARCH) {
        const q_imatrix_entry *e = q_imatrix_find(h->im, t->gguf_name);
        if (e && e->n == t->cols)
            imx = e->values;
    }
    int64_t n = t->rows * t->cols;
    float *src = malloc((size_t)n * sizeof(float));
    if (!src)
        return q_fail(err, Q_ENOMEM, "out of memory for %s", t->gguf_name);
    memcpy(src, w, (size_t)n * sizeof(float));
    q_fq_ctx ctx = {0};
    if (q_fmt_needs_prepare(&r->fmt))
        q_fmt_prepare(&r->fmt, src, n, &ctx);
    q_status st = Q_OK;
    int64_t chunk = 16, nch = (t->rows + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < nch; i++) {
        int64_t r0 = i * chunk, nr = t->rows - r0 < chunk ? t->rows - r0 : chunk;
        q_err e2;
        q_status s2 = q_fmt_fakequant(&r->fmt, src + r0 * t->cols, w + r0 * t->cols, nr,
                                      t->cols, imx, &ctx, &e2);
        if (s2 != Q_OK) {
#pragma omp critical(ac_fq_err)
            if (st == Q_OK) {
                st = s2;
                *err = e2;
            }
        }
    }
    free(src);
    if (st != Q_OK)
        q_fail_prefix(err, st, t->gguf_name);
    return st;
}

/* ---- KL divergence ---- */

/* log-softmax of l (n) into out (n), in double. */
static void ac_log_softmax(const float *l, double *out, int64_t n)
{
    float mx = l[0];
    for (int64_t i = 1; i < n; i++)
        if (l[i] > mx)
            mx = l[i];
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += exp((double)l[i] - mx);
    double ls = log(s) + mx;
    for (int64_t i = 0; i < n; i++)
        out[i] = (double)l[i] - ls;
}

static int ac_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

q_status an_kld(an_fwd *base, an_fwd *quant, const int32_t *tokens, int64_t n_tokens,
                int64_t ctx, int64_t max_chunks, int32_t bos, an_progress_fn progress,
                void *puser, an_kld_result *out, q_err *err)
{
    memset(out, 0, sizeof *out);
    int64_t nv = an_fwd_config(base)->n_vocab;
    if (an_fwd_config(quant)->n_vocab != nv)
        return q_fail(err, Q_EUSAGE, "the two passes have different vocabularies");
    int64_t nchunks;
    q_status cs = ac_chunks(n_tokens, ctx, max_chunks, &nchunks, err);
    if (cs != Q_OK)
        return cs;
    q_status st = Q_OK;
    int32_t *buf = malloc((size_t)ctx * sizeof *buf);
    float *lb = malloc((size_t)(ctx * nv) * sizeof(float));
    float *lq = malloc((size_t)(ctx * nv) * sizeof(float));
    double *kl = malloc((size_t)(nchunks * (ctx - 1)) * sizeof(double));
    if (!buf || !lb || !lq || !kl) {
        st = q_fail(err, Q_ENOMEM, "out of memory for %lld × %lld logits", (long long)ctx,
                    (long long)nv);
        goto done;
    }
    double nll_b = 0, nll_q = 0;
    int64_t agree = 0, np = 0;
    for (int64_t c = 0; c < nchunks; c++) {
        if (progress && !progress(puser, c, nchunks)) {
            st = q_fail(err, Q_ECANCELLED, "cancelled after %lld chunks", (long long)c);
            goto done;
        }
        memcpy(buf, tokens + c * ctx, (size_t)ctx * sizeof *buf);
        if (bos >= 0)
            buf[0] = bos;
        if ((st = an_fwd_eval(base, buf, ctx, lb, false, err)) != Q_OK ||
            (st = an_fwd_eval(quant, buf, ctx, lq, false, err)) != Q_OK)
            goto done;
        double sb = 0, sq = 0;
        int64_t ag = 0;
        bool oom = false;
#pragma omp parallel reduction(+ : sb, sq, ag)
        {
            double *pb = malloc((size_t)nv * sizeof(double));
            double *pq = malloc((size_t)nv * sizeof(double));
            if (!pb || !pq) {
#pragma omp atomic write
                oom = true;
            }
#pragma omp for
            for (int64_t t = 0; t < ctx - 1; t++) {
                if (!pb || !pq)
                    continue;
                ac_log_softmax(lb + t * nv, pb, nv);
                ac_log_softmax(lq + t * nv, pq, nv);
                double k = 0;
                int64_t ab = 0, aq = 0;
                for (int64_t i = 0; i < nv; i++) {
                    k += exp(pb[i]) * (pb[i] - pq[i]);
                    if (pb[i] > pb[ab])
                        ab = i;
                    if (pq[i] > pq[aq])
                        aq = i;
                }
                kl[np + t] = k > 0 ? k : 0;
                int32_t next = buf[t + 1];
                sb += -pb[next];
                sq += -pq[next];
                ag += ab == aq;
            }
            free(pb);
            free(pq);
        }
        if (oom) {
            st = q_fail(err, Q_ENOMEM, "out of memory");
            goto done;
        }
        nll_b += sb;
        nll_q += sq;
        agree += ag;
        np += ctx - 1;
    }
    if (progress)
        progress(puser, nchunks, nchunks);
    double sum = 0, mx = 0;
    for (int64_t i = 0; i < np; i++) {
        sum += kl[i];
        if (kl[i] > mx)
            mx = kl[i];
    }
    qsort(kl, (size_t)np, sizeof *kl, ac_cmp_double);
    int64_t i99 = (int64_t)ceil(0.99 * (double)np) - 1;
    out->n_tokens = np;
    out->kld_mean = sum / (double)np;
    out->kld_p99 = kl[i99 < 0 ? 0 : i99];
    out->kld_max = mx;
    out->top1 = (double)agree / (double)np;
    out->ppl_base = exp(nll_b / (double)np);
    out->ppl_quant = exp(nll_q / (double)np);
done:
    free(buf);
    free(lb);
    free(lq);
    free(kl);
    return st;
}

/* ---- activation sample (NAME.qtune_sample) ---- */

/* True when every value of v fits an F16 without overflow. */
static bool ac_fits_f16(const float *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(v[i]) <= 65000.0f))
            return false;
    return true;
}

q_status an_calib_add_samples(const an_calib *c, const char *path, q_err *err)
{
    q_map map = {0};
    q_gguf *g = NULL;
    q_gguf_w *w = NULL;
    FILE *fp = NULL;
    uint16_t *h = NULL;
    size_t plen = strlen(path);
    char *tpath = malloc(plen + 16);
    bool *f16 = calloc((size_t)c->n_sites + 1, sizeof *f16);
    q_status st = Q_OK;
    if (!tpath || !f16) {
        st = q_fail(err, Q_ENOMEM, "out of memory");
        goto fail;
    }
    snprintf(tpath, plen + 16, "%s.tmp%ld", path, (long)getpid());
    if ((st = q_map_file(path, &map, err)) != Q_OK)
        goto fail;
    if ((st = q_gguf_parse(map.data, map.size, path, &g, err)) != Q_OK)
        goto fail;
    w = q_gguf_w_new(g->alignment);
    if (!w) {
        st = q_fail(err, Q_ENOMEM, "out of memory");
        goto fail;
    }
    for (uint64_t i = 0; i < g->n_kv; i++)
        if ((st = q_gguf_w_copy_kv(w, &g->kv[i])) != Q_OK) {
            q_fail(err, st, "%s: cannot copy metadata", path);
            goto fail;
        }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const q_gguf_tensor *t = &g->tensors[i];
        char tn[256];
        if (!t->data || t->name.len >= sizeof tn) {
            st = q_fail(err, Q_EDATA, "%s: offset %llu: tensor of unknown type or long name",
                        path, (unsigned long long)t->abs_offset);
            goto fail;
        }
        memcpy(tn, t->name.ptr, (size_t)t->name.len);
        tn[t->name.len] = 0;
        if ((st = q_gguf_w_add_tensor(w, tn, t->n_dims, t->ne, t->type)) != Q_OK) {
            q_fail(err, st, "%s: cannot copy tensor %s", path, tn);
            goto fail;
        }
    }
    int64_t maxn = 0;
    for (int64_t i = 0; i < c->n_sites; i++) {
        const an_site_stats *s = &c->sites[i];
        if (!s->count || !s->res_rows || !s->n_names ||
            (s->site == AN_SITE_OUTPUT && !c->process_output))
            continue;
        f16[i] = ac_fits_f16(s->res, s->res_rows * s->n);
        if (s->res_rows * s->n > maxn)
            maxn = s->res_rows * s->n;
        char tn[160];
        snprintf(tn, sizeof tn, "%s.qtune_sample", s->names[0]);
        int64_t ne[2] = {s->n, s->res_rows};
        if ((st = q_gguf_w_add_tensor(w, tn, 2, ne, f16[i] ? 1 : 0)) != Q_OK) {
            q_fail(err, st, "cannot declare tensor %s", tn);
            goto fail;
        }
    }
    h = malloc((size_t)(maxn > 0 ? maxn : 1) * sizeof *h);
    fp = fopen(tpath, "wb");
    if (!h || !fp) {
        st = !h ? q_fail(err, Q_ENOMEM, "out of memory")
                : q_fail(err, Q_ECANTCREAT, "%s: cannot create", tpath);
        goto fail;
    }
    if ((st = q_gguf_w_write_header(w, fp, err)) != Q_OK)
        goto fail;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if ((st = q_gguf_w_write_data(w, fp, g->tensors[i].data,
                                      (size_t)g->tensors[i].nbytes, err)) != Q_OK)
            goto fail;
    for (int64_t i = 0; i < c->n_sites; i++) {
        const an_site_stats *s = &c->sites[i];
        if (!s->count || !s->res_rows || !s->n_names ||
            (s->site == AN_SITE_OUTPUT && !c->process_output))
            continue;
        int64_t n = s->res_rows * s->n;
        if (f16[i]) {
            for (int64_t k = 0; k < n; k++)
                h[k] = q_f32_to_f16(s->res[k]);
            st = q_gguf_w_write_data(w, fp, h, (size_t)n * sizeof *h, err);
        } else {
            st = ac_write_f32(w, fp, s->res, n, err);
        }
        if (st != Q_OK)
            goto fail;
    }
    if ((st = q_gguf_w_finish(w, err)) != Q_OK)
        goto fail;
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        st = q_fail(err, Q_EIO, "%s: write failed", tpath);
        goto fail;
    }
    int rc = fclose(fp);
    fp = NULL;
    if (rc != 0) {
        st = q_fail(err, Q_EIO, "%s: write failed", tpath);
        goto fail;
    }
    q_gguf_free(g);
    g = NULL;
    q_unmap(&map);
    if (rename(tpath, path) != 0) {
        st = q_fail(err, Q_ECANTCREAT, "%s: cannot rename to %s", tpath, path);
        remove(tpath);
        goto fail;
    }
fail:
    if (fp) {
        fclose(fp);
        remove(tpath);
    }
    q_gguf_w_free(w);
    q_gguf_free(g);
    if (map.data)
        q_unmap(&map);
    free(tpath);
    free(f16);
    free(h);
    return st;
}

/* The name whose .qtune_sample holds name's input: the first weight of its site
 * (blk.N.attn_k.weight -> blk.N.attn_q.weight), or name itself. */
static void ac_sample_owner(const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s", name);
    for (int s = 0; s < AN_SITE_COUNT; s++)
        for (int k = 1; k < 3 && ac_site_w[s][k]; k++) {
            char pat[64];
            snprintf(pat, sizeof pat, ".%s.", ac_site_w[s][k]);
            const char *p = strstr(name, pat);
            if (!p)
                continue;
            snprintf(out, cap, "%.*s.%s%s", (int)(p - name), name, ac_site_w[s][0],
                     p + strlen(pat) - 1);
            return;
        }
}

q_status an_sample_load(const char *path, const char *tensor_name, float **x, int64_t *rows,
                        int64_t *cols, q_err *err)
{
    *x = NULL;
    *rows = *cols = 0;
    char owner[200], tn[224];
    ac_sample_owner(tensor_name, owner, sizeof owner);
    snprintf(tn, sizeof tn, "%s.qtune_sample", owner);
    q_map map;
    q_status st = q_map_file(path, &map, err);
    if (st != Q_OK)
        return st;
    q_gguf *g = NULL;
    if ((st = q_gguf_parse(map.data, map.size, path, &g, err)) != Q_OK)
        goto done;
    int64_t i = q_gguf_find_tensor(g, tn);
    if (i < 0)
        goto done;
    const q_gguf_tensor *t = &g->tensors[i];
    int64_t n = t->ne[0], r = t->ne[1];
    bool ok = (t->type == 0 || t->type == 1) && t->data && t->n_dims == 2 && n >= 1 && r >= 1 &&
              n <= INT32_MAX && r <= INT32_MAX &&
              t->nbytes == (uint64_t)n * (uint64_t)r * (t->type ? 2u : 4u);
    if (!ok) {
        st = q_fail(err, Q_EDATA, "%s: offset %llu: tensor %s must be F16 or F32 [cols, rows]",
                    path, (unsigned long long)t->abs_offset, tn);
        goto done;
    }
    float *v = malloc((size_t)(n * r) * sizeof *v);
    if (!v) {
        st = q_fail(err, Q_ENOMEM, "out of memory");
        goto done;
    }
    if (t->type == 0) {
        memcpy(v, t->data, (size_t)(n * r) * sizeof *v);
    } else {
        for (int64_t k = 0; k < n * r; k++) {
            uint16_t b;
            memcpy(&b, t->data + 2 * k, 2);
            v[k] = q_f16_to_f32(b);
        }
    }
    *x = v;
    *rows = r;
    *cols = n;
done:
    q_gguf_free(g);
    q_unmap(&map);
    return st;
}

q_status an_output_error_x(const float *x, int64_t x_rows, const char *tensor_name,
                           const float *W, const float *W_hat, int64_t rows, int64_t cols,
                           double *rel, q_err *err)
{
    an_site_stats s;
    memset(&s, 0, sizeof s);
    s.n_names = 1;
    snprintf(s.names[0], sizeof s.names[0], "%s", tensor_name);
    s.n = cols;
    s.res_cap = s.res_rows = x_rows;
    s.res = (float *)(uintptr_t)x;
    an_calib c;
    memset(&c, 0, sizeof c);
    c.n_sites = 1;
    c.sites = &s;
    return an_output_error(&c, tensor_name, W, W_hat, rows, cols, rel, err);
}

q_status an_tensor_output_error(const q_tensor *t, const q_fmt_spec *fmt, const float *imatrix,
                                const float *x, int64_t x_rows, double *rel, q_err *err)
{
    *rel = NAN;
    if (t->rows < 1 || t->cols < 1 || t->rows > INT32_MAX || t->cols > INT32_MAX ||
        (uint64_t)t->rows > (uint64_t)(SIZE_MAX / 2 / sizeof(float)) / (uint64_t)t->cols)
        return q_fail(err, Q_EUSAGE, "%s: %lld x %lld: too large for the output error",
                      t->name, (long long)t->rows, (long long)t->cols);
    size_t n = (size_t)t->rows * (size_t)t->cols;
    float *w = malloc(n * sizeof *w), *wq = malloc(n * sizeof *wq);
    q_status st = Q_OK;
    if (!w || !wq) {
        st = q_fail(err, Q_ENOMEM, "out of memory");
        goto done;
    }
    if ((st = q_tensor_read_rows(t, 0, t->rows, w, err)) != Q_OK)
        goto done;
    for (size_t k = 0; k < n; k++)
        if (!isfinite(w[k]))
            w[k] = 0;
    q_fq_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    if (q_fmt_needs_prepare(fmt))
        q_fmt_prepare(fmt, w, (int64_t)n, &ctx);
    if ((st = q_fmt_fakequant(fmt, w, wq, t->rows, t->cols, imatrix, &ctx, err)) != Q_OK)
        goto done;
    st = an_output_error_x(x, x_rows, t->gguf_name, w, wq, t->rows, t->cols, rel, err);
done:
    free(w);
    free(wq);
    return st;
}
