/* k_cuda_off.c — the k_cuda.h API in builds without CUDA: everything reports
 * "built without CUDA". With QTUNE_CUDA defined, k_cuda.cu provides the API and
 * this file compiles to nothing. */
#include "k_cuda.h"
#include "k_cuda_fused.h"

/* ISO C wants at least one declaration in a translation unit. */
typedef int k_cuda_off_unused;

#ifndef QTUNE_CUDA

#include <stdio.h>

static const char k_off_why[] = "built without CUDA";

bool k_cuda_available(char *why, size_t cap)
{
    if (why && cap > 0)
        snprintf(why, cap, "%s", k_off_why);
    return false;
}

q_status k_cuda_moments(const void *src, k_src type, int64_t n, float pivot, k_moments *out,
                        q_err *err)
{
    (void)src;
    (void)type;
    (void)n;
    (void)pivot;
    (void)out;
    return q_fail(err, Q_EUSAGE, "k_cuda_moments: %s", k_off_why);
}

void k_cuda_release(void)
{
}

q_status k_cuda_copy_bandwidth(size_t bytes, int reps, double *gbps, q_err *err)
{
    (void)bytes;
    (void)reps;
    (void)gbps;
    return q_fail(err, Q_EUSAGE, "k_cuda_copy_bandwidth: %s", k_off_why);
}

bool k_cuda_fused_has(const q_fmt_spec *spec)
{
    (void)spec;
    return false;
}

q_status k_cuda_preview(const void *src, k_src type, int64_t rows, int64_t cols,
                        const q_fmt_spec *fmt, const float *imatrix, double hist_range,
                        const float *tensor_range, q_metrics_acc *out, int64_t *n_nonfinite,
                        q_err *err)
{
    (void)src;
    (void)type;
    (void)rows;
    (void)cols;
    (void)fmt;
    (void)imatrix;
    (void)hist_range;
    (void)tensor_range;
    (void)out;
    (void)n_nonfinite;
    return q_fail(err, Q_EUSAGE, "k_cuda_preview: %s", k_off_why);
}

q_status k_cuda_keep(const void *src, size_t bytes, q_err *err)
{
    (void)src;
    (void)bytes;
    return q_fail(err, Q_EUSAGE, "k_cuda_keep: %s", k_off_why);
}

bool k_cuda_kept(const void *src, size_t bytes)
{
    (void)src;
    (void)bytes;
    return false;
}

void k_cuda_forget(const void *src)
{
    (void)src;
}

bool k_cuda_preview_timing(double *copy_ms, double *kernel_ms)
{
    if (copy_ms)
        *copy_ms = 0.0;
    if (kernel_ms)
        *kernel_ms = 0.0;
    return false;
}

void k_cuda_fused_release(void)
{
}

bool k_cuda_fused_available(char *why, size_t cap)
{
    return k_cuda_available(why, cap);
}

bool k_cuda_fused_emulate(bool on)
{
    (void)on;
    return false;
}

bool k_cuda_fused_emulate_fault(bool on)
{
    (void)on;
    return false;
}

#endif
