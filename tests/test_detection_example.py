"""examples/detection.py: the model, every output, empty images, the U-Net baseline
path and a YOLO folder, on small synthetic sets (seconds, not minutes)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import detection  # noqa: E402
import segmentation  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
from tests.real_data import needs_mnist  # noqa: E402
from tinygrad_uu import nn  # noqa: E402
from tinygrad_uu.data import DetectionSet  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
OUTPUTS = ("predictions.png", "pr_curve.png", "anchors.png", "curves.png", "model.npz",
           "model.onnx", "metrics.json")


def squares(n, seed, channels=1, size=32, classes=2, empty_every=4):
    """Bright squares (class 0) and dim squares (class 1) on black; every
    ``empty_every``-th image has no object at all."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, channels, size, size), np.uint8)
    boxes, labels = [], []
    for i in range(n):
        b, lab = [], []
        for _ in range(0 if i % empty_every == empty_every - 1 else rng.integers(1, 3)):
            s = int(rng.integers(6, 12))
            x, y = rng.integers(0, size - s, 2)
            c = int(rng.integers(classes))
            images[i, :, y:y + s, x:x + s] = 250 if c == 0 else 120
            b.append([x, y, x + s, y + s])
            lab.append(c)
        boxes.append(np.array(b, np.float32).reshape(-1, 4))
        labels.append(np.array(lab, np.int64))
    return DetectionSet(images, boxes, labels, tuple("ab"[:classes]))


@pytest.fixture
def synthetic(monkeypatch):
    sets = {}

    def load(name, root=None, data_dir=None, train_count=None, test_count=None, seed=0):
        channels = 3 if name == "glands" else 1
        classes = 1 if name == "glands" else 2
        sets["train"], sets["test"] = (squares(24, 0, channels, classes=classes),
                                       squares(8, 1, channels, classes=classes))
        return sets["train"], sets["test"]
    monkeypatch.setattr(detection, "load_detection_data", load)
    return sets


def run(tmp_path, *options):
    return detection.main(["--out", str(tmp_path), "--epochs", "2", "--batch-size", "8",
                           "--warmup", "2", "--width", "4", *options])


def check_outputs(out: Path, result: dict) -> dict:
    for name in OUTPUTS:
        assert (out / name).exists(), name
    for png in OUTPUTS[:4]:
        assert (out / png).read_bytes()[:8] == PNG
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("test_ap50", "test_ap50_95", "per_class_ap50", "train_seconds"):
        assert key in saved, key
    assert 0 <= saved["test_ap50_95"] <= saved["test_ap50"] <= 1
    assert saved["test_ap50"] == pytest.approx(result["test_ap50"])
    c = saved["config"]
    assert len(saved["curves"]["test_ap50"]) == c["epochs"] + (c["prime_epochs"] if c["prime"] else 0)
    return saved


def test_build_model_shapes_and_parameters():
    tg.manual_seed(0)
    model = detection.build_model(num_classes=10, in_channels=1)
    out8, out16 = model(tg.tensor(np.zeros((2, 1, 128, 128), np.float32)))
    assert out8.shape == (2, 45, 16, 16) and out16.shape == (2, 45, 8, 8)
    (single,) = detection.build_model(3, 3, strides=(16,))(tg.tensor(np.zeros((1, 3, 64, 64), np.float32)))
    assert single.shape == (1, 3 * 8, 4, 4)
    with pytest.raises(ValueError, match="divisible by 16"):
        model(tg.tensor(np.zeros((1, 1, 40, 40), np.float32)))
    with pytest.raises(ValueError, match="strides must be"):
        detection.build_model(10, 1, strides=(4,))


def test_example_trains_and_writes_every_output(tmp_path, synthetic):
    result = run(tmp_path, "--conf", "0.1")
    saved = check_outputs(tmp_path, result)
    assert set(saved["per_class_ap50"]) == {"a", "b"}
    assert saved["baseline_segmentation"] is None
    assert saved["curves"]["train_loss"][-1] < saved["curves"]["train_loss"][0]
    # the saved model loads back and gives the same detections
    model = detection.build_model(2, 1, [np.array(a) for a in saved["anchors"]], (8, 16), 4)
    nn.load(model, tmp_path / "model.npz")
    found = detection.detect(model, synthetic["test"])
    assert len(found) == 8


def test_one_head_no_augmentation_constant_schedule(tmp_path, synthetic):
    result = run(tmp_path, "--strides", "16", "--no-augment", "--schedule", "constant",
                 "--ignore-iou", "0.5", "--match-iou", "none", "--box-weight", "2")
    saved = check_outputs(tmp_path, result)
    assert saved["strides"] == [16] and len(saved["anchors"]) == 1
    assert saved["curves"]["lr"][-1] == pytest.approx(3e-3)
    assert saved["config"]["match_iou"] is None


def test_priming_compares_with_an_unprimed_copy(tmp_path, synthetic):
    saved = check_outputs(tmp_path, run(tmp_path, "--prime", "8", "--prime-epochs", "1"))
    assert saved["priming"]["images"] == 8
    assert set(saved["priming"]["seconds_to_target"]) == {"with_priming", "without_priming"}
    assert saved["curves"]["phase"][0] == "prime 8"


def test_segmentation_baseline_from_a_saved_unet(tmp_path, synthetic):
    tg.manual_seed(0)
    unet = segmentation.UNet(3, width=4, depth=2)
    nn.save(unet, tmp_path / "unet.npz")
    out = tmp_path / "run"
    saved = check_outputs(out, run(out, "--data", "glands", "--baseline-from",
                                   str(tmp_path / "unet.npz")))
    baseline = saved["baseline_segmentation"]
    assert baseline["model"].endswith("unet.npz")
    for key in ("test_ap50", "test_ap50_95"):
        assert baseline[key] is None or 0 <= baseline[key] <= 1


def test_baseline_boxes_are_the_unets_components(tmp_path):
    """A U-Net that predicts exactly the ground-truth masks gives AP 1 (monkeypatched)."""
    test = squares(4, 2, channels=3, classes=1, empty_every=10)
    masks = np.zeros((4, 1, 32, 32), np.float32)
    for i, boxes in enumerate(test.boxes):
        for x1, y1, x2, y2 in boxes.astype(int):
            masks[i, 0, y1:y2, x1:x2] = 0.9
    original = segmentation.predict
    try:
        segmentation.predict = lambda model, images, batch_size=8: masks
        tg.manual_seed(0)
        path = tmp_path / "unet.npz"
        nn.save(segmentation.UNet(3, width=4, depth=2), path)
        scores = detection.segmentation_baseline(path, test, min_area=1)
    finally:
        segmentation.predict = original
    touching = any(len(b) > 1 for b in test.boxes)      # squares may touch and merge
    assert scores["ap50"] == pytest.approx(1.0) or touching


def test_bad_options_are_refused(tmp_path, synthetic):
    with pytest.raises(SystemExit):
        detection.main(["--out", str(tmp_path), "--strides", "8"])
    with pytest.raises(SystemExit):
        detection.main(["--out", str(tmp_path), "--data", "yolo"])
    with pytest.raises(SystemExit):
        detection.main(["--out", str(tmp_path), "--baseline-from", "x.npz"])
    with pytest.raises(SystemExit, match="no such file"):
        detection.main(["--out", str(tmp_path), "--data", "glands", "--baseline-from",
                        str(tmp_path / "missing.npz")])
    assert not (tmp_path / "metrics.json").exists()


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        detection.parse_args(["--help"])
    text = capsys.readouterr().out
    for option in ("--data", "--strides", "--prime", "--baseline-from", "--conf", "--iou",
                   "--threads", "--schedule"):
        assert option in text


def test_a_yolo_folder_end_to_end(tmp_path):
    data = squares(20, 3, channels=3)
    folder = tmp_path / "set"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "classes.txt").write_text("bright\ndim\n")
    for i, (image, boxes, labels) in enumerate(zip(data.images, data.boxes, data.labels)):
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / "images" / f"{i:03d}.png")
        cxcywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1) / 32
        rows = [f"{c} " + " ".join(f"{v:.6f}" for v in r) for c, r in zip(labels, cxcywh)]
        (folder / "labels" / f"{i:03d}.txt").write_text("\n".join(rows))
    out = tmp_path / "run"
    saved = check_outputs(out, detection.main(["--data", "yolo", "--data-dir", str(folder),
                                               "--out", str(out), "--epochs", "1",
                                               "--batch-size", "8", "--width", "4"]))
    assert saved["train_images"] == 16 and saved["test_images"] == 4
    assert set(saved["per_class_ap50"]) == {"bright", "dim"}


@pytest.mark.slow
@needs_mnist
def test_digits_quick_run_learns(tmp_path):
    """A short run on real digit canvases (800 canvases, 3 epochs): AP50 well above chance."""
    saved = detection.main(["--out", str(tmp_path), "--train-count", "800", "--test-count",
                            "100", "--epochs", "3", "--warmup", "10", "--threads", "1"])
    assert saved["test_ap50"] > 0.05
    assert saved["curves"]["test_ap50"][-1] > saved["curves"]["test_ap50"][0]
