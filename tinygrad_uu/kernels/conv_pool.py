"""A conv, its ReLU and a max pool as one op (nn.Sequential's Conv2d, ReLU, MaxPool2d).

Run as two ops, the conv is one job for the engine's threads and the pool another: each
job is a hand-off (15-40 us on two threads, the second thread starting late and the
first waiting for its last piece), and the pool reads the conv's output after it has
left the cache of the core that wrote it. Here the conv's chunks of whole images are the
job's pieces: a thread convolves a chunk and pools the same images at once. Backward,
likewise: a chunk's gradient through the pool, then through the conv (its dx and its
share of dw and db). The ReLU is the pool's (``relu=True``): it commutes with the max.

Measured on an Intel Xeon, W4's two layers alone (64 images; the forward, medians of 400
alternated calls): 1 -> 16 at 28x28 (the 3x3 loops) 578 -> 525 us on two threads, 988
-> 974 on one; 16 -> 32 at 14x14 (Winograd, packed) 800 -> 737 and 1,320 -> 1,307. W4's
training step, processes alternated against the two ops (8 rounds, load 0.4-0.9): 1.046x
on two threads (faster in all 8), 1.027x on one; its scaling from one thread to two
1.684 -> 1.715 there. Each chunk padding its own images too (the 3x3 loops): 1.004x and
1.008x, within the noise, not kept.

Paths whose pieces are whole images take part: Winograd in chunks of whole images
(packed or not), and the 3x3 loops (the backward only without dx: a first layer, whose
input needs none). Any other conv runs as the conv's job, then the pool's.
"""
from __future__ import annotations

import numpy as np

from .conv import _dw_by_3x3_loops, _is_3x3, _winograd, conv2d_backward, conv2d_forward
from .conv3x3 import forward_chunks_3x3, grad_weight_chunks_3x3, image_chunks, padded_input
from .conv_batched import _run_chunks
from .conv_winograd import _backward_chunks, _forward_chunks, _saved_filter_transform, _weight_gradient
from .parallel import PerThread, _parallel
from .pooling import NO_SUMS, _max_pool_backward, max_pool2d_backward, max_pool2d_forward, max_pool2d_planes

FUSES_POOL = True  # tells kernels/__init__.py that the two functions below are here


def _nothing(n0, n1):
    pass


def _run(plan, n, blas, before=_nothing, after=_nothing):
    """For each chunk k, on the threads (as conv_batched._run_chunks; BLAS on one thread
    with ``blas``): before(n0, n1) for its images, plan.run(k), after(n0, n1)."""
    def task(start, stop):
        for k in range(start, stop):
            n0, n1 = plan.images(k)
            before(n0, n1)
            plan.run(k)
            after(n0, n1)
    _run_chunks(task, plan.count, n, blas)


def _conv_chunks(x, w, b, stride, padding, dilation, groups, saved):
    """(out, Chunks, uses BLAS) for a conv that cuts its work in chunks, else None."""
    if _winograd(w.shape, stride, padding, dilation, groups):
        return (*_forward_chunks(x, _saved_filter_transform(w, saved), b, padding), True)
    if _is_3x3(x.shape, w.shape, stride, padding, dilation):
        return (*forward_chunks_3x3(x, w, b, padding, dilation, groups, saved), False)
    return None


def conv2d_max_pool2d_forward(x, w, b, stride, padding, dilation, groups, kernel, pool_stride, pool_padding,
                              relu=False, saved=None):
    """(out, argmax) of max_pool2d(conv2d(x, w, b), ...) (with ``relu``, its ReLU): the
    pool's output and argmax, as max_pool2d_forward's of the conv's output."""
    fused = _conv_chunks(x, w, b, stride, padding, dilation, groups, saved)
    if fused is None:
        conv = conv2d_forward(x, w, b, stride, padding, dilation, groups, saved)
        return max_pool2d_forward(conv, kernel, pool_stride, pool_padding, relu)
    conv, plan, blas = fused
    if plan.bands != 1:  # bands of one image: the pool waits for the whole conv
        _run(plan, x.shape[0], blas)
        return max_pool2d_forward(conv, kernel, pool_stride, pool_padding, relu)
    out, arg, pool = max_pool2d_planes(conv, kernel, pool_stride, pool_padding, relu)
    co = conv.shape[1]
    _run(plan, x.shape[0], blas, after=lambda n0, n1: pool(n0 * co, n1 * co))
    return out, arg


def _grad_chunks(x, w, grad_conv, stride, padding, dilation, groups, need_x, need_w, saved):
    """(Chunks, finish, the pool sums db, uses BLAS) for a conv backward cut in chunks,
    else None; finish() returns (dx, dw, db), db None where the pool is to sum it."""
    winograd = _winograd(w.shape, stride, padding, dilation, groups)
    by_loops = _dw_by_3x3_loops(x.shape, w.shape, stride, padding, dilation, winograd)
    if winograd and not by_loops:  # conv.conv2d_backward's Winograd path
        u = saved.get("winograd_u") if saved is not None else None
        gx, plan, du_parts = _backward_chunks(x, grad_conv, w, padding, need_x, need_w, u)

        def finish():
            return gx, (_weight_gradient(du_parts(), w.shape, x.dtype) if need_w else None), None
        return plan, finish, True, True
    if by_loops and not winograd and need_w and not need_x:
        plan, added_up = grad_weight_chunks_3x3(padded_input(x, padding, saved), grad_conv, w.shape, dilation,
                                                groups, image_chunks(x.shape[0]))

        def finish():
            gw, gb = added_up()
            return None, gw.astype(x.dtype), gb.astype(x.dtype)
        return plan, finish, False, False
    return None


def conv2d_max_pool2d_backward(x, w, grad_out, argmax, conv_shape, stride, padding, dilation, groups,
                               need_x, need_w, need_b, saved=None):
    """(dx or None, dw or None, db or None) of the op above, from the pool's grad_out and
    argmax; conv_shape is the conv's output shape."""
    n, co = conv_shape[:2]
    grad_conv = np.empty(conv_shape, dtype=grad_out.dtype)
    fused = _grad_chunks(x, w, grad_conv, stride, padding, dilation, groups, need_x, need_w, saved)
    if fused is None:
        grad_conv = max_pool2d_backward(grad_out, argmax, conv_shape)
        return conv2d_backward(x, w, grad_conv, stride, padding, dilation, groups, need_x, need_w, saved, need_b)
    plan, finish, pool_sums_db, blas = fused
    flat = grad_conv.reshape(n, co, -1)
    db = PerThread(lambda: np.zeros(co)) if need_b and pool_sums_db else None

    def through_pool(first_plane, end_plane):
        _max_pool_backward(grad_out, argmax, flat, NO_SUMS if db is None else db.mine(), first_plane, end_plane)

    if plan.bands == 1:
        _run(plan, n, blas, before=lambda n0, n1: through_pool(n0 * co, n1 * co))
    else:  # bands of one image: the pool's whole gradient first
        _parallel(through_pool, n * co, grad_out.size)
        _run(plan, n, blas)
    gx, gw, gb = finish()
    if db is not None:
        gb = db.total().astype(x.dtype)
    return gx, gw, (gb if need_b else None)

