/* k_cuda.cu — CUDA twin of k_stats.c: moment accumulation on the device.
 *
 * k_cuda_moments copies the host data to a reusable device buffer in chunks of
 * at most KC_CHUNK_BYTES, and for each chunk runs
 *   1. kc_partial: a grid-stride pass; each thread keeps its own power sums (double),
 *      counts and min/max, a block reduces them in a fixed tree (warp shuffles, then
 *      shared memory) and writes one kc_part per block;
 *   2. kc_final: one block reduces the per-block partials in a fixed order.
 * The host adds the chunk results in chunk order. The grid size depends only on the
 * chunk length, so the result is deterministic and the same on every device.
 * No atomics: doubles would be summed in scheduling order.
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

namespace {

constexpr int KC_THREADS = 256;     /* threads per block (a multiple of 32) */
constexpr int KC_WARPS = KC_THREADS / 32;
constexpr int KC_MAX_BLOCKS = 1024; /* per-block partials per chunk, at most */
constexpr int KC_VEC = 4;           /* elements per vector load (16 or 8 bytes) */
constexpr size_t KC_CHUNK_BYTES = (size_t)64 << 20;
constexpr size_t KC_MIN_BUF = (size_t)1 << 20; /* smallest device buffer we allocate */
constexpr unsigned KC_FULL = 0xffffffffu;

/* Sums over one thread, block, chunk or call; the device side of k_moments. */
struct kc_part {
    double s1, s2, s3, s4; /* power sums of d = x - pivot over finite x */
    long long n, n_nan, n_inf;
    float min, max; /* over finite x; +inf/-inf while n == 0 */
};

__host__ __device__ inline void kc_init(kc_part &p)
{
    p.s1 = p.s2 = p.s3 = p.s4 = 0;
    p.n = p.n_nan = p.n_inf = 0;
    p.min = INFINITY;
    p.max = -INFINITY;
}

/* a += b. Same rules as k_moments_merge. */
__host__ __device__ inline void kc_merge(kc_part &a, const kc_part &b)
{
    a.s1 += b.s1;
    a.s2 += b.s2;
    a.s3 += b.s3;
    a.s4 += b.s4;
    a.n += b.n;
    a.n_nan += b.n_nan;
    a.n_inf += b.n_inf;
    a.min = b.min < a.min ? b.min : a.min;
    a.max = b.max > a.max ? b.max : a.max;
}

/* One element, as add_scalar in k_stats.c does it (thr = +inf: no candidates). */
__device__ __forceinline__ void kc_add(kc_part &p, float x, double pivot)
{
    if (isfinite(x)) {
        p.n++;
        p.min = x < p.min ? x : p.min;
        p.max = x > p.max ? x : p.max;
        double d = (double)x - pivot, d2 = d * d;
        p.s1 += d;
        p.s2 += d2;
        p.s3 += d2 * d;
        p.s4 += d2 * d2;
    } else if (isnan(x)) {
        p.n_nan++;
    } else {
        p.n_inf++;
    }
}

/* Element i of a chunk of type T (a k_src). The cuda_fp16/cuda_bf16 conversions
 * are exact for every finite and infinite value (subnormals included) and map
 * NaN to NaN, like q_f16_to_f32 / q_bf16_to_f32. */
template <int T> __device__ __forceinline__ float kc_conv(unsigned short h)
{
    if constexpr (T == K_SRC_F16)
        return __half2float(__ushort_as_half(h));
    return __bfloat162float(__ushort_as_bfloat16(h));
}

template <int T> __device__ __forceinline__ float kc_load1(const void *src, long long i)
{
    if constexpr (T == K_SRC_F32)
        return static_cast<const float *>(src)[i];
    return kc_conv<T>(static_cast<const unsigned short *>(src)[i]);
}

/* Vector v (elements 4v .. 4v+3); src is the device buffer, 256-byte aligned. */
template <int T> __device__ __forceinline__ void kc_load4(const void *src, long long v, float x[4])
{
    if constexpr (T == K_SRC_F32) {
        float4 f = static_cast<const float4 *>(src)[v];
        x[0] = f.x;
        x[1] = f.y;
        x[2] = f.z;
        x[3] = f.w;
    } else {
        uint2 u = static_cast<const uint2 *>(src)[v]; /* little-endian: low half first */
        x[0] = kc_conv<T>((unsigned short)(u.x & 0xffffu));
        x[1] = kc_conv<T>((unsigned short)(u.x >> 16));
        x[2] = kc_conv<T>((unsigned short)(u.y & 0xffffu));
        x[3] = kc_conv<T>((unsigned short)(u.y >> 16));
    }
}

__device__ __forceinline__ kc_part kc_shfl_down(const kc_part &p, int off)
{
    kc_part q;
    q.s1 = __shfl_down_sync(KC_FULL, p.s1, off);
    q.s2 = __shfl_down_sync(KC_FULL, p.s2, off);
    q.s3 = __shfl_down_sync(KC_FULL, p.s3, off);
    q.s4 = __shfl_down_sync(KC_FULL, p.s4, off);
    q.n = __shfl_down_sync(KC_FULL, p.n, off);
    q.n_nan = __shfl_down_sync(KC_FULL, p.n_nan, off);
    q.n_inf = __shfl_down_sync(KC_FULL, p.n_inf, off);
    q.min = __shfl_down_sync(KC_FULL, p.min, off);
    q.max = __shfl_down_sync(KC_FULL, p.max, off);
    return q;
}

/* Reduces p over the block (blockDim.x == KC_THREADS) in a fixed order; the
 * result is valid in thread 0. Every thread of the block must call it. */
__device__ void kc_block_reduce(kc_part &p)
{
    __shared__ kc_part warp_sum[KC_WARPS];
    const int lane = (int)(threadIdx.x & 31), warp = (int)(threadIdx.x >> 5);
    for (int off = 16; off > 0; off >>= 1)
        kc_merge(p, kc_shfl_down(p, off));
    if (lane == 0)
        warp_sum[warp] = p;
    __syncthreads();
    if (warp == 0) {
        if (lane < KC_WARPS)
            p = warp_sum[lane];
        else
            kc_init(p);
        for (int off = 16; off > 0; off >>= 1)
            kc_merge(p, kc_shfl_down(p, off));
    }
}

/* parts[blockIdx.x] = sums over the elements this block's threads visit.
 * src: (n) elements of type T in device memory. */
template <int T>
__global__ void __launch_bounds__(KC_THREADS)
    kc_partial(const void *src, long long n, double pivot, kc_part *parts)
{
    kc_part p;
    kc_init(p);
    const long long stride = (long long)gridDim.x * KC_THREADS;
    const long long tid = (long long)blockIdx.x * KC_THREADS + threadIdx.x;
    const long long nvec = n / KC_VEC;
    for (long long v = tid; v < nvec; v += stride) {
        float x[KC_VEC];
        kc_load4<T>(src, v, x);
#pragma unroll
        for (int k = 0; k < KC_VEC; k++)
            kc_add(p, x[k], pivot);
    }
    for (long long i = nvec * KC_VEC + tid; i < n; i += stride)
        kc_add(p, kc_load1<T>(src, i), pivot);
    kc_block_reduce(p);
    if (threadIdx.x == 0)
        parts[blockIdx.x] = p;
}

/* *res = parts[0] + ... + parts[nparts - 1], in a fixed order. One block. */
__global__ void __launch_bounds__(KC_THREADS)
    kc_final(const kc_part *parts, int nparts, kc_part *res)
{
    kc_part p;
    kc_init(p);
    for (int i = (int)threadIdx.x; i < nparts; i += KC_THREADS)
        kc_merge(p, parts[i]);
    kc_block_reduce(p);
    if (threadIdx.x == 0)
        *res = p;
}

/* Blocks for a chunk of len elements: one vector per thread up to KC_MAX_BLOCKS
 * (enough to fill an H100), grid-stride beyond. Depends on len only. */
int kc_grid(long long len)
{
    long long vecs = (len + KC_VEC - 1) / KC_VEC;
    long long blocks = (vecs + KC_THREADS - 1) / KC_THREADS;
    if (blocks < 1)
        blocks = 1;
    return blocks > KC_MAX_BLOCKS ? KC_MAX_BLOCKS : (int)blocks;
}

/* ---- host state ---- */

pthread_once_t kc_once = PTHREAD_ONCE_INIT;
bool kc_ok;
char kc_why[512];

/* Guards the buffers below and serializes k_cuda_moments. */
pthread_mutex_t kc_lock = PTHREAD_MUTEX_INITIALIZER;
void *kc_buf;       /* device: one chunk of source data, kc_buf_cap bytes */
size_t kc_buf_cap;
kc_part *kc_parts;  /* device: (KC_MAX_BLOCKS + 1) partials; the last is the result */

void kc_probe(void)
{
    int count = 0, major = 0, minor = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        snprintf(kc_why, sizeof kc_why, "no CUDA device: %s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        return;
    }
    if (count < 1) {
        snprintf(kc_why, sizeof kc_why, "no CUDA device: the runtime reports 0 devices");
        return;
    }
    cudaDeviceProp prop;
    e = cudaGetDeviceProperties(&prop, 0);
    if (e != cudaSuccess) {
        snprintf(kc_why, sizeof kc_why, "no CUDA device: device 0: %s", cudaGetErrorString(e));
        (void)cudaGetLastError();
        return;
    }
    major = prop.major;
    minor = prop.minor;
    if (major * 10 + minor < 90) {
        snprintf(kc_why, sizeof kc_why,
                 "no CUDA device: device 0 (%.200s) is sm_%d%d; this build has sm_90 code only",
                 prop.name, major, minor);
        return;
    }
    snprintf(kc_why, sizeof kc_why, "%.200s (sm_%d%d)", prop.name, major, minor);
    kc_ok = true;
}

q_status kc_cuda_fail(q_err *err, const char *what, cudaError_t e)
{
    (void)cudaGetLastError(); /* clear it unless it is sticky */
    return q_fail(err, Q_EINTERNAL, "k_cuda_moments: %s: %s", what, cudaGetErrorString(e));
}

#define KC_TRY(what, call)                          \
    do {                                            \
        cudaError_t kc_e_ = (call);                 \
        if (kc_e_ != cudaSuccess)                   \
            return kc_cuda_fail(err, (what), kc_e_); \
    } while (0)

/* Makes kc_buf hold at least need bytes and kc_parts exist. Lock held. */
q_status kc_reserve(size_t need, q_err *err)
{
    if (!kc_parts)
        KC_TRY("cudaMalloc(partials)",
               cudaMalloc((void **)&kc_parts, (KC_MAX_BLOCKS + 1) * sizeof(kc_part)));
    if (kc_buf_cap < need) {
        size_t cap = need < KC_MIN_BUF ? KC_MIN_BUF : need;
        if (kc_buf) {
            (void)cudaFree(kc_buf);
            kc_buf = NULL;
            kc_buf_cap = 0;
        }
        KC_TRY("cudaMalloc(chunk buffer)", cudaMalloc(&kc_buf, cap));
        kc_buf_cap = cap;
    }
    return Q_OK;
}

template <int T> void kc_launch(long long len, double pivot, int blocks)
{
    kc_partial<T><<<blocks, KC_THREADS>>>(kc_buf, len, pivot, kc_parts);
}

/* The whole reduction on device 0, lock held; *total receives the sums. */
q_status kc_run(const void *src, k_src type, size_t esz, int64_t n, float pivot, kc_part *total,
                q_err *err)
{
    const int64_t chunk = (int64_t)(KC_CHUNK_BYTES / esz);
    const int64_t first = n < chunk ? n : chunk;
    q_status st = kc_reserve((size_t)first * esz, err);
    if (st != Q_OK)
        return st;
    kc_init(*total);
    for (int64_t off = 0; off < n; off += chunk) {
        const int64_t len = n - off < chunk ? n - off : chunk;
        KC_TRY("cudaMemcpy(host to device)",
               cudaMemcpy(kc_buf, static_cast<const char *>(src) + (size_t)off * esz,
                          (size_t)len * esz, cudaMemcpyHostToDevice));
        const int blocks = kc_grid(len);
        switch (type) {
        case K_SRC_F32:
            kc_launch<K_SRC_F32>(len, (double)pivot, blocks);
            break;
        case K_SRC_F16:
            kc_launch<K_SRC_F16>(len, (double)pivot, blocks);
            break;
        case K_SRC_BF16:
            kc_launch<K_SRC_BF16>(len, (double)pivot, blocks);
            break;
        }
        KC_TRY("kc_partial launch", cudaGetLastError());
        kc_final<<<1, KC_THREADS>>>(kc_parts, blocks, kc_parts + KC_MAX_BLOCKS);
        KC_TRY("kc_final launch", cudaGetLastError());
        kc_part r;
        /* Synchronous: also reports errors of the kernels above. */
        KC_TRY("cudaMemcpy(device to host)",
               cudaMemcpy(&r, kc_parts + KC_MAX_BLOCKS, sizeof r, cudaMemcpyDeviceToHost));
        kc_merge(*total, r);
    }
    return Q_OK;
}

q_status kc_copy_fail(q_err *err, const char *what, cudaError_t e)
{
    (void)cudaGetLastError();
    return q_fail(err, e == cudaErrorMemoryAllocation ? Q_ENOMEM : Q_EINTERNAL,
                  "k_cuda_copy_bandwidth: %s: %s", what, cudaGetErrorString(e));
}

/* k_cuda_copy_bandwidth's copies, lock held and device 0 current; the
 * buffers and events are the caller's to free. */
q_status kc_copy_time(size_t bytes, int reps, void **a, void **b, cudaEvent_t ev[2],
                      float *best, q_err *err)
{
#define KC_COPY_TRY(what, call)                      \
    do {                                             \
        cudaError_t kc_e_ = (call);                  \
        if (kc_e_ != cudaSuccess)                    \
            return kc_copy_fail(err, (what), kc_e_); \
    } while (0)
    KC_COPY_TRY("cudaMalloc", cudaMalloc(a, bytes));
    KC_COPY_TRY("cudaMalloc", cudaMalloc(b, bytes));
    KC_COPY_TRY("cudaMemset", cudaMemset(*a, 0x3c, bytes));
    KC_COPY_TRY("cudaEventCreate", cudaEventCreate(&ev[0]));
    KC_COPY_TRY("cudaEventCreate", cudaEventCreate(&ev[1]));
    KC_COPY_TRY("cudaMemcpy(device to device)",
                cudaMemcpy(*b, *a, bytes, cudaMemcpyDeviceToDevice));
    for (int r = 0; r < reps; r++) {
        float ms = 0.0f;
        KC_COPY_TRY("cudaEventRecord", cudaEventRecord(ev[0]));
        KC_COPY_TRY("cudaMemcpyAsync(device to device)",
                    cudaMemcpyAsync(*b, *a, bytes, cudaMemcpyDeviceToDevice));
        KC_COPY_TRY("cudaEventRecord", cudaEventRecord(ev[1]));
        KC_COPY_TRY("cudaEventSynchronize", cudaEventSynchronize(ev[1]));
        KC_COPY_TRY("cudaEventElapsedTime", cudaEventElapsedTime(&ms, ev[0], ev[1]));
        if (r == 0 || ms < *best)
            *best = ms;
    }
    return Q_OK;
#undef KC_COPY_TRY
}

} /* namespace */

extern "C" bool k_cuda_available(char *why, size_t cap)
{
    pthread_once(&kc_once, kc_probe);
    if (why && cap > 0)
        snprintf(why, cap, "%s", kc_why);
    return kc_ok;
}

extern "C" q_status k_cuda_moments(const void *src, k_src type, int64_t n, float pivot,
                                   k_moments *out, q_err *err)
{
    size_t esz;
    switch (type) {
    case K_SRC_F32:
        esz = 4;
        break;
    case K_SRC_F16:
    case K_SRC_BF16:
        esz = 2;
        break;
    default:
        return q_fail(err, Q_EUSAGE, "k_cuda_moments: unknown source type %d", (int)type);
    }
    if (!out)
        return q_fail(err, Q_EUSAGE, "k_cuda_moments: out is NULL");
    if (n < 0)
        return q_fail(err, Q_EUSAGE, "k_cuda_moments: negative element count %lld",
                      (long long)n);
    if (n > 0 && !src)
        return q_fail(err, Q_EUSAGE, "k_cuda_moments: src is NULL with %lld elements",
                      (long long)n);
    if ((uint64_t)n > SIZE_MAX / esz)
        return q_fail(err, Q_EUSAGE, "k_cuda_moments: %lld elements exceed the address space",
                      (long long)n);
    char why[256];
    if (!k_cuda_available(why, sizeof why))
        return q_fail(err, Q_EUSAGE, "k_cuda_moments: %s", why);
    if (n == 0)
        return Q_OK;

    pthread_mutex_lock(&kc_lock);
    kc_part total;
    int prev = 0;
    q_status st = Q_OK;
    cudaError_t e = cudaGetDevice(&prev);
    if (e == cudaSuccess && prev != 0)
        e = cudaSetDevice(0);
    if (e != cudaSuccess) {
        st = kc_cuda_fail(err, "cudaSetDevice(0)", e);
    } else {
        st = kc_run(src, type, esz, n, pivot, &total, err);
        if (prev != 0)
            (void)cudaSetDevice(prev);
    }
    pthread_mutex_unlock(&kc_lock);
    if (st != Q_OK)
        return st;

    out->n += total.n;
    out->s1 += total.s1;
    out->s2 += total.s2;
    out->s3 += total.s3;
    out->s4 += total.s4;
    out->min = total.min < out->min ? total.min : out->min;
    out->max = total.max > out->max ? total.max : out->max;
    out->n_nan += total.n_nan;
    out->n_inf += total.n_inf;
    return Q_OK;
}

extern "C" q_status k_cuda_copy_bandwidth(size_t bytes, int reps, double *gbps, q_err *err)
{
    if (bytes < ((size_t)1 << 20) || reps < 1 || !gbps)
        return q_fail(err, Q_EUSAGE, "k_cuda_copy_bandwidth: %s",
                      !gbps ? "gbps is NULL" : reps < 1 ? "reps < 1" : "fewer than 1 MiB");
    char why[256];
    if (!k_cuda_available(why, sizeof why))
        return q_fail(err, Q_EUSAGE, "k_cuda_copy_bandwidth: %s", why);
    pthread_mutex_lock(&kc_lock);
    int prev = 0;
    q_status st;
    void *a = NULL, *b = NULL;
    cudaEvent_t ev[2] = {NULL, NULL};
    float best = 0.0f;
    cudaError_t e = cudaGetDevice(&prev);
    if (e == cudaSuccess && prev != 0)
        e = cudaSetDevice(0);
    if (e != cudaSuccess) {
        st = kc_copy_fail(err, "cudaSetDevice(0)", e);
    } else {
        st = kc_copy_time(bytes, reps, &a, &b, ev, &best, err);
        for (int i = 0; i < 2; i++)
            if (ev[i])
                (void)cudaEventDestroy(ev[i]);
        if (a)
            (void)cudaFree(a);
        if (b)
            (void)cudaFree(b);
        (void)cudaGetLastError();
        if (prev != 0)
            (void)cudaSetDevice(prev);
    }
    pthread_mutex_unlock(&kc_lock);
    if (st == Q_OK && !(best > 0.0f))
        st = q_fail(err, Q_EINTERNAL, "k_cuda_copy_bandwidth: the copies timed %g ms",
                    (double)best);
    if (st == Q_OK)
        *gbps = 2.0 * (double)bytes / ((double)best * 1e-3) / 1e9;
    return st;
}

extern "C" void k_cuda_release(void)
{
    pthread_mutex_lock(&kc_lock);
    if (kc_buf || kc_parts) {
        int prev = 0;
        bool switched = cudaGetDevice(&prev) == cudaSuccess && prev != 0 &&
                        cudaSetDevice(0) == cudaSuccess;
        if (kc_buf)
            (void)cudaFree(kc_buf);
        if (kc_parts)
            (void)cudaFree(kc_parts);
        if (switched)
            (void)cudaSetDevice(prev);
        (void)cudaGetLastError();
    }
    kc_buf = NULL;
    kc_parts = NULL;
    kc_buf_cap = 0;
    pthread_mutex_unlock(&kc_lock);
}
