#!/usr/bin/env python3
"""tree_baseline.py: the strongest simple alternative, a LightGBM model under PROTOCOL.md.

It reads MovieLens-100K itself (u.data, u.user, u.item, u.occupation) and rebuilds the protocol's
examples and splits exactly (asserting their sizes), so its figures compare with docs/EXPERIMENTS.md:

- label rating >= 4; each user's examples sorted by (timestamp, item id);
- new users (user_id % 5 == 0): first floor(0.5 m) validation, the rest test;
- warm users: first floor(0.6 m) train, next floor(0.2 m) validation, the rest test.

Features: the protocol's (age / 100, gender, occupation as a categorical, 19 genre flags,
(year - 1900) / 100 or 0, optionally the item id as a categorical) plus history rates that never
see the label of the row they describe, nor any test label:

- item rate and log-count, from the training pool: out-of-fold by user folds for training rows,
  the whole pool for validation and test rows; the rate is smoothed with A = 5 pseudo-examples at
  the pool's positive rate; an out-of-fold count is scaled up to the whole pool's size, so that
  training and scoring rows see counts on the same scale;
- user rate and log-count: for a training row the user's earlier training rows (expanding,
  strictly before); for a validation row the user's train part; for a test row the rows before the
  test part (train and validation parts for warm users, the validation part for new users), the
  information the protocol's adaptation may use.

A small grid is tuned on the warm validation parts (early stopping on their AUC, seed 1). Then
for seeds 1..S (LightGBM's seed: bagging and feature_fraction) it reports (a) the model fitted on
the train parts and (b) the chosen settings and tree count refitted on train + warm validation
parts (those rows then get expanding user rates and out-of-fold item rates over the bigger pool),
both scored on the test parts: pooled AUC (ties count one half), the slices (< 25 and >= 25 test
examples, warm, new) and log loss, mean and std over seeds. The count floor of PROTOCOL.md is
printed as a check of the splits (0.7498 pooled).

--ensemble M (default 1, the above) makes each of the S rows an ensemble of M seeds, as the
networks' ensembles are made: group g = 0..S-1 uses seeds g*M+1 .. g*M+M, each member fitted and
refitted exactly as a seed above (the grid's choice, its own early-stopped tree count, refit with
that count), and the group averages its members' raw scores (log-odds; the log loss takes their
sigmoid). The figures are mean and std over the S groups; for reference the single-member figures
are given too, mean and std over all S*M seeds. LightGBM's seed only moves bagging and
feature_fraction: if the chosen settings have neither (bagging_fraction 1 or bagging_freq 0, and
feature_fraction 1), the output says so, and with M > 1 a bagged variant is added (the chosen
settings with bagging_fraction 0.8, bagging_freq 1, feature_fraction 0.8; its tree count chosen by
early stopping on the warm validation parts with seed 1 and kept for every member), ensembled the
same way. No choice sees a test label.

Needs lightgbm, numpy and scikit-learn (scripts/setup-gbm.sh makes a venv with them):
    py=$(scripts/setup-gbm.sh | tail -1)
    "$py" tools/tree_baseline.py --ml ../shared/data/ml-100k --seeds 3 --json build/gbm.json
    "$py" tools/tree_baseline.py --ml ../shared/data/ml-100k --seeds 3 --ensemble 3 \
        --json build/gbm-ens3.json
"""

import argparse
import itertools
import json
import math
import os
import sys
import time

import lightgbm as lgb
import numpy as np
from sklearn.metrics import log_loss, roc_auc_score

A = 5.0  # pseudo-examples of the smoothed rates
FOLDS = 5  # user folds of the out-of-fold item rates
FOLD_SEED = 12345  # the folds do not move with the model's seed
TRAIN, VAL, TEST = 0, 1, 2
SIZES = {"train": 48289, "val": 25368, "test": 26343, "users": 943, "new": 188}
FLOOR_AUC = 0.7498  # the C implementation's count floor (src/eval/floor.c), pooled test AUC

# ---------------------------------------------------------------------------- data and splits


def load_movielens(ml):
    """The examples sorted by (user, timestamp, item id), and the user and item tables."""
    d = np.loadtxt(os.path.join(ml, "u.data"), dtype=np.int64)
    order = np.lexsort((d[:, 1], d[:, 3], d[:, 0]))
    d = d[order]
    ex = {"user": d[:, 0], "item": d[:, 1], "label": (d[:, 2] >= 4).astype(np.float64)}

    with open(os.path.join(ml, "u.occupation"), encoding="latin-1") as f:
        occs = [line.strip() for line in f if line.strip()]
    nu = int(ex["user"].max()) + 1
    age, gender, occ = np.zeros(nu), np.zeros(nu), np.zeros(nu, dtype=np.int64)
    with open(os.path.join(ml, "u.user"), encoding="latin-1") as f:
        for line in f:
            if not line.strip():
                continue
            uid, a, g, o, _ = line.rstrip("\r\n").split("|")
            uid = int(uid)
            age[uid], gender[uid], occ[uid] = float(a) / 100.0, g == "M", occs.index(o)

    ni = int(ex["item"].max()) + 1
    genres, year = np.zeros((ni, 19)), np.zeros(ni)
    with open(os.path.join(ml, "u.item"), encoding="latin-1") as f:
        for line in f:
            if not line.strip():
                continue
            f_ = line.rstrip("\r\n").split("|")
            iid = int(f_[0])
            date = f_[2].rsplit("-", 1)
            if len(date) == 2 and len(date[1]) == 4:  # "01-Jan-1995"; a missing date gives 0
                year[iid] = (float(date[1]) - 1900.0) / 100.0
            genres[iid] = [float(v) for v in f_[5:24]]
    users = {"age": age, "gender": gender, "occ": occ, "nocc": len(occs)}
    items = {"genres": genres, "year": year}
    return ex, users, items


def assign_parts(ex):
    """part (TRAIN, VAL, TEST), is_new and the user's test count of every example."""
    user = ex["user"]
    n = len(user)
    part = np.empty(n, dtype=np.int64)
    test_count = np.empty(n, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    ends = np.r_[starts[1:], n]
    for s, e in zip(starts, ends):
        m = e - s
        if user[s] % 5 == 0:
            nv, nt = m // 2, 0
            cuts = [0, nv]
        else:
            nt, nv = math.floor(0.6 * m), math.floor(0.2 * m)
            cuts = [nt, nt + nv]
        part[s : s + cuts[0]] = TRAIN
        part[s + cuts[0] : s + cuts[1]] = VAL
        part[s + cuts[1] : e] = TEST
        test_count[s:e] = e - (s + cuts[1])
    is_new = user % 5 == 0
    got = {
        "train": int((part == TRAIN).sum()),
        "val": int((part == VAL).sum()),
        "test": int((part == TEST).sum()),
        "users": len(starts),
        "new": int(len(np.unique(user[is_new]))),
    }
    assert got == SIZES, f"split sizes {got} differ from PROTOCOL.md's {SIZES}"
    return part, is_new, test_count


# ---------------------------------------------------------------------------- history rates


def smoothed(pos, cnt, g):
    return (pos + A * g) / (cnt + A)


def item_totals(item, label, mask, ni):
    pos = np.bincount(item[mask], weights=label[mask], minlength=ni)
    cnt = np.bincount(item[mask], minlength=ni).astype(np.float64)
    return pos, cnt


def item_rates(ex, pool, rows, folds, ni):
    """Item rate and log-count of each example in `rows` (a mask) from the pool (a mask).

    Rows in the pool get out-of-fold figures (the pool less their user's fold, the count scaled up
    to the whole pool's size); rows outside it get the whole pool's."""
    item, label = ex["item"], ex["label"]
    rate, logc = np.full(len(item), np.nan), np.full(len(item), np.nan)
    pos, cnt = item_totals(item, label, pool, ni)
    g = label[pool].mean()
    out = rows & ~pool
    rate[out] = smoothed(pos, cnt, g)[item[out]]
    logc[out] = np.log1p(cnt[item[out]])
    for f in range(FOLDS):
        oof = pool & (folds != f)
        here = rows & pool & (folds == f)
        pos, cnt = item_totals(item, label, oof, ni)
        go = label[oof].mean()
        rate[here] = smoothed(pos, cnt, go)[item[here]]
        logc[here] = np.log1p(cnt[item[here]] * pool.sum() / oof.sum())
    return rate, logc


def user_expanding(ex, mask):
    """For rows in mask: positives and count of the same user's earlier rows in mask."""
    user, label = ex["user"], ex["label"]
    pos, cnt = np.zeros(len(user)), np.zeros(len(user))
    idx = np.flatnonzero(mask)  # sorted by user then time, so each user's rows are in order
    u = user[idx]
    first = np.r_[True, u[1:] != u[:-1]]
    grp_start = np.maximum.accumulate(np.where(first, np.arange(len(idx)), 0))
    cl = np.cumsum(label[idx]) - label[idx]  # exclusive cumulative sum
    pos[idx] = cl - (cl[grp_start])
    cnt[idx] = np.arange(len(idx)) - grp_start
    return pos, cnt


def user_history(ex, hist, rows):
    """For rows: positives and count of all the same user's rows in hist (a mask)."""
    user, label = ex["user"], ex["label"]
    nu = int(user.max()) + 1
    pos = np.bincount(user[hist], weights=label[hist], minlength=nu)
    cnt = np.bincount(user[hist], minlength=nu).astype(np.float64)
    p, c = np.zeros(len(user)), np.zeros(len(user))
    p[rows], c[rows] = pos[user[rows]], cnt[user[rows]]
    return p, c


# ---------------------------------------------------------------------------- features


def feature_matrix(ex, users, items, rows, urate, ucnt, irate, icnt, with_item):
    """The protocol's features and the history rates of the examples in rows (a mask)."""
    u, i = ex["user"][rows], ex["item"][rows]
    cols = [
        users["age"][u],
        users["gender"][u],
        users["occ"][u].astype(np.float64),
        *items["genres"][i].T,
        items["year"][i],
        urate[rows],
        np.log1p(ucnt[rows]),
        irate[rows],
        icnt[rows],
    ]
    names = ["age", "gender", "occupation"] + [f"genre_{g}" for g in range(19)]
    names += ["year", "user_rate", "user_logcount", "item_rate", "item_logcount"]
    cats = ["occupation"]
    if with_item:
        cols.append(i.astype(np.float64))
        names.append("item_id")
        cats.append("item_id")
    return np.column_stack(cols), names, cats


class Setup:
    """The feature matrices of one training regime: fit rows, warm validation rows, test rows."""

    def __init__(self, ex, users, items, part, is_new, folds, refit):
        ni = int(ex["item"].max()) + 1
        n = len(part)
        warm = ~is_new
        self.fit = (part == TRAIN) | (refit & warm & (part == VAL))
        self.val = warm & (part == VAL) & ~self.fit
        self.test = part == TEST
        # item rates: out-of-fold over the pool for its rows, the whole pool for the others
        self.irate, self.icnt = item_rates(ex, self.fit, np.ones(n, bool), folds, ni)
        # user rates: expanding over the fit rows; the train part for a validation row; the rows
        # before the test part for a test row (train + validation, or validation for a new user)
        urate, ucnt = user_expanding(ex, self.fit)
        p, c = user_history(ex, part == TRAIN, self.val)
        urate[self.val], ucnt[self.val] = p[self.val], c[self.val]
        p, c = user_history(ex, part != TEST, self.test)
        urate[self.test], ucnt[self.test] = p[self.test], c[self.test]
        g = ex["label"][self.fit].mean()
        self.urate, self.ucnt = smoothed(urate, ucnt, g), ucnt
        self.ex, self.users, self.items = ex, users, items

    def matrix(self, rows, with_item):
        return feature_matrix(self.ex, self.users, self.items, rows, self.urate, self.ucnt,
                              self.irate, self.icnt, with_item)


# ---------------------------------------------------------------------------- model


BASE = {
    "objective": "binary",
    "metric": "auc",
    "num_threads": 1,
    "verbose": -1,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "deterministic": True,
    "force_col_wise": True,
}
MAX_TREES = 3000
PATIENCE = 100


def params_of(cfg, seed):
    p = dict(BASE)
    p.update({k: v for k, v in cfg.items() if k != "item_id"})
    p["seed"] = seed
    return p


def train(setup, cfg, seed, rows_fit, num_trees=None):
    """Fits on rows_fit; with num_trees None, early-stops on the warm validation rows."""
    X, names, cats = setup.matrix(rows_fit, cfg["item_id"])
    y = setup.ex["label"][rows_fit]
    dtrain = lgb.Dataset(X, y, feature_name=names, categorical_feature=cats, free_raw_data=False)
    p = params_of(cfg, seed)
    if num_trees is not None:
        return lgb.train(p, dtrain, num_boost_round=num_trees), num_trees
    Xv, _, _ = setup.matrix(setup.val, cfg["item_id"])
    dval = lgb.Dataset(Xv, setup.ex["label"][setup.val], reference=dtrain)
    booster = lgb.train(p, dtrain, num_boost_round=MAX_TREES, valid_sets=[dval],
                        callbacks=[lgb.early_stopping(PATIENCE, verbose=False)])
    return booster, booster.best_iteration


def predict(setup, booster, cfg, rows, num_trees):
    """The raw scores (log-odds) of rows: what an ensemble averages."""
    X, _, _ = setup.matrix(rows, cfg["item_id"])
    return booster.predict(X, num_iteration=num_trees, raw_score=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def has_randomness(cfg):
    """Whether the model's seed changes anything: row bagging or a feature fraction below 1."""
    p = params_of(cfg, 1)
    bagging = p.get("bagging_fraction", 1.0) < 1.0 and p.get("bagging_freq", 0) > 0
    return bagging or p.get("feature_fraction", 1.0) < 1.0


# ---------------------------------------------------------------------------- metrics


def figures(y, p, test_count, is_new, prob=None):
    """Pooled AUC, the slices and log loss of scores p (probabilities prob for the log loss)."""
    slices = {
        "auc": np.ones(len(y), bool),
        "lt25": test_count < 25,
        "ge25": test_count >= 25,
        "warm": ~is_new,
        "new": is_new,
    }
    out = {k: float(roc_auc_score(y[m], p[m])) for k, m in slices.items()}
    q = p if prob is None else prob
    out["logloss"] = float(log_loss(y, np.clip(q, 1e-7, 1 - 1e-7)))
    return out


def count_floor(ex, part, is_new, test_count, ni):
    """PROTOCOL.md's floor: user rate + item rate, item from the training pool."""
    label, pool, test = ex["label"], part == TRAIN, part == TEST
    g = label[pool].mean()
    pos, cnt = item_totals(ex["item"], label, pool, ni)
    irate = smoothed(pos, cnt, g)[ex["item"]]
    p, c = user_history(ex, part != TEST, test)
    urate = smoothed(p, c, g)
    s = (urate + irate)[test]
    return figures(label[test], s, test_count[test], is_new[test], prob=s / 2)


# ---------------------------------------------------------------------------- main


GRID = {
    "num_leaves": [15, 31, 63],
    "learning_rate": [0.03, 0.1],
    "min_data_in_leaf": [20, 100],
    "feature_fraction": [0.7, 1.0],
    "item_id": [False, True],
}
KEYS = ["auc", "lt25", "ge25", "warm", "new", "logloss"]
BAGGED = {"bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8}  # the variant


def mean_std(rows, key):
    v = np.array([r[key] for r in rows])
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def run_members(base, refit, cfg, seeds, num_trees=None):
    """One model per seed: fitted on the train parts (early-stopped on the warm validation parts
    unless num_trees is given) and refitted with its tree count on train + warm validation; the
    raw test scores (log-odds) of both."""
    out = []
    for seed in seeds:
        booster, trees = train(base, cfg, seed, base.fit, num_trees)
        zf = predict(base, booster, cfg, base.test, trees)
        booster, _ = train(refit, cfg, seed, refit.fit, num_trees=trees)
        zr = predict(refit, booster, cfg, refit.test, trees)
        out.append({"seed": seed, "trees": trees, "fit": zf, "refit": zr})
        y = base.ex["label"][base.test]
        print(f"  seed {seed}: trees {trees}, test AUC {roc_auc_score(y, zf):.4f}, "
              f"refit {roc_auc_score(y, zr):.4f}", file=sys.stderr)
    return out


def test_figures(setup, z, test_count, is_new):
    """The figures of raw test scores z: AUC on z, log loss on its sigmoid."""
    t = setup.test
    return figures(setup.ex["label"][t], z, test_count[t], is_new[t], prob=sigmoid(z))


def ensemble_rows(setup, ms, S, M, test_count, is_new):
    """Fit and refit figures of S ensembles, group g averaging members g*M .. g*M+M-1's raw scores
    (with M = 1, each seed's own model, as before the option)."""
    fit, ref = [], []
    for g in range(S):
        grp = ms[g * M : (g + 1) * M]
        for rows, key in ((fit, "fit"), (ref, "refit")):
            r = test_figures(setup, np.mean([m[key] for m in grp], axis=0), test_count, is_new)
            if M == 1:
                r.update(seed=grp[0]["seed"], trees=grp[0]["trees"])
            else:
                r.update(seeds=[m["seed"] for m in grp], trees=[m["trees"] for m in grp])
            rows.append(r)
    return fit, ref


def member_rows(setup, ms, test_count, is_new):
    """Each member's own fit and refit figures."""
    fit, ref = [], []
    for m in ms:
        for rows, key in ((fit, "fit"), (ref, "refit")):
            r = test_figures(setup, m[key], test_count, is_new)
            r.update(seed=m["seed"], trees=m["trees"])
            rows.append(r)
    return fit, ref


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ml", required=True, help="the ml-100k folder (u.data, u.user, ...)")
    ap.add_argument("--seeds", type=int, default=3, help="LightGBM seeds 1..S (default 3)")
    ap.add_argument("--ensemble", type=int, default=1, metavar="M",
                    help="each of the S rows averages the raw scores of M seeds (default 1)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--quick", action="store_true", help="a two-point grid (for a smoke test)")
    args = ap.parse_args()
    if args.seeds < 1 or args.ensemble < 1:
        ap.error("--seeds and --ensemble must be at least 1")
    t0 = time.time()

    ex, users, items = load_movielens(args.ml)
    part, is_new, test_count = assign_parts(ex)
    ni = int(ex["item"].max()) + 1
    floor = count_floor(ex, part, is_new, test_count, ni)
    print(f"splits: train {SIZES['train']}, val {SIZES['val']}, test {SIZES['test']}, "
          f"{SIZES['users']} users, {SIZES['new']} new (as PROTOCOL.md)")
    print(f"count floor: pooled test AUC {floor['auc']:.4f} (warm {floor['warm']:.4f}, "
          f"new {floor['new']:.4f}); expected {FLOOR_AUC}")
    if abs(floor["auc"] - FLOOR_AUC) >= 5e-5:
        sys.exit("tree_baseline: the count floor differs from the C implementation's: splits differ")

    # user folds of the out-of-fold item rates, fixed across seeds
    nu = int(ex["user"].max()) + 1
    ufold = np.random.default_rng(FOLD_SEED).integers(0, FOLDS, nu)
    folds = ufold[ex["user"]]
    base = Setup(ex, users, items, part, is_new, folds, refit=False)
    refit = Setup(ex, users, items, part, is_new, folds, refit=True)
    y = ex["label"]

    # tune on the warm validation parts with seed 1
    grid = GRID
    if args.quick:
        grid = {k: v[:1] for k, v in GRID.items()}
        grid["item_id"] = [False, True]
    keys = list(grid)
    tuning = []
    t_tune = time.time()
    for values in itertools.product(*(grid[k] for k in keys)):
        cfg = dict(zip(keys, values))
        booster, trees = train(base, cfg, 1, base.fit)
        auc = roc_auc_score(y[base.val], predict(base, booster, cfg, base.val, trees))
        tuning.append({"cfg": cfg, "trees": trees, "val_auc": float(auc)})
        print(f"  tune {cfg} trees {trees}: warm val AUC {auc:.4f}", file=sys.stderr)
    t_tune = time.time() - t_tune
    best = max(tuning, key=lambda r: r["val_auc"])
    cfg = best["cfg"]
    print(f"chosen on warm validation (seed 1, {len(tuning)} settings, {t_tune:.0f} s): {cfg}, "
          f"warm val AUC {best['val_auc']:.4f}")
    noitem = max((r for r in tuning if not r["cfg"]["item_id"]), key=lambda r: r["val_auc"])
    withitem = max((r for r in tuning if r["cfg"]["item_id"]), key=lambda r: r["val_auc"])
    print(f"best warm val AUC without the item id {noitem['val_auc']:.4f}, "
          f"with it {withitem['val_auc']:.4f}")

    # the members: seeds 1..S*M, each fitted on the train parts (early stopping) and refitted with
    # its own tree count; group g (0-based) averages the raw scores of seeds g*M+1 .. g*M+M
    S, M = args.seeds, args.ensemble
    random = has_randomness(cfg)
    pc = params_of(cfg, 1)
    bf, bq, ff = (pc.get(k, d) for k, d in
                  (("bagging_fraction", 1.0), ("bagging_freq", 0), ("feature_fraction", 1.0)))
    print(f"what the seed moves: bagging_fraction {bf} every {bq} iteration(s), "
          f"feature_fraction {ff}")
    if not random:
        more = ", so the seed average equals one model; a bagged variant follows" if M > 1 else ""
        print("the chosen settings have no randomness (bagging_fraction 1 or bagging_freq 0, "
              "feature_fraction 1): the seeds change nothing" + more)
    t_mem = time.time()
    ms = run_members(base, refit, cfg, range(1, S * M + 1))
    t_mem = time.time() - t_mem
    fit_rows, refit_rows = ensemble_rows(base, ms, S, M, test_count, is_new)
    mem_fit, mem_refit = member_rows(base, ms, test_count, is_new)

    # no randomness: a variant whose members differ by bagging, its tree count re-chosen on the
    # warm validation parts (early stopping, seed 1) and kept for every member
    bagged = None
    if not random and M > 1:
        cfg_b = dict(cfg, **BAGGED)
        booster, trees_b = train(base, cfg_b, 1, base.fit)
        auc_b = float(roc_auc_score(y[base.val], predict(base, booster, cfg_b, base.val, trees_b)))
        print(f"bagged variant {BAGGED}: {trees_b} trees on warm validation (seed 1), "
              f"warm val AUC {auc_b:.4f}")
        msb = run_members(base, refit, cfg_b, range(1, S * M + 1), num_trees=trees_b)
        bfit, brefit = ensemble_rows(base, msb, S, M, test_count, is_new)
        bmfit, bmrefit = member_rows(base, msb, test_count, is_new)
        bagged = {"cfg": cfg_b, "trees": trees_b, "val_auc": auc_b, "fit": bfit, "refit": brefit,
                  "members_fit": bmfit, "members_refit": bmrefit}
    wall = time.time() - t0

    def cell(rows, k):
        m, s = mean_std(rows, k)
        return f"{m:.4f} ± {s:.4f}"

    def line(name, rows):
        print(f"| {name} | " + " | ".join(cell(rows, k) for k in KEYS) + " |")

    print()
    print("| Row | Test AUC | < 25 | >= 25 | warm | new | log loss |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("| Count floor (user + item rate) | " + " | ".join(f"{floor[k]:.4f}" for k in KEYS) + " |")
    if M == 1:
        line("LightGBM, fit on train parts", fit_rows)
        line("LightGBM, refit on train + warm val", refit_rows)
    else:
        line(f"LightGBM, ensemble of {M} seeds, fit on train parts", fit_rows)
        line(f"LightGBM, ensemble of {M} seeds, refit on train + warm val", refit_rows)
        line(f"LightGBM, one member ({S * M} seeds), fit on train parts", mem_fit)
        line(f"LightGBM, one member ({S * M} seeds), refit on train + warm val", mem_refit)
    if bagged:
        line(f"LightGBM bagged, ensemble of {M} seeds, fit on train parts", bagged["fit"])
        line(f"LightGBM bagged, ensemble of {M} seeds, refit on train + warm val", bagged["refit"])
        line(f"LightGBM bagged, one member ({S * M} seeds), fit on train parts",
             bagged["members_fit"])
        line(f"LightGBM bagged, one member ({S * M} seeds), refit on train + warm val",
             bagged["members_refit"])
    print()
    if M == 1:
        print(f"seeds 1..{S}; trees per seed {[m['trees'] for m in ms]}; ", end="")
    else:
        print(f"{S} groups of {M} seeds (group g: seeds g*{M}+1..g*{M}+{M}), mean ± std over the "
              f"groups; one member: mean ± std over seeds 1..{S * M}; "
              f"trees per seed {[m['trees'] for m in ms]}; ", end="")
    print(f"wall {wall:.0f} s (tuning {t_tune:.0f} s, members {t_mem:.0f} s), num_threads 1")

    if args.json:
        out = {
            "floor": floor,
            "chosen": cfg,
            "base_params": BASE,
            "max_trees": MAX_TREES,
            "patience": PATIENCE,
            "tuning": tuning,
            "ensemble": M,
            "randomness": random,
            "fit": fit_rows,
            "refit": refit_rows,
            "members_fit": mem_fit,
            "members_refit": mem_refit,
            "summary": {
                "fit": {k: mean_std(fit_rows, k) for k in KEYS},
                "refit": {k: mean_std(refit_rows, k) for k in KEYS},
                "members_fit": {k: mean_std(mem_fit, k) for k in KEYS},
                "members_refit": {k: mean_std(mem_refit, k) for k in KEYS},
            },
            "wall_s": wall,
            "tune_s": t_tune,
            "members_s": t_mem,
            "lightgbm": lgb.__version__,
        }
        if bagged:
            for k in ("fit", "refit", "members_fit", "members_refit"):
                bagged.setdefault("summary", {})[k] = {x: mean_std(bagged[k], x) for x in KEYS}
            out["bagged"] = bagged
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
