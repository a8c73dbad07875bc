"""Every differentiable op, two ways: the forward agrees with numpy, and the backward
agrees with central finite differences (gradcheck, float64), on hypothesis-drawn
shapes (broadcasting included) and values inside each op's domain."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_uu as tg
from tests import strategies as S

settings.register_profile("ops", max_examples=25, deadline=None)
settings.load_profile("ops")


def T(a):
    return tg.Tensor(np.array(a, dtype=np.float64), requires_grad=True)


def check(fn_tensor, fn_numpy, *arrays):
    """Forward equals numpy (value and shape), and the backward passes gradcheck."""
    tensors = [T(a) for a in arrays]
    out = fn_tensor(*tensors)
    expected = np.asarray(fn_numpy(*arrays))
    assert out.shape == expected.shape
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-12)
    assert tg.gradcheck(fn_tensor, *tensors)
    for t, a in zip(tensors, arrays):  # gradcheck must not mutate its inputs
        np.testing.assert_array_equal(t.data, a)


def sigmoid_np(x):
    return 1 / (1 + np.exp(-x))


UNARY = {
    # name: (tensor op, numpy op, domain)
    "neg": (lambda x: -x, np.negative, "any"),
    "exp": (lambda x: x.exp(), np.exp, "any"),
    "log": (lambda x: x.log(), np.log, "positive"),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, "positive"),
    "abs": (lambda x: x.abs(), np.abs, "away_from_zero"),
    "tanh": (lambda x: x.tanh(), np.tanh, "any"),
    "sigmoid": (lambda x: x.sigmoid(), sigmoid_np, "any"),
    "relu": (lambda x: x.relu(), lambda x: np.maximum(x, 0), "away_from_zero"),
    "leaky_relu": (lambda x: x.leaky_relu(0.1), lambda x: np.where(x > 0, x, 0.1 * x), "away_from_zero"),
    "softplus": (lambda x: x.softplus(), lambda x: np.log1p(np.exp(x)), "any"),
    "square": (lambda x: x ** 2, np.square, "any"),
    "cube": (lambda x: x ** 3, lambda x: x ** 3, "any"),
    "pow_half": (lambda x: x ** 0.5, np.sqrt, "positive"),
    "pow_negative": (lambda x: x ** -1.5, lambda x: x ** -1.5, "positive"),
    "clip": (lambda x: x.clip(-0.55, 1.05), lambda x: np.clip(x, -0.55, 1.05), "grid"),
    "clip_low_only": (lambda x: x.clip(min=0.25), lambda x: np.clip(x, 0.25, None), "grid"),
    "add_scalar": (lambda x: 2.5 + x, lambda x: 2.5 + x, "any"),
    "rsub_scalar": (lambda x: 1 - x, lambda x: 1 - x, "any"),
    "rdiv_scalar": (lambda x: 2 / x, lambda x: 2 / x, "nonzero"),
    "rpow_scalar": (lambda x: 2 ** x, lambda x: 2 ** x, "any"),
}


@pytest.mark.parametrize("name", UNARY)
@given(data=st.data())
def test_unary(name, data):
    fn, ref, domain = UNARY[name]
    x = data.draw(S.array_and_shape(domain))
    check(fn, ref, x)


BINARY = {
    "add": (lambda x, y: x + y, np.add, "any", "any"),
    "sub": (lambda x, y: x - y, np.subtract, "any", "any"),
    "mul": (lambda x, y: x * y, np.multiply, "any", "any"),
    "div": (lambda x, y: x / y, np.divide, "any", "nonzero"),
    "pow": (lambda x, y: x ** y, np.power, "positive", "any"),
    "maximum": (lambda x, y: x.maximum(y), np.maximum, "grid", "offgrid"),
    "minimum": (lambda x, y: tg.minimum(x, y), np.minimum, "grid", "offgrid"),
}


@pytest.mark.parametrize("name", BINARY)
@given(data=st.data())
def test_binary_broadcasting(name, data):
    fn, ref, domain_x, domain_y = BINARY[name]
    shape_x, shape_y = data.draw(S.broadcastable_pair())
    x = data.draw(S.arrays(shape_x, domain_x))
    y = data.draw(S.arrays(shape_y, domain_y))
    check(fn, ref, x, y)


@given(data=st.data())
def test_add_relu(data):
    """nn.functional.add_relu, relu(x + y) as one op: x + y is drawn away from the kink at
    0 (y = z - x), so that finite differences see one side of it."""
    from tinygrad_uu.nn.functional import add_relu
    x = data.draw(S.array_and_shape("any"))
    z = data.draw(S.arrays(x.shape, "away_from_zero"))
    check(add_relu, lambda a, b: np.maximum(a + b, 0), x, z - x)


@given(data=st.data())
def test_where_broadcasting(data):
    shape_x, shape_y = data.draw(S.broadcastable_pair())
    x, y = data.draw(S.arrays(shape_x)), data.draw(S.arrays(shape_y))
    cond = x > 0
    check(lambda a, b: tg.where(cond, a, b), lambda a, b: np.where(cond, a, b), x, y)


@given(shapes=S.matmul_shapes(), data=st.data())
def test_matmul(shapes, data):
    x, y = data.draw(S.arrays(shapes[0])), data.draw(S.arrays(shapes[1]))
    check(lambda a, b: a @ b, np.matmul, x, y)


REDUCTIONS = {
    "sum": (lambda x, ax, k: x.sum(ax, keepdims=k), lambda x, ax, k: np.sum(x, ax, keepdims=k), "any"),
    "mean": (lambda x, ax, k: x.mean(ax, keepdims=k), lambda x, ax, k: np.mean(x, ax, keepdims=k), "any"),
    "max": (lambda x, ax, k: x.max(ax, keepdims=k), lambda x, ax, k: np.max(x, ax, keepdims=k), "grid"),
    "min": (lambda x, ax, k: x.min(ax, keepdims=k), lambda x, ax, k: np.min(x, ax, keepdims=k), "grid"),
    "var": (lambda x, ax, k: x.var(ax, keepdims=k), lambda x, ax, k: np.var(x, ax, keepdims=k), "any"),
    "std": (lambda x, ax, k: x.std(ax, keepdims=k), lambda x, ax, k: np.std(x, ax, keepdims=k), "grid"),
    "logsumexp": (lambda x, ax, k: x.logsumexp(ax, keepdims=k),
                  lambda x, ax, k: np.log(np.sum(np.exp(x), ax, keepdims=k)), "any"),
}


@pytest.mark.parametrize("name", REDUCTIONS)
@given(data=st.data(), keepdims=st.booleans())
def test_reduction(name, data, keepdims):
    fn, ref, domain = REDUCTIONS[name]
    # std of one element is 0, where sqrt has no derivative: give std at least 2 per group
    x = data.draw(S.array_and_shape(domain, min_dims=0 if name != "std" else 1, unique=True))
    axis = data.draw(S.axes(x.ndim))
    if name == "std" and axis is not None:
        sizes = [x.shape[a] for a in (axis if isinstance(axis, tuple) else (axis,))]
        if np.prod(sizes) < 2:
            axis = None
    if name == "std" and x.size < 2:
        x = np.array([0.1, 0.7])
    check(lambda t: fn(t, axis, keepdims), lambda a: ref(a, axis, keepdims), x)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_family(name, data):
    x = data.draw(S.array_and_shape(min_dims=1))
    axis = data.draw(S.axes(x.ndim, allow_none=False, allow_tuple=False))
    e = np.exp(x - x.max(axis, keepdims=True))
    softmax = e / e.sum(axis, keepdims=True)
    expected = softmax if name == "softmax" else np.log(softmax)
    check(lambda t: getattr(t, name)(axis), lambda a: expected, x)


def test_reduction_aliases_dim_keepdim():
    x = T(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(x.sum(dim=1, keepdim=True).data, x.data.sum(1, keepdims=True))
    np.testing.assert_array_equal(x.mean(dim=(0, 1)).data, x.data.mean())
    np.testing.assert_array_equal(x.max(dim=0).data, x.data.max(0))
    with pytest.raises(TypeError, match="either axis or dim"):
        x.sum(axis=0, dim=0)


# ------------------------------------------------------------------ shape ops

@given(x=S.array_and_shape(min_dims=1), data=st.data())
def test_reshape_and_flatten(x, data):
    check(lambda t: t.reshape(-1), lambda a: a.reshape(-1), x)
    check(lambda t: t.reshape((x.size, 1)), lambda a: a.reshape(x.size, 1), x)
    start = data.draw(st.integers(0, x.ndim - 1))
    expected_shape = x.shape[:start] + (int(np.prod(x.shape[start:])),)
    check(lambda t: t.flatten(start), lambda a: a.reshape(expected_shape), x)


@given(x=S.array_and_shape(min_dims=1), data=st.data())
def test_permute_and_transpose(x, data):
    perm = data.draw(st.permutations(range(x.ndim)))
    check(lambda t: t.permute(*perm), lambda a: a.transpose(perm), x)
    check(lambda t: t.T, lambda a: a.T, x)
    if x.ndim >= 2:
        check(lambda t: t.transpose(0, -1), lambda a: np.swapaxes(a, 0, -1), x)


@given(shapes=S.broadcastable_pair(), data=st.data())
def test_expand(shapes, data):
    target = np.broadcast_shapes(*shapes)
    x = data.draw(S.arrays(shapes[0]))
    check(lambda t: t.expand(target), lambda a: np.broadcast_to(a, target), x)
    check(lambda t: t.broadcast_to(target), lambda a: np.broadcast_to(a, target), x)


@given(x=S.array_and_shape(), data=st.data())
def test_squeeze_unsqueeze(x, data):
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim))
    check(lambda t: t.unsqueeze(axis), lambda a: np.expand_dims(a, axis), x)
    check(lambda t: t.squeeze(), lambda a: np.squeeze(a), x)
    y = np.expand_dims(x, axis)
    check(lambda t: t.squeeze(axis), lambda a: np.squeeze(a, axis), y)


@given(data=st.data())
def test_concatenate_and_stack(data):
    shape = data.draw(S.shapes(min_dims=1))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    parts = [data.draw(S.arrays(shape[:axis % len(shape)] + (n,) + shape[axis % len(shape) + 1:]))
             for n in sizes]
    check(lambda *ts: tg.concatenate(ts, axis=axis), lambda *a: np.concatenate(a, axis), *parts)
    same = [data.draw(S.arrays(shape)) for _ in sizes]
    new_axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check(lambda *ts: tg.stack(ts, axis=new_axis), lambda *a: np.stack(a, new_axis), *same)


@given(x=S.array_and_shape(min_dims=1), data=st.data())
def test_pad(x, data):
    widths = [tuple(data.draw(st.integers(0, 2)) for _ in range(2)) for _ in range(x.ndim)]
    check(lambda t: t.pad(widths, value=0.5), lambda a: np.pad(a, widths, constant_values=0.5), x)


@st.composite
def indexed_array(draw):
    """An array and an index of one of the kinds numpy accepts."""
    x = draw(S.array_and_shape(min_dims=1))
    kind = draw(st.sampled_from(["int", "slice", "none", "mask", "int_array", "tuple"]))
    n = x.shape[0]
    if kind == "int":
        return x, draw(st.integers(-n, n - 1))
    if kind == "slice":
        return x, slice(draw(st.integers(0, n)), None, draw(st.integers(1, 2)))
    if kind == "none":
        return x, (None, Ellipsis)
    if kind == "mask":
        return x, draw(S.hnp.arrays(bool, x.shape))
    if kind == "int_array":  # repeats allowed: their gradients must add up
        return x, np.array(draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=6)))
    return x, (slice(None), ) * (x.ndim - 1) + (draw(st.integers(0, x.shape[-1] - 1)),)


@given(case=indexed_array())
def test_getitem(case):
    x, index = case
    check(lambda t: t[index], lambda a: a[index], x)


def test_getitem_repeated_indices_accumulate():
    x = T([1.0, 2.0, 3.0])
    x[np.array([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad.data, [3.0, 0.0, 1.0])
    y = T(np.arange(6.0).reshape(2, 3))
    y[tg.tensor(np.array([1, 1])), [0, 2]].sum().backward()  # index with a Tensor and a list
    np.testing.assert_array_equal(y.grad.data, [[0, 0, 0], [1, 0, 1]])
