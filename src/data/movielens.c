/* movielens.c: the MovieLens-100K dataset of PROTOCOL.md. The raw files are normalized into
 * two feature tables (users.csv: age / 100, gender, occupation one-hot; items.csv: 19 genre
 * flags, release year) and u.data is joined with them by lm_prepare like any other log. */
#include "core/core.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ML_GENRES 19
#define ML_MAX_OCC 64

typedef struct strbuf {
    char *p;
    size_t n, cap;
} strbuf;

static int sb_add(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sb_add(strbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return LM_EINVAL;
        if (b->p && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return LM_OK;
        }
        if (lm_grow((void **)&b->p, &b->cap, b->n + (size_t)k + 1 + 4096, 1)) return LM_ENOMEM;
    }
}

/* Split `line` (modified in place) at `sep`; returns the field count (at most max). */
static size_t split(char *line, char sep, char **f, size_t max)
{
    size_t n = 0;
    f[n++] = line;
    for (char *c = line; *c && n < max; c++)
        if (*c == sep) {
            *c = 0;
            f[n++] = c + 1;
        }
    return n;
}

/* Iterate lines of a buffer (modified in place); strips '\r'. */
static char *next_line(char **cur)
{
    char *s = *cur;
    if (!s || !*s) return NULL;
    char *nl = strchr(s, '\n');
    if (nl) {
        *nl = 0;
        *cur = nl + 1;
    } else {
        *cur = s + strlen(s);
    }
    size_t len = strlen(s);
    if (len && s[len - 1] == '\r') s[len - 1] = 0;
    return s;
}

static int load_occupations(const char *dir, char occ[ML_MAX_OCC][32], size_t *nocc, lm_err *err)
{
    char *path = lm_path_join(dir, "u.occupation"), *text;
    if (!path) return lm_err_set(err, LM_ENOMEM, "out of memory");
    int rc = lm_read_file(path, &text, NULL, err);
    if (rc) {
        free(path);
        return rc;
    }
    char *cur = text, *line;
    *nocc = 0;
    uint64_t ln = 0;
    while (!rc && (line = next_line(&cur))) {
        ln++;
        if (!*line) continue;
        if (*nocc >= ML_MAX_OCC || strlen(line) >= 32)
            rc = lm_err_set(err, LM_EINVAL, "%s:%llu:1: unexpected occupation list", path,
                            (unsigned long long)ln);
        else
            strcpy(occ[(*nocc)++], line);
    }
    if (!rc && *nocc == 0) rc = lm_err_set(err, LM_EINVAL, "%s: empty file", path);
    free(text);
    free(path);
    return rc;
}

/* u.user: id|age|gender|occupation|zip -> users.csv: user_id,age,gender,occ_0..occ_K */
static int write_users(const char *dir, const char *stage, char occ[ML_MAX_OCC][32], size_t nocc, lm_err *err)
{
    char *path = lm_path_join(dir, "u.user"), *text = NULL;
    if (!path) return lm_err_set(err, LM_ENOMEM, "out of memory");
    int rc = lm_read_file(path, &text, NULL, err);
    strbuf b = {0};
    if (!rc && sb_add(&b, "user_id,age,gender")) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    for (size_t k = 0; !rc && k < nocc; k++)
        if (sb_add(&b, ",occ_%zu", k)) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    if (!rc && sb_add(&b, "\n")) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    char *cur = text, *line;
    uint64_t ln = 0;
    while (!rc && (line = next_line(&cur))) {
        ln++;
        if (!*line) continue;
        char *f[8];
        size_t n = split(line, '|', f, 8);
        if (n != 5) {
            rc = lm_err_set(err, LM_EINVAL, "%s:%llu:1: expected 5 fields separated by '|', found %zu", path,
                            (unsigned long long)ln, n);
            break;
        }
        char *end;
        double age = strtod(f[1], &end);
        if (*end || !*f[1]) {
            rc = lm_err_set(err, LM_EINVAL, "%s:%llu:2: age is not a number", path, (unsigned long long)ln);
            break;
        }
        int gender = !strcmp(f[2], "M") ? 1 : !strcmp(f[2], "F") ? 0 : -1;
        if (gender < 0) {
            rc = lm_err_set(err, LM_EINVAL, "%s:%llu:3: gender must be M or F", path, (unsigned long long)ln);
            break;
        }
        size_t k = 0;
        while (k < nocc && strcmp(occ[k], f[3])) k++;
        if (k == nocc) {
            rc = lm_err_set(err, LM_EINVAL, "%s:%llu:4: occupation '%s' is not in u.occupation", path,
                            (unsigned long long)ln, f[3]);
            break;
        }
        if (sb_add(&b, "%s,%.9g,%d", f[0], age / 100.0, gender)) rc = LM_ENOMEM;
        for (size_t j = 0; !rc && j < nocc; j++)
            if (sb_add(&b, ",%d", j == k)) rc = LM_ENOMEM;
        if (!rc && sb_add(&b, "\n")) rc = LM_ENOMEM;
        if (rc) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    if (!rc) {
        char *out = lm_path_join(stage, "users.csv");
        rc = out ? lm_write_file_atomic(out, b.p, b.n, err) : lm_err_set(err, LM_ENOMEM, "out of memory");
        free(out);
    }
    free(b.p);
    free(text);
    free(path);
    return rc;
}

/* u.item: id|title|date|video date|url|19 genre flags -> items.csv: item_id,g_0..g_18,year,genre */
static int write_items(const char *dir, const char *stage, lm_err *err)
{
    char *path = lm_path_join(dir, "u.item"), *text = NULL;
    if (!path) return lm_err_set(err, LM_ENOMEM, "out of memory");
    int rc = lm_read_file(path, &text, NULL, err);
    strbuf b = {0};
    if (!rc && sb_add(&b, "item_id")) rc = LM_ENOMEM;
    for (int g = 0; !rc && g < ML_GENRES; g++)
        if (sb_add(&b, ",g_%d", g)) rc = LM_ENOMEM;
    if (!rc && sb_add(&b, ",year,genre\n")) rc = LM_ENOMEM;
    if (rc == LM_ENOMEM) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    char *cur = text, *line;
    uint64_t ln = 0;
    while (!rc && (line = next_line(&cur))) {
        ln++;
        if (!*line) continue;
        char *f[32];
        size_t n = split(line, '|', f, 32);
        if (n != 5 + ML_GENRES) {
            rc = lm_err_set(err, LM_EINVAL, "%s:%llu:1: expected %d fields separated by '|', found %zu", path,
                            (unsigned long long)ln, 5 + ML_GENRES, n);
            break;
        }
        /* Release date "01-Jan-1995": the year is after the last '-'; missing dates give 0. */
        double year = 0;
        const char *dash = strrchr(f[2], '-');
        if (dash && strlen(dash + 1) == 4) year = (atof(dash + 1) - 1900.0) / 100.0;
        int first = -1;
        if (sb_add(&b, "%s", f[0])) rc = LM_ENOMEM;
        for (int g = 0; !rc && g < ML_GENRES; g++) {
            const char *v = f[5 + g];
            if (strcmp(v, "0") && strcmp(v, "1")) {
                rc = lm_err_set(err, LM_EINVAL, "%s:%llu:%d: genre flag must be 0 or 1", path,
                                (unsigned long long)ln, 6 + g);
                break;
            }
            if (v[0] == '1' && first < 0) first = g;
            if (sb_add(&b, ",%s", v)) rc = LM_ENOMEM;
        }
        if (!rc && sb_add(&b, ",%.9g,%d\n", year, first < 0 ? 0 : first)) rc = LM_ENOMEM;
        if (rc == LM_ENOMEM) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    if (!rc) {
        char *out = lm_path_join(stage, "items.csv");
        rc = out ? lm_write_file_atomic(out, b.p, b.n, err) : lm_err_set(err, LM_ENOMEM, "out of memory");
        free(out);
    }
    free(b.p);
    free(text);
    free(path);
    return rc;
}

/* For the (user, first genre) task the genre must be a log column: write u.data with it. */
static int write_log_with_genre(const char *dir, const char *stage, lm_err *err)
{
    char *ipath = lm_path_join(stage, "items.csv"), *dpath = lm_path_join(dir, "u.data");
    char *items = NULL, *data = NULL;
    int rc = (!ipath || !dpath) ? lm_err_set(err, LM_ENOMEM, "out of memory") : LM_OK;
    if (!rc) rc = lm_read_file(ipath, &items, NULL, err);
    if (!rc) rc = lm_read_file(dpath, &data, NULL, err);
    int genre[4096] = {0};
    char *cur = items, *line;
    next_line(&cur); /* header */
    while (!rc && (line = next_line(&cur))) {
        char *f[32];
        size_t n = split(line, ',', f, 32);
        long id = atol(f[0]);
        if (id > 0 && id < 4096 && n > 1) genre[id] = atoi(f[n - 1]);
    }
    strbuf b = {0};
    cur = data;
    uint64_t ln = 0;
    while (!rc && (line = next_line(&cur))) {
        ln++;
        if (!*line) continue;
        char *f[8];
        char copy[256];
        snprintf(copy, sizeof copy, "%s", line);
        size_t n = split(line, '\t', f, 8);
        if (n != 4) {
            rc = lm_err_set(err, LM_EINVAL, "%s:%llu:1: expected 4 tab-separated fields, found %zu", dpath,
                            (unsigned long long)ln, n);
            break;
        }
        long id = atol(f[1]);
        if (sb_add(&b, "%s\t%d\n", copy, id > 0 && id < 4096 ? genre[id] : 0))
            rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    if (!rc) {
        char *out = lm_path_join(stage, "u.data.genre.tsv");
        rc = out ? lm_write_file_atomic(out, b.p, b.n, err) : lm_err_set(err, LM_ENOMEM, "out of memory");
        free(out);
    }
    free(b.p);
    free(items);
    free(data);
    free(ipath);
    free(dpath);
    return rc;
}

static char *schema_json(int task_def, size_t nocc, int rates)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "delimiter", "\t");
    cJSON_AddBoolToObject(r, "header", 0);
    cJSON *cols = cJSON_AddArrayToObject(r, "columns");
    const char *c4[] = {"user_id", "item_id", "rating", "ts", "genre"};
    for (int i = 0; i < (task_def == LM_ML_TASK_USER_GENRE ? 5 : 4); i++)
        cJSON_AddItemToArray(cols, cJSON_CreateString(c4[i]));
    cJSON *task = cJSON_AddArrayToObject(r, "task");
    cJSON_AddItemToArray(task, cJSON_CreateString("user_id"));
    if (task_def == LM_ML_TASK_USER_GENRE) cJSON_AddItemToArray(task, cJSON_CreateString("genre"));
    cJSON_AddStringToObject(r, "time", "ts");
    cJSON *lab = cJSON_AddObjectToObject(r, "label");
    cJSON_AddStringToObject(lab, "column", "rating");
    cJSON_AddNumberToObject(lab, "min", 4);
    cJSON_AddStringToObject(r, "tiebreak", "item_id");
    cJSON *meta = cJSON_AddArrayToObject(r, "meta");
    cJSON_AddItemToArray(meta, cJSON_CreateString("age"));
    cJSON_AddItemToArray(meta, cJSON_CreateString("gender"));
    char name[32];
    for (size_t k = 0; k < nocc; k++) {
        snprintf(name, sizeof name, "occ_%zu", k);
        cJSON_AddItemToArray(meta, cJSON_CreateString(name));
    }
    cJSON *dense = cJSON_AddArrayToObject(r, "dense");
    for (int g = 0; g < ML_GENRES; g++) {
        snprintf(name, sizeof name, "g_%d", g);
        cJSON_AddItemToArray(dense, cJSON_CreateString(name));
    }
    cJSON_AddItemToArray(dense, cJSON_CreateString("year"));
    cJSON *cat = cJSON_AddArrayToObject(r, "categorical");
    cJSON *item = cJSON_CreateObject();
    cJSON_AddStringToObject(item, "column", "item_id");
    cJSON_AddNumberToObject(item, "buckets", 1683);
    cJSON_AddNumberToObject(item, "dim", 8);
    cJSON_AddItemToArray(cat, item);
    if (rates) {
        cJSON *ra = cJSON_AddArrayToObject(r, "rates");
        cJSON *ri = cJSON_CreateObject();
        cJSON_AddItemToArray(ra, ri);
        cJSON_AddStringToObject(ri, "column", "item_id");
    }
    cJSON *join = cJSON_AddArrayToObject(r, "join");
    cJSON *ju = cJSON_CreateObject(), *ji = cJSON_CreateObject();
    cJSON_AddStringToObject(ju, "file", "users.csv");
    cJSON_AddStringToObject(ju, "on", "user_id");
    cJSON_AddStringToObject(ju, "delimiter", ",");
    cJSON_AddStringToObject(ji, "file", "items.csv");
    cJSON_AddStringToObject(ji, "on", "item_id");
    cJSON_AddStringToObject(ji, "delimiter", ",");
    cJSON_AddItemToArray(join, ju);
    cJSON_AddItemToArray(join, ji);
    char *txt = cJSON_Print(r);
    cJSON_Delete(r);
    return txt;
}

int lm_prepare_movielens(const char *ml_dir, const char *out_dir, int task_def, const lm_prepare_opts *o,
                         lm_prepare_summary *sum, lm_err *err)
{
    lm_prepare_opts def;
    if (!o) {
        lm_prepare_opts_default(&def);
        def.new_rule = LM_NEWRULE_MOD;
        def.new_mod = 5;
        o = &def;
    }
    int rates = (task_def & LM_ML_ITEM_RATES) != 0;
    task_def &= ~LM_ML_ITEM_RATES;
    if (task_def != LM_ML_TASK_USER && task_def != LM_ML_TASK_USER_GENRE)
        return lm_err_set(err, LM_EINVAL, "movielens: unknown task definition %d", task_def);
    if (!o->force && access(out_dir, F_OK) == 0)
        return lm_err_set(err, LM_EEXIST, "%s: already exists (use --force to replace it)", out_dir);
    char occ[ML_MAX_OCC][32];
    size_t nocc = 0;
    char *stage = NULL, *json = NULL, *spath = NULL, *log = NULL;
    lm_schema *schema = NULL;
    int rc = load_occupations(ml_dir, occ, &nocc, err);
    /* The normalized tables are staged beside the output, then moved into it. */
    if (!rc) {
        size_t len = strlen(out_dir);
        char *base = malloc(len + 8);
        if (!base) return lm_err_set(err, LM_ENOMEM, "out of memory");
        snprintf(base, len + 8, "%s.ml", out_dir);
        rc = lm_mktemp_dir_beside(base, &stage, err);
        free(base);
    }
    if (!rc) rc = write_users(ml_dir, stage, occ, nocc, err);
    if (!rc) rc = write_items(ml_dir, stage, err);
    if (!rc && task_def == LM_ML_TASK_USER_GENRE) rc = write_log_with_genre(ml_dir, stage, err);
    if (!rc) {
        json = schema_json(task_def, nocc, rates);
        spath = lm_path_join(stage, "schema.json");
        log = task_def == LM_ML_TASK_USER_GENRE ? lm_path_join(stage, "u.data.genre.tsv")
                                                : lm_path_join(ml_dir, "u.data");
        if (!json || !spath || !log) rc = lm_err_set(err, LM_ENOMEM, "out of memory");
    }
    if (!rc) rc = lm_write_file_atomic(spath, json, strlen(json), err);
    if (!rc) rc = lm_schema_load(&schema, spath, err);
    if (!rc) {
        const char *inputs[1] = {log};
        rc = lm_prepare(schema, inputs, 1, out_dir, o, sum, err);
    }
    if (!rc) {
        const char *keep[] = {"users.csv", "items.csv"};
        for (size_t i = 0; i < 2 && !rc; i++) {
            char *from = lm_path_join(stage, keep[i]), *to = lm_path_join(out_dir, keep[i]);
            if (!from || !to || rename(from, to) != 0)
                rc = lm_err_errno(err, LM_EIO, "%s: cannot move %s into it", out_dir, keep[i]);
            free(from);
            free(to);
        }
    }
    if (stage) lm_rmtree(stage);
    lm_schema_free(schema);
    free(stage);
    if (json) cJSON_free(json);
    free(spath);
    free(log);
    return rc;
}
