"""The elementwise, normalisation, pooling and resizing kernels: numba == numpy reference
on hypothesis-drawn shapes and values (NaN, +-0 and inf among them), with small arrays
also sent through the threads; ties and NaNs in the 2x2 max pool; the batch-norm
statistics far from zero. The helpers are test_kernels.py's."""
import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_uu import kernels as K
from tests.test_kernels import SETTINGS, array, assert_same, both


@contextlib.contextmanager
def through_the_threads(split):
    """With ``split``, even small arrays go through two threads, in blocks of 7 values."""
    import tinygrad_uu as tg
    from tinygrad_uu.kernels import elementwise, parallel
    threads = tg.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        if split:
            tg.set_num_threads(max(2, threads))
            patch.setattr(parallel, "SMALL_WORK", 0)
            patch.setattr(parallel, "STREAMING_WORK", 0)
            patch.setattr(elementwise, "RELU_BLOCK", 7)
            patch.setattr(elementwise, "BCE_BLOCK", 7)
            patch.setattr(elementwise, "BCE_FORWARD_PIECE", 7)
            patch.setattr(elementwise, "CONCAT_BLOCK", 7)
        try:
            yield
        finally:
            tg.set_num_threads(threads)


def with_specials(x, specials):
    """x with its first values set to ``specials`` (NaN, +-0, inf) where it is C-contiguous
    and long enough (a transposed view is left as drawn)."""
    flat = x.reshape(-1) if x.flags.c_contiguous else None
    if flat is not None and flat.size >= len(specials):
        flat[:len(specials)] = specials
    return x


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    h, w = draw(st.integers(max(1, kh - 2 * padding[0]), 9)), draw(st.integers(max(1, kw - 2 * padding[1]), 9))
    return dict(x_shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), kernel=(kh, kw),
                stride=stride, padding=padding, contiguous=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@SETTINGS
@given(case=pool_cases(), relu=st.booleans())
def test_max_pool2d_numba_matches_numpy(case, relu):
    """Also with the ReLU in the same pass (``relu``): zeros, ties, NaNs in x and an
    infinite gradient (which the ReLU's backward makes NaN where it passes nothing)."""
    rng = np.random.default_rng(case["seed"])
    x = array(rng, case["x_shape"], case["contiguous"])
    if case["seed"] % 3 == 0:
        x = np.round(x)  # ties: both must pick the first maximum
    if relu and case["seed"] % 2 == 0:
        x[rng.random(x.shape) < 0.1] = np.nan
    want, got = both(K.max_pool2d_forward, x, case["kernel"], case["stride"], case["padding"], relu)
    assert_same(want, got)
    g = rng.standard_normal(want[0].shape).astype(np.float32)
    if relu:
        g[rng.random(g.shape) < 0.1] = np.inf
    with np.errstate(invalid="ignore"):  # the reference's inf * 0
        assert_same(*both(K.max_pool2d_backward, g, want[1], x.shape))


@SETTINGS
@given(case=pool_cases())
def test_avg_pool2d_numba_matches_numpy(case):
    rng = np.random.default_rng(case["seed"])
    x = array(rng, case["x_shape"], case["contiguous"])
    want, got = both(K.avg_pool2d_forward, x, case["kernel"], case["stride"], case["padding"])
    assert_same(want, got)
    g = rng.standard_normal(want.shape).astype(np.float32)
    assert_same(*both(K.avg_pool2d_backward, g, x.shape, case["kernel"], case["stride"], case["padding"]))


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 5, 3, 7), (3, 2, 1, 1), (2, 4, 9, 9)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("contiguous", [True, False])
def test_global_avg_pool_matches_numpy_and_takes_the_plane_kernels(shape, dtype, contiguous, monkeypatch):
    """A window over the whole plane (no padding): the mean of each plane and its gradient
    spread evenly, as the reference, through the _global kernels (the interface hands
    them contiguous copies of strided views)."""
    from tinygrad_uu.kernels import pooling
    calls = []
    for name in ("_global_avg_pool_forward", "_global_avg_pool_backward"):
        kernel = getattr(pooling, name)
        monkeypatch.setattr(pooling, name, lambda *a, _k=kernel, _n=name: (calls.append(_n), _k(*a))[1])
    rng = np.random.default_rng(sum(shape))
    x = array(rng, shape, contiguous, dtype)
    g = array(rng, shape[:2] + (1, 1), contiguous, dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-14  # sums in another order: rounding apart
    want, got = both(K.avg_pool2d_forward, x, shape[2:], None, 0)
    assert got.shape == shape[:2] + (1, 1) and got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    want, got = both(K.avg_pool2d_backward, g, x.shape, shape[2:], None, 0)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    assert calls == ["_global_avg_pool_forward", "_global_avg_pool_backward"]


@SETTINGS
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
       resize=st.one_of(st.tuples(st.integers(1, 3), st.integers(1, 3)).map(lambda s: {"scale_factor": s}),
                        st.just({"scale_factor": 2}),
                        st.tuples(st.integers(1, 15), st.integers(1, 15)).map(lambda s: {"size": s})),
       mode=st.sampled_from(["nearest", "bilinear"]), contiguous=st.booleans(), seed=st.integers(0, 2**16))
def test_upsample_numba_matches_numpy(n, c, h, w, resize, mode, contiguous, seed):
    rng = np.random.default_rng(seed)
    x = array(rng, (n, c, h, w), contiguous)
    want, got = both(K.upsample2d_forward, x, mode=mode, **resize)
    assert_same(want, got)
    g = rng.standard_normal(want.shape).astype(np.float32)
    assert_same(*both(K.upsample2d_backward, g, x.shape, mode=mode))


@pytest.mark.parametrize("shape, factor", [((2, 3, 4, 3), (2, 2)), ((2, 3, 4, 3), (3, 1)), ((2, 2, 5, 5), (1, 3))])
def test_nearest_upsample_backward_of_a_channel_slice(shape, factor):
    """A concatenation's gradient reaches the upsampling as a channel slice (a view, not
    C-contiguous); the numba kernel's flat loops must read it as numpy does."""
    rng = np.random.default_rng(0)
    n, c, h, w = shape
    whole = rng.standard_normal((n, c + 2, h * factor[0], w * factor[1])).astype(np.float32)
    g = whole[:, 1:1 + c]
    assert not g.flags.c_contiguous
    assert_same(*both(K.upsample2d_backward, g, shape, mode="nearest"))


@SETTINGS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), sizes=st.lists(st.integers(0, 4), min_size=1,
       max_size=4), axis=st.integers(-4, 3), dtype=st.sampled_from([np.float32, np.float64, np.int64]),
       contiguous=st.booleans(), split=st.booleans(), seed=st.integers(0, 2**16))
def test_concatenate_numba_matches_numpy(shape, sizes, axis, dtype, contiguous, split, seed):
    """Arrays joined along any axis (negative too), one to four of them, some empty along
    it; ``split`` sends even small ones through the threads, in blocks of 7 values that
    cut across the parts' rows. A non-contiguous part, or one of another shape, goes to
    numpy, with numpy's error."""
    if not -len(shape) <= axis < len(shape):
        axis = axis % len(shape)
    rng = np.random.default_rng(seed)
    parts = []
    for i, size in enumerate(sizes):
        part_shape = list(shape)
        part_shape[axis] = size
        x = (rng.standard_normal(part_shape) * 10).astype(dtype)
        parts.append(x if contiguous or i else np.asfortranarray(x))
    with through_the_threads(split):
        want, got = both(K.concatenate, parts, axis)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype and got.shape == want.shape
        if len(shape) > 1:
            bad = parts + [np.zeros([s + 1 for s in shape], dtype)]
            with pytest.raises(ValueError):
                K.concatenate(bad, axis)


@SETTINGS
@given(shape=st.sampled_from([(5,), (3, 4), (2, 3, 40, 50), (300, 257)]), dtype=st.sampled_from([np.float32, np.float64]),
       contiguous=st.booleans(), split=st.booleans(), seed=st.integers(0, 2**16))
def test_relu_numba_matches_numpy(shape, dtype, contiguous, split, seed):
    """relu forward and backward, with NaN, +-0 and inf among the values; ``split`` makes
    even small arrays go through the threads' blocks."""
    rng = np.random.default_rng(seed)
    x = with_specials(array(rng, shape, contiguous, dtype), [np.nan, 0.0, -0.0, np.inf])
    g = array(rng, shape, True, dtype)
    with through_the_threads(split):
        want, got = both(K.relu_forward, x)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == x.dtype
        want, got = both(K.relu_backward, g, want)
        np.testing.assert_array_equal(got, want)


@SETTINGS
@given(shape=st.sampled_from([(5,), (3, 4), (2, 3, 40, 50), (300, 257)]), dtype=st.sampled_from([np.float32, np.float64]),
       contiguous=st.booleans(), split=st.booleans(), seed=st.integers(0, 2**16))
def test_add_into_numba_matches_numpy(shape, dtype, contiguous, split, seed):
    """a += b in place (autograd's sum of two gradients), with NaN, +-0 and +-inf among the
    values; ``split`` sends even small arrays through the threads' blocks. The sum lands
    in a itself; b is left as it was; arrays of two shapes are refused, by the op's name."""
    rng = np.random.default_rng(seed)
    a = with_specials(array(rng, shape, True, dtype), [np.nan, 0.0, -0.0, np.inf, 1.0])
    b = with_specials(array(rng, shape, contiguous, dtype), [1.0, -0.0, 0.0, -np.inf, -1.0])
    b_before = b.copy()
    with through_the_threads(split), np.errstate(invalid="ignore"):  # inf + -inf: NaN, as numpy's
        sums = []
        for backend in ("numpy", "numba"):
            with K.use_backend(backend):
                into = a.copy()
                assert K.add_into(into, b) is None
                sums.append(into)
        np.testing.assert_array_equal(sums[1], sums[0])
        np.testing.assert_array_equal(sums[0], a + b)
        np.testing.assert_array_equal(b, b_before)
    with pytest.raises(ValueError, match=r"add_into: the arrays have shapes \(2,\) and \(3,\)"):
        K.add_into(np.zeros(2, dtype), np.zeros(3, dtype))


@SETTINGS
@given(shape=st.sampled_from([(2, 3, 4, 5), (4, 6, 40, 50), (3, 257)]), dtype=st.sampled_from([np.float32, np.float64]),
       layout=st.sampled_from(["contiguous", "channel slice", "transposed"]), split=st.booleans(),
       seed=st.integers(0, 2**16))
def test_add_numba_matches_numpy(shape, dtype, layout, split, seed):
    """a + b into a new array (autograd's sum of two gradients) for contiguous arrays, a
    channel slice of a bigger (N, C, H, W) array (a concat's gradient: planes one by one)
    and a transposed view (to numpy), with NaN and +-inf among the values."""
    rng = np.random.default_rng(seed)
    b = array(rng, shape, True, dtype)
    if layout == "channel slice" and len(shape) == 4:
        a = array(rng, (shape[0], shape[1] + 3) + shape[2:], True, dtype)[:, 2:2 + shape[1]]
    elif layout == "transposed":
        a = array(rng, shape[::-1], True, dtype).T
    else:
        a = array(rng, shape, True, dtype)
    b.reshape(-1)[:3] = [np.nan, np.inf, -np.inf]
    a_before, b_before = a.copy(), b.copy()
    with through_the_threads(split), np.errstate(invalid="ignore"):
        want, got = both(K.add, a, b)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, a_before + b_before)
        assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)
    with pytest.raises(ValueError, match=r"add: the arrays have shapes \(2,\) and \(3,\)"):
        K.add(np.zeros(2, dtype), np.zeros(3, dtype))


@SETTINGS
@given(shape=st.sampled_from([(5,), (3, 4), (2, 3, 40, 50), (300, 257)]), dtype=st.sampled_from([np.float32, np.float64]),
       contiguous=st.booleans(), split=st.booleans(), seed=st.integers(0, 2**16))
def test_add_relu_numba_matches_numpy(shape, dtype, contiguous, split, seed):
    """max(a + b, 0) (a residual block's output), with NaN, +-0 and +-inf among the values
    (inf + -inf is NaN and stays NaN); ``split`` sends even small arrays through the
    threads' blocks. Arrays of two shapes are refused, by the op's name."""
    rng = np.random.default_rng(seed)
    a = with_specials(array(rng, shape, contiguous, dtype), [np.nan, 0.0, -0.0, np.inf, 1.0])
    b = with_specials(array(rng, shape, True, dtype), [1.0, -0.0, 0.0, -np.inf, -1.0])
    with through_the_threads(split):
        want, got = both(K.add_relu_forward, a, b)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == a.dtype and got.shape == a.shape
        np.testing.assert_array_equal(K.add_relu_forward(np.array([1.0, -3.0], dtype), np.array([-2.0, 5.0], dtype)),
                                      [0.0, 2.0])
    with pytest.raises(ValueError, match=r"add_relu_forward: the arrays have shapes \(2,\) and \(3,\)"):
        K.add_relu_forward(np.zeros(2, dtype), np.zeros(3, dtype))


@SETTINGS
@given(shape=st.sampled_from([(5,), (3, 4), (2, 3, 40, 50), (300, 257)]), dtype=st.sampled_from([np.float32, np.float64]),
       contiguous=st.booleans(), split=st.booleans(), slope=st.sampled_from([0.01, 0.1, 0.0, 1.5]),
       seed=st.integers(0, 2**16))
def test_leaky_relu_numba_matches_numpy(shape, dtype, contiguous, split, slope, seed):
    """leaky relu forward and backward, with NaN, +-0 and inf among the values; ``split``
    sends even small arrays through the threads' blocks."""
    rng = np.random.default_rng(seed)
    x = with_specials(array(rng, shape, contiguous, dtype), [np.nan, 0.0, -np.inf, np.inf])
    g = array(rng, shape, True, dtype)
    with through_the_threads(split):
        want, got = both(K.leaky_relu_forward, x, slope)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == x.dtype
        if slope == 0.01:  # by hand: -2 -> -0.02, 3 -> 3
            np.testing.assert_allclose(K.leaky_relu_forward(np.array([-2.0, 3.0], dtype), slope), [-0.02, 3.0], rtol=1e-6)
        want, got = both(K.leaky_relu_backward, g, x, slope)
        np.testing.assert_array_equal(got, want)


@SETTINGS
@given(shape=st.sampled_from([(7,), (3, 4), (2, 3, 40, 50), (16, 45, 8, 8)]), dtype=st.sampled_from([np.float32, np.float64]),
       contiguous=st.booleans(), split=st.booleans(), one_value=st.booleans(), seed=st.integers(0, 2**16))
def test_bce_with_logits_numba_matches_numpy(shape, dtype, contiguous, split, one_value, seed):
    """Binary cross-entropy on logits, forward (loss and e = exp(-|x|)) and backward, for
    logits up to +-100 (e underflows to 0) with NaN and +-inf among them, and a gradient
    that is one value broadcast (a mean's) or an array of its own."""
    rng = np.random.default_rng(seed)
    x = with_specials(array(rng, shape, contiguous, dtype) * 30, [np.nan, 0.0, -np.inf, np.inf, 100.0, -100.0])
    y = rng.random(shape).astype(dtype)
    g = np.broadcast_to(dtype(0.37), shape) if one_value else array(rng, shape, True, dtype)
    with through_the_threads(split), np.errstate(invalid="ignore"):
        (want_loss, want_e), (loss, e) = both(K.bce_with_logits_forward, x, y)
        assert loss.dtype == e.dtype == x.dtype
        np.testing.assert_allclose(loss, want_loss, rtol=1e-6 if dtype == np.float32 else 1e-14)
        np.testing.assert_array_equal(e, want_e)
        want, got = both(K.bce_with_logits_backward, g, x, want_e, y)
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)


@SETTINGS
@given(shape=st.sampled_from([(2, 3), (5, 1), (2, 4, 7), (3, 2, 5, 6), (9, 3, 4, 4), (2, 16, 40, 40)]),
       dtype=st.sampled_from([np.float32, np.float64]), batch_stats=st.booleans(), split=st.booleans(),
       negative_slope=st.sampled_from([1.0, 0.0, 0.1]), seed=st.integers(0, 2**16))
def test_batch_norm_numba_matches_numpy(shape, dtype, batch_stats, split, negative_slope, seed):
    """The batch-norm kernels: per-channel statistics, the forward, the backward with the
    batch's statistics and without, with no activation (slope 1), a ReLU and a leaky
    ReLU; ``split`` sends even small arrays through the threads: by channels, or those
    with rows of up to BY_IMAGES_MAX_LENGTH values (all but the last shape) by chunks of
    images; else the short rows are made image by image on one thread."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    weight, bias = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    with through_the_threads(split):
        (mean, var), got = both(K.batch_norm_stats, x)
        assert_same(mean, got[0], 1e-6)
        assert_same(var, got[1], 1e-5)
        assert mean.shape == var.shape == (c,) and got[0].dtype == np.float64
        inv_std = (1 / np.sqrt(var + 1e-5)).astype(dtype)
        want, got = both(K.batch_norm_forward, x, mean, inv_std, weight, bias, negative_slope)
        assert_same(want, got)
        assert got.shape == shape and got.dtype == dtype
        if negative_slope == 0.0:  # a ReLU: no -0.0 (np.signbit is True for -0.0)
            assert (got >= 0).all() and not np.signbit(got).any()
        # training's one call: the statistics, inv_std and the output, each as above
        trained, one_call = both(K.batch_norm_train_forward, x, weight, bias, 1e-5, negative_slope)
        for one in (trained, one_call):
            assert_same(mean, one[1], 1e-6)
            assert_same(var, one[2], 1e-5)
            assert one[3].dtype == dtype and one[1].dtype == np.float64
        assert_same(want, trained[0])
        assert_same(trained[0], one_call[0])
        np.testing.assert_array_equal(one_call[3], (1 / np.sqrt(one_call[2] + 1e-5)).astype(dtype))
        scale = inv_std * weight
        (dx_want, *sums_want), (dx_got, *sums_got) = both(K.batch_norm_backward, g, x, mean, inv_std, weight,
                                                          bias, batch_stats, negative_slope)
        assert_same(tuple(sums_want), tuple(sums_got))
        # dx = scale * (g - mean(g) - xhat * mean(g * xhat)) can cancel to rounding noise
        # (with two values per channel it is exactly 0): tolerance from the terms' size
        terms = float(np.abs(g * scale.reshape((1, c) + (1,) * (g.ndim - 2))).max())
        assert dx_got.shape == dx_want.shape and dx_got.dtype == dx_want.dtype
        np.testing.assert_allclose(dx_got, dx_want, rtol=1e-4, atol=1e-5 * terms)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (3, 1, 2, 2)])
def test_max_pool_2x2_picks_the_first_of_ties_and_nan(shape):
    """The branch-free 2x2 max pool on windows full of ties and NaNs: the same values and
    argmax as the reference (first of equal values in row-major order; a NaN wins)."""
    rng = np.random.default_rng(len(shape) + shape[-1])
    x = rng.integers(0, 3, size=shape).astype(np.float32)  # many ties
    x[rng.random(shape) < 0.15] = np.nan
    want, got = both(K.max_pool2d_forward, x, 2)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("relu", [False, True])
def test_max_pool_argmax_is_int32_and_the_backward_takes_int64_too(relu):
    """Both backends give the argmax as int32 (shapes.argmax_dtype); the backward gives
    the same gradient from the same indices as int64 (or from the other backend's)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    g = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    want, got = both(K.max_pool2d_forward, x, 2, relu=relu)
    assert want[1].dtype == got[1].dtype == np.int32
    for backend in K.BACKENDS:
        with K.use_backend(backend):
            from_int32 = K.max_pool2d_backward(g, got[1], x.shape)
            from_int64 = K.max_pool2d_backward(g, got[1].astype(np.int64), x.shape)
        np.testing.assert_array_equal(from_int32, from_int64)
        np.testing.assert_array_equal(from_int32, K.max_pool2d_backward(g, want[1], x.shape))


def test_argmax_dtype_is_int64_only_for_planes_int32_cannot_index():
    from tinygrad_uu.kernels.shapes import argmax_dtype
    assert argmax_dtype(28, 28) == np.int32
    assert argmax_dtype(46340, 46340) == np.int32  # 2_147_395_600 pixels: the largest index fits
    assert argmax_dtype(46341, 46341) == np.int64  # 2_147_488_281 > 2**31 - 1


@pytest.mark.parametrize("offset", [0.0, 1e3, -1e4])
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-6), (np.float64, 1e-12)])
def test_batch_norm_statistics_keep_their_precision_far_from_zero(offset, dtype, rtol):
    """The numba statistics take one pass (sums of x - x[0, c, 0], each image's row in x's
    dtype); values around a large mean must give the variance of their spread to x's
    precision, as numpy's two passes in float64 do. Without the shift, float32 sums of
    squares around 1e4 would lose every digit of a variance of 1."""
    rng = np.random.default_rng(3)
    x = (offset + rng.standard_normal((8, 4, 16, 16))).astype(dtype)
    ones, zeros = np.ones(4, dtype), np.zeros(4, dtype)
    with K.use_backend("numba"):
        stats = K.batch_norm_stats(x), K.batch_norm_train_forward(x, ones, zeros, 1e-5)[1:3]
    want = x.astype(np.float64)
    for mean, var in stats:
        np.testing.assert_allclose(mean, want.mean(axis=(0, 2, 3)), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(var, want.var(axis=(0, 2, 3)), rtol=rtol)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(4, 6, 4, 4), (3, 5, 8, 8), (11, 3, 6, 6), (2, 3, 16, 16)])
def test_batch_norm_goes_image_by_image_on_short_rows(shape, threads, monkeypatch):
    """Rows of up to BY_IMAGES_MAX_LENGTH values take the _by_images kernels on one thread
    and the _shared ones (chunks of images) on two; longer ones the per-channel kernels.
    The same numbers either way."""
    import tinygrad_uu as tg
    from tinygrad_uu.kernels import normalization, parallel
    calls = []
    for name in ("_bn_train_forward_by_images", "_bn_backward_by_images", "_bn_train_forward_shared",
                 "_bn_backward_shared"):
        kernel = getattr(normalization, name)
        monkeypatch.setattr(normalization, name, lambda *a, _k=kernel, _n=name: (calls.append(_n), _k(*a))[1])
    if threads == 2:
        monkeypatch.setattr(parallel, "STREAMING_WORK", 0)
    rng = np.random.default_rng(sum(shape))
    x, g = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    weight, bias = rng.standard_normal(shape[1]).astype(np.float32), rng.standard_normal(shape[1]).astype(np.float32)
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(threads)
        (want_out, *want_stats), (out, *stats) = both(K.batch_norm_train_forward, x, weight, bias, 1e-5, 0.1)
        want, got = both(K.batch_norm_backward, g, x, stats[0], stats[2], weight, bias, True, 0.1)
    finally:
        tg.set_num_threads(before)
    assert_same(want_out, out)
    for a, b in zip(want_stats, stats):
        assert_same(a, b, 1e-5)
    assert_same(want, got)
    short = shape[2] * shape[3] <= normalization.BY_IMAGES_MAX_LENGTH
    kind = "by_images" if threads == 1 else "shared"
    forward, backward = f"_bn_train_forward_{kind}", f"_bn_backward_{kind}"
    if not short:
        assert calls == []
    else:  # the shared kernels: one call per thread that joined (at most two)
        assert calls[0] == forward and set(calls) == {forward, backward} and len(calls) <= 2 * threads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_shared_kernels_on_one_thread_do_every_chunk_and_a_late_thread_nothing(dtype):
    """A thread that runs a shared kernel alone claims every chunk and makes the whole
    output; a second thread that comes after finds every chunk claimed and returns
    without writing (nor waiting). The chunks' sums, added in chunk order, give the
    statistics and gradients of the one-thread kernels."""
    from tinygrad_uu.kernels import normalization as nz
    rng = np.random.default_rng(5)
    n, c, length, chunks = 7, 3, 36, 4
    x = (rng.standard_normal((n, c, length)) * 2 + 3).astype(dtype)
    g = rng.standard_normal((n, c, length)).astype(dtype)
    weight, bias = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    slope = dtype(0.1)

    def outputs():
        return np.full_like(x, np.nan), np.full(c, np.nan), np.full(c, np.nan), np.full(c, np.nan, dtype)

    want = outputs()
    nz._bn_train_forward_by_images(x, weight, bias, 1e-5, slope, *want)
    got, state = outputs(), np.zeros(2 * nz.FLAG_STRIDE, np.int64)
    sums = (np.empty((chunks, c)), np.empty((chunks, c)), state)
    nz._bn_train_forward_shared(x, weight, bias, 1e-5, slope, *got, *sums)
    assert state[nz.CHUNK_CLAIMS] == chunks + 1 and state[nz.CHUNKS_DONE] == chunks
    late = outputs()
    nz._bn_train_forward_shared(x, weight, bias, 1e-5, slope, *late, *sums)
    assert all(np.isnan(a).all() for a in late)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol)

    mean, inv_std = got[1], got[3]
    want_dx, want_gx, want_g = np.empty_like(g), np.empty(c, dtype), np.empty(c, dtype)
    nz._bn_backward_by_images(g, x, mean, inv_std, weight, bias, slope, True, want_dx, want_gx, want_g)
    dx, sum_gx, sum_g = np.full_like(g, np.nan), np.full(c, np.nan, dtype), np.full(c, np.nan, dtype)
    state[:] = 0
    nz._bn_backward_shared(g, x, mean, inv_std, weight, bias, slope, True, dx, sum_gx, sum_g, *sums)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=tol)
    np.testing.assert_allclose(sum_gx, want_gx, rtol=tol, atol=tol)
    np.testing.assert_allclose(sum_g, want_g, rtol=tol, atol=tol)
