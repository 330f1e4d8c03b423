/* cmd_ensemble.c: `limaml ensemble`: pack trained models into one ensemble model file. */
#include "cli/cli.h"
#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>

int cmd_ensemble(int argc, char **argv)
{
    static const cli_cmd cmd = {
        "ensemble",
        "limaml ensemble --out MODEL M1 M2 [M3 ...]",
        "Pack models trained apart (e.g. with other seeds) into one ensemble model file.",
        "The members must share the algorithm, the network architecture and options and the schema.\n"
        "The ensemble scores a row with the mean of its members' logits, each member adapted and\n"
        "embedded on its own; its meta embedding is the members' end to end (members x E floats),\n"
        "so `limaml embed` writes it to the store as one vector and `limaml serve` splits it again.\n"
        "Every command that takes a model takes an ensemble but `limaml bench embed` (docs/META.md\n"
        "\"Ensembles\"; docs/EMBED.md and docs/SERVE.md on embedding and serving one).",
    };
    const char *out;
    cli_list in = {0};
    cli_opt opts[] = {
        {"out", CLI_STR, &out, "MODEL", NULL, 1, "the ensemble model file to write"},
        {0},
    };
    int pr = cli_parse(&cmd, opts, argc, argv, &in);
    if (pr) {
        free(in.v);
        return pr == 1 ? 0 : 2;
    }
    if (in.n < 2) {
        free(in.v);
        return cli_usage_error(&cmd, "give at least 2 member model files, not %zu", in.n);
    }
    lm_err err = {0};
    lm_model **mem = calloc(in.n, sizeof *mem), *e = NULL;
    int rc = mem ? LM_OK : lm_err_set(&err, LM_ENOMEM, "out of memory");
    size_t loaded = 0;
    for (; !rc && loaded < in.n; loaded++)
        if ((rc = lm_model_load(&mem[loaded], in.v[loaded], &err))) break;
    if (!rc) {
        for (size_t i = 0; !rc && i < in.n; i++)
            if (lm_model_nmembers(mem[i]) > 1)
                rc = lm_err_set(&err, LM_EINVAL, "%s is already an ensemble; give its members instead",
                                in.v[i]);
    }
    if (!rc && (rc = lm_model_ensemble(&e, mem, in.n, &err)) == LM_OK) loaded = 0; /* e owns them */
    if (!rc) rc = lm_model_save(e, out, &err);
    if (!rc)
        printf("%s: an ensemble of %zu %s models, meta embedding %zu floats\n", out, in.n,
               lm_train_algo_name(lm_model_algo(e)), lm_model_emb_dim(e));
    lm_model_free(e);
    for (size_t i = 0; i < loaded && mem; i++) lm_model_free(mem[i]);
    free(mem);
    free(in.v);
    return rc ? cli_fail(&err) : 0;
}
