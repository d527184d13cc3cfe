/* cmd_inspect.c — `qtune inspect MODEL [--json | --csv] [--threads N] [--no-stats]`.
 *
 * Streams the catalog tensor by tensor: statistics are computed (in parallel
 * inside each tensor) and printed before the next tensor is touched, so memory
 * stays bounded whatever the model's size. --json builds one document whose
 * schema ("qtune.inspect/1") is documented in README.md.
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "an_stats.h"
#include "cli.h"
#include "q_dtype.h"
#include "q_model.h"

/* At most this much of the next tensor is read ahead (bounds the resident set). */
#define PREFETCH_BYTES (64ull << 20)

/* The tensor summed before, released as an_tensor_stats_side's side work:
 * unmapping its pages (page tables, a TLB flush on the other cores) took
 * ~14% of a 2-thread inspect while the other threads waited. */
typedef struct release_job {
    const q_tensor *prev;
    uintptr_t done; /* q_tensor_release_seq's mark */
} release_job;

static void release_prev(void *user)
{
    release_job *r = user;
    if (r->prev)
        q_tensor_release_seq(r->prev, false, &r->done);
}

typedef enum out_fmt { OUT_TEXT, OUT_JSON, OUT_CSV } out_fmt;

static const char *kind_name(q_model_kind k)
{
    switch (k) {
    case Q_MODEL_GGUF:
        return "gguf";
    case Q_MODEL_SAFETENSORS:
        return "safetensors";
    case Q_MODEL_HF_DIR:
        return "hf";
    }
    return "?";
}

/* "512x64" (outermost first, as a shape is usually written). */
static void shape_str(const q_tensor *t, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int d = (int)t->n_dims - 1; d >= 0 && off < cap; d--)
        off += (size_t)snprintf(buf + off, cap - off, "%s%lld", off ? "x" : "",
                                (long long)t->ne[d]);
}

static uint64_t tensor_bytes(const q_model *m)
{
    uint64_t b = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++)
        b += m->tensors[i].bytes;
    return b;
}

static double bits_per_weight(const q_model *m)
{
    int64_t p = q_model_params(m);
    return p ? 8.0 * (double)tensor_bytes(m) / (double)p : 0;
}

/* CSV cell: quoted when it holds a separator, quote or newline. */
static void csv_cell(FILE *fp, const char *s)
{
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, fp);
        return;
    }
    fputc('"', fp);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', fp);
        fputc(*s, fp);
    }
    fputc('"', fp);
}

/* Width of the name column: the longest name, within 24..60. */
static int name_width(const q_model *m)
{
    size_t w = 24;
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (strlen(m->tensors[i].name) > w)
            w = strlen(m->tensors[i].name);
    return w > 60 ? 60 : (int)w;
}

static void print_summary_text(const q_model *m, int nw)
{
    const q_arch *a = &m->arch;
    int64_t params = q_model_params(m);
    printf("model     %s (%s", m->path, kind_name(m->kind));
    if (m->gguf)
        printf(" v%u", m->gguf->version);
    printf(", %d file%s)\n", m->n_files, m->n_files == 1 ? "" : "s");
    printf("arch      %s: %lld layers, embd %lld, heads %lld/%lld kv, ffn %lld, vocab %lld, "
           "ctx %lld, rope %lld (theta %g)\n",
           a->name[0] ? a->name : "?", (long long)a->n_layer, (long long)a->n_embd,
           (long long)a->n_head, (long long)a->n_head_kv, (long long)a->n_ff,
           (long long)a->n_vocab, (long long)a->n_ctx, (long long)a->n_rot, a->rope_theta);
    printf("size      %llu tensors, %lld params (%.3f M), file %llu bytes (%.2f MiB), "
           "%.2f bits/weight\n\n",
           (unsigned long long)m->n_tensors, (long long)params, (double)params / 1e6,
           (unsigned long long)m->file_size, (double)m->file_size / (1024.0 * 1024.0),
           bits_per_weight(m));
    printf("%-*s %-8s %5s %-12s %-7s %10s %10s %10s %10s %10s %10s %8s %7s %4s %4s\n", nw, "name",
           "role", "block", "shape", "dtype", "params", "min", "max", "mean", "std", "absmax",
           "kurt", "outl%", "nan", "inf");
}

static const char *CSV_HEADER = "name,gguf_name,role,block,shape,dtype,params,bytes,min,max,mean,"
                                "std,absmax,kurtosis,outlier_ratio,outliers,nan,inf,note";

static void print_row_text(const q_tensor *t, int nw, const an_stats *s, bool have,
                           const char *note)
{
    char shape[64];
    shape_str(t, shape, sizeof shape);
    char block[16] = "-";
    if (t->block >= 0)
        snprintf(block, sizeof block, "%d", t->block);
    printf("%-*s %-8s %5s %-12s %-7s %10lld", nw, t->name, q_role_name(t->role), block, shape,
           q_dtype_name(t->dtype), (long long)t->params);
    if (have)
        printf(" %10.4g %10.4g %10.4g %10.4g %10.4g %8.3f %7.4f %4lld %4lld\n", s->min, s->max,
               s->mean, s->std, s->absmax, s->kurtosis, 100.0 * s->outlier_ratio,
               (long long)s->n_nan, (long long)s->n_inf);
    else
        printf("  %s\n", note);
}

static void print_row_csv(const q_tensor *t, const an_stats *s, bool have, const char *note)
{
    char shape[64];
    shape_str(t, shape, sizeof shape);
    csv_cell(stdout, t->name);
    putchar(',');
    csv_cell(stdout, t->gguf_name);
    printf(",%s,", q_role_name(t->role));
    if (t->block >= 0)
        printf("%d", t->block);
    printf(",%s,%s,%lld,%llu,", shape, q_dtype_name(t->dtype), (long long)t->params,
           (unsigned long long)t->bytes);
    if (have)
        printf("%.9g,%.9g,%.17g,%.17g,%.9g,%.17g,%.17g,%lld,%lld,%lld,", s->min, s->max, s->mean,
               s->std, s->absmax, s->kurtosis, s->outlier_ratio, (long long)s->n_outliers,
               (long long)s->n_nan, (long long)s->n_inf);
    else
        printf(",,,,,,,,,,");
    csv_cell(stdout, note);
    putchar('\n');
}

static json_t *arch_json(const q_arch *a)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:b}", "name",
                     a->name, "n_layer", (json_int_t)a->n_layer, "n_embd",
                     (json_int_t)a->n_embd, "n_head", (json_int_t)a->n_head, "n_head_kv",
                     (json_int_t)a->n_head_kv, "n_ff", (json_int_t)a->n_ff, "n_vocab",
                     (json_int_t)a->n_vocab, "n_ctx", (json_int_t)a->n_ctx, "n_rot",
                     (json_int_t)a->n_rot, "rope_theta", a->rope_theta, "norm_eps", a->norm_eps,
                     "tied_embeddings", a->tied_embeddings);
}

static json_t *model_json(const q_model *m)
{
    json_t *files = json_array();
    for (int f = 0; f < m->n_files; f++)
        json_array_append_new(files, json_string(m->file_paths[f]));
    json_t *o = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:f, s:o}", "path", m->path,
                          "format", kind_name(m->kind), "files", files, "file_size",
                          (json_int_t)m->file_size, "tensor_bytes",
                          (json_int_t)tensor_bytes(m), "n_tensors", (json_int_t)m->n_tensors,
                          "params", (json_int_t)q_model_params(m), "bits_per_weight",
                          bits_per_weight(m), "arch", arch_json(&m->arch));
    json_object_set_new(o, "gguf_version", m->gguf ? json_integer(m->gguf->version) : json_null());
    json_object_set_new(o, "file_type",
                        m->file_type != UINT32_MAX ? json_integer(m->file_type) : json_null());
    return o;
}

static json_t *tensor_json(const q_tensor *t, const an_stats *s, bool have, const char *note)
{
    json_t *shape = json_array(), *ne = json_array();
    for (int d = (int)t->n_dims - 1; d >= 0; d--)
        json_array_append_new(shape, json_integer(t->ne[d]));
    for (uint32_t d = 0; d < t->n_dims; d++)
        json_array_append_new(ne, json_integer(t->ne[d]));
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(t->name));
    json_object_set_new(o, "gguf_name", json_string(t->gguf_name));
    json_object_set_new(o, "role", json_string(q_role_name(t->role)));
    json_object_set_new(o, "block", t->block >= 0 ? json_integer(t->block) : json_null());
    json_object_set_new(o, "shape", shape);
    json_object_set_new(o, "ne", ne);
    json_object_set_new(o, "rows", json_integer(t->rows));
    json_object_set_new(o, "cols", json_integer(t->cols));
    json_object_set_new(o, "dtype", json_string(q_dtype_name(t->dtype)));
    json_object_set_new(o, "params", json_integer(t->params));
    json_object_set_new(o, "bytes", json_integer((json_int_t)t->bytes));
    json_object_set_new(o, "supported", json_boolean(t->readable));
    json_t *st = json_null();
    if (have)
        st = json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:f, s:I, s:I}", "count",
                       (json_int_t)s->n, "min", s->min, "max", s->max, "mean", s->mean, "std",
                       s->std, "absmax", s->absmax, "kurtosis", s->kurtosis, "outliers",
                       (json_int_t)s->n_outliers, "outlier_ratio", s->outlier_ratio, "nan",
                       (json_int_t)s->n_nan, "inf", (json_int_t)s->n_inf);
    json_object_set_new(o, "stats", st);
    json_object_set_new(o, "note", note[0] ? json_string(note) : json_null());
    return o;
}

static void inspect_usage(FILE *fp)
{
    fputs("usage: qtune inspect MODEL [--json | --csv] [--no-stats] [--threads N]\n"
          "  --json       one JSON document (schema qtune.inspect/1, see README.md)\n"
          "  --csv        one CSV row per tensor, with a header row\n"
          "  --no-stats   catalog only (shapes, types, sizes); reads no tensor data\n"
          "  --threads N  threads for the statistics (default: all cores)\n",
          fp);
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},    {"csv", no_argument, NULL, 'c'},
        {"no-stats", no_argument, NULL, 'n'}, {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},    {NULL, 0, NULL, 0},
    };
    out_fmt fmt = OUT_TEXT;
    bool stats = true;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j':
            fmt = OUT_JSON;
            break;
        case 'c':
            fmt = OUT_CSV;
            break;
        case 'n':
            stats = false;
            break;
        case 't': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 1024) {
                cli_errorf("inspect: --threads wants a number from 1 to 1024, not '%s'", optarg);
                return 64;
            }
            omp_set_num_threads((int)n);
            break;
        }
        case 'h':
            inspect_usage(stdout);
            return 0;
        default:
            inspect_usage(stderr);
            return 64;
        }
    }
    if (optind != argc - 1) {
        inspect_usage(stderr);
        return 64;
    }
    const char *path = argv[optind];
    q_err err = {{0}};
    q_model *m = NULL;
    q_status st = q_model_open(path, &m, &err);
    if (st != Q_OK) {
        cli_errorf("%s", err.msg);
        return (int)st;
    }

    json_t *doc = NULL, *rows = NULL;
    int nw = name_width(m);
    if (fmt == OUT_JSON) {
        rows = json_array();
        doc = json_pack("{s:s, s:o, s:o}", "schema", "qtune.inspect/1", "model", model_json(m),
                        "tensors", rows);
    } else if (fmt == OUT_CSV) {
        puts(CSV_HEADER);
    } else {
        print_summary_text(m, nw);
    }

    int rc = 0;
    /* reads the next tensor's first pages while this one is summed */
    q_prefetch *pf = stats ? q_prefetch_start(PREFETCH_BYTES) : NULL;
    /* the pages of each tensor are released while the next is summed */
    release_job rel = {NULL, 0};
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        an_stats s;
        bool have = false;
        char note[128] = "";
        if (!t->readable) {
            snprintf(note, sizeof note, "unsupported type %s", q_dtype_name(t->dtype));
        } else if (stats) {
            if (i + 1 < m->n_tensors)
                q_prefetch_tensor(pf, &m->tensors[i + 1]);
            st = an_tensor_stats_side(t, release_prev, &rel, &s, &err);
            rel.prev = t;
            if (st != Q_OK) {
                cli_errorf("%s", err.msg);
                rc = (int)st;
                break;
            }
            have = true;
        }
        if (fmt == OUT_JSON)
            json_array_append_new(rows, tensor_json(t, &s, have, note));
        else if (fmt == OUT_CSV)
            print_row_csv(t, &s, have, note);
        else
            print_row_text(t, nw, &s, have, have || note[0] ? note : "-");
        if (fmt != OUT_JSON)
            fflush(stdout);
    }
    if (rel.prev)
        q_tensor_release_seq(rel.prev, true, &rel.done);
    q_prefetch_stop(pf); /* before the mappings go */
    if (doc) {
        if (rc == 0) {
            json_dumpf(doc, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
            putchar('\n');
        }
        json_decref(doc);
    }
    q_model_close(m);
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
        cli_errorf("error writing to standard output");
        return 74;
    }
    return rc;
}
