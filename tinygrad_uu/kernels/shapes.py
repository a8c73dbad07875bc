"""Argument checks and output shapes, shared by every backend.

Both backends trust what arrives here: every error a student can trigger (a kernel
larger than the padded input, a zero stride, channels that do not match) is caught
once, in this file, with a message that names the op and the shapes.

Output size of a sliding window along one axis (PyTorch's formula, floor mode)::

    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
"""
from __future__ import annotations

import numpy as np

FLOATS = (np.float32, np.float64)
INT32_MAX = 2**31 - 1
_INT32, _INT64 = np.dtype(np.int32), np.dtype(np.int64)


def pair(value, name: str, op: str) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``(2, 3)`` stays; anything else is a ValueError."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        a, b = value
        if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
            return int(a), int(b)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")


def float_dtype(op: str, *arrays) -> np.dtype:
    """The dtype to compute in: float32 and float64 stay; ints and bools become float64."""
    dtype = np.dtype(np.result_type(*arrays))
    if dtype in FLOATS:
        return dtype
    if dtype.kind == "f":  # float16 computes in float32, longdouble in float64
        return np.dtype(np.float32 if dtype.itemsize < 4 else np.float64)
    if dtype.kind in "iub":
        return np.dtype(np.float64)
    raise ValueError(f"{op}: expected real numbers, got dtype {dtype}")


def as_float(x, dtype) -> np.ndarray:
    """A C-contiguous array of ``dtype`` (no copy when ``x`` already is one)."""
    return np.ascontiguousarray(x, dtype=dtype)


def argmax_dtype(height: int, width: int) -> np.dtype:
    """The dtype of a max pool's argmax, an index iy * W + ix into an input plane (or
    -index - 1): int32, half the memory of int64 and twice the indices per vector (see
    pooling._max_pool_2x2_forward); int64 for planes of more pixels than int32 can index."""
    return _INT32 if height * width <= INT32_MAX else _INT64


def check_4d(op: str, name: str, x) -> None:
    if np.ndim(x) != 4:
        raise ValueError(f"{op}: {name} must be 4-D (N, C, H, W), got shape {np.shape(x)}")


def window_out(op: str, shape, kernel, stride, padding, dilation=(1, 1)) -> tuple[int, int]:
    """(OH, OW) of a sliding window over the last two axes of ``shape``; checks it fits."""
    if min(stride) <= 0:
        raise ValueError(f"{op}: stride must be positive, got {stride} (input shape {tuple(shape)})")
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {padding} (input shape {tuple(shape)})")
    if min(dilation) <= 0:
        raise ValueError(f"{op}: dilation must be positive, got {dilation} (input shape {tuple(shape)})")
    if min(kernel) <= 0:
        raise ValueError(f"{op}: kernel size must be positive, got {kernel} (input shape {tuple(shape)})")
    out = []
    for size, k, s, p, d in zip(shape[-2:], kernel, stride, padding, dilation):
        extent = d * (k - 1) + 1
        if extent > size + 2 * p:
            raise ValueError(
                f"{op}: kernel {tuple(kernel)} (dilation {tuple(dilation)}, extent {extent}) is larger "
                f"than the padded input: input shape {tuple(shape)}, padding {tuple(padding)}")
        out.append((size + 2 * p - extent) // s + 1)
    return out[0], out[1]


def conv2d_args(op: str, x_shape, w_shape, stride, padding, dilation, groups):
    """Check a conv2d's shapes; return (stride, padding, dilation, (OH, OW)) as int pairs.

    ``w_shape`` is (C_out, C_in / groups, kH, kW), PyTorch's layout.
    """
    stride, padding, dilation = (pair(stride, "stride", op), pair(padding, "padding", op),
                                 pair(dilation, "dilation", op))
    if len(w_shape) != 4:
        raise ValueError(f"{op}: weight must be 4-D (C_out, C_in/groups, kH, kW), got shape {tuple(w_shape)}")
    if not isinstance(groups, (int, np.integer)) or groups <= 0:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    c_in, c_out = x_shape[1], w_shape[0]
    if c_in % groups or c_out % groups:
        raise ValueError(f"{op}: groups={groups} must divide both input channels ({c_in}) and output "
                         f"channels ({c_out}): input shape {tuple(x_shape)}, weight shape {tuple(w_shape)}")
    if w_shape[1] * groups != c_in:
        raise ValueError(f"{op}: channel mismatch: input shape {tuple(x_shape)} has {c_in} channels but weight "
                         f"shape {tuple(w_shape)} with groups={groups} expects {w_shape[1] * groups}")
    out_hw = window_out(op, x_shape, w_shape[2:], stride, padding, dilation)
    return stride, padding, dilation, out_hw


def conv_transpose2d_args(op: str, x_shape, w_shape, stride, padding, output_padding, dilation, groups):
    """Check a conv_transpose2d; return (stride, padding, dilation, (OH, OW)).

    ``w_shape`` is (C_in, C_out / groups, kH, kW). The output size along one axis is::

        out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    """
    stride, padding, dilation = (pair(stride, "stride", op), pair(padding, "padding", op),
                                 pair(dilation, "dilation", op))
    output_padding = pair(output_padding, "output_padding", op)
    if len(w_shape) != 4:
        raise ValueError(f"{op}: weight must be 4-D (C_in, C_out/groups, kH, kW), got shape {tuple(w_shape)}")
    if not isinstance(groups, (int, np.integer)) or groups <= 0:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if min(stride) <= 0:
        raise ValueError(f"{op}: stride must be positive, got {stride} (input shape {tuple(x_shape)})")
    if min(dilation) <= 0 or min(padding) < 0 or min(w_shape[2:]) <= 0:
        raise ValueError(f"{op}: need dilation > 0, padding >= 0 and a non-empty kernel; got dilation "
                         f"{dilation}, padding {padding}, weight shape {tuple(w_shape)}")
    if x_shape[1] != w_shape[0]:
        raise ValueError(f"{op}: channel mismatch: input shape {tuple(x_shape)} has {x_shape[1]} channels "
                         f"but weight shape {tuple(w_shape)} expects {w_shape[0]}")
    if x_shape[1] % groups:
        raise ValueError(f"{op}: groups={groups} must divide the input channels ({x_shape[1]}): "
                         f"input shape {tuple(x_shape)}, weight shape {tuple(w_shape)}")
    if min(output_padding) < 0 or output_padding[0] >= stride[0] or output_padding[1] >= stride[1]:
        raise ValueError(f"{op}: output_padding {output_padding} must be >= 0 and smaller than "
                         f"stride {stride} (input shape {tuple(x_shape)})")
    out = tuple((size - 1) * s - 2 * p + d * (k - 1) + op_ + 1
                for size, k, s, p, d, op_ in zip(x_shape[2:], w_shape[2:], stride, padding, dilation,
                                                  output_padding))
    if min(out) <= 0:
        raise ValueError(f"{op}: output would be empty ({out}): input shape {tuple(x_shape)}, weight shape "
                         f"{tuple(w_shape)}, stride {stride}, padding {padding}")
    return stride, padding, dilation, out


def pool2d_args(op: str, x_shape, kernel_size, stride, padding):
    """Check a pooling; return (kernel, stride, padding, (OH, OW)). ``stride=None`` means the kernel.

    Like PyTorch, padding may be at most half the kernel, so every window holds at
    least one real input element.
    """
    kernel = pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else pair(stride, "stride", op)
    padding = pair(padding, "padding", op)
    if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel {kernel} "
                         f"(input shape {tuple(x_shape)})")
    return kernel, stride, padding, window_out(op, x_shape, kernel, stride, padding)


def covers_plane(x_shape, kernel, padding) -> bool:
    """Whether a pooling window is the whole (H, W) plane, without padding: global pooling,
    one output per plane."""
    return tuple(kernel) == tuple(x_shape[2:]) and tuple(padding) == (0, 0)


def upsample_size(op: str, x_shape, size=None, scale_factor=None) -> tuple[int, int]:
    """The output (OH, OW) from exactly one of ``size`` or an integer ``scale_factor``."""
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: give exactly one of size or scale_factor (input shape {tuple(x_shape)})")
    if size is not None:
        out = pair(size, "size", op)
    else:
        scale = pair(scale_factor, "scale_factor", op)
        out = (x_shape[2] * scale[0], x_shape[3] * scale[1])
    if min(out) <= 0:
        raise ValueError(f"{op}: output size must be positive, got {out} (input shape {tuple(x_shape)})")
    return out


def nearest_table(in_size: int, out_size: int) -> np.ndarray:
    """For each output index, the input index it copies (PyTorch's 'nearest').

    ``src = min(floor(dst * in / out), in - 1)``, computed in float32 as PyTorch does,
    so the same pixel is picked even where in / out is not exact.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def bilinear_table(in_size: int, out_size: int):
    """For each output index: two input indices and their weights (align_corners=False).

    The output pixel's centre, mapped back to input coordinates, is
    ``src = max((dst + 0.5) * in / out - 0.5, 0)``; it lies between ``i0 = floor(src)``
    and ``i1 = min(i0 + 1, in - 1)`` with weights ``1 - (src - i0)`` and ``src - i0``.
    """
    src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = src - i0
    return i0, i1, 1.0 - w1, w1
