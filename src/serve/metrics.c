/* metrics.c: the server's counters (lock-free: relaxed atomic adds) and their Prometheus text
 * exposition (format 0.0.4) for GET /metrics. */
#include "serve/serve.h"

#include <string.h>

static const int codes[LM_SRV_NCODES] = {200, 400, 401, 403, 404, 405, 409, 413, 500, 503, 0, 0};
#define NCODES_USED 11 /* the last used slot counts every other status */

static const double buckets[LM_SRV_NBUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};

static const char *const ep_names[LM_EP_COUNT] = {"/v1/score", "/v1/embedding", "/healthz",
                                                  "/metrics",  "/admin/reload", "other"};

static const char *const cold_names[LM_COLD_COUNT] = {"", "no_embedding", "no_version", "store_unavailable"};

void lm_srv_metrics_request(lm_srv_metrics *m, int endpoint, int status)
{
    int k = NCODES_USED - 1;
    for (int i = 0; i < NCODES_USED - 1; i++)
        if (codes[i] == status) k = i;
    if (endpoint < 0 || endpoint >= LM_EP_COUNT) endpoint = LM_EP_OTHER;
    atomic_fetch_add_explicit(&m->req[endpoint][k], 1, memory_order_relaxed);
}

void lm_srv_metrics_latency(lm_srv_metrics *m, double seconds)
{
    int b = LM_SRV_NBUCKETS;
    for (int i = 0; i < LM_SRV_NBUCKETS; i++)
        if (seconds <= buckets[i]) {
            b = i;
            break;
        }
    atomic_fetch_add_explicit(&m->lat[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->lat_sum_ns, (uint_fast64_t)(seconds * 1e9), memory_order_relaxed);
    atomic_fetch_add_explicit(&m->lat_count, 1, memory_order_relaxed);
}

static uint64_t get(atomic_uint_fast64_t *a)
{
    return (uint64_t)atomic_load_explicit(a, memory_order_relaxed);
}

/* A label value: backslash, quote and newline escaped. */
static void label(lm_srv_buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') lm_srv_buf_put(b, "\\", 1);
        if (*s == '\n')
            lm_srv_buf_put(b, "\\n", 2);
        else
            lm_srv_buf_put(b, s, 1);
    }
}

static void head(lm_srv_buf *b, const char *name, const char *type, const char *help)
{
    lm_srv_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int lm_srv_handle_metrics(lm_srv *s, lm_srv_ws *w)
{
    lm_srv_metrics *m = &s->metrics;
    lm_srv_buf *b = &w->out;
    lm_srv_buf_reset(b);

    head(b, "limaml_http_requests_total", "counter", "HTTP requests answered, by endpoint and status code.");
    for (int e = 0; e < LM_EP_COUNT; e++)
        for (int k = 0; k < NCODES_USED; k++) {
            uint64_t v = get(&m->req[e][k]);
            if (!v && !(e == LM_EP_SCORE && k == 0)) continue;
            if (k == NCODES_USED - 1)
                lm_srv_buf_printf(b, "limaml_http_requests_total{endpoint=\"%s\",code=\"other\"} %llu\n",
                                  ep_names[e], (unsigned long long)v);
            else
                lm_srv_buf_printf(b, "limaml_http_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n",
                                  ep_names[e], codes[k], (unsigned long long)v);
        }

    head(b, "limaml_score_duration_seconds", "histogram",
         "Time from a /v1/score request's headers to its reply, in seconds.");
    uint64_t cum = 0;
    for (int i = 0; i <= LM_SRV_NBUCKETS; i++) {
        cum += get(&m->lat[i]);
        if (i < LM_SRV_NBUCKETS)
            lm_srv_buf_printf(b, "limaml_score_duration_seconds_bucket{le=\"%g\"} %llu\n", buckets[i],
                              (unsigned long long)cum);
        else
            lm_srv_buf_printf(b, "limaml_score_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                              (unsigned long long)cum);
    }
    lm_srv_buf_printf(b, "limaml_score_duration_seconds_sum %.9f\n", (double)get(&m->lat_sum_ns) * 1e-9);
    lm_srv_buf_printf(b, "limaml_score_duration_seconds_count %llu\n",
                      (unsigned long long)get(&m->lat_count));

    uint64_t scored = get(&m->scored), cold = 0;
    head(b, "limaml_scored_requests_total", "counter", "Score requests answered with scores.");
    lm_srv_buf_printf(b, "limaml_scored_requests_total %llu\n", (unsigned long long)scored);
    head(b, "limaml_candidates_scored_total", "counter", "Candidates scored.");
    lm_srv_buf_printf(b, "limaml_candidates_scored_total %llu\n", (unsigned long long)get(&m->candidates));
    head(b, "limaml_cold_starts_total", "counter",
         "Score requests served with the cold-start embedding, by reason.");
    for (int r = 1; r < LM_COLD_COUNT; r++) {
        uint64_t v = get(&m->cold[r]);
        cold += v;
        lm_srv_buf_printf(b, "limaml_cold_starts_total{reason=\"%s\"} %llu\n", cold_names[r],
                          (unsigned long long)v);
    }
    head(b, "limaml_cold_start_ratio", "gauge", "Cold starts over scored requests since the start.");
    lm_srv_buf_printf(b, "limaml_cold_start_ratio %.6f\n", scored ? (double)cold / (double)scored : 0.0);

    head(b, "limaml_store_errors_total", "counter", "Failed feature-store reads and connections.");
    lm_srv_buf_printf(b, "limaml_store_errors_total %llu\n",
                      (unsigned long long)lm_srv_store_errors(s->store));
    head(b, "limaml_store_up", "gauge", "1 when the last feature-store attempt succeeded.");
    lm_srv_buf_printf(b, "limaml_store_up %d\n", !lm_srv_store_down(s->store));

    head(b, "limaml_model_reloads_total", "counter", "Model reloads, by result.");
    lm_srv_buf_printf(b, "limaml_model_reloads_total{result=\"ok\"} %llu\n",
                      (unsigned long long)get(&m->reload_ok));
    lm_srv_buf_printf(b, "limaml_model_reloads_total{result=\"refused\"} %llu\n",
                      (unsigned long long)get(&m->reload_refused));

    lm_srv_model *sm = lm_srv_acquire(s);
    head(b, "limaml_model_info", "gauge", "The model being served (value 1).");
    lm_srv_buf_puts(b, "limaml_model_info{model_id=\"");
    label(b, sm->id);
    lm_srv_buf_puts(b, "\",path=\"");
    label(b, sm->path);
    lm_srv_buf_printf(b, "\",engine=\"%s\",kernel=\"%s\",generation=\"%llu\"} 1\n",
                      sm->engine == LM_SRV_ENGINE_REFERENCE ? "reference" : "fast",
                      sm->kernel == LM_SRV_KERNEL_AVX2 ? "avx2" : "plain", (unsigned long long)sm->gen);
    lm_srv_release(sm);
    char ver[LM_STORE_VERSION_MAX + 1];
    pthread_mutex_lock(&s->version_mu);
    memcpy(ver, s->last_version, sizeof ver);
    pthread_mutex_unlock(&s->version_mu);
    head(b, "limaml_embedding_version_info", "gauge", "The embedding version read last (value 1).");
    lm_srv_buf_puts(b, "limaml_embedding_version_info{version=\"");
    label(b, ver);
    lm_srv_buf_puts(b, "\"} 1\n");
    head(b, "limaml_uptime_seconds", "gauge", "Seconds since the server started.");
    lm_srv_buf_printf(b, "limaml_uptime_seconds %.3f\n", lm_now() - m->started);
    return b->oom ? 500 : 200;
}
