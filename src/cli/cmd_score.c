/* cmd_score.c: `limaml score`: score a file of requests offline through the server's own
 * request path (lm_srv_handle_score), so every reply equals what `limaml serve` answers for
 * the same request and store, byte for byte. */
#include "cli/cli.h"
#include "serve/serve.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void log_line(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "limaml score: %s\n", msg);
}

int cmd_score(int argc, char **argv)
{
    static const cli_cmd cmd = {
        "score",
        "limaml score --model M --store URL --in FILE --out FILE [options]",
        "Score a file of requests offline with the server's code path: each line of --in is one\n"
        "POST /v1/score body (JSON), each line of --out its reply, as `limaml serve` would answer.",
        "'-' reads standard input or writes standard output. The output file is written under a\n"
        "temporary name and renamed into place when every line is scored. A bad request line stops\n"
        "the run with its line number and the reply's message, unless --keep-going, which writes\n"
        "the error reply ({\"error\": ..., \"field\": ...}) as that line's output.",
    };
    const char *model, *url, *in, *out, *engine;
    uint64_t max_cand;
    int keep_going, quiet;
    cli_opt opts[] = {
        {"model", CLI_STR, &model, "M", NULL, 1, "model file (limaml train)"},
        {"store", CLI_STR, &url, "URL", NULL, 1, "lmdb://PATH or redis://HOST:PORT/DB"},
        {"in", CLI_STR, &in, "FILE", NULL, 1, "requests, one JSON object a line ('-': stdin)"},
        {"out", CLI_STR, &out, "FILE", NULL, 1, "replies, one a line ('-': stdout)"},
        {"max-candidates", CLI_U64, &max_cand, "N", "1000", 0, "candidates per request"},
        {"engine", CLI_STR, &engine, "E", "fast", 0, "fast or reference"},
        {"keep-going", CLI_FLAG, &keep_going, NULL, NULL, 0, "write error replies instead of stopping"},
        {"quiet", CLI_FLAG, &quiet, NULL, NULL, 0, "no summary on stderr"},
        {0},
    };
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    if (max_cand < 1 || max_cand > 1000000)
        return cli_usage_error(&cmd, "--max-candidates must be in [1, 1000000]");
    int eng = !strcmp(engine, "fast")        ? LM_SRV_ENGINE_FAST
              : !strcmp(engine, "reference") ? LM_SRV_ENGINE_REFERENCE
                                             : -1;
    if (eng < 0) return cli_usage_error(&cmd, "--engine must be fast or reference, not '%s'", engine);

    lm_err err = {0};
    FILE *fin = !strcmp(in, "-") ? stdin : fopen(in, "rb");
    if (!fin) {
        lm_err_errno(&err, LM_EIO, "cannot open '%s'", in);
        return cli_fail(&err);
    }
    lm_srv_opts so = {model, url, (size_t)max_cand, eng, 1, log_line, NULL};
    lm_srv *srv;
    if (lm_srv_open(&srv, &so, &err) != LM_OK) {
        if (fin != stdin) fclose(fin);
        return cli_fail(&err);
    }
    char *tmp = NULL;
    FILE *fout = stdout;
    if (strcmp(out, "-")) {
        size_t n = strlen(out) + 32;
        tmp = malloc(n);
        if (tmp) snprintf(tmp, n, "%s.tmp.%ld", out, (long)getpid());
        fout = tmp ? fopen(tmp, "wb") : NULL;
        if (!fout) {
            lm_err_errno(&err, LM_EIO, "cannot create '%s'", tmp ? tmp : out);
            free(tmp);
            lm_srv_close(srv);
            if (fin != stdin) fclose(fin);
            return cli_fail(&err);
        }
    }
    lm_srv_ws w = {0};
    char *line = NULL;
    size_t cap = 0, lineno = 0, requests = 0, bad = 0;
    ssize_t len;
    int rc = LM_OK;
    double t0 = lm_now();
    uint64_t cand0 = atomic_load(&srv->metrics.candidates);
    while ((len = getline(&line, &cap, fin)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        size_t sp = 0;
        while (sp < (size_t)len && (line[sp] == ' ' || line[sp] == '\t')) sp++;
        if (sp == (size_t)len) continue; /* blank lines are skipped, as JSON-lines readers do */
        int status = lm_srv_handle_score(srv, &w, line, (size_t)len);
        requests++;
        if (status != 200) {
            bad++;
            if (!keep_going) {
                rc = lm_err_set(&err, LM_EINVAL, "%s:%zu: %d %s", in, lineno, status, w.out.p ? w.out.p : "");
                break;
            }
        }
        if (fwrite(w.out.p, 1, w.out.len, fout) != w.out.len || fputc('\n', fout) == EOF) {
            rc = lm_err_errno(&err, LM_EIO, "writing '%s'", out);
            break;
        }
    }
    if (rc == LM_OK && ferror(fin)) rc = lm_err_errno(&err, LM_EIO, "reading '%s'", in);
    if (fin != stdin) fclose(fin);
    if (tmp) {
        if (fclose(fout) != 0 && rc == LM_OK) rc = lm_err_errno(&err, LM_EIO, "writing '%s'", out);
        if (rc == LM_OK && rename(tmp, out) != 0)
            rc = lm_err_errno(&err, LM_EIO, "renaming '%s' to '%s'", tmp, out);
        if (rc != LM_OK) unlink(tmp);
    } else if (fflush(fout) != 0 && rc == LM_OK) {
        rc = lm_err_errno(&err, LM_EIO, "writing standard output");
    }
    if (rc == LM_OK && !quiet) {
        lm_srv_metrics *m = &srv->metrics;
        uint64_t cold = 0;
        for (int r = 1; r < LM_COLD_COUNT; r++) cold += atomic_load(&m->cold[r]);
        double s = lm_now() - t0;
        fprintf(stderr, "score: %zu requests (%zu refused), %llu candidates, %llu cold starts, in %.3f s\n",
                requests, bad, (unsigned long long)(atomic_load(&m->candidates) - cand0),
                (unsigned long long)cold, s);
    }
    free(line);
    free(tmp);
    lm_srv_ws_free(&w);
    lm_srv_close(srv);
    return rc != LM_OK ? cli_fail(&err) : 0;
}
