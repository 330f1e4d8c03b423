/* test_prepare.c: `lm_prepare` end to end. A table of bad inputs (each must fail with one
 * "FILE:LINE:COLUMN: what" message, or the schema key, and leave no output folder behind),
 * then positive checks that open the dataset and read it back: ordering, splits, task keys,
 * categorical hashing, new-task rules, split columns, caps and windows, joins, several inputs,
 * quoting and line endings, external sorting with spilled runs, --force, corruption, and the
 * MovieLens-100K protocol dataset recomputed from u.data itself.
 *
 * Environment: LM_TMP (scratch; each case gets its own folder under LM_TMP/test_prepare.PID),
 * LM_SHARED (the ../shared folder with data/ml-100k; the MovieLens checks are skipped without
 * it). Exit status 1 on any failure; the last line is "N passed, M failed". */
#include "lm_testcase.h"
#include "lm_testfs.h"
#include "core/core.h"
#include "data/csv.h"
#include "data/dsfile.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ============================================================================================
 * Files and folders
 * ========================================================================================== */

/* A fresh folder for one case (its name made file-safe); caller frees. */
static char *case_dir(const char *name)
{
    char safe[200];
    size_t k = 0;
    for (const char *c = name; *c && k + 1 < sizeof safe; c++)
        safe[k++] = (char)((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                                   *c == '-'
                               ? *c
                               : '_');
    safe[k] = 0;
    char *d = lm_path_join(g_base, safe);
    lm_rmtree(d);
    lm_test_mkdir_p(d);
    return d;
}

/* Write `n` bytes to dir/name; returns the path (caller frees). */
static char *write_bytes(const char *dir, const char *name, const char *data, size_t n)
{
    char *path = lm_path_join(dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) CHECK(0, "cannot write %s", path);
    if (f) fclose(f);
    return path;
}

static char *write_text(const char *dir, const char *name, const char *text)
{
    return write_bytes(dir, name, text, strlen(text));
}

/* Entries of `dir` whose name holds ".tmp." or ".old." (leftovers of a failed publish). */
static int leftovers(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.") || strstr(e->d_name, ".old.")) n++;
    closedir(d);
    return n;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

/* `pat` with each '@' replaced by "dir/". Caller frees. */
static char *expand(const char *pat, const char *dir)
{
    size_t n = 1, dl = strlen(dir);
    for (const char *c = pat; *c; c++) n += *c == '@' ? dl + 1 : 1;
    char *r = malloc(n), *w = r;
    for (const char *c = pat; *c; c++) {
        if (*c != '@') {
            *w++ = *c;
            continue;
        }
        memcpy(w, dir, dl);
        w += dl;
        *w++ = '/';
    }
    *w = 0;
    return r;
}

/* ============================================================================================
 * Running prepare and reading datasets
 * ========================================================================================== */

static void opts_none(lm_prepare_opts *o)
{
    lm_prepare_opts_default(o);
    o->new_rule = LM_NEWRULE_NONE;
}

/* Write `schema_sq` (single-quoted JSON) to dir/schema.json, prepare the inputs dir/names[i]
 * into dir/out and open the result with LM_DATASET_VERIFY. */
static int prep(const char *dir, const char *schema_sq, const char *const *names, size_t n,
                const lm_prepare_opts *o, lm_prepare_summary *sum, lm_dataset **ds, lm_err *err)
{
    *ds = NULL;
    memset(err, 0, sizeof *err);
    char *json = q(schema_sq);
    char *sp = write_text(dir, "schema.json", json);
    free(json);
    lm_schema *s = NULL;
    int rc = lm_schema_load(&s, sp, err);
    const char *paths[16] = {0};
    for (size_t i = 0; i < n && i < 16; i++) paths[i] = lm_path_join(dir, names[i]);
    char *out = lm_path_join(dir, "out");
    if (!rc) rc = lm_prepare(s, paths, n, out, o, sum, err);
    if (!rc) rc = lm_dataset_open(ds, out, LM_DATASET_VERIFY, err);
    lm_schema_free(s);
    for (size_t i = 0; i < n && i < 16; i++) free((char *)paths[i]);
    free(out);
    free(sp);
    return rc;
}

/* The dense feature `j` of each of the task's rows, in order, as integers. */
static int task_dense_ints(const lm_dataset *ds, const lm_task *t, uint32_t j, int *out, int max)
{
    int n = 0;
    for (uint32_t i = 0; t && i < t->n && n < max; i++)
        out[n++] = (int)lm_dataset_row(ds, t->first + i).dense[j];
    return n;
}

static int ints_equal(const int *a, const int *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static void fmt_ints(char *buf, size_t cap, const int *v, int n)
{
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < n && k + 16 < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%d", i ? "," : "", v[i]);
}

/* Structural checks every dataset must pass: rows of each task sorted by time, splits
 * consistent with nsplit, summary totals equal the dataset's. */
static void check_consistent(const lm_dataset *ds, const lm_prepare_summary *sum)
{
    uint64_t split[LM_SPLIT_COUNT] = {0}, rows = 0, nnew = 0;
    for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
        const lm_task *k = lm_dataset_task(ds, t);
        uint32_t seen[LM_SPLIT_COUNT] = {0};
        int prev = -1, contiguous = 1;
        double pt = -INFINITY;
        for (uint32_t i = 0; i < k->n; i++) {
            lm_row_view v = lm_dataset_row(ds, k->first + i);
            CHECK(v.time >= pt, "task %llu row %u: time %g after %g", (unsigned long long)t, i, v.time, pt);
            pt = v.time;
            CHECK(v.split >= 0 && v.split < LM_SPLIT_COUNT, "split %d", v.split);
            if (v.split < 0 || v.split >= LM_SPLIT_COUNT) continue;
            seen[v.split]++;
            if (v.split < prev) contiguous = 0;
            prev = v.split;
            split[v.split]++;
        }
        for (int s = 0; s < LM_SPLIT_COUNT; s++)
            CHECK(seen[s] == k->nsplit[s], "task %llu: %u rows of split %d, nsplit says %u",
                  (unsigned long long)t, seen[s], s, k->nsplit[s]);
        CHECK((uint32_t)contiguous == k->contiguous, "task %llu: contiguous %u", (unsigned long long)t,
              k->contiguous);
        if (k->is_new)
            CHECK(k->nsplit[0] + k->nsplit[1] == 0, "new task %llu has train rows", (unsigned long long)t);
        rows += k->n;
        nnew += k->is_new;
    }
    CHECK(rows == lm_dataset_nrows(ds), "rows %llu", (unsigned long long)rows);
    if (sum) {
        CHECK(sum->rows_kept == rows, "rows_kept %llu, dataset %llu", (unsigned long long)sum->rows_kept,
              (unsigned long long)rows);
        CHECK(sum->tasks == lm_dataset_ntasks(ds), "tasks %llu", (unsigned long long)sum->tasks);
        CHECK(sum->tasks_new == nnew, "tasks_new %llu, dataset %llu", (unsigned long long)sum->tasks_new,
              (unsigned long long)nnew);
        for (int s = 0; s < LM_SPLIT_COUNT; s++)
            CHECK(sum->split_rows[s] == split[s], "split_rows[%d] %llu, dataset %llu", s,
                  (unsigned long long)sum->split_rows[s], (unsigned long long)split[s]);
    }
}

/* ============================================================================================
 * Bad inputs: one table
 * ========================================================================================== */

#define BASE_SCHEMA                                                                                          \
    "{'delimiter': ',', 'header': true, 'task': ['user_id'], 'time': 'ts', 'label': 'clicked', "             \
    "'meta': ['age'], 'dense': ['x'], 'categorical': [{'column': 'item_id', 'buckets': 100, 'dim': 8}]}"
#define HDR "user_id,ts,clicked,age,x,item_id\n"
#define GOOD "1,100,1,0.5,2,7\n"
#define JOIN_SCHEMA                                                                                          \
    "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'meta': ['age'], 'dense': ['x'], "              \
    "'join': [{'file': 'users.csv', 'on': 'user_id'}]}"
#define JHDR "ts,user_id,clicked,item_id,x\n"

enum { IN_LOG = 0, IN_MISSING = 1, IN_FOLDER = 2, IN_NONE = 3 };

typedef struct bad_case {
    const char *name;
    const char *schema; /* single-quoted JSON; NULL: BASE_SCHEMA; written to schema.json */
    const char *log;    /* contents of log.csv */
    const char *log2;   /* contents of log2.csv (a second input), or NULL */
    const char *users;  /* contents of users.csv, or NULL */
    int input;          /* IN_... */
    uint64_t skip;      /* skip_bad_rows */
    int want_rc;
    const char *where; /* expected in the message; '@' stands for the case folder + '/' */
    const char *what;  /* phrases expected too, '|'-separated */
} bad_case;

static const bad_case bad_cases[] = {
    /* column counts */
    {"row too short", NULL, HDR GOOD "1,101,0,0.5,2\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:3:6:", "expected 6 columns, found 5"},
    {"row too long", NULL, HDR GOOD "1,101,0,0.5,2,7,9\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:3:7:", "expected 6 columns, found 7"},
    {"one field only", NULL, HDR "1\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:2:", "expected 6 columns, found 1"},
    /* numbers */
    {"time not a number", NULL, HDR GOOD "1,abc,0,0.5,2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:3:2:", "'ts'|not a number"},
    {"dense not a number", NULL, HDR "1,100,0,0.5,x2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:5:", "'x'|not a number"},
    {"meta with a comma decimal", NULL, HDR "1,100,0,\"0,5\",2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:4:", "'age'|not a number"},
    {"dense nan", NULL, HDR GOOD "1,100,0,0.5,nan,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:3:5:", "'x'|NaN or infinite"},
    {"meta NaN", NULL, HDR "1,100,0,NaN,1,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:4:", "'age'|NaN or infinite"},
    {"dense -inf", NULL, HDR "1,100,0,0.5,-inf,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:5:", "NaN or infinite"},
    {"dense Infinity", NULL, HDR "1,100,0,0.5,Infinity,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:5:", "NaN or infinite"},
    {"time 1e999 overflows", NULL, HDR "1,1e999,0,0.5,1,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:2:", "'ts'|infinite"},
    {"meta 1e999 overflows", NULL, HDR "1,100,0,1e999,1,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:4:", "'age'|infinite"},
    {"dense 1e39 overflows a float", NULL, HDR "1,100,0,0.5,1e39,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:5:", "'x'|infinite"},
    {"time nan", NULL, HDR "1,nan,0,0.5,1,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:2:", "NaN or infinite"},
    {"number with trailing text", NULL, HDR "1,100,0,0.5,1.5kg,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:5:", "not a number"},
    {"empty dense value", NULL, HDR "1,100,0,0.5,,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:5:", "'x'|empty value"},
    {"empty time", NULL, HDR "1,,0,0.5,1,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:2:", "'ts'|empty value"},
    /* labels */
    {"empty label", NULL, HDR GOOD "1,101,,0.5,2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:3:3:", "'clicked'|missing label"},
    {"label 2 for a binary label", NULL, HDR "1,100,2,0.5,2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:3:", "'clicked'|0 or 1|\"2\""},
    {"label 0.5 for a binary label", NULL, HDR "1,100,0.5,0.5,2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:3:", "0 or 1"},
    {"label nan", NULL, HDR "1,100,nan,0.5,2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:3:", "'clicked'|NaN or infinite"},
    {"label yes", NULL, HDR "1,100,yes,0.5,2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:3:", "'clicked'|not a number"},
    {"regression label overflows a float",
     "{'task': ['user_id'], 'time': 'ts', 'label': {'column': 'clicked', 'type': 'regression'}, "
     "'dense': ['x']}",
     HDR "1,100,1e39,0.5,2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL, "@log.csv:2:3:", "'clicked'|infinite"},
    /* keys and splits */
    {"empty task key", NULL, HDR ",100,1,0.5,2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:1:", "'user_id'|empty task key"},
    {"control character in a task key", NULL, HDR "a\037b,100,1,0.5,2,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:1:", "control character"},
    {"empty categorical", NULL, HDR "1,100,1,0.5,2,\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:6:", "'item_id'|empty value"},
    {"bad split value",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], 'split': 'split'}",
     "user_id,ts,clicked,x,split\n1,1,0,1,train\n1,2,1,1,training\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:3:5:", "'split'|train, val or test|\"training\""},
    /* columns and headers */
    {"schema column missing from the header",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'meta': ['age', 'income'], 'dense': ['x']}",
     HDR GOOD, NULL, NULL, IN_LOG, 0, LM_ENOTFOUND, "@log.csv:", "'income'|not in the header"},
    {"time column missing from the header",
     "{'task': ['user_id'], 'time': 'when', 'label': 'clicked', 'dense': ['x']}", HDR GOOD, NULL, NULL,
     IN_LOG, 0, LM_ENOTFOUND, "@log.csv:", "'when'|not in the header"},
    {"task column missing from the header",
     "{'task': ['user_id', 'genre'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}", HDR GOOD, NULL, NULL,
     IN_LOG, 0, LM_ENOTFOUND, "@log.csv:", "'genre'|not in the header"},
    {"label column missing from the header",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'click', 'dense': ['x']}", HDR GOOD, NULL, NULL, IN_LOG, 0,
     LM_ENOTFOUND, "@log.csv:", "'click'|not in the header"},
    {"duplicated header", NULL, "user_id,ts,clicked,age,x,item_id,age\n1,100,1,0.5,2,7,0.5\n", NULL, NULL,
     IN_LOG, 0, LM_EINVAL, "@log.csv:1:7:", "duplicated header 'age'"},
    {"empty column name in the header", NULL, "user_id,ts,,clicked,age,x,item_id\n1,100,z,1,0.5,2,7\n", NULL,
     NULL, IN_LOG, 0, LM_EINVAL, "@log.csv:1:3:", "empty column name"},
    /* whole files */
    {"empty file (0 bytes)", NULL, "", NULL, NULL, IN_LOG, 0, LM_EINVAL, "@log.csv:", "empty file"},
    {"blank lines only", NULL, "\n\r\n\n", NULL, NULL, IN_LOG, 0, LM_EINVAL, "@log.csv:", "empty file"},
    {"header only", NULL, HDR, NULL, NULL, IN_LOG, 0, LM_EINVAL, "@log.csv:", "no data rows"},
    {"empty file without a header line",
     "{'header': false, 'columns': ['user_id', 'ts', 'clicked', 'x'], 'task': ['user_id'], 'time': 'ts', "
     "'label': 'clicked', 'dense': ['x']}",
     "", NULL, NULL, IN_LOG, 0, LM_EINVAL, "@log.csv:", "empty file"},
    {"nonexistent input", NULL, NULL, NULL, NULL, IN_MISSING, 0, LM_ENOTFOUND,
     "@missing.csv:", "cannot open"},
    {"input is a folder", NULL, NULL, NULL, NULL, IN_FOLDER, 0, LM_EIO, "@indir:", "directory"},
    {"unterminated quote", NULL, HDR GOOD "1,101,1,0.5,2,\"7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:3:", "unterminated quoted field"},
    {"text after a closing quote", NULL, HDR "1,100,1,0.5,\"2\"x,7\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:2:5:", "text after a closing quote"},
    {"line numbers count a quoted newline", NULL, HDR "\"a\nb\",100,1,0.5,2,7\n1,abc,1,0.5,2,7\n", NULL, NULL,
     IN_LOG, 0, LM_EINVAL, "@log.csv:4:2:", "not a number"},
    {"line numbers count blank lines", NULL, HDR "\n" GOOD "\n\n1,100,1,0.5,zz,7\n", NULL, NULL, IN_LOG, 0,
     LM_EINVAL, "@log.csv:6:5:", "not a number"},
    {"CRLF row too short", NULL, "user_id,ts,clicked,age,x,item_id\r\n1,100,1,0.5,2,7\r\n1,100,1,0.5,2\r\n",
     NULL, NULL, IN_LOG, 0, LM_EINVAL, "@log.csv:3:6:", "expected 6 columns, found 5"},
    {"TSV bad value",
     "{'delimiter': '\\t', 'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}",
     "user_id\tts\tclicked\tx\n1\t100\t1\t2\n1\t101\t1\t2,5\n", NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@log.csv:3:4:", "'x'|not a number"},
    /* several inputs: the message names the file at fault */
    {"bad row in the second input", NULL, HDR GOOD, HDR GOOD "1,oops,1,0.5,2,7\n", NULL, IN_LOG, 0, LM_EINVAL,
     "@log2.csv:3:2:", "not a number"},
    {"second input lacks a column", NULL, HDR GOOD, "user_id,ts,clicked,age,item_id\n1,1,1,1,1\n", NULL,
     IN_LOG, 0, LM_ENOTFOUND, "@log2.csv:", "'x'|not in the header"},
    /* --skip-bad-rows */
    {"3 bad rows with --skip-bad-rows 2", NULL,
     HDR GOOD "1,101,1,0.5\n" GOOD "1,abc,1,0.5,2,7\n" GOOD "1,102,7,0.5,2,7\n" GOOD, NULL, NULL, IN_LOG, 2,
     LM_ELIMIT, "@log.csv:7:3:", "0 or 1|more than 2 bad rows"},
    {"every row bad but skipped", NULL, HDR "1,abc,1,0.5,2,7\n", NULL, NULL, IN_LOG, 5, LM_EINVAL,
     "@log.csv:", "no data rows"},
    /* joined tables */
    {"join key missing from the table", JOIN_SCHEMA, JHDR "100,1,1,7,2\n101,2,0,7,2\n", NULL,
     "user_id,age\n1,0.3\n", IN_LOG, 0, LM_EINVAL, "@log.csv:3:2:", "key '2'|users.csv"},
    {"join table value not a number", JOIN_SCHEMA, JHDR "100,1,1,7,2\n", NULL, "user_id,age\n1,0.3\n2,old\n",
     IN_LOG, 0, LM_EINVAL, "@users.csv:3:2:", "'age'|not a number"},
    {"join table value nan", JOIN_SCHEMA, JHDR "100,1,1,7,2\n", NULL, "user_id,age\n1,nan\n", IN_LOG, 0,
     LM_EINVAL, "@users.csv:2:2:", "'age'|NaN or infinite"},
    {"join table key twice", JOIN_SCHEMA, JHDR "100,1,1,7,2\n", NULL, "user_id,age\n1,0.3\n2,0.3\n1,0.4\n",
     IN_LOG, 0, LM_EINVAL, "@users.csv:4:1:", "key '1' appears twice"},
    {"join table row too short", JOIN_SCHEMA, JHDR "100,1,1,7,2\n", NULL, "user_id,age\n1,0.3\n2\n", IN_LOG,
     0, LM_EINVAL, "@users.csv:3:2:", "expected 2 columns, found 1"},
    {"join table lacks its key column", JOIN_SCHEMA, JHDR "100,1,1,7,2\n", NULL, "uid,age\n1,0.3\n", IN_LOG,
     0, LM_ENOTFOUND, "@users.csv:", "'user_id'"},
    {"join table duplicated header", JOIN_SCHEMA, JHDR "100,1,1,7,2\n", NULL, "user_id,age,age\n1,0.3,0.3\n",
     IN_LOG, 0, LM_EINVAL, "@users.csv:1:3:", "duplicated header 'age'"},
    {"join table empty", JOIN_SCHEMA, JHDR "100,1,1,7,2\n", NULL, "", IN_LOG, 0, LM_EINVAL,
     "@users.csv:", "empty file"},
    {"join table header only", JOIN_SCHEMA, JHDR "100,1,1,7,2\n", NULL, "user_id,age\n", IN_LOG, 0, LM_EINVAL,
     "@users.csv:", "no data rows"},
    {"join table missing", JOIN_SCHEMA, JHDR "100,1,1,7,2\n", NULL, NULL, IN_LOG, 0, LM_ENOTFOUND,
     "@users.csv:", "cannot open"},
    {"feature in neither the log nor a table",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'meta': ['height'], "
     "'join': [{'file': 'users.csv', 'on': 'user_id'}]}",
     JHDR "100,1,1,7,2\n", NULL, "user_id,age\n1,0.3\n", IN_LOG, 0, LM_ENOTFOUND,
     "@log.csv:", "'height'|nor in a joined table"},
    {"log lacks the join key", JOIN_SCHEMA, "ts,uid,clicked,item_id,x\n100,1,1,7,2\n", NULL,
     "user_id,age\n1,0.3\n", IN_LOG, 0, LM_ENOTFOUND, "@log.csv:", "'user_id'"},
    /* schemas: JSON syntax (line:column) and keys */
    {"schema not valid JSON", "{\n  'task': ['user_id'],\n  'time': ts,\n  'label': 'clicked'\n}", HDR GOOD,
     NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:3:11:", "not valid JSON"},
    {"schema with a trailing comma", "{'task': ['user_id'],\n'time': 'ts',\n}", HDR GOOD, NULL, NULL, IN_LOG,
     0, LM_EINVAL, "@schema.json:3:1:", "not valid JSON"},
    {"schema empty", "", HDR GOOD, NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "empty schema"},
    {"schema not an object", "['user_id']", HDR GOOD, NULL, NULL, IN_LOG, 0, LM_EINVAL,
     "@schema.json:1:1:", "JSON object"},
    {"schema without task", "{'time': 'ts', 'label': 'clicked', 'dense': ['x']}", HDR GOOD, NULL, NULL,
     IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'task'|missing"},
    {"schema with an empty task list", "{'task': [], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}",
     HDR GOOD, NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'task'"},
    {"schema without time", "{'task': ['user_id'], 'label': 'clicked', 'dense': ['x']}", HDR GOOD, NULL, NULL,
     IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'time'|missing"},
    {"schema without label", "{'task': ['user_id'], 'time': 'ts', 'dense': ['x']}", HDR GOOD, NULL, NULL,
     IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'label'|missing"},
    {"schema with buckets 0",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'categorical': [{'column': 'item_id', "
     "'buckets': 0}]}",
     HDR GOOD, NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'categorical[0]'|buckets"},
    {"schema with buckets 2.5",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], 'categorical': "
     "[{'column': 'age', 'buckets': 5}, {'column': 'item_id', 'buckets': 2.5}]}",
     HDR GOOD, NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'categorical[1]'|buckets"},
    {"schema with dim 0",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'categorical': [{'column': 'item_id', "
     "'buckets': 5, 'dim': 0}]}",
     HDR GOOD, NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'categorical[0]'|dim"},
    {"schema names a column twice",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'meta': ['age'], 'dense': ['x', 'age']}",
     HDR GOOD, NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "'age'|named twice"},
    {"schema uses the label as a feature",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['clicked']}", HDR GOOD, NULL, NULL,
     IN_LOG, 0, LM_EINVAL, "@schema.json:", "'clicked'|named twice"},
    {"schema without features", "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked'}", HDR GOOD, NULL,
     NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "no features"},
    {"schema with a two-character delimiter",
     "{'delimiter': ';;', 'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}", HDR GOOD,
     NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'delimiter'"},
    {"schema header not a boolean",
     "{'header': 'yes', 'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}", HDR GOOD,
     NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'header'"},
    {"schema without header and columns",
     "{'header': false, 'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}", HDR GOOD,
     NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'columns'"},
    {"schema label type unknown",
     "{'task': ['user_id'], 'time': 'ts', 'label': {'column': 'clicked', 'type': 'ordinal'}, 'dense': ['x']}",
     HDR GOOD, NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'label.type'"},
    {"schema join without a key",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], 'join': [{'file': 'u.csv'}]}",
     HDR GOOD, NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "key 'join[0]'"},
    /* A misspelt key would silently drop its columns: the schema must name unknown keys. */
    {"schema with an unknown key",
     "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], 'dnese': ['age']}", HDR GOOD,
     NULL, NULL, IN_LOG, 0, LM_EINVAL, "@schema.json:", "'dnese'"},
};

static void run_bad_case(const bad_case *c)
{
    begin(c->name);
    char *dir = case_dir(c->name);
    char *json = q(c->schema ? c->schema : BASE_SCHEMA);
    char *sp = write_text(dir, "schema.json", json);
    free(json);
    const char *inputs[2] = {0};
    size_t n = 1;
    if (c->input == IN_LOG)
        inputs[0] = write_text(dir, "log.csv", c->log ? c->log : "");
    else if (c->input == IN_MISSING)
        inputs[0] = lm_path_join(dir, "missing.csv");
    else if (c->input == IN_FOLDER) {
        inputs[0] = lm_path_join(dir, "indir");
        mkdir(inputs[0], 0755);
    }
    if (c->log2) inputs[n++] = write_text(dir, "log2.csv", c->log2);
    if (c->users) free(write_text(dir, "users.csv", c->users));
    char *out = lm_path_join(dir, "out");
    lm_err err = {0};
    lm_schema *s = NULL;
    lm_prepare_summary sum;
    lm_prepare_opts o;
    lm_prepare_opts_default(&o);
    o.skip_bad_rows = c->skip;
    int rc = lm_schema_load(&s, sp, &err);
    if (rc == LM_OK) rc = lm_prepare(s, inputs, n, out, &o, &sum, &err);
    char *where = expand(c->where, dir);
    CHECK(rc == c->want_rc, "rc %d (%s), expected %d (%s); message: %s", rc, lm_strerror(rc), c->want_rc,
          lm_strerror(c->want_rc), err.msg);
    CHECK(err.code == rc, "err.code %d, rc %d", err.code, rc);
    CHECK(strstr(err.msg, where) != NULL, "message lacks \"%s\": %s", where, err.msg);
    CHECK(has_phrases(err.msg, c->what), "message lacks \"%s\": %s", c->what, err.msg);
    CHECK(!strchr(err.msg, '\n'), "message spans lines: %s", err.msg);
    CHECK(!exists(out), "the output folder exists after a failure");
    CHECK(leftovers(dir) == 0, "a temporary folder is left beside the output");
    lm_schema_free(s);
    free(where);
    free(out);
    free(sp);
    for (size_t i = 0; i < n; i++) free((char *)inputs[i]);
    free(dir);
    end();
}

/* A file the process cannot read (mode 000): meaningful only when not root. */
static void test_unreadable_file(void)
{
    if (geteuid() == 0) {
        printf("skip: unreadable file (running as root)\n");
        return;
    }
    begin("unreadable input (mode 000)");
    char *dir = case_dir("unreadable");
    char *json = q(BASE_SCHEMA);
    char *sp = write_text(dir, "schema.json", json);
    char *log = write_text(dir, "log.csv", HDR GOOD);
    chmod(log, 0);
    char *out = lm_path_join(dir, "out");
    lm_err err = {0};
    lm_schema *s = NULL;
    lm_prepare_summary sum;
    lm_prepare_opts o;
    lm_prepare_opts_default(&o);
    int rc = lm_schema_load(&s, sp, &err);
    const char *in[1] = {log};
    if (!rc) rc = lm_prepare(s, in, 1, out, &o, &sum, &err);
    CHECK(rc == LM_EIO, "rc %d: %s", rc, err.msg);
    CHECK(strstr(err.msg, log) && strstr(err.msg, "cannot open"), "message: %s", err.msg);
    CHECK(!exists(out) && leftovers(dir) == 0, "output left behind");
    lm_schema_free(s);
    free(json), free(sp), free(log), free(out), free(dir);
    end();
}

/* lm_schema_parse directly: text without a file names "schema"; line:column of JSON errors. */
static void test_schema_parse(void)
{
    begin("lm_schema_parse");
    lm_err err = {0};
    lm_schema *s = NULL;
    const char *bad = "{\"task\": [\"u\"],\n \"time\": \"t\",\n \"label\": \"y\" \"dense\": [\"x\"]}";
    int rc = lm_schema_parse(&s, bad, strlen(bad), NULL, &err);
    CHECK(rc == LM_EINVAL && s == NULL, "rc %d", rc);
    CHECK(strstr(err.msg, "schema:3:15:") && strstr(err.msg, "not valid JSON"), "message: %s", err.msg);
    memset(&err, 0, sizeof err);
    char *good = q("{'delimiter': '\\t', 'task': 'u', 'time': 't', 'label': {'column': 'r', 'min': 4}, "
                   "'meta': 'm', 'categorical': [{'column': 'c', 'buckets': 7}], 'split': 's', "
                   "'tiebreak': 'k'}");
    rc = lm_schema_parse(&s, good, strlen(good), "x/s.json", &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (s) {
        CHECK(s->delimiter == '\t' && s->header == 1, "delimiter %d header %d", s->delimiter, s->header);
        CHECK(s->ntask == 1 && !strcmp(s->task[0], "u"), "task");
        CHECK(s->nmeta == 1 && !strcmp(s->meta[0], "m"), "meta");
        CHECK(s->ncat == 1 && s->cat[0].buckets == 7 && s->cat[0].dim == 8, "cat %u/%u",
              s->ncat ? s->cat[0].buckets : 0, s->ncat ? s->cat[0].dim : 0);
        CHECK(s->label_type == LM_LABEL_BINARY && s->label_has_threshold && s->label_threshold == 4, "label");
        CHECK(s->split && !strcmp(s->split, "s") && s->tiebreak && !strcmp(s->tiebreak, "k"),
              "split/tiebreak");
        CHECK(s->json != NULL, "canonical json");
    }
    lm_schema_free(s);
    lm_schema_free(NULL);
    free(good);
    /* lm_schema_load on a missing file and on a folder */
    memset(&err, 0, sizeof err);
    char *missing = lm_path_join(g_base, "no-such-schema.json");
    rc = lm_schema_load(&s, missing, &err);
    CHECK(rc == LM_ENOTFOUND && strstr(err.msg, missing), "rc %d: %s", rc, err.msg);
    memset(&err, 0, sizeof err);
    rc = lm_schema_load(&s, g_base, &err);
    CHECK(rc != LM_OK && strstr(err.msg, g_base), "a folder as schema: rc %d: %s", rc, err.msg);
    free(missing);
    end();
}

/* Options are checked before any work. */
static void test_bad_options(void)
{
    begin("bad options and no inputs");
    char *dir = case_dir("bad options");
    char *json = q(BASE_SCHEMA);
    lm_schema *s = NULL;
    lm_err err = {0};
    int rc = lm_schema_parse(&s, json, strlen(json), NULL, &err);
    CHECK(rc == LM_OK, "%s", err.msg);
    char *log = write_text(dir, "log.csv", HDR GOOD);
    char *out = lm_path_join(dir, "out");
    const char *in[1] = {log};
    lm_prepare_summary sum;
    struct {
        const char *what;
        double train, val, support, window;
        int rule;
        uint64_t mod;
        size_t ninputs;
    } cases[] = {
        {"--train", 1.5, 0.2, 0.75, 0, LM_NEWRULE_NONE, 5, 1},
        {"--train plus --val", 0.7, 0.4, 0.75, 0, LM_NEWRULE_NONE, 5, 1},
        {"--support", 0.6, 0.2, -0.1, 0, LM_NEWRULE_NONE, 5, 1},
        {"--window-days", 0.6, 0.2, 0.75, -1, LM_NEWRULE_NONE, 5, 1},
        {"mod:N", 0.6, 0.2, 0.75, 0, LM_NEWRULE_MOD, 0, 1},
        {"no input files", 0.6, 0.2, 0.75, 0, LM_NEWRULE_NONE, 5, 0},
    };
    for (size_t i = 0; s && i < sizeof cases / sizeof cases[0]; i++) {
        lm_prepare_opts o;
        lm_prepare_opts_default(&o);
        o.train_frac = cases[i].train;
        o.val_frac = cases[i].val;
        o.support_frac = cases[i].support;
        o.window_days = cases[i].window;
        o.new_rule = cases[i].rule;
        o.new_mod = cases[i].mod;
        memset(&err, 0, sizeof err);
        rc = lm_prepare(s, in, cases[i].ninputs, out, &o, &sum, &err);
        CHECK(rc == LM_EINVAL && strstr(err.msg, cases[i].what), "%s: rc %d: %s", cases[i].what, rc, err.msg);
        CHECK(!exists(out) && leftovers(dir) == 0, "%s: output left behind", cases[i].what);
    }
    lm_schema_free(s);
    free(json), free(log), free(out), free(dir);
    end();
}

/* ============================================================================================
 * Bad rows tolerated, missing join keys zero-filled
 * ========================================================================================== */

static void test_skip_bad_rows(void)
{
    begin("--skip-bad-rows 2 with 2 bad rows");
    char *dir = case_dir("skip bad rows");
    free(write_text(dir, "log.csv",
                    HDR GOOD "1,101,1,0.5\n"
                             "2,102,0,0.5,2,7\n"
                             "1,abc,1,0.5,2,7\n"
                             "1,103,0,0.25,3,8\n"));
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    opts_none(&o);
    o.skip_bad_rows = 2;
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc = prep(dir, BASE_SCHEMA, names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    CHECK(sum.rows_read == 5 && sum.rows_bad == 2 && sum.rows_kept == 3, "read %llu bad %llu kept %llu",
          (unsigned long long)sum.rows_read, (unsigned long long)sum.rows_bad,
          (unsigned long long)sum.rows_kept);
    char *w0 = expand("@log.csv:3:5:", dir), *w1 = expand("@log.csv:5:2:", dir);
    CHECK(strstr(sum.bad_rows[0], w0) && strstr(sum.bad_rows[0], "expected 6 columns"), "bad_rows[0]: %s",
          sum.bad_rows[0]);
    CHECK(strstr(sum.bad_rows[1], w1) && strstr(sum.bad_rows[1], "not a number"), "bad_rows[1]: %s",
          sum.bad_rows[1]);
    CHECK(sum.bad_rows[2][0] == 0, "bad_rows[2]: %s", sum.bad_rows[2]);
    if (ds) {
        CHECK(lm_dataset_ntasks(ds) == 2 && lm_dataset_nrows(ds) == 3, "tasks %llu rows %llu",
              (unsigned long long)lm_dataset_ntasks(ds), (unsigned long long)lm_dataset_nrows(ds));
        const lm_task *t = find_task(ds, "1");
        CHECK(t && t->n == 2, "task 1 has %u rows", t ? t->n : 0);
        if (t && t->n == 2) {
            lm_row_view a = lm_dataset_row(ds, t->first), b = lm_dataset_row(ds, t->first + 1);
            CHECK(a.time == 100 && b.time == 103 && b.meta[0] == 0.25f && b.dense[0] == 3 && b.cat[0] == 8,
                  "rows %g %g", a.time, b.time);
        }
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    /* More than LM_BAD_ROWS_KEPT bad rows: all counted, the first ones kept. */
    sbuf b = {0};
    sb_printf(&b, HDR);
    for (int i = 0; i < 30; i++) sb_printf(&b, "1,%d,1,0.5,2,7\n1,bad%d,1,0.5,2,7\n", i, i);
    char *sub = lm_path_join(dir, "many");
    lm_test_mkdir_p(sub);
    free(write_text(sub, "log.csv", b.p));
    o.skip_bad_rows = 1000;
    rc = prep(sub, BASE_SCHEMA, names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK && sum.rows_bad == 30 && sum.rows_kept == 30, "rc %d bad %llu: %s", rc,
          (unsigned long long)sum.rows_bad, err.msg);
    char *w19 = expand("@log.csv:41:2:", sub);
    CHECK(strstr(sum.bad_rows[LM_BAD_ROWS_KEPT - 1], w19), "bad_rows[19]: %s",
          sum.bad_rows[LM_BAD_ROWS_KEPT - 1]);
    lm_dataset_close(ds);
    free(w19), free(sub), free(b.p);
    free(w0), free(w1), free(dir);
    end();
}

static void test_missing_features_zero(void)
{
    begin("--missing-features zero");
    char *dir = case_dir("missing features zero");
    free(write_text(dir, "users.csv", "user_id,age,gender\n1,0.3,1\n2,0.5,0\n"));
    free(
        write_text(dir, "log.csv", JHDR "100,1,1,7,2\n101,3,0,7,2\n102,2,1,7,2\n103,3,1,7,2\n104,4,1,7,2\n"));
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    opts_none(&o);
    o.missing_features_zero = 1;
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc = prep(dir,
                  "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'meta': ['age', 'gender'], "
                  "'dense': ['x'], 'join': [{'file': 'users.csv', 'on': 'user_id'}]}",
                  names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    CHECK(sum.missing_keys == 3, "missing_keys %llu", (unsigned long long)sum.missing_keys);
    CHECK(sum.rows_kept == 5 && sum.rows_bad == 0, "kept %llu", (unsigned long long)sum.rows_kept);
    if (ds) {
        const lm_task *t3 = find_task(ds, "3"), *t1 = find_task(ds, "1"), *t2 = find_task(ds, "2");
        const lm_task *t4 = find_task(ds, "4");
        CHECK(t1 && t2 && t3 && t4, "tasks missing");
        for (uint32_t i = 0; t3 && i < t3->n; i++) {
            lm_row_view v = lm_dataset_row(ds, t3->first + i);
            CHECK(v.meta[0] == 0 && v.meta[1] == 0 && v.dense[0] == 2, "user 3 row %u: %g %g", i, v.meta[0],
                  v.meta[1]);
        }
        if (t1) {
            lm_row_view v = lm_dataset_row(ds, t1->first);
            CHECK(v.meta[0] == 0.3f && v.meta[1] == 1, "user 1: %g %g", v.meta[0], v.meta[1]);
        }
        if (t2) {
            lm_row_view v = lm_dataset_row(ds, t2->first);
            CHECK(v.meta[0] == 0.5f && v.meta[1] == 0, "user 2: %g %g", v.meta[0], v.meta[1]);
        }
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    free(dir);
    end();
}

/* ============================================================================================
 * Order, splits, keys, ids, new-task rules
 * ========================================================================================== */

static void test_order(void)
{
    begin("per-task chronological order with the tiebreak");
    char *dir = case_dir("order");
    free(write_text(dir, "log.csv",
                    "user_id,ts,clicked,seq,prio\n"
                    "u1,300,1,0,1\n"
                    "u1,100,0,1,2\n"
                    "u2,50,1,100,0\n"
                    "u1,100,1,2,1\n"
                    "u1,200,0,3,0\n"
                    "u1,100,0,4,1\n"
                    "u2,50,0,101,0\n"
                    "u1,-5,1,5,9\n"
                    "u1,1.5,0,6,0\n"
                    "u2,40,1,102,5\n"));
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    opts_none(&o);
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int got[16], n;
    char buf[256];
    int rc = prep(
        dir, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['seq'], 'tiebreak': 'prio'}",
        names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        static const int want1[] = {5, 6, 2, 4, 1, 3, 0}, want2[] = {102, 100, 101};
        n = task_dense_ints(ds, find_task(ds, "u1"), 0, got, 16);
        fmt_ints(buf, sizeof buf, got, n);
        CHECK(n == 7 && ints_equal(got, want1, 7), "u1 order %s, want 5,6,2,4,1,3,0", buf);
        n = task_dense_ints(ds, find_task(ds, "u2"), 0, got, 16);
        fmt_ints(buf, sizeof buf, got, n);
        CHECK(n == 3 && ints_equal(got, want2, 3), "u2 order %s, want 102,100,101", buf);
        const lm_task *t = find_task(ds, "u1");
        if (t && t->n == 7) {
            CHECK(lm_dataset_row(ds, t->first).time == -5 && lm_dataset_row(ds, t->first + 1).time == 1.5,
                  "times %g %g", lm_dataset_row(ds, t->first).time, lm_dataset_row(ds, t->first + 1).time);
            CHECK(lm_dataset_row(ds, t->first).label == 1 && lm_dataset_row(ds, t->first + 6).label == 1,
                  "labels");
        }
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    /* Without a tiebreak, equal times keep the file order. */
    char *sub = lm_path_join(dir, "notie");
    lm_test_mkdir_p(sub);
    free(write_text(sub, "log.csv",
                    "user_id,ts,clicked,seq,prio\nu1,300,1,0,1\nu1,100,0,1,2\nu1,100,1,2,1\nu1,200,0,3,0\n"
                    "u1,100,0,4,1\nu1,-5,1,5,9\nu1,1.5,0,6,0\n"));
    rc = prep(sub, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['seq']}", names, 1, &o,
              &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        static const int want[] = {5, 6, 1, 2, 4, 3, 0};
        n = task_dense_ints(ds, find_task(ds, "u1"), 0, got, 16);
        fmt_ints(buf, sizeof buf, got, n);
        CHECK(n == 7 && ints_equal(got, want, 7), "order %s, want 5,6,1,2,4,3,0", buf);
    }
    lm_dataset_close(ds);
    free(sub);
    /* Many tasks, many ties: every task ordered by (time, prio, input order). */
    sub = lm_path_join(dir, "random");
    lm_test_mkdir_p(sub);
    sbuf b = {0};
    sb_printf(&b, "user_id,ts,clicked,seq,prio\n");
    uint64_t st = 7;
    int per[40] = {0};
    for (int i = 0; i < 3000; i++) {
        int u = (int)(lcg(&st) % 40);
        per[u]++;
        sb_printf(&b, "t%d,%d,%d,%d,%d\n", u, (int)(lcg(&st) % 30), i & 1, i, (int)(lcg(&st) % 3));
    }
    free(write_text(sub, "log.csv", b.p));
    free(b.p);
    rc = prep(sub,
              "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['seq', 'prio'], 'tiebreak': "
              "'prio'}",
              names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        CHECK(lm_dataset_nrows(ds) == 3000, "rows %llu", (unsigned long long)lm_dataset_nrows(ds));
        int bad = 0;
        for (int u = 0; u < 40; u++) {
            char key[16];
            snprintf(key, sizeof key, "t%d", u);
            const lm_task *t = find_task(ds, key);
            if (!t || (int)t->n != per[u]) {
                bad++;
                continue;
            }
            for (uint32_t i = 1; i < t->n; i++) {
                lm_row_view a = lm_dataset_row(ds, t->first + i - 1), c = lm_dataset_row(ds, t->first + i);
                int ok = a.time < c.time ||
                         (a.time == c.time &&
                          (a.dense[1] < c.dense[1] || (a.dense[1] == c.dense[1] && a.dense[0] < c.dense[0])));
                if (!ok) bad++;
            }
        }
        CHECK(bad == 0, "%d rows out of (time, tiebreak, input) order", bad);
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    free(sub);
    free(dir);
    end();
}

typedef struct fracs {
    const char *name;
    int tn, td, vn, vd, sn, sd, nvn, nvd; /* train, val, support, new-val as tn/td ... */
} fracs;

/* The protocol's rules in exact integer arithmetic. */
static void expect_splits(const fracs *f, uint32_t m, int is_new, uint32_t out[LM_SPLIT_COUNT])
{
    memset(out, 0, LM_SPLIT_COUNT * sizeof *out);
    if (is_new) {
        out[LM_SPLIT_VAL] = (uint32_t)((uint64_t)f->nvn * m / (uint64_t)f->nvd);
        out[LM_SPLIT_TEST] = m - out[LM_SPLIT_VAL];
        return;
    }
    uint32_t t = (uint32_t)((uint64_t)f->tn * m / (uint64_t)f->td);
    uint32_t v = (uint32_t)((uint64_t)f->vn * m / (uint64_t)f->vd);
    if (t + v > m) v = m - t;
    uint32_t s = (uint32_t)(((uint64_t)f->sn * t + (uint64_t)f->sd - 1) / (uint64_t)f->sd);
    out[LM_SPLIT_SUPPORT] = s;
    out[LM_SPLIT_QUERY] = t - s;
    out[LM_SPLIT_VAL] = v;
    out[LM_SPLIT_TEST] = m - t - v;
}

static void test_splits(void)
{
    static const fracs sets[] = {
        {"splits: defaults 0.6/0.2/0.75, new 0.5", 6, 10, 2, 10, 75, 100, 5, 10},
        {"splits: 0.7/0.1/0.5, new 0.3", 7, 10, 1, 10, 5, 10, 3, 10},
        {"splits: 0.29/0.57/0.35, new 0.7", 29, 100, 57, 100, 35, 100, 7, 10},
        {"splits: 1/0/1, new 1", 1, 1, 0, 1, 1, 1, 1, 1},
    };
    char *dir = case_dir("splits");
    /* keys 1..30 with m = key rows, written newest first; key 100 with 100 rows */
    sbuf b = {0};
    sb_printf(&b, "user_id,ts,clicked,pos\n");
    for (int k = 1; k <= 30; k++)
        for (int i = k - 1; i >= 0; i--) sb_printf(&b, "%d,%d,%d,%d\n", k, 1000 + i, i % 2, i);
    for (int i = 99; i >= 0; i--) sb_printf(&b, "100,%d,%d,%d\n", 1000 + i, i % 2, i);
    free(write_text(dir, "log.csv", b.p));
    free(b.p);
    const char *names[] = {"log.csv"};
    for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
        const fracs *f = &sets[si];
        begin(f->name);
        char sub[64];
        snprintf(sub, sizeof sub, "set%zu", si);
        char *sd = lm_path_join(dir, sub);
        lm_test_mkdir_p(sd);
        char *src = lm_path_join(dir, "log.csv"), *dst = lm_path_join(sd, "log.csv");
        CHECK(link(src, dst) == 0 || errno == EEXIST, "link: %s", strerror(errno));
        lm_prepare_opts o;
        lm_prepare_opts_default(&o);
        o.train_frac = (double)f->tn / f->td;
        o.val_frac = (double)f->vn / f->vd;
        o.support_frac = (double)f->sn / f->sd;
        o.new_val_frac = (double)f->nvn / f->nvd;
        o.new_rule = LM_NEWRULE_MOD;
        o.new_mod = 3;
        lm_prepare_summary sum;
        lm_dataset *ds;
        lm_err err;
        int rc = prep(sd, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['pos']}", names,
                      1, &o, &sum, &ds, &err);
        CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
        if (ds) {
            CHECK(lm_dataset_ntasks(ds) == 31, "tasks %llu", (unsigned long long)lm_dataset_ntasks(ds));
            uint64_t tot[LM_SPLIT_COUNT] = {0};
            for (int k = 1; k <= 31; k++) {
                uint32_t m = k <= 30 ? (uint32_t)k : 100;
                char key[16];
                snprintf(key, sizeof key, "%u", k <= 30 ? (unsigned)k : 100u);
                const lm_task *t = find_task(ds, key);
                CHECK(t != NULL, "no task %s", key);
                if (!t) continue;
                int is_new = (k <= 30 ? k : 100) % 3 == 0;
                uint32_t want[LM_SPLIT_COUNT];
                expect_splits(f, m, is_new, want);
                CHECK(t->n == m && (int)t->is_new == is_new, "task %s: n %u new %u", key, t->n, t->is_new);
                CHECK(!memcmp(t->nsplit, want, sizeof want),
                      "task %s (m %u, new %d): splits %u/%u/%u/%u, want %u/%u/%u/%u", key, m, is_new,
                      t->nsplit[0], t->nsplit[1], t->nsplit[2], t->nsplit[3], want[0], want[1], want[2],
                      want[3]);
                CHECK(t->contiguous == 1, "task %s not contiguous", key);
                uint32_t i = 0;
                for (int s = 0; s < LM_SPLIT_COUNT; s++) {
                    tot[s] += want[s];
                    for (uint32_t j = 0; j < want[s] && i < t->n; j++, i++) {
                        lm_row_view v = lm_dataset_row(ds, t->first + i);
                        CHECK(v.split == s && v.dense[0] == (float)i, "task %s row %u: split %d pos %g", key,
                              i, v.split, v.dense[0]);
                    }
                }
            }
            for (int s = 0; s < LM_SPLIT_COUNT; s++)
                CHECK(sum.split_rows[s] == tot[s], "split_rows[%d] %llu, want %llu", s,
                      (unsigned long long)sum.split_rows[s], (unsigned long long)tot[s]);
            CHECK(sum.tasks_new == 10, "tasks_new %llu", (unsigned long long)sum.tasks_new);
            check_consistent(ds, &sum);
        }
        lm_dataset_close(ds);
        free(src), free(dst), free(sd);
        end();
    }
    free(dir);
}

static void test_composite_keys(void)
{
    begin("composite task keys");
    char *dir = case_dir("composite");
    free(write_text(dir, "log.csv",
                    "user_id,genre,ts,clicked,x\n"
                    "2,a,1,1,1\n2,b,2,0,1\n2,a,3,1,1\n3,a,4,0,1\n10,a,5,1,1\n2,a,6,0,1\n2,b,7,1,1\n"
                    "10,a,8,1,1\n\"1,0\",\"a b\",9,1,1\n"));
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    lm_prepare_opts_default(&o);
    o.new_rule = LM_NEWRULE_MOD;
    o.new_mod = 2;
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc = prep(dir, "{'task': ['user_id', 'genre'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}",
                  names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        CHECK(lm_dataset_ntasks(ds) == 5, "tasks %llu", (unsigned long long)lm_dataset_ntasks(ds));
        _Static_assert(LM_KEY_SEP == '\037', "the keys below are written with \\037");
        struct {
            const char *key;
            uint32_t n;
            int is_new;
        } want[] = {
            {"2\037a", 3, 1}, {"2\037b", 2, 1}, {"3\037a", 1, 0}, {"10\037a", 2, 1}, {"1,0\037a b", 1, -1}};
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            const lm_task *t = find_task(ds, want[i].key);
            CHECK(t && t->n == want[i].n, "task %zu: %u rows", i, t ? t->n : 0);
            if (t && want[i].is_new >= 0)
                CHECK((int)t->is_new == want[i].is_new, "task %zu: is_new %u (mod:2 reads the first column)",
                      i, t->is_new);
        }
        const lm_schema *s = lm_dataset_schema(ds);
        CHECK(s && s->ntask == 2 && !strcmp(s->task[1], "genre"), "stored schema");
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    free(dir);
    end();
}

static void test_categorical(void)
{
    begin("categorical ids kept below buckets, hashed otherwise");
    char *dir = case_dir("categorical");
    static const char *vals[] = {"0",  "3", "9", "10", "12345", "abc", "abc", "-1", "99999999999999999999",
                                 "x y"};
    enum { NV = 10 };
    sbuf b = {0};
    sb_printf(&b, "u,ts,y,c,one,big\n");
    for (int i = 0; i < NV; i++)
        sb_printf(&b, "a,%d,0,%s,%s,%s\n", i, vals[i], vals[i], i % 2 ? "4294967294" : "4294967295");
    for (int i = 0; i < 200; i++) sb_printf(&b, "b,%d,0,s%d,1,1\n", i, i);
    for (int i = 0; i < 200; i++) sb_printf(&b, "c,%d,0,%d,1,1\n", i, 1000 + i);
    free(write_text(dir, "log.csv", b.p));
    free(b.p);
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    opts_none(&o);
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc =
        prep(dir,
             "{'task': ['u'], 'time': 'ts', 'label': 'y', 'categorical': [{'column': 'c', 'buckets': 10}, "
             "{'column': 'one', 'buckets': 1, 'dim': 4}, {'column': 'big', 'buckets': 4294967295}]}",
             names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        CHECK(lm_dataset_ncat(ds) == 3 && lm_dataset_nmeta(ds) == 0 && lm_dataset_ndense(ds) == 0, "layout");
        const lm_schema *s = lm_dataset_schema(ds);
        CHECK(s && s->cat[0].dim == 8 && s->cat[1].dim == 4, "dims");
        const lm_task *t = find_task(ds, "a");
        CHECK(t && t->n == NV, "task a");
        if (t && t->n == NV) {
            uint32_t id[NV];
            for (int i = 0; i < NV; i++) {
                lm_row_view v = lm_dataset_row(ds, t->first + (uint32_t)i);
                id[i] = v.cat[0];
                CHECK(v.cat[0] < 10, "'%s' -> %u, not below 10", vals[i], v.cat[0]);
                CHECK(v.cat[1] == 0, "buckets 1: '%s' -> %u", vals[i], v.cat[1]);
                if (i % 2)
                    CHECK(v.cat[2] == 4294967294u, "4294967294 kept: %u", v.cat[2]);
                else
                    CHECK(v.cat[2] < 4294967295u, "4294967295 hashed below buckets: %u", v.cat[2]);
            }
            CHECK(id[0] == 0 && id[1] == 3 && id[2] == 9, "ids below buckets kept: %u %u %u", id[0], id[1],
                  id[2]);
            CHECK(id[5] == id[6], "the same value hashes the same: %u %u", id[5], id[6]);
        }
        for (int w = 0; w < 2; w++) {
            t = find_task(ds, w ? "c" : "b");
            int used[10] = {0}, distinct = 0;
            for (uint32_t i = 0; t && i < t->n; i++) {
                uint32_t c = lm_dataset_row(ds, t->first + i).cat[0];
                CHECK(c < 10, "id %u", c);
                if (c < 10 && !used[c]++) distinct++;
            }
            CHECK(t && t->n == 200 && distinct >= 8, "%s: 200 values hashed into %d of 10 buckets",
                  w ? "numbers >= buckets" : "strings", distinct);
        }
    }
    lm_dataset_close(ds);
    free(dir);
    end();
}

static void test_new_rules(void)
{
    char *dir = case_dir("new rules");
    sbuf b = {0};
    sb_printf(&b, "user_id,ts,clicked,x\n");
    for (int k = 1; k <= 3000; k++) sb_printf(&b, "%d,1,0,1\n%d,2,1,1\n", k, k);
    free(write_text(dir, "log.csv", b.p));
    free(b.p);
    const char *names[] = {"log.csv"};
    const char *schema = "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}";
    struct {
        const char *name;
        int rule;
        uint64_t mod;
        double frac;
        double lo, hi; /* fraction of new tasks */
    } rules[] = {
        {"new tasks: mod:5", LM_NEWRULE_MOD, 5, 0, 0.2, 0.2},
        {"new tasks: mod:1", LM_NEWRULE_MOD, 1, 0, 1, 1},
        {"new tasks: hash:0.3", LM_NEWRULE_HASH, 0, 0.3, 0.27, 0.33},
        {"new tasks: hash:0", LM_NEWRULE_HASH, 0, 0, 0, 0},
        {"new tasks: hash:1", LM_NEWRULE_HASH, 0, 1, 1, 1},
        {"new tasks: none", LM_NEWRULE_NONE, 0, 0.5, 0, 0},
    };
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        begin(rules[r].name);
        char sub[32];
        snprintf(sub, sizeof sub, "r%zu", r);
        char *sd = lm_path_join(dir, sub), *src = lm_path_join(dir, "log.csv"),
             *dst = lm_path_join(sd, "log.csv");
        lm_test_mkdir_p(sd);
        CHECK(link(src, dst) == 0, "link: %s", strerror(errno));
        lm_prepare_opts o;
        lm_prepare_opts_default(&o);
        o.new_rule = rules[r].rule;
        o.new_mod = rules[r].mod;
        o.new_frac = rules[r].frac;
        lm_prepare_summary sum;
        lm_dataset *ds;
        lm_err err;
        int rc = prep(sd, schema, names, 1, &o, &sum, &ds, &err);
        CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
        if (ds) {
            double frac = (double)sum.tasks_new / 3000.0;
            CHECK(frac >= rules[r].lo && frac <= rules[r].hi, "%llu of 3000 tasks new",
                  (unsigned long long)sum.tasks_new);
            if (rules[r].rule == LM_NEWRULE_MOD) {
                int bad = 0;
                for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
                    const lm_task *k = lm_dataset_task(ds, t);
                    size_t len;
                    const char *p = lm_dataset_task_key(ds, k, &len);
                    char key[32];
                    snprintf(key, sizeof key, "%.*s", (int)len, p);
                    if ((int)k->is_new != (atoi(key) % (int)rules[r].mod == 0)) bad++;
                }
                CHECK(bad == 0, "%d tasks with the wrong is_new", bad);
            }
            /* new tasks of 2 examples: floor(0.5 * 2) = 1 validation, 1 test */
            for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
                const lm_task *k = lm_dataset_task(ds, t);
                if (k->is_new && (k->nsplit[LM_SPLIT_VAL] != 1 || k->nsplit[LM_SPLIT_TEST] != 1)) {
                    CHECK(0, "new task %llu splits %u/%u", (unsigned long long)t, k->nsplit[2], k->nsplit[3]);
                    break;
                }
            }
            check_consistent(ds, &sum);
        }
        lm_dataset_close(ds);
        if (rules[r].rule == LM_NEWRULE_HASH && rules[r].frac == 0.3) {
            /* deterministic: a second run gives the same bytes */
            char *sd2 = lm_path_join(sd, "again");
            lm_test_mkdir_p(sd2);
            char *dst2 = lm_path_join(sd2, "log.csv");
            CHECK(link(src, dst2) == 0, "link");
            lm_dataset *ds2;
            lm_prepare_summary sum2;
            rc = prep(sd2, schema, names, 1, &o, &sum2, &ds2, &err);
            CHECK(rc == LM_OK && sum2.tasks_new == sum.tasks_new, "second run: %llu new",
                  (unsigned long long)sum2.tasks_new);
            lm_dataset_close(ds2);
            free(sd2), free(dst2);
        }
        free(sd), free(src), free(dst);
        end();
    }
    free(dir);
}

static void test_split_column(void)
{
    begin("split column");
    char *dir = case_dir("split column");
    /* rows out of time order in the file; A: train,val,train,test,train,train by time */
    free(write_text(dir, "log.csv",
                    "user_id,ts,clicked,pos,split\n"
                    "A,6,1,6,train\nB,2,0,2,test\nA,1,0,1,train\nC,1,1,1,train\nA,4,1,4,test\n"
                    "A,2,0,2,val\nC,2,1,2,train\nB,1,0,1,validation\nA,3,1,3,train\nA,5,0,5,train\n"
                    "C,3,0,3,train\nC,4,0,4,train\nC,5,0,5,val\nC,6,0,6,test\n"));
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    lm_prepare_opts_default(&o);
    o.new_rule = LM_NEWRULE_MOD; /* ignored: the split column decides */
    o.new_mod = 1;
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc = prep(
        dir, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['pos'], 'split': 'split'}",
        names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        const lm_task *a = find_task(ds, "A"), *bt = find_task(ds, "B"), *c = find_task(ds, "C");
        CHECK(a && bt && c, "tasks");
        if (a && a->n == 6) {
            static const int want[] = {LM_SPLIT_SUPPORT, LM_SPLIT_VAL,     LM_SPLIT_SUPPORT,
                                       LM_SPLIT_TEST,    LM_SPLIT_SUPPORT, LM_SPLIT_QUERY};
            for (uint32_t i = 0; i < 6; i++) {
                lm_row_view v = lm_dataset_row(ds, a->first + i);
                CHECK(v.split == want[i] && v.dense[0] == (float)(i + 1), "A row %u: split %d pos %g", i,
                      v.split, v.dense[0]);
            }
            CHECK(!a->is_new && !a->contiguous, "A: new %u contiguous %u", a->is_new, a->contiguous);
            CHECK(a->nsplit[0] == 3 && a->nsplit[1] == 1 && a->nsplit[2] == 1 && a->nsplit[3] == 1,
                  "A nsplit");
        } else
            CHECK(0, "A has %u rows", a ? a->n : 0);
        if (bt) {
            CHECK(bt->is_new == 1 && bt->nsplit[LM_SPLIT_VAL] == 1 && bt->nsplit[LM_SPLIT_TEST] == 1,
                  "B (no train rows) new %u val %u test %u", bt->is_new, bt->nsplit[2], bt->nsplit[3]);
        }
        if (c) {
            CHECK(!c->is_new && c->contiguous && c->nsplit[0] == 3 && c->nsplit[1] == 1 &&
                      c->nsplit[2] == 1 && c->nsplit[3] == 1,
                  "C: new %u contiguous %u nsplit %u/%u/%u/%u", c->is_new, c->contiguous, c->nsplit[0],
                  c->nsplit[1], c->nsplit[2], c->nsplit[3]);
        }
        CHECK(sum.tasks_new == 1, "tasks_new %llu", (unsigned long long)sum.tasks_new);
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    free(dir);
    end();
}

/* ============================================================================================
 * Caps and windows
 * ========================================================================================== */

static void test_max_per_task(void)
{
    begin("--max-per-task keeps the most recent");
    char *dir = case_dir("max per task");
    free(write_text(dir, "log.csv",
                    "user_id,ts,clicked,x\nA,5,0,5\nA,9,1,9\nA,1,0,1\nA,10,1,10\nA,3,0,3\nA,8,0,8\nA,2,0,2\n"
                    "A,7,1,7\nA,4,0,4\nA,6,0,6\nB,2,1,2\nB,1,0,1\n"));
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    opts_none(&o);
    o.max_per_task = 3;
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc = prep(dir, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}", names, 1,
                  &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        int got[16];
        char buf[128];
        int n = task_dense_ints(ds, find_task(ds, "A"), 0, got, 16);
        static const int want[] = {8, 9, 10};
        fmt_ints(buf, sizeof buf, got, n);
        CHECK(n == 3 && ints_equal(got, want, 3), "A keeps %s, want 8,9,10", buf);
        n = task_dense_ints(ds, find_task(ds, "B"), 0, got, 16);
        CHECK(n == 2, "B keeps %d", n);
        CHECK(sum.rows_dropped == 7 && sum.rows_read == 12 && sum.rows_kept == 5, "dropped %llu",
              (unsigned long long)sum.rows_dropped);
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    free(dir);
    end();
}

static void test_window_days(void)
{
    begin("--window-days keeps the last days");
    char *dir = case_dir("window days");
    const int D = 86400;
    sbuf b = {0};
    sb_printf(&b, "user_id,ts,clicked,x\n");
    sb_printf(&b, "A,%d,0,1\nA,%d,1,2\nA,%d,0,3\nA,%d,1,4\nA,%d,0,5\n", 1 * D, 8 * D - 1, 8 * D, 9 * D,
              10 * D);
    sb_printf(&b, "B,%d,0,1\nB,%d,1,2\nC,%d,1,7\n", 1 * D, 2 * D, 9 * D + 5);
    free(write_text(dir, "log.csv", b.p));
    free(b.p);
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    opts_none(&o);
    o.window_days = 2;
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc = prep(dir, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}", names, 1,
                  &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        int got[16];
        char buf[128];
        int n = task_dense_ints(ds, find_task(ds, "A"), 0, got, 16);
        static const int want[] = {3, 4, 5};
        fmt_ints(buf, sizeof buf, got, n);
        CHECK(n == 3 && ints_equal(got, want, 3), "A keeps %s, want 3,4,5 (day 8 exactly is inside)", buf);
        CHECK(find_task(ds, "B") == NULL, "B (all rows older than the window) still has a task");
        CHECK(find_task(ds, "C") != NULL, "C lost");
        CHECK(lm_dataset_ntasks(ds) == 2 && sum.rows_dropped == 4, "tasks %llu dropped %llu",
              (unsigned long long)lm_dataset_ntasks(ds), (unsigned long long)sum.rows_dropped);
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    /* window and cap together: the window first, then the most recent N */
    char *sub = lm_path_join(dir, "both");
    lm_test_mkdir_p(sub);
    char *src = lm_path_join(dir, "log.csv"), *dst = lm_path_join(sub, "log.csv");
    CHECK(link(src, dst) == 0, "link");
    o.max_per_task = 2;
    rc = prep(sub, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}", names, 1, &o,
              &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        int got[16];
        int n = task_dense_ints(ds, find_task(ds, "A"), 0, got, 16);
        CHECK(n == 2 && got[0] == 4 && got[1] == 5, "A keeps %d rows", n);
        CHECK(sum.rows_dropped == 5, "dropped %llu", (unsigned long long)sum.rows_dropped);
    }
    lm_dataset_close(ds);
    free(src), free(dst), free(sub);
    free(dir);
    end();
}

/* ============================================================================================
 * Joins, several inputs, formats
 * ========================================================================================== */

static void test_join(void)
{
    begin("joined features land in the right rows");
    char *dir = case_dir("join");
    /* the join keys are not the log's first column */
    free(write_text(dir, "log.csv",
                    "ts,note,user_id,item_id,clicked\n"
                    "1,n/a,u1,i2,1\n2,?,u2,i1,0\n3,,u1,i3,1\n4,x,u3,i2,0\n5,x,u2,i3,1\n6,x,u1,i1,0\n"));
    free(write_text(dir, "users.csv", "age,user_id,gender\n0.31,u1,1\n0.52,u2,0\n0.13,u3,1\n0.99,u9,0\n"));
    free(write_text(dir, "items.txt", "7;i1;0;1995;s_a\n8;i2;1;1980;s_b\n9;i3;1;2001;17\n"));
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    opts_none(&o);
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc = prep(dir,
                  "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'meta': ['age', 'gender'], "
                  "'dense': ['action', 'year'], 'categorical': [{'column': 'studio', 'buckets': 50}, "
                  "{'column': 'item_id', 'buckets': 1000}], 'join': [{'file': 'users.csv', 'on': 'user_id'}, "
                  "{'file': 'items.txt', 'on': 'item_id', 'delimiter': ';', 'header': false, "
                  "'columns': ['rank', 'item_id', 'action', 'year', 'studio']}]}",
                  names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        static const struct {
            int ts;
            const char *user;
            float age, gender;
            float action, year;
            int item;
        } want[] = {{1, "u1", 0.31f, 1, 1, 1980, 2}, {2, "u2", 0.52f, 0, 0, 1995, 1},
                    {3, "u1", 0.31f, 1, 1, 2001, 3}, {4, "u3", 0.13f, 1, 1, 1980, 2},
                    {5, "u2", 0.52f, 0, 1, 2001, 3}, {6, "u1", 0.31f, 1, 0, 1995, 1}};
        CHECK(lm_dataset_nrows(ds) == 6 && lm_dataset_ntasks(ds) == 3, "rows %llu",
              (unsigned long long)lm_dataset_nrows(ds));
        uint32_t studio_of[4] = {0};
        for (size_t i = 0; i < 6; i++) {
            const lm_task *t = find_task(ds, want[i].user);
            int found = 0;
            for (uint32_t r = 0; t && r < t->n; r++) {
                lm_row_view v = lm_dataset_row(ds, t->first + r);
                if (v.time != want[i].ts) continue;
                found = 1;
                CHECK(v.meta[0] == want[i].age && v.meta[1] == want[i].gender,
                      "ts %d (%s): user features %g %g, want %g %g", want[i].ts, want[i].user, v.meta[0],
                      v.meta[1], want[i].age, want[i].gender);
                CHECK(v.dense[0] == want[i].action && v.dense[1] == want[i].year,
                      "ts %d (item i%d): item features %g %g, want %g %g", want[i].ts, want[i].item,
                      v.dense[0], v.dense[1], want[i].action, want[i].year);
                if (studio_of[want[i].item] == 0) studio_of[want[i].item] = v.cat[0] + 1;
                CHECK(studio_of[want[i].item] == v.cat[0] + 1, "item i%d: studio id varies", want[i].item);
                CHECK(v.cat[0] < 50 && v.cat[1] < 1000, "ids %u %u", v.cat[0], v.cat[1]);
            }
            CHECK(found, "row ts %d not found in task %s", want[i].ts, want[i].user);
        }
        CHECK(studio_of[3] == 18, "studio '17' (below buckets) kept: id %u", studio_of[3] - 1);
        CHECK(sum.missing_keys == 0, "missing_keys %llu", (unsigned long long)sum.missing_keys);
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    free(dir);
    end();
}

static void test_multiple_inputs(void)
{
    begin("several input files");
    char *dir = case_dir("multiple inputs");
    free(write_text(dir, "a.csv", "user_id,ts,clicked,age,x\nu1,10,1,0.5,1\nu2,5,0,0.25,2\nu1,30,0,0.5,3\n"));
    /* the second file orders its columns differently and has one more */
    free(write_text(dir, "b.csv",
                    "x,extra,clicked,ts,user_id,age\n4,zz,1,20,u1,0.5\n5,zz,1,10,u1,0.75\n6,,0,1,u3,1\n"));
    free(write_text(dir, "c.csv", "user_id,ts,clicked,age,x\n\nu2,4,1,0.25,7\n"));
    const char *names[] = {"a.csv", "b.csv", "c.csv"};
    lm_prepare_opts o;
    opts_none(&o);
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc =
        prep(dir, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'meta': ['age'], 'dense': ['x']}",
             names, 3, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        CHECK(sum.rows_read == 7 && lm_dataset_nrows(ds) == 7 && lm_dataset_ntasks(ds) == 3, "read %llu",
              (unsigned long long)sum.rows_read);
        int got[16];
        char buf[128];
        int n = task_dense_ints(ds, find_task(ds, "u1"), 0, got, 16);
        fmt_ints(buf, sizeof buf, got, n);
        static const int w1[] = {1, 5, 4, 3}; /* ts 10 (a), 10 (b: after a), 20, 30 */
        CHECK(n == 4 && ints_equal(got, w1, 4), "u1 order %s, want 1,5,4,3", buf);
        const lm_task *t = find_task(ds, "u1");
        if (t && t->n == 4) CHECK(lm_dataset_row(ds, t->first + 1).meta[0] == 0.75f, "age from b.csv");
        n = task_dense_ints(ds, find_task(ds, "u2"), 0, got, 16);
        CHECK(n == 2 && got[0] == 7 && got[1] == 2, "u2 across a.csv and c.csv");
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    free(dir);
    end();
}

/* The CSV reader on random records against the fields they were made from: short and long
 * lines (the reader splits unquoted lines sixteen bytes at a time and falls back to a byte
 * loop near the end of its buffer), empty fields, CRLF, blank lines, quoted fields holding
 * delimiters, quotes and newlines at any position, and a last line with no newline. */
static void test_csv_reader(void)
{
    begin("csv reader: random records against their fields");
    char *dir = case_dir("csv_reader");
    char path[4200];
    snprintf(path, sizeof path, "%s/r.csv", dir);
    enum { NREC = 3000, MAXF = 12, MAXL = 40 };
    static char want[NREC][MAXF][MAXL + 1];
    static int nf[NREC];
    uint64_t rng = 12345;
#define RND() (rng = rng * 6364136223846793005ull + 1442695040888963407ull, (unsigned)(rng >> 33))
    FILE *out = fopen(path, "w");
    CHECK(out != NULL, "cannot write %s", path);
    if (!out) return;
    for (int r = 0; r < NREC; r++) {
        if (RND() % 10 == 0) fputs(RND() % 2 ? "\n" : "\r\n", out); /* blank line */
        nf[r] = 1 + (int)(RND() % MAXF);
        for (int k = 0; k < nf[r]; k++) {
            unsigned cap = RND() % 4 ? 8 : MAXL + 1;
            int len = (int)(RND() % cap), quoted = RND() % 25 == 0;
            for (int i = 0; i < len; i++) {
                static const char plain[] = "abcxyz0123456789.-", special[] = ",\"\n";
                want[r][k][i] = quoted && RND() % 4 == 0 ? special[RND() % 3] : plain[RND() % 18];
            }
            want[r][k][len] = 0;
            /* a record of one empty field would be a blank line, which the reader skips */
            if (nf[r] == 1 && len == 0) want[r][k][0] = 'a', want[r][k][1] = 0, len = 1;
            if (k) fputc(',', out);
            if (!quoted) {
                fputs(want[r][k], out);
                continue;
            }
            fputc('"', out);
            for (int i = 0; i < len; i++) {
                if (want[r][k][i] == '"') fputc('"', out);
                fputc(want[r][k][i], out);
            }
            fputc('"', out);
        }
        if (r + 1 < NREC) fputs(RND() % 3 ? "\n" : "\r\n", out);
    }
    CHECK(fclose(out) == 0, "write %s", path);
#undef RND
    lm_err err = {0};
    lm_csv *rd = NULL;
    CHECK(lm_csv_open(&rd, path, ',', &err) == LM_OK, "%s", err.msg);
    lm_field f[MAXF + 2];
    int r = 0;
    for (; rd && g_case_fails < 5; r++) {
        size_t n = 0;
        int got = lm_csv_next(rd, f, MAXF + 1, &n, &err);
        CHECK(got >= 0, "record %d: %s", r, err.msg);
        if (got <= 0) break;
        CHECK(r < NREC, "more records than written");
        if (r >= NREC) break;
        CHECK((int)n == nf[r], "record %d: %zu fields, want %d", r, n, nf[r]);
        for (int k = 0; k < nf[r] && k < (int)n; k++)
            CHECK(f[k].len == strlen(want[r][k]) && !memcmp(f[k].p, want[r][k], f[k].len),
                  "record %d field %d: \"%.*s\", want \"%s\"", r, k, (int)f[k].len, f[k].p, want[r][k]);
    }
    CHECK(r == NREC, "read %d records, want %d", r, NREC);
    lm_csv_close(rd);
    free(dir);
    end();
}

/* The float fast path of the feature parser against (float) of the correctly rounded double:
 * random decimals of every length and dot position, and decimals printed next to float
 * rounding midpoints, where multiplying by 10^-k instead of dividing by 10^k could round to
 * the other float if the fast path did not send them back. */
static void test_parse_f32(void)
{
    begin("numbers: the float fast path equals (float) of the double parse");
    uint64_t rng = 777;
#define RND() (rng = rng * 6364136223846793005ull + 1442695040888963407ull, rng >> 11)
    long checked = 0, sent_back = 0, bad = 0;
    char txt[64];
    for (long i = 0; i < 3000000 && bad < 5; i++) {
        int len;
        if (i % 2) {
            /* a midpoint between two floats, printed to 1..15 digits after the dot */
            uint32_t u = (uint32_t)(RND() % 0x7f000000u);
            float a;
            memcpy(&a, &u, 4);
            if (!(a >= 1e-6f && a < 1e9f)) continue;
            double mid = ((double)a + (double)nextafterf(a, INFINITY)) / 2;
            const char *sign = RND() % 2 ? "-" : "";
            int places = (int)(1 + RND() % 15);
            len = snprintf(txt, sizeof txt, "%s%.*f", sign, places, mid);
        } else {
            int digits = 1 + (int)(RND() % 15), dot = (int)(RND() % (digits + 1));
            len = 0;
            if (RND() % 2) txt[len++] = '-';
            for (int k = 0; k < digits; k++) {
                if (k == dot && k) txt[len++] = '.';
                txt[len++] = (char)('0' + RND() % 10);
            }
            txt[len] = 0;
        }
        float fast;
        double d;
        if (!lm_parse_f32_fast(txt, (size_t)len, &fast)) {
            sent_back++;
            continue;
        }
        checked++;
        CHECK(lm_parse_f64(txt, (size_t)len, &d) == LM_NUM_OK, "%s does not parse", txt);
        float want = (float)d;
        if (memcmp(&fast, &want, 4)) {
            bad++;
            CHECK(0, "\"%s\": fast %a, want %a", txt, (double)fast, (double)want);
        }
    }
#undef RND
    CHECK(checked > 1000000, "only %ld values took the fast path (%ld sent back)", checked, sent_back);
    /* text the fast path must refuse, and edge cases it must take exactly */
    static const char *const refuse[] = {"",
                                         "-",
                                         ".",
                                         "-.",
                                         "1..2",
                                         "1.2.",
                                         "1e5",
                                         "+1",
                                         "--1",
                                         "1-",
                                         " 1",
                                         "1 ",
                                         "0x10",
                                         "nan",
                                         "1,5",
                                         "12345678901234567",
                                         "1234567890123456",
                                         "1.2345678901234567"};
    for (size_t i = 0; i < sizeof refuse / sizeof refuse[0]; i++) {
        float x = 0;
        CHECK(!lm_parse_f32_fast(refuse[i], strlen(refuse[i]), &x), "\"%s\" taken as %g", refuse[i],
              (double)x);
    }
    static const char *const take[] = {"0",
                                       "-0",
                                       "5.",
                                       ".5",
                                       "-.25",
                                       "123456789012345",
                                       "1.23456789012345",
                                       "99999999.9999999",
                                       "0.00000000000001"};
    for (size_t i = 0; i < sizeof take / sizeof take[0]; i++) {
        float x = 0;
        double d = 0;
        CHECK(lm_parse_f32_fast(take[i], strlen(take[i]), &x) &&
                  lm_parse_f64(take[i], strlen(take[i]), &d) == LM_NUM_OK && x == (float)d &&
                  !signbit(x) == !signbit(d),
              "\"%s\": %g, want %g", take[i], (double)x, d);
    }
    end();
}

static void test_formats(void)
{
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    opts_none(&o);
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc;

    begin("quoted fields: delimiter, doubled quotes, newline");
    char *dir = case_dir("quoted");
    free(write_text(dir, "log.csv",
                    "\"user_id\",ts,clicked,x,c\n"
                    "\"a,b\",1,1,\"2.5\",\"7\"\n"
                    "\"say \"\"hi\"\"\",2,0,3,\"x,y\"\n"
                    "\"two\nlines\",3,1,4,\"\"\"\"\n"
                    "plain,4,0,5,\"5\"\n"));
    rc = prep(dir,
              "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], "
              "'categorical': [{'column': 'c', 'buckets': 10}]}",
              names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        CHECK(lm_dataset_ntasks(ds) == 4, "tasks %llu", (unsigned long long)lm_dataset_ntasks(ds));
        const lm_task *t = find_task(ds, "a,b");
        CHECK(t && lm_dataset_row(ds, t->first).dense[0] == 2.5f && lm_dataset_row(ds, t->first).cat[0] == 7,
              "\"a,b\" row");
        CHECK(find_task(ds, "say \"hi\"") != NULL, "doubled quotes not unescaped");
        CHECK(find_task(ds, "two\nlines") != NULL, "quoted newline");
        t = find_task(ds, "plain");
        CHECK(t && lm_dataset_row(ds, t->first).cat[0] == 5 && lm_dataset_row(ds, t->first).dense[0] == 5,
              "plain row");
    }
    lm_dataset_close(ds);
    free(dir);
    end();

    begin("a quoted last field without a final newline");
    dir = case_dir("quoted at the end");
    free(write_text(dir, "log.csv", "user_id,ts,clicked,x\nu1,1,1,1\nu1,2,0,\"2.5\""));
    rc = prep(dir, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}", names, 1, &o,
              &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds && lm_dataset_nrows(ds) == 2)
        CHECK(lm_dataset_row(ds, 1).dense[0] == 2.5f, "x %g", lm_dataset_row(ds, 1).dense[0]);
    lm_dataset_close(ds);
    free(dir);
    end();

    /* The reader fills 8 MiB at a time (csv.c: CSV_CHUNK * 2): put a quoted field holding doubled
     * quotes and a newline across byte 8 MiB, so that the record is split once while incomplete
     * and again after the refill. */
    begin("a quoted field across the reader's 8 MiB refill");
    dir = case_dir("quoted across refill");
    {
        const size_t boundary = (size_t)8 << 20;
        const char *hdr = "user_id,ts,clicked,x,pad\n";
        const char *special = "\"k \"\"q\"\"\nk\",2,1,5,p\n"; /* the boundary falls after the newline */
        size_t target = boundary - 9, len = strlen(hdr);
        sbuf b = {0};
        sb_printf(&b, "%s", hdr);
        char pad[1001];
        memset(pad, 'p', 1000);
        pad[1000] = 0;
        while (target - len > 2 * 1009) {
            sb_printf(&b, "f,1,0,1,%s\n", pad);
            len += 1009;
        }
        size_t last = target - len - 9; /* between 1009 and 2018 bytes of padding */
        char *lpad = malloc(last + 1);
        memset(lpad, 'p', last);
        lpad[last] = 0;
        sb_printf(&b, "f,1,0,1,%s\n", lpad);
        free(lpad);
        CHECK(b.n == target, "prefix of %zu bytes, want %zu", b.n, target);
        sb_printf(&b, "%s", special);
        for (int i = 0; i < 3; i++) sb_printf(&b, "\"a \"\"b\"\"\",%d,0,%d,p\n", 3 + i, i);
        free(write_bytes(dir, "log.csv", b.p, b.n));
        free(b.p);
    }
    rc = prep(dir, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}", names, 1, &o,
              &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        const lm_task *t = find_task(ds, "k \"q\"\nk");
        CHECK(t && t->n == 1 && lm_dataset_row(ds, t->first).dense[0] == 5,
              "key 'k \"q\"\\nk' not found intact");
        t = find_task(ds, "a \"b\"");
        CHECK(t && t->n == 3, "key 'a \"b\"' not found");
        CHECK(lm_dataset_ntasks(ds) == 3, "%llu tasks, want 3", (unsigned long long)lm_dataset_ntasks(ds));
    }
    lm_dataset_close(ds);
    free(dir);
    end();

    begin("CRLF line endings");
    dir = case_dir("crlf");
    free(write_text(
        dir, "log.csv",
        "ts,clicked,x,user_id\r\n1,1,2.5,u1\r\n2,0,3,u1\r\n\r\n3,1,4,\"u2\"\r\n4,0,1e-3,u2")); /* no final
                                                                                                  newline */
    rc = prep(dir, "{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}", names, 1, &o,
              &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        CHECK(lm_dataset_ntasks(ds) == 2 && lm_dataset_nrows(ds) == 4, "tasks %llu rows %llu",
              (unsigned long long)lm_dataset_ntasks(ds), (unsigned long long)lm_dataset_nrows(ds));
        const lm_task *t = find_task(ds, "u1");
        CHECK(t != NULL, "key 'u1' (without \\r) not found");
        if (t)
            CHECK(lm_dataset_row(ds, t->first).dense[0] == 2.5f, "x %g",
                  lm_dataset_row(ds, t->first).dense[0]);
        t = find_task(ds, "u2");
        CHECK(t && t->n == 2 && lm_dataset_row(ds, t->first + 1).dense[0] == 1e-3f, "u2");
    }
    lm_dataset_close(ds);
    free(dir);
    end();

    begin("TSV");
    dir = case_dir("tsv");
    free(write_text(dir, "log.csv",
                    "user_id\tts\tclicked\tx\tc\nu,1\t1\t1\t2\ta,b\nu,1\t2\t0\t3\t\"q\tr\"\n"));
    rc = prep(dir,
              "{'delimiter': '\\t', 'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], "
              "'categorical': [{'column': 'c', 'buckets': 10}]}",
              names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        const lm_task *t = find_task(ds, "u,1");
        CHECK(t && t->n == 2, "task 'u,1'");
        if (t && t->n == 2) CHECK(lm_dataset_row(ds, t->first + 1).dense[0] == 3, "x");
    }
    lm_dataset_close(ds);
    /* "\\t" (backslash, t) is accepted too */
    char *sub = lm_path_join(dir, "escaped");
    lm_test_mkdir_p(sub);
    free(write_text(sub, "log.csv", "user_id\tts\tclicked\tx\nu\t1\t1\t2\n"));
    rc = prep(sub,
              "{'delimiter': '\\\\t', 'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}",
              names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK && lm_dataset_nrows(ds) == 1, "rc %d: %s", rc, err.msg);
    lm_dataset_close(ds);
    free(sub);
    free(dir);
    end();

    begin("no header line, label threshold, regression label, ignored columns");
    dir = case_dir("no header");
    free(write_text(dir, "log.csv", "u|1|5|junk|0.5\nu|2|3|!!|1\nu|3|4||2\nv|1|1|x|3\n"));
    rc = prep(dir,
              "{'delimiter': '|', 'header': false, 'columns': ['user_id', 'ts', 'rating', 'note', 'x'], "
              "'task': ['user_id'], 'time': 'ts', 'label': {'column': 'rating', 'min': 4}, 'dense': ['x']}",
              names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds) {
        const lm_task *t = find_task(ds, "u");
        CHECK(t && t->n == 3, "task u");
        if (t && t->n == 3)
            CHECK(lm_dataset_row(ds, t->first).label == 1 && lm_dataset_row(ds, t->first + 1).label == 0 &&
                      lm_dataset_row(ds, t->first + 2).label == 1,
                  "labels rating >= 4");
        CHECK(sum.rows_read == 4, "rows_read %llu (no header row)", (unsigned long long)sum.rows_read);
    }
    lm_dataset_close(ds);
    sub = lm_path_join(dir, "regression");
    lm_test_mkdir_p(sub);
    free(write_text(sub, "log.csv", "user_id,ts,y,x\nu,1,3.25,1\nu,2,-1e3,1\n"));
    rc = prep(
        sub,
        "{'task': ['user_id'], 'time': 'ts', 'label': {'column': 'y', 'type': 'regression'}, 'dense': ['x']}",
        names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (ds && lm_dataset_nrows(ds) == 2)
        CHECK(lm_dataset_row(ds, 0).label == 3.25f && lm_dataset_row(ds, 1).label == -1000.f,
              "regression labels");
    lm_dataset_close(ds);
    free(sub);
    free(dir);
    end();

    begin("output folder holds schema.json and summary.json");
    dir = case_dir("outputs");
    free(write_text(dir, "log.csv", HDR GOOD));
    rc = prep(dir, BASE_SCHEMA, names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    char *p1 = lm_path_join(dir, "out/schema.json"), *p2 = lm_path_join(dir, "out/summary.json");
    CHECK(exists(p1) && exists(p2), "schema.json or summary.json missing");
    if (ds) {
        size_t len;
        const char *info = lm_dataset_info_json(ds, &len);
        CHECK(len > 0 && memmem(info, len, "rows_kept", 9), "info json");
    }
    CHECK(leftovers(dir) == 0, "leftovers");
    lm_dataset_close(ds);
    free(p1), free(p2), free(dir);
    end();
}

/* ============================================================================================
 * External sort: a small sort buffer spills runs and gives the same bytes
 * ========================================================================================== */

static int files_equal(const char *a, const char *b, size_t *la, size_t *lb)
{
    char *x = NULL, *y = NULL;
    lm_err err = {0};
    *la = *lb = 0;
    int ok = lm_read_file(a, &x, la, &err) == LM_OK && lm_read_file(b, &y, lb, &err) == LM_OK && *la == *lb &&
             !memcmp(x, y, *la);
    free(x);
    free(y);
    return ok;
}

static void test_spilled_runs(void)
{
    begin("a small --mem spills sorted runs and gives the same dataset");
    char *dir = case_dir("runs");
    enum { ROWS = 300000, USERS = 5000 };
    sbuf b = {0};
    sb_printf(&b, "user_id,ts,clicked,x,item_id\n");
    uint64_t st = 42;
    for (int i = 0; i < ROWS; i++) {
        unsigned u = (unsigned)(lcg(&st) % USERS), ts = (unsigned)(lcg(&st) % 1000),
                 it = (unsigned)(lcg(&st) % 2000);
        sb_printf(&b, "%u,%u,%d,%d,%u\n", u, ts, i & 1, i, it);
    }
    /* One input path for both runs: the dataset records its inputs, so the bytes compare. */
    char *log = write_text(dir, "log.csv", b.p);
    free(b.p);
    char *json = q("{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x'], "
                   "'categorical': [{'column': 'item_id', 'buckets': 1000}]}");
    char *sp = write_text(dir, "schema.json", json);
    char *small = lm_path_join(dir, "small"), *big = lm_path_join(dir, "big"),
         *runs = lm_path_join(dir, "runs");
    lm_test_mkdir_p(runs);
    lm_schema *s = NULL;
    lm_err err = {0};
    int rc = lm_schema_load(&s, sp, &err);
    CHECK(rc == LM_OK, "%s", err.msg);
    const char *in[] = {log};
    lm_prepare_opts o;
    lm_prepare_opts_default(&o);
    o.mem_bytes = (size_t)8 << 20;
    o.tmp_dir = runs;
    lm_prepare_summary s1, s2;
    lm_dataset *d1 = NULL, *d2 = NULL;
    if (!rc) rc = lm_prepare(s, in, 1, small, &o, &s1, &err);
    if (!rc) rc = lm_dataset_open(&d1, small, LM_DATASET_VERIFY, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (!rc) {
        CHECK(s1.runs > 1, "runs %llu with an 8 MiB buffer", (unsigned long long)s1.runs);
        CHECK(s1.peak_buffer_bytes <= o.mem_bytes, "peak %zu", s1.peak_buffer_bytes);
    }
    CHECK(count_entries(runs) == 0, "%d run files left in --tmp-dir", count_entries(runs));
    o.mem_bytes = (size_t)64 << 20;
    o.tmp_dir = NULL;
    memset(&err, 0, sizeof err);
    rc = s ? lm_prepare(s, in, 1, big, &o, &s2, &err) : -1;
    if (!rc) rc = lm_dataset_open(&d2, big, LM_DATASET_VERIFY, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    if (!rc) CHECK(s2.runs <= 1, "runs %llu with a 64 MiB buffer", (unsigned long long)s2.runs);
    char *f1 = lm_path_join(small, LM_DS_FILE), *f2 = lm_path_join(big, LM_DS_FILE);
    size_t l1, l2;
    CHECK(files_equal(f1, f2, &l1, &l2), "dataset.lmd differs: %zu and %zu bytes", l1, l2);
    if (d1) {
        CHECK(lm_dataset_nrows(d1) == ROWS, "rows %llu", (unsigned long long)lm_dataset_nrows(d1));
        int bad = 0;
        for (uint64_t t = 0; t < lm_dataset_ntasks(d1); t++) {
            const lm_task *k = lm_dataset_task(d1, t);
            for (uint32_t i = 1; i < k->n; i++) {
                lm_row_view a = lm_dataset_row(d1, k->first + i - 1), c = lm_dataset_row(d1, k->first + i);
                if (!(a.time < c.time || (a.time == c.time && a.dense[0] < c.dense[0]))) bad++;
            }
        }
        CHECK(bad == 0, "%d rows out of (time, input) order across runs", bad);
        check_consistent(d1, &s1);
    }
    CHECK(leftovers(dir) == 0, "leftovers");
    lm_dataset_close(d1);
    lm_dataset_close(d2);
    lm_schema_free(s);
    free(f1), free(f2), free(small), free(big), free(runs), free(log), free(json), free(sp), free(dir);
    end();
}

/* Two prepares at once sharing one --tmp-dir (say /scratch): each must keep to its own runs. */
static void test_shared_tmp_dir(void)
{
    begin("two concurrent prepares sharing --tmp-dir");
    char *dir = case_dir("shared tmp dir");
    char *logs[2], *ref[2], *conc[2];
    for (int k = 0; k < 2; k++) {
        sbuf b = {0};
        sb_printf(&b, "user_id,ts,clicked,x\n");
        uint64_t st = 100 + (uint64_t)k;
        /* Enough rows for a dataset over 4 MiB, so the parent's prepares start an asynchronous
         * write before the fork: with glibc's POSIX AIO (helper threads a child does not get)
         * the children's prepares then waited forever. */
        for (int i = 0; i < 250000; i++)
            sb_printf(&b, "%u,%u,%d,%d\n", (unsigned)(lcg(&st) % 3000), (unsigned)(lcg(&st) % 500),
                      (i + k) & 1, i);
        char name[32];
        snprintf(name, sizeof name, "log%d.csv", k);
        logs[k] = write_text(dir, name, b.p);
        free(b.p);
        snprintf(name, sizeof name, "ref%d", k);
        ref[k] = lm_path_join(dir, name);
        snprintf(name, sizeof name, "conc%d", k);
        conc[k] = lm_path_join(dir, name);
    }
    char *runs = lm_path_join(dir, "runs");
    lm_test_mkdir_p(runs);
    char *json = q("{'task': ['user_id'], 'time': 'ts', 'label': 'clicked', 'dense': ['x']}");
    lm_schema *s = NULL;
    lm_err err = {0};
    int rc = lm_schema_parse(&s, json, strlen(json), NULL, &err);
    lm_prepare_opts o;
    lm_prepare_opts_default(&o);
    o.mem_bytes = (size_t)8 << 20;
    lm_prepare_summary sum;
    for (int k = 0; k < 2 && !rc; k++) {
        const char *in[] = {logs[k]};
        rc = lm_prepare(s, in, 1, ref[k], &o, &sum, &err);
        CHECK(rc == LM_OK && sum.runs > 1, "reference %d: rc %d runs %llu: %s", k, rc,
              (unsigned long long)sum.runs, err.msg);
    }
    o.tmp_dir = runs;
    pid_t pid[2] = {-1, -1};
    fflush(stdout);
    fflush(stderr);
    for (int k = 0; k < 2 && !rc; k++) {
        pid[k] = fork();
        if (pid[k] == 0) {
            alarm(120); /* a hang fails the case instead of the whole run */
            const char *in[] = {logs[k]};
            lm_err e2 = {0};
            int r = lm_prepare(s, in, 1, conc[k], &o, &sum, &e2);
            if (r) fprintf(stderr, "  concurrent prepare %d: %s\n", k, e2.msg);
            _exit(r ? 1 : 0);
        }
    }
    for (int k = 0; k < 2; k++) {
        if (pid[k] <= 0) continue;
        int status = 0;
        waitpid(pid[k], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "concurrent prepare %d failed", k);
        char *f1 = lm_path_join(ref[k], LM_DS_FILE), *f2 = lm_path_join(conc[k], LM_DS_FILE);
        size_t l1, l2;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            CHECK(files_equal(f1, f2, &l1, &l2),
                  "concurrent prepare %d wrote a different dataset (%zu, %zu bytes)", k, l1, l2);
        free(f1), free(f2);
    }
    lm_schema_free(s);
    for (int k = 0; k < 2; k++) free(logs[k]), free(ref[k]), free(conc[k]);
    free(runs), free(json), free(dir);
    end();
}

/* ============================================================================================
 * --force, corruption
 * ========================================================================================== */

static void test_force(void)
{
    begin("--force replaces, without it LM_EEXIST");
    char *dir = case_dir("force");
    char *json = q(BASE_SCHEMA);
    char *sp = write_text(dir, "schema.json", json);
    char *l1 = write_text(dir, "one.csv", HDR GOOD);
    char *l2 = write_text(dir, "two.csv", HDR GOOD "2,101,0,0.5,2,7\n");
    char *out = lm_path_join(dir, "out");
    lm_schema *s = NULL;
    lm_err err = {0};
    int rc = lm_schema_load(&s, sp, &err);
    lm_prepare_opts o;
    opts_none(&o);
    lm_prepare_summary sum;
    const char *in1[] = {l1}, *in2[] = {l2};
    if (!rc) rc = lm_prepare(s, in1, 1, out, &o, &sum, &err);
    CHECK(rc == LM_OK, "first: %s", err.msg);
    memset(&err, 0, sizeof err);
    rc = s ? lm_prepare(s, in2, 1, out, &o, &sum, &err) : -1;
    CHECK(rc == LM_EEXIST && strstr(err.msg, out), "without force: rc %d: %s", rc, err.msg);
    lm_dataset *ds = NULL;
    rc = lm_dataset_open(&ds, out, LM_DATASET_VERIFY, &err);
    CHECK(rc == LM_OK && lm_dataset_nrows(ds) == 1, "the old output was touched");
    lm_dataset_close(ds);
    o.force = 1;
    rc = s ? lm_prepare(s, in2, 1, out, &o, &sum, &err) : -1;
    CHECK(rc == LM_OK, "with force: rc %d: %s", rc, err.msg);
    rc = lm_dataset_open(&ds, out, LM_DATASET_VERIFY, &err);
    CHECK(rc == LM_OK && lm_dataset_nrows(ds) == 2, "not replaced");
    lm_dataset_close(ds);
    CHECK(leftovers(dir) == 0, "a .tmp. or .old. folder is left");
    /* a failed forced run leaves the old output in place */
    char *bad = write_text(dir, "bad.csv", HDR "1,abc,1,0.5,2,7\n");
    const char *in3[] = {bad};
    memset(&err, 0, sizeof err);
    rc = s ? lm_prepare(s, in3, 1, out, &o, &sum, &err) : -1;
    CHECK(rc == LM_EINVAL, "bad forced run: rc %d", rc);
    rc = lm_dataset_open(&ds, out, LM_DATASET_VERIFY, &err);
    CHECK(rc == LM_OK && lm_dataset_nrows(ds) == 2, "a failed --force run damaged the old output");
    lm_dataset_close(ds);
    CHECK(leftovers(dir) == 0, "a .tmp. or .old. folder is left");
    lm_schema_free(s);
    free(json), free(sp), free(l1), free(l2), free(out), free(bad), free(dir);
    end();
}

static int write_variant(const char *dir, const char *name, const char *data, size_t n)
{
    free(write_bytes(dir, name, data, n));
    return 0;
}

static int open_code(const char *dir, const char *name, int flags, lm_err *err)
{
    char *p = lm_path_join(dir, name);
    lm_dataset *ds = NULL;
    memset(err, 0, sizeof *err);
    int rc = lm_dataset_open(&ds, p, flags, err);
    lm_dataset_close(ds);
    free(p);
    return rc;
}

static void test_corruption(void)
{
    begin("corrupt, truncated and newer datasets are refused");
    char *dir = case_dir("corruption");
    free(write_text(dir, "log.csv", HDR GOOD "1,101,0,0.5,2,7\n2,100,1,0.25,1,9\n"));
    const char *names[] = {"log.csv"};
    lm_prepare_opts o;
    opts_none(&o);
    lm_prepare_summary sum;
    lm_dataset *ds;
    lm_err err;
    int rc = prep(dir, BASE_SCHEMA, names, 1, &o, &sum, &ds, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    lm_dataset_close(ds);
    char *path = lm_path_join(dir, "out/" LM_DS_FILE), *data = NULL;
    size_t len = 0;
    CHECK(lm_read_file(path, &data, &len, &err) == LM_OK && len > LM_DS_HEADER_BYTES + 64, "read %s", path);
    if (data && len > LM_DS_HEADER_BYTES + 64) {
        CHECK(open_code(dir, "out/" LM_DS_FILE, LM_DATASET_VERIFY, &err) == LM_OK, "the file itself: %s",
              err.msg);
        char *c = malloc(len);
        /* a flipped bit in the rows */
        memcpy(c, data, len);
        c[LM_DS_HEADER_BYTES + 9] ^= 0x10;
        write_variant(dir, "body.lmd", c, len);
        rc = open_code(dir, "body.lmd", LM_DATASET_VERIFY, &err);
        CHECK(rc == LM_EFORMAT && strstr(err.msg, "checksum"), "row byte: rc %d: %s", rc, err.msg);
        /* the last byte (the info JSON) */
        memcpy(c, data, len);
        c[len - 1] ^= 0x01;
        write_variant(dir, "tail.lmd", c, len);
        rc = open_code(dir, "tail.lmd", LM_DATASET_VERIFY, &err);
        CHECK(rc == LM_EFORMAT, "last byte: rc %d: %s", rc, err.msg);
        /* a header field: caught even without VERIFY */
        memcpy(c, data, len);
        c[offsetof(lm_ds_header, nrows)] ^= 0x01;
        write_variant(dir, "header.lmd", c, len);
        rc = open_code(dir, "header.lmd", 0, &err);
        CHECK(rc == LM_EFORMAT, "header byte: rc %d: %s", rc, err.msg);
        /* truncated by one byte, to the header, to 100 bytes, to nothing */
        size_t cuts[] = {len - 1, LM_DS_HEADER_BYTES, 100, 0};
        for (size_t i = 0; i < 4; i++) {
            write_variant(dir, "cut.lmd", data, cuts[i]);
            rc = open_code(dir, "cut.lmd", LM_DATASET_VERIFY, &err);
            CHECK(rc == LM_EFORMAT, "truncated to %zu bytes: rc %d: %s", cuts[i], rc, err.msg);
            rc = open_code(dir, "cut.lmd", 0, &err);
            CHECK(rc == LM_EFORMAT, "truncated to %zu bytes, no verify: rc %d: %s", cuts[i], rc, err.msg);
        }
        /* a version bump: as written by a newer build (header checksum redone), and raw */
        memcpy(c, data, len);
        lm_ds_header h;
        memcpy(&h, c, sizeof h);
        h.version = LM_DS_VERSION + 1;
        h.header_checksum = 0;
        char hdr[LM_DS_HEADER_BYTES];
        memcpy(hdr, c, sizeof hdr);
        memcpy(hdr, &h, sizeof h);
        h.header_checksum = lm_hash64(hdr, sizeof hdr, 0);
        memcpy(c, &h, sizeof h);
        write_variant(dir, "newer.lmd", c, len);
        rc = open_code(dir, "newer.lmd", LM_DATASET_VERIFY, &err);
        CHECK(rc == LM_EVERSION && strstr(err.msg, "version"), "newer version: rc %d: %s", rc, err.msg);
        memcpy(c, data, len);
        uint32_t v = LM_DS_VERSION + 1;
        memcpy(c + offsetof(lm_ds_header, version), &v, 4);
        write_variant(dir, "bumped.lmd", c, len);
        rc = open_code(dir, "bumped.lmd", 0, &err);
        CHECK(rc == LM_EVERSION, "version bump: rc %d: %s", rc, err.msg);
        /* not a dataset */
        memcpy(c, data, len);
        c[0] = 'X';
        write_variant(dir, "magic.lmd", c, len);
        rc = open_code(dir, "magic.lmd", 0, &err);
        CHECK(rc == LM_EFORMAT && strstr(err.msg, "magic"), "bad magic: rc %d: %s", rc, err.msg);
        free(c);
    }
    rc = open_code(dir, "nothing-here", 0, &err);
    CHECK(rc == LM_ENOTFOUND, "a missing dataset: rc %d: %s", rc, err.msg);
    lm_dataset_close(NULL);
    free(data), free(path), free(dir);
    end();
}

/* ============================================================================================
 * MovieLens-100K: the protocol dataset, recomputed from the raw files
 * ========================================================================================== */

typedef struct ml_rating {
    int user, item, rating;
    long ts;
} ml_rating;

static int cmp_rating(const void *a, const void *b)
{
    const ml_rating *x = a, *y = b;
    if (x->user != y->user) return x->user < y->user ? -1 : 1;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

enum { ML_USERS = 943, ML_ITEMS = 1682, ML_OCC = 21, ML_G = 19 };

typedef struct ml_raw {
    ml_rating *r;
    size_t n;
    float meta[ML_USERS + 1][2 + ML_OCC];
    float dense[ML_ITEMS + 1][ML_G + 1];
    int first_genre[ML_ITEMS + 1];
    int occ_technician;
} ml_raw;

static char *ml_read(const char *dir, const char *name)
{
    char *p = lm_path_join(dir, name), *text = NULL;
    lm_err err = {0};
    if (lm_read_file(p, &text, NULL, &err) != LM_OK) CHECK(0, "%s", err.msg);
    free(p);
    return text;
}

static int ml_load(const char *dir, ml_raw *m)
{
    char *data = ml_read(dir, "u.data"), *user = ml_read(dir, "u.user"), *item = ml_read(dir, "u.item");
    char *occ = ml_read(dir, "u.occupation");
    int ok = data && user && item && occ;
    char occs[ML_OCC][32];
    int nocc = 0;
    m->occ_technician = -1;
    for (char *s = occ ? strtok(occ, "\r\n") : NULL; s && nocc < ML_OCC; s = strtok(NULL, "\r\n")) {
        snprintf(occs[nocc], 32, "%s", s);
        if (!strcmp(s, "technician")) m->occ_technician = nocc;
        nocc++;
    }
    ok = ok && nocc == ML_OCC;
    size_t cap = 100000;
    m->r = malloc(cap * sizeof *m->r);
    m->n = 0;
    for (char *s = ok ? data : NULL; s && *s;) {
        char *end;
        ml_rating x;
        x.user = (int)strtol(s, &end, 10);
        x.item = (int)strtol(end, &end, 10);
        x.rating = (int)strtol(end, &end, 10);
        x.ts = strtol(end, &end, 10);
        if (end == s) break;
        if (m->n == cap) m->r = realloc(m->r, (cap *= 2) * sizeof *m->r);
        m->r[m->n++] = x;
        s = strchr(end, '\n');
        if (s) s++;
    }
    for (char *s = ok ? strtok(user, "\n") : NULL; s; s = strtok(NULL, "\n")) {
        char *f[5];
        int k = 0;
        for (char *p = s; k < 5; k++) {
            f[k] = p;
            char *bar = strchr(p, '|');
            if (!bar) break;
            *bar = 0;
            p = bar + 1;
        }
        int id = atoi(f[0]);
        if (id < 1 || id > ML_USERS || k < 3) continue;
        m->meta[id][0] = (float)(atof(f[1]) / 100.0);
        m->meta[id][1] = f[2][0] == 'M' ? 1.f : 0.f;
        for (int j = 0; j < ML_OCC; j++) m->meta[id][2 + j] = strcmp(occs[j], f[3]) ? 0.f : 1.f;
    }
    for (char *s = ok ? strtok(item, "\n") : NULL; s; s = strtok(NULL, "\n")) {
        char *f[24];
        int k = 0;
        for (char *p = s; k < 24; k++) {
            f[k] = p;
            char *bar = strchr(p, '|');
            if (!bar) break;
            *bar = 0;
            p = bar + 1;
        }
        int id = atoi(f[0]);
        if (id < 1 || id > ML_ITEMS || k < 23) continue;
        m->first_genre[id] = -1;
        for (int g = 0; g < ML_G; g++) {
            m->dense[id][g] = f[5 + g][0] == '1' ? 1.f : 0.f;
            if (f[5 + g][0] == '1' && m->first_genre[id] < 0) m->first_genre[id] = g;
        }
        if (m->first_genre[id] < 0) m->first_genre[id] = 0;
        const char *dash = strrchr(f[2], '-');
        m->dense[id][ML_G] = dash && strlen(dash + 1) == 4 ? (float)((atof(dash + 1) - 1900.0) / 100.0) : 0.f;
    }
    qsort(m->r, m->n, sizeof *m->r, cmp_rating);
    free(data), free(user), free(item), free(occ);
    return ok && m->n == 100000;
}

static void test_movielens(const char *shared)
{
    char *ml = movielens_folder(shared);
    if (!ml) return;
    begin("MovieLens-100K protocol dataset");
    ml_raw *m = calloc(1, sizeof *m);
    CHECK(ml_load(ml, m), "cannot read ml-100k (%zu ratings)", m->n);
    /* the protocol recomputed: per user count, new users, splits, positives */
    static uint32_t cnt[ML_USERS + 1];
    memset(cnt, 0, sizeof cnt);
    uint64_t pos = 0, want_split[LM_SPLIT_COUNT] = {0}, users = 0, nnew = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->r[i].user >= 1 && m->r[i].user <= ML_USERS) cnt[m->r[i].user]++;
        pos += m->r[i].rating >= 4;
    }
    static const fracs proto = {"protocol", 6, 10, 2, 10, 75, 100, 5, 10};
    for (int u = 1; u <= ML_USERS; u++) {
        if (!cnt[u]) continue;
        users++;
        nnew += u % 5 == 0;
        uint32_t w[LM_SPLIT_COUNT];
        expect_splits(&proto, cnt[u], u % 5 == 0, w);
        for (int s = 0; s < LM_SPLIT_COUNT; s++) want_split[s] += w[s];
    }
    CHECK(users == 943 && nnew == 188, "u.data: %llu users, %llu new", (unsigned long long)users,
          (unsigned long long)nnew);
    CHECK(want_split[0] == 36478 && want_split[1] == 11811 && want_split[2] == 25368 &&
              want_split[3] == 26343,
          "recomputed splits %llu/%llu/%llu/%llu", (unsigned long long)want_split[0],
          (unsigned long long)want_split[1], (unsigned long long)want_split[2],
          (unsigned long long)want_split[3]);
    CHECK(m->occ_technician == 19, "technician is occupation %d", m->occ_technician);

    char *dir = case_dir("movielens");
    char *out = lm_path_join(dir, "ml");
    lm_prepare_summary sum;
    lm_err err = {0};
    int rc = lm_prepare_movielens(ml, out, LM_ML_TASK_USER, NULL, &sum, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    lm_dataset *ds = NULL;
    if (!rc) rc = lm_dataset_open(&ds, out, LM_DATASET_VERIFY, &err);
    CHECK(rc == LM_OK, "open: %s", err.msg);
    if (ds) {
        CHECK(lm_dataset_ntasks(ds) == users && sum.tasks == 943, "tasks %llu",
              (unsigned long long)sum.tasks);
        CHECK(sum.tasks_new == nnew && sum.tasks_new == 188, "new %llu", (unsigned long long)sum.tasks_new);
        for (int s = 0; s < LM_SPLIT_COUNT; s++)
            CHECK(sum.split_rows[s] == want_split[s], "split %s: %llu, want %llu", lm_split_name(s),
                  (unsigned long long)sum.split_rows[s], (unsigned long long)want_split[s]);
        CHECK(sum.split_rows[0] == 36478 && sum.split_rows[1] == 11811 && sum.split_rows[2] == 25368 &&
                  sum.split_rows[3] == 26343,
              "protocol split sizes");
        CHECK(lm_dataset_nmeta(ds) == 23 && lm_dataset_ndense(ds) == 20 && lm_dataset_ncat(ds) == 1,
              "features %u/%u/%u", lm_dataset_nmeta(ds), lm_dataset_ndense(ds), lm_dataset_ncat(ds));
        check_consistent(ds, &sum);
        /* row by row against u.data sorted by (user, ts, item), with the joined features */
        size_t start = 0;
        uint64_t got_pos = 0;
        int bad_order = 0, bad_label = 0, bad_meta = 0, bad_item = 0, bad_split = 0, bad_task = 0;
        int item1_rows = 0, user1_rows = 0;
        static size_t first_of[ML_USERS + 2];
        for (size_t i = m->n; i-- > 0;) first_of[m->r[i].user] = i;
        for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
            const lm_task *k = lm_dataset_task(ds, t);
            size_t len;
            const char *kp = lm_dataset_task_key(ds, k, &len);
            char key[32];
            snprintf(key, sizeof key, "%.*s", (int)len, kp);
            int u = atoi(key);
            if (u < 1 || u > ML_USERS || k->n != cnt[u] || (int)k->is_new != (u % 5 == 0)) {
                bad_task++;
                continue;
            }
            uint32_t w[LM_SPLIT_COUNT];
            expect_splits(&proto, cnt[u], u % 5 == 0, w);
            if (memcmp(w, k->nsplit, sizeof w)) bad_split++;
            start = first_of[u];
            for (uint32_t i = 0; i < k->n; i++) {
                const ml_rating *r = &m->r[start + i];
                lm_row_view v = lm_dataset_row(ds, k->first + i);
                if (v.time != (double)r->ts || v.cat[0] != (uint32_t)r->item) bad_order++;
                if (v.label != (r->rating >= 4 ? 1.f : 0.f)) bad_label++;
                got_pos += v.label == 1.f;
                for (int j = 0; j < 2 + ML_OCC; j++)
                    if (fabsf(v.meta[j] - m->meta[u][j]) > 1e-6f) {
                        bad_meta++;
                        break;
                    }
                int it = v.cat[0] <= ML_ITEMS ? (int)v.cat[0] : 0;
                for (int j = 0; j <= ML_G; j++)
                    if (fabsf(v.dense[j] - m->dense[it][j]) > 1e-6f) {
                        bad_item++;
                        break;
                    }
                if (u == 1) {
                    user1_rows++;
                    CHECK(fabsf(v.meta[0] - 0.24f) < 1e-6f && v.meta[1] == 1 && v.meta[2 + 19] == 1,
                          "user 1 (24, M, technician): %g %g %g", v.meta[0], v.meta[1], v.meta[2 + 19]);
                }
                if (v.cat[0] == 1) {
                    static const float g1[ML_G] = {0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
                    int same = fabsf(v.dense[ML_G] - 0.95f) < 1e-6f;
                    for (int g = 0; g < ML_G; g++) same = same && v.dense[g] == g1[g];
                    if (!same && item1_rows++ == 0)
                        CHECK(0,
                              "item 1 (Toy Story: animation, children's, comedy; 1995): genres %g %g %g %g "
                              "%g %g, "
                              "year %g",
                              v.dense[0], v.dense[1], v.dense[2], v.dense[3], v.dense[4], v.dense[5],
                              v.dense[ML_G]);
                }
            }
        }
        CHECK(bad_task == 0, "%d tasks with a wrong key, size or is_new", bad_task);
        CHECK(bad_split == 0, "%d tasks with wrong split sizes", bad_split);
        CHECK(bad_order == 0, "%d rows not in u.data's (timestamp, item id) order", bad_order);
        CHECK(bad_label == 0 && got_pos == pos, "%d wrong labels; %llu positives, u.data has %llu", bad_label,
              (unsigned long long)got_pos, (unsigned long long)pos);
        CHECK(bad_meta == 0, "%d rows with the wrong user features", bad_meta);
        CHECK(bad_item == 0, "%d rows with the wrong item features", bad_item);
        CHECK(user1_rows == (int)cnt[1], "user 1 rows %d", user1_rows);
        CHECK(pos > 50000 && pos < 60000, "about 55%% positives: %llu", (unsigned long long)pos);
    }
    lm_dataset_close(ds);
    char *users_csv = lm_path_join(out, "users.csv"), *items_csv = lm_path_join(out, "items.csv");
    CHECK(exists(users_csv) && exists(items_csv), "users.csv / items.csv not kept in the output");
    CHECK(leftovers(dir) == 0, "a staging folder is left beside the output");
    /* a second run without force */
    memset(&err, 0, sizeof err);
    rc = lm_prepare_movielens(ml, out, LM_ML_TASK_USER, NULL, &sum, &err);
    CHECK(rc == LM_EEXIST, "second run: rc %d: %s", rc, err.msg);
    free(users_csv), free(items_csv);
    end();

    begin("MovieLens-100K task = user,genre");
    char *out2 = lm_path_join(dir, "ml-genre");
    memset(&err, 0, sizeof err);
    rc = lm_prepare_movielens(ml, out2, LM_ML_TASK_USER_GENRE, NULL, &sum, &err);
    CHECK(rc == LM_OK, "rc %d: %s", rc, err.msg);
    ds = NULL;
    if (!rc) rc = lm_dataset_open(&ds, out2, LM_DATASET_VERIFY, &err);
    if (ds) {
        static uint32_t pairs[ML_USERS + 1][ML_G];
        memset(pairs, 0, sizeof pairs);
        uint64_t distinct = 0;
        for (size_t i = 0; i < m->n; i++) {
            const ml_rating *r = &m->r[i];
            if (r->item < 1 || r->item > ML_ITEMS) continue;
            if (pairs[r->user][m->first_genre[r->item]]++ == 0) distinct++;
        }
        CHECK(lm_dataset_ntasks(ds) == distinct && sum.tasks == distinct,
              "tasks %llu, distinct (user, genre) %llu", (unsigned long long)lm_dataset_ntasks(ds),
              (unsigned long long)distinct);
        CHECK(lm_dataset_nrows(ds) == m->n, "rows %llu", (unsigned long long)lm_dataset_nrows(ds));
        int bad = 0;
        for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
            const lm_task *k = lm_dataset_task(ds, t);
            size_t len;
            const char *kp = lm_dataset_task_key(ds, k, &len);
            char key[32];
            snprintf(key, sizeof key, "%.*s", (int)LM_MIN(len, 31u), kp); /* keys are not NUL-terminated */
            char *sep = strchr(key, LM_KEY_SEP);
            if (!sep) {
                bad++;
                continue;
            }
            int u = atoi(key), g = atoi(sep + 1);
            if (u < 1 || u > ML_USERS || g < 0 || g >= ML_G || k->n != pairs[u][g] ||
                (int)k->is_new != (u % 5 == 0))
                bad++;
        }
        CHECK(bad == 0, "%d tasks whose key, size or is_new disagree with u.data", bad);
        check_consistent(ds, &sum);
    }
    lm_dataset_close(ds);
    free(out2);
    end();

    begin("MovieLens-100K missing folder");
    char *nowhere = lm_path_join(dir, "no-ml"), *out3 = lm_path_join(dir, "ml-none");
    memset(&err, 0, sizeof err);
    rc = lm_prepare_movielens(nowhere, out3, LM_ML_TASK_USER, NULL, &sum, &err);
    CHECK(rc == LM_ENOTFOUND && strstr(err.msg, nowhere), "rc %d: %s", rc, err.msg);
    CHECK(!exists(out3) && leftovers(dir) == 0, "output left behind");
    free(nowhere), free(out3);
    end();

    free(m->r);
    free(m);
    free(out), free(dir), free(ml);
}

/* ============================================================================================ */

int main(void)
{
    const char *tmp = getenv("LM_TMP");
    if (!tmp || !*tmp) tmp = "/tmp/limaml-test";
    snprintf(g_base, sizeof g_base, "%s/test_prepare.%d", tmp, (int)getpid());
    lm_rmtree(g_base);
    lm_test_mkdir_p(g_base);
    const char *shared = getenv("LM_SHARED");

    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) run_bad_case(&bad_cases[i]);
    test_unreadable_file();
    test_schema_parse();
    test_bad_options();
    test_skip_bad_rows();
    test_missing_features_zero();
    test_order();
    test_splits();
    test_composite_keys();
    test_categorical();
    test_new_rules();
    test_split_column();
    test_max_per_task();
    test_window_days();
    test_join();
    test_multiple_inputs();
    test_csv_reader();
    test_parse_f32();
    test_formats();
    test_spilled_runs();
    test_shared_tmp_dir();
    test_force();
    test_corruption();
    test_movielens(shared);

    if (!g_failed)
        lm_rmtree(g_base);
    else
        fprintf(stderr, "scratch files kept in %s\n", g_base);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
