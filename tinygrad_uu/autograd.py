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
"""
from __future__ import annotations

import functools

import numpy as np

_grad_enabled = True
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


class Function:
    """Base class of every differentiable op.

    Subclasses implement:

    * ``forward(self, *arrays, **options) -> ndarray``: the op on numpy arrays. Save
      on ``self`` what the backward needs (inputs, outputs, masks...).
    * ``backward(self, grad) -> ndarray | tuple``: given ``grad`` = dL/d(output), an
      array of the output's shape, return dL/d(input_i) for every input, each of that
      input's shape (``None`` for inputs that take no gradient).

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


def topological_order(root) -> list:
    """Every tensor that ``root`` depends on (through recorded ops), inputs before outputs.

    An iterative depth-first search: a Python recursion would fail on long chains.
    """
    order, visited = [], set()
    stack = [(root, False)]
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
        if ctx is not None:
            for parent in ctx.parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def backward(root, grad: np.ndarray, retain_graph: bool = False) -> None:
    """Backpropagate ``grad`` = dL/d(root) to every leaf that requires grad.

    Leaves (tensors made by the user, not by an op) get their gradient added to
    ``.grad``; intermediate gradients live only during this walk.
    """
    grads = {id(root): grad}
    handed_out = set()  # ids of arrays already stored as some leaf's .grad in this walk
    for node in reversed(topological_order(root)):
        g = grads.pop(id(node), None)
        if g is None:
            continue
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
        input_grads = ctx.backward(g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for parent, pg in zip(ctx.parents, input_grads):
            if pg is None or not parent.requires_grad:
                continue
            key = id(parent)
            grads[key] = grads[key] + pg if key in grads else pg
        if not retain_graph:
            ctx.release()
