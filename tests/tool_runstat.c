/* tool_runstat.c — runs a command and reports its wall time and peak RSS.
 *
 * usage: tool_runstat CMD [ARGS...]
 * The command's stdout goes to /dev/null, its stderr passes through; prints
 * "wall_s=<seconds> maxrss_kb=<kB> rc=<exit code>" on stdout. */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs("usage: tool_runstat CMD [ARGS...]\n", stderr);
        return 64;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0)
        return 71;
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0)
            dup2(fd, 1);
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0)
        return 71;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("wall_s=%.4f maxrss_kb=%ld rc=%d\n", wall, ru.ru_maxrss, rc);
    return 0;
}
