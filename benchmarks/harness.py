"""Check, then time: the loop behind every row of the table.

For each case:

1. every engine builds the step from the same data (``workloads.make_data``) and runs
   ``check()`` once; its outputs are compared with the reference engine's (PyTorch,
   else the hand-written numpy). An engine off by more than the case's tolerance is
   marked WRONG and not timed: a fast wrong answer is not a result.
2. the engines that passed are warmed up (numba and tinygrad compile here), each is
   given a number of inner iterations so one measurement lasts ``min_time`` seconds,
   and then they are measured in turns, round-robin, ``repeats`` times, the starting
   engine rotating, so that a noisy neighbour on the machine hits all of them alike.
   Each turn starts with untimed steps, for SETTLE_SECONDS and at least one: what the
   engine before it left behind must not be charged to this one. (PyTorch's OpenMP
   threads spin-wait for about 10 ms after its step, holding a core: a 12 ms conv
   forward and backward run right after a PyTorch step took 18 ms, and tinygrad_uu's
   two-thread W4 step, 3.8 ms, took 5.0, 5.9 and 4.8 ms for its first three steps
   after ten of PyTorch's, measured in one process; with PyTorch's threads set to
   sleep at once, OMP_WAIT_POLICY=PASSIVE, 4.4 and then 3.9, the 4.4 its own threads
   waking. One untimed step left the second and third in the figure. The caches are
   refilled there too.)
3. the figure is ``case.work / median(seconds per step)``, and the ratio is that
   figure over the reference engine's, from the same run.
"""
from __future__ import annotations

import gc
import math
import statistics
import time
import traceback

import numpy as np

from .engines import Unsupported
from .workloads import make_data

REFERENCE_ORDER = ("torch", "numpy")  # the first of these that ran is the reference
SETTLE_SECONDS = 0.02  # untimed steps at the start of each turn (see the module docstring)


def compare(ref: dict, got: dict, rtol: float):
    """(worst relative error, name of that output, problem or None).

    The error of an output is max|got - ref| / max|ref| (the scale floored at 1e-6 so
    that a vanishing gradient is compared in absolute terms); a missing output, a
    shape mismatch or a non-finite value is a problem of its own.
    """
    worst, worst_name = 0.0, None
    for name, r in ref.items():
        if name not in got:
            return math.inf, name, f"no output {name}"
        r = np.asarray(r, dtype=np.float64)
        g = np.asarray(got[name], dtype=np.float64)
        if g.shape != r.shape:
            return math.inf, name, f"{name} has shape {g.shape}, expected {r.shape}"
        if not np.all(np.isfinite(g)):
            return math.inf, name, f"{name} is not finite"
        scale = max(float(np.max(np.abs(r))) if r.size else 0.0, 1e-6)
        err = float(np.max(np.abs(g - r))) / scale if r.size else 0.0
        if err > worst or worst_name is None:
            worst, worst_name = err, name
    return worst, worst_name, None


def _settle(step) -> None:
    """Untimed steps for SETTLE_SECONDS, at least one: the start of a turn, after another
    engine's (see the module docstring)."""
    until = time.perf_counter() + SETTLE_SECONDS
    step.run()
    while time.perf_counter() < until:
        step.run()


def _short_error(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:200] if msg else ''}"


def _pick_reference(names_ok):
    for key in REFERENCE_ORDER:
        if key in names_ok:
            return key
    return None


def run_case(case, engines, log=print, **options) -> dict:
    """Check and time ``case`` on every engine; returns the case's record for the report."""
    try:
        record = _run_case(case, engines, **options)
    finally:
        for e in engines:  # e.g. put the kernel backend back as it was
            e.deactivate()
    log(_one_line(record))
    return record


def _run_case(case, engines, repeats=5, min_time=0.1, warmup=2, max_seconds=60.0,
              verbose_errors=False) -> dict:
    data = make_data(case)
    res = {e.key: {"engine": e.name} for e in engines}
    steps, outputs = {}, {}
    for e in engines:
        r = res[e.key]
        try:
            e.activate()
            step = e.build(case, data)
            t0 = time.perf_counter()
            outputs[e.key] = step.check()
            r["check_s"] = time.perf_counter() - t0
            steps[e.key] = step
        except Unsupported as exc:
            r.update(status="unsupported", message=str(exc))
        except Exception as exc:  # an engine's bug must not stop the others
            r.update(status="error", message=_short_error(exc))
            if verbose_errors:
                traceback.print_exc()

    # ---- cross-check
    ref_key = _pick_reference([k for k in REFERENCE_ORDER if k in outputs])
    if ref_key is None and outputs:
        ref_key = next(iter(outputs))
    for key, out in outputs.items():
        r = res[key]
        if key == ref_key:
            r.update(status="ok", max_err=0.0, reference=True)
            continue
        err, name, problem = compare(outputs[ref_key], out, case.rtol)
        r.update(max_err=err, err_output=name)
        if problem or err > case.rtol:
            r.update(status="wrong", message=problem or f"max err {err:.1e} ({name})")
            del steps[key]
        else:
            r["status"] = "ok"

    # ---- warm-up and calibration
    if repeats <= 0:  # check only
        steps = {}
    inner = {}
    for key, step in list(steps.items()):
        e = next(en for en in engines if en.key == key)
        try:
            e.activate()
            for _ in range(max(0, warmup - 1)):
                step.run()
            t0 = time.perf_counter()
            step.run()
            once = max(time.perf_counter() - t0, 1e-9)
        except Exception as exc:
            res[key].update(status="error", message=_short_error(exc))
            del steps[key]
            continue
        inner[key] = max(1, min(100_000, math.ceil(min_time / once)))
        # an engine so slow that the repeats would take over max_seconds gets fewer
        res[key]["repeats"] = max(1, min(repeats, int(max_seconds / (once * inner[key]))))

    # ---- round-robin measurements
    keys = list(steps)
    times = {k: [] for k in keys}
    for rep in range(repeats):
        order = keys[rep % len(keys):] + keys[:rep % len(keys)] if keys else []
        for key in order:
            if len(times[key]) >= res[key]["repeats"]:
                continue
            e = next(en for en in engines if en.key == key)
            step, n = steps[key], inner[key]
            e.activate()
            gc.collect()
            try:
                _settle(step)
                t0 = time.perf_counter()
                for _ in range(n):
                    step.run()
                times[key].append((time.perf_counter() - t0) / n)
            except Exception as exc:
                res[key].update(status="error", message=_short_error(exc))
                steps.pop(key, None)
                times[key] = []
                res[key]["repeats"] = 0

    for key, ts in times.items():
        if ts:
            med = statistics.median(ts)
            res[key].update(times_s=ts, median_s=med, min_s=min(ts), inner=inner[key],
                            figure=case.work / med)

    timed = [k for k in keys if "figure" in res[k]]
    ratio_ref = _pick_reference(timed) or (timed[0] if timed else None)
    for key in timed:
        res[key]["ratio"] = res[key]["figure"] / res[ratio_ref]["figure"]
    record = {"key": case.key, "workload": case.workload, "name": case.name, "unit": case.unit,
              "work": case.work, "params": {k: v for k, v in case.params.items()},
              "rtol": case.rtol, "check_reference": ref_key, "ratio_reference": ratio_ref,
              "results": res}
    return record


def _one_line(record) -> str:
    parts = []
    for key, r in record["results"].items():
        if "figure" in r:
            parts.append(f"{key} {r['figure']:.4g}")
        else:
            parts.append(f"{key} {r.get('status', '?')}")
    return f"  {record['key']:<34} " + " | ".join(parts)


def run_all(cases, engines, log=print, **options) -> list[dict]:
    records = []
    for case in cases:
        records.append(run_case(case, engines, log=log, **options))
    return records
