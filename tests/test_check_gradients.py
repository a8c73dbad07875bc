"""check_gradients: hand-written numpy gradients against finite differences.

The negative controls are assignment 2's backprop (examples/numpy_mlp.py) broken on
purpose, the four classic ways; each must be caught, with the wrong array named.
"""
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinygrad_uu import GradcheckError, check_gradients
from tinygrad_uu.gradcheck import gradient_report

from tests.real_data import needs_mnist  # noqa: E402
from tests.strategies import array_and_shape  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import numpy_mlp  # noqa: E402



# gradcheck's words for the worst element, as its own report writes them
WORST = re.compile(r"worst at index \([\d, ]+\): analytic \S+, numeric \S+, absolute error \S+, "
                   r"relative error \S+ \(allowed: \S+ \+ \S+ \* \|numeric\|\)")


def backward_with(bug, params, cache, y):
    """numpy_mlp.backward, line for line, with one mistake switched in by ``bug``."""
    logits = cache[-1][1]
    batch = len(y)
    dz = np.exp(numpy_mlp.log_softmax(logits))
    dz[np.arange(batch), y] -= 1.0
    if bug == "wrong sign":
        dz = -dz                                               # Y - P instead of P - Y
    dz /= batch
    grads = []
    for l in reversed(range(len(params))):
        a_in, _ = cache[l]
        w, b = params[l]
        dw = dz.T @ a_in if bug == "missing transpose" else a_in.T @ dz
        db = np.zeros_like(b) if bug == "forgotten bias gradient" else dz.sum(axis=0)
        grads.append((dw, db))
        if l > 0:
            z_below = cache[l - 1][1]
            mask = (z_below < 0) if bug == "relu mask on the wrong side" else (z_below > 0)
            dz = (dz @ w.T) * mask
    return grads[::-1]


def problem(sizes=(6, 5, 4, 3), batch=7, seed=0):
    rng = np.random.default_rng(seed)
    params = [(w, rng.standard_normal(b.shape) * 0.5)
              for w, b in numpy_mlp.init_params(sizes, rng, dtype=np.float64)]
    return params, rng.standard_normal((batch, sizes[0])), rng.integers(0, sizes[-1], batch)


def report_lines(report: str) -> dict:
    """{array name: its report line (and hint)} from a check_gradients report."""
    out, name = {}, None
    for line in report.splitlines()[1:]:
        if line.startswith("      "):
            out[name] += "\n" + line
        else:
            name = line.split()[0].rstrip(":")
            out[name] = line
    return out


def test_the_copy_with_no_bug_is_the_real_backward():
    params, x, y = problem()
    _, cache = numpy_mlp.forward(params, x)
    for mine, real in zip(backward_with(None, params, cache, y),
                          numpy_mlp.backward(params, cache, y)):
        np.testing.assert_array_equal(mine[0], real[0])
        np.testing.assert_array_equal(mine[1], real[1])


def test_the_real_backward_passes_and_every_array_is_reported():
    params, x, y = problem()
    passed, report = numpy_mlp.check_backward(params, x, y)
    assert passed, report
    lines = report_lines(report)
    assert list(lines) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for line in lines.values():
        assert "checked elements agree" in line and WORST.search(line), line


@pytest.mark.parametrize("bug, wrong, right, hint", [
    ("wrong sign", ["W1", "b1", "W2", "b2", "W3", "b3"], [], "the sign is flipped"),
    ("missing transpose", ["W1", "W2", "W3"], ["b1", "b2", "b3"], "a missing transpose"),
    ("forgotten bias gradient", ["b1", "b2", "b3"], ["W1", "W2", "W3"], "zero everywhere"),
    ("relu mask on the wrong side", ["W1", "b1", "W2", "b2"], ["W3", "b3"], None),
])
def test_each_broken_backprop_is_caught_and_named(bug, wrong, right, hint):
    params, x, y = problem()
    passed, report = numpy_mlp.check_backward(
        params, x, y, backward_fn=lambda p, c, t: backward_with(bug, p, c, t))
    assert not passed
    assert report.startswith("check_gradients failed")
    lines = report_lines(report)
    for name in wrong:
        assert "agree" not in lines[name], (bug, lines[name])
        if hint:
            assert hint in lines[name], (bug, lines[name])
    for name in right:  # the layers the mistake does not reach still pass
        assert "checked elements agree" in lines[name], (bug, lines[name])


def test_relu_mask_on_the_wrong_side_is_recognised_on_one_sample():
    params, x, y = problem(sizes=(6, 8, 3), batch=1, seed=3)  # one hidden layer, one mask
    passed, report = numpy_mlp.check_backward(
        params, x, y,
        backward_fn=lambda p, c, t: backward_with("relu mask on the wrong side", p, c, t))
    assert not passed
    assert "a mask on the wrong side" in report_lines(report)["W1"]


def test_square_weights_with_a_missing_transpose_are_recognised():
    params, x, y = problem(sizes=(5, 5, 5, 3))

    def transposed(p, c, t):  # the same shape, so only the values can tell
        grads = numpy_mlp.backward(p, c, t)
        grads[1] = (grads[1][0].T, grads[1][1])
        return grads

    passed, report = numpy_mlp.check_backward(params, x, y, backward_fn=transposed)
    lines = report_lines(report)
    assert not passed and "a missing transpose" in lines["W2"]
    assert "agree" in lines["W1"] and "agree" in lines["W3"]


def test_a_missing_entry_and_a_constant_factor_are_named():
    params, x, y = problem()
    _, cache = numpy_mlp.forward(params, x)
    grads = numpy_mlp.as_dict(numpy_mlp.backward(params, cache, y))
    del grads["b2"]
    grads["W3"] = grads["W3"] * 2.0

    def loss_fn(named):
        return numpy_mlp.cross_entropy(numpy_mlp.forward(numpy_mlp.as_list(named), x)[0], y)

    with pytest.raises(GradcheckError) as info:
        check_gradients(loss_fn, numpy_mlp.as_dict(params), grads)
    lines = report_lines(str(info.value))
    assert "grads has no entry for it" in lines["b2"]
    assert "yours is 2 times the numeric gradient" in lines["W3"]


def test_large_arrays_are_sampled_with_the_count_stated_and_the_seed_honoured():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((40, 30))
    target = rng.standard_normal((40, 30))
    loss_fn = lambda p: float(((p["w"] - target) ** 2).sum())  # noqa: E731
    right = {"w": 2 * (w - target)}
    passed, report = gradient_report(loss_fn, {"w": w}, right, max_elements=50, seed=4)
    assert passed
    assert "all 50 checked elements agree (a random sample of 50 of its 1200, seed 4)" in report
    assert report == gradient_report(loss_fn, {"w": w}, right, max_elements=50, seed=4)[1]
    wrong = {"w": right["w"] + 1.0}  # every element off: any sample catches it
    passed, report = gradient_report(loss_fn, {"w": w}, wrong, max_elements=50, seed=4)
    assert not passed and "50 of 50 checked elements off (a random sample of 50 of its 1200" \
        in report
    assert WORST.search(report)
    passed, report = gradient_report(loss_fn, {"w": w}, right, max_elements=None)
    assert "all 1200 checked elements agree;" in report


def test_params_are_left_untouched_and_bad_input_is_explained(capsys):
    w = np.arange(4.0)
    before = w.copy()
    assert check_gradients(lambda p: float((p["w"] ** 3).sum()), {"w": w}, {"w": 3 * w ** 2},
                           verbose=True)
    np.testing.assert_array_equal(w, before)
    assert "check_gradients passed" in capsys.readouterr().out
    assert not check_gradients(lambda p: float((p["w"] ** 3).sum()), {"w": w}, {"w": w},
                               raise_exception=False)
    assert "check_gradients failed" in capsys.readouterr().out
    with pytest.raises(TypeError, match="one number"):
        check_gradients(lambda p: p["w"] * 2, {"w": w}, {"w": w})
    with pytest.raises(TypeError, match="dicts"):
        check_gradients(lambda p: 0.0, [w], [w])
    with pytest.raises(ValueError, match="the loss is nan"):
        check_gradients(lambda p: float("nan"), {"w": w}, {"w": w})
    with pytest.raises(GradcheckError, match=r"shape \(4, 1\), the parameter \(4,\).*batch axis"):
        check_gradients(lambda p: float(p["w"].sum()), {"w": w}, {"w": np.ones((4, 1))})


def test_the_example_option_checks_its_own_backward(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    fake = lambda data_dir=None, limit=None: ((rng.random((50, 784), dtype=np.float32),  # noqa
                                               rng.integers(0, 10, 50)), (None, None))
    monkeypatch.setattr(numpy_mlp, "load", fake)
    result = numpy_mlp.main(["--check-gradients", "--hidden", "16", "--batch-size", "8",
                             "--out", str(tmp_path)])
    assert result["gradient_check_passed"]
    out = capsys.readouterr().out
    assert "check_gradients passed" in out
    assert "all 200 checked elements agree (a random sample of 200 of its 12544, seed 0)" in out
    assert (tmp_path / "metrics.json").exists()
    monkeypatch.setattr(numpy_mlp, "backward",
                        lambda p, c, t: backward_with("wrong sign", p, c, t))
    with pytest.raises(SystemExit):
        numpy_mlp.main(["--check-gradients", "--hidden", "16", "--batch-size", "8",
                        "--out", str(tmp_path)])
    assert "check_gradients failed" in capsys.readouterr().out


@pytest.mark.slow
@needs_mnist
def test_the_example_option_passes_on_real_mnist(tmp_path):
    result = numpy_mlp.main(["--check-gradients", "--out", str(tmp_path)])
    assert result["gradient_check_passed"]


# ----------------------------------------------------------------------------- property

@settings(max_examples=30, deadline=None)
@given(w=array_and_shape(min_dims=1, max_dims=3), b=array_and_shape(min_dims=0, max_dims=2),
       data=st.data())
def test_any_shapes_right_gradients_pass_and_one_wrong_element_is_found(w, b, data):
    """L = sum(tanh(w) * c) + sum(b**2) * mean(w): the exact gradients pass; one element
    off by more than the tolerance fails, and the report points at that element."""
    c = np.linspace(-1, 1, w.size).reshape(w.shape)

    def loss_fn(p):
        return float((np.tanh(p["w"]) * c).sum() + (p["b"] ** 2).sum() * p["w"].mean())

    right = {"w": (1 - np.tanh(w) ** 2) * c + (b ** 2).sum() / w.size,
             "b": np.array(2 * b * w.mean())}
    passed, report = gradient_report(loss_fn, {"w": w, "b": b}, right, max_elements=None)
    assert passed, report
    name = data.draw(st.sampled_from(["w", "b"]))
    index = data.draw(st.sampled_from(list(np.ndindex(right[name].shape))))
    wrong = {k: v.copy() for k, v in right.items()}
    wrong[name][index] += 0.5
    passed, report = gradient_report(loss_fn, {"w": w, "b": b}, wrong, max_elements=None)
    assert not passed
    line = report_lines(report)[name]
    assert f"1 of {right[name].size} checked elements off" in line
    assert f"worst at index {tuple(int(i) for i in index)}:" in line
