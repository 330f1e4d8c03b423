/* experiment_md.c: report.md, the experiment's tables and findings as Markdown. The same
 * content as report.html (experiment_html.c) without the plots, so it reads in a terminal or
 * a code review. */
#include "eval/experiment.h"

#include "core/core.h"

#include <math.h>
#include <string.h>

static void pm(lm_xp_buf *b, lm_xp_stat s, int digits)
{
    if (isnan(s.mean))
        lm_xp_printf(b, "n/a");
    else
        lm_xp_printf(b, "%.*f ± %.*f", digits, s.mean, digits, s.std);
}

static void table_md(lm_xp_buf *b, const lm_xp *x, int table)
{
    lm_xp_printf(
        b, "| Algorithm | Adapted | Test AUC | < 25 | >= 25 | Warm | New | Log loss | Gain %% | Train s | "
           "vs floor |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < x->nrows_out; i++) {
        const lm_xp_row *r = &x->row[i];
        if (r->table != table) continue;
        int arm = r->kind == LM_XP_ROW_ARM;
        const char *adapted = !arm ? "—" : r->adapt ? "yes" : "no";
        lm_xp_printf(b, "| %s%s | %s", r->label, r->option_row ? " *(option)*" : "", adapted);
        if (arm && r->adapt) lm_xp_printf(b, " (k %u, α %.3g)", x->arm[r->arm].k, x->arm[r->arm].alpha);
        lm_xp_printf(b, " | **");
        pm(b, r->auc, 4);
        lm_xp_printf(b, "** | ");
        pm(b, r->lt25, 4);
        lm_xp_printf(b, " | ");
        pm(b, r->ge25, 4);
        lm_xp_printf(b, " | ");
        pm(b, r->warm, 4);
        lm_xp_printf(b, " | ");
        pm(b, r->nw, 4);
        lm_xp_printf(b, " | ");
        pm(b, r->logloss, 4);
        lm_xp_printf(b, " | ");
        pm(b, r->gain, 2);
        lm_xp_printf(b, " | ");
        if (arm)
            lm_xp_printf(b, "%.1f", r->train_secs.mean);
        else
            lm_xp_printf(b, "0");
        lm_xp_printf(b, " | %s |\n", !arm ? "the floor" : r->below_floor ? "**below the floor**" : "above");
    }
}

/* A table of points (5, 9, 10, 12, 13, 14, fresh): the swept value, the test figures, and the
 * table's own columns (lm_xp_point_extras). */
static void point_table_md(lm_xp_buf *b, const lm_xp *x, int table)
{
    char head[LM_XP_MAX_EXTRA][64], cell[LM_XP_MAX_EXTRA][64];
    size_t ne = 0;
    int first = 1;
    for (size_t i = 0; i < x->nrows_out; i++) {
        const lm_xp_row *r = &x->row[i];
        if (r->kind != LM_XP_ROW_POINT || r->table != table) continue;
        const lm_xp_point *p = &x->pt[r->point];
        ne = lm_xp_point_extras(x, r, head, cell);
        if (first) {
            lm_xp_printf(b, "| Row | %s | Adapted | Test AUC | < 25 | >= 25 | New | Log loss | Gain %% |",
                         p->param);
            for (size_t e = 0; e < ne; e++) lm_xp_printf(b, " %s |", head[e]);
            lm_xp_printf(b, "\n|---|---|---|---|---|---|---|---|---|");
            for (size_t e = 0; e < ne; e++) lm_xp_printf(b, "---|");
            lm_xp_printf(b, "\n");
            first = 0;
        }
        lm_xp_printf(b, "| %s%s%s%s | %s%s%s | ", r->label, p->chosen ? " *(chosen)*" : "",
                     p->option_row ? " *(option)*" : "", r->below_floor ? " **below the floor**" : "",
                     p->chosen ? "**" : "", p->value_str, p->chosen ? "**" : "");
        if (p->adapt)
            lm_xp_printf(b, "k %u, α %.3g", p->k, p->alpha);
        else
            lm_xp_printf(b, "no");
        lm_xp_printf(b, " | **");
        pm(b, r->auc, 4);
        lm_xp_printf(b, "** | ");
        pm(b, r->lt25, 4);
        lm_xp_printf(b, " | ");
        pm(b, r->ge25, 4);
        lm_xp_printf(b, " | ");
        pm(b, r->nw, 4);
        lm_xp_printf(b, " | ");
        pm(b, r->logloss, 4);
        lm_xp_printf(b, " | ");
        pm(b, r->gain, 2);
        lm_xp_printf(b, " |");
        for (size_t e = 0; e < ne; e++) lm_xp_printf(b, " %s |", cell[e]);
        lm_xp_printf(b, "\n");
    }
}

static int has_points(const lm_xp *x, int table)
{
    for (size_t i = 0; i < x->npt; i++)
        if (x->pt[i].table == table) return 1;
    return 0;
}

static void grid_md(lm_xp_buf *b, const lm_xp *x)
{
    lm_xp_printf(
        b,
        "| Algorithm | Training grid, lr / inner task lr: warm val AUC (best epoch / epochs run) | Chosen | "
        "Adaptation chosen | Warm val AUC adapted | Without |\n|---|---|---|---|---|---|\n");
    for (int i = 0; i < LM_XP_NARMS; i++) {
        const lm_xp_arm *a = &x->arm[i];
        if (!a->enabled) continue;
        lm_xp_printf(b, "| %s | ", a->label);
        for (size_t j = 0; j < a->ngrid; j++) {
            int chosen = a->grid_lr[j] == a->lr && a->grid_task_lr[j] == a->task_lr;
            lm_xp_printf(b, "%s%s%g / %g: %.4f (%u/%u)%s", j ? "; " : "", chosen ? "**" : "", a->grid_lr[j],
                         a->grid_task_lr[j], a->grid_val[j], a->grid_best_epoch[j], a->grid_epochs[j],
                         chosen ? "**" : "");
        }
        lm_xp_printf(b, " | lr %g, task lr %g | ", a->lr, a->task_lr);
        double best = NAN;
        for (size_t j = 0; j < a->nadapt; j++)
            if (a->adapt_k[j] == a->k && a->adapt_alpha[j] == a->alpha) best = a->adapt_val[j];
        if (a->members)
            lm_xp_printf(b,
                         "the item-rates row's, %u members (seeds s, %u + s, ...), each %s; adapted k %u, α "
                         "%.3g%s | — | — |\n",
                         a->members, x->o->seeds,
                         a->data == LM_XP_DATA_REFIT ? "refit for its own best epoch"
                                                     : "early-stopped on its own",
                         a->k, a->alpha, a->data == LM_XP_DATA_REFIT ? " on train + val" : "");
        else if (a->data == LM_XP_DATA_REFIT)
            lm_xp_printf(
                b,
                "the row above's, and its best epoch per seed; adapted k %u, α %.3g on train + val | "
                "— | — |\n",
                a->k, a->alpha);
        else if (a->nadapt)
            lm_xp_printf(b, "k %u, α %.3g | %.4f | %.4f |\n", a->k, a->alpha, best, a->noadapt_val);
        else
            lm_xp_printf(b, "not adapted (reported without) | — | %.4f |\n", a->noadapt_val);
    }
    lm_xp_printf(
        b, "\nAdaptation search (warm validation AUC after k steps at rate α on the train part; the chosen "
           "point in bold; points past the grid's edge, tried because the best lay on it, marked +):\n\n");
    for (int i = 0; i < LM_XP_NARMS; i++) {
        const lm_xp_arm *a = &x->arm[i];
        if (!a->enabled || !a->nadapt) continue;
        lm_xp_printf(b, "- %s: ", a->label);
        for (size_t j = 0; j < a->nadapt; j++) {
            int chosen = a->adapt_k[j] == a->k && a->adapt_alpha[j] == a->alpha;
            lm_xp_printf(b, "%s%s%sk %u α %.3g: %.4f%s", j ? "; " : "", a->adapt_extended[j] ? "+" : "",
                         chosen ? "**" : "", a->adapt_k[j], a->adapt_alpha[j], a->adapt_val[j],
                         chosen ? "**" : "");
        }
        lm_xp_printf(b, "\n");
    }
}

/* The figures of the independent PyTorch implementation of the same protocol (3 seeds), as
 * given in the issue; only meaningful on MovieLens. */
static void reference_md(lm_xp_buf *b, const lm_xp *x)
{
    const lm_xp_row *r;
    struct {
        const char *what;
        int arm, adapt;
        const char *theirs;
    } ref[] = {
        {"Plain, no adaptation", LM_XP_PLAIN, 0, "0.702"},
        {"Plain, adapted", LM_XP_PLAIN, 1, "0.757"},
        {"LiMAML, no adaptation", LM_XP_LIMAML, 0, "0.646"},
        {"LiMAML, adapted", LM_XP_LIMAML, 1, "0.731"},
        {"LiMAML + support loss (w 3), adapted", LM_XP_LIMAML_SW, 1, "—"},
        {"LiMAML + support loss (w 3) + the meta embedding on the logit, adapted", LM_XP_LIMAML_SWL, 1,
         "0.759 ± 0.004 (a learned linear map onto the logit; here E[0], docs/META.md)"},
        {"Plain + item rates, adapted (whole network)", LM_XP_PLAIN_RATES, 1, "—"},
        {"LiMAML + support loss + E[0] on the logit + item rates, adapted", LM_XP_LIMAML_RATES, 1,
         "tree model (LightGBM, tuned on validation, user and item history rates): 0.764"},
        {"The same refit on train + validation, adapted on train + validation", LM_XP_LIMAML_REFIT, 1,
         "tree model refit on train + warm validation: 0.772"},
        {"LiMAML + support loss + E[0] on the logit + item rates, an ensemble, adapted",
         LM_XP_LIMAML_RATES_ENS, 1,
         "tree model: 0.764 (measured here: 0.7618, as a seed ensemble of 3: 0.7622)"},
        {"The same refit, an ensemble, adapted on train + validation", LM_XP_LIMAML_REFIT_ENS, 1,
         "tree model refit: 0.772 (measured here: 0.7734, as a seed ensemble of 3: 0.7738)"},
    };
    lm_xp_printf(b, "| Row | This run | Independent implementation |\n|---|---|---|\n");
    lm_xp_printf(b, "| Count floor (user + item rate) | %.4f | 0.750 (warm 0.745, new 0.758) |\n",
                 x->floor_test.auc);
    lm_xp_printf(b, "| Count floor, warm user's train part only | %.4f | 0.737 |\n", x->floor_train_test.auc);
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
        r = NULL;
        for (size_t j = 0; j < x->nrows_out; j++)
            if (x->row[j].table == 3 && x->row[j].kind == LM_XP_ROW_ARM && x->row[j].arm == ref[i].arm &&
                x->row[j].adapt == ref[i].adapt)
                r = &x->row[j];
        if (!r) continue;
        lm_xp_printf(b, "| %s | ", ref[i].what);
        pm(b, r->auc, 4);
        lm_xp_printf(b, " | %s |\n", ref[i].theirs);
    }
}

int lm_xp_write_md(const lm_xp *x, const char *path, lm_err *err)
{
    const lm_experiment_opts *o = x->o;
    lm_xp_buf b = {0};
    lm_xp_printf(&b, "# limaml experiment: %s\n\n", x->data_name);
    if (o->command_line) lm_xp_printf(&b, "`%s`\n\n", o->command_line);
    lm_xp_printf(
        &b,
        "%u seed%s (1..%u), %d threads; the whole run took %.0f s (%.0f CPU seconds), of which %.0f s "
        "choosing hyperparameters on seed 1 and %.0f s on the tables beyond 3 and 4. Data: %llu tasks (%llu "
        "new, held out of training), %llu "
        "examples (support %llu, query %llu, validation %llu, test %llu).\n\n",
        o->seeds, o->seeds == 1 ? "" : "s", o->seeds, x->threads, x->seconds_total, x->cpu_total,
        x->seconds_grid, x->seconds_sweeps, (unsigned long long)x->ntasks, (unsigned long long)x->nnew,
        (unsigned long long)x->nrows, (unsigned long long)x->split_rows[LM_SPLIT_SUPPORT],
        (unsigned long long)x->split_rows[LM_SPLIT_QUERY], (unsigned long long)x->split_rows[LM_SPLIT_VAL],
        (unsigned long long)x->split_rows[LM_SPLIT_TEST]);
    lm_xp_printf(
        &b, "Every figure is a test AUC pooled over the test parts of all tasks (or of a slice: tasks with "
            "fewer than 25 test examples, with 25 or more, warm tasks, new tasks), as mean ± standard "
            "deviation over the seeds. *Adapted*: k SGD steps at task learning rate α on each task's "
            "validation part before scoring its test part (LiMAML: the meta block only, the meta embedding "
            "being the adapted block's output on the task's latest validation example; plain and MAML: "
            "the whole network). *Gain*: relative AUC gain over the baseline of the same seed. A learned "
            "row whose mean AUC is below the count floor is marked **below the floor**.\n\n");
    if (o->tables & LM_XP_TABLE3) {
        lm_xp_printf(&b,
                     "## Table 3 analog: plain, entire-network MAML and LiMAML\n\nGain over plain training "
                     "without adaptation. Rows marked *(option)* are improvements beyond the paper's "
                     "algorithm, reported on their own.\n\n");
        table_md(&b, x, 3);
        lm_xp_printf(&b, "\n");
    }
    if (o->tables & LM_XP_TABLE4) {
        lm_xp_printf(
            &b, "## Table 4 analog: LiMAML against a task-id embedding\n\nGain over wide-and-deep with a "
                "task-id embedding (reported without adaptation, as in the paper: its id embedding is the "
                "personal part; a new task gets the shared default row). Both LiMAML rows are adapted.\n\n");
        table_md(&b, x, 4);
        lm_xp_printf(&b, "\n");
    }
    if (x->npt || x->nskipped) {
        const lm_xp_arm *l = &x->arm[LM_XP_LIMAML];
        lm_xp_printf(
            &b,
            "## The tables around the chosen LiMAML configuration\n\n"
            "Each table below moves one thing away from the LiMAML configuration chosen on warm validation "
            "for Table 3 (outer lr %g, inner task lr %g, n = 1 inner step, no dropout; adapted at test with "
            "k "
            "%u steps at α %.3g, the embedding from the latest example, fresh) and keeps the rest. These are "
            "sensitivity figures on test, as the paper's appendix reports them; nothing is chosen from them. "
            "Every gain is over the same seed's plain model without adaptation (Table 3's base). Rows of "
            "Table 3's configuration reuse its models and figures (marked *chosen*).\n\n",
            l->lr, l->task_lr, l->k, l->alpha);
        for (size_t i = 0; i < x->nskipped; i++) lm_xp_printf(&b, "- %s.\n", x->skipped[i]);
        if (x->nskipped) lm_xp_printf(&b, "\n");
        for (size_t t = 0; t < 7; t++) {
            int tb = LM_XP_POINT_TABLES[t];
            if (!has_points(x, tb)) continue;
            lm_xp_printf(&b, "### %s\n\n%s\n\n", lm_xp_table_title(tb), lm_xp_table_about(tb));
            if (tb == 5 && x->genre_tasks)
                lm_xp_printf(
                    &b,
                    "The (user, genre) dataset: %llu tasks (%llu new). Adaptation chosen there: plain k "
                    "%u, α %.3g; LiMAML k %u, α %.3g.\n\n",
                    (unsigned long long)x->genre_tasks, (unsigned long long)x->genre_new, x->genre_arm[0].k,
                    x->genre_arm[0].alpha, x->genre_arm[1].k, x->genre_arm[1].alpha);
            point_table_md(&b, x, tb);
            lm_xp_printf(&b, "\n");
        }
    }
    lm_xp_printf(&b, "## The paper's patterns on these figures\n\n");
    for (size_t i = 0; i < x->npat; i++)
        lm_xp_printf(&b, "- %s: %s.\n", x->pat[i].held ? "**holds**" : "**does not hold**", x->pat[i].text);
    lm_xp_printf(&b, "\n");
    if (o->source == LM_XP_SOURCE_MOVIELENS && (o->tables & LM_XP_TABLE3)) {
        lm_xp_printf(&b,
                     "## Against an independent implementation\n\nAn independent PyTorch implementation of "
                     "exactly this protocol (3 seeds) measured the pooled test AUCs on the right.\n\n");
        reference_md(&b, x);
        lm_xp_printf(&b, "\n");
    }
    lm_xp_printf(
        &b,
        "## Hyperparameters: what was chosen and how\n\n"
        "Fixed for every algorithm: global block `mlp:64,32`; meta block `mlp:32,16` (the meta embedding "
        "E = 16; `id:16` for wide-and-deep and the id-embedding LiMAML); %u tasks per outer update; Adam "
        "with gradient clipping at 1.0 and linear decay; for LiMAML and MAML one inner SGD step on the "
        "support set (task learning rate %g unless chosen below). Training runs at most %u epochs and "
        "keeps the epoch of best validation AUC, stopping after %u epochs without improvement "
        "(validation: warm tasks' validation parts, after adapting on their train parts for LiMAML and "
        "MAML).\n\n"
        "Chosen on seed 1, on warm tasks' validation parts only (a test part is never looked at): first "
        "the outer learning rate (and, for LiMAML with an MLP meta block, whose fast engine makes it "
        "cheap, the inner task learning rate) by the best validation AUC training reached%s; then, for "
        "the chosen model, the adaptation steps k and task learning rate α by the pooled AUC on warm "
        "tasks' validation parts after adapting on their train parts, starting from a grid and going on "
        "past its edge (k doubled up to %u, α times or over 3) while the best point lies on it (the count "
        "floor scores %.4f there). The other seeds train with the chosen values.\n\n",
        32u, o->grid_task_lr[0], o->epochs, o->patience,
        o->slow_ngrid_lr < o->ngrid_lr ? " (MAML, wide-and-deep and the id-embedding LiMAML, which train "
                                         "on the per-task reference engine, 5 to 30 times slower, try only "
                                         "the first rate)"
                                       : "",
        o->max_k, x->floor_val.auc);
    grid_md(&b, x);
    lm_xp_printf(&b,
                 "\n## Training time\n\n| Algorithm | Seconds per training run (mean ± std) | Best epoch per "
                 "seed |\n|---|---|---|\n");
    for (int i = 0; i < LM_XP_NARMS; i++) {
        const lm_xp_arm *a = &x->arm[i];
        if (!a->enabled) continue;
        double s[LM_XP_MAX_SEEDS];
        for (uint32_t j = 0; j < a->nseeds; j++) s[j] = a->rep[j].seconds;
        lm_xp_stat st = lm_xp_stat_of(s, a->nseeds);
        lm_xp_printf(&b, "| %s | %.1f ± %.1f | ", a->label, st.mean, st.std);
        for (uint32_t j = 0; j < a->nseeds; j++)
            lm_xp_printf(&b, "%s%u", j ? ", " : "", a->rep[j].best_epoch);
        lm_xp_printf(&b, " |\n");
    }
    lm_xp_printf(
        &b,
        "\n## Definitions and notes\n\n"
        "- Count floor: score = (task positives + a g) / (task count + a) + (item positives + a g) / (item "
        "count + a), a = 5, g = the positive rate of the training pool (warm tasks' train parts). The item "
        "is the dataset's first categorical column (MovieLens: the movie id) and its counts come from the "
        "training pool; the task's counts from its rows before the test part (warm: train and validation "
        "parts; new: validation part). Scored by the same AUC and slice code as the models; its log loss "
        "takes the mean of the two rates as the probability.\n"
        "- Slices follow the task's number of test examples (< 25, >= 25) and whether it is warm or new.\n"
        "- Standard deviations use n - 1; the count floor has none (no seed).\n"
        "- Per-epoch logs of every training run are in `logs/` (the grid's in `logs/grid/`); "
        "`results.json` holds one object per table row and `run.json` the grids and patterns.\n"
        "- The row \"+ E[0] on the logit\" is the independent implementation's second change (the meta "
        "embedding also shifts the output logit; `limaml train --emb-logit`).\n"
        "- An \"ensemble of M\" row averages the logits of M networks of its single row's configuration "
        "trained with other seeds (reported seed s: seeds s, S + s, 2S + s, ...), each adapted and embedded "
        "on "
        "its own (`limaml ensemble`, docs/META.md \"Ensembles\"); it is servable (the store holds the "
        "members' embeddings end to end) at M times the scoring and embedding cost. Its training time is the "
        "members' summed; the best epochs listed are its first member's. The tree model it is compared with "
        "was averaged over seeds the same way (tools/tree_baseline.py --ensemble 3).\n");
    return lm_xp_buf_write(&b, path, err);
}
