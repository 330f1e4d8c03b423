/* runs.h: external sort of variable-length records by (task hash, task key, time, tiebreak),
 * stable in input order: records collect in a bounded buffer, each full buffer is sorted and
 * spilled to a run file, and the runs are merged. */
#ifndef LM_DATA_RUNS_H
#define LM_DATA_RUNS_H

#include "core/core.h"

#include <string.h>

/* A record as it travels through the sort: this header; the tiebreak value (a double) when the
 * schema names a tiebreak column (has_tie), so that the common log without one spills 8 bytes
 * less per row; the task key, padded to 8 bytes; then `payload` bytes (label, features, ids). */
typedef struct lm_rec {
    uint64_t hash; /* hash of the task key */
    double time;
    uint32_t len; /* whole record, a multiple of 8 */
    uint16_t keylen;
    uint8_t split;   /* LM_SPLIT_* from a split column, or 255 */
    uint8_t has_tie; /* 1: a double tiebreak value follows the header */
} lm_rec;

#define LM_REC_KEY(r) ((const char *)(r) + sizeof(lm_rec) + ((r)->has_tie ? 8u : 0u))
#define LM_REC_PAYLOAD(r) (LM_REC_KEY(r) + (((r)->keylen + 7u) & ~7u))
static inline uint32_t lm_rec_len(uint32_t keylen, uint32_t payload, int has_tie)
{
    return (uint32_t)(sizeof(lm_rec) + (has_tie ? 8u : 0u) + ((keylen + 7u) & ~7u) + ((payload + 7u) & ~7u));
}
/* The tiebreak value, 0 when the record has none. */
static inline double lm_rec_tie(const lm_rec *r)
{
    double t = 0;
    if (r->has_tie) memcpy(&t, (const char *)r + sizeof(lm_rec), sizeof t);
    return t;
}

typedef struct lm_sorter lm_sorter;

/* A sorter using about `mem_bytes` of memory; runs are written in `tmp_dir`. */
int lm_sorter_new(lm_sorter **out, size_t mem_bytes, const char *tmp_dir, lm_err *err);
/* Reserve room for a record of `len` bytes (spilling a run first when the buffer is full);
 * fill it and call lm_sorter_commit. */
int lm_sorter_reserve(lm_sorter *s, uint32_t len, lm_rec **rec, lm_err *err);
void lm_sorter_commit(lm_sorter *s);
/* After the last record: sort what is buffered and get ready to stream records in order. */
int lm_sorter_finish(lm_sorter *s, lm_err *err);
/* The next record in order (valid until the next call), or NULL at the end (check *rc). */
const lm_rec *lm_sorter_next(lm_sorter *s, int *rc, lm_err *err);
uint64_t lm_sorter_runs(const lm_sorter *s);
size_t lm_sorter_peak_bytes(const lm_sorter *s);
/* Frees memory and removes the run files. */
void lm_sorter_free(lm_sorter *s);

#endif
