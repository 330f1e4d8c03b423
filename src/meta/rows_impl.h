/* rows_impl.h: a task's rows as contiguous REAL arrays (allocation, views, gathering from a
 * dataset), written once over REAL and instantiated by meta_f32.c and meta_f64.c (never
 * include it elsewhere). Contracts in meta/meta_decl.h. */

int LM_META_FN(lm_rows_alloc)(ROWS *r, size_t nmeta, size_t ndense, size_t ncat, size_t cap, lm_err *err)
{
    LM_ASSERT(r);
    memset(r, 0, sizeof *r);
    /* one allocation: label (cap), meta (cap, nmeta), dense (cap, ndense), then cat (cap, ncat);
     * uint32_t needs no more alignment than REAL */
    size_t nreal, ncell, bytes;
    if (__builtin_mul_overflow(cap, 1 + nmeta + ndense, &nreal) ||
        __builtin_mul_overflow(cap, ncat, &ncell) || __builtin_mul_overflow(nreal, sizeof(REAL), &bytes) ||
        __builtin_add_overflow(bytes, ncell * sizeof(uint32_t), &bytes) ||
        ncell > SIZE_MAX / sizeof(uint32_t))
        return lm_err_set(err, LM_ENOMEM, "rows: %zu rows overflow the size", cap);
    void *mem = malloc(bytes ? bytes : 1);
    if (!mem) return lm_err_set(err, LM_ENOMEM, "rows: out of memory (%zu bytes)", bytes);
    REAL *p = mem;
    r->mem = mem;
    r->cap = cap;
    r->nmeta = nmeta, r->ndense = ndense, r->ncat = ncat;
    r->label = p;
    r->meta = nmeta ? p + cap : NULL;
    r->dense = ndense ? p + cap * (1 + nmeta) : NULL;
    r->cat = ncat ? (uint32_t *)(p + nreal) : NULL;
    return LM_OK;
}

void LM_META_FN(lm_rows_free)(ROWS *r)
{
    if (!r || !r->mem) return;
    free(r->mem);
    memset(r, 0, sizeof *r);
}

ROWS LM_META_FN(lm_rows_view)(const ROWS *r, size_t first, size_t count)
{
    LM_ASSERT(r && first <= r->n && count <= r->n - first);
    ROWS v = *r;
    v.n = count;
    v.cap = 0;
    v.mem = NULL;
    v.label = r->label ? r->label + first : NULL;
    v.meta = r->meta ? r->meta + first * r->nmeta : NULL;
    v.dense = r->dense ? r->dense + first * r->ndense : NULL;
    v.cat = r->cat ? r->cat + first * r->ncat : NULL;
    return v;
}

static void rows_put(ROWS *r, const lm_row_view *row)
{
    size_t i = r->n++;
    r->label[i] = (REAL)row->label;
    if (r->nmeta) {
        REAL *m = r->meta + i * r->nmeta;
        for (size_t j = 0; j < r->nmeta; j++) m[j] = (REAL)row->meta[j];
    }
    if (r->ndense) {
        REAL *d = r->dense + i * r->ndense;
        for (size_t j = 0; j < r->ndense; j++) d[j] = (REAL)row->dense[j];
    }
    if (r->ncat) memcpy(r->cat + i * r->ncat, row->cat, r->ncat * sizeof *r->cat);
}

static int split_matches(int row_split, int split)
{
    if (split == LM_META_SPLIT_TRAIN) return row_split == LM_SPLIT_SUPPORT || row_split == LM_SPLIT_QUERY;
    return row_split == split;
}

int LM_META_FN(lm_rows_gather)(ROWS *r, const lm_dataset *ds, const lm_task *t, int split, lm_err *err)
{
    LM_ASSERT(r && ds && t);
    if (split != LM_META_SPLIT_TRAIN && (split < 0 || split >= LM_SPLIT_COUNT))
        return lm_err_set(err, LM_EINVAL, "rows: split %d is not a split", split);
    if (r->nmeta != lm_dataset_nmeta(ds) || r->ndense != lm_dataset_ndense(ds) ||
        r->ncat != lm_dataset_ncat(ds))
        return lm_err_set(err, LM_EMISMATCH,
                          "rows: buffers for %zu meta, %zu dense, %zu categorical features; the "
                          "dataset has %u, %u, %u",
                          r->nmeta, r->ndense, r->ncat, lm_dataset_nmeta(ds), lm_dataset_ndense(ds),
                          lm_dataset_ncat(ds));
    size_t want = lm_task_split_rows(t, split);
    r->n = 0;
    if (want > r->cap)
        return lm_err_set(err, LM_ELIMIT, "rows: the task has %zu %s rows, the buffers hold %zu", want,
                          split == LM_META_SPLIT_TRAIN ? "train" : lm_split_name(split), r->cap);
    if (t->contiguous) {
        /* splits follow time: support, query, val, test runs in this order */
        int s0 = split == LM_META_SPLIT_TRAIN ? LM_SPLIT_SUPPORT : split;
        uint64_t first = t->first;
        for (int s = 0; s < s0; s++) first += t->nsplit[s];
        for (size_t i = 0; i < want; i++) {
            lm_row_view row = lm_dataset_row(ds, first + i);
            rows_put(r, &row);
        }
        return LM_OK;
    }
    for (uint32_t i = 0; i < t->n; i++) {
        lm_row_view row = lm_dataset_row(ds, t->first + i);
        if (!split_matches(row.split, split)) continue;
        if (r->n == want) break;
        rows_put(r, &row);
    }
    if (r->n != want)
        return lm_err_set(err, LM_EFORMAT, "rows: the task counts %zu %s rows but holds %zu", want,
                          split == LM_META_SPLIT_TRAIN ? "train" : lm_split_name(split), r->n);
    return LM_OK;
}

/* ============================================================================================
 * workspace
 * ========================================================================================== */

int LM_META_FN(lm_meta_ws_alloc)(WS *ws, const lm_net *n, size_t max_rows, size_t max_steps, int adapt_global,
                                 lm_err *err)
{
    LM_ASSERT(ws && n);
    memset(ws, 0, sizeof *ws);
    int rc = lm_meta_layout_init(&ws->lay, n, max_rows, max_steps, adapt_global, err);
    if (rc) return rc;
    ws->buf = lm_malloc_array(ws->lay.total ? ws->lay.total : 1, sizeof(REAL));
    if (!ws->buf) {
        size_t total = ws->lay.total;
        memset(ws, 0, sizeof *ws);
        return lm_err_set(err, LM_ENOMEM, "meta workspace: out of memory (%zu values)", total);
    }
    memset(ws->buf, 0, ws->lay.total * sizeof(REAL)); /* KEEP before any SAMPLE sees masks of 0 */
    ws->meta_task_np = n->meta_task_np;
    ws->global_np = n->global_np;
    ws->nin = n->nin;
    return LM_OK;
}

void LM_META_FN(lm_meta_ws_free)(WS *ws)
{
    if (!ws) return;
    free(ws->buf);
    memset(ws, 0, sizeof *ws);
}
