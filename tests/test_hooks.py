"""Tensor.register_hook and Module forward (pre-)hooks: they see, may replace, and are
removed by their handles; state_dict neither saves nor disturbs them."""
import numpy as np
import pytest

import tinygrad_uu as tg
from tinygrad_uu import nn


def test_tensor_hook_sees_the_whole_gradient_of_a_leaf():
    x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.data.copy()))
    (x * 3 + x * x).sum().backward()  # x used twice: the hook gets the sum, 3 + 2x
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], [5.0, 7.0])
    np.testing.assert_allclose(x.grad.data, [5.0, 7.0])


def test_tensor_hook_replaces_the_gradient_of_a_leaf():
    x = tg.tensor(np.array([1.0, -2.0]), requires_grad=True)
    x.register_hook(lambda g: g * 0 + 10)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, [10.0, 10.0])


def test_hook_on_an_intermediate_changes_what_flows_on():
    x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 2
    h.register_hook(lambda g: np.array([1.0, 0.0]))  # an array works too
    (h * h).sum().backward()
    np.testing.assert_allclose(x.grad.data, [2.0, 0.0])  # d(2x)/dx times the new gradient


def test_hooks_run_in_order_and_handles_remove_them():
    x = tg.tensor(np.array([1.0]), requires_grad=True)
    calls = []
    first = x.register_hook(lambda g: calls.append("first") or g * 2)
    x.register_hook(lambda g: calls.append(("second", float(g.item()))))
    x.sum().backward()
    assert calls == ["first", ("second", 2.0)]
    first.remove()
    first.remove()  # harmless
    calls.clear()
    x.grad = None
    x.sum().backward()
    assert calls == [("second", 1.0)]
    np.testing.assert_allclose(x.grad.data, [1.0])


def test_hook_errors():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.tensor([1.0]).register_hook(lambda g: g)
    x = tg.tensor(np.ones(3), requires_grad=True)
    x.register_hook(lambda g: np.ones(2))
    with pytest.raises(ValueError, match=r"shape \(2,\), the tensor has shape \(3,\)"):
        x.sum().backward()


def test_parameter_hook_clips_gradients_in_training():
    lin = nn.Linear(3, 1)
    lin.weight.register_hook(lambda g: g.clip(-0.01, 0.01))
    x = tg.tensor(np.full((4, 3), 100.0, dtype=np.float32))
    (lin(x) ** 2).mean().backward()
    assert np.abs(lin.weight.grad.data).max() <= 0.01 + 1e-9
    assert np.abs(lin.bias.grad.data).max() > 0.01  # the bias had no hook


def test_forward_hook_sees_output_and_is_removed_by_its_handle():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    seen = []
    handle = model[1].register_forward_hook(
        lambda module, args, out: seen.append((type(module).__name__, args[0].shape, out.shape)))
    model(tg.randn(5, 4))
    assert seen == [("ReLU", (5, 3), (5, 3))]
    handle.remove()
    model(tg.randn(5, 4))
    assert len(seen) == 1


def test_forward_hook_may_replace_the_output():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].register_forward_hook(lambda module, args, out: out * 0)
    out = model(tg.randn(2, 4))
    np.testing.assert_allclose(out.data, np.broadcast_to(model[1].bias.data, (2, 2)))


def test_forward_pre_hook_sees_and_replaces_inputs():
    lin = nn.Linear(2, 1)
    seen = []
    lin.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    handle = lin.register_forward_pre_hook(lambda module, args: tg.zeros(1, 2))
    out = lin(tg.ones(7, 2))
    assert seen == [(7, 2)] and out.shape == (1, 1)
    np.testing.assert_allclose(out.data, lin.bias.data[None])
    handle.remove()
    assert lin(tg.ones(7, 2)).shape == (7, 1)


def test_hooks_are_not_saved_and_survive_state_dict_round_trips(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2))
    seen = []
    model[0].register_forward_hook(lambda m, a, o: seen.append(1))
    model[0].weight.register_hook(lambda g: g * 0)
    state = model.state_dict()
    assert all(not k.startswith("_") and "hook" not in k for k in state)
    fresh = nn.Sequential(nn.Linear(2, 2))
    fresh.load_state_dict(state)
    assert fresh[0].__dict__.get("_forward_hooks") is None  # not carried by the state
    model.load_state_dict(fresh.state_dict())
    nn.save(model, tmp_path / "m.npz")
    nn.load(model, tmp_path / "m.npz")
    model(tg.ones(1, 2)).sum().backward()
    assert seen == [1]
    np.testing.assert_array_equal(model[0].weight.grad.data, 0)


def test_hooks_are_per_instance():
    a, b = nn.ReLU(), nn.ReLU()
    seen = []
    a.register_forward_hook(lambda m, args, out: seen.append("a"))
    b(tg.ones(1))
    assert seen == [] and not nn.ReLU._forward_hooks
    with pytest.raises(TypeError, match="must be callable"):
        a.register_forward_hook("not a function")


def test_the_walk_forgets_hooked_tensors_when_they_die():
    from tinygrad_uu import autograd
    x = tg.tensor(np.ones(2), requires_grad=True)
    x.register_hook(lambda g: g)
    key = id(x)
    assert key in autograd._hooked
    del x
    import gc
    gc.collect()
    assert key not in autograd._hooked
