"""The kernels, three ways: numba == numpy reference (hypothesis-drawn shapes and options),
the reference against values worked out by hand, and every backward as the exact
adjoint of its forward (<f(x), g> == <x, f^T(g)> for the linear ops).
Also: the argument errors name the op and the shapes; importing compiles nothing."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygrad_uu as tg
from tinygrad_uu import kernels as K

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def both(fn, *args, **kwargs):
    """(numpy result, numba result) of the same kernel call."""
    with K.use_backend("numpy"):
        want = fn(*args, **kwargs)
    with K.use_backend("numba"):
        got = fn(*args, **kwargs)
    return want, got


def assert_same(want, got, rtol=1e-4):
    """Equal to float32 rounding: rtol 1e-4, with an atol of 1e-4 of the largest finite
    magnitude for elements that are sums cancelling to near zero (NaN where NaN)."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for w, g in zip(want, got):
            assert_same(w, g, rtol)
        return
    if want is None:
        assert got is None
        return
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
    finite = np.abs(want[np.isfinite(want)]) if want.dtype.kind == "f" else np.zeros(0)
    atol = rtol * float(finite.max()) if finite.size else 0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def array(rng, shape, contiguous=True, dtype=np.float32):
    """A random array; non-contiguous (a transposed view) when asked."""
    if contiguous or len(shape) < 2:
        return rng.standard_normal(shape).astype(dtype)
    swapped = shape[:-2] + (shape[-1], shape[-2])
    return np.swapaxes(rng.standard_normal(swapped).astype(dtype), -1, -2)


# --------------------------------------------------------------------------- strategies
@st.composite
def conv_cases(draw):
    """A valid conv2d: shapes, stride, padding, dilation, groups (all small)."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, (kh - 1) * dh + 1 - 2 * ph), 9))
    w = draw(st.integers(max(1, (kw - 1) * dw + 1 - 2 * pw), 9))
    n = draw(st.integers(1, 2))
    return dict(x_shape=(n, cg * groups, h, w), w_shape=(og * groups, cg, kh, kw), stride=(sh, sw),
                padding=(ph, pw), dilation=(dh, dw), groups=groups,
                contiguous=draw(st.booleans()), bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


# --------------------------------------------------------------------------- numba == numpy
@SETTINGS
@given(m=st.integers(1, 70), k=st.integers(1, 70), n=st.integers(1, 70), batch=st.sampled_from([(), (1,), (3,), (2, 1)]),
       a_contiguous=st.booleans(), b_contiguous=st.booleans(), seed=st.integers(0, 2**16))
def test_matmul_numba_matches_numpy(m, k, n, batch, a_contiguous, b_contiguous, seed):
    rng = np.random.default_rng(seed)
    a = array(rng, batch + (m, k), a_contiguous)
    b = array(rng, (n, k) if not b_contiguous else (k, n))  # (n, k).T: an F-ordered operand
    b = b.T if not b_contiguous else b
    assert_same(*both(K.matmul, a, b))


@SETTINGS
@given(m=st.integers(1, 70), k=st.integers(0, 300), n=st.integers(2, 16),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_products_with_few_columns_match_numpy(m, k, n, dtype, seed):
    """x @ W.T with a weight of few rows (a classifier's last layer): the numba kernel
    that kernels.blas.matmul takes for it, edges (an odd last column, 1-3 last rows)
    included, against numpy's product in float64."""
    from tinygrad_uu.kernels import blas
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
    out = np.full((m, n), np.nan, dtype=dtype)
    blas._rows_times_few_columns(x, w, out)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * max(1.0, np.sqrt(k)))
    if x.size >= 4096:  # big enough: the engine's matmul takes the kernel
        assert blas._few_columns(x, w.T)
        got = blas.matmul(x, w.T)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.sqrt(k)))


def test_matmul_shapes_like_numpy():
    rng = np.random.default_rng(0)
    for sa, sb in [((5,), (5,)), ((5,), (5, 3)), ((2, 5), (5,)), ((4, 1, 2, 5), (3, 5, 6)), ((130, 67), (67, 129))]:
        a, b = rng.standard_normal(sa, dtype=np.float32), rng.standard_normal(sb, dtype=np.float32)
        for backend in K.BACKENDS:
            with K.use_backend(backend):
                got = K.matmul(a, b)
                assert got.shape == (a @ b).shape
                np.testing.assert_allclose(got, a @ b, rtol=1e-4, atol=1e-4)


def test_matmul_keeps_float32_and_promotes_ints():
    a32 = np.ones((3, 4), np.float32)
    for backend in K.BACKENDS:
        with K.use_backend(backend):
            assert K.matmul(a32, a32.T).dtype == np.float32
    with K.use_backend("numpy"):  # (the engine's @ is BLAS: the numba matmul is compiled for float32 only here)
        assert K.matmul(np.ones((2, 2), int), np.ones((2, 2), int)).dtype == np.float64


@SETTINGS
@given(case=conv_cases())
def test_conv2d_numba_matches_numpy(case):
    rng = np.random.default_rng(case["seed"])
    x = array(rng, case["x_shape"], case["contiguous"])
    w = array(rng, case["w_shape"])
    b = rng.standard_normal(case["w_shape"][0]).astype(np.float32) if case["bias"] else None
    opts = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    want, got = both(K.conv2d_forward, x, w, b, **opts)
    assert_same(want, got)
    relu = np.maximum(want, 0)  # with its ReLU in the same op: the numba kernels', numpy's after
    assert_same(*both(K.conv2d_forward, x, w, b, **opts, relu=True))
    assert_same(relu, K.conv2d_forward(x, w, b, **opts, relu=True))
    g = array(rng, want.shape, case["contiguous"])
    assert_same(*both(K.conv2d_backward, x, w, g, **opts))


@SETTINGS
@given(case=conv_cases(), op=st.tuples(st.integers(0, 2), st.integers(0, 2)))
def test_conv_transpose2d_numba_matches_numpy(case, op):
    rng = np.random.default_rng(case["seed"])
    # the conv's weight (C_out, C_in/g, kH, kW) read as a transposed conv's (C_in', C_out'/g, kH, kW)
    w = array(rng, case["w_shape"])
    n, _, h, wd = case["x_shape"]
    x = array(rng, (n, w.shape[0], h, wd), case["contiguous"])
    output_padding = tuple(min(o, s - 1) for o, s in zip(op, case["stride"]))
    opts = dict(stride=case["stride"], padding=case["padding"], output_padding=output_padding,
                dilation=case["dilation"], groups=case["groups"])
    b = rng.standard_normal(w.shape[1] * case["groups"]).astype(np.float32) if case["bias"] else None
    try:
        want, got = both(K.conv_transpose2d_forward, x, w, b, **opts)
    except ValueError as e:  # padding larger than the output: rejected, by both
        assert "output would be empty" in str(e)
        return
    assert_same(want, got)
    g = array(rng, want.shape, case["contiguous"])
    assert_same(*both(K.conv_transpose2d_backward, x, w, g, **opts))


@st.composite
def conv3x3_cases(draw):
    """A 3x3, stride-1 conv, the cases the numba backend's nine-tap kernels take: any
    padding up to the kernel's reach (2 * dilation), groups, odd output channel counts."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg, og = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2 * dh)), draw(st.integers(0, 2 * dw))
    h = draw(st.integers(max(1, 2 * dh + 1 - 2 * ph), 10))
    w = draw(st.integers(max(1, 2 * dw + 1 - 2 * pw), 10))
    return dict(x_shape=(draw(st.integers(1, 3)), cg * groups, h, w), w_shape=(og * groups, cg, 3, 3),
                stride=(1, 1), padding=(ph, pw), dilation=(dh, dw), groups=groups,
                contiguous=draw(st.booleans()), bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@SETTINGS
@given(case=conv3x3_cases())
def test_conv2d_3x3_kernels_match_numpy(case):
    """The nine-tap kernels against the reference: forward, input and weight gradients,
    through the interface (which sends every such case to them, on images of any size
    here) and called directly."""
    from tinygrad_uu.kernels import conv3x3 as cpu, reference
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "MIN_3X3_PIXELS", 1)
        _check_3x3_case(case, cpu, reference)


def _check_3x3_case(case, cpu, reference):
    rng = np.random.default_rng(case["seed"])
    x = array(rng, case["x_shape"], case["contiguous"])
    w = array(rng, case["w_shape"])
    b = rng.standard_normal(case["w_shape"][0]).astype(np.float32) if case["bias"] else None
    opts = {k: case[k] for k in ("stride", "padding", "dilation", "groups")}
    assert cpu._is_3x3(x.shape, w.shape, case["stride"], case["padding"], case["dilation"])
    want, got = both(K.conv2d_forward, x, w, b, **opts)
    assert_same(want, got)
    assert_same(np.maximum(want, 0), K.conv2d_forward(x, w, b, **opts, relu=True))  # the ReLU as rows are written
    g = array(rng, want.shape, case["contiguous"])
    assert_same(*both(K.conv2d_backward, x, w, g, **opts))
    args = tuple(opts.values())
    x, g = np.ascontiguousarray(x), np.ascontiguousarray(g)
    assert_same(reference.conv2d_grad_input(g, w, x.shape, *args), cpu.conv2d_grad_input_3x3(g, w, x.shape, *args))
    assert_same(reference.conv2d_grad_weight(x, g, w.shape, *args), cpu.conv2d_grad_weight_3x3(x, g, w.shape, *args))


@pytest.mark.parametrize("hw, padding, dilation", [((45, 37), (1, 1), (1, 1)), ((40, 50), (0, 2), (2, 1)),
                                                    ((33, 70), (2, 0), (1, 2))])
def test_conv2d_3x3_on_images_of_several_strips(hw, padding, dilation):
    """The 3x3 kernels work through the flat padded image in strips of cpu.STRIP
    positions; here output rows straddle the strips' edges (the drawn cases above fit
    in one strip)."""
    from tinygrad_uu.kernels import conv3x3 as cpu, reference
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3) + hw).astype(np.float32)
    w, b = rng.standard_normal((5, 3, 3, 3)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    args = ((1, 1), padding, dilation, 1)
    out = cpu.conv2d_forward_3x3(x, w, b, *args)
    padded_width = hw[1] + 2 * padding[1]
    assert out.shape[2] * padded_width > cpu.STRIP  # two strips or more
    assert_same(reference.conv2d_forward(x, w, b, *args), out)
    g = rng.standard_normal(out.shape).astype(np.float32)
    assert_same(reference.conv2d_grad_input(g, w, x.shape, *args), cpu.conv2d_grad_input_3x3(g, w, x.shape, *args))
    assert_same(reference.conv2d_grad_weight(x, g, w.shape, *args), cpu.conv2d_grad_weight_3x3(x, g, w.shape, *args))


@pytest.mark.parametrize("w_shape, groups", [((7, 4, 3, 3), 1), ((6, 2, 3, 3), 2), ((40, 4, 3, 3), 1)])
def test_conv2d_3x3_weight_gradient_by_chunks_of_images(w_shape, groups, monkeypatch):
    """On two threads the nine-tap weight gradient takes chunks of images, each with every
    block of output channels, summed per thread, where there are fewer blocks than
    chunks (7 channels: two blocks, the second repeating its last channel, which must be
    added once; two groups of 3); else (40 channels: ten blocks) the blocks. Against the
    reference, with the bias gradient on the way, and which way ran."""
    from tinygrad_uu.kernels import conv3x3 as cpu, reference
    rng = np.random.default_rng(len(w_shape) + groups)
    x = rng.standard_normal((16, w_shape[1] * groups, 32, 32)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    g = rng.standard_normal((16, w_shape[0], 32, 32)).astype(np.float32)
    args = ((1, 1), (1, 1), (1, 1), groups)
    runs = []
    real_pool = cpu._pool
    monkeypatch.setattr(cpu, "_pool", lambda: (runs.append(1), real_pool())[1])
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(2)
        gb = np.full(w_shape[0], np.nan, dtype=np.float32)
        gw = cpu.conv2d_grad_weight_3x3(x, g, w.shape, *args, None, gb)
    finally:
        tg.set_num_threads(before)
    assert_same(reference.conv2d_grad_weight(x, g, w.shape, *args), gw)
    np.testing.assert_allclose(gb, g.sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-3)
    assert bool(runs) == (w_shape[0] < 40)


@pytest.mark.parametrize("shape", [(1, 1, 28, 28, 32), (2, 3, 9, 7, 4), (2, 5, 6, 8, 3)])
def test_conv2d_all_strategies_agree(shape):
    """The numba backend picks the 3x3 kernels, direct loops or im2col + BLAS by shape:
    on a 3x3 stride-1 conv, which all three can do, they must agree."""
    from tinygrad_uu.kernels import conv as cpu
    n, c, h, w, co = shape
    rng = np.random.default_rng(1)
    x, wt = rng.standard_normal((n, c, h, w)).astype(np.float32), rng.standard_normal((co, c, 3, 3)).astype(np.float32)
    b, g = rng.standard_normal(co).astype(np.float32), rng.standard_normal((n, co, h, w)).astype(np.float32)
    opts = ((1, 1), (1, 1), (1, 1), 1)
    for name in ("conv2d_forward", "conv2d_grad_input", "conv2d_grad_weight"):
        args = {"conv2d_forward": (x, wt, b), "conv2d_grad_input": (g, wt, x.shape),
                "conv2d_grad_weight": (x, g, wt.shape)}[name]
        im2col = getattr(cpu, name + "_im2col")(*args, *opts)
        assert_same(im2col, getattr(cpu, name + "_direct")(*args, *opts))
        assert_same(im2col, getattr(cpu, name + "_3x3")(*args, *opts))


def test_conv2d_direct_loops_only_where_one_side_has_few_channels():
    """The direct loops read a whole plane per (input, output) channel pair; with many
    channels on both sides (a 1x1 conv 32 -> 16) a matrix product is 2-6x faster."""
    from tinygrad_uu.kernels import conv as cpu
    one = (1, 1)
    assert cpu._direct((16, 1, 3, 3), one, 1)       # a first layer on grey images
    assert cpu._direct((1, 16, 1, 1), one, 1)       # a last 1x1 layer to one channel
    assert cpu._direct((64, 1, 3, 3), one, 64)      # depthwise
    assert not cpu._direct((16, 32, 1, 1), one, 1)  # 1x1 with channels on both sides
    assert not cpu._direct((32, 4, 3, 3), one, 1)
    assert not cpu._direct((16, 1, 3, 3), (2, 2), 1)  # stride 2


@SETTINGS
@given(case=conv_cases())
def test_conv2d_im2col_matches_numpy(case):
    """The numba im2col path on every drawn case (the interface sends most of these small
    convs to the direct loops): the forward, and the backward both with the cols the
    forward kept and with cols built anew."""
    from tinygrad_uu.kernels import conv_im2col as cpu, reference
    rng = np.random.default_rng(case["seed"])
    x, w = array(rng, case["x_shape"]), array(rng, case["w_shape"])
    b = rng.standard_normal(case["w_shape"][0]).astype(np.float32) if case["bias"] else None
    opts = tuple(case[k] for k in ("stride", "padding", "dilation", "groups"))
    saved = {}
    out = cpu.conv2d_forward_im2col(x, w, b, *opts, saved=saved)
    assert_same(reference.conv2d_forward(x, w, b, *opts), out)
    assert saved["cols"].shape == (x.shape[1] * w.shape[2] * w.shape[3], out.shape[0] * out.shape[2] * out.shape[3])
    g = array(rng, out.shape)
    want = (reference.conv2d_grad_input(g, w, x.shape, *opts), reference.conv2d_grad_weight(x, g, w.shape, *opts),
            g.sum(axis=(0, 2, 3)))
    for kept in (saved, None, {}):
        assert_same(want, cpu.conv2d_backward_im2col(x, w, g, *opts, True, True, kept))
    assert_same(want[0], cpu.conv2d_grad_input_im2col(g, w, x.shape, *opts))
    chunk_bytes, cpu.CHUNK_BYTES = cpu.CHUNK_BYTES, 1  # the input gradient one image at a time
    try:
        assert_same(want[0], cpu.conv2d_grad_input_im2col(g, w, x.shape, *opts))
    finally:
        cpu.CHUNK_BYTES = chunk_bytes
    assert_same(want[1], cpu.conv2d_grad_weight_im2col(x, g, w.shape, *opts, saved))


def test_conv2d_keeps_cols_only_up_to_the_limit(monkeypatch):
    """Past KEEP_COLS_BYTES the forward keeps nothing and the backward rebuilds the cols
    (the whole-batch im2col path, which the interface takes when the batch has fewer
    images than there are threads)."""
    from tinygrad_uu.kernels import conv, conv_im2col as cpu
    monkeypatch.setattr(conv, "_batched", lambda x_shape: False)
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 8, 7, 6)).astype(np.float32), rng.standard_normal((4, 8, 3, 2)).astype(np.float32)
    kept, not_kept = {}, {}
    with K.use_backend("numba"):
        out = K.conv2d_forward(x, w, padding=1, saved=kept)
        monkeypatch.setattr(cpu, "KEEP_COLS_BYTES", 0)
        assert_same(out, K.conv2d_forward(x, w, padding=1, saved=not_kept))
        assert "cols" in kept and "cols" not in not_kept
        g = rng.standard_normal(out.shape).astype(np.float32)
        with K.use_backend("numpy"):
            want = K.conv2d_backward(x, w, g, padding=1)
        assert_same(want, K.conv2d_backward(x, w, g, padding=1, saved=kept))
        assert_same(want, K.conv2d_backward(x, w, g, padding=1, saved=not_kept))


# --------------------------------------------------------------------------- by hand
@pytest.fixture(params=sorted(K.BACKENDS))
def backend(request):
    with K.use_backend(request.param):
        yield request.param


def test_conv2d_by_hand(backend):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])  # x[y, x] - x[y+1, x+1] = -5 everywhere
    np.testing.assert_array_equal(K.conv2d_forward(x, w, np.array([1.0])), np.full((1, 1, 3, 3), -4.0))
    # stride 2, padding 1: out[y, x] = x[2y - 1, 2x - 1] - x[2y, 2x], with zeros outside
    out = K.conv2d_forward(x, w, None, stride=2, padding=1)
    np.testing.assert_array_equal(out[0, 0], [[0, -2, 0], [-8, -5, 7], [0, 13, 15]])


def test_pools_by_hand(backend):
    x = np.array([[1, 5, 2, 0], [3, 4, 8, 8], [0, 0, 1, 2], [9, 0, 3, 3]], np.float64)[None, None]
    out, arg = K.max_pool2d_forward(x, 2)
    np.testing.assert_array_equal(out[0, 0], [[5, 8], [9, 3]])
    np.testing.assert_array_equal(arg[0, 0], [[1, 6], [12, 14]])  # ties: the first 8 and the first 3
    np.testing.assert_array_equal(K.max_pool2d_backward(np.ones((1, 1, 2, 2)), arg, x.shape)[0, 0],
                                  [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0]])
    np.testing.assert_array_equal(K.avg_pool2d_forward(x, 2)[0, 0], [[13 / 4, 18 / 4], [9 / 4, 9 / 4]])
    # padding 1, kernel 2, stride 2: the corner window holds x[0, 0] and three padded zeros
    assert K.avg_pool2d_forward(x, 2, 2, 1)[0, 0, 0, 0] == 1 / 4
    nan = x.copy()
    nan[0, 0, 1, 1] = np.nan
    assert np.isnan(K.max_pool2d_forward(nan, 2)[0][0, 0, 0, 0])
    # with the ReLU in the same pass: a window whose max is <= 0 gives 0, and its argmax
    # i is stored as -i - 1, whose input gets g * 0 (NaN for an infinite g); NaN stays NaN
    x = np.array([[-1, -3, 0, 0], [-2, -1, 0, 0], [np.nan, 1, 4, 2], [0, 0, -1, 3]], np.float64)[None, None]
    out, arg = K.max_pool2d_forward(x, 2, relu=True)
    np.testing.assert_array_equal(out[0, 0], [[0, 0], [np.nan, 4]])
    np.testing.assert_array_equal(arg[0, 0], [[-1, -3], [-9, 10]])
    with np.errstate(invalid="ignore"):
        gx = K.max_pool2d_backward(np.array([[[[1.0, np.inf], [5.0, 7.0]]]]), arg, x.shape)[0, 0]
    np.testing.assert_array_equal(gx, [[0, 0, np.nan, 0], [0, 0, 0, 0], [0, 0, 7, 0], [0, 0, 0, 0]])


def test_upsample_by_hand(backend):
    x = np.array([[1.0, 2.0], [3.0, 4.0]])[None, None]
    np.testing.assert_array_equal(K.upsample2d_forward(x, scale_factor=2)[0, 0],
                                  [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    # PyTorch's documented align_corners=False result
    np.testing.assert_allclose(K.upsample2d_forward(x, scale_factor=2, mode="bilinear")[0, 0],
                               [[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5],
                                [2.5, 2.75, 3.25, 3.5], [3.0, 3.25, 3.75, 4.0]])
    # every input pixel of a 2x nearest upsampling feeds four outputs
    np.testing.assert_array_equal(K.upsample2d_backward(np.ones((1, 1, 4, 4)), x.shape), np.full(x.shape, 4.0))


def dot(a, b):
    return float(np.sum(np.asarray(a, np.float64) * b))


def test_backwards_are_adjoints(backend):
    """For a linear op f, backward is the transpose: <f(x), g> == <x, backward(g)>."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 2, 3, 2))
    opts = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    y = K.conv2d_forward(x, w, None, **opts)
    g = rng.standard_normal(y.shape)
    gx, gw, _ = K.conv2d_backward(x, w, g, **opts)
    assert dot(y, g) == pytest.approx(dot(x, gx), rel=1e-10)
    assert dot(y, g) == pytest.approx(dot(w, gw), rel=1e-10)  # linear in w too
    xt = rng.standard_normal((2, 6, 5, 4))
    t_opts = dict(opts, output_padding=(1, 0))
    yt = K.conv_transpose2d_forward(xt, w, None, **t_opts)
    gt = rng.standard_normal(yt.shape)
    gxt, gwt, _ = K.conv_transpose2d_backward(xt, w, gt, **t_opts)
    assert dot(yt, gt) == pytest.approx(dot(xt, gxt), rel=1e-10)
    assert dot(yt, gt) == pytest.approx(dot(w, gwt), rel=1e-10)
    ya = K.avg_pool2d_forward(x, 3, 2, 1)
    ga = rng.standard_normal(ya.shape)
    assert dot(ya, ga) == pytest.approx(dot(x, K.avg_pool2d_backward(ga, x.shape, 3, 2, 1)), rel=1e-10)
    for mode in ("nearest", "bilinear"):
        yu = K.upsample2d_forward(x, size=(13, 21), mode=mode)
        gu = rng.standard_normal(yu.shape)
        assert dot(yu, gu) == pytest.approx(dot(x, K.upsample2d_backward(gu, x.shape, mode=mode)), rel=1e-10)


def test_float64_stays_float64(backend):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    assert K.conv2d_forward(x, w, None, padding=1).dtype == np.float64
    assert K.max_pool2d_forward(x, 2)[0].dtype == np.float64
    assert K.upsample2d_forward(x.astype(np.float32), scale_factor=2, mode="bilinear").dtype == np.float32


# --------------------------------------------------------------------------- errors
def raises(match_all, fn, *args, **kwargs):
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    for part in match_all:
        assert part in str(info.value), (part, str(info.value))


def test_errors_name_the_op_and_the_shapes():
    x = np.zeros((1, 4, 5, 5), np.float32)
    raises(["conv2d", "(1, 4, 5, 5)", "larger"], K.conv2d_forward, x, np.zeros((2, 4, 7, 7)))
    raises(["conv2d", "(1, 4, 5, 5)", "padding"], K.conv2d_forward, x, np.zeros((2, 4, 6, 6)), padding=0)
    raises(["conv2d", "stride", "(0, 0)"], K.conv2d_forward, x, np.zeros((2, 4, 3, 3)), stride=0)
    raises(["conv2d", "stride", "(1, -1)"], K.conv2d_forward, x, np.zeros((2, 4, 3, 3)), stride=(1, -1))
    raises(["conv2d", "channel mismatch", "(1, 4, 5, 5)", "(2, 3, 3, 3)"], K.conv2d_forward, x, np.zeros((2, 3, 3, 3)))
    raises(["conv2d", "groups=3", "(1, 4, 5, 5)"], K.conv2d_forward, x, np.zeros((3, 4, 3, 3)), groups=3)
    raises(["conv2d", "4-D", "(4, 5, 5)"], K.conv2d_forward, x[0], np.zeros((2, 4, 3, 3)))
    raises(["conv2d", "bias", "(2,)"], K.conv2d_forward, x, np.zeros((2, 4, 3, 3)), np.zeros(3))
    raises(["conv2d_backward", "grad_out", "(1, 2, 3, 3)"], K.conv2d_backward, x, np.zeros((2, 4, 3, 3)),
           np.zeros((1, 2, 4, 4)))
    raises(["conv_transpose2d", "channel mismatch", "(1, 4, 5, 5)"], K.conv_transpose2d_forward, x,
           np.zeros((3, 2, 3, 3)))
    raises(["conv_transpose2d", "output_padding"], K.conv_transpose2d_forward, x, np.zeros((4, 2, 3, 3)),
           stride=2, output_padding=2)
    raises(["max_pool2d", "(1, 4, 5, 5)", "larger"], K.max_pool2d_forward, x, 7)
    raises(["max_pool2d", "stride"], K.max_pool2d_forward, x, 2, 0)
    raises(["max_pool2d", "half the kernel"], K.max_pool2d_forward, x, 2, 2, 2)
    raises(["avg_pool2d", "4-D", "(5, 5)"], K.avg_pool2d_forward, x[0, 0], 2)
    raises(["upsample_nearest", "exactly one"], K.upsample2d_forward, x)
    raises(["upsample2d", "mode", "bicubic"], K.upsample2d_forward, x, scale_factor=2, mode="bicubic")
    raises(["matmul", "(3, 4)", "(5, 2)", "do not align"], K.matmul, np.zeros((3, 4)), np.zeros((5, 2)))
    raises(["matmul", "do not broadcast"], K.matmul, np.zeros((2, 3, 4)), np.zeros((3, 4, 5)))


def test_backend_switch():
    assert K.get_backend() in K.BACKENDS
    with pytest.raises(ValueError, match="unknown kernel backend 'cuda'"):
        K.set_backend("cuda")
    with K.use_backend("numpy"):
        assert K.get_backend() == "numpy"


def test_env_var_picks_the_backend_and_import_compiles_nothing():
    """TINYGRAD_UU_BACKEND picks the backend; importing the numba backend compiles no kernel."""
    code = ("import sys, numba, tinygrad_uu.kernels as K, tinygrad_uu.kernels.cpu; "
            "jitted = [f for name, m in list(sys.modules.items()) if name.startswith('tinygrad_uu.kernels.') "
            "for f in vars(m).values() if isinstance(f, numba.core.registry.CPUDispatcher)]; "
            "print(K.get_backend(), len(jitted), sum(len(f.signatures) for f in jitted))")
    env = dict(os.environ, TINYGRAD_UU_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    backend, n_kernels, n_compiled = out.stdout.split()
    assert backend == "numpy" and int(n_kernels) > 10 and int(n_compiled) == 0


def test_parallel_runs_every_task_exactly_once(monkeypatch):
    """_parallel's threads take chunks of tasks in turn: together they cover [0, tasks) once."""
    from tinygrad_uu.kernels import parallel as cpu
    monkeypatch.setattr(cpu, "SMALL_WORK", 0)
    threads = tg.get_num_threads()
    try:
        tg.set_num_threads(2)
        for tasks in (1, 2, 7, 37):
            seen = np.zeros(tasks, dtype=int)

            def kernel(out, start, stop):
                out[start:stop] += 1

            cpu._parallel(kernel, tasks, 10**9, seen)
            assert (seen == 1).all(), (tasks, seen)
    finally:
        tg.set_num_threads(threads)


@pytest.mark.parametrize("streaming", [False, True])
def test_parallel_cuts_streaming_kernels_into_one_piece_per_thread(streaming, pool_jobs):
    """A streaming kernel's tasks go to the threads in one piece each, others in
    CHUNKS_PER_THREAD pieces each; either way every task runs once."""
    from tinygrad_uu.kernels import parallel
    threads = tg.get_num_threads()
    seen = np.zeros(64, dtype=int)

    def kernel(out, start, stop):
        out[start:stop] += 1

    try:
        tg.set_num_threads(2)
        parallel._parallel(kernel, 64, 10**9, seen, streaming=streaming)
    finally:
        tg.set_num_threads(threads)
    assert (seen == 1).all()
    assert list(pool_jobs) == [2 if streaming else 2 * parallel.CHUNKS_PER_THREAD]


@pytest.mark.parametrize("shape", [(3, 4, 24, 24, 5), (2, 6, 9, 7, 3)])
def test_kernels_agree_with_numpy_on_several_threads(monkeypatch, shape):
    """The numba kernels with the work split among threads (every call, however small)."""
    from tinygrad_uu.kernels import parallel
    monkeypatch.setattr(parallel, "SMALL_WORK", 0)
    n, c, h, w, co = shape
    rng = np.random.default_rng(3)
    x, wt = array(rng, (n, c, h, w)), array(rng, (co, c, 3, 3))
    b, g = array(rng, (co,)), array(rng, (n, co, h, w))
    threads = tg.get_num_threads()
    try:
        tg.set_num_threads(2)
        assert_same(*both(K.conv2d_forward, x, wt, b, padding=1))
        assert_same(*both(K.conv2d_backward, x, wt, g, padding=1))
        assert_same(*both(K.conv2d_backward, x, wt, g[:, :, ::2, ::2], stride=2, padding=1))
        assert_same(*both(K.max_pool2d_forward, x, 2))
        assert_same(*both(K.upsample2d_backward, np.repeat(np.repeat(x, 2, 2), 2, 3), x.shape))
    finally:
        tg.set_num_threads(threads)


@pytest.mark.parametrize("stride", [(2, 2), (1, 2)])
@pytest.mark.parametrize("padding", [(0, 0), (1, 1), (2, 1)])
@pytest.mark.parametrize("dilation", [(1, 1), (1, 2)])
@pytest.mark.parametrize("width", [7, 8])
def test_im2col_and_col2im_with_stride_2_across_match_the_windows(stride, padding, dilation, width):
    """Stride 2 across takes its own copy loops (the plane split into even and odd columns):
    every column of im2col's matrix is the window the reference conv multiplies, zero
    padded, and col2im adds each entry back to the pixel it came from."""
    from tinygrad_uu.kernels import conv_im2col, reference
    rng = np.random.default_rng(width + padding[0])
    x = rng.standard_normal((2, 3, 6, width)).astype(np.float32)
    (kh, kw), (oh, ow) = (3, 3), K.shapes.conv2d_args("im2col", x.shape, (1, 3, 3, 3), stride, padding,
                                                      dilation, 1)[3]
    cols = np.full((3 * kh * kw, 2 * oh * ow), np.nan, np.float32)
    conv_im2col._im2col(x, cols, kh, kw, *stride, *padding, *dilation, oh, ow, 0, 6)
    windows = reference._windows(reference._pad(x, padding), (kh, kw), stride, dilation)  # (n, c, oh, ow, kh, kw)
    want = windows.transpose(1, 4, 5, 0, 2, 3).reshape(cols.shape)
    np.testing.assert_array_equal(cols, want)
    # and its adjoint, col2im: every entry added back where it came from
    g = rng.standard_normal(cols.shape).astype(np.float32)
    gx = np.full(x.shape, np.nan, np.float32)
    conv_im2col._col2im(g, gx, kh, kw, *stride, *padding, *dilation, oh, ow, 0, 6)
    gxp = np.zeros(reference._pad(x, padding).shape, np.float32)
    reference._add_windows(gxp, g.reshape(3, kh, kw, 2, oh, ow).transpose(3, 0, 4, 5, 1, 2), stride, dilation)
    np.testing.assert_allclose(gx, reference._unpad(gxp, padding), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("height, width, padding, kernel", [(24, 24, 1, 3), (13, 16, 2, 3), (9, 7, 0, 3),
                                                             (11, 12, 2, 5)])
def test_im2col_each_image_at_stride_2_matches_one_image_at_a_time(height, width, padding, kernel):
    """conv_batched's matrix per image (images 1..3 of 4, in one call through one padded
    buffer at stride 2) holds what im2col gives each image alone, and col2im_each puts
    back into exactly those images what col2im puts back into each alone."""
    from tinygrad_uu.kernels import conv_batched, conv_im2col
    rng = np.random.default_rng(height + kernel)
    x = rng.standard_normal((4, 3, height, width)).astype(np.float32)
    oh, ow = (height + 2 * padding - kernel) // 2 + 1, (width + 2 * padding - kernel) // 2 + 1
    geometry = (kernel, kernel, 2, 2, padding, padding, 1, 1, oh, ow)
    cols = np.full((3, 3 * kernel * kernel, oh * ow), np.nan, np.float32)
    conv_batched._im2col_each(x, cols, 1, *geometry)
    for i in range(3):
        alone = np.full(cols.shape[1:], np.nan, np.float32)
        conv_im2col._im2col(x[1 + i:2 + i], alone, *geometry, 0, 3)
        np.testing.assert_array_equal(cols[i], alone)
    g = rng.standard_normal(cols.shape).astype(np.float32)
    gx = np.full(x.shape, np.nan, np.float32)
    conv_batched._col2im_each(g, gx, 1, *geometry)
    assert np.isnan(gx[0]).all()  # image 0 is not the call's
    for i in range(3):
        alone = np.empty((1, *x.shape[1:]), np.float32)
        conv_im2col._col2im(g[i], alone, *geometry, 0, 3)
        np.testing.assert_array_equal(gx[1 + i], alone[0])


# --------------------------------------------------------------------------- small feature maps
@st.composite
def small_map_cases(draw):
    """Convs of the small-map kind (a detector's or a ResNet's deeper layers, scaled down):
    kernel 1 or 3, stride 1 or 2, batch 1 to 5, groups, a few channels per side."""
    groups = draw(st.sampled_from([1, 1, 1, 2]))
    cg, og = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    k = draw(st.sampled_from([1, 3]))
    s = draw(st.sampled_from([1, 2]))
    p = draw(st.integers(0, k // 2))
    d = draw(st.sampled_from([1, 1, 2])) if k == 3 else 1
    hw = draw(st.integers(max(1, (k - 1) * d + 1 - 2 * p), 9))
    n = draw(st.sampled_from([1, 1, 2, 5]))
    return dict(x_shape=(n, cg * groups, hw, draw(st.integers(max(1, (k - 1) * d + 1 - 2 * p), 9))),
                w_shape=(og * groups, cg, k, k), stride=(s, s), padding=(p, p), dilation=(d, d),
                groups=groups, bias=draw(st.booleans()), threads=draw(st.sampled_from([1, 2])),
                side_by_side=draw(st.booleans()), blas_from_numba=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@SETTINGS
@given(case=small_map_cases())
def test_conv2d_batched_kernels_match_numpy(case):
    """im2col + BLAS with the batch cut among the threads (conv_batched.py), called directly
    on one and two threads, with each chunk's images side by side in one product or each
    in its own, and each chunk one numba call (the products through kernels/cblas.py) or,
    as where no BLAS function is found, numpy calls: forward, and the backward with every
    combination of the gradients asked for, against the reference."""
    from tinygrad_uu.kernels import cblas, conv_batched, reference
    rng = np.random.default_rng(case["seed"])
    x, w = array(rng, case["x_shape"]), array(rng, case["w_shape"])
    b = rng.standard_normal(case["w_shape"][0]).astype(np.float32) if case["bias"] else None
    opts = tuple(case[k] for k in ("stride", "padding", "dilation", "groups"))
    threads, below = tg.get_num_threads(), (conv_batched.SIDE_BY_SIDE_BELOW, conv_batched.SIDE_BY_SIDE_BELOW_BACKWARD)
    patch = pytest.MonkeyPatch()
    if not case["blas_from_numba"]:
        patch.setattr(cblas, "gemm", lambda dtype: None)
    try:
        tg.set_num_threads(case["threads"])
        conv_batched.SIDE_BY_SIDE_BELOW = conv_batched.SIDE_BY_SIDE_BELOW_BACKWARD = \
            1 << 30 if case["side_by_side"] else 0
        out = conv_batched.conv2d_forward_batched(x, w, b, *opts)
        assert_same(reference.conv2d_forward(x, w, b, *opts), out)
        g = array(rng, out.shape)
        want = (reference.conv2d_grad_input(g, w, x.shape, *opts), reference.conv2d_grad_weight(x, g, w.shape, *opts),
                g.sum(axis=(0, 2, 3)))
        for need_x, need_w in ((True, True), (True, False), (False, True)):
            got = conv_batched.conv2d_backward_batched(x, w, g, *opts, need_x, need_w)
            assert_same((want[0] if need_x else None, want[1] if need_w else None, want[2]), got)
    finally:
        patch.undo()
        tg.set_num_threads(threads)
        conv_batched.SIDE_BY_SIDE_BELOW, conv_batched.SIDE_BY_SIDE_BELOW_BACKWARD = below


@pytest.mark.parametrize("n, k, stride", [(2, 3, 2), (3, 3, 2), (3, 1, 1), (3, 1, 2)])
def test_conv2d_batched_with_blas_on_threads_matches_numpy(n, k, stride):
    """A batch of a few big maps is one chunk, on this thread, with BLAS on two threads
    (``_run_chunks``). Each image's product reads its im2col matrix through a raw address:
    numba once freed the matrix after the address was taken, and OpenBLAS's threads then
    wrote over it (forward and dw off by 4 in 16 -> 32 at 48x48, stride 2, batch 3)."""
    from tinygrad_uu.kernels import conv_batched, reference
    rng = np.random.default_rng(n * 10 + k + stride)
    x, w = array(rng, (n, 16, 48, 48)), array(rng, (32, 16, k, k))
    opts = ((stride, stride), (k // 2, k // 2), (1, 1), 1)
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(2)
        oh = 48 // stride
        assert conv_batched._chunking(n, 16 * k * k, oh * oh, 4, 2 * 32 * 16 * k * k * oh * oh) == 1
        for _ in range(3):
            out = conv_batched.conv2d_forward_batched(x, w, None, *opts)
            assert_same(reference.conv2d_forward(x, w, None, *opts), out)
            g = array(rng, out.shape)
            got = conv_batched.conv2d_backward_batched(x, w, g, *opts, True, True)
            assert_same((reference.conv2d_grad_input(g, w, x.shape, *opts),
                         reference.conv2d_grad_weight(x, g, w.shape, *opts), g.sum(axis=(0, 2, 3))), got)
    finally:
        tg.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape, stride", [((4, 6, 7, 7, 8, 3), 1), ((3, 5, 8, 8, 4, 3), 2),
                                           ((4, 8, 6, 6, 12, 1), 2), ((1, 4, 5, 5, 4, 3), 2),
                                           ((2, 4, 8, 8, 5, 1), 1)])
def test_conv2d_on_small_maps_passes_gradcheck(shape, stride, threads):
    """conv2d through the Tensor API on the batched path (float64, finite differences),
    with the work split among the threads and not; batch 1 included."""
    from tinygrad_uu import gradcheck
    from tinygrad_uu.kernels import conv
    import tinygrad_uu.nn.functional as F
    n, c, h, w, co, k = shape
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(threads)
        assert not conv._is_3x3((n, c, h, w), (co, c, k, k), (stride, stride), (k // 2,) * 2, (1, 1))
        assert not conv._direct((co, c, k, k), (stride, stride), 1)
        assert conv._batched((n, c, h, w)) == (n >= threads)
        rng = np.random.default_rng(sum(shape))
        x = tg.tensor(rng.standard_normal((n, c, h, w)), requires_grad=True)
        wt = tg.tensor(rng.standard_normal((co, c, k, k)), requires_grad=True)
        b = tg.tensor(rng.standard_normal(co), requires_grad=True)
        with K.use_backend("numba"):
            assert gradcheck(lambda *t: F.conv2d(*t, stride=stride, padding=k // 2), x, wt, b)
    finally:
        tg.set_num_threads(before)


@pytest.mark.parametrize("out_channels, stride, bias, need_x", [(1, 1, True, True), (5, 1, False, True),
                                                           (3, 2, True, False)])
def test_a_1x1_conv_of_1x1_maps_is_a_matrix_product_and_matches_numpy(out_channels, stride, bias, need_x):
    """A classifier head after global pooling takes conv.py's matrix-product path: the
    same output and gradients as the reference, with dx only when asked for."""
    from tinygrad_uu import gradcheck
    from tinygrad_uu.kernels import conv
    import tinygrad_uu.nn.functional as F
    rng = np.random.default_rng(out_channels)
    x = rng.standard_normal((6, 8, 1, 1)).astype(np.float32)
    w = rng.standard_normal((out_channels, 8, 1, 1)).astype(np.float32)
    b = rng.standard_normal(out_channels).astype(np.float32) if bias else None
    assert conv._on_pixels(x.shape, w.shape, (0, 0), 1)
    out = both(K.conv2d_forward, x, w, b, stride)
    assert_same(*out)
    g = rng.standard_normal(out[0].shape).astype(np.float32)
    want, got = both(K.conv2d_backward, x, w, g, stride, need_grad_x=need_x)
    assert_same(want, got)
    assert (got[0] is None) != need_x
    with K.use_backend("numba"):
        xt = tg.tensor(x.astype(np.float64), requires_grad=True)
        wt = tg.tensor(w.astype(np.float64), requires_grad=True)
        assert gradcheck(lambda a, c: F.conv2d(a, c, stride=stride), xt, wt)


@pytest.mark.parametrize("x_shape, out_channels, stride", [
    ((6, 8, 1, 1), 1, 1),    # a ResNet head: one logit from pooled features
    ((4, 6, 5, 5), 7, 1),    # stride 1: the columns are the input itself
    ((6, 4, 7, 6), 5, 2),    # stride 2 on a small map: picked pixels, side by side
    ((3, 5, 8, 9), 4, 1)])   # stride 1, image by image: the products read x itself (in numba)
def test_pointwise_convs_take_their_columns_from_the_input_and_match_numpy(x_shape, out_channels, stride):
    from tinygrad_uu.kernels import conv_batched
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal((out_channels, x_shape[1], 1, 1)).astype(np.float32)
    b = rng.standard_normal(out_channels).astype(np.float32)
    oh, ow = (x_shape[2] - 1) // stride + 1, (x_shape[3] - 1) // stride + 1
    side_by_side = oh * ow < conv_batched.SIDE_BY_SIDE_BELOW
    geometry = (1, 1, stride, stride, 0, 0, 1, 1, oh, ow)
    assert conv_batched._pointwise(geometry, side_by_side)
    assert conv_batched._numpy_calls(geometry, side_by_side, backward=False) == side_by_side
    g = rng.standard_normal((x_shape[0], out_channels, oh, ow)).astype(np.float32)
    with K.use_backend("numpy"):
        want = K.conv2d_forward(x, w, b, stride), K.conv2d_backward(x, w, g, stride)
    got = (conv_batched.conv2d_forward_batched(x, w, b, (stride,) * 2, (0, 0), (1, 1), 1),
           conv_batched.conv2d_backward_batched(x, w, g, (stride,) * 2, (0, 0), (1, 1), 1, True, True))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    for a, e in zip(got[1], want[1]):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((2, 16, 8, 8), (16, 16, 3, 3), 1, 1),    # Winograd
    ((2, 4, 26, 26), (8, 4, 3, 3), 1, 1),     # the 3x3 loops
    ((2, 8, 1, 1), (3, 8, 1, 1), 1, 0),       # 1x1 on 1x1 maps: a matrix product
    ((2, 3, 9, 9), (4, 3, 3, 3), 2, 1),       # im2col
    ((8, 4, 24, 24), (6, 4, 3, 3), 2, 1),     # im2col, image by image in chunks (up to 8 threads)
    ((8, 4, 16, 12), (6, 4, 1, 1), 2, 0),     # 1x1 stride 2, the same
    ((2, 2, 9, 9), (3, 2, 3, 3), 1, 1),       # direct loops
])
def test_conv2d_backward_leaves_out_the_bias_gradient_when_asked(x_shape, w_shape, stride, padding):
    """need_grad_b=False (a conv without bias) gives grad_b None and the same grad_x and
    grad_w, on both backends; by default grad_b is grad_out summed per channel."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    out = K.conv2d_forward(x, w, None, stride=stride, padding=padding)
    g = rng.standard_normal(out.shape).astype(np.float32)
    for backend in ("numba", "numpy"):
        with K.use_backend(backend):
            gx, gw, gb = K.conv2d_backward(x, w, g, stride=stride, padding=padding)
            gx2, gw2, gb2 = K.conv2d_backward(x, w, g, stride=stride, padding=padding, need_grad_b=False)
        assert gb2 is None
        np.testing.assert_allclose(gb, g.sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(gx, gx2)
        np.testing.assert_array_equal(gw, gw2)
