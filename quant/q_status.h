/* q_status.h — status codes and the caller-owned error buffer of the engine.
 *
 * The engine (quant/, kernels/, analysis/) never prints and never exits: every
 * fallible function returns a q_status and, on failure, writes one human-readable
 * line into a q_err the caller owns. The numeric value of each status is the
 * process exit code the CLI uses for it (sysexits.h), so callers can simply
 * `return (int)st;` after printing err.msg.
 */
#ifndef Q_STATUS_H
#define Q_STATUS_H

#include <stddef.h>

/* X(name, exit code, short description) */
#define Q_STATUS_LIST(X)                                   \
    X(Q_OK, 0, "ok")                                       \
    X(Q_EUSAGE, 64, "usage error")                         \
    X(Q_EDATA, 65, "bad input data")                       \
    X(Q_ENOINPUT, 66, "cannot open input")                 \
    X(Q_EINTERNAL, 70, "internal error")                   \
    X(Q_ENOMEM, 71, "out of memory")                       \
    X(Q_ECANTCREAT, 73, "cannot create output")            \
    X(Q_EIO, 74, "I/O error")                              \
    X(Q_ECANCELLED, 75, "cancelled")

typedef enum q_status {
#define Q_STATUS_ENUM(name, code, desc) name = code,
    Q_STATUS_LIST(Q_STATUS_ENUM)
#undef Q_STATUS_ENUM
} q_status;

/* One line, no trailing newline. Always NUL-terminated once a function failed. */
typedef struct q_err {
    char msg[1024];
} q_err;

/* Short description of a status ("bad input data"); never NULL. */
const char *q_status_str(q_status st);

/* printf-style: writes the message into err (if err is not NULL) and returns st.
 * Typical use: `return q_fail(err, Q_EDATA, "%s: offset %zu: bad magic", f, off);` */
q_status q_fail(q_err *err, q_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like q_fail, but prepends "PREFIX: " to the message already in err. Returns st. */
q_status q_fail_prefix(q_err *err, q_status st, const char *prefix);

#endif
