/* an_blas.c — OpenBLAS through dlopen (see an_blas.h). */
#include "an_blas.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define AN_BLAS_LIB "libopenblas.so.0"

/* The CBLAS constants (the C interface's standard values). */
enum { AN_ROW_MAJOR = 101, AN_NO_TRANS = 111, AN_TRANS = 112 };

typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);
typedef void (*set_threads_fn)(int n);
typedef int (*get_threads_fn)(void);
typedef int (*shutdown_fn)(void);

static struct {
    pthread_once_t once;
    atomic_bool ok;
    char why[256];
    sgemm_fn sgemm;
    set_threads_fn set_threads;
    get_threads_fn get_threads;
} g_blas = {.once = PTHREAD_ONCE_INIT};

static atomic_bool g_single; /* an_blas_single was called */

static void blas_open(void)
{
    void *h = dlopen(AN_BLAS_LIB, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        strncpy(g_blas.why, e ? e : "not found", sizeof g_blas.why - 1);
        return;
    }
    /* POSIX allows object to function pointer conversion through dlsym */
    *(void **)&g_blas.sgemm = dlsym(h, "cblas_sgemm");
    *(void **)&g_blas.set_threads = dlsym(h, "openblas_set_num_threads");
    *(void **)&g_blas.get_threads = dlsym(h, "openblas_get_num_threads");
    /* only the pthreads build has a worker pool, and this function */
    shutdown_fn shutdown;
    *(void **)&shutdown = dlsym(h, "blas_thread_shutdown_");
    if (!g_blas.sgemm || !g_blas.set_threads || !g_blas.get_threads) {
        strncpy(g_blas.why, "lacks cblas_sgemm or openblas_set_num_threads",
                sizeof g_blas.why - 1);
        dlclose(h);
        return;
    }
    if (!getenv("OPENBLAS_NUM_THREADS") || atomic_load(&g_single)) {
        g_blas.set_threads(1);
        if (shutdown)
            shutdown();
    }
    atomic_store(&g_blas.ok, true); /* the handle stays open for the process's life */
}

bool an_blas_load(q_err *err)
{
    pthread_once(&g_blas.once, blas_open);
    if (atomic_load(&g_blas.ok))
        return true;
    q_fail(err, Q_EINTERNAL,
           "the forward pass needs OpenBLAS: cannot load %s (Debian: apt-get install "
           "libopenblas0): %s",
           AN_BLAS_LIB, g_blas.why);
    return false;
}

void an_sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a,
              int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    g_blas.sgemm(AN_ROW_MAJOR, trans_a ? AN_TRANS : AN_NO_TRANS, trans_b ? AN_TRANS : AN_NO_TRANS,
                 m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int an_blas_threads(void)
{
    return atomic_load(&g_blas.ok) ? g_blas.get_threads() : 1;
}

void an_blas_single(void)
{
    atomic_store(&g_single, true);
    if (atomic_load(&g_blas.ok))
        g_blas.set_threads(1);
}
