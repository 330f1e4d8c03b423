/* store.c: the feature store's interface: URLs, the value codec, and the logic both backends
 * share (argument checks, encoding, the writer's sticky error, garbage collection, verify).
 * The backends (store_lmdb.c, store_redis.c) only move bytes and keep versions atomic; see
 * docs/STORE.md for the layouts and the publish protocol. */
#include "store/store_impl.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the store writes float32 values in host order, assumed little-endian"
#endif

#define DIM_MAX 65536u

/* ============================================================================================
 * URLs
 * ========================================================================================== */

static const char *USAGE = "expected lmdb://PATH or redis://HOST:PORT/DB";

void lm_store_url_free(lm_store_addr *u)
{
    if (!u) return;
    free(u->display);
    free(u->path);
    free(u->host);
    free(u->user);
    free(u->password);
    free(u->prefix);
    memset(u, 0, sizeof *u);
}

/* A decimal integer in [lo, hi] spanning all of s[0..n). */
static int parse_int(const char *s, size_t n, long long lo, long long hi, long long *out)
{
    if (n == 0 || n > 18) return -1;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* "123", "64K", "1G", "1T" (binary units). */
static int parse_size(const char *s, size_t n, size_t *out)
{
    size_t digits = 0;
    while (digits < n && s[digits] >= '0' && s[digits] <= '9') digits++;
    long long v;
    if (parse_int(s, digits, 1, (long long)1 << 50, &v) != 0) return -1;
    unsigned shift = 0;
    if (digits < n) {
        if (n - digits != 1) return -1;
        switch (toupper((unsigned char)s[digits])) {
        case 'K': shift = 10; break;
        case 'M': shift = 20; break;
        case 'G': shift = 30; break;
        case 'T': shift = 40; break;
        default: return -1;
        }
    }
    if ((unsigned long long)v > (SIZE_MAX >> shift)) return -1;
    *out = (size_t)v << shift;
    return 0;
}

static int valid_host(const char *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' && h[i] != '_') return 0;
    return 1;
}

static int valid_prefix(const char *p, size_t n)
{
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)p[i]) && !strchr("._:-", p[i])) return 0;
    return 1;
}

/* The URL for messages: a password in redis://user:pass@host becomes "***". */
static char *display_url(const char *url, const char *rest, size_t scheme_len)
{
    const char *end = rest + strcspn(rest, "/?");
    const char *at = NULL;
    for (const char *p = rest; p < end; p++)
        if (*p == '@') at = p;
    const char *colon = at ? memchr(rest, ':', (size_t)(at - rest)) : NULL;
    if (!colon || scheme_len != 5) return lm_strdup(url);
    size_t head = (size_t)(colon + 1 - url), tail = strlen(at);
    char *d = malloc(head + 3 + tail + 1);
    if (!d) return NULL;
    memcpy(d, url, head);
    memcpy(d + head, "***", 3);
    memcpy(d + head + 3, at, tail + 1);
    return d;
}

static int parse_options(const char *q, lm_store_addr *u, lm_err *err)
{
    const char *D = u->display;
    while (*q) {
        size_t n = strcspn(q, "&");
        const char *eq = memchr(q, '=', n);
        if (!eq || eq == q)
            return lm_err_set(err, LM_EINVAL, "%s: option '%.*s' is not NAME=VALUE", D, (int)n, q);
        size_t kn = (size_t)(eq - q), vn = n - kn - 1;
        const char *v = eq + 1;
        long long iv;
#define KEY_IS(s) (kn == strlen(s) && !memcmp(q, s, kn))
        if (u->kind == LM_STORE_KIND_LMDB && KEY_IS("mapsize")) {
            if (parse_size(v, vn, &u->mapsize) != 0 || u->mapsize < 65536)
                return lm_err_set(err, LM_EINVAL,
                                  "%s: mapsize '%.*s' is not a size of at least 64K (e.g. 64M, 1G)", D,
                                  (int)vn, v);
        } else if (u->kind == LM_STORE_KIND_REDIS && KEY_IS("prefix")) {
            if (!valid_prefix(v, vn))
                return lm_err_set(err, LM_EINVAL, "%s: prefix '%.*s' is not 1 to 64 of [A-Za-z0-9._:-]", D,
                                  (int)vn, v);
            free(u->prefix);
            if (!(u->prefix = lm_strndup(v, vn))) return lm_err_set(err, LM_ENOMEM, "out of memory");
        } else if (u->kind == LM_STORE_KIND_REDIS && KEY_IS("timeout_ms")) {
            if (parse_int(v, vn, 1, 3600000, &iv) != 0)
                return lm_err_set(err, LM_EINVAL, "%s: timeout_ms '%.*s' is not a number in 1..3600000", D,
                                  (int)vn, v);
            u->timeout_ms = (int)iv;
        } else if (u->kind == LM_STORE_KIND_REDIS && KEY_IS("lease_ms")) {
            if (parse_int(v, vn, 100, 86400000, &iv) != 0)
                return lm_err_set(err, LM_EINVAL, "%s: lease_ms '%.*s' is not a number in 100..86400000", D,
                                  (int)vn, v);
            u->lease_ms = (int)iv;
        } else {
            return lm_err_set(err, LM_EINVAL, "%s: unknown option '%.*s' (%s)", D, (int)kn, q,
                              u->kind == LM_STORE_KIND_LMDB ? "lmdb:// takes mapsize"
                                                            : "redis:// takes prefix, timeout_ms, lease_ms");
        }
#undef KEY_IS
        q += n;
        if (*q == '&') q++;
    }
    return LM_OK;
}

static int parse_redis(const char *rest, size_t rn, lm_store_addr *u, lm_err *err)
{
    const char *D = u->display;
    const char *slash = memchr(rest, '/', rn);
    size_t an = slash ? (size_t)(slash - rest) : rn;
    const char *auth = rest;
    const char *at = NULL;
    for (size_t i = 0; i < an; i++)
        if (auth[i] == '@') at = auth + i;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        if (!colon)
            return lm_err_set(err, LM_EINVAL, "%s: credentials must be USER:PASSWORD@ or :PASSWORD@", D);
        if (colon > auth && !(u->user = lm_strndup(auth, (size_t)(colon - auth))))
            return lm_err_set(err, LM_ENOMEM, "out of memory");
        if (!(u->password = lm_strndup(colon + 1, (size_t)(at - colon - 1))))
            return lm_err_set(err, LM_ENOMEM, "out of memory");
        an -= (size_t)(at + 1 - auth);
        auth = at + 1;
    }
    const char *host = auth, *port = NULL;
    size_t hn, pn = 0;
    if (an > 0 && auth[0] == '[') {
        const char *close = memchr(auth, ']', an);
        if (!close)
            return lm_err_set(err, LM_EINVAL, "%s: host '%.*s' lacks its closing ']'", D, (int)an, auth);
        host = auth + 1;
        hn = (size_t)(close - host);
        size_t after = an - (size_t)(close + 1 - auth);
        if (after > 0) {
            if (close[1] != ':')
                return lm_err_set(err, LM_EINVAL, "%s: unexpected '%.*s' after the host", D, (int)after,
                                  close + 1);
            port = close + 2;
            pn = after - 1;
        }
        for (size_t i = 0; i < hn; i++)
            if (!isxdigit((unsigned char)host[i]) && host[i] != ':' && host[i] != '.')
                return lm_err_set(err, LM_EINVAL, "%s: host '[%.*s]' is not an IPv6 address", D, (int)hn,
                                  host);
    } else {
        const char *colon = memchr(auth, ':', an);
        hn = colon ? (size_t)(colon - auth) : an;
        if (colon) {
            port = colon + 1;
            pn = an - hn - 1;
        }
        if (!valid_host(host, hn))
            return lm_err_set(err, LM_EINVAL, "%s: host '%.*s' is not a valid host name", D, (int)hn, host);
    }
    if (hn == 0) return lm_err_set(err, LM_EINVAL, "%s: the host is empty (%s)", D, USAGE);
    if (!(u->host = lm_strndup(host, hn))) return lm_err_set(err, LM_ENOMEM, "out of memory");
    long long v;
    u->port = 6379;
    if (port) {
        if (parse_int(port, pn, 1, 65535, &v) != 0)
            return lm_err_set(err, LM_EINVAL, "%s: port '%.*s' is not a number in 1..65535", D, (int)pn,
                              port);
        u->port = (int)v;
    }
    u->db = 0;
    if (slash) {
        size_t dn = rn - (size_t)(slash + 1 - rest);
        if (dn > 0) {
            if (parse_int(slash + 1, dn, 0, 2147483647, &v) != 0)
                return lm_err_set(err, LM_EINVAL, "%s: database '%.*s' is not a number", D, (int)dn,
                                  slash + 1);
            u->db = (int)v;
        }
    }
    return LM_OK;
}

int lm_store_url_parse(const char *url, lm_store_addr *u, lm_err *err)
{
    memset(u, 0, sizeof *u);
    if (!url || !*url) return lm_err_set(err, LM_EINVAL, "the store URL is empty (%s)", USAGE);
    const char *sep = strstr(url, "://");
    if (!sep) return lm_err_set(err, LM_EINVAL, "%s: not a store URL: no scheme (%s)", url, USAGE);
    size_t sn = (size_t)(sep - url);
    const char *rest = sep + 3;
    if (!(u->display = display_url(url, rest, sn))) return lm_err_set(err, LM_ENOMEM, "out of memory");
    const char *D = u->display;
    if (sn == 4 && !strncasecmp(url, "lmdb", 4))
        u->kind = LM_STORE_KIND_LMDB;
    else if (sn == 5 && !strncasecmp(url, "redis", 5))
        u->kind = LM_STORE_KIND_REDIS;
    else {
        int rc = lm_err_set(err, LM_EINVAL, "%s: unknown scheme '%.*s' (%s)", D, (int)sn, url, USAGE);
        lm_store_url_free(u);
        return rc;
    }
    const char *q = strchr(rest, '?');
    size_t rn = q ? (size_t)(q - rest) : strlen(rest);
    u->timeout_ms = 5000;
    u->lease_ms = 300000;
    int rc = LM_OK;
    if (u->kind == LM_STORE_KIND_LMDB) {
        if (rn == 0)
            rc = lm_err_set(err, LM_EINVAL, "%s: the path is empty (expected lmdb://PATH)", D);
        else if (!(u->path = lm_strndup(rest, rn)))
            rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    } else {
        if (!(u->prefix = lm_strdup("lm")))
            rc = lm_err_set(err, LM_ENOMEM, "out of memory");
        else
            rc = parse_redis(rest, rn, u, err);
    }
    if (rc == LM_OK && q) rc = parse_options(q + 1, u, err);
    if (rc != LM_OK) lm_store_url_free(u);
    return rc;
}

int lm_store_check_version_name(const char *url, const char *version, lm_err *err)
{
    size_t n = version ? strlen(version) : 0;
    int ok = n >= 1 && n <= LM_STORE_VERSION_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok =
            isalnum((unsigned char)version[i]) || version[i] == '.' || version[i] == '_' || version[i] == '-';
    if (ok) return LM_OK;
    return lm_err_set(err, LM_EINVAL, "%s: version '%.80s' is not 1 to %d of [A-Za-z0-9._-]", url,
                      version ? version : "", LM_STORE_VERSION_MAX);
}

/* ============================================================================================
 * The value codec
 * ========================================================================================== */

const char *lm_store_enc_name(int enc)
{
    switch (enc) {
    case LM_STORE_ENC_F32: return "f32";
    case LM_STORE_ENC_F16: return "f16";
    case LM_STORE_ENC_I8: return "int8";
    default: return NULL;
    }
}

int lm_store_enc_parse(const char *name, int *enc, lm_err *err)
{
    static const struct {
        const char *s;
        int e;
    } names[] = {{"f32", LM_STORE_ENC_F32},     {"float32", LM_STORE_ENC_F32}, {"f16", LM_STORE_ENC_F16},
                 {"float16", LM_STORE_ENC_F16}, {"int8", LM_STORE_ENC_I8},     {"i8", LM_STORE_ENC_I8}};
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i].s)) {
            *enc = names[i].e;
            return LM_OK;
        }
    return lm_err_set(err, LM_EINVAL, "encoding '%s' is not f32, f16 or int8", name ? name : "");
}

size_t lm_store_value_size(int enc, uint32_t dim)
{
    switch (enc) {
    case LM_STORE_ENC_F32: return 4 * (size_t)dim;
    case LM_STORE_ENC_F16: return 2 * (size_t)dim;
    case LM_STORE_ENC_I8: return 4 + (size_t)dim;
    default: return 0;
    }
}

/* IEEE binary32 -> binary16, rounding to nearest, ties to even; overflow gives infinity. */
uint16_t lm_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000) return sign | 0x7e00;  /* NaN (quiet) */
    if (ax >= 0x477ff000) return sign | 0x7c00; /* >= 65520 rounds to infinity */
    if (ax >= 0x38800000) {                     /* normal half: rebias, round */
        uint32_t h = (ax - 0x38000000) >> 13, rem = ax & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* a carry bumps the exponent */
        return (uint16_t)(sign | h);
    }
    if (ax < 0x33000000) return sign; /* <= 2^-25 rounds to zero */
    /* subnormal half: the value in units of 2^-24 is mant >> (126 - e), rounded */
    uint32_t e = ax >> 23, mant = (ax & 0x7fffff) | 0x800000, shift = 126 - e;
    uint32_t m = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (m & 1))) m++;
    return (uint16_t)(sign | m);
}

float lm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, x;
    if (e == 0) {
        if (m == 0)
            x = sign;
        else { /* subnormal: normalize */
            e = 113;
            while (!(m & 0x400)) {
                m <<= 1;
                e--;
            }
            x = sign | (e << 23) | ((m & 0x3ff) << 13);
        }
    } else if (e == 31)
        x = sign | 0x7f800000 | (m << 13);
    else
        x = sign | ((e + 112) << 23) | (m << 13);
    float f;
    memcpy(&f, &x, 4);
    return f;
}

int lm_store_encode(int enc, uint32_t dim, const float *x, uint8_t *out, size_t *bad_elem)
{
    float maxabs = 0;
    for (uint32_t i = 0; i < dim; i++) {
        if (!isfinite(x[i])) {
            *bad_elem = i;
            return 1;
        }
        float a = fabsf(x[i]);
        if (a > maxabs) maxabs = a;
    }
    switch (enc) {
    case LM_STORE_ENC_F32: memcpy(out, x, 4 * (size_t)dim); return 0;
    case LM_STORE_ENC_F16:
        for (uint32_t i = 0; i < dim; i++) {
            if (fabsf(x[i]) >= 65520.0f) {
                *bad_elem = i;
                return 2;
            }
            uint16_t h = lm_f32_to_f16(x[i]);
            out[2 * i] = (uint8_t)h;
            out[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return 0;
    case LM_STORE_ENC_I8: {
        float scale = maxabs / 127.0f;
        memcpy(out, &scale, 4);
        double inv = maxabs > 0 ? 127.0 / (double)maxabs : 0;
        for (uint32_t i = 0; i < dim; i++) {
            long q = lrint((double)x[i] * inv);
            out[4 + i] = (uint8_t)(int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
        }
        return 0;
    }
    default: LM_ASSERT(!"bad encoding"); return 0;
    }
}

int lm_store_decode(int enc, uint32_t dim, const void *val, size_t len, float *out)
{
    const uint8_t *p = val;
    if (len != lm_store_value_size(enc, dim)) return -1;
    switch (enc) {
    case LM_STORE_ENC_F32:
        memcpy(out, p, len);
        for (uint32_t i = 0; i < dim; i++)
            if (!isfinite(out[i])) return -2;
        return 0;
    case LM_STORE_ENC_F16:
        for (uint32_t i = 0; i < dim; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
            if ((h & 0x7c00) == 0x7c00) return -2;
            out[i] = lm_f16_to_f32(h);
        }
        return 0;
    case LM_STORE_ENC_I8: {
        float scale;
        memcpy(&scale, p, 4);
        if (!isfinite(scale) || scale < 0) return -2;
        for (uint32_t i = 0; i < dim; i++) out[i] = (float)(int8_t)p[4 + i] * scale;
        return 0;
    }
    default: return -1;
    }
}

const char *lm_store_key_str(const char *key, size_t len, char *buf, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
    }
    if (o + 5 >= n && n > 4)
        memcpy(buf + n - 4, "...", 4);
    else
        buf[o] = 0;
    return buf;
}

/* ============================================================================================
 * Opening and closing
 * ========================================================================================== */

int lm_store_open(lm_store **out, const char *url, int flags, lm_err *err)
{
    *out = NULL;
    if ((flags & LM_STORE_CREATE) && (flags & LM_STORE_READONLY))
        return lm_err_set(err, LM_EINVAL, "%s: LM_STORE_CREATE and LM_STORE_READONLY exclude each other",
                          url ? url : "");
    lm_store *s = calloc(1, sizeof *s);
    if (!s) return lm_err_set(err, LM_ENOMEM, "out of memory");
    int rc = lm_store_url_parse(url, &s->url, err);
    if (rc != LM_OK) {
        free(s);
        return rc;
    }
    s->ops = s->url.kind == LM_STORE_KIND_LMDB ? &lm_store_lmdb_ops : &lm_store_redis_ops;
    s->flags = flags;
    rc = s->ops->open(s, err);
    if (rc != LM_OK) {
        lm_store_url_free(&s->url);
        free(s);
        return rc;
    }
    *out = s;
    return LM_OK;
}

void lm_store_close(lm_store *s)
{
    if (!s) return;
    if (s->writer) lm_store_abort(s->writer); /* an unpublished version is never kept */
    s->ops->close(s);
    lm_store_url_free(&s->url);
    free(s);
}

const char *lm_store_url(const lm_store *s)
{
    return s->url.display;
}

/* ============================================================================================
 * Writing
 * ========================================================================================== */

static void writer_free(lm_store_writer *w)
{
    if (w->s->writer == w) w->s->writer = NULL;
    free(w->impl); /* the backend's writer state: one plain allocation */
    free(w->buf);
    free(w->last_key);
    free(w);
}

/* Record the writer's first failure (sticky) and return it through err. */
static int writer_fail(lm_store_writer *w, const lm_err *e, lm_err *err)
{
    if (!w->failed) {
        w->failed = e->code ? e->code : LM_EIO;
        w->sticky = *e;
        w->sticky.code = w->failed;
    }
    if (err) *err = w->sticky;
    return w->failed;
}

/* Half-written versions whose writer is gone, other than `except`, are removed. */
static int drop_dead_incomplete(lm_store *s, const char *except, lm_err *err)
{
    lm_store_version *v = NULL;
    size_t n = 0;
    int rc = s->ops->list(s, &v, &n, err);
    for (size_t i = 0; rc == LM_OK && i < n; i++) {
        if (v[i].complete || (except && !strcmp(v[i].name, except))) continue;
        int what;
        rc = s->ops->drop(s, v[i].name, &what, err);
    }
    free(v);
    return rc;
}

int lm_store_begin_version(lm_store *s, const char *version, uint32_t dim, int encoding, const char *model_id,
                           lm_store_writer **out, lm_err *err)
{
    *out = NULL;
    const char *D = s->url.display;
    if (s->flags & LM_STORE_READONLY)
        return lm_err_set(err, LM_EINVAL, "%s: the store was opened read-only", D);
    if (s->writer)
        return lm_err_set(err, LM_EINVAL, "%s: version '%s' is being written through this handle", D,
                          s->writer->rec.name);
    int rc = lm_store_check_version_name(D, version, err);
    if (rc != LM_OK) return rc;
    if (dim < 1 || dim > DIM_MAX)
        return lm_err_set(err, LM_EINVAL, "%s: embedding size %u is not in 1..%u", D, dim, DIM_MAX);
    if (!lm_store_enc_name(encoding))
        return lm_err_set(err, LM_EINVAL, "%s: encoding %d is not f32, f16 or int8", D, encoding);
    if (!model_id) model_id = "";
    if (strlen(model_id) > LM_STORE_MODEL_ID_MAX)
        return lm_err_set(err, LM_EINVAL, "%s: model id longer than %d bytes", D, LM_STORE_MODEL_ID_MAX);

    lm_store_version cur;
    rc = lm_store_current(s, &cur, err);
    if (rc == LM_OK && cur.dim != dim && !(s->flags & LM_STORE_ALLOW_NEW_DIM))
        return lm_err_set(err, LM_EMISMATCH,
                          "%s: the current version '%s' holds E=%u vectors, the new one E=%u "
                          "(servers with the old model would refuse it; open with "
                          "LM_STORE_ALLOW_NEW_DIM to change it)",
                          D, cur.name, cur.dim, dim);
    if (rc != LM_OK && rc != LM_ENOTFOUND) return rc;
    rc = drop_dead_incomplete(s, version, err);
    if (rc != LM_OK) return rc;

    lm_store_writer *w = calloc(1, sizeof *w);
    if (!w) return lm_err_set(err, LM_ENOMEM, "out of memory");
    w->s = s;
    snprintf(w->rec.name, sizeof w->rec.name, "%s", version);
    snprintf(w->rec.model_id, sizeof w->rec.model_id, "%s", model_id);
    w->rec.dim = dim;
    w->rec.encoding = encoding;
    w->rec.created = (int64_t)time(NULL);
    w->vsize = lm_store_value_size(encoding, dim);
    rc = s->ops->begin(w, err);
    if (rc != LM_OK) {
        writer_free(w);
        return rc;
    }
    s->writer = w;
    *out = w;
    return LM_OK;
}

int lm_store_put_batch(lm_store_writer *w, const char *const *keys, const size_t *key_lens,
                       const float *vectors, size_t n, lm_err *err)
{
    lm_err e = {0};
    if (!w) return lm_err_set(err, LM_EINVAL, "no writer");
    if (w->failed) return writer_fail(w, &e, err);
    if (n == 0) return LM_OK;
    lm_store *s = w->s;
    const char *D = s->url.display;
    if (s->fail_put_at && --s->fail_put_at == 0) {
        lm_err_set(&e, LM_EIO, "%s: version '%s': injected write failure", D, w->rec.name);
        return writer_fail(w, &e, err);
    }
    if (lm_grow((void **)&w->buf, &w->buf_cap, n * w->vsize, 1) != LM_OK) {
        lm_err_set(&e, LM_ENOMEM, "out of memory");
        return writer_fail(w, &e, err);
    }
    char kb[128];
    for (size_t i = 0; i < n; i++) {
        if (key_lens[i] < 1 || key_lens[i] > LM_STORE_KEY_MAX) {
            lm_err_set(&e, LM_EINVAL, "%s: version '%s': task key '%s' has %zu bytes (1..%d allowed)", D,
                       w->rec.name, lm_store_key_str(keys[i], key_lens[i], kb, sizeof kb), key_lens[i],
                       LM_STORE_KEY_MAX);
            return writer_fail(w, &e, err);
        }
        size_t bad = 0;
        int r = lm_store_encode(w->rec.encoding, w->rec.dim, vectors + i * w->rec.dim, w->buf + i * w->vsize,
                                &bad);
        if (r) {
            float x = vectors[i * w->rec.dim + bad];
            lm_err_set(&e, LM_EINVAL, "%s: version '%s': task '%s': element %zu is %s", D, w->rec.name,
                       lm_store_key_str(keys[i], key_lens[i], kb, sizeof kb), bad,
                       r == 1 ? (isnan(x) ? "NaN" : "infinite") : "past the float16 range (|x| >= 65520)");
            return writer_fail(w, &e, err);
        }
    }
    int rc = s->ops->put(w, keys, key_lens, w->buf, n, &e);
    if (rc != LM_OK) return writer_fail(w, &e, err);
    w->count += n;
    return LM_OK;
}

int lm_store_publish(lm_store_writer *w, uint32_t keep, lm_err *err)
{
    if (!w) return lm_err_set(err, LM_EINVAL, "no writer");
    lm_store *s = w->s;
    lm_err e = {0};
    int rc = w->failed ? writer_fail(w, &e, err) : s->ops->publish(w, err);
    if (rc != LM_OK) {
        s->ops->abort(w);
        writer_free(w);
        return rc;
    }
    writer_free(w);
    lm_err ignored = {0};
    lm_store_gc(s, keep, NULL, &ignored); /* leftovers wait for the next gc */
    return LM_OK;
}

void lm_store_abort(lm_store_writer *w)
{
    if (!w) return;
    w->s->ops->abort(w);
    writer_free(w);
}

/* ============================================================================================
 * Reading
 * ========================================================================================== */

typedef struct get_ctx {
    lm_store *s;
    const char *const *keys;
    const size_t *lens;
    float *out;
    size_t dim;
    uint8_t *found;
    lm_store_version v;
} get_ctx;

static int get_begin(void *ctx, const lm_store_version *v, lm_err *err)
{
    get_ctx *g = ctx;
    g->v = *v;
    if (g->dim != v->dim)
        return lm_err_set(err, LM_EMISMATCH, "%s: version '%s' holds E=%u vectors, the model expects E=%zu",
                          g->s->url.display, v->name, v->dim, g->dim);
    if (!lm_store_enc_name(v->encoding))
        return lm_err_set(err, LM_EFORMAT, "%s: version '%s' has an unknown encoding %d", g->s->url.display,
                          v->name, v->encoding);
    return LM_OK;
}

static int get_value(void *ctx, size_t i, const void *val, size_t len, lm_err *err)
{
    get_ctx *g = ctx;
    int r = lm_store_decode(g->v.encoding, g->v.dim, val, len, g->out + i * g->dim);
    if (r) {
        char kb[128];
        memset(g->out + i * g->dim, 0, g->dim * sizeof(float));
        lm_store_key_str(g->keys[i], g->lens[i], kb, sizeof kb);
        if (r == -1)
            return lm_err_set(err, LM_EFORMAT,
                              "%s: version '%s': task '%s': damaged value of %zu bytes, expected %zu "
                              "(check the store with verify)",
                              g->s->url.display, g->v.name, kb, len,
                              lm_store_value_size(g->v.encoding, g->v.dim));
        return lm_err_set(err, LM_EFORMAT,
                          "%s: version '%s': task '%s': damaged value decodes to non-finite numbers "
                          "(check the store with verify)",
                          g->s->url.display, g->v.name, kb);
    }
    g->found[i] = 1;
    return LM_OK;
}

int lm_store_get_batch(lm_store *s, const char *version, const char *const *keys, const size_t *key_lens,
                       size_t n, float *out, size_t dim, uint8_t *found, lm_store_version *read, lm_err *err)
{
    if (version) {
        int rc = lm_store_check_version_name(s->url.display, version, err);
        if (rc != LM_OK) return rc;
    }
    if (n) {
        memset(out, 0, n * dim * sizeof(float));
        memset(found, 0, n);
    }
    for (size_t i = 0; i < n; i++)
        if (key_lens[i] < 1 || key_lens[i] > LM_STORE_KEY_MAX) {
            char kb[128];
            return lm_err_set(err, LM_EINVAL, "%s: task key '%s' has %zu bytes (1..%d allowed)",
                              s->url.display, lm_store_key_str(keys[i], key_lens[i], kb, sizeof kb),
                              key_lens[i], LM_STORE_KEY_MAX);
        }
    get_ctx g = {.s = s, .keys = keys, .lens = key_lens, .out = out, .dim = dim, .found = found};
    lm_store_sink sink = {get_begin, get_value, &g};
    int rc = s->ops->read(s, version, keys, key_lens, n, &sink, err);
    if (rc == LM_OK && read) *read = g.v;
    return rc;
}

int lm_store_get(lm_store *s, const char *key, size_t len, float *out, size_t dim, int *found, lm_err *err)
{
    return lm_store_get_version(s, NULL, key, len, out, dim, found, err);
}

int lm_store_get_version(lm_store *s, const char *version, const char *key, size_t len, float *out,
                         size_t dim, int *found, lm_err *err)
{
    uint8_t f = 0;
    int rc = lm_store_get_batch(s, version, &key, &len, 1, out, dim, &f, NULL, err);
    *found = f;
    return rc;
}

static int current_begin(void *ctx, const lm_store_version *v, lm_err *err)
{
    *(lm_store_version *)ctx = *v;
    return LM_OK;
}

int lm_store_current(lm_store *s, lm_store_version *info, lm_err *err)
{
    lm_store_sink sink = {current_begin, NULL, info};
    return s->ops->read(s, NULL, NULL, NULL, 0, &sink, err);
}

/* ============================================================================================
 * Listing, garbage collection, verification
 * ========================================================================================== */

int lm_store_list(lm_store *s, lm_store_version **out, size_t *n, lm_err *err)
{
    *out = NULL;
    *n = 0;
    return s->ops->list(s, out, n, err);
}

int lm_store_gc(lm_store *s, uint32_t keep, size_t *removed, lm_err *err)
{
    if (removed) *removed = 0;
    if (s->flags & LM_STORE_READONLY)
        return lm_err_set(err, LM_EINVAL, "%s: the store was opened read-only", s->url.display);
    lm_store_version *v = NULL;
    size_t n = 0;
    int rc = s->ops->list(s, &v, &n, err);
    if (rc != LM_OK) return rc;
    /* the list is oldest first: walk it newest first, keeping `keep` complete old versions */
    uint32_t kept = 0;
    for (size_t j = n; rc == LM_OK && j-- > 0;) {
        if (v[j].current) continue;
        if (v[j].complete && kept < keep) {
            kept++;
            continue;
        }
        if (!v[j].complete && s->writer && !strcmp(s->writer->rec.name, v[j].name)) continue;
        int what = LM_DROP_GONE;
        rc = s->ops->drop(s, v[j].name, &what, err);
        if (rc == LM_OK && what == LM_DROP_DONE && removed) (*removed)++;
    }
    free(v);
    return rc;
}

typedef struct verify_ctx {
    lm_store_verify_report *rep;
    const lm_store_version *v;
    float *tmp;
} verify_ctx;

static void problem(lm_store_verify_report *rep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(lm_store_verify_report *rep, const char *fmt, ...)
{
    if (rep->first_problem[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->first_problem, sizeof rep->first_problem, fmt, ap);
    va_end(ap);
}

typedef struct walk_ctx {
    const lm_store_version *v;
    float *tmp;
    lm_store_walk_fn fn;
    void *ctx;
    int bad; /* 1: a value did not decode (the walk stopped there) */
    char key[128];
} walk_ctx;

static int walk_one(void *ctx, const char *key, size_t klen, const void *val, size_t len)
{
    walk_ctx *c = ctx;
    if (lm_store_decode(c->v->encoding, c->v->dim, val, len, c->tmp) != 0) {
        c->bad = 1;
        lm_store_key_str(key, klen, c->key, sizeof c->key);
        return 1;
    }
    return c->fn(c->ctx, key, klen, c->tmp);
}

/* The versions' records (*all, freed by the caller) and in *v the one named `version` (complete
 * or not, as `complete` asks) or, when version is NULL, the current one; *v is NULL when there
 * is none. */
static int find_version(lm_store *s, const char *version, int complete, lm_store_version **all,
                        const lm_store_version **v, lm_err *err)
{
    *all = NULL;
    *v = NULL;
    if (version) {
        int rc = lm_store_check_version_name(s->url.display, version, err);
        if (rc != LM_OK) return rc;
    }
    size_t n = 0;
    int rc = s->ops->list(s, all, &n, err);
    if (rc != LM_OK) return rc;
    for (size_t i = 0; i < n; i++)
        if (version ? !strcmp((*all)[i].name, version) && ((*all)[i].complete || !complete)
                    : (*all)[i].current)
            *v = &(*all)[i];
    return LM_OK;
}

int lm_store_walk(lm_store *s, const char *version, uint32_t dim, lm_store_walk_fn fn, void *ctx, lm_err *err)
{
    const char *D = s->url.display;
    lm_store_version *all;
    const lm_store_version *v;
    int rc = find_version(s, version, 1, &all, &v, err);
    if (rc != LM_OK) return rc;
    walk_ctx c = {.v = v, .fn = fn, .ctx = ctx};
    if (!v)
        rc = version ? lm_err_set(err, LM_ENOTFOUND, "%s: no complete version '%s'", D, version)
                     : lm_err_set(err, LM_ENOTFOUND, "%s: no version is published yet", D);
    else if (v->dim != dim)
        rc = lm_err_set(err, LM_EMISMATCH, "%s: version '%s' holds vectors of %u floats, not %u", D, v->name,
                        v->dim, dim);
    else if (!(c.tmp = lm_malloc_array(dim, sizeof(float))))
        rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    if (!rc) {
        lm_store_version rec;
        uint64_t nkeys = 0;
        rc = s->ops->scan(s, v->name, &rec, walk_one, &c, &nkeys, err);
        if (!rc && c.bad)
            rc = lm_err_set(err, LM_EFORMAT, "%s: version '%s': the value of task '%s' does not decode", D,
                            v->name, c.key);
    }
    free(c.tmp);
    free(all);
    return rc;
}

static int verify_one(void *ctx, const char *key, size_t klen, const void *val, size_t len)
{
    verify_ctx *c = ctx;
    lm_store_verify_report *rep = c->rep;
    char kb[128];
    rep->keys++;
    if (klen < 1 || klen > LM_STORE_KEY_MAX) {
        rep->bad_key++;
        problem(rep, "task key '%s' has %zu bytes (1..%d allowed)",
                lm_store_key_str(key, klen, kb, sizeof kb), klen, LM_STORE_KEY_MAX);
    }
    if (!c->tmp) return 0; /* the record is unusable: count keys only */
    int r = lm_store_decode(c->v->encoding, c->v->dim, val, len, c->tmp);
    if (r == -1) {
        rep->bad_size++;
        problem(rep, "task '%s': value of %zu bytes, expected %zu",
                lm_store_key_str(key, klen, kb, sizeof kb), len,
                lm_store_value_size(c->v->encoding, c->v->dim));
    } else if (r == -2) {
        rep->bad_value++;
        problem(rep, "task '%s': value decodes to non-finite numbers",
                lm_store_key_str(key, klen, kb, sizeof kb));
    }
    return 0;
}

int lm_store_verify(lm_store *s, const char *version, lm_store_verify_report *rep, lm_err *err)
{
    memset(rep, 0, sizeof *rep);
    const char *D = s->url.display;
    /* the record first, so the scan knows how to decode */
    lm_store_version *all;
    const lm_store_version *v;
    int rc = find_version(s, version, 0, &all, &v, err);
    if (rc != LM_OK) return rc;
    if (!v) {
        rc = version ? lm_err_set(err, LM_ENOTFOUND, "%s: no version '%s'", D, version)
                     : lm_store_current(s, &rep->version, err); /* names the dangling pointer */
        if (rc == LM_OK) rc = lm_err_set(err, LM_EFORMAT, "%s: the current version changed during verify", D);
        free(all);
        return rc;
    }
    rep->version = *v;
    int rec_ok = v->dim >= 1 && v->dim <= DIM_MAX && lm_store_enc_name(v->encoding);
    if (!rec_ok)
        problem(rep, "the record of '%s' is invalid (E=%u, encoding %d)", v->name, v->dim, v->encoding);
    verify_ctx c = {.rep = rep, .v = v};
    if (rec_ok && !(c.tmp = lm_malloc_array(v->dim, sizeof(float)))) {
        free(all);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    lm_store_version rec;
    uint64_t nkeys = 0;
    rc = s->ops->scan(s, v->name, &rec, verify_one, &c, &nkeys, err);
    free(c.tmp);
    free(all);
    if (rc != LM_OK) return rc;
    rep->version = rec;
    rep->meta_ok = rec_ok;
    if (rec.count != nkeys) {
        rep->meta_ok = 0;
        problem(rep, "the record of '%s' counts %llu keys, the store holds %llu", rec.name,
                (unsigned long long)rec.count, (unsigned long long)nkeys);
    }
    if (rec.current && !rec.complete) {
        rep->meta_ok = 0;
        problem(rep, "the current version '%s' is marked incomplete", rec.name);
    }
    if (!rep->first_problem[0]) return LM_OK;
    return lm_err_set(err, LM_EFORMAT,
                      "%s: version '%s': %s (%llu keys, %llu of the wrong size, %llu non-finite)", D,
                      rep->version.name, rep->first_problem, (unsigned long long)rep->keys,
                      (unsigned long long)rep->bad_size, (unsigned long long)rep->bad_value);
}

/* ============================================================================================
 * Test hooks
 * ========================================================================================== */

void lm_store_test_fail_put(lm_store *s, uint64_t nth)
{
    s->fail_put_at = nth;
}

int lm_store_test_raw_put(lm_store *s, const char *version, const char *key, size_t klen, const void *val,
                          size_t len, lm_err *err)
{
    return s->ops->raw_put(s, version, key, klen, val, len, err);
}
