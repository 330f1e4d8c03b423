/* csv.h: a streaming CSV/TSV reader with line and column tracking, and strict numbers. */
#ifndef LM_DATA_CSV_H
#define LM_DATA_CSV_H

#include "core/core.h"

#include <string.h>

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
/* The digits of the common case: [-]digits[.digits], at most 15 significant digits, nothing
 * else. Returns 0 when the text is not of that form. */
static inline int lm_parse_dec_(const char *p, size_t len, uint64_t *m_out, int *frac_out, int *neg_out)
{
    const char *e = p + len;
    int neg = 0;
    if (p < e && *p == '-') neg = 1, p++;
    if (p == e || e - p > 16) return 0;
    uint64_t m = 0;
    const char *dot = NULL;
    for (const char *c = p; c < e; c++) {
        unsigned d = (unsigned)(*c - '0');
        if (d < 10)
            m = m * 10 + d;
        else if (*c == '.' && !dot)
            dot = c;
        else
            return 0;
    }
    if (dot == p && e - p == 1) return 0; /* "." alone */
    /* at most 16 characters, so at most 15 digits when there is a dot: m < 2^53 */
    if (!dot && e - p > 15) return 0;
    *m_out = m;
    *frac_out = dot ? (int)(e - dot - 1) : 0;
    *neg_out = neg;
    return 1;
}

/* The common case inline (see lm_parse_dec_). Returns 0 when it does not apply, so the caller
 * falls back to lm_parse_f64. */
static inline int lm_parse_f64_fast(const char *p, size_t len, double *out)
{
    static const double inv_exact[16] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                         1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    uint64_t m;
    int frac, neg;
    if (!lm_parse_dec_(p, len, &m, &frac, &neg)) return 0;
    double v = (double)m;
    if (frac) v /= inv_exact[frac];
    *out = neg ? -v : v;
    return 1;
}

/* (float) of what lm_parse_f64_fast gives, without its division, which was the slowest step of
 * `prepare` (a feature value a column, 18 a row: the division's latency). m * 10^-frac differs
 * from the correctly rounded m / 10^frac by at most 3 units in the last place of a double; the
 * two round to different floats only when a float rounding midpoint (low 29 bits of the double
 * 0x10000000) lies within those 3 units, so within 4 of it the caller is sent back (0 returned)
 * to lm_parse_f64_fast. The values are at least 1e-15 in magnitude, or 0: normal floats, where
 * that bit pattern marks every midpoint. Bit for bit the same float as before. */
static inline int lm_parse_f32_fast(const char *p, size_t len, float *out)
{
    static const double inv_tens[16] = {1e-0, 1e-1, 1e-2,  1e-3,  1e-4,  1e-5,  1e-6,  1e-7,
                                        1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 1e-13, 1e-14, 1e-15};
    uint64_t m, bits;
    int frac, neg;
    if (!lm_parse_dec_(p, len, &m, &frac, &neg)) return 0;
    double v = (double)m * inv_tens[frac];
    memcpy(&bits, &v, 8);
    uint32_t low = (uint32_t)(bits & ((1u << 29) - 1));
    if (frac && low - (0x10000000u - 4) <= 8) return 0;
    float x = (float)v;
    *out = neg ? -x : x;
    return 1;
}

/* A message for a LM_NUM_* result: "empty value", "not a number", "NaN or infinite". */
const char *lm_num_what(int r);

#endif
