"""conv2d for 3x3 kernels, stride 1, on small maps: Winograd's F(2x2, 3x3).

A 2x2 block of outputs needs the 4x4 patch d of the input under it. Direct, it costs
4 x 9 = 36 multiplications per (input, output) channel pair; Winograd's minimal
filtering algorithm does it with 16, elementwise, in a transformed space:

    Y = A^T [ U (.) V ] A,     U = G w G^T  (4x4, once per weight),   V = B^T d B  (4x4)

with (.) the elementwise product and the constant matrices

    B^T = | 1  0 -1  0 |     G = | 1    0    0  |     A^T = | 1  1  1  0 |
          | 0  1  1  0 |         | 1/2  1/2  1/2 |           | 0  1 -1 -1 |
          | 0 -1  1  0 |         | 1/2 -1/2  1/2 |
          | 0  1  0 -1 |         | 0    0    1  |

Summed over input channels, each of the 16 positions xi of the 4x4 transform is a matrix
product over all tiles t of a chunk of images:

    M[xi] (C_out, tiles) = U[xi] (C_out, C_in) @ V[xi] (C_in, tiles)

so the arithmetic is 16 BLAS products with 16/36 = 1/2.25 of im2col's multiplications,
and the copies are a 4x4 transform per input tile (4x the input, against im2col's 9x)
and per output tile. The two gradients, by the chain rule through the same algebra:

* dx: a 3x3 stride-1 conv's input gradient is the conv of grad_out with the kernel
  turned 180 degrees and its channel axes swapped, padding 2 - p: the same forward.
* dw: Z = U (.) V per tile and Y = A^T Z A give dZ = A dY A^T, so
  dU[o, c] = sum over tiles of dZ[o] (.) V[c]: 16 products dZ[xi] @ V[xi]^T, summed over
  the batch; then dw = G^T dU G (the adjoint of the filter transform). There V[xi]^T is
  written as a (tiles, C_in) matrix: OpenBLAS ran A @ B^T with B stored (C_in, tiles), both
  operands running along the tiles, at 50-75 GFLOP/s for these shapes on one thread, and
  A @ B with B stored (tiles, C_in) at 85-108 (measured).

F(2x2, 3x3)'s transforms only add, subtract and halve: its float32 results differ from
the direct sums by a few units of rounding (tests compare with the reference).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .conv_batched import _chunk, _chunking, _run_chunks, bias_gradient
from .parallel import FAST, PerThread


def _is_winograd(w_shape, stride, padding, dilation, groups):
    """3x3, stride 1, no dilation, one group, padding 0-2 (dx's padding 2 - p must not be negative)."""
    return (tuple(w_shape[2:]) == (3, 3) and stride == (1, 1) and dilation == (1, 1) and groups == 1
            and all(0 <= p <= 2 for p in padding))


def _tiles(oh, ow):
    return (oh + 1) // 2, (ow + 1) // 2


# The transforms index flat views with unsigned (np.uint64) offsets: through 2-D indexing
# or a slice per row, numba checks every index for a negative value (and counts a
# reference per slice), and the loops ran 2-3x slower (measured). Each works on one whole
# tile per loop iteration, with its 16 (or 4) values in registers: 1.5-3.7x faster for
# the input and 1.2-1.5x for the output than in passes over rows of tiles (measured).
U = np.uint64


def _stride(values):
    """Values between two of the 16 positions' rows (or matrices) in a transformed chunk:
    ``values``, padded when it is a multiple of 64. Rows a multiple of 256 bytes apart
    share the L1 cache's sets, and 16 of them written at once evict each other: the input
    transform of 64 x 32 channels at 16x16 (4,096 tiles) took 4.8 ms unpadded and 0.9 ms
    padded; the channel-minor one, 3.9 and 0.9 ms for 32 images."""
    return values + 16 if values % 64 == 0 else values


@njit(fastmath=FAST, nogil=True, cache=True)
def _input_tiles(x, v, n0, ph, pw, th, tw, start, stop):
    """v[c, :, t] = B^T d B, d the 4x4 patch of x[n0 + i, c] at (2*ty - ph, 2*tx - pw) (zero
    outside the image), t = (i*th + ty)*tw + tx. A task is one (image i, channel c); the
    plane is first copied into a zero-padded buffer, so that no tile needs a bounds check."""
    ch, h, w = x.shape[1], x.shape[2], x.shape[3]
    wp = U(2 * tw + 2)
    xp = np.zeros((2 * th + 2) * (2 * tw + 2), dtype=x.dtype)  # its border stays zero: only the image is copied in
    xf, vf = x.ravel(), v.ravel()
    step = U(v.shape[2])  # from one of the 16 positions to the next
    s2, s3, s4 = U(2) * step, U(3) * step, U(4) * step
    for task in range(start, stop):
        i, c = task // ch, task % ch
        src = U(((n0 + i) * ch + c) * h * w)
        for y in range(U(h)):
            row, d = src + y * U(w), (y + U(ph)) * wp + U(pw)
            for k in range(U(w)):
                xp[d + k] = xf[row + k]
        base = U(c * 16) * step + U(i * th * tw)
        for ty in range(U(th)):
            for tx in range(U(tw)):
                p = U(2) * (ty * wp + tx)
                d00, d01, d02, d03 = xp[p], xp[p + U(1)], xp[p + U(2)], xp[p + U(3)]
                p += wp
                d10, d11, d12, d13 = xp[p], xp[p + U(1)], xp[p + U(2)], xp[p + U(3)]
                p += wp
                d20, d21, d22, d23 = xp[p], xp[p + U(1)], xp[p + U(2)], xp[p + U(3)]
                p += wp
                d30, d31, d32, d33 = xp[p], xp[p + U(1)], xp[p + U(2)], xp[p + U(3)]
                # r = B^T d, row by row: r0 = d0 - d2, r1 = d1 + d2, r2 = d2 - d1, r3 = d1 - d3
                r00, r01, r02, r03 = d00 - d20, d01 - d21, d02 - d22, d03 - d23
                r10, r11, r12, r13 = d10 + d20, d11 + d21, d12 + d22, d13 + d23
                r20, r21, r22, r23 = d20 - d10, d21 - d11, d22 - d12, d23 - d13
                r30, r31, r32, r33 = d10 - d30, d11 - d31, d12 - d32, d13 - d33
                q = base + ty * U(tw) + tx  # v = r B: the same four sums along each row
                vf[q], vf[q + step], vf[q + s2], vf[q + s3] = r00 - r02, r01 + r02, r02 - r01, r01 - r03
                q += s4
                vf[q], vf[q + step], vf[q + s2], vf[q + s3] = r10 - r12, r11 + r12, r12 - r11, r11 - r13
                q += s4
                vf[q], vf[q + step], vf[q + s2], vf[q + s3] = r20 - r22, r21 + r22, r22 - r21, r21 - r23
                q += s4
                vf[q], vf[q + step], vf[q + s2], vf[q + s3] = r30 - r32, r31 + r32, r32 - r31, r31 - r33


@njit(fastmath=FAST, nogil=True, cache=True)
def _input_tiles_channel_minor(x, vf, block, n0, ph, pw, th, tw, images):
    """The V of _input_tiles laid out for dU's products: position xi's values are the
    (tiles, C_in) matrix at vf[xi * block:], row t holding tile t's C_in values. Each image
    is first copied into a zero-padded buffer with its channels innermost, so that the
    inner loop runs along the channels and stores to 16 contiguous rows."""
    ch, h, w = x.shape[1], x.shape[2], x.shape[3]
    wp, C = 2 * tw + 2, U(ch)
    xp = np.zeros((2 * th + 2) * wp * ch, dtype=x.dtype)  # (rows, columns, C); its border stays zero
    xf = x.ravel()
    s = U(block)
    s2, s3, s4, row = U(2) * s, U(3) * s, U(4) * s, U(wp) * C
    for i in range(images):
        src = U((n0 + i) * ch * h * w)
        for y in range(U(h)):
            for k in range(U(w)):
                d, p = ((y + U(ph)) * U(wp) + k + U(pw)) * C, src + y * U(w) + k
                for c in range(C):
                    xp[d + c] = xf[p + c * U(h * w)]
        for ty in range(th):
            for tx in range(tw):
                corner = U(2 * (ty * wp + tx)) * C
                q0 = U((i * th + ty) * tw + tx) * C
                for c in range(C):
                    p = corner + c
                    d00, d01, d02, d03 = xp[p], xp[p + C], xp[p + U(2) * C], xp[p + U(3) * C]
                    p += row
                    d10, d11, d12, d13 = xp[p], xp[p + C], xp[p + U(2) * C], xp[p + U(3) * C]
                    p += row
                    d20, d21, d22, d23 = xp[p], xp[p + C], xp[p + U(2) * C], xp[p + U(3) * C]
                    p += row
                    d30, d31, d32, d33 = xp[p], xp[p + C], xp[p + U(2) * C], xp[p + U(3) * C]
                    r00, r01, r02, r03 = d00 - d20, d01 - d21, d02 - d22, d03 - d23  # B^T d, as in _input_tiles
                    r10, r11, r12, r13 = d10 + d20, d11 + d21, d12 + d22, d13 + d23
                    r20, r21, r22, r23 = d20 - d10, d21 - d11, d22 - d12, d23 - d13
                    r30, r31, r32, r33 = d10 - d30, d11 - d31, d12 - d32, d13 - d33
                    q = q0 + c
                    vf[q], vf[q + s], vf[q + s2], vf[q + s3] = r00 - r02, r01 + r02, r02 - r01, r01 - r03
                    q += s4
                    vf[q], vf[q + s], vf[q + s2], vf[q + s3] = r10 - r12, r11 + r12, r12 - r11, r11 - r13
                    q += s4
                    vf[q], vf[q + s], vf[q + s2], vf[q + s3] = r20 - r22, r21 + r22, r22 - r21, r21 - r23
                    q += s4
                    vf[q], vf[q + s], vf[q + s2], vf[q + s3] = r30 - r32, r31 + r32, r32 - r31, r31 - r33


@njit(fastmath=FAST, nogil=True, cache=True)
def _output_tiles(m, bias, out, n0, th, tw, start, stop):
    """out[n0 + i, o] tile (ty, tx) = A^T m[o, :, t] A (+ bias[o]), the parts inside the
    output. A task is one (image i, output channel o): first the 2x2 outputs of all its
    tiles (one loop over the tiles), then their rows into place."""
    co, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    nt = th * tw
    y = np.empty((4, nt), dtype=m.dtype)
    mf, of = m.ravel(), out.ravel()
    step = U(m.shape[2])
    for task in range(start, stop):
        i, o = task // co, task % co
        add = bias[o] if bias.shape[0] else m.dtype.type(0)
        base = U(o * 16) * step + U(i * nt)
        for t in range(U(nt)):
            p = base + t
            m0, m1, m2, m3 = mf[p], mf[p + step], mf[p + U(2) * step], mf[p + U(3) * step]
            m4, m5, m6, m7 = mf[p + U(4) * step], mf[p + U(5) * step], mf[p + U(6) * step], mf[p + U(7) * step]
            m8, m9, m10, m11 = mf[p + U(8) * step], mf[p + U(9) * step], mf[p + U(10) * step], mf[p + U(11) * step]
            m12, m13, m14, m15 = mf[p + U(12) * step], mf[p + U(13) * step], mf[p + U(14) * step], mf[p + U(15) * step]
            s0, s1, s2, s3 = m0 + m4 + m8, m1 + m5 + m9, m2 + m6 + m10, m3 + m7 + m11  # row 0 of A^T m
            r0, r1, r2, r3 = m4 - m8 - m12, m5 - m9 - m13, m6 - m10 - m14, m7 - m11 - m15  # row 1
            y[0, t], y[1, t] = s0 + s1 + s2 + add, s1 - s2 - s3 + add  # (A^T m) A
            y[2, t], y[3, t] = r0 + r1 + r2 + add, r1 - r2 - r3 + add
        plane = U(((n0 + i) * co + o) * oh * ow)
        for ty in range(th):
            for a in range(2):
                row = 2 * ty + a
                if row >= oh:
                    break
                d, left, right = plane + U(row * ow), y[2 * a], y[2 * a + 1]
                t0 = ty * tw
                for tx in range(ow // 2):
                    of[d + U(2 * tx)] = left[t0 + tx]
                    of[d + U(2 * tx + 1)] = right[t0 + tx]
                if ow % 2:
                    of[d + U(ow - 1)] = left[t0 + tw - 1]


@njit(fastmath=FAST, nogil=True, cache=True)
def _grad_tiles(g, z, n0, th, tw, start, stop):
    """z[o, :, t] = A dY A^T, dY the 2x2 tile (ty, tx) of g[n0 + i, o] (zero past its edge).
    A task is one (image i, output channel o)."""
    co, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    wp = U(2 * tw)
    gp = np.zeros(4 * th * tw, dtype=g.dtype)  # zero past the edge: only the plane is copied in
    gf, zf = g.ravel(), z.ravel()
    step = U(z.shape[2])
    for task in range(start, stop):
        i, o = task // co, task % co
        src = U(((n0 + i) * co + o) * oh * ow)
        for y in range(U(oh)):
            for k in range(U(ow)):
                gp[y * wp + k] = gf[src + y * U(ow) + k]
        base = U(o * 16) * step + U(i * th * tw)
        for ty in range(U(th)):
            for tx in range(U(tw)):
                p = U(2) * (ty * wp + tx)
                a0, b0, a1, b1 = gp[p], gp[p + U(1)], gp[p + wp], gp[p + wp + U(1)]
                # r = A dY (4x2): rows a0; a0 + a1; a0 - a1; -a1 (and b likewise), then r A^T
                q = base + ty * U(tw) + tx
                for r0, r1 in ((a0, b0), (a0 + a1, b0 + b1), (a0 - a1, b0 - b1), (-a1, -b1)):
                    zf[q], zf[q + step], zf[q + U(2) * step], zf[q + U(3) * step] = r0, r0 + r1, r0 - r1, -r1
                    q += U(4) * step


# The filter transforms go one output channel at a time through a small buffer, (C_in, 16)
# values: written (or read) straight at u[xi, o, c], 16 rows C_out * C_in values apart,
# the 16 places of one (o, c) share the L1 cache's sets (as in _stride) and evict each
# other. 128 x 128 channels took 0.66 ms one (o, c) at a time, against 0.1 ms through the
# buffer (measured).
@njit(fastmath=FAST, nogil=True, inline="always")
def _g_times(h, k0, k1, k2):
    """G (k0, k1, k2)^T: the four values of the filter transform along one axis."""
    return k0, (k0 + k1 + k2) * h, (k0 - k1 + k2) * h, k2


@njit(fastmath=FAST, nogil=True, inline="always")
def _g_transposed_times(h, d0, d1, d2, d3):
    """G^T (d0, d1, d2, d3)^T: its adjoint, four values back to three."""
    return d0 + (d1 + d2) * h, (d1 - d2) * h, (d1 + d2) * h + d3


@njit(fastmath=FAST, nogil=True, cache=True)
def _filter_tiles(w, u):
    """u[:, o, c] = G w[o, c] G^T (3x3 -> 4x4, flattened), for every (o, c)."""
    co, ci = w.shape[0], w.shape[1]
    h = w.dtype.type(0.5)
    wf = w.ravel()
    buf = np.empty((ci, 16), dtype=w.dtype)
    for o in range(co):
        for c in range(ci):
            p = (o * ci + c) * 9
            # t = G w, column by column (t's rows are a, w's columns j)
            t00, t10, t20, t30 = _g_times(h, wf[p], wf[p + 3], wf[p + 6])
            t01, t11, t21, t31 = _g_times(h, wf[p + 1], wf[p + 4], wf[p + 7])
            t02, t12, t22, t32 = _g_times(h, wf[p + 2], wf[p + 5], wf[p + 8])
            r = buf[c]  # u = t G^T, row by row
            r[0], r[1], r[2], r[3] = _g_times(h, t00, t01, t02)
            r[4], r[5], r[6], r[7] = _g_times(h, t10, t11, t12)
            r[8], r[9], r[10], r[11] = _g_times(h, t20, t21, t22)
            r[12], r[13], r[14], r[15] = _g_times(h, t30, t31, t32)
        for xi in range(16):
            for c in range(ci):
                u[xi, o, c] = buf[c, xi]


@njit(fastmath=FAST, nogil=True, cache=True)
def _filter_tiles_adjoint(du, dw):
    """dw[o, c] = G^T du[:, o, c] G (4x4 -> 3x3), the adjoint of _filter_tiles."""
    co, ci = dw.shape[0], dw.shape[1]
    h = du.dtype.type(0.5)
    dwf = dw.ravel()
    buf = np.empty((ci, 16), dtype=du.dtype)
    for o in range(co):
        for xi in range(16):
            for c in range(ci):
                buf[c, xi] = du[xi, o, c]
        for c in range(ci):
            d = buf[c]  # t = G^T du, column by column (du's rows are a, columns b)
            t00, t10, t20 = _g_transposed_times(h, d[0], d[4], d[8], d[12])
            t01, t11, t21 = _g_transposed_times(h, d[1], d[5], d[9], d[13])
            t02, t12, t22 = _g_transposed_times(h, d[2], d[6], d[10], d[14])
            t03, t13, t23 = _g_transposed_times(h, d[3], d[7], d[11], d[15])
            p = (o * ci + c) * 9  # dw = t G, row by row
            dwf[p], dwf[p + 1], dwf[p + 2] = _g_transposed_times(h, t00, t01, t02, t03)
            dwf[p + 3], dwf[p + 4], dwf[p + 5] = _g_transposed_times(h, t10, t11, t12, t13)
            dwf[p + 6], dwf[p + 7], dwf[p + 8] = _g_transposed_times(h, t20, t21, t22, t23)


def _filter_transform(w):
    """U = G w G^T for every (o, c), as (16, C_out, C_in)."""
    u = np.empty((16, w.shape[0], w.shape[1]), dtype=w.dtype)
    _filter_tiles(np.ascontiguousarray(w), u)
    return u


# Turning a kernel 180 degrees reverses its rows and columns; G with its columns reversed
# is G with rows 0 and 3 swapped. So U of the turned kernel (dx's forward) is U with
# positions 0 and 3 swapped along both axes of the 4x4 transform, channel axes swapped.
_SWAP_0_3 = (3, 1, 2, 0)
TURNED = np.array([4 * _SWAP_0_3[a] + _SWAP_0_3[b] for a in range(4) for b in range(4)])


def _filter(w, saved):
    """U of w, from ``saved`` when the forward left it there."""
    u = None if saved is None else saved.get("winograd_u")
    return _filter_transform(w) if u is None else u


def _chunk_forward(x, u, bias, out, n0, n1, ph, pw, th, tw):
    """Images n0..n1 of out = A^T [U (.) V] A: their input tiles V, the 16 products
    U[xi] @ V[xi], and the output tiles (+ bias) into out."""
    ci, co, t = x.shape[1], u.shape[1], (n1 - n0) * th * tw
    v = np.empty((ci, 16, _stride(t)), dtype=x.dtype)
    m = np.empty((co, 16, _stride(t)), dtype=x.dtype)
    _input_tiles(x, v, n0, ph, pw, th, tw, 0, (n1 - n0) * ci)
    np.matmul(u, v[:, :, :t].transpose(1, 0, 2), out=m[:, :, :t].transpose(1, 0, 2))
    _output_tiles(m, bias, out, n0, th, tw, 0, (n1 - n0) * co)


def _forward_tiles(x, u, b, padding):
    """out = A^T [U (.) V] A per output tile; u is (16, C_out, C_in), or a view of one."""
    n, ci, h, wd = x.shape
    co = u.shape[1]
    (ph, pw) = padding
    oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
    th, tw = _tiles(oh, ow)
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    bias = np.zeros(0, dtype=x.dtype) if b is None else b
    # chunks as conv_batched's, their transformed tiles (16 values each) in place of im2col's columns
    chunks = _chunking(n, 16 * ci, th * tw, x.itemsize, 32 * co * ci * th * tw)

    def task(start, stop):
        for k in range(start, stop):
            _chunk_forward(x, u, bias, out, *_chunk(k, n, chunks), ph, pw, th, tw)

    _run_chunks(task, chunks, n)
    return out


def conv2d_forward_winograd(x, w, b, padding, saved=None):
    """The forward; keeps U in ``saved`` (when given a dict) for dx. The backward
    transforms x's tiles again for dw rather than keep the forward's V (4x the size of
    x): V written to memory in the forward and read back in the backward cost more than
    the transform in cache. Training steps alternated in one process, without against
    with: W8 1.005-1.08x on two threads and 1.05x on one, W7 0.98-1.05x (two) and 1.01x."""
    u = _filter_transform(w)
    if saved is not None:
        saved["winograd_u"] = u
    return _forward_tiles(x, u, b, padding)


def _backward_tiles(x, grad_out, u_turned, padding, need_x, need_w):
    """(dx or None, dU or None) in one pass over chunks of images: a chunk's dx is the
    forward's three steps on its grad_out (padding 2 - p, U turned), and its share of dU
    the products of its (A dY A^T) and x's V, summed per thread. One pass instead of one
    for each: a hand-off to the threads fewer, and each chunk of grad_out read while in
    cache."""
    n, ci, h, wd = x.shape
    co, oh, ow = grad_out.shape[1:]
    (ph, pw) = padding
    th, tw = _tiles(oh, ow)  # dY's tiles (for dU); dx's output tiles are x's: _tiles(h, wd)
    xth, xtw = _tiles(h, wd)
    gx = np.empty(x.shape, dtype=x.dtype) if need_x else None
    no_bias = np.zeros(0, dtype=x.dtype)
    chunks = _chunking(n, 16 * (ci + co), max(th * tw, xth * xtw), x.itemsize,
                       32 * co * ci * (need_x * xth * xtw + need_w * th * tw))
    partials = PerThread(lambda: np.zeros((16, co, ci), dtype=x.dtype))  # dU, a sum per thread

    def task(start, stop):
        for k in range(start, stop):
            n0, n1 = _chunk(k, n, chunks)
            if need_x:  # dx: the forward on grad_out (padding 2 - p) with U turned
                _chunk_forward(grad_out, u_turned, no_bias, gx, n0, n1, 2 - ph, 2 - pw, xth, xtw)
            if need_w:  # dU += (A dY A^T)[xi] @ V[xi]^T, V[xi]^T a (tiles, C_in) matrix
                t = (n1 - n0) * th * tw
                z = np.empty((co, 16, _stride(t)), dtype=x.dtype)
                v = np.empty((16, _stride(t * ci)), dtype=x.dtype)
                _input_tiles_channel_minor(x, v.ravel(), v.shape[1], n0, ph, pw, th, tw, n1 - n0)
                _grad_tiles(grad_out, z, n0, th, tw, 0, (n1 - n0) * co)
                partials.mine()[...] += np.matmul(z[:, :, :t].transpose(1, 0, 2), v[:, :t * ci].reshape(16, t, ci))

    _run_chunks(task, chunks, n)
    return gx, (sum(partials.values()) if need_w else None)


def _turned(w, saved):
    """U of the kernel turned 180 degrees with its channel axes swapped: dx's forward."""
    return _filter(w, saved)[TURNED].transpose(0, 2, 1)


def conv2d_grad_input_winograd(grad_out, w, padding, saved=None):
    """dx: the forward on grad_out with the kernel turned 180 degrees and its channel axes
    swapped, padding 2 - p; its U comes from w's by TURNED."""
    return _forward_tiles(grad_out, _turned(w, saved), None, (2 - padding[0], 2 - padding[1]))


def _weight_gradient(du, w_shape, dtype):
    """dw = G^T dU G."""
    gw = np.empty(w_shape, dtype=dtype)
    _filter_tiles_adjoint(du, gw)
    return gw


def conv2d_grad_weight_winograd(x, grad_out, w_shape, padding):
    """dw = G^T dU G, dU[xi] = sum over the batch's tiles of (A dY A^T)[xi] @ V[xi]^T."""
    _, du = _backward_tiles(x, grad_out, None, padding, False, True)
    return _weight_gradient(du, w_shape, x.dtype)


def conv2d_backward_winograd(x, w, grad_out, padding, need_x, need_w, saved=None):
    """(dx or None, dw or None, db)."""
    u_turned = _turned(w, saved) if need_x else None
    gx, du = _backward_tiles(x, grad_out, u_turned, padding, need_x, need_w)
    gw = _weight_gradient(du, w.shape, x.dtype) if need_w else None
    return gx, gw, bias_gradient(grad_out)
