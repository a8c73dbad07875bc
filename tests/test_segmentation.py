"""examples/segmentation.py: the U-Net, the options, every output, learning on synthetic
discs, priming, and a quick run on the real WARWICK images."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import segmentation  # noqa: E402

import tinygrad_uu as tg  # noqa: E402
from tests.real_data import needs_warwick  # noqa: E402
from tinygrad_uu import nn  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
OUTPUTS = ("curves.png", "worst_to_best.png", "overlays.png", "model.npz", "model.onnx", "metrics.json")


def discs(n, size=32, seed=0):
    """Images whose mask is one bright disc of random centre and radius on a noisy background."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    images = 0.35 * rng.random((n, 3, size, size), dtype=np.float32)
    masks = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        r = rng.uniform(size / 6, size / 3)
        cy, cx = rng.uniform(r, size - r, 2)
        masks[i, 0] = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    images[:, :2] += 0.5 * masks                    # red and green, as the stains
    return images, masks


@pytest.fixture
def synthetic(monkeypatch):
    data = discs(8, seed=0), discs(4, seed=1)

    def load(data_dir=None, limit=None):
        (x, y), test = data
        return (x[:limit], y[:limit]), test
    monkeypatch.setattr(segmentation, "load_warwick", load)


def run(tmp_path, *options):
    return segmentation.main(["--out", str(tmp_path), "--seed", "0", *options])


def check_outputs(out: Path, result: dict) -> dict:
    for name in OUTPUTS:
        assert (out / name).exists(), name
    for png in ("curves.png", "worst_to_best.png", "overlays.png"):
        assert (out / png).read_bytes()[:8] == PNG
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_dice"] == pytest.approx(result["test_dice"])
    for key in ("test_dice", "test_iou", "test_pixel_accuracy"):
        assert 0.0 <= saved[key] <= 1.0
    # IoU = Dice / (2 - Dice) per image, so the mean IoU never exceeds the mean Dice
    assert saved["test_iou"] <= saved["test_dice"] + 1e-12
    c = saved["config"]
    epochs = c["epochs"] + (c["prime_epochs"] if saved["priming"] else 0)
    for key in ("train_loss", "train_dice", "test_dice", "train_seconds", "phase"):
        assert len(saved["curves"][key]) == epochs
    assert saved["train_seconds"] > 0 and saved["samples_per_second"] > 0
    assert saved["config"]["width"] > 0 and len(saved["machine"]["load_average_start"]) == 3
    model = segmentation.UNet(3, c["width"], c["depth"], c["batch_norm"], c["up"])
    nn.load(model, out / "model.npz")             # the saved weights fit the architecture
    return saved


def test_learns_synthetic_discs_and_writes_everything(tmp_path, synthetic):
    # batch 2: four steps an epoch, enough for batch norm's running statistics to settle
    result = run(tmp_path, "--epochs", "6", "--width", "4", "--lr", "0.01", "--batch-size", "2")
    saved = check_outputs(tmp_path, result)
    curves = saved["curves"]
    assert curves["train_loss"][-1] < curves["train_loss"][0]
    assert max(curves["test_dice"]) > curves["test_dice"][0] + 0.1   # Dice rises
    assert saved["test_dice"] > 0.6                                  # the discs are easy
    assert saved["priming"] is None and saved["config"]["loss"] == "bce+dice"
    assert len(saved["test_dice_per_image"]) == 4


def test_other_losses_crops_and_learned_upsampling(tmp_path, synthetic):
    result = run(tmp_path, "--epochs", "1", "--width", "2", "--loss", "dice", "--no-augment",
                 "--crop", "16", "--up", "transpose", "--no-batch-norm", "--optimizer", "sgd")
    saved = check_outputs(tmp_path, result)
    assert saved["config"]["crop"] == 16 and saved["config"]["augment"] is False
    assert np.isfinite(saved["curves"]["train_loss"]).all()


def test_prime_on_a_tiny_budget(tmp_path, synthetic):
    result = run(tmp_path, "--prime", "3", "--prime-epochs", "2", "--epochs", "1", "--width", "2",
                 "--loss", "bce")
    saved = check_outputs(tmp_path, result)
    priming = saved["priming"]
    assert priming["images"] == 3 and priming["epochs"] == 2 and len(priming["image_indices"]) == 3
    assert set(priming["seconds_to_80"]) == {"with_priming", "without_priming"}
    assert saved["seconds_to_target"] == priming["seconds_to_80"]["with_priming"]
    assert 1 <= len(priming["unprimed_test_dice"]) <= 1     # --epochs 1, or fewer at the target
    assert saved["curves"]["phase"] == ["prime 3", "prime 3", "train"]
    # priming images count in the throughput: 2 epochs of 3, then 1 of 8
    assert saved["samples_per_second"] == pytest.approx(14 / saved["train_seconds"])


def test_unet_shapes_and_errors():
    tg.manual_seed(0)
    model = segmentation.UNet(3, width=2, depth=3)
    x = tg.tensor(np.random.default_rng(0).random((2, 3, 16, 12), dtype=np.float32))
    assert model(x).shape == (2, 1, 16, 12)
    assert segmentation.UNet(3, width=2, depth=1)(x).shape == (2, 1, 16, 12)
    assert segmentation.UNet(3, width=2, depth=2, up="bilinear")(x).shape == (2, 1, 16, 12)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(tg.tensor(np.zeros((1, 3, 10, 16), np.float32)))
    # the default: 16-32-64 channels, two convs per level and per decoder step
    default = segmentation.UNet()
    convs = [m for m in default.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64, 32, 32, 16, 16, 1]


def test_help_and_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        segmentation.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--epochs", "--batch-size", "--lr", "--optimizer", "--seed", "--limit",
                   "--data-dir", "--out", "--augment", "--no-augment", "--loss", "--width",
                   "--prime", "--crop"):
        assert option in out
    assert "warwick" in out
    for bad in (["--loss", "focal"], ["--width", "0"], ["--epochs", "0"], ["--prime", "-1"],
                ["--crop", "30"], ["--up", "cubic"], ["--prime", "9", "--limit", "8"]):
        with pytest.raises(SystemExit) as exit_:
            segmentation.parse_args(bad)
        assert exit_.value.code == 2


def test_prime_larger_than_the_training_set(tmp_path, synthetic):
    with pytest.raises(SystemExit, match="only 8 training images"):
        run(tmp_path, "--prime", "9", "--epochs", "1", "--width", "2")


@pytest.mark.slow
@needs_warwick
def test_quick_run_on_real_warwick(tmp_path):
    result = segmentation.main(["--limit", "16", "--epochs", "2", "--width", "4",
                                "--out", str(tmp_path)])
    saved = check_outputs(tmp_path, result)
    assert len(saved["test_dice_per_image"]) == 60
    assert saved["curves"]["train_loss"][-1] < saved["curves"]["train_loss"][0]


@pytest.mark.torch
def test_torch_copy_in_the_benchmark_computes_the_same():
    """benchmarks/compare_unet_torch.py starts PyTorch from our weights: same outputs."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import compare_unet_torch as compare
    for options in ([], ["--up", "transpose", "--no-batch-norm"]):
        args = segmentation.parse_args(["--width", "2", *options])
        tg.manual_seed(0)
        model = segmentation.UNet(3, args.width, args.depth, args.batch_norm, args.up)
        net = compare.torch_unet(torch, model, args)
        x = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
        ours = model(tg.tensor(x))
        theirs = net(torch.from_numpy(x))
        np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-4, atol=1e-5)
        for loss in ("bce", "dice", "bce+dice"):
            y = (x[:, :1] > 0.5).astype(np.float32)
            np.testing.assert_allclose(
                segmentation.LOSSES[loss](ours, y).item(),
                compare.torch_loss(torch, loss)(theirs, torch.from_numpy(y)).item(), rtol=1e-5)
