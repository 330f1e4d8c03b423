/* mem.c: allocation helpers that check for size overflow. */
#include "core/core.h"

#include <string.h>

void *lm_malloc_array(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) return NULL;
    return malloc(n * size > 0 ? n * size : 1);
}

void *lm_realloc_array(void *p, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) return NULL;
    return realloc(p, n * size > 0 ? n * size : 1);
}

char *lm_strdup(const char *s)
{
    return s ? lm_strndup(s, strlen(s)) : NULL;
}

char *lm_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

int lm_grow(void **buf, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) return LM_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2) return LM_ENOMEM;
        c *= 2;
    }
    void *p = lm_realloc_array(*buf, c, size);
    if (!p) return LM_ENOMEM;
    *buf = p;
    *cap = c;
    return LM_OK;
}
