/* csv.c: a streaming reader for delimited logs. Hand-written rather than a library because
 * it is the hot loop of `limaml prepare` (millions of rows a second) and must report the line
 * and column of every mistake; it follows RFC 4180 quoting (quoted fields may hold the
 * delimiter, doubled quotes and newlines). */
#include "data/csv.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define CSV_CHUNK (4u << 20)       /* bytes read at a time */
#define CSV_MAX_RECORD (64u << 20) /* longest record accepted */

struct lm_csv {
    int fd;
    char *path;
    char delim;
    char *buf;
    size_t cap, beg, end; /* unread bytes are buf[beg, end) */
    int eof;
    uint64_t line;     /* line of the next unread byte */
    uint64_t rec_line; /* line where the last record started */
    uint64_t consumed;
};

int lm_csv_open(lm_csv **out, const char *path, char delim, lm_err *err)
{
    *out = NULL;
    lm_csv *r = calloc(1, sizeof *r);
    if (!r) return lm_err_set(err, LM_ENOMEM, "out of memory");
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        int rc = lm_err_errno(err, errno == ENOENT ? LM_ENOTFOUND : LM_EIO, "%s: cannot open", path);
        free(r);
        return rc;
    }
#ifdef POSIX_FADV_SEQUENTIAL
    posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    r->path = lm_strdup(path);
    r->cap = CSV_CHUNK * 2;
    r->buf = malloc(r->cap + 1);
    if (!r->path || !r->buf) {
        lm_csv_close(r);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    r->delim = delim;
    r->line = 1;
    *out = r;
    return LM_OK;
}

void lm_csv_close(lm_csv *r)
{
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    free(r->path);
    free(r->buf);
    free(r);
}

uint64_t lm_csv_line(const lm_csv *r)
{
    return r->rec_line;
}
const char *lm_csv_path(const lm_csv *r)
{
    return r->path;
}
uint64_t lm_csv_offset(const lm_csv *r)
{
    return r->consumed;
}

/* Read more bytes, keeping buf[beg, end). Returns bytes read, 0 at EOF, or an error code. */
static int fill(lm_csv *r, lm_err *err)
{
    if (r->eof) return 0;
    if (r->beg > 0) {
        memmove(r->buf, r->buf + r->beg, r->end - r->beg);
        r->end -= r->beg;
        r->beg = 0;
    }
    if (r->cap - r->end < CSV_CHUNK) {
        if (r->cap >= CSV_MAX_RECORD + CSV_CHUNK)
            return lm_err_set(err, LM_EINVAL, "%s:%llu: record longer than %u bytes", r->path,
                              (unsigned long long)r->line, CSV_MAX_RECORD);
        char *nb = realloc(r->buf, r->cap * 2 + 1);
        if (!nb) return lm_err_set(err, LM_ENOMEM, "out of memory");
        r->buf = nb;
        r->cap *= 2;
    }
    for (;;) {
        ssize_t got = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (got < 0) {
            if (errno == EINTR) continue;
            return lm_err_errno(err, LM_EIO, "%s: read", r->path);
        }
        if (got == 0) {
            r->eof = 1;
            return 0;
        }
        r->end += (size_t)got;
        return 1;
    }
}

/* Find the end of a record that holds quotes, starting at s, without changing anything:
 * returns its length including the newline (or up to e at the end of the input), or 0 when
 * the buffer ends inside the record and more bytes may come (`final` 0) or the input ends
 * inside a quoted field (`final` 1). *lines counts the newlines inside quoted fields. */
static size_t quoted_record_len(const char *s, const char *e, char delim, int final, uint64_t *lines)
{
    const char *p = s;
    *lines = 0;
    int at_field_start = 1;
    while (p < e) {
        if (at_field_start && *p == '"') {
            p++;
            for (;;) {
                if (p >= e) return 0;
                if (*p == '"') {
                    if (p + 1 < e && p[1] == '"') {
                        p += 2;
                        continue;
                    }
                    if (p + 1 >= e && !final) return 0; /* a doubled quote may follow */
                    p++;
                    break;
                }
                if (*p == '\n') (*lines)++;
                p++;
            }
            at_field_start = 0;
            continue;
        }
        if (*p == '\n') return (size_t)(p + 1 - s);
        at_field_start = *p == delim;
        p++;
    }
    return final ? (size_t)(e - s) : 0;
}

/* Split the complete record s[0..len) into fields, unescaping quoted fields in place. A field
 * with text after its closing quote gets len (uint32_t)-1. */
static void split_quoted(char *s, size_t len, char delim, lm_field *f, size_t max, size_t *n)
{
    char *e = s + len;
    if (e > s && e[-1] == '\n') e--;
    char *p = s;
    size_t k = 0;
    for (;;) {
        char *start = p, *w = p;
        int bad = 0;
        if (p < e && *p == '"') {
            p++;
            for (;;) {
                if (*p == '"') {
                    if (p + 1 < e && p[1] == '"') {
                        *w++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *w++ = *p++;
            }
            if (p < e && *p == '\r' && p + 1 == e) p++;
            if (p < e && *p != delim) {
                bad = 1;
                while (p < e && *p != delim) p++;
            }
        } else {
            while (p < e && *p != delim) p++;
            w = p;
            if (p == e && w > start && w[-1] == '\r') w--;
        }
        if (k < max) f[k] = (lm_field){start, bad ? (uint32_t)-1 : (uint32_t)(w - start)};
        k++;
        if (p < e && *p == delim) {
            p++;
            continue;
        }
        break;
    }
    *n = k;
}

#ifdef __SSE2__
/* The common record, split in one pass: no quotes, its newline inside the bytes read, more
 * than one byte long. Sixteen bytes at a time give bit masks of newlines, quotes and
 * delimiters; the delimiters before the newline are the field ends. This is the hot loop of
 * `prepare` (the byte loop plus two memchr passes over each line took a tenth of its time).
 * Returns 0, having changed nothing, for any other record: the general path below takes it. */
static int next_simple(lm_csv *r, lm_field *f, size_t max, size_t *n)
{
    const char *s = r->buf + r->beg, *e = r->buf + r->end, *p = s, *a = s;
    const __m128i vnl = _mm_set1_epi8('\n'), vq = _mm_set1_epi8('"'), vd = _mm_set1_epi8(r->delim);
    size_t k = 0;
    for (; p + 16 <= e; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        unsigned mnl = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, vnl));
        unsigned mq = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, vq));
        unsigned md = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, vd));
        unsigned before = mnl ? (mnl & (0u - mnl)) - 1 : 0xffffu; /* bits before the newline */
        if (mq & before) return 0;
        for (md &= before; md; md &= md - 1) {
            const char *d = p + __builtin_ctz(md);
            if (k < max) f[k] = (lm_field){a, (uint32_t)(d - a)};
            k++;
            a = d + 1;
        }
        if (!mnl) continue;
        const char *nl = p + __builtin_ctz(mnl), *end = nl;
        if (nl - s <= 1) return 0; /* blank line, or "\r" alone */
        if (end[-1] == '\r') end--;
        if (a > end) return 0; /* a delimiter of "\r" */
        if (k < max) f[k] = (lm_field){a, (uint32_t)(end - a)};
        *n = k + 1;
        size_t used = (size_t)(nl + 1 - s);
        r->rec_line = r->line++;
        r->beg += used;
        r->consumed += used;
        return 1;
    }
    return 0;
}
#endif

int lm_csv_next(lm_csv *r, lm_field *f, size_t max, size_t *n, lm_err *err)
{
#ifdef __SSE2__
    if (next_simple(r, f, max, n)) return 1;
#endif
    for (;;) {
        char *s = r->buf + r->beg;
        size_t avail = r->end - r->beg;
        char *nl = avail ? memchr(s, '\n', avail) : NULL;
        if (!nl && !r->eof) {
            int rc = fill(r, err);
            if (rc < 0) return rc;
            continue;
        }
        if (!nl && avail == 0) return 0;
        size_t linelen = nl ? (size_t)(nl - s) : avail;
        /* Blank line (or "\r" alone): skip. */
        if (linelen == 0 || (linelen == 1 && s[0] == '\r')) {
            r->beg += linelen + (nl ? 1 : 0);
            r->consumed += linelen + (nl ? 1 : 0);
            r->line++;
            continue;
        }
        if (memchr(s, '"', linelen)) {
            uint64_t lines;
            size_t used = quoted_record_len(s, r->buf + r->end, r->delim, r->eof, &lines);
            if (!used) {
                if (r->eof)
                    return lm_err_set(err, LM_EINVAL, "%s:%llu: unterminated quoted field", r->path,
                                      (unsigned long long)r->line);
                int rc = fill(r, err);
                if (rc < 0) return rc;
                continue;
            }
            split_quoted(s, used, r->delim, f, max, n);
            r->rec_line = r->line;
            r->line += lines + 1;
            r->beg += used;
            r->consumed += used;
            for (size_t i = 0; i < *n && i < max; i++)
                if (f[i].len == (uint32_t)-1)
                    return lm_err_set(err, LM_EINVAL, "%s:%llu:%zu: text after a closing quote", r->path,
                                      (unsigned long long)r->rec_line, i + 1);
            return 1;
        }
        /* Fast path: no quotes on this line. */
        size_t end = linelen;
        if (end && s[end - 1] == '\r') end--;
        size_t k = 0, a = 0;
        const char d = r->delim;
        for (size_t i = 0; i < end; i++) {
            if (s[i] == d) {
                if (k < max) f[k] = (lm_field){s + a, (uint32_t)(i - a)};
                k++;
                a = i + 1;
            }
        }
        if (k < max) f[k] = (lm_field){s + a, (uint32_t)(end - a)};
        k++;
        *n = k;
        r->rec_line = r->line++;
        r->beg += linelen + (nl ? 1 : 0);
        r->consumed += linelen + (nl ? 1 : 0);
        return 1;
    }
}

/* ---- numbers ---------------------------------------------------------------------------------- */

static const double pow10_tab[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                     1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

const char *lm_num_what(int r)
{
    switch (r) {
    case LM_NUM_EMPTY: return "empty value";
    case LM_NUM_NONFINITE: return "NaN or infinite value";
    default: return "not a number";
    }
}

/* Clinger's fast path: a mantissa below 2^53 times an exact power of ten up to 1e22 is
 * correctly rounded by one multiplication or division, so the result equals strtod's; other
 * inputs fall back to strtod. */
int lm_parse_f64(const char *p, size_t len, double *out)
{
    const char *e = p + len;
    while (p < e && (*p == ' ' || *p == '\t')) p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) e--;
    if (p == e) return LM_NUM_EMPTY;
    const char *s0 = p;
    int neg = 0;
    if (*p == '-' || *p == '+') neg = *p++ == '-';
    uint64_t m = 0;
    int digits = 0, frac = 0, any = 0;
    while (p < e && (unsigned)(*p - '0') < 10) {
        if (digits < 19) {
            m = m * 10 + (uint64_t)(*p - '0');
            if (m) digits++;
        } else {
            frac--; /* dropped integer digit: handled by the slow path below */
        }
        p++;
        any = 1;
    }
    if (p < e && *p == '.') {
        p++;
        while (p < e && (unsigned)(*p - '0') < 10) {
            if (digits < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                if (m) digits++;
                frac++;
            }
            p++;
            any = 1;
        }
    }
    if (!any) {
        /* "nan", "inf", "infinity" get their own message */
        size_t n = (size_t)(e - p);
        if ((n == 3 && !strncasecmp(p, "nan", 3)) || (n == 3 && !strncasecmp(p, "inf", 3)) ||
            (n == 8 && !strncasecmp(p, "infinity", 8)))
            return LM_NUM_NONFINITE;
        return LM_NUM_BAD;
    }
    int ex = 0;
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        int eneg = 0;
        if (p < e && (*p == '-' || *p == '+')) eneg = *p++ == '-';
        if (p == e || (unsigned)(*p - '0') >= 10) return LM_NUM_BAD;
        while (p < e && (unsigned)(*p - '0') < 10) {
            if (ex < 100000) ex = ex * 10 + (*p - '0');
            p++;
        }
        if (eneg) ex = -ex;
    }
    if (p != e) return LM_NUM_BAD;
    int e10 = ex - frac;
    if (digits <= 15 && frac >= 0 && m < (1ull << 53) && e10 >= -22 && e10 <= 22) {
        double v = (double)m;
        v = e10 < 0 ? v / pow10_tab[-e10] : v * pow10_tab[e10];
        *out = neg ? -v : v;
        return LM_NUM_OK;
    }
    char tmp[128];
    size_t n = (size_t)(e - s0);
    if (n >= sizeof tmp) return LM_NUM_BAD;
    memcpy(tmp, s0, n);
    tmp[n] = 0;
    errno = 0;
    char *end;
    double v = strtod(tmp, &end);
    if (*end) return LM_NUM_BAD;
    if (!isfinite(v)) return LM_NUM_NONFINITE;
    *out = v;
    return LM_NUM_OK;
}
