"""Residual blocks: the building unit of a ResNet (He et al., 2016).

    out = ReLU(body(x) + shortcut(x))

``body`` is two 3x3 convolutions with batch norm (a ReLU between them); the first may
have stride 2, halving the height and width. The shortcut is the identity where the
shapes allow, else a 1x1 convolution with the same stride and a batch norm (the
"projection shortcut") that brings x to the body's channels and size. The gradient
flows through both paths and adds up at x: d out/d x = d body/d x + d shortcut/d x,
with the identity's term 1 keeping early layers trainable in deep nets. The block is
composed of Conv2d, BatchNorm2d and ReLU; its last sum and ReLU are one op,
``nn.functional.add_relu``, whose backward hands the ReLU's gradient to both paths.
"""
from __future__ import annotations

from ..tensor import Tensor
from .conv import Conv2d
from .functional import add_relu
from .layers import Identity, ReLU, Sequential, batch_norm_then
from .module import Module
from .normalization import BatchNorm2d


class BasicBlock(Module):
    """ResNet's basic block, (N, in_channels, H, W) -> (N, out_channels, H', W') with
    H' = (H - 1) // stride + 1 (H / 2 for stride 2 and even H), as torchvision's.

    conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU. The
    convolutions carry no bias (each batch norm's shift replaces it). The shortcut is a
    1x1 convolution (stride ``stride``) and BN when ``stride != 1`` or the channels
    change; ``projection=True`` forces one.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 projection: bool | None = None):
        super().__init__()
        if stride < 1:
            raise ValueError(f"BasicBlock: stride must be >= 1, got {stride}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = BatchNorm2d(out_channels)
        self.relu = ReLU()
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = BatchNorm2d(out_channels)
        if projection is None:
            projection = stride != 1 or in_channels != out_channels
        if not projection and (stride != 1 or in_channels != out_channels):
            raise ValueError(f"BasicBlock: an identity shortcut cannot change {in_channels} "
                             f"channels to {out_channels} or stride {stride}; use projection")
        self.shortcut = (Sequential(Conv2d(in_channels, out_channels, 1, stride=stride,
                                           bias=False), BatchNorm2d(out_channels))
                         if projection else Identity())

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"BasicBlock: expects (N, {self.in_channels}, H, W) input, got "
                             f"shape {x.shape}")
        body = self.bn2(self.conv2(batch_norm_then(self.bn1, self.relu, self.conv1(x))))
        return add_relu(body, self.shortcut(x))  # the sum and the ReLU in one pass

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"
