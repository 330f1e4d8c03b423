/* train.c: the outer loop. For each batch of tasks the per-task engine (lm_meta_task) runs in
 * parallel, one workspace and one pair of gradient buffers per thread; the threads' sums are
 * added in thread order, averaged over the batch and applied by Adam. Tasks are dealt to
 * threads statically and every random draw is seeded by (seed, epoch, task), so a run is a
 * function of its options, seed and thread count alone, and --resume (which restarts at an
 * epoch boundary from the checkpoint's exact state) continues it bit for bit. */
#include "meta/batch.h"
#include "meta/model.h"
#include "meta/optim.h"
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

void lm_train_opts_default(lm_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->algo = LM_TRAIN_LIMAML;
    o->meta_block = "mlp:32,16";
    o->global_block = "mlp:64,32";
    o->inner_steps = 1;
    o->task_lr = 0.1;
    o->support_weight = LM_SUPPORT_WEIGHT_AUTO;
    o->tasks_per_batch = 32;
    o->epochs = 10;
    o->lr = 1e-3;
    o->clip = 1.0;
    o->warmup = 0;
    o->decay = LM_DECAY_LINEAR;
    o->seed = 1;
    o->patience = 3;
    o->val_adapt_steps = UINT32_MAX; /* the inner steps */
    o->id_default_frac = 0.1;
}

typedef struct thr {
    lm_meta_ws_f32 ws;
    lm_rows_f32 sup, qry;
    float *gm, *gg;
    double loss;
    int rc;
    lm_err err;
} thr;

/* ---- checkpoints: the whole training state at an epoch boundary --------------------------- */

typedef struct state {
    float *theta_m, *theta_g, *mm, *vm, *mg, *vg; /* parameters and Adam moments */
    float *best_m, *best_g;
    lm_adam adam;
    uint32_t epoch; /* epochs completed */
    uint32_t best_epoch, bad_epochs;
    double best_auc, best_loss;
} state;

/* A number for a JSON text: `fmt` applied to `v`, or null when it is not finite (a run without
 * validation rows, such as a refit, has a NaN validation AUC and log loss). Returns buf. */
static const char *json_num(char *buf, size_t cap, const char *fmt, double v)
{
    if (isfinite(v))
        snprintf(buf, cap, fmt, v);
    else
        snprintf(buf, cap, "null");
    return buf;
}

/* A number read back from JSON: null (or anything else) is NaN. */
static double json_get_num(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItem(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static int save_checkpoint(const char *path, const lm_net *n, const state *s, const char *opts_sig,
                           lm_err *err)
{
    size_t pm = n->meta_np, pg = n->global_np;
    lm_st_tensor t[8];
    const float *bufs[8] = {s->theta_m, s->theta_g, s->mm, s->vm, s->mg, s->vg, s->best_m, s->best_g};
    const char *names[8] = {"theta_m",       "theta_g",       "adam_m_meta", "adam_v_meta",
                            "adam_m_global", "adam_v_global", "best_m",      "best_g"};
    for (int i = 0; i < 8; i++) {
        size_t len = (i == 0 || i == 2 || i == 3 || i == 6) ? pm : pg;
        memset(&t[i], 0, sizeof t[i]);
        snprintf(t[i].name, sizeof t[i].name, "%s", names[i]);
        t[i].dtype = LM_DT_F32;
        t[i].ndim = 1;
        t[i].shape[0] = len;
        t[i].data = bufs[i];
        t[i].nbytes = len * sizeof(float);
    }
    char st[512], auc[40], loss[40];
    snprintf(st, sizeof st,
             "{\"epoch\":%u,\"adam_step\":%" PRIu64 ",\"best_epoch\":%u,\"bad_epochs\":%u,\"best_auc\":%s,"
             "\"best_loss\":%s}",
             s->epoch, s->adam.step, s->best_epoch, s->bad_epochs,
             json_num(auc, sizeof auc, "%.17g", s->best_auc),
             json_num(loss, sizeof loss, "%.17g", s->best_loss));
    const char *k[2] = {"limaml_checkpoint", "options"}, *v[2] = {st, opts_sig};
    return lm_st_write(path, t, 8, k, v, 2, err);
}

static int load_checkpoint(const char *path, const lm_net *n, state *s, const char *opts_sig, lm_err *err)
{
    lm_st_file *f;
    int rc = lm_st_open(&f, path, err);
    if (rc) return rc;
    const char *st = lm_st_meta(f, "limaml_checkpoint"), *sig = lm_st_meta(f, "options");
    cJSON *j = st ? cJSON_Parse(st) : NULL;
    if (!j || !sig) {
        rc = lm_err_set(err, LM_EFORMAT, "%s: not a limaml training checkpoint", path);
        goto done;
    }
    if (strcmp(sig, opts_sig) != 0) {
        rc = lm_err_set(err, LM_EMISMATCH,
                        "%s: the checkpoint was made with other options or data; resume needs the same ones",
                        path);
        goto done;
    }
    float *bufs[8] = {s->theta_m, s->theta_g, s->mm, s->vm, s->mg, s->vg, s->best_m, s->best_g};
    const char *names[8] = {"theta_m",       "theta_g",       "adam_m_meta", "adam_v_meta",
                            "adam_m_global", "adam_v_global", "best_m",      "best_g"};
    for (int i = 0; i < 8 && !rc; i++) {
        size_t len = (i == 0 || i == 2 || i == 3 || i == 6) ? n->meta_np : n->global_np;
        const lm_st_tensor *t = lm_st_find(f, names[i]);
        if (!t || t->dtype != LM_DT_F32 || t->nbytes != len * sizeof(float))
            rc =
                lm_err_set(err, LM_EFORMAT, "%s: tensor %s is missing or has the wrong size", path, names[i]);
        else
            memcpy(bufs[i], t->data, t->nbytes);
    }
    if (!rc) {
        s->epoch = (uint32_t)cJSON_GetObjectItem(j, "epoch")->valuedouble;
        s->adam.step = (uint64_t)cJSON_GetObjectItem(j, "adam_step")->valuedouble;
        s->best_epoch = (uint32_t)cJSON_GetObjectItem(j, "best_epoch")->valuedouble;
        s->bad_epochs = (uint32_t)cJSON_GetObjectItem(j, "bad_epochs")->valuedouble;
        s->best_auc = json_get_num(j, "best_auc");
        s->best_loss = json_get_num(j, "best_loss");
    }
done:
    cJSON_Delete(j);
    lm_st_close(f);
    return rc;
}

/* Everything that decides the trajectory, so a checkpoint is only resumed by the same run. */
static char *options_signature(const lm_train_opts *o, const lm_dataset *ds, int threads)
{
    /* room for the fixed fields (under 600 bytes) and the two block strings, whatever their length */
    size_t cap = 1024 + strlen(o->meta_block) + strlen(o->global_block);
    char *s = malloc(cap);
    if (!s) return NULL;
    size_t ilen;
    const char *info = lm_dataset_info_json(ds, &ilen);
    snprintf(s, cap,
             "algo=%d meta=%s global=%s n=%u alpha=%.17g fo=%d w=%.17g B=%u epochs=%u lr=%.17g scale=%d "
             "clip=%.17g "
             "warmup=%" PRIu64 " decay=%d dropout=%.17g seed=%" PRIu64
             " threads=%d patience=%u vsteps=%u idf=%.17g "
             "data=%016" PRIx64 "/%" PRIu64,
             o->algo, o->meta_block, o->global_block, o->inner_steps, o->task_lr, o->first_order,
             o->support_weight, o->tasks_per_batch, o->epochs, o->lr, o->lr_scale_with_batch, o->clip,
             o->warmup, o->decay, o->dropout, o->seed, threads, o->patience, o->val_adapt_steps,
             o->id_default_frac, lm_hash64(info, ilen, 0), lm_dataset_nrows(ds));
    /* appended only when on, so checkpoints made before the option still resume */
    if (o->emb_logit) snprintf(s + strlen(s), cap - strlen(s), " emb_logit=1");
    return s;
}

/* ---- the loop ------------------------------------------------------------------------------------ */

static int check_opts(const lm_train_opts *o, lm_err *err)
{
    if (o->algo < LM_TRAIN_PLAIN || o->algo > LM_TRAIN_LIMAML)
        return lm_err_set(err, LM_EINVAL, "--algo: unknown algorithm");
    if (o->tasks_per_batch < 1) return lm_err_set(err, LM_EINVAL, "--tasks-per-batch must be >= 1");
    if (o->epochs < 1) return lm_err_set(err, LM_EINVAL, "--epochs must be >= 1");
    if (!(o->lr > 0)) return lm_err_set(err, LM_EINVAL, "--lr must be > 0");
    if (!(o->task_lr >= 0)) return lm_err_set(err, LM_EINVAL, "--task-lr must be >= 0");
    if (!(o->dropout >= 0 && o->dropout < 1))
        return lm_err_set(err, LM_EINVAL, "--dropout must be in [0, 1)");
    if (!(o->clip >= 0)) return lm_err_set(err, LM_EINVAL, "--clip must be >= 0");
    if (!(o->support_weight >= 0)) return lm_err_set(err, LM_EINVAL, "--support-weight must be >= 0");
    if (o->inner_steps > 64) return lm_err_set(err, LM_EINVAL, "--inner-steps must be at most 64");
    if (!(o->id_default_frac >= 0 && o->id_default_frac < 1))
        return lm_err_set(err, LM_EINVAL, "--id-default-frac must be in [0, 1)");
    if (o->resume && !o->checkpoint) return lm_err_set(err, LM_EINVAL, "--resume needs --checkpoint");
    return LM_OK;
}

static char *train_json(const lm_train_opts *o, const lm_train_report *r, int threads)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "algo", lm_train_algo_name(o->algo));
    cJSON_AddStringToObject(j, "meta_block", o->meta_block);
    cJSON_AddStringToObject(j, "global_block", o->global_block);
    cJSON_AddNumberToObject(j, "inner_steps", o->inner_steps);
    cJSON_AddNumberToObject(j, "task_lr", o->task_lr);
    cJSON_AddBoolToObject(j, "first_order", o->first_order);
    cJSON_AddNumberToObject(j, "support_weight", o->support_weight);
    cJSON_AddNumberToObject(j, "tasks_per_batch", o->tasks_per_batch);
    cJSON_AddNumberToObject(j, "epochs", o->epochs);
    cJSON_AddNumberToObject(j, "lr", o->lr);
    cJSON_AddBoolToObject(j, "lr_scale_with_batch", o->lr_scale_with_batch);
    cJSON_AddNumberToObject(j, "clip", o->clip);
    cJSON_AddNumberToObject(j, "warmup", (double)o->warmup);
    cJSON_AddNumberToObject(j, "decay", o->decay);
    cJSON_AddNumberToObject(j, "dropout", o->dropout);
    if (o->emb_logit) cJSON_AddBoolToObject(j, "emb_logit", 1);
    cJSON_AddNumberToObject(j, "seed", (double)o->seed);
    cJSON_AddNumberToObject(j, "threads", threads);
    cJSON_AddNumberToObject(j, "epochs_run", r->epochs_run);
    cJSON_AddNumberToObject(j, "best_epoch", r->best_epoch);
    cJSON_AddNumberToObject(j, "best_val_auc", r->best_val_auc);
    cJSON_AddNumberToObject(j, "train_tasks", (double)r->train_tasks);
    /* no wall time here: the same run must write the same bytes */
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    char *out = s ? lm_strdup(s) : NULL;
    if (s) cJSON_free(s);
    return out;
}

int lm_train(const lm_dataset *ds, const lm_train_opts *opts, lm_model **out, lm_train_report *rep,
             lm_err *err)
{
    double t0 = lm_now();
    *out = NULL;
    memset(rep, 0, sizeof *rep);
    /* The support term's default depends on the algorithm: LiMAML's best servable configuration
     * on validation has it (w = 3: Algorithm 2a supervises the global block on the query sets
     * alone); MAML is the paper's Algorithm 1. */
    lm_train_opts resolved = *opts;
    if (resolved.support_weight == LM_SUPPORT_WEIGHT_AUTO)
        resolved.support_weight = resolved.algo == LM_TRAIN_LIMAML ? 3.0 : 0.0;
    const lm_train_opts *o = &resolved;
    int rc = check_opts(o, err);
    if (rc) return rc;
    const lm_schema *schema = lm_dataset_schema(ds);
    int threads = o->threads > 0 ? o->threads : omp_get_max_threads();

    /* The training tasks: warm ones with something to learn from. */
    int meta_algo = o->algo == LM_TRAIN_LIMAML || o->algo == LM_TRAIN_MAML;
    uint64_t ntasks = lm_dataset_ntasks(ds), ntrain = 0;
    uint64_t *train = malloc((ntasks + 1) * sizeof *train);
    if (!train) return lm_err_set(err, LM_ENOMEM, "out of memory");
    size_t maxrows = 1;
    for (uint64_t t = 0; t < ntasks; t++) {
        const lm_task *k = lm_dataset_task(ds, t);
        if (k->n > maxrows) maxrows = k->n;
        if (k->is_new) continue;
        uint32_t s = k->nsplit[LM_SPLIT_SUPPORT], q = k->nsplit[LM_SPLIT_QUERY];
        if (meta_algo ? (s > 0 && q > 0) : (s + q > 0)) train[ntrain++] = t;
    }
    if (ntrain == 0) {
        free(train);
        return lm_err_set(err, LM_EINVAL, "the dataset has no warm task with %s",
                          meta_algo ? "support and query rows" : "train rows");
    }

    /* The network. widedeep is plain training with an id meta block. */
    lm_net_config c;
    lm_net_config_default(&c);
    const char *meta_block = o->meta_block;
    if (o->algo == LM_TRAIN_WIDEDEEP && !strncmp(meta_block, "mlp:", 4)) meta_block = "id:16";
    if ((rc = lm_net_config_from_schema(&c, schema, err)) ||
        (rc = lm_net_config_parse_blocks(&c, meta_block, o->global_block, err))) {
        free(train);
        return rc;
    }
    c.dropout = o->dropout;
    c.emb_logit = o->emb_logit ? 1 : 0;
    c.id_rows = ntrain + 1;
    lm_net net;
    lm_model *m = NULL;
    if ((rc = lm_net_init(&net, &c, err)) || (rc = lm_model_new(&m, &net, o->algo, schema, err))) {
        free(train);
        return rc;
    }
    m->inner_steps = o->inner_steps;
    m->task_lr = o->task_lr;
    int is_id = c.meta_kind == LM_NET_META_ID;
    if (is_id) {
        /* the training tasks' keys, in dataset order (sorted by hash and key) */
        size_t total = 0, klen;
        for (uint64_t i = 0; i < ntrain; i++) total += lm_dataset_task(ds, train[i])->key_len;
        m->nid = ntrain;
        m->id_keys = malloc(total + 1);
        m->id_off = malloc((ntrain + 1) * sizeof *m->id_off);
        if (!m->id_keys || !m->id_off) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
        uint64_t off = 0;
        for (uint64_t i = 0; !rc && i < ntrain; i++) {
            const char *k = lm_dataset_task_key(ds, lm_dataset_task(ds, train[i]), &klen);
            m->id_off[i] = off;
            memcpy(m->id_keys + off, k, klen);
            off += klen;
        }
        if (!rc) m->id_off[ntrain] = off;
    }

    /* State and per-thread buffers. */
    size_t pm = net.meta_np, pg = net.global_np;
    state s = {0};
    lm_adam_init(&s.adam);
    s.best_auc = -1;
    float *all = rc ? NULL : calloc(6 * (pm + pg) + 2, sizeof(float));
    if (!rc && !all) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    thr *th = rc ? NULL : calloc((size_t)threads, sizeof *th);
    if (!rc && !th) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    char *sig = rc ? NULL : options_signature(o, ds, threads);
    if (!rc && !sig) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    if (!rc) {
        s.theta_m = m->theta_m;
        s.theta_g = m->theta_g;
        s.mm = all, s.vm = all + pm, s.best_m = all + 2 * pm;
        s.mg = all + 3 * pm, s.vg = s.mg + pg, s.best_g = s.vg + pg;
        lm_rng rng;
        lm_rng_seed(&rng, o->seed);
        lm_net_params_init_f32(&net, s.theta_m, s.theta_g, &rng);
        memcpy(s.best_m, s.theta_m, pm * sizeof(float));
        memcpy(s.best_g, s.theta_g, pg * sizeof(float));
        for (int i = 0; i < threads && !rc; i++) {
            th[i].gm = calloc(pm + 1, sizeof(float));
            th[i].gg = calloc(pg + 1, sizeof(float));
            if (!th[i].gm || !th[i].gg) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
            if (!rc)
                rc = lm_meta_ws_alloc_f32(&th[i].ws, &net, maxrows, o->inner_steps ? o->inner_steps : 1,
                                          o->algo == LM_TRAIN_MAML, err);
            if (!rc) rc = lm_rows_alloc_f32(&th[i].sup, net.nmeta, net.ndense, net.ncat, maxrows, err);
            if (!rc) rc = lm_rows_alloc_f32(&th[i].qry, net.nmeta, net.ndense, net.ncat, maxrows, err);
        }
    }
    if (!rc && o->resume) rc = load_checkpoint(o->checkpoint, &net, &s, sig, err);

    lm_meta_opts mo;
    lm_meta_opts_default(&mo);
    mo.algo = o->algo == LM_TRAIN_LIMAML ? LM_ALGO_LIMAML
              : o->algo == LM_TRAIN_MAML ? LM_ALGO_MAML
                                         : LM_ALGO_PLAIN;
    mo.steps = meta_algo ? o->inner_steps : 0;
    mo.alpha = o->task_lr;
    mo.first_order = o->first_order;
    mo.support_weight = meta_algo ? o->support_weight : 0;
    mo.dropout_mode = o->dropout > 0 ? LM_DROPOUT_SAMPLE : LM_DROPOUT_OFF;

    uint64_t B = o->tasks_per_batch, nb = (ntrain + B - 1) / B;
    /* The fast engine (meta/batch.h) serves LiMAML with an MLP meta block and plain training
     * without dropout; it computes the same sums as the per-task engine, which serves the
     * rest (MAML, id meta blocks, dropout) and stays the reference. */
    lm_meta_batch_ws *bws = NULL;
    lm_rows_f32 *bsup = NULL, *bqry = NULL;
    int use_batch = 0;
    if (!rc && o->engine != LM_ENGINE_REFERENCE) {
        lm_err e2 = {0};
        use_batch = lm_meta_batch_supported(&net, &mo, &e2) == LM_OK;
        if (!use_batch && o->engine == LM_ENGINE_FAST)
            rc = lm_err_set(err, LM_EINVAL, "--engine fast: %s", e2.msg);
    }
    if (!rc && use_batch) {
        size_t maxsplit = 1;
        for (uint64_t i = 0; i < ntrain; i++) {
            const lm_task *k = lm_dataset_task(ds, train[i]);
            size_t a = meta_algo ? LM_MAX(k->nsplit[LM_SPLIT_SUPPORT], k->nsplit[LM_SPLIT_QUERY])
                                 : (size_t)k->nsplit[LM_SPLIT_SUPPORT] + k->nsplit[LM_SPLIT_QUERY];
            if (a > maxsplit) maxsplit = a;
        }
        size_t T = LM_MIN(B, ntrain);
        rc = lm_meta_batch_ws_alloc(&bws, &net, T, maxsplit, o->inner_steps ? o->inner_steps : 1, threads,
                                    LM_BATCH_KERNEL_AUTO, err);
        bsup = rc ? NULL : calloc(T, sizeof *bsup);
        bqry = rc ? NULL : calloc(T, sizeof *bqry);
        if (!rc && (!bsup || !bqry)) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
        for (size_t i = 0; !rc && i < T; i++) {
            rc = lm_rows_alloc_f32(&bsup[i], net.nmeta, net.ndense, net.ncat, maxsplit, err);
            if (!rc) rc = lm_rows_alloc_f32(&bqry[i], net.nmeta, net.ndense, net.ncat, maxsplit, err);
        }
    }
    uint64_t total_updates = nb * o->epochs;
    double base_lr = o->lr * (o->lr_scale_with_batch ? (double)B / 32.0 : 1.0);
    uint64_t *order = rc ? NULL : malloc(ntrain * sizeof *order);
    if (!rc && !order) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    FILE *log = NULL;
    if (!rc && o->log_path) {
        log = fopen(o->log_path, s.epoch > 0 || o->log_member ? "a" : "w");
        if (!log) rc = lm_err_errno(err, LM_EIO, "%s: cannot write the training log", o->log_path);
    }
    lm_eval_opts eo;
    lm_eval_opts_default(&eo);
    eo.score_split = LM_SPLIT_VAL;
    eo.warm_only = 1;
    eo.adapt_from = LM_ADAPT_TRAIN;
    eo.adapt_steps = o->algo == LM_TRAIN_LIMAML || o->algo == LM_TRAIN_MAML
                         ? (o->val_adapt_steps == UINT32_MAX ? o->inner_steps : o->val_adapt_steps)
                         : 0;
    eo.threads = threads;
    uint64_t tasks_done = 0;
    double run_t0 = lm_now(), train_secs = 0;

    uint32_t stop_at = o->stop_after_epochs ? LM_MIN(o->epochs, s.epoch + o->stop_after_epochs) : o->epochs;
    for (uint32_t ep = s.epoch; !rc && ep < stop_at; ep++) {
        /* the epoch's order: a Fisher-Yates shuffle seeded by (seed, epoch) */
        lm_rng sh;
        lm_rng_seed(&sh, o->seed ^ lm_mix64(0x5348554646ull + ep));
        for (uint64_t i = 0; i < ntrain; i++) order[i] = i;
        for (uint64_t i = ntrain; i > 1; i--) {
            uint64_t j = lm_rng_below(&sh, i), t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        double ep_loss = 0, ep_t0 = lm_now();
        uint64_t ep_tasks = 0;
        for (uint64_t b = 0; !rc && b < nb; b++) {
            uint64_t lo = b * B, hi = LM_MIN(lo + B, ntrain);
            if (use_batch) {
                /* gather the batch's rows in parallel, then one call does the batch */
#pragma omp parallel for schedule(static) num_threads(threads)
                for (uint64_t i = lo; i < hi; i++) {
                    thr *me = &th[omp_get_thread_num()];
                    const lm_task *k = lm_dataset_task(ds, train[order[i]]);
                    int r2 =
                        meta_algo ? lm_rows_gather_f32(&bsup[i - lo], ds, k, LM_SPLIT_SUPPORT, &me->err) : 0;
                    if (!r2)
                        r2 = lm_rows_gather_f32(&bqry[i - lo], ds, k,
                                                meta_algo ? LM_SPLIT_QUERY : LM_META_SPLIT_TRAIN, &me->err);
                    if (r2) me->rc = r2;
                }
                for (int i = 0; i < threads; i++) {
                    th[i].loss = 0;
                    if (i) continue;
                    memset(th[0].gm, 0, pm * sizeof(float));
                    memset(th[0].gg, 0, pg * sizeof(float));
                }
                lm_meta_batch_stats bst;
                int ok = 1;
                for (int i = 0; i < threads; i++) ok &= !th[i].rc;
                if (ok) {
                    int r2 = lm_meta_batch_f32(&net, &mo, bws, s.theta_m, s.theta_g, hi - lo, bsup, bqry,
                                               th[0].gm, th[0].gg, NULL, &bst, &th[0].err);
                    if (r2)
                        th[0].rc = r2;
                    else
                        th[0].loss = bst.objective;
                }
            } else {
#pragma omp parallel num_threads(threads)
                {
                    thr *me = &th[omp_get_thread_num()];
                    memset(me->gm, 0, pm * sizeof(float));
                    memset(me->gg, 0, pg * sizeof(float));
                    me->loss = 0;
#pragma omp for schedule(static)
                    for (uint64_t i = lo; i < hi; i++) {
                        if (me->rc) continue;
                        uint64_t idx = order[i];
                        const lm_task *k = lm_dataset_task(ds, train[idx]);
                        lm_rng tr;
                        lm_rng_seed(&tr, o->seed ^ lm_mix64(((uint64_t)ep << 40) ^ (idx * 0x9e37ull + 1)));
                        size_t off = 0;
                        if (is_id) {
                            size_t row = lm_rng_uniform(&tr) < o->id_default_frac ? ntrain : idx;
                            off = lm_net_meta_slice(&net, row);
                        }
                        int r2;
                        if (meta_algo) {
                            r2 = lm_rows_gather_f32(&me->sup, ds, k, LM_SPLIT_SUPPORT, &me->err);
                            if (!r2) r2 = lm_rows_gather_f32(&me->qry, ds, k, LM_SPLIT_QUERY, &me->err);
                        } else {
                            me->sup.n = 0;
                            r2 = lm_rows_gather_f32(&me->qry, ds, k, LM_META_SPLIT_TRAIN, &me->err);
                        }
                        if (r2) {
                            me->rc = r2;
                            continue;
                        }
                        me->loss += lm_meta_task_f32(&net, &mo, &me->ws, s.theta_m + off, s.theta_g, &me->sup,
                                                     &me->qry, NULL, NULL, me->gm + off, me->gg, NULL, &tr);
                    }
                }
            }
            for (int i = 0; i < threads; i++)
                if (th[i].rc && !rc) {
                    rc = th[i].rc;
                    if (err) *err = th[i].err;
                }
            if (rc) break;
            /* reduce in thread order, average over the batch's tasks */
            double bl = 0;
            for (int i = 0; i < threads; i++) bl += th[i].loss;
            float inv = 1.0f / (float)(hi - lo);
            for (int i = 1; i < threads && !use_batch; i++) {
                for (size_t j = 0; j < pm; j++) th[0].gm[j] += th[i].gm[j];
                for (size_t j = 0; j < pg; j++) th[0].gg[j] += th[i].gg[j];
            }
            for (size_t j = 0; j < pm; j++) th[0].gm[j] *= inv;
            for (size_t j = 0; j < pg; j++) th[0].gg[j] *= inv;
            lm_adam_span sp[2] = {{s.theta_m, th[0].gm, s.mm, s.vm, pm},
                                  {s.theta_g, th[0].gg, s.mg, s.vg, pg}};
            double lr = lm_lr_at(base_lr, s.adam.step, total_updates, o->warmup, o->decay, 0.0);
            lm_adam_update(&s.adam, sp, 2, lr, o->clip);
            if (!isfinite(bl)) {
                rc = lm_err_set(
                    err, LM_EINVAL,
                    "training diverged at epoch %u batch %llu (loss is not finite); lower --lr or --task-lr",
                    ep + 1, (unsigned long long)b + 1);
                break;
            }
            ep_loss += bl;
            ep_tasks += hi - lo;
            tasks_done += hi - lo;
            if (o->progress) {
                lm_train_progress p = {0};
                p.epoch = ep + 1, p.epochs = o->epochs, p.batch = b + 1, p.batches = nb;
                p.tasks_done = tasks_done;
                p.loss = ep_loss / (double)ep_tasks;
                p.seconds = lm_now() - run_t0;
                double busy = train_secs + (lm_now() - ep_t0);
                p.tasks_per_s = (double)tasks_done / (busy > 0 ? busy : 1e-9);
                double left = (double)(o->epochs - ep - 1) * (double)ntrain + (double)(ntrain - hi);
                p.eta_seconds = left / (p.tasks_per_s > 0 ? p.tasks_per_s : 1);
                o->progress(o->progress_ctx, &p);
            }
        }
        if (rc) break;
        /* validation on the warm tasks' validation part (not counted in the training rate) */
        double ep_secs = lm_now() - ep_t0;
        train_secs += ep_secs;
        lm_eval_result vr;
        if ((rc = lm_evaluate(m, ds, &eo, &vr, err))) break;
        /* Without validation rows (a refit on train and validation parts together, for a
         * number of epochs chosen earlier) every epoch counts as the best: the last is kept. */
        int improved = vr.examples == 0 || vr.auc > s.best_auc || (isnan(s.best_auc) && !isnan(vr.auc)) ||
                       /* validation rows of one class only: no AUC to choose by, so the last
                        * epoch is kept until one comes */
                       (isnan(vr.auc) && !(s.best_auc >= 0));
        s.epoch = ep + 1;
        if (improved) {
            s.best_auc = vr.auc;
            s.best_loss = vr.logloss;
            s.best_epoch = ep + 1;
            s.bad_epochs = 0;
            memcpy(s.best_m, s.theta_m, pm * sizeof(float));
            memcpy(s.best_g, s.theta_g, pg * sizeof(float));
        } else {
            s.bad_epochs++;
        }
        if (log) {
            char auc[40], loss[40], member[32] = "";
            if (o->log_member) snprintf(member, sizeof member, "\"member\":%u,", o->log_member);
            fprintf(
                log,
                "{%s\"epoch\":%u,\"train_loss\":%.6f,\"val_auc\":%s,\"val_logloss\":%s,\"lr\":%.6g,"
                "\"seconds\":%.3f,\"tasks_per_s\":%.1f,\"best\":%s}\n",
                member, ep + 1, ep_loss / (double)(ep_tasks ? ep_tasks : 1),
                json_num(auc, sizeof auc, "%.6f", vr.auc), json_num(loss, sizeof loss, "%.6f", vr.logloss),
                lm_lr_at(base_lr, s.adam.step ? s.adam.step - 1 : 0, total_updates, o->warmup, o->decay, 0.0),
                ep_secs, (double)ep_tasks / (ep_secs > 0 ? ep_secs : 1e-9), improved ? "true" : "false");
            fflush(log);
        }
        if (o->progress) {
            lm_train_progress p = {0};
            p.epoch = ep + 1, p.epochs = o->epochs, p.batch = nb, p.batches = nb;
            p.tasks_done = tasks_done;
            p.loss = ep_loss / (double)(ep_tasks ? ep_tasks : 1);
            p.seconds = lm_now() - run_t0;
            p.tasks_per_s = (double)tasks_done / (train_secs > 0 ? train_secs : 1e-9);
            p.epoch_end = 1;
            p.val_auc = vr.auc;
            p.val_loss = vr.logloss;
            p.improved = improved;
            o->progress(o->progress_ctx, &p);
        }
        if (o->checkpoint && (rc = save_checkpoint(o->checkpoint, &net, &s, sig, err))) break;
        if (o->patience && s.bad_epochs >= o->patience) break;
    }
    if (!rc) {
        memcpy(m->theta_m, s.best_m, pm * sizeof(float));
        memcpy(m->theta_g, s.best_g, pg * sizeof(float));
        rep->epochs_run = s.epoch;
        rep->best_epoch = s.best_epoch;
        rep->best_val_auc = s.best_auc;
        rep->best_val_loss = s.best_loss;
        rep->train_tasks = ntrain;
        rep->updates = s.adam.step;
        rep->seconds = lm_now() - t0;
        rep->tasks_per_s = train_secs > 0 ? (double)tasks_done / train_secs : 0;
        m->train_json = train_json(o, rep, threads);
    }
    if (log) fclose(log);
    for (int i = 0; th && i < threads; i++) {
        lm_meta_ws_free_f32(&th[i].ws);
        lm_rows_free_f32(&th[i].sup);
        lm_rows_free_f32(&th[i].qry);
        free(th[i].gm);
        free(th[i].gg);
    }
    free(th);
    for (size_t i = 0; bsup && i < LM_MIN(B, ntrain); i++) {
        lm_rows_free_f32(&bsup[i]);
        lm_rows_free_f32(&bqry[i]);
    }
    free(bsup);
    free(bqry);
    lm_meta_batch_ws_free(bws);
    free(all);
    free(order);
    free(train);
    free(sig);
    if (rc) {
        lm_model_free(m);
        return rc;
    }
    *out = m;
    return LM_OK;
}
