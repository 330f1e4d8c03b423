/* text.c: the growable text buffer the replies and /metrics are written into, JSON string
 * escaping, float formatting and request errors. */
#include "serve/serve.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void lm_srv_buf_reset(lm_srv_buf *b)
{
    b->len = 0;
    b->oom = 0;
    if (b->p) b->p[0] = 0;
}

void lm_srv_buf_free(lm_srv_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Room for `extra` more bytes and a NUL. Growth doubles, so a thread's reply buffer reaches
 * its working size after a few requests and then never allocates again. */
int lm_srv_buf_reserve(lm_srv_buf *b, size_t extra)
{
    if (b->oom) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void lm_srv_buf_put(lm_srv_buf *b, const char *s, size_t n)
{
    if (lm_srv_buf_reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void lm_srv_buf_puts(lm_srv_buf *b, const char *s)
{
    lm_srv_buf_put(b, s, strlen(s));
}

void lm_srv_buf_printf(lm_srv_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        lm_srv_buf_put(b, small, (size_t)n);
        return;
    }
    if (lm_srv_buf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the UTF-8 sequence starting at s (at most n bytes), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (k == 0 || k > n) return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (k == 2 && c < 0xc2) return 0;                  /* overlong */
    if (k == 3 && c == 0xe0 && s[1] < 0xa0) return 0;  /* overlong */
    if (k == 3 && c == 0xed && s[1] >= 0xa0) return 0; /* surrogate */
    if (k == 4 && ((c == 0xf0 && s[1] < 0x90) || c > 0xf4 || (c == 0xf4 && s[1] >= 0x90))) return 0;
    return k;
}

void lm_srv_buf_json_str(lm_srv_buf *b, const char *s, size_t n)
{
    if (lm_srv_buf_reserve(b, n + 2)) return;
    lm_srv_buf_put(b, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned c = u[i];
        size_t k = c >= 0x20 && c != '"' && c != '\\' ? utf8_len(u + i, n - i) : 0;
        if (k) {
            i += k;
            run += k;
            continue;
        }
        lm_srv_buf_put(b, s + i - run, run);
        run = 0;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", c);
        else if (c == '\n')
            snprintf(esc, sizeof esc, "\\n");
        else if (c == '\t')
            snprintf(esc, sizeof esc, "\\t");
        else
            snprintf(esc, sizeof esc, "\\u%04x", c);
        lm_srv_buf_puts(b, esc);
        i++;
    }
    lm_srv_buf_put(b, s + n - run, run);
    lm_srv_buf_put(b, "\"", 1);
}

void lm_srv_buf_f32(lm_srv_buf *b, float x)
{
    if (lm_srv_buf_reserve(b, 32)) return;
    if (!isfinite(x)) { /* never a score (those are checked), but keep the JSON valid */
        lm_srv_buf_puts(b, "null");
        return;
    }
    int n = snprintf(b->p + b->len, 32, "%.9g", (double)x);
    b->len += (size_t)n;
}

int lm_srv_fail(lm_srv_err *e, int status, const char *field, const char *fmt, ...)
{
    e->status = status;
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    size_t off = 0;
    if (e->field[0]) off = (size_t)snprintf(e->msg, sizeof e->msg, "%s: ", e->field);
    if (off >= sizeof e->msg) off = sizeof e->msg - 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg + off, sizeof e->msg - off, fmt, ap);
    va_end(ap);
    return status;
}
