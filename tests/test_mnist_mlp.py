"""The main job, examples/mnist_mlp.py: options, outputs, and learning on real MNIST."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import common  # noqa: E402
import mnist_mlp  # noqa: E402

from tests.real_data import needs_mnist  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def synthetic_mnist(n_train=600, n_test=200, seed=0):
    """Digits stand-in: class k lights up a bright 6x6 block at a class-specific place."""
    rng = np.random.default_rng(seed)

    def make(n):
        labels = rng.integers(0, 10, n)
        images = rng.random((n, 1, 28, 28), dtype=np.float32) * 0.3
        for i, k in enumerate(labels):
            r, c = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
            images[i, 0, r:r + 6, c:c + 6] += 0.7
        return images, labels
    return make(n_train), make(n_test)


def check_outputs(out: Path, metrics: dict):
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    epochs = saved["config"]["epochs"]
    for key in ("train_loss", "train_accuracy", "test_accuracy_per_epoch"):
        assert len(saved[key]) == epochs
    assert saved["train_seconds"] > 0 and saved["samples_per_second"] > 0
    for png in ("curves.png", "weights.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == PNG
    with np.load(out / "model.npz", allow_pickle=False) as f:
        assert {"1.weight", "1.bias"} <= set(f.files)
    assert (out / "model.onnx").stat().st_size > 0    # onnx is in the dev extra
    return saved


@pytest.mark.parametrize("hidden", [0, 32])
def test_learns_synthetic_digits_and_writes_everything(tmp_path, monkeypatch, hidden):
    monkeypatch.setattr(common, "load_mnist", lambda data_dir, limit: synthetic_mnist())
    metrics = mnist_mlp.main(["--epochs", "3", "--hidden", str(hidden), "--out", str(tmp_path)])
    saved = check_outputs(tmp_path, metrics)
    assert saved["test_accuracy"] > 0.9  # the blocks are easy to tell apart
    assert saved["train_loss"][-1] < saved["train_loss"][0]
    assert saved["parameters"] == (7850 if hidden == 0 else 784 * 32 + 32 + 32 * 10 + 10)


def test_help_and_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        mnist_mlp.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--epochs", "--batch-size", "--lr", "--optimizer", "--hidden", "--seed",
                   "--limit", "--data-dir", "--out"):
        assert option in out
    for bad in (["--hidden", "-1"], ["--epochs", "0"], ["--optimizer", "lbfgs"]):
        with pytest.raises(SystemExit) as exit_:
            mnist_mlp.parse_args(bad)
        assert exit_.value.code == 2


@pytest.mark.slow
@needs_mnist
def test_quick_run_on_real_mnist(tmp_path):
    metrics = mnist_mlp.main(["--limit", "5000", "--epochs", "1", "--out", str(tmp_path)])
    check_outputs(tmp_path, metrics)
    assert metrics["test_accuracy"] > 0.85  # one epoch on 5k images; chance is 0.1
