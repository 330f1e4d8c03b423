/* request.c: the strict parser of /v1/score and /v1/embedding bodies.
 *
 * A hand-written recursive descent over exactly the request's shape, writing candidates
 * straight into the thread's rows: no tree is built, nothing is allocated (the string scratch
 * grows once), and each number is converted where it stands. JSON is checked as RFC 8259 says
 * (UTF-8, no control characters in strings, no leading zeros, no trailing commas, nothing after
 * the value) and every field against the model's schema. Any mistake is a 400 (413 for too many
 * candidates) whose message names the field: "candidates[3].dense[2]: expected a number".
 *
 *   {"task": {"user_id": "42"},                      task columns by name; strings or integers
 *    "meta": [0.5, 1, ...] | {"m_age": 0.5, ...},    all meta features, schema order or by name
 *    "candidates": [{"dense": [..] | {..},           all dense features, order or by name
 *                    "categorical": {"item_id": 7} | [7, ...]}, ...]}
 *
 * Numbers become floats as `limaml prepare` reads them (the double strtod gives, rounded to
 * float); a value that is not finite as a float is refused. Categorical values are hashed as
 * lm_cat_id does for a CSV cell (integers below the column's buckets kept): an integer by its
 * digits, a string by its bytes. */
#include "data/csv.h"
#include "data/join.h"
#include "serve/serve.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct jp {
    const char *p, *end, *begin;
    const lm_srv_model *sm;
    lm_srv_ws *w;
    lm_srv_err *e;
    char path[LM_SRV_FIELD_MAX];
    size_t plen;
} jp;

/* ---- errors and the field path --------------------------------------------------------------- */

static int jfail(jp *j, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int jfail(jp *j, int status, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lm_srv_fail(j->e, status, j->plen ? j->path : "body", "%s", msg);
}

static int syntax(jp *j, const char *what)
{
    if (j->p >= j->end) return jfail(j, 400, "malformed JSON: the body ends where %s was expected", what);
    return jfail(j, 400, "malformed JSON at byte %zu: expected %s", (size_t)(j->p - j->begin), what);
}

/* Append ".name" (or "name" at the top) to the path; returns the length to restore. Called for
 * every field, so no printf: bytes are copied, control characters shown as '?'. */
static size_t push_key(jp *j, const char *k, size_t n)
{
    size_t old = j->plen, room = sizeof j->path - 1 - j->plen;
    char *d = j->path + j->plen;
    size_t w = 0;
    if (j->plen && w < room) d[w++] = '.';
    for (size_t i = 0; i < n && i < 64 && w < room; i++) d[w++] = (unsigned char)k[i] < 0x20 ? '?' : k[i];
    j->plen += w;
    j->path[j->plen] = 0;
    return old;
}

static size_t push_index(jp *j, size_t i)
{
    char tmp[24], *t = tmp + sizeof tmp;
    *--t = ']';
    do *--t = (char)('0' + i % 10);
    while (i /= 10);
    *--t = '[';
    size_t old = j->plen, n = (size_t)(tmp + sizeof tmp - t);
    if (n > sizeof j->path - 1 - j->plen) n = sizeof j->path - 1 - j->plen;
    memcpy(j->path + j->plen, t, n);
    j->plen += n;
    j->path[j->plen] = 0;
    return old;
}

static void pop(jp *j, size_t old)
{
    j->plen = old;
    j->path[old] = 0;
}

/* ---- tokens ------------------------------------------------------------------------------------ */

static void skip_ws(jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t')) j->p++;
}

static int peek(jp *j)
{
    skip_ws(j);
    return j->p < j->end ? (unsigned char)*j->p : -1;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static int utf8_ok(const unsigned char *s, size_t n, size_t *k)
{
    unsigned c = s[0];
    size_t m = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (m == 0 || m > n) return 0;
    for (size_t i = 1; i < m; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if ((m == 2 && c < 0xc2) || (m == 3 && c == 0xe0 && s[1] < 0xa0) ||
        (m == 3 && c == 0xed && s[1] >= 0xa0) ||
        (m == 4 && ((c == 0xf0 && s[1] < 0x90) || c > 0xf4 || (c == 0xf4 && s[1] >= 0x90))))
        return 0;
    *k = m;
    return 1;
}

static int str_room(jp *j, size_t need)
{
    lm_srv_ws *w = j->w;
    if (need <= w->str_cap) return 0;
    size_t cap = w->str_cap ? w->str_cap : 256;
    while (cap < need) cap *= 2;
    char *p = realloc(w->str, cap);
    if (!p) return jfail(j, 500, "out of memory");
    w->str = p;
    w->str_cap = cap;
    return 0;
}

/* A string at j->p ('"'): *s, *n get its bytes, pointing into the body when it has no escape,
 * else decoded into the thread's string scratch (valid until the next string). */
static int jstring(jp *j, const char **s, size_t *n)
{
    if (peek(j) != '"') return syntax(j, "a string");
    const char *q = ++j->p;
    while (q < j->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20 && (unsigned char)*q < 0x80)
        q++;
    if (q < j->end && *q == '"') { /* the common case: plain ASCII */
        *s = j->p, *n = (size_t)(q - j->p);
        j->p = q + 1;
        return 0;
    }
    size_t len = 0;
    if (str_room(j, (size_t)(j->end - j->p) + 1)) return 500;
    char *d = j->w->str;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p;
        if (c == '"') {
            j->p++;
            *s = d, *n = len;
            return 0;
        }
        if (c < 0x20)
            return jfail(j, 400, "malformed JSON at byte %zu: a control character in a string",
                         (size_t)(j->p - j->begin));
        if (c >= 0x80) {
            size_t k;
            if (!utf8_ok((const unsigned char *)j->p, (size_t)(j->end - j->p), &k))
                return jfail(j, 400, "malformed JSON at byte %zu: a string is not valid UTF-8",
                             (size_t)(j->p - j->begin));
            memcpy(d + len, j->p, k);
            len += k, j->p += k;
            continue;
        }
        if (c != '\\') {
            d[len++] = (char)c;
            j->p++;
            continue;
        }
        if (j->end - j->p < 2) break;
        char e = j->p[1];
        j->p += 2;
        static const char pairs[] = "\"\"\\\\//b\bf\fn\nr\rt\t"; /* escape letter, then its byte */
        const char *at = e ? strchr(pairs, e) : NULL;
        if (at && (at - pairs) % 2 == 0) {
            d[len++] = at[1];
            continue;
        }
        if (e != 'u')
            return jfail(j, 400, "malformed JSON at byte %zu: a bad escape '\\%c'",
                         (size_t)(j->p - j->begin - 2), e);
        unsigned cp = 0;
        for (int rep = 0; rep < 2; rep++) {
            if (j->end - j->p < 4) return syntax(j, "four hex digits");
            unsigned v = 0;
            for (int i = 0; i < 4; i++) {
                int h = hexval((unsigned char)j->p[i]);
                if (h < 0) return syntax(j, "four hex digits");
                v = v * 16 + (unsigned)h;
            }
            j->p += 4;
            if (rep == 0 && v >= 0xd800 && v < 0xdc00) { /* a high surrogate: its pair must follow */
                if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
                    return jfail(j, 400, "malformed JSON: a lone surrogate \\u%04x", v);
                j->p += 2;
                cp = v;
                continue;
            }
            if (rep == 1) {
                if (v < 0xdc00 || v >= 0xe000)
                    return jfail(j, 400, "malformed JSON: a lone surrogate \\u%04x", cp);
                v = 0x10000 + ((cp - 0xd800) << 10) + (v - 0xdc00);
            } else if (v >= 0xdc00 && v < 0xe000) {
                return jfail(j, 400, "malformed JSON: a lone surrogate \\u%04x", v);
            }
            cp = v;
            break;
        }
        if (cp < 0x80)
            d[len++] = (char)cp;
        else if (cp < 0x800)
            d[len++] = (char)(0xc0 | cp >> 6), d[len++] = (char)(0x80 | (cp & 0x3f));
        else if (cp < 0x10000)
            d[len++] = (char)(0xe0 | cp >> 12), d[len++] = (char)(0x80 | ((cp >> 6) & 0x3f)),
            d[len++] = (char)(0x80 | (cp & 0x3f));
        else
            d[len++] = (char)(0xf0 | cp >> 18), d[len++] = (char)(0x80 | ((cp >> 12) & 0x3f)),
            d[len++] = (char)(0x80 | ((cp >> 6) & 0x3f)), d[len++] = (char)(0x80 | (cp & 0x3f));
    }
    return syntax(j, "the end of a string");
}

/* A number token at j->p, checked against JSON's grammar: *s, *n its text; *is_int when it
 * has no fraction and no exponent. */
static int jnumber(jp *j, const char **s, size_t *n, int *is_int)
{
    const char *q = j->p, *e = j->end;
    if (q < e && *q == '-') q++;
    if (q >= e || (unsigned)(*q - '0') > 9) return 1;
    if (*q == '0') {
        if (++q < e && (unsigned)(*q - '0') <= 9) return 1; /* a leading zero */
    } else
        while (q < e && (unsigned)(*q - '0') <= 9) q++;
    *is_int = 1;
    if (q < e && *q == '.') {
        q++;
        if (q >= e || (unsigned)(*q - '0') > 9) return 1;
        while (q < e && (unsigned)(*q - '0') <= 9) q++;
        *is_int = 0;
    }
    if (q < e && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < e && (*q == '+' || *q == '-')) q++;
        if (q >= e || (unsigned)(*q - '0') > 9) return 1;
        while (q < e && (unsigned)(*q - '0') <= 9) q++;
        *is_int = 0;
    }
    *s = j->p, *n = (size_t)(q - j->p);
    j->p = q;
    return 0;
}

/* What kind of value starts here, for messages: "a string", "an object", ... */
static const char *kind_here(jp *j)
{
    int c = peek(j);
    switch (c) {
    case '"': return "a string";
    case '{': return "an object";
    case '[': return "an array";
    case 't':
    case 'f': return "a boolean";
    case 'n': return "null";
    case -1: return "the end of the body";
    default: return (c == '-' || (c >= '0' && c <= '9')) ? "a number" : "something that is not JSON";
    }
}

/* A number converted to float. */
static int jfloat(jp *j, float *out)
{
    const char *s;
    size_t n;
    int is_int;
    int c = peek(j);
    if (c == 'N' || c == 'I' || (c == '-' && j->end - j->p > 1 && j->p[1] == 'I'))
        return jfail(j, 400, "expected a number, got NaN or Infinity (not JSON, and not a feature value)");
    if (c != '-' && !(c >= '0' && c <= '9')) return jfail(j, 400, "expected a number, got %s", kind_here(j));
    if (jnumber(j, &s, &n, &is_int))
        return jfail(j, 400, "malformed JSON at byte %zu: not a JSON number", (size_t)(j->p - j->begin));
    double d;
    if (!lm_parse_f64_fast(s, n, &d)) {
        int r = lm_parse_f64(s, n, &d);
        if (r == LM_NUM_BAD && n >= 128) return jfail(j, 400, "a number of %zu characters is too long", n);
        if (r != LM_NUM_OK) return jfail(j, 400, "%.*s is out of range", (int)LM_MIN(n, 40u), s);
    }
    float f = (float)d;
    if (!isfinite(f)) return jfail(j, 400, "%.*s is out of the range of a float", (int)LM_MIN(n, 40u), s);
    *out = f;
    return 0;
}

static int expect(jp *j, char c, const char *what)
{
    if (peek(j) != (unsigned char)c) return syntax(j, what);
    j->p++;
    return 0;
}

/* Walk an object: for each member, `member(j, key, keylen, ctx)` parses its value. */
typedef int (*member_fn)(jp *j, const char *k, size_t n, void *ctx);

static int jobject(jp *j, member_fn member, void *ctx)
{
    if (peek(j) != '{') return jfail(j, 400, "expected an object, got %s", kind_here(j));
    j->p++;
    if (peek(j) == '}') {
        j->p++;
        return 0;
    }
    for (;;) {
        const char *k;
        size_t n;
        int rc = jstring(j, &k, &n);
        if (rc) return rc;
        if (expect(j, ':', "':'")) return 400;
        rc = member(j, k, n, ctx);
        if (rc) return rc;
        int c = peek(j);
        if (c == ',') {
            j->p++;
            if (peek(j) == '}') return syntax(j, "a member after ','");
            continue;
        }
        if (c == '}') {
            j->p++;
            return 0;
        }
        return syntax(j, "',' or '}'");
    }
}

/* Index of name k among names[0..n), or -1. */
static long find_name(char *const *names, size_t n, const char *k, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(names[i]) == len && !memcmp(names[i], k, len)) return (long)i;
    return -1;
}

/* ---- features: an array in schema order, or an object by name ------------------------------- */

typedef struct feat_ctx {
    char *const *names;
    size_t n;
    float *out;
    const char *what; /* "meta feature", "dense feature" */
} feat_ctx;

static int feat_member(jp *j, const char *k, size_t len, void *vctx)
{
    feat_ctx *c = vctx;
    size_t old = push_key(j, k, len);
    long i = find_name(c->names, c->n, k, len);
    if (i < 0) return jfail(j, 400, "unknown field: the model has no %s of this name", c->what);
    if (j->w->seen[i]) return jfail(j, 400, "given twice");
    j->w->seen[i] = 1;
    if (jfloat(j, &c->out[i])) return j->e->status;
    pop(j, old);
    return 0;
}

static int jfeatures(jp *j, char *const *names, size_t n, float *out, const char *what)
{
    int c = peek(j);
    if (c == '[') {
        j->p++;
        size_t i = 0;
        if (peek(j) == ']') {
            j->p++;
        } else {
            for (;;) {
                if (i == n)
                    return jfail(j, 400, "expected %zu numbers (the model's %ss in schema order), got more",
                                 n, what);
                size_t old = push_index(j, i);
                if (jfloat(j, &out[i])) return j->e->status;
                pop(j, old);
                i++;
                int d = peek(j);
                if (d == ',') {
                    j->p++;
                    continue;
                }
                if (d == ']') {
                    j->p++;
                    break;
                }
                return syntax(j, "',' or ']'");
            }
        }
        if (i != n)
            return jfail(j, 400, "expected %zu numbers (the model's %ss in schema order), got %zu", n, what,
                         i);
        return 0;
    }
    if (c != '{')
        return jfail(j, 400, "expected an array of %zu numbers or an object by name, got %s", n,
                     kind_here(j));
    memset(j->w->seen, 0, j->w->nseen);
    feat_ctx fc = {names, n, out, what};
    int rc = jobject(j, feat_member, &fc);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++)
        if (!j->w->seen[i]) {
            push_key(j, names[i], strlen(names[i]));
            return jfail(j, 400, "missing (every %s is required)", what);
        }
    return 0;
}

/* ---- categorical values -------------------------------------------------------------------- */

static int jcat_value(jp *j, uint32_t buckets, uint32_t *out)
{
    const char *s;
    size_t n;
    int is_int = 0, c = peek(j);
    if (c == '"') {
        if (jstring(j, &s, &n)) return j->e->status;
        *out = lm_cat_id(s, n, buckets);
        return 0;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        if (jnumber(j, &s, &n, &is_int)) return syntax(j, "a number");
        if (!is_int)
            return jfail(j, 400,
                         "expected an integer or a string (a categorical value), got a number with "
                         "a fraction or an exponent");
        *out = lm_cat_id(s, n, buckets);
        return 0;
    }
    return jfail(j, 400, "expected an integer or a string (a categorical value), got %s", kind_here(j));
}

typedef struct cat_ctx {
    const lm_schema *s;
    uint32_t *out;
} cat_ctx;

static int cat_member(jp *j, const char *k, size_t len, void *vctx)
{
    cat_ctx *c = vctx;
    size_t old = push_key(j, k, len);
    long i = -1;
    for (size_t q = 0; q < c->s->ncat && i < 0; q++)
        if (strlen(c->s->cat[q].column) == len && !memcmp(c->s->cat[q].column, k, len)) i = (long)q;
    if (i < 0) return jfail(j, 400, "unknown field: the model has no categorical column of this name");
    if (j->w->seen[i]) return jfail(j, 400, "given twice");
    j->w->seen[i] = 1;
    if (jcat_value(j, c->s->cat[i].buckets, &c->out[i])) return j->e->status;
    pop(j, old);
    return 0;
}

static int jcategorical(jp *j, uint32_t *out)
{
    const lm_schema *s = j->sm->schema;
    if (peek(j) == '[') {
        j->p++;
        size_t i = 0;
        if (peek(j) == ']')
            j->p++;
        else
            for (;;) {
                if (i == s->ncat)
                    return jfail(j, 400, "expected %zu values (schema order), got more", s->ncat);
                size_t old = push_index(j, i);
                if (jcat_value(j, s->cat[i].buckets, &out[i])) return j->e->status;
                pop(j, old);
                i++;
                int d = peek(j);
                if (d == ',') {
                    j->p++;
                    continue;
                }
                if (d == ']') {
                    j->p++;
                    break;
                }
                return syntax(j, "',' or ']'");
            }
        if (i != s->ncat) return jfail(j, 400, "expected %zu values (schema order), got %zu", s->ncat, i);
        return 0;
    }
    if (peek(j) != '{')
        return jfail(j, 400, "expected an object by column name or an array, got %s", kind_here(j));
    memset(j->w->seen, 0, j->w->nseen);
    cat_ctx cc = {s, out};
    int rc = jobject(j, cat_member, &cc);
    if (rc) return rc;
    for (size_t i = 0; i < s->ncat; i++)
        if (!j->w->seen[i]) {
            push_key(j, s->cat[i].column, strlen(s->cat[i].column));
            return jfail(j, 400, "missing (every categorical column is required)");
        }
    return 0;
}

/* ---- a candidate ----------------------------------------------------------------------------- */

typedef struct cand_ctx {
    size_t r;
    int have_dense, have_cat;
} cand_ctx;

static int cand_member(jp *j, const char *k, size_t n, void *vctx)
{
    cand_ctx *c = vctx;
    const lm_schema *s = j->sm->schema;
    lm_rows_f32 *rows = &j->w->rows;
    size_t old = push_key(j, k, n);
    int rc;
    if (n == 5 && !memcmp(k, "dense", 5)) {
        if (c->have_dense) return jfail(j, 400, "given twice");
        c->have_dense = 1;
        rc = jfeatures(j, s->dense, s->ndense, rows->dense + c->r * s->ndense, "dense feature");
    } else if (n == 11 && !memcmp(k, "categorical", 11)) {
        if (c->have_cat) return jfail(j, 400, "given twice");
        c->have_cat = 1;
        rc = jcategorical(j, rows->cat + c->r * s->ncat);
    } else {
        return jfail(j, 400, "unknown field (a candidate has \"dense\" and \"categorical\")");
    }
    if (!rc) pop(j, old);
    return rc;
}

static int jcandidates(jp *j)
{
    const lm_schema *s = j->sm->schema;
    lm_rows_f32 *rows = &j->w->rows;
    if (peek(j) != '[') return jfail(j, 400, "expected an array of candidates, got %s", kind_here(j));
    j->p++;
    rows->n = 0;
    if (peek(j) == ']') return jfail(j, 400, "no candidates (at least one is needed)");
    for (;;) {
        if (rows->n == j->w->cap)
            return jfail(j, 413, "more than %zu candidates (--max-candidates)", j->w->cap);
        size_t old = push_index(j, rows->n);
        cand_ctx c = {rows->n, 0, 0};
        int rc = jobject(j, cand_member, &c);
        if (rc) return rc;
        if (!c.have_dense && s->ndense) return jfail(j, 400, "missing \"dense\" (%zu features)", s->ndense);
        if (!c.have_cat && s->ncat) return jfail(j, 400, "missing \"categorical\" (%zu columns)", s->ncat);
        pop(j, old);
        rows->n++;
        int d = peek(j);
        if (d == ',') {
            j->p++;
            continue;
        }
        if (d == ']') {
            j->p++;
            return 0;
        }
        return syntax(j, "',' or ']'");
    }
}

/* ---- the task key ------------------------------------------------------------------------------ */

typedef struct task_ctx {
    size_t off[64], len[64]; /* each column's value in buf */
    char buf[LM_STORE_KEY_MAX + 1];
    size_t used;
} task_ctx;

static int task_member(jp *j, const char *k, size_t n, void *vctx)
{
    task_ctx *t = vctx;
    const lm_schema *s = j->sm->schema;
    size_t old = push_key(j, k, n);
    long i = find_name(s->task, s->ntask, k, n);
    if (i < 0)
        return jfail(j, 400, "unknown field: the model's task columns are named in the schema's \"task\"");
    if (j->w->seen[i]) return jfail(j, 400, "given twice");
    j->w->seen[i] = 1;
    const char *v;
    size_t vn;
    int is_int = 0, c = peek(j);
    if (c == '"') {
        if (jstring(j, &v, &vn)) return j->e->status;
    } else if (!(c == '-' || (c >= '0' && c <= '9')) || jnumber(j, &v, &vn, &is_int) || !is_int) {
        return jfail(j, 400, "expected a string or an integer (a task key value), got %s", kind_here(j));
    }
    if (memchr(v, LM_KEY_SEP, vn))
        return jfail(j, 400, "contains the byte 0x1f, which separates key columns");
    if (t->used + vn > LM_STORE_KEY_MAX)
        return jfail(j, 400, "the task key is longer than %d bytes", LM_STORE_KEY_MAX);
    memcpy(t->buf + t->used, v, vn);
    t->off[i] = t->used, t->len[i] = vn;
    t->used += vn;
    pop(j, old);
    return 0;
}

static int jtask(jp *j)
{
    const lm_schema *s = j->sm->schema;
    if (s->ntask > 64) return jfail(j, 500, "the schema has more than 64 task columns");
    task_ctx t;
    t.used = 0;
    memset(j->w->seen, 0, j->w->nseen);
    if (peek(j) != '{')
        return jfail(j, 400, "expected an object naming the task columns, got %s", kind_here(j));
    int rc = jobject(j, task_member, &t);
    if (rc) return rc;
    size_t klen = 0;
    for (size_t i = 0; i < s->ntask; i++) {
        if (!j->w->seen[i]) {
            push_key(j, s->task[i], strlen(s->task[i]));
            return jfail(j, 400, "missing (every task column is required)");
        }
        klen += t.len[i] + (i ? 1 : 0);
    }
    if (klen == 0 || klen > LM_STORE_KEY_MAX)
        return jfail(j, 400, "the task key must have 1 to %d bytes, it has %zu", LM_STORE_KEY_MAX, klen);
    char *d = j->w->key;
    for (size_t i = 0; i < s->ntask; i++) { /* the columns' values in schema order, as datasets key tasks */
        if (i) *d++ = LM_KEY_SEP;
        memcpy(d, t.buf + t.off[i], t.len[i]);
        d += t.len[i];
    }
    j->w->key_len = klen;
    return 0;
}

/* ---- the bodies ------------------------------------------------------------------------------- */

typedef struct body_ctx {
    int want_candidates; /* 0: /v1/embedding */
    int have_task, have_meta, have_cand;
} body_ctx;

static int body_member(jp *j, const char *k, size_t n, void *vctx)
{
    body_ctx *b = vctx;
    const lm_schema *s = j->sm->schema;
    size_t old = push_key(j, k, n);
    int which = n == 4 && !memcmp(k, "task", 4)                                 ? 0
                : b->want_candidates && n == 4 && !memcmp(k, "meta", 4)         ? 1
                : b->want_candidates && n == 10 && !memcmp(k, "candidates", 10) ? 2
                                                                                : -1;
    if (which < 0)
        return jfail(j, 400,
                     b->want_candidates
                         ? "unknown field (a score request has \"task\", \"meta\" and \"candidates\")"
                         : "unknown field (an embedding request has \"task\")");
    int *have = which == 0 ? &b->have_task : which == 1 ? &b->have_meta : &b->have_cand;
    if (*have) return jfail(j, 400, "given twice");
    *have = 1;
    int rc = which == 0   ? jtask(j)
             : which == 1 ? jfeatures(j, s->meta, s->nmeta, j->w->meta, "meta feature")
                          : jcandidates(j);
    if (!rc) pop(j, old);
    return rc;
}

static int parse_body(const lm_srv_model *sm, lm_srv_ws *w, const char *body, size_t len, lm_srv_err *e,
                      int want_candidates)
{
    jp j = {body, body + len, body, sm, w, e, "", 0};
    body_ctx b = {want_candidates, 0, 0, 0};
    w->rows.n = 0;
    w->key_len = 0;
    if (peek(&j) != '{') return jfail(&j, 400, "expected a JSON object, got %s", kind_here(&j));
    int rc = jobject(&j, body_member, &b);
    if (rc) return rc;
    if (peek(&j) >= 0)
        return jfail(&j, 400, "malformed JSON at byte %zu: more after the object", (size_t)(j.p - j.begin));
    if (!b.have_task)
        return lm_srv_fail(e, 400, "task", "missing (an object naming the task columns: %s%s)",
                           sm->schema->task[0], sm->schema->ntask > 1 ? ", ..." : "");
    if (want_candidates) {
        if (!b.have_meta && sm->schema->nmeta)
            return lm_srv_fail(e, 400, "meta", "missing (%zu meta features, in schema order or by name)",
                               sm->schema->nmeta);
        if (!b.have_cand) return lm_srv_fail(e, 400, "candidates", "missing");
    }
    w->have_meta = b.have_meta;
    return 0;
}

int lm_srv_parse_score(const lm_srv_model *sm, lm_srv_ws *w, const char *body, size_t len, lm_srv_err *e)
{
    return parse_body(sm, w, body, len, e, 1);
}

int lm_srv_parse_task_only(const lm_srv_model *sm, lm_srv_ws *w, const char *body, size_t len, lm_srv_err *e)
{
    return parse_body(sm, w, body, len, e, 0);
}
