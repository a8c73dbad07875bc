"""RMSprop: steps divided by a running root-mean-square of the gradient."""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check


class RMSprop(Optimizer):
    """PyTorch's update, for each parameter p with gradient g:

        g = g + weight_decay * p                      (L2 penalty, if weight_decay)
        s = alpha * s + (1 - alpha) * g**2            (s = 0 at the start)
        a = sqrt(s) + eps;   centered: a = sqrt(s - c**2) + eps,
                             with c = alpha * c + (1 - alpha) * g   (c = 0 at the start)
        momentum > 0:  b = momentum * b + g / a;  p = p - lr * b    (b = 0 at the start)
        otherwise:     p = p - lr * g / a
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False):
        _check("lr", lr)
        _check("alpha", alpha)
        _check("eps", eps)
        _check("weight_decay", weight_decay)
        _check("momentum", momentum)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def step(self) -> None:
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            weight_decay, momentum, centered = group["weight_decay"], group["momentum"], group["centered"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {"step": 0, "square_avg": np.zeros_like(p.data)}
                    if momentum:
                        state["momentum_buffer"] = np.zeros_like(p.data)
                    if centered:
                        state["grad_avg"] = np.zeros_like(p.data)
                state["step"] += 1
                if weight_decay:
                    g = g + weight_decay * p.data
                s = state["square_avg"]
                s *= alpha
                s += (1 - alpha) * g * g
                if centered:
                    c = state["grad_avg"]
                    c *= alpha
                    c += (1 - alpha) * g
                    avg = np.sqrt(s - c * c)
                else:
                    avg = np.sqrt(s)
                avg += eps
                if momentum:
                    b = state["momentum_buffer"]
                    b *= momentum
                    b += np.divide(g, avg, out=avg)
                    p.data -= lr * b
                else:
                    update = np.divide(g, avg, out=avg)
                    update *= lr
                    p.data -= update
