/* cmd_synth.c: `limaml synth`: write a synthetic interaction log and its schema. */
#include "cli/cli.h"
#include "core/core.h"

#include <stdio.h>

int cmd_synth(int argc, char **argv)
{
    static const cli_cmd cmd = {
        .name = "synth",
        .usage = "limaml synth --tasks N --seed S --out FILE [--mean-examples X] "
                 "[--max-examples N] [--items N] [--days X] [--new-frac X]",
        .summary = "Write a synthetic interaction log (CSV) to FILE and its schema to "
                   "FILE.schema.json.",
        .details = "Tasks (members) have heavy-tailed activity, personal tastes that drift, "
                   "personal base rates\nand channel effects, and some are new (born in the last "
                   "10% of the horizon), so that a\nper-task model beats a global one. Rows are "
                   "sorted by (ts, user_id) within blocks of tasks.\nThe same options and seed "
                   "give the same bytes.",
    };
    lm_synth_opts o, def;
    lm_synth_opts_default(&def);
    const char *out = NULL;
    uint64_t max_examples = 0, items = 0;
    char d_tasks[32], d_seed[32], d_mean[32], d_max[32], d_items[32], d_days[32], d_new[32];
    snprintf(d_tasks, sizeof d_tasks, "%llu", (unsigned long long)def.tasks);
    snprintf(d_seed, sizeof d_seed, "%llu", (unsigned long long)def.seed);
    snprintf(d_mean, sizeof d_mean, "%g", def.mean_examples);
    snprintf(d_max, sizeof d_max, "%u", def.max_examples);
    snprintf(d_items, sizeof d_items, "%u", def.items);
    snprintf(d_days, sizeof d_days, "%g", def.days);
    snprintf(d_new, sizeof d_new, "%g", def.new_frac);
    cli_opt opts[] = {
        {"tasks", CLI_U64, &o.tasks, "N", d_tasks, 0, "number of tasks (members)"},
        {"seed", CLI_U64, &o.seed, "S", d_seed, 0, "random seed"},
        {"out", CLI_STR, &out, "FILE", NULL, 1, "the CSV log to write"},
        {"mean-examples", CLI_F64, &o.mean_examples, "X", d_mean, 0,
         "mean examples per task, heavy-tailed (median 7 for 12)"},
        {"max-examples", CLI_U64, &max_examples, "N", d_max, 0, "cap on examples per task"},
        {"items", CLI_U64, &items, "N", d_items, 0, "item vocabulary (Zipf popularity)"},
        {"days", CLI_F64, &o.days, "X", d_days, 0, "time horizon in days"},
        {"new-frac", CLI_F64, &o.new_frac, "X", d_new, 0,
         "fraction of tasks born in the last 10% of the horizon"},
        {0},
    };
    o = def;
    int r = cli_parse(&cmd, opts, argc, argv, NULL);
    if (r == 1) return 0;
    if (r) return r;
    if (max_examples > UINT32_MAX)
        return cli_usage_error(&cmd, "--max-examples: %llu is too large", (unsigned long long)max_examples);
    if (items > UINT32_MAX)
        return cli_usage_error(&cmd, "--items: %llu is too large", (unsigned long long)items);
    o.max_examples = (uint32_t)max_examples;
    o.items = (uint32_t)items;

    lm_err err = {0};
    lm_synth_summary sum;
    double t0 = lm_now();
    if (lm_synth(out, &o, &sum, &err) != LM_OK) return cli_fail(&err);
    double secs = lm_now() - t0;
    printf("synth: wrote %s: %llu rows, %llu tasks, %.1f%% positive, schema %s.schema.json "
           "(%.2f s)\n",
           out, (unsigned long long)sum.rows, (unsigned long long)sum.tasks,
           sum.rows ? 100.0 * (double)sum.positives / (double)sum.rows : 0.0, out, secs);
    return 0;
}
