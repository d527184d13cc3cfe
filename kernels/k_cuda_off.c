/* k_cuda_off.c — the k_cuda.h API in builds without CUDA: everything reports
 * "built without CUDA". With QTUNE_CUDA defined, k_cuda.cu provides the API and
 * this file compiles to nothing. */
#include "k_cuda.h"

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

#endif
