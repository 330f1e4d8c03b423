/* http.c: the HTTP/1.1 front end over libmicrohttpd (GNU; epoll, a thread pool, keep-alive,
 * connection timeouts, Expect: 100-continue, chunked bodies, all in a maintained C library).
 *
 * Routes (docs/openapi.yaml):
 *   POST /v1/score        score candidates             (token when --token)
 *   POST /v1/embedding    one task's stored vector     (token)
 *   GET  /healthz         liveness and what is served  (never a token)
 *   GET  /metrics         Prometheus text              (token)
 *   POST /admin/reload    reload the model file        (token; loopback clients only)
 *
 * Each of the pool's threads owns its lm_srv_ws (a pthread key, freed when the thread ends), so
 * a request allocates nothing of ours but its reply copy. A connection keeps its body buffer
 * across its keep-alive requests. A body is checked against --max-body from Content-Length
 * before it is read (413 at once) and while it streams (chunked: 413 at its end). */
#include "serve/serve.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#ifdef LM_HAVE_MHD

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

struct lm_http {
    struct MHD_Daemon *d;
    lm_srv *srv;
    lm_http_opts o;
    char *token;
    int port;
    pthread_key_t key;
    atomic_long active; /* requests between their headers and their completion */
};

/* One TCP connection: its body buffer serves every request it carries. */
typedef struct conn {
    char *body;
    size_t len, cap;
    int too_big, endpoint;
    double t0;
} conn;

/* ---- per-thread scratch ---------------------------------------------------------------------- */

static void ws_destroy(void *p)
{
    lm_srv_ws_free(p);
    free(p);
}

static lm_srv_ws *thread_ws(lm_http *h)
{
    lm_srv_ws *w = pthread_getspecific(h->key);
    if (!w && (w = calloc(1, sizeof *w)) && pthread_setspecific(h->key, w)) {
        free(w);
        w = NULL;
    }
    return w;
}

/* ---- replies ----------------------------------------------------------------------------------- */

static enum MHD_Result send_text(lm_http *h, struct MHD_Connection *c, conn *k, int status, const char *text,
                                 size_t len, const char *ctype, const char *hname, const char *hval)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (hname) MHD_add_response_header(r, hname, hval);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    lm_srv_metrics_request(&h->srv->metrics, k->endpoint, status);
    if (k->endpoint == LM_EP_SCORE) lm_srv_metrics_latency(&h->srv->metrics, lm_now() - k->t0);
    return ret;
}

static enum MHD_Result send_buf(lm_http *h, struct MHD_Connection *c, conn *k, int status,
                                const lm_srv_buf *b, const char *ctype)
{
    return send_text(h, c, k, status, b->p ? b->p : "", b->len, ctype, NULL, NULL);
}

/* An error without the thread's scratch (it may be what failed). */
static enum MHD_Result send_error(lm_http *h, struct MHD_Connection *c, conn *k, int status,
                                  const char *field, const char *hname, const char *hval, const char *fmt,
                                  ...) __attribute__((format(printf, 8, 9)));
static enum MHD_Result send_error(lm_http *h, struct MHD_Connection *c, conn *k, int status,
                                  const char *field, const char *hname, const char *hval, const char *fmt,
                                  ...)
{
    lm_srv_err e;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lm_srv_fail(&e, status, field, "%s", msg);
    lm_srv_buf b = {0};
    lm_srv_buf_error(&b, &e);
    enum MHD_Result ret = send_text(h, c, k, status, b.p && !b.oom ? b.p : "{\"error\":\"\",\"field\":\"\"}",
                                    b.p && !b.oom ? b.len : 22, "application/json", hname, hval);
    lm_srv_buf_free(&b);
    return ret;
}

/* ---- checks ------------------------------------------------------------------------------------ */

static int route(const char *url, const char *method, const char **allow)
{
    static const struct {
        const char *url, *method;
        int ep;
    } t[] = {{"/v1/score", "POST", LM_EP_SCORE},
             {"/v1/embedding", "POST", LM_EP_EMBEDDING},
             {"/healthz", "GET", LM_EP_HEALTHZ},
             {"/metrics", "GET", LM_EP_METRICS},
             {"/admin/reload", "POST", LM_EP_RELOAD}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(url, t[i].url)) {
            int get = !strcmp(t[i].method, "GET");
            *allow = get ? "GET, HEAD" : "POST";
            int fits = !strcmp(method, t[i].method) || (get && !strcmp(method, "HEAD"));
            return fits ? t[i].ep : -t[i].ep - 1;
        }
    *allow = NULL;
    return LM_EP_OTHER;
}

/* Compare in time independent of where the first difference is. */
static int token_ok(const lm_http *h, struct MHD_Connection *c)
{
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a || strncasecmp(a, "Bearer ", 7)) return 0;
    a += 7;
    size_t n = strlen(a), m = strlen(h->token);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < m; i++) diff |= (unsigned char)h->token[i] ^ (unsigned char)(i < n ? a[i] : 0);
    return diff == 0;
}

static int is_loopback(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return 0;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a)) return 1;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

/* ---- the request handler ------------------------------------------------------------------- */

static enum MHD_Result dispatch(lm_http *h, struct MHD_Connection *c, conn *k)
{
    lm_srv_ws *w = thread_ws(h);
    if (!w) return send_error(h, c, k, 500, "", NULL, NULL, "out of memory");
    int status;
    switch (k->endpoint) {
    case LM_EP_SCORE: status = lm_srv_handle_score(h->srv, w, k->body, k->len); break;
    case LM_EP_EMBEDDING: status = lm_srv_handle_embedding(h->srv, w, k->body, k->len); break;
    case LM_EP_HEALTHZ: status = lm_srv_handle_health(h->srv, w); break;
    case LM_EP_RELOAD: status = lm_srv_handle_reload(h->srv, w); break;
    default:
        status = lm_srv_handle_metrics(h->srv, w);
        return send_buf(h, c, k, status, &w->out, "text/plain; version=0.0.4; charset=utf-8");
    }
    return send_buf(h, c, k, status, &w->out, "application/json");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size,
                                  void **req_cls)
{
    lm_http *h = cls;
    (void)version;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn *k = ci ? ci->socket_context : NULL;
    if (!k) return MHD_NO;
    if (*req_cls == NULL) { /* the headers are in: decide whether to read a body */
        *req_cls = k;
        atomic_fetch_add(&h->active, 1);
        k->len = 0, k->too_big = 0, k->t0 = lm_now();
        const char *allow;
        int ep = route(url, method, &allow);
        k->endpoint = ep < 0 ? -ep - 1 : ep;
        if (ep == LM_EP_OTHER)
            return send_error(h, c, k, 404, "", NULL, NULL, "no such endpoint: %.100s", url);
        if (ep < 0)
            return send_error(h, c, k, 405, "", MHD_HTTP_HEADER_ALLOW, allow, "%s takes %s, not %.20s", url,
                              allow, method);
        if (h->token && ep != LM_EP_HEALTHZ && !token_ok(h, c))
            return send_error(h, c, k, 401, "", MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"limaml\"",
                              "a bearer token is required (Authorization: Bearer TOKEN)");
        if (ep == LM_EP_RELOAD && !is_loopback(c))
            return send_error(h, c, k, 403, "", NULL, NULL, "/admin/reload answers loopback clients only");
        if (ep == LM_EP_HEALTHZ || ep == LM_EP_METRICS) return dispatch(h, c, k);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > h->o.max_body)
            return send_error(h, c, k, 413, "body", NULL, NULL,
                              "%s bytes is over the limit of %zu (--max-body)", cl, h->o.max_body);
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        size_t n = *upload_size;
        *upload_size = 0;
        if (k->too_big || k->len + n > h->o.max_body) {
            k->too_big = 1;
            return MHD_YES;
        }
        if (k->len + n > k->cap) {
            size_t cap = k->cap ? k->cap : 4096;
            while (cap < k->len + n) cap *= 2;
            char *p = realloc(k->body, cap);
            if (!p) return MHD_NO;
            k->body = p, k->cap = cap;
        }
        memcpy(k->body + k->len, upload, n);
        k->len += n;
        return MHD_YES;
    }
    if (k->too_big)
        return send_error(h, c, k, 413, "body", NULL, NULL,
                          "the body is over the limit of %zu bytes (--max-body)", h->o.max_body);
    return dispatch(h, c, k);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    lm_http *h = cls;
    (void)c, (void)toe;
    if (*req_cls) {
        atomic_fetch_sub(&h->active, 1);
        conn *k = *req_cls;
        if (k->cap > (256u << 10)) { /* a big body: give the memory back */
            free(k->body);
            k->body = NULL, k->cap = 0;
        }
        *req_cls = NULL;
    }
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)cls, (void)c;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = calloc(1, sizeof(conn));
    } else if (*socket_context) {
        conn *k = *socket_context;
        free(k->body);
        free(k);
        *socket_context = NULL;
    }
}

static void on_log(void *cls, const char *fm, va_list ap)
{
    lm_http *h = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fm, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    lm_srv_log(h->srv, "http: %s", msg);
}

/* ---- start and stop ---------------------------------------------------------------------------- */

/* "127.0.0.1:8080", "[::1]:8080", "localhost:0" into a socket address. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, int *v6, lm_err *err)
{
    char host[128];
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return lm_err_set(err, LM_EINVAL, "--listen '%s': expected [ADDRESS]:PORT", s);
        snprintf(host, sizeof host, "%.*s", (int)(rb - s - 1), s + 1);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return lm_err_set(err, LM_EINVAL, "--listen '%s': expected HOST:PORT", s);
        snprintf(host, sizeof host, "%.*s", (int)(colon - s), s);
    }
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (!colon[1] || *end || port > 65535) return lm_err_set(err, LM_EINVAL, "--listen '%s': bad port", s);
    memset(ss, 0, sizeof *ss);
    if (!strcmp(host, "localhost")) snprintf(host, sizeof host, "127.0.0.1");
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        *v6 = 0;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *v6 = 1;
    } else {
        return lm_err_set(err, LM_EINVAL, "--listen '%s': '%s' is not a numeric IP address (or localhost)", s,
                          host);
    }
    return LM_OK;
}

int lm_http_start(lm_http **out, lm_srv *srv, const lm_http_opts *o, lm_err *err)
{
    *out = NULL;
    struct sockaddr_storage ss;
    int v6 = 0;
    int rc = parse_listen(o->listen, &ss, &v6, err);
    if (rc != LM_OK) return rc;
    lm_http *h = calloc(1, sizeof *h);
    if (!h) return lm_err_set(err, LM_ENOMEM, "serve: out of memory");
    h->srv = srv;
    h->o = *o;
    atomic_init(&h->active, 0);
    if (o->token && !(h->token = lm_strdup(o->token))) {
        free(h);
        return lm_err_set(err, LM_ENOMEM, "serve: out of memory");
    }
    if (pthread_key_create(&h->key, ws_destroy)) {
        free(h->token);
        free(h);
        return lm_err_set(err, LM_ENOMEM, "serve: no thread-local key left");
    }
    unsigned flags =
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    /* clang-format off */
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h,
                            MHD_OPTION_EXTERNAL_LOGGER, on_log, h, /* first, so every message goes there */
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(o->threads ? o->threads : 1),
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->timeout_s,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)(o->max_connections ? o->max_connections
                                                                                        : 1024),
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64u << 10),
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                            MHD_OPTION_END);
    /* clang-format on */
    if (!h->d) {
        pthread_key_delete(h->key);
        free(h->token);
        free(h);
        return lm_err_set(
            err, LM_EIO, "serve: cannot listen on %s (in use, or not an address of this machine)", o->listen);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : 0;
    *out = h;
    return LM_OK;
}

int lm_http_port(const lm_http *h)
{
    return h->port;
}

void lm_http_stop(lm_http *h, double drain_s)
{
    if (!h) return;
    MHD_socket fd = MHD_quiesce_daemon(h->d); /* no new connections from here on */
    double until = lm_now() + drain_s;
    while (atomic_load(&h->active) > 0 && lm_now() < until) usleep(5000);
    MHD_stop_daemon(h->d);                   /* joins the pool's threads: their scratch is freed by the key */
    if (fd != MHD_INVALID_SOCKET) close(fd); /* ours to close, once the threads are gone */
    pthread_key_delete(h->key);
    free(h->token);
    free(h);
}

#else /* built without libmicrohttpd */

struct lm_http {
    int unused;
};

int lm_http_start(lm_http **out, lm_srv *srv, const lm_http_opts *o, lm_err *err)
{
    (void)srv, (void)o;
    *out = NULL;
    return lm_err_set(err, LM_ENOTFOUND,
                      "serve: this build has no HTTP server (libmicrohttpd was not found)");
}

int lm_http_port(const lm_http *h)
{
    (void)h;
    return 0;
}

void lm_http_stop(lm_http *h, double drain_s)
{
    (void)h, (void)drain_s;
}

#endif
