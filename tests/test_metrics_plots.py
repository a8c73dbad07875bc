"""tinygrad_uu.metrics_plots: the ROC and leaderboard figures are PNGs, the Markdown
leaderboard ranks by AUC, and empty input is refused."""
import numpy as np
import pytest

from tinygrad_uu import metrics, metrics_plots

ROWS = [{"name": "simple", "auc": 0.91, "low": 0.88, "high": 0.94, "accuracy": 0.85,
         "parameters": 1000, "train_seconds": 12.3},
        {"name": "resnet", "auc": 0.95, "low": 0.93, "high": 0.97, "accuracy": 0.9,
         "parameters": 2500, "train_seconds": 20.0}]


def test_leaderboard_markdown_ranks_by_auc():
    text = metrics_plots.leaderboard_markdown(ROWS, "Board")
    lines = text.splitlines()
    assert lines[0] == "# Board"
    assert lines[4].startswith("| 1 | resnet | 0.9500 | [0.9300, 0.9700] | 0.9000 | 2,500 | 20 |")
    assert lines[5].startswith("| 2 | simple |")
    unknown = metrics_plots.leaderboard_markdown([dict(ROWS[0], auc=None, low=None, high=None,
                                                       accuracy=None)])
    assert "| n/a | n/a | n/a |" in unknown


def test_figures_are_pngs(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.5
    scores = labels + rng.normal(size=200)
    ci = metrics.bootstrap_auc(scores, labels, np.arange(200) // 10, n_boot=50)
    for path in (metrics_plots.plot_roc({"a": (scores, labels, ci), "b": (-scores, labels)},
                                        tmp_path / "roc.png"),
                 metrics_plots.plot_leaderboard(ROWS, tmp_path / "board.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no curves"):
        metrics_plots.plot_roc({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no rows"):
        metrics_plots.plot_leaderboard([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
