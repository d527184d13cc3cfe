/* fuzz_imatrix.c — libFuzzer target for q_imatrix_load, both formats (an input
 * starting with "GGUF" takes the GGUF path). The input is written to an
 * in-memory file (memfd, else a temporary file) and loaded by path, as the
 * real caller does. Any input must load or fail with Q_EDATA, never crash; a
 * loaded imatrix must satisfy the reader's contract: at least one entry, names
 * non-empty and found by q_imatrix_find, n, n_mat >= 1, every value finite and
 * >= 0. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <math.h>

#include "q_imatrix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fd = -1;
static char path[64];

static int open_file(void)
{
    fd = memfd_create("fuzz_imatrix", 0);
    if (fd >= 0) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        return 0;
    }
    snprintf(path, sizeof path, "/tmp/fuzz_imatrix.XXXXXX");
    fd = mkstemp(path);
    return fd >= 0 ? 0 : -1;
}

static void check(const q_imatrix *im)
{
    if (im->n_entries < 1 || !im->entries || !im->path || im->chunk_count < 0)
        abort();
    if (im->dataset && !im->dataset[0])
        abort();
    for (int64_t i = 0; i < im->n_entries; i++) {
        const q_imatrix_entry *e = &im->entries[i];
        if (!e->name || !e->name[0] || e->n < 1 || e->n_mat < 1 || e->ncall < 0)
            abort();
        if (q_imatrix_find(im, e->name) != e) /* names are unique */
            abort();
        for (int64_t j = 0; j < e->n * e->n_mat; j++) {
            if (!isfinite(e->values[j]) || e->values[j] < 0.0f)
                abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0 && open_file() != 0)
        abort();
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    q_imatrix *im = NULL;
    q_err err;
    err.msg[0] = '\0';
    q_status st = q_imatrix_load(path, &im, &err);
    if (st == Q_OK) {
        check(im);
        q_imatrix_free(im);
    } else if (st != Q_EDATA || im != NULL || strncmp(err.msg, path, strlen(path)) != 0) {
        abort();
    }
    return 0;
}
