/* test_safetensors.c: round trip, and every way a file can be damaged is refused. */
#include "model/safetensors.h"

#include <stdio.h>

#include "lm_check.h"
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[512];

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static size_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (size_t)st.st_size : 0;
}

static void write_sample(const char *p)
{
    float w[6] = {1, 2, 3, 4, 5, 6};
    double b[2] = {0.5, -0.25};
    lm_st_tensor t[2] = {
        {.name = "meta.w", .dtype = LM_DT_F32, .ndim = 2, .shape = {2, 3}, .data = w, .nbytes = sizeof w},
        {.name = "meta.b", .dtype = LM_DT_F64, .ndim = 1, .shape = {2}, .data = b, .nbytes = sizeof b}};
    const char *k[] = {"architecture"}, *v[] = {"{\"meta\": [3, 2]}"};
    lm_err err = {0};
    int rc = lm_st_write(p, t, 2, k, v, 1, &err);
    CHECK(rc == LM_OK, "write: %s", err.msg);
}

static void corrupt_byte(const char *p, long off)
{
    FILE *f = fopen(p, "r+b");
    fseek(f, off, off < 0 ? SEEK_END : SEEK_SET);
    int c = fgetc(f);
    fseek(f, -1, SEEK_CUR);
    fputc(c ^ 0x40, f);
    fclose(f);
}

int main(void)
{
    const char *tmp = getenv("LM_TMP");
    snprintf(dir, sizeof dir, "%s/st-%d", tmp ? tmp : "/tmp", (int)getpid());
    char cmd[600];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    if (system(cmd) != 0) return 1;
    char p[600];
    path_of(p, sizeof p, "m.safetensors");
    write_sample(p);

    lm_err err = {0};
    lm_st_file *f = NULL;
    int rc = lm_st_open(&f, p, &err);
    CHECK(rc == LM_OK, "open: %s", err.msg);
    if (f) {
        CHECK(lm_st_count(f) == 2, "count %zu", lm_st_count(f));
        const lm_st_tensor *w = lm_st_find(f, "meta.w");
        CHECK(w && w->dtype == LM_DT_F32 && w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3,
              "meta.w shape");
        CHECK(w && ((const float *)w->data)[5] == 6.0f, "meta.w data");
        const lm_st_tensor *b = lm_st_find(f, "meta.b");
        CHECK(b && ((const double *)b->data)[1] == -0.25, "meta.b data");
        CHECK(lm_st_meta(f, "architecture") && strstr(lm_st_meta(f, "architecture"), "meta"), "metadata");
        CHECK(lm_st_meta(f, "lm_format") && !strcmp(lm_st_meta(f, "lm_format"), LM_ST_FORMAT), "format");
        CHECK(lm_st_find(f, "nope") == NULL, "missing tensor");
        /* the header is 8-byte aligned, so the data is too */
        CHECK(((uintptr_t)w->data & 7) == 0, "alignment");
        lm_st_close(f);
    }

    /* a flipped data byte: checksum */
    corrupt_byte(p, -3);
    f = NULL;
    memset(&err, 0, sizeof err);
    rc = lm_st_open(&f, p, &err);
    CHECK(rc == LM_EFORMAT && strstr(err.msg, "checksum"), "corrupt data: rc %d %s", rc, err.msg);
    lm_st_close(f);

    /* truncated */
    write_sample(p);
    CHECK(truncate(p, (off_t)file_size(p) - 5) == 0, "truncate");
    memset(&err, 0, sizeof err);
    f = NULL;
    rc = lm_st_open(&f, p, &err);
    CHECK(rc == LM_EFORMAT && strstr(err.msg, "truncated"), "truncated: rc %d %s", rc, err.msg);
    lm_st_close(f);
    CHECK(truncate(p, 4) == 0, "truncate");
    memset(&err, 0, sizeof err);
    rc = lm_st_open(&f, p, &err);
    CHECK(rc == LM_EFORMAT, "tiny file: rc %d %s", rc, err.msg);

    /* a damaged header */
    write_sample(p);
    corrupt_byte(p, 9);
    memset(&err, 0, sizeof err);
    f = NULL;
    rc = lm_st_open(&f, p, &err);
    CHECK(rc == LM_EFORMAT, "damaged header: rc %d %s", rc, err.msg);
    lm_st_close(f);

    /* another version */
    write_sample(p);
    {
        FILE *fp = fopen(p, "r+b");
        char buf[4096];
        size_t n = fread(buf, 1, sizeof buf, fp);
        char *v = memmem(buf, n, "\"lm_format\":\"1\"", 15);
        CHECK(v != NULL, "format key present");
        if (v) {
            fseek(fp, (long)(v - buf) + 13, SEEK_SET);
            fputc('9', fp);
        }
        fclose(fp);
    }
    memset(&err, 0, sizeof err);
    f = NULL;
    rc = lm_st_open(&f, p, &err);
    CHECK(rc == LM_EVERSION && strstr(err.msg, "version 9"), "version: rc %d %s", rc, err.msg);
    lm_st_close(f);

    /* missing file */
    memset(&err, 0, sizeof err);
    path_of(p, sizeof p, "absent.safetensors");
    rc = lm_st_open(&f, p, &err);
    CHECK(rc == LM_ENOTFOUND && strstr(err.msg, "absent.safetensors"), "missing: rc %d %s", rc, err.msg);

    /* an atomic write leaves no temporary file behind */
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c tmp", dir);
    FILE *ls = popen(cmd, "r");
    int ntmp = -1;
    if (ls) {
        if (fscanf(ls, "%d", &ntmp) != 1) ntmp = -1;
        pclose(ls);
    }
    CHECK(ntmp == 0, "temporary files left: %d", ntmp);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "cleanup");
    return CHECK_DONE();
}
