/* k_cuda_fused.h — fused fake-quant + metrics preview of one tensor on the CUDA
 * device (built with `make cuda`; without CUDA, k_cuda_off.c provides versions
 * that report "built without CUDA").
 *
 * One call quantizes every row of a tensor to a format, dequantizes it and
 * accumulates the q_metrics sums and the 64-bin error histogram, without
 * writing the quantized tensor. Formats with a CUDA kernel: q8_0, q4_0, q4_k,
 * q6_k (ggml's reference quantizers without an imatrix: q_quants.c and
 * q_kquants.c's searches, ported operation for operation), intN / uintN
 * (N 2..8), fp8_e4m3 / fp8_e5m2 and nf4 by group G, channel or tensor (see
 * k_cuda_fused_has). Values equal those of the scalar references
 * (q_fmt_fakequant with imatrix NULL) bit for bit; the sums equal q_metrics_add's
 * to double rounding (another fixed summation order), the histogram counts and
 * n exactly, max |e| exactly (NaN errors, from a block whose f16 scale
 * overflowed, make it NaN and are binned nowhere, as q_metrics_add does). A
 * per-tensor scale (group Q_GROUP_TENSOR) comes from the range of the rows of
 * the call, or tensor_range.
 *
 * Source values that are NaN or ±Inf are replaced by 0 before quantizing, as
 * k_preview_tensor does (the CPU references see the scrubbed row).
 *
 * Threads: any thread may call; calls are serialized internally.
 */
#ifndef K_CUDA_FUSED_H
#define K_CUDA_FUSED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "k_stats.h"
#include "q_format.h"
#include "q_metrics.h"
#include "q_status.h"

/* True when this build has a CUDA kernel for spec (whether or not a device is
 * present): q8_0, q4_0, q4_k, q6_k, int/uint with 2 <= bits <= 8, fp8_e4m3,
 * fp8_e5m2, nf4, with any group. False for other formats: callers use the CPU
 * kernels for those. Without CUDA: false. */
bool k_cuda_fused_has(const q_fmt_spec *spec);

/* Previews rows × cols values of src (host memory, row-major, element type
 * type) in format fmt on device 0 and adds the result to out, as
 * q_metrics_merge(out, &a) would with a = q_metrics_init(hist_range) filled by
 * q_metrics_add(&a, src, fakequant(src), rows, cols, imatrix). imatrix: cols
 * importance weights (host) or NULL; it weights the error only (the
 * quantization is the plain one). hist_range <= 0 or not finite: no histogram.
 * tensor_range: for group Q_GROUP_TENSOR, the tensor's {min, max} of finite
 * values (q_fq_ctx), so that rows can be previewed in slices; NULL: the range
 * of the call's rows. n_nonfinite (may be NULL) grows by the NaN/Inf source
 * values. The rows are copied to the device once per call, unless they lie in
 * a tensor k_cuda_keep holds (all of it or a slice of it). Q_EUSAGE: bad
 * arguments (rows < 0, cols <= 0, NULL pointers, type not a k_src, a spec
 * q_fmt_check rejects or that does not fit cols), a format
 * without a CUDA kernel ("no CUDA kernel for <fmt>"), or CUDA not available
 * (err carries the k_cuda_available reason). Q_ENOMEM: device memory.
 * Q_EINTERNAL naming the CUDA call on a runtime failure. On failure out is
 * unchanged. rows == 0 adds nothing and returns Q_OK. */
q_status k_cuda_preview(const void *src, k_src type, int64_t rows, int64_t cols,
                        const q_fmt_spec *fmt, const float *imatrix, double hist_range,
                        const float *tensor_range, q_metrics_acc *out, int64_t *n_nonfinite,
                        q_err *err);

/* Copies bytes bytes at src to the device and keeps them there, so that later
 * k_cuda_preview calls with this src (and at most that many bytes) skip the
 * copy. At most 4 tensors are kept; keeping a fifth drops the least recently
 * used one. The caller promises the host bytes do not change while kept (call
 * k_cuda_forget first). Keeping src again refreshes the copy. Q_EUSAGE as
 * k_cuda_preview (NULL src, bytes 0, CUDA unavailable), Q_ENOMEM, Q_EINTERNAL. */
q_status k_cuda_keep(const void *src, size_t bytes, q_err *err);

/* True when bytes [src, src + bytes) lie in a tensor k_cuda_keep holds
 * (false without CUDA). */
bool k_cuda_kept(const void *src, size_t bytes);

/* Drops the device copy of src if one is kept. No-op otherwise or without CUDA. */
void k_cuda_forget(const void *src);

/* Timings of the last successful k_cuda_preview, measured with CUDA events:
 * copy_ms the host-to-device copy of the tensor (0 when kept), kernel_ms the
 * kernels and the copy of the result back. False when there was none (or
 * without CUDA); the outputs are then 0. */
bool k_cuda_preview_timing(double *copy_ms, double *kernel_ms);

/* Frees every device buffer of this module (kept tensors included). */
void k_cuda_fused_release(void);

/* Whether k_cuda_preview can run: emulation is on (why: "emulated on the
 * host ..."), or k_cuda_available (why as it says). */
bool k_cuda_fused_available(char *why, size_t cap);

/* A test aid. With on, k_cuda_preview, k_cuda_keep, k_cuda_kept,
 * k_cuda_forget and k_cuda_fused_available need no device: the kernels' own
 * code (the same source, __host__ __device__) runs on the host, a grid's
 * blocks and a block's threads one after another, with the device's units,
 * per-block reduction trees and final summation order, so the sums come out
 * as the device's should, bit for bit. Kept tensors are then the host bytes
 * themselves; k_cuda_preview_timing reports none. Off: the device again.
 * Switching drops every kept tensor. Not thread-safe against calls in
 * flight. Returns false, doing nothing, in a build without CUDA. */
bool k_cuda_fused_emulate(bool on);

/* A test aid for the callers' fallback: with on (and emulation on), every
 * k_cuda_preview fails as one whose CUDA call failed does (Q_EINTERNAL,
 * "k_cuda_preview: emulated device fault"); off, or emulation switched off,
 * ends it. Returns false, doing nothing, when emulation is off. */
bool k_cuda_fused_emulate_fault(bool on);

#ifdef __cplusplus
}
#endif

#endif
