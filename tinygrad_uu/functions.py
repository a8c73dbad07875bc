"""The differentiable primitives.

Each class is one op. ``forward`` works on numpy arrays; ``backward`` receives
g = dL/d(out) and returns dL/d(input) for each input, as the docstring states.
Everything else (mean, var, softmax, stack, ...) is composed from these in
``tensor.py``, so this list is the whole calculus the engine knows.

Notation in the docstrings: x, y are the inputs, out the output, g = dL/d(out).
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .autograd import Function
from .kernels.blas import matmul


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` down to ``shape``: the adjoint of numpy broadcasting.

    Broadcasting copies an input along new leading axes and along axes of size 1;
    the gradient of a copy is the sum of the copies' gradients.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _broadcast_error(op, x, y):
    try:
        np.broadcast_shapes(x.shape, y.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {x.shape} and {y.shape} cannot be broadcast "
                         "together (numpy rules: trailing axes must match or be 1)") from None


# ---------------------------------------------------------------- arithmetic

class Add(Function):
    """out = x + y.   dL/dx = g,  dL/dy = g  (each summed back to its shape)."""

    def forward(self, x, y):
        self.shapes = x.shape, y.shape
        if x.shape != y.shape:
            _broadcast_error("add", x, y)
        return x + y

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(g, self.shapes[1])


class Sub(Function):
    """out = x - y.   dL/dx = g,  dL/dy = -g."""

    def forward(self, x, y):
        self.shapes = x.shape, y.shape
        if x.shape != y.shape:
            _broadcast_error("sub", x, y)
        return x - y

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(-g, self.shapes[1])


class Mul(Function):
    """out = x * y.   dL/dx = g * y,  dL/dy = g * x."""

    def forward(self, x, y):
        if x.shape != y.shape:
            _broadcast_error("mul", x, y)
        self.x, self.y = x, y
        return x * y

    def backward(self, g):
        return unbroadcast(g * self.y, self.x.shape), unbroadcast(g * self.x, self.y.shape)


class Div(Function):
    """out = x / y.   dL/dx = g / y,  dL/dy = -g * x / y**2 = -g * out / y."""

    def forward(self, x, y):
        if x.shape != y.shape:
            _broadcast_error("div", x, y)
        self.x_shape, self.y = x.shape, y
        self.out = x / y
        return self.out

    def backward(self, g):
        gx = g / self.y
        return unbroadcast(gx, self.x_shape), unbroadcast(-gx * self.out, self.y.shape)


class Neg(Function):
    """out = -x.   dL/dx = -g."""

    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Pow(Function):
    """out = x ** y (both tensors).

    dL/dx = g * y * x**(y-1),   dL/dy = g * out * log(x)   (x > 0 where y needs a grad).
    """

    def forward(self, x, y):
        if x.shape != y.shape:
            _broadcast_error("pow", x, y)
        self.x, self.y = x, y
        self.out = x ** y
        return self.out

    def backward(self, g):
        gx = g * self.y * self.x ** (self.y - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            gy = g * self.out * np.log(self.x)
        gy = np.where(self.out == 0, 0, gy).astype(self.out.dtype, copy=False)
        return unbroadcast(gx, self.x.shape), unbroadcast(gy, self.y.shape)


class PowScalar(Function):
    """out = x ** c for a constant c.   dL/dx = g * c * x**(c-1)."""

    def forward(self, x, exponent):
        self.x, self.c = x, exponent
        return x ** exponent

    def backward(self, g):
        if self.c == 2:
            return g * 2 * self.x
        return g * self.c * self.x ** (self.c - 1)


class MatMul(Function):
    """out = x @ y with numpy's rules for 1-D, 2-D and batched operands.

    dL/dx = g @ y^T,   dL/dy = x^T @ g   (^T swaps the last two axes). A 1-D x is
    treated as a row (1, k) and a 1-D y as a column (k, 1); batch axes that were
    broadcast are summed back.
    """

    def forward(self, x, y):
        if x.ndim == 0 or y.ndim == 0:
            raise ValueError(f"matmul: operands must be at least 1-D, got shapes {x.shape} and {y.shape}")
        kx = x.shape[-1]
        ky = y.shape[-2] if y.ndim > 1 else y.shape[0]
        if kx != ky:
            raise ValueError(f"matmul: shapes {x.shape} and {y.shape} do not align "
                             f"({kx} != {ky} in the contracted axis)")
        self.x, self.y = x, y
        return matmul(x, y)

    def backward(self, g):
        x, y = self.x, self.y
        x2 = x[None, :] if x.ndim == 1 else x
        y2 = y[:, None] if y.ndim == 1 else y
        batch = np.broadcast_shapes(x2.shape[:-2], y2.shape[:-2])
        g = g.reshape(batch + (x2.shape[-2], y2.shape[-1]))  # put back the 1-D axes
        gx = gy = None  # e.g. the input batch needs no gradient: skip its product
        if self.needs_grad(0):
            gx = unbroadcast(matmul(g, np.swapaxes(y2, -1, -2)), x2.shape).reshape(x.shape)
        if self.needs_grad(1):
            gy = unbroadcast(matmul(np.swapaxes(x2, -1, -2), g), y2.shape).reshape(y.shape)
        return gx, gy


# ---------------------------------------------------------------- elementwise

class Exp(Function):
    """out = exp(x).   dL/dx = g * out."""

    def forward(self, x):
        self.out = np.exp(x)
        return self.out

    def backward(self, g):
        return g * self.out


class Log(Function):
    """out = log(x).   dL/dx = g / x."""

    def forward(self, x):
        self.x = x
        return np.log(x)

    def backward(self, g):
        return g / self.x


class Sqrt(Function):
    """out = sqrt(x).   dL/dx = g / (2 * out)."""

    def forward(self, x):
        self.out = np.sqrt(x)
        return self.out

    def backward(self, g):
        return g / (2 * self.out)


class Abs(Function):
    """out = |x|.   dL/dx = g * sign(x)  (0 at x = 0, as PyTorch)."""

    def forward(self, x):
        self.x = x
        return np.abs(x)

    def backward(self, g):
        return g * np.sign(self.x)


class Tanh(Function):
    """out = tanh(x).   dL/dx = g * (1 - out**2)."""

    def forward(self, x):
        self.out = np.tanh(x)
        return self.out

    def backward(self, g):
        return g * (1 - self.out * self.out)


class Sigmoid(Function):
    """out = 1 / (1 + exp(-x)).   dL/dx = g * out * (1 - out).

    Computed as exp(-logaddexp(0, -x)) so that large |x| neither overflows nor
    produces NaN.
    """

    def forward(self, x):
        self.out = np.exp(-np.logaddexp(0, -x)).astype(x.dtype, copy=False)
        return self.out

    def backward(self, g):
        return g * self.out * (1 - self.out)


class ReLU(Function):
    """out = max(x, 0).   dL/dx = g where x > 0 (where out > 0), else 0.

    Its kernels (``kernels.relu_forward``/``relu_backward``) split big arrays among threads."""

    def forward(self, x):
        self.out = kernels.relu_forward(x)
        return self.out

    def backward(self, g):
        return kernels.relu_backward(g, self.out)


class AddReLU(Function):
    """out = max(x + y, 0) for x and y of one shape: a residual block's sum and its ReLU
    as one op (``nn.functional.add_relu``).   dL/dx = dL/dy = g where out > 0, else 0
    (the ReLU's gradient, passed unchanged through the sum to both)."""

    def forward(self, x, y):
        self.out = kernels.add_relu_forward(x, y)
        return self.out

    def backward(self, g):
        gx = kernels.relu_backward(g, self.out)
        return gx, gx


class LeakyReLU(Function):
    """out = x if x > 0 else slope * x.   dL/dx = g if x > 0 else slope * g.

    Its kernels (``kernels.leaky_relu_forward``/``leaky_relu_backward``) split big arrays
    among threads."""

    def forward(self, x, slope):
        self.x, self.slope = x, slope
        return kernels.leaky_relu_forward(x, slope)

    def backward(self, g):
        return kernels.leaky_relu_backward(g, self.x, self.slope)


class Softplus(Function):
    """out = log(1 + exp(x)), computed stably as logaddexp(0, x).

    dL/dx = g * sigmoid(x).
    """

    def forward(self, x):
        self.x = x
        return np.logaddexp(0, x).astype(x.dtype, copy=False)

    def backward(self, g):
        return g * np.exp(-np.logaddexp(0, -self.x)).astype(g.dtype, copy=False)


class Maximum(Function):
    """out = max(x, y) elementwise.

    dL/dx = g where x > y, dL/dy = g where y > x; a tie splits g in halves.
    """

    def forward(self, x, y):
        if x.shape != y.shape:
            _broadcast_error("maximum", x, y)
        self.shapes = x.shape, y.shape
        out = np.maximum(x, y)
        self.share_x = (x > y) + 0.5 * (x == y)
        return out

    def backward(self, g):
        gx = g * self.share_x
        return unbroadcast(gx, self.shapes[0]), unbroadcast(g - gx, self.shapes[1])


class Minimum(Function):
    """out = min(x, y) elementwise.

    dL/dx = g where x < y, dL/dy = g where y < x; a tie splits g in halves.
    """

    def forward(self, x, y):
        if x.shape != y.shape:
            _broadcast_error("minimum", x, y)
        self.shapes = x.shape, y.shape
        self.share_x = (x < y) + 0.5 * (x == y)
        return np.minimum(x, y)

    def backward(self, g):
        gx = g * self.share_x
        return unbroadcast(gx, self.shapes[0]), unbroadcast(g - gx, self.shapes[1])


class Clip(Function):
    """out = min(max(x, low), high).   dL/dx = g where low <= x <= high, else 0."""

    def forward(self, x, low, high):
        lo = -np.inf if low is None else low
        hi = np.inf if high is None else high
        self.inside = (x >= lo) & (x <= hi)
        return np.clip(x, lo, hi).astype(x.dtype, copy=False)

    def backward(self, g):
        return g * self.inside


class Where(Function):
    """out = x where cond else y  (cond is a constant boolean array).

    dL/dx = g where cond, else 0;   dL/dy = g where not cond, else 0.
    """

    def forward(self, x, y, cond):
        self.cond, self.shapes = cond, (x.shape, y.shape)
        return np.where(cond, x, y)

    def backward(self, g):
        zero = np.zeros((), dtype=g.dtype)
        return (unbroadcast(np.where(self.cond, g, zero), self.shapes[0]),
                unbroadcast(np.where(self.cond, zero, g), self.shapes[1]))


# ---------------------------------------------------------------- reductions

def _expand_reduced(g: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    """Put back the axes a reduction removed, so ``g`` broadcasts against the input."""
    if keepdims or axis is None or g.ndim == 0 and np.ndim(axis) == 0 and axis in (0, -1):
        return g  # kept axes, or a 0-d g (numpy lets a 0-d array "reduce" over axis 0)
    return np.expand_dims(g, axis)


class Sum(Function):
    """out = sum of x over ``axis``.   dL/dx = g broadcast back over the summed axes."""

    def forward(self, x, axis, keepdims):
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return np.asarray(x.sum(axis=axis, keepdims=keepdims))

    def backward(self, g):
        return np.broadcast_to(_expand_reduced(g, self.axis, self.keepdims), self.shape)


class Max(Function):
    """out = max of x over ``axis``.

    dL/dx = g at the positions that hold the maximum, 0 elsewhere; tied maxima share
    g equally (as PyTorch's amax).
    """

    def forward(self, x, axis, keepdims, reduce="max"):
        self.op_name = reduce
        if x.size == 0:
            raise ValueError(f"{reduce}: cannot reduce an empty tensor of shape {x.shape}")
        out = np.asarray(x.max(axis=axis, keepdims=True) if reduce == "max"
                         else x.min(axis=axis, keepdims=True))
        hit = (x == out)
        self.share = hit / hit.sum(axis=axis, keepdims=True)
        self.axis, self.keepdims, self.shape = axis, keepdims, x.shape
        return out if keepdims else np.asarray(out.squeeze(axis) if axis is not None else out.reshape(()))

    def backward(self, g):
        return _expand_reduced(g, self.axis, self.keepdims) * self.share


# ---------------------------------------------------------------- shape

class Reshape(Function):
    """out = x viewed with a new shape.   dL/dx = g reshaped back."""

    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                             f"({x.size} elements) into {tuple(shape)}") from None

    def backward(self, g):
        return g.reshape(self.shape)


class Permute(Function):
    """out = x with its axes reordered by ``axes``.   dL/dx = g with the inverse order."""

    def forward(self, x, axes):
        if sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
            raise ValueError(f"permute: {tuple(axes)} is not a permutation of the "
                             f"{x.ndim} axes of shape {x.shape}")
        self.inverse = np.argsort([a % x.ndim for a in axes])
        return x.transpose(axes)

    def backward(self, g):
        return g.transpose(self.inverse)


class Expand(Function):
    """out = x broadcast to ``shape`` (no copy).   dL/dx = g summed back to x's shape."""

    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return np.broadcast_to(x, shape)
        except ValueError:
            raise ValueError(f"expand: cannot broadcast shape {x.shape} to {tuple(shape)}") from None

    def backward(self, g):
        return unbroadcast(g, self.shape)


class Pad(Function):
    """out = x padded with a constant; ``widths`` as in np.pad.

    dL/dx = the slice of g that covers x (padding has no input to flow to).
    """

    def forward(self, x, widths, value):
        self.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))
        return np.pad(x, widths, mode="constant", constant_values=value)

    def backward(self, g):
        return g[self.slices]


def _is_basic_index(index) -> bool:
    """True when ``index`` uses only ints, slices, None and Ellipsis (no repeats possible)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


class GetItem(Function):
    """out = x[index] with numpy indexing (ints, slices, None, masks, integer arrays).

    dL/dx = zeros with g added at the indexed positions. An integer array may pick
    the same element twice; np.add.at then adds both contributions.
    """

    def forward(self, x, index):
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        try:
            return np.asarray(x[index])
        except IndexError as e:
            raise IndexError(f"getitem: {e} (tensor of shape {x.shape})") from None

    def backward(self, g):
        gx = np.zeros(self.shape, dtype=g.dtype)
        if _is_basic_index(self.index):
            gx[self.index] = g
        else:
            np.add.at(gx, self.index, g)
        return gx


class Concatenate(Function):
    """out = the inputs joined along ``axis``.   dL/dx_i = the slice of g that x_i filled."""

    def forward(self, *xs, axis):
        try:
            out = kernels.concatenate(xs, axis)
        except ValueError:
            raise ValueError(f"concatenate: shapes {[x.shape for x in xs]} do not match "
                             f"outside axis {axis}") from None
        self.axis = axis
        self.bounds = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return out

    def backward(self, g):
        return tuple(np.split(g, self.bounds, axis=self.axis))


# ---------------------------------------------------------------- softmax family

class LogSoftmax(Function):
    """out = x - logsumexp(x, axis), computed after subtracting the max (stable).

    dL/dx = g - softmax(x) * sum(g, axis).
    """

    def forward(self, x, axis):
        shifted = x - x.max(axis=axis, keepdims=True)
        self.out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        self.axis = axis
        return self.out

    def backward(self, g):
        return g - np.exp(self.out) * g.sum(axis=self.axis, keepdims=True)


class Softmax(Function):
    """out = exp(x - max) / sum(exp(x - max)) along ``axis``.

    dL/dx = out * (g - sum(g * out, axis)).
    """

    def forward(self, x, axis):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        self.out = e / e.sum(axis=axis, keepdims=True)
        self.axis = axis
        return self.out

    def backward(self, g):
        return self.out * (g - (g * self.out).sum(axis=self.axis, keepdims=True))
