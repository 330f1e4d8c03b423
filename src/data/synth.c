/* synth.c: a synthetic click-through log in which personalization matters.
 *
 * The log imitates a notification feed: members (tasks) receive items on one of four channels
 * and click or not. Each member's taste is a segment's shared vector plus a personal deviation
 * that the member's features barely reveal, and it drifts over time; members differ in base
 * click rate, channel taste and activity (a heavy tail: most have a handful of examples, a few
 * have hundreds), and some join only near the end of the log. A global model therefore leaves a
 * lot on the table that per-task adaptation can recover.
 *
 * Everything about task i is derived from a random stream seeded by (seed, i), everything about
 * item j from (seed, j), so no per-task state outlives its block: tasks are generated 4096 at a
 * time, the block's rows are sorted by (ts, user_id) and written, and memory stays the size of
 * one block (plus a table of `items` entries) whatever the number of tasks. Numbers are
 * formatted by hand into a large buffer; printf would cost more than everything else together.
 */
#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ============================================================================================
 * Constants of the generative model
 * ========================================================================================== */

#define SY_DIM 8            /* latent dimension of tastes and items */
#define SY_NSEG 6           /* member segments */
#define SY_NCHAN 4          /* notification channels */
#define SY_T0 1700000000ULL /* first second of the log */

#define SY_BLOCK_TASKS 4096u          /* tasks per block (fewer when tasks are large) */
#define SY_BLOCK_ROWS (1u << 17)      /* aim for about this many rows per block */
#define SY_ITEMS_MAX 10000000u        /* the item table costs about 110 bytes per item */
#define SY_EXAMPLES_MAX 1000000u      /* per task: bounds a block's memory */
#define SY_DAYS_MAX 36500.0           /* keeps ts offsets within 32 bits */
#define SY_TASKS_MAX 1000000000000ULL /* 10^12: far beyond any disk, and no id overflow */
#define SY_OUTBUF (4u << 20)          /* output buffer */
#define SY_LINE_MAX 512               /* a line is at most ~200 bytes; flush below this */
#define SY_FEAT_SLOT 64               /* item feature text: 63 bytes and a length byte */
#define SY_META_SLOT 32               /* task meta text */

static const double SY_B0 = -0.75;         /* global intercept: about 40% positives */
static const double SY_SEG_SD = 0.6;       /* segment taste u_s, per dimension */
static const double SY_DEV_SD = 1.0;       /* personal deviation d_i: larger than u_s */
static const double SY_META_SHIFT = 0.35;  /* how much age, gender, tenure move d_i */
static const double SY_DRIFT_SD = 0.7;     /* taste drift r_i over one horizon */
static const double SY_BASE_SD = 1.0;      /* personal base rate a_i */
static const double SY_SEG_BASE_SD = 0.3;  /* segment base rate */
static const double SY_CHAN_SD = 0.6;      /* personal channel effects c_{i,ch} */
static const double SY_CHAN_PREF_SD = 1.2; /* spread of a task's channel preferences (log) */
static const double SY_ITEM_BIAS_SD = 0.5; /* item bias b_j */
static const double SY_DOT_SCALE = 1.5;    /* weight of taste . item / sqrt(8) */
static const double SY_FEAT_NOISE = 0.3;   /* item features = q_j + noise */
static const double SY_HOUR_AMP = 0.25;    /* diurnal effect, peaking at 20:00 UTC */
static const double SY_COUNT_SIGMA = 1.1;  /* log-sd of the examples-per-task law */

static const double sy_chan_global[SY_NCHAN] = {0.3, 0.0, -0.3, -0.6};
static const double sy_seg_weight[SY_NSEG] = {0.24, 0.20, 0.18, 0.15, 0.13, 0.10};
static const double sy_seg_age[SY_NSEG] = {0.22, 0.30, 0.38, 0.46, 0.55, 0.66};
static const double sy_seg_gender[SY_NSEG] = {-0.8, 0.8, -0.3, 0.3, 0.0, -0.5}; /* logit */
static const double SY_AGE_SD = 0.08;

/* Stream domains, so that tasks, items and segments never share random numbers. */
#define SY_DOM_TASK 0x7461736b5f5f5f31ULL
#define SY_DOM_ITEM 0x6974656d5f5f5f32ULL
#define SY_DOM_SEG 0x7365676d5f5f5f33ULL
#define SY_DOM_PERM 0x7065726d5f5f5f34ULL

static const char sy_header[] =
    "user_id,ts,clicked,channel,item_id,m_age,m_gender,m_seg0,m_seg1,m_seg2,m_seg3,m_seg4,"
    "m_seg5,m_tenure,i_f0,i_f1,i_f2,i_f3,i_f4,i_f5,i_f6,i_f7,ctx_hour\n";

/* ============================================================================================
 * Options
 * ========================================================================================== */

void lm_synth_opts_default(lm_synth_opts *o)
{
    memset(o, 0, sizeof *o);
    o->tasks = 10000;
    o->seed = 1;
    o->mean_examples = 12;
    o->max_examples = 1000;
    o->items = 5000;
    o->days = 60;
    o->new_frac = 0.1;
}

static int check_opts(const lm_synth_opts *o, lm_err *err)
{
    if (o->tasks < 1 || o->tasks > SY_TASKS_MAX)
        return lm_err_set(err, LM_EINVAL, "tasks: must be between 1 and %llu, got %llu",
                          (unsigned long long)SY_TASKS_MAX, (unsigned long long)o->tasks);
    if (o->max_examples < 1 || o->max_examples > SY_EXAMPLES_MAX)
        return lm_err_set(err, LM_EINVAL, "max_examples: must be between 1 and %u, got %u", SY_EXAMPLES_MAX,
                          o->max_examples);
    if (!(o->mean_examples >= 1 && o->mean_examples <= (double)o->max_examples))
        return lm_err_set(err, LM_EINVAL, "mean_examples: must be between 1 and max_examples (%u), got %g",
                          o->max_examples, o->mean_examples);
    if (o->items < 2 || o->items > SY_ITEMS_MAX)
        return lm_err_set(err, LM_EINVAL, "items: must be between 2 and %u, got %u", SY_ITEMS_MAX, o->items);
    if (!(o->days > 0 && o->days <= SY_DAYS_MAX))
        return lm_err_set(err, LM_EINVAL, "days: must be above 0 and at most %g, got %g", SY_DAYS_MAX,
                          o->days);
    if (!(o->new_frac >= 0 && o->new_frac < 1))
        return lm_err_set(err, LM_EINVAL, "new_frac: must be in [0, 1), got %g", o->new_frac);
    return LM_OK;
}

/* ============================================================================================
 * Number formatting
 * ========================================================================================== */

static const char sy_digits2[201] = "00010203040506070809101112131415161718192021222324252627282930"
                                    "31323334353637383940414243444546474849505152535455565758596061"
                                    "62636465666768697071727374757677787980818283848586878889909192"
                                    "93949596979899";

/* Decimal digits of v at p; returns the end. */
static inline char *put_u64(char *p, uint64_t v)
{
    char tmp[24];
    char *e = tmp + sizeof tmp, *s = e;
    while (v >= 100) {
        unsigned d = (unsigned)(v % 100);
        v /= 100;
        s -= 2;
        memcpy(s, sy_digits2 + 2 * d, 2);
    }
    if (v >= 10) {
        s -= 2;
        memcpy(s, sy_digits2 + 2 * v, 2);
    } else {
        *--s = (char)('0' + v);
    }
    size_t n = (size_t)(e - s);
    memcpy(p, s, n);
    return p + n;
}

/* v / 10^places with exactly `places` (2 or 4) decimals; v is already rounded. */
static inline char *put_fixed(char *p, int64_t v, int places)
{
    if (v < 0) {
        *p++ = '-';
        v = -v;
    }
    uint64_t scale = places == 2 ? 100 : 10000;
    p = put_u64(p, (uint64_t)v / scale);
    *p++ = '.';
    unsigned f = (unsigned)((uint64_t)v % scale);
    if (places == 4) {
        memcpy(p, sy_digits2 + 2 * (f / 100), 2);
        memcpy(p + 2, sy_digits2 + 2 * (f % 100), 2);
        return p + 4;
    }
    memcpy(p, sy_digits2 + 2 * f, 2);
    return p + 2;
}

/* ============================================================================================
 * Random helpers
 * ========================================================================================== */

/* n standard normals by Box-Muller, both outputs of each pair used. */
static void sy_normals(lm_rng *r, double *out, int n)
{
    for (int i = 0; i < n; i += 2) {
        double u1 = lm_rng_uniform(r), u2 = lm_rng_uniform(r);
        if (u1 < 1e-300) u1 = 1e-300;
        double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
        out[i] = rad * cos(th);
        if (i + 1 < n) out[i + 1] = rad * sin(th);
    }
}

static void sy_seed_stream(lm_rng *r, uint64_t seed, uint64_t domain, uint64_t id)
{
    lm_rng_seed(r, lm_mix64(lm_mix64(seed ^ domain) ^ lm_mix64(id)));
}

static inline double sy_clamp(double x, double lo, double hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

/* ============================================================================================
 * The run's shared tables: items and segments
 * ========================================================================================== */

typedef struct sy_model {
    uint32_t items;
    uint32_t horizon_s; /* seconds in the log */
    double horizon;     /* the same, as a double */
    double new_frac;
    double extra_mean; /* mean examples - 1 (every task has one for free) */
    uint32_t max_examples;
    uint64_t seed;
    float *q;            /* (items, SY_DIM): item latents, item_id j at row j-1 */
    float *bias;         /* (items): item biases b_j */
    uint32_t *alias_thr; /* (items): Zipf sampling by the alias method */
    uint32_t *alias_to;  /* (items) */
    char *feat;          /* (items, SY_FEAT_SLOT): "i_f0,...,i_f7" text, length last */
    double seg_pref[SY_NSEG][SY_DIM];
    double seg_base[SY_NSEG];
    double seg_cdf[SY_NSEG];
    double hour_eff[24];
} sy_model;

static void model_free(sy_model *m)
{
    free(m->q);
    free(m->bias);
    free(m->alias_thr);
    free(m->alias_to);
    free(m->feat);
}

/* Vose's alias table for weights w[0..n): one uniform 64-bit draw then picks an index in O(1).
 * `work` holds n indices. */
static void build_alias(const double *w, uint32_t n, uint32_t *thr, uint32_t *to, double *p, uint32_t *work)
{
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) sum += w[i];
    uint32_t ns = 0, nl = n; /* small indices grow from the front, large from the back */
    for (uint32_t i = 0; i < n; i++) {
        p[i] = w[i] * n / sum;
        if (p[i] < 1.0)
            work[ns++] = i;
        else
            work[--nl] = i;
    }
    while (ns > 0 && nl < n) {
        uint32_t s = work[--ns], l = work[nl];
        thr[s] = (uint32_t)(p[s] * 4294967296.0);
        to[s] = l;
        p[l] = (p[l] + p[s]) - 1.0;
        if (p[l] < 1.0) {
            nl++;
            work[ns++] = l;
        }
    }
    /* What is left has probability 1 up to rounding. */
    while (ns > 0) {
        uint32_t s = work[--ns];
        thr[s] = UINT32_MAX;
        to[s] = s;
    }
    while (nl < n) {
        uint32_t l = work[nl++];
        thr[l] = UINT32_MAX;
        to[l] = l;
    }
}

static int model_init(sy_model *m, const lm_synth_opts *o, lm_err *err)
{
    memset(m, 0, sizeof *m);
    m->items = o->items;
    m->horizon_s = (uint32_t)ceil(o->days * 86400.0);
    if (m->horizon_s < 1) m->horizon_s = 1;
    m->horizon = (double)m->horizon_s;
    m->new_frac = o->new_frac;
    m->extra_mean = o->mean_examples - 1.0;
    m->max_examples = o->max_examples;
    m->seed = o->seed;

    uint32_t n = o->items;
    m->q = lm_malloc_array((size_t)n * SY_DIM, sizeof *m->q);
    m->bias = lm_malloc_array(n, sizeof *m->bias);
    m->alias_thr = lm_malloc_array(n, sizeof *m->alias_thr);
    m->alias_to = lm_malloc_array(n, sizeof *m->alias_to);
    m->feat = lm_malloc_array(n, SY_FEAT_SLOT);
    double *w = lm_malloc_array(n, sizeof *w), *p = lm_malloc_array(n, sizeof *p);
    uint32_t *perm = lm_malloc_array(n, sizeof *perm);
    if (!m->q || !m->bias || !m->alias_thr || !m->alias_to || !m->feat || !w || !p || !perm) {
        free(w);
        free(p);
        free(perm);
        model_free(m);
        return lm_err_set(err, LM_ENOMEM, "synth: out of memory for a table of %u items", n);
    }

    /* Popularity: a random permutation of ranks, weight 1/rank (Zipf, exponent 1). */
    lm_rng r;
    sy_seed_stream(&r, o->seed, SY_DOM_PERM, 0);
    for (uint32_t i = 0; i < n; i++) perm[i] = i;
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)lm_rng_below(&r, (uint64_t)i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (uint32_t i = 0; i < n; i++) w[i] = 1.0 / (double)(perm[i] + 1);
    build_alias(w, n, m->alias_thr, m->alias_to, p, perm);
    free(w);
    free(p);
    free(perm);

    /* Items: latent q_j, bias b_j, and the features' text (a noisy view of q_j). */
    for (uint32_t i = 0; i < n; i++) {
        double z[2 * SY_DIM + 2];
        sy_seed_stream(&r, o->seed, SY_DOM_ITEM, (uint64_t)i + 1);
        sy_normals(&r, z, 2 * SY_DIM + 2);
        float *qi = m->q + (size_t)i * SY_DIM;
        char *slot = m->feat + (size_t)i * SY_FEAT_SLOT, *s = slot;
        for (int k = 0; k < SY_DIM; k++) {
            qi[k] = (float)z[k];
            double f = sy_clamp(z[k] + SY_FEAT_NOISE * z[SY_DIM + k], -9.9999, 9.9999);
            if (k) *s++ = ',';
            s = put_fixed(s, (int64_t)llround(f * 1e4), 4);
        }
        LM_ASSERT(s - slot < SY_FEAT_SLOT);
        slot[SY_FEAT_SLOT - 1] = (char)(s - slot);
        m->bias[i] = (float)(SY_ITEM_BIAS_SD * z[2 * SY_DIM]);
    }

    /* Segments: shared taste u_s and base rate; the mix of segments is fixed. */
    double c = 0;
    for (int s = 0; s < SY_NSEG; s++) {
        double z[SY_DIM + 2];
        sy_seed_stream(&r, o->seed, SY_DOM_SEG, (uint64_t)s);
        sy_normals(&r, z, SY_DIM + 2);
        for (int k = 0; k < SY_DIM; k++) m->seg_pref[s][k] = SY_SEG_SD * z[k];
        m->seg_base[s] = SY_SEG_BASE_SD * z[SY_DIM];
        c += sy_seg_weight[s];
        m->seg_cdf[s] = c;
    }
    m->seg_cdf[SY_NSEG - 1] = 2.0; /* absorb rounding: every uniform lands somewhere */
    for (int h = 0; h < 24; h++) m->hour_eff[h] = SY_HOUR_AMP * cos(6.283185307179586 * (h - 20) / 24.0);
    return LM_OK;
}

/* ============================================================================================
 * Tasks and rows of a block
 * ========================================================================================== */

typedef struct sy_task {
    lm_rng rng; /* continues from the parameters into the rows */
    uint64_t user_id;
    uint32_t n;            /* examples */
    double birth;          /* seconds after SY_T0 */
    double span;           /* horizon - birth */
    float pref[SY_DIM];    /* u_s + d_i: taste at birth */
    float drift[SY_DIM];   /* r_i: taste change over one horizon */
    double a;              /* b0 + segment and personal base rate */
    double chan[SY_NCHAN]; /* c_{i,ch} */
    double chan_cdf[SY_NCHAN - 1];
    char meta[SY_META_SLOT]; /* "m_age,...,m_tenure" text */
    uint32_t meta_len;
} sy_task;

typedef struct sy_row {
    uint32_t ts;   /* seconds after SY_T0 */
    uint32_t task; /* index in the block */
    uint32_t item; /* 1..items */
    uint8_t chan;
    uint8_t click;
} sy_row;

/* Task `index`: every parameter comes from one stream seeded by (seed, index), in a fixed
 * order, so a task is the same whatever block it falls in. */
static void task_derive(const sy_model *m, uint64_t index, sy_task *t)
{
    lm_rng *r = &t->rng;
    sy_seed_stream(r, m->seed, SY_DOM_TASK, index);
    enum {
        Z_COUNT,
        Z_AGE,
        Z_TENURE,
        Z_DEV,
        Z_DRIFT = Z_DEV + SY_DIM,
        Z_BASE = Z_DRIFT + SY_DIM,
        Z_CHAN,
        Z_CPREF = Z_CHAN + SY_NCHAN,
        Z_N = Z_CPREF + SY_NCHAN
    };
    double z[Z_N];
    sy_normals(r, z, Z_N);
    double u_seg = lm_rng_uniform(r), u_new = lm_rng_uniform(r), u_birth = lm_rng_uniform(r);
    double u_round = lm_rng_uniform(r), u_gender = lm_rng_uniform(r);

    int seg = 0;
    while (u_seg >= m->seg_cdf[seg]) seg++;
    t->user_id = index + 1;

    /* Activity: born early in the horizon, or (new tasks) in its last 10%. */
    int is_new = u_new < m->new_frac;
    t->birth = is_new ? m->horizon * (0.90 + 0.09 * u_birth) : m->horizon * 0.85 * u_birth;
    t->span = m->horizon - t->birth;

    /* Examples: 1 + a lognormal of mean (mean_examples - 1), stochastically rounded so the
     * mean is kept, then capped. Median about 7 for a mean of 12. */
    double x = m->extra_mean * exp(SY_COUNT_SIGMA * z[Z_COUNT] - 0.5 * SY_COUNT_SIGMA * SY_COUNT_SIGMA);
    double fl = floor(x);
    double cnt = 1.0 + fl + (u_round < x - fl ? 1.0 : 0.0);
    t->n = cnt >= (double)m->max_examples ? m->max_examples : (uint32_t)cnt;

    /* Meta features: the segment sets the age and gender odds; tenure follows the birth. */
    double age = sy_clamp(sy_seg_age[seg] + SY_AGE_SD * z[Z_AGE], 0.15, 0.80);
    int gender = u_gender < 1.0 / (1.0 + exp(-sy_seg_gender[seg]));
    double tenure = sy_clamp(0.9 * (1.0 - t->birth / m->horizon) + 0.08 * z[Z_TENURE], 0, 1);
    long age_c = lround(age * 100), ten_c = lround(tenure * 1e4);

    /* Taste: segment + personal deviation, which age, gender and tenure shift a little. */
    for (int k = 0; k < SY_DIM; k++) {
        double d = SY_DEV_SD * z[Z_DEV + k];
        if (k == 0) d += SY_META_SHIFT * z[Z_AGE];
        if (k == 1) d += SY_META_SHIFT * (gender ? 1.0 : -1.0);
        if (k == 2) d += SY_META_SHIFT * 2.0 * (tenure - 0.5);
        t->pref[k] = (float)(m->seg_pref[seg][k] + d);
        t->drift[k] = (float)(SY_DRIFT_SD * z[Z_DRIFT + k]);
    }
    t->a = SY_B0 + m->seg_base[seg] + SY_BASE_SD * z[Z_BASE];

    /* Channels: a personal effect on clicks, and a personal mix of how often each is used. */
    double w[SY_NCHAN], sw = 0;
    for (int c = 0; c < SY_NCHAN; c++) {
        t->chan[c] = sy_chan_global[c] + SY_CHAN_SD * z[Z_CHAN + c];
        w[c] = exp(SY_CHAN_PREF_SD * z[Z_CPREF + c]);
        sw += w[c];
    }
    double acc = 0;
    for (int c = 0; c < SY_NCHAN - 1; c++) {
        acc += w[c] / sw;
        t->chan_cdf[c] = acc;
    }

    char *s = t->meta;
    s = put_fixed(s, age_c, 2);
    *s++ = ',';
    *s++ = (char)('0' + gender);
    for (int k = 0; k < SY_NSEG; k++) {
        *s++ = ',';
        *s++ = k == seg ? '1' : '0';
    }
    *s++ = ',';
    s = put_fixed(s, ten_c, 4);
    t->meta_len = (uint32_t)(s - t->meta);
    LM_ASSERT(t->meta_len <= SY_META_SLOT);
}

/* The task's rows, drawn from its stream: time uniform over its active span, channel from its
 * mix, item by popularity, click from the model. */
static void task_rows(const sy_model *m, sy_task *t, uint32_t local, sy_row *out, uint64_t *positives)
{
    lm_rng *r = &t->rng;
    const double kdot = SY_DOT_SCALE / sqrt((double)SY_DIM);
    const uint32_t items = m->items;
    uint64_t pos = 0;
    for (uint32_t e = 0; e < t->n; e++) {
        double tf = t->birth + t->span * lm_rng_uniform(r);
        uint32_t ts = (uint32_t)tf;
        if (ts >= m->horizon_s) ts = m->horizon_s - 1;
        double v = lm_rng_uniform(r);
        int ch = (v >= t->chan_cdf[0]) + (v >= t->chan_cdf[1]) + (v >= t->chan_cdf[2]);
        uint64_t xr = lm_rng_next(r);
        uint32_t j = (uint32_t)(((xr >> 32) * items) >> 32);
        if ((uint32_t)xr >= m->alias_thr[j]) j = m->alias_to[j];

        const float *q = m->q + (size_t)j * SY_DIM;
        float d0 = 0, d1 = 0;
        for (int k = 0; k < SY_DIM; k++) {
            d0 += t->pref[k] * q[k];
            d1 += t->drift[k] * q[k];
        }
        double frac = ((double)ts - t->birth) / m->horizon;
        if (frac < 0) frac = 0;
        unsigned hour = (unsigned)(((SY_T0 + ts) % 86400) / 3600);
        double logit =
            t->a + m->bias[j] + kdot * ((double)d0 + frac * (double)d1) + t->chan[ch] + m->hour_eff[hour];
        double pc = 1.0 / (1.0 + exp(-logit));
        int click = lm_rng_uniform(r) < pc;
        pos += (uint64_t)click;
        out[e] =
            (sy_row){.ts = ts, .task = local, .item = j + 1, .chan = (uint8_t)ch, .click = (uint8_t)click};
    }
    *positives += pos;
}

/* Stable LSD radix sort of keys (ts << 32 | row) on their ts bits. Because rows are generated
 * task by task in user_id order, equal times stay in user_id order, then generation order. */
static uint64_t *radix_sort(uint64_t *keys, uint64_t *tmp, size_t n, int ts_bits)
{
    int passes = (ts_bits + 11) / 12;
    if (passes < 1) passes = 1;
    int width = (ts_bits + passes - 1) / passes;
    size_t nb = (size_t)1 << width;
    uint32_t count[1 << 12];
    for (int ps = 0; ps < passes; ps++) {
        int shift = 32 + ps * width;
        uint64_t mask = nb - 1;
        memset(count, 0, nb * sizeof count[0]);
        for (size_t i = 0; i < n; i++) count[(keys[i] >> shift) & mask]++;
        uint32_t sum = 0;
        for (size_t b = 0; b < nb; b++) {
            uint32_t c = count[b];
            count[b] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++) tmp[count[(keys[i] >> shift) & mask]++] = keys[i];
        uint64_t *sw = keys;
        keys = tmp;
        tmp = sw;
    }
    return keys;
}

/* ============================================================================================
 * The writer
 * ========================================================================================== */

typedef struct sy_out {
    int fd;
    const char *path; /* the temporary file, named in errors */
    char *buf;
    size_t len;
} sy_out;

static int out_flush(sy_out *w, lm_err *err)
{
    int rc = lm_write_all(w->fd, w->buf, w->len, w->path, err);
    w->len = 0;
    return rc;
}

/* Format one block's sorted rows. */
static int write_block(const sy_model *m, const sy_task *tasks, const sy_row *rows, const uint64_t *keys,
                       size_t n, sy_out *w, lm_err *err)
{
    char *p = w->buf + w->len, *end = w->buf + SY_OUTBUF;
    for (size_t i = 0; i < n; i++) {
        if (end - p < SY_LINE_MAX) {
            w->len = (size_t)(p - w->buf);
            int rc = out_flush(w, err);
            if (rc != LM_OK) return rc;
            p = w->buf;
        }
        const sy_row *row = &rows[(uint32_t)keys[i]];
        const sy_task *t = &tasks[row->task];
        p = put_u64(p, t->user_id);
        *p++ = ',';
        p = put_u64(p, SY_T0 + row->ts);
        *p++ = ',';
        *p++ = (char)('0' + row->click);
        *p++ = ',';
        *p++ = (char)('0' + row->chan);
        *p++ = ',';
        p = put_u64(p, row->item);
        *p++ = ',';
        memcpy(p, t->meta, SY_META_SLOT);
        p += t->meta_len;
        *p++ = ',';
        const char *f = m->feat + (size_t)(row->item - 1) * SY_FEAT_SLOT;
        memcpy(p, f, SY_FEAT_SLOT);
        p += (unsigned char)f[SY_FEAT_SLOT - 1];
        *p++ = ',';
        /* ctx_hour: the time of day as a fraction, truncated to 4 decimals. */
        uint32_t sec = (uint32_t)((SY_T0 + row->ts) % 86400);
        p = put_fixed(p, (int64_t)((uint64_t)sec * 10000 / 86400), 4);
        *p++ = '\n';
    }
    w->len = (size_t)(p - w->buf);
    return LM_OK;
}

static int write_schema(const char *path, uint32_t items, lm_err *err)
{
    char json[1024];
    int n = snprintf(json, sizeof json,
                     "{\n"
                     "  \"delimiter\": \",\",\n"
                     "  \"header\": true,\n"
                     "  \"task\": [\"user_id\"],\n"
                     "  \"time\": \"ts\",\n"
                     "  \"label\": \"clicked\",\n"
                     "  \"meta\": [\"m_age\", \"m_gender\", \"m_seg0\", \"m_seg1\", \"m_seg2\", "
                     "\"m_seg3\", \"m_seg4\", \"m_seg5\", \"m_tenure\"],\n"
                     "  \"dense\": [\"i_f0\", \"i_f1\", \"i_f2\", \"i_f3\", \"i_f4\", \"i_f5\", "
                     "\"i_f6\", \"i_f7\", \"ctx_hour\"],\n"
                     "  \"categorical\": [\n"
                     "    {\"column\": \"item_id\", \"buckets\": %llu, \"dim\": 8},\n"
                     "    {\"column\": \"channel\", \"buckets\": %d, \"dim\": 4}\n"
                     "  ]\n"
                     "}\n",
                     (unsigned long long)items + 1, SY_NCHAN);
    LM_ASSERT(n > 0 && (size_t)n < sizeof json);
    return lm_write_file_atomic(path, json, (size_t)n, err);
}

static int bits_for(uint64_t v)
{
    int b = 0;
    while (b < 64 && (v >> b) != 0) b++;
    return b;
}

/* ============================================================================================
 * lm_synth
 * ========================================================================================== */

int lm_synth(const char *path, const lm_synth_opts *o, lm_synth_summary *sum, lm_err *err)
{
    lm_synth_opts defaults;
    if (!o) {
        lm_synth_opts_default(&defaults);
        o = &defaults;
    }
    if (sum) memset(sum, 0, sizeof *sum);
    if (!path || !*path) return lm_err_set(err, LM_EINVAL, "synth: no output path");
    int rc = check_opts(o, err);
    if (rc != LM_OK) return rc;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return lm_err_set(err, LM_EINVAL, "%s: is a folder, not a file name", path);

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16), *schema = malloc(plen + 16);
    if (!tmp || !schema) {
        free(tmp);
        free(schema);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    snprintf(schema, plen + 16, "%s.schema.json", path);

    sy_model m;
    rc = model_init(&m, o, err);
    if (rc != LM_OK) {
        free(tmp);
        free(schema);
        return rc;
    }

    /* Blocks of at most 4096 tasks, fewer when tasks are large, so a block stays near
     * SY_BLOCK_ROWS rows. The split depends only on the options: the output is reproducible. */
    double bt = floor((double)SY_BLOCK_ROWS / o->mean_examples);
    uint32_t block_tasks = bt >= SY_BLOCK_TASKS ? SY_BLOCK_TASKS : bt < 1 ? 1 : (uint32_t)bt;

    sy_task *tasks = lm_malloc_array(block_tasks, sizeof *tasks);
    sy_row *rows = NULL;
    uint64_t *keys = NULL, *keys_tmp = NULL;
    size_t rows_cap = 0, keys_cap = 0, tmp_cap = 0;
    sy_out w = {.fd = -1, .path = tmp, .buf = malloc(SY_OUTBUF), .len = 0};
    uint64_t nrows = 0, npos = 0;
    int ts_bits = bits_for(m.horizon_s);
    int created = 0;
    if (!tasks || !w.buf) {
        rc = lm_err_set(err, LM_ENOMEM, "out of memory");
        goto done;
    }

    w.fd = mkstemp(tmp);
    if (w.fd < 0) {
        rc = lm_err_errno(err, LM_EIO, "%s: cannot create the output", path);
        goto done;
    }
    created = 1;
    /* mkstemp makes the file 0600; a log is meant to be read by others. */
    if (fchmod(w.fd, 0644) != 0) {
        rc = lm_err_errno(err, LM_EIO, "%s: chmod", tmp);
        goto done;
    }
    memcpy(w.buf, sy_header, sizeof sy_header - 1);
    w.len = sizeof sy_header - 1;

    for (uint64_t first = 0; first < o->tasks; first += block_tasks) {
        uint32_t nb = (uint32_t)LM_MIN((uint64_t)block_tasks, o->tasks - first);
        size_t total = 0;
        for (uint32_t i = 0; i < nb; i++) {
            task_derive(&m, first + i, &tasks[i]);
            total += tasks[i].n;
        }
        if (lm_grow((void **)&rows, &rows_cap, total, sizeof *rows) != LM_OK ||
            lm_grow((void **)&keys, &keys_cap, total, sizeof *keys) != LM_OK ||
            lm_grow((void **)&keys_tmp, &tmp_cap, total, sizeof *keys_tmp) != LM_OK) {
            rc = lm_err_set(err, LM_ENOMEM, "synth: out of memory for a block of %zu rows", total);
            goto done;
        }
        size_t at = 0;
        for (uint32_t i = 0; i < nb; i++) {
            task_rows(&m, &tasks[i], i, rows + at, &npos);
            at += tasks[i].n;
        }
        for (size_t i = 0; i < total; i++) keys[i] = (uint64_t)rows[i].ts << 32 | i;
        const uint64_t *sorted = radix_sort(keys, keys_tmp, total, ts_bits);
        rc = write_block(&m, tasks, rows, sorted, total, &w, err);
        if (rc != LM_OK) goto done;
        nrows += total;
    }
    rc = out_flush(&w, err);
    if (rc != LM_OK) goto done;
    if (fsync(w.fd) != 0) {
        rc = lm_err_errno(err, LM_EIO, "%s: fsync", tmp);
        goto done;
    }
    int fd = w.fd;
    w.fd = -1;
    if (close(fd) != 0) {
        rc = lm_err_errno(err, LM_EIO, "%s: close", tmp);
        goto done;
    }
    /* The schema first, then the log appears in one rename. */
    rc = write_schema(schema, o->items, err);
    if (rc != LM_OK) goto done;
    if (rename(tmp, path) != 0) {
        rc = lm_err_errno(err, LM_EIO, "%s: rename", path);
        unlink(schema);
        goto done;
    }
    created = 0;
    rc = lm_fsync_dir_of(path, err);
    if (rc == LM_OK && sum) {
        sum->rows = nrows;
        sum->tasks = o->tasks;
        sum->positives = npos;
    }

done:
    if (w.fd >= 0) close(w.fd);
    if (created) unlink(tmp);
    free(w.buf);
    free(tasks);
    free(rows);
    free(keys);
    free(keys_tmp);
    model_free(&m);
    free(tmp);
    free(schema);
    return rc;
}
