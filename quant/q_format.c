/* q_format.c — the formats traits table and the operations every caller uses
 * (parse, name, cost, fake quantization), dispatching to the codecs. */
#include "q_format.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "q_grid.h"
#include "q_quants.h"

static size_t quant_f32(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                        const float *imatrix)
{
    (void)imatrix;
    size_t n = (size_t)(nrows * n_per_row);
    memcpy(dst, src, n * sizeof(float));
    return n * sizeof(float);
}

static size_t quant_f16(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                        const float *imatrix)
{
    (void)imatrix;
    size_t n = (size_t)(nrows * n_per_row);
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++)
        d[i] = q_f32_to_f16(src[i]);
    return n * sizeof(uint16_t);
}

static size_t quant_bf16(const float *src, void *dst, int64_t nrows, int64_t n_per_row,
                         const float *imatrix)
{
    (void)imatrix;
    size_t n = (size_t)(nrows * n_per_row);
    uint16_t *d = dst;
    for (size_t i = 0; i < n; i++)
        d[i] = q_f32_to_bf16(src[i]);
    return n * sizeof(uint16_t);
}

/* Reference quantizer of each format with a GGUF type; NULL for grid formats. */
static q_quant_fn ref_quantizer(q_format_id id)
{
    switch (id) {
    case Q_FMT_F32:
        return quant_f32;
    case Q_FMT_F16:
        return quant_f16;
    case Q_FMT_BF16:
        return quant_bf16;
    case Q_FMT_Q8_0:
        return q_quantize_q8_0;
    case Q_FMT_Q6_K:
        return q_quantize_q6_k;
    case Q_FMT_Q5_1:
        return q_quantize_q5_1;
    case Q_FMT_Q5_0:
        return q_quantize_q5_0;
    case Q_FMT_Q5_K:
        return q_quantize_q5_k;
    case Q_FMT_Q4_1:
        return q_quantize_q4_1;
    case Q_FMT_Q4_0:
        return q_quantize_q4_0;
    case Q_FMT_Q4_K:
        return q_quantize_q4_k;
    case Q_FMT_IQ4_NL:
        return q_quantize_iq4_nl;
    case Q_FMT_Q3_K:
        return q_quantize_q3_k;
    case Q_FMT_Q2_K:
        return q_quantize_q2_k;
    default:
        return NULL;
    }
}

static q_format g_formats[Q_FMT_COUNT];
static bool g_formats_ready;

/* Built on first use from Q_FORMAT_LIST and the dtype table (idempotent, so a
 * race between two first callers writes the same values). */
static void formats_init(void)
{
    if (g_formats_ready)
        return;
    static const struct {
        const char *name;
        int32_t ggml;
    } list[] = {
#define Q_FORMAT_ROW(e, name, ggml) {name, ggml},
        Q_FORMAT_LIST(Q_FORMAT_ROW)
#undef Q_FORMAT_ROW
    };
    for (int i = 0; i < Q_FMT_COUNT; i++) {
        q_format *f = &g_formats[i];
        f->id = (q_format_id)i;
        f->name = list[i].name;
        f->ggml_type = list[i].ggml;
        f->blck = 1;
        f->block_bytes = 0;
        if (f->ggml_type >= 0) {
            const q_dtype_traits *tr = q_dtype_get((uint32_t)f->ggml_type);
            f->blck = tr->blck;
            f->block_bytes = tr->size;
        }
        f->quantize_ref = ref_quantizer(f->id);
        if (!f->quantize)
            f->quantize = f->quantize_ref;
    }
    g_formats_ready = true;
}

const q_format *q_format_get(q_format_id id)
{
    formats_init();
    if ((int)id < 0 || id >= Q_FMT_COUNT)
        return NULL;
    return &g_formats[id];
}

void q_format_set_fast(q_format_id id, q_quant_fn fn)
{
    formats_init();
    if ((int)id >= 0 && id < Q_FMT_COUNT && g_formats[id].ggml_type >= 0)
        g_formats[id].quantize = fn ? fn : g_formats[id].quantize_ref;
}

static int64_t default_group(q_format_id id)
{
    switch (id) {
    case Q_FMT_INT:
    case Q_FMT_UINT:
    case Q_FMT_FP8_E4M3:
    case Q_FMT_FP8_E5M2:
        return Q_GROUP_CHANNEL;
    case Q_FMT_NF4:
        return 64;
    default:
        return 0;
    }
}

bool q_fmt_parse(const char *name, q_fmt_spec *out)
{
    char low[32];
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof low)
        return false;
    for (size_t i = 0; i <= n; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    formats_init();
    memset(out, 0, sizeof *out);
    for (int i = 0; i < Q_FMT_COUNT; i++) {
        if (i == Q_FMT_INT || i == Q_FMT_UINT)
            continue;
        if (strcmp(low, g_formats[i].name) == 0) {
            out->id = (q_format_id)i;
            out->group = default_group(out->id);
            return true;
        }
    }
    /* intN / uintN, N = one digit 2..8 */
    const char *digits = NULL;
    if (strncmp(low, "uint", 4) == 0) {
        out->id = Q_FMT_UINT;
        digits = low + 4;
    } else if (strncmp(low, "int", 3) == 0) {
        out->id = Q_FMT_INT;
        digits = low + 3;
    }
    if (digits && digits[0] >= '2' && digits[0] <= '8' && digits[1] == '\0') {
        out->bits = digits[0] - '0';
        out->group = Q_GROUP_CHANNEL;
        return true;
    }
    return false;
}

const char *q_fmt_name(const q_fmt_spec *spec, char *buf, size_t cap)
{
    const q_format *f = q_format_get(spec->id);
    if (!f)
        snprintf(buf, cap, "?");
    else if (spec->id == Q_FMT_INT || spec->id == Q_FMT_UINT)
        snprintf(buf, cap, "%s%d", f->name, spec->bits);
    else
        snprintf(buf, cap, "%s", f->name);
    return buf;
}

bool q_fmt_is_ggml(const q_fmt_spec *spec)
{
    const q_format *f = q_format_get(spec->id);
    return f && f->ggml_type >= 0;
}

static bool is_grid(q_format_id id)
{
    return id == Q_FMT_FP8_E4M3 || id == Q_FMT_FP8_E5M2 || id == Q_FMT_INT || id == Q_FMT_UINT ||
           id == Q_FMT_NF4;
}

q_status q_fmt_check(const q_fmt_spec *spec, int64_t n_per_row, q_err *err)
{
    char name[32];
    if (!q_format_get(spec->id))
        return q_fail(err, Q_EUSAGE, "unknown format id %d", (int)spec->id);
    q_fmt_name(spec, name, sizeof name);
    if (spec->id == Q_FMT_INT || spec->id == Q_FMT_UINT) {
        if (spec->bits < 2 || spec->bits > 8)
            return q_fail(err, Q_EUSAGE, "%s: bits must be 2..8, not %d", name, spec->bits);
    } else if (spec->bits != 0) {
        return q_fail(err, Q_EUSAGE, "%s takes no bit count", name);
    }
    if (!is_grid(spec->id)) {
        if (spec->group != 0)
            return q_fail(err, Q_EUSAGE, "%s fixes its blocks; a group cannot be given", name);
        return Q_OK;
    }
    if (spec->id == Q_FMT_NF4 && spec->group <= 0)
        return q_fail(err, Q_EUSAGE, "nf4 needs a block size (group > 0), not %lld",
                      (long long)spec->group);
    if (spec->group < Q_GROUP_TENSOR)
        return q_fail(err, Q_EUSAGE, "%s: group %lld is out of range", name,
                      (long long)spec->group);
    if (spec->group > 0 && n_per_row > 0 && n_per_row % spec->group != 0)
        return q_fail(err, Q_EUSAGE, "%s: group %lld does not divide the row length %lld",
                      name, (long long)spec->group, (long long)n_per_row);
    return Q_OK;
}

bool q_fmt_fits(const q_fmt_spec *spec, int64_t n_per_row)
{
    const q_format *f = q_format_get(spec->id);
    if (!f || n_per_row <= 0)
        return false;
    if (f->ggml_type >= 0)
        return n_per_row % f->blck == 0;
    return spec->group <= 0 || n_per_row % spec->group == 0;
}

/* Elements sharing one scale: the group, a row, or the whole tensor. */
static double group_elems(const q_fmt_spec *spec, int64_t rows, int64_t n_per_row)
{
    if (spec->group > 0)
        return (double)spec->group;
    if (spec->group == Q_GROUP_TENSOR)
        return (double)rows * (double)n_per_row;
    return (double)n_per_row;
}

double q_fmt_bpw(const q_fmt_spec *spec, int64_t rows, int64_t n_per_row)
{
    const q_format *f = q_format_get(spec->id);
    if (!f)
        return 0;
    if (f->ggml_type >= 0)
        return 8.0 * (double)f->block_bytes / (double)f->blck;
    double g = group_elems(spec, rows, n_per_row);
    if (g <= 0)
        return 0;
    switch (spec->id) {
    case Q_FMT_INT:
        return spec->bits + 16.0 / g; /* f16 scale */
    case Q_FMT_UINT:
        return spec->bits + (16.0 + spec->bits) / g; /* f16 scale + N-bit zero */
    case Q_FMT_FP8_E4M3:
    case Q_FMT_FP8_E5M2:
        return 8 + 32.0 / g; /* f32 scale */
    case Q_FMT_NF4:
        return 4 + 32.0 / g; /* f32 absmax */
    default:
        return 0;
    }
}

uint64_t q_fmt_bytes(const q_fmt_spec *spec, int64_t rows, int64_t n_per_row)
{
    const q_format *f = q_format_get(spec->id);
    if (!f || rows < 0 || n_per_row < 0)
        return 0;
    if (f->ggml_type >= 0) {
        uint64_t row = q_dtype_bytes((uint32_t)f->ggml_type, n_per_row);
        return row * (uint64_t)rows;
    }
    double bits = q_fmt_bpw(spec, rows, n_per_row) * (double)rows * (double)n_per_row;
    return (uint64_t)ceil(bits / 8.0);
}

bool q_fmt_needs_prepare(const q_fmt_spec *spec)
{
    return spec->group == Q_GROUP_TENSOR && is_grid(spec->id) && spec->id != Q_FMT_NF4;
}

void q_fmt_prepare(const q_fmt_spec *spec, const float *src, int64_t n, q_fq_ctx *ctx)
{
    memset(ctx, 0, sizeof *ctx);
    if (!q_fmt_needs_prepare(spec))
        return;
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(src[i]))
            continue;
        lo = src[i] < lo ? src[i] : lo;
        hi = src[i] > hi ? src[i] : hi;
    }
    if (lo > hi)
        lo = hi = 0;
    ctx->lo = lo;
    ctx->hi = hi;
    ctx->ready = true;
}

void q_fq_ctx_merge(q_fq_ctx *a, const q_fq_ctx *b)
{
    if (!b->ready)
        return;
    if (!a->ready) {
        *a = *b;
        return;
    }
    a->lo = b->lo < a->lo ? b->lo : a->lo;
    a->hi = b->hi > a->hi ? b->hi : a->hi;
}

q_status q_fmt_fakequant(const q_fmt_spec *spec, const float *src, float *dst, int64_t nrows,
                         int64_t n_per_row, const float *imatrix, const q_fq_ctx *ctx,
                         q_err *err)
{
    q_status st = q_fmt_check(spec, n_per_row, err);
    if (st != Q_OK)
        return st;
    const q_format *f = q_format_get(spec->id);
    if (f->ggml_type < 0) {
        if (q_fmt_needs_prepare(spec) && (!ctx || !ctx->ready))
            return q_fail(err, Q_EUSAGE, "%s per tensor needs q_fmt_prepare first", f->name);
        q_grid_fakequant(spec, src, dst, nrows, n_per_row, imatrix, ctx);
        return Q_OK;
    }
    if (n_per_row % f->blck != 0)
        return q_fail(err, Q_EUSAGE, "%s needs rows that are a multiple of %lld, not %lld",
                      f->name, (long long)f->blck, (long long)n_per_row);
    /* One row at a time through a scratch buffer: bounded memory, any row count. */
    size_t row_bytes = (size_t)q_dtype_bytes((uint32_t)f->ggml_type, n_per_row);
    void *buf = malloc(row_bytes);
    if (!buf)
        return q_fail(err, Q_ENOMEM, "out of memory (%zu bytes)", row_bytes);
    const q_dequant_fn dq = q_dtype_get((uint32_t)f->ggml_type)->dequant;
    for (int64_t r = 0; r < nrows; r++) {
        f->quantize(src + r * n_per_row, buf, 1, n_per_row, imatrix);
        dq(buf, dst + r * n_per_row, n_per_row);
    }
    free(buf);
    return Q_OK;
}
