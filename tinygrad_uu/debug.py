"""Watch gradients while training: ``GradientMonitor`` and what it can tell you.

    monitor = GradientMonitor(model, every=10)
    for step in range(steps):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        monitor.step()                  # after backward, before optimizer.step()
        optimizer.step()
    print(monitor.report())             # vanishing, exploding, accumulating: in words
    viz.plot_grad_flow(monitor, "grad_flow.png")

Every ``every`` steps the monitor records, for each parameter p, the mean and the
largest |dL/dp|: two reductions over arrays that already exist, so recording costs
about one extra elementwise pass over the gradients, and nothing on other steps.

What the numbers say:

* **vanishing**: the first layers' mean |g| is orders of magnitude below the last
  layers' (a deep stack of sigmoids: each one multiplies the gradient by at most 1/4).
* **exploding**: the gradients grow by orders of magnitude during training, or turn
  NaN/Inf (a learning rate that is too high).
* **accumulating**: ``p.grad`` holds more than this step's backward put there, so the
  gradients of earlier steps are still in it (a forgotten ``optimizer.zero_grad()``).
  The monitor knows exactly: on recording steps, a hook on each parameter adds up
  what backward delivers, and ``step()`` compares that with ``p.grad``.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["GradientMonitor"]


class GradientMonitor:
    """Record the gradient norms of a model's parameters every ``every`` steps.

    ``model`` is a Module (its ``named_parameters()`` are watched) or an iterable
    of (name, tensor) pairs. Call ``step()`` once per training step, after
    ``backward()`` and before ``optimizer.step()``; or pass ``optimizer=`` and the
    monitor records each time ``optimizer.step()`` is called. Results:

    * ``names``: the parameters, in the model's order (input side first);
    * ``steps``: the step numbers recorded (0, every, 2 * every, ...);
    * ``mean_abs``, ``max_abs``: arrays (recorded steps, parameters) of mean |g| and
      max |g| (NaN where a parameter had no gradient);
    * ``accumulated``: the steps at which some ``p.grad`` held more than that step's
      backward put there; ``nonfinite``: (step, name) of gradients holding NaN or Inf.

    ``warnings()`` lists the problems seen, in words; ``report()`` adds a table.
    ``remove()`` takes the monitor's hooks off the parameters.
    """

    def __init__(self, model, every: int = 1, optimizer=None, vanishing_ratio: float = 1e-3,
                 exploding_growth: float = 1e3):
        if every < 1:
            raise ValueError(f"GradientMonitor: every must be >= 1, got {every}")
        pairs = list(model.named_parameters() if hasattr(model, "named_parameters") else model)
        pairs = [(name, p) for name, p in pairs if p.requires_grad]
        if not pairs:
            raise ValueError("GradientMonitor: the model has no parameter that requires grad")
        self.every = every
        self.vanishing_ratio, self.exploding_growth = vanishing_ratio, exploding_growth
        self.names = [name for name, _ in pairs]
        self._params = [p for _, p in pairs]
        self.steps, self.accumulated, self.nonfinite = [], [], []
        self._mean, self._max = [], []
        self._count = 0
        self._received = [None] * len(pairs)   # what backward delivered on a recording step
        self._armed = True                     # step 0 is recorded
        self._handles = [p.register_hook(self._receiver(i)) for i, p in enumerate(self._params)]
        self._optimizer = optimizer
        if optimizer is not None:  # record right before each update, with no call in the loop
            update = optimizer.step

            def monitored_step(*args, **kwargs):
                self.step()
                return update(*args, **kwargs)
            optimizer.step = monitored_step

    def _receiver(self, i: int):
        def hook(grad):
            if self._armed:
                g = grad.data
                self._received[i] = g.astype(np.float64) if self._received[i] is None \
                    else self._received[i] + g
        return hook

    def step(self) -> None:
        """Count a training step; on every ``every``-th, record the gradient norms."""
        if self._count % self.every == 0:
            self._record()
        self._count += 1
        self._armed = self._count % self.every == 0
        self._received = [None] * len(self._params)

    def _record(self) -> None:
        means, maxes, leftover = [], [], False
        for p, received in zip(self._params, self._received):
            if p.grad is None:
                means.append(np.nan)
                maxes.append(np.nan)
                continue
            g = np.abs(p.grad.data)
            means.append(float(g.mean()) if g.size else 0.0)
            maxes.append(float(g.max()) if g.size else 0.0)
            if not np.isfinite(maxes[-1]):
                self.nonfinite.append((self._count, self.names[len(maxes) - 1]))
            elif not leftover and g.size:
                # With zero_grad() before backward, p.grad is exactly what backward delivered
                # in this step. Clipping may shrink it; only a larger |p.grad| means leftovers.
                delivered = np.zeros(g.shape) if received is None else np.abs(received)
                leftover = bool((g > delivered * (1 + 1e-4) + 1e-6 * maxes[-1] + 1e-30).any())
        self.steps.append(self._count)
        self._mean.append(means)
        self._max.append(maxes)
        if leftover:
            self.accumulated.append(self._count)

    @property
    def mean_abs(self) -> np.ndarray:
        return np.array(self._mean, dtype=np.float64).reshape(len(self.steps), len(self.names))

    @property
    def max_abs(self) -> np.ndarray:
        return np.array(self._max, dtype=np.float64).reshape(len(self.steps), len(self.names))

    def remove(self) -> None:
        """Take the monitor's hooks off the parameters and the optimizer (the records stay)."""
        for handle in self._handles:
            handle.remove()
        if self._optimizer is not None and "step" in vars(self._optimizer):
            del self._optimizer.step  # the class's own step again
            self._optimizer = None

    # ------------------------------------------------------------------ diagnosis
    def _weights(self) -> list:
        """Indices of the weight matrices and kernels (not biases or norm scales)."""
        idx = [i for i, p in enumerate(self._params) if p.ndim >= 2]
        return idx or list(range(len(self.names)))

    def warnings(self) -> list[str]:
        """The problems the records show, each as a sentence; [] when all looks healthy."""
        if not self.steps:
            return []
        found = []
        mean = self.mean_abs
        if self.nonfinite:
            step, name = self.nonfinite[0]
            found.append(f"exploding: the gradient of {name} is NaN or Inf at step "
                         f"{step}; run the step under tg.detect_anomaly() to find the "
                         "op that made it (a learning rate that is too high?)")
        if self.accumulated:
            found.append(f"accumulating: at step {self.accumulated[0]}, p.grad held more than "
                         "that step's backward computed: the gradients of earlier steps are "
                         "still in it. Call optimizer.zero_grad() (or model.zero_grad()) before "
                         "every backward() (or, if you add to p.grad yourself on purpose, "
                         "ignore this)")
        weights = self._weights()
        first, last = weights[0], weights[-1]
        latest = mean[-1]
        if (len(weights) > 1 and np.isfinite(latest[[first, last]]).all() and latest[last] > 0
                and latest[first] < self.vanishing_ratio * latest[last]):
            found.append(f"vanishing: at step {self.steps[-1]}, mean |g| of {self.names[first]} "
                         f"is {latest[first]:.3g}, {latest[first] / latest[last]:.2g} times that "
                         f"of {self.names[last]} ({latest[last]:.3g}): the first layers hardly "
                         "learn. Saturating activations (sigmoid, tanh) in a deep stack? Try ReLU "
                         "with He initialisation, batch norm, or skip connections")
        finite = np.where(np.isfinite(mean), mean, np.nan)
        if len(self.steps) > 1 and not self.nonfinite:
            with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: never had a gradient
                start, end = finite[0], np.nanmax(finite[1:], axis=0)
                growth = np.where(start > 0, end / start, np.nan)
            if np.nanmax(growth, initial=0) > self.exploding_growth:
                c = int(np.nanargmax(growth))
                found.append(f"exploding: mean |g| of {self.names[c]} grew {growth[c]:.3g} times "
                             f"from step {self.steps[0]} to its largest ({end[c]:.3g}): a learning "
                             "rate that is too high? Lower it, or clip gradients")
        return found

    def report(self) -> str:
        """A table of the latest mean and max |g| per parameter, then the warnings."""
        if not self.steps:
            return "GradientMonitor: nothing recorded yet (call step() after backward())"
        width = max(len(n) for n in self.names)
        lines = [f"gradients at step {self.steps[-1]} ({len(self.steps)} records, every "
                 f"{self.every} steps):",
                 f"  {'parameter':<{width}}  {'mean |g|':>10}  {'max |g|':>10}"]
        for name, m, x in zip(self.names, self.mean_abs[-1], self.max_abs[-1]):
            lines.append(f"  {name:<{width}}  {m:>10.3g}  {x:>10.3g}")
        found = self.warnings()
        lines += [f"  WARNING {w}" for w in found] if found else ["  no warnings: the gradients "
                                                                  "look healthy"]
        return "\n".join(lines)
