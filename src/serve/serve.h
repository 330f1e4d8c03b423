/* serve.h: the online half of LiMAML (paper section 4.3.3): the global block scores a request's
 * candidates with the task's meta embedding read from the feature store, and no fine-tuning
 * happens on the request path. A task without a stored embedding (or any task while the store
 * is down) gets the cold-start embedding: the unadapted meta block's output on the request's
 * meta features (the paper's cohort 3). Private to the library and the CLI; docs/SERVE.md has
 * the design, docs/openapi.yaml the HTTP interface.
 *
 * The pieces, from the bottom up:
 *   lm_srv_buf      a growable text buffer (replies, /metrics)
 *   lm_srv_model    one loaded model with its weights packed for the scoring kernel (an
 *                   ensemble: one packed global block per member); shared by
 *                   reference count, so a reload swaps models without stopping requests
 *   lm_srv_ws       one thread's scratch: parsed request, rows, kernel buffers, the reply
 *   lm_srv_store    the store behind a reconnecting, backing-off pool of handles
 *   lm_srv          the whole scorer: the current model, the store, the metrics, the request
 *                   handlers shared by `limaml serve` (over HTTP) and `limaml score` (a file)
 *   lm_http         the HTTP/1.1 front end (libmicrohttpd), in http.c
 *
 * Threads: lm_srv and lm_srv_store may be used by any number of threads at once; an lm_srv_ws
 * by one thread at a time. Library code never prints: messages go to opts.log. */
#ifndef LM_SERVE_H
#define LM_SERVE_H

#include "core/core.h"
#include "meta/model.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* ============================================================================================
 * text buffers
 * ========================================================================================== */

typedef struct lm_srv_buf {
    char *p;
    size_t len, cap;
    int oom; /* sticky: an allocation failed, the text is cut */
} lm_srv_buf;

void lm_srv_buf_reset(lm_srv_buf *b);
void lm_srv_buf_free(lm_srv_buf *b);
int lm_srv_buf_reserve(lm_srv_buf *b, size_t extra);
void lm_srv_buf_put(lm_srv_buf *b, const char *s, size_t n);
void lm_srv_buf_puts(lm_srv_buf *b, const char *s);
void lm_srv_buf_printf(lm_srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal with its quotes; control characters, quotes and backslashes escaped,
 * bytes that are not UTF-8 written as \u00XX. */
void lm_srv_buf_json_str(lm_srv_buf *b, const char *s, size_t n);
/* A float as the shortest of %.9g (enough to read back the same float). */
void lm_srv_buf_f32(lm_srv_buf *b, float x);

/* ============================================================================================
 * request errors
 * ========================================================================================== */

#define LM_SRV_FIELD_MAX 160

/* Why a request was refused: the HTTP status, the field ("candidates[3].dense[2]", "" for the
 * body as a whole) and a message that starts with the field. */
typedef struct lm_srv_err {
    int status;
    char field[LM_SRV_FIELD_MAX];
    char msg[512];
} lm_srv_err;

int lm_srv_fail(lm_srv_err *e, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ============================================================================================
 * the served model (engine.c)
 * ========================================================================================== */

enum { LM_SRV_ENGINE_FAST = 0, LM_SRV_ENGINE_REFERENCE = 1 };
enum { LM_SRV_KERNEL_PLAIN = 0, LM_SRV_KERNEL_AVX2 = 1 };

#define LM_SRV_VW 8 /* kernel widths are padded to this many floats */

/* The global block repacked for the row kernel. Layer 0 is split by columns: the meta and E
 * columns are the same on every candidate of a request, so b0 + W0[:, meta] m + W0[:, E] e is
 * formed once per request ("base"); each candidate adds its dense and embedded categorical
 * columns. With emb_logit, E[0] is likewise one constant per request added to every logit. Layers are stored transposed (in, HP) with widths padded with zeros to a multiple of
 * LM_SRV_VW, so a row is computed as a sum of broadcast-times-row products in input order
 * (mul then add, never fused: the plain and the AVX2 kernels give the same bits). */
typedef struct lm_srv_pack {
    size_t L;                     /* linear layers; the last has one output */
    size_t H[LM_MLP_MAX_LAYERS];  /* output widths */
    size_t HP[LM_MLP_MAX_LAYERS]; /* padded */
    size_t K0;                    /* per-candidate columns of layer 0: dense, then tables */
    size_t ndense, ncat;
    const float *tab[LM_NET_MAX_CAT]; /* table c in theta_g: (rows_c, dim_c) */
    size_t tab_dim[LM_NET_MAX_CAT];
    float *wt[LM_MLP_MAX_LAYERS]; /* layer 0: (K0, HP[0]); layer l > 0: (HP[l-1], HP[l]) */
    float *b[LM_MLP_MAX_LAYERS];  /* layer l > 0: (HP[l]); layer 0's bias is in the base */
    float *mem;                   /* the one allocation behind wt and b */
    size_t maxHP;
} lm_srv_pack;

/* One network of a served model: a single model is its own one member; an ensemble's member i
 * reads floats [i E, (i + 1) E) of the stored vector. */
typedef struct lm_srv_member {
    const lm_model *m; /* the member (owned by lm_srv_model.m) */
    lm_srv_pack pack;  /* its global block */
} lm_srv_member;

typedef struct lm_srv_model {
    lm_model *m;       /* owned */
    const lm_net *net; /* member 0's (the members share the architecture) */
    const lm_schema *schema;
    size_t nm;                          /* members: 1 for a single network */
    size_t E;                           /* the stored vector's width: nm * net->E (lm_model_emb_dim) */
    lm_srv_member *mem;                 /* (nm) */
    char id[LM_STORE_MODEL_ID_MAX + 1]; /* "limaml:<hash>", as `limaml embed` records it (lm_model_id) */
    char *path;
    uint64_t gen; /* 1, 2, ...: one per load */
    atomic_long refs;
    int engine; /* LM_SRV_ENGINE_... */
    int kernel; /* LM_SRV_KERNEL_... */
    int binary; /* BCE: scores are sigmoid(logit) */
} lm_srv_model;

/* Load `path` and pack it for `engine`. @note free with lm_srv_model_free (or by references). */
int lm_srv_model_load(lm_srv_model **out, const char *path, int engine, lm_err *err);
/* The same for a model in memory, which `*out` then owns (freed on failure too); `path` is
 * only shown. */
int lm_srv_model_wrap(lm_srv_model **out, lm_model *m, const char *path, int engine, lm_err *err);
void lm_srv_model_free(lm_srv_model *sm);
/* LM_EMISMATCH with a message naming the first difference when `next` cannot replace `cur`
 * under the same clients: task columns, meta, dense and categorical features (names, order,
 * buckets) and the label kind must be the same. */
int lm_srv_model_check_fit(const lm_srv_model *cur, const lm_srv_model *next, lm_err *err);
/* Which kernel this processor runs (LM_SERVE_KERNEL=plain in the environment forces plain). */
int lm_srv_kernel_pick(void);

/* The kernels: logits z: (B) of B candidates whose dense: (B, ndense) and cat: (B, ncat) are
 * given, over base: (HP[0]); zoff is added to every logit (the request's E[0] for a model with
 * emb_logit, else 0); h: scratch (2 maxHP). */
void lm_srv_rows_plain(const lm_srv_pack *p, const float *base, const float *dense, const uint32_t *cat,
                       size_t B, float zoff, float *z, float *h);
void lm_srv_rows_avx2(const lm_srv_pack *p, const float *base, const float *dense, const uint32_t *cat,
                      size_t B, float zoff, float *z, float *h);

/* ============================================================================================
 * a thread's scratch (engine.c)
 * ========================================================================================== */

typedef struct lm_srv_ws {
    uint64_t gen;       /* the model generation the buffers are sized for; 0: none */
    size_t cap;         /* candidates per request */
    lm_rows_f32 rows;   /* the candidates: dense, cat (and meta, label for the reference) */
    lm_meta_ws_f32 mws; /* the reference engine (cap rows) or the cold start (1 row) */
    float *meta;        /* (nmeta) the request's meta features */
    float *emb;         /* (nm E) the embedding used: each member's end to end */
    float *z;           /* (cap) logits (an ensemble: summed, then their mean), then scores */
    float *zm;          /* (cap) a member's logits (ensembles only; else NULL) */
    float *base, *h;    /* kernel: (HP[0]), (2 maxHP) */
    uint8_t *seen;      /* by-name objects: one flag per name */
    size_t nseen;
    char *str; /* decoded JSON strings */
    size_t str_cap;
    char key[LM_STORE_KEY_MAX + 1];
    size_t key_len;
    int have_meta;
    char ver_seen[LM_STORE_VERSION_MAX + 1]; /* the embedding version this thread read last */
    lm_srv_buf out;                          /* the reply */
} lm_srv_ws;

/* Size `w` for model `sm` and `cap` candidates (nothing to do when already sized). */
int lm_srv_ws_prepare(lm_srv_ws *w, const lm_srv_model *sm, size_t cap, lm_err *err);
void lm_srv_ws_free(lm_srv_ws *w);

/* The cold-start embedding of the parsed request into w->emb: the unadapted meta block on
 * w->meta (MLP meta block), or the task's own row of the id table (its default row when the
 * task was not trained on); an ensemble's members' end to end. */
void lm_srv_cold_embedding(const lm_srv_model *sm, lm_srv_ws *w);
/* Score w->rows (n candidates) with embedding w->emb into w->z: probabilities for BCE models,
 * raw predictions for MSE. An ensemble scores sigmoid(mean of its members' logits), each member
 * with its slice of w->emb, as lm_evaluate does (logits summed in member order, then divided by
 * the member count). */
void lm_srv_score_rows(const lm_srv_model *sm, lm_srv_ws *w);

/* ============================================================================================
 * request parsing (request.c)
 * ========================================================================================== */

/* Parse a /v1/score body into w (key, meta, rows) for model sm: strict JSON, every field
 * checked against the schema. 0, or the HTTP status (400, 413) with e filled. */
int lm_srv_parse_score(const lm_srv_model *sm, lm_srv_ws *w, const char *body, size_t len, lm_srv_err *e);
/* Parse a /v1/embedding body ({"task": {...}}) into w->key. */
int lm_srv_parse_task_only(const lm_srv_model *sm, lm_srv_ws *w, const char *body, size_t len, lm_srv_err *e);

/* ============================================================================================
 * the store, reconnecting (sstore.c)
 * ========================================================================================== */

typedef struct lm_srv_store lm_srv_store;

enum {
    LM_SRV_GET_OK = 0,        /* read: found or not (then *found = 0) */
    LM_SRV_GET_NOVERSION = 1, /* the store has no published version */
    LM_SRV_GET_DOWN = 2,      /* the store failed now (counted, backing off) */
    LM_SRV_GET_SKIPPED = 3,   /* not tried: backing off after a recent failure */
};

/* Open a pool of `nslots` handles to `url` (LMDB: always one, shared under a lock). A store
 * that cannot be reached now is not an error: reads report LM_SRV_GET_DOWN and the pool
 * reconnects by itself; a malformed URL is LM_EINVAL. */
int lm_srv_store_open(lm_srv_store **out, const char *url, size_t nslots,
                      void (*log)(void *ctx, const char *msg), void *log_ctx, lm_err *err);
void lm_srv_store_close(lm_srv_store *st);
/* Read `key` from the current version: out: (dim); version gets the version's name. */
int lm_srv_store_get(lm_srv_store *st, const char *key, size_t len, float *out, size_t dim, int *found,
                     char *version, lm_err *err);
/* The current version's record (LM_OK), or an error (also when backing off). */
int lm_srv_store_current(lm_srv_store *st, lm_store_version *v, lm_err *err);
/* Forget the back-off: the next read tries the store at once. */
void lm_srv_store_retry_now(lm_srv_store *st);
/* 1 while the last attempt failed. */
int lm_srv_store_down(const lm_srv_store *st);
/* The URL, a password masked. */
const char *lm_srv_store_url(const lm_srv_store *st);
uint64_t lm_srv_store_errors(const lm_srv_store *st);

/* ============================================================================================
 * metrics (metrics.c)
 * ========================================================================================== */

enum { LM_EP_SCORE, LM_EP_EMBEDDING, LM_EP_HEALTHZ, LM_EP_METRICS, LM_EP_RELOAD, LM_EP_OTHER, LM_EP_COUNT };
#define LM_SRV_NCODES 12
#define LM_SRV_NBUCKETS 16
enum {
    LM_COLD_NONE = 0,
    LM_COLD_NOT_FOUND = 1,
    LM_COLD_NO_VERSION = 2,
    LM_COLD_STORE_DOWN = 3,
    LM_COLD_COUNT = 4
};

typedef struct lm_srv_metrics {
    atomic_uint_fast64_t req[LM_EP_COUNT][LM_SRV_NCODES];
    atomic_uint_fast64_t lat[LM_SRV_NBUCKETS + 1]; /* score latency; the last is +Inf */
    atomic_uint_fast64_t lat_sum_ns, lat_count;
    atomic_uint_fast64_t scored, candidates, cold[LM_COLD_COUNT];
    atomic_uint_fast64_t reload_ok, reload_refused;
    double started; /* lm_now() at start */
} lm_srv_metrics;

void lm_srv_metrics_request(lm_srv_metrics *m, int endpoint, int status);
void lm_srv_metrics_latency(lm_srv_metrics *m, double seconds);

/* ============================================================================================
 * the scorer (scorer.c): model, store, metrics and the request handlers
 * ========================================================================================== */

typedef struct lm_srv_opts {
    const char *model_path;
    const char *store_url;
    size_t max_candidates; /* per request (default 1000) */
    int engine;            /* LM_SRV_ENGINE_... */
    size_t store_slots;    /* Redis connections (one per serving thread) */
    void (*log)(void *ctx, const char *msg);
    void *log_ctx;
} lm_srv_opts;

typedef struct lm_srv {
    lm_srv_opts o;
    char *model_path, *store_url;
    pthread_mutex_t mu; /* guards cur */
    lm_srv_model *cur;
    uint64_t next_gen;
    pthread_mutex_t reload_mu; /* one reload at a time */
    lm_srv_store *store;
    lm_srv_metrics metrics;
    char last_version[LM_STORE_VERSION_MAX + 1]; /* the embedding version read last */
    pthread_mutex_t version_mu;
} lm_srv;

/* Load the model and open the store. @note close with lm_srv_close. */
int lm_srv_open(lm_srv **out, const lm_srv_opts *o, lm_err *err);
void lm_srv_close(lm_srv *s);
/* Load the model file again and swap it in when it fits (LM_EMISMATCH otherwise: the current
 * model keeps serving). Requests in flight finish on the model they started with. */
int lm_srv_reload(lm_srv *s, lm_err *err);
/* The current model, referenced; give it back with lm_srv_release. */
lm_srv_model *lm_srv_acquire(lm_srv *s);
void lm_srv_release(lm_srv_model *sm);

/* The handlers write the reply into w->out (JSON, or Prometheus text for metrics) and return
 * the HTTP status. */
int lm_srv_handle_score(lm_srv *s, lm_srv_ws *w, const char *body, size_t len);
int lm_srv_handle_embedding(lm_srv *s, lm_srv_ws *w, const char *body, size_t len);
int lm_srv_handle_health(lm_srv *s, lm_srv_ws *w);
int lm_srv_handle_metrics(lm_srv *s, lm_srv_ws *w);
int lm_srv_handle_reload(lm_srv *s, lm_srv_ws *w);
/* An error reply {"error": ..., "field": ...} into w->out; returns e->status. */
int lm_srv_reply_error(lm_srv_ws *w, const lm_srv_err *e);
/* The same into any buffer (reset first). */
void lm_srv_buf_error(lm_srv_buf *b, const lm_srv_err *e);
void lm_srv_log(const lm_srv *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A POST /v1/score body for rows `rows[0..n)` of `task` (reqbuild.c): the task's key columns,
 * the first row's meta features and one candidate per row, written so that the server reads
 * back the dataset's values bit for bit. */
void lm_srv_request_build(const lm_dataset *ds, const lm_task *task, const uint64_t *rows, size_t n,
                          lm_srv_buf *b);

/* ============================================================================================
 * the HTTP front end (http.c; libmicrohttpd)
 * ========================================================================================== */

typedef struct lm_http_opts {
    const char *listen; /* "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8080"; port 0: any */
    unsigned threads;   /* the thread pool */
    size_t max_body;    /* bytes; larger bodies get 413 */
    unsigned timeout_s; /* an idle or slow connection is closed after this */
    unsigned max_connections;
    const char *token; /* NULL: none; else "Authorization: Bearer <token>" */
} lm_http_opts;

typedef struct lm_http lm_http;

/* Start serving `srv` (LM_EIO when the address cannot be bound; LM_EINVAL for a bad address;
 * LM_ENOTFOUND when the build has no libmicrohttpd). */
int lm_http_start(lm_http **out, lm_srv *srv, const lm_http_opts *o, lm_err *err);
/* The bound port (useful with port 0). */
int lm_http_port(const lm_http *h);
/* Stop accepting, let requests in flight finish for up to drain_s seconds, stop. */
void lm_http_stop(lm_http *h, double drain_s);

#endif
