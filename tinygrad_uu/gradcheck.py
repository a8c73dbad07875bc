"""Check a backward against central finite differences, with a report a student can read.

For f: inputs -> output and a random upstream vector v (v = 1 for a scalar output),
the analytic side is what ``backward`` computes for L = sum(v * f(inputs)); the
numeric side perturbs every element of every input by +-eps and takes
(L(x + eps) - L(x - eps)) / (2 eps). Both should agree to O(eps^2) in float64.
"""
from __future__ import annotations

import numpy as np

from .autograd import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with finite differences; the message says where."""


def _numeric_gradient(loss_of, arrays, i, eps):
    """dL/d(arrays[i]) by central differences, perturbing one element at a time."""
    x = arrays[i]
    grad = np.zeros(x.shape, dtype=np.float64)
    for index in np.ndindex(*x.shape):
        original = x[index]
        x[index] = original + eps
        plus = loss_of(arrays)
        x[index] = original - eps
        minus = loss_of(arrays)
        x[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def gradcheck(fn, *inputs, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True, seed: int = 0) -> bool:
    """True when ``fn``'s backward matches finite differences for every input that
    requires grad; otherwise raise ``GradcheckError`` (or print the report and return
    False with ``raise_exception=False``).

    ``fn`` takes the tensors in ``inputs`` and returns a Tensor. Check in float64:
    in float32, rounding swamps the differences of a small eps. The inputs (and their
    ``.grad``) are left as they were.
    """
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in inputs]
    checked = [i for i, t in enumerate(tensors) if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")

    out = fn(*tensors)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    upstream = np.random.default_rng(seed).standard_normal(out.shape) if out.size != 1 \
        else np.ones(out.shape)

    saved_grads = [t.grad for t in tensors]
    for t in tensors:
        t.grad = None
    try:
        if out.requires_grad:
            out.backward(upstream.astype(out.dtype))
        analytic = {i: (np.zeros(tensors[i].shape) if tensors[i].grad is None
                        else tensors[i].grad.data.astype(np.float64)) for i in checked}
    finally:
        for t, g in zip(tensors, saved_grads):
            t.grad = g

    def loss_of(arrays):
        with no_grad():
            y = fn(*[Tensor._wrap(a) for a in arrays])
        return float(np.sum(np.asarray(y.data, dtype=np.float64) * upstream))

    arrays = [t.data.copy() for t in tensors]  # perturbed copies; the inputs stay untouched
    failures = []
    for i in checked:
        numeric = _numeric_gradient(loss_of, arrays, i, eps)
        error = np.abs(analytic[i] - numeric)
        bad = error > atol + rtol * np.abs(numeric)
        if bad.any():
            worst = np.unravel_index(np.argmax(np.where(bad, error, -1)), error.shape)
            failures.append((i, worst, analytic[i][worst], numeric[worst], error[worst],
                             int(bad.sum()), numeric.size))

    if not failures:
        return True
    report = _report(failures, tensors, eps, atol, rtol)
    if raise_exception:
        raise GradcheckError(report)
    print(report)
    return False


def _report(failures, tensors, eps, atol, rtol) -> str:
    lines = ["gradcheck failed: the backward disagrees with central finite differences."]
    for i, index, a, n, err, n_bad, n_all in failures:
        rel = err / max(abs(n), 1e-12)
        lines.append(
            f"  input {i} (shape {tensors[i].shape}, {tensors[i].dtype}): {n_bad} of {n_all} "
            f"elements off; worst at index {tuple(int(k) for k in index)}: analytic {a:.6g}, "
            f"numeric {n:.6g}, absolute error {err:.3g}, relative error {rel:.3g} "
            f"(allowed: {atol:g} + {rtol:g} * |numeric|)")
    if any(t.dtype != np.float64 for t in tensors if t.dtype.kind == "f"):
        lines.append(f"  hint: the inputs are not all float64. With eps={eps:g}, float32 rounding "
                     "alone makes the numeric side unreliable: pass .double() tensors.")
    return "\n".join(lines)
