"""Scaling from one thread to more, measured inside one run.

    python benchmarks/bench_scaling.py [--threads 1,2] [--only W4,W5] [--seconds 60] [--engines torch,tinygrad_uu]

``python -m benchmarks --threads 1`` and ``--threads 2`` are two runs, a minute or more
apart. On a shared machine the second core is at times busy with someone else's work for
seconds on end; a two-thread run that falls into such a spell gives a scaling that tells
more about the neighbour than about the engine (PyTorch's own W4 scaling ranged 1.20-1.80
over fourteen such pairs of runs here).

Here each engine's training step runs at every thread count in turn, in one process: set
the thread count, one untimed step, one timed step, next setting, and so on for
``--seconds`` per workload. A slow phase of the whole machine then slows every setting
alike. A spell in which other work takes the second core slows only the steps that use
it, and shows here too, as a lower scaling for every engine (W4 1.26 and 1.29 in two of
five runs, the others 1.64-1.67; PyTorch 1.54-1.56 and 1.78-1.80 in the same runs). A
setting's figure is the median of its steps; the scaling is the one-thread median over
the n-thread one. Thread counts change at run time: ``tinygrad_uu.set_num_threads`` (the
BLAS through threadpoolctl) and ``torch.set_num_threads``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tinygrad_uu as tg  # noqa: E402
from benchmarks.engines import discover  # noqa: E402
from benchmarks.workloads import cases, make_data  # noqa: E402


def use_threads(engine, n: int) -> None:
    """``n`` threads for ``engine`` from its next step on."""
    if engine.key == "torch":
        from benchmarks.engines import torch_engine
        torch_engine.THREADS = n  # what its activate() sets
    else:
        tg.set_num_threads(n)
    engine.activate()


def time_steps(engines, steps, counts, seconds: float, clock=time.perf_counter) -> dict:
    """{(engine key, threads): [seconds per step]}: every (engine, thread count) in turn,
    one untimed step and one timed step each, until ``seconds`` have passed (at least
    one round)."""
    times = {(e.key, n): [] for e in engines for n in counts}
    for e in engines:  # the first step at a setting warms it (a pool starts, caches fill)
        for n in counts:
            use_threads(e, n)
            steps[e.key].run()
    end = clock() + seconds
    rounds = 0
    while rounds == 0 or clock() < end:
        order = counts if rounds % 2 == 0 else counts[::-1]
        for e in engines:
            for n in order:
                use_threads(e, n)
                steps[e.key].run()
                started = clock()
                steps[e.key].run()
                times[(e.key, n)].append(clock() - started)
        rounds += 1
    return times


def rows(case, engines, times, counts) -> list[str]:
    """Table rows: median step time at each thread count, the scaling from the first
    count to each other, and each engine's speed over PyTorch's at the same count."""
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = []
    for e in engines:
        cells = [f"{1e3 * med[(e.key, n)]:.2f} ms" for n in counts]
        scaling = [f"{med[(e.key, counts[0])] / med[(e.key, n)]:.2f}" for n in counts[1:]]
        vs_torch = "" if e.key == "torch" or ("torch", counts[0]) not in med else ", ".join(
            f"{med[('torch', n)] / med[(e.key, n)]:.2f}x" for n in counts)
        lines.append(f"| {case.workload} | {e.key} | " + " | ".join(cells) + " | "
                     + ", ".join(scaling) + f" | {vs_torch} | {len(times[(e.key, counts[0])])} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="thread counts, the first the base (default 1,2)")
    parser.add_argument("--only", default="W4,W5", help="workloads (default W4,W5)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of steps per workload")
    parser.add_argument("--engines", default="torch,tinygrad_uu-numba",
                        help="engines (default torch,tinygrad_uu-numba; torch is left out when not installed)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.threads.split(",")]
    if len(counts) < 2 or min(counts) < 1:
        parser.error(f"--threads needs two or more counts >= 1, got {args.threads!r}")
    engines, skipped = discover(args.engines.split(","))
    for key, why in skipped:
        print(f"(left out: {key}: {why})")
    print(f"# Scaling within one run, threads {args.threads}, load average "
          f"{os.getloadavg()[0]:.2f} at start\n")
    print("| workload | engine | " + " | ".join(f"{n} thread{'s' * (n > 1)}" for n in counts)
          + f" | scaling from {counts[0]} | speed over PyTorch | steps each |")
    print("|---|---|" + "---|" * len(counts) + "---|---|---|")
    for case in cases(only=args.only.split(",")):
        data = make_data(case)
        steps = {e.key: e.build(case, data) for e in engines}
        times = time_steps(engines, steps, counts, args.seconds)
        for line in rows(case, engines, times, counts):
            print(line, flush=True)
        for e in engines:
            e.deactivate()
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
