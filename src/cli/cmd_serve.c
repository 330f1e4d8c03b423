/* cmd_serve.c: `limaml serve`: the online scorer over HTTP (src/serve/, docs/SERVE.md). */
#include "cli/cli.h"
#include "serve/serve.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Log lines on stderr, one fprintf each (stdio locks the stream per call). */
static void log_line(void *ctx, const char *msg)
{
    (void)ctx;
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    fprintf(stderr, "%s limaml serve: %s\n", when, msg);
}

static unsigned cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int cmd_serve(int argc, char **argv)
{
    static const cli_cmd cmd = {
        "serve",
        "limaml serve --model M --store URL [--listen 127.0.0.1:8080] [--threads T] [options]",
        "Serve the global block over HTTP/1.1 with the meta embeddings of the feature store: POST\n"
        "/v1/score, POST /v1/embedding, GET /healthz, GET /metrics (Prometheus), POST /admin/reload\n"
        "(loopback clients only). No fine-tuning happens on the request path (paper section 4.3.3).",
        "A task without a stored embedding, or any task while the store is down, is scored with the\n"
        "unadapted meta block's output on the request's meta features and flagged \"cold_start\": true;\n"
        "the store is retried by itself. SIGHUP or POST /admin/reload loads the model file again and\n"
        "swaps it in if its schema fits (requests in flight finish on the old one); embedding versions\n"
        "published later are read as they come. SIGINT or SIGTERM stops after requests in flight.\n"
        "The interface is in docs/openapi.yaml; the design and figures in docs/SERVE.md.",
    };
    const char *model, *url, *listen, *token, *engine;
    uint64_t threads, max_cand, timeout, max_conn;
    size_t max_body;
    cli_opt opts[] = {
        {"model", CLI_STR, &model, "M", NULL, 1, "model file (limaml train)"},
        {"store", CLI_STR, &url, "URL", NULL, 1,
         "lmdb://PATH or redis://HOST:PORT/DB (?timeout_ms=N bounds a read)"},
        {"listen", CLI_STR, &listen, "ADDR", "127.0.0.1:8080", 0, "address and port (port 0: any free one)"},
        {"threads", CLI_U64, &threads, "T", "0", 0, "serving threads (0: one per core)"},
        {"max-candidates", CLI_U64, &max_cand, "N", "1000", 0, "candidates per request (more: 413)"},
        {"max-body", CLI_SIZE, &max_body, "BYTES", "1M", 0, "largest request body (more: 413)"},
        {"timeout", CLI_U64, &timeout, "S", "10", 0, "close a connection idle or stalled for S seconds"},
        {"max-connections", CLI_U64, &max_conn, "N", "1024", 0, "open connections at most"},
        {"token", CLI_STR, &token, "T", NULL, 0,
         "require 'Authorization: Bearer T' (all but /healthz); or LM_SERVE_TOKEN in the environment"},
        {"engine", CLI_STR, &engine, "E", "fast", 0,
         "fast (packed kernel) or reference (lm_net_predict_emb)"},
        {0},
    };
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    if (threads > 256) return cli_usage_error(&cmd, "--threads must be at most 256");
    if (max_cand < 1 || max_cand > 1000000)
        return cli_usage_error(&cmd, "--max-candidates must be in [1, 1000000]");
    if (max_body < 64) return cli_usage_error(&cmd, "--max-body must be at least 64 bytes");
    if (timeout < 1 || timeout > 3600) return cli_usage_error(&cmd, "--timeout must be in [1, 3600] seconds");
    if (max_conn < 1 || max_conn > 65536)
        return cli_usage_error(&cmd, "--max-connections must be in [1, 65536]");
    if (!token) token = getenv("LM_SERVE_TOKEN"); /* kept out of the process list */
    if (token && !*token) return cli_usage_error(&cmd, "--token (or LM_SERVE_TOKEN) must not be empty");
    int eng = !strcmp(engine, "fast")        ? LM_SRV_ENGINE_FAST
              : !strcmp(engine, "reference") ? LM_SRV_ENGINE_REFERENCE
                                             : -1;
    if (eng < 0) return cli_usage_error(&cmd, "--engine must be fast or reference, not '%s'", engine);
    unsigned nthreads = threads ? (unsigned)threads : cores();

    /* Every thread started from here on (the pool's, hiredis has none) inherits this mask, so
     * the signals reach only the sigwait below. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    lm_srv_opts so = {model, url, (size_t)max_cand, eng, nthreads, log_line, NULL};
    lm_err err = {0};
    lm_srv *srv;
    if (lm_srv_open(&srv, &so, &err) != LM_OK) return cli_fail(&err);
    lm_http_opts ho = {listen, nthreads, max_body, (unsigned)timeout, (unsigned)max_conn, token};
    lm_http *http;
    if (lm_http_start(&http, srv, &ho, &err) != LM_OK) {
        lm_srv_close(srv);
        return cli_fail(&err);
    }
    lm_srv_model *sm = lm_srv_acquire(srv);
    int hostlen = (int)(strrchr(listen, ':') - listen); /* lm_http_start checked the form */
    printf("serve: listening on http://%.*s:%d (model %s, %s kernel; store %s; %u threads)\n", hostlen,
           listen, lm_http_port(http), sm->id, sm->kernel == LM_SRV_KERNEL_AVX2 ? "avx2" : "plain",
           lm_srv_store_url(srv->store), nthreads);
    fflush(stdout);
    lm_srv_release(sm);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) break;
        if (sig != SIGHUP) break;
        lm_err rerr = {0};
        lm_srv_reload(srv, &rerr); /* it logs its result */
    }
    log_line(NULL, "stopping: finishing requests in flight");
    lm_http_stop(http, 5.0);
    lm_srv_close(srv);
    printf("serve: stopped\n");
    return 0;
}
