"""Batch normalisation: ``F.batch_norm`` and the ``BatchNorm1d`` / ``BatchNorm2d`` layers.

Each channel c (axis 1) is normalised with a mean and variance taken over every
other axis: the batch, and the pixels for images. In training these are the
statistics of the batch, and running averages of them are kept as buffers; in
evaluation the running averages are used instead, so one sample's output does
not depend on the rest of its batch.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function
from ..tensor import Tensor
from .module import Module, Parameter


class BatchNormFunction(Function):
    """out = weight * xhat + bias,  xhat = (x - mean) / sqrt(var + eps), per channel.

    ``mean`` and ``var`` are given per channel. In training they are the batch's own
    (biased) statistics, so they depend on x too; with m values per channel,
    dxhat = g * weight and means over every axis but the channel axis:
        dL/dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps)
    In evaluation they are constants:  dL/dx = dxhat / sqrt(var + eps).
    Always:  dL/dweight = sum(g * xhat),  dL/dbias = sum(g).

    Computed with the two sums the weight and bias need anyway, since
    mean(dxhat) = weight * sum(g) / m and mean(dxhat * xhat) = weight * sum(g * xhat) / m:
        dL/dx = weight / sqrt(var + eps) * (g - sum(g) / m - xhat * sum(g * xhat) / m)

    With ``negative_slope`` (not None) a leaky ReLU follows in the same pass (0.0: ReLU):
    out = y if y > 0 else negative_slope * y, y = weight * xhat + bias. Its backward
    first takes g to dL/dy: g where y > 0, negative_slope * g elsewhere; then the above
    with that in place of g.
    """

    def forward(self, x, weight=None, bias=None, *, mean=None, var=None, eps, running=None,
                negative_slope=None):
        """With ``mean`` and ``var`` (the running estimates, in evaluation) they are used as
        given. Without them (training) the batch's own statistics are used, computed in
        the same call as the output (kernels.batch_norm_train_forward), and ``running``
        = (running_mean, running_var, momentum), when given, is updated in place."""
        channels, self.affine = x.shape[1], weight is not None
        weight = np.ones(channels, x.dtype) if weight is None else weight
        bias = np.zeros(channels, x.dtype) if bias is None else bias
        self.slope = 1.0 if negative_slope is None else negative_slope  # 1: y itself
        if negative_slope is not None:  # what graph drawings and grad_fn show
            self.op_name = f"{type(self).op_name}+{'ReLU' if negative_slope == 0 else 'LeakyReLU'}"
        self.batch_stats = mean is None
        if self.batch_stats:
            out, mean, var, inv_std = kernels.batch_norm_train_forward(x, weight, bias, eps, self.slope)
            if running is not None:
                _update_running(*running, mean, var, x.size // channels)
        else:
            inv_std = (1.0 / np.sqrt(np.asarray(var, np.float64) + eps)).astype(x.dtype)
            out = kernels.batch_norm_forward(x, mean, inv_std, weight, bias, self.slope)
        # the backward computes xhat (and y) again from x: cheaper than keeping copies
        self.x, self.mean, self.inv_std, self.weight, self.bias = x, mean, inv_std, weight, bias
        return out

    def backward(self, g):
        dx, sum_gx, sum_g = kernels.batch_norm_backward(g, self.x, self.mean, self.inv_std, self.weight,
                                                        self.bias, self.batch_stats, self.slope)
        return (dx, sum_gx, sum_g) if self.affine else dx


def _array(t):
    return t.data if isinstance(t, Tensor) else np.asarray(t)


def batch_norm(input: Tensor, running_mean, running_var, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5, *, negative_slope: float | None = None) -> Tensor:
    """Normalise each channel of ``input`` (N, C, ...) (PyTorch's argument order).

    ``negative_slope`` (not in PyTorch): apply a leaky ReLU to the output in the same
    pass over memory, 0.0 for a ReLU; the same values as ``F.leaky_relu(batch_norm(...),
    negative_slope)``, in less time (``nn.Sequential`` does this for a BatchNorm followed
    by a ReLU or LeakyReLU).

    ``training``: use the batch's mean and biased variance, and update the running
    estimates (Tensors of shape (C,), or None) in place:
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)
    (the unbiased variance, m values per channel). Otherwise use the running ones.
    """
    x = input.data
    if input.ndim < 2:
        raise ValueError(f"batch_norm: input must be (N, C, ...), got shape {input.shape}")
    input._need_float("batch_norm")
    affine = [t for t in (weight, bias) if t is not None]
    if len(affine) == 1:
        raise ValueError("batch_norm: pass both weight and bias, or neither")
    if training or running_mean is None:
        if x.size // x.shape[1] < 2:
            raise ValueError(f"batch_norm: needs more than one value per channel in training, "
                             f"got input of shape {input.shape}")
        running = (_array(running_mean), _array(running_var), momentum) \
            if training and running_mean is not None else None
        return BatchNormFunction.apply(input, *affine, eps=eps, running=running, negative_slope=negative_slope)
    return BatchNormFunction.apply(input, *affine, mean=_array(running_mean), var=_array(running_var),
                                   eps=eps, negative_slope=negative_slope)


def _update_running(r_mean, r_var, momentum, mean, var, count):
    """The running estimates, in place: the batch's mean, and its unbiased variance."""
    r_mean *= 1 - momentum
    r_mean += momentum * mean
    r_var *= 1 - momentum
    r_var += (momentum * count / (count - 1)) * var


class _BatchNorm(Module):
    """Shared by BatchNorm1d and BatchNorm2d; they differ only in the input they accept."""

    expected_ndim: tuple = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=np.float32))
            self.bias = Parameter(np.zeros(num_features, dtype=np.float32))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features, np.float32)))
            self.register_buffer("running_var", Tensor(np.ones(num_features, np.float32)))
            # counted as in PyTorch, so that state dicts carry the same names
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, np.int64)))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x: Tensor, *, negative_slope: float | None = None) -> Tensor:
        """``negative_slope``: a leaky ReLU on the output, in the same pass (F.batch_norm)."""
        name = type(self).__name__
        if x.ndim not in self.expected_ndim or x.shape[1] != self.num_features:
            raise ValueError(f"{name}({self.num_features}): expects input of "
                             f"{self.expected_shapes} with C = {self.num_features}, "
                             f"got shape {x.shape}")
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                          self.training, self.momentum, self.eps, negative_slope=negative_slope)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm for (N, C) features or (N, C, L) sequences."""

    expected_ndim, expected_shapes = (2, 3), "shape (N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm for (N, C, H, W) images: one mean and variance per channel."""

    expected_ndim, expected_shapes = (4,), "shape (N, C, H, W)"
