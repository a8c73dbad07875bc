"""Patch classification data, PatchCamelyon-style: ``warwick_patches`` (the default, cut
from the WARWICK images) and ``pcam_kaggle`` (the Kaggle competition's folder), plus the
augmentations of the task: the 8 dihedral transforms and a stain/colour jitter.

Every set is a ``PatchSet``: uint8 images (N, 3, P, P) (convert a batch with
``to_float``), labels (N,) in {0, 1} (-1 where unknown, e.g. a competition's test set),
one string id per patch (the ``id`` column of a submission) and the index of the image
each patch was cut from (``groups``: what a bootstrap must resample, see
``metrics.bootstrap_auc``).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import warwick
from .download import CorruptFileError, DataNotFoundError

PCAM_SIZE = 96   # the competition's patches are 96x96 RGB TIFFs


@dataclass(frozen=True, repr=False)
class PatchSet:
    images: np.ndarray      # (N, 3, P, P) uint8
    labels: np.ndarray      # (N,) int64: 1 positive, 0 negative, -1 unknown
    ids: tuple              # (N,) patch ids, e.g. "test_07_y040_x064" or a Kaggle hash
    groups: np.ndarray      # (N,) int64: the image each patch was cut from
    name: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def has_labels(self) -> bool:
        return bool(len(self.labels)) and bool(np.all(self.labels >= 0))

    def balance(self) -> dict:
        """``{"patches", "images", "positives", "positive_fraction"}`` of this split."""
        positives = int((self.labels == 1).sum())
        return {"patches": len(self), "images": int(len(np.unique(self.groups))),
                "positives": positives,
                "positive_fraction": positives / len(self) if len(self) and self.has_labels
                else float("nan")}

    def subset(self, keep) -> "PatchSet":
        keep = np.asarray(keep)
        return PatchSet(self.images[keep], self.labels[keep],
                        tuple(np.asarray(self.ids, dtype=object)[keep]), self.groups[keep],
                        self.name)

    def __repr__(self) -> str:
        b = self.balance()
        return (f"PatchSet({self.name!r}: {b['patches']} patches of "
                f"{self.images.shape[2]}x{self.images.shape[3]} from {b['images']} images, "
                f"{b['positive_fraction']:.1%} positive)")


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 patches -> float32 in [0, 1] (floats pass through as float32)."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) * np.float32(1 / 255)
    return images.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- WARWICK

def cut_patches(images, masks, patch_size: int = 32, stride: int = 8, center: int = 8,
                threshold: float = 0.5, image_ids=None, prefix: str = "img",
                name: str = "") -> PatchSet:
    """Cut every ``patch_size`` square on a ``stride`` grid from each image; label it.

    The label rule: take the ``center x center`` pixels in the middle of the patch (rows
    and columns (patch_size - center) // 2 up to that + center); the patch is positive
    (1) when strictly more than ``threshold`` of them are gland (mask > 0.5), else 0.
    With the defaults: a 32x32 patch is positive when more than 32 of its central 8x8 =
    64 pixels are gland. The grid starts at the top-left corner; a 128x128 image gives
    ((128 - 32) / 8 + 1)^2 = 169 patches. Patch ids read ``<prefix>_<image id>_y<row>_x<col>``.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 4 or masks.shape[0] != images.shape[0] or \
            masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"cut_patches: expected images (N, C, H, W) and masks (N, 1, H, W) "
                         f"of the same size, got {images.shape} and {masks.shape}")
    n, c, h, w = images.shape
    if not (0 < center <= patch_size <= min(h, w)) or stride < 1:
        raise ValueError(f"cut_patches: need 0 < center ({center}) <= patch_size "
                         f"({patch_size}) <= image side ({min(h, w)}) and stride >= 1")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"cut_patches: threshold is a fraction in [0, 1), got {threshold}")
    image_ids = np.arange(n) if image_ids is None else np.asarray(image_ids)
    if images.dtype != np.uint8:       # floats in [0, 1], as datasets.warwick gives them
        images = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    gland = masks.reshape(n, h, w) > 0.5
    tops = range(0, h - patch_size + 1, stride)
    lefts = range(0, w - patch_size + 1, stride)
    lo = (patch_size - center) // 2
    patches, labels, ids, groups = [], [], [], []
    for i in range(n):
        for y in tops:
            for x in lefts:
                patches.append(images[i, :, y:y + patch_size, x:x + patch_size])
                middle = gland[i, y + lo:y + lo + center, x + lo:x + lo + center]
                labels.append(int(middle.mean() > threshold))
                ids.append(f"{prefix}_{int(image_ids[i]):02d}_y{y:03d}_x{x:03d}")
                groups.append(int(image_ids[i]))
    return PatchSet(np.ascontiguousarray(np.stack(patches)), np.array(labels, np.int64),
                    tuple(ids), np.array(groups, np.int64), name)


def warwick_patches(root=None, patch_size: int = 32, stride: int = 8, center: int = 8,
                    threshold: float = 0.5, val_images: int = 15, seed: int = 0,
                    test_stride: int | None = None) -> dict:
    """WARWICK as a PCam-style task: ``{"train", "val", "test"}`` PatchSets.

    Split by image, never by patch: overlapping patches of one image share pixels, so
    they must all land on one side. ``val_images`` of the 85 training images (a seeded
    draw) form the validation set, the others the training set; the 60 test images are
    the hidden leaderboard set (cut with ``test_stride``, default ``stride``). The label
    rule is ``cut_patches``'s: positive when more than ``threshold`` of the central
    ``center x center`` pixels are gland. ``groups`` hold the image numbers (1-85 for
    train/val, 1-60 for test, as in the file names).
    """
    data = warwick(root)
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    if not 0 <= val_images < len(train_x):
        raise ValueError(f"warwick_patches: val_images must lie in [0, {len(train_x)}), "
                         f"got {val_images}")
    order = np.random.default_rng(seed).permutation(len(train_x))
    val, train = np.sort(order[:val_images]), np.sort(order[val_images:])
    cut = dict(patch_size=patch_size, center=center, threshold=threshold)
    return {"train": cut_patches(train_x[train], train_y[train], stride=stride,
                                 image_ids=train + 1, prefix="train", name="train", **cut),
            "val": cut_patches(train_x[val], train_y[val], stride=stride,
                               image_ids=val + 1, prefix="train", name="val", **cut),
            "test": cut_patches(test_x, test_y, stride=test_stride or stride,
                                image_ids=np.arange(1, len(test_x) + 1), prefix="test",
                                name="test", **cut)}


def class_balance(splits: dict) -> dict:
    """``{split: PatchSet.balance()}`` for a dict of PatchSets."""
    return {name: s.balance() for name, s in splits.items()}


# ----------------------------------------------------------------------------- PCam (Kaggle)

def read_pcam_labels(csv_path) -> dict:
    """``{id: label}`` from a ``train_labels.csv`` with the header ``id,label``."""
    csv_path = Path(csv_path)
    labels = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header] != ["id", "label"]:
            raise CorruptFileError(f"{csv_path}, line 1: expected the header 'id,label', got "
                                   f"{','.join(header or [])!r}")
        for lineno, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) != 2 or row[1].strip() not in ("0", "1"):
                raise CorruptFileError(f"{csv_path}, line {lineno}: expected '<id>,<0 or 1>', "
                                       f"got {','.join(row)!r}")
            key = row[0].strip()
            if key in labels:
                raise CorruptFileError(f"{csv_path}, line {lineno}: id {key!r} appears twice")
            labels[key] = int(row[1])
    return labels


def _read_tif(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError   # Pillow comes with matplotlib
    try:
        with Image.open(path) as im:
            if im.size != (size, size):
                raise CorruptFileError(f"{path}: the image is {im.size[0]}x{im.size[1]}, "
                                       f"expected {size}x{size}")
            return np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise CorruptFileError(f"{path}: cannot read it as a TIFF image ({e})") from None


def read_pcam_folder(folder, split: str = "train", size: int = PCAM_SIZE,
                     limit: int | None = None) -> PatchSet:
    """Read ``<folder>/train`` (with ``train_labels.csv``) or ``<folder>/test``.

    Every ``<id>.tif`` must be ``size x size`` RGB. For ``train`` every label row needs its
    image and every image its label row; a mismatch is an error naming the file (and the
    line). ``test`` images get label -1. ``limit``: the first N ids only (sorted), for a
    quick run: the full set is 220,025 patches, 6 GB as uint8. PCam's ids do not say
    which slide a patch came from, so each patch is its own group.
    """
    folder = Path(folder)
    if split not in ("train", "test"):
        raise ValueError(f"read_pcam_folder: split must be 'train' or 'test', got {split!r}")
    image_dir = folder / split
    if not image_dir.is_dir():
        raise DataNotFoundError(f"{image_dir}: no such folder; the competition's layout is "
                                f"train/<id>.tif, train_labels.csv and test/<id>.tif")
    on_disk = {p.stem: p for p in image_dir.glob("*.tif")}
    if split == "train":
        labels = read_pcam_labels(folder / "train_labels.csv")
        without_image = sorted(set(labels) - set(on_disk))
        if without_image:
            raise CorruptFileError(
                f"{folder / 'train_labels.csv'}: {len(without_image)} label rows have no image, "
                f"e.g. id {without_image[0]!r}: {image_dir / (without_image[0] + '.tif')} is "
                f"missing")
        without_label = sorted(set(on_disk) - set(labels))
        if without_label:
            raise CorruptFileError(
                f"{on_disk[without_label[0]]} has no row in {folder / 'train_labels.csv'} "
                f"({len(without_label)} images without a label)")
    else:
        labels = dict.fromkeys(on_disk, -1)
    ids = sorted(on_disk)[:limit]
    if not ids:
        raise DataNotFoundError(f"{image_dir}: no .tif images")
    images = np.empty((len(ids), 3, size, size), np.uint8)
    for i, key in enumerate(ids):
        images[i] = _read_tif(on_disk[key], size)
    return PatchSet(images, np.array([labels[k] for k in ids], np.int64), tuple(ids),
                    np.arange(len(ids), dtype=np.int64), split)


def pcam_kaggle(folder, val_fraction: float = 0.1, seed: int = 0,
                limit: int | None = None) -> dict:
    """The Kaggle *Histopathologic Cancer Detection* folder as ``{"train", "val", "test"}``.

    A patch is positive when its central 32x32 region holds tumour (the competition's
    rule, already in ``train_labels.csv``). ``val_fraction`` of the labelled patches (a
    seeded draw) are held out for validation; ``test`` has no labels (-1): its
    predictions go to the submission file.
    """
    train = read_pcam_folder(folder, "train", limit=limit)
    test = read_pcam_folder(folder, "test", limit=limit)
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = int(round(val_fraction * len(train)))
    return {"train": _renamed(train.subset(np.sort(order[n_val:])), "train"),
            "val": _renamed(train.subset(np.sort(order[:n_val])), "val"), "test": test}


def _renamed(s: PatchSet, name: str) -> PatchSet:
    return PatchSet(s.images, s.labels, s.ids, s.groups, name)


# ----------------------------------------------------------------------------- augmentation

def dihedral(images: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square on (..., H, W) images: k = 0..3 turns by
    k * 90 degrees, k = 4..7 flips left-right first, then turns by (k - 4) * 90 degrees."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral: k must be 0..7, got {k}")
    out = images[..., ::-1] if k >= 4 else images
    return np.ascontiguousarray(np.rot90(out, k % 4, axes=(-2, -1)))


def random_dihedral(images: np.ndarray, rng=None) -> np.ndarray:
    """Each (C, H, W) image of the batch under its own random one of the 8 symmetries."""
    rng = np.random.default_rng(rng)
    ks = rng.integers(0, 8, size=len(images))
    out = np.empty_like(images)
    for k in range(8):
        chosen = ks == k
        if chosen.any():
            out[chosen] = dihedral(images[chosen], k)
    return out


def colour_jitter(images: np.ndarray, rng=None, scale: float = 0.15, shift: float = 0.05,
                  saturation: float = 0.2) -> np.ndarray:
    """A stain/colour jitter for float images in [0, 1], (N, C, H, W), per image:

        x_c <- mean + s (a_c x_c + b_c - mean),   a_c ~ exp(U(-scale, scale)),
        b_c ~ U(-shift, shift),   s ~ 1 + U(-saturation, saturation)

    (a per-channel gain and offset, as different staining and scanning give, then the
    channels pulled towards or pushed from their grey mean), clipped to [0, 1]. A
    channel that is 0 everywhere in an image (WARWICK's blue) stays 0.
    """
    rng = np.random.default_rng(rng)
    x = np.asarray(images, np.float32)
    n, c = x.shape[:2]
    gain = np.exp(rng.uniform(-scale, scale, (n, c, 1, 1))).astype(np.float32)
    offset = rng.uniform(-shift, shift, (n, c, 1, 1)).astype(np.float32)
    used = x.reshape(n, c, -1).max(axis=2)[:, :, None, None] > 0
    x = x * gain + offset * used
    grey = x.mean(axis=1, keepdims=True)
    sat = (1 + rng.uniform(-saturation, saturation, (n, 1, 1, 1))).astype(np.float32)
    return np.clip(grey + sat * (x - grey), 0.0, 1.0) * used


class PatchAugment:
    """``DataLoader`` transform for (uint8 patches, labels): float32 in [0, 1], then a random
    dihedral transform and (``jitter``) ``colour_jitter``; labels pass through."""

    def __init__(self, dihedral: bool = True, jitter: bool = True, seed=None, **jitter_options):
        self.dihedral, self.jitter, self.jitter_options = dihedral, jitter, jitter_options
        self.rng = np.random.default_rng(seed)

    def __call__(self, images, *rest):
        x = to_float(images)
        if self.dihedral:
            x = random_dihedral(x, self.rng)
        if self.jitter:
            x = colour_jitter(x, self.rng, **self.jitter_options)
        return (x, *rest)
