/* err.c: status codes, error messages and assertions. */
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *lm_strerror(int code)
{
    switch (code) {
    case LM_OK: return "ok";
    case LM_EINVAL: return "invalid argument or input";
    case LM_ENOMEM: return "out of memory";
    case LM_EIO: return "input/output error";
    case LM_EFORMAT: return "bad file format";
    case LM_EVERSION: return "unsupported version";
    case LM_ENOTFOUND: return "not found";
    case LM_EEXIST: return "already exists";
    case LM_ELIMIT: return "limit exceeded";
    case LM_EMISMATCH: return "mismatch";
    default: return "unknown error";
    }
}

static int err_vset(lm_err *err, int code, int with_errno, const char *fmt, va_list ap)
{
    int saved = errno;
    if (!err) return code;
    err->code = code;
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    if (n < 0) n = 0;
    if (with_errno && (size_t)n < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, ": %s", strerror(saved));
    return code;
}

int lm_err_set(lm_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = err_vset(err, code, 0, fmt, ap);
    va_end(ap);
    return r;
}

int lm_err_errno(lm_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = err_vset(err, code, 1, fmt, ap);
    va_end(ap);
    return r;
}

void lm_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "limaml: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
    abort();
}
