"""The Tensor's behaviour beyond single ops: dtypes, creation, the backward walk,
gradient accumulation, no_grad, retain_graph, and the error messages."""
import gc
import sys

import numpy as np
import pytest

import tinygrad_uu as tg


# ------------------------------------------------------------------ dtypes and creation

def test_default_dtype_is_float32_and_float64_is_kept():
    assert tg.tensor([1, 2, 3]).dtype == np.float32
    assert tg.tensor(2.5).dtype == np.float32
    assert tg.tensor(np.array([1.0, 2.0])).dtype == np.float64
    assert tg.tensor(np.array([1, 2])).dtype == np.int64  # labels stay integers
    assert tg.tensor([1.0], dtype=np.float64).dtype == np.float64
    x = tg.tensor(np.ones(3))
    assert (x * 2).dtype == np.float64 and (2 * x.float()).dtype == np.float32
    assert (x.float() + np.arange(3)).dtype == np.float32  # ints join the float dtype


def test_creation_functions():
    tg.manual_seed(0)
    a = tg.randn(2, 3)
    tg.manual_seed(0)
    assert np.array_equal(a.data, tg.randn((2, 3)).data)  # manual_seed makes it repeatable
    assert a.shape == (2, 3) and a.dtype == np.float32
    r = tg.rand(1000)
    assert 0 <= r.data.min() and r.data.max() < 1
    assert tg.zeros(2, 2).data.sum() == 0 and tg.ones((2, 2)).data.sum() == 4
    assert np.array_equal(tg.full((2,), 7.0).data, [7, 7])
    assert np.array_equal(tg.arange(4).data, [0, 1, 2, 3])
    assert np.array_equal(tg.arange(1, 7, 2).data, [1, 3, 5])
    assert np.array_equal(tg.eye(2).data, np.eye(2))
    b = tg.zeros(3, dtype=np.float64)
    assert tg.ones_like(b).dtype == np.float64 and tg.zeros_like(b).shape == (3,)
    assert tg.full_like(b, 2.0).data.sum() == 6 and tg.randn_like(b).shape == (3,)
    assert tg.rand_like(b).dtype == np.float64
    src = np.arange(3.0)
    assert tg.from_numpy(src).numpy() is src


def test_attributes_and_conversions():
    x = tg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert (x.shape, x.ndim, x.size, x.dtype) == ((2, 3), 2, 6, np.float64)
    assert x.T.shape == (3, 2) and x.requires_grad and x.grad is None
    assert x.sum().item() == 15.0
    assert x.detach().requires_grad is False and x.detach().numpy() is x.data
    assert x.float().dtype == np.float32 and x.float().double().dtype == np.float64
    assert x.astype(np.float32).dtype == np.float32
    assert "requires_grad=True" in repr(x)
    (x.float() * 2).sum().backward()  # gradient flows back through the casts
    assert x.grad.dtype == np.float64 and np.all(x.grad.data == 2)
    x.zero_grad()
    assert x.grad is None


def test_int_and_bool_where_a_float_is_needed():
    with pytest.raises(TypeError, match="requires_grad needs a floating-point tensor, got int64"):
        tg.tensor(np.array([1, 2]), requires_grad=True)
    labels = tg.tensor(np.array([1, 2]))
    with pytest.raises(TypeError, match="log: needs a floating-point tensor, got int64"):
        labels.log()
    with pytest.raises(TypeError, match="matmul: needs a floating-point tensor, got bool"):
        tg.tensor(np.array([[True]])) @ tg.tensor(np.array([[1.0]]))
    with pytest.raises(TypeError, match="float"):
        tg.tensor(np.array([1, 2])).mean()


# ------------------------------------------------------------------ the backward walk

def test_broadcasting_backward_sums_to_input_shape():
    a = tg.tensor(np.ones((3, 1)), requires_grad=True)
    b = tg.tensor(np.arange(4.0), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and np.all(a.grad.data == 6)  # 0+1+2+3
    assert b.grad.shape == (4,) and np.all(b.grad.data == 3)   # three rows


def test_reuse_accumulates():
    x = tg.tensor(np.array([3.0]), requires_grad=True)
    (x * x).backward()
    assert x.grad.item() == 6.0
    x.zero_grad()
    (x + x).backward()
    assert x.grad.item() == 2.0
    y = x * 2  # a diamond: x -> y -> (y*y, y) -> sum
    (y * y + y).backward()
    assert x.grad.item() == 2.0 + 2 * (2 * 6.0) + 2.0  # accumulated on top of the 2.0 above


def test_grads_accumulate_across_backward_calls_until_zero_grad():
    w = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    for _ in range(3):
        (w * 2).sum().backward()
    np.testing.assert_array_equal(w.grad.data, [6.0, 6.0])
    w.zero_grad()
    (w * 2).sum().backward()
    np.testing.assert_array_equal(w.grad.data, [2.0, 2.0])


def test_backward_neither_writes_nor_keeps_the_callers_gradient():
    """backward(g) does not copy g, so no op's backward may write into it, and a leaf
    that the gradient reaches unchanged must get its own copy."""
    g = np.array([[0.0, 1, 2], [3, 4, 5]])  # owns its data, as a leaf's .grad could
    x = tg.tensor(np.ones((2, 3)), requires_grad=True)
    x.backward(g)  # the root is itself a leaf
    y = tg.tensor(np.ones((2, 3)), requires_grad=True)
    (y + 0.0).backward(g)  # Add hands g on unchanged
    for leaf in (x, y):
        assert not np.shares_memory(leaf.grad.data, g)
        leaf.grad.data += 100
    np.testing.assert_array_equal(g, [[0, 1, 2], [3, 4, 5]])
    z = tg.tensor(np.ones((3, 2)), requires_grad=True)
    z.T.backward(g)  # a transposed view of a non-contiguous gradient is taken in
    np.testing.assert_array_equal(z.grad.data, g.T)
    w = tg.tensor(np.ones((3, 2)), requires_grad=True)
    w.T.backward(np.asfortranarray(g))  # a Fortran-ordered gradient too
    np.testing.assert_array_equal(w.grad.data, g.T)


@pytest.mark.parametrize("name", ["mnist_cnn", "unet_bilinear", "competition_resnet",
                                  "detector"])
def test_no_backward_of_an_examples_model_writes_into_the_callers_gradient(name):
    from tests.example_models import EXAMPLE_MODELS
    example = next(e for e in EXAMPLE_MODELS if e.name == name)
    model = example.model()
    model.train()
    outputs = model(tg.tensor(example.inputs(4)))
    outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(o.shape).astype(np.float32) for o in outputs]
    kept = [g.copy() for g in grads]
    for i, (o, g) in enumerate(zip(outputs, grads)):
        o.backward(g, retain_graph=i + 1 < len(outputs))
    for g, before in zip(grads, kept):
        np.testing.assert_array_equal(g, before)
    assert all(p.grad is not None for p in model.parameters())


class KeepsItsGradient(tg.Function):
    """out = 2 x, whose backward returns an array it also keeps (self.kept)."""

    def forward(self, x):
        self.kept = np.zeros_like(x)
        return 2 * x

    def backward(self, g):
        np.multiply(g, 2, out=self.kept)
        return self.kept


def test_paths_into_one_tensor_are_summed_without_touching_arrays_others_hold(monkeypatch):
    """The walk adds a second path's gradient into an array only it holds (a residual
    block's input: two convs' dx), never into the caller's gradient, an array an op
    returns twice or keeps, or an array a leaf was given. Every sum goes through the
    checks here (IN_PLACE_MIN_SIZE 0)."""
    from tinygrad_uu import autograd
    monkeypatch.setattr(autograd, "IN_PLACE_MIN_SIZE", 0)
    rng = np.random.default_rng(0)
    x = tg.tensor(rng.standard_normal((2, 3, 6, 6)), requires_grad=True)
    w1, w2 = (tg.tensor(rng.standard_normal((3, 3, 3, 3)), requires_grad=True) for _ in range(2))
    g = rng.standard_normal((2, 3, 6, 6))
    from tinygrad_uu.nn import functional as F
    (F.conv2d(x, w1, padding=1) + F.conv2d(x, w2, padding=1)).backward(g)
    summed = x.grad.data.copy()
    parts = []
    for w in (w1, w2):
        x.grad = None
        F.conv2d(x, w, padding=1).backward(g)
        parts.append(x.grad.data)
    np.testing.assert_allclose(summed, parts[0] + parts[1], rtol=1e-12)

    y = tg.tensor(np.ones(4), requires_grad=True)
    h = y * 1.0
    gy = np.arange(4.0)
    (h + h + h).backward(gy)  # Add hands gy on to both of its inputs, three times over
    np.testing.assert_array_equal(y.grad.data, 3 * np.arange(4.0))
    np.testing.assert_array_equal(gy, np.arange(4.0))

    for kept_first in (True, False):  # the kept array arrives first or second at z
        z = tg.tensor(np.ones(4), requires_grad=True)
        twice = KeepsItsGradient.apply(z)
        op = twice._ctx
        out = twice + z * 5.0 if kept_first else z * 5.0 + twice
        out.backward(np.ones(4), retain_graph=True)
        np.testing.assert_array_equal(z.grad.data, [7.0] * 4)
        np.testing.assert_array_equal(op.kept, [2.0] * 4)  # what the op returned, written by it alone

    a = tg.tensor(np.ones(3), requires_grad=True)
    b = tg.tensor(np.ones(3), requires_grad=True)
    (a * 2.0 + b * 3.0).backward(np.ones(3))
    (a * 2.0 + a * 5.0).backward(np.ones(3))  # accumulates onto a's .grad from before
    np.testing.assert_array_equal(a.grad.data, [9.0] * 3)
    np.testing.assert_array_equal(b.grad.data, [3.0] * 3)


def test_leaf_grads_are_independent_arrays():
    a = tg.tensor(np.zeros(2), requires_grad=True)
    b = tg.tensor(np.zeros(2), requires_grad=True)
    (a + b).sum().backward()  # Add hands the same upstream array to both inputs
    a.grad.data += 1
    np.testing.assert_array_equal(b.grad.data, [1.0, 1.0])
    c = tg.tensor(np.zeros((2, 2)), requires_grad=True)
    d = tg.tensor(np.zeros(4), requires_grad=True)
    (c.reshape(4) * 1.0 + d).sum().backward()  # c's grad would be a view of d's
    c.grad.data += 1
    np.testing.assert_array_equal(d.grad.data, np.ones(4))
    upstream = np.ones(4)
    e = tg.tensor(np.zeros(4), requires_grad=True)
    (e * 1.0).backward(upstream)
    e.grad.data += 1
    np.testing.assert_array_equal(upstream, np.ones(4))  # the caller's array is untouched


def test_truth_value_and_dim_defaults():
    with pytest.raises(ValueError, match=r"truth value of a tensor of shape \(2,\) is ambiguous"):
        bool(tg.zeros(2))
    assert bool(tg.ones(1)) and not bool(tg.zeros(()))
    x = tg.tensor(np.array([[1.0, 2.0], [3.0, 5.0]]))
    np.testing.assert_allclose(x.softmax(dim=0).data.sum(0), [1, 1])
    np.testing.assert_allclose(np.exp(x.log_softmax(dim=1).data).sum(1), [1, 1])
    np.testing.assert_allclose(x.softmax().data.sum(1), [1, 1])  # default: the last axis
    assert tg.cat([x, x], dim=1).shape == (2, 4) and tg.cat([x, x]).shape == (4, 2)
    assert tg.stack([x, x], dim=2).shape == (2, 2, 2) and tg.stack([x, x]).shape == (2, 2, 2)


def test_chain_of_ten_thousand_ops_has_no_recursion_limit():
    x = tg.tensor(np.array([0.5]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    assert 10_000 > sys.getrecursionlimit()
    y.backward()
    np.testing.assert_allclose(x.grad.data, [1.0001 ** 10_000], rtol=1e-9)


def test_non_scalar_backward_needs_a_gradient():
    x = tg.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\), not one element"):
        (x * 2).backward()
    (x * 2).backward(np.ones((2, 3)))
    assert np.all(x.grad.data == 2)
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), the output \(2, 3\)"):
        (x * 2).backward(np.ones(3))


def test_backward_without_graph_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.tensor([1.0]).sum().backward()


def test_second_backward_through_freed_graph_is_an_error():
    x = tg.tensor(np.array([2.0]), requires_grad=True)
    y = (x * x).exp()
    y.backward()
    with pytest.raises(RuntimeError, match="already freed.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = tg.tensor(np.array([2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 8.0


def test_backward_frees_saved_buffers():
    x = tg.tensor(np.ones(1000), requires_grad=True)
    h = x.exp()
    ctx = h._ctx
    assert hasattr(ctx, "out")
    h.sum().backward()
    assert ctx.released and not hasattr(ctx, "out") and ctx.parents == ()


def test_graph_is_garbage_collected():
    import weakref
    x = tg.tensor(np.ones(10), requires_grad=True)
    h = x * 2
    ref = weakref.ref(h)
    (h * 3).sum().backward()
    del h
    gc.collect()
    assert ref() is None


# ------------------------------------------------------------------ no_grad

def test_no_grad_context_and_decorator():
    x = tg.tensor(np.ones(2), requires_grad=True)
    with tg.no_grad():
        y = x * 2
    assert not y.requires_grad and y._ctx is None
    assert tg.is_grad_enabled()

    @tg.no_grad()
    def predict(t):
        return t * 3

    assert not predict(x).requires_grad
    assert (x * 3).requires_grad  # switched back on after the call


def test_requires_grad_propagates():
    a = tg.tensor([1.0], requires_grad=True)
    b = tg.tensor([2.0])
    assert (a * b).requires_grad and not (b * b).requires_grad
    assert (b * b)._ctx is None  # no graph is kept for constants


# ------------------------------------------------------------------ error messages

def test_errors_name_the_op_and_the_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 2\) do not align"):
        tg.zeros(3, 4) @ tg.zeros(5, 2)
    with pytest.raises(ValueError, match=r"add: shapes \(3,\) and \(4,\) cannot be broadcast"):
        tg.zeros(3) + tg.zeros(4)
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\)"):
        tg.zeros(2, 3).reshape(4, 2)
    with pytest.raises(ValueError, match=r"expand: cannot broadcast shape \(2,\) to \(3,\)"):
        tg.zeros(2).expand(3)
    with pytest.raises(ValueError, match=r"concatenate: shapes \[\(2, 3\), \(2, 4\)\]"):
        tg.concatenate([tg.zeros(2, 3), tg.zeros(2, 4)], axis=0)
    with pytest.raises(ValueError, match=r"stack: all tensors need the same shape"):
        tg.stack([tg.zeros(2), tg.zeros(3)])
    with pytest.raises(IndexError, match=r"getitem: .*shape \(2,\)"):
        tg.zeros(2)[5]
    with pytest.raises(ValueError, match=r"item: .*shape \(2,\)"):
        tg.zeros(2).item()


# ------------------------------------------------------------------ numerical stability

def test_log_softmax_and_softmax_are_stable_at_1e4():
    x = tg.tensor(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]]), requires_grad=True)
    out = x.log_softmax(axis=1)
    assert np.all(np.isfinite(out.data))
    np.testing.assert_allclose(out.data[0], [0.0, -2e4, -1e4])
    np.testing.assert_allclose(out.data[1], np.log(1 / 3) * np.ones(3))
    out[:, 0].sum().backward()
    assert np.all(np.isfinite(x.grad.data))
    f32 = tg.tensor([[1e4, -1e4, 0.0]]).float()
    assert np.all(np.isfinite(f32.log_softmax(1).data)) and np.all(np.isfinite(f32.softmax(1).data))
    assert np.isfinite(x.logsumexp().item())
    assert np.all(np.isfinite(tg.tensor([1e4, -1e4]).sigmoid().data))
    assert np.all(np.isfinite(tg.tensor([1e4, -1e4]).softplus().data))


def test_comparisons_and_argmax_give_plain_values():
    x = tg.tensor(np.array([[1.0, 5.0], [7.0, 2.0]]))
    assert np.array_equal((x > 2).data, [[False, True], [True, False]])
    assert np.array_equal(x.argmax(axis=1).data, [1, 0])
    assert (x == x).data.all()
    assert len({x, x}) == 1  # still hashable


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
def test_reducing_a_0d_tensor_over_axis_0_has_a_backward(reduce):
    # numpy (and PyTorch) let a 0-d value "reduce" over axis 0 or -1; the gradient is 2x
    for axis in (0, -1):
        x = tg.tensor(np.float64(3.0), requires_grad=True)
        getattr(x * x, reduce)(axis).backward()
        assert x.grad.shape == () and float(x.grad.data) == pytest.approx(6.0)
