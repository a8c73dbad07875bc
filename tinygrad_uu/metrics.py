"""Evaluation metrics on numpy arrays: segmentation overlap, classification accuracy, ROC AUC.

Segmentation: ``dice``, ``iou`` and ``pixel_accuracy`` compare a batch of predicted
masks with the true ones, image by image (the first axis counts images; every other
axis, e.g. (1, H, W), holds that image's pixels). Predictions may be

* hard masks: bool, or numbers that are 0 or 1 (a pixel is foreground where > 0.5),
* probabilities in [0, 1]: foreground where p > ``threshold`` (0.5),
* logits (``from_logits=True``): foreground where sigmoid(x) > ``threshold``, i.e.
  x > log(threshold / (1 - threshold)), which is x > 0 at 0.5.

Targets are masks (bool, or 0/1 numbers; foreground where > 0.5). With TP, FP, FN and TN
the counts of one image's pixels,

    Dice = 2 TP / (2 TP + FP + FN),   IoU = TP / (TP + FP + FN),
    pixel accuracy = (TP + TN) / (TP + FP + FN + TN).

Empty masks: where the prediction and the truth are both empty (TP + FP + FN = 0) the
segmentation is perfect, so Dice and IoU are 1; where only one of them is empty they
are 0. ``reduction="mean"`` (the default) averages the per-image scores (every image
counts once, whatever the size of its glands); ``"none"`` returns them, shape (N,).
Dice and IoU are linked per image: IoU = Dice / (2 - Dice).

Nothing here records gradients: these are the numbers to report, not to train on
(for that, see ``nn.functional.soft_dice_loss``). Tensors are accepted too.

Binary classification (one score per example): ``roc_auc`` (rank-based, ties 1/2),
``roc_curve``, ``binary_accuracy`` and ``bootstrap_auc`` (an interval resampled by group,
e.g. by image); see their section below.
"""
from __future__ import annotations

import warnings

import numpy as np

from .tensor import Tensor

REDUCTIONS = ("mean", "none")


def _array(x) -> np.ndarray:
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def binarize(pred, threshold: float = 0.5, from_logits: bool = False) -> np.ndarray:
    """Hard masks (bool) from predictions: see the module docstring for the rules."""
    p = _array(pred)
    if p.dtype == bool:
        return p
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"binarize: threshold must lie strictly between 0 and 1, got {threshold}")
    if from_logits:
        return p > np.log(threshold / (1.0 - threshold))
    return p > threshold


def _masks(fn: str, pred, target, threshold, from_logits):
    p, t = _array(pred), _array(target)
    if p.shape != t.shape:
        raise ValueError(f"{fn}: predictions of shape {p.shape} and targets of shape {t.shape} "
                         "differ; they must match, e.g. both (N, 1, H, W)")
    if p.ndim < 2:
        raise ValueError(f"{fn}: expects a batch (N, ...) with one image per row of the first "
                         f"axis, got shape {p.shape}; for one image, pass mask[None]")
    p = binarize(p, threshold, from_logits).reshape(len(p), -1)
    t = (t if t.dtype == bool else t > 0.5).reshape(len(t), -1)
    return p, t


def confusion_counts(pred, target, threshold: float = 0.5, from_logits: bool = False) -> dict:
    """Per image counts of true/false positives/negatives: ``{"tp": (N,), "fp", "fn", "tn"}``."""
    p, t = _masks("confusion_counts", pred, target, threshold, from_logits)
    tp = np.count_nonzero(p & t, axis=1)
    fp = np.count_nonzero(p & ~t, axis=1)
    fn = np.count_nonzero(~p & t, axis=1)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": p.shape[1] - tp - fp - fn}


def _reduce(fn: str, scores: np.ndarray, reduction: str):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return float(scores.mean()) if reduction == "mean" else scores


def _ratio(num, den):
    """num / den per image, and 1 where both are 0 (both masks empty)."""
    num, den = num.astype(np.float64), den.astype(np.float64)
    return np.divide(num, den, out=np.ones_like(num), where=den > 0)


def dice(pred, target, threshold: float = 0.5, from_logits: bool = False,
         reduction: str = "mean"):
    """Dice = 2 TP / (2 TP + FP + FN) per image (1 where both masks are empty)."""
    c = confusion_counts(pred, target, threshold, from_logits)
    return _reduce("dice", _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"]), reduction)


def iou(pred, target, threshold: float = 0.5, from_logits: bool = False,
        reduction: str = "mean"):
    """Intersection over union (Jaccard) = TP / (TP + FP + FN) per image (1 where both
    masks are empty)."""
    c = confusion_counts(pred, target, threshold, from_logits)
    return _reduce("iou", _ratio(c["tp"], c["tp"] + c["fp"] + c["fn"]), reduction)


def pixel_accuracy(pred, target, threshold: float = 0.5, from_logits: bool = False,
                   reduction: str = "mean"):
    """The fraction of each image's pixels labelled correctly, (TP + TN) / all."""
    c = confusion_counts(pred, target, threshold, from_logits)
    total = c["tp"] + c["fp"] + c["fn"] + c["tn"]
    return _reduce("pixel_accuracy", _ratio(c["tp"] + c["tn"], total), reduction)


def segmentation_scores(pred, target, threshold: float = 0.5, from_logits: bool = False) -> dict:
    """All three, per image (N,) arrays: ``{"dice", "iou", "pixel_accuracy"}``."""
    c = confusion_counts(pred, target, threshold, from_logits)
    wrong = c["fp"] + c["fn"]
    return {"dice": _ratio(2 * c["tp"], 2 * c["tp"] + wrong),
            "iou": _ratio(c["tp"], c["tp"] + wrong),
            "pixel_accuracy": _ratio(c["tp"] + c["tn"], c["tp"] + c["tn"] + wrong)}


def accuracy(scores, labels, reduction: str = "mean"):
    """Classification accuracy: scores (N, C) (logits or probabilities; the prediction is
    the argmax over axis 1) or predicted labels (N,), against integer labels (N,).
    ``"none"`` gives a bool per sample."""
    s, y = _array(scores), _array(labels)
    predicted = s.argmax(axis=1) if s.ndim == 2 else s
    if predicted.shape != y.shape:
        raise ValueError(f"accuracy: scores of shape {s.shape} do not fit labels of shape "
                         f"{y.shape}; expected (N, C) or (N,) scores for (N,) labels")
    correct = predicted == y
    if reduction == "none":
        return correct
    if reduction != "mean":
        raise ValueError(f"accuracy: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return float(correct.mean()) if correct.size else float("nan")


# ----------------------------------------------------------------------------- ROC AUC
#
# Binary classification scored by a ranking: ``scores`` (N,) are logits, probabilities or
# any number that grows with the belief "positive"; ``labels`` (N,) are 0/1 (or bool).
# Rank the logits rather than sigmoid(logits): in float32 the sigmoid of every logit above
# ~17 is exactly 1.0, which turns a clear order into ties.

def _binary_inputs(fn: str, scores, labels, sample_weight=None):
    s = np.asarray(_array(scores), dtype=np.float64).reshape(-1)
    y = np.asarray(_array(labels)).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"{fn}: {s.size} scores but {y.size} labels; they must match")
    if not np.all(np.isfinite(s)):
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"{fn}: score {bad} is {s[bad]}; scores must be finite numbers")
    if y.dtype != bool:
        if not np.all((y == 0) | (y == 1)):
            bad = int(np.flatnonzero((y != 0) & (y != 1))[0])
            raise ValueError(f"{fn}: labels must be 0 or 1, label {bad} is {y[bad].item()!r}")
        y = y == 1
    w = np.ones_like(s) if sample_weight is None else np.asarray(sample_weight, np.float64)
    if w.shape != s.shape or np.any(w < 0):
        raise ValueError(f"{fn}: sample_weight must be {s.shape} non-negative numbers")
    return s, y, w


def _tie_groups(sorted_scores: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in an ascending array."""
    return np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])


def _weighted_auc(order, starts, y_sorted, weights_sorted) -> np.ndarray:
    """AUC of scores already sorted ascending (``order``, tie groups at ``starts``), for each
    row of ``weights_sorted`` (B, N): sum over tie groups g of
    W+(g) * (W-(below g) + W-(g) / 2), divided by W+ * W-; NaN where W+ or W- is 0."""
    pos = np.where(y_sorted, weights_sorted, 0.0)
    neg = weights_sorted - pos
    pos_g = np.add.reduceat(pos, starts, axis=1)
    neg_g = np.add.reduceat(neg, starts, axis=1)
    neg_below = np.cumsum(neg_g, axis=1) - neg_g
    wins = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1)
    total = pos_g.sum(axis=1) * neg_g.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / np.where(total > 0, total, 1.0), np.nan)


def roc_auc(scores, labels, sample_weight=None) -> float:
    """Area under the ROC curve, by ranks (the Mann-Whitney U statistic):

        AUC = P(score of a random positive > score of a random negative),

    counting a tie as 1/2, i.e. sum over positive-negative pairs of
    [s+ > s-] + 1/2 [s+ = s-], divided by (number of positives) * (number of negatives).
    Equals scikit-learn's ``roc_auc_score``; ``sample_weight`` weights each pair by
    w+ * w- (a patch drawn twice by a bootstrap has weight 2).

    Input with only one class has no AUC: the result is NaN, with a ``RuntimeWarning``
    (not an error, so that a bootstrap can skip such a resample and a training loop
    does not die on one batch); scikit-learn raises a ValueError instead.
    """
    s, y, w = _binary_inputs("roc_auc", scores, labels, sample_weight)
    order = np.argsort(s, kind="stable")
    auc = float(_weighted_auc(order, _tie_groups(s[order]), y[order], w[order][None])[0])
    if np.isnan(auc):
        warnings.warn(f"roc_auc: only one class among the {len(y)} labels "
                      f"({int(y.sum())} positive); the AUC is undefined, returning NaN",
                      RuntimeWarning, stacklevel=2)
    return auc


def roc_curve(scores, labels):
    """The ROC curve: ``(fpr, tpr, thresholds)``, one point per distinct score.

    Predicting "positive" where score >= thresholds[k] gives the false positive rate
    fpr[k] = FP / negatives and true positive rate tpr[k] = TP / positives. Thresholds
    fall from +inf (nothing predicted positive: the point (0, 0)) to the smallest score
    (everything positive: (1, 1)), as scikit-learn's ``roc_curve(...,
    drop_intermediate=False)``. The trapezoidal area under it equals ``roc_auc``.
    """
    s, y, _ = _binary_inputs("roc_curve", scores, labels)
    if y.all() or not y.any():
        raise ValueError(f"roc_curve: needs both classes, got {int(y.sum())} positive of "
                         f"{len(y)} labels")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]   # last index of each tie run
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return (np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]], np.r_[np.inf, s[last]])


def binary_accuracy(scores, labels, threshold: float = 0.5, from_logits: bool = False) -> float:
    """The fraction right when predicting 1 where score > threshold (probabilities), or
    where sigmoid(score) > threshold (``from_logits=True``: logit > 0 at 0.5)."""
    s, y, _ = _binary_inputs("binary_accuracy", scores, labels)
    return float((binarize(s, threshold, from_logits) == y).mean()) if len(y) else float("nan")


def bootstrap_auc(scores, labels, groups, n_boot: int = 1000, confidence: float = 0.95,
                  seed=0) -> dict:
    """ROC AUC with a percentile bootstrap interval, resampling whole ``groups``.

    Patches cut from one image overlap and share its staining, so they are not
    independent draws: resampling patches would make the interval far too narrow. Each
    of the ``n_boot`` resamples draws as many groups (e.g. image ids) as there are, with
    replacement, and takes every patch of each drawn group (a group drawn twice counts
    twice). The interval is the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles
    of the resampled AUCs; resamples with only one class (no AUC) are left out and
    counted in ``"skipped"``.

    Returns ``{"auc", "low", "high", "confidence", "n_boot", "n_groups", "skipped"}``.
    """
    s, y, _ = _binary_inputs("bootstrap_auc", scores, labels)
    g = np.asarray(groups).reshape(-1)
    if g.shape != s.shape:
        raise ValueError(f"bootstrap_auc: {g.size} groups for {s.size} scores; give one "
                         f"group id (e.g. the image) per score")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_auc: confidence must lie in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"bootstrap_auc: n_boot must be >= 1, got {n_boot}")
    names, group_of = np.unique(g, return_inverse=True)
    order = np.argsort(s, kind="stable")
    starts, y_sorted, group_sorted = _tie_groups(s[order]), y[order], group_of[order]
    rng = np.random.default_rng(seed)
    aucs = []
    for first in range(0, n_boot, 64):                      # 64 resamples at a time
        b = min(64, n_boot - first)
        picks = rng.integers(0, len(names), size=(b, len(names)))
        times_drawn = np.zeros((b, len(names)))
        np.add.at(times_drawn, (np.arange(b)[:, None], picks), 1.0)
        aucs.append(_weighted_auc(order, starts, y_sorted, times_drawn[:, group_sorted]))
    aucs = np.concatenate(aucs)
    kept = aucs[~np.isnan(aucs)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        auc = roc_auc(s, y)
    low, high = (np.quantile(kept, [(1 - confidence) / 2, (1 + confidence) / 2])
                 if len(kept) else (np.nan, np.nan))
    return {"auc": auc, "low": float(low), "high": float(high), "confidence": confidence,
            "n_boot": n_boot, "n_groups": int(len(names)), "skipped": int(n_boot - len(kept))}
