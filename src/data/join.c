/* join.c: feature tables (users.csv, items.csv) loaded into a hash map keyed by the join
 * column, so each log row finds its features in one probe. */
#include "data/join.h"

#include <string.h>

#define JT_MAX_COLS 4096

uint32_t lm_cat_id(const char *p, size_t len, uint32_t buckets)
{
    uint64_t v = 0;
    size_t i = 0;
    while (i < len && p[i] == ' ') i++;
    size_t j = len;
    while (j > i && (p[j - 1] == ' ' || p[j - 1] == '\r')) j--;
    int ok = i < j && j - i <= 18;
    for (size_t k = i; ok && k < j; k++) {
        unsigned d = (unsigned)(p[k] - '0');
        if (d > 9)
            ok = 0;
        else
            v = v * 10 + d;
    }
    if (ok && v < buckets) return (uint32_t)v;
    return (uint32_t)(lm_hash64(p + i, j - i, 0x6c696d616d6cull) % buckets);
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

int lm_jtable_open(lm_jtable *t, const lm_join_spec *spec, lm_err *err)
{
    memset(t, 0, sizeof *t);
    t->spec = spec;
    if (spec->header) {
        lm_csv *r;
        int rc = lm_csv_open(&r, spec->file, spec->delimiter, err);
        if (rc) return rc;
        lm_field *f = malloc(sizeof(lm_field) * (JT_MAX_COLS + 1));
        size_t n = 0;
        if (!f) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
        if (!rc) {
            rc = lm_csv_next(r, f, JT_MAX_COLS, &n, err);
            if (rc == 0)
                rc = lm_err_set(err, LM_EINVAL, "%s: empty file (a header line was expected)", spec->file);
            else if (rc == 1)
                rc = LM_OK;
        }
        if (!rc && n > JT_MAX_COLS)
            rc = lm_err_set(err, LM_EINVAL, "%s:1: more than %d columns", spec->file, JT_MAX_COLS);
        if (!rc) {
            t->names = calloc(n, sizeof(char *));
            if (!t->names) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
            for (size_t i = 0; !rc && i < n; i++) {
                if (!(t->names[i] = lm_strndup(f[i].p, f[i].len)))
                    rc = lm_err_set(err, LM_ENOMEM, "out of memory");
                t->nnames = i + 1;
                for (size_t k = 0; !rc && k < i; k++)
                    if (!strcmp(t->names[k], t->names[i]))
                        rc = lm_err_set(err, LM_EINVAL, "%s:1:%zu: duplicated header '%s' (also column %zu)",
                                        spec->file, i + 1, t->names[i], k + 1);
            }
        }
        free(f);
        lm_csv_close(r);
        if (rc) {
            lm_jtable_free(t);
            return rc;
        }
    } else {
        t->names = calloc(spec->ncolumns, sizeof(char *));
        if (!t->names) return lm_err_set(err, LM_ENOMEM, "out of memory");
        for (size_t i = 0; i < spec->ncolumns; i++) {
            if (!(t->names[i] = lm_strdup(spec->columns[i]))) {
                lm_jtable_free(t);
                return lm_err_set(err, LM_ENOMEM, "out of memory");
            }
            t->nnames = i + 1;
        }
    }
    for (t->key_col = 0; t->key_col < t->nnames; t->key_col++)
        if (!strcmp(t->names[t->key_col], spec->on)) return LM_OK;
    int rc = lm_err_set(err, LM_ENOTFOUND, "%s: the join key column '%s' is not among its columns",
                        spec->file, spec->on);
    lm_jtable_free(t);
    return rc;
}

static int64_t probe(const lm_jtable *t, const char *key, size_t len, uint64_t h, size_t *slot)
{
    size_t mask = t->nslots - 1, i = (size_t)h & mask;
    for (;;) {
        uint32_t v = t->slots[i];
        if (!v) {
            *slot = i;
            return -1;
        }
        size_t row = v - 1;
        uint64_t a = t->key_off[row], b = t->key_off[row + 1];
        if (b - a == len && !memcmp(t->keys + a, key, len)) {
            *slot = i;
            return (int64_t)row;
        }
        i = (i + 1) & mask;
    }
}

int64_t lm_jtable_find(const lm_jtable *t, const char *key, size_t len)
{
    size_t slot;
    if (!t->nslots) return -1;
    return probe(t, key, len, lm_hash64(key, len, 0), &slot);
}

static int rehash(lm_jtable *t, size_t nslots, lm_err *err)
{
    uint32_t *s = calloc(nslots, sizeof *s);
    if (!s) return lm_err_set(err, LM_ENOMEM, "out of memory");
    free(t->slots);
    t->slots = s;
    t->nslots = nslots;
    for (size_t r = 0; r < t->nrows; r++) {
        uint64_t a = t->key_off[r], b = t->key_off[r + 1];
        size_t slot;
        probe(t, t->keys + a, (size_t)(b - a), lm_hash64(t->keys + a, (size_t)(b - a), 0), &slot);
        t->slots[slot] = (uint32_t)(r + 1);
    }
    return LM_OK;
}

int lm_jtable_load(lm_jtable *t, const uint32_t *need, const int *kinds, const uint32_t *buckets,
                   uint32_t nneed, lm_err *err)
{
    const lm_join_spec *spec = t->spec;
    lm_csv *r;
    int rc = lm_csv_open(&r, spec->file, spec->delimiter, err);
    if (rc) return rc;
    size_t ncol = t->nnames;
    lm_field *f = malloc(sizeof(lm_field) * (ncol + 1));
    size_t cap_rows = 0, cap_keys = 0, keys_len = 0, cap_off = 0, cap_cells = 0;
    t->nneed = nneed;
    if (!f) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    int first = 1;
    while (!rc) {
        size_t n;
        int got = lm_csv_next(r, f, ncol, &n, err);
        if (got < 0) {
            rc = got;
            break;
        }
        if (got == 0) break;
        uint64_t line = lm_csv_line(r);
        if (first && spec->header) {
            first = 0;
            continue;
        }
        first = 0;
        if (n != ncol) {
            rc = lm_err_set(err, LM_EINVAL, "%s:%llu:%zu: expected %zu columns, found %zu", spec->file,
                            (unsigned long long)line, LM_MIN(n, ncol) + 1, ncol, n);
            break;
        }
        size_t row = t->nrows;
        if (lm_grow((void **)&t->key_off, &cap_off, row + 2, sizeof(uint64_t)) ||
            lm_grow((void **)&t->cells, &cap_cells, (row + 1) * nneed + 1, sizeof(uint32_t)) ||
            lm_grow((void **)&t->keys, &cap_keys, keys_len + f[t->key_col].len + 1, 1)) {
            rc = lm_err_set(err, LM_ENOMEM, "out of memory");
            break;
        }
        (void)cap_rows;
        const lm_field *k = &f[t->key_col];
        if (k->len == 0) {
            rc = lm_err_set(err, LM_EINVAL, "%s:%llu:%zu: empty key '%s'", spec->file,
                            (unsigned long long)line, t->key_col + 1, spec->on);
            break;
        }
        t->key_off[row] = keys_len;
        memcpy(t->keys + keys_len, k->p, k->len);
        keys_len += k->len;
        t->key_off[row + 1] = keys_len;
        for (uint32_t c = 0; c < nneed; c++) {
            const lm_field *v = &f[need[c]];
            uint32_t cell;
            if (kinds[c] == LM_COL_CAT) {
                if (!v->len) {
                    rc = lm_err_set(err, LM_EINVAL, "%s:%llu:%u: column '%s': empty value", spec->file,
                                    (unsigned long long)line, need[c] + 1, t->names[need[c]]);
                    break;
                }
                cell = lm_cat_id(v->p, v->len, buckets[c]);
            } else {
                double d;
                int pr = lm_parse_f64(v->p, v->len, &d);
                float fl = (float)d;
                if (pr == LM_NUM_OK && !(fl - fl == 0)) pr = LM_NUM_NONFINITE;
                if (pr != LM_NUM_OK) {
                    rc = lm_err_set(err, LM_EINVAL, "%s:%llu:%u: column '%s': %s: \"%.*s\"", spec->file,
                                    (unsigned long long)line, need[c] + 1, t->names[need[c]], lm_num_what(pr),
                                    (int)LM_MIN(v->len, 40u), v->p);
                    break;
                }
                memcpy(&cell, &fl, 4);
            }
            t->cells[row * nneed + c] = cell;
        }
        if (rc) break;
        t->nrows = row + 1;
        if (t->nrows >= UINT32_MAX - 1) {
            rc = lm_err_set(err, LM_ELIMIT, "%s: more than 4 billion rows in a feature table", spec->file);
            break;
        }
        /* Keep the map at most half full; check duplicates as rows arrive. */
        if (t->nrows * 2 > t->nslots) {
            if ((rc = rehash(t, t->nslots ? t->nslots * 2 : 1024, err))) break;
        } else {
            size_t slot;
            uint64_t h = lm_hash64(k->p, k->len, 0);
            int64_t dup = probe(t, t->keys + t->key_off[row], k->len, h, &slot);
            if (dup >= 0) {
                rc = lm_err_set(err, LM_EINVAL, "%s:%llu:%zu: key '%.*s' appears twice", spec->file,
                                (unsigned long long)line, t->key_col + 1, (int)LM_MIN(k->len, 60u), k->p);
                break;
            }
            t->slots[slot] = (uint32_t)(row + 1);
        }
    }
    /* A rehash places rows without checking duplicates: check them once at the end. */
    if (!rc) {
        for (size_t row = 0; row < t->nrows; row++) {
            uint64_t a = t->key_off[row], b = t->key_off[row + 1];
            if (lm_jtable_find(t, t->keys + a, (size_t)(b - a)) != (int64_t)row) {
                rc = lm_err_set(err, LM_EINVAL, "%s: key '%.*s' appears twice", spec->file,
                                (int)LM_MIN(b - a, 60u), t->keys + a);
                break;
            }
        }
    }
    if (!rc && t->nrows == 0) rc = lm_err_set(err, LM_EINVAL, "%s: no data rows", spec->file);
    free(f);
    lm_csv_close(r);
    return rc;
}

void lm_jtable_free(lm_jtable *t)
{
    if (!t) return;
    if (t->names) free_names(t->names, t->nnames);
    free(t->cells);
    free(t->keys);
    free(t->key_off);
    free(t->slots);
    memset(t, 0, sizeof *t);
}
