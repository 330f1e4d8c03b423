/* dswrite.h: writes the dataset file one task at a time (rows stream to disk; the task table
 * and keys go to scratch files appended at the end), so memory does not grow with the data. */
#ifndef LM_DATA_DSWRITE_H
#define LM_DATA_DSWRITE_H

#include "data/dsfile.h"

typedef struct lm_dswriter lm_dswriter;

/* Create `dir`/dataset.lmd for rows of nfloat floats and ncat ids. */
int lm_dswriter_open(lm_dswriter **out, const char *dir, uint32_t nmeta, uint32_t ndense, uint32_t ncat,
                     lm_err *err);
/* Append one row (row_bytes as lm_ds_row_bytes gives, laid out as dsfile.h says). */
int lm_dswriter_row(lm_dswriter *w, const void *row, lm_err *err);
/* Close the current task: its rows are those appended since the last call. */
int lm_dswriter_task(lm_dswriter *w, const char *key, uint32_t key_len, int is_new,
                     const uint32_t nsplit[LM_SPLIT_COUNT], int contiguous, lm_err *err);
/* Append the sections, write the header and fsync. */
int lm_dswriter_finish(lm_dswriter *w, const char *schema_json, const char *info_json, lm_err *err);
void lm_dswriter_free(lm_dswriter *w); /* closes and, unless finished, leaves a bad file */

#endif
