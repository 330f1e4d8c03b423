/* main.c: `limaml SUBCOMMAND [options]`. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} subcmd;

static const subcmd cmds[] = {
    {"synth", cmd_synth, "write a synthetic interaction log and its schema"},
    {"prepare", cmd_prepare, "turn interaction logs (or MovieLens-100K) into a task dataset"},
    {"dataset", cmd_dataset, "inspect a prepared dataset (info, verify)"},
    {"train", cmd_train, "train a model: limaml, maml, plain or widedeep"},
    {"eval", cmd_eval, "score a model on the test part, with or without task adaptation"},
    {"ensemble", cmd_ensemble, "pack models trained apart into one ensemble model (mean of logits)"},
    {"adapt", cmd_adapt, "adapt a model to one task and print its meta embedding"},
    {"embed", cmd_embed, "write every task's meta embedding to the feature store (Algorithm 2b)"},
    {"store", cmd_store, "inspect and clean a feature store (ls, get, gc, verify)"},
    {"serve", cmd_serve, "serve scores over HTTP with the stored meta embeddings"},
    {"replay", cmd_replay, "send a dataset's held-out part to a running server; served AUC and latency"},
    {"score", cmd_score, "score a file of requests offline, as the server would"},
    {"experiment", cmd_experiment, "run the paper's Tables 3 and 4 under PROTOCOL.md; write a report"},
    {"bench", cmd_bench, "measure throughput (bench prepare)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: limaml SUBCOMMAND [options]\n\n"
               "Personalization of deep recommender models by meta-learning (LiMAML).\n\n"
               "subcommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\n'limaml SUBCOMMAND --help' lists a subcommand's options and defaults.\n"
               "'limaml --version' prints the version.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("limaml %s\n", LM_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "limaml: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
