/* schema.c: the JSON description of an interaction log (which columns are the task, the
 * time, the label and the features), parsed with cJSON and checked key by key. */
#include "core/core.h"

#include <cjson/cJSON.h>
#include <string.h>

/* Line and column of byte `pos` in `text`, both 1-based. */
static void line_col(const char *text, size_t pos, size_t *line, size_t *col)
{
    size_t l = 1, c = 1;
    for (size_t i = 0; i < pos && text[i]; i++) {
        if (text[i] == '\n')
            l++, c = 1;
        else
            c++;
    }
    *line = l;
    *col = c;
}

typedef struct {
    const char *path;
    lm_err *err;
} ctx;

static int bad(ctx *c, const char *key, const char *what)
{
    return lm_err_set(c->err, LM_EINVAL, "%s: key '%s': %s", c->path, key, what);
}

/* A string value, or NULL with an error when required. */
static int get_string(ctx *c, const cJSON *root, const char *key, int required, char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return required ? bad(c, key, "missing (a column name is required)") : LM_OK;
    if (!cJSON_IsString(v) || !v->valuestring[0]) return bad(c, key, "must be a non-empty string");
    *out = lm_strdup(v->valuestring);
    return *out ? LM_OK : lm_err_set(c->err, LM_ENOMEM, "out of memory");
}

/* An array of non-empty strings. */
static int get_names(ctx *c, const cJSON *root, const char *key, int min, char ***out, size_t *n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = NULL;
    *n = 0;
    if (!v) {
        if (min > 0) return bad(c, key, "missing (an array of column names is required)");
        return LM_OK;
    }
    if (cJSON_IsString(v) && min <= 1) { /* "task": "user_id" is accepted for one column */
        if (!v->valuestring[0]) return bad(c, key, "must name a column");
        *out = malloc(sizeof(char *));
        if (!*out || !((*out)[0] = lm_strdup(v->valuestring)))
            return lm_err_set(c->err, LM_ENOMEM, "out of memory");
        *n = 1;
        return LM_OK;
    }
    if (!cJSON_IsArray(v)) return bad(c, key, "must be an array of column names");
    int len = cJSON_GetArraySize(v);
    if (len < min) return bad(c, key, "must name at least one column");
    *out = calloc((size_t)len + 1, sizeof(char *));
    if (!*out) return lm_err_set(c->err, LM_ENOMEM, "out of memory");
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        if (!cJSON_IsString(e) || !e->valuestring[0])
            return lm_err_set(c->err, LM_EINVAL, "%s: key '%s': element %d must be a non-empty string",
                              c->path, key, i);
        if (!((*out)[i] = lm_strdup(e->valuestring))) return lm_err_set(c->err, LM_ENOMEM, "out of memory");
        *n = (size_t)++i;
    }
    return LM_OK;
}

static int get_delim(ctx *c, const cJSON *root, const char *key, char def, char *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = def;
    if (!v) return LM_OK;
    if (!cJSON_IsString(v)) return bad(c, key, "must be a one-character string such as \",\" or \"\\t\"");
    const char *s = v->valuestring;
    if (!strcmp(s, "\\t") || !strcmp(s, "tab"))
        *out = '\t';
    else if (strlen(s) == 1 && s[0] != '"' && s[0] != '\n' && s[0] != '\r')
        *out = s[0];
    else
        return bad(c, key, "must be a one-character string such as \",\" or \"\\t\"");
    return LM_OK;
}

static int get_bool(ctx *c, const cJSON *root, const char *key, int def, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = def;
    if (!v) return LM_OK;
    if (!cJSON_IsBool(v)) return bad(c, key, "must be true or false");
    *out = cJSON_IsTrue(v);
    return LM_OK;
}

static int parse_label(ctx *c, const cJSON *root, lm_schema *s)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "label");
    if (!v) return bad(c, "label", "missing (the label column is required)");
    if (cJSON_IsString(v)) return get_string(c, root, "label", 1, &s->label);
    if (!cJSON_IsObject(v))
        return bad(c, "label", "must be a column name or {\"column\": .., \"min\": .., \"type\": ..}");
    ctx sub = {c->path, c->err};
    int rc = get_string(&sub, v, "column", 1, &s->label);
    if (rc) return rc;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type");
    if (t) {
        if (cJSON_IsString(t) && !strcmp(t->valuestring, "binary"))
            s->label_type = LM_LABEL_BINARY;
        else if (cJSON_IsString(t) && !strcmp(t->valuestring, "regression"))
            s->label_type = LM_LABEL_REGRESSION;
        else
            return bad(c, "label.type", "must be \"binary\" or \"regression\"");
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(v, "min");
    if (m) {
        if (!cJSON_IsNumber(m)) return bad(c, "label.min", "must be a number");
        if (s->label_type != LM_LABEL_BINARY)
            return bad(c, "label.min", "only binary labels take a threshold");
        s->label_has_threshold = 1;
        s->label_threshold = m->valuedouble;
    }
    return LM_OK;
}

static int parse_categorical(ctx *c, const cJSON *root, lm_schema *s)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "categorical");
    if (!v) return LM_OK;
    if (!cJSON_IsArray(v))
        return bad(c, "categorical", "must be an array of {\"column\", \"buckets\", \"dim\"}");
    int len = cJSON_GetArraySize(v);
    s->cat = calloc((size_t)len + 1, sizeof *s->cat);
    if (!s->cat) return lm_err_set(c->err, LM_ENOMEM, "out of memory");
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, v)
    {
        char key[64];
        snprintf(key, sizeof key, "categorical[%d]", i);
        if (!cJSON_IsObject(e)) return bad(c, key, "must be an object {\"column\", \"buckets\", \"dim\"}");
        lm_cat_spec *cs = &s->cat[i];
        s->ncat = (size_t)++i;
        const cJSON *col = cJSON_GetObjectItemCaseSensitive(e, "column");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(e, "buckets");
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "dim");
        if (!cJSON_IsString(col) || !col->valuestring[0]) return bad(c, key, "\"column\" must name a column");
        if (!(cs->column = lm_strdup(col->valuestring)))
            return lm_err_set(c->err, LM_ENOMEM, "out of memory");
        if (!cJSON_IsNumber(b) || b->valuedouble < 1 || b->valuedouble > 4294967295.0 ||
            b->valuedouble != (double)(uint64_t)b->valuedouble)
            return bad(c, key, "\"buckets\" must be a positive integer");
        cs->buckets = (uint32_t)b->valuedouble;
        if (!d)
            cs->dim = 8;
        else if (!cJSON_IsNumber(d) || d->valuedouble < 1 || d->valuedouble > 4096 ||
                 d->valuedouble != (double)(uint32_t)d->valuedouble)
            return bad(c, key, "\"dim\" must be an integer in [1, 4096]");
        else
            cs->dim = (uint32_t)d->valuedouble;
    }
    return LM_OK;
}

/* "rates": [{"column": C, "smoothing": a, "folds": K}]: C must be a categorical column; two
 * dense features are appended per entry (their names must not clash with a column's). */
static int parse_rates(ctx *c, const cJSON *root, lm_schema *s)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "rates");
    if (!v) return LM_OK;
    if (!cJSON_IsArray(v))
        return bad(c, "rates", "must be an array of {\"column\", \"smoothing\", \"folds\"}");
    int len = cJSON_GetArraySize(v);
    s->rate = calloc((size_t)len + 1, sizeof *s->rate);
    char **dense = realloc(s->dense, (s->ndense + 2 * (size_t)len + 1) * sizeof *dense);
    if (!s->rate || !dense) return lm_err_set(c->err, LM_ENOMEM, "out of memory");
    s->dense = dense;
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, v)
    {
        char key[64];
        snprintf(key, sizeof key, "rates[%d]", i++);
        if (!cJSON_IsObject(e))
            return bad(c, key, "must be an object {\"column\", \"smoothing\", \"folds\"}");
        const cJSON *col = cJSON_GetObjectItemCaseSensitive(e, "column");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(e, "smoothing");
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(e, "folds");
        if (!cJSON_IsString(col)) return bad(c, key, "\"column\" must name a categorical column");
        size_t ci = 0;
        while (ci < s->ncat && strcmp(s->cat[ci].column, col->valuestring)) ci++;
        if (ci == s->ncat) return bad(c, key, "\"column\" must name a column of \"categorical\"");
        for (size_t r = 0; r < s->nrate; r++)
            if (s->rate[r].cat == ci) return bad(c, key, "the column has a rate already");
        lm_rate_spec *rs = &s->rate[s->nrate];
        rs->cat = (uint32_t)ci;
        rs->smoothing = 5;
        rs->folds = 5;
        if (a && (!cJSON_IsNumber(a) || !(a->valuedouble > 0) || a->valuedouble > 1e9))
            return bad(c, key, "\"smoothing\" must be a number > 0");
        if (a) rs->smoothing = a->valuedouble;
        if (k && (!cJSON_IsNumber(k) || k->valuedouble < 2 || k->valuedouble > 64 ||
                  k->valuedouble != (double)(uint32_t)k->valuedouble))
            return bad(c, key, "\"folds\" must be an integer in [2, 64]");
        if (k) rs->folds = (uint32_t)k->valuedouble;
        if (!(rs->column = lm_strdup(col->valuestring)))
            return lm_err_set(c->err, LM_ENOMEM, "out of memory");
        s->nrate++;
        size_t n = strlen(col->valuestring) + 16;
        char *r1 = malloc(n), *r2 = malloc(n);
        if (!r1 || !r2) {
            free(r1), free(r2);
            return lm_err_set(c->err, LM_ENOMEM, "out of memory");
        }
        snprintf(r1, n, "%s_rate", col->valuestring);
        snprintf(r2, n, "%s_logcount", col->valuestring);
        s->dense[s->ndense++] = r1;
        s->dense[s->ndense++] = r2;
    }
    return LM_OK;
}

static int parse_join(ctx *c, const cJSON *root, lm_schema *s)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "join");
    if (!v) return LM_OK;
    if (!cJSON_IsArray(v)) return bad(c, "join", "must be an array of {\"file\", \"on\"}");
    int len = cJSON_GetArraySize(v);
    s->join = calloc((size_t)len + 1, sizeof *s->join);
    if (!s->join) return lm_err_set(c->err, LM_ENOMEM, "out of memory");
    char *base = lm_path_dir(c->path ? c->path : ".");
    if (!base) return lm_err_set(c->err, LM_ENOMEM, "out of memory");
    const cJSON *e;
    int i = 0, rc = LM_OK;
    cJSON_ArrayForEach(e, v)
    {
        char key[64];
        snprintf(key, sizeof key, "join[%d]", i);
        lm_join_spec *j = &s->join[i];
        s->njoin = (size_t)++i;
        if (!cJSON_IsObject(e)) {
            rc = bad(c, key, "must be an object {\"file\", \"on\"}");
            break;
        }
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "file");
        const cJSON *on = cJSON_GetObjectItemCaseSensitive(e, "on");
        if (!cJSON_IsString(f) || !f->valuestring[0]) {
            rc = bad(c, key, "\"file\" must name a file");
            break;
        }
        if (!cJSON_IsString(on) || !on->valuestring[0]) {
            rc = bad(c, key, "\"on\" must name the key column");
            break;
        }
        j->file = f->valuestring[0] == '/' || !c->path ? lm_strdup(f->valuestring)
                                                       : lm_path_join(base, f->valuestring);
        j->on = lm_strdup(on->valuestring);
        if (!j->file || !j->on) {
            rc = lm_err_set(c->err, LM_ENOMEM, "out of memory");
            break;
        }
        ctx sub = {c->path, c->err};
        if ((rc = get_delim(&sub, e, "delimiter", s->delimiter, &j->delimiter))) break;
        if ((rc = get_bool(&sub, e, "header", 1, &j->header))) break;
        if ((rc = get_names(&sub, e, "columns", 0, &j->columns, &j->ncolumns))) break;
        if (!j->header && !j->ncolumns) {
            rc = bad(c, key, "without a header, \"columns\" must name the columns");
            break;
        }
    }
    free(base);
    return rc;
}

/* A feature column must be named once: two roles for one column is a schema mistake. */
static int check_duplicates(ctx *c, const lm_schema *s)
{
    const char *names[4096];
    const char *roles[4096];
    size_t n = 0;
#define ADD(nm, role)                                                                                        \
    do {                                                                                                     \
        if (n < 4096) {                                                                                      \
            names[n] = (nm);                                                                                 \
            roles[n] = (role);                                                                               \
            n++;                                                                                             \
        }                                                                                                    \
    } while (0)
    for (size_t i = 0; i < s->nmeta; i++) ADD(s->meta[i], "meta");
    for (size_t i = 0; i < s->ndense; i++) ADD(s->dense[i], "dense");
    for (size_t i = 0; i < s->ncat; i++) ADD(s->cat[i].column, "categorical");
    ADD(s->label, "label");
    ADD(s->time, "time");
#undef ADD
    for (size_t i = 0; i < n; i++)
        for (size_t k = i + 1; k < n; k++)
            if (!strcmp(names[i], names[k]))
                return lm_err_set(c->err, LM_EINVAL, "%s: column '%s' is named twice (as %s and as %s)",
                                  c->path, names[i], roles[i], roles[k]);
    return LM_OK;
}

/* A misspelt key would silently drop columns: every key must be known. Keys starting with '_'
 * are comments. */
static int check_keys(ctx *c, const cJSON *root)
{
    static const char *known[] = {"delimiter", "header",      "columns", "task",     "time", "label", "meta",
                                  "dense",     "categorical", "split",   "tiebreak", "join", "rates"};
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (e->string[0] == '_') continue;
        size_t i = 0;
        while (i < sizeof known / sizeof known[0] && strcmp(known[i], e->string)) i++;
        if (i == sizeof known / sizeof known[0])
            return lm_err_set(
                c->err, LM_EINVAL,
                "%s: unknown key '%s' (known: delimiter, header, columns, task, time, label, "
                "meta, dense, categorical, split, tiebreak, join, rates; keys starting with '_' are "
                "comments)",
                c->path, e->string);
    }
    return LM_OK;
}

int lm_schema_parse(lm_schema **out, const char *json, size_t len, const char *path, lm_err *err)
{
    *out = NULL;
    const char *name = path ? path : "schema";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t line, col;
        size_t pos = end ? (size_t)(end - json) : 0;
        const char *ep = cJSON_GetErrorPtr();
        if (ep && ep >= json && ep <= json + len) pos = (size_t)(ep - json);
        line_col(json, pos, &line, &col);
        return lm_err_set(err, LM_EINVAL, "%s:%zu:%zu: not valid JSON", name, line, col);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lm_err_set(err, LM_EINVAL, "%s:1:1: the schema must be a JSON object", name);
    }
    lm_schema *s = calloc(1, sizeof *s);
    if (!s) {
        cJSON_Delete(root);
        return lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    ctx c = {name, err};
    int rc = LM_OK;
    s->path = path ? lm_strdup(path) : NULL;
    if (!rc) rc = get_delim(&c, root, "delimiter", ',', &s->delimiter);
    if (!rc) rc = get_bool(&c, root, "header", 1, &s->header);
    if (!rc) rc = get_names(&c, root, "columns", 0, &s->columns, &s->ncolumns);
    if (!rc && !s->header && !s->ncolumns)
        rc = bad(&c, "columns", "without a header line, \"columns\" must name the columns");
    if (!rc) rc = get_names(&c, root, "task", 1, &s->task, &s->ntask);
    if (!rc) rc = get_string(&c, root, "time", 1, &s->time);
    if (!rc) rc = parse_label(&c, root, s);
    if (!rc) rc = get_names(&c, root, "meta", 0, &s->meta, &s->nmeta);
    if (!rc) rc = get_names(&c, root, "dense", 0, &s->dense, &s->ndense);
    if (!rc) rc = parse_categorical(&c, root, s);
    if (!rc) rc = get_string(&c, root, "split", 0, &s->split);
    if (!rc) rc = get_string(&c, root, "tiebreak", 0, &s->tiebreak);
    if (!rc) rc = parse_join(&c, root, s);
    if (!rc) rc = parse_rates(&c, root, s);
    if (!rc) rc = check_keys(&c, root);
    if (!rc && s->nmeta + s->ndense + s->ncat == 0)
        rc =
            lm_err_set(err, LM_EINVAL, "%s: the schema names no features (meta, dense or categorical)", name);
    if (!rc && s->nmeta + s->ndense + s->ncat > 4000)
        rc = lm_err_set(err, LM_EINVAL, "%s: more than 4000 feature columns", name);
    if (!rc) rc = check_duplicates(&c, s);
    if (!rc) {
        s->json = cJSON_PrintUnformatted(root);
        if (!s->json) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    cJSON_Delete(root);
    if (rc) {
        lm_schema_free(s);
        return rc;
    }
    *out = s;
    return LM_OK;
}

int lm_schema_load(lm_schema **out, const char *path, lm_err *err)
{
    char *text;
    size_t len;
    *out = NULL;
    int rc = lm_read_file(path, &text, &len, err);
    if (rc) return rc;
    if (len == 0) {
        free(text);
        return lm_err_set(err, LM_EINVAL, "%s: empty schema file", path);
    }
    rc = lm_schema_parse(out, text, len, path, err);
    free(text);
    return rc;
}

static void free_names(char **v, size_t n)
{
    if (!v) return;
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void lm_schema_free(lm_schema *s)
{
    if (!s) return;
    free(s->path);
    free_names(s->columns, s->ncolumns);
    free_names(s->task, s->ntask);
    free(s->time);
    free(s->label);
    free_names(s->meta, s->nmeta);
    free_names(s->dense, s->ndense);
    for (size_t i = 0; i < s->ncat; i++) free(s->cat[i].column);
    free(s->cat);
    free(s->split);
    free(s->tiebreak);
    for (size_t i = 0; i < s->njoin; i++) {
        free(s->join[i].file);
        free(s->join[i].on);
        free_names(s->join[i].columns, s->join[i].ncolumns);
    }
    free(s->join);
    for (size_t i = 0; i < s->nrate; i++) free(s->rate[i].column);
    free(s->rate);
    if (s->json) cJSON_free(s->json);
    free(s);
}
