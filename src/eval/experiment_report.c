/* experiment_report.c: from the experiment's per-seed results to the tables (mean and standard
 * deviation over seeds), the paper's patterns checked on our figures, results.json (one object
 * per table row, an array) and run.json (what was searched, what was chosen, the patterns). */
#include "eval/experiment.h"

#include "core/core.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

/* ---- text buffer ---------------------------------------------------------------------------- */

void lm_xp_printf(lm_xp_buf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->n;
        int w = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (w < 0) return;
        if ((size_t)w < room) {
            b->n += (size_t)w;
            return;
        }
        size_t cap = b->cap;
        if (lm_grow((void **)&b->p, &cap, b->n + (size_t)w + 1 + b->cap, 1)) {
            b->oom = 1;
            return;
        }
        b->cap = cap;
    }
}

int lm_xp_buf_write(lm_xp_buf *b, const char *path, lm_err *err)
{
    int rc = b->oom ? lm_err_set(err, LM_ENOMEM, "%s: out of memory", path)
                    : lm_write_file_atomic(path, b->p ? b->p : "", b->n, err);
    free(b->p);
    memset(b, 0, sizeof *b);
    return rc;
}

/* ---- statistics and rows -------------------------------------------------------------------- */

lm_xp_stat lm_xp_stat_of(const double *v, size_t n)
{
    lm_xp_stat s = {NAN, NAN};
    if (!n) return s;
    double m = 0;
    for (size_t i = 0; i < n; i++) m += v[i];
    m /= (double)n;
    double q = 0;
    for (size_t i = 0; i < n; i++) q += (v[i] - m) * (v[i] - m);
    s.mean = m;
    s.std = n > 1 ? sqrt(q / (double)(n - 1)) : 0;
    return s;
}

/* Which field of an lm_eval_result. */
enum { F_AUC, F_LT25, F_GE25, F_WARM, F_NEW, F_LOGLOSS };

static double field(const lm_eval_result *r, int f)
{
    switch (f) {
    case F_AUC: return r->auc;
    case F_LT25: return r->auc_lt25;
    case F_GE25: return r->auc_ge25;
    case F_WARM: return r->auc_warm;
    case F_NEW: return r->auc_new;
    default: return r->logloss;
    }
}

static const lm_eval_result *arm_result(const lm_xp_arm *a, int adapt, uint32_t s)
{
    return adapt ? &a->test1[s] : &a->test0[s];
}

/* The result of row `r` for seed s (a floor is the same for every seed). */
static const lm_eval_result *row_result(const lm_xp *x, const lm_xp_row *r, uint32_t s)
{
    if (r->kind == LM_XP_ROW_FLOOR) return &x->floor_test;
    if (r->kind == LM_XP_ROW_FLOOR_TRAIN) return &x->floor_train_test;
    if (r->kind == LM_XP_ROW_POINT) return &x->pt[r->point].res[s];
    return arm_result(&x->arm[r->arm], r->adapt, s);
}

static lm_xp_stat row_stat(const lm_xp *x, const lm_xp_row *r, int f)
{
    double v[LM_XP_MAX_SEEDS];
    for (uint32_t s = 0; s < r->nseeds; s++) v[s] = field(row_result(x, r, s), f);
    return lm_xp_stat_of(v, r->nseeds);
}

static lm_xp_row *add_row(lm_xp *x, int table, int kind, int arm, int adapt, const char *label)
{
    LM_ASSERT(x->nrows_out < LM_XP_MAX_ROWS);
    lm_xp_row *r = &x->row[x->nrows_out++];
    memset(r, 0, sizeof *r);
    r->table = table, r->kind = kind, r->arm = arm, r->adapt = adapt, r->label = label;
    r->option_row = kind == LM_XP_ROW_ARM && x->arm[arm].option_row;
    r->nseeds = kind == LM_XP_ROW_ARM ? x->arm[arm].nseeds : x->o->seeds;
    return r;
}

/* The order the tables are reported in. */
const int LM_XP_POINT_TABLES[7] = {5, 9, 10, 12, 13, 14, LM_XP_T_FRESH};

void lm_xp_build_rows(lm_xp *x)
{
    x->nrows_out = 0;
    int t3 = x->o->tables & LM_XP_TABLE3, t4 = x->o->tables & LM_XP_TABLE4;
    if (t3) {
        add_row(x, 3, LM_XP_ROW_FLOOR, 0, 0, "Count floor: task rate + item rate (no learning)");
        add_row(x, 3, LM_XP_ROW_FLOOR_TRAIN, 0, 0,
                "Count floor, a warm task's rate from its train part only");
        for (int a = LM_XP_PLAIN; a <= LM_XP_LIMAML_SWL; a++)
            for (int ad = 0; ad < 2; ad++) add_row(x, 3, LM_XP_ROW_ARM, a, ad, x->arm[a].label);
        for (int a = LM_XP_PLAIN_RATES; a <= LM_XP_LIMAML_REFIT_ENS; a++)
            if (x->arm[a].enabled)
                for (int ad = 0; ad < 2; ad++) add_row(x, 3, LM_XP_ROW_ARM, a, ad, x->arm[a].label);
    }
    if (t4) {
        add_row(x, 4, LM_XP_ROW_ARM, LM_XP_WIDEDEEP, 0, x->arm[LM_XP_WIDEDEEP].label);
        add_row(x, 4, LM_XP_ROW_ARM, LM_XP_LIMAML_ID, 1, x->arm[LM_XP_LIMAML_ID].label);
        add_row(x, 4, LM_XP_ROW_ARM, LM_XP_LIMAML_ID_SW, 1, x->arm[LM_XP_LIMAML_ID_SW].label);
        add_row(x, 4, LM_XP_ROW_ARM, LM_XP_LIMAML, 1, x->arm[LM_XP_LIMAML].label);
    }
    for (size_t t = 0; t < 7; t++)
        for (size_t i = 0; i < x->npt; i++) {
            const lm_xp_point *p = &x->pt[i];
            if (p->table != LM_XP_POINT_TABLES[t]) continue;
            lm_xp_row *r = add_row(x, p->table, LM_XP_ROW_POINT, 0, p->adapt, p->label);
            r->point = (int)i;
            r->option_row = p->option_row;
            r->nseeds = p->nseeds;
        }
    for (size_t i = 0; i < x->nrows_out; i++) {
        lm_xp_row *r = &x->row[i];
        r->auc = row_stat(x, r, F_AUC);
        r->lt25 = row_stat(x, r, F_LT25);
        r->ge25 = row_stat(x, r, F_GE25);
        r->warm = row_stat(x, r, F_WARM);
        r->nw = row_stat(x, r, F_NEW);
        r->logloss = row_stat(x, r, F_LOGLOSS);
        for (uint32_t s = 0; s < r->nseeds; s++) r->seed_auc[s] = row_result(x, r, s)->auc;
        /* the gain is taken seed by seed against the same seed's baseline: Table 3's is plain
         * training without adaptation, Table 4's the wide-and-deep model (as in the paper) */
        const lm_xp_arm *base = &x->arm[r->table == 4 ? LM_XP_WIDEDEEP : LM_XP_PLAIN];
        const lm_xp_point *p = r->kind == LM_XP_ROW_POINT ? &x->pt[r->point] : NULL;
        double g[LM_XP_MAX_SEEDS], ts[LM_XP_MAX_SEEDS];
        for (uint32_t s = 0; s < r->nseeds; s++) {
            double b = p ? p->base_auc[s] : base->test0[s].auc;
            g[s] = 100.0 * (r->seed_auc[s] - b) / b;
            ts[s] = r->kind == LM_XP_ROW_ARM ? x->arm[r->arm].rep[s].seconds
                    : p && p->trained        ? p->train_secs[s]
                                             : 0;
        }
        r->gain = lm_xp_stat_of(g, r->nseeds);
        r->train_secs = lm_xp_stat_of(ts, r->nseeds);
        r->below_floor = (r->kind == LM_XP_ROW_ARM && r->auc.mean < x->floor_test.auc) ||
                         (p && r->auc.mean < p->floor_auc);
    }
}

static const lm_xp_row *find_row(const lm_xp *x, int table, int arm, int adapt)
{
    for (size_t i = 0; i < x->nrows_out; i++) {
        const lm_xp_row *r = &x->row[i];
        if (r->table == table && r->kind == LM_XP_ROW_ARM && r->arm == arm && r->adapt == adapt) return r;
    }
    return NULL;
}

/* ---- the paper's patterns ------------------------------------------------------------------- */

static void pattern(lm_xp *x, int held, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pattern(lm_xp *x, int held, const char *fmt, ...)
{
    if (x->npat >= LM_XP_MAX_PATTERNS) return;
    lm_xp_pattern *p = &x->pat[x->npat++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->text, sizeof p->text, fmt, ap);
    va_end(ap);
    p->held = held;
}

/* "a beats b by more than three standard deviations": the difference of the means against
 * three times the standard deviation of that difference, sqrt(sa^2 + sb^2), with the seeds of
 * the two rows taken as independent (the conservative reading). */
static int clear_margin(lm_xp_stat a, lm_xp_stat b, double *sigma)
{
    *sigma = sqrt(a.std * a.std + b.std * b.std);
    return a.mean - b.mean > 3 * *sigma;
}

static void margin_pattern_of(lm_xp *x, const char *who, const char *what, lm_xp_stat a, lm_xp_stat b)
{
    double sg;
    int ok = clear_margin(a, b, &sg);
    pattern(x, ok,
            "%s with adaptation beats plain training without adaptation on %s by more than three standard "
            "deviations: %.4f vs %.4f, difference %+.4f, 3 sigma = %.4f",
            who, what, a.mean, b.mean, a.mean - b.mean, 3 * sg);
}

/* The goal: row r (refit, adapted; NULL: not run) beats the tree model's figure by more
 * than three standard deviations. */
static void goal_pattern(lm_xp *x, const lm_xp_row *r, const char *who, const char *tree_what,
                         lm_xp_stat tree)
{
    if (!r) return;
    double sg;
    int won = clear_margin(r->auc, tree, &sg);
    pattern(x, won,
            "Goal: %s (refit) beats %s by more than three standard deviations: %.4f +- %.4f, difference "
            "%+.4f, 3 sigma = %.4f",
            who, tree_what, r->auc.mean, r->auc.std, r->auc.mean - tree.mean, 3 * sg);
}

static void margin_pattern(lm_xp *x, const char *what, lm_xp_stat a, lm_xp_stat b)
{
    margin_pattern_of(x, "LiMAML", what, a, b);
}

/* The LiMAML adapted rows of a point table (the paper's rows; not the option rows), in order. */
static size_t sweep_rows(const lm_xp *x, int table, const lm_xp_row **out, const lm_xp_point **pts)
{
    size_t n = 0;
    for (size_t i = 0; i < x->nrows_out && n < LM_XP_MAX_SWEEP; i++) {
        const lm_xp_row *r = &x->row[i];
        if (r->kind != LM_XP_ROW_POINT || r->table != table || r->option_row) continue;
        const lm_xp_point *p = &x->pt[r->point];
        if (strcmp(p->algo, "limaml") || !p->adapt) continue;
        out[n] = r, pts[n++] = p;
    }
    return n;
}

/* "Matters little": every row's gain within three standard deviations of the chosen row's (no
 * difference the seeds can tell) and the mean gains within one point of each other (the rule
 * Table 3 uses for "comparable"; a row whose seeds scatter widely would pass the first test
 * alone). The gains are listed into buf. */
static int flat_gains(const lm_xp_row **r, const lm_xp_point **p, size_t n, char *buf, size_t len,
                      double *spread)
{
    const lm_xp_row *c = NULL;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (p[i]->chosen) c = r[i];
    int flat = c != NULL;
    size_t off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n; i++) {
        double sg;
        if (c && (clear_margin(r[i]->gain, c->gain, &sg) || clear_margin(c->gain, r[i]->gain, &sg))) flat = 0;
        lo = fmin(lo, r[i]->gain.mean), hi = fmax(hi, r[i]->gain.mean);
        if (off < len)
            off += (size_t)snprintf(buf + off, len - off, "%s%s %+.2f%%", i ? ", " : "", p[i]->value_str,
                                    r[i]->gain.mean);
    }
    *spread = n ? hi - lo : 0;
    return flat && *spread <= 1.0;
}

static void lm_xp_check_sweep_patterns(lm_xp *x)
{
    const lm_xp_row *r[LM_XP_MAX_SWEEP];
    const lm_xp_point *p[LM_XP_MAX_SWEEP];
    char g[300];
    double spread12 = NAN, spread13 = NAN;
    size_t n = sweep_rows(x, 9, r, p);
    if (n > 1) {
        double sp;
        int flat = flat_gains(r, p, n, g, sizeof g, &sp);
        pattern(
            x, flat,
            "Table 9: the AUC gain hardly changes with the inner steps n (paper: +1.47%% to +1.51%%; here no "
            "n differs from n = 1 by more than three standard deviations and the gains lie within one "
            "point): %s (spread %.2f points)",
            g, sp);
        int up = 1;
        size_t off = 0;
        double prev = -INFINITY;
        for (size_t i = 0; i < n; i++) {
            double e[LM_XP_MAX_SEEDS];
            for (uint32_t s = 0; s < p[i]->nseeds; s++)
                e[s] = 100.0 * ((p[i]->train_cpu[s] / LM_MAX(p[i]->epochs[s], 1)) /
                                    (p[i]->plain_cpu[s] / LM_MAX(p[i]->plain_epochs[s], 1)) -
                                1);
            double m = lm_xp_stat_of(e, p[i]->nseeds).mean;
            up &= m > prev;
            prev = m;
            if (off < sizeof g)
                off += (size_t)snprintf(g + off, sizeof g - off, "%sn %s %+.0f%%", i ? ", " : "",
                                        p[i]->value_str, m);
        }
        pattern(
            x, up,
            "Table 9: training CPU time per epoch grows with n (paper, total time against vanilla training: "
            "+105%% at n = 1 to +221%% at n = 5): %s",
            g);
    }
    n = sweep_rows(x, 10, r, p);
    if (n > 1) {
        int lower = n > 1 && r[1]->auc.mean < r[0]->auc.mean, mono = 1;
        for (size_t i = 1; i < n; i++) mono &= r[i]->auc.mean <= r[i - 1]->auc.mean;
        double sp;
        flat_gains(r, p, n, g, sizeof g, &sp);
        pattern(
            x, lower,
            "Table 10: even the smallest dropout (%s) lowers test AUC (paper: +1.47%% to +1.44%% at 0.1): %s",
            p[1]->value_str, g);
        pattern(x, mono, "Table 10: the higher the dropout, the lower the AUC (paper: +0.88%% at 0.6): %s",
                g);
    }
    n = sweep_rows(x, 12, r, p);
    if (n > 1) {
        int flat = flat_gains(r, p, n, g, sizeof g, &spread12);
        pattern(
            x, flat,
            "Table 12: the inner task learning rate matters little around the chosen value (paper: +1.44%% "
            "to +1.47%% from 0.005 to 10; here every rate within three standard deviations of the "
            "chosen and the gains within one point): %s (spread %.2f points)",
            g, spread12);
    }
    n = sweep_rows(x, 13, r, p);
    if (n > 1) {
        int flat = flat_gains(r, p, n, g, sizeof g, &spread13);
        (void)flat;
        if (!isnan(spread12))
            pattern(
                x, spread13 > spread12,
                "Tables 12 and 13: the global learning rate is the more sensitive (paper: it needs tuning, "
                "the task rate hardly): spread of the gains %.2f points over the global rates (%s) against "
                "%.2f over the task rates",
                spread13, g, spread12);
    }
    n = sweep_rows(x, 14, r, p);
    if (n > 1) {
        const lm_xp_row *lat = NULL;
        for (size_t i = 0; i < n; i++)
            if (p[i]->chosen) lat = r[i];
        int best = lat != NULL, same = 1;
        size_t off = 0;
        for (size_t i = 0; lat && i < n; i++) {
            if (r[i] == lat) continue;
            best &= lat->auc.mean > r[i]->auc.mean;
            same &= lat->auc.mean == r[i]->auc.mean;
            if (off < sizeof g)
                off +=
                    (size_t)snprintf(g + off, sizeof g - off, "%s%s %+.3f%%", off ? ", " : "",
                                     p[i]->value_str, 100 * (r[i]->auc.mean - lat->auc.mean) / lat->auc.mean);
        }
        if (lat)
            pattern(
                x, best,
                "Table 14: the embedding of the latest example beats max, mean and cosine pooling (paper: "
                "-0.06%%, -0.12%%, -0.10%%): relative to latest, %s%s",
                g,
                same ? " (identical: the meta features are constant within a task, so every example's "
                       "meta-block output is the same and pooling changes nothing)"
                     : "");
    }
    n = sweep_rows(x, LM_XP_T_FRESH, r, p);
    if (n > 1) {
        const lm_xp_row *f = NULL;
        for (size_t i = 0; i < n; i++)
            if (p[i]->stale_days == 0) f = r[i];
        int below = f != NULL;
        size_t off = 0;
        for (size_t i = 0; f && i < n; i++) {
            if (r[i] == f) continue;
            below &= r[i]->auc.mean < f->auc.mean;
            if (off < sizeof g)
                off += (size_t)snprintf(g + off, sizeof g - off, "%s%s days %.4f (%+.2f%%)", off ? ", " : "",
                                        p[i]->value_str, r[i]->auc.mean,
                                        100 * (r[i]->auc.mean - f->auc.mean) / f->auc.mean);
        }
        if (f)
            pattern(
                x, below,
                "Freshness: a stale embedding scores below a fresh one (paper, section 5: weekly instead of "
                "daily refresh cost 0.5%% AUC): fresh %.4f; %s",
                f->auc.mean, g);
    }
    n = sweep_rows(x, 5, r, p);
    if (n == 2) {
        int ug = !strcmp(p[0]->value_str, "user");
        const lm_xp_row *u = ug ? r[0] : r[1], *gg = ug ? r[1] : r[0];
        pattern(
            x, gg->gain.mean > u->gain.mean,
            "Table 5: the finer task definition gains more (paper, pClick: +0.47%% per (user, notification "
            "type) against +0.01%% per user): LiMAML adapted %+.2f%% per (user, genre) against %+.2f%% per "
            "user, each over its own plain model without adaptation",
            gg->gain.mean, u->gain.mean);
    }
}

void lm_xp_check_patterns(lm_xp *x)
{
    x->npat = 0;
    const lm_xp_row *p0 = find_row(x, 3, LM_XP_PLAIN, 0), *p1 = find_row(x, 3, LM_XP_PLAIN, 1);
    const lm_xp_row *m0 = find_row(x, 3, LM_XP_MAML, 0), *m1 = find_row(x, 3, LM_XP_MAML, 1);
    const lm_xp_row *l0 = find_row(x, 3, LM_XP_LIMAML, 0), *l1 = find_row(x, 3, LM_XP_LIMAML, 1);
    if (p0 && p1 && m0 && m1 && l0 && l1) {
        margin_pattern(x, "pooled test AUC", l1->auc, p0->auc);
        margin_pattern(x, "the slice of tasks with fewer than 25 test examples", l1->lt25, p0->lt25);
        margin_pattern(x, "the slice of new tasks", l1->nw, p0->nw);
        if (x->o->source == LM_XP_SOURCE_MOVIELENS)
            pattern(
                x, l1->auc.mean >= 0.731,
                "LiMAML with adaptation reaches the independent PyTorch implementation's 0.731: %.4f +- %.4f",
                l1->auc.mean, l1->auc.std);
        pattern(x, l0->auc.mean <= p0->auc.mean,
                "LiMAML without adaptation is not better than plain training (paper: -0.43%%): %.4f vs %.4f "
                "(%+.2f%%)",
                l0->auc.mean, p0->auc.mean, l0->gain.mean);
        pattern(
            x, m0->auc.mean <= p0->auc.mean,
            "Entire-network MAML without adaptation is not better than plain training (paper: -0.18%%): %.4f "
            "vs "
            "%.4f (%+.2f%%)",
            m0->auc.mean, p0->auc.mean, m0->gain.mean);
        int helps = p1->auc.mean > p0->auc.mean && m1->auc.mean > m0->auc.mean && l1->auc.mean > l0->auc.mean;
        pattern(
            x, helps,
            "Adaptation on the validation part helps every algorithm: plain %+.4f, MAML %+.4f, LiMAML %+.4f",
            p1->auc.mean - p0->auc.mean, m1->auc.mean - m0->auc.mean, l1->auc.mean - l0->auc.mean);
        pattern(
            x, m1->auc.mean > p1->auc.mean,
            "MAML with adaptation beats plain training with adaptation (paper: +1.68%% vs +0.75%%): %.4f vs "
            "%.4f "
            "(%+.2f%% vs %+.2f%%)",
            m1->auc.mean, p1->auc.mean, m1->gain.mean, p1->gain.mean);
        pattern(
            x, l1->auc.mean > p1->auc.mean,
            "LiMAML with adaptation beats plain training with adaptation (paper: +1.47%% vs +0.75%%): %.4f "
            "vs %.4f "
            "(%+.2f%% vs %+.2f%%)",
            l1->auc.mean, p1->auc.mean, l1->gain.mean, p1->gain.mean);
        /* the paper's "comparable": its two gains differ by 0.21 points; we allow one point */
        pattern(
            x, fabs(l1->gain.mean - m1->gain.mean) <= 1.0,
            "LiMAML with adaptation is comparable to MAML with adaptation (paper: +1.47%% vs +1.68%%; here "
            "within one point of gain): %+.2f%% vs %+.2f%%",
            l1->gain.mean, m1->gain.mean);
        pattern(x, l1->ge25.mean - p0->ge25.mean > 0 && l1->lt25.mean - p0->lt25.mean > 0,
                "LiMAML with adaptation gains on both task sizes (paper: +1.38%% below 25, +1.64%% at 25 or "
                "more): "
                "%+.2f%% and %+.2f%%",
                100 * (l1->lt25.mean - p0->lt25.mean) / p0->lt25.mean,
                100 * (l1->ge25.mean - p0->ge25.mean) / p0->ge25.mean);
    }
    /* the same requirements of the issue for the configuration `limaml train` uses by default */
    const lm_xp_row *s1 = find_row(x, 3, LM_XP_LIMAML_SW, 1);
    if (p0 && s1) {
        const char *who = "LiMAML + support loss (the default of limaml train)";
        margin_pattern_of(x, who, "pooled test AUC", s1->auc, p0->auc);
        margin_pattern_of(x, who, "the slice of tasks with fewer than 25 test examples", s1->lt25, p0->lt25);
        margin_pattern_of(x, who, "the slice of new tasks", s1->nw, p0->nw);
        if (x->o->source == LM_XP_SOURCE_MOVIELENS)
            pattern(x, s1->auc.mean >= 0.731, "%s with adaptation reaches 0.731: %.4f +- %.4f", who,
                    s1->auc.mean, s1->auc.std);
    }
    const lm_xp_row *w0 = find_row(x, 4, LM_XP_WIDEDEEP, 0), *i1 = find_row(x, 4, LM_XP_LIMAML_ID, 1),
                    *k1 = find_row(x, 4, LM_XP_LIMAML, 1);
    if (w0 && i1 && k1) {
        pattern(
            x, i1->auc.mean > w0->auc.mean,
            "Table 4: LiMAML with an id-embedding meta block beats wide-and-deep with a task-id embedding "
            "(paper: +1.30%%): %.4f vs %.4f (%+.2f%%)",
            i1->auc.mean, w0->auc.mean, i1->gain.mean);
        pattern(x, k1->auc.mean > w0->auc.mean,
                "Table 4: LiMAML with an MLP meta block beats wide-and-deep (paper: +1.36%%): %.4f vs %.4f "
                "(%+.2f%%)",
                k1->auc.mean, w0->auc.mean, k1->gain.mean);
    }
    lm_xp_check_sweep_patterns(x);
    /* The goal on MovieLens: servable LiMAML above the practitioner's tree model refit
     * on train + validation. The tree's figures are constants: tools/tree_baseline.py measures
     * them under the same protocol (docs/EXPERIMENTS.md, 3 seeds; its ensemble 3 groups of 3). */
    char who[64];
    snprintf(who, sizeof who, "an ensemble of %u servable LiMAML networks",
             x->arm[LM_XP_LIMAML_REFIT_ENS].members);
    goal_pattern(x, find_row(x, 3, LM_XP_LIMAML_REFIT, 1), "one servable LiMAML network",
                 "the tree model refit on train + validation (LightGBM with user and item history rates, "
                 "tools/tree_baseline.py: 0.7734 +- 0.0005; the independent study: 0.772)",
                 (lm_xp_stat){0.7734, 0.0005});
    goal_pattern(x, find_row(x, 3, LM_XP_LIMAML_REFIT_ENS, 1), who,
                 "the tree model's own seed ensemble refit (3 groups of 3 seeds: 0.7738 +- 0.0001)",
                 (lm_xp_stat){0.7738, 0.0001});
    /* Not a pattern of the paper but of honesty: does any learned row beat counting? */
    double best = -1;
    const char *best_label = "";
    int best_adapt = 0;
    for (size_t i = 0; i < x->nrows_out; i++)
        if (x->row[i].kind == LM_XP_ROW_ARM && x->row[i].auc.mean > best)
            best = x->row[i].auc.mean, best_label = x->row[i].label, best_adapt = x->row[i].adapt;
    pattern(
        x, best >= x->floor_test.auc,
        "The best learned row reaches the count floor (user rate + item rate, no learning, %.4f): %s%s, %.4f",
        x->floor_test.auc, best_label, best_adapt ? " with adaptation" : "", best);
}

/* ---- results.json and run.json -------------------------------------------------------------- */

static cJSON *stat_json(lm_xp_stat s)
{
    cJSON *o = cJSON_CreateObject();
    if (isnan(s.mean)) {
        cJSON_AddNullToObject(o, "mean");
        cJSON_AddNullToObject(o, "std");
    } else {
        cJSON_AddNumberToObject(o, "mean", round(s.mean * 1e6) / 1e6);
        cJSON_AddNumberToObject(o, "std", round(s.std * 1e6) / 1e6);
    }
    return o;
}

/* The fields of a point's row: the swept value under its own name, the configuration, and
 * what its table adds (time against plain, the alternative adaptation rate, the realised
 * staleness, seed 1's validation AUC). */
static void point_json(cJSON *o, const lm_xp_point *p)
{
    double v[LM_XP_MAX_SEEDS];
    uint32_t n = p->nseeds;
    cJSON_AddStringToObject(o, "swept", p->param);
    if (isnan(p->value))
        cJSON_AddStringToObject(o, p->param, p->value_str);
    else
        cJSON_AddNumberToObject(o, p->param, p->value);
    cJSON_AddBoolToObject(o, "chosen", p->chosen);
    cJSON_AddBoolToObject(o, "table3_models", p->reused);
    if (p->trained) {
        for (uint32_t s = 0; s < n; s++) v[s] = p->val_auc[s];
        cJSON_AddItemToObject(o, "train_val_auc", stat_json(lm_xp_stat_of(v, n)));
        for (uint32_t s = 0; s < n; s++) v[s] = p->epochs[s];
        cJSON_AddItemToObject(o, "epochs", stat_json(lm_xp_stat_of(v, n)));
    }
    if (p->table == 9 && p->trained) {
        for (uint32_t s = 0; s < n; s++) v[s] = 100.0 * (p->train_secs[s] / p->plain_secs[s] - 1);
        cJSON_AddItemToObject(o, "train_time_vs_plain_pct", stat_json(lm_xp_stat_of(v, n)));
        for (uint32_t s = 0; s < n; s++)
            v[s] = 100.0 * ((p->train_secs[s] / LM_MAX(p->epochs[s], 1)) /
                                (p->plain_secs[s] / LM_MAX(p->plain_epochs[s], 1)) -
                            1);
        cJSON_AddItemToObject(o, "epoch_time_vs_plain_pct", stat_json(lm_xp_stat_of(v, n)));
        cJSON_AddItemToObject(o, "train_cpu_seconds", stat_json(lm_xp_stat_of(p->train_cpu, n)));
        for (uint32_t s = 0; s < n; s++)
            v[s] = 100.0 * ((p->train_cpu[s] / LM_MAX(p->epochs[s], 1)) /
                                (p->plain_cpu[s] / LM_MAX(p->plain_epochs[s], 1)) -
                            1);
        cJSON_AddItemToObject(o, "epoch_cpu_vs_plain_pct", stat_json(lm_xp_stat_of(v, n)));
    }
    if (p->has_alt) {
        for (uint32_t s = 0; s < n; s++) v[s] = p->alt[s].auc;
        cJSON_AddItemToObject(o, "auc_adapted_at_swept_rate", stat_json(lm_xp_stat_of(v, n)));
    }
    if (!isnan(p->seed1_val))
        cJSON_AddNumberToObject(o, "warm_val_auc_seed1", round(p->seed1_val * 1e6) / 1e6);
    if (p->table == LM_XP_T_FRESH) {
        cJSON_AddStringToObject(o, "adapt_from", p->adapt_from == LM_ADAPT_VAL ? "val" : "train+val");
        cJSON *re = cJSON_AddObjectToObject(o, "realised");
        for (uint32_t s = 0; s < n; s++)
            v[s] = p->res[s].tasks ? (double)p->res[s].tasks_adapted / p->res[s].tasks : 0;
        cJSON_AddItemToObject(re, "tasks_adapted_frac", stat_json(lm_xp_stat_of(v, n)));
        for (uint32_t s = 0; s < n; s++) v[s] = (double)p->res[s].rows_adapted;
        cJSON_AddItemToObject(re, "rows_adapted", stat_json(lm_xp_stat_of(v, n)));
        for (uint32_t s = 0; s < n; s++) v[s] = p->res[s].adapt_lag_mean / 86400.0;
        cJSON_AddItemToObject(re, "lag_days", stat_json(lm_xp_stat_of(v, n)));
        for (uint32_t s = 0; s < n; s++) v[s] = p->res[s].adapt_age_mean / 86400.0;
        cJSON_AddItemToObject(re, "age_days", stat_json(lm_xp_stat_of(v, n)));
    }
    cJSON *h = cJSON_AddObjectToObject(o, "hyperparameters");
    cJSON_AddStringToObject(h, "train_algo", p->algo);
    cJSON_AddNumberToObject(h, "lr", p->lr);
    if (!strcmp(p->algo, "limaml")) {
        cJSON_AddNumberToObject(h, "task_lr", p->task_lr);
        cJSON_AddNumberToObject(h, "inner_steps", p->inner);
        cJSON_AddNumberToObject(h, "dropout", p->dropout);
    }
    if (p->adapt) {
        cJSON_AddNumberToObject(h, "adapt_steps", p->k);
        cJSON_AddNumberToObject(h, "adapt_task_lr", p->alpha);
        static const char *pools[] = {"latest", "mean", "max", "cos"};
        cJSON_AddStringToObject(h, "pool", pools[p->pool]);
        if (p->stale_days > 0) cJSON_AddNumberToObject(h, "stale_days", p->stale_days);
    }
}

static const char *row_algo(const lm_xp *x, const lm_xp_row *r)
{
    if (r->kind == LM_XP_ROW_FLOOR) return "floor";
    if (r->kind == LM_XP_ROW_FLOOR_TRAIN) return "floor_train_only";
    if (r->kind == LM_XP_ROW_POINT) return x->pt[r->point].algo;
    return x->arm[r->arm].key;
}

static int write_json_text(cJSON *j, const char *path, lm_err *err)
{
    char *s = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    if (!s) return lm_err_set(err, LM_ENOMEM, "%s: out of memory", path);
    lm_xp_buf b = {0};
    lm_xp_printf(&b, "%s\n", s);
    cJSON_free(s);
    return lm_xp_buf_write(&b, path, err);
}

int lm_xp_write_json(const lm_xp *x, const char *path, lm_err *err)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < x->nrows_out; i++) {
        const lm_xp_row *r = &x->row[i];
        cJSON *o = cJSON_CreateObject();
        char t[8];
        cJSON_AddStringToObject(o, "table", lm_xp_table_name(r->table, t, sizeof t));
        cJSON_AddStringToObject(o, "algo", row_algo(x, r));
        cJSON_AddBoolToObject(o, "adapt", r->adapt);
        cJSON_AddStringToObject(o, "label", r->label);
        cJSON_AddItemToObject(o, "auc", stat_json(r->auc));
        cJSON *sl = cJSON_AddObjectToObject(o, "slices");
        cJSON_AddItemToObject(sl, "lt25", stat_json(r->lt25));
        cJSON_AddItemToObject(sl, "ge25", stat_json(r->ge25));
        cJSON_AddItemToObject(sl, "warm", stat_json(r->warm));
        cJSON_AddItemToObject(sl, "new", stat_json(r->nw));
        cJSON_AddItemToObject(o, "logloss", stat_json(r->logloss));
        cJSON_AddItemToObject(o, "gain_pct", stat_json(r->gain));
        cJSON_AddStringToObject(o, "gain_base",
                                r->table == 4 ? "widedeep, no adaptation"
                                : r->table == 5 && r->kind == LM_XP_ROW_POINT &&
                                        strcmp(x->pt[r->point].value_str, "user")
                                    ? "plain, no adaptation, task = (user, genre)"
                                    : "plain, no adaptation");
        cJSON_AddItemToObject(o, "train_seconds", stat_json(r->train_secs));
        cJSON_AddNumberToObject(o, "seeds", r->nseeds);
        double sa[LM_XP_MAX_SEEDS];
        for (uint32_t s = 0; s < r->nseeds; s++) sa[s] = round(r->seed_auc[s] * 1e6) / 1e6;
        cJSON_AddItemToObject(o, "auc_per_seed", cJSON_CreateDoubleArray(sa, (int)r->nseeds));
        cJSON_AddBoolToObject(o, "below_floor", r->below_floor);
        cJSON_AddBoolToObject(o, "option_row", r->option_row);
        if (r->kind == LM_XP_ROW_POINT) {
            point_json(o, &x->pt[r->point]);
        } else if (r->kind == LM_XP_ROW_ARM) {
            const lm_xp_arm *a = &x->arm[r->arm];
            cJSON *h = cJSON_AddObjectToObject(o, "hyperparameters");
            cJSON_AddStringToObject(h, "train_algo", lm_train_algo_name(a->algo));
            cJSON_AddStringToObject(h, "meta_block", a->meta_block);
            cJSON_AddNumberToObject(h, "support_weight", a->support_weight);
            cJSON_AddBoolToObject(h, "emb_logit", a->emb_logit);
            cJSON_AddNumberToObject(h, "lr", a->lr);
            cJSON_AddNumberToObject(h, "task_lr", a->task_lr);
            if (r->adapt) {
                cJSON_AddNumberToObject(h, "adapt_steps", a->k);
                cJSON_AddNumberToObject(h, "adapt_task_lr", a->alpha);
            }
            double ep[LM_XP_MAX_SEEDS];
            for (uint32_t s = 0; s < a->nseeds; s++) ep[s] = a->rep[s].best_epoch;
            /* an ensemble: member 0's (the single row's model of that seed) */
            cJSON_AddItemToObject(h, "best_epoch_per_seed", cJSON_CreateDoubleArray(ep, (int)a->nseeds));
            if (a->members) {
                cJSON_AddNumberToObject(h, "members", a->members);
                cJSON *ms = cJSON_AddArrayToObject(h, "member_seeds_per_seed");
                for (uint32_t s = 0; s < a->nseeds; s++) {
                    cJSON *one = cJSON_CreateArray();
                    for (uint32_t j = 0; j < a->members; j++)
                        cJSON_AddItemToArray(one, cJSON_CreateNumber((double)j * x->o->seeds + s + 1));
                    cJSON_AddItemToArray(ms, one);
                }
            }
        } else {
            cJSON *h = cJSON_AddObjectToObject(o, "hyperparameters");
            cJSON_AddNumberToObject(h, "pseudo_examples", 5);
            cJSON_AddStringToObject(h, "item", "the first categorical column");
        }
        cJSON_AddItemToArray(arr, o);
    }
    int rc = write_json_text(arr, path, err);
    if (rc) return rc;

    /* run.json beside it: the data, the grids, the patterns and the timings */
    char *dir = lm_path_dir(path), *rp = dir ? lm_path_join(dir, "run.json") : NULL;
    free(dir);
    if (!rp) return lm_err_set(err, LM_ENOMEM, "out of memory");
    cJSON *run = cJSON_CreateObject();
    cJSON_AddStringToObject(run, "data", x->data_name);
    if (x->o->command_line) cJSON_AddStringToObject(run, "command", x->o->command_line);
    cJSON_AddNumberToObject(run, "tasks", (double)x->ntasks);
    cJSON_AddNumberToObject(run, "new_tasks", (double)x->nnew);
    cJSON_AddNumberToObject(run, "examples", (double)x->nrows);
    cJSON_AddNumberToObject(run, "seeds", x->o->seeds);
    cJSON_AddNumberToObject(run, "threads", x->threads);
    cJSON_AddNumberToObject(run, "seconds_grid", round(x->seconds_grid * 10) / 10);
    cJSON_AddNumberToObject(run, "seconds_total", round(x->seconds_total * 10) / 10);
    cJSON_AddNumberToObject(run, "cpu_seconds_total", round(x->cpu_total * 10) / 10);
    cJSON_AddNumberToObject(run, "floor_warm_val_auc", x->floor_val.auc);
    cJSON_AddNumberToObject(run, "seconds_sweeps", round(x->seconds_sweeps * 10) / 10);
    cJSON *sk = cJSON_AddArrayToObject(run, "skipped");
    for (size_t i = 0; i < x->nskipped; i++) cJSON_AddItemToArray(sk, cJSON_CreateString(x->skipped[i]));
    if (x->genre_tasks) {
        cJSON *t5 = cJSON_AddObjectToObject(run, "table5_user_genre");
        cJSON_AddNumberToObject(t5, "tasks", (double)x->genre_tasks);
        cJSON_AddNumberToObject(t5, "new_tasks", (double)x->genre_new);
        for (int i = 0; i < 2; i++) {
            const lm_xp_arm *a = &x->genre_arm[i];
            cJSON *e = cJSON_AddObjectToObject(t5, a->key);
            cJSON_AddNumberToObject(e, "adapt_steps", a->k);
            cJSON_AddNumberToObject(e, "adapt_task_lr", a->alpha);
            cJSON_AddNumberToObject(e, "val_auc_no_adaptation", a->noadapt_val);
            cJSON *ag = cJSON_AddArrayToObject(e, "adapt_grid");
            for (size_t j = 0; j < a->nadapt; j++) {
                cJSON *q = cJSON_CreateObject();
                cJSON_AddNumberToObject(q, "k", a->adapt_k[j]);
                cJSON_AddNumberToObject(q, "task_lr", a->adapt_alpha[j]);
                cJSON_AddNumberToObject(q, "val_auc", a->adapt_val[j]);
                cJSON_AddItemToArray(ag, q);
            }
        }
    }
    cJSON *arms = cJSON_AddArrayToObject(run, "algorithms");
    for (int i = 0; i < LM_XP_NARMS; i++) {
        const lm_xp_arm *a = &x->arm[i];
        if (!a->enabled) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "algo", a->key);
        cJSON_AddStringToObject(o, "label", a->label);
        cJSON_AddNumberToObject(o, "lr", a->lr);
        cJSON_AddNumberToObject(o, "task_lr", a->task_lr);
        cJSON_AddNumberToObject(o, "adapt_steps", a->k);
        cJSON_AddNumberToObject(o, "adapt_task_lr", a->alpha);
        if (a->data == LM_XP_DATA_REFIT || a->members) /* nothing chosen: the rates row's choice */
            cJSON_AddNullToObject(o, "val_auc_no_adaptation");
        else
            cJSON_AddNumberToObject(o, "val_auc_no_adaptation", a->noadapt_val);
        cJSON *g = cJSON_AddArrayToObject(o, "lr_grid");
        for (size_t j = 0; j < a->ngrid; j++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "lr", a->grid_lr[j]);
            cJSON_AddNumberToObject(e, "task_lr", a->grid_task_lr[j]);
            cJSON_AddNumberToObject(e, "val_auc", a->grid_val[j]);
            cJSON_AddNumberToObject(e, "best_epoch", a->grid_best_epoch[j]);
            cJSON_AddNumberToObject(e, "epochs_run", a->grid_epochs[j]);
            cJSON_AddItemToArray(g, e);
        }
        cJSON *ag = cJSON_AddArrayToObject(o, "adapt_grid");
        for (size_t j = 0; j < a->nadapt; j++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "k", a->adapt_k[j]);
            cJSON_AddNumberToObject(e, "task_lr", a->adapt_alpha[j]);
            cJSON_AddNumberToObject(e, "val_auc", a->adapt_val[j]);
            cJSON_AddBoolToObject(e, "past_grid_edge", a->adapt_extended[j]);
            cJSON_AddItemToArray(ag, e);
        }
        cJSON_AddItemToArray(arms, o);
    }
    cJSON *pats = cJSON_AddArrayToObject(run, "patterns");
    for (size_t i = 0; i < x->npat; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "statement", x->pat[i].text);
        cJSON_AddBoolToObject(e, "held", x->pat[i].held);
        cJSON_AddItemToArray(pats, e);
    }
    rc = write_json_text(run, rp, err);
    free(rp);
    return rc;
}
