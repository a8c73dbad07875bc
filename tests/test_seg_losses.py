"""Segmentation losses: soft Dice and BCE + Dice (values by hand, float64 gradcheck with
hypothesis, the gradient formula of the docstring, reductions, errors, PyTorch)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_uu import Tensor, gradcheck, nn
from tinygrad_uu.nn import functional as F

try:
    import torch
except ImportError:  # torch is an optional peer
    torch = None

REDUCTIONS = ["mean", "sum", "none"]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def logits_and_masks(shape, seed=0, scale=2.0, soft=False):
    rng = np.random.default_rng(seed)
    x = Tensor(scale * rng.standard_normal(shape), requires_grad=True)
    t = rng.random(shape) if soft else (rng.random(shape) < 0.4).astype(np.float64)
    return x, t


def dice_by_hand(x, t, eps):
    """Per image: 1 - (2 sum p t + eps) / (sum p + sum t + eps)."""
    p = sigmoid(x).reshape(len(x), -1)
    t = t.reshape(len(t), -1)
    return 1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)


def test_soft_dice_by_hand_on_two_pixels():
    # image 0: logits 0, 0 -> p = 1/2, 1/2; target 1, 0: I = 1/2, S = 1 + 1 = 2
    # image 1: a confident, right prediction of an empty mask: p ~ 0, I = 0, S ~ 0 -> dice ~ 1
    x = Tensor(np.array([[0.0, 0.0], [-40.0, -40.0]]))
    t = np.array([[1.0, 0.0], [0.0, 0.0]])
    per_image = F.soft_dice_loss(x, t, eps=1.0, reduction="none").data
    np.testing.assert_allclose(per_image, [1 - (2 * 0.5 + 1) / (2 + 1), 0.0], atol=1e-12)
    np.testing.assert_allclose(F.soft_dice_loss(x, t, eps=1.0).data, per_image.mean())
    np.testing.assert_allclose(F.soft_dice_loss(x, t, reduction="sum").data, per_image.sum())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(3, 1, 4, 5), (2, 6), (4, 2, 3)])
def test_soft_dice_matches_formula_per_image(shape, reduction):
    x, t = logits_and_masks(shape)
    per_image = dice_by_hand(x.data, t, eps=0.5)
    expected = {"mean": per_image.mean(), "sum": per_image.sum(), "none": per_image}[reduction]
    np.testing.assert_allclose(F.soft_dice_loss(x, t, eps=0.5, reduction=reduction).data,
                               expected, rtol=1e-12)


def test_soft_dice_gradient_is_the_docstring_formula():
    x, t = logits_and_masks((3, 1, 4, 4), seed=3)
    eps, n = 1.0, 3
    F.soft_dice_loss(x, t, eps=eps).backward()
    p = sigmoid(x.data)
    axes = (1, 2, 3)
    inter = (p * t).sum(axes, keepdims=True)
    d = p.sum(axes, keepdims=True) + t.sum(axes, keepdims=True) + eps
    expected = -(1 / n) * (2 * t * d - (2 * inter + eps)) / d ** 2 * p * (1 - p)
    np.testing.assert_allclose(x.grad.data, expected, rtol=1e-10, atol=1e-15)


def test_float32_in_float32_out():
    x = Tensor(np.zeros((2, 1, 3, 3), np.float32), requires_grad=True)
    t = np.ones((2, 1, 3, 3), np.float32)
    for loss in (F.soft_dice_loss(x, t), F.bce_dice_loss(x, t)):
        assert loss.dtype == np.float32
        loss.backward()
        assert x.grad.dtype == np.float32


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 2), h=st.integers(1, 4), w=st.integers(1, 4),
       eps=st.sampled_from([1e-3, 1.0]), reduction=st.sampled_from(REDUCTIONS),
       soft=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_soft_dice_gradcheck(n, c, h, w, eps, reduction, soft, seed):
    x, t = logits_and_masks((n, c, h, w), seed=seed, soft=soft)
    assert gradcheck(lambda x: F.soft_dice_loss(x, t, eps=eps, reduction=reduction), x)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 4),
       dice_weight=st.sampled_from([0.0, 0.5, 1.0, 3.0]), reduction=st.sampled_from(REDUCTIONS),
       seed=st.integers(0, 2 ** 16))
def test_bce_dice_gradcheck_both_inputs(n, h, w, dice_weight, reduction, seed):
    x, t = logits_and_masks((n, 1, h, w), seed=seed, soft=True)
    t = Tensor(t, requires_grad=True)   # soft targets: the gradient reaches them too
    assert gradcheck(lambda x, t: F.bce_dice_loss(x, t, dice_weight=dice_weight,
                                                  reduction=reduction), x, t)


def test_gradcheck_notices_a_wrong_dice_gradient():
    """The negative control: a Dice 'loss' with the sigmoid's derivative left out."""
    x, t = logits_and_masks((2, 1, 3, 3), seed=5)

    def wrong(x):
        p = Tensor(sigmoid(x.data)) + (x - Tensor(x.data))  # value of sigmoid, gradient of identity
        inter, total = (p * t).sum(axis=(1, 2, 3)), p.sum(axis=(1, 2, 3)) + t.sum(axis=(1, 2, 3))
        return (1.0 - (inter * 2.0 + 1.0) / (total + 1.0)).mean()

    assert not gradcheck(wrong, x, raise_exception=False)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_dice_is_bce_plus_weighted_dice(reduction):
    x, t = logits_and_masks((3, 1, 4, 4), seed=7)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").data.mean(axis=(1, 2, 3))
    dice = dice_by_hand(x.data, t, eps=1.0)
    per_image = bce + 0.3 * dice
    expected = {"mean": per_image.mean(), "sum": per_image.sum(), "none": per_image}[reduction]
    np.testing.assert_allclose(F.bce_dice_loss(x, t, dice_weight=0.3, reduction=reduction).data,
                               expected, rtol=1e-12)
    # the mean over equal-sized images is the usual BCE mean plus the mean Dice loss
    if reduction == "mean":
        np.testing.assert_allclose(F.bce_dice_loss(x, t).data,
                                   F.binary_cross_entropy_with_logits(x, t).data
                                   + F.soft_dice_loss(x, t).data, rtol=1e-12)


def test_stable_for_huge_logits():
    x = Tensor(np.array([[1e4, -1e4, 1e4], [-1e4, -1e4, -1e4]]), requires_grad=True)
    t = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    loss = F.bce_dice_loss(x, t)
    loss.backward()
    assert np.isfinite(loss.data) and np.all(np.isfinite(x.grad.data))
    np.testing.assert_allclose(loss.data, 0.0, atol=1e-12)  # perfect, confident predictions


def test_modules():
    x, t = logits_and_masks((2, 1, 3, 3))
    assert nn.DiceLoss(eps=0.5)(x, t).item() == pytest.approx(F.soft_dice_loss(x, t, 0.5).item())
    criterion = nn.BCEDiceLoss(dice_weight=2.0, reduction="sum")
    assert criterion(x, t).item() == pytest.approx(
        F.bce_dice_loss(x, t, dice_weight=2.0, reduction="sum").item())
    assert "dice_weight=2.0" in repr(criterion) and "eps=0.5" in repr(nn.DiceLoss(eps=0.5))


def test_errors_name_the_problem():
    x, t = logits_and_masks((2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"soft_dice_loss.*\(2, 1, 3, 3\).*\(2, 9\)"):
        F.soft_dice_loss(x, t.reshape(2, 9))
    with pytest.raises(ValueError, match="one image per row"):
        F.soft_dice_loss(Tensor(np.zeros(4)), np.zeros(4))
    with pytest.raises(ValueError, match="eps must be positive"):
        F.soft_dice_loss(x, t, eps=0.0)
    with pytest.raises(ValueError, match="reduction"):
        F.soft_dice_loss(x, t, reduction="avg")
    with pytest.raises(ValueError, match="dice_weight"):
        F.bce_dice_loss(x, t, dice_weight=-1.0)
    with pytest.raises(TypeError):
        F.soft_dice_loss(Tensor(np.zeros((2, 3), np.int64)), np.zeros((2, 3)))


@pytest.mark.torch
@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_against_torch_formulas(reduction):
    x, t = logits_and_masks((3, 2, 5, 4), seed=11, soft=True)
    xt = torch.tensor(x.data, requires_grad=True)
    tt = torch.tensor(t)
    p = torch.sigmoid(xt)
    dims = (1, 2, 3)
    dice = 1 - (2 * (p * tt).sum(dims) + 1.0) / (p.sum(dims) + tt.sum(dims) + 1.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(xt, tt, reduction="none").mean(dims)
    per_image = bce + 0.7 * dice
    expected = per_image.mean() if reduction == "mean" else per_image.sum()
    expected.backward()
    loss = F.bce_dice_loss(x, t, dice_weight=0.7, reduction=reduction)
    loss.backward()
    np.testing.assert_allclose(loss.data, expected.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.data, xt.grad.numpy(), rtol=1e-10, atol=1e-14)
