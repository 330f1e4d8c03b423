/* cmd_experiment.c: `limaml experiment`, the paper's Tables 3 and 4 under PROTOCOL.md
 * (src/eval/experiment.c runs it; this file parses the options and prints progress). */
#include "cli/cli.h"
#include "core/core.h"
#include "eval/experiment.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef LM_SOURCE_DIR
#define LM_SOURCE_DIR "."
#endif

static const cli_cmd cmd = {
    "experiment",
    "limaml experiment movielens [--data ML100K_DIR] --out DIR [--seeds N] [--tables LIST] [options]\n"
    "       limaml experiment synthetic [--tasks N] --out DIR [options]\n"
    "       limaml experiment --data DATASET_DIR --out DIR [options]",
    "Run the paper's offline tables under PROTOCOL.md (by default all of them: Tables 3, 4, 5, 9, 10,\n"
    "12, 13, 14 and embedding freshness) and write DIR/results.json, DIR/report.md and a\n"
    "self-contained DIR/report.html (tables, and plots of training loss and validation AUC).",
    "Table 3: the count floor (task rate + item rate, no learning), then plain training,\n"
    "entire-network MAML and LiMAML, each without and with task adaptation on the validation part,\n"
    "and LiMAML with W times the support loss added to the outer objective as an option row.\n"
    "Table 4: wide-and-deep with a task-id embedding, LiMAML with an id-embedding meta block and\n"
    "LiMAML with an MLP meta block. Test AUC pooled and by slice (<25, >=25 test examples, warm,\n"
    "new), log loss, and the gain over the table's baseline, as mean and std over the seeds.\n"
    "Around the chosen LiMAML configuration, one thing moved at a time, gains over plain without\n"
    "adaptation: Table 9 inner steps n (and training time against plain), Table 10 dropout, Table 12\n"
    "inner task lr, Table 13 outer lr (these train every seed again), Table 14 the meta embedding\n"
    "from the latest example against max, mean and cosine pooling, 'fresh' an embedding adapted on\n"
    "rows D days older than the latest (these two evaluate Table 3's LiMAML models again), and\n"
    "Table 5 (MovieLens only) task = user against task = (user, the item's first genre).\n"
    "Hyperparameters are chosen on seed 1 from warm tasks' validation parts only: the outer lr\n"
    "(--grid-lr) and, for LiMAML, the inner task lr (--grid-task-lr); then the adaptation steps\n"
    "(--grid-k) and task lr (--grid-alpha), going past the grid's edge while that helps. The source is\n"
    "MovieLens-100K (prepared as in PROTOCOL.md), the synthetic generator, or a dataset made by\n"
    "`limaml prepare`. DIR is built under a temporary name and renamed into place when done.",
};

typedef struct prog {
    double t0;
} prog;

static void on_progress(void *ctx, const char *line)
{
    prog *p = ctx;
    fprintf(stderr, "experiment [%5.0fs] %s\n", lm_now() - p->t0, line);
}

/* "0.01,0.003" -> values; 2 on a usage error (printed). */
static int parse_doubles(const char *name, const char *s, double *v, size_t *n)
{
    *n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        double d = strtod(p, &end);
        if (end == p || errno || !(d > 0) || (*end && *end != ',') || *n == LM_XP_MAX_GRID)
            return cli_usage_error(&cmd, "--%s: '%s' is not a list of up to %d positive numbers", name, s,
                                   LM_XP_MAX_GRID);
        v[(*n)++] = d;
        p = *end ? end + 1 : end;
    }
    if (!*n) return cli_usage_error(&cmd, "--%s: give at least one value", name);
    return 0;
}

static int parse_steps(const char *s, uint32_t *v, size_t *n)
{
    double d[LM_XP_MAX_GRID];
    if (parse_doubles("grid-k", s, d, n)) return 2;
    for (size_t i = 0; i < *n; i++) {
        if (d[i] != (double)(uint32_t)d[i] || d[i] < 1 || d[i] > 1000)
            return cli_usage_error(&cmd, "--grid-k: steps must be whole numbers in [1, 1000], not '%s'", s);
        v[i] = (uint32_t)d[i];
    }
    return 0;
}

/* "3,4,9,fresh" or "all" -> the mask of tables. */
static int parse_tables(const char *s, int *tables)
{
    static const struct {
        const char *name;
        int bit;
    } T[] = {{"3", LM_XP_TABLE3},    {"4", LM_XP_TABLE4},      {"5", LM_XP_TABLE5},   {"9", LM_XP_TABLE9},
             {"10", LM_XP_TABLE10},  {"12", LM_XP_TABLE12},    {"13", LM_XP_TABLE13}, {"14", LM_XP_TABLE14},
             {"fresh", LM_XP_FRESH}, {"all", LM_XP_TABLES_ALL}};
    *tables = 0;
    for (const char *p = s; *p;) {
        size_t n = strcspn(p, ","), i;
        for (i = 0; i < sizeof T / sizeof T[0]; i++)
            if (strlen(T[i].name) == n && !strncmp(p, T[i].name, n)) break;
        if (i == sizeof T / sizeof T[0])
            return cli_usage_error(
                &cmd, "--tables: '%.*s' is not one of 3, 4, 5, 9, 10, 12, 13, 14, fresh, all", (int)n, p);
        *tables |= T[i].bit;
        p += n;
        if (*p == ',') p++;
    }
    if (!*tables) return cli_usage_error(&cmd, "--tables: give at least one table");
    return 0;
}

/* "1,2,3" -> whole numbers in [1, 64]. */
static int parse_inner(const char *s, uint32_t *v, size_t *n)
{
    double d[LM_XP_MAX_GRID];
    if (parse_doubles("sweep-inner-steps", s, d, n)) return 2;
    for (size_t i = 0; i < *n; i++) {
        if (d[i] != (double)(uint32_t)d[i] || d[i] < 1 || d[i] > 64)
            return cli_usage_error(&cmd, "--sweep-inner-steps: whole numbers in [1, 64], not '%s'", s);
        v[i] = (uint32_t)d[i];
    }
    return 0;
}

/* Dropout rates may be 0: "0,0.1" -> values in [0, 1). */
static int parse_rates01(const char *s, double *v, size_t *n)
{
    *n = 0;
    for (const char *p = s; *p;) {
        char *end;
        errno = 0;
        double d = strtod(p, &end);
        if (end == p || errno || !(d >= 0 && d < 1) || (*end && *end != ',') || *n == LM_XP_MAX_GRID)
            return cli_usage_error(&cmd, "--sweep-dropout: '%s' is not a list of up to %d rates in [0, 1)", s,
                                   LM_XP_MAX_GRID);
        v[(*n)++] = d;
        p = *end ? end + 1 : end;
    }
    if (!*n) return cli_usage_error(&cmd, "--sweep-dropout: give at least one value");
    return 0;
}

int cmd_experiment(int argc, char **argv)
{
    int source = LM_XP_SOURCE_DATASET;
    if (argc > 0 && !strcmp(argv[0], "movielens"))
        source = LM_XP_SOURCE_MOVIELENS, argc--, argv++;
    else if (argc > 0 && !strcmp(argv[0], "synthetic"))
        source = LM_XP_SOURCE_SYNTHETIC, argc--, argv++;
    lm_experiment_opts o;
    lm_experiment_opts_default(&o);
    const char *data, *out, *tables, *glr, *gk, *galpha, *gtlr, *sin, *sdrop, *stlr, *slr, *sstale;
    uint64_t tasks, synth_seed, seeds, threads, epochs, patience, slow_grid, max_k, ens;
    double sw;
    int quick, force, quiet;
    char d_tasks[32], d_seeds[32], d_epochs[32], d_pat[32], d_sw[32], d_mg[32], d_mk[32], d_ens[32];
    snprintf(d_mk, sizeof d_mk, "%u", o.max_k);
    snprintf(d_ens, sizeof d_ens, "%u", o.ensemble);
    snprintf(d_tasks, sizeof d_tasks, "%llu", (unsigned long long)o.synth_tasks);
    snprintf(d_seeds, sizeof d_seeds, "%u", o.seeds);
    snprintf(d_epochs, sizeof d_epochs, "%u", o.epochs);
    snprintf(d_pat, sizeof d_pat, "%u", o.patience);
    snprintf(d_sw, sizeof d_sw, "%g", o.support_weight);
    snprintf(d_mg, sizeof d_mg, "%zu", o.slow_ngrid_lr);
    cli_opt opts[] = {
        {"data", CLI_STR, &data, "DIR", NULL, 0,
         "the ml-100k folder (movielens; default ../shared/data/ml-100k) or a prepared dataset"},
        {"tasks", CLI_U64, &tasks, "N", d_tasks, 0, "synthetic: tasks to generate"},
        {"synth-seed", CLI_U64, &synth_seed, "S", "1", 0, "synthetic: generator seed"},
        {"out", CLI_STR, &out, "DIR", NULL, 1, "output folder (results.json, report.md, report.html, logs/)"},
        {"seeds", CLI_U64, &seeds, "N", d_seeds, 0, "training seeds 1..N (mean and std over them)"},
        {"tables", CLI_STR, &tables, "LIST", "all", 0,
         "which tables: 3, 4, 5, 9, 10, 12, 13, 14, fresh, or all (e.g. 3,4 or 9,fresh)"},
        {"threads", CLI_U64, &threads, "N", "0", 0, "threads (0: all cores)"},
        {"epochs", CLI_U64, &epochs, "N", d_epochs, 0,
         "at most N epochs per training run (early stopping decides)"},
        {"patience", CLI_U64, &patience, "N", d_pat, 0, "stop after N epochs without a better val AUC"},
        {"support-weight", CLI_F64, &sw, "W", d_sw, 0, "W of the 'LiMAML + support loss' option row"},
        {"ensemble", CLI_U64, &ens, "M", d_ens, 0,
         "members of the ensemble option rows (MovieLens; seeds s, S+s, ...; 0: no such rows)"},
        {"grid-lr", CLI_STR, &glr, "LIST", "0.01,0.003", 0, "outer learning rates tried on seed 1"},
        {"grid-task-lr", CLI_STR, &gtlr, "LIST", "0.1,0.3", 0,
         "inner task learning rates tried for LiMAML with an MLP meta block (others: the first)"},
        {"slow-grid", CLI_U64, &slow_grid, "N", d_mg, 0,
         "MAML, wide-and-deep and id-block LiMAML (slow engine) try the first N of --grid-lr"},
        {"grid-k", CLI_STR, &gk, "LIST", "1,5", 0, "adaptation steps tried"},
        {"grid-alpha", CLI_STR, &galpha, "LIST", "0.1,0.3", 0, "adaptation task learning rates tried"},
        {"max-k", CLI_U64, &max_k, "N", d_mk, 0, "past the grid's edge, adaptation steps double up to N"},
        {"sweep-inner-steps", CLI_STR, &sin, "LIST", "1,2,3,4,5", 0, "Table 9: LiMAML's inner steps n"},
        {"sweep-dropout", CLI_STR, &sdrop, "LIST", "0,0.1,0.2,0.4,0.6", 0, "Table 10: dropout rates"},
        {"sweep-task-lr", CLI_STR, &stlr, "LIST", "0.01,0.03,0.1,0.3,1,3", 0,
         "Table 12: inner task learning rates (the chosen one is added)"},
        {"sweep-lr", CLI_STR, &slr, "LIST", "0.001,0.003,0.01,0.03", 0,
         "Table 13: outer learning rates (the chosen one is added)"},
        {"stale-days", CLI_STR, &sstale, "LIST", "1,7,30", 0,
         "freshness: adapt on rows at least D days older than the task's latest"},
        {"quick", CLI_FLAG, &quick, NULL, NULL, 0,
         "tiny grid, two values per sweep, 3 epochs (tests; overrides grids, sweeps, epochs)"},
        {"force", CLI_FLAG, &force, NULL, NULL, 0, "replace DIR if it exists"},
        {"quiet", CLI_FLAG, &quiet, NULL, NULL, 0, "no progress on stderr"},
        {0},
    };
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    o.source = source;
    if (source == LM_XP_SOURCE_SYNTHETIC && data)
        return cli_usage_error(&cmd, "--data is not used with 'synthetic'");
    if (source == LM_XP_SOURCE_DATASET && !data)
        return cli_usage_error(&cmd, "give 'movielens', 'synthetic' or --data DATASET_DIR");
    if (source == LM_XP_SOURCE_MOVIELENS && !data) {
        /* the README's layout (../shared beside the checkout), from here or from the source tree */
        data = access("../shared/data/ml-100k/u.data", R_OK) == 0 ? "../shared/data/ml-100k"
                                                                  : LM_SOURCE_DIR "/../shared/data/ml-100k";
    }
    o.input = data;
    o.out_dir = out;
    if (tasks < 10 || tasks > 100000000) return cli_usage_error(&cmd, "--tasks must be in [10, 100000000]");
    o.synth_tasks = tasks;
    o.synth_seed = synth_seed;
    if (seeds < 1 || seeds > LM_XP_MAX_SEEDS)
        return cli_usage_error(&cmd, "--seeds must be in [1, %d]", LM_XP_MAX_SEEDS);
    o.seeds = (uint32_t)seeds;
    if (parse_tables(tables, &o.tables)) return 2;
    if (threads > 1024) return cli_usage_error(&cmd, "--threads must be at most 1024");
    o.threads = (int)threads;
    if (epochs < 1 || epochs > 256) return cli_usage_error(&cmd, "--epochs must be in [1, 256]");
    o.epochs = (uint32_t)epochs;
    if (patience > 256) return cli_usage_error(&cmd, "--patience must be at most 256");
    o.patience = (uint32_t)patience;
    if (!(sw > 0)) return cli_usage_error(&cmd, "--support-weight must be > 0");
    o.support_weight = sw;
    if (ens == 1 || ens > 16) return cli_usage_error(&cmd, "--ensemble must be 0 or in [2, 16]");
    o.ensemble = (uint32_t)ens;
    if (parse_doubles("grid-lr", glr, o.grid_lr, &o.ngrid_lr) || parse_steps(gk, o.grid_k, &o.ngrid_k) ||
        parse_doubles("grid-alpha", galpha, o.grid_alpha, &o.ngrid_alpha) ||
        parse_doubles("grid-task-lr", gtlr, o.grid_task_lr, &o.ngrid_task_lr) ||
        parse_inner(sin, o.sweep_inner, &o.nsweep_inner) ||
        parse_rates01(sdrop, o.sweep_dropout, &o.nsweep_dropout) ||
        parse_doubles("sweep-task-lr", stlr, o.sweep_task_lr, &o.nsweep_task_lr) ||
        parse_doubles("sweep-lr", slr, o.sweep_lr, &o.nsweep_lr) ||
        parse_doubles("stale-days", sstale, o.stale_days, &o.nstale_days))
        return 2;
    if (max_k > 1000) return cli_usage_error(&cmd, "--max-k must be at most 1000");
    o.max_k = (uint32_t)max_k;
    if (slow_grid < 1) return cli_usage_error(&cmd, "--slow-grid must be at least 1");
    o.slow_ngrid_lr = slow_grid > LM_XP_MAX_GRID ? LM_XP_MAX_GRID : (size_t)slow_grid;
    if (quick) lm_experiment_opts_quick(&o);
    o.force = force;

    /* the command line, quoted in the report */
    size_t len = 64;
    for (int i = 0; i < argc; i++) len += strlen(argv[i]) + 1;
    char *line = malloc(len);
    if (line) {
        snprintf(line, len, "limaml experiment%s",
                 source == LM_XP_SOURCE_MOVIELENS   ? " movielens"
                 : source == LM_XP_SOURCE_SYNTHETIC ? " synthetic"
                                                    : "");
        for (int i = 0; i < argc; i++) strcat(strcat(line, " "), argv[i]);
    }
    o.command_line = line;
    prog g = {lm_now()};
    if (!quiet) {
        o.progress = on_progress;
        o.progress_ctx = &g;
    }
    lm_err err = {0};
    lm_experiment_summary sum;
    int rc = lm_experiment_run(&o, &sum, &err);
    free(line);
    if (rc) return cli_fail(&err);
    printf("experiment: wrote %s: results.json (%zu rows), report.md, report.html in %.0f s; %d of %d of the "
           "paper's patterns hold (see report.md)\n",
           out, sum.rows, sum.seconds, sum.patterns_held, sum.patterns_checked);
    return 0;
}
