"""conv2d for 3x3 kernels, stride 1, on images of 24x24 and up: blocked direct loops."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .conv_batched import Chunks
from .elementwise import _out_hw, _pad, _relu
from ..threads import get_num_threads
from .parallel import CHUNKS_PER_THREAD, FAST, PerThread, _chunk, _parallel, _pool, on_one_thread

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
def _strip_to_rows(strip, s0, m, wp, dst, add, relu):
    """dst[y, x] = strip[y * wp + x - s0] + add (its ReLU with ``relu``; a NaN stays NaN)
    for the wide positions [s0, s0 + m) that hold outputs (x < dst's width); the gaps
    between rows are left out."""
    oh, ow = dst.shape
    zero = dst.dtype.type(0)
    for y in range(s0 // wp, min(oh, (s0 + m + wp - 1) // wp)):
        lo, hi = max(0, s0 - y * wp), min(ow, s0 + m - y * wp)
        src, row = strip[y * wp + lo - s0:], dst[y, lo:]
        for t in range(hi - lo):
            row[t] = _relu(src[t] + add, zero, relu)


@njit(fastmath=FAST, nogil=True, cache=True)
def _conv3x3_forward(xp, w, bias, out, dh, dw, groups, relu, start, stop):
    """out[b, o] = bias[o] + sum_c sum_{i,j} w[o, c, i, j] * xp[b, c'] shifted by (i*dh, j*dw),
    its ReLU with ``relu``.

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
                _strip_to_rows(strips[k], s0, m, wp, out[b, o], add, relu)


def _out_blocks(channels, groups):
    """How many (group, block of OUT_BLOCK output channels) pairs cover ``channels``."""
    return groups * -(-(channels // groups) // OUT_BLOCK)


@njit(fastmath=FAST, nogil=True, cache=True)
def _conv3x3_grad_weight(xp, g, gw, gb, dh, dw, groups, n0, n1, start, stop):
    """gw[o, c, i, j] += sum_b dot(wide g[b, o], xp[b, c'] shifted by (i*dh, j*dw)), and the
    bias gradient gb[o] += sum_b sum(g[b, o]) on the way, over the images n0 <= b < n1;
    gw and gb in float64.

    A task is a block of OUT_BLOCK output channels of one group (repeating the group's
    last channel when short, as in the forward, but added once). Per strip of STRIP wide
    positions, each input channel and kernel row: twelve running sums (4 outputs x 3
    taps), the four gradient strips in L1 cache, each loaded x used four times."""
    co, oh, ow = g.shape[1], g.shape[2], g.shape[3]
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
        for b in range(n0, n1):
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
            if k > 0 and chan[k] == chan[k - 1]:  # the group's last channel again
                continue
            gb[chan[k]] += sums[k]
            for c in range(cg):
                for i in range(3):
                    for j in range(3):
                        gw[chan[k], c, i, j] += acc[k, c, i, j]


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


def conv2d_forward_3x3(x, w, b, stride, padding, dilation, groups, saved=None, relu=False):
    """Keeps the padded x in ``saved["xpad"]`` (when given a dict) for the weight gradient;
    with ``relu``, the output's ReLU as it is written."""
    n, co = x.shape[0], w.shape[0]
    oh, ow = _out_hw(x.shape, w.shape[2:], stride, padding, dilation)
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    bias = np.zeros(0, dtype=x.dtype) if b is None else b
    xp = _pad(x, padding)
    if saved is not None:
        saved["xpad"] = xp
    _parallel(_conv3x3_forward, n * _out_blocks(co, groups), out.size * w[0].size, xp, w, bias, out,
              *dilation, groups, relu)
    return out


def forward_chunks_3x3(x, w, b, padding, dilation, groups, saved=None):
    """(out, Chunks): conv2d_forward_3x3 without the ReLU, in chunks of whole images (the
    pieces a conv that a pool follows hands on: conv_pool.py)."""
    n, co = x.shape[0], w.shape[0]
    oh, ow = _out_hw(x.shape, w.shape[2:], (1, 1), padding, dilation)
    out = np.empty((n, co, oh, ow), dtype=x.dtype)
    bias = np.zeros(0, dtype=x.dtype) if b is None else b
    xp = _pad(x, padding)
    if saved is not None:
        saved["xpad"] = xp
    blocks, count = _out_blocks(co, groups), image_chunks(n)

    def run(k):
        n0, n1 = _chunk(k, n, count)
        _conv3x3_forward(xp, w, bias, out, *dilation, groups, False, n0 * blocks, n1 * blocks)

    return out, Chunks(count, 1, run, lambda k: _chunk(k, n, count))


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
              gp, _flipped_transposed(w, groups), np.zeros(0, dtype=grad_out.dtype), gx, dh, dw, groups, False)
    return gx


def image_chunks(n):
    """How many chunks of whole images the 3x3 loops cut a batch of n into."""
    return min(n, CHUNKS_PER_THREAD * get_num_threads())


def padded_input(x, padding, saved):
    """x padded, the forward's (``saved["xpad"]``) where it kept it."""
    xp = saved.get("xpad") if saved else None
    return _pad(x, padding) if xp is None else xp


def _dw_and_db(total, w_shape):
    """(dw, db): views of one float64 array that holds dw's values, then db's."""
    size = math.prod(w_shape)
    return total[:size].reshape(w_shape), total[size:]


def grad_weight_chunks_3x3(xp, grad_out, w_shape, dilation, groups, count):
    """(Chunks, sums): chunk k adds the share of images _chunk(k, N, count) in dw and db to
    its thread's float64 sums; once every chunk has run, sums() returns them added up
    (dw and db, float64)."""
    n = xp.shape[0]
    blocks = _out_blocks(w_shape[0], groups)
    partials = PerThread(lambda: np.zeros(math.prod(w_shape) + w_shape[0]))

    def run(k):
        _conv3x3_grad_weight(xp, grad_out, *_dw_and_db(partials.mine(), w_shape), *dilation, groups,
                             *_chunk(k, n, count), 0, blocks)

    return Chunks(count, 1, run, lambda k: _chunk(k, n, count)), lambda: _dw_and_db(partials.total(), w_shape)


def conv2d_grad_weight_3x3(x, grad_out, w_shape, stride, padding, dilation, groups, saved=None, gb=None):
    """dw; also fills ``gb`` (when given, shape (C_out,)) with grad_out summed per channel.
    Uses the forward's padded x from ``saved`` when it kept one.

    The threads take blocks of output channels, each over the whole batch; or, where
    there are fewer blocks than chunks of images to give them (a first layer's 16
    channels make 4), chunks of images, each with every block, summed per thread and
    then added up. Measured, steps alternated in one process against the blocks, two
    threads (40 rounds, load 1.1): W4 1.014x (twice), W7 0.992x and 1.014x, W8 1.008x
    and 0.995x; the weight gradient alone, 16 x 8->16 at 64x64 1.11x, 64 x 3->16 at
    32x32 1.03x, 64 x 1->16 at 28x28 0.98x."""
    n = x.shape[0]
    xp = padded_input(x, padding, saved)
    blocks = _out_blocks(w_shape[0], groups)
    chunks = image_chunks(n)
    if get_num_threads() == 1 or chunks <= blocks or on_one_thread(chunks, grad_out.size * w_shape[1] * 9):
        gw, sums = _dw_and_db(np.zeros(math.prod(w_shape) + w_shape[0]), w_shape)
        _parallel(_conv3x3_grad_weight, blocks, grad_out.size * w_shape[1] * 9,
                  xp, grad_out, gw, sums, *dilation, groups, 0, n)
    else:
        plan, added_up = grad_weight_chunks_3x3(xp, grad_out, w_shape, dilation, groups, chunks)
        _pool().run(plan.run, chunks)
        gw, sums = added_up()
    if gb is not None:
        gb[...] = sums
    return gw.astype(x.dtype)
