/* store_redis.c: the networked backend, redis://HOST:PORT/DB, for serving from many machines.
 *
 * Keys, with P the prefix (default "lm"):
 *   P:format        "limaml-store 1"
 *   P:seq           counter giving each version its creation order
 *   P:current       the current version's name (one SET switches it)
 *   P:versions      sorted set: version name, scored by seq
 *   P:meta:V        hash: dim, enc, model, count, seq, created, published, complete
 *   P:data:V        hash: task key -> encoded vector (one hash per version: dropped by UNLINK)
 *   P:lease:V       the writer's random token, expiring after lease_ms without a batch
 * A writer takes the lease with SET NX, writes each batch in one MULTI/EXEC guarded by WATCH
 * on the lease (so a writer whose lease expired cannot write into a version another writer
 * restarted), and publishes with one MULTI/EXEC that marks the record complete and sets
 * P:current. A reader runs GET P:current, HGETALL P:meta:V, HMGET P:data:V in one MULTI/EXEC
 * for the version it believes current and retries when P:current names another: the data it
 * returns come from one version that was current at that instant, and since a version's hash
 * is only written before it is published and is removed with its record in one transaction,
 * it is whole. Durability is the server's (appendonly, appendfsync): see docs/STORE.md.
 */
#include "store/store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define FORMAT "limaml-store 1"
#define CHUNK 1000  /* field-value pairs per HSET / keys per HMGET */
#define KEY_MAX 200 /* prefix (64) + ":lease:" + version (64) */

typedef struct redis_state {
    redisContext *c;
    char cur[LM_STORE_VERSION_MAX + 1]; /* the version last seen current: the read fast path */
    const char **argv;
    size_t *argl;
    size_t argcap;
} redis_state;

typedef struct redis_writer {
    char token[33];
    char version[LM_STORE_VERSION_MAX + 1];
    char data[KEY_MAX], meta[KEY_MAX], lease[KEY_MAX];
} redis_writer;

/* ---- keys and errors ----------------------------------------------------------------------- */

static void key(char *buf, const lm_store *s, const char *kind, const char *version)
{
    if (version)
        snprintf(buf, KEY_MAX, "%s:%s:%s", s->url.prefix, kind, version);
    else
        snprintf(buf, KEY_MAX, "%s:%s", s->url.prefix, kind);
}

static void disconnect(redis_state *st)
{
    if (st->c) redisFree(st->c);
    st->c = NULL;
    st->cur[0] = 0;
}

/* A failed connection or a NULL reply: the connection is dropped and reopened by the next
 * call. */
static int io_fail(lm_store *s, const char *doing, lm_err *err)
{
    redis_state *st = s->impl;
    int rc =
        lm_err_set(err, LM_EIO, "%s: connection to %s port %d lost while %s: %s", s->url.display, s->url.host,
                   s->url.port, doing, st->c && st->c->errstr[0] ? st->c->errstr : "no reply");
    disconnect(st);
    return rc;
}

static int reply_fail(lm_store *s, const redisReply *r, const char *doing, lm_err *err)
{
    if (r->len >= 3 && !strncmp(r->str, "OOM", 3))
        return lm_err_set(err, LM_EIO,
                          "%s: the Redis server is out of memory (maxmemory) while %s; "
                          "the current version is untouched (%.200s)",
                          s->url.display, doing, r->str);
    if (r->len >= 9 && !strncmp(r->str, "EXECABORT", 9))
        return lm_err_set(err, LM_EIO, "%s: Redis refused a transaction while %s (%.200s)", s->url.display,
                          doing, r->str);
    return lm_err_set(err, LM_EIO, "%s: Redis error while %s: %.200s", s->url.display, doing, r->str);
}

/* The first error in a reply or, for an array (EXEC's), in its elements. */
static const redisReply *find_error(const redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) return r;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_ERROR) return r->element[i];
    return NULL;
}

/* Read the replies of n pipelined commands. out (n slots, may be NULL when n <= 16) gets them
 * all, for the caller to free; on failure every slot is NULL. An error reply anywhere (EXEC's
 * elements included) fails the call with the first error's text. */
static int replies(lm_store *s, size_t n, redisReply **out, const char *doing, lm_err *err)
{
    redis_state *st = s->impl;
    redisReply *local[16];
    if (!out) {
        LM_ASSERT(n <= 16);
        out = local;
    }
    for (size_t i = 0; i < n; i++) out[i] = NULL;
    int rc = LM_OK;
    for (size_t i = 0; i < n; i++) {
        void *rp = NULL;
        if (!st->c || redisGetReply(st->c, &rp) != REDIS_OK || !rp) {
            rc = io_fail(s, doing, err);
            break;
        }
        out[i] = rp;
    }
    for (size_t i = 0; rc == LM_OK && i < n; i++) {
        const redisReply *bad = find_error(out[i]);
        if (bad) rc = reply_fail(s, bad, doing, err);
    }
    if (rc != LM_OK || out == local)
        for (size_t i = 0; i < n; i++) {
            if (out[i]) freeReplyObject(out[i]);
            out[i] = NULL;
        }
    return rc;
}

static void free_replies(redisReply **r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (r[i]) freeReplyObject(r[i]);
}

static int argv_grow(lm_store *s, size_t n, lm_err *err)
{
    redis_state *st = s->impl;
    if (n <= st->argcap) return LM_OK;
    const char **a = lm_realloc_array(st->argv, n, sizeof *a);
    if (!a) return lm_err_set(err, LM_ENOMEM, "out of memory");
    st->argv = a;
    size_t *l = lm_realloc_array(st->argl, n, sizeof *l);
    if (!l) return lm_err_set(err, LM_ENOMEM, "out of memory");
    st->argl = l;
    st->argcap = n;
    return LM_OK;
}

/* One command, waiting for its reply (freed by the caller). */
static int cmd(lm_store *s, redisReply **out, const char *doing, lm_err *err, const char *fmt, ...)
{
    redis_state *st = s->impl;
    va_list ap;
    va_start(ap, fmt);
    int ok = redisvAppendCommand(st->c, fmt, ap);
    va_end(ap);
    if (ok != REDIS_OK) return io_fail(s, doing, err);
    return replies(s, 1, out, doing, err);
}

/* Connect (again, after a failure): AUTH, SELECT. */
static int conn(lm_store *s, lm_err *err)
{
    redis_state *st = s->impl;
    if (st->c && !st->c->err) return LM_OK;
    disconnect(st);
    const lm_store_addr *u = &s->url;
    struct timeval tv = {u->timeout_ms / 1000, (u->timeout_ms % 1000) * 1000};
    st->c = redisConnectWithTimeout(u->host, u->port, tv);
    if (!st->c) return lm_err_set(err, LM_ENOMEM, "%s: out of memory", u->display);
    if (st->c->err) {
        int rc = lm_err_set(err, LM_EIO, "%s: cannot connect to %s port %d: %s", u->display, u->host, u->port,
                            st->c->errstr);
        disconnect(st);
        return rc;
    }
    redisSetTimeout(st->c, tv);
    redisReply *r = NULL;
    int rc = LM_OK;
    if (u->password) {
        rc = u->user ? cmd(s, &r, "authenticating", err, "AUTH %s %s", u->user, u->password)
                     : cmd(s, &r, "authenticating", err, "AUTH %s", u->password);
        if (r) freeReplyObject(r);
        r = NULL;
    }
    if (rc == LM_OK && u->db != 0) {
        rc = cmd(s, &r, "selecting the database", err, "SELECT %d", u->db);
        if (r) freeReplyObject(r);
        if (rc != LM_OK)
            rc = lm_err_set(err, LM_EINVAL, "%s: database %d cannot be selected (%s)", u->display, u->db,
                            err ? err->msg : "");
    }
    if (rc != LM_OK) disconnect(st);
    return rc;
}

/* ---- records ------------------------------------------------------------------------------ */

static int field_ll(const redisReply *h, const char *name, long long *v)
{
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *k = h->element[i], *x = h->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && k->len == strlen(name) && !memcmp(k->str, name, k->len) &&
            x->type == REDIS_REPLY_STRING) {
            char buf[32];
            if (x->len == 0 || x->len >= sizeof buf) return -1;
            memcpy(buf, x->str, x->len);
            buf[x->len] = 0;
            char *end;
            errno = 0;
            *v = strtoll(buf, &end, 10);
            return *end || errno ? -1 : 0;
        }
    }
    return -1;
}

/* An HGETALL reply into a record: 0, 1 when empty (no record), -1 when malformed. */
static int parse_meta(const redisReply *h, const char *name, lm_store_version *v)
{
    memset(v, 0, sizeof *v);
    if (h->type != REDIS_REPLY_ARRAY) return -1;
    if (h->elements == 0) return 1;
    long long dim, enc, count, seq, created, published, complete;
    if (field_ll(h, "dim", &dim) || field_ll(h, "enc", &enc) || field_ll(h, "count", &count) ||
        field_ll(h, "seq", &seq) || field_ll(h, "created", &created) ||
        field_ll(h, "published", &published) || field_ll(h, "complete", &complete) || dim < 0 ||
        dim > UINT32_MAX || count < 0 || seq < 0)
        return -1;
    snprintf(v->name, sizeof v->name, "%s", name);
    v->dim = (uint32_t)dim;
    v->encoding = (int)enc;
    v->count = (uint64_t)count;
    v->seq = (uint64_t)seq;
    v->created = created;
    v->published = published;
    v->complete = complete != 0;
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *k = h->element[i], *x = h->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && k->len == 5 && !memcmp(k->str, "model", 5) &&
            x->type == REDIS_REPLY_STRING && x->len <= LM_STORE_MODEL_ID_MAX) {
            memcpy(v->model_id, x->str, x->len);
            v->model_id[x->len] = 0;
        }
    }
    return 0;
}

static int str_eq(const redisReply *r, const char *s)
{
    return r->type == REDIS_REPLY_STRING && r->len == strlen(s) && !memcmp(r->str, s, r->len);
}

/* ---- open and close ----------------------------------------------------------------------- */

static int redis_open(lm_store *s, lm_err *err)
{
    redis_state *st = calloc(1, sizeof *st);
    if (!st) return lm_err_set(err, LM_ENOMEM, "out of memory");
    s->impl = st;
    int rc = conn(s, err);
    char fk[KEY_MAX];
    key(fk, s, "format", NULL);
    redisReply *r = NULL;
    if (rc == LM_OK) rc = cmd(s, &r, "opening the store", err, "GET %s", fk);
    if (rc == LM_OK && r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        r = NULL;
        if (!(s->flags & LM_STORE_CREATE))
            rc = lm_err_set(err, LM_ENOTFOUND, "%s: no store here (no key %s in database %d)", s->url.display,
                            fk, s->url.db);
        else
            rc = cmd(s, &r, "creating the store", err, "SET %s %s NX", fk, FORMAT);
    } else if (rc == LM_OK && !str_eq(r, FORMAT)) {
        rc = lm_err_set(err, LM_EVERSION, "%s: %s is '%.64s', this build reads '%s'", s->url.display, fk,
                        r->type == REDIS_REPLY_STRING ? r->str : "(not a string)", FORMAT);
    }
    if (r) freeReplyObject(r);
    if (rc != LM_OK) {
        disconnect(st);
        free(st);
        s->impl = NULL;
    }
    return rc;
}

static void redis_close(lm_store *s)
{
    redis_state *st = s->impl;
    if (!st) return;
    disconnect(st);
    free(st->argv);
    free(st->argl);
    free(st);
}

/* ---- writing ------------------------------------------------------------------------------ */

static void make_token(char *out)
{
    uint8_t b[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, b, sizeof b) : -1;
    if (fd >= 0) close(fd);
    if (n != (ssize_t)sizeof b) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        uint64_t x = lm_mix64((uint64_t)getpid() ^ ((uint64_t)tv.tv_sec << 20) ^ (uint64_t)tv.tv_usec);
        uint64_t y = lm_mix64(x ^ (uint64_t)(uintptr_t)&tv);
        memcpy(b, &x, 8);
        memcpy(b + 8, &y, 8);
    }
    for (int i = 0; i < 16; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static int redis_begin(lm_store_writer *w, lm_err *err)
{
    lm_store *s = w->s;
    redis_state *st = s->impl;
    const char *D = s->url.display, *V = w->rec.name;
    int rc = conn(s, err);
    if (rc != LM_OK) return rc;
    redis_writer *rw = calloc(1, sizeof *rw);
    if (!rw) return lm_err_set(err, LM_ENOMEM, "out of memory");
    make_token(rw->token);
    snprintf(rw->version, sizeof rw->version, "%s", V);
    key(rw->data, s, "data", V);
    key(rw->meta, s, "meta", V);
    key(rw->lease, s, "lease", V);
    char seqk[KEY_MAX], vk[KEY_MAX];
    key(seqk, s, "seq", NULL);
    key(vk, s, "versions", NULL);
    redisReply *r = NULL;
    rc = cmd(s, &r, "starting a version", err, "SET %s %s NX PX %d", rw->lease, rw->token, s->url.lease_ms);
    if (rc == LM_OK && r->type == REDIS_REPLY_NIL)
        rc = lm_err_set(err, LM_EEXIST,
                        "%s: version '%s' is being written by another process (it holds "
                        "the lease %s)",
                        D, V, rw->lease);
    if (r) freeReplyObject(r);
    r = NULL;
    if (rc != LM_OK) {
        free(rw);
        return rc;
    }
    lm_store_version old;
    rc = cmd(s, &r, "starting a version", err, "HGETALL %s", rw->meta);
    int pm = rc == LM_OK ? parse_meta(r, V, &old) : 1;
    if (r) freeReplyObject(r);
    r = NULL;
    if (rc == LM_OK && pm == 0 && old.complete)
        rc = lm_err_set(err, LM_EEXIST, "%s: version '%s' exists and is complete; pick another name", D, V);
    if (rc == LM_OK) rc = cmd(s, &r, "starting a version", err, "INCR %s", seqk);
    if (rc == LM_OK) {
        w->rec.seq = (uint64_t)r->integer;
        freeReplyObject(r);
        r = NULL;
        char dim[16], enc[16], seq[32], created[32];
        snprintf(dim, sizeof dim, "%u", w->rec.dim);
        snprintf(enc, sizeof enc, "%d", w->rec.encoding);
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)w->rec.seq);
        snprintf(created, sizeof created, "%lld", (long long)w->rec.created);
        /* a dead writer's leftovers go in the same transaction that creates the record */
        redisAppendCommand(st->c, "MULTI");
        redisAppendCommand(st->c, "UNLINK %s", rw->data);
        redisAppendCommand(st->c, "DEL %s", rw->meta);
        redisAppendCommand(st->c,
                           "HSET %s dim %s enc %s model %s count 0 seq %s created %s published 0 complete 0",
                           rw->meta, dim, enc, w->rec.model_id, seq, created);
        redisAppendCommand(st->c, "ZADD %s %s %s", vk, seq, V);
        redisAppendCommand(st->c, "EXEC");
        rc = replies(s, 6, NULL, "starting a version", err);
    }
    if (rc != LM_OK) {
        if (st->c) { /* give the lease back if it is still ours */
            redisReply *x = redisCommand(st->c, "GET %s", rw->lease);
            if (x && str_eq(x, rw->token)) {
                freeReplyObject(x);
                x = redisCommand(st->c, "DEL %s", rw->lease);
            }
            if (x) freeReplyObject(x);
        }
        free(rw);
        return rc;
    }
    w->impl = rw;
    return LM_OK;
}

/* WATCH the lease and check it is still ours: 0, or an error (the WATCH is released). */
static int watch_lease(lm_store *s, redis_writer *rw, const char *extra_watch, const char *doing, lm_err *err)
{
    redis_state *st = s->impl;
    if (extra_watch)
        redisAppendCommand(st->c, "WATCH %s %s", rw->lease, extra_watch);
    else
        redisAppendCommand(st->c, "WATCH %s", rw->lease);
    redisAppendCommand(st->c, "GET %s", rw->lease);
    redisReply *r[2];
    int rc = replies(s, 2, r, doing, err);
    if (rc != LM_OK) return rc;
    int mine = str_eq(r[1], rw->token);
    free_replies(r, 2);
    if (mine) return LM_OK;
    redisReply *x = redisCommand(st->c, "UNWATCH");
    if (x) freeReplyObject(x);
    return lm_err_set(err, LM_EIO,
                      "%s: version '%s': the writer's lease expired (no batch for lease_ms) "
                      "and the version may have been removed or restarted by another writer",
                      s->url.display, rw->version);
}

static int redis_put(lm_store_writer *w, const char *const *keys, const size_t *lens, const uint8_t *vals,
                     size_t n, lm_err *err)
{
    lm_store *s = w->s;
    redis_state *st = s->impl;
    redis_writer *rw = w->impl;
    int rc = conn(s, err);
    if (rc == LM_OK) rc = watch_lease(s, rw, NULL, "writing a batch", err);
    if (rc != LM_OK) return rc;
    size_t chunk = n < CHUNK ? n : CHUNK;
    if ((rc = argv_grow(s, 2 + 2 * chunk, err)) != LM_OK) return rc;
    size_t ncmd = 0;
    redisAppendCommand(st->c, "MULTI");
    ncmd++;
    for (size_t b = 0; b < n; b += chunk) {
        size_t m = n - b < chunk ? n - b : chunk, a = 0;
        st->argv[a] = "HSET";
        st->argl[a++] = 4;
        st->argv[a] = rw->data;
        st->argl[a++] = strlen(rw->data);
        for (size_t i = b; i < b + m; i++) {
            st->argv[a] = keys[i];
            st->argl[a++] = lens[i];
            st->argv[a] = (const char *)(vals + i * w->vsize);
            st->argl[a++] = w->vsize;
        }
        redisAppendCommandArgv(st->c, (int)a, st->argv, st->argl);
        ncmd++;
    }
    redisAppendCommand(st->c, "HINCRBY %s count %llu", rw->meta, (unsigned long long)n);
    redisAppendCommand(st->c, "PEXPIRE %s %d", rw->lease, s->url.lease_ms);
    redisAppendCommand(st->c, "EXEC");
    ncmd += 3;
    redisReply **r = lm_malloc_array(ncmd, sizeof *r);
    if (!r) {
        disconnect(st); /* the pipeline cannot be drained */
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    rc = replies(s, ncmd, r, "writing a batch", err);
    if (rc == LM_OK) {
        const redisReply *ex = r[ncmd - 1];
        if (ex->type != REDIS_REPLY_ARRAY) {
            rc = lm_err_set(err, LM_EIO,
                            "%s: version '%s': the writer's lease changed during a batch; "
                            "nothing of it was written",
                            s->url.display, w->rec.name);
        } else {
            long long added = 0;
            for (size_t i = 0; i + 2 < ex->elements; i++) added += ex->element[i]->integer;
            if (added != (long long)n)
                rc = lm_err_set(err, LM_EINVAL,
                                "%s: version '%s': %lld task key(s) of this batch were "
                                "already written (a task written twice)",
                                s->url.display, w->rec.name, (long long)n - added);
        }
    }
    free_replies(r, ncmd);
    free(r);
    return rc;
}

static int redis_publish(lm_store_writer *w, lm_err *err)
{
    lm_store *s = w->s;
    redis_state *st = s->impl;
    redis_writer *rw = w->impl;
    const char *D = s->url.display;
    char ck[KEY_MAX];
    key(ck, s, "current", NULL);
    int rc = conn(s, err);
    if (rc == LM_OK) rc = watch_lease(s, rw, rw->meta, "publishing", err);
    if (rc != LM_OK) return rc;
    redisAppendCommand(st->c, "HGET %s count", rw->meta);
    redisAppendCommand(st->c, "HLEN %s", rw->data);
    redisReply *r[2];
    if ((rc = replies(s, 2, r, "publishing", err)) != LM_OK) return rc;
    long long count = r[0]->type == REDIS_REPLY_STRING ? strtoll(r[0]->str, NULL, 10) : -1;
    long long hlen = r[1]->integer;
    free_replies(r, 2);
    if (count != (long long)w->count || hlen != (long long)w->count) {
        redisReply *x = redisCommand(st->c, "UNWATCH");
        if (x) freeReplyObject(x);
        return lm_err_set(err, LM_EFORMAT,
                          "%s: version '%s' holds %lld keys (record: %lld), %llu were written", D,
                          w->rec.name, hlen, count, (unsigned long long)w->count);
    }
    char now[32];
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    redisAppendCommand(st->c, "MULTI");
    redisAppendCommand(st->c, "HSET %s complete 1 published %s", rw->meta, now);
    redisAppendCommand(st->c, "SET %s %s", ck, w->rec.name);
    redisAppendCommand(st->c, "DEL %s", rw->lease);
    redisAppendCommand(st->c, "EXEC");
    redisReply *x[5];
    if ((rc = replies(s, 5, x, "publishing", err)) != LM_OK) return rc;
    int ok = x[4]->type == REDIS_REPLY_ARRAY;
    free_replies(x, 5);
    if (!ok)
        return lm_err_set(err, LM_EIO,
                          "%s: version '%s': the writer's lease expired during the publish; "
                          "the current version is untouched",
                          D, w->rec.name);
    return LM_OK;
}

/* Remove the writer's version if the lease is still ours. */
static void redis_abort(lm_store_writer *w)
{
    lm_store *s = w->s;
    redis_state *st = s->impl;
    redis_writer *rw = w->impl;
    lm_err e = {0};
    if (rw && conn(s, &e) == LM_OK && watch_lease(s, rw, NULL, "aborting", &e) == LM_OK) {
        char vk[KEY_MAX];
        key(vk, s, "versions", NULL);
        redisAppendCommand(st->c, "MULTI");
        redisAppendCommand(st->c, "UNLINK %s", rw->data);
        redisAppendCommand(st->c, "DEL %s", rw->meta);
        redisAppendCommand(st->c, "ZREM %s %s", vk, w->rec.name);
        redisAppendCommand(st->c, "DEL %s", rw->lease);
        redisAppendCommand(st->c, "EXEC");
        replies(s, 6, NULL, "aborting", &e);
    }
    free(rw);
    w->impl = NULL;
}

/* ---- reading ------------------------------------------------------------------------------ */

static int redis_read(lm_store *s, const char *version, const char *const *keys, const size_t *lens, size_t n,
                      const lm_store_sink *sink, lm_err *err)
{
    redis_state *st = s->impl;
    const char *D = s->url.display;
    char ck[KEY_MAX], mk[KEY_MAX], dk[KEY_MAX];
    key(ck, s, "current", NULL);
    int rc = conn(s, err);
    if (rc != LM_OK) return rc;
    if ((rc = argv_grow(s, 2 + n, err)) != LM_OK) return rc;
    for (int attempt = 0; attempt < 8; attempt++) {
        const char *name = version ? version : st->cur;
        if (!name[0]) { /* nothing seen yet: ask */
            redisReply *r = NULL;
            if ((rc = cmd(s, &r, "reading the current version", err, "GET %s", ck)) != LM_OK) return rc;
            int none = r->type != REDIS_REPLY_STRING || r->len < 1 || r->len > LM_STORE_VERSION_MAX;
            if (!none) {
                memcpy(st->cur, r->str, r->len);
                st->cur[r->len] = 0;
            }
            freeReplyObject(r);
            if (none) return lm_err_set(err, LM_ENOTFOUND, "%s: no version has been published yet", D);
            continue;
        }
        char nm[LM_STORE_VERSION_MAX + 1];
        snprintf(nm, sizeof nm, "%s", name);
        key(mk, s, "meta", nm);
        key(dk, s, "data", nm);
        redisAppendCommand(st->c, "MULTI");
        redisAppendCommand(st->c, "GET %s", ck);
        redisAppendCommand(st->c, "HGETALL %s", mk);
        size_t ncmd = 4;
        if (n) {
            st->argv[0] = "HMGET";
            st->argl[0] = 5;
            st->argv[1] = dk;
            st->argl[1] = strlen(dk);
            for (size_t i = 0; i < n; i++) {
                st->argv[2 + i] = keys[i];
                st->argl[2 + i] = lens[i];
            }
            redisAppendCommandArgv(st->c, (int)(2 + n), st->argv, st->argl);
            ncmd++;
        }
        redisAppendCommand(st->c, "EXEC");
        redisReply *r[5] = {0};
        if ((rc = replies(s, ncmd, r, "reading", err)) != LM_OK) return rc;
        const redisReply *ex = r[ncmd - 1];
        if (ex->type != REDIS_REPLY_ARRAY || ex->elements != ncmd - 2) {
            free_replies(r, ncmd);
            return lm_err_set(err, LM_EIO, "%s: unexpected reply to a read transaction", D);
        }
        const redisReply *cur = ex->element[0], *meta = ex->element[1];
        int is_current = cur->type == REDIS_REPLY_STRING && str_eq(cur, nm);
        if (!version && !is_current) { /* the pointer moved: follow it */
            int none = cur->type != REDIS_REPLY_STRING || cur->len < 1 || cur->len > LM_STORE_VERSION_MAX;
            if (!none) {
                memcpy(st->cur, cur->str, cur->len);
                st->cur[cur->len] = 0;
            }
            free_replies(r, ncmd);
            if (none) {
                st->cur[0] = 0;
                return lm_err_set(err, LM_ENOTFOUND, "%s: no version has been published yet", D);
            }
            continue;
        }
        lm_store_version rec;
        int pm = parse_meta(meta, nm, &rec);
        if (pm == 1)
            rc = version ? lm_err_set(err, LM_ENOTFOUND, "%s: no version '%s'", D, nm)
                         : lm_err_set(err, LM_EFORMAT, "%s: the current version '%s' has no record", D, nm);
        else if (pm == -1)
            rc = lm_err_set(err, LM_EFORMAT, "%s: the record of version '%s' is damaged", D, nm);
        else if (!rec.complete)
            rc = lm_err_set(err, LM_ENOTFOUND,
                            "%s: version '%s' is incomplete (being written, or left by "
                            "a run that did not finish)",
                            D, nm);
        if (rc == LM_OK) {
            rec.current = is_current;
            rc = sink->begin(sink->ctx, &rec, err);
        }
        if (rc == LM_OK && n) {
            const redisReply *vals = ex->element[2];
            if (vals->type != REDIS_REPLY_ARRAY || vals->elements != n)
                rc = lm_err_set(err, LM_EIO, "%s: unexpected reply to HMGET", D);
            for (size_t i = 0; rc == LM_OK && i < n; i++)
                if (vals->element[i]->type == REDIS_REPLY_STRING)
                    rc = sink->value(sink->ctx, i, vals->element[i]->str, vals->element[i]->len, err);
        }
        free_replies(r, ncmd);
        return rc;
    }
    return lm_err_set(err, LM_EIO, "%s: the current version kept changing during a read", D);
}

static int cmp_seq(const void *a, const void *b)
{
    const lm_store_version *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int redis_list(lm_store *s, lm_store_version **out, size_t *n, lm_err *err)
{
    redis_state *st = s->impl;
    *out = NULL;
    *n = 0;
    char ck[KEY_MAX], vk[KEY_MAX], mk[KEY_MAX];
    key(ck, s, "current", NULL);
    key(vk, s, "versions", NULL);
    int rc = conn(s, err);
    if (rc != LM_OK) return rc;
    redisAppendCommand(st->c, "GET %s", ck);
    redisAppendCommand(st->c, "ZRANGE %s 0 -1", vk);
    redisReply *r[2];
    if ((rc = replies(s, 2, r, "listing versions", err)) != LM_OK) return rc;
    size_t m = r[1]->type == REDIS_REPLY_ARRAY ? r[1]->elements : 0;
    lm_store_version *v = lm_malloc_array(m, sizeof *v);
    redisReply **h = lm_malloc_array(m, sizeof *h);
    if (!v || !h) {
        free(v);
        free(h);
        free_replies(r, 2);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < m; i++) {
        char nm[LM_STORE_VERSION_MAX + 1];
        snprintf(nm, sizeof nm, "%.*s", (int)LM_MIN(r[1]->element[i]->len, LM_STORE_VERSION_MAX),
                 r[1]->element[i]->str);
        key(mk, s, "meta", nm);
        redisAppendCommand(st->c, "HGETALL %s", mk);
    }
    rc = m ? replies(s, m, h, "listing versions", err) : LM_OK;
    for (size_t i = 0; rc == LM_OK && i < m; i++) {
        char nm[LM_STORE_VERSION_MAX + 1];
        snprintf(nm, sizeof nm, "%.*s", (int)LM_MIN(r[1]->element[i]->len, LM_STORE_VERSION_MAX),
                 r[1]->element[i]->str);
        int pm = parse_meta(h[i], nm, &v[*n]);
        if (pm == 1) continue; /* removed since the ZRANGE */
        if (pm == -1) {
            rc = lm_err_set(err, LM_EFORMAT, "%s: the record of version '%s' is damaged", s->url.display, nm);
            break;
        }
        v[*n].current = str_eq(r[0], nm);
        (*n)++;
    }
    free_replies(h, m);
    free(h);
    free_replies(r, 2);
    if (rc != LM_OK) {
        free(v);
        *n = 0;
        return rc;
    }
    if (*n) qsort(v, *n, sizeof *v, cmp_seq);
    *out = v;
    return LM_OK;
}

static int redis_scan(lm_store *s, const char *version, lm_store_version *rec, lm_store_scan_fn fn, void *ctx,
                      uint64_t *nkeys, lm_err *err)
{
    redis_state *st = s->impl;
    *nkeys = 0;
    char ck[KEY_MAX], mk[KEY_MAX], dk[KEY_MAX];
    key(ck, s, "current", NULL);
    key(mk, s, "meta", version);
    key(dk, s, "data", version);
    int rc = conn(s, err);
    if (rc != LM_OK) return rc;
    redisAppendCommand(st->c, "GET %s", ck);
    redisAppendCommand(st->c, "HGETALL %s", mk);
    redisAppendCommand(st->c, "HLEN %s", dk);
    redisReply *r[3];
    if ((rc = replies(s, 3, r, "scanning a version", err)) != LM_OK) return rc;
    int pm = parse_meta(r[1], version, rec);
    rec->current = str_eq(r[0], version);
    *nkeys = (uint64_t)r[2]->integer;
    free_replies(r, 3);
    if (pm == 1) return lm_err_set(err, LM_ENOTFOUND, "%s: no version '%s'", s->url.display, version);
    if (pm == -1)
        return lm_err_set(err, LM_EFORMAT, "%s: the record of version '%s' is damaged", s->url.display,
                          version);
    /* HSCAN returns every field present throughout at least once (a rehash may repeat one) */
    char cursor[32] = "0";
    do {
        redisReply *x = NULL;
        if ((rc = cmd(s, &x, "scanning a version", err, "HSCAN %s %s COUNT 1000", dk, cursor)) != LM_OK)
            return rc;
        if (x->type != REDIS_REPLY_ARRAY || x->elements != 2 || x->element[0]->type != REDIS_REPLY_STRING ||
            x->element[1]->type != REDIS_REPLY_ARRAY || x->element[0]->len >= sizeof cursor) {
            freeReplyObject(x);
            return lm_err_set(err, LM_EIO, "%s: unexpected reply to HSCAN", s->url.display);
        }
        memcpy(cursor, x->element[0]->str, x->element[0]->len);
        cursor[x->element[0]->len] = 0;
        const redisReply *kv = x->element[1];
        int stop = 0;
        for (size_t i = 0; !stop && i + 1 < kv->elements; i += 2)
            stop = fn(ctx, kv->element[i]->str, kv->element[i]->len, kv->element[i + 1]->str,
                      kv->element[i + 1]->len);
        freeReplyObject(x);
        if (stop) break;
    } while (strcmp(cursor, "0"));
    return LM_OK;
}

/* ---- cleaning ----------------------------------------------------------------------------- */

static int redis_drop(lm_store *s, const char *version, int *what, lm_err *err)
{
    redis_state *st = s->impl;
    char ck[KEY_MAX], vk[KEY_MAX], mk[KEY_MAX], dk[KEY_MAX], lk[KEY_MAX];
    key(ck, s, "current", NULL);
    key(vk, s, "versions", NULL);
    key(mk, s, "meta", version);
    key(dk, s, "data", version);
    key(lk, s, "lease", version);
    int rc = conn(s, err);
    if (rc != LM_OK) return rc;
    for (int attempt = 0; attempt < 4; attempt++) {
        redisAppendCommand(st->c, "WATCH %s %s %s", ck, lk, mk);
        redisAppendCommand(st->c, "GET %s", ck);
        redisAppendCommand(st->c, "EXISTS %s", lk);
        redisAppendCommand(st->c, "HGET %s complete", mk);
        redisAppendCommand(st->c, "EXISTS %s %s", mk, dk);
        redisReply *r[5];
        if ((rc = replies(s, 5, r, "removing a version", err)) != LM_OK) return rc;
        int complete = r[3]->type == REDIS_REPLY_STRING && r[3]->len == 1 && r[3]->str[0] == '1';
        if (str_eq(r[1], version))
            *what = LM_DROP_CURRENT;
        else if (r[4]->integer == 0)
            *what = LM_DROP_GONE;
        else if (!complete && r[2]->integer)
            *what = LM_DROP_LIVE;
        else
            *what = LM_DROP_DONE;
        free_replies(r, 5);
        if (*what != LM_DROP_DONE) {
            redisReply *x = redisCommand(st->c, "UNWATCH");
            if (x) freeReplyObject(x);
            if (*what == LM_DROP_GONE) { /* a stray entry in the version set */
                x = redisCommand(st->c, "ZREM %s %s", vk, version);
                if (x) freeReplyObject(x);
            }
            return LM_OK;
        }
        redisAppendCommand(st->c, "MULTI");
        redisAppendCommand(st->c, "UNLINK %s", dk);
        redisAppendCommand(st->c, "DEL %s", mk);
        redisAppendCommand(st->c, "ZREM %s %s", vk, version);
        redisAppendCommand(st->c, "EXEC");
        redisReply *x[5];
        if ((rc = replies(s, 5, x, "removing a version", err)) != LM_OK) return rc;
        int ok = x[4]->type == REDIS_REPLY_ARRAY;
        free_replies(x, 5);
        if (ok) return LM_OK;
    }
    *what = LM_DROP_LIVE; /* kept changing under us: leave it for the next gc */
    return LM_OK;
}

static int redis_raw_put(lm_store *s, const char *version, const char *k, size_t klen, const void *val,
                         size_t len, lm_err *err)
{
    char dk[KEY_MAX];
    key(dk, s, "data", version);
    int rc = conn(s, err);
    redisReply *r = NULL;
    if (rc == LM_OK) rc = cmd(s, &r, "writing a raw value", err, "HSET %s %b %b", dk, k, klen, val, len);
    if (r) freeReplyObject(r);
    return rc;
}

const lm_store_ops lm_store_redis_ops = {
    .open = redis_open,
    .close = redis_close,
    .begin = redis_begin,
    .put = redis_put,
    .publish = redis_publish,
    .abort = redis_abort,
    .list = redis_list,
    .read = redis_read,
    .scan = redis_scan,
    .drop = redis_drop,
    .raw_put = redis_raw_put,
};
