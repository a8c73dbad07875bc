"""The course's data sets as numpy arrays: ``auto_mpg``, ``mnist`` and ``warwick``.

Each loader finds its files under the data root (``root`` if given, else
``data_root()``: ``$TINYGRAD_UU_DATA`` or ``~/.cache/tinygrad_uu``), laid out as::

    <root>/auto-mpg/auto-mpg.data
    <root>/mnist/train-images-idx3-ubyte.gz   (and the three other IDX files)
    <root>/warwick/Train/image_01.png, label_01.png, ...   (or <root>/warwick.zip)

Downloadable files are checked against their SHA-256 and fetched when missing;
files are parsed strictly, and a file that fails the checks is never used.
"""
from __future__ import annotations

import gzip
import io
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .download import ENV_VAR, CorruptFileError, DataNotFoundError, data_root, fetch, set_aside


def _root(root) -> Path:
    return Path(root).expanduser().resolve() if root is not None else data_root()


# ----------------------------------------------------------------------------- Auto MPG

AUTO_MPG_URL = ("https://archive.ics.uci.edu/ml/machine-learning-databases/"
                "auto-mpg/auto-mpg.data")
AUTO_MPG_SHA256 = "48b830e11feee5572525f8f1691ddb9d38d3d7b7063edcd8fca672c2a5e17d8d"
AUTO_MPG_COLUMNS = ("mpg", "cylinders", "displacement", "horsepower", "weight",
                    "acceleration", "model_year", "origin")


@dataclass(frozen=True, repr=False)
class AutoMPG:
    """Auto MPG, ready for regression: predict ``target`` (horsepower) from ``features``."""
    features: np.ndarray        # (N, 7) float64: every numeric column but horsepower
    target: np.ndarray          # (N,) float64: horsepower
    feature_names: tuple        # names of the feature columns, in order
    car_names: tuple            # (N,) car names, e.g. "chevrolet chevelle malibu"
    dropped_rows: int           # rows left out because a value was '?'
    dropped_car_names: tuple    # the cars in those rows
    target_name: str = "horsepower"

    def __repr__(self) -> str:
        return (f"AutoMPG({len(self.target)} cars, features {self.feature_names}, "
                f"target {self.target_name!r}, {self.dropped_rows} rows dropped)")


def auto_mpg(root=None) -> AutoMPG:
    """The UCI Auto MPG data, downloaded on first use; rows with a '?' are dropped (with a warning)."""
    path = fetch("auto-mpg.data", [AUTO_MPG_URL], AUTO_MPG_SHA256, _root(root) / "auto-mpg")
    return read_auto_mpg(path)


def read_auto_mpg(path) -> AutoMPG:
    """Parse an ``auto-mpg.data`` file: 8 whitespace-separated numbers, then a quoted name."""
    rows, names, dropped, unknown = [], [], [], set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            numbers, quote, name = line.partition('"')
            values = numbers.split()
            if len(values) != len(AUTO_MPG_COLUMNS) or not quote:
                raise CorruptFileError(f"{path}, line {lineno}: expected 8 numbers and a "
                                       f"quoted car name, got {line.strip()!r}")
            name = name.strip().rstrip('"')
            if "?" in values:
                dropped.append(name)
                unknown.update(c for c, v in zip(AUTO_MPG_COLUMNS, values) if v == "?")
                continue
            try:
                rows.append([float(v) for v in values])
            except ValueError:
                raise CorruptFileError(f"{path}, line {lineno}: not a number in "
                                       f"{numbers.strip()!r}") from None
            names.append(name)
    if dropped:
        columns = ", ".join(sorted(unknown))
        warnings.warn(f"auto_mpg: dropped {len(dropped)} of {len(rows) + len(dropped)} rows "
                      f"with an unknown value ('?') in {columns}", stacklevel=3)
    data = np.array(rows, dtype=np.float64).reshape(-1, len(AUTO_MPG_COLUMNS))
    hp = AUTO_MPG_COLUMNS.index("horsepower")
    keep = [i for i in range(len(AUTO_MPG_COLUMNS)) if i != hp]
    return AutoMPG(features=data[:, keep], target=data[:, hp],
                   feature_names=tuple(AUTO_MPG_COLUMNS[i] for i in keep),
                   car_names=tuple(names), dropped_rows=len(dropped),
                   dropped_car_names=tuple(dropped))


# ----------------------------------------------------------------------------- MNIST

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
IDX_IMAGES = 0x00000803   # unsigned bytes, 3 dimensions (count, rows, cols)
IDX_LABELS = 0x00000801   # unsigned bytes, 1 dimension (count)

# IDX type codes (third byte of the magic number) and their big-endian numpy types.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def mnist(split: str = "train", root=None):
    """MNIST digits: ``(images, labels)``, uint8 ``(N, 28, 28)`` and int64 ``(N,)``.

    ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000). The gzipped IDX
    files are downloaded on first use; uncompressed copies (names without ``.gz``)
    are read too. A copy that fails its checks is moved aside, never used again.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"mnist: split must be 'train' or 'test', got {split!r}")
    folder = _root(root) / "mnist"
    image_name, label_name = MNIST_FILES[split]
    image_path, label_path = _mnist_path(folder, image_name), _mnist_path(folder, label_name)
    images = _read_trusted_idx(image_path, IDX_IMAGES)
    labels = _read_trusted_idx(label_path, IDX_LABELS)
    if images.shape[1:] != (28, 28):
        raise CorruptFileError(f"{image_path}: images are {images.shape[1]}x{images.shape[2]}, "
                               f"MNIST's are 28x28")
    if len(images) != len(labels):
        raise CorruptFileError(f"{image_path} has {len(images)} images but {label_path} has "
                               f"{len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise CorruptFileError(f"{label_path}: label {labels.max()} is not a digit 0-9")
    return images, labels.astype(np.int64)


def _mnist_path(folder: Path, gz_name: str) -> Path:
    """An uncompressed copy if that is all there is, else the verified (downloaded) .gz file."""
    raw = folder / gz_name[:-len(".gz")]
    if raw.exists() and not (folder / gz_name).exists():
        return raw
    return fetch(gz_name, [mirror + gz_name for mirror in MNIST_MIRRORS],
                 MNIST_SHA256[gz_name], folder)


def _read_trusted_idx(path: Path, magic: int) -> np.ndarray:
    """``read_idx``, but a file that fails is moved aside so the next call fetches a new one."""
    try:
        return read_idx(path, magic)
    except CorruptFileError as e:
        moved = set_aside(path, str(e))
        raise CorruptFileError(f"{e}\nIt was moved aside to {moved}; the next call "
                               f"downloads a fresh copy.") from None


def read_idx(path, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a native-endian array of the shape it declares.

    IDX is big-endian: two zero bytes, a type code (0x08 = unsigned byte), the number
    of dimensions, each dimension as a uint32, then the values. ``magic`` (e.g.
    ``IDX_IMAGES = 0x803``) is the first four bytes the file must start with.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":                                  # the gzip signature
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise CorruptFileError(f"{path}: broken gzip data ({e}); truncated download?") from None
    if len(raw) < 4:
        raise CorruptFileError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise CorruptFileError(f"{path}: magic number 0x{found:08X}, expected 0x{magic:08X} "
                               f"({_describe_magic(magic)})")
    if raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise CorruptFileError(f"{path}: not an IDX file (starts with 0x{found:08X})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptFileError(f"{path}: truncated inside the header ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        what = "truncated" if len(raw) - header < expected else "too long"
        raise CorruptFileError(f"{path}: {what}: the header declares shape {shape}, "
                               f"{expected} bytes of data, but the file has {len(raw) - header}")
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))                 # a writable native copy


def _describe_magic(magic: int) -> str:
    ndim = magic & 0xFF
    return {1: "an IDX label file", 3: "an IDX image file"}.get(ndim, f"{ndim}-d IDX data")


# ----------------------------------------------------------------------------- WARWICK

_WARWICK_NAME = re.compile(r"(?:^|/)(Train|Test)/(image|label)_(\d+)\.png$")


def warwick(root=None) -> dict:
    """The WARWICK gland segmentation subset: ``{"train": (images, masks), "test": ...}``.

    Images are float32 ``(N, 3, H, W)`` in [0, 1]; masks float32 ``(N, 1, H, W)`` in
    {0, 1} (1 = gland). Reads ``Train/`` and ``Test/`` with ``image_NN.png`` and
    ``label_NN.png`` pairs from ``<root>/warwick``, ``<root>/warwick.zip``, or
    ``root`` itself (a folder or a zip). There is no download: see the error message.
    """
    base = _root(root)
    candidates = [base] if base.suffix == ".zip" else [base / "warwick", base / "warwick.zip", base]
    for place in candidates:
        if place.is_dir() and (place / "Train").is_dir():
            return _read_warwick(_folder_entries(place), place)
        if place.is_file() and zipfile.is_zipfile(place):
            with zipfile.ZipFile(place) as archive:
                return _read_warwick(_zip_entries(archive), place)
    looked = "\n".join(f"  {place}" for place in candidates)
    raise DataNotFoundError(
        f"WARWICK data not found. Looked for a folder with Train/ and Test/ (or a zip of it) "
        f"at:\n{looked}\nThere is no stable public download for this subset: get a copy from "
        f"the course, put it at {base / 'warwick'} (Train/image_01.png, Train/label_01.png, "
        f"...), or set {ENV_VAR} to a folder that has warwick/, or pass warwick(root=...).")


def _folder_entries(folder: Path) -> dict:
    """``{"Train/image_01.png": reader}`` for the PNG files under ``folder``."""
    return {f"{split}/{p.name}": p.read_bytes
            for split in ("Train", "Test") for p in sorted((folder / split).glob("*.png"))}


def _zip_entries(archive: zipfile.ZipFile) -> dict:
    """The same for a zip, whatever folder the archive puts Train/ and Test/ in."""
    entries = {}
    for name in archive.namelist():
        match = _WARWICK_NAME.search(name)
        if match and not name.startswith("__MACOSX/"):
            entries[match.group(0).lstrip("/")] = (lambda n=name: archive.read(n))
    return entries


def _read_warwick(entries: dict, where: Path) -> dict:
    return {split.lower(): _read_warwick_split(entries, split, where) for split in ("Train", "Test")}


def _read_warwick_split(entries: dict, split: str, where: Path):
    ids = {"image": {}, "label": {}}
    for name in entries:
        match = _WARWICK_NAME.search(name)
        if match and match.group(1) == split:
            ids[match.group(2)][int(match.group(3))] = name
    if not ids["image"]:
        raise CorruptFileError(f"{where}: no {split}/image_NN.png files")
    problems = [f"{name} has no partner {name.replace(kind, other)}"
                for kind, other in (("image", "label"), ("label", "image"))
                for i, name in sorted(ids[kind].items()) if i not in ids[other]]
    if problems:
        raise CorruptFileError(f"{where}: unpaired files:\n  " + "\n  ".join(problems))

    images, masks = [], []
    for i in sorted(ids["image"]):
        image_name, label_name = ids["image"][i], ids["label"][i]
        image = _read_png(entries, image_name, where, "RGB")
        mask = _read_png(entries, label_name, where, "L")
        if image.shape[:2] != mask.shape:
            raise CorruptFileError(f"{where}: {image_name} is {_size(image)} but {label_name} "
                                   f"is {_size(mask)}")
        if images and image.shape != images[0].shape:
            raise CorruptFileError(f"{where}: {image_name} is {_size(image)} but "
                                   f"{ids['image'][min(ids['image'])]} is {_size(images[0])}; "
                                   f"all images must have one size")
        images.append(image)
        masks.append(mask)
    images = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    masks = (np.stack(masks) > 0)[:, None].astype(np.float32)
    return np.ascontiguousarray(images), masks


def _read_png(entries: dict, name: str, where: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError   # Pillow comes with matplotlib
    try:
        with Image.open(io.BytesIO(entries[name]())) as im:
            return np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise CorruptFileError(f"{where}: cannot read {name} as a PNG ({e})") from None


def _size(a: np.ndarray) -> str:
    return f"{a.shape[1]}x{a.shape[0]}"
