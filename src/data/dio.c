/* dio.c: direct, asynchronous sequential transfers (see dio.h). The asynchronous part is
 * Linux's own AIO (io_submit): with O_DIRECT the kernel queues the transfer and returns, and the
 * device moves the bytes while the caller works. Not POSIX AIO: glibc's runs on helper threads
 * whose state a forked child inherits without the threads, so a child that had a parent use it
 * waits forever (tests/data/test_prepare.c forks concurrent prepares after a first one). */
#include "data/dio.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

void *lm_dio_alloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, LM_DIO_ALIGN, n ? n : LM_DIO_ALIGN) != 0) return NULL;
    return p;
}

int lm_dio_open(lm_dio *d, const char *path, int flags, int mode, lm_err *err)
{
    memset(d, 0, sizeof *d);
    d->path = path;
    d->fd = -1;
#ifdef O_DIRECT
    d->fd = open(path, flags | O_DIRECT, mode);
    d->direct = d->fd >= 0;
#endif
    if (d->fd < 0) d->fd = open(path, flags, mode);
    if (d->fd < 0) return lm_err_errno(err, errno == ENOENT ? LM_ENOTFOUND : LM_EIO, "%s: open", path);
    if (syscall(SYS_io_setup, 1, &d->ctx) != 0) d->ctx = 0; /* none (limits): synchronous */
    return LM_OK;
}

static void set_buffered(lm_dio *d)
{
#ifdef O_DIRECT
    int fl = fcntl(d->fd, F_GETFL);
    if (fl != -1) fcntl(d->fd, F_SETFL, fl & ~O_DIRECT);
#endif
    d->direct = 0;
}

static int pread_all(lm_dio *d, char *p, size_t n, uint64_t off, size_t *got, lm_err *err)
{
    size_t done = 0;
    while (done < n) {
        ssize_t k = pread(d->fd, p + done, n - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return lm_err_errno(err, LM_EIO, "%s: read", d->path);
        if (k == 0) break;
        done += (size_t)k;
    }
    *got = done;
    return LM_OK;
}

int lm_dio_wait(lm_dio *d, size_t *got, lm_err *err)
{
    size_t dummy;
    if (!got) got = &dummy;
    *got = 0;
    if (!d->inflight) return LM_OK;
    int kind = d->inflight;
    d->inflight = 0;
    if (kind == 3) { /* a read done at once */
        *got = d->ready;
        return LM_OK;
    }
    struct io_event ev;
    long r;
    while ((r = syscall(SYS_io_getevents, d->ctx, 1, 1, &ev, NULL)) < 0 && errno == EINTR) {
    }
    if (r != 1) return lm_err_errno(err, LM_EIO, "%s: waiting for a transfer", d->path);
    int e = ev.res < 0 ? (int)-ev.res : 0;
    long long k = (long long)ev.res;
    char *buf = (char *)(uintptr_t)d->cb.aio_buf;
    size_t n = (size_t)d->cb.aio_nbytes, done = e == 0 && k > 0 ? (size_t)k : 0;
    uint64_t off = (uint64_t)d->cb.aio_offset;
    if (kind == 1) {
        *got = n;
        if (done == n) return LM_OK;
        /* Refused (a file system without direct I/O: EINVAL) or cut short: the buffer is
         * untouched, write the rest through the page cache. */
        if (e != 0 && e != EINVAL) {
            errno = e;
            return lm_err_errno(err, LM_EIO, "%s: write", d->path);
        }
        set_buffered(d);
        return lm_pwrite_all(d->fd, buf + done, n - done, off + done, d->path, err);
    }
    if (e != 0 && e != EINVAL) {
        errno = e;
        return lm_err_errno(err, LM_EIO, "%s: read", d->path);
    }
    if (e == EINVAL) set_buffered(d);
    /* A short read is the end of the file, or (rarely) a transfer cut short: read on. */
    size_t more = 0;
    int rc = done < n && (e == EINVAL || k > 0) ? pread_all(d, buf + done, n - done, off + done, &more, err)
                                                : LM_OK;
    *got = done + more;
    return rc;
}

static int start(lm_dio *d, int kind, void *buf, size_t n, uint64_t off, lm_err *err)
{
    int rc = lm_dio_wait(d, NULL, err);
    if (rc) return rc;
    if (d->ctx) {
        memset(&d->cb, 0, sizeof d->cb);
        d->cb.aio_fildes = (uint32_t)d->fd;
        d->cb.aio_lio_opcode = kind == 1 ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
        d->cb.aio_buf = (uint64_t)(uintptr_t)buf;
        d->cb.aio_nbytes = n;
        d->cb.aio_offset = (int64_t)off;
        struct iocb *list[1] = {&d->cb};
        if (syscall(SYS_io_submit, d->ctx, 1, list) == 1) {
            d->inflight = kind;
            return LM_OK;
        }
    }
    /* No asynchronous I/O (none here, or out of resources): do it now. */
    if (kind == 1) {
        if (!d->direct || pwrite(d->fd, buf, n, (off_t)off) != (ssize_t)n) {
            set_buffered(d);
            return lm_pwrite_all(d->fd, buf, n, off, d->path, err);
        }
        return LM_OK;
    }
    size_t k = 0;
    ssize_t w = d->direct ? pread(d->fd, buf, n, (off_t)off) : -1;
    if (w >= 0) k = (size_t)w;
    if (w < 0) set_buffered(d);
    size_t more = 0;
    rc = k < n && (w < 0 || k > 0) ? pread_all(d, (char *)buf + k, n - k, off + k, &more, err) : LM_OK;
    d->ready = k + more;
    d->inflight = 3;
    return rc;
}

int lm_dio_write(lm_dio *d, const void *buf, size_t n, uint64_t off, lm_err *err)
{
    return start(d, 1, (void *)buf, n, off, err);
}

int lm_dio_read(lm_dio *d, void *buf, size_t n, uint64_t off, lm_err *err)
{
    return start(d, 2, buf, n, off, err);
}

int lm_dio_buffered(lm_dio *d, lm_err *err)
{
    int rc = lm_dio_wait(d, NULL, err);
    if (d->direct) set_buffered(d);
    return rc;
}

void lm_dio_close(lm_dio *d)
{
    lm_err ignored = {0};
    lm_dio_wait(d, NULL, &ignored);
    if (d->ctx) syscall(SYS_io_destroy, d->ctx);
    d->ctx = 0;
    if (d->fd >= 0) close(d->fd);
    d->fd = -1;
}
