"""Greedy non-maximum suppression, vectorised: one pass per *kept* box, each comparing it
with every remaining box at once (never a Python loop over pairs).

Greedy NMS: sort the boxes by score; keep the best; drop every remaining box whose IoU
with it exceeds ``iou_threshold``; repeat with what is left.
"""
from __future__ import annotations

import numpy as np

from .boxes import _as_boxes, box_area


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes (N, 4) xyxy kept by greedy NMS, best score first.

    A box is suppressed when its IoU with a kept, higher-scoring box is > ``iou_threshold``.
    Equal scores keep their input order (a stable sort).
    """
    b = _as_boxes("nms", boxes).reshape(-1, 4)
    s = np.asarray(scores).reshape(-1)
    if len(s) != len(b):
        raise ValueError(f"nms: {len(b)} boxes but {len(s)} scores")
    order = np.argsort(-s, kind="stable")
    areas = box_area(b)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        wh = np.clip(np.minimum(b[best, 2:], b[rest, 2:]) - np.maximum(b[best, :2], b[rest, :2]),
                     0, None)
        inter = wh[:, 0] * wh[:, 1]
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def batched_nms(boxes, scores, classes, iou_threshold: float) -> np.ndarray:
    """NMS within each class separately (boxes of different classes never suppress each
    other). Done as one NMS over boxes shifted by class * (a span larger than every box),
    so that boxes of different classes cannot overlap. Indices, best score first."""
    b = _as_boxes("batched_nms", boxes).reshape(-1, 4)
    c = np.asarray(classes).reshape(-1)
    if len(c) != len(b):
        raise ValueError(f"batched_nms: {len(b)} boxes but {len(c)} classes")
    if len(b) == 0:
        return np.zeros(0, dtype=np.int64)
    span = float(b.max() - min(b.min(), 0)) + 1.0
    shifted = b + (c.astype(np.float64) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
