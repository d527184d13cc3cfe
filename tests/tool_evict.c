/* tool_evict.c — drops a file's pages from the page cache, for benchmarks that
 * must control how the cache was filled.
 *
 * usage: tool_evict FILE...
 * Clean pages go at once; a page still mapped by some process stays. Exit 0, or
 * 1 naming the file that could not be opened. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: tool_evict FILE...\n", stderr);
        return 64;
    }
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "tool_evict: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        fdatasync(fd); /* dirty pages cannot be dropped */
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    return 0;
}
