"""Inside a network: filters, feature maps and the flow of gradients."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from . import common
from .common import _np, _figure, _Tiles, _images_nhwc


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
    return common._save(grid.fig, path)


def plot_feature_maps(model, layer, image, path, max_maps: int = 32, ncols: int = 8) -> Path:
    """What ``layer`` of ``model`` outputs for one image: one tile per channel.

    ``layer`` is a Module inside ``model`` or its name (``"features.0"``, as in
    ``model.named_modules()``); ``image`` is (C, H, W) or (H, W). The activations
    are caught by a forward hook while the model runs once, in eval mode and
    without a graph (both restored after). Each map has its own colour scale.
    """
    from ..autograd import no_grad
    from ..tensor import Tensor

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
    return common._save(grid.fig, path)


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
    return common._save(fig, path)
