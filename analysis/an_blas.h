/* an_blas.h — OpenBLAS, loaded when a matrix product first needs it.
 *
 * qtune links no BLAS: the commands that multiply no matrices (inspect, plan,
 * apply, preview, the TUI until a calibration) start without it. OpenBLAS's
 * library constructor costs about 3.5 ms at every start and launches a pool of
 * worker threads. an_blas_load opens libopenblas.so.0 once (thread safe),
 * resolves what qtune calls, and sets the library to one thread with its pool
 * stopped, unless the user set OPENBLAS_NUM_THREADS: one thread pool in qtune,
 * OpenMP's (two pools spinning side by side fight on few cores; Debian's
 * default pthreads build spins about 0.1 s at load). The forward pass and the
 * calibration split their products over OpenMP themselves. */
#ifndef AN_BLAS_H
#define AN_BLAS_H

#include <stdbool.h>

#include "q_status.h"

/* Loads OpenBLAS (once). false, with a message naming the library, when it
 * cannot be opened or lacks a function. */
bool an_blas_load(q_err *err);

/* cblas_sgemm for row-major matrices: C = alpha op(A) op(B) + beta C, op
 * transposing when trans_a / trans_b. an_blas_load must have succeeded. */
void an_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* OpenBLAS's thread count (1 after loading unless OPENBLAS_NUM_THREADS says
 * otherwise); 1 when not loaded. */
int an_blas_threads(void);

/* Sets OpenBLAS to one thread now, or when it loads (an_set_threads). */
void an_blas_single(void);

#endif
