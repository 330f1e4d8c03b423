/* core.h: private helpers shared by every subsystem: error filling, assertions, hashing,
 * files written atomically, a small random number generator. */
#ifndef LM_CORE_H
#define LM_CORE_H

#include "limaml.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

/* ---- errors ------------------------------------------------------------------------------ */

/* Fill `err` (may be NULL) with `code` and a formatted message; returns `code`. */
int lm_err_set(lm_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Like lm_err_set, appending ": strerror(errno)". */
int lm_err_errno(lm_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A broken invariant is a bug, not bad input: abort with file and line. */
#define LM_ASSERT(c)                                                                                         \
    do {                                                                                                     \
        if (!(c)) lm_assert_fail(#c, __FILE__, __LINE__);                                                    \
    } while (0)
_Noreturn void lm_assert_fail(const char *expr, const char *file, int line);

#define LM_UNUSED(x) ((void)(x))
#define LM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define LM_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- memory ------------------------------------------------------------------------------ */

/* malloc wrappers that return NULL on overflow of n * size. */
void *lm_malloc_array(size_t n, size_t size);
void *lm_realloc_array(void *p, size_t n, size_t size);
char *lm_strdup(const char *s);
char *lm_strndup(const char *s, size_t n);
/* Grow *buf (of *cap elements of `size`) to hold at least `need`; 0 or LM_ENOMEM. */
int lm_grow(void **buf, size_t *cap, size_t need, size_t size);

/* ---- hashing ------------------------------------------------------------------------------ */

uint64_t lm_hash64(const void *p, size_t n, uint64_t seed);

/* Streaming 64-bit checksum (XXH3) of a file body. */
typedef struct lm_checksum lm_checksum;
lm_checksum *lm_checksum_new(void);
void lm_checksum_update(lm_checksum *c, const void *p, size_t n);
uint64_t lm_checksum_digest(const lm_checksum *c);
void lm_checksum_free(lm_checksum *c);

/* ---- random numbers: xoshiro256** seeded by splitmix64; the state is plain data so a
 * checkpoint can store it and a resumed run continues bit for bit. --------------------------- */

typedef struct lm_rng {
    uint64_t s[4];
} lm_rng;

void lm_rng_seed(lm_rng *r, uint64_t seed);
uint64_t lm_rng_next(lm_rng *r);
/* Uniform in [0, 1) with 53 bits. */
double lm_rng_uniform(lm_rng *r);
/* Uniform in [0, n). */
uint64_t lm_rng_below(lm_rng *r, uint64_t n);
double lm_rng_normal(lm_rng *r);
/* A stateless mix of x: for per-entity quantities derived from an id. */
uint64_t lm_mix64(uint64_t x);

/* ---- files --------------------------------------------------------------------------------- */

/* Read a whole file into a NUL-terminated buffer (caller frees). */
int lm_read_file(const char *path, char **data, size_t *len, lm_err *err);
/* Write all of `n` bytes, retrying on short writes. */
int lm_write_all(int fd, const void *p, size_t n, const char *path, lm_err *err);
int lm_pwrite_all(int fd, const void *p, size_t n, uint64_t off, const char *path, lm_err *err);
/* fsync the folder holding `path` so a rename inside it is durable. */
int lm_fsync_dir_of(const char *path, lm_err *err);
/* Write `path` atomically: data goes to a temporary name beside it, is fsynced, renamed. */
int lm_write_file_atomic(const char *path, const void *data, size_t n, lm_err *err);
/* Remove a file tree (for cleaning temporary outputs). Best effort; returns 0 or -1. */
int lm_rmtree(const char *path);
/* Make a fresh temporary folder beside `final_path` ("final_path.tmp.XXXXXX"); the caller
 * renames it into place with lm_publish_dir or removes it. `out` gets a malloc'd path. */
int lm_mktemp_dir_beside(const char *final_path, char **out, lm_err *err);
/* Rename folder `tmp` to `final_path`, replacing an existing one only when `force`. */
int lm_publish_dir(const char *tmp, const char *final_path, int force, lm_err *err);
/* "dir/name" in a malloc'd string. */
char *lm_path_join(const char *dir, const char *name);
/* The folder part of `path` ("." when none), malloc'd. */
char *lm_path_dir(const char *path);

/* ---- time and memory figures ------------------------------------------------------------- */

double lm_now(void);            /* monotonic seconds */
size_t lm_peak_rss_bytes(void); /* this process's peak resident set */

#endif
