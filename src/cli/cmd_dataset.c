/* cmd_dataset.c: `limaml dataset info|verify DIR`. */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_cmd cmd = {
    "dataset",
    "limaml dataset info|verify DIR [--json]",
    "Inspect a dataset made by `limaml prepare`: `info` prints its size, features and splits;\n"
    "`verify` also checks the checksum of every byte (exit status 1 when corrupt).",
    NULL,
};

int cmd_dataset(int argc, char **argv)
{
    int json;
    cli_opt opts[] = {
        {"json", CLI_FLAG, &json, NULL, NULL, 0, "print the dataset's prepare summary as JSON"},
        {0},
    };
    cli_list pos;
    int pr = cli_parse(&cmd, opts, argc, argv, &pos);
    if (pr) return pr == 1 ? 0 : 2;
    if (pos.n != 2 || (strcmp(pos.v[0], "info") && strcmp(pos.v[0], "verify"))) {
        free(pos.v);
        return cli_usage_error(&cmd, "expected 'info DIR' or 'verify DIR'");
    }
    int verify = !strcmp(pos.v[0], "verify");
    const char *dir = pos.v[1];
    free(pos.v);
    lm_err err = {0};
    lm_dataset *ds;
    if (lm_dataset_open(&ds, dir, verify ? LM_DATASET_VERIFY : 0, &err)) return cli_fail(&err);
    if (json) {
        size_t n;
        const char *info = lm_dataset_info_json(ds, &n);
        fwrite(info, 1, n, stdout);
        printf("\n");
    } else {
        uint64_t split[LM_SPLIT_COUNT] = {0}, nnew = 0, lt25 = 0;
        for (uint64_t t = 0; t < lm_dataset_ntasks(ds); t++) {
            const lm_task *k = lm_dataset_task(ds, t);
            for (int s = 0; s < LM_SPLIT_COUNT; s++) split[s] += k->nsplit[s];
            nnew += k->is_new;
            lt25 += k->n < 25;
        }
        printf("dataset %s: %llu tasks (%llu new, %llu with fewer than 25 examples), %llu examples\n", dir,
               (unsigned long long)lm_dataset_ntasks(ds), (unsigned long long)nnew, (unsigned long long)lt25,
               (unsigned long long)lm_dataset_nrows(ds));
        printf("splits: support %llu, query %llu, val %llu, test %llu\n", (unsigned long long)split[0],
               (unsigned long long)split[1], (unsigned long long)split[2], (unsigned long long)split[3]);
        printf("features: %u meta, %u dense, %u categorical\n", lm_dataset_nmeta(ds), lm_dataset_ndense(ds),
               lm_dataset_ncat(ds));
        if (verify) printf("checksum: ok\n");
    }
    lm_dataset_close(ds);
    return 0;
}
