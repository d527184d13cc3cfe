/* q_grid.c — fake quantizers of the grid formats (scalar reference).
 *
 * Definitions, per group of values sharing one scale (a group is G consecutive
 * elements of a row, a whole row for Q_GROUP_CHANNEL, or the whole tensor for
 * Q_GROUP_TENSOR with its range from q_fmt_prepare). lo and hi are the group's
 * min and max over finite values, widened to include 0 (as compressed-tensors'
 * calculate_qparams and GPTQ's Quantizer do), so 0 is always exact.
 *
 *   intN   symmetric, the convention of compressed-tensors / llm-compressor,
 *          GPTQ(Model) sym and PyTorch's symmetric observers:
 *          scale = max(|lo|, |hi|) / ((2^N - 1) / 2), rounded to f16 (stored
 *          f16); q = clamp(round(x / scale), -2^(N-1), 2^(N-1) - 1); x' = q scale.
 *          (The "restricted" range ±(2^(N-1) - 1) with absmax / (2^(N-1) - 1)
 *          is what llama.cpp's q8_0 does, not what those tools do.)
 *   uintN  asymmetric: scale = (hi - lo) / (2^N - 1), rounded to f16;
 *          zero = clamp(round(-lo / scale), 0, 2^N - 1) (an N-bit integer);
 *          q = clamp(round(x / scale) + zero, 0, 2^N - 1); x' = (q - zero) scale.
 *   fp8    OCP E4M3 ("fn": bias 7, max 448, no inf, S.1111.111 NaN) or E5M2
 *          (bias 15, max 57344, IEEE-style inf/NaN): scale = absmax / max in
 *          f32 (stored f32, as llm-compressor's FP8 schemes and torch float8
 *          per-channel scaling keep it); x / scale is rounded to the nearest fp8
 *          value, ties to even, saturating to ±max (the clamp those tools apply
 *          before the cast); x' = fp8 value * scale.
 *   nf4    the 16 NormalFloat levels of QLoRA (bitsandbytes' NF4 table);
 *          absmax per block (default 64) stored f32; x * (1 / absmax) goes to
 *          the nearest level, ties to the lower one (bitsandbytes compares
 *          against the midpoints with ">"); x' = level * absmax.
 * "round" is round-half-to-even (rintf in the default rounding mode, which
 * qtune never changes), as torch.round. A group whose scale is 0 (all zeros,
 * or a range too small for an f16 scale) gives zeros. Non-finite inputs are
 * left out of the range; Inf saturates, NaN gives some finite grid value (int,
 * uint, nf4) or NaN (fp8); nothing divides by zero or converts a NaN to int.
 *
 * With an imatrix (n_per_row importances, Σx² per column), each group tries the
 * range [lo, hi] scaled by f = 1 - 0.01 k for k = -4 .. 20 (k = 0 first: plain
 * absmax / min-max) and keeps the one with the least Σ imatrix[c] (x' - x)²;
 * ties keep the earlier, so the result is never worse in that weighted error
 * than the plain one. This is the clipping search llama.cpp's quantizers do in
 * spirit (make_qx_quants tries scales around the absmax one), weighted by the
 * importance alone. Q_GROUP_TENSOR has one scale for the whole tensor across
 * calls, so it is never searched.
 */
#include "q_grid.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#include "q_dtype.h"

/* ---- fp8 ---- */

typedef struct gr_fp8 {
    int mbits;        /* mantissa bits */
    int bias;         /* exponent bias */
    bool ieee;        /* top exponent is inf/NaN (E5M2); else only S.1111.111 is NaN */
    float max;        /* largest finite value */
    uint8_t max_code; /* its code */
} gr_fp8;

static const gr_fp8 gr_e4m3 = {3, 7, false, 448.0f, 0x7e};
static const gr_fp8 gr_e5m2 = {2, 15, true, 57344.0f, 0x7b};

/* Nearest fp8 code of v, ties to even, saturating to ±max; NaN gives a NaN code. */
static uint8_t gr_fp8_encode(const gr_fp8 *f, float v)
{
    uint8_t sign = signbit(v) ? 0x80u : 0u;
    float a = fabsf(v);
    if (isnan(a))
        return (uint8_t)(sign | 0x7fu);
    if (a >= f->max)
        return (uint8_t)(sign | f->max_code);
    if (a == 0.0f)
        return sign;
    int e;
    (void)frexpf(a, &e); /* a = m 2^e, m in [0.5, 1) */
    int ex = e - 1;      /* floor(log2 a) */
    int emin = 1 - f->bias;
    if (ex < emin)
        ex = emin; /* subnormal range: fixed quantum 2^(emin - mbits) */
    /* In units of the quantum: exact (a power-of-two scaling), < 2^(mbits+1). */
    float n = rintf(ldexpf(a, f->mbits - ex));
    int one = 1 << f->mbits;
    int r = (int)n;
    if (r == 2 * one) { /* rounded up into the next binade */
        ex++;
        r = one;
    }
    if (r < one) /* subnormal or zero (ex == emin) */
        return (uint8_t)(sign | r);
    /* a < max, and max is representable, so the rounding never passes it. */
    return (uint8_t)(sign | ((ex + f->bias) << f->mbits) | (r - one));
}

static float gr_fp8_decode(const gr_fp8 *f, uint8_t c)
{
    int emask = (1 << (7 - f->mbits)) - 1;
    int mmask = (1 << f->mbits) - 1;
    int bexp = (c >> f->mbits) & emask;
    int man = c & mmask;
    float v;
    if (f->ieee && bexp == emask)
        v = man ? NAN : INFINITY;
    else if (!f->ieee && bexp == emask && man == mmask)
        v = NAN;
    else if (bexp == 0)
        v = ldexpf((float)man, 1 - f->bias - f->mbits);
    else
        v = ldexpf((float)(man + mmask + 1), bexp - f->bias - f->mbits);
    return (c & 0x80u) ? -v : v;
}

/* ---- nf4 ---- */

/* bitsandbytes' NF4 code book (float values of its constants). */
static const float gr_nf4_levels[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

/* Midpoints between neighbouring levels (computed in double, then to float). */
static const float gr_nf4_mids[15] = {
    -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,
    -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
    -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
    0.2035212516784668f,   0.2920137718319893f,   0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f,
};

static inline float gr_nf4_round(float n)
{
    int i = 0;
    for (int k = 0; k < 15; k++)
        i += n > gr_nf4_mids[k];
    return gr_nf4_levels[i];
}

/* ---- grids ---- */

typedef struct gr_fmt {
    q_format_id id;
    float qlo, qhi;    /* integer code range (int, uint) */
    float half;        /* int: (2^N - 1) / 2 */
    const gr_fp8 *fp8; /* fp8 formats */
} gr_fmt;

typedef struct gr_par {
    float s;   /* scale (0: the group quantizes to zeros) */
    float z;   /* uint zero point */
    float inv; /* nf4: 1 / absmax */
} gr_par;

/* A scale as stored in f16: rounded to nearest even, finite. */
static float gr_f16_scale(float s)
{
    if (!(s <= 65504.0f))
        s = 65504.0f;
    return q_f16_to_f32(q_f32_to_f16(s));
}

static gr_par gr_params(const gr_fmt *f, float lo, float hi)
{
    gr_par p = {0.0f, 0.0f, 0.0f};
    lo = fminf(lo, 0.0f);
    hi = fmaxf(hi, 0.0f);
    float amax = fmaxf(-lo, hi);
    switch (f->id) {
    case Q_FMT_INT:
        p.s = gr_f16_scale(amax / f->half);
        break;
    case Q_FMT_UINT:
        p.s = gr_f16_scale((hi - lo) / f->qhi);
        if (p.s > 0.0f)
            p.z = fminf(fmaxf(rintf(-lo / p.s), 0.0f), f->qhi);
        break;
    case Q_FMT_FP8_E4M3:
    case Q_FMT_FP8_E5M2:
        p.s = amax / f->fp8->max;
        if (!(p.s <= 3.0e38f))
            p.s = 0.0f; /* infinite range: nothing sensible; zeros */
        break;
    case Q_FMT_NF4:
        p.s = amax;
        if (!(p.s <= 3.0e38f))
            p.s = 0.0f;
        if (p.s > 0.0f)
            p.inv = 1.0f / p.s;
        break;
    default:
        break;
    }
    return p;
}

/* Fake-quantizes x[0..n) with parameters p into y (if not NULL); returns the
 * weighted squared error Σ w[i] (x' - x)² when w is given, else 0. */
static double gr_apply(const gr_fmt *f, const gr_par *p, const float *x, float *y, int64_t n,
                       const float *w)
{
    double err = 0.0;
    const float s = p->s;
    for (int64_t i = 0; i < n; i++) {
        float v = 0.0f;
        if (s > 0.0f) {
            switch (f->id) {
            case Q_FMT_INT: {
                float q = fminf(fmaxf(rintf(x[i] / s), f->qlo), f->qhi);
                v = q * s;
                break;
            }
            case Q_FMT_UINT: {
                float q = fminf(fmaxf(rintf(x[i] / s) + p->z, 0.0f), f->qhi);
                v = (q - p->z) * s;
                break;
            }
            case Q_FMT_FP8_E4M3:
            case Q_FMT_FP8_E5M2:
                v = gr_fp8_decode(f->fp8, gr_fp8_encode(f->fp8, x[i] / s)) * s;
                break;
            case Q_FMT_NF4:
                v = gr_nf4_round(x[i] * p->inv) * s;
                break;
            default:
                v = x[i];
                break;
            }
        }
        if (y)
            y[i] = v;
        if (w) {
            double d = (double)v - (double)x[i];
            err += (double)w[i] * d * d;
        }
    }
    return err;
}

/* Min and max of the finite values of x[0..n); both 0 when there are none. */
static void gr_range(const float *x, int64_t n, float *lo, float *hi)
{
    float a = INFINITY, b = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (isfinite(x[i])) {
            a = fminf(a, x[i]);
            b = fmaxf(b, x[i]);
        }
    }
    if (a > b)
        a = b = 0.0f;
    *lo = a;
    *hi = b;
}

/* One group: plain range, or the importance-weighted search when w is given. */
static void gr_group(const gr_fmt *f, const float *x, float *y, int64_t n, const float *w)
{
    float lo, hi;
    gr_range(x, n, &lo, &hi);
    gr_par best = gr_params(f, lo, hi);
    if (w) {
        double best_err = gr_apply(f, &best, x, NULL, n, w);
        for (int k = -4; k <= 20 && best_err > 0.0; k++) {
            if (k == 0)
                continue;
            float fac = 1.0f - 0.01f * (float)k;
            gr_par p = gr_params(f, lo * fac, hi * fac);
            double e = gr_apply(f, &p, x, NULL, n, w);
            if (e < best_err) {
                best_err = e;
                best = p;
            }
        }
    }
    gr_apply(f, &best, x, y, n, NULL);
}

void q_grid_fakequant(const q_fmt_spec *spec, const float *src, float *dst, int64_t nrows,
                      int64_t n_per_row, const float *imatrix, const q_fq_ctx *ctx)
{
    if (!spec || !src || !dst || nrows <= 0 || n_per_row <= 0)
        return;
    gr_fmt f = {spec->id, 0.0f, 0.0f, 0.0f, NULL};
    int bits = spec->bits < 2 ? 2 : spec->bits > 8 ? 8 : spec->bits; /* valid specs: as is */
    switch (spec->id) {
    case Q_FMT_INT:
        f.qlo = -(float)(1 << (bits - 1));
        f.qhi = (float)((1 << (bits - 1)) - 1);
        f.half = (float)((1 << bits) - 1) / 2.0f;
        break;
    case Q_FMT_UINT:
        f.qhi = (float)((1 << bits) - 1);
        break;
    case Q_FMT_FP8_E4M3:
        f.fp8 = &gr_e4m3;
        break;
    case Q_FMT_FP8_E5M2:
        f.fp8 = &gr_e5m2;
        break;
    case Q_FMT_NF4:
        break;
    default: /* not a grid format: leave the values as they are */
        for (int64_t i = 0; i < nrows * n_per_row; i++)
            dst[i] = src[i];
        return;
    }

    if (spec->group == Q_GROUP_TENSOR || spec->group < 0) {
        float lo, hi;
        if (ctx && ctx->ready) {
            lo = ctx->lo;
            hi = ctx->hi;
        } else {
            gr_range(src, nrows * n_per_row, &lo, &hi); /* these rows are the tensor */
        }
        gr_par p = gr_params(&f, lo, hi);
        gr_apply(&f, &p, src, dst, nrows * n_per_row, NULL);
        return;
    }

    int64_t g = spec->group > 0 ? spec->group : n_per_row;
    for (int64_t r = 0; r < nrows; r++) {
        const float *x = src + r * n_per_row;
        float *y = dst + r * n_per_row;
        for (int64_t c = 0; c < n_per_row; c += g) {
            int64_t len = n_per_row - c < g ? n_per_row - c : g;
            gr_group(&f, x + c, y + c, len, imatrix ? imatrix + c : NULL);
        }
    }
}
