"""What every figure shares: numpy from Tensors, a figure outside pyplot, an atomic save,
a grid of tiles on one axes, and the checks of titles, images and masks."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..files import atomic_path

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


def _save(fig: Figure, path, **savefig_options) -> Path:
    """Write ``fig`` to ``path`` as a PNG, all or nothing, and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig_options)
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
