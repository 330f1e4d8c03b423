/* cmd_replay.c: `limaml replay`: send a dataset's held-out part to a running `limaml serve` as
 * score requests, over HTTP, and report the served model's AUC and the latency seen.
 *
 * It is the online check of what `limaml eval` measures offline: the same rows, the same pooled
 * AUC and slices (lm_eval_pooled), but every score comes back through the server, its JSON
 * parser, its feature store and its kernel. A task's test rows are sent in time order, split
 * into requests where the meta features change (a request carries one set) or at
 * --max-candidates. The HTTP client is libcurl (one keep-alive connection per client thread). */
#include "cli/cli.h"
#include "core/core.h"
#include "eval/floor.h"
#include "serve/serve.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One request: rows[first .. first + n) of the plan's row list, their slots in the score arrays. */
typedef struct rp_req {
    uint64_t task;
    size_t first, n;
} rp_req;

typedef struct rp_plan {
    const lm_dataset *ds;
    uint64_t *rows; /* dataset row of each scored example, grouped by request */
    float *label;
    uint8_t *flags; /* lm_eval_pooled's: bit 0 task with < 25 scored rows, bit 1 new task */
    float *score;   /* filled by the clients */
    size_t nrows;
    rp_req *req;
    size_t nreq;
} rp_plan;

typedef struct rp_client {
    const rp_plan *plan;
    atomic_int *stop; /* set by the first client that fails: the others stop too */
    const char *url;
    const char *token;
    size_t idx, stride; /* this client sends requests idx, idx + stride, ... */
    double *lat;        /* seconds per request it sent, in order */
    size_t nlat;
    uint64_t cold;
    char version[LM_STORE_VERSION_MAX + 1];
    int failed;
    char msg[512];
} rp_client;

static int same_meta(const lm_dataset *ds, uint64_t a, uint64_t b)
{
    uint32_t m = lm_dataset_nmeta(ds);
    return !m || !memcmp(lm_dataset_row(ds, a).meta, lm_dataset_row(ds, b).meta, m * sizeof(float));
}

/* The scored rows of every task (split `part`) and the requests that carry them. */
static int plan_make(rp_plan *p, const lm_dataset *ds, const char *dir, int part, size_t max_cand,
                     uint64_t max_tasks, lm_err *err)
{
    memset(p, 0, sizeof *p);
    p->ds = ds;
    uint64_t nt = lm_dataset_ntasks(ds);
    if (max_tasks && max_tasks < nt) nt = max_tasks;
    size_t cap = 0, rcap = 0;
    for (uint64_t t = 0; t < nt; t++) {
        const lm_task *task = lm_dataset_task(ds, t);
        size_t start = p->nrows;
        for (uint32_t i = 0; i < task->n; i++) {
            uint64_t r = task->first + i;
            if (lm_dataset_row(ds, r).split != part) continue;
            if (lm_grow((void **)&p->rows, &cap, p->nrows + 1, sizeof *p->rows))
                return lm_err_set(err, LM_ENOMEM, "out of memory");
            p->rows[p->nrows++] = r;
        }
        for (size_t i = start; i < p->nrows;) { /* requests: runs of equal meta, <= max_cand */
            size_t j = i + 1;
            while (j < p->nrows && j - i < max_cand && same_meta(ds, p->rows[i], p->rows[j])) j++;
            if (lm_grow((void **)&p->req, &rcap, p->nreq + 1, sizeof *p->req))
                return lm_err_set(err, LM_ENOMEM, "out of memory");
            p->req[p->nreq++] = (rp_req){t, i, j - i};
            i = j;
        }
    }
    if (!p->nrows)
        return lm_err_set(err, LM_EINVAL, "%s: no rows in the %s part to replay", dir, lm_split_name(part));
    p->label = lm_malloc_array(p->nrows, sizeof *p->label);
    p->flags = lm_malloc_array(p->nrows, 1);
    p->score = lm_malloc_array(p->nrows, sizeof *p->score);
    if (!p->label || !p->flags || !p->score) return lm_err_set(err, LM_ENOMEM, "out of memory");
    for (size_t q = 0; q < p->nreq; q++) {
        const rp_req *rq = &p->req[q];
        const lm_task *task = lm_dataset_task(ds, rq->task);
        size_t scored = task->nsplit[part]; /* the task's scored rows, as lm_evaluate slices them */
        for (size_t i = rq->first; i < rq->first + rq->n; i++) {
            p->label[i] = lm_dataset_row(ds, p->rows[i]).label;
            p->flags[i] = (uint8_t)((scored < 25 ? 1 : 0) | (task->is_new ? 2 : 0));
        }
    }
    return LM_OK;
}

static void plan_free(rp_plan *p)
{
    free(p->rows);
    free(p->label);
    free(p->flags);
    free(p->score);
    free(p->req);
}

static size_t on_body(char *data, size_t size, size_t n, void *ctx)
{
    lm_srv_buf *b = ctx;
    lm_srv_buf_put(b, data, size * n);
    return b->oom ? 0 : size * n;
}

/* Read {"scores": [...], "embedding_version": "V", "cold_start": B} into the request's slots. */
static int take_reply(rp_client *c, const rp_req *rq, const char *body, size_t len)
{
    if (!body) body = "", len = 0;
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "scores");
    if (!cJSON_IsArray(sc) || (size_t)cJSON_GetArraySize(sc) != rq->n) {
        snprintf(c->msg, sizeof c->msg, "a reply has no scores for its %zu candidates: %.200s", rq->n, body);
        cJSON_Delete(j);
        return -1;
    }
    size_t i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, sc)
    {
        if (!cJSON_IsNumber(x)) {
            snprintf(c->msg, sizeof c->msg, "a reply's scores[%zu] is not a number: %.200s", i, body);
            cJSON_Delete(j);
            return -1;
        }
        c->plan->score[rq->first + i++] = (float)x->valuedouble;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "cold_start"))) c->cold += rq->n;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "embedding_version");
    if (cJSON_IsString(v)) snprintf(c->version, sizeof c->version, "%s", v->valuestring);
    cJSON_Delete(j);
    return 0;
}

static void *client_main(void *arg)
{
    rp_client *c = arg;
    const rp_plan *p = c->plan;
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Expect:"); /* no 100-continue round trip for large bodies */
    char auth[600];
    if (c->token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->token);
        hdr = curl_slist_append(hdr, auth);
    }
    lm_srv_buf req = {0}, rep = {0};
    if (!h || !hdr) {
        snprintf(c->msg, sizeof c->msg, "cannot start an HTTP client (libcurl)");
        c->failed = 1;
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &rep);
    for (size_t q = c->idx; q < p->nreq && !atomic_load(c->stop); q += c->stride) {
        const rp_req *rq = &p->req[q];
        lm_srv_request_build(p->ds, lm_dataset_task(p->ds, rq->task), p->rows + rq->first, rq->n, &req);
        if (req.oom) {
            snprintf(c->msg, sizeof c->msg, "out of memory");
            c->failed = 1;
            break;
        }
        lm_srv_buf_reset(&rep);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req.p);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req.len);
        double t0 = lm_now();
        CURLcode rc = curl_easy_perform(h);
        c->lat[c->nlat++] = lm_now() - t0;
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK) {
            snprintf(c->msg, sizeof c->msg, "%s: %s", c->url, curl_easy_strerror(rc));
            c->failed = 1;
            break;
        }
        if (status != 200) {
            snprintf(c->msg, sizeof c->msg, "%s answered %ld: %.300s", c->url, status, rep.p ? rep.p : "");
            c->failed = 1;
            break;
        }
        if (take_reply(c, rq, rep.p, rep.len)) {
            c->failed = 1;
            break;
        }
    }
out:
    if (c->failed) atomic_store(c->stop, 1);
    lm_srv_buf_free(&req);
    lm_srv_buf_free(&rep);
    curl_slist_free_all(hdr);
    if (h) curl_easy_cleanup(h);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(const double *sorted, size_t n, double q)
{
    if (!n) return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

int cmd_replay(int argc, char **argv)
{
    static const cli_cmd cmd = {
        "replay",
        "limaml replay --url http://HOST:PORT --data DIR [--part test|val] [--clients C] [options]",
        "Send a dataset's held-out part to a running `limaml serve` as POST /v1/score requests and\n"
        "print the served model's AUC (pooled and by slice, as `limaml eval` computes it) and the\n"
        "latency each request saw.",
        "Each task's rows of --part are sent in time order, one request per run of rows with the same\n"
        "meta features (at most --max-candidates each), by C clients with one keep-alive connection\n"
        "each. Latency is the client's: from sending the request to the last byte of the reply.\n"
        "Any reply other than 200 stops the run with the server's message (exit 1).\n"
        "The served AUC equals `limaml eval`'s for the same adaptation when the store was written by\n"
        "`limaml embed --adapt-from val` with the same steps and rate; without adaptation, when a\n"
        "task's meta features do not change over its rows (a stored vector is one per task, eval\n"
        "computes the meta block on each row).",
    };
    const char *url, *data, *part, *token;
    uint64_t clients, max_cand, max_tasks;
    int json;
    cli_opt opts[] = {
        {"url", CLI_STR, &url, "URL", NULL, 1, "the server, e.g. http://127.0.0.1:8080"},
        {"data", CLI_STR, &data, "DIR", NULL, 1, "dataset (limaml prepare) whose part is replayed"},
        {"part", CLI_STR, &part, "P", "test", 0, "test or val"},
        {"clients", CLI_U64, &clients, "C", "1", 0, "concurrent clients (connections)"},
        {"max-candidates", CLI_U64, &max_cand, "N", "1000", 0, "candidates per request at most"},
        {"max-tasks", CLI_U64, &max_tasks, "N", "0", 0, "replay the first N tasks only (0: all)"},
        {"token", CLI_STR, &token, "T", NULL, 0, "bearer token (or LM_SERVE_TOKEN in the environment)"},
        {"json", CLI_FLAG, &json, NULL, NULL, 0, "print one JSON object instead of text"},
        {0},
    };
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    int split = !strcmp(part, "test") ? LM_SPLIT_TEST : !strcmp(part, "val") ? LM_SPLIT_VAL : -1;
    if (split < 0) return cli_usage_error(&cmd, "--part must be test or val, not '%s'", part);
    if (clients < 1 || clients > 256) return cli_usage_error(&cmd, "--clients must be in [1, 256]");
    if (max_cand < 1 || max_cand > 1000000)
        return cli_usage_error(&cmd, "--max-candidates must be in [1, 1000000]");
    if (strncmp(url, "http://", 7))
        return cli_usage_error(&cmd, "--url must start with http://, not '%s'", url);
    if (!token) token = getenv("LM_SERVE_TOKEN");

    lm_err err = {0};
    lm_dataset *ds = NULL;
    if (lm_dataset_open(&ds, data, 0, &err) != LM_OK) return cli_fail(&err);
    rp_plan plan;
    char *score_url = NULL;
    rp_client *cl = NULL;
    pthread_t *th = NULL;
    double *lat = NULL;
    int rc = plan_make(&plan, ds, data, split, (size_t)max_cand, max_tasks, &err);
    if (!rc && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        rc = lm_err_set(&err, LM_EIO, "cannot initialise libcurl");
    if (rc) goto done;

    size_t nc = clients < plan.nreq ? (size_t)clients : plan.nreq;
    size_t ulen = strlen(url);
    while (ulen > 7 && url[ulen - 1] == '/') ulen--;
    score_url = malloc(ulen + sizeof "/v1/score");
    cl = calloc(nc, sizeof *cl);
    th = calloc(nc, sizeof *th);
    lat = lm_malloc_array(plan.nreq, sizeof *lat);
    if (!score_url || !cl || !th || !lat) {
        rc = lm_err_set(&err, LM_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(score_url, url, ulen);
    memcpy(score_url + ulen, "/v1/score", sizeof "/v1/score");
    atomic_int stop;
    atomic_init(&stop, 0);
    size_t off = 0;
    for (size_t i = 0; i < nc; i++) {
        cl[i] = (rp_client){
            .plan = &plan, .stop = &stop, .url = score_url, .token = token, .idx = i, .stride = nc};
        cl[i].lat = lat + off;
        off += (plan.nreq - i + nc - 1) / nc;
    }
    double t0 = lm_now();
    size_t started = 0;
    for (; started < nc; started++)
        if (pthread_create(&th[started], NULL, client_main, &cl[started])) break;
    for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
    double secs = lm_now() - t0;
    if (started < nc) {
        rc = lm_err_set(&err, LM_EIO, "cannot start %zu client threads", nc);
        goto done;
    }
    uint64_t cold = 0;
    size_t nlat = 0;
    const char *version = "";
    for (size_t i = 0; i < nc; i++) {
        if (cl[i].failed) {
            rc = lm_err_set(&err, LM_EIO, "replay: %s", cl[i].msg);
            goto done;
        }
        memmove(lat + nlat, cl[i].lat, cl[i].nlat * sizeof *lat);
        nlat += cl[i].nlat;
        cold += cl[i].cold;
        if (cl[i].version[0]) version = cl[i].version;
    }
    lm_eval_result res = {0};
    /* A regression model's scores are raw predictions, not probabilities: no log loss then. */
    int binary = lm_dataset_schema(ds)->label_type == LM_LABEL_BINARY;
    rc = lm_eval_pooled(plan.score, binary ? plan.score : NULL, plan.label, plan.flags, plan.nrows, &res,
                        &err);
    if (rc) goto done;
    qsort(lat, nlat, sizeof *lat, cmp_double);
    double p50 = quantile(lat, nlat, 0.5) * 1e3, p99 = quantile(lat, nlat, 0.99) * 1e3,
           pmax = nlat ? lat[nlat - 1] * 1e3 : 0;
    if (json) {
        lm_srv_buf b = {0};
        lm_srv_buf_puts(&b, "{\"url\": ");
        lm_srv_buf_json_str(&b, score_url, strlen(score_url));
        lm_srv_buf_printf(
            &b,
            ", \"part\": \"%s\", \"requests\": %zu, \"candidates\": %zu, \"clients\": %zu, "
            "\"seconds\": %.3f, \"requests_per_s\": %.1f, \"latency_ms\": {\"p50\": %.3f, "
            "\"p99\": %.3f, \"max\": %.3f}, \"cold_start_candidates\": %llu, \"embedding_version\": ",
            part, plan.nreq, plan.nrows, nc, secs, (double)plan.nreq / secs, p50, p99, pmax,
            (unsigned long long)cold);
        lm_srv_buf_json_str(&b, version, strlen(version));
        const char *names[] = {"auc", "logloss", "auc_lt25", "auc_ge25", "auc_warm", "auc_new"};
        double vals[] = {res.auc, res.logloss, res.auc_lt25, res.auc_ge25, res.auc_warm, res.auc_new};
        for (size_t i = 0; i < 6; i++) {
            if (isnan(vals[i]))
                lm_srv_buf_printf(&b, ", \"%s\": null", names[i]);
            else
                lm_srv_buf_printf(&b, ", \"%s\": %.6f", names[i], vals[i]);
        }
        lm_srv_buf_puts(&b, "}\n");
        if (b.oom)
            rc = lm_err_set(&err, LM_ENOMEM, "out of memory");
        else
            fwrite(b.p, 1, b.len, stdout);
        lm_srv_buf_free(&b);
    } else {
        printf("replay: %zu requests (%zu candidates) to %s from %zu client%s in %.2f s (%.0f requests/s); "
               "latency p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
               plan.nreq, plan.nrows, score_url, nc, nc == 1 ? "" : "s", secs, (double)plan.nreq / secs, p50,
               p99, pmax);
        printf("replay: served %s AUC %.4f (<25: %.4f, >=25: %.4f, warm: %.4f, new: %.4f), log loss %.4f; "
               "embedding version '%s', %.1f%% of candidates cold-start\n",
               part, res.auc, res.auc_lt25, res.auc_ge25, res.auc_warm, res.auc_new, res.logloss, version,
               100.0 * (double)cold / (double)plan.nrows);
    }
done:
    plan_free(&plan);
    free(score_url);
    free(cl);
    free(th);
    free(lat);
    curl_global_cleanup();
    lm_dataset_close(ds);
    return rc ? cli_fail(&err) : 0;
}
