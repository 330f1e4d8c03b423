/* test_synth.c: the synthetic log generator: format, schema, determinism, and the statistical
 * properties the experiments rely on (heavy-tailed tasks, per-task effects, new tasks), plus
 * option checking and clean failure. */
#include "lm_testfs.h"
#include "core/core.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

#define CHECK(c, ...)                                                                                        \
    do {                                                                                                     \
        if (!(c)) {                                                                                          \
            failures++;                                                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c);                                     \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
        }                                                                                                    \
    } while (0)

#define NCOLS 23
#define T0 1700000000.0

static const char *expected_cols[NCOLS] = {"user_id",  "ts",       "clicked", "channel", "item_id", "m_age",
                                           "m_gender", "m_seg0",   "m_seg1",  "m_seg2",  "m_seg3",  "m_seg4",
                                           "m_seg5",   "m_tenure", "i_f0",    "i_f1",    "i_f2",    "i_f3",
                                           "i_f4",     "i_f5",     "i_f6",    "i_f7",    "ctx_hour"};

static char tmpdir[4096];

static char *tmp_path(const char *name)
{
    return lm_path_join(tmpdir, name);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void remove_outputs(const char *path)
{
    char s[4200];
    snprintf(s, sizeof s, "%s.schema.json", path);
    unlink(path);
    unlink(s);
}

/* Split `line` (NUL-terminated, no newline) on ','; returns the field count. */
static int split(char *line, char **f, int max)
{
    int n = 0;
    char *p = line;
    for (;;) {
        if (n < max) f[n] = p;
        n++;
        char *c = strchr(p, ',');
        if (!c) break;
        *c = 0;
        p = c + 1;
    }
    return n;
}

/* Count files in tmpdir whose name contains `part`. */
static int count_named(const char *part)
{
    DIR *d = opendir(tmpdir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, part)) n++;
    closedir(d);
    return n;
}

/* ---- the schema ------------------------------------------------------------------------- */

static void check_schema(const char *csv, uint32_t items)
{
    char path[4200];
    snprintf(path, sizeof path, "%s.schema.json", csv);
    char *text = NULL;
    lm_err err = {0};
    if (lm_read_file(path, &text, NULL, &err) != LM_OK) {
        CHECK(0, "read schema: %s", err.msg);
        return;
    }
    cJSON *j = cJSON_Parse(text);
    CHECK(j != NULL, "schema does not parse: %s", text);
    if (!j) {
        free(text);
        return;
    }
    static const char *order[] = {"delimiter", "header", "task",  "time",
                                  "label",     "meta",   "dense", "categorical"};
    int k = 0;
    for (cJSON *c = j->child; c; c = c->next, k++)
        CHECK(k < 8 && !strcmp(c->string, order[k]), "schema key %d is '%s'", k, c->string);
    CHECK(k == 8, "schema has %d keys", k);
    cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "delimiter");
    CHECK(cJSON_IsString(d) && !strcmp(d->valuestring, ","), "delimiter");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "header")), "header");
    cJSON *task = cJSON_GetObjectItemCaseSensitive(j, "task");
    CHECK(cJSON_IsArray(task) && cJSON_GetArraySize(task) == 1 &&
              !strcmp(cJSON_GetArrayItem(task, 0)->valuestring, "user_id"),
          "task");
    cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "time");
    CHECK(cJSON_IsString(t) && !strcmp(t->valuestring, "ts"), "time");
    cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "label");
    CHECK(cJSON_IsString(l) && !strcmp(l->valuestring, "clicked"), "label");
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "meta");
    CHECK(cJSON_GetArraySize(meta) == 9, "meta has %d names", cJSON_GetArraySize(meta));
    for (int i = 0; i < 9 && i < cJSON_GetArraySize(meta); i++)
        CHECK(!strcmp(cJSON_GetArrayItem(meta, i)->valuestring, expected_cols[5 + i]), "meta[%d] = %s", i,
              cJSON_GetArrayItem(meta, i)->valuestring);
    cJSON *dense = cJSON_GetObjectItemCaseSensitive(j, "dense");
    CHECK(cJSON_GetArraySize(dense) == 9, "dense has %d names", cJSON_GetArraySize(dense));
    for (int i = 0; i < 9 && i < cJSON_GetArraySize(dense); i++)
        CHECK(!strcmp(cJSON_GetArrayItem(dense, i)->valuestring, expected_cols[14 + i]), "dense[%d] = %s", i,
              cJSON_GetArrayItem(dense, i)->valuestring);
    cJSON *cat = cJSON_GetObjectItemCaseSensitive(j, "categorical");
    CHECK(cJSON_GetArraySize(cat) == 2, "categorical has %d entries", cJSON_GetArraySize(cat));
    if (cJSON_GetArraySize(cat) == 2) {
        cJSON *c0 = cJSON_GetArrayItem(cat, 0), *c1 = cJSON_GetArrayItem(cat, 1);
        CHECK(!strcmp(cJSON_GetObjectItem(c0, "column")->valuestring, "item_id"), "cat 0");
        CHECK(cJSON_GetObjectItem(c0, "buckets")->valuedouble == items + 1.0, "item buckets");
        CHECK(cJSON_GetObjectItem(c0, "dim")->valuedouble == 8, "item dim");
        CHECK(!strcmp(cJSON_GetObjectItem(c1, "column")->valuestring, "channel"), "cat 1");
        CHECK(cJSON_GetObjectItem(c1, "buckets")->valuedouble == 4, "channel buckets");
        CHECK(cJSON_GetObjectItem(c1, "dim")->valuedouble == 4, "channel dim");
    }
    cJSON_Delete(j);
    free(text);
}

/* ---- the log ---------------------------------------------------------------------------- */

typedef struct task_stat {
    uint32_t n, pos;
    double first_ts;
    char meta[128]; /* the meta fields as text: constant per task */
} task_stat;

/* Parse the log and check every row; with `stats`, also the statistical properties (which
 * need a few thousand tasks). Rows are sorted by (ts, user_id) within each block of tasks, so
 * the order may break at most once per block: at most `max_descents` times. */
static void check_log(const char *path, const lm_synth_opts *o, const lm_synth_summary *sum, int stats,
                      uint64_t max_descents)
{
    char *data = NULL;
    size_t len = 0;
    lm_err err = {0};
    if (lm_read_file(path, &data, &len, &err) != LM_OK) {
        CHECK(0, "read log: %s", err.msg);
        return;
    }
    uint64_t T = o->tasks;
    task_stat *ts = calloc(T + 1, sizeof *ts);
    double horizon = o->days * 86400.0;
    uint64_t rows = 0, pos = 0, descents = 0, bad = 0;
    double prev_ts = 0, prev_user = 0;
    char *line = data;
    int lineno = 0;
    while (line < data + len) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        CHECK(nl != NULL, "last line has no newline");
        if (!nl) break;
        *nl = 0;
        lineno++;
        char *f[NCOLS + 1];
        int nf = split(line, f, NCOLS + 1);
        if (lineno == 1) {
            CHECK(nf == NCOLS, "header has %d fields", nf);
            for (int i = 0; i < NCOLS && i < nf; i++)
                CHECK(!strcmp(f[i], expected_cols[i]), "header field %d is '%s', want '%s'", i, f[i],
                      expected_cols[i]);
            line = nl + 1;
            continue;
        }
        rows++;
        if (nf != NCOLS) {
            if (bad++ < 5) CHECK(0, "line %d has %d fields", lineno, nf);
            line = nl + 1;
            continue;
        }
        char *e;
        unsigned long long user = strtoull(f[0], &e, 10);
        int ok = *e == 0 && user >= 1 && user <= T;
        double t = strtod(f[1], &e);
        ok = ok && *e == 0 && t == floor(t) && t >= T0 && t < T0 + horizon;
        ok = ok && (!strcmp(f[2], "0") || !strcmp(f[2], "1"));
        ok = ok && f[3][0] >= '0' && f[3][0] <= '3' && f[3][1] == 0;
        unsigned long long item = strtoull(f[4], &e, 10);
        ok = ok && *e == 0 && item >= 1 && item <= o->items;
        double age = strtod(f[5], &e);
        ok = ok && *e == 0 && age >= 0.15 && age <= 0.8 && strlen(strchr(f[5], '.')) == 3;
        ok = ok && (!strcmp(f[6], "0") || !strcmp(f[6], "1"));
        int onehot = 0;
        for (int k = 0; k < 6; k++) {
            ok = ok && (!strcmp(f[7 + k], "0") || !strcmp(f[7 + k], "1"));
            onehot += f[7 + k][0] == '1';
        }
        ok = ok && onehot == 1;
        double tenure = strtod(f[13], &e);
        ok = ok && *e == 0 && tenure >= 0 && tenure <= 1;
        for (int k = 14; k < NCOLS; k++) {
            strtod(f[k], &e);
            const char *dot = strchr(f[k], '.');
            ok = ok && *e == 0 && dot && strlen(dot) == 5;
        }
        double hour = strtod(f[22], NULL);
        ok = ok && hour >= 0 && hour < 1;
        if (!ok) {
            if (bad++ < 5) CHECK(0, "line %d has a bad field", lineno);
            line = nl + 1;
            continue;
        }
        if (t < prev_ts || (t == prev_ts && (double)user < prev_user)) descents++;
        prev_ts = t;
        prev_user = (double)user;

        task_stat *s = &ts[user];
        char meta[128];
        snprintf(meta, sizeof meta, "%s,%s,%s,%s,%s,%s,%s,%s,%s", f[5], f[6], f[7], f[8], f[9], f[10], f[11],
                 f[12], f[13]);
        if (s->n == 0) {
            s->first_ts = t;
            snprintf(s->meta, sizeof s->meta, "%s", meta);
        } else {
            if (t < s->first_ts) s->first_ts = t;
            if (strcmp(s->meta, meta) && bad++ < 5)
                CHECK(0, "user %llu: meta changes from %s to %s", user, s->meta, meta);
        }
        s->n++;
        s->pos += f[2][0] == '1';
        pos += f[2][0] == '1';
        line = nl + 1;
    }
    CHECK(bad == 0, "%llu bad rows", (unsigned long long)bad);
    CHECK(descents <= max_descents, "%llu rows out of (ts, user_id) order", (unsigned long long)descents);
    CHECK(rows == sum->rows, "rows %llu, summary says %llu", (unsigned long long)rows,
          (unsigned long long)sum->rows);
    CHECK(pos == sum->positives, "positives %llu, summary says %llu", (unsigned long long)pos,
          (unsigned long long)sum->positives);
    CHECK(sum->tasks == T, "summary tasks %llu", (unsigned long long)sum->tasks);

    /* Every task has an example; the counts are heavy-tailed and capped. */
    uint64_t small = 0, big = 0, empty = 0, newish = 0;
    uint32_t maxn = 0;
    for (uint64_t u = 1; u <= T; u++) {
        empty += ts[u].n == 0;
        small += ts[u].n > 0 && ts[u].n < 25;
        big += ts[u].n >= 100;
        if (ts[u].n > maxn) maxn = ts[u].n;
        newish += ts[u].n > 0 && ts[u].first_ts >= T0 + 0.9 * horizon;
    }
    CHECK(empty == 0, "%llu tasks without examples", (unsigned long long)empty);
    CHECK(maxn <= o->max_examples, "a task has %u examples, above the cap", maxn);
    if (!stats) {
        free(ts);
        free(data);
        return;
    }
    CHECK(small >= 0.3 * (double)T, "only %llu tasks with < 25 examples", (unsigned long long)small);
    CHECK(big >= 1, "no task with >= 100 examples (max %u)", maxn);
    double mean = (double)rows / (double)T;
    CHECK(fabs(mean - o->mean_examples) < 0.25 * o->mean_examples, "mean examples %.2f", mean);
    CHECK(newish >= 1, "no task starts in the last 10%% of the horizon");

    double rate = (double)pos / (double)rows;
    CHECK(rate >= 0.2 && rate <= 0.7, "positive rate %.3f", rate);

    /* Personalization: among well-observed tasks, per-task rates vary far more than binomial
     * noise around a common rate would make them. */
    double sp = 0, sn = 0;
    int m = 0;
    for (uint64_t u = 1; u <= T; u++)
        if (ts[u].n >= 40) {
            sp += ts[u].pos;
            sn += ts[u].n;
            m++;
        }
    CHECK(m >= 20, "only %d tasks with >= 40 examples", m);
    if (m >= 2) {
        double pbar = sp / sn, var = 0, binom = 0;
        for (uint64_t u = 1; u <= T; u++)
            if (ts[u].n >= 40) {
                double p = (double)ts[u].pos / ts[u].n;
                var += (p - pbar) * (p - pbar);
                binom += pbar * (1 - pbar) / ts[u].n;
            }
        var /= m;
        binom /= m;
        printf("  %llu rows, %.1f%% positive, %llu/%llu tasks < 25 examples, %llu >= 100, "
               "max %u, %llu new; per-task rate variance %.4f vs binomial %.4f (%d tasks)\n",
               (unsigned long long)rows, 100 * rate, (unsigned long long)small, (unsigned long long)T,
               (unsigned long long)big, maxn, (unsigned long long)newish, var, binom, m);
        CHECK(var >= 2 * binom, "per-task variance %.5f vs binomial %.5f", var, binom);
    }
    free(ts);
    free(data);
}

static int same_bytes(const char *a, const char *b)
{
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    lm_err err = {0};
    int same = lm_read_file(a, &x, &nx, &err) == LM_OK && lm_read_file(b, &y, &ny, &err) == LM_OK &&
               nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_generate(void)
{
    printf("generate 3000 tasks\n");
    lm_synth_opts o;
    lm_synth_opts_default(&o);
    o.tasks = 3000;
    o.seed = 7;
    char *a = tmp_path("a.csv"), *b = tmp_path("b.csv"), *c = tmp_path("c.csv");
    remove_outputs(a);
    lm_synth_summary sum;
    lm_err err = {0};
    int rc = lm_synth(a, &o, &sum, &err);
    CHECK(rc == LM_OK, "lm_synth: %s", err.msg);
    if (rc == LM_OK) {
        struct stat st;
        CHECK(stat(a, &st) == 0 && (st.st_mode & 0777) == 0644, "log mode %o", st.st_mode & 0777);
        check_log(a, &o, &sum, 1, 0); /* one block: fully sorted */
        check_schema(a, o.items);
    }

    printf("determinism\n");
    lm_synth_summary sum2;
    rc = lm_synth(b, &o, &sum2, &err);
    CHECK(rc == LM_OK, "lm_synth again: %s", err.msg);
    CHECK(same_bytes(a, b), "the same seed gave different bytes");
    o.seed = 8;
    rc = lm_synth(c, &o, &sum2, &err);
    CHECK(rc == LM_OK, "lm_synth seed 8: %s", err.msg);
    CHECK(!same_bytes(a, c), "seeds 7 and 8 gave the same bytes");
    CHECK(count_named(".tmp.") == 0, "temporary files left behind");
    remove_outputs(a);
    remove_outputs(b);
    remove_outputs(c);
    free(a);
    free(b);
    free(c);
}

/* Small and odd options: one example per task, tiny vocabularies, several blocks. */
static void test_small(void)
{
    printf("small options\n");
    char *a = tmp_path("small.csv");
    lm_synth_opts o;
    lm_synth_opts_default(&o);
    o.tasks = 1;
    o.mean_examples = 1;
    o.max_examples = 1;
    o.items = 2;
    o.days = 0.5;
    lm_synth_summary sum;
    lm_err err = {0};
    int rc = lm_synth(a, &o, &sum, &err);
    CHECK(rc == LM_OK && sum.rows == 1 && sum.tasks == 1, "one task, one row: %s", err.msg);
    if (rc == LM_OK) check_log(a, &o, &sum, 0, 0);

    /* Big tasks make small blocks (several blocks): every block is time-sorted, and every
     * task appears exactly in one block. */
    lm_synth_opts_default(&o);
    o.tasks = 50;
    o.mean_examples = 5000;
    o.max_examples = 100000;
    o.new_frac = 0;
    rc = lm_synth(a, &o, &sum, &err);
    CHECK(rc == LM_OK, "big tasks: %s", err.msg);
    CHECK(rc != LM_OK || (sum.rows > 50 * 1000 && sum.rows < 50 * 20000), "big tasks: %llu rows",
          (unsigned long long)sum.rows);
    if (rc == LM_OK) check_log(a, &o, &sum, 0, o.tasks - 1);
    remove_outputs(a);
    free(a);
}

static void expect_einval(const lm_synth_opts *o, const char *name)
{
    char *a = tmp_path("bad.csv");
    lm_synth_summary sum;
    lm_err err = {0};
    int rc = lm_synth(a, o, &sum, &err);
    CHECK(rc == LM_EINVAL && err.code == LM_EINVAL, "%s: rc %d", name, rc);
    CHECK(strstr(err.msg, name) != NULL, "%s: message '%s' does not name it", name, err.msg);
    CHECK(!exists(a), "%s: output written", name);
    remove_outputs(a);
    free(a);
}

static void test_invalid(void)
{
    printf("invalid options\n");
    lm_synth_opts o;
#define BAD(field, value)                                                                                    \
    do {                                                                                                     \
        lm_synth_opts_default(&o);                                                                           \
        o.field = value;                                                                                     \
        expect_einval(&o, #field);                                                                           \
    } while (0)
    BAD(tasks, 0);
    BAD(tasks, UINT64_MAX);
    BAD(mean_examples, 0.5);
    BAD(mean_examples, NAN);
    BAD(mean_examples, 5000); /* above max_examples */
    BAD(max_examples, 0);
    BAD(items, 1);
    BAD(items, 0);
    BAD(days, 0);
    BAD(days, -3);
    BAD(days, NAN);
    BAD(new_frac, 1);
    BAD(new_frac, -0.1);
    BAD(new_frac, NAN);
#undef BAD
}

static void test_unwritable(void)
{
    printf("unwritable outputs\n");
    lm_synth_opts o;
    lm_synth_opts_default(&o);
    o.tasks = 100;
    char *a = tmp_path("no/such/folder/x.csv");
    lm_err err = {0};
    lm_synth_summary sum;
    int rc = lm_synth(a, &o, &sum, &err);
    CHECK(rc == LM_EIO, "missing folder: rc %d (%s)", rc, err.msg);
    CHECK(strstr(err.msg, "no/such/folder/x.csv") != NULL, "message '%s' names no path", err.msg);
    char *d = tmp_path("no");
    CHECK(!exists(d), "a folder was created");
    free(d);
    free(a);

    /* The output names a folder: an error, and nothing left beside it. */
    a = tmp_path("adir");
    mkdir(a, 0755);
    memset(&err, 0, sizeof err);
    rc = lm_synth(a, &o, &sum, &err);
    CHECK(rc != LM_OK, "output is a folder: succeeded");
    CHECK(strstr(err.msg, "adir") != NULL, "message '%s' names no path", err.msg);
    CHECK(count_named("adir.") == 0, "files left beside the folder");
    CHECK(count_named(".tmp.") == 0, "temporary files left behind");
    rmdir(a);
    free(a);

    /* A write that fails half way (the file size limit stands in for a full disk): an error
     * naming the temporary file, which is removed, and no output. */
    a = tmp_path("full.csv");
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 1 << 20;
    signal(SIGXFSZ, SIG_IGN);
    o.tasks = 20000;
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        memset(&err, 0, sizeof err);
        rc = lm_synth(a, &o, &sum, &err);
        setrlimit(RLIMIT_FSIZE, &old);
        CHECK(rc == LM_EIO, "full disk: rc %d (%s)", rc, err.msg);
        CHECK(strstr(err.msg, "full.csv") != NULL, "message '%s' names no path", err.msg);
        CHECK(count_named("full.csv") == 0, "files left after a failed write");
        CHECK(count_named(".tmp.") == 0, "temporary files left behind");
    }
    signal(SIGXFSZ, SIG_DFL);
    free(a);

    /* A read-only folder (skipped as root, who may write anywhere). */
    if (geteuid() != 0) {
        char *ro = tmp_path("ro");
        mkdir(ro, 0755);
        chmod(ro, 0555);
        a = tmp_path("ro/x.csv");
        rc = lm_synth(a, &o, &sum, &err);
        CHECK(rc == LM_EIO, "read-only folder: rc %d", rc);
        CHECK(!exists(a), "read-only folder: output exists");
        chmod(ro, 0755);
        rmdir(ro);
        free(a);
        free(ro);
    }
}

int main(void)
{
    const char *t = getenv("LM_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s/synth", t && *t ? t : "/tmp/limaml-test");
    lm_test_mkdir_p(tmpdir);
    test_generate();
    test_small();
    test_invalid();
    test_unwritable();
    if (failures) {
        fprintf(stderr, "test_synth: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_synth: ok\n");
    return 0;
}
