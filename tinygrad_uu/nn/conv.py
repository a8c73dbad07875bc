"""The image layers: convolutions, pooling and upsampling, over (N, C, H, W) tensors.

The computation lives in ``tinygrad_uu/spatial.py`` (the differentiable ops) and
``tinygrad_uu/kernels/`` (the fast loops); these modules hold the weights and the
settings, and are initialised as PyTorch's.
"""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module, Parameter


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class _ConvNd(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, weight_shape):
        super().__init__()
        for name, n in (("in_channels", in_channels), ("out_channels", out_channels)):
            if n % groups:
                raise ValueError(f"{type(self).__name__}: {name}={n} is not divisible by "
                                 f"groups={groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation, self.groups = _pair(padding), _pair(dilation), groups
        self.weight = Parameter(np.empty(weight_shape, dtype=np.float32))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # bound 1/sqrt(fan_in), as PyTorch
        if bias:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            self.bias = init.uniform_(Parameter(np.empty(out_channels, dtype=np.float32)),
                                      -bound, bound)
        else:
            self.bias = None

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + ("" if self.bias is not None else ", bias=False")


class Conv2d(_ConvNd):
    """2-D convolution (cross-correlation, as in every framework):
    weight (out_channels, in_channels / groups, kH, kW), output (N, out_channels, OH, OW)
    with OH = (H + 2 * padding - dilation * (kH - 1) - 1) // stride + 1.
    ``relu=True``: its ReLU in the same op (how nn.Sequential runs this then a ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True):
        k = _pair(kernel_size)
        super().__init__(in_channels, out_channels, k, stride, padding, dilation, groups, bias,
                         (out_channels, in_channels // groups) + k)

    def forward(self, x: Tensor, relu: bool = False) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups, relu=relu)


class ConvTranspose2d(_ConvNd):
    """Transposed convolution (the gradient of Conv2d with respect to its input), the
    learned upsampling of decoders: weight (in_channels, out_channels / groups, kH, kW),
    OH = (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1):
        k = _pair(kernel_size)
        super().__init__(in_channels, out_channels, k, stride, padding, dilation, groups, bias,
                         (in_channels, out_channels // groups) + k)
        self.output_padding = _pair(output_padding)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (f", output_padding={self.output_padding}"
                       if self.output_padding != (0, 0) else "")


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """The maximum of each kernel_size window (stride defaults to kernel_size).
    ``relu=True``: its ReLU in the same pass (how nn.Sequential runs a ReLU then this)."""

    def forward(self, x: Tensor, relu: bool = False) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, relu=relu)


class AvgPool2d(_Pool2d):
    """The mean of each kernel_size window (stride defaults to kernel_size)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size; ``AdaptiveAvgPool2d(1)`` is global average
    pooling, (N, C, H, W) -> (N, C, 1, 1), the usual head of a classification CNN."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Upsample(Module):
    """Resize (N, C, H, W) images by ``scale_factor`` or to ``size`` ("nearest" or
    "bilinear"): the fixed upsampling of a decoder."""

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest",
                 align_corners: bool | None = None):
        super().__init__()
        self.size, self.scale_factor = size, scale_factor
        self.mode, self.align_corners = mode, align_corners

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self) -> str:
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"
