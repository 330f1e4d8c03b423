/* cmd_eval.c: `limaml eval` and `limaml adapt`. */
#include "cli/cli.h"
#include "eval/floor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_from(const char *s)
{
    if (!strcmp(s, "val")) return LM_ADAPT_VAL;
    if (!strcmp(s, "train+val")) return LM_ADAPT_TRAIN_VAL;
    if (!strcmp(s, "train")) return LM_ADAPT_TRAIN;
    if (!strcmp(s, "all")) return LM_ADAPT_ALL;
    return -1;
}

static int parse_pool(const char *s)
{
    return !strcmp(s, "latest") ? LM_POOL_LATEST
           : !strcmp(s, "mean") ? LM_POOL_MEAN
           : !strcmp(s, "max")  ? LM_POOL_MAX
           : !strcmp(s, "cos")  ? LM_POOL_COS
                                : -1;
}

static void json_num(const char *name, double v, int comma)
{
    if (isnan(v))
        printf("\"%s\":null%s", name, comma ? "," : "");
    else
        printf("\"%s\":%.6f%s", name, v, comma ? "," : "");
}

static int pool_given(const char *pool)
{
    return strcmp(pool, "latest") != 0;
}

int cmd_eval(int argc, char **argv)
{
    static const cli_cmd cmd = {
        "eval",
        "limaml eval --model M --data DIR [--adapt-steps K --task-lr A] [--json]\n"
        "       limaml eval --floor --data DIR [--json]",
        "Score a model on every task's test part (pooled AUC, slices, log loss), after adapting it per\n"
        "task with K SGD steps on its validation part (LiMAML: the meta block; others: the network).",
        "Slices: tasks with fewer than 25 test examples, with 25 or more, warm tasks, new tasks.\n"
        "--floor scores the rule that needs no learning instead of a model (PROTOCOL.md): the task's\n"
        "smoothed positive rate from its rows before the test part plus the item's (the first\n"
        "categorical column) from the training pool, each with 5 pseudo-examples at the global rate.",
    };
    const char *model, *data, *from, *score, *pool;
    uint64_t steps, cap, threads;
    double task_lr, stale_days;
    int json, warm_only, use_floor;
    cli_opt opts[] = {
        {"model", CLI_STR, &model, "M", NULL, 0, "model file (limaml train); required without --floor"},
        {"floor", CLI_FLAG, &use_floor, NULL, NULL, 0, "score the count floor (no model, no learning)"},
        {"data", CLI_STR, &data, "DIR", NULL, 1, "dataset folder (limaml prepare), same schema"},
        {"adapt-steps", CLI_U64, &steps, "K", "0", 0, "adaptation steps per task (0: none)"},
        {"task-lr", CLI_F64, &task_lr, "A", "the model's", 0, "adaptation learning rate"},
        {"adapt-from", CLI_STR, &from, "PART", "val", 0, "adaptation rows: val, train+val or train"},
        {"adapt-cap", CLI_U64, &cap, "N", "0", 0, "at most N most recent adaptation rows (0: all)"},
        {"pool", CLI_STR, &pool, "P", "latest", 0,
         "LiMAML embedding: latest, mean, max or cos over the adaptation rows (appendix A.4)"},
        {"stale-days", CLI_F64, &stale_days, "D", "0", 0,
         "adapt only on rows at least D days older than the task's latest adaptation row (a stale "
         "embedding; 0: fresh)"},
        {"warm-only", CLI_FLAG, &warm_only, NULL, NULL, 0, "score warm tasks only"},
        {"score", CLI_STR, &score, "PART", "test", 0,
         "scored part: test, or val (to choose K and A: with --adapt-from train --warm-only)"},
        {"threads", CLI_U64, &threads, "N", "0", 0, "threads (0: all cores)"},
        {"json", CLI_FLAG, &json, NULL, NULL, 0, "print one JSON object"},
        {0},
    };
    task_lr = -1; /* the model's */
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    lm_eval_opts o;
    lm_eval_opts_default(&o);
    if (steps > 100000) return cli_usage_error(&cmd, "--adapt-steps must be at most 100000");
    o.adapt_steps = (uint32_t)steps;
    if (task_lr != -1 && !(task_lr > 0)) return cli_usage_error(&cmd, "--task-lr must be > 0");
    o.task_lr = task_lr;
    if ((o.adapt_from = parse_from(from)) < 0)
        return cli_usage_error(&cmd, "--adapt-from must be val, train+val or train, not '%s'", from);
    o.adapt_cap = cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap;
    o.warm_only = warm_only;
    if (!strcmp(score, "val"))
        o.score_split = LM_SPLIT_VAL;
    else if (strcmp(score, "test"))
        return cli_usage_error(&cmd, "--score must be test or val, not '%s'", score);
    o.threads = (int)threads;
    if (o.adapt_steps > 0 && o.score_split == LM_SPLIT_VAL && o.adapt_from != LM_ADAPT_TRAIN)
        return cli_usage_error(&cmd, "--score val adapts on the train part only: add --adapt-from train");
    if (use_floor && (steps || pool_given(pool) || stale_days > 0))
        return cli_usage_error(&cmd,
                               "--floor takes no adaptation options (--adapt-steps, --pool, --stale-days)");
    if (!model == !use_floor) return cli_usage_error(&cmd, "give either --model or --floor");
    if (use_floor && o.score_split != LM_SPLIT_TEST)
        return cli_usage_error(&cmd, "--floor scores the test part only");
    if ((o.pool = parse_pool(pool)) < 0)
        return cli_usage_error(&cmd, "--pool must be latest, mean, max or cos, not '%s'", pool);
    if (!(stale_days >= 0 && stale_days <= 1e6))
        return cli_usage_error(&cmd, "--stale-days must be in [0, 1e6]");
    o.stale_seconds = stale_days * 86400.0;
    lm_err err = {0};
    lm_model *m = NULL;
    if (model && lm_model_load(&m, model, &err)) return cli_fail(&err);
    lm_dataset *ds;
    if (lm_dataset_open(&ds, data, 0, &err)) {
        lm_model_free(m);
        return cli_fail(&err);
    }
    lm_eval_result r;
    lm_floor_opts fo;
    lm_floor_opts_default(&fo);
    fo.warm_only = warm_only;
    int rc = m ? lm_evaluate(m, ds, &o, &r, &err) : lm_floor_evaluate(ds, &fo, &r, &err);
    const char *algo = m ? lm_train_algo_name(lm_model_algo(m)) : "floor";
    if (!rc) {
        if (json) {
            printf("{\"model\":\"%s\",\"algo\":\"%s\",\"part\":\"%s\",\"adapt_steps\":%u,", m ? model : "",
                   algo, score, m ? o.adapt_steps : 0);
            json_num("auc", r.auc, 1);
            printf("\"slices\":{");
            json_num("lt25", r.auc_lt25, 1);
            json_num("ge25", r.auc_ge25, 1);
            json_num("warm", r.auc_warm, 1);
            json_num("new", r.auc_new, 0);
            printf("},");
            json_num("logloss", r.logloss, 1);
            printf("\"examples\":%llu,\"tasks\":%llu,\"tasks_adapted\":%llu,\"rows_adapted\":%llu,",
                   (unsigned long long)r.examples, (unsigned long long)r.tasks,
                   (unsigned long long)r.tasks_adapted, (unsigned long long)r.rows_adapted);
            json_num("adapt_lag_days", r.adapt_lag_mean / 86400.0, 1);
            json_num("adapt_age_days", r.adapt_age_mean / 86400.0, 1);
            printf("\"seconds\":%.3f}\n", r.seconds);
        } else if (!m) {
            printf("eval count floor (task rate + item rate, no learning): test AUC %.4f, log loss %.4f over "
                   "%llu "
                   "examples\n",
                   r.auc, r.logloss, (unsigned long long)r.examples);
            printf("slices: <25 %.4f (%llu), >=25 %.4f (%llu), warm %.4f (%llu), new %.4f (%llu)\n",
                   r.auc_lt25, (unsigned long long)r.examples_lt25, r.auc_ge25,
                   (unsigned long long)r.examples_ge25, r.auc_warm, (unsigned long long)r.examples_warm,
                   r.auc_new, (unsigned long long)r.examples_new);
        } else {
            printf("eval %s (%s, %u adaptation steps): %s AUC %.4f, log loss %.4f over %llu examples of %llu "
                   "tasks\n",
                   model, algo, o.adapt_steps, score, r.auc, r.logloss, (unsigned long long)r.examples,
                   (unsigned long long)r.tasks);
            printf("slices: <25 %.4f (%llu), >=25 %.4f (%llu), warm %.4f (%llu), new %.4f (%llu)\n",
                   r.auc_lt25, (unsigned long long)r.examples_lt25, r.auc_ge25,
                   (unsigned long long)r.examples_ge25, r.auc_warm, (unsigned long long)r.examples_warm,
                   r.auc_new, (unsigned long long)r.examples_new);
        }
    }
    lm_dataset_close(ds);
    lm_model_free(m);
    return rc ? cli_fail(&err) : 0;
}

int cmd_adapt(int argc, char **argv)
{
    static const cli_cmd cmd = {
        "adapt",
        "limaml adapt --model M --data DIR --task KEY [--steps K --task-lr A --adapt-from PART]",
        "Adapt a model to one task (K SGD steps at rate A on the task's rows; LiMAML: the meta block\n"
        "only) and print the meta embedding of its latest adaptation example as JSON.",
        "A composite task key joins its columns' values with '|' (e.g. 42|Drama).",
    };
    const char *model, *data, *task, *from, *pool;
    uint64_t steps;
    double task_lr;
    cli_opt opts[] = {
        {"model", CLI_STR, &model, "M", NULL, 1, "model file"},
        {"data", CLI_STR, &data, "DIR", NULL, 1, "dataset folder"},
        {"task", CLI_STR, &task, "KEY", NULL, 1, "the task's key"},
        {"steps", CLI_U64, &steps, "K", "the model's", 0, "adaptation steps"},
        {"task-lr", CLI_F64, &task_lr, "A", "the model's", 0, "adaptation learning rate"},
        {"adapt-from", CLI_STR, &from, "PART", "train+val", 0, "rows: val, train+val, train or all"},
        {"pool", CLI_STR, &pool, "P", "latest", 0, "latest, mean, max or cos (appendix A.4)"},
        {0},
    };
    steps = UINT64_MAX; /* the model's */
    task_lr = -1;
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    int af = parse_from(from);
    if (af < 0) return cli_usage_error(&cmd, "--adapt-from must be val, train+val or train, not '%s'", from);
    int pk = !strcmp(pool, "latest") ? LM_POOL_LATEST
             : !strcmp(pool, "mean") ? LM_POOL_MEAN
             : !strcmp(pool, "max")  ? LM_POOL_MAX
             : !strcmp(pool, "cos")  ? LM_POOL_COS
                                     : -1;
    if (pk < 0) return cli_usage_error(&cmd, "--pool must be latest, mean, max or cos, not '%s'", pool);
    int given_steps = steps != UINT64_MAX, given_lr = task_lr != -1;
    if (given_steps && steps > 100000) return cli_usage_error(&cmd, "--steps must be at most 100000");
    if (given_lr && !(task_lr > 0)) return cli_usage_error(&cmd, "--task-lr must be > 0");
    lm_err err = {0};
    lm_model *m;
    if (lm_model_load(&m, model, &err)) return cli_fail(&err);
    lm_dataset *ds;
    if (lm_dataset_open(&ds, data, 0, &err)) {
        lm_model_free(m);
        return cli_fail(&err);
    }
    char *key = strdup(task);
    for (char *c = key; *c; c++)
        if (*c == '|') *c = LM_KEY_SEP;
    uint64_t t;
    int rc = lm_dataset_find_task(ds, key, strlen(key), &t);
    if (rc) {
        fprintf(stderr, "limaml adapt: --task: no task '%s' in %s\n", task, data);
        free(key);
        lm_dataset_close(ds);
        lm_model_free(m);
        return 1;
    }
    size_t E = lm_model_emb_dim(m);
    float *emb = malloc(E * sizeof *emb);
    rc = emb ? lm_adapt_task(m, ds, t, given_steps ? (uint32_t)steps : UINT32_MAX, given_lr ? task_lr : -1,
                             af, pk, emb, &err)
             : LM_ENOMEM;
    if (!rc) {
        printf("{\"task\":\"%s\",\"embedding\":[", task);
        for (size_t i = 0; i < E; i++) printf("%s%.9g", i ? "," : "", emb[i]);
        printf("]}\n");
    }
    free(emb);
    free(key);
    lm_dataset_close(ds);
    lm_model_free(m);
    return rc ? cli_fail(&err) : 0;
}
