/* cmd_bench_embed.c: `limaml bench embed`: meta-embedding generation (Algorithm 2b) into the
 * feature store, tasks per second for each k on LMDB and Redis, the store's bytes per task and
 * the embedding process's memory; beside it, the same algorithm vectorized in PyTorch
 * (tools/torch_embed_bench.py) on the same tasks, model, k and thread count, checked to give
 * the same embeddings; then one large run end to end (wall time, peak memory). */
#include "cli/cli.h"
#include "core/core.h"
#include "meta/model.h"
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef LM_SOURCE_DIR
#define LM_SOURCE_DIR "."
#endif

static const cli_cmd cmd = {
    "bench embed",
    "limaml bench embed [--tasks N] [--steps 1,5] [--backends lmdb,redis] [--runs R] [--big-tasks N] "
    "[options]",
    "Meta-embedding generation (Algorithm 2b, `limaml embed`) on synthetic tasks: tasks per second\n"
    "for each k and store (median of R runs), the store's bytes per task and the embedding\n"
    "process's peak memory; the same algorithm vectorized in PyTorch on the same tasks and model\n"
    "with the same threads, and the ratio; then one run of --big-tasks tasks into LMDB end to end.",
    "Data: `limaml synth --tasks N` (default options) prepared into DIR/embed-N, reused when there.\n"
    "Model (--model unset): the default network (meta mlp:32,16, global mlp:64,32, k = 1, alpha\n"
    "0.1) initialised as `limaml train` starts it with its defaults (seed 1), untrained: the\n"
    "weights do not change the cost. --model must be one network, not an ensemble (`limaml embed`\n"
    "computes an ensemble's members one after the other: n members cost n times one's). Each run\n"
    "is `limaml embed` in its own process into an empty store: LMDB in DIR/store-lmdb (bytes/task:\n"
    "data.mdb's size / tasks), Redis on a server this command starts on 127.0.0.1 with\n"
    "scripts/redis-test-server.sh and stops at the end (bytes/task: used_memory's growth / tasks;\n"
    "the server shares the cores). Memory: peak resident (file\n"
    "maps included) and peak anonymous (sampled every 20 ms: resident less file-backed, i.e.\n"
    "beyond the dataset's and the store's memory maps); cpu s: the process's user + system CPU\n"
    "seconds (the machine may be shared: wall time says how many cores a run got). PyTorch\n"
    "(tools/torch_embed_bench.py, python from --python or LM_PYREF_PYTHON): the first --torch-tasks\n"
    "tasks, from rows in memory to embeddings, no store, one pass after each of our runs of a k;\n"
    "its embeddings of the first --sample tasks are compared with\n"
    "`limaml adapt`'s (equal to the store's bit for bit). Ratio: ours into LMDB / PyTorch.\n"
    "Bounded: with the defaults about 8 minutes on 2 free cores the first time (4 minutes of it\n"
    "making the 10 M task dataset: about 14 GB of CSV, deleted after, and 12 GB prepared, kept in\n"
    "DIR), about 5 once the datasets are there; a shared machine stretches the wall time.",
};

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A comma list of positive integers into v (at most max); the count, or -1. */
static int parse_u64_list(const char *s, uint64_t *v, int max)
{
    int n = 0;
    while (*s) {
        char *e;
        unsigned long long x = strtoull(s, &e, 10);
        if (e == s || n == max || (*e && *e != ',')) return -1;
        v[n++] = x;
        s = *e == ',' ? e + 1 : e;
    }
    return n;
}

/* ============================================================================================
 * the dataset and the model
 * ========================================================================================== */

/* DIR/embed-N: `limaml synth --tasks N` prepared; made when missing (the CSV deleted after). */
static int ensure_dataset(const char *dir, uint64_t tasks, char *out, size_t outlen, lm_err *err)
{
    snprintf(out, outlen, "%s/embed-%llu", dir, (unsigned long long)tasks);
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.complete", out);
    if (access(probe, F_OK) == 0) return LM_OK;
    char log[4200], sp[4300];
    snprintf(log, sizeof log, "%s.csv", out);
    snprintf(sp, sizeof sp, "%s.schema.json", log);
    lm_synth_opts so;
    lm_synth_opts_default(&so);
    so.tasks = tasks;
    lm_synth_summary ss;
    lm_schema *sc = NULL;
    lm_prepare_opts po;
    lm_prepare_opts_default(&po);
    po.force = 1;
    lm_prepare_summary sum;
    const char *in[1] = {log};
    double t0 = lm_now();
    fprintf(stderr, "bench embed: writing %s (limaml synth --tasks %llu)...\n", log,
            (unsigned long long)tasks);
    int rc = lm_synth(log, &so, &ss, err);
    double t1 = lm_now();
    if (!rc) fprintf(stderr, "bench embed: %.1f s; preparing %s...\n", t1 - t0, out);
    if (!rc) rc = lm_schema_load(&sc, sp, err);
    if (!rc) rc = lm_prepare(sc, in, 1, out, &po, &sum, err);
    lm_schema_free(sc);
    unlink(log);
    unlink(sp);
    if (!rc) {
        fprintf(stderr, "bench embed: prepared %llu rows in %.1f s\n", (unsigned long long)sum.rows_read,
                lm_now() - t1);
        FILE *f = fopen(probe, "w");
        if (f) fclose(f);
    }
    return rc;
}

/* The default network for the dataset's schema with the parameters `limaml train` starts from
 * (its defaults: LiMAML, mlp:32,16 / mlp:64,32, k = 1, alpha = 0.1, seed 1), saved to path. */
static int write_init_model(const lm_dataset *ds, const char *path, lm_err *err)
{
    lm_train_opts to;
    lm_train_opts_default(&to);
    lm_net_config c;
    lm_net_config_default(&c);
    int rc = lm_net_config_from_schema(&c, lm_dataset_schema(ds), err);
    if (!rc) rc = lm_net_config_parse_blocks(&c, to.meta_block, to.global_block, err);
    lm_net net;
    lm_model *m = NULL;
    if (!rc) rc = lm_net_init(&net, &c, err);
    if (!rc) rc = lm_model_new(&m, &net, LM_TRAIN_LIMAML, lm_dataset_schema(ds), err);
    if (!rc) {
        m->inner_steps = to.inner_steps;
        m->task_lr = to.task_lr;
        lm_rng rng;
        lm_rng_seed(&rng, to.seed);
        lm_net_params_init_f32(&net, m->theta_m, m->theta_g, &rng);
        rc = lm_model_save(m, path, err);
    }
    lm_model_free(m);
    return rc;
}

/* ============================================================================================
 * one `limaml embed` in its own process, its memory sampled from outside
 * ========================================================================================== */

typedef struct embed_result {
    double tasks_per_s, seconds; /* lm_embed's own: begin a version .. publish */
    double wall;                 /* the process: start to exit (model load, dataset open too) */
    double cpu;                  /* the process's user + system CPU seconds: on a shared machine
                                  * the wall time says how many cores it got, this what it needed */
    uint64_t written;
    double peak_rss, peak_anon; /* bytes */
} embed_result;

/* Resident and file-backed pages of a process (statm: size resident shared ...), in bytes. */
static int read_statm(pid_t pid, double *resident, double *shared)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/statm", (int)pid);
    FILE *f = fopen(p, "r");
    unsigned long long sz, res, sh;
    int ok = f && fscanf(f, "%llu %llu %llu", &sz, &res, &sh) == 3;
    if (f) fclose(f);
    if (!ok) return -1;
    double pg = (double)sysconf(_SC_PAGESIZE);
    *resident = (double)res * pg, *shared = (double)sh * pg;
    return 0;
}

static int run_embed(const char *model, const char *data, const char *url, uint64_t k, int threads,
                     embed_result *r)
{
    memset(r, 0, sizeof *r);
    char ks[32], ts[32];
    snprintf(ks, sizeof ks, "%llu", (unsigned long long)k);
    snprintf(ts, sizeof ts, "%d", threads);
    char *argv[] = {"limaml",    "embed",     "--model",   (char *)model, "--data",  (char *)data,
                    "--store",   (char *)url, "--version", "bench",       "--steps", ks,
                    "--threads", ts,          "--quiet",   NULL};
    int pipefd[2];
    if (pipe(pipefd) != 0) return -1;
    fflush(NULL);
    double t0 = lm_now();
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]), close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        close(pipefd[0]);
        dup2(pipefd[1], 1);
        execv("/proc/self/exe", argv);
        _exit(127);
    }
    close(pipefd[1]);
    /* The child's stdout is read as it comes (a full pipe would stop it); the summary line is
     * the first 4 KiB, anything after it is drained and dropped. */
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    char out[4096], sink[4096];
    size_t nout = 0;
    int status = 0;
    struct rusage ru;
    for (;;) {
        ssize_t got;
        while ((got = read(pipefd[0], nout < sizeof out - 1 ? out + nout : sink,
                           nout < sizeof out - 1 ? sizeof out - 1 - nout : sizeof sink)) > 0)
            if (nout < sizeof out - 1) nout += (size_t)got;
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid) break;
        if (w < 0) {
            close(pipefd[0]);
            return -1;
        }
        double res, sh;
        if (read_statm(pid, &res, &sh) == 0) r->peak_anon = fmax(r->peak_anon, res - sh);
        nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    }
    r->wall = lm_now() - t0;
    ssize_t got;
    while (nout < sizeof out - 1 && (got = read(pipefd[0], out + nout, sizeof out - 1 - nout)) > 0)
        nout += (size_t)got;
    close(pipefd[0]);
    out[nout] = 0;
    r->peak_rss = (double)ru.ru_maxrss * 1024;
    r->cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
             (double)ru.ru_stime.tv_usec * 1e-6;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
    /* "embed: published version bench of URL: N embeddings (...) in S s, T tasks/s" */
    const char *e = strstr(out, " embeddings ("), *in = strstr(out, ") in ");
    unsigned long long w = 0;
    if (!e || !in) return -1;
    while (e > out && e[-1] >= '0' && e[-1] <= '9') e--;
    if (sscanf(e, "%llu", &w) != 1 ||
        sscanf(in, ") in %lf s, %lf tasks/s", &r->seconds, &r->tasks_per_s) != 2)
        return -1;
    r->written = w;
    return 0;
}

/* ============================================================================================
 * Redis: a server of our own on loopback
 * ========================================================================================== */

/* Run a shell command and return its first line of output (NULL on failure). */
static int shell_line(const char *cmdline, char *line, size_t len)
{
    FILE *p = popen(cmdline, "r");
    if (!p) return -1;
    line[0] = 0;
    char buf[512];
    int got = 0;
    while (fgets(buf, sizeof buf, p))
        if (!got++) {
            size_t l = strnlen(buf, len - 1);
            memcpy(line, buf, l);
            line[l] = 0;
        }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static double redis_used_memory(int port)
{
    char c[256], line[256];
    snprintf(c, sizeof c, "redis-cli -h 127.0.0.1 -p %d info memory | grep '^used_memory:' | cut -d: -f2",
             port);
    if (shell_line(c, line, sizeof line) != 0 || !line[0]) return NAN;
    return atof(line);
}

static int redis_flush(int port)
{
    char c[256], line[256];
    snprintf(c, sizeof c, "redis-cli -h 127.0.0.1 -p %d flushall sync", port);
    return shell_line(c, line, sizeof line) == 0 && !strncmp(line, "OK", 2) ? 0 : -1;
}

/* ============================================================================================
 * PyTorch: the first T tasks' rows and our embeddings of the first S, then the script
 * ========================================================================================== */

static int write_torch_input(const char *path, const lm_model *m, const lm_dataset *ds, uint64_t T,
                             uint64_t S, const uint64_t *ks, int nk, lm_err *err)
{
    size_t nm = lm_dataset_nmeta(ds), nd = lm_dataset_ndense(ds), nc = lm_dataset_ncat(ds),
           E = lm_model_emb_dim(m);
    uint64_t R = 0;
    for (uint64_t t = 0; t < T; t++) R += lm_dataset_task(ds, t)->n;
    float *meta = malloc((R * nm + 1) * sizeof(float)), *dense = malloc((R * nd + 1) * sizeof(float));
    float *label = malloc((R + 1) * sizeof(float)), *ours = malloc((nk * S * E + 1) * sizeof(float));
    int64_t *cat = malloc((R * nc + 1) * sizeof(int64_t));
    int64_t *off = malloc((T + 1) * sizeof(int64_t));
    int rc = !meta || !dense || !label || !ours || !cat || !off ? lm_err_set(err, LM_ENOMEM, "out of memory")
                                                                : LM_OK;
    uint64_t j = 0;
    for (uint64_t t = 0; !rc && t < T; t++) {
        const lm_task *k = lm_dataset_task(ds, t);
        off[t] = (int64_t)j;
        for (uint32_t i = 0; i < k->n; i++, j++) {
            lm_row_view v = lm_dataset_row(ds, k->first + i);
            memcpy(meta + j * nm, v.meta, nm * sizeof(float));
            memcpy(dense + j * nd, v.dense, nd * sizeof(float));
            for (size_t c = 0; c < nc; c++) cat[j * nc + c] = v.cat[c];
            label[j] = v.label;
        }
    }
    if (!rc) off[T] = (int64_t)j;
    for (int q = 0; !rc && q < nk; q++)
        for (uint64_t t = 0; !rc && t < S; t++)
            rc = lm_adapt_task(m, ds, t, (uint32_t)ks[q], -1, LM_ADAPT_ALL, LM_POOL_LATEST,
                               ours + (q * S + t) * E, err);
    lm_st_tensor tt[5 + 8];
    size_t n = 0;
    const struct {
        const char *name;
        int dt;
        uint64_t d0, d1;
        const void *p;
    } spec[5] = {{"meta", LM_DT_F32, R, nm, meta},
                 {"dense", LM_DT_F32, R, nd, dense},
                 {"cat", LM_DT_I64, R, nc, cat},
                 {"label", LM_DT_F32, R, 0, label},
                 {"offsets", LM_DT_I64, T + 1, 0, off}};
    for (int s = 0; !rc && s < 5 + nk; s++) {
        lm_st_tensor *x = &tt[n++];
        memset(x, 0, sizeof *x);
        if (s < 5) {
            snprintf(x->name, sizeof x->name, "%s", spec[s].name);
            x->dtype = spec[s].dt;
            x->ndim = spec[s].d1 ? 2 : 1;
            x->shape[0] = spec[s].d0, x->shape[1] = spec[s].d1;
            x->data = spec[s].p;
            x->nbytes = spec[s].d0 * (spec[s].d1 ? spec[s].d1 : 1) * lm_dt_size(spec[s].dt);
        } else {
            snprintf(x->name, sizeof x->name, "ours.k%llu", (unsigned long long)ks[s - 5]);
            x->dtype = LM_DT_F32;
            x->ndim = 2;
            x->shape[0] = S, x->shape[1] = E;
            x->data = ours + (size_t)(s - 5) * S * E;
            x->nbytes = S * E * sizeof(float);
        }
    }
    const char *mk[1] = {"lm_embedbench"}, *mv[1] = {"1"};
    if (!rc) rc = lm_st_write(path, tt, n, mk, mv, 1, err);
    free(meta), free(dense), free(label), free(ours), free(cat), free(off);
    return rc;
}

typedef struct torch_result {
    double tasks_per_s, max_abs_diff, median_abs_diff, max_abs_ours;
    long over_1e4, ours_closer, compared;
    int openblas;
} torch_result;

static int run_torch(const char *python, const char *model, const char *input, uint64_t k, int threads,
                     uint64_t repeats, torch_result *r)
{
    char c[16384];
    snprintf(
        c, sizeof c,
        "OMP_WAIT_POLICY=passive '%s' '%s/tools/torch_embed_bench.py' '%s' '%s' --steps %llu --threads %d "
        "--repeats %llu",
        python, LM_SOURCE_DIR, model, input, (unsigned long long)k, threads, (unsigned long long)repeats);
    fflush(NULL);
    FILE *p = popen(c, "r");
    if (!p) return -1;
    char *out = malloc(1 << 16);
    size_t n = out ? fread(out, 1, (1 << 16) - 1, p) : 0;
    int st = pclose(p);
    if (!out) return -1;
    out[n] = 0;
    cJSON *j = st == 0 ? cJSON_Parse(out) : NULL;
    free(out);
    if (!j) return -1;
    const cJSON *t = cJSON_GetObjectItem(j, "tasks_per_s"), *d = cJSON_GetObjectItem(j, "max_abs_diff");
    const cJSON *o = cJSON_GetObjectItem(j, "max_abs_ours"), *v = cJSON_GetObjectItem(j, "tasks_over_1e-4");
    const cJSON *s = cJSON_GetObjectItem(j, "compared"), *md = cJSON_GetObjectItem(j, "median_abs_diff");
    const cJSON *cl = cJSON_GetObjectItem(j, "over_1e-4_ours_closer_to_f64");
    const cJSON *ob = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "blas"), "openblas");
    int rc = cJSON_IsNumber(t) && cJSON_IsNumber(d) ? 0 : -1;
    if (!rc) {
        r->tasks_per_s = t->valuedouble, r->max_abs_diff = d->valuedouble;
        r->max_abs_ours = cJSON_IsNumber(o) ? o->valuedouble : NAN;
        r->over_1e4 = cJSON_IsNumber(v) ? (long)v->valuedouble : -1;
        r->compared = cJSON_IsNumber(s) ? (long)s->valuedouble : 0;
        r->median_abs_diff = cJSON_IsNumber(md) ? md->valuedouble : NAN;
        r->ours_closer = cJSON_IsNumber(cl) ? (long)cl->valuedouble : -1;
        r->openblas = cJSON_IsTrue(ob);
    }
    cJSON_Delete(j);
    return rc;
}

/* ============================================================================================
 * bench embed
 * ========================================================================================== */

#define MAX_K 8
#define MAX_RUNS 99

typedef struct bench {
    const char *dir;
    char redis_dir[4200];
    int redis_port; /* 0: not started */
} bench;

static void stop_redis(bench *b)
{
    if (!b->redis_port) return;
    char c[8800], line[256];
    snprintf(c, sizeof c, "bash '%s/scripts/redis-test-server.sh' stop '%s' 2>&1", LM_SOURCE_DIR,
             b->redis_dir);
    shell_line(c, line, sizeof line);
    b->redis_port = 0;
}

/* Start our own redis-server; 0, or 1 when it is not installed (message printed), -1. */
static int start_redis(bench *b)
{
    snprintf(b->redis_dir, sizeof b->redis_dir, "%s/redis", b->dir);
    char c[8800], line[256];
    snprintf(c, sizeof c, "bash '%s/scripts/redis-test-server.sh' start '%s' 2>/dev/null", LM_SOURCE_DIR,
             b->redis_dir);
    int st = shell_line(c, line, sizeof line);
    if (st == 3) {
        printf(
            "redis: redis-server is not installed: the Redis rows are skipped (scripts/install-deps.sh test "
            "installs it)\n");
        return 1;
    }
    if (st != 0 || atoi(line) <= 0) {
        fprintf(stderr, "limaml bench embed: redis-server would not start (see %s/redis.log)\n",
                b->redis_dir);
        return -1;
    }
    b->redis_port = atoi(line);
    return 0;
}

static double file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (double)st.st_size : NAN;
}

/* One `limaml embed` into an empty store: its figures and the store's bytes per task. */
static int bench_run(bench *b, const char *model, const char *data, int redis, uint64_t k, int threads,
                     uint64_t ntasks, embed_result *e, double *bytes_per_task)
{
    char url[4400], path[4200], db[4300];
    snprintf(path, sizeof path, "%s/store-lmdb", b->dir);
    snprintf(db, sizeof db, "%s/data.mdb", path);
    if (redis)
        snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", b->redis_port);
    else
        snprintf(url, sizeof url, "lmdb://%s", path);
    double before = 0;
    if (redis) {
        if (redis_flush(b->redis_port) != 0) return -1;
        before = redis_used_memory(b->redis_port);
    } else {
        lm_rmtree(path);
    }
    if (run_embed(model, data, url, k, threads, e) != 0) {
        fprintf(stderr, "limaml bench embed: `limaml embed --store %s --steps %llu` failed\n", url,
                (unsigned long long)k);
        return -1;
    }
    if (e->written != ntasks) {
        fprintf(stderr, "limaml bench embed: embed wrote %llu embeddings, expected %llu\n",
                (unsigned long long)e->written, (unsigned long long)ntasks);
        return -1;
    }
    *bytes_per_task = (redis ? redis_used_memory(b->redis_port) - before : file_size(db)) / (double)ntasks;
    if (redis)
        redis_flush(b->redis_port);
    else
        lm_rmtree(path);
    return 0;
}

/* The median of v[0 .. n) (sorts v) and the runs in their order, comma-separated, into all. */
static double median_runs(double *v, size_t n, char *all, size_t len)
{
    all[0] = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(all);
        snprintf(all + l, len - l, "%s%.0f", i ? "," : "", v[i]);
    }
    qsort(v, n, sizeof *v, cmp_d);
    return v[n / 2];
}

int bench_embed(int argc, char **argv)
{
    const char *klist, *blist, *dir, *model_arg, *python;
    uint64_t tasks, runs, threads, big, torch_tasks, sample;
    int no_torch;
    cli_opt opts[] = {
        {"tasks", CLI_U64, &tasks, "N", "1000000", 0, "synthetic tasks of the timed runs"},
        {"steps", CLI_STR, &klist, "LIST", "1,5", 0, "adaptation steps k, comma-separated"},
        {"backends", CLI_STR, &blist, "LIST", "lmdb,redis", 0, "stores: lmdb, redis or both"},
        {"runs", CLI_U64, &runs, "R", "3", 0, "runs per setting, each its own process (median reported)"},
        {"threads", CLI_U64, &threads, "N", "0", 0, "threads of both sides (0: all cores)"},
        {"big-tasks", CLI_U64, &big, "N", "10000000", 0, "tasks of the end-to-end LMDB run (0: skip it)"},
        {"torch-tasks", CLI_U64, &torch_tasks, "N", "200000", 0,
         "tasks the PyTorch side embeds per run (0: all)"},
        {"sample", CLI_U64, &sample, "N", "2000", 0, "tasks whose PyTorch embeddings are compared with ours"},
        {"model", CLI_STR, &model_arg, "M", "an initialised one", 0, "model file (default net, untrained)"},
        {"dir", CLI_STR, &dir, "DIR", "bench-data", 0, "folder for datasets, model, stores, torch input"},
        {"python", CLI_STR, &python, "PY", "$LM_PYREF_PYTHON", 0, "python with torch and safetensors"},
        {"no-torch", CLI_FLAG, &no_torch, NULL, NULL, 0, "skip the PyTorch side"},
        {0},
    };
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    uint64_t ks[MAX_K];
    int nk = parse_u64_list(klist, ks, MAX_K);
    if (nk < 1)
        return cli_usage_error(&cmd, "--steps: '%s' is not a list of integers (at most %d)", klist, MAX_K);
    for (int i = 0; i < nk; i++)
        if (ks[i] > 1000)
            return cli_usage_error(&cmd, "--steps: k must be at most 1000, not %llu",
                                   (unsigned long long)ks[i]);
    int use_lmdb = 0, use_redis = 0;
    for (const char *s = blist; *s;) {
        size_t l = strcspn(s, ",");
        if (l == 4 && !strncmp(s, "lmdb", 4))
            use_lmdb = 1;
        else if (l == 5 && !strncmp(s, "redis", 5))
            use_redis = 1;
        else
            return cli_usage_error(&cmd, "--backends: '%.*s' is not lmdb or redis", (int)l, s);
        s += l + (s[l] == ',');
    }
    if (!use_lmdb && !use_redis) return cli_usage_error(&cmd, "--backends: give lmdb, redis or both");
    if (tasks < 100 || tasks > 100000000) return cli_usage_error(&cmd, "--tasks must be in [100, 100000000]");
    if (big && (big < 100 || big > 100000000))
        return cli_usage_error(&cmd, "--big-tasks must be 0 or in [100, 100000000]");
    if (runs < 1 || runs > MAX_RUNS) return cli_usage_error(&cmd, "--runs must be in [1, %d]", MAX_RUNS);
    if (threads > 1024) return cli_usage_error(&cmd, "--threads must be at most 1024");
    if (!strcmp(model_arg, "an initialised one")) model_arg = NULL;
    if (!strcmp(python, "$LM_PYREF_PYTHON")) python = getenv("LM_PYREF_PYTHON");
    if (!no_torch && (!python || !*python)) {
        fprintf(stderr, "limaml bench embed: no python for the PyTorch side: set LM_PYREF_PYTHON "
                        "(scripts/setup-pyref.sh prints one) or pass --python, or --no-torch\n");
        return 1;
    }
    int nthreads = threads ? (int)threads : omp_get_max_threads();
    bench b = {.dir = dir};
    char c[4200];
    snprintf(c, sizeof c, "mkdir -p '%s'", dir);
    if (system(c) != 0) {
        fprintf(stderr, "limaml bench embed: cannot create %s\n", dir);
        return 1;
    }
    lm_err err = {0};
    char data[4200], model[4200];
    if (ensure_dataset(dir, tasks, data, sizeof data, &err)) return cli_fail(&err);
    lm_dataset *ds = NULL;
    lm_model *m = NULL;
    int rc = lm_dataset_open(&ds, data, 0, &err);
    if (!rc && !model_arg) {
        snprintf(model, sizeof model, "%s/embed-init.safetensors", dir);
        rc = write_init_model(ds, model, &err);
    } else if (!rc) {
        snprintf(model, sizeof model, "%s", model_arg);
    }
    if (!rc) rc = lm_model_load(&m, model, &err);
    if (!rc) rc = lm_model_check_dataset(m, ds, &err);
    if (!rc && lm_model_nmembers(m) > 1)
        rc = lm_err_set(&err, LM_EINVAL, "bench embed: give one network, not an ensemble");
    if (rc) {
        lm_model_free(m);
        lm_dataset_close(ds);
        return cli_fail(&err);
    }
    uint64_t nt = lm_dataset_ntasks(ds);
    printf("bench embed: %llu tasks (%.1f rows per task) of `limaml synth --tasks %llu`, %s, %d threads, "
           "median of "
           "%llu runs\n",
           (unsigned long long)nt, (double)lm_dataset_nrows(ds) / (double)nt, (unsigned long long)tasks,
           model_arg ? model
                     : "default net (meta mlp:32,16, global mlp:64,32) initialised as `limaml train` "
                       "starts (seed 1), untrained",
           nthreads, (unsigned long long)runs);
    if (use_redis) {
        int s = start_redis(&b);
        if (s < 0) rc = 1;
        if (s) use_redis = 0;
    }
    /* The PyTorch input first: each k's runs then alternate ours and PyTorch's, so that both
     * sides meet the same load on a shared machine (their ratio is what this measures). */
    char in[4300] = "";
    uint64_t T = LM_MIN(torch_tasks ? torch_tasks : nt, nt), S = LM_MIN(sample, T);
    if (!rc && !no_torch) {
        snprintf(in, sizeof in, "%s/torch-embed-%llu.safetensors", dir, (unsigned long long)T);
        if (write_torch_input(in, m, ds, T, S, ks, nk, &err)) rc = cli_fail(&err);
    }
    printf("%-3s %-6s %12s %9s %8s %11s %14s %14s  %s\n", "k", "store", "tasks/s", "seconds", "cpu s",
           "bytes/task", "peak RSS MiB", "peak anon MiB", "runs (tasks/s)");
    double lmdb_tps[MAX_K], torch_tps[MAX_K], anon_1 = NAN;
    char torch_all[MAX_K][1024];
    torch_result tr[MAX_K];
    for (int i = 0; i < nk && !rc; i++) {
        double tps[3][MAX_RUNS], secs[2][MAX_RUNS], cpu[2][MAX_RUNS], bpt[2][MAX_RUNS], rss[2] = {0, 0},
                                                                                        anon[2] = {0, 0};
        for (uint64_t r = 0; r < runs && !rc; r++) {
            for (int be = 0; be < 2 && !rc; be++) {
                if (!(be ? use_redis : use_lmdb)) continue;
                embed_result e;
                if (bench_run(&b, model, data, be, ks[i], nthreads, nt, &e, &bpt[be][r]) != 0) {
                    rc = 1;
                    break;
                }
                tps[be][r] = e.tasks_per_s, secs[be][r] = e.seconds, cpu[be][r] = e.cpu;
                rss[be] = fmax(rss[be], e.peak_rss), anon[be] = fmax(anon[be], e.peak_anon);
            }
            if (!rc && !no_torch) {
                if (run_torch(python, model, in, ks[i], nthreads, 1, &tr[i]) != 0) {
                    fprintf(stderr,
                            "limaml bench embed: the PyTorch side failed (%s tools/torch_embed_bench.py)\n",
                            python);
                    rc = 1;
                }
                tps[2][r] = tr[i].tasks_per_s;
            }
        }
        for (int be = 0; be < 2 && !rc; be++) {
            if (!(be ? use_redis : use_lmdb)) continue;
            char all[1024];
            double t = median_runs(tps[be], runs, all, sizeof all);
            qsort(secs[be], runs, sizeof(double), cmp_d);
            qsort(cpu[be], runs, sizeof(double), cmp_d);
            qsort(bpt[be], runs, sizeof(double), cmp_d);
            if (!be) lmdb_tps[i] = t;
            if (!be && i == 0) anon_1 = anon[be];
            printf("%-3llu %-6s %12.0f %9.2f %8.2f %11.1f %14.1f %14.1f  %s\n", (unsigned long long)ks[i],
                   be ? "redis" : "lmdb", t, secs[be][runs / 2], cpu[be][runs / 2], bpt[be][runs / 2],
                   rss[be] / 1048576.0, anon[be] / 1048576.0, all);
        }
        if (!rc && !no_torch) torch_tps[i] = median_runs(tps[2], runs, torch_all[i], sizeof torch_all[i]);
        fflush(stdout);
    }
    stop_redis(&b);
    if (!rc && !no_torch) {
        printf("PyTorch (%s, tools/torch_embed_bench.py): first %llu tasks, rows in memory to embeddings, no "
               "store; "
               "%d threads, BLAS threads 1, torch on %s; each run beside ours\n",
               python, (unsigned long long)T, nthreads, tr[0].openblas ? "OpenBLAS" : "not OpenBLAS");
        printf("%-3s %12s %12s %8s %14s %14s %12s  %s\n", "k", "torch t/s", "ours t/s", "ratio",
               "max abs diff", "median diff", "tasks>1e-4",
               "(of those, ours nearer to float64); runs (tasks/s)");
        for (int i = 0; i < nk; i++)
            printf("%-3llu %12.0f %12.0f %7.2fx %14.2e %14.2e %6ld/%-5ld (%ld); %s\n",
                   (unsigned long long)ks[i], torch_tps[i], lmdb_tps[i], lmdb_tps[i] / torch_tps[i],
                   tr[i].max_abs_diff, tr[i].median_abs_diff, tr[i].over_1e4, tr[i].compared,
                   tr[i].ours_closer, torch_all[i]);
    }
    if (in[0]) unlink(in);
    lm_dataset_close(ds);
    /* the large run, end to end */
    if (!rc && big) {
        char bdata[4200];
        double t0 = lm_now();
        if (ensure_dataset(dir, big, bdata, sizeof bdata, &err)) {
            lm_model_free(m);
            return cli_fail(&err);
        }
        double prep = lm_now() - t0;
        lm_dataset *bds = NULL;
        uint64_t bn = 0;
        if (lm_dataset_open(&bds, bdata, 0, &err)) {
            lm_model_free(m);
            return cli_fail(&err);
        }
        bn = lm_dataset_ntasks(bds);
        lm_dataset_close(bds);
        char path[4300], url[4400], db[4400];
        snprintf(path, sizeof path, "%s/store-lmdb-big", dir);
        snprintf(url, sizeof url, "lmdb://%s", path);
        snprintf(db, sizeof db, "%s/data.mdb", path);
        lm_rmtree(path);
        embed_result e;
        if (run_embed(model, bdata, url, ks[0], nthreads, &e) != 0 || e.written != bn) {
            fprintf(stderr, "limaml bench embed: the %llu-task run failed\n", (unsigned long long)bn);
            rc = 1;
        } else {
            printf("end to end: %llu tasks into LMDB, k = %llu: `limaml embed` %.1f s wall (%.1f s begin to "
                   "publish, "
                   "%.0f tasks/s; %.1f CPU s), peak RSS %.1f MiB (with the dataset's and the store's maps), "
                   "peak anonymous %.1f MiB "
                   "(%.1f MiB at %llu tasks), store %.1f bytes/task%s\n",
                   (unsigned long long)bn, (unsigned long long)ks[0], e.wall, e.seconds, e.tasks_per_s, e.cpu,
                   e.peak_rss / 1048576.0, e.peak_anon / 1048576.0, anon_1 / 1048576.0,
                   (unsigned long long)nt, file_size(db) / (double)bn, prep > 1 ? "" : " (dataset reused)");
            if (prep > 1)
                printf("  (synth + prepare of the %llu tasks took %.0f s, once)\n", (unsigned long long)bn,
                       prep);
        }
        lm_rmtree(path);
    }
    lm_model_free(m);
    return rc;
}
