"""Object detection: boxes, NMS, anchors, YOLO targets and loss, and mAP.

- ``boxes``: the internal xyxy pixel format, ``box_convert`` to/from xywh and cxcywh,
  ``box_iou``, ``wh_iou``, ``check_boxes``
- ``nms``: greedy ``nms`` and per-class ``batched_nms``, vectorised
- ``anchors``: ``kmeans_anchors`` on box sizes with distance 1 - IoU
- ``targets``: ``build_targets`` (numpy, in the data pipeline) and ``decode`` + ``postprocess``
- ``loss``: ``yolo_loss`` (objectness BCE, box offsets, class cross-entropy)
- ``map``: ``mean_average_precision`` with pycocotools' rules (or VOC all-point)
"""
from .anchors import anchor_fitness, kmeans_anchors
from .boxes import (BOX_FORMATS, box_area, box_convert, box_iou, check_boxes, denormalize_boxes,
                    normalize_boxes, wh_iou)
from .map import IOU_THRESHOLDS, RECALL_THRESHOLDS, mean_average_precision
from .nms import batched_nms, nms

__all__ = ["BOX_FORMATS", "box_convert", "box_area", "box_iou", "wh_iou", "check_boxes",
           "normalize_boxes", "denormalize_boxes", "nms", "batched_nms", "kmeans_anchors",
           "anchor_fitness", "mean_average_precision", "IOU_THRESHOLDS", "RECALL_THRESHOLDS"]
