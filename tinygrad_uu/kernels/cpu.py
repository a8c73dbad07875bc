"""The numba backend: the same ops as ``reference.py``, compiled and run on every core.

Arguments arrive checked and normalised by ``kernels/__init__.py`` (C-contiguous
float arrays, (height, width) pairs). Each ``@njit`` kernel compiles on its first call
(once per dtype) and is cached on disk (``cache=True``), so importing this module
compiles nothing and a second run of a program starts fast.

How the speed is won:

* Every kernel works on a range of independent *tasks* (an image-channel plane, a
  panel of matrix rows) that write disjoint memory: ``for task in range(start, stop)``.
  ``_parallel`` splits the tasks among threads; the kernels release the GIL
  (``nogil=True``), so the threads run at the same time. (Numba's own
  ``parallel=True``/``prange`` does the same split, but compiles 5-7x slower: about
  a minute for this file, on every fresh install. Threads over plain kernels keep
  the first run short.)
* ``fastmath=FAST`` lets LLVM reorder sums (``reassoc``) and fuse multiply-adds
  (``contract``), which it needs to vectorise a reduction with AVX. We leave out the
  flags that assume no NaN/inf, so NaN and inf still propagate. Kernels without long
  sums (pooling, resizing, copies) get no fastmath.
* Inner loops run over a contiguous 1-D view, from 0: ``row = a[i, k0:k1]`` then
  ``row[k]``. Numba checks every index for being negative (``a[-1]`` is the last
  element); LLVM can drop that check, and vectorise, only when it can see the index
  is >= 0, which a ``range(n)`` counter is.
* Convolutions use whichever wins (measured, see ``_is_3x3`` and ``_direct``): for a
  3x3 stride-1 conv on images of 24x24 and up (nearly every conv of the course),
  blocked direct loops that keep four output channels and three taps in registers;
  *direct* loops for other stride-1 convs with few channels (a first or last layer);
  else *im2col* + BLAS: copy the receptive fields into the columns of a matrix and let
  one big matrix product do the arithmetic.
"""
from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

from . import reference

FAST = {"reassoc", "contract", "nsz", "arcp"}  # no "nnan"/"ninf": NaN must propagate
SMALL_WORK = 1 << 15  # elements; below this, one thread beats handing work to others
CHUNKS_PER_THREAD = 4
_pools: dict = {}


def _parallel(kernel, tasks: int, work: int, *args) -> None:
    """Run ``kernel(*args, start, stop)`` over tasks [0, tasks), split among threads.

    As many threads as ``numba.get_num_threads()`` (set it with ``numba.set_num_threads``
    or ``NUMBA_NUM_THREADS``); just this one when ``work`` (elements touched) is small.
    The tasks are cut into CHUNKS_PER_THREAD pieces per thread, which the threads take
    in turn as they finish: on a shared machine one thread is often slowed down, and
    the others then take over its share instead of waiting for it.
    """
    threads = min(numba.get_num_threads(), tasks)
    if threads <= 1 or work < SMALL_WORK:
        kernel(*args, 0, tasks)
        return
    key = (os.getpid(), threads)  # a forked child (a DataLoader worker) must not reuse its parent's pool
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(threads - 1, thread_name_prefix="tinygrad_uu")
    chunks = min(tasks, CHUNKS_PER_THREAD * threads)
    bounds = [tasks * i // chunks for i in range(chunks + 1)]
    taken = itertools.count()  # next() on it is atomic under the GIL

    def work_through():
        for i in iter(taken.__next__, None):
            if i >= chunks:
                return
            kernel(*args, bounds[i], bounds[i + 1])

    others = [_pools[key].submit(work_through) for _ in range(threads - 1)]
    work_through()  # this thread works too
    for job in others:
        job.result()


# =========================================================================== relu
# Elementwise, so memory-bound: numpy makes one pass too, but on one thread. Over a
# U-Net's activations (millions of values) the threads split the array in blocks.
RELU_BLOCK = 1 << 16  # elements per task (an argument of the kernels: numba freezes globals)


@njit(nogil=True, cache=True)
def _relu_forward(x, out, block, start, stop):
    lo, hi = start * block, min(stop * block, x.size)
    src, dst = x[lo:hi], out[lo:hi]  # views indexed from 0, so that LLVM vectorises
    zero = x.dtype.type(0)
    for i in range(hi - lo):
        v = src[i]
        dst[i] = zero if v <= 0 else v  # NaN <= 0 is False: a NaN stays NaN


@njit(nogil=True, cache=True)
def _relu_backward(g, out, gx, block, start, stop):
    lo, hi = start * block, min(stop * block, g.size)
    src, kept, dst = g[lo:hi], out[lo:hi], gx[lo:hi]
    for i in range(hi - lo):
        dst[i] = src[i] * (kept[i] > 0)


def relu_forward(x):
    if x.size < SMALL_WORK or not x.flags.c_contiguous:
        return reference.relu_forward(x)
    out = np.empty_like(x)
    _parallel(_relu_forward, -(-x.size // RELU_BLOCK), x.size, x.ravel(), out.ravel(), RELU_BLOCK)
    return out


def relu_backward(grad_out, out):
    if grad_out.size < SMALL_WORK or not (grad_out.flags.c_contiguous and out.flags.c_contiguous):
        return reference.relu_backward(grad_out, out)
    gx = np.empty_like(grad_out)
    _parallel(_relu_backward, -(-gx.size // RELU_BLOCK), gx.size, grad_out.ravel(), out.ravel(), gx.ravel(),
              RELU_BLOCK)
    return gx


# =========================================================================== batch norm
# x as (N, C, L). A task is one channel: its N * L values, read in N contiguous rows.
# Sums run in float64.

@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_stats(x, mean, var, start, stop):
    n, length = x.shape[0], x.shape[2]
    m = n * length
    for c in range(start, stop):
        total = 0.0
        for b in range(n):
            row = x[b, c]
            for t in range(length):
                total += row[t]
        mu = total / m
        squares = 0.0
        for b in range(n):
            row = x[b, c]
            for t in range(length):
                d = row[t] - mu
                squares += d * d
        mean[c], var[c] = mu, squares / m


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_forward(x, mean, inv_std, weight, bias, out, xhat, start, stop):
    for c in range(start, stop):
        mu, s = x.dtype.type(mean[c]), inv_std[c]
        w, b0 = weight[c], bias[c]
        for b in range(x.shape[0]):
            src, h, dst = x[b, c], xhat[b, c], out[b, c]
            for t in range(x.shape[2]):
                v = (src[t] - mu) * s
                h[t] = v
                dst[t] = v * w + b0


@njit(fastmath=FAST, nogil=True, cache=True)
def _bn_backward(g, xhat, scale, batch_stats, dx, sum_gx, sum_g, start, stop):
    n, length = g.shape[0], g.shape[2]
    m = n * length
    for c in range(start, stop):
        sg = sgx = 0.0
        for b in range(n):
            gr, hr = g[b, c], xhat[b, c]
            for t in range(length):
                sg += gr[t]
                sgx += gr[t] * hr[t]
        sum_g[c], sum_gx[c] = sg, sgx
        k = scale[c]
        shift = g.dtype.type(sg / m) if batch_stats else g.dtype.type(0)
        slope = g.dtype.type(sgx / m) if batch_stats else g.dtype.type(0)
        for b in range(n):
            gr, hr, dr = g[b, c], xhat[b, c], dx[b, c]
            for t in range(length):
                dr[t] = k * (gr[t] - shift - hr[t] * slope)


def batch_norm_stats(x):
    c = x.shape[1]
    mean, var = np.empty(c), np.empty(c)
    _parallel(_bn_stats, c, x.size, x, mean, var)
    return mean, var


def batch_norm_forward(x, mean, inv_std, weight, bias):
    out, xhat = np.empty_like(x), np.empty_like(x)
    _parallel(_bn_forward, x.shape[1], x.size, x, mean, inv_std, weight, bias, out, xhat)
    return out, xhat


def batch_norm_backward(g, xhat, scale, batch_stats):
    c = g.shape[1]
    dx, sum_gx, sum_g = np.empty_like(g), np.empty(c, g.dtype), np.empty(c, g.dtype)
    _parallel(_bn_backward, c, g.size, g, xhat, scale, batch_stats, dx, sum_gx, sum_g)
    return dx, sum_gx, sum_g


# =========================================================================== matmul
# c = a @ b, computed as c[i, j] = dot(a[i, :], bt[j, :]) with bt = b.T made contiguous,
# so both operands of every dot product are contiguous rows. Three levels of blocking:
#   * a 2 x 4 block of c is computed at once: each loaded value of a is used 4 times and
#     each value of bt twice, from registers (8 running sums, vectorised by LLVM);
#   * KC columns of k at a time, so the 6 rows of a block stay in L1 cache;
#   * NC rows of bt at a time, so the (NC x KC) tile of bt (64 KB) stays in L2 cache
#     while a panel of mc rows of a streams past it.
# The sizes were tuned by a sweep on a Zen 3 core (32 KB L1, 512 KB L2).
KC, NC = 1024, 16


@njit(fastmath=FAST, nogil=True, cache=True)
def _dot(a, b):
    s = a.dtype.type(0)
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(fastmath=FAST, nogil=True, cache=True)
def _dot_2x4(a0, a1, b0, b1, b2, b3, c, i, j):
    """c[i:i+2, j:j+4] += [a0; a1] @ [b0; b1; b2; b3].T with 8 sums held in registers."""
    z = a0.dtype.type(0)
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = z
    for k in range(a0.shape[0]):
        x0, x1 = a0[k], a1[k]
        y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
        c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3  # noqa: E702
        c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3  # noqa: E702
    c[i, j] += c00; c[i, j + 1] += c01; c[i, j + 2] += c02; c[i, j + 3] += c03  # noqa: E702
    c[i + 1, j] += c10; c[i + 1, j + 1] += c11; c[i + 1, j + 2] += c12; c[i + 1, j + 3] += c13  # noqa: E702


@njit(fastmath=FAST, nogil=True, cache=True)
def _matmul_tile(a, bt, c, i0, i1, j0, j1, k0, k1):
    """c[i0:i1, j0:j1] += a[i0:i1, k0:k1] @ bt[j0:j1, k0:k1].T, in 2 x 4 blocks plus edges."""
    i = i0
    while i + 2 <= i1:
        a0, a1 = a[i, k0:k1], a[i + 1, k0:k1]
        j = j0
        while j + 4 <= j1:
            _dot_2x4(a0, a1, bt[j, k0:k1], bt[j + 1, k0:k1], bt[j + 2, k0:k1], bt[j + 3, k0:k1], c, i, j)
            j += 4
        for jj in range(j, j1):
            c[i, jj] += _dot(a0, bt[jj, k0:k1])
            c[i + 1, jj] += _dot(a1, bt[jj, k0:k1])
        i += 2
    if i < i1:  # an odd last row
        for jj in range(j0, j1):
            c[i, jj] += _dot(a[i, k0:k1], bt[jj, k0:k1])


@njit(fastmath=FAST, nogil=True, cache=True)
def _matmul_kernel(a, bt, c, mc, start, stop):
    """c[p] = a[p] @ bt[p].T. a: (B, M, K), bt: (B, N, K), c: (B, M, N) zeros.

    A task is (matrix p, panel of mc rows); it walks the NC x KC tiles of bt, so
    each tile is reused by all the rows of the panel while it is in cache.
    """
    m, k, n = a.shape[1], a.shape[2], bt.shape[1]
    panels = (m + mc - 1) // mc
    for task in range(start, stop):
        p, i0 = task // panels, (task % panels) * mc
        i1 = min(i0 + mc, m)
        for j0 in range(0, n, NC):
            for k0 in range(0, k, KC):
                _matmul_tile(a[p], bt[p], c[p], i0, i1, j0, min(j0 + NC, n), k0, min(k0 + KC, k))


def matmul(a, b):
    """Batched ``a @ b`` with numpy broadcasting of the batch axes (a, b at least 2-D)."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    # Copy only where it pays: b.T of an F-ordered b, or of a transposed view, is already
    # C-contiguous and costs nothing; otherwise O(K N) copying beside O(M K N) arithmetic.
    a3 = np.ascontiguousarray(np.broadcast_to(a, batch + (m, k))).reshape(-1, m, k)
    bt3 = np.ascontiguousarray(np.broadcast_to(np.swapaxes(b, -1, -2), batch + (n, k))).reshape(-1, n, k)
    c = np.zeros((a3.shape[0], m, n), dtype=a.dtype)
    mc = 64  # smaller panels when there are too few to keep every core busy
    while mc > 2 and a3.shape[0] * -(-m // mc) < 8:
        mc //= 2
    _parallel(_matmul_kernel, a3.shape[0] * -(-m // mc), c.size * k, a3, bt3, c, mc)
    return c.reshape(batch + (m, n))


# =========================================================================== conv2d: im2col + BLAS
# The im2col matrix of x holds every receptive field as a column (L = OH*OW per image):
#
#     cols[(c*kH + i)*kW + j, n*L + y*OW + x] = xpad[n, c, y*sh + i*dh, x*sw + j*dw]
#
# (0 where the window reaches into the padding). With g = grad_out laid out as channel
# rows, grows[o, n*L + y*OW + x] = g[n, o, y, x], the conv and its two gradients are
# three matrix products, one per group, done by BLAS:
#
#     forward:  out   (C_out, N*L)      = w (C_out, C*kH*kW) @ cols
#     dx:       gcols (C*kH*kW, N*L)    = w.T @ grows,  then col2im adds gcols back into dx
#     dw:       dw    (C_out, C*kH*kW)  = grows @ cols.T
#
# The products are the arithmetic; everything else is copying, one pass each: im2col
# (once: the backward reuses the forward's matrix when the caller keeps it, see
# ``saved``), col2im, the output to NCHW (with the bias added on the way) and grad_out
# to channel rows (with grad_b summed on the way).
#
# A copy task is one (input channel, image) pair, task = c * N + n, so that the copies
# walk each row of cols from left to right, and no two tasks touch the same memory.
KEEP_COLS_BYTES = 256 << 20  # keep the forward's cols for the backward up to this size
CHUNK_BYTES = 16 << 20  # the input gradient's columns are made this much at a time (at least one image)


@njit(nogil=True, cache=True)
def _inside(size, out, stride, offset):
    """Output positions [lo, hi) whose input position ``t * stride + offset`` lies in [0, size)."""
    lo = 0 if offset >= 0 else (stride - 1 - offset) // stride
    hi = min(out, (size - 1 - offset) // stride + 1) if offset < size else 0
    return lo, max(lo, hi)


@njit(nogil=True, cache=True)
def _im2col(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, start, stop):
    """Fill cols from x (unpadded): image n's channel c fills kH*kW rows, columns [n*L, (n+1)*L).

    Each output row y copies OW' <= OW values, ``cols[row, n*L + y*OW + x] = x[n, c, iy, x*sw + jx]``.
    The copies index flat views with unsigned (``np.uint64``) offsets: numba then skips
    its negative-index check and LLVM vectorises the short copies (2.5x faster, measured,
    than through a slice per row, which also costs numba a reference count).
    """
    n_img, ch, h, wd = x.shape
    L, step = oh * ow, np.uint64(sw)
    xf, cf = x.ravel(), cols.ravel()
    for task in range(start, stop):
        c, n = task // n_img, task % n_img
        for i in range(kh):
            y0, y1 = _inside(h, oh, sh, i * dh - ph)
            for j in range(kw):
                x0, x1 = _inside(wd, ow, sw, j * dw - pw)
                row = ((c * kh + i) * kw + j) * cols.shape[1] + n * L  # flat start of the segment
                if y0 > 0 or y1 < oh or x0 > 0 or x1 < ow:  # the window reaches into the padding
                    cf[row:row + L] = 0
                for y in range(y0, y1):
                    d = np.uint64(row + y * ow + x0)
                    s = np.uint64(((n * ch + c) * h + y * sh + i * dh - ph) * wd + x0 * sw + j * dw - pw)
                    for t in range(np.uint64(x1 - x0)):
                        cf[d + t] = xf[s + t * step]


@njit(nogil=True, cache=True)
def _col2im(cols, gx, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, start, stop):
    """The adjoint of _im2col: gx[n, c] = the sum of its column entries, each added back
    where it was copied from (entries that came from the padding are dropped)."""
    n_img, ch, h, wd = gx.shape
    L, step = oh * ow, np.uint64(sw)
    cf, gf = cols.ravel(), gx.ravel()
    for task in range(start, stop):
        c, n = task // n_img, task % n_img
        plane = (n * ch + c) * h * wd
        gf[plane:plane + h * wd] = 0
        for i in range(kh):
            y0, y1 = _inside(h, oh, sh, i * dh - ph)
            for j in range(kw):
                x0, x1 = _inside(wd, ow, sw, j * dw - pw)
                row = ((c * kh + i) * kw + j) * cols.shape[1] + n * L
                for y in range(y0, y1):
                    s = np.uint64(row + y * ow + x0)
                    d = np.uint64(plane + (y * sh + i * dh - ph) * wd + x0 * sw + j * dw - pw)
                    for t in range(np.uint64(x1 - x0)):
                        gf[d + t * step] += cf[s + t]


@njit(nogil=True, cache=True)
def _rows_to_nchw(rows, bias, out, start, stop):
    """out[n, o] = rows[o, n*L:(n+1)*L] + bias[o] (no bias when it is empty). A task is one o."""
    n_img, L = out.shape[0], out.shape[2] * out.shape[3]
    for o in range(start, stop):
        add = bias[o] if bias.shape[0] else rows.dtype.type(0)
        for n in range(n_img):
            src, dst = rows[o, n * L:(n + 1) * L], out[n, o].ravel()
            for t in range(L):
                dst[t] = src[t] + add


@njit(fastmath=FAST, nogil=True, cache=True)
def _nchw_to_rows(g, rows, gb, start, stop):
    """rows[o, n*L:(n+1)*L] = g[n, o] and gb[o] = the sum of them all. A task is one o."""
    n_img, L = g.shape[0], g.shape[2] * g.shape[3]
    for o in range(start, stop):
        total = 0.0  # float64: a long float32 sum would lose digits
        for n in range(n_img):
            src, dst = g[n, o].ravel(), rows[o, n * L:(n + 1) * L]
            s = g.dtype.type(0)
            for t in range(L):
                dst[t] = src[t]
                s += src[t]
            total += s
        gb[o] = total


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
    (np.pad does the same 2-3x slower, on one thread.)"""
    (ph, pw) = padding
    if ph == 0 and pw == 0:
        return np.ascontiguousarray(x)
    n, c, h, w = x.shape
    out = np.empty((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    _parallel(_pad_planes, n * c, out.size, x, out, ph, pw)
    return out


def _unpad(xp, padding):
    (ph, pw) = padding
    if ph == 0 and pw == 0:
        return xp
    return np.ascontiguousarray(xp[:, :, ph: xp.shape[2] - ph, pw: xp.shape[3] - pw])


def _out_hw(x_shape, kernel, stride, padding, dilation):
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, k, st, p, d in zip(x_shape[2:], kernel, stride, padding, dilation))


def _cols(x, kernel, stride, padding, dilation):
    """The im2col matrix of x, shape (C*kH*kW, N*OH*OW)."""
    n, c = x.shape[:2]
    (kh, kw), (oh, ow) = kernel, _out_hw(x.shape, kernel, stride, padding, dilation)
    cols = np.empty((c * kh * kw, n * oh * ow), dtype=x.dtype)
    _parallel(_im2col, c * n, cols.size, x, cols, kh, kw, *stride, *padding, *dilation, oh, ow)
    return cols


def _saved_cols(x, kernel, stride, padding, dilation, saved):
    """The forward's im2col matrix if it was kept in ``saved``, else a new one."""
    cols = None if saved is None else saved.get("cols")
    return _cols(x, kernel, stride, padding, dilation) if cols is None else cols


def _grad_rows(grad_out):
    """grad_out (N, C_out, OH, OW) as channel rows (C_out, N*OH*OW), and grad_b (C_out,)."""
    n, co, oh, ow = grad_out.shape
    rows, gb = np.empty((co, n * oh * ow), grad_out.dtype), np.empty(co, grad_out.dtype)
    _parallel(_nchw_to_rows, co, rows.size, grad_out, rows, gb)
    return rows, gb


def _by_group(a, groups):
    """(R, cols) -> (groups, R / groups, cols): the rows of each group are a block."""
    return a.reshape(groups, a.shape[0] // groups, a.shape[1])


def conv2d_forward_im2col(x, w, b, stride, padding, dilation, groups, saved=None):
    """out = w @ cols, per group, written out as NCHW with the bias added.
    Keeps cols in ``saved["cols"]`` (when given a dict) for the backward, up to KEEP_COLS_BYTES."""
    n, co = x.shape[0], w.shape[0]
    cols = _cols(x, w.shape[2:], stride, padding, dilation)
    if saved is not None and cols.nbytes <= KEEP_COLS_BYTES:
        saved["cols"] = cols
    rows = np.matmul(_by_group(w.reshape(co, -1), groups), _by_group(cols, groups)).reshape(co, -1)
    oh, ow = _out_hw(x.shape, w.shape[2:], stride, padding, dilation)
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    bias = np.zeros(0, dtype=x.dtype) if b is None else b
    _parallel(_rows_to_nchw, co, out.size, rows, bias, out)
    return out


def _grad_input_from_rows(grows, w, x_shape, stride, padding, dilation, groups):
    """dx = col2im(w.T @ grows), per group, a chunk of images at a time.

    gcols is as big as cols (9x the image for a 3x3 kernel); made whole it is a fresh
    allocation each time (over glibc's 32 MB mmap threshold: page faults) and gone from
    the cache before col2im reads it. In chunks of at most CHUNK_BYTES (under the mmap
    threshold) glibc hands back the same memory each time. Measured dx, 1 thread, for
    the U-Net's 8x48->16 at 128x128: 120 -> 107 ms. Smaller chunks (2 MB, cache-sized)
    win another 10-20% on one thread (conv B 13.4 -> 11.8 ms) but lose 2x on two threads
    of a busy machine: every chunk is a BLAS call and a col2im, each a hand-off to a
    thread that may be waiting for a core."""
    n, c = x_shape[:2]
    co, (kh, kw) = w.shape[0], w.shape[2:]
    oh, ow = _out_hw(x_shape, (kh, kw), stride, padding, dilation)
    L = oh * ow
    wt = np.swapaxes(_by_group(w.reshape(co, -1), groups), 1, 2)
    gx = np.empty(x_shape, dtype=grows.dtype)
    chunk = max(1, CHUNK_BYTES // (wt.shape[1] * groups * L * grows.itemsize))
    for n0 in range(0, n, chunk):
        n1 = min(n, n0 + chunk)
        gcols = np.matmul(wt, _by_group(grows[:, n0 * L:n1 * L], groups))
        _parallel(_col2im, (n1 - n0) * c, gcols.size, gcols.reshape(-1, (n1 - n0) * L), gx[n0:n1],
                  kh, kw, *stride, *padding, *dilation, oh, ow)
    return gx


def _grad_weight_from_rows(cols, grows, w_shape, groups):
    """dw = grows @ cols.T, per group, computed as (cols @ grows.T).T: the same numbers, but
    OpenBLAS threads the long-K product far better this way round (measured: 30 ms instead
    of 650 ms for conv B's 64 x 12544 x 288 on 2 threads)."""
    gw_t = np.matmul(_by_group(cols, groups), np.swapaxes(_by_group(grows, groups), 1, 2))
    return np.ascontiguousarray(np.swapaxes(gw_t, 1, 2)).reshape(w_shape)


def conv2d_grad_input_im2col(grad_out, w, x_shape, stride, padding, dilation, groups):
    """dx = col2im(w.T @ grad rows), per group."""
    return _grad_input_from_rows(_grad_rows(grad_out)[0], w, x_shape, stride, padding, dilation, groups)


def conv2d_grad_weight_im2col(x, grad_out, w_shape, stride, padding, dilation, groups, saved=None):
    """dw = grad rows @ cols.T, per group (cols from ``saved`` when the forward kept them)."""
    cols = _saved_cols(x, w_shape[2:], stride, padding, dilation, saved)
    return _grad_weight_from_rows(cols, _grad_rows(grad_out)[0], w_shape, groups)


def conv2d_backward_im2col(x, w, grad_out, stride, padding, dilation, groups, need_x, need_w, saved=None):
    """All three gradients from one pass over grad_out (to channel rows, summing grad_b)
    and the forward's cols when ``saved`` holds them. Returns (dx or None, dw or None, db)."""
    grows, gb = _grad_rows(grad_out)
    gx = _grad_input_from_rows(grows, w, x.shape, stride, padding, dilation, groups) if need_x else None
    gw = None
    if need_w:
        cols = _saved_cols(x, w.shape[2:], stride, padding, dilation, saved)
        gw = _grad_weight_from_rows(cols, grows, w.shape, groups)
    return gx, gw, gb


# =========================================================================== conv2d: direct loops
# For stride 1, with the padded image flattened (row after row, Wp = padded width),
# tap (i, j) of the kernel reads the flat image shifted by  i*dh*Wp + j*dw:
#
#     wide[y*Wp + x] += w[o, c, i, j] * xflat[y*Wp + x + i*dh*Wp + j*dw]
#
# One long contiguous multiply-add per tap, which vectorises well. "wide" rows have Wp
# entries, of which the first OW are the output row (the rest read across the row
# boundary and are cut off). No copies, no matrix: best when C_in * kH * kW is small
# (a first layer on grey images), where a matrix product has almost nothing to do.

@njit(fastmath=FAST, nogil=True, cache=True)
def _direct_forward(xp, w, bias, out, dh, dw, groups, start, stop):
    """A task is one output plane (image b, output channel o)."""
    wp = xp.shape[3]
    co, cg, kh, kw = w.shape
    oh, ow = out.shape[2], out.shape[3]
    og = co // groups
    span = oh * wp - (kw - 1) * dw  # the wide positions that hold outputs
    wide = np.empty(span, dtype=xp.dtype)
    for task in range(start, stop):
        b, o = task // co, task % co
        first = (o // og) * cg  # the first input channel of o's group
        wide[:] = 0
        for c in range(cg):
            flat = xp[b, first + c].ravel()
            for i in range(kh):
                for j in range(kw):
                    wv, src = w[o, c, i, j], flat[i * dh * wp + j * dw:]
                    for t in range(span):
                        wide[t] += wv * src[t]
        add = bias[o] if bias.shape[0] else xp.dtype.type(0)
        for y in range(oh):
            dst, row = out[b, o, y], wide[y * wp:]
            for x in range(ow):
                dst[x] = row[x] + add


@njit(nogil=True, cache=True)
def _widen(g, wide, wp):
    """Lay an output-gradient plane (OH, OW) out in wide rows of Wp, zeros in between."""
    oh, ow = g.shape
    wide[:] = 0
    for y in range(oh):
        dst, src = wide[y * wp:], g[y]
        for x in range(ow):
            dst[x] = src[x]


@njit(fastmath=FAST, nogil=True, cache=True)
def _direct_grad_input(g, w, gxp, dh, dw, groups, start, stop):
    """xflat[t + i*dh*Wp + j*dw] += w[o, c, i, j] * wide_g[t]: the forward's taps, reversed.
    A task is one input plane (image b, channel ch), so writes never collide."""
    co, oh = g.shape[1], g.shape[2]
    _, cg, kh, kw = w.shape
    wp, og = gxp.shape[3], co // groups
    span = oh * wp - (kw - 1) * dw
    wide = np.empty(span, dtype=g.dtype)
    for task in range(start, stop):
        b, ch = task // (cg * groups), task % (cg * groups)
        c, first = ch % cg, (ch // cg) * og  # channel within the group, first output channel
        flat = gxp[b, ch].ravel()
        for o in range(first, first + og):
            _widen(g[b, o], wide, wp)
            for i in range(kh):
                for j in range(kw):
                    wv, dst = w[o, c, i, j], flat[i * dh * wp + j * dw:]
                    for t in range(span):
                        dst[t] += wv * wide[t]


@njit(fastmath=FAST, nogil=True, cache=True)
def _direct_grad_weight(xp, g, gw, dh, dw, groups, start, stop):
    """dw[o, c, i, j] = sum_n dot(wide_g[n, o], xflat[n, c] shifted by i*dh*Wp + j*dw).
    A task is one (output channel o, input channel c) pair."""
    n, co, oh = g.shape[0], g.shape[1], g.shape[2]
    _, cg, kh, kw = gw.shape
    wp, og = xp.shape[3], co // groups
    span = oh * wp - (kw - 1) * dw
    wide = np.empty(span, dtype=g.dtype)
    for task in range(start, stop):
        o, c = task // cg, task % cg
        ch = (o // og) * cg + c
        for b in range(n):
            _widen(g[b, o], wide, wp)
            flat = xp[b, ch].ravel()
            for i in range(kh):
                for j in range(kw):
                    src = flat[i * dh * wp + j * dw:]
                    s = xp.dtype.type(0)
                    for t in range(span):
                        s += wide[t] * src[t]
                    gw[o, c, i, j] += s


def conv2d_forward_direct(x, w, b, stride, padding, dilation, groups):
    n, co = x.shape[0], w.shape[0]
    oh, ow = _out_hw(x.shape, w.shape[2:], stride, padding, dilation)
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    bias = np.zeros(0, dtype=x.dtype) if b is None else b
    _parallel(_direct_forward, n * co, out.size * w[0].size, _pad(x, padding), w, bias, out, *dilation, groups)
    return out


def conv2d_grad_input_direct(grad_out, w, x_shape, stride, padding, dilation, groups):
    n, c, h, wd = x_shape
    (ph, pw) = padding
    gxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=grad_out.dtype)
    _parallel(_direct_grad_input, n * c, grad_out.size * w[0].size, grad_out, w, gxp, *dilation, groups)
    return _unpad(gxp, padding)


def conv2d_grad_weight_direct(x, grad_out, w_shape, stride, padding, dilation, groups):
    gw = np.zeros(w_shape, dtype=x.dtype)
    _parallel(_direct_grad_weight, w_shape[0] * w_shape[1], grad_out.size * gw[0].size,
              _pad(x, padding), grad_out, gw, *dilation, groups)
    return gw


# =========================================================================== conv2d: 3x3, stride 1
# The course's convolutions are nearly all 3x3 with stride 1. For them the direct loops
# above are rewritten for fewer memory accesses per multiply-add. With the padded image
# flat (Wp = padded width) and "wide" output rows of Wp entries as above, a pass takes
# one kernel row i and FOUR output channels o..o+3 at once:
#
#     x0, x1, x2 = x[t + i*dh*Wp], x[t + i*dh*Wp + dw], x[t + i*dh*Wp + 2*dw]
#     wide_o[t] += w[o, c, i, 0]*x0 + w[o, c, i, 1]*x1 + w[o, c, i, 2]*x2    (o..o+3)
#
# Each loaded x feeds four outputs, the twelve weights stay in registers, and LLVM
# vectorises over t (eight outputs per AVX instruction). The outputs are made in strips
# of STRIP wide positions, so that the four running strips (16 KB) stay in L1 cache
# while all input channels pass by. Measured, one thread, fastest of 8 runs (ms):
#
#     8x48->16 at 128x128: 32 (one output channel, all nine taps per pass: 41; im2col
#     + BLAS: 128; PyTorch/oneDNN: 20-29);   8x16->48 at 128x128: 30 (44);
#     8x32->32 at 64x64: 9.4 (12.7);   8x16->16 at 128x128: 10.4 (13.3).
#
# Two later changes took another 5-23% off (medians over 21 interleaved runs, W5's
# layers, one and two threads): the vector loop no longer spills weights to the stack
# (see the tail loop in _conv3x3_forward), and the strips go straight into the output
# rows instead of through a full-size "wide" buffer.
#
# The input gradient is the same kernel run on the padded output gradient, with the
# kernel flipped and in/out channels swapped (a "full" correlation); the weight
# gradient sums the products of each tap in one pass.
OUT_BLOCK = 4   # output channels per pass: 4 x 3 weights fill 12 of AVX2's 16 registers (the loop is written out for 4)
STRIP = 1024    # wide positions per strip
# The forward's four running strips are kept STRIP + STRIP_GAP values apart. Exactly 4 KB
# apart (1024 float32), a load from one strip looks to the CPU as if it might depend on
# the store just made to the one before ("4K aliasing") and waits: measured 2-6% slower.
STRIP_GAP = 32


@njit(nogil=True, cache=True)
def _block_channels(block, og, blocks, chan):
    """Fill ``chan`` with the OUT_BLOCK output channels of ``block`` (numbered across groups,
    ``blocks`` per group of ``og`` channels), repeating the group's last channel when the
    block runs past it. Returns the block's group."""
    grp = block // blocks
    first = grp * og + (block % blocks) * OUT_BLOCK
    for k in range(OUT_BLOCK):
        chan[k] = min(first + k, grp * og + og - 1)
    return grp


@njit(nogil=True, cache=True)
def _strip_to_rows(strip, s0, m, wp, dst, add):
    """dst[y, x] = strip[y * wp + x - s0] + add for the wide positions [s0, s0 + m) that
    hold outputs (x < dst's width); the gaps between rows are left out."""
    oh, ow = dst.shape
    for y in range(s0 // wp, min(oh, (s0 + m + wp - 1) // wp)):
        lo, hi = max(0, s0 - y * wp), min(ow, s0 + m - y * wp)
        src, row = strip[y * wp + lo - s0:], dst[y, lo:]
        for t in range(hi - lo):
            row[t] = src[t] + add


@njit(fastmath=FAST, nogil=True, cache=True)
def _conv3x3_forward(xp, w, bias, out, dh, dw, groups, start, stop):
    """out[b, o] = bias[o] + sum_c sum_{i,j} w[o, c, i, j] * xp[b, c'] shifted by (i*dh, j*dw).

    A task is an image b and a block of OUT_BLOCK output channels of one group. A block
    short of channels (the group's last) repeats its last channel: the same sums twice,
    written to the same place."""
    wp = xp.shape[3]
    co, cg = w.shape[0], w.shape[1]
    og = co // groups
    blocks = (og + OUT_BLOCK - 1) // OUT_BLOCK  # per group
    span = out.shape[2] * wp - 2 * dw  # the wide positions that hold outputs
    strips = np.empty((OUT_BLOCK, STRIP + STRIP_GAP), dtype=xp.dtype)
    chan = np.empty(OUT_BLOCK, dtype=np.int64)
    for task in range(start, stop):
        b = task // (groups * blocks)
        grp = _block_channels(task % (groups * blocks), og, blocks, chan)
        o0, o1, o2, o3 = chan[0], chan[1], chan[2], chan[3]
        for s0 in range(0, span, STRIP):
            m = min(STRIP, span - s0)
            whole = m - m % 8  # whole AVX vectors
            strips[:, :m] = 0
            acc0, acc1, acc2, acc3 = strips[0], strips[1], strips[2], strips[3]
            for c in range(cg):
                plane = xp[b, grp * cg + c].ravel()[s0:]
                for i in range(3):
                    # one view per tap, each indexed from 0 (see the module docstring)
                    r0 = plane[i * dh * wp:]
                    r1, r2 = r0[dw:], r0[2 * dw:]
                    a0, a1, a2 = w[o0, c, i, 0], w[o0, c, i, 1], w[o0, c, i, 2]
                    b0, b1, b2 = w[o1, c, i, 0], w[o1, c, i, 1], w[o1, c, i, 2]
                    c0, c1, c2 = w[o2, c, i, 0], w[o2, c, i, 1], w[o2, c, i, 2]
                    d0, d1, d2 = w[o3, c, i, 0], w[o3, c, i, 1], w[o3, c, i, 2]
                    for t in range(whole):
                        x0, x1, x2 = r0[t], r1[t], r2[t]
                        acc0[t] += a0 * x0 + a1 * x1 + a2 * x2
                        acc1[t] += b0 * x0 + b1 * x1 + b2 * x2
                        acc2[t] += c0 * x0 + c1 * x1 + c2 * x2
                        acc3[t] += d0 * x0 + d1 * x1 + d2 * x2
                    # The last few positions read their weights from w again. A loop that
                    # needed the twelve scalars after the vector loop would keep them in
                    # registers beside their vector copies, and LLVM would then spill
                    # seven of those vectors to the stack (measured: 8% slower).
                    for t in range(whole, m):
                        for k in range(OUT_BLOCK):
                            strips[k, t] += (w[chan[k], c, i, 0] * r0[t] + w[chan[k], c, i, 1] * r1[t]
                                             + w[chan[k], c, i, 2] * r2[t])
            for k in range(OUT_BLOCK):
                o = chan[k]
                add = bias[o] if bias.shape[0] else xp.dtype.type(0)
                _strip_to_rows(strips[k], s0, m, wp, out[b, o], add)


def _out_blocks(channels, groups):
    """How many (group, block of OUT_BLOCK output channels) pairs cover ``channels``."""
    return groups * -(-(channels // groups) // OUT_BLOCK)


@njit(fastmath=FAST, nogil=True, cache=True)
def _conv3x3_grad_weight(xp, g, gw, gb, dh, dw, groups, start, stop):
    """gw[o, c, i, j] = sum_b dot(wide g[b, o], xp[b, c'] shifted by (i*dh, j*dw)), and the
    bias gradient gb[o] = sum_b sum(g[b, o]) on the way.

    A task is a block of OUT_BLOCK output channels of one group (repeating the group's
    last channel when short, as in the forward). Per strip of STRIP wide positions, each
    input channel and kernel row: twelve running sums (4 outputs x 3 taps), the four
    gradient strips in L1 cache, each loaded x used four times."""
    n, co, oh, ow = g.shape
    cg, wp = gw.shape[1], xp.shape[3]
    og = co // groups
    blocks = (og + OUT_BLOCK - 1) // OUT_BLOCK
    span = oh * wp - 2 * dw
    wide = np.zeros((OUT_BLOCK, oh * wp), dtype=g.dtype)  # the gaps between rows stay 0
    acc = np.zeros((OUT_BLOCK, cg, 3, 3), dtype=np.float64)
    sums = np.zeros(OUT_BLOCK, dtype=np.float64)
    chan = np.empty(OUT_BLOCK, dtype=np.int64)
    for task in range(start, stop):
        grp = _block_channels(task, og, blocks, chan)
        acc[:] = 0
        sums[:] = 0
        for b in range(n):
            for k in range(OUT_BLOCK):
                total = 0.0
                for y in range(oh):
                    dst, src = wide[k, y * wp:], g[b, chan[k], y]
                    for x in range(ow):
                        dst[x] = src[x]
                        total += src[x]
                sums[k] += total
            for s0 in range(0, span, STRIP):
                m = min(STRIP, span - s0)
                u0, u1, u2, u3 = wide[0, s0:], wide[1, s0:], wide[2, s0:], wide[3, s0:]
                for c in range(cg):
                    plane = xp[b, grp * cg + c].ravel()[s0:]
                    for i in range(3):
                        r0 = plane[i * dh * wp:]
                        r1, r2 = r0[dw:], r0[2 * dw:]
                        a0 = a1 = a2 = b0 = b1 = b2 = c0 = c1 = c2 = d0 = d1 = d2 = g.dtype.type(0)
                        for t in range(m):
                            x0, x1, x2 = r0[t], r1[t], r2[t]
                            a0 += u0[t] * x0
                            a1 += u0[t] * x1
                            a2 += u0[t] * x2
                            b0 += u1[t] * x0
                            b1 += u1[t] * x1
                            b2 += u1[t] * x2
                            c0 += u2[t] * x0
                            c1 += u2[t] * x1
                            c2 += u2[t] * x2
                            d0 += u3[t] * x0
                            d1 += u3[t] * x1
                            d2 += u3[t] * x2
                        for k, row in enumerate(((a0, a1, a2), (b0, b1, b2), (c0, c1, c2), (d0, d1, d2))):
                            for j in range(3):
                                acc[k, c, i, j] += row[j]
        for k in range(OUT_BLOCK):
            gb[chan[k]] = sums[k]
            for c in range(cg):
                for i in range(3):
                    for j in range(3):
                        gw[chan[k], c, i, j] = acc[k, c, i, j]


# Measured on one thread, ms for fwd / dx / dw, nine-tap vs im2col + BLAS: 8x48->16 at
# 128x128 46/50/53 vs 133/124/128; 64x16->32 at 28x28 20/22/16 vs 23/24/24; 8x64->64
# at 16x16 5.2/5.4/3.9 vs 3.0/2.9/3.0; 64x32->64 at 7x7 16/15/10 vs 3.6/3.4/4.8. On small
# images the loops are short and every output plane re-reads every input plane, while
# one big matrix product over the whole batch keeps BLAS busy: the nine-tap kernels
# take images of at least MIN_3X3_PIXELS.
MIN_3X3_PIXELS = 24 * 24


def _is_3x3(x_shape, w_shape, stride, padding, dilation):
    """The nine-tap path: a 3x3 kernel, stride 1, padding no wider than the kernel's
    reach, an image of at least MIN_3X3_PIXELS."""
    return (tuple(w_shape[2:]) == (3, 3) and stride == (1, 1) and x_shape[2] * x_shape[3] >= MIN_3X3_PIXELS
            and all(0 <= p <= 2 * d for p, d in zip(padding, dilation)))


def conv2d_forward_3x3(x, w, b, stride, padding, dilation, groups, saved=None):
    """Keeps the padded x in ``saved["xpad"]`` (when given a dict) for the weight gradient."""
    n, co = x.shape[0], w.shape[0]
    oh, ow = _out_hw(x.shape, w.shape[2:], stride, padding, dilation)
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    bias = np.zeros(0, dtype=x.dtype) if b is None else b
    xp = _pad(x, padding)
    if saved is not None:
        saved["xpad"] = xp
    _parallel(_conv3x3_forward, n * _out_blocks(co, groups), out.size * w[0].size, xp, w, bias, out,
              *dilation, groups)
    return out


def _flipped_transposed(w, groups):
    """The kernel of the input gradient: wt[c, o, i, j] = w[o, c, 2 - i, 2 - j] within each group."""
    co, cg = w.shape[:2]
    og = co // groups
    wt = w.reshape(groups, og, cg, 3, 3).swapaxes(1, 2)[..., ::-1, ::-1]
    return np.ascontiguousarray(wt).reshape(groups * cg, og, 3, 3)


def conv2d_grad_input_3x3(grad_out, w, x_shape, stride, padding, dilation, groups):
    """dx = the "full" correlation of grad_out with the flipped kernel: pad grad_out by
    2*d - p on each side, so that every input pixel sees all the outputs it fed."""
    (dh, dw), (ph, pw) = dilation, padding
    gp = _pad(grad_out, (2 * dh - ph, 2 * dw - pw))
    gx = np.empty(x_shape, dtype=grad_out.dtype)
    _parallel(_conv3x3_forward, x_shape[0] * _out_blocks(x_shape[1], groups), gx.size * w.shape[0] // groups * 9,
              gp, _flipped_transposed(w, groups), np.zeros(0, dtype=grad_out.dtype), gx, dh, dw, groups)
    return gx


def conv2d_grad_weight_3x3(x, grad_out, w_shape, stride, padding, dilation, groups, saved=None, gb=None):
    """dw; also fills ``gb`` (when given, shape (C_out,)) with grad_out summed per channel.
    Uses the forward's padded x from ``saved`` when it kept one."""
    gw = np.empty(w_shape, dtype=x.dtype)
    xp = saved.get("xpad") if saved else None
    _parallel(_conv3x3_grad_weight, _out_blocks(w_shape[0], groups), grad_out.size * w_shape[1] * 9,
              _pad(x, padding) if xp is None else xp, grad_out, gw,
              np.empty(w_shape[0], x.dtype) if gb is None else gb, *dilation, groups)
    return gw


# --------------------------------------------------------------------------- the choice
# Measured fwd + dx + dw, one thread, batch 64, 3x3 kernels (ms, direct vs im2col), before
# the 3x3 kernels above took these image sizes: C_in 1 -> 32 at 28x28: 6 vs 29;  C_in 3 -> 16
# at 32x32: 18 vs 35;  C_in 4 -> 16 at 28x28: 12 vs 27;  C_in 32 -> 64 at 14x14: 201 vs 95.
# Direct won up to C_in*kH*kW = 36. But the direct loops stream a whole plane once per (input, output) channel pair, with
# nothing reused in between: with several channels on both sides one matrix product wins.
# Measured later, fwd + dx + dw, ms direct vs im2col, two threads (one thread): 1x1 at
# 128x128, batch 8: 16 -> 1: 2.3 vs 8.3 (3.8 vs 9.0); 3 -> 64: 17 vs 31 (28 vs 30);
# 8 -> 16: 5.6 vs 3.2 (6.4 vs 2.8); 32 -> 16: 42 vs 23 (70 vs 26); 1x1 at 14x14, batch 64,
# 32 -> 64: 36 vs 6; 3x3 at 14x14, batch 64, 4 -> 32: 6.1 vs 3.9 (7.3 vs 3.0).
DIRECT_MAX_REDUCTION = 36
DIRECT_MAX_CHANNELS = 3  # per group, on the smaller side (in or out)


def _direct(w_shape, stride, groups):
    """Direct loops for stride 1 when each output sums few products (C_in/groups * kH * kW)
    and one side has few channels (a first layer, a last 1x1 layer, a depthwise conv)."""
    co, cg, kh, kw = w_shape
    return (stride == (1, 1) and cg * kh * kw <= DIRECT_MAX_REDUCTION
            and min(cg, co // groups) <= DIRECT_MAX_CHANNELS)


# The conv entry points. ``saved`` is a dict the caller keeps from a forward to its backward
# (or None): the im2col forward leaves its cols there, and the backward reuses them.
SAVES_WORK = True  # tells kernels/__init__.py that these functions take ``saved``


def conv2d_forward(x, w, b, stride, padding, dilation, groups, saved=None):
    if _is_3x3(x.shape, w.shape, stride, padding, dilation):
        return conv2d_forward_3x3(x, w, b, stride, padding, dilation, groups, saved)
    if _direct(w.shape, stride, groups):
        return conv2d_forward_direct(x, w, b, stride, padding, dilation, groups)
    return conv2d_forward_im2col(x, w, b, stride, padding, dilation, groups, saved)


def conv2d_backward(x, w, grad_out, stride, padding, dilation, groups, need_x, need_w, saved=None):
    """(dx or None, dw or None, db): the im2col path shares its copies among the three."""
    if _is_3x3(x.shape, w.shape, stride, padding, dilation):
        gx = conv2d_grad_input_3x3(grad_out, w, x.shape, stride, padding, dilation, groups) if need_x else None
        if not need_w:
            return gx, None, grad_out.sum(axis=(0, 2, 3))
        gb = np.empty(w.shape[0], dtype=grad_out.dtype)
        gw = conv2d_grad_weight_3x3(x, grad_out, w.shape, stride, padding, dilation, groups, saved, gb)
        return gx, gw, gb
    if not _direct(w.shape, stride, groups):
        return conv2d_backward_im2col(x, w, grad_out, stride, padding, dilation, groups, need_x, need_w, saved)
    gx = conv2d_grad_input(grad_out, w, x.shape, stride, padding, dilation, groups) if need_x else None
    gw = conv2d_grad_weight(x, grad_out, w.shape, stride, padding, dilation, groups) if need_w else None
    return gx, gw, grad_out.sum(axis=(0, 2, 3))


def conv2d_grad_input(grad_out, w, x_shape, stride, padding, dilation, groups):
    if _is_3x3(x_shape, w.shape, stride, padding, dilation):
        f = conv2d_grad_input_3x3
    else:
        f = conv2d_grad_input_direct if _direct(w.shape, stride, groups) else conv2d_grad_input_im2col
    return f(grad_out, w, x_shape, stride, padding, dilation, groups)


def conv2d_grad_weight(x, grad_out, w_shape, stride, padding, dilation, groups, saved=None):
    if _is_3x3(x.shape, w_shape, stride, padding, dilation):
        return conv2d_grad_weight_3x3(x, grad_out, w_shape, stride, padding, dilation, groups)
    if _direct(w_shape, stride, groups):
        return conv2d_grad_weight_direct(x, grad_out, w_shape, stride, padding, dilation, groups)
    return conv2d_grad_weight_im2col(x, grad_out, w_shape, stride, padding, dilation, groups, saved)


# =========================================================================== pooling
# A task is one (image, channel) plane. Windows are clipped to the image instead of
# padding it: the loops skip what would be padding.

@njit(nogil=True, cache=True)
def _max_pool_forward(x, out, arg, kh, kw, sh, sw, ph, pw, start, stop):
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


@njit(nogil=True, cache=True)
def _max_pool_2x2_forward(x, out, arg, start, stop):
    """_max_pool_forward for the common 2x2 window, stride 2, no padding: the same picks
    (the first of equal values, a NaN wins), without the clipped loops (5x faster)."""
    c, w = x.shape[1], x.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    for task in range(start, stop):
        b, ch = task // c, task % c
        for y in range(oh):
            top, bottom = x[b, ch, 2 * y], x[b, ch, 2 * y + 1]
            dst, where = out[b, ch, y], arg[b, ch, y]
            for t in range(ow):
                best, at = top[2 * t], 2 * y * w + 2 * t
                for v, k in ((top[2 * t + 1], at + 1), (bottom[2 * t], at + w), (bottom[2 * t + 1], at + w + 1)):
                    if v > best or (np.isnan(v) and not np.isnan(best)):
                        best, at = v, k
                dst[t], where[t] = best, at


@njit(nogil=True, cache=True)
def _max_pool_backward(g, arg, gx, start, stop):
    """gx is (N, C, H*W): each output's gradient goes to its argmax."""
    c, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    for task in range(start, stop):
        b, ch = task // c, task % c
        dst = gx[b, ch]
        for y in range(oh):
            for xx in range(ow):
                dst[arg[b, ch, y, xx]] += g[b, ch, y, xx]


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
        for y in range(oh):
            for xx in range(ow):
                share = g[b, ch, y, xx] * scale
                for iy in range(max(0, y * sh - ph), min(h, y * sh - ph + kh)):
                    for ix in range(max(0, xx * sw - pw), min(w, xx * sw - pw + kw)):
                        dst[iy, ix] += share


def max_pool2d_forward(x, kernel, stride, padding):
    n, c = x.shape[:2]
    oh, ow = _out_hw(x.shape, kernel, stride, padding, (1, 1))
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    arg = np.empty((n, c, oh, ow), dtype=np.int64)
    if kernel == stride == (2, 2) and padding == (0, 0):
        _parallel(_max_pool_2x2_forward, n * c, x.size, x, out, arg)
    else:
        _parallel(_max_pool_forward, n * c, x.size, x, out, arg, *kernel, *stride, *padding)
    return out, arg


def max_pool2d_backward(grad_out, argmax, x_shape):
    n, c, h, w = x_shape
    gx = np.zeros((n, c, h * w), dtype=grad_out.dtype)
    _parallel(_max_pool_backward, n * c, grad_out.size, grad_out, argmax, gx)
    return gx.reshape(x_shape)


def avg_pool2d_forward(x, kernel, stride, padding):
    n, c = x.shape[:2]
    oh, ow = _out_hw(x.shape, kernel, stride, padding, (1, 1))
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    _parallel(_avg_pool_forward, n * c, x.size, x, out, *kernel, *stride, *padding)
    return out


def avg_pool2d_backward(grad_out, x_shape, kernel, stride, padding):
    gx = np.zeros(x_shape, dtype=grad_out.dtype)
    _parallel(_avg_pool_backward, x_shape[0] * x_shape[1], grad_out.size, grad_out, gx, *kernel, *stride, *padding)
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


def upsample_nearest2d_forward(x, iy, ix):
    out = np.empty(x.shape[:2] + (iy.size, ix.size), dtype=x.dtype)
    _parallel(_nearest_forward, x.shape[0] * x.shape[1], out.size, x, iy, ix, out)
    return out


@njit(fastmath=FAST, nogil=True, cache=True)
def _nearest_blocks_backward(g, gx, sy, sx, start, stop):
    """The backward of an upsampling by whole factors (sy, sx): gx[y, x] = the sum of
    its sy x sx block of g. Contiguous loops instead of the tables' scattered adds."""
    c, h, w = gx.shape[1], gx.shape[2], gx.shape[3]
    for task in range(start, stop):
        b, ch = task // c, task % c
        for y in range(h):
            dst = gx[b, ch, y]
            dst[:] = 0
            for i in range(sy):
                row = g[b, ch, y * sy + i]
                for j in range(sx):
                    src = row[j:]
                    for x in range(w):
                        dst[x] += src[x * sx]


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
