"""Boxes: one internal format, converters, areas and IoU, all vectorised numpy.

The internal format is **xyxy in pixels**: ``(x1, y1, x2, y2)`` with ``x1 < x2``, ``y1 < y2``;
a box covering pixel columns 3..7 (inclusive) has ``x1 = 3, x2 = 8``. There is no "+1
pixel" convention (as in COCO): width = x2 - x1, area = width * height.

Other formats, converted with ``box_convert(boxes, in_fmt, out_fmt)``:

* ``"xywh"``: top-left corner, width, height (COCO's annotation format);
* ``"cxcywh"``: centre, width, height (YOLO's label format, usually normalised).

``normalize_boxes`` / ``denormalize_boxes`` divide / multiply by the image size, for the
normalised coordinates of YOLO label files.
"""
from __future__ import annotations

import numpy as np

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def _as_boxes(op: str, boxes) -> np.ndarray:
    b = np.asarray(boxes)
    if b.dtype.kind not in "fiu":
        raise TypeError(f"{op}: boxes must be numbers, got dtype {b.dtype}")
    if b.ndim < 1 or b.shape[-1] != 4:
        raise ValueError(f"{op}: boxes must have shape (..., 4), got {b.shape}")
    return b if b.dtype.kind == "f" else b.astype(np.float64)


def box_convert(boxes, in_fmt: str, out_fmt: str) -> np.ndarray:
    """Convert boxes (..., 4) between "xyxy", "xywh" and "cxcywh" (same units in and out)."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"box_convert: format must be one of {BOX_FORMATS}, got {fmt!r}")
    b = _as_boxes("box_convert", boxes)
    if in_fmt == out_fmt:
        return b.copy()
    a, c, e, f = (b[..., i] for i in range(4))
    if in_fmt == "xywh":
        x1, y1, x2, y2 = a, c, a + e, c + f
    elif in_fmt == "cxcywh":
        x1, y1, x2, y2 = a - e / 2, c - f / 2, a + e / 2, c + f / 2
    else:
        x1, y1, x2, y2 = a, c, e, f
    if out_fmt == "xyxy":
        out = (x1, y1, x2, y2)
    elif out_fmt == "xywh":
        out = (x1, y1, x2 - x1, y2 - y1)
    else:
        out = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
    return np.stack(out, axis=-1)


def normalize_boxes(boxes, width: float, height: float) -> np.ndarray:
    """Pixel boxes (any of the formats: x values on axes 0 and 2) to fractions of the image."""
    return _as_boxes("normalize_boxes", boxes) / np.array([width, height, width, height])


def denormalize_boxes(boxes, width: float, height: float) -> np.ndarray:
    """Fractions of the image back to pixels (the inverse of ``normalize_boxes``)."""
    return _as_boxes("denormalize_boxes", boxes) * np.array([width, height, width, height])


def box_area(boxes) -> np.ndarray:
    """Areas (...,) of xyxy boxes (...,4): (x2 - x1) * (y2 - y1)."""
    b = _as_boxes("box_area", boxes)
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def box_iou(boxes1, boxes2) -> np.ndarray:
    """Pairwise IoU (N, M) of xyxy boxes (N, 4) and (M, 4): |A n B| / |A u B|.

    Two boxes that do not overlap have IoU 0; a pair whose union is empty (two empty
    boxes) also gets 0 rather than NaN.
    """
    a, b = _as_boxes("box_iou", boxes1), _as_boxes("box_iou", boxes2)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"box_iou: boxes must be (N, 4) and (M, 4), got {a.shape} and {b.shape}")
    left_top = np.maximum(a[:, None, :2], b[None, :, :2])
    right_bottom = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(right_bottom - left_top, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def wh_iou(wh1, wh2) -> np.ndarray:
    """IoU (N, M) of boxes given only by their sizes (w, h), as if they shared a centre:
    min(w)·min(h) / (w1·h1 + w2·h2 − min(w)·min(h)). The distance of anchor k-means is 1 − this."""
    a, b = np.asarray(wh1, dtype=np.float64), np.asarray(wh2, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != 2 or b.shape[1] != 2:
        raise ValueError(f"wh_iou: sizes must be (N, 2) and (M, 2), got {a.shape} and {b.shape}")
    inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
    return inter / (a[:, None, 0] * a[:, None, 1] + b[None, :, 0] * b[None, :, 1] - inter)


def check_boxes(boxes, labels, num_classes: int | None = None, where: str = "boxes",
                image_size: tuple | None = None) -> tuple:
    """Validate one image's boxes (K, 4) xyxy and integer labels (K,); return them as
    (float32 array, int64 array). Raise ValueError naming ``where`` (e.g. the image file)
    for NaN or infinite coordinates, a zero or negative width or height, a label outside
    [0, num_classes) or, with ``image_size`` (height, width), a box outside the image."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    lab = np.asarray(labels).reshape(-1)
    if len(lab) != len(b):
        raise ValueError(f"{where}: {len(b)} boxes but {len(lab)} labels")
    if len(lab) and lab.dtype.kind not in "iu":
        if lab.dtype.kind != "f" or not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)):
            raise ValueError(f"{where}: class ids must be integers, got {lab.tolist()}")
    for k, box in enumerate(b):
        if not np.all(np.isfinite(box)):
            raise ValueError(f"{where}: box {k} has a NaN or infinite coordinate: {box.tolist()}")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"{where}: box {k} {box.tolist()} (x1, y1, x2, y2) has zero or "
                             f"negative width or height")
        if image_size is not None:
            h, w = image_size
            if box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h:
                raise ValueError(f"{where}: box {k} {box.tolist()} lies outside the {w}x{h} image")
        if num_classes is not None and not 0 <= lab[k] < num_classes:
            raise ValueError(f"{where}: box {k} has class id {lab[k]}, outside the "
                             f"{num_classes} classes 0..{num_classes - 1}")
    return b.astype(np.float32), lab.astype(np.int64)
