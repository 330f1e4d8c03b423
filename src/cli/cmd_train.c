/* cmd_train.c: `limaml train`. */
#include "cli/cli.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const cli_cmd cmd = {
    "train",
    "limaml train --data DIR --out MODEL [--algo limaml|maml|plain|widedeep] [options]",
    "Train a model on the warm tasks of a dataset made by `limaml prepare`.",
    "Algorithms: limaml (Algorithm 2a: the inner loop adapts the meta block, n SGD steps on each\n"
    "task's support set; the outer loop updates both blocks through them, exact second order;\n"
    "by default its objective also counts the adapted support loss, 3 times: the best servable\n"
    "configuration on validation, docs/EXPERIMENTS.md; --support-weight 0 is the paper's),\n"
    "maml (entire-network MAML), plain (Adam on mini-batches of whole tasks) and widedeep (plain\n"
    "with a learned task-id embedding). The model kept is the epoch of best validation AUC (warm\n"
    "tasks' validation parts, after adapting on their train parts for limaml and maml).\n"
    "Same seed and thread count: the same model, bit for bit, also across --resume.",
};

typedef struct prog {
    int tty;
    double last;
} prog;

static void on_progress(void *ctx, const lm_train_progress *p)
{
    prog *g = ctx;
    if (p->epoch_end) {
        fprintf(stderr, "%sepoch %u/%u: train loss %.4f, val AUC %.4f, val log loss %.4f, %.0f tasks/s%s\n",
                g->tty ? "\r\033[K" : "", p->epoch, p->epochs, p->loss, p->val_auc, p->val_loss,
                p->tasks_per_s, p->improved ? " (best)" : "");
        return;
    }
    if (!g->tty) return;
    if (p->seconds - g->last < 0.1 && p->batch != p->batches) return;
    g->last = p->seconds;
    int width = 24, fill = (int)((double)p->batch / (double)p->batches * width);
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r\033[Kepoch %u/%u [%s] loss %.4f  %.0f tasks/s  ETA %.0fs", p->epoch, p->epochs, bar,
            p->loss, p->tasks_per_s, p->eta_seconds);
}

/* --members M: M networks with seeds S, S+1, .., each trained as the single one would be, then
 * one ensemble model (lm_model_ensemble). A --log file gets the members' lines in turn, each
 * with "member": i (1-based), so one file tells them apart. */
static int train_members(const lm_dataset *ds, const lm_train_opts *base, size_t M, const char *out,
                         const char *algo, lm_err *err)
{
    lm_model **mem = calloc(M, sizeof *mem), *e = NULL;
    int rc = mem ? LM_OK : lm_err_set(err, LM_ENOMEM, "out of memory");
    if (!rc && base->log_path) rc = lm_write_file_atomic(base->log_path, "", 0, err); /* members append */
    for (size_t i = 0; !rc && i < M; i++) {
        lm_train_opts o = *base;
        o.seed = base->seed + i;
        o.log_member = (uint32_t)(i + 1);
        lm_train_report rep;
        if ((rc = lm_train(ds, &o, &mem[i], &rep, err))) break;
        printf("train: member %zu of %zu (seed %llu): %u epochs (best %u: val AUC %.4f), %.1f s\n", i + 1, M,
               (unsigned long long)o.seed, rep.epochs_run, rep.best_epoch, rep.best_val_auc, rep.seconds);
        fflush(stdout);
    }
    if (!rc && (rc = lm_model_ensemble(&e, mem, M, err)) == LM_OK) memset(mem, 0, M * sizeof *mem);
    if (!rc) rc = lm_model_save(e, out, err);
    if (!rc)
        printf(
            "train: wrote %s: an ensemble of %zu %s networks (seeds %llu..%llu), meta embedding %zu floats\n",
            out, M, algo, (unsigned long long)base->seed, (unsigned long long)(base->seed + M - 1),
            lm_model_emb_dim(e));
    for (size_t i = 0; mem && i < M; i++) lm_model_free(mem[i]);
    free(mem);
    lm_model_free(e);
    return rc;
}

int cmd_train(int argc, char **argv)
{
    const char *data, *out, *algo, *meta_block, *global_block, *decay, *log_path, *ckpt, *engine;
    uint64_t n, tpb, epochs, warmup, seed, threads, patience, stop_after, members;
    double task_lr, lr, clip, dropout, sw = LM_SUPPORT_WEIGHT_AUTO, idf;
    const char *sw_s = NULL;
    int first_order, scale, resume, quiet, emb_logit;
    cli_opt opts[] = {
        {"data", CLI_STR, &data, "DIR", NULL, 1, "dataset folder (limaml prepare)"},
        {"out", CLI_STR, &out, "MODEL", NULL, 1, "model file to write (safetensors)"},
        {"algo", CLI_STR, &algo, "A", "limaml", 0, "limaml, maml, plain or widedeep"},
        {"meta-block", CLI_STR, &meta_block, "SPEC", "mlp:32,16", 0,
         "mlp:H1,...,E or id:E (widedeep: id:16)"},
        {"global-block", CLI_STR, &global_block, "SPEC", "mlp:64,32", 0,
         "mlp:H1,... (hidden sizes; output 1)"},
        {"inner-steps", CLI_U64, &n, "N", "1", 0, "inner SGD steps on the support set (limaml, maml)"},
        {"task-lr", CLI_F64, &task_lr, "A", "0.1", 0, "inner and adaptation learning rate alpha"},
        {"first-order", CLI_FLAG, &first_order, NULL, NULL, 0, "drop the second-order terms"},
        {"support-weight", CLI_STR, &sw_s, "W", "auto", 0,
         "add W times the adapted support loss to the outer objective; auto: 3 for limaml, 0 for maml "
         "(0: the paper's algorithms)"},
        {"emb-logit", CLI_FLAG, &emb_logit, NULL, NULL, 0,
         "also add the meta embedding's first coordinate E[0] to the logit (a per-task shift)"},
        {"tasks-per-batch", CLI_U64, &tpb, "N", "32", 0, "tasks per outer update"},
        {"epochs", CLI_U64, &epochs, "N", "10", 0, "passes over the training tasks"},
        {"lr", CLI_F64, &lr, "X", "0.001", 0, "outer (Adam) learning rate"},
        {"lr-scale-with-batch", CLI_FLAG, &scale, NULL, NULL, 0,
         "scale --lr by tasks-per-batch / 32 (section 6.4)"},
        {"clip", CLI_F64, &clip, "X", "1.0", 0, "clip the gradient's global norm (0: off)"},
        {"warmup", CLI_U64, &warmup, "N", "0", 0, "outer updates of linear learning-rate warm-up"},
        {"decay", CLI_STR, &decay, "KIND", "linear", 0,
         "learning-rate decay after warm-up: linear, cosine or none"},
        {"dropout", CLI_F64, &dropout, "P", "0", 0, "dropout after every hidden layer"},
        {"patience", CLI_U64, &patience, "N", "3", 0,
         "stop after N epochs without a better val AUC (0: never)"},
        {"id-default-frac", CLI_F64, &idf, "F", "0.1", 0,
         "id meta block: tasks trained through the shared default row"},
        {"seed", CLI_U64, &seed, "S", "1", 0, "random seed"},
        {"members", CLI_U64, &members, "M", "1", 0,
         "train M networks with seeds S..S+M-1 and write them as one ensemble model (limaml ensemble; "
         "--log FILE gets each member's lines with a \"member\" field)"},
        {"threads", CLI_U64, &threads, "N", "0", 0, "threads (0: all cores)"},
        {"log", CLI_STR, &log_path, "FILE", NULL, 0, "per-epoch JSON lines"},
        {"checkpoint", CLI_STR, &ckpt, "FILE", NULL, 0, "checkpoint written at every epoch end"},
        {"resume", CLI_FLAG, &resume, NULL, NULL, 0, "continue from --checkpoint"},
        {"stop-after-epochs", CLI_U64, &stop_after, "N", "0", 0,
         "end this run after N epochs (resume later; 0: all)"},
        {"engine", CLI_STR, &engine, "E", "auto", 0,
         "meta-gradient engine: auto, fast (batched) or reference (per task)"},
        {"quiet", CLI_FLAG, &quiet, NULL, NULL, 0, "no progress on stderr"},
        {0},
    };
    int pr = cli_parse(&cmd, opts, argc, argv, NULL);
    if (pr) return pr == 1 ? 0 : 2;
    lm_train_opts o;
    lm_train_opts_default(&o);
    if (!strcmp(algo, "limaml"))
        o.algo = LM_TRAIN_LIMAML;
    else if (!strcmp(algo, "maml"))
        o.algo = LM_TRAIN_MAML;
    else if (!strcmp(algo, "plain"))
        o.algo = LM_TRAIN_PLAIN;
    else if (!strcmp(algo, "widedeep"))
        o.algo = LM_TRAIN_WIDEDEEP;
    else
        return cli_usage_error(&cmd, "--algo must be limaml, maml, plain or widedeep, not '%s'", algo);
    if (!strcmp(decay, "linear"))
        o.decay = LM_DECAY_LINEAR;
    else if (!strcmp(decay, "cosine"))
        o.decay = LM_DECAY_COSINE;
    else if (!strcmp(decay, "none"))
        o.decay = LM_DECAY_NONE;
    else
        return cli_usage_error(&cmd, "--decay must be linear, cosine or none, not '%s'", decay);
    if (!strcmp(engine, "auto"))
        o.engine = LM_ENGINE_AUTO;
    else if (!strcmp(engine, "fast"))
        o.engine = LM_ENGINE_FAST;
    else if (!strcmp(engine, "reference"))
        o.engine = LM_ENGINE_REFERENCE;
    else
        return cli_usage_error(&cmd, "--engine must be auto, fast or reference, not '%s'", engine);
    if (n > 64) return cli_usage_error(&cmd, "--inner-steps must be at most 64");
    if (tpb < 1 || tpb > 1000000) return cli_usage_error(&cmd, "--tasks-per-batch must be in [1, 1000000]");
    if (epochs < 1 || epochs > 100000) return cli_usage_error(&cmd, "--epochs must be in [1, 100000]");
    if (threads > 1024) return cli_usage_error(&cmd, "--threads must be at most 1024");
    if (resume && !ckpt) return cli_usage_error(&cmd, "--resume needs --checkpoint FILE");
    if (members < 1 || members > 16) return cli_usage_error(&cmd, "--members must be in [1, 16]");
    if (members > 1 && (ckpt || stop_after))
        return cli_usage_error(&cmd, "--members trains every member to its end: no --checkpoint or "
                                     "--stop-after-epochs (train the members apart, then limaml ensemble)");
    if (strcmp(sw_s, "auto") != 0) {
        char *end;
        sw = strtod(sw_s, &end);
        if (!*sw_s || *end || !(sw >= 0) || sw > 1e6)
            return cli_usage_error(&cmd, "--support-weight must be auto or a number in [0, 1e6], not '%s'",
                                   sw_s);
    }
    o.meta_block = meta_block;
    o.global_block = global_block;
    o.inner_steps = (uint32_t)n;
    o.task_lr = task_lr;
    o.first_order = first_order;
    o.support_weight = sw;
    o.emb_logit = emb_logit;
    o.tasks_per_batch = (uint32_t)tpb;
    o.epochs = (uint32_t)epochs;
    o.lr = lr;
    o.lr_scale_with_batch = scale;
    o.clip = clip;
    o.warmup = warmup;
    o.dropout = dropout;
    o.patience = (uint32_t)patience;
    o.id_default_frac = idf;
    o.seed = seed;
    o.threads = (int)threads;
    o.log_path = log_path;
    o.checkpoint = ckpt;
    o.resume = resume;
    o.stop_after_epochs = stop_after > UINT32_MAX ? UINT32_MAX : (uint32_t)stop_after;
    prog g = {isatty(2), -1};
    if (!quiet) {
        o.progress = on_progress;
        o.progress_ctx = &g;
    }
    lm_err err = {0};
    lm_dataset *ds;
    if (lm_dataset_open(&ds, data, 0, &err)) return cli_fail(&err);
    if (members > 1) {
        int rc = train_members(ds, &o, (size_t)members, out, algo, &err);
        lm_dataset_close(ds);
        return rc ? cli_fail(&err) : 0;
    }
    lm_model *m;
    lm_train_report rep;
    if (lm_train(ds, &o, &m, &rep, &err)) {
        lm_dataset_close(ds);
        return cli_fail(&err);
    }
    int rc = lm_model_save(m, out, &err);
    if (!rc)
        printf("train: wrote %s: %s, %llu training tasks, %u epochs (best %u: val AUC %.4f), %.1f s, %.0f "
               "tasks/s\n",
               out, algo, (unsigned long long)rep.train_tasks, rep.epochs_run, rep.best_epoch,
               rep.best_val_auc, rep.seconds, rep.tasks_per_s);
    lm_model_free(m);
    lm_dataset_close(ds);
    return rc ? cli_fail(&err) : 0;
}
