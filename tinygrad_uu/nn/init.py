"""Weight initialisation, in place on ``tensor.data``, drawn from ``get_rng()``.

The scale of the initial weights decides whether signals (and gradients) keep
their size through many layers. For a weight of shape (out, in, *kernel):
fan_in = in * prod(kernel), fan_out = out * prod(kernel), and

* kaiming (He):   std = gain / sqrt(fan)  (fan = fan_in by default), for ReLU nets
* xavier (Glorot): std = gain * sqrt(2 / (fan_in + fan_out)), for tanh/sigmoid nets

A uniform distribution on [-bound, bound] has std bound / sqrt(3), hence the
sqrt(3) in the ``_uniform_`` versions. The functions return the tensor they fill.
"""
from __future__ import annotations

import math

import numpy as np

from ..tensor import get_rng


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The factor that keeps the variance of activations after ``nonlinearity``
    (PyTorch's values: relu sqrt(2), tanh 5/3, leaky_relu sqrt(2 / (1 + a^2)), ...)."""
    if nonlinearity in ("linear", "identity", "sigmoid") or nonlinearity.startswith("conv"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor) -> tuple[int, int]:
    if tensor.ndim < 2:
        raise ValueError(f"init: fan in and fan out need a weight with at least 2 axes, "
                         f"got shape {tensor.shape}")
    receptive = int(np.prod(tensor.shape[2:]))  # 1 for Linear, kh*kw for Conv2d
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fill(tensor, values):
    tensor.data[...] = values  # in place: keeps the dtype, and any reference to .data
    return tensor


def uniform_(tensor, a: float = 0.0, b: float = 1.0):
    return _fill(tensor, get_rng().uniform(a, b, tensor.shape))


def normal_(tensor, mean: float = 0.0, std: float = 1.0):
    return _fill(tensor, get_rng().normal(mean, std, tensor.shape))


def constant_(tensor, value: float):
    return _fill(tensor, value)


def zeros_(tensor):
    return _fill(tensor, 0)


def ones_(tensor):
    return _fill(tensor, 1)


def _kaiming_std(tensor, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu"):
    """Uniform on [-bound, bound], bound = sqrt(3) * gain / sqrt(fan).
    (``a`` is the negative slope of the leaky ReLU; a = 0 is plain ReLU.)"""
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu"):
    """Normal with mean 0 and std = gain / sqrt(fan)."""
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity))


def xavier_uniform_(tensor, gain: float = 1.0):
    """Uniform on [-bound, bound], bound = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain: float = 1.0):
    """Normal with mean 0 and std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
