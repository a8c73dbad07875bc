"""Detection data: digit canvases, gland boxes, YOLO folders, box-aware augmentation."""
import numpy as np
import pytest
from PIL import Image

from tests.real_data import needs_mnist, needs_warwick
from tinygrad_uu.data import (DetectionAugment, DetectionSet, digit_canvases, gland_boxes,
                              make_digit_canvases, read_yolo_folder)
from tinygrad_uu.data.detection import components_to_boxes
from tinygrad_uu.data.download import CorruptFileError, DataNotFoundError
from tinygrad_uu.detection import box_iou


def fake_digits(n=50, seed=0):
    """Blobs standing in for MNIST digits: a filled rectangle of random size in 28x28."""
    rng = np.random.default_rng(seed)
    digits = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        h, w = rng.integers(8, 20, 2)
        y, x = rng.integers(2, 26 - h), rng.integers(2, 26 - w)
        digits[i, y:y + h, x:x + w] = rng.integers(100, 256)
    return digits, rng.integers(0, 10, n)


def check_canvases(data, sizes=(14, 40), max_iou=0.2, per_canvas=(1, 6)):
    for image, boxes, labels in zip(data.images, data.boxes, data.labels):
        assert per_canvas[0] <= len(boxes) <= per_canvas[1]
        assert labels.min() >= 0 and labels.max() <= 9
        iou = box_iou(boxes, boxes) - np.eye(len(boxes))
        assert iou.max() <= max_iou + 1e-6
        assert ((boxes[:, 2:] - boxes[:, :2]) <= sizes[1]).all()
        covered = np.zeros(image.shape[1:], bool)
        for x1, y1, x2, y2 in boxes.astype(int):
            # tight: every edge row and column of the box holds ink
            assert image[0, y1, x1:x2].any() or (image[0, y1:y2, x1:x2] > 0).any()
            covered[y1:y2, x1:x2] = True
        assert not image[0][~covered].any()              # no ink outside the boxes


def test_canvases_from_fake_digits_follow_the_recipe():
    digits, labels = fake_digits()
    data = make_digit_canvases(digits, labels, 30, seed=1)
    assert data.images.shape == (30, 1, 128, 128) and data.images.dtype == np.uint8
    check_canvases(data)
    # deterministic from the seed, different for another seed
    again = make_digit_canvases(digits, labels, 30, seed=1)
    assert np.array_equal(again.images, data.images)
    assert all(np.array_equal(a, b) for a, b in zip(again.boxes, data.boxes))
    assert not np.array_equal(make_digit_canvases(digits, labels, 30, seed=2).images, data.images)


def test_boxes_are_tight_around_the_pasted_digit():
    digits = np.zeros((1, 28, 28), np.uint8)
    digits[0, 10:18, 12:16] = 255                        # an 8x4 bar in the middle
    data = make_digit_canvases(digits, np.array([7]), 20, seed=0, per_canvas=(1, 1), sizes=(28, 28))
    for image, boxes in zip(data.images, data.boxes):
        x1, y1, x2, y2 = boxes[0].astype(int)
        ys, xs = np.nonzero(image[0])
        assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert (x2 - x1, y2 - y1) == (4, 8)
    assert all(lab.tolist() == [7] for lab in data.labels)


@needs_mnist
def test_digit_canvases_on_mnist_are_cached_under_their_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_UU_CACHE", str(tmp_path))
    train = digit_canvases("train", count=40, seed=3)
    test = digit_canvases("test", count=20, seed=3)
    check_canvases(train)
    check_canvases(test)
    files = sorted((tmp_path / "detection").glob("digits-*.npz"))
    assert len(files) == 2
    cached = digit_canvases("train", count=40, seed=3)
    assert np.array_equal(cached.images, train.images)
    assert all(np.array_equal(a, b) for a, b in zip(cached.labels, train.labels))
    other = digit_canvases("train", count=40, seed=4)     # another recipe, another file
    assert not np.array_equal(other.images, train.images)
    assert len(list((tmp_path / "detection").glob("digits-*.npz"))) == 3
    # a damaged cache file is rebuilt, with a warning, into the same set
    train_file = [f for f in files if "train" in f.name][0]
    train_file.write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="rebuilding the damaged cache"):
        rebuilt = digit_canvases("train", count=40, seed=3)
    assert np.array_equal(rebuilt.images, train.images)


def test_components_use_4_connectivity_and_a_minimum_area():
    mask = np.zeros((12, 12), np.uint8)
    mask[1:4, 1:4] = 1                                   # 9 px
    mask[4, 4] = 1                                       # touches the square only at a corner
    mask[6:11, 6:10] = 1                                 # 20 px
    boxes = components_to_boxes(mask, min_area=1)
    assert sorted(map(tuple, boxes.tolist())) == [(1, 1, 4, 4), (4, 4, 5, 5), (6, 6, 10, 11)]
    assert components_to_boxes(mask, min_area=9).tolist() == [[1, 1, 4, 4], [6, 6, 10, 11]]
    assert components_to_boxes(np.zeros((5, 5)), 1).shape == (0, 4)


@needs_warwick
def test_gland_boxes_match_scipy_components():
    from scipy import ndimage
    sets = gland_boxes(min_area=20)
    train, test = sets["train"], sets["test"]
    assert len(train) == 85 and len(test) == 60 and train.class_names == ("gland",)
    counts = [len(b) for b in train.boxes]
    assert np.mean(counts) == pytest.approx(8.7, abs=0.1)
    for mask, boxes in zip(train.masks[:10], train.boxes[:10]):
        labelled, n = ndimage.label(mask[0] > 0)
        areas = np.bincount(labelled.ravel())[1:]
        assert len(boxes) == (areas >= 20).sum()


def write_yolo(folder, rows_per_image, classes=None, size=(40, 30)):
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for name, rows in rows_per_image.items():
        Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(folder / "images" / f"{name}.png")
        if rows is not None:
            (folder / "labels" / f"{name}.txt").write_text("\n".join(rows) + "\n")
    if classes:
        (folder / "classes.txt").write_text("\n".join(classes) + "\n")


def test_yolo_folder_reads_boxes_in_pixels(tmp_path):
    write_yolo(tmp_path, {"a": ["0 0.5 0.5 0.5 0.5", "1 0.25 0.25 0.1 0.2"], "b": []},
               classes=["cat", "dog"])
    data = read_yolo_folder(tmp_path, image_size=None)
    assert data.class_names == ("cat", "dog") and data.images.shape == (2, 3, 30, 40)
    np.testing.assert_allclose(data.boxes[0], [[10, 7.5, 30, 22.5], [8, 4.5, 12, 10.5]])
    assert data.labels[0].tolist() == [0, 1] and len(data.boxes[1]) == 0   # an empty file
    resized = read_yolo_folder(tmp_path, image_size=64)
    np.testing.assert_allclose(resized.boxes[0][0], [16, 16, 48, 48])


@pytest.mark.parametrize("row, message", [
    ("0 0.5 0.5 0.5", "labels/a.txt, line 2: expected 5 values"),
    ("0 0.5 x 0.5 0.5", "labels/a.txt, line 2: not a number"),
    ("0 1.5 0.5 0.5 0.5", r"labels/a.txt, line 2: coordinates must be fractions in \[0, 1\]"),
    ("0 0.5 0.5 nan 0.5", r"labels/a.txt, line 2: coordinates must be fractions"),
    ("0 0.5 0.5 0 0.5", "labels/a.txt, line 2: zero width or height"),
    ("2 0.5 0.5 0.2 0.5", "labels/a.txt, line 2: class id 2 is not a valid class"),
    ("0.5 0.5 0.5 0.2 0.5", "labels/a.txt, line 2: class id 0.5"),
])
def test_yolo_folder_names_the_file_and_line_of_a_bad_row(tmp_path, row, message):
    write_yolo(tmp_path, {"a": ["1 0.5 0.5 0.5 0.5", row]}, classes=["cat", "dog"])
    with pytest.raises(CorruptFileError, match=message):
        read_yolo_folder(tmp_path)


def test_yolo_folder_missing_label_file(tmp_path):
    write_yolo(tmp_path, {"a": ["0 0.5 0.5 0.5 0.5"], "b": None})
    with pytest.raises(DataNotFoundError, match=r"b.png: no label file .*b.txt"):
        read_yolo_folder(tmp_path)
    with pytest.warns(UserWarning, match="1 images without a label file .* b.png"):
        data = read_yolo_folder(tmp_path, missing_labels="empty")
    assert [len(b) for b in data.boxes] == [1, 0]
    with pytest.raises(DataNotFoundError, match="no images/ folder"):
        read_yolo_folder(tmp_path / "nowhere")


def test_detection_set_rejects_bad_boxes_naming_the_image():
    images = np.zeros((2, 1, 16, 16), np.uint8)
    ok = [np.array([[1.0, 1, 5, 5]]), np.zeros((0, 4))]
    DetectionSet(images, ok, [np.array([0]), np.zeros(0, int)], ("a",), ["x.png", "y.png"])
    with pytest.raises(ValueError, match="y.png: box 0 .* zero or negative width"):
        DetectionSet(images, [ok[0], np.array([[5.0, 1, 5, 5]])], [np.array([0]), np.array([0])],
                     ("a",), ["x.png", "y.png"])
    with pytest.raises(ValueError, match="x.png: box 0 has a NaN"):
        DetectionSet(images, [np.array([[np.nan, 1, 5, 5]]), ok[1]], [np.array([0]), np.zeros(0, int)],
                     ("a",), ["x.png", "y.png"])
    with pytest.raises(ValueError, match="x.png: box 0 has class id 1, outside the 1 classes"):
        DetectionSet(images, ok, [np.array([1]), np.zeros(0, int)], ("a",), ["x.png", "y.png"])


def objects_image(rng, n_objects=4, size=64):
    """An image whose pixel values are object ids (1..n, 0 = background), and the boxes."""
    image = np.zeros((1, size, size), np.float32)
    boxes = []
    for k in range(1, n_objects + 1):
        h, w = rng.integers(3, 14, 2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        blob = rng.random((h, w)) < 0.7                  # a ragged object
        blob[0, :] = blob[-1, :] = blob[:, 0] = blob[:, -1] = False
        blob[h // 2, :] = blob[:, w // 2] = True         # touches all four sides of its box
        region = image[0, y:y + h, x:x + w]
        region[blob & (region == 0)] = k
        boxes.append([x, y, x + w, y + h])
    return image, np.array(boxes, np.float64), np.arange(n_objects)


@pytest.mark.parametrize("options", [
    {"flips": True}, {"rot90": True}, {"shift": 0.2}, {"scale": (0.6, 1.4)},
    {"flips": True, "rot90": True, "shift": 0.15, "scale": (0.7, 1.3)}])
def test_augmented_boxes_still_enclose_their_objects_pixels(options):
    rng = np.random.default_rng(0)
    augment = DetectionAugment(seed=1, **options)
    moved_any = False
    for _ in range(15):
        image, boxes, labels = objects_image(rng)
        out, new_boxes, new_labels = augment(image[None], [boxes], [labels])
        out, new_boxes, new_labels = out[0], new_boxes[0], new_labels[0]
        assert out.shape == image.shape
        for box, label in zip(new_boxes, new_labels):
            ys, xs = np.nonzero(out[0] == label + 1)
            if len(xs):
                x1, y1, x2, y2 = box
                assert x1 <= xs.min() and xs.max() + 1 <= x2 and y1 <= ys.min() and ys.max() + 1 <= y2
        # an object still visible keeps its box
        visible = set(np.unique(out[0]).astype(int)) - {0}
        assert visible <= set((new_labels + 1).tolist())
        moved_any |= not np.array_equal(out, image)
    assert moved_any


def test_flips_and_turns_keep_boxes_tight():
    rng = np.random.default_rng(3)
    augment = DetectionAugment(flips=True, rot90=True, seed=0)
    for _ in range(12):
        image = np.zeros((1, 32, 32), np.float32)
        h, w = rng.integers(2, 12, 2)
        y, x = rng.integers(0, 32 - h), rng.integers(0, 32 - w)
        image[0, y:y + h, x:x + w] = 1
        out, boxes, _ = augment(image[None], [np.array([[x, y, x + w, y + h]])], [np.array([0])])
        ys, xs = np.nonzero(out[0, 0])
        assert boxes[0].tolist() == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]


def test_augment_rejects_bad_options():
    with pytest.raises(ValueError, match="shift >= 0"):
        DetectionAugment(shift=-0.1)
    with pytest.raises(ValueError, match="scale"):
        DetectionAugment(scale=(1.2, 0.9))
