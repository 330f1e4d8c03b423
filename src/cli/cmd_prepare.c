/* cmd_prepare.c: `limaml prepare` (generic logs) and `limaml prepare movielens`. */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_cmd cmd = {
    "prepare",
    "limaml prepare --schema S --in FILE... --out DIR [options]\n"
    "       limaml prepare movielens --in ML100K_DIR --out DIR [--task user|user,genre] [options]",
    "Stream interaction logs (CSV/TSV described by a JSON schema), group them by task, sort each\n"
    "task by time, assign splits and write a memory-mappable dataset folder.",
    "Splits: a warm task's first floor(train*m) examples are train, the next floor(val*m)\n"
    "validation, the rest test; a new task's first floor(new-val*m) are validation, the rest\n"
    "test; the first ceil(support*t) train examples are the support set, the rest the query\n"
    "set. A split column in the schema overrides train/val/test (a task without train rows is\n"
    "then new). New tasks (never trained on): --new-tasks hash:F (a hash of the task key below\n"
    "F), mod:N (the first task column, an integer, divisible by N) or none.\n"
    "The output folder is built under a temporary name and renamed into place: on any error\n"
    "nothing is left at DIR. `prepare movielens` builds the dataset of PROTOCOL.md from the\n"
    "MovieLens-100K folder through the same join machinery (defaults: --new-tasks mod:5).",
};

static int parse_new_rule(const char *v, lm_prepare_opts *o)
{
    if (!strcmp(v, "none")) {
        o->new_rule = LM_NEWRULE_NONE;
        return 0;
    }
    char *end;
    if (!strncmp(v, "mod:", 4)) {
        unsigned long long m = strtoull(v + 4, &end, 10);
        if (*end || !m || v[4] == '-') return -1;
        o->new_rule = LM_NEWRULE_MOD;
        o->new_mod = m;
        return 0;
    }
    if (!strncmp(v, "hash:", 5)) {
        double f = strtod(v + 5, &end);
        if (*end || !(f >= 0 && f <= 1) || !v[5]) return -1;
        o->new_rule = LM_NEWRULE_HASH;
        o->new_frac = f;
        return 0;
    }
    return -1;
}

static void print_summary(const char *out, const lm_prepare_summary *s)
{
    printf("prepare: wrote %s: %llu tasks (%llu new), %llu examples "
           "(support %llu, query %llu, val %llu, test %llu)\n",
           out, (unsigned long long)s->tasks, (unsigned long long)s->tasks_new,
           (unsigned long long)s->rows_kept, (unsigned long long)s->split_rows[LM_SPLIT_SUPPORT],
           (unsigned long long)s->split_rows[LM_SPLIT_QUERY], (unsigned long long)s->split_rows[LM_SPLIT_VAL],
           (unsigned long long)s->split_rows[LM_SPLIT_TEST]);
    printf("prepare: read %llu rows in %.2f s (%.0f rows/s), %llu dropped by window/cap, "
           "%llu bad rows skipped, %llu missing join keys zero-filled, %llu sort runs\n",
           (unsigned long long)s->rows_read, s->seconds,
           s->seconds > 0 ? (double)s->rows_read / s->seconds : 0.0, (unsigned long long)s->rows_dropped,
           (unsigned long long)s->rows_bad, (unsigned long long)s->missing_keys, (unsigned long long)s->runs);
    for (uint64_t i = 0; i < s->rows_bad && i < LM_BAD_ROWS_KEPT; i++)
        fprintf(stderr, "limaml prepare: skipped bad row: %s\n", s->bad_rows[i]);
    if (s->rows_bad > LM_BAD_ROWS_KEPT)
        fprintf(stderr, "limaml prepare: ... and %llu more bad rows\n",
                (unsigned long long)(s->rows_bad - LM_BAD_ROWS_KEPT));
}

int cmd_prepare(int argc, char **argv)
{
    int movielens = argc > 0 && !strcmp(argv[0], "movielens");
    if (movielens) argc--, argv++;
    const char *schema_path = NULL, *out = NULL, *new_tasks = NULL, *tmp_dir = NULL, *missing = NULL;
    const char *task = NULL;
    cli_list in;
    uint64_t max_per_task, skip_bad;
    double window, train, val, new_val, support;
    size_t mem;
    int force, refit, item_rates;
    cli_opt opts[] = {
        {"schema", CLI_STR, &schema_path, "S", NULL, 0,
         "JSON schema of the logs (required, except with movielens)"},
        {"in", CLI_LIST, &in, "FILE...", NULL, 1, "input logs (movielens: the ml-100k folder)"},
        {"out", CLI_STR, &out, "DIR", NULL, 1, "output dataset folder"},
        {"task", CLI_STR, &task, "DEF", "user", 0, "movielens only: task = user or user,genre"},
        {"max-per-task", CLI_U64, &max_per_task, "N", "0", 0,
         "keep the N most recent examples per task (0: all)"},
        {"window-days", CLI_F64, &window, "X", "0", 0, "keep examples within X days of the newest (0: all)"},
        {"train", CLI_F64, &train, "F", "0.6", 0, "warm task: fraction of examples in train"},
        {"val", CLI_F64, &val, "F", "0.2", 0, "warm task: fraction in validation (the rest: test)"},
        {"new-val", CLI_F64, &new_val, "F", "0.5", 0, "new task: fraction in validation"},
        {"support", CLI_F64, &support, "F", "0.75", 0, "fraction of train in the support set"},
        {"new-tasks", CLI_STR, &new_tasks, "RULE", NULL, 0,
         "new-task rule: hash:F, mod:N or none (default: hash:0.2; movielens mod:5)"},
        {"skip-bad-rows", CLI_U64, &skip_bad, "N", "0", 0, "tolerate up to N bad rows, reported"},
        {"missing-features", CLI_STR, &missing, "error|zero", "error", 0,
         "a key missing from a joined table: an error, or zeros counted in the summary"},
        {"mem", CLI_SIZE, &mem, "BYTES", "256M", 0, "sort buffer; larger inputs spill sorted runs"},
        {"tmp-dir", CLI_STR, &tmp_dir, "DIR", NULL, 0, "folder for sort runs (default: beside --out)"},
        {"refit", CLI_FLAG, &refit, NULL, NULL, 0,
         "warm tasks' validation rows join their train part (a final fit; test parts unchanged)"},
        {"item-rates", CLI_FLAG, &item_rates, NULL, NULL, 0,
         "movielens only: add the item's history rate and log count (\"rates\" in a schema)"},
        {"force", CLI_FLAG, &force, NULL, NULL, 0, "replace an existing output folder"},
        {0},
    };
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) {
        free(in.v);
        return pr == 1 ? 0 : 2;
    }
    int rc = 2;
    lm_prepare_opts o;
    lm_prepare_opts_default(&o);
    o.max_per_task = max_per_task > UINT32_MAX ? UINT32_MAX : (uint32_t)max_per_task;
    o.window_days = window;
    o.train_frac = train;
    o.val_frac = val;
    o.new_val_frac = new_val;
    o.support_frac = support;
    o.skip_bad_rows = skip_bad;
    o.mem_bytes = mem;
    o.tmp_dir = tmp_dir;
    o.force = force;
    o.refit = refit;
    if (movielens) {
        o.new_rule = LM_NEWRULE_MOD;
        o.new_mod = 5;
    }
    const double fr[] = {train, val, new_val, support};
    const char *frn[] = {"train", "val", "new-val", "support"};
    for (int i = 0; i < 4; i++)
        if (!(fr[i] >= 0 && fr[i] <= 1)) {
            cli_usage_error(&cmd, "--%s must be in [0, 1], not %g", frn[i], fr[i]);
            goto done;
        }
    if (train + val > 1 + 1e-12) {
        cli_usage_error(&cmd, "--train plus --val must not exceed 1");
        goto done;
    }
    if (!(window >= 0)) {
        cli_usage_error(&cmd, "--window-days must be >= 0");
        goto done;
    }
    if (!strcmp(missing, "zero"))
        o.missing_features_zero = 1;
    else if (strcmp(missing, "error") != 0) {
        cli_usage_error(&cmd, "--missing-features must be 'error' or 'zero', not '%s'", missing);
        goto done;
    }
    if (new_tasks && parse_new_rule(new_tasks, &o)) {
        cli_usage_error(&cmd, "--new-tasks must be hash:F (0 <= F <= 1), mod:N (N >= 1) or none, not '%s'",
                        new_tasks);
        goto done;
    }
    lm_err err = {0};
    lm_prepare_summary sum;
    if (movielens) {
        if (schema_path) {
            cli_usage_error(&cmd, "--schema is not used with 'prepare movielens'");
            goto done;
        }
        if (in.n != 1) {
            cli_usage_error(&cmd, "'prepare movielens' takes one --in folder (the ml-100k folder)");
            goto done;
        }
        int def;
        if (!strcmp(task, "user"))
            def = LM_ML_TASK_USER;
        else if (!strcmp(task, "user,genre"))
            def = LM_ML_TASK_USER_GENRE;
        else {
            cli_usage_error(&cmd, "--task must be 'user' or 'user,genre', not '%s'", task);
            goto done;
        }
        if (item_rates) def |= LM_ML_ITEM_RATES;
        if (lm_prepare_movielens(in.v[0], out, def, &o, &sum, &err) != LM_OK) {
            rc = cli_fail(&err);
            goto done;
        }
    } else {
        if (item_rates) {
            cli_usage_error(&cmd, "--item-rates is for 'prepare movielens'; a schema names its \"rates\"");
            goto done;
        }
        if (!schema_path) {
            cli_usage_error(&cmd, "missing required option --schema");
            goto done;
        }
        lm_schema *schema;
        if (lm_schema_load(&schema, schema_path, &err) != LM_OK) {
            rc = cli_fail(&err);
            goto done;
        }
        int r = lm_prepare(schema, in.v, in.n, out, &o, &sum, &err);
        lm_schema_free(schema);
        if (r != LM_OK) {
            rc = cli_fail(&err);
            goto done;
        }
    }
    print_summary(out, &sum);
    rc = 0;
done:
    free(in.v);
    return rc;
}
