/* test_plan.c — plan files: parse/write round trip, every parse error with its
 * exact FILE:LINE:COLUMN, rule matching (last match wins, globs vs re:),
 * resolution with llama.cpp's fallbacks (stories260K), presets against tables
 * derived by hand from llama.cpp's src/llama-quant.cpp (generated models),
 * fingerprints, unmatched rules, and the llama-quantize export. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "an_synth.h"
#include "q_dtype.h"
#include "q_model.h"
#include "q_plan.h"

#include "test_util.h"

#define HDR "# qtune plan v1\npattern,format,method,group,options\n"

static q_plan *parse_ok(const char *text)
{
    q_plan *p = NULL;
    q_err err = {{0}};
    q_status st = q_plan_parse(text, strlen(text), "t.csv", &p, &err);
    if (st != Q_OK)
        fail_msg("parse failed: %s\n--- text:\n%s", err.msg, text);
    return p;
}

/* Writes p to a memory buffer (caller frees). */
static char *write_mem(const q_plan *p)
{
    char *text = q_plan_text(p);
    assert_non_null(text);
    return text;
}

/* ---- in-memory models (no file: shapes and names only) ---- */

typedef struct fake {
    q_model m;
    int n, cap;
} fake;

static void fake_add(fake *f, const char *name, int nd, int64_t ne0, int64_t ne1, int64_t ne2)
{
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 64;
        f->m.tensors = realloc(f->m.tensors, (size_t)f->cap * sizeof *f->m.tensors);
        assert_non_null(f->m.tensors);
    }
    q_tensor *t = &f->m.tensors[f->n++];
    memset(t, 0, sizeof *t);
    char g[512];
    t->name = strdup(name);
    q_name_map(name, g, sizeof g, &t->role, &t->block);
    t->gguf_name = strdup(g);
    t->n_dims = (uint32_t)nd;
    t->ne[0] = ne0;
    t->ne[1] = nd > 1 ? ne1 : 1;
    t->ne[2] = nd > 2 ? ne2 : 1;
    t->ne[3] = 1;
    t->cols = ne0;
    t->rows = t->ne[1] * t->ne[2];
    t->params = t->rows * t->cols;
    t->dtype = nd > 1 ? Q_DT_F16 : Q_DT_F32;
    t->bytes = q_dtype_bytes(t->dtype, t->params);
    t->readable = true;
    f->m.n_tensors = (uint64_t)f->n;
}

/* A llama model: dim 256, ff 512, n_head 8; kv heads as given; experts > 1
 * gives MoE blocks (ffn_gate_inp + 3-D *_exps). Blocks are stored in
 * reverse order when reversed (llama.cpp sorts by layer; so must we). */
static fake *fake_llama(int layers, int64_t n_head_kv, bool with_output, int experts,
                        bool reversed)
{
    fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    const int64_t dim = 256, ff = 512, vocab = 1024, kv = dim / 8 * n_head_kv;
    f->m.kind = Q_MODEL_GGUF;
    f->m.path = strdup("fake.gguf");
    snprintf(f->m.arch.name, sizeof f->m.arch.name, "llama");
    f->m.arch.n_layer = layers;
    f->m.arch.n_head = 8;
    f->m.arch.n_head_kv = n_head_kv;
    f->m.arch.n_embd = dim;
    fake_add(f, "token_embd.weight", 2, dim, vocab, 1);
    fake_add(f, "output_norm.weight", 1, dim, 1, 1);
    if (with_output)
        fake_add(f, "output.weight", 2, dim, vocab, 1);
    for (int k = 0; k < layers; k++) {
        int l = reversed ? layers - 1 - k : k;
        char n[64];
#define T(suffix, nd, a, b, c)                                 \
    snprintf(n, sizeof n, "blk.%d." suffix, l);                \
    fake_add(f, n, nd, a, b, c);
        T("attn_norm.weight", 1, dim, 1, 1)
        T("attn_q.weight", 2, dim, dim, 1)
        T("attn_k.weight", 2, dim, kv, 1)
        T("attn_v.weight", 2, dim, kv, 1)
        T("attn_output.weight", 2, dim, dim, 1)
        T("ffn_norm.weight", 1, dim, 1, 1)
        if (experts > 1) {
            T("ffn_gate_inp.weight", 2, dim, experts, 1)
            T("ffn_gate_exps.weight", 3, dim, ff, experts)
            T("ffn_down_exps.weight", 3, ff, dim, experts)
            T("ffn_up_exps.weight", 3, dim, ff, experts)
        } else {
            T("ffn_gate.weight", 2, dim, ff, 1)
            T("ffn_down.weight", 2, ff, dim, 1)
            T("ffn_up.weight", 2, dim, ff, 1)
        }
#undef T
    }
    return f;
}

static void fake_free(fake *f)
{
    for (int i = 0; i < f->n; i++) {
        free(f->m.tensors[i].name);
        free(f->m.tensors[i].gguf_name);
    }
    free(f->m.tensors);
    free(f->m.path);
    free(f);
}

/* Resolves p on m; returns the array (caller frees). */
static q_resolved *resolve(const q_plan *p, const q_model *m, int **un, int *nun)
{
    q_resolved *r = calloc(m->n_tensors, sizeof *r);
    assert_non_null(r);
    q_err err = {{0}};
    q_status st = q_plan_resolve(p, m, false, r, un, nun, &err);
    if (st != Q_OK)
        fail_msg("resolve: %s", err.msg);
    return r;
}

static const q_resolved *res_of(const q_model *m, const q_resolved *r, const char *name)
{
    int64_t i = q_model_find(m, name);
    if (i < 0)
        fail_msg("no tensor %s", name);
    return &r[i];
}

static const char *fmt_of(const q_resolved *r, char *buf)
{
    return q_fmt_name(&r->fmt, buf, 32);
}

/* ---- round trip ---- */

static void test_roundtrip(void **state)
{
    (void)state;
    const char *text =
        "# qtune plan v1\n"
        "# model: my model.gguf  tensors=48  fingerprint=0123456789ABCDEF\n"
        "# a free comment, ignored\n"
        "pattern,format,method,group,options\n"
        "*,q4_k,rtn,,\n"
        "blk.*.attn_*,F16,RTN,,\n"
        "\"a,b\",q8_0,wsearch,,\n"
        "\"=x\",q6_k,rtn,,\n"
        "\"+x\",q6_k,rtn,,\n"
        "\"-x\",q6_k,rtn,,\n"
        "\"@x\",q6_k,rtn,,\n"
        "\"#hash\",q6_k,rtn,,\n"
        "\" lead\",q6_k,rtn,,\n"
        "\"trail \",q6_k,rtn,,\n"
        "\"q\"\"uote\",q6_k,rtn,,\n"
        "\"two\nlines\",q6_k,rtn,,\n"
        "re:^blk\\.[0-9]+\\.ffn_down\\.weight$,q6_k,wsearch,,\n"
        "blk.0.*,int4,rtn,128,\n"
        "blk.1.*,uint3,rtn,channel,\n"
        "blk.2.*,int8,rtn,tensor,\n"
        "blk.3.*,fp8_e4m3,rtn,,\n"
        "blk.4.*,nf4,rtn,,\n"
        "blk.5.*,nf4,rtn,32,\n"
        "output*,,keep,,\n"
        "token*,q4_k,keep,,\n";
    q_plan *p = parse_ok(text);
    assert_int_equal(p->n_rules, 21);
    assert_string_equal(p->model_name, "my model.gguf");
    assert_int_equal(p->n_tensors, 48);
    assert_string_equal(p->fingerprint, "0123456789abcdef");
    assert_string_equal(p->rules[2].pattern, "a,b");
    assert_string_equal(p->rules[8].pattern, " lead");
    assert_string_equal(p->rules[9].pattern, "trail ");
    assert_string_equal(p->rules[10].pattern, "q\"uote");
    assert_string_equal(p->rules[11].pattern, "two\nlines");
    assert_int_equal(p->rules[11].line, 16);
    assert_int_equal(p->rules[12].line, 18);
    assert_true(p->rules[12].is_regex);
    assert_int_equal(p->rules[1].fmt.id, Q_FMT_F16);
    assert_int_equal(p->rules[1].method, Q_METHOD_RTN);
    assert_int_equal(p->rules[13].fmt.id, Q_FMT_INT);
    assert_int_equal(p->rules[13].fmt.bits, 4);
    assert_int_equal(p->rules[13].fmt.group, 128);
    assert_int_equal(p->rules[14].fmt.group, Q_GROUP_CHANNEL);
    assert_int_equal(p->rules[15].fmt.group, Q_GROUP_TENSOR);
    assert_int_equal(p->rules[17].fmt.group, 64);
    assert_int_equal(p->rules[18].fmt.group, 32);
    assert_int_equal(p->rules[19].method, Q_METHOD_KEEP);

    char *out = write_mem(p);
    q_plan *p2 = parse_ok(out);
    assert_true(q_plan_equal(p, p2));
    char *out2 = write_mem(p2);
    assert_string_equal(out, out2); /* writing is a fixed point */
    /* quoting: only where needed */
    assert_non_null(strstr(out, "\n*,q4_k,rtn,,\n"));
    assert_non_null(strstr(out, "\nblk.*.attn_*,f16,rtn,,\n"));
    assert_non_null(strstr(out, "\n\"a,b\",q8_0,wsearch,,\n"));
    assert_non_null(strstr(out, "\n\"=x\",q6_k"));
    assert_non_null(strstr(out, "\n\"+x\",q6_k"));
    assert_non_null(strstr(out, "\n\"-x\",q6_k"));
    assert_non_null(strstr(out, "\n\"@x\",q6_k"));
    assert_non_null(strstr(out, "\n\"#hash\",q6_k"));
    assert_non_null(strstr(out, "\n\" lead\",q6_k"));
    assert_non_null(strstr(out, "\n\"trail \",q6_k"));
    assert_non_null(strstr(out, "\n\"q\"\"uote\",q6_k"));
    assert_non_null(strstr(out, "\nblk.0.*,int4,rtn,128,\n"));
    assert_non_null(strstr(out, "\nblk.1.*,uint3,rtn,,\n")); /* channel is uint's default */
    assert_non_null(strstr(out, "\nblk.2.*,int8,rtn,tensor,\n"));
    assert_non_null(strstr(out, "\nblk.4.*,nf4,rtn,,\n"));
    assert_non_null(strstr(out, "\nblk.5.*,nf4,rtn,32,\n"));
    assert_non_null(strstr(out, "\noutput*,,keep,,\n"));
    assert_non_null(strstr(out, "\ntoken*,,keep,,\n"));
    assert_non_null(
        strstr(out, "# model: my model.gguf  tensors=48  fingerprint=0123456789abcdef\n"));
    /* a different plan is not equal */
    p2->rules[0].fmt.id = Q_FMT_Q5_K;
    assert_false(q_plan_equal(p, p2));
    free(out);
    free(out2);
    q_plan_free(p);
    q_plan_free(p2);
}

static void test_roundtrip_header_variants(void **state)
{
    (void)state;
    /* no version comment, CRLF, blank and whitespace-only lines, comments between rules,
     * no final newline, header row in capitals */
    const char *text = "\r\n  \t \r\nPATTERN,Format,METHOD,group,options\r\n\r\n"
                       "# note\r\n*,q8_0,rtn,,\r\n   # indented comment\r\n"
                       "output.weight,q6_k,rtn,,";
    q_plan *p = parse_ok(text);
    assert_int_equal(p->n_rules, 2);
    assert_int_equal(p->rules[0].line, 6);
    assert_int_equal(p->rules[1].line, 8);
    assert_null(p->model_name);
    assert_int_equal(p->n_tensors, -1);
    assert_string_equal(p->fingerprint, "");
    char *out = write_mem(p);
    assert_null(strstr(out, "# model:")); /* nothing to say */
    q_plan *p2 = parse_ok(out);
    assert_true(q_plan_equal(p, p2));
    free(out);
    q_plan_free(p2);
    q_plan_free(p);

    /* a model line with only some fields, and "?" */
    p = parse_ok("# model: tensors=3\n" "pattern,format,method,group,options\n");
    assert_null(p->model_name);
    assert_int_equal(p->n_tensors, 3);
    out = write_mem(p);
    assert_non_null(strstr(out, "# model:   tensors=3  fingerprint=?\n"));
    p2 = parse_ok(out);
    assert_true(q_plan_equal(p, p2));
    free(out);
    q_plan_free(p2);
    q_plan_free(p);
    /* a name that looks like a field is kept when the real fields follow */
    p = parse_ok("# model: tensors=5  tensors=?  fingerprint=?\n"
                 "pattern,format,method,group,options\n");
    assert_string_equal(p->model_name, "tensors=5");
    assert_int_equal(p->n_tensors, -1);
    out = write_mem(p);
    p2 = parse_ok(out);
    assert_true(q_plan_equal(p, p2));
    free(out);
    q_plan_free(p2);
    q_plan_free(p);
}

static void test_save_load(void **state)
{
    (void)state;
    char dir[] = "/tmp/qtune_plan_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/p.csv", dir);
    q_plan *p = parse_ok(HDR "*,q4_k,rtn,,\n\"x,y\",q8_0,rtn,,\n");
    q_err err = {{0}};
    assert_int_equal(q_plan_save(p, path, &err), Q_OK);
    q_plan *p2 = NULL;
    assert_int_equal(q_plan_load(path, &p2, &err), Q_OK);
    assert_true(q_plan_equal(p, p2));
    q_plan_free(p2);
    unlink(path);
    assert_int_equal(q_plan_load(path, &p2, &err), Q_ENOINPUT);
    assert_null(p2);
    snprintf(path, sizeof path, "%s/no/such/dir/p.csv", dir);
    assert_int_equal(q_plan_save(p, path, &err), Q_ECANTCREAT);
    q_plan_free(p);
    rmdir(dir);
}

/* A plan read from a pipe (`--plan <(...)`), one past the size limit, and a
 * directory. */
static void test_load_pipe(void **state)
{
    (void)state;
    q_plan *p = parse_ok(HDR "*,q4_k,rtn,,\nblk.*,q8_0,rtn,,\n");
    char *text = write_mem(p);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_true(write(fds[1], text, strlen(text)) == (ssize_t)strlen(text)); /* < 64 KiB */
    close(fds[1]);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fds[0]);
    q_plan *p2 = NULL;
    q_err err = {{0}};
    assert_int_equal(q_plan_load(path, &p2, &err), Q_OK);
    assert_true(q_plan_equal(p, p2));
    q_plan_free(p2);
    close(fds[0]);

    /* 17 MiB of comment lines through a pipe: refused at 16 MiB */
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        signal(SIGPIPE, SIG_IGN);
        static char line[4096];
        memset(line, '#', sizeof line - 1);
        line[sizeof line - 1] = '\n';
        for (int i = 0; i < 17 * 256; i++)
            if (write(fds[1], line, sizeof line) < 0)
                break;
        _exit(0);
    }
    close(fds[1]);
    snprintf(path, sizeof path, "/proc/self/fd/%d", fds[0]);
    assert_int_equal(q_plan_load(path, &p2, &err), Q_EDATA);
    assert_null(p2);
    assert_non_null(strstr(err.msg, "more than the 16777216 bytes allowed"));
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);

    char dir[] = "/tmp/qtune_plan_XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(q_plan_load(dir, &p2, &err), Q_ENOINPUT);
    assert_non_null(strstr(err.msg, "a directory"));
    rmdir(dir);
    free(text);
    q_plan_free(p);
}

/* ---- errors: exact messages and positions ---- */

typedef struct err_case {
    const char *text;
    const char *msg; /* the whole message, or a prefix when it ends in '*' */
} err_case;

static void check_error(const char *text, size_t len, const char *want)
{
    q_plan *p = (q_plan *)1;
    q_err err = {{0}};
    q_status st = q_plan_parse(text, len, "t.csv", &p, &err);
    if (st != Q_EDATA)
        fail_msg("status %d for:\n%s\n(msg: %s)", (int)st, text, err.msg);
    assert_null(p);
    size_t n = strlen(want);
    if (n && want[n - 1] == '*') {
        if (strncmp(err.msg, want, n - 1) != 0)
            fail_msg("got  '%s'\nwant '%s'", err.msg, want);
    } else if (strcmp(err.msg, want) != 0) {
        fail_msg("got  '%s'\nwant '%s'", err.msg, want);
    }
}

static void test_errors(void **state)
{
    (void)state;
    static const err_case cases[] = {
        /* column count: too few counts at the end of the row, too many at the extra cell */
        {HDR "*,q4_k,rtn,\n",
         "t.csv:3:12: row has 4 columns, expected 5 (pattern,format,method,group,options)"},
        {HDR "*,q4_k,rtn,,,x\n",
         "t.csv:3:14: row has 6 columns, expected 5 (pattern,format,method,group,options)"},
        {HDR "*\n",
         "t.csv:3:2: row has 1 column, expected 5 (pattern,format,method,group,options)"},
        {HDR "*,q4_k,rtn,", /* no final newline: the row ends at the end of the file */
         "t.csv:3:12: row has 4 columns, expected 5 (pattern,format,method,group,options)"},
        /* quoting */
        {HDR "bl\"k,q4_k,rtn,,\n", "t.csv:3:3: bad quoting: a quote inside an unquoted cell "
                                   "(quote the whole cell and double the quotes inside it)"},
        {HDR "\"blk\"x,q4_k,rtn,,\n",
         "t.csv:3:6: bad quoting: text after the closing quote of the cell that starts at "
         "column 1"},
        {HDR "*,q4_k,rtn,,\n\"abc,q4_k,rtn,,\n",
         "t.csv:4:1: unterminated quoted cell (no closing quote before the end of the file)"},
        /* formats, methods */
        {HDR "*,q4_q,rtn,,\n", "t.csv:3:3: unknown format 'q4_q' (known: *"},
        {HDR "*,,rtn,,\n", "t.csv:3:3: missing format"},
        {HDR "*,q4_k,fancy,,\n", "t.csv:3:8: unknown method 'fancy' (known: keep rtn wsearch "
                                 "awq gptq smoothquant outlier)"},
        {HDR "*,q4_k,,,\n", "t.csv:3:8: missing method (keep, rtn or wsearch)"},
        {HDR "*,q4_k,gptq,,\n", "t.csv:3:8: method 'gptq' is not available yet"},
        {HDR "*,q4_k,awq,,\n", "t.csv:3:8: method 'awq' is not available yet"},
        {HDR "*,q4_k,smoothquant,,\n", "t.csv:3:8: method 'smoothquant' is not available yet"},
        {HDR "*,q4_k,outlier,,\n", "t.csv:3:8: method 'outlier' is not available yet"},
        /* groups */
        {HDR "*,int4,rtn,0,\n", "t.csv:3:12: group 0 is out of range (1..1048576)"},
        {HDR "*,int4,rtn,-3,\n", "t.csv:3:12: group -3 is out of range (1..1048576)"},
        {HDR "*,int4,rtn,2000000,\n", "t.csv:3:12: group 2000000 is out of range (1..1048576)"},
        {HDR "*,int4,rtn,99999999999999999999,\n",
         "t.csv:3:12: group 99999999999999999999 is out of range (1..1048576)"},
        {HDR "*,int4,rtn,abc,\n", "t.csv:3:12: group 'abc' is not a number (give a size "
                                  "1..1048576, 'channel' or 'tensor')"},
        {HDR "*,int4,rtn,12k,\n", "t.csv:3:12: group '12k' is not a number*"},
        {HDR "*,q4_k,rtn,32,\n", "t.csv:3:12: q4_k fixes its blocks: leave the group empty"},
        {HDR "*,f16,rtn,channel,\n", "t.csv:3:11: f16 fixes its blocks: leave the group empty"},
        {HDR "*,nf4,rtn,tensor,\n", "t.csv:3:11: nf4 needs a block size (group > 0), not -1"},
        {HDR "*,,keep,8,\n", "t.csv:3:9: method keep takes no group"},
        /* options */
        {HDR "*,q4_k,rtn,,damp=0.1\n",
         "t.csv:3:13: unknown option 'damp' for method rtn (rtn takes no options)"},
        {HDR "*,q4_k,wsearch,,\"a=1;b=2\"\n",
         "t.csv:3:17: unknown option 'a' for method wsearch (wsearch takes no options)"},
        {HDR "*,q4_k,rtn,,foo\n", "t.csv:3:13: bad option 'foo': expected key=value"},
        {HDR "*,q4_k,rtn,,=1\n", "t.csv:3:13: bad option '=1': expected key=value"},
        /* patterns */
        {HDR "re:(abc,q4_k,rtn,,\n", "t.csv:3:1: invalid regular expression '(abc': *"},
        {HDR "re:a[,q4_k,rtn,,\n", "t.csv:3:1: invalid regular expression 'a[': *"},
        {HDR "re:((a{100}){100}){100},q4_k,rtn,,\n",
         "t.csv:3:1: regular expression '((a{100}){100}){100}' is too large (its repetition "
         "counts multiply to more than 20000)"},
        {HDR "re:ight++++uint++*****,q4_k,rtn,,\n",
         "t.csv:3:1: regular expression 'ight++++uint++*****' stacks repetition operators *"},
        {HDR "re:a{2}*,q4_k,rtn,,\n", "t.csv:3:1: regular expression 'a{2}*' stacks *"},
        {HDR "re:(a*)*\\1,q4_k,rtn,,\n", "t.csv:3:1: regular expression '(a*)*\\1' stacks *"},
        {HDR "*,q4_k,rtn,,\n\"re:(blk|x)[.]{1,3}[0-9]{1,4}\\.(attn){1,2}\",q4_k,rtn,,\n"
             "\"re:(a{2,}|[[:alpha:]]{3})*\",q4_k,rtn,,\n*,q4_q,rtn,,\n",
         "t.csv:6:3: unknown format 'q4_q'*"}, /* reasonable regexes pass */
        {HDR ",q4_k,rtn,,\n", "t.csv:3:1: empty pattern"},
        {HDR "\"\",q4_k,rtn,,\n", "t.csv:3:1: empty pattern"},
        {HDR "re:,q4_k,rtn,,\n", "t.csv:3:1: empty regular expression after 're:'"},
        /* header row and comments */
        {"*,q4_k,rtn,,\n", "t.csv:1:1: expected the header row 'pattern,format,method,group,"
                           "options' before the first rule"},
        {"pattern,format,method,grp,options\n",
         "t.csv:1:23: header row: expected 'group', found 'grp'"},
        {"pattern,format,method\n",
         "t.csv:1:22: row has 3 columns, expected 5 (pattern,format,method,group,options)"},
        {"# only a comment\n", "t.csv:2:1: missing the header row 'pattern,format,method,group,"
                               "options'"},
        {"", "t.csv:1:1: empty plan: missing the header row 'pattern,format,method,group,"
             "options'"},
        {"# qtune plan v2\n" "pattern,format,method,group,options\n",
         "t.csv:1:14: plan version v2 is not supported (this qtune reads v1)"},
        {"# qtune plan 1\n", "t.csv:1:14: bad version comment: expected '# qtune plan v1'"},
        {"# model: x  tensors=3  fingerprint=12zz\n",
         "t.csv:1:36: bad fingerprint '12zz' (expected 16 hex digits)"},
        {"# model: x  tensors=3x\n", "t.csv:1:21: bad tensor count '3x' in the model comment"},
        {"# model: a\n# model: b\n", "t.csv:2:1: second '# model:' comment (the first is on "
                                     "line 1)"},
        /* columns count characters, not bytes; positions survive multi-line cells and CRLF */
        {HDR "\"\xc3\xa9\",q4_q,rtn,,\n", "t.csv:3:5: unknown format 'q4_q'*"},
        {HDR "\"a\nb\",q4_q,rtn,,\n", "t.csv:4:4: unknown format 'q4_q'*"},
        {"# qtune plan v1\r\npattern,format,method,group,options\r\n*,q4_k,gptq,,\r\n",
         "t.csv:3:8: method 'gptq' is not available yet"},
        /* the first error wins */
        {HDR "*,q4_k,rtn,,\n*,bad,gptq,x,y\n", "t.csv:4:3: unknown format 'bad'*"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_error(cases[i].text, strlen(cases[i].text), cases[i].msg);
    /* A NUL byte, at its position. */
    static const char nul[] = HDR "*,q4\0_k,rtn,,\n";
    check_error(nul, sizeof nul - 1, "t.csv:3:5: NUL byte in the plan");
    /* A cell over the limit. */
    size_t big = Q_PLAN_MAX_CELL + 10;
    char *t = malloc(sizeof HDR + big + 32);
    assert_non_null(t);
    strcpy(t, HDR);
    memset(t + strlen(HDR), 'a', big);
    strcpy(t + strlen(HDR) + big, ",q4_k,rtn,,\n");
    check_error(t, strlen(t), "t.csv:3:1: cell longer than 4096 bytes");
    free(t);
}

static void test_add(void **state)
{
    (void)state;
    q_plan *p = q_plan_new(NULL);
    assert_non_null(p);
    q_err err = {{0}};
    q_fmt_spec f;
    assert_true(q_fmt_parse("q4_k", &f));
    assert_int_equal(q_plan_add(p, "*", &f, Q_METHOD_RTN, "", &err), Q_OK);
    assert_int_equal(q_plan_add(p, "re:(", &f, Q_METHOD_RTN, "", &err), Q_EUSAGE);
    assert_non_null(strstr(err.msg, "invalid regular expression"));
    assert_int_equal(q_plan_add(p, "", &f, Q_METHOD_RTN, "", &err), Q_EUSAGE);
    assert_int_equal(q_plan_add(p, "x", &f, Q_METHOD_GPTQ, "", &err), Q_EUSAGE);
    assert_string_equal(err.msg, "method 'gptq' is not available yet");
    assert_int_equal(q_plan_add(p, "x", &f, Q_METHOD_RTN, "damp=1", &err), Q_EUSAGE);
    f.group = 32; /* q4_k fixes its blocks */
    assert_int_equal(q_plan_add(p, "x", &f, Q_METHOD_RTN, "", &err), Q_EUSAGE);
    assert_int_equal(q_plan_add(p, "x", NULL, Q_METHOD_KEEP, NULL, &err), Q_OK);
    assert_int_equal(p->n_rules, 2);
    assert_int_equal(p->rules[1].line, 0);
    assert_string_equal(p->rules[1].options, "");
    q_plan_free(p);
    assert_string_equal(q_method_name(Q_METHOD_WSEARCH), "wsearch");
    assert_int_equal(q_method_from_name("GPTQ"), Q_METHOD_GPTQ);
    assert_int_equal(q_method_from_name("nope"), -1);
}

/* ---- matching ---- */

static void test_matching(void **state)
{
    (void)state;
    fake *f = fake_llama(2, 8, true, 0, false);
    /* rule order matters: the last match wins */
    q_plan *p = parse_ok(HDR "*,q4_k,rtn,,\n"
                             "blk.*.attn_*,q8_0,rtn,,\n"        /* line 4 */
                             "blk.1.attn_q.weight,q6_k,rtn,,\n" /* line 5 */
                             "re:attn_k,q5_k,rtn,,\n"           /* line 6: unanchored */
                             "re:^attn,f16,rtn,,\n"             /* line 7: matches nothing */
                             "attn_*,bf16,rtn,,\n"              /* line 8: globs are anchored */
                             "blk.0.ffn_*,q4_k,keep,,\n"        /* line 9 */
                             "blk.?.ffn_up.weight,q5_0,rtn,,\n" /* line 10 */
                             "re:ffn_(gate|up)\\.weight$,q4_0,rtn,,\n" /* line 11 */
                             "[,q8_0,rtn,,\n");                 /* line 12: bad glob, no match */
    int *un = NULL, nun = 0;
    q_resolved *r = resolve(p, &f->m, &un, &nun);
    char b[32];
    const q_resolved *x = res_of(&f->m, r, "blk.0.attn_q.weight");
    assert_int_equal(p->rules[x->rule].line, 4);
    assert_string_equal(fmt_of(x, b), "q8_0");
    x = res_of(&f->m, r, "blk.1.attn_q.weight");
    assert_int_equal(p->rules[x->rule].line, 5);
    assert_string_equal(fmt_of(x, b), "q6_k");
    x = res_of(&f->m, r, "blk.1.attn_k.weight");
    assert_int_equal(p->rules[x->rule].line, 6);
    assert_string_equal(fmt_of(x, b), "q5_k");
    x = res_of(&f->m, r, "blk.0.ffn_down.weight");
    assert_int_equal(p->rules[x->rule].line, 9);
    assert_true(x->kept);
    assert_int_equal(x->method, Q_METHOD_KEEP);
    assert_int_equal(x->fmt.id, Q_FMT_F16); /* the stored type */
    x = res_of(&f->m, r, "blk.0.ffn_up.weight");
    assert_int_equal(p->rules[x->rule].line, 11);
    assert_string_equal(fmt_of(x, b), "q4_0");
    x = res_of(&f->m, r, "token_embd.weight");
    assert_int_equal(p->rules[x->rule].line, 3);
    assert_int_equal(x->method, Q_METHOD_RTN);
    assert_false(x->kept);
    /* unmatched: line 7 (^attn), 8 (attn_* glob), 12 ([) */
    assert_int_equal(nun, 3);
    assert_int_equal(p->rules[un[0]].line, 7);
    assert_int_equal(p->rules[un[1]].line, 8);
    assert_int_equal(p->rules[un[2]].line, 12);
    free(un);
    free(r);
    q_plan_free(p);

    /* no rule: kept as stored; NULL unmatched outputs are allowed */
    p = parse_ok(HDR "blk.0.*,q8_0,rtn,,\n");
    r = resolve(p, &f->m, NULL, NULL);
    x = res_of(&f->m, r, "output.weight");
    assert_int_equal(x->rule, -1);
    assert_true(x->kept);
    assert_string_equal(x->note, "");
    free(r);
    q_plan_free(p);
    fake_free(f);
}

/* HF names: a glob on the GGUF-style name matches the HF tensor, and so does one on
 * its own name. */
static void test_matching_hf(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m = open_model("stories260K-hf");
    q_plan *p = parse_ok(HDR "blk.*.ffn_gate.weight,q8_0,rtn,,\n"
                             "model.layers.0.self_attn.*,f16,rtn,,\n");
    q_resolved *r = resolve(p, m, NULL, NULL);
    char b[32];
    assert_string_equal(fmt_of(res_of(m, r, "model.layers.3.mlp.gate_proj.weight"), b), "q8_0");
    assert_string_equal(fmt_of(res_of(m, r, "model.layers.0.self_attn.q_proj.weight"), b),
                        "f16");
    assert_int_equal(res_of(m, r, "model.layers.1.self_attn.q_proj.weight")->rule, -1);
    free(r);
    q_plan_free(p);
    q_model_close(m);
}

/* ---- resolution on stories260K (rows of 64 and 172) ---- */

static void test_resolve_stories_q8(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *m = open_model("stories260K.gguf");
    q_plan *p = NULL;
    q_err err = {{0}};
    assert_int_equal(q_plan_preset(m, "q8_0", &p, &err), Q_OK);
    assert_int_equal(p->n_rules, 1); /* q8_0: one "*" row; output stays q8_0 */
    int nun = -1;
    q_resolved *r = resolve(p, m, NULL, &nun);
    assert_int_equal(nun, 0);
    int n_norm = 0, n_down = 0, n_q8 = 0;
    char b[32];
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const q_tensor *t = &m->tensors[i];
        if (t->n_dims == 1) {
            /* 1-D norms: kept as stored, with a note since the rule asked for q8_0 */
            assert_true(r[i].kept);
            assert_int_equal(r[i].method, Q_METHOD_KEEP);
            assert_int_equal(r[i].fmt.id, Q_FMT_F32);
            assert_string_equal(r[i].note, "1-D tensor: kept as F32, not q8_0");
            n_norm++;
        } else if (strstr(t->name, "ffn_down")) {
            assert_int_equal(t->cols, 172);
            assert_false(r[i].kept);
            assert_true(r[i].fallback);
            assert_int_equal(r[i].wanted.id, Q_FMT_Q8_0);
            assert_string_equal(fmt_of(&r[i], b), "f16");
            assert_string_equal(r[i].note, "row length 172 is not a multiple of 32 (q8_0): f16 "
                                           "(llama.cpp has no fallback for q8_0 and stops)");
            n_down++;
        } else {
            assert_false(r[i].kept);
            assert_false(r[i].fallback);
            assert_string_equal(fmt_of(&r[i], b), "q8_0");
            assert_string_equal(r[i].note, "");
            n_q8++;
        }
    }
    assert_int_equal(n_norm, 11);
    assert_int_equal(n_down, 5);
    assert_int_equal(n_q8, 32);
    free(r);
    q_plan_free(p);

    /* q4_k_m on 64-column rows: k-quant fallbacks (q4_k -> q5_0, q6_k -> q8_0), output
     * straight to q8_0 (its row is not a multiple of 256), ffn_down to f16. Layers with
     * more bits for 5 layers: use_more_bits(i, 5) = {2, 4}. */
    assert_int_equal(q_plan_preset(m, "q4_k_m", &p, &err), Q_OK);
    r = resolve(p, m, NULL, NULL);
    const q_resolved *x = res_of(m, r, "output.weight");
    assert_string_equal(fmt_of(x, b), "q8_0");
    assert_false(x->fallback);
    x = res_of(m, r, "blk.0.attn_q.weight");
    assert_string_equal(fmt_of(x, b), "q5_0");
    assert_string_equal(x->note, "row length 64 is not a multiple of 256 (q4_k): q5_0, as "
                                 "llama.cpp falls back");
    x = res_of(m, r, "blk.2.attn_v.weight");
    assert_int_equal(x->wanted.id, Q_FMT_Q6_K);
    assert_string_equal(fmt_of(x, b), "q8_0");
    x = res_of(m, r, "blk.1.attn_v.weight");
    assert_string_equal(fmt_of(x, b), "q5_0");
    x = res_of(m, r, "blk.4.ffn_down.weight");
    assert_int_equal(x->wanted.id, Q_FMT_Q6_K);
    assert_string_equal(fmt_of(x, b), "f16");
    assert_string_equal(x->note, "row length 172 fits neither q6_k (256) nor its fallback q8_0 "
                                 "(32): f16, as llama.cpp does");
    free(r);
    q_plan_free(p);
    q_model_close(m);
}

/* ---- presets against llama.cpp's rules ----
 *
 * Expected tables derived by hand from src/llama-quant.cpp (ggml-org/llama.cpp):
 *  - llama_tensor_get_type_impl(): use_more_bits(i, n) = i < n/8 || i >= 7*n/8 ||
 *    (i - n/8) % 3 == 2.
 *    8 layers:  n/8 = 1, 7n/8 = 7  -> {0, 3, 6, 7}
 *    32 layers: n/8 = 4, 7n/8 = 28 -> {0,1,2,3, 6,9,12,15,18,21,24,27, 28,29,30,31}
 *  - attn_v branch (category_is_attn_v): Q4_K_M / Q5_K_M and
 *    use_more_bits(i_attention_wv, n_attention_wv) -> Q6_K; LLM_TYPE_70B turns a Q4_K
 *    attn_v into Q5_K; n_expert == 8 makes it Q8_0.
 *  - ffn_down branch: Q4_K_M (not falcon) use_more_bits(i_layer, n_layer) -> Q6_K;
 *    Q5_K_M && use_more_bits -> Q6_K; i_layer is the ffn_down counter, or the
 *    "blk.%d." number when n_expert > 1.
 *  - output branch: nx % blck(default) != 0 -> Q8_0, else new_type != Q8_0 -> Q6_K;
 *    when there is no output.weight (has_tied_embeddings) token_embd takes this branch.
 *  - attn_k: n_expert == 8 -> Q8_0; attn_output: n_expert == 8 and Q4_K_M -> Q5_K.
 */
static const int more8[] = {1, 0, 0, 1, 0, 0, 1, 1};
static const int more32[] = {1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1,
                             0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1};

/* Checks every matrix of an n-layer llama model against the expected choice. */
static void check_mixture(const q_model *m, const q_resolved *r, int n, const int *more,
                          const char *def, const char *out, const char *embd)
{
    char name[64], b[32];
    assert_string_equal(fmt_of(res_of(m, r, "output.weight"), b), out);
    assert_string_equal(fmt_of(res_of(m, r, "token_embd.weight"), b), embd);
    assert_true(res_of(m, r, "output_norm.weight")->kept);
    for (int l = 0; l < n; l++) {
        const char *hi = more[l] ? "q6_k" : def;
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
        if (strcmp(fmt_of(res_of(m, r, name), b), hi) != 0)
            fail_msg("%s: %s, expected %s", name, b, hi);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        if (strcmp(fmt_of(res_of(m, r, name), b), hi) != 0)
            fail_msg("%s: %s, expected %s", name, b, hi);
        static const char *const plain[] = {"attn_q", "attn_k", "attn_output", "ffn_gate",
                                            "ffn_up"};
        for (size_t k = 0; k < 5; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, plain[k]);
            if (strcmp(fmt_of(res_of(m, r, name), b), def) != 0)
                fail_msg("%s: %s, expected %s", name, b, def);
        }
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        assert_true(res_of(m, r, name)->kept);
    }
    for (uint64_t i = 0; i < m->n_tensors; i++)
        assert_false(r[i].fallback);
}

static q_plan *preset(const q_model *m, const char *name)
{
    q_plan *p = NULL;
    q_err err = {{0}};
    if (q_plan_preset(m, name, &p, &err) != Q_OK)
        fail_msg("preset %s: %s", name, err.msg);
    return p;
}

static char synth_dir[64];

static void synth_path(int layers, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/l%d.gguf", synth_dir, layers);
    if (access(buf, R_OK) == 0)
        return;
    an_synth_cfg c;
    an_synth_defaults(&c);
    c.dim = 256;
    c.ff = 256;
    c.heads = 4;
    c.kv_heads = 2;
    c.vocab = 512;
    c.layers = layers;
    c.seed = 7;
    q_err err = {{0}};
    if (an_synth_write(&c, buf, &err) != Q_OK)
        fail_msg("an_synth_write: %s", err.msg);
}

static void test_preset_q4_k_m_synth(void **state)
{
    (void)state;
    static const int layers[] = {8, 32};
    for (int k = 0; k < 2; k++) {
        char path[128];
        synth_path(layers[k], path, sizeof path);
        q_model *m = open_model_path(path);
        q_plan *p = preset(m, "q4_k_m");
        /* rules: "*" + output + (attn_v + ffn_down) per more-bits layer */
        int n_more = layers[k] == 8 ? 4 : 16;
        assert_int_equal(p->n_rules, 2 + 2 * n_more);
        assert_string_equal(p->rules[0].pattern, "*");
        /* explicit rows in model order: an_synth stores output.weight last */
        assert_string_equal(p->rules[1].pattern, "blk.0.attn_v.weight");
        assert_string_equal(p->rules[p->n_rules - 1].pattern, "output.weight");
        int nun = -1;
        q_resolved *r = resolve(p, m, NULL, &nun);
        assert_int_equal(nun, 0);
        check_mixture(m, r, layers[k], layers[k] == 8 ? more8 : more32, "q4_k", "q6_k", "q4_k");
        free(r);
        q_plan_free(p);

        p = preset(m, "q5_k_m");
        r = resolve(p, m, NULL, NULL);
        check_mixture(m, r, layers[k], layers[k] == 8 ? more8 : more32, "q5_k", "q6_k", "q5_k");
        free(r);
        q_plan_free(p);
        q_model_close(m);
    }
}

static void test_preset_others_synth(void **state)
{
    (void)state;
    static const int none[8] = {0};
    char path[128], b[32];
    synth_path(8, path, sizeof path);
    q_model *m = open_model_path(path);
    /* Q8_0: output stays q8_0 (new_type == Q8_0), one rule */
    q_plan *p = preset(m, "q8_0");
    assert_int_equal(p->n_rules, 1);
    q_resolved *r = resolve(p, m, NULL, NULL);
    check_mixture(m, r, 8, none, "q8_0", "q8_0", "q8_0");
    free(r);
    q_plan_free(p);
    /* Q6_K: all q6_k */
    p = preset(m, "q6_k");
    assert_int_equal(p->n_rules, 1);
    r = resolve(p, m, NULL, NULL);
    static const int all6[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    check_mixture(m, r, 8, all6, "q6_k", "q6_k", "q6_k");
    free(r);
    q_plan_free(p);
    /* Q4_0 without imatrix: q4_0, output q6_k (nx % 32 == 0 and not Q8_0) */
    p = preset(m, "q4_0");
    assert_int_equal(p->n_rules, 2);
    r = resolve(p, m, NULL, NULL);
    check_mixture(m, r, 8, none, "q4_0", "q6_k", "q4_0");
    free(r);
    q_plan_free(p);
    /* keep-attn-f16: attention f16 through glob rules, ffn_down plain q4_k, output q6_k */
    p = preset(m, "keep-attn-f16");
    assert_string_equal(p->rules[1].pattern, "blk.*.attn_q.weight");
    int nun = -1;
    r = resolve(p, m, NULL, &nun);
    assert_int_equal(nun, 0);
    assert_string_equal(fmt_of(res_of(m, r, "output.weight"), b), "q6_k");
    assert_string_equal(fmt_of(res_of(m, r, "token_embd.weight"), b), "q4_k");
    for (int l = 0; l < 8; l++) {
        char name[64];
        static const char *const att[] = {"attn_q", "attn_k", "attn_v", "attn_output"};
        for (int k = 0; k < 4; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, att[k]);
            assert_string_equal(fmt_of(res_of(m, r, name), b), "f16");
        }
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        assert_string_equal(fmt_of(res_of(m, r, name), b), "q4_k");
    }
    free(r);
    q_plan_free(p);
    /* unknown preset */
    q_err err = {{0}};
    assert_int_equal(q_plan_preset(m, "q3_k_xl", &p, &err), Q_EUSAGE);
    assert_null(p);
    q_model_close(m);
    const char *const *names = q_plan_preset_names();
    int n = 0;
    for (; names[n]; n++)
        assert_non_null(q_plan_preset_desc(names[n]));
    assert_int_equal(n, 6);
}

/* Stored order does not change llama.cpp's counters (it sorts by layer number, so
 * blk.10 follows blk.9): a 32-layer model stored backwards gives the same table. */
static void test_preset_order(void **state)
{
    (void)state;
    fake *f = fake_llama(32, 2, true, 0, true);
    q_plan *p = preset(&f->m, "q4_k_m");
    q_resolved *r = resolve(p, &f->m, NULL, NULL);
    check_mixture(&f->m, r, 32, more32, "q4_k", "q6_k", "q4_k");
    free(r);
    q_plan_free(p);
    fake_free(f);
}

/* No output.weight: token_embd is the output (has_tied_embeddings) -> q6_k. */
static void test_preset_tied(void **state)
{
    (void)state;
    fake *f = fake_llama(8, 2, false, 0, false);
    q_plan *p = preset(&f->m, "q4_k_m");
    q_resolved *r = resolve(p, &f->m, NULL, NULL);
    char b[32];
    assert_string_equal(fmt_of(res_of(&f->m, r, "token_embd.weight"), b), "q6_k");
    assert_string_equal(fmt_of(res_of(&f->m, r, "blk.3.attn_v.weight"), b), "q6_k");
    assert_string_equal(fmt_of(res_of(&f->m, r, "blk.4.attn_v.weight"), b), "q4_k");
    free(r);
    q_plan_free(p);
    p = preset(&f->m, "q8_0"); /* Q8_0: the tied embedding stays q8_0 */
    assert_int_equal(p->n_rules, 1);
    q_plan_free(p);
    fake_free(f);
}

/* 80 layers with GQA is LLM_TYPE_70B: attn_v not given more bits goes q4_k -> q5_k;
 * without GQA (65B) it stays q4_k. */
static void test_preset_70b(void **state)
{
    (void)state;
    char b[32], name[64];
    for (int gqa = 0; gqa < 2; gqa++) {
        fake *f = fake_llama(80, gqa ? 1 : 8, true, 0, false);
        q_plan *p = preset(&f->m, "q4_k_m");
        q_resolved *r = resolve(p, &f->m, NULL, NULL);
        for (int l = 0; l < 80; l++) {
            /* n = 80: n/8 = 10, 7n/8 = 70 */
            bool more = l < 10 || l >= 70 || (l - 10) % 3 == 2;
            const char *want = more ? "q6_k" : gqa ? "q5_k" : "q4_k";
            snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
            if (strcmp(fmt_of(res_of(&f->m, r, name), b), want) != 0)
                fail_msg("gqa %d %s: %s, expected %s", gqa, name, b, want);
            snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
            assert_string_equal(fmt_of(res_of(&f->m, r, name), b), more ? "q6_k" : "q4_k");
        }
        free(r);
        q_plan_free(p);
        fake_free(f);
    }
}

/* 8 experts (Mixtral-like): attn_v and attn_k q8_0, attn_output q5_k (Q4_K_M only),
 * ffn_down_exps by the layer in its name, ffn_gate_inp never quantized. */
static void test_preset_moe(void **state)
{
    (void)state;
    char b[32], name[64];
    fake *f = fake_llama(32, 8, true, 8, false);
    q_plan *p = preset(&f->m, "q4_k_m");
    q_resolved *r = resolve(p, &f->m, NULL, NULL);
    for (int l = 0; l < 32; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
        assert_string_equal(fmt_of(res_of(&f->m, r, name), b), "q8_0");
        snprintf(name, sizeof name, "blk.%d.attn_k.weight", l);
        assert_string_equal(fmt_of(res_of(&f->m, r, name), b), "q8_0");
        snprintf(name, sizeof name, "blk.%d.attn_output.weight", l);
        assert_string_equal(fmt_of(res_of(&f->m, r, name), b), "q5_k");
        snprintf(name, sizeof name, "blk.%d.ffn_down_exps.weight", l);
        assert_string_equal(fmt_of(res_of(&f->m, r, name), b), more32[l] ? "q6_k" : "q4_k");
        snprintf(name, sizeof name, "blk.%d.ffn_gate_inp.weight", l);
        const q_resolved *x = res_of(&f->m, r, name);
        assert_true(x->kept);
        assert_string_equal(x->note, "kept as F16, not q4_k: llama.cpp does not quantize this "
                                     "tensor");
    }
    free(r);
    q_plan_free(p);
    p = preset(&f->m, "q5_k_m"); /* attn_output: no change for Q5_K_M */
    r = resolve(p, &f->m, NULL, NULL);
    assert_string_equal(fmt_of(res_of(&f->m, r, "blk.0.attn_output.weight"), b), "q5_k");
    assert_string_equal(fmt_of(res_of(&f->m, r, "blk.0.attn_v.weight"), b), "q8_0");
    free(r);
    q_plan_free(p);
    fake_free(f);
}

/* ---- fingerprints ---- */

static void test_fingerprint(void **state)
{
    (void)state;
    fake *f = fake_llama(2, 8, true, 0, false);
    char a[17], b[17];
    q_model_fingerprint(&f->m, a);
    assert_int_equal(strlen(a), 16);
    q_model_fingerprint(&f->m, b);
    assert_string_equal(a, b);
    q_plan *p = q_plan_new(&f->m);
    assert_string_equal(p->fingerprint, a);
    assert_string_equal(p->model_name, "fake.gguf");
    assert_int_equal(p->n_tensors, (int64_t)f->m.n_tensors);
    q_fmt_spec q8;
    q_fmt_parse("q8_0", &q8);
    q_err err = {{0}};
    assert_int_equal(q_plan_add(p, "*", &q8, Q_METHOD_RTN, "", &err), Q_OK);
    q_resolved *r = calloc(f->m.n_tensors, sizeof *r);
    assert_int_equal(q_plan_resolve(p, &f->m, false, r, NULL, NULL, &err), Q_OK);

    /* a change of shape, of dtype or of name changes the fingerprint */
    f->m.tensors[3].ne[0] = 128;
    q_model_fingerprint(&f->m, b);
    assert_string_not_equal(a, b);
    f->m.tensors[3].ne[0] = 256;
    q_model_fingerprint(&f->m, b);
    assert_string_equal(a, b);
    f->m.tensors[4].dtype = Q_DT_F32;
    q_model_fingerprint(&f->m, b);
    assert_string_not_equal(a, b);
    assert_int_equal(q_plan_resolve(p, &f->m, false, r, NULL, NULL, &err), Q_EDATA);
    assert_non_null(strstr(err.msg, "another model"));
    assert_non_null(strstr(err.msg, a));
    assert_non_null(strstr(err.msg, b));
    assert_int_equal(q_plan_resolve(p, &f->m, true, r, NULL, NULL, &err), Q_OK);
    /* a plan without a fingerprint applies to any model */
    p->fingerprint[0] = '\0';
    assert_int_equal(q_plan_resolve(p, &f->m, false, r, NULL, NULL, &err), Q_OK);
    free(r);
    q_plan_free(p);
    fake_free(f);

    /* FNV-1a 64 of nothing is its offset basis */
    q_model empty;
    memset(&empty, 0, sizeof empty);
    q_model_fingerprint(&empty, a);
    assert_string_equal(a, "cbf29ce484222325");
}

static void test_fingerprint_real(void **state)
{
    (void)state;
    if (!have_models())
        skip();
    q_model *a = open_model("stories260K.gguf"), *b = open_model("stories260K-F16.gguf");
    q_plan *p = preset(a, "q8_0");
    q_resolved *r = calloc(b->n_tensors, sizeof *r);
    q_err err = {{0}};
    assert_int_equal(q_plan_resolve(p, b, false, r, NULL, NULL, &err), Q_EDATA);
    assert_non_null(strstr(err.msg, "stories260K.gguf"));
    assert_int_equal(q_plan_resolve(p, b, true, r, NULL, NULL, &err), Q_OK);
    free(r);
    q_plan_free(p);
    q_model_close(a);
    q_model_close(b);
}

/* ---- export ---- */

static char *export_mem(const q_plan *p, const q_model *m, const q_resolved *r, q_status want)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    q_err err = {{0}};
    q_status st = q_plan_export_llama(p, m, r, fp, &err);
    fclose(fp);
    if (st != want)
        fail_msg("export status %d (%s)", (int)st, err.msg);
    return buf;
}

static void test_export(void **state)
{
    (void)state;
    char path[128];
    synth_path(8, path, sizeof path);
    q_model *m = open_model_path(path);
    q_plan *p = preset(m, "q4_k_m");
    q_resolved *r = resolve(p, m, NULL, NULL);
    assert_string_equal(q_plan_llama_ftype(m, r), "Q4_K_M");
    char *out = export_mem(p, m, r, Q_OK);
    const char *want = "^blk\\.0\\.attn_v\\.weight$=q6_k\n"
                       "^blk\\.0\\.ffn_down\\.weight$=q6_k\n"
                       "^blk\\.3\\.attn_v\\.weight$=q6_k\n"
                       "^blk\\.3\\.ffn_down\\.weight$=q6_k\n"
                       "^blk\\.6\\.attn_v\\.weight$=q6_k\n"
                       "^blk\\.6\\.ffn_down\\.weight$=q6_k\n"
                       "^blk\\.7\\.attn_v\\.weight$=q6_k\n"
                       "^blk\\.7\\.ffn_down\\.weight$=q6_k\n"
                       "^output\\.weight$=q6_k\n";
    assert_string_equal(out, want);
    free(out);
    free(r);
    q_plan_free(p);

    /* kept matrices get their stored type; grid formats cannot be exported */
    p = parse_ok(HDR "*,q8_0,rtn,,\nblk.0.attn_q.weight,,keep,,\n");
    r = resolve(p, m, NULL, NULL);
    assert_string_equal(q_plan_llama_ftype(m, r), "Q8_0");
    out = export_mem(p, m, r, Q_OK);
    assert_string_equal(out, "^blk\\.0\\.attn_q\\.weight$=f16\n");
    free(out);
    free(r);
    q_plan_free(p);
    p = parse_ok(HDR "*,q8_0,rtn,,\nblk.0.attn_q.weight,int4,rtn,,\n");
    r = resolve(p, m, NULL, NULL);
    free(export_mem(p, m, r, Q_EUSAGE));
    free(r);
    q_plan_free(p);
    q_model_close(m);

    /* names llama-quantize would lower-case or split: escaped as \xHH */
    fake *f = calloc(1, sizeof *f);
    f->m.path = strdup("odd.gguf");
    fake_add(f, "Blk.0 X=y.weight", 2, 64, 64, 1);
    fake_add(f, "plain.weight", 2, 64, 64, 1);
    fake_add(f, "more.weight", 2, 64, 64, 1);
    p = parse_ok(HDR "*,q8_0,rtn,,\nB*,q4_0,rtn,,\n");
    r = resolve(p, &f->m, NULL, NULL);
    out = export_mem(p, &f->m, r, Q_OK);
    assert_string_equal(out, "^\\x42lk\\.0\\x20\\x58\\x3dy\\.weight$=q4_0\n");
    free(out);
    free(r);
    q_plan_free(p);
    fake_free(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(synth_dir, sizeof synth_dir, "/tmp/qtune_test_plan_XXXXXX");
    return mkdtemp(synth_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char p[128];
    static const int layers[] = {8, 32};
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/l%d.gguf", synth_dir, layers[k]);
        unlink(p);
    }
    rmdir(synth_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_roundtrip_header_variants),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_load_pipe),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_matching),
        cmocka_unit_test(test_matching_hf),
        cmocka_unit_test(test_resolve_stories_q8),
        cmocka_unit_test(test_preset_q4_k_m_synth),
        cmocka_unit_test(test_preset_others_synth),
        cmocka_unit_test(test_preset_order),
        cmocka_unit_test(test_preset_tied),
        cmocka_unit_test(test_preset_70b),
        cmocka_unit_test(test_preset_moe),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_fingerprint_real),
        cmocka_unit_test(test_export),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
