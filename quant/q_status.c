/* q_status.c — status names and error-buffer helpers. */
#include "q_status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *q_status_str(q_status st)
{
    switch (st) {
#define Q_STATUS_CASE(name, code, desc) \
    case name:                          \
        return desc;
        Q_STATUS_LIST(Q_STATUS_CASE)
#undef Q_STATUS_CASE
    }
    return "unknown status";
}

q_status q_fail(q_err *err, q_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

q_status q_fail_prefix(q_err *err, q_status st, const char *prefix)
{
    if (err) {
        size_t cap = sizeof err->msg, plen = strlen(prefix);
        if (plen + 2 >= cap)
            plen = cap - 3;
        size_t mlen = strnlen(err->msg, cap - 1);
        if (plen + 2 + mlen >= cap)
            mlen = cap - 1 - plen - 2;
        memmove(err->msg + plen + 2, err->msg, mlen);
        memcpy(err->msg, prefix, plen);
        err->msg[plen] = ':';
        err->msg[plen + 1] = ' ';
        err->msg[plen + 2 + mlen] = '\0';
    }
    return st;
}
