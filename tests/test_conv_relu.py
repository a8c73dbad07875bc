"""A conv with its ReLU in one op (``F.conv2d(..., relu=True)``, nn.Sequential's Conv2d then
ReLU): the same values and gradients as the two ops, a float64 gradcheck on both backends,
the backward's mask and bias sums against numpy, NaNs kept, and where Sequential fuses."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tinygrad_uu as tg
from tinygrad_uu import Tensor, gradcheck, kernels, nn
from tinygrad_uu import spatial as S

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(params=sorted(kernels.BACKENDS))
def backend(request):
    with kernels.use_backend(request.param):
        yield request.param


@SETTINGS
@given(n=st.integers(1, 2), ci=st.integers(1, 3), co=st.integers(1, 3), k=st.sampled_from([1, 3]),
       stride=st.integers(1, 2), padding=st.integers(0, 1), h=st.integers(3, 6), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_conv_relu_passes_gradcheck(n, ci, co, k, stride, padding, h, bias, seed):
    """Float64 central differences, on both backends. Draws whose conv output lies within
    1e-3 of zero (where differences of 1e-6 would cross the ReLU's kink) are left out."""
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((n, ci, h, h + 1)), requires_grad=True)
    w = Tensor(rng.standard_normal((co, ci, k, k)), requires_grad=True)
    b = Tensor(rng.standard_normal(co), requires_grad=True) if bias else None
    inputs = (x, w, b) if bias else (x, w)
    plain = S.conv2d(*inputs, stride=stride, padding=padding).data
    assume(np.abs(plain).min() > 1e-3 and (plain > 0).any() and (plain < 0).any())
    for name in sorted(kernels.BACKENDS):
        with kernels.use_backend(name):
            assert gradcheck(lambda *t: S.conv2d(*t, stride=stride, padding=padding, relu=True), *inputs)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("x_shape, w_shape", [
    ((2, 16, 12, 12), (16, 16, 3, 3)),   # Winograd, whole images
    ((5, 16, 14, 14), (24, 16, 3, 3)),   # Winograd, images packed on planes
    ((2, 16, 64, 64), (16, 16, 3, 3)),   # Winograd on a big map (dw by Winograd on AVX-512)
    ((2, 3, 32, 32), (8, 3, 3, 3)),      # the 3x3 loops
    ((3, 2, 9, 9), (5, 2, 3, 3)),        # direct loops
    ((4, 8, 7, 7), (16, 8, 3, 3)),       # im2col + BLAS, the batch cut among threads
    ((2, 16, 8, 8), (4, 16, 1, 1)),      # a 1x1 conv
])
def test_conv_relu_equals_the_conv_then_the_relu(threads, x_shape, w_shape):
    """float32, through every kernel path, on one and two threads: the same output, and the
    same gradients (up to the bias's float64 sum) as Conv2d then ReLU as two ops."""
    rng = np.random.default_rng(sum(x_shape + w_shape))
    x0 = rng.standard_normal(x_shape).astype(np.float32)
    g = rng.standard_normal((x_shape[0], w_shape[0]) + x_shape[2:]).astype(np.float32)
    before = tg.get_num_threads()
    results = []
    try:
        tg.set_num_threads(threads)
        conv = nn.Conv2d(w_shape[1], w_shape[0], w_shape[2], padding=w_shape[2] // 2)
        for fused in (True, False):
            x = Tensor(x0.copy(), requires_grad=True)
            out = conv(x, relu=True) if fused else conv(x).relu()
            conv.zero_grad()
            (out * Tensor(g)).sum().backward()
            results.append((out.data, x.grad.data, conv.weight.grad.data.copy(), conv.bias.grad.data.copy(),
                            out._ctx is None or out._ctx.op_name))
    finally:
        tg.set_num_threads(before)
    (out, gx, gw, gb, _), (want, want_gx, want_gw, want_gb, _) = results
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(gx, want_gx)
    np.testing.assert_allclose(gw, want_gw, rtol=1e-5, atol=1e-5 * np.abs(want_gw).max())
    np.testing.assert_allclose(gb, want_gb, rtol=1e-5, atol=1e-5 * np.abs(want_gb).max())


@pytest.mark.parametrize("x_shape, w_shape", [((2, 16, 12, 12), (16, 16, 3, 3)), ((2, 3, 32, 32), (8, 3, 3, 3)),
                                              ((4, 8, 7, 7), (16, 8, 3, 3))])
def test_conv_relu_keeps_nans(backend, x_shape, w_shape):
    """An input NaN makes NaN outputs, and the fused ReLU keeps them NaN (not 0)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    x[0, 0, 5, 5] = np.nan
    w = rng.standard_normal(w_shape).astype(np.float32)
    want = np.isnan(kernels.conv2d_forward(x, w, None, padding=1))
    got = kernels.conv2d_forward(x, w, None, padding=1, relu=True)
    assert want.any()
    np.testing.assert_array_equal(np.isnan(got), want)


@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(1, 70), w=st.integers(1, 70),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_relu_backward_and_channel_sums_match_numpy(n, c, h, w, dtype, seed):
    """The backward's one pass (mask and bias sums) against numpy's, with NaNs and zeros:
    the numba kernel on arrays of any size (SMALL_WORK 0), on one and two threads."""
    from tinygrad_uu.kernels import parallel
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, c, h, w)).astype(dtype)
    out = np.maximum(rng.standard_normal((n, c, h, w)), 0).astype(dtype)
    g[rng.random(g.shape) < 0.01] = np.nan
    before = tg.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parallel, "SMALL_WORK", 0)
        patch.setattr(parallel, "STREAMING_WORK", 0)
        try:
            tg.set_num_threads(1 + seed % 2)
            gx, sums = kernels.relu_backward_and_channel_sums(g, out)
        finally:
            tg.set_num_threads(before)
    want = g * (out > 0)
    np.testing.assert_array_equal(gx, want)
    assert gx.dtype == sums.dtype == dtype and sums.shape == (c,)
    np.testing.assert_allclose(sums, want.sum(axis=(0, 2, 3), dtype=np.float64).astype(dtype), rtol=1e-5,
                               atol=1e-5 * max(1.0, float(np.nanmax(np.abs(want)))) * h * w)
    with pytest.raises(ValueError, match=r"relu_backward_and_channel_sums.*\(2, 3\)"):
        kernels.relu_backward_and_channel_sums(np.zeros((2, 3)), np.zeros((2, 3)))


def test_conv_relu_backward_without_bias_or_its_gradient(backend):
    """No bias: two gradients. A bias that needs none: no sum, and None for it."""
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, 3, 6, 6)), requires_grad=True)
    w = Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    b = Tensor(rng.standard_normal(4), requires_grad=False)
    for inputs in ((x, w), (x, w, b)):
        out = S.conv2d(*inputs, padding=1, relu=True)
        grads = out._ctx.backward(np.ones(out.shape))
        assert len(grads) == len(inputs) and (len(grads) == 2 or grads[2] is None)
        np.testing.assert_allclose(grads[1], kernels.conv2d_backward(x.data, w.data, (out.data > 0) * 1.0,
                                                                     padding=1)[1])


def op_names(t):
    """The ops that made tensor t, first input first (each op's first parent followed back)."""
    names = []
    while t._ctx is not None:
        names.append(t._ctx.op_name)
        t = t._ctx.parents[0]
    return names[::-1]


def test_sequential_fuses_a_conv_its_relu_and_a_max_pool_unless_a_hook_or_a_subclass_is_there():
    """Conv2d, ReLU -> one op "Conv2d+ReLU"; Conv2d, ReLU, MaxPool2d -> one op of all three
    (test_conv_pool.py), with the same values. A hook, which must see its module's own
    output, keeps that module apart (a hooked conv: then the pool takes the ReLU); so
    does a subclass of any of them."""
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))

    class MyConv(nn.Conv2d):
        pass

    class MyPool(nn.MaxPool2d):
        pass

    def ops(model):
        return op_names(model(x))

    conv, relu, pool = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
    assert ops(nn.Sequential(conv, relu)) == ["Conv2d+ReLU"]
    assert ops(nn.Sequential(conv, relu, pool)) == ["Conv2d+ReLU+MaxPool2d"]
    assert ops(nn.Sequential(conv, relu, pool, nn.Conv2d(4, 4, 3, padding=1), relu, pool)) == \
        ["Conv2d+ReLU+MaxPool2d"] * 2
    assert ops(nn.Sequential(conv, relu, conv.__class__(4, 4, 1), relu)) == ["Conv2d+ReLU", "Conv2d+ReLU"]
    assert ops(nn.Sequential(MyConv(3, 4, 3, padding=1), relu)) == ["Conv2d", "ReLU"]
    assert ops(nn.Sequential(conv, relu, MyPool(2))) == ["Conv2d+ReLU", "MaxPool2d"]
    np.testing.assert_array_equal(nn.Sequential(conv, relu)(x).data, relu(conv(x)).data)
    np.testing.assert_array_equal(nn.Sequential(conv, relu, pool)(x).data, pool(relu(conv(x))).data)
    for module, apart in ((relu, ["Conv2d", "ReLU"]), (conv, ["Conv2d", "MaxPool2d+ReLU"])):
        seen = []
        handle = module.register_forward_hook(lambda m, args, out: seen.append(out))
        model = nn.Sequential(conv, relu) if module is relu else nn.Sequential(conv, relu, pool)
        assert ops(model) == apart and len(seen) == 1
        handle.remove()
