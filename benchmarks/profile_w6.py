"""Where does tinygrad_uu spend W6's time? (2,000 elementwise ops on 16 numbers, fwd + bwd)

    python benchmarks/profile_w6.py               # wall-clock split, then cProfile
    python benchmarks/profile_w6.py --length 2000 --repeats 50 --top 20

With 16-element tensors the arithmetic is nothing; what is measured is the engine's own
Python: building the graph op by op, sorting it, walking it backwards. Two views:

1. wall clock, no profiler: the forward with and without graph recording (``no_grad``),
   ``topological_order`` alone, and the whole backward; medians of ``--repeats`` runs.
2. cProfile of forward + backward, functions grouped into: operator entry (Tensor
   methods), Function dispatch (``Function.apply``, ``Tensor._wrap``), the ops' numpy
   work (``forward``/``backward`` bodies), topological sort, the backward walk's own
   bookkeeping (``autograd.backward``: the grads dict, accumulation, ``release``).
   cProfile charges every Python call extra, so it inflates the many small calls:
   read its shares next to the wall-clock view, not instead of it. Builtins called
   from a function (``id``, ``dict.pop``, ``list.append``) count for their caller.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
from tinygrad_uu import autograd  # noqa: E402
from benchmarks.workloads import chain_op  # noqa: E402


def chain(x, w, n):
    h = x
    for i in range(n):
        op = chain_op(i)
        h = h + w if op == "add" else h * w if op == "mul" else h.tanh()
    return h.sum()


def wall_clock_split(n, repeats):
    rng = np.random.default_rng(0)
    x = tg.Tensor(rng.uniform(-1, 1, 16).astype(np.float32), requires_grad=True)
    w = tg.Tensor(rng.uniform(0.5, 1.5, 16).astype(np.float32), requires_grad=True)

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out

    def no_graph():
        with tg.no_grad():
            return chain(x, w, n)

    t = {k: [] for k in ("plain", "graph", "topo", "bwd", "total")}
    for _ in range(repeats):  # the measurements interleaved: a noisy neighbour hits all
        gc.collect()
        t["plain"].append(timed(no_graph)[0])
        dt, root = timed(lambda: chain(x, w, n))
        t["graph"].append(dt)
        t["topo"].append(timed(lambda: autograd.topological_order(root))[0])
        x.grad = w.grad = None
        t["bwd"].append(timed(root.backward)[0])
        del root  # one graph alive at a time, as in training
        x.grad = w.grad = None
        t["total"].append(timed(lambda: chain(x, w, n).backward())[0])
    fwd_plain, fwd_graph, topo, bwd_t, total = (statistics.median(v) for v in t.values())
    rows = [("forward, no graph (no_grad)", fwd_plain),
            ("forward, recording the graph", fwd_graph),
            ("  of which recording (difference)", fwd_graph - fwd_plain),
            ("backward (topological sort + walk)", bwd_t),
            ("  of which topological_order", topo),
            ("  of which the walk", bwd_t - topo),
            ("forward + backward", total)]
    print(f"W6 wall clock, chain of {n} ops on 16 numbers, median of {repeats} "
          f"({n / total:,.0f} ops/s):")
    for label, t in rows:
        print(f"  {label:<38} {t * 1e3:8.2f} ms  {t / n * 1e6:6.2f} us/op  "
              f"{100 * t / total:5.1f}%")
    return dict(rows)


OTHER = "other (the benchmark's loop, numpy glue)"
GROUPS = [  # (group, predicate on (file, function name)); builtins count for their caller
    ("topological sort", lambda f, fn: fn == "topological_order"),
    ("backward walk bookkeeping", lambda f, fn: f.endswith("autograd.py") and fn in
     ("backward", "release")),
    ("Function dispatch (apply, _wrap)", lambda f, fn: fn in ("apply", "_wrap", "__init__")
     and (f.endswith("autograd.py") or f.endswith("tensor.py"))),
    ("ops' numpy work (forward/backward bodies)", lambda f, fn: f.endswith("functions.py")),
    ("Tensor operator entry (__add__, _binary...)", lambda f, fn: f.endswith("tensor.py")),
    ("numpy helpers (np.result_type, ...)", lambda f, fn: "numpy" in f),
]


def profile(n, repeats, top):
    rng = np.random.default_rng(0)
    x = tg.Tensor(rng.uniform(-1, 1, 16).astype(np.float32), requires_grad=True)
    w = tg.Tensor(rng.uniform(0.5, 1.5, 16).astype(np.float32), requires_grad=True)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(repeats):
        x.grad = w.grad = None
        chain(x, w, n).backward()
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())  # tottime of everything
    groups = {g: 0.0 for g, _ in GROUPS}
    groups[OTHER] = 0.0
    calls = {g: 0 for g in groups}

    def group_of(func):
        file, _, fn = func
        return next((g for g, pred in GROUPS if pred(file, fn)), OTHER)

    for func, (cc, nc, tt, ct, callers) in stats.stats.items():
        if func[0] == "~" and callers:  # a builtin (id, dict.pop...): charge its callers
            for caller, (_, _, ctt, _) in callers.items():
                groups[group_of(caller)] += ctt
            continue
        g = group_of(func)
        groups[g] += tt
        calls[g] += nc
    print(f"\ncProfile, {repeats} x (forward + backward), own time (tottime) by group; "
          f"{total:.2f} s profiled:")
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:<44} {t:7.3f} s  {100 * t / total:5.1f}%  "
              f"{calls[g] / repeats / n:5.1f} calls/op")
    print(f"\ntop {top} functions by own time:")
    stats.sort_stats("tottime").print_stats(top)
    return groups


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--length", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--backend", default=None, help="kernel backend (no effect on W6's ops)")
    args = p.parse_args(argv)
    if args.backend:
        import tinygrad_uu.kernels as kernels
        kernels.set_backend(args.backend)
    for _ in range(3):  # warm up
        x = tg.Tensor(np.ones(16, np.float32), requires_grad=True)
        chain(x, x, args.length).backward()
    wall_clock_split(args.length, args.repeats)
    profile(args.length, max(1, args.repeats // 3), args.top)


if __name__ == "__main__":
    main()
