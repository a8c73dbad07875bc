"""Module and Parameter: how a network keeps track of its weights.

A ``Module`` is a piece of a network with a ``forward``. Whatever it stores as an
attribute is found again by walking its ``__dict__`` in assignment order:

* a ``Parameter`` (a Tensor the optimizer should train) is a parameter,
* a ``Module`` is a child, whose parameters are ours too ("fc1.weight"),
* a Tensor registered with ``register_buffer`` is a buffer: state that is saved
  with the model but not trained (BatchNorm's running mean and variance).

There is no ``__getattr__`` magic: attributes are plain Python attributes, so a
typo (``model.wieght``) raises the usual AttributeError.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from types import MappingProxyType

import numpy as np

from ..autograd import RemovableHandle
from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module: float, ``requires_grad=True``.

    Assigning one to a Module attribute registers it, so ``model.parameters()``
    (and therefore the optimizer) finds it.
    """

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        array = np.asarray(data.data if isinstance(data, Tensor) else data)
        if array.dtype.kind != "f":  # integer or boolean data would not train
            array = array.astype(np.float32)
        super().__init__(array, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


def _as_numpy(value) -> np.ndarray:
    """A state-dict value as a numpy array: an ndarray, a Tensor, or a PyTorch tensor
    (detached and moved to the CPU; bfloat16, which numpy lacks, becomes float32)."""
    if isinstance(value, Tensor):
        return value.data
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model. Subclasses define ``forward``.

    >>> class MLP(Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc1 = Linear(784, 256)
    ...         self.fc2 = Linear(256, 10)
    ...     def forward(self, x):
    ...         return self.fc2(self.fc1(x).relu())
    """

    training = True  # a class default, so a subclass that forgets super().__init__() still works
    # No hooks until one is registered: read-only class defaults, replaced per instance by
    # _hook_dict. Not in state_dict, so saving and loading leaves hooks as they are.
    _forward_pre_hooks = _forward_hooks = MappingProxyType({})

    def __init__(self):
        self.training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        if self._forward_pre_hooks:
            for hook in list(self._forward_pre_hooks.values()):
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        out = self.forward(*args, **kwargs)
        if self._forward_hooks:
            for hook in list(self._forward_hooks.values()):
                result = hook(self, args, out)
                if result is not None:
                    out = result
        return out

    # ------------------------------------------------------------ hooks
    def _hook_dict(self, attribute: str, hook) -> RemovableHandle:
        if not callable(hook):
            raise TypeError(f"{type(self).__name__}: a hook must be callable, "
                            f"got {type(hook).__name__}")
        if attribute not in self.__dict__:
            object.__setattr__(self, attribute, OrderedDict())
        hooks = self.__dict__[attribute]
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        return handle

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, args)`` before every forward, as in PyTorch. ``args`` is the
        tuple of positional inputs; a non-None result (a tuple, or one value) replaces
        them. Returns a handle: ``handle.remove()`` takes the hook off."""
        return self._hook_dict("_forward_pre_hooks", hook)

    def register_forward_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after every forward, as in PyTorch: to look
        at a layer's activations (``viz.plot_feature_maps`` does). A non-None result
        replaces the output. Returns a handle: ``handle.remove()`` takes the hook off."""
        return self._hook_dict("_forward_hooks", hook)

    def __setattr__(self, name, value):
        if (isinstance(value, (list, tuple)) and value
                and all(isinstance(v, Module) for v in value)):
            raise TypeError(
                f"{type(self).__name__}.{name}: a plain {type(value).__name__} of modules is not "
                "registered, so their parameters would not be trained or saved; "
                "use nn.ModuleList(...) or nn.Sequential(...) instead")
        if (isinstance(value, Tensor) and not isinstance(value, Parameter)
                and isinstance(self.__dict__.get(name), Parameter)):
            raise TypeError(
                f"{type(self).__name__}.{name} is a Parameter; a plain Tensor in its place would "
                "not be trained. Update it in place (p.data -= lr * p.grad.data) or assign "
                "nn.Parameter(...)")
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------ registration
    def register_buffer(self, name: str, tensor) -> None:
        """Keep ``tensor`` as state that is saved in ``state_dict`` but not trained."""
        if "_buffer_names" not in self.__dict__:
            object.__setattr__(self, "_buffer_names", [])
        if name not in self._buffer_names:
            self._buffer_names.append(name)
        if tensor is not None and not isinstance(tensor, Tensor):
            tensor = Tensor(np.asarray(tensor))
        setattr(self, name, tensor)

    def _own(self, kind):
        """(name, value) of this module's own parameters, buffers or children."""
        if kind == "buffer":
            for name in self.__dict__.get("_buffer_names", ()):
                value = self.__dict__.get(name)
                if value is not None:
                    yield name, value
            return
        cls = Parameter if kind == "parameter" else Module
        for name, value in self.__dict__.items():
            if isinstance(value, cls):
                yield name, value

    def named_children(self):
        yield from self._own("module")

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = ""):
        """This module and every module inside it, depth first, each once."""
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module.named_children()]
            stack.extend(reversed(children))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def apply(self, fn) -> "Module":
        """Call ``fn(module)`` on every module inside this one (children before
        parents, as PyTorch), e.g. ``model.apply(my_init)``; returns self."""
        for m in reversed(list(self.modules())):
            fn(m)
        return self

    def _named(self, kind, recurse):
        seen = set()
        modules = self.named_modules() if recurse else [("", self)]
        for prefix, module in modules:
            for name, value in module._own(kind):
                if id(value) not in seen:  # a shared weight is listed once
                    seen.add(id(value))
                    yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self, recurse: bool = True):
        """("fc1.weight", Parameter) pairs: own parameters first, then each child's."""
        yield from self._named("parameter", recurse)

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse):
            yield p

    def named_buffers(self, recurse: bool = True):
        yield from self._named("buffer", recurse)

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse):
            yield b

    # ------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout drops, batch norm uses batch statistics) for this
        module and every module inside it."""
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients of the last backward (they accumulate otherwise)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.data.fill(0)

    def to(self, dtype) -> "Module":
        """Convert every parameter and floating-point buffer to ``dtype``, in place
        (``model.double()`` before a gradcheck, ``model.float()`` to train)."""
        for t in list(self.parameters()) + list(self.buffers()):
            if t.data.dtype.kind == "f":
                t.data = t.data.astype(dtype)
                t.grad = None
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    def requires_grad_(self, flag: bool = True) -> "Module":
        """Freeze (False) or unfreeze (True) every parameter."""
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    # ------------------------------------------------------------ saving and loading
    def _state_tensors(self, prefix: str = ""):
        """(name, tensor) of every parameter and buffer in PyTorch's ``state_dict`` order:
        a module's own parameters, then its own buffers, then each child's, depth first.
        As in PyTorch, a module or weight used in two places is listed under both names."""
        for kind in ("parameter", "buffer"):
            for name, value in self._own(kind):
                yield prefix + name, value
        for name, child in self._own("module"):
            yield from child._state_tensors(f"{prefix}{name}.")

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Name -> a copy of the array of every parameter and buffer.

        The names, order and array layouts are PyTorch's for the same module tree
        ("0.weight" in a Sequential, "bn.running_mean", Linear (out, in), Conv2d
        (out, in / groups, kH, kW), ConvTranspose2d (in, out / groups, kH, kW)), so
        ``torch_model.load_state_dict(nn.to_torch_state_dict(model))`` needs no renaming.
        Copies, so that the snapshot does not change when training goes on (keep
        the best model with ``best = model.state_dict()``).
        """
        return OrderedDict((name, t.data.copy()) for name, t in self._state_tensors())

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy the arrays of ``state_dict`` into this module's parameters and buffers.

        The values may be numpy arrays, Tensors or PyTorch tensors (a torch model's
        ``state_dict()`` loads as it is). With ``strict`` every key must match; shapes
        must match always. On an error nothing is changed.
        """
        own = OrderedDict(self._state_tensors())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        values = {name: _as_numpy(state_dict[name]) for name in own if name in state_dict}
        for name, value in values.items():
            if value.shape != own[name].shape:
                problems.append(f"{name}: the file has shape {value.shape}, "
                                f"the model {own[name].shape}")
        if problems:
            raise ValueError(f"load_state_dict into {type(self).__name__}: "
                             + "; ".join(problems))
        for name, value in values.items():
            np.copyto(own[name].data, value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """The arguments shown between the parentheses of this layer's repr."""
        return ""

    def num_parameters(self) -> int:
        """How many numbers the optimizer trains."""
        return sum(p.size for p in self.parameters())

    def __repr__(self) -> str:
        children = list(self.named_children())
        n = self.num_parameters()
        count = f"  # {n:,} parameters" if n else ""
        if not children:
            return f"{type(self).__name__}({self.extra_repr()}){count}"
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)" + (f"  # {n:,} parameters in total" if n else "")
