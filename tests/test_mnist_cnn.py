"""examples/mnist_cnn.py (assignment 3, part 1): outputs, every regulariser flag, early
stopping, the study, priming, options, and one quick run on real MNIST."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import common  # noqa: E402
import mnist_cnn  # noqa: E402

from tests.real_data import needs_mnist  # noqa: E402
from tests.test_mnist_mlp import synthetic_mnist  # noqa: E402

from tinygrad_uu import nn  # noqa: E402
from tinygrad_uu.data import DigitAugment  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--channels", "2", "4", "--hidden", "8", "--batch-size", "32"]  # fast, still a CNN


@pytest.fixture
def synthetic(monkeypatch):
    monkeypatch.setattr(common, "load_mnist", lambda data_dir, limit: synthetic_mnist())


def small_data(n=96, seed=0):
    """(train, val, test) tuples of synthetic digits, small enough for a few steps."""
    (x, y), (tx, ty) = synthetic_mnist(n_train=n, n_test=40, seed=seed)
    return (x, y), (x[:24], y[:24]), (tx, ty)


def layers(model, kind):
    return [m for m in model if isinstance(m, kind)]


def test_pipeline_learns_and_writes_everything(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "load_mnist",
                        lambda data_dir, limit: synthetic_mnist(n_train=400, n_test=100))
    metrics = mnist_cnn.main(["--epochs", "2", "--channels", "4", "8", "--hidden", "16",
                              "--batch-size", "32", "--lr", "3e-3", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert saved["test_accuracy"] > 0.8  # the synthetic blocks are easy; chance is 0.1
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy",
                "test_accuracy_per_epoch", "learning_rate"):
        assert len(saved[key]) == 2, key
    assert saved["train_loss"][-1] < saved["train_loss"][0]
    assert saved["learning_rate"][0] > saved["learning_rate"][-1]  # the cosine schedule
    assert saved["train_seconds"] > 0 and saved["samples_per_second"] > 0
    assert saved["config"]["optimizer"] == "adam" and len(saved["load_average"]) == 3
    for png in ("curves.png", "confusion_matrix.png", "misclassified.png", "filters.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG, png
    model = mnist_cnn.build_model([4, 8], 16, batch_norm=True, dropout=0.1)
    nn.load(model, tmp_path / "model.npz")  # the saved weights fit the model the flags describe
    assert saved["parameters"] == model.num_parameters()
    for mistake in saved["most_confident_mistakes"]:
        assert mistake["true"] != mistake["predicted"] and 0.1 <= mistake["confidence"] <= 1
    confidences = [m["confidence"] for m in saved["most_confident_mistakes"]]
    assert confidences == sorted(confidences, reverse=True)


def test_model_flags_change_the_layers():
    plain = mnist_cnn.build_model([4, 8], 16, batch_norm=False, dropout=0.0)
    full = mnist_cnn.build_model([4, 8], 16, batch_norm=True, dropout=0.3)
    assert not layers(plain, nn.BatchNorm2d) and not layers(plain, nn.Dropout)
    assert len(layers(full, nn.BatchNorm2d)) == 2
    assert [d.p for d in layers(full, nn.Dropout)] == [0.3, 0.3]
    assert all(c.bias is None for c in layers(full, nn.Conv2d))  # BN's shift replaces it
    assert mnist_cnn.build_model([4], 0, False, 0.0)[-1].in_features == 4 * 14 * 14


def test_augmentation_changes_the_batches_not_the_labels():
    (x, y), _, _ = small_data()
    cfg = mnist_cnn.parse_args(TINY)
    plain = mnist_cnn.make_loader(x, y, cfg)
    augmented = mnist_cnn.make_loader(x, y, mnist_cnn.parse_args(TINY + ["--augment"]))
    assert plain.transform is None and isinstance(augmented.transform, DigitAugment)
    (xa, ya), (xb, yb) = next(iter(plain)), next(iter(augmented))
    np.testing.assert_array_equal(ya, yb)  # the same order, only the images move
    assert xb.shape == xa.shape and xb.dtype == np.float32
    assert np.abs(xb - xa).max() > 0.1


@pytest.mark.parametrize("flag", [["--weight-decay", "0.05"], ["--dropout", "0.5"],
                                  ["--batch-norm"], ["--augment"]])
def test_each_regulariser_changes_training(flag, monkeypatch):
    made = []
    make = common.make_optimizer
    monkeypatch.setattr(common, "make_optimizer", lambda *a, **k: made.append(make(*a, **k))
                        or made[-1])
    base = TINY + ["--epochs", "1", "--dropout", "0", "--no-batch-norm"]
    train, val, test = small_data()
    model_a, _ = mnist_cnn.fit(mnist_cnn.parse_args(base), train, val, test)
    model_b, _ = mnist_cnn.fit(mnist_cnn.parse_args(base + flag), train, val, test)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    if flag[0] == "--batch-norm":
        assert layers(model_b, nn.BatchNorm2d) and set(state_b) != set(state_a)
        return
    assert made[0].param_groups[0]["weight_decay"] == 0.0
    if flag[0] == "--weight-decay":
        assert made[1].param_groups[0]["weight_decay"] == 0.05
    if flag[0] == "--dropout":
        assert [d.p for d in layers(model_b, nn.Dropout)] == [0.5, 0.5]
    assert any(not np.array_equal(state_a[k], state_b[k]) for k in state_a)


def test_early_stopping_restores_the_best_weights(monkeypatch):
    train, val, test = small_data()
    val_losses = iter([1.0, 0.5, 0.8, 0.9, 0.1])  # best at epoch 2; patience 2 stops at 4
    real_evaluate = common.evaluate

    def evaluate(model, images, labels, batch_size=1000):
        if images is val[0]:
            return next(val_losses), 0.5
        return real_evaluate(model, images, labels, batch_size)

    snapshots = []
    real_train_epoch = mnist_cnn.train_epoch

    def train_epoch(model, *args, **kwargs):
        result = real_train_epoch(model, *args, **kwargs)
        snapshots.append(model.state_dict())
        return result

    monkeypatch.setattr(common, "evaluate", evaluate)
    monkeypatch.setattr(mnist_cnn, "train_epoch", train_epoch)
    cfg = mnist_cnn.parse_args(TINY + ["--epochs", "5", "--early-stopping", "--patience", "2"])
    model, history = mnist_cnn.fit(cfg, train, val, test)
    assert history["epochs_run"] == 4 and history["stopped_early"]
    assert history["best_epoch"] == 2 and history["val_loss"] == [1.0, 0.5, 0.8, 0.9]
    state = model.state_dict()
    for name in state:  # parameters and batch-norm statistics of epoch 2, not of epoch 4
        np.testing.assert_array_equal(state[name], snapshots[1][name], err_msg=name)
    assert any(not np.array_equal(state[k], snapshots[3][k]) for k in state)


def test_early_stopping_helper():
    model = nn.Linear(2, 1)
    stopper = common.EarlyStopping(patience=1)
    assert not stopper.step(1.0, model, 1)
    best = model.weight.data.copy()
    model.weight.data += 1
    assert stopper.step(1.0, model, 2)  # not better: stop
    stopper.restore(model)
    np.testing.assert_array_equal(model.weight.data, best)
    with pytest.raises(ValueError, match="patience"):
        common.EarlyStopping(patience=0)


def test_split_validation_is_a_seeded_partition():
    x, y = np.arange(50).reshape(50, 1), np.arange(50)
    (tx, ty), (vx, vy) = common.split_validation(x, y, 10, seed=3)
    assert len(vy) == 10 and len(ty) == 40
    assert sorted(np.concatenate([ty, vy]).tolist()) == list(range(50))
    np.testing.assert_array_equal(common.split_validation(x, y, 10, seed=3)[1][1], vy)


def test_study_compares_on_equal_budgets(tmp_path, synthetic):
    metrics = mnist_cnn.main(TINY + ["--study", "--study-limit", "64", "--study-epochs", "1",
                                     "--eval-size", "40", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    study = saved["study"]
    assert set(study["optimizers"]) == {"sgd", "momentum", "adam", "rmsprop"}
    assert list(metrics["study"]["regularisers"]) == ["none", "weight decay 0.0005",
                                                      "dropout 0.1", "batch norm",
                                                      "augmentation", "all"]
    table = (tmp_path / "study.md").read_text()
    for kind in ("optimizers", "regularisers"):
        assert (tmp_path / f"study_{kind}.png").read_bytes()[:8] == PNG
        for name, run in study[kind].items():
            assert len(run["test_accuracy"]) == len(run["val_accuracy"]) == 1
            assert f"| {name} | " in table
    assert study["train_images"] == 64 and study["test_images"] == 40
    regs = study["regularisers"]
    assert regs["all"]["config"] == {"optimizer": "adam", "lr": 3e-3, "weight_decay": 5e-4,
                                     "dropout": 0.1, "batch_norm": True, "augment": True}
    assert study["optimizers"]["sgd"]["config"]["lr"] == common.OPTIMIZERS["sgd"][1]
    assert regs["none"]["config"]["batch_norm"] is False
    assert "test_accuracy" not in metrics  # a study replaces the main run


def test_priming_records_seconds_to_98(tmp_path, synthetic):
    mnist_cnn.main(TINY + ["--prime", "64", "--prime-epochs", "1", "--epochs", "1",
                           "--eval-every", "4", "--eval-size", "40", "--out", str(tmp_path)])
    priming = json.loads((tmp_path / "metrics.json").read_text())["priming"]
    assert (tmp_path / "priming.png").read_bytes()[:8] == PNG
    assert set(priming["seconds_to_98"]) == {"without_priming", "with_priming"}
    for name, run in priming["runs"].items():
        reached = priming["seconds_to_98"]["with_priming" if "primed" in name
                                            else "without_priming"]
        accuracies = run["trace"]["test_accuracy"]
        assert (reached is None) == (max(accuracies) < 0.98)  # null: never reached
        assert run["trace"]["steps"] == list(range(4, 4 * len(accuracies) + 1, 4))
    assert priming["runs"]["primed on 64"]["prime_seconds"] > 0


def test_time_to_target_stops_at_the_first_check_that_reaches_it():
    train, _, test = small_data()
    cfg = mnist_cnn.parse_args(TINY + ["--eval-every", "2", "--target", "0"])
    run = mnist_cnn.time_to_target(cfg, train, test, prime=32, full_epochs=2, label="t")
    assert run["steps"] == 2 and run["seconds_to_target"] == run["trace"]["seconds"][0] > 0


def test_help_and_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        mnist_cnn.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--epochs", "--batch-size", "--lr", "--optimizer", "--seed", "--limit",
                   "--data-dir", "--out", "--weight-decay", "--dropout", "--batch-norm",
                   "--augment", "--early-stopping", "--patience", "--val-size", "--study",
                   "--study-limit", "--prime", "--prime-epochs"):
        assert option in out, option
    for bad in (["--dropout", "1.5"], ["--epochs", "0"], ["--optimizer", "lbfgs"],
                ["--early-stopping", "--val-size", "0"], ["--patience", "0"]):
        with pytest.raises(SystemExit) as exit_:
            mnist_cnn.parse_args(bad)
        assert exit_.value.code == 2, bad


@pytest.mark.slow
@needs_mnist
def test_quick_run_on_real_mnist(tmp_path):
    metrics = mnist_cnn.main(["--limit", "3000", "--epochs", "1", "--out", str(tmp_path)])
    assert metrics["test_accuracy"] > 0.7  # 22 steps on 2700 images gave 0.84; chance is 0.1
    assert (tmp_path / "misclassified.png").exists() and (tmp_path / "model.npz").exists()
    assert (tmp_path / "model.onnx").exists()
