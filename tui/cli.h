/* cli.h — the qtune command-line subcommands. Each takes the arguments after its
 * name (argv[0] is the subcommand name, as with getopt), prints data to stdout and
 * messages to stderr, and returns a process exit code (see q_status.h). */
#ifndef CLI_H
#define CLI_H

int cmd_inspect(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_preview(int argc, char **argv);
int cmd_apply(int argc, char **argv);
int cmd_calib(int argc, char **argv);

/* Prints "qtune: " + message + newline to stderr. */
void cli_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
