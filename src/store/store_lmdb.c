/* store_lmdb.c: the embedded backend, lmdb://PATH.
 *
 * One LMDB environment (a folder with data.mdb and lock.mdb) holds named databases:
 *   meta          "format" -> "limaml-store 1", "seq" -> u64, "current" -> version name,
 *                 "v/<version>" -> the version's record (see rec_put)
 *   v:<version>   task key -> encoded vector, one database per version
 * Writing a version: begin creates its record (incomplete) and database in one transaction;
 * each batch is one transaction that appends its keys and bumps the record's count; publish
 * flushes everything (mdb_env_sync), then one small transaction marks the record complete and
 * points "current" at it, then flushes again. Readers resolve "current" and read values in
 * one read transaction, so they see one whole version. The environment runs MDB_NOMETASYNC:
 * each batch syncs its data pages but not the meta page, so a power loss can undo the last
 * batches but never corrupts the environment (MDB_NOSYNC could), and the publish is the
 * durable point. Garbage collection drops whole databases (mdb_drop).
 *
 * Threads: an lm_store handle is used by one thread at a time, and LMDB allows one environment
 * per process. Read-only handles on the same store therefore share one environment (refcounted
 * in the registry below), each with its own read transaction (MDB_NOTLS), so a server's threads
 * read in parallel instead of queueing behind one handle. What they share is guarded: the cache
 * of version databases and every mdb_dbi_open by `mu` (LMDB allows one at a time per process),
 * and adopting a map another process grew (mdb_env_set_mapsize, only with no transaction active
 * in the process) by `resize`, which every read transaction holds shared. A handle that writes
 * has its environment to itself, as before.
 */
#include "store/store_impl.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define FORMAT "limaml-store 1"
#define REC_MAGIC "LMSV"
#define REC_FORMAT 1u
#define REC_FIXED 56 /* bytes before the model id */
#define DBI_CACHE 64
#define DEFAULT_MAPSIZE ((size_t)1 << 40) /* 1 TiB of address space; the file stays sparse */

typedef struct dbi_entry {
    char name[LM_STORE_VERSION_MAX + 1];
    MDB_dbi dbi;
} dbi_entry;

/* One open environment of this process, shared by its read-only handles. */
typedef struct lmdb_env {
    dev_t dev;
    ino_t ino;
    pid_t pid;
    int readonly;
    int refs; /* handles using it; guarded by reg_lock */
    MDB_env *env;
    MDB_dbi meta;
    size_t mapsize;
    pthread_mutex_t mu;         /* the cache below, and mdb_dbi_open */
    pthread_rwlock_t resize;    /* shared by every transaction, exclusive to adopt a grown map */
    dbi_entry cache[DBI_CACHE]; /* version databases opened in this process */
    size_t ncache;
} lmdb_env;

typedef struct lmdb_state {
    lmdb_env *sh;
    MDB_env *env; /* sh's, copied */
    MDB_dbi meta;
    MDB_txn *rtxn; /* a reset read transaction, renewed for each read */
    size_t mapsize;
    /* The version this handle read last and its database: a read of the current version (every
     * request of a server) finds it here without taking the environment's lock. Valid while
     * the database stays open: read-only environments never close one, and a writing handle,
     * alone on its environment, forgets it when it closes or drops one. */
    char last_name[LM_STORE_VERSION_MAX + 1];
    MDB_dbi last_dbi;
} lmdb_state;

typedef struct lmdb_writer {
    MDB_dbi dbi;
} lmdb_writer;

/* ---- one environment per store per process ----------------------------------------------- */

/* LMDB forbids opening one environment twice in a process (its fcntl locks would be released
 * by the first close). Read-only handles share the one environment; a writing handle needs it
 * to itself, so opening a store a writer holds (or writing to one readers hold) is refused.
 * Entries carry the pid so a forked child, which inherits the table, opens the store afresh. */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static lmdb_env *reg[64];

/* The environment of this process for (dev, ino), with a reference taken: *out stays NULL when
 * there is none yet (the caller opens it and calls reg_publish). -1: held by a writer, or
 * readers hold it and this open writes; -2: the table is full. Called with reg_lock held. */
static int reg_take(dev_t dev, ino_t ino, int readonly, lmdb_env **out, size_t *slot)
{
    pid_t me = getpid();
    *out = NULL;
    *slot = SIZE_MAX;
    for (size_t i = 0; i < sizeof reg / sizeof reg[0]; i++) {
        lmdb_env *e = reg[i];
        if (e && e->pid != me) reg[i] = e = NULL; /* inherited through fork: not ours to use or close */
        if (!e) {
            if (*slot == SIZE_MAX) *slot = i;
            continue;
        }
        if (e->dev == dev && e->ino == ino) {
            if (!readonly || !e->readonly) return -1;
            e->refs++;
            *out = e;
            return 0;
        }
    }
    return *slot == SIZE_MAX ? -2 : 0;
}

static void env_free(lmdb_env *e)
{
    if (!e) return;
    if (e->env) mdb_env_close(e->env);
    pthread_mutex_destroy(&e->mu);
    pthread_rwlock_destroy(&e->resize);
    free(e);
}

/* Drop a reference, closing the environment with the last. The close happens under reg_lock:
 * closing lock.mdb drops every fcntl lock the process holds on it, so an environment opened on
 * the same store meanwhile would lose its reader locks (lmdb.h, "caveats"). A forked child
 * never closes its parent's environment (that would clear the parent's reader slots). */
static void reg_release(lmdb_env *e)
{
    pthread_mutex_lock(&reg_lock);
    if (e->pid == getpid() && --e->refs == 0) {
        for (size_t i = 0; i < sizeof reg / sizeof reg[0]; i++)
            if (reg[i] == e) reg[i] = NULL;
        env_free(e);
    }
    pthread_mutex_unlock(&reg_lock);
}

/* ---- errors ------------------------------------------------------------------------------- */

static int mdb_fail(lm_store *s, int rc, const char *doing, lm_err *err)
{
    lmdb_state *st = s->impl;
    const char *D = s->url.display;
    if (rc == MDB_MAP_FULL)
        return lm_err_set(err, LM_EIO,
                          "%s: the store is full while %s: its map size of %zu bytes is reached "
                          "(raise ?mapsize=); the current version is untouched",
                          D, doing, st ? st->mapsize : (size_t)0);
    /* LMDB reports a short write (what a full disk gives) as EIO: look at the free space */
    struct statvfs vfs;
    if (rc == EIO && statvfs(s->url.path, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < (64u << 10))
        rc = ENOSPC;
    if (rc == ENOSPC || rc == EDQUOT)
        return lm_err_set(err, LM_EIO,
                          "%s: no space left on the device while %s (%s); the current "
                          "version is untouched",
                          D, doing, strerror(rc));
    if (rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND)
        return lm_err_set(err, LM_EFORMAT, "%s: %s: %s", D, doing, mdb_strerror(rc));
    if (rc == MDB_VERSION_MISMATCH)
        return lm_err_set(err, LM_EVERSION, "%s: %s: %s", D, doing, mdb_strerror(rc));
    if (rc == ENOMEM) return lm_err_set(err, LM_ENOMEM, "%s: %s: out of memory", D, doing);
    return lm_err_set(err, LM_EIO, "%s: %s: %s", D, doing, mdb_strerror(rc));
}

/* ---- records ------------------------------------------------------------------------------ */

/* A version's record: "LMSV", u32 format, u32 dim, u32 encoding, u64 count, u64 seq,
 * i64 created, i64 published, u32 complete, u32 writer pid, then the model id's bytes. */
static size_t rec_put(uint8_t *b, const lm_store_version *v, uint32_t pid)
{
    size_t ml = strlen(v->model_id);
    memcpy(b, REC_MAGIC, 4);
    lm_put_u32(b + 4, REC_FORMAT);
    lm_put_u32(b + 8, v->dim);
    lm_put_u32(b + 12, (uint32_t)v->encoding);
    lm_put_u64(b + 16, v->count);
    lm_put_u64(b + 24, v->seq);
    lm_put_u64(b + 32, (uint64_t)v->created);
    lm_put_u64(b + 40, (uint64_t)v->published);
    lm_put_u32(b + 48, (uint32_t)v->complete);
    lm_put_u32(b + 52, pid);
    memcpy(b + REC_FIXED, v->model_id, ml);
    return REC_FIXED + ml;
}

static int rec_get(const char *name, size_t nlen, const MDB_val *d, lm_store_version *v, uint32_t *pid)
{
    const uint8_t *b = d->mv_data;
    memset(v, 0, sizeof *v);
    if (d->mv_size < REC_FIXED || d->mv_size > REC_FIXED + LM_STORE_MODEL_ID_MAX || memcmp(b, REC_MAGIC, 4) ||
        lm_get_u32(b + 4) != REC_FORMAT || nlen > LM_STORE_VERSION_MAX)
        return -1;
    memcpy(v->name, name, nlen);
    v->dim = lm_get_u32(b + 8);
    v->encoding = (int)lm_get_u32(b + 12);
    v->count = lm_get_u64(b + 16);
    v->seq = lm_get_u64(b + 24);
    v->created = (int64_t)lm_get_u64(b + 32);
    v->published = (int64_t)lm_get_u64(b + 40);
    v->complete = lm_get_u32(b + 48) != 0;
    if (pid) *pid = lm_get_u32(b + 52);
    memcpy(v->model_id, b + REC_FIXED, d->mv_size - REC_FIXED);
    return 0;
}

static void rec_key(char *buf, const char *name, MDB_val *k)
{
    size_t n = strlen(name);
    buf[0] = 'v';
    buf[1] = '/';
    memcpy(buf + 2, name, n);
    k->mv_data = buf;
    k->mv_size = n + 2;
}

static void db_name(char *buf, const char *name)
{
    snprintf(buf, LM_STORE_VERSION_MAX + 3, "v:%s", name);
}

/* Read version `name`'s record: 0, MDB_NOTFOUND, or -1 for a malformed one. */
static int read_rec(lmdb_state *st, MDB_txn *txn, const char *name, lm_store_version *v, uint32_t *pid)
{
    char kb[LM_STORE_VERSION_MAX + 3];
    MDB_val k, d;
    rec_key(kb, name, &k);
    int rc = mdb_get(txn, st->meta, &k, &d);
    if (rc) return rc;
    return rec_get(name, strlen(name), &d, v, pid) ? -1 : 0;
}

static int write_rec(lmdb_state *st, MDB_txn *txn, const lm_store_version *v, uint32_t pid)
{
    char kb[LM_STORE_VERSION_MAX + 3];
    uint8_t buf[REC_FIXED + LM_STORE_MODEL_ID_MAX];
    MDB_val k, d = {rec_put(buf, v, pid), buf};
    rec_key(kb, v->name, &k);
    return mdb_put(txn, st->meta, &k, &d, 0);
}

/* "current" into buf (LM_STORE_VERSION_MAX + 1): 0, MDB_NOTFOUND or -1 when malformed. */
static int read_current(lmdb_state *st, MDB_txn *txn, char *buf)
{
    MDB_val k = {7, "current"}, d;
    int rc = mdb_get(txn, st->meta, &k, &d);
    if (rc) return rc;
    if (d.mv_size < 1 || d.mv_size > LM_STORE_VERSION_MAX) return -1;
    memcpy(buf, d.mv_data, d.mv_size);
    buf[d.mv_size] = 0;
    return 0;
}

/* A writer is alive while its process is (a zombie is not). */
static int pid_alive(uint32_t pid)
{
    if (pid == 0) return 0;
    if (kill((pid_t)pid, 0) != 0 && errno != EPERM) return 0;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *paren = strrchr(buf, ')');
    return !(paren && paren[1] == ' ' && paren[2] == 'Z');
}

/* ---- transactions and database handles --------------------------------------------------- */

/* Another process grew the map: adopt its size, which LMDB allows only while no transaction
 * of this process is active (`resize` held exclusively; the caller holds no lock of sh). */
static void adopt_map(lmdb_env *sh)
{
    pthread_rwlock_wrlock(&sh->resize);
    mdb_env_set_mapsize(sh->env, 0);
    pthread_rwlock_unlock(&sh->resize);
}

/* A write transaction, or ensure_dbi's read transaction: writing handles have their
 * environment to themselves, so adopting a grown map here waits for nobody. */
static int txn_begin(lm_store *s, unsigned flags, MDB_txn **txn, lm_err *err)
{
    lmdb_state *st = s->impl;
    int rc = mdb_txn_begin(st->env, NULL, flags, txn);
    if (rc == MDB_MAP_RESIZED) {
        adopt_map(st->sh);
        rc = mdb_txn_begin(st->env, NULL, flags, txn);
    }
    return rc ? mdb_fail(s, rc, "starting a transaction", err) : LM_OK;
}

/* This handle's read transaction, renewed: `resize` is held shared until rd_end. */
static int renew(lm_store *s, lm_err *err)
{
    lmdb_state *st = s->impl;
    pthread_rwlock_rdlock(&st->sh->resize);
    int rc = mdb_txn_renew(st->rtxn);
    if (rc == MDB_MAP_RESIZED) {
        pthread_rwlock_unlock(&st->sh->resize);
        adopt_map(st->sh);
        pthread_rwlock_rdlock(&st->sh->resize);
        rc = mdb_txn_renew(st->rtxn);
    }
    if (rc) pthread_rwlock_unlock(&st->sh->resize);
    return rc ? mdb_fail(s, rc, "starting a read transaction", err) : LM_OK;
}

static void rd_end(lmdb_state *st)
{
    mdb_txn_reset(st->rtxn);
    pthread_rwlock_unlock(&st->sh->resize);
}

/* The cache of version databases, shared by the environment's handles (sh->mu held). */
static dbi_entry *cache_find_locked(lmdb_env *sh, const char *name)
{
    for (size_t i = 0; i < sh->ncache; i++)
        if (!strcmp(sh->cache[i].name, name)) return &sh->cache[i];
    return NULL;
}

/* The version's database handle when it is cached: 1, else 0. */
static int cache_find(lmdb_state *st, const char *name, MDB_dbi *dbi)
{
    if (st->last_name[0] && !strcmp(st->last_name, name)) {
        *dbi = st->last_dbi;
        return 1;
    }
    pthread_mutex_lock(&st->sh->mu);
    dbi_entry *e = cache_find_locked(st->sh, name);
    if (e) {
        *dbi = st->last_dbi = e->dbi;
        snprintf(st->last_name, sizeof st->last_name, "%s", name);
    }
    pthread_mutex_unlock(&st->sh->mu);
    return e != NULL;
}

/* Remember a version's handle (sh->mu held). A long-lived reader meets a new version every
 * publish, and LMDB's handles are few (maxdbs): past DBI_CACHE the oldest entry not being
 * written through this handle is forgotten. A writing handle, alone on its environment, also
 * closes it (safe: it is used between its own transactions only). Read-only handles may be
 * using it in a transaction of another thread, so there it stays open: LMDB returns the same
 * handle when the version is opened again, and a reading process can meet maxdbs (4096)
 * versions before its handles must be reopened. */
static void cache_add(lm_store *s, const char *name, MDB_dbi dbi)
{
    lmdb_state *st = s->impl;
    lmdb_env *sh = st->sh;
    dbi_entry *e = cache_find_locked(sh, name);
    if (!e && sh->ncache == DBI_CACHE) {
        const char *writing = s->writer ? s->writer->rec.name : "";
        size_t victim = 0;
        while (victim + 1 < sh->ncache && !strcmp(sh->cache[victim].name, writing)) victim++;
        if (!sh->readonly) {
            mdb_dbi_close(sh->env, sh->cache[victim].dbi);
            st->last_name[0] = 0;
        }
        memmove(&sh->cache[victim], &sh->cache[victim + 1], (sh->ncache - victim - 1) * sizeof sh->cache[0]);
        sh->ncache--;
    }
    if (!e) e = &sh->cache[sh->ncache++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->dbi = dbi;
}

static void cache_remove(lmdb_state *st, const char *name)
{
    lmdb_env *sh = st->sh;
    st->last_name[0] = 0;
    pthread_mutex_lock(&sh->mu);
    dbi_entry *e = cache_find_locked(sh, name);
    if (e) {
        memmove(e, e + 1, (size_t)(sh->cache + sh->ncache - e - 1) * sizeof *e);
        sh->ncache--;
    }
    pthread_mutex_unlock(&sh->mu);
}

/* Open version `name`'s database for reading, outside any transaction of this thread: in a
 * read transaction that commits, so the handle stays open for later ones. LMDB allows one
 * mdb_dbi_open at a time in a process, and its transaction must end before another: sh->mu is
 * held throughout. Locks are taken in one order everywhere, `resize` (shared) before `mu`, so
 * that nothing depends on the reader-writer lock's preference. LM_ENOTFOUND when the version
 * has no database. */
static int ensure_dbi(lm_store *s, const char *name, MDB_dbi *dbi, lm_err *err)
{
    lmdb_state *st = s->impl;
    lmdb_env *sh = st->sh;
    for (int attempt = 0;; attempt++) {
        pthread_rwlock_rdlock(&sh->resize);
        pthread_mutex_lock(&sh->mu);
        dbi_entry *e = cache_find_locked(sh, name);
        if (e) {
            *dbi = e->dbi;
            pthread_mutex_unlock(&sh->mu);
            pthread_rwlock_unlock(&sh->resize);
            return LM_OK;
        }
        MDB_txn *txn;
        int mrc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
        if (mrc == MDB_MAP_RESIZED && attempt == 0) { /* adopt it holding no lock, then again */
            pthread_mutex_unlock(&sh->mu);
            pthread_rwlock_unlock(&sh->resize);
            adopt_map(sh);
            continue;
        }
        char dn[LM_STORE_VERSION_MAX + 3];
        db_name(dn, name);
        int opened = 0;
        if (!mrc) {
            opened = 1;
            mrc = mdb_dbi_open(txn, dn, 0, dbi);
            if (mrc)
                mdb_txn_abort(txn);
            else
                mrc = mdb_txn_commit(txn);
        }
        if (!mrc) cache_add(s, name, *dbi);
        pthread_mutex_unlock(&sh->mu);
        pthread_rwlock_unlock(&sh->resize);
        if (mrc == MDB_NOTFOUND && opened)
            return lm_err_set(err, LM_ENOTFOUND, "%s: version '%s' has no data", s->url.display, name);
        if (mrc) return mdb_fail(s, mrc, opened ? "opening a version" : "starting a transaction", err);
        return LM_OK;
    }
}

/* In write transaction txn: drop version `name`'s database and record. */
static int drop_in(lmdb_state *st, MDB_txn *txn, const char *name)
{
    char dn[LM_STORE_VERSION_MAX + 3], kb[LM_STORE_VERSION_MAX + 3];
    MDB_dbi dbi;
    db_name(dn, name);
    cache_remove(st, name);
    int rc = mdb_dbi_open(txn, dn, 0, &dbi);
    if (rc == 0) rc = mdb_drop(txn, dbi, 1);
    if (rc && rc != MDB_NOTFOUND) return rc;
    MDB_val k;
    rec_key(kb, name, &k);
    rc = mdb_del(txn, st->meta, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- open and close ----------------------------------------------------------------------- */

static int lmdb_open(lm_store *s, lm_err *err)
{
    const char *D = s->url.display, *path = s->url.path;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        if (errno != ENOENT) return lm_err_errno(err, LM_EIO, "%s: cannot reach '%s'", D, path);
        if (!(s->flags & LM_STORE_CREATE))
            return lm_err_set(err, LM_ENOTFOUND, "%s: no store at '%s' (no such folder)", D, path);
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return lm_err_errno(err, LM_EIO, "%s: cannot create the store folder '%s'", D, path);
        if (stat(path, &sb) != 0) return lm_err_errno(err, LM_EIO, "%s: cannot reach '%s'", D, path);
    }
    if (!S_ISDIR(sb.st_mode))
        return lm_err_set(err, LM_EINVAL, "%s: '%s' is a file, not a store folder", D, path);
    char *data = lm_path_join(path, "data.mdb");
    if (!data) return lm_err_set(err, LM_ENOMEM, "out of memory");
    int have_data = access(data, F_OK) == 0;
    free(data);
    if (!have_data && !(s->flags & LM_STORE_CREATE))
        return lm_err_set(err, LM_ENOTFOUND, "%s: no store in '%s' (no data.mdb)", D, path);
    int ro = (s->flags & LM_STORE_READONLY) != 0;
    lmdb_state *st = calloc(1, sizeof *st);
    if (!st) return lm_err_set(err, LM_ENOMEM, "out of memory");
    /* reg_lock is held until the environment is ready or given up, so that a concurrent open
     * of the same store never shares a half-opened one */
    pthread_mutex_lock(&reg_lock);
    lmdb_env *sh;
    size_t slot;
    int rr = reg_take(sb.st_dev, sb.st_ino, ro, &sh, &slot);
    if (rr) {
        pthread_mutex_unlock(&reg_lock);
        free(st);
        return lm_err_set(err, LM_EINVAL,
                          rr == -1 ? "%s: the store is already open for writing in this process, or "
                                     "open for reading while this handle would write (share the handle)"
                                   : "%s: too many stores open in this process",
                          D);
    }
    s->impl = st;
    if (sh) { /* another read-only handle's environment: only a read transaction of our own */
        pthread_mutex_unlock(&reg_lock);
        st->sh = sh, st->env = sh->env, st->meta = sh->meta, st->mapsize = sh->mapsize;
        int brc;
        for (int attempt = 0;; attempt++) {
            pthread_rwlock_rdlock(&sh->resize);
            brc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &st->rtxn);
            if (!brc) mdb_txn_reset(st->rtxn);
            pthread_rwlock_unlock(&sh->resize);
            if (brc != MDB_MAP_RESIZED || attempt) break;
            adopt_map(sh); /* another process grew the map: adopt it, then again */
        }
        if (brc) {
            int lrc = mdb_fail(s, brc, "starting a read transaction", err);
            reg_release(sh);
            free(st);
            s->impl = NULL;
            return lrc;
        }
        return LM_OK;
    }
    if (!(sh = calloc(1, sizeof *sh))) {
        pthread_mutex_unlock(&reg_lock);
        free(st);
        s->impl = NULL;
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    sh->dev = sb.st_dev, sh->ino = sb.st_ino, sh->pid = getpid(), sh->readonly = ro, sh->refs = 1;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_rwlock_init(&sh->resize, NULL);
    st->sh = sh;
    st->mapsize = s->url.mapsize ? s->url.mapsize : DEFAULT_MAPSIZE;
    int rc = mdb_env_create(&st->env);
    sh->env = rc ? NULL : st->env; /* adopt_map may need it before the open completes */
    if (!rc) rc = mdb_env_set_maxdbs(st->env, 4096);
    if (!rc) rc = mdb_env_set_maxreaders(st->env, 512);
    if (!rc) rc = mdb_env_set_mapsize(st->env, st->mapsize);
    if (!rc) rc = mdb_env_open(st->env, path, MDB_NOTLS | MDB_NOMETASYNC | (ro ? MDB_RDONLY : 0), 0644);
    int lrc = LM_OK;
    if (rc) {
        lrc = mdb_fail(s, rc, "opening the environment", err);
        goto fail;
    }
    int dead;
    mdb_reader_check(st->env, &dead); /* free the slots of crashed readers */
    MDB_envinfo info;
    if (mdb_env_info(st->env, &info) == 0) st->mapsize = info.me_mapsize;

    MDB_txn *txn;
    int create = (s->flags & LM_STORE_CREATE) != 0;
    if ((lrc = txn_begin(s, create ? 0 : MDB_RDONLY, &txn, err)) != LM_OK) goto fail;
    rc = mdb_dbi_open(txn, "meta", create ? MDB_CREATE : 0, &st->meta);
    if (rc == MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        lrc =
            lm_err_set(err, LM_ENOTFOUND, "%s: '%s' is an LMDB environment but not a limaml store", D, path);
        goto fail;
    }
    MDB_val k = {6, "format"}, d;
    if (!rc) rc = mdb_get(txn, st->meta, &k, &d);
    if (rc == MDB_NOTFOUND && create) {
        d.mv_size = strlen(FORMAT);
        d.mv_data = FORMAT;
        rc = mdb_put(txn, st->meta, &k, &d, 0);
    } else if (!rc && (d.mv_size != strlen(FORMAT) || memcmp(d.mv_data, FORMAT, d.mv_size))) {
        mdb_txn_abort(txn);
        lrc = lm_err_set(err, LM_EVERSION, "%s: the store's format is '%.*s', this build reads '%s'", D,
                         (int)LM_MIN(d.mv_size, 64), (const char *)d.mv_data, FORMAT);
        goto fail;
    }
    if (rc) {
        mdb_txn_abort(txn);
        lrc = rc == MDB_NOTFOUND ? lm_err_set(err, LM_EFORMAT, "%s: the store has no format record", D)
                                 : mdb_fail(s, rc, "reading the store's format", err);
        goto fail;
    }
    rc = mdb_txn_commit(txn);
    if (!rc && create) rc = mdb_env_sync(st->env, 1);
    if (rc) {
        lrc = mdb_fail(s, rc, "creating the store", err);
        goto fail;
    }
    if ((rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &st->rtxn)) != 0) {
        lrc = mdb_fail(s, rc, "starting a read transaction", err);
        goto fail;
    }
    mdb_txn_reset(st->rtxn);
    sh->env = st->env, sh->meta = st->meta, sh->mapsize = st->mapsize;
    reg[slot] = sh;
    pthread_mutex_unlock(&reg_lock);
    return LM_OK;
fail:
    env_free(sh); /* under reg_lock: see reg_release */
    pthread_mutex_unlock(&reg_lock);
    free(st);
    s->impl = NULL;
    return lrc;
}

static void lmdb_close(lm_store *s)
{
    lmdb_state *st = s->impl;
    if (!st) return;
    if (st->rtxn) mdb_txn_abort(st->rtxn);
    reg_release(st->sh);
    free(st);
}

/* ---- writing ------------------------------------------------------------------------------ */

static int lmdb_begin(lm_store_writer *w, lm_err *err)
{
    lm_store *s = w->s;
    lmdb_state *st = s->impl;
    const char *D = s->url.display;
    lmdb_writer *lw = calloc(1, sizeof *lw);
    if (!lw) return lm_err_set(err, LM_ENOMEM, "out of memory");
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn, err);
    if (rc != LM_OK) {
        free(lw);
        return rc;
    }
    lm_store_version old;
    uint32_t pid = 0;
    int mrc = read_rec(st, txn, w->rec.name, &old, &pid);
    int lrc = LM_OK;
    if (mrc == 0 && old.complete)
        lrc = lm_err_set(err, LM_EEXIST, "%s: version '%s' exists and is complete; pick another name", D,
                         w->rec.name);
    else if (mrc == 0 && pid_alive(pid))
        lrc = lm_err_set(err, LM_EEXIST, "%s: version '%s' is being written by process %u", D, w->rec.name,
                         pid);
    else if (mrc == -1)
        lrc = lm_err_set(err, LM_EFORMAT, "%s: the record of version '%s' is damaged", D, w->rec.name);
    if (lrc != LM_OK) {
        mdb_txn_abort(txn);
        free(lw);
        return lrc;
    }
    mrc = drop_in(st, txn, w->rec.name); /* a dead writer's leftovers */
    MDB_val k = {3, "seq"}, d;
    uint64_t seq = 0;
    if (!mrc) {
        mrc = mdb_get(txn, st->meta, &k, &d);
        if (mrc == 0 && d.mv_size == 8) seq = lm_get_u64(d.mv_data);
        if (mrc == MDB_NOTFOUND || mrc == 0) mrc = 0;
    }
    uint8_t sb[8];
    lm_put_u64(sb, ++seq);
    d.mv_size = 8;
    d.mv_data = sb;
    if (!mrc) mrc = mdb_put(txn, st->meta, &k, &d, 0);
    w->rec.seq = seq;
    if (!mrc) mrc = write_rec(st, txn, &w->rec, (uint32_t)getpid());
    char dn[LM_STORE_VERSION_MAX + 3];
    db_name(dn, w->rec.name);
    if (!mrc) mrc = mdb_dbi_open(txn, dn, MDB_CREATE, &lw->dbi);
    if (mrc) {
        mdb_txn_abort(txn);
        free(lw);
        return mdb_fail(s, mrc, "starting a version", err);
    }
    if ((mrc = mdb_txn_commit(txn)) != 0) {
        free(lw);
        return mdb_fail(s, mrc, "starting a version", err);
    }
    pthread_mutex_lock(&st->sh->mu);
    cache_add(s, w->rec.name, lw->dbi);
    pthread_mutex_unlock(&st->sh->mu);
    w->impl = lw;
    return LM_OK;
}

/* One transaction: append keys that come after the largest so far (MDB_APPEND: no search,
 * pages filled completely), insert the others, then bump the record's count. */
static int lmdb_put(lm_store_writer *w, const char *const *keys, const size_t *lens, const uint8_t *vals,
                    size_t n, lm_err *err)
{
    lm_store *s = w->s;
    lmdb_state *st = s->impl;
    lmdb_writer *lw = w->impl;
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn, err);
    if (rc != LM_OK) return rc;
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, lw->dbi, &cur);
    const char *last = w->last_key;
    size_t last_len = w->last_len, imax = SIZE_MAX;
    uint64_t unsorted = 0;
    for (size_t i = 0; !mrc && i < n; i++) {
        MDB_val k = {lens[i], (void *)keys[i]}, d = {w->vsize, (void *)(vals + i * w->vsize)};
        if (!last || lm_store_key_cmp(keys[i], lens[i], last, last_len) > 0) {
            mrc = mdb_cursor_put(cur, &k, &d, MDB_APPEND);
            last = keys[i];
            last_len = lens[i];
            imax = i;
        } else {
            unsorted++;
            mrc = mdb_cursor_put(cur, &k, &d, MDB_NOOVERWRITE);
            if (mrc == MDB_KEYEXIST) {
                char kb[128];
                mdb_cursor_close(cur);
                mdb_txn_abort(txn);
                return lm_err_set(err, LM_EINVAL, "%s: version '%s': task '%s' is written twice",
                                  s->url.display, w->rec.name,
                                  lm_store_key_str(keys[i], lens[i], kb, sizeof kb));
            }
        }
    }
    if (!mrc) mdb_cursor_close(cur);
    lm_store_version rec;
    uint32_t pid;
    if (!mrc) {
        mrc = read_rec(st, txn, w->rec.name, &rec, &pid);
        if (mrc == 0 && (pid != (uint32_t)getpid() || rec.complete || rec.seq != w->rec.seq))
            mrc = MDB_NOTFOUND;
        if (mrc == MDB_NOTFOUND || mrc == -1) {
            mdb_txn_abort(txn);
            return lm_err_set(err, LM_ENOTFOUND, "%s: version '%s' was removed while being written",
                              s->url.display, w->rec.name);
        }
    }
    if (!mrc) {
        rec.count += n;
        mrc = write_rec(st, txn, &rec, pid);
    }
    if (mrc) {
        mdb_txn_abort(txn); /* also closes the cursor */
        return mdb_fail(s, mrc, "writing a batch", err);
    }
    if ((mrc = mdb_txn_commit(txn)) != 0) return mdb_fail(s, mrc, "writing a batch", err);
    if (imax != SIZE_MAX) {
        char *k = lm_strndup(keys[imax], lens[imax]);
        if (!k) return lm_err_set(err, LM_ENOMEM, "out of memory");
        free(w->last_key);
        w->last_key = k;
        w->last_len = lens[imax];
    }
    w->unsorted += unsorted;
    return LM_OK;
}

static int lmdb_publish(lm_store_writer *w, lm_err *err)
{
    lm_store *s = w->s;
    lmdb_state *st = s->impl;
    const char *D = s->url.display;
    int mrc = mdb_env_sync(st->env, 1); /* every batch on disk before the pointer moves */
    if (mrc) return mdb_fail(s, mrc, "flushing the new version", err);
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn, err);
    if (rc != LM_OK) return rc;
    lm_store_version rec;
    uint32_t pid;
    mrc = read_rec(st, txn, w->rec.name, &rec, &pid);
    if (mrc || pid != (uint32_t)getpid() || rec.complete || rec.seq != w->rec.seq) {
        mdb_txn_abort(txn);
        if (mrc > 0 && mrc != MDB_NOTFOUND) return mdb_fail(s, mrc, "publishing", err);
        return lm_err_set(err, LM_ENOTFOUND, "%s: version '%s' was removed while being written", D,
                          w->rec.name);
    }
    if (rec.count != w->count) {
        mdb_txn_abort(txn);
        return lm_err_set(err, LM_EFORMAT, "%s: version '%s' holds %llu keys, %llu were written", D,
                          w->rec.name, (unsigned long long)rec.count, (unsigned long long)w->count);
    }
    rec.complete = 1;
    rec.published = (int64_t)time(NULL);
    mrc = write_rec(st, txn, &rec, 0);
    MDB_val k = {7, "current"}, d = {strlen(rec.name), rec.name};
    if (!mrc) mrc = mdb_put(txn, st->meta, &k, &d, 0);
    if (mrc) {
        mdb_txn_abort(txn);
        return mdb_fail(s, mrc, "publishing", err);
    }
    if ((mrc = mdb_txn_commit(txn)) != 0) return mdb_fail(s, mrc, "publishing", err);
    if ((mrc = mdb_env_sync(st->env, 1)) != 0) return mdb_fail(s, mrc, "flushing the publish", err);
    return LM_OK;
}

/* Drop the writer's version if it is still its own half-written one. */
static void lmdb_abort(lm_store_writer *w)
{
    lm_store *s = w->s;
    lmdb_state *st = s->impl;
    MDB_txn *txn;
    lm_err e = {0};
    if (w->impl && txn_begin(s, 0, &txn, &e) == LM_OK) {
        lm_store_version rec;
        uint32_t pid;
        int mrc = read_rec(st, txn, w->rec.name, &rec, &pid);
        if (!mrc && !rec.complete && pid == (uint32_t)getpid() && rec.seq == w->rec.seq &&
            drop_in(st, txn, w->rec.name) == 0)
            mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    free(w->impl);
    w->impl = NULL;
}

/* ---- reading ------------------------------------------------------------------------------ */

static int lmdb_read(lm_store *s, const char *version, const char *const *keys, const size_t *lens, size_t n,
                     const lm_store_sink *sink, lm_err *err)
{
    lmdb_state *st = s->impl;
    const char *D = s->url.display;
    for (int attempt = 0; attempt < 8; attempt++) {
        int rc = renew(s, err);
        if (rc != LM_OK) return rc;
        char cur[LM_STORE_VERSION_MAX + 1] = "";
        int crc = read_current(st, st->rtxn, cur);
        const char *name = version ? version : cur;
        lm_store_version rec;
        if (crc == -1)
            rc = lm_err_set(err, LM_EFORMAT, "%s: the current-version pointer is damaged", D);
        else if (crc && crc != MDB_NOTFOUND)
            rc = mdb_fail(s, crc, "reading the current version", err);
        else if (!version && crc == MDB_NOTFOUND)
            rc = lm_err_set(err, LM_ENOTFOUND, "%s: no version has been published yet", D);
        if (rc != LM_OK) {
            rd_end(st);
            return rc;
        }
        int mrc = read_rec(st, st->rtxn, name, &rec, NULL);
        if (mrc == MDB_NOTFOUND)
            rc = version ? lm_err_set(err, LM_ENOTFOUND, "%s: no version '%s'", D, name)
                         : lm_err_set(err, LM_EFORMAT, "%s: the current version '%s' has no record", D, name);
        else if (mrc == -1)
            rc = lm_err_set(err, LM_EFORMAT, "%s: the record of version '%s' is damaged", D, name);
        else if (mrc)
            rc = mdb_fail(s, mrc, "reading a version record", err);
        else if (!rec.complete)
            rc = lm_err_set(err, LM_ENOTFOUND,
                            "%s: version '%s' is incomplete (being written, or left by "
                            "a run that did not finish)",
                            D, name);
        if (rc != LM_OK) {
            rd_end(st);
            return rc;
        }
        rec.current = !strcmp(name, cur);
        MDB_dbi dbi = 0;
        if (n) {
            if (!cache_find(st, name,
                            &dbi)) { /* open the version's database outside this transaction, then retry */
                rd_end(st);
                rc = ensure_dbi(s, name, &dbi, err);
                if (rc != LM_OK) return rc;
                continue;
            }
            unsigned dflags;
            if (mdb_dbi_flags(st->rtxn, dbi, &dflags) != 0) {
                /* another handle opened it after this transaction began, which LMDB's
                 * transactions cannot see: begin again */
                rd_end(st);
                continue;
            }
        }
        rc = sink->begin(sink->ctx, &rec, err);
        for (size_t i = 0; rc == LM_OK && i < n; i++) {
            MDB_val k = {lens[i], (void *)keys[i]}, d;
            mrc = mdb_get(st->rtxn, dbi, &k, &d);
            if (mrc == 0)
                rc = sink->value(sink->ctx, i, d.mv_data, d.mv_size, err);
            else if (mrc != MDB_NOTFOUND)
                rc = mdb_fail(s, mrc, "reading a value", err);
        }
        rd_end(st);
        return rc;
    }
    return lm_err_set(err, LM_EIO, "%s: the current version kept changing during a read", D);
}

static int cmp_seq(const void *a, const void *b)
{
    const lm_store_version *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int lmdb_list(lm_store *s, lm_store_version **out, size_t *n, lm_err *err)
{
    lmdb_state *st = s->impl;
    *out = NULL;
    *n = 0;
    int rc = renew(s, err);
    if (rc != LM_OK) return rc;
    char cur[LM_STORE_VERSION_MAX + 1] = "";
    int mrc = read_current(st, st->rtxn, cur);
    if (mrc == -1)
        cur[0] = 0;
    else if (mrc && mrc != MDB_NOTFOUND) {
        rd_end(st);
        return mdb_fail(s, mrc, "reading the current version", err);
    }
    MDB_cursor *c;
    if ((mrc = mdb_cursor_open(st->rtxn, st->meta, &c)) != 0) {
        rd_end(st);
        return mdb_fail(s, mrc, "listing versions", err);
    }
    lm_store_version *v = NULL;
    size_t cap = 0;
    MDB_val k = {2, "v/"}, d;
    for (mrc = mdb_cursor_get(c, &k, &d, MDB_SET_RANGE); mrc == 0;
         mrc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        if (k.mv_size < 3 || memcmp(k.mv_data, "v/", 2)) break;
        if (lm_grow((void **)&v, &cap, *n + 1, sizeof *v) != LM_OK) {
            rc = lm_err_set(err, LM_ENOMEM, "out of memory");
            break;
        }
        lm_store_version *r = &v[*n];
        if (rec_get((const char *)k.mv_data + 2, k.mv_size - 2, &d, r, NULL)) {
            rc = lm_err_set(err, LM_EFORMAT, "%s: the record of version '%.*s' is damaged", s->url.display,
                            (int)LM_MIN(k.mv_size - 2, 64), (const char *)k.mv_data + 2);
            break;
        }
        r->current = !strcmp(r->name, cur);
        (*n)++;
    }
    if (rc == LM_OK && mrc && mrc != MDB_NOTFOUND) rc = mdb_fail(s, mrc, "listing versions", err);
    mdb_cursor_close(c);
    rd_end(st);
    if (rc != LM_OK) {
        free(v);
        *n = 0;
        return rc;
    }
    if (*n) qsort(v, *n, sizeof *v, cmp_seq);
    *out = v;
    return LM_OK;
}

static int lmdb_scan(lm_store *s, const char *version, lm_store_version *rec, lm_store_scan_fn fn, void *ctx,
                     uint64_t *nkeys, lm_err *err)
{
    lmdb_state *st = s->impl;
    *nkeys = 0;
    MDB_dbi dbi;
    int rc = ensure_dbi(s, version, &dbi, err);
    if (rc != LM_OK) return rc;
    if ((rc = renew(s, err)) != LM_OK) return rc;
    char cur[LM_STORE_VERSION_MAX + 1] = "";
    read_current(st, st->rtxn, cur);
    int mrc = read_rec(st, st->rtxn, version, rec, NULL);
    if (mrc) {
        rd_end(st);
        if (mrc == MDB_NOTFOUND)
            return lm_err_set(err, LM_ENOTFOUND, "%s: no version '%s'", s->url.display, version);
        if (mrc == -1)
            return lm_err_set(err, LM_EFORMAT, "%s: the record of version '%s' is damaged", s->url.display,
                              version);
        return mdb_fail(s, mrc, "reading a version record", err);
    }
    rec->current = !strcmp(version, cur);
    MDB_cursor *c;
    if ((mrc = mdb_cursor_open(st->rtxn, dbi, &c)) != 0) {
        rd_end(st);
        return mdb_fail(s, mrc, "scanning a version", err);
    }
    MDB_val k, d;
    for (mrc = mdb_cursor_get(c, &k, &d, MDB_FIRST); mrc == 0; mrc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
        (*nkeys)++;
        if (fn(ctx, k.mv_data, k.mv_size, d.mv_data, d.mv_size)) break;
    }
    mdb_cursor_close(c);
    rd_end(st);
    if (mrc && mrc != MDB_NOTFOUND) return mdb_fail(s, mrc, "scanning a version", err);
    return LM_OK;
}

/* ---- cleaning ----------------------------------------------------------------------------- */

static int lmdb_drop(lm_store *s, const char *version, int *what, lm_err *err)
{
    lmdb_state *st = s->impl;
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn, err);
    if (rc != LM_OK) return rc;
    char cur[LM_STORE_VERSION_MAX + 1] = "";
    read_current(st, txn, cur);
    lm_store_version rec;
    uint32_t pid = 0;
    int mrc = read_rec(st, txn, version, &rec, &pid);
    if (!strcmp(cur, version))
        *what = LM_DROP_CURRENT;
    else if (mrc == MDB_NOTFOUND)
        *what = LM_DROP_GONE;
    else if (mrc == 0 && !rec.complete && pid_alive(pid))
        *what = LM_DROP_LIVE;
    else
        *what = LM_DROP_DONE;
    if (*what != LM_DROP_DONE) {
        mdb_txn_abort(txn);
        return LM_OK;
    }
    mrc = drop_in(st, txn, version);
    if (mrc) {
        mdb_txn_abort(txn);
        return mdb_fail(s, mrc, "removing a version", err);
    }
    if ((mrc = mdb_txn_commit(txn)) != 0) return mdb_fail(s, mrc, "removing a version", err);
    return LM_OK;
}

static int lmdb_raw_put(lm_store *s, const char *version, const char *key, size_t klen, const void *val,
                        size_t len, lm_err *err)
{
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn, err);
    if (rc != LM_OK) return rc;
    char dn[LM_STORE_VERSION_MAX + 3];
    db_name(dn, version);
    MDB_dbi dbi;
    MDB_val k = {klen, (void *)key}, d = {len, (void *)val};
    int mrc = mdb_dbi_open(txn, dn, 0, &dbi);
    if (!mrc) mrc = mdb_put(txn, dbi, &k, &d, 0);
    if (mrc) {
        mdb_txn_abort(txn);
        return mdb_fail(s, mrc, "writing a raw value", err);
    }
    mrc = mdb_txn_commit(txn);
    return mrc ? mdb_fail(s, mrc, "writing a raw value", err) : LM_OK;
}

const lm_store_ops lm_store_lmdb_ops = {
    .open = lmdb_open,
    .close = lmdb_close,
    .begin = lmdb_begin,
    .put = lmdb_put,
    .publish = lmdb_publish,
    .abort = lmdb_abort,
    .list = lmdb_list,
    .read = lmdb_read,
    .scan = lmdb_scan,
    .drop = lmdb_drop,
    .raw_put = lmdb_raw_put,
};
