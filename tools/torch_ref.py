#!/usr/bin/env python3
"""torch_ref.py: the PyTorch reference for the per-task meta-gradients of src/meta/.

Reads case files written by tests/meta/test_torch_ref.c (safetensors, opened with
safetensors.torch.load_file, which also proves that our files open in PyTorch), rebuilds the
same network from the flat parameter buffers, runs the same algorithm with autograd, and writes
the results beside each case as CASE.ref.safetensors. The C test compares them.

Usage: torch_ref.py case_0.safetensors [case_1.safetensors ...]
Needs torch and safetensors (scripts/setup-pyref.sh makes such a Python).

The network (docs/META.md), written here independently of the C code:

    meta block    E = MLP_meta(meta)                 (meta_kind "mlp")
               or E = T_id[task row], on every row   (meta_kind "id")
    global block  x = [meta | dense | T_1[cat_1] | ... | T_C[cat_C] | E]
                  z = MLP_global(x)                  (width 1 out)
                  z = z + E[:, 0]                    (only with emb_logit "1")
    loss          mean over the rows of BCE with logits (or (z - y)^2)

MLP buffers in lm_mlp layout: per layer W_l (out, in) row-major, then b_l (out); ReLU after
every layer but the last; no dropout (the cases run with dropout off). theta_g is the global
MLP then the tables T_c (buckets_c, dim_c) row-major, back to back.

Per task (lm_meta_task), with n = steps and step size alpha:

    LiMAML  phi_{k+1} = phi_k - alpha grad_phi L_s(phi_k, psi)     (psi = theta_g fixed)
    MAML    (phi, psi)_{k+1} = (phi, psi)_k - alpha grad L_s(...)   (both blocks)
    F = L_q(theta^n) + w L_s(theta^n),   meta-gradient dF/d(theta_m, theta_g)

Second order keeps the inner gradients in the graph (create_graph=True); first order detaches
them (the inner displacements are constants). PLAIN: F = L_q(theta) and its gradient. The
meta-gradients are summed over the tasks; losses and adapted parameters are per task.

Everything runs twice, in float32 (against the C float kernels) and float64 (against the C
double kernels), from the same float-valued inputs.

Output tensors, for P in ("ref32", "ref64"):
    P.loss       (ntask, 4) float64: objective, query loss, support loss before adaptation
                 (0 when steps = 0 or PLAIN), support loss after (only when w > 0, else 0)
    P.adapted_m  (ntask, meta_task_np): the task's meta slice after n steps
    P.adapted_g  (ntask, global_np): MAML only
    P.grad_m     (meta_np), P.grad_g (global_np): summed meta-gradients
Metadata: lm_torchref (the format version, "1"), torch and safetensors versions.
"""
import sys

import safetensors
import torch
import torch.nn.functional as tf
from safetensors import safe_open
from safetensors.torch import load_file, save_file

MAGIC = "lm_torchref"
VERSION = "1"


class CaseError(Exception):
    pass


def ints(s):
    return [int(x) for x in s.split(",")] if s else []


class Case:
    """A case file: the network description (metadata) and its tensors."""

    def __init__(self, path):
        self.path = path
        self.t = load_file(path)
        with safe_open(path, framework="pt") as f:
            m = f.metadata() or {}
        if m.get(MAGIC) != VERSION:
            raise CaseError(f"{path}: not a torch-reference case of version {VERSION} "
                            f"({MAGIC} = {m.get(MAGIC)!r})")
        self.name = m["case"]
        self.meta_kind = m["meta_kind"]
        self.loss = m["loss"]
        self.algo = m["algo"]
        self.steps = int(m["steps"])
        self.alpha = float(m["alpha"])
        self.first_order = m["first_order"] == "1"
        self.w = float(m["support_weight"])
        self.nmeta, self.ndense = int(m["nmeta"]), int(m["ndense"])
        self.cat_buckets, self.cat_dim = ints(m["cat_buckets"]), ints(m["cat_dim"])
        self.E = int(m["emb_dim"])
        self.meta_in_global = m["meta_in_global"] == "1"
        self.emb_logit = m.get("emb_logit", "0") == "1"  # absent in older case files: off
        self.meta_hidden, self.global_hidden = ints(m["meta_hidden"]), ints(m["global_hidden"])
        self.ntask = int(m["ntask"])
        self.task_rows = ints(m["task_rows"])
        self.id_rows = int(m["id_rows"])
        if self.meta_kind not in ("mlp", "id") or self.loss not in ("bce", "mse") \
                or self.algo not in ("limaml", "maml", "plain"):
            raise CaseError(f"{path}: unknown meta_kind, loss or algo in {m}")

        # the layouts, derived here and checked against what the C side reports
        self.nin = (self.nmeta if self.meta_in_global else 0) + self.ndense \
            + sum(self.cat_dim) + self.E
        self.meta_sizes = [self.nmeta] + self.meta_hidden + [self.E]
        self.global_sizes = [self.nin] + self.global_hidden + [1]
        if self.meta_kind == "mlp":
            self.meta_np = mlp_nparams(self.meta_sizes)
            self.meta_task_np = self.meta_np
        else:
            self.meta_np = self.id_rows * self.E
            self.meta_task_np = self.E
        self.global_mlp_np = mlp_nparams(self.global_sizes)
        self.cat_off, off = [], self.global_mlp_np
        for b, d in zip(self.cat_buckets, self.cat_dim):
            self.cat_off.append(off)
            off += b * d
        self.global_np = off
        c_layout = (int(m["nin"]), int(m["meta_np"]), int(m["global_np"]), ints(m["cat_off"]))
        py_layout = (self.nin, self.meta_np, self.global_np, self.cat_off)
        if c_layout != py_layout:
            raise CaseError(f"{path}: layout (nin, meta_np, global_np, cat_off) is {c_layout} "
                            f"in C but {py_layout} here")
        if self.t["theta_m"].numel() != self.meta_np or self.t["theta_g"].numel() != self.global_np:
            raise CaseError(f"{path}: theta_m or theta_g has the wrong size")

    def rows(self, task, split, dtype):
        p = f"t{task}.{split}."
        return (self.t[p + "meta"].to(dtype), self.t[p + "dense"].to(dtype),
                self.t[p + "cat"].long(), self.t[p + "label"].to(dtype))


def mlp_nparams(sizes):
    return sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:]))


def mlp(params, sizes, x):
    """x: (B, sizes[0]) -> (B, sizes[-1]); params in lm_mlp layout."""
    off, L = 0, len(sizes) - 1
    for l, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = params[off:off + o * i].view(o, i)
        off += o * i
        b = params[off:off + o]
        off += o
        x = x @ W.t() + b
        if l < L - 1:
            x = torch.relu(x)
    assert off == params.numel()
    return x


def net_loss(c, phi, psi, rows):
    """Mean loss of `rows` at (phi: the task's meta slice, psi: theta_g)."""
    meta, dense, cat, y = rows
    B = y.shape[0]
    if c.meta_kind == "mlp":
        E = mlp(phi, c.meta_sizes, meta)
    else:
        E = phi.view(1, c.E).expand(B, c.E)
    cols = []
    if c.meta_in_global:
        cols.append(meta)
    cols.append(dense)
    for j, (off, b, d) in enumerate(zip(c.cat_off, c.cat_buckets, c.cat_dim)):
        cols.append(psi[off:off + b * d].view(b, d)[cat[:, j]])
    cols.append(E)
    z = mlp(psi[:c.global_mlp_np], c.global_sizes, torch.cat(cols, dim=1)).view(B)
    if c.emb_logit:
        z = z + E[:, 0]
    if c.loss == "bce":
        return tf.binary_cross_entropy_with_logits(z, y)
    return ((z - y) ** 2).mean()


def run_task(c, theta_m, theta_g, task, dtype):
    """One task: (losses [F, Lq, Ls before, Ls after], phi_n, psi_n, dF/dtheta_m, dF/dtheta_g)."""
    S, Q = c.rows(task, "S", dtype), c.rows(task, "Q", dtype)
    if c.meta_kind == "mlp":
        phi = theta_m
    else:
        r = c.task_rows[task]
        phi = theta_m[r * c.E:(r + 1) * c.E]
    psi = theta_g
    zero = torch.zeros((), dtype=dtype)
    ls0, ls_after = zero, zero
    if c.algo == "plain":
        F = lq = net_loss(c, phi, psi, Q)
    else:
        maml = c.algo == "maml"
        so = not c.first_order
        for k in range(c.steps):
            ls = net_loss(c, phi, psi, S)
            if k == 0:
                ls0 = ls
            if maml:
                gm, gg = torch.autograd.grad(ls, [phi, psi], create_graph=so)
            else:
                (gm,) = torch.autograd.grad(ls, [phi], create_graph=so)
                gg = None
            if not so:
                gm = gm.detach()
                gg = gg.detach() if gg is not None else None
            phi = phi - c.alpha * gm
            if maml:
                psi = psi - c.alpha * gg
        lq = net_loss(c, phi, psi, Q)
        if c.w > 0:
            ls_after = net_loss(c, phi, psi, S)
        F = lq + c.w * ls_after
    gm, gg = torch.autograd.grad(F, [theta_m, theta_g])
    losses = [float(v) for v in (F, lq, ls0, ls_after)]
    return losses, phi.detach(), psi.detach(), gm, gg


def run_case(c, dtype):
    theta_m = c.t["theta_m"].to(dtype).clone().requires_grad_(True)
    theta_g = c.t["theta_g"].to(dtype).clone().requires_grad_(True)
    losses, ad_m, ad_g = [], [], []
    grad_m = torch.zeros(c.meta_np, dtype=dtype)
    grad_g = torch.zeros(c.global_np, dtype=dtype)
    for task in range(c.ntask):
        l, pm, pg, gm, gg = run_task(c, theta_m, theta_g, task, dtype)
        losses.append(l)
        ad_m.append(pm)
        ad_g.append(pg)
        grad_m += gm
        grad_g += gg
    out = {
        "loss": torch.tensor(losses, dtype=torch.float64),
        "adapted_m": torch.stack(ad_m),
        "grad_m": grad_m,
        "grad_g": grad_g,
    }
    if c.algo == "maml":
        out["adapted_g"] = torch.stack(ad_g)
    return out


def main(argv):
    if len(argv) < 2:
        print("usage: torch_ref.py CASE.safetensors ...", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # deterministic summation order, and the cases are tiny
    for path in argv[1:]:
        if not path.endswith(".safetensors"):
            print(f"torch_ref: {path}: expected a .safetensors file", file=sys.stderr)
            return 2
        try:
            c = Case(path)
        except (CaseError, KeyError, ValueError) as e:
            print(f"torch_ref: {path}: {e}", file=sys.stderr)
            return 1
        tensors = {}
        for prefix, dtype in (("ref32", torch.float32), ("ref64", torch.float64)):
            for k, v in run_case(c, dtype).items():
                tensors[f"{prefix}.{k}"] = v.detach().contiguous().clone()
        out = path[: -len(".safetensors")] + ".ref.safetensors"
        save_file(tensors, out, metadata={MAGIC: VERSION, "case": c.name,
                                          "torch": torch.__version__,
                                          "safetensors": safetensors.__version__})
    print(f"torch_ref: {len(argv) - 1} cases (torch {torch.__version__}, "
          f"safetensors {safetensors.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
