"""The autograd machinery: Function, the backward graph walk, and no_grad.

The whole idea of reverse-mode autodiff fits in this file:

1. Every differentiable op is a ``Function`` subclass. Its ``forward`` computes the
   result on plain numpy arrays and saves on ``self`` whatever the backward needs.
   Its ``backward`` receives dL/d(output) and returns dL/d(input) for each input.
2. ``Function.apply`` runs the forward and, when gradients are wanted, records the
   Function as the output tensor's ``_ctx`` together with its ``parents`` (the input
   tensors). These records form a graph from the output back to the leaves.
3. ``backward(root)`` orders that graph topologically (iteratively, so a chain of
   any length works) and walks it from the root to the leaves, applying the chain
   rule at every node and summing the gradients of tensors used more than once.

Two debugging aids live here too: anomaly mode (``detect_anomaly``), which stops at
the first op that makes a NaN or Inf, and tensor hooks (``Tensor.register_hook``),
which see, and may replace, a tensor's gradient during the walk.
"""
from __future__ import annotations

import functools
import itertools
import linecache
import os
import sys
import weakref

import numpy as np

from . import kernels

_grad_enabled = True
_anomaly_enabled = False
Tensor = None  # set by tensor.py once the class exists (tensor.py imports this module)


def is_grad_enabled() -> bool:
    return _grad_enabled


class no_grad:
    """Switch graph recording off, as a context manager or as a decorator.

    >>> with no_grad():
    ...     y = model(x)        # no graph is built, nothing is kept for backward
    """

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        return wrapper


# ------------------------------------------------------------------ anomaly mode

class AnomalyError(RuntimeError):
    """Anomaly mode found the first NaN or Inf; the message says which op made it and where."""


def is_anomaly_enabled() -> bool:
    return _anomaly_enabled


def _switch_anomaly(mode: bool) -> None:
    """Set the mode, and put the checking or the plain ``Function.apply`` in place."""
    global _anomaly_enabled
    _anomaly_enabled = mode
    Function.apply = Function.__dict__["_apply_checked" if mode else "_apply_plain"]


class set_detect_anomaly:
    """Switch anomaly mode on or off, now (``set_detect_anomaly(True)``) or for a block
    (``with set_detect_anomaly(False):``), as ``torch.autograd.set_detect_anomaly``.

    While it is on, every op remembers the line of code that called it, and:

    * forward: the first op whose output holds NaN or Inf while its inputs were all
      finite raises ``AnomalyError`` naming the op, its inputs' shapes and value
      ranges, and your line;
    * backward: the first op whose backward returns a NaN or Inf gradient raises,
      naming the op and the line where its forward was called.

    The checks read every array once more and the stack walk costs a few
    microseconds per op: slower, for debugging only. Off (the default), nothing of
    it runs: switching the mode puts a checking ``Function.apply`` in place of the
    plain one and back, so the plain one carries no test for the mode.
    """

    def __init__(self, mode: bool = True):
        self._previous = _anomaly_enabled
        _switch_anomaly(bool(mode))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _switch_anomaly(self._previous)
        return False


class detect_anomaly(set_detect_anomaly):
    """Anomaly mode for a block, as ``torch.autograd.detect_anomaly``:

    >>> with tg.detect_anomaly():
    ...     loss = model(x).log().mean()   # raises AnomalyError at the op that made a NaN
    ...     loss.backward()                # raises at the op whose gradient is NaN
    """

    def __init__(self):
        self._previous = None

    def __enter__(self):
        self._previous = _anomaly_enabled
        _switch_anomaly(True)
        return self

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly():
                return fn(*args, **kwargs)
        return wrapper


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STACK_DEPTH = 40  # frames kept per op: enough to reach the user's code through layers
_PLUMBING = {"Module.__call__", "Tensor._unary", "Tensor._binary", "__call__", "_unary", "_binary"}

# What usually makes each op produce a NaN or Inf from finite inputs.
_ANOMALY_HINTS = {
    "Log": "log(0) = -inf and log of a negative number = nan: keep the argument positive "
           "(x.clip(1e-7, None)), or use a loss that works on logits "
           "(F.cross_entropy, F.binary_cross_entropy_with_logits)",
    "Div": "a division by zero (or 0 / 0): add a small eps to the denominator",
    "Exp": "exp overflows above 88 in float32: the values going in are too large "
           "(a learning rate that is too high, or logits that need logsumexp)",
    "Sqrt": "the square root of a negative number; near 0 its gradient is infinite too",
    "Pow": "a power of a negative base, 0 to a negative power, or an overflow",
    "PowScalar": "a negative number to a fractional power, 0 to a negative power, or an overflow",
    "MatMul": "an overflow: the weights or activations have grown huge (a learning rate "
              "that is too high?)",
    "LinearFunction": "an overflow: the weights or activations have grown huge (a learning "
                      "rate that is too high?)",
    "Mul": "an overflow (values beyond 3.4e38 in float32), or inf * 0",
}
_DEFAULT_HINT = ("an overflow of float32 (beyond 3.4e38) is the usual cause: values have "
                 "grown out of range, often from a learning rate that is too high")


def _capture_stack() -> tuple:
    """(filename, line, function) of the frames that called the op, innermost first;
    the source text is looked up only if an error is reported."""
    frame, frames = sys._getframe(3), []  # skip this, _checked_apply and Function.apply
    while frame is not None and len(frames) < _STACK_DEPTH:
        code = frame.f_code
        name = getattr(code, "co_qualname", code.co_name)  # "Linear.forward" (Python 3.11+)
        frames.append((code.co_filename, frame.f_lineno, name))
        frame = frame.f_back
    return tuple(frames)


def _in_package(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_PACKAGE_DIR)


def _where(stack) -> str:
    """'file:line in function' and the source line of the first frame outside this
    package (the user's code), and the engine function it called."""
    if not stack:
        return ("  (where is not known: the forward ran while anomaly mode was off; run "
                "the forward inside detect_anomaly() too)")
    at = next((i for i, f in enumerate(stack) if not _in_package(f[0])), len(stack) - 1)
    filename, line, function = stack[at]
    lines = [f"  called from {filename}:{line} in {function}"]
    source = linecache.getline(filename, line).strip()
    if source:
        lines.append(f"      {source}")
    # the engine's functions between that line and the op (Sequential.forward -> Linear.forward)
    path = [f[2] for f in reversed(stack[:at]) if f[2] not in _PLUMBING]
    if path:
        lines.append("  through " + " -> ".join(path))
    return "\n".join(lines)


def _is_float(a) -> bool:
    """A float array, or a numpy float scalar (what a reduction to () may give)."""
    return isinstance(a, (np.ndarray, np.generic)) and a.dtype.kind in "fc"


def _describe(a) -> str:
    """'shape (2, 3), float32, values in [-1, 4.5]' (with NaN/Inf counts if any)."""
    if not isinstance(a, (np.ndarray, np.generic)):
        return repr(a)
    a = np.asarray(a)
    text = f"shape {a.shape}, {a.dtype}"
    if a.size and a.dtype.kind in "fiub":
        finite = np.isfinite(a) if a.dtype.kind == "f" else None
        if finite is not None and not finite.all():
            text += f", {_bad_count(a)}"
            a = a[finite]
        if a.size:
            text += f", {'finite ' if finite is not None and not finite.all() else ''}values " \
                    f"in [{a.min():.4g}, {a.max():.4g}]"
    return text


def _bad_count(a: np.ndarray) -> str:
    """'2 nan and 1 -inf of 10 values'."""
    counts = [(int(np.isnan(a).sum()), "nan"), (int(np.isposinf(a).sum()), "+inf"),
              (int(np.isneginf(a).sum()), "-inf")]
    return " and ".join(f"{n} {what}" for n, what in counts if n) + f" of {a.size} values"


def _checked_apply(cls, inputs, options):
    """Function.apply under anomaly mode: remember the caller, check the output."""
    ctx = cls()
    ctx.stack = _capture_stack()
    arrays = [t.data for t in inputs]
    with np.errstate(all="ignore"):  # reported below, with more to go on than a warning
        out = ctx.forward(*arrays, **options)
    if _is_float(out) and not np.isfinite(out).all() \
            and all(np.isfinite(a).all() for a in arrays if _is_float(a)):
        lines = [f"detect_anomaly: {cls.op_name} produced {_bad_count(out)} "
                 "from finite inputs."]
        lines += [f"  input {i}: {_describe(a)}" for i, a in enumerate(arrays)]
        lines += [f"  output: {_describe(out)}", _where(ctx.stack),
                  f"  likely cause: {_ANOMALY_HINTS.get(cls.op_name, _DEFAULT_HINT)}"]
        raise AnomalyError("\n".join(lines))
    return ctx, out


def _check_gradient(ctx, grad_out, input_grads) -> None:
    """Backward under anomaly mode: raise at the first op whose gradient is not finite."""
    for i, g in enumerate(input_grads):
        if _is_float(g) and not np.isfinite(g).all():
            shape = ctx.parents[i].shape if i < len(ctx.parents) else "?"
            lines = [f"detect_anomaly: the backward of {ctx.op_name} returned a gradient "
                     f"with {_bad_count(g)} for its input {i} (shape {shape}), from "
                     + ("a finite incoming gradient." if np.isfinite(grad_out).all() else
                        "an incoming gradient that was not finite either (a hook's doing?)."),
                     f"  incoming gradient dL/d(output): {_describe(grad_out)}",
                     f"  input {i} itself: {_describe(ctx.parents[i].data)}",
                     "  the forward of this op was",
                     _where(getattr(ctx, "stack", ())),
                     "  likely cause: the op's derivative is infinite where it was "
                     "evaluated (log or sqrt at 0, a division by ~0), or an overflow"]
            raise AnomalyError("\n".join(lines))


# ------------------------------------------------------------------ hooks

class RemovableHandle:
    """What ``register_hook`` and the Module hooks return: ``handle.remove()`` takes
    the hook off again (removing twice is harmless)."""

    _ids = itertools.count()

    def __init__(self, hooks: dict):
        self._hooks, self.id = hooks, next(RemovableHandle._ids)

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


# id() of every live tensor that has had a hook: the walk looks up only these (a set
# lookup), so tensors without hooks cost nothing even while some model is monitored.
_hooked = set()


def _track_hooks(tensor) -> None:
    """Called when ``tensor`` gets its first hook; forgotten when the tensor dies."""
    _hooked.add(id(tensor))
    weakref.finalize(tensor, _hooked.discard, id(tensor))


def _run_tensor_hooks(node, g):
    """Call node's gradient hooks in order; a hook's non-None result replaces the gradient."""
    for hook in list(node._hooks.values()):
        result = hook(Tensor._wrap(g))
        if result is None:
            continue
        new = np.asarray(result.data if isinstance(result, Tensor) else result)
        if new.shape != g.shape:
            raise ValueError(f"register_hook: the hook {getattr(hook, '__name__', hook)} returned "
                             f"a gradient of shape {new.shape}, the tensor has shape {g.shape}")
        g = new.astype(g.dtype, copy=False)
    return g


class Function:
    """Base class of every differentiable op.

    Subclasses implement:

    * ``forward(self, *arrays, **options) -> ndarray``: the op on numpy arrays. Save
      on ``self`` what the backward needs (inputs, outputs, masks...).
    * ``backward(self, grad) -> ndarray | tuple``: given ``grad`` = dL/d(output), an
      array of the output's shape, return dL/d(input_i) for every input, each of that
      input's shape (``None`` for inputs that take no gradient). Return new arrays,
      or views of ``grad``; never ``grad`` written into. The walk may add other
      gradients into a new array it is given (see ``_is_fresh``).

    Use an op through ``apply``: ``y = Exp.apply(x)``.
    """

    op_name = "Function"
    parents: tuple = ()
    released = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.op_name = cls.__name__  # the name errors and graph drawings use

    @classmethod
    def apply(cls, *inputs, **options):
        ctx = cls()
        out = Tensor._wrap(ctx.forward(*[t.data for t in inputs], **options))
        if _grad_enabled:
            for t in inputs:
                if t.requires_grad:
                    out.requires_grad = True
                    out._ctx = ctx
                    ctx.parents = inputs
                    break
        return out

    @classmethod
    def _apply_checked(cls, *inputs, **options):
        """``apply`` while anomaly mode is on (it takes apply's place then, so that with
        the mode off, ops run exactly the code above and pay nothing for the mode)."""
        ctx, out = _checked_apply(cls, inputs, options)
        out = Tensor._wrap(out)
        if _grad_enabled and any(t.requires_grad for t in inputs):
            out.requires_grad, out._ctx, ctx.parents = True, ctx, inputs
        return out

    def forward(self, *arrays, **options):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, grad):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def needs_grad(self, i: int) -> bool:
        """Whether input ``i`` wants a gradient: a backward may skip costly work if not."""
        return self.parents[i].requires_grad

    def release(self):
        """Drop the saved arrays and the links to the inputs, freeing their memory."""
        self.__dict__.clear()
        self.released = True


Function._apply_plain = Function.__dict__["apply"]


def topological_order(roots, every_parent: bool = False) -> list:
    """Every tensor that ``roots`` (a tensor, or a list of them) depend on through recorded
    ops, each once, inputs before outputs.

    ``backward`` follows only the parents that require grad. ``every_parent=True`` follows
    every parent, a constant or a frozen weight too, and visits them in argument order:
    what the ONNX exporter and the graph drawing need. An iterative depth-first search: a
    Python recursion would fail on long chains. Keyed by ``id()``, because Tensor's ``==``
    compares values.
    """
    order, visited = [], set()
    stack = [(t, False) for t in reversed(roots if isinstance(roots, (list, tuple)) else [roots])]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        ctx = node._ctx
        if ctx is None:
            continue
        if every_parent:
            stack.extend((p, False) for p in reversed(ctx.parents) if id(p) not in visited)
        else:
            for parent in ctx.parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def _is_fresh(pg, g, input_grads, ctx) -> bool:
    """Whether the walk alone holds ``pg``, one of ``ctx.backward(g)``'s gradients: an
    array of its own memory, writable, and neither ``g``, another of the gradients, nor
    anything the op keeps. Then the walk may add into it (below)."""
    if not (isinstance(pg, np.ndarray) and pg.flags.owndata and pg.flags.writeable) or pg is g:
        return False
    if sum(other is pg for other in input_grads) > 1:
        return False
    for kept in vars(ctx).values():
        if isinstance(kept, dict):
            kept = tuple(kept.values())
        if kept is pg or (isinstance(kept, (tuple, list)) and any(k is pg for k in kept)):
            return False
    return True


IN_PLACE_MIN_SIZE = 4096  # values: a smaller sum gains nothing from going in place


def _accumulate(grads, owned, key, pg, pg_owned) -> None:
    """grads[key] += pg: a later path's gradient into a tensor's (a residual block's
    input, a U-Net's skip). In place, when the walk alone holds one of the two arrays:
    its own earlier sum (``owned``, a set of keys) or ``pg`` just made by an op
    (``pg_owned``), as PyTorch's autograd does; else into a new array, the walk's own.
    W8's three sums inside training steps, alternated in one process: 1.18 -> 0.72 ms a
    step on two threads, 1.66 -> 0.69 ms on one; the steps 1.01x at both (W5
    0.99-1.01x). Sums under IN_PLACE_MIN_SIZE values skip the checks (W6's chain of
    2000 ops on 16 values lost 3% to them)."""
    total = grads[key]
    for into, other, mine in ((total, pg, key in owned), (pg, total, pg_owned)):
        if mine and into.shape == other.shape and np.result_type(into, other) == into.dtype:
            kernels.add_into(into, other)  # split among the threads when big
            grads[key] = into
            owned.add(key)
            return
    both = isinstance(total, np.ndarray) and isinstance(pg, np.ndarray) and total.shape == pg.shape
    total = kernels.add(total, pg) if both else total + pg  # split among the threads when big
    grads[key] = total
    if isinstance(total, np.ndarray):
        owned.add(key)


def backward(root, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Backpropagate ``grad`` = dL/d(root) to every leaf that requires grad.

    Leaves (tensors made by the user, not by an op) get their gradient added to
    ``.grad``; intermediate gradients live only during this walk. A tensor's hooks
    (``register_hook``) see its whole gradient before it goes on, and may replace it.
    """
    check = _anomaly_enabled
    if check and _is_float(grad) and not np.isfinite(grad).all():
        raise AnomalyError(f"detect_anomaly: the gradient backward() started from holds "
                           f"{_bad_count(grad)}: {_describe(grad)}")
    hooked = _hooked
    grads = {id(root): grad}
    owned = set()  # the keys of grads whose arrays the walk alone holds: it may add into them
    # ids of arrays a leaf may not keep as its .grad: those already kept by another leaf
    # in this walk, and the caller's ``grad`` itself (backward() does not copy it)
    handed_out = {id(grad)}
    for node in reversed(topological_order(root)):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if owned:
            owned.discard(id(node))
        if hooked and id(node) in hooked and node._hooks:
            g = _run_tensor_hooks(node, g)
        ctx = node._ctx
        if ctx is None:  # a leaf: accumulate, as PyTorch does, until zero_grad()
            if node.grad is None:
                # keep g itself only if no other leaf holds it and it is not a view
                # (Add hands one array to both inputs; reshape returns views)
                if (id(g) in handed_out or not g.flags.owndata or not g.flags.writeable
                        or g.dtype != node.data.dtype):
                    g = np.array(g, dtype=node.data.dtype)
                handed_out.add(id(g))
                node.grad = Tensor._wrap(g)
            else:
                node.grad.data = node.grad.data + g
            continue
        if ctx.released:
            raise RuntimeError(
                f"backward: the graph through {ctx.op_name} was already freed by an "
                "earlier backward(). Call backward(retain_graph=True) the first time "
                "if you need to backpropagate through the same graph twice.")
        if check:
            with np.errstate(all="ignore"):
                input_grads = ctx.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            _check_gradient(ctx, g, input_grads)
        else:
            input_grads = ctx.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
        for parent, pg in zip(ctx.parents, input_grads):
            if pg is None or not parent.requires_grad:
                continue
            key = id(parent)
            if key not in grads:
                grads[key] = pg
            elif getattr(pg, "size", 0) >= IN_PLACE_MIN_SIZE:
                _accumulate(grads, owned, key, pg, _is_fresh(pg, g, input_grads, ctx))
            else:  # small: a new array (the checks would cost more than the copy saves)
                grads[key] = grads[key] + pg
        if not retain_graph:
            ctx.release()
