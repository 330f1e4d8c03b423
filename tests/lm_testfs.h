/* lm_testfs.h: files and folders for tests: mkdir -p, and a text file written whole (a test
 * that cannot write its input stops at once, saying which file). */
#ifndef LM_TESTS_TESTFS_H
#define LM_TESTS_TESTFS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static inline void lm_test_mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(buf, 0755);
        *p = '/';
    }
    mkdir(buf, 0755);
}

static inline void lm_test_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    size_t n = strlen(text);
    if (!f || fwrite(text, 1, n, f) != n || fclose(f) != 0) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
}

#endif
