"""The spatial ops as differentiable Functions: float64 gradchecks on both backends, and
forward + backward cross-checked against PyTorch where torch is importable."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinygrad_uu import Tensor, gradcheck, kernels
from tinygrad_uu import spatial as S


@pytest.fixture(params=sorted(kernels.BACKENDS))
def backend(request):
    with kernels.use_backend(request.param):
        yield request.param


def param(rng, *shape, requires_grad=True):
    return Tensor(rng.standard_normal(shape), requires_grad=requires_grad)


def distinct(rng, *shape):
    """Values at least 0.01 apart, so no max is tied and finite differences see one winner."""
    n = int(np.prod(shape))
    return Tensor((rng.permutation(n) * 0.01 - n * 0.005).reshape(shape), requires_grad=True)


# --------------------------------------------------------------------------- gradchecks
CONV_OPTIONS = [dict(), dict(stride=2, padding=1), dict(stride=(1, 2), padding=(2, 0), dilation=(2, 1), groups=2)]


@pytest.mark.parametrize("options", CONV_OPTIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_gradcheck(backend, options, bias):
    rng = np.random.default_rng(0)
    x, w = param(rng, 2, 4, 6, 5), param(rng, 3 * (2 if "groups" in options else 1), 4 // options.get("groups", 1), 3, 2)
    b = param(rng, w.shape[0]) if bias else None
    inputs = (x, w, b) if bias else (x, w)
    assert gradcheck(lambda *t: S.conv2d(*t, **options), *inputs)


@pytest.mark.parametrize("options", [dict(), dict(stride=2, padding=1, output_padding=1),
                                     dict(stride=(2, 1), padding=(0, 1), dilation=(1, 2), groups=2)])
def test_conv_transpose2d_gradcheck(backend, options):
    rng = np.random.default_rng(1)
    x, w, b = param(rng, 2, 4, 4, 3), param(rng, 4, 3, 3, 2), param(rng, 3 * options.get("groups", 1))
    assert gradcheck(lambda x, w, b: S.conv_transpose2d(x, w, b, **options), x, w, b)


@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_pool_gradcheck(backend, kernel, stride, padding):
    rng = np.random.default_rng(2)
    x = distinct(rng, 2, 3, 7, 6)
    assert gradcheck(lambda x: S.max_pool2d(x, kernel, stride, padding), x)
    assert gradcheck(lambda x: S.avg_pool2d(x, kernel, stride, padding), x)
    x.data += 0.005  # no value at ReLU's kink: every one at least 0.005 from zero
    assert gradcheck(lambda x: S.max_pool2d(x, kernel, stride, padding, relu=True), x)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("resize", [dict(scale_factor=2), dict(scale_factor=(3, 1)), dict(size=(7, 4))])
def test_interpolate_gradcheck(backend, mode, resize):
    rng = np.random.default_rng(3)
    x = param(rng, 2, 2, 3, 5)
    assert gradcheck(lambda x: S.interpolate(x, mode=mode, **resize), x)


@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.sampled_from([1, 2]), k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2),
       dilation=st.integers(1, 2), h=st.integers(3, 6), seed=st.integers(0, 999))
def test_conv2d_gradcheck_drawn(groups, k, stride, padding, dilation, h, seed):
    rng = np.random.default_rng(seed)
    x, w, b = param(rng, 1, 2, h, h + 1), param(rng, 2, 2 // groups, k, k), param(rng, 2)
    opts = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    if (k - 1) * dilation + 1 > h + 2 * padding:
        with pytest.raises(ValueError, match="conv2d"):
            S.conv2d(x, w, b, **opts)
        return
    assert gradcheck(lambda *t: S.conv2d(*t, **opts), x, w, b)


def test_gradcheck_catches_a_wrong_backward():
    """Negative control: a conv whose backward forgets the bias must fail the check."""
    class Wrong(S.Conv2d):
        def backward(self, g):
            gx, gw, gb = super().backward(g)
            return gx, gw, gb * 0.5

    rng = np.random.default_rng(4)
    x, w, b = param(rng, 1, 2, 4, 4), param(rng, 2, 2, 3, 3), param(rng, 2)
    assert not gradcheck(lambda x, w, b: Wrong.apply(x, w, b), x, w, b, raise_exception=False)


def test_only_the_wanted_gradients(backend):
    """An input image that needs no gradient gets none, and the op still trains its weight."""
    rng = np.random.default_rng(5)
    x, w, b = param(rng, 2, 1, 6, 6, requires_grad=False), param(rng, 4, 1, 3, 3), param(rng, 4)
    y = S.conv2d(x, w, b, padding=1)
    y.sum().backward()
    assert x.grad is None and w.grad.shape == w.shape and b.grad.shape == (4,)
    np.testing.assert_allclose(b.grad.data, np.full(4, 72.0))  # 2 images x 36 pixels


def test_float32_in_float32_out(backend):
    rng = np.random.default_rng(6)
    x = Tensor(rng.standard_normal((1, 2, 4, 4)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), requires_grad=True)
    y = S.interpolate(S.max_pool2d(S.conv2d(x, w, padding=1), 2), scale_factor=2, mode="bilinear")
    y.sum().backward()
    assert y.data.dtype == x.grad.data.dtype == w.grad.data.dtype == np.float32


def test_argument_errors():
    x = Tensor(np.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"interpolate: scale_factor.*1\.5"):
        S.interpolate(x, scale_factor=1.5)
    with pytest.raises(ValueError, match="align_corners"):
        S.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    with pytest.raises(ValueError, match=r"conv2d: channel mismatch.*\(1, 2, 4, 4\)"):
        S.conv2d(x, Tensor(np.zeros((3, 1, 3, 3))))
    assert S.interpolate(x, scale_factor=2.0).shape == (1, 2, 8, 8)


# --------------------------------------------------------------------------- against PyTorch
def against_torch(ours, theirs, inputs, rtol=1e-4):
    """Run ``ours`` on Tensors and ``theirs`` on torch tensors made from the same float32
    arrays; compare the outputs and the gradients of sum(out * g)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    mine = [None if a is None else Tensor(a, requires_grad=True) for a in inputs]
    torch_in = [None if a is None else torch.tensor(a, requires_grad=True) for a in inputs]
    out, expected = ours(*mine), theirs(*torch_in)
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=rtol,
                               atol=rtol * float(expected.detach().abs().max()))
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(g)
    expected.backward(torch.tensor(g))
    for m, t in zip(mine, torch_in):
        if m is not None:
            want = t.grad.numpy()
            np.testing.assert_allclose(m.grad.data, want, rtol=rtol, atol=rtol * float(np.abs(want).max()))


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.torch
@pytest.mark.parametrize("options", CONV_OPTIONS + [dict(padding=1, groups=4), dict(stride=3, dilation=3)])
@pytest.mark.parametrize("c_in", [1, 8])  # 1: the numba backend's direct loops; 8: im2col + BLAS
def test_conv2d_against_torch(backend, options, c_in):
    torch = pytest.importorskip("torch")
    groups = options.get("groups", 1) if c_in % options.get("groups", 1) == 0 else 1
    options = dict(options, groups=groups)
    rng = np.random.default_rng(11)
    inputs = (f32(rng, 3, c_in, 11, 10), f32(rng, 8, c_in // groups, 3, 3), f32(rng, 8))
    against_torch(lambda *t: S.conv2d(*t, **options),
                  lambda *t: torch.nn.functional.conv2d(*t, **options), inputs)


@pytest.mark.torch
@pytest.mark.parametrize("options", [dict(stride=2), dict(stride=2, padding=1, output_padding=1),
                                     dict(stride=(3, 2), padding=(1, 0), output_padding=(2, 1), dilation=2, groups=2)])
def test_conv_transpose2d_against_torch(backend, options):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    g = options.get("groups", 1)
    inputs = (f32(rng, 2, 4, 5, 6), f32(rng, 4, 6 // g, 2, 3), f32(rng, 6))
    against_torch(lambda *t: S.conv_transpose2d(*t, **options),
                  lambda *t: torch.nn.functional.conv_transpose2d(*t, **options), inputs)


@pytest.mark.torch
@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 1))])
def test_pools_against_torch(backend, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    x = f32(rng, 2, 3, 9, 8)
    against_torch(lambda t: S.max_pool2d(t, kernel, stride, padding),
                  lambda t: torch.nn.functional.max_pool2d(t, kernel, stride, padding), (x,))
    against_torch(lambda t: S.avg_pool2d(t, kernel, stride, padding),
                  lambda t: torch.nn.functional.avg_pool2d(t, kernel, stride, padding), (x,))


@pytest.mark.torch
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("resize", [dict(scale_factor=2), dict(scale_factor=(3, 2)), dict(size=(7, 5)),
                                    dict(size=(13, 17)), dict(size=(2, 3))])
def test_interpolate_against_torch(backend, mode, resize):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    x = f32(rng, 2, 3, 5, 6)
    against_torch(lambda t: S.interpolate(t, mode=mode, **resize),
                  lambda t: torch.nn.functional.interpolate(t, mode=mode, **resize), (x,))
