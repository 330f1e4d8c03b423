/* runs.c: the external sort behind `limaml prepare`. A run is sorted with one radix pass on
 * the top 16 bits of the task hash (tasks spread evenly over 65,536 buckets) and a stable
 * merge sort inside each bucket, so sorting costs about two passes over the index; runs
 * are then merged with a small heap. Equal records keep their input order (earlier runs
 * first), so a task's examples with equal times stay in file order. */
#include "data/runs.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RADIX_BITS 16
#define NBUCKETS (1u << RADIX_BITS)
/* Runs are written 1 MiB less one page at a time: writes of exactly 1 MiB at 1 MiB-aligned
 * offsets made the kernel (Linux 6.18, ext4) build the run files' page cache from large
 * folios, and on this virtual machine that tripled prepare's system time when records were 128
 * bytes long (2.5 to 3.5 s against 0.8 to 0.9 s at 10 million rows; docs/BENCHMARKS.md). */
#define RUN_IO_BYTES ((1u << 20) - 4096u)

typedef struct entry {
    uint64_t hash;
    double time;
    double tie;
    uint64_t off; /* record offset in the buffer */
} entry;

typedef struct run_reader {
    int fd;
    char *buf;
    size_t cap, beg, end;
    int eof;
    const lm_rec *cur;
} run_reader;

/* Pages of the sort buffers are faulted in by a thread of their own a little ahead of the
 * reader that fills them: on a virtual machine a first touch costs about 1.3 s per GB (the host
 * backs the page, the kernel zeroes it), which on the main thread was an eighth of a prepare's
 * time. The thread uses MADV_POPULATE_WRITE (Linux 5.14), which maps pages without writing to
 * them, so it never races with the records written meanwhile; on an older kernel it ends at
 * once. It keeps at most PREFAULT_AHEAD bytes of each buffer ahead of what is used, so a small
 * input does not make a large resident set. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define PREFAULT_STEP ((size_t)4 << 20)
#define PREFAULT_AHEAD ((size_t)32 << 20)
typedef struct prefault {
    pthread_t th;
    int started;
    atomic_int stop;
    atomic_size_t used[3]; /* bytes of each buffer in use: the reader's records, the index twice */
    void *ptr[3];
    size_t len[3];
} prefault;

static void *prefault_main(void *arg)
{
    prefault *pf = arg;
    size_t done[3] = {0, 0, 0};
    while (!atomic_load_explicit(&pf->stop, memory_order_relaxed)) {
        int worked = 0, finished = 1;
        for (int i = 0; i < 3; i++) {
            size_t want = atomic_load_explicit(&pf->used[i], memory_order_relaxed) + PREFAULT_AHEAD;
            if (want > pf->len[i]) want = pf->len[i];
            if (done[i] < pf->len[i]) finished = 0;
            if (done[i] >= want) continue;
            size_t n = pf->len[i] - done[i] < PREFAULT_STEP ? pf->len[i] - done[i] : PREFAULT_STEP;
            if (madvise((char *)pf->ptr[i] + done[i], n, MADV_POPULATE_WRITE) != 0) return NULL;
            done[i] += n;
            worked = 1;
        }
        if (finished) break;
        if (!worked) nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
    }
    return NULL;
}

struct lm_sorter {
    prefault pf;
    size_t mem;
    char *tmp_dir;
    char *buf; /* records */
    size_t buf_cap, used;
    entry *ents, *tmp;
    size_t nents, ents_cap;
    uint32_t *counts;
    char **run_paths;
    size_t nruns;
    size_t peak;
    /* reading */
    int mode; /* 0 filling, 1 memory stream, 2 merging */
    size_t pos;
    run_reader *readers;
    size_t *heap, nheap;
};

static inline int cmp_key(const char *buf, const entry *a, const entry *b)
{
    if (a->hash != b->hash) return a->hash < b->hash ? -1 : 1;
    const lm_rec *ra = (const lm_rec *)(buf + a->off), *rb = (const lm_rec *)(buf + b->off);
    if (ra->keylen != rb->keylen) return ra->keylen < rb->keylen ? -1 : 1;
    int c = memcmp(LM_REC_KEY(ra), LM_REC_KEY(rb), ra->keylen);
    if (c) return c;
    if (a->time != b->time) return a->time < b->time ? -1 : 1;
    if (a->tie != b->tie) return a->tie < b->tie ? -1 : 1;
    return 0;
}

static int cmp_rec(const lm_rec *a, const lm_rec *b)
{
    if (a->hash != b->hash) return a->hash < b->hash ? -1 : 1;
    if (a->keylen != b->keylen) return a->keylen < b->keylen ? -1 : 1;
    int c = memcmp(LM_REC_KEY(a), LM_REC_KEY(b), a->keylen);
    if (c) return c;
    if (a->time != b->time) return a->time < b->time ? -1 : 1;
    double ta = lm_rec_tie(a), tb = lm_rec_tie(b);
    if (ta != tb) return ta < tb ? -1 : 1;
    return 0;
}

/* The sort buffers are large and touched once per run: transparent huge pages cut the cost
 * of first-touch page faults (measured: a fifth of prepare's time on 4 KiB pages). */
static void *alloc_big(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, (size_t)2 << 20, n ? n : 1) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, n, MADV_HUGEPAGE);
#endif
    return p;
}

int lm_sorter_new(lm_sorter **out, size_t mem_bytes, const char *tmp_dir, lm_err *err)
{
    *out = NULL;
    if (mem_bytes < (8u << 20)) mem_bytes = 8u << 20;
    lm_sorter *s = calloc(1, sizeof *s);
    if (!s) return lm_err_set(err, LM_ENOMEM, "out of memory");
    s->mem = mem_bytes;
    /* A private folder for the runs, so prepares sharing --tmp-dir never meet. */
    s->tmp_dir = lm_path_join(tmp_dir, "lmsort.XXXXXX");
    if (s->tmp_dir && !mkdtemp(s->tmp_dir)) {
        int rc = lm_err_errno(err, LM_EIO, "%s: cannot create a folder for sort runs", tmp_dir);
        free(s->tmp_dir);
        free(s);
        return rc;
    }
    /* Records take about 3/5 of the budget, the index and its scratch copy the rest. */
    s->buf_cap = mem_bytes / 5 * 3;
    s->buf = alloc_big(s->buf_cap);
    s->ents_cap = (mem_bytes - s->buf_cap) / (2 * sizeof(entry));
    s->ents = alloc_big(s->ents_cap * sizeof(entry));
    s->tmp = alloc_big(s->ents_cap * sizeof(entry));
    s->counts = calloc(NBUCKETS + 1, sizeof *s->counts);
    if (!s->tmp_dir || !s->buf || !s->counts || !s->ents || !s->tmp) {
        lm_sorter_free(s);
        return lm_err_set(err, LM_ENOMEM, "out of memory (sort buffer of %zu bytes)", mem_bytes);
    }
    s->pf.ptr[0] = s->buf, s->pf.len[0] = s->buf_cap;
    s->pf.ptr[1] = s->ents, s->pf.len[1] = s->ents_cap * sizeof(entry);
    s->pf.ptr[2] = s->tmp, s->pf.len[2] = s->ents_cap * sizeof(entry);
    atomic_init(&s->pf.stop, 0);
    for (int i = 0; i < 3; i++) atomic_init(&s->pf.used[i], 0);
    s->pf.started = pthread_create(&s->pf.th, NULL, prefault_main, &s->pf) == 0;
    *out = s;
    return LM_OK;
}

/* Stop the prefault thread (before its buffers are freed). */
static void prefault_join(lm_sorter *s)
{
    if (!s->pf.started) return;
    atomic_store(&s->pf.stop, 1);
    pthread_join(s->pf.th, NULL);
    s->pf.started = 0;
}

/* Stable merge sort of e[0..n) using t[0..n) as scratch; insertion sort for short spans. */
static void msort(const char *buf, entry *e, entry *t, size_t n)
{
    if (n <= 24) {
        for (size_t i = 1; i < n; i++) {
            entry x = e[i];
            size_t j = i;
            while (j > 0 && cmp_key(buf, &e[j - 1], &x) > 0) {
                e[j] = e[j - 1];
                j--;
            }
            e[j] = x;
        }
        return;
    }
    size_t h = n / 2;
    msort(buf, e, t, h);
    msort(buf, e + h, t + h, n - h);
    if (cmp_key(buf, &e[h - 1], &e[h]) <= 0) return;
    memcpy(t, e, n * sizeof *e);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) e[k++] = cmp_key(buf, &t[j], &t[i]) < 0 ? t[j++] : t[i++];
    while (i < h) e[k++] = t[i++];
    while (j < n) e[k++] = t[j++];
}

/* Sort the buffered index: radix on the top hash bits into s->tmp, then each bucket. The
 * sorted order ends in s->ents. */
static void sort_buffer(lm_sorter *s)
{
    uint32_t *c = s->counts;
    memset(c, 0, (NBUCKETS + 1) * sizeof *c);
    for (size_t i = 0; i < s->nents; i++) c[(s->ents[i].hash >> (64 - RADIX_BITS)) + 1]++;
    for (uint32_t b = 0; b < NBUCKETS; b++) c[b + 1] += c[b];
    for (size_t i = 0; i < s->nents; i++) {
        uint32_t b = (uint32_t)(s->ents[i].hash >> (64 - RADIX_BITS));
        s->tmp[c[b]++] = s->ents[i];
    }
    /* c[b] now holds the end of bucket b; the start is the previous end. */
    entry *t = s->ents;
    s->ents = s->tmp;
    s->tmp = t;
    size_t start = 0;
    for (uint32_t b = 0; b < NBUCKETS; b++) {
        size_t end = c[b];
        if (end - start > 1) msort(s->buf, s->ents + start, s->tmp + start, end - start);
        start = end;
    }
}

static int spill(lm_sorter *s, lm_err *err)
{
    sort_buffer(s);
    char name[64];
    snprintf(name, sizeof name, "run-%06zu.bin", s->nruns);
    char *path = lm_path_join(s->tmp_dir, name);
    char **paths = realloc(s->run_paths, (s->nruns + 1) * sizeof *paths);
    if (!path || !paths) {
        free(path);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    s->run_paths = paths;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int rc = lm_err_errno(err, LM_EIO, "%s: cannot create a sort run", path);
        free(path);
        return rc;
    }
    s->run_paths[s->nruns++] = path;
    char *out = malloc(RUN_IO_BYTES);
    if (!out) {
        close(fd);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    size_t n = 0;
    int rc = LM_OK;
    for (size_t i = 0; i < s->nents && !rc; i++) {
        /* Records are gathered in sorted, i.e. random, order: fetch ahead to hide misses. */
        if (i + 16 < s->nents) {
            __builtin_prefetch(s->buf + s->ents[i + 16].off);
            __builtin_prefetch(s->buf + s->ents[i + 16].off + 64);
        }
        const lm_rec *r = (const lm_rec *)(s->buf + s->ents[i].off);
        if (n + r->len > RUN_IO_BYTES) {
            rc = lm_write_all(fd, out, n, path, err);
            n = 0;
        }
        memcpy(out + n, r, r->len);
        n += r->len;
    }
    if (!rc && n) rc = lm_write_all(fd, out, n, path, err);
    free(out);
    if (close(fd) != 0 && !rc) rc = lm_err_errno(err, LM_EIO, "%s: close", path);
    s->used = 0;
    s->nents = 0;
    return rc;
}

int lm_sorter_reserve(lm_sorter *s, uint32_t len, lm_rec **rec, lm_err *err)
{
    LM_ASSERT(s->mode == 0 && len % 8 == 0);
    if (len > s->buf_cap / 4)
        return lm_err_set(err, LM_ELIMIT, "record of %u bytes too large for the sort buffer", len);
    if (s->used + len > s->buf_cap || s->nents + 1 > s->ents_cap) {
        int rc = spill(s, err);
        if (rc) return rc;
    }
    *rec = (lm_rec *)(s->buf + s->used);
    (*rec)->len = len;
    return LM_OK;
}

void lm_sorter_commit(lm_sorter *s)
{
    lm_rec *r = (lm_rec *)(s->buf + s->used);
    s->ents[s->nents++] = (entry){r->hash, r->time, lm_rec_tie(r), s->used};
    s->used += r->len;
    if ((s->nents & 1023) == 0) { /* tell the prefault thread, now and then */
        atomic_store_explicit(&s->pf.used[0], s->used, memory_order_relaxed);
        atomic_store_explicit(&s->pf.used[1], s->nents * sizeof(entry), memory_order_relaxed);
        atomic_store_explicit(&s->pf.used[2], s->nents * sizeof(entry), memory_order_relaxed);
    }
    size_t live = s->used + s->nents * 2 * sizeof(entry);
    if (live > s->peak) s->peak = live;
}

/* ---- reading runs back ----------------------------------------------------------------- */

static int reader_fill(run_reader *r, const char *path, lm_err *err)
{
    if (r->beg > 0) {
        memmove(r->buf, r->buf + r->beg, r->end - r->beg);
        r->end -= r->beg;
        r->beg = 0;
    }
    while (!r->eof && r->end < r->cap) {
        ssize_t got = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (got < 0) {
            if (errno == EINTR) continue;
            return lm_err_errno(err, LM_EIO, "%s: read", path);
        }
        if (got == 0) r->eof = 1;
        r->end += (size_t)got;
    }
    return LM_OK;
}

/* Advance reader `i` to its next record (cur = NULL at its end). */
static int reader_next(lm_sorter *s, size_t i, lm_err *err)
{
    run_reader *r = &s->readers[i];
    if (r->cur) r->beg += r->cur->len;
    r->cur = NULL;
    if (r->end - r->beg < sizeof(lm_rec) || r->end - r->beg < ((const lm_rec *)(r->buf + r->beg))->len) {
        int rc = reader_fill(r, s->run_paths[i], err);
        if (rc) return rc;
    }
    if (r->end == r->beg) return LM_OK;
    const lm_rec *rec = (const lm_rec *)(r->buf + r->beg);
    if (r->end - r->beg < sizeof(lm_rec) || rec->len > r->end - r->beg || rec->len < sizeof(lm_rec))
        return lm_err_set(err, LM_EFORMAT, "%s: truncated sort run", s->run_paths[i]);
    r->cur = rec;
    return LM_OK;
}

static int heap_less(lm_sorter *s, size_t a, size_t b)
{
    int c = cmp_rec(s->readers[a].cur, s->readers[b].cur);
    return c < 0 || (c == 0 && a < b);
}

static void heap_down(lm_sorter *s, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->nheap && heap_less(s, s->heap[l], s->heap[m])) m = l;
        if (r < s->nheap && heap_less(s, s->heap[r], s->heap[m])) m = r;
        if (m == i) return;
        size_t t = s->heap[i];
        s->heap[i] = s->heap[m];
        s->heap[m] = t;
        i = m;
    }
}

int lm_sorter_finish(lm_sorter *s, lm_err *err)
{
    LM_ASSERT(s->mode == 0);
    if (s->nruns == 0) {
        sort_buffer(s);
        s->mode = 1;
        s->pos = 0;
        return LM_OK;
    }
    if (s->nents) {
        int rc = spill(s, err);
        if (rc) return rc;
    }
    /* Merge: give the records buffer back and split the budget among the run readers. */
    prefault_join(s);
    free(s->buf);
    s->buf = NULL;
    free(s->ents);
    free(s->tmp);
    s->ents = s->tmp = NULL;
    size_t per = s->mem / (s->nruns + 1);
    if (per > (16u << 20)) per = 16u << 20;
    if (per < (256u << 10)) per = 256u << 10;
    s->readers = calloc(s->nruns, sizeof *s->readers);
    s->heap = calloc(s->nruns, sizeof *s->heap);
    if (!s->readers || !s->heap) return lm_err_set(err, LM_ENOMEM, "out of memory");
    for (size_t i = 0; i < s->nruns; i++) s->readers[i].fd = -1;
    for (size_t i = 0; i < s->nruns; i++) {
        run_reader *r = &s->readers[i];
        r->cap = per;
        r->buf = malloc(per);
        if (!r->buf) return lm_err_set(err, LM_ENOMEM, "out of memory");
        r->fd = open(s->run_paths[i], O_RDONLY | O_CLOEXEC);
        if (r->fd < 0) return lm_err_errno(err, LM_EIO, "%s: open", s->run_paths[i]);
        int rc = reader_next(s, i, err);
        if (rc) return rc;
        if (r->cur) s->heap[s->nheap++] = i;
    }
    for (size_t i = s->nheap; i-- > 0;) heap_down(s, i);
    s->mode = 2;
    return LM_OK;
}

const lm_rec *lm_sorter_next(lm_sorter *s, int *rc, lm_err *err)
{
    *rc = LM_OK;
    if (s->mode == 1) {
        if (s->pos >= s->nents) return NULL;
        if (s->pos + 16 < s->nents) {
            __builtin_prefetch(s->buf + s->ents[s->pos + 16].off);
            __builtin_prefetch(s->buf + s->ents[s->pos + 16].off + 64);
        }
        return (const lm_rec *)(s->buf + s->ents[s->pos++].off);
    }
    LM_ASSERT(s->mode == 2 || s->mode == 3);
    if (s->mode == 3) {
        /* advance the reader whose record was returned last time */
        size_t i = s->heap[0];
        if ((*rc = reader_next(s, i, err))) return NULL;
        if (!s->readers[i].cur) s->heap[0] = s->heap[--s->nheap];
        if (s->nheap) heap_down(s, 0);
    }
    s->mode = 3;
    if (!s->nheap) return NULL;
    return s->readers[s->heap[0]].cur;
}

uint64_t lm_sorter_runs(const lm_sorter *s)
{
    return s->nruns;
}
size_t lm_sorter_peak_bytes(const lm_sorter *s)
{
    return s->peak;
}

void lm_sorter_free(lm_sorter *s)
{
    if (!s) return;
    prefault_join(s);
    for (size_t i = 0; s->readers && i < s->nruns; i++) {
        if (s->readers[i].fd >= 0) close(s->readers[i].fd);
        free(s->readers[i].buf);
    }
    free(s->readers);
    free(s->heap);
    for (size_t i = 0; i < s->nruns; i++) {
        unlink(s->run_paths[i]);
        free(s->run_paths[i]);
    }
    free(s->run_paths);
    if (s->tmp_dir) rmdir(s->tmp_dir);
    free(s->buf);
    free(s->ents);
    free(s->tmp);
    free(s->counts);
    free(s->tmp_dir);
    free(s);
}
