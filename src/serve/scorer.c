/* scorer.c: the request path shared by `limaml serve` (HTTP) and `limaml score` (a file): the
 * current model behind a reference count (hot reload), the store, the metrics, and the
 * handlers that turn a request body into a reply body.
 *
 * A score request: parse (request.c) -> read the task's embedding from the current store
 * version -> on a miss, no version, or a store failure, the cold-start embedding -> the global
 * block over all candidates at once (engine.c) -> the reply
 *   {"scores": [...], "embedding_version": "V" | null, "cold_start": false}
 * with "cold_start_reason" added on the cold path ("no_embedding", "no_version",
 * "store_unavailable"). Nothing on this path trains or adapts (paper section 4.3.3). */
#include "serve/serve.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void lm_srv_log(const lm_srv *s, const char *fmt, ...)
{
    if (!s->o.log) return;
    char msg[LM_ERR_MSG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s->o.log(s->o.log_ctx, msg);
}

/* ============================================================================================
 * the model, by reference
 * ========================================================================================== */

lm_srv_model *lm_srv_acquire(lm_srv *s)
{
    pthread_mutex_lock(&s->mu);
    lm_srv_model *sm = s->cur;
    atomic_fetch_add_explicit(&sm->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
    return sm;
}

void lm_srv_release(lm_srv_model *sm)
{
    if (sm && atomic_fetch_sub_explicit(&sm->refs, 1, memory_order_acq_rel) == 1) lm_srv_model_free(sm);
}

/* LM_EMISMATCH when the store's current version holds vectors of another width than the
 * model's (lm_model_emb_dim: an ensemble's members' E summed; every read would fail); LM_OK
 * when it fits or cannot be checked now. */
static int check_store_dim(lm_srv *s, const lm_srv_model *sm, lm_err *err)
{
    lm_store_version v;
    lm_err e = {0};
    if (lm_srv_store_current(s->store, &v, &e) != LM_OK || v.dim == sm->E) return LM_OK;
    return lm_err_set(err, LM_EMISMATCH,
                      "%s: the model's meta embedding has E=%zu, the store's current version '%s' "
                      "has E=%u",
                      sm->path, sm->E, v.name, v.dim);
}

int lm_srv_open(lm_srv **out, const lm_srv_opts *o, lm_err *err)
{
    *out = NULL;
    lm_srv *s = calloc(1, sizeof *s);
    if (!s) return lm_err_set(err, LM_ENOMEM, "serve: out of memory");
    s->o = *o;
    if (!s->o.max_candidates) s->o.max_candidates = 1000;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->reload_mu, NULL);
    pthread_mutex_init(&s->version_mu, NULL);
    s->metrics.started = lm_now();
    s->model_path = lm_strdup(o->model_path);
    s->store_url = lm_strdup(o->store_url);
    int rc = s->model_path && s->store_url ? LM_OK : lm_err_set(err, LM_ENOMEM, "serve: out of memory");
    if (rc == LM_OK) rc = lm_srv_model_load(&s->cur, s->model_path, o->engine, err);
    if (rc == LM_OK) s->cur->gen = ++s->next_gen;
    if (rc == LM_OK) rc = lm_srv_store_open(&s->store, s->store_url, o->store_slots, o->log, o->log_ctx, err);
    if (rc == LM_OK) rc = check_store_dim(s, s->cur, err);
    if (rc != LM_OK) {
        lm_srv_close(s);
        return rc;
    }
    *out = s;
    return LM_OK;
}

void lm_srv_close(lm_srv *s)
{
    if (!s) return;
    lm_srv_release(s->cur);
    lm_srv_store_close(s->store);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->reload_mu);
    pthread_mutex_destroy(&s->version_mu);
    free(s->model_path);
    free(s->store_url);
    free(s);
}

int lm_srv_reload(lm_srv *s, lm_err *err)
{
    pthread_mutex_lock(&s->reload_mu);
    lm_srv_store_retry_now(s->store); /* a reload also looks at the store again at once */
    lm_srv_model *next = NULL, *cur = lm_srv_acquire(s);
    int rc = lm_srv_model_load(&next, s->model_path, s->o.engine, err);
    if (rc == LM_OK && (rc = lm_srv_model_check_fit(cur, next, err)) != LM_OK) {
        char why[LM_ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err->msg);
        rc = lm_err_set(err, LM_EMISMATCH, "%s does not fit the clients of the serving model: %s",
                        s->model_path, why);
    }
    if (rc == LM_OK) rc = check_store_dim(s, next, err);
    if (rc == LM_OK) {
        next->gen = ++s->next_gen;
        pthread_mutex_lock(&s->mu);
        lm_srv_model *old = s->cur;
        s->cur = next;
        pthread_mutex_unlock(&s->mu);
        lm_srv_release(old); /* freed when its last request ends */
        atomic_fetch_add(&s->metrics.reload_ok, 1);
        lm_srv_log(s, "reload: serving %s (%s, generation %llu)", next->path, next->id,
                   (unsigned long long)next->gen);
    } else {
        lm_srv_model_free(next);
        atomic_fetch_add(&s->metrics.reload_refused, 1);
        lm_srv_log(s, "reload refused, still serving %s (%s): %s", cur->path, cur->id, err->msg);
    }
    lm_srv_release(cur);
    pthread_mutex_unlock(&s->reload_mu);
    return rc;
}

/* ============================================================================================
 * replies
 * ========================================================================================== */

void lm_srv_buf_error(lm_srv_buf *b, const lm_srv_err *e)
{
    lm_srv_buf_reset(b);
    lm_srv_buf_puts(b, "{\"error\":");
    lm_srv_buf_json_str(b, e->msg, strlen(e->msg));
    lm_srv_buf_puts(b, ",\"field\":");
    lm_srv_buf_json_str(b, e->field, strlen(e->field));
    lm_srv_buf_puts(b, "}");
}

int lm_srv_reply_error(lm_srv_ws *w, const lm_srv_err *e)
{
    lm_srv_buf_error(&w->out, e);
    return e->status;
}

static int internal(lm_srv_ws *w, const lm_err *err)
{
    lm_srv_err e;
    lm_srv_fail(&e, 500, "", "%s", err->msg[0] ? err->msg : lm_strerror(err->code));
    return lm_srv_reply_error(w, &e);
}

static void note_version(lm_srv *s, lm_srv_ws *w, const char *ver)
{
    if (!strcmp(w->ver_seen, ver)) return; /* the common case: no lock */
    snprintf(w->ver_seen, sizeof w->ver_seen, "%s", ver);
    pthread_mutex_lock(&s->version_mu);
    snprintf(s->last_version, sizeof s->last_version, "%s", ver);
    pthread_mutex_unlock(&s->version_mu);
}

static const char *const cold_reason[LM_COLD_COUNT] = {"", "no_embedding", "no_version", "store_unavailable"};

int lm_srv_handle_score(lm_srv *s, lm_srv_ws *w, const char *body, size_t len)
{
    lm_srv_model *sm = lm_srv_acquire(s);
    lm_err err = {0};
    lm_srv_err e;
    int status;
    if (lm_srv_ws_prepare(w, sm, s->o.max_candidates, &err) != LM_OK) {
        status = internal(w, &err);
        goto done;
    }
    if ((status = lm_srv_parse_score(sm, w, body, len, &e)) != 0) {
        lm_srv_reply_error(w, &e);
        goto done;
    }
    int found = 0;
    char ver[LM_STORE_VERSION_MAX + 1];
    int g = lm_srv_store_get(s->store, w->key, w->key_len, w->emb, sm->E, &found, ver, &err);
    int cold = g == LM_SRV_GET_OK          ? (found ? LM_COLD_NONE : LM_COLD_NOT_FOUND)
               : g == LM_SRV_GET_NOVERSION ? LM_COLD_NO_VERSION
                                           : LM_COLD_STORE_DOWN;
    if (cold) lm_srv_cold_embedding(sm, w);
    lm_srv_score_rows(sm, w);
    size_t n = w->rows.n;
    for (size_t r = 0; r < n; r++)
        if (!isfinite(w->z[r])) {
            char field[40];
            snprintf(field, sizeof field, "candidates[%zu]", r);
            status = lm_srv_fail(&e, 400, field,
                                 "the score is not finite: feature values out of the model's range");
            lm_srv_reply_error(w, &e);
            goto done;
        }
    lm_srv_buf *b = &w->out;
    lm_srv_buf_reset(b);
    lm_srv_buf_reserve(b, 64 + n * 16);
    lm_srv_buf_put(b, "{\"scores\":[", 11);
    for (size_t r = 0; r < n; r++) {
        if (r) lm_srv_buf_put(b, ",", 1);
        lm_srv_buf_f32(b, w->z[r]);
    }
    lm_srv_buf_put(b, "],\"embedding_version\":", 22);
    if (ver[0]) {
        lm_srv_buf_json_str(b, ver, strlen(ver));
        note_version(s, w, ver);
    } else {
        lm_srv_buf_puts(b, "null");
    }
    if (cold)
        lm_srv_buf_printf(b, ",\"cold_start\":true,\"cold_start_reason\":\"%s\"}", cold_reason[cold]);
    else
        lm_srv_buf_puts(b, ",\"cold_start\":false}");
    status = b->oom ? 500 : 200;
    atomic_fetch_add_explicit(&s->metrics.scored, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->metrics.candidates, n, memory_order_relaxed);
    if (cold) atomic_fetch_add_explicit(&s->metrics.cold[cold], 1, memory_order_relaxed);
done:
    lm_srv_release(sm);
    return status;
}

int lm_srv_handle_embedding(lm_srv *s, lm_srv_ws *w, const char *body, size_t len)
{
    lm_srv_model *sm = lm_srv_acquire(s);
    lm_err err = {0};
    lm_srv_err e;
    int status;
    if (lm_srv_ws_prepare(w, sm, s->o.max_candidates, &err) != LM_OK) {
        status = internal(w, &err);
        goto done;
    }
    if ((status = lm_srv_parse_task_only(sm, w, body, len, &e)) != 0) {
        lm_srv_reply_error(w, &e);
        goto done;
    }
    int found = 0;
    char ver[LM_STORE_VERSION_MAX + 1];
    size_t E = sm->E;
    int g = lm_srv_store_get(s->store, w->key, w->key_len, w->emb, E, &found, ver, &err);
    if (g == LM_SRV_GET_DOWN || g == LM_SRV_GET_SKIPPED) {
        status = lm_srv_fail(&e, 503, "", "the feature store is unavailable (retrying): %s",
                             g == LM_SRV_GET_DOWN ? err.msg : "failed recently");
        lm_srv_reply_error(w, &e);
        goto done;
    }
    if (g == LM_SRV_GET_NOVERSION || !found) {
        status = g == LM_SRV_GET_NOVERSION
                     ? lm_srv_fail(&e, 404, "task", "no embedding version is published yet")
                     : lm_srv_fail(&e, 404, "task",
                                   "no stored embedding for this task in "
                                   "version '%s'",
                                   ver);
        lm_srv_reply_error(w, &e);
        goto done;
    }
    note_version(s, w, ver);
    lm_srv_buf *b = &w->out;
    lm_srv_buf_reset(b);
    lm_srv_buf_puts(b, "{\"key\":");
    lm_srv_buf_json_str(b, w->key, w->key_len);
    lm_srv_buf_puts(b, ",\"embedding_version\":");
    lm_srv_buf_json_str(b, ver, strlen(ver));
    lm_srv_buf_printf(b, ",\"dim\":%zu,\"embedding\":[", E);
    for (size_t i = 0; i < E; i++) {
        if (i) lm_srv_buf_put(b, ",", 1);
        lm_srv_buf_f32(b, w->emb[i]);
    }
    lm_srv_buf_puts(b, "]}");
    status = b->oom ? 500 : 200;
done:
    lm_srv_release(sm);
    return status;
}

int lm_srv_handle_health(lm_srv *s, lm_srv_ws *w)
{
    lm_srv_model *sm = lm_srv_acquire(s);
    lm_store_version v;
    lm_err err = {0};
    int rc = lm_srv_store_current(s->store, &v, &err);
    int up = rc == LM_OK || rc == LM_ENOTFOUND;
    lm_srv_buf *b = &w->out;
    lm_srv_buf_reset(b);
    lm_srv_buf_printf(b, "{\"status\":\"%s\",\"model_id\":", up ? "ok" : "degraded");
    lm_srv_buf_json_str(b, sm->id, strlen(sm->id));
    lm_srv_buf_puts(b, ",\"model_path\":");
    lm_srv_buf_json_str(b, sm->path, strlen(sm->path));
    lm_srv_buf_printf(
        b, ",\"generation\":%llu,\"engine\":\"%s\",\"kernel\":\"%s\",\"embedding_dim\":%zu,\"store\":",
        (unsigned long long)sm->gen, sm->engine == LM_SRV_ENGINE_REFERENCE ? "reference" : "fast",
        sm->kernel == LM_SRV_KERNEL_AVX2 ? "avx2" : "plain", sm->E);
    const char *url = lm_srv_store_url(s->store);
    lm_srv_buf_json_str(b, url, strlen(url));
    lm_srv_buf_printf(b, ",\"store_up\":%s,\"embedding_version\":", up ? "true" : "false");
    if (rc == LM_OK) {
        lm_srv_buf_json_str(b, v.name, strlen(v.name));
        lm_srv_buf_puts(b, ",\"embedding_model_id\":");
        lm_srv_buf_json_str(b, v.model_id, strlen(v.model_id));
    } else {
        lm_srv_buf_puts(b, "null,\"embedding_model_id\":null");
    }
    lm_srv_buf_printf(b, ",\"uptime_s\":%.3f}", lm_now() - s->metrics.started);
    lm_srv_release(sm);
    return b->oom ? 500 : 200;
}

int lm_srv_handle_reload(lm_srv *s, lm_srv_ws *w)
{
    lm_err err = {0};
    int rc = lm_srv_reload(s, &err);
    if (rc != LM_OK) {
        lm_srv_err e;
        int refused = rc == LM_EMISMATCH || rc == LM_EFORMAT || rc == LM_EVERSION || rc == LM_EINVAL;
        lm_srv_fail(&e, refused ? 409 : 500, "model", "%s (the previous model keeps serving)", err.msg);
        return lm_srv_reply_error(w, &e);
    }
    lm_srv_model *sm = lm_srv_acquire(s);
    lm_srv_buf *b = &w->out;
    lm_srv_buf_reset(b);
    lm_srv_buf_puts(b, "{\"reloaded\":true,\"model_id\":");
    lm_srv_buf_json_str(b, sm->id, strlen(sm->id));
    lm_srv_buf_printf(b, ",\"generation\":%llu}", (unsigned long long)sm->gen);
    lm_srv_release(sm);
    return 200;
}
