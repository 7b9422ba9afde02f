"""Evaluation report: accuracy, per-class metrics, confusion matrix, as a dict, text tables and files.

Pure functions of ``(y_true, y_pred, classes[, probs])``: the CLI and the notebook run the model and
hand the predictions here, so the numbers can be checked against scikit-learn without a model.

Per-class *accuracy* is the share of that class's images predicted correctly: correct / support,
which is the class's recall (the confusion-matrix diagonal over its row sum). A class with no
images in the split has support 0 and accuracy, precision, recall, f1 reported as 0.

Files written by :func:`evaluate_to_dir` (pictures come from :mod:`gearsight.report_plots`):
``report.json``, ``confusion.png``, ``misclassified.html`` and ``misclassified.png``; with
probabilities also ``reliability.png``, and report.json gains ``ece`` (gearsight.calibration).
"""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

REPORT_NAME = "report.json"
TOP_K = 5
TERMINAL_WIDTH = 100
MAX_PRINTED_CLASSES = 30


def _check_inputs(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str],
                  probs: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    n_cls = len(classes)
    if len(set(classes)) != n_cls or n_cls == 0:
        raise ValueError(f"classes must be non-empty and unique, got {list(classes)!r}")
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and equally long, got {y_true.size} and {y_pred.size}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_cls:
            raise ValueError(f"{name} must hold integer class indices in [0, {n_cls}), "
                             f"got dtype {y.dtype}, range [{y.min()}, {y.max()}]")
    if probs is not None and np.shape(probs) != (y_true.size, n_cls):
        raise ValueError(f"probs must have shape (n, n_classes) = ({y_true.size}, {n_cls}), got {np.shape(probs)}")
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int = TOP_K) -> float:
    """Share of rows whose true class is among the k highest scores.

    Hand-written (two lines) because sklearn's top_k_accuracy_score wants 1-D scores in the
    two-class case and warns when k >= n_classes; both are normal here (k is capped at n_classes).
    """
    k = min(k, probs.shape[1])
    top = np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(y_true)[:, None]).any(axis=1).mean())


def _row(stats: dict) -> dict:
    return {"precision": float(stats["precision"]), "recall": float(stats["recall"]),
            "f1": float(stats["f1-score"]), "support": int(stats["support"])}


def compute_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str],
                   probs: np.ndarray | None = None) -> dict:
    """Metrics of one split as a JSON-serialisable dict.

    Keys: ``accuracy``, ``n``, ``n_errors``, ``wrong_indices`` (positions in the split of the wrong
    predictions: which items fail, seed after seed), ``classes``, ``confusion_matrix`` (list of lists, rows =
    true class, columns = predicted), ``per_class`` (class name -> accuracy, precision, recall, f1,
    support; accuracy = correct / support, i.e. recall), ``macro_avg`` and ``weighted_avg``
    (precision, recall, f1, support), and with ``probs`` ``top5_accuracy`` (k capped at n_classes).
    Every class in ``classes`` appears, also those absent from the split.
    """
    y_true, y_pred = _check_inputs(y_true, y_pred, classes, probs)
    labels = list(range(len(classes)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    # labels= keeps classes that are absent from this split in the table instead of dropping them.
    cr = classification_report(y_true, y_pred, labels=labels, target_names=list(classes),
                               output_dict=True, zero_division=0)
    per_class = {}
    for name in classes:
        row = _row(cr[name])
        per_class[name] = {"accuracy": row["recall"], **row}
    report = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "n": int(y_true.size),
        "n_errors": int((y_true != y_pred).sum()),
        "wrong_indices": np.flatnonzero(y_true != y_pred).tolist(),
        "classes": list(classes),
        "confusion_matrix": cm.astype(int).tolist(),
        "per_class": per_class,
        "macro_avg": _row(cr["macro avg"]),
        "weighted_avg": _row(cr["weighted avg"]),
    }
    if probs is not None:
        report["top5_accuracy"] = top_k_accuracy(y_true, probs, TOP_K)
    return report


def abbreviate(names: Sequence[str], width: int) -> list[str]:
    """Unique labels of at most ``width`` chars: multi-word names keep a prefix of each word
    (``hardshell_jackets`` -> ``harjac``); clashes and too-narrow widths fall back to the index."""
    out = []
    for name in names:
        words = [w for w in re.split(r"[\s_\-./]+", name) if w] or [name]
        if len(name) <= width:
            short = name
        elif len(words) > 1 and width >= 2 * len(words):
            per = width // len(words)
            short = "".join(w[:per] for w in words)
        else:
            short = name[:width]
        out.append(short)
    if len(set(out)) < len(out) or width < 1:
        out = [s if out.count(s) == 1 else str(i) for i, s in enumerate(out)]
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _per_class_table(report: dict) -> list[str]:
    w = max(12, *(len(c) for c in report["classes"]))
    lines = [f"{'class':<{w}}  {'support':>7}  {'accuracy':>8}  {'precision':>9}  {'recall':>8}  {'f1':>8}"]
    rows = [(name, report["per_class"][name]) for name in report["classes"]]
    rows += [("macro avg", report["macro_avg"]), ("weighted avg", report["weighted_avg"])]
    for i, (name, r) in enumerate(rows):
        if i == len(report["classes"]):
            lines.append("-" * len(lines[0]))
        acc = _pct(r["accuracy"]) if "accuracy" in r else ""  # the averages have no accuracy of their own
        lines.append(f"{name:<{w}}  {r['support']:>7}  {acc:>8}  {_pct(r['precision']):>9}  "
                     f"{_pct(r['recall']):>8}  {_pct(r['f1']):>8}")
    return lines


def _confusion_table(report: dict, width: int) -> list[str]:
    classes, cm = report["classes"], np.asarray(report["confusion_matrix"])
    n = len(classes)
    digits = len(str(int(cm.max())))
    label_w = min(20, max(len(c) for c in classes))
    # Widest cells (<= 8 chars) that fit every column in the terminal; below that, wrap into blocks.
    cell = max(digits, 3, min(8, (width - label_w) // n - 1))
    heads = abbreviate(classes, cell)
    row_names = [c[:label_w] for c in classes]
    if all(h == str(i) for i, h in enumerate(heads)):  # columns are numbered: number the rows too
        row_names = [f"{i:>{len(str(n - 1))}} {name}" for i, name in enumerate(row_names)]
        label_w = max(map(len, row_names))
    per_block = max(1, (width - label_w) // (cell + 1))
    lines = ["Confusion matrix (rows = true class, columns = predicted):"]
    for start in range(0, n, per_block):
        cols = range(start, min(start + per_block, n))
        lines.append(" " * label_w + "".join(f" {heads[j]:>{cell}}" for j in cols))
        lines += [f"{name:<{label_w}}" + "".join(f" {cm[i, j]:>{cell}}" for j in cols)
                  for i, name in enumerate(row_names)]
    renamed = [f"{h}={c}" for h, c in zip(heads, classes) if h != c and h != str(classes.index(c))]
    if renamed:
        lines += textwrap.wrap("columns: " + ", ".join(renamed), width, subsequent_indent="  ")
    return lines


def _top_confusions(report: dict, limit: int = 10) -> list[str]:
    classes, cm = report["classes"], np.array(report["confusion_matrix"])
    np.fill_diagonal(cm, 0)
    pairs = sorted(zip(*np.nonzero(cm)), key=lambda ij: (-cm[ij], ij))[:limit]
    if not pairs:
        return ["No confusions."]
    return [f"Most frequent confusions (true -> predicted), {len(pairs)} of {np.count_nonzero(cm)}:",
            *(f"  {cm[i, j]:>5}  {classes[i]} -> {classes[j]}" for i, j in pairs)]


def format_report(report: dict, width: int = TERMINAL_WIDTH) -> str:
    """Plain-text tables for a terminal ``width`` columns wide: overall accuracy, per-class metrics,
    the confusion matrix (up to MAX_PRINTED_CLASSES classes; more is unreadable as text, so the
    console then points to report.json / confusion.png) and the most frequent confusions."""
    n_cls = len(report["classes"])
    head = f"accuracy {_pct(report['accuracy'])}  ({report['n'] - report['n_errors']}/{report['n']} correct)"
    if "top5_accuracy" in report:
        head += f"   top-{min(TOP_K, n_cls)} accuracy {_pct(report['top5_accuracy'])}"
    if "ece" in report:
        head += f"   ECE {_pct(report['ece'])}"
    if n_cls <= MAX_PRINTED_CLASSES:
        matrix = _confusion_table(report, width)
    else:
        matrix = [f"Confusion matrix ({n_cls} classes) not printed: see {REPORT_NAME} and confusion.png."]
    return "\n".join([head, "", *_per_class_table(report), "", *matrix, "", *_top_confusions(report)]) + "\n"


def write_report(report: dict, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.json`` (indent 2, sorted keys, so reruns diff cleanly); return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_NAME
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def evaluate_to_dir(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray | None,
                    classes: Sequence[str], images: np.ndarray | None, paths: Sequence[str] | None,
                    out_dir: str | Path) -> dict:
    """Compute the report and write report.json, confusion.png and (with ``images``) the
    misclassified gallery into ``out_dir``. Prints nothing; returns the report."""
    from gearsight import report_plots  # matplotlib is only needed once files are written

    report = compute_report(y_true, y_pred, classes, probs)
    out_dir = Path(out_dir)
    if probs is not None:  # calibration: top-1 ECE over 15 confidence bins, and its diagram
        from gearsight.calibration import RELIABILITY_NAME, expected_calibration_error, reliability_diagram

        report["ece"] = expected_calibration_error(probs, y_true)
        reliability_diagram(probs, y_true, out_dir / RELIABILITY_NAME)
    write_report(report, out_dir)
    report_plots.save_confusion_png(report, out_dir / report_plots.CONFUSION_NAME)
    if images is not None:
        report_plots.save_misclassified_gallery(images, y_true, y_pred, probs, classes, paths, out_dir)
    return report
