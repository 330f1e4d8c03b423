/* model.h: the trained model (a network description plus its two parameter buffers) as the
 * training, evaluation, embedding and serving code share it. Private; limaml.h has the handle. */
#ifndef LM_META_MODEL_H
#define LM_META_MODEL_H

#include "meta/meta.h"

struct lm_model {
    lm_net net;
    int algo;       /* LM_TRAIN_... */
    float *theta_m; /* (net.meta_np) */
    float *theta_g; /* (net.global_np) */
    lm_schema *schema;
    /* Adaptation defaults: the inner loop the model was trained with. */
    uint32_t inner_steps;
    double task_lr;
    /* id meta block: the training tasks' keys; row i of the table is key i, the last row the
     * shared default. Keys are kept in the dataset's order, sorted by (hash, key). */
    size_t nid;
    char *id_keys;    /* concatenated */
    uint64_t *id_off; /* (nid + 1) */
    char *train_json; /* hyperparameters and summary, JSON; may be NULL */
    char *info_json;  /* built on save/load: everything in the file's metadata */
    /* An ensemble (lm_model_ensemble): nmembers >= 2 whole models of one architecture and
     * schema, trained apart. Its score is the mean of the members' logits, each member scoring
     * with its own meta embedding; its meta embedding is theirs end to end (nmembers * net.E
     * floats). net, algo, schema, inner_steps and task_lr are member 0's (net and schema
     * copied, the schema owned); theta_m and theta_g are NULL, so code that reads them must
     * go through the members (lm_model_nmembers, lm_model_member). 0 for a single network. */
    size_t nmembers;
    lm_model **member;
};

/* A model with fresh buffers for `net` (parameters zero). */
int lm_model_new(lm_model **out, const lm_net *net, int algo, const lm_schema *schema, lm_err *err);
/* The model's identity as `limaml embed` records it in each store version and `limaml serve`
 * shows it: "<algo>:<hash of theta_m, theta_g>", an ensemble "<algo>:ensemble<n>:<hash>" with
 * the hash chained over its members in order. out: (n) bytes, LM_STORE_MODEL_ID_MAX + 1 is
 * enough. */
void lm_model_id(const lm_model *m, char *out, size_t n);
/* The id-table row of a task key: its own row, or the default row (nid) when unseen. */
size_t lm_model_id_row(const lm_model *m, const char *key, size_t len);
/* Parse "mlp:32,16" / "id:16" (meta) and "mlp:64,32" (global) into a config. */
int lm_net_config_parse_blocks(lm_net_config *c, const char *meta_block, const char *global_block,
                               lm_err *err);

#endif
