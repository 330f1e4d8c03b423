/* args.c: a small table-driven option parser, so that every subcommand's --help lists each
 * option with its default and every mistake gets the same kind of message. */
#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_usage_error(const cli_cmd *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "limaml %s: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s\nTry 'limaml %s --help' for the options.\n", cmd->usage, cmd->name);
    return 2;
}

int cli_fail(const lm_err *err)
{
    fprintf(stderr, "limaml: %s\n", err->msg[0] ? err->msg : lm_strerror(err->code));
    return 1;
}

static const char *kind_metavar(int kind)
{
    switch (kind) {
    case CLI_U64: return "N";
    case CLI_F64: return "X";
    case CLI_SIZE: return "BYTES";
    case CLI_LIST: return "V...";
    default: return "S";
    }
}

void cli_print_help(const cli_cmd *cmd, const cli_opt *opts, FILE *f)
{
    fprintf(f, "usage: %s\n\n%s\n", cmd->usage, cmd->summary);
    if (cmd->details) fprintf(f, "\n%s\n", cmd->details);
    fprintf(f, "\noptions:\n");
    for (const cli_opt *o = opts; o && o->name; o++) {
        char left[96];
        if (o->kind == CLI_FLAG)
            snprintf(left, sizeof left, "--%s", o->name);
        else
            snprintf(left, sizeof left, "--%s %s", o->name, o->metavar ? o->metavar : kind_metavar(o->kind));
        fprintf(f, "  %-28s %s", left, o->help);
        if (o->required)
            fprintf(f, " (required)");
        else if (o->def)
            fprintf(f, " (default: %s)", o->def);
        fprintf(f, "\n");
    }
    fprintf(f, "  %-28s %s\n", "--help", "show this help and exit");
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s || *s == '-') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int parse_f64(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || errno || *end || v != v) return -1;
    *out = v;
    return 0;
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || errno || v < 0 || v != v) return -1;
    double mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024.0, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1024.0 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1024.0 * 1024 * 1024, end++;
    if (*end == 'i') end++;
    if (*end == 'B') end++;
    if (*end) return -1;
    *out = (size_t)(v * mul);
    return 0;
}

static int set_value(const cli_cmd *cmd, const cli_opt *o, const char *v)
{
    switch (o->kind) {
    case CLI_STR: *(const char **)o->dst = v; return 0;
    case CLI_U64:
        if (parse_u64(v, o->dst))
            return cli_usage_error(cmd, "--%s: '%s' is not a non-negative integer", o->name, v);
        return 0;
    case CLI_F64:
        if (parse_f64(v, o->dst)) return cli_usage_error(cmd, "--%s: '%s' is not a number", o->name, v);
        return 0;
    case CLI_SIZE:
        if (parse_size(v, o->dst))
            return cli_usage_error(cmd, "--%s: '%s' is not a size (e.g. 256M)", o->name, v);
        return 0;
    }
    return 0;
}

/* A numeric option's default that is not a number ("the model's") is only shown in --help;
 * the caller initializes the variable itself. */
static int default_is_text(const cli_opt *o)
{
    uint64_t u;
    double d;
    size_t z;
    switch (o->kind) {
    case CLI_U64: return parse_u64(o->def, &u) != 0;
    case CLI_F64: return parse_f64(o->def, &d) != 0;
    case CLI_SIZE: return parse_size(o->def, &z) != 0;
    default: return 0;
    }
}

static int parse_args(const cli_cmd *cmd, cli_opt *opts, int argc, char **argv, cli_list *pos)
{
    int seen[128] = {0};
    int nopts = 0;
    for (cli_opt *o = opts; o && o->name; o++, nopts++) {
        if (nopts >= 128) return cli_usage_error(cmd, "internal: too many options");
        if (o->kind == CLI_FLAG)
            *(int *)o->dst = 0;
        else if (o->kind == CLI_LIST)
            *(cli_list *)o->dst = (cli_list){0};
        else if (o->def && !default_is_text(o) && set_value(cmd, o, o->def))
            return 2;
        else if (!o->def && o->kind == CLI_STR)
            *(const char **)o->dst = NULL;
    }
    if (pos) *pos = (cli_list){0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_print_help(cmd, opts, stdout);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            if (pos) {
                const char **v = realloc(pos->v, (pos->n + 1) * sizeof *v);
                if (!v) return cli_usage_error(cmd, "out of memory");
                pos->v = v;
                pos->v[pos->n++] = a;
                continue;
            }
            return cli_usage_error(cmd, "unexpected argument '%s'", a);
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int k = -1;
        for (int j = 0; j < nopts; j++)
            if (strlen(opts[j].name) == nlen && !strncmp(opts[j].name, name, nlen)) k = j;
        if (k < 0) return cli_usage_error(cmd, "unknown option '--%.*s'", (int)nlen, name);
        cli_opt *o = &opts[k];
        seen[k] = 1;
        if (o->kind == CLI_FLAG) {
            if (eq) return cli_usage_error(cmd, "--%s takes no value", o->name);
            *(int *)o->dst = 1;
            continue;
        }
        if (o->kind == CLI_LIST) {
            cli_list *l = o->dst;
            int got = 0;
            if (eq) {
                const char **v = realloc(l->v, (l->n + 1) * sizeof *v);
                if (!v) return cli_usage_error(cmd, "out of memory");
                l->v = v;
                l->v[l->n++] = eq + 1;
                got = 1;
            }
            while (!eq && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
                const char **v = realloc(l->v, (l->n + 1) * sizeof *v);
                if (!v) return cli_usage_error(cmd, "out of memory");
                l->v = v;
                l->v[l->n++] = argv[++i];
                got = 1;
            }
            if (!got) return cli_usage_error(cmd, "--%s needs at least one value", o->name);
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v) return cli_usage_error(cmd, "--%s needs a value", o->name);
        if (set_value(cmd, o, v)) return 2;
    }
    for (int j = 0; j < nopts; j++)
        if (opts[j].required && !seen[j])
            return cli_usage_error(cmd, "missing required option --%s", opts[j].name);
    return 0;
}

/* On --help or a usage error the caller returns at once: the lists gathered so far (positional
 * words, list options) are freed here, so no path leaks them. */
int cli_parse(const cli_cmd *cmd, cli_opt *opts, int argc, char **argv, cli_list *pos)
{
    int rc = parse_args(cmd, opts, argc, argv, pos);
    if (rc == 0) return 0;
    if (pos) free(pos->v), *pos = (cli_list){0};
    for (cli_opt *o = opts; o && o->name; o++)
        if (o->kind == CLI_LIST) free(((cli_list *)o->dst)->v), *(cli_list *)o->dst = (cli_list){0};
    return rc;
}
