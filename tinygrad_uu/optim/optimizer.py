"""The Optimizer base class: parameter groups, zero_grad, and saving the state.

An optimizer holds ``param_groups``: a list of dicts, each with its "params" and
its hyper-parameters ("lr", "momentum", ...), so that parts of a model can use
different settings, and a scheduler can change ``group["lr"]`` between epochs.
``state[p]`` holds what the optimizer remembers about parameter p (momentum
buffers, moment estimates, the step count). Subclasses implement ``step()``,
which updates every ``p.data`` in place from ``p.grad`` (skipping p.grad = None).
"""
from __future__ import annotations

import numpy as np

from ..tensor import Tensor


class Optimizer:
    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.param_groups: list[dict] = []
        self.state: dict = {}  # parameter -> {"name": array or number}
        params = [params] if isinstance(params, Tensor) else list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty list of parameters "
                             "(did you pass model.parameters() of a model without any?)")
        for group in (params if isinstance(params[0], dict) else [{"params": params}]):
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add a dict with "params" and any hyper-parameter to override the defaults."""
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        taken = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameter {i} is a {type(p).__name__}, "
                                "not a Tensor")
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__}: parameter {i} (shape {p.shape}) is the "
                                 "result of an op, not a leaf tensor; only leaves can be updated")
            if id(p) in taken:
                raise ValueError(f"{type(self).__name__}: parameter {i} (shape {p.shape}) "
                                 "appears twice; each parameter may be in one group only")
            taken.add(id(p))
        for name, value in self.defaults.items():
            group.setdefault(name, value)
        group["params"] = params
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients of the last backward (they accumulate otherwise)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad.data.fill(0)

    def step(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define step()")

    # ------------------------------------------------------------ saving the state
    def state_dict(self) -> dict:
        """{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}, with
        parameters numbered in group order (as PyTorch), and copies of the arrays."""
        index = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index[id(p)] = len(index)
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: {k: np.copy(v) if isinstance(v, np.ndarray) else v
                                for k, v in s.items()}
                 for group in self.param_groups for p in group["params"]
                 if (s := self.state.get(p)) is not None}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and buffers saved by ``state_dict`` (same groups and
        parameter shapes required)."""
        groups = state_dict["param_groups"]
        sizes = [len(g["params"]) for g in self.param_groups]
        saved_sizes = [len(g["params"]) for g in groups]
        if sizes != saved_sizes:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the saved groups hold "
                             f"{saved_sizes} parameters, this optimizer's {sizes}")
        params = [p for g in self.param_groups for p in g["params"]]
        for group, saved in zip(self.param_groups, groups):
            group.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            for k, v in s.items():
                if isinstance(v, np.ndarray) and v.shape not in (p.shape, ()):
                    raise ValueError(f"{type(self).__name__}.load_state_dict: state {k!r} of "
                                     f"parameter {i} has shape {v.shape}, the parameter {p.shape}")
            self.state[p] = {k: np.array(v, dtype=p.dtype) if isinstance(v, np.ndarray) else v
                             for k, v in s.items()}

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"


def _check(name: str, value: float, low: float = 0.0, high: float | None = None,
           open_high: bool = False) -> None:
    """Reject a hyper-parameter outside [low, high] (or [low, high) with open_high)."""
    ok = value >= low and (high is None or (value < high if open_high else value <= high))
    if not ok:
        bounds = f"[{low}, {high})" if open_high else f"[{low}, {high if high is not None else 'inf'}]"
        raise ValueError(f"invalid {name}: {value} (must be in {bounds})")
