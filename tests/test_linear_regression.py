"""Assignment 1 end to end: numpy and the engine both reach the closed form."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import linear_regression  # noqa: E402

from tests.real_data import needs_auto_mpg  # noqa: E402


def test_engine_and_hand_gradients_agree_on_synthetic_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 3.0 + 0.1 * rng.standard_normal(50)
    w_np, b_np, losses_np = linear_regression.train_numpy(x, y, 300, 0.1)
    w_tg, b_tg, losses_tg = linear_regression.train_engine(x, y, 300, 0.1)
    w_cf, b_cf = linear_regression.closed_form(x, y)
    np.testing.assert_allclose(losses_np, losses_tg, rtol=1e-10)  # the same descent, step by step
    np.testing.assert_allclose(w_tg, w_cf, atol=1e-6)
    assert abs(b_np - b_cf) < 1e-6


@needs_auto_mpg
def test_example_reaches_closed_form_within_one_percent(tmp_path):
    with pytest.warns(UserWarning, match="dropped 6 of 398"):
        metrics = linear_regression.main(["--out", str(tmp_path)])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["mse_closed_form"] == pytest.approx(metrics["mse_closed_form"])
    for key in ("mse_numpy", "mse_engine"):
        assert abs(saved[key] - saved["mse_closed_form"]) <= 0.01 * saved["mse_closed_form"]
    assert saved["n_train"] + saved["n_test"] == 392
    for png in ("loss_curve.png", "predicted_vs_actual.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        linear_regression.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in ("--epochs", "--lr", "--data-dir", "--out", "--seed"):
        assert option in out
