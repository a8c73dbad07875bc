"""What it costs a core to read what another core has just written.

    python benchmarks/bench_cores.py [--sizes 128,512,1024,2048,4096] [--repeats 30]

On two threads the engine's jobs split a tensor by images, and the op after a job (or
the serial numpy work between jobs) reads, on one core, what the other core wrote. How
much that costs depends on the machine: two cores that share a fast cache pay little;
on an Intel Xeon virtual machine measured here (2 vCPUs, 2 MB of L2 each), a 1 MB array
written by the other core was read at 4.1-4.6 GB/s (once 10.4) against 65-73 GB/s from
the reader's own L2 (five runs, load 0.6-0.7).

Two threads, pinned to the first two cores this process may use
(``os.sched_setaffinity``). For each size, in turn 2 x ``--repeats`` times: the array is
written by the reader itself or by the other thread, then summed by the reader twice (a
numba loop, without the GIL). Printed: the medians of the first read after each writer,
and of the second read after the other's write (the data now in the reader's cache).
Linux only (thread pinning); needs two cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def fill(values, seed):
    for i in range(values.size):
        values[i] = np.float32((i + seed) & 7)


@njit(fastmath=True, nogil=True, cache=True)
def total(values):
    s = np.float32(0)
    for i in range(values.size):
        s += values[i]
    return s


def two_cores() -> tuple[int, int]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("bench_cores: needs two cores, this process may use "
                         f"{len(cores)} ({cores})")
    return cores[0], cores[1]


def measure(sizes_kb, repeats: int = 30, cores: tuple[int, int] | None = None) -> list[dict]:
    """Per size: medians (seconds) of a read after the reader's own write ("own"), after
    the other core's write ("other"), and of the second read after the other's ("again").
    ``cores``: (reader, writer), by default ``two_cores()``."""
    reader, writer = cores or two_cores()
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {reader})
    work, done, box = threading.Event(), threading.Event(), [None]

    def other_core():
        os.sched_setaffinity(0, {writer})
        while True:
            work.wait()
            work.clear()
            if box[0] is None:
                return
            fill(box[0], 1)
            done.set()

    helper = threading.Thread(target=other_core, daemon=True)
    helper.start()
    rows = []
    try:
        for kb in sizes_kb:
            values = np.zeros(kb * 256, np.float32)
            fill(values, 0), total(values)
            times = {"own": [], "other": [], "again": []}
            for _ in range(repeats):
                for who in ("own", "other"):
                    if who == "own":
                        fill(values, 0)
                    else:
                        box[0] = values
                        work.set()
                        done.wait()
                        done.clear()
                    start = time.perf_counter()
                    total(values)
                    first = time.perf_counter()
                    total(values)
                    times[who].append(first - start)
                    if who == "other":
                        times["again"].append(time.perf_counter() - first)
            rows.append({"kb": kb, **{k: statistics.median(v) for k, v in times.items()}})
    finally:
        box[0] = None
        work.set()
        helper.join()
        os.sched_setaffinity(0, allowed)
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="128,512,1024,2048,4096", help="array sizes in KB")
    parser.add_argument("--repeats", type=int, default=30, help="reads per writer and size")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.repeats < 1 or min(sizes) < 1:
        parser.error("--sizes and --repeats must be positive")
    reader, writer = two_cores()
    rows = measure(sizes, args.repeats, (reader, writer))
    print(f"load average {os.getloadavg()[0]:.2f}; reader on core {reader}, writer on core {writer}")
    print("| size | read after its own write | after the other core's | that read again |")
    print("|---|---|---|---|")
    for r in rows:
        gb = r["kb"] / 1024 / 1024  # GB
        cells = [f"{r[k] * 1e6:.1f} us ({gb / r[k]:.1f} GB/s)" for k in ("own", "other", "again")]
        print(f"| {r['kb']} KB | " + " | ".join(cells) + " |")
    return rows


if __name__ == "__main__":
    main()
