"""Adam and AdamW: steps scaled per weight by running estimates of the gradient's moments."""
from __future__ import annotations

import math

import numpy as np

from .optimizer import Optimizer, _check


class Adam(Optimizer):
    """PyTorch's update, for each parameter p with gradient g, at step t = 1, 2, ...:

        g = g + weight_decay * p                       (L2 penalty, if weight_decay)
        m = beta1 * m + (1 - beta1) * g                (first moment, m = 0 at t = 0)
        v = beta2 * v + (1 - beta2) * g**2             (second moment, v = 0 at t = 0)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    The divisions by 1 - beta**t undo the bias of m and v towards their zero start.
    """

    decoupled = False  # AdamW sets True: weight decay shrinks p instead of joining g

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        _check("lr", lr)
        _check("beta1", betas[0], 0.0, 1.0, open_high=True)
        _check("beta2", betas[1], 0.0, 1.0, open_high=True)
        _check("eps", eps)
        _check("weight_decay", weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def step(self) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, weight_decay = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = {"step": 0, "exp_avg": np.zeros_like(p.data),
                                             "exp_avg_sq": np.zeros_like(p.data)}
                state["step"] += 1
                t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                if weight_decay:
                    if self.decoupled:
                        p.data *= 1 - lr * weight_decay
                    else:
                        g = g + weight_decay * p.data
                m *= beta1
                m += (1 - beta1) * g
                v *= beta2
                square = np.multiply(g, g)  # one scratch array, reused below in place
                square *= 1 - beta2
                v += square
                denom = np.sqrt(v, out=square)
                denom /= math.sqrt(1 - beta2 ** t)
                denom += eps
                update = np.divide(m, denom, out=denom)
                update *= lr / (1 - beta1 ** t)
                p.data -= update


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): before the Adam step,

        p = p - lr * weight_decay * p

    instead of adding weight_decay * p to the gradient, where Adam's scaling would
    weaken the decay of weights with large gradients. The rest is Adam's update.
    """

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
