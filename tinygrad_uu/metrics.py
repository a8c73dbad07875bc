"""Evaluation metrics on numpy arrays: segmentation overlap and classification accuracy.

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
"""
from __future__ import annotations

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
