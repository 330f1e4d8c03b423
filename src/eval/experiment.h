/* experiment.h: `limaml experiment`, the paper's offline tables run end to end under
 * PROTOCOL.md: choose hyperparameters on warm tasks' validation parts, train every algorithm
 * for several seeds, score the test parts without and with task adaptation (Tables 3, 4), then
 * move one thing at a time around the chosen LiMAML configuration (Tables 5, 9, 10, 12, 13, 14,
 * freshness), and write results.json, report.md and a self-contained report.html
 * (docs/EXPERIMENTS.md).
 *
 * experiment.c runs Tables 3 and 4, experiment_sweep.c the others (experiment_text.c holds the
 * latter's titles and extra columns); experiment_report.c turns its results into rows and checked patterns
 * and writes results.json and run.json; experiment_md.c writes report.md and experiment_html.c
 * report.html. The structures below are what they share. */
#ifndef LM_EVAL_EXPERIMENT_H
#define LM_EVAL_EXPERIMENT_H

#include "limaml.h"

#include <stdint.h>
#include <stdio.h>

/* ---- options -------------------------------------------------------------------------------- */

enum { LM_XP_SOURCE_MOVIELENS = 0, LM_XP_SOURCE_SYNTHETIC = 1, LM_XP_SOURCE_DATASET = 2 };
/* Tables asked for (a bit mask): the paper's Tables 3, 4, 5 (task definition), 9 (inner
 * steps), 10 (dropout), 12 (task learning rate), 13 (global learning rate), 14 (pooling of the
 * meta embedding) and section 5's embedding freshness. */
enum {
    LM_XP_TABLE3 = 1,
    LM_XP_TABLE4 = 2,
    LM_XP_TABLE5 = 4,
    LM_XP_TABLE9 = 8,
    LM_XP_TABLE10 = 16,
    LM_XP_TABLE12 = 32,
    LM_XP_TABLE13 = 64,
    LM_XP_TABLE14 = 128,
    LM_XP_FRESH = 256,
    LM_XP_TABLES_ALL = 511,
    /* the tables built around the chosen LiMAML configuration (they need plain and LiMAML) */
    LM_XP_TABLES_SWEEP = LM_XP_TABLE5 | LM_XP_TABLE9 | LM_XP_TABLE10 | LM_XP_TABLE12 | LM_XP_TABLE13 |
                         LM_XP_TABLE14 | LM_XP_FRESH,
};
/* The table number of the freshness rows (results.json calls it "fresh"). */
#define LM_XP_T_FRESH 99

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
    uint32_t ensemble;     /* members of the ensemble option rows (MovieLens; < 2: none) */
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
    /* The sweeps around the chosen LiMAML configuration, one parameter at a time (the chosen
     * value is added where missing): inner steps n (Table 9), dropout (10), inner task learning
     * rate (12), outer learning rate (13); and the staleness of the embedding in days (fresh:
     * Table 3's row). */
    uint32_t sweep_inner[LM_XP_MAX_GRID];
    size_t nsweep_inner;
    double sweep_dropout[LM_XP_MAX_GRID];
    size_t nsweep_dropout;
    double sweep_task_lr[LM_XP_MAX_GRID];
    size_t nsweep_task_lr;
    double sweep_lr[LM_XP_MAX_GRID];
    size_t nsweep_lr;
    double stale_days[LM_XP_MAX_GRID];
    size_t nstale_days;
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
    const char *key; /* "plain", "maml", "limaml", "limaml_sw", "limaml_swl", "widedeep", "limaml_id" */
    char label[96];  /* as the tables print it */
    int algo;        /* LM_TRAIN_... */
    const char *meta_block;
    double support_weight;
    int emb_logit; /* lm_train_opts.emb_logit */
    int tables;    /* tables that need it */
    int enabled;
    int option_row;   /* an improvement beyond the paper, reported as its own rows */
    int data;         /* LM_XP_DATA_... */
    uint32_t members; /* an ensemble row's members (seeds s, S + s, ...); 0: one network */

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
    double train_cpu[LM_XP_MAX_SEEDS]; /* CPU seconds of the training run, all threads */
    lm_eval_result test0[LM_XP_MAX_SEEDS], test1[LM_XP_MAX_SEEDS]; /* without, with adaptation */

    /* seed 1's curves, from its log */
    size_t ncurve;
    double curve_loss[256], curve_val[256];
} lm_xp_arm;

enum {
    LM_XP_PLAIN,
    LM_XP_MAML,
    LM_XP_LIMAML,
    LM_XP_LIMAML_SW,
    LM_XP_LIMAML_SWL, /* + the meta embedding's first coordinate added to the logit (emb_logit) */
    LM_XP_WIDEDEEP,
    LM_XP_LIMAML_ID,
    LM_XP_LIMAML_ID_SW, /* Table 4's id-embedding LiMAML with the support loss (an option row) */
    /* MovieLens only, option rows on the dataset with the item's history rate (out of fold)
     * as two more dense features, the history features a practitioner's tree model gets */
    LM_XP_PLAIN_RATES,
    LM_XP_LIMAML_RATES, /* LiMAML + support loss + E[0] on the logit + item rates */
    /* the same configuration, epochs and adaptation trained again on train + validation
     * (prepare --refit), the test parts adapted on train + validation: the final fit a
     * practitioner makes once the settings are chosen */
    LM_XP_LIMAML_REFIT,
    /* ensembles of `ensemble` members of the two rows above, each member another seed
     * (reported seed s: seeds s, S + s, 2S + s, ...), the mean of their logits
     * (lm_model_ensemble): what a practitioner does with models whose seeds disagree */
    LM_XP_LIMAML_RATES_ENS,
    LM_XP_LIMAML_REFIT_ENS,
    LM_XP_NARMS
};
/* Which dataset an arm trains on. */
enum { LM_XP_DATA_PROTOCOL = 0, LM_XP_DATA_RATES = 1, LM_XP_DATA_REFIT = 2, LM_XP_NDATA = 3 };

/* One point of the tables beyond 3 and 4: one configuration (one parameter moved away from
 * the chosen LiMAML configuration, or a pooling, a staleness, a task definition) scored on
 * every seed. Table 3's figures are reused where the configuration is Table 3's. */
#define LM_XP_MAX_SWEEP 72
typedef struct lm_xp_point {
    int table;         /* 5, 9, 10, 12, 13, 14 or LM_XP_T_FRESH */
    const char *param; /* the swept field's name in results.json: "inner_steps", "dropout", ... */
    double value;      /* its value (NAN where it is a word) */
    char value_str[32];
    char label[96];
    const char *algo; /* "limaml" or "plain" */
    int adapt;
    int chosen;     /* the configuration chosen on validation (Table 3's) */
    int reused;     /* Table 3's models and figures, not trained again */
    int option_row; /* beyond the paper (the recent-window freshness rows) */
    /* the configuration */
    double lr, task_lr, dropout, alpha, stale_days;
    uint32_t inner, k;
    int pool, adapt_from;
    double floor_auc; /* the count floor on the same test parts */
    /* per seed */
    uint32_t nseeds;
    lm_eval_result res[LM_XP_MAX_SEEDS];
    double base_auc[LM_XP_MAX_SEEDS]; /* the same seed's plain model, no adaptation, same data */
    double train_secs[LM_XP_MAX_SEEDS], val_auc[LM_XP_MAX_SEEDS];
    uint32_t epochs[LM_XP_MAX_SEEDS];
    int trained; /* train_secs, val_auc and epochs are set */
    double plain_secs[LM_XP_MAX_SEEDS];
    uint32_t plain_epochs[LM_XP_MAX_SEEDS];
    /* CPU seconds of training (all threads), its and plain's: on a machine shared with other
     * work the wall time of runs made minutes apart is not comparable, the CPU time more so */
    double train_cpu[LM_XP_MAX_SEEDS], plain_cpu[LM_XP_MAX_SEEDS];
    int has_alt; /* Table 12: also adapted at alpha = the swept task learning rate */
    lm_eval_result alt[LM_XP_MAX_SEEDS];
    double seed1_val; /* Table 14: seed 1's warm validation AUC with this pooling (NAN: none) */
} lm_xp_point;

/* One line of a table: an arm without or with adaptation, a floor, or a point. */
enum { LM_XP_ROW_ARM = 0, LM_XP_ROW_FLOOR = 1, LM_XP_ROW_FLOOR_TRAIN = 2, LM_XP_ROW_POINT = 3 };

typedef struct lm_xp_stat {
    double mean, std; /* std over seeds (n - 1 in the denominator; 0 for one seed) */
} lm_xp_stat;

typedef struct lm_xp_row {
    int table; /* 3 or 4 */
    int kind;  /* LM_XP_ROW_... */
    int arm;   /* LM_XP_... for LM_XP_ROW_ARM */
    int point; /* index into lm_xp.pt for LM_XP_ROW_POINT */
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

#define LM_XP_MAX_ROWS (32 + LM_XP_MAX_SWEEP)
#define LM_XP_MAX_PATTERNS 40

typedef struct lm_xp {
    const lm_experiment_opts *o;
    const char *data_name; /* "MovieLens-100K (PROTOCOL.md)", "synthetic (N tasks, seed S)", or
                            * the dataset folder */
    char data_buf[96];
    uint64_t ntasks, nnew, nrows, split_rows[LM_SPLIT_COUNT];
    int threads;
    lm_xp_arm arm[LM_XP_NARMS];
    lm_eval_result floor_test, floor_train_test, floor_val;
    lm_xp_point pt[LM_XP_MAX_SWEEP];
    size_t npt;
    char skipped[LM_XP_MAX_GRID][256]; /* tables skipped, and why */
    size_t nskipped;
    double seconds_sweeps;
    uint64_t genre_tasks, genre_new; /* Table 5: the (user, genre) dataset */
    lm_xp_arm genre_arm[2];          /* Table 5: plain and LiMAML on it (adaptation chosen) */
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

/* experiment.c, shared with experiment_sweep.c: training options from an arm's chosen values,
 * scoring (on_val: warm validation after adapting on train parts; else test after adapting on
 * validation parts), the adaptation search, and a progress line. */
void lm_xp_train_opts(const lm_xp *x, const lm_xp_arm *a, uint64_t seed, const char *log_path,
                      lm_train_opts *t);
void lm_xp_eval_opts(const lm_xp *x, uint32_t k, double alpha, int on_val, lm_eval_opts *e);
int lm_xp_choose_adaptation(lm_xp *x, const lm_dataset *ds, lm_xp_arm *a, const lm_model *m, lm_err *err);
double lm_xp_cpu_seconds(void);
void lm_xp_say(const lm_experiment_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *lm_xp_path(const char *dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* experiment_sweep.c: the tables around the chosen LiMAML configuration (5, 9, 10, 12, 13, 14,
 * freshness), after Tables 3 and 4's arms have run every seed. `limaml[s]` are LiMAML's models
 * of Table 3 (seed s + 1), reused where the configuration is the same. */
int lm_xp_run_sweeps(lm_xp *x, const lm_dataset *ds, lm_model *const *limaml, lm_err *err);
/* "3", "fresh" ... */
const char *lm_xp_table_name(int table, char *buf, size_t n);

/* experiment_report.c: mean and std over seeds; the rows; the paper's patterns; results.json
 * at `path` and run.json beside it. */
lm_xp_stat lm_xp_stat_of(const double *v, size_t n);
void lm_xp_build_rows(lm_xp *x);
void lm_xp_check_patterns(lm_xp *x);
int lm_xp_write_json(const lm_xp *x, const char *path, lm_err *err);
/* experiment_text.c: the extra columns of a point table's row (Table 9: time against plain; 12: adapted at the
 * swept rate; 14: against latest; fresh: the staleness realised; ...): headers and cells as
 * text, at most LM_XP_MAX_EXTRA; returns how many. A heading and description of each table. */
#define LM_XP_MAX_EXTRA 5
size_t lm_xp_point_extras(const lm_xp *x, const lm_xp_row *r, char head[][64], char cell[][64]);
const char *lm_xp_table_title(int table);
const char *lm_xp_table_about(int table);
extern const int LM_XP_POINT_TABLES[7];
/* experiment_md.c */
int lm_xp_write_md(const lm_xp *x, const char *path, lm_err *err);
/* experiment_html.c */
int lm_xp_write_html(const lm_xp *x, const char *path, lm_err *err);

#endif
