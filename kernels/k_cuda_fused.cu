/* k_cuda_fused.cu — CUDA twin of the fused preview kernels (see k_cuda_fused.h).
 *
 * Layout of the work: a row of cols values is cut into units (a 32-value ggml
 * block, a k-quant super-block of 256, a group of G <= 256 values, or 256
 * values of a longer group: a channel, G > 256, the tensor, whose ranges
 * kf_grange and kf_range find first); each thread quantizes, dequantizes and
 * accumulates whole units, reading the source twice (range, then values). A
 * block of KF_THREADS threads reduces its sums in a fixed tree and writes one
 * partial; its histogram is counted with integer atomics in shared memory,
 * then added into the call's by global integer atomics (exact, order free).
 * kf_final then adds the partial sums in a fixed order in one block. The
 * grid depends only on the shape and format: results are deterministic.
 *
 * Exactness: every float operation of the references is written with an
 * explicit round-to-nearest operation (M, A, S, Dv, and DA, DM... for the
 * metric sums: on the device __fmul_rn, __fadd_rn, __fdiv_rn, __dadd_rn...,
 * which nvcc never contracts into an FMA, whatever -fmad says). rintf is
 * round-half-even, roundf half away from zero, as in C. f32 -> f16 is
 * __float2half_rn (nearest even, like q_f32_to_f16). No atomics on doubles.
 *
 * Emulation (k_cuda_fused_emulate): everything below the launches is
 * __host__ __device__, and kf_emu_run runs the same grids on the host, block
 * after block and thread after thread, with the device's trees (kf_emu_tree
 * walks kf_block_tree's levels), so tests check this code without a GPU.
 */
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "k_cuda.h"
#include "k_cuda_fused.h"

namespace {

constexpr int KF_THREADS = 128; /* threads per block (a power of two) */
constexpr int KF_BINS = Q_ERR_HIST_BINS;
constexpr int KF_KEEP = 4;      /* tensors k_cuda_keep holds at most */
constexpr long long KF_TENSOR_UNIT = 256;
constexpr int KF_RBLOCKS = 256; /* blocks of kf_range */

enum kf_kind { KF_Q8_0, KF_Q4_0, KF_Q4_K, KF_Q6_K, KF_INT, KF_UINT, KF_FP8, KF_NF4, KF_NONE };

/* Sums of one block or of the whole call. */
struct kf_sums {
    double w2, q2, wq, e2, iwe2, iww2, maxabs;
    double nbad; /* NaN/Inf source values (replaced by 0): an exact count below 2^53 */
};

/* What a kernel needs; passed by value. */
struct kf_job {
    const void *src;   /* device: rows × cols values of the source type */
    long long rows, cols;
    const float *iw;   /* device: cols weights or NULL */
    int kind;
    long long ulen;    /* unit length along a row */
    long long upr;     /* units per row */
    float qlo, qhi, half; /* int / uint code range; int (2^N - 1) / 2 */
    int mbits, emin;   /* fp8 */
    float fmax;        /* fp8 largest finite value */
    bool tensor;       /* one scale for the tensor: range tlo..thi */
    float tlo, thi;
    /* grid groups longer than a unit (channel, or G > KF_TENSOR_UNIT): each
     * group's range from kf_grange in granges, the group cut into upg units
     * of ulen values (upr = gpr · upg); else granges is NULL and a unit is a
     * group, its range found by its thread */
    const float2 *granges; /* device: rows × gpr (min, max) */
    long long glen, gpr, upg;
    double range;      /* histogram range (0: none) */
    double hscale;     /* KF_BINS / (2 range), rounded: an approximate bin (kf_bin) */
    kf_sums *parts;    /* device: one per block */
    unsigned long long *hist;   /* device: KF_BINS counts, zeroed before kf_main */
};

/* The kernels' code is __host__ __device__ (KF_HD) from here to the kernels:
 * the same source runs on the device and, one simulated thread at a time, on
 * the host (k_cuda_fused_emulate). Every rounding is explicit: on the device
 * the round-to-nearest intrinsics, which nvcc never contracts into an FMA; on
 * the host the IEEE operations of nvcc's host compiler (x86-64 SSE; the rule
 * passes -ffp-contract=off). M = a*b, A = a+b, S = a-b, Dv = a/b in float,
 * DA, DS, DM, DDv in double. */
#define KF_HD __host__ __device__
#ifdef __CUDA_ARCH__
#define KF_ON(dev, host) (dev)
#else
#define KF_ON(dev, host) (host)
#endif

KF_HD __forceinline__ float M(float a, float b)
{
    return KF_ON(__fmul_rn(a, b), a * b);
}
KF_HD __forceinline__ float A(float a, float b)
{
    return KF_ON(__fadd_rn(a, b), a + b);
}
KF_HD __forceinline__ float S(float a, float b)
{
    return KF_ON(__fsub_rn(a, b), a - b);
}
KF_HD __forceinline__ float Dv(float a, float b)
{
    return KF_ON(__fdiv_rn(a, b), a / b);
}
KF_HD __forceinline__ float kf_sqrt(float a)
{
    return KF_ON(__fsqrt_rn(a), sqrtf(a));
}
KF_HD __forceinline__ double DA(double a, double b)
{
    return KF_ON(__dadd_rn(a, b), a + b);
}
KF_HD __forceinline__ double DS(double a, double b)
{
    return KF_ON(__dsub_rn(a, b), a - b);
}
KF_HD __forceinline__ double DM(double a, double b)
{
    return KF_ON(__dmul_rn(a, b), a * b);
}
KF_HD __forceinline__ double DDv(double a, double b)
{
    return KF_ON(__ddiv_rn(a, b), a / b);
}

/* The bits of a float and back (memcpy: a register move on the device). */
template <typename To, typename From> KF_HD __forceinline__ To kf_bitcast(From v)
{
    static_assert(sizeof(To) == sizeof(From), "kf_bitcast: sizes differ");
    To t;
    memcpy(&t, &v, sizeof t);
    return t;
}
KF_HD __forceinline__ unsigned kf_f2u(float f)
{
    return kf_bitcast<unsigned>(f);
}
KF_HD __forceinline__ int kf_f2i(float f)
{
    return kf_bitcast<int>(f);
}
KF_HD __forceinline__ float kf_u2f(unsigned u)
{
    return kf_bitcast<float>(u);
}

/* A block's histogram counts: 32-bit (shared-memory atomics on 32 bits are
 * native; a block sees at most KF_THREADS units of at most 256 values). */
typedef unsigned kf_bcount;
static_assert((unsigned long long)KF_THREADS * KF_TENSOR_UNIT < (1ull << 32),
              "a block's histogram counts overflow 32 bits");

/* One more value in histogram bin *h: shared memory, shared by the block's
 * threads on the device; the simulated block's own array on the host. */
KF_HD __forceinline__ void kf_count(kf_bcount *h)
{
#ifdef __CUDA_ARCH__
    atomicAdd(h, 1u);
#else
    ++*h;
#endif
}

#define KF_NF4_LEVELS                                                                           \
    {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,                  \
     -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,                 \
     0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,    \
     0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f}
#define KF_NF4_MIDS                                                                             \
    {-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,                          \
     -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,                       \
     -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,                         \
     0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,                             \
     0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f}
__constant__ float kf_nf4_levels_d[16] = KF_NF4_LEVELS;
__constant__ float kf_nf4_mids_d[15] = KF_NF4_MIDS;
#ifndef __CUDA_ARCH__ /* the host's copies (the device pass would not use them) */
const float kf_nf4_levels_h[16] = KF_NF4_LEVELS;
const float kf_nf4_mids_h[15] = KF_NF4_MIDS;
#endif

/* nf4 level i and the midpoint between levels k and k + 1. */
KF_HD __forceinline__ float kf_nf4_level(int i)
{
    return KF_ON(kf_nf4_levels_d[i], kf_nf4_levels_h[i]);
}
KF_HD __forceinline__ float kf_nf4_mid(int k)
{
    return KF_ON(kf_nf4_mids_d[k], kf_nf4_mids_h[k]);
}

/* Element i of the source as stored. */
template <int T> KF_HD __forceinline__ float kf_ld_raw(const void *src, long long i)
{
    if constexpr (T == K_SRC_F32)
        return static_cast<const float *>(src)[i];
    else if constexpr (T == K_SRC_F16)
        return __half2float(__ushort_as_half(static_cast<const unsigned short *>(src)[i]));
    else
        return __bfloat162float(
            __ushort_as_bfloat16(static_cast<const unsigned short *>(src)[i]));
}

/* Element i of the source, non-finite values replaced by 0. */
template <int T> KF_HD __forceinline__ float kf_ld(const void *src, long long i)
{
    const float x = kf_ld_raw<T>(src, i);
    return isfinite(x) ? x : 0.0f;
}

/* 16 bytes at p (16-byte aligned) as four 32-bit words: one 128-bit load on
 * the device. */
KF_HD __forceinline__ uint4 kf_ld16(const void *p)
{
#ifdef __CUDA_ARCH__
    return *static_cast<const uint4 *>(p);
#else
    uint4 w;
    memcpy(&w, p, sizeof w);
    return w;
#endif
}

/* The two 16-bit source values in word w (little-endian: the low half first). */
template <int T> KF_HD __forceinline__ void kf_half2(unsigned w, float *v)
{
    const unsigned short lo = (unsigned short)(w & 0xffffu), hi = (unsigned short)(w >> 16);
    if constexpr (T == K_SRC_F16) {
        v[0] = __half2float(__ushort_as_half(lo));
        v[1] = __half2float(__ushort_as_half(hi));
    } else {
        v[0] = __bfloat162float(__ushort_as_bfloat16(lo));
        v[1] = __bfloat162float(__ushort_as_bfloat16(hi));
    }
}

/* Elements i .. i + m - 1 (m <= 8) of the source into v[0..m-1] as stored
 * (v[m..7] = 0). A thread's unit is contiguous, so per-element loads would
 * touch 32 cache lines for each value of a warp: eight values come in 128-bit
 * loads (two for f32, one for f16/bf16) where the eight are whole and 16-byte
 * aligned, which they are from any unit start of a row of a multiple of 8
 * values (32 bytes for f32). Constant indices only: v stays in registers. */
template <int T> KF_HD __forceinline__ void kf_ld8(const void *src, long long i, int m, float v[8])
{
    constexpr long long esz = T == K_SRC_F32 ? 4 : 2;
    const char *p = static_cast<const char *>(src) + i * esz;
    if (m == 8 && ((uintptr_t)p & 15u) == 0) {
        if constexpr (T == K_SRC_F32) {
            const uint4 a = kf_ld16(p), b = kf_ld16(p + 16);
            const unsigned w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
            for (int q = 0; q < 8; q++)
                v[q] = kf_u2f(w[q]);
        } else {
            const uint4 a = kf_ld16(p);
            kf_half2<T>(a.x, v);
            kf_half2<T>(a.y, v + 2);
            kf_half2<T>(a.z, v + 4);
            kf_half2<T>(a.w, v + 6);
        }
        return;
    }
#pragma unroll
    for (int q = 0; q < 8; q++)
        v[q] = q < m ? kf_ld_raw<T>(src, i + q) : 0.0f;
}

/* v[0..m-1] with NaN and Inf replaced by 0, counted in *bad when bad is not
 * NULL (each source value is counted once, in its unit's last pass). */
KF_HD __forceinline__ void kf_scrub8(float v[8], int m, double *bad)
{
#pragma unroll
    for (int q = 0; q < 8; q++) {
        if (q < m && !isfinite(v[q])) {
            v[q] = 0.0f;
            if (bad)
                *bad += 1.0;
        }
    }
}

/* fn(i, x) for i = 0 .. len - 1 in order, x element base + i of the source
 * scrubbed by kf_scrub8 (bad as there), read eight at a time by kf_ld8. */
template <int T, typename Fn>
KF_HD __forceinline__ void kf_each8(const void *src, long long base, long long len, double *bad,
                                    Fn fn)
{
    for (long long k = 0; k < len; k += 8) {
        const int m = len - k < 8 ? (int)(len - k) : 8;
        float v[8];
        kf_ld8<T>(src, base + k, m, v);
        kf_scrub8(v, m, bad);
#pragma unroll
        for (int q = 0; q < 8; q++)
            if (q < m)
                fn(k + q, v[q]);
    }
}

/* x86 cvttss2si then "low byte as int8", as q_quants.c's qq_cvt_i8 models it. */
KF_HD __forceinline__ int kf_cvt_i8(float v)
{
    int t = (v >= -2147483648.0f && v < 2147483648.0f) ? (int)v : INT32_MIN;
    int lo = (int)((unsigned)t & 0xffu);
    return lo > 127 ? lo - 256 : lo;
}

KF_HD __forceinline__ float kf_f16_round(float s)
{
    return __half2float(__float2half_rn(s));
}

/* The histogram bin of an error e (not NaN) over [-range, range] (range >
 * 0): q_metrics_add's t = (e + range) / (2 range) · KF_BINS, cut to the bins,
 * without its division wherever a product by hscale shows t well inside a
 * bin. For u = e + range that product differs from t by a few units in the
 * last place of t < 64 (about 1e-14), so where it lies more than 1e-9 from
 * every integer in (0, 64) their integer parts agree; elsewhere (a bin edge,
 * e = 0 at t = 32, outside the bins, hscale overflowed or a subnormal
 * product) t itself decides. */
KF_HD __forceinline__ int kf_bin(double e, double range, double hscale)
{
    const double u = DA(e, range), ta = DM(u, hscale);
    const double margin = 1e-9;
    if (ta > margin && ta < (double)KF_BINS - margin) {
        const int b = (int)ta;
        const double f = DS(ta, (double)b);
        if (f > margin && f < 1.0 - margin)
            return b;
    }
    const double t = DM(DDv(u, DM(2.0, range)), (double)KF_BINS);
    return !(t >= 0.0) ? 0 : t >= (double)KF_BINS ? KF_BINS - 1 : (int)t;
}

/* Per-thread accumulation of one value pair, q_metrics_add's operations. */
KF_HD __forceinline__ void kf_acc(kf_sums &s, kf_bcount *hist, const kf_job &j, float x, float y,
                                  const float *iw, long long c)
{
    double xv = x, yv = y;
    double e = DS(yv, xv);
    double e2 = DM(e, e);
    s.w2 = DA(s.w2, DM(xv, xv));
    s.q2 = DA(s.q2, DM(yv, yv));
    s.wq = DA(s.wq, DM(xv, yv));
    s.e2 = DA(s.e2, e2);
    /* a NaN e (a block whose f16 scale overflowed: 0 · inf) makes max |e|
     * NaN for good and is binned nowhere, as in q_metrics_add */
    double ae = fabs(e);
    if (isnan(e))
        s.maxabs = NAN;
    else if (ae > s.maxabs)
        s.maxabs = ae;
    if (iw) {
        double v = iw[c];
        s.iwe2 = DA(s.iwe2, DM(DM(v, e), e));
        s.iww2 = DA(s.iww2, DM(DM(v, xv), xv));
    }
    if (j.range > 0.0 && !isnan(e))
        kf_count(&hist[kf_bin(e, j.range, j.hscale)]);
}

/* Group parameters (q_grid.c's gr_params). */
struct kf_gpar {
    float s, z, inv;
};

KF_HD kf_gpar kf_params(const kf_job &j, float lo, float hi)
{
    kf_gpar p = {0.0f, 0.0f, 0.0f};
    lo = fminf(lo, 0.0f);
    hi = fmaxf(hi, 0.0f);
    float amax = fmaxf(-lo, hi);
    if (j.kind == KF_INT) {
        float s = Dv(amax, j.half);
        p.s = kf_f16_round(s <= 65504.0f ? s : 65504.0f);
    } else if (j.kind == KF_UINT) {
        float s = Dv(S(hi, lo), j.qhi);
        p.s = kf_f16_round(s <= 65504.0f ? s : 65504.0f);
        if (p.s > 0.0f)
            p.z = fminf(fmaxf(rintf(Dv(-lo, p.s)), 0.0f), j.qhi);
    } else if (j.kind == KF_FP8) {
        p.s = Dv(amax, j.fmax);
        if (!(p.s <= 3.0e38f))
            p.s = 0.0f;
    } else {
        p.s = amax <= 3.0e38f ? amax : 0.0f;
        if (p.s > 0.0f)
            p.inv = Dv(1.0f, p.s);
    }
    return p;
}

/* One grid value (q_grid.c's gr_apply; fp8 through the power-of-two quantum,
 * which equals encoding and decoding the code). */
KF_HD float kf_grid_one(const kf_job &j, const kf_gpar &p, float x)
{
    if (!(p.s > 0.0f))
        return 0.0f;
    if (j.kind == KF_INT)
        return M(fminf(fmaxf(rintf(Dv(x, p.s)), j.qlo), j.qhi), p.s);
    if (j.kind == KF_UINT) {
        float q = fminf(fmaxf(A(rintf(Dv(x, p.s)), p.z), 0.0f), j.qhi);
        return M(S(q, p.z), p.s);
    }
    if (j.kind == KF_FP8) {
        float v = Dv(x, p.s), a = fabsf(v), r;
        if (a >= j.fmax) {
            r = j.fmax;
        } else {
            int ex = (int)(kf_f2u(a) >> 23) - 127;
            ex = ex < j.emin ? j.emin : ex;
            int k = j.mbits - ex; /* -13 <= k <= 16: 2^k and 2^-k are normal */
            float up = kf_u2f((unsigned)(k + 127) << 23);
            float dn = kf_u2f((unsigned)(127 - k) << 23);
            r = M(rintf(M(a, up)), dn);
        }
        return M(copysignf(r, v), p.s);
    }
    float t = M(x, p.inv);
    int i = 0;
    for (int k = 0; k < 15; k++)
        i += t > kf_nf4_mid(k);
    return M(kf_nf4_level(i), p.s);
}

/* ---- k-quants (reference paths of q_kquants.c / q_qhelpers.c, no imatrix) ----
 * Every float operation as the C source groups it, through M, A, S and Dv. */

/* ggml's nearest_int (q_qh_nearest_int). */
KF_HD __forceinline__ int kf_nearest(float f)
{
    int i = kf_f2i(A(f, 12582912.f));
    return (i & 0x007fffff) - 0x00400000;
}

KF_HD __forceinline__ int kf_imin(int a, int b)
{
    return a < b ? a : b;
}

KF_HD __forceinline__ int kf_imax(int a, int b)
{
    return a > b ? a : b;
}

/* q_qh_make_qkx with use_mad and clamp_first false. */
KF_HD float kf_make_qkx(int n, int nmax, const float *x, const float *w, unsigned char *L,
                        float *the_min, float rmin, float rdelta, int nstep)
{
    unsigned char Laux[32];
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = M(sum_w, x[0]);
    for (int i = 1; i < n; ++i) {
        if (x[i] < min)
            min = x[i];
        if (x[i] > max)
            max = x[i];
        sum_w = A(sum_w, w[i]);
        sum_x = A(sum_x, M(w[i], x[i]));
    }
    if (min > 0)
        min = 0;
    if (max <= min) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = Dv((float)nmax, S(max, min));
    float scale = Dv(1.0f, iscale);
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = kf_nearest(M(iscale, S(x[i], min)));
        L[i] = (unsigned char)kf_imax(0, kf_imin(nmax, l));
        float diff = S(A(M(scale, (float)L[i]), min), x[i]);
        diff = M(diff, diff);
        best_error = A(best_error, M(w[i], diff));
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = Dv(A(A(rmin, M(rdelta, (float)is)), (float)nmax), S(max, min));
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            float v = M(iscale, S(x[i], min));
            int l = kf_imax(0, kf_imin(nmax, kf_nearest(v)));
            Laux[i] = (unsigned char)l;
            float fl = (float)l;
            sum_l = A(sum_l, M(w[i], fl));
            sum_l2 = A(sum_l2, M(M(w[i], fl), fl));
            sum_xl = A(sum_xl, M(M(w[i], fl), x[i]));
        }
        float D = S(M(sum_w, sum_l2), M(sum_l, sum_l));
        if (D > 0) {
            float this_scale = Dv(S(M(sum_w, sum_xl), M(sum_x, sum_l)), D);
            float this_min = Dv(S(M(sum_l2, sum_x), M(sum_l, sum_xl)), D);
            if (this_min > 0) {
                this_min = 0;
                this_scale = Dv(sum_xl, sum_l2);
            }
            float err = 0;
            for (int i = 0; i < n; ++i) {
                float diff = S(A(M(this_scale, (float)Laux[i]), this_min), x[i]);
                diff = M(diff, diff);
                err = A(err, M(w[i], diff));
            }
            if (err < best_error) {
                for (int i = 0; i < n; ++i)
                    L[i] = Laux[i];
                best_error = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* q4_k super-block of 256 values: out(i, y[i]) for i = 0..255 in order, y =
 * dequant(quantize_row_q4_K_ref(x)) (no array of y: the thread's stack). */
template <typename Out> KF_HD void kf_q4_k(const float *x, Out out)
{
    unsigned char L[256];
    float weights[32], scales[8], mins[8];
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l)
            sum_x2 = A(sum_x2, M(x[32 * j + l], x[32 * j + l]));
        float av_x = kf_sqrt(Dv(sum_x2, 32.0f));
        for (int l = 0; l < 32; ++l)
            weights[l] = A(av_x, fabsf(x[32 * j + l]));
        scales[j] = kf_make_qkx(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], -1.f, 0.1f,
                                20);
    }
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        if (scales[j] > max_scale)
            max_scale = scales[j];
        if (mins[j] > max_min)
            max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? Dv(63.f, max_scale) : 0.f;
    float inv_min = max_min > 0 ? Dv(63.f, max_min) : 0.f;
    int ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
        ls[j] = kf_imin(63, (unsigned char)kf_nearest(M(inv_scale, scales[j])));
        lm[j] = kf_imin(63, (unsigned char)kf_nearest(M(inv_min, mins[j])));
    }
    const float dh = kf_f16_round(Dv(max_scale, 63.f));
    const float mh = kf_f16_round(Dv(max_min, 63.f));
    for (int j = 0; j < 8; ++j) {
        const float d = M(dh, (float)ls[j]);
        const float dm = M(mh, (float)lm[j]);
        if (d != 0.0f) {
            for (int ii = 0; ii < 32; ++ii) {
                int l = kf_nearest(Dv(A(x[32 * j + ii], dm), d));
                L[32 * j + ii] = (unsigned char)kf_imax(0, kf_imin(15, l));
            }
        }
        for (int ii = 0; ii < 32; ++ii)
            out(32 * j + ii, S(M(d, (float)(L[32 * j + ii] & 0x0f)), dm));
    }
}

/* q_qh_make_qx with qw NULL (weights x²). */
KF_HD float kf_make_qx(int n, int nmax, const float *x, signed char *L)
{
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < 1e-15f) {
        for (int i = 0; i < n; ++i)
            L[i] = 0;
        return 0.f;
    }
    float iscale = Dv((float)-nmax, max);
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = kf_nearest(M(iscale, x[i]));
        l = kf_imax(-nmax, kf_imin(nmax - 1, l));
        L[i] = (signed char)(l + nmax);
        float w = M(x[i], x[i]);
        sumlx = A(sumlx, M(M(w, x[i]), (float)l));
        suml2 = A(suml2, M(M(w, (float)l), (float)l));
    }
    float scale = suml2 != 0.0f ? Dv(sumlx, suml2) : 0.0f;
    float best = M(scale, sumlx);
    for (int is = -9; is <= 9; ++is) {
        if (is == 0)
            continue;
        iscale = Dv(-A((float)nmax, M(0.1f, (float)is)), max);
        sumlx = 0;
        suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = kf_nearest(M(iscale, x[i]));
            l = kf_imax(-nmax, kf_imin(nmax - 1, l));
            float w = M(x[i], x[i]);
            sumlx = A(sumlx, M(M(w, x[i]), (float)l));
            suml2 = A(suml2, M(M(w, (float)l), (float)l));
        }
        if (suml2 > 0 && M(sumlx, sumlx) > M(best, suml2)) {
            for (int i = 0; i < n; ++i) {
                int l = kf_nearest(M(iscale, x[i]));
                L[i] = (signed char)(nmax + kf_imax(-nmax, kf_imin(nmax - 1, l)));
            }
            scale = Dv(sumlx, suml2);
            best = M(scale, sumlx);
        }
    }
    return scale;
}

/* q6_k super-block of 256 values: out(i, y[i]) in order, y =
 * dequant(quantize_row_q6_K_ref(x)). */
template <typename Out> KF_HD void kf_q6_k(const float *x, Out out)
{
    signed char L[256];
    float scales[16];
    for (int ib = 0; ib < 16; ++ib)
        scales[ib] = kf_make_qx(16, 32, x + 16 * ib, L + 16 * ib);
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
        const float abs_scale = fabsf(scales[ib]);
        if (abs_scale > max_abs_scale) {
            max_abs_scale = abs_scale;
            max_scale = scales[ib];
        }
    }
    if (max_abs_scale < 1e-15f) {
        for (int i = 0; i < 256; ++i)
            out(i, 0.0f);
        return;
    }
    const float iscale = Dv(-128.f, max_scale);
    const float dall = kf_f16_round(Dv(1.0f, iscale));
    for (int j = 0; j < 16; ++j) {
        const signed char sc = (signed char)kf_imin(127, kf_nearest(M(iscale, scales[j])));
        const float d = M(dall, (float)sc);
        if (d != 0.0f) {
            for (int ii = 0; ii < 16; ++ii) {
                int l = kf_nearest(Dv(x[16 * j + ii], d));
                L[16 * j + ii] = (signed char)(kf_imax(-32, kf_imin(31, l)) + 32);
            }
        }
        for (int ii = 0; ii < 16; ++ii)
            out(16 * j + ii, M(d, (float)((L[16 * j + ii] & 0x3f) - 32)));
    }
}

/* Kinds of kf_unit's code, one instantiation of kf_main each: the k-quant
 * searches' 256-value arrays (a 2.4 KB stack frame, ~128 registers) then
 * weigh on their own kernel only, not on the 32-value formats' and grids'. */
enum kf_family { KF_FAM_BLOCK32, KF_FAM_KQUANT, KF_FAM_GRID };

KF_HD constexpr int kf_family_of(int kind)
{
    return kind == KF_Q8_0 || kind == KF_Q4_0   ? KF_FAM_BLOCK32
           : kind == KF_Q4_K || kind == KF_Q6_K ? KF_FAM_KQUANT
                                                : KF_FAM_GRID;
}

/* Unit u (0 <= u < rows × upr): quantize, dequantize, accumulate into s and
 * hist (a shared-memory histogram in kf_main); j.kind of family F. */
template <int T, int F>
KF_HD void kf_unit(const kf_job &j, long long u, kf_sums &s, kf_bcount *hist)
{
    const long long r = u / j.upr;
    long long c0, len, g = 0;
    if (j.granges) {
        const long long p = u % j.upr % j.upg, gs = p * j.ulen;
        g = u % j.upr / j.upg;
        c0 = g * j.glen + gs;
        len = j.glen - gs < j.ulen ? j.glen - gs : j.ulen;
        len = j.cols - c0 < len ? j.cols - c0 : len;
        if (len <= 0) /* past a short last group */
            return;
    } else {
        c0 = u % j.upr * j.ulen;
        len = j.cols - c0 < j.ulen ? j.cols - c0 : j.ulen;
    }
    const long long base = r * j.cols + c0;
    const float *iw = j.iw ? j.iw + c0 : nullptr;
    if constexpr (F == KF_FAM_BLOCK32) {
        float xv[32]; /* the block, scrubbed: registers (constant indices) */
#pragma unroll
        for (int c = 0; c < 32; c += 8) {
            kf_ld8<T>(j.src, base + c, 8, xv + c);
            kf_scrub8(xv + c, 8, &s.nbad);
        }
        if (j.kind == KF_Q8_0) {
            float amax = 0.0f;
#pragma unroll
            for (int k = 0; k < 32; k++) {
                float a = fabsf(xv[k]);
                amax = amax > a ? amax : a;
            }
            const float d = Dv(amax, 127.0f);
            const float id = d != 0.0f ? Dv(1.0f, d) : 0.0f;
            const float dh = kf_f16_round(d);
#pragma unroll
            for (int k = 0; k < 32; k++) {
                int l = kf_cvt_i8(roundf(M(xv[k], id)));
                kf_acc(s, hist, j, xv[k], M((float)l, dh), iw, k);
            }
        } else { /* q4_0 */
            float amax = 0.0f, max = 0.0f;
#pragma unroll
            for (int k = 0; k < 32; k++) {
                if (amax < fabsf(xv[k])) {
                    amax = fabsf(xv[k]);
                    max = xv[k];
                }
            }
            const float d = Dv(max, -8.0f);
            const float id = d != 0.0f ? Dv(1.0f, d) : 0.0f;
            const float dh = kf_f16_round(d);
#pragma unroll
            for (int k = 0; k < 32; k++) {
                int l = kf_cvt_i8(A(M(xv[k], id), 8.5f));
                l = (l < 15 ? l : 15) & 0x0f; /* the stored nibble */
                kf_acc(s, hist, j, xv[k], M((float)(l - 8), dh), iw, k);
            }
        }
    } else if constexpr (F == KF_FAM_KQUANT) {
        float x[256];
        for (int c = 0; c < 256; c += 8) {
            kf_ld8<T>(j.src, base + c, 8, x + c);
            kf_scrub8(x + c, 8, &s.nbad);
        }
        const auto acc = [&](int k, float y) { kf_acc(s, hist, j, x[k], y, iw, k); };
        if (j.kind == KF_Q4_K)
            kf_q4_k(x, acc);
        else
            kf_q6_k(x, acc);
    } else {
        /* read twice when the thread finds the group's range itself */
        float lo, hi;
        if (j.tensor) {
            lo = j.tlo;
            hi = j.thi;
        } else if (j.granges) {
            const float2 rg = j.granges[r * j.gpr + g];
            lo = rg.x;
            hi = rg.y;
        } else {
            lo = INFINITY;
            hi = -INFINITY;
            kf_each8<T>(j.src, base, len, nullptr, [&](long long, float x) {
                lo = fminf(lo, x);
                hi = fmaxf(hi, x);
            });
            if (lo > hi)
                lo = hi = 0.0f;
        }
        const kf_gpar p = kf_params(j, lo, hi);
        kf_each8<T>(j.src, base, len, &s.nbad, [&](long long k, float x) {
            kf_acc(s, hist, j, x, kf_grid_one(j, p, x), iw, k);
        });
    }
}

/* Sums b into a: one step of every fixed-order reduction of kf_sums. */
struct kf_add_sums {
    KF_HD void operator()(kf_sums &a, const kf_sums &b) const
    {
        a.w2 = DA(a.w2, b.w2);
        a.q2 = DA(a.q2, b.q2);
        a.wq = DA(a.wq, b.wq);
        a.e2 = DA(a.e2, b.e2);
        a.iwe2 = DA(a.iwe2, b.iwe2);
        a.iww2 = DA(a.iww2, b.iww2);
        a.nbad += b.nbad;
        a.maxabs = isnan(b.maxabs) || b.maxabs > a.maxabs ? b.maxabs : a.maxabs;
    }
};

/* Widens the range a = (min, max) by b. */
struct kf_add_range {
    KF_HD void operator()(float2 &a, const float2 &b) const
    {
        a.x = fminf(a.x, b.x);
        a.y = fmaxf(a.y, b.y);
    }
};

/* The (min, max) of the finite values src[first], src[first + stride], ...
 * before end: one thread's part of kf_range and kf_grange. */
template <int T>
KF_HD float2 kf_range_part(const void *src, long long first, long long end, long long stride)
{
    float2 m = make_float2(INFINITY, -INFINITY);
    for (long long i = first; i < end; i += stride) {
        const float x = kf_ld<T>(src, i);
        m.x = fminf(m.x, x);
        m.y = fmaxf(m.y, x);
    }
    return m;
}

/* Thread t's part of group g of j (rows × gpr groups of glen values, the last
 * of a row possibly shorter). */
template <int T> KF_HD float2 kf_grange_part(const kf_job &j, long long g, int t)
{
    const long long r = g / j.gpr, c0 = g % j.gpr * j.glen;
    const long long len = j.cols - c0 < j.glen ? j.cols - c0 : j.glen;
    const long long base = r * j.cols + c0;
    return kf_range_part<T>(j.src, base + t, base + len, KF_THREADS);
}

/* A group's range as kf_unit's own loop finds it: (0, 0) when it has no
 * finite value (the sign of a zero extreme may differ from that loop's, which
 * changes no error: y is then 0 of either sign). */
KF_HD float2 kf_grange_done(float2 m)
{
    return m.x > m.y ? make_float2(0.0f, 0.0f) : m;
}

/* Thread t's part of kf_final: parts t, t + KF_THREADS, ... in order. */
KF_HD kf_sums kf_final_part(const kf_sums *parts, long long n, int t)
{
    kf_sums s = {0, 0, 0, 0, 0, 0, 0, 0};
    for (long long i = t; i < n; i += KF_THREADS)
        kf_add_sums()(s, parts[i]);
    return s;
}

/* The fixed-order tree over a block: at level h (KF_THREADS / 2, ..., 1)
 * thread t < h combines sh[t + h] into sh[t]. The result (sh[0]) in every
 * thread's return value. All threads call. */
template <typename V, typename F> __device__ V kf_block_tree(V v, V *sh, F comb)
{
    const int t = (int)threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int h = KF_THREADS / 2; h > 0; h >>= 1) {
        if (t < h)
            comb(sh[t], sh[t + h]);
        __syncthreads();
    }
    return sh[0];
}

/* One unit per thread; one partial of the sums per block, its histogram
 * added into j.hist. */
template <int T, int F> __global__ void __launch_bounds__(KF_THREADS) kf_main(kf_job j)
{
    __shared__ kf_sums sh[KF_THREADS];
    __shared__ kf_bcount hist[KF_BINS];
    for (int b = (int)threadIdx.x; b < KF_BINS; b += KF_THREADS)
        hist[b] = 0;
    __syncthreads();
    kf_sums s = {0, 0, 0, 0, 0, 0, 0, 0};
    const long long u = (long long)blockIdx.x * KF_THREADS + threadIdx.x;
    if (u < j.rows * j.upr)
        kf_unit<T, F>(j, u, s, hist);
    s = kf_block_tree(s, sh, kf_add_sums()); /* its barriers also order the histogram atomics */
    if (threadIdx.x == 0)
        j.parts[blockIdx.x] = s;
    /* integer counts: their sum is the same in any order (a merge of one
     * partial histogram per block, 64 threads each walking every block's,
     * cost kf_final a serial loop as long as the grid) */
    for (int b = (int)threadIdx.x; b < KF_BINS; b += KF_THREADS)
        if (hist[b])
            atomicAdd(&j.hist[b], (unsigned long long)hist[b]);
}

/* Range (min, max) of the finite source values, one pair per block. */
template <int T>
__global__ void __launch_bounds__(KF_THREADS) kf_range(const void *src, long long n,
                                                      float2 *out)
{
    __shared__ float2 sh[KF_THREADS];
    const long long first = (long long)blockIdx.x * KF_THREADS + threadIdx.x;
    const float2 m = kf_block_tree(
        kf_range_part<T>(src, first, n, (long long)gridDim.x * KF_THREADS), sh, kf_add_range());
    if (threadIdx.x == 0)
        out[blockIdx.x] = m;
}

/* Range of group blockIdx.x of j into out[blockIdx.x]. */
template <int T>
__global__ void __launch_bounds__(KF_THREADS) kf_grange(kf_job j, float2 *out)
{
    __shared__ float2 sh[KF_THREADS];
    const float2 m = kf_block_tree(kf_grange_part<T>(j, blockIdx.x, (int)threadIdx.x), sh,
                                   kf_add_range());
    if (threadIdx.x == 0)
        out[blockIdx.x] = kf_grange_done(m);
}

/* res = parts[0] + ... + parts[n - 1] (fixed order). */
__global__ void __launch_bounds__(KF_THREADS)
    kf_final(const kf_sums *parts, long long n, kf_sums *res)
{
    __shared__ kf_sums sh[KF_THREADS];
    const kf_sums s = kf_block_tree(kf_final_part(parts, n, (int)threadIdx.x), sh, kf_add_sums());
    if (threadIdx.x == 0)
        *res = s;
}

/* ---- host side ---- */

struct kf_kept {
    const void *host;
    size_t bytes;
    void *dev;
    unsigned long long used; /* LRU stamp */
    bool emulated;           /* dev is host itself (k_cuda_fused_emulate): nothing to free */
};

pthread_mutex_t kf_lock = PTHREAD_MUTEX_INITIALIZER;
kf_kept kf_keep[KF_KEEP];
unsigned long long kf_clock;
void *kf_src;          /* device scratch copy of a tensor not kept */
size_t kf_src_cap;
void *kf_scr;          /* device: partials, histograms, result, imatrix, ranges */
size_t kf_scr_cap;
bool kf_emu; /* k_cuda_fused_emulate: the kernels' code runs on the host */
bool kf_emu_fault; /* k_cuda_fused_emulate_fault: every emulated run fails */
cudaEvent_t kf_ev[3];
bool kf_ev_ok, kf_ev_tried;
bool kf_have_timing;
double kf_copy_ms, kf_kernel_ms;

kf_kind kf_kind_of(const q_fmt_spec *s)
{
    switch (s->id) {
    case Q_FMT_Q8_0:
        return KF_Q8_0;
    case Q_FMT_Q4_0:
        return KF_Q4_0;
    case Q_FMT_Q4_K:
        return KF_Q4_K;
    case Q_FMT_Q6_K:
        return KF_Q6_K;
    case Q_FMT_INT:
        return s->bits >= 2 && s->bits <= 8 ? KF_INT : KF_NONE;
    case Q_FMT_UINT:
        return s->bits >= 2 && s->bits <= 8 ? KF_UINT : KF_NONE;
    case Q_FMT_FP8_E4M3:
    case Q_FMT_FP8_E5M2:
        return KF_FP8;
    case Q_FMT_NF4:
        return KF_NF4;
    default:
        return KF_NONE;
    }
}

q_status kf_cuda_fail(q_err *err, const char *what, cudaError_t e)
{
    (void)cudaGetLastError();
    return q_fail(err, e == cudaErrorMemoryAllocation ? Q_ENOMEM : Q_EINTERNAL,
                  "k_cuda_preview: %s: %s", what, cudaGetErrorString(e));
}

#define KF_TRY(what, call)                          \
    do {                                            \
        cudaError_t kf_e_ = (call);                 \
        if (kf_e_ != cudaSuccess)                   \
            return kf_cuda_fail(err, (what), kf_e_); \
    } while (0)

/* Makes *buf hold at least need bytes. Lock held. */
q_status kf_grow(void **buf, size_t *cap, size_t need, q_err *err)
{
    if (*cap >= need)
        return Q_OK;
    if (*buf)
        (void)cudaFree(*buf);
    *buf = NULL;
    *cap = 0;
    size_t want = need < ((size_t)1 << 20) ? ((size_t)1 << 20) : need;
    KF_TRY("cudaMalloc", cudaMalloc(buf, want));
    *cap = want;
    return Q_OK;
}

kf_kept *kf_find(const void *src)
{
    for (int i = 0; i < KF_KEEP; i++)
        if (kf_keep[i].dev && kf_keep[i].host == src)
            return &kf_keep[i];
    return NULL;
}

/* The kept tensor holding bytes [src, src + bytes) (a slice of rows of it,
 * or all of it), with the slice's offset in *off; NULL when none does. */
kf_kept *kf_find_within(const void *src, size_t bytes, size_t *off)
{
    const uintptr_t a = (uintptr_t)src;
    for (int i = 0; i < KF_KEEP; i++) {
        const uintptr_t h = (uintptr_t)kf_keep[i].host;
        if (kf_keep[i].dev && a >= h && a - h <= kf_keep[i].bytes &&
            bytes <= kf_keep[i].bytes - (a - h)) {
            *off = (size_t)(a - h);
            return &kf_keep[i];
        }
    }
    return NULL;
}

void kf_drop(kf_kept *k)
{
    if (k->dev && !k->emulated)
        (void)cudaFree(k->dev);
    memset(k, 0, sizeof *k);
}

size_t kf_align(size_t n)
{
    return (n + 255) & ~(size_t)255;
}

template <int T> void kf_launch_main(const kf_job &j, long long blocks)
{
    const int f = kf_family_of(j.kind);
    if (f == KF_FAM_BLOCK32)
        kf_main<T, KF_FAM_BLOCK32><<<(unsigned)blocks, KF_THREADS>>>(j);
    else if (f == KF_FAM_KQUANT)
        kf_main<T, KF_FAM_KQUANT><<<(unsigned)blocks, KF_THREADS>>>(j);
    else
        kf_main<T, KF_FAM_GRID><<<(unsigned)blocks, KF_THREADS>>>(j);
}

/* Calls f with the source type as a compile-time constant: f(kf_type<T>{})
 * reads it as decltype(t)::value, for the kernels' template argument. */
template <int T> struct kf_type {
    static constexpr int value = T;
};
template <typename F> void kf_on_type(k_src type, F f)
{
    if (type == K_SRC_F32)
        f(kf_type<K_SRC_F32>{});
    else if (type == K_SRC_F16)
        f(kf_type<K_SRC_F16>{});
    else
        f(kf_type<K_SRC_BF16>{});
}

/* j's shape for a format, pointers left 0: units, groups, code ranges, and a
 * per-tensor scale's range from trange (else left for kf_range). True when
 * groups are wide (their ranges come from kf_grange). */
bool kf_setup(kf_job &j, int64_t rows, int64_t cols, const q_fmt_spec *fmt, kf_kind kind,
              double range, const float *trange)
{
    memset(&j, 0, sizeof j);
    j.rows = rows;
    j.cols = cols;
    j.kind = kind;
    j.range = range;
    j.hscale = range > 0.0 ? (double)KF_BINS / (2.0 * range) : 0.0;
    const int bits = fmt->bits;
    if (kind == KF_Q8_0 || kind == KF_Q4_0) {
        j.ulen = 32;
    } else if (kind == KF_Q4_K || kind == KF_Q6_K) {
        j.ulen = 256;
    } else if (fmt->group < 0) {
        j.tensor = true;
        j.ulen = KF_TENSOR_UNIT;
    } else {
        j.ulen = fmt->group > 0 ? fmt->group : cols;
    }
    j.upr = (cols + j.ulen - 1) / j.ulen;
    if (j.tensor && trange) {
        j.tlo = trange[0];
        j.thi = trange[1];
    }
    /* a group longer than a unit (channel: a whole row) would be one
     * thread's work, and a 4096-row tensor 32 blocks of threads: its range
     * comes first from kf_grange (a block a group), and its values go to
     * units of KF_TENSOR_UNIT */
    const bool wide = !j.tensor && kf_family_of(kind) == KF_FAM_GRID && j.ulen > KF_TENSOR_UNIT;
    if (wide) {
        j.glen = j.ulen;
        j.gpr = j.upr;
        j.upg = (j.glen + KF_TENSOR_UNIT - 1) / KF_TENSOR_UNIT;
        j.ulen = KF_TENSOR_UNIT;
        j.upr = j.gpr * j.upg;
    }
    if (kind == KF_INT) {
        j.qlo = -(float)(1 << (bits - 1));
        j.qhi = (float)((1 << (bits - 1)) - 1);
        j.half = (float)((1 << bits) - 1) / 2.0f;
    } else if (kind == KF_UINT) {
        j.qhi = (float)((1 << bits) - 1);
    } else if (kind == KF_FP8) {
        bool e4 = fmt->id == Q_FMT_FP8_E4M3;
        j.mbits = e4 ? 3 : 2;
        j.emin = e4 ? -6 : -14;
        j.fmax = e4 ? 448.0f : 57344.0f;
    }
    return wide;
}

/* The tensor's range in j from kf_range's KF_RBLOCKS block ranges. */
void kf_fold_ranges(const float2 *rg, kf_job &j)
{
    float2 m = make_float2(INFINITY, -INFINITY);
    for (int i = 0; i < KF_RBLOCKS; i++)
        kf_add_range()(m, rg[i]);
    if (m.x > m.y)
        m = make_float2(0.0f, 0.0f);
    j.tlo = m.x;
    j.thi = m.y;
}

/* The call's sums s and histogram h into res (and *nbad). */
void kf_result(const kf_sums &s, const unsigned long long *h, int64_t rows, int64_t cols,
               const float *imatrix, q_metrics_acc *res, int64_t *nbad)
{
    res->n = (int64_t)rows * cols;
    res->sum_w2 = s.w2;
    res->sum_q2 = s.q2;
    res->sum_wq = s.wq;
    res->sum_e2 = s.e2;
    res->sum_iw_e2 = s.iwe2;
    res->sum_iw_w2 = s.iww2;
    res->max_abs = s.maxabs;
    if (nbad)
        *nbad = (int64_t)s.nbad;
    res->weighted = imatrix != NULL;
    if (res->hist_range > 0.0)
        for (int b = 0; b < KF_BINS; b++)
            res->hist[b] = (int64_t)h[b];
}

/* The preview on the device, lock held and device 0 current. */
q_status kf_run(const void *src, k_src type, size_t bytes, int64_t rows, int64_t cols,
                const q_fmt_spec *fmt, kf_kind kind, const float *imatrix, double range,
                const float *trange, q_metrics_acc *res, int64_t *nbad, q_err *err)
{
    /* the buffers are grown before the first event, so that cudaFree and
     * cudaMalloc stay out of the timings */
    size_t koff = 0;
    kf_kept *kept = kf_find_within(src, bytes, &koff);
    const bool use_kept = kept != NULL;
    if (!use_kept) {
        q_status st = kf_grow(&kf_src, &kf_src_cap, bytes, err);
        if (st != Q_OK)
            return st;
    }
    kf_job j;
    const bool wide = kf_setup(j, rows, cols, fmt, kind, range, trange);
    const long long units = (long long)rows * j.upr;
    const long long blocks = (units + KF_THREADS - 1) / KF_THREADS;
    const size_t o_hist = kf_align((size_t)blocks * sizeof(kf_sums));
    const size_t o_res = o_hist + kf_align(KF_BINS * sizeof(unsigned long long));
    const size_t o_iw = o_res + kf_align(sizeof(kf_sums));
    const size_t o_rg = o_iw + kf_align(imatrix ? (size_t)cols * sizeof(float) : 0);
    const size_t o_gr = o_rg + kf_align(KF_RBLOCKS * sizeof(float2));
    const size_t total = o_gr + kf_align(wide ? (size_t)(rows * j.gpr) * sizeof(float2) : 0);
    q_status st = kf_grow(&kf_scr, &kf_scr_cap, total, err);
    if (st != Q_OK)
        return st;
    const bool timed = kf_ev_ok;
    if (timed)
        KF_TRY("cudaEventRecord", cudaEventRecord(kf_ev[0]));
    const void *dsrc;
    if (use_kept) {
        kept->used = ++kf_clock;
        dsrc = static_cast<const char *>(kept->dev) + koff;
    } else {
        KF_TRY("cudaMemcpy(tensor to device)",
               cudaMemcpy(kf_src, src, bytes, cudaMemcpyHostToDevice));
        dsrc = kf_src;
    }
    if (timed)
        KF_TRY("cudaEventRecord", cudaEventRecord(kf_ev[1]));
    j.src = dsrc;
    char *scr = static_cast<char *>(kf_scr);
    j.parts = reinterpret_cast<kf_sums *>(scr);
    j.hist = reinterpret_cast<unsigned long long *>(scr + o_hist);
    kf_sums *dres = reinterpret_cast<kf_sums *>(scr + o_res);
    KF_TRY("cudaMemsetAsync(histogram)",
           cudaMemsetAsync(j.hist, 0, KF_BINS * sizeof(unsigned long long)));
    if (imatrix) {
        KF_TRY("cudaMemcpy(imatrix to device)",
               cudaMemcpy(scr + o_iw, imatrix, (size_t)cols * sizeof(float),
                          cudaMemcpyHostToDevice));
        j.iw = reinterpret_cast<const float *>(scr + o_iw);
    }
    if (j.tensor && !trange) {
        float2 *drg = reinterpret_cast<float2 *>(scr + o_rg);
        float2 rg[KF_RBLOCKS];
        const long long n = (long long)rows * cols;
        kf_on_type(type, [&](auto t) {
            kf_range<decltype(t)::value><<<KF_RBLOCKS, KF_THREADS>>>(dsrc, n, drg);
        });
        KF_TRY("kf_range launch", cudaGetLastError());
        KF_TRY("cudaMemcpy(range to host)",
               cudaMemcpy(rg, drg, sizeof rg, cudaMemcpyDeviceToHost));
        kf_fold_ranges(rg, j);
    }
    if (wide) {
        float2 *dgr = reinterpret_cast<float2 *>(scr + o_gr);
        kf_on_type(type, [&](auto t) {
            kf_grange<decltype(t)::value><<<(unsigned)(rows * j.gpr), KF_THREADS>>>(j, dgr);
        });
        KF_TRY("kf_grange launch", cudaGetLastError());
        j.granges = dgr;
    }
    kf_on_type(type, [&](auto t) { kf_launch_main<decltype(t)::value>(j, blocks); });
    KF_TRY("kf_main launch", cudaGetLastError());
    kf_final<<<1, KF_THREADS>>>(j.parts, blocks, dres);
    KF_TRY("kf_final launch", cudaGetLastError());
    kf_sums s;
    unsigned long long h[KF_BINS];
    /* Synchronous: also reports errors of the kernels above. */
    KF_TRY("cudaMemcpy(result to host)", cudaMemcpy(&s, dres, sizeof s, cudaMemcpyDeviceToHost));
    KF_TRY("cudaMemcpy(histogram to host)",
           cudaMemcpy(h, j.hist, sizeof h, cudaMemcpyDeviceToHost));
    if (timed) {
        float a = 0, b = 0;
        KF_TRY("cudaEventRecord", cudaEventRecord(kf_ev[2]));
        KF_TRY("cudaEventSynchronize", cudaEventSynchronize(kf_ev[2]));
        KF_TRY("cudaEventElapsedTime", cudaEventElapsedTime(&a, kf_ev[0], kf_ev[1]));
        KF_TRY("cudaEventElapsedTime", cudaEventElapsedTime(&b, kf_ev[1], kf_ev[2]));
        kf_copy_ms = dsrc == kf_src ? a : 0.0;
        kf_kernel_ms = b;
        kf_have_timing = true;
    }
    kf_result(s, h, rows, cols, imatrix, res, nbad);
    return Q_OK;
}

/* ---- emulation: the kernels above on the host (k_cuda_fused_emulate) ----
 * A grid's blocks run one after another, a block's threads one after
 * another; the block trees and kf_final's order are the device's. */

/* kf_block_tree's levels on a block's values sh[0..KF_THREADS - 1]. */
template <typename V, typename F> void kf_emu_tree(V *sh, F comb)
{
    for (int h = KF_THREADS / 2; h > 0; h >>= 1)
        for (int t = 0; t < h; t++)
            comb(sh[t], sh[t + h]);
}

/* kf_main<T, F> over blocks blocks. */
template <int T, int F> void kf_emu_main(const kf_job &j, long long blocks)
{
    kf_sums sh[KF_THREADS];
    kf_bcount hist[KF_BINS];
    for (long long b = 0; b < blocks; b++) {
        memset(hist, 0, sizeof hist);
        for (int t = 0; t < KF_THREADS; t++) {
            kf_sums s = {0, 0, 0, 0, 0, 0, 0, 0};
            const long long u = b * KF_THREADS + t;
            if (u < j.rows * j.upr)
                kf_unit<T, F>(j, u, s, hist);
            sh[t] = s;
        }
        kf_emu_tree(sh, kf_add_sums());
        j.parts[b] = sh[0];
        for (int k = 0; k < KF_BINS; k++)
            j.hist[k] += hist[k];
    }
}

/* kf_range's blocks (out: KF_RBLOCKS ranges) and kf_grange's (out: one range
 * a group) for source type T. */
template <int T> void kf_emu_range(const kf_job &j, float2 *out)
{
    float2 sh[KF_THREADS];
    const long long n = j.rows * j.cols, stride = (long long)KF_RBLOCKS * KF_THREADS;
    for (int b = 0; b < KF_RBLOCKS; b++) {
        for (int t = 0; t < KF_THREADS; t++)
            sh[t] = kf_range_part<T>(j.src, (long long)b * KF_THREADS + t, n, stride);
        kf_emu_tree(sh, kf_add_range());
        out[b] = sh[0];
    }
}
template <int T> void kf_emu_grange(const kf_job &j, float2 *out)
{
    float2 sh[KF_THREADS];
    for (long long g = 0; g < j.rows * j.gpr; g++) {
        for (int t = 0; t < KF_THREADS; t++)
            sh[t] = kf_grange_part<T>(j, g, t);
        kf_emu_tree(sh, kf_add_range());
        out[g] = kf_grange_done(sh[0]);
    }
}

/* kf_run's kernels on the host, with host memory for the device's; kept
 * tensors are the host bytes themselves. No timings. Lock held. */
q_status kf_emu_run(const void *src, k_src type, size_t bytes, int64_t rows, int64_t cols,
                    const q_fmt_spec *fmt, kf_kind kind, const float *imatrix, double range,
                    const float *trange, q_metrics_acc *res, int64_t *nbad, q_err *err)
{
    kf_have_timing = false;
    if (kf_emu_fault)
        return q_fail(err, Q_EINTERNAL, "k_cuda_preview: emulated device fault");
    kf_job j;
    const bool wide = kf_setup(j, rows, cols, fmt, kind, range, trange);
    const long long blocks = ((long long)rows * j.upr + KF_THREADS - 1) / KF_THREADS;
    size_t koff = 0;
    kf_kept *kept = kf_find_within(src, bytes, &koff);
    if (kept) {
        kept->used = ++kf_clock;
        j.src = static_cast<const char *>(kept->dev) + koff;
    } else {
        j.src = src;
    }
    j.iw = imatrix;
    kf_sums *parts = static_cast<kf_sums *>(malloc((size_t)blocks * sizeof *parts));
    float2 *gr = wide ? static_cast<float2 *>(malloc((size_t)(rows * j.gpr) * sizeof *gr)) : NULL;
    unsigned long long hist[KF_BINS] = {0};
    if (!parts || (wide && !gr)) {
        free(parts);
        free(gr);
        return q_fail(err, Q_ENOMEM, "k_cuda_preview (emulated): out of memory");
    }
    j.parts = parts;
    j.hist = hist;
    kf_on_type(type, [&](auto t) {
        constexpr int T = decltype(t)::value;
        if (j.tensor && !trange) {
            float2 rg[KF_RBLOCKS];
            kf_emu_range<T>(j, rg);
            kf_fold_ranges(rg, j);
        }
        if (wide) {
            kf_emu_grange<T>(j, gr);
            j.granges = gr;
        }
        const int f = kf_family_of(kind);
        if (f == KF_FAM_BLOCK32)
            kf_emu_main<T, KF_FAM_BLOCK32>(j, blocks);
        else if (f == KF_FAM_KQUANT)
            kf_emu_main<T, KF_FAM_KQUANT>(j, blocks);
        else
            kf_emu_main<T, KF_FAM_GRID>(j, blocks);
    });
    kf_sums sh[KF_THREADS];
    for (int t = 0; t < KF_THREADS; t++)
        sh[t] = kf_final_part(parts, blocks, t);
    kf_emu_tree(sh, kf_add_sums());
    kf_result(sh[0], hist, rows, cols, imatrix, res, nbad);
    free(parts);
    free(gr);
    return Q_OK;
}

/* Runs fn with the lock held and, unless emulating, device 0 current
 * (restored after). */
template <typename F> q_status kf_locked(q_err *err, F fn)
{
    pthread_mutex_lock(&kf_lock);
    q_status st;
    if (kf_emu) {
        st = fn();
        pthread_mutex_unlock(&kf_lock);
        return st;
    }
    int prev = 0;
    cudaError_t e = cudaGetDevice(&prev);
    if (e == cudaSuccess && prev != 0)
        e = cudaSetDevice(0);
    if (e != cudaSuccess) {
        st = kf_cuda_fail(err, "cudaSetDevice(0)", e);
    } else {
        if (!kf_ev_tried) { /* once: a failure leaks no event per call */
            kf_ev_tried = true;
            kf_ev_ok = cudaEventCreate(&kf_ev[0]) == cudaSuccess &&
                       cudaEventCreate(&kf_ev[1]) == cudaSuccess &&
                       cudaEventCreate(&kf_ev[2]) == cudaSuccess;
            (void)cudaGetLastError();
        }
        st = fn();
        if (prev != 0)
            (void)cudaSetDevice(prev);
    }
    pthread_mutex_unlock(&kf_lock);
    return st;
}

size_t kf_esize(k_src type)
{
    return type == K_SRC_F32 ? 4 : type == K_SRC_F16 || type == K_SRC_BF16 ? 2 : 0;
}

} /* namespace */

extern "C" bool k_cuda_fused_has(const q_fmt_spec *spec)
{
    return spec && kf_kind_of(spec) != KF_NONE;
}

extern "C" q_status k_cuda_preview(const void *src, k_src type, int64_t rows, int64_t cols,
                                   const q_fmt_spec *fmt, const float *imatrix,
                                   double hist_range, const float *tensor_range,
                                   q_metrics_acc *out, int64_t *n_nonfinite, q_err *err)
{
    const size_t esz = kf_esize(type);
    if (esz == 0)
        return q_fail(err, Q_EUSAGE, "k_cuda_preview: unknown source type %d", (int)type);
    if (!out || !fmt)
        return q_fail(err, Q_EUSAGE, "k_cuda_preview: %s is NULL", out ? "fmt" : "out");
    if (rows < 0 || cols <= 0)
        return q_fail(err, Q_EUSAGE, "k_cuda_preview: bad shape %lld x %lld", (long long)rows,
                      (long long)cols);
    if ((uint64_t)rows > (uint64_t)(INT64_MAX / 4) / (uint64_t)cols)
        return q_fail(err, Q_EUSAGE, "k_cuda_preview: %lld x %lld values exceed the address space",
                      (long long)rows, (long long)cols);
    if (rows > 0 && !src)
        return q_fail(err, Q_EUSAGE, "k_cuda_preview: src is NULL with %lld rows",
                      (long long)rows);
    q_status st = q_fmt_check(fmt, cols, err);
    if (st != Q_OK)
        return st;
    char name[64];
    q_fmt_name(fmt, name, sizeof name);
    if (!q_fmt_fits(fmt, cols))
        return q_fail(err, Q_EUSAGE, "k_cuda_preview: %s does not fit rows of %lld", name,
                      (long long)cols);
    const kf_kind kind = kf_kind_of(fmt);
    if (kind == KF_NONE)
        return q_fail(err, Q_EUSAGE, "k_cuda_preview: no CUDA kernel for %s", name);
    char why[256];
    if (!k_cuda_fused_available(why, sizeof why))
        return q_fail(err, Q_EUSAGE, "k_cuda_preview: %s", why);
    if (rows == 0)
        return Q_OK;
    const size_t bytes = (size_t)rows * (size_t)cols * esz;
    q_metrics_acc res;
    q_metrics_init(&res, hist_range);
    int64_t nbad = 0;
    st = kf_locked(err, [&]() {
        return (kf_emu ? kf_emu_run : kf_run)(src, type, bytes, rows, cols, fmt, kind, imatrix,
                                              res.hist_range, tensor_range, &res, &nbad, err);
    });
    if (st != Q_OK)
        return st;
    q_metrics_merge(out, &res);
    if (n_nonfinite)
        *n_nonfinite += nbad;
    return Q_OK;
}

extern "C" bool k_cuda_kept(const void *src, size_t bytes)
{
    if (!src || !k_cuda_fused_available(NULL, 0))
        return false;
    pthread_mutex_lock(&kf_lock);
    size_t off;
    const bool kept = kf_find_within(src, bytes, &off) != NULL;
    pthread_mutex_unlock(&kf_lock);
    return kept;
}

extern "C" q_status k_cuda_keep(const void *src, size_t bytes, q_err *err)
{
    if (!src || bytes == 0)
        return q_fail(err, Q_EUSAGE, "k_cuda_keep: %s", src ? "0 bytes" : "src is NULL");
    char why[256];
    if (!k_cuda_fused_available(why, sizeof why))
        return q_fail(err, Q_EUSAGE, "k_cuda_keep: %s", why);
    return kf_locked(err, [&]() -> q_status {
        kf_kept *k = kf_find(src);
        if (!k) {
            k = &kf_keep[0];
            for (int i = 0; i < KF_KEEP; i++) {
                if (!kf_keep[i].dev) {
                    k = &kf_keep[i];
                    break;
                }
                if (kf_keep[i].used < k->used)
                    k = &kf_keep[i];
            }
        }
        kf_drop(k);
        if (kf_emu) {
            k->dev = const_cast<void *>(src);
            k->emulated = true;
        } else {
            cudaError_t e = cudaMalloc(&k->dev, bytes);
            if (e != cudaSuccess) {
                k->dev = NULL;
                return kf_cuda_fail(err, "cudaMalloc(kept tensor)", e);
            }
            e = cudaMemcpy(k->dev, src, bytes, cudaMemcpyHostToDevice);
            if (e != cudaSuccess) {
                kf_drop(k);
                return kf_cuda_fail(err, "cudaMemcpy(kept tensor)", e);
            }
        }
        k->host = src;
        k->bytes = bytes;
        k->used = ++kf_clock;
        return Q_OK;
    });
}

extern "C" void k_cuda_forget(const void *src)
{
    if (!src || !k_cuda_fused_available(NULL, 0))
        return;
    (void)kf_locked(NULL, [&]() -> q_status {
        kf_kept *k = kf_find(src);
        if (k)
            kf_drop(k);
        return Q_OK;
    });
}

extern "C" bool k_cuda_preview_timing(double *copy_ms, double *kernel_ms)
{
    pthread_mutex_lock(&kf_lock);
    bool have = kf_have_timing;
    if (copy_ms)
        *copy_ms = have ? kf_copy_ms : 0.0;
    if (kernel_ms)
        *kernel_ms = have ? kf_kernel_ms : 0.0;
    pthread_mutex_unlock(&kf_lock);
    return have;
}

extern "C" void k_cuda_fused_release(void)
{
    if (!k_cuda_fused_available(NULL, 0))
        return;
    (void)kf_locked(NULL, [&]() -> q_status {
        for (int i = 0; i < KF_KEEP; i++)
            kf_drop(&kf_keep[i]);
        if (kf_src)
            (void)cudaFree(kf_src);
        if (kf_scr)
            (void)cudaFree(kf_scr);
        kf_src = kf_scr = NULL;
        kf_src_cap = kf_scr_cap = 0;
        (void)cudaGetLastError();
        return Q_OK;
    });
}

extern "C" bool k_cuda_fused_available(char *why, size_t cap)
{
    pthread_mutex_lock(&kf_lock);
    const bool emu = kf_emu;
    pthread_mutex_unlock(&kf_lock);
    if (!emu)
        return k_cuda_available(why, cap);
    if (why && cap)
        snprintf(why, cap, "emulated on the host (k_cuda_fused_emulate)");
    return true;
}

extern "C" bool k_cuda_fused_emulate(bool on)
{
    pthread_mutex_lock(&kf_lock);
    if (on != kf_emu) {
        for (int i = 0; i < KF_KEEP; i++)
            kf_drop(&kf_keep[i]);
        kf_emu = on;
        kf_have_timing = false;
    }
    kf_emu_fault = kf_emu_fault && on;
    pthread_mutex_unlock(&kf_lock);
    return true;
}

extern "C" bool k_cuda_fused_emulate_fault(bool on)
{
    pthread_mutex_lock(&kf_lock);
    const bool emu = kf_emu;
    kf_emu_fault = emu && on;
    pthread_mutex_unlock(&kf_lock);
    return emu;
}
