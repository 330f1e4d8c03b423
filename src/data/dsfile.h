/* dsfile.h: the binary dataset file (DIR/dataset.lmd), written by prepare, memory-mapped by
 * readers.
 *
 * Layout (little-endian, every section 64-byte aligned):
 *   header  (LM_DS_HEADER_BYTES) lm_ds_header
 *   rows    nrows * row_bytes: f64 time, f32 label, u32 split, f32 meta[nmeta],
 *           f32 dense[ndense], u32 cat[ncat], zero padding to a multiple of 8 bytes
 *   tasks   ntasks * lm_task (48 bytes each), sorted by the order prepare grouped them
 *   keys    the task keys, concatenated (lm_task.key_off / key_len index into it)
 *   schema  the schema's canonical JSON
 *   info    JSON: the prepare options and summary
 * `checksum` is XXH3-64 of every byte after the header; `header_checksum` of the header with
 * that field zeroed. */
#ifndef LM_DATA_DSFILE_H
#define LM_DATA_DSFILE_H

#include "core/core.h"

#define LM_DS_MAGIC "LIMAMLDS"
#define LM_DS_VERSION 1u
#define LM_DS_HEADER_BYTES 4096u
#define LM_DS_FILE "dataset.lmd"
#define LM_DS_ROW_FIXED 16u /* time, label, split */

typedef struct lm_ds_header {
    char magic[8];
    uint32_t version;
    uint32_t header_bytes;
    uint64_t nrows;
    uint64_t ntasks;
    uint32_t nmeta, ndense, ncat, row_bytes;
    uint64_t rows_off, tasks_off, keys_off, keys_len;
    uint64_t schema_off, schema_len, info_off, info_len;
    uint64_t file_bytes;
    uint64_t checksum;
    uint64_t header_checksum;
} lm_ds_header;

_Static_assert(sizeof(lm_task) == 48, "lm_task is stored as is");

static inline uint32_t lm_ds_row_bytes(uint32_t nfloat, uint32_t ncat)
{
    uint32_t b = LM_DS_ROW_FIXED + 4u * (nfloat + ncat);
    return (b + 7u) & ~7u;
}

/* Fill the schema's history rates (its last 2 * nrate dense features) into DIR/dataset.lmd,
 * written by lm_dswriter_finish and not yet published, update its checksums, and write the
 * whole pool's figures to DIR/rates_COLUMN.csv (rates.c). */
int lm_ds_fill_rates(const char *dir, const lm_schema *s, lm_err *err);

#endif
