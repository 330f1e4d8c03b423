/* cmd_embed.c: `limaml embed` and `limaml store ls|get|gc|verify`. */
#include "cli/cli.h"
#include "core/core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int parse_pool(const char *s)
{
    return !strcmp(s, "latest") ? LM_POOL_LATEST
           : !strcmp(s, "mean") ? LM_POOL_MEAN
           : !strcmp(s, "max")  ? LM_POOL_MAX
           : !strcmp(s, "cos")  ? LM_POOL_COS
                                : -1;
}

static void on_progress(void *ctx, const lm_embed_progress *p)
{
    (void)ctx;
    fprintf(stderr, "\r\033[Kembed: %llu/%llu tasks, %.0f tasks/s", (unsigned long long)p->tasks_done,
            (unsigned long long)p->tasks, p->tasks_per_s);
}

int cmd_embed(int argc, char **argv)
{
    static const cli_cmd cmd = {
        "embed",
        "limaml embed --model M --data DIR --store URL --version V [--steps K --task-lr A] [options]",
        "Meta-embedding generation (Algorithm 2b): for every task, adapt a copy of the meta block with K\n"
        "SGD steps on the task's recent examples and store the adapted block's output (on the latest\n"
        "example, or pooled) as version V of the feature store, published atomically when complete.",
        "Stores: lmdb://PATH (embedded, the default kind) or redis://HOST:PORT/DB. A run that fails or\n"
        "is killed leaves the previous version serving. --only-changed-since T recomputes the tasks\n"
        "with an example after T (Unix seconds) and carries the others over from the current version.",
    };
    const char *model, *data, *url, *version, *from, *pool, *enc;
    uint64_t steps, keep, threads, chunk;
    double task_lr, window, since;
    int quiet;
    cli_opt opts[] = {
        {"model", CLI_STR, &model, "M", NULL, 1, "model file (limaml train)"},
        {"data", CLI_STR, &data, "DIR", NULL, 1, "dataset of recent examples (limaml prepare)"},
        {"store", CLI_STR, &url, "URL", NULL, 1, "lmdb://PATH or redis://HOST:PORT/DB"},
        {"version", CLI_STR, &version, "V", NULL, 1, "version name to write ([A-Za-z0-9._-], e.g. the date)"},
        {"steps", CLI_U64, &steps, "K", "the model's", 0, "adaptation steps per task"},
        {"task-lr", CLI_F64, &task_lr, "A", "the model's", 0, "adaptation learning rate"},
        {"adapt-from", CLI_STR, &from, "PART", "all", 0, "rows to adapt on: all, train+val, val or train"},
        {"window-days", CLI_F64, &window, "X", "0", 0, "only examples within X days of the newest (0: all)"},
        {"pool", CLI_STR, &pool, "P", "latest", 0, "latest, mean, max or cos (appendix A.4)"},
        {"encoding", CLI_STR, &enc, "E", "f32", 0, "stored as f32, f16 or int8 (with a per-vector scale)"},
        {"keep", CLI_U64, &keep, "N", "2", 0, "old versions kept after publishing"},
        {"only-changed-since", CLI_F64, &since, "T", "off", 0, "recompute only tasks with examples after T"},
        {"chunk", CLI_U64, &chunk, "N", "16384", 0, "tasks per store batch"},
        {"threads", CLI_U64, &threads, "N", "0", 0, "threads (0: all cores)"},
        {"quiet", CLI_FLAG, &quiet, NULL, NULL, 0, "no progress on stderr"},
        {0},
    };
    steps = UINT64_MAX;
    task_lr = -1;
    since = NAN;
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    lm_embed_opts o;
    lm_embed_opts_default(&o);
    o.version = version;
    if (steps != UINT64_MAX) {
        if (steps > 100000) return cli_usage_error(&cmd, "--steps must be at most 100000");
        o.steps = (uint32_t)steps;
    }
    if (task_lr != -1 && !(task_lr > 0)) return cli_usage_error(&cmd, "--task-lr must be > 0");
    o.task_lr = task_lr;
    if (!strcmp(from, "all"))
        o.adapt_from = LM_ADAPT_ALL;
    else if (!strcmp(from, "train+val"))
        o.adapt_from = LM_ADAPT_TRAIN_VAL;
    else if (!strcmp(from, "val"))
        o.adapt_from = LM_ADAPT_VAL;
    else if (!strcmp(from, "train"))
        o.adapt_from = LM_ADAPT_TRAIN;
    else
        return cli_usage_error(&cmd, "--adapt-from must be all, train+val, val or train, not '%s'", from);
    if (!(window >= 0)) return cli_usage_error(&cmd, "--window-days must be >= 0");
    o.window_days = window;
    if ((o.pool = parse_pool(pool)) < 0)
        return cli_usage_error(&cmd, "--pool must be latest, mean, max or cos, not '%s'", pool);
    lm_err err = {0};
    if (lm_store_enc_parse(enc, &o.encoding, &err)) return cli_usage_error(&cmd, "--encoding: %s", err.msg);
    if (keep > 1000) return cli_usage_error(&cmd, "--keep must be at most 1000");
    o.keep = (uint32_t)keep;
    if (!isnan(since)) o.only_changed = 1, o.changed_since = since;
    if (chunk < 1 || chunk > (1u << 24)) return cli_usage_error(&cmd, "--chunk must be in [1, 16777216]");
    o.chunk = chunk;
    o.threads = (int)threads;
    if (!quiet && isatty(2)) o.progress = on_progress;
    lm_model *m;
    if (lm_model_load(&m, model, &err)) return cli_fail(&err);
    lm_dataset *ds = NULL;
    lm_store *s = NULL;
    int rc = lm_dataset_open(&ds, data, 0, &err);
    if (!rc) rc = lm_store_open(&s, url, LM_STORE_CREATE, &err);
    lm_embed_report rep;
    if (!rc) rc = lm_embed(m, ds, s, &o, &rep, &err);
    if (o.progress) fprintf(stderr, "\n");
    if (!rc)
        printf("embed: published version %s of %s: %llu embeddings (%llu computed, %llu carried over of "
               "which %llu "
               "absent from the dataset, %llu tasks without rows left out) in %.2f s, %.0f tasks/s\n",
               version, lm_store_url(s), (unsigned long long)rep.written, (unsigned long long)rep.computed,
               (unsigned long long)rep.carried, (unsigned long long)rep.carried_absent,
               (unsigned long long)rep.empty, rep.seconds, rep.tasks_per_s);
    lm_store_close(s);
    lm_dataset_close(ds);
    lm_model_free(m);
    return rc ? cli_fail(&err) : 0;
}

static void print_version(const lm_store_version *v)
{
    char when[32] = "-";
    if (v->published) {
        time_t t = (time_t)v->published;
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    }
    printf("%-24s %s %-9s E=%-4u %-5s %10llu keys  published %s  model %s\n", v->name, v->current ? "*" : " ",
           v->complete ? "complete" : "partial", v->dim, lm_store_enc_name(v->encoding),
           (unsigned long long)v->count, when, v->model_id);
}

int cmd_store(int argc, char **argv)
{
    static const cli_cmd cmd = {
        "store",
        "limaml store ls|get|gc|verify --store URL [--key KEY] [--version V] [--keep N] [--dim E]",
        "Inspect and clean a feature store: `ls` lists versions (* marks the current one), `get`\n"
        "prints one task's vector as JSON, `gc` removes old and half-written versions, `verify`\n"
        "checks every value of a version (exit 1 when anything is wrong).",
        "A composite task key joins its columns' values with '|' (e.g. 42|Drama).",
    };
    const char *url, *key, *version;
    uint64_t keep;
    cli_opt opts[] = {
        {"store", CLI_STR, &url, "URL", NULL, 1, "lmdb://PATH or redis://HOST:PORT/DB"},
        {"key", CLI_STR, &key, "KEY", NULL, 0, "get: the task key"},
        {"version", CLI_STR, &version, "V", NULL, 0, "get, verify: the version (default: the current one)"},
        {"keep", CLI_U64, &keep, "N", "2", 0, "gc: complete versions kept besides the current one"},
        {0},
    };
    cli_list pos;
    int pr = cli_parse(&cmd, opts, argc, argv, &pos);
    if (pr) return pr == 1 ? 0 : 2;
    const char *what = pos.n == 1 ? pos.v[0] : NULL;
    free(pos.v);
    if (!what || (strcmp(what, "ls") && strcmp(what, "get") && strcmp(what, "gc") && strcmp(what, "verify")))
        return cli_usage_error(&cmd, "expected one of ls, get, gc, verify");
    if (!strcmp(what, "get") && !key) return cli_usage_error(&cmd, "get needs --key KEY");
    lm_err err = {0};
    lm_store *s;
    int ro = strcmp(what, "gc") != 0;
    if (lm_store_open(&s, url, ro ? LM_STORE_READONLY : 0, &err)) return cli_fail(&err);
    int rc = LM_OK;
    if (!strcmp(what, "ls")) {
        lm_store_version *v = NULL;
        size_t n = 0;
        rc = lm_store_list(s, &v, &n, &err);
        for (size_t i = 0; !rc && i < n; i++) print_version(&v[i]);
        if (!rc && n == 0) printf("(no versions)\n");
        free(v);
    } else if (!strcmp(what, "get")) {
        lm_store_version cur;
        rc = version ? LM_OK : lm_store_current(s, &cur, &err);
        size_t dim = 0;
        if (!rc && version) {
            lm_store_version *v = NULL;
            size_t n = 0;
            rc = lm_store_list(s, &v, &n, &err);
            for (size_t i = 0; !rc && i < n; i++)
                if (!strcmp(v[i].name, version)) dim = v[i].dim;
            free(v);
            if (!rc && !dim) rc = lm_err_set(&err, LM_ENOTFOUND, "%s: no version '%s'", url, version);
        } else if (!rc) {
            dim = cur.dim;
        }
        char *k = rc ? NULL : strdup(key);
        for (char *c = k; c && *c; c++)
            if (*c == '|') *c = LM_KEY_SEP;
        float *vec = rc ? NULL : malloc(dim * sizeof(float));
        int found = 0;
        if (!rc && (!k || !vec)) rc = lm_err_set(&err, LM_ENOMEM, "out of memory");
        if (!rc)
            rc = version ? lm_store_get_version(s, version, k, strlen(k), vec, dim, &found, &err)
                         : lm_store_get(s, k, strlen(k), vec, dim, &found, &err);
        if (!rc && !found)
            rc = lm_err_set(&err, LM_ENOTFOUND, "%s: no task '%s' in version %s", url, key,
                            version ? version : cur.name);
        if (!rc) {
            printf("{\"task\":\"%s\",\"version\":\"%s\",\"embedding\":[", key, version ? version : cur.name);
            for (size_t i = 0; i < dim; i++) printf("%s%.9g", i ? "," : "", vec[i]);
            printf("]}\n");
        }
        free(k), free(vec);
    } else if (!strcmp(what, "gc")) {
        size_t removed = 0;
        rc = lm_store_gc(s, keep > 1000 ? 1000 : (uint32_t)keep, &removed, &err);
        if (!rc) printf("store gc: removed %zu versions\n", removed);
    } else {
        lm_store_verify_report r;
        rc = lm_store_verify(s, version, &r, &err);
        printf("store verify %s: %llu keys, %llu bad sizes, %llu bad values, %llu bad keys, record %s%s%s\n",
               r.version.name, (unsigned long long)r.keys, (unsigned long long)r.bad_size,
               (unsigned long long)r.bad_value, (unsigned long long)r.bad_key, r.meta_ok ? "ok" : "BAD",
               r.first_problem[0] ? ": " : "", r.first_problem);
    }
    lm_store_close(s);
    return rc ? cli_fail(&err) : 0;
}
