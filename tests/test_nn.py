"""nn: Module bookkeeping, the layers, init, batch norm, dropout, save/load."""
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_uu import Tensor, gradcheck, manual_seed, nn
from tinygrad_uu.nn import functional as F
from tinygrad_uu.nn import init


def randn(*shape, seed=0, requires_grad=True):
    data = np.random.default_rng(seed).standard_normal(shape)
    return Tensor(data, requires_grad=requires_grad)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(1))
        self.body = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False))
        self.bn = nn.BatchNorm1d(2)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(2, 1)

    def forward(self, x):
        return self.head(self.drop(self.bn(self.body(x)))) * self.scale


# ------------------------------------------------------------ Module bookkeeping


def test_parameters_are_named_in_a_deterministic_order():
    names = [n for n, _ in Net().named_parameters()]
    assert names == ["scale", "body.0.weight", "body.0.bias", "body.2.weight",
                     "bn.weight", "bn.bias", "head.weight", "head.bias"]
    assert len(list(Net().parameters())) == 8
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in Net().parameters())


def test_children_modules_and_buffers():
    net = Net()
    assert [type(c).__name__ for c in net.children()] == ["Sequential", "BatchNorm1d",
                                                          "Dropout", "Linear"]
    assert len(list(net.modules())) == 1 + 4 + 3
    assert [n for n, _ in net.named_buffers()] == ["bn.running_mean", "bn.running_var",
                                                   "bn.num_batches_tracked"]


def test_shared_parameter_is_listed_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, lin)
    assert len(list(seq.parameters())) == 2


def test_parameter_is_float_and_requires_grad():
    p = nn.Parameter(np.arange(3))
    assert p.dtype == np.float32 and p.requires_grad and p.is_leaf
    assert "Parameter containing" in repr(p)


def test_train_eval_propagates():
    net = Net()
    assert net.training and net.drop.training
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_both_ways():
    net = nn.Linear(3, 2)
    net(randn(4, 3, requires_grad=False).float()).sum().backward()
    assert net.weight.grad is not None
    net.zero_grad(set_to_none=False)
    assert np.all(net.weight.grad.data == 0)
    net.zero_grad()
    assert net.weight.grad is None


def test_typo_raises_attribute_error_naming_class_and_attribute():
    with pytest.raises(AttributeError, match="Linear.*wieght"):
        nn.Linear(2, 2).wieght


def test_plain_list_of_modules_is_refused():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(2, 2), nn.Linear(2, 2)]
    with pytest.raises(TypeError, match="ModuleList"):
        Bad()


def test_replacing_a_parameter_by_a_plain_tensor_is_refused():
    lin = nn.Linear(2, 2)
    lin.weight.grad = Tensor(np.ones((2, 2), np.float32))
    with pytest.raises(TypeError, match="Linear.weight is a Parameter.*in place"):
        lin.weight = lin.weight - 0.1 * lin.weight.grad  # the classic manual-SGD slip
    lin.weight = nn.Parameter(np.zeros((2, 2)))
    lin.bias = None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]


def test_module_without_super_init_still_works():
    class Lazy(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)
    m = Lazy()
    assert m.training and len(list(m.parameters())) == 2


def test_module_list_registers_and_indexes():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3 and len(list(layers.parameters())) == 6
    assert isinstance(layers[1], nn.Linear) and len(layers[1:]) == 2


def test_sequential_index_slice_len():
    seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU) and seq[-1] is seq[2]
    assert isinstance(seq[1:], nn.Sequential) and len(seq[1:]) == 2
    x = Tensor(np.ones((5, 4), np.float32))
    np.testing.assert_allclose(seq(x).data, seq[2](seq[1](seq[0](x))).data)
    with pytest.raises(TypeError, match="item 0"):
        nn.Sequential(lambda x: x)


def test_repr_lists_layers_and_parameter_counts():
    text = repr(nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)))
    assert "(0): Linear(in_features=784, out_features=256, bias=True)" in text
    assert "(1): ReLU()" in text
    assert "200,960 parameters" in text and "203,530 parameters in total" in text


def test_state_dict_round_trip_is_a_snapshot():
    net = Net()
    state = net.state_dict()
    assert list(state) == ["scale", "body.0.weight", "body.0.bias", "body.2.weight", "bn.weight",
                           "bn.bias", "bn.running_mean", "bn.running_var",
                           "bn.num_batches_tracked", "head.weight", "head.bias"]  # PyTorch's order
    assert all(isinstance(v, np.ndarray) for v in state.values())
    net.head.weight.data += 1  # training goes on: the snapshot must not move
    assert not np.allclose(state["head.weight"], net.head.weight.data)
    other = Net()
    other.load_state_dict(state)
    for (name, a), b in zip(other.state_dict().items(), state.values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_load_state_dict_errors_name_keys_and_shapes():
    net = nn.Linear(3, 2)
    state = net.state_dict()
    with pytest.raises(ValueError, match=r"missing keys: \['bias'\]"):
        net.load_state_dict({"weight": state["weight"]})
    with pytest.raises(ValueError, match=r"unexpected keys: \['extra'\]"):
        net.load_state_dict({**state, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"weight: the file has shape \(3, 3\), the model \(2, 3\)"):
        net.load_state_dict({**state, "weight": np.zeros((3, 3))})
    result = net.load_state_dict({"weight": state["weight"], "extra": np.zeros(1)}, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["extra"]


def test_double_converts_parameters_and_float_buffers():
    net = Net().double()
    assert all(t.dtype == np.float64 for t in list(net.parameters()) + list(net.buffers())[:2])
    assert net.bn.num_batches_tracked.dtype == np.int64


def test_apply_visits_every_module_children_first():
    seen = []
    net = Net()
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert len(seen) == len(list(net.modules())) and seen[-1] == "Net"


# ------------------------------------------------------------ save / load


def test_save_load_round_trip(tmp_path):
    manual_seed(1)
    net = Net()
    path = nn.save(net, tmp_path / "net.npz")
    manual_seed(2)
    other = Net()
    assert nn.load(other, path) is other
    for (name, a), b in zip(other.state_dict().items(), net.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert list(nn.load(None, path)) == list(net.state_dict())


def test_save_without_npz_suffix_writes_that_exact_name(tmp_path):
    nn.save(nn.Linear(2, 2), tmp_path / "weights.bin")
    assert os.listdir(tmp_path) == ["weights.bin"]
    assert set(nn.load(None, tmp_path / "weights.bin")) == {"weight", "bias"}


def _crash(*args, **kwargs):
    raise KeyboardInterrupt  # as if Ctrl-C hit half-way through the write


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", _crash)
    with pytest.raises(KeyboardInterrupt):
        nn.save(nn.Linear(2, 2), tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    nn.save(nn.Linear(2, 2), path)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", _crash)
    with pytest.raises(KeyboardInterrupt):
        nn.save(nn.Linear(2, 2), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.npz"]


def test_load_into_wrong_model_names_keys_and_shapes(tmp_path):
    path = nn.save(nn.Linear(3, 2), tmp_path / "lin.npz")
    with pytest.raises(ValueError, match=r"lin.npz.*weight: the file has shape \(2, 3\), "
                                         r"the model \(4, 3\)"):
        nn.load(nn.Linear(3, 4), path)
    with pytest.raises(ValueError, match=r"missing keys: \['0.weight', '0.bias'\]"):
        nn.load(nn.Sequential(nn.Linear(3, 2)), path)


def test_load_refuses_pickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        nn.load(None, path)


# ------------------------------------------------------------ Linear and init


def test_linear_matches_formula_and_gradchecks():
    lin = nn.Linear(4, 3).double()
    x = randn(5, 4)
    np.testing.assert_allclose(lin(x).data, x.data @ lin.weight.data.T + lin.bias.data)
    assert gradcheck(F.linear, x, lin.weight, lin.bias)
    assert gradcheck(F.linear, randn(2, 5, 4), lin.weight)  # batch axes, no bias


def test_linear_skips_the_input_gradient_it_does_not_need():
    lin = nn.Linear(4, 3)
    x = Tensor(np.ones((2, 4), np.float32))
    lin(x).sum().backward()
    assert x.grad is None and lin.weight.grad.shape == (3, 4)


def test_linear_errors_name_shapes_and_dtypes():
    lin = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"linear: input of shape \(2, 5\).*\(3, 4\)"):
        lin(Tensor(np.ones((2, 5), np.float32)))
    with pytest.raises(TypeError, match="float64.*float32"):
        lin(Tensor(np.ones((2, 4))))


def test_linear_init_bound_like_pytorch():
    manual_seed(0)
    lin = nn.Linear(400, 50)
    bound = 1 / math.sqrt(400)
    for p in (lin.weight, lin.bias):
        assert np.abs(p.data).max() <= bound and np.abs(p.data).max() > 0.9 * bound


def test_init_is_seeded_and_in_place():
    w = nn.Parameter(np.zeros((64, 32)))
    data = w.data
    manual_seed(3)
    init.kaiming_uniform_(w)
    first = w.data.copy()
    manual_seed(3)
    init.kaiming_uniform_(w)
    assert w.data is data and np.array_equal(w.data, first)


@pytest.mark.parametrize("fn, expected_std", [
    (lambda w: init.kaiming_uniform_(w, nonlinearity="relu"), math.sqrt(2 / 500)),
    (lambda w: init.kaiming_normal_(w, nonlinearity="relu"), math.sqrt(2 / 500)),
    (lambda w: init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"), math.sqrt(2 / 400)),
    (init.xavier_uniform_, math.sqrt(2 / 900)),
    (lambda w: init.xavier_normal_(w, gain=init.calculate_gain("tanh")),
     5 / 3 * math.sqrt(2 / 900)),
])
def test_init_standard_deviations(fn, expected_std):
    manual_seed(0)
    w = fn(nn.Parameter(np.zeros((400, 500))))
    assert abs(w.data.std() / expected_std - 1) < 0.02 and abs(w.data.mean()) < 0.01 * expected_std * 10


def test_zeros_ones_and_conv_fans():
    w = nn.Parameter(np.empty((8, 3, 5, 5)))
    assert np.all(init.zeros_(w).data == 0) and np.all(init.ones_(w).data == 1)
    assert init._calculate_fan_in_and_fan_out(w) == (75, 200)
    with pytest.raises(ValueError, match="at least 2 axes"):
        init.xavier_uniform_(nn.Parameter(np.zeros(3)))


# ------------------------------------------------------------ activations and dropout


def test_activation_modules_match_tensor_methods():
    x = randn(3, 4)
    for module, expected in [(nn.ReLU(), x.relu()), (nn.Tanh(), x.tanh()),
                             (nn.Sigmoid(), x.sigmoid()), (nn.LeakyReLU(0.2), x.leaky_relu(0.2)),
                             (nn.Softmax(dim=1), x.softmax(1)), (nn.Identity(), x),
                             (nn.LogSoftmax(dim=1), x.log_softmax(1))]:
        np.testing.assert_allclose(module(x).data, expected.data, err_msg=repr(module))
    assert nn.Flatten()(randn(2, 3, 4, 5)).shape == (2, 60)


def test_dropout_scales_kept_values_and_is_identity_in_eval():
    manual_seed(0)
    drop = nn.Dropout(0.25)
    x = Tensor(np.ones((200, 100), np.float32))
    y = drop(x).data
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert drop.eval()(x) is x
    assert np.all(F.dropout(x, 1.0).data == 0)
    with pytest.raises(ValueError, match="probability"):
        nn.Dropout(1.5)


def test_dropout_is_reproducible_and_gradchecks_with_a_fixed_mask():
    x = randn(4, 5)

    def fixed_mask_dropout(t):
        manual_seed(7)  # the same mask on every call of gradcheck
        return F.dropout(t, 0.4)
    assert gradcheck(fixed_mask_dropout, x)
    np.testing.assert_array_equal(fixed_mask_dropout(x).data, fixed_mask_dropout(x).data)


def test_dropout2d_drops_whole_channels():
    manual_seed(0)
    y = nn.Dropout2d(0.5)(Tensor(np.ones((8, 16, 4, 4), np.float32))).data
    per_channel = y.reshape(8, 16, -1)
    assert np.all(per_channel.min(-1) == per_channel.max(-1))  # all or nothing per channel
    assert 0 < (per_channel[..., 0] == 0).mean() < 1
    with pytest.raises(ValueError, match=r"dropout2d.*\(3, 4\)"):
        F.dropout2d(randn(3, 4))


# ------------------------------------------------------------ batch norm


def test_batchnorm2d_train_normalises_and_updates_running_stats():
    bn = nn.BatchNorm2d(3)
    x = np.random.default_rng(0).normal(2.0, 3.0, (8, 3, 5, 5)).astype(np.float32)
    y = bn(Tensor(x)).data
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-3)
    m = x.size // 3
    np.testing.assert_allclose(bn.running_mean.data, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    assert bn.num_batches_tracked.item() == 1
    np.testing.assert_allclose(bn.running_var.data,
                               0.9 + 0.1 * x.var(axis=(0, 2, 3)) * m / (m - 1), rtol=1e-5)


def test_batchnorm_eval_uses_running_stats():
    bn = nn.BatchNorm1d(2)
    bn.running_mean.data[:] = [1.0, -1.0]
    bn.running_var.data[:] = [4.0, 0.25]
    bn.weight.data[:] = [2.0, 1.0]
    bn.bias.data[:] = [0.5, 0.0]
    x = np.array([[3.0, 0.0]], np.float32)
    y = bn.eval()(Tensor(x)).data
    np.testing.assert_allclose(y, [[2 * 2 / math.sqrt(4 + 1e-5) + 0.5, 1 / math.sqrt(0.25 + 1e-5)]],
                               rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(shape=st.sampled_from([(4, 3), (3, 2, 5), (2, 3, 2, 2), (5, 1, 3, 1)]),
       training=st.booleans(), affine=st.booleans())
def test_batchnorm_gradcheck(shape, training, affine):
    c = shape[1]
    x = randn(*shape, seed=1)
    mean, var = Tensor(np.linspace(-1, 1, c)), Tensor(np.linspace(0.5, 2, c))
    if affine:
        w, b = randn(c, seed=2), randn(c, seed=3)
        assert gradcheck(lambda x, w, b: F.batch_norm(x, mean, var, w, b, training, 0.0), x, w, b)
    else:
        assert gradcheck(lambda x: F.batch_norm(x, mean, var, None, None, training, 0.0), x)


@settings(max_examples=15, deadline=None)
@given(shape=st.sampled_from([(4, 3), (3, 2, 5), (2, 3, 2, 2), (5, 1, 3, 1)]),
       training=st.booleans(), affine=st.booleans(), negative_slope=st.sampled_from([0.0, 0.1, 2.0]),
       seed=st.integers(0, 2**16))
def test_batchnorm_with_activation_gradcheck(shape, training, affine, negative_slope, seed):
    """F.batch_norm's negative_slope: a leaky ReLU in the same op. Its values are those of
    batch_norm then leaky_relu, and its gradients pass the finite-difference check."""
    c = shape[1]
    x = randn(*shape, seed=seed)
    mean, var = Tensor(np.linspace(-1, 1, c)), Tensor(np.linspace(0.5, 2, c))
    w, b = (randn(c, seed=seed + 1), randn(c, seed=seed + 2)) if affine else (None, None)
    fused = F.batch_norm(x, mean, var, w, b, training, 0.0, negative_slope=negative_slope)
    apart = F.leaky_relu(F.batch_norm(x, mean, var, w, b, training, 0.0), negative_slope)
    np.testing.assert_allclose(fused.data, apart.data, rtol=1e-12, atol=1e-12)
    if affine:
        assert gradcheck(lambda x, w, b: F.batch_norm(x, mean, var, w, b, training, 0.0,
                                                      negative_slope=negative_slope), x, w, b)
    else:
        assert gradcheck(lambda x: F.batch_norm(x, mean, var, None, None, training, 0.0,
                                                negative_slope=negative_slope), x)


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.LeakyReLU(0.1)])
def test_sequential_fuses_batchnorm_and_activation(activation):
    """nn.Sequential runs BatchNorm then ReLU/LeakyReLU as one op: the same output and
    gradients as the two modules one after the other; not when a hook must see each."""
    x = randn(4, 3, 5, 5, seed=4)
    bn = nn.BatchNorm2d(3)
    bn.weight.data[:], bn.bias.data[:] = [1.5, -0.5, 1.0], [0.2, 0.0, -0.3]
    model = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), bn, activation)
    out = model(x)
    assert type(out._ctx).__name__ == "BatchNormFunction"
    assert out._ctx.op_name == "BatchNormFunction+" + type(activation).__name__  # in draw_graph
    (out * randn(*out.shape, seed=5)).sum().backward()
    fused_grads = [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    apart = activation(bn(model[0](x)))
    assert type(apart._ctx).__name__ != "BatchNormFunction"
    np.testing.assert_allclose(out.data, apart.data, rtol=1e-6, atol=1e-7)
    (apart * randn(*out.shape, seed=5)).sum().backward()
    for fused_grad, p in zip(fused_grads, model.parameters()):
        np.testing.assert_allclose(fused_grad, p.grad.data, rtol=1e-5, atol=1e-6)
    seen = []
    handle = activation.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    hooked = model(x)
    assert len(seen) == 1 and type(seen[0]._ctx).__name__ == "BatchNormFunction"
    assert type(hooked._ctx).__name__ != "BatchNormFunction"
    handle.remove()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(kernel=st.integers(1, 3), stride=st.integers(1, 3), padding=st.integers(0, 1), h=st.integers(3, 7),
       w=st.integers(3, 7), seed=st.integers(0, 2**16))
def test_sequential_pools_before_a_relu_with_the_same_values_and_gradients(kernel, stride, padding, h, w, seed):
    """nn.Sequential runs ReLU then MaxPool2d as the pool with the ReLU in the same pass:
    the same output and the same input gradient, on values with many ties (whole numbers,
    many of them zero or negative) and with NaNs; not when a hook must see the ReLU's
    output. With an infinite output gradient (the ReLU's backward makes it NaN where it
    passes nothing) it equals the pool then the ReLU as two ops."""
    padding = min(padding, kernel // 2)
    rng = np.random.default_rng(seed)
    values = rng.integers(-2, 3, size=(2, 3, h, w)).astype(np.float64)
    values[rng.random(values.shape) < 0.05] = np.nan
    relu, pool = nn.ReLU(), nn.MaxPool2d(kernel, stride, padding)
    g = rng.standard_normal((2, 3, (h + 2 * padding - kernel) // stride + 1,
                             (w + 2 * padding - kernel) // stride + 1))
    results = []
    for model in (nn.Sequential(relu, pool), lambda t: pool(relu(t))):
        x = Tensor(values.copy(), requires_grad=True)
        out = model(x)
        op = (out._ctx.op_name, out._ctx.parents[0] is x)  # (the backward frees what the op kept)
        (out * Tensor(g)).sum().backward()
        results.append((out, x.grad.data, op))
    (swapped, grad, fused_op), (apart, want, apart_op) = results
    assert fused_op == ("MaxPool2d+ReLU", True) and apart_op == ("MaxPool2d", False)
    np.testing.assert_array_equal(swapped.data, apart.data)
    np.testing.assert_array_equal(grad, want)
    g[rng.random(g.shape) < 0.1] = np.inf
    grads = []
    for model in (nn.Sequential(relu, pool), lambda t: relu(pool(t))):
        x = Tensor(values.copy(), requires_grad=True)
        with np.errstate(invalid="ignore"):  # inf * 0: NaN, as the ReLU's backward gives it
            (model(x) * Tensor(g)).sum().backward()
        grads.append(x.grad.data)
    np.testing.assert_array_equal(*grads)
    seen = []
    handle = relu.register_forward_hook(lambda m, args, out: seen.append(out))
    hooked = nn.Sequential(relu, pool)(Tensor(values))
    handle.remove()
    assert len(seen) == 1 and seen[0].shape == values.shape and type(hooked._ctx).__name__ != "ReLU"


def test_batchnorm_errors():
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\).*\(N, C, H, W\).*\(2, 3\)"):
        nn.BatchNorm2d(3)(randn(2, 3))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\).*\(2, 4\)"):
        nn.BatchNorm1d(3)(randn(2, 4))
    with pytest.raises(ValueError, match="more than one value per channel"):
        nn.BatchNorm1d(3)(randn(1, 3))


def test_batchnorm_without_affine_or_running_stats():
    bn = nn.BatchNorm2d(2, affine=False, track_running_stats=False)
    assert list(bn.parameters()) == [] and list(bn.buffers()) == []
    assert bn.state_dict() == {}
    y = bn.eval()(randn(4, 2, 3, 3)).data  # no running stats: batch stats even in eval
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-10)


# ------------------------------------------------------------ against PyTorch


@pytest.mark.torch
def test_layers_match_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((6, 3, 4, 4)).astype(np.float32)
    ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    ours.weight.data[:] = [1.0, 2.0, 3.0]
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    for _ in range(2):
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        (yt * yt).sum().backward()
        xo = Tensor(x, requires_grad=True)
        yo = ours(xo)
        (yo * yo).sum().backward()
        np.testing.assert_allclose(yo.data, yt.detach().numpy(), atol=1e-5)
        np.testing.assert_allclose(xo.grad.data, xt.grad.numpy(), atol=1e-4)
        np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(), rtol=1e-4)
    for name, value in theirs.state_dict().items():  # the same names and values
        np.testing.assert_allclose(ours.state_dict()[name], value.numpy(), rtol=1e-5)
    ours.eval(), theirs.eval()
    np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(),
                               atol=1e-5)


# ------------------------------------------------------------ adaptive average pooling


@pytest.mark.parametrize("shape, size", [((2, 3, 8, 8), 1), ((2, 3, 8, 8), (2, 4)),
                                         ((1, 2, 7, 5), (3, 2)), ((1, 2, 5, 5), (None, 3))])
def test_adaptive_avg_pool2d_gradcheck_and_bins(shape, size):
    x = randn(*shape)
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, size), x)
    if size == 1:
        np.testing.assert_allclose(F.adaptive_avg_pool2d(x, 1).data,
                                   x.data.mean(axis=(2, 3), keepdims=True))
    if shape[2:] == (7, 5):  # uneven bins overlap: rows [0, 3), [2, 5), [4, 7)
        np.testing.assert_allclose(F.adaptive_avg_pool2d(x, size).data[..., 1, 0],
                                   x.data[:, :, 2:5, 0:3].mean(axis=(2, 3)))


@pytest.mark.torch
def test_adaptive_avg_pool2d_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 9))
    for size in [1, (3, 4), (7, 2), 5]:
        np.testing.assert_allclose(
            F.adaptive_avg_pool2d(Tensor(x), size).data,
            torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), size).numpy(), atol=1e-12)


# ------------------------------------------------------------ image layers (spatial.py)


def test_functional_spatial_ops_are_spatials_own_and_kept_after_first_use():
    """F.conv2d etc. come from spatial.py on first use, then are plain module attributes
    (no import statement on every call of a layer's forward)."""
    from tinygrad_uu import spatial
    for name in ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "interpolate"):
        assert getattr(F, name) is getattr(spatial, name)
        assert vars(F)[name] is getattr(spatial, name)
    with pytest.raises(AttributeError, match="no attribute 'conv3d'"):
        F.conv3d
# The ops themselves are checked (gradcheck, kernels) in test_spatial.py; here the modules:
# their weights, initialisation, arguments, and agreement with torch.nn. They run on the
# numpy kernels, which need no compiling, so this file stays fast on a cold numba cache.


@pytest.fixture
def numpy_kernels():
    from tinygrad_uu import kernels
    with kernels.use_backend("numpy"):
        yield


CONV_CASES = [("Conv2d", (4, 6, 3), dict(stride=2, padding=1)),
              ("Conv2d", (4, 6, (3, 2)), dict(groups=2, bias=False, dilation=2)),
              ("ConvTranspose2d", (4, 6, 2), dict(stride=2)),
              ("ConvTranspose2d", (4, 2, 3), dict(stride=2, padding=1, output_padding=1)),
              ("MaxPool2d", (2,), {}), ("AvgPool2d", (3, 2, 1), {}),
              ("Upsample", (), dict(scale_factor=2)),  # bilinear: tests/test_spatial.py
              ("AdaptiveAvgPool2d", ((2, 3),), {})]


@pytest.mark.torch
@pytest.mark.parametrize("name, args, kwargs", CONV_CASES)
def test_image_layers_match_torch(name, args, kwargs, numpy_kernels):
    torch = pytest.importorskip("torch")
    ours, theirs = getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 9)).astype(np.float32)
    a, b = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ya, yb = ours(a), theirs(b)
    (ya * ya).sum().backward()
    (yb * yb).sum().backward()
    np.testing.assert_allclose(ya.data, yb.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(a.grad.data, b.grad.numpy(), atol=1e-4)
    for (n, p), (n2, p2) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert n == n2
        np.testing.assert_allclose(p.grad.data, p2.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_conv2d_init_repr_and_errors():
    manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)
    assert conv.weight.shape == (32, 16, 3, 3) and conv.bias.shape == (32,)
    bound = 1 / math.sqrt(16 * 9)
    assert 0.9 * bound < np.abs(conv.weight.data).max() <= bound
    assert repr(conv) == ("Conv2d(16, 32, kernel_size=(3, 3), stride=(1, 1))"
                          "  # 4,640 parameters")
    assert nn.ConvTranspose2d(8, 4, 2, stride=2).weight.shape == (8, 4, 2, 2)
    with pytest.raises(ValueError, match="out_channels=5 is not divisible by groups=2"):
        nn.Conv2d(4, 5, 3, groups=2)


def small_cnn(lib, p_drop):
    return lib.Sequential(lib.Conv2d(1, 4, 3, padding=1), lib.BatchNorm2d(4), lib.ReLU(),
                          lib.MaxPool2d(2), lib.Dropout2d(p_drop), lib.Conv2d(4, 8, 3, padding=1),
                          lib.ReLU(), lib.AdaptiveAvgPool2d(1), lib.Flatten(), lib.Linear(8, 2))


def small_task():
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    return x, (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)


def test_a_small_cnn_trains(numpy_kernels):
    from tinygrad_uu import optim
    manual_seed(0)
    model, (x, t) = small_cnn(nn, 0.1), small_task()
    opt = optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.cross_entropy(model(Tensor(x)), t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model.eval()(Tensor(x)).shape == (16, 2)


@pytest.mark.torch
def test_a_small_cnn_trains_exactly_like_torch(numpy_kernels):
    torch = pytest.importorskip("torch")
    from tinygrad_uu import optim
    ours, theirs = small_cnn(nn, 0.0), small_cnn(torch.nn, 0.0)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    (x, t), xt, tt = small_task(), *map(torch.tensor, small_task())
    opt, topt = optim.Adam(ours.parameters(), lr=0.05), torch.optim.Adam(theirs.parameters(), lr=0.05)
    for _ in range(6):
        opt.zero_grad()
        topt.zero_grad()
        loss, tloss = F.cross_entropy(ours(Tensor(x)), t), torch.nn.functional.cross_entropy(theirs(xt), tt)
        loss.backward()
        tloss.backward()
        opt.step()
        topt.step()
        assert abs(loss.item() - tloss.item()) < 1e-5
