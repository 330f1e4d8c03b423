/* sstore.c: the feature store as the server sees it: a pool of handles that reconnects by
 * itself and backs off after a failure, so a store that is down costs requests nothing (they
 * take the cold-start path at once) and is tried again every so often.
 *
 * Handles: an lm_store is used by one thread at a time, so each serving thread gets a handle of
 * its own (it keeps to its slot, so the slot locks are hardly ever contended): a connection for
 * Redis; for LMDB a read transaction of its own on the process's one environment, which the
 * read-only handles share (store_lmdb.c), so reads run in parallel. A failed handle is closed;
 * the next attempt after the back-off opens it again.
 * Back-off: 50 ms after the first failure, doubling to 250 ms while failures go on (a connection
 * attempt four times a second costs nothing), reset by a success or by lm_srv_store_retry_now
 * (a reload). */
#include "serve/serve.h"

#include <stdio.h>
#include <string.h>

#define BACKOFF_MIN 0.05
#define BACKOFF_MAX 0.25

typedef struct slot {
    pthread_mutex_t mu;
    lm_store *s; /* NULL: to be opened */
} slot;

struct lm_srv_store {
    char *url;
    char *display; /* the URL with a password masked, for messages */
    size_t nslots;
    slot *slots;
    pthread_mutex_t state_mu; /* guards the back-off state below */
    double down_until, backoff;
    atomic_int down;
    atomic_uint_fast64_t errors;
    atomic_size_t next_slot;
    void (*log)(void *ctx, const char *msg);
    void *log_ctx;
};

static _Thread_local size_t tl_slot = SIZE_MAX;

static slot *pick(lm_srv_store *st)
{
    if (tl_slot == SIZE_MAX) tl_slot = atomic_fetch_add(&st->next_slot, 1);
    return &st->slots[tl_slot % st->nslots];
}

static void say(lm_srv_store *st, const char *fmt, const char *a)
{
    if (!st->log) return;
    char msg[LM_ERR_MSG_MAX + 128];
    snprintf(msg, sizeof msg, fmt, a);
    st->log(st->log_ctx, msg);
}

/* "redis://user:secret@host" -> "redis://user:***@host" (malloc'd). */
static char *mask_url(const char *url)
{
    char *d = lm_strdup(url);
    const char *sch = strstr(url, "://");
    if (!d || !sch) return d;
    const char *auth = sch + 3, *at = strchr(auth, '@'), *slash = strchr(auth, '/');
    if (!at || (slash && slash < at)) return d;
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    if (!colon) return d;
    size_t head = (size_t)(colon + 1 - url);
    snprintf(d + head, strlen(url) + 1 - head, "***%s", at);
    return d;
}

int lm_srv_store_open(lm_srv_store **out, const char *url, size_t nslots, void (*log)(void *, const char *),
                      void *log_ctx, lm_err *err)
{
    *out = NULL;
    lm_store *probe = NULL;
    int rc = lm_store_open(&probe, url, LM_STORE_READONLY, err);
    if (rc == LM_EINVAL) return rc; /* a malformed URL, a file for a folder, a second open: configuration */
    lm_srv_store *st = calloc(1, sizeof *st);
    if (st) {
        st->nslots = nslots == 0 ? 1 : nslots;
        st->slots = calloc(st->nslots, sizeof *st->slots);
        st->url = lm_strdup(url);
        st->display = mask_url(url);
    }
    if (!st || !st->slots || !st->url || !st->display) {
        lm_store_close(probe);
        if (st) free(st->slots), free(st->url), free(st->display), free(st);
        return lm_err_set(err, LM_ENOMEM, "serve: out of memory");
    }
    for (size_t i = 0; i < st->nslots; i++) pthread_mutex_init(&st->slots[i].mu, NULL);
    pthread_mutex_init(&st->state_mu, NULL);
    st->log = log, st->log_ctx = log_ctx;
    st->backoff = BACKOFF_MIN;
    atomic_init(&st->down, 0);
    atomic_init(&st->errors, 0);
    atomic_init(&st->next_slot, 0);
    if (rc == LM_OK) {
        st->slots[0].s = probe;
    } else {
        atomic_store(&st->down, 1);
        atomic_fetch_add(&st->errors, 1);
        st->down_until = lm_now() + st->backoff;
        say(st, "store: unavailable at start, serving cold starts until it comes back: %s", err->msg);
    }
    *out = st;
    return LM_OK;
}

void lm_srv_store_close(lm_srv_store *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->nslots; i++) {
        lm_store_close(st->slots[i].s);
        pthread_mutex_destroy(&st->slots[i].mu);
    }
    pthread_mutex_destroy(&st->state_mu);
    free(st->slots);
    free(st->url);
    free(st->display);
    free(st);
}

/* 1 when a back-off is in force. */
static int backing_off(lm_srv_store *st)
{
    if (!atomic_load_explicit(&st->down, memory_order_relaxed)) return 0;
    pthread_mutex_lock(&st->state_mu);
    int wait = lm_now() < st->down_until;
    pthread_mutex_unlock(&st->state_mu);
    return wait;
}

static void mark_down(lm_srv_store *st, slot *sl, const lm_err *err)
{
    lm_store_close(sl->s);
    sl->s = NULL;
    atomic_fetch_add(&st->errors, 1);
    pthread_mutex_lock(&st->state_mu);
    int was = atomic_exchange(&st->down, 1);
    if (was)
        st->backoff = LM_MIN(st->backoff * 2, BACKOFF_MAX);
    else
        st->backoff = BACKOFF_MIN;
    st->down_until = lm_now() + st->backoff;
    pthread_mutex_unlock(&st->state_mu);
    if (!was) say(st, "store: failed, serving cold starts and retrying: %s", err->msg);
}

static void mark_up(lm_srv_store *st)
{
    if (!atomic_load_explicit(&st->down, memory_order_relaxed)) return;
    pthread_mutex_lock(&st->state_mu);
    int was = atomic_exchange(&st->down, 0);
    st->backoff = BACKOFF_MIN;
    pthread_mutex_unlock(&st->state_mu);
    if (was) say(st, "store: %s is back", st->display);
}

/* Lock a slot with an open handle; LM_SRV_GET_DOWN (slot unlocked) when it cannot be opened.
 * *fresh: the handle was opened now. */
static int acquire(lm_srv_store *st, slot **out, int *fresh, lm_err *err)
{
    slot *sl = pick(st);
    pthread_mutex_lock(&sl->mu);
    *fresh = !sl->s;
    if (!sl->s && lm_store_open(&sl->s, st->url, LM_STORE_READONLY, err) != LM_OK) {
        sl->s = NULL;
        mark_down(st, sl, err);
        pthread_mutex_unlock(&sl->mu);
        return LM_SRV_GET_DOWN;
    }
    *out = sl;
    return LM_SRV_GET_OK;
}

/* A handle that has been idle across a server restart fails on its first use although the
 * store is back: after an I/O error on a handle opened before, open it again and retry once. */
static int reopen(lm_srv_store *st, slot *sl, int fresh, int rc, lm_err *err)
{
    if (rc != LM_EIO || fresh) return 0;
    lm_store_close(sl->s);
    sl->s = NULL;
    lm_err e = {0};
    if (lm_store_open(&sl->s, st->url, LM_STORE_READONLY, &e) == LM_OK) return 1;
    sl->s = NULL;
    *err = e;
    return 0;
}

int lm_srv_store_get(lm_srv_store *st, const char *key, size_t len, float *out, size_t dim, int *found,
                     char *version, lm_err *err)
{
    *found = 0;
    version[0] = 0;
    if (backing_off(st)) return LM_SRV_GET_SKIPPED;
    slot *sl;
    int fresh;
    if (acquire(st, &sl, &fresh, err) != LM_SRV_GET_OK) return LM_SRV_GET_DOWN;
    uint8_t f = 0;
    lm_store_version rec;
    int rc = lm_store_get_batch(sl->s, NULL, &key, &len, 1, out, dim, &f, &rec, err);
    if (reopen(st, sl, fresh, rc, err))
        rc = lm_store_get_batch(sl->s, NULL, &key, &len, 1, out, dim, &f, &rec, err);
    int res = LM_SRV_GET_OK;
    if (rc == LM_OK) {
        *found = f;
        memcpy(version, rec.name, sizeof rec.name);
    } else if (rc == LM_ENOTFOUND) {
        res = LM_SRV_GET_NOVERSION; /* nothing published yet: the store itself is fine */
    } else {
        mark_down(st, sl, err);
        res = LM_SRV_GET_DOWN;
    }
    pthread_mutex_unlock(&sl->mu);
    if (res != LM_SRV_GET_DOWN) mark_up(st);
    return res;
}

int lm_srv_store_current(lm_srv_store *st, lm_store_version *v, lm_err *err)
{
    if (backing_off(st)) return lm_err_set(err, LM_EIO, "%s: unavailable (retrying)", st->display);
    slot *sl;
    int fresh;
    if (acquire(st, &sl, &fresh, err) != LM_SRV_GET_OK) return LM_EIO; /* even "no such store": unavailable */
    int rc = lm_store_current(sl->s, v, err);
    if (reopen(st, sl, fresh, rc, err)) rc = lm_store_current(sl->s, v, err);
    if (rc != LM_OK && rc != LM_ENOTFOUND) mark_down(st, sl, err);
    pthread_mutex_unlock(&sl->mu);
    if (rc == LM_OK || rc == LM_ENOTFOUND) mark_up(st);
    return rc;
}

void lm_srv_store_retry_now(lm_srv_store *st)
{
    pthread_mutex_lock(&st->state_mu);
    st->down_until = 0;
    st->backoff = BACKOFF_MIN;
    pthread_mutex_unlock(&st->state_mu);
}

int lm_srv_store_down(const lm_srv_store *st)
{
    return atomic_load(&((lm_srv_store *)st)->down);
}

const char *lm_srv_store_url(const lm_srv_store *st)
{
    return st->display;
}

uint64_t lm_srv_store_errors(const lm_srv_store *st)
{
    return atomic_load(&((lm_srv_store *)st)->errors);
}
