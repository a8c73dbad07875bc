"""Losses: values, reductions, gradients (float64 gradcheck), stability and errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_uu import Tensor, gradcheck, nn
from tinygrad_uu.nn import functional as F


def randn(*shape, seed=0, scale=1.0, requires_grad=True):
    data = scale * np.random.default_rng(seed).standard_normal(shape)
    return Tensor(data, requires_grad=requires_grad)


def classes(shape, n_classes, seed=1):
    return np.random.default_rng(seed).integers(0, n_classes, shape)


def log_softmax_np(x, axis=1):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


REDUCTIONS = ["mean", "sum", "none"]

# ------------------------------------------------------------ cross-entropy


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_value_and_nll_of_log_softmax(reduction):
    x, t = randn(6, 4), classes(6, 4)
    per_sample = -log_softmax_np(x.data)[np.arange(6), t]
    expected = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    np.testing.assert_allclose(F.cross_entropy(x, t, reduction=reduction).data, expected)
    np.testing.assert_allclose(F.nll_loss(x.log_softmax(1), t, reduction=reduction).data, expected)


def test_cross_entropy_label_smoothing_by_hand():
    x, t, e = randn(5, 3), classes(5, 3), 0.2
    log_p = log_softmax_np(x.data)
    expected = (-(1 - e) * log_p[np.arange(5), t] - e / 3 * log_p.sum(1)).mean()
    np.testing.assert_allclose(F.cross_entropy(x, t, label_smoothing=e).data, expected)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 5), spatial=st.sampled_from([(), (2,), (2, 3)]),
       reduction=st.sampled_from(REDUCTIONS), smoothing=st.sampled_from([0.0, 0.1]),
       ignore=st.booleans())
def test_cross_entropy_gradcheck(n, c, spatial, reduction, smoothing, ignore):
    x = randn(n, c, *spatial, scale=3.0)
    t = classes((n,) + spatial, c)
    if ignore:
        t.flat[0] = -100
        if t.size == 1 and reduction == "mean":
            return  # everything ignored: the mean is nan, as in PyTorch
    assert gradcheck(lambda x: F.cross_entropy(x, t, reduction=reduction,
                                               label_smoothing=smoothing), x)


def test_cross_entropy_ignore_index_leaves_samples_out_of_the_mean():
    x, t = randn(4, 3), np.array([0, 2, -100, 1])
    keep = [0, 1, 3]
    expected = F.cross_entropy(Tensor(x.data[keep]), t[keep])
    np.testing.assert_allclose(F.cross_entropy(x, t).data, expected.data)
    F.cross_entropy(x, t).backward()
    assert np.all(x.grad.data[2] == 0)


def test_cross_entropy_ignore_index_may_be_a_valid_class_number():
    x, t = randn(5, 4), np.array([0, 2, 3, 2, 1])
    keep = t != 2
    expected = F.cross_entropy(Tensor(x.data[keep]), t[keep], reduction="sum")
    np.testing.assert_allclose(F.cross_entropy(x, t, ignore_index=2, reduction="sum").data,
                               expected.data)
    np.testing.assert_allclose(F.nll_loss(x, t, ignore_index=2).data,
                               F.nll_loss(Tensor(x.data[keep]), t[keep]).data)
    with pytest.raises(ValueError, match="target holds class 7"):
        F.cross_entropy(x, np.array([0, 2, 7, 2, 1]), ignore_index=2)


def test_cross_entropy_segmentation_shape_matches_flattened_pixels():
    x, t = randn(2, 3, 4, 5), classes((2, 4, 5), 3)
    flat = x.data.transpose(0, 2, 3, 1).reshape(-1, 3)
    expected = F.cross_entropy(Tensor(flat), t.reshape(-1), reduction="none").data.reshape(2, 4, 5)
    np.testing.assert_allclose(F.cross_entropy(x, t, reduction="none").data, expected)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_is_stable_for_huge_logits(smoothing):
    x = Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], np.float32), requires_grad=True)
    loss = F.cross_entropy(x, np.array([1, 2]), label_smoothing=smoothing)
    loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(x.grad.data))
    if smoothing == 0:
        np.testing.assert_allclose(loss.item(), 2e4 / 2, rtol=1e-6)  # sample 0: -log p = 2e4
    assert loss.dtype == np.float32 and x.grad.dtype == np.float32


def test_cross_entropy_errors_name_op_and_shapes():
    x = randn(3, 4)
    with pytest.raises(ValueError, match=r"cross_entropy: target holds class 4.*\(3, 4\) has 4"):
        F.cross_entropy(x, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"cross_entropy: target holds class -1"):
        F.cross_entropy(x, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=r"input of shape \(3, 4\) needs a target of shape "
                                         r"\(3,\).*got \(3, 4\)"):
        F.cross_entropy(x, np.zeros((3, 4), np.int64))
    with pytest.raises(TypeError, match=r"cross_entropy: target must hold integer class "
                                        r"indices, got float32 of shape \(3,\)"):
        F.cross_entropy(x, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"cross_entropy: input must have shape \(N, C\)"):
        F.cross_entropy(randn(4), np.int64(1))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(x, np.zeros(3, np.int64), reduction="avg")
    with pytest.raises(TypeError, match="nll_loss: input must be floating-point"):
        F.nll_loss(Tensor(np.zeros((3, 4), np.int64)), np.zeros(3, np.int64))


def test_cross_entropy_accepts_tensor_and_list_targets():
    x = randn(3, 4)
    expected = F.cross_entropy(x, np.array([0, 1, 2])).data
    np.testing.assert_allclose(F.cross_entropy(x, Tensor(np.array([0, 1, 2]))).data, expected)
    np.testing.assert_allclose(F.cross_entropy(x, [0, 1, 2]).data, expected)


# ------------------------------------------------------------ nll, mse, bce


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss_gradcheck(reduction):
    t = np.array([[0, 2], [1, -100]])
    assert gradcheck(lambda x: F.nll_loss(x, t, reduction=reduction), randn(2, 3, 2))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_value_and_gradcheck(reduction):
    x, y = randn(3, 2), randn(3, 2, seed=5)
    sq = (x.data - y.data) ** 2
    expected = {"mean": sq.mean(), "sum": sq.sum(), "none": sq}[reduction]
    np.testing.assert_allclose(F.mse_loss(x, y, reduction=reduction).data, expected)
    assert gradcheck(lambda x, y: F.mse_loss(x, y, reduction=reduction), x, y)
    np.testing.assert_allclose(F.mse_loss(x, y.data, reduction=reduction).data, expected)


def test_mse_loss_refuses_silent_broadcasting():
    with pytest.raises(ValueError, match=r"mse_loss: input of shape \(4, 1\) and target of "
                                         r"shape \(4,\) differ"):
        F.mse_loss(randn(4, 1), np.zeros(4))


def test_bce_with_logits_value_and_stability():
    x = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.3])
    s = 1 / (1 + np.exp(-x))
    naive = -(y * np.log(s) + (1 - y) * np.log(1 - s))
    out = F.binary_cross_entropy_with_logits(Tensor(x), y, reduction="none")
    np.testing.assert_allclose(out.data, naive)
    huge = Tensor(np.array([1e4, -1e4, 1e4], np.float32), requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(huge, np.array([0.0, 1.0, 1.0]), reduction="sum")
    loss.backward()
    np.testing.assert_allclose(loss.item(), 2e4)
    np.testing.assert_allclose(huge.grad.data, [1, -1, 0])


def test_bce_with_logits_gradient_at_zero_is_half_minus_target():
    x = Tensor(np.zeros(3), requires_grad=True)
    F.binary_cross_entropy_with_logits(x, np.array([0.0, 1.0, 0.25]), reduction="sum").backward()
    np.testing.assert_allclose(x.grad.data, [0.5, -0.5, 0.25])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_gradcheck(reduction):
    x, y = randn(4, 3, scale=3), Tensor(np.random.default_rng(2).random((4, 3)), requires_grad=True)
    assert gradcheck(lambda x, y: F.binary_cross_entropy_with_logits(x, y, reduction), x, y)


def test_bce_with_logits_shape_error():
    with pytest.raises(ValueError, match=r"binary_cross_entropy_with_logits: input of shape "
                                         r"\(4, 1\) and target of shape \(4,\)"):
        F.binary_cross_entropy_with_logits(randn(4, 1), np.zeros(4))


# ------------------------------------------------------------ modules


def test_loss_modules_call_the_functions():
    x, t, y = randn(4, 3), classes(4, 3), randn(4, 3, seed=4, requires_grad=False)
    pairs = [(nn.CrossEntropyLoss(label_smoothing=0.1)(x, t),
              F.cross_entropy(x, t, label_smoothing=0.1)),
             (nn.NLLLoss(reduction="sum")(x, t), F.nll_loss(x, t, reduction="sum")),
             (nn.MSELoss()(x, y), F.mse_loss(x, y)),
             (nn.BCEWithLogitsLoss(reduction="none")(x, y.sigmoid()),
              F.binary_cross_entropy_with_logits(x, y.sigmoid(), reduction="none"))]
    for ours, expected in pairs:
        np.testing.assert_allclose(ours.data, expected.data)
    assert repr(nn.MSELoss()) == "MSELoss(reduction='mean')"
    with pytest.raises(ValueError, match="MSELoss: reduction"):
        nn.MSELoss(reduction="max")


# ------------------------------------------------------------ against PyTorch


@pytest.mark.torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_losses_match_torch(reduction):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    t = classes((4, 2, 2), 3)
    t[0, 0, 0] = -100
    y = np.random.default_rng(1).random((4, 3, 2, 2))
    cases = [
        (lambda a: F.cross_entropy(a, t, reduction=reduction, label_smoothing=0.15),
         lambda a: tF.cross_entropy(a, torch.tensor(t), reduction=reduction,
                                    label_smoothing=0.15)),
        (lambda a: F.nll_loss(a, t, reduction=reduction),
         lambda a: tF.nll_loss(a, torch.tensor(t), reduction=reduction)),
        (lambda a: F.mse_loss(a, y, reduction=reduction),
         lambda a: tF.mse_loss(a, torch.tensor(y), reduction=reduction)),
        (lambda a: F.binary_cross_entropy_with_logits(a, y, reduction=reduction),
         lambda a: tF.binary_cross_entropy_with_logits(a, torch.tensor(y), reduction=reduction)),
    ]
    for ours, theirs in cases:
        a, b = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        out_a, out_b = ours(a), theirs(b)
        np.testing.assert_allclose(out_a.data, out_b.detach().numpy(), rtol=1e-10)
        out_a.sum().backward()
        out_b.sum().backward()
        np.testing.assert_allclose(a.grad.data, b.grad.numpy(), rtol=1e-10, atol=1e-14)
