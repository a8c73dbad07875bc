"""tinygrad_uu.onnx: every example's model, and every op the examples use, exported to
ONNX and run in onnxruntime, which must give the engine's outputs at batch 1 and 3."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import tinygrad_uu as tg
from tests.example_models import EXAMPLE_MODELS, randomize_batch_norm
from tinygrad_uu import autograd, nn
from tinygrad_uu import onnx as tg_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RTOL, ATOL = 1e-4, 1e-5


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    xs = x if isinstance(x, tuple) else (x,)
    return session.run(None, dict(zip(names, xs)))


def engine(model, x):
    with tg.no_grad():
        out = model(*[tg.tensor(a) for a in (x if isinstance(x, tuple) else (x,))])
    return [o.data for o in (out if isinstance(out, (tuple, list)) else (out,))]


def assert_same_outputs(model, path, make_input, batches=(1, 3)):
    """onnxruntime's outputs == the engine's (in eval mode) at every batch size."""
    was_training = model.training
    model.eval()
    for batch in batches:
        x = make_input(batch)
        ours, theirs = engine(model, x), run_onnx(path, x)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert a.shape == b.shape and a.shape[0] == batch
            np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=f"batch {batch}")
    model.train(was_training)


def node_types(proto) -> list:
    return [n.op_type for n in proto.graph.node]


# ----------------------------------------------------------------------------- the examples

@pytest.mark.parametrize("case", EXAMPLE_MODELS, ids=lambda c: c.name)
def test_example_model_runs_in_onnxruntime(case, tmp_path):
    model = case.model()
    path = tmp_path / "model.onnx"
    proto = tg_onnx.export(model, case.inputs(2), path)
    assert proto.ir_version == 8 and [o.version for o in proto.opset_import] == [17]
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    batch_dims = [i.type.tensor_type.shape.dim[0].dim_param
                  for i in list(proto.graph.input) + list(proto.graph.output)]
    assert set(batch_dims) == {"N"}
    # every parameter and buffer used is an initializer named by its state_dict key, float32
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    state = model.state_dict()
    used = {k for k in state if k in initializers}
    assert used == {k for k in state if not k.endswith("num_batches_tracked")}
    for key in used:
        assert initializers[key].dtype == np.float32
        np.testing.assert_array_equal(initializers[key], state[key], err_msg=key)
    assert "Dropout" not in node_types(proto)
    assert_same_outputs(model, path, lambda b: case.inputs(b, seed=b))


# ----------------------------------------------------------------------------- stand-ins

class TwoHeads(nn.Module):
    """A tiny YOLO-like detector: Conv-BN-LeakyReLU(0.1), a stride-2 conv, and a second
    head on the upsampled deep features concatenated with the shallow ones."""

    def __init__(self, up="nearest"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.LeakyReLU(0.1))
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(16), nn.LeakyReLU(0.1))
        self.head_coarse = nn.Conv2d(16, 7, 1)
        self.up = nn.Upsample(scale_factor=2, mode=up)
        self.head_fine = nn.Conv2d(16 + 8, 7, 1)

    def forward(self, x):
        shallow = self.stem(x)
        deep = self.down(shallow)
        fine = self.head_fine(tg.cat([self.up(deep), shallow], axis=1))
        return self.head_coarse(deep).sigmoid(), fine


class Residual(nn.Module):
    """conv(stride 2)-BN-ReLU-conv-BN plus a 1x1 stride-2 projection, added, then ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
        return (out + self.shortcut(x)).relu()


def resnet_like():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(2), Residual(8, 16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.3), nn.Linear(16, 1))


class Functional(nn.Module):
    """The Tensor-level ops a forward may use: mean/var (one ReduceMean each), max/min,
    softmax, clip, pad, slicing, permute, elementwise maths, constants."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.linspace(0.5, 1.5, 4).astype(np.float32))

    def forward(self, x):                                    # x: (N, 4, 6, 6)
        centred = x - x.mean(axis=(2, 3), keepdims=True)
        std = (x.var(axis=(2, 3), keepdims=True) + 1e-3).sqrt()
        y = centred / std * self.scale.reshape(1, 4, 1, 1)
        y = y.pad(((0, 0), (0, 0), (1, 0), (0, 2)), value=0.5)[:, 1:3, ::2, -4:]
        peak = y.abs().max(axis=1, keepdims=True).permute(0, 2, 3, 1)
        z = y.permute(0, 2, 3, 1).softmax(axis=-1) + peak
        w = (z.exp() - 1.0).clip(0.1, 2.0).log() ** 3 + z.tanh().maximum(z * 0.3) * z.softplus()
        v = (w.min(axis=2) - w.sum(axis=(1, 2, 3)).reshape(-1, 1, 1) * 0.01
             + x[:, 0, 0, :2].mean(axis=1, keepdims=True).unsqueeze(2)).flatten(1)   # (N, 8)
        return v.log_softmax(axis=1) + (v * v).sum(axis=1, keepdims=True).expand(-1, 8) ** 0.5


class Indexing(nn.Module):
    """Slices (negative steps too), ints, None, Ellipsis and one index array."""

    def forward(self, x):                                    # x: (N, 3, 4, 5)
        a = x[:, ::-1, 1:, ::2]                              # (N, 3, 3, 3)
        b = x[:, np.array([2, 0, 2])][:, :, :3, 1:4]         # Gather on axis 1
        c = x[:, 1][:, None, :3, -3:]                        # (N, 1, 3, 3)
        return a * b + c + x[..., 1:4, 4].unsqueeze(-1)


class Several(nn.Module):
    """Two inputs, used together."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, a, b):
        return self.fc(a) * b.sigmoid()


STAND_INS = {
    "detector_nearest": (lambda: TwoHeads("nearest"), (3, 16, 16)),
    "detector_bilinear": (lambda: TwoHeads("bilinear"), (3, 16, 16)),
    "resnet_like": (resnet_like, (3, 16, 16)),
    "pools_and_transposed": (lambda: nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), nn.Tanh(),
        nn.AvgPool2d(3, stride=1, padding=1), nn.MaxPool2d(3, stride=2, padding=1),
        nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2),
        nn.Sigmoid(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(2), nn.Softmax(dim=1),
        nn.Upsample(size=(5, 7), mode="bilinear")), (4, 8, 8)),
    "resize_sizes": (lambda: nn.Sequential(nn.Upsample(size=(9, 14), mode="nearest"),
                                           nn.AdaptiveAvgPool2d(3), nn.Flatten(),
                                           nn.LogSoftmax(dim=1)), (2, 6, 7)),
    "linear_on_sequences": (lambda: nn.Sequential(nn.Linear(6, 5), nn.LeakyReLU(0.2),
                                                  nn.Linear(5, 3, bias=False), nn.Tanh()),
                            (4, 6)),
    "batch_norm_1d": (lambda: nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12),
                                            nn.Linear(12, 4, bias=False),
                                            nn.BatchNorm1d(4, affine=False), nn.Linear(4, 2)),
                      (3, 4)),
    "batch_norm_then_activations": (lambda: nn.Sequential(   # each pair one op in the engine
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4), nn.LeakyReLU(0.1)), (3, 6, 6)),
    "functional": (Functional, (4, 6, 6)),
    "indexing": (Indexing, (3, 4, 5)),
}


@pytest.mark.parametrize("name", sorted(STAND_INS))
def test_stand_in_models_run_in_onnxruntime(name, tmp_path):
    build, shape = STAND_INS[name]
    tg.manual_seed(3)
    model = randomize_batch_norm(build(), seed=3)
    def make(b):
        return np.random.default_rng(b).standard_normal((b,) + shape).astype(np.float32)
    path = tmp_path / "m.onnx"
    tg_onnx.export(model, make(2), path)
    assert_same_outputs(model, path, make)


def test_composites_are_one_node_each(tmp_path):
    """Batch norm, softmax, a mean and global average pooling: one ONNX node each."""
    tg.manual_seed(0)
    proto = tg_onnx.export(resnet_like(), np.zeros((1, 3, 8, 8), np.float32), tmp_path / "r.onnx")
    types = node_types(proto)
    assert types.count("BatchNormalization") == 4 and types.count("GlobalAveragePool") == 1
    assert types.count("Conv") == 4 and "Gemm" in types and "Add" in types
    assert not {"ReduceSum", "Dropout", "Mul"} & set(types)

    class MeanVarSoftmax(nn.Module):
        def forward(self, x):
            return x.softmax(axis=1) + x.mean(axis=1, keepdims=True) + x.var(axis=1, keepdims=True)
    types = node_types(tg_onnx.export(MeanVarSoftmax(), np.zeros((2, 5), np.float32),
                                      tmp_path / "m.onnx"))
    assert types.count("Softmax") == 1 and types.count("ReduceMean") == 3
    assert "ReduceSum" not in types and "Exp" not in types


@pytest.mark.parametrize("bins", [1, 2])
def test_average_pooling_by_hand_and_by_adaptive_pool_export_as_pools(bins, tmp_path):
    """Equal bins averaged by a reshape and a mean (written by hand) and by
    F.adaptive_avg_pool2d (an average pool): GlobalAveragePool for one bin, else
    AveragePool, and onnxruntime's outputs equal the engine's."""
    import tinygrad_uu.nn.functional as F

    class ByHand(nn.Module):
        def forward(self, x):
            n, c, h, w = x.shape
            return x.reshape(n, c, bins, h // bins, bins, w // bins).mean(axis=(3, 5))

    class Adaptive(nn.Module):
        def forward(self, x):
            return F.adaptive_avg_pool2d(x, bins)

    want = "GlobalAveragePool" if bins == 1 else "AveragePool"
    for model in (ByHand(), Adaptive()):
        path = tmp_path / f"{type(model).__name__}.onnx"
        assert node_types(tg_onnx.export(model, np.zeros((1, 3, 4, 6), np.float32), path)) == [want]
        assert_same_outputs(model, path, lambda b: np.random.default_rng(b).normal(size=(b, 3, 4, 6)).astype(np.float32))


def test_batch_norm_with_its_activation_exports_as_two_nodes(tmp_path):
    """nn.Sequential runs BatchNorm -> ReLU / LeakyReLU as one op; ONNX gets the two nodes."""
    build, shape = STAND_INS["batch_norm_then_activations"]
    model = randomize_batch_norm(build(), seed=1)
    types = node_types(tg_onnx.export(model, np.zeros((2,) + shape, np.float32), tmp_path / "b.onnx"))
    assert types == ["Conv", "BatchNormalization", "Relu", "Conv", "BatchNormalization", "LeakyRelu"]


def test_conv_relu_and_max_pool_export_as_three_nodes(tmp_path):
    """nn.Sequential runs Conv2d -> ReLU -> MaxPool2d as one op; ONNX gets the three nodes."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                          nn.Conv2d(4, 2, 3, padding=0, stride=1), nn.ReLU(), nn.MaxPool2d(2))
    path = tmp_path / "p.onnx"
    assert node_types(tg_onnx.export(model, np.zeros((2, 3, 9, 11), np.float32), path)) == \
        ["Conv", "Relu", "MaxPool"] * 2
    assert_same_outputs(model, path, lambda b: np.random.default_rng(b).normal(size=(b, 3, 9, 11)).astype(np.float32))


def test_conv_with_its_relu_exports_as_two_nodes(tmp_path):
    """nn.Sequential runs Conv2d -> ReLU as one op ("Conv2d+ReLU"); ONNX gets the two nodes."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.ReLU())
    path = tmp_path / "c.onnx"
    assert node_types(tg_onnx.export(model, np.zeros((2, 3, 5, 5), np.float32), path)) == ["Conv", "Relu"] * 2
    assert_same_outputs(model, path, lambda b: np.random.default_rng(b).normal(size=(b, 3, 5, 5)).astype(np.float32))


def test_two_inputs_and_static_shapes(tmp_path):
    model = Several()
    a, b = np.ones((2, 5), np.float32), np.zeros((2, 3), np.float32)
    proto = tg_onnx.export(model, (a, b), tmp_path / "s.onnx", input_names=["features", "gate"],
                           dynamic_axes={})
    assert [i.name for i in proto.graph.input] == ["features", "gate"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 5]
    assert_same_outputs(model, tmp_path / "s.onnx",
                        lambda _: (np.random.default_rng(0).standard_normal((2, 5), dtype=np.float32),
                                   np.random.default_rng(1).standard_normal((2, 3), dtype=np.float32)),
                        batches=(2,))


# ----------------------------------------------------------------------------- modes, errors

def test_training_mode_restored_and_running_stats_untouched(tmp_path):
    model = EXAMPLE_MODELS[2].model()                         # the CNN: batch norm, dropout
    model.train()
    model[1].eval()                                           # one layer left in eval on purpose
    before = model.state_dict()
    with tg.no_grad():                                        # export traces even under no_grad
        tg_onnx.export(model, np.ones((2, 1, 28, 28), np.float32), tmp_path / "m.onnx")
        assert autograd.is_grad_enabled() is False
    assert model.training and not model[1].training
    assert all(m.training for i, m in enumerate(model) if i != 1)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert all(p.grad is None for p in model.parameters())
    assert "forward" not in model[0].__dict__                # the trace's wrappers are gone


class Cube(tg.Function):
    def forward(self, x):
        return x ** 3

    def backward(self, g):
        raise NotImplementedError


class UsesCube(nn.Module):
    def forward(self, x):
        return Cube.apply(x)


def test_op_without_emitter_names_op_and_module(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), UsesCube()))
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    apply_before = tg.Function.__dict__["apply"]
    with pytest.raises(tg_onnx.ExportError, match=r"Cube.*1\.1 \(UsesCube\)"):
        tg_onnx.export(model, np.ones((1, 3), np.float32), path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.onnx"]  # nothing half-written
    assert tg.Function.__dict__["apply"] is apply_before


def test_batch_statistics_in_eval_are_refused(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(tg_onnx.ExportError, match=r"1 \(BatchNorm2d\).*track_running_stats"):
        tg_onnx.export(model, np.ones((2, 1, 5, 5), np.float32), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnx_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install onnx"):
        tg_onnx.export(nn.Linear(2, 2), np.ones((1, 2), np.float32), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_non_tensor_output_is_refused(tmp_path):
    class Dict(nn.Module):
        def forward(self, x):
            return {"y": x}
    with pytest.raises(tg_onnx.ExportError, match="returned a dict"):
        tg_onnx.export(Dict(), np.ones((1, 2), np.float32), tmp_path / "m.onnx")


def test_identity_and_repeated_outputs(tmp_path):
    class Twice(nn.Module):
        def forward(self, x):
            y = x.relu()
            return x, y, y
    path = tmp_path / "t.onnx"
    tg_onnx.export(Twice(), np.ones((1, 3), np.float32), path)
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    a, b, c = run_onnx(path, x)
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(b, np.maximum(x, 0))
    np.testing.assert_array_equal(c, b)


# ----------------------------------------------------------------------------- the examples' helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import common  # noqa: E402
import mnist_mlp  # noqa: E402
from tests.test_mnist_mlp import synthetic_mnist  # noqa: E402


def test_save_model_writes_npz_and_onnx(tmp_path, monkeypatch):
    model = mnist_mlp.build_model(8)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    assert common.save_model(model, x, tmp_path) == "model.npz, model.onnx"
    assert sorted(os.listdir(tmp_path)) == ["model.npz", "model.onnx"]
    assert_same_outputs(nn.load(mnist_mlp.build_model(8), tmp_path / "model.npz"),
                        tmp_path / "model.onnx", lambda b: x[:b], batches=(1, 2))

    monkeypatch.setitem(sys.modules, "onnx", None)           # a student without onnx
    line = common.save_model(model, x, tmp_path / "no_onnx")
    assert "pip install onnx" in line and os.listdir(tmp_path / "no_onnx") == ["model.npz"]


def test_save_model_reports_a_failed_export_and_keeps_the_weights(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3), UsesCube())
    line = common.save_model(model, np.ones((1, 3), np.float32), tmp_path)
    assert line.startswith("model.npz (no model.onnx: ExportError") and "Cube" in line
    assert os.listdir(tmp_path) == ["model.npz"]


def test_mnist_mlp_example_writes_model_onnx_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "load_mnist", lambda data_dir, limit: synthetic_mnist(200, 50))
    mnist_mlp.main(["--epochs", "1", "--hidden", "16", "--out", str(tmp_path)])
    assert "model.onnx" in capsys.readouterr().out.strip().splitlines()[-1]
    model = nn.load(mnist_mlp.build_model(16), tmp_path / "model.npz")
    test_x = synthetic_mnist(200, 50)[1][0]
    assert_same_outputs(model, tmp_path / "model.onnx", lambda b: test_x[:b])


def test_float64_model_exports_as_float32(tmp_path):
    tg.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 2))
    model.double()
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4))
    proto = tg_onnx.export(model, x, tmp_path / "m.onnx")
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in proto.graph.initializer)
    model.eval()
    np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx", x.astype(np.float32))[0],
                               engine(model, x)[0], rtol=RTOL, atol=ATOL)


def test_check_export_script_compares_a_saved_run(tmp_path, monkeypatch):
    from benchmarks import check_export
    from tinygrad_uu.files import save_json
    test_x = synthetic_mnist(50, 40)[1][0]
    model = mnist_mlp.build_model(8)
    common.save_model(model, test_x[:1], tmp_path / "mnist_mlp")
    save_json(tmp_path / "mnist_mlp" / "metrics.json", {"config": {"hidden": 8}})
    build, _, batch = check_export.EXAMPLES["mnist_mlp"]
    monkeypatch.setitem(check_export.EXAMPLES, "mnist_mlp", (build, lambda d: test_x, 16))
    result = check_export.main([str(tmp_path / "mnist_mlp")])
    runtime = next(v for k, v in result.items() if k.startswith("onnxruntime"))
    assert runtime["max_abs_difference"] < 1e-5 and runtime["predictions_agreeing"] == 1.0
    assert result["images"] == 40 and (tmp_path / "mnist_mlp" / "check_export.json").exists()


class FrozenMean(nn.Module):
    def forward(self, x):
        return x - tg.tensor(x.data.mean())        # computed outside the graph: frozen


class FrozenBatch(nn.Module):
    def forward(self, x):
        return x + tg.ones(x.shape)                # the traced batch size frozen


@pytest.mark.parametrize("model, message", [(FrozenMean(), "differs from the engine's"),
                                            (FrozenBatch(), "cannot run the graph")])
def test_export_checks_the_graph_in_onnxruntime_before_writing(model, message, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    with pytest.raises(tg_onnx.ExportError, match=message):
        tg_onnx.export(model, x, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []
    tg_onnx.export(model, x, tmp_path / "m.onnx", check=False)  # written as traced, unchecked
    assert os.listdir(tmp_path) == ["m.onnx"]
    # with fixed shapes the frozen batch size is right; the frozen mean never is
    if isinstance(model, FrozenBatch):
        tg_onnx.export(model, x, tmp_path / "fixed.onnx", dynamic_axes={})


def test_export_without_onnxruntime_writes_unchecked(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    model = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid())
    proto = tg_onnx.export(model, np.ones((1, 3), np.float32), tmp_path / "m.onnx")
    assert tg_onnx.check_in_onnxruntime(proto, model, np.ones((1, 3), np.float32)) is None
    assert node_types(onnx.load(str(tmp_path / "m.onnx"))) == ["Gemm", "Sigmoid"]
