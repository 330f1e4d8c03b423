#!/usr/bin/env python3
"""torch_bench.py: a vectorized PyTorch implementation of LiMAML meta-training, the baseline of
`limaml bench train`.

One outer step over a batch of T tasks, batched over the tasks (no Python loop over tasks):

    phi_0 = theta_m, copied per task: (T, ...) by expand (its gradient sums over the tasks)
    phi_{k+1} = phi_k - alpha grad_phi sum_t L_s,t(phi_k,t, theta_g)      k = 0 .. n-1
    F = (1/T) sum_t [ L_q,t(phi_n,t, theta_g) + w L_s,t(phi_n,t, theta_g) ]
    g = dF/d(theta_m, theta_g)   (second order: create_graph=True; --first-order: detached)
    clip g to global L2 norm `clip` (scale clip/norm when norm > clip, as src/meta/optim.c),
    Adam (beta1, beta2, eps; bias-corrected; constant lr)

The inner gradient of the summed support loss is every task's own gradient, because each task's
parameters only reach its own loss. L_.,t is the mean over task t's rows of BCE with logits
(or (z - y)^2): per-task means over the valid rows only.

The network is the one of docs/META.md and tools/torch_ref.py (MLP meta block only):
    E = MLP_meta(meta)                        [nmeta, meta_hidden..., E], ReLU between layers
    x = [meta | dense | T_1[cat_1] | ... | T_C[cat_C] | E]
    z = MLP_global(x)                          [nin, global_hidden..., 1]
with the flat parameter buffers theta_m, theta_g in the lm_mlp layout (per layer W (out, in)
row-major then b (out); theta_g is the global MLP then the tables (buckets_c, dim_c)).

Vectorization (all exact; `--check` compares them all with a per-task loop that runs
tools/torch_ref.py's own run_task):
  - the meta block runs on the tasks' rows padded to (T, Bmax, nmeta) with torch.baddbmm and
    per-task weights (T, out, in); or, when every task's rows share their meta features (users:
    MovieLens), on one row per task (T, nmeta) ("uniform meta", --uniform-meta auto);
  - the global block (shared weights) runs on the packed valid rows (--layout packed, default)
    or on all T * Bmax padded rows with zero weight on the pads (--layout padded);
  - layer 0 of the global MLP is split (--l0-split, default): [meta|dense|tables] W0^T + b0
    does not move during the inner loop and is formed once per outer step and split; only
    E W0[:, E cols]^T is recomputed per inner step. --no-l0-split concatenates x every time.
All batches are built before the timed runs (gathering, padding and copying are not timed).

Input: DATA.safetensors (format "lm_torchbench" version 1), read with
safetensors.torch.load_file. Tensors (P is "S" for the support rows, "Q" for the query rows;
R_P = the rows of all tasks of that split, back to back in task order):
    P.meta     float32 (R_P, nmeta)
    P.dense    float32 (R_P, ndense)
    P.cat      int64 or int32 (R_P, ncat)      table row ids, 0 <= id < buckets_c
    P.label    float32 (R_P)
    P.offsets  int64 (ntask + 1)               task i's rows are [offsets[i], offsets[i+1])
    theta_m    float32 (meta_np)      optional initial parameters (--init FILE overrides)
    theta_g    float32 (global_np)    optional
    batches    int64 (nbatch + 1)     optional: batch b is tasks [batches[b], batches[b+1]);
                                      without it batch b is tasks (b*T + i) mod ntask, i < T
Metadata (all strings, as safetensors requires):
    lm_torchbench   "1"
    nmeta, ndense   feature counts; ncat = len(cat_buckets)
    cat_buckets     comma list of table rows, e.g. "1683" ("" for none)
    cat_dim         comma list of table widths, e.g. "8"
    emb_dim         E (default "16")
    meta_hidden     comma list (default "32");  global_hidden  comma list (default "64,32")
    meta_in_global  "1" (default) or "0";        loss "bce" (default) or "mse"
    inner_steps     n (default "1");   alpha  inner learning rate (default "0.1")
    first_order     "0" (default) or "1";        support_weight  w (default "0")
    tasks_per_batch T (default "32");  outer_steps  outer steps per run (default: one pass)
    lr, clip, beta1, beta2, eps   (defaults "0.001", "1", "0.9", "0.999", "1e-8")
    threads         torch intra-/inter-op threads (default: all cores);  seed (default "1")
Flags on the command line override the metadata. theta_m/theta_g from --init FILE (a
safetensors file holding theta_m and theta_g, e.g. a case file or a checkpoint) or from the
data file give the starting point; otherwise Kaiming-uniform MLPs (U(+-sqrt(6/fan_in)),
sqrt(3/fan_in) for the last layer, zero biases) and N(0, 1/dim) tables from torch's RNG.

Output: one JSON object on stdout: tasks_per_s (median over --repeats timed runs of --steps
outer steps each, every run from the same initial parameters and Adam state; a first, untimed
run is the warm-up and gives the loss curve), the runs, the loss curve (per outer step: the
objective F, the support loss before adaptation (mean over tasks), the gradient norm before
clipping), torch version, threads, BLAS (torch.__config__.show() excerpt, which library provides
sgemm_ and what /proc/self/maps holds after a matmul), the padding efficiency.

Threads: --threads N sets torch.set_num_threads(N), set_num_interop_threads(N) and
OMP_NUM_THREADS; OpenBLAS gets --blas-threads (default 1). On 2 cores, libgomp's spinning
threads beside 2 OpenBLAS pthreads oversubscribe the cores and run 2-20x slower (measured);
the batch's matrices are small, so BLAS-level threads buy nothing anyway.

Usage:
    torch_bench.py DATA.safetensors [flags]
    torch_bench.py --synthetic equal|ml [flags]     (48 + 16 rows per task, or MovieLens-like)
    torch_bench.py --synthetic ml --write OUT.safetensors   (write the input, then bench it)
    torch_bench.py --check                          (vectorized vs per-task loop gradients)
Needs torch and safetensors (scripts/setup-pyref.sh makes such a Python).
"""
import argparse
import ctypes
import ctypes.util
import json
import math
import os
import platform
import statistics
import struct
import sys
import time

MAGIC = "lm_torchbench"
VERSION = "1"

# MovieLens-100K, warm users under ../shared/PROTOCOL.md: log of the user's example count has
# mean 4.287 and sd 0.882 (counts 20 .. 636); train = floor(0.6 m), support = ceil(0.75 train).
ML_LOGM_MU, ML_LOGM_SD, ML_M_MIN, ML_M_MAX = 4.287, 0.882, 20, 737


# ---- arguments and thread environment (before torch is imported) ---------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", help="input .safetensors (format lm_torchbench 1)")
    p.add_argument("--synthetic", choices=["equal", "ml"],
                   help="generate the input: equal-size tasks, or MovieLens-like sizes")
    p.add_argument("--support-rows", type=int, default=48, help="--synthetic equal (48)")
    p.add_argument("--query-rows", type=int, default=16, help="--synthetic equal (16)")
    p.add_argument("--ml-data", help="--synthetic ml: draw task sizes from this u.data "
                   "(the warm users' protocol splits) instead of the fitted log-normal")
    p.add_argument("--varying-meta", action="store_true",
                   help="--synthetic: meta features differ per row (default: one per task)")
    p.add_argument("--write", metavar="OUT", help="write the (synthetic) input to OUT first")
    p.add_argument("--init", metavar="FILE", help="safetensors with theta_m, theta_g")
    p.add_argument("--threads", type=int, help="torch intra- and inter-op threads, OpenMP")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="OpenBLAS threads (1: torch's threads run the batch, BLAS calls stay "
                   "serial; more than 1 beside 2+ torch threads oversubscribes: see the report)")
    p.add_argument("--tasks-per-batch", "-T", type=int)
    p.add_argument("--inner-steps", "-n", type=int)
    p.add_argument("--alpha", type=float)
    p.add_argument("--first-order", action="store_const", const=True, default=None)
    p.add_argument("--support-weight", type=float)
    p.add_argument("--steps", type=int, help="outer steps per run (default 20; data: a pass)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (5)")
    p.add_argument("--curve", type=int, default=50, help="loss-curve steps reported (50)")
    p.add_argument("--lr", type=float)
    p.add_argument("--clip", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--layout", choices=["packed", "padded"], default="packed",
                   help="global block on packed rows (default) or on all padded rows")
    p.add_argument("--no-l0-split", dest="l0_split", action="store_false",
                   help="recompute the whole layer 0 of the global MLP every forward")
    p.add_argument("--uniform-meta", choices=["auto", "off"], default="auto",
                   help="one meta-block row per task when a task's rows share meta features")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--check", action="store_true",
                   help="compare the vectorized gradients with a per-task loop, then exit")
    a = p.parse_args(argv)
    if not a.check and not a.data and not a.synthetic:
        p.error("give DATA.safetensors, --synthetic or --check")
    if a.data and a.synthetic:
        p.error("give either DATA.safetensors or --synthetic")
    return a


def read_header_metadata(path):
    """The metadata of a safetensors file without torch (8-byte length, then JSON)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__") or {}


def thread_count(a):
    if a.threads:
        return a.threads
    if a.data:
        t = read_header_metadata(a.data).get("threads")
        if t:
            return int(t)
    return 1 if a.check else (os.cpu_count() or 1)


if __name__ == "__main__":
    ARGS = parse_args(sys.argv[1:])
    THREADS = thread_count(ARGS)
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    for _v in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GOTO_NUM_THREADS"):
        os.environ[_v] = str(ARGS.blas_threads)

import torch  # noqa: E402
import torch.nn.functional as tf  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_ref  # noqa: E402  (layout helpers; the per-task reference in --check)


# ---- threads and BLAS ------------------------------------------------------------------------

def openblas_lib():
    for name in ("libopenblas.so.0", "libblas.so.3"):
        try:
            lib = ctypes.CDLL(name)
            lib.openblas_get_num_threads  # raises AttributeError when absent
            return lib
        except (OSError, AttributeError):
            pass
    return None


def set_threads(n, blas_threads):
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        pass  # already set (only possible once per process)
    lib = openblas_lib()
    if lib is not None:
        lib.openblas_set_num_threads(ctypes.c_int(blas_threads))


class DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def symbol_provider(handle_path, sym):
    """The file that provides `sym` in the lookup scope of the library at handle_path."""
    try:
        h = ctypes.CDLL(handle_path)
        addr = ctypes.cast(getattr(h, sym), ctypes.c_void_p).value
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        dladdr = getattr(libc, "dladdr", None)
        if dladdr is None:
            dladdr = ctypes.CDLL(ctypes.util.find_library("dl")).dladdr
        info = DlInfo()
        if dladdr(ctypes.c_void_p(addr), ctypes.byref(info)):
            return os.path.realpath(info.dli_fname.decode())
    except (OSError, AttributeError, TypeError):
        pass
    return None


def blas_report():
    a = torch.randn(512, 512)
    b = torch.randn(512, 512)
    a @ b
    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        a @ b
    gflops = 2 * 512 ** 3 * reps / (time.perf_counter() - t0) / 1e9
    maps = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and ("blas" in parts[5] or "lapack" in parts[5]):
                maps.add(parts[5])
    cfg = torch.__config__.show()
    excerpt = [s.strip() for s in cfg.replace(", ", "\n").splitlines()
               if any(k in s for k in ("BLAS", "LAPACK", "MKL", "OpenMP", "CPU capability"))]
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    sgemm = symbol_provider(torch_lib, "sgemm_")
    lib = openblas_lib()
    ob = {}
    if lib is not None:
        lib.openblas_get_config.restype = ctypes.c_char_p
        ob = {"config": lib.openblas_get_config().decode(),
              "num_threads": lib.openblas_get_num_threads()}
    return {
        "config_excerpt": excerpt,
        "libblas.so.3": os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3"),
        "mapped": sorted(maps),
        "sgemm_provider": sgemm,
        "openblas": any("openblas" in m for m in maps) and bool(sgemm and "openblas" in sgemm),
        "netlib_reference_mapped": any("/blas/libblas" in m for m in maps),
        "openblas_runtime": ob,
        "sgemm_512_gflops": round(gflops, 1),
    }


# ---- the network -----------------------------------------------------------------------------

def ints(s):
    return [int(x) for x in str(s).split(",") if x.strip() != ""]


class Net:
    """Layout of the network; also has the attributes torch_ref.net_loss/run_task read."""

    def __init__(self, nmeta, ndense, cat_buckets, cat_dim, emb_dim=16, meta_hidden=(32,),
                 global_hidden=(64, 32), meta_in_global=True, loss="bce"):
        self.meta_kind = "mlp"
        self.nmeta, self.ndense = nmeta, ndense
        self.cat_buckets, self.cat_dim = list(cat_buckets), list(cat_dim)
        self.ncat = len(self.cat_buckets)
        self.E = emb_dim
        self.meta_hidden, self.global_hidden = list(meta_hidden), list(global_hidden)
        self.meta_in_global = bool(meta_in_global)
        self.loss = loss
        if loss not in ("bce", "mse") or len(self.cat_dim) != self.ncat:
            raise ValueError("bad network description")
        self.nin = (nmeta if self.meta_in_global else 0) + ndense + sum(self.cat_dim) + emb_dim
        self.meta_sizes = [nmeta] + self.meta_hidden + [emb_dim]
        self.global_sizes = [self.nin] + self.global_hidden + [1]
        self.meta_np = torch_ref.mlp_nparams(self.meta_sizes)
        self.meta_task_np = self.meta_np
        self.global_mlp_np = torch_ref.mlp_nparams(self.global_sizes)
        self.cat_off, off = [], self.global_mlp_np
        for b, d in zip(self.cat_buckets, self.cat_dim):
            self.cat_off.append(off)
            off += b * d
        self.global_np = off

    def describe(self):
        return {"nmeta": self.nmeta, "ndense": self.ndense, "cat_buckets": self.cat_buckets,
                "cat_dim": self.cat_dim, "emb_dim": self.E, "meta_sizes": self.meta_sizes,
                "global_sizes": self.global_sizes, "meta_np": self.meta_np,
                "global_np": self.global_np, "loss": self.loss}

    @staticmethod
    def mlp_views(params, sizes):
        """[(W (out, in), b (out))] views of a flat lm_mlp buffer."""
        out, off = [], 0
        for i, o in zip(sizes[:-1], sizes[1:]):
            W = params[off:off + o * i].view(o, i)
            off += o * i
            out.append((W, params[off:off + o]))
            off += o
        return out

    def init_params(self, gen, dtype):
        def mlp(sizes):
            parts = []
            for l, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
                bound = math.sqrt((6.0 if l + 2 < len(sizes) else 3.0) / i)
                parts.append((torch.rand(o * i, generator=gen, dtype=torch.float64) * 2 - 1)
                             * bound)
                parts.append(torch.zeros(o, dtype=torch.float64))
            return parts
        tm = torch.cat(mlp(self.meta_sizes))
        g = mlp(self.global_sizes)
        for b, d in zip(self.cat_buckets, self.cat_dim):
            g.append(torch.randn(b * d, generator=gen, dtype=torch.float64) / math.sqrt(d))
        return tm.to(dtype), torch.cat(g).to(dtype)


# ---- data ------------------------------------------------------------------------------------

class Data:
    """All tasks: per split the packed rows and offsets (tensors as in the file format)."""

    def __init__(self, net, t, meta):
        self.net, self.t, self.meta = net, t, meta
        self.ntask = t["S.offsets"].numel() - 1
        for P in ("S", "Q"):
            R = int(t[P + ".offsets"][-1])
            if t[P + ".offsets"].numel() != self.ntask + 1:
                raise ValueError(f"{P}.offsets: {self.ntask + 1} entries expected")
            shapes = {"meta": (R, net.nmeta), "dense": (R, net.ndense),
                      "cat": (R, net.ncat), "label": (R,)}
            for k, s in shapes.items():
                name = f"{P}.{k}"
                if name not in t and k == "cat" and net.ncat == 0:
                    t[name] = torch.zeros(R, 0, dtype=torch.int64)
                if tuple(t[name].shape) != s:
                    raise ValueError(f"{name}: shape {tuple(t[name].shape)}, expected {s}")
            t[P + ".cat"] = t[P + ".cat"].long()
        self.uniform = {P: self.meta_uniform(P) for P in ("S", "Q")}

    def meta_uniform(self, P):
        m, off = self.t[P + ".meta"], self.t[P + ".offsets"]
        if m.shape[0] == 0:
            return True
        cnt = off[1:] - off[:-1]
        first = m[off[:-1].clamp(max=m.shape[0] - 1)]
        return bool((m == first.repeat_interleave(cnt, dim=0)).all())

    def batches(self, T, steps):
        if "batches" in self.t:
            bo = self.t["batches"].tolist()
            nb = len(bo) - 1
            return [list(range(bo[s % nb], bo[s % nb + 1])) for s in range(steps)]
        return [[(s * T + i) % self.ntask for i in range(T)] for s in range(steps)]


def synth(net, kind, ntask, a, gen):
    """Synthetic tasks: users with fixed meta features (age, gender, one-hot occupation), items
    with 19 genre flags + year and an id from a Zipf-like popularity; labels from a hidden
    logistic model so that the loss can fall. Shapes follow net (nmeta, ndense, tables)."""
    if kind == "equal":
        S = torch.full((ntask,), a.support_rows, dtype=torch.int64)
        Q = torch.full((ntask,), a.query_rows, dtype=torch.int64)
    else:
        if a.ml_data:
            cnt = {}
            with open(a.ml_data) as f:
                for line in f:
                    u = int(line.split()[0])
                    cnt[u] = cnt.get(u, 0) + 1
            m = torch.tensor([v for u, v in sorted(cnt.items()) if u % 5 != 0])
            m = m[torch.randint(len(m), (ntask,), generator=gen)]
        else:
            m = torch.exp(torch.randn(ntask, generator=gen, dtype=torch.float64) * ML_LOGM_SD
                          + ML_LOGM_MU).round().clamp(ML_M_MIN, ML_M_MAX).long()
        tr = (m.double() * 0.6).floor().long()
        S = (tr.double() * 0.75).ceil().long()
        Q = tr - S
    nm, nd = net.nmeta, net.ndense
    user_meta = torch.zeros(ntask, nm)
    if nm >= 3:
        user_meta[:, 0] = torch.rand(ntask, generator=gen) * 0.6 + 0.1
        user_meta[:, 1] = (torch.rand(ntask, generator=gen) < 0.7).float()
        occ = torch.randint(nm - 2, (ntask,), generator=gen)
        user_meta[torch.arange(ntask), 2 + occ] = 1
    elif nm:
        user_meta[:] = torch.rand(ntask, nm, generator=gen)
    user_pref = torch.randn(ntask, nd, generator=gen) * 0.8
    user_bias = torch.randn(ntask, generator=gen) * 0.7
    t = {}
    for P, cnt in (("S", S), ("Q", Q)):
        R = int(cnt.sum())
        tid = torch.repeat_interleave(torch.arange(ntask), cnt)
        meta = user_meta[tid]
        if a.varying_meta:
            meta = meta + 0.1 * torch.rand(R, nm, generator=gen)
        dense = (torch.rand(R, nd, generator=gen) < 0.12).float()
        if nd:
            dense[:, -1] = torch.rand(R, generator=gen) * 0.7 + 0.28
        cats, item_bias = [], torch.zeros(R)
        for b in net.cat_buckets:
            # Zipf-like popularity over ids 1 .. b-1 (id 0 unused, as MovieLens)
            u = torch.rand(R, generator=gen)
            ids = (1 + ((b - 1) ** u - 1)).long().clamp(1, b - 1) if b > 1 else torch.zeros(R)
            cats.append(ids.long())
            item_bias += torch.sin(ids.double() * 1.7).float() * 0.8
        cat = torch.stack(cats, 1) if cats else torch.zeros(R, 0, dtype=torch.int64)
        logit = user_bias[tid] + item_bias + (dense * user_pref[tid]).sum(1) - 0.2
        label = (torch.rand(R, generator=gen) < torch.sigmoid(logit)).float()
        t.update({P + ".meta": meta.contiguous(), P + ".dense": dense.contiguous(),
                  P + ".cat": cat.contiguous(), P + ".label": label,
                  P + ".offsets": torch.cat([torch.zeros(1, dtype=torch.int64),
                                             cnt.cumsum(0)])})
    return t


# ---- one split of a batch, prepared for the vectorized passes --------------------------------

class Split:
    """The rows of one split (support or query) of a batch of tasks, gathered once."""

    def __init__(self, data, P, tasks, layout, uniform, dtype):
        t = data.t
        off = t[P + ".offsets"]
        tasks = torch.tensor(tasks, dtype=torch.int64)
        T = len(tasks)
        starts, cnt = off[tasks], off[tasks + 1] - off[tasks]
        self.T, self.valid = T, int(cnt.sum())
        self.Bmax = Bmax = int(cnt.max()) if T else 0
        self.padded_eff = self.valid / (T * Bmax) if T * Bmax else 1.0
        tid = torch.repeat_interleave(torch.arange(T), cnt)          # (valid)
        first = torch.cumsum(cnt, 0) - cnt
        j = torch.arange(self.valid) - first[tid]
        src = starts[tid] + j                                          # rows in the file
        pos = tid * Bmax + j                                           # places in (T, Bmax)
        inv = (1.0 / cnt.clamp(min=1).double())
        if layout == "packed":
            self.rows = src
            self.tid = tid
            self.w = inv[tid].to(dtype)
            self.pos = pos
        else:  # padded: every (task, slot), pads read row src[0] (any valid row) at weight 0
            n = T * Bmax
            rows = torch.full((n,), int(src[0]) if self.valid else 0, dtype=torch.int64)
            rows[pos] = src
            w = torch.zeros(n, dtype=dtype)
            w[pos] = inv[tid].to(dtype)
            self.rows, self.w = rows, w
            self.tid = torch.arange(T).repeat_interleave(Bmax)
            self.pos = None                                            # identity
        self.N = self.rows.numel()                                     # rows the global block runs
        self.meta = t[P + ".meta"][self.rows].to(dtype)
        self.dense = t[P + ".dense"][self.rows].to(dtype)
        self.cat = t[P + ".cat"][self.rows]
        self.label = t[P + ".label"][self.rows].to(dtype)
        self.uniform = uniform
        if uniform:
            m = t[P + ".meta"]
            self.meta_task = torch.zeros(T, m.shape[1], dtype=dtype)
            has = cnt > 0
            self.meta_task[has] = m[starts[has]].to(dtype)
        else:
            mp = torch.zeros(T * Bmax, data.net.nmeta, dtype=dtype)
            mp[pos] = t[P + ".meta"][src].to(dtype)
            self.meta_pad = mp.view(T, Bmax, data.net.nmeta)


class Model:
    """The vectorized passes for one network and one set of options."""

    def __init__(self, net, l0_split):
        self.net, self.l0_split = net, l0_split

    def fixed_cols(self, psi_mlp, tables, sp):
        """[meta | dense | tables] of the rows: (N, nin - E). Depends on theta_g (tables)."""
        cols = []
        if self.net.meta_in_global:
            cols.append(sp.meta)
        cols.append(sp.dense)
        for c, tab in enumerate(tables):
            cols.append(tf.embedding(sp.cat[:, c], tab))
        return torch.cat(cols, 1)

    def prepare(self, psi_mlp, tables, sp):
        """What does not move during the inner loop: layer 0 on the fixed columns, or them."""
        x = self.fixed_cols(psi_mlp, tables, sp)
        if not self.l0_split:
            return x
        W0, b0 = psi_mlp[0]
        return torch.addmm(b0, x, W0[:, :self.net.nin - self.net.E].t())

    def meta_forward(self, phi, sp):
        """E per task (T, E) on the uniform path, else per padded row (T, Bmax, E)."""
        L = len(phi)
        if sp.uniform:
            h = sp.meta_task
            for l, (W, b) in enumerate(phi):
                h = torch.baddbmm(b.unsqueeze(2), W, h.unsqueeze(2)).squeeze(2)
                if l < L - 1:
                    h = torch.relu(h)
            return h
        h = sp.meta_pad
        for l, (W, b) in enumerate(phi):
            h = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))
            if l < L - 1:
                h = torch.relu(h)
        return h

    def loss_sum(self, phi, psi_mlp, pre, sp):
        """sum over the tasks of each task's mean loss, at per-task meta parameters phi."""
        E = self.net.E
        W0, b0 = psi_mlp[0]
        Em = self.meta_forward(phi, sp)
        if self.l0_split:
            WE = W0[:, self.net.nin - E:]
            if sp.uniform:
                a0 = pre + (Em @ WE.t()).index_select(0, sp.tid)
            else:
                Er = Em.reshape(-1, E)
                if sp.pos is not None:
                    Er = Er.index_select(0, sp.pos)
                a0 = torch.addmm(pre, Er, WE.t())
        else:
            if sp.uniform:
                Er = Em.index_select(0, sp.tid)
            else:
                Er = Em.reshape(-1, E)
                if sp.pos is not None:
                    Er = Er.index_select(0, sp.pos)
            a0 = torch.addmm(b0, torch.cat([pre, Er], 1), W0.t())
        h = a0
        for W, b in psi_mlp[1:]:
            h = torch.addmm(b, torch.relu(h), W.t())
        z = h.view(-1)
        y = sp.label
        if self.net.loss == "bce":
            l = tf.binary_cross_entropy_with_logits(z, y, reduction="none")
        else:
            l = (z - y) ** 2
        return (l * sp.w).sum()

    def objective(self, theta_m, theta_g, S, Q, n, alpha, first_order, w):
        """F (mean over the T tasks) and the mean support loss before adaptation."""
        net = self.net
        psi_mlp = Net.mlp_views(theta_g[:net.global_mlp_np], net.global_sizes)
        tables = [theta_g[o:o + b * d].view(b, d)
                  for o, b, d in zip(net.cat_off, net.cat_buckets, net.cat_dim)]
        T = Q.T
        phi = [(W.expand(T, *W.shape), b.expand(T, *b.shape))
               for W, b in Net.mlp_views(theta_m, net.meta_sizes)]
        ls0 = torch.zeros((), dtype=theta_m.dtype)
        preS = self.prepare(psi_mlp, tables, S) if (n > 0 or w > 0) else None
        for k in range(n):
            ls = self.loss_sum(phi, psi_mlp, preS, S)
            if k == 0:
                ls0 = ls.detach()
            flat = [p for Wb in phi for p in Wb]
            g = torch.autograd.grad(ls, flat, create_graph=not first_order, retain_graph=True)
            new = [p - alpha * gp for p, gp in zip(flat, g)]
            phi = [(new[2 * l], new[2 * l + 1]) for l in range(len(phi))]
        F = self.loss_sum(phi, psi_mlp, self.prepare(psi_mlp, tables, Q), Q)
        if w > 0:
            F = F + w * self.loss_sum(phi, psi_mlp, preS, S)
        return F / T, ls0 / T


class Adam:
    """src/meta/optim.c: global-norm clip (scale clip/norm when norm > clip), then Adam."""

    def __init__(self, params, lr, clip, beta1, beta2, eps):
        self.p, self.lr, self.clip = params, lr, clip
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.step = 0

    @torch.no_grad()
    def update(self):
        norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in self.p))
        scale = self.clip / norm if self.clip > 0 and norm > self.clip else 1.0
        self.step += 1
        bc1, bc2 = 1 - self.b1 ** self.step, 1 - self.b2 ** self.step
        for p, m, v in zip(self.p, self.m, self.v):
            g = p.grad * scale
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = v.sqrt().mul_(1 / math.sqrt(bc2)).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / bc1)
            p.grad = None
        return norm


# ---- running ---------------------------------------------------------------------------------

def opt(a_val, meta, key, conv, default):
    if a_val is not None:
        return a_val
    if key in meta and meta[key] != "":
        return conv(meta[key])
    return default


def net_from_meta(m):
    return Net(int(m["nmeta"]), int(m["ndense"]), ints(m.get("cat_buckets", "")),
               ints(m.get("cat_dim", "")), int(m.get("emb_dim", 16)),
               ints(m.get("meta_hidden", "32")), ints(m.get("global_hidden", "64,32")),
               m.get("meta_in_global", "1") == "1", m.get("loss", "bce"))


def run(a, threads):
    set_threads(threads, a.blas_threads)
    dtype = getattr(torch, a.dtype)
    if a.data:
        with safe_open(a.data, framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get(MAGIC) != VERSION:
            sys.exit(f"torch_bench: {a.data}: not an {MAGIC} {VERSION} file")
        t = load_file(a.data)
        net = net_from_meta(meta)
    else:
        meta = {}
        net = Net(23, 20, [1683], [8])
    seed = opt(a.seed, meta, "seed", int, 1)
    T = opt(a.tasks_per_batch, meta, "tasks_per_batch", int, 32)
    n = opt(a.inner_steps, meta, "inner_steps", int, 1)
    alpha = opt(a.alpha, meta, "alpha", float, 0.1)
    fo = opt(a.first_order, meta, "first_order", lambda s: s == "1", False)
    w = opt(a.support_weight, meta, "support_weight", float, 0.0)
    lr = opt(a.lr, meta, "lr", float, 1e-3)
    clip = opt(a.clip, meta, "clip", float, 1.0)
    b1, b2, eps = (float(meta.get(k, d)) for k, d in
                   (("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8)))
    gen = torch.Generator().manual_seed(seed)
    if not a.data:
        steps = a.steps or 20
        t = synth(net, a.synthetic, T * steps, a, gen)
    data = Data(net, t, meta)
    if a.data:
        nb = data.t["batches"].numel() - 1 if "batches" in data.t else \
            (data.ntask + T - 1) // T
        steps = opt(a.steps, meta, "outer_steps", int, nb)
    if a.init:
        it = load_file(a.init)
        theta0 = (it["theta_m"], it["theta_g"])
    elif "theta_m" in data.t:
        theta0 = (data.t["theta_m"], data.t["theta_g"])
    else:
        theta0 = net.init_params(gen, torch.float32)
    if theta0[0].numel() != net.meta_np or theta0[1].numel() != net.global_np:
        sys.exit(f"torch_bench: theta_m/theta_g have {theta0[0].numel()}/{theta0[1].numel()} "
                 f"values, the network needs {net.meta_np}/{net.global_np}")
    if a.write:
        md = {MAGIC: VERSION, "nmeta": str(net.nmeta), "ndense": str(net.ndense),
              "cat_buckets": ",".join(map(str, net.cat_buckets)),
              "cat_dim": ",".join(map(str, net.cat_dim)), "emb_dim": str(net.E),
              "meta_hidden": ",".join(map(str, net.meta_hidden)),
              "global_hidden": ",".join(map(str, net.global_hidden)),
              "meta_in_global": "1" if net.meta_in_global else "0", "loss": net.loss,
              "inner_steps": str(n), "alpha": repr(alpha), "first_order": "1" if fo else "0",
              "support_weight": repr(w), "tasks_per_batch": str(T), "outer_steps": str(steps),
              "lr": repr(lr), "clip": repr(clip), "beta1": repr(b1), "beta2": repr(b2),
              "eps": repr(eps), "threads": str(threads), "seed": str(seed)}
        out = {k: v.contiguous() for k, v in data.t.items()}
        out["theta_m"] = theta0[0].float().contiguous()
        out["theta_g"] = theta0[1].float().contiguous()
        save_file(out, a.write, metadata=md)

    uniform = a.uniform_meta == "auto" and data.uniform["S"] and data.uniform["Q"]
    batches = data.batches(T, steps)
    prepared = [(Split(data, "S", b, a.layout, uniform, dtype),
                 Split(data, "Q", b, a.layout, uniform, dtype)) for b in batches]
    model = Model(net, a.l0_split)

    def one_run(record):
        tm = theta0[0].to(dtype).clone().requires_grad_(True)
        tg = theta0[1].to(dtype).clone().requires_grad_(True)
        adam = Adam([tm, tg], lr, clip, b1, b2, eps)
        curve = {"objective": [], "support_loss_before": [], "grad_norm": []}
        t0 = time.perf_counter()
        for S, Q in prepared:
            F, ls0 = model.objective(tm, tg, S, Q, n, alpha, fo, w)
            F.backward()
            norm = adam.update()
            if record:
                curve["objective"].append(float(F))
                curve["support_loss_before"].append(float(ls0))
                curve["grad_norm"].append(norm)
        return time.perf_counter() - t0, curve

    warm_s, curve = one_run(True)
    runs = [one_run(False)[0] for _ in range(a.repeats)]
    tasks = sum(Q.T for _, Q in prepared)
    tps = [tasks / s for s in runs]

    def eff(k):
        v = sum(sp[k].valid for sp in prepared)
        return {"valid_rows": v,
                "padded_rows": sum(sp[k].T * sp[k].Bmax for sp in prepared),
                "padded_efficiency": round(v / max(1, sum(sp[k].T * sp[k].Bmax
                                                          for sp in prepared)), 4),
                "global_block_rows": sum(sp[k].N for sp in prepared),
                "mean_rows_per_task": round(v / max(1, tasks), 2)}

    K = min(a.curve, steps)
    return {
        "tool": "torch_bench", "format": VERSION,
        "data": a.data or f"synthetic:{a.synthetic}",
        "torch": torch.__version__, "python": platform.python_version(),
        "threads": {"requested": threads, "intra_op": torch.get_num_threads(),
                    "inter_op": torch.get_num_interop_threads(),
                    "blas": a.blas_threads,
                    "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        "blas": blas_report(),
        "setting": {"tasks_per_batch": T, "inner_steps": n, "alpha": alpha,
                    "first_order": fo, "support_weight": w, "outer_steps": steps,
                    "repeats": a.repeats, "lr": lr, "clip": clip, "dtype": a.dtype,
                    "layout": a.layout, "l0_split": a.l0_split, "uniform_meta": uniform,
                    "seed": seed, "tasks": tasks},
        "net": net.describe(),
        "padding": {"support": eff(0), "query": eff(1)},
        "tasks_per_s": round(statistics.median(tps), 1),
        "tasks_per_s_runs": [round(x, 1) for x in tps],
        "step_ms_median": round(1e3 * statistics.median(runs) / len(prepared), 3),
        "warmup_run_s": round(warm_s, 4),
        "loss_curve": {k: [round(x, 7) for x in v[:K]] for k, v in curve.items()},
    }


# ---- --check: vectorized against the per-task loop of tools/torch_ref.py -----------------------

class RefCase:
    """What torch_ref.run_task reads, for one batch."""

    def __init__(self, net, data, tasks, n, alpha, fo, w):
        for k, v in vars(net).items():
            setattr(self, k, v)
        self.algo, self.steps, self.alpha = "limaml", n, alpha
        self.first_order, self.w = fo, w
        self.data, self.tasks = data, tasks
        self.task_rows = [0] * len(tasks)

    def rows(self, task, split, dtype):
        P = "S" if split == "S" else "Q"
        off = self.data.t[P + ".offsets"]
        i = self.tasks[task]
        a, b = int(off[i]), int(off[i + 1])
        t = self.data.t
        return (t[P + ".meta"][a:b].to(dtype), t[P + ".dense"][a:b].to(dtype),
                t[P + ".cat"][a:b].long(), t[P + ".label"][a:b].to(dtype))


def check():
    torch.set_num_threads(1)
    results, worst, refs = [], {"float64": 0.0, "float32": 0.0}, {}
    gen = torch.Generator().manual_seed(7)

    class A:  # synth options
        support_rows = query_rows = 0
        ml_data = None
    for varying, loss, mig in ((False, "bce", True), (True, "bce", True), (False, "mse", False)):
        net = Net(5, 4, [7, 5], [3, 2], emb_dim=4, meta_hidden=[6], global_hidden=[8, 5],
                  meta_in_global=mig, loss=loss)
        ntask = 5
        A.varying_meta = varying
        t = synth(net, "ml", ntask, A, gen)
        # small, unequal tasks (2 .. 12 rows), built from the synthetic rows
        for P, lo, hi in (("S", 2, 12), ("Q", 1, 6)):
            cnt = torch.randint(lo, hi + 1, (ntask,), generator=gen)
            off = torch.cat([torch.zeros(1, dtype=torch.int64), cnt.cumsum(0)])
            R = int(off[-1])
            base = t[P + ".offsets"]
            tid = torch.repeat_interleave(torch.arange(ntask), cnt)
            src = base[tid] + (torch.arange(R) - off[tid]) % (base[tid + 1] - base[tid])
            for k in ("meta", "dense", "cat", "label"):
                t[P + "." + k] = t[P + "." + k][src]
            if varying:
                t[P + ".meta"] = t[P + ".meta"] + torch.rand(R, net.nmeta, generator=gen)
            t[P + ".offsets"] = off
        data = Data(net, t, {})
        theta = net.init_params(gen, torch.float64)
        tasks = list(range(ntask))
        for dtype in (torch.float64, torch.float32):
            for n in (1, 2, 3):
                for fo in (False, True):
                    for w in (0.0, 0.5):
                        c = RefCase(net, data, tasks, n, 0.3, fo, w)
                        tm = theta[0].to(dtype).clone().requires_grad_(True)
                        tg = theta[1].to(dtype).clone().requires_grad_(True)
                        gm = torch.zeros(net.meta_np, dtype=dtype)
                        gg = torch.zeros(net.global_np, dtype=dtype)
                        Fref = 0.0
                        for i in range(ntask):
                            l, _, _, a, b = torch_ref.run_task(c, tm, tg, i, dtype)
                            gm += a
                            gg += b
                            Fref += l[0]
                        ref = torch.cat([gm, gg]) / ntask
                        refs[(varying, loss, str(dtype), n, w, fo)] = ref
                        Fref /= ntask
                        for layout in ("packed", "padded"):
                            for l0 in (True, False):
                                for um in ((True, False) if not varying else (False,)):
                                    S = Split(data, "S", tasks, layout, um, dtype)
                                    Q = Split(data, "Q", tasks, layout, um, dtype)
                                    tm2 = theta[0].to(dtype).clone().requires_grad_(True)
                                    tg2 = theta[1].to(dtype).clone().requires_grad_(True)
                                    F, _ = Model(net, l0).objective(tm2, tg2, S, Q, n, 0.3,
                                                                    fo, w)
                                    F.backward()
                                    got = torch.cat([tm2.grad, tg2.grad])
                                    err = float((got - ref).norm() / ref.norm())
                                    ferr = abs(float(F) - Fref) / abs(Fref)
                                    name = str(dtype).split(".")[1]
                                    worst[name] = max(worst[name], err, ferr)
                                    results.append({"dtype": name, "n": n, "first_order": fo,
                                                    "w": w, "layout": layout, "l0_split": l0,
                                                    "uniform_meta": um,
                                                    "varying_meta": varying, "loss": loss,
                                                    "meta_in_global": mig,
                                                    "grad_rel_err": err,
                                                    "objective_rel_err": ferr})
    # second order must differ from first order (the check has teeth)
    teeth = min(float((refs[k] - refs[k[:-1] + (True,)]).norm() / refs[k].norm())
                for k in refs if not k[-1])
    bad = [r for r in results if max(r["grad_rel_err"], r["objective_rel_err"])
           > (1e-10 if r["dtype"] == "float64" else 1e-5)]
    for r in bad[:10]:
        print("torch_bench: check failed:", r, file=sys.stderr)
    ok = worst["float64"] < 1e-10 and worst["float32"] < 1e-5 and teeth > 1e-3
    print(json.dumps({"check": "vectorized vs per-task loop (tools/torch_ref.py run_task)",
                      "cases": len(results), "worst_rel_err": worst,
                      "min_rel_diff_second_vs_first_order": teeth, "ok": ok,
                      "torch": torch.__version__}, indent=1))
    return 0 if ok else 1


def main():
    if ARGS.check:
        return check()
    out = run(ARGS, THREADS)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
