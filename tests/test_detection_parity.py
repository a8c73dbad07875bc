"""benchmarks/compare_detector_torch.py: the PyTorch twin computes the same loss and
gradients from the same weights and batch (skipped without torch)."""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

import tinygrad_uu as tg  # noqa: E402
from tinygrad_uu.detection.loss import DEFAULT_WEIGHTS, yolo_loss  # noqa: E402
from tinygrad_uu.detection.targets import build_targets  # noqa: E402


@pytest.mark.torch
@pytest.mark.parametrize("strides", [(16,), (8, 16)])
def test_torch_twin_has_the_same_loss_and_gradients(strides):
    torch = pytest.importorskip("torch")
    import compare_detector_torch as cmp
    import detection
    tg.manual_seed(0)
    anchors = [np.array([[6.0, 8], [10, 12], [14, 16]]), np.array([[18.0, 20], [24, 26], [30, 30]])]
    anchors = anchors[-len(strides):]
    model = detection.build_model(4, 1, anchors, strides, width=4)
    net = cmp.torch_detector(torch, model, 1, 4).double()
    model.double()
    rng = np.random.default_rng(0)
    images = rng.random((3, 1, 64, 64))
    boxes = [np.array([[4.0, 4, 20, 24], [30, 30, 60, 58]]), np.array([[10.0, 40, 24, 60]]),
             np.zeros((0, 4))]
    labels = [np.array([0, 3]), np.array([2]), np.zeros(0, int)]
    targets = build_targets(boxes, labels, model.anchors, model.strides, (64, 64))
    for t in targets:                              # float64 targets for the float64 twin
        t.xy, t.wh = t.xy.astype(np.float64), t.wh.astype(np.float64)
        t.objectness, t.weight = t.objectness.astype(np.float64), t.weight.astype(np.float64)
    ours, _ = yolo_loss(model(tg.tensor(images)), targets, 4)
    ours.backward()
    theirs = cmp.torch_yolo_loss(torch, net(torch.from_numpy(images)), targets, 4, DEFAULT_WEIGHTS)
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    torch_grads = {k: p.grad.numpy() for k, p in net.named_parameters()}
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad.data, torch_grads[name], rtol=1e-5, atol=1e-8,
                                   err_msg=name)
