"""conv2d by im2col + one BLAS product over the whole batch (big images, many channels)."""
from __future__ import annotations

import numpy as np
from numba import njit

from .elementwise import _out_hw
from .parallel import FAST, U, _parallel

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
    """Fill cols from x (unpadded): image n's channel c fills kH*kW rows, columns [n*L, (n+1)*L)."""
    _im2col_into(x, cols.ravel(), oh * ow, cols.shape[1], kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, start, stop)


@njit(nogil=True, cache=True)
def _im2col_into(x, cf, image_step, row_step, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, start, stop):
    """The im2col matrix in the flat ``cf``: image n's channel c fills kH*kW rows of L
    values, ``row_step`` values apart, from n * ``image_step`` on: (L, the matrix's
    width) for the images side by side (_im2col), (C*kH*kW*L, L) for a matrix per image
    (conv_batched._im2col_each).

    Each output row y copies OW' <= OW values, ``cols[row, n*L + y*OW + x] = x[n, c, iy, x*sw + jx]``.
    The copies index flat views with unsigned (``np.uint64``) offsets: numba then skips
    its negative-index check and LLVM vectorises the short copies (2.5x faster, measured,
    than through a slice per row, which also costs numba a reference count).
    """
    if sw == 2 and kw > 1:
        _im2col_stride2(x, cf, image_step, row_step, kh, kw, sh, ph, pw, dh, dw, oh, ow, start, stop)
        return
    n_img, ch, h, wd = x.shape
    L, step = oh * ow, U(sw)
    xf = x.ravel()
    for task in range(start, stop):
        c, n = task // n_img, task % n_img
        for i in range(kh):
            y0, y1 = _inside(h, oh, sh, i * dh - ph)
            for j in range(kw):
                x0, x1 = _inside(wd, ow, sw, j * dw - pw)
                row = ((c * kh + i) * kw + j) * row_step + n * image_step  # flat start of the segment
                if y0 > 0 or y1 < oh or x0 > 0 or x1 < ow:  # the window reaches into the padding
                    cf[row:row + L] = 0
                for y in range(y0, y1):
                    d = U(row + y * ow + x0)
                    s = U(((n * ch + c) * h + y * sh + i * dh - ph) * wd + x0 * sw + j * dw - pw)
                    for t in range(U(x1 - x0)):
                        cf[d + t] = xf[s + t * step]


@njit(nogil=True, inline="always")
def _phase_buffer(h, wd, sh, ph, pw, kh, dh, oh, dtype):
    """The buffer of _im2col_stride2 and _col2im_stride2, zeroed: the plane zero-padded,
    its rows as far as the taps reach, split into its even and odd (padded) columns of
    ``half`` values each, the odd ones from ``odd`` on. Returns (buffer, half, odd, even_at,
    odd_at): a row's image columns 2t and 2t + 1 go to even_at + t and odd_at + t of the
    row (padded column 2t + pw is in phase pw % 2 at t + pw // 2, 2t + 1 + pw in the other
    at t + (pw + 1) // 2)."""
    rows, half = max(h + ph, (oh - 1) * sh + (kh - 1) * dh + 1), (wd + 2 * pw + 1) // 2
    odd = rows * half
    even_phase = pw % 2
    even_at, odd_at = U(even_phase * odd + pw // 2), U((1 - even_phase) * odd + (pw + 1) // 2)
    return np.zeros(2 * odd, dtype=dtype), half, odd, even_at, odd_at


@njit(nogil=True, inline="always")
def _tap(c, n, i, j, kh, kw, dh, dw, row_step, image_step, odd, half):
    """Tap (i, j) of image n's channel c, for _im2col_stride2 and _col2im_stride2: where its
    row of the matrix starts in the flat ``cf``, and where, in the buffer, the input of its
    output row 0 starts (padded row i*dh, column j*dw: phase (j*dw) % 2, at (j*dw) // 2)."""
    return (U(((c * kh + i) * kw + j) * row_step + n * image_step),
            U((j * dw) % 2 * odd + i * dh * half + (j * dw) // 2))


@njit(nogil=True, cache=True)
def _im2col_stride2(x, cf, image_step, row_step, kh, kw, sh, ph, pw, dh, dw, oh, ow, start, stop):
    """_im2col for stride 2 across, through a buffer of the zero-padded plane split into
    its even and odd columns: padded column 2*x + j*dw is column x + (j*dw) // 2 of phase
    (j*dw) % 2, so each tap's copy reads one phase contiguously, as at stride 1 (a copy
    with stride 2 is a gather LLVM does not vectorise), and the padding's zeros come
    from the buffer's border, so that no tap needs bounds (``cf``, ``image_step`` and
    ``row_step`` as in _im2col_into). Measured per image, one thread, against strided copies: W7's first two
    convs (3 and 8 channels at 128 and 64 px) 1.8x and 1.35x, 16 channels at 32 px
    1.14x, 64 at 8 px 1.05x. The padded buffer, in place of each tap's bounds and a
    buffer per image, against that: 64 images of 16 channels at 32 px, 32 at 16 px and 64
    at 8 px 1.40x, 1.58x and 1.45x; 16 of 8 at 64 px 1.34x; 16 of 3 at 128 px 1.09x."""
    n_img, ch, h, wd = x.shape
    phases, half, odd, even_at, odd_at = _phase_buffer(h, wd, sh, ph, pw, kh, dh, oh, x.dtype)  # border stays 0
    xf = x.ravel()
    for task in range(start, stop):
        c, n = task // n_img, task % n_img
        plane = U((n * ch + c) * h * wd)
        for y in range(h):  # image columns 2t and 2t + 1, side by side, to their phases
            src, dst = plane + U(y * wd), U((y + ph) * half)
            to_even, to_odd = dst + even_at, dst + odd_at
            for t in range(U(wd // 2)):
                phases[to_even + t] = xf[src + U(2) * t]
                phases[to_odd + t] = xf[src + U(2) * t + U(1)]
            if wd % 2:
                phases[to_even + U(wd // 2)] = xf[src + U(wd - 1)]
        for i in range(kh):
            for j in range(kw):
                row, first = _tap(c, n, i, j, kh, kw, dh, dw, row_step, image_step, odd, half)
                for y in range(oh):
                    d, s = row + U(y * ow), first + U(y * sh * half)
                    for t in range(U(ow)):
                        cf[d + t] = phases[s + t]


@njit(nogil=True, cache=True)
def _col2im(cols, gx, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, start, stop):
    """The adjoint of _im2col: gx[n, c] = the sum of its column entries, each added back
    where it was copied from (entries that came from the padding are dropped)."""
    _col2im_from(cols.ravel(), oh * ow, cols.shape[1], gx, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, start, stop)


@njit(nogil=True, cache=True)
def _col2im_from(cf, image_step, row_step, gx, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, start, stop):
    """The adjoint of _im2col_into, from the flat ``cf`` laid out as there."""
    if sw == 2 and kw > 1:
        _col2im_stride2(cf, image_step, row_step, gx, kh, kw, sh, ph, pw, dh, dw, oh, ow, start, stop)
        return
    n_img, ch, h, wd = gx.shape
    step = U(sw)
    gf = gx.ravel()
    for task in range(start, stop):
        c, n = task // n_img, task % n_img
        plane = (n * ch + c) * h * wd
        gf[plane:plane + h * wd] = 0
        for i in range(kh):
            y0, y1 = _inside(h, oh, sh, i * dh - ph)
            for j in range(kw):
                x0, x1 = _inside(wd, ow, sw, j * dw - pw)
                row = ((c * kh + i) * kw + j) * row_step + n * image_step
                for y in range(y0, y1):
                    s = U(row + y * ow + x0)
                    d = U(plane + (y * sh + i * dh - ph) * wd + x0 * sw + j * dw - pw)
                    for t in range(U(x1 - x0)):
                        gf[d + t * step] += cf[s + t]


@njit(nogil=True, cache=True)
def _col2im_stride2(cf, image_step, row_step, gx, kh, kw, sh, ph, pw, dh, dw, oh, ow, start, stop):
    """_col2im for stride 2 across, the adjoint of _im2col_stride2: each tap's entries are
    added contiguously into the even or odd columns of the zero-padded plane's buffer,
    and the plane, without its padding, is then read back from the two phases (``cf``,
    ``image_step`` and ``row_step`` as in _im2col_into). Measured per image, one
    thread, against the strided adds: 8 channels at 64 px 1.94x, 16 at 32 px 1.39x, 32
    at 16 px 1.17x, 64 at 8 px 0.99x; then the padded buffer against per-tap bounds: the
    shapes above 1.16-1.44x."""
    n_img, ch, h, wd = gx.shape
    phases, half, odd, even_at, odd_at = _phase_buffer(h, wd, sh, ph, pw, kh, dh, oh, gx.dtype)
    gf = gx.ravel()
    for task in range(start, stop):
        c, n = task // n_img, task % n_img
        phases[:] = 0
        for i in range(kh):
            for j in range(kw):
                row, first = _tap(c, n, i, j, kh, kw, dh, dw, row_step, image_step, odd, half)
                for y in range(oh):
                    s, d = row + U(y * ow), first + U(y * sh * half)
                    for t in range(U(ow)):
                        phases[d + t] += cf[s + t]
        plane = U((n * ch + c) * h * wd)
        for y in range(h):
            dst, src = plane + U(y * wd), U((y + ph) * half)
            from_even, from_odd = src + even_at, src + odd_at
            for t in range(U(wd // 2)):
                gf[dst + U(2) * t] = phases[from_even + t]
                gf[dst + U(2) * t + U(1)] = phases[from_odd + t]
            if wd % 2:
                gf[dst + U(wd - 1)] = phases[from_even + U(wd // 2)]


@njit(nogil=True, cache=True)
def _rows_to_nchw(rows, bias, out, start, stop):
    """out[n, o] = rows[o, n*L:(n+1)*L] + bias[o] (no bias when it is empty). A task is one o.
    Flat views and unsigned offsets, as in _im2col: a slice per (o, n) cost more than its
    copy when L is 16 (191 -> 39 us for 64 images of 128 channels at 4x4)."""
    n_img, channels, L = out.shape[0], out.shape[1], U(out.shape[2] * out.shape[3])
    rf, of = rows.ravel(), out.ravel()
    for o in range(start, stop):
        add = bias[o] if bias.shape[0] else rows.dtype.type(0)
        for n in range(n_img):
            src, dst = U(o * rows.shape[1] + n * L), U((n * channels + o) * L)
            for t in range(L):
                of[dst + t] = rf[src + t] + add


@njit(fastmath=FAST, nogil=True, cache=True)
def _nchw_to_rows(g, rows, gb, start, stop):
    """rows[o, n*L:(n+1)*L] = g[n, o] and gb[o] = the sum of them all. A task is one o."""
    n_img, channels, L = g.shape[0], g.shape[1], U(g.shape[2] * g.shape[3])
    gf, rf = g.ravel(), rows.ravel()
    for o in range(start, stop):
        total = 0.0  # float64: a long float32 sum would lose digits
        for n in range(n_img):
            src, dst = U((n * channels + o) * L), U(o * rows.shape[1] + n * L)
            s = g.dtype.type(0)
            for t in range(L):
                v = gf[src + t]
                rf[dst + t] = v
                s += v
            total += s
        gb[o] = total


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
