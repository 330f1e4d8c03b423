/* test_model.c: the model file (src/meta/model.c) with ensembles: an ensemble of id meta blocks
 * round-trips (its members' task keys under member<i>.meta.id_keys); lm_model_ensemble refuses
 * one model given twice; and hand-edited files are refused with LM_EFORMAT or LM_EMISMATCH, not
 * read out of bounds: "members" not an array of objects, fewer than 2, members of other widths
 * E, a member's tensor missing, an extra tensor, task key offsets whose shape claims id_rows
 * entries but holds none. Run under LM_SANITIZE=address to see the leaks and overreads these
 * paths once had. */
#include "meta/model.h"
#include "model/safetensors.h"

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

/* One model twice would be freed twice by the ensemble: refused, the caller keeps it. */
static void test_same_pointer(void)
{
    lm_model *a = model_of(3, 0, 5), *e = NULL;
    if (!a) return;
    lm_model *twice[2] = {a, a};
    lm_err err = {0};
    CHECK(lm_model_ensemble(&e, twice, 2, &err) == LM_EINVAL && !e, "one model given twice is refused: %s",
          err.msg);
    lm_model_free(a);
}

/* ============================================================================================
 * hand-edited files
 * ========================================================================================== */

#define MAX_T 128

/* Rewrite the tensors of up to two files into `dst` with new metadata `meta` (NULL: the first
 * file's "limaml"): file i's names get `prefix[i]` ("" or NULL: as they are), the tensor named
 * `drop` is left out, `extra` (when set) is added, and `edit` may change any tensor. */
typedef void (*edit_fn)(lm_st_tensor *t);
static void rewrite(const char *dst, const char *const *src, size_t nsrc, const char *const *prefix,
                    const char *meta, const char *drop, int extra, edit_fn edit)
{
    lm_st_file *f[2] = {0};
    lm_st_tensor t[MAX_T];
    size_t n = 0;
    lm_err err = {0};
    static const float one = 1;
    for (size_t i = 0; i < nsrc; i++) {
        if (lm_st_open(&f[i], src[i], &err)) {
            printf("FAIL open %s: %s\n", src[i], err.msg);
            exit(1);
        }
        for (size_t j = 0; j < lm_st_count(f[i]) && n < MAX_T; j++) {
            lm_st_tensor x = *lm_st_get(f[i], j);
            if (prefix && prefix[i] && *prefix[i])
                snprintf(x.name, sizeof x.name, "%s%s", prefix[i], lm_st_get(f[i], j)->name);
            if (drop && !strcmp(x.name, drop)) continue;
            if (edit) edit(&x);
            t[n++] = x;
        }
    }
    if (extra)
        t[n++] = (lm_st_tensor){
            .name = "extra", .dtype = LM_DT_F32, .ndim = 1, .shape = {1}, .data = &one, .nbytes = sizeof one};
    const char *k[1] = {"limaml"}, *v[1] = {meta ? meta : lm_st_meta(f[0], "limaml")};
    if (lm_st_write(dst, t, n, k, v, 1, &err)) {
        printf("FAIL write %s: %s\n", dst, err.msg);
        exit(1);
    }
    for (size_t i = 0; i < nsrc; i++) lm_st_close(f[i]);
}

/* The "limaml" metadata of a saved file (malloc'd). */
static char *meta_of(const char *path)
{
    lm_st_file *f;
    lm_err err = {0};
    if (lm_st_open(&f, path, &err)) return NULL;
    char *s = strdup(lm_st_meta(f, "limaml"));
    lm_st_close(f);
    return s;
}

/* Loading `path` fails with `want` and a message holding `says`. */
static void refused(const char *path, int want, const char *says, const char *what)
{
    lm_model *m = NULL;
    lm_err err = {0};
    int rc = lm_model_load(&m, path, &err);
    CHECK(rc == want && !m && strstr(err.msg, says), "%s: rc %d (want %d), '%s' (want '%s')", what, rc, want,
          err.msg, says);
    lm_model_free(m);
}

/* Offsets of id_rows entries claimed by a 2-d shape (id_rows, 0): no bytes at all. */
static void empty_offsets(lm_st_tensor *t)
{
    if (!strstr(t->name, "meta.id_key_offsets")) return;
    t->ndim = 2, t->shape[1] = 0, t->nbytes = 0;
}

static void test_hostile(void)
{
    char a3[4200], a4[4200], e[4200], id1[4200], eid[4200], bad[4200];
    path_of(a3, sizeof a3, "a3.st"), path_of(a4, sizeof a4, "a4.st"), path_of(e, sizeof e, "e.st");
    path_of(id1, sizeof id1, "id1.st"), path_of(eid, sizeof eid, "eid.st"),
        path_of(bad, sizeof bad, "bad.st");
    lm_model *m3 = model_of(3, 0, 1), *m4 = model_of(4, 0, 2), *mi = model_of(3, 1, 3);
    lm_model *ens = ensemble_of(3, 0, 1, 2), *ensi = ensemble_of(3, 1, 3, 4);
    save(m3, a3), save(m4, a4), save(mi, id1), save(ens, e), save(ensi, eid);
    lm_model_free(m3), lm_model_free(m4), lm_model_free(mi), lm_model_free(ens), lm_model_free(ensi);
    char *j3 = meta_of(a3), *j4 = meta_of(a4);
    if (!j3 || !j4) {
        CHECK(0, "the saved files' metadata");
        free(j3), free(j4);
        return;
    }
    size_t cap = 3 * (strlen(j3) + strlen(j4)) + 256;
    char *meta = malloc(cap);
    const char *both[2] = {a3, a4}, *same[2] = {a3, a3}, *pre[2] = {"member0.", "member1."};
    const char *one[1] = {e};

    /* "members" that is not an array of at least two objects */
    snprintf(meta, cap, "{\"version\":1,\"members\":[%s,5]}", j3);
    rewrite(bad, same, 2, pre, meta, NULL, 0, NULL);
    refused(bad, LM_EFORMAT, "member 2: not an object", "a member that is a number");
    snprintf(meta, cap, "{\"version\":1,\"members\":[%s]}", j3);
    rewrite(bad, same, 1, pre, meta, NULL, 0, NULL);
    refused(bad, LM_EFORMAT, "at least 2", "one member");
    snprintf(meta, cap, "{\"version\":1,\"members\":{\"a\":%s,\"b\":%s}}", j3, j3);
    rewrite(bad, same, 2, pre, meta, NULL, 0, NULL);
    refused(bad, LM_EFORMAT, "at least 2", "members as an object");
    snprintf(meta, cap, "{\"version\":1,\"members\":[%s,{\"members\":[%s,%s]}]}", j3, j3, j3);
    rewrite(bad, same, 2, pre, meta, NULL, 0, NULL);
    refused(bad, LM_EFORMAT, "(ensemble member 2)", "a nested ensemble");

    /* members of other widths, each consistent with its own tensors */
    snprintf(meta, cap, "{\"version\":1,\"members\":[%s,%s]}", j3, j4);
    rewrite(bad, both, 2, pre, meta, NULL, 0, NULL);
    refused(bad, LM_EMISMATCH, "bad.st: ensemble: member 2 differs",
            "members with E 3 and 4 (the file named)");

    /* a member's tensor missing; a tensor too many */
    rewrite(bad, one, 1, NULL, NULL, "member1.global.layer1.bias", 0, NULL);
    refused(bad, LM_EFORMAT, "'member1.global.layer1.bias' is missing", "a member's tensor missing");
    rewrite(bad, one, 1, NULL, NULL, NULL, 1, NULL);
    refused(bad, LM_EFORMAT, "tensors, the network described has", "an extra tensor");

    /* task key offsets that claim id_rows entries and hold no bytes: one network, a member */
    const char *single_id[1] = {id1}, *ens_id[1] = {eid};
    rewrite(bad, single_id, 1, NULL, NULL, NULL, 0, empty_offsets);
    refused(bad, LM_EFORMAT, "task keys are missing or inconsistent", "empty task key offsets");
    rewrite(bad, ens_id, 1, NULL, NULL, NULL, 0, empty_offsets);
    refused(bad, LM_EFORMAT, "task keys are missing or inconsistent", "a member's empty task key offsets");

    /* sizes that are not whole numbers in range: refused before they become sizes */
    const char *sizes[][2] = {{"\"emb_dim\":3", "\"emb_dim\":-1"},
                              {"\"emb_dim\":3", "\"emb_dim\":1e30"},
                              {"\"emb_dim\":3", "\"emb_dim\":2.5"},
                              {"\"id_rows\":", "\"id_rows\":-7,\"x\":"},
                              {"\"global_hidden\":[", "\"global_hidden\":[1e300,"}};
    const char *m3f[1] = {a3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const char *at = strstr(j3, sizes[i][0]);
        CHECK(at != NULL, "the metadata has %s", sizes[i][0]);
        if (!at) continue;
        snprintf(meta, cap, "%.*s%s%s", (int)(at - j3), j3, sizes[i][1], at + strlen(sizes[i][0]));
        rewrite(bad, m3f, 1, NULL, meta, NULL, 0, NULL);
        char what[96];
        snprintf(what, sizeof what, "%s in the metadata", sizes[i][1]);
        refused(bad, LM_EFORMAT, "bad network description", what);
    }
    free(meta), free(j3), free(j4);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0); /* a sanitizer's abort keeps the failures printed before it */
    const char *t = getenv("LM_TMP");
    snprintf(dir, sizeof dir, "%s/meta_model.%d", t && *t ? t : "/tmp/limaml-test", (int)getpid());
    lm_test_mkdir_p(dir);
    test_round_trip(0);
    test_round_trip(1);
    test_same_pointer();
    test_hostile();
    lm_rmtree(dir);
    return CHECK_DONE();
}
