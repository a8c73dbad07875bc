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
channel rows. On the smallest maps (L < SIDE_BY_SIDE_BELOW: 4x4 in a ResNet's last stage)
a product with L = 16 columns keeps BLAS at 61-77 GFLOP/s, so there the chunk's images
are put side by side instead, cols (C*kH*kW, images*L), one product per chunk, and out
and g are copied from and to channel rows (in cache): 94-100 GFLOP/s for the products,
and 1.07-1.16x for the whole forward and backward of 64 x 64->128 at 8x8 stride 2 and of
64 x 128->128 at 4x4 (one and two threads); at 8x8 (L = 64) and up the copies cost more
than the products gain (0.93-0.97x). A chunk's cols (about CHUNK_COLS_BYTES) stay in the core's L2 cache from
the copy to the product, and each product is small enough that one BLAS thread runs it
well (87-93 GFLOP/s measured for 64 x 288 x 196, against 65 for the whole batch's
64 x 288 x 12544). The engine's threads take the chunks in turn, each calling BLAS on
one thread (``threads.single_threaded_blas``); the weight gradient is reduced over the
batch by summing the tasks' partial sums at the end.

A chunk is one numba call (``_chunk_forward_in_numba``, ``_chunk_backward_in_numba``):
its im2col matrices, then its products through the C function of numpy's own BLAS
(``cblas.py``, as Winograd's chunks do), dw's added into the thread's sum in place (beta
= 1). Called from Python, each chunk made five to eight numpy calls (``np.empty``,
slices, ``np.matmul``, ``.sum``, ``+=``), each taking the GIL, and on two threads the
threads waited on each other for it. Measured against those calls, one thread (two),
medians of 30 alternated calls: forward of 64 x 16->32 at 32x32 stride 2 1.23x (1.26x),
16 x 8->16 at 64x64 stride 2 1.34x (1.35x), 64 x 64->128 at 8x8 stride 2 1.06x (1.04x);
backward (dx, dw, db) 1.16x (1.19x), 1.35x (1.18x), 1.09x (1.17x). Training steps
alternated in one process: W7 1.105x (1.077x), W8 1.052x (1.050x). Some 1x1 convs
(``_numpy_calls``) and a BLAS whose function is not found keep the calls from Python.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, NamedTuple

import numpy as np
from numba import njit
from numba.extending import register_jitable

from ..threads import get_num_threads, single_threaded_blas
from .conv_im2col import _col2im, _col2im_from, _im2col, _im2col_into, _nchw_to_rows, _rows_to_nchw
from .elementwise import _out_hw
from . import cblas
from .parallel import CHUNKS_PER_THREAD, FAST, PerThread, _chunk, _pool


def l2_cache_bytes(default: int = 1 << 20, base: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """One core's L2 cache, as Linux reports it in ``base`` (``default`` where it does
    not), kept within 256 KB - 4 MB."""
    try:
        for entry in sorted(os.listdir(base)):
            folder = os.path.join(base, entry)
            if not entry.startswith("index"):
                continue
            with open(os.path.join(folder, "level")) as f, open(os.path.join(folder, "type")) as t:
                if f.read().strip() != "2" or t.read().strip() not in ("Unified", "Data"):
                    continue
            with open(os.path.join(folder, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            size = int(text.rstrip("KMG")) * scale
            return min(max(size, 256 << 10), 4 << 20)
    except (OSError, ValueError):
        pass
    return default


# A chunk's im2col matrices (Winograd's transformed tiles): at most this, or one image.
# On one thread, half the core's L2 cache, which leaves room there for the product's
# other operands. On more, the whole L2: fewer chunks, so fewer hand-offs between
# threads. Measured on an AMD EPYC with 1 MB of L2 a core (512 KB and 1 MB), 1 MB
# against 512 KB on two threads, steps alternated in one process: W7 1.05x, W8 1.03x,
# W2 32->64 fwd+bwd 1.03x, W4 1.00x; on one thread W2 lost 4%.
# But half the L2 on any number of threads where such a chunk still holds
# SMALL_CHUNK_MIN_IMAGES images (``_chunk_budget``): W4's Winograd layer, 64 images of
# 110 KB, then in 16 chunks of 4 images, not 8 of 8; steps on two threads alternated in
# one process (100 rounds): W4 1.025x, W8 1.00x (W2 and W7 keep their chunks).
# On an Intel Xeon with 2 MB of L2 a core, 1 MB and 2 MB against the EPYC's 512 KB and
# 1 MB, steps alternated in one process (16-80 rounds, load 1.1-1.2): on two threads W7
# 1.044x, W8 1.010x, W2 1.003x, W4 1.007x, W5 1.010x; on one W7 0.992x, W8 1.011x, W2
# 1.023x, W4 1.005x, W5 1.024x.
CHUNK_COLS_BYTES_THREADED = l2_cache_bytes()
CHUNK_COLS_BYTES = CHUNK_COLS_BYTES_THREADED // 2
SMALL_CHUNK_MIN_IMAGES = 4
SIDE_BY_SIDE_BELOW = 64  # output positions per image under which a chunk's images share one product
# In the backward, side by side up to 8x8 (and a little beyond) too: there the one product
# for dw over the chunk's images (in place of one per image, each summed into dw) gains
# more than copying g to channel rows costs. Measured fwd-less backward, side by side
# against image by image, one thread (two): 64 x 32->64 3x3 stride 2 at 16x16 1.02x
# (1.02x), 1x1 stride 2 1.28x (1.48x); 16 x 32->64 3x3 stride 2 1.03x (1.10x); at 32x32
# (L = 256) 0.93x (1.01x). Not at 8x8 for a 1x1 stride-1 conv, whose columns are x
# itself image by image: 16 x 64->16 0.86x (0.92x).
SIDE_BY_SIDE_BELOW_BACKWARD = 128


@njit(nogil=True, cache=True)
def _im2col_each(x, cols, n0, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """cols[i] = the im2col matrix (C*kH*kW, OH*OW) of image n0 + i, all in one call (at
    stride 2, one padded buffer for them all)."""
    images, rows, L = cols.shape
    _im2col_into(x[n0:n0 + images], cols.ravel(), rows * L, L, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow,
                 0, x.shape[1] * images)


@njit(nogil=True, cache=True)
def _col2im_each(gcols, gx, n0, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """gx[n0 + i] = col2im(gcols[i]): every column entry added back where it was copied from."""
    images, rows, L = gcols.shape
    _col2im_from(gcols.ravel(), rows * L, L, gx[n0:n0 + images], kh, kw, sh, sw, ph, pw, dh, dw, oh, ow,
                 0, gx.shape[1] * images)


@njit(fastmath=FAST, nogil=True, cache=True)
def _add_channel_sums(g, sums):
    """sums[c] += the sum of g[:, c, :] (g as (images, C, L)), in float64: numpy's
    g.sum(axis=(0, 2), dtype=float64) took 10 us for one image's 16 x 1024 values."""
    for b in range(g.shape[0]):
        for c in range(g.shape[1]):
            row = g[b, c]
            total = 0.0
            for t in range(row.shape[0]):
                total += row[t]
            sums[c] += total


def bias_gradient(grad_out):
    """grad_out (N, C, H, W) summed per channel, in float64, returned in grad_out's dtype."""
    sums = np.zeros(grad_out.shape[1], dtype=np.float64)
    _add_channel_sums(grad_out.reshape(grad_out.shape[0], grad_out.shape[1], -1), sums)
    return sums.astype(grad_out.dtype)


def _pointwise(geometry, side_by_side):
    """A 1x1 kernel without padding: its im2col columns are the input's pixels, every
    stride-th one, which numpy's copies pick (im2col's loops make one short copy per
    channel and image: 150 us for the 64 x 128 values of a ResNet head, against 20).
    Measured fwd + bwd against im2col, one thread (two): stride 1, 16 x 64->16 at 8x8
    1.51x (1.59x), 16 x 32->45 at 16x16 1.13x (1.07x); stride 2 side by side, 64 x
    64->128 at 8x8 1.12x (1.19x); but stride 2 image by image, 64 x 16->32 at 32x32,
    0.67x (0.91x): there numba's im2col and col2im beat numpy's strided copies."""
    kh, kw, sh, sw, ph, pw = geometry[:6]
    # x's pixels themselves at stride 1; every stride-th one, picked by numpy, side by side
    return _columns_are_x(kh, kw, sh, sw, ph, pw) or (side_by_side and _columns_are_x(kh, kw, 1, 1, ph, pw))


def _numpy_calls(geometry, side_by_side, backward):
    """Whether a chunk keeps its steps as numpy calls: a 1x1 conv whose images go side by
    side, the pixels picked by numpy, in the forward; in the backward at stride 1 only.
    Measured, the chunk as one numba call against numpy's calls, one thread (two):
    backward of 64 x 32->64 1x1 stride 2 at 16x16 (side by side) 1.20x (1.40x), of 64 x
    64->128 at 8x8 1.03x (1.34x), their forward 0.95-1.00x (1.00-1.08x); at stride 1 side
    by side (64 x 128->1 at 4x4) 0.40x forward, 0.75x backward. A 1x1 conv at stride 1
    image by image reads x itself in numba (``_columns_are_x``): 16 x 64->45 at 8x8 and
    16 x 32->45 at 16x16, 1.05-1.16x (1.06-1.24x). Steps alternated, this rule against
    numpy calls for every 1x1 conv: W7 1.017x (1.024x), W8 1.015x (1.011x)."""
    return side_by_side and _pointwise(geometry, True) and (not backward or geometry[2] == geometry[3] == 1)


@register_jitable  # plain Python where Python calls it (_pointwise), compiled inside the kernels
def _columns_are_x(kh, kw, sh, sw, ph, pw):
    """A 1x1 kernel at stride 1 without padding: an image's im2col matrix is the image."""
    return kh == kw == 1 and sh == sw == 1 and ph == pw == 0


@njit(nogil=True, inline="always")
def _image_columns(x, n0, n1, rows, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Images n0..n1's im2col matrices, (images, rows, L): x[n0:n1] itself for a 1x1 conv at
    stride 1 without padding, else made here. The products read them through raw
    addresses (``.ctypes.data``); holding the array itself until the last product keeps
    numba from freeing it before then (it frees an array after its last use, and an
    address taken from it is not a use): with the address alone, images of a chunk whose
    products BLAS ran on several threads came out wrong."""
    if _columns_are_x(kh, kw, sh, sw, ph, pw):
        return x[n0:n1].reshape(n1 - n0, rows, oh * ow)
    cols = np.empty((n1 - n0, rows, oh * ow), dtype=x.dtype)
    _im2col_each(x, cols, n0, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return cols


@njit(nogil=True, cache=True)
def _chunk_forward_in_numba(gemm, x, wg, bias, out, n0, n1, side_by_side, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Images n0..n1 of the forward in one call: their im2col matrices, then the products
    through ``gemm`` (cblas.product) into out, the bias written first (beta = 1)."""
    images, groups, og, rg = n1 - n0, wg.shape[0], wg.shape[1], wg.shape[2]
    L, co, size = oh * ow, groups * og, x.itemsize
    one, zero = x.dtype.type(1), x.dtype.type(0)
    if side_by_side:
        cols = np.empty((groups * rg, images * L), dtype=x.dtype)
        _im2col(x[n0:n1], cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0, x.shape[1] * images)
        rows = np.empty((co, images * L), dtype=x.dtype)
        for grp in range(groups):
            cblas.product(gemm, og, images * L, rg, one, wg[grp].ctypes.data, rg,
                          cols.ctypes.data + grp * rg * images * L * size, images * L,
                          zero, rows.ctypes.data + grp * og * images * L * size, images * L)
        _rows_to_nchw(rows, bias, out[n0:n1], 0, co)
        return
    cols = _image_columns(x, n0, n1, groups * rg, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    of = out.reshape(out.shape[0], co, L)
    beta = zero
    if bias.shape[0]:
        beta = one
        for i in range(n0, n1):
            for o in range(co):
                of[i, o, :] = bias[o]
    for i in range(images):
        for grp in range(groups):
            cblas.product(gemm, og, L, rg, one, wg[grp].ctypes.data, rg, cols[i].ctypes.data + grp * rg * L * size,
                          L, beta, of[n0 + i].ctypes.data + grp * og * L * size, L)


@njit(nogil=True, cache=True)
def _chunk_backward_in_numba(gemm, x, wt, grad_out, gx, gw_t, gb, n0, n1, side_by_side, need_x, need_w, need_b,
                             kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Images n0..n1 of the backward in one call, the products through ``gemm``:
    gw_t[grp] += cols[grp] @ g[grp]^T (beta = 1, into the thread's sum), dx's columns
    wt[grp] @ g[grp] put back by col2im into gx, db's sums added into gb."""
    images, groups, rg, og = n1 - n0, wt.shape[0], wt.shape[1], wt.shape[2]
    L, co, c, size = oh * ow, groups * og, x.shape[1], x.itemsize
    one, zero = x.dtype.type(1), x.dtype.type(0)
    if side_by_side:  # g as channel rows (co, images*L), db summed on the way
        width = images * L
        g = np.empty((co, width), dtype=x.dtype)
        g_sum = np.empty(co, dtype=x.dtype)
        _nchw_to_rows(grad_out[n0:n1], g, g_sum, 0, co)
        for o in range(co):
            gb[o] += g_sum[o]
        if need_w:
            cols = np.empty((groups * rg, width), dtype=x.dtype)
            _im2col(x[n0:n1], cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0, c * images)
            for grp in range(groups):
                cblas.product_transposed_b(gemm, rg, og, width, one, cols.ctypes.data + grp * rg * width * size,
                                           width, g.ctypes.data + grp * og * width * size, width,
                                           one, gw_t[grp].ctypes.data, og)
        if need_x:
            gcols = np.empty((groups * rg, width), dtype=x.dtype)
            for grp in range(groups):
                cblas.product(gemm, rg, width, og, one, wt[grp].ctypes.data, og,
                              g.ctypes.data + grp * og * width * size, width,
                              zero, gcols.ctypes.data + grp * rg * width * size, width)
            _col2im(gcols, gx[n0:n1], kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0, c * images)
        return
    gf = grad_out.reshape(grad_out.shape[0], co, L)
    if need_b:
        _add_channel_sums(gf[n0:n1], gb)
    itself = _columns_are_x(kh, kw, sh, sw, ph, pw)  # image i's matrix is x[n0 + i], dx's is gx[n0 + i]
    if need_w:
        cols = _image_columns(x, n0, n1, groups * rg, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
        for i in range(images):
            for grp in range(groups):
                cblas.product_transposed_b(gemm, rg, og, L, one, cols[i].ctypes.data + grp * rg * L * size, L,
                                           gf[n0 + i].ctypes.data + grp * og * L * size, L,
                                           one, gw_t[grp].ctypes.data, og)
    if need_x:
        # dx's columns: gx[n0 + i] itself, or a matrix per image that col2im then adds back
        gcols = gx[n0:n1].reshape(images, groups * rg, L) if itself else np.empty((images, groups * rg, L), x.dtype)
        for i in range(images):
            for grp in range(groups):
                cblas.product(gemm, rg, L, og, one, wt[grp].ctypes.data, og,
                              gf[n0 + i].ctypes.data + grp * og * L * size, L,
                              zero, gcols[i].ctypes.data + grp * rg * L * size, L)
        if not itself:
            _col2im_each(gcols, gx, n0, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)


def _chunk_cols(x, n0, n1, rows, L, geometry, side_by_side):
    """The im2col matrices of images n0..n1: (rows, images*L) side by side, else (images, rows, L)."""
    if _pointwise(geometry, side_by_side):
        sh, sw, oh, ow = geometry[2], geometry[3], geometry[8], geometry[9]
        picked = x[n0:n1, :, :sh * oh:sh, :sw * ow:sw]
        if side_by_side:
            return np.ascontiguousarray(picked.transpose(1, 0, 2, 3)).reshape(rows, -1)
        return np.ascontiguousarray(picked).reshape(n1 - n0, rows, L)  # stride 1: x itself, no copy
    if side_by_side:
        cols = np.empty((rows, (n1 - n0) * L), dtype=x.dtype)
        _im2col(x[n0:n1], cols, *geometry, 0, x.shape[1] * (n1 - n0))
    else:
        cols = np.empty((n1 - n0, rows, L), dtype=x.dtype)
        _im2col_each(x, cols, n0, *geometry)
    return cols


MIN_CHUNK_FLOPS = 16e6  # a chunk's products: at least this many flops (about 0.2 ms), when the batch has them


def _chunk_budget(image_bytes):
    """The most bytes of cols in a chunk (see CHUNK_COLS_BYTES) for images of image_bytes each."""
    if get_num_threads() == 1 or CHUNK_COLS_BYTES // max(1, image_bytes) >= SMALL_CHUNK_MIN_IMAGES:
        return CHUNK_COLS_BYTES
    return CHUNK_COLS_BYTES_THREADED


def _chunking(n, rows, cols_per_image, itemsize, flops_per_image=0):
    """The number of chunks to cut n images into: chunks of at most ``_chunk_budget``
    bytes of cols, and enough of them that every thread gets several, but each with
    MIN_CHUNK_FLOPS of products: handing a chunk to a waiting thread takes 25-180 us here
    when it sleeps (threads.py), and a 1x1 conv 64->45 at 8x8, batch 16, cut in 8 took
    0.76 ms on two threads against 0.44 ms whole on one. As many chunks for every thread,
    and (``_chunk``) of sizes that differ by one image at most: 16 images cut 7 + 7 + 2
    left one of two threads 9 of them, 64 cut 20 + 20 + 20 + 4 another 40."""
    threads = get_num_threads()
    image_bytes = rows * cols_per_image * itemsize
    per = max(1, _chunk_budget(image_bytes) // max(1, image_bytes))
    per = min(per, max(1, n // (CHUNKS_PER_THREAD * threads),
                       int(-(-MIN_CHUNK_FLOPS // max(1, flops_per_image)))))
    chunks = -(-n // per)
    if 1 < chunks and chunks % threads and n >= threads:
        chunks = min(n, chunks + threads - chunks % threads)
    return chunks


class Chunks(NamedTuple):
    """A conv's work cut for the threads: ``run(k)`` does chunk k, k in range(count), in any
    order and on any thread. With ``bands`` 1, chunk k is the whole images ``images(k)``
    (first, last + 1); else it is one band of tile rows of one image."""
    count: int
    bands: int
    run: Callable[[int], None]
    images: Callable[[int], tuple]


def _run_chunks(task, chunks, n_images, blas=True):
    """Run task(start, stop) over the chunks: on the engine's threads, with one BLAS thread
    each (chunks that call no BLAS: ``blas`` False), when there is an image for every
    thread; else here, with BLAS threaded.

    Each chunk is a piece of its own for the threads to take (``_chunking`` sized them
    for the threads already). ``_parallel`` would cut 10 chunks (four of W8's convs)
    into 8 pieces, two of them of two chunks, the last among them, and the thread that
    took it held the other up. Steps on two threads, alternated in one process: W8 1.02x
    and 0.99x in two runs (50 and 60 rounds), W5 1.00x, W7 1.00x: within the noise."""
    threads = get_num_threads()
    if threads > 1 and n_images >= threads and chunks > 1:
        with single_threaded_blas() if blas else contextlib.nullcontext():
            _pool().run(lambda k: task(k, k + 1), chunks)
    else:
        task(0, chunks)


def _geometry(x_shape, w_shape, stride, padding, dilation, groups):
    n, c = x_shape[:2]
    co, cg, kh, kw = w_shape
    oh, ow = _out_hw(x_shape, (kh, kw), stride, padding, dilation)
    return n, c, co, cg, kh, kw, oh, ow


def conv2d_forward_batched(x, w, b, stride, padding, dilation, groups):
    """out = w @ cols (+ bias), per group, a chunk of images per task."""
    n, c, co, cg, kh, kw, oh, ow = _geometry(x.shape, w.shape, stride, padding, dilation, groups)
    L, rows = oh * ow, c * kh * kw
    og, rg = co // groups, rows // groups
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    wg = w.reshape(groups, og, rg)
    bias = np.zeros(0, dtype=x.dtype) if b is None else b
    chunks = _chunking(n, rows, L, x.itemsize, 2 * og * rows * L)
    geometry = (kh, kw, *stride, *padding, *dilation, oh, ow)
    side_by_side = L < SIDE_BY_SIDE_BELOW
    gemm = None if _numpy_calls(geometry, side_by_side, False) else cblas.gemm_address(x.dtype)

    def task(start, stop):
        for k in range(start, stop):
            n0, n1 = _chunk(k, n, chunks)
            if gemm is not None:
                _chunk_forward_in_numba(gemm, x, wg, bias, out, n0, n1, side_by_side, *geometry)
                continue
            cols = _chunk_cols(x, n0, n1, rows, L, geometry, side_by_side)
            if side_by_side:  # (groups, og, images*L) as channel rows, then to NCHW with the bias
                _rows_to_nchw(np.matmul(wg, cols.reshape(groups, rg, -1)).reshape(co, -1), bias, out[n0:n1], 0, co)
                continue
            dst = out[n0:n1].reshape(n1 - n0, groups, og, L)
            np.matmul(wg, cols.reshape(n1 - n0, groups, rg, L), out=dst)
            if b is not None:
                dst += b.reshape(groups, og, 1)

    _run_chunks(task, chunks, n)
    return out


def conv2d_backward_batched(x, w, grad_out, stride, padding, dilation, groups, need_x, need_w, need_b=True):
    """(dx or None, dw or None, db or None), from one pass over the batch, a chunk of
    images per task. dx's columns are w.T @ g, put back by col2im; dw.T sums cols @ g.T
    over the task's images, with the cols built again: in cache, that costs no more than
    keeping the whole batch's cols from the forward (measured: 22.1 vs 23.2 ms fwd+bwd
    for 64 x 32->64 at 14x14 on one thread). db only with ``need_b``."""
    n, c, co, cg, kh, kw, oh, ow = _geometry(x.shape, w.shape, stride, padding, dilation, groups)
    L, rows = oh * ow, c * kh * kw
    og, rg = co // groups, rows // groups
    wt = np.ascontiguousarray(np.swapaxes(w.reshape(groups, og, rg), 1, 2))  # (groups, rg, og)
    gx = np.empty(x.shape, dtype=x.dtype) if need_x else None
    chunks = _chunking(n, rows, L, x.itemsize, 4 * og * rows * L)
    geometry = (kh, kw, *stride, *padding, *dilation, oh, ow)
    side_by_side = L < SIDE_BY_SIDE_BELOW or (L < SIDE_BY_SIDE_BELOW_BACKWARD and not _pointwise(geometry, False))
    partials = PerThread(lambda: (np.zeros((groups, rg, og), dtype=x.dtype) if need_w else None,
                                  np.zeros(co, dtype=np.float64)))  # (dw transposed, db) per thread

    gemm = None if _numpy_calls(geometry, side_by_side, True) else cblas.gemm_address(x.dtype)
    no_gx, no_gw = np.empty((0, 0, 0, 0), dtype=x.dtype), np.empty((0, 0, 0), dtype=x.dtype)  # for numba

    def task(start, stop):
        gw_t, gb = partials.mine()
        for k in range(start, stop):
            n0, n1 = _chunk(k, n, chunks)
            if gemm is not None:
                _chunk_backward_in_numba(gemm, x, wt, grad_out, no_gx if gx is None else gx,
                                         no_gw if gw_t is None else gw_t, gb, n0, n1, side_by_side, need_x,
                                         need_w, need_b, *geometry)
                continue
            if side_by_side:  # g as channel rows (groups, og, images*L), db summed on the way
                g, g_sum = np.empty((co, (n1 - n0) * L), dtype=x.dtype), np.empty(co, dtype=x.dtype)
                _nchw_to_rows(grad_out[n0:n1], g, g_sum, 0, co)
                g = g.reshape(groups, og, -1)
                gb += g_sum
            else:  # g (images, groups, og, L)
                if need_b:
                    _add_channel_sums(grad_out[n0:n1].reshape(n1 - n0, co, L), gb)
                g = grad_out[n0:n1].reshape(n1 - n0, groups, og, L)
            if need_w:
                cols = _chunk_cols(x, n0, n1, rows, L, geometry, side_by_side)
                if side_by_side:
                    gw_t += np.matmul(cols.reshape(groups, rg, -1), np.swapaxes(g, 1, 2))
                else:  # cols_n @ g_n.T (15% faster than g_n @ cols_n.T), every image in one call:
                    # a call per image cost 3-5 us each on top (64 x 16->32 1x1 stride 2: 0.34 ms of 1.25)
                    gw_t += np.matmul(cols.reshape(n1 - n0, groups, rg, L), np.swapaxes(g, 2, 3)).sum(axis=0)
            if need_x:
                gcols = np.matmul(wt, g)  # (groups, rg, images*L) or (images, groups, rg, L)
                if _pointwise(geometry, side_by_side):  # dx is gcols at the picked pixels, 0 elsewhere
                    images = gcols.reshape(rows, n1 - n0, oh, ow).transpose(1, 0, 2, 3) if side_by_side \
                        else gcols.reshape(n1 - n0, rows, oh, ow)
                    if stride != (1, 1):
                        gx[n0:n1] = 0
                    gx[n0:n1, :, :stride[0] * oh:stride[0], :stride[1] * ow:stride[1]] = images
                elif side_by_side:
                    _col2im(gcols.reshape(rows, -1), gx[n0:n1], *geometry, 0, c * (n1 - n0))
                else:
                    _col2im_each(gcols.reshape(n1 - n0, rows, L), gx, n0, *geometry)

    _run_chunks(task, chunks, n)
    gb = sum(p[1] for p in partials.values()).astype(x.dtype) if need_b else None
    gw = np.ascontiguousarray(np.swapaxes(sum(p[0] for p in partials.values()), 1, 2)).reshape(w.shape) \
        if need_w else None
    return gx, gw, gb
