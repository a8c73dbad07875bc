"""Detection data: images with boxes, from three sources, and augmentation that moves the
boxes with the image.

* ``digit_canvases``: real MNIST digits pasted on blank canvases (the default data set);
* ``gland_boxes``: the WARWICK images, one box per gland (connected component of the mask);
* ``read_yolo_folder``: any folder in the common YOLO text format.

Each gives a ``DetectionSet``: uint8 images (N, C, H, W) and, per image, boxes (K, 4)
float32 xyxy in pixels (see ``tinygrad_uu.detection.boxes``) and int64 class ids (K,).
An image may have no boxes: it still trains (all background) and counts in mAP.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..detection.boxes import box_iou, check_boxes
from ..files import atomic_path
from .datasets import mnist, warwick
from .download import CorruptFileError, DataNotFoundError

CACHE_ENV_VAR = "TINYGRAD_UU_CACHE"


@dataclass
class DetectionSet:
    """Images with their boxes. ``images`` uint8 (N, C, H, W); ``boxes[i]`` float32 (K_i, 4)
    xyxy pixels; ``labels[i]`` int64 (K_i,); ``names[i]`` says where image i came from
    (used in error messages)."""
    images: np.ndarray
    boxes: list
    labels: list
    class_names: tuple
    names: list = field(default_factory=list)

    def __post_init__(self):
        if not self.names:
            self.names = [f"image {i}" for i in range(len(self.images))]
        if not (len(self.images) == len(self.boxes) == len(self.labels) == len(self.names)):
            raise ValueError(f"DetectionSet: {len(self.images)} images, {len(self.boxes)} box "
                             f"lists, {len(self.labels)} label lists, {len(self.names)} names")
        h, w = self.images.shape[2:]
        checked = [check_boxes(b, lab, len(self.class_names), name, image_size=(h, w))
                   for b, lab, name in zip(self.boxes, self.labels, self.names)]
        self.boxes = [b for b, _ in checked]
        self.labels = [lab for _, lab in checked]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def float_images(self, index=slice(None)) -> np.ndarray:
        """Images ``index`` as float32 in [0, 1]."""
        return self.images[index].astype(np.float32) * np.float32(1 / 255)

    def box_sizes(self) -> np.ndarray:
        """(M, 2) widths and heights of every box in the set (for k-means anchors)."""
        boxes = np.concatenate(self.boxes) if self.boxes else np.zeros((0, 4), np.float32)
        return boxes[:, 2:] - boxes[:, :2]

    def subset(self, indices) -> "DetectionSet":
        indices = [int(i) for i in indices]
        return DetectionSet(self.images[indices], [self.boxes[i] for i in indices],
                            [self.labels[i] for i in indices], self.class_names,
                            [self.names[i] for i in indices])

    def __repr__(self) -> str:
        n_boxes = sum(len(b) for b in self.boxes)
        return (f"DetectionSet({len(self)} images {self.images.shape[1:]}, {n_boxes} boxes, "
                f"{self.num_classes} classes)")


# ----------------------------------------------------------------------------- digits

DIGIT_RECIPE_VERSION = 1          # bump when make_digit_canvases changes what it draws


def make_digit_canvases(digits: np.ndarray, digit_labels: np.ndarray, count: int, seed: int,
                        canvas: int = 128, per_canvas=(1, 6), sizes=(14, 40),
                        max_iou: float = 0.2, tries: int = 30) -> DetectionSet:
    """``count`` canvases (count, 1, canvas, canvas) uint8 with ``per_canvas`` (low, high)
    digits from ``digits`` (N, 28, 28), each resized to s x s pixels, s uniform in
    ``sizes`` (both ends included), at a random place where its box overlaps no earlier
    box by IoU > ``max_iou`` (a digit that finds no place in ``tries`` draws is left out).
    Each box is the digit's nonzero pixels; overlapping digits are merged by maximum.
    Deterministic from ``seed``."""
    from PIL import Image          # Pillow comes with matplotlib
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 1, canvas, canvas), dtype=np.uint8)
    all_boxes, all_labels = [], []
    for n in range(count):
        boxes, labels = [], []
        for _ in range(rng.integers(per_canvas[0], per_canvas[1] + 1)):
            pick = rng.integers(len(digits))
            size = int(rng.integers(sizes[0], sizes[1] + 1))
            digit = np.asarray(Image.fromarray(digits[pick]).resize((size, size), Image.BILINEAR))
            rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
            if rows.size == 0:
                continue                               # a blank digit: nothing to find
            tight = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)
            for _ in range(tries):
                x, y = rng.integers(0, canvas - size + 1, 2)
                box = tight + [x, y, x, y]
                if not boxes or box_iou(box[None], np.array(boxes)).max() <= max_iou:
                    region = images[n, 0, y:y + size, x:x + size]
                    np.maximum(region, digit, out=region)
                    boxes.append(box)
                    labels.append(int(digit_labels[pick]))
                    break
        all_boxes.append(np.array(boxes, dtype=np.float32).reshape(-1, 4))
        all_labels.append(np.array(labels, dtype=np.int64))
    return DetectionSet(images, all_boxes, all_labels, tuple(str(d) for d in range(10)),
                        [f"canvas {n} (seed {seed})" for n in range(count)])


def cache_dir() -> Path:
    """Where built data sets are cached: ``$TINYGRAD_UU_CACHE`` or ``~/.cache/tinygrad_uu``
    (not the data root, which may be a read-only shared copy)."""
    env = os.environ.get(CACHE_ENV_VAR)
    return (Path(env) if env else Path.home() / ".cache" / "tinygrad_uu").expanduser() / "detection"


def digit_canvases(split: str = "train", count: int | None = None, seed: int = 0, root=None,
                   canvas: int = 128, per_canvas=(1, 6), sizes=(14, 40), max_iou: float = 0.2,
                   cache: bool = True) -> DetectionSet:
    """MNIST digits on ``canvas`` x ``canvas`` canvases: class = the digit.

    "train" canvases use MNIST's training digits only, "test" canvases its test digits,
    so no test digit is ever seen in training. ``count`` defaults to 10,000 (train) and
    1,000 (test). The set is deterministic from (split, count, seed and the recipe) and
    cached in ``cache_dir()`` under a SHA-256 of that recipe; a damaged cache file is
    rebuilt.
    """
    if split not in ("train", "test"):
        raise ValueError(f"digit_canvases: split must be 'train' or 'test', got {split!r}")
    count = {"train": 10_000, "test": 1_000}[split] if count is None else int(count)
    if count < 0:
        raise ValueError(f"digit_canvases: count must be >= 0, got {count}")
    if not 1 <= per_canvas[0] <= per_canvas[1] or not 1 <= sizes[0] <= sizes[1] <= min(canvas, 200):
        raise ValueError(f"digit_canvases: bad recipe per_canvas={per_canvas}, sizes={sizes} "
                         f"for a {canvas}-px canvas")
    recipe = {"version": DIGIT_RECIPE_VERSION, "split": split, "count": count, "seed": seed,
              "canvas": canvas, "per_canvas": list(per_canvas), "sizes": list(sizes),
              "max_iou": max_iou}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    path = cache_dir() / f"digits-{split}-{key[:16]}.npz"
    if cache and path.exists():
        try:
            return _load_cached(path, key)
        except (OSError, ValueError, KeyError, EOFError) as e:
            warnings.warn(f"digit_canvases: rebuilding the damaged cache file {path} ({e})",
                          stacklevel=2)
    digits, labels = mnist(split, root=root)
    # train and test canvases differ in seed too, so the same seed gives unrelated layouts
    made = make_digit_canvases(digits, labels, count, seed=[seed, {"train": 0, "test": 1}[split]],
                               canvas=canvas, per_canvas=per_canvas, sizes=sizes, max_iou=max_iou)
    if cache:
        _save_cached(path, key, made)
    return made


def _save_cached(path: Path, key: str, data: DetectionSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, key=np.array(key), images=data.images,
                 counts=np.array([len(b) for b in data.boxes], dtype=np.int64),
                 boxes=np.concatenate(data.boxes) if data.boxes else np.zeros((0, 4), np.float32),
                 labels=np.concatenate(data.labels) if data.labels else np.zeros(0, np.int64))


def _load_cached(path: Path, key: str) -> DetectionSet:
    with np.load(path) as f:
        if str(f["key"]) != key:
            raise ValueError("its recipe checksum does not match its name")
        images, counts, boxes, labels = f["images"], f["counts"], f["boxes"], f["labels"]
    cuts = np.cumsum(counts)[:-1]
    return DetectionSet(images, np.split(boxes, cuts), np.split(labels, cuts),
                        tuple(str(d) for d in range(10)),
                        [f"canvas {n} ({path.name})" for n in range(len(images))])


# ----------------------------------------------------------------------------- glands

def components_to_boxes(mask: np.ndarray, min_area: int = 20) -> np.ndarray:
    """Boxes (K, 4) xyxy of the 4-connected components of a binary mask (H, W) that have
    at least ``min_area`` pixels, in ``scipy.ndimage.label``'s order."""
    from scipy import ndimage
    labelled, n = ndimage.label(np.asarray(mask) > 0)     # default structure: 4-connectivity
    if n == 0:
        return np.zeros((0, 4), dtype=np.float32)
    areas = np.bincount(labelled.ravel(), minlength=n + 1)[1:]
    boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop]
             for s, area in zip(ndimage.find_objects(labelled), areas) if area >= min_area]
    return np.array(boxes, dtype=np.float32).reshape(-1, 4)


def gland_boxes(root=None, min_area: int = 20) -> dict:
    """WARWICK with one box per gland: ``{"train": DetectionSet, "test": DetectionSet}``.

    A gland is a connected component of the label mask, pixels joined through their 4
    edge neighbours (not corners), with at least ``min_area`` pixels (20 drops specks of
    a few pixels left at the image border). Glands that touch in the mask merge into one
    component, hence one box: the masks do not separate touching glands. Images are
    uint8 (N, 3, 128, 128); one class, "gland". Masks come along as ``.masks``.
    """
    sets = {}
    for split, (images, masks) in warwick(root).items():
        boxes = [components_to_boxes(m[0], min_area) for m in masks]
        data = DetectionSet(np.round(images * 255).astype(np.uint8), boxes,
                            [np.zeros(len(b), np.int64) for b in boxes], ("gland",),
                            [f"WARWICK {split} image {i + 1}" for i in range(len(images))])
        data.masks = masks
        sets[split] = data
    return sets


# ----------------------------------------------------------------------------- YOLO folders

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_yolo_folder(folder, image_size: int | None = 128, missing_labels: str = "error",
                     channels: int = 3) -> DetectionSet:
    """A folder in YOLO's text format: ``images/*.png|jpg`` and ``labels/<same stem>.txt``,
    one row ``class cx cy w h`` per object (centre and size as fractions of the image,
    in [0, 1]), and an optional ``classes.txt`` with one class name per line.

    Every image is resized to ``image_size`` x ``image_size`` (the boxes, being fractions,
    follow) so that images batch together; ``None`` keeps the sizes, which must then agree.
    An image without a label file is an error (``missing_labels="error"``, the default:
    a forgotten file should not silently teach "nothing here"); with ``"empty"`` it is
    taken as an image with no objects, with one warning listing them. An empty label file
    is always an image with no objects. Without ``classes.txt`` the classes are 0..max id.
    Errors name the file and line.
    """
    from PIL import Image, UnidentifiedImageError
    folder = Path(folder).expanduser()
    if missing_labels not in ("error", "empty"):
        raise ValueError(f"read_yolo_folder: missing_labels must be 'error' or 'empty', "
                         f"got {missing_labels!r}")
    image_dir, label_dir = folder / "images", folder / "labels"
    if not image_dir.is_dir():
        raise DataNotFoundError(f"{folder}: no images/ folder (a YOLO folder has images/ and "
                                f"labels/)")
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataNotFoundError(f"{image_dir}: no .png or .jpg images")
    class_names = None
    if (folder / "classes.txt").exists():
        class_names = tuple(line.strip() for line in
                            (folder / "classes.txt").read_text(encoding="utf-8").splitlines()
                            if line.strip())
    images, rows, missing = [], [], []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                if image_size is not None:
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                array = np.asarray(im)
        except (UnidentifiedImageError, OSError) as e:
            raise CorruptFileError(f"{path}: cannot read it as an image ({e})") from None
        if images and array.shape != images[0].shape:
            raise CorruptFileError(f"{path} is {array.shape[1]}x{array.shape[0]} but {paths[0]} "
                                   f"is {images[0].shape[1]}x{images[0].shape[0]}; pass an "
                                   f"image_size to resize them all")
        images.append(array)
        label_path = label_dir / f"{path.stem}.txt"
        if not label_path.exists():
            if missing_labels == "error":
                raise DataNotFoundError(f"{path}: no label file {label_path} (for an image "
                                        f"with no objects, write an empty file)")
            missing.append(path.name)
            rows.append(np.zeros((0, 5)))
            continue
        rows.append(_read_yolo_labels(label_path, class_names))
    if missing:
        warnings.warn(f"read_yolo_folder: {len(missing)} images without a label file taken as "
                      f"having no objects: {', '.join(missing[:10])}"
                      + (" ..." if len(missing) > 10 else ""), stacklevel=2)
    if class_names is None:
        top = max((int(r[:, 0].max()) for r in rows if len(r)), default=0)
        class_names = tuple(str(c) for c in range(top + 1))
    stack = np.stack(images)
    stack = stack[:, None] if stack.ndim == 3 else stack.transpose(0, 3, 1, 2)
    h, w = stack.shape[2:]
    boxes = []
    for r in rows:
        cx, cy, bw, bh = r[:, 1] * w, r[:, 2] * h, r[:, 3] * w, r[:, 4] * h
        box = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        boxes.append(np.clip(box, 0, [w, h, w, h]))   # rounding may push an edge past 1
    return DetectionSet(np.ascontiguousarray(stack), boxes,
                        [r[:, 0].astype(np.int64) for r in rows], class_names,
                        [str(p) for p in paths])


def _read_yolo_labels(path: Path, class_names) -> np.ndarray:
    """Rows (K, 5) ``class cx cy w h`` of one label file, each checked."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        where = f"{path}, line {lineno}"
        if len(parts) != 5:
            raise CorruptFileError(f"{where}: expected 5 values 'class cx cy w h', got "
                                   f"{len(parts)}: {line.strip()!r}")
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise CorruptFileError(f"{where}: not a number in {line.strip()!r}") from None
        c, cx, cy, bw, bh = values
        if c != int(c) or c < 0 or (class_names is not None and c >= len(class_names)):
            known = f" (classes.txt lists {len(class_names)})" if class_names is not None else ""
            raise CorruptFileError(f"{where}: class id {parts[0]} is not a valid class{known}")
        if not all(np.isfinite(values)) or not all(0 <= v <= 1 for v in (cx, cy, bw, bh)):
            raise CorruptFileError(f"{where}: coordinates must be fractions in [0, 1], got "
                                   f"{line.strip()!r}")
        if bw <= 0 or bh <= 0:
            raise CorruptFileError(f"{where}: zero width or height in {line.strip()!r}")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


# ----------------------------------------------------------------------------- augmentation

class DetectionAugment:
    """Random changes of a batch that move the boxes with the pixels; a DataLoader-style
    callable: ``images, boxes, labels = augment(images, boxes, labels)`` with images
    (N, C, H, W) and per-image lists of boxes (K, 4) xyxy and labels (K,).

    * ``flips``: mirror left-right and top-bottom, each with probability 1/2;
    * ``rot90``: turn by a random multiple of 90 degrees (square images only);
    * ``shift`` (a fraction of the side) and ``scale`` (low, high): zoom about the centre
      by s and move by (dx, dy), sampling the nearest input pixel (empty where it falls
      outside the image).

    Leave flips and turns off for digits (a mirrored 2 is no digit; a turned 6 is a 9).
    Each box maps through the same transform with its edges rounded outward to whole
    pixels and clipped to the image, so it still encloses every pixel of its object; a
    box pushed entirely off the image is dropped with its label.
    """

    def __init__(self, flips: bool = False, rot90: bool = False, shift: float = 0.0,
                 scale=(1.0, 1.0), seed=None):
        if shift < 0 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"DetectionAugment: need shift >= 0 and 0 < scale[0] <= scale[1], "
                             f"got shift={shift}, scale={scale}")
        self.flips, self.rot90, self.shift, self.scale = flips, rot90, shift, tuple(scale)
        self.rng = np.random.default_rng(seed)

    def __call__(self, images, boxes, labels):
        out_images, out_boxes, out_labels = [], [], []
        for image, b, lab in zip(images, boxes, labels):
            image, b, lab = self.one(image, np.asarray(b, np.float64).reshape(-1, 4),
                                     np.asarray(lab))
            out_images.append(image)
            out_boxes.append(b.astype(np.float32))
            out_labels.append(lab)
        return np.stack(out_images), out_boxes, out_labels

    def one(self, image, boxes, labels):
        """One image (C, H, W) and its boxes: the same random transform for both."""
        h, w = image.shape[1:]
        if self.flips and self.rng.random() < 0.5:                 # left-right
            image, boxes = image[:, :, ::-1], np.stack(
                [w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        if self.flips and self.rng.random() < 0.5:                 # top-bottom
            image, boxes = image[:, ::-1], np.stack(
                [boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]], 1)
        if self.rot90 and h == w:
            for _ in range(self.rng.integers(4)):
                # np.rot90 (counter-clockwise): pixel (row r, col c) moves to (w - 1 - c, r)
                image = np.rot90(image, 1, axes=(1, 2))
                boxes = np.stack([boxes[:, 1], w - boxes[:, 2], boxes[:, 3], w - boxes[:, 0]], 1)
        if self.shift or self.scale != (1.0, 1.0):
            image, boxes, labels = self._zoom_shift(image, boxes, labels)
        return np.ascontiguousarray(image), boxes, labels

    def _zoom_shift(self, image, boxes, labels):
        h, w = image.shape[1:]
        s = self.rng.uniform(*self.scale)
        dx, dy = self.rng.uniform(-self.shift, self.shift, 2) * (w, h)
        # output pixel j (centre j + 0.5) samples input pixel floor((j + 0.5 - c - d) / s + c)
        cols = np.floor((np.arange(w) + 0.5 - w / 2 - dx) / s + w / 2).astype(np.int64)
        rows = np.floor((np.arange(h) + 0.5 - h / 2 - dy) / s + h / 2).astype(np.int64)
        inside = (rows[:, None] >= 0) & (rows[:, None] < h) & (cols >= 0) & (cols < w)
        out = image[:, np.clip(rows, 0, h - 1)[:, None], np.clip(cols, 0, w - 1)[None, :]]
        out = np.where(inside, out, np.zeros((), image.dtype))
        # input x maps to (x - c) * s + c + d; round outward, then clip
        x1 = np.floor((boxes[:, 0] - w / 2) * s + w / 2 + dx - 1e-6)
        x2 = np.ceil((boxes[:, 2] - w / 2) * s + w / 2 + dx + 1e-6)
        y1 = np.floor((boxes[:, 1] - h / 2) * s + h / 2 + dy - 1e-6)
        y2 = np.ceil((boxes[:, 3] - h / 2) * s + h / 2 + dy + 1e-6)
        moved = np.clip(np.stack([x1, y1, x2, y2], 1), 0, [w, h, w, h])
        keep = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
        return out, moved[keep], labels[keep]


def load_detection_data(name: str, root=None, data_dir=None, train_count=None, test_count=None,
                        seed: int = 0):
    """(train, test) DetectionSets by name: "digits", "glands" or "yolo" (``data_dir``
    with train/ and test/ YOLO folders, or one folder split 80/20 by a seeded draw)."""
    if name == "digits":
        return (digit_canvases("train", train_count, seed, root),
                digit_canvases("test", test_count, seed, root))
    if name == "glands":
        sets = gland_boxes(root)
        return sets["train"], sets["test"]
    if name == "yolo":
        if data_dir is None:
            raise ValueError("load_detection_data: 'yolo' needs data_dir, a YOLO folder")
        base = Path(data_dir)
        if (base / "train").is_dir() and (base / "test").is_dir():
            return read_yolo_folder(base / "train"), read_yolo_folder(base / "test")
        data = read_yolo_folder(base)
        order = np.random.default_rng(seed).permutation(len(data))
        cut = max(1, int(round(0.8 * len(data))))
        return data.subset(np.sort(order[:cut])), data.subset(np.sort(order[cut:]))
    raise ValueError(f"load_detection_data: unknown data set {name!r} (digits, glands, yolo)")


__all__ = ["DetectionSet", "make_digit_canvases", "digit_canvases", "cache_dir",
           "components_to_boxes", "gland_boxes", "read_yolo_folder", "load_detection_data",
           "DetectionAugment"]
