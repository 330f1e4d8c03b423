/* rates.c: the history rates of categorical columns ("rates" in the schema), filled into a
 * dataset file prepare has just written, before it is published.
 *
 * A rate needs every training row before any row can be written, while prepare writes rows as
 * it groups them; so the rates are a second pass over the finished file (memory-mapped), then
 * the checksums are recomputed. Memory is the rate tables only: (folds + 1) cells per bucket.
 *
 * The pool is the training rows (support and query) of warm tasks. Tasks fall into `folds`
 * folds by a hash of their key; a training row gets the figures of the pool without its own
 * fold (out-of-fold target encoding: no row sees its own label, nor its task's other labels,
 * which a model would otherwise learn to read back), every other row the whole pool's. The
 * smoothing prior follows the same rule: a training row's is the mean label of the pool without
 * its fold (as scikit-learn's TargetEncoder does), since the whole pool's holds its label. The
 * whole pool's figures are also written to rates_COLUMN.csv beside the dataset, the table a
 * serving pipeline joins to its candidates. */
#include "data/dsfile.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define RATE_MAX_CELLS ((uint64_t)1 << 26) /* buckets * (folds + 1): 1 GiB of tables */
#define RATE_FOLD_SEED 0x666f6c64ull

typedef struct cell {
    double pos;
    uint64_t n;
} cell;

static double rate_of(const cell *c, double a, double g)
{
    return (c->pos + a * g) / ((double)c->n + a);
}

static float logcount_of(const cell *c)
{
    return (float)(log1p((double)c->n) / 10.0);
}

static int is_train(uint32_t split)
{
    return split == LM_SPLIT_SUPPORT || split == LM_SPLIT_QUERY;
}

/* The whole pool's figures as CSV: bucket,rate,logcount,count,positives. */
static int write_table(const char *dir, const lm_rate_spec *rs, const cell *all, uint32_t buckets, double g,
                       lm_err *err)
{
    /* a line is at most 10 + 3 * 16 + 20 + 5 = 83 bytes (%.9g is at most 16 characters) */
    enum { LINE = 128 };
    size_t cap = ((size_t)buckets + 1) * LINE, n = 0;
    char *buf = malloc(cap), name[512];
    if (!buf) return lm_err_set(err, LM_ENOMEM, "out of memory");
    n += (size_t)snprintf(buf, LINE, "bucket,rate,logcount,count,positives\n");
    for (uint32_t b = 0; b < buckets; b++) {
        int k = snprintf(buf + n, LINE, "%u,%.9g,%.9g,%llu,%.9g\n", b, rate_of(&all[b], rs->smoothing, g),
                         (double)logcount_of(&all[b]), (unsigned long long)all[b].n, all[b].pos);
        n += (size_t)LM_MIN(k, LINE - 1);
    }
    snprintf(name, sizeof name, "rates_%s.csv", rs->column);
    char *path = lm_path_join(dir, name);
    int rc = path ? lm_write_file_atomic(path, buf, n, err) : lm_err_set(err, LM_ENOMEM, "out of memory");
    free(path);
    free(buf);
    return rc;
}

/* One rate: count the pool per (bucket, fold), then fill both features of every row. */
static int fill_one(char *base, const lm_ds_header *h, const lm_schema *s, size_t r, const char *dir,
                    lm_err *err)
{
    const lm_rate_spec *rs = &s->rate[r];
    uint32_t buckets = s->cat[rs->cat].buckets, F = rs->folds;
    if ((uint64_t)buckets * (F + 1) > RATE_MAX_CELLS)
        return lm_err_set(err, LM_EINVAL,
                          "rates: column '%s' has %u buckets and %u folds: more than %llu table cells",
                          rs->column, buckets, F, (unsigned long long)RATE_MAX_CELLS);
    /* cells[b * (F + 1) + f]: fold f's count for bucket b; f = F: the whole pool */
    cell *cells = calloc((size_t)buckets * (F + 1), sizeof *cells);
    cell *all = malloc((size_t)buckets * sizeof *all);
    if (!cells || !all) {
        free(cells), free(all);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    const lm_task *tasks = (const lm_task *)(base + h->tasks_off);
    const char *keys = base + h->keys_off;
    char *rows = base + h->rows_off;
    uint32_t cat_off = LM_DS_ROW_FIXED + 4u * (h->nmeta + h->ndense) + 4u * rs->cat;
    uint32_t rate_off = LM_DS_ROW_FIXED + 4u * (h->nmeta + h->ndense - 2u * (uint32_t)(s->nrate - r));
    /* each fold's totals (for the prior of the rows that leave it out), then the pool's */
    double *fold_pos = calloc(F, sizeof *fold_pos);
    uint64_t *fold_n = calloc(F, sizeof *fold_n);
    if (!fold_pos || !fold_n) {
        free(cells), free(all), free(fold_pos), free(fold_n);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    double pos = 0;
    uint64_t npool = 0;
    for (uint64_t t = 0; t < h->ntasks; t++) {
        const lm_task *k = &tasks[t];
        uint32_t f = (uint32_t)(lm_hash64(keys + k->key_off, k->key_len, RATE_FOLD_SEED) % F);
        for (uint32_t i = 0; i < k->n; i++) {
            const char *row = rows + (k->first + i) * h->row_bytes;
            uint32_t split, b;
            float y;
            memcpy(&split, row + 12, 4);
            if (k->is_new || !is_train(split)) continue;
            memcpy(&y, row + 8, 4);
            memcpy(&b, row + cat_off, 4);
            cell *c = &cells[(size_t)b * (F + 1) + f];
            c->pos += y, c->n++;
            fold_pos[f] += y, fold_n[f]++;
        }
    }
    for (uint32_t f = 0; f < F; f++) pos += fold_pos[f], npool += fold_n[f];
    double g = npool ? pos / (double)npool : 0.5;
    for (uint32_t b = 0; b < buckets; b++) {
        all[b] = (cell){0, 0};
        for (uint32_t f = 0; f < F; f++)
            all[b].pos += cells[(size_t)b * (F + 1) + f].pos, all[b].n += cells[(size_t)b * (F + 1) + f].n;
    }
    for (uint64_t t = 0; t < h->ntasks; t++) {
        const lm_task *k = &tasks[t];
        uint32_t f = (uint32_t)(lm_hash64(keys + k->key_off, k->key_len, RATE_FOLD_SEED) % F);
        for (uint32_t i = 0; i < k->n; i++) {
            char *row = rows + (k->first + i) * h->row_bytes;
            uint32_t split, b;
            memcpy(&split, row + 12, 4);
            memcpy(&b, row + cat_off, 4);
            cell c = all[b];
            double prior = g;
            if (!k->is_new && is_train(split)) {
                c.pos -= cells[(size_t)b * (F + 1) + f].pos;
                c.n -= cells[(size_t)b * (F + 1) + f].n;
                /* the prior too leaves the fold out: the whole pool's mean holds this label */
                uint64_t n_oof = npool - fold_n[f];
                prior = n_oof ? (pos - fold_pos[f]) / (double)n_oof : 0.5;
            }
            float v[2] = {(float)rate_of(&c, rs->smoothing, prior), logcount_of(&c)};
            memcpy(row + rate_off, v, sizeof v);
        }
    }
    int rc = write_table(dir, rs, all, buckets, g, err);
    free(cells);
    free(all);
    free(fold_pos);
    free(fold_n);
    return rc;
}

int lm_ds_fill_rates(const char *dir, const lm_schema *s, lm_err *err)
{
    char *path = lm_path_join(dir, LM_DS_FILE);
    if (!path) return lm_err_set(err, LM_ENOMEM, "out of memory");
    int fd = open(path, O_RDWR | O_CLOEXEC), rc = LM_OK;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = lm_err_errno(err, LM_EIO, "%s: cannot open", path);
        if (fd >= 0) close(fd);
        free(path);
        return rc;
    }
    char *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        rc = lm_err_errno(err, LM_EIO, "%s: cannot map", path);
        close(fd);
        free(path);
        return rc;
    }
    lm_ds_header h;
    memcpy(&h, base, sizeof h);
    if (h.file_bytes != (uint64_t)st.st_size || h.ndense < 2 * s->nrate)
        rc = lm_err_set(err, LM_EINVAL, "%s: not the dataset the schema describes", path);
    for (size_t r = 0; !rc && r < s->nrate; r++) rc = fill_one(base, &h, s, r, dir, err);
    if (!rc) {
        lm_checksum *ck = lm_checksum_new();
        if (!ck) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
        if (!rc) {
            lm_checksum_update(ck, base + LM_DS_HEADER_BYTES, h.file_bytes - LM_DS_HEADER_BYTES);
            h.checksum = lm_checksum_digest(ck);
            lm_checksum_free(ck);
            /* as lm_dswriter_finish: the header's hash with its own field zeroed */
            char hdr[LM_DS_HEADER_BYTES] = {0};
            h.header_checksum = 0;
            memcpy(hdr, &h, sizeof h);
            h.header_checksum = lm_hash64(hdr, sizeof hdr, 0);
            memcpy(base, &h, sizeof h);
        }
    }
    if (!rc && msync(base, (size_t)st.st_size, MS_SYNC) != 0)
        rc = lm_err_errno(err, LM_EIO, "%s: msync", path);
    munmap(base, (size_t)st.st_size);
    if (!rc && fsync(fd) != 0) rc = lm_err_errno(err, LM_EIO, "%s: fsync", path);
    close(fd);
    free(path);
    return rc;
}
