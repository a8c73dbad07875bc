"""How the engine's threads wait for work: spinning (the default) against sleeping at once.

    python benchmarks/bench_threads.py [--threads 2] [--only W4,W7,W8] [--seconds 30]

Two measurements, each alternating the two settings inside one process, so that a busy
or drifting machine shifts both alike:

* the hand-off: an empty kernel split among the threads (``kernels.parallel._parallel``),
  after 0, 0.1 and 1 ms of other work on the calling thread, in blocks of 100 calls;
* training steps of the benchmark workloads, one step with spinning on, one with it off,
  in turn for ``--seconds`` each workload (each timed step follows one untimed step with
  the same setting).

Spinning off is ``SPIN_ROUNDS = 0``: a thread sleeps on a condition as soon as its work
is done (``TINYGRAD_UU_SPIN=0`` sets that for a whole run).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tinygrad_uu as tg  # noqa: E402
from tinygrad_uu.kernels import parallel, spinning  # noqa: E402

SETTINGS = {"spinning": spinning.SPIN_ROUNDS or 40_000, "sleeping": 0}


def use(setting: str) -> None:
    parallel.SPIN_ROUNDS = SETTINGS[setting]


def empty_kernel(out, start, stop):
    out[start:stop] += 1.0


def hand_off(gaps=(0.0, 1e-4, 1e-3), blocks=10, calls=100) -> list[str]:
    """Blocks of ``calls`` hand-offs with one setting, then with the other, in turn (a
    setting's first calls find the threads as the other left them: those are not timed)."""
    out, lines = np.zeros(8), []
    for gap in gaps:
        times = {name: [] for name in SETTINGS}
        for _ in range(blocks):
            for name in SETTINGS:
                use(name)
                for call in range(calls + 5):
                    started = time.perf_counter()
                    while time.perf_counter() - started < gap:  # other work on this thread
                        pass
                    started = time.perf_counter()
                    parallel._parallel(empty_kernel, 8, 1 << 30, out)
                    if call >= 5:
                        times[name].append(time.perf_counter() - started)
        spin, sleep = (statistics.median(times[name]) for name in SETTINGS)
        lines.append(f"| empty hand-off after {gap * 1e3:g} ms of other work | {1e6 * spin:.1f} us "
                     f"| {1e6 * sleep:.1f} us | {sleep / spin:.2f}x |")
    return lines


def steps(workloads, seconds: float) -> list[str]:
    from benchmarks.engines.tinygrad_uu_engine import load
    from benchmarks.workloads import cases, make_data
    engine = load()
    engine = engine[0] if isinstance(engine, (list, tuple)) else engine
    lines = []
    for case in cases(only=workloads):
        step = engine.build(case, make_data(case))
        times = {name: [] for name in SETTINGS}
        for name in SETTINGS:
            use(name)
            step.run()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for name in SETTINGS:
                use(name)
                step.run()
                started = time.perf_counter()
                step.run()
                times[name].append(time.perf_counter() - started)
        spin, sleep = (statistics.median(times[name]) for name in SETTINGS)
        lines.append(f"| {case.workload} {case.name} step | {1e3 * spin:.2f} ms | {1e3 * sleep:.2f} ms "
                     f"| {sleep / spin:.2f}x ({len(times['spinning'])} steps each) |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="the engine's threads (default 2)")
    parser.add_argument("--only", default="W4,W7,W8", help="workloads whose training steps to time")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of steps per workload")
    args = parser.parse_args(argv)
    tg.set_num_threads(args.threads)
    print(f"# Thread hand-off, {args.threads} threads, load average {os.getloadavg()[0]:.2f} at start\n")
    print("| measurement | spinning | sleeping | sleeping / spinning |")
    print("|---|---|---|---|")
    for line in hand_off():
        print(line)
    for line in steps(args.only.split(","), args.seconds):
        print(line)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
