"""Detection figures: predictions beside ground truth, precision-recall curves per
class, and k-means anchors over the training boxes' sizes. Each returns the PNG's path
(written atomically, like ``viz``)."""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..viz import common


def _save(fig: Figure, path):
    FigureCanvasAgg(fig)  # drawn by Agg, outside pyplot, as every viz figure
    return common._save(fig, path, dpi=100, bbox_inches="tight")


def _show(ax, image):
    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_boxes(ax, boxes, labels, class_names, scores=None, color="lime"):
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4)):
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                               edgecolor=color, linewidth=1))
        text = class_names[int(labels[k])] if len(class_names) > 1 else ""
        if scores is not None:
            text = f"{text} {scores[k]:.2f}".strip()
        if text:
            ax.text(x1, y1 - 1, text, color=color, fontsize=6, va="bottom",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "linewidth": 0})


def plot_predictions(images, predictions, ground_truths, class_names, path, conf: float = 0.25,
                     ncols: int = 4):
    """Each image twice, side by side: predicted boxes with score >= ``conf`` (class and
    score written on them), and the ground truth."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    rows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(4.4 * ncols, 2.3 * rows))
    axes = fig.subplots(rows, 2 * ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, ncols)
        pred, truth = predictions[i], ground_truths[i]
        shown = np.asarray(pred["scores"]) >= conf
        for ax, title in ((axes[r, 2 * c], "predicted"), (axes[r, 2 * c + 1], "ground truth")):
            ax.axis("on")
            _show(ax, images[i])
            ax.set_title(title, fontsize=7)
        _draw_boxes(axes[r, 2 * c], np.asarray(pred["boxes"])[shown], np.asarray(pred["labels"])[shown],
                    class_names, np.asarray(pred["scores"])[shown], color="yellow")
        _draw_boxes(axes[r, 2 * c + 1], truth["boxes"], truth["labels"], class_names, color="lime")
    fig.suptitle(f"predictions (score >= {conf:g}) beside the ground truth")
    return _save(fig, path)


def plot_pr_curves(pr_curves: dict, per_class_ap50, class_names, path):
    """Precision against recall at IoU 0.5, one panel per class (AP50 in its title)."""
    n = len(class_names)
    ncols = min(5, n)
    rows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(2.6 * ncols, 2.4 * rows))
    axes = fig.subplots(rows, ncols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for c, ax in enumerate(axes.flat[:n]):
        if c in pr_curves and len(pr_curves[c][0]):
            recall, precision = pr_curves[c]
            ax.plot(np.concatenate([[0], recall]), np.concatenate([[precision[0]], precision]),
                    color="C0")
        ap = per_class_ap50[c]
        ax.set_title(f"{class_names[c]}: AP50 {ap:.3f}" if ap == ap else f"{class_names[c]}: no boxes",
                     fontsize=8)
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("recall", fontsize=7)
        ax.set_ylabel("precision", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("precision-recall at IoU 0.5, per class")
    fig.tight_layout()
    return _save(fig, path)


def plot_anchors(box_sizes, anchors, path, strides=None):
    """The training boxes' (w, h) as dots and the k-means anchors as crosses (labelled
    with the stride of the head that uses each, when given)."""
    wh = np.asarray(box_sizes).reshape(-1, 2)
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    shown = wh if len(wh) <= 20000 else wh[np.random.default_rng(0).choice(len(wh), 20000, replace=False)]
    ax.scatter(shown[:, 0], shown[:, 1], s=2, alpha=0.15, color="C0", label="training boxes")
    for h, a in enumerate(anchors):
        a = np.asarray(a).reshape(-1, 2)
        label = f"anchors, stride {strides[h]}" if strides is not None else "anchors"
        ax.scatter(a[:, 0], a[:, 1], marker="x", s=80, color=f"C{h + 1}", label=label)
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("k-means anchors (distance 1 - IoU) over the boxes' sizes")
    ax.legend(fontsize=7)
    return _save(fig, path)
