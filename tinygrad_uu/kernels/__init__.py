"""The performance core: one interface, two backends.

Every op here takes and returns numpy arrays (NCHW for images) and knows nothing of
Tensor or autograd. This file is the interface: it checks the arguments once, with
errors that name the op and the shapes, turns ``stride=2`` into ``(2, 2)`` and so on,
and hands the work to the current backend:

* ``"numba"`` (``cpu.py``, the default): numba-compiled, parallel kernels;
* ``"numpy"`` (``reference.py``): plain numpy, written to be read; the ground truth.

Pick one with the environment variable ``TINYGRAD_UU_BACKEND=numba|numpy`` or with
``set_backend("numpy")``. Importing this package compiles nothing: numba compiles a
kernel the first time it runs and caches the machine code on disk.

Backward ops are expressed through forward primitives where the math says so:
a conv2d's input gradient *is* a transposed convolution, so conv_transpose2d is
built here from the conv2d primitives and every backend gets it for free.
"""
from __future__ import annotations

import contextlib
import importlib
import os

import numpy as np

from . import shapes
from .shapes import as_float, check_4d, float_dtype

BACKENDS = {"numba": "cpu", "numpy": "reference"}

__all__ = ["BACKENDS", "get_backend", "set_backend", "use_backend", "relu_forward", "relu_backward",
           "relu_backward_and_channel_sums",
           "add_relu_forward", "add", "add_into", "leaky_relu_forward", "leaky_relu_backward",
           "bce_with_logits_forward", "bce_with_logits_backward", "batch_norm_stats",
           "batch_norm_forward", "batch_norm_train_forward", "batch_norm_backward", "matmul",
           "conv2d_forward", "conv2d_backward", "conv_transpose2d_forward",
           "conv_transpose2d_backward", "max_pool2d_forward", "max_pool2d_backward",
           "conv2d_max_pool2d_forward", "conv2d_max_pool2d_backward",
           "avg_pool2d_forward", "avg_pool2d_backward", "upsample2d_forward", "upsample2d_backward"]


def _checked_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}: choose one of {sorted(BACKENDS)} "
                         "(set_backend() or TINYGRAD_UU_BACKEND)")
    return name


_name = _checked_name(os.environ.get("TINYGRAD_UU_BACKEND", "numba").strip().lower() or "numba")


def get_backend() -> str:
    """The name of the backend the kernels run on now: ``"numba"`` or ``"numpy"``."""
    return _name


def set_backend(name: str) -> None:
    """Run every kernel from now on with backend ``name`` (``"numba"`` or ``"numpy"``)."""
    global _name
    _name = _checked_name(name)


@contextlib.contextmanager
def use_backend(name: str):
    """``with use_backend("numpy"): ...`` runs the block on that backend, then switches back."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


_modules: dict = {}  # backend name -> its module, once imported


def _impl():
    """The module of the current backend, imported on first use (numba is imported lazily).
    Kept once found: importlib.import_module costs 8 us a call, some 60 calls a step."""
    module = _modules.get(_name)
    if module is None:
        module = _modules[_name] = importlib.import_module(f".{BACKENDS[_name]}", __name__)
    return module


# --------------------------------------------------------------------------- concatenate
def concatenate(arrays, axis: int) -> np.ndarray:
    """The arrays joined along ``axis`` (numpy's rules and errors, a negative axis too)."""
    return _impl().concatenate(tuple(np.asarray(a) for a in arrays), int(axis))


# --------------------------------------------------------------------------- relu
def relu_forward(x: np.ndarray) -> np.ndarray:
    """max(x, 0) of a float array (a NaN stays NaN)."""
    return _impl().relu_forward(x)


def relu_backward(grad_out: np.ndarray, out: np.ndarray) -> np.ndarray:
    """dL/dx = grad_out where relu's output ``out`` is positive, else 0."""
    if grad_out.shape != out.shape:
        raise ValueError(f"relu_backward: grad_out has shape {grad_out.shape}, expected {out.shape}")
    return _impl().relu_backward(grad_out, out)


def relu_backward_and_channel_sums(grad_out: np.ndarray, out: np.ndarray):
    """(gx, sums) for (N, C, H, W) arrays: relu_backward's gx, and gx summed over N, H and
    W for each channel (the bias gradient of a conv whose ReLU is in the same op)."""
    if grad_out.shape != out.shape or grad_out.ndim != 4:
        raise ValueError(f"relu_backward_and_channel_sums: grad_out has shape {grad_out.shape}, "
                         f"expected {out.shape}, an (N, C, H, W) shape")
    return _impl().relu_backward_and_channel_sums(grad_out, out)


def _one_shape(op: str, a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{op}: the arrays have shapes {a.shape} and {b.shape}, expected one shape")


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b, a new array, for float arrays of one shape (autograd's sum of two gradients)."""
    _one_shape("add", a, b)
    return _impl().add(a, b)


def add_into(a: np.ndarray, b: np.ndarray) -> None:
    """a += b in place, for float arrays of one shape whose sum has a's dtype."""
    _one_shape("add_into", a, b)
    _impl().add(a, b, a)


def add_relu_forward(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """max(a + b, 0) of two float arrays of one shape (a NaN stays NaN); its backward is
    relu_backward's, for both."""
    _one_shape("add_relu_forward", a, b)
    return _impl().add_relu_forward(a, b)


def leaky_relu_forward(x: np.ndarray, negative_slope: float) -> np.ndarray:
    """x where x > 0, else negative_slope * x, of a float array (a NaN stays NaN)."""
    return _impl().leaky_relu_forward(x, float(negative_slope))


def leaky_relu_backward(grad_out: np.ndarray, x: np.ndarray, negative_slope: float) -> np.ndarray:
    """dL/dx = grad_out where the input x is positive, else negative_slope * grad_out."""
    if grad_out.shape != x.shape:
        raise ValueError(f"leaky_relu_backward: grad_out has shape {grad_out.shape}, expected {x.shape}")
    return _impl().leaky_relu_backward(grad_out, x, float(negative_slope))


# --------------------------------------------------------------------------- binary cross-entropy
def bce_with_logits_forward(x: np.ndarray, y: np.ndarray):
    """(loss, e), elementwise for logits x and targets y of x's shape:
    loss = max(x, 0) - x * y + log(1 + e), with e = exp(-|x|) kept for the backward."""
    if np.shape(y) != np.shape(x):
        raise ValueError(f"bce_with_logits_forward: x has shape {np.shape(x)}, y {np.shape(y)}")
    return _impl().bce_with_logits_forward(x, y)


def bce_with_logits_backward(grad_out: np.ndarray, x: np.ndarray, e: np.ndarray, y: np.ndarray):
    """dL/dx = grad_out * (sigmoid(x) - y), sigmoid(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) below."""
    if np.shape(grad_out) != np.shape(x):
        raise ValueError(f"bce_with_logits_backward: grad_out has shape {np.shape(grad_out)}, "
                         f"expected {np.shape(x)}")
    return _impl().bce_with_logits_backward(grad_out, x, e, y)


# --------------------------------------------------------------------------- batch norm
def _per_channel(op, x):
    """x (N, C, ...) as a C-contiguous float (N, C, L) array."""
    if np.ndim(x) < 2:
        raise ValueError(f"{op}: input must be (N, C, ...), got shape {np.shape(x)}")
    x = as_float(x, float_dtype(op, x))
    return x.reshape(x.shape[0], x.shape[1], -1)


def batch_norm_stats(x):
    """(mean, biased variance) of each channel of x (N, C, ...), over all but axis 1; float64."""
    return _impl().batch_norm_stats(_per_channel("batch_norm_stats", x))


def batch_norm_forward(x, mean, inv_std, weight, bias, negative_slope=1.0):
    """out = act(xhat * weight + bias) with xhat = (x - mean) * inv_std, each of mean,
    inv_std, weight, bias of shape (C,), and act(y) = y if y > 0 else negative_slope * y
    (1, the default: no activation; 0: ReLU); out has x's shape and dtype."""
    x3 = _per_channel("batch_norm_forward", x)
    dtype = x3.dtype
    out = _impl().batch_norm_forward(x3, np.asarray(mean, np.float64), as_float(inv_std, dtype),
                                     as_float(weight, dtype), as_float(bias, dtype), float(negative_slope))
    return out.reshape(np.shape(x))


def batch_norm_train_forward(x, weight, bias, eps, negative_slope=1.0):
    """Training's forward in one call: ``(out, mean, var, inv_std)``, with mean and the
    biased variance var of each channel over all but axis 1 (float64), inv_std = 1 /
    sqrt(var + eps) (x's dtype) and out = batch_norm_forward(x, mean, inv_std, weight,
    bias, negative_slope). The same values as batch_norm_stats, then batch_norm_forward;
    a backend may make them in fewer passes over x."""
    x3 = _per_channel("batch_norm_train_forward", x)
    dtype = x3.dtype
    out, mean, var, inv_std = _impl().batch_norm_train_forward(x3, as_float(weight, dtype), as_float(bias, dtype),
                                                               float(eps), float(negative_slope))
    return out.reshape(np.shape(x)), mean, var, inv_std


def batch_norm_backward(grad_out, x, mean, inv_std, weight, bias, batch_stats: bool, negative_slope=1.0):
    """(dx, sum(gy * xhat), sum(gy)), sums per channel, for the forward's x, mean, inv_std,
    weight, bias and negative_slope, with xhat = (x - mean) * inv_std, scale = weight *
    inv_std, and gy = grad_out times the activation's slope (1 where the forward's
    xhat * weight + bias > 0, else negative_slope):
    dx = scale * (gy - sum(gy) / m - xhat * sum(gy * xhat) / m) when the batch's own
    statistics were used (m values per channel), else scale * gy."""
    g3, x3 = _per_channel("batch_norm_backward", grad_out), _per_channel("batch_norm_backward", x)
    if g3.shape != x3.shape:
        raise ValueError(f"batch_norm_backward: grad_out has shape {np.shape(grad_out)}, "
                         f"expected {np.shape(x)}")
    dtype = g3.dtype
    dx, sum_gx, sum_g = _impl().batch_norm_backward(g3, x3.astype(dtype, copy=False),
                                                    np.asarray(mean, np.float64), as_float(inv_std, dtype),
                                                    as_float(weight, dtype), as_float(bias, dtype),
                                                    float(negative_slope), bool(batch_stats))
    return dx.reshape(np.shape(grad_out)), sum_gx, sum_g


# --------------------------------------------------------------------------- matmul
def matmul(a, b) -> np.ndarray:
    """``a @ b`` for 1-D, 2-D and batched (broadcast) float arrays, any strides."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
    dtype = float_dtype("matmul", a, b)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                         f"({a2.shape[-1]} != {b2.shape[-2]})")
    try:
        np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch shapes of {a.shape} and {b.shape} do not broadcast") from None
    out = _impl().matmul(a2.astype(dtype, copy=False), b2.astype(dtype, copy=False))
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


# --------------------------------------------------------------------------- conv2d
def _conv_inputs(op, x, w, b=None):
    check_4d(op, "input", x)
    check_4d(op, "weight", w)
    dtype = float_dtype(op, x, w) if b is None else float_dtype(op, x, w, b)
    return dtype, as_float(x, dtype), as_float(w, dtype), None if b is None else as_float(b, dtype)


def _check_bias(op, b, channels):
    if b is not None and b.shape != (channels,):
        raise ValueError(f"{op}: bias must have shape ({channels},), got {b.shape}")


def _check_grad(op, grad_out, expected):
    if tuple(grad_out.shape) != tuple(expected):
        raise ValueError(f"{op}: grad_out has shape {tuple(grad_out.shape)}, expected {tuple(expected)}")


def _saving(impl, saved) -> dict:
    """``saved=`` for a backend that reuses work between a forward and its backward
    (``SAVES_WORK``, the numba backend), nothing for one that does not."""
    return {"saved": saved} if getattr(impl, "SAVES_WORK", False) else {}


def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, saved=None,
                   relu=False) -> np.ndarray:
    """2-D cross-correlation (PyTorch's conv2d), NCHW.

    x: (N, C_in, H, W); w: (C_out, C_in / groups, kH, kW); b: (C_out,) or None.
    ``out[n, o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] * xpad[n, c', y*sh + i*dh, x*sw + j*dw]``
    with ``c'`` running over the input channels of o's group. Returns (N, C_out, OH, OW).

    ``saved``: an optional dict, to hand to ``conv2d_backward`` with the same x and w;
    the backend may leave in it what the backward can reuse (the numba backend: the
    im2col matrix of x, which it would otherwise build again).

    ``relu``: return max(out, 0) instead (a NaN stays NaN); the numba backend takes it as
    it writes the output, where its kernel can.
    """
    op = "conv2d"
    dtype, x, w, b = _conv_inputs(op, x, w, b)
    stride, padding, dilation, _ = shapes.conv2d_args(op, x.shape, w.shape, stride, padding, dilation, groups)
    _check_bias(op, b, w.shape[0])
    impl = _impl()
    if relu and getattr(impl, "FUSES_RELU", False):
        return impl.conv2d_forward(x, w, b, stride, padding, dilation, groups, **_saving(impl, saved), relu=True)
    out = impl.conv2d_forward(x, w, b, stride, padding, dilation, groups, **_saving(impl, saved))
    return impl.relu_forward(out, out) if relu else out


def conv2d_backward(x, w, grad_out, stride=1, padding=0, dilation=1, groups=1,
                    need_grad_x=True, need_grad_w=True, saved=None, need_grad_b=True):
    """Gradients of conv2d: ``(grad_x, grad_w, grad_b)``; a gradient not needed is None.

    * ``grad_x``: the transposed convolution of grad_out with w (every output pixel
      sends ``grad * w`` back to the input pixels it read),
    * ``grad_w[o, c, i, j] = sum_{n, y, x} grad_out[n, o, y, x] * xpad[n, c', y*sh + i*dh, x*sw + j*dw]``,
    * ``grad_b[o] = sum_{n, y, x} grad_out[n, o, y, x]``.

    ``saved``: the dict given to ``conv2d_forward`` for this x and w, or None.
    """
    op = "conv2d_backward"
    dtype, x, w, _ = _conv_inputs(op, x, w)
    stride, padding, dilation, (oh, ow) = shapes.conv2d_args(op, x.shape, w.shape, stride, padding,
                                                             dilation, groups)
    grad_out = as_float(grad_out, dtype)
    _check_grad(op, grad_out, (x.shape[0], w.shape[0], oh, ow))
    impl = _impl()
    if getattr(impl, "SAVES_WORK", False):  # one call, which shares its work among the gradients
        gx, gw, gb = impl.conv2d_backward(x, w, grad_out, stride, padding, dilation, groups,
                                          need_grad_x, need_grad_w, saved, need_grad_b)
        return gx, gw, gb if need_grad_b else None
    gx = impl.conv2d_grad_input(grad_out, w, x.shape, stride, padding, dilation, groups) if need_grad_x else None
    gw = impl.conv2d_grad_weight(x, grad_out, w.shape, stride, padding, dilation, groups) if need_grad_w else None
    return gx, gw, grad_out.sum(axis=(0, 2, 3)) if need_grad_b else None


def conv_transpose2d_forward(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                             groups=1) -> np.ndarray:
    """Transposed convolution (PyTorch's conv_transpose2d): the adjoint of conv2d.

    x: (N, C_in, H, W); w: (C_in, C_out / groups, kH, kW). Each input pixel adds
    ``x * w`` into the output window it maps to:
    ``out[n, o, y*sh + i*dh - ph, x*sw + j*dw - pw] += x[n, c, y, x] * w[c, o', i, j]``.
    It equals conv2d's input gradient with x in the role of grad_out.
    """
    op = "conv_transpose2d"
    dtype, x, w, b = _conv_inputs(op, x, w, b)
    stride, padding, dilation, (oh, ow) = shapes.conv_transpose2d_args(
        op, x.shape, w.shape, stride, padding, output_padding, dilation, groups)
    _check_bias(op, b, w.shape[1] * groups)
    out_shape = (x.shape[0], w.shape[1] * groups, oh, ow)
    out = _impl().conv2d_grad_input(x, w, out_shape, stride, padding, dilation, groups)
    if b is not None:
        out += b[None, :, None, None]
    return out


def conv_transpose2d_backward(x, w, grad_out, stride=1, padding=0, output_padding=0, dilation=1,
                              groups=1, need_grad_x=True, need_grad_w=True):
    """Gradients of conv_transpose2d: ``(grad_x, grad_w, grad_b)``.

    The adjoint of an adjoint is the op itself: ``grad_x = conv2d(grad_out, w)``;
    ``grad_w`` is conv2d's weight gradient with grad_out as the input and x as the
    output gradient; ``grad_b[o] = sum_{n, y, x} grad_out[n, o, y, x]``.
    """
    op = "conv_transpose2d_backward"
    dtype, x, w, _ = _conv_inputs(op, x, w)
    stride, padding, dilation, (oh, ow) = shapes.conv_transpose2d_args(
        op, x.shape, w.shape, stride, padding, output_padding, dilation, groups)
    grad_out = as_float(grad_out, dtype)
    _check_grad(op, grad_out, (x.shape[0], w.shape[1] * groups, oh, ow))
    impl = _impl()
    shared = _saving(impl, {})  # both gradients read the same windows of grad_out: build them once
    gx = gw = None
    if need_grad_x:
        gx = impl.conv2d_forward(grad_out, w, None, stride, padding, dilation, groups, **shared)
    if need_grad_w:
        gw = impl.conv2d_grad_weight(grad_out, x, w.shape, stride, padding, dilation, groups, **shared)
    return gx, gw, grad_out.sum(axis=(0, 2, 3))


# --------------------------------------------------------------------------- pooling
def max_pool2d_forward(x, kernel_size, stride=None, padding=0, relu=False):
    """Max over each window; returns ``(out, argmax)``.

    ``argmax[n, c, y, x]`` is the flat index ``iy * W + ix`` of the winning input
    element (the first on ties; NaN wins), of ``shapes.argmax_dtype`` (int32 unless the
    plane has more pixels than int32 can index). Padding counts as -inf.
    ``relu``: a ReLU of the max in the same pass; where it passes no gradient (max <= 0,
    NaN) the argmax is stored as ``-index - 1``, and the backward gives that input g * 0.
    """
    op = "max_pool2d"
    check_4d(op, "input", x)
    x = as_float(x, float_dtype(op, x))
    kernel, stride, padding, _ = shapes.pool2d_args(op, x.shape, kernel_size, stride, padding)
    return _impl().max_pool2d_forward(x, kernel, stride, padding, bool(relu))


def max_pool2d_backward(grad_out, argmax, x_shape):
    """``grad_x[argmax] += grad_out``: each output's gradient goes to the input that won."""
    op = "max_pool2d_backward"
    check_4d(op, "grad_out", grad_out)
    grad_out = as_float(grad_out, float_dtype(op, grad_out))
    argmax = np.ascontiguousarray(argmax)
    if argmax.dtype not in (np.int32, np.int64):  # the forward's are one of these
        argmax = argmax.astype(np.int64)
    _check_grad(op, grad_out, argmax.shape)
    return _impl().max_pool2d_backward(grad_out, argmax, tuple(x_shape))


def conv2d_max_pool2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, kernel_size=2,
                              pool_stride=None, pool_padding=0, relu=False, saved=None):
    """``max_pool2d_forward(conv2d_forward(x, w, b, stride, padding, dilation, groups),
    kernel_size, pool_stride, pool_padding, relu)``: ``(out, argmax)``, the same values.
    The numba backend pools each chunk of images as soon as it is convolved (conv_pool.py)."""
    op = "conv2d_max_pool2d"
    dtype, x, w, b = _conv_inputs(op, x, w, b)
    stride, padding, dilation, (oh, ow) = shapes.conv2d_args(op, x.shape, w.shape, stride, padding, dilation, groups)
    _check_bias(op, b, w.shape[0])
    conv_shape = (x.shape[0], w.shape[0], oh, ow)
    kernel, pool_stride, pool_padding, _ = shapes.pool2d_args(op, conv_shape, kernel_size, pool_stride, pool_padding)
    impl = _impl()
    if getattr(impl, "FUSES_POOL", False):
        return impl.conv2d_max_pool2d_forward(x, w, b, stride, padding, dilation, groups, kernel, pool_stride,
                                              pool_padding, bool(relu), saved)
    conv = impl.conv2d_forward(x, w, b, stride, padding, dilation, groups, **_saving(impl, saved))
    return impl.max_pool2d_forward(conv, kernel, pool_stride, pool_padding, bool(relu))


def conv2d_max_pool2d_backward(x, w, grad_out, argmax, stride=1, padding=0, dilation=1, groups=1,
                               need_grad_x=True, need_grad_w=True, saved=None, need_grad_b=True):
    """Gradients of conv2d_max_pool2d_forward, ``(grad_x, grad_w, grad_b)`` (None where not
    needed): max_pool2d_backward's gradient of the conv's output, then conv2d_backward's."""
    op = "conv2d_max_pool2d_backward"
    dtype, x, w, _ = _conv_inputs(op, x, w)
    stride, padding, dilation, (oh, ow) = shapes.conv2d_args(op, x.shape, w.shape, stride, padding,
                                                             dilation, groups)
    conv_shape = (x.shape[0], w.shape[0], oh, ow)
    check_4d(op, "grad_out", grad_out)
    grad_out = as_float(grad_out, dtype)
    argmax = np.ascontiguousarray(argmax)
    if argmax.dtype not in (np.int32, np.int64) or argmax.shape[:2] != conv_shape[:2]:
        raise ValueError(f"{op}: argmax must be the forward's, int32 or int64 of shape ({conv_shape[0]}, "
                         f"{conv_shape[1]}, OH, OW); got {argmax.dtype} {argmax.shape}")
    _check_grad(op, grad_out, argmax.shape)
    impl = _impl()
    if getattr(impl, "FUSES_POOL", False):
        gx, gw, gb = impl.conv2d_max_pool2d_backward(x, w, grad_out, argmax, conv_shape, stride, padding, dilation,
                                                     groups, need_grad_x, need_grad_w, need_grad_b, saved)
        return gx, gw, gb
    grad_conv = impl.max_pool2d_backward(grad_out, argmax, conv_shape)
    return conv2d_backward(x, w, grad_conv, stride, padding, dilation, groups, need_grad_x, need_grad_w, saved,
                           need_grad_b)


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Mean over each window; padded zeros count (PyTorch's count_include_pad=True)."""
    op = "avg_pool2d"
    check_4d(op, "input", x)
    x = as_float(x, float_dtype(op, x))
    kernel, stride, padding, _ = shapes.pool2d_args(op, x.shape, kernel_size, stride, padding)
    return _impl().avg_pool2d_forward(x, kernel, stride, padding)


def avg_pool2d_backward(grad_out, x_shape, kernel_size, stride=None, padding=0):
    """Every input element of a window gets ``grad_out / (kH * kW)``; overlaps add."""
    op = "avg_pool2d_backward"
    check_4d(op, "grad_out", grad_out)
    grad_out = as_float(grad_out, float_dtype(op, grad_out))
    x_shape = tuple(x_shape)
    kernel, stride, padding, (oh, ow) = shapes.pool2d_args(op, x_shape, kernel_size, stride, padding)
    _check_grad(op, grad_out, x_shape[:2] + (oh, ow))
    return _impl().avg_pool2d_backward(grad_out, x_shape, kernel, stride, padding)


# --------------------------------------------------------------------------- upsampling
_MODES = ("nearest", "bilinear")


def _op_name(mode, suffix=""):
    if mode not in _MODES:
        raise ValueError(f"upsample2d: mode must be one of {_MODES}, got {mode!r}")
    return f"upsample_{mode}{suffix}"


def _tables(mode, in_hw, out_hw, dtype):
    if mode == "nearest":
        return shapes.nearest_table(in_hw[0], out_hw[0]), shapes.nearest_table(in_hw[1], out_hw[1])
    return tuple(tuple(t if t.dtype == np.int64 else t.astype(dtype) for t in shapes.bilinear_table(i, o))
                 for i, o in zip(in_hw, out_hw))


def upsample2d_forward(x, size=None, scale_factor=None, mode="nearest"):
    """Resize (N, C, H, W) -> (N, C, OH, OW), PyTorch's interpolate (align_corners=False).

    Give ``size=(OH, OW)`` or an integer ``scale_factor``. ``nearest`` copies pixel
    ``floor(dst * in / out)``; ``bilinear`` mixes the two nearest pixel centres on each
    axis with weights ``1 - t`` and ``t`` (see ``shapes.bilinear_table``).
    """
    op = _op_name(mode)
    check_4d(op, "input", x)
    x = as_float(x, float_dtype(op, x))
    out_hw = shapes.upsample_size(op, x.shape, size, scale_factor)
    ty, tx = _tables(mode, x.shape[2:], out_hw, x.dtype)
    if mode == "nearest":
        return _impl().upsample_nearest2d_forward(x, ty, tx)
    return _impl().upsample_bilinear2d_forward(x, ty, tx)


def upsample2d_backward(grad_out, x_shape, mode="nearest"):
    """The adjoint of upsample2d_forward: each output's gradient is scattered back to the
    input pixels it was made from, times the weight it had there."""
    op = _op_name(mode, "_backward")
    check_4d(op, "grad_out", grad_out)
    # any strides: the gradient of a concatenation's part arrives as a view, and copying
    # it would cost as much as the kernel
    grad_out = np.asarray(grad_out, dtype=float_dtype(op, grad_out))
    x_shape = tuple(x_shape)
    if len(x_shape) != 4 or x_shape[:2] != grad_out.shape[:2]:
        raise ValueError(f"{op}: input shape {x_shape} does not match grad_out shape {grad_out.shape}")
    ty, tx = _tables(mode, x_shape[2:], grad_out.shape[2:], grad_out.dtype)
    if mode == "nearest":
        return _impl().upsample_nearest2d_backward(grad_out, ty, tx, x_shape)
    return _impl().upsample_bilinear2d_backward(grad_out, ty, tx, x_shape)
