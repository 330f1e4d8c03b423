/* safetensors.h: the safetensors file format (what `safetensors.torch.load_file` reads):
 *   u64 little-endian N, then N bytes of JSON (padded with spaces to a multiple of 8):
 *   {"__metadata__": {"key": "value", ...},
 *    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 *   then the tensors' bytes, back to back, offsets relative to the end of the header.
 * limaml adds two metadata keys of its own: "lm_format" (a version) and "lm_checksum" (XXH3 of
 * the data bytes, 16 hex digits), both checked on open. */
#ifndef LM_MODEL_SAFETENSORS_H
#define LM_MODEL_SAFETENSORS_H

#include "core/core.h"

enum {
    LM_DT_F32 = 0,
    LM_DT_F64 = 1,
    LM_DT_I64 = 2,
    LM_DT_U8 = 3,
    LM_DT_F16 = 4,
    LM_DT_I8 = 5,
    LM_DT_U32 = 6
};

#define LM_ST_MAX_DIMS 4
#define LM_ST_NAME_MAX 128

typedef struct lm_st_tensor {
    char name[LM_ST_NAME_MAX];
    int dtype;
    uint32_t ndim;
    uint64_t shape[LM_ST_MAX_DIMS];
    const void *data; /* writer: the caller's bytes; reader: inside the file's map */
    size_t nbytes;
} lm_st_tensor;

size_t lm_dt_size(int dtype);

/* Write tensors t[0..n) and metadata pairs atomically (temporary file, fsync, rename). */
int lm_st_write(const char *path, const lm_st_tensor *t, size_t n, const char *const *meta_keys,
                const char *const *meta_vals, size_t nmeta, lm_err *err);

typedef struct lm_st_file lm_st_file;

/* Map and check a file: header JSON, offsets inside the file and contiguous, sizes equal to
 * shape times dtype, and (when present) the limaml checksum. */
int lm_st_open(lm_st_file **out, const char *path, lm_err *err);
void lm_st_close(lm_st_file *f);
size_t lm_st_count(const lm_st_file *f);
const lm_st_tensor *lm_st_get(const lm_st_file *f, size_t i);
const lm_st_tensor *lm_st_find(const lm_st_file *f, const char *name);
/* A metadata value (owned by the file), or NULL. */
const char *lm_st_meta(const lm_st_file *f, const char *key);

#define LM_ST_FORMAT "1"

#endif
