#!/usr/bin/env python3
"""torch_embed_bench.py: meta-embedding generation (Algorithm 2b) vectorized in PyTorch, the
baseline of `limaml bench embed`.

For every task t, with the global block fixed:

    phi_0,t = theta_m
    phi_{s+1},t = phi_s,t - alpha grad_phi L_t(phi_s,t)        s = 0 .. k-1
    e_t = MLP_meta(phi_k,t; meta features of task t's latest row)

L_t is the mean over all of task t's rows of BCE with logits (or (z - y)^2), as `limaml embed
--adapt-from all --pool latest`. The tasks are processed --batch-tasks at a time with no Python
loop over tasks: per-task copies of the meta parameters are (T, ...) tensors (theta_m expanded),
one autograd.grad of the summed per-task mean losses gives every task's own gradient (a task's
parameters only reach its own loss), the global block runs on the batch's packed rows. Two exact
shortcuts, the same ones src/meta/batch_embed* takes and tools/torch_bench.py takes by default:
  - layer 0 of the global MLP split by columns: [meta | dense | tables] W0^T + b0 does not move
    during adaptation and is formed once per batch; each step adds E(phi) W0[:, E cols]^T;
  - when every task's rows share their meta features (a user's, as in `limaml synth`), the meta
    block runs on one row per task (T, nmeta), else on the rows padded to (T, Bmax, nmeta).
First order is exact here (Algorithm 2b differentiates nothing through the steps).

Timed: a pass over all tasks of the input, from the packed rows in memory to the (N, E) output
(slicing the batch, table look-ups, the k steps, the output); not timed: reading the input. The
median of --repeats passes after a warm-up on the first batch. The store write is not part of
it (limaml's figures include theirs).

Input (written by `limaml bench embed`):
    MODEL      a limaml model file (safetensors: meta.layerK.weight/bias, global.layerK.*,
               global.emb.<column>; metadata "limaml": the net and the schema)
    DATA       safetensors, metadata lm_embedbench = "1": meta (R, nmeta) f32, dense (R, ndense)
               f32, cat (R, ncat) i32/i64, label (R) f32, offsets (N + 1) i64 (task i's rows are
               [offsets[i], offsets[i+1]) in time order); optionally ours.k<K> (S, E) f32, our
               embeddings of the first S tasks for k = K, compared with this script's.
Output: one JSON object on stdout: tasks_per_s, the runs, max_abs_diff (and max |ours|, the
tasks differing by more than 1e-4 and of
those, how many of ours are the nearer to float64) against ours.k<K>, threads, BLAS.

Threads: --threads N sets torch.set_num_threads(N) and OMP_NUM_THREADS; BLAS threads 1 (as
tools/torch_bench.py, which explains why on 2 cores).
Usage: torch_embed_bench.py MODEL DATA --steps K --alpha A [--threads N] [--repeats R]
"""
import argparse
import json
import os
import statistics
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--steps", "-k", type=int, required=True, help="adaptation steps k")
    p.add_argument("--alpha", type=float, help="task learning rate (default: the model's)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3, help="timed passes (3)")
    p.add_argument("--batch-tasks", type=int, default=1024,
                   help="tasks per vectorized batch (1024: the fastest of 256 .. 16384 here)")
    p.add_argument("--uniform-meta", choices=["auto", "off"], default="auto")
    return p.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args(sys.argv[1:])
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
    for _v in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GOTO_NUM_THREADS"):
        os.environ[_v] = "1"

import torch  # noqa: E402
import torch.nn.functional as tf  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


class Model:
    """The network of a limaml model file: meta MLP, global MLP split at layer 0, tables."""

    def __init__(self, path):
        with safe_open(path, "pt") as f:
            info = json.loads(f.metadata()["limaml"])
        t = load_file(path)
        net = info["net"]
        if net["meta_kind"] != "mlp":
            raise SystemExit("torch_embed_bench: only an MLP meta block")
        self.E = int(net["emb_dim"])
        self.loss = net["loss"]
        self.inner_steps, self.task_lr = int(info["inner_steps"]), float(info["task_lr"])
        nm = 1 + len(net["meta_hidden"])
        ng = 1 + len(net["global_hidden"])
        self.meta = [(t[f"meta.layer{i}.weight"], t[f"meta.layer{i}.bias"]) for i in range(nm)]
        self.glob = [(t[f"global.layer{i}.weight"], t[f"global.layer{i}.bias"]) for i in range(ng)]
        cats = info["schema"].get("categorical", [])
        self.tables = [t["global.emb." + c["column"]] for c in cats]
        self.meta_in_global = bool(net["meta_in_global"])
        self.emb_logit = bool(net.get("emb_logit", False))  # logit += E[0] (limaml train --emb-logit)
        W0 = self.glob[0][0]
        self.W0fix, self.WE = W0[:, :W0.shape[1] - self.E], W0[:, W0.shape[1] - self.E:]


def meta_forward(phi, m):
    """The meta block with per-task weights: m (T, nmeta) -> (T, E), or (T, B, nmeta) -> (T, B, E)."""
    h = m
    L = len(phi)
    for l, (W, b) in enumerate(phi):
        if h.dim() == 2:  # per-task matrix-vector products: broadcast, not bmm (which
            h = b + (W * h.unsqueeze(1)).sum(2)  # loops over the tiny matrices: 2x slower)
        else:
            h = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))
        if l < L - 1:
            h = torch.relu(h)
    return h


def embed_batch(M, d, a, b, k, alpha, uniform, out):
    """Embeddings of tasks [a, b) into out[a:b]."""
    off = d["offsets"]
    r0, r1 = int(off[a]), int(off[b])
    cnt = off[a + 1:b + 1] - off[a:b]
    T = b - a
    tid = torch.repeat_interleave(torch.arange(T), cnt)
    w = (1.0 / cnt.to(d["label"].dtype))[tid]
    y = d["label"][r0:r1]
    meta = d["meta"][r0:r1]
    last = off[a + 1:b + 1] - 1 - r0                                   # each task's latest row
    m_last = meta[last]
    with torch.no_grad():
        cols = [meta] if M.meta_in_global else []
        cols.append(d["dense"][r0:r1])
        cat = d["cat"][r0:r1]
        for c, tab in enumerate(M.tables):
            cols.append(tf.embedding(cat[:, c], tab))
        pre = torch.addmm(M.glob[0][1], torch.cat(cols, 1), M.W0fix.t())   # (R, H0)
        if uniform:
            m_in = m_last                                              # (T, nmeta)
        else:
            Bmax = int(cnt.max())
            first = torch.cumsum(cnt, 0) - cnt
            pos = tid * Bmax + (torch.arange(r1 - r0) - first[tid])
            mp = torch.zeros(T * Bmax, meta.shape[1], dtype=meta.dtype)
            mp[pos] = meta
            m_in = mp.view(T, Bmax, -1)
    phi = [(W.expand(T, *W.shape), bb.expand(T, *bb.shape)) for W, bb in M.meta]
    for _ in range(k):
        flat = [p.detach().requires_grad_(True) for Wb in phi for p in Wb]
        phi = [(flat[2 * l], flat[2 * l + 1]) for l in range(len(phi))]
        Em = meta_forward(phi, m_in)
        if uniform:
            a0 = pre + (Em @ M.WE.t()).index_select(0, tid)
        else:
            a0 = torch.addmm(pre, Em.reshape(-1, M.E).index_select(0, pos), M.WE.t())
        h = a0
        for W, bb in M.glob[1:]:
            h = torch.addmm(bb, torch.relu(h), W.t())
        z = h.view(-1)
        if M.emb_logit:
            if uniform:
                z = z + Em[:, 0].index_select(0, tid)
            else:
                z = z + Em.reshape(-1, M.E).index_select(0, pos)[:, 0]
        if M.loss == "bce":
            l = tf.binary_cross_entropy_with_logits(z, y, reduction="none")
        else:
            l = (z - y) ** 2
        g = torch.autograd.grad((l * w).sum(), flat)
        with torch.no_grad():
            new = [p - alpha * gp for p, gp in zip(flat, g)]
        phi = [(new[2 * l], new[2 * l + 1]) for l in range(len(phi))]
    with torch.no_grad():
        out[a:b] = meta_forward([(W.detach(), bb.detach()) for W, bb in phi], m_last)


def closer_to_f64(M, d, t, k, alpha, uniform, ours, theirs):
    """Task t again in float64: 1 when our vector is the nearer to it. A task whose two float
    computations part by more than 1e-4 has a ReLU input within rounding of zero at some step
    (a kink: the gradient jumps with the side rounding lands on); float64 says which side."""
    r0, r1 = int(d["offsets"][t]), int(d["offsets"][t + 1])
    one = {n: d[n][r0:r1].double() if d[n].is_floating_point() else d[n][r0:r1]
           for n in ("meta", "dense", "cat", "label")}
    one["offsets"] = torch.tensor([0, r1 - r0])
    M64 = Model.__new__(Model)
    M64.__dict__.update(M.__dict__)
    M64.meta = [(W.double(), b.double()) for W, b in M.meta]
    M64.glob = [(W.double(), b.double()) for W, b in M.glob]
    M64.tables = [x.double() for x in M.tables]
    M64.W0fix, M64.WE = M.W0fix.double(), M.WE.double()
    o = torch.empty(1, M.E, dtype=torch.float64)
    embed_batch(M64, one, 0, 1, k, alpha, uniform, o)
    return int((ours.double() - o[0]).abs().max() < (theirs.double() - o[0]).abs().max())


def blas():
    """Which BLAS serves torch's sgemm (tools/torch_bench.py's report, abridged)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_bench
    r = torch_bench.blas_report()
    return {k: r[k] for k in ("openblas", "sgemm_provider", "sgemm_512_gflops")}


def is_uniform(d):
    m, off = d["meta"], d["offsets"]
    cnt = off[1:] - off[:-1]
    first = m[off[:-1]]
    return bool((m == first.repeat_interleave(cnt, dim=0)).all())


def main():
    a = ARGS
    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(a.threads)
    except RuntimeError:
        pass
    M = Model(a.model)
    d = load_file(a.data)
    d["cat"] = d["cat"].long()
    alpha = a.alpha if a.alpha is not None else M.task_lr
    N = d["offsets"].numel() - 1
    if N < 1 or bool(((d["offsets"][1:] - d["offsets"][:-1]) < 1).any()):
        raise SystemExit("torch_embed_bench: every task needs at least one row")
    uniform = a.uniform_meta == "auto" and is_uniform(d)
    out = torch.empty(N, M.E)
    bt = max(1, a.batch_tasks)

    def run_pass(n):
        t0 = time.perf_counter()
        for s in range(0, n, bt):
            embed_batch(M, d, s, min(n, s + bt), a.steps, alpha, uniform, out)
        return time.perf_counter() - t0

    run_pass(min(N, bt))                                               # warm-up
    runs = [run_pass(N) for _ in range(max(1, a.repeats))]
    med = statistics.median(runs)
    res = {"tasks": N, "steps": a.steps, "alpha": alpha, "threads": torch.get_num_threads(),
           "uniform_meta": uniform, "batch_tasks": bt, "runs_s": runs,
           "tasks_per_s": N / med, "torch": torch.__version__, "blas": blas()}
    ref = d.get(f"ours.k{a.steps}")
    if ref is not None:
        S = min(ref.shape[0], N)
        diff = (out[:S] - ref[:S]).abs()
        worst = diff.max(1).values
        kinks = [int(t) for t in (worst > 1e-4).nonzero().view(-1)]
        res.update({"compared": S, "max_abs_diff": float(diff.max()),
                    "median_abs_diff": float(worst.median()),
                    "max_abs_ours": float(ref[:S].abs().max()),
                    "tasks_over_1e-4": len(kinks),
                    "over_1e-4_ours_closer_to_f64": sum(
                        closer_to_f64(M, d, t, a.steps, alpha, uniform, ref[t], out[t])
                        for t in kinks)})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
