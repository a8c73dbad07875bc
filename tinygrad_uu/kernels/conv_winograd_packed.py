"""Winograd's F(4x4, 3x3) with a chunk's images packed on one plane: fewer tiles on 14x14.

A 14x14 output needs 4 x 4 tiles of 4x4, which cover 16x16: 23% of the tiles' work
lands outside the image. Packed on one plane, with one row and one column of zeros
between neighbours (a 3x3 kernel with padding 1 needs a zero on each side of an image,
and two neighbours can share it), images sit 15 values apart; 4 x 4 of them make a
59 x 59 output plane, covered by 15 x 15 tiles: 14.06 tiles per image instead of 16.
The plane is a conv with padding 0 on the zero-separated input, so the transforms and
the 36 products are conv_winograd's; only the copies in and out differ.

With padding p (0 to 2), image (r, q) of a grid ``across`` images wide sits at rows
p + r (h + p), columns p + q (w + p) of the zero plane, and its output at rows r (h + p),
columns q (w + p): output row y < h + 2p - 2 <= h + p of an image reads only its own
rows and the p zeros on each side of it, which it shares with its neighbours. For dw,
dY's plane has zeros between the images, so the tiles that straddle two images add
nothing for the positions between; dx by the transposed algorithm (conv_winograd.py)
adds each tile's patch onto the input plane, and an image's pixels there receive only
what its own outputs read from them. Where no BLAS function is found, dx is the
forward on grad_out with padding 2 - p, which sees the same grid: grad_out's images
sit (h + 2p - 2) + (2 - p) = h + p apart too.

Measured on the Intel Xeon (2 cores), 64 x 32 -> 64 at 14x14, the forward alone: 3.4 ms
-> 2.9-3.0 (chunks of 32 images) on one thread, 1.94 -> 1.64-1.67 on two; 16 -> 32 (W4's
second layer) 1.33 -> 1.14-1.18 (chunks of 64) and 0.81-0.86 -> 0.70-0.72 (32). In the
benchmark (5 rounds each, unpacked and packed in turn, load 0.9-1.4): W2's 32 -> 64
forward and backward 1.106x on two threads and 1.089x on one; W4's step 1.042x and 1.044x.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit

from ..threads import get_num_threads
from .winograd_tiles import (POSITIONS, TILE, _at, _forward_products, _forward_products_numpy,
                             _grad_transforms_channel_minor, _input_grad_products, _patch_adjoints_channel_minor,
                             _patch_transforms, _patch_transforms_channel_minor, _rows_channels_innermost,
                             _rows_channels_outermost, _stride, _tile_columns, _tiles, _weight_products,
                             _weight_products_numpy)
from .elementwise import _relu
from .parallel import FAST, U

MIN_SAVING = 0.05  # pack only where it saves this share of the tiles
# A packed chunk's transformed tiles (V and M, or V and dZ) take at most this many bytes.
# Unlike conv_winograd's chunks, these need not stay in the L2 cache: the products read
# one position's matrices at a time. 64 x 32 -> 64 at 14x14, one thread: chunks of 32
# images (6 MB) 2.9-3.0 ms, of 64 (12 MB) 3.3; 16 -> 32: of 64 (6 MB) 1.14-1.18 ms,
# of 32 1.21-1.25 (measured).
MAX_CHUNK_BYTES = 8 << 20


def _grid_tiles(images, across, h, w, ph, pw):
    """(tile rows, tile columns) of the output plane of ``images`` images of h x w (padding
    ph, pw), ``across`` to a row."""
    down, across = -(-images // across), min(across, images)
    return _tiles((down - 1) * (h + ph) + h + 2 * ph - 2, (across - 1) * (w + pw) + w + 2 * pw - 2)


def packing(n, h, w, ph, pw, bytes_per_tile):
    """(images per chunk, images across) for the batch of n images of h x w, padding (ph,
    pw); None where packing saves less than MIN_SAVING of the tiles. The batch is cut
    into a multiple of the threads' number of chunks (so that none waits alone for a
    last chunk; fewer where the images do not divide), on several threads at least
    MIN_CHUNKS_PER_THREAD each where every chunk then holds two images or more, the
    fewest whose tiles take at most MAX_CHUNK_BYTES each; of the grids for that many
    images, the one with the fewest tiles."""
    return _packing(n, h, w, ph, pw, bytes_per_tile, get_num_threads())


# On several threads, at least two chunks each: with one each, the thread that starts
# its chunk later (a worker joins a job 15-30 us after it is posted) ends later too, and
# the other waits for it. Steps on two threads alternated in one process, against one
# chunk per thread (40, 80 and 60 rounds, load 0.5-0.7): W4 1.006x, 1.013x and 1.014x, W2
# 32->64 at 14x14 fwd+bwd 1.010x, 1.003x and 1.011x; on one thread nothing changes.
MIN_CHUNKS_PER_THREAD = 2


@functools.lru_cache(maxsize=256)
def _packing(n, h, w, ph, pw, bytes_per_tile, threads):
    th, tw = _tiles(h + 2 * ph - 2, w + 2 * pw - 2)
    first = threads * (MIN_CHUNKS_PER_THREAD if threads > 1 and n >= 2 * MIN_CHUNKS_PER_THREAD * threads else 1)
    for chunks in range(first, n + threads, threads):
        images = -(-n // chunks)
        tiles, across = min((_area(_grid_tiles(images, a, h, w, ph, pw)), a) for a in range(1, min(images, 16) + 1))
        if tiles * bytes_per_tile <= MAX_CHUNK_BYTES or images == 1:
            break
    if tiles > images * th * tw * (1 - MIN_SAVING):
        return None
    return images, across


def _area(shape):
    return shape[0] * shape[1]


@njit(nogil=True, inline="always")
def _place(image, across, h, w, ph, pw, wp, top, left):
    """The buffer offset of the first pixel of ``image`` on a plane of rows wp apart whose
    first image starts at (top, left)."""
    r, q = image // across, image % across
    return (top + r * (h + ph)) * wp + left + q * (w + pw)


@njit(fastmath=FAST, nogil=True, cache=True)
def _packed_input_tiles(x, v, n0, n1, across, ph, pw, th, tw):
    """v[c, :, t] = B^T d B for the tiles t = ty * tw + tx of channel c's plane of images
    n0..n1, packed ``across`` to a row. One channel's plane at a time."""
    ch, h, w = x.shape[1], x.shape[2], x.shape[3]
    wp = TILE * tw + 2
    xp = np.zeros((TILE * th + 2) * wp, dtype=x.dtype)  # the gaps between the images stay zero
    xf, vf = x.ravel(), v.ravel()
    step = U(v.shape[2])
    for c in range(ch):
        for i in range(n1 - n0):
            src = U(((n0 + i) * ch + c) * h * w)
            first = U(_place(i, across, h, w, ph, pw, wp, ph, pw))
            for y in range(U(h)):
                row, d = src + y * U(w), first + y * U(wp)
                for k in range(U(w)):
                    xp[d + k] = xf[row + k]
        _patch_transforms(xp, U(wp), vf, U(c * POSITIONS) * step, step, th, tw)  # (by rows: 0.93-0.96x here)


@njit(fastmath=FAST, nogil=True, cache=True)
def _packed_output_tiles(m, bias, relu, out, n0, n1, across, ph, pw, th, tw):
    """out[n0 + i, o] = image i's part of the plane A^T m[o, :, t] A (+ bias[o]), its ReLU
    with ``relu``: the plane's tiles into a buffer, then each image's rows out of it. One
    output channel at a time."""
    co, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    h, w = oh + 2 - 2 * ph, ow + 2 - 2 * pw  # the input's size, which sets the images' places
    mf, of = m.ravel(), out.ravel()
    step, wb = U(m.shape[2]), U(TILE * tw)
    plane = np.empty(TILE * th * TILE * tw, dtype=m.dtype)
    zero = m.dtype.type(0)
    for o in range(co):
        add = bias[o] if bias.shape[0] else zero
        base = U(o * POSITIONS) * step
        for ty in range(U(th)):
            for tx in range(U(tw)):
                k0, k1, k2, k3, k4, k5 = _tile_columns(mf, base + ty * U(tw) + tx, step)
                d = U(TILE) * (ty * wb + tx)
                for a in range(TILE):
                    y0, y1, y2, y3 = _at(k0[a], k1[a], k2[a], k3[a], k4[a], k5[a])
                    plane[d], plane[d + U(1)], plane[d + U(2)], plane[d + U(3)] = y0 + add, y1 + add, y2 + add, y3 + add
                    d += wb
        for i in range(n1 - n0):
            dst = U(((n0 + i) * co + o) * oh * ow)
            first = U(_place(i, across, h, w, ph, pw, TILE * tw, 0, 0))
            for y in range(U(oh)):
                row, s = dst + y * U(ow), first + y * wb
                for k in range(U(ow)):
                    of[row + k] = _relu(plane[s + k], zero, relu)


@njit(nogil=True, cache=True)
def _packed_chunk_forward_in_numba(gemm, x, u, bias, relu, out, n0, n1, across, ph, pw, th, tw, stride):
    """A packed chunk's input tiles, 36 products (through ``gemm``, cblas.py) and output tiles."""
    ci, co, t = x.shape[1], u.shape[1], th * tw
    v = np.empty((ci, POSITIONS, stride), dtype=x.dtype)
    m = np.empty((co, POSITIONS, stride), dtype=x.dtype)
    _packed_input_tiles(x, v, n0, n1, across, ph, pw, th, tw)
    _forward_products(gemm, u, v, m, t, stride)
    _packed_output_tiles(m, bias, relu, out, n0, n1, across, ph, pw, th, tw)


def packed_chunk_forward(gemm, x, u, bias, relu, out, n0, n1, across, padding):
    """Images n0..n1 of out = A^T [U (.) V] A (+ bias, then the ReLU with ``relu``) through
    one plane; U is (36, C_out, C_in). The products by np.matmul where ``gemm``
    (cblas.gemm_address) is None."""
    (ph, pw), (h, w) = padding, x.shape[2:]
    th, tw = _grid_tiles(n1 - n0, across, h, w, ph, pw)
    t = th * tw
    if gemm is not None:
        _packed_chunk_forward_in_numba(gemm, x, u, bias, relu, out, n0, n1, across, ph, pw, th, tw, _stride(t))
        return
    v = np.empty((x.shape[1], POSITIONS, _stride(t)), dtype=x.dtype)
    m = np.empty((u.shape[1], POSITIONS, _stride(t)), dtype=x.dtype)
    _packed_input_tiles(x, v, n0, n1, across, ph, pw, th, tw)
    _forward_products_numpy(u, v, m, t)
    _packed_output_tiles(m, bias, relu, out, n0, n1, across, ph, pw, th, tw)


@njit(fastmath=FAST, nogil=True, cache=True)
def _packed_weight_tiles(x, g, n0, n1, across, ph, pw, th, tw, v, z):
    """dU's operands for a packed chunk, channel-minor (as winograd_tiles'): x's V over the
    zero-separated plane (v: (36, v_block)) and dY's Z (``_packed_grad_tiles``)."""
    ci, h, w = x.shape[1], x.shape[2], x.shape[3]
    wp = TILE * tw + 2
    xp = np.zeros(((TILE * th + 2) * wp, ci), dtype=x.dtype)
    xf = x.ravel()
    for i in range(n1 - n0):
        _rows_channels_innermost(xf, (n0 + i) * ci * h * w, h, w, 0, h, xp,
                                 _place(i, across, h, w, ph, pw, wp, ph, pw), wp)
    _patch_transforms_channel_minor(xp, wp, np.empty((36, ci), dtype=x.dtype), v.ravel(), v.shape[1], 0, th, tw)
    _packed_grad_tiles(g, n0, n1, across, h, w, ph, pw, th, tw, z)


@njit(fastmath=FAST, nogil=True, cache=True)
def _packed_grad_tiles(g, n0, n1, across, h, w, ph, pw, th, tw, z):
    """dY's Z = A dY A^T over a packed chunk's output plane (zero between the images),
    channel-minor (z: (36, z_block)); h x w the input's size, which sets the places."""
    co, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    gp = np.zeros((TILE * th * TILE * tw, co), dtype=g.dtype)
    gf = g.ravel()
    for i in range(n1 - n0):
        _rows_channels_innermost(gf, (n0 + i) * co * oh * ow, oh, ow, 0, oh, gp,
                                 _place(i, across, h, w, ph, pw, TILE * tw, 0, 0), TILE * tw)
    _grad_transforms_channel_minor(gp, TILE * tw, np.empty((24, co), dtype=g.dtype), z.ravel(), z.shape[1], 0, th, tw)


@njit(nogil=True, cache=True)
def _packed_backward_in_numba(gemm, x, g, u, gx, du, beta, n0, n1, across, ph, pw, th, tw, z_block, v_block,
                              need_w):
    """A packed chunk's backward from one Z per tile: dU's share (``need_w``) as in
    _packed_weight_products_in_numba, and dx by the transposed algorithm: dV = Z U, each
    tile's B dV B^T added onto its patch of the zero-separated plane, and each image's
    pixels copied out (an image's outputs read only its own pixels and the zeros beside
    it, so the patches add nothing of one image into another's)."""
    ci, h, w = x.shape[1], x.shape[2], x.shape[3]
    if need_w:  # v: x's V, then dV
        z, v = _packed_weight_products_in_numba(gemm, x, g, du, beta, n0, n1, across, ph, pw, th, tw, z_block,
                                                v_block)
    else:
        z = np.empty((POSITIONS, z_block), dtype=x.dtype)
        v = np.empty((POSITIONS, v_block), dtype=x.dtype)
        _packed_grad_tiles(g, n0, n1, across, h, w, ph, pw, th, tw, z)
    _input_grad_products(gemm, z, u, v, th * tw)
    wp = TILE * tw + 2
    xp = np.zeros(((TILE * th + 2) * wp, ci), dtype=x.dtype)
    _patch_adjoints_channel_minor(v.ravel(), v_block, 0, th, tw, np.empty((36, ci), dtype=x.dtype), xp, wp)
    gf = gx.ravel()
    for i in range(n1 - n0):
        _rows_channels_outermost(xp, _place(i, across, h, w, ph, pw, wp, ph, pw), wp, gf, (n0 + i) * ci * h * w, h, w)


def packed_backward(gemm, x, g, u, gx, du, beta, n0, n1, across, padding, need_w):
    """dx of the packed chunk n0..n1 into gx, by the transposed algorithm (U the forward's,
    (36, C_out, C_in)), and with ``need_w`` its share of dU into du (plus beta * du)."""
    (ph, pw), (h, w) = padding, x.shape[2:]
    th, tw = _grid_tiles(n1 - n0, across, h, w, ph, pw)
    t, ci, co = th * tw, x.shape[1], g.shape[1]
    _packed_backward_in_numba(gemm, x, g, u, gx, du, beta, n0, n1, across, ph, pw, th, tw,
                              _stride(t * co), _stride(t * ci), need_w)


@njit(nogil=True, cache=True)
def _packed_weight_products_in_numba(gemm, x, g, du, beta, n0, n1, across, ph, pw, th, tw, z_block, v_block):
    """du[xi] += Z[xi]^T @ V[xi] for a packed chunk (see conv_winograd's unpacked one).
    Returns (z, v), for dx by the transposed algorithm."""
    z = np.empty((POSITIONS, z_block), dtype=x.dtype)
    v = np.empty((POSITIONS, v_block), dtype=x.dtype)
    _packed_weight_tiles(x, g, n0, n1, across, ph, pw, th, tw, v, z)
    _weight_products(gemm, z, v, du, th * tw, beta)
    return z, v


def packed_weight_products(gemm, x, g, du, beta, n0, n1, across, padding):
    """du = the packed chunk n0..n1's share of dU = sum over tiles of dZ[xi] V[xi]^T, plus
    beta * du (0: a thread's first chunk, 1: its later ones)."""
    (ph, pw), (h, w) = padding, x.shape[2:]
    th, tw = _grid_tiles(n1 - n0, across, h, w, ph, pw)
    t, ci, co = th * tw, x.shape[1], g.shape[1]
    if gemm is not None:
        _packed_weight_products_in_numba(gemm, x, g, du, beta, n0, n1, across, ph, pw, th, tw,
                                         _stride(t * co), _stride(t * ci))
        return
    z = np.empty((POSITIONS, _stride(t * co)), dtype=x.dtype)
    v = np.empty((POSITIONS, _stride(t * ci)), dtype=x.dtype)
    _packed_weight_tiles(x, g, n0, n1, across, ph, pw, th, tw, v, z)
    _weight_products_numpy(z, v, du, t, beta)
