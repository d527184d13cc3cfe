/* q_io.c — read-only mappings, small-file reads and atomic output files. */
#include "q_io.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

q_status q_map_file(const char *path, q_map *out, q_err *err)
{
    out->data = NULL;
    out->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return q_fail(err, Q_ENOINPUT, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return q_fail(err, Q_ENOINPUT, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return q_fail(err, Q_ENOINPUT, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return q_fail(err, Q_ENOINPUT, "%s: cannot map: %s", path, strerror(e));
        }
        /* A hint: pages this mapping brings into the page cache come in 2 MiB
         * folios, which later mappings (this run's or the next's) map with one
         * fault per 2 MiB instead of one per 4-64 KiB. Ignored where
         * unsupported. */
#ifdef MADV_HUGEPAGE
        madvise(p, (size_t)st.st_size, MADV_HUGEPAGE);
#endif
        out->data = p;
        out->size = (uint64_t)st.st_size;
    }
    close(fd); /* the mapping keeps the file alive */
    return Q_OK;
}

void q_unmap(q_map *m)
{
    if (m && m->data)
        munmap((void *)(uintptr_t)m->data, (size_t)m->size);
    if (m) {
        m->data = NULL;
        m->size = 0;
    }
}

/* The rest of fp (a pipe, a terminal) into buf from n on, growing it: Q_EDATA
 * past max_bytes. */
static q_status q_read_stream(FILE *fp, const char *path, size_t max_bytes, char **buf,
                              size_t *n, q_err *err)
{
    size_t cap = *n;
    for (;;) {
        if (*n == cap) {
            if (cap > max_bytes)
                return q_fail(err, Q_EDATA, "%s: more than the %zu bytes allowed", path,
                              max_bytes);
            size_t ncap = cap < 65536 ? 65536 : 2 * cap;
            ncap = ncap > max_bytes + 1 ? max_bytes + 1 : ncap;
            char *nb = realloc(*buf, ncap + 1);
            if (!nb)
                return q_fail(err, Q_ENOMEM, "%s: out of memory reading %zu bytes", path, ncap);
            *buf = nb;
            cap = ncap;
        }
        size_t k = fread(*buf + *n, 1, cap - *n, fp);
        *n += k;
        if (k == 0)
            return ferror(fp) ? q_fail(err, Q_EIO, "%s: read error", path) : Q_OK;
    }
}

q_status q_read_small_file(const char *path, size_t max_bytes, char **out, size_t *len,
                           q_err *err)
{
    *out = NULL;
    if (len)
        *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return q_fail(err, Q_ENOINPUT, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        const int e = errno;
        fclose(fp);
        return q_fail(err, Q_ENOINPUT, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        fclose(fp);
        return q_fail(err, Q_ENOINPUT, "%s: a directory, not a file", path);
    }
    const bool regular = S_ISREG(st.st_mode);
    if (regular && (uint64_t)st.st_size > max_bytes) {
        fclose(fp);
        return q_fail(err, Q_EDATA, "%s: file is %lld bytes, more than the %zu allowed", path,
                      (long long)st.st_size, max_bytes);
    }
    /* a regular file in one read of its size, a pipe or device as it comes */
    size_t n = 0;
    char *buf = NULL;
    q_status rc = Q_OK;
    if (regular) {
        n = (size_t)st.st_size;
        buf = malloc(n + 1);
        if (!buf)
            rc = q_fail(err, Q_ENOMEM, "%s: out of memory reading %zu bytes", path, n);
        else if (fread(buf, 1, n, fp) != n || ferror(fp))
            rc = q_fail(err, Q_EIO, "%s: read error", path);
    } else {
        rc = q_read_stream(fp, path, max_bytes, &buf, &n, err);
    }
    fclose(fp);
    if (rc != Q_OK) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return Q_OK;
}

/* The temporary file being written, for signal handlers (see q_atomic_current_tmp). */
static const char *volatile g_current_tmp;

const char *q_atomic_current_tmp(void)
{
    return g_current_tmp;
}

q_status q_atomic_open(q_atomic *a, const char *path, q_err *err)
{
    memset(a, 0, sizeof *a);
    char *dcopy = strdup(path), *bcopy = strdup(path);
    if (!dcopy || !bcopy) {
        free(dcopy);
        free(bcopy);
        return q_fail(err, Q_ENOMEM, "%s: out of memory", path);
    }
    const char *dir = dirname(dcopy), *base = basename(bcopy);
    size_t n = strlen(dir) + strlen(base) + 16;
    a->tmp_path = malloc(n);
    a->path = strdup(path);
    if (!a->tmp_path || !a->path) {
        free(dcopy);
        free(bcopy);
        q_atomic_abort(a);
        return q_fail(err, Q_ENOMEM, "%s: out of memory", path);
    }
    snprintf(a->tmp_path, n, "%s/.%s.XXXXXX", dir, base);
    free(dcopy);
    free(bcopy);
    int fd = mkostemp(a->tmp_path, O_CLOEXEC);
    if (fd < 0) {
        q_status st = q_fail(err, Q_ECANTCREAT, "%s: cannot create a temporary file: %s", path,
                             strerror(errno));
        free(a->tmp_path);
        a->tmp_path = NULL;
        q_atomic_abort(a);
        return st;
    }
    fchmod(fd, 0644);
    a->fp = fdopen(fd, "wb");
    if (!a->fp) {
        close(fd);
        q_atomic_abort(a);
        return q_fail(err, Q_ECANTCREAT, "%s: cannot open the temporary file", path);
    }
    g_current_tmp = a->tmp_path;
    return Q_OK;
}

static void atomic_release(q_atomic *a)
{
    if (g_current_tmp == a->tmp_path)
        g_current_tmp = NULL;
    free(a->path);
    free(a->tmp_path);
    a->path = a->tmp_path = NULL;
    a->fp = NULL;
}

q_status q_atomic_commit(q_atomic *a, q_err *err)
{
    q_status st = Q_OK;
    if (!a->fp || !a->tmp_path)
        return q_fail(err, Q_EINTERNAL, "atomic commit without an open file");
    if (fflush(a->fp) != 0 || fsync(fileno(a->fp)) != 0) {
        st = q_fail(err, Q_EIO, "%s: cannot write: %s", a->path, strerror(errno));
        goto fail;
    }
    FILE *fp = a->fp;
    a->fp = NULL;
    if (fclose(fp) != 0) {
        st = q_fail(err, Q_EIO, "%s: cannot close: %s", a->path, strerror(errno));
        goto fail;
    }
    if (rename(a->tmp_path, a->path) != 0) {
        st = q_fail(err, Q_ECANTCREAT, "%s: cannot rename into place: %s", a->path,
                    strerror(errno));
        goto fail;
    }
    /* Make the rename durable: fsync the directory (best effort). */
    char *dcopy = strdup(a->path);
    if (dcopy) {
        int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dcopy);
    }
    atomic_release(a);
    return Q_OK;
fail:
    q_atomic_abort(a);
    return st;
}

void q_atomic_abort(q_atomic *a)
{
    if (!a)
        return;
    if (a->fp) {
        fclose(a->fp);
        a->fp = NULL;
    }
    if (a->tmp_path)
        unlink(a->tmp_path);
    atomic_release(a);
}
