"""conv2d: which kernel runs which convolution (measured), and the backend's entry points.

* Winograd's F(4x4, 3x3) for 3x3 stride-1 convs with 16 channels or more on both sides
  (``conv_winograd.py``): 4x fewer multiplications; on maps of 24x24 and up the forward
  and dx only, except from 64x64 up on a CPU with AVX-512 (dw too; see
  ``_winograd_dw_on_big_map``);
* other 3x3 stride-1 convs on images of 24x24 and up (and dw of the big maps above):
  blocked direct loops that keep four output channels and three taps in registers
  (``conv3x3.py``);
* *direct* loops for other stride-1 convs with few channels (a first or last layer,
  ``conv_direct.py``);
* a 1x1 conv on 1x1 maps (a classifier's head after global pooling) is a matrix
  product, (N, C_in) @ (C_in, C_out), done as one (the general paths below took 40 and
  86 us forward and backward for a ResNet head of 64 x 128 -> 1 on two threads; now
  13 and 30);
* else *im2col* + BLAS: copy the receptive fields into the columns of a matrix and let
  matrix products do the arithmetic, ``conv_im2col.py`` (one product over the whole
  batch) or ``conv_batched.py`` (the batch cut among the threads).
"""
from __future__ import annotations

import functools

import numpy as np

from ..threads import get_num_threads
from .conv3x3 import _is_3x3, conv2d_forward_3x3, conv2d_grad_input_3x3, conv2d_grad_weight_3x3
from .blas import matmul
from .conv_batched import bias_gradient, conv2d_backward_batched, conv2d_forward_batched
from .elementwise import relu_forward
from .conv_direct import conv2d_forward_direct, conv2d_grad_input_direct, conv2d_grad_weight_direct
from .conv_winograd import (_is_winograd, conv2d_backward_winograd, conv2d_forward_winograd,
                            conv2d_grad_input_winograd, conv2d_grad_weight_winograd)
from .conv_im2col import (conv2d_backward_im2col, conv2d_forward_im2col, conv2d_grad_input_im2col,
                          conv2d_grad_weight_im2col)

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


# Winograd's F(2x2, 3x3) against im2col + BLAS, fwd + dx + dw, batch 64 (16 for the
# detector's), median of 15 interleaved runs, one thread (two): 16->32 at 14x14: 0.87x
# (1.43x); 32->64 at 14x14: 1.08x (1.25x); 32->32 at 16x16: 1.39x (1.83x); 64->64 at 8x8:
# 1.39x (1.53x); 128->128 at 4x4: 1.18x (1.39x); detector 48->32 at 16x16: 1.43x (1.67x).
# F(4x4, 3x3), which took its place, is faster still (conv_winograd.py).
WINOGRAD_MIN_CHANNELS = 16


def _winograd(w_shape, stride, padding, dilation, groups):
    return _is_winograd(w_shape, stride, padding, dilation, groups) and min(w_shape[:2]) >= WINOGRAD_MIN_CHANNELS


# F(4x4, 3x3) also beats the 3x3 loops on big maps, in the forward and for dx: measured
# on one thread (two), batch 8, forward against conv3x3.py: 16->16 at 128x128 1.09-1.16x
# (1.25-1.42x), 48->16 at 128x128 1.48-1.74x (1.22-1.77x), 16->32 at 64x64 1.46-1.50x
# (1.37-1.52x), 32->32 at 64x64 1.50-1.82x (1.81x); dx: 48->16 at 128x128 1.28x (1.23x),
# 32->32 at 64x64 1.59x (1.47x), 64 x 16->32 at 28x28 1.28x (1.14x). Not for dw: there
# the 3x3 loops' one pass over x and g beats the transforms of both, from 28x28 up (0.98x
# at 28x28, 0.85x at 64x64, 0.56x at 128x128, one thread), while under 24x24 (where the
# 3x3 loops do not go) Winograd makes dx and dw in one pass. The 3x3 loops then pad x
# themselves: the Winograd forward kept no padded copy.


# dw on big maps, by the CPU: the 3x3 loops (numba), or Winograd's dU products (BLAS) with
# dx in the same pass over the tiles (conv2d_backward_winograd). Measured on the backward
# alone (dx + dw + db), the joint pass against dx by Winograd and dw by the loops:
# * AMD EPYC (AVX2), one thread: Winograd's dw alone 0.98x at 28x28, 0.85x at 64x64, 0.56x
#   at 128x128 (the figures above): the loops;
# * Intel Xeon with AVX-512 (2026-11-30), one thread (two): batch 8, 48->16 at 128x128 1.08x
#   (1.23x), 16->16 at 128x128 0.94x (1.08x), 16->32 at 64x64 1.08x (1.16x), 32->32 at 64x64
#   1.36x (1.39x); batch 64, 16->16 at 32x32 1.06x (1.17x), but W8's step with it
#   0.99-0.993x (0.98-1.008x). W5's step from 64x64 up: 1.08x (1.13x). There OpenBLAS runs
#   its AVX-512 kernels (threadpoolctl reports "SkylakeX"), while LLVM, tuned for these
#   chips, gives numba's loops 256-bit vectors: the products get twice the loops' width.
# So on a CPU with AVX-512, dw goes with dx by Winograd from MIN_WINOGRAD_DW_PIXELS up.
MIN_WINOGRAD_DW_PIXELS = 64 * 64
WINOGRAD_DW_ON_BIG_MAPS = None  # None: when the CPU has AVX-512; True or False to choose


@functools.lru_cache(maxsize=None)
def _cpu_has_avx512() -> bool:
    try:
        from llvmlite import binding  # numba's compiler, so always there with the numba backend
        return bool(binding.get_host_cpu_features().get("avx512f", False))
    except Exception:  # an LLVM that cannot tell: keep the loops
        return False


def _winograd_dw_on_big_map(x_shape):
    """Whether a Winograd conv (``_winograd``) on this map makes dx and dw in one pass by
    Winograd: on a map of MIN_WINOGRAD_DW_PIXELS or more (under 24x24 it always does;
    between, the 3x3 loops take dw)."""
    wanted = _cpu_has_avx512() if WINOGRAD_DW_ON_BIG_MAPS is None else WINOGRAD_DW_ON_BIG_MAPS
    return wanted and x_shape[2] * x_shape[3] >= MIN_WINOGRAD_DW_PIXELS


# The conv entry points. ``saved`` is a dict the caller keeps from a forward to its backward
# (or None): the im2col forward leaves its cols there, and the backward reuses them.
SAVES_WORK = True  # tells kernels/__init__.py that these functions take ``saved``


def _batched(x_shape):
    """im2col + BLAS with the batch cut among the threads, when there is an image for every
    thread; else one product over the whole batch, threaded by BLAS. Measured fwd + dx +
    dw (ms, one product vs cut), one thread: 64 x 32->64 at 14x14: 22.0 vs 22.0; 16 x 64->128
    at 16x16 stride 2: 7.3 vs 8.6; 64 x 128->128 at 8x8: 49 vs 52. Two threads of a busy
    machine (load 7): 105 vs 64; 16 x 64->128 stride 2: 111 vs 18 (one BLAS product
    waits for a descheduled thread's share; threads.py)."""
    return x_shape[0] >= get_num_threads()


def _on_pixels(x_shape, w_shape, padding, groups):
    """A 1x1 conv of 1x1 maps without padding: out[n, o] = sum_c w[o, c] x[n, c] (+ b[o])."""
    return tuple(w_shape[2:]) == (1, 1) and tuple(x_shape[2:]) == (1, 1) and padding == (0, 0) and groups == 1


FUSES_RELU = True  # tells kernels/__init__.py that conv2d_forward takes ``relu``


def conv2d_forward(x, w, b, stride, padding, dilation, groups, saved=None, relu=False):
    """The conv (+ b); with ``relu`` its ReLU: as the output is written by Winograd and the
    3x3 loops, in place on the output they made by the other paths."""
    if _winograd(w.shape, stride, padding, dilation, groups):
        return conv2d_forward_winograd(x, w, b, padding, saved, relu)
    if _is_3x3(x.shape, w.shape, stride, padding, dilation):
        return conv2d_forward_3x3(x, w, b, stride, padding, dilation, groups, saved, relu)
    out = _conv2d_forward(x, w, b, stride, padding, dilation, groups, saved)
    if relu:
        relu_forward(out, out)
    return out


def _conv2d_forward(x, w, b, stride, padding, dilation, groups, saved):
    """The paths that take no ReLU on the way (conv2d_forward takes it after them)."""
    if _on_pixels(x.shape, w.shape, padding, groups):
        out = matmul(x.reshape(x.shape[0], -1), w.reshape(w.shape[0], -1).T)
        if b is not None:
            out += b
        return out.reshape(x.shape[0], w.shape[0], 1, 1)
    if _direct(w.shape, stride, groups):
        return conv2d_forward_direct(x, w, b, stride, padding, dilation, groups)
    if _batched(x.shape):
        return conv2d_forward_batched(x, w, b, stride, padding, dilation, groups)
    return conv2d_forward_im2col(x, w, b, stride, padding, dilation, groups, saved)


def _dw_by_3x3_loops(x_shape, w_shape, stride, padding, dilation, winograd):
    """Whether the 3x3 loops take dw (and db on the way); dx then by Winograd (``winograd``)
    or by the loops. Else a Winograd conv makes dx and dw in one pass by Winograd."""
    return _is_3x3(x_shape, w_shape, stride, padding, dilation) and not (winograd and _winograd_dw_on_big_map(x_shape))


def conv2d_backward(x, w, grad_out, stride, padding, dilation, groups, need_x, need_w, saved=None, need_b=True):
    """(dx or None, dw or None, db): the im2col path shares its copies among the three.
    Without ``need_b`` (a conv without bias) db is not summed where it would take a pass of
    its own over grad_out (the paths that sum it on the way may still return it)."""
    db = bias_gradient if need_b else _no_bias_gradient
    if _on_pixels(x.shape, w.shape, padding, groups):  # dx = g @ w, dw = g.T @ x, as matrices
        g2, x2, w2 = grad_out.reshape(grad_out.shape[:2]), x.reshape(x.shape[:2]), w.reshape(w.shape[:2])
        gx = matmul(g2, w2).reshape(x.shape) if need_x else None
        gw = matmul(g2.T, x2).reshape(w.shape) if need_w else None
        return gx, gw, db(grad_out)
    winograd = _winograd(w.shape, stride, padding, dilation, groups)
    if _dw_by_3x3_loops(x.shape, w.shape, stride, padding, dilation, winograd):
        gx = None
        if need_x:
            gx = conv2d_grad_input_winograd(grad_out, w, padding) if winograd else \
                conv2d_grad_input_3x3(grad_out, w, x.shape, stride, padding, dilation, groups)
        if not need_w:
            return gx, None, db(grad_out)
        gb = np.empty(w.shape[0], dtype=grad_out.dtype)
        gw = conv2d_grad_weight_3x3(x, grad_out, w.shape, stride, padding, dilation, groups, saved, gb)
        return gx, gw, gb
    if winograd:
        return conv2d_backward_winograd(x, w, grad_out, padding, need_x, need_w, need_b, saved)
    if not _direct(w.shape, stride, groups):
        if _batched(x.shape):
            return conv2d_backward_batched(x, w, grad_out, stride, padding, dilation, groups, need_x, need_w, need_b)
        return conv2d_backward_im2col(x, w, grad_out, stride, padding, dilation, groups, need_x, need_w, saved)
    gx = conv2d_grad_input(grad_out, w, x.shape, stride, padding, dilation, groups) if need_x else None
    gw = conv2d_grad_weight(x, grad_out, w.shape, stride, padding, dilation, groups) if need_w else None
    return gx, gw, db(grad_out)


def _no_bias_gradient(grad_out):
    return None


def conv2d_grad_input(grad_out, w, x_shape, stride, padding, dilation, groups):
    if _winograd(w.shape, stride, padding, dilation, groups):
        return conv2d_grad_input_winograd(grad_out, w, padding)
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
    if _winograd(w_shape, stride, padding, dilation, groups):
        return conv2d_grad_weight_winograd(x, grad_out, w_shape, padding)
    return conv2d_grad_weight_im2col(x, grad_out, w_shape, stride, padding, dilation, groups, saved)
