"""Data augmentation on numpy batches: vectorised, reproducible from a Generator.

Digits, batches ``(N, H, W)`` or ``(N, C, H, W)``: ``random_shift``, ``random_rotation``.
Segmentation, ``images (N, C, H, W)`` with ``masks (N, H, W)`` or ``(N, 1, H, W)``:
``random_flip``, ``random_rot90``, ``random_crop`` move image and mask together,
so every mask pixel still lies on its image pixel.

Every function takes ``rng``: a ``numpy.random.Generator``, a seed, or None (fresh
randomness). Each example in a batch gets its own random draw. ``DigitAugment``
and ``SegmentationAugment`` bundle them for ``DataLoader(transform=...)``.
"""
from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------- helpers


def _as_nchw(images, name: str):
    """View a batch as (N, C, H, W); also return how to undo it."""
    images = np.asarray(images)
    if images.ndim == 3:
        return images[:, None], lambda out: out[:, 0]
    if images.ndim == 4:
        return images, lambda out: out
    raise ValueError(f"{name}: expected a batch of shape (N, H, W) or (N, C, H, W), "
                     f"got {images.shape}")


def _check_pair(images, masks, name: str):
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 4 or masks.ndim not in (3, 4):
        raise ValueError(f"{name}: expected images (N, C, H, W) and masks (N, H, W) or "
                         f"(N, 1, H, W), got {images.shape} and {masks.shape}")
    if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"{name}: images {images.shape} and masks {masks.shape} must have "
                         f"the same N, H and W")
    return images, masks


def _take_windows(x, rows, cols):
    """``out[n, ..., i, j] = x[n, ..., rows[n, i], cols[n, j]]``: one window per example."""
    n = x.shape[0]
    flat = x.reshape(n, -1, *x.shape[-2:])                  # (N, channels, H, W)
    out = flat[np.arange(n)[:, None, None, None], np.arange(flat.shape[1])[None, :, None, None],
               rows[:, None, :, None], cols[:, None, None, :]]
    return out.reshape(*x.shape[:-2], rows.shape[1], cols.shape[1])


def _per_example(flags, x):
    """Reshape a (N,) array so that it broadcasts against ``x``'s first axis."""
    return flags.reshape(-1, *[1] * (x.ndim - 1))


# ----------------------------------------------------------------------------- digits


def random_shift(images, max_shift: int = 2, rng=None):
    """Move each image by a random whole number of pixels in ``[-max_shift, max_shift]``
    along each axis, filling with zeros (pad by ``max_shift``, then crop a random window)."""
    rng = np.random.default_rng(rng)
    x, undo = _as_nchw(images, "random_shift")
    n, _, h, w = x.shape
    s = int(max_shift)
    if s < 0:
        raise ValueError(f"random_shift: max_shift must be >= 0, got {max_shift}")
    dy, dx = rng.integers(-s, s + 1, size=(2, n))
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))
    rows = (s - dy)[:, None] + np.arange(h)     # out[y] = in[y - dy] = padded[y - dy + s]
    cols = (s - dx)[:, None] + np.arange(w)
    return undo(_take_windows(padded, rows, cols))


def random_rotation(images, max_degrees: float = 10.0, rng=None):
    """Rotate each image about its centre by a random angle in ``[-max_degrees, max_degrees]``,
    with bilinear interpolation and zeros outside. Keeps the dtype (integers are rounded)."""
    rng = np.random.default_rng(rng)
    x, undo = _as_nchw(images, "random_rotation")
    n, _, h, w = x.shape
    theta = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=n)).reshape(n, 1, 1)
    # For each output pixel, the input point it comes from: rotate back about the centre.
    y, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    cos, sin = np.cos(theta), np.sin(theta)
    src_y = cy + cos * (y - cy) + sin * (xx - cx)          # (N, H, W)
    src_x = cx - sin * (y - cy) + cos * (xx - cx)
    # Bilinear: mix the four neighbours; a neighbour outside the image counts as 0.
    inside = (src_y > -1) & (src_y < h) & (src_x > -1) & (src_x < w)
    y0, x0 = np.floor(src_y), np.floor(src_x)
    wy, wx = (src_y - y0)[:, None], (src_x - x0)[:, None]
    y0 = np.clip(y0, -1, h - 1).astype(np.intp) + 1        # +1: index into the zero-padded image
    x0 = np.clip(x0, -1, w - 1).astype(np.intp) + 1
    padded = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (1, 1), (1, 1)))
    idx_n = np.arange(n).reshape(n, 1, 1, 1)
    idx_c = np.arange(x.shape[1]).reshape(1, -1, 1, 1)

    def at(dy, dx):
        return padded[idx_n, idx_c, (y0 + dy)[:, None], (x0 + dx)[:, None]]

    out = ((1 - wy) * ((1 - wx) * at(0, 0) + wx * at(0, 1))
           + wy * ((1 - wx) * at(1, 0) + wx * at(1, 1)))
    out = np.where(inside[:, None], out, 0)
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return undo(out.astype(x.dtype))


class DigitAugment:
    """``DataLoader`` transform for digits: a random rotation, then a random shift, of
    the first field of each batch; other fields (labels) pass through unchanged."""

    def __init__(self, max_shift: int = 2, max_degrees: float = 10.0, seed=None):
        self.max_shift, self.max_degrees = max_shift, max_degrees
        self.rng = np.random.default_rng(seed)

    def __call__(self, images, *rest):
        images = random_rotation(images, self.max_degrees, self.rng)
        images = random_shift(images, self.max_shift, self.rng)
        return (images, *rest)


# ----------------------------------------------------------------------------- segmentation


def random_flip(images, masks, rng=None, horizontal: bool = True, vertical: bool = True):
    """Flip each (image, mask) pair left-right and/or up-down, each with probability 1/2."""
    rng = np.random.default_rng(rng)
    images, masks = _check_pair(images, masks, "random_flip")
    for axis, enabled in ((-1, horizontal), (-2, vertical)):
        if enabled:
            flip = rng.random(len(images)) < 0.5
            images = np.where(_per_example(flip, images), np.flip(images, axis), images)
            masks = np.where(_per_example(flip, masks), np.flip(masks, axis), masks)
    return images, masks


def random_rot90(images, masks, rng=None):
    """Rotate each (image, mask) pair by a random multiple of 90 degrees (square images only)."""
    rng = np.random.default_rng(rng)
    images, masks = _check_pair(images, masks, "random_rot90")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"random_rot90: needs square images to keep one shape per batch, "
                         f"got {images.shape[-2]}x{images.shape[-1]}")
    turns = rng.integers(0, 4, size=len(images))
    images, masks = images.copy(), masks.copy()
    for k in (1, 2, 3):
        chosen = turns == k
        images[chosen] = np.rot90(images[chosen], k, axes=(-2, -1))
        masks[chosen] = np.rot90(masks[chosen], k, axes=(-2, -1))
    return images, masks


def random_crop(images, masks, size, rng=None):
    """Cut the same random ``size`` (an int or (height, width)) window from each image and
    its mask; each example gets its own window."""
    rng = np.random.default_rng(rng)
    images, masks = _check_pair(images, masks, "random_crop")
    ch, cw = (size, size) if np.isscalar(size) else size
    n, _, h, w = images.shape
    if not (0 < ch <= h and 0 < cw <= w):
        raise ValueError(f"random_crop: crop {ch}x{cw} does not fit in images of {h}x{w}")
    rows = rng.integers(0, h - ch + 1, size=n)[:, None] + np.arange(ch)
    cols = rng.integers(0, w - cw + 1, size=n)[:, None] + np.arange(cw)
    return _take_windows(images, rows, cols), _take_windows(masks, rows, cols)


class SegmentationAugment:
    """``DataLoader`` transform for (images, masks) batches: random flips, 90-degree turns
    and (if ``crop`` is given) a random crop, all applied to image and mask alike."""

    def __init__(self, flips: bool = True, rot90: bool = True, crop=None, seed=None):
        self.flips, self.rot90, self.crop = flips, rot90, crop
        self.rng = np.random.default_rng(seed)

    def __call__(self, images, masks, *rest):
        if self.flips:
            images, masks = random_flip(images, masks, self.rng)
        if self.rot90:
            images, masks = random_rot90(images, masks, self.rng)
        if self.crop is not None:
            images, masks = random_crop(images, masks, self.crop, self.rng)
        return (images, masks, *rest)
