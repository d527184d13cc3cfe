/* k_cuda.h — CUDA paths of the kernels (built with `make cuda`, macro QTUNE_CUDA).
 *
 * Usable from C11 and from nvcc (C++). Every build has these symbols: without
 * CUDA, k_cuda_off.c provides versions that report "built without CUDA", so
 * callers never need #ifdefs; they ask k_cuda_available() and fall back to the
 * CPU kernels when it says no.
 *
 * Threads: all functions may be called from any thread. k_cuda_moments calls
 * are serialized internally (one reusable device buffer per process).
 */
#ifndef K_CUDA_H
#define K_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* C headers: inside the linkage block so that nvcc sees their C linkage too. */
#include "k_stats.h"
#include "q_status.h"

/* True when this build has CUDA and the process can use a CUDA device: the
 * runtime reports at least one device and device 0 can run this build's code
 * (compute capability 9.0 or newer: the build has sm_90 code only). Otherwise
 * false, and when why is not NULL (cap > 0) writes a one-line reason into it,
 * truncated to cap bytes and NUL-terminated: "built without CUDA", "no CUDA
 * device: <runtime error string>", or the device that is too old. On true,
 * why receives the device, e.g. "NVIDIA H100 (sm_90)". The answer is computed
 * once per process (thread-safe) and cached. */
bool k_cuda_available(char *why, size_t cap);

/* Accumulates n elements of src (host memory, element type type) into out on the
 * CUDA device, the same way k_moments_add(out, src, type, n, pivot, INFINITY)
 * does on the CPU: out->n, s1..s4 (power sums of d = x - pivot in double over the
 * finite values), min, max (finite values), n_nan and n_inf grow; no candidates
 * are collected (out->cand, n_cand, cand_cap, cand_overflow are not touched).
 * Call k_moments_init(out, ...) first for a fresh result. The sums equal the CPU
 * ones up to double rounding (another summation order); counts, min and max are
 * exact (±0 compare equal; which zero min/max holds is unspecified). The result
 * is deterministic: the reduction order depends only on n, not on the device.
 * Runs on device 0 (the caller's current device is restored). Data larger than
 * the reusable device buffer (64 MiB) is copied in chunks, synchronously.
 * Returns Q_OK; Q_EUSAGE when n < 0, out is NULL, src is NULL with n > 0, type is
 * not a k_src, or CUDA is not available (err says why, as k_cuda_available);
 * Q_EINTERNAL naming the CUDA call and its error string when the runtime fails.
 * On failure out is unchanged. Never aborts. */
q_status k_cuda_moments(const void *src, k_src type, int64_t n, float pivot, k_moments *out,
                        q_err *err);

/* The device's copy bandwidth, the yardstick of the GPU preview benchmark
 * (tests/tool_bench_cuda.c): device 0 copies bytes bytes from one buffer of
 * its memory to another (cudaMemcpy, device to device) reps times after one
 * warm-up copy, each timed by CUDA events; *gbps = 2 · bytes / the best time
 * (every byte read once and written once, as STREAM counts its copy). The two
 * buffers are allocated and freed by the call. Q_EUSAGE: bytes under 1 MiB,
 * reps < 1, gbps NULL, or CUDA not available (err says why); Q_ENOMEM:
 * device memory; Q_EINTERNAL naming the CUDA call that failed. */
q_status k_cuda_copy_bandwidth(size_t bytes, int reps, double *gbps, q_err *err);

/* Frees the device buffers k_cuda_moments keeps between calls (the next call
 * allocates them again). No-op without CUDA or when nothing is allocated.
 * Thread-safe: waits for a k_cuda_moments running on another thread. */
void k_cuda_release(void);

#ifdef __cplusplus
}
#endif

#endif
