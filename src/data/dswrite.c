/* dswrite.c: the dataset writer. */
#include "data/dswrite.h"

#include "data/dio.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define WBUF (4u << 20)

/* A buffered output file. The dataset file itself goes through lm_dio (data/dio.h): direct
 * writes from two buffers in turn, one in flight while the other fills, since through the page
 * cache each of its bytes cost a copy into a fresh page; direct writes also leave the final
 * fsync little to do. The cost: the dataset is not left in the page cache for the next command
 * to read. The scratch files stay buffered (small, and read back at the end). */
typedef struct bufile {
    lm_dio io;
    char *path;
    char *buf; /* the buffer filling: bufs[cur] */
    char *bufs[2];
    int cur;
    size_t n;
    uint64_t off; /* bytes handed to the file so far (written or in flight) */
} bufile;

struct lm_dswriter {
    bufile main, tasks, keys;
    lm_checksum *ck;
    lm_ds_header h;
    uint64_t task_first;
    int finished;
};

static int bf_open(bufile *b, const char *dir, const char *name, int keep, int direct, lm_err *err)
{
    b->io.fd = -1;
    b->path = lm_path_join(dir, name);
    for (int i = 0; i < (direct ? 2 : 1); i++)
        if (!(b->bufs[i] = lm_dio_alloc(WBUF))) return lm_err_set(err, LM_ENOMEM, "out of memory");
    b->buf = b->bufs[0];
    if (!b->path) return lm_err_set(err, LM_ENOMEM, "out of memory");
    int flags = O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, mode = keep ? 0644 : 0600;
    if (direct) return lm_dio_open(&b->io, b->path, flags, mode, err);
    b->io.path = b->path;
    b->io.fd = open(b->path, flags, mode);
    if (b->io.fd < 0) return lm_err_errno(err, LM_EIO, "%s: create", b->path);
    return LM_OK;
}

/* Start writing the filled buffer's whole blocks and switch buffers; the rest (under a block)
 * moves to the front of the other buffer. */
static int bf_flush_direct(bufile *b, lm_err *err)
{
    size_t n = b->n & ~(size_t)(LM_DIO_ALIGN - 1);
    if (!n) return LM_OK;
    int rc = lm_dio_write(&b->io, b->buf, n, b->off, err);
    if (rc) return rc;
    char *next = b->bufs[b->cur ^ 1];
    memcpy(next, b->buf + n, b->n - n);
    b->cur ^= 1;
    b->buf = next;
    b->off += n;
    b->n -= n;
    return LM_OK;
}

/* Write out the whole buffer (after the write in flight, and out of direct mode, since the
 * tail is not a whole block). Writes go at b->off: asynchronous writes do not move the file
 * position. */
static int bf_flush(bufile *b, lm_err *err)
{
    int rc = lm_dio_buffered(&b->io, err);
    if (rc || !b->n) return rc;
    rc = lm_pwrite_all(b->io.fd, b->buf, b->n, b->off, b->path, err);
    b->off += b->n;
    b->n = 0;
    return rc;
}

static int bf_put(bufile *b, const void *p, size_t n, lm_checksum *ck, lm_err *err)
{
    if (ck) lm_checksum_update(ck, p, n);
    const char *c = p;
    while (n) {
        if (b->n == WBUF) {
            int rc = b->bufs[1] ? bf_flush_direct(b, err) : bf_flush(b, err);
            if (rc) return rc;
        }
        size_t k = WBUF - b->n < n ? WBUF - b->n : n;
        memcpy(b->buf + b->n, c, k);
        b->n += k, c += k, n -= k;
    }
    return LM_OK;
}

static uint64_t bf_size(const bufile *b)
{
    return b->off + b->n;
}

static void bf_close(bufile *b, int remove)
{
    lm_dio_close(&b->io); /* waits: the buffer must outlive a write in flight (after an error) */
    if (remove && b->path) unlink(b->path);
    free(b->path);
    free(b->bufs[0]);
    free(b->bufs[1]);
    memset(b, 0, sizeof *b);
}

int lm_dswriter_open(lm_dswriter **out, const char *dir, uint32_t nmeta, uint32_t ndense, uint32_t ncat,
                     lm_err *err)
{
    *out = NULL;
    lm_dswriter *w = calloc(1, sizeof *w);
    if (!w) return lm_err_set(err, LM_ENOMEM, "out of memory");
    w->main.io.fd = w->tasks.io.fd = w->keys.io.fd = -1;
    int rc = bf_open(&w->main, dir, LM_DS_FILE, 1, 1, err);
    if (!rc) rc = bf_open(&w->tasks, dir, "tasks.scratch", 0, 0, err);
    if (!rc) rc = bf_open(&w->keys, dir, "keys.scratch", 0, 0, err);
    if (!rc && !(w->ck = lm_checksum_new())) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    if (rc) {
        lm_dswriter_free(w);
        return rc;
    }
    memcpy(w->h.magic, LM_DS_MAGIC, 8);
    w->h.version = LM_DS_VERSION;
    w->h.header_bytes = LM_DS_HEADER_BYTES;
    w->h.nmeta = nmeta;
    w->h.ndense = ndense;
    w->h.ncat = ncat;
    w->h.row_bytes = lm_ds_row_bytes(nmeta + ndense, ncat);
    w->h.rows_off = LM_DS_HEADER_BYTES;
    /* The header is written last; reserve its space. */
    w->main.off = LM_DS_HEADER_BYTES;
    if (lseek(w->main.io.fd, LM_DS_HEADER_BYTES, SEEK_SET) < 0) {
        rc = lm_err_errno(err, LM_EIO, "%s: seek", w->main.path);
        lm_dswriter_free(w);
        return rc;
    }
    *out = w;
    return LM_OK;
}

int lm_dswriter_row(lm_dswriter *w, const void *row, lm_err *err)
{
    w->h.nrows++;
    return bf_put(&w->main, row, w->h.row_bytes, w->ck, err);
}

int lm_dswriter_task(lm_dswriter *w, const char *key, uint32_t key_len, int is_new,
                     const uint32_t nsplit[LM_SPLIT_COUNT], int contiguous, lm_err *err)
{
    lm_task t = {0};
    t.key_off = bf_size(&w->keys);
    t.key_len = key_len;
    t.is_new = is_new ? 1 : 0;
    t.first = w->task_first;
    t.n = (uint32_t)(w->h.nrows - w->task_first);
    t.contiguous = contiguous ? 1 : 0;
    memcpy(t.nsplit, nsplit, sizeof t.nsplit);
    w->task_first = w->h.nrows;
    w->h.ntasks++;
    int rc = bf_put(&w->keys, key, key_len, NULL, err);
    if (!rc) rc = bf_put(&w->tasks, &t, sizeof t, NULL, err);
    return rc;
}

static int pad_to(lm_dswriter *w, uint64_t align, lm_err *err)
{
    static const char zeros[64];
    uint64_t sz = bf_size(&w->main), r = sz % align;
    return r ? bf_put(&w->main, zeros, (size_t)(align - r), w->ck, err) : LM_OK;
}

/* Append a scratch file's bytes to the main file. */
static int append_file(lm_dswriter *w, bufile *src, lm_err *err)
{
    int rc = bf_flush(src, err);
    if (rc) return rc;
    if (lseek(src->io.fd, 0, SEEK_SET) < 0) return lm_err_errno(err, LM_EIO, "%s: seek", src->path);
    char *tmp = malloc(WBUF);
    if (!tmp) return lm_err_set(err, LM_ENOMEM, "out of memory");
    for (;;) {
        ssize_t got = read(src->io.fd, tmp, WBUF);
        if (got < 0) {
            if (errno == EINTR) continue;
            rc = lm_err_errno(err, LM_EIO, "%s: read", src->path);
            break;
        }
        if (got == 0) break;
        if ((rc = bf_put(&w->main, tmp, (size_t)got, w->ck, err))) break;
    }
    free(tmp);
    return rc;
}

int lm_dswriter_finish(lm_dswriter *w, const char *schema_json, const char *info_json, lm_err *err)
{
    int rc = pad_to(w, 64, err);
    w->h.tasks_off = bf_size(&w->main);
    if (!rc) rc = append_file(w, &w->tasks, err);
    if (!rc) rc = pad_to(w, 64, err);
    w->h.keys_off = bf_size(&w->main);
    w->h.keys_len = bf_size(&w->keys);
    if (!rc) rc = append_file(w, &w->keys, err);
    if (!rc) rc = pad_to(w, 64, err);
    w->h.schema_off = bf_size(&w->main);
    w->h.schema_len = strlen(schema_json);
    if (!rc) rc = bf_put(&w->main, schema_json, w->h.schema_len, w->ck, err);
    if (!rc) rc = pad_to(w, 64, err);
    w->h.info_off = bf_size(&w->main);
    w->h.info_len = strlen(info_json);
    if (!rc) rc = bf_put(&w->main, info_json, w->h.info_len, w->ck, err);
    if (!rc) rc = bf_flush(&w->main, err);
    if (rc) return rc;
    w->h.file_bytes = bf_size(&w->main);
    w->h.checksum = lm_checksum_digest(w->ck);
    w->h.header_checksum = 0;
    char hdr[LM_DS_HEADER_BYTES] = {0};
    memcpy(hdr, &w->h, sizeof w->h);
    w->h.header_checksum = lm_hash64(hdr, sizeof hdr, 0);
    memcpy(hdr, &w->h, sizeof w->h);
    rc = lm_pwrite_all(w->main.io.fd, hdr, sizeof hdr, 0, w->main.path, err);
    if (!rc && fsync(w->main.io.fd) != 0) rc = lm_err_errno(err, LM_EIO, "%s: fsync", w->main.path);
    if (!rc) w->finished = 1;
    return rc;
}

void lm_dswriter_free(lm_dswriter *w)
{
    if (!w) return;
    bf_close(&w->main, !w->finished);
    bf_close(&w->tasks, 1);
    bf_close(&w->keys, 1);
    lm_checksum_free(w->ck);
    free(w);
}
