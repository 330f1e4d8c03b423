/* csv.h: a streaming CSV/TSV reader with line and column tracking, and strict numbers. */
#ifndef LM_DATA_CSV_H
#define LM_DATA_CSV_H

#include "core/core.h"

typedef struct lm_field {
    const char *p; /* not NUL-terminated; valid until the next lm_csv_next call */
    uint32_t len;
} lm_field;

typedef struct lm_csv lm_csv;

/* Open `path` for reading records separated by `delim`. The reader owns its buffer; fields
 * point into it. */
int lm_csv_open(lm_csv **out, const char *path, char delim, lm_err *err);
void lm_csv_close(lm_csv *r);
/* Read the next record into fields[0..max). Returns 1 with *n set, 0 at the end of the
 * input, or a negative code (I/O error, a record longer than the reader's limit, an
 * unterminated quote). A record with more than `max` fields sets *n to max + 1. Blank lines
 * are skipped. */
int lm_csv_next(lm_csv *r, lm_field *fields, size_t max, size_t *n, lm_err *err);
/* The 1-based line where the last record returned starts. */
uint64_t lm_csv_line(const lm_csv *r);
const char *lm_csv_path(const lm_csv *r);
/* Bytes consumed so far (for progress). */
uint64_t lm_csv_offset(const lm_csv *r);

/* Number parsing results. */
enum { LM_NUM_OK = 0, LM_NUM_EMPTY = 1, LM_NUM_BAD = 2, LM_NUM_NONFINITE = 3 };
/* Parse a decimal number (optional sign, digits, fraction, exponent; surrounding spaces
 * allowed). NaN, Inf and out-of-range values are refused. The result equals strtod's. */
int lm_parse_f64(const char *p, size_t len, double *out);
/* A message for a LM_NUM_* result: "empty value", "not a number", "NaN or infinite". */
const char *lm_num_what(int r);

#endif
