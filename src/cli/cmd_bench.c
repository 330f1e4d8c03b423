/* cmd_bench.c: `limaml bench WHAT`: throughput measurements whose output goes, with the command
 * that made it, into docs/BENCHMARKS.md. Each figure is the median of several runs. */
#include "cli/cli.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static const cli_cmd cmd_prep = {
    "bench prepare",
    "limaml bench prepare [--rows N] [--runs R] [--dir DIR] [--mem BYTES]",
    "Measure `prepare` on synthetic logs: rows per second (median of R runs, one core) and the\n"
    "peak resident memory, at the full size and at a quarter of it (memory must stay flat).",
    "Each run is a separate process (so its peak memory is its own); the synthetic logs are\n"
    "generated once into DIR and reused when present.",
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Run prepare in a child process; returns seconds and its peak RSS. */
static int run_prepare_child(const char *log, const char *schema_path, const char *out, size_t mem,
                             double *secs, size_t *rss, uint64_t *rows)
{
    int pipefd[2];
    if (pipe(pipefd) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(pipefd[0]);
        lm_err err = {0};
        lm_schema *s;
        if (lm_schema_load(&s, schema_path, &err)) _exit(cli_fail(&err));
        lm_prepare_opts o;
        lm_prepare_opts_default(&o);
        o.mem_bytes = mem;
        o.force = 1;
        lm_prepare_summary sum;
        const char *in[1] = {log};
        if (lm_prepare(s, in, 1, out, &o, &sum, &err)) _exit(cli_fail(&err));
        double res[2] = {sum.seconds, (double)sum.rows_read};
        if (write(pipefd[1], res, sizeof res) != (ssize_t)sizeof res) _exit(1);
        _exit(0);
    }
    close(pipefd[1]);
    double res[2] = {0, 0};
    ssize_t got = read(pipefd[0], res, sizeof res);
    close(pipefd[0]);
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        got != (ssize_t)sizeof res)
        return -1;
    *secs = res[0];
    *rows = (uint64_t)res[1];
    *rss = (size_t)ru.ru_maxrss * 1024;
    return 0;
}

static int ensure_log(const char *dir, uint64_t rows, char *log, size_t loglen)
{
    snprintf(log, loglen, "%s/synth-%llu.csv", dir, (unsigned long long)rows);
    char schema[4200];
    snprintf(schema, sizeof schema, "%s.schema.json", log);
    if (access(log, R_OK) == 0 && access(schema, R_OK) == 0) return 0;
    lm_synth_opts o;
    lm_synth_opts_default(&o);
    o.tasks = rows / (uint64_t)o.mean_examples;
    if (o.tasks < 1) o.tasks = 1;
    lm_synth_summary ss;
    lm_err err = {0};
    fprintf(stderr, "bench prepare: writing %s (%llu tasks)...\n", log, (unsigned long long)o.tasks);
    if (lm_synth(log, &o, &ss, &err)) return cli_fail(&err);
    return 0;
}

static int bench_prepare(int argc, char **argv)
{
    uint64_t rows, runs;
    const char *dir;
    size_t mem;
    cli_opt opts[] = {
        {"rows", CLI_U64, &rows, "N", "10000000", 0, "approximate rows of the large synthetic log"},
        {"runs", CLI_U64, &runs, "R", "3", 0, "runs per size (the median is reported)"},
        {"dir", CLI_STR, &dir, "DIR", "bench-data", 0, "folder for the logs and outputs"},
        {"mem", CLI_SIZE, &mem, "BYTES", "256M", 0, "prepare's sort buffer"},
        {0},
    };
    int pr = cli_parse(&cmd_prep, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    if (runs < 1 || runs > 99) return cli_usage_error(&cmd_prep, "--runs must be in [1, 99]");
    if (rows < 1000) return cli_usage_error(&cmd_prep, "--rows must be at least 1000");
    char cmdline[512];
    snprintf(cmdline, sizeof cmdline, "mkdir -p '%s'", dir);
    if (system(cmdline) != 0) {
        fprintf(stderr, "limaml bench: cannot create %s\n", dir);
        return 1;
    }
    uint64_t sizes[2] = {rows / 4, rows};
    printf("bench prepare: %llu runs per size, sort buffer %zu MiB, 1 thread\n", (unsigned long long)runs,
           mem >> 20);
    printf("%-12s %-14s %-16s %-14s %s\n", "rows", "median_s", "rows_per_s", "peak_rss_MiB", "all_runs_s");
    for (int k = 0; k < 2; k++) {
        char log[4096], schema[4200], out[4200];
        if (ensure_log(dir, sizes[k], log, sizeof log)) return 1;
        snprintf(schema, sizeof schema, "%s.schema.json", log);
        snprintf(out, sizeof out, "%s.prepared", log);
        double t[99];
        size_t rss_max = 0;
        uint64_t nrows = 0;
        char all[1024] = "";
        for (uint64_t r = 0; r < runs; r++) {
            size_t rss;
            if (run_prepare_child(log, schema, out, mem, &t[r], &rss, &nrows)) {
                fprintf(stderr, "limaml bench: prepare run failed\n");
                return 1;
            }
            if (rss > rss_max) rss_max = rss;
            size_t l = strlen(all);
            snprintf(all + l, sizeof all - l, "%s%.2f", r ? "," : "", t[r]);
        }
        qsort(t, runs, sizeof t[0], cmp_double);
        double med = t[runs / 2];
        printf("%-12llu %-14.2f %-16.0f %-14.0f %s\n", (unsigned long long)nrows, med, (double)nrows / med,
               (double)rss_max / 1048576.0, all);
        fflush(stdout);
        lm_rmtree(out);
    }
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    static const cli_cmd cmd = {"bench", "limaml bench prepare|train|serve|embed [options]",
                                "Measure throughput. `limaml bench WHAT --help` lists a benchmark's options.",
                                NULL};
    if (argc < 1) return cli_usage_error(&cmd, "which benchmark? (prepare, train, serve, embed)");
    if (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        cli_print_help(&cmd, (cli_opt[]){{0}}, stdout);
        return 0;
    }
    if (!strcmp(argv[0], "prepare")) return bench_prepare(argc - 1, argv + 1);
    if (!strcmp(argv[0], "train")) return bench_train(argc - 1, argv + 1);
    if (!strcmp(argv[0], "serve")) return bench_serve(argc - 1, argv + 1);
    if (!strcmp(argv[0], "embed")) return bench_embed(argc - 1, argv + 1);
    return cli_usage_error(&cmd, "unknown benchmark '%s'", argv[0]);
}
