/* lm_testcase.h: the case harness of the data tests: a case passes when none of its CHECKs
 * failed (begin/end count cases, not checks), plus small helpers they share: a path exists,
 * JSON written with single quotes, a message holding '|'-separated phrases, a growing text
 * buffer, a task by its key, the MovieLens folder. Each test program includes it once (static definitions). */
#ifndef LM_TESTS_TESTCASE_H
#define LM_TESTS_TESTCASE_H

#include "core/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *g_case = "";
static int g_case_fails, g_passed, g_failed;
static char g_base[4096]; /* the program's scratch folder */

#define CHECK(c, ...)                                                                                        \
    do {                                                                                                     \
        if (!(c)) {                                                                                          \
            g_case_fails++;                                                                                  \
            fprintf(stderr, "FAIL [%s] %s:%d: %s: ", g_case, __FILE__, __LINE__, #c);                        \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
        }                                                                                                    \
    } while (0)

static void begin(const char *name)
{
    g_case = name;
    g_case_fails = 0;
}

static void end(void)
{
    if (g_case_fails) {
        g_failed++;
        fprintf(stderr, "not ok: %s\n", g_case);
    } else {
        g_passed++;
        printf("ok: %s\n", g_case);
    }
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* JSON written with single quotes for readability: ' becomes ". Caller frees. */
static char *q(const char *s)
{
    char *r = lm_strdup(s);
    for (char *c = r; *c; c++)
        if (*c == '\'') *c = '"';
    return r;
}

/* Every '|'-separated phrase of `phrases` occurs in `msg`. */
static int has_phrases(const char *msg, const char *phrases)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", phrases);
    for (char *s = strtok(buf, "|"); s; s = strtok(NULL, "|"))
        if (!strstr(msg, s)) return 0;
    return 1;
}

/* A growing text buffer. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        b->p = realloc(b->p, cap);
        b->cap = cap;
    }
}

/* A 31-bit pseudo-random number (an LCG): inputs that need no better. */
/* The task with key `key` (NUL-terminated; LM_KEY_SEP inside for composite keys), or NULL. */
static const lm_task *find_task(const lm_dataset *ds, const char *key)
{
    uint64_t t;
    return lm_dataset_find_task(ds, key, strlen(key), &t) == LM_OK ? lm_dataset_task(ds, t) : NULL;
}

/* The MovieLens-100K folder under LM_SHARED (malloc'd), or NULL after printing why the case
 * is skipped. */
static char *movielens_folder(const char *shared)
{
    char *ml = shared ? lm_path_join(shared, "data/ml-100k") : NULL;
    char *udata = ml ? lm_path_join(ml, "u.data") : NULL;
    int there = udata && exists(udata);
    free(udata);
    if (there) return ml;
    printf("skip: MovieLens-100K (no LM_SHARED/data/ml-100k)\n");
    free(ml);
    return NULL;
}

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

#endif
