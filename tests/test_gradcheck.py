"""gradcheck itself: it passes right gradients, fails wrong ones (the negative
control), reports where, and leaves its inputs alone."""
import numpy as np
import pytest

import tinygrad_uu as tg
from tinygrad_uu.autograd import Function


class WrongSquare(Function):
    """x**2 with a deliberately wrong backward (g * x instead of g * 2x)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return g * self.x


def test_negative_control_fails_on_wrong_backward():
    x = tg.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    with pytest.raises(tg.GradcheckError) as info:
        tg.gradcheck(lambda t: WrongSquare.apply(t).sum(), x)
    report = str(info.value)
    assert "input 0" in report and "index (2,)" in report  # the worst element: 3 vs 6
    assert "analytic 3" in report and "numeric 6" in report
    assert "relative error" in report


def test_no_exception_mode_prints_report_and_returns_false(capsys):
    x = tg.tensor(np.array([[0.5, 1.5]]), requires_grad=True)
    assert tg.gradcheck(lambda t: WrongSquare.apply(t).sum(), x, raise_exception=False) is False
    assert "gradcheck failed" in capsys.readouterr().out


def test_float32_inputs_get_a_hint():
    x = tg.tensor([1.0, 2.0], requires_grad=True)  # float32
    with pytest.raises(tg.GradcheckError, match="not all float64"):
        tg.gradcheck(lambda t: WrongSquare.apply(t), x)


def test_passes_and_does_not_mutate_inputs_or_grads():
    a = tg.tensor(np.random.default_rng(0).standard_normal((3, 2)), requires_grad=True)
    b = tg.tensor(np.random.default_rng(1).standard_normal((2,)), requires_grad=True)
    b.grad = tg.tensor(np.array([7.0, 7.0]))
    before_a, before_b = a.data.copy(), b.data.copy()
    assert tg.gradcheck(lambda x, y: (x * y).tanh(), a, b)  # non-scalar output: a random VJP
    np.testing.assert_array_equal(a.data, before_a)
    np.testing.assert_array_equal(b.data, before_b)
    np.testing.assert_array_equal(b.grad.data, [7.0, 7.0])
    assert a.grad is None


def test_only_inputs_that_require_grad_are_checked():
    x = tg.tensor(np.array([1.0, 2.0]), requires_grad=True)
    const = tg.tensor(np.array([3.0, 4.0]))
    assert tg.gradcheck(lambda a, c: a * c, x, const)
    with pytest.raises(ValueError, match="no input has requires_grad"):
        tg.gradcheck(lambda c: c * 2, const)
