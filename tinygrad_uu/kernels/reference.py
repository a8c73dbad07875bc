"""The numpy backend: every kernel written to be read, and the ground truth for tests.

Arguments arrive already checked and normalised by ``kernels/__init__.py``: arrays
are C-contiguous float32/float64, NCHW; stride, padding, dilation and kernel sizes
are (height, width) pairs of ints.

One idea carries the whole file: a sliding-window op looks at *receptive fields*.
``_windows`` views every receptive field of a padded input as an array of shape
(N, C, OH, OW, kH, kW) without copying anything. Then

* a convolution is a sum of products of those windows with the weight (an einsum),
* a pooling is a max or a mean over the last two axes,
* and every backward is the adjoint: gradients flow back into the windows and are
  added into the input at the place each window element came from (``_add_windows``).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .shapes import argmax_dtype


# --------------------------------------------------------------------------- helpers
def _pad(x, padding, value=0.0):
    (ph, pw) = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _windows(xp, kernel, stride, dilation):
    """Every receptive field of the padded input ``xp``: shape (N, C, OH, OW, kH, kW), a view.

    ``windows[n, c, oy, ox, i, j] = xp[n, c, oy * sh + i * dh, ox * sw + j * dw]``.
    """
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    extent = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    view = sliding_window_view(xp, extent, axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw]


def _add_windows(gxp, gwin, stride, dilation):
    """The adjoint of ``_windows``: add ``gwin`` (N, C, OH, OW, kH, kW) into ``gxp`` in place.

    Element (i, j) of every window came from ``xp[..., oy * sh + i * dh, ox * sw + j * dw]``,
    so that is where its gradient goes; overlapping windows add up.
    """
    (sh, sw), (dh, dw) = stride, dilation
    _, _, oh, ow, kh, kw = gwin.shape
    for i in range(kh):
        for j in range(kw):
            gxp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                j * dw: j * dw + sw * (ow - 1) + 1: sw] += gwin[..., i, j]
    return gxp


def _unpad(xp, padding):
    (ph, pw) = padding
    return np.ascontiguousarray(xp[:, :, ph: xp.shape[2] - ph, pw: xp.shape[3] - pw])


# --------------------------------------------------------------------------- binary cross-entropy
def bce_with_logits_forward(x, y):
    """(loss, e): loss = max(x, 0) - x * y + log(1 + e), e = exp(-|x|) <= 1 (no overflow)."""
    e = np.exp(-np.abs(x))
    return np.maximum(x, 0) - x * y + np.log1p(e), e


def bce_with_logits_backward(grad_out, x, e, y):
    """dL/dx = g * (sigmoid(x) - y), sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) below."""
    return grad_out * (np.where(x >= 0, 1, e) / (1 + e) - y)


# --------------------------------------------------------------------------- concatenate
def concatenate(arrays, axis):
    """The arrays joined along ``axis``."""
    return np.concatenate(arrays, axis=axis)


# --------------------------------------------------------------------------- relu
def relu_forward(x, out=None):
    """max(x, 0), into ``out`` where given; a NaN stays NaN (np.maximum propagates it)."""
    return np.maximum(x, 0, out=out)


def relu_backward(grad_out, out):
    """dL/dx = g where the output is positive (x > 0), else 0."""
    return grad_out * (out > 0)


def relu_backward_and_channel_sums(grad_out, out):
    """(relu_backward's gx, gx summed over the (N, H, W) axes of each channel, in float64)."""
    gx = relu_backward(grad_out, out)
    return gx, gx.sum(axis=(0, 2, 3), dtype=np.float64).astype(grad_out.dtype)


def add(a, b, out=None):
    """a + b, into ``out`` where given (a itself: in place)."""
    return np.add(a, b, out=out)


def add_relu_forward(a, b):
    """max(a + b, 0); a NaN stays NaN (and inf + -inf is one)."""
    with np.errstate(invalid="ignore"):
        return np.maximum(a + b, 0)


def leaky_relu_forward(x, slope):
    """x where x > 0, else slope * x; a NaN stays NaN."""
    with np.errstate(invalid="ignore"):  # inf * 0 where x = +inf (not picked) and slope = 0
        return np.where(x > 0, x, x * x.dtype.type(slope))


def leaky_relu_backward(grad_out, x, slope):
    """dL/dx = g where the input x is positive, else slope * g."""
    with np.errstate(invalid="ignore"):
        return np.where(x > 0, grad_out, grad_out * grad_out.dtype.type(slope))


# --------------------------------------------------------------------------- batch norm
# x arrives as (N, C, L): every axis after the channel one flattened into L.
def batch_norm_stats(x):
    """Per channel: the mean and the biased variance over N and L (float64)."""
    return x.mean(axis=(0, 2), dtype=np.float64), x.var(axis=(0, 2), dtype=np.float64)


def _xhat(x, mean, inv_std):
    shape = (1, -1, 1)
    return (x - mean.astype(x.dtype).reshape(shape)) * inv_std.reshape(shape)


def _leaky(y, negative_slope):
    """y where y > 0, else negative_slope * y (1: the identity); 0: ReLU, max(y, 0)."""
    if negative_slope == 0:
        return np.maximum(y, 0)
    return np.where(y > 0, y, y * y.dtype.type(negative_slope))


def batch_norm_forward(x, mean, inv_std, weight, bias, negative_slope):
    """out = act(xhat * weight + bias) with xhat = (x - mean) * inv_std, per channel, and
    act the leaky ReLU of ``negative_slope``."""
    return _leaky(_xhat(x, mean, inv_std) * weight.reshape(1, -1, 1) + bias.reshape(1, -1, 1), negative_slope)


def batch_norm_train_forward(x, weight, bias, eps, negative_slope):
    """(out, mean, var, inv_std): the batch's statistics, inv_std = 1 / sqrt(var + eps)
    (in float64, then x's dtype), and the forward with them."""
    mean, var = batch_norm_stats(x)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    return batch_norm_forward(x, mean, inv_std, weight, bias, negative_slope), mean, var, inv_std


def batch_norm_backward(g, x, mean, inv_std, weight, bias, negative_slope, batch_stats):
    """(dx, sum(gy * xhat), sum(gy)) per channel, with xhat = (x - mean) * inv_std, gy = g
    times the activation's slope at y = xhat * weight + bias (1 where y > 0, else
    negative_slope), m = N * L values per channel and scale = weight * inv_std:
    dx = scale * (gy - sum(gy) / m - xhat * sum(gy * xhat) / m) with the batch's
    statistics, else scale * gy."""
    shape = (1, -1, 1)
    xhat = _xhat(x, mean, inv_std)
    y = xhat * weight.reshape(shape) + bias.reshape(shape)
    g = np.where(y > 0, g, g * g.dtype.type(negative_slope))
    scale = inv_std * weight
    sum_g = g.sum(axis=(0, 2), dtype=np.float64)
    sum_gx = (g * xhat).sum(axis=(0, 2), dtype=np.float64)
    if batch_stats:
        m = g.shape[0] * g.shape[2]
        dx = scale.reshape(shape) * (g - (sum_g / m).astype(g.dtype).reshape(shape)
                                     - xhat * (sum_gx / m).astype(g.dtype).reshape(shape))
    else:
        dx = g * scale.reshape(shape)
    return dx.astype(g.dtype, copy=False), sum_gx.astype(g.dtype), sum_g.astype(g.dtype)


# --------------------------------------------------------------------------- matmul
def matmul(a, b):
    """``c[..., i, j] = sum_k a[..., i, k] * b[..., k, j]``, batch axes broadcast.

    Written as an einsum so the math is on the page; ``np.einsum`` without
    ``optimize`` runs its own loops, not BLAS, so this is a fair "plain numpy" peer.
    """
    return np.einsum("...ik,...kj->...ij", a, b)


# --------------------------------------------------------------------------- conv2d
def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """``out[n, o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] * xp[n, g*Cg + c, y*sh + i*dh, x*sw + j*dw]``

    where ``g = o // (C_out / groups)`` is the group of output channel o and ``Cg`` the
    input channels per group.
    """
    win = _windows(_pad(x, padding), w.shape[2:], stride, dilation)
    n, oh, ow = x.shape[0], win.shape[2], win.shape[3]
    out = np.empty((n, w.shape[0], oh, ow), dtype=x.dtype)
    cg, og = w.shape[1], w.shape[0] // groups
    for g in range(groups):
        out[:, g * og:(g + 1) * og] = np.einsum(
            "ncyxij,ocij->noyx", win[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og], optimize=True)
    if b is not None:
        out += b[None, :, None, None]
    return out


def conv2d_grad_input(grad_out, w, x_shape, stride, padding, dilation, groups):
    """``dL/dxp[n, c, y*sh + i*dh, x*sw + j*dw] += sum_o grad_out[n, o, y, x] * w[o, c, i, j]``

    (within each group), then the padding is cut off again.
    """
    n, c, h, wd = x_shape
    (ph, pw) = padding
    gxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=grad_out.dtype)
    cg, og = w.shape[1], w.shape[0] // groups
    for g in range(groups):
        gwin = np.einsum("noyx,ocij->ncyxij", grad_out[:, g * og:(g + 1) * og],
                         w[g * og:(g + 1) * og], optimize=True)
        _add_windows(gxp[:, g * cg:(g + 1) * cg], gwin, stride, dilation)
    return _unpad(gxp, padding)


def conv2d_grad_weight(x, grad_out, w_shape, stride, padding, dilation, groups):
    """``dL/dw[o, c, i, j] = sum_{n, y, x} grad_out[n, o, y, x] * xp[n, g*Cg + c, y*sh + i*dh, x*sw + j*dw]``"""
    win = _windows(_pad(x, padding), w_shape[2:], stride, dilation)
    gw = np.empty(w_shape, dtype=x.dtype)
    cg, og = w_shape[1], w_shape[0] // groups
    for g in range(groups):
        gw[g * og:(g + 1) * og] = np.einsum(
            "noyx,ncyxij->ocij", grad_out[:, g * og:(g + 1) * og], win[:, g * cg:(g + 1) * cg], optimize=True)
    return gw


# --------------------------------------------------------------------------- pooling
def max_pool2d_forward(x, kernel, stride, padding, relu=False):
    """``out = max`` over each window (padding counts as -inf, so it is never picked).

    Also returns ``argmax``: for each output, the flat index ``iy * W + ix`` of the
    input element that won (the first one, in row-major window order, on ties; a NaN
    wins, so NaN propagates as in PyTorch).

    ``relu``: then a ReLU in the same pass, out = relu(max) (a NaN stays NaN); where the
    ReLU passes no gradient (max <= 0, or NaN) the argmax is stored as -index - 1.
    """
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    win = _windows(_pad(x, padding, -np.inf), kernel, stride, (1, 1))
    oh, ow = win.shape[2], win.shape[3]
    flat = win.reshape(n, c, oh, ow, kh * kw)
    k = np.argmax(flat, axis=-1)
    out = np.take_along_axis(flat, k[..., None], axis=-1)[..., 0]
    iy = np.arange(oh)[:, None] * sh - ph + k // kw
    ix = np.arange(ow)[None, :] * sw - pw + k % kw
    arg = (iy * wd + ix).astype(argmax_dtype(h, wd))
    if relu:
        passed = out > 0
        out = np.where(passed | np.isnan(out), out, 0).astype(x.dtype)
        arg = np.where(passed, arg, -arg - 1)
    return np.ascontiguousarray(out), arg


def max_pool2d_backward(grad_out, argmax, x_shape):
    """``dL/dx[argmax[n, c, y, x]] += grad_out[n, c, y, x]``: the gradient goes to the winner
    (``g * 0`` to index i for an argmax stored as -i - 1: a ReLU after the pool zeroed it)."""
    n, c, h, w = x_shape
    gx = np.zeros((n * c, h * w), dtype=grad_out.dtype)
    rows = np.arange(n * c)[:, None]
    arg = argmax.reshape(n * c, -1)
    passed = arg >= 0
    g = np.where(passed, grad_out.reshape(n * c, -1), grad_out.reshape(n * c, -1) * 0)
    np.add.at(gx, (rows, np.where(passed, arg, -arg - 1)), g)
    return gx.reshape(x_shape)


def avg_pool2d_forward(x, kernel, stride, padding):
    """``out = sum(window) / (kH * kW)``: zero padding counts (count_include_pad=True)."""
    win = _windows(_pad(x, padding), kernel, stride, (1, 1))
    return win.sum(axis=(-2, -1)) / (kernel[0] * kernel[1])


def avg_pool2d_backward(grad_out, x_shape, kernel, stride, padding):
    """Every element of a window gets ``grad_out / (kH * kW)``; overlapping windows add up."""
    n, c, h, w = x_shape
    (kh, kw), (ph, pw) = kernel, padding
    gxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_out.dtype)
    share = grad_out / (kh * kw)
    gwin = np.broadcast_to(share[..., None, None], share.shape + (kh, kw))
    return _unpad(_add_windows(gxp, gwin, stride, (1, 1)), padding)


# --------------------------------------------------------------------------- upsampling
def upsample_nearest2d_forward(x, iy, ix):
    """``out[n, c, y, x] = x[n, c, iy[y], ix[x]]`` (the tables come from shapes.nearest_table)."""
    return np.ascontiguousarray(x[:, :, iy[:, None], ix[None, :]])


def upsample_nearest2d_backward(grad_out, iy, ix, x_shape):
    """The adjoint of a gather is a scatter-add: ``dL/dx[n, c, iy[y], ix[x]] += grad_out[n, c, y, x]``."""
    gx = np.zeros(x_shape, dtype=grad_out.dtype)
    np.add.at(gx, (slice(None), slice(None), iy[:, None], ix[None, :]), grad_out)
    return gx


def upsample_bilinear2d_forward(x, ty, tx):
    """Bilinear interpolation is separable: interpolate the rows, then the columns.

    With ``(i0, i1, w0, w1) = ty``: ``rows[.., y, :] = w0[y] * x[.., i0[y], :] + w1[y] * x[.., i1[y], :]``,
    then the same along the last axis with ``tx``.
    """
    (y0, y1, wy0, wy1), (x0, x1, wx0, wx1) = ty, tx
    rows = x[:, :, y0, :] * wy0[:, None] + x[:, :, y1, :] * wy1[:, None]
    return (rows[..., x0] * wx0 + rows[..., x1] * wx1).astype(x.dtype)


def upsample_bilinear2d_backward(grad_out, ty, tx, x_shape):
    """The adjoint, in reverse order: scatter along the columns, then along the rows.

    ``dL/drows[.., y, x0[x]] += wx0[x] * g[.., y, x]`` (same for x1), then
    ``dL/dx[.., y0[y], :] += wy0[y] * dL/drows[.., y, :]`` (same for y1).
    """
    (y0, y1, wy0, wy1), (x0, x1, wx0, wx1) = ty, tx
    n, c, h, w = x_shape
    grows = np.zeros((n, c, grad_out.shape[2], w), dtype=np.float64)
    every = (slice(None),) * 3
    np.add.at(grows, every + (x0,), grad_out * wx0)
    np.add.at(grows, every + (x1,), grad_out * wx1)
    gx = np.zeros(x_shape, dtype=np.float64)
    every = (slice(None),) * 2
    np.add.at(gx, every + (y0,), grows * wy0[:, None])
    np.add.at(gx, every + (y1,), grows * wy1[:, None])
    return gx.astype(grad_out.dtype)
