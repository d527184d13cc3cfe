/* tool_io.h — the file I/O the test helper programs (tests/tool_*.c) share.
 * Each program has its own copy (static). */
#ifndef TOOL_IO_H
#define TOOL_IO_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum {
    TOOL_IO_EOPEN = 1, /* cannot open (read) or create (write) the file */
    TOOL_IO_ESHORT,    /* fewer values than asked for */
    TOOL_IO_ELONG,     /* more bytes than asked for */
    TOOL_IO_EWRITE,    /* fwrite failed */
    TOOL_IO_ECLOSE     /* fclose failed after writing (the data may be lost) */
};

/* Reads exactly n little-endian f32 values from path into dst: 0, or one of
 * TOOL_IO_EOPEN, TOOL_IO_ESHORT, TOOL_IO_ELONG. */
static inline int tool_read_f32(const char *path, float *dst, int64_t n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return TOOL_IO_EOPEN;
    int rc = 0;
    uint8_t b[4];
    for (int64_t i = 0; i < n; i++) {
        if (fread(b, 1, 4, fp) != 4) {
            rc = TOOL_IO_ESHORT;
            goto done;
        }
        uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                     (uint32_t)b[3] << 24;
        memcpy(&dst[i], &u, sizeof u);
    }
    if (fread(b, 1, 1, fp) != 0)
        rc = TOOL_IO_ELONG;
done:
    fclose(fp);
    return rc;
}

/* Creates (or truncates) path and writes the n bytes of data: 0, or one of
 * TOOL_IO_EOPEN, TOOL_IO_EWRITE, TOOL_IO_ECLOSE. */
static inline int tool_write_file(const char *path, const void *data, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return TOOL_IO_EOPEN;
    if (fwrite(data, 1, n, fp) != n) {
        fclose(fp);
        return TOOL_IO_EWRITE;
    }
    if (fclose(fp) != 0)
        return TOOL_IO_ECLOSE;
    return 0;
}

#endif
