"""Stochastic gradient descent, with momentum, Nesterov momentum and weight decay."""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check


class SGD(Optimizer):
    """PyTorch's update, for each parameter p with gradient g, at step t:

        g = g + weight_decay * p                      (L2 penalty, if weight_decay)
        b = g                          at t = 1       (momentum buffer, if momentum)
        b = momentum * b + (1 - dampening) * g  after
        g = g + momentum * b    if nesterov,  else  g = b
        p = p - lr * g
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        _check("lr", lr)
        _check("momentum", momentum)
        _check("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def step(self) -> None:
        for group in self.param_groups:
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            weight_decay, nesterov = group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if weight_decay:
                    g = g + weight_decay * p.data  # a new array: p.grad stays as it was
                if momentum:
                    state = self.state.get(p)
                    if state is None:
                        buf = np.array(g, dtype=p.data.dtype)
                        self.state[p] = {"momentum_buffer": buf}
                    else:
                        buf = state["momentum_buffer"]
                        buf *= momentum
                        buf += g if dampening == 0 else (1 - dampening) * g
                    g = g + momentum * buf if nesterov else buf
                p.data -= lr * g
