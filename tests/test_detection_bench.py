"""Benchmark W7 (the detector's training step): its data, and tinygrad_uu against PyTorch."""
import numpy as np
import pytest

from benchmarks import harness
from benchmarks.engines import discover
from benchmarks.workloads import DETECTOR_LAYERS, PARAMS, cases, make_data, tiny_cases


def test_w7_case_and_data():
    (case,) = cases(only=["W7"])
    assert case.params == {"batch": 16, "hw": 128} and case.unit == "samples/s"
    (quick,) = cases(quick=True, only=["W7"])
    assert quick.params["batch"] < 16
    tiny = [c for c in tiny_cases() if c.workload == "W7"][0]
    data = make_data(tiny)
    assert data["x"].shape == (2, 3, 32, 32)
    assert data["y8"].shape == (2, 45, 4, 4) and data["y16"].shape == (2, 45, 2, 2)
    assert set(PARAMS["W7"]) <= set(data)
    assert len(PARAMS["W7"]) == sum(3 if kind == "cbl" else 2 for *_, kind in DETECTOR_LAYERS)


def test_w7_tinygrad_uu_step_trains():
    engines, _ = discover(["tinygrad_uu-numba"])
    tiny = [c for c in tiny_cases() if c.workload == "W7"][0]
    step = engines[0].build(tiny, make_data(tiny))
    first = step.check()
    second = step.check()                      # after one SGD step the loss went down
    assert second["loss"] < first["loss"]
    assert all(np.isfinite(v).all() for v in first.values())


@pytest.mark.torch
def test_w7_matches_pytorch():
    pytest.importorskip("torch")
    engines, _ = discover(["torch", "tinygrad_uu-numba"])
    tiny = [c for c in tiny_cases() if c.workload == "W7"]
    record = harness.run_all(tiny, engines, repeats=1, min_time=0.0, max_seconds=5.0)[0]
    for key, result in record["results"].items():
        assert result["status"] == "ok", (key, result.get("message"))
