"""The notebooks run top to bottom (executed with nbclient, in a fresh work folder)."""
from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, require_dataset


def execute(name: str, work, timeout: int = 900) -> nbformat.NotebookNode:
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    os.environ["GEARSIGHT_WORK"] = str(work)  # the kernel inherits it: train from scratch, not the demo's model
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    finally:
        del os.environ["GEARSIGHT_WORK"]
    return nb


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)


def test_gear_notebook_trains_and_shows_test_and_per_class_accuracy(tmp_path):
    require_dataset("gear")
    nb = execute("gear.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "Test accuracy:" in text
    for name in ("axes", "boots", "tents", "pulleys"):
        assert f"| {name} |" in text
    assert (tmp_path / "runs" / "gear" / "model.safetensors").is_file()


def test_cifar10_notebook_trains_from_ctf_and_from_a_map_file(tmp_path):
    require_dataset("cifar10")
    nb = execute("cifar10.ipynb", tmp_path)
    text = outputs_text(nb)
    assert "CTF path: trained" in text and "map-file path: trained" in text
    assert "precision" in text and "recall" in text  # the classification report
    assert text.count("test accuracy") == 2


def test_coco_notebook_compares_whole_images_with_object_crops(tmp_path):
    require_dataset("coco128")
    text = outputs_text(execute("coco.ipynb", tmp_path))
    assert "(a) whole images:" in text and "(b) object crops:" in text
    assert "photos in more than one split: 0" in text  # crops split by photo, no leak into test
    assert text.count("always guessing the largest class") == 2


def test_detection_notebook_trains_evaluates_and_draws(tmp_path):
    require_dataset("bccd")
    nb = execute("detection.ipynb", tmp_path)  # a fresh work folder: the one-minute toy run, not the bench model
    text = outputs_text(nb)
    assert "AP50" in text and "class" in text
    for name in ("RBC", "WBC", "Platelets"):
        assert name in text
    images = [out for cell in nb.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) >= 2  # the box-size histogram and ground truth vs prediction
