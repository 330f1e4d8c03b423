/* reqbuild.c: POST /v1/score bodies made from a dataset's rows: the inverse of request.c.
 *
 * `limaml replay` sends a dataset's held-out part to a running server with these bodies, so the
 * AUC it measures is the served model's on exactly the rows `limaml eval` scores. A body names
 * the task by its key columns (the key split at LM_KEY_SEP), gives the meta features of its
 * first row in schema order, and one candidate per row: the dense features in order and the
 * categorical ids as integers. Ids in a dataset are already below their column's buckets, so
 * the server keeps them as they are; floats are written with %.9g, which reads back the same
 * float, so the server's input equals the dataset's bit for bit. */
#include "serve/serve.h"

#include <string.h>

void lm_srv_request_build(const lm_dataset *ds, const lm_task *task, const uint64_t *rows, size_t n,
                          lm_srv_buf *b)
{
    const lm_schema *s = lm_dataset_schema(ds);
    size_t klen;
    const char *key = lm_dataset_task_key(ds, task, &klen);
    lm_srv_buf_reset(b);
    lm_srv_buf_puts(b, "{\"task\":{");
    const char *p = key, *end = key + klen;
    for (size_t c = 0; c < s->ntask; c++) {
        const char *q = memchr(p, LM_KEY_SEP, (size_t)(end - p));
        if (!q || c + 1 == s->ntask) q = end;
        if (c) lm_srv_buf_put(b, ",", 1);
        lm_srv_buf_json_str(b, s->task[c], strlen(s->task[c]));
        lm_srv_buf_put(b, ":", 1);
        lm_srv_buf_json_str(b, p, (size_t)(q - p));
        p = q < end ? q + 1 : end;
    }
    lm_srv_buf_puts(b, "},\"meta\":[");
    lm_row_view r0 = lm_dataset_row(ds, rows[0]);
    for (uint32_t j = 0; j < s->nmeta; j++) {
        if (j) lm_srv_buf_put(b, ",", 1);
        lm_srv_buf_f32(b, r0.meta[j]);
    }
    lm_srv_buf_puts(b, "],\"candidates\":[");
    for (size_t i = 0; i < n; i++) {
        lm_row_view r = lm_dataset_row(ds, rows[i]);
        lm_srv_buf_puts(b, i ? ",{\"dense\":[" : "{\"dense\":[");
        for (uint32_t j = 0; j < s->ndense; j++) {
            if (j) lm_srv_buf_put(b, ",", 1);
            lm_srv_buf_f32(b, r.dense[j]);
        }
        lm_srv_buf_puts(b, "],\"categorical\":[");
        for (uint32_t j = 0; j < s->ncat; j++) lm_srv_buf_printf(b, j ? ",%u" : "%u", r.cat[j]);
        lm_srv_buf_puts(b, "]}");
    }
    lm_srv_buf_puts(b, "]}");
}
