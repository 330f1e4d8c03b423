/* test_store.c: the feature store on both backends.
 *
 * - the codec: float16 against every half and the compiler's _Float16, int8's error bound;
 * - URLs: each malformed part named in the message;
 * - one scenario run on LMDB and on Redis, whose transcripts (records, values read, error
 *   codes, verify reports) must be identical: round trips per encoding, versions, a writer
 *   killed with SIGKILL mid-version, a reader running during publishes (one whole version per
 *   batch read), keep and gc, a failing write, duplicates and bad inputs, E mismatch,
 *   read-only handles, damage found by verify;
 * - per backend: a full store (LMDB: a map size and a 1 MiB tmpfs when root; Redis:
 *   maxmemory) gives a clear error and keeps the current version; a missing store, a path
 *   that is a file, a refused connection, a reconnect after the server dropped us.
 *
 * Redis: redis-server is started on a free loopback port by scripts/redis-test-server.sh and
 * stopped by a watchdog process when this one ends, however it ends. Without redis-server the
 * Redis part fails unless LM_SKIP_REDIS=1.
 * Environment: LM_TMP (scratch), LM_SRC (the source tree). Prints "N passed, M failed" last. */
#include "store/store_impl.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures, passes;
#define CHECK(c, ...)                                                                                        \
    do {                                                                                                     \
        if (c)                                                                                               \
            passes++;                                                                                        \
        else {                                                                                               \
            failures++;                                                                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                      \
            printf(__VA_ARGS__);                                                                             \
            printf("\n");                                                                                    \
        }                                                                                                    \
    } while (0)
#define HAS(msg, s) (strstr((msg), (s)) != NULL)

enum { E = 16, NKEYS = 2500, BATCH = 500 };

static char dir[512];
static const char *src_dir = ".";

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- a transcript of what a scenario saw ----------------------------------------------- */

typedef struct tr {
    char buf[1 << 16];
    size_t len;
} tr;

static void trf(tr *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trf(tr *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, sizeof t->buf - t->len, fmt, ap);
    va_end(ap);
    if (n > 0) t->len = LM_MIN(t->len + (size_t)n, sizeof t->buf - 1);
}

/* ---- data ------------------------------------------------------------------------------ */

/* Task i's key: 8 digits, so byte order is numeric order. */
static void key_of(char *k, size_t i)
{
    snprintf(k, 9, "%08zu", i);
}

/* Version tag `tag`'s vector for task i; element 0 is the tag, to tell versions apart. */
static void vec_of(float *v, size_t i, int tag)
{
    v[0] = (float)tag;
    for (int j = 1; j < E; j++)
        v[j] = sinf((float)(i * 17 + (size_t)j * 3 + (size_t)tag * 101)) * (float)(1 + j) * 0.37f;
}

typedef struct batch {
    char keys[BATCH][9];
    const char *kp[BATCH];
    size_t lens[BATCH];
    float v[BATCH * E];
} batch;

/* Write `n` keys (from first, in order or reversed) of tag `tag` into an open writer. */
static int put_range(lm_store_writer *w, size_t first, size_t n, int tag, int reverse, lm_err *err)
{
    static batch b;
    for (size_t done = 0; done < n;) {
        size_t m = LM_MIN((size_t)BATCH, n - done);
        for (size_t j = 0; j < m; j++) {
            size_t i = reverse ? first + n - 1 - (done + j) : first + done + j;
            key_of(b.keys[j], i);
            b.kp[j] = b.keys[j];
            b.lens[j] = 8;
            vec_of(b.v + j * E, i, tag);
        }
        int rc = lm_store_put_batch(w, b.kp, b.lens, b.v, m, err);
        if (rc != LM_OK) return rc;
        done += m;
    }
    return LM_OK;
}

/* Write and publish a whole version. */
static int write_version(lm_store *s, const char *name, int enc, int tag, size_t n, int reverse,
                         uint32_t keep, lm_err *err)
{
    lm_store_writer *w = NULL;
    char model[64];
    snprintf(model, sizeof model, "model-%d", tag);
    int rc = lm_store_begin_version(s, name, E, enc, model, &w, err);
    if (rc != LM_OK) return rc;
    rc = put_range(w, 0, n, tag, reverse, err);
    if (rc != LM_OK) {
        lm_store_abort(w);
        return rc;
    }
    return lm_store_publish(w, keep, err);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Read every key of `version` (NULL: current) and compare with tag's vectors within the
 * encoding's bound; returns the number of bad keys; *hash gets a hash of all values read. */
static size_t check_values(lm_store *s, const char *version, int enc, int tag, size_t n, uint64_t *hash)
{
    static batch b;
    static float out[BATCH * E];
    uint8_t found[BATCH];
    size_t bad = 0;
    uint64_t h = 1469598103934665603ull;
    for (size_t first = 0; first < n; first += BATCH) {
        size_t m = LM_MIN((size_t)BATCH, n - first);
        for (size_t j = 0; j < m; j++) {
            key_of(b.keys[j], first + j);
            b.kp[j] = b.keys[j];
            b.lens[j] = 8;
            vec_of(b.v + j * E, first + j, tag);
        }
        lm_err err = {0};
        lm_store_version rv;
        int rc = lm_store_get_batch(s, version, b.kp, b.lens, m, out, E, found, &rv, &err);
        if (rc != LM_OK) {
            printf("  read failed: %s\n", err.msg);
            return n;
        }
        for (size_t j = 0; j < m; j++) {
            const float *x = b.v + j * E, *y = out + j * E;
            float maxabs = 0;
            for (int k = 0; k < E; k++) maxabs = fmaxf(maxabs, fabsf(x[k]));
            int ok = found[j];
            for (int k = 0; ok && k < E; k++) {
                if (enc == LM_STORE_ENC_F32)
                    ok = memcmp(&x[k], &y[k], 4) == 0;
                else if (enc == LM_STORE_ENC_F16)
                    ok = fabsf(x[k] - y[k]) <= fabsf(x[k]) * 0x1p-11f + 0x1p-25f;
                else
                    ok = fabsf(x[k] - y[k]) <= maxabs / 127.0f * 0.5f * 1.0001f + 1e-7f;
            }
            if (!ok) {
                if (bad < 3)
                    printf("  %s key %s: found %d, [1] %.9g vs %.9g\n", version ? version : "(current)",
                           b.keys[j], found[j], y[1], x[1]);
                bad++;
            }
        }
        h = fnv(h, out, m * E * sizeof(float));
        h = fnv(h, found, m);
    }
    if (hash) *hash = h;
    return bad;
}

static void list_tr(lm_store *s, tr *t, const char *when)
{
    lm_store_version *v = NULL;
    size_t n = 0;
    lm_err err = {0};
    int rc = lm_store_list(s, &v, &n, &err);
    CHECK(rc == LM_OK, "list (%s): %s", when, err.msg);
    trf(t, "list %s:", when);
    for (size_t i = 0; i < n; i++)
        trf(t, " [%s E=%u %s model=%s count=%llu complete=%d current=%d]", v[i].name, v[i].dim,
            lm_store_enc_name(v[i].encoding), v[i].model_id, (unsigned long long)v[i].count, v[i].complete,
            v[i].current);
    trf(t, "\n");
    free(v);
}

static int list_names(lm_store *s, char *out, size_t cap)
{
    lm_store_version *v = NULL;
    size_t n = 0;
    lm_err err = {0};
    out[0] = 0;
    if (lm_store_list(s, &v, &n, &err) != LM_OK) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s%s", i ? "," : "", v[i].name,
                              v[i].complete ? "" : "(incomplete)");
    free(v);
    return 0;
}

/* ---- the codec ---------------------------------------------------------------------------- */

static void test_codec(void)
{
    /* every half survives half -> float -> half */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaN payloads */
        if (lm_f32_to_f16(lm_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0, "f16 round trip: %d halves differ", bad);
#ifdef __FLT16_MAX__
    /* against the compiler's conversion, ties and subnormals included */
    lm_rng r;
    lm_rng_seed(&r, 7);
    bad = 0;
    for (int i = 0; i < 2000000; i++) {
        uint32_t x = (uint32_t)lm_rng_next(&r);
        if (i & 1)
            x = (x & 0x80000000u) | (0x33000000u + x % (0x47800000u - 0x33000000u)); /* the half range */
        if (i % 7 == 0) x &= 0xffffe000u | (1u << 12);                               /* exact ties */
        float f;
        memcpy(&f, &x, 4);
        if (isnan(f)) continue;
        _Float16 ref = (_Float16)f;
        uint16_t rb;
        memcpy(&rb, &ref, 2);
        if (lm_f32_to_f16(f) != rb) {
            if (bad < 3) printf("  f16(%a): %04x, compiler %04x\n", (double)f, lm_f32_to_f16(f), rb);
            bad++;
        }
    }
    CHECK(bad == 0, "f16 conversion vs _Float16: %d differ", bad);
#endif
    CHECK(lm_f32_to_f16(65504.0f) == 0x7bff && lm_f32_to_f16(65519.99f) == 0x7bff &&
              lm_f32_to_f16(65520.0f) == 0x7c00,
          "f16 overflow threshold");
    CHECK(lm_f32_to_f16(0x1p-25f) == 0 && lm_f32_to_f16(0x1.000002p-25f) == 1 &&
              lm_f32_to_f16(-0x1p-24f) == 0x8001,
          "f16 subnormal rounding");

    /* int8: the error bound, a zero vector, errors */
    float x[E], y[E];
    uint8_t buf[4 + E];
    size_t be;
    for (int j = 0; j < E; j++) x[j] = (float)(j - 7) * 0.913f;
    CHECK(lm_store_encode(LM_STORE_ENC_I8, E, x, buf, &be) == 0, "int8 encode");
    CHECK(lm_store_decode(LM_STORE_ENC_I8, E, buf, sizeof buf, y) == 0, "int8 decode");
    float scale = 8 * 0.913f / 127, worst = 0;
    for (int j = 0; j < E; j++) worst = fmaxf(worst, fabsf(x[j] - y[j]));
    CHECK(worst <= scale / 2 * 1.0001f, "int8 error %g > scale/2 %g", worst, scale / 2);
    CHECK(y[15] == x[15] || fabsf(y[15] - x[15]) < 1e-6f, "int8 keeps the max-abs element");
    memset(x, 0, sizeof x);
    CHECK(lm_store_encode(LM_STORE_ENC_I8, E, x, buf, &be) == 0 &&
              lm_store_decode(LM_STORE_ENC_I8, E, buf, sizeof buf, y) == 0 && y[3] == 0,
          "int8 zero vector");
    x[5] = NAN;
    CHECK(lm_store_encode(LM_STORE_ENC_F32, E, x, buf, &be) == 1 && be == 5, "NaN refused");
    x[5] = 70000.0f;
    CHECK(lm_store_encode(LM_STORE_ENC_F16, E, x, buf, &be) == 2 && be == 5, "f16 range refused");
    CHECK(lm_store_decode(LM_STORE_ENC_F32, E, buf, 63, y) == -1, "wrong length refused");
    int enc = -1;
    lm_err err = {0};
    CHECK(lm_store_enc_parse("int8", &enc, &err) == LM_OK && enc == LM_STORE_ENC_I8, "parse int8");
    CHECK(lm_store_enc_parse("bf16", &enc, &err) == LM_EINVAL && HAS(err.msg, "bf16"), "parse bf16: %s",
          err.msg);
}

/* ---- URLs --------------------------------------------------------------------------------- */

static void bad_url(const char *url, int code, const char *part)
{
    lm_store *s = NULL;
    lm_err err = {0};
    int rc = lm_store_open(&s, url, LM_STORE_CREATE, &err);
    CHECK(rc == code && s == NULL && HAS(err.msg, part), "%s: want %d naming '%s', got %d: %s", url, code,
          part, rc, err.msg);
    lm_store_close(s);
}

static void test_urls(void)
{
    bad_url("lmdb://", LM_EINVAL, "path is empty");
    bad_url("foo://x", LM_EINVAL, "unknown scheme 'foo'");
    bad_url("store-folder", LM_EINVAL, "no scheme");
    bad_url("", LM_EINVAL, "empty");
    bad_url("redis://host:notaport/0", LM_EINVAL, "port 'notaport'");
    bad_url("redis://host:70000/0", LM_EINVAL, "port '70000'");
    bad_url("redis://:6379/0", LM_EINVAL, "host is empty");
    bad_url("redis://h!st:6379/0", LM_EINVAL, "host 'h!st'");
    bad_url("redis://host:6379/x", LM_EINVAL, "database 'x'");
    bad_url("redis://host:6379/0?prefix=a b", LM_EINVAL, "prefix 'a b'");
    bad_url("redis://host:6379/0?colour=red", LM_EINVAL, "unknown option 'colour'");
    bad_url("lmdb:///tmp/x?mapsize=lots", LM_EINVAL, "mapsize 'lots'");
    bad_url("redis://127.0.0.1:1/0", LM_EIO, "cannot connect to 127.0.0.1 port 1");
    /* a password never appears in messages */
    lm_store *s = NULL;
    lm_err err = {0};
    lm_store_open(&s, "redis://user:s3cret@127.0.0.1:1/0", 0, &err);
    CHECK(!HAS(err.msg, "s3cret") && HAS(err.msg, "user:***@"), "password masked: %s", err.msg);
    lm_store_addr u;
    CHECK(lm_store_url_parse("redis://[::1]:6380/3?prefix=a:b&lease_ms=500", &u, &err) == LM_OK &&
              u.port == 6380 && u.db == 3 && !strcmp(u.host, "::1") && !strcmp(u.prefix, "a:b") &&
              u.lease_ms == 500,
          "IPv6 URL: %s", err.msg);
    lm_store_url_free(&u);
    CHECK(lm_store_url_parse("redis://cache.internal", &u, &err) == LM_OK && u.port == 6379 && u.db == 0,
          "defaults: %s", err.msg);
    lm_store_url_free(&u);
    CHECK(lm_store_url_parse("LMDB://rel/path?mapsize=64M", &u, &err) == LM_OK &&
              !strcmp(u.path, "rel/path") && u.mapsize == 64u << 20,
          "lmdb URL: %s", err.msg);
    lm_store_url_free(&u);
}

/* ---- the scenario both backends run ------------------------------------------------------- */

/* A child writes half of version `name` and is killed before publishing. */
static void crash_writer(const char *url, const char *name, int tag)
{
    pid_t pid = fork();
    if (pid == 0) {
        lm_store *s = NULL;
        lm_err err = {0};
        lm_store_writer *w = NULL;
        if (lm_store_open(&s, url, 0, &err) != LM_OK) _exit(3);
        if (lm_store_begin_version(s, name, E, LM_STORE_ENC_F32, "model-crash", &w, &err) != LM_OK) _exit(4);
        if (put_range(w, 0, NKEYS / 2, tag, 0, &err) != LM_OK) _exit(5);
        raise(SIGKILL);
        _exit(6);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "crash writer: status %d", st);
}

/* A child reads batches of 64 random keys from the current version until `stop` has a byte,
 * and reports "reads versions_seen inconsistent" on `report`. */
static pid_t start_reader(const char *url, int stop_fd, int report_fd)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    lm_store *s = NULL;
    lm_err err = {0};
    if (lm_store_open(&s, url, LM_STORE_READONLY, &err) != LM_OK) _exit(3);
    lm_rng r;
    lm_rng_seed(&r, (uint64_t)getpid());
    char keys[64][9];
    const char *kp[64];
    size_t lens[64];
    float out[64 * E];
    uint8_t found[64];
    long reads = 0, bad = 0, failed = 0;
    char seen[16] = {0};
    for (;;) {
        char c;
        if (read(stop_fd, &c, 1) == 1) break;
        for (int j = 0; j < 64; j++) {
            key_of(keys[j], (size_t)lm_rng_below(&r, NKEYS));
            kp[j] = keys[j];
            lens[j] = 8;
        }
        lm_store_version rv;
        if (lm_store_get_batch(s, NULL, kp, lens, 64, out, E, found, &rv, &err) != LM_OK) {
            failed++;
            continue;
        }
        int tag = atoi(rv.name + 1);
        if (tag > 0 && tag < 16) seen[tag] = 1;
        for (int j = 0; j < 64; j++)
            if (!found[j] || out[j * E] != (float)tag) bad++;
        reads++;
    }
    int nseen = 0;
    for (int i = 0; i < 16; i++) nseen += seen[i];
    char msg[128];
    int n = snprintf(msg, sizeof msg, "%ld %d %ld %ld", reads, nseen, bad, failed);
    if (write(report_fd, msg, (size_t)n) != n) _exit(7);
    lm_store_close(s);
    _exit(0);
}

static lm_store *reopen(const char *url, int flags)
{
    lm_store *s = NULL;
    lm_err err = {0};
    int rc = lm_store_open(&s, url, flags, &err);
    CHECK(rc == LM_OK, "open %s: %s", url, err.msg);
    return s;
}

static void scenario(const char *url, const char *missing_url, int redis, tr *t)
{
    lm_err err = {0};
    lm_store *s = NULL;
    uint64_t h;
    char names[512];
    int rc;

    rc = lm_store_open(&s, missing_url, 0, &err);
    CHECK(rc == LM_ENOTFOUND && HAS(err.msg, "no store"), "missing store: %d %s", rc, err.msg);
    trf(t, "missing: %d\n", rc);
    s = reopen(url, LM_STORE_CREATE);
    if (!s) return;

    lm_store_version cur;
    rc = lm_store_current(s, &cur, &err);
    CHECK(rc == LM_ENOTFOUND && HAS(err.msg, "no version has been published"), "empty store current: %s",
          err.msg);
    float v[E];
    int found = 1;
    rc = lm_store_get(s, "00000001", 8, v, E, &found, &err);
    trf(t, "empty: %d\n", rc);

    /* round trips per encoding; keys out of order for one */
    rc = write_version(s, "e-f16", LM_STORE_ENC_F16, 11, NKEYS, 0, 10, &err);
    CHECK(rc == LM_OK, "write f16: %s", err.msg);
    rc = write_version(s, "e-i8", LM_STORE_ENC_I8, 12, NKEYS, 1, 10, &err);
    CHECK(rc == LM_OK, "write int8 (reversed keys): %s", err.msg);
    rc = write_version(s, "v1", LM_STORE_ENC_F32, 1, NKEYS, 0, 10, &err);
    CHECK(rc == LM_OK, "write f32: %s", err.msg);
    CHECK(check_values(s, "e-f16", LM_STORE_ENC_F16, 11, NKEYS, &h) == 0, "f16 values within 2^-11 relative");
    trf(t, "f16 %016llx\n", (unsigned long long)h);
    CHECK(check_values(s, "e-i8", LM_STORE_ENC_I8, 12, NKEYS, &h) == 0, "int8 values within scale/2");
    trf(t, "i8 %016llx\n", (unsigned long long)h);
    CHECK(check_values(s, NULL, LM_STORE_ENC_F32, 1, NKEYS, &h) == 0, "f32 values bit-exact");
    trf(t, "v1 %016llx\n", (unsigned long long)h);
    rc = lm_store_current(s, &cur, &err);
    CHECK(rc == LM_OK && !strcmp(cur.name, "v1") && cur.count == NKEYS && cur.complete && cur.current &&
              !strcmp(cur.model_id, "model-1") && cur.dim == E,
          "current v1: %s", err.msg);
    rc = lm_store_get(s, "99999999", 8, v, E, &found, &err);
    CHECK(rc == LM_OK && found == 0 && v[0] == 0, "absent key: not found, zeroed");
    list_tr(s, t, "three");

    /* refusals: E mismatch, an existing version, bad names, bad input, duplicates */
    lm_store_writer *w = NULL;
    rc = lm_store_begin_version(s, "wide", 32, LM_STORE_ENC_F32, "m", &w, &err);
    CHECK(rc == LM_EMISMATCH && HAS(err.msg, "E=16") && HAS(err.msg, "E=32"), "E mismatch on write: %s",
          err.msg);
    trf(t, "mismatch write: %d\n", rc);
    float wide[32];
    rc = lm_store_get(s, "00000001", 8, wide, 32, &found, &err);
    CHECK(rc == LM_EMISMATCH && HAS(err.msg, "model expects E=32"), "E mismatch on read: %s", err.msg);
    trf(t, "mismatch read: %d\n", rc);
    rc = lm_store_begin_version(s, "v1", E, LM_STORE_ENC_F32, "m", &w, &err);
    CHECK(rc == LM_EEXIST && HAS(err.msg, "'v1' exists"), "existing version: %s", err.msg);
    trf(t, "exists: %d\n", rc);
    rc = lm_store_begin_version(s, "bad/name", E, LM_STORE_ENC_F32, "m", &w, &err);
    CHECK(rc == LM_EINVAL && HAS(err.msg, "bad/name"), "bad version name: %s", err.msg);
    rc = lm_store_begin_version(s, "dup", E, LM_STORE_ENC_F32, "m", &w, &err);
    CHECK(rc == LM_OK, "begin dup: %s", err.msg);
    if (rc == LM_OK) {
        const char *k[2] = {"00000005", "00000005"};
        size_t l[2] = {8, 8};
        float x[2 * E] = {0};
        rc = lm_store_put_batch(w, k, l, x, 2, &err);
        CHECK(rc == LM_EINVAL && HAS(err.msg, "twice"), "duplicate key: %d %s", rc, err.msg);
        trf(t, "duplicate: %d\n", rc);
        rc = lm_store_put_batch(w, k, l, x, 1, &err);
        CHECK(rc == LM_EINVAL && HAS(err.msg, "twice"), "sticky error: %s", err.msg);
        lm_store_abort(w);
    }
    rc = lm_store_begin_version(s, "nan", E, LM_STORE_ENC_F16, "m", &w, &err);
    if (rc == LM_OK) {
        const char *k[1] = {"00000001"};
        size_t l[1] = {8};
        float x[E] = {0};
        x[3] = NAN;
        rc = lm_store_put_batch(w, k, l, x, 1, &err);
        CHECK(rc == LM_EINVAL && HAS(err.msg, "element 3 is NaN") && HAS(err.msg, "00000001"),
              "NaN input: %s", err.msg);
        lm_store_abort(w);
    }
    rc = lm_store_begin_version(s, "big", E, LM_STORE_ENC_F16, "m", &w, &err);
    if (rc == LM_OK) {
        const char *k[1] = {"00000001"};
        size_t l[1] = {8};
        float x[E] = {0};
        x[2] = 1e6f;
        rc = lm_store_put_batch(w, k, l, x, 1, &err);
        CHECK(rc == LM_EINVAL && HAS(err.msg, "float16 range"), "f16 range: %s", err.msg);
        lm_store_abort(w);
    }
    list_names(s, names, sizeof names);
    CHECK(!strcmp(names, "e-f16,e-i8,v1"), "aborted versions leave nothing: %s", names);

    /* a writer killed mid-version: readers keep v1, whole */
    crash_writer(url, "v2", 2);
    rc = lm_store_current(s, &cur, &err);
    CHECK(rc == LM_OK && !strcmp(cur.name, "v1"), "after the crash v1 is current: %s", err.msg);
    CHECK(check_values(s, NULL, LM_STORE_ENC_F32, 1, NKEYS, &h) == 0, "after the crash v1 is whole");
    trf(t, "after crash %016llx\n", (unsigned long long)h);
    lm_store_verify_report rep;
    rc = lm_store_verify(s, NULL, &rep, &err);
    CHECK(rc == LM_OK && rep.keys == NKEYS && rep.meta_ok, "verify v1 after the crash: %s", err.msg);
    list_names(s, names, sizeof names);
    CHECK(!strcmp(names, "e-f16,e-i8,v1,v2(incomplete)"), "the half version is listed incomplete: %s", names);
    rc = lm_store_get_version(s, "v2", "00000001", 8, v, E, &found, &err);
    CHECK(rc == LM_ENOTFOUND && HAS(err.msg, "incomplete"), "an incomplete version is not read: %s", err.msg);
    trf(t, "incomplete read: %d\n", rc);
    if (redis) sleep_ms(600); /* the dead writer's lease (lease_ms=400) runs out */
    size_t removed = 0;
    rc = lm_store_gc(s, 10, &removed, &err);
    CHECK(rc == LM_OK && removed == 1, "gc removes the dead writer's version: %zu %s", removed, err.msg);
    list_names(s, names, sizeof names);
    CHECK(!strcmp(names, "e-f16,e-i8,v1"), "after gc: %s", names);
    /* killed again; the next run of the same version replaces the leftovers */
    crash_writer(url, "v2", 2);
    if (redis) sleep_ms(600);
    rc = write_version(s, "v2", LM_STORE_ENC_F32, 2, NKEYS, 0, 10, &err);
    CHECK(rc == LM_OK, "rewrite v2 after a crash: %s", err.msg);
    CHECK(check_values(s, NULL, LM_STORE_ENC_F32, 2, NKEYS, &h) == 0, "v2 current and whole");
    trf(t, "v2 %016llx\n", (unsigned long long)h);
    list_tr(s, t, "v2");

    /* a reader during publishes sees one whole version per read; keep 1 old version */
    int stop[2], report[2];
    if (pipe(stop) == 0 && pipe(report) == 0) {
        int fl = fcntl(stop[0], F_GETFL);
        fcntl(stop[0], F_SETFL, fl | O_NONBLOCK);
        pid_t rd = start_reader(url, stop[0], report[1]);
        sleep_ms(50);
        for (int tag = 3; tag <= 5; tag++) {
            char name[16];
            snprintf(name, sizeof name, "v%d", tag);
            rc = write_version(s, name, LM_STORE_ENC_F32, tag, NKEYS, 0, 1, &err);
            CHECK(rc == LM_OK, "write %s under reads: %s", name, err.msg);
            sleep_ms(30);
        }
        if (write(stop[1], "x", 1) != 1) CHECK(0, "stop the reader");
        int st = 0;
        waitpid(rd, &st, 0);
        char msg[128] = {0};
        ssize_t n = read(report[0], msg, sizeof msg - 1);
        long reads = 0, bad = 0, failed = 0;
        int nseen = 0;
        if (n > 0) sscanf(msg, "%ld %d %ld %ld", &reads, &nseen, &bad, &failed);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && n > 0, "reader exit %d", st);
        CHECK(bad == 0 && failed == 0 && reads > 10 && nseen >= 2,
              "reader: %ld reads, %d versions seen, %ld mixed values, %ld failed reads", reads, nseen, bad,
              failed);
        printf("  reader during publishes: %ld reads of 64 keys, %d versions seen, none mixed\n", reads,
               nseen);
        close(stop[0]);
        close(stop[1]);
        close(report[0]);
        close(report[1]);
    }
    list_names(s, names, sizeof names);
    CHECK(!strcmp(names, "v4,v5"), "keep 1: %s", names);
    list_tr(s, t, "keep1");
    rc = lm_store_gc(s, 0, &removed, &err);
    CHECK(rc == LM_OK && removed == 1, "gc keep 0: %zu %s", removed, err.msg);
    list_names(s, names, sizeof names);
    CHECK(!strcmp(names, "v5"), "gc keep 0 leaves the current: %s", names);

    /* a failing write: the version is dropped, v5 stays */
    lm_store_test_fail_put(s, 2);
    rc = lm_store_begin_version(s, "v6", E, LM_STORE_ENC_F32, "m", &w, &err);
    if (rc == LM_OK) {
        rc = put_range(w, 0, NKEYS, 6, 0, &err);
        CHECK(rc == LM_EIO && HAS(err.msg, "injected"), "injected failure: %s", err.msg);
        rc = lm_store_publish(w, 1, &err);
        CHECK(rc == LM_EIO && HAS(err.msg, "injected"), "publish after a failure returns it: %s", err.msg);
        trf(t, "injected: %d\n", rc);
    }
    list_names(s, names, sizeof names);
    CHECK(!strcmp(names, "v5"), "failed version removed: %s", names);
    CHECK(check_values(s, NULL, LM_STORE_ENC_F32, 5, NKEYS, &h) == 0, "v5 intact after a failed write");

    /* closing with a writer open drops its version */
    rc = lm_store_begin_version(s, "v7", E, LM_STORE_ENC_F32, "m", &w, &err);
    CHECK(rc == LM_OK && put_range(w, 0, 100, 7, 0, &err) == LM_OK, "begin v7: %s", err.msg);
    lm_store_close(s);
    s = reopen(url, 0);
    if (!s) return;
    list_names(s, names, sizeof names);
    CHECK(!strcmp(names, "v5"), "close drops an open writer's version: %s", names);

    /* read-only */
    lm_store_close(s);
    s = reopen(url, LM_STORE_READONLY);
    if (!s) return;
    rc = lm_store_begin_version(s, "v7", E, LM_STORE_ENC_F32, "m", &w, &err);
    CHECK(rc == LM_EINVAL && HAS(err.msg, "read-only"), "read-only: %s", err.msg);
    CHECK(check_values(s, NULL, LM_STORE_ENC_F32, 5, NKEYS, &h) == 0, "read-only reads");
    trf(t, "v5 %016llx\n", (unsigned long long)h);
    lm_store_close(s);
    s = reopen(url, 0);
    if (!s) return;

    /* damage found by verify and by reads */
    rc = lm_store_verify(s, NULL, &rep, &err);
    CHECK(rc == LM_OK && rep.keys == NKEYS && rep.bad_size == 0 && rep.meta_ok, "verify clean: %s", err.msg);
    uint8_t junk[10] = {1, 2, 3};
    float nanv[E] = {0};
    nanv[4] = NAN;
    CHECK(lm_store_test_raw_put(s, "v5", "00000005", 8, junk, sizeof junk, &err) == LM_OK, "damage: %s",
          err.msg);
    CHECK(lm_store_test_raw_put(s, "v5", "00000007", 8, nanv, sizeof nanv, &err) == LM_OK, "damage: %s",
          err.msg);
    rc = lm_store_verify(s, "v5", &rep, &err);
    CHECK(rc == LM_EFORMAT && rep.bad_size == 1 && rep.bad_value == 1 && rep.keys == NKEYS &&
              ((HAS(err.msg, "00000005") && HAS(err.msg, "10 bytes, expected 64")) ||
               (HAS(err.msg, "00000007") && HAS(err.msg, "non-finite"))),
          "verify finds the damage: %d %s", rc, err.msg);
    trf(t, "verify damaged: %d keys=%llu size=%llu value=%llu meta=%d\n", rc, (unsigned long long)rep.keys,
        (unsigned long long)rep.bad_size, (unsigned long long)rep.bad_value, rep.meta_ok);
    rc = lm_store_get(s, "00000005", 8, v, E, &found, &err);
    CHECK(rc == LM_EFORMAT && HAS(err.msg, "damaged"), "a damaged value is refused on read: %s", err.msg);
    CHECK(lm_store_test_raw_put(s, "v5", "00000000x", 9, nanv, 64, &err) == LM_OK, "extra key");
    rc = lm_store_verify(s, "v5", &rep, &err);
    CHECK(rc == LM_EFORMAT && !rep.meta_ok && rep.keys == NKEYS + 1, "count mismatch found: %s", err.msg);
    rc = lm_store_verify(s, "nope", &rep, &err);
    CHECK(rc == LM_ENOTFOUND, "verify a missing version: %s", err.msg);
    trf(t, "end\n");
    lm_store_close(s);
}

/* ---- full stores -------------------------------------------------------------------------- */

/* Publish a small v1, then fail writing a big v2: a clear error, v1 intact. */
static void fill_up(const char *url, int flags, const char *want, size_t big)
{
    lm_store *s = reopen(url, flags | LM_STORE_CREATE);
    if (!s) return;
    lm_err err = {0};
    int rc = write_version(s, "v1", LM_STORE_ENC_F32, 1, 300, 0, 1, &err);
    CHECK(rc == LM_OK, "%s: small v1: %s", url, err.msg);
    lm_store_writer *w = NULL;
    rc = lm_store_begin_version(s, "v2", E, LM_STORE_ENC_F32, "m", &w, &err);
    CHECK(rc == LM_OK, "%s: begin v2: %s", url, err.msg);
    if (rc == LM_OK) {
        static char keys[BATCH][16];
        static const char *kp[BATCH];
        static size_t lens[BATCH];
        static float vecs[BATCH * E];
        for (size_t first = 0; rc == LM_OK && first < big; first += BATCH) {
            for (size_t j = 0; j < BATCH; j++) {
                lens[j] = (size_t)snprintf(keys[j], sizeof keys[j], "%012zu", first + j);
                kp[j] = keys[j];
                vec_of(vecs + j * E, first + j, 2);
            }
            rc = lm_store_put_batch(w, kp, lens, vecs, BATCH, &err);
        }
        CHECK(rc == LM_EIO && HAS(err.msg, want) && HAS(err.msg, "current version is untouched"),
              "%s: a full store: %d %s", url, rc, err.msg);
        printf("  full store: %s\n", err.msg);
        lm_store_abort(w);
    }
    uint64_t h;
    CHECK(check_values(s, NULL, LM_STORE_ENC_F32, 1, 300, &h) == 0, "%s: v1 intact when full", url);
    lm_store_verify_report rep;
    rc = lm_store_verify(s, NULL, &rep, &err);
    CHECK(rc == LM_OK && rep.keys == 300, "%s: v1 verifies when full: %s", url, err.msg);
    lm_store_close(s);
}

/* ---- read-only handles sharing one environment (LMDB) ----------------------------------- */

typedef struct shared_reader {
    lm_store *s;
    atomic_int *stop;
    long reads, bad, failed;
    char seen[16];
    int seed;
} shared_reader;

static void *shared_read_loop(void *p)
{
    shared_reader *a = p;
    lm_rng r;
    lm_rng_seed(&r, (uint64_t)a->seed);
    char keys[64][9];
    const char *kp[64];
    size_t lens[64];
    float out[64 * E];
    uint8_t found[64];
    lm_err err = {0};
    while (!atomic_load(a->stop)) {
        for (int j = 0; j < 64; j++) {
            key_of(keys[j], (size_t)lm_rng_below(&r, NKEYS));
            kp[j] = keys[j];
            lens[j] = 8;
        }
        lm_store_version rv;
        if (lm_store_get_batch(a->s, NULL, kp, lens, 64, out, E, found, &rv, &err) != LM_OK) {
            if (!a->failed++) printf("shared reader: %s\n", err.msg);
            continue;
        }
        int tag = atoi(rv.name + 1);
        if (tag > 0 && tag < 16) a->seen[tag] = 1;
        for (int j = 0; j < 64; j++)
            if (!found[j] || out[j * E] != (float)tag) a->bad++;
        a->reads++;
    }
    return NULL;
}

/* Read-only handles on one store in one process share its environment, each with its own read
 * transaction: four threads read through four handles while another process publishes five
 * versions (every batch from one whole version), a writable open is refused while they are
 * open and allowed once the last is closed; readers adopt a map another process grew. */
static void test_lmdb_shared(void)
{
    char url[700];
    lm_err err = {0};
    snprintf(url, sizeof url, "lmdb://%s/shared", dir);
    lm_store *w = reopen(url, LM_STORE_CREATE);
    if (!w) return;
    int rc = write_version(w, "v1", LM_STORE_ENC_F32, 1, NKEYS, 0, 0, &err);
    CHECK(rc == LM_OK, "shared: v1: %s", err.msg);
    lm_store_close(w);

    enum { NR = 4 };
    lm_store *h[NR] = {0};
    for (int i = 0; i < NR; i++) h[i] = reopen(url, LM_STORE_READONLY);
    lm_store *x = NULL;
    rc = lm_store_open(&x, url, 0, &err);
    CHECK(rc == LM_EINVAL && HAS(err.msg, "already open"), "a writable open beside readers: %s", err.msg);
    if (rc == LM_OK) lm_store_close(x);
    for (int i = 0; i < NR; i++)
        if (!h[i]) return;

    atomic_int stop;
    atomic_init(&stop, 0);
    shared_reader a[NR];
    pthread_t th[NR];
    for (int i = 0; i < NR; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].s = h[i], a[i].stop = &stop, a[i].seed = 17 + i;
        pthread_create(&th[i], NULL, shared_read_loop, &a[i]);
    }
    pid_t pid = fork();
    if (pid == 0) { /* the publisher: its own environment (the registry is per process) */
        lm_store *cs = NULL;
        lm_err ce = {0};
        if (lm_store_open(&cs, url, 0, &ce) != LM_OK) _exit(3);
        char name[16];
        for (int tag = 2; tag <= 6; tag++) {
            snprintf(name, sizeof name, "v%d", tag);
            if (write_version(cs, name, LM_STORE_ENC_F32, tag, NKEYS, 0, 2, &ce) != LM_OK) _exit(4);
            sleep_ms(20);
        }
        lm_store_close(cs);
        _exit(0);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    sleep_ms(100);
    atomic_store(&stop, 1);
    long reads = 0, bad = 0, failed = 0;
    int seen6 = 1;
    for (int i = 0; i < NR; i++) {
        pthread_join(th[i], NULL);
        reads += a[i].reads, bad += a[i].bad, failed += a[i].failed;
        seen6 &= a[i].seen[6];
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "shared: the publisher exited with %d", status);
    CHECK(reads > 4 * NR && bad == 0 && failed == 0,
          "shared: %ld batches read by %d threads, %ld wrong values, %ld failed reads", reads, NR, bad,
          failed);
    CHECK(seen6, "shared: every reader sees the last version published");
    const int order[NR] = {2, 0, 3, 1};
    for (int i = 0; i < NR; i++) {
        lm_store_close(h[order[i]]);
        if (i < NR - 1) {
            rc = lm_store_open(&x, url, 0, &err);
            CHECK(rc == LM_EINVAL, "a writable open while %d readers remain", NR - 1 - i);
            if (rc == LM_OK) lm_store_close(x);
        }
    }
    w = reopen(url, 0);
    lm_store_close(w);

    /* a map grown by another process: 1 MiB here, 64 MiB in the writer, about 2.4 MB written */
    snprintf(url, sizeof url, "lmdb://%s/grow?mapsize=1048576", dir);
    w = reopen(url, LM_STORE_CREATE);
    if (!w) return;
    rc = write_version(w, "v1", LM_STORE_ENC_F32, 1, 100, 0, 0, &err);
    CHECK(rc == LM_OK, "grow: v1: %s", err.msg);
    lm_store_close(w);
    lm_store *g[2] = {reopen(url, LM_STORE_READONLY), reopen(url, LM_STORE_READONLY)};
    if (!g[0] || !g[1]) return;
    pid = fork();
    if (pid == 0) {
        char big[700];
        snprintf(big, sizeof big, "lmdb://%s/grow?mapsize=67108864", dir);
        lm_store *cs = NULL;
        lm_err ce = {0};
        if (lm_store_open(&cs, big, 0, &ce) != LM_OK) _exit(3);
        if (write_version(cs, "v2", LM_STORE_ENC_F32, 2, 20000, 0, 0, &ce) != LM_OK) _exit(4);
        lm_store_close(cs);
        _exit(0);
    }
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "grow: the writer exited with %d", status);
    for (int i = 0; i < 2; i++) {
        float v[E];
        int found = 0;
        char key[9];
        key_of(key, 12345);
        rc = lm_store_get(g[i], key, 8, v, E, &found, &err);
        CHECK(rc == LM_OK && found && v[0] == 2.0f, "grow: reader %d after the map grew: %s", i,
              rc ? err.msg : "wrong value");
    }
    lm_store_close(g[0]);
    lm_store_close(g[1]);
}

static void test_lmdb_only(void)
{
    char url[700], path[600];
    lm_err err = {0};
    lm_store *s = NULL, *s2 = NULL;

    snprintf(path, sizeof path, "%s/afile", dir);
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
    snprintf(url, sizeof url, "lmdb://%s", path);
    int rc = lm_store_open(&s, url, LM_STORE_CREATE, &err);
    CHECK(rc == LM_EINVAL && HAS(err.msg, "is a file"), "a store path that is a file: %s", err.msg);

    snprintf(url, sizeof url, "lmdb://%s/twice", dir);
    s = reopen(url, LM_STORE_CREATE);
    rc = lm_store_open(&s2, url, 0, &err);
    CHECK(rc == LM_EINVAL && HAS(err.msg, "already open"), "a second open in one process: %s", err.msg);
    lm_store_close(s);

    /* more versions than the handle cache (64) keeps open: handles are closed and reopened */
    snprintf(url, sizeof url, "lmdb://%s/many", dir);
    s = reopen(url, LM_STORE_CREATE);
    if (s) {
        int bad = 0;
        char name[16];
        for (int i = 0; i < 80; i++) {
            snprintf(name, sizeof name, "m%d", i);
            if (write_version(s, name, LM_STORE_ENC_F32, i, 3, 0, 100, &err) != LM_OK) bad++;
        }
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < 80; i++) {
                snprintf(name, sizeof name, "m%d", i);
                float v[E];
                int found = 0;
                if (lm_store_get_version(s, name, "00000002", 8, v, E, &found, &err) != LM_OK || !found ||
                    v[0] != (float)i)
                    bad++;
            }
        CHECK(bad == 0, "80 versions read twice through the handle cache: %d bad (%s)", bad, err.msg);
        size_t removed = 0;
        CHECK(lm_store_gc(s, 0, &removed, &err) == LM_OK && removed == 79, "gc 79 versions: %zu", removed);
        lm_store_close(s);
    }

    snprintf(url, sizeof url, "lmdb://%s/small?mapsize=1M", dir);
    fill_up(url, 0, "map size", 100000);

    /* a real full disk: a 1 MiB tmpfs, where mounting is allowed */
    snprintf(path, sizeof path, "%s/tmpfs", dir);
    mkdir(path, 0755);
    if (mount("tmpfs", path, "tmpfs", 0, "size=1m") == 0) {
        snprintf(url, sizeof url, "lmdb://%s/store", path);
        fill_up(url, 0, "no space left", 100000);
        CHECK(umount(path) == 0, "umount the tmpfs");
    } else {
        printf("  (no tmpfs: cannot mount here; the map size case stands for a full disk)\n");
    }
}

/* ---- Redis --------------------------------------------------------------------------------- */

static char redis_dir[600];
static char script[700];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &n) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

/* A watchdog process that stops the Redis server when this process ends, however it ends:
 * it waits for EOF on a pipe whose write end only this process (and its short-lived
 * children) hold. Forked first, so it holds no store handle. Returns the write end. */
static int start_watchdog(void)
{
    int p[2];
    if (pipe(p) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[1]);
        char c;
        while (read(p[0], &c, 1) != 0) {
        }
        execlp("bash", "bash", script, "stop", redis_dir, (char *)NULL);
        _exit(127);
    }
    close(p[0]);
    fcntl(p[1], F_SETFD, FD_CLOEXEC);
    return p[1];
}

/* Start redis-server on a free port; returns the port, 0 when it would not start. */
static int redis_start(void)
{
    char cmd[2000];
    int port = 0;
    for (int attempt = 0; attempt < 3 && !port; attempt++) {
        snprintf(cmd, sizeof cmd, "bash '%s' start '%s' %d", script, redis_dir, free_port());
        FILE *f = popen(cmd, "r");
        if (!f) break;
        if (fscanf(f, "%d", &port) != 1) port = 0;
        if (pclose(f) != 0) port = 0;
    }
    return port;
}

static redisReply *admin(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    return r;
}

static void test_redis_only(int port)
{
    char url[300];
    lm_err err = {0};
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    CHECK(c && !c->err, "admin connection");
    if (!c || c->err) {
        if (c) redisFree(c);
        return;
    }

    /* the server drops our connection: the next call fails clearly, the one after reconnects */
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0?prefix=full", port);
    lm_store *s = reopen(url, LM_STORE_CREATE);
    if (s) {
        lm_store_version cur;
        redisReply *r = admin(c, "CLIENT KILL TYPE normal SKIPME yes");
        if (r) freeReplyObject(r);
        int rc1 = lm_store_current(s, &cur, &err);
        CHECK(rc1 == LM_EIO ? HAS(err.msg, "lost") : rc1 == LM_ENOTFOUND, "after a dropped connection: %d %s",
              rc1, err.msg);
        int rc2 = lm_store_current(s, &cur, &err);
        CHECK(rc2 == LM_ENOTFOUND, "reconnects: %d %s", rc2, err.msg);
        lm_store_close(s);
    }

    /* out of memory stands for a full disk */
    redisReply *r = admin(c, "INFO memory");
    long long used = 0;
    const char *u = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "used_memory:") : NULL;
    if (u) used = atoll(u + 12);
    if (r) freeReplyObject(r);
    r = admin(c, "CONFIG SET maxmemory %lld", used + (2 << 20));
    if (r) freeReplyObject(r);
    r = admin(c, "CONFIG SET maxmemory-policy noeviction");
    if (r) freeReplyObject(r);
    fill_up(url, 0, "out of memory", 200000);
    r = admin(c, "CONFIG SET maxmemory 0");
    if (r) freeReplyObject(r);
    redisFree(c);
}

int main(void)
{
    const char *tmp = getenv("LM_TMP");
    if (getenv("LM_SRC")) src_dir = getenv("LM_SRC");
    snprintf(dir, sizeof dir, "%s/store-%d", tmp ? tmp : "/tmp", (int)getpid());
    snprintf(redis_dir, sizeof redis_dir, "%s/redis", dir);
    snprintf(script, sizeof script, "%s/scripts/redis-test-server.sh", src_dir);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0) return 1;
    setvbuf(stdout, NULL, _IONBF, 0); /* children's output in order */

    const char *skip = getenv("LM_SKIP_REDIS");
    int want_redis = !(skip && !strcmp(skip, "1"));
    int wd = want_redis ? start_watchdog() : -1;

    double t0 = lm_now();
    printf("codec\n");
    test_codec();
    printf("URLs\n");
    test_urls();

    static tr tl, tred;
    char url[700], missing[700];
    printf("scenario on LMDB\n");
    snprintf(url, sizeof url, "lmdb://%s/store", dir);
    snprintf(missing, sizeof missing, "lmdb://%s/nothing-here", dir);
    scenario(url, missing, 0, &tl);
    printf("LMDB only\n");
    test_lmdb_only();
    test_lmdb_shared();

    if (want_redis) {
        int installed = system("command -v redis-server >/dev/null 2>&1") == 0;
        CHECK(installed, "redis-server is not installed: scripts/install-deps.sh test installs it "
                         "(LM_SKIP_REDIS=1 skips the Redis tests)");
        int port = installed ? redis_start() : 0;
        CHECK(!installed || port > 0, "redis-server would not start (see %s/redis.log)", redis_dir);
        if (port > 0) {
            printf("scenario on Redis (127.0.0.1:%d)\n", port);
            snprintf(url, sizeof url, "redis://127.0.0.1:%d/0?prefix=t&lease_ms=400", port);
            snprintf(missing, sizeof missing, "redis://127.0.0.1:%d/0?prefix=nothing-here", port);
            scenario(url, missing, 1, &tred);
            int same = tl.len == tred.len && !memcmp(tl.buf, tred.buf, tl.len);
            CHECK(same, "LMDB and Redis give identical results");
            if (!same)
                printf("--- LMDB\n%s--- Redis\n%s", tl.buf, tred.buf);
            else
                printf("  transcripts identical (%zu bytes)\n", tl.len);
            printf("Redis only\n");
            test_redis_only(port);
        }
    } else {
        printf("Redis tests skipped (LM_SKIP_REDIS=1)\n");
    }
    if (wd >= 0) { /* the watchdog stops the server on EOF; wait for it */
        close(wd);
        while (wait(NULL) > 0) {
        }
    }
    if (failures == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) printf("  (could not remove %s)\n", dir);
    }
    printf("(%.1f s)\n", lm_now() - t0);
    printf("%d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
