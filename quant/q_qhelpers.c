/* q_qhelpers.c — helpers shared by ggml's quantizers (see q_qhelpers.h),
 * written from ggml-quants.c's make_qx_quants, make_qkx2/qkx3_quants,
 * make_qp_quants and the Q3_K/Q4_K/Q5_K scale packing.
 *
 * Byte identity is a property of the float arithmetic: each sum accumulates
 * in ggml's order and each product groups as ggml's C expression groups it
 * (`w*l*l` is (w*l)*l). No reassociation, no fmaf, no -ffast-math, no FMA
 * contraction (the pragmas below forbid it).
 */
#include "q_qhelpers.h"

/* No a*b+c contraction into FMA, whatever the build mode: clang contracts
 * within an expression by default where the target has FMA, gcc in GNU C mode
 * (-std=gnu11) across statements; gcc ignores the STDC pragma. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

float q_qh_make_qx(int n, int nmax, const float *x, int8_t *L, const float *qw)
{
    float amax;
    float max = q_qh_absmax(n, x, &amax);
    if (amax < Q_QH_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = q_qh_nearest_int(iscale * x[i]);
        l = q_qh_imax(-nmax, q_qh_imin(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = qw ? qw[i] : x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = 0;
        suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = q_qh_nearest_int(iscale * x[i]);
            l = q_qh_imax(-nmax, q_qh_imin(nmax - 1, l));
            float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = q_qh_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + q_qh_imax(-nmax, q_qh_imin(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

float q_qh_make_qkx(int n, int nmax, const float *x, const float *weights, uint8_t *L,
                    float *the_min, float rmin, float rdelta, int nstep, bool use_mad,
                    bool clamp_first)
{
    uint8_t Laux[32];
    float min = x[0];
    float max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0)
        min = 0;
    if (max <= min) {
        memset(L, 0, (size_t)n);
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = q_qh_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)q_qh_imax(0, q_qh_imin(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            /* min moves to the best fit so far, so v may be huge, inf or NaN */
            float v = iscale * (x[i] - min);
            int l;
            if (clamp_first)
                l = v > 0 ? q_qh_nearest_int(v < (float)nmax ? v : (float)nmax) : 0;
            else
                l = q_qh_imax(0, q_qh_imin(nmax, q_qh_nearest_int(v)));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                err += weights[i] * diff;
            }
            if (err < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

float q_qh_make_qp(int n, int nmax, const float *x, uint8_t *L, const float *qw)
{
    float max = 0;
    for (int i = 0; i < n; ++i)
        max = max > x[i] ? max : x[i];
    if (max < Q_QH_GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = nmax / max;
    for (int i = 0; i < n; ++i)
        L[i] = (uint8_t)q_qh_nearest_int(iscale * x[i]);
    float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        float diff = x[i] - scale * L[i];
        best_mse += qw[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0)
            continue;
        float iscale_is = (0.1f * is + nmax) / max;
        float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = q_qh_imin(nmax, q_qh_nearest_int(iscale_is * x[i]));
            float diff = x[i] - scale_is * l;
            mse += qw[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0;
    float suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = q_qh_imin(nmax, q_qh_nearest_int(iscale * x[i]));
        L[i] = (uint8_t)l;
        float w = qw[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int pass = 0; pass < 5; ++pass) {
        int changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = qw[i];
            float slx = sumlx - w * x[i] * L[i];
            float sl2 = suml2 - w * L[i] * L[i];
            if (slx > 0 && sl2 > 0) {
                int nl = q_qh_imin(nmax, q_qh_nearest_int(x[i] * sl2 / slx));
                if (nl != L[i]) {
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (uint8_t)nl;
                        sumlx = slx;
                        suml2 = sl2;
                        ++changed;
                    }
                }
            }
        }
        if (!changed)
            break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

float q_qh_sumsq(const float *x)
{
    float s = 0;
    for (int j = 0; j < QK_K; ++j)
        s += x[j] * x[j];
    return s;
}

void q_qh_k4_put(uint8_t *q, int j, uint8_t ls, uint8_t lm)
{
    if (j < 4) {
        q[j] = ls;
        q[j + 4] = lm;
    } else {
        q[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
        q[j - 4] |= (uint8_t)((ls >> 4) << 6);
        q[j] |= (uint8_t)((lm >> 4) << 6);
    }
}

void q_qh_k4_get(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void q_qh_q3_put(uint8_t *scales, int j, int l)
{
    if (j < 8)
        scales[j] = (uint8_t)(l & 0xF);
    else
        scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
    l >>= 4;
    scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
}

int q_qh_q3_get(const uint8_t *scales, int j)
{
    int8_t sc = (int8_t)(j < 8 ? scales[j] & 0xF : scales[j - 8] >> 4);
    sc = (int8_t)((sc | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
    return sc;
}

void q_qh_q2_put(const uint8_t *Ls, const uint8_t *Lm, float dm, float mm, block_q2_K *b)
{
    b->d = q_qh_f16(dm);
    b->dmin = q_qh_f16(mm);
    for (int j = 0; j < QK_K / 16; ++j)
        b->scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
}

void q_qh_q2_tail(const float *scales, const float *mins, const float *sw, block_q2_K *b)
{
    if (sw) {
        uint8_t Ls[QK_K / 16], Lm[QK_K / 16];
        const float dm = q_qh_make_qp(QK_K / 16, 15, scales, Ls, sw);
        const float mm = q_qh_make_qp(QK_K / 16, 15, mins, Lm, sw);
        q_qh_q2_put(Ls, Lm, dm, mm, b);
        return;
    }
    const float q4scale = 15.f;
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    if (max_scale > 0) {
        float iscale = q4scale / max_scale;
        for (int j = 0; j < QK_K / 16; ++j)
            b->scales[j] = (uint8_t)q_qh_nearest_int(iscale * scales[j]);
        b->d = q_qh_f16(max_scale / q4scale);
    } else {
        memset(b->scales, 0, sizeof b->scales);
        b->d = q_qh_f16(0.f);
    }
    if (max_min > 0) {
        float iscale = q4scale / max_min;
        for (int j = 0; j < QK_K / 16; ++j) {
            int l = q_qh_nearest_int(iscale * mins[j]);
            b->scales[j] |= (uint8_t)((unsigned)l << 4);
        }
        b->dmin = q_qh_f16(max_min / q4scale);
    } else {
        b->dmin = q_qh_f16(0.f);
    }
}

void q_qh_q3_put_all(const int8_t *Ls, float d_block, block_q3_K *b)
{
    for (int j = 0; j < QK_K / 16; ++j)
        q_qh_q3_put(b->scales, j, Ls[j]);
    b->d = q_qh_f16(d_block);
}

void q_qh_q3_tail(const float *scales, const float *sw, block_q3_K *b)
{
    if (sw) {
        int8_t Ls[QK_K / 16];
        const float d_block = q_qh_make_qx(QK_K / 16, 32, scales, Ls, sw);
        q_qh_q3_put_all(Ls, d_block, b);
        return;
    }
    float max_scale = 0;
    float amax = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
        float scale = fabsf(scales[j]);
        if (scale > amax) {
            amax = scale;
            max_scale = scales[j];
        }
    }
    if (max_scale) {
        float iscale = -32.f / max_scale;
        for (int j = 0; j < QK_K / 16; ++j) {
            int8_t l = (int8_t)q_qh_nearest_int(iscale * scales[j]);
            l = (int8_t)(q_qh_imax(-32, q_qh_imin(31, l)) + 32);
            q_qh_q3_put(b->scales, j, l);
        }
        b->d = q_qh_f16(1 / iscale);
    } else {
        b->d = q_qh_f16(0.f);
    }
}

bool q_qh_q6_scales(const float *scales, block_q6_K *b)
{
    float max_abs_scale;
    float max_scale = q_qh_absmax(QK_K / 16, scales, &max_abs_scale);
    if (max_abs_scale < Q_QH_GROUP_MAX_EPS) {
        memset(b, 0, sizeof *b);
        b->d = q_qh_f16(0.f);
        return false;
    }
    float iscale = -128.f / max_scale;
    b->d = q_qh_f16(1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib)
        b->scales[ib] = (int8_t)q_qh_imin(127, q_qh_nearest_int(iscale * scales[ib]));
    return true;
}

void q_qh_k45_tail(int nmax, const float *scales, const float *mins, const float *sw,
                   uint16_t *d, uint16_t *dmin, uint8_t *packed)
{
    memset(packed, 0, K_SCALE_SIZE);
    if (!sw) {
        float max_scale = 0;
        float max_min = 0;
        for (int j = 0; j < QK_K / 32; ++j) {
            if (scales[j] > max_scale)
                max_scale = scales[j];
            if (mins[j] > max_min)
                max_min = mins[j];
        }
        float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < QK_K / 32; ++j) {
            uint8_t ls = (uint8_t)q_qh_nearest_int(inv_scale * scales[j]);
            uint8_t lm = (uint8_t)q_qh_nearest_int(inv_min * mins[j]);
            ls = (uint8_t)q_qh_imin(63, ls);
            lm = (uint8_t)q_qh_imin(63, lm);
            q_qh_k4_put(packed, j, ls, lm);
        }
        *d = q_qh_f16(max_scale / 63.f);
        *dmin = q_qh_f16(max_min / 63.f);
        return;
    }
    uint8_t Ls[QK_K / 32], Lm[QK_K / 32];
    const float d_block = q_qh_make_qp(QK_K / 32, 63, scales, Ls, sw);
    const float m_block = q_qh_make_qp(QK_K / 32, 63, mins, Lm, sw);
    q_qh_k45_put(nmax, Ls, Lm, d_block, m_block, d, dmin, packed);
}

void q_qh_k45_put(int nmax, const uint8_t *Ls, const uint8_t *Lm, float d_block, float m_block,
                  uint16_t *d, uint16_t *dmin, uint8_t *packed)
{
    memset(packed, 0, K_SCALE_SIZE);
    for (int j = 0; j < QK_K / 32; ++j) {
        uint8_t ls = Ls[j];
        uint8_t lm = Lm[j];
        if (nmax == 31) { /* ggml clamps here for Q5_K only */
            ls = (uint8_t)q_qh_imin(63, ls);
            lm = (uint8_t)q_qh_imin(63, lm);
        }
        q_qh_k4_put(packed, j, ls, lm);
    }
    *d = q_qh_f16(d_block);
    *dmin = q_qh_f16(m_block);
}
