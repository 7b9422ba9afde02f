"""Pictures for the evaluation report: confusion-matrix PNG and the misclassified-images gallery.

Figures are built with ``matplotlib.figure.Figure`` directly rather than pyplot, so nothing here
touches pyplot's global state or the interactive backend (safe in servers, threads and notebooks);
``Figure.savefig`` renders PNG through Agg.
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

CONFUSION_NAME = "confusion.png"
GALLERY_HTML = "misclassified.html"
GALLERY_PNG = "misclassified.png"
THUMB_PX = 160          # longest side of an embedded thumbnail; keeps a 64-item page ~1-2 MB
MAX_ANNOTATED = 30      # above this many classes, counts in the cells would be unreadable


def save_confusion_png(report: dict, path: str | Path) -> Path:
    """Confusion matrix with colours normalised per true class (row) and the counts printed."""
    classes, cm = report["classes"], np.asarray(report["confusion_matrix"], dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    # A class absent from the split has an all-zero row: show it white rather than NaN.
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(classes)
    side = min(30.0, max(5.0, 0.55 * n + 2.5))
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix: accuracy {100 * report['accuracy']:.2f}% (n={report['n']})")
    if n <= MAX_ANNOTATED:
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _check_gallery_inputs(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                          probs: np.ndarray | None, paths: Sequence[str] | None) -> None:
    n = len(y_true)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) != n:
        raise ValueError(f"images must be uint8 of shape (n={n}, H, W, 3), got {images.dtype} {images.shape}")
    if len(y_pred) != n or (probs is not None and len(probs) != n) or (paths is not None and len(paths) != n):
        raise ValueError(f"y_pred, probs and paths must each have n={n} items")


def _mistakes(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray | None) -> np.ndarray:
    """Indices of misclassified items, most confident mistakes first (the most telling ones)."""
    wrong = np.flatnonzero(y_true != y_pred)
    if probs is None:
        return wrong
    conf = np.asarray(probs)[wrong, y_pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")]


def _caption(i: int, y_true, y_pred, probs, classes) -> tuple[str, str]:
    true, pred = classes[y_true[i]], classes[y_pred[i]]
    if probs is None:
        return true, pred
    return f"{true} ({100 * probs[i, y_true[i]]:.0f}%)", f"{pred} ({100 * probs[i, y_pred[i]]:.0f}%)"


def _png_b64(img: np.ndarray) -> str:
    pil = Image.fromarray(img)
    pil.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure.miss {{ width: 170px; margin: 0; font-size: 12px; }}
figure.miss img {{ width: 160px; height: auto; image-rendering: pixelated; border: 1px solid #ccc; }}
.true {{ color: #080; }} .pred {{ color: #b00; }} code {{ word-break: break-all; font-size: 10px; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<div class="grid">
{items}
</div></body></html>
"""


def _gallery_html(order, images, y_true, y_pred, probs, classes, paths, n_wrong, n) -> str:
    items = []
    for i in order:
        true, pred = (html.escape(s) for s in _caption(i, y_true, y_pred, probs, classes))
        src = f"<br><code>{html.escape(str(paths[i]))}</code>" if paths is not None else ""
        items.append(f'<figure class="miss" data-index="{i}"><img alt="item {i}" '
                     f'src="data:image/png;base64,{_png_b64(images[i])}"><figcaption>'
                     f'<span class="true">true: {true}</span><br><span class="pred">predicted: {pred}</span>'
                     f"{src}</figcaption></figure>")
    if n_wrong == 0:
        summary = f"No misclassified images: all {n} were predicted correctly."
    else:
        summary = (f"{n_wrong} of {n} images misclassified; showing {len(order)}"
                   + (", most confident mistakes first" if probs is not None else "") + ". "
                   "Percentages are the model's probability for that class.")
    return _PAGE.format(title="Misclassified images", summary=summary, items="\n".join(items))


def _tail(text: str, width: int) -> str:
    return text if len(text) <= width else "\u2026" + text[-(width - 1):]  # the end tells files apart


def _gallery_png(order, images, y_true, y_pred, probs, classes, paths, path: Path) -> None:
    cols = min(8, len(order))
    rows = math.ceil(len(order) / cols)
    # Fixed spacing instead of constrained layout: solving the layout for 64 axes took seconds.
    fig = Figure(figsize=(cols * 1.9, rows * 2.3))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.55 / (rows * 2.3), hspace=0.45, wspace=0.08)
    for k, i in enumerate(order):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(images[i])
        ax.set_axis_off()
        true, pred = _caption(i, y_true, y_pred, probs, classes)
        name = f"\n{_tail(Path(str(paths[i])).name, 24)}" if paths is not None else ""
        ax.set_title(f"T: {true}\nP: {pred}{name}", fontsize=6)
    fig.savefig(path, dpi=100)


def save_misclassified_gallery(images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                               probs: np.ndarray | None, classes: Sequence[str],
                               paths: Sequence[str] | None, out_dir: str | Path,
                               max_items: int = 64) -> Path:
    """Write ``out_dir/misclassified.html`` (self-contained: thumbnails inlined as base64 PNG) and
    ``out_dir/misclassified.png`` (a grid), each showing true vs predicted class, the
    probabilities when ``probs`` is given, and the source path. Shows at most ``max_items``,
    most confident mistakes first. With no mistakes the page says so and no PNG is left behind.
    ``images`` holds every item of the split (a memmap is fine: only mistakes are read)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    _check_gallery_inputs(images, y_true, y_pred, probs, paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wrong = _mistakes(y_true, y_pred, probs)
    order = wrong[:max_items]
    args = (order, images, y_true, y_pred, probs, classes, paths)
    page = out_dir / GALLERY_HTML
    page.write_text(_gallery_html(*args, len(wrong), len(y_true)), encoding="utf-8")
    grid = out_dir / GALLERY_PNG
    if len(order):
        _gallery_png(*args, grid)
    else:
        grid.unlink(missing_ok=True)  # a grid from an earlier run would contradict the page
    return page
