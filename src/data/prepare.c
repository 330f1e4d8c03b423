/* prepare.c: `limaml prepare`. Three phases:
 *   1. parse: stream each input log, check every field, join the feature tables, and turn
 *      each row into a binary record handed to the external sorter;
 *   2. group: the sorter returns records ordered by (task, time); each task's records are
 *      windowed, capped, split (train/val/test, support/query) and written;
 *   3. publish: the dataset file is finished and its folder renamed into place.
 * Memory is the sort buffer plus the feature tables plus one task, whatever the input size. */
#include "data/csv.h"
#include "data/dswrite.h"
#include "data/join.h"
#include "data/runs.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_COLS 4096
#define SPLIT_NONE 255
#define SPLIT_TRAIN 254

void lm_prepare_opts_default(lm_prepare_opts *o)
{
    memset(o, 0, sizeof *o);
    o->train_frac = 0.6;
    o->val_frac = 0.2;
    o->new_val_frac = 0.5;
    o->support_frac = 0.75;
    o->new_rule = LM_NEWRULE_HASH;
    o->new_frac = 0.2;
    o->new_mod = 5;
    o->mem_bytes = (size_t)256 << 20;
}

/* Where a feature's value comes from: a log column or a joined table's kept column. */
typedef struct src {
    int table;    /* -1: the log, -3: a history rate (filled after grouping, rates.c) */
    uint32_t idx; /* log column, or column among the table's kept ones */
} src;

typedef struct prep {
    const lm_schema *s;
    const lm_prepare_opts *o;
    lm_prepare_summary *sum;
    lm_err *err;
    uint32_t nf, nc, payload;
    src *feat; /* nf + nc sources */
    lm_jtable *jt;
    size_t njt;
    uint32_t *jt_need_n; /* per table: kept columns */
    /* per input file */
    size_t ncols;
    char **cols;
    uint32_t task_col[64];
    uint32_t time_col, label_col, split_col, tie_col, *feat_col, *join_col;
    /* running */
    lm_sorter *sorter;
    double max_time;
    int have_time;
    char *key; /* scratch for the task key */
    size_t key_cap;
} prep;

/* ---- bad rows ----------------------------------------------------------------------------- */

/* Report a bad row: kept and skipped while skip_bad_rows allows, else the error. Returns
 * 1 to skip the row or a negative error. */
static int bad_row(prep *p, const char *file, uint64_t line, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int bad_row(prep *p, const char *file, uint64_t line, size_t col, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (p->sum->rows_bad < p->o->skip_bad_rows) {
        if (p->sum->rows_bad < LM_BAD_ROWS_KEPT) {
            char full[1024];
            snprintf(full, sizeof full, "%s:%llu:%zu: %s", file, (unsigned long long)line, col, what);
            memcpy(p->sum->bad_rows[p->sum->rows_bad], full, sizeof p->sum->bad_rows[0] - 1);
            p->sum->bad_rows[p->sum->rows_bad][sizeof p->sum->bad_rows[0] - 1] = 0;
        }
        p->sum->rows_bad++;
        return 1;
    }
    if (p->o->skip_bad_rows)
        return lm_err_set(p->err, LM_ELIMIT, "%s:%llu:%zu: %s (more than %llu bad rows)", file,
                          (unsigned long long)line, col, what, (unsigned long long)p->o->skip_bad_rows);
    return lm_err_set(p->err, LM_EINVAL, "%s:%llu:%zu: %s", file, (unsigned long long)line, col, what);
}

/* ---- columns -------------------------------------------------------------------------------- */

static int find_col(char **cols, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(cols[i], name)) return (int)i;
    return -1;
}

static const char *feat_name(const lm_schema *s, uint32_t i)
{
    if (i < s->nmeta) return s->meta[i];
    i -= (uint32_t)s->nmeta;
    if (i < s->ndense) return s->dense[i];
    return s->cat[i - s->ndense].column;
}

static const char *feat_role(const lm_schema *s, uint32_t i)
{
    return i < s->nmeta ? "meta" : i < s->nmeta + s->ndense ? "dense" : "categorical";
}

/* Decide, once, which features come from which joined table (a column the log lacks), and
 * load those tables. The log's own columns are checked per input file. */
static int setup_joins(prep *p, char **logcols, size_t nlog, const char *logname)
{
    const lm_schema *s = p->s;
    p->njt = s->njoin;
    if (!p->njt) return LM_OK;
    p->jt = calloc(p->njt, sizeof *p->jt);
    p->jt_need_n = calloc(p->njt, sizeof *p->jt_need_n);
    if (!p->jt || !p->jt_need_n) return lm_err_set(p->err, LM_ENOMEM, "out of memory");
    for (size_t j = 0; j < p->njt; j++) {
        int rc = lm_jtable_open(&p->jt[j], &s->join[j], p->err);
        if (rc) return rc;
        if (find_col(logcols, nlog, s->join[j].on) < 0)
            return lm_err_set(p->err, LM_ENOTFOUND,
                              "%s: the join key column '%s' (of %s) is not in the header", logname,
                              s->join[j].on, s->join[j].file);
    }
    uint32_t nfeat = p->nf + p->nc;
    for (size_t j = 0; j < p->njt; j++) {
        uint32_t *need = calloc(nfeat + 1, sizeof *need), *bk = calloc(nfeat + 1, sizeof *bk);
        int *kinds = calloc(nfeat + 1, sizeof *kinds);
        uint32_t k = 0;
        if (!need || !bk || !kinds) {
            free(need), free(bk), free(kinds);
            return lm_err_set(p->err, LM_ENOMEM, "out of memory");
        }
        for (uint32_t f = 0; f < nfeat; f++) {
            if (p->feat[f].table != -2) continue; /* already placed */
            const char *name = feat_name(s, f);
            int c = find_col(p->jt[j].names, p->jt[j].nnames, name);
            if (c < 0 || (size_t)c == p->jt[j].key_col) continue;
            need[k] = (uint32_t)c;
            kinds[k] = f < p->nf ? LM_COL_FLOAT : LM_COL_CAT;
            bk[k] = f < p->nf ? 0 : s->cat[f - p->nf].buckets;
            p->feat[f] = (src){(int)j, k};
            k++;
        }
        p->jt_need_n[j] = k;
        int rc = lm_jtable_load(&p->jt[j], need, kinds, bk, k, p->err);
        free(need), free(bk), free(kinds);
        if (rc) return rc;
    }
    return LM_OK;
}

/* Read an input's header (or the schema's column names) and map every schema column. */
static int map_columns(prep *p, const char *file, lm_csv *r, lm_field *f, int first_file)
{
    const lm_schema *s = p->s;
    for (size_t i = 0; i < p->ncols; i++) free(p->cols[i]);
    free(p->cols);
    p->cols = NULL;
    p->ncols = 0;
    if (s->header) {
        size_t n;
        int got = lm_csv_next(r, f, MAX_COLS, &n, p->err);
        if (got < 0) return got;
        if (got == 0) return lm_err_set(p->err, LM_EINVAL, "%s: empty file", file);
        if (n > MAX_COLS) return lm_err_set(p->err, LM_EINVAL, "%s:1: more than %d columns", file, MAX_COLS);
        p->cols = calloc(n, sizeof(char *));
        if (!p->cols) return lm_err_set(p->err, LM_ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            p->cols[i] = lm_strndup(f[i].p, f[i].len);
            if (!p->cols[i]) return lm_err_set(p->err, LM_ENOMEM, "out of memory");
            p->ncols = i + 1;
            if (!f[i].len)
                return lm_err_set(p->err, LM_EINVAL, "%s:%llu:%zu: empty column name in the header", file,
                                  (unsigned long long)lm_csv_line(r), i + 1);
            int k = find_col(p->cols, i, p->cols[i]);
            if (k >= 0)
                return lm_err_set(p->err, LM_EINVAL, "%s:%llu:%zu: duplicated header '%s' (also column %d)",
                                  file, (unsigned long long)lm_csv_line(r), i + 1, p->cols[i], k + 1);
        }
    } else {
        p->cols = calloc(s->ncolumns, sizeof(char *));
        if (!p->cols) return lm_err_set(p->err, LM_ENOMEM, "out of memory");
        for (size_t i = 0; i < s->ncolumns; i++) {
            if (!(p->cols[i] = lm_strdup(s->columns[i])))
                return lm_err_set(p->err, LM_ENOMEM, "out of memory");
            p->ncols = i + 1;
        }
    }
    const char *where = s->header ? "header" : "schema's \"columns\"";
#define NEED(var, name, role)                                                                                \
    do {                                                                                                     \
        int c_ = find_col(p->cols, p->ncols, (name));                                                        \
        if (c_ < 0)                                                                                          \
            return lm_err_set(p->err, LM_ENOTFOUND,                                                          \
                              "%s: column '%s' (%s in the schema %s) is not in the %s", file, (name),        \
                              (role), s->path ? s->path : "", where);                                        \
        (var) = (uint32_t)c_;                                                                                \
    } while (0)
    if (s->ntask > 64) return lm_err_set(p->err, LM_EINVAL, "%s: more than 64 task columns", s->path);
    for (size_t i = 0; i < s->ntask; i++) NEED(p->task_col[i], s->task[i], "task");
    NEED(p->time_col, s->time, "time");
    NEED(p->label_col, s->label, "label");
    p->split_col = p->tie_col = UINT32_MAX;
    if (s->split) NEED(p->split_col, s->split, "split");
    if (s->tiebreak) NEED(p->tie_col, s->tiebreak, "tiebreak");
    for (size_t j = 0; j < s->njoin; j++) NEED(p->join_col[j], s->join[j].on, "join key");
#undef NEED
    uint32_t nfeat = p->nf + p->nc;
    if (first_file) {
        uint32_t rates_from = (uint32_t)(s->nmeta + s->ndense - 2 * s->nrate);
        for (uint32_t i = 0; i < nfeat; i++)
            p->feat[i] = i >= rates_from && i < p->nf                        ? (src){-3, 0}
                         : find_col(p->cols, p->ncols, feat_name(s, i)) >= 0 ? (src){-1, 0}
                                                                             : (src){-2, 0};
        int rc = setup_joins(p, p->cols, p->ncols, file);
        if (rc) return rc;
    }
    for (uint32_t i = 0; i < nfeat; i++) {
        if (p->feat[i].table >= 0 || p->feat[i].table == -3) continue;
        int c = find_col(p->cols, p->ncols, feat_name(s, i));
        if (c < 0)
            return lm_err_set(p->err, LM_ENOTFOUND,
                              "%s: column '%s' (%s in the schema %s) is not in the %s%s", file,
                              feat_name(s, i), feat_role(s, i), s->path ? s->path : "", where,
                              s->njoin ? " nor in a joined table" : "");
        p->feat[i] = (src){-1, 0};
        p->feat_col[i] = (uint32_t)c;
    }
    return LM_OK;
}

/* ---- phase 1: one row -> one record -------------------------------------------------------- */

static int parse_split(const lm_field *f)
{
    if (f->len == 5 && !memcmp(f->p, "train", 5)) return SPLIT_TRAIN;
    if (f->len == 3 && !memcmp(f->p, "val", 3)) return LM_SPLIT_VAL;
    if (f->len == 10 && !memcmp(f->p, "validation", 10)) return LM_SPLIT_VAL;
    if (f->len == 4 && !memcmp(f->p, "test", 4)) return LM_SPLIT_TEST;
    return -1;
}

/* Returns 0 (record added), 1 (bad row skipped) or an error. */
static int add_row(prep *p, const char *file, uint64_t line, const lm_field *f, size_t n)
{
    const lm_schema *s = p->s;
    if (n != p->ncols)
        return bad_row(p, file, line, LM_MIN(n, p->ncols) + 1, "expected %zu columns, found %s%zu", p->ncols,
                       n > MAX_COLS ? "more than " : "", LM_MIN(n, (size_t)MAX_COLS));
    /* task key */
    size_t klen = 0;
    for (size_t i = 0; i < s->ntask; i++) {
        const lm_field *t = &f[p->task_col[i]];
        if (!t->len)
            return bad_row(p, file, line, p->task_col[i] + 1, "column '%s': empty task key", s->task[i]);
        if (memchr(t->p, LM_KEY_SEP, t->len))
            return bad_row(p, file, line, p->task_col[i] + 1,
                           "column '%s': control character in the task key", s->task[i]);
        if (lm_grow((void **)&p->key, &p->key_cap, klen + t->len + 1, 1))
            return lm_err_set(p->err, LM_ENOMEM, "out of memory");
        if (i) p->key[klen++] = LM_KEY_SEP;
        memcpy(p->key + klen, t->p, t->len);
        klen += t->len;
    }
    if (klen > 4096) return bad_row(p, file, line, p->task_col[0] + 1, "task key longer than 4096 bytes");
    double tm, lab, tie = 0;
    int r = lm_parse_f64_fast(f[p->time_col].p, f[p->time_col].len, &tm)
                ? LM_NUM_OK
                : lm_parse_f64(f[p->time_col].p, f[p->time_col].len, &tm);
    if (r)
        return bad_row(p, file, line, p->time_col + 1, "column '%s' (time): %s: \"%.*s\"", s->time,
                       lm_num_what(r), (int)LM_MIN(f[p->time_col].len, 40u), f[p->time_col].p);
    const lm_field *lf = &f[p->label_col];
    r = lm_parse_f64_fast(lf->p, lf->len, &lab) ? LM_NUM_OK : lm_parse_f64(lf->p, lf->len, &lab);
    if (r == LM_NUM_EMPTY)
        return bad_row(p, file, line, p->label_col + 1, "column '%s': missing label", s->label);
    if (r)
        return bad_row(p, file, line, p->label_col + 1, "column '%s' (label): %s: \"%.*s\"", s->label,
                       lm_num_what(r), (int)LM_MIN(lf->len, 40u), lf->p);
    if (!isfinite((float)lab))
        return bad_row(p, file, line, p->label_col + 1, "column '%s' (label): %s: \"%.*s\"", s->label,
                       lm_num_what(LM_NUM_NONFINITE), (int)LM_MIN(lf->len, 40u), lf->p);
    if (s->label_type == LM_LABEL_BINARY) {
        if (s->label_has_threshold)
            lab = lab >= s->label_threshold ? 1.0 : 0.0;
        else if (lab != 0.0 && lab != 1.0)
            return bad_row(p, file, line, p->label_col + 1,
                           "column '%s': a binary label must be 0 or 1, found \"%.*s\"", s->label,
                           (int)LM_MIN(lf->len, 40u), lf->p);
    }
    int split = SPLIT_NONE;
    if (p->split_col != UINT32_MAX) {
        split = parse_split(&f[p->split_col]);
        if (split < 0)
            return bad_row(p, file, line, p->split_col + 1,
                           "column '%s': split must be train, val or test, found \"%.*s\"", s->split,
                           (int)LM_MIN(f[p->split_col].len, 40u), f[p->split_col].p);
    }
    if (p->tie_col != UINT32_MAX) {
        r = lm_parse_f64(f[p->tie_col].p, f[p->tie_col].len, &tie);
        if (r)
            return bad_row(p, file, line, p->tie_col + 1, "column '%s' (tiebreak): %s", s->tiebreak,
                           lm_num_what(r));
    }
    /* joined rows */
    int64_t jrow[64];
    if (p->njt > 64) return lm_err_set(p->err, LM_EINVAL, "more than 64 joined tables");
    for (size_t j = 0; j < p->njt; j++) {
        const lm_field *k = &f[p->join_col[j]];
        jrow[j] = lm_jtable_find(&p->jt[j], k->p, k->len);
        if (jrow[j] < 0) {
            if (p->o->missing_features_zero) {
                p->sum->missing_keys++;
                continue;
            }
            return bad_row(p, file, line, p->join_col[j] + 1, "key '%.*s' (column '%s') is missing from %s",
                           (int)LM_MIN(k->len, 60u), k->p, s->join[j].on, s->join[j].file);
        }
    }
    lm_rec *rec;
    int has_tie = p->tie_col != UINT32_MAX;
    int rc = lm_sorter_reserve(p->sorter, lm_rec_len((uint32_t)klen, p->payload, has_tie), &rec, p->err);
    if (rc) return rc;
    rec->hash = lm_hash64(p->key, klen, 0);
    rec->time = tm;
    rec->has_tie = (uint8_t)has_tie;
    if (has_tie) memcpy((char *)rec + sizeof(lm_rec), &tie, sizeof tie);
    rec->keylen = (uint16_t)klen;
    rec->split = (uint8_t)split;
    memcpy((char *)LM_REC_KEY(rec), p->key, klen);
    char *pay = (char *)LM_REC_PAYLOAD(rec);
    float fl = (float)lab;
    memcpy(pay, &fl, 4);
    uint32_t *cells = (uint32_t *)(pay + 4);
    for (uint32_t i = 0; i < p->nf + p->nc; i++) {
        src sc = p->feat[i];
        if (sc.table >= 0) {
            cells[i] = jrow[sc.table] >= 0
                           ? p->jt[sc.table].cells[jrow[sc.table] * p->jt_need_n[sc.table] + sc.idx]
                           : 0;
            continue;
        }
        if (sc.table == -3) {
            cells[i] = 0;
            continue;
        }
        const lm_field *v = &f[p->feat_col[i]];
        if (i < p->nf) {
            float x;
            if (lm_parse_f32_fast(v->p, v->len, &x)) {
                memcpy(&cells[i], &x, 4);
                continue;
            }
            double d;
            r = lm_parse_f64_fast(v->p, v->len, &d) ? LM_NUM_OK : lm_parse_f64(v->p, v->len, &d);
            x = (float)d;
            if (!r && !isfinite(x)) r = LM_NUM_NONFINITE;
            if (r)
                return bad_row(p, file, line, p->feat_col[i] + 1, "column '%s': %s: \"%.*s\"",
                               feat_name(s, i), lm_num_what(r), (int)LM_MIN(v->len, 40u), v->p);
            memcpy(&cells[i], &x, 4);
        } else {
            if (!v->len)
                return bad_row(p, file, line, p->feat_col[i] + 1, "column '%s': empty value",
                               feat_name(s, i));
            cells[i] = lm_cat_id(v->p, v->len, s->cat[i - p->nf].buckets);
        }
    }
    lm_sorter_commit(p->sorter);
    if (!p->have_time || tm > p->max_time) p->max_time = tm, p->have_time = 1;
    return 0;
}

static int read_input(prep *p, const char *file, int first_file, lm_field *f)
{
    lm_csv *r;
    int rc = lm_csv_open(&r, file, p->s->delimiter, p->err);
    if (rc) return rc;
    rc = map_columns(p, file, r, f, first_file);
    uint64_t rows = 0;
    while (!rc) {
        size_t n;
        int got = lm_csv_next(r, f, MAX_COLS, &n, p->err);
        if (got < 0) rc = got;
        if (got <= 0) break;
        rows++;
        p->sum->rows_read++;
        int a = add_row(p, file, lm_csv_line(r), f, n);
        if (a < 0) rc = a;
    }
    if (!rc && rows == 0 && !p->s->header && lm_csv_offset(r) == 0)
        rc = lm_err_set(p->err, LM_EINVAL, "%s: empty file", file);
    lm_csv_close(r);
    return rc;
}

/* ---- phase 2: tasks -------------------------------------------------------------------------- */

/* The records of the task being grouped, copied out of the sorter (whose buffer moves on). */
typedef struct taskbuf {
    char *mem; /* the records, back to back */
    size_t used, cap;
    size_t *off; /* offset of each record in mem */
    size_t n, off_cap;
} taskbuf;

#define TB_REC(tb, i) ((const lm_rec *)((tb)->mem + (tb)->off[i]))

static int is_new_task(const lm_prepare_opts *o, const char *key, size_t len)
{
    if (o->new_rule == LM_NEWRULE_NONE) return 0;
    if (o->new_rule == LM_NEWRULE_MOD) {
        const char *e = memchr(key, LM_KEY_SEP, len);
        size_t n = e ? (size_t)(e - key) : len;
        uint64_t v = 0;
        int ok = n > 0 && n <= 18;
        for (size_t i = 0; ok && i < n; i++) {
            unsigned d = (unsigned)(key[i] - '0');
            if (d > 9)
                ok = 0;
            else
                v = v * 10 + d;
        }
        if (!ok) v = lm_hash64(key, n, 0x6e6577ull);
        return o->new_mod ? v % o->new_mod == 0 : 0;
    }
    uint64_t h = lm_hash64(key, len, 0x6e6577ull);
    return (double)(h >> 11) * 0x1.0p-53 < o->new_frac;
}

static int flush_task(prep *p, const taskbuf *tb, lm_dswriter *w, char *row)
{
    const lm_prepare_opts *o = p->o;
    const char *key = LM_REC_KEY(TB_REC(tb, 0));
    uint32_t keylen = TB_REC(tb, 0)->keylen;
    size_t n = tb->n, start = 0;
    if (o->window_days > 0) {
        double cut = p->max_time - o->window_days * 86400.0;
        while (start < n && TB_REC(tb, start)->time < cut) start++;
    }
    if (o->max_per_task && n - start > o->max_per_task) start = n - o->max_per_task;
    p->sum->rows_dropped += start;
    size_t m = n - start;
    if (m == 0) return LM_OK;
    uint8_t *sp = malloc(m);
    if (!sp) return lm_err_set(p->err, LM_ENOMEM, "out of memory");
    int is_new;
    if (p->s->split) {
        size_t ntrain = 0;
        size_t nval = 0;
        for (size_t i = 0; i < m; i++) {
            sp[i] = TB_REC(tb, start + i)->split;
            ntrain += sp[i] == SPLIT_TRAIN;
            nval += sp[i] == LM_SPLIT_VAL;
        }
        if (o->refit && ntrain) {
            for (size_t i = 0; i < m; i++)
                if (sp[i] == LM_SPLIT_VAL) sp[i] = SPLIT_TRAIN;
            ntrain += nval;
        }
        size_t nsup = (size_t)ceil(o->support_frac * (double)ntrain - 1e-9), k = 0;
        for (size_t i = 0; i < m; i++)
            if (sp[i] == SPLIT_TRAIN) sp[i] = k++ < nsup ? LM_SPLIT_SUPPORT : LM_SPLIT_QUERY;
        is_new = ntrain == 0;
    } else {
        is_new = is_new_task(o, key, keylen);
        size_t ntrain = 0, nval;
        if (is_new) {
            nval = (size_t)floor(o->new_val_frac * (double)m + 1e-9);
        } else {
            ntrain = (size_t)floor(o->train_frac * (double)m + 1e-9);
            nval = (size_t)floor(o->val_frac * (double)m + 1e-9);
            if (ntrain + nval > m) nval = m - ntrain;
            if (o->refit) ntrain += nval, nval = 0;
        }
        size_t nsup = (size_t)ceil(o->support_frac * (double)ntrain - 1e-9);
        for (size_t i = 0; i < m; i++)
            sp[i] = i < nsup            ? LM_SPLIT_SUPPORT
                    : i < ntrain        ? LM_SPLIT_QUERY
                    : i < ntrain + nval ? LM_SPLIT_VAL
                                        : LM_SPLIT_TEST;
    }
    uint32_t nsplit[LM_SPLIT_COUNT] = {0};
    int contiguous = 1, rc = LM_OK;
    uint32_t row_bytes = lm_ds_row_bytes(p->nf, p->nc);
    for (size_t i = 0; i < m && !rc; i++) {
        const lm_rec *r = TB_REC(tb, start + i);
        if (i && sp[i] < sp[i - 1]) contiguous = 0;
        nsplit[sp[i]]++;
        p->sum->split_rows[sp[i]]++;
        memset(row, 0, row_bytes);
        memcpy(row, &r->time, 8);
        memcpy(row + 8, LM_REC_PAYLOAD(r), 4); /* label */
        uint32_t s32 = sp[i];
        memcpy(row + 12, &s32, 4);
        memcpy(row + LM_DS_ROW_FIXED, LM_REC_PAYLOAD(r) + 4, 4u * (p->nf + p->nc));
        rc = lm_dswriter_row(w, row, p->err);
    }
    free(sp);
    if (rc) return rc;
    p->sum->rows_kept += m;
    p->sum->tasks++;
    p->sum->tasks_new += (uint64_t)is_new;
    return lm_dswriter_task(w, key, keylen, is_new, nsplit, contiguous, p->err);
}

static int group_tasks(prep *p, lm_dswriter *w)
{
    taskbuf tb = {0};
    char *row = malloc(lm_ds_row_bytes(p->nf, p->nc));
    if (!row) return lm_err_set(p->err, LM_ENOMEM, "out of memory");
    int rc = LM_OK;
    for (;;) {
        const lm_rec *r = lm_sorter_next(p->sorter, &rc, p->err);
        if (rc) break;
        if (tb.n) {
            const lm_rec *f0 = TB_REC(&tb, 0);
            int same = r && r->hash == f0->hash && r->keylen == f0->keylen &&
                       !memcmp(LM_REC_KEY(r), LM_REC_KEY(f0), r->keylen);
            if (!same) {
                if ((rc = flush_task(p, &tb, w, row))) break;
                tb.n = 0;
                tb.used = 0;
            }
        }
        if (!r) break;
        if (lm_grow((void **)&tb.mem, &tb.cap, tb.used + r->len, 1) ||
            lm_grow((void **)&tb.off, &tb.off_cap, tb.n + 1, sizeof(size_t))) {
            rc = lm_err_set(p->err, LM_ENOMEM, "out of memory");
            break;
        }
        memcpy(tb.mem + tb.used, r, r->len);
        tb.off[tb.n++] = tb.used;
        tb.used += r->len;
    }
    free(tb.mem);
    free(tb.off);
    free(row);
    return rc;
}

/* ---- orchestration ---------------------------------------------------------------------------- */

static char *info_json(const prep *p, const char *const *inputs, size_t ninputs)
{
    const lm_prepare_opts *o = p->o;
    const lm_prepare_summary *s = p->sum;
    cJSON *root = cJSON_CreateObject();
    cJSON *in = cJSON_AddArrayToObject(root, "inputs");
    for (size_t i = 0; i < ninputs; i++) cJSON_AddItemToArray(in, cJSON_CreateString(inputs[i]));
    cJSON *op = cJSON_AddObjectToObject(root, "options");
    cJSON_AddNumberToObject(op, "max_per_task", o->max_per_task);
    cJSON_AddNumberToObject(op, "window_days", o->window_days);
    cJSON_AddNumberToObject(op, "train_frac", o->train_frac);
    cJSON_AddNumberToObject(op, "val_frac", o->val_frac);
    cJSON_AddNumberToObject(op, "new_val_frac", o->new_val_frac);
    cJSON_AddNumberToObject(op, "support_frac", o->support_frac);
    const char *rule = o->new_rule == LM_NEWRULE_MOD    ? "mod"
                       : o->new_rule == LM_NEWRULE_HASH ? "hash"
                                                        : "none";
    cJSON_AddStringToObject(op, "new_rule", p->s->split ? "split column" : rule);
    cJSON_AddNumberToObject(op, "new_mod", (double)o->new_mod);
    cJSON_AddNumberToObject(op, "new_frac", o->new_frac);
    cJSON_AddBoolToObject(op, "missing_features_zero", o->missing_features_zero);
    cJSON_AddBoolToObject(op, "refit", o->refit);
    cJSON *su = cJSON_AddObjectToObject(root, "summary");
    cJSON_AddNumberToObject(su, "rows_read", (double)s->rows_read);
    cJSON_AddNumberToObject(su, "rows_bad", (double)s->rows_bad);
    cJSON_AddNumberToObject(su, "rows_dropped", (double)s->rows_dropped);
    cJSON_AddNumberToObject(su, "rows_kept", (double)s->rows_kept);
    cJSON_AddNumberToObject(su, "tasks", (double)s->tasks);
    cJSON_AddNumberToObject(su, "tasks_new", (double)s->tasks_new);
    cJSON_AddNumberToObject(su, "missing_keys", (double)s->missing_keys);
    for (int k = 0; k < LM_SPLIT_COUNT; k++) {
        char name[32];
        snprintf(name, sizeof name, "rows_%s", lm_split_name(k));
        cJSON_AddNumberToObject(su, name, (double)s->split_rows[k]);
    }
    cJSON_AddNumberToObject(su, "max_time", p->max_time);
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    return txt;
}

static int check_opts(const lm_prepare_opts *o, lm_err *err)
{
#define FRAC(x, name)                                                                                        \
    if (!((x) >= 0 && (x) <= 1))                                                                             \
    return lm_err_set(err, LM_EINVAL, "--%s must be in [0, 1], got %g", name, (double)(x))
    FRAC(o->train_frac, "train");
    FRAC(o->val_frac, "val");
    FRAC(o->new_val_frac, "new-val");
    FRAC(o->support_frac, "support");
    FRAC(o->new_frac, "new-frac");
#undef FRAC
    if (o->train_frac + o->val_frac > 1 + 1e-12)
        return lm_err_set(err, LM_EINVAL, "--train plus --val must not exceed 1");
    if (!(o->window_days >= 0)) return lm_err_set(err, LM_EINVAL, "--window-days must be >= 0");
    if (o->new_rule == LM_NEWRULE_MOD && o->new_mod == 0)
        return lm_err_set(err, LM_EINVAL, "--new-tasks mod:N needs N >= 1");
    return LM_OK;
}

int lm_prepare(const lm_schema *schema, const char *const *inputs, size_t ninputs, const char *out_dir,
               const lm_prepare_opts *o, lm_prepare_summary *sum, lm_err *err)
{
    double t0 = lm_now();
    memset(sum, 0, sizeof *sum);
    int rc = check_opts(o, err);
    if (rc) return rc;
    if (ninputs == 0) return lm_err_set(err, LM_EINVAL, "no input files");
    prep p = {0};
    p.s = schema;
    p.o = o;
    p.sum = sum;
    p.err = err;
    p.nf = (uint32_t)(schema->nmeta + schema->ndense);
    p.nc = (uint32_t)schema->ncat;
    p.payload = 4u * (1 + p.nf + p.nc);
    p.feat = calloc(p.nf + p.nc + 1, sizeof *p.feat);
    p.feat_col = calloc(p.nf + p.nc + 1, sizeof *p.feat_col);
    p.join_col = calloc(schema->njoin + 1, sizeof *p.join_col);
    lm_field *f = malloc(sizeof(lm_field) * (MAX_COLS + 1));
    char *tmp = NULL, *info = NULL;
    lm_dswriter *w = NULL;
    if (!p.feat || !p.feat_col || !p.join_col || !f) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    /* Refuse early, before hours of work, when the output is there; checked again at rename. */
    if (!rc && !o->force && access(out_dir, F_OK) == 0)
        rc = lm_err_set(err, LM_EEXIST, "%s: already exists (use --force to replace it)", out_dir);
    if (!rc) rc = lm_mktemp_dir_beside(out_dir, &tmp, err);
    if (!rc) rc = lm_sorter_new(&p.sorter, o->mem_bytes, o->tmp_dir ? o->tmp_dir : tmp, err);
    for (size_t i = 0; !rc && i < ninputs; i++) rc = read_input(&p, inputs[i], i == 0, f);
    if (!rc && sum->rows_read == sum->rows_bad)
        rc = lm_err_set(err, LM_EINVAL, "%s: no data rows", inputs[0]);
    if (!rc) rc = lm_sorter_finish(p.sorter, err);
    if (!rc) rc = lm_dswriter_open(&w, tmp, (uint32_t)schema->nmeta, (uint32_t)schema->ndense, p.nc, err);
    if (!rc) rc = group_tasks(&p, w);
    if (!rc) {
        sum->runs = lm_sorter_runs(p.sorter);
        sum->peak_buffer_bytes = lm_sorter_peak_bytes(p.sorter);
        info = info_json(&p, inputs, ninputs);
        if (!info) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    if (!rc) rc = lm_dswriter_finish(w, schema->json, info, err);
    lm_dswriter_free(w);
    if (!rc && schema->nrate) rc = lm_ds_fill_rates(tmp, schema, err);
    lm_sorter_free(p.sorter);
    if (!rc) {
        char *sp = lm_path_join(tmp, "schema.json"), *ip = lm_path_join(tmp, "summary.json");
        if (!sp || !ip) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
        if (!rc) rc = lm_write_file_atomic(sp, schema->json, strlen(schema->json), err);
        if (!rc) rc = lm_write_file_atomic(ip, info, strlen(info), err);
        free(sp);
        free(ip);
    }
    sum->seconds = lm_now() - t0;
    if (!rc) rc = lm_publish_dir(tmp, out_dir, o->force, err);
    if (rc && tmp) lm_rmtree(tmp);
    free(tmp);
    if (info) cJSON_free(info);
    for (size_t j = 0; j < p.njt; j++) lm_jtable_free(&p.jt[j]);
    free(p.jt);
    free(p.jt_need_n);
    for (size_t i = 0; i < p.ncols; i++) free(p.cols[i]);
    free(p.cols);
    free(p.feat);
    free(p.feat_col);
    free(p.join_col);
    free(p.key);
    free(f);
    return rc;
}
