"""The basic layers: containers, Linear, Flatten, Dropout and the activations as modules."""
from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor
from . import functional as F
from . import init
from .conv import Conv2d, MaxPool2d
from .module import Module, Parameter
from .normalization import BatchNorm1d, BatchNorm2d

# ------------------------------------------------------------ containers


class Sequential(Module):
    """Apply the given modules one after the other: ``Sequential(Linear(784, 10), ReLU())``.

    The modules are children named "0", "1", ...; index with ``model[0]``, slice with
    ``model[1:]``, and ``len(model)``.

    A BatchNorm followed by a ReLU or LeakyReLU runs as one op (``batch_norm_then``):
    the same values, one pass over memory instead of two, forward and backward.

    A ReLU followed by a MaxPool2d runs as one op, the pool with the ReLU of its output
    (``MaxPool2d(x, relu=True)``, drawn as "MaxPool2d+ReLU"): a window's maximum of
    ReLU'd values is the ReLU of its maximum (ReLU never lowers a larger value below a
    smaller one), and the gradient reaches the same input (the window's first maximum,
    when it is positive; none otherwise). The ReLU then touches the pooled map, a quarter
    of the values for a 2x2 pool, while it is in cache. The MNIST CNN's training step
    (W4), steps alternated in one process: the pool first then the ReLU as two ops,
    1.09-1.11x on one thread and on two; in one op, a further 1.00x and 1.02-1.05x.

    A Conv2d followed by a ReLU runs as one op (``Conv2d(x, relu=True)``, drawn as
    "Conv2d+ReLU"): the conv takes the ReLU as it writes its output, and the backward
    masks the gradient and sums the bias's in one pass.

    A Conv2d, a ReLU and a MaxPool2d run as one op (``F.conv2d_max_pool2d(..., relu=True)``,
    drawn as "Conv2d+ReLU+MaxPool2d"): each chunk of images is convolved and pooled by
    the same thread, in one hand-off to the threads instead of two (measured on W4's
    step: kernels/conv_pool.py).
    """

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {i} is a {type(m).__name__}, not a Module")
            setattr(self, str(i), m)

    def _layers(self) -> list:
        return list(self.children())

    def __len__(self) -> int:
        return len(self._layers())

    def __iter__(self):
        return iter(self._layers())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return type(self)(*self._layers()[index])
        return self._layers()[index]

    def append(self, module: Module) -> "Sequential":
        setattr(self, str(len(self)), module)
        return self

    def forward(self, x):
        layers = self._layers()
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and _fusable(layers[i], layers[i + 1]):
                x = _fused(layers[i], layers[i + 1], x)
                i += 2
            elif i + 2 < len(layers) and _conv_first(layers[i], layers[i + 1]) and _pool_first(*layers[i + 1:i + 3]):
                x = _conv_relu_pool(layers[i], layers[i + 2], x)  # all three as one op
                i += 3
            elif i + 1 < len(layers) and _pool_first(layers[i], layers[i + 1]):
                x = layers[i + 1](x, relu=True)  # the pool, then the ReLU in the same pass
                i += 2
            elif i + 1 < len(layers) and _conv_first(layers[i], layers[i + 1]):
                x = layers[i](x, relu=True)  # the conv, its ReLU as it writes the output
                i += 2
            else:
                x = layers[i](x)
                i += 1
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered (a plain list's would not be).
    Index and iterate it like a list; it has no forward: call its items yourself."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList: can only hold Modules, got {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def __len__(self) -> int:
        return sum(1 for _ in self.children())

    def __iter__(self):
        return self.children()

    def __getitem__(self, index):
        layers = list(self.children())
        return ModuleList(layers[index]) if isinstance(index, slice) else layers[index]


class Identity(Module):
    def forward(self, x):
        return x


# ------------------------------------------------------------ linear


class Linear(Module):
    """y = x @ W^T + b with W of shape (out_features, in_features), as in PyTorch.

    Initialised like PyTorch: W and b uniform on [-1/sqrt(in), 1/sqrt(in)]
    (``kaiming_uniform_`` with a = sqrt(5)).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype=np.float32))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if bias:
            self.bias = Parameter(np.empty(out_features, dtype=np.float32))
            bound = 1 / math.sqrt(in_features) if in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound)
        else:
            self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Flatten axes start_dim..end_dim into one: (N, C, H, W) -> (N, C*H*W) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# ------------------------------------------------------------ dropout


class Dropout(Module):
    """Zero each element with probability p in training (scaling the rest by 1/(1-p));
    the identity in evaluation (``model.eval()``)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be a probability in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout2d(Dropout):
    """Zero whole channels of (N, C, H, W) input with probability p in training."""

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout2d(x, self.p, self.training)


# ------------------------------------------------------------ activations


class ReLU(Module):
    def forward(self, x):
        return x.relu()


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class Sigmoid(Module):
    def forward(self, x):
        return x.sigmoid()


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return x.leaky_relu(self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


def _hooked(module) -> bool:
    return bool(module._forward_pre_hooks or module._forward_hooks)


def _fusable(norm, activation) -> bool:
    """A BatchNorm layer then a ReLU or LeakyReLU (these classes exactly: a subclass may
    compute something else), neither with hooks, which must see each module's own output."""
    return (type(norm) in (BatchNorm1d, BatchNorm2d) and type(activation) in (ReLU, LeakyReLU)
            and not (_hooked(norm) or _hooked(activation)))


def _pool_first(activation, pool) -> bool:
    """A ReLU then a MaxPool2d (these classes exactly, neither with hooks): they commute."""
    return type(activation) is ReLU and type(pool) is MaxPool2d and not (_hooked(activation) or _hooked(pool))


def _conv_first(conv, activation) -> bool:
    """A Conv2d then a ReLU (these classes exactly, neither with hooks)."""
    return type(conv) is Conv2d and type(activation) is ReLU and not (_hooked(conv) or _hooked(activation))


def _conv_relu_pool(conv, pool, x):
    """pool(relu(conv(x))) as one op (F.conv2d_max_pool2d)."""
    return F.conv2d_max_pool2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups,
                               kernel_size=pool.kernel_size, pool_stride=pool.stride, pool_padding=pool.padding,
                               relu=True)


def _fused(norm, activation, x):
    """activation(norm(x)) as one op: ``F.batch_norm``'s negative_slope."""
    return norm(x, negative_slope=0.0 if type(activation) is ReLU else activation.negative_slope)


def batch_norm_then(norm, activation, x):
    """activation(norm(x)) for a BatchNorm layer and a ReLU or LeakyReLU: as one op when
    ``_fusable``, else one after the other."""
    return _fused(norm, activation, x) if _fusable(norm, activation) else activation(norm(x))


class Softmax(Module):
    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.softmax(self.dim)  # positional: dim= clashes with Tensor.softmax's axis=-1

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return x.log_softmax(self.dim)
