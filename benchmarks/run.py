"""Run the benchmark suite: ``python -m benchmarks`` or ``python benchmarks/run.py``.

    python -m benchmarks                      # every workload on every engine installed
    python -m benchmarks --quick              # a reduced set, under 2 minutes
    python -m benchmarks --only W3,W6 --engines torch,tinygrad_uu --json runs/b.json

Prints the machine and a markdown table; writes ``benchmarks.md`` and ``benchmarks.png``
(the ratios as bars) into ``--out`` and, with ``--json``, every raw figure.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

# Nothing heavy is imported before the command line is read: --threads must reach the
# BLAS and numba through the environment before numpy is first imported.
from benchmarks import WORKLOADS  # noqa: E402  (the package imports nothing heavy)

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "TINYGRAD_UU_NUM_THREADS",
                    "NUM_CPU_THREADS")  # the last one is tinygrad's


def set_threads(n: int) -> None:
    """Give every engine ``n`` threads: BLAS, OpenMP and numba read these at import."""
    if "numpy" in sys.modules and os.environ.get("OPENBLAS_NUM_THREADS") != str(n):
        print(f"warning: numpy was imported before --threads {n}; its BLAS keeps its own "
              "thread count", file=sys.stderr)
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Workloads:\n" + "\n".join(f"  {k}: {v}" for k, v in
                                                                  WORKLOADS.items()))
    p.add_argument("--quick", action="store_true",
                   help="smaller set, fewer repeats (under 2 minutes); leaves tinygrad out "
                        "unless --engines names it (it compiles for minutes on a cold cache)")
    p.add_argument("--only", type=_csv, default=None, metavar="W1,W3",
                   help="run only these workloads")
    p.add_argument("--engines", type=_csv, default=None, metavar="torch,tinygrad_uu",
                   help="run only these engines (torch, numpy, tinygrad_uu, tinygrad_uu-numba, "
                        "tinygrad_uu-numpy, tinygrad, micrograd)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads for every engine: torch, numba, the BLAS (default 2)")
    p.add_argument("--check-only", action="store_true",
                   help="cross-check the engines, time nothing")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per engine (5; quick 3)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds one measurement lasts at least (0.2; quick 0.05)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed runs before timing, after the check's run (2; quick 1)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="per engine and case: a slow engine gets fewer repeats beyond this "
                        "(60; quick 10)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write raw figures here")
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks"),
                   help="folder for benchmarks.md and benchmarks.png (default runs/benchmarks)")
    p.add_argument("--no-chart", action="store_true", help="do not draw the PNG")
    p.add_argument("--verbose", action="store_true", help="print tracebacks of engine errors")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    from benchmarks import report
    from benchmarks.engines import discover, torch_engine
    from benchmarks.workloads import cases
    torch_engine.THREADS = args.threads
    wanted = [e.lower() for e in args.engines] if args.engines else None
    started = time.perf_counter()
    engines, skipped = discover(wanted)
    if args.quick and wanted is None:
        skipped += [(e.key, "left out of --quick (compiles kernels for minutes on a cold "
                    "cache); name it with --engines to run it") for e in engines
                    if e.key == "tinygrad"]
        engines = [e for e in engines if e.key != "tinygrad"]
    selected = cases(quick=args.quick, only=args.only)
    if not selected:
        raise SystemExit(f"no workload matches --only {args.only}; choose from {list(WORKLOADS)}")
    repeats = 0 if args.check_only else args.repeats or (3 if args.quick else 5)
    min_time = args.min_time if args.min_time is not None else (0.05 if args.quick else 0.2)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    max_seconds = args.max_seconds or (10.0 if args.quick else 60.0)
    busy = report.busy_warning(report.machine_info())
    if busy:
        print(busy, flush=True)
    print(f"engines: {', '.join(e.name for e in engines) or 'none'}"
          + (f"; skipped: {', '.join(k for k, _ in skipped)}" if skipped else ""), flush=True)
    results = run(selected, engines, skipped, repeats=repeats, min_time=min_time,
                  max_seconds=max_seconds, warmup=warmup, verbose_errors=args.verbose,
                  settings={"quick": args.quick, "threads": args.threads,
                            "argv": list(argv) if argv is not None else sys.argv[1:]})
    text = report.table(results)
    print()
    print(text)
    report.write_table(args.out / "benchmarks.md", text)
    if not args.no_chart:
        print(f"chart: {report.write_chart(args.out / 'benchmarks.png', results)}")
    if args.json:
        report.write_json(args.json, results)
        print(f"json: {args.json}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return results


def run(selected, engines, skipped=(), repeats=5, min_time=0.2, max_seconds=60.0, warmup=2,
        verbose_errors=False, settings=None, log=None) -> dict:
    """Run ``selected`` cases on ``engines``; the dict the report and the JSON are made of."""
    from benchmarks import harness, report
    log = log or (lambda s: print(s, flush=True))
    machine = report.machine_info()  # before the run: the load average is the neighbours'
    records = harness.run_all(selected, engines, repeats=repeats, min_time=min_time,
                              max_seconds=max_seconds, warmup=warmup, log=log,
                              verbose_errors=verbose_errors)
    machine.update({k: v for k, v in report.machine_info().items()
                    if k in ("numba_threads", "torch_threads", "tinygrad_uu_threads")})  # known once they ran
    return {"machine": machine,
            "settings": {**(settings or {}), "repeats": repeats, "min_time": min_time,
                         "warmup": warmup, "max_seconds": max_seconds},
            "engines": [{"key": e.key, "name": e.name, "version": e.version} for e in engines],
            "skipped_engines": [{"key": k, "reason": r} for k, r in skipped],
            "cases": records}


def against_torch(workload: str, threads: int, repeats: int):
    """One workload (a parity script's training step: W5, W7, W8) on tinygrad_uu's numba
    kernels and PyTorch, through the harness: (summary with the throughput ratio, raw run)."""
    from benchmarks.engines import discover, torch_engine
    from benchmarks.workloads import cases
    torch_engine.THREADS = threads
    engines, skipped = discover(["torch", "tinygrad_uu-numba"])
    for key, reason in skipped:
        print(f"  {workload}: {key} skipped: {reason}")
    result = run(cases(only=[workload]), engines, skipped, repeats=repeats, min_time=0.2,
                 max_seconds=60.0, log=lambda s: print(s, flush=True))
    record = result["cases"][0]
    summary = {"case": record["key"], "unit": record["unit"]}
    for key, r in record["results"].items():
        summary[key] = {k: r[k] for k in ("status", "figure", "median_s", "max_err", "message")
                        if k in r}
    figures = {k: v.get("figure") for k, v in summary.items() if isinstance(v, dict)}
    if figures.get("tinygrad_uu-numba") and figures.get("torch"):
        summary["throughput_ratio_vs_torch"] = figures["tinygrad_uu-numba"] / figures["torch"]
    return summary, result


NO_TORCH = ("torch is not installed: only tinygrad_uu is measured. Install the optional peer "
            "with  pip install -e '.[peers]'  (or pip install torch) to compare.")


def start_parity_run(config: dict, threads: int):
    """The start every parity script shares: (torch or None, with a note when it is
    missing; the results dict with the configuration and the load average now)."""
    try:
        import torch
    except ImportError:
        torch = None
        print(NO_TORCH)
    return torch, {"config": config, "threads": threads, "load_average_start": os.getloadavg(),
                   "cpus": os.cpu_count()}


def finish_parity_run(results: dict, workload: str | None, title: str, threads: int,
                      repeats: int, json_path=None) -> dict:
    """The end every parity script shares: the workload's step on both engines (unless
    ``workload`` is None), the load average at the end, and the JSON file."""
    if workload is not None:
        print(f"\nbenchmark {workload} ({title}):", flush=True)
        key = workload.lower()
        results[key], results[f"{key}_raw"] = against_torch(workload, threads, repeats)
        if "throughput_ratio_vs_torch" in results[key]:
            print(f"{workload} throughput ratio tinygrad_uu / torch: "
                  f"{results[key]['throughput_ratio_vs_torch']:.3f}")
    results["load_average_end"] = os.getloadavg()
    print(f"load average {results['load_average_start'][0]:.2f} at the start, "
          f"{results['load_average_end'][0]:.2f} at the end, on {os.cpu_count()} cores")
    if json_path:
        from tinygrad_uu.files import save_json
        save_json(json_path, results)
        print(f"json: {json_path}")
    return results


if __name__ == "__main__":
    main()
