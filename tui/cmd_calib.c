/* cmd_calib.c — `qtune calib`: run the built-in forward pass over calibration text,
 * write a llama.cpp imatrix (plus qtune's statistics), or measure a plan's model-level
 * error (KL divergence, top-1 agreement, perplexity) with --kld. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <omp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "an_calib.h"
#include "an_forward.h"
#include "an_tokenizer.h"
#include "cli.h"
#include "q_imatrix.h"
#include "q_io.h"
#include "q_model.h"
#include "q_plan.h"

/* --text and --tokens files are read whole, up to this size */
#define CAL_TEXT_MAX ((size_t)1 << 30)

typedef struct calib_args {
    const char *model, *text, *tokens, *out, *plan, *imatrix, *tokenizer;
    long ctx, chunks, threads, reservoir;
    unsigned long long seed;
    bool kld, force, json, process_output;
} calib_args;

static atomic_int g_cal_cancel;

static void cal_on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_cal_cancel, 1);
}

static double cal_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

typedef struct cal_bar {
    double t0;
    int64_t ctx;
    const char *verb;
    bool tty;
} cal_bar;

static bool cal_progress(void *user, int64_t done, int64_t total)
{
    cal_bar *b = user;
    if (atomic_load(&g_cal_cancel))
        return false;
    if (!b->tty)
        return true;
    double el = cal_now() - b->t0;
    double tps = el > 0 ? (double)(done * b->ctx) / el : 0;
    double eta = done > 0 ? el * (double)(total - done) / (double)done : 0;
    int width = 30, fill = total ? (int)((double)width * (double)done / (double)total) : width;
    fprintf(stderr, "\r%s [%.*s%*s] chunk %lld/%lld  %.0f tok/s  ETA %.0fs ", b->verb, fill,
            "##############################", width - fill, "", (long long)done,
            (long long)total, tps, eta);
    if (done == total)
        fputc('\n', stderr);
    fflush(stderr);
    return true;
}

static void cal_usage(FILE *fp)
{
    fputs("usage: qtune calib MODEL (--text FILE | --tokens FILE) -o OUT.imatrix.gguf [options]\n"
          "       qtune calib MODEL (--text FILE | --tokens FILE) --kld --plan P [options]\n"
          "\n"
          "  --text FILE        calibration text (UTF-8), tokenized with the model's tokenizer\n"
          "  --tokens FILE      token ids separated by white space (models without tokenizer)\n"
          "  --tokenizer FILE   a Hugging Face tokenizer.json (default: MODEL/tokenizer.json)\n"
          "  --ctx N            tokens per chunk (default 512, at most the model's context)\n"
          "  --chunks N         use at most N chunks (default: all)\n"
          "  -o, --output FILE  write llama.cpp's GGUF imatrix plus qtune's statistics\n"
          "  --process-output   also store output.weight (llama-imatrix --process-output)\n"
          "  --reservoir N      activation rows kept per layer input (default 256), stored in\n"
          "                     the imatrix as NAME.qtune_sample (0: none)\n"
          "  --seed N           reservoir seed (default 1)\n"
          "  --threads N        OpenMP and OpenBLAS threads\n"
          "  --kld              compare the model with its plan's fake-quantized weights:\n"
          "                     KL divergence per token (mean, p99, max), top-1 agreement,\n"
          "                     perplexity of both (like llama-perplexity --kl-divergence)\n"
          "  --plan P           the plan for --kld; --imatrix I for its wsearch rows\n"
          "  --force            accept a plan made for another model\n"
          "  --json             --kld results as one JSON object on stdout\n",
          fp);
}

static bool cal_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Parses white-space separated token ids; names line:column of a bad one. */
static int cal_parse_tokens(const char *path, const char *s, size_t len, int64_t n_vocab,
                            int32_t **ids, int64_t *n)
{
    int64_t cap = 1024, k = 0;
    int32_t *v = malloc((size_t)cap * sizeof *v);
    size_t i = 0;
    int line = 1;
    size_t line_start = 0;
    while (v && i < len) {
        char c = s[i];
        if (c == '\n') {
            line++;
            line_start = i + 1;
        }
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            i++;
            continue;
        }
        size_t j = i;
        long long val = 0;
        while (j < len && s[j] >= '0' && s[j] <= '9' && val <= INT32_MAX)
            val = val * 10 + (s[j++] - '0');
        bool sep = j == len || s[j] == ' ' || s[j] == '\t' || s[j] == '\n' || s[j] == '\r';
        if (j == i || !sep || val >= n_vocab) {
            cli_errorf("%s:%d:%zu: expected a token id below %lld", path, line,
                       i - line_start + 1, (long long)n_vocab);
            free(v);
            return 65;
        }
        if (k == cap) {
            int32_t *nv = realloc(v, (size_t)cap * 2 * sizeof *nv);
            if (!nv) {
                free(v);
                v = NULL;
                break;
            }
            v = nv;
            cap *= 2;
        }
        v[k++] = (int32_t)val;
        i = j;
    }
    if (!v) {
        cli_errorf("out of memory");
        return 71;
    }
    *ids = v;
    *n = k;
    return 0;
}

static int cal_parse(int argc, char **argv, calib_args *a)
{
    enum { O_TEXT = 256, O_TOKENS, O_CTX, O_CHUNKS, O_THREADS, O_RES, O_SEED, O_KLD, O_PLAN,
           O_IMATRIX, O_FORCE, O_JSON, O_POUT, O_TOKENIZER };
    static const struct option opts[] = {
        {"text", required_argument, 0, O_TEXT},       {"tokens", required_argument, 0, O_TOKENS},
        {"ctx", required_argument, 0, O_CTX},         {"chunks", required_argument, 0, O_CHUNKS},
        {"threads", required_argument, 0, O_THREADS}, {"reservoir", required_argument, 0, O_RES},
        {"seed", required_argument, 0, O_SEED},       {"kld", no_argument, 0, O_KLD},
        {"plan", required_argument, 0, O_PLAN},       {"imatrix", required_argument, 0, O_IMATRIX},
        {"force", no_argument, 0, O_FORCE},           {"json", no_argument, 0, O_JSON},
        {"process-output", no_argument, 0, O_POUT},   {"output", required_argument, 0, 'o'},
        {"tokenizer", required_argument, 0, O_TOKENIZER}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    memset(a, 0, sizeof *a);
    a->ctx = 0;
    a->reservoir = 256;
    a->seed = 1;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":o:h", opts, NULL)) != -1) {
        switch (c) {
        case O_TEXT: a->text = optarg; break;
        case O_TOKENS: a->tokens = optarg; break;
        case O_TOKENIZER: a->tokenizer = optarg; break;
        case 'o': a->out = optarg; break;
        case O_PLAN: a->plan = optarg; break;
        case O_IMATRIX: a->imatrix = optarg; break;
        case O_KLD: a->kld = true; break;
        case O_FORCE: a->force = true; break;
        case O_JSON: a->json = true; break;
        case O_POUT: a->process_output = true; break;
        case O_CTX:
            if (!cal_long(optarg, 2, 1 << 20, &a->ctx)) {
                cli_errorf("--ctx: '%s' is not a number in 2..1048576", optarg);
                return 64;
            }
            break;
        case O_CHUNKS:
            if (!cal_long(optarg, 1, LONG_MAX, &a->chunks)) {
                cli_errorf("--chunks: '%s' is not a positive number", optarg);
                return 64;
            }
            break;
        case O_THREADS:
            if (!cal_long(optarg, 1, 1024, &a->threads)) {
                cli_errorf("--threads: '%s' is not a number in 1..1024", optarg);
                return 64;
            }
            break;
        case O_RES:
            if (!cal_long(optarg, 0, 65536, &a->reservoir)) {
                cli_errorf("--reservoir: '%s' is not a number in 0..65536", optarg);
                return 64;
            }
            break;
        case O_SEED: {
            long v;
            if (!cal_long(optarg, 0, LONG_MAX, &v)) {
                cli_errorf("--seed: '%s' is not a number", optarg);
                return 64;
            }
            a->seed = (unsigned long long)v;
            break;
        }
        case 'h': cal_usage(stdout); return -1;
        case ':': cli_errorf("option '%s' needs a value", argv[optind - 1]); return 64;
        default: cli_errorf("unknown option '%s'", argv[optind - 1]); return 64;
        }
    }
    if (optind != argc - 1) {
        cli_errorf(optind >= argc ? "calib: missing MODEL" : "calib: one MODEL expected");
        cal_usage(stderr);
        return 64;
    }
    a->model = argv[optind];
    if (!a->text == !a->tokens) {
        cli_errorf("calib: give exactly one of --text FILE or --tokens FILE");
        return 64;
    }
    if (a->kld && !a->plan) {
        cli_errorf("calib: --kld needs --plan P");
        return 64;
    }
    if (!a->kld && !a->out) {
        cli_errorf("calib: -o OUT.imatrix.gguf is required (or --kld --plan P)");
        return 64;
    }
    if (a->plan && !a->kld) {
        cli_errorf("calib: --plan is used only with --kld");
        return 64;
    }
    return 0;
}

/* Tokens of the input: --tokens ids, or --text through the model's tokenizer. */
static int cal_tokens(const calib_args *a, const q_model *m, int64_t n_vocab, int32_t **ids,
                      int64_t *n, int32_t *bos)
{
    char *buf = NULL;
    size_t len = 0;
    q_err err;
    q_status st = q_read_small_file(a->text ? a->text : a->tokens, CAL_TEXT_MAX, &buf, &len,
                                    &err);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        return (int)st;
    }
    *bos = -1;
    if (a->tokens) {
        const int rc = cal_parse_tokens(a->tokens, buf, len, n_vocab, ids, n);
        free(buf);
        return rc;
    }
    an_tok *tk = NULL;
    char path[4096];
    const char *tj = a->tokenizer;
    struct stat sb;
    if (!tj && m->kind == Q_MODEL_HF_DIR) {
        snprintf(path, sizeof path, "%s/tokenizer.json", m->path);
        if (stat(path, &sb) == 0)
            tj = path;
    }
    if (tj)
        st = an_tok_from_json(tj, &tk, &err);
    else if (m->gguf)
        st = an_tok_from_gguf(m->gguf, m->path, &tk, &err);
    else
        st = q_fail(&err, Q_EUSAGE, "%s: no tokenizer (no tokenizer.json); give --tokens FILE "
                    "or --tokenizer FILE", m->path);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        free(buf);
        return (int)st;
    }
    if (an_tok_n_vocab(tk) > n_vocab) {
        cli_errorf("%s: the tokenizer has %d tokens, the model %lld", m->path,
                   an_tok_n_vocab(tk), (long long)n_vocab);
        an_tok_free(tk);
        free(buf);
        return 65;
    }
    *bos = an_tok_bos(tk);
    st = an_tok_encode(tk, buf, len, true, ids, n, &err);
    an_tok_free(tk);
    free(buf);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        return (int)st;
    }
    return 0;
}

/* BOS id of the model for --tokens input: GGUF tokenizer.ggml.bos_token_id, or
 * bos_token_id of an HF directory's config.json; -1 when unknown. */
static int32_t cal_model_bos(const q_model *m, int64_t n_vocab)
{
    int64_t v = -1;
    if (m->gguf) {
        if (!q_gguf_get_int(m->gguf, "tokenizer.ggml.bos_token_id", &v))
            v = -1;
    } else if (m->kind == Q_MODEL_HF_DIR) {
        char path[4096];
        snprintf(path, sizeof path, "%s/config.json", m->path);
        json_t *root = json_load_file(path, 0, NULL);
        json_t *b = json_object_get(root, "bos_token_id");
        if (json_is_integer(b))
            v = json_integer_value(b);
        json_decref(root);
    }
    return v >= 0 && v < n_vocab ? (int32_t)v : -1;
}

static int cal_kld(const calib_args *a, q_model *m, an_fwd *base, const int32_t *ids,
                   int64_t n, int64_t ctx, int32_t bos)
{
    q_err err;
    q_plan *plan = NULL;
    q_imatrix *im = NULL;
    q_resolved *res = NULL;
    an_fwd *quant = NULL;
    int rc = 0;
    q_status st = q_plan_load(a->plan, &plan, &err);
    if (st == Q_OK && a->imatrix)
        st = q_imatrix_load(a->imatrix, &im, &err);
    if (st == Q_OK) {
        res = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *res);
        st = res ? q_plan_resolve(plan, m, a->force, res, NULL, NULL, &err)
                 : q_fail(&err, Q_ENOMEM, "out of memory");
    }
    if (st == Q_OK)
        st = an_fwd_open(m, -1, &quant, &err);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        rc = (int)st;
        goto done;
    }
    an_plan_hook hook = {m, res, im};
    an_fwd_set_hooks(quant, an_plan_hook_fn, NULL, &hook);
    cal_bar bar = {cal_now(), ctx, "kld", isatty(2) != 0};
    an_kld_result r;
    st = an_kld(base, quant, ids, n, ctx, a->chunks, bos, cal_progress, &bar, &r, &err);
    if (st != Q_OK) {
        if (bar.tty)
            fputc('\n', stderr);
        cli_errorf("%s", err.msg);
        rc = (int)st;
        goto done;
    }
    if (a->json)
        printf("{\"tokens\": %lld, \"ctx\": %lld, \"kld_mean\": %.9g, \"kld_p99\": %.9g, "
               "\"kld_max\": %.9g, \"top1\": %.9g, \"ppl_base\": %.9g, \"ppl_quant\": %.9g}\n",
               (long long)r.n_tokens, (long long)ctx, r.kld_mean, r.kld_p99, r.kld_max, r.top1,
               r.ppl_base, r.ppl_quant);
    else
        printf("kld: tokens=%lld ctx=%lld mean=%.6f p99=%.6f max=%.6f top1=%.2f%% "
               "ppl_base=%.4f ppl_quant=%.4f\n",
               (long long)r.n_tokens, (long long)ctx, r.kld_mean, r.kld_p99, r.kld_max,
               100.0 * r.top1, r.ppl_base, r.ppl_quant);
done:
    an_fwd_free(quant);
    free(res);
    q_imatrix_free(im);
    q_plan_free(plan);
    return rc;
}

int cmd_calib(int argc, char **argv)
{
    calib_args a;
    int rc = cal_parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    an_set_threads(a.threads ? (int)a.threads : omp_get_max_threads());
    q_err err;
    q_model *m = NULL;
    an_fwd *f = NULL;
    an_calib *cal = NULL;
    int32_t *ids = NULL;
    q_status st = q_model_open(a.model, &m, &err);
    if (st == Q_OK)
        st = an_fwd_open(m, -1, &f, &err);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        rc = (int)st;
        goto done;
    }
    const an_config *cf = an_fwd_config(f);
    int64_t n = 0;
    int32_t bos = -1;
    if ((rc = cal_tokens(&a, m, cf->n_vocab, &ids, &n, &bos)) != 0)
        goto done;
    if (a.tokens)
        bos = cal_model_bos(m, cf->n_vocab);
    int64_t ctx = a.ctx ? a.ctx : 512;
    if (cf->n_ctx > 0 && ctx > cf->n_ctx) {
        if (a.ctx) {
            cli_errorf("--ctx %ld exceeds the model's context length %lld", a.ctx,
                       (long long)cf->n_ctx);
            rc = 64;
            goto done;
        }
        ctx = cf->n_ctx;
    }
    if (n < ctx) {
        cli_errorf("%s gives %lld tokens, fewer than one chunk of %lld (use --ctx)",
                   a.text ? a.text : a.tokens, (long long)n, (long long)ctx);
        rc = 65;
        goto done;
    }
    signal(SIGINT, cal_on_signal);
    signal(SIGTERM, cal_on_signal);
    if (a.kld) {
        rc = cal_kld(&a, m, f, ids, n, ctx, bos);
        goto done;
    }
    if ((st = an_calib_new(f, a.reservoir, a.seed, &cal, &err)) != Q_OK) {
        cli_errorf("%s", err.msg);
        rc = (int)st;
        goto done;
    }
    cal->process_output = a.process_output;
    snprintf(cal->dataset, sizeof cal->dataset, "%s", a.text ? a.text : a.tokens);
    cal_bar bar = {cal_now(), ctx, "calib", isatty(2) != 0};
    st = an_calib_run(cal, f, ids, n, ctx, a.chunks, bos, cal_progress, &bar, &err);
    double secs = cal_now() - bar.t0;
    if (st != Q_OK) {
        if (bar.tty)
            fputc('\n', stderr);
        cli_errorf("%s", err.msg);
        rc = (int)st;
        goto done;
    }
    if ((st = an_calib_write_imatrix(cal, a.out, &err)) != Q_OK ||
        (a.reservoir > 0 && (st = an_calib_add_samples(cal, a.out, &err)) != Q_OK)) {
        cli_errorf("%s", err.msg);
        rc = (int)st;
        goto done;
    }
    int64_t toks = cal->chunk_count * ctx;
    printf("calib: chunks=%lld ctx=%lld tokens=%lld seconds=%.3f tok_per_s=%.1f out=%s\n",
           (long long)cal->chunk_count, (long long)ctx, (long long)toks, secs,
           secs > 0 ? (double)toks / secs : 0.0, a.out);
done:
    an_calib_free(cal);
    free(ids);
    an_fwd_free(f);
    q_model_close(m);
    return rc;
}
