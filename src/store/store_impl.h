/* store_impl.h: what store.c shares with its backends (store_lmdb.c, store_redis.c): the
 * parsed URL, the handle and writer structs, the backend operations, the value codec and the
 * test hooks. Backends move bytes; store.c validates, encodes and decodes. */
#ifndef LM_STORE_IMPL_H
#define LM_STORE_IMPL_H

#include "core/core.h"
#include "store/store.h"

#include <string.h>

enum { LM_STORE_KIND_LMDB = 1, LM_STORE_KIND_REDIS = 2 };

/* A parsed store URL; strings are malloc'd (lm_store_url_free). */
typedef struct lm_store_addr {
    int kind;
    char *display; /* the URL as given, a password replaced by "***": prefixes messages */
    /* lmdb */
    char *path;
    size_t mapsize; /* 0: the default */
    /* redis */
    char *host;
    int port;
    int db;
    char *user;     /* NULL: none */
    char *password; /* NULL: none */
    char *prefix;   /* key prefix, default "lm" */
    int timeout_ms;
    int lease_ms; /* how long a silent writer keeps its half-written version */
} lm_store_addr;

int lm_store_url_parse(const char *url, lm_store_addr *u, lm_err *err);
void lm_store_url_free(lm_store_addr *u);
/* Version names: [A-Za-z0-9._-]{1,64}. */
int lm_store_check_version_name(const char *url, const char *version, lm_err *err);

/* A read's output: `begin` once with the version read (before any value), then `value` for
 * each key found (i: its index in the request). Either may fail the read. */
typedef struct lm_store_sink {
    int (*begin)(void *ctx, const lm_store_version *v, lm_err *err);
    int (*value)(void *ctx, size_t i, const void *val, size_t len, lm_err *err);
    void *ctx;
} lm_store_sink;

/* A version scan's output: every (key, value); non-zero stops the scan. */
typedef int (*lm_store_scan_fn)(void *ctx, const char *key, size_t klen, const void *val, size_t len);

/* What happened when dropping a version. */
enum { LM_DROP_DONE = 0, LM_DROP_CURRENT = 1, LM_DROP_LIVE = 2, LM_DROP_GONE = 3 };

typedef struct lm_store_ops {
    /* Connect or map; s->url and s->flags are set. */
    int (*open)(lm_store *s, lm_err *err);
    void (*close)(lm_store *s);
    /* Create the record of w->rec (incomplete), replacing a dead writer's version of that
     * name; LM_EEXIST for a complete one or a live writer's. Fills w->rec.seq, w->impl. */
    int (*begin)(lm_store_writer *w, lm_err *err);
    /* Store n encoded values of w->vsize bytes in one transaction; keys are checked. */
    int (*put)(lm_store_writer *w, const char *const *keys, const size_t *lens, const uint8_t *vals, size_t n,
               lm_err *err);
    /* Make w's version durable, complete and current, atomically. */
    int (*publish)(lm_store_writer *w, lm_err *err);
    /* Remove w's version (best effort) and free w->impl. */
    void (*abort)(lm_store_writer *w);
    /* Every version record, oldest (lowest seq) first; *out malloc'd. */
    int (*list)(lm_store *s, lm_store_version **out, size_t *n, lm_err *err);
    /* Read keys from one consistent version: `version` (complete) or the current one. */
    int (*read)(lm_store *s, const char *version, const char *const *keys, const size_t *lens, size_t n,
                const lm_store_sink *sink, lm_err *err);
    /* Walk every key of `version` (complete or not); rec gets its record; *nkeys the keys
     * walked. The version is read as it stands (LMDB: one snapshot). */
    int (*scan)(lm_store *s, const char *version, lm_store_version *rec, lm_store_scan_fn fn, void *ctx,
                uint64_t *nkeys, lm_err *err);
    /* Remove a version atomically, unless it is current (LM_DROP_CURRENT) or, when
     * incomplete, its writer is alive (LM_DROP_LIVE). */
    int (*drop)(lm_store *s, const char *version, int *what, lm_err *err);
    /* Test hook: write raw bytes as a version's value (damage on purpose). */
    int (*raw_put)(lm_store *s, const char *version, const char *key, size_t klen, const void *val,
                   size_t len, lm_err *err);
} lm_store_ops;

extern const lm_store_ops lm_store_lmdb_ops;
extern const lm_store_ops lm_store_redis_ops;

struct lm_store {
    const lm_store_ops *ops;
    lm_store_addr url;
    int flags;
    lm_store_writer *writer; /* the open writer, or NULL */
    void *impl;              /* the backend's state */
    uint64_t fail_put_at;    /* test hook: the Nth put_batch from now fails; 0: never */
};

struct lm_store_writer {
    lm_store *s;
    lm_store_version rec; /* name, model_id, dim, encoding, seq, created */
    size_t vsize;         /* bytes per stored value */
    uint64_t count;       /* keys written so far */
    int failed;           /* sticky: the first failure's code */
    lm_err sticky;
    uint8_t *buf; /* encoded batch: (n, vsize) */
    size_t buf_cap;
    char *last_key; /* the largest key written, for append detection */
    size_t last_len;
    uint64_t unsorted; /* keys that came out of order */
    void *impl;        /* the backend's state: one plain allocation, freed with free() */
};

/* ---- the value codec ----------------------------------------------------------------------- */

/* Bytes per stored value; 0 for a bad encoding. */
size_t lm_store_value_size(int enc, uint32_t dim);
/* Encode x: (dim) into out (value_size bytes). 0; or 1 (x[*bad_elem] is NaN or infinite),
 * 2 (x[*bad_elem] is past the encoding's range: |x| >= 65520 for f16). */
int lm_store_encode(int enc, uint32_t dim, const float *x, uint8_t *out, size_t *bad_elem);
/* Decode a stored value into out: (dim). 0; -1 for a wrong length; -2 for a non-finite
 * element or int8 scale. */
int lm_store_decode(int enc, uint32_t dim, const void *val, size_t len, float *out);
uint16_t lm_f32_to_f16(float f);
float lm_f16_to_f32(uint16_t h);

/* LMDB's default key order: memcmp over the shorter length, then the shorter first. */
static inline int lm_store_key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c) return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

/* Escape a key for a message ("u\x1f42"): into buf of n bytes. */
const char *lm_store_key_str(const char *key, size_t len, char *buf, size_t n);

/* ---- little-endian helpers for records ---------------------------------------------------- */

static inline void lm_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void lm_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t lm_get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static inline uint64_t lm_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- test hooks (tests/store only) --------------------------------------------------------- */

/* The `nth` put_batch from now fails with LM_EIO before writing anything (0: never). */
void lm_store_test_fail_put(lm_store *s, uint64_t nth);
/* Overwrite (or add) one stored value with raw bytes, bypassing the codec. */
int lm_store_test_raw_put(lm_store *s, const char *version, const char *key, size_t klen, const void *val,
                          size_t len, lm_err *err);

#endif
