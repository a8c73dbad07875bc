"""State dicts in PyTorch's names and layouts: every example's model loads into its PyTorch
twin (benchmarks/torch_models.py) with strict=True and gives the same outputs, and back;
nn.load refuses, by name, a file that is not an .npz archive."""
from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest

import tinygrad_uu as tg
from tests.example_models import EXAMPLE_MODELS
from tinygrad_uu import nn

TOL = 1e-5


def engine_outputs(model, x):
    model.eval()
    with tg.no_grad():
        out = model(tg.tensor(x))
    return [o.data for o in (out if isinstance(out, (tuple, list)) else (out,))]


def torch_outputs(torch, net, x):
    net.eval()
    with torch.no_grad():
        out = net(torch.from_numpy(x))
    return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def assert_close_outputs(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL)


# ----------------------------------------------------------------------------- without torch

def test_state_dict_order_is_pytorchs_and_shared_modules_appear_twice():
    shared = nn.Linear(2, 2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2))
            self.gain = nn.Parameter(np.ones(1))  # registered after a child: still listed first
            self.b = shared
            self.c = shared

    state = Net().state_dict()
    assert list(state) == ["gain", "a.0.weight", "a.1.weight", "a.1.bias", "a.1.running_mean",
                           "a.1.running_var", "a.1.num_batches_tracked", "b.weight", "b.bias",
                           "c.weight", "c.bias"]
    count = state["a.1.num_batches_tracked"]
    assert count.shape == () and count.dtype == np.int64
    Net().load_state_dict(state)  # both names load (into the same weight)


def test_layouts_are_pytorchs():
    assert nn.Linear(5, 3).state_dict()["weight"].shape == (3, 5)                      # (out, in)
    conv, transposed = nn.Conv2d(4, 6, (3, 2), groups=2), nn.ConvTranspose2d(4, 6, 3, groups=2)
    assert conv.state_dict()["weight"].shape == (6, 2, 3, 2)        # (out, in/g, kh, kw)
    assert transposed.state_dict()["weight"].shape == (4, 3, 3, 3)  # (in, out/g, kh, kw)


def test_load_state_dict_takes_tensors_and_checks_before_copying():
    net = nn.Linear(3, 2)
    other = nn.Linear(3, 2)
    other.load_state_dict({k: tg.tensor(v) for k, v in net.state_dict().items()})
    np.testing.assert_array_equal(other.weight.data, net.weight.data)
    before = other.weight.data.copy()
    with pytest.raises(ValueError, match=r"bias: the file has shape \(3,\), the model \(2,\)"):
        other.load_state_dict({"weight": np.zeros((2, 3)), "bias": np.zeros(3)})
    np.testing.assert_array_equal(other.weight.data, before)  # nothing changed


def test_load_names_a_file_that_is_not_npz(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("weights: 1 2 3\n")
    with pytest.raises(ValueError, match=r"notes\.txt: not an \.npz archive"):
        nn.load(nn.Linear(2, 2), text)
    single = tmp_path / "w.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ValueError, match=r"w\.npy: a single \.npy array"):
        nn.load(None, single)
    other_zip = tmp_path / "photos.zip"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("a.jpg", b"...")
    with pytest.raises(ValueError, match=r"photos\.zip: a zip archive, but not an \.npz"):
        nn.load(None, other_zip)
    with pytest.raises(FileNotFoundError):
        nn.load(None, tmp_path / "absent.npz")


def test_to_torch_state_dict_without_torch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="pip install torch"):
        nn.to_torch_state_dict(nn.Linear(2, 2))


# ----------------------------------------------------------------------------- with torch

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.mark.torch
@pytest.mark.parametrize("case", EXAMPLE_MODELS, ids=lambda c: c.name)
def test_example_model_loads_strictly_into_its_torch_twin(case, torch):
    from benchmarks.torch_models import torch_twin
    model = case.model()
    sd = nn.to_torch_state_dict(model)
    assert list(sd) == list(model.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    net = torch_twin(torch, model)  # load_state_dict(nn.to_torch_state_dict(model), strict=True)
    assert list(net.state_dict()) == list(sd)  # the same names, in the same order
    for key, value in net.state_dict().items():
        assert value.dtype == sd[key].dtype and value.shape == sd[key].shape, key
    for batch in (1, 3):
        x = case.inputs(batch, seed=batch)
        assert_close_outputs(engine_outputs(model, x), torch_outputs(torch, net, x))


@pytest.mark.torch
@pytest.mark.parametrize("case", EXAMPLE_MODELS, ids=lambda c: c.name)
def test_weights_trained_in_torch_load_into_the_engine(case, torch, tmp_path):
    from benchmarks.torch_models import torch_twin_untrained
    torch.manual_seed(0)
    net = torch_twin_untrained(torch, case.model())  # torch's own initial weights
    with torch.no_grad():                            # and some "trained" batch-norm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(11)
    model = case.build()
    model.load_state_dict(net.state_dict())          # torch tensors, as they come
    x = case.inputs(3, seed=5)
    assert_close_outputs(engine_outputs(model, x), torch_outputs(torch, net, x))
    path = nn.save(nn.from_torch_state_dict(net.state_dict()), tmp_path / "from_torch.npz")
    again = nn.load(case.build(), path)
    assert_close_outputs(engine_outputs(again, x), torch_outputs(torch, net, x))
    assert all(int(m.num_batches_tracked.data) == 11 for m in again.modules()
               if isinstance(m, nn.BatchNorm2d))


@pytest.mark.torch
def test_num_batches_tracked_counts_as_torch(torch):
    ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    for _ in range(3):
        ours(tg.tensor(x)), theirs(torch.from_numpy(x))
    for key, value in nn.to_torch_state_dict(ours).items():
        torch.testing.assert_close(value, theirs.state_dict()[key], rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_load_names_a_torch_checkpoint(torch, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ValueError, match=r"model\.pt: this is a PyTorch checkpoint"):
        nn.load(nn.Linear(2, 2), path)
    model = nn.Linear(2, 2)
    model.load_state_dict(torch.load(path))  # what the message suggests
    np.testing.assert_array_equal(model.weight.data, torch.load(path)["weight"].numpy())


@pytest.mark.torch
def test_every_mirrored_layer_matches_torch(torch):
    """The layers the detector and the ResNet-like classifier are built from, mirrored
    by benchmarks/torch_models.py and loaded strictly: the same outputs."""
    from benchmarks.torch_models import torch_twin
    tg.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.LeakyReLU(0.1),
        nn.MaxPool2d(2), nn.Upsample(scale_factor=2, mode="bilinear"),
        nn.ConvTranspose2d(8, 4, 2, stride=2), nn.Sigmoid(), nn.AvgPool2d(3, 1, 1),
        nn.Upsample(scale_factor=2), nn.Conv2d(4, 6, 3, dilation=2, groups=2), nn.Tanh(),
        nn.Dropout2d(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5),
        nn.Linear(6, 5), nn.Softmax(dim=1), nn.Identity())
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.data[:] = np.linspace(-1, 1, 8)
            m.running_var.data[:] = np.linspace(0.5, 2, 8)
    net = torch_twin(torch, model)
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    assert_close_outputs(engine_outputs(model, x), torch_outputs(torch, net, x))
