"""GradientMonitor and the figures from inside a network: plot_filters,
plot_feature_maps, plot_grad_flow; and the MNIST CNN and U-Net examples saving them."""
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_uu as tg
import tinygrad_uu.nn.functional as F
from tinygrad_uu import nn, optim, viz
from tinygrad_uu.debug import GradientMonitor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import common  # noqa: E402
import mnist_cnn  # noqa: E402
import segmentation  # noqa: E402

from tests.test_mnist_mlp import synthetic_mnist  # noqa: E402
from tests.test_segmentation import discs  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def mlp(depth=3, width=16, act=nn.ReLU):
    layers = []
    for i in range(depth):
        layers += [nn.Linear(8 if i == 0 else width, width), act()]
    return nn.Sequential(*layers, nn.Linear(width, 3))


def batch(seed=0, n=32):
    rng = np.random.default_rng(seed)
    return tg.tensor(rng.standard_normal((n, 8)).astype(np.float32)), rng.integers(0, 3, n)


def train(model, steps, monitor, lr=0.05, zero_grad=True, x=None, y=None):
    opt = optim.SGD(model.parameters(), lr=lr)
    if x is None:
        x, y = batch()
    for _ in range(steps):
        if zero_grad:
            opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        monitor.step()
        opt.step()
    return opt


# ----------------------------------------------------------------------------- GradientMonitor

def test_monitor_records_mean_and_max_every_n_steps():
    tg.manual_seed(0)
    model = mlp()
    monitor = GradientMonitor(model, every=3)
    train(model, 7, monitor)
    assert monitor.steps == [0, 3, 6]
    assert monitor.names == [n for n, _ in model.named_parameters()]
    assert monitor.mean_abs.shape == monitor.max_abs.shape == (3, len(monitor.names))
    # the last record is step 6, whose gradients are still in p.grad... after opt.step,
    # which does not touch them
    for i, (_, p) in enumerate(model.named_parameters()):
        g = np.abs(p.grad.data)
        assert monitor.mean_abs[-1, i] == pytest.approx(g.mean())
        assert monitor.max_abs[-1, i] == pytest.approx(g.max())
    assert monitor.warnings() == []
    assert "no warnings" in monitor.report()


def test_monitor_sees_vanishing_gradients_in_a_deep_sigmoid_net_only():
    tg.manual_seed(0)
    deep_sigmoid = mlp(depth=10, act=nn.Sigmoid)
    monitor = GradientMonitor(deep_sigmoid)
    train(deep_sigmoid, 2, monitor)
    found = monitor.warnings()
    assert len(found) == 1 and found[0].startswith("vanishing: ")
    assert "0.weight" in found[0] and "20.weight" in found[0]
    tg.manual_seed(0)
    healthy = mlp(depth=10, act=nn.ReLU)
    for m in healthy:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    monitor = GradientMonitor(healthy)
    train(healthy, 2, monitor)
    assert monitor.warnings() == []


def test_monitor_catches_a_forgotten_zero_grad_exactly():
    tg.manual_seed(0)
    model = mlp()
    monitor = GradientMonitor(model, every=2)
    train(model, 5, monitor, zero_grad=False)
    assert monitor.accumulated == [2, 4]  # step 0 is the first backward: nothing left over yet
    assert any(w.startswith("accumulating: ") and "zero_grad()" in w for w in monitor.warnings())


def test_gradient_accumulation_over_micro_batches_is_not_a_mistake():
    tg.manual_seed(0)
    model = mlp()
    monitor = GradientMonitor(model)
    opt = optim.SGD(model.parameters(), lr=0.05)
    for step in range(3):
        opt.zero_grad()
        for half in range(2):  # two backward passes into one update, on purpose
            x, y = batch(seed=10 * step + half, n=8)
            F.cross_entropy(model(x), y).backward()
        monitor.step()
        opt.step()
    assert monitor.accumulated == []


def test_clipping_gradients_before_the_monitor_is_not_a_mistake():
    tg.manual_seed(0)
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=0.05)
    monitor = GradientMonitor(model, optimizer=opt)
    x, y = batch()
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for p in model.parameters():  # clip by value, then by norm
            p.grad.data = np.clip(p.grad.data, -0.01, 0.01) * 0.5
        opt.step()
    assert monitor.accumulated == [] and monitor.warnings() == []


def test_monitor_reports_exploding_and_nonfinite_gradients():
    tg.manual_seed(0)
    model = mlp(depth=2)
    monitor = GradientMonitor(model)
    x, y = batch()
    with np.errstate(all="ignore"):
        train(model, 12, monitor, lr=20.0, x=x * 10, y=y)
    found = " | ".join(monitor.warnings())
    assert "exploding: " in found, monitor.report()


def test_monitor_hooks_into_the_optimizer_and_removes_cleanly():
    tg.manual_seed(0)
    model = mlp()
    opt = optim.SGD(model.parameters(), lr=0.05)
    monitor = GradientMonitor(model, every=2, optimizer=opt)
    x, y = batch()
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert monitor.steps == [0, 2]
    monitor.remove()
    assert "step" not in vars(opt)
    opt.step()
    assert monitor.steps == [0, 2]
    assert all(not p._hooks for p in model.parameters())


def test_monitor_errors():
    with pytest.raises(ValueError, match="every must be >= 1"):
        GradientMonitor(mlp(), every=0)
    with pytest.raises(ValueError, match="no parameter that requires grad"):
        GradientMonitor(mlp().requires_grad_(False))


# ----------------------------------------------------------------------------- figures

def test_plot_grad_flow_writes_a_png_and_needs_records(tmp_path):
    tg.manual_seed(0)
    model = mlp(depth=10, act=nn.Sigmoid)
    monitor = GradientMonitor(model)
    with pytest.raises(ValueError, match="recorded nothing yet"):
        viz.plot_grad_flow(monitor, tmp_path / "g.png")
    train(model, 3, monitor)
    assert viz.plot_grad_flow(monitor, tmp_path / "g.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("cin", [1, 3, 5])
def test_plot_filters_for_grey_colour_and_deep_layers(tmp_path, cin):
    conv = nn.Conv2d(cin, 6, 3)
    path = viz.plot_filters(conv, tmp_path / f"f{cin}.png")
    assert path.read_bytes()[:8] == PNG
    viz.plot_filters(conv.weight.data, tmp_path / "array.png")  # an array works too
    with pytest.raises(ValueError, match=r"\(out, in, kh, kw\)"):
        viz.plot_filters(nn.Linear(2, 2), tmp_path / "no.png")


def test_plot_feature_maps_uses_a_hook_and_leaves_the_model_as_it_was(tmp_path):
    tg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    image = np.random.default_rng(0).random((1, 8, 8)).astype(np.float32)
    running = model[1].running_mean.data.copy()
    for layer in (model[2], "3"):
        out = viz.plot_feature_maps(model, layer, image, tmp_path / "maps.png")
        assert out.read_bytes()[:8] == PNG
    assert model.training  # restored
    np.testing.assert_array_equal(model[1].running_mean.data, running)  # ran in eval mode
    assert not model[2]._forward_hooks and not model[3]._forward_hooks  # hooks removed
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        viz.plot_feature_maps(model, "nope", image, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) output"):
        viz.plot_feature_maps(model, model[5], image, tmp_path / "x.png")
    with pytest.raises(ValueError, match="not a layer of this model"):
        viz.plot_feature_maps(model, nn.ReLU(), image, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- the examples

def test_mnist_cnn_saves_filters_feature_maps_and_grad_flow(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "load_mnist",
                        lambda data_dir, limit: synthetic_mnist(n_train=160, n_test=40))
    mnist_cnn.main(["--epochs", "1", "--channels", "2", "4", "--hidden", "8",
                    "--batch-size", "32", "--val-size", "16", "--out", str(tmp_path)])
    for png in ("filters.png", "feature_maps.png", "grad_flow.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG, png


def test_segmentation_saves_filters_feature_maps_and_grad_flow(tmp_path, monkeypatch):
    data = discs(4, size=16, seed=0), discs(2, size=16, seed=1)
    monkeypatch.setattr(segmentation, "load_warwick", lambda data_dir=None, limit=None: data)
    segmentation.main(["--out", str(tmp_path), "--epochs", "1", "--width", "4",
                       "--batch-size", "2", "--no-augment"])
    for png in ("filters.png", "feature_maps.png", "grad_flow.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG, png
