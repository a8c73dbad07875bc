"""The course's figures, each saved straight to a PNG file.

Every function here takes numpy arrays (Tensors work too), draws one figure, writes
it to ``path`` atomically (a temporary file beside it, renamed when complete, so a
crash never leaves half a PNG) and returns ``path``.

Nothing is ever shown on screen. The figures are ``matplotlib.figure.Figure``
objects drawn by the Agg renderer, never registered with pyplot: importing this
module does not change your notebook's backend, and a figure is freed as soon as
its function returns. In Jupyter, look at a result with
``IPython.display.Image(filename=path)``.

    plot_curves               loss and accuracy per epoch
    plot_weight_images        a linear classifier's class templates, or an MLP's filters
    plot_confusion_matrix     counts of (true label, predicted label)
    plot_image_grid           e.g. the most confidently misclassified digits
    plot_segmentation_grid    image | ground truth | prediction, worst Dice first
    plot_overlays             predicted (and true) masks drawn over the images
    plot_predicted_vs_actual  a regression's predictions against the targets
    draw_graph                the computation graph behind a Tensor
    plot_filters              a convolution's kernels (the first layer's filters)
    plot_feature_maps         a layer's activation maps for one image (a forward hook)
    plot_grad_flow            gradient norms per layer over training (debug.GradientMonitor)
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .files import atomic_path

__all__ = ["plot_curves", "plot_weight_images", "plot_confusion_matrix", "confusion_matrix",
           "plot_image_grid", "plot_segmentation_grid", "plot_overlays",
           "plot_predicted_vs_actual", "draw_graph", "plot_filters", "plot_feature_maps",
           "plot_grad_flow"]


# ----------------------------------------------------------------------------- helpers

def _np(x) -> np.ndarray:
    """A numpy array from an array, a list or a Tensor (whose values are in ``.data``)."""
    if not isinstance(x, np.ndarray):  # careful: ndarray.data is a raw buffer, not values
        x = getattr(x, "data", x)
    return np.asarray(x)


def _figure(width: float, height: float) -> Figure:
    """A new figure (size in inches, 100 pixels per inch) drawn by Agg, outside pyplot."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> Path:
    """Write ``fig`` to ``path`` as a PNG, all or nothing, and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


class _Tiles:
    """A grid of equal tiles drawn on ONE axes, each tile placed by its ``extent``.

    Why not one axes per tile: matplotlib takes seconds to lay out a figure of a few
    hundred axes, while a few hundred images on one axes draw in a fraction of that.
    Tile ``i`` sits in row ``i // ncols``, column ``i % ncols``, with room above it
    for a title.
    """

    def __init__(self, n: int, ncols: int, tile_shape: tuple, tile_inches: float,
                 titled: bool = True, right_inches: float = 0.0, top_inches: float = 0.0):
        self.h, self.w = tile_shape
        self.ncols, nrows = ncols, math.ceil(n / ncols)
        self.gap_x = 0.08 * self.w
        self.gap_y = (0.22 if titled else 0.08) * self.h       # the title goes in here
        width = ncols * self.w + (ncols - 1) * self.gap_x
        height = nrows * (self.h + self.gap_y)
        inch = tile_inches / self.w                            # inches per tile pixel
        self.fig = _figure(width * inch + right_inches + 0.1, height * inch + top_inches + 0.1)
        self.ax = self.fig.subplots()
        self.ax.set_axis_off()
        self.ax.set_xlim(0, width)
        self.ax.set_ylim(height, 0)                            # row 0 at the top

    def corner(self, i: int) -> tuple:
        """(x, y) of tile ``i``'s top-left corner, in the axes' data coordinates."""
        r, c = divmod(i, self.ncols)
        return c * (self.w + self.gap_x), r * (self.h + self.gap_y) + self.gap_y

    def image(self, i: int, image: np.ndarray, **kwargs):
        """Draw a (H, W) array or an (H, W, C) image (C = 1: grey, C = 3: RGB) in tile ``i``."""
        x, y = self.corner(i)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
            kwargs.setdefault("cmap", "gray")
        return self.ax.imshow(image, extent=(x, x + self.w, y + self.h, y), **kwargs)

    def contour(self, i: int, mask: np.ndarray, **kwargs) -> None:
        """Outline the region where the boolean ``mask`` is true, if it has an edge."""
        if mask.any() and not mask.all():
            x, y = self.corner(i)
            self.ax.contour(x + 0.5 + np.arange(self.w), y + 0.5 + np.arange(self.h),
                            mask.astype(np.float64), levels=[0.5], **kwargs)

    def title(self, i: int, text: str, fontsize: float = 9) -> None:
        x, y = self.corner(i)
        self.ax.text(x + self.w / 2, y - 0.03 * self.h, text, ha="center", va="bottom",
                     fontsize=fontsize)


def _check_titles(fn: str, titles, n: int) -> list | None:
    if titles is None:
        return None
    titles = [str(t) for t in titles]
    if len(titles) != n:
        raise ValueError(f"{fn}: got {len(titles)} titles for {n} images")
    return titles


def _images_nhwc(fn: str, images, name: str = "images") -> np.ndarray:
    """Images as (N, H, W, C) with C = 1 or 3, from (N, H, W), (N, C, H, W) or (N, H, W, C).

    uint8 images become floats in [0, 1]; RGB floats are clipped to [0, 1] (what
    matplotlib can show); single-channel images keep their range (shown in grey,
    scaled from their min to their max).
    """
    a = _np(images)
    if a.ndim == 3:
        a = a[..., None]
    elif a.ndim == 4 and a.shape[1] in (1, 3):          # NCHW, the engine's layout
        a = a.transpose(0, 2, 3, 1)
    elif not (a.ndim == 4 and a.shape[3] in (1, 3)):
        raise ValueError(f"{fn}: {name} must be (N, H, W), (N, C, H, W) or (N, H, W, C) "
                         f"with C = 1 or 3, got shape {a.shape}")
    if len(a) == 0:
        raise ValueError(f"{fn}: {name} is empty (shape {a.shape}), nothing to draw")
    if a.dtype == np.uint8:
        a = a / 255.0
    a = a.astype(np.float64)
    if a.shape[3] == 3:
        a = np.clip(a, 0.0, 1.0)
    return a


def _masks_nhw(fn: str, masks, name: str, shape: tuple) -> np.ndarray:
    """Masks (N, 1, H, W) or (N, H, W) as (N, H, W) floats, checked against ``shape`` = (N, H, W)."""
    m = _np(masks)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.shape != shape:
        raise ValueError(f"{fn}: {name} must be (N, H, W) or (N, 1, H, W) matching the "
                         f"images' (N, H, W) = {shape}, got shape {_np(masks).shape}")
    return m.astype(np.float64)


# ----------------------------------------------------------------------------- curves

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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(tiles.fig, path)


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
    return _save(tiles.fig, path)


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
    return _save(tiles.fig, path)


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
    return _save(fig, path)


# ----------------------------------------------------------------------------- graph

def draw_graph(tensor, path, max_nodes: int = 400) -> Path:
    """Draw the computation graph that produced ``tensor``, inputs on the left.

    Round boxes are tensors, labelled with their shape: green for leaves that
    require grad (the parameters backward will fill), grey for constants, yellow
    for ``tensor`` itself. Square blue boxes are the ops (``Function.op_name``).

    Draw BEFORE calling ``backward()``: backward frees the graph as it goes
    (``Function.release`` drops each op's ``parents``), unless you call
    ``backward(retain_graph=True)``.

    >>> a, b = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0, 4.0], requires_grad=True)
    >>> draw_graph((a * b + a).tanh().sum(), "graph.png")
    """
    fn = "draw_graph"
    if not hasattr(tensor, "_ctx") or not hasattr(tensor, "shape"):
        raise TypeError(f"{fn}: needs a Tensor, got {type(tensor).__name__}")

    # 1. Every tensor the root depends on, inputs before outputs: an iterative
    #    depth-first search (as in autograd.topological_order), keyed by id()
    #    because Tensor's == compares values elementwise.
    order, seen, stack = [], set(), [(tensor, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        ctx = node._ctx
        if ctx is not None:
            if getattr(ctx, "released", False):
                raise RuntimeError(f"{fn}: the graph through {ctx.op_name} was freed by "
                                   "backward(); draw the graph before calling backward() "
                                   "(or call backward(retain_graph=True))")
            stack.extend((p, False) for p in reversed(ctx.parents) if id(p) not in seen)
        if 2 * len(seen) > max_nodes:
            raise ValueError(f"{fn}: the graph has more than {max_nodes} nodes, too many to "
                             "draw legibly; draw a smaller part of it (or raise max_nodes)")

    # 2. Nodes and edges. An op sits one column right of its latest input and its
    #    output one column right of the op; a leaf sits just left of its first use.
    nodes = {}          # key -> (label, kind); kinds: leaf, const, op, tensor, root
    inputs = {}         # key -> keys of the nodes with an edge into it
    column = {}
    for t in order:
        ctx = t._ctx
        if ctx is None:
            continue
        op, out = ("op", id(ctx)), ("t", id(t))
        parents = [("t", id(p)) for p in ctx.parents]
        for p, key in zip(ctx.parents, parents):
            if p._ctx is None:
                nodes[key] = (_shape_label(p), "leaf" if p.requires_grad else "const")
        column[op] = 1 + max((column.get(k, 0) for k in parents), default=0)
        column[out] = column[op] + 1
        nodes[op], nodes[out] = (ctx.op_name, "op"), (_shape_label(t), "tensor")
        inputs[op], inputs[out] = parents, [op]
    root = ("t", id(tensor))
    nodes[root] = (_shape_label(tensor), "root")
    column.setdefault(root, 0)
    for key in nodes:
        if key not in column:          # a leaf: one column before its earliest consumer
            column[key] = min(column[op] for op, ins in inputs.items() if key in ins) - 1

    # 3. Rows within each column, ordered by the mean row of their inputs (fewer crossings).
    by_column: dict[int, list] = {}
    for key in nodes:                  # dicts keep insertion order: discovery order
        by_column.setdefault(column[key], []).append(key)
    row = {}
    for c in sorted(by_column):
        keys = by_column[c]
        keys.sort(key=lambda k: np.mean([row[i] for i in inputs.get(k, []) if i in row] or [0]))
        for r, k in enumerate(keys):
            row[k] = r - (len(keys) - 1) / 2

    # 4. Draw: boxes first, then arrows between their edges.
    columns, tallest = len(by_column), max(len(v) for v in by_column.values())
    fig = _figure(min(1.0 + 1.3 * columns, 60), min(1.0 + 0.7 * tallest, 60))
    ax = fig.subplots()
    ax.set_axis_off()
    first = min(by_column)
    ax.set_xlim(-0.6, columns - 0.4)
    ax.set_ylim(tallest / 2, -tallest / 2)
    style = {"op": ("square,pad=0.4", "#cfe2f3"), "leaf": ("round,pad=0.4", "#d9ead3"),
             "const": ("round,pad=0.4", "#eeeeee"), "tensor": ("round,pad=0.4", "white"),
             "root": ("round,pad=0.4", "#fff2cc")}
    boxes = {}
    for key, (label, kind) in nodes.items():
        shape, colour = style[kind]
        boxes[key] = ax.text(column[key] - first, row[key], label, ha="center", va="center",
                             fontsize=8, zorder=3,
                             bbox=dict(boxstyle=shape, facecolor=colour, edgecolor="gray"))
    for key, ins in inputs.items():
        for i in ins:
            ax.annotate("", xy=(0, 0.5), xycoords=boxes[key], xytext=(1, 0.5),
                        textcoords=boxes[i], zorder=2,
                        arrowprops=dict(arrowstyle="-|>", color="gray", shrinkA=4, shrinkB=4))
    return _save(fig, path)


def _shape_label(t) -> str:
    shape = tuple(t.shape)
    return "scalar" if shape == () else str(shape)


# ----------------------------------------------------------------------------- inside a network

def plot_filters(conv_layer, path, ncols: int = 8, max_filters: int = 64,
                 max_channels: int = 8) -> Path:
    """A convolution's kernels, one tile each: the first layer's filters.

    ``conv_layer`` is a Conv2d (its ``weight``, shape (out, in, kh, kw)) or such an
    array. Kernels over 3 input channels are drawn in colour (0 = grey); others in
    blue (negative) to red (positive) on one scale for all, one row per filter and
    one column per input channel (the first ``max_channels``).
    """
    fn = "plot_filters"
    w = _np(getattr(conv_layer, "weight", conv_layer)).astype(np.float64)
    if w.ndim != 4:
        raise ValueError(f"{fn}: needs a conv layer or weights of shape (out, in, kh, kw), "
                         f"got shape {w.shape}")
    w = w[:max_filters]
    scale = float(np.abs(w).max()) or 1.0
    if w.shape[1] == 3:
        tiles = list(np.clip(w.transpose(0, 2, 3, 1) / (2 * scale) + 0.5, 0, 1))
        titles, cols = [f"filter {i}" for i in range(len(w))], ncols
    else:
        c = min(w.shape[1], max_channels)
        tiles = [w[o, i] for o in range(len(w)) for i in range(c)]
        titles = [f"{o}" if c == 1 else f"{o}, in {i}" for o in range(len(w)) for i in range(c)]
        cols = ncols if c == 1 else c
    grid = _Tiles(len(tiles), min(cols, len(tiles)), w.shape[2:], 0.6, right_inches=0.8,
                  top_inches=0.3)
    for i, (tile, title) in enumerate(zip(tiles, titles)):
        shown = grid.image(i, tile, cmap="RdBu_r", vmin=-scale, vmax=scale,
                           interpolation="nearest")
        grid.title(i, title, fontsize=6)
    if w.shape[1] != 3:
        grid.fig.colorbar(shown, ax=grid.ax, shrink=0.6, label="weight")
    grid.fig.suptitle(f"{len(w)} filters of shape {w.shape[1:]}", fontsize=9)
    return _save(grid.fig, path)


def plot_feature_maps(model, layer, image, path, max_maps: int = 32, ncols: int = 8) -> Path:
    """What ``layer`` of ``model`` outputs for one image: one tile per channel.

    ``layer`` is a Module inside ``model`` or its name (``"features.0"``, as in
    ``model.named_modules()``); ``image`` is (C, H, W) or (H, W). The activations
    are caught by a forward hook while the model runs once, in eval mode and
    without a graph (both restored after). Each map has its own colour scale.
    """
    from .autograd import no_grad
    from .tensor import Tensor

    fn = "plot_feature_maps"
    names = {id(m): n for n, m in model.named_modules()}
    if isinstance(layer, str):
        found = dict(model.named_modules()).get(layer)
        if found is None:
            raise ValueError(f"{fn}: the model has no layer named {layer!r}; its layers: "
                             f"{[n for n in dict(model.named_modules()) if n][:20]}")
        layer = found
    elif id(layer) not in names:
        raise ValueError(f"{fn}: {type(layer).__name__} is not a layer of this model")
    x = _np(image).astype(np.float32)
    x = x[None, None] if x.ndim == 2 else x[None] if x.ndim == 3 else x
    if x.ndim != 4 or len(x) != 1:
        raise ValueError(f"{fn}: image must be (C, H, W) or (H, W), got shape {_np(image).shape}")
    caught = []
    handle = layer.register_forward_hook(lambda module, args, out: caught.append(_np(out)))
    was_training = model.training
    try:
        model.eval()
        with no_grad():
            model(Tensor(x))
    finally:
        handle.remove()
        model.train(was_training)
    if not caught:
        raise ValueError(f"{fn}: layer {names[id(layer)]!r} was not called by the model's forward")
    maps = caught[0]
    if maps.ndim != 4:
        raise ValueError(f"{fn}: layer {names[id(layer)]!r} gives shape {maps.shape}; feature maps "
                         "need an (N, C, H, W) output (pick a conv, norm, activation or pool)")
    maps = maps[0, :max_maps].astype(np.float64)
    grid = _Tiles(len(maps) + 1, min(ncols, len(maps) + 1), maps.shape[1:], 1.0, top_inches=0.3)
    picture = _images_nhwc(fn, x)[0]
    grid.image(0, picture if picture.shape[:2] == maps.shape[1:] else
               _resize_nearest(picture, maps.shape[1:]), interpolation="nearest")
    grid.title(0, "input")
    for i, m in enumerate(maps):
        grid.image(i + 1, m, cmap="viridis", interpolation="nearest")
        grid.title(i + 1, f"channel {i} [{m.min():.2g}, {m.max():.2g}]", fontsize=6)
    grid.fig.suptitle(f"{names[id(layer)] or 'model'} ({type(layer).__name__}): output "
                      f"{caught[0].shape}", fontsize=9)
    return _save(grid.fig, path)


def _resize_nearest(image: np.ndarray, shape: tuple) -> np.ndarray:
    rows = np.arange(shape[0]) * image.shape[0] // shape[0]
    cols = np.arange(shape[1]) * image.shape[1] // shape[1]
    return image[rows][:, cols]


def plot_grad_flow(monitor, path) -> Path:
    """The gradients a ``debug.GradientMonitor`` recorded, per parameter.

    Left: mean |g| of each parameter over training (log scale), coloured from the
    input side (dark) to the output side (yellow): vanishing gradients show as dark
    lines far below the yellow ones, exploding ones as lines that climb. Right: the
    latest mean and max |g| per parameter. The monitor's warnings are in the title.
    """
    fn = "plot_grad_flow"
    if not getattr(monitor, "steps", None):
        raise ValueError(f"{fn}: the monitor has recorded nothing yet (call monitor.step() "
                         "after each backward())")
    steps, names = np.asarray(monitor.steps), list(monitor.names)
    mean, peak = monitor.mean_abs, monitor.max_abs
    positive = lambda a: np.where(np.isfinite(a) & (a > 0), a, np.nan)  # noqa: E731 (log axes)
    mean, peak = positive(mean), positive(peak)
    from matplotlib import colormaps
    colours = colormaps["viridis"](np.linspace(0, 0.9, len(names)))
    fig = _figure(11, 4.5)
    left, right = fig.subplots(1, 2, width_ratios=[1.2, 1])
    for i, name in enumerate(names):
        left.plot(steps, mean[:, i], color=colours[i], marker="o" if len(steps) <= 30 else None,
                  markersize=2, label=name)
    left.set(xlabel="step", ylabel="mean |gradient|", yscale="log", title="over training")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.grid(True, alpha=0.3)
    if len(names) <= 12:
        left.legend(fontsize=7)
    else:
        left.text(0.01, 0.01, f"dark: {names[0]} (input side) ... yellow: {names[-1]}",
                  transform=left.transAxes, fontsize=7)
    x = np.arange(len(names))
    right.bar(x, peak[-1], color="#9fc5e8", label="max |g|")
    right.bar(x, mean[-1], color="#1f4e79", width=0.5, label="mean |g|")
    right.set(yscale="log", title=f"at step {steps[-1]}")
    right.set_xticks(x, names, rotation=90, fontsize=max(4, 8 - len(names) // 15))
    right.grid(True, axis="y", alpha=0.3)
    right.legend(fontsize=7)
    found = monitor.warnings() if hasattr(monitor, "warnings") else []
    kinds = sorted({w.split(":")[0] for w in found})
    fig.suptitle("gradient flow" + (f": WARNING {', '.join(kinds)}" if kinds else ": no warnings"),
                 color="#b00000" if kinds else "black")
    return _save(fig, path)
