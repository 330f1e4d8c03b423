/* cmd_bench_train.c: `limaml bench train`: outer-loop throughput of LiMAML (second order) on
 * real task batches, beside the vectorized PyTorch implementation (tools/torch_bench.py) run on
 * the very same batches, from the same initial weights, in the same process tree. */
#include "cli/cli.h"
#include "meta/batch.h"
#include "meta/model.h"
#include "meta/optim.h"
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef LM_SOURCE_DIR
#define LM_SOURCE_DIR "."
#endif

static const cli_cmd cmd = {
    "bench train",
    "limaml bench train [--data DIR] [--tasks-per-batch 32,128] [--inner-steps 1,5] [options]",
    "Outer-loop throughput (tasks/s) of LiMAML, second order, on the MovieLens-100K protocol data\n"
    "and on synthetic data, beside the vectorized PyTorch implementation of the same algorithm\n"
    "run on the same batches with the same number of threads.",
    "Each setting times --repeats runs of --batches outer steps (batch call, clipping, Adam) after\n"
    "a warm-up run, every run from the same weights, and reports the median. Both sides start\n"
    "from the same weights and report their loss curves; the table shows the largest relative\n"
    "difference of the per-step objectives. \"ref MF/t\" is the per-task arithmetic of the\n"
    "reference engine (lm_meta_task_flops); \"done MF/t\" what the fast engine really does (it\n"
    "skips work that is exactly redundant); GFLOP/s and %peak use the latter. Peak = cores x\n"
    "clock (/proc/cpuinfo) x 32 FLOP per cycle (two 256-bit FMA pipes of this kind's Zen 4).",
};

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double cpu_mhz(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    double mhz = 0;
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "cpu MHz", 7)) {
            char *c = strchr(line, ':');
            if (c) mhz = atof(c + 1);
            break;
        }
    if (f) fclose(f);
    return mhz;
}

static int parse_list(const char *s, uint64_t *v, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *e;
        unsigned long long x = strtoull(s, &e, 10);
        if (e == s || x == 0) return -1;
        v[n++] = x;
        s = *e == ',' ? e + 1 : e;
        if (*e && *e != ',') return -1;
    }
    return n;
}

typedef struct bdata {
    const char *name;
    lm_dataset *ds;
    lm_net net;
    float *theta_m, *theta_g;
    uint64_t *warm; /* warm tasks with support and query rows */
    uint64_t nwarm;
} bdata;

/* Write the batches (tasks order[0 .. nb*T)) in tools/torch_bench.py's input format. */
static int write_torch_input(const char *path, const bdata *d, const lm_rows_f32 *sup, const lm_rows_f32 *qry,
                             size_t ntasks, size_t T, uint32_t n, lm_err *err)
{
    const lm_net *net = &d->net;
    size_t rs = 0, rq = 0;
    for (size_t i = 0; i < ntasks; i++) rs += sup[i].n, rq += qry[i].n;
    size_t nm = net->nmeta, nd = net->ndense, nc = net->ncat;
    float *f = malloc(((rs + rq) * (nm + nd + 1) + 1) * sizeof(float));
    int64_t *c = malloc(((rs + rq) * nc + 2 * (ntasks + 1) + ntasks / T + 2) * sizeof(int64_t));
    if (!f || !c) {
        free(f), free(c);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    lm_st_tensor t[13];
    size_t nt = 0;
    float *fp = f;
    int64_t *cp = c;
    for (int part = 0; part < 2; part++) {
        const lm_rows_f32 *r = part ? qry : sup;
        size_t R = part ? rq : rs;
        const char *P = part ? "Q" : "S";
        float *meta = fp, *dense = meta + R * nm, *label = dense + R * nd;
        int64_t *cat = cp, *off = cat + R * nc;
        size_t k = 0;
        off[0] = 0;
        for (size_t i = 0; i < ntasks; i++) {
            memcpy(meta + k * nm, r[i].meta, r[i].n * nm * sizeof(float));
            memcpy(dense + k * nd, r[i].dense, r[i].n * nd * sizeof(float));
            memcpy(label + k, r[i].label, r[i].n * sizeof(float));
            for (size_t j = 0; j < r[i].n * nc; j++) cat[k * nc + j] = r[i].cat[j];
            k += r[i].n;
            off[i + 1] = (int64_t)k;
        }
        fp = label + R;
        cp = off + ntasks + 1;
        const struct {
            const char *suffix;
            int dt;
            uint64_t d0, d1;
            int nd;
            const void *p;
        } spec[5] = {{"meta", LM_DT_F32, R, nm, 2, meta},
                     {"dense", LM_DT_F32, R, nd, 2, dense},
                     {"cat", LM_DT_I64, R, nc, 2, cat},
                     {"label", LM_DT_F32, R, 0, 1, label},
                     {"offsets", LM_DT_I64, ntasks + 1, 0, 1, off}};
        for (int s = 0; s < 5; s++) {
            lm_st_tensor *x = &t[nt++];
            memset(x, 0, sizeof *x);
            snprintf(x->name, sizeof x->name, "%s.%s", P, spec[s].suffix);
            x->dtype = spec[s].dt;
            x->ndim = (uint32_t)spec[s].nd;
            x->shape[0] = spec[s].d0;
            x->shape[1] = spec[s].d1;
            x->data = spec[s].p;
            x->nbytes =
                (size_t)(spec[s].nd == 1 ? spec[s].d0 : spec[s].d0 * spec[s].d1) * lm_dt_size(spec[s].dt);
        }
    }
    size_t nbatch = ntasks / T;
    int64_t *bt = cp;
    for (size_t b = 0; b <= nbatch; b++) bt[b] = (int64_t)(b * T);
    const void *bufs[3] = {d->theta_m, d->theta_g, bt};
    const char *names[3] = {"theta_m", "theta_g", "batches"};
    uint64_t lens[3] = {net->meta_np, net->global_np, nbatch + 1};
    for (int i = 0; i < 3; i++) {
        lm_st_tensor *x = &t[nt++];
        memset(x, 0, sizeof *x);
        snprintf(x->name, sizeof x->name, "%s", names[i]);
        x->dtype = i == 2 ? LM_DT_I64 : LM_DT_F32;
        x->ndim = 1;
        x->shape[0] = lens[i];
        x->data = bufs[i];
        x->nbytes = lens[i] * lm_dt_size(x->dtype);
    }
    char nmeta[32], ndense[32], buckets[256] = "", dims[256] = "", mh[128] = "", gh[128] = "", E[32],
                                steps[32], Ts[32];
    snprintf(nmeta, sizeof nmeta, "%zu", nm);
    snprintf(ndense, sizeof ndense, "%zu", nd);
    for (size_t i = 0; i < nc; i++) {
        size_t a = strlen(buckets), b = strlen(dims);
        snprintf(buckets + a, sizeof buckets - a, "%s%zu", i ? "," : "", net->cat_rows[i]);
        snprintf(dims + b, sizeof dims - b, "%s%zu", i ? "," : "", net->cat_dim[i]);
    }
    for (size_t i = 0; i < net->cfg.nmeta_hidden; i++) {
        size_t a = strlen(mh);
        snprintf(mh + a, sizeof mh - a, "%s%zu", i ? "," : "", net->cfg.meta_hidden[i]);
    }
    for (size_t i = 0; i < net->cfg.nglobal_hidden; i++) {
        size_t a = strlen(gh);
        snprintf(gh + a, sizeof gh - a, "%s%zu", i ? "," : "", net->cfg.global_hidden[i]);
    }
    snprintf(E, sizeof E, "%zu", net->E);
    snprintf(steps, sizeof steps, "%u", n);
    snprintf(Ts, sizeof Ts, "%zu", T);
    const char *k[] = {"lm_torchbench",   "nmeta",       "ndense",        "cat_buckets", "cat_dim",
                       "emb_dim",         "meta_hidden", "global_hidden", "inner_steps", "alpha",
                       "tasks_per_batch", "lr",          "clip"};
    const char *v[] = {"1", nmeta, ndense, buckets, dims, E, mh, gh, steps, "0.1", Ts, "0.001", "1"};
    int rc = lm_st_write(path, t, nt, k, v, sizeof k / sizeof k[0], err);
    free(f), free(c);
    return rc;
}

/* One setting: returns C's median tasks/s and fills curve[0..nb) with the per-step objectives. */
static int time_c(const bdata *d, lm_meta_batch_ws *ws, const lm_meta_opts *mo, const lm_rows_f32 *sup,
                  const lm_rows_f32 *qry, size_t nb, size_t T, uint64_t repeats, double *tps, double *curve,
                  double *flops_per_task, double *done_per_task, lm_err *err)
{
    const lm_net *net = &d->net;
    size_t pm = net->meta_np, pg = net->global_np;
    float *buf = calloc(6 * (pm + pg) + 2, sizeof(float));
    if (!buf) return lm_err_set(err, LM_ENOMEM, "out of memory");
    float *tm = buf, *tg = tm + pm, *gm = tg + pg, *gg = gm + pm, *mm = gg + pg, *vm = mm + pm, *mg = vm + pm,
          *vg = mg + pg;
    double times[100];
    int rc = LM_OK;
    double fl = 0, done = 0;
    for (size_t b = 0; b < nb * T; b++) fl += lm_meta_task_flops(net, mo, sup[b].n, qry[b].n);
    *flops_per_task = fl / (double)(nb * T);
    for (uint64_t r = 0; r <= repeats && !rc; r++) {
        memcpy(tm, d->theta_m, pm * sizeof(float));
        memcpy(tg, d->theta_g, pg * sizeof(float));
        memset(mm, 0, 2 * pm * sizeof(float));
        memset(mg, 0, 2 * pg * sizeof(float));
        lm_adam adam;
        lm_adam_init(&adam);
        double t0 = lm_now();
        for (size_t b = 0; b < nb && !rc; b++) {
            memset(gm, 0, pm * sizeof(float));
            memset(gg, 0, pg * sizeof(float));
            lm_meta_batch_stats st;
            rc = lm_meta_batch_f32(net, mo, ws, tm, tg, T, sup + b * T, qry + b * T, gm, gg, NULL, &st, err);
            float inv = 1.0f / (float)T;
            for (size_t j = 0; j < pm; j++) gm[j] *= inv;
            for (size_t j = 0; j < pg; j++) gg[j] *= inv;
            lm_adam_span sp[2] = {{tm, gm, mm, vm, pm}, {tg, gg, mg, vg, pg}};
            lm_adam_update(&adam, sp, 2, 1e-3, 1.0);
            if (r == 0) {
                curve[b] = st.objective / (double)T;
                done += st.flops;
            }
        }
        if (r > 0) times[r - 1] = lm_now() - t0;
    }
    free(buf);
    if (rc) return rc;
    *done_per_task = done / (double)(nb * T);
    qsort(times, repeats, sizeof times[0], cmp_d);
    *tps = (double)(nb * T) / times[repeats / 2];
    return LM_OK;
}

/* Run tools/torch_bench.py on `input`; returns its tasks/s and copies its objective curve. */
static int run_torch(const char *python, const char *input, int threads, uint64_t repeats, size_t nb,
                     double *tps, double *curve, char *blas, size_t blas_len)
{
    char cmdline[16384];
    snprintf(
        cmdline, sizeof cmdline,
        "OMP_WAIT_POLICY=passive '%s' '%s/tools/torch_bench.py' '%s' --threads %d --steps %zu --repeats %llu "
        "--curve %zu",
        python, LM_SOURCE_DIR, input, threads, nb, (unsigned long long)repeats, nb);
    FILE *p = popen(cmdline, "r");
    if (!p) return -1;
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    size_t got;
    while (out && (got = fread(out + n, 1, cap - 1 - n, p)) > 0) n += got;
    int st = pclose(p);
    if (!out) return -1;
    out[n] = 0;
    cJSON *j = st == 0 ? cJSON_Parse(out) : NULL;
    free(out);
    if (!j) return -1;
    const cJSON *t = cJSON_GetObjectItem(j, "tasks_per_s");
    const cJSON *lc = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "loss_curve"), "objective");
    const cJSON *bl = cJSON_GetObjectItem(j, "blas");
    int rc = cJSON_IsNumber(t) ? 0 : -1;
    if (!rc) *tps = t->valuedouble;
    for (size_t i = 0; !rc && i < nb; i++) {
        const cJSON *x = cJSON_GetArrayItem(lc, (int)i);
        curve[i] = cJSON_IsNumber(x) ? x->valuedouble : NAN;
    }
    char *bs = bl ? cJSON_PrintUnformatted(bl) : NULL;
    snprintf(blas, blas_len, "%s", bs ? (strstr(bs, "openblas") ? "OpenBLAS" : "not OpenBLAS") : "?");
    if (bs) cJSON_free(bs);
    cJSON_Delete(j);
    return rc;
}

static int load_bdata(bdata *d, const char *name, const char *dir, uint64_t seed, lm_err *err)
{
    memset(d, 0, sizeof *d);
    d->name = name;
    int rc = lm_dataset_open(&d->ds, dir, 0, err);
    if (rc) return rc;
    lm_net_config c;
    lm_net_config_default(&c);
    if ((rc = lm_net_config_from_schema(&c, lm_dataset_schema(d->ds), err)) ||
        (rc = lm_net_init(&d->net, &c, err)))
        return rc;
    d->theta_m = malloc(d->net.meta_np * sizeof(float));
    d->theta_g = malloc(d->net.global_np * sizeof(float));
    uint64_t nt = lm_dataset_ntasks(d->ds);
    d->warm = malloc((nt + 1) * sizeof *d->warm);
    if (!d->theta_m || !d->theta_g || !d->warm) return lm_err_set(err, LM_ENOMEM, "out of memory");
    lm_rng rng;
    lm_rng_seed(&rng, seed);
    lm_net_params_init_f32(&d->net, d->theta_m, d->theta_g, &rng);
    for (uint64_t t = 0; t < nt; t++) {
        const lm_task *k = lm_dataset_task(d->ds, t);
        if (!k->is_new && k->nsplit[LM_SPLIT_SUPPORT] && k->nsplit[LM_SPLIT_QUERY]) d->warm[d->nwarm++] = t;
    }
    /* a seeded shuffle: batches mix large and small tasks as training does */
    for (uint64_t i = d->nwarm; i > 1; i--) {
        uint64_t j = lm_rng_below(&rng, i), x = d->warm[i - 1];
        d->warm[i - 1] = d->warm[j];
        d->warm[j] = x;
    }
    return d->nwarm ? LM_OK : lm_err_set(err, LM_EINVAL, "%s: no warm task with support and query rows", dir);
}

static void free_bdata(bdata *d)
{
    lm_dataset_close(d->ds);
    free(d->theta_m);
    free(d->theta_g);
    free(d->warm);
}

int bench_train(int argc, char **argv)
{
    const char *data, *tlist, *nlist, *python, *dir;
    uint64_t threads, repeats, nbatches, seed, synth_tasks;
    int no_torch;
    cli_opt opts[] = {
        {"data", CLI_STR, &data, "DIR", NULL, 0,
         "a prepared dataset (default: MovieLens-100K and synthetic)"},
        {"tasks-per-batch", CLI_STR, &tlist, "LIST", "32,128", 0, "tasks per batch, comma-separated"},
        {"inner-steps", CLI_STR, &nlist, "LIST", "1,5", 0, "inner steps n, comma-separated"},
        {"threads", CLI_U64, &threads, "N", "0", 0, "threads of both sides (0: all cores)"},
        {"batches", CLI_U64, &nbatches, "N", "8", 0, "outer steps per timed run"},
        {"repeats", CLI_U64, &repeats, "R", "5", 0, "timed runs per setting (the median is reported)"},
        {"synthetic-tasks", CLI_U64, &synth_tasks, "N", "20000", 0, "members of the synthetic log"},
        {"dir", CLI_STR, &dir, "DIR", "bench-data", 0, "folder for prepared data and torch inputs"},
        {"python", CLI_STR, &python, "PY", "$LM_PYREF_PYTHON", 0, "python with torch and safetensors"},
        {"no-torch", CLI_FLAG, &no_torch, NULL, NULL, 0, "skip the PyTorch side"},
        {"seed", CLI_U64, &seed, "S", "1", 0, "seed of the weights and the batches"},
        {0},
    };
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    uint64_t Ts[8], ns[8];
    int nT = parse_list(tlist, Ts, 8), nn = parse_list(nlist, ns, 8);
    if (nT < 1)
        return cli_usage_error(&cmd, "--tasks-per-batch: '%s' is not a list of positive integers", tlist);
    if (nn < 1) return cli_usage_error(&cmd, "--inner-steps: '%s' is not a list of positive integers", nlist);
    if (repeats < 1 || repeats > 99) return cli_usage_error(&cmd, "--repeats must be in [1, 99]");
    if (nbatches < 1 || nbatches > 1000) return cli_usage_error(&cmd, "--batches must be in [1, 1000]");
    if (!strcmp(python, "$LM_PYREF_PYTHON")) python = getenv("LM_PYREF_PYTHON");
    if (!no_torch && !python) {
        fprintf(
            stderr,
            "limaml bench train: no python for the PyTorch side: set LM_PYREF_PYTHON (scripts/setup-pyref.sh "
            "prints one) or pass --python, or --no-torch\n");
        return 1;
    }
    int nthreads = threads ? (int)threads : omp_get_max_threads();
    char path[4096];
    snprintf(path, sizeof path, "mkdir -p '%s'", dir);
    if (system(path) != 0) return 1;
    lm_err err = {0};
    /* the datasets */
    const char *names[2];
    char dirs[2][4096];
    int nds = 0;
    if (data) {
        names[0] = data;
        snprintf(dirs[0], sizeof dirs[0], "%s", data);
        nds = 1;
    } else {
        snprintf(dirs[0], sizeof dirs[0], "%s/movielens", dir);
        if (access(dirs[0], F_OK) != 0) {
            lm_prepare_summary sum;
            if (lm_prepare_movielens(LM_SOURCE_DIR "/../shared/data/ml-100k", dirs[0], LM_ML_TASK_USER, NULL,
                                     &sum, &err))
                return cli_fail(&err);
        }
        names[0] = "movielens";
        snprintf(dirs[1], sizeof dirs[1], "%s/synthetic-%llu", dir, (unsigned long long)synth_tasks);
        if (access(dirs[1], F_OK) != 0) {
            char log[4200];
            snprintf(log, sizeof log, "%s.csv", dirs[1]);
            lm_synth_opts so;
            lm_synth_opts_default(&so);
            so.tasks = synth_tasks;
            so.mean_examples = 30;
            lm_synth_summary ss;
            lm_schema *sc = NULL;
            char sp[4300];
            snprintf(sp, sizeof sp, "%s.schema.json", log);
            lm_prepare_opts po;
            lm_prepare_opts_default(&po);
            lm_prepare_summary sum;
            const char *in[1] = {log};
            if (lm_synth(log, &so, &ss, &err) || lm_schema_load(&sc, sp, &err) ||
                lm_prepare(sc, in, 1, dirs[1], &po, &sum, &err)) {
                lm_schema_free(sc);
                return cli_fail(&err);
            }
            lm_schema_free(sc);
            unlink(log);
            unlink(sp);
        }
        names[1] = "synthetic";
        nds = 2;
    }
    double peak = (double)nthreads * cpu_mhz() * 1e6 * 32 / 1e9;
    printf("bench train: LiMAML second order, default net (meta mlp:32,16, global mlp:64,32), %d threads, "
           "median of %llu runs of %llu outer steps\n",
           nthreads, (unsigned long long)repeats, (unsigned long long)nbatches);
    printf("nominal FP32 peak: %.0f GFLOP/s (%d cores x %.0f MHz x 32)\n", peak, nthreads, cpu_mhz());
    printf("%-10s %5s %3s %8s %8s %8s %10s %9s %7s %9s %7s %10s\n", "data", "T", "n", "rows/tsk", "ref MF/t",
           "done MF/t", "C tasks/s", "GFLOP/s", "%peak", "torch t/s", "ratio", "curve diff");
    int rc = 0;
    for (int di = 0; di < nds && !rc; di++) {
        bdata d;
        if ((rc = load_bdata(&d, names[di], dirs[di], seed, &err))) {
            free_bdata(&d);
            break;
        }
        for (int ti = 0; ti < nT && !rc; ti++) {
            size_t T = Ts[ti], nb = (size_t)nbatches, ntask = T * nb;
            if (ntask > d.nwarm) nb = d.nwarm / T, ntask = T * nb;
            if (nb == 0) {
                printf("%-10s %5zu: fewer warm tasks (%llu) than one batch\n", d.name, T,
                       (unsigned long long)d.nwarm);
                continue;
            }
            lm_rows_f32 *sup = calloc(ntask, sizeof *sup), *qry = calloc(ntask, sizeof *qry);
            size_t maxs = 1, rows = 0;
            for (size_t i = 0; i < ntask; i++) {
                const lm_task *k = lm_dataset_task(d.ds, d.warm[i]);
                maxs = LM_MAX(maxs, LM_MAX(k->nsplit[LM_SPLIT_SUPPORT], k->nsplit[LM_SPLIT_QUERY]));
                rows += k->nsplit[LM_SPLIT_SUPPORT] + k->nsplit[LM_SPLIT_QUERY];
            }
            for (size_t i = 0; i < ntask && !rc; i++) {
                const lm_task *k = lm_dataset_task(d.ds, d.warm[i]);
                if (!(rc = lm_rows_alloc_f32(&sup[i], d.net.nmeta, d.net.ndense, d.net.ncat, maxs, &err)) &&
                    !(rc = lm_rows_alloc_f32(&qry[i], d.net.nmeta, d.net.ndense, d.net.ncat, maxs, &err)) &&
                    !(rc = lm_rows_gather_f32(&sup[i], d.ds, k, LM_SPLIT_SUPPORT, &err)))
                    rc = lm_rows_gather_f32(&qry[i], d.ds, k, LM_SPLIT_QUERY, &err);
            }
            for (int ni = 0; ni < nn && !rc; ni++) {
                lm_meta_opts mo;
                lm_meta_opts_default(&mo);
                mo.algo = LM_ALGO_LIMAML;
                mo.steps = ns[ni];
                mo.alpha = 0.1;
                mo.dropout_mode = LM_DROPOUT_OFF;
                lm_meta_batch_ws *ws = NULL;
                double ctps = 0, ttps = NAN, fpt = 0, dpt = 0, *cc = calloc(nb, sizeof(double)),
                       *tc = calloc(nb, sizeof(double));
                char blas[64] = "-";
                rc = lm_meta_batch_ws_alloc(&ws, &d.net, T, maxs, ns[ni], nthreads, LM_BATCH_KERNEL_AUTO,
                                            &err);
                if (!rc) rc = time_c(&d, ws, &mo, sup, qry, nb, T, repeats, &ctps, cc, &fpt, &dpt, &err);
                lm_meta_batch_ws_free(ws);
                double diff = NAN;
                if (!rc && !no_torch) {
                    char in[4200];
                    snprintf(in, sizeof in, "%s/torch-%s-T%zu-n%llu.safetensors", dir, d.name, T,
                             (unsigned long long)ns[ni]);
                    rc = write_torch_input(in, &d, sup, qry, ntask, T, (uint32_t)ns[ni], &err);
                    if (!rc &&
                        run_torch(python, in, nthreads, repeats, nb, &ttps, tc, blas, sizeof blas) != 0) {
                        fprintf(stderr, "limaml bench train: the PyTorch side failed (%s)\n", python);
                        rc = LM_EIO;
                        err.msg[0] = 0;
                    }
                    diff = 0;
                    for (size_t b = 0; b < nb; b++)
                        diff = fmax(diff, fabs(cc[b] - tc[b]) / fmax(1e-12, fabs(tc[b])));
                    unlink(in);
                }
                if (!rc) {
                    double gf = ctps * dpt / 1e9;
                    printf("%-10s %5zu %3llu %8.1f %8.2f %8.2f %10.0f %9.1f %6.1f%% %9.0f %6.1fx %10.1e\n",
                           d.name, T, (unsigned long long)ns[ni], (double)rows / (double)ntask, fpt / 1e6,
                           dpt / 1e6, ctps, gf, 100 * gf / peak, ttps, ctps / ttps, diff);
                    fflush(stdout);
                }
                free(cc), free(tc);
            }
            for (size_t i = 0; i < ntask; i++) {
                lm_rows_free_f32(&sup[i]);
                lm_rows_free_f32(&qry[i]);
            }
            free(sup), free(qry);
        }
        free_bdata(&d);
    }
    if (rc) {
        if (err.msg[0]) return cli_fail(&err);
        return 1;
    }
    if (!no_torch)
        printf("PyTorch side: %s, torch threads = %d, BLAS threads = 1, OMP_WAIT_POLICY=passive\n", python,
               nthreads);
    return 0;
}
