"""A conv, its ReLU and a max pool as one op (``F.conv2d_max_pool2d``, nn.Sequential's
Conv2d, ReLU, MaxPool2d): the same values and gradients as the ops one after the other,
through every kernel path and on one and two threads; a float64 gradcheck on both
backends; the numba kernels against numpy's on drawn shapes; NaNs kept; where Sequential
fuses (test_conv_relu.py); the pool backward's bias sums; and bad input."""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import tinygrad_uu as tg
from tinygrad_uu import Tensor, gradcheck, kernels
from tinygrad_uu import spatial as S

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _threads(n):
    """A context that runs its block on n threads, then puts the setting back."""
    class Threads:
        def __enter__(self):
            self.before = tg.get_num_threads()
            tg.set_num_threads(n)

        def __exit__(self, *exc):
            tg.set_num_threads(self.before)
    return Threads()


def _both_ways(x0, w0, b0, g, conv_options, pool_options, relu, need_x=True):
    """(output, dx, dw, db) of the fused op and of conv2d then max_pool2d, as two lists."""
    results = []
    for fused in (True, False):
        x = Tensor(x0.copy(), requires_grad=need_x)
        w = Tensor(w0.copy(), requires_grad=True)
        b = None if b0 is None else Tensor(b0.copy(), requires_grad=True)
        if fused:
            out = S.conv2d_max_pool2d(x, w, b, **conv_options, kernel_size=pool_options["kernel_size"],
                                      pool_stride=pool_options["stride"], pool_padding=pool_options["padding"],
                                      relu=relu)
        else:
            out = S.max_pool2d(S.conv2d(x, w, b, **conv_options), **pool_options, relu=relu)
        (out * Tensor(g)).sum().backward()
        results.append([out.data, x.grad.data if need_x else None, w.grad.data,
                        None if b is None else b.grad.data])
    return results


def _pooled_shape(x_shape, w_shape, padding, kernel, stride, pool_padding):
    conv = [s + 2 * padding - w_shape[2] + 1 for s in x_shape[2:]]
    return (x_shape[0], w_shape[0]) + tuple((s + 2 * pool_padding - kernel) // stride + 1 for s in conv)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("x_shape, w_shape, need_x, pool", [
    ((64, 1, 28, 28), (16, 1, 3, 3), False, (2, 2, 0)),    # the 3x3 loops, a first layer (no dx): fused
    ((6, 3, 28, 28), (8, 3, 3, 3), True, (2, 2, 0)),       # the 3x3 loops with dx: the two ops in turn
    ((9, 16, 14, 14), (32, 16, 3, 3), True, (2, 2, 0)),    # Winograd, images packed on planes
    ((4, 16, 20, 20), (16, 16, 3, 3), True, (3, 2, 1)),    # Winograd, whole images; a 3x3 pool
    ((2, 16, 96, 96), (16, 16, 3, 3), True, (2, 2, 0)),    # Winograd on a big map (bands of one image)
    ((1, 16, 12, 12), (16, 16, 3, 3), True, (2, 2, 0)),    # one image
    ((4, 8, 7, 7), (16, 8, 3, 3), True, (2, 2, 0)),        # im2col: the two ops in turn
    ((3, 2, 9, 9), (5, 2, 3, 3), True, (2, 1, 0)),         # direct loops, overlapping windows
])
def test_fused_op_equals_the_conv_then_the_pool(threads, x_shape, w_shape, need_x, pool):
    """float32, with and without the ReLU and the bias: the same output and dx, dw and db
    equal up to the order of float32 sums."""
    kernel, stride, pool_padding = pool
    rng = np.random.default_rng(sum(x_shape + w_shape))
    x0 = rng.standard_normal(x_shape).astype(np.float32)
    w0 = (rng.standard_normal(w_shape) / np.sqrt(w_shape[1] * 9)).astype(np.float32)
    b0 = rng.standard_normal(w_shape[0]).astype(np.float32)
    g = rng.standard_normal(_pooled_shape(x_shape, w_shape, 1, kernel, stride, pool_padding)).astype(np.float32)
    pool_options = dict(kernel_size=kernel, stride=stride, padding=pool_padding)
    for relu, bias in ((True, b0), (False, None)):
        with _threads(threads):
            fused, apart = _both_ways(x0, w0, bias, g, dict(padding=1), pool_options, relu, need_x)
        np.testing.assert_array_equal(fused[0], apart[0])
        for got, want in zip(fused[1:], apart[1:]):
            if want is None:
                assert got is None
                continue
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_fused_op_names_and_keeps_no_conv_output():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    w = Tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    out = S.conv2d_max_pool2d(x, w, padding=1, relu=True)
    assert out.shape == (2, 4, 4, 4) and out._ctx.op_name == "Conv2d+ReLU+MaxPool2d"
    assert not any(isinstance(v, np.ndarray) and v.shape == (2, 4, 8, 8) for v in vars(out._ctx).values())
    assert S.conv2d_max_pool2d(x, w, padding=1)._ctx.op_name == "Conv2d+MaxPool2d"


@SETTINGS
@given(n=st.integers(1, 2), ci=st.integers(1, 3), co=st.integers(1, 3), k=st.sampled_from([1, 3]),
       padding=st.integers(0, 1), h=st.integers(4, 7), pool=st.sampled_from([(2, 2, 0), (3, 2, 1), (2, 1, 0)]),
       relu=st.booleans(), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_fused_op_passes_gradcheck(n, ci, co, k, padding, h, pool, relu, bias, seed):
    """Float64 central differences, on both backends. Draws with a near tie inside a window
    or an output near the ReLU's kink (where differences of 1e-6 would change the winner)
    are left out."""
    kernel, stride, pool_padding = pool
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((n, ci, h, h + 1)), requires_grad=True)
    w = Tensor(rng.standard_normal((co, ci, k, k)), requires_grad=True)
    b = Tensor(rng.standard_normal(co), requires_grad=True) if bias else None
    inputs = (x, w, b) if bias else (x, w)
    conv = S.conv2d(*inputs, padding=padding).data
    assume(min(conv.shape[2:]) + 2 * pool_padding >= kernel)
    flat = np.sort(conv.reshape(-1))
    assume(np.diff(flat).min() > 1e-3 and (not relu or np.abs(conv).min() > 1e-3))

    def op(*t):
        return S.conv2d_max_pool2d(*t, padding=padding, kernel_size=kernel, pool_stride=stride,
                                   pool_padding=pool_padding, relu=relu)
    for name in sorted(kernels.BACKENDS):
        with kernels.use_backend(name):
            assert gradcheck(op, *inputs)


@SETTINGS
@given(n=st.integers(1, 9), ci=st.sampled_from([1, 16]), co=st.sampled_from([4, 16, 24]),
       h=st.sampled_from([7, 14, 20, 28]), stride=st.sampled_from([1, 1, 2]), pool=st.sampled_from([(2, 2, 0), (3, 2, 1)]),
       relu=st.booleans(), need_x=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       threads=st.integers(1, 2), seed=st.integers(0, 2**16))
@example(n=5, ci=1, co=16, h=28, stride=1, pool=(2, 2, 0), relu=True, need_x=False, dtype=np.float64, threads=2,
         seed=1)  # the 3x3 loops, fused
@example(n=9, ci=16, co=24, h=14, stride=1, pool=(2, 2, 0), relu=True, need_x=True, dtype=np.float64, threads=2,
         seed=2)  # Winograd packed, fused
def test_numba_kernels_match_numpy(n, ci, co, h, stride, pool, relu, need_x, dtype, threads, seed):
    """kernels.conv2d_max_pool2d_forward and _backward on the numba backend against the numpy
    backend's (the conv then the pool), over drawn shapes (batch 1 among them) that reach
    Winograd (16 channels, packed at 14x14), the 3x3 loops (a first layer at 28x28) and
    the other paths (stride 2 among them)."""
    kernel, pool_stride, pool_padding = pool
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ci, h, h)).astype(dtype)
    w = (rng.standard_normal((co, ci, 3, 3)) / np.sqrt(ci * 9)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    options = dict(stride=stride, padding=1, kernel_size=kernel, pool_stride=pool_stride, pool_padding=pool_padding,
                   relu=relu)
    results = []
    for name in ("numba", "numpy"):
        with kernels.use_backend(name), _threads(threads):
            saved = {}
            out, arg = kernels.conv2d_max_pool2d_forward(x, w, b, **options, saved=saved)
            g = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
            grads = kernels.conv2d_max_pool2d_backward(x, w, g, arg, stride=stride, padding=1, need_grad_x=need_x,
                                                       saved=saved)
            results.append((out, arg, grads))
    (out, arg, grads), (want, want_arg, want_grads) = results
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * np.abs(want).max())
    # the same winners, except where two values of a window tie within float rounding
    conv = kernels.conv2d_forward(x, w, b, stride=stride, padding=1).reshape(n, co, -1)
    differ = np.argwhere(arg != want_arg)
    for i, c, y, x_ in differ:
        picks = [a if a >= 0 else -a - 1 for a in (arg[i, c, y, x_], want_arg[i, c, y, x_])]
        assert abs(conv[i, c, picks[0]] - conv[i, c, picks[1]]) <= tol * np.abs(conv).max()
    if len(differ) == 0:  # the same winners: the same gradients
        for got, wanted in zip(grads, want_grads):
            assert (got is None) == (wanted is None)
            if wanted is not None:
                np.testing.assert_allclose(got, wanted, rtol=tol, atol=tol * np.abs(wanted).max())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("x_shape, w_shape", [((8, 1, 28, 28), (16, 1, 3, 3)), ((5, 16, 14, 14), (24, 16, 3, 3))])
def test_fused_op_keeps_nans(threads, x_shape, w_shape):
    """An input NaN makes NaN outputs, which the ReLU keeps; the gradients the two ways
    have their NaNs in the same places."""
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal(x_shape).astype(np.float32)
    x0[1, 0, 5, 5] = np.nan
    w0 = rng.standard_normal(w_shape).astype(np.float32)
    b0 = rng.standard_normal(w_shape[0]).astype(np.float32)
    g = rng.standard_normal(_pooled_shape(x_shape, w_shape, 1, 2, 2, 0)).astype(np.float32)
    with _threads(threads):
        fused, apart = _both_ways(x0, w0, b0, g, dict(padding=1), dict(kernel_size=2, stride=2, padding=0), True,
                                  need_x=x_shape[1] > 1)
    assert np.isnan(apart[0]).any()
    np.testing.assert_array_equal(np.isnan(fused[0]), np.isnan(apart[0]))
    for got, want in zip(fused[1:], apart[1:]):
        if want is not None:
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 5), h=st.integers(2, 20), relu=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_pool_backward_sums_what_each_channel_passes(n, c, h, relu, dtype, seed):
    """_max_pool_backward's bias sums: per channel, the sum of the input gradient it wrote
    (g, or g * 0 where a ReLU after the pool passed nothing)."""
    from tinygrad_uu.kernels import pooling
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    out, arg = pooling.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), relu)
    g = rng.standard_normal(out.shape).astype(dtype)
    gx = np.empty((n, c, h * h), dtype=dtype)
    sums = np.zeros(c)
    pooling._max_pool_backward(g, arg, gx, sums, 0, n * c)
    np.testing.assert_allclose(sums, gx.sum(axis=(0, 2), dtype=np.float64), rtol=1e-5, atol=1e-5 * h * h)
    np.testing.assert_array_equal(gx.reshape(x.shape), pooling.max_pool2d_backward(g, arg, x.shape))


def test_bad_argmax_names_the_op():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    out, arg = kernels.conv2d_max_pool2d_forward(x, w, padding=1)
    with pytest.raises(ValueError, match=r"conv2d_max_pool2d_backward: argmax"):
        kernels.conv2d_max_pool2d_backward(x, w, out, arg[:, :2], padding=1)
    with pytest.raises(ValueError, match=r"conv2d_max_pool2d_backward: grad_out has shape \(2, 4, 3, 4\)"):
        kernels.conv2d_max_pool2d_backward(x, w, out[:, :, 1:], arg, padding=1)
    with pytest.raises(ValueError, match=r"conv2d_max_pool2d: .*kernel"):
        kernels.conv2d_max_pool2d_forward(x, w, padding=1, kernel_size=9)
