"""Winograd's F(4x4, 3x3) convolution (kernels/conv_winograd.py): every output and
gradient against the plain-numpy reference on hypothesis-drawn shapes (odd and even
sizes, padding 0-2, batch 1, one and two threads, float32 and float64), the dispatch that
sends 3x3 stride-1 convs on small maps there, and gradcheck through the Tensor API."""
import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygrad_uu as tg
import tinygrad_uu.nn.functional as F
from tinygrad_uu import gradcheck
from tinygrad_uu import kernels as K
from tinygrad_uu.kernels import cblas, conv, conv_batched, conv_winograd, reference
from tinygrad_uu.kernels import conv_winograd_packed as packed
from tinygrad_uu.kernels import winograd_tiles

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def assert_close(want, got, dtype):
    """To rounding: the transforms add and subtract, so a few units of it in float32."""
    assert got.shape == want.shape and got.dtype == want.dtype
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    atol = rtol * max(float(np.abs(want).max()), 1e-30)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@st.composite
def cases(draw):
    p = draw(st.integers(0, 2))
    h, w = draw(st.integers(max(1, 3 - 2 * p), 11)), draw(st.integers(max(1, 3 - 2 * p), 11))
    return dict(n=draw(st.sampled_from([1, 2, 5])), ci=draw(st.integers(1, 7)), co=draw(st.integers(1, 7)),
                h=h, w=w, p=p, bias=draw(st.booleans()), threads=draw(st.sampled_from([1, 2])),
                dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 2**16)),
                bands=draw(st.booleans()), blas_from_numba=draw(st.booleans()),
                packed=draw(st.one_of(st.none(), st.just("auto"), st.tuples(st.integers(1, 6), st.integers(1, 4)))))


@SETTINGS
@given(case=cases())
def test_winograd_matches_the_reference(case):
    """Forward (and with its ReLU), dx, dw and db, each gradient asked for alone and together, with the images
    whole in chunks or cut into bands of tile rows, or packed on planes (as the engine
    chooses, or a grid of any size drawn: ``images`` to a chunk, ``across`` to a row); the
    products called from numba (kernels/cblas.py) or, as where no BLAS function is found,
    from Python."""
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    x = rng.standard_normal((case["n"], case["ci"], case["h"], case["w"])).astype(dt)
    w = rng.standard_normal((case["co"], case["ci"], 3, 3)).astype(dt)
    b = rng.standard_normal(case["co"]).astype(dt) if case["bias"] else None
    p = (case["p"], case["p"])
    opts = ((1, 1), p, (1, 1), 1)
    before = tg.get_num_threads()
    patch = pytest.MonkeyPatch()
    if case["bands"]:  # a chunk budget of a byte: every image cut into bands of one tile row
        patch.setattr(conv_batched, "CHUNK_COLS_BYTES", 1)
        patch.setattr(conv_batched, "CHUNK_COLS_BYTES_THREADED", 1)
    if not case["blas_from_numba"]:
        patch.setattr(cblas, "gemm", lambda dtype: None)
    if case["packed"] != "auto":
        patch.setattr(conv_winograd, "packing", lambda *args: case["packed"])
    try:
        tg.set_num_threads(case["threads"])
        out = conv_winograd.conv2d_forward_winograd(x, w, b, p)
        assert_close(reference.conv2d_forward(x, w, b, *opts), out, dt)
        assert_close(np.maximum(out, 0), conv_winograd.conv2d_forward_winograd(x, w, b, p, relu=True), dt)
        g = rng.standard_normal(out.shape).astype(dt)
        want_x = reference.conv2d_grad_input(g, w, x.shape, *opts)
        want_w = reference.conv2d_grad_weight(x, g, w.shape, *opts)
        for need_x, need_w in ((True, True), (True, False), (False, True)):
            gx, gw, gb = conv_winograd.conv2d_backward_winograd(x, w, g, p, need_x, need_w)
            assert (gx is None) != need_x and (gw is None) != need_w
            if need_x:
                assert_close(want_x, gx, dt)
            if need_w:
                assert_close(want_w, gw, dt)
            assert_close(g.sum(axis=(0, 2, 3)), gb, dt)
    finally:
        tg.set_num_threads(before)
        patch.undo()


@pytest.mark.parametrize("h, w, p", [(50, 61, 1), (48, 48, 0), (45, 70, 2), (13, 101, 1), (9, 98, 0)])
def test_transforms_by_rows_on_wide_maps(h, w, p, monkeypatch):
    """Rows of 12 tiles and more (maps from 48 wide) take _patch_transforms_by_rows, and
    rows of 24 and more (from 96 wide) _output_tiles_by_rows:
    the forward (with its ReLU too) and dx (the forward on grad_out) against the
    reference, on two threads, the images whole and in bands of tile rows."""
    assert winograd_tiles._tiles(h + 2 * p - 2, w + 2 * p - 2)[1] >= winograd_tiles.BY_ROWS_MIN_TILES
    rng = np.random.default_rng(h * w)
    x = rng.standard_normal((5, 3, h, w))
    wt, bias = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    g = rng.standard_normal((5, 4, h + 2 * p - 2, w + 2 * p - 2))
    opts = ((1, 1), (p, p), (1, 1), 1)
    monkeypatch.setattr(conv_winograd, "packing", lambda *args: None)
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(2)
        for bands in (False, True):
            if bands:  # a chunk budget of a byte: every image cut into bands of one tile row
                monkeypatch.setattr(conv_batched, "CHUNK_COLS_BYTES", 1)
                monkeypatch.setattr(conv_batched, "CHUNK_COLS_BYTES_THREADED", 1)
            want = reference.conv2d_forward(x, wt, bias, *opts)
            assert_close(want, conv_winograd.conv2d_forward_winograd(x, wt, bias, (p, p)), np.float64)
            assert_close(np.maximum(want, 0), conv_winograd.conv2d_forward_winograd(x, wt, bias, (p, p), relu=True),
                         np.float64)
            assert_close(reference.conv2d_grad_input(g, wt, x.shape, *opts),
                         conv_winograd.conv2d_grad_input_winograd(g, wt, (p, p)), np.float64)
    finally:
        tg.set_num_threads(before)


BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=float)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], dtype=float)


def test_tile_transforms_against_the_matrices():
    """One tile through each transform, against F(4x4, 3x3)'s matrices written out:
    V = B^T d B (input), Y = A^T M A (output, + bias), Z = A dY A^T (output gradient)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 4, 4))  # padding 1: the tile's 6x6 patch is x with a zero border
    v = np.empty((1, 36, 1))
    conv_winograd._input_tiles(x, v, 0, 1, 1, 0, 1, 1, 0, 1)
    np.testing.assert_allclose(v.reshape(6, 6), BT @ np.pad(x[0, 0], 1) @ BT.T, rtol=1e-12, atol=1e-12)
    m = rng.standard_normal((1, 36, 1))
    out = np.empty((1, 1, 4, 4))
    conv_winograd._output_tiles(m, np.array([0.5]), False, out, 0, 0, 1, 1, 0, 1)
    np.testing.assert_allclose(out[0, 0], AT @ m.reshape(6, 6) @ AT.T + 0.5, rtol=1e-12)
    dy = rng.standard_normal((1, 3, 4, 4))  # three channels: each position's row holds all three
    z = np.empty((36, 3))
    conv_winograd._grad_tiles_channel_minor(dy, z.ravel(), 3, 0, 0, 1, 1, 1)
    for c in range(3):
        np.testing.assert_allclose(z[:, c].reshape(6, 6), AT.T @ dy[0, c] @ AT, rtol=1e-12)


def test_filter_transform_and_its_adjoint():
    """U = G w G^T against the matrices written out, <U(w), d> == <w, U^T(d)>, the adjoint
    of several threads' sums that of their total, and the turned kernel's U (dx's) that of
    w turned 180 degrees with its channel axes swapped."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 3, 3))
    u = conv_winograd._filter_transform(w)
    np.testing.assert_allclose(u.reshape(6, 6, 3, 2).transpose(2, 3, 0, 1), G @ w @ G.T, rtol=1e-12)
    d = rng.standard_normal(u.shape)
    back = np.empty_like(w)
    conv_winograd._filter_tiles_adjoint(d[None], back, 0, w.shape[0])
    assert np.isclose(np.sum(u * d), np.sum(w * back), rtol=1e-12)
    parts = np.stack([d, rng.standard_normal(u.shape), rng.standard_normal(u.shape)])  # three threads' sums
    summed = np.empty_like(w)
    conv_winograd._filter_tiles_adjoint(parts, summed, 0, w.shape[0])
    conv_winograd._filter_tiles_adjoint(parts.sum(axis=0)[None], back, 0, w.shape[0])
    np.testing.assert_allclose(summed, back, rtol=1e-12, atol=1e-12)
    turned = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    np.testing.assert_allclose(conv_winograd._turned(w).reshape(6, 6, 2, 3).transpose(2, 3, 0, 1),
                               G @ turned @ G.T, rtol=1e-12)


@pytest.mark.parametrize("n, ci, h, w, p", [
    (1, 3, 5, 7, 1),    # odd sizes
    (2, 4, 8, 8, 0),    # 8 tiles * 4 channels: the 36 matrices unpadded
    (4, 16, 8, 8, 1),   # 16 tiles * 16 channels = 256, a multiple of 64: padded apart
    (3, 5, 6, 9, 2),    # padding 2, a tile past the edge
    (2, 32, 14, 14, 1),  # W2's conv, 32 tiles
])
def test_channel_minor_input_transform_is_the_transposed_v(n, ci, h, w, p):
    """dU's V (_input_tiles_channel_minor) holds the forward's V (_input_tiles): each of
    the 36 positions' (tiles, C_in) matrix is V[:, xi, :] transposed, and the padding
    between the matrices is not written over by the tiles."""
    x = np.random.default_rng(n).standard_normal((n, ci, h, w))
    th, tw = conv_winograd._tiles(h + 2 * p - 2, w + 2 * p - 2)
    t = n * th * tw
    v = np.empty((ci, 36, conv_winograd._stride(t)))
    conv_winograd._input_tiles(x, v, 0, p, p, 0, th, tw, 0, n * ci)
    block = conv_winograd._stride(t * ci)
    vt = np.full((36, block), np.nan)
    conv_winograd._input_tiles_channel_minor(x, vt.ravel(), block, 0, p, p, 0, th, tw, n)
    want = v[:, :, :t].transpose(1, 2, 0)  # to rounding: fastmath may order the sums otherwise
    np.testing.assert_allclose(vt[:, :t * ci].reshape(36, t, ci), want, rtol=0, atol=1e-13 * np.abs(want).max())
    assert np.isnan(vt[:, t * ci:]).all() and (block > t * ci) == ((t * ci) % 64 == 0)


@pytest.mark.parametrize("n, ci, h, w, p", [
    (1, 3, 5, 7, 1),    # odd sizes: the last tiles' patches reach past the image
    (2, 4, 8, 8, 0),    # no padding
    (4, 16, 4, 4, 1),   # a ResNet's last stage: one tile per image
    (3, 5, 6, 9, 2),    # padding 2
    (2, 32, 16, 16, 1),  # 4 x 4 tiles, their patches overlapping
])
def test_dx_patches_are_the_adjoint_of_the_input_transform(n, ci, h, w, p):
    """The transposed algorithm's dx (_input_grad_tiles_channel_minor) is the adjoint of
    dU's V (_input_tiles_channel_minor): <V(x), dV> == <x, V^T(dV)> for any x and dV, and
    one tile's patch is B dV B^T written out with the matrices."""
    rng = np.random.default_rng(n + ci)
    x = rng.standard_normal((n, ci, h, w))
    th, tw = conv_winograd._tiles(h + 2 * p - 2, w + 2 * p - 2)
    t = n * th * tw
    block = conv_winograd._stride(t * ci)
    v = np.zeros((36, block))
    conv_winograd._input_tiles_channel_minor(x, v.ravel(), block, 0, p, p, 0, th, tw, n)
    dv = rng.standard_normal((36, block))
    gx = np.full(x.shape, np.nan)
    winograd_tiles._input_grad_tiles_channel_minor(dv.ravel(), block, gx, 0, p, p, th, tw, n)
    used = np.s_[:, :t * ci]  # past t * ci: the padding between the matrices, in neither sum
    assert np.isclose(np.sum(v[used] * dv[used]), np.sum(x * gx), rtol=1e-12)
    one = rng.standard_normal((36, 1))  # a 4x4 image, padding 1: its patch is the image with a border
    gx = np.empty((1, 1, 4, 4))
    winograd_tiles._input_grad_tiles_channel_minor(one.ravel(), 1, gx, 0, 1, 1, 1, 1, 1)
    np.testing.assert_allclose(gx[0, 0], (BT.T @ one.reshape(6, 6) @ BT)[1:5, 1:5], rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_dx_by_the_transposed_algorithm_where_chunks_are_whole_images(threads, monkeypatch):
    """dx comes from dW's Z (dV = Z U, then B dV B^T onto the patches) in chunks of whole
    images, unpacked or packed on planes; in bands of tile rows (whose patches would
    overlap another band's), and everywhere with TRANSPOSED_DX off, from the forward on
    grad_out with U turned. Each against the reference, and the chunks counted."""
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((8, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    g = rng.standard_normal((8, 24, 8, 8)).astype(np.float32)
    opts = ((1, 1), (1, 1), (1, 1), 1)
    want = reference.conv2d_grad_input(g, w, x.shape, *opts)
    calls = {}

    def spy(name, kind):
        real = getattr(conv_winograd, name)
        monkeypatch.setattr(conv_winograd, name, lambda *a: (calls.__setitem__(kind, calls[kind] + 1), real(*a))[1])

    spy("_chunk_backward_in_numba", "transposed")
    spy("packed_backward", "transposed")
    spy("_chunk_forward", "turned")
    spy("packed_chunk_forward", "turned")
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(threads)
        for layout, need_w, expected in (("whole", True, "transposed"), ("whole", False, "transposed"),
                                         ("packed", True, "transposed"), ("packed", False, "transposed"),
                                         ("bands", True, "turned"), ("off", True, "turned")):
            if layout == "packed":  # three images to a plane, two across
                monkeypatch.setattr(conv_winograd, "packing", lambda *args: (3, 2))
            else:
                monkeypatch.setattr(conv_winograd, "packing", lambda *args: None)
            if layout == "bands":  # a chunk budget of a byte: every image cut into bands of one tile row
                monkeypatch.setattr(conv_batched, "CHUNK_COLS_BYTES", 1)
                monkeypatch.setattr(conv_batched, "CHUNK_COLS_BYTES_THREADED", 1)
            monkeypatch.setattr(conv_winograd, "TRANSPOSED_DX", layout != "off")
            calls.update(transposed=0, turned=0)
            gx, gw, _ = conv_winograd.conv2d_backward_winograd(x, w, g, (1, 1), True, need_w)
            assert_close(want, gx, np.float32)
            assert calls[expected] > 0 and sum(calls.values()) == calls[expected], (layout, calls)
            if need_w:
                assert_close(reference.conv2d_grad_weight(x, g, w.shape, *opts), gw, np.float32)
    finally:
        tg.set_num_threads(before)


def test_the_backward_takes_the_forwards_filter_transform(monkeypatch):
    """The forward leaves U in ``saved``; the backward's dx (transposed algorithm) then takes
    it instead of transforming w again, with the same result. Through kernels.conv, as
    the Conv2d op calls it."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 16, 8, 8))
    w = rng.standard_normal((20, 16, 3, 3))
    opts = ((1, 1), (1, 1), (1, 1), 1)
    saved = {}
    conv.conv2d_forward(x, w, None, *opts, saved=saved)
    np.testing.assert_array_equal(saved["winograd_u"], conv_winograd._filter_transform(w))
    g = rng.standard_normal((4, 20, 8, 8))
    transforms = []
    real = conv_winograd._filter_transform
    monkeypatch.setattr(conv_winograd, "_filter_transform", lambda *a, **k: (transforms.append(1), real(*a, **k))[1])
    gx, gw, _ = conv.conv2d_backward(x, w, g, *opts, True, True, saved=saved)
    assert transforms == []
    assert_close(reference.conv2d_grad_input(g, w, x.shape, *opts), gx, np.float64)
    assert_close(reference.conv2d_grad_weight(x, g, w.shape, *opts), gw, np.float64)
    conv.conv2d_backward(x, w, g, *opts, True, True)
    assert transforms == [1]  # without the forward's dict: made again


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups, expected", [
    ((64, 32, 14, 14), (64, 32, 3, 3), 1, 1, 1, True),     # W2's conv, the MNIST CNN's size
    ((64, 128, 4, 4), (128, 128, 3, 3), 1, 1, 1, True),    # a ResNet's last stage
    ((64, 32, 16, 16), (64, 32, 3, 3), 2, 1, 1, False),    # strided: im2col
    ((64, 8, 14, 14), (16, 8, 3, 3), 1, 1, 1, False),      # few channels
    ((8, 32, 14, 14), (32, 16, 3, 3), 1, 1, 2, False),     # grouped
    ((8, 32, 14, 14), (32, 32, 1, 1), 1, 0, 1, False),     # 1x1
])
def test_which_convs_take_winograd(x_shape, w_shape, stride, padding, groups, expected):
    s, p = (stride, stride), (padding, padding)
    assert conv._winograd(w_shape, s, p, (1, 1), groups) == expected
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    opts = dict(stride=stride, padding=padding, groups=groups)
    with K.use_backend("numba"):
        out = K.conv2d_forward(x, w, None, **opts)
    with K.use_backend("numpy"):
        want = K.conv2d_forward(x, w, None, **opts)
    assert_close(want, out, np.float32)


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_through_the_tensor_api_passes_gradcheck(threads, monkeypatch):
    """conv2d and a stride-1 conv_transpose2d (which runs on conv2d's input gradient) on
    the Winograd path, float64 finite differences; batch 1 and an odd-sized map."""
    monkeypatch.setattr(conv, "WINOGRAD_MIN_CHANNELS", 1)  # small channels: a quick gradcheck
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(threads)
        rng = np.random.default_rng(threads)
        for n, c, h, w, co, p in ((1, 3, 5, 5, 2, 1), (2, 2, 4, 7, 3, 0), (3, 2, 3, 3, 2, 2)):
            assert conv._winograd((co, c, 3, 3), (1, 1), (p, p), (1, 1), 1)
            x = tg.tensor(rng.standard_normal((n, c, h, w)), requires_grad=True)
            wt = tg.tensor(rng.standard_normal((co, c, 3, 3)), requires_grad=True)
            b = tg.tensor(rng.standard_normal(co), requires_grad=True)
            wtt = tg.tensor(rng.standard_normal((c, co, 3, 3)), requires_grad=True)
            with K.use_backend("numba"):
                assert gradcheck(lambda *t: F.conv2d(*t, padding=p), x, wt, b)
                assert gradcheck(lambda *t: F.conv_transpose2d(*t, padding=min(p, 1)), x, wtt)
    finally:
        tg.set_num_threads(before)


def test_chunks_hold_enough_tiles_for_the_products(one_megabyte_l2):
    """At 4x4 (one tile per image) a chunk holds at least MIN_CHUNK_TILES images, so that
    its 36 products have that many columns; at 16x16 (16 tiles per image) the threads'
    chunking stands; at 128x128 with 48 channels (7 MB of tiles per image) each image is
    cut into bands of tile rows. The chunk budgets of a core with 1 MB of L2."""
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(2)
        rows, flops = 36 * 256, 2 * 36 * 128 * 128
        assert conv_winograd._plan(64, rows, 1, 1, 4, flops) == (64 // conv_winograd.MIN_CHUNK_TILES, 1)
        assert conv_winograd._plan(3, rows, 1, 1, 4, flops) == (1, 1)
        from tinygrad_uu.kernels.conv_batched import _chunking
        flops = 2 * 36 * 32 * 32 * 16
        assert conv_winograd._plan(64, 36 * 64, 4, 4, 4, flops) == (_chunking(64, 36 * 64, 16, 4, flops), 1)
        chunks, bands = conv_winograd._plan(8, 36 * 48, 32, 32, 4, 2 * 36 * 16 * 48 * 1024)
        assert bands == 7 and chunks == 8 * 7
        assert [conv_winograd._piece(k, 8, chunks, bands, 32)[2:] for k in (0, 6, 7)] == [(0, 4), (27, 32), (0, 4)]
    finally:
        tg.set_num_threads(before)


def test_a_forward_chunk_holds_its_tiles_in_and_out_within_the_budget(monkeypatch, one_megabyte_l2):
    """The forward's chunk holds V (C_in rows per tile) and M (C_out rows): W4's 16 -> 32
    layer at 14x14, batch 64, on two threads, in chunks whose V and M together fit
    CHUNK_COLS_BYTES (in chunks of 16 images they took 1.8 MB): 4 images of 110 KB, as
    on one thread (SMALL_CHUNK_MIN_IMAGES); the result is the same. The chunk budgets of
    a core with 1 MB of L2 (512 KB and 1 MB). Unpacked (on packed planes see below)."""
    before = tg.get_num_threads()
    pieces = []
    monkeypatch.setattr(conv_winograd, "packing", lambda *args: None)
    real = conv_winograd._chunk_forward
    monkeypatch.setattr(conv_winograd, "_chunk_forward", lambda gemm, x, u, b, relu, out, n0, n1, *rest: (
        pieces.append(n1 - n0), real(gemm, x, u, b, relu, out, n0, n1, *rest))[1])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 16, 14, 14)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    try:
        tg.set_num_threads(2)
        out = conv_winograd.conv2d_forward_winograd(x, w, None, (1, 1))
    finally:
        tg.set_num_threads(before)
    per_image = 36 * (16 + 32) * 16 * 4  # 16 tiles of 4x4 cover 14x14
    assert sum(pieces) == 64 and len(pieces) == 16
    assert max(pieces) * per_image <= conv_batched.CHUNK_COLS_BYTES
    want = reference.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(out, want, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("threads", [1, 2])
def test_packing_where_it_saves_tiles(threads):
    """Packed on planes: 14x14 maps (W2's and W4's layers), in chunks that divide among the
    threads (on two, at least two chunks each: one thread's late start is not waited
    out) and within MAX_CHUNK_BYTES; 16x16, 8x8 and 7x7 maps are whole tiles already (or
    no fewer packed), and a batch of one has no neighbour to share zeros with."""
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(threads)
        for ci, co in ((32, 64), (16, 32)):
            per_tile = 36 * (ci + co) * 4
            images, across = packed.packing(64, 14, 14, 1, 1, per_tile)
            th, tw = packed._grid_tiles(images, across, 14, 14, 1, 1)
            assert th * tw * per_tile <= packed.MAX_CHUNK_BYTES
            assert (64 // images) % threads == 0 and 64 % images == 0
            assert th * tw <= images * 16 * 0.9  # 16 tiles of 4x4 cover a 14x14 image alone
        # 64 images' tiles: 12 MB, too many for a chunk on one thread
        assert packed.packing(64, 14, 14, 1, 1, 36 * 96 * 4) == ((32, 4) if threads == 1 else (16, 4))
        assert packed.packing(64, 14, 14, 1, 1, 36 * 48 * 4) == ((64, 4) if threads == 1 else (16, 4))
        assert packed.packing(6, 14, 14, 1, 1, 36 * 48 * 4) == ((6, 2) if threads == 1 else (3, 1))  # 1 chunk each
        for h, p in ((16, 1), (8, 1), (7, 1), (4, 1)):
            assert packed.packing(64, h, h, p, p, 36 * 96 * 4) is None
        assert packed.packing(1, 14, 14, 1, 1, 36 * 96 * 4) is None
        assert packed.packing(64, 6, 6, 1, 1, 36 * 256 * 4) is not None  # 2 x 2 tiles for 6 x 6 outputs
    finally:
        tg.set_num_threads(before)


def test_a_packed_plane_puts_each_image_in_its_place():
    """Three images of 14x14 on a plane two wide (15 apart, the third alone on the second
    row): the forward's output plane written with each image's pixel values is their
    conv, and the tiles straddling two images (and the empty fourth place) take nothing
    from the wrong image: each image alone gives the same output."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 14, 14))
    w = rng.standard_normal((3, 2, 3, 3))
    u = conv_winograd._filter_transform(w)
    out = np.full((3, 3, 14, 14), np.nan)
    packed.packed_chunk_forward(cblas.gemm_address(x.dtype), x, u, np.zeros(0), False, out, 0, 3, 2, (1, 1))
    for i in range(3):
        assert_close(reference.conv2d_forward(x[i:i + 1], w, None, (1, 1), (1, 1), (1, 1), 1), out[i:i + 1], np.float64)
    assert packed._grid_tiles(3, 2, 14, 14, 1, 1) == (8, 8)  # a 29 x 29 plane


real_loops, real_joint = conv.conv2d_grad_weight_3x3, conv.conv2d_backward_winograd  # before the spies


@pytest.mark.parametrize("hw", [16, 30, 64])
@pytest.mark.parametrize("setting, avx512", [(None, False), (None, True), (False, True), (True, False)])
def test_big_maps_take_winograd_forward_and_dx_and_dw_by_the_cpu(hw, setting, avx512, monkeypatch):
    """A 3x3 stride-1 conv with 16+ channels: under 24x24 its forward, dx and dw run by
    Winograd; from 24x24 up dw runs by conv3x3.py's loops (which pad x themselves: the
    forward kept no padded copy), except from 64x64 up where WINOGRAD_DW_ON_BIG_MAPS says
    so (by default, on a CPU with AVX-512), where dx and dw run in one Winograd pass.
    Every output against the numpy backend, and which dw ran."""
    monkeypatch.setattr(conv, "WINOGRAD_DW_ON_BIG_MAPS", setting)
    monkeypatch.setattr(conv, "_cpu_has_avx512", lambda: avx512)
    loops, joint = [], []
    monkeypatch.setattr(conv, "conv2d_grad_weight_3x3", lambda *a, **k: (loops.append(1), real_loops(*a, **k))[1])
    monkeypatch.setattr(conv, "conv2d_backward_winograd", lambda *a, **k: (joint.append(1), real_joint(*a, **k))[1])
    x_shape, w_shape = (2, 16, hw, hw), (16, 16, 3, 3)
    s, p = (1, 1), (1, 1)
    assert conv._winograd(w_shape, s, p, (1, 1), 1)
    assert conv._is_3x3(x_shape, w_shape, s, p, (1, 1)) == (hw >= 24)
    rng = np.random.default_rng(hw)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    g = rng.standard_normal(x_shape).astype(np.float32)
    results = {}
    for backend in ("numpy", "numba"):
        with K.use_backend(backend):
            saved = {}
            out = K.conv2d_forward(x, w, b, padding=1, saved=saved)
            results[backend] = (out, *K.conv2d_backward(x, w, g, padding=1, saved=saved))
            if backend == "numba":
                assert "xpad" not in saved  # the forward was Winograd's
    for want, got in zip(results["numpy"], results["numba"]):
        assert_close(want, got, np.float32)
    winograd_dw = hw < 24 or (hw >= 64 and (avx512 if setting is None else setting))
    assert (joint, loops) == (([1], []) if winograd_dw else ([], [1]))


def test_the_cpu_check_reads_llvms_features():
    """_cpu_has_avx512 is what LLVM (numba's compiler) reports for this machine."""
    from llvmlite import binding
    assert conv._cpu_has_avx512() is bool(binding.get_host_cpu_features().get("avx512f", False))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_blas_product_numba_calls_is_numpys(dtype):
    """kernels/cblas.py finds the C function of numpy's BLAS on x86-64 (numpy's wheels ship
    OpenBLAS), and called as the Winograd kernels call it, with row steps wider than the
    rows and beta = 1, it gives numpy's product; a function that computes something else
    is turned down."""
    if not cblas._X86_64:
        assert cblas.gemm(dtype) is None
        return
    gemm = cblas.gemm(dtype)
    assert gemm is not None
    rng = np.random.default_rng(3)
    a, b, c = (rng.standard_normal(shape).astype(dtype) for shape in ((6, 40), (33, 20), (6, 25)))
    want = a[:, :33] @ b[:, :17] + c[:, :17]
    gemm(cblas.ROW_MAJOR, cblas.NO_TRANS, cblas.NO_TRANS, 6, 17, 33, 1.0, a.ctypes.data, 40,
         b.ctypes.data, 20, 1.0, c.ctypes.data, 25)
    np.testing.assert_allclose(c[:, :17], want, rtol=1e-5, atol=1e-5)
    assert not cblas._checks_out(lambda *args: None, np.dtype(dtype).char)
    assert cblas.gemm(np.int32) is None and cblas.gemm_address(np.int32) is None


@numba.njit(cache=False)
def _product_in_numba(address, transposed, a, b, c, alpha, beta):
    """c[1:, :17] = alpha A @ B + beta c[1:, :17] through cblas.product (transposed 0),
    product_transposed_a (1: A is a[1:34, :6] read as its transpose) or
    product_transposed_b (2: B is b[1:18, :33] read as its transpose), with row steps
    wider than the rows (each matrix's address offset by one row)."""
    size = a.itemsize
    pa, pb, pc = a.ctypes.data + a.shape[1] * size, b.ctypes.data + b.shape[1] * size, c.ctypes.data + c.shape[1] * size
    if transposed == 0:
        cblas.product(address, 6, 17, 33, alpha, pa, a.shape[1], pb, b.shape[1], beta, pc, c.shape[1])
    elif transposed == 1:
        cblas.product_transposed_a(address, 6, 17, 33, alpha, pa, a.shape[1], pb, b.shape[1], beta, pc, c.shape[1])
    else:
        cblas.product_transposed_b(address, 6, 17, 33, alpha, pa, a.shape[1], pb, b.shape[1], beta, pc, c.shape[1])


@pytest.mark.parametrize("transposed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_blas_product_called_by_address_from_numba_is_numpys(dtype, transposed):
    """cblas.product calls the function at gemm_address from numba, as the Winograd and
    conv_batched kernels do: alpha A @ B + beta C for matrices that start a row in;
    product_transposed_a (Winograd's dw) takes A^T, product_transposed_b (conv_batched's
    dw) B^T."""
    if not cblas._X86_64:
        assert cblas.gemm_address(dtype) is None
        return
    rng = np.random.default_rng(4)
    a, b, c = (rng.standard_normal(shape).astype(dtype) for shape in ((40, 40), (34, 36), (7, 25)))
    alpha, beta = dtype(0.5), dtype(2.0)
    first_a = (a[1:7, :33], a[1:34, :6].T, a[1:7, :33])[transposed]
    first_b = (b[1:34, :17], b[1:34, :17], b[1:18, :33].T)[transposed]
    want = c.copy()
    want[1:, :17] = alpha * first_a @ first_b + beta * c[1:, :17]
    _product_in_numba(cblas.gemm_address(dtype), transposed, a, b, c, alpha, beta)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("need_x, need_b", [(True, True), (False, True), (True, False)])
def test_the_bias_gradient_is_the_last_task_of_the_backwards_job(need_x, need_b, monkeypatch, pool_jobs,
                                                                one_megabyte_l2):
    """On two threads, db is one more task after the chunks (taken by the thread that runs
    out of chunks first), not a serial pass after the job; the gradients stay right.
    The chunk budgets of a core with 1 MB of L2, which cut these 8 images in chunks."""
    rng = np.random.default_rng(int(need_x) + 2 * int(need_b))
    x = rng.standard_normal((8, 16, 14, 14)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    g = rng.standard_normal((8, 32, 14, 14)).astype(np.float32)
    jobs = pool_jobs
    summed = []  # for each call of bias_gradient: whether a job was running
    monkeypatch.setattr(conv_winograd, "bias_gradient",
                        lambda g_: (summed.append(jobs.running), conv_batched.bias_gradient(g_))[1])
    before = tg.get_num_threads()
    try:
        tg.set_num_threads(2)
        gx, gw, gb = conv_winograd.conv2d_backward_winograd(x, w, g, (1, 1), need_x, True, need_b)
    finally:
        tg.set_num_threads(before)
    chunks, _ = conv_winograd._plan(8, conv_winograd.POSITIONS * 48, 4, 4, 4, 2 * 36 * 32 * 16 * 16 * (1 + need_x))
    assert jobs[0] == chunks + need_b
    assert summed == ([True] if need_b else [])
    with K.use_backend("numpy"):
        want_x, want_w, want_b = K.conv2d_backward(x, w, g, padding=1)
    assert_close(want_w, gw, np.float32)
    assert (gx is None) != need_x and (gb is None) != need_b
    if need_x:
        assert_close(want_x, gx, np.float32)
    if need_b:
        assert_close(want_b, gb, np.float32)
