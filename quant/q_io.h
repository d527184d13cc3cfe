/* q_io.h — read-only file mapping and atomic output files.
 *
 * q_map_file maps a whole file read-only (never reads it into RAM). q_atomic_*
 * write a file next to its final path under a temporary name, fsync it and
 * rename it into place, so a reader never sees a partial file and an error or
 * a signal leaves nothing behind.
 */
#ifndef Q_IO_H
#define Q_IO_H

#include <stdint.h>
#include <stdio.h>

#include "q_status.h"

typedef struct q_map {
    const uint8_t *data; /* NULL for an empty file */
    uint64_t size;
} q_map;

/* Maps path read-only. Q_ENOINPUT when it cannot be opened or is not a regular
 * file. Unmap with q_unmap. An empty file gives data == NULL, size == 0. */
q_status q_map_file(const char *path, q_map *out, q_err *err);
void q_unmap(q_map *m);

/* Reads a whole file (config.json, index, plan, calibration text) into a
 * NUL-terminated malloc'd buffer: a regular file, or a pipe or device read to
 * its end (`--plan <(...)`, /dev/stdin). More than max_bytes gives Q_EDATA, a
 * directory Q_ENOINPUT. Caller frees *out. */
q_status q_read_small_file(const char *path, size_t max_bytes, char **out, size_t *len,
                           q_err *err);

typedef struct q_atomic {
    char *path;     /* final path (owned) */
    char *tmp_path; /* temporary path in the same directory (owned) */
    FILE *fp;       /* open for writing; write through it */
} q_atomic;

/* Creates "DIR/.NAME.XXXXXX" beside path for writing. Q_ECANTCREAT on failure. */
q_status q_atomic_open(q_atomic *a, const char *path, q_err *err);
/* Flushes, fsyncs, renames into place and fsyncs the directory. On failure the
 * temporary file is removed. Always releases a. */
q_status q_atomic_commit(q_atomic *a, q_err *err);
/* Closes and removes the temporary file; safe to call twice or after commit. */
void q_atomic_abort(q_atomic *a);

/* Path of the temporary file currently being written, or NULL. For signal
 * handlers that must unlink it (async-signal-safe read of one pointer). */
const char *q_atomic_current_tmp(void);

#endif
