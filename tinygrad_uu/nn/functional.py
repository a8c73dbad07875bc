"""The functional side of nn (``import tinygrad_uu.nn.functional as F``), as in PyTorch.

Layers (``nn.Linear``, ``nn.Dropout``...) hold parameters and a training flag, and
call these functions in their ``forward``. Activations come from the Tensor, the
losses from ``losses.py``, batch norm from ``normalization.py``, and the spatial ops
(convolution, pooling, interpolation) from ``tinygrad_uu/spatial.py``.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..functions import AddReLU
from ..kernels.blas import matmul, matmul_pair
from ..tensor import Tensor, get_rng, stack
from .losses import (bce_dice_loss, binary_cross_entropy_with_logits,  # noqa: F401
                     cross_entropy, mse_loss, nll_loss, soft_dice_loss)
from .normalization import batch_norm  # noqa: F401

# ------------------------------------------------------------ activations


def relu(x: Tensor) -> Tensor:
    return x.relu()


def add_relu(x: Tensor, y: Tensor) -> Tensor:
    """relu(x + y), as one op where x and y have one shape and dtype (a residual block's
    output: ``nn.BasicBlock``), else as the sum and then the ReLU."""
    if x.shape != y.shape or x.dtype != y.dtype:
        return (x + y).relu()
    return AddReLU.apply(x, y)


def sigmoid(x: Tensor) -> Tensor:
    return x.sigmoid()


def tanh(x: Tensor) -> Tensor:
    return x.tanh()


def leaky_relu(x: Tensor, negative_slope: float = 0.01) -> Tensor:
    return x.leaky_relu(negative_slope)


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    return x.softmax(dim)  # positional: see layers.Softmax


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    return x.log_softmax(dim)


# ------------------------------------------------------------ linear


class LinearFunction(Function):
    """out = x @ W^T + b for x of shape (*, in), W of shape (out, in), b of shape (out,).

    With g = dL/d(out) and the leading axes of x and g flattened into one batch axis:
    dL/dx = g @ W,   dL/dW = g^T @ x,   dL/db = sum of g over the batch.
    One op instead of three (transpose, matmul, add); a gradient nobody needs (dL/dx
    for the input images of the first layer, dL/dW of a frozen layer) is not computed.
    """

    def forward(self, x, weight, bias=None):
        self.x, self.weight, self.has_bias = x, weight, bias is not None
        out = matmul(x, weight.T)
        if bias is not None:
            out += bias
        return out

    def backward(self, g):
        x, x_wanted, w_wanted = self.x, self.needs_grad(0), self.needs_grad(1)
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
        if x_wanted and w_wanted:  # on two threads when there are (kernels/blas.py)
            gx, gw = matmul_pair(g, self.weight, g2.T, x2)
        else:
            gx = matmul(g, self.weight) if x_wanted else None
            gw = matmul(g2.T, x2) if w_wanted else None
        if not self.has_bias:
            return gx, gw
        return gx, gw, g2.sum(axis=0)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight^T + bias, PyTorch's layout: weight has shape (out_features, in_features)."""
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {x.shape} does not fit a weight of shape "
                         f"{weight.shape} (the last axis of the input must be {weight.shape[1]})")
    if x.dtype != weight.dtype:
        raise TypeError(f"linear: input is {x.dtype} but the weight is {weight.dtype}; convert "
                        f"the input with .float() (or the model with .double())")
    if bias is None:
        return LinearFunction.apply(x, weight)
    return LinearFunction.apply(x, weight, bias)


# ------------------------------------------------------------ dropout


class DropoutMask(Function):
    """out = x * mask for a constant mask (broadcast over x).   dL/dx = g * mask."""

    def forward(self, x, mask):
        self.mask = mask
        return x * mask

    def backward(self, g):
        return g * self.mask


def _dropout(x: Tensor, p: float, training: bool, mask_shape: tuple, name: str) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: p must be a probability in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    x._need_float(name)
    keep = get_rng().random(mask_shape, dtype=np.float32) >= p
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    return DropoutMask.apply(x, mask=(keep * scale).astype(x.dtype, copy=False))


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout: zero each element with probability p and scale the rest by
    1/(1-p), so that the expected value is unchanged and evaluation needs no rescaling.
    Identity when ``training`` is False. The mask comes from ``get_rng()``
    (``manual_seed`` makes it reproducible)."""
    return _dropout(x, p, training, x.shape, "dropout")


def dropout2d(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Channel dropout for (N, C, H, W) input: each whole channel map is zeroed with
    probability p (neighbouring pixels are correlated, so single pixels would leak)."""
    if x.ndim != 4:
        raise ValueError(f"dropout2d: expects (N, C, H, W) input, got shape {x.shape}")
    return _dropout(x, p, training, x.shape[:2] + (1, 1), "dropout2d")


# ------------------------------------------------------------ pooling to a fixed size


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def adaptive_avg_pool2d(x: Tensor, output_size) -> Tensor:
    """Average over an (oh, ow) grid of bins covering the image, whatever its size.

    Bin i of an axis of length n spans [floor(i * n / o), ceil((i + 1) * n / o)), as
    PyTorch; output_size 1 is global average pooling.
    """
    if x.ndim != 4:
        raise ValueError(f"adaptive_avg_pool2d: expects (N, C, H, W) input, got shape {x.shape}")
    (oh, ow), (h, w) = _pair(output_size), x.shape[2:]
    oh, ow = h if oh is None else oh, w if ow is None else ow
    if oh <= 0 or ow <= 0:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got {output_size}")
    if h % oh == 0 and w % ow == 0:  # equal bins: an average pool with the bin as its window
        # (as a reshape and a mean, numpy's strided sum took 0.2 ms of a W8 step on one
        # thread or two; W8 steps alternated in one process: 1.010x on two, 1.007x on one)
        from ..spatial import avg_pool2d
        return avg_pool2d(x, (h // oh, w // ow))
    rows = []
    for i in range(oh):
        y0, y1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        cols = [x[:, :, y0:y1, (j * w) // ow: -(-((j + 1) * w) // ow)].mean(axis=(2, 3))
                for j in range(ow)]
        rows.append(stack(cols, axis=-1))
    return stack(rows, axis=-2)


# ------------------------------------------------------------ spatial ops (tinygrad_uu/spatial.py)

_SPATIAL = ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "interpolate", "conv2d_max_pool2d")


def __getattr__(name):
    """``F.conv2d`` and friends live in ``tinygrad_uu/spatial.py``; fetched on first use,
    then kept in this module (an import statement on every call cost 6 us, 4-20 a step)."""
    if name in _SPATIAL:
        from .. import spatial
        value = globals()[name] = getattr(spatial, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
