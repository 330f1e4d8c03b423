/* experiment_html.c: report.html, one self-contained page: inline CSS, the tables, and inline
 * SVG line plots of seed 1's training loss and validation AUC per epoch for each algorithm. It
 * fetches nothing (no scripts, fonts or images from anywhere), so it opens offline and can be
 * attached to a review as one file. */
#include "eval/experiment.h"

#include "core/core.h"

#include <math.h>
#include <string.h>

static const char *COLORS[LM_XP_NARMS] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#17becf",
                                          "#ff7f0e", "#8c564b", "#aec7e8", "#7f7f7f", "#bcbd22",
                                          "#e377c2", "#98df8a", "#ff9896"};

static void esc(lm_xp_buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': lm_xp_printf(b, "&lt;"); break;
        case '>': lm_xp_printf(b, "&gt;"); break;
        case '&': lm_xp_printf(b, "&amp;"); break;
        case '"': lm_xp_printf(b, "&quot;"); break;
        default: lm_xp_printf(b, "%c", *s);
        }
    }
}

static void cell(lm_xp_buf *b, lm_xp_stat s, int digits, const char *cls)
{
    lm_xp_printf(b, "<td%s%s%s>", cls ? " class=\"" : "", cls ? cls : "", cls ? "\"" : "");
    if (isnan(s.mean))
        lm_xp_printf(b, "n/a</td>");
    else
        lm_xp_printf(b, "%.*f <span class=\"sd\">± %.*f</span></td>", digits, s.mean, digits, s.std);
}

static void table_html(lm_xp_buf *b, const lm_xp *x, int table)
{
    lm_xp_printf(
        b,
        "<div class=\"wide\"><table><thead><tr><th>Algorithm</th><th>Adapted</th><th>Test AUC</th><th>&lt; "
        "25</th>"
        "<th>&ge; 25</th><th>Warm</th><th>New</th><th>Log loss</th><th>Gain %%</th><th>Train s</th>"
        "</tr></thead><tbody>\n");
    for (size_t i = 0; i < x->nrows_out; i++) {
        const lm_xp_row *r = &x->row[i];
        if (r->table != table) continue;
        int arm = r->kind == LM_XP_ROW_ARM;
        lm_xp_printf(b, "<tr class=\"%s\"><td>", !arm ? "floor" : r->below_floor ? "below" : "");
        if (arm) lm_xp_printf(b, "<span class=\"dot\" style=\"background:%s\"></span>", COLORS[r->arm]);
        esc(b, r->label);
        if (r->option_row) lm_xp_printf(b, " <em>(option)</em>");
        if (r->below_floor) lm_xp_printf(b, " <span class=\"tag\">below the floor</span>");
        lm_xp_printf(b, "</td><td>");
        if (!arm)
            lm_xp_printf(b, "&mdash;");
        else if (r->adapt)
            lm_xp_printf(b, "yes (k %u, &alpha; %.3g)", x->arm[r->arm].k, x->arm[r->arm].alpha);
        else
            lm_xp_printf(b, "no");
        lm_xp_printf(b, "</td>");
        cell(b, r->auc, 4, "main");
        cell(b, r->lt25, 4, NULL);
        cell(b, r->ge25, 4, NULL);
        cell(b, r->warm, 4, NULL);
        cell(b, r->nw, 4, NULL);
        cell(b, r->logloss, 4, NULL);
        cell(b, r->gain, 2, NULL);
        lm_xp_printf(b, "<td>%.1f</td></tr>\n", arm ? r->train_secs.mean : 0.0);
    }
    lm_xp_printf(b, "</tbody></table></div>\n");
}

/* A table of points: the swept value, the test figures and the table's own columns. */
static void point_table_html(lm_xp_buf *b, const lm_xp *x, int table)
{
    char head[LM_XP_MAX_EXTRA][64], ex[LM_XP_MAX_EXTRA][64];
    int first = 1;
    for (size_t i = 0; i < x->nrows_out; i++) {
        const lm_xp_row *r = &x->row[i];
        if (r->kind != LM_XP_ROW_POINT || r->table != table) continue;
        const lm_xp_point *p = &x->pt[r->point];
        size_t ne = lm_xp_point_extras(x, r, head, ex);
        if (first) {
            lm_xp_printf(b, "<div class=\"wide\"><table><thead><tr><th>Row</th><th>");
            esc(b, p->param);
            lm_xp_printf(b,
                         "</th><th>Adapted</th><th>Test AUC</th><th>&lt; 25</th><th>&ge; 25</th><th>New</th>"
                         "<th>Log loss</th><th>Gain %%</th>");
            for (size_t e = 0; e < ne; e++) {
                lm_xp_printf(b, "<th>");
                esc(b, head[e]);
                lm_xp_printf(b, "</th>");
            }
            lm_xp_printf(b, "</tr></thead><tbody>\n");
            first = 0;
        }
        lm_xp_printf(b, "<tr class=\"%s\"><td>", r->below_floor ? "below" : "");
        esc(b, r->label);
        if (p->chosen) lm_xp_printf(b, " <em>(chosen)</em>");
        if (p->option_row) lm_xp_printf(b, " <em>(option)</em>");
        if (r->below_floor) lm_xp_printf(b, " <span class=\"tag\">below the floor</span>");
        lm_xp_printf(b, "</td><td>");
        esc(b, p->value_str);
        if (p->adapt)
            lm_xp_printf(b, "</td><td>k %u, &alpha; %.3g</td>", p->k, p->alpha);
        else
            lm_xp_printf(b, "</td><td>no</td>");
        cell(b, r->auc, 4, "main");
        cell(b, r->lt25, 4, NULL);
        cell(b, r->ge25, 4, NULL);
        cell(b, r->nw, 4, NULL);
        cell(b, r->logloss, 4, NULL);
        cell(b, r->gain, 2, NULL);
        for (size_t e = 0; e < ne; e++) {
            lm_xp_printf(b, "<td>");
            esc(b, ex[e]);
            lm_xp_printf(b, "</td>");
        }
        lm_xp_printf(b, "</tr>\n");
    }
    if (!first) lm_xp_printf(b, "</tbody></table></div>\n");
}

/* ---- plots ---------------------------------------------------------------------------------- */

enum { PW = 560, PH = 340, ML = 60, MR = 16, MT = 34, MB = 46 };

/* A "nice" tick step near range/5: 1, 2 or 5 times a power of ten. */
static double tick_step(double range)
{
    double raw = range / 5, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

/* The plotted value: the validation AUC, or the training objective. With the support loss the
 * objective is L_q + w L_s, about 1 + w times the others' scale, which would flatten every other
 * line; it is plotted divided by 1 + w (and the legend says so). */
static double curve_at(const lm_xp_arm *a, int which, size_t e)
{
    if (which) return a->curve_val[e];
    return a->curve_loss[e] / (1 + a->support_weight);
}

/* One line per enabled algorithm: y = its loss (which = 0) or validation AUC (which = 1) per
 * epoch of seed 1. Axes, ticks, grid lines and a legend, all in SVG. */
static void plot(lm_xp_buf *b, const lm_xp *x, int which, const char *title, const char *ylabel)
{
    double lo = INFINITY, hi = -INFINITY;
    size_t maxep = 1;
    for (int i = 0; i < LM_XP_NARMS; i++) {
        const lm_xp_arm *a = &x->arm[i];
        if (!a->enabled) continue;
        if (a->ncurve > maxep) maxep = a->ncurve;
        for (size_t e = 0; e < a->ncurve; e++) {
            double v = curve_at(a, which, e);
            if (!isfinite(v)) continue;
            lo = fmin(lo, v), hi = fmax(hi, v);
        }
    }
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-6) lo -= 0.01, hi += 0.01;
    double pad = 0.05 * (hi - lo);
    lo -= pad, hi += pad;
    double step = tick_step(hi - lo);
    lo = floor(lo / step) * step, hi = ceil(hi / step) * step;
    double w = PW - ML - MR, h = PH - MT - MB;
    double x0 = 1, x1 = maxep > 1 ? (double)maxep : 2;
#define SX(e) (ML + ((e)-x0) / (x1 - x0) * w)
#define SY(v) (MT + (hi - (v)) / (hi - lo) * h)
    lm_xp_printf(b,
                 "<svg width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                 "role=\"img\" aria-label=\"",
                 PW, PH, PW, PH);
    esc(b, title);
    lm_xp_printf(b, "\"><rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>", PW, PH);
    lm_xp_printf(b, "<text x=\"%d\" y=\"20\" class=\"t\">", PW / 2);
    esc(b, title);
    lm_xp_printf(b, "</text>");
    for (double v = lo; v <= hi + step / 2; v += step) {
        double y = SY(v);
        lm_xp_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"g\"/>", ML, y, PW - MR, y);
        lm_xp_printf(b, "<text x=\"%d\" y=\"%.1f\" class=\"yl\">%.*f</text>", ML - 6, y + 4,
                     step < 0.01 ? 3 : 2, v);
    }
    size_t estep = maxep <= 10 ? 1 : maxep <= 20 ? 2 : 5;
    for (size_t e = 1; e <= (size_t)x1; e += estep) {
        double xx = SX((double)e);
        lm_xp_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"g\"/>", xx, MT, xx,
                     PH - MB);
        lm_xp_printf(b, "<text x=\"%.1f\" y=\"%d\" class=\"xl\">%zu</text>", xx, PH - MB + 16, e);
    }
    lm_xp_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" class=\"frame\"/>", ML, MT, w, h);
    lm_xp_printf(b, "<text x=\"%.0f\" y=\"%d\" class=\"xl\">epoch</text>", ML + w / 2, PH - 10);
    lm_xp_printf(b, "<text transform=\"translate(16 %.0f) rotate(-90)\" class=\"xl\">", MT + h / 2);
    esc(b, ylabel);
    lm_xp_printf(b, "</text>");
    for (int i = 0; i < LM_XP_NARMS; i++) {
        const lm_xp_arm *a = &x->arm[i];
        if (!a->enabled || !a->ncurve) continue;
        lm_xp_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", COLORS[i]);
        for (size_t e = 0; e < a->ncurve; e++) {
            double v = curve_at(a, which, e);
            if (isfinite(v)) lm_xp_printf(b, "%.1f,%.1f ", SX((double)(e + 1)), SY(v));
        }
        lm_xp_printf(b, "\"/>");
        for (size_t e = 0; e < a->ncurve; e++) {
            double v = curve_at(a, which, e);
            if (isfinite(v))
                lm_xp_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>",
                             SX((double)(e + 1)), SY(v), COLORS[i]);
        }
    }
#undef SX
#undef SY
    lm_xp_printf(b, "</svg>\n");
}

static void legend(lm_xp_buf *b, const lm_xp *x)
{
    lm_xp_printf(b, "<p class=\"legend\">");
    for (int i = 0; i < LM_XP_NARMS; i++) {
        const lm_xp_arm *a = &x->arm[i];
        if (!a->enabled || !a->ncurve) continue; /* an ensemble's members have their own logs */
        lm_xp_printf(b, "<span><span class=\"dot\" style=\"background:%s\"></span>", COLORS[i]);
        esc(b, a->label);
        lm_xp_printf(b, " (lr %g, best epoch %u%s)</span> ", a->lr, a->rep[0].best_epoch,
                     a->support_weight > 0 ? "; loss plotted / (1 + w)" : "");
    }
    lm_xp_printf(b, "</p>\n");
}

/* ---- the page ------------------------------------------------------------------------------- */

static const char *CSS =
    "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:2em "
    "auto;"
    "max-width:1320px;padding:0 1em;color:#222}"
    "h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
    ".wide{overflow-x:auto}table{border-collapse:collapse;margin:.6em 0;font-size:13px}"
    "th,td{border:1px solid #ddd;padding:.3em .45em;text-align:right;white-space:nowrap}"
    "th{background:#f4f4f4}td:first-child,th:first-child{text-align:left;white-space:normal;min-width:15em}"
    "td.main{font-weight:600}.sd{color:#777;font-weight:normal;font-size:.9em}tr.floor td{background:#fafaf0}"
    "tr.below td{background:#fff2f2}.tag{font-size:.8em;color:#b91c1c;white-space:nowrap}.held{color:#15803d;"
    "font-weight:600}.nothold{color:#b91c1c;font-weight:600}"
    ".dot{display:inline-block;width:.75em;height:.75em;border-radius:50%;margin-right:.4em;"
    "vertical-align:middle}"
    ".legend span{margin-right:1.2em;display:inline-block}"
    ".plots{display:flex;flex-wrap:wrap;gap:12px}"
    "svg .t{font:600 14px sans-serif;text-anchor:middle}svg .yl{font:11px sans-serif;text-anchor:end;"
    "fill:#444}"
    "svg .xl{font:11px sans-serif;text-anchor:middle;fill:#444}svg .g{stroke:#eee}"
    "svg .frame{fill:none;stroke:#999}code{background:#f4f4f4;padding:0 .25em}";

int lm_xp_write_html(const lm_xp *x, const char *path, lm_err *err)
{
    const lm_experiment_opts *o = x->o;
    lm_xp_buf b = {0};
    lm_xp_printf(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                     "<title>limaml experiment: ");
    esc(&b, x->data_name);
    lm_xp_printf(&b, "</title><style>%s</style></head><body>\n<h1>limaml experiment: ", CSS);
    esc(&b, x->data_name);
    lm_xp_printf(&b, "</h1>\n");
    if (o->command_line) {
        lm_xp_printf(&b, "<p><code>");
        esc(&b, o->command_line);
        lm_xp_printf(&b, "</code></p>\n");
    }
    lm_xp_printf(
        &b,
        "<p>%u seed%s, %d threads, %.0f s in all (%.0f CPU seconds; %.0f s choosing hyperparameters on seed "
        "1). %llu tasks "
        "(%llu new), %llu examples. Test AUC pooled over every task's test part, and by slice; mean "
        "<span class=\"sd\">± standard deviation</span> over the seeds. <em>Adapted</em>: k SGD steps at "
        "task learning rate &alpha; on the task's validation part (LiMAML: the meta block only). Rows "
        "shaded red score below the count floor.</p>\n",
        o->seeds, o->seeds == 1 ? "" : "s", x->threads, x->seconds_total, x->cpu_total, x->seconds_grid,
        (unsigned long long)x->ntasks, (unsigned long long)x->nnew, (unsigned long long)x->nrows);
    if (o->tables & LM_XP_TABLE3) {
        lm_xp_printf(&b, "<h2>Table 3 analog: plain, entire-network MAML and LiMAML</h2>\n<p>Gain over plain "
                         "training without adaptation, seed by seed.</p>\n");
        table_html(&b, x, 3);
    }
    if (o->tables & LM_XP_TABLE4) {
        lm_xp_printf(
            &b, "<h2>Table 4 analog: LiMAML against a task-id embedding</h2>\n<p>Gain over wide-and-deep "
                "with a task-id embedding (not adapted, as in the paper).</p>\n");
        table_html(&b, x, 4);
    }
    if (x->npt || x->nskipped) {
        const lm_xp_arm *l = &x->arm[LM_XP_LIMAML];
        lm_xp_printf(
            &b,
            "<h2>The tables around the chosen LiMAML configuration</h2>\n<p>One thing moved at a time "
            "from the configuration chosen on warm validation for Table 3 (outer lr %g, inner task lr "
            "%g, n = 1, no dropout; adapted with k %u at &alpha; %.3g, latest example, fresh). "
            "Sensitivity figures on test, as in the paper's appendix: nothing is chosen from them. Gains "
            "over the same seed's plain model without adaptation.</p>\n",
            l->lr, l->task_lr, l->k, l->alpha);
        for (size_t i = 0; i < x->nskipped; i++) {
            lm_xp_printf(&b, "<p><em>");
            esc(&b, x->skipped[i]);
            lm_xp_printf(&b, ".</em></p>\n");
        }
        for (size_t t = 0; t < 7; t++) {
            int tb = LM_XP_POINT_TABLES[t], any = 0;
            for (size_t i = 0; i < x->npt; i++) any |= x->pt[i].table == tb;
            if (!any) continue;
            lm_xp_printf(&b, "<h3>");
            esc(&b, lm_xp_table_title(tb));
            lm_xp_printf(&b, "</h3>\n<p>");
            esc(&b, lm_xp_table_about(tb));
            lm_xp_printf(&b, "</p>\n");
            point_table_html(&b, x, tb);
        }
    }
    lm_xp_printf(&b, "<h2>The paper's patterns on these figures</h2>\n<ul>\n");
    for (size_t i = 0; i < x->npat; i++) {
        lm_xp_printf(&b, "<li><span class=\"%s\">%s</span>: ", x->pat[i].held ? "held" : "nothold",
                     x->pat[i].held ? "holds" : "does not hold");
        esc(&b, x->pat[i].text);
        lm_xp_printf(&b, ".</li>\n");
    }
    lm_xp_printf(&b, "</ul>\n<h2>Training curves (seed 1)</h2>\n");
    legend(&b, x);
    lm_xp_printf(&b, "<div class=\"plots\">\n");
    plot(&b, x, 0, "Training loss per epoch", "outer loss (train)");
    plot(&b, x, 1, "Validation AUC per epoch (warm tasks)", "validation AUC");
    lm_xp_printf(
        &b,
        "</div>\n<p>Training loss: the epoch's mean outer objective (LiMAML and MAML: the query loss "
        "after the inner step; for the support-loss option row, L_q + w L_s divided by 1 + w). Validation "
        "AUC: warm "
        "tasks' validation parts, after adapting on their train parts for LiMAML and MAML; the model "
        "kept is the epoch of best validation AUC.</p>\n");
    lm_xp_printf(
        &b, "<h2>Hyperparameters chosen on warm validation (seed 1)</h2>\n<div "
            "class=\"wide\"><table><thead><tr><th>Algorithm"
            "</th><th>Training grid, lr / inner task lr: val AUC (best epoch/run)</th><th>lr</th><th>task lr"
            "</th><th>k</th><th>&alpha;</th><th>val AUC adapted</th><th>val AUC without</th><th>adaptation "
            "points tried</th></tr></thead><tbody>\n");
    for (int i = 0; i < LM_XP_NARMS; i++) {
        const lm_xp_arm *a = &x->arm[i];
        if (!a->enabled) continue;
        lm_xp_printf(&b, "<tr><td>");
        esc(&b, a->label);
        lm_xp_printf(&b, "</td><td>");
        for (size_t j = 0; j < a->ngrid; j++)
            lm_xp_printf(&b, "%s%g / %g: %.4f (%u/%u)", j ? "<br>" : "", a->grid_lr[j], a->grid_task_lr[j],
                         a->grid_val[j], a->grid_best_epoch[j], a->grid_epochs[j]);
        double best = NAN;
        for (size_t j = 0; j < a->nadapt; j++)
            if (a->adapt_k[j] == a->k && a->adapt_alpha[j] == a->alpha) best = a->adapt_val[j];
        if (a->nadapt)
            lm_xp_printf(
                &b,
                "</td><td>%g</td><td>%g</td><td>%u</td><td>%.3g</td><td>%.4f</td><td>%.4f</td><td>%zu</td>"
                "</tr>\n",
                a->lr, a->task_lr, a->k, a->alpha, best, a->noadapt_val, a->nadapt);
        else
            lm_xp_printf(
                &b,
                "</td><td>%g</td><td>%g</td><td>&mdash;</td><td>&mdash;</td><td>&mdash;</td><td>%.4f</td>"
                "<td>0</td></tr>\n",
                a->lr, a->task_lr, a->noadapt_val);
    }
    lm_xp_printf(
        &b,
        "</tbody></table></div>\n<p>The outer learning rate is chosen by the best validation AUC training "
        "reached; then k and &alpha; by the pooled AUC on warm tasks' validation parts after adapting "
        "on their train parts (the count floor scores %.4f there). Test parts are never used to "
        "choose. report.md lists the whole adaptation grid.</p>\n",
        x->floor_val.auc);
    lm_xp_printf(
        &b,
        "<p class=\"sd\">Count floor: (task positives + 5g)/(task count + 5) + (item positives + "
        "5g)/(item count + 5), g the training pool's positive rate; the item is the first categorical "
        "column. Written by limaml %s.</p>\n</body></html>\n",
        LM_VERSION_STRING);
    return lm_xp_buf_write(&b, path, err);
}
