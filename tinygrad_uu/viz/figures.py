"""Curves, weight images, the confusion matrix, image grids and regression plots."""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from . import common
from .common import _np, _figure, _Tiles, _check_titles, _images_nhwc, _masks_nhw


def plot_curves(history: Mapping, path, title=None, xlabel: str = "epoch") -> Path:
    """Training curves: ``history`` maps a name to one value per epoch.

    Names containing "loss" share the left plot; every other series (accuracy,
    Dice, ...) goes on a second plot beside it. Epochs are numbered from 1.

    >>> plot_curves({"train_loss": [0.9, 0.5], "test_accuracy": [0.8, 0.9]}, "curves.png")
    """
    fn = "plot_curves"
    if not isinstance(history, Mapping) or not history:
        raise ValueError(f"{fn}: history must be a non-empty dict of name -> list of values, "
                         f"got {history!r:.80}")
    series = {}
    for name, values in history.items():
        v = np.asarray(_np(values), dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"{fn}: history[{name!r}] must be a list of numbers, "
                             f"got shape {v.shape}")
        if len(v):
            series[str(name)] = v
    if not series:
        raise ValueError(f"{fn}: every series in history is empty, nothing to draw")
    losses = {k: v for k, v in series.items() if "loss" in k.lower()}
    others = {k: v for k, v in series.items() if "loss" not in k.lower()}
    groups = [(g, label) for g, label in ((losses, "loss"), (others, None)) if g]

    fig = _figure(5.5 * len(groups), 4)
    for ax, (group, ylabel) in zip(np.atleast_1d(fig.subplots(1, len(groups))), groups):
        for name, v in group.items():
            marker = "o" if len(v) <= 30 else None     # a single epoch is still visible
            ax.plot(np.arange(1, len(v) + 1), v, marker=marker, markersize=3, label=name)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ylabel:
            ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return common._save(fig, path)


# ----------------------------------------------------------------------------- weights

def plot_weight_images(weights, path, image_shape=(28, 28), titles=None, ncols=None,
                       max_images: int = 64) -> Path:
    """Each row of a weight matrix drawn as an image.

    For a linear MNIST classifier, ``weights`` is (10, 784) or (784, 10) (the axis of
    length 784 = 28*28 is the pixels; if both axes match, rows are taken as images,
    PyTorch's ``Linear.weight`` layout): the 10 class templates, titled 0-9.
    For an MLP, pass the first layer, e.g. (256, 784): the first ``max_images``
    filters. One diverging colour scale centred at 0 is shared by all images: red
    pixels push the unit's output up, blue pixels push it down.
    """
    fn = "plot_weight_images"
    w = _np(weights)
    image_shape = tuple(int(n) for n in image_shape)
    pixels = int(np.prod(image_shape))
    if w.ndim != 2 or pixels not in w.shape:
        raise ValueError(f"{fn}: weights must be 2-D with one axis of length "
                         f"{pixels} = {'x'.join(map(str, image_shape))} (image_shape), "
                         f"got shape {w.shape}")
    if w.shape[1] != pixels:       # (784, 10), as in x @ W: one column per class
        w = w.T
    total = len(w)
    w = w[:max_images].astype(np.float64)
    n = len(w)
    if titles is None and total == 10:
        titles = [str(d) for d in range(10)]
    if titles is not None and len(titles) == total:
        titles = list(titles)[:n]
    titles = _check_titles(fn, titles, n)
    if ncols is None:
        ncols = min(n, 5) if n <= 10 else math.ceil(math.sqrt(n))

    tiles = _Tiles(n, ncols, image_shape, tile_inches=1.5 if n <= 16 else 1.0,
                   titled=titles is not None, right_inches=1.2,
                   top_inches=0.3 if total > n else 0.0)
    finite = np.abs(w[np.isfinite(w)])               # a diverged run has NaNs: draw the rest
    limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    for i in range(n):
        im = tiles.image(i, w[i].reshape(image_shape), cmap="RdBu_r", vmin=-limit, vmax=limit,
                         interpolation="nearest")
        if titles:
            tiles.title(i, titles[i], fontsize=10)
    fig = tiles.fig
    fig.colorbar(im, ax=tiles.ax, shrink=0.8, label="weight")
    if total > n:
        fig.suptitle(f"the first {n} of {total}")
    return common._save(fig, path)


# ----------------------------------------------------------------------------- confusion

def confusion_matrix(y_true, y_pred, n_classes: int = 10) -> np.ndarray:
    """(n_classes, n_classes) int counts: ``m[t, p]`` = how many of class t were predicted p."""
    return _confusion("confusion_matrix", y_true, y_pred, n_classes)


def _confusion(fn: str, y_true, y_pred, n_classes: int) -> np.ndarray:
    t, p = _np(y_true), _np(y_pred)
    if t.ndim != 1 or p.shape != t.shape:
        hint = " (pass labels, e.g. logits.argmax(axis=1))" if p.ndim == 2 else ""
        raise ValueError(f"{fn}: y_true and y_pred must be 1-D label arrays of the same length, "
                         f"got shapes {t.shape} and {p.shape}{hint}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.dtype.kind not in "iub" or a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{fn}: {name} must hold integer labels 0..{n_classes - 1}, "
                             f"got dtype {a.dtype}, range [{a.min()}, {a.max()}]")
    t, p = t.astype(np.int64), p.astype(np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes ** 2).reshape(n_classes, n_classes)


def plot_confusion_matrix(y_true, y_pred, path, n_classes: int = 10, class_names=None) -> Path:
    """The confusion matrix with its counts written in: row = true label, column = predicted."""
    fn = "plot_confusion_matrix"
    m = _confusion(fn, y_true, y_pred, n_classes)
    names = [str(c) for c in (range(n_classes) if class_names is None else class_names)]
    if len(names) != n_classes:
        raise ValueError(f"{fn}: got {len(names)} class_names for n_classes = {n_classes}")

    size = 2.0 + 0.5 * n_classes
    fig = _figure(size + 1.0, size)
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(n_classes), names)
    ax.set_yticks(range(n_classes), names)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    total = m.sum()
    accuracy = np.trace(m) / total if total else float("nan")
    ax.set_title(f"{total} samples, accuracy {accuracy:.2%}")
    if n_classes <= 30:
        dark = m.max() / 2
        for (t, p), count in np.ndenumerate(m):
            ax.text(p, t, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > dark else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label="count")
    return common._save(fig, path)


# ----------------------------------------------------------------------------- image grids

def plot_image_grid(images, path, titles=None, ncols: int = 8) -> Path:
    """A grid of images, each with an optional title, e.g. "true 3, pred 5 (0.98)".

    ``images``: (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3, or flattened
    square images (N, H*W) such as MNIST's (N, 784).
    """
    fn = "plot_image_grid"
    a = _np(images)
    if a.ndim == 2:                          # flattened square images, e.g. (N, 784)
        side = math.isqrt(a.shape[1])
        if side * side != a.shape[1]:
            raise ValueError(f"{fn}: flattened images must be square (N, H*W), got shape "
                             f"{a.shape}; {a.shape[1]} is not a square number")
        a = a.reshape(len(a), side, side)
    a = _images_nhwc(fn, a)
    n = len(a)
    titles = _check_titles(fn, titles, n)
    tiles = _Tiles(n, max(1, min(int(ncols), n)), a.shape[1:3], tile_inches=1.6,
                   titled=titles is not None)
    for i in range(n):
        tiles.image(i, a[i])
        if titles:
            tiles.title(i, titles[i], fontsize=8)
    return common._save(tiles.fig, path)


def plot_segmentation_grid(images, masks, preds, scores, path, max_rows=None,
                           score_name: str = "Dice") -> Path:
    """The worst-to-best grid: one row per image, sorted by ``scores`` ascending (the
    worst segmentation on top), columns image | ground truth | prediction.

    ``images``: (N, 3, H, W) floats in [0, 1] (or (N, H, W, 3), or uint8);
    ``masks`` and ``preds``: (N, 1, H, W) or (N, H, W), preds may be probabilities;
    ``scores``: (N,), e.g. each image's Dice. ``max_rows`` shows that many rows
    evenly spaced in rank, so the worst and the best are always among them.
    """
    fn = "plot_segmentation_grid"
    x = _images_nhwc(fn, images)
    n, h, w = x.shape[:3]
    masks = _masks_nhw(fn, masks, "masks", (n, h, w))
    preds = _masks_nhw(fn, preds, "preds", (n, h, w))
    scores = np.asarray(_np(scores), dtype=np.float64)
    if scores.shape != (n,):
        raise ValueError(f"{fn}: scores must be one number per image, shape ({n},), "
                         f"got shape {scores.shape}")
    order = np.argsort(scores, kind="stable")                  # worst first
    if max_rows is not None and max_rows < n:
        if max_rows < 1:
            raise ValueError(f"{fn}: max_rows must be at least 1, got {max_rows}")
        order = order[np.unique(np.linspace(0, n - 1, int(max_rows)).round().astype(int))]

    if len(order) > 250:                       # matplotlib draws at most 2^16 pixels a side
        raise ValueError(f"{fn}: {len(order)} rows are too many for one figure; pass "
                         "max_rows (e.g. 20) to show a spread from worst to best")
    tiles = _Tiles(3 * len(order), 3, (h, w), tile_inches=2.0)
    for r, i in enumerate(order):
        tiles.image(3 * r, x[i])
        tiles.image(3 * r + 1, masks[i], cmap="gray", vmin=0, vmax=1)
        tiles.image(3 * r + 2, preds[i], cmap="gray", vmin=0, vmax=1)
        tiles.title(3 * r, f"image #{i}")
        tiles.title(3 * r + 1, "ground truth")
        tiles.title(3 * r + 2, f"prediction, {score_name} {scores[i]:.3f}")
    return common._save(tiles.fig, path)


def plot_overlays(images, preds, path, masks=None, threshold: float = 0.5,
                  ncols: int = 4) -> Path:
    """Each image with its predicted mask on top: a blue tint and a blue outline where
    ``preds > threshold``, and, if ``masks`` are given, the true outline dashed in white.

    Shapes as in ``plot_segmentation_grid``.
    """
    fn = "plot_overlays"
    x = _images_nhwc(fn, images)
    n, h, w = x.shape[:3]
    preds = _masks_nhw(fn, preds, "preds", (n, h, w)) > threshold
    masks = None if masks is None else _masks_nhw(fn, masks, "masks", (n, h, w)) > threshold
    tiles = _Tiles(n, max(1, min(int(ncols), n)), (h, w), tile_inches=2.5, titled=False,
                   top_inches=0.3)
    for i in range(n):
        tiles.image(i, x[i])
        tint = np.zeros((h, w, 4))
        tint[..., 2], tint[..., 3] = 1.0, 0.35 * preds[i]       # blue: absent from the stains
        tiles.image(i, tint)
        tiles.contour(i, preds[i], colors="blue", linewidths=1.2)
        if masks is not None:
            tiles.contour(i, masks[i], colors="white", linewidths=1.2, linestyles="dashed")
    legend = "blue: prediction" + ("; dashed white: ground truth" if masks is not None else "")
    tiles.fig.suptitle(legend, fontsize=9)
    return common._save(tiles.fig, path)


# ----------------------------------------------------------------------------- regression

def plot_predicted_vs_actual(y_true, y_pred, path, label: str = "horsepower") -> Path:
    """A regression's predictions against the true values; perfect ones lie on the diagonal."""
    fn = "plot_predicted_vs_actual"
    t, p = _np(y_true), _np(y_pred)
    t = t.reshape(-1) if t.ndim == 2 and t.shape[1] == 1 else t
    p = p.reshape(-1) if p.ndim == 2 and p.shape[1] == 1 else p
    if t.ndim != 1 or p.shape != t.shape or len(t) == 0:
        raise ValueError(f"{fn}: y_true and y_pred must be non-empty, 1-D (or (N, 1)) and "
                         f"of the same length, got shapes {_np(y_true).shape} and "
                         f"{_np(y_pred).shape}")
    t, p = t.astype(np.float64), p.astype(np.float64)
    error = p - t
    rmse, mae = np.sqrt(np.mean(error ** 2)), np.mean(np.abs(error))
    spread = np.sum((t - t.mean()) ** 2)
    r2 = 1 - np.sum(error ** 2) / spread if spread > 0 else float("nan")

    fig = _figure(5, 5)
    ax = fig.subplots()
    ax.scatter(t, p, s=12, alpha=0.7)
    low, high = min(t.min(), p.min()), max(t.max(), p.max())
    ax.plot([low, high], [low, high], color="gray", linestyle="--", label="prediction = actual")
    ax.set_xlabel(f"actual {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(f"RMSE {rmse:.3g}, MAE {mae:.3g}, R² {r2:.3f} (n = {len(t)})")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    return common._save(fig, path)
