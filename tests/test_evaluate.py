"""Evaluation report: metrics equal scikit-learn's, files are real and readable, gallery is exact."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

from gearsight.evaluate import (REPORT_NAME, abbreviate, compute_report, evaluate_to_dir, format_report,
                                write_report)
from gearsight.report_plots import GALLERY_HTML, GALLERY_PNG, save_confusion_png, save_misclassified_gallery

GEAR = ["axes", "boots", "carabiners", "crampons", "gloves", "hardshell_jackets"]
NEVER_TRUE, NEVER_PRED = 4, 5  # "gloves" has no image in the split; "hardshell_jackets" is never predicted


@pytest.fixture(scope="module")
def split():
    """Seeded, imbalanced labels with ~20% errors, one class absent from y_true, one never predicted."""
    rng = np.random.default_rng(1234)
    n = 300
    y_true = rng.choice(len(GEAR), size=n, p=[0.5, 0.25, 0.12, 0.08, 0.0, 0.05])
    y_pred = y_true.copy()
    wrong = rng.random(n) < 0.2
    y_pred[wrong] = rng.integers(0, NEVER_PRED, wrong.sum())  # noise never says class 5
    y_pred[y_true == NEVER_PRED] = 0
    logits = rng.normal(size=(n, len(GEAR))) + 3 * np.eye(len(GEAR))[y_pred]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # The properties the tests rely on must hold, or the test would prove less than it claims.
    assert NEVER_TRUE not in y_true and NEVER_TRUE in y_pred
    assert NEVER_PRED in y_true and NEVER_PRED not in y_pred
    assert 0 < (y_true != y_pred).sum() < n
    return y_true, y_pred, probs


def test_per_class_metrics_equal_sklearn(split):
    y_true, y_pred, probs = split
    report = compute_report(y_true, y_pred, GEAR, probs)
    labels = list(range(len(GEAR)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert list(report["per_class"]) == GEAR
    for k, name in enumerate(GEAR):
        row = report["per_class"][name]
        assert row["precision"] == pytest.approx(p[k])
        assert row["recall"] == pytest.approx(r[k])
        assert row["f1"] == pytest.approx(f[k])
        assert row["support"] == s[k]
    assert report["per_class"]["gloves"]["support"] == 0
    assert report["per_class"]["hardshell_jackets"]["precision"] == 0.0
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert [report["macro_avg"][k] for k in ("precision", "recall", "f1")] == pytest.approx([mp, mr, mf])
    assert report["macro_avg"]["support"] == len(y_true)


def test_accuracy_confusion_and_top5(split):
    y_true, y_pred, probs = split
    report = compute_report(y_true, y_pred, GEAR, probs)
    assert report["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert report["n"] == len(y_true) and report["n_errors"] == int((y_true != y_pred).sum())
    wrong = report["wrong_indices"]
    assert len(wrong) == report["n_errors"] and all(y_true[i] != y_pred[i] for i in wrong)
    cm = np.array(report["confusion_matrix"])
    np.testing.assert_array_equal(cm, confusion_matrix(y_true, y_pred, labels=range(len(GEAR))))
    rows = cm.sum(axis=1)
    for k, name in enumerate(GEAR):
        expected = cm[k, k] / rows[k] if rows[k] else 0.0
        assert report["per_class"][name]["accuracy"] == pytest.approx(expected)
    assert report["top5_accuracy"] == pytest.approx(
        top_k_accuracy_score(y_true, probs, k=5, labels=range(len(GEAR))))
    assert "top5_accuracy" not in compute_report(y_true, y_pred, GEAR)


def test_top_k_is_capped_for_few_classes():
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    assert compute_report(y, probs.argmax(1), ["a", "b"], probs)["top5_accuracy"] == 1.0


@pytest.mark.parametrize("y_pred, probs, field", [
    (np.array([0, 1, 6]), None, "y_pred"),
    (np.array([0.0, 1.0, 1.0]), None, "y_pred"),
    (np.array([0, 1]), None, "equally long"),
    (np.array([0, 1, 1]), np.ones((3, 2)), "probs"),
])
def test_bad_input_is_named(y_pred, probs, field):
    with pytest.raises(ValueError, match=field):
        compute_report(np.array([0, 1, 2]), y_pred, GEAR, probs)


def test_report_json_round_trip_and_stable(split, tmp_path):
    y_true, y_pred, probs = split
    report = compute_report(y_true, y_pred, GEAR, probs)
    path = write_report(report, tmp_path / "out")
    assert path == tmp_path / "out" / REPORT_NAME
    first = path.read_bytes()
    assert json.loads(first) == report
    write_report(json.loads(first), tmp_path / "out")
    assert path.read_bytes() == first


def test_format_report_fits_terminal(split):
    y_true, y_pred, probs = split
    text = format_report(compute_report(y_true, y_pred, GEAR, probs))
    acc = 100 * accuracy_score(y_true, y_pred)
    assert text.startswith(f"accuracy {acc:.2f}%")
    assert max(len(line) for line in text.splitlines()) <= 100
    for name in GEAR:  # every class gets a row in the per-class table and in the matrix
        assert len(re.findall(rf"^{name}\s", text, flags=re.M)) == 2
    assert "columns: " in text and "hardshell_jackets" in text.split("columns: ")[1]


def test_abbreviations_are_short_and_unique():
    names = ["hardshell_jackets", "insulated_jackets", "harnesses", "helmets", "rope"]
    short = abbreviate(names, 5)
    assert len(set(short)) == len(names) and all(len(s) <= 5 for s in short)
    assert short[-1] == "rope"
    assert abbreviate(["class_1", "class_2"], 3) == ["0", "1"]  # clashing prefixes fall back to indices


def _valid_png(path) -> tuple[int, int]:
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def _gallery_indices(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<figure class="miss" data-index="(\d+)"', page)]


def test_evaluate_to_dir_writes_all_files(split, tmp_path):
    y_true, y_pred, probs = split
    n = len(y_true)
    images = np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    paths = [f"gear/{GEAR[t]}/img_{i}<&>.jpg" for i, t in enumerate(y_true)]
    report = evaluate_to_dir(y_true, y_pred, probs, GEAR, images, paths, tmp_path)
    assert json.loads((tmp_path / REPORT_NAME).read_text()) == report
    w, h = _valid_png(tmp_path / "confusion.png")
    assert w > 300 and h > 300
    _valid_png(tmp_path / GALLERY_PNG)
    page = (tmp_path / GALLERY_HTML).read_text()
    assert "http" not in page  # self-contained
    shown = _gallery_indices(page)
    assert len(shown) == min(64, report["n_errors"])
    assert all(y_true[i] != y_pred[i] for i in shown)


def test_gallery_lists_exactly_the_mistakes(split, tmp_path):
    y_true, y_pred, probs = split
    keep = np.flatnonzero(y_true != y_pred)[:7].tolist() + np.flatnonzero(y_true == y_pred)[:20].tolist()
    yt, yp, pr = y_true[keep], y_pred[keep], probs[keep]
    images = np.zeros((len(keep), 8, 8, 3), np.uint8)
    paths = [f"photos/{i}<&>.jpg" for i in range(len(keep))]
    page_path = save_misclassified_gallery(images, yt, yp, pr, GEAR, paths, tmp_path)
    page = page_path.read_text()
    shown = _gallery_indices(page)
    assert sorted(shown) == list(range(7))  # the 7 mistakes, none of the 20 correct ones
    conf = [pr[i, yp[i]] for i in shown]
    assert conf == sorted(conf, reverse=True)  # most confident mistakes first
    assert "photos/0&lt;&amp;&gt;.jpg" in page and "photos/0<&>" not in page
    assert f"predicted: {GEAR[yp[0]]} ({100 * pr[0, yp[0]]:.0f}%)" in page
    thumb = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(thumb))).size == (8, 8)
    _valid_png(tmp_path / GALLERY_PNG)

    capped = save_misclassified_gallery(images, yt, yp, None, GEAR, None, tmp_path / "capped", max_items=3)
    page = capped.read_text()
    assert _gallery_indices(page) == [0, 1, 2] and "7 of 27 images misclassified; showing 3" in page


def test_gallery_without_mistakes_says_so(tmp_path):
    y = np.array([0, 1, 2])
    (tmp_path / GALLERY_PNG).write_bytes(b"stale grid from an earlier run")
    page = save_misclassified_gallery(np.zeros((3, 4, 4, 3), np.uint8), y, y, None, GEAR, None, tmp_path)
    text = page.read_text()
    assert _gallery_indices(text) == [] and "No misclassified images" in text
    assert not (tmp_path / GALLERY_PNG).exists()


def test_gallery_rejects_wrong_image_shape(tmp_path):
    y = np.array([0, 1])
    with pytest.raises(ValueError, match="images must be uint8"):
        save_misclassified_gallery(np.zeros((2, 4, 4), np.uint8), y, y[::-1], None, GEAR, None, tmp_path)


def test_confusion_png_with_absent_class_and_many_classes(tmp_path):
    y = np.array([0, 0, 1, 2])  # class 3 absent: an all-zero row must not become NaN
    report = compute_report(y, np.array([0, 1, 1, 2]), ["a", "b", "c", "d"])
    _valid_png(save_confusion_png(report, tmp_path / "small.png"))
    many = [f"class_{i}" for i in range(40)]
    y = np.arange(400) % 40
    report = compute_report(y, np.roll(y, 1), many)
    _valid_png(save_confusion_png(report, tmp_path / "many.png"))
    assert "not printed" in format_report(report)
