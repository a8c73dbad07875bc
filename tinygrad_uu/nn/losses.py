"""Loss functions, as functions (``F.cross_entropy``) and as modules (``nn.CrossEntropyLoss``).

Every loss takes ``reduction``: "mean" (the default: average over the elements),
"sum", or "none" (one loss per element, for weighting or inspecting them).

cross_entropy and binary_cross_entropy_with_logits are fused ops with their own
backward: a single node is faster than the ~8 primitives they compose into, and
the formulas below stay finite for any logits. nll_loss and mse_loss are composed
from Tensor ops, since they are just "pick" and "square".
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..autograd import Function
from ..tensor import Tensor
from .module import Module

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _array(target) -> np.ndarray:
    return np.asarray(target.data if isinstance(target, Tensor) else target)


def _class_target(op: str, input: Tensor, target, ignore_index: int):
    """Check integer class targets against (N, C) or (N, C, d1, ...) scores.

    Returns the targets and ``keep``: a mask of the samples not ignored, or None
    when every sample counts (the common case, checked with a quick min and max).
    """
    t = _array(target)
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be floating-point scores, got {input.dtype} "
                        f"of shape {input.shape}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got {t.dtype} of shape "
                        f"{t.shape}; convert it with .astype(np.int64) (one class per sample, "
                        "not one-hot rows or probabilities)")
    if input.ndim < 2:
        raise ValueError(f"{op}: input must have shape (N, C) or (N, C, d1, ...), "
                         f"got {input.shape}")
    expected = (input.shape[0],) + input.shape[2:]
    if t.shape != expected:
        raise ValueError(f"{op}: input of shape {input.shape} needs a target of shape "
                         f"{expected} (the class axis 1 removed), got {t.shape}")
    n_classes = input.shape[1]
    if t.size == 0:
        return t, None
    low, high = t.min(), t.max()
    if low >= 0 and high < n_classes and not low <= ignore_index <= high:
        return t, None
    keep = t != ignore_index
    bad = keep & ((t < 0) | (t >= n_classes))
    if bad.any():
        raise ValueError(f"{op}: target holds class {int(t[bad].flat[0])}, but the input of "
                         f"shape {input.shape} has {n_classes} classes (valid: 0 to "
                         f"{n_classes - 1})")
    return t, (None if keep.all() else keep)


def _target_index(t: np.ndarray, keep) -> tuple:
    """The index that picks x[n, t[n, ...], ...] for every sample (and pixel) n;
    ignored samples point at class 0, and their loss is masked out afterwards."""
    if keep is not None:
        t = np.where(keep, t, 0)
    if t.ndim == 1:
        return np.arange(t.shape[0]), t
    grid = np.indices(t.shape, sparse=True)
    return (grid[0], t) + tuple(grid[1:])


# ------------------------------------------------------------ cross-entropy


class CrossEntropy(Function):
    """Cross-entropy from logits x (class axis 1) and integer targets t.

    Forward, with log p = x - logsumexp(x) over the classes (taken after subtracting
    the max, so logits of any size stay finite), C classes and smoothing e:
        loss_i = -(1 - e) * log p[i, t_i] - (e / C) * sum_j log p[i, j]
    and loss_i = 0 where t_i == ignore_index. "mean" divides the sum by the number
    of samples not ignored.

    Backward: dL/dx[i, j] = w_i * (softmax(x)[i, j] - q[i, j]),
    q = (1 - e) * onehot(t_i) + e / C, with w_i = g / count ("mean"), g ("sum")
    or g_i ("none"), and w_i = 0 for ignored samples.
    """

    def forward(self, x, index, keep, reduction, label_smoothing):
        e = label_smoothing
        shifted = x - x.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        log_total = np.log(total)[:, 0]  # so that log p = shifted - log_total
        loss = log_total - shifted[index]  # -log p[i, t_i]
        if e:  # -(1/C) sum_j log p[i, j] = log_total - mean_j shifted[i, j]
            loss = (1 - e) * loss + e * (log_total - shifted.mean(axis=1))
        if keep is not None:
            loss *= keep
        self.exp, self.total, self.index, self.keep, self.smoothing = exp, total, index, keep, e
        self.reduction = reduction
        self.count = loss.size if keep is None else int(keep.sum())
        if reduction == "none":
            return loss
        total_loss = loss.sum(dtype=x.dtype)
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored: nan, as PyTorch
            return np.asarray(total_loss / self.count if reduction == "mean" else total_loss)

    def backward(self, g):
        e = self.smoothing
        grad = self.exp / self.total  # softmax(x)
        if e:
            grad -= e / grad.shape[1]
        grad[self.index] -= 1 - e
        if self.reduction == "none":
            w = g[:, None]
        else:
            w = g / self.count if self.reduction == "mean" else g
        if self.keep is not None:
            w = w * self.keep[:, None]
        grad *= w
        return grad


def cross_entropy(input: Tensor, target, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy between logits ``input`` (N, C) or (N, C, d1, ...) and integer class
    ``target`` (N,) or (N, d1, ...): ``nll_loss(log_softmax(input, dim=1), target)``
    in one stable op. ``label_smoothing`` e mixes the one-hot target with the uniform
    distribution: q = (1 - e) * onehot + e / C."""
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    t, keep = _class_target("cross_entropy", input, target, ignore_index)
    return CrossEntropy.apply(input, index=_target_index(t, keep), keep=keep,
                              reduction=reduction, label_smoothing=label_smoothing)


def nll_loss(input: Tensor, target, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood: loss_i = -input[i, t_i] for log-probabilities ``input``
    (N, C) or (N, C, d1, ...) and integer ``target``. Samples whose target is
    ``ignore_index`` count 0 and are left out of the mean."""
    _check_reduction("nll_loss", reduction)
    t, keep = _class_target("nll_loss", input, target, ignore_index)
    picked = input[_target_index(t, keep)]  # log p of each sample's target class
    if keep is None:
        return _reduce(-picked, reduction)
    loss = -picked * keep.astype(input.dtype)
    if reduction == "mean":
        return loss.sum() * (1.0 / keep.sum() if keep.any() else np.nan)
    return _reduce(loss, reduction)


# ------------------------------------------------------------ regression and binary


def _float_target(op: str, input: Tensor, target) -> Tensor:
    if not isinstance(target, Tensor):
        target = Tensor(np.asarray(target, dtype=input.dtype))
    if target.shape != input.shape:
        raise ValueError(f"{op}: input of shape {input.shape} and target of shape {target.shape} "
                         "differ; they must match (reshape one of them, e.g. .reshape(-1))")
    return target if target.dtype == input.dtype else target.astype(input.dtype)


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """Mean squared error: (input - target)**2, reduced. Shapes must match exactly:
    broadcasting (N, 1) against (N,) would silently compare every pair."""
    _check_reduction("mse_loss", reduction)
    input._need_float("mse_loss")
    diff = input - _float_target("mse_loss", input, target)
    return _reduce(diff * diff, reduction)


class BCEWithLogits(Function):
    """Binary cross-entropy from logits x and targets y in [0, 1]:

        loss = -y log(s(x)) - (1 - y) log(1 - s(x))    with s = sigmoid
             = max(x, 0) - x * y + log(1 + e),  e = exp(-|x|)  (what is computed: e <= 1)

    dL/dx = g * (s(x) - y),   dL/dy = -g * x,
    with s(x) = 1 / (1 + e) for x >= 0 and e / (1 + e) below: from the same e, which
    never overflows (1 / (1 + exp(-x)) does, for x < -88 in float32).
    """

    def forward(self, x, y):
        loss, self.e = kernels.bce_with_logits_forward(x, y)
        self.x, self.y = x, y
        return loss

    def backward(self, g):
        gy = -g * self.x if self.needs_grad(1) else None
        return kernels.bce_with_logits_backward(g, self.x, self.e, self.y), gy


def binary_cross_entropy_with_logits(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on logits (a sigmoid folded in, stable for any logits);
    ``target`` holds probabilities (0 and 1 for hard labels) of the input's shape."""
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    input._need_float("binary_cross_entropy_with_logits")
    target = _float_target("binary_cross_entropy_with_logits", input, target)
    return _reduce(BCEWithLogits.apply(input, target), reduction)


# ------------------------------------------------------------ segmentation: soft Dice


def _per_image_target(op: str, input: Tensor, target) -> Tensor:
    input._need_float(op)
    if input.ndim < 2:
        raise ValueError(f"{op}: input must have shape (N, ...) with one image per row of the "
                         f"first axis, e.g. (N, 1, H, W), got {input.shape}")
    return _float_target(op, input, target)


def soft_dice_loss(input: Tensor, target, eps: float = 1.0, reduction: str = "mean") -> Tensor:
    """Soft Dice loss of logits ``input`` (N, ...) against masks ``target`` in [0, 1]
    of the same shape, image by image: with p = sigmoid(input) and, for image n, sums
    over all its pixels i,

        I_n = sum_i p_i t_i,   S_n = sum_i p_i + sum_i t_i,
        dice_n = (2 I_n + eps) / (S_n + eps),   loss_n = 1 - dice_n,

    then the mean over images ("mean"), their sum ("sum") or the (N,) losses ("none").
    eps keeps an empty mask predicted empty at dice 1 (loss 0) and smooths the ratio.

    Gradient (what backward computes, through the sigmoid and the sums): for pixel i
    of image n, with D_n = S_n + eps,

        d dice_n / d p_i = (2 t_i D_n - (2 I_n + eps)) / D_n^2,
        d p_i / d x_i    = p_i (1 - p_i),
        dL/dx_i          = -c * (2 t_i D_n - (2 I_n + eps)) / D_n^2 * p_i (1 - p_i)

    with c = 1/N for "mean", 1 for "sum" (and dL/dloss_n for "none"). The loss is one
    number per image, not a sum over pixels: every pixel's gradient depends on the whole
    image through I_n and S_n, which is why Dice copes with glands of any size (and with
    class imbalance), and why its gradient is small for confident pixels (the p (1 - p)
    factor). Composed from Tensor ops, so backward is the chain rule through them.
    """
    op = "soft_dice_loss"
    _check_reduction(op, reduction)
    if not eps > 0:
        raise ValueError(f"{op}: eps must be positive (it keeps empty masks finite), got {eps}")
    target = _per_image_target(op, input, target)
    axes = tuple(range(1, input.ndim))
    p = input.sigmoid()
    intersection = (p * target).sum(axis=axes)
    total = p.sum(axis=axes) + target.sum(axis=axes)
    dice = (intersection * 2.0 + eps) / (total + eps)
    return _reduce(1.0 - dice, reduction)


def bce_dice_loss(input: Tensor, target, dice_weight: float = 1.0, eps: float = 1.0,
                  reduction: str = "mean") -> Tensor:
    """``binary_cross_entropy_with_logits + dice_weight * soft_dice_loss``, image by image.

    BCE gives every pixel a well-scaled gradient from the first step; Dice optimises the
    overlap that is measured in the end and is not swamped by the background. Each is a
    mean over its pixels / images, so both are O(1) and weight 1 mixes them evenly.
    "none" gives one loss per image (N,): that image's mean BCE plus its weighted Dice loss.
    """
    op = "bce_dice_loss"
    _check_reduction(op, reduction)
    if dice_weight < 0:
        raise ValueError(f"{op}: dice_weight must be >= 0, got {dice_weight}")
    target = _per_image_target(op, input, target)
    bce = BCEWithLogits.apply(input, target).mean(axis=tuple(range(1, input.ndim)))
    dice = soft_dice_loss(input, target, eps=eps, reduction="none")
    return _reduce(bce + dice * dice_weight, reduction)


# ------------------------------------------------------------ the same as modules


class _Loss(Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        _check_reduction(type(self).__name__, reduction)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """``F.cross_entropy`` as a module: ``criterion = CrossEntropyLoss(); criterion(logits, y)``."""

    def __init__(self, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0):
        super().__init__(reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input, target):
        return cross_entropy(input, target, self.ignore_index, self.reduction, self.label_smoothing)


class NLLLoss(_Loss):
    def __init__(self, ignore_index: int = -100, reduction: str = "mean"):
        super().__init__(reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return nll_loss(input, target, self.ignore_index, self.reduction)


class MSELoss(_Loss):
    def forward(self, input, target):
        return mse_loss(input, target, self.reduction)


class BCEWithLogitsLoss(_Loss):
    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.reduction)


class DiceLoss(_Loss):
    """``F.soft_dice_loss`` as a module: 1 - soft Dice of sigmoid(logits), per image."""

    def __init__(self, eps: float = 1.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.eps = eps

    def forward(self, input, target):
        return soft_dice_loss(input, target, self.eps, self.reduction)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, " + super().extra_repr()


class BCEDiceLoss(_Loss):
    """``F.bce_dice_loss`` as a module: BCE with logits + dice_weight * soft Dice loss."""

    def __init__(self, dice_weight: float = 1.0, eps: float = 1.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.dice_weight, self.eps = dice_weight, eps

    def forward(self, input, target):
        return bce_dice_loss(input, target, self.dice_weight, self.eps, self.reduction)

    def extra_repr(self) -> str:
        return f"dice_weight={self.dice_weight}, eps={self.eps}, " + super().extra_repr()
