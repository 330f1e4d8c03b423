/* dio.h: large sequential file transfers that bypass the page cache (O_DIRECT where the file
 * system allows it), one asynchronous transfer in flight while the caller works on another
 * buffer. Used for the dataset file that `prepare` writes (dswrite.c).
 *
 * Why: on the virtual machines of docs/BENCHMARKS.md, a page-cache page the guest has not
 * touched recently costs about 1.3 s per GB to bring in (the host backs it), and prepare writes
 * about as many bytes of dataset as it reads of log, which must reach the disk anyway (fsync).
 * Direct transfers move the bytes by DMA from buffers the process already holds and wait on the
 * device instead of the CPU. Not for data read back soon: the sort runs stay in the page cache
 * (direct runs made the merge wait on the disk; docs/BENCHMARKS.md, "prepare").
 *
 * Buffers, offsets and lengths of direct transfers must be multiples of LM_DIO_ALIGN. Where
 * the file system refuses a direct transfer, it is done again through the page cache (same
 * bytes, only slower), and the file stays buffered from then on. */
#ifndef LM_DATA_DIO_H
#define LM_DATA_DIO_H

#include "core/core.h"

#include <linux/aio_abi.h>

#define LM_DIO_ALIGN 4096u

typedef struct lm_dio {
    int fd;
    int direct;        /* fd has O_DIRECT */
    const char *path;  /* for messages; not owned, must outlive the handle */
    aio_context_t ctx; /* 0: no asynchronous I/O here, transfers happen at once */
    struct iocb cb;
    int inflight; /* 1 write, 2 read: cb holds a transfer not yet waited for; 3: a read done */
    size_t ready; /* bytes of the read done at once (inflight 3) */
} lm_dio;

/* Open `path` (flags as for open(2), plus O_DIRECT where possible). */
int lm_dio_open(lm_dio *d, const char *path, int flags, int mode, lm_err *err);
/* Wait for the transfer in flight, then start writing (reading) n bytes at `off` from (into)
 * `buf`, which must stay untouched until the next lm_dio_wait or start. */
int lm_dio_write(lm_dio *d, const void *buf, size_t n, uint64_t off, lm_err *err);
int lm_dio_read(lm_dio *d, void *buf, size_t n, uint64_t off, lm_err *err);
/* Wait for the transfer in flight (none: returns at once). For a read, *got is the bytes read
 * (fewer than asked only at the end of the file); got may be NULL after a write. */
int lm_dio_wait(lm_dio *d, size_t *got, lm_err *err);
/* Leave direct mode (for an unaligned tail); waits first. */
int lm_dio_buffered(lm_dio *d, lm_err *err);
/* Waits (ignoring errors) and closes; d->fd = -1. */
void lm_dio_close(lm_dio *d);
/* An aligned buffer of n bytes (a multiple of LM_DIO_ALIGN), or NULL; free() it. */
void *lm_dio_alloc(size_t n);

#endif
