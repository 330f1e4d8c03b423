/* model.c: the model handle and its file. The file is safetensors (so PyTorch opens it with
 * safetensors.torch.load_file): one tensor per weight matrix, bias and table, named
 * meta.layer0.weight, global.layer1.bias, global.emb.item_id, meta.id_table, and JSON metadata
 * under the key "limaml" describing the network, the schema and how it was trained. */
#include "meta/model.h"
#include "model/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define LM_MODEL_VERSION 1

const char *lm_train_algo_name(int algo)
{
    switch (algo) {
    case LM_TRAIN_PLAIN: return "plain";
    case LM_TRAIN_WIDEDEEP: return "widedeep";
    case LM_TRAIN_MAML: return "maml";
    case LM_TRAIN_LIMAML: return "limaml";
    default: return "?";
    }
}

static int algo_from_name(const char *s)
{
    for (int a = 0; a <= LM_TRAIN_LIMAML; a++)
        if (!strcmp(s, lm_train_algo_name(a))) return a;
    return -1;
}

int lm_model_new(lm_model **out, const lm_net *net, int algo, const lm_schema *schema, lm_err *err)
{
    *out = NULL;
    lm_model *m = calloc(1, sizeof *m);
    if (!m) return lm_err_set(err, LM_ENOMEM, "out of memory");
    m->net = *net;
    m->algo = algo;
    m->theta_m = calloc(net->meta_np + 1, sizeof(float));
    m->theta_g = calloc(net->global_np + 1, sizeof(float));
    int rc = LM_OK;
    if (!m->theta_m || !m->theta_g)
        rc = lm_err_set(err, LM_ENOMEM, "out of memory (model of %zu parameters)",
                        net->meta_np + net->global_np);
    if (!rc) rc = lm_schema_parse(&m->schema, schema->json, strlen(schema->json), NULL, err);
    if (rc) {
        lm_model_free(m);
        return rc;
    }
    m->inner_steps = 1;
    m->task_lr = 0.1;
    *out = m;
    return LM_OK;
}

void lm_model_free(lm_model *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->nmembers; i++) lm_model_free(m->member[i]);
    free(m->member);
    free(m->theta_m);
    free(m->theta_g);
    lm_schema_free(m->schema);
    free(m->id_keys);
    free(m->id_off);
    free(m->train_json);
    if (m->info_json) cJSON_free(m->info_json);
    free(m);
}

const lm_schema *lm_model_schema(const lm_model *m)
{
    return m->schema;
}
int lm_model_algo(const lm_model *m)
{
    return m->algo;
}
size_t lm_model_emb_dim(const lm_model *m)
{
    return m->nmembers ? m->nmembers * m->net.E : m->net.E;
}
size_t lm_model_nmembers(const lm_model *m)
{
    return m->nmembers ? m->nmembers : 1;
}
const lm_model *lm_model_member(const lm_model *m, size_t i)
{
    LM_ASSERT(i < lm_model_nmembers(m));
    return m->nmembers ? m->member[i] : m;
}

/* One hash chained over each member's theta_m then theta_g, so a single network's id is what it
 * always was and an ensemble's changes with any member's weights or their order. */
void lm_model_id(const lm_model *m, char *out, size_t n)
{
    size_t nm = lm_model_nmembers(m);
    uint64_t h = 1;
    for (size_t i = 0; i < nm; i++) {
        const lm_model *x = lm_model_member(m, i);
        h = lm_hash64(x->theta_m, x->net.meta_np * sizeof(float), h);
        h = lm_hash64(x->theta_g, x->net.global_np * sizeof(float), h);
    }
    if (nm > 1)
        snprintf(out, n, "%s:ensemble%zu:%016" PRIx64, lm_train_algo_name(m->algo), nm, h);
    else
        snprintf(out, n, "%s:%016" PRIx64, lm_train_algo_name(m->algo), h);
}

/* Members must compute the same function shape: the same sizes everywhere (so a store row of
 * n * E floats splits the same way for every member, and one workspace serves them all). */
static int same_architecture(const lm_model *a, const lm_model *b)
{
    const lm_net *x = &a->net, *y = &b->net;
    if (a->algo != b->algo || x->cfg.meta_kind != y->cfg.meta_kind || x->E != y->E || x->nin != y->nin ||
        x->meta_np != y->meta_np || x->global_np != y->global_np || x->meta_task_np != y->meta_task_np ||
        x->cfg.loss != y->cfg.loss || x->cfg.emb_logit != y->cfg.emb_logit ||
        x->cfg.meta_in_global != y->cfg.meta_in_global || x->meta.nlayers != y->meta.nlayers ||
        x->global.nlayers != y->global.nlayers)
        return 0;
    for (size_t l = 0; l <= x->meta.nlayers; l++)
        if (x->cfg.meta_kind == LM_NET_META_MLP && x->meta.sizes[l] != y->meta.sizes[l]) return 0;
    for (size_t l = 0; l <= x->global.nlayers; l++)
        if (x->global.sizes[l] != y->global.sizes[l]) return 0;
    return !strcmp(a->schema->json, b->schema->json);
}

int lm_model_ensemble(lm_model **out, lm_model **members, size_t n, lm_err *err)
{
    *out = NULL;
    if (n < 2) return lm_err_set(err, LM_EINVAL, "ensemble: %zu member(s), at least 2", n);
    for (size_t i = 0; i < n; i++) {
        /* the ensemble frees each member once: one model given twice would be freed twice */
        for (size_t j = 0; j < i; j++)
            if (members[j] == members[i])
                return lm_err_set(err, LM_EINVAL, "ensemble: members %zu and %zu are the same model", j + 1,
                                  i + 1);
        if (members[i]->nmembers)
            return lm_err_set(err, LM_EINVAL, "ensemble: member %zu is itself an ensemble", i + 1);
        if (!same_architecture(members[0], members[i]))
            return lm_err_set(err, LM_EMISMATCH,
                              "ensemble: member %zu differs from member 1 in its algorithm, network "
                              "architecture, options or schema",
                              i + 1);
    }
    lm_model *m = calloc(1, sizeof *m);
    lm_model **mem = malloc(n * sizeof *mem);
    int rc = m && mem ? LM_OK : lm_err_set(err, LM_ENOMEM, "out of memory");
    if (!rc)
        rc = lm_schema_parse(&m->schema, members[0]->schema->json, strlen(members[0]->schema->json), NULL,
                             err);
    if (rc) {
        if (m) lm_schema_free(m->schema);
        free(m), free(mem);
        return rc;
    }
    memcpy(mem, members, n * sizeof *mem);
    m->net = members[0]->net;
    m->algo = members[0]->algo;
    m->inner_steps = members[0]->inner_steps;
    m->task_lr = members[0]->task_lr;
    m->nmembers = n;
    m->member = mem;
    *out = m;
    return LM_OK;
}
const char *lm_model_info_json(const lm_model *m)
{
    return m->info_json ? m->info_json : "{}";
}

size_t lm_model_id_row(const lm_model *m, const char *key, size_t len)
{
    /* Keys are sorted by (hash, key bytes, length) as prepare grouped them. */
    uint64_t h = lm_hash64(key, len, 0);
    size_t lo = 0, hi = m->nid;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *k = m->id_keys + m->id_off[mid];
        size_t kl = (size_t)(m->id_off[mid + 1] - m->id_off[mid]);
        uint64_t kh = lm_hash64(k, kl, 0);
        int c = kh < h ? -1 : kh > h ? 1 : 0;
        if (!c) c = kl < len ? -1 : kl > len ? 1 : memcmp(k, key, len);
        if (!c) return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return m->nid;
}

/* ---- block specifications ----------------------------------------------------------------- */

static int parse_sizes(const char *s, size_t *v, size_t max, size_t *n)
{
    *n = 0;
    while (*s) {
        char *end;
        unsigned long x = strtoul(s, &end, 10);
        if (end == s || x == 0 || x > 65536 || *n >= max) return -1;
        v[(*n)++] = x;
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return *n ? 0 : -1;
}

int lm_net_config_parse_blocks(lm_net_config *c, const char *meta_block, const char *global_block,
                               lm_err *err)
{
    size_t v[LM_MLP_MAX_LAYERS + 1], n;
    if (!strncmp(meta_block, "mlp:", 4)) {
        if (parse_sizes(meta_block + 4, v, LM_MLP_MAX_LAYERS, &n))
            return lm_err_set(
                err, LM_EINVAL,
                "--meta-block: '%s' is not mlp:H1,...,E (positive sizes, the last is the embedding size)",
                meta_block);
        c->meta_kind = LM_NET_META_MLP;
        c->nmeta_hidden = n - 1;
        for (size_t i = 0; i + 1 < n; i++) c->meta_hidden[i] = v[i];
        c->emb_dim = v[n - 1];
    } else if (!strncmp(meta_block, "id:", 3)) {
        if (parse_sizes(meta_block + 3, v, 1, &n))
            return lm_err_set(err, LM_EINVAL, "--meta-block: '%s' is not id:E", meta_block);
        c->meta_kind = LM_NET_META_ID;
        c->nmeta_hidden = 0;
        c->emb_dim = v[0];
    } else {
        return lm_err_set(err, LM_EINVAL, "--meta-block: '%s' must be mlp:H1,...,E or id:E", meta_block);
    }
    if (strncmp(global_block, "mlp:", 4) || parse_sizes(global_block + 4, v, LM_MLP_MAX_LAYERS - 1, &n))
        return lm_err_set(err, LM_EINVAL, "--global-block: '%s' is not mlp:H1,...", global_block);
    c->nglobal_hidden = n;
    for (size_t i = 0; i < n; i++) c->global_hidden[i] = v[i];
    return LM_OK;
}

/* ---- the file ---------------------------------------------------------------------------------- */

static cJSON *sizes_json(const size_t *v, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
    return a;
}

static cJSON *info_object(const lm_model *m);

/* An ensemble's metadata: its members' own, in order (tensors named member<i>.<name>). */
static char *build_info(const lm_model *m)
{
    cJSON *r;
    if (!m->nmembers) {
        r = info_object(m);
    } else {
        r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "version", LM_MODEL_VERSION);
        cJSON_AddStringToObject(r, "limaml", LM_VERSION_STRING);
        cJSON_AddStringToObject(r, "algo", lm_train_algo_name(m->algo));
        cJSON *a = cJSON_AddArrayToObject(r, "members");
        for (size_t i = 0; i < m->nmembers; i++) cJSON_AddItemToArray(a, info_object(m->member[i]));
    }
    char *s = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    return s;
}

static cJSON *info_object(const lm_model *m)
{
    const lm_net_config *c = &m->net.cfg;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddNumberToObject(r, "version", LM_MODEL_VERSION);
    cJSON_AddStringToObject(r, "limaml", LM_VERSION_STRING);
    cJSON_AddStringToObject(r, "algo", lm_train_algo_name(m->algo));
    cJSON *net = cJSON_AddObjectToObject(r, "net");
    cJSON_AddStringToObject(net, "meta_kind", c->meta_kind == LM_NET_META_ID ? "id" : "mlp");
    cJSON_AddItemToObject(net, "meta_hidden", sizes_json(c->meta_hidden, c->nmeta_hidden));
    cJSON_AddNumberToObject(net, "emb_dim", (double)c->emb_dim);
    cJSON_AddNumberToObject(net, "id_rows", (double)c->id_rows);
    cJSON_AddItemToObject(net, "global_hidden", sizes_json(c->global_hidden, c->nglobal_hidden));
    cJSON_AddBoolToObject(net, "meta_in_global", c->meta_in_global);
    cJSON_AddStringToObject(net, "loss", c->loss == LM_NET_LOSS_MSE ? "mse" : "bce");
    cJSON_AddNumberToObject(net, "dropout", c->dropout);
    /* written only when on, so a model without the option is byte-identical to before */
    if (c->emb_logit) cJSON_AddBoolToObject(net, "emb_logit", 1);
    cJSON_AddNumberToObject(net, "nmeta", (double)c->nmeta);
    cJSON_AddNumberToObject(net, "ndense", (double)c->ndense);
    cJSON_AddNumberToObject(r, "inner_steps", m->inner_steps);
    cJSON_AddNumberToObject(r, "task_lr", m->task_lr);
    cJSON *schema = cJSON_Parse(m->schema->json);
    if (schema) cJSON_AddItemToObject(r, "schema", schema);
    if (m->train_json) {
        cJSON *t = cJSON_Parse(m->train_json);
        if (t) cJSON_AddItemToObject(r, "train", t);
    }
    return r;
}

/* The tensors of a model, in buffer order: names, shapes and where they live. */
typedef struct tens_list {
    lm_st_tensor t[2 * LM_MLP_MAX_LAYERS * 2 + LM_NET_MAX_CAT + 4];
    size_t n;
} tens_list;

static void add_t(tens_list *l, const char *name, int dtype, uint64_t d0, uint64_t d1, int ndim,
                  const void *data)
{
    lm_st_tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->ndim = (uint32_t)ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = data;
    t->nbytes = (size_t)(ndim == 1 ? d0 : d0 * d1) * lm_dt_size(dtype);
}

static void mlp_tensors(tens_list *l, const char *prefix, const lm_mlp *mlp, const float *p)
{
    char name[LM_ST_NAME_MAX];
    for (size_t k = 0; k < mlp->nlayers; k++) {
        snprintf(name, sizeof name, "%s.layer%zu.weight", prefix, k);
        add_t(l, name, LM_DT_F32, mlp->sizes[k + 1], mlp->sizes[k], 2, p + mlp->w_off[k]);
        snprintf(name, sizeof name, "%s.layer%zu.bias", prefix, k);
        add_t(l, name, LM_DT_F32, mlp->sizes[k + 1], 0, 1, p + mlp->b_off[k]);
    }
}

/* A model's tensors, names prefixed by `prefix` ("" for a single network, "member<i>." for an
 * ensemble's member i). */
static void model_tensors(const lm_model *m, tens_list *l, const char *prefix)
{
    const lm_net *n = &m->net;
    char name[LM_ST_NAME_MAX];
    l->n = 0;
    snprintf(name, sizeof name, "%smeta", prefix);
    if (n->cfg.meta_kind == LM_NET_META_MLP)
        mlp_tensors(l, name, &n->meta, m->theta_m);
    else
        snprintf(name, sizeof name, "%smeta.id_table", prefix),
            add_t(l, name, LM_DT_F32, n->cfg.id_rows, n->E, 2, m->theta_m);
    snprintf(name, sizeof name, "%sglobal", prefix);
    mlp_tensors(l, name, &n->global, m->theta_g);
    for (size_t c = 0; c < n->ncat; c++) {
        snprintf(name, sizeof name, "%sglobal.emb.%.100s", prefix, m->schema->cat[c].column);
        add_t(l, name, LM_DT_F32, n->cat_rows[c], n->cat_dim[c], 2, m->theta_g + n->cat_off[c]);
    }
    if (n->cfg.meta_kind == LM_NET_META_ID) {
        snprintf(name, sizeof name, "%smeta.id_keys", prefix);
        add_t(l, name, LM_DT_U8, m->id_off[m->nid], 0, 1, m->id_keys);
        snprintf(name, sizeof name, "%smeta.id_key_offsets", prefix);
        add_t(l, name, LM_DT_I64, m->nid + 1, 0, 1, m->id_off);
    }
}

static void member_prefix(char *out, size_t cap, const lm_model *m, size_t i)
{
    if (m->nmembers)
        snprintf(out, cap, "member%zu.", i);
    else
        out[0] = 0;
}

int lm_model_save(const lm_model *m, const char *path, lm_err *err)
{
    size_t nm = lm_model_nmembers(m);
    char *info = build_info(m);
    tens_list *l = malloc(nm * sizeof *l);
    lm_st_tensor *all = malloc(nm * sizeof l->t);
    if (!info || !l || !all) {
        if (info) cJSON_free(info);
        free(l), free(all);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    size_t n = 0;
    char prefix[32];
    for (size_t i = 0; i < nm; i++) {
        member_prefix(prefix, sizeof prefix, m, i);
        model_tensors(lm_model_member(m, i), &l[i], prefix);
        memcpy(all + n, l[i].t, l[i].n * sizeof *all);
        n += l[i].n;
    }
    const char *k[1] = {"limaml"}, *v[1] = {info};
    int rc = lm_st_write(path, all, n, k, v, 1, err);
    cJSON_free(info);
    free(l), free(all);
    return rc;
}

/* x is a whole number in [1, max] */
static int whole_in(double x, double max)
{
    return x >= 1 && x <= max && x == floor(x);
}

static size_t json_sizes(const cJSON *a, size_t *v, size_t max, int *bad)
{
    size_t n = 0;
    const cJSON *e;
    if (!cJSON_IsArray(a)) {
        *bad = 1;
        return 0;
    }
    cJSON_ArrayForEach(e, a)
    {
        if (!cJSON_IsNumber(e) || !whole_in(e->valuedouble, 65536) || n >= max)
            *bad = 1;
        else
            v[n++] = (size_t)e->valuedouble;
    }
    return n;
}

/* One network from its metadata object `r` and its tensors named with `prefix`; *ntens: how
 * many tensors it has (the caller checks the file holds no others). */
static int load_one(lm_st_file *f, const cJSON *r, const char *prefix, const char *path, size_t *ntens,
                    lm_model **out, lm_err *err)
{
    *out = NULL;
    int rc = LM_OK;
    lm_model *m = NULL;
    lm_schema *schema = NULL;
#define BAD(...)                                                                                             \
    do {                                                                                                     \
        rc = lm_err_set(err, LM_EFORMAT, __VA_ARGS__);                                                       \
        goto done;                                                                                           \
    } while (0)
    const cJSON *net = cJSON_GetObjectItem(r, "net"), *sch = cJSON_GetObjectItem(r, "schema");
    const cJSON *algo = cJSON_GetObjectItem(r, "algo");
    if (!cJSON_IsObject(net) || !cJSON_IsObject(sch) || !cJSON_IsString(algo) ||
        algo_from_name(algo->valuestring) < 0)
        BAD("%s: model metadata lacks net, schema or algo", path);
    char *sj = cJSON_PrintUnformatted(sch);
    lm_err e2 = {0};
    rc = sj ? lm_schema_parse(&schema, sj, strlen(sj), NULL, &e2) : LM_ENOMEM;
    if (sj) cJSON_free(sj);
    if (rc) BAD("%s: stored schema: %s", path, e2.msg);
    lm_net_config c;
    lm_net_config_default(&c);
    if ((rc = lm_net_config_from_schema(&c, schema, err))) goto done;
    int bad = 0;
    const cJSON *kind = cJSON_GetObjectItem(net, "meta_kind");
    c.meta_kind = cJSON_IsString(kind) && !strcmp(kind->valuestring, "id") ? LM_NET_META_ID : LM_NET_META_MLP;
    const cJSON *mh = cJSON_GetObjectItem(net, "meta_hidden");
    c.nmeta_hidden = cJSON_IsArray(mh) && cJSON_GetArraySize(mh) == 0
                         ? 0
                         : json_sizes(mh, c.meta_hidden, LM_MLP_MAX_LAYERS - 1, &bad);
    c.nglobal_hidden =
        json_sizes(cJSON_GetObjectItem(net, "global_hidden"), c.global_hidden, LM_MLP_MAX_LAYERS - 1, &bad);
    const cJSON *x;
    /* counts from the file are checked before they become sizes (a negative or huge double
     * converted to size_t is undefined) */
    if (cJSON_IsNumber(x = cJSON_GetObjectItem(net, "emb_dim")) && whole_in(x->valuedouble, 65536))
        c.emb_dim = (size_t)x->valuedouble;
    else
        bad = 1;
    if (cJSON_IsNumber(x = cJSON_GetObjectItem(net, "id_rows"))) {
        /* 0 for an mlp block (lm_net_init wants >= 1 for an id block) */
        if (x->valuedouble == 0 || whole_in(x->valuedouble, 1099511627776.0))
            c.id_rows = (size_t)x->valuedouble;
        else
            bad = 1;
    }
    if (cJSON_IsBool(x = cJSON_GetObjectItem(net, "meta_in_global"))) c.meta_in_global = cJSON_IsTrue(x);
    if (cJSON_IsNumber(x = cJSON_GetObjectItem(net, "dropout"))) c.dropout = x->valuedouble;
    /* models from before the option have no key: off */
    if ((x = cJSON_GetObjectItem(net, "emb_logit"))) {
        if (cJSON_IsBool(x))
            c.emb_logit = cJSON_IsTrue(x);
        else
            bad = 1;
    }
    if (bad) BAD("%s: bad network description in the metadata", path);
    lm_net n;
    if ((rc = lm_net_init(&n, &c, &e2))) BAD("%s: %s", path, e2.msg);
    if ((rc = lm_model_new(&m, &n, algo_from_name(algo->valuestring), schema, err))) goto done;
    if (cJSON_IsNumber(x = cJSON_GetObjectItem(r, "inner_steps"))) m->inner_steps = (uint32_t)x->valuedouble;
    if (cJSON_IsNumber(x = cJSON_GetObjectItem(r, "task_lr"))) m->task_lr = x->valuedouble;
    const cJSON *tr = cJSON_GetObjectItem(r, "train");
    if (tr) m->train_json = cJSON_PrintUnformatted(tr);
    if (c.meta_kind == LM_NET_META_ID) {
        /* the member's own keys (member<i>.meta.id_keys in an ensemble); one-dimensional, so
         * the offsets hold the id_rows entries their shape says (a (id_rows, 0) shape has none) */
        char kon[LM_ST_NAME_MAX], kkn[LM_ST_NAME_MAX];
        snprintf(kon, sizeof kon, "%smeta.id_key_offsets", prefix);
        snprintf(kkn, sizeof kkn, "%smeta.id_keys", prefix);
        const lm_st_tensor *ko = lm_st_find(f, kon), *kk = lm_st_find(f, kkn);
        if (!ko || !kk || ko->dtype != LM_DT_I64 || kk->dtype != LM_DT_U8 || ko->ndim != 1 || kk->ndim != 1 ||
            ko->shape[0] != c.id_rows)
            BAD("%s: the id meta block's task keys are missing or inconsistent", path);
        m->nid = c.id_rows - 1;
        m->id_off = malloc(ko->nbytes);
        m->id_keys = malloc(kk->nbytes + 1);
        if (!m->id_off || !m->id_keys) BAD("%s: out of memory", path);
        memcpy(m->id_off, ko->data, ko->nbytes);
        memcpy(m->id_keys, kk->data, kk->nbytes);
        for (size_t i = 0; i < m->nid; i++)
            if (m->id_off[i] > m->id_off[i + 1]) BAD("%s: task key offsets are not increasing", path);
        if (m->id_off[0] != 0 || m->id_off[m->nid] != kk->nbytes)
            BAD("%s: task key offsets do not cover the keys", path);
    }
    tens_list l;
    model_tensors(m, &l, prefix);
    *ntens = l.n;
    for (size_t i = 0; i < l.n; i++) {
        const lm_st_tensor *t = lm_st_find(f, l.t[i].name);
        if (!t) BAD("%s: tensor '%s' is missing", path, l.t[i].name);
        if (t->dtype != l.t[i].dtype || t->ndim != l.t[i].ndim || t->shape[0] != l.t[i].shape[0] ||
            (t->ndim > 1 && t->shape[1] != l.t[i].shape[1]))
            BAD("%s: tensor '%s' has the wrong dtype or shape", path, l.t[i].name);
        if (l.t[i].data != m->id_keys && l.t[i].data != m->id_off)
            memcpy((void *)l.t[i].data, t->data, t->nbytes);
    }
    for (size_t i = 0; i < n.meta_np; i++)
        if (!(m->theta_m[i] - m->theta_m[i] == 0)) BAD("%s: a meta parameter is NaN or infinite", path);
    for (size_t i = 0; i < n.global_np; i++)
        if (!(m->theta_g[i] - m->theta_g[i] == 0)) BAD("%s: a global parameter is NaN or infinite", path);
#undef BAD
done:
    lm_schema_free(schema);
    if (rc) {
        lm_model_free(m);
        return rc;
    }
    *out = m;
    return LM_OK;
}

int lm_model_load(lm_model **out, const char *path, lm_err *err)
{
    *out = NULL;
    lm_st_file *f;
    int rc = lm_st_open(&f, path, err);
    if (rc) return rc;
    const char *info = lm_st_meta(f, "limaml");
    cJSON *r = info ? cJSON_Parse(info) : NULL;
    lm_model *m = NULL, **mem = NULL;
    size_t nm = 0, ntens = 0, got = 0;
#define BAD(...)                                                                                             \
    do {                                                                                                     \
        rc = lm_err_set(err, LM_EFORMAT, __VA_ARGS__);                                                       \
        goto done;                                                                                           \
    } while (0)
    if (!r) BAD("%s: not a limaml model (no or bad \"limaml\" metadata)", path);
    const cJSON *ver = cJSON_GetObjectItem(r, "version");
    if (!cJSON_IsNumber(ver)) BAD("%s: model metadata lacks a version", path);
    if (ver->valuedouble != LM_MODEL_VERSION) {
        rc = lm_err_set(err, LM_EVERSION, "%s: model version %g, this build reads version %d", path,
                        ver->valuedouble, LM_MODEL_VERSION);
        goto done;
    }
    const cJSON *ma = cJSON_GetObjectItem(r, "members");
    if (!ma) {
        if ((rc = load_one(f, r, "", path, &ntens, &m, err))) goto done;
    } else {
        /* an ensemble: its members' metadata in order, tensors member<i>.* */
        if (!cJSON_IsArray(ma) || cJSON_GetArraySize(ma) < 2)
            BAD("%s: an ensemble's \"members\" must be an array of at least 2", path);
        size_t want = (size_t)cJSON_GetArraySize(ma);
        if (!(mem = calloc(want, sizeof *mem))) BAD("%s: out of memory", path);
        const cJSON *mi;
        cJSON_ArrayForEach(mi, ma)
        {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "member%zu.", nm);
            if (!cJSON_IsObject(mi)) BAD("%s: ensemble member %zu: not an object", path, nm + 1);
            lm_err e2 = {0};
            if ((rc = load_one(f, mi, prefix, path, &got, &mem[nm], &e2))) {
                rc = lm_err_set(err, rc, "%s (ensemble member %zu)", e2.msg, nm + 1);
                goto done;
            }
            nm++;
            ntens += got;
        }
        lm_err e2 = {0};
        if ((rc = lm_model_ensemble(&m, mem, nm, &e2))) {
            rc = lm_err_set(err, rc, "%s: %s", path, e2.msg); /* which file's members differ */
            goto done;
        }
        nm = 0; /* the ensemble owns them */
    }
    if (ntens != lm_st_count(f))
        BAD("%s: %zu tensors, the network described has %zu", path, lm_st_count(f), ntens);
    m->info_json = build_info(m);
#undef BAD
done:
    for (size_t i = 0; i < nm; i++) lm_model_free(mem[i]);
    free(mem);
    cJSON_Delete(r);
    lm_st_close(f);
    if (rc) {
        lm_model_free(m);
        return rc;
    }
    *out = m;
    return LM_OK;
}

/* The dataset must have been prepared with the same features, in the same order. */
int lm_model_check_dataset(const lm_model *m, const lm_dataset *ds, lm_err *err)
{
    const lm_schema *a = m->schema, *b = lm_dataset_schema(ds);
    if (a->nmeta != b->nmeta || a->ndense != b->ndense || a->ncat != b->ncat)
        return lm_err_set(
            err, LM_EMISMATCH,
            "the dataset has %zu meta, %zu dense and %zu categorical features, the model %zu, %zu and %zu",
            b->nmeta, b->ndense, b->ncat, a->nmeta, a->ndense, a->ncat);
    for (size_t i = 0; i < a->nmeta; i++)
        if (strcmp(a->meta[i], b->meta[i]))
            return lm_err_set(err, LM_EMISMATCH, "meta feature %zu is '%s' in the model, '%s' in the dataset",
                              i, a->meta[i], b->meta[i]);
    for (size_t i = 0; i < a->ndense; i++)
        if (strcmp(a->dense[i], b->dense[i]))
            return lm_err_set(err, LM_EMISMATCH,
                              "dense feature %zu is '%s' in the model, '%s' in the dataset", i, a->dense[i],
                              b->dense[i]);
    for (size_t i = 0; i < a->ncat; i++)
        if (strcmp(a->cat[i].column, b->cat[i].column) || a->cat[i].buckets != b->cat[i].buckets)
            return lm_err_set(
                err, LM_EMISMATCH,
                "categorical feature %zu is '%s' (%u buckets) in the model, '%s' (%u) in the dataset", i,
                a->cat[i].column, a->cat[i].buckets, b->cat[i].column, b->cat[i].buckets);
    if (a->label_type != b->label_type) return lm_err_set(err, LM_EMISMATCH, "the label types differ");
    return LM_OK;
}
