"""Elementwise kernels: relu and leaky relu with their gradients, binary cross-entropy on
logits, the zero padding of image planes, and joining arrays (concatenate).

Inner loops run over a contiguous 1-D view, from 0: ``row = a[i, k0:k1]`` then
``row[k]``. Numba checks every index for being negative (``a[-1]`` is the last element);
LLVM can drop that check, and vectorise, only when it can see the index is >= 0, which
a ``range(n)`` counter is.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import reference
from . import parallel
from .parallel import FAST, U, _parallel

# U-Net's activations (millions of values) the threads split the array in blocks.
RELU_BLOCK = 1 << 16  # elements per task (an argument of the kernels: numba freezes globals)


@njit(nogil=True, inline="always")
def _relu(value, zero, relu):
    """max(value, 0) where ``relu``, else value; ``zero`` is 0 in value's type. A NaN stays
    NaN (NaN <= 0 is False), and -0 becomes 0. The one ReLU of every kernel that takes one
    on the way (a fused conv's, a batch norm's, a residual sum's); a flag the same for a
    whole loop, which LLVM takes out of it."""
    return (zero if value <= 0 else value) if relu else value


@njit(nogil=True, cache=True)
def _relu_forward(x, out, block, start, stop):
    lo, hi = start * block, min(stop * block, x.size)
    src, dst = x[lo:hi], out[lo:hi]  # views indexed from 0, so that LLVM vectorises
    zero = x.dtype.type(0)
    for i in range(hi - lo):
        dst[i] = _relu(src[i], zero, True)


@njit(nogil=True, cache=True)
def _relu_backward(g, out, gx, block, start, stop):
    lo, hi = start * block, min(stop * block, g.size)
    src, kept, dst = g[lo:hi], out[lo:hi], gx[lo:hi]
    for i in range(hi - lo):
        dst[i] = src[i] * (kept[i] > 0)


def relu_forward(x, out=None):
    """max(x, 0), into ``out`` where given (x itself: in place, as a conv's fused ReLU)."""
    if x.size < parallel.SMALL_WORK or not (x.flags.c_contiguous and (out is None or out.flags.c_contiguous)):
        return reference.relu_forward(x, out)
    out = np.empty_like(x) if out is None else out
    _parallel(_relu_forward, -(-x.size // RELU_BLOCK), x.size, x.ravel(), out.ravel(), RELU_BLOCK,
              streaming=True)
    return out


def relu_backward(grad_out, out):
    if grad_out.size < parallel.SMALL_WORK or not (grad_out.flags.c_contiguous and out.flags.c_contiguous):
        return reference.relu_backward(grad_out, out)
    gx = np.empty_like(grad_out)
    _parallel(_relu_backward, -(-gx.size // RELU_BLOCK), gx.size, grad_out.ravel(), out.ravel(), gx.ravel(),
              RELU_BLOCK, streaming=True)
    return gx


@njit(fastmath=FAST, nogil=True, cache=True)
def _relu_backward_planes(g, out, gx, sums, start, stop):
    """Rows start..stop of (N * C, H * W) views: gx = g where out > 0, else 0, and
    sums[row] = the sum of gx's row, in float64 (reassociated, so that it vectorises)."""
    for row in range(start, stop):
        src, kept, dst = g[row], out[row], gx[row]
        total = 0.0
        for i in range(src.shape[0]):
            value = src[i] * (kept[i] > 0)
            dst[i] = value
            total += value
        sums[row] = total


def relu_backward_and_channel_sums(grad_out, out):
    """(gx, sums): relu_backward's gx for (N, C, H, W) arrays, and gx summed per channel
    (a conv's bias gradient, when the conv and its ReLU are one op) in the same pass."""
    if grad_out.size < parallel.SMALL_WORK or not (grad_out.flags.c_contiguous and out.flags.c_contiguous):
        return reference.relu_backward_and_channel_sums(grad_out, out)
    n, c = grad_out.shape[:2]
    gx = np.empty_like(grad_out)
    sums = np.empty(n * c, dtype=np.float64)
    _parallel(_relu_backward_planes, n * c, 3 * gx.size, grad_out.reshape(n * c, -1), out.reshape(n * c, -1),
              gx.reshape(n * c, -1), sums, streaming=True)
    return gx, sums.reshape(n, c).sum(axis=0).astype(grad_out.dtype)


@njit(nogil=True, cache=True)
def _add_flat(a, b, out, relu, block, start, stop):
    """out = a + b over flat arrays, with ``relu`` max(a + b, 0) (``_relu``)."""
    lo, hi = start * block, min(stop * block, a.size)
    sa, sb, dst = a[lo:hi], b[lo:hi], out[lo:hi]
    zero = a.dtype.type(0)
    for i in range(hi - lo):
        dst[i] = _relu(sa[i] + sb[i], zero, relu)


def add_relu_forward(a, b):
    """max(a + b, 0) in one pass: a residual block's sum and its ReLU read and write the
    maps once (apart, the sum on numpy's one thread, then the ReLU). W8's steps alternated
    in one process (40 rounds, load 0.9-1.1): 1.019x and 1.031x on two threads, 1.017x and
    1.021x on one."""
    if (a.size < parallel.SMALL_WORK or a.dtype != b.dtype
            or not (a.flags.c_contiguous and b.flags.c_contiguous)):
        return reference.add_relu_forward(a, b)
    out = np.empty_like(a)
    _parallel(_add_flat, -(-a.size // RELU_BLOCK), 3 * a.size, a.ravel(), b.ravel(), out.ravel(), True,
              RELU_BLOCK, streaming=True)
    return out


@njit(nogil=True, cache=True)
def _add_planes(a, b, out, start, stop):
    """out = a + b for (N, C, H, W) arrays of any strides (a channel slice of a concat's
    gradient), a task per (image, channel) plane, row by row."""
    channels = a.shape[1]
    for task in range(start, stop):
        pa, pb, po = a[task // channels, task % channels], b[task // channels, task % channels], \
            out[task // channels, task % channels]
        for y in range(a.shape[2]):
            ra, rb, ro = pa[y], pb[y], po[y]
            for x in range(a.shape[3]):
                ro[x] = ra[x] + rb[x]


def add(a, b, out=None):
    """a + b into ``out`` (a new array; or a itself, in place), split among the threads for
    big arrays of one dtype (numpy's add runs on one): autograd's sum of two paths'
    gradients (a residual block's input, a U-Net's skip). Contiguous arrays go through a
    flat kernel, (N, C, H, W) views of other strides plane by plane; the rest to numpy.
    Steps alternated in one process (30-50 rounds, load 1.0-1.25), two threads / one: in
    place, W8's three residual sums, 1.009x, 1.013x and 1.026x / 1.003x and 1.005x; into a
    new array, W5's skip (a channel slice of the concat's gradient plus the pool's), 1.013x,
    1.010x, 0.998x and 1.006x / 0.999x (0.988x through the plane kernel on one thread, where
    numpy's add now runs)."""
    if out is None:
        out = np.empty(a.shape, np.result_type(a, b))
    if parallel.on_one_thread(a.size, 3 * a.size, streaming=True) or not a.dtype == b.dtype == out.dtype:
        return reference.add(a, b, out)  # on one thread numpy's add is as fast
    if a.flags.c_contiguous and b.flags.c_contiguous and out.flags.c_contiguous:
        _parallel(_add_flat, -(-a.size // RELU_BLOCK), 3 * a.size, a.ravel(), b.ravel(), out.ravel(), False,
                  RELU_BLOCK, streaming=True)
    elif a.ndim == 4:
        _parallel(_add_planes, a.shape[0] * a.shape[1], 3 * a.size, a, b, out, streaming=True)
    else:
        return reference.add(a, b, out)
    return out


@njit(nogil=True, cache=True)
def _leaky_relu_forward(x, slope, out, block, start, stop):
    lo, hi = start * block, min(stop * block, x.size)
    src, dst = x[lo:hi], out[lo:hi]
    for i in range(hi - lo):
        v = src[i]
        dst[i] = v if v > 0 else v * slope  # a NaN takes the second branch and stays NaN


@njit(nogil=True, cache=True)
def _leaky_relu_backward(g, x, slope, gx, block, start, stop):
    lo, hi = start * block, min(stop * block, g.size)
    src, inp, dst = g[lo:hi], x[lo:hi], gx[lo:hi]
    for i in range(hi - lo):
        dst[i] = src[i] if inp[i] > 0 else src[i] * slope


def leaky_relu_forward(x, slope):
    if x.size < parallel.SMALL_WORK or not x.flags.c_contiguous:
        return reference.leaky_relu_forward(x, slope)
    out = np.empty_like(x)
    _parallel(_leaky_relu_forward, -(-x.size // RELU_BLOCK), x.size, x.ravel(), x.dtype.type(slope),
              out.ravel(), RELU_BLOCK, streaming=True)
    return out


def leaky_relu_backward(grad_out, x, slope):
    if grad_out.size < parallel.SMALL_WORK or not (grad_out.flags.c_contiguous and x.flags.c_contiguous):
        return reference.leaky_relu_backward(grad_out, x, slope)
    gx = np.empty_like(grad_out)
    _parallel(_leaky_relu_backward, -(-gx.size // RELU_BLOCK), gx.size, grad_out.ravel(), x.ravel(),
              grad_out.dtype.type(slope), gx.ravel(), RELU_BLOCK, streaming=True)
    return gx


# =========================================================================== binary cross-entropy
# exp and log1p come from numpy, whose loops use the CPU's vector units (numba's call the
# C library once per value: there is no SVML here); numba fuses the rest. A task is a
# block of BCE_BLOCK values, whose arrays stay in the core's cache through the passes.
# Measured against the numpy reference, forward and backward of W7's 16 x 45 x 16 x 16
# logits: 506 -> 261 us on one thread, 514 -> 220 on two.
BCE_BLOCK = 1 << 14
# The forward's numpy calls take the GIL to start: in blocks of BCE_BLOCK, two threads
# took turns at it and ran slower than one (W7's 184 K logits: 309 us against 293 on one
# thread). It is cut into one piece per thread instead, each piece at least
# BCE_FORWARD_PIECE values: 215 us on two threads there, 155 against 271 for W5's 131 K;
# 46 K (W7's other head) stay on one thread (64 us; 98 as two pieces). Steps on two
# threads, alternated in one process: W7 1.012x and 1.014x (40 rounds), W5 1.006x.
BCE_FORWARD_PIECE = 1 << 16


@njit(nogil=True, cache=True)
def _bce_loss_rest(x, y, loss):
    """loss += max(x, 0) - x * y (loss holds log(1 + exp(-|x|)) on entry)."""
    zero = x.dtype.type(0)
    for i in range(x.shape[0]):
        v = x[i]
        loss[i] += (v if v > zero else zero) - v * y[i]


# error_model="numpy": numba's default checks every division for a zero divisor (to raise
# Python's ZeroDivisionError), and that branch keeps LLVM from vectorising the loop (156
# against 34 us here). 1 + e >= 1 is never zero.
@njit(nogil=True, cache=True, error_model="numpy")
def _bce_backward(scale, x, e, y, gx, block, start, stop):
    """gx = scale * (sigmoid(x) - y), sigmoid(x) from e = exp(-|x|)."""
    lo, hi = start * block, min(stop * block, x.size)
    xs, es, ys, dst = x[lo:hi], e[lo:hi], y[lo:hi], gx[lo:hi]
    one = x.dtype.type(1)
    for i in range(hi - lo):
        ei = es[i]
        dst[i] = scale * ((one if xs[i] >= 0 else ei) / (one + ei) - ys[i])


def bce_with_logits_forward(x, y):
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y, dtype=x.dtype)
    n, xf, yf = x.size, x.ravel(), y.ravel()
    loss, e = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    lf, ef = loss.ravel(), e.ravel()

    pieces = max(1, min(parallel.get_num_threads(), n // BCE_FORWARD_PIECE))

    def blocks(start, stop):
        lo, hi = n * start // pieces, n * stop // pieces
        xs, es, ls = xf[lo:hi], ef[lo:hi], lf[lo:hi]
        np.abs(xs, out=es)
        np.negative(es, out=es)
        np.exp(es, out=es)
        np.log1p(es, out=ls)
        _bce_loss_rest(xs, yf[lo:hi], ls)

    _parallel(blocks, pieces, n)
    return loss, e


def bce_with_logits_backward(grad_out, x, e, y):
    """One value of grad_out broadcast over x (a mean's or a sum's gradient) is a scale in
    the loop; any other grad_out multiplies the result."""
    x, e, y = np.ascontiguousarray(x), np.ascontiguousarray(e), np.ascontiguousarray(y, dtype=x.dtype)
    one_value = grad_out.size > 0 and not any(grad_out.strides)
    scale = x.dtype.type(grad_out.flat[0] if one_value else 1)
    gx = np.empty(x.shape, x.dtype)
    _parallel(_bce_backward, -(-x.size // BCE_BLOCK), x.size, scale, x.ravel(), e.ravel(), y.ravel(),
              gx.ravel(), BCE_BLOCK, streaming=True)
    if not one_value:
        gx *= grad_out
    return gx


# =========================================================================== padding
@njit(nogil=True, cache=True)
def _pad_planes(x, out, ph, pw, start, stop):
    """out[b, c] = x[b, c] with ph rows and pw columns of zeros around it. A task is one plane."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    for task in range(start, stop):
        src, dst = x[task // c, task % c], out[task // c, task % c]
        for y in range(out.shape[2]):
            row = dst[y]
            if y < ph or y >= ph + h:
                row[:] = 0
                continue
            for t in range(pw):
                row[t] = 0
                row[pw + w + t] = 0
            line, inner = src[y - ph], row[pw:]
            for t in range(w):
                inner[t] = line[t]


def _pad(x, padding):
    """x (N, C, H, W) with zeros around each plane: C-contiguous, (N, C, H + 2ph, W + 2pw).
    (np.pad does the same 2-3x slower, on one thread.) A copy, so a streaming kernel: W4's
    64 x 1 x 28 x 28 images took 27 us on one thread and 57 on two (the hand-off and the
    wait for the other thread cost more than half the copy); its first conv's forward, on
    two threads with the padding on one: 18-22 us less (alternated in one process)."""
    (ph, pw) = padding
    if ph == 0 and pw == 0:
        return np.ascontiguousarray(x)
    n, c, h, w = x.shape
    out = np.empty((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    _parallel(_pad_planes, n * c, out.size, x, out, ph, pw, streaming=True)
    return out


def _unpad(xp, padding):
    (ph, pw) = padding
    if ph == 0 and pw == 0:
        return xp
    return np.ascontiguousarray(xp[:, :, ph: xp.shape[2] - ph, pw: xp.shape[3] - pw])


def _out_hw(x_shape, kernel, stride, padding, dilation):
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, k, st, p, d in zip(x_shape[2:], kernel, stride, padding, dilation))


# =========================================================================== concatenate
CONCAT_BLOCK = 1 << 16  # output values per task


@njit(nogil=True, cache=True)
def _concatenate_blocks(parts, out, block, start, stop):
    """out[r] = the rows r of ``parts`` one after another (out (R, W), each part (R, L_p),
    sum of L_p = W). A task is one block of ``block`` values of one output row: it copies
    the pieces of the parts that fall in it."""
    width = out.shape[1]
    of = out.ravel()
    blocks = (width + block - 1) // block
    for task in range(start, stop):
        r, k = task // blocks, task % blocks
        lo, hi = k * block, min(width, (k + 1) * block)
        first = 0
        for p in range(len(parts)):
            length = parts[p].shape[1]
            a, b = max(lo, first), min(hi, first + length)
            if a < b:
                pf = parts[p].ravel()
                src, dst = U(r * length + a - first), U(r * width + a)
                for t in range(U(b - a)):
                    of[dst + t] = pf[src + t]
            first += length


def concatenate(arrays, axis):
    """np.concatenate(arrays, axis), split among the threads in blocks when the arrays are
    big enough for two threads, else numpy's (whose copy runs on one thread). A U-Net's
    skip connection, 8 x (32 + 16) x 128 x 128, on two threads with the caches flushed
    first: 2.5 -> 2.0 ms; W5's steps on two threads 1.018x and 1.022x (alternated in one
    process, 15 and 20 rounds). On one thread the same kernel measured 0.99-1.00x in
    W5's steps, so there numpy's copy stays."""
    first = arrays[0]
    total = sum(a.size for a in arrays)
    if parallel.on_one_thread(2, total, streaming=True) or len(arrays) < 2 or not -first.ndim <= axis < first.ndim:
        return np.concatenate(arrays, axis=axis)  # numpy's, and its errors
    axis %= first.ndim
    if (any(a.dtype != first.dtype or a.ndim != first.ndim or not a.flags.c_contiguous for a in arrays)
            or any(a.shape[:axis] + a.shape[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]
                   for a in arrays)):
        return np.concatenate(arrays, axis=axis)
    shape = first.shape[:axis] + (sum(a.shape[axis] for a in arrays),) + first.shape[axis + 1:]
    out = np.empty(shape, dtype=first.dtype)
    rows = int(np.prod(shape[:axis], dtype=np.int64))
    flat = out.reshape(rows, -1)
    parts = tuple(a.reshape(rows, -1) for a in arrays)
    _parallel(_concatenate_blocks, rows * -(-flat.shape[1] // CONCAT_BLOCK), total, parts, flat, CONCAT_BLOCK,
              streaming=True)
    return out
