/* hash.c: hashing and checksums through xxHash (libxxhash), and the random number generator. */
#include "core/core.h"

#include <math.h>
#include <xxhash.h>

uint64_t lm_hash64(const void *p, size_t n, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, n, seed);
}

struct lm_checksum {
    XXH3_state_t *st;
};

lm_checksum *lm_checksum_new(void)
{
    lm_checksum *c = malloc(sizeof *c);
    if (!c) return NULL;
    c->st = XXH3_createState();
    if (!c->st) {
        free(c);
        return NULL;
    }
    XXH3_64bits_reset(c->st);
    return c;
}

void lm_checksum_update(lm_checksum *c, const void *p, size_t n)
{
    XXH3_64bits_update(c->st, p, n);
}

uint64_t lm_checksum_digest(const lm_checksum *c)
{
    return XXH3_64bits_digest(c->st);
}

void lm_checksum_free(lm_checksum *c)
{
    if (!c) return;
    XXH3_freeState(c->st);
    free(c);
}

/* ---- rng ------------------------------------------------------------------------------------ */

uint64_t lm_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void lm_rng_seed(lm_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        r->s[i] = lm_mix64(x);
        x += 0x9e3779b97f4a7c15ULL;
    }
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t lm_rng_next(lm_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double lm_rng_uniform(lm_rng *r)
{
    return (double)(lm_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t lm_rng_below(lm_rng *r, uint64_t n)
{
    /* Lemire's multiply-shift; the tiny bias is irrelevant for sampling tasks and items. */
    return (uint64_t)(((unsigned __int128)lm_rng_next(r) * n) >> 64);
}

double lm_rng_normal(lm_rng *r)
{
    /* Box-Muller; one value per call keeps the state simple to checkpoint. */
    double u1 = lm_rng_uniform(r), u2 = lm_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
