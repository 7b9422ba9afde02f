"""Expected calibration error and the reliability diagram, and their place in the evaluation report."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gearsight.calibration import RELIABILITY_NAME, expected_calibration_error, reliability_bins, reliability_diagram
from gearsight.evaluate import evaluate_to_dir, format_report


def _probs(conf: list[float], pred: list[int], n_cls: int) -> np.ndarray:
    """Rows whose top-1 class is ``pred`` with probability ``conf``, the rest spread evenly."""
    p = np.empty((len(conf), n_cls))
    for i, (c, k) in enumerate(zip(conf, pred)):
        p[i] = (1 - c) / (n_cls - 1)
        p[i, k] = c
    return p


def test_exactly_calibrated_bins_give_zero():
    # Four confidences, four predictions each; exactly conf * 4 of them right.
    conf = [0.25] * 4 + [0.5] * 4 + [0.75] * 4 + [1.0] * 4
    right = [1, 0, 0, 0] + [1, 1, 0, 0] + [1, 1, 1, 0] + [1, 1, 1, 1]
    probs = _probs(conf, [0] * 16, 5)
    labels = np.array([0 if r else 1 for r in right])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_sampled_calibrated_predictions_are_near_zero():
    rng = np.random.default_rng(0)
    n, k = 40_000, 10
    conf = rng.uniform(0.2, 1.0, n)
    pred = rng.integers(0, k, n)
    right = rng.uniform(size=n) < conf
    labels = np.where(right, pred, (pred + rng.integers(1, k, n)) % k)
    assert expected_calibration_error(_probs(conf.tolist(), pred.tolist(), k), labels) < 0.015


def test_over_confident_matches_hand_computation():
    # 10 bins. Bin (0.9, 1]: two at 0.95, one right -> |0.5 - 0.95| = 0.45.
    # Bin (0.8, 0.9]: three at 0.85, one right -> |1/3 - 0.85|. Bin (0.6, 0.7]: one at 0.65, right -> 0.35.
    conf = [0.95, 0.95, 0.65, 0.85, 0.85, 0.85]
    labels = np.array([0, 1, 0, 0, 1, 1])
    probs = _probs(conf, [0] * 6, 3)
    want = (2 * 0.45 + 1 * 0.35 + 3 * abs(1 / 3 - 0.85)) / 6
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(want)
    bins = reliability_bins(probs, labels, n_bins=10)
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 0, 1, 0, 3, 2]
    assert bins["accuracy"][9] == pytest.approx(0.5) and bins["confidence"][8] == pytest.approx(0.85)


def test_bin_edges_are_right_closed_and_cover_zero_and_one():
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    bins = reliability_bins(probs, np.array([0, 0, 1]), n_bins=4)
    assert bins["count"].tolist() == [0, 1, 0, 2]  # 0.5 is in (0.25, 0.5]; 1.0 in the last bin


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        expected_calibration_error(np.ones((3, 2)) / 2, np.array([0, 1]))
    with pytest.raises(ValueError):
        expected_calibration_error(np.ones((2, 2)) / 2, np.array([0, 2]))


def test_reliability_diagram_is_a_png(tmp_path):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4) * 0.3, 200)
    path = reliability_diagram(probs, rng.integers(0, 4, 200), tmp_path / "r" / RELIABILITY_NAME)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 300


def test_evaluate_to_dir_reports_ece_and_draws_the_diagram(tmp_path):
    classes = ["a", "b", "c"]
    conf = [0.95, 0.95, 0.65, 0.85, 0.85, 0.85]
    probs = _probs(conf, [0] * 6, 3)
    y_true = np.array([0, 1, 0, 0, 1, 1])
    report = evaluate_to_dir(y_true, probs.argmax(1), probs, classes, None, None, tmp_path)
    assert report["ece"] == pytest.approx(expected_calibration_error(probs, y_true))
    assert json.loads((tmp_path / "report.json").read_text())["ece"] == pytest.approx(report["ece"])
    assert (tmp_path / RELIABILITY_NAME).stat().st_size > 0
    assert f"ECE {100 * report['ece']:.2f}%" in format_report(report).splitlines()[0]
    no_probs = evaluate_to_dir(y_true, probs.argmax(1), None, classes, None, None, tmp_path / "np")
    assert "ece" not in no_probs and not (tmp_path / "np" / RELIABILITY_NAME).exists()
