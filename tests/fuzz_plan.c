/* fuzz_plan.c — libFuzzer target for the plan parser (q_plan_parse).
 *
 * Every accepted plan must survive a round trip: q_plan_write then
 * q_plan_parse gives an equal plan, and writing that again gives the same
 * bytes. Accepted plans are also resolved against a small fixed catalog (GGUF
 * and HF names, 1-D, 2-D and 3-D tensors, rows that fit no block) and exported
 * for llama-quantize, so matching, fallbacks and escaping run on fuzzed rules.
 * The input is copied to an exact-size buffer so ASan sees any read past it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "q_dtype.h"
#include "q_plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *fz_write(const q_plan *p, size_t *len)
{
    char *buf = NULL;
    FILE *fp = open_memstream(&buf, len);
    if (!fp)
        abort();
    q_err err;
    if (q_plan_write(p, fp, &err) != Q_OK)
        abort();
    fclose(fp);
    return buf;
}

static void fz_tensor(q_tensor *t, const char *name, const char *gguf, uint32_t nd, int64_t ne0,
                      int64_t ne1, int64_t ne2, uint32_t dtype)
{
    memset(t, 0, sizeof *t);
    t->name = (char *)(uintptr_t)name;
    t->gguf_name = (char *)(uintptr_t)gguf;
    t->n_dims = nd;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->ne[3] = 1;
    t->cols = ne0;
    t->rows = ne1 * ne2;
    t->dtype = dtype;
    t->readable = true;
}

static void fz_resolve(const q_plan *p)
{
    q_tensor ts[8];
    fz_tensor(&ts[0], "token_embd.weight", "token_embd.weight", 2, 256, 512, 1, Q_DT_F16);
    fz_tensor(&ts[1], "blk.0.attn_norm.weight", "blk.0.attn_norm.weight", 1, 256, 1, 1,
              Q_DT_F32);
    fz_tensor(&ts[2], "model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight", 2, 172,
              256, 1, Q_DT_F32);
    fz_tensor(&ts[3], "blk.1.attn_v.weight", "blk.1.attn_v.weight", 2, 64, 32, 1, Q_DT_BF16);
    fz_tensor(&ts[4], "blk.2.ffn_up_exps.weight", "blk.2.ffn_up_exps.weight", 3, 256, 64, 8,
              Q_DT_F16);
    fz_tensor(&ts[5], "Odd Name=1.weight", "Odd Name=1.weight", 2, 32, 4, 1, Q_DT_Q8_0);
    fz_tensor(&ts[6], "output.weight", "output.weight", 2, 96, 512, 1, Q_DT_F32);
    fz_tensor(&ts[7], "iq.weight", "iq.weight", 2, 256, 4, 1, Q_DT_IQ2_XXS);
    q_model m;
    memset(&m, 0, sizeof m);
    m.path = (char *)(uintptr_t) "fuzz.gguf";
    m.n_tensors = 8;
    m.tensors = ts;
    q_resolved res[8];
    int *un = NULL, nun = 0;
    q_err err;
    if (q_plan_resolve(p, &m, true, res, &un, &nun, &err) != Q_OK)
        return;
    for (int i = 0; i < nun; i++)
        if (un[i] < 0 || un[i] >= p->n_rules || (i && un[i] <= un[i - 1]))
            abort();
    for (int i = 0; i < 8; i++) {
        if (res[i].rule < -1 || res[i].rule >= p->n_rules || !memchr(res[i].note, 0, 160))
            abort();
        /* a format that does not fit the row is never the result */
        if (!res[i].kept && !q_fmt_fits(&res[i].fmt, ts[i].cols))
            abort();
    }
    free(un);
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    if (!fp)
        abort();
    (void)q_plan_export_llama(p, &m, res, fp, &err);
    (void)q_plan_llama_ftype(&m, res);
    fclose(fp);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    q_plan *p = NULL;
    q_err err;
    err.msg[0] = '\0';
    q_status st = q_plan_parse(text, size, "fuzz.csv", &p, &err);
    free(text);
    if (st != Q_OK) {
        if (p || !memchr(err.msg, 0, sizeof err.msg) || strncmp(err.msg, "fuzz.csv:", 9) != 0 ||
            strchr(err.msg, '\n'))
            abort();
        return 0;
    }
    size_t n1 = 0, n2 = 0;
    char *w1 = fz_write(p, &n1);
    q_plan *p2 = NULL;
    if (q_plan_parse(w1, n1, "rt.csv", &p2, &err) != Q_OK || !q_plan_equal(p, p2))
        abort();
    char *w2 = fz_write(p2, &n2);
    if (n1 != n2 || memcmp(w1, w2, n1) != 0)
        abort();
    fz_resolve(p);
    free(w1);
    free(w2);
    q_plan_free(p2);
    q_plan_free(p);
    return 0;
}
