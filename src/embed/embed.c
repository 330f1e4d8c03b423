/* embed.c: `limaml embed`. Tasks are taken in key order, a partition of 64 chunks at a time;
 * a chunk's embeddings are computed in parallel (each thread adapting its own copy of the meta
 * block, with the fast engine of meta/batch_embed.h where it serves) and written as one store
 * batch by one thread while the others compute the next chunk. The store's publish is the one
 * durable point: a run that fails or is killed leaves the previous version serving. Memory: a
 * partition's task order and its sort buffer (16 bytes a task each), a 1 MB sample of keys, two
 * chunks of vectors and one workspace per thread, whatever the number of tasks. An ensemble
 * stores per task its members' embeddings end to end, each computed as for that member alone
 * (the members take turns with the thread's workspace; n members cost n times the computing). */
#include "meta/batch_embed.h"
#include "meta/model.h"

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
        if (r->nmeta) memcpy(r->meta + j * r->nmeta, v.meta, r->nmeta * sizeof(float));
        if (r->ndense) memcpy(r->dense + j * r->ndense, v.dense, r->ndense * sizeof(float));
        if (r->ncat) memcpy(r->cat + j * r->ncat, v.cat, r->ncat * sizeof(uint32_t));
        r->label[j] = v.label;
    }
}

/* ============================================================================================
 * tasks in key order, a partition at a time
 * ========================================================================================== */

/* The store appends keys that arrive in ascending byte order across its batches, about 20
 * times faster than it inserts them elsewhere (LMDB: 1.9 M against 0.1 M puts per second for a
 * million keys in batches of 16 K); the dataset holds its tasks in hash order. So the tasks are
 * taken in key order: each partition is the next EMBED_PART_CHUNKS store batches' worth of
 * tasks by key (a million for the default batch of 16 K), found by one scan of the task table
 * that keeps the smallest keys above the previous partition's last in a max-heap, then sorted.
 * Memory stays 16 bytes per task of a partition whatever the number of tasks; each scan reads
 * every task's key once. */
#define EMBED_PART_CHUNKS 64

/* A task and the first 8 bytes of its key, big-endian and zero-padded: a coarsening of the
 * keys' byte order, so most comparisons are one integer comparison. */
typedef struct keyrec {
    uint64_t pre;
    uint64_t task;
} keyrec;

static keyrec keyrec_of(const lm_dataset *ds, uint64_t t)
{
    size_t len;
    const char *k = lm_dataset_task_key(ds, lm_dataset_task(ds, t), &len);
    uint64_t p = 0;
    for (size_t i = 0; i < 8; i++) p = p << 8 | (i < len ? (uint8_t)k[i] : 0);
    return (keyrec){p, t};
}

/* Byte order of the keys (a prefix before its extensions), as the store sorts them. */
static int keyrec_cmp(const void *a, const void *b, void *ctx)
{
    const keyrec *x = a, *y = b;
    if (x->pre != y->pre) return x->pre < y->pre ? -1 : 1;
    const lm_dataset *ds = ctx;
    size_t lx, ly;
    const char *kx = lm_dataset_task_key(ds, lm_dataset_task(ds, x->task), &lx);
    const char *ky = lm_dataset_task_key(ds, lm_dataset_task(ds, y->task), &ly);
    int c = memcmp(kx, ky, LM_MIN(lx, ly));
    return c ? c : (lx < ly ? -1 : lx > ly);
}

static void heap_down(keyrec *h, size_t n, size_t i, const lm_dataset *ds)
{
    for (;;) {
        size_t l = 2 * i + 1, big = i;
        if (l < n && keyrec_cmp(&h[l], &h[big], (void *)ds) > 0) big = l;
        if (l + 1 < n && keyrec_cmp(&h[l + 1], &h[big], (void *)ds) > 0) big = l + 1;
        if (big == i) return;
        keyrec t = h[i];
        h[i] = h[big], h[big] = t, i = big;
    }
}

/* Sort a[0 .. n) by key with tmp: (n) as the merge buffer (a bottom-up merge sort). qsort_r
 * would malloc that buffer on each call, and glibc keeps some of those 16 MB blocks in the heap
 * after free (once one was unmapped, its mmap threshold rises above the next, smaller one):
 * resident memory then depended on how many partitions the run had. One buffer, allocated
 * once, keeps it flat. */
static void sort_keys(keyrec *a, keyrec *tmp, size_t n, const lm_dataset *ds)
{
    keyrec *src = a, *dst = tmp;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = LM_MIN(lo + w, n), hi = LM_MIN(lo + 2 * w, n), i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                dst[k++] = keyrec_cmp(&src[j], &src[i], (void *)ds) < 0 ? src[j++] : src[i++];
            while (i < mid) dst[k++] = src[i++];
            while (j < hi) dst[k++] = src[j++];
        }
        keyrec *t = src;
        src = dst, dst = t;
    }
    if (src != a) memcpy(a, src, n * sizeof *a);
}

/* part: (cap) set to the (at most) cap tasks with the smallest keys above lo's (NULL: all) and
 * not above hi's (NULL: no bound), in ascending key order; returns how many. Task keys are
 * unique (prepare groups by key). With hi a splitter (below), the tasks in (lo, hi] fit and the
 * scan is one comparison or two per task; the heap is the fallback for a range that does not. */
static size_t next_partition(const lm_dataset *ds, const keyrec *lo, const keyrec *hi, keyrec *part,
                             keyrec *tmp, size_t cap)
{
    uint64_t ntasks = lm_dataset_ntasks(ds);
    size_t n = 0;
    for (uint64_t t = 0; t < ntasks; t++) {
        keyrec r = keyrec_of(ds, t);
        if (lo && keyrec_cmp(&r, lo, (void *)ds) <= 0) continue;
        if (hi && keyrec_cmp(&r, hi, (void *)ds) > 0) continue;
        if (n < cap) {
            part[n++] = r;
            if (n == cap) /* full: a max-heap from now on */
                for (size_t i = cap / 2; i-- > 0;) heap_down(part, cap, i, ds);
        } else if (keyrec_cmp(&r, &part[0], (void *)ds) < 0) {
            part[0] = r;
            heap_down(part, cap, 0, ds);
        }
    }
    sort_keys(part, tmp, n, ds);
    return n;
}

/* Keeping the smallest keys above the last partition's in a heap costs a heap update for about
 * cap ln(remaining / cap) tasks per scan: at 10 M tasks the serial scans took a third of the
 * run (perf: heap_down and its key comparisons). Splitters make each scan a plain filter: the
 * keys of EMBED_SAMPLE tasks at a fixed stride of the dataset's (hash, so key-blind) order,
 * sorted; every g-th of them bounds a partition, g chosen so that a partition is expected to
 * hold 7/8 of cap tasks (its count's standard deviation is about cap / sqrt(g): at 10 M tasks,
 * 12 of them below the cap). 16 bytes per sample key, whatever the number of tasks. */
#define EMBED_SAMPLE 65536

/* split: (EMBED_SAMPLE) set to the ascending partition bounds; returns how many (0: one
 * partition holds every task). */
static size_t choose_splitters(const lm_dataset *ds, size_t cap, keyrec *split, keyrec *tmp)
{
    uint64_t N = lm_dataset_ntasks(ds);
    if (N <= cap) return 0;
    size_t S = (size_t)LM_MIN(N, (uint64_t)EMBED_SAMPLE);
    for (size_t i = 0; i < S; i++) split[i] = keyrec_of(ds, (uint64_t)i * N / S);
    sort_keys(split, tmp, S, ds);
    size_t g = (size_t)((double)cap * 7 / 8 * (double)S / (double)N), n = 0;
    if (g < 1) g = 1;
    for (size_t i = g; i < S; i += g) split[n++] = split[i - 1];
    return n;
}

/* ============================================================================================
 * one thread's embedding of a task: the fast engine where it serves, else the reference
 * ========================================================================================== */

/* The fast engine (meta/batch_embed.h) keeps the layer-0 product of tasks up to this many rows
 * (16 K rows: 4 MB per thread for the default net); larger tasks recompute it, same bits. */
#define EMBED_KEEP_ROWS 16384

/* One network of the model: a single model is its own one member; an ensemble has one per
 * member, each with its plan, steps and rate, so a member's part of the vector is what lm_embed
 * computes for that member alone (and lm_adapt_task's). */
typedef struct member_embedder {
    const lm_model *m;
    const lm_meta_embed_plan *plan; /* NULL: the reference */
    uint32_t steps;
    double alpha;
} member_embedder;

/* One thread's engine: the members, and one set of scratch they take turns with (a workspace
 * serves every plan of the net's shape, which the members share). */
typedef struct task_embedder {
    size_t nm;
    member_embedder *mem; /* (nm) */
    lm_meta_embed_ws *ews;
    lm_meta_ws_f32 rws;
    float *tm, *scratch;
    lm_rows_f32 r; /* the task's rows, read by every member */
} task_embedder;

static void embedder_free(task_embedder *te)
{
    lm_meta_embed_ws_free(te->ews);
    lm_meta_ws_free_f32(&te->rws);
    free(te->tm), free(te->scratch);
    free(te->mem);
    lm_rows_free_f32(&te->r);
    memset(te, 0, sizeof *te);
}

/* plans: (lm_model_nmembers(m)) member i's plan, or NULL for the reference (all or none). */
static int embedder_init(task_embedder *te, const lm_model *m, const lm_meta_embed_plan *const *plans,
                         const lm_embed_opts *o, size_t maxrows, lm_err *err)
{
    const lm_net *net = &m->net;
    memset(te, 0, sizeof *te);
    te->nm = lm_model_nmembers(m);
    te->mem = calloc(te->nm, sizeof *te->mem);
    int rc = te->mem ? lm_rows_alloc_f32(&te->r, net->nmeta, net->ndense, net->ncat, maxrows, err)
                     : lm_err_set(err, LM_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < te->nm; i++) {
        member_embedder *me = &te->mem[i];
        me->m = lm_model_member(m, i), me->plan = plans[i];
        me->steps = o->steps == UINT32_MAX ? me->m->inner_steps : o->steps;
        me->alpha = o->task_lr > 0 ? o->task_lr : me->m->task_lr;
    }
    if (!rc && plans[0])
        rc = lm_meta_embed_ws_alloc(&te->ews, net, LM_MIN(maxrows, (size_t)EMBED_KEEP_ROWS), err);
    if (!rc && !plans[0]) {
        te->tm = malloc((net->meta_task_np + 1) * sizeof(float));
        te->scratch = malloc((maxrows * net->E + 1) * sizeof(float));
        rc = !te->tm || !te->scratch ? lm_err_set(err, LM_ENOMEM, "out of memory")
                                     : lm_meta_ws_alloc_f32(&te->rws, net, maxrows, 1, 0, err);
    }
    if (rc) embedder_free(te);
    return rc;
}

/* The embedding of te->r, task key `key`, into out: (E) per member, end to end. */
static void embedder_run(task_embedder *te, const char *key, size_t klen, int pool, float *out)
{
    for (size_t i = 0; i < te->nm; i++) {
        member_embedder *me = &te->mem[i];
        const lm_net *net = &me->m->net;
        if (me->plan) {
            lm_meta_embed_f32(me->plan, te->ews, &te->r, me->steps, me->alpha, pool, out);
        } else {
            size_t off = net->cfg.meta_kind == LM_NET_META_ID
                             ? lm_net_meta_slice(net, lm_model_id_row(me->m, key, klen))
                             : 0;
            memcpy(te->tm, me->m->theta_m + off, net->meta_task_np * sizeof(float));
            lm_meta_task_embedding(net, &te->rws, te->tm, me->m->theta_g, &te->r, me->steps, me->alpha, pool,
                                   te->scratch, out);
        }
        out += net->E;
    }
}

/* ============================================================================================
 * a run: chunks of a partition computed in parallel, written by one thread meanwhile
 * ========================================================================================== */

/* One chunk's results: its tasks in key order, a vector and a state each. */
typedef struct chunk_buf {
    const keyrec *tasks;
    size_t n;
    uint64_t done;  /* tasks up to this chunk's end, in key order (for progress) */
    float *vec;     /* (chunk, E) */
    uint8_t *state; /* (chunk): 0 empty, 1 computed, 2 to carry over */
} chunk_buf;

typedef struct embed_run {
    const lm_model *m;
    const lm_dataset *ds;
    lm_store *store;
    lm_store_writer *w;
    const lm_embed_opts *o;
    lm_embed_report *rep;
    const lm_meta_embed_plan *const *plans; /* (members) NULL: the reference */
    double since, t0;
    size_t E, chunk, maxrows; /* E: the stored width (lm_model_emb_dim) */
    int threads;
    const char *row0; /* the first row's address and the rows' stride, for prefetching */
    size_t row_bytes;
    chunk_buf buf[2];
    const char **keys; /* (chunk) the writer's batch */
    size_t *lens;
    float *packed; /* (chunk, E) */
    int fail;      /* a thread's workspace failed */
    int wrc;       /* the writer failed */
    lm_err ferr, werr;
} embed_run;

/* Carry unchanged tasks over and write the chunk's vectors as one batch (its keys ascend). */
static int write_chunk(embed_run *x, chunk_buf *b, lm_err *err)
{
    size_t n = 0, E = x->E;
    for (size_t i = 0; i < b->n; i++) {
        size_t klen;
        const char *key = lm_dataset_task_key(x->ds, lm_dataset_task(x->ds, b->tasks[i].task), &klen);
        if (b->state[i] == 2) {
            int found = 0;
            int rc = lm_store_get(x->store, key, klen, b->vec + i * E, E, &found, err);
            if (rc) return rc;
            if (!found) {
                b->state[i] = 0; /* nothing to carry: leave it out (it had no rows before) */
            } else {
                x->rep->carried++;
            }
        } else if (b->state[i] == 1) {
            x->rep->computed++;
        }
        if (b->state[i] == 0) {
            x->rep->empty++;
            continue;
        }
        x->keys[n] = key, x->lens[n] = klen;
        memcpy(x->packed + n * E, b->vec + i * E, E * sizeof(float));
        n++;
    }
    /* The task keys hold LM_KEY_SEP between the columns of a composite key, as the dataset
     * stores them; the server builds the same bytes from a request. */
    int rc = n ? lm_store_put_batch(x->w, x->keys, x->lens, x->packed, n, err) : LM_OK;
    if (rc) return rc;
    x->rep->written += n;
    if (x->o->progress) {
        lm_embed_progress p = {b->done, x->rep->tasks, lm_now() - x->t0, 0};
        p.tasks_per_s = (double)b->done / (p.seconds > 0 ? p.seconds : 1e-9);
        x->o->progress(x->o->progress_ctx, &p);
    }
    return LM_OK;
}

/* Task `t`'s vector and state into slot i of chunk b. */
static void embed_one(embed_run *x, task_embedder *te, chunk_buf *b, size_t i)
{
    const lm_embed_opts *o = x->o;
    const lm_task *k = lm_dataset_task(x->ds, b->tasks[i].task);
    if (o->only_changed && (!k->n || lm_dataset_row(x->ds, k->first + k->n - 1).time <= o->changed_since)) {
        b->state[i] = 2;
        return;
    }
    gather(&te->r, x->ds, k, o->adapt_from, x->since);
    if (te->r.n == 0) {
        b->state[i] = 0;
        return;
    }
    size_t klen;
    const char *key = lm_dataset_task_key(x->ds, k, &klen);
    embedder_run(te, key, klen, o->pool, b->vec + i * x->E);
    b->state[i] = 1;
}

/* Key order visits the dataset's rows out of order: ask for task i + 1's rows and task i + 2's
 * record ahead of use, so the memory latency overlaps the computation. The rows lie at a fixed
 * stride from the first one's (x->row0, x->row_bytes; 0 when the dataset has one row). */
static void prefetch_ahead(const embed_run *x, const chunk_buf *b, size_t i)
{
    if (i + 2 < b->n) __builtin_prefetch(lm_dataset_task(x->ds, b->tasks[i + 2].task));
    if (i + 1 >= b->n || !x->row_bytes) return;
    const lm_task *k = lm_dataset_task(x->ds, b->tasks[i + 1].task);
    /* a row starts 16 bytes before its meta features (time, label, split: data/dsfile.h) */
    const char *p = x->row0 + k->first * x->row_bytes - 16, *end = p + k->n * x->row_bytes;
    for (; p < end; p += 64) __builtin_prefetch(p);
}

/* The tasks part[0 .. np) (key order; done0 tasks came before): the threads compute chunk c
 * into one buffer while one of them writes chunk c - 1 from the other and then joins the
 * computing (a dynamic schedule), so the store's single-threaded writes overlap the
 * computation. Each task is computed by one thread with its own workspace, so its vector is
 * the same bits whatever the chunk, thread count or schedule (and equal to lm_adapt_task's). */
static void run_partition(embed_run *x, const keyrec *part, size_t np, uint64_t done0)
{
    uint64_t nchunks = (np + x->chunk - 1) / x->chunk;
#pragma omp parallel num_threads(x->threads)
    {
        task_embedder te;
        lm_err e = {0};
        int r2 = embedder_init(&te, x->m, x->plans, x->o, x->maxrows, &e);
#pragma omp critical
        if (r2 && !x->fail) {
            x->fail = r2;
            x->ferr = e;
        }
#pragma omp barrier
        /* every construct below is met by all threads in the same order; `stop` is read
         * between two barriers, so all of them break at the same chunk */
        for (uint64_t c = 0; !x->fail && c <= nchunks; c++) {
#pragma omp single nowait
            if (c > 0) x->wrc = write_chunk(x, &x->buf[(c - 1) & 1], &x->werr);
            if (c < nchunks) {
                chunk_buf *b = &x->buf[c & 1];
                size_t c0 = (size_t)c * x->chunk;
                b->tasks = part + c0, b->n = LM_MIN(x->chunk, np - c0), b->done = done0 + c0 + b->n;
#pragma omp for schedule(dynamic, 64) nowait
                for (size_t i = 0; i < b->n; i++) {
                    prefetch_ahead(x, b, i);
                    embed_one(x, &te, b, i);
                }
            }
#pragma omp barrier
            int stop = x->wrc != LM_OK;
#pragma omp barrier
            if (stop) break;
        }
        embedder_free(&te);
    }
}

/* ---- incremental runs: tasks absent from the dataset ------------------------------------------ */

/* With --only-changed-since, a task the current version holds but today's dataset lacks (its
 * rows fell out of the log's window, or the log is a delta) keeps its vector: the run carries
 * every task over unless it has new rows. The walk of the current version spills those tasks
 * to a temporary file (key length, key, E floats) and they are written from it after the walk,
 * so memory stays flat however many they are, and the store is never read and written at once. */
typedef struct absent_ctx {
    const lm_dataset *ds;
    FILE *f;
    size_t E;
    uint64_t n;
    int io; /* 1: a write to the spill file failed */
} absent_ctx;

static int absent_one(void *ctx, const char *key, size_t klen, const float *vec)
{
    absent_ctx *a = ctx;
    uint64_t t;
    if (lm_dataset_find_task(a->ds, key, klen, &t) == LM_OK) return 0;
    uint32_t len = (uint32_t)klen;
    if (fwrite(&len, sizeof len, 1, a->f) != 1 || fwrite(key, 1, klen, a->f) != klen ||
        fwrite(vec, sizeof(float), a->E, a->f) != a->E) {
        a->io = 1;
        return 1;
    }
    a->n++;
    return 0;
}

static int carry_absent(embed_run *x, lm_err *err)
{
    lm_store_version cur;
    lm_err e2 = {0};
    if (lm_store_current(x->store, &cur, &e2) == LM_ENOTFOUND) return LM_OK; /* nothing to carry */
    absent_ctx a = {x->ds, tmpfile(), x->E, 0, 0};
    if (!a.f) return lm_err_errno(err, LM_EIO, "embed: cannot create a temporary file for carried tasks");
    int rc = lm_store_walk(x->store, NULL, (uint32_t)x->E, absent_one, &a, err);
    if (!rc && a.io) rc = lm_err_errno(err, LM_EIO, "embed: writing carried tasks to a temporary file");
    if (!rc && fflush(a.f) != 0)
        rc = lm_err_errno(err, LM_EIO, "embed: writing carried tasks to a temporary file");
    if (!rc) rewind(a.f);
    size_t batch = x->chunk;
    char *keys = rc ? NULL : malloc(batch * (LM_STORE_KEY_MAX + 1));
    if (!rc && !keys) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    for (uint64_t done = 0; !rc && done < a.n;) {
        size_t n = 0;
        for (; n < batch && done + n < a.n; n++) {
            uint32_t len;
            char *k = keys + n * (LM_STORE_KEY_MAX + 1);
            if (fread(&len, sizeof len, 1, a.f) != 1 || len > LM_STORE_KEY_MAX ||
                fread(k, 1, len, a.f) != len ||
                fread(x->packed + n * x->E, sizeof(float), x->E, a.f) != x->E) {
                rc = lm_err_set(err, LM_EIO, "embed: reading back carried tasks from a temporary file");
                break;
            }
            x->keys[n] = k, x->lens[n] = len;
        }
        if (!rc) rc = lm_store_put_batch(x->w, x->keys, x->lens, x->packed, n, err);
        done += n;
    }
    if (!rc) {
        x->rep->carried += a.n;
        x->rep->carried_absent = a.n;
        x->rep->written += a.n;
    }
    free(keys);
    fclose(a.f);
    return rc;
}

/* ============================================================================================
 * lm_embed
 * ========================================================================================== */

int lm_embed(const lm_model *m, const lm_dataset *ds, lm_store *store, const lm_embed_opts *o,
             lm_embed_report *rep, lm_err *err)
{
    double t0 = lm_now();
    memset(rep, 0, sizeof *rep);
    int rc = lm_model_check_dataset(m, ds, err);
    if (rc) return rc;
    if (!o->version) return lm_err_set(err, LM_EINVAL, "embed: a version name is needed");
    if (o->pool < LM_POOL_LATEST || o->pool > LM_POOL_COS)
        return lm_err_set(err, LM_EINVAL, "embed: unknown pooling");
    if (!(o->window_days >= 0)) return lm_err_set(err, LM_EINVAL, "--window-days must be >= 0");
    embed_run x;
    memset(&x, 0, sizeof x);
    x.m = m, x.ds = ds, x.store = store, x.o = o, x.rep = rep, x.t0 = t0;
    x.E = lm_model_emb_dim(m), x.chunk = o->chunk ? o->chunk : 16384;
    x.threads = o->threads > 0 ? o->threads : omp_get_max_threads();
    uint64_t ntasks = lm_dataset_ntasks(ds);
    rep->tasks = ntasks;
    /* the window is relative to the newest example of the dataset */
    x.since = -INFINITY;
    x.maxrows = 1;
    if (o->window_days > 0 || o->only_changed) {
        double newest = -INFINITY;
        for (uint64_t t = 0; t < ntasks; t++) {
            const lm_task *k = lm_dataset_task(ds, t);
            if (k->n) newest = fmax(newest, lm_dataset_row(ds, k->first + k->n - 1).time);
        }
        if (o->window_days > 0) x.since = newest - o->window_days * 86400.0;
    }
    for (uint64_t t = 0; t < ntasks; t++) x.maxrows = LM_MAX(x.maxrows, lm_dataset_task(ds, t)->n);
    if (lm_dataset_nrows(ds) >= 2) {
        x.row0 = (const char *)lm_dataset_row(ds, 0).meta;
        x.row_bytes = (size_t)((const char *)lm_dataset_row(ds, 1).meta - x.row0);
    }
    /* one plan per member (the members share the architecture, so all or none are fast) */
    size_t nm = lm_model_nmembers(m);
    lm_meta_embed_plan **plans = calloc(nm, sizeof *plans);
    if (!plans) return lm_err_set(err, LM_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < nm; i++) {
        const lm_model *mi = lm_model_member(m, i);
        if (lm_meta_embed_supported(&mi->net, NULL) == LM_OK)
            rc = lm_meta_embed_plan_alloc(&plans[i], &mi->net, mi->theta_m, mi->theta_g, LM_BATCH_KERNEL_AUTO,
                                          err);
    }
    x.plans = (const lm_meta_embed_plan *const *)plans;

    char id[LM_STORE_MODEL_ID_MAX + 1];
    lm_model_id(m, id, sizeof id);
    if (!rc) rc = lm_store_begin_version(store, o->version, (uint32_t)x.E, o->encoding, id, &x.w, err);
    if (rc) {
        for (size_t i = 0; i < nm; i++) lm_meta_embed_plan_free(plans[i]);
        free(plans);
        return rc;
    }
    size_t cap = (size_t)LM_MIN((uint64_t)EMBED_PART_CHUNKS * x.chunk, ntasks ? ntasks : 1);
    keyrec *part = malloc((cap + 1) * sizeof *part),
           *tmp = malloc((LM_MAX(cap, EMBED_SAMPLE) + 1) * sizeof *tmp);
    keyrec *split = malloc(EMBED_SAMPLE * sizeof *split);
    for (int i = 0; i < 2; i++) {
        x.buf[i].vec = malloc((x.chunk * x.E + 1) * sizeof(float));
        x.buf[i].state = malloc(x.chunk + 1);
    }
    x.keys = malloc((x.chunk + 1) * sizeof *x.keys);
    x.lens = malloc((x.chunk + 1) * sizeof *x.lens);
    x.packed = malloc((x.chunk * x.E + 1) * sizeof(float));
    if (!part || !tmp || !split || !x.buf[0].vec || !x.buf[0].state || !x.buf[1].vec || !x.buf[1].state ||
        !x.keys || !x.lens || !x.packed)
        rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    /* partitions of the tasks in key order; each starts after the previous one's last key and
     * ends at the first splitter above it */
    uint64_t done = 0;
    keyrec lo = {0, 0};
    size_t nsplit = rc ? 0 : choose_splitters(ds, cap, split, tmp), si = 0;
    while (!rc && done < ntasks) {
        while (si < nsplit && done && keyrec_cmp(&split[si], &lo, (void *)ds) <= 0) si++;
        /* (lo, split[si]] holds split[si] itself, a task's key: never empty */
        size_t np = next_partition(ds, done ? &lo : NULL, si < nsplit ? &split[si] : NULL, part, tmp, cap);
        LM_ASSERT(np > 0 && np <= ntasks - done);
        lo = part[np - 1];
        run_partition(&x, part, np, done);
        done += np;
        if (x.fail) {
            rc = x.fail;
            if (err) *err = x.ferr;
        } else if (x.wrc) {
            rc = x.wrc;
            if (err) *err = x.werr;
        }
    }
    if (!rc && o->only_changed) rc = carry_absent(&x, err);
    if (!rc)
        rc = lm_store_publish(x.w, o->keep, err);
    else
        lm_store_abort(x.w);
    for (int i = 0; i < 2; i++) free(x.buf[i].vec), free(x.buf[i].state);
    free(part), free(tmp), free(split), free(x.keys), free(x.lens), free(x.packed);
    for (size_t i = 0; i < nm; i++) lm_meta_embed_plan_free(plans[i]);
    free(plans);
    rep->seconds = lm_now() - t0;
    rep->tasks_per_s = rep->seconds > 0 ? (double)ntasks / rep->seconds : 0;
    return rc;
}
