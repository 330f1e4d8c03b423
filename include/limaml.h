/*
 * limaml.h: the whole public API of liblimaml, grouped by subsystem.
 *
 * limaml personalizes click-through-rate models by meta-learning (LiMAML, KDD 2024): a small
 * meta block maps a task's features to a meta embedding that is adapted per task offline and
 * served from a feature store, while the global block scores candidates online.
 *
 * A worked example: turn a CSV log into a dataset and walk its tasks.
 *
 *     lm_err err = {0};
 *     lm_schema *schema = NULL;
 *     if (lm_schema_load(&schema, "log.csv.schema.json", &err) != LM_OK) die(err.msg);
 *     lm_prepare_opts o;
 *     lm_prepare_opts_default(&o);
 *     const char *inputs[] = {"log.csv"};
 *     lm_prepare_summary sum;
 *     if (lm_prepare(schema, inputs, 1, "out", &o, &sum, &err) != LM_OK) die(err.msg);
 *     lm_dataset *ds = NULL;
 *     if (lm_dataset_open(&ds, "out", LM_DATASET_VERIFY, &err) != LM_OK) die(err.msg);
 *     for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
 *         const lm_task *task = lm_dataset_task(ds, t);
 *         ... lm_dataset_row(ds, task->first + i) ...
 *     }
 *     lm_dataset_close(ds);
 *     lm_schema_free(schema);
 *
 * Conventions (see README "Source layout"):
 * - Functions return LM_OK (0) or a negative LM_E... code; results come back through
 *   out-parameters, listed last. Library code never prints or exits: it fills an lm_err with
 *   a message naming the file, line and column (or the field) where the input was wrong.
 * - `_free(NULL)` and `_close(NULL)` do nothing.
 */
#ifndef LIMAML_H
#define LIMAML_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LM_VERSION_STRING "0.1.0"

/* ============================================================================================
 * core: status codes and error messages
 * ========================================================================================== */

enum {
    LM_OK = 0,
    LM_EINVAL = -1,    /* bad argument or bad input data */
    LM_ENOMEM = -2,    /* allocation failed */
    LM_EIO = -3,       /* read, write, fsync or rename failed (errno in the message) */
    LM_EFORMAT = -4,   /* a file is not in the expected format, or is corrupt */
    LM_EVERSION = -5,  /* a file has a version this build does not read */
    LM_ENOTFOUND = -6, /* a key, column or file that must exist does not */
    LM_EEXIST = -7,    /* the output exists and replacing it was not asked for */
    LM_ELIMIT = -8,    /* a configured limit was exceeded (e.g. too many bad rows) */
    LM_EMISMATCH = -9, /* two files that must agree (schema, shapes) do not */
};

#define LM_ERR_MSG_MAX 1024

/* An error report. Zero-initialize it; functions fill it on failure. */
typedef struct lm_err {
    int code;                 /* the LM_E... code also returned */
    char msg[LM_ERR_MSG_MAX]; /* "FILE:LINE:COLUMN: what is wrong" or "field: what is wrong" */
} lm_err;

/* A static string naming `code`. */
const char *lm_strerror(int code);

/* ============================================================================================
 * data: schemas
 * ========================================================================================== */

/* A categorical column: ids below `buckets` are kept, others (and non-numeric ids) are hashed
 * into [0, buckets). `dim` is the embedding width a model gives it. */
typedef struct lm_cat_spec {
    char *column;
    uint32_t buckets;
    uint32_t dim;
} lm_cat_spec;

/* A history rate of a categorical column ("rates" in the schema): prepare appends two dense
 * features, COLUMN_rate (the smoothed mean label of the column's value over the training pool)
 * and COLUMN_logcount (log(1 + its count) / 10), computed after grouping (src/data/rates.c).
 * A training row's figures leave out its own task's fold (tasks fall in `folds` folds by a
 * hash of their key), so no row sees its own label; the other rows see the whole pool. */
typedef struct lm_rate_spec {
    char *column;     /* a categorical column of the schema */
    uint32_t cat;     /* its index in `cat` */
    double smoothing; /* pseudo-examples at the (out-of-fold) pool's mean label (default 5) */
    uint32_t folds;   /* >= 2 (default 5) */
} lm_rate_spec;

/* A feature table joined to the interactions by a key column ("join" in the schema). */
typedef struct lm_join_spec {
    char *file;     /* resolved against the schema file's folder when relative */
    char *on;       /* the key column, present in the log and in the table */
    char delimiter; /* defaults to the schema's */
    int header;     /* 1 when the first line names the columns */
    char **columns; /* names when there is no header line */
    size_t ncolumns;
} lm_join_spec;

enum { LM_LABEL_BINARY = 0, LM_LABEL_REGRESSION = 1 };

/* The description of an interaction log: which columns make the task key, the time, the label,
 * and the features of the meta and global blocks. Owned by the caller; lm_schema_free. */
typedef struct lm_schema {
    char *path;     /* the file it came from, or NULL */
    char delimiter; /* ',' or '\t' or any single byte */
    int header;     /* 1: the first line names the columns */
    char **columns; /* column names when header is 0 */
    size_t ncolumns;
    char **task; /* task key columns, >= 1; their combination is the task */
    size_t ntask;
    char *time;              /* numeric time column, seconds */
    char *label;             /* label column */
    int label_type;          /* LM_LABEL_BINARY or LM_LABEL_REGRESSION */
    int label_has_threshold; /* binary label = (value >= label_threshold) */
    double label_threshold;
    char **meta; /* meta-block features (also fed to the global block) */
    size_t nmeta;
    char **dense; /* global-block dense features */
    size_t ndense;
    lm_cat_spec *cat; /* global-block categorical features */
    size_t ncat;
    char *split;    /* optional column with values train, val, test */
    char *tiebreak; /* optional numeric column ordering examples with equal times */
    lm_join_spec *join;
    size_t njoin;
    char *json; /* the schema as canonical JSON text (stored in datasets and models) */
    /* History rates: their 2 * nrate dense features are the last ones of `dense` (names
     * COLUMN_rate, COLUMN_logcount), filled by prepare rather than read from the input. */
    lm_rate_spec *rate;
    size_t nrate;
} lm_schema;

/* Parse a schema from JSON text; `path` names it in errors and resolves join files. */
int lm_schema_parse(lm_schema **out, const char *json, size_t len, const char *path, lm_err *err);
/* Read and parse a schema file. */
int lm_schema_load(lm_schema **out, const char *path, lm_err *err);
void lm_schema_free(lm_schema *s);

/* ============================================================================================
 * data: prepare (log -> dataset) and the dataset file
 * ========================================================================================== */

/* Split codes stored per example. Support and query are the two parts of a warm task's train
 * part; plain training uses both. */
enum {
    LM_SPLIT_SUPPORT = 0,
    LM_SPLIT_QUERY = 1,
    LM_SPLIT_VAL = 2,
    LM_SPLIT_TEST = 3,
    LM_SPLIT_COUNT = 4,
};
const char *lm_split_name(int split);

/* How new (cold) tasks are chosen: they never appear in training. */
enum {
    LM_NEWRULE_NONE = 0, /* no new tasks */
    LM_NEWRULE_MOD = 1,  /* the first task column, read as an integer, is 0 modulo `mod` */
    LM_NEWRULE_HASH = 2, /* a hash of the task key falls below `frac` */
};

typedef struct lm_prepare_opts {
    uint32_t max_per_task;     /* keep at most this many most recent examples per task; 0: all */
    double window_days;        /* keep only examples within this many days of the newest; 0: all */
    double train_frac;         /* warm task: first floor(train_frac m) examples are train */
    double val_frac;           /* next floor(val_frac m) are validation, the rest test */
    double new_val_frac;       /* new task: first floor(new_val_frac m) validation, rest test */
    double support_frac;       /* train part: first ceil(support_frac t) support, rest query */
    int new_rule;              /* LM_NEWRULE_... */
    uint64_t new_mod;          /* for LM_NEWRULE_MOD */
    double new_frac;           /* for LM_NEWRULE_HASH */
    uint64_t skip_bad_rows;    /* tolerate up to this many bad rows (reported); 0: none */
    int missing_features_zero; /* a key missing from a join table: zeros (counted), not error */
    size_t mem_bytes;          /* memory for sorting before spilling runs to disk */
    const char *tmp_dir;       /* where sort runs go; NULL: beside the output */
    int force;                 /* replace an existing output folder */
    /* A final fit with settings chosen earlier: warm tasks' validation rows join their train
     * part (re-split into support and query); the test parts are the same as without it. */
    int refit;
} lm_prepare_opts;

void lm_prepare_opts_default(lm_prepare_opts *o);

#define LM_BAD_ROWS_KEPT 20 /* bad-row messages kept in a summary */

typedef struct lm_prepare_summary {
    uint64_t rows_read;    /* data rows in the inputs (not counting headers) */
    uint64_t rows_bad;     /* rows skipped as bad (with skip_bad_rows) */
    uint64_t rows_dropped; /* dropped by max_per_task or the window */
    uint64_t rows_kept;    /* examples in the dataset */
    uint64_t tasks;        /* tasks in the dataset */
    uint64_t tasks_new;    /* of which new (never in training) */
    uint64_t split_rows[LM_SPLIT_COUNT];
    uint64_t missing_keys; /* join lookups that found no row and were zero-filled */
    uint64_t runs;         /* sort runs spilled to disk */
    double seconds;
    size_t peak_buffer_bytes;             /* the sort buffer's high-water mark */
    char bad_rows[LM_BAD_ROWS_KEPT][256]; /* the first bad-row messages */
} lm_prepare_summary;

/* Stream `inputs` (CSV/TSV logs described by `schema`), group them by task, sort each task by
 * time, assign splits and write a dataset folder `out_dir` (built under a temporary name and
 * renamed into place: on failure nothing is left at `out_dir`). Memory stays within about
 * o->mem_bytes plus the join tables, whatever the input size. */
int lm_prepare(const lm_schema *schema, const char *const *inputs, size_t ninputs, const char *out_dir,
               const lm_prepare_opts *o, lm_prepare_summary *sum, lm_err *err);

/* A task: its examples are rows [first, first + n) of the dataset, sorted by time. Because
 * splits follow time, its support, query, validation and test rows are consecutive runs of
 * that range in this order, of lengths nsplit[LM_SPLIT_...] (a split column in the input may
 * interleave them; then `contiguous` is 0 and each row's split must be read). */
typedef struct lm_task {
    uint64_t key_off; /* offset of the key in the string pool */
    uint32_t key_len;
    uint32_t is_new; /* 1: a new task, held out of training */
    uint64_t first;
    uint32_t n;
    uint32_t contiguous;
    uint32_t nsplit[LM_SPLIT_COUNT];
} lm_task;

/* One example as stored. Floats are the meta features then the dense features. */
typedef struct lm_row_view {
    double time;
    float label;
    int split;
    const float *meta;   /* nmeta floats */
    const float *dense;  /* ndense floats */
    const uint32_t *cat; /* ncat ids, each < its buckets */
} lm_row_view;

typedef struct lm_dataset lm_dataset;

enum { LM_DATASET_VERIFY = 1 }; /* check the body checksum on open (one pass over the file) */

/* Memory-map a dataset folder written by lm_prepare. The handle may be shared by threads. */
int lm_dataset_open(lm_dataset **out, const char *dir, int flags, lm_err *err);
void lm_dataset_close(lm_dataset *ds);

uint64_t lm_dataset_ntasks(const lm_dataset *ds);
uint64_t lm_dataset_nrows(const lm_dataset *ds);
uint32_t lm_dataset_nmeta(const lm_dataset *ds);
uint32_t lm_dataset_ndense(const lm_dataset *ds);
uint32_t lm_dataset_ncat(const lm_dataset *ds);
/* The schema the dataset was made with (owned by the dataset). */
const lm_schema *lm_dataset_schema(const lm_dataset *ds);
/* Task `t` < ntasks; valid while the dataset is open. */
const lm_task *lm_dataset_task(const lm_dataset *ds, uint64_t t);
/* The task's key: its key columns' values joined by LM_KEY_SEP, not NUL-terminated. */
const char *lm_dataset_task_key(const lm_dataset *ds, const lm_task *task, size_t *len);
/* Row `i` < nrows; the pointers stay valid while the dataset is open. */
lm_row_view lm_dataset_row(const lm_dataset *ds, uint64_t i);
/* Bytes between consecutive rows: row i's floats start lm_dataset_row_stride(ds) * i bytes
 * after row 0's. */
size_t lm_dataset_row_stride(const lm_dataset *ds);
/* JSON with the options and summary of the prepare run that made the dataset. */
const char *lm_dataset_info_json(const lm_dataset *ds, size_t *len);

#define LM_KEY_SEP '\x1f' /* separates the columns of a composite task key */

/* ============================================================================================
 * data: public datasets and the synthetic generator
 * ========================================================================================== */

/* Task definitions for MovieLens: per user, or per (user, the item's first genre). */
enum { LM_ML_TASK_USER = 0, LM_ML_TASK_USER_GENRE = 1 };
/* Or'ed into lm_prepare_movielens's task_def: the item's history rate and log count as two
 * more dense features ("rates" in the schema: out-of-fold on training rows), the history
 * features a practitioner's tree model would get; not part of PROTOCOL.md's features. */
#define LM_ML_ITEM_RATES 0x100

/* Build the dataset of PROTOCOL.md from the MovieLens-100K folder `ml_dir` (u.data, u.user,
 * u.item, u.occupation) into `out_dir`, through lm_prepare and its join machinery. The
 * normalized feature tables and the schema are written into out_dir too. `o` may be NULL
 * for the protocol's defaults (new users: user_id % 5 == 0). */
int lm_prepare_movielens(const char *ml_dir, const char *out_dir, int task_def, const lm_prepare_opts *o,
                         lm_prepare_summary *sum, lm_err *err);

typedef struct lm_synth_opts {
    uint64_t tasks; /* task population */
    uint64_t seed;
    double mean_examples;  /* mean examples per task (heavy-tailed) */
    uint32_t max_examples; /* cap per task */
    uint32_t items;        /* item vocabulary */
    double days;           /* time horizon */
    double new_frac;       /* tasks born in the last 10% of the horizon */
} lm_synth_opts;

void lm_synth_opts_default(lm_synth_opts *o);

typedef struct lm_synth_summary {
    uint64_t rows;
    uint64_t tasks; /* tasks with at least one example */
    uint64_t positives;
} lm_synth_summary;

/* Write a synthetic interaction log to `path` (CSV) and its schema to `path`.schema.json,
 * both atomically. Memory does not grow with the number of tasks. */
int lm_synth(const char *path, const lm_synth_opts *o, lm_synth_summary *sum, lm_err *err);

/* ============================================================================================
 * model: the trained network and its file
 * ========================================================================================== */

/* How a model was trained (`limaml train --algo`). */
enum {
    LM_TRAIN_PLAIN = 0,    /* Adam on mini-batches of whole tasks: the vanilla baseline */
    LM_TRAIN_WIDEDEEP = 1, /* plain training with a learned task-id embedding (Table 4) */
    LM_TRAIN_MAML = 2,     /* entire-network MAML (Algorithm 1) */
    LM_TRAIN_LIMAML = 3,   /* LiMAML (Algorithm 2a): the inner loop adapts the meta block */
};
const char *lm_train_algo_name(int algo);

typedef struct lm_model lm_model;

/* Save as safetensors (weights named meta.*, global.*; architecture, schema, hyperparameters
 * and training summary as JSON metadata; a version and a checksum), atomically. */
int lm_model_save(const lm_model *m, const char *path, lm_err *err);
/* Load and check a model file: a truncated, corrupt, wrong-version or inconsistent file is
 * refused with a message. @note free with lm_model_free. */
int lm_model_load(lm_model **out, const char *path, lm_err *err);
void lm_model_free(lm_model *m);
/* The schema the model was trained on (owned by the model). */
const lm_schema *lm_model_schema(const lm_model *m);
int lm_model_algo(const lm_model *m);
/* The meta embedding width E (an ensemble: its members' widths summed, their embeddings being
 * stored end to end). */
size_t lm_model_emb_dim(const lm_model *m);
/* An ensemble of `n` >= 2 models (docs/META.md "Ensembles"): the same algorithm, network
 * architecture, options and schema, each trained on its own (e.g. another seed). It scores a
 * row with the mean of the members' logits, each member adapted and embedded on its own, and
 * saves and loads as one file. On success it owns the members (lm_model_free frees them); on
 * failure the caller keeps them. A member may not itself be an ensemble, nor be given twice. */
int lm_model_ensemble(lm_model **out, lm_model **members, size_t n, lm_err *err);
/* 1 for a single network, else the ensemble's member count. */
size_t lm_model_nmembers(const lm_model *m);
/* Member i (< lm_model_nmembers): the model itself for a single network. */
const lm_model *lm_model_member(const lm_model *m, size_t i);
/* The model's JSON metadata (architecture, hyperparameters, training summary); owned. */
const char *lm_model_info_json(const lm_model *m);
/* LM_EMISMATCH with a message naming the first difference when `ds` was not prepared with
 * the model's schema (feature names, order, categorical buckets). */
int lm_model_check_dataset(const lm_model *m, const lm_dataset *ds, lm_err *err);

/* ============================================================================================
 * meta: training
 * ========================================================================================== */

/* Which meta-gradient engine trains: the fast batched one where it applies (LiMAML with an
 * MLP meta block, plain; no dropout), else the per-task reference; or one of them by force. */
enum { LM_ENGINE_AUTO = 0, LM_ENGINE_FAST = 1, LM_ENGINE_REFERENCE = 2 };

/* Learning-rate decay after the warm-up. */
enum { LM_DECAY_NONE = 0, LM_DECAY_LINEAR = 1, LM_DECAY_COSINE = 2 };

typedef struct lm_train_progress {
    uint32_t epoch, epochs;
    uint64_t batch, batches; /* within the epoch */
    uint64_t tasks_done;     /* this run */
    double loss;             /* running mean outer loss of the epoch */
    double tasks_per_s;
    double seconds;
    double eta_seconds;
    int epoch_end; /* 1 at the end of an epoch: val_* are set */
    double val_auc, val_loss;
    int improved; /* the epoch's val AUC is the best so far */
} lm_train_progress;

#define LM_SUPPORT_WEIGHT_AUTO (-1.0)
typedef struct lm_train_opts {
    int algo;                 /* LM_TRAIN_... */
    const char *meta_block;   /* "mlp:32,16" (hidden sizes, the last is E) or "id:16" */
    const char *global_block; /* "mlp:64,32" */
    uint32_t inner_steps;     /* n */
    double task_lr;           /* alpha, inner (and adaptation) learning rate */
    int first_order;
    double support_weight; /* w: outer objective L_q + w L_s (0: the paper's); LM_SUPPORT_WEIGHT_AUTO
                            * (the default): 3 for LiMAML, the best servable configuration on
                            * validation (docs/EXPERIMENTS.md), 0 for MAML */
    uint32_t tasks_per_batch;
    uint32_t epochs;
    double lr;               /* outer Adam rate */
    int lr_scale_with_batch; /* lr *= tasks_per_batch / 32 (linear scaling rule) */
    double clip;             /* global gradient-norm clipping; 0: off */
    uint64_t warmup;         /* warm-up steps (outer updates) */
    int decay;               /* LM_DECAY_NONE, _LINEAR, _COSINE (see the CLI) */
    double dropout;
    uint64_t seed;
    int threads;                /* 0: all cores */
    uint32_t patience;          /* early stopping: epochs without a better val AUC; 0: off */
    uint32_t val_adapt_steps;   /* adaptation steps before scoring validation (default: n) */
    double id_default_frac;     /* id meta block: fraction of tasks trained through the
                                * shared default row (what unseen tasks get) */
    const char *log_path;       /* per-epoch JSON lines, or NULL */
    uint32_t log_member;        /* > 0: an ensemble member's number: the log is appended to and
                                 * each line starts with "member": N (limaml train --members) */
    const char *checkpoint;     /* checkpoint file, written at each epoch end, or NULL */
    int resume;                 /* continue from `checkpoint` */
    uint32_t stop_after_epochs; /* end this run after so many epochs (the schedule still spans
                                * `epochs`); resume later. 0: run to the end */
    int engine;                 /* LM_ENGINE_AUTO, _FAST or _REFERENCE */
    int emb_logit;              /* 1: the logit is also shifted by E[0], the meta embedding's
                                * first coordinate (docs/META.md); 0: the paper's network */
    void (*progress)(void *ctx, const lm_train_progress *p);
    void *progress_ctx;
} lm_train_opts;

void lm_train_opts_default(lm_train_opts *o);

typedef struct lm_train_report {
    uint32_t epochs_run, best_epoch;
    double best_val_auc, best_val_loss;
    double seconds, tasks_per_s;
    uint64_t train_tasks, updates;
} lm_train_report;

/* Train on the warm tasks of `ds`; the model kept is the one of the best validation AUC.
 * Same options, seed and thread count: the same model, bit for bit (also across --resume). */
int lm_train(const lm_dataset *ds, const lm_train_opts *o, lm_model **out, lm_train_report *rep, lm_err *err);

/* ============================================================================================
 * eval: scoring and task adaptation
 * ========================================================================================== */

/* Where adaptation data comes from. */
enum {
    LM_ADAPT_VAL = 0,       /* the task's validation part (the protocol's fine-tuning) */
    LM_ADAPT_TRAIN_VAL = 1, /* train and validation parts: the recent-window variant */
    LM_ADAPT_TRAIN = 2,     /* the train part */
    LM_ADAPT_ALL = 3,       /* every row of the task (embedding generation on recent logs) */
};

/* How a task's adapted meta block outputs become its one stored embedding (appendix A.4). */
enum { LM_POOL_LATEST = 0, LM_POOL_MEAN = 1, LM_POOL_MAX = 2, LM_POOL_COS = 3 };

typedef struct lm_eval_opts {
    uint32_t adapt_steps; /* k; 0: score the trained model as is */
    double task_lr;       /* alpha; <= 0: the model's own */
    int adapt_from;       /* LM_ADAPT_... */
    uint32_t adapt_cap;   /* at most this many most recent adaptation rows; 0: all */
    int score_split;      /* LM_SPLIT_TEST (default) or LM_SPLIT_VAL */
    int warm_only;        /* score warm tasks only */
    int threads;
    int pool;             /* LiMAML: how the adapted meta block's outputs on the adaptation
                             * rows become the task's embedding, LM_POOL_... (default LATEST,
                             * as served; appendix A.4); other models: LATEST only */
    double stale_seconds; /* > 0: a stale embedding (paper section 5): adapt only on the
                             * adaptation rows with time <= latest - stale_seconds, latest being
                             * the time of the task's latest adaptation row (before adapt_cap,
                             * which then takes the most recent of those kept). A task left
                             * with none is scored unadapted. In the dataset's time unit
                             * (seconds); 0: off (fresh) */
} lm_eval_opts;

void lm_eval_opts_default(lm_eval_opts *o);

typedef struct lm_eval_result {
    double auc, logloss;
    double auc_lt25, auc_ge25, auc_warm, auc_new; /* slices by the task's scored examples */
    uint64_t examples, tasks;
    uint64_t examples_lt25, examples_ge25, examples_warm, examples_new;
    double seconds;
    /* adaptation actually done (adapt_steps > 0), over the scored tasks: */
    uint64_t tasks_adapted; /* tasks with at least one adaptation row (the others: unadapted) */
    uint64_t rows_adapted;  /* adaptation rows used, all tasks */
    double adapt_lag_mean;  /* mean over adapted tasks of (time of the latest adaptation row
                              * available - time of the latest one used): the staleness
                              * realised, 0 when fresh */
    double adapt_age_mean;  /* mean over adapted tasks of (time of the first scored row - time
                              * of the latest adaptation row used): the embedding's age when
                              * it starts being used */
} lm_eval_result;

/* Score the model on every task's score split, after adapting it per task as asked. */
int lm_evaluate(const lm_model *m, const lm_dataset *ds, const lm_eval_opts *o, lm_eval_result *res,
                lm_err *err);

/* Adapt the model's meta block to one task (k steps at alpha on its rows of `adapt_from`;
 * UINT32_MAX steps and task_lr <= 0: the model's own) and write its meta embedding, pooled as
 * `pool` says (LM_POOL_LATEST: the output on the latest adaptation example), into emb:
 * (lm_model_emb_dim). An ensemble writes each member's embedding, computed as for that member
 * alone (its own steps and rate unless given), at emb + i E. The same computation as
 * lm_embed's, bit for bit. */
int lm_adapt_task(const lm_model *m, const lm_dataset *ds, uint64_t task, uint32_t steps, double task_lr,
                  int adapt_from, int pool, float *emb, lm_err *err);
/* The task's index in the dataset, or LM_ENOTFOUND. */
int lm_dataset_find_task(const lm_dataset *ds, const char *key, size_t len, uint64_t *task);

/* ============================================================================================
 * store: versioned task embeddings (lmdb://PATH, redis://HOST:PORT/DB)
 * ========================================================================================== */

/* How vectors are stored. */
enum {
    LM_STORE_ENC_F32 = 0, /* 4 E bytes, exact */
    LM_STORE_ENC_F16 = 1, /* 2 E bytes, IEEE half, round to nearest even; |x| < 65520 */
    LM_STORE_ENC_I8 = 2,  /* 4 + E bytes: a float scale (max |x| / 127), then E int8 */
};
/* "f32", "f16", "int8"; NULL for an unknown code. */
const char *lm_store_enc_name(int enc);
/* Parse "f32", "f16" or "int8" (also "float32", "float16", "i8"). */
int lm_store_enc_parse(const char *name, int *enc, lm_err *err);

/* lm_store_open flags. */
enum {
    LM_STORE_CREATE = 1,        /* create the store when missing (a writer's open) */
    LM_STORE_READONLY = 2,      /* never write (a server's open; LMDB opens MDB_RDONLY) */
    LM_STORE_ALLOW_NEW_DIM = 4, /* let a new version have another E than the current one */
};

#define LM_STORE_VERSION_MAX 64 /* version names: [A-Za-z0-9._-]{1,64} */
#define LM_STORE_MODEL_ID_MAX 128
#define LM_STORE_KEY_MAX 511 /* task keys: 1..511 bytes (LMDB's key limit, for both) */

/* A version's record. */
typedef struct lm_store_version {
    char name[LM_STORE_VERSION_MAX + 1];
    char model_id[LM_STORE_MODEL_ID_MAX + 1]; /* the model's identity, e.g. its checksum */
    uint32_t dim;                             /* E */
    int encoding;                             /* LM_STORE_ENC_... */
    uint64_t count;                           /* keys written (all of them once complete) */
    uint64_t seq;                             /* creation order in this store, from 1 */
    int64_t created;                          /* Unix seconds */
    int64_t published;                        /* Unix seconds; 0 until published */
    int complete;                             /* 1 once published */
    int current;                              /* 1 for the version readers see */
} lm_store_version;

typedef struct lm_store lm_store;
typedef struct lm_store_writer lm_store_writer;

/* Open the store at `url`:
 *   lmdb://PATH[?mapsize=SIZE]   a folder holding an LMDB environment (PATH relative or
 *                                absolute, lmdb:///abs/path); mapsize caps the file (K, M, G,
 *                                T suffixes; default 1T, sparse): past it writes fail "full"
 *   redis://[[USER]:PASS@]HOST[:PORT][/DB][?prefix=P&timeout_ms=N&lease_ms=N]
 *                                port 6379, DB 0 and prefix "lm" by default
 * A malformed URL is LM_EINVAL with a message naming the part that is wrong; a store that is
 * not there is LM_ENOTFOUND unless LM_STORE_CREATE; an unreachable server is LM_EIO.
 * @note One handle per store per process (LMDB forbids opening an environment twice in a
 * process; a second open is refused). A handle is used by one thread at a time; it may move
 * between threads. Close with lm_store_close. */
int lm_store_open(lm_store **out, const char *url, int flags, lm_err *err);
/* Close the store; a writer still open is aborted (its version dropped). NULL does nothing. */
void lm_store_close(lm_store *s);
/* The URL the store was opened with, a password masked; valid while the store is open. */
const char *lm_store_url(const lm_store *s);

/* ---- writing a version ------------------------------------------------------------------- */

/* Start writing version `version` of E-float vectors stored as `encoding`, made by the model
 * `model_id` (any text up to LM_STORE_MODEL_ID_MAX bytes; "" when unknown). The version is
 * written beside the current one, which readers keep seeing until lm_store_publish.
 * A complete version of that name, or one another live writer holds, is LM_EEXIST; a
 * half-written version left by a dead writer is removed first (so are any others).
 * E unlike the current version's is LM_EMISMATCH unless the store was opened with
 * LM_STORE_ALLOW_NEW_DIM.
 * @note One writer per store handle at a time; it must end with lm_store_publish or
 * lm_store_abort, which free it. */
int lm_store_begin_version(lm_store *s, const char *version, uint32_t dim, int encoding, const char *model_id,
                           lm_store_writer **out, lm_err *err);

/* Add `n` vectors in one transaction: keys[i] (key_lens[i] bytes, 1..LM_STORE_KEY_MAX) gets
 * vectors[i * E .. i * E + E); vectors: (n, E). Pass keys in ascending byte order (memcmp,
 * a prefix before its extensions), across batches too: they are then appended, which is
 * several times faster; keys out of order are accepted, slower. A key written twice in a
 * version, a NaN or infinite element, or (f16) |x| >= 65520 is LM_EINVAL. The batch is not
 * yet durable; lm_store_publish is.
 * @note The writer keeps a sticky error: after any failure only lm_store_abort is left. */
int lm_store_put_batch(lm_store_writer *w, const char *const *keys, const size_t *key_lens,
                       const float *vectors, size_t n, lm_err *err);

/* Make the version durable (LMDB: one fsync), then atomically make it current, then remove
 * old versions beyond the `keep` most recent besides the new current one. Readers see the old
 * version or the new one, whole. If publishing fails, the current version is untouched and the
 * half-written one is removed (or left for lm_store_gc). A failing clean-up of old versions
 * does not fail the publish.
 * @note Frees `w` whatever the result. */
int lm_store_publish(lm_store_writer *w, uint32_t keep, lm_err *err);

/* Drop the half-written version (best effort: lm_store_gc removes what is left) and free `w`.
 * NULL does nothing. */
void lm_store_abort(lm_store_writer *w);

/* ---- reading ----------------------------------------------------------------------------- */

/* The current version's record; LM_ENOTFOUND when nothing was published yet. */
int lm_store_current(lm_store *s, lm_store_version *info, lm_err *err);

/* Read task `key` from the current version into out: (dim) floats; *found is 0 (out zeroed)
 * when the task has no vector. `dim` is the model's E: a version of another E is LM_EMISMATCH.
 * LM_ENOTFOUND when nothing was published. */
int lm_store_get(lm_store *s, const char *key, size_t len, float *out, size_t dim, int *found, lm_err *err);
/* The same from the complete version `version` (an incomplete one is LM_ENOTFOUND). */
int lm_store_get_version(lm_store *s, const char *version, const char *key, size_t len, float *out,
                         size_t dim, int *found, lm_err *err);
/* Read n keys at once from one version, all of them from the same one even while another
 * process publishes: `version` or, when NULL, the current one. out: (n, dim); found: (n) 0/1.
 * `read` (may be NULL) gets the record of the version read. */
int lm_store_get_batch(lm_store *s, const char *version, const char *const *keys, const size_t *key_lens,
                       size_t n, float *out, size_t dim, uint8_t *found, lm_store_version *read, lm_err *err);

/* Walk every task of the complete version `version` (NULL: the current one) in the store's key
 * order, giving `fn` each key and its vector decoded to `dim` floats (valid during the call); a
 * non-zero return from fn stops the walk. LM_ENOTFOUND when there is no such version,
 * LM_EMISMATCH when its E is not `dim`, LM_EFORMAT for a value that does not decode. */
typedef int (*lm_store_walk_fn)(void *ctx, const char *key, size_t klen, const float *vec);
int lm_store_walk(lm_store *s, const char *version, uint32_t dim, lm_store_walk_fn fn, void *ctx,
                  lm_err *err);

/* ---- inspecting and cleaning --------------------------------------------------------------- */

/* Every version, complete or not, oldest first. @note *out is one malloc'd array: free(). */
int lm_store_list(lm_store *s, lm_store_version **out, size_t *n, lm_err *err);

/* Remove complete versions older than the current one beyond the `keep` most recent, and
 * half-written versions whose writer is gone (LMDB: its process ended; Redis: its lease
 * expired). *removed (may be NULL) gets the number removed. */
int lm_store_gc(lm_store *s, uint32_t keep, size_t *removed, lm_err *err);

typedef struct lm_store_verify_report {
    lm_store_version version;
    uint64_t keys;      /* keys found */
    uint64_t bad_size;  /* values of the wrong length */
    uint64_t bad_value; /* values that decode to NaN or infinity, or a bad int8 scale */
    uint64_t bad_key;   /* keys empty or longer than LM_STORE_KEY_MAX */
    int meta_ok;        /* record valid, count matches, current points to a complete one */
    char first_problem[512];
} lm_store_verify_report;

/* Check version `version` (NULL: the current one): every value decodes to E finite floats,
 * the key count matches the record, the record is valid. LM_EFORMAT (message: the first
 * problem) when anything is wrong; the report is filled either way. */
int lm_store_verify(lm_store *s, const char *version, lm_store_verify_report *rep, lm_err *err);

/* ============================================================================================
 * embed: daily meta-embedding generation (Algorithm 2b) into a feature store
 * ========================================================================================== */

typedef struct lm_embed_progress {
    uint64_t tasks_done, tasks;
    double seconds, tasks_per_s;
} lm_embed_progress;

typedef struct lm_embed_opts {
    const char *version;  /* the version written and published */
    uint32_t steps;       /* k; UINT32_MAX: the model's inner steps */
    double task_lr;       /* alpha; <= 0: the model's */
    int adapt_from;       /* LM_ADAPT_ALL (default): every row; or a part */
    double window_days;   /* only rows within X days of the dataset's newest; 0: all */
    int pool;             /* LM_POOL_... */
    int encoding;         /* LM_STORE_ENC_... */
    uint32_t keep;        /* old versions kept after publishing */
    int threads;          /* 0: all cores */
    int only_changed;     /* recompute only tasks with a row after changed_since; carry
                                * the others over from the current version, also the tasks it
                                * holds that the dataset lacks */
    double changed_since; /* Unix seconds (the dataset's time unit) */
    size_t chunk;         /* tasks per store batch (default 16384); tasks are taken in
                                * key order, 64 chunks at a time (16 bytes per task of such a
                                * partition), so the store appends */
    void (*progress)(void *ctx, const lm_embed_progress *p);
    void *progress_ctx;
} lm_embed_opts;

void lm_embed_opts_default(lm_embed_opts *o);

typedef struct lm_embed_report {
    uint64_t tasks;          /* tasks of the dataset */
    uint64_t written;        /* embeddings written */
    uint64_t computed;       /* of which computed now */
    uint64_t carried;        /* of which carried over from the previous version */
    uint64_t carried_absent; /* of those, tasks absent from the dataset (only_changed runs) */
    uint64_t empty;          /* tasks with no rows in the window (left out) */
    double seconds, tasks_per_s;
} lm_embed_report;

/* Compute every task's meta embedding and publish them as one new version of the store; on
 * any error the version is dropped and the current one keeps serving. Memory: one chunk of
 * tasks at a time, whatever the number of tasks. An ensemble stores per task its members'
 * embeddings end to end (lm_model_emb_dim floats; lm_adapt_task's vector). */
int lm_embed(const lm_model *m, const lm_dataset *ds, lm_store *store, const lm_embed_opts *o,
             lm_embed_report *rep, lm_err *err);

#ifdef __cplusplus
}
#endif
#endif /* LIMAML_H */
