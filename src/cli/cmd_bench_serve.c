/* cmd_bench_serve.c: `limaml bench serve`: throughput and latency of `limaml serve` on loopback,
 * measured with wrk (a load generator in C with a Lua hook per request), with an LMDB store of
 * 1 million embeddings. The server runs in this process on a free loopback port; wrk shares the
 * machine's cores with it, as it would in the figures of docs/SERVE.md. Every run is bounded in
 * time (--duration); the table goes to stdout.
 *
 * Two passes per number of candidates per request: the peak with wrk (closed loop: each of C
 * connections sends its next request when the last reply is in), at several C; then the latency
 * at half of that peak with an open-loop generator of ours (below), which sends at a fixed rate
 * and counts a request's latency from when it was due. Request bodies draw a task at random
 * among 1.1 million ids, so about 9% are cold starts, as new members would be. "server us/req"
 * is this process's CPU time (the server's threads; wrk is another process) per request: what a
 * request costs, whatever else shares the cores. */
#include "cli/cli.h"
#include "core/core.h"
#include "meta/model.h"
#include "serve/serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* The schema of `limaml synth`: 9 meta, 9 dense, two categorical columns. */
static const char *bench_schema =
    "{\"delimiter\": \",\", \"header\": true, \"task\": [\"user_id\"], \"time\": \"ts\", \"label\": "
    "\"clicked\","
    " \"meta\": [\"m_age\", \"m_gender\", \"m_seg0\", \"m_seg1\", \"m_seg2\", \"m_seg3\", \"m_seg4\", "
    "\"m_seg5\","
    " \"m_tenure\"], \"dense\": [\"i_f0\", \"i_f1\", \"i_f2\", \"i_f3\", \"i_f4\", \"i_f5\", \"i_f6\", "
    "\"i_f7\","
    " \"ctx_hour\"], \"categorical\": [{\"column\": \"item_id\", \"buckets\": 5001, \"dim\": 8},"
    " {\"column\": \"channel\", \"buckets\": 4, \"dim\": 4}]}";

/* A model of the paper's shape with random weights (serving cost does not depend on training);
 * members > 1: an ensemble of that many such networks (lm_model_ensemble). */
static int make_model(const char *path, size_t members, lm_err *err)
{
    lm_schema *s = NULL;
    lm_model *m[16] = {0}, *e = NULL;
    lm_net_config c;
    lm_net net;
    int rc = lm_schema_parse(&s, bench_schema, strlen(bench_schema), NULL, err);
    lm_net_config_default(&c);
    if (!rc) rc = lm_net_config_from_schema(&c, s, err);
    if (!rc) rc = lm_net_init(&net, &c, err);
    for (size_t i = 0; !rc && i < members; i++) {
        rc = lm_model_new(&m[i], &net, LM_TRAIN_LIMAML, s, err);
        if (rc) break;
        lm_rng rng;
        lm_rng_seed(&rng, 7 + i);
        lm_net_params_init_f32(&m[i]->net, m[i]->theta_m, m[i]->theta_g, &rng);
    }
    if (!rc && members > 1 && (rc = lm_model_ensemble(&e, m, members, err)) == LM_OK) memset(m, 0, sizeof m);
    if (!rc) rc = lm_model_save(e ? e : m[0], path, err);
    for (size_t i = 0; i < members; i++) lm_model_free(m[i]);
    lm_model_free(e);
    lm_schema_free(s);
    return rc;
}

/* Version "bench" of n tasks "u0000000".. (byte order is numeric order), E = 16 floats each. */
static int make_store(const char *url, uint64_t n, size_t E, lm_err *err)
{
    lm_store *st;
    int rc = lm_store_open(&st, url, LM_STORE_CREATE, err);
    if (rc) return rc;
    lm_store_version v;
    if (lm_store_current(st, &v, err) == LM_OK && v.count == n && v.dim == E) { /* kept from a run before */
        lm_store_close(st);
        return LM_OK;
    }
    const size_t B = 10000;
    char(*keys)[16] = malloc(B * sizeof *keys);
    const char **kp = malloc(B * sizeof *kp);
    size_t *kl = malloc(B * sizeof *kl);
    float *vec = malloc(B * E * sizeof *vec);
    lm_store_writer *w = NULL;
    char version[32];
    snprintf(version, sizeof version, "bench-%ld", (long)getpid());
    rc = keys && kp && kl && vec ? LM_OK : lm_err_set(err, LM_ENOMEM, "out of memory");
    if (!rc) rc = lm_store_begin_version(st, version, (uint32_t)E, LM_STORE_ENC_F32, "bench", &w, err);
    lm_rng rng;
    lm_rng_seed(&rng, 11);
    for (uint64_t i = 0; !rc && i < n; i += B) {
        size_t b = (size_t)LM_MIN(B, n - i);
        for (size_t j = 0; j < b; j++) {
            kl[j] = (size_t)snprintf(keys[j], sizeof keys[j], "u%07llu", (unsigned long long)(i + j));
            kp[j] = keys[j];
        }
        for (size_t j = 0; j < b * E; j++) vec[j] = (float)(0.3 * lm_rng_normal(&rng));
        rc = lm_store_put_batch(w, kp, kl, vec, b, err);
    }
    if (!rc)
        rc = lm_store_publish(w, 0, err);
    else
        lm_store_abort(w);
    free(keys), free(kp), free(kl), free(vec);
    lm_store_close(st);
    return rc;
}

/* The JSON after the task key: meta features and `ncand` fixed candidates (made with seed 3,
 * so wrk and the load generator send the same bodies). malloc'd. */
static char *body_tail(int ncand)
{
    size_t cap = 256 + (size_t)ncand * 160, len = 0;
    char *t = malloc(cap);
    if (!t) return NULL;
    lm_rng rng;
    lm_rng_seed(&rng, 3);
    len += (size_t)snprintf(t + len, cap - len, "\"},\"meta\":[0.51,0,0,1,0,0,0,0,0.85],\"candidates\":[");
    for (int c = 0; c < ncand; c++) {
        len += (size_t)snprintf(t + len, cap - len, "%s{\"dense\":[", c ? "," : "");
        for (int k = 0; k < 9; k++)
            len += (size_t)snprintf(t + len, cap - len, "%s%.4f", k ? "," : "", lm_rng_normal(&rng));
        len += (size_t)snprintf(t + len, cap - len, "],\"categorical\":{\"item_id\":%llu,\"channel\":%llu}}",
                                (unsigned long long)lm_rng_below(&rng, 6000),
                                (unsigned long long)lm_rng_below(&rng, 4));
    }
    snprintf(t + len, cap - len, "]}");
    return t;
}

/* How many different requests to prepare: about 4 MB of them, 64 to 10000. */
static size_t nbodies(int ncand)
{
    size_t body = 120 + (size_t)ncand * 110;
    return LM_MIN(10000, LM_MAX(64, (4u << 20) / body));
}

/* A wrk script POSTing bodies for random tasks among 1.1 `tasks`. Requests are formatted once
 * per wrk thread, so wrk spends its time sending, not building bodies. */
static int write_script(const char *path, int ncand, uint64_t tasks, lm_err *err)
{
    char *tail = body_tail(ncand);
    FILE *f = tail ? fopen(path, "w") : NULL;
    if (!f) {
        free(tail);
        return lm_err_errno(err, LM_EIO, "cannot write '%s'", path);
    }
    fprintf(f, "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n");
    fprintf(f, "local head = '{\"task\":{\"user_id\":\"u'\nlocal tail = '%s'\n", tail);
    fprintf(f, "local n = %llu\nlocal k = %zu\nlocal reqs = {}\nlocal idx = 0\n",
            (unsigned long long)(tasks + tasks / 10), nbodies(ncand));
    fprintf(f, "function setup(thread) thread:set(\"seed\", math.random(1, 1000000)) end\n"
               "function init(args)\n"
               "  math.randomseed(seed or 1)\n"
               "  for i = 1, k do\n"
               "    reqs[i] = wrk.format(nil, nil, nil, head .. string.format(\"%%07d\", math.random(0, n - "
               "1)) .. tail)\n"
               "  end\n"
               "end\n"
               "function request()\n"
               "  idx = idx %% k + 1\n"
               "  return reqs[idx]\n"
               "end\n");
    free(tail);
    return fclose(f) ? lm_err_errno(err, LM_EIO, "cannot write '%s'", path) : LM_OK;
}

typedef struct wrk_result {
    double rps, p50_ms, p99_ms;
    unsigned long long requests, errors;
    double cpu_us; /* this process's CPU time (the server's threads) per request */
} wrk_result;

/* CPU seconds of this process (RUSAGE_SELF) or of the calling thread (RUSAGE_THREAD). */
static double cpu_seconds(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* "123.45us", "1.20ms", "2.00s" in milliseconds. */
static double parse_ms(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (!strncmp(end, "us", 2)) return v / 1000;
    if (!strncmp(end, "ms", 2)) return v;
    if (!strncmp(end, "s", 1)) return v * 1000;
    if (!strncmp(end, "m", 1)) return v * 60000;
    return v;
}

static int run_wrk(const char *script, int port, int conns, int threads, double seconds, wrk_result *r,
                   lm_err *err)
{
    char t[16], c[16], d[32], url[64];
    snprintf(t, sizeof t, "-t%d", LM_MIN(threads, conns));
    snprintf(c, sizeof c, "-c%d", conns);
    snprintf(d, sizeof d, "-d%.0fs", seconds < 1 ? 1 : seconds);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/score", port);
    char *argv[] = {"wrk", t, c, d, "--latency", "--timeout", "5s", "-s", (char *)script, url, NULL};
    int fd[2];
    if (pipe(fd)) return lm_err_errno(err, LM_EIO, "pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    double cpu0 = cpu_seconds(RUSAGE_SELF);
    int src = posix_spawnp(&pid, "wrk", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (src) {
        close(fd[0]);
        return lm_err_set(err, LM_ENOTFOUND, "cannot run wrk: %s (install it: apt-get install wrk)",
                          strerror(src));
    }
    char out[16384];
    size_t len = 0;
    ssize_t k;
    while ((k = read(fd[0], out + len, sizeof out - 1 - len)) > 0) len += (size_t)k;
    out[len] = 0;
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    double cpu = cpu_seconds(RUSAGE_SELF) - cpu0;
    memset(r, 0, sizeof *r);
    const char *p;
    if ((p = strstr(out, "Requests/sec:"))) r->rps = strtod(p + 13, NULL);
    if ((p = strstr(out, " 50% "))) r->p50_ms = parse_ms(p + 5 + strspn(p + 5, " "));
    if ((p = strstr(out, " 99% "))) r->p99_ms = parse_ms(p + 5 + strspn(p + 5, " "));
    if ((p = strstr(out, " requests in "))) {
        const char *q = p;
        while (q > out && q[-1] >= '0' && q[-1] <= '9') q--;
        r->requests = strtoull(q, NULL, 10);
    }
    if ((p = strstr(out, "Non-2xx or 3xx responses:"))) r->errors += strtoull(p + 26, NULL, 10);
    if ((p = strstr(out, "Socket errors:"))) {
        unsigned long long a = 0, b = 0, cc = 0, dd = 0;
        sscanf(p, "Socket errors: connect %llu, read %llu, write %llu, timeout %llu", &a, &b, &cc, &dd);
        r->errors += a + b + cc + dd;
    }
    if (r->requests) r->cpu_us = 1e6 * cpu / (double)r->requests;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || r->rps <= 0)
        return lm_err_set(err, LM_EIO, "wrk failed: %.300s", out);
    return LM_OK;
}

/* ---- an open-loop load generator, for latency at a given rate ---------------------------------
 *
 * wrk is closed-loop: a connection sends its next request when the last reply is in, so a slow
 * reply delays the requests behind it and they are never counted late (coordinated omission),
 * and its per-request delay() paces in whole milliseconds, which bunches requests. This sends
 * request k at t0 + k / rate on whichever of `nconn` keep-alive connections is free, and a
 * request's latency runs from when it was due, so waiting for a free connection counts. */

typedef struct lg_conn {
    int fd, busy;
    double due;
    size_t got, need; /* bytes of the reply read, and its full size once the headers are in */
    char buf[1 << 16];
} lg_conn;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A reply is complete when its headers and Content-Length bytes are in. 1 done, 0 not yet,
 * -1 not an HTTP reply; *ok: status 200. */
static int lg_reply(lg_conn *c, int *ok)
{
    if (!c->need) {
        char *end = memmem(c->buf, c->got, "\r\n\r\n", 4);
        if (!end) return c->got == sizeof c->buf ? -1 : 0;
        *end = 0;
        char *cl = strcasestr(c->buf, "\r\nContent-Length:");
        if (strncmp(c->buf, "HTTP/1.1 ", 9) || !cl) return -1;
        *ok = !strncmp(c->buf + 9, "200", 3);
        c->need = (size_t)(end + 4 - c->buf) + strtoull(cl + 17, NULL, 10);
    }
    return c->got >= c->need;
}

static int lg_run(int port, char **reqs, const size_t *lens, size_t nreq, double rate, double seconds,
                  int nconn, wrk_result *r, lm_err *err)
{
    memset(r, 0, sizeof *r);
    size_t total = (size_t)(rate * seconds), done = 0, sent = 0;
    double *lat = malloc((total + 1) * sizeof *lat);
    lg_conn *cs = calloc((size_t)nconn, sizeof *cs);
    int ep = epoll_create1(0), tfd = timerfd_create(CLOCK_MONOTONIC, 0), rc = LM_OK;
    if (!lat || !cs || ep < 0 || tfd < 0) rc = lm_err_set(err, LM_ENOMEM, "load generator: out of resources");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; rc == LM_OK && i < nconn; i++) {
        int one = 1;
        cs[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        if (cs[i].fd < 0 || connect(cs[i].fd, (struct sockaddr *)&sa, sizeof sa))
            rc = lm_err_errno(err, LM_EIO, "load generator: connect");
        else
            setsockopt(cs[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (rc == LM_OK) epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (rc == LM_OK) epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev);
    double cpu0 = cpu_seconds(RUSAGE_SELF), own0 = cpu_seconds(RUSAGE_THREAD), t0 = mono() + 0.01;
    double stop = t0 + seconds + 2;
    while (rc == LM_OK && done < total && mono() < stop) {
        double now = mono();
        /* send what is due on free connections (a blocking send: loopback buffers take it) */
        for (int i = 0; i < nconn && sent < total && t0 + (double)sent / rate <= now; i++) {
            if (cs[i].busy) continue;
            const char *q = reqs[sent % nreq];
            size_t n = lens[sent % nreq];
            if (send(cs[i].fd, q, n, MSG_NOSIGNAL) != (ssize_t)n) {
                r->errors++;
                rc = lm_err_errno(err, LM_EIO, "load generator: send");
                break;
            }
            cs[i].busy = 1, cs[i].due = t0 + (double)sent / rate, cs[i].got = cs[i].need = 0;
            sent++;
        }
        if (sent < total) { /* wake for the next due request */
            double next = t0 + (double)sent / rate;
            struct itimerspec it = {{0, 0}, {(time_t)next, (long)((next - (double)(time_t)next) * 1e9)}};
            if (it.it_value.tv_nsec == 0) it.it_value.tv_nsec = 1;
            timerfd_settime(tfd, TFD_TIMER_ABSTIME, &it, NULL);
        }
        struct epoll_event evs[64];
        int ne = epoll_wait(ep, evs, 64, 100);
        for (int e = 0; e < ne; e++) {
            if (evs[e].data.u32 == UINT32_MAX) {
                uint64_t x;
                if (read(tfd, &x, sizeof x) < 0) (void)0;
                continue;
            }
            lg_conn *c = &cs[evs[e].data.u32];
            ssize_t k = recv(c->fd, c->buf + c->got, sizeof c->buf - c->got, MSG_DONTWAIT);
            if (k <= 0) {
                rc = lm_err_set(err, LM_EIO, "load generator: the server closed a connection");
                break;
            }
            c->got += (size_t)k;
            int ok = 0, st = lg_reply(c, &ok);
            if (st < 0) rc = lm_err_set(err, LM_EIO, "load generator: not an HTTP reply");
            if (st <= 0) continue;
            if (!ok) r->errors++;
            lat[done++] = mono() - c->due;
            c->busy = 0;
        }
    }
    double t1 = mono();
    if (rc == LM_OK && done) {
        qsort(lat, done, sizeof *lat, cmp_double);
        r->requests = done;
        r->rps = (double)done / (t1 - t0);
        r->p50_ms = 1e3 * lat[done / 2];
        r->p99_ms = 1e3 * lat[LM_MIN(done - 1, done * 99 / 100)];
        /* the server's threads: the process less this thread (the generator) */
        double server = cpu_seconds(RUSAGE_SELF) - cpu0 - (cpu_seconds(RUSAGE_THREAD) - own0);
        r->cpu_us = 1e6 * server / (double)done;
    }
    for (int i = 0; cs && i < nconn; i++)
        if (cs[i].fd > 0) close(cs[i].fd);
    if (ep >= 0) close(ep);
    if (tfd >= 0) close(tfd);
    free(cs), free(lat);
    return rc;
}

/* K requests (HTTP text) for random tasks, with the same candidates as the wrk script's. */
static int lg_requests(int ncand, uint64_t tasks, char ***out, size_t **lens, size_t *n, lm_err *err)
{
    char *tail = body_tail(ncand);
    size_t k = nbodies(ncand), cap = (tail ? strlen(tail) : 0) + 256;
    char **q = calloc(k, sizeof *q), *body = malloc(cap);
    size_t *l = calloc(k, sizeof *l), i = 0;
    lm_rng rng;
    lm_rng_seed(&rng, 17);
    for (; tail && body && q && l && i < k; i++) {
        int blen = snprintf(body, cap, "{\"task\":{\"user_id\":\"u%07llu%s",
                            (unsigned long long)lm_rng_below(&rng, tasks + tasks / 10), tail);
        if (!(q[i] = malloc(cap + 128))) break;
        l[i] = (size_t)snprintf(
            q[i], cap + 128,
            "POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n%s",
            blen, body);
    }
    free(tail), free(body);
    *out = q, *lens = l, *n = k;
    return i == k ? LM_OK : lm_err_set(err, LM_ENOMEM, "out of memory");
}

static void lg_free(char **q, size_t *l, size_t n)
{
    for (size_t i = 0; q && i < n; i++) free(q[i]);
    free(q), free(l);
}

static void quiet_log(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "bench serve: server: %s\n", msg);
}

static int parse_list(const char *s, int *v, int max, int *n)
{
    *n = 0;
    while (*s && *n < max) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 1 || x > 100000) return -1;
        v[(*n)++] = (int)x;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return *n ? 0 : -1;
}

int bench_serve(int argc, char **argv)
{
    static const cli_cmd cmd = {
        "bench serve",
        "limaml bench serve [--tasks N] [--duration S] [--candidates 1,10,100] [--connections 1,8,32,128]",
        "Throughput and p50/p99 latency of `limaml serve` over loopback (wrk), with an LMDB store of\n"
        "--tasks embeddings, for several candidates per request and numbers of connections; then the\n"
        "latency at about half of each peak. The server runs in this process on a free port.",
        "Needs wrk (Debian package). Results are in docs/SERVE.md.",
    };
    const char *dir, *cands_s, *conns_s;
    uint64_t tasks, threads, wrk_threads, members;
    double duration;
    int keep;
    cli_opt opts[] = {
        {"tasks", CLI_U64, &tasks, "N", "1000000", 0, "embeddings in the store"},
        {"duration", CLI_F64, &duration, "S", "2", 0, "seconds per wrk run"},
        {"candidates", CLI_STR, &cands_s, "LIST", "1,10,100", 0, "candidates per request"},
        {"connections", CLI_STR, &conns_s, "LIST", "1,8,32,128", 0, "concurrent connections"},
        {"threads", CLI_U64, &threads, "T", "0", 0, "server threads (0: one per core)"},
        {"wrk-threads", CLI_U64, &wrk_threads, "T", "1", 0, "wrk threads"},
        {"dir", CLI_STR, &dir, "DIR", "bench-data/serve", 0, "folder for the model and the store"},
        {"keep", CLI_FLAG, &keep, NULL, NULL, 0, "keep DIR (the store is reused next time)"},
        {"members", CLI_U64, &members, "M", "1", 0,
         "serve an ensemble of M networks (limaml ensemble; the store holds M x 16 floats a task)"},
        {0},
    };
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    int cands[8], conns[8], ncands, nconns;
    if (parse_list(cands_s, cands, 8, &ncands) || parse_list(conns_s, conns, 8, &nconns))
        return cli_usage_error(&cmd, "--candidates and --connections take up to 8 numbers, e.g. 1,10,100");
    for (int i = 0; i < ncands; i++)
        if (cands[i] > 1000) return cli_usage_error(&cmd, "--candidates: at most 1000 per request");
    if (tasks < 1 || tasks > 9999999) return cli_usage_error(&cmd, "--tasks must be in [1, 9999999]");
    if (!(duration >= 1 && duration <= 60))
        return cli_usage_error(&cmd, "--duration must be in [1, 60] seconds");
    if (wrk_threads < 1 || wrk_threads > 64) return cli_usage_error(&cmd, "--wrk-threads must be in [1, 64]");
    if (members < 1 || members > 16) return cli_usage_error(&cmd, "--members must be in [1, 16]");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned nthreads = threads ? (unsigned)threads : (unsigned)(ncpu > 0 ? ncpu : 1);

    lm_err err = {0};
    char *parent = lm_path_dir(dir); /* bench-data, as `limaml bench prepare` uses; a failure shows below */
    if (parent && strcmp(parent, ".")) mkdir(parent, 0755);
    free(parent);
    if (mkdir(dir, 0755) && errno != EEXIST) {
        lm_err_errno(&err, LM_EIO, "cannot create '%s'", dir);
        return cli_fail(&err);
    }
    char model[512], url[600], script[560];
    snprintf(model, sizeof model, "%s/model.safetensors", dir);
    snprintf(url, sizeof url, "lmdb://%s/store", dir);
    snprintf(script, sizeof script, "%s/post.lua", dir);
    double t0 = lm_now();
    int rc = make_model(model, (size_t)members, &err);
    if (!rc) rc = make_store(url, tasks, 16 * (size_t)members, &err);
    if (rc) return cli_fail(&err);
    fprintf(stderr, "bench serve: model and store of %llu embeddings ready in %.1f s\n",
            (unsigned long long)tasks, lm_now() - t0);

    signal(SIGPIPE, SIG_IGN);
    lm_srv_opts so = {model, url, 1000, LM_SRV_ENGINE_FAST, nthreads, quiet_log, NULL};
    lm_srv *srv = NULL;
    lm_http *http = NULL;
    lm_http_opts ho = {"127.0.0.1:0", nthreads, 1u << 20, 10, 4096, NULL};
    rc = lm_srv_open(&srv, &so, &err);
    if (!rc) rc = lm_http_start(&http, srv, &ho, &err);
    if (rc) {
        lm_srv_close(srv);
        return cli_fail(&err);
    }
    int port = lm_http_port(http);
    char ens[64] = "";
    if (members > 1)
        snprintf(ens, sizeof ens, ", an ensemble of %llu such networks", (unsigned long long)members);
    printf("bench serve: %llu embeddings in LMDB (E=%llu), model meta mlp:32,16, global mlp:64,32%s (%s "
           "kernel), "
           "server %u threads, wrk %llu thread(s), %.0f s a run, loopback, %ld cores shared\n",
           (unsigned long long)tasks, 16 * (unsigned long long)members, ens,
           lm_srv_kernel_pick() == LM_SRV_KERNEL_AVX2 ? "avx2" : "plain", nthreads,
           (unsigned long long)wrk_threads, duration, ncpu);
    printf("\n%-11s %-12s %12s %14s %10s %10s %8s %14s\n", "candidates", "connections", "requests/s",
           "candidates/s", "p50 ms", "p99 ms", "errors", "server us/req");
    double peak[8] = {0};
    for (int i = 0; !rc && i < ncands; i++) {
        rc = write_script(script, cands[i], tasks, &err);
        for (int j = 0; !rc && j < nconns; j++) {
            wrk_result r;
            rc = run_wrk(script, port, conns[j], (int)wrk_threads, duration, &r, &err);
            if (rc) break;
            if (r.rps > peak[i]) peak[i] = r.rps;
            printf("%-11d %-12d %12.0f %14.0f %10.3f %10.3f %8llu %14.1f\n", cands[i], conns[j], r.rps,
                   r.rps * cands[i], r.p50_ms, r.p99_ms, r.errors, r.cpu_us);
            fflush(stdout);
        }
    }
    if (!rc)
        printf(
            "\nat half of the peak (open loop: request k sent at k / rate on a free one of 64 connections;\n"
            "latency from when it was due)\n%-11s %-12s %12s %14s %10s %10s %8s %14s\n",
            "candidates", "connections", "requests/s", "% of peak", "p50 ms", "p99 ms", "errors",
            "server us/req");
    for (int i = 0; !rc && i < ncands; i++) {
        char **q = NULL;
        size_t *ql = NULL, nq = 0;
        wrk_result r;
        rc = lg_requests(cands[i], tasks, &q, &ql, &nq, &err);
        if (!rc) rc = lg_run(port, q, ql, nq, peak[i] / 2, duration, 64, &r, &err);
        lg_free(q, ql, nq);
        if (!rc)
            printf("%-11d %-12d %12.0f %13.0f%% %10.3f %10.3f %8llu %14.1f\n", cands[i], 64, r.rps,
                   100 * r.rps / peak[i], r.p50_ms, r.p99_ms, r.errors, r.cpu_us);
    }
    lm_http_stop(http, 2.0);
    lm_srv_close(srv);
    if (!keep) {
        char *tmp = lm_path_join(dir, "store");
        if (tmp) lm_rmtree(tmp);
        free(tmp);
        unlink(model);
        unlink(script);
        rmdir(dir);
    }
    return rc ? cli_fail(&err) : 0;
}
