/* metrics.h: ranking and calibration metrics over scored examples. */
#ifndef LM_EVAL_METRICS_H
#define LM_EVAL_METRICS_H

#include "core/core.h"

/* Area under the ROC curve of scores s[0..n) against 0/1 labels y: the probability that a
 * random positive scores above a random negative, ties counting one half. Returns NaN when
 * there are no positives or no negatives. Sorts a copy: O(n log n), allocates n pairs. */
double lm_auc(const float *s, const float *y, size_t n);

/* Mean binary log loss of probabilities p (clamped to [1e-7, 1 - 1e-7]). */
double lm_logloss(const float *p, const float *y, size_t n);

#endif
