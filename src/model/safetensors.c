/* safetensors.c: reading and writing safetensors files (see safetensors.h). The header is
 * JSON, handled with cJSON; the data is memory-mapped on read. */
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *dt_names[] = {"F32", "F64", "I64", "U8", "F16", "I8", "U32"};
static const size_t dt_sizes[] = {4, 8, 8, 1, 2, 1, 4};
#define NDT (sizeof dt_names / sizeof dt_names[0])

size_t lm_dt_size(int dtype)
{
    return dtype >= 0 && (size_t)dtype < NDT ? dt_sizes[dtype] : 0;
}

static uint64_t numel(const lm_st_tensor *t)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

int lm_st_write(const char *path, const lm_st_tensor *t, size_t n, const char *const *meta_keys,
                const char *const *meta_vals, size_t nmeta, lm_err *err)
{
    /* checksum over the data bytes, in file order */
    lm_checksum *ck = lm_checksum_new();
    if (!ck) return lm_err_set(err, LM_ENOMEM, "out of memory");
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        LM_ASSERT(t[i].nbytes == numel(&t[i]) * lm_dt_size(t[i].dtype));
        lm_checksum_update(ck, t[i].data, t[i].nbytes);
        total += t[i].nbytes;
    }
    char sum[17];
    snprintf(sum, sizeof sum, "%016" PRIx64, lm_checksum_digest(ck));
    lm_checksum_free(ck);

    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    for (size_t i = 0; i < nmeta; i++) cJSON_AddStringToObject(meta, meta_keys[i], meta_vals[i]);
    cJSON_AddStringToObject(meta, "lm_format", LM_ST_FORMAT);
    cJSON_AddStringToObject(meta, "lm_checksum", sum);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        cJSON_AddStringToObject(e, "dtype", dt_names[t[i].dtype]);
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (uint32_t d = 0; d < t[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + t[i].nbytes)));
        off += t[i].nbytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return lm_err_set(err, LM_ENOMEM, "out of memory");
    size_t jlen = strlen(json), hlen = (jlen + 7) & ~(size_t)7;
    size_t fsize = 8 + hlen + (size_t)total;
    char *buf = malloc(fsize);
    if (!buf) {
        cJSON_free(json);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    uint64_t h = hlen;
    memcpy(buf, &h, 8); /* little-endian: this build targets x86-64 and arm64 */
    memcpy(buf + 8, json, jlen);
    memset(buf + 8 + jlen, ' ', hlen - jlen);
    cJSON_free(json);
    char *p = buf + 8 + hlen;
    for (size_t i = 0; i < n; i++) {
        memcpy(p, t[i].data, t[i].nbytes);
        p += t[i].nbytes;
    }
    int rc = lm_write_file_atomic(path, buf, fsize, err);
    free(buf);
    return rc;
}

struct lm_st_file {
    char *path;
    const char *map;
    size_t len;
    lm_st_tensor *t;
    size_t n;
    cJSON *meta;
    cJSON *root;
};

static int fail(lm_st_file *f, lm_err *err, int code, const char *what)
{
    int rc = lm_err_set(err, code, "%s: %s", f->path, what);
    lm_st_close(f);
    return rc;
}

static int cmp_off(const void *a, const void *b)
{
    const lm_st_tensor *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data;
}

int lm_st_open(lm_st_file **out, const char *path, lm_err *err)
{
    *out = NULL;
    lm_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = lm_strdup(path))) {
        free(f);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = lm_err_errno(err, errno == ENOENT ? LM_ENOTFOUND : LM_EIO, "%s: cannot open", path);
        lm_st_close(f);
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(f, err, LM_EIO, "not a regular file");
    }
    f->len = (size_t)st.st_size;
    if (f->len < 10) {
        close(fd);
        return fail(f, err, LM_EFORMAT, "truncated (too short to be a safetensors file)");
    }
    void *m = mmap(NULL, f->len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return fail(f, err, LM_EIO, "mmap failed");
    f->map = m;
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > f->len - 8 || hlen > (100u << 20))
        return fail(f, err, LM_EFORMAT, "truncated or not a safetensors file (header length)");
    f->root = cJSON_ParseWithLength(f->map + 8, (size_t)hlen);
    if (!f->root || !cJSON_IsObject(f->root)) return fail(f, err, LM_EFORMAT, "header is not a JSON object");
    const char *data = f->map + 8 + hlen;
    size_t dlen = f->len - 8 - (size_t)hlen;
    int count = cJSON_GetArraySize(f->root);
    f->t = calloc((size_t)count + 1, sizeof *f->t);
    if (!f->t) return fail(f, err, LM_ENOMEM, "out of memory");
    const cJSON *e;
    cJSON_ArrayForEach(e, f->root)
    {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) return fail(f, err, LM_EFORMAT, "__metadata__ is not an object");
            f->meta = (cJSON *)e;
            continue;
        }
        lm_st_tensor *t = &f->t[f->n];
        if (strlen(e->string) >= LM_ST_NAME_MAX) return fail(f, err, LM_EFORMAT, "tensor name too long");
        strcpy(t->name, e->string);
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
            return fail(f, err, LM_EFORMAT, "a tensor entry lacks dtype, shape or data_offsets");
        t->dtype = -1;
        for (size_t k = 0; k < NDT; k++)
            if (!strcmp(dt->valuestring, dt_names[k])) t->dtype = (int)k;
        if (t->dtype < 0) return fail(f, err, LM_EFORMAT, "unsupported dtype");
        int nd = cJSON_GetArraySize(sh);
        if (nd > LM_ST_MAX_DIMS) return fail(f, err, LM_EFORMAT, "too many dimensions");
        t->ndim = (uint32_t)nd;
        int d = 0;
        const cJSON *s;
        cJSON_ArrayForEach(s, sh)
        {
            if (!cJSON_IsNumber(s) || s->valuedouble < 0 || s->valuedouble > 1e15)
                return fail(f, err, LM_EFORMAT, "bad shape");
            t->shape[d++] = (uint64_t)s->valuedouble;
        }
        double b = cJSON_GetArrayItem(of, 0)->valuedouble, en = cJSON_GetArrayItem(of, 1)->valuedouble;
        if (!(b >= 0 && en >= b && en <= (double)dlen))
            return fail(f, err, LM_EFORMAT, "truncated (tensor data past the end)");
        t->data = data + (size_t)b;
        t->nbytes = (size_t)(en - b);
        if (t->nbytes != numel(t) * lm_dt_size(t->dtype))
            return fail(f, err, LM_EFORMAT, "tensor size does not match its shape");
        f->n++;
    }
    /* Tensors must tile the data exactly (as the reference implementation requires). */
    lm_st_tensor *sorted = malloc((f->n + 1) * sizeof *sorted);
    if (!sorted) return fail(f, err, LM_ENOMEM, "out of memory");
    memcpy(sorted, f->t, f->n * sizeof *sorted);
    qsort(sorted, f->n, sizeof *sorted, cmp_off);
    const char *next = data;
    int holes = 0;
    for (size_t i = 0; i < f->n; i++) {
        if ((const char *)sorted[i].data != next) holes = 1;
        next = (const char *)sorted[i].data + sorted[i].nbytes;
    }
    free(sorted);
    if (holes || next != data + dlen)
        return fail(f, err, LM_EFORMAT, "tensor data has holes or trailing bytes (truncated or corrupt)");
    const char *ver = lm_st_meta(f, "lm_format");
    if (ver && strcmp(ver, LM_ST_FORMAT) != 0) {
        int rc = lm_err_set(err, LM_EVERSION, "%s: model format version %s, this build reads version %s",
                            path, ver, LM_ST_FORMAT);
        lm_st_close(f);
        return rc;
    }
    const char *sum = lm_st_meta(f, "lm_checksum");
    if (sum) {
        char got[17];
        snprintf(got, sizeof got, "%016" PRIx64, lm_hash64(data, dlen, 0));
        if (strcmp(got, sum) != 0) return fail(f, err, LM_EFORMAT, "checksum mismatch (corrupt file)");
    }
    *out = f;
    return LM_OK;
}

void lm_st_close(lm_st_file *f)
{
    if (!f) return;
    if (f->map) munmap((void *)f->map, f->len);
    cJSON_Delete(f->root);
    free(f->t);
    free(f->path);
    free(f);
}

size_t lm_st_count(const lm_st_file *f)
{
    return f->n;
}
const lm_st_tensor *lm_st_get(const lm_st_file *f, size_t i)
{
    return i < f->n ? &f->t[i] : NULL;
}

const lm_st_tensor *lm_st_find(const lm_st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

const char *lm_st_meta(const lm_st_file *f, const char *key)
{
    if (!f->meta) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(f->meta, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
