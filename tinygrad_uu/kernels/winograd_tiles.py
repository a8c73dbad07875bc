"""The tiles of Winograd's F(4x4, 3x3) (see conv_winograd.py for the algebra): the transforms
along one axis, B^T, A^T and A, the loops that apply them to every tile of a plane or
a chunk of images, into the matrices of the 36 products and back, and the products.

Two layouts of a transformed chunk: channel-major ((C, 36, tiles), the forward's V and M,
one (image, channel) plane at a time in scalar registers) and channel-minor (position
xi's (tiles, C) matrix, the weight gradient's V and dZ and the input gradient's dV, each
step of a tile's transform a loop along the channels in vector lanes).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import cblas
from .elementwise import _relu
from .parallel import FAST, U

TILE = 4  # outputs per side of a tile
PATCH = 6  # inputs per side of its patch: TILE + 2
POSITIONS = PATCH * PATCH  # of the transform: 36 products per chunk


def _tiles(oh, ow):
    """Tiles down and across that cover an oh x ow output."""
    return -(-oh // TILE), -(-ow // TILE)


# The transforms index flat views with unsigned (np.uint64) offsets: through 2-D indexing
# or a slice per row, numba checks every index for a negative value (and counts a
# reference per slice), and the loops ran 2-3x slower (measured). Each works on one whole
# tile per loop iteration, its values in registers: a transform along one axis is a
# function of six (or four) values returning a tuple, applied to the columns and then
# to the rows; LLVM unrolls the short loops over a tuple's entries. Through small
# scratch arrays instead, the input and output transforms took 2-2.5x as long (measured).


def _stride(values):
    """Values between two of the 36 positions' rows (or matrices) in a transformed chunk:
    ``values``, padded when it is a multiple of 64. Rows a multiple of 256 bytes apart
    share the L1 cache's sets, and many of them written at once evict each other: the
    input transform of 64 x 32 channels at 16x16 took 4.8 ms unpadded and 0.9 ms padded
    (measured with F(2x2, 3x3)'s 16 rows); the channel-minor one, 3.9 and 0.9 ms."""
    return values + 16 if values % 64 == 0 else values


@njit(fastmath=FAST, nogil=True, inline="always")
def _bt(d0, d1, d2, d3, d4, d5):
    """B^T (d0, ..., d5): the input transform along one axis, six values to six (the
    multiplications by 2, 4 and 5 written as sums: numba would compute an integer times
    a float32 in float64)."""
    a, b = d4 - d2, d3 - d1
    e, f = d1 + d2, d1 - d2
    b2, e2, f2 = b + b, e + e, f + f
    return ((d0 + d0 + d0 + d0 + d4) - (d2 + d2 + d2 + d2 + d2), (d3 + d4) - (e2 + e2),
            (f2 + f2) + (d4 - d3), b2 + a, a - b2, (d1 + d1 + d1 + d1 + d5) - (d3 + d3 + d3 + d3 + d3))


@njit(fastmath=FAST, nogil=True, inline="always")
def _at(m0, m1, m2, m3, m4, m5):
    """A^T (m0, ..., m5): the output transform along one axis, six values to four."""
    s, d = m1 + m2, m1 - m2
    t, e = m3 + m4, m3 - m4
    t2, e2 = t + t, e + e
    e4 = e2 + e2
    return m0 + s + t, d + e2, s + t2 + t2, d + e4 + e4 + m5


@njit(fastmath=FAST, nogil=True, inline="always")
def _a(y0, y1, y2, y3):
    """A (y0, ..., y3): the adjoint of _at, four values to six (dZ = A dY A^T)."""
    s, d = y0 + y2, y1 + y3
    t, e = y1 + y1, y3 + y3
    t4, e4 = y2 + y2 + y2 + y2, e + e + e + e
    return y0, s + d, s - d, y0 + t + t4 + e4, y0 - t + t4 - e4, y3


@njit(fastmath=FAST, nogil=True, inline="always")
def _b(e0, e1, e2, e3, e4, e5):
    """B (e0, ..., e5): the adjoint of _bt, six values to six (dx's patches, B dV B^T)."""
    s, d = e1 + e2, e1 - e2
    p, q = e3 + e4, e3 - e4
    d2, q2, f2 = d + d, q + q, e5 + e5
    return ((e0 + e0) + (e0 + e0), (f2 + f2) - (d2 + d2) - q2,
            -((e0 + e0 + e0 + e0 + e0) + (s + s + s + s) + p), (d + q2) - (e5 + e5 + e5 + e5 + e5),
            e0 + s + p, e5)


@njit(fastmath=FAST, nogil=True, inline="always")
def _patch_transforms(xp, wp, vf, base, step, rows, tw):
    """vf[base + xi * step + t] = (B^T d B)[xi] for the 6x6 patches d of the zero-padded plane
    xp (rows wp apart) under its rows x tw tiles, t = ty * tw + tx: tile (ty, tx) starts at
    row and column 4 ty, 4 tx of xp."""
    for ty in range(U(rows)):
        for tx in range(U(tw)):
            p = U(TILE) * (ty * wp + tx)
            # r = B^T d, column by column (r's rows are k0[a], ..., k5[a])
            k0 = _bt(xp[p], xp[p + wp], xp[p + U(2) * wp], xp[p + U(3) * wp], xp[p + U(4) * wp], xp[p + U(5) * wp])
            p += U(1)
            k1 = _bt(xp[p], xp[p + wp], xp[p + U(2) * wp], xp[p + U(3) * wp], xp[p + U(4) * wp], xp[p + U(5) * wp])
            p += U(1)
            k2 = _bt(xp[p], xp[p + wp], xp[p + U(2) * wp], xp[p + U(3) * wp], xp[p + U(4) * wp], xp[p + U(5) * wp])
            p += U(1)
            k3 = _bt(xp[p], xp[p + wp], xp[p + U(2) * wp], xp[p + U(3) * wp], xp[p + U(4) * wp], xp[p + U(5) * wp])
            p += U(1)
            k4 = _bt(xp[p], xp[p + wp], xp[p + U(2) * wp], xp[p + U(3) * wp], xp[p + U(4) * wp], xp[p + U(5) * wp])
            p += U(1)
            k5 = _bt(xp[p], xp[p + wp], xp[p + U(2) * wp], xp[p + U(3) * wp], xp[p + U(4) * wp], xp[p + U(5) * wp])
            q = base + ty * U(tw) + tx
            for a in range(6):  # v = r B, row by row
                e0, e1, e2, e3, e4, e5 = _bt(k0[a], k1[a], k2[a], k3[a], k4[a], k5[a])
                vf[q], vf[q + step], vf[q + U(2) * step] = e0, e1, e2
                vf[q + U(3) * step], vf[q + U(4) * step], vf[q + U(5) * step] = e3, e4, e5
                q += U(6) * step


# Tiles in a row from which _input_tiles takes _patch_transforms_by_rows. Alone, one thread,
# against _patch_transforms (8 images): 48 channels at 128x128 (32 tiles a row) 1.34-1.49x,
# 16 at 128x128 1.35-1.37x, 32 at 64x64 (16 tiles) 1.27x, 16 at 48x48 (12 tiles) 1.09x; at
# 32x32 (8 tiles) 0.99-1.02x, at 16x16 0.71-0.95x. W5's steps with it, processes
# alternated: 1.041x on two threads, 1.043x on one; W7 1.003x and 0.97-1.01x. Not packed
# planes (conv_winograd_packed.py, 15 tiles a row at 14x14): there 0.93-0.96x alone.
BY_ROWS_MIN_TILES = 12


@njit(fastmath=FAST, nogil=True, inline="always")
def _patch_transforms_by_rows(xp, wp, vf, base, step, rows, tw, cols):
    """_patch_transforms in two passes, the second of which LLVM vectorises across the
    tiles of a row: r = B^T d down the six rows under a tile row, column 4 q + k into
    cols[(6 k + a) * (tw + 1) + q] (the columns by their place in a tile), then v = r B
    along each row a, tile tx taking columns 4 tx .. 4 tx + 5 (the last two the next
    tile's first two). ``cols`` holds 24 * (tw + 1) values; xp must hold two values past
    its last row (the pass down reads columns 4 tw + 2 and + 3, which no tile uses)."""
    n = U(tw + 1)
    for ty in range(U(rows)):
        d = xp[U(TILE) * ty * wp:]
        for q in range(n):
            p = U(TILE) * q
            for k in range(4):
                r0, r1, r2, r3, r4, r5 = _bt(d[p + U(k)], d[p + U(k) + wp], d[p + U(k) + U(2) * wp],
                                             d[p + U(k) + U(3) * wp], d[p + U(k) + U(4) * wp],
                                             d[p + U(k) + U(5) * wp])
                c = U(6 * k) * n + q
                cols[c], cols[c + n], cols[c + U(2) * n] = r0, r1, r2
                cols[c + U(3) * n], cols[c + U(4) * n], cols[c + U(5) * n] = r3, r4, r5
        for a in range(6):
            c0, c1 = cols[U(a) * n:], cols[U(6 + a) * n:]
            c2, c3 = cols[U(12 + a) * n:], cols[U(18 + a) * n:]
            out = vf[base + ty * U(tw) + U(6 * a) * step:]
            for tx in range(U(tw)):
                e0, e1, e2, e3, e4, e5 = _bt(c0[tx], c1[tx], c2[tx], c3[tx], c0[tx + U(1)], c1[tx + U(1)])
                out[tx], out[step + tx], out[U(2) * step + tx] = e0, e1, e2
                out[U(3) * step + tx], out[U(4) * step + tx], out[U(5) * step + tx] = e3, e4, e5


@njit(fastmath=FAST, nogil=True, cache=True)
def _input_tiles(x, v, n0, ph, pw, ty0, ty1, tw, start, stop):
    """v[c, :, t] = B^T d B, d the 6x6 patch of x[n0 + i, c] at (4*ty - ph, 4*tx - pw) (zero
    outside the image), for the tile rows ty0 <= ty < ty1, t = (i*(ty1 - ty0) + ty - ty0)*tw
    + tx. A task is one (image i, channel c); the rows under the tiles are first copied into
    a zero-padded buffer, so that no tile needs a bounds check."""
    ch, h, w = x.shape[1], x.shape[2], x.shape[3]
    rows, wp = ty1 - ty0, U(TILE * tw + 2)
    xp = np.zeros((TILE * rows + 2) * (TILE * tw + 2) + 2, dtype=x.dtype)  # its border stays zero
    cols = np.empty(24 * (tw + 1), dtype=x.dtype)
    xf, vf = x.ravel(), v.ravel()
    step = U(v.shape[2])  # from one of the 36 positions to the next
    y0, y1 = max(0, TILE * ty0 - ph), min(h, TILE * ty1 + 2 - ph)  # the image rows under the tiles
    for task in range(start, stop):
        i, c = task // ch, task % ch
        src = U(((n0 + i) * ch + c) * h * w)
        for y in range(y0, y1):
            row, d = src + U(y * w), U(y + ph - TILE * ty0) * wp + U(pw)
            for k in range(U(w)):
                xp[d + k] = xf[row + k]
        if tw >= BY_ROWS_MIN_TILES:
            _patch_transforms_by_rows(xp, wp, vf, U(c * POSITIONS) * step + U(i * rows * tw), step, rows, tw, cols)
        else:
            _patch_transforms(xp, wp, vf, U(c * POSITIONS) * step + U(i * rows * tw), step, rows, tw)


@njit(nogil=True, inline="always")
def _rows_channels_innermost(af, image, h, w, y0, y1, buf, first, wp):
    """buf[first + y * wp + k, c] = image's plane c at (y, k), for the rows y0 <= y < y1 of
    the (C, h, w) image starting at af[image]: the rows under a chunk's tiles with the
    channels innermost (for the channel-minor transforms below)."""
    ch = buf.shape[1]
    for y in range(y0, y1):
        for k in range(w):
            row, p = buf[first + y * wp + k], image + y * w + k
            for c in range(ch):
                row[c] = af[p + c * h * w]


@njit(nogil=True, inline="always")
def _rows_channels_outermost(buf, first, wp, af, image, h, w):
    """The inverse of _rows_channels_innermost: the (C, h, w) image at af[image] gets, in
    plane c at (y, k), buf[first + y * wp + k, c]."""
    ch = buf.shape[1]
    for c in range(ch):
        for y in range(h):
            row, src = image + (c * h + y) * w, first + y * wp
            for k in range(w):
                af[row + k] = buf[src + k, c]


@njit(fastmath=FAST, nogil=True, inline="always")
def _patch_transforms_channel_minor(xp, wp, r, vf, block, first, rows, tw):
    """The V of _patch_transforms with the channels innermost: tile (ty, tx) of the (pixel, C)
    plane xp (rows wp pixels apart) is row first + ty * tw + tx of position xi's (tiles, C)
    matrix at vf[xi * block:]. r is a (36, C) scratch for B^T d."""
    ch = xp.shape[1]
    for ty in range(rows):
        for tx in range(tw):
            corner = TILE * (ty * wp + tx)
            for k in range(6):  # r = B^T d, column k of the patch at a time
                d0, d1, d2 = xp[corner + k], xp[corner + wp + k], xp[corner + 2 * wp + k]
                d3, d4, d5 = xp[corner + 3 * wp + k], xp[corner + 4 * wp + k], xp[corner + 5 * wp + k]
                e0, e1, e2, e3, e4, e5 = r[6 * k], r[6 * k + 1], r[6 * k + 2], r[6 * k + 3], r[6 * k + 4], r[6 * k + 5]
                for c in range(ch):
                    e0[c], e1[c], e2[c], e3[c], e4[c], e5[c] = _bt(d0[c], d1[c], d2[c], d3[c], d4[c], d5[c])
            q = (first + ty * tw + tx) * ch
            for a in range(6):  # v = r B, row a of the 6x6 at a time, into positions 6a..6a+5
                s0, s1, s2, s3, s4, s5 = r[a], r[6 + a], r[12 + a], r[18 + a], r[24 + a], r[30 + a]
                p = 6 * a * block + q
                v0, v1, v2 = vf[p:p + ch], vf[p + block:p + block + ch], vf[p + 2 * block:p + 2 * block + ch]
                v3, v4 = vf[p + 3 * block:p + 3 * block + ch], vf[p + 4 * block:p + 4 * block + ch]
                v5 = vf[p + 5 * block:p + 5 * block + ch]
                for c in range(ch):
                    v0[c], v1[c], v2[c], v3[c], v4[c], v5[c] = _bt(s0[c], s1[c], s2[c], s3[c], s4[c], s5[c])


@njit(fastmath=FAST, nogil=True, cache=True)
def _input_tiles_channel_minor(x, vf, block, n0, ph, pw, ty0, ty1, tw, images):
    """The V of _input_tiles laid out for dU's products: position xi's values are the
    (tiles, C_in) matrix at vf[xi * block:], row t holding tile t's C_in values. The rows
    under an image's tiles are first copied into a zero-padded buffer with the channels
    innermost; then every step of a tile's transform is a loop along the channels, which
    LLVM vectorises (1.2-1.7x faster than one (tile, channel) at a time, measured)."""
    ch, h, w = x.shape[1], x.shape[2], x.shape[3]
    rows, wp = ty1 - ty0, TILE * tw + 2
    xp = np.zeros(((TILE * rows + 2) * wp, ch), dtype=x.dtype)  # (pixel, C); its border stays zero
    r = np.empty((36, ch), dtype=x.dtype)  # B^T d of one tile: row 6k + a is column k's value a
    xf = x.ravel()
    y0, y1 = max(0, TILE * ty0 - ph), min(h, TILE * ty1 + 2 - ph)
    for i in range(images):
        _rows_channels_innermost(xf, (n0 + i) * ch * h * w, h, w, y0, y1, xp, (ph - TILE * ty0) * wp + pw, wp)
        _patch_transforms_channel_minor(xp, wp, r, vf, block, i * rows * tw, rows, tw)


@njit(fastmath=FAST, nogil=True, inline="always")
def _patch_adjoints_channel_minor(vf, block, first, rows, tw, r, xp, wp):
    """The adjoint of _patch_transforms_channel_minor: xp's 6x6 patch under tile (ty, tx) +=
    B dV B^T, dV the tile's 36 values, row first + ty * tw + tx of position xi's (tiles, C)
    matrix at vf[xi * block:]. Neighbouring patches overlap by two rows or columns, and
    add there. r is a (36, C) scratch for dV B^T."""
    ch = xp.shape[1]
    for ty in range(rows):
        for tx in range(tw):
            q = (first + ty * tw + tx) * ch
            for a in range(6):  # r = dV B^T, row a of dV at a time: r[6a + j] is its value j
                p = 6 * a * block + q
                v0, v1, v2 = vf[p:p + ch], vf[p + block:p + block + ch], vf[p + 2 * block:p + 2 * block + ch]
                v3, v4 = vf[p + 3 * block:p + 3 * block + ch], vf[p + 4 * block:p + 4 * block + ch]
                v5 = vf[p + 5 * block:p + 5 * block + ch]
                e0, e1, e2, e3, e4, e5 = r[6 * a], r[6 * a + 1], r[6 * a + 2], r[6 * a + 3], r[6 * a + 4], r[6 * a + 5]
                for c in range(ch):
                    e0[c], e1[c], e2[c], e3[c], e4[c], e5[c] = _b(v0[c], v1[c], v2[c], v3[c], v4[c], v5[c])
            corner = TILE * (ty * wp + tx)
            for j in range(6):  # the patch's column j = B (column j of r), added in place
                s0, s1, s2, s3, s4, s5 = r[j], r[6 + j], r[12 + j], r[18 + j], r[24 + j], r[30 + j]
                d0, d1, d2 = xp[corner + j], xp[corner + wp + j], xp[corner + 2 * wp + j]
                d3, d4, d5 = xp[corner + 3 * wp + j], xp[corner + 4 * wp + j], xp[corner + 5 * wp + j]
                for c in range(ch):
                    y0, y1, y2, y3, y4, y5 = _b(s0[c], s1[c], s2[c], s3[c], s4[c], s5[c])
                    d0[c] += y0
                    d1[c] += y1
                    d2[c] += y2
                    d3[c] += y3
                    d4[c] += y4
                    d5[c] += y5


@njit(fastmath=FAST, nogil=True, cache=True)
def _input_grad_tiles_channel_minor(vf, block, gx, n0, ph, pw, th, tw, images):
    """gx[n0 + i] for whole images from dV, laid out as _input_tiles_channel_minor's V
    (position xi's (tiles, C_in) matrix at vf[xi * block:], th x tw tiles an image): each
    tile's B dV B^T added onto its 6x6 input patch at (4 ty - ph, 4 tx - pw), the adjoint
    of that V's transform. An image's patches are summed in a zeroed buffer with the
    channels innermost (each step a loop along the channels, in vector lanes); then the
    pixels inside the image are copied out to gx's planes (the padding's are dropped)."""
    ch, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    wp = TILE * tw + 2
    xp = np.empty(((TILE * th + 2) * wp, ch), dtype=gx.dtype)  # (pixel, C_in)
    r = np.empty((36, ch), dtype=gx.dtype)
    gf = gx.ravel()
    for i in range(images):
        xp[:] = 0
        _patch_adjoints_channel_minor(vf, block, i * th * tw, th, tw, r, xp, wp)
        _rows_channels_outermost(xp, ph * wp + pw, wp, gf, (n0 + i) * ch * h * w, h, w)


@njit(fastmath=FAST, nogil=True, inline="always")
def _tile_columns(mf, p, step):
    """r = A^T m for the tile whose 36 values are mf[p + xi * step]: its six columns, four
    values each (r's rows are k0[a], ..., k5[a]); the tile's output row a is
    _at(k0[a], ..., k5[a])."""
    s6 = U(6) * step
    k0 = _at(mf[p], mf[p + s6], mf[p + U(2) * s6], mf[p + U(3) * s6], mf[p + U(4) * s6], mf[p + U(5) * s6])
    p += step
    k1 = _at(mf[p], mf[p + s6], mf[p + U(2) * s6], mf[p + U(3) * s6], mf[p + U(4) * s6], mf[p + U(5) * s6])
    p += step
    k2 = _at(mf[p], mf[p + s6], mf[p + U(2) * s6], mf[p + U(3) * s6], mf[p + U(4) * s6], mf[p + U(5) * s6])
    p += step
    k3 = _at(mf[p], mf[p + s6], mf[p + U(2) * s6], mf[p + U(3) * s6], mf[p + U(4) * s6], mf[p + U(5) * s6])
    p += step
    k4 = _at(mf[p], mf[p + s6], mf[p + U(2) * s6], mf[p + U(3) * s6], mf[p + U(4) * s6], mf[p + U(5) * s6])
    p += step
    k5 = _at(mf[p], mf[p + s6], mf[p + U(2) * s6], mf[p + U(3) * s6], mf[p + U(4) * s6], mf[p + U(5) * s6])
    return k0, k1, k2, k3, k4, k5


@njit(fastmath=FAST, nogil=True, inline="always")
def _relu_span(f, lo, hi):
    """f[lo:hi] = max(f[lo:hi], 0) in place (elementwise._relu)."""
    span, zero = f[lo:hi], f.dtype.type(0)  # a view from 0, so that LLVM vectorises
    for k in range(hi - lo):
        span[k] = _relu(span[k], zero, True)


# Tiles in a row from which _output_tiles takes _output_tiles_by_rows. Alone, one thread,
# 8 images: 16 channels at 128x128 (32 tiles a row) 1.29-1.39x (with the ReLU 1.30-1.66x),
# 48 channels 1.57-1.85x; 32 at 64x64 (16 tiles) 1.02-1.07x; 0.63-0.71x at 32x32. W5's
# steps, processes alternated (8 and 6 rounds, load 0.8-1.1): 1.086x on two threads and
# 1.104x on one, faster in every round; from 16 tiles instead, a further 1.003x.
OUTPUT_BY_ROWS_MIN_TILES = 24


@njit(fastmath=FAST, nogil=True, inline="always")
def _tile_row_outputs(mf, first, step, tw, down, across):
    """The tw tiles A^T M A of one tile row (tile tx's 36 values at mf[first + xi * step + tx]),
    in two passes LLVM vectorises across the tiles: down[(6 a + j) * tw + tx] = (A^T M)[a, j],
    then across[(4 a + b) * tw + tx] = (A^T M A)[a, b]."""
    n = U(tw)
    for j in range(6):
        m0, m1, m2 = mf[first + U(j) * step:], mf[first + U(6 + j) * step:], mf[first + U(12 + j) * step:]
        m3, m4, m5 = mf[first + U(18 + j) * step:], mf[first + U(24 + j) * step:], mf[first + U(30 + j) * step:]
        d0, d1, d2, d3 = down[U(j) * n:], down[U(6 + j) * n:], down[U(12 + j) * n:], down[U(18 + j) * n:]
        for tx in range(n):
            d0[tx], d1[tx], d2[tx], d3[tx] = _at(m0[tx], m1[tx], m2[tx], m3[tx], m4[tx], m5[tx])
    for a in range(4):
        k0, k1, k2 = down[U(6 * a) * n:], down[U(6 * a + 1) * n:], down[U(6 * a + 2) * n:]
        k3, k4, k5 = down[U(6 * a + 3) * n:], down[U(6 * a + 4) * n:], down[U(6 * a + 5) * n:]
        y0, y1 = across[U(4 * a) * n:], across[U(4 * a + 1) * n:]
        y2, y3 = across[U(4 * a + 2) * n:], across[U(4 * a + 3) * n:]
        for tx in range(n):
            y0[tx], y1[tx], y2[tx], y3[tx] = _at(k0[tx], k1[tx], k2[tx], k3[tx], k4[tx], k5[tx])


@njit(fastmath=FAST, nogil=True, cache=True)
def _output_tiles_by_rows(m, bias, relu, out, n0, ty0, ty1, tw, start, stop):
    """_output_tiles with each tile row's transforms by _tile_row_outputs, then its values
    copied into the output rows (+ bias, and the ReLU with ``relu``)."""
    co, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    mf, of = m.ravel(), out.ravel()
    step, zero = U(m.shape[2]), m.dtype.type(0)
    down = np.empty(24 * tw, dtype=m.dtype)
    across = np.empty(16 * tw, dtype=m.dtype)
    for task in range(start, stop):
        i, o = task // co, task % co
        add = bias[o] if bias.shape[0] else zero
        base = U(o * POSITIONS) * step + U(i * (ty1 - ty0) * tw)
        plane = U(((n0 + i) * co + o) * oh * ow)
        for ty in range(ty0, ty1):
            _tile_row_outputs(mf, base + U((ty - ty0) * tw), step, tw, down, across)
            whole = U(ow // TILE)  # tiles whose four columns are all inside the output
            for a in range(min(TILE, oh - TILE * ty)):
                row = of[plane + U((TILE * ty + a) * ow):]
                y0, y1 = across[U(4 * a) * U(tw):], across[U(4 * a + 1) * U(tw):]
                y2, y3 = across[U(4 * a + 2) * U(tw):], across[U(4 * a + 3) * U(tw):]
                for tx in range(whole):
                    p = U(TILE) * tx
                    row[p], row[p + U(1)] = _relu(y0[tx] + add, zero, relu), _relu(y1[tx] + add, zero, relu)
                    row[p + U(2)], row[p + U(3)] = _relu(y2[tx] + add, zero, relu), _relu(y3[tx] + add, zero, relu)
                for k in range(TILE * whole, ow):
                    row[k] = _relu(across[(U(4 * a) + U(k % TILE)) * U(tw) + whole] + add, zero, relu)


@njit(fastmath=FAST, nogil=True, cache=True)
def _output_tiles(m, bias, relu, out, n0, ty0, ty1, tw, start, stop):
    """out[n0 + i, o] tile (ty, tx) = A^T m[o, :, t] A (+ bias[o]) for the tile rows
    ty0 <= ty < ty1, the parts inside the output; with ``relu`` their ReLU, while they are
    in cache (in the tile loop it cost 2-3x more). A task is one (image i, output channel o).
    Rows of OUTPUT_BY_ROWS_MIN_TILES tiles and more go to _output_tiles_by_rows."""
    if tw >= OUTPUT_BY_ROWS_MIN_TILES:
        _output_tiles_by_rows(m, bias, relu, out, n0, ty0, ty1, tw, start, stop)
        return
    co, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    mf, of = m.ravel(), out.ravel()
    step = U(m.shape[2])
    for task in range(start, stop):
        i, o = task // co, task % co
        add = bias[o] if bias.shape[0] else m.dtype.type(0)
        base = U(o * POSITIONS) * step + U(i * (ty1 - ty0) * tw)
        plane = ((n0 + i) * co + o) * oh * ow
        for ty in range(ty0, ty1):
            rows = min(TILE, oh - TILE * ty)
            for tx in range(tw):
                cols = min(TILE, ow - TILE * tx)
                k0, k1, k2, k3, k4, k5 = _tile_columns(mf, base + U((ty - ty0) * tw + tx), step)
                for a in range(rows):  # y = r A, row by row, the rows and columns inside the output
                    y0, y1, y2, y3 = _at(k0[a], k1[a], k2[a], k3[a], k4[a], k5[a])
                    d = U(plane + (TILE * ty + a) * ow + TILE * tx)
                    if cols == TILE:
                        of[d], of[d + U(1)], of[d + U(2)], of[d + U(3)] = y0 + add, y1 + add, y2 + add, y3 + add
                    else:
                        for b, value in enumerate((y0, y1, y2, y3)):
                            if b < cols:
                                of[d + U(b)] = value + add
        if relu:
            _relu_span(of, plane + TILE * ty0 * ow, plane + min(oh, TILE * ty1) * ow)


@njit(fastmath=FAST, nogil=True, inline="always")
def _grad_transforms_channel_minor(gp, wp, r, zf, block, first, rows, tw):
    """Z = A dY A^T for the rows x tw tiles dY of the (pixel, C_out) plane gp (rows wp pixels
    apart), tile (ty, tx) into row first + ty * tw + tx of position xi's (tiles, C_out)
    matrix at zf[xi * block:]. r is a (24, C_out) scratch for A dY."""
    co = gp.shape[1]
    for ty in range(rows):
        for tx in range(tw):
            corner = TILE * (ty * wp + tx)
            for k in range(4):  # r = A dY, column k of the tile at a time
                d0, d1, d2, d3 = gp[corner + k], gp[corner + wp + k], gp[corner + 2 * wp + k], gp[corner + 3 * wp + k]
                e0, e1, e2, e3, e4, e5 = r[6 * k], r[6 * k + 1], r[6 * k + 2], r[6 * k + 3], r[6 * k + 4], r[6 * k + 5]
                for c in range(co):
                    e0[c], e1[c], e2[c], e3[c], e4[c], e5[c] = _a(d0[c], d1[c], d2[c], d3[c])
            q = (first + ty * tw + tx) * co
            for a in range(6):  # z = r A^T, row a of the 6x6 at a time, into positions 6a..6a+5
                s0, s1, s2, s3 = r[a], r[6 + a], r[12 + a], r[18 + a]
                p = 6 * a * block + q
                z0, z1, z2 = zf[p:p + co], zf[p + block:p + block + co], zf[p + 2 * block:p + 2 * block + co]
                z3, z4 = zf[p + 3 * block:p + 3 * block + co], zf[p + 4 * block:p + 4 * block + co]
                z5 = zf[p + 5 * block:p + 5 * block + co]
                for c in range(co):
                    z0[c], z1[c], z2[c], z3[c], z4[c], z5[c] = _a(s0[c], s1[c], s2[c], s3[c])


@njit(fastmath=FAST, nogil=True, cache=True)
def _grad_tiles_channel_minor(g, zf, block, n0, ty0, ty1, tw, images):
    """Z = A dY A^T for every 4x4 tile dY of g[n0 + i] (zero past its edge), tile rows
    ty0..ty1, laid out as _input_tiles_channel_minor's V: position xi's values are the
    (tiles, C_out) matrix at zf[xi * block:]. The rows under the tiles are first copied into
    a buffer with the channels innermost; then each step of a tile's transform is a loop
    along the channels, in vector lanes. Against one (image, channel) at a time in
    scalar registers, dw alone (this, V and the products), one thread (two): 64 x 32->64 at
    14x14 1.17x (1.14x), 64 x 128->128 at 4x4 1.30x (1.21x), 64 x 64->64 at 8x8 1.12x
    (1.08x), 8 x 16->16 at 128x128 1.03x (1.06x), 8 x 32->32 at 64x64 0.98x (1.02x), on
    an Intel Xeon with AVX-512. (On an AMD EPYC, earlier, the transform alone measured
    1.1-2.1x at 64 and 128 channels but 0.7-0.8x at 32, and was not kept then.)"""
    co, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    rows, wp = ty1 - ty0, TILE * tw
    gp = np.zeros((TILE * rows * wp, co), dtype=g.dtype)  # (pixel, C_out); past the plane's edge it stays zero
    r = np.empty((24, co), dtype=g.dtype)  # A dY of one tile: row 6k + a is column k's value a
    gf = g.ravel()
    y0, y1 = TILE * ty0, min(oh, TILE * ty1)
    for i in range(images):
        _rows_channels_innermost(gf, (n0 + i) * co * oh * ow, oh, ow, y0, y1, gp, -y0 * wp, wp)
        _grad_transforms_channel_minor(gp, wp, r, zf, block, i * rows * tw, rows, tw)


# The 36 products of a chunk, through ``gemm`` (the BLAS's C function, cblas.py) from
# numba, or through np.matmul from Python where no such function was found.
@njit(nogil=True, inline="always")
def _forward_products(gemm, u, v, m, t, stride):
    """M[:, xi, :t] = U[xi] @ V[:, xi, :t]: V (C_in, 36, stride) and M (C_out, 36, stride),
    position xi's rows 36 * stride values apart."""
    ci, co = v.shape[0], m.shape[0]
    row, size, one, zero = POSITIONS * stride, v.itemsize, v.dtype.type(1), v.dtype.type(0)
    for xi in range(POSITIONS):
        cblas.product(gemm, co, t, ci, one, u[xi].ctypes.data, ci, v.ctypes.data + xi * stride * size, row,
                      zero, m.ctypes.data + xi * stride * size, row)


@njit(nogil=True, inline="always")
def _input_grad_products(gemm, z, u, dv, t):
    """dV[xi] = Z[xi] @ U[xi]: Z[xi] and dV[xi] the (tiles, C_out) and (tiles, C_in) matrices at
    z[xi] and dv[xi], t tiles; U (36, C_out, C_in) the forward's filter transform."""
    co, ci, one, zero = u.shape[1], u.shape[2], dv.dtype.type(1), dv.dtype.type(0)
    for xi in range(POSITIONS):
        cblas.product(gemm, t, ci, co, one, z[xi].ctypes.data, co, u[xi].ctypes.data, ci,
                      zero, dv[xi].ctypes.data, ci)


def _forward_products_numpy(u, v, m, t):
    """_forward_products by np.matmul."""
    np.matmul(u, v[:, :, :t].transpose(1, 0, 2), out=m[:, :, :t].transpose(1, 0, 2))


@njit(nogil=True, inline="always")
def _weight_products(gemm, z, v, du, t, beta):
    """du[xi] = Z[xi]^T @ V[xi] + beta * du[xi]: Z[xi] and V[xi] the (tiles, C_out) and
    (tiles, C_in) matrices at z[xi] and v[xi], t tiles; beta 0 writes du (a thread's first
    chunk), 1 adds to it."""
    co, ci, one = du.shape[1], du.shape[2], v.dtype.type(1)
    for xi in range(POSITIONS):
        cblas.product_transposed_a(gemm, co, ci, t, one, z[xi].ctypes.data, co, v[xi].ctypes.data, ci,
                                   v.dtype.type(beta), du[xi].ctypes.data, ci)


def _weight_products_numpy(z, v, du, t, beta):
    """_weight_products by np.matmul."""
    co, ci = du.shape[1], du.shape[2]
    products = np.matmul(z[:, :t * co].reshape(POSITIONS, t, co).transpose(0, 2, 1),
                         v[:, :t * ci].reshape(POSITIONS, t, ci))
    if beta:
        du += products
    else:
        du[...] = products
