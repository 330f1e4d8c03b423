/* floor.c: the count floor of PROTOCOL.md. A learned CTR model has to beat "how often does this
 * user click, plus how often is this item clicked": two smoothed rates and no learning. Quoting
 * it beside every learned row keeps the learned rows honest, and it is scored by the same
 * pooled AUC and slice code as lm_evaluate so the figures are comparable. */
#include "eval/floor.h"

#include "eval/metrics.h"

#include <math.h>
#include <string.h>

void lm_floor_opts_default(lm_floor_opts *o)
{
    memset(o, 0, sizeof *o);
    o->pseudo = 5;
    o->user_from = LM_FLOOR_USER_TRAIN_VAL;
    o->use_item = 1;
    o->score_split = LM_SPLIT_TEST;
}

/* ---- the pooled metric and its slices ------------------------------------------------------ */

int lm_eval_pooled(const float *score, const float *prob, const float *label, const uint8_t *flags, size_t n,
                   lm_eval_result *res, lm_err *err)
{
    res->examples = n;
    res->auc = lm_auc(score, label, n);
    res->logloss = prob ? lm_logloss(prob, label, n) : NAN;
    float *s2 = lm_malloc_array(n + 1, sizeof *s2), *y2 = lm_malloc_array(n + 1, sizeof *y2);
    if (!s2 || !y2) {
        free(s2), free(y2);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    /* the slices of lm_evaluate, in its order: <25, >=25, warm, new */
    double *slot[4] = {&res->auc_lt25, &res->auc_ge25, &res->auc_warm, &res->auc_new};
    uint64_t *cnt[4] = {&res->examples_lt25, &res->examples_ge25, &res->examples_warm, &res->examples_new};
    for (int sl = 0; sl < 4; sl++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            int lt = flags[i] & 1, nw = (flags[i] >> 1) & 1;
            int in = sl == 0 ? lt : sl == 1 ? !lt : sl == 2 ? !nw : nw;
            if (in) s2[m] = score[i], y2[m++] = label[i];
        }
        *cnt[sl] = m;
        *slot[sl] = m ? lm_auc(s2, y2, m) : NAN;
    }
    free(s2), free(y2);
    return LM_OK;
}

/* ---- the floor ----------------------------------------------------------------------------- */

static int is_train(int split)
{
    return split == LM_SPLIT_SUPPORT || split == LM_SPLIT_QUERY;
}

/* Does a row of split `sp` count toward its task's own rate? Only rows before the scored part:
 * scoring test, a warm task counts train (+ val) and a new task its val; scoring val, the train
 * part (a new task has none). */
static int counts_for_task(const lm_floor_opts *o, int is_new, int sp)
{
    if (o->score_split == LM_SPLIT_VAL) return is_train(sp);
    if (is_new) return sp == LM_SPLIT_VAL;
    return is_train(sp) || (o->user_from == LM_FLOOR_USER_TRAIN_VAL && sp == LM_SPLIT_VAL);
}

int lm_floor_evaluate(const lm_dataset *ds, const lm_floor_opts *o, lm_eval_result *res, lm_err *err)
{
    double t0 = lm_now();
    memset(res, 0, sizeof *res);
    if (o->score_split != LM_SPLIT_TEST && o->score_split != LM_SPLIT_VAL)
        return lm_err_set(err, LM_EINVAL, "floor: the scored split must be test or val");
    if (!(o->pseudo > 0)) return lm_err_set(err, LM_EINVAL, "floor: the pseudo-count must be > 0");
    const lm_schema *schema = lm_dataset_schema(ds);
    if (schema->label_type != LM_LABEL_BINARY)
        return lm_err_set(err, LM_EINVAL, "floor: needs a binary label");
    uint64_t ntasks = lm_dataset_ntasks(ds);
    int items = o->use_item && lm_dataset_ncat(ds) > 0;
    size_t nitems = items ? schema->cat[0].buckets : 1;

    /* Pass 1: the training pool's counts (global and per item), and the scored rows' count. */
    double *ipos = calloc(nitems + 1, sizeof *ipos), *icnt = calloc(nitems + 1, sizeof *icnt);
    if (!ipos || !icnt) {
        free(ipos), free(icnt);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    double gpos = 0, gcnt = 0;
    size_t N = 0;
    for (uint64_t t = 0; t < ntasks; t++) {
        const lm_task *k = lm_dataset_task(ds, t);
        if (!(o->warm_only && k->is_new)) N += k->nsplit[o->score_split];
        if (k->is_new) continue;
        for (uint32_t i = 0; i < k->n; i++) {
            lm_row_view v = lm_dataset_row(ds, k->first + i);
            if (!is_train(v.split)) continue;
            int y = v.label > 0.5f;
            gpos += y, gcnt += 1;
            if (items) ipos[v.cat[0]] += y, icnt[v.cat[0]] += 1;
        }
    }
    if (gcnt == 0) {
        free(ipos), free(icnt);
        return lm_err_set(err, LM_EINVAL,
                          "floor: the dataset has no training rows (warm tasks' train parts)");
    }
    double a = o->pseudo, g = gpos / gcnt;

    /* Pass 2: each task's own rate, then its scored rows. */
    float *score = lm_malloc_array(N + 1, sizeof *score), *prob = lm_malloc_array(N + 1, sizeof *prob);
    float *label = lm_malloc_array(N + 1, sizeof *label);
    uint8_t *flags = lm_malloc_array(N + 1, 1);
    int rc = LM_OK;
    if (!score || !prob || !label || !flags) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    size_t p = 0;
    for (uint64_t t = 0; !rc && t < ntasks; t++) {
        const lm_task *k = lm_dataset_task(ds, t);
        uint32_t ns = k->nsplit[o->score_split];
        if ((o->warm_only && k->is_new) || ns == 0) continue;
        double upos = 0, ucnt = 0;
        for (uint32_t i = 0; i < k->n; i++) {
            lm_row_view v = lm_dataset_row(ds, k->first + i);
            if (!counts_for_task(o, (int)k->is_new, v.split)) continue;
            upos += v.label > 0.5f, ucnt += 1;
        }
        double urate = (upos + a * g) / (ucnt + a);
        uint8_t fl = (uint8_t)((ns < 25 ? 1 : 0) | (k->is_new ? 2 : 0));
        for (uint32_t i = 0; i < k->n; i++) {
            lm_row_view v = lm_dataset_row(ds, k->first + i);
            if (v.split != o->score_split) continue;
            double irate = items ? (ipos[v.cat[0]] + a * g) / (icnt[v.cat[0]] + a) : 0;
            double s = urate + irate;
            score[p] = (float)s;
            prob[p] = (float)(items ? s / 2 : s);
            label[p] = v.label;
            flags[p++] = fl;
        }
        res->tasks++;
    }
    LM_ASSERT(rc || p == N);
    if (!rc) rc = lm_eval_pooled(score, prob, label, flags, N, res, err);
    free(ipos), free(icnt), free(score), free(prob), free(label), free(flags);
    res->seconds = lm_now() - t0;
    return rc;
}
