"""Assignment 2 (examples/numpy_mlp.py): hand-written backprop, checked two ways.

(a) against central finite differences, (b) against the engine's autograd on the
same weights, then (c) the example end to end (on real MNIST when it is there).
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tinygrad_uu import Tensor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import numpy_mlp  # noqa: E402

DATA = os.environ.get("TINYGRAD_UU_DATA")
HAS_MNIST = bool(DATA) and all(
    (Path(DATA) / "mnist" / name).exists() or (Path(DATA) / "mnist" / name[:-3]).exists()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))
ARCHITECTURES = [(5, 3), (5, 4, 3), (6, 5, 4, 3)]      # linear, one and two hidden layers
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_problem(sizes, batch=7, seed=0):
    """float64 parameters with random (not zero) biases, inputs and labels."""
    rng = np.random.default_rng(seed)
    params = [(w, rng.standard_normal(b.shape))
              for w, b in numpy_mlp.init_params(sizes, rng, dtype=np.float64)]
    x = rng.standard_normal((batch, sizes[0]))
    y = rng.integers(0, sizes[-1], batch)
    return params, x, y


def loss_of(params, x, y) -> float:
    return numpy_mlp.cross_entropy(numpy_mlp.forward(params, x)[0], y)


def numeric_grads(params, x, y, eps=1e-6):
    """dL/d(every parameter) by central differences: (L(p + eps) - L(p - eps)) / (2 eps)."""
    grads = []
    for w, b in params:
        pair = []
        for p in (w, b):
            g = np.zeros_like(p)
            for i in np.ndindex(p.shape):
                old = p[i]
                p[i] = old + eps
                plus = loss_of(params, x, y)
                p[i] = old - eps
                minus = loss_of(params, x, y)
                p[i] = old
                g[i] = (plus - minus) / (2 * eps)
            pair.append(g)
        grads.append(tuple(pair))
    return grads


def assert_grads_close(got, expected, rtol, atol):
    assert len(got) == len(expected)
    for l, (g, e) in enumerate(zip(got, expected)):
        for name, a, b in (("W", g[0], e[0]), ("b", g[1], e[1])):
            assert a.shape == b.shape, f"d{name}_{l + 1}: shape {a.shape}, expected {b.shape}"
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"d{name}_{l + 1}")


# ----------------------------------------------------------------------------- (a) finite differences

@pytest.mark.parametrize("sizes", ARCHITECTURES)
@pytest.mark.parametrize("seed", [0, 1])
def test_backward_matches_finite_differences(sizes, seed):
    params, x, y = tiny_problem(sizes, seed=seed)
    _, cache = numpy_mlp.forward(params, x)
    analytic = numpy_mlp.backward(params, cache, y)
    assert_grads_close(analytic, numeric_grads(params, x, y), rtol=1e-5, atol=1e-8)


def test_the_check_catches_a_wrong_gradient():
    """Negative control: a backward without the ReLU's mask must fail the same check."""
    params, x, y = tiny_problem((5, 4, 3), seed=2)
    _, cache = numpy_mlp.forward(params, x)
    no_mask = [(a, np.abs(z) + 1.0) for a, z in cache]      # every z > 0: the mask is all ones
    wrong = numpy_mlp.backward(params, no_mask[:-1] + cache[-1:], y)
    with pytest.raises(AssertionError):
        assert_grads_close(wrong, numeric_grads(params, x, y), rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------- (b) the engine

def engine_loss_and_grads(params, x, y):
    """The same network in tinygrad_uu: its loss and autograd's gradients."""
    tensors = [(Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)) for w, b in params]
    a = Tensor(x)
    for l, (w, b) in enumerate(tensors):
        a = a @ w + b
        if l < len(tensors) - 1:
            a = a.relu()
    logp = a.log_softmax(axis=1)
    loss = -logp[np.arange(len(y)), y].mean()
    loss.backward()
    return loss.item(), [(w.grad.data, b.grad.data) for w, b in tensors]


@pytest.mark.parametrize("sizes", ARCHITECTURES)
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_backward_matches_the_engine(sizes, batch):
    params, x, y = tiny_problem(sizes, batch=batch, seed=batch)
    logits, cache = numpy_mlp.forward(params, x)
    engine_loss, engine_grads = engine_loss_and_grads(params, x, y)
    assert numpy_mlp.cross_entropy(logits, y) == pytest.approx(engine_loss, rel=1e-12)
    assert_grads_close(numpy_mlp.backward(params, cache, y), engine_grads, rtol=1e-10,
                       atol=1e-14)


def test_backward_matches_the_engine_at_mnist_size_in_float32():
    rng = np.random.default_rng(3)
    params = numpy_mlp.init_params([784, 64, 10], rng)
    x = rng.random((16, 784), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    _, cache = numpy_mlp.forward(params, x)
    assert cache[0][1].dtype == np.float32
    _, engine_grads = engine_loss_and_grads(params, x, y)
    assert_grads_close(numpy_mlp.backward(params, cache, y), engine_grads, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- training

def test_sgd_overfits_a_tiny_problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 8))
    y = rng.integers(0, 3, 20)
    params = numpy_mlp.init_params([8, 16, 3], rng, dtype=np.float64)
    first = loss_of(params, x, y)
    for _ in range(300):
        logits, cache = numpy_mlp.forward(params, x)
        numpy_mlp.sgd_step(params, numpy_mlp.backward(params, cache, y), lr=0.5)
    assert loss_of(params, x, y) < 0.05 * first
    assert (numpy_mlp.predict(params, x).argmax(axis=1) == y).all()


def test_help_and_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        numpy_mlp.parse_args(["--help"])
    assert e.value.code == 0
    assert "--hidden" in capsys.readouterr().out
    args = numpy_mlp.parse_args(["--hidden", "0", "--limit", "100"])
    assert args.hidden == [0] and args.limit == 100 and args.out == "runs/numpy_mlp"
    with pytest.raises(SystemExit):
        numpy_mlp.parse_args(["--epochs", "0"])


def fake_mnist(data_dir=None, limit=None, rng=np.random.default_rng(0)):
    """Separable synthetic 'digits': class k lights up its own block of pixels."""
    def make(n):
        y = rng.integers(0, 10, n)
        x = rng.random((n, 784), dtype=np.float32) * 0.2
        for k in range(10):
            x[y == k, 78 * k:78 * k + 78] += 0.8
        return x, y
    return make(limit or 300), make(200)


@pytest.mark.parametrize("hidden", [["0"], ["32", "16"]])
def test_a_run_writes_metrics_and_figures(tmp_path, monkeypatch, hidden):
    monkeypatch.setattr(numpy_mlp, "load", fake_mnist)
    metrics = numpy_mlp.main(["--epochs", "2", "--batch-size", "20", "--hidden", *hidden,
                              "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["train_loss"] == pytest.approx(metrics["train_loss"])
    assert saved["test_accuracy"] == metrics["test_accuracy"] > 0.9
    assert len(saved["train_loss"]) == len(saved["test_accuracy_per_epoch"]) == 2
    assert saved["config"]["hidden"] == [int(h) for h in hidden]
    for png in ("curves.png", "weights.png", "confusion_matrix.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG_SIGNATURE


def test_a_diverging_run_stops_with_advice(tmp_path, monkeypatch):
    monkeypatch.setattr(numpy_mlp, "load", fake_mnist)
    with pytest.raises(SystemExit, match="numpy_mlp: the loss became .* try --lr"):
        with np.errstate(all="ignore"):
            numpy_mlp.main(["--lr", "1e30", "--out", str(tmp_path)])
    assert not (tmp_path / "metrics.json").exists()


# ----------------------------------------------------------------------------- (c) real MNIST

@pytest.mark.slow
@pytest.mark.skipif(not HAS_MNIST, reason="needs TINYGRAD_UU_DATA with the four MNIST files")
def test_quick_run_on_real_mnist(tmp_path):
    metrics = numpy_mlp.main(["--limit", "2000", "--epochs", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test_accuracy", "train_loss", "train_accuracy", "test_accuracy_per_epoch",
                "train_seconds", "samples_per_second", "config"):
        assert key in saved, key
    assert saved["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert saved["test_accuracy"] > 0.6                # chance is 0.1; about 0.75 here
    assert saved["config"]["limit"] == 2000
    for png in ("curves.png", "weights.png", "confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG_SIGNATURE
