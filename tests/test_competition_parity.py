"""benchmarks/compare_resnet_torch.py: the competition's ResNet trained in both engines
from the same weights on the same batches gives the same losses and AUC (dropout off,
so that nothing random differs)."""
import pytest

from benchmarks import compare_resnet_torch  # puts examples/ on the path
from tests.test_competition import synthetic  # noqa: F401  (the fixture)


@pytest.mark.torch
def test_same_weights_same_batches_same_auc(synthetic, capsys):  # noqa: F811
    pytest.importorskip("torch")
    result = compare_resnet_torch.main(["--epochs", "2", "--width", "4", "--dropout", "0",
                                        "--skip-w8", "--threads", "1", "--no-tta"])
    ours, theirs = result["tinygrad_uu"], result["torch"]
    assert abs(result["auc_gap"]) < 0.01, (ours, theirs)
    assert ours["test_auc"] > 0.8                   # it learned the synthetic task
    assert result["throughput_ratio_vs_torch"] > 0
    out = capsys.readouterr().out
    lines = [line for line in out.replace("\r", "\n").splitlines() if "epoch 2/2: loss" in line]
    ours_loss = float(lines[0].split("loss ")[1].split(",")[0])
    torch_loss = float(lines[1].split("loss ")[1])
    assert ours_loss == pytest.approx(torch_loss, abs=2e-3)


def test_unsupported_options_are_refused():
    with pytest.raises(SystemExit, match="not supported"):
        compare_resnet_torch.parse_args(["--prime", "3"])
    own, args = compare_resnet_torch.parse_args(["--w8-only"])
    assert own.w8_only and args.model == "resnet"
