/* experiment.h: `limaml experiment`, the paper's Tables 3 and 4 run end to end under
 * PROTOCOL.md: choose hyperparameters on warm tasks' validation parts, train every algorithm
 * for several seeds, score the test parts without and with task adaptation, and write
 * results.json, report.md and a self-contained report.html (docs/EXPERIMENTS.md).
 *
 * experiment.c runs it; experiment_report.c turns its results into rows and checked patterns
 * and writes results.json and run.json; experiment_md.c writes report.md and experiment_html.c
 * report.html. The structures below are what they share. */
#ifndef LM_EVAL_EXPERIMENT_H
#define LM_EVAL_EXPERIMENT_H

#include "limaml.h"

#include <stdint.h>
#include <stdio.h>

/* ---- options -------------------------------------------------------------------------------- */

enum { LM_XP_SOURCE_MOVIELENS = 0, LM_XP_SOURCE_SYNTHETIC = 1, LM_XP_SOURCE_DATASET = 2 };
enum { LM_XP_TABLE3 = 1, LM_XP_TABLE4 = 2 };

#define LM_XP_MAX_SEEDS 32
#define LM_XP_MAX_GRID 8
#define LM_XP_MAX_POINTS (LM_XP_MAX_GRID * LM_XP_MAX_GRID + 32)

typedef struct lm_experiment_opts {
    int source;           /* LM_XP_SOURCE_... */
    const char *input;    /* MovieLens folder (u.data ...) or a prepared dataset folder */
    uint64_t synth_tasks; /* synthetic: task population */
    uint64_t synth_seed;  /* synthetic: generator seed */
    const char *out_dir;  /* results.json, report.md, report.html, logs/ */
    int force;            /* replace an existing out_dir */
    uint32_t seeds;       /* training seeds 1..seeds */
    int tables;           /* LM_XP_TABLE3 | LM_XP_TABLE4 */
    int threads;          /* 0: all cores */
    uint32_t epochs;      /* at most this many epochs; early stopping decides */
    uint32_t patience;
    double support_weight; /* w of the "LiMAML + support loss" option row */
    /* The grid searched on seed 1 (warm validation only): outer learning rates, then the
     * adaptation steps and task learning rates of the chosen model. */
    double grid_lr[LM_XP_MAX_GRID];
    size_t ngrid_lr;
    uint32_t grid_k[LM_XP_MAX_GRID];
    size_t ngrid_k;
    double grid_alpha[LM_XP_MAX_GRID];
    size_t ngrid_alpha;
    /* Inner (training) task learning rates tried for LiMAML with an MLP meta block, whose fast
     * engine makes a grid cheap; the other algorithms train with the first. */
    double grid_task_lr[LM_XP_MAX_GRID];
    size_t ngrid_task_lr;
    /* While the best adaptation point lies on the grid's edge, the search goes on past it:
     * k doubles up to max_k, alpha is multiplied or divided by 3 (within [0.001, 3]). */
    uint32_t max_k;
    /* MAML, wide-and-deep and LiMAML with an id meta block train through the per-task
     * reference engine, 5 to 30 times slower than the batched one: they try only this many of
     * the learning rates (the first ones), which keeps the whole run within minutes. */
    size_t slow_ngrid_lr;
    /* Where the report's comparison figures come from (a line quoted as is), or NULL. */
    const char *command_line;
    /* One line of progress (no newline), or NULL. Called from the calling thread only. */
    void (*progress)(void *ctx, const char *line);
    void *progress_ctx;
} lm_experiment_opts;

/* The defaults (the CLI's --help lists them). */
void lm_experiment_opts_default(lm_experiment_opts *o);
/* A tiny grid and few epochs, for tests: seconds, not minutes. */
void lm_experiment_opts_quick(lm_experiment_opts *o);

typedef struct lm_experiment_summary {
    double seconds; /* the whole run */
    size_t rows;    /* rows written to results.json */
    int patterns_held, patterns_checked;
} lm_experiment_summary;

/* Run the experiment and publish out_dir atomically (built beside it under a temporary name;
 * on failure nothing is left at out_dir). The dataset it trains on is prepared inside the
 * temporary folder and removed before publishing (movielens, synthetic) or read in place
 * (a prepared dataset). */
int lm_experiment_run(const lm_experiment_opts *o, lm_experiment_summary *sum, lm_err *err);

/* ---- what the writers share ----------------------------------------------------------------- */

/* One algorithm as trained: its training options, what the grid chose, and per seed the
 * training report and the test results without and with adaptation. */
typedef struct lm_xp_arm {
    const char *key; /* "plain", "maml", "limaml", "limaml_sw", "widedeep", "limaml_id" */
    char label[96];  /* as the tables print it */
    int algo;        /* LM_TRAIN_... */
    const char *meta_block;
    double support_weight;
    int tables; /* tables that need it */
    int enabled;
    int option_row; /* an improvement beyond the paper, reported as its own rows */

    /* grid, seed 1: training runs (lr x inner task lr), then adaptation points (k x alpha) */
    size_t ngrid;
    double grid_lr[LM_XP_MAX_POINTS], grid_task_lr[LM_XP_MAX_POINTS], grid_val[LM_XP_MAX_POINTS];
    double grid_secs[LM_XP_MAX_POINTS];
    uint32_t grid_epochs[LM_XP_MAX_POINTS], grid_best_epoch[LM_XP_MAX_POINTS];
    size_t nadapt;
    uint32_t adapt_k[LM_XP_MAX_POINTS];
    double adapt_alpha[LM_XP_MAX_POINTS], adapt_val[LM_XP_MAX_POINTS];
    int adapt_extended[LM_XP_MAX_POINTS]; /* 1: tried because the best lay on the grid's edge */
    double noadapt_val;                   /* warm validation AUC without adaptation */
    double lr, task_lr;                   /* chosen for training */
    uint32_t k;                           /* chosen for adaptation */
    double alpha;

    /* per seed */
    uint32_t nseeds;
    lm_train_report rep[LM_XP_MAX_SEEDS];
    lm_eval_result test0[LM_XP_MAX_SEEDS], test1[LM_XP_MAX_SEEDS]; /* without, with adaptation */

    /* seed 1's curves, from its log */
    size_t ncurve;
    double curve_loss[256], curve_val[256];
} lm_xp_arm;

enum { LM_XP_PLAIN, LM_XP_MAML, LM_XP_LIMAML, LM_XP_LIMAML_SW, LM_XP_WIDEDEEP, LM_XP_LIMAML_ID, LM_XP_NARMS };

/* One line of a table: an arm without or with adaptation, or a floor. */
enum { LM_XP_ROW_ARM = 0, LM_XP_ROW_FLOOR = 1, LM_XP_ROW_FLOOR_TRAIN = 2 };

typedef struct lm_xp_stat {
    double mean, std; /* std over seeds (n - 1 in the denominator; 0 for one seed) */
} lm_xp_stat;

typedef struct lm_xp_row {
    int table; /* 3 or 4 */
    int kind;  /* LM_XP_ROW_... */
    int arm;   /* LM_XP_... for LM_XP_ROW_ARM */
    int adapt;
    const char *label;
    lm_xp_stat auc, lt25, ge25, warm, nw, logloss, gain, train_secs;
    double seed_auc[LM_XP_MAX_SEEDS];
    uint32_t nseeds;
    int below_floor; /* mean AUC below the floor's */
    int option_row;
} lm_xp_row;

/* A statement of the paper checked on our figures. */
typedef struct lm_xp_pattern {
    char text[512]; /* what the paper says, and our figures */
    int held;
} lm_xp_pattern;

#define LM_XP_MAX_ROWS 24
#define LM_XP_MAX_PATTERNS 16

typedef struct lm_xp {
    const lm_experiment_opts *o;
    const char *data_name; /* "MovieLens-100K (PROTOCOL.md)", "synthetic (N tasks, seed S)", or
                            * the dataset folder */
    char data_buf[96];
    uint64_t ntasks, nnew, nrows, split_rows[LM_SPLIT_COUNT];
    int threads;
    lm_xp_arm arm[LM_XP_NARMS];
    lm_eval_result floor_test, floor_train_test, floor_val;
    lm_xp_row row[LM_XP_MAX_ROWS];
    size_t nrows_out;
    lm_xp_pattern pat[LM_XP_MAX_PATTERNS];
    size_t npat;
    double seconds_grid, seconds_total;
    double cpu_total;    /* CPU seconds of the process, all threads */
    const char *tmp_dir; /* the folder being built */
} lm_xp;

/* A growing text buffer for the writers; an allocation failure is remembered and reported
 * when the buffer is written. */
typedef struct lm_xp_buf {
    char *p;
    size_t n, cap;
    int oom;
} lm_xp_buf;
void lm_xp_printf(lm_xp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Write the buffer to `path` atomically and free it. */
int lm_xp_buf_write(lm_xp_buf *b, const char *path, lm_err *err);

/* experiment_report.c: mean and std over seeds; the rows; the paper's patterns; results.json
 * at `path` and run.json beside it. */
lm_xp_stat lm_xp_stat_of(const double *v, size_t n);
void lm_xp_build_rows(lm_xp *x);
void lm_xp_check_patterns(lm_xp *x);
int lm_xp_write_json(const lm_xp *x, const char *path, lm_err *err);
/* experiment_md.c */
int lm_xp_write_md(const lm_xp *x, const char *path, lm_err *err);
/* experiment_html.c */
int lm_xp_write_html(const lm_xp *x, const char *path, lm_err *err);

#endif
