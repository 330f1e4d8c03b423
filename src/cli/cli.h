/* cli.h: the command-line front end. Only src/cli parses arguments or prints. */
#ifndef LM_CLI_H
#define LM_CLI_H

#include "limaml.h"

#include <stddef.h>
#include <stdint.h>

/* Option kinds. */
enum {
    CLI_STR,  /* const char *: one value */
    CLI_U64,  /* uint64_t */
    CLI_F64,  /* double */
    CLI_FLAG, /* int set to 1, takes no value */
    CLI_LIST, /* cli_list: one or more values, up to the next option */
    CLI_SIZE, /* size_t in bytes, with an optional K, M or G suffix */
};

typedef struct cli_list {
    const char **v;
    size_t n;
} cli_list;

/* One option: --name VALUE. `def` is the default as shown in --help, NULL for none; options
 * marked required must be given. */
typedef struct cli_opt {
    const char *name;
    int kind;
    void *dst;
    const char *metavar;
    const char *def;
    int required;
    const char *help;
} cli_opt;

typedef struct cli_cmd {
    const char *name;    /* "prepare" */
    const char *usage;   /* "limaml prepare --schema S --in FILE... --out DIR [options]" */
    const char *summary; /* one line for limaml --help */
    const char *details; /* paragraphs printed after the usage, or NULL */
} cli_cmd;

/* Parse argv[0..argc) (argv[0] is the first word after the subcommand's name) into the
 * options' destinations, after storing each default. Returns 0 to go on, 1 when --help was
 * printed (exit 0), 2 on a usage error (message and usage line printed on stderr). Extra
 * positional words are errors unless `pos` is given, which then receives them. */
int cli_parse(const cli_cmd *cmd, cli_opt *opts, int argc, char **argv, cli_list *pos);
void cli_print_help(const cli_cmd *cmd, const cli_opt *opts, FILE *f);
/* Print "limaml CMD: message" and the usage line to stderr; returns 2. */
int cli_usage_error(const cli_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print an lm_err to stderr as "limaml: message"; returns 1. */
int cli_fail(const lm_err *err);

/* Subcommands: each returns the process exit status. */
int cmd_prepare(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int bench_train(int argc, char **argv); /* limaml bench train */
int cmd_dataset(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_adapt(int argc, char **argv);
int cmd_ensemble(int argc, char **argv);
int cmd_experiment(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_store(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_score(int argc, char **argv);
int bench_serve(int argc, char **argv); /* limaml bench serve */
int bench_embed(int argc, char **argv); /* limaml bench embed */

#endif
