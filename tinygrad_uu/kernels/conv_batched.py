"""conv2d by im2col + BLAS with the batch cut among the engine's threads (small feature maps).

``conv_im2col.py`` builds one im2col matrix for the whole batch and makes one BLAS call
of it. On small maps with many channels (14x14 and smaller, 32-128 channels: the MNIST
CNN's second layer, the deeper layers of a detector or a ResNet) that costs more than
the arithmetic: the 9x-expanded matrix (14 MB for 64 images of 32 channels at 14x14)
leaves the cache between the copy and the product, the output comes back as channel
rows that must be copied to NCHW, and OpenBLAS gains little from a second thread on
that long, thin product (and loses a lot when the machine is busy; see threads.py).

Here a task is a chunk of a few images. Per image n of the chunk, with cols_n its own
im2col matrix (C*kH*kW, L), L = OH*OW, and g_n = grad_out[n] seen as (C_out, L):

    forward:  out[n]  (C_out, L)        = w (C_out, C*kH*kW) @ cols_n        (+ bias)
    dx:       gcols_n (C*kH*kW, L)      = w.T @ g_n,  then col2im adds it into dx[n]
    dw:       dw.T    (C*kH*kW, C_out) += cols_n @ g_n.T        (a partial sum per task)
    db:       db      (C_out,)         += g_n summed over L

(per group, for grouped convs). out[n] and g_n are already NCHW: no copies to and from
channel rows. A chunk's cols (about CHUNK_COLS_BYTES) stay in the core's L2 cache from
the copy to the product, and each product is small enough that one BLAS thread runs it
well (87-93 GFLOP/s measured for 64 x 288 x 196, against 65 for the whole batch's
64 x 288 x 12544). The engine's threads take the chunks in turn, each calling BLAS on
one thread (``threads.single_threaded_blas``); the weight gradient is reduced over the
batch by summing the tasks' partial sums at the end.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..threads import get_num_threads, single_threaded_blas
from .conv_im2col import _col2im, _im2col
from .elementwise import _out_hw
from .parallel import CHUNKS_PER_THREAD, _parallel

CHUNK_COLS_BYTES = 512 << 10  # a chunk's im2col matrices: at most this, or one image


@njit(nogil=True, cache=True)
def _im2col_each(x, cols, n0, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """cols[i] = the im2col matrix (C*kH*kW, OH*OW) of image n0 + i."""
    for i in range(cols.shape[0]):
        _im2col(x[n0 + i:n0 + i + 1], cols[i], kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0, x.shape[1])


@njit(nogil=True, cache=True)
def _col2im_each(gcols, gx, n0, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """gx[n0 + i] = col2im(gcols[i]): every column entry added back where it was copied from."""
    for i in range(gcols.shape[0]):
        _col2im(gcols[i], gx[n0 + i:n0 + i + 1], kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0, gx.shape[1])


def _chunking(n, rows, cols_per_image, itemsize):
    """(images per chunk, number of chunks): chunks of at most CHUNK_COLS_BYTES of cols,
    and enough of them that every thread gets several."""
    per = max(1, CHUNK_COLS_BYTES // max(1, rows * cols_per_image * itemsize))
    per = min(per, max(1, n // (CHUNKS_PER_THREAD * get_num_threads())))
    return per, -(-n // per)


def _run_chunks(task, chunks, n_images):
    """Run task(start, stop) over the chunks: on the engine's threads, with one BLAS thread
    each, when there is an image for every thread; else here, with BLAS threaded."""
    threads = get_num_threads()
    if threads > 1 and n_images >= threads:
        with single_threaded_blas():
            _parallel(task, chunks, 1 << 30)
    else:
        task(0, chunks)


def _geometry(x_shape, w_shape, stride, padding, dilation, groups):
    n, c = x_shape[:2]
    co, cg, kh, kw = w_shape
    oh, ow = _out_hw(x_shape, (kh, kw), stride, padding, dilation)
    return n, c, co, cg, kh, kw, oh, ow


def conv2d_forward_batched(x, w, b, stride, padding, dilation, groups):
    """out[n] = w @ cols_n (+ bias), per group, a chunk of images per task."""
    n, c, co, cg, kh, kw, oh, ow = _geometry(x.shape, w.shape, stride, padding, dilation, groups)
    L, rows = oh * ow, c * kh * kw
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    wg = w.reshape(groups, co // groups, cg * kh * kw)
    per, chunks = _chunking(n, rows, L, x.itemsize)
    geometry = (kh, kw, *stride, *padding, *dilation, oh, ow)

    def task(start, stop):
        for k in range(start, stop):
            n0, n1 = k * per, min(n, (k + 1) * per)
            cols = np.empty((n1 - n0, rows, L), dtype=x.dtype)
            _im2col_each(x, cols, n0, *geometry)
            dst = out[n0:n1].reshape(n1 - n0, groups, co // groups, L)
            np.matmul(wg, cols.reshape(n1 - n0, groups, rows // groups, L), out=dst)
            if b is not None:
                dst += b.reshape(groups, co // groups, 1)

    _run_chunks(task, chunks, n)
    return out


def conv2d_backward_batched(x, w, grad_out, stride, padding, dilation, groups, need_x, need_w):
    """(dx or None, dw or None, db), from one pass over the batch, a chunk of images per
    task. grad_out[n] is already (C_out, L): dx's columns are w.T @ g_n, put back by
    col2im; dw.T sums cols_n @ g_n.T over the task's images, with cols_n built again: in
    cache, that costs no more than keeping the whole batch's cols from the forward
    (measured: 22.1 vs 23.2 ms fwd+bwd for 64 x 32->64 at 14x14 on one thread)."""
    n, c, co, cg, kh, kw, oh, ow = _geometry(x.shape, w.shape, stride, padding, dilation, groups)
    L, rows = oh * ow, c * kh * kw
    og, rg = co // groups, rows // groups
    wt = np.ascontiguousarray(np.swapaxes(w.reshape(groups, og, rg), 1, 2))  # (groups, rg, og)
    g4 = grad_out.reshape(n, groups, og, L)
    gx = np.empty(x.shape, dtype=x.dtype) if need_x else None
    per, chunks = _chunking(n, rows, L, x.itemsize)
    geometry = (kh, kw, *stride, *padding, *dilation, oh, ow)
    partials = []  # (dw, db) of each task; list.append is atomic

    def task(start, stop):
        gw_t = np.zeros((groups, rg, og), dtype=x.dtype) if need_w else None  # dw, transposed
        gb = np.zeros((groups, og), dtype=np.float64)
        for k in range(start, stop):
            n0, n1 = k * per, min(n, (k + 1) * per)
            g = g4[n0:n1]
            gb += g.sum(axis=(0, 3), dtype=np.float64)
            if need_w:
                cols = np.empty((n1 - n0, rows, L), dtype=x.dtype)
                _im2col_each(x, cols, n0, *geometry)
                cols4 = cols.reshape(n1 - n0, groups, rg, L)
                for i in range(n1 - n0):  # cols_n @ g_n.T: 15% faster than g_n @ cols_n.T (measured)
                    gw_t += np.matmul(cols4[i], np.swapaxes(g[i], 1, 2))
            if need_x:
                gcols = np.matmul(wt, g)  # (images, groups, rg, L)
                _col2im_each(gcols.reshape(n1 - n0, rows, L), gx, n0, *geometry)
        partials.append((gw_t, gb))

    _run_chunks(task, chunks, n)
    gb = sum(p[1] for p in partials).reshape(co).astype(x.dtype)
    gw = np.ascontiguousarray(np.swapaxes(sum(p[0] for p in partials), 1, 2)).reshape(w.shape) if need_w else None
    return gx, gw, gb
