"""Mean average precision with pycocotools' rules (cross-checked against it in the tests).

For every class c and IoU threshold t:

1. Per image, keep c's detections sorted by score (a stable sort), at most ``max_dets``
   of them (pycocotools cuts per image *and* class; our ``postprocess`` also caps the
   whole image at 100, so both limits hold).
2. Match them greedily in score order: a detection takes the not-yet-matched ground-truth
   box of its class with the highest IoU, if that IoU is >= t (on a tie the later box);
   otherwise it is a false positive. IoU has no "+1 pixel": area = w * h.
3. Pool the detections of all images, sort by score (stable, images in order), and
   accumulate recall = TP / n_gt and precision = TP / (TP + FP).
4. Make precision monotone (p(r) = max precision at recall >= r) and average it at the
   101 recalls 0, 0.01, ..., 1 (0 past the highest recall reached).

A class with no ground truth in any image has no AP (NaN) and is left out of the means;
its detections, and every detection on an image with no ground truth, are false
positives of their class. AP50 is the mean over classes at t = 0.5; AP50:95 the mean
over classes and the ten thresholds 0.50:0.05:0.95.

``interpolation="voc"`` instead takes the area under the monotone precision curve at
every recall reached (PASCAL VOC 2010+'s "all-point" AP), with the same matching.
"""
from __future__ import annotations

import numpy as np

from .boxes import box_iou

# the same grids as pycocotools (np.linspace, so the floats agree exactly)
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1)


def _per_image(op: str, items, keys, i):
    item = items[i]
    try:
        arrays = [np.asarray(item[k]) for k in keys]
    except (KeyError, TypeError):
        raise ValueError(f"{op}: image {i} must be a dict with keys {keys}") from None
    n = len(arrays[-1].reshape(-1))
    boxes = arrays[0].reshape(-1, 4) if arrays[0].size else np.zeros((0, 4))
    if len(boxes) != n or any(len(a.reshape(-1)) != n for a in arrays[1:]):
        raise ValueError(f"{op}: image {i}: {', '.join(keys)} have different lengths")
    return [boxes.astype(np.float64)] + [a.reshape(-1) for a in arrays[1:]]


def _match_image(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(T, D) bool: is detection d (rows of ``ious`` (D, G), best score first) a true
    positive at threshold t? Greedy, as pycocotools: each detection takes the unmatched
    ground truth with the highest IoU >= t (the last of equals)."""
    n_det, n_gt = ious.shape
    matched_det = np.zeros((len(thresholds), n_det), dtype=bool)
    if n_det == 0 or n_gt == 0:
        return matched_det
    limit = np.minimum(thresholds, 1 - 1e-10)[:, None]          # (T, 1)
    gt_taken = np.zeros((len(thresholds), n_gt), dtype=bool)
    hopeful = np.flatnonzero(ious.max(axis=1) >= limit.min())   # the rest match nothing
    rows = np.arange(len(thresholds))
    for d in hopeful:
        cand = np.where(~gt_taken & (ious[d][None, :] >= limit), ious[d][None, :], -1.0)
        # the last index of the maximum in each row: argmax over the reversed columns
        best = n_gt - 1 - np.argmax(cand[:, ::-1], axis=1)
        ok = cand[rows, best] >= 0
        gt_taken[rows[ok], best[ok]] = True
        matched_det[ok, d] = True
    return matched_det


def _average_precision(tp: np.ndarray, n_gt: int, interpolation: str):
    """AP and the (recall, monotone precision) curve of detections in score order."""
    if len(tp) == 0:
        return 0.0, np.zeros(0), np.zeros(0)
    tps = np.cumsum(tp, dtype=np.float64)
    fps = np.cumsum(~tp, dtype=np.float64)
    recall = tps / n_gt
    precision = tps / (fps + tps + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]     # the envelope from the right
    if interpolation == "voc":
        steps = np.diff(np.concatenate([[0.0], recall]))
        return float(np.sum(steps * precision)), recall, precision
    at = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    sampled = np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0)
    return float(sampled.mean()), recall, precision


def mean_average_precision(predictions, ground_truths, num_classes: int,
                           iou_thresholds=IOU_THRESHOLDS, max_dets: int = 100,
                           interpolation: str = "coco") -> dict:
    """AP of detections against ground truth, image by image.

    ``predictions``: one dict per image with ``boxes`` (K, 4) xyxy, ``scores`` (K,),
    ``labels`` (K,); ``ground_truths``: one dict per image with ``boxes`` and ``labels``
    (an image with no boxes is a dict of empty arrays, and still counts).
    ``interpolation``: "coco" (101 recall points) or "voc" (all points).

    Returns a dict: ``ap50``, ``ap75``, ``ap50_95`` (means over the classes that have
    ground truth; NaN when none has), ``per_class_ap50``, ``per_class_ap50_95`` (NaN for
    a class with no ground truth), ``ap`` (T, C), ``num_gt`` (C,), ``iou_thresholds``
    and ``pr_curves``: per class, (recall, precision) at the first threshold.
    """
    if interpolation not in ("coco", "voc"):
        raise ValueError(f"mean_average_precision: interpolation must be 'coco' or 'voc', "
                         f"got {interpolation!r}")
    if len(predictions) != len(ground_truths):
        raise ValueError(f"mean_average_precision: {len(predictions)} prediction entries for "
                         f"{len(ground_truths)} images")
    thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    op = "mean_average_precision"
    gts = [_per_image(op, ground_truths, ("boxes", "labels"), i) for i in range(len(ground_truths))]
    dts = [_per_image(op, predictions, ("boxes", "scores", "labels"), i)
           for i in range(len(predictions))]
    for i, (_, labels) in enumerate(gts):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{op}: image {i}: ground-truth class outside 0..{num_classes - 1}")

    scores = [[] for _ in range(num_classes)]     # per class: per image arrays, then pooled
    matches = [[] for _ in range(num_classes)]
    num_gt = np.zeros(num_classes, dtype=np.int64)
    for (gt_boxes, gt_labels), (dt_boxes, dt_scores, dt_labels) in zip(gts, dts):
        for c in np.union1d(np.unique(gt_labels), np.unique(dt_labels)).astype(np.int64):
            if not 0 <= c < num_classes:
                continue                          # a detection of an unknown class: no AP to hurt
            g = gt_boxes[gt_labels == c]
            num_gt[c] += len(g)
            mine = np.flatnonzero(dt_labels == c)
            mine = mine[np.argsort(-dt_scores[mine], kind="mergesort")][:max_dets]
            scores[c].append(dt_scores[mine].astype(np.float64))
            matches[c].append(_match_image(box_iou(dt_boxes[mine], g), thresholds))

    ap = np.full((len(thresholds), num_classes), np.nan)
    pr_curves = {}
    for c in range(num_classes):
        if num_gt[c] == 0:
            continue
        pooled = np.concatenate(scores[c]) if scores[c] else np.zeros(0)
        tp_all = np.concatenate(matches[c], axis=1) if matches[c] else np.zeros((len(thresholds), 0), bool)
        order = np.argsort(-pooled, kind="mergesort")
        for t in range(len(thresholds)):
            ap[t, c], recall, precision = _average_precision(tp_all[t, order], num_gt[c],
                                                             interpolation)
            if t == 0:
                pr_curves[c] = (recall, precision)

    def mean(values):
        values = values[~np.isnan(values)]
        return float(values.mean()) if values.size else float("nan")

    at = {round(float(t), 2): k for k, t in enumerate(thresholds)}
    return {
        "ap50": mean(ap[at[0.5]]) if 0.5 in at else float("nan"),
        "ap75": mean(ap[at[0.75]]) if 0.75 in at else float("nan"),
        "ap50_95": mean(ap.reshape(-1)),
        "per_class_ap50": ap[at[0.5]].tolist() if 0.5 in at else [float("nan")] * num_classes,
        "per_class_ap50_95": [mean(ap[:, c]) for c in range(num_classes)],
        "ap": ap,
        "num_gt": num_gt,
        "iou_thresholds": thresholds,
        "pr_curves": pr_curves,
    }
