"""conv2d for 3x3 kernels, stride 1, on small maps: Winograd's F(4x4, 3x3).

A 4x4 block of outputs needs the 6x6 patch d of the input under it. Direct, it costs
16 x 9 = 144 multiplications per (input, output) channel pair; Winograd's minimal
filtering algorithm does it with 36, elementwise, in a transformed space:

    Y = A^T [ U (.) V ] A,     U = G w G^T  (6x6, once per weight),   V = B^T d B  (6x6)

with (.) the elementwise product and the constant matrices

    B^T = | 4  0 -5  0  1  0 |    G = |  1/4     0     0  |    A^T = | 1  1  1  1  1  0 |
          | 0 -4 -4  1  1  0 |        | -1/6  -1/6  -1/6  |          | 0  1 -1  2 -2  0 |
          | 0  4 -4 -1  1  0 |        | -1/6   1/6  -1/6  |          | 0  1  1  4  4  0 |
          | 0 -2 -1  2  1  0 |        |  1/24  1/12  1/6  |          | 0  1 -1  8 -8  1 |
          | 0  2 -1 -2  1  0 |        |  1/24 -1/12  1/6  |
          | 0  4  0 -5  0  1 |        |  0     0     1    |

Summed over input channels, each of the 36 positions xi of the 6x6 transform is a matrix
product over all tiles t of a chunk of images:

    M[xi] (C_out, tiles) = U[xi] (C_out, C_in) @ V[xi] (C_in, tiles)

so the arithmetic is 36 BLAS products with 36/144 = 1/4 of im2col's multiplications,
and the copies are a 6x6 transform per input tile (2.25x the input, against im2col's
9x) and per output tile. F(2x2, 3x3), with 4x4 tiles, saves 2.25x; measured per chunk
on one thread against it, forward: 1.12-1.15x at 14x14 (whose 4x4 tiles cover 16x16),
1.32-1.36x at 16x16, 1.43-1.55x at 8x8 and 4x4 (W2's, W4's, W7's and W8's layers).
The two gradients, by the chain rule through the same algebra:

* dx, by the transposed algorithm: from the forward's algebra, dV[xi] = U[xi]^T dZ[xi]
  (the dZ below, which dw makes anyway), and each tile's B dV B^T added onto its 6x6
  input patch (patches overlap by two), in chunks of whole images, packed on planes or
  not. In bands of tile rows (whose patches would be added from two chunks at once), as
  the conv of grad_out with the kernel turned 180 degrees and its channel axes swapped,
  padding 2 - p: the same forward, with grad_out's tiles transformed again and U of the
  turned kernel.
* dw: Z = U (.) V per tile and Y = A^T Z A give dZ = A dY A^T, so
  dU[o, c] = sum over tiles of dZ[o] (.) V[c]: 36 products dZ[xi] @ V[xi]^T, summed over
  the batch; then dw = G^T dU G (the adjoint of the filter transform). There V[xi]^T is
  written as a (tiles, C_in) matrix: OpenBLAS ran A @ B^T with B stored (C_in, tiles), both
  operands running along the tiles, at 50-75 GFLOP/s for these shapes on one thread, and
  A @ B with B stored (tiles, C_in) at 85-108 (measured). dZ[xi] is written as a
  (tiles, C_out) matrix too, so that its transform runs along the channels in vector
  lanes (``_grad_tiles_channel_minor``); the product reads it transposed, which BLAS
  runs as fast (measured: within 2% for 32-128 channels and 32-128 tiles).

The tiles' transforms are in winograd_tiles.py; on maps whose 4x4 tiles would reach well
past the edge (14x14: 16x16 covered), a chunk's images are packed on one plane with zeros
between them (conv_winograd_packed.py).

F(4x4, 3x3)'s transforms multiply by 2, 4, 5 and 8 (and G by 1/4, 1/6, 1/12, 1/24):
its float32 results differ from the direct sums by 2e-6 to 9e-6 of the largest output
(F(2x2, 3x3): 2e-7 to 5e-7, measured), well inside float32 training's noise; the tests
compare with the reference.
"""
from __future__ import annotations

import itertools

import numpy as np
from numba import njit

from .conv_batched import Chunks, _chunk_budget, _chunking, _run_chunks, bias_gradient
from . import cblas
from .conv_winograd_packed import packed_backward, packed_chunk_forward, packed_weight_products, packing
from .parallel import FAST, U, PerThread, _chunk, _parallel
from ..threads import get_num_threads
from .winograd_tiles import (POSITIONS, _forward_products, _forward_products_numpy, _grad_tiles_channel_minor,
                             _input_grad_products, _input_grad_tiles_channel_minor, _input_tiles,
                             _input_tiles_channel_minor, _output_tiles, _stride, _tiles, _weight_products,
                             _weight_products_numpy)


def _is_winograd(w_shape, stride, padding, dilation, groups):
    """3x3, stride 1, no dilation, one group, padding 0-2 (dx's padding 2 - p must not be negative)."""
    return (tuple(w_shape[2:]) == (3, 3) and stride == (1, 1) and dilation == (1, 1) and groups == 1
            and all(0 <= p <= 2 for p in padding))


# The filter transforms take one row of U at a time (an output channel o: its C_in
# kernels; dx's turned U: an input channel) and run each step of the transform along that
# row's C_in (or C_out) kernels at once, in vector lanes: the row's kernels are first
# gathered tap by tap into a small buffer. One (o, c) at a time, the same arithmetic in
# scalar registers took 2.1-3x as long (the adjoint 1.7-2.3x; measured for 32 to 128
# channels a side); written straight at u[xi, o, c], one (o, c) at a time, 36 rows
# C_out * C_in values apart share the L1 cache's sets and evict each other (as in
# _stride). They compute in float64 (G's sixths are not exact in float32) and round
# once, on the store. The rows are split among the threads from 64 x 64 up (twice U's
# size against the streaming threshold): 128 x 128 0.40 -> 0.28 ms and 64 x 64 0.105 ->
# 0.077 ms on two threads; for 32 x 32 the hand-off cost more than the work (0.028 ->
# 0.038 ms), measured before the lanes.
@njit(fastmath=FAST, nogil=True, inline="always")
def _g(k0, k1, k2):
    """G (k0, k1, k2)^T: the six values of the filter transform along one axis."""
    even, odd = k0 + k2, k1
    return (k0 / 4, -(even + odd) / 6, (odd - even) / 6,
            k0 / 24 + k1 / 12 + k2 / 6, k0 / 24 - k1 / 12 + k2 / 6, k2)


@njit(fastmath=FAST, nogil=True, inline="always")
def _gt(d0, d1, d2, d3, d4, d5):
    """G^T (d0, ..., d5)^T: its adjoint, six values back to three."""
    return (d0 / 4 - (d1 + d2) / 6 + (d3 + d4) / 24, (d2 - d1) / 6 + (d3 - d4) / 12,
            (d3 + d4 - d1 - d2) / 6 + d5)


@njit(fastmath=FAST, nogil=True, cache=True)
def _filter_tiles(w, turned, u, start, stop):
    """u[:, r, q] = G w[r, q] G^T (3x3 -> 6x6, flattened) for the rows r of U in [start,
    stop) and all their columns q; or, ``turned``, of the kernel turned 180 degrees with
    its channel axes swapped (dx's): u[:, c, o] from w[o, c] read backwards."""
    cols = w.shape[0] if turned else w.shape[1]
    ci = w.shape[1]
    wf, uf = w.ravel(), u.ravel()
    n, plane = U(cols), U(u.shape[1] * u.shape[2])
    taps = np.empty(9 * cols, dtype=np.float64)  # tap k of column q's kernel at k * cols + q
    t = np.empty(18 * cols, dtype=np.float64)    # G w: value a of kernel column j at (6j + a) * cols + q
    for r in range(start, stop):
        for q in range(cols):
            # tap (i, j) is wf[p + s * (3i + j)]: forwards from w[r, q], or backwards from w[q, r]'s last
            p, s = ((q * ci + r) * 9 + 8, -1) if turned else ((r * ci + q) * 9, 1)
            for k in range(9):
                taps[k * cols + q] = wf[p + s * k]
        for j in range(3):  # t = G w, column j of every kernel of the row
            k0, k1, k2 = U(j) * n, U(3 + j) * n, U(6 + j) * n
            for q in range(n):
                e = _g(taps[k0 + q], taps[k1 + q], taps[k2 + q])
                for a in range(6):
                    t[U(6 * j + a) * n + q] = e[a]
        row = U(r * cols)
        for a in range(6):  # u = t G^T, row a: positions 6a .. 6a + 5
            t0, t1, t2 = U(a) * n, U(6 + a) * n, U(12 + a) * n
            d = U(6 * a) * plane + row
            for q in range(n):
                e = _g(t[t0 + q], t[t1 + q], t[t2 + q])
                for b in range(6):
                    uf[d + U(b) * plane + q] = e[b]


@njit(fastmath=FAST, nogil=True, cache=True)
def _filter_tiles_adjoint(du_parts, dw, start, stop):
    """dw[o, c] = G^T du[:, o, c] G (6x6 -> 3x3), the adjoint of _filter_tiles, along the
    C_in kernels of each output channel o in [start, stop) at once; du is the sum of
    du_parts (threads, 36, C_out, C_in), the threads' sums over their images, added up
    here one row o at a time (in vector lanes, into a small buffer): a pass of its own
    over them (numpy's +=, on one thread) took 0.18-0.29 ms for a 128 -> 128 conv's two
    2.4 MB sums, caches warm and flushed (measured)."""
    ci, parts = dw.shape[1], du_parts.shape[0]
    dwf, df = dw.ravel(), du_parts.ravel()
    n, plane = U(ci), U(du_parts.shape[2] * du_parts.shape[3])
    size = U(POSITIONS) * plane
    row_sum = np.empty(POSITIONS * ci, dtype=np.float64)  # du[xi, o, c] at xi * ci + c
    t = np.empty(18 * ci, dtype=np.float64)   # G^T du: value a of column b at (3b + a) * ci + c
    out = np.empty(9 * ci, dtype=np.float64)  # dw[o, c] tap k at k * ci + c
    for o in range(start, stop):
        row = U(o * ci)
        for xi in range(U(POSITIONS)):
            first, d = xi * plane + row, xi * n
            for c in range(n):
                row_sum[d + c] = df[first + c]
            for k in range(U(1), U(parts)):
                for c in range(n):
                    row_sum[d + c] += df[k * size + first + c]
        for b in range(6):  # t = G^T du, column b
            for c in range(n):
                e = _gt(row_sum[U(b) * n + c], row_sum[U(6 + b) * n + c], row_sum[U(12 + b) * n + c],
                        row_sum[U(18 + b) * n + c], row_sum[U(24 + b) * n + c], row_sum[U(30 + b) * n + c])
                for a in range(3):
                    t[U(3 * b + a) * n + c] = e[a]
        for a in range(3):  # dw = t G, row a
            for c in range(n):
                e = _gt(t[U(a) * n + c], t[U(3 + a) * n + c], t[U(6 + a) * n + c],
                        t[U(9 + a) * n + c], t[U(12 + a) * n + c], t[U(15 + a) * n + c])
                for j in range(3):
                    out[U(3 * a + j) * n + c] = e[j]
        for c in range(ci):
            p = (o * ci + c) * 9
            for k in range(9):
                dwf[p + k] = out[k * ci + c]


def _filter_transform(w, turned=False):
    """U = G w G^T for every (o, c), as (36, C_out, C_in); ``turned``: for the kernel turned
    180 degrees with its channel axes swapped, (36, C_in, C_out), without copying it."""
    rows, cols = (w.shape[1], w.shape[0]) if turned else w.shape[:2]
    u = np.empty((POSITIONS, rows, cols), dtype=w.dtype)
    _parallel(_filter_tiles, rows, 2 * u.size, np.ascontiguousarray(w), turned, u, streaming=True)
    return u


def _turned(w):
    """U of the kernel turned 180 degrees with its channel axes swapped: dx's forward.
    (F(2x2, 3x3) could permute U's rows instead; F(4x4, 3x3)'s G has no such symmetry.)"""
    return _filter_transform(w, turned=True)


def _chunk_forward(gemm, x, u, bias, relu, out, n0, n1, ty0, ty1, ph, pw, tw):
    """Images n0..n1, tile rows ty0..ty1, of out = A^T [U (.) V] A: their input tiles V, the
    36 products U[xi] @ V[xi], and the output tiles (+ bias, then the ReLU with ``relu``)
    into out. In one numba call when ``gemm``, the address of the BLAS's C function, is at
    hand (``cblas.gemm_address``: no GIL taken between the steps); else the products
    through np.matmul."""
    ci, co, t = x.shape[1], u.shape[1], (n1 - n0) * (ty1 - ty0) * tw
    if gemm is not None:
        _chunk_forward_in_numba(gemm, x, u, bias, relu, out, n0, n1, ty0, ty1, ph, pw, tw, _stride(t))
        return
    v = np.empty((ci, POSITIONS, _stride(t)), dtype=x.dtype)
    m = np.empty((co, POSITIONS, _stride(t)), dtype=x.dtype)
    _input_tiles(x, v, n0, ph, pw, ty0, ty1, tw, 0, (n1 - n0) * ci)
    _forward_products_numpy(u, v, m, t)
    _output_tiles(m, bias, relu, out, n0, ty0, ty1, tw, 0, (n1 - n0) * co)


@njit(nogil=True, cache=True)
def _chunk_forward_in_numba(gemm, x, u, bias, relu, out, n0, n1, ty0, ty1, ph, pw, tw, stride):
    """_chunk_forward's three steps; the products through ``gemm`` (cblas.product): position
    xi's matrices are V[:, xi, :t] and M[:, xi, :t], rows 36 * stride values apart."""
    ci, co, t = x.shape[1], u.shape[1], (n1 - n0) * (ty1 - ty0) * tw
    v = np.empty((ci, POSITIONS, stride), dtype=x.dtype)
    m = np.empty((co, POSITIONS, stride), dtype=x.dtype)
    _input_tiles(x, v, n0, ph, pw, ty0, ty1, tw, 0, (n1 - n0) * ci)
    _forward_products(gemm, u, v, m, t, stride)
    _output_tiles(m, bias, relu, out, n0, ty0, ty1, tw, 0, (n1 - n0) * co)


@njit(nogil=True, cache=True)
def _chunk_weight_products_in_numba(gemm, x, g, du, beta, n0, n1, ty0, ty1, ph, pw, tw, z_block, v_block):
    """du[xi] = (A dY A^T)[xi] @ V[xi]^T + beta * du[xi] for images n0..n1, tile rows
    ty0..ty1 (see _backward_tiles), the products through ``gemm``: Z[xi] and V[xi] are
    the (tiles, C_out) and (tiles, C_in) matrices at z[xi] and v[xi], so the product is
    Z[xi]^T @ V[xi]. Returns (z, v), for dx by the transposed algorithm."""
    z = np.empty((POSITIONS, z_block), dtype=x.dtype)
    v = np.empty((POSITIONS, v_block), dtype=x.dtype)
    _input_tiles_channel_minor(x, v.ravel(), v_block, n0, ph, pw, ty0, ty1, tw, n1 - n0)
    _grad_tiles_channel_minor(g, z.ravel(), z_block, n0, ty0, ty1, tw, n1 - n0)
    _weight_products(gemm, z, v, du, (n1 - n0) * (ty1 - ty0) * tw, beta)
    return z, v


@njit(nogil=True, cache=True)
def _chunk_backward_in_numba(gemm, x, g, u, gx, du, beta, n0, n1, th, ph, pw, tw, z_block, v_block, need_w):
    """Whole images n0..n1 of the backward from one Z = A dY A^T per tile: dU's share as in
    _chunk_weight_products_in_numba (``need_w``), and dx by the transposed algorithm, dV[xi]
    = Z[xi] @ U[xi], each tile's B dV B^T added onto its input patch (``_backward_tiles``)."""
    if need_w:  # v: x's V, then dV
        z, v = _chunk_weight_products_in_numba(gemm, x, g, du, beta, n0, n1, 0, th, ph, pw, tw, z_block, v_block)
    else:
        z = np.empty((POSITIONS, z_block), dtype=x.dtype)
        v = np.empty((POSITIONS, v_block), dtype=x.dtype)
        _grad_tiles_channel_minor(g, z.ravel(), z_block, n0, 0, th, tw, n1 - n0)
    _input_grad_products(gemm, z, u, v, (n1 - n0) * th * tw)
    _input_grad_tiles_channel_minor(v.ravel(), v_block, gx, n0, ph, pw, th, tw, n1 - n0)


# dx by the transposed algorithm (True) or always as the forward on grad_out with U turned
# (False). Measured on an Intel Xeon with AVX-512, the backward alone (dx, dw, db) against
# the turned forward, one thread (two), medians of 55 alternated calls: 64 x 128->128 at
# 4x4 1.32x (1.32x), 64 x 64->64 at 8x8 1.21x (1.19x), 64 x 32->32 at 16x16 1.15x (1.15x),
# 16 x 48->48 at 16x16 1.18x (1.14x), 16 x 32->32 at 32x32 1.11x (1.08x); packed on
# planes (conv_winograd_packed.py), 64 x 32->64 at 14x14 1.25x (1.25x), 64 x 16->32 1.18x
# (1.19x), 16 x 32->32 1.21x (1.18x). In bands (8 x 48->16 at 128x128, one thread, adding
# into a zeroed dx) 0.93x, 8 x 16->16 at 128x128 0.99x: not there. The turned U
# and grad_out's tiles in the channel-major layout (one (image, channel) plane at a time,
# scalar) cost more than B dV B^T along the channels: at 4x4 with 128 channels, 0.33 and
# 0.44 ms of the turned forward's 1.8 ms on one thread. Steps alternated in one process
# (20 rounds, load 0.4-0.7): W8 1.054x (1.054x), W7 1.019x (1.028x), W5 1.009x (1.002x),
# W4 1.004x (1.004x; its 14x14 layer is packed). With the packed planes too (30 rounds,
# load 1.0): W4 1.059x (1.054x), W2 32->64 at 14x14 fwd+bwd 1.169x (1.156x), W7 1.034x
# (1.034x), W8 1.058x (1.070x).
TRANSPOSED_DX = True
MIN_CHUNK_TILES = 32  # tiles per chunk: the columns of its 36 products (see _plan)


def _plan(n, rows, th, tw, itemsize, flops_per_image, out_rows=0):
    """(chunks, bands): the batch cut into chunks of whole images (bands 1) as
    conv_batched's, with at least MIN_CHUNK_TILES tiles per chunk where the batch has them
    (a product of 8 columns ran at 61 GFLOP/s, 128 x 128 channels, one thread; of 16 at
    81, of 32 at 93: measured); or, when one image's transformed tiles (``rows`` values
    each) outgrow conv_batched's chunk budget, each image cut into ``bands`` bands of tile
    rows, a chunk each. At 128x128 with 16 + 48 channels an image's tiles take 9 MB: whole,
    they left the cache between the transforms and the products.

    ``out_rows``: the products' outputs, per tile, that a chunk of whole images holds as
    well (the forward's M). Counted in the chunks of whole images, not in the bands: W4's
    16 -> 32 layer at 14x14 on two threads went from chunks of 16 images (1.8 MB of V
    and M) to 8, and its forward from 24.5 to 20.5 us per image inside training steps;
    in W5's 128x128 layers twice the bands cost 1-2% (measured, steps alternated in
    one process)."""
    per_image = rows * th * tw * itemsize
    budget = _chunk_budget(per_image)
    if per_image > budget and th > 1:
        bands = min(th, -(-per_image // budget))
        return n * bands, bands
    chunks = _chunking(n, rows + out_rows, th * tw, itemsize, flops_per_image)
    return max(1, min(chunks, n * th * tw // MIN_CHUNK_TILES)), 1


def _piece(k, n, chunks, bands, th):
    """(first image, last image + 1, first tile row, last tile row + 1) of chunk k, for a
    grid of th tile rows."""
    if bands == 1:
        return (*_chunk(k, n, chunks), 0, th)
    image, band = divmod(k, bands)
    return image, image + 1, th * band // bands, th * (band + 1) // bands


def _chunk_images(k, n, chunks, bands, th, packed):
    """(first image, last + 1) of chunk k: of ``packed`` (images per chunk, across) planes,
    or of _piece's whole images or band (bands > 1: its one image)."""
    if packed:
        return k * packed[0], min(n, (k + 1) * packed[0])
    return _piece(k, n, chunks, bands, th)[:2]


def _forward_chunks(x, u, b, padding, relu=False):
    """(out, Chunks): out = A^T [U (.) V] A per output tile (+ b, then its ReLU with
    ``relu``), u (36, C_out, C_in), written once every chunk has run. Chunks of whole
    images (or bands of tile rows), or of images packed on one plane where that takes
    fewer tiles (14x14 maps: conv_winograd_packed.py)."""
    n, ci, h, wd = x.shape
    co = u.shape[1]
    (ph, pw) = padding
    oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
    th, tw = _tiles(oh, ow)
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    bias = np.zeros(0, dtype=x.dtype) if b is None else b
    gemm = cblas.gemm_address(x.dtype)
    packed = packing(n, h, wd, ph, pw, POSITIONS * (ci + co) * x.itemsize)
    if packed:  # chunks of images on one plane each (conv_winograd_packed.py)
        images, across = packed
        chunks, bands = -(-n // images), 1
    else:  # chunks as conv_batched's, their transformed tiles (36 values each) in place of im2col's columns
        chunks, bands = _plan(n, POSITIONS * ci, th, tw, x.itemsize, 2 * POSITIONS * co * ci * th * tw,
                              out_rows=POSITIONS * co)

    def images_of(k):
        return _chunk_images(k, n, chunks, bands, th, packed)

    def run(k):
        if packed:
            packed_chunk_forward(gemm, x, u, bias, relu, out, *images_of(k), across, padding)
        else:
            _chunk_forward(gemm, x, u, bias, relu, out, *_piece(k, n, chunks, bands, th), ph, pw, tw)

    return out, Chunks(chunks, bands, run, images_of)


def _forward_tiles(x, u, b, padding, relu=False):
    """out = A^T [U (.) V] A (+ b, its ReLU with ``relu``): every chunk of _forward_chunks."""
    out, plan = _forward_chunks(x, u, b, padding, relu)

    def task(start, stop):
        for k in range(start, stop):
            plan.run(k)

    _run_chunks(task, plan.count, x.shape[0] * plan.bands)
    return out


def conv2d_forward_winograd(x, w, b, padding, saved=None, relu=False):
    """The forward (with ``relu``, its ReLU as the output tiles are written); U is left in
    ``saved`` (when given a dict) for the backward's dx. The
    backward transforms x's tiles again for dw rather than keep the forward's V (2.25x
    the size of x): V written to memory in the forward and read back in the backward cost
    more than the transform in cache (measured with F(2x2, 3x3), training steps
    alternated in one process: W8 1.005-1.08x on two threads and 1.05x on one, W7
    0.98-1.05x and 1.01x)."""
    return _forward_tiles(x, _saved_filter_transform(w, saved), b, padding, relu)


def _saved_filter_transform(w, saved):
    """U of w, left in ``saved`` (when given a dict) for the backward's dx: steps alternated
    in one process (30 rounds), against the backward transforming w again, two threads
    (one): W8 1.016x (1.015x), W7 1.020x (1.003x)."""
    u = _filter_transform(w)
    if saved is not None:
        saved["winograd_u"] = u
    return u


def _backward_chunks(x, grad_out, w, padding, need_x, need_w, u=None):
    """(gx, Chunks, du_parts): chunk k writes its part of dx into gx (None without
    ``need_x``) and adds its share of dU to its thread's sum; once every chunk has run,
    du_parts() returns those sums (None without ``need_w``).

    A chunk's share of dU is the products of its Z = A dY A^T and x's V, summed per
    thread; its dx comes from the same Z (the transposed algorithm, ``TRANSPOSED_DX``)
    when the chunk holds whole images (packed or not), else it is the forward's three
    steps on its grad_out (padding 2 - p, U turned). One pass instead of one for each: a
    hand-off to the threads fewer, and each chunk of grad_out read while in cache. Cut
    in bands, band j of an image is band j of both tile grids (dx's and dY's). Packed
    (14x14 maps, conv_winograd_packed.py), a chunk's images lie on one plane for both:
    dx's input, grad_out, sits on the same grid as x."""
    n, ci, h, wd = x.shape
    co, oh, ow = grad_out.shape[1:]
    (ph, pw) = padding
    th, tw = _tiles(oh, ow)  # dY's tiles (for dU); dx's output tiles are x's: _tiles(h, wd)
    xth, xtw = _tiles(h, wd)
    gx = np.empty(x.shape, dtype=x.dtype) if need_x else None
    no_bias = np.zeros(0, dtype=x.dtype)
    packed = packing(n, h, wd, ph, pw, POSITIONS * (ci + co) * x.itemsize)  # dx's grid is dw's
    if packed:
        images, across = packed
        chunks, bands = -(-n // images), 1
    else:
        chunks, bands = _plan(n, POSITIONS * (ci + co), min(th, xth), max(tw, xtw), x.itemsize,
                              2 * POSITIONS * co * ci * (need_x * xth * xtw + need_w * th * tw))
    gemm = cblas.gemm_address(x.dtype)
    transposed = TRANSPOSED_DX and need_x and bands == 1 and gemm is not None
    if need_x and not transposed:  # dx as the forward on grad_out, with the turned kernel's U
        u = _turned(w)
    elif need_x and u is None:  # the forward's U, when the forward left none
        u = _filter_transform(w)
    # dU, a sum per thread: slices of one array, each with the beta of its thread's next
    # products: 0 for the first chunk, which writes the sum (no zeroing first: 0.35 ms of a
    # W8 step on two threads went to zeroing them), 1 for the later ones, which add to it
    sums = np.empty((get_num_threads(), POSITIONS, co, ci), dtype=x.dtype) if need_w else None
    taken = itertools.count()
    partials = PerThread(lambda: [sums[next(taken)], 0.0])
    no_sum = np.empty((POSITIONS, 1, 1), dtype=x.dtype)

    def images_of(k):
        return _chunk_images(k, n, chunks, bands, th, packed)

    def run(k):
        if packed:
            n0, n1 = images_of(k)
            if transposed:
                du = partials.mine() if need_w else [no_sum, 0.0]
                packed_backward(gemm, x, grad_out, u, gx, du[0], du[1], n0, n1, across, padding, need_w)
                du[1] = 1.0
                return
            if need_x:
                packed_chunk_forward(gemm, grad_out, u, no_bias, False, gx, n0, n1, across, (2 - ph, 2 - pw))
            if need_w:
                du = partials.mine()
                packed_weight_products(gemm, x, grad_out, du[0], du[1], n0, n1, across, padding)
                du[1] = 1.0
            return
        if transposed:  # dx and dU's share from one Z per tile
            n0, n1 = _chunk(k, n, chunks)
            t = (n1 - n0) * th * tw
            du = partials.mine() if need_w else [no_sum, 0.0]
            _chunk_backward_in_numba(gemm, x, grad_out, u, gx, du[0], du[1], n0, n1, th, ph, pw, tw,
                                     _stride(t * co), _stride(t * ci), need_w)
            du[1] = 1.0
            return
        if need_x:  # dx: the forward on grad_out (padding 2 - p) with U turned
            _chunk_forward(gemm, grad_out, u, no_bias, False, gx, *_piece(k, n, chunks, bands, xth),
                           2 - ph, 2 - pw, xtw)
        if need_w:  # dU += (A dY A^T)[xi] @ V[xi]^T, V[xi]^T a (tiles, C_in) matrix
            n0, n1, ty0, ty1 = _piece(k, n, chunks, bands, th)
            t = (n1 - n0) * (ty1 - ty0) * tw
            du = partials.mine()
            if gemm is not None:
                _chunk_weight_products_in_numba(gemm, x, grad_out, du[0], du[1], n0, n1, ty0, ty1,
                                                ph, pw, tw, _stride(t * co), _stride(t * ci))
            else:
                z = np.empty((POSITIONS, _stride(t * co)), dtype=x.dtype)
                v = np.empty((POSITIONS, _stride(t * ci)), dtype=x.dtype)
                _input_tiles_channel_minor(x, v.ravel(), v.shape[1], n0, ph, pw, ty0, ty1, tw, n1 - n0)
                _grad_tiles_channel_minor(grad_out, z.ravel(), z.shape[1], n0, ty0, ty1, tw, n1 - n0)
                _weight_products_numpy(z, v, du[0], t, du[1])
            du[1] = 1.0

    def du_parts():
        return sums[:len(partials.values())] if need_w else None

    return gx, Chunks(chunks, bands, run, images_of), du_parts


def _backward_tiles(x, grad_out, w, padding, need_x, need_w, need_b=False, u=None):
    """(dx or None, dU's parts or None, db or None): every chunk of _backward_chunks.

    db (grad_out summed per channel) is one more task after the chunks: the thread that
    runs out of chunks first takes it, while the other finishes its last chunk, instead
    of a serial pass after the job. W4's 16 -> 32 layer at 14x14, its backward alone
    (alternated with the serial pass in one process): 26-57 us less on two threads
    (1.02-1.035x), the same on one."""
    gx, plan, du_parts = _backward_chunks(x, grad_out, w, padding, need_x, need_w, u)
    db = []

    def task(start, stop):
        for k in range(start, stop):
            if k == plan.count:  # the last task: db
                db.append(bias_gradient(grad_out))
            else:
                plan.run(k)

    _run_chunks(task, plan.count + need_b, x.shape[0] * plan.bands)
    return gx, du_parts(), (db[0] if need_b else None)


def conv2d_grad_input_winograd(grad_out, w, padding):
    """dx: the forward on grad_out with the kernel turned 180 degrees and its channel axes
    swapped, padding 2 - p."""
    return _forward_tiles(grad_out, _turned(w), None, (2 - padding[0], 2 - padding[1]))


def _weight_gradient(du_parts, w_shape, dtype):
    """dw = G^T dU G, dU the sum of du_parts (one per thread)."""
    gw = np.empty(w_shape, dtype=dtype)
    _parallel(_filter_tiles_adjoint, w_shape[0], 2 * du_parts.size, du_parts, gw, streaming=True)
    return gw


def conv2d_grad_weight_winograd(x, grad_out, w_shape, padding):
    """dw = G^T dU G, dU[xi] = sum over the batch's tiles of (A dY A^T)[xi] @ V[xi]^T."""
    _, du, _ = _backward_tiles(x, grad_out, None, padding, False, True)
    return _weight_gradient(du, w_shape, x.dtype)


def conv2d_backward_winograd(x, w, grad_out, padding, need_x, need_w, need_b=True, saved=None):
    """(dx or None, dw or None, db or None); ``saved``: the forward's dict, whose U dx then
    takes rather than transform w again."""
    u = saved.get("winograd_u") if saved is not None else None
    gx, du, gb = _backward_tiles(x, grad_out, w, padding, need_x, need_w, need_b, u)
    return gx, (_weight_gradient(du, w.shape, x.dtype) if need_w else None), gb
