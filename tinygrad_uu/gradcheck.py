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


def _worst_words(index, a, n, err, atol, rtol) -> str:
    """The words every report here uses for an array's worst element."""
    rel = err / max(abs(n), 1e-12)
    return (f"worst at index {tuple(int(k) for k in index)}: analytic {a:.6g}, "
            f"numeric {n:.6g}, absolute error {err:.3g}, relative error {rel:.3g} "
            f"(allowed: {atol:g} + {rtol:g} * |numeric|)")


def _report(failures, tensors, eps, atol, rtol) -> str:
    lines = ["gradcheck failed: the backward disagrees with central finite differences."]
    for i, index, a, n, err, n_bad, n_all in failures:
        lines.append(
            f"  input {i} (shape {tensors[i].shape}, {tensors[i].dtype}): {n_bad} of {n_all} "
            f"elements off; " + _worst_words(index, a, n, err, atol, rtol))
    if any(t.dtype != np.float64 for t in tensors if t.dtype.kind == "f"):
        lines.append(f"  hint: the inputs are not all float64. With eps={eps:g}, float32 rounding "
                     "alone makes the numeric side unreliable: pass .double() tensors.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plain numpy

def check_gradients(loss_fn, params, grads, eps: float = 1e-6, atol: float = 1e-5,
                    rtol: float = 1e-3, max_elements: int | None = 200, seed: int = 0,
                    raise_exception: bool = True, verbose: bool = False) -> bool:
    """Check gradients computed by hand (no engine at all) against central differences.

    ``params`` is a dict name -> numpy array, ``loss_fn(params) -> float`` the loss, and
    ``grads`` your dict name -> dL/d(params[name]). Every array is compared element
    by element with (L(p + eps) - L(p - eps)) / (2 eps), in float64; arrays with
    more than ``max_elements`` elements are checked on a random sample of that many
    (drawn with ``seed``, so a rerun checks the same ones; None checks every element).

    The report names each array that is off, its worst element in the same words as
    ``gradcheck``, and what the mistake looks like where the pattern is a known one
    (a flipped sign, a missing transpose, an all-zero gradient, a constant factor).
    Returns True; on a mismatch raises ``GradcheckError`` (or prints the report and
    returns False with ``raise_exception=False``). ``verbose`` prints the report of
    every array even when all pass. ``params`` is left untouched (copies are perturbed).

    >>> def loss_fn(p):
    ...     return cross_entropy(forward(p, x), y)
    >>> check_gradients(loss_fn, {"W1": W1, "b1": b1}, {"W1": dW1, "b1": db1})
    """
    passed, report = gradient_report(loss_fn, params, grads, eps, atol, rtol, max_elements, seed)
    if not passed:
        if raise_exception:
            raise GradcheckError(report)
        print(report)
        return False
    if verbose:
        print(report)
    return True


def gradient_report(loss_fn, params, grads, eps: float = 1e-6, atol: float = 1e-5,
                    rtol: float = 1e-3, max_elements: int | None = 200,
                    seed: int = 0) -> tuple[bool, str]:
    """``check_gradients`` without raising or printing: (passed, the report)."""
    if not isinstance(params, dict) or not isinstance(grads, dict):
        raise TypeError("check_gradients: params and grads must be dicts name -> numpy array, "
                        f"got {type(params).__name__} and {type(grads).__name__}")
    arrays = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    dtypes = {k: np.asarray(v).dtype for k, v in params.items()}
    low_precision = [k for k, dtype in dtypes.items() if dtype != np.float64]
    base = _call_loss(loss_fn, arrays)
    if not np.isfinite(base):
        raise ValueError(f"check_gradients: the loss is {base} at these parameters; "
                         "check with parameters where it is finite")
    rng = np.random.default_rng(seed)
    lines, failed = [], False
    for name, x in arrays.items():
        if name not in grads:
            failed = True
            lines.append(f"  {name} (shape {x.shape}): grads has no entry for it: a gradient "
                         "that was never computed (a forgotten bias gradient?)")
            continue
        g = np.asarray(grads[name], dtype=np.float64)
        if g.shape != x.shape:
            failed = True
            hint = ("the transpose of the parameter's: a missing transpose (.T)?"
                    if g.shape == x.shape[::-1] else
                    "a sum over the batch axis missing?" if g.ndim == x.ndim + 1 else
                    "every gradient has the shape of its parameter")
            lines.append(f"  {name}: your gradient has shape {g.shape}, the parameter {x.shape}: "
                         f"{hint}")
            continue
        flat = np.arange(x.size) if max_elements is None or x.size <= max_elements \
            else np.sort(rng.choice(x.size, size=max_elements, replace=False))
        numeric = _numeric_at(loss_fn, arrays, x, flat, eps)
        analytic = g.reshape(-1)[flat]
        error = np.abs(analytic - numeric)
        bad = error > atol + rtol * np.abs(numeric)
        worst = int(np.argmax(np.where(bad, error, -1) if bad.any() else error))
        index = np.unravel_index(flat[worst], x.shape)
        sample = (f" (a random sample of {len(flat)} of its {x.size}, seed {seed})"
                  if len(flat) < x.size else "")
        words = _worst_words(index, analytic[worst], numeric[worst], error[worst], atol, rtol)
        if bad.any():
            failed = True
            lines.append(f"  {name} (shape {x.shape}, {dtypes[name]}): {int(bad.sum())} "
                         f"of {len(flat)} checked elements off{sample}; {words}")
            pattern = _mistake_pattern(analytic, numeric, g, name, loss_fn, arrays, eps)
            if pattern:
                lines.append(f"      looks like: {pattern}")
        else:
            lines.append(f"  {name} (shape {x.shape}, {dtypes[name]}): all {len(flat)} "
                         f"checked elements agree{sample}; {words}")
    extra = [k for k in grads if k not in arrays]
    if extra:
        lines.append(f"  (grads also has {extra}, which params has not: not checked)")
    if failed and low_precision:
        lines.append(f"  hint: {low_precision} are not float64; the check runs in float64, so "
                     "if your loss_fn converts to float32 the numeric side is unreliable.")
    title = ("check_gradients failed: your gradients disagree with central finite differences."
             if failed else "check_gradients passed: your gradients agree with central "
             "finite differences.")
    return not failed, "\n".join([title] + lines)


def _call_loss(loss_fn, arrays) -> float:
    value = loss_fn(arrays)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError("check_gradients: loss_fn must return one number (a float or a "
                        f"one-element array), got {type(value).__name__} "
                        f"{getattr(value, 'shape', '')}") from None


def _numeric_at(loss_fn, arrays, x, flat_indices, eps) -> np.ndarray:
    """dL/dx at the given flat indices of x (an array inside ``arrays``), central differences."""
    view = x.reshape(-1)  # x is contiguous (a fresh np.array), so this is a view
    out = np.empty(len(flat_indices))
    for k, i in enumerate(flat_indices):
        original = view[i]
        view[i] = original + eps
        plus = _call_loss(loss_fn, arrays)
        view[i] = original - eps
        minus = _call_loss(loss_fn, arrays)
        view[i] = original
        out[k] = (plus - minus) / (2 * eps)
    return out


def _mistake_pattern(analytic, numeric, g, name, loss_fn, arrays, eps) -> str:
    """A known pattern behind a wrong gradient, in words; '' if none fits."""
    scale = np.abs(numeric).max()
    if scale == 0:
        return ("the true gradient is zero everywhere checked (the loss does not depend on "
                "these elements here), yours is not")
    if not np.abs(analytic).any():
        return "your gradient is zero everywhere checked: never computed, or left at zeros"
    unit = numeric / scale  # (scaled first: the dot products of big gradients overflowed)
    ratio = np.dot(analytic / scale, unit) / np.dot(unit, unit)
    fit = np.abs(analytic - ratio * numeric).max() <= 1e-3 * scale * max(1.0, abs(ratio))
    if fit and abs(ratio + 1) < 1e-3:
        return "the sign is flipped (yours is -1 times the numeric gradient)"
    if fit:
        return (f"yours is {ratio:.4g} times the numeric gradient everywhere: a constant factor "
                "(a missing or extra 1/batch, a 2 from a square?)")
    x = arrays[name]
    if g.ndim == 2 and g.shape[0] == g.shape[1]:
        transposed = np.abs(g.T - _numeric_full(loss_fn, arrays, x, eps)).max() if x.size <= 400 \
            else None
        if transposed is not None and transposed <= 1e-4 * scale:
            return "the transpose of the right gradient: a missing transpose (.T)"
    wrong = np.abs(analytic - numeric) > 1e-3 * scale
    yours_zero = wrong & (np.abs(analytic) < 1e-9 * scale)
    numeric_zero = wrong & (np.abs(numeric) < 1e-9 * scale)
    if (yours_zero | numeric_zero)[wrong].all():
        if yours_zero.any() and numeric_zero.any():
            return ("yours is zero where the numeric one is not, and non-zero where it is zero: "
                    "a mask on the wrong side (ReLU's [z > 0] written as [z < 0]?)")
        if yours_zero.any():
            return ("yours is zero where the numeric one is not: a mask that removes too much "
                    "(ReLU's mask taken from the wrong layer?)")
        return ("yours is non-zero where the numeric one is zero: a mask that lets too much "
                "through (a ReLU mask forgotten?)")
    return ""


def _numeric_full(loss_fn, arrays, x, eps) -> np.ndarray:
    return _numeric_at(loss_fn, arrays, x, np.arange(x.size), eps).reshape(x.shape)
