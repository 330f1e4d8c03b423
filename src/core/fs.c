/* fs.c: files written so that a crash never leaves a half-written output behind: data goes to
 * a temporary name, is fsynced, and is renamed into place; the folder is fsynced too. */
#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *lm_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

char *lm_path_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return lm_strdup(".");
    if (slash == path) return lm_strdup("/");
    return lm_strndup(path, (size_t)(slash - path));
}

int lm_read_file(const char *path, char **data, size_t *len, lm_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lm_err_errno(err, errno == ENOENT ? LM_ENOTFOUND : LM_EIO, "%s", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return lm_err_errno(err, LM_EIO, "%s", path);
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return lm_err_set(err, LM_EIO, "%s: is a directory", path);
    }
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return lm_err_set(err, LM_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                close(fd);
                return lm_err_set(err, LM_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            free(buf);
            close(fd);
            return lm_err_errno(err, LM_EIO, "%s: read", path);
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return LM_OK;
}

int lm_write_all(int fd, const void *p, size_t n, const char *path, lm_err *err)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return lm_err_errno(err, LM_EIO, "%s: write", path);
        }
        c += w;
        n -= (size_t)w;
    }
    return LM_OK;
}

int lm_pwrite_all(int fd, const void *p, size_t n, uint64_t off, const char *path, lm_err *err)
{
    const char *c = p;
    while (n) {
        ssize_t w = pwrite(fd, c, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR) continue;
            return lm_err_errno(err, LM_EIO, "%s: write", path);
        }
        c += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return LM_OK;
}

int lm_fsync_dir_of(const char *path, lm_err *err)
{
    char *dir = lm_path_dir(path);
    if (!dir) return lm_err_set(err, LM_ENOMEM, "out of memory");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int r = lm_err_errno(err, LM_EIO, "%s: open folder", dir);
        free(dir);
        return r;
    }
    int rc = fsync(fd);
    close(fd);
    if (rc != 0 && errno != EINVAL) {
        int r = lm_err_errno(err, LM_EIO, "%s: fsync", dir);
        free(dir);
        return r;
    }
    free(dir);
    return LM_OK;
}

int lm_write_file_atomic(const char *path, const void *data, size_t n, lm_err *err)
{
    size_t len = strlen(path);
    char *tmp = malloc(len + 16);
    if (!tmp) return lm_err_set(err, LM_ENOMEM, "out of memory");
    snprintf(tmp, len + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int r = lm_err_errno(err, LM_EIO, "%s: create", tmp);
        free(tmp);
        return r;
    }
    /* mkstemp makes the file 0600; outputs are meant to be read by others (a server). */
    int rc = fchmod(fd, 0644) == 0 ? LM_OK : lm_err_errno(err, LM_EIO, "%s: chmod", tmp);
    if (rc == LM_OK) rc = lm_write_all(fd, data, n, tmp, err);
    if (rc == LM_OK && fsync(fd) != 0) rc = lm_err_errno(err, LM_EIO, "%s: fsync", tmp);
    if (close(fd) != 0 && rc == LM_OK) rc = lm_err_errno(err, LM_EIO, "%s: close", tmp);
    if (rc == LM_OK && rename(tmp, path) != 0) rc = lm_err_errno(err, LM_EIO, "%s: rename", path);
    if (rc != LM_OK) unlink(tmp);
    free(tmp);
    if (rc == LM_OK) rc = lm_fsync_dir_of(path, err);
    return rc;
}

int lm_rmtree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *sub = lm_path_join(path, e->d_name);
        if (!sub || lm_rmtree(sub) != 0) rc = -1;
        free(sub);
    }
    closedir(d);
    if (rmdir(path) != 0) rc = -1;
    return rc;
}

int lm_mktemp_dir_beside(const char *final_path, char **out, lm_err *err)
{
    size_t len = strlen(final_path);
    while (len > 1 && final_path[len - 1] == '/') len--;
    char *tmp = malloc(len + 16);
    if (!tmp) return lm_err_set(err, LM_ENOMEM, "out of memory");
    memcpy(tmp, final_path, len);
    memcpy(tmp + len, ".tmp.XXXXXX", 12);
    if (!mkdtemp(tmp)) {
        int r = lm_err_errno(err, LM_EIO, "%.*s: cannot create a temporary folder beside it", (int)len,
                             final_path);
        free(tmp);
        return r;
    }
    chmod(tmp, 0755);
    *out = tmp;
    return LM_OK;
}

int lm_publish_dir(const char *tmp, const char *final_path, int force, lm_err *err)
{
    struct stat st;
    char *old = NULL;
    if (lstat(final_path, &st) == 0) {
        if (!force)
            return lm_err_set(err, LM_EEXIST, "%s: already exists (use --force to replace it)", final_path);
        /* Move the old output aside first so the new one appears in one rename. */
        size_t len = strlen(final_path);
        old = malloc(len + 16);
        if (!old) return lm_err_set(err, LM_ENOMEM, "out of memory");
        snprintf(old, len + 16, "%s.old.XXXXXX", final_path);
        if (!mkdtemp(old)) {
            int r = lm_err_errno(err, LM_EIO, "%s: cannot make room to replace it", final_path);
            free(old);
            return r;
        }
        if (rename(final_path, old) != 0) {
            int r = lm_err_errno(err, LM_EIO, "%s: cannot move the old output aside", final_path);
            rmdir(old);
            free(old);
            return r;
        }
    }
    if (rename(tmp, final_path) != 0) {
        int r = lm_err_errno(err, LM_EIO, "%s: rename", final_path);
        if (old) rename(old, final_path);
        free(old);
        return r;
    }
    if (old) {
        lm_rmtree(old);
        free(old);
    }
    return lm_fsync_dir_of(final_path, err);
}

double lm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t lm_peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024;
}
