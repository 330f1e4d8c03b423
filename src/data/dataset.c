/* dataset.c: reading a dataset file through a read-only memory map. */
#include "data/dsfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct lm_dataset {
    char *path;
    const char *map;
    size_t map_len;
    lm_ds_header h;
    const lm_task *tasks;
    const char *keys;
    lm_schema *schema;
};

const char *lm_split_name(int split)
{
    static const char *names[] = {"support", "query", "val", "test"};
    return split >= 0 && split < LM_SPLIT_COUNT ? names[split] : "?";
}

static int bad(lm_dataset *d, lm_err *err, int code, const char *what)
{
    return lm_err_set(err, code, "%s: %s", d->path, what);
}

static int check_layout(lm_dataset *d, lm_err *err)
{
    const lm_ds_header *h = &d->h;
    if (h->file_bytes != d->map_len)
        return bad(d, err, LM_EFORMAT, "truncated or extended (size differs from its header)");
    if (h->header_bytes != LM_DS_HEADER_BYTES || h->rows_off != LM_DS_HEADER_BYTES)
        return bad(d, err, LM_EFORMAT, "bad header layout");
    if (h->row_bytes != lm_ds_row_bytes(h->nmeta + h->ndense, h->ncat))
        return bad(d, err, LM_EFORMAT, "bad row size");
    uint64_t rows_end = h->rows_off + h->nrows * (uint64_t)h->row_bytes;
    if (h->nrows > (UINT64_MAX / 2) / (h->row_bytes ? h->row_bytes : 1) || rows_end > h->tasks_off ||
        h->tasks_off % 8 || h->tasks_off + h->ntasks * sizeof(lm_task) > h->keys_off ||
        h->keys_off + h->keys_len > h->schema_off || h->schema_off + h->schema_len > h->info_off ||
        h->info_off + h->info_len > h->file_bytes)
        return bad(d, err, LM_EFORMAT, "sections overlap or run past the end");
    return LM_OK;
}

/* Each task's rows and keys must stay inside the file: a reader trusts them afterwards. */
static int check_tasks(lm_dataset *d, lm_err *err)
{
    uint64_t next = 0;
    for (uint64_t t = 0; t < d->h.ntasks; t++) {
        const lm_task *k = &d->tasks[t];
        uint64_t sum = 0;
        for (int s = 0; s < LM_SPLIT_COUNT; s++) sum += k->nsplit[s];
        if (k->first != next || k->first + k->n > d->h.nrows || sum != k->n ||
            k->key_off + k->key_len > d->h.keys_len)
            return lm_err_set(err, LM_EFORMAT, "%s: task %llu is inconsistent", d->path,
                              (unsigned long long)t);
        next = k->first + k->n;
    }
    if (next != d->h.nrows) return bad(d, err, LM_EFORMAT, "tasks do not cover every row");
    return LM_OK;
}

int lm_dataset_open(lm_dataset **out, const char *dir, int flags, lm_err *err)
{
    *out = NULL;
    lm_dataset *d = calloc(1, sizeof *d);
    if (!d) return lm_err_set(err, LM_ENOMEM, "out of memory");
    struct stat st;
    int rc = LM_OK;
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        d->path = lm_path_join(dir, LM_DS_FILE);
    else
        d->path = lm_strdup(dir);
    if (!d->path) {
        free(d);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    int fd = open(d->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = lm_err_errno(err, errno == ENOENT ? LM_ENOTFOUND : LM_EIO, "%s: cannot open dataset", d->path);
        lm_dataset_close(d);
        return rc;
    }
    if (fstat(fd, &st) != 0)
        rc = lm_err_errno(err, LM_EIO, "%s: stat", d->path);
    else if ((size_t)st.st_size < LM_DS_HEADER_BYTES)
        rc = bad(d, err, LM_EFORMAT, "too short to be a dataset");
    if (!rc) {
        d->map_len = (size_t)st.st_size;
        void *m = mmap(NULL, d->map_len, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
            rc = lm_err_errno(err, LM_EIO, "%s: mmap", d->path);
        else
            d->map = m;
    }
    close(fd);
    if (!rc) {
        memcpy(&d->h, d->map, sizeof d->h);
        if (memcmp(d->h.magic, LM_DS_MAGIC, 8) != 0)
            rc = bad(d, err, LM_EFORMAT, "not a limaml dataset (bad magic)");
        else if (d->h.version != LM_DS_VERSION)
            rc = lm_err_set(err, LM_EVERSION, "%s: dataset version %u, this build reads version %u", d->path,
                            d->h.version, LM_DS_VERSION);
    }
    if (!rc) {
        char hdr[LM_DS_HEADER_BYTES];
        memcpy(hdr, d->map, sizeof hdr);
        lm_ds_header *hh = (lm_ds_header *)hdr;
        hh->header_checksum = 0;
        if (lm_hash64(hdr, sizeof hdr, 0) != d->h.header_checksum)
            rc = bad(d, err, LM_EFORMAT, "header checksum mismatch (corrupt file)");
    }
    if (!rc) rc = check_layout(d, err);
    if (!rc && (flags & LM_DATASET_VERIFY)) {
        /* XXH3 of the whole body equals the writer's streamed digest. */
        uint64_t sum = lm_hash64(d->map + LM_DS_HEADER_BYTES, d->map_len - LM_DS_HEADER_BYTES, 0);
        if (sum != d->h.checksum) rc = bad(d, err, LM_EFORMAT, "checksum mismatch (corrupt file)");
    }
    if (!rc) {
        d->tasks = (const lm_task *)(d->map + d->h.tasks_off);
        d->keys = d->map + d->h.keys_off;
        rc = check_tasks(d, err);
    }
    if (!rc) {
        lm_err e2 = {0};
        rc = lm_schema_parse(&d->schema, d->map + d->h.schema_off, d->h.schema_len, NULL, &e2);
        if (rc)
            rc = lm_err_set(err, LM_EFORMAT, "%s: stored schema: %s", d->path, e2.msg);
        else if (d->schema->nmeta != d->h.nmeta || d->schema->ndense != d->h.ndense ||
                 d->schema->ncat != d->h.ncat)
            rc = bad(d, err, LM_EFORMAT, "stored schema does not match the row layout");
    }
    if (rc) {
        lm_dataset_close(d);
        return rc;
    }
    *out = d;
    return LM_OK;
}

void lm_dataset_close(lm_dataset *d)
{
    if (!d) return;
    if (d->map) munmap((void *)d->map, d->map_len);
    lm_schema_free(d->schema);
    free(d->path);
    free(d);
}

uint64_t lm_dataset_ntasks(const lm_dataset *d)
{
    return d->h.ntasks;
}
uint64_t lm_dataset_nrows(const lm_dataset *d)
{
    return d->h.nrows;
}
uint32_t lm_dataset_nmeta(const lm_dataset *d)
{
    return d->h.nmeta;
}
uint32_t lm_dataset_ndense(const lm_dataset *d)
{
    return d->h.ndense;
}
uint32_t lm_dataset_ncat(const lm_dataset *d)
{
    return d->h.ncat;
}
const lm_schema *lm_dataset_schema(const lm_dataset *d)
{
    return d->schema;
}
size_t lm_dataset_row_stride(const lm_dataset *d)
{
    return d->h.row_bytes;
}

const lm_task *lm_dataset_task(const lm_dataset *d, uint64_t t)
{
    LM_ASSERT(t < d->h.ntasks);
    return &d->tasks[t];
}

const char *lm_dataset_task_key(const lm_dataset *d, const lm_task *task, size_t *len)
{
    *len = task->key_len;
    return d->keys + task->key_off;
}

lm_row_view lm_dataset_row(const lm_dataset *d, uint64_t i)
{
    LM_ASSERT(i < d->h.nrows);
    const char *r = d->map + d->h.rows_off + i * (uint64_t)d->h.row_bytes;
    lm_row_view v;
    memcpy(&v.time, r, 8);
    memcpy(&v.label, r + 8, 4);
    uint32_t sp;
    memcpy(&sp, r + 12, 4);
    v.split = (int)sp;
    v.meta = (const float *)(r + LM_DS_ROW_FIXED);
    v.dense = v.meta + d->h.nmeta;
    v.cat = (const uint32_t *)(v.dense + d->h.ndense);
    return v;
}

const char *lm_dataset_info_json(const lm_dataset *d, size_t *len)
{
    *len = d->h.info_len;
    return d->map + d->h.info_off;
}

/* Tasks are stored in prepare's grouping order, (hash of the key, key length, key bytes), so
 * a key is found by binary search, hashing log(n) candidate keys. */
int lm_dataset_find_task(const lm_dataset *d, const char *key, size_t len, uint64_t *task)
{
    uint64_t h = lm_hash64(key, len, 0);
    uint64_t lo = 0, hi = d->h.ntasks;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        const lm_task *t = &d->tasks[mid];
        const char *k = d->keys + t->key_off;
        uint64_t kh = lm_hash64(k, t->key_len, 0);
        int c = kh < h ? -1 : kh > h ? 1 : 0;
        if (!c) c = t->key_len < len ? -1 : t->key_len > len ? 1 : memcmp(k, key, len);
        if (!c) {
            *task = mid;
            return LM_OK;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return LM_ENOTFOUND;
}
