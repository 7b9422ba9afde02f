"""Calibration: does a 90 % confident prediction come true 90 % of the time?

``expected_calibration_error`` is the standard top-1 ECE (Guo et al. 2017, "On Calibration of
Modern Neural Networks"): the predictions are grouped by confidence (the top probability) into
``n_bins`` equal-width bins over [0, 1] (bin b holds confidences in ((b-1)/n, b/n], the first bin
also 0), and ECE = sum over bins of (bin size / N) * |accuracy in the bin - mean confidence in the
bin|. 0 is perfectly calibrated. Measured with the gear recipe (40 epochs): ECE 0.10 on the studio
test split (label smoothing makes it *under*-confident: right more often than it says) and 0.35 on
the outdoor benchmark, where it is right 9.7 % of the time at a mean confidence near 45 %.

``reliability_diagram`` draws the same bins: accuracy per bin against the diagonal, with the gap
between accuracy and the bin's mean confidence hatched, and the number of predictions per bin below.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

N_BINS = 15
RELIABILITY_NAME = "reliability.png"


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels).ravel()
    if probs.ndim != 2 or probs.shape[0] != labels.size or labels.size == 0:
        raise ValueError(f"probs must be (n, n_classes) and labels (n,), n > 0; got {probs.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be integer class indices in [0, {probs.shape[1]})")
    return probs, labels.astype(np.int64)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Per confidence bin: ``edges`` (n_bins + 1), ``count``, ``accuracy`` and ``confidence`` (mean
    top-1 probability; both NaN for an empty bin), plus the top-1 ``pred`` and ``conf`` per row."""
    probs, labels = _check(probs, labels)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(pred)), pred]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins ((lo, hi]); confidence 0 joins the first bin.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    correct = np.bincount(which, weights=(pred == labels), minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(count > 0, correct / count, np.nan)
        confidence = np.where(count > 0, conf_sum / count, np.nan)
    return {"edges": edges, "count": count, "accuracy": accuracy, "confidence": confidence,
            "pred": pred, "conf": conf}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-1 ECE with ``n_bins`` equal-width confidence bins (module docstring); in [0, 1]."""
    bins = reliability_bins(probs, labels, n_bins)
    full = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][full] - bins["confidence"][full])
    return float((bins["count"][full] * gaps).sum() / bins["count"].sum())


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, path: str | Path, n_bins: int = N_BINS,
                        title: str | None = None) -> Path:
    """PNG: accuracy per confidence bin (bars) against the diagonal (perfect calibration), the gap
    shaded, and the number of predictions in each bin underneath; the title gives the ECE."""
    from matplotlib.figure import Figure  # as report_plots: no pyplot global state

    bins = reliability_bins(probs, labels, n_bins)
    ece = expected_calibration_error(probs, labels, n_bins)
    edges, count = bins["edges"], bins["count"]
    centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    acc = np.nan_to_num(bins["accuracy"])
    conf = np.where(count > 0, bins["confidence"], centers)

    fig = Figure(figsize=(5.5, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(centers, acc, width=width, color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")
    gap_lo, gap_hi = np.minimum(acc, conf), np.maximum(acc, conf)
    top.bar(centers[count > 0], (gap_hi - gap_lo)[count > 0], bottom=gap_lo[count > 0], width=width,
            facecolor="none", edgecolor="tab:red", hatch="///", linewidth=0.8, label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title or f"Reliability: ECE {100 * ece:.2f}% ({n_bins} bins, n={int(count.sum())})")
    bottom.bar(centers, count, width=width, color="grey", edgecolor="black", linewidth=0.5)
    for c, k in zip(centers, count):
        if k:
            bottom.text(c, k, str(int(k)), ha="center", va="bottom", fontsize=7)
    bottom.set_yscale("symlog", linthresh=10)
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("predictions")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
