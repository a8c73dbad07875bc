"""Pooling (max, average) and resizing (nearest, bilinear upsampling)."""
from __future__ import annotations

import numpy as np
from numba import njit

from .elementwise import _out_hw
from .parallel import FAST, U, _parallel
from .shapes import argmax_dtype, covers_plane

# =========================================================================== pooling
# A task is one (image, channel) plane. Windows are clipped to the image instead of
# padding it: the loops skip what would be padding.

@njit(nogil=True, cache=True)
def _relu_after_pool(of, af, start, count):
    """A ReLU of one pooled plane (flat views, ``count`` values from ``start``), in place:
    out = relu(out) (a NaN stays NaN), and where the ReLU passes no gradient (out <= 0,
    NaN) the argmax i becomes -i - 1. A loop of its own over the plane, still in cache:
    inside the window loop the extra selects cost the pool 1.5x (measured)."""
    zero = of.dtype.type(0)
    for k in range(start, start + count):
        v, a = of[k], af[k]
        passed = v > 0
        of[k] = v if passed | (v != v) else zero
        af[k] = a if passed else -a - 1


@njit(nogil=True, cache=True)
def _max_pool_forward(x, out, arg, kh, kw, sh, sw, ph, pw, relu, start, stop):
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    for task in range(start, stop):
        b, ch = task // c, task % c
        plane = x[b, ch]
        for y in range(oh):
            for xx in range(ow):
                best, where = plane[0, 0], -1
                for iy in range(max(0, y * sh - ph), min(h, y * sh - ph + kh)):
                    for ix in range(max(0, xx * sw - pw), min(w, xx * sw - pw + kw)):
                        v = plane[iy, ix]
                        # strictly greater keeps the first of equal values; a NaN wins once
                        if where < 0 or v > best or (np.isnan(v) and not np.isnan(best)):
                            best, where = v, iy * w + ix
                out[b, ch, y, xx] = best
                arg[b, ch, y, xx] = where
        if relu:
            _relu_after_pool(out.ravel(), arg.ravel(), task * oh * ow, oh * ow)


@njit(nogil=True, inline="always")
def _wins(b, a):
    """Whether b replaces a as a window's max: b is larger, or b is a NaN and a is not (the
    first of equal values stays; a NaN wins once)."""
    return (a == a) & (not (b <= a))


@njit(nogil=True, cache=True)
def _max_pool_2x2_forward(x, out, arg, relu, start, stop):
    """_max_pool_forward for the common 2x2 window, stride 2, no padding: the same picks
    (the first of equal values, a NaN wins). The window is a tree of two pairs, each pick
    a select of a comparison made with ``|`` and ``&`` (no branches: on real data a branch
    on which of two values is larger is mispredicted half the time). Measured on one
    thread, (64, 16, 28, 28): 3.1 ms with a loop over the window, 1.5 ms. Flat views at
    unsigned offsets (as in conv_im2col._im2col): rows of 14 outputs left no room for
    vectors, and numba checked each index for being negative; 1.3 -> 0.86 ms (measured).
    ``arg`` is int32 (shapes.argmax_dtype), and so is the index arithmetic: with int64
    indices the loop took 0.86 ms, 0.34 with int32 (eight lanes of floats and of indices
    in a vector alike; measured, one thread, AMD EPYC).
    "b wins over a" is (a == a) & not (b <= a): larger, or a NaN where a is not one. Written
    as (b > a) | ((b != b) & (a == a)), the same picks, LLVM left the loop in scalar code
    on an Intel Xeon with AVX-512: 1.0 ms there, 0.47 ms now (one thread, measured); W4's
    steps alternated in one process (40 rounds): 1.11x on one thread, 1.08x on two."""
    h, w = x.shape[2], x.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    xf, of, af = x.ravel(), out.ravel(), arg.ravel()
    wu, row = U(w), np.int32(w)
    for task in range(start, stop):
        src0, dst0 = U(task * h * w), U(task * oh * ow)
        for y in range(U(oh)):
            top = src0 + U(2) * y * wu
            bottom, dst, base = top + wu, dst0 + y * U(ow), np.int32(U(2) * y * wu)
            for t in range(U(ow)):
                left = U(2) * t
                a0, a1, a2, a3 = xf[top + left], xf[top + left + U(1)], xf[bottom + left], xf[bottom + left + U(1)]
                right = _wins(a1, a0)
                m01 = a1 if right else a0
                right_below = _wins(a3, a2)
                m23 = a3 if right_below else a2
                below = _wins(m23, m01)
                of[dst + t] = m23 if below else m01
                af[dst + t] = base + np.int32(left) + (row + np.int32(right_below) if below else np.int32(right))
        if relu:
            _relu_after_pool(of, af, dst0, U(oh * ow))


@njit(fastmath=FAST, nogil=True, cache=True)
def _passed_sum(gf, af, src, count, zero):
    """The sum of what a plane's outputs pass back: g, or g * 0 where the argmax is stored
    as -index - 1. A loop of its own, in vector lanes (the scatter's sum would be a chain
    of dependent adds)."""
    total = 0.0
    for k in range(count):
        total += gf[src + k] if af[src + k] >= 0 else gf[src + k] * zero
    return total


@njit(nogil=True, cache=True)
def _max_pool_backward(g, arg, gx, sums, start, stop):
    """gx is (N, C, H*W): each output's gradient goes to its argmax; an argmax stored as
    -index - 1 (a ReLU after the pool zeroed that output) gets g * 0, as the ReLU's
    backward gives (0, or NaN for an infinite g). Each task zeroes its own planes first (a
    whole-array np.zeros ran on one thread before the others started). Flat views at
    unsigned offsets, as in the forward: (64, 32, 14, 14) 104 -> 71 us, (64, 16, 28, 28)
    160 -> 138 us on one thread (measured). With ``sums`` (float64, one per channel;
    empty: none), what each plane received is added to its channel's (a bias gradient)."""
    c = g.shape[1]
    plane_out, plane_in = U(g.shape[2] * g.shape[3]), U(gx.shape[2])
    gf, af, xf = g.ravel(), arg.ravel(), gx.ravel()
    zero = gx.dtype.type(0)
    for task in range(U(start), U(stop)):
        dst, src = task * plane_in, task * plane_out
        for k in range(plane_in):
            xf[dst + k] = zero
        for k in range(plane_out):
            a = af[src + k]
            if a >= 0:
                xf[dst + U(a)] += gf[src + k]
            else:
                xf[dst + U(-a - 1)] += gf[src + k] * zero
        if sums.shape[0]:
            sums[task % U(c)] += _passed_sum(gf, af, src, plane_out, zero)


@njit(nogil=True, cache=True)
def _avg_pool_forward(x, out, kh, kw, sh, sw, ph, pw, start, stop):
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    scale = x.dtype.type(1.0 / (kh * kw))
    for task in range(start, stop):
        b, ch = task // c, task % c
        plane = x[b, ch]
        for y in range(oh):
            for xx in range(ow):
                s = x.dtype.type(0)
                for iy in range(max(0, y * sh - ph), min(h, y * sh - ph + kh)):
                    for ix in range(max(0, xx * sw - pw), min(w, xx * sw - pw + kw)):
                        s += plane[iy, ix]
                out[b, ch, y, xx] = s * scale


@njit(nogil=True, cache=True)
def _avg_pool_backward(g, gx, kh, kw, sh, sw, ph, pw, start, stop):
    c, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    h, w = gx.shape[2], gx.shape[3]
    scale = g.dtype.type(1.0 / (kh * kw))
    for task in range(start, stop):
        b, ch = task // c, task % c
        dst = gx[b, ch]
        dst[:, :] = 0
        for y in range(oh):
            for xx in range(ow):
                share = g[b, ch, y, xx] * scale
                for iy in range(max(0, y * sh - ph), min(h, y * sh - ph + kh)):
                    for ix in range(max(0, xx * sw - pw), min(w, xx * sw - pw + kw)):
                        dst[iy, ix] += share


def max_pool2d_planes(x, kernel, stride, padding, relu=False):
    """(out, argmax, pool): pool(start, stop) writes the planes [start, stop) of out and
    argmax, planes counted over (N, C)."""
    n, c, h, w = x.shape
    oh, ow = _out_hw(x.shape, kernel, stride, padding, (1, 1))
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=argmax_dtype(h, w))
    if kernel == stride == (2, 2) and padding == (0, 0) and arg.dtype == np.int32:
        return out, arg, lambda start, stop: _max_pool_2x2_forward(x, out, arg, relu, start, stop)
    return out, arg, lambda start, stop: _max_pool_forward(x, out, arg, *kernel, *stride, *padding, relu, start, stop)


def max_pool2d_forward(x, kernel, stride, padding, relu=False):
    out, arg, pool = max_pool2d_planes(x, kernel, stride, padding, relu)
    _parallel(pool, x.shape[0] * x.shape[1], x.size)
    return out, arg


NO_SUMS = np.zeros(0)  # _max_pool_backward's sums when none are wanted


def max_pool2d_backward(grad_out, argmax, x_shape):
    n, c, h, w = x_shape
    gx = np.empty((n, c, h * w), dtype=grad_out.dtype)
    _parallel(_max_pool_backward, n * c, grad_out.size, grad_out, argmax, gx, NO_SUMS)
    return gx.reshape(x_shape)


# A window that covers the whole plane (a ResNet's global average pooling before its
# head) is a plane's sum, read (and, backward, written) as one flat run of values in
# vector lanes: on one thread (64, 128, 4, 4) 143 -> 27 us forward, 150 -> 13 us backward,
# against the window loops above (measured, Intel Xeon). Inside W8's step (30 steps
# each, alternated, per step): forward 403 -> 211 us on two threads and 186 -> 79 us on
# one, backward 274 -> 163 and 187 -> 45 us; the steps themselves, 1.007x and 0.989x on
# two threads (60 and 40 rounds), 1.005x on one, within their noise.
@njit(nogil=True, cache=True)
def _global_avg_pool_forward(x, out, start, stop):
    """out[p] = the mean of plane p of x (planes of L values, p = image * C + channel)."""
    plane = U(x.shape[2] * x.shape[3])
    xf, of = x.ravel(), out.ravel()
    scale = x.dtype.type(1.0 / plane)
    for p in range(U(start), U(stop)):
        total = x.dtype.type(0)
        for t in range(plane):
            total += xf[p * plane + t]
        of[p] = total * scale


@njit(nogil=True, cache=True)
def _global_avg_pool_backward(g, gx, start, stop):
    """Every value of plane p of gx = g[p] / L."""
    plane = U(gx.shape[2] * gx.shape[3])
    gf, xf = g.ravel(), gx.ravel()
    scale = g.dtype.type(1.0 / plane)
    for p in range(U(start), U(stop)):
        share = gf[p] * scale
        for t in range(plane):
            xf[p * plane + t] = share


def avg_pool2d_forward(x, kernel, stride, padding):
    n, c = x.shape[:2]
    oh, ow = _out_hw(x.shape, kernel, stride, padding, (1, 1))
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    if covers_plane(x.shape, kernel, padding):
        _parallel(_global_avg_pool_forward, n * c, x.size, x, out, streaming=True)
    else:
        _parallel(_avg_pool_forward, n * c, x.size, x, out, *kernel, *stride, *padding)
    return out


def avg_pool2d_backward(grad_out, x_shape, kernel, stride, padding):
    gx = np.empty(x_shape, dtype=grad_out.dtype)
    # work counts the writes: by grad_out (one value a plane for a global pool) it stayed on one thread
    if covers_plane(x_shape, kernel, padding):
        _parallel(_global_avg_pool_backward, x_shape[0] * x_shape[1], gx.size, grad_out, gx, streaming=True)
    else:
        _parallel(_avg_pool_backward, x_shape[0] * x_shape[1], gx.size, grad_out, gx, *kernel, *stride, *padding)
    return gx


# =========================================================================== upsampling
# The index and weight tables come from shapes.py; the kernels gather (forward) and
# scatter-add (backward). A task is one (image, channel) plane.

@njit(nogil=True, cache=True)
def _nearest_forward(x, iy, ix, out, start, stop):
    c = x.shape[1]
    for task in range(start, stop):
        b, ch = task // c, task % c
        for y in range(iy.shape[0]):
            src, dst = x[b, ch, iy[y]], out[b, ch, y]
            for xx in range(ix.shape[0]):
                dst[xx] = src[ix[xx]]


@njit(nogil=True, cache=True)
def _nearest_backward(g, iy, ix, gx, start, stop):
    c = g.shape[1]
    for task in range(start, stop):
        b, ch = task // c, task % c
        for y in range(iy.shape[0]):
            src, dst = g[b, ch, y], gx[b, ch, iy[y]]
            for xx in range(ix.shape[0]):
                dst[ix[xx]] += src[xx]


@njit(nogil=True, cache=True)
def _bilinear_forward(x, y0, y1, wy0, wy1, x0, x1, wx0, wx1, out, start, stop):
    c = x.shape[1]
    for task in range(start, stop):
        b, ch = task // c, task % c
        plane = x[b, ch]
        for y in range(y0.shape[0]):
            top, bottom, dst = plane[y0[y]], plane[y1[y]], out[b, ch, y]
            for xx in range(x0.shape[0]):
                dst[xx] = (wy0[y] * (wx0[xx] * top[x0[xx]] + wx1[xx] * top[x1[xx]])
                           + wy1[y] * (wx0[xx] * bottom[x0[xx]] + wx1[xx] * bottom[x1[xx]]))


@njit(nogil=True, cache=True)
def _bilinear_backward(g, y0, y1, wy0, wy1, x0, x1, wx0, wx1, gx, start, stop):
    c = g.shape[1]
    for task in range(start, stop):
        b, ch = task // c, task % c
        for y in range(y0.shape[0]):
            top, bottom, src = gx[b, ch, y0[y]], gx[b, ch, y1[y]], g[b, ch, y]
            for xx in range(x0.shape[0]):
                gt, gb = wy0[y] * src[xx], wy1[y] * src[xx]
                top[x0[xx]] += wx0[xx] * gt
                top[x1[xx]] += wx1[xx] * gt
                bottom[x0[xx]] += wx0[xx] * gb
                bottom[x1[xx]] += wx1[xx] * gb


# Upsampling by whole factors (2 in a U-Net) skips the tables: contiguous loops over flat
# views at unsigned offsets (see conv_im2col._im2col), with the factor 2 spelled out so
# that LLVM vectorises it. Measured on one thread, (8, 32, 64, 64) -> 128x128: forward
# 1.9 -> 0.5 ms, backward 1.6 -> 0.45 ms.

@njit(nogil=True, cache=True)
def _nearest_blocks_forward(x, out, sy, sx, start, stop):
    """out's sy x sx block at (y, x) = x[y, x], every value of each block."""
    h, w = x.shape[2], x.shape[3]
    row = U(w * sx)  # values in a row of out
    xf, of = x.ravel(), out.ravel()
    for task in range(start, stop):
        src0, dst0 = U(task * h * w), U(task * h * w * sy * sx)
        for y in range(U(h)):
            src, top = src0 + y * U(w), dst0 + y * U(sy) * row
            if sx == 2:
                for t in range(U(w)):
                    v = xf[src + t]
                    of[top + U(2) * t] = v
                    of[top + U(2) * t + U(1)] = v
            else:
                for t in range(U(w)):
                    v = xf[src + t]
                    for j in range(U(sx)):
                        of[top + t * U(sx) + j] = v
            for i in range(U(1), U(sy)):  # the block's other rows: copies of its first
                for k in range(row):
                    of[top + i * row + k] = of[top + k]


def upsample_nearest2d_forward(x, iy, ix):
    out = np.empty(x.shape[:2] + (iy.size, ix.size), dtype=x.dtype)
    sy, sx = _whole_factor(iy, x.shape[2]), _whole_factor(ix, x.shape[3])
    if sy and sx:
        _parallel(_nearest_blocks_forward, x.shape[0] * x.shape[1], out.size, x, out, sy, sx)
    else:
        _parallel(_nearest_forward, x.shape[0] * x.shape[1], out.size, x, iy, ix, out)
    return out


@njit(fastmath=FAST, nogil=True, cache=True)
def _nearest_blocks_backward(g, gx, sy, sx, start, stop):
    """The backward of an upsampling by whole factors (sy, sx): gx[y, x] = the sum of
    its sy x sx block of g. g may be a view (a concatenation's gradient is sliced by
    channel): each plane is taken C-contiguous, in the cache, for the flat loops."""
    c, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    row = U(w * sx)  # values in a row of g
    xf = gx.ravel()
    for task in range(start, stop):
        gf = np.ascontiguousarray(g[task // c, task % c]).ravel()
        dst0 = U(task * h * w)
        for y in range(U(h)):
            dst, top = dst0 + y * U(w), y * U(sy) * row
            if sy == 2 and sx == 2:
                bottom = top + row
                for t in range(U(w)):
                    j = U(2) * t
                    xf[dst + t] = (gf[top + j] + gf[top + j + U(1)]) + (gf[bottom + j] + gf[bottom + j + U(1)])
            else:
                for t in range(U(w)):
                    total = g.dtype.type(0)
                    for i in range(U(sy)):
                        for j in range(U(sx)):
                            total += gf[top + i * row + t * U(sx) + j]
                    xf[dst + t] = total


def _whole_factor(table, size):
    """The factor s when ``table`` maps output i to input i // s, else 0."""
    s = table.size // size
    return s if s * size == table.size and np.array_equal(table, np.arange(table.size) // s) else 0


def upsample_nearest2d_backward(grad_out, iy, ix, x_shape):
    sy, sx = _whole_factor(iy, x_shape[2]), _whole_factor(ix, x_shape[3])
    if sy and sx:
        gx = np.empty(x_shape, dtype=grad_out.dtype)
        _parallel(_nearest_blocks_backward, x_shape[0] * x_shape[1], grad_out.size, grad_out, gx, sy, sx)
        return gx
    gx = np.zeros(x_shape, dtype=grad_out.dtype)
    _parallel(_nearest_backward, x_shape[0] * x_shape[1], grad_out.size, grad_out, iy, ix, gx)
    return gx


def upsample_bilinear2d_forward(x, ty, tx):
    out = np.empty(x.shape[:2] + (ty[0].size, tx[0].size), dtype=x.dtype)
    _parallel(_bilinear_forward, x.shape[0] * x.shape[1], out.size, x, *ty, *tx, out)
    return out


def upsample_bilinear2d_backward(grad_out, ty, tx, x_shape):
    gx = np.zeros(x_shape, dtype=grad_out.dtype)
    _parallel(_bilinear_backward, x_shape[0] * x_shape[1], grad_out.size, grad_out, *ty, *tx, gx)
    return gx
