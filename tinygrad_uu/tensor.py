"""Tensor: a numpy array that remembers how it was made, so it can be differentiated.

A Tensor holds ``data`` (an ndarray), ``requires_grad``, ``grad`` (a Tensor, filled
by ``backward()``) and ``_ctx``, the Function that produced it (None for leaves).
Every operator below either calls one primitive from ``functions.py`` or is
composed from several; ``autograd.py`` does the rest.
"""
from __future__ import annotations

import numpy as np

from . import autograd
from . import functions as F

DEFAULT_DTYPE = np.float32
_rng = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seed the generator behind rand, randn, initialisation and dropout."""
    global _rng
    _rng = np.random.default_rng(seed)


def get_rng() -> np.random.Generator:
    """The engine's random generator (reseeded by ``manual_seed``)."""
    return _rng


def _as_array(data, dtype=None) -> np.ndarray:
    """numpy array for ``data``. Python numbers and lists become float32 unless a dtype
    is given; numpy arrays keep their dtype (float64 stays float64, labels stay int)."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, np.ndarray):
        return data.astype(DEFAULT_DTYPE) if data.dtype == np.float16 else data
    if isinstance(data, np.generic):
        return np.asarray(data)
    arr = np.asarray(data)
    if arr.dtype.kind in "fiu":  # Python floats and ints: the default float dtype
        return arr.astype(DEFAULT_DTYPE)
    return arr


def _normalise_axis(axis, dim):
    """Accept numpy's ``axis`` or PyTorch's ``dim``; lists become tuples."""
    if dim is not None:
        if axis is not None:
            raise TypeError("pass either axis or dim, not both")
        axis = dim
    return tuple(axis) if isinstance(axis, list) else axis


def _reduced_count(shape: tuple, axis) -> int:
    """How many elements a reduction over ``axis`` combines into each output value."""
    if axis is None or not shape:  # all of it (a 0-d value "reduced" over axis 0 is itself)
        return int(np.prod(shape))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([shape[a] for a in axes]))


def _shape_args(shape) -> tuple:
    """Allow both ``reshape(2, 3)`` and ``reshape((2, 3))``."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


class Tensor:
    # _hooks is set only by register_hook: ops never pay for it
    __slots__ = ("data", "requires_grad", "grad", "_ctx", "_hooks", "__weakref__")
    __array_ufunc__ = None  # numpy_array + tensor calls Tensor.__radd__, not numpy

    def __init__(self, data, dtype=None, requires_grad: bool = False):
        self.data = _as_array(data, dtype)
        self.grad = None
        self._ctx = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array: np.ndarray) -> "Tensor":
        """A Tensor around an array an op produced (no conversion, no checks: fast)."""
        t = object.__new__(cls)
        t.data, t.grad, t._ctx, t.requires_grad = array, None, None, False
        return t

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"requires_grad needs a floating-point tensor, got {self.data.dtype}; "
                            "convert it first with .float() or .double()")
        self.requires_grad = flag
        return self

    # ------------------------------------------------------------ attributes
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    T = property(lambda self: self.permute(*reversed(range(self.ndim))))
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                             "use .any() or .all() on .numpy(), or compare with .item()")
        return bool(self.data)

    def __repr__(self) -> str:
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self._ctx is not None:
            extra += f", grad_fn={self._ctx.op_name}"
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{extra})"

    # ------------------------------------------------------------ conversions
    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item: only a one-element tensor converts to a Python number, "
                             f"this one has shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self) -> "Tensor":
        """The same data, cut off from the graph (no gradient flows through it)."""
        return Tensor._wrap(self.data)

    def zero_grad(self) -> None:
        self.grad = None

    def astype(self, dtype) -> "Tensor":
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        if self.requires_grad and dtype.kind != "f":
            raise TypeError(f"astype: cannot cast a tensor that requires grad to {dtype}")
        return Cast.apply(self, dtype=dtype)

    def float(self) -> "Tensor":
        return self.astype(np.float32)

    def double(self) -> "Tensor":
        return self.astype(np.float64)

    # ------------------------------------------------------------ backward
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Compute d(self)/d(leaf) for every leaf that requires grad, into ``leaf.grad``.

        ``grad`` is dL/d(self); it may be omitted only when self holds one element.
        It is read, never written or kept: as in PyTorch it is not copied first (a
        copy of a batch of feature maps costs as much as a small layer's backward).
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad, so it has no graph "
                               "(did you set requires_grad=True, or run under no_grad()?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: the output has shape {self.shape}, not one element; pass "
                    "grad=dL/d(output) of that shape, or reduce it first (.sum(), .mean())")
            g = np.ones_like(self.data)
        else:
            g = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if not g.flags.c_contiguous:
                g = np.ascontiguousarray(g)
            if g.shape != self.shape:
                raise ValueError(f"backward: grad has shape {g.shape}, the output {self.shape}")
        autograd.backward(self, g, retain_graph=retain_graph)

    def register_hook(self, hook) -> "autograd.RemovableHandle":
        """Call ``hook(grad)`` each time backward computes dL/d(self), as in PyTorch.

        ``grad`` is a Tensor of self's shape: the whole gradient of this tensor for
        this backward (all its uses summed), before it reaches ``.grad`` (a leaf) or
        flows on into the op that made self. If the hook returns a Tensor or an
        array, that replaces the gradient from there on; None leaves it as it was.
        Returns a handle: ``handle.remove()`` takes the hook off.

        >>> h = x.register_hook(lambda g: print(g.abs().max()))   # watch a gradient
        >>> h = x.register_hook(lambda g: g.clip(-1, 1))          # clip it
        """
        if not self.requires_grad:
            raise RuntimeError("register_hook: this tensor does not require grad, so no "
                               "gradient will ever reach the hook")
        if not callable(hook):
            raise TypeError(f"register_hook: hook must be callable, got {type(hook).__name__}")
        if getattr(self, "_hooks", None) is None:
            self._hooks = {}
            autograd._track_hooks(self)
        handle = autograd.RemovableHandle(self._hooks)
        self._hooks[handle.id] = hook
        return handle

    # ------------------------------------------------------------ operator helpers
    def _other(self, other) -> "Tensor":
        """Turn the other operand into a tensor of a matching float dtype."""
        if isinstance(other, Tensor):
            if other.data.dtype is self.data.dtype or other.dtype == self.dtype:
                return other
            if self.dtype.kind == "f" and other.dtype.kind != "f":
                return other.astype(self.dtype)
            return other
        if self.dtype.kind == "f":
            return Tensor._wrap(np.asarray(other, dtype=self.dtype))
        return Tensor(other)

    def _binary(self, fn, other, reverse=False):
        other = self._other(other)
        a, b = (other, self) if reverse else (self, other)
        if a.data.dtype is not b.data.dtype and a.dtype != b.dtype:  # int and float, or
            # float32 and float64: promote both to the common type
            common = np.result_type(a.dtype, b.dtype)
            a, b = a.astype(common), b.astype(common)
        return fn.apply(a, b)

    def _need_float(self, op: str) -> None:
        if self.data.dtype.kind != "f":
            raise TypeError(f"{op}: needs a floating-point tensor, got {self.dtype} "
                            f"(shape {self.shape}); convert with .float() or .double()")

    # ------------------------------------------------------------ arithmetic
    def __add__(self, other):
        return self._binary(F.Add, other)

    def __radd__(self, other):
        return self._binary(F.Add, other, reverse=True)

    def __sub__(self, other):
        return self._binary(F.Sub, other)

    def __rsub__(self, other):
        return self._binary(F.Sub, other, reverse=True)

    def __mul__(self, other):
        return self._binary(F.Mul, other)

    def __rmul__(self, other):
        return self._binary(F.Mul, other, reverse=True)

    def __truediv__(self, other):
        self._need_float("div")
        return self._binary(F.Div, other)

    def __rtruediv__(self, other):
        self._need_float("div")
        return self._binary(F.Div, other, reverse=True)

    def __neg__(self):
        return F.Neg.apply(self)

    def __pow__(self, exponent):
        self._need_float("pow")
        if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
            return F.PowScalar.apply(self, exponent=exponent)
        return self._binary(F.Pow, exponent)

    def __rpow__(self, base):
        self._need_float("pow")
        return self._binary(F.Pow, base, reverse=True)

    def __matmul__(self, other):
        self._need_float("matmul")
        return self._binary(F.MatMul, other)

    def __rmatmul__(self, other):
        self._need_float("matmul")
        return self._binary(F.MatMul, other, reverse=True)

    add, sub, mul, div, pow, matmul = __add__, __sub__, __mul__, __truediv__, __pow__, __matmul__
    neg = __neg__

    # comparisons give boolean tensors (no gradient): handy for masks and accuracy
    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(op(self.data, other))

    __eq__ = lambda self, other: self._compare(other, np.equal)  # noqa: E731
    __ne__ = lambda self, other: self._compare(other, np.not_equal)  # noqa: E731
    __lt__ = lambda self, other: self._compare(other, np.less)  # noqa: E731
    __le__ = lambda self, other: self._compare(other, np.less_equal)  # noqa: E731
    __gt__ = lambda self, other: self._compare(other, np.greater)  # noqa: E731
    __ge__ = lambda self, other: self._compare(other, np.greater_equal)  # noqa: E731
    __hash__ = object.__hash__

    def argmax(self, axis=None, dim=None) -> "Tensor":
        return Tensor._wrap(np.asarray(self.data.argmax(axis=_normalise_axis(axis, dim))))

    def argmin(self, axis=None, dim=None) -> "Tensor":
        return Tensor._wrap(np.asarray(self.data.argmin(axis=_normalise_axis(axis, dim))))

    # ------------------------------------------------------------ elementwise
    def _unary(self, fn, **options):
        self._need_float(fn.__name__.lower())
        return fn.apply(self, **options)

    def exp(self):
        return self._unary(F.Exp)

    def log(self):
        return self._unary(F.Log)

    def sqrt(self):
        return self._unary(F.Sqrt)

    def abs(self):
        return self._unary(F.Abs)

    def tanh(self):
        return self._unary(F.Tanh)

    def sigmoid(self):
        return self._unary(F.Sigmoid)

    def relu(self):
        return self._unary(F.ReLU)

    def leaky_relu(self, negative_slope: float = 0.01):
        return self._unary(F.LeakyReLU, slope=negative_slope)

    def softplus(self):
        return self._unary(F.Softplus)

    def maximum(self, other):
        return self._binary(F.Maximum, other)

    def minimum(self, other):
        return self._binary(F.Minimum, other)

    def clip(self, min=None, max=None):  # noqa: A002 (PyTorch's names)
        return self._unary(F.Clip, low=min, high=max)

    clamp = clip

    def where(self, condition, other):
        """``self`` where ``condition`` holds, else ``other`` (see ``tinygrad_uu.where``)."""
        return where(condition, self, other)

    # ------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis = _normalise_axis(axis, dim)
        return F.Sum.apply(self, axis=axis, keepdims=keepdims or bool(keepdim))

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        self._need_float("mean")
        axis = _normalise_axis(axis, dim)
        count = _reduced_count(self.shape, axis)
        return self.sum(axis, keepdims or bool(keepdim)) * (1.0 / count if count else np.nan)

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return F.Max.apply(self, axis=_normalise_axis(axis, dim), keepdims=keepdims or bool(keepdim))

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return F.Max.apply(self, axis=_normalise_axis(axis, dim), keepdims=keepdims or bool(keepdim),
                           reduce="min")

    def var(self, axis=None, keepdims=False, ddof=0, *, dim=None, keepdim=None, correction=None):
        """Variance, numpy's default (ddof=0, the biased estimate); ``correction=1``
        (PyTorch's name) or ``ddof=1`` give the unbiased one."""
        self._need_float("var")
        axis = _normalise_axis(axis, dim)
        keepdims = keepdims or bool(keepdim)
        ddof = ddof if correction is None else correction
        deviation = self - self.mean(axis, keepdims=True)
        dof = _reduced_count(self.shape, axis) - ddof
        return (deviation * deviation).sum(axis, keepdims) * (1.0 / dof if dof > 0 else np.nan)

    def std(self, axis=None, keepdims=False, ddof=0, *, dim=None, keepdim=None, correction=None):
        return self.var(axis, keepdims, ddof, dim=dim, keepdim=keepdim, correction=correction).sqrt()

    def logsumexp(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """log(sum(exp(x))), stable: the max is taken out before exponentiating."""
        self._need_float("logsumexp")
        axis = _normalise_axis(axis, dim)
        m = self.max(axis, keepdims=True).detach()
        out = (self - m).exp().sum(axis, keepdims=True).log() + m
        if keepdims or keepdim:
            return out
        return out.squeeze(axis) if axis is not None else out.reshape(())

    def softmax(self, axis=None, *, dim=None):
        """exp(x) / sum(exp(x)) along ``axis`` (default: the last)."""
        self._need_float("softmax")
        return F.Softmax.apply(self, axis=_axis_or(-1, axis, dim))

    def log_softmax(self, axis=None, *, dim=None):
        """x - logsumexp(x) along ``axis`` (default: the last)."""
        self._need_float("log_softmax")
        return F.LogSoftmax.apply(self, axis=_axis_or(-1, axis, dim))

    # ------------------------------------------------------------ shape
    def reshape(self, *shape):
        shape = _shape_args(shape)
        if shape == self.shape:
            return self
        return F.Reshape.apply(self, shape=shape)

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        if self.ndim == 0:
            return self.reshape(1)
        start, end = start_dim % self.ndim, end_dim % self.ndim
        return self.reshape(self.shape[:start] + (-1,) + self.shape[end + 1:])

    def permute(self, *axes):
        return F.Permute.apply(self, axes=_shape_args(axes))

    def transpose(self, dim0: int | None = None, dim1: int | None = None):
        """Swap two axes (PyTorch's ``transpose(dim0, dim1)``); with no arguments,
        reverse all axes (numpy's ``transpose()``). Use ``permute`` for any order."""
        if dim0 is None and dim1 is None:
            return self.T
        if dim0 is None or dim1 is None:
            raise TypeError("transpose: give two axes to swap, or none to reverse them all")
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return self.permute(*axes)

    def expand(self, *shape):
        shape = _shape_args(shape)
        # PyTorch's -1 means "keep this axis"
        offset = len(shape) - self.ndim
        shape = tuple(self.shape[i - offset] if n == -1 else n for i, n in enumerate(shape))
        return self if shape == self.shape else F.Expand.apply(self, shape=shape)

    def broadcast_to(self, shape):
        return self.expand(shape)

    def squeeze(self, axis=None, *, dim=None):
        axis = _normalise_axis(axis, dim)
        if axis is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        axes = {a % self.ndim for a in (axis if isinstance(axis, tuple) else (axis,))}
        return self.reshape(tuple(n for i, n in enumerate(self.shape) if i not in axes or n != 1))

    def unsqueeze(self, axis: int = 0, *, dim=None):
        axis = _normalise_axis(axis, dim)
        return self.reshape(np.expand_dims(self.data, axis).shape)

    def pad(self, pad_width, value: float = 0.0):
        """Pad with a constant; ``pad_width`` as in ``np.pad`` (an int, a pair, or a
        pair per axis)."""
        widths = np.broadcast_to(np.asarray(pad_width, dtype=int), (self.ndim, 2))
        if (widths < 0).any():
            raise ValueError(f"pad: widths must be >= 0, got {pad_width}")
        return F.Pad.apply(self, widths=tuple(map(tuple, widths.tolist())), value=value)

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        elif isinstance(index, list):
            index = np.asarray(index)
        return F.GetItem.apply(self, index=index)


autograd.Tensor = Tensor


class Cast(autograd.Function):
    """out = x converted to ``dtype``.   dL/dx = g converted back to x's dtype."""

    def forward(self, x, dtype):
        self.dtype = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return g.astype(self.dtype)


# ------------------------------------------------------------ functions on several tensors

def _tensors(items, like=None) -> list:
    items = [t if isinstance(t, Tensor) else Tensor(t) for t in items]
    floats = [t.dtype for t in items if t.dtype.kind == "f"]
    if floats:
        common = np.result_type(*floats)
        items = [t.astype(common) for t in items]
    return items


def _axis_or(default: int, axis, dim) -> int:
    axis = _normalise_axis(axis, dim)
    return default if axis is None else axis


def concatenate(tensors, axis: int | None = None, *, dim=None) -> Tensor:
    """Join tensors along an existing axis (default 0; ``torch.cat``)."""
    tensors = _tensors(tensors)
    if not tensors:
        raise ValueError("concatenate: needs at least one tensor")
    return F.Concatenate.apply(*tensors, axis=_axis_or(0, axis, dim))


cat = concatenate


def stack(tensors, axis: int | None = None, *, dim=None) -> Tensor:
    """Join tensors of equal shape along a new axis (default 0)."""
    tensors = _tensors(tensors)
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors need the same shape, got {[t.shape for t in tensors]}")
    axis = _axis_or(0, axis, dim)
    return concatenate([t.unsqueeze(axis) for t in tensors], axis=axis)


def where(condition, x, y) -> Tensor:
    """Elementwise ``x`` where ``condition`` is true, else ``y`` (numpy broadcasting)."""
    cond = np.asarray(condition.data if isinstance(condition, Tensor) else condition, dtype=bool)
    x, y = _tensors([x, y])
    return F.Where.apply(x, y, cond=cond)


def maximum(x, y) -> Tensor:
    x, y = _tensors([x, y])
    return x.maximum(y)


def minimum(x, y) -> Tensor:
    x, y = _tensors([x, y])
    return x.minimum(y)


# ------------------------------------------------------------ creation

def tensor(data, dtype=None, requires_grad: bool = False) -> Tensor:
    """Make a tensor. Python numbers become float32; numpy arrays keep their dtype."""
    return Tensor(data, dtype=dtype, requires_grad=requires_grad)


def from_numpy(array: np.ndarray, requires_grad: bool = False) -> Tensor:
    return Tensor(np.asarray(array), requires_grad=requires_grad)


def _make(array, requires_grad):
    return Tensor(array, requires_grad=requires_grad)


def zeros(*shape, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return _make(np.zeros(_shape_args(shape), dtype=dtype), requires_grad)


def ones(*shape, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return _make(np.ones(_shape_args(shape), dtype=dtype), requires_grad)


def full(shape, fill_value, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return _make(np.full(shape, fill_value, dtype=dtype), requires_grad)


def rand(*shape, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    """Uniform on [0, 1)."""
    return _make(_rng.random(_shape_args(shape)).astype(dtype), requires_grad)


def randn(*shape, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    """Standard normal."""
    return _make(_rng.standard_normal(_shape_args(shape)).astype(dtype), requires_grad)


def arange(start, stop=None, step=1, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return _make(np.arange(start, stop, step, dtype=dtype) if stop is not None
                 else np.arange(start, dtype=dtype), requires_grad)


def eye(n: int, m: int | None = None, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return _make(np.eye(n, m, dtype=dtype), requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, requires_grad=False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, requires_grad=requires_grad)


def rand_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return rand(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def randn_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)
