"""tinygrad_uu.data.patches: the label rule, the split by image, the PCam folder reader
(on a small folder written here) and the augmentations."""
import numpy as np
import pytest
from PIL import Image

from tinygrad_uu.data import (CorruptFileError, DataNotFoundError, PatchAugment, colour_jitter,
                              cut_patches, dihedral, pcam_kaggle, random_dihedral,
                              read_pcam_folder, to_float, warwick_patches)

from .real_data import needs_warwick


def test_label_rule_is_more_than_half_of_the_centre():
    images = np.zeros((1, 3, 16, 16), np.float32)
    mask = np.zeros((1, 1, 16, 16), np.float32)
    # patch 8, centre 4: the centre of the patch at (0, 0) is rows/cols 2..5 (16 pixels)
    mask[0, 0, 2:6, 2:4] = 1                       # 8 of 16: exactly half -> negative
    s = cut_patches(images, mask, patch_size=8, stride=8, center=4)
    assert len(s) == 4 and s.labels[0] == 0
    mask[0, 0, 2, 4] = 1                           # 9 of 16 -> positive
    s = cut_patches(images, mask, patch_size=8, stride=8, center=4)
    assert s.labels.tolist() == [1, 0, 0, 0]
    mask[0, 0, 8:16, 8:16] = 1                     # gland outside the centre does not count
    mask[0, 0, 10:14, 10:14] = 0
    s = cut_patches(images, mask, patch_size=8, stride=8, center=4)
    assert s.labels.tolist() == [1, 0, 0, 0]
    assert s.ids[3] == "img_00_y008_x008" and s.groups.tolist() == [0, 0, 0, 0]


def test_patches_are_the_image_pixels_on_the_grid():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 20, 20)).astype(np.uint8)
    masks = np.zeros((2, 1, 20, 20))
    s = cut_patches(images, masks, patch_size=8, stride=4, center=2, image_ids=[5, 9])
    assert len(s) == 2 * 4 * 4 and s.images.dtype == np.uint8
    np.testing.assert_array_equal(s.images[1 * 16 + 2 * 4 + 3], images[1, :, 8:16, 12:20])
    assert s.ids[16 + 2 * 4 + 3] == "img_09_y008_x012"
    floats = cut_patches(images / np.float32(255), masks, patch_size=8, stride=4, center=2)
    np.testing.assert_array_equal(floats.images, s.images)   # [0, 1] floats back to bytes


def test_cut_patches_rejects_bad_sizes():
    with pytest.raises(ValueError, match="center"):
        cut_patches(np.zeros((1, 3, 8, 8)), np.zeros((1, 1, 8, 8)), patch_size=16)
    with pytest.raises(ValueError, match="same size"):
        cut_patches(np.zeros((1, 3, 8, 8)), np.zeros((1, 1, 6, 8)))


@needs_warwick
def test_warwick_patches_split_by_image_and_balance():
    splits = warwick_patches(val_images=15, seed=0)
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert set(train.groups).isdisjoint(val.groups)               # no image on both sides
    assert len(set(train.groups)) == 70 and len(set(val.groups)) == 15
    assert len(set(test.groups)) == 60 and len(test) == 60 * 169
    assert all(i.startswith("test_") for i in test.ids) and len(set(test.ids)) == len(test)
    for s in splits.values():
        b = s.balance()
        assert 0.3 < b["positive_fraction"] < 0.7                  # WARWICK is about half gland
        assert b["positives"] == int(s.labels.sum())
    other = warwick_patches(val_images=15, seed=1)
    assert set(other["val"].groups) != set(val.groups)


# ----------------------------------------------------------------------------- PCam folder

def write_pcam(folder, n_train=5, n_test=3, size=96):
    rng = np.random.default_rng(0)
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    rows = ["id,label"]
    pixels = {}
    for i in range(n_train):
        key = f"{i:040x}"
        pixels[key] = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
        Image.fromarray(pixels[key]).save(folder / "train" / f"{key}.tif")
        rows.append(f"{key},{i % 2}")
    (folder / "train_labels.csv").write_text("\n".join(rows) + "\n")
    for i in range(n_test):
        Image.fromarray(rng.integers(0, 256, (size, size, 3)).astype(np.uint8)).save(
            folder / "test" / f"t{i:039x}.tif")
    return pixels


def test_pcam_folder_reads_images_labels_and_test(tmp_path):
    pixels = write_pcam(tmp_path)
    train = read_pcam_folder(tmp_path, "train")
    assert train.images.shape == (5, 3, 96, 96) and train.labels.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(train.images[3], pixels[train.ids[3]].transpose(2, 0, 1))
    test = read_pcam_folder(tmp_path, "test")
    assert len(test) == 3 and (test.labels == -1).all() and not test.has_labels
    splits = pcam_kaggle(tmp_path, val_fraction=0.4)
    assert len(splits["train"]) == 3 and len(splits["val"]) == 2
    assert set(splits["train"].ids).isdisjoint(splits["val"].ids)
    assert len(read_pcam_folder(tmp_path, "train", limit=2)) == 2


def test_pcam_label_row_without_image_names_the_file(tmp_path):
    write_pcam(tmp_path)
    missing = next((tmp_path / "train").glob("*.tif"))
    missing.unlink()
    with pytest.raises(CorruptFileError, match=f"{missing.name} is missing"):
        read_pcam_folder(tmp_path, "train")


def test_pcam_image_without_label_row_names_the_file(tmp_path):
    write_pcam(tmp_path)
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(tmp_path / "train" / "extra.tif")
    with pytest.raises(CorruptFileError, match="extra.tif has no row in .*train_labels.csv"):
        read_pcam_folder(tmp_path, "train")


def test_pcam_wrongly_sized_or_broken_image_names_the_file(tmp_path):
    write_pcam(tmp_path)
    victim = sorted((tmp_path / "test").glob("*.tif"))[1]
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(victim)
    with pytest.raises(CorruptFileError, match=f"{victim.name}: the image is 96x64, "
                                               f"expected 96x96"):
        read_pcam_folder(tmp_path, "test")
    victim.write_bytes(b"not a tiff")
    with pytest.raises(CorruptFileError, match=f"{victim.name}: cannot read it as a TIFF"):
        read_pcam_folder(tmp_path, "test")


def test_pcam_bad_csv_names_the_line(tmp_path):
    write_pcam(tmp_path)
    csv = tmp_path / "train_labels.csv"
    csv.write_text(csv.read_text().replace(",1\n", ",yes\n", 1))
    with pytest.raises(CorruptFileError,
                       match=r"train_labels.csv, line 3: expected '<id>,<0 or 1>'"):
        read_pcam_folder(tmp_path, "train")
    csv.write_text("name,target\n")
    with pytest.raises(CorruptFileError, match="line 1: expected the header 'id,label'"):
        read_pcam_folder(tmp_path, "train")


def test_pcam_missing_folder(tmp_path):
    with pytest.raises(DataNotFoundError, match="no such folder"):
        read_pcam_folder(tmp_path, "train")


# ----------------------------------------------------------------------------- augmentation

def test_dihedral_gives_the_8_distinct_symmetries():
    x = np.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    outs = [dihedral(x, k) for k in range(8)]
    assert len({o.tobytes() for o in outs}) == 8
    np.testing.assert_array_equal(outs[1], np.rot90(x, 1, axes=(-2, -1)))
    np.testing.assert_array_equal(outs[4], x[..., ::-1])
    for k in range(8):                                        # each has an inverse among them
        assert any(np.array_equal(dihedral(outs[k], j), x) for j in range(8))
    with pytest.raises(ValueError, match="0..7"):
        dihedral(x, 8)


def test_random_dihedral_maps_each_image_to_one_of_its_symmetries():
    x = np.random.default_rng(0).random((16, 3, 5, 5)).astype(np.float32)
    y = random_dihedral(x, rng=1)
    for a, b in zip(x, y):
        assert any(np.array_equal(dihedral(a, k), b) for k in range(8))
    assert not np.array_equal(x, y)


def test_colour_jitter_stays_in_range_and_keeps_an_empty_channel_empty():
    x = np.random.default_rng(0).random((8, 3, 6, 6)).astype(np.float32)
    x[:, 2] = 0                                               # WARWICK's blue channel
    y = colour_jitter(x, rng=0)
    assert y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1
    assert not np.allclose(x[:, :2], y[:, :2])
    # per image: one gain and offset per channel, so each channel stays an affine map of x
    # before the clip and the saturation mix; with saturation 0 and no clipping, exactly:
    z = colour_jitter(x * 0.5 + 0.25, rng=0, saturation=0.0, shift=0.05, scale=0.1)
    for i in range(8):
        a, b = np.polyfit((x[i, 0] * 0.5 + 0.25).ravel(), z[i, 0].ravel(), 1)
        assert 0.9 < a < 1.11 and abs(b) <= 0.05 + 1e-6
    np.testing.assert_array_equal(y[:, 2], 0)


def test_patch_augment_turns_bytes_into_jittered_floats():
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8)).astype(np.uint8)
    labels = np.array([0, 1, 1, 0])
    images, out_labels = PatchAugment(seed=0)(x, labels)
    assert images.dtype == np.float32 and images.shape == x.shape
    assert out_labels is labels
    plain, _ = PatchAugment(dihedral=False, jitter=False)(x, labels)
    np.testing.assert_array_equal(plain, to_float(x))
