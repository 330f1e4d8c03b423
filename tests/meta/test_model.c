/* test_model.c: the model file (src/meta/model.c) with ensembles: an ensemble of MLP or id meta
 * blocks round-trips (an id member's task keys under member<i>.meta.id_keys). */
#include "meta/model.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lm_check.h"
#include "lm_testfs.h"

static char dir[4096];

static void path_of(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

/* A model with random weights on a small schema: meta width E, an MLP or an id meta block (two
 * task keys "u1", "u2" and the default row). */
static lm_model *model_of(size_t E, int id_kind, uint64_t seed)
{
    static const char js[] = "{\"task\": [\"user_id\"], \"time\": \"ts\", \"label\": \"y\", \"meta\": "
                             "[\"m0\", \"m1\"], \"dense\": [\"d0\"], \"categorical\": [{\"column\": "
                             "\"c0\", \"buckets\": 5, \"dim\": 3}]}";
    lm_schema *s = NULL;
    lm_err err = {0};
    lm_net_config c;
    lm_net net;
    lm_model *m = NULL;
    lm_net_config_default(&c);
    int rc = lm_schema_parse(&s, js, strlen(js), NULL, &err);
    if (!rc) rc = lm_net_config_from_schema(&c, s, &err);
    c.emb_dim = E;
    c.meta_hidden[0] = 4, c.nmeta_hidden = 1;
    c.global_hidden[0] = 6, c.nglobal_hidden = 1;
    if (id_kind) c.meta_kind = LM_NET_META_ID, c.id_rows = 3;
    if (!rc) rc = lm_net_init(&net, &c, &err);
    if (!rc) rc = lm_model_new(&m, &net, LM_TRAIN_LIMAML, s, &err);
    lm_schema_free(s);
    CHECK(rc == LM_OK, "model: %s", err.msg);
    if (rc) return NULL;
    lm_rng rng;
    lm_rng_seed(&rng, seed);
    lm_net_params_init_f32(&m->net, m->theta_m, m->theta_g, &rng);
    if (id_kind) {
        m->nid = 2;
        m->id_keys = malloc(5);
        m->id_off = malloc(3 * sizeof *m->id_off);
        if (!m->id_keys || !m->id_off) exit(2);
        memcpy(m->id_keys, "u1u2", 5);
        m->id_off[0] = 0, m->id_off[1] = 2, m->id_off[2] = 4;
    }
    return m;
}

/* An ensemble of two models made by model_of (seeds s0, s1), or NULL. */
static lm_model *ensemble_of(size_t E, int id_kind, uint64_t s0, uint64_t s1)
{
    lm_model *two[2] = {model_of(E, id_kind, s0), model_of(E, id_kind, s1)}, *e = NULL;
    lm_err err = {0};
    int rc = two[0] && two[1] ? lm_model_ensemble(&e, two, 2, &err) : LM_EINVAL;
    CHECK(rc == LM_OK, "ensemble: %s", err.msg);
    if (rc) lm_model_free(two[0]), lm_model_free(two[1]);
    return e;
}

static void save(const lm_model *m, const char *path)
{
    lm_err err = {0};
    CHECK(m && lm_model_save(m, path, &err) == LM_OK, "save %s: %s", path, err.msg);
}

/* ============================================================================================
 * round trips
 * ========================================================================================== */

static int same_member(const lm_model *a, const lm_model *b)
{
    return a->net.meta_np == b->net.meta_np && a->net.global_np == b->net.global_np &&
           !memcmp(a->theta_m, b->theta_m, a->net.meta_np * sizeof(float)) &&
           !memcmp(a->theta_g, b->theta_g, a->net.global_np * sizeof(float)) && a->nid == b->nid &&
           (!a->nid || (!memcmp(a->id_off, b->id_off, (a->nid + 1) * sizeof *a->id_off) &&
                        !memcmp(a->id_keys, b->id_keys, a->id_off[a->nid])));
}

static void test_round_trip(int id_kind)
{
    char p[4200];
    path_of(p, sizeof p, id_kind ? "ens_id.st" : "ens_mlp.st");
    lm_model *e = ensemble_of(3, id_kind, 11, 12), *back = NULL;
    if (!e) return;
    save(e, p);
    lm_err err = {0};
    int rc = lm_model_load(&back, p, &err);
    CHECK(rc == LM_OK, "%s ensemble: load what was saved: %s", id_kind ? "id" : "mlp", err.msg);
    if (!rc) {
        char ia[LM_STORE_MODEL_ID_MAX + 1], ib[LM_STORE_MODEL_ID_MAX + 1];
        lm_model_id(e, ia, sizeof ia), lm_model_id(back, ib, sizeof ib);
        CHECK(lm_model_nmembers(back) == 2 && lm_model_emb_dim(back) == 6 && !strcmp(ia, ib),
              "the loaded ensemble: 2 members, 6 floats, id %s (saved %s)", ib, ia);
        for (size_t i = 0; i < 2; i++)
            CHECK(same_member(lm_model_member(e, i), lm_model_member(back, i)),
                  "%s ensemble: member %zu's weights and task keys read back", id_kind ? "id" : "mlp", i);
        if (id_kind)
            CHECK(lm_model_id_row(lm_model_member(back, 1), "u2", 2) == 1 &&
                      lm_model_id_row(lm_model_member(back, 1), "zz", 2) == 2,
                  "a loaded id member finds its keys' rows");
    }
    lm_model_free(back);
    lm_model_free(e);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0); /* a sanitizer's abort keeps the failures printed before it */
    const char *t = getenv("LM_TMP");
    snprintf(dir, sizeof dir, "%s/meta_model.%d", t && *t ? t : "/tmp/limaml-test", (int)getpid());
    lm_test_mkdir_p(dir);
    test_round_trip(0);
    test_round_trip(1);
    lm_rmtree(dir);
    return CHECK_DONE();
}
