/* floor.h: the floor that needs no learning (PROTOCOL.md, "The floor that needs no learning"),
 * scored by the same pooled AUC, slices and log loss as lm_evaluate. */
#ifndef LM_EVAL_FLOOR_H
#define LM_EVAL_FLOOR_H

#include "limaml.h"

#include <stdint.h>

/* Where a warm task's own rate comes from. A new task has no train part: its rate always comes
 * from its validation part (when the test part is scored). */
enum {
    LM_FLOOR_USER_TRAIN_VAL = 0, /* all of its rows before the test part (the protocol's) */
    LM_FLOOR_USER_TRAIN = 1,     /* its train part only (the protocol's 0.737 variant) */
};

typedef struct lm_floor_opts {
    double pseudo;   /* a: pseudo-examples at the global rate g in each smoothed rate (5) */
    int user_from;   /* LM_FLOOR_USER_... */
    int use_item;    /* add the item rate (1); 0: the task's rate alone */
    int score_split; /* LM_SPLIT_TEST (default) or LM_SPLIT_VAL (then a task's rate comes
                      * from its train part, and new tasks, having none, get g) */
    int warm_only;   /* score warm tasks only */
} lm_floor_opts;

void lm_floor_opts_default(lm_floor_opts *o);

/* Score every task's scored split with
 *     (task positives + a g) / (task count + a)  +  (item positives + a g) / (item count + a)
 * where g is the positive rate of the training pool (every warm task's train part), the item
 * is the first categorical column's id and its counts come from the training pool (a dataset
 * without a categorical column scores the task's rate alone), and the task's counts come from
 * its rows chosen by o->user_from. The result fills the same fields as lm_evaluate; its log loss
 * treats half the score (the mean of the two rates) as the probability. */
int lm_floor_evaluate(const lm_dataset *ds, const lm_floor_opts *o, lm_eval_result *res, lm_err *err);

/* Pooled AUC, log loss (when `prob`), and the four slices of lm_evaluate, from scored examples:
 * flags bit 0 = the example's task has fewer than 25 scored rows, bit 1 = a new task. `prob`
 * holds probabilities for the log loss, or NULL for none (NaN). Fills auc*, logloss and
 * examples*; leaves tasks and seconds alone. */
int lm_eval_pooled(const float *score, const float *prob, const float *label, const uint8_t *flags, size_t n,
                   lm_eval_result *res, lm_err *err);

#endif
