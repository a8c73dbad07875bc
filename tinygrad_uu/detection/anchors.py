"""Anchor boxes by k-means on the training boxes' sizes (w, h), with distance 1 - IoU.

Euclidean k-means on (w, h) lets big boxes dominate (an error of 5 px matters little for
a 100-px box and a lot for a 10-px one); 1 - IoU of two boxes placed on one centre is
scale-free (YOLOv2, Redmon & Farhadi 2017). Each step assigns every box to the anchor
of highest IoU and moves each anchor to the median size of its boxes (the median is
robust to the few huge or tiny boxes); k-means++-style seeding with the same distance.
"""
from __future__ import annotations

import numpy as np

from .boxes import wh_iou


def kmeans_anchors(wh, k: int, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """``k`` anchor sizes (k, 2) float64 for box sizes ``wh`` (N, 2), sorted by area."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2) if np.size(wh) else np.zeros((0, 2))
    if k < 1:
        raise ValueError(f"kmeans_anchors: k must be >= 1, got {k}")
    if len(wh) < k:
        raise ValueError(f"kmeans_anchors: {len(wh)} boxes cannot make {k} anchors")
    if not np.all(np.isfinite(wh)) or (wh <= 0).any():
        raise ValueError("kmeans_anchors: every box needs a finite, positive width and height")
    rng = np.random.default_rng(seed)
    centres = wh[[rng.integers(len(wh))]]
    while len(centres) < k:                      # k-means++ seeding with d = 1 - IoU
        d = (1 - wh_iou(wh, centres)).min(axis=1)
        p = d ** 2 / (d ** 2).sum() if (d > 0).any() else None
        centres = np.concatenate([centres, wh[[rng.choice(len(wh), p=p)]]])
    assign = None
    for _ in range(iterations):
        new = np.argmax(wh_iou(wh, centres), axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        centres = np.array([np.median(wh[assign == j], axis=0) if (assign == j).any()
                            else centres[j] for j in range(k)])
    return centres[np.argsort(centres.prod(axis=1), kind="stable")]


def anchor_fitness(wh, anchors) -> float:
    """Mean over the boxes of the best IoU any anchor reaches (1 = anchors fit every box)."""
    return float(wh_iou(np.asarray(wh).reshape(-1, 2), anchors).max(axis=1).mean())
