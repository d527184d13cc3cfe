/* cmd_quant.c — `qtune preview` and `qtune apply`: load a model, a plan and an
 * optional importance matrix, resolve the plan, then measure or write. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "an_calib.h"
#include "cli.h"
#include "k_cuda_fused.h"
#include "k_preview.h"
#include "q_apply.h"
#include "q_dtype.h"
#include "q_format.h"
#include "q_imatrix.h"
#include "q_io.h"
#include "q_model.h"
#include "q_plan.h"

typedef struct quant_args {
    const char *model, *plan, *imatrix, *out;
    bool json, force, strict, reference;
} quant_args;

typedef struct quant_job {
    const char *plan_path;
    q_model *model;
    q_plan *plan;
    q_imatrix *imatrix;
    q_resolved *res;
    q_tensor_report *reports;
    double *out_err; /* per tensor ‖X Wᵀ − X Ŵᵀ‖/‖X Wᵀ‖ on the imatrix's sample, or NaN */
    bool have_out_err;
} quant_job;

static atomic_int g_cancel;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_cancel, 1);
}

/* Progress bar on stderr: tensor i/N, MB/s, ETA. Only when stderr is a TTY. */
typedef struct bar {
    struct timespec t0;
    const char *verb;
} bar;

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void bar_cb(void *user, int64_t i, int64_t n, uint64_t done, uint64_t total)
{
    bar *b = user;
    double el = since(&b->t0), mbs = el > 0 ? (double)done / el / 1e6 : 0;
    double eta = done > 0 ? el * (double)(total - done) / (double)done : 0;
    int width = 30, fill = total ? (int)((double)width * (double)done / (double)total) : width;
    fprintf(stderr, "\r%s [%.*s%*s] tensor %lld/%lld  %.0f MB/s  ETA %.0fs ", b->verb, fill,
            "##############################", width - fill, "", (long long)i, (long long)n, mbs,
            eta);
    if (i == n)
        fputc('\n', stderr);
    fflush(stderr);
}

static void job_free(quant_job *j)
{
    free(j->res);
    free(j->reports);
    q_imatrix_free(j->imatrix);
    free(j->out_err);
    q_plan_free(j->plan);
    k_cuda_fused_release(); /* its kept tensors are the model's, keyed by address */
    q_model_close(j->model);
}

/* Loads everything and resolves the plan; prints the fallbacks' and unmatched
 * rules' warnings to stderr. Returns an exit code (0 on success). */
static int job_load(const quant_args *a, quant_job *j)
{
    q_err err = {{0}};
    j->plan_path = a->plan;
    q_status st = q_model_open(a->model, &j->model, &err);
    if (st == Q_OK)
        st = q_plan_load(a->plan, &j->plan, &err);
    if (st == Q_OK && a->imatrix)
        st = q_imatrix_load(a->imatrix, &j->imatrix, &err);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        return (int)st;
    }
    uint64_t n = j->model->n_tensors;
    j->res = calloc(n ? n : 1, sizeof *j->res);
    j->reports = calloc(n ? n : 1, sizeof *j->reports);
    if (!j->res || !j->reports) {
        cli_errorf("out of memory");
        return Q_ENOMEM;
    }
    int *unmatched = NULL, n_unmatched = 0;
    st = q_plan_resolve(j->plan, j->model, a->force, j->res, &unmatched, &n_unmatched, &err);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        free(unmatched);
        return (int)st;
    }
    for (int k = 0; k < n_unmatched; k++) {
        const q_plan_rule *r = &j->plan->rules[unmatched[k]];
        fprintf(stderr, "qtune: %s:%d: %s: rule '%s' matches no tensor\n", a->plan, r->line,
                a->strict ? "error" : "warning", r->pattern);
    }
    free(unmatched);
    if (n_unmatched && a->strict)
        return Q_EDATA;
    for (uint64_t i = 0; i < n; i++)
        if (j->res[i].fallback)
            fprintf(stderr, "qtune: fallback: %s: %s\n", j->model->tensors[i].name,
                    j->res[i].note);
    return 0;
}

static int parse_args(int argc, char **argv, bool is_apply, quant_args *a)
{
    static const struct option opts[] = {
        {"plan", required_argument, NULL, 'p'},    {"imatrix", required_argument, NULL, 'i'},
        {"json", no_argument, NULL, 'j'},          {"force", no_argument, NULL, 'f'},
        {"strict", no_argument, NULL, 's'},        {"threads", required_argument, NULL, 't'},
        {"reference", no_argument, NULL, 'r'},     {"help", no_argument, NULL, 'h'},
        {"output", required_argument, NULL, 'o'},  {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof *a);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:i:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            a->plan = optarg;
            break;
        case 'i':
            a->imatrix = optarg;
            break;
        case 'o':
            a->out = optarg;
            break;
        case 'j':
            a->json = true;
            break;
        case 'f':
            a->force = true;
            break;
        case 's':
            a->strict = true;
            break;
        case 'r':
            a->reference = true;
            break;
        case 't': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 1024) {
                cli_errorf("--threads wants a number from 1 to 1024, not '%s'", optarg);
                return 64;
            }
            omp_set_num_threads((int)n);
            break;
        }
        case 'h':
            return -1;
        default:
            return 64;
        }
    }
    if (optind != argc - 1 || !a->plan || (is_apply && !a->out))
        return 64;
    a->model = argv[optind];
    return 0;
}

static json_t *metrics_json(const q_tensor_report *r)
{
    if (!r->have_metrics)
        return json_null();
    const q_metrics *m = &r->metrics;
    json_t *o = json_object();
    json_object_set_new(o, "mse", json_real(m->mse));
    json_object_set_new(o, "rmse", json_real(m->rmse));
    json_object_set_new(o, "rel_rmse", json_real(m->rel_rmse));
    json_object_set_new(o, "sqnr_db", isfinite(m->sqnr_db) ? json_real(m->sqnr_db) : json_null());
    json_object_set_new(o, "max_abs", json_real(m->max_abs));
    json_object_set_new(o, "cosine", json_real(m->cosine));
    json_object_set_new(o, "weighted_rel_err",
                        isnan(m->weighted_rel_err) ? json_null() : json_real(m->weighted_rel_err));
    json_t *h = json_array();
    for (int b = 0; b < Q_ERR_HIST_BINS; b++)
        json_array_append_new(h, json_integer(r->acc.hist[b]));
    json_object_set_new(o, "error_hist", json_pack("{s:f, s:o}", "range", r->acc.hist_range,
                                                   "counts", h));
    return o;
}

static json_t *report_json(const quant_job *j, bool with_metrics, const q_job_totals *tot)
{
    json_t *rows = json_array();
    for (uint64_t i = 0; i < j->model->n_tensors; i++) {
        const q_tensor *t = &j->model->tensors[i];
        const q_tensor_report *r = &j->reports[i];
        char fmt[32], want[32];
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(t->name));
        json_object_set_new(o, "rows", json_integer(t->rows));
        json_object_set_new(o, "cols", json_integer(t->cols));
        json_object_set_new(o, "format", json_string(r->res.kept ? q_dtype_name(t->dtype)
                                                     : q_fmt_name(&r->res.fmt, fmt, sizeof fmt)));
        json_object_set_new(o, "wanted", r->res.kept && r->res.rule < 0
                                             ? json_null()
                                             : json_string(q_fmt_name(&r->res.wanted, want,
                                                                      sizeof want)));
        json_object_set_new(o, "method", json_string(q_method_name(r->res.method)));
        json_object_set_new(o, "kept", json_boolean(r->res.kept));
        json_object_set_new(o, "fallback", json_boolean(r->res.fallback));
        json_object_set_new(o, "rule", r->res.rule >= 0
                                           ? json_integer(j->plan->rules[r->res.rule].line)
                                           : json_null());
        json_object_set_new(o, "note", r->res.note[0] ? json_string(r->res.note) : json_null());
        json_object_set_new(o, "bpw", json_real(r->bpw));
        json_object_set_new(o, "bytes_in", json_integer((json_int_t)r->bytes_in));
        json_object_set_new(o, "bytes_out", json_integer((json_int_t)r->bytes_out));
        json_object_set_new(o, "imatrix_used", json_boolean(r->imatrix_used));
        json_object_set_new(o, "nonfinite", json_integer(r->n_nonfinite));
        if (j->out_err && !isnan(j->out_err[i]))
            json_object_set_new(o, "output_rel_err", json_real(j->out_err[i]));
        if (with_metrics)
            json_object_set_new(o, "metrics", metrics_json(r));
        json_array_append_new(rows, o);
    }
    json_t *totals = json_object();
    json_object_set_new(totals, "bytes_in", json_integer((json_int_t)tot->bytes_in));
    json_object_set_new(totals, "bytes_out", json_integer((json_int_t)tot->bytes_out));
    json_object_set_new(totals, "params", json_integer(tot->params));
    json_object_set_new(totals, "params_quantized", json_integer(tot->params_quantized));
    json_object_set_new(totals, "avg_bpw", json_real(tot->avg_bpw));
    json_object_set_new(totals, "fallbacks", json_integer(tot->n_fallbacks));
    if (with_metrics) {
        json_object_set_new(totals, "weighted_rel_rmse", json_real(tot->weighted_rel_rmse));
        json_object_set_new(totals, "weighted_sqnr_db", isfinite(tot->weighted_sqnr_db)
                                                            ? json_real(tot->weighted_sqnr_db)
                                                            : json_null());
    }
    return json_pack("{s:s, s:s, s:s, s:o, s:o}", "schema",
                     with_metrics ? "qtune.preview/1" : "qtune.apply/1", "model",
                     j->model->path, "plan", j->plan_path, "tensors", rows, "totals",
                     totals);
}

/* Fills j->out_err for every quantized 2-D tensor whose input the imatrix file at path
 * holds a sample of (qtune calib); leaves the rest NaN. */
static q_status compute_out_err(quant_job *j, const char *path, q_err *err)
{
    uint64_t nt = j->model->n_tensors;
    j->out_err = malloc((size_t)(nt ? nt : 1) * sizeof *j->out_err);
    if (!j->out_err)
        return q_fail(err, Q_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < nt; i++)
        j->out_err[i] = NAN;
    for (uint64_t i = 0; i < nt; i++) {
        const q_tensor *t = &j->model->tensors[i];
        const q_resolved *r = &j->res[i];
        if (r->kept || !t->readable || t->n_dims != 2 || atomic_load(&g_cancel))
            continue;
        float *x = NULL;
        int64_t xr, xc;
        q_status st = an_sample_load(path, t->gguf_name, &x, &xr, &xc, err);
        if (st != Q_OK)
            return st;
        if (!x)
            continue;
        double rel = NAN;
        const q_imatrix_entry *e = j->imatrix ? q_imatrix_find(j->imatrix, t->gguf_name) : NULL;
        const float *imw = r->method == Q_METHOD_WSEARCH && e && e->n == t->cols ? e->values
                                                                                 : NULL;
        if (xc == t->cols)
            st = an_tensor_output_error(t, &r->fmt, imw, x, xr, &rel, err);
        free(x);
        if (st != Q_OK)
            return st;
        j->out_err[i] = rel;
        j->have_out_err = j->have_out_err || !isnan(rel);
    }
    return Q_OK;
}

static void print_preview_text(const quant_job *j, const q_job_totals *tot)
{
    int nw = 24;
    for (uint64_t i = 0; i < j->model->n_tensors; i++) {
        int l = (int)strlen(j->model->tensors[i].name);
        nw = l > nw ? (l > 60 ? 60 : l) : nw;
    }
    printf("%-*s %-8s %-8s %-7s %6s %11s %10s %8s %10s %9s %9s", nw, "name", "format",
           "wanted", "method", "bpw", "bytes", "rel_rmse", "sqnr_dB", "max_abs", "cosine",
           "w_relerr");
    if (j->have_out_err)
        printf(" %9s", "out_err");
    printf("  note\n");
    for (uint64_t i = 0; i < j->model->n_tensors; i++) {
        const q_tensor *t = &j->model->tensors[i];
        const q_tensor_report *r = &j->reports[i];
        char fmt[32], want[32] = "-";
        if (r->res.kept)
            snprintf(fmt, sizeof fmt, "%s", q_dtype_name(t->dtype));
        else
            q_fmt_name(&r->res.fmt, fmt, sizeof fmt);
        if (r->res.rule >= 0 && !r->res.kept)
            q_fmt_name(&r->res.wanted, want, sizeof want);
        printf("%-*s %-8s %-8s %-7s %6.2f %11llu", nw, t->name, fmt, want,
               q_method_name(r->res.method), r->bpw, (unsigned long long)r->bytes_out);
        if (r->have_metrics) {
            const q_metrics *m = &r->metrics;
            printf(" %10.3e %8.2f %10.3e %9.6f", m->rel_rmse, m->sqnr_db, m->max_abs, m->cosine);
            if (isnan(m->weighted_rel_err))
                printf(" %9s", "-");
            else
                printf(" %9.3e", m->weighted_rel_err);
        } else {
            printf(" %10s %8s %10s %9s %9s", "-", "-", "-", "-", "-");
        }
        if (j->have_out_err && !isnan(j->out_err[i]))
            printf(" %9.3e", j->out_err[i]);
        else if (j->have_out_err)
            printf(" %9s", "-");
        const char *note = r->res.note;
        if (r->n_nonfinite)
            printf("  %lld NaN/Inf values (counted as 0)%s%s", (long long)r->n_nonfinite,
                   note[0] ? "; " : "", note);
        else if (r->imatrix_missing)
            printf("  no imatrix entry: plain search%s%s", note[0] ? "; " : "", note);
        else
            printf("  %s", note);
        putchar('\n');
    }
    printf("\nsize      %llu → %llu bytes (%.2f MiB → %.2f MiB), %.3f bits/weight average\n",
           (unsigned long long)tot->bytes_in, (unsigned long long)tot->bytes_out,
           (double)tot->bytes_in / 1048576.0, (double)tot->bytes_out / 1048576.0, tot->avg_bpw);
    printf("error     parameter-weighted relative RMSE %.4e, SQNR %.2f dB over %lld quantized "
           "parameters\n",
           tot->weighted_rel_rmse, tot->weighted_sqnr_db, (long long)tot->params_quantized);
    printf("tensors   %llu, %d fallback%s\n", (unsigned long long)j->model->n_tensors,
           tot->n_fallbacks, tot->n_fallbacks == 1 ? "" : "s");
}

static void usage_preview(FILE *fp)
{
    fputs("usage: qtune preview MODEL --plan P [--imatrix I] [--json] [--force] [--strict]\n"
          "                       [--threads N]\n"
          "       qtune preview MODEL --plan P --kld [--text FILE] [--ctx N] [--json]\n"
          "  --kld runs the model in full precision and with the plan's quantized values and\n"
          "  reports KL divergence, top-1 agreement and perplexity (see qtune calib --help).\n"
          "  per-tensor format, method, bits per weight, bytes and error metrics of a plan;\n"
          "  nothing is written. --force accepts a plan made for another model; --strict\n"
          "  makes a rule that matches no tensor an error.\n",
          fp);
}

static void usage_apply(FILE *fp)
{
    fputs("usage: qtune apply MODEL --plan P -o OUT.gguf [--imatrix I] [--threads N] [--json]\n"
          "                     [--force] [--strict] [--reference]\n"
          "  quantizes MODEL under plan P and writes a GGUF v3 atomically. A progress bar\n"
          "  goes to stderr when it is a terminal; --json prints a summary on stdout.\n"
          "  --reference uses the scalar reference quantizers (for benchmarks).\n",
          fp);
}

static bool isatty_stderr(void)
{
    return isatty(2) == 1;
}

/* `qtune preview MODEL --plan P --kld [--text FILE] [--ctx N] [--chunks N]
 * [--imatrix I] [--force] [--json]`: the model-level error, which runs the
 * model itself, is calib's --kld; forward the arguments to it unchanged (the
 * options mean the same there). Without --text, the project's sample prose. */
static int preview_kld(int argc, char **argv)
{
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (!args) {
        cli_errorf("out of memory");
        return 71;
    }
    int n = 0;
    bool has_text = false;
    args[n++] = (char *)"calib";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--text") || !strncmp(argv[i], "--text=", 7) ||
            !strcmp(argv[i], "--tokens") || !strncmp(argv[i], "--tokens=", 9))
            has_text = true;
        args[n++] = argv[i];
    }
    if (!has_text) {
        static const char *const fallback = "samples/calib/prose.txt";
        if (access(fallback, R_OK) != 0) {
            cli_errorf("preview --kld needs --text FILE (a calibration text)");
            free(args);
            return 64;
        }
        args[n++] = (char *)"--text";
        args[n++] = (char *)fallback;
    }
    args[n] = NULL;
    int rc = cmd_calib(n, args);
    free(args);
    return rc;
}

int cmd_preview(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--kld"))
            return preview_kld(argc, argv);
    quant_args a;
    int rc = parse_args(argc, argv, false, &a);
    if (rc) {
        usage_preview(rc < 0 ? stdout : stderr);
        return rc < 0 ? 0 : rc;
    }
    quant_job j = {0};
    rc = job_load(&a, &j);
    if (rc == 0) {
        bar b = {.verb = "preview"};
        clock_gettime(CLOCK_MONOTONIC, &b.t0);
        q_job_opts o = {.imatrix = j.imatrix, .cancel = &g_cancel, .use_reference = a.reference};
        if (isatty_stderr()) {
            o.progress = bar_cb;
            o.progress_user = &b;
        }
        q_job_totals tot;
        q_err err = {{0}};
        signal(SIGINT, on_signal);
        q_status st = q_preview(j.model, j.res, &o, j.reports, &tot, &err);
        if (st == Q_OK && a.imatrix)
            st = compute_out_err(&j, a.imatrix, &err);
        signal(SIGINT, SIG_DFL);
        char why[512];
        if (k_preview_gpu_failed(why, sizeof why))
            cli_errorf("the GPU failed, the CPU measured the rest: %s", why);
        if (st != Q_OK) {
            cli_errorf("%s", err.msg);
            rc = (int)st;
        } else if (a.json) {
            json_t *doc = report_json(&j, true, &tot);
            json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
            putchar('\n');
            json_decref(doc);
        } else {
            print_preview_text(&j, &tot);
        }
    }
    job_free(&j);
    return rc;
}

/* FNV-1a 64 of a text as 16 hex digits. */
static void text_fingerprint(const char *s, char out[17])
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

int cmd_apply(int argc, char **argv)
{
    quant_args a;
    int rc = parse_args(argc, argv, true, &a);
    if (rc) {
        usage_apply(rc < 0 ? stdout : stderr);
        return rc < 0 ? 0 : rc;
    }
    quant_job j = {0};
    rc = job_load(&a, &j);
    char *text = NULL;
    if (rc == 0) {
        bar b = {.verb = "apply"};
        clock_gettime(CLOCK_MONOTONIC, &b.t0);
        q_job_opts o = {.imatrix = j.imatrix, .cancel = &g_cancel, .use_reference = a.reference};
        if (isatty_stderr()) {
            o.progress = bar_cb;
            o.progress_user = &b;
        }
        text = q_plan_text(j.plan);
        char fp[17] = "";
        if (text)
            text_fingerprint(text, fp);
        q_apply_meta meta = {.plan_fingerprint = text ? fp : NULL,
                             .plan_text = text,
                             .imatrix_path = a.imatrix};
        q_job_totals tot;
        q_err err = {{0}};
        struct sigaction sa = {0}, old_int, old_term;
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        q_status st = q_apply(j.model, j.res, a.out, &meta, &o, j.reports, &tot, &err);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        if (st != Q_OK) {
            if (o.progress)
                fputc('\n', stderr);
            cli_errorf("%s", err.msg);
            rc = st == Q_ECANCELLED ? 130 : (int)st;
        } else if (a.json) {
            json_t *doc = report_json(&j, false, &tot);
            json_object_set_new(doc, "output", json_string(a.out));
            json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
            putchar('\n');
            json_decref(doc);
        } else {
            printf("wrote %s: %llu → %llu bytes, %.3f bits/weight, %lld of %lld parameters "
                   "quantized, %d fallback%s, %.2f s\n",
                   a.out, (unsigned long long)tot.bytes_in, (unsigned long long)tot.bytes_out,
                   tot.avg_bpw, (long long)tot.params_quantized, (long long)tot.params,
                   tot.n_fallbacks, tot.n_fallbacks == 1 ? "" : "s", since(&b.t0));
        }
    }
    free(text);
    job_free(&j);
    return rc;
}
