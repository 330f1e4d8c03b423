/* embed.c: `limaml embed`. Tasks are taken a chunk at a time in the dataset's order; the
 * chunk's embeddings are computed in parallel (each thread adapting its own copy of the meta
 * block), sorted by key, and written as one store batch. The store's publish is the one durable
 * point: a run that fails or is killed leaves the previous version serving. */
#include "meta/model.h"

#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

void lm_embed_opts_default(lm_embed_opts *o)
{
    memset(o, 0, sizeof *o);
    o->steps = UINT32_MAX;
    o->task_lr = -1;
    o->adapt_from = LM_ADAPT_ALL;
    o->pool = LM_POOL_LATEST;
    o->encoding = LM_STORE_ENC_F32;
    o->keep = 2;
    o->chunk = 16384;
}

static int in_part(int adapt_from, int split)
{
    switch (adapt_from) {
    case LM_ADAPT_VAL: return split == LM_SPLIT_VAL;
    case LM_ADAPT_TRAIN: return split == LM_SPLIT_SUPPORT || split == LM_SPLIT_QUERY;
    case LM_ADAPT_TRAIN_VAL: return split != LM_SPLIT_TEST;
    default: return 1;
    }
}

/* The task's rows in the part and the window, in time order. */
static void gather(lm_rows_f32 *r, const lm_dataset *ds, const lm_task *t, int adapt_from, double since)
{
    r->n = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        lm_row_view v = lm_dataset_row(ds, t->first + i);
        if (!in_part(adapt_from, v.split) || v.time < since) continue;
        size_t j = r->n++;
        memcpy(r->meta + j * r->nmeta, v.meta, r->nmeta * sizeof(float));
        memcpy(r->dense + j * r->ndense, v.dense, r->ndense * sizeof(float));
        memcpy(r->cat + j * r->ncat, v.cat, r->ncat * sizeof(uint32_t));
        r->label[j] = v.label;
    }
}

/* The model's identity in the store: a hash of its parameters and algorithm. */
static void model_id(const lm_model *m, char *out, size_t n)
{
    uint64_t a = lm_hash64(m->theta_m, m->net.meta_np * sizeof(float), 1);
    uint64_t b = lm_hash64(m->theta_g, m->net.global_np * sizeof(float), a);
    snprintf(out, n, "%s:%016" PRIx64, lm_train_algo_name(m->algo), b);
}

typedef struct keyref {
    const char *key;
    size_t len;
    uint32_t slot; /* row of the chunk's vectors */
} keyref;

static int cmp_keyref(const void *a, const void *b)
{
    const keyref *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->len < y->len ? -1 : x->len > y->len);
}

int lm_embed(const lm_model *m, const lm_dataset *ds, lm_store *store, const lm_embed_opts *o, lm_embed_report *rep,
             lm_err *err)
{
    double t0 = lm_now();
    memset(rep, 0, sizeof *rep);
    int rc = lm_model_check_dataset(m, ds, err);
    if (rc) return rc;
    if (!o->version) return lm_err_set(err, LM_EINVAL, "embed: a version name is needed");
    if (o->pool < LM_POOL_LATEST || o->pool > LM_POOL_COS) return lm_err_set(err, LM_EINVAL, "embed: unknown pooling");
    if (!(o->window_days >= 0)) return lm_err_set(err, LM_EINVAL, "--window-days must be >= 0");
    const lm_net *net = &m->net;
    size_t E = net->E, chunk = o->chunk ? o->chunk : 16384;
    uint32_t steps = o->steps == UINT32_MAX ? m->inner_steps : o->steps;
    double alpha = o->task_lr > 0 ? o->task_lr : m->task_lr;
    uint64_t ntasks = lm_dataset_ntasks(ds);
    rep->tasks = ntasks;
    /* the window is relative to the newest example of the dataset */
    double since = -INFINITY;
    size_t maxrows = 1;
    if (o->window_days > 0 || o->only_changed) {
        double newest = -INFINITY;
        for (uint64_t t = 0; t < ntasks; t++) {
            const lm_task *k = lm_dataset_task(ds, t);
            if (k->n) newest = fmax(newest, lm_dataset_row(ds, k->first + k->n - 1).time);
        }
        if (o->window_days > 0) since = newest - o->window_days * 86400.0;
    }
    for (uint64_t t = 0; t < ntasks; t++) maxrows = LM_MAX(maxrows, lm_dataset_task(ds, t)->n);
    int threads = o->threads > 0 ? o->threads : omp_get_max_threads();

    char id[LM_STORE_MODEL_ID_MAX + 1];
    model_id(m, id, sizeof id);
    lm_store_writer *w = NULL;
    rc = lm_store_begin_version(store, o->version, (uint32_t)E, o->encoding, id, &w, err);
    if (rc) return rc;
    float *vec = malloc((chunk * E + 1) * sizeof(float));
    uint8_t *state = malloc(chunk + 1); /* 0 empty, 1 computed, 2 to carry over */
    keyref *refs = malloc((chunk + 1) * sizeof *refs);
    const char **keys = malloc((chunk + 1) * sizeof *keys);
    size_t *lens = malloc((chunk + 1) * sizeof *lens);
    float *sorted = malloc((chunk * E + 1) * sizeof(float));
    if (!vec || !state || !refs || !keys || !lens || !sorted) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    int fail = LM_OK;
    lm_err ferr = {0};
    for (uint64_t c0 = 0; !rc && c0 < ntasks; c0 += chunk) {
        uint64_t c1 = LM_MIN(ntasks, c0 + chunk);
#pragma omp parallel num_threads(threads)
        {
            lm_meta_ws_f32 ws = {0};
            lm_rows_f32 r = {0};
            float *tm = malloc((net->meta_task_np + 1) * sizeof(float));
            float *scratch = malloc((maxrows * E + 1) * sizeof(float));
            lm_err e = {0};
            int r2 = (!tm || !scratch) ? lm_err_set(&e, LM_ENOMEM, "out of memory") : LM_OK;
            if (!r2) r2 = lm_meta_ws_alloc_f32(&ws, net, maxrows, 1, 0, &e);
            if (!r2) r2 = lm_rows_alloc_f32(&r, net->nmeta, net->ndense, net->ncat, maxrows, &e);
#pragma omp for schedule(dynamic, 64)
            for (uint64_t t = c0; t < c1; t++) {
                if (r2) continue;
                const lm_task *k = lm_dataset_task(ds, t);
                size_t i = (size_t)(t - c0);
                if (o->only_changed && (!k->n || lm_dataset_row(ds, k->first + k->n - 1).time <= o->changed_since)) {
                    state[i] = 2;
                    continue;
                }
                gather(&r, ds, k, o->adapt_from, since);
                if (r.n == 0) {
                    state[i] = 0;
                    continue;
                }
                size_t klen;
                const char *key = lm_dataset_task_key(ds, k, &klen);
                size_t off = net->cfg.meta_kind == LM_NET_META_ID ? lm_net_meta_slice(net, lm_model_id_row(m, key, klen)) : 0;
                memcpy(tm, m->theta_m + off, net->meta_task_np * sizeof(float));
                lm_meta_task_embedding(net, &ws, tm, m->theta_g, &r, steps, alpha, o->pool, scratch, vec + i * E);
                state[i] = 1;
            }
#pragma omp critical
            if (r2 && !fail) {
                fail = r2;
                ferr = e;
            }
            lm_meta_ws_free_f32(&ws);
            lm_rows_free_f32(&r);
            free(tm), free(scratch);
        }
        if (fail) {
            rc = fail;
            if (err) *err = ferr;
            break;
        }
        /* carry unchanged tasks over; keys in byte order (the store's fast path) */
        size_t n = 0;
        for (uint64_t t = c0; t < c1 && !rc; t++) {
            size_t i = (size_t)(t - c0);
            const lm_task *k = lm_dataset_task(ds, t);
            size_t klen;
            const char *key = lm_dataset_task_key(ds, k, &klen);
            if (state[i] == 2) {
                int found = 0;
                rc = lm_store_get(store, key, klen, vec + i * E, E, &found, err);
                if (rc) break;
                if (!found) {
                    state[i] = 0; /* nothing to carry: leave it out (it had no rows before) */
                    continue;
                }
                rep->carried++;
            } else if (state[i] == 1) {
                rep->computed++;
            }
            if (state[i] == 0) {
                rep->empty++;
                continue;
            }
            refs[n++] = (keyref){key, klen, (uint32_t)i};
        }
        if (rc) break;
        qsort(refs, n, sizeof *refs, cmp_keyref);
        for (size_t j = 0; j < n; j++) {
            keys[j] = refs[j].key;
            lens[j] = refs[j].len;
            memcpy(sorted + j * E, vec + (size_t)refs[j].slot * E, E * sizeof(float));
        }
        /* The task keys hold LM_KEY_SEP between the columns of a composite key, as the dataset
         * stores them; the server builds the same bytes from a request. */
        if (n && (rc = lm_store_put_batch(w, keys, lens, sorted, n, err))) break;
        rep->written += n;
        if (o->progress) {
            lm_embed_progress p = {c1, ntasks, lm_now() - t0, 0};
            p.tasks_per_s = (double)c1 / (p.seconds > 0 ? p.seconds : 1e-9);
            o->progress(o->progress_ctx, &p);
        }
    }
    if (!rc) rc = lm_store_publish(w, o->keep, err);
    else lm_store_abort(w);
    free(vec), free(state), free(refs), free(keys), free(lens), free(sorted);
    rep->seconds = lm_now() - t0;
    rep->tasks_per_s = rep->seconds > 0 ? (double)ntasks / rep->seconds : 0;
    return rc;
}
