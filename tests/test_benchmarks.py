"""The benchmark harness (benchmarks/): it runs, it catches a wrong engine, it reports
missing engines, it writes its files. Tiny sizes, one repeat, no assertion on speed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import harness, report, run
from benchmarks.engines import Unsupported, discover
from benchmarks.engines import numpy_engine as ne
from benchmarks.engines.numpy_engine import NumpyEngine
from benchmarks.workloads import PARAMS, cases, make_data, tiny_cases

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(repeats=1, min_time=0.0, warmup=1, log=lambda s: None)


def tiny(*workloads):
    return [c for c in tiny_cases() if c.workload in workloads]


class WrongEngine(NumpyEngine):
    """The numpy engine with every gradient 10% too large: the check must catch it."""
    key, name = "wrong", "wrong"

    def build(self, case, data):
        step = super().build(case, data)
        check = step.check

        def wrong_check():
            return {k: v * 1.1 if k.startswith("grad.") else v for k, v in check().items()}
        step.check = wrong_check
        return step


class BrokenEngine(NumpyEngine):
    key, name = "broken", "broken"

    def build(self, case, data):
        if case.workload == "W1":
            raise Unsupported("no matmul here")
        raise RuntimeError("boom")


def test_harness_runs_w1_w6_on_numpy_and_tinygrad_uu():
    import tinygrad_uu.kernels as kernels
    before = kernels.get_backend()
    engines, skipped = discover(["numpy", "tinygrad_uu"])
    keys = [e.key for e in engines]
    assert "numpy" in keys and any(k.startswith("tinygrad_uu") for k in keys), skipped
    records = harness.run_all(tiny("W1", "W6"), engines, **FAST)
    assert kernels.get_backend() == before  # the harness puts the backend back
    assert [r["workload"] for r in records] == ["W1", "W6"]
    for rec in records:
        assert rec["check_reference"] == "numpy"
        for key in keys:
            r = rec["results"][key]
            assert r["status"] == "ok", (rec["key"], key, r)
            assert r["max_err"] <= rec["rtol"]
            assert r["figure"] > 0 and len(r["times_s"]) == 1
        assert rec["results"]["numpy"]["ratio"] == pytest.approx(1.0)


def test_cross_check_flags_a_wrong_engine_and_does_not_time_it():
    engines = [NumpyEngine(), WrongEngine(), BrokenEngine()]
    records = harness.run_all(tiny("W1", "W6"), engines, **FAST)
    w1, w6 = records
    assert w1["results"]["wrong"]["status"] == "ok"  # W1 has no gradient to get wrong
    assert w1["results"]["broken"] == {"engine": "broken", "status": "unsupported",
                                       "message": "no matmul here"}
    wrong = w6["results"]["wrong"]
    assert wrong["status"] == "wrong" and "figure" not in wrong
    assert wrong["max_err"] == pytest.approx(0.1, rel=1e-3)
    assert wrong["message"].startswith("max err 1.0e-01 (grad.")
    assert w6["results"]["broken"]["status"] == "error"
    assert "boom" in w6["results"]["broken"]["message"]
    assert "figure" in w6["results"]["numpy"]
    results = {"machine": report.machine_info(), "settings": {"repeats": 1},
               "engines": [{"key": e.key, "name": e.name, "version": e.version} for e in engines],
               "skipped_engines": [], "cases": records}
    text = report.table(results)
    assert "WRONG: max err 1.0e-01 (grad." in text
    assert "skip [1]" in text and "[1] broken: no matmul here" in text
    assert "ERROR [2]" in text and "RuntimeError: boom" in text


def test_compare_reports_shape_missing_and_non_finite_outputs():
    ref = {"out": np.ones(3), "grad.x": np.zeros(2)}
    assert harness.compare(ref, {"out": np.ones(3)}, 1e-3)[2] == "no output grad.x"
    assert "shape" in harness.compare(ref, {"out": np.ones(4), "grad.x": np.zeros(2)}, 1e-3)[2]
    bad = {"out": np.array([1, np.nan, 1]), "grad.x": np.zeros(2)}
    assert "not finite" in harness.compare(ref, bad, 1e-3)[2]
    err, name, problem = harness.compare(ref, {"out": np.ones(3) * 1.01, "grad.x": np.zeros(2)},
                                         1e-3)
    assert problem is None and name == "out" and err == pytest.approx(0.01)


@pytest.mark.parametrize("module,key", [("torch", "torch"), ("tinygrad", "tinygrad"),
                                        ("micrograd", "micrograd")])
def test_a_missing_engine_is_reported_as_skipped(monkeypatch, module, key):
    for name in list(sys.modules):  # as if the library were not installed
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    engines, skipped = discover([key, "numpy"])
    assert [e.key for e in engines] == ["numpy"]
    assert len(skipped) == 1 and skipped[0][0] == key
    assert "not installed" in skipped[0][1]


def test_micrograd_runs_w6_only():
    engines, skipped = discover(["micrograd", "numpy"])
    if not any(e.key == "micrograd" for e in engines):
        pytest.skip(f"micrograd not installed: {skipped}")
    rec = harness.run_all(tiny("W1", "W6"), engines, **FAST)
    assert rec[0]["results"]["micrograd"]["status"] == "unsupported"
    assert rec[1]["results"]["micrograd"]["status"] == "ok"


def test_command_line_writes_table_json_and_png(tmp_path, capsys):
    out_json = tmp_path / "raw" / "bench.json"
    results = run.main(["--only", "W6", "--engines", "numpy", "--repeats", "1", "--min-time",
                        "0", "--out", str(tmp_path / "out"), "--json", str(out_json)])
    printed = capsys.readouterr().out
    assert "Machine: " in printed and "| W6 chain 2000 ops x16 | ops/s |" in printed
    saved = json.loads(out_json.read_text())
    assert saved["cases"][0]["results"]["numpy"]["status"] == "ok"
    assert saved["machine"]["cpu"] and saved["settings"]["repeats"] == 1
    png = (tmp_path / "out" / "benchmarks.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert (tmp_path / "out" / "benchmarks.md").read_text().startswith("Machine: ")
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind
    assert results["cases"][0]["results"]["numpy"]["figure"] > 0


def test_workload_selection():
    assert {c.workload for c in cases()} == {f"W{i}" for i in range(1, 9)}
    assert [c.workload for c in cases(only=["w3", "W6"])] == ["W3", "W6"]
    assert len(cases(quick=True)) < len(cases())


@pytest.mark.parametrize("argv", [["benchmarks/run.py"], ["-m", "benchmarks"]])
def test_both_entry_points_start(argv):
    done = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "W6:" in done.stdout


class FakeTorch(NumpyEngine):
    key, name = "torch", "fake torch"


def test_torch_is_the_reference_when_present():
    rec = harness.run_all(tiny("W6"), [NumpyEngine(), FakeTorch()], **FAST)[0]
    assert rec["check_reference"] == rec["ratio_reference"] == "torch"


class SlowedAfterSwitch(NumpyEngine):
    """The numpy engine, but each step first sleeps ``delay()`` seconds: what a step pays
    for what the engine before it left running. ``activate()`` marks the switch."""

    def activate(self):
        super().activate()
        self.first_step_at = None

    def delay(self, since_first_step: float) -> float:
        raise NotImplementedError

    def build(self, case, data):
        step = super().build(case, data)
        run_step = step.run

        def run_slowed():
            now = time.perf_counter()
            if self.first_step_at is None:
                self.first_step_at = now
            time.sleep(self.delay(now - self.first_step_at))
            return run_step()
        step.run = run_slowed
        return step


class SlowAfterSwitch(SlowedAfterSwitch):
    """The first step after each activate() takes 50 ms longer."""
    key, name = "slow_after_switch", "slow after switch"

    def delay(self, since_first_step):
        return 0.05 if since_first_step == 0 else 0.0


def test_the_first_step_after_an_engine_switch_is_not_timed():
    rec = harness.run_all(tiny("W6"), [NumpyEngine(), SlowAfterSwitch()],
                          repeats=3, min_time=0.0, warmup=1, log=lambda s: None)[0]
    times = rec["results"]["slow_after_switch"]["times_s"]
    assert len(times) == 3 and max(times) < 0.04, times


class SlowForAWhile(SlowedAfterSwitch):
    """Steps 4 ms longer for 12 ms from the first after each activate(): what a
    neighbour's threads spinning on after their own step cost."""
    key, name = "slow_for_a_while", "slow for a while"

    def delay(self, since_first_step):
        return 0.004 if since_first_step < 0.012 else 0.0


def test_a_turn_starts_with_untimed_steps_until_the_neighbour_has_settled():
    """One untimed step was not enough: the next, timed, was still slowed."""
    assert harness.SETTLE_SECONDS > 0.012
    rec = harness.run_all(tiny("W6"), [NumpyEngine(), SlowForAWhile()],
                          repeats=3, min_time=0.0, warmup=1, log=lambda s: None)[0]
    times = rec["results"]["slow_for_a_while"]["times_s"]
    assert len(times) == 3 and max(times) < 0.003, times


def _numeric_grad(loss, array, index, eps=1e-6):
    old = array[index]
    array[index] = old + eps
    up = loss()
    array[index] = old - eps
    down = loss()
    array[index] = old
    return (up - down) / (2 * eps)


@pytest.mark.parametrize("workload", ["W3", "W4", "W5"])
def test_numpy_engine_gradients_match_finite_differences(workload):
    """The hand-written numpy engine is the reference when PyTorch is absent: check its
    backprop against central differences in float64, on a few entries of every weight."""
    case = tiny(workload)[0]
    data = make_data(case)
    fn = {"W3": ne.mlp_loss_grads, "W4": ne.cnn_loss_grads, "W5": ne.unet_loss_grads}[workload]
    p = {k: data[k].astype(np.float64) for k in PARAMS[workload]}
    x = data["x"].astype(np.float64)
    y = data["y"].astype(np.float64) if workload == "W5" else data["y"]
    _, grads = fn(p, x, y)
    rng = np.random.default_rng(0)
    for name, array in p.items():
        for flat in rng.choice(array.size, size=min(3, array.size), replace=False):
            index = np.unravel_index(flat, array.shape)
            numeric = _numeric_grad(lambda: fn(p, x, y)[0], array, index)
            assert grads[name][index] == pytest.approx(numeric, rel=1e-4, abs=1e-7), (name, index)


def test_numpy_engine_conv_and_chain_backward_match_finite_differences():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    g = rng.standard_normal((2, 4, 5, 5))
    out, cache = ne.conv_forward(x, w, b, 1)
    dx, dw, db = ne.conv_backward(g, cache, w)
    loss = lambda: float((ne.conv_forward(x, w, b, 1)[0] * g).sum())  # noqa: E731
    for array, grad in ((x, dx), (w, dw), (b, db)):
        for flat in range(0, array.size, 7):
            index = np.unravel_index(flat, array.shape)
            assert grad[index] == pytest.approx(_numeric_grad(loss, array, index), rel=1e-5)
    cx, cw = rng.uniform(-1, 1, 4), rng.uniform(0.5, 1.5, 4)
    _, gx, gw = ne.chain_forward_backward(cx, cw, 10)
    for array, grad in ((cx, gx), (cw, gw)):
        for i in range(4):
            numeric = _numeric_grad(lambda: ne.chain_forward_backward(cx, cw, 10)[0], array, (i,))
            assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_w8_resnet_step_agrees_between_tinygrad_uu_and_torch():
    """W8 (the competition's ResNet training step): both engines give the same loss,
    gradients and updated parameters; the numpy engine says why it has no W8."""
    pytest.importorskip("torch")
    engines, skipped = discover(["torch", "tinygrad_uu-numpy"])
    assert [e.key for e in engines] == ["torch", "tinygrad_uu-numpy"], skipped
    rec = harness.run_all(tiny("W8"), engines + [NumpyEngine()], **FAST)[0]
    assert rec["check_reference"] == "torch"
    assert rec["results"]["tinygrad_uu-numpy"]["status"] == "ok"
    assert rec["results"]["tinygrad_uu-numpy"]["max_err"] <= rec["rtol"]
    assert "batch norm" in rec["results"]["numpy"]["message"]
    assert len(PARAMS["W8"]) == len(set(PARAMS["W8"])) == 3 + 3 * 9 + 2


def test_bench_threads_times_both_settings_and_puts_spinning_back(monkeypatch):
    """benchmarks/bench_threads.py: a row per measurement with both settings' figures;
    the engine's threads spin again afterwards (the setting is restored by ``use``)."""
    from benchmarks import bench_threads
    from tinygrad_uu.kernels import parallel
    import tinygrad_uu as tg
    before, tg_threads = parallel.SPIN_ROUNDS, tg.get_num_threads()
    try:
        tg.set_num_threads(2)
        lines = bench_threads.hand_off(gaps=(0.0,), blocks=1, calls=3)
        assert len(lines) == 1 and lines[0].count(" us") == 2 and lines[0].endswith("x |")
        bench_threads.use("spinning")
        assert parallel.SPIN_ROUNDS > 0
        bench_threads.use("sleeping")
        assert parallel.SPIN_ROUNDS == 0
    finally:
        parallel.SPIN_ROUNDS = before
        tg.set_num_threads(tg_threads)


def test_bench_scaling_alternates_thread_counts_and_reports_the_ratio_of_medians():
    """benchmarks/bench_scaling.py: every (engine, thread count) in turn, each timed step
    after an untimed one at the same setting; the engine's thread count is the one set
    while its step runs; the row's scaling is the one-thread median over the two-thread one."""
    from benchmarks import bench_scaling
    import tinygrad_uu as tg

    class FakeEngine:
        key = "tinygrad_uu-numba"

        def activate(self):
            pass

    seen = []

    class FakeStep:
        def run(self):
            seen.append(tg.get_num_threads())

    ticks = iter(range(10_000))
    fake_clock = lambda: float(next(ticks))  # noqa: E731
    engine, before = FakeEngine(), tg.get_num_threads()
    try:
        times = bench_scaling.time_steps([engine], {engine.key: FakeStep()}, [1, 2], seconds=20, clock=fake_clock)
    finally:
        tg.set_num_threads(before)
    assert set(times) == {(engine.key, 1), (engine.key, 2)}
    assert len(times[(engine.key, 1)]) == len(times[(engine.key, 2)]) >= 1
    # after the two warm-up steps: pairs of steps (untimed, timed) at one setting, 1 then 2, then 2 then 1
    pairs = [seen[i:i + 2] for i in range(2, len(seen), 2)]
    assert all(a == b for a, b in pairs) and [p[0] for p in pairs[:4]] == [1, 2, 2, 1]

    class Case:
        workload = "W4"
    times = {(engine.key, 1): [0.010, 0.008, 0.012], (engine.key, 2): [0.005, 0.006, 0.004]}
    (line,) = bench_scaling.rows(Case(), [engine], times, [1, 2])
    assert line.startswith("| W4 | tinygrad_uu-numba | 10.00 ms | 5.00 ms | 2.00 |")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="bench_cores pins two threads to two cores: Linux with two cores only")
def test_bench_cores_reads_after_each_writer_and_gives_the_cores_back(capsys):
    from benchmarks import bench_cores
    allowed = os.sched_getaffinity(0)
    rows = bench_cores.main(["--sizes", "16,64", "--repeats", "3"])
    assert [r["kb"] for r in rows] == [16, 64]
    assert all(r[k] > 0 for r in rows for k in ("own", "other", "again"))
    assert os.sched_getaffinity(0) == allowed
    out = capsys.readouterr().out
    assert "| 16 KB |" in out and "| 64 KB |" in out and "after the other core's" in out
    with pytest.raises(SystemExit):
        bench_cores.main(["--repeats", "0"])
