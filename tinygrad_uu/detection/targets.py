"""YOLO targets (numpy, built in the data pipeline), and decoding predictions back to boxes.

A head of stride s on an H x W image has a (H/s) x (W/s) grid with A anchors (w_a, h_a)
per cell. Its raw output per anchor and cell is (tx, ty, tw, th, to, c_1..c_C):

    centre  = ((gx + sigmoid(tx)) * s, (gy + sigmoid(ty)) * s)   (inside the cell)
    size    = (w_a * exp(tw), h_a * exp(th))
    object  = sigmoid(to);   class probabilities = softmax(c)

A ground-truth box is given to the anchor (over all heads) whose size fits it best (the
highest IoU of the two sizes on one centre), in the cell that holds its centre. That
anchor's targets: the centre's offset in the cell (in [0, 1)), log(w / w_a), log(h / h_a),
objectness 1 and the class; every other anchor's objectness target is 0. If two boxes
fall on the same anchor of the same cell, the later one wins (rare at IoU <= 0.2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boxes import wh_iou
from .nms import batched_nms


@dataclass
class HeadTargets:
    """Targets of one head for a batch. ``objectness`` (N, A, G_h, G_w) 0/1; ``weight``
    (N, A, G_h, G_w): 0 where an anchor is not penalised for objectness, else 1; for the
    P positive anchors: ``index`` (P,) flat index into (N, A, G_h, G_w), ``xy`` (P, 2)
    centre offsets in the cell, ``wh`` (P, 2) log(size / anchor), ``classes`` (P,)."""
    objectness: np.ndarray
    weight: np.ndarray
    index: np.ndarray
    xy: np.ndarray
    wh: np.ndarray
    classes: np.ndarray


def build_targets(boxes, labels, anchors, strides, image_size, ignore_iou: float | None = None,
                  extra_match_iou: float | None = None) -> list:
    """One ``HeadTargets`` per head for a batch.

    ``boxes``/``labels``: per image, (K, 4) xyxy pixels and (K,) class ids; ``anchors``:
    per head, (A, 2) anchor sizes in pixels; ``strides``: per head; ``image_size``: (H, W).
    ``extra_match_iou``: also make positive every other anchor (any head) whose size IoU
    with the box is at least this (more positives per box). ``ignore_iou``: do not
    penalise the objectness of a non-positive anchor in the box's cell whose size IoU
    with the box is at least this (it is nearly as good a match).
    """
    h, w = image_size
    n = len(boxes)
    all_anchors = np.concatenate([np.asarray(a, np.float64).reshape(-1, 2) for a in anchors])
    head_of = np.concatenate([np.full(len(a), k) for k, a in enumerate(anchors)])
    first = np.cumsum([0] + [len(a) for a in anchors])
    grids = []
    for s in strides:
        if h % s or w % s:
            raise ValueError(f"build_targets: image size {h}x{w} is not divisible by stride {s}")
        grids.append((h // s, w // s))
    out = [HeadTargets(np.zeros((n, len(a), gh, gw), np.float32), np.ones((n, len(a), gh, gw), np.float32),
                       [], [], [], []) for a, (gh, gw) in zip(anchors, grids)]
    for i, (b, lab) in enumerate(zip(boxes, labels)):
        b = np.asarray(b, np.float64).reshape(-1, 4)
        if len(b) == 0:
            continue
        wh = b[:, 2:] - b[:, :2]
        centre = (b[:, :2] + b[:, 2:]) / 2
        fit = wh_iou(wh, all_anchors)                                  # (K, total anchors)
        chosen = np.zeros_like(fit, dtype=bool)
        chosen[np.arange(len(b)), fit.argmax(axis=1)] = True
        if extra_match_iou is not None:
            chosen |= fit >= extra_match_iou
        for k, j in zip(*np.nonzero(chosen)):
            head, a = head_of[j], j - first[head_of[j]]
            s, (gh, gw) = strides[head], grids[head]
            gx = min(int(centre[k, 0] // s), gw - 1)
            gy = min(int(centre[k, 1] // s), gh - 1)
            t = out[head]
            t.objectness[i, a, gy, gx] = 1
            t.index.append(np.ravel_multi_index((i, a, gy, gx), t.objectness.shape))
            t.xy.append(centre[k] / s - (gx, gy))
            t.wh.append(np.log(wh[k] / all_anchors[j]))
            t.classes.append(lab[k])
            if ignore_iou is not None:                                 # near-misses in this cell
                for a2 in range(len(anchors[head])):
                    if fit[k, first[head] + a2] >= ignore_iou:
                        t.weight[i, a2, gy, gx] = 0
    for t in out:
        index = np.asarray(t.index, dtype=np.int64)
        # the later of two boxes on one anchor wins: keep the last occurrence of each index
        _, last = np.unique(index[::-1], return_index=True)
        keep = np.sort(len(index) - 1 - last)
        t.index = index[keep]
        t.xy = np.asarray(t.xy, np.float32).reshape(-1, 2)[keep]
        t.wh = np.asarray(t.wh, np.float32).reshape(-1, 2)[keep]
        t.classes = np.asarray(t.classes, np.int64)[keep]
        t.weight.reshape(-1)[t.index] = 1                              # positives always count
    return out


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))                  # stable for any x


def decode(raw: np.ndarray, anchors, stride: int, num_classes: int):
    """Boxes (N, A*G_h*G_w, 4) xyxy pixels, objectness (N, M) and class probabilities
    (N, M, C) from one head's raw output (N, A*(5+C), G_h, G_w)."""
    anchors = np.asarray(anchors, np.float64).reshape(-1, 2)
    n, _, gh, gw = raw.shape
    p = raw.reshape(n, len(anchors), 5 + num_classes, gh, gw).astype(np.float64)
    gy, gx = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    cx = (gx + _sigmoid(p[:, :, 0])) * stride
    cy = (gy + _sigmoid(p[:, :, 1])) * stride
    bw = anchors[None, :, 0, None, None] * np.exp(np.clip(p[:, :, 2], -10, 10))
    bh = anchors[None, :, 1, None, None] * np.exp(np.clip(p[:, :, 3], -10, 10))
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1).reshape(n, -1, 4)
    objectness = _sigmoid(p[:, :, 4]).reshape(n, -1)
    logits = p[:, :, 5:].transpose(0, 1, 3, 4, 2).reshape(n, -1, num_classes)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return boxes, objectness, e / e.sum(axis=-1, keepdims=True)


def postprocess(raws, anchors, strides, num_classes: int, image_size, conf: float = 0.001,
                iou: float = 0.5, max_dets: int = 100) -> list:
    """Detections per image from every head's raw output: score = objectness x the best
    class's probability, kept when >= ``conf``, then per-class greedy NMS at ``iou`` and
    the ``max_dets`` best. Returns a list of dicts with ``boxes`` (K, 4) xyxy clipped to
    the image, ``scores`` (K,) and ``labels`` (K,)."""
    h, w = image_size
    decoded = [decode(r, a, s, num_classes) for r, a, s in zip(raws, anchors, strides)]
    boxes = np.concatenate([d[0] for d in decoded], axis=1)
    scores_all = np.concatenate([d[1][..., None] * d[2] for d in decoded], axis=1)
    results = []
    for i in range(len(boxes)):
        labels = scores_all[i].argmax(axis=1)
        scores = scores_all[i, np.arange(len(labels)), labels]
        keep = np.flatnonzero(scores >= conf)
        b = np.clip(boxes[i, keep], 0, [w, h, w, h])
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        keep, b = keep[ok], b[ok]
        kept = batched_nms(b, scores[keep], labels[keep], iou)[:max_dets]
        results.append({"boxes": b[kept].astype(np.float32), "scores": scores[keep][kept],
                        "labels": labels[keep][kept]})
    return results
