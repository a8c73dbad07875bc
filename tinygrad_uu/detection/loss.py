"""The YOLO loss, composed from existing differentiable Tensor ops (no new backward).

For one head with raw output p (N, A*(5+C), G_h, G_w), reshaped to one row of 5 + C
numbers per anchor and cell, and the targets of ``build_targets``:

    objectness = sum over all anchors of  w * BCEWithLogits(to, obj)     (w = 0: ignored)
    box        = sum over positives of    (sigmoid(tx) - x*)^2 + (sigmoid(ty) - y*)^2
                                        + (tw - log(w / w_a))^2 + (th - log(h / h_a))^2
    classes    = sum over positives of    cross_entropy(c, class)

each divided by the number of images N, summed over the heads, and weighted:
loss = box_weight * box + obj_weight * objectness_of_positives
       + noobj_weight * objectness_of_negatives + cls_weight * classes.
Their gradients are those of the ops they are made of (sigmoid, BCE with logits,
cross-entropy, getitem, products and sums), each checked by the engine's gradcheck
tests; ``tests/test_detection_loss.py`` checks each term of this composition again.
"""
from __future__ import annotations

import numpy as np

from ..nn import functional as F
from ..tensor import Tensor

DEFAULT_WEIGHTS = {"box": 5.0, "obj": 1.0, "noobj": 1.0, "cls": 1.0}


def head_rows(raw: Tensor, num_anchors: int, num_classes: int) -> Tensor:
    """(N, A*(5+C), G_h, G_w) -> (N*A*G_h*G_w, 5+C): one row per anchor and cell, in the
    order of the flat indices of ``HeadTargets.index``."""
    n, channels, gh, gw = raw.shape
    if channels != num_anchors * (5 + num_classes):
        raise ValueError(f"yolo_loss: a head with {num_anchors} anchors and {num_classes} "
                         f"classes needs {num_anchors * (5 + num_classes)} channels, got "
                         f"output of shape {raw.shape}")
    return (raw.reshape(n, num_anchors, 5 + num_classes, gh, gw)
            .permute(0, 1, 3, 4, 2).reshape(n * num_anchors * gh * gw, 5 + num_classes))


def yolo_loss_terms(raws, targets, num_classes: int) -> dict:
    """The unweighted terms (Tensors, each already divided by N): ``box``, ``obj``
    (objectness of positives), ``noobj`` (objectness of the rest) and ``cls``."""
    if len(raws) != len(targets):
        raise ValueError(f"yolo_loss: {len(raws)} head outputs but targets for {len(targets)} heads")
    n = raws[0].shape[0]
    terms = {}
    for raw, t in zip(raws, targets):
        rows = head_rows(raw, t.objectness.shape[1], num_classes)
        if raw.shape[2:] != t.objectness.shape[2:] or raw.shape[0] != t.objectness.shape[0]:
            raise ValueError(f"yolo_loss: output {raw.shape} does not match targets "
                             f"{t.objectness.shape}")
        obj = t.objectness.reshape(-1)
        weight = t.weight.reshape(-1)
        bce = F.binary_cross_entropy_with_logits(rows[:, 4], obj.astype(rows.dtype), reduction="none")
        pos, neg = (obj * weight).astype(rows.dtype), ((1 - obj) * weight).astype(rows.dtype)
        head = {"obj": (bce * pos).sum(), "noobj": (bce * neg).sum()}
        if len(t.index):
            picked = rows[t.index]                                      # (P, 5 + C)
            xy_err = picked[:, 0:2].sigmoid() - t.xy.astype(rows.dtype)
            wh_err = picked[:, 2:4] - t.wh.astype(rows.dtype)
            head["box"] = (xy_err * xy_err).sum() + (wh_err * wh_err).sum()
            head["cls"] = F.cross_entropy(picked[:, 5:], t.classes, reduction="sum")
        for key, value in head.items():
            terms[key] = terms[key] + value if key in terms else value
    zero = (raws[0].reshape(-1)[0:1] * 0).sum()                   # a 0 that keeps the graph
    return {key: terms.get(key, zero) * (1.0 / n) for key in ("box", "obj", "noobj", "cls")}


def yolo_loss(raws, targets, num_classes: int, weights: dict | None = None):
    """(total loss Tensor, {term: float}) for a batch: see the module docstring."""
    w = dict(DEFAULT_WEIGHTS, **(weights or {}))
    unknown = set(w) - set(DEFAULT_WEIGHTS)
    if unknown:
        raise ValueError(f"yolo_loss: unknown weights {sorted(unknown)}; the terms are "
                         f"{sorted(DEFAULT_WEIGHTS)}")
    terms = yolo_loss_terms(raws, targets, num_classes)
    total = sum((terms[k] * w[k] for k in ("obj", "noobj", "cls")), terms["box"] * w["box"])
    return total, {k: float(v.item()) for k, v in terms.items()}


def expected_initial_terms(targets, prior: float, num_classes: int) -> dict:
    """The loss terms of a head whose every output is its bias alone (weights at 0): the
    objectness logit log(prior / (1 - prior)), all other outputs 0. Then each positive
    costs -log(prior), each counted negative -log(1 - prior), each class log(C), and
    the box term (0.5 - x*)^2 + (0.5 - y*)^2 + (log(w / w_a))^2 + (log(h / h_a))^2."""
    n = targets[0].objectness.shape[0]
    pos = sum(float((t.objectness * t.weight).sum()) for t in targets)
    neg = sum(float(((1 - t.objectness) * t.weight).sum()) for t in targets)
    box = sum(float(((0.5 - t.xy.astype(np.float64)) ** 2).sum() + (t.wh.astype(np.float64) ** 2).sum())
              for t in targets)
    count = sum(len(t.index) for t in targets)
    return {"obj": -np.log(prior) * pos / n, "noobj": -np.log1p(-prior) * neg / n,
            "box": box / n, "cls": np.log(num_classes) * count / n}
