/* experiment_text.c: the words and extra columns of the tables beyond 3 and 4 (5, 9, 10, 12,
 * 13, 14, freshness), shared by report.md (experiment_md.c) and report.html (experiment_html.c):
 * each table's title, what it does and what the paper found, and the columns only it has (Table
 * 9's time against plain, Table 12's adaptation at the swept rate, Table 14's difference from
 * the latest example, the staleness a freshness row realised). */
#include "eval/experiment.h"

#include "core/core.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- the point tables' text ---------------------------------------------------------------- */

const char *lm_xp_table_title(int table)
{
    switch (table) {
    case 5: return "Table 5 analog: the task definition";
    case 9: return "Table 9 analog: inner steps n, training time and AUC gain";
    case 10: return "Table 10 analog: dropout";
    case 12: return "Table 12 analog: the task learning rate";
    case 13: return "Table 13 analog: the global learning rate";
    case 14: return "Table 14 analog: pooling of the meta embedding";
    default: return "Embedding freshness (section 5): a stale embedding against a fresh one";
    }
}

const char *lm_xp_table_about(int table)
{
    switch (table) {
    case 5:
        return "Per user (Table 3's models) against per (user, the item's first genre): the same data "
               "prepared with `--task user,genre` (its own splits, so its test parts differ), plain and "
               "LiMAML "
               "trained with the rates chosen for Table 3 on every seed, the adaptation steps and rate "
               "chosen "
               "again on that dataset's warm validation parts. Each gain is over the plain model without "
               "adaptation of the same task definition and seed (paper, pClick: +0.01% per user, +0.47% per "
               "(user, notification type)).";
    case 9:
        return "LiMAML trained with n inner SGD steps on the support set (the rest as chosen; adapted at "
               "test "
               "with the chosen k and alpha), every seed. Training time against plain training of the same "
               "seed: total wall time (early stopping decides the epochs), wall time per epoch, and CPU "
               "seconds (all threads) per epoch, the figure to trust on a machine shared with other work, "
               "where runs made minutes apart meet different loads. An epoch includes lm_train's "
               "validation, itself adapted n steps. Paper: +105% at n = 1 to +221% at n = 5, gains +1.47% to "
               "+1.51%.";
    case 10:
        return "Dropout after every hidden layer during training (off at adaptation and scoring). A rate "
               "above 0 "
               "trains on the per-task reference engine (the batched one has no dropout), so the 0 row "
               "(Table "
               "3's models, batched engine) differs from the others in engine too. Paper: +1.47% at 0 down "
               "to "
               "+0.88% at 0.6.";
    case 12:
        return "The inner task learning rate used in training (the rest as chosen; adapted at test with the "
               "chosen k and alpha); the column 'adapted at this rate' adapts at test with alpha equal to "
               "the "
               "swept rate too, the paper's single task learning rate. Paper: +1.44% to +1.47% from 0.005 to "
               "10.";
    case 13:
        return "The outer (Adam) learning rate of training (the rest as chosen). Paper: +1.37% to +1.47% "
               "from "
               "0.0009 to 0.006, the most sensitive of its hyperparameters.";
    case 14:
        return "Table 3's LiMAML models evaluated again: the meta embedding is the adapted meta block's "
               "output on "
               "the task's latest validation example (served; the default), or the max, mean, or "
               "cosine-weighted "
               "mean (weights: each output's cosine with the latest one's) over all its validation examples. "
               "Seed 1's warm validation AUC (adapting on train parts) is what validation would choose by. "
               "Paper: -0.06%, -0.12%, -0.10% against latest.";
    default:
        return "Table 3's LiMAML models evaluated again, each task adapted only on the rows an embedding job "
               "run "
               "D days before its latest adaptation row would have seen (time <= latest - D); a task left "
               "with "
               "none is scored without adaptation, as a task without an embedding. The realised staleness "
               "is reported: the share of tasks still adapted, their rows, the mean lag behind the latest "
               "row "
               "and the embedding's age at the task's first test row. Rows marked (option) adapt on train "
               "and "
               "validation parts (the protocol's recent-window variant), where a stale embedding keeps more "
               "rows. Paper: weekly instead of daily refresh cost 0.5% AUC.";
    }
}

static void cellf(char *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cellf(char *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c, 64, fmt, ap);
    va_end(ap);
}

static void stat_cell(char *c, const double *v, uint32_t n, int digits, const char *unit)
{
    lm_xp_stat st = lm_xp_stat_of(v, n);
    if (isnan(st.mean))
        cellf(c, "n/a");
    else
        cellf(c, "%.*f ± %.*f%s", digits, st.mean, digits, st.std, unit);
}

size_t lm_xp_point_extras(const lm_xp *x, const lm_xp_row *r, char head[][64], char cell[][64])
{
    const lm_xp_point *p = &x->pt[r->point];
    double v[LM_XP_MAX_SEEDS] = {0};
    uint32_t n = p->nseeds;
    size_t k = 0;
#define HEAD(h) snprintf(head[k], 64, "%s", h)
    switch (p->table) {
    case 9:
        HEAD("Epochs");
        for (uint32_t s = 0; s < n; s++) v[s] = p->epochs[s];
        stat_cell(cell[k++], v, n, 1, "");
        HEAD("Time vs plain");
        for (uint32_t s = 0; s < n; s++) v[s] = 100.0 * (p->train_secs[s] / p->plain_secs[s] - 1);
        stat_cell(cell[k++], v, n, 0, "%");
        HEAD("Per epoch vs plain");
        for (uint32_t s = 0; s < n; s++)
            v[s] = 100.0 * ((p->train_secs[s] / LM_MAX(p->epochs[s], 1)) /
                                (p->plain_secs[s] / LM_MAX(p->plain_epochs[s], 1)) -
                            1);
        stat_cell(cell[k++], v, n, 0, "%");
        HEAD("CPU per epoch vs plain");
        for (uint32_t s = 0; s < n; s++)
            v[s] = 100.0 * ((p->train_cpu[s] / LM_MAX(p->epochs[s], 1)) /
                                (p->plain_cpu[s] / LM_MAX(p->plain_epochs[s], 1)) -
                            1);
        stat_cell(cell[k++], v, n, 0, "%");
        break;
    case 12:
        HEAD("Adapted at this rate");
        for (uint32_t s = 0; s < n; s++) v[s] = p->alt[s].auc;
        if (p->has_alt)
            stat_cell(cell[k++], v, n, 4, "");
        else
            cellf(cell[k++], "—");
        /* fall through */
    case 10:
    case 13:
    case 5:
        HEAD("Train val AUC");
        stat_cell(cell[k++], p->val_auc, n, 4, "");
        HEAD("Epochs");
        for (uint32_t s = 0; s < n; s++) v[s] = p->epochs[s];
        stat_cell(cell[k++], v, n, 1, "");
        HEAD("Train s");
        stat_cell(cell[k++], p->train_secs, n, 1, "");
        break;
    case 14: {
        const lm_xp_row *lat = NULL;
        for (size_t i = 0; i < x->nrows_out; i++)
            if (x->row[i].kind == LM_XP_ROW_POINT && x->pt[x->row[i].point].table == 14 &&
                x->pt[x->row[i].point].chosen)
                lat = &x->row[i];
        HEAD("vs latest");
        if (lat)
            cellf(cell[k++], "%+.3f%%", 100 * (r->auc.mean - lat->auc.mean) / lat->auc.mean);
        else
            cellf(cell[k++], "—");
        HEAD("Seed 1 warm val AUC");
        cellf(cell[k++], "%.4f", p->seed1_val);
        break;
    }
    default:
        HEAD("Tasks adapted");
        for (uint32_t s = 0; s < n; s++)
            v[s] = p->res[s].tasks ? 100.0 * p->res[s].tasks_adapted / p->res[s].tasks : 0;
        stat_cell(cell[k++], v, n, 1, "%");
        HEAD("Rows adapted");
        for (uint32_t s = 0; s < n; s++) v[s] = (double)p->res[s].rows_adapted;
        cellf(cell[k++], "%.0f", lm_xp_stat_of(v, n).mean);
        HEAD("Lag (days)");
        for (uint32_t s = 0; s < n; s++) v[s] = p->res[s].adapt_lag_mean / 86400.0;
        stat_cell(cell[k++], v, n, 1, "");
        HEAD("Age at first test row (days)");
        for (uint32_t s = 0; s < n; s++) v[s] = p->res[s].adapt_age_mean / 86400.0;
        stat_cell(cell[k++], v, n, 1, "");
        break;
    }
#undef HEAD
    return k;
}
