/* join.h: feature tables joined to the log by a key column, held in memory (they are per
 * member or per item, far smaller than the interaction log). */
#ifndef LM_DATA_JOIN_H
#define LM_DATA_JOIN_H

#include "core/core.h"
#include "data/csv.h"

/* What a column becomes in a dataset row. */
enum { LM_COL_FLOAT = 0, LM_COL_CAT = 1 };

typedef struct lm_jtable {
    const lm_join_spec *spec;
    char **names; /* the table's column names */
    size_t nnames;
    size_t key_col; /* index of spec->on among names */
    /* After lm_jtable_load: */
    size_t nrows;
    uint32_t nneed;    /* columns kept per row */
    uint32_t *cells;   /* (nrows, nneed): float bits or categorical ids */
    char *keys;        /* key bytes of every row, concatenated */
    uint64_t *key_off; /* (nrows + 1) */
    uint32_t *slots;   /* open addressing: row + 1, 0 empty */
    size_t nslots;
} lm_jtable;

/* Read the table's column names (header line or spec->columns); checks the key column. */
int lm_jtable_open(lm_jtable *t, const lm_join_spec *spec, lm_err *err);
/* Load the rows, keeping columns need[0..nneed) (indexes into names) converted by kinds[]
 * (LM_COL_FLOAT or LM_COL_CAT with buckets[]). A duplicated key is an error. */
int lm_jtable_load(lm_jtable *t, const uint32_t *need, const int *kinds, const uint32_t *buckets,
                   uint32_t nneed, lm_err *err);
/* The row holding `key`, or -1. */
int64_t lm_jtable_find(const lm_jtable *t, const char *key, size_t len);
void lm_jtable_free(lm_jtable *t);

/* A categorical value's row: an integer below `buckets` is kept, anything else is hashed. */
uint32_t lm_cat_id(const char *p, size_t len, uint32_t buckets);

#endif
