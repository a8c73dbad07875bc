"""examples/debugging.py: every mistake in the gallery is caught by its tool, every
fixed version passes, and the reports name what a student needs (op, line, array)."""
import json
import re
import sys
from pathlib import Path

import pytest

import tinygrad_uu as tg

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import debugging  # noqa: E402

GALLERY = str(EXAMPLES / "debugging.py")
PNG = b"\x89PNG\r\n\x1a\n"


def line_of(marker: str) -> int:
    lines = Path(GALLERY).read_text().splitlines()
    hits = [i for i, line in enumerate(lines, 1) if marker in line]
    assert len(hits) == 1, hits
    return hits[0]


@pytest.mark.parametrize("name", list(debugging.CASES))
def test_each_mistake_is_caught_and_its_fix_passes(name, tmp_path):
    case = debugging.CASES[name][0]
    mistake, fixed = case(False, tmp_path), case(True, tmp_path)
    assert mistake.caught, mistake.report
    assert not fixed.caught, fixed.report
    for finding in (mistake, fixed):
        if finding.figure is not None:
            assert finding.figure.read_bytes()[:8] == PNG
    assert not tg.is_anomaly_enabled()


def test_what_each_report_says(tmp_path):
    report = debugging.wrong_backward(False, tmp_path).report
    assert "gradcheck failed" in report and "analytic 4, numeric 12" in report

    report = debugging.log_of_zero(False, tmp_path).report
    assert "Log produced 1 -inf" in report
    assert f"{GALLERY}:{line_of('# log(0) here')} in log_of_zero" in report

    finding = debugging.exploding_lr(False, tmp_path)
    assert re.search(r"detect_anomaly: \w+ produced", finding.report)
    assert f"{GALLERY}:{line_of('loss = F.mse_loss(model(x), y)')} in exploding_lr" \
        in finding.report
    assert "exploding: " in finding.report

    assert "WARNING vanishing: " in debugging.vanishing(False, tmp_path).report
    assert "WARNING accumulating: " in debugging.forgotten_zero_grad(False, tmp_path).report

    report = debugging.numpy_backward(False, tmp_path).report
    lines = {line.split()[0]: line for line in report.splitlines()[1:]}
    assert "off" in lines["W1"] and "off" in lines["b1"]          # the layer under the mask
    assert "agree" in lines["W2"] and "agree" in lines["b2"]      # above it: right


def test_main_runs_the_chosen_cases_and_writes_metrics(tmp_path, capsys):
    results = debugging.main(["--case", "wrong_backward", "--case", "forgotten_zero_grad",
                              "--out", str(tmp_path)])
    assert list(results) == ["wrong_backward", "forgotten_zero_grad"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == results
    assert all(r["caught"] and r["fixed_passes"] for r in saved.values())
    assert (tmp_path / "zero_grad.png").read_bytes()[:8] == PNG
    assert "2 of 2 mistakes caught; 2 of 2 fixed versions pass" in capsys.readouterr().out


def test_help_lists_the_cases_and_the_engine_options(capsys):
    with pytest.raises(SystemExit) as e:
        debugging.parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--case" in text and "--detect-anomaly" in text and "--threads" in text


def test_detect_anomaly_option_switches_the_mode_on():
    args = debugging.parse_args(["--detect-anomaly"])
    try:
        debugging.common.apply_engine_options(args)
        assert tg.is_anomaly_enabled()
    finally:
        tg.set_detect_anomaly(False)
    debugging.common.apply_engine_options(debugging.parse_args([]))
    assert not tg.is_anomaly_enabled()
