/* test_engine.c: the serving pieces below HTTP (tests/serve/test_serve.sh covers them over
 * sockets): the plain and AVX2 row kernels give the same bits and agree with the reference
 * (lm_net_predict_emb) on networks of many shapes, padded widths and the generic paths
 * included; composite task keys are joined in schema order; the id meta block's cold start is
 * the task's own row or the default row; an ensemble scores the mean of its members' logits,
 * bit for bit, and its cold start is theirs end to end; request errors name their field; floats
 * print so that they read back exactly; JSON strings are escaped. */
#include "meta/model.h"
#include "serve/serve.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static int fails, checks;
static int emb_logit_on; /* model_of builds nets with lm_net_config.emb_logit set to this */

#define CHECK(c, ...)                                                                                        \
    do {                                                                                                     \
        checks++;                                                                                            \
        if (!(c)) {                                                                                          \
            fails++;                                                                                         \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                      \
            printf(__VA_ARGS__);                                                                             \
            printf("\n");                                                                                    \
        }                                                                                                    \
    } while (0)

/* A schema with `nmeta` meta, `ndense` dense and `ncat` categorical features, and 1 or 2 task
 * columns. */
static lm_schema *schema_of(size_t nmeta, size_t ndense, size_t ncat, int two_task_cols, int regression)
{
    char js[4096];
    size_t o = (size_t)snprintf(js, sizeof js,
                                "{\"task\": [\"user_id\"%s], \"time\": \"ts\", \"label\": %s, \"meta\": [",
                                two_task_cols ? ", \"genre\"" : "",
                                regression ? "{\"column\": \"y\", \"type\": \"regression\"}" : "\"y\"");
    for (size_t i = 0; i < nmeta; i++)
        o += (size_t)snprintf(js + o, sizeof js - o, "%s\"m%zu\"", i ? ", " : "", i);
    o += (size_t)snprintf(js + o, sizeof js - o, "], \"dense\": [");
    for (size_t i = 0; i < ndense; i++)
        o += (size_t)snprintf(js + o, sizeof js - o, "%s\"d%zu\"", i ? ", " : "", i);
    o += (size_t)snprintf(js + o, sizeof js - o, "], \"categorical\": [");
    for (size_t i = 0; i < ncat; i++)
        o += (size_t)snprintf(js + o, sizeof js - o,
                              "%s{\"column\": \"c%zu\", \"buckets\": %zu, \"dim\": %zu}", i ? ", " : "", i,
                              5 + 40 * i, 3 + 2 * i);
    snprintf(js + o, sizeof js - o, "]}");
    lm_schema *s = NULL;
    lm_err err = {0};
    if (lm_schema_parse(&s, js, strlen(js), NULL, &err)) printf("schema: %s\n", err.msg);
    return s;
}

/* A model with random weights; global hidden widths gh[0..ngh), E, meta kind. */
static lm_model *net_of(const lm_schema *s, const size_t *gh, size_t ngh, size_t E, int id_kind,
                        uint64_t seed)
{
    lm_net_config c;
    lm_net_config_default(&c);
    lm_err err = {0};
    if (lm_net_config_from_schema(&c, s, &err)) return NULL;
    c.nglobal_hidden = ngh;
    for (size_t i = 0; i < ngh; i++) c.global_hidden[i] = gh[i];
    c.emb_dim = E;
    c.meta_hidden[0] = 7;
    c.nmeta_hidden = 1;
    if (id_kind) c.meta_kind = LM_NET_META_ID, c.id_rows = 3;
    c.emb_logit = emb_logit_on;
    lm_net net;
    lm_model *m = NULL;
    if (lm_net_init(&net, &c, &err) || lm_model_new(&m, &net, LM_TRAIN_LIMAML, s, &err)) {
        printf("model: %s\n", err.msg);
        return NULL;
    }
    lm_rng rng;
    lm_rng_seed(&rng, seed);
    lm_net_params_init_f32(&m->net, m->theta_m, m->theta_g, &rng);
    for (size_t i = 0; i < m->net.global_np; i++)
        m->theta_g[i] += (float)(0.05 * lm_rng_normal(&rng)); /* biases too */
    return m;
}

/* The same, served. */
static lm_srv_model *model_of(const lm_schema *s, const size_t *gh, size_t ngh, size_t E, int id_kind,
                              int engine, uint64_t seed)
{
    lm_model *m = net_of(s, gh, ngh, E, id_kind, seed);
    lm_srv_model *sm = NULL;
    lm_err err = {0};
    if (!m) return NULL;
    if (lm_srv_model_wrap(&sm, m, "(test)", engine, &err)) printf("wrap: %s\n", err.msg);
    if (sm) sm->gen = seed;
    return sm;
}

static void fill_rows(lm_srv_ws *w, const lm_srv_model *sm, size_t B, lm_rng *rng)
{
    const lm_net *n = sm->net;
    w->rows.n = B;
    for (size_t i = 0; i < n->nmeta; i++) w->meta[i] = (float)lm_rng_normal(rng);
    for (size_t i = 0; i < B * n->ndense; i++) w->rows.dense[i] = (float)(2 * lm_rng_normal(rng));
    for (size_t r = 0; r < B; r++)
        for (size_t c = 0; c < n->ncat; c++)
            w->rows.cat[r * n->ncat + c] = (uint32_t)lm_rng_below(rng, n->cat_rows[c]);
    for (size_t i = 0; i < n->E; i++) w->emb[i] = (float)lm_rng_normal(rng);
}

/* ---- the kernels ----------------------------------------------------------------------------- */

static void test_kernels(int emb_logit)
{
    emb_logit_on = emb_logit;
    static const struct {
        size_t nmeta, ndense, ncat, gh[4], ngh, E;
    } shapes[] = {
        {9, 9, 2, {64, 32}, 2, 16},   /* the paper's: registers for 64 and 32 */
        {3, 5, 1, {5}, 1, 3},         /* padded widths */
        {2, 0, 3, {70, 13}, 2, 4},    /* 72 wide: the generic paths */
        {4, 7, 0, {0}, 0, 2},         /* no hidden layer: the logit straight from layer 0 */
        {1, 2, 2, {8, 16, 24}, 3, 8}, /* 24 wide: the generic hidden path; a regression label */
        {6, 3, 1, {130, 9}, 2, 5},
    };
    int avx2 = lm_srv_kernel_pick() == LM_SRV_KERNEL_AVX2;
    if (!avx2) printf("note: no AVX2 here (or LM_SERVE_KERNEL=plain): plain kernel only\n");
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        lm_schema *s = schema_of(shapes[t].nmeta, shapes[t].ndense, shapes[t].ncat, 0, t == 4);
        lm_srv_model *fast =
            model_of(s, shapes[t].gh, shapes[t].ngh, shapes[t].E, 0, LM_SRV_ENGINE_FAST, 100 + t);
        lm_srv_model *ref =
            model_of(s, shapes[t].gh, shapes[t].ngh, shapes[t].E, 0, LM_SRV_ENGINE_REFERENCE, 100 + t);
        CHECK(fast && ref, "shape %zu: no model", t);
        if (!fast || !ref) continue;
        lm_srv_ws wf = {0}, wr = {0};
        lm_err err = {0};
        size_t B = 37;
        CHECK(!lm_srv_ws_prepare(&wf, fast, 64, &err) && !lm_srv_ws_prepare(&wr, ref, 64, &err), "ws: %s",
              err.msg);
        lm_rng a, b;
        lm_rng_seed(&a, t), lm_rng_seed(&b, t);
        fill_rows(&wf, fast, B, &a);
        fill_rows(&wr, ref, B, &b);
        fast->kernel = LM_SRV_KERNEL_PLAIN;
        lm_srv_score_rows(fast, &wf);
        float plain[64], worst = 0;
        memcpy(plain, wf.z, B * sizeof(float));
        if (avx2) {
            fast->kernel = LM_SRV_KERNEL_AVX2;
            lm_srv_score_rows(fast, &wf);
            CHECK(!memcmp(plain, wf.z, B * sizeof(float)),
                  "shape %zu: the AVX2 kernel differs from the plain one", t);
        }
        lm_srv_score_rows(ref, &wr);
        for (size_t r = 0; r < B; r++) {
            float d = fabsf(plain[r] - wr.z[r]) / (1e-5f + 1e-5f * fabsf(wr.z[r]));
            if (!(d <= worst)) worst = d;
        }
        CHECK(worst <= 1, "shape %zu%s: fast and reference differ by %.3g tolerances", t,
              emb_logit ? " (emb_logit)" : "", (double)worst);
        if (emb_logit) {
            /* against lm_net's own prediction at the cold-start embedding (the meta block on the
             * request's meta features): the logit's E[0] shift is the same one constant */
            float keep[64], z[64], zn = 0;
            memcpy(keep, wf.emb, fast->net->E * sizeof(float));
            lm_srv_cold_embedding(fast, &wf);
            lm_srv_score_rows(fast, &wf);
            lm_meta_ws_f32 mws = {0};
            CHECK(!lm_meta_ws_alloc_f32(&mws, fast->net, B, 1, 0, &err), "ws: %s", err.msg);
            for (size_t r = 0; r < B; r++)
                memcpy(wf.rows.meta + r * fast->net->nmeta, wf.meta, fast->net->nmeta * sizeof(float));
            lm_net_predict_f32(fast->net, &mws, fast->m->theta_m, fast->m->theta_g, &wf.rows, z);
            for (size_t r = 0; r < B; r++) {
                float y = fast->binary ? 1.0f / (1.0f + expf(-z[r])) : z[r];
                float d = fabsf(wf.z[r] - y) / (1e-5f + 1e-5f * fabsf(y));
                if (!(d <= zn)) zn = d;
            }
            CHECK(zn <= 1, "shape %zu (emb_logit): fast engine and lm_net_predict differ by %.3g tolerances",
                  t, (double)zn);
            printf("ok   shape %zu (emb_logit): fast vs reference %.2g, vs lm_net_predict %.2g tolerances\n",
                   t, (double)worst, (double)zn);
            lm_meta_ws_free_f32(&mws);
            memcpy(wf.emb, keep, fast->net->E * sizeof(float));
            lm_srv_score_rows(fast, &wf);
        }
        /* a candidate's score does not depend on the others of its request */
        wf.rows.n = 1;
        if (fast->net->ndense)
            memmove(wf.rows.dense, wf.rows.dense + 5 * fast->net->ndense, fast->net->ndense * sizeof(float));
        if (fast->net->ncat)
            memmove(wf.rows.cat, wf.rows.cat + 5 * fast->net->ncat, fast->net->ncat * sizeof(uint32_t));
        lm_srv_score_rows(fast, &wf);
        CHECK(!memcmp(&wf.z[0], &plain[5], sizeof(float)), "shape %zu: a score depends on its batch", t);
        lm_srv_ws_free(&wf), lm_srv_ws_free(&wr);
        lm_srv_model_free(fast), lm_srv_model_free(ref);
        lm_schema_free(s);
    }
}

/* ---- requests -------------------------------------------------------------------------------- */

static int parse(const lm_srv_model *sm, lm_srv_ws *w, const char *body, lm_srv_err *e)
{
    memset(e, 0, sizeof *e);
    return lm_srv_parse_score(sm, w, body, strlen(body), e);
}

static void test_requests(void)
{
    lm_schema *s = schema_of(2, 2, 1, 1, 0);
    size_t gh[] = {8};
    lm_srv_model *sm = model_of(s, gh, 1, 4, 0, LM_SRV_ENGINE_FAST, 7);
    lm_srv_ws w = {0};
    lm_err err = {0};
    lm_srv_err e;
    CHECK(sm && !lm_srv_ws_prepare(&w, sm, 3, &err), "setup: %s", err.msg);
    if (!sm) return;
    int st =
        parse(sm, &w,
              "{\"candidates\": [{\"dense\": {\"d1\": 2, \"d0\": 1.5}, \"categorical\": [\"x\"]},"
              " {\"categorical\": {\"c0\": 3}, \"dense\": [0, -0.25e1]}],"
              " \"meta\": {\"m1\": 1, \"m0\": 0.5}, \"task\": {\"genre\": \"Dr\\u00e4ma\", \"user_id\": 42}}",
              &e);
    CHECK(st == 0, "a good request: %s", e.msg);
    CHECK(w.key_len == 9 && !memcmp(w.key,
                                    "42\x1f"
                                    "Dr\xc3\xa4ma",
                                    9),
          "the key joins the task columns in schema order");
    CHECK(w.rows.n == 2 && w.rows.dense[0] == 1.5f && w.rows.dense[1] == 2 && w.rows.dense[3] == -2.5f,
          "dense by name and in order");
    CHECK(w.meta[0] == 0.5f && w.meta[1] == 1, "meta by name");
    CHECK(w.rows.cat[1] == 3 && w.rows.cat[0] < 5, "categorical ids: kept below buckets, else hashed");
    st = parse(sm, &w,
               "{\"task\": {\"user_id\": \"a\\tb\\n\\u00e4\\/\\\"x\\ud83d\\ude00\", "
               "\"genre\": -7}}",
               &e);
    CHECK(st == 400 && !strcmp(e.field, "meta"), "escapes: then meta is missing: %s", e.msg);
    CHECK(w.key_len == 16 && !memcmp(w.key, "a\tb\n\xc3\xa4/\"x\xf0\x9f\x98\x80\x1f-7", 16),
          "escapes, a surrogate pair and a negative integer in a task key");
    static const struct {
        const char *body, *field;
        int status;
    } bad[] = {
        {"{\"task\": {\"user_id\": 1}}", "task.genre", 400},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"a\\u001fb\"}}", "task.genre", 400},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"\"}, \"meta\": [1, 2], \"candidates\": [{\"dense\": [1, "
         "2], "
         "\"categorical\": [1]}, {\"dense\": [1, 2], \"categorical\": [1]}, {\"dense\": [1, 2], "
         "\"categorical\": [1]}, "
         "{\"dense\": [1, 2], \"categorical\": [1]}]}",
         "candidates", 413},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"\"}, \"meta\": [1, 2], \"candidates\": [{\"dense\": [1, "
         "2], "
         "\"categorical\": [1, 2]}]}",
         "candidates[0].categorical", 400},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"\"}, \"meta\": [1, 2], \"candidates\": [{\"dense\": [1, "
         "2e40], "
         "\"categorical\": [1]}]}",
         "candidates[0].dense[1]", 400},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"\"}, \"meta\": {\"m0\": 1, \"m0\": 2}}", "meta.m0", 400},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"\"}, \"meta\": [1, 2], \"candidates\": [{\"dense\": [1, "
         "2], "
         "\"categorical\": [1.0]}]}",
         "candidates[0].categorical[0]", 400},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"\"}, \"meta\": [1, 2], \"candidates\": [{\"dense\": [1, "
         "2], "
         "\"categorical\": [true]}]}",
         "candidates[0].categorical[0]", 400},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"\"}, \"meta\": [1, 2], \"candidates\": [{\"dense\": [1, "
         "-], "
         "\"categorical\": [1]}]}",
         "candidates[0].dense[1]", 400},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"\"}, \"meta\": [1, 2], \"candidates\": [{\"dense\": [1 "
         "2], "
         "\"categorical\": [1]}]}",
         "candidates[0].dense", 400},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"\\uDC00\"}}", "task.genre", 400},
        {"{\"task\": {\"user_id\": 1, \"genre\": \"\\x\"}}", "task.genre", 400},
        {"{\"task\"", "body", 400},
        {"", "body", 400},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        st = parse(sm, &w, bad[i].body, &e);
        CHECK(st == bad[i].status && !strcmp(e.field, bad[i].field) &&
                  !strncmp(e.msg, e.field, strlen(e.field)),
              "bad request %zu: want %d %s, got %d %s (%s)", i, bad[i].status, bad[i].field, st, e.field,
              e.msg);
    }
    /* a long key name is cut in the path, never overflows it */
    char body[2048];
    snprintf(body, sizeof body, "{\"task\": {\"user_id\": 1, \"genre\": \"a\"}, \"meta\": {\"%0900d\": 1}}",
             0);
    st = parse(sm, &w, body, &e);
    CHECK(st == 400 && strlen(e.field) < LM_SRV_FIELD_MAX && !strncmp(e.field, "meta.0000", 9),
          "a long name: %s", e.field);
    lm_srv_ws_free(&w);
    lm_srv_model_free(sm);
    lm_schema_free(s);
}

/* ---- the id meta block's cold start ----------------------------------------------------------- */

static void test_id_cold_start(void)
{
    lm_schema *s = schema_of(1, 1, 0, 0, 0);
    size_t gh[] = {4};
    lm_srv_model *sm = model_of(s, gh, 1, 3, 1, LM_SRV_ENGINE_FAST, 9);
    CHECK(sm != NULL, "an id model");
    if (!sm) return;
    /* two trained tasks, "a" and "b", sorted as lm_model_id_row expects: by (hash, length, bytes) */
    lm_model *m = sm->m;
    int ab = lm_hash64("a", 1, 0) < lm_hash64("b", 1, 0);
    m->nid = 2;
    m->id_keys = malloc(3);
    m->id_off = malloc(3 * sizeof(uint64_t));
    memcpy(m->id_keys, ab ? "ab" : "ba", 3);
    m->id_off[0] = 0, m->id_off[1] = 1, m->id_off[2] = 2;
    lm_srv_ws w = {0};
    lm_err err = {0};
    CHECK(!lm_srv_ws_prepare(&w, sm, 2, &err), "ws: %s", err.msg);
    const char *keys[] = {"a", "b", "zz"};
    size_t rows[] = {ab ? 0u : 1u, ab ? 1u : 0u, 2};
    for (int k = 0; k < 3; k++) {
        w.key_len = strlen(keys[k]);
        memcpy(w.key, keys[k], w.key_len);
        lm_srv_cold_embedding(sm, &w);
        CHECK(!memcmp(w.emb, m->theta_m + rows[k] * 3, 3 * sizeof(float)), "task %s: row %zu", keys[k],
              rows[k]);
    }
    lm_srv_ws_free(&w);
    lm_srv_model_free(sm);
    lm_schema_free(s);
}

/* ---- ensembles --------------------------------------------------------------------------------- */

/* The served ensemble of the models net_of gives for seeds s0 and s1 (fresh copies). */
static lm_srv_model *ensemble_of(const lm_schema *s, const size_t *gh, size_t ngh, size_t E, int id_kind,
                                 int engine, uint64_t s0, uint64_t s1)
{
    lm_model *two[2] = {net_of(s, gh, ngh, E, id_kind, s0), net_of(s, gh, ngh, E, id_kind, s1)};
    lm_model *e = NULL;
    lm_srv_model *sm = NULL;
    lm_err err = {0};
    if (!two[0] || !two[1] || lm_model_ensemble(&e, two, 2, &err)) {
        printf("ensemble: %s\n", err.msg);
        lm_model_free(two[0]), lm_model_free(two[1]);
        return NULL;
    }
    if (lm_srv_model_wrap(&sm, e, "(ensemble)", engine, &err)) printf("wrap: %s\n", err.msg);
    if (sm) sm->gen = 1000 + 31 * s0 + s1;
    return sm;
}

/* The request of src (meta, candidates) into dst, with the embedding emb: (dst's E). */
static void copy_request(lm_srv_ws *dst, const lm_srv_ws *src, const lm_net *n, const float *emb, size_t E)
{
    dst->rows.n = src->rows.n;
    memcpy(dst->meta, src->meta, n->nmeta * sizeof(float));
    memcpy(dst->rows.dense, src->rows.dense, src->rows.n * n->ndense * sizeof(float));
    memcpy(dst->rows.cat, src->rows.cat, src->rows.n * n->ncat * sizeof(uint32_t));
    memcpy(dst->emb, emb, E * sizeof(float));
    dst->key_len = src->key_len;
    memcpy(dst->key, src->key, src->key_len);
}

/* The logits of sm (a single network) on w's request into z: (w->rows.n), whatever its loss. */
static void logits(lm_srv_model *sm, lm_srv_ws *w, float *z)
{
    int binary = sm->binary;
    sm->binary = 0;
    lm_srv_score_rows(sm, w);
    sm->binary = binary;
    memcpy(z, w->z, w->rows.n * sizeof(float));
}

/* An ensemble of two networks A and B, served: the stored vector is 2E wide, A's E floats then
 * B's; a score is sigmoid((zA + zB) / 2) of the members' own logits on their halves, bit for bit
 * (each engine, each kernel) as lm_evaluate forms it; fast and reference agree; two copies of A
 * score as A, bit for bit; the cold start is A's then B's; the model id covers both members in
 * order, and a single network's id is the hash it always was. */

/* What an ensemble of two scores: the members' logits summed, divided by 2 in float, then the
 * sigmoid (binary), in that order, as lm_evaluate and the server form it. */
static void two_member_scores(int binary, const float *za, const float *zb, size_t B, float *out)
{
    for (size_t r = 0; r < B; r++) {
        float m = za[r] + zb[r];
        m = m / 2.0f;
        out[r] = binary ? 1.0f / (1.0f + expf(-m)) : m;
    }
}

static void test_ensemble(int emb_logit)
{
    emb_logit_on = emb_logit;
    static const struct {
        size_t nmeta, ndense, ncat, gh[4], ngh, E;
        int regression;
    } shapes[] = {
        {9, 9, 2, {64, 32}, 2, 16, 0},
        {1, 2, 2, {8, 16, 24}, 3, 8, 1},
        {3, 5, 1, {5}, 1, 3, 0},
    };
    int avx2 = lm_srv_kernel_pick() == LM_SRV_KERNEL_AVX2;
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        size_t E = shapes[t].E, B = 29;
        const size_t *gh = shapes[t].gh, ngh = shapes[t].ngh;
        lm_schema *s = schema_of(shapes[t].nmeta, shapes[t].ndense, shapes[t].ncat, 0, shapes[t].regression);
        uint64_t sa = 300 + t, sb = 400 + t;
        lm_srv_model *a = model_of(s, gh, ngh, E, 0, LM_SRV_ENGINE_FAST, sa);
        lm_srv_model *b = model_of(s, gh, ngh, E, 0, LM_SRV_ENGINE_FAST, sb);
        lm_srv_model *ar = model_of(s, gh, ngh, E, 0, LM_SRV_ENGINE_REFERENCE, sa);
        lm_srv_model *br = model_of(s, gh, ngh, E, 0, LM_SRV_ENGINE_REFERENCE, sb);
        lm_srv_model *ens = ensemble_of(s, gh, ngh, E, 0, LM_SRV_ENGINE_FAST, sa, sb);
        lm_srv_model *ensr = ensemble_of(s, gh, ngh, E, 0, LM_SRV_ENGINE_REFERENCE, sa, sb);
        lm_srv_model *swap = ensemble_of(s, gh, ngh, E, 0, LM_SRV_ENGINE_FAST, sb, sa);
        lm_srv_model *same = ensemble_of(s, gh, ngh, E, 0, LM_SRV_ENGINE_FAST, sa, sa);
        lm_srv_model *samer = ensemble_of(s, gh, ngh, E, 0, LM_SRV_ENGINE_REFERENCE, sa, sa);
        lm_srv_model *all[] = {a, b, ar, br, ens, ensr, swap, same, samer};
        int have = 1;
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) have &= all[i] != NULL;
        CHECK(have, "ensemble shape %zu: models", t);
        lm_srv_ws wa = {0}, wb = {0}, we = {0}, wer = {0}, ws = {0}, wsr = {0};
        lm_err err = {0};
        if (!have) goto next;
        CHECK(ens->nm == 2 && ens->E == 2 * E && a->nm == 1 && a->E == E, "shape %zu: 2 members, E %zu", t,
              ens->E);
        /* ids: a single network's as before this change; an ensemble's names it and its order */
        char want[LM_STORE_MODEL_ID_MAX + 1];
        uint64_t h = lm_hash64(a->m->theta_m, a->net->meta_np * sizeof(float), 1);
        h = lm_hash64(a->m->theta_g, a->net->global_np * sizeof(float), h);
        snprintf(want, sizeof want, "limaml:%016" PRIx64, h);
        CHECK(!strcmp(a->id, want), "a single network's id is its hash as before: %s, not %s", a->id, want);
        CHECK(!strncmp(ens->id, "limaml:ensemble2:", 17) && strlen(ens->id) == 17 + 16 &&
                  strcmp(ens->id, swap->id) && strcmp(ens->id, same->id) && !strcmp(ens->id, ensr->id),
              "ensemble ids: %s, swapped %s, same %s", ens->id, swap->id, same->id);
        int ok = !lm_srv_ws_prepare(&wa, a, 64, &err) && !lm_srv_ws_prepare(&wb, b, 64, &err) &&
                 !lm_srv_ws_prepare(&we, ens, 64, &err) && !lm_srv_ws_prepare(&wer, ensr, 64, &err) &&
                 !lm_srv_ws_prepare(&ws, same, 64, &err) && !lm_srv_ws_prepare(&wsr, samer, 64, &err);
        CHECK(ok, "ws: %s", err.msg);
        if (!ok) goto next;
        CHECK(wa.zm == NULL && we.zm != NULL, "a member buffer for ensembles only");
        lm_rng rng;
        lm_rng_seed(&rng, 50 + t);
        fill_rows(&we, ens, B, &rng);
        for (size_t i = E; i < 2 * E; i++) we.emb[i] = (float)lm_rng_normal(&rng);
        copy_request(&wer, &we, ens->net, we.emb, 2 * E);
        copy_request(&wa, &we, a->net, we.emb, E);
        copy_request(&wb, &we, b->net, we.emb + E, E);
        float za[64], zb[64], want_z[64], got[64], zf[64];
        for (int k = 0; k < 2; k++) {
            if (k == 1 && !avx2) break;
            a->kernel = b->kernel = ens->kernel = k ? LM_SRV_KERNEL_AVX2 : LM_SRV_KERNEL_PLAIN;
            logits(a, &wa, za);
            logits(b, &wb, zb);
            two_member_scores(ens->binary, za, zb, B, want_z);
            lm_srv_score_rows(ens, &we);
            CHECK(!memcmp(we.z, want_z, B * sizeof(float)),
                  "shape %zu%s, %s kernel: the ensemble's scores are not the members' mean logit's", t,
                  emb_logit ? " (emb_logit)" : "", k ? "AVX2" : "plain");
            if (k == 0) memcpy(zf, we.z, B * sizeof(float));
        }
        CHECK(!avx2 || !memcmp(zf, we.z, B * sizeof(float)), "shape %zu: ensemble, AVX2 differs from plain",
              t);
        /* the reference engine: the same sum and mean of lm_net_predict_emb's logits */
        lm_srv_ws wra = {0}, wrb = {0};
        ok = !lm_srv_ws_prepare(&wra, ar, 64, &err) && !lm_srv_ws_prepare(&wrb, br, 64, &err);
        CHECK(ok, "ws: %s", err.msg);
        if (ok) {
            copy_request(&wra, &we, ar->net, we.emb, E);
            copy_request(&wrb, &we, br->net, we.emb + E, E);
            logits(ar, &wra, za);
            logits(br, &wrb, zb);
            two_member_scores(ensr->binary, za, zb, B, want_z);
            lm_srv_score_rows(ensr, &wer);
            CHECK(!memcmp(wer.z, want_z, B * sizeof(float)),
                  "shape %zu: the reference engine's ensemble scores are not the members' mean", t);
            float worst = 0;
            for (size_t r = 0; r < B; r++) {
                float d = fabsf(zf[r] - wer.z[r]) / (1e-5f + 1e-5f * fabsf(wer.z[r]));
                if (!(d <= worst)) worst = d;
            }
            CHECK(worst <= 1, "shape %zu: ensemble, fast and reference differ by %.3g tolerances", t,
                  (double)worst);
        }
        lm_srv_ws_free(&wra), lm_srv_ws_free(&wrb);
        /* two copies of A score as A, bit for bit (each engine) */
        float emb_aa[2 * 64];
        memcpy(emb_aa, we.emb, E * sizeof(float));
        memcpy(emb_aa + E, we.emb, E * sizeof(float));
        copy_request(&ws, &we, same->net, emb_aa, 2 * E);
        copy_request(&wsr, &we, samer->net, emb_aa, 2 * E);
        a->kernel = same->kernel = lm_srv_kernel_pick();
        lm_srv_score_rows(a, &wa);
        memcpy(got, wa.z, B * sizeof(float));
        lm_srv_score_rows(same, &ws);
        CHECK(!memcmp(got, ws.z, B * sizeof(float)), "shape %zu: two copies of a model score as it (fast)",
              t);
        lm_srv_ws wr1 = {0};
        if (!lm_srv_ws_prepare(&wr1, ar, 64, &err)) {
            copy_request(&wr1, &we, ar->net, we.emb, E);
            lm_srv_score_rows(ar, &wr1);
            lm_srv_score_rows(samer, &wsr);
            CHECK(!memcmp(wr1.z, wsr.z, B * sizeof(float)),
                  "shape %zu: two copies of a model score as it (reference)", t);
        }
        lm_srv_ws_free(&wr1);
        /* the cold start: each member's unadapted meta block on the request's meta, end to end */
        lm_srv_cold_embedding(ens, &we);
        lm_srv_cold_embedding(a, &wa);
        lm_srv_cold_embedding(b, &wb);
        CHECK(!memcmp(we.emb, wa.emb, E * sizeof(float)) && !memcmp(we.emb + E, wb.emb, E * sizeof(float)) &&
                  memcmp(wa.emb, wb.emb, E * sizeof(float)),
              "shape %zu: the ensemble's cold start is A's then B's", t);
        lm_srv_cold_embedding(ensr, &wer);
        CHECK(!memcmp(we.emb, wer.emb, 2 * E * sizeof(float)),
              "shape %zu: the same with the reference engine", t);
    next:
        lm_srv_ws_free(&wa), lm_srv_ws_free(&wb), lm_srv_ws_free(&we), lm_srv_ws_free(&wer);
        lm_srv_ws_free(&ws), lm_srv_ws_free(&wsr);
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) lm_srv_model_free(all[i]);
        lm_schema_free(s);
    }
    emb_logit_on = 0;
}

/* An ensemble of id meta blocks: the cold start is each member's row of its own table (the
 * default row for an unseen task), end to end. */
static void test_ensemble_id_cold_start(void)
{
    lm_schema *s = schema_of(1, 1, 0, 0, 0);
    size_t gh[] = {4};
    lm_srv_model *a = model_of(s, gh, 1, 3, 1, LM_SRV_ENGINE_FAST, 21);
    lm_srv_model *b = model_of(s, gh, 1, 3, 1, LM_SRV_ENGINE_FAST, 22);
    lm_srv_model *ens = ensemble_of(s, gh, 1, 3, 1, LM_SRV_ENGINE_FAST, 21, 22);
    lm_srv_ws wa = {0}, wb = {0}, we = {0};
    lm_err err = {0};
    CHECK(a && b && ens, "id models");
    if (a && b && ens) {
        CHECK(!lm_srv_ws_prepare(&wa, a, 2, &err) && !lm_srv_ws_prepare(&wb, b, 2, &err) &&
                  !lm_srv_ws_prepare(&we, ens, 2, &err),
              "ws: %s", err.msg);
        for (lm_srv_ws *w = &wa; w; w = w == &wa ? &wb : w == &wb ? &we : NULL) {
            w->key_len = 2;
            memcpy(w->key, "zz", 2);
        }
        lm_srv_cold_embedding(a, &wa);
        lm_srv_cold_embedding(b, &wb);
        lm_srv_cold_embedding(ens, &we);
        CHECK(!memcmp(we.emb, wa.emb, 3 * sizeof(float)) && !memcmp(we.emb + 3, wb.emb, 3 * sizeof(float)) &&
                  memcmp(wa.emb, wb.emb, 3 * sizeof(float)),
              "an unseen task's cold start: A's default row, then B's");
    }
    lm_srv_ws_free(&wa), lm_srv_ws_free(&wb), lm_srv_ws_free(&we);
    lm_srv_model_free(a), lm_srv_model_free(b), lm_srv_model_free(ens);
    lm_schema_free(s);
}

/* ---- text -------------------------------------------------------------------------------------- */

static void test_text(void)
{
    lm_srv_buf b = {0};
    lm_rng rng;
    lm_rng_seed(&rng, 5);
    int exact = 1;
    for (int i = 0; i < 100000; i++) {
        uint32_t bits = (uint32_t)lm_rng_next(&rng);
        float x;
        memcpy(&x, &bits, 4);
        if (!isfinite(x)) continue;
        lm_srv_buf_reset(&b);
        lm_srv_buf_f32(&b, x);
        float y = strtof(b.p, NULL);
        if (memcmp(&x, &y, 4) && !(x == 0 && y == 0)) exact = 0;
    }
    CHECK(exact, "floats print so that they read back exactly");
    lm_srv_buf_reset(&b);
    const char *raw = "a\"b\\c\n\x01\xff\xc3\xa4";
    lm_srv_buf_json_str(&b, raw, strlen(raw));
    CHECK(!strcmp(b.p, "\"a\\\"b\\\\c\\n\\u0001\\u00ff\xc3\xa4\""), "JSON escaping: %s", b.p);
    lm_srv_buf_free(&b);
}

int main(void)
{
    test_kernels(0);
    test_kernels(1); /* the logit also gets E[0] */
    test_requests();
    test_id_cold_start();
    test_ensemble(0);
    test_ensemble(1);
    test_ensemble_id_cold_start();
    test_text();
    printf("%d passed, %d failed\n", checks - fails, fails);
    return fails ? 1 : 0;
}
