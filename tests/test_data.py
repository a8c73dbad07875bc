"""Data sets, DataLoader and transforms, on small fake data made here.

Tests on the real data run only when TINYGRAD_UU_DATA points at a folder that has it.
No network: downloads go to a loopback server, everything else is refused.
"""
import functools
import gzip
import hashlib
import http.server
import os
import socket
import struct
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinygrad_uu.data import (CorruptFileError, DataLoader, DataNotFoundError, Dataset,
                              DigitAugment, SegmentationAugment, TensorDataset, auto_mpg,
                              mnist, random_crop, random_flip, random_rot90, random_rotation,
                              random_shift, read_idx, warwick)
from tinygrad_uu.data import datasets


@pytest.fixture
def offline(monkeypatch):
    """Mirrors that refuse every connection (a closed port on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(datasets, "MNIST_MIRRORS", (f"http://127.0.0.1:{port}/",))
    monkeypatch.setattr(datasets, "AUTO_MPG_URL", f"http://127.0.0.1:{port}/auto-mpg.data")


# ----------------------------------------------------------------------------- IDX / MNIST

def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_mnist(n=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def write_mnist(folder: Path, split="train", gz=False, n=7):
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = fake_mnist(n)
    paths = []
    for name, array in zip(datasets.MNIST_FILES[split], (images, labels)):
        data = idx_bytes(array)
        path = folder / (name if gz else name[:-3])
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    return images, labels, paths


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    images, _ = fake_mnist()
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(idx_bytes(images)) if gz else idx_bytes(images))
    out = read_idx(path, datasets.IDX_IMAGES)
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, images)


def test_read_idx_other_types(tmp_path):
    values = (np.arange(6).reshape(2, 3) - 3).astype(">i4")
    (tmp_path / "ints").write_bytes(struct.pack(">BBBBII", 0, 0, 0x0C, 2, 2, 3) + values.tobytes())
    out = read_idx(tmp_path / "ints")
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


def test_read_idx_bad_magic(tmp_path):
    _, labels = fake_mnist()
    (tmp_path / "labels").write_bytes(idx_bytes(labels))
    with pytest.raises(CorruptFileError, match=r"labels: magic number 0x00000801, expected 0x00000803"):
        read_idx(tmp_path / "labels", datasets.IDX_IMAGES)
    (tmp_path / "junk").write_bytes(b"<html>not found</html>")
    with pytest.raises(CorruptFileError, match="junk: not an IDX file"):
        read_idx(tmp_path / "junk")


@pytest.mark.parametrize("cut", [2, 10, 500])
def test_read_idx_truncated(tmp_path, cut):
    images, _ = fake_mnist()
    data = idx_bytes(images)
    (tmp_path / "short").write_bytes(data[:cut])
    with pytest.raises(CorruptFileError, match="short: .*(truncated|too short)"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(data + b"\0")
    with pytest.raises(CorruptFileError, match="long: too long"):
        read_idx(tmp_path / "long")
    (tmp_path / "short.gz").write_bytes(gzip.compress(data)[:-cut])
    with pytest.raises(CorruptFileError, match="short.gz: broken gzip"):
        read_idx(tmp_path / "short.gz")


def test_mnist_reads_uncompressed_files(tmp_path, offline):
    images, labels, _ = write_mnist(tmp_path / "mnist", "test")
    x, y = mnist("test", root=tmp_path)
    assert x.shape == (7, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_mnist_bad_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        mnist("validation")


def test_mnist_count_mismatch_names_both_files(tmp_path, offline):
    _, _, (image_path, label_path) = write_mnist(tmp_path / "mnist")
    label_path.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(CorruptFileError, match="7 images .* 3 labels") as info:
        mnist(root=tmp_path)
    assert str(image_path) in str(info.value) and str(label_path) in str(info.value)


def test_mnist_corrupt_copy_is_set_aside_then_refetched(tmp_path, offline):
    _, _, (image_path, _) = write_mnist(tmp_path / "mnist")
    image_path.write_bytes(image_path.read_bytes()[:-100])
    with pytest.raises(CorruptFileError, match="(?s)truncated.*moved aside"):
        mnist(root=tmp_path)
    assert not image_path.exists() and image_path.with_name(image_path.name + ".corrupt").exists()
    with pytest.raises(DataNotFoundError, match="train-images-idx3-ubyte.gz"):
        mnist(root=tmp_path)                      # not trusted again: it wants a fresh copy


def test_mnist_downloads_gz_from_second_mirror(tmp_path, monkeypatch):
    served = tmp_path / "served"
    images, labels, paths = write_mnist(served, "train", gz=True, n=5)
    monkeypatch.setattr(datasets, "MNIST_SHA256", {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths})
    with loopback_server(served) as url:
        monkeypatch.setattr(datasets, "MNIST_MIRRORS", (f"{url}/nothing-here/", f"{url}/"))
        x, y = mnist("train", root=tmp_path / "root")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert sorted(os.listdir(tmp_path / "root" / "mnist")) == sorted(p.name for p in paths)


class loopback_server:
    def __init__(self, folder):
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# ----------------------------------------------------------------------------- Auto MPG

FAKE_AUTO_MPG = (
    '18.0   8   307.0      130.0      3504.      12.0   70  1\t"chevrolet chevelle malibu"\n'
    '25.0   4   98.00      ?          2046.      19.0   71  1\t"ford pinto"\n'
    '15.0   8   350.0      165.0      3693.      11.5   70  1\t"buick skylark 320"\n'
    '40.9   4   85.00      ?          1835.      17.3   80  2\t"renault lecar deluxe"\n'
    '\n'
)


def test_auto_mpg_drops_unknown_rows_and_says_so(tmp_path, monkeypatch, offline):
    path = tmp_path / "auto-mpg" / "auto-mpg.data"
    path.parent.mkdir()
    path.write_text(FAKE_AUTO_MPG)
    monkeypatch.setattr(datasets, "AUTO_MPG_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.warns(UserWarning, match=r"dropped 2 of 4 rows .*'\?'.* horsepower"):
        data = auto_mpg(root=tmp_path)
    assert data.dropped_rows == 2
    assert data.dropped_car_names == ("ford pinto", "renault lecar deluxe")
    assert data.car_names == ("chevrolet chevelle malibu", "buick skylark 320")
    assert data.feature_names == ("mpg", "cylinders", "displacement", "weight",
                                  "acceleration", "model_year", "origin")
    assert data.features.shape == (2, 7) and data.features.dtype == np.float64
    np.testing.assert_array_equal(data.target, [130.0, 165.0])
    np.testing.assert_array_equal(data.features[1], [15.0, 8, 350.0, 3693.0, 11.5, 70, 1])
    assert "2 cars" in repr(data)


def test_auto_mpg_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "auto-mpg.data"
    path.write_text(FAKE_AUTO_MPG.replace("3693.", ""))
    with pytest.raises(CorruptFileError, match=r"auto-mpg.data, line 3: expected 8 numbers"):
        datasets.read_auto_mpg(path)


def test_auto_mpg_wrong_copy_is_not_used(tmp_path, offline):
    path = tmp_path / "auto-mpg" / "auto-mpg.data"
    path.parent.mkdir()
    path.write_text(FAKE_AUTO_MPG)                   # not the real checksum
    with pytest.warns(UserWarning, match="wrong checksum"), \
            pytest.raises(DataNotFoundError, match="auto-mpg.data"):
        auto_mpg(root=tmp_path)
    assert (path.parent / "auto-mpg.data.corrupt").exists()


# ----------------------------------------------------------------------------- WARWICK

def write_warwick(folder: Path, n_train=3, n_test=2, size=8):
    """Tiny fake WARWICK: the mask is 'red channel > 127', so alignment is checkable."""
    rng = np.random.default_rng(0)
    for split, n in (("Train", n_train), ("Test", n_test)):
        (folder / split).mkdir(parents=True)
        for i in range(1, n + 1):
            rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            rgb[..., 2] = 0
            Image.fromarray(rgb).save(folder / split / f"image_{i:02d}.png")
            Image.fromarray(np.where(rgb[..., 0] > 127, 255, 0).astype(np.uint8)).save(
                folder / split / f"label_{i:02d}.png")


def check_fake_warwick(data):
    assert set(data) == {"train", "test"}
    for split, n in (("train", 3), ("test", 2)):
        images, masks = data[split]
        assert images.shape == (n, 3, 8, 8) and images.dtype == np.float32
        assert masks.shape == (n, 1, 8, 8) and masks.dtype == np.float32
        assert images.min() >= 0 and images.max() <= 1 and set(np.unique(masks)) <= {0.0, 1.0}
        np.testing.assert_array_equal(masks[:, 0], images[:, 0] > 127 / 255)


def test_warwick_folder_and_zip(tmp_path):
    write_warwick(tmp_path / "data" / "warwick")
    from_folder = warwick(root=tmp_path / "data")
    check_fake_warwick(from_folder)
    with zipfile.ZipFile(tmp_path / "warwick.zip", "w") as z:   # a zip of the folder
        for p in sorted((tmp_path / "data").rglob("*.png")):
            z.write(p, p.relative_to(tmp_path / "data").as_posix())
    for root in (tmp_path, tmp_path / "warwick.zip"):           # <root>/warwick.zip, or the zip
        from_zip = warwick(root=root)
        for split in ("train", "test"):
            for a, b in zip(from_zip[split], from_folder[split]):
                np.testing.assert_array_equal(a, b)
    check_fake_warwick(warwick(root=tmp_path / "data" / "warwick"))  # the folder itself


def test_warwick_missing_partner(tmp_path):
    write_warwick(tmp_path / "warwick")
    os.remove(tmp_path / "warwick" / "Train" / "label_02.png")
    with pytest.raises(CorruptFileError, match=r"Train/image_02.png has no partner Train/label_02.png"):
        warwick(root=tmp_path)


def test_warwick_size_mismatch(tmp_path):
    write_warwick(tmp_path / "warwick")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "warwick" / "Test" / "label_01.png")
    with pytest.raises(CorruptFileError, match=r"Test/image_01.png is 8x8 but Test/label_01.png is 8x6"):
        warwick(root=tmp_path)


def test_warwick_not_found_says_where_it_looked(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        warwick(root=tmp_path)
    message = str(info.value)
    for place in (tmp_path / "warwick", tmp_path / "warwick.zip"):
        assert str(place) in message
    assert "TINYGRAD_UU_DATA" in message


# ----------------------------------------------------------------------------- loader

def test_tensor_dataset_lengths_must_match():
    with pytest.raises(ValueError, match=r"lengths \[3, 4\]"):
        TensorDataset(np.zeros((3, 2)), np.zeros(4))
    ds = TensorDataset(np.arange(6).reshape(3, 2), np.array([7, 8, 9]))
    assert len(ds) == 3
    x, y = ds[1]
    np.testing.assert_array_equal(x, [2, 3])
    assert y == 8


@pytest.mark.parametrize("n,batch,drop_last,expected", [(10, 3, False, 4), (10, 3, True, 3),
                                                        (9, 3, False, 3), (2, 5, True, 0)])
def test_loader_len_and_batches(n, batch, drop_last, expected):
    loader = DataLoader(TensorDataset(np.arange(n), np.arange(n) * 10), batch_size=batch,
                        drop_last=drop_last)
    batches = list(loader)
    assert len(loader) == len(batches) == expected
    seen = np.concatenate([x for x, _ in batches]) if batches else np.array([])
    np.testing.assert_array_equal(seen, np.arange(len(seen)))
    assert all(np.array_equal(y, x * 10) for x, y in batches)


def test_loader_shuffle_is_seeded_and_new_each_epoch():
    ds = TensorDataset(np.arange(100))

    def epochs(loader, k=2):
        return [np.concatenate([b[0] for b in loader]) for _ in range(k)]
    a = epochs(DataLoader(ds, batch_size=16, shuffle=True, seed=1))
    b = epochs(DataLoader(ds, batch_size=16, shuffle=True, generator=np.random.default_rng(1)))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(np.sort(x), np.arange(100))
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], np.arange(100))


def test_loader_fast_path_does_not_index_items():
    class Counting(TensorDataset):
        calls = 0

        def __getitem__(self, i):
            Counting.calls += 1
            return super().__getitem__(i)
    list(DataLoader(Counting(np.zeros((50, 3))), batch_size=8))
    assert Counting.calls == 0


def test_loader_generic_dataset_and_transform():
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((2, 2), i), i * i
    batches = list(DataLoader(Squares(), batch_size=2, transform=lambda x, y: (x + 1, y)))
    x, y = batches[0]
    assert x.shape == (2, 2, 2) and y.tolist() == [0, 1] and x[1, 0, 0] == 2
    assert len(batches) == 3 and batches[-1][0].shape == (1, 2, 2)

    class Plain(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return np.ones(4) * i
    assert next(iter(DataLoader(Plain(), batch_size=3))).shape == (3, 4)


def test_loader_argument_errors():
    ds = TensorDataset(np.zeros(4))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="seed or generator"):
        DataLoader(ds, seed=0, generator=np.random.default_rng())
    with pytest.raises(NotImplementedError, match="__len__"):
        len(Dataset())


# ----------------------------------------------------------------------------- transforms

def test_random_shift_moves_by_at_most_max_shift():
    images = np.zeros((200, 1, 28, 28), np.uint8)
    images[:, 0, 14, 10] = 255
    out = random_shift(images, max_shift=3, rng=0)
    assert out.shape == images.shape and out.dtype == np.uint8
    n, _, ys, xs = np.nonzero(out)
    np.testing.assert_array_equal(n, np.arange(200))          # one pixel each, none lost
    assert np.abs(ys - 14).max() == 3 and np.abs(xs - 10).max() == 3
    assert len(set(zip(ys, xs))) > 30                         # every example gets its own shift
    np.testing.assert_array_equal(random_shift(images[:, 0], 0, rng=0), images[:, 0])
    np.testing.assert_array_equal(random_shift(images, 3, rng=5), random_shift(images, 3, rng=5))


def test_random_rotation_turns_about_the_centre():
    y, x = np.mgrid[0:29, 0:29]
    blob = np.exp(-((y - 14) ** 2 + (x - 24) ** 2) / (2 * 1.5 ** 2))   # 10 px right of centre
    images = np.repeat(blob[None], 50, axis=0).astype(np.float32)
    out = random_rotation(images, max_degrees=30, rng=0)
    assert out.shape == images.shape and out.dtype == np.float32
    mass = out.sum(axis=(1, 2))
    np.testing.assert_allclose(mass, blob.sum(), rtol=1e-2)          # nothing falls off
    cy, cx = (out * y).sum(axis=(1, 2)) / mass, (out * x).sum(axis=(1, 2)) / mass
    np.testing.assert_allclose(np.hypot(cy - 14, cx - 14), 10, atol=0.05)
    angle = np.abs(np.degrees(np.arctan2(cy - 14, cx - 14)))
    assert angle.max() <= 30.1 and angle.max() > 15                   # it does rotate, within range
    digits = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(random_rotation(digits, 0, rng=0), digits)


def test_digit_augment_in_a_loader():
    x, y = fake_mnist(20)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, transform=DigitAugment(seed=0))
    xb, yb = next(iter(loader))
    assert xb.shape == (8, 28, 28) and xb.dtype == np.uint8
    np.testing.assert_array_equal(yb, y[:8])


@pytest.mark.parametrize("mask_shape", ["NHW", "N1HW"])
def test_segmentation_transforms_keep_image_and_mask_aligned(mask_shape):
    images = np.random.default_rng(0).random((64, 3, 12, 12)).astype(np.float32)
    masks = (images[:, 0] > 0.5).astype(np.float32)
    if mask_shape == "N1HW":
        masks = masks[:, None]
    augment = SegmentationAugment(crop=(8, 10), seed=0)
    out_images, out_masks = augment(images, masks)
    assert out_images.shape == (64, 3, 8, 10) and out_masks.shape[-2:] == (8, 10)
    assert out_masks.shape[:-2] == masks.shape[:-2]
    np.testing.assert_array_equal(out_masks.reshape(64, 8, 10), out_images[:, 0] > 0.5)
    for op in (random_flip, random_rot90):
        a, b = op(images, masks, rng=1)
        np.testing.assert_array_equal(b.reshape(64, 12, 12), a[:, 0] > 0.5)
        changed = (a != images).any(axis=(1, 2, 3))
        assert 0 < changed.sum() < 64                         # some examples change, some don't
    a, b = random_crop(images, masks, 5, rng=2)
    np.testing.assert_array_equal(b.reshape(64, 5, 5), a[:, 0] > 0.5)


def test_segmentation_transform_errors():
    images, masks = np.zeros((2, 3, 8, 6)), np.zeros((2, 8, 6))
    with pytest.raises(ValueError, match="square"):
        random_rot90(images, masks)
    with pytest.raises(ValueError, match="does not fit"):
        random_crop(images, masks, 7)
    with pytest.raises(ValueError, match="same N, H and W"):
        random_flip(images, masks[:, :4])


# ----------------------------------------------------------------------------- the real data

REAL = Path(os.environ.get("TINYGRAD_UU_DATA", "/nonexistent"))
needs = functools.partial(pytest.mark.skipif, reason="set TINYGRAD_UU_DATA to a folder with "
                          "the course data to run the real-data tests")


@needs(not all((REAL / "mnist" / name).exists() for pair in datasets.MNIST_FILES.values()
               for name in pair))
def test_real_mnist(offline):
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = mnist(split)
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8 and y.shape == (n,)
        assert x.max() == 255 and set(np.unique(y)) == set(range(10))


@needs(not (REAL / "auto-mpg" / "auto-mpg.data").exists())
def test_real_auto_mpg(offline):
    with pytest.warns(UserWarning, match="dropped 6 of 398"):
        data = auto_mpg()
    assert data.features.shape == (392, 7) and data.target.shape == (392,)
    assert len(data.car_names) == 392 and data.dropped_rows == 6
    assert 40 <= data.target.min() and data.target.max() <= 250


@needs(not (REAL / "warwick" / "Train").is_dir())
def test_real_warwick():
    data = warwick()
    for split, n in (("train", 85), ("test", 60)):
        images, masks = data[split]
        assert images.shape == (n, 3, 128, 128) and masks.shape == (n, 1, 128, 128)
        assert 0 <= images.min() and images.max() <= 1 and images[:, 2].max() == 0
        assert set(np.unique(masks)) == {0.0, 1.0} and 0.3 < masks.mean() < 0.7
